//! Faults beyond a single crash: a whole-cluster crash and restart, a minority left alone,
//! and a torn log tail on a follower.

mod support;

use std::time::Duration;

use exchange::domain::{OrderId, Side};
use exchange::gateway::client::ClientError;
use support::*;

async fn place(client: &mut exchange::gateway::client::Client, count: i64) -> Vec<OrderId> {
    let mut ids = Vec::new();
    for i in 0..count {
        ids.push(accepted(
            &submit(
                client,
                limit(1, Side::Buy, 5_000 - i, 1),
                Duration::from_secs(5),
            )
            .await,
        ));
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_crash_and_restart_loses_nothing() {
    let mut cluster = Cluster::start("restart", 3, 25_000, &[]);
    cluster.wait_for_leader(Duration::from_secs(10)).await;
    let mut client = cluster.client();
    setup_market(&mut client, 1).await;
    let ids = place(&mut client, 50).await;
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.start_node(id);
    }
    cluster.wait_for_leader(Duration::from_secs(10)).await;
    let mut client = cluster.client();
    assert_all_present(&mut client, 1, &ids).await;
    cluster.assert_converged(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_survivor_accepts_nothing() {
    // The node's own timeouts: the bound below is theirs.
    let mut cluster = Cluster::start_with_default_timeouts("minority", 3, 25_200, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let mut client = cluster.client();
    setup_market(&mut client, 1).await;
    // Leave the leader alone: it cannot reach a majority, so it must acknowledge nothing.
    for id in (1..=3).filter(|id| *id != leader) {
        cluster.kill(id);
    }
    // A real client must be told, in bounded time, that the order is not done or that its
    // outcome is unknown; silence is a failure too. The leader gives up on its majority after
    // 120 ms (`NodeConfig::quorum_lost_after`); 1 s leaves room for a busy host.
    let asked = std::time::Instant::now();
    let attempt = tokio::time::timeout(
        Duration::from_secs(1),
        client.submit(limit(1, Side::Buy, 10, 1)),
    )
    .await;
    match attempt {
        Ok(Err(ClientError::OutcomeUnknown(_) | ClientError::Unavailable(_))) => {}
        Ok(Err(other)) => panic!("a lone leader answered neither unknown nor unavailable: {other}"),
        Ok(Ok(outputs)) => panic!("a minority acknowledged an order: {outputs:?}"),
        Err(_elapsed) => panic!("no answer within 1 s from a lone leader"),
    }
    eprintln!("a lone leader's answer came after {:?}", asked.elapsed());
    let statuses = cluster.statuses().await;
    let survivor = statuses[&leader].as_ref().expect("survivor status");
    assert!(
        survivor.commit_index < survivor.last_log_index.unwrap_or(0) || survivor.role != "leader",
        "the survivor must not commit alone: {survivor:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_on_a_follower_is_repaired_from_the_leader() {
    let mut cluster = Cluster::start("torn", 3, 25_400, &["--segment-mib", "1"]);
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let mut client = cluster.client();
    setup_market(&mut client, 1).await;
    let ids = place(&mut client, 30).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.wait_for_convergence(Duration::from_secs(10)).await;
    cluster.kill(follower);

    // Tear the last record: cut the newest segment a few bytes before its last written byte.
    let log_dir = cluster.data_dir(follower).join("log");
    let mut segments: Vec<_> = std::fs::read_dir(&log_dir)
        .expect("log dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    let last = segments.last().expect("a segment");
    let bytes = std::fs::read(last).expect("segment");
    let end = bytes.iter().rposition(|b| *b != 0).expect("written bytes") + 1;
    std::fs::write(last, &bytes[..end - 7]).expect("tear");

    let more = place(&mut client, 10).await;
    cluster.start_node(follower);
    cluster.assert_converged(Duration::from_secs(15)).await;
    assert_all_present(&mut client, 1, &[ids, more].concat()).await;
}
