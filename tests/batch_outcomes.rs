//! A batch whose commands' fate is unknown says so, command by command: the leader proposes
//! the batch, loses both followers before it commits, and answers each command "outcome
//! unknown", not a failure (a broker must not take such a command as not done).

mod support;

use std::time::Duration;

use exchange::domain::{AccountId, AdminCommand, Amount, AssetId, Command};
use exchange::gateway::client::ClientError;
use support::*;

/// Commands in the batch.
const COMMANDS: usize = 3;

fn deposit(account: u64, amount: i64) -> Command {
    Command::Admin(AdminCommand::Deposit {
        account: AccountId(account),
        asset: AssetId(2),
        amount: Amount(amount),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cut_off_from_its_majority_is_unknown_per_command() {
    let mut cluster = Cluster::start("batch-unknown", 3, 27_400, &[]);
    let mut client = cluster.client();
    setup_market(&mut client, 1).await;
    // The leader refuses a request outright once it has heard from no majority for a while;
    // only a batch that arrives before then is proposed. On a busy host the first try may
    // come too late: then the followers come back and it goes again.
    for attempt in 1..=5 {
        let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
        // A connection to the leader, logged on, before the clock starts.
        client
            .balances(1, vec![2])
            .await
            .expect("a read on the leader");
        let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
        for &id in &followers {
            cluster.kill(id);
        }
        let commands = (0..COMMANDS as i64).map(|n| deposit(1, 1 + n)).collect();
        match client.submit_batch(commands).await {
            Ok(answers) => {
                assert_eq!(answers.len(), COMMANDS);
                for (n, answer) in answers.iter().enumerate() {
                    assert!(
                        matches!(answer, Err(ClientError::OutcomeUnknown(_))),
                        "command {n} of a batch the leader could not commit: {answer:?}"
                    );
                }
                return;
            }
            // Refused as a whole (nothing was proposed): try again.
            Err(ClientError::Unavailable(why)) => {
                eprintln!("attempt {attempt}: the batch came too late ({why})");
                for &id in &followers {
                    cluster.start_node(id);
                }
            }
            Err(other) => panic!("the batch: {other}"),
        }
    }
    panic!("no batch reached the leader before it knew it had lost its majority, in 5 tries");
}
