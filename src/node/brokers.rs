//! Applies the brokers file: each time this node becomes leader, it registers every broker of
//! the file that the replicated state has never seen, and opens the accounts the file gives a
//! broker that do not exist yet. Idempotent, so every leader may do it.
//!
//! The file seeds a broker's key once, the first time the broker appears. From then on the
//! replicated state is the truth: a key rotated or revoked at run time (`exchange-cli admin
//! set-broker-key`) stays so across elections and restarts, whatever the file still says. A
//! broker's FIX CompID likewise (`exchange-cli admin set-fix-comp-id`).

use std::sync::Arc;
use std::time::Duration;

use exchange_domain::{AdminCommand, BrokerCommand, BrokerId, Command, CompId, KeyDigest, KeySalt};
use openraft::async_runtime::watch::WatchReceiver as _;
use openraft::ServerState;

use crate::gateway::credentials::BrokersFile;
use crate::replication::engine_thread::EngineHandle;
use crate::replication::sequencer::Sequencer;
use crate::replication::state_machine::Raft;

/// How long a new leader waits for its engine to apply the log it inherited.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// The commands that bring the replicated state in line with the file.
async fn missing(
    engine: &EngineHandle,
    file: &BrokersFile,
    salt: Option<KeySalt>,
) -> Result<Vec<Command>, crate::replication::engine_thread::EngineStopped> {
    let registrations = file.registrations(salt);
    let wanted = registrations.clone();
    type Known = (
        Vec<(BrokerId, KeyDigest)>,
        Vec<Option<BrokerId>>,
        Vec<(BrokerId, CompId)>,
    );
    let (known, owners, comp_ids): Known = engine
        .query(move |engine| {
            let known = engine.brokers().collect();
            let owners = wanted
                .iter()
                .flat_map(|(_, _, accounts)| accounts.iter().map(|a| engine.account_owner(*a)))
                .collect();
            (known, owners, engine.fix_comp_ids().collect())
        })
        .await?;
    let mut commands = Vec::new();
    let mut owners = owners.into_iter();
    for (broker, key_digest, accounts) in registrations {
        match known.iter().find(|(id, _)| *id == broker) {
            None => {
                tracing::info!(target: "audit", event = "broker key", broker = broker.0, change = "set", source = "brokers file", "broker key registered");
                commands.push(Command::Admin(AdminCommand::SetBrokerKey {
                    broker,
                    key_digest,
                }));
            }
            Some((_, current)) if *current != key_digest => tracing::info!(
                broker = broker.0,
                "the cluster's key for this broker is not the brokers file's: it was changed at \
                 run time, and stays (the file only seeds brokers the cluster has never seen)"
            ),
            Some(_) => {}
        }
        for account in accounts {
            match owners.next().flatten() {
                None => commands.push(Command::Admin(AdminCommand::CreateAccount {
                    account,
                    owner: broker,
                })),
                Some(owner) if owner != broker => tracing::warn!(
                    %account, %owner, file_owner = %broker,
                    "the brokers file gives an account that another broker owns; left as it is"
                ),
                Some(_) => {}
            }
        }
    }
    // CompIDs after the registrations they need; like keys, seeded once.
    for (broker, comp_id) in file.fix_comp_ids() {
        match comp_ids.iter().find(|(id, _)| *id == broker) {
            None => match comp_ids.iter().find(|(_, taken)| *taken == comp_id) {
                // Given to another broker at run time: proposing it would only be refused.
                Some((holder, _)) => tracing::warn!(
                    broker = broker.0, holder = holder.0, comp_id = %comp_id,
                    "the brokers file gives this broker a FIX CompID that another broker holds; \
                     not applied (give it another with exchange-cli admin set-fix-comp-id)"
                ),
                None => commands.push(Command::Admin(AdminCommand::SetFixCompId {
                    broker,
                    comp_id,
                })),
            },
            Some((_, current)) if *current != comp_id => tracing::info!(
                broker = broker.0, current = %current, file = %comp_id,
                "the cluster's FIX CompID for this broker is not the brokers file's: it was \
                 changed at run time, and stays"
            ),
            Some(_) => {}
        }
    }
    Ok(commands)
}

async fn apply(raft: &Raft, engine: &EngineHandle, sequencer: &Sequencer, file: &BrokersFile) {
    let inherited = raft.metrics().borrow_watched().last_log_index.unwrap_or(0);
    let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
    while engine.status().applied_index() < inherited {
        if tokio::time::Instant::now() > deadline {
            tracing::warn!("engine did not catch up; brokers file not applied this term");
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Digests are keyed with the cluster's salt, which a new cluster's first leader sets now.
    let salt = match crate::gateway::key_salt::settle(sequencer, engine).await {
        Ok(salt) => salt,
        Err(e) => return tracing::warn!("brokers file not applied: {e}"),
    };
    let commands = match missing(engine, file, salt).await {
        Ok(commands) => commands,
        Err(e) => return tracing::warn!("brokers file not applied: {e}"),
    };
    if commands.is_empty() {
        return;
    }
    let count = commands.len();
    let results = sequencer
        .submit_many(commands.into_iter().map(BrokerCommand::operator).collect())
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if failed == 0 {
        tracing::info!(commands = count, "applied the brokers file");
    } else {
        tracing::warn!(commands = count, failed, "brokers file partly applied");
    }
}

/// Runs for the node's life: applies the file once in every term this node leads.
pub async fn apply_when_leader(
    raft: Raft,
    engine: Arc<EngineHandle>,
    sequencer: Sequencer,
    file: BrokersFile,
) {
    if file.brokers.is_empty() {
        return;
    }
    // The server metrics change with the role and term only, not with every entry.
    let mut metrics = raft.server_metrics();
    let mut done_term = None;
    loop {
        let (state, term) = {
            let m = metrics.borrow_watched();
            (m.state, m.vote.leader_id().term)
        };
        if state == ServerState::Leader && done_term != Some(term) {
            done_term = Some(term);
            apply(&raft, &engine, &sequencer, &file).await;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
