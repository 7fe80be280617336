//! A 3-node cluster on loopback: election, replication, and the leader's crash.

mod support;

use std::time::{Duration, Instant};

use exchange::domain::{Event, Side};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_every_replica_agrees() {
    let cluster = Cluster::start("elect", 3, 24_000, &[]);
    cluster.wait_for_leader(Duration::from_secs(10)).await;
    let mut client = cluster.client();
    setup_market(&mut client, 2).await;
    for i in 0..30 {
        let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
        let price = if side == Side::Buy { 100 - i } else { 200 + i };
        accepted(
            &submit(
                &mut client,
                limit(1 + (i as u64 % 2), side, price, 10),
                Duration::from_secs(5),
            )
            .await,
        );
    }
    // A trade, so that executions are in the hashed stream too.
    let outputs = submit(
        &mut client,
        limit(1, Side::Buy, 201, 5),
        Duration::from_secs(5),
    )
    .await;
    assert!(outputs
        .iter()
        .any(|o| matches!(o.event, Event::Execution { .. })));

    let index = cluster.assert_converged(Duration::from_secs(10)).await;
    cluster.assert_no_divergence(index).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_loses_no_acknowledged_order() {
    let mut cluster = Cluster::start("failover", 3, 24_200, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let mut client = cluster.client();
    setup_market(&mut client, 1).await;

    // Resting orders, each acknowledged only after commit and apply.
    let mut acknowledged = Vec::new();
    for i in 0..100 {
        let outputs = submit(
            &mut client,
            limit(1, Side::Buy, 1_000 - i, 1),
            Duration::from_secs(5),
        )
        .await;
        acknowledged.push(accepted(&outputs));
    }

    cluster.kill(leader);
    let killed = Instant::now();
    let new_leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let elected = killed.elapsed();
    assert_ne!(new_leader, leader);
    // The first order acknowledged after the crash measures the recovery time seen by a client
    // (its connection to the dead leader must time out first).
    accepted(
        &submit(
            &mut client,
            limit(1, Side::Buy, 1, 1),
            Duration::from_secs(10),
        )
        .await,
    );
    let recovery = killed.elapsed();
    eprintln!(
        "leader {leader} killed; node {new_leader} elected after {elected:?}; first order acknowledged after {recovery:?}"
    );
    assert!(
        recovery < Duration::from_secs(3),
        "recovery took {recovery:?}"
    );

    // Every acknowledged order survived: each can be cancelled on the new leader.
    assert_all_present(&mut client, 1, &acknowledged).await;

    // The crashed node comes back, catches up, and agrees.
    cluster.start_node(leader);
    cluster.assert_converged(Duration::from_secs(15)).await;
}

/// A client that meets an election asks the nodes in turn on the connections it opened once
/// and finds the new leader among them: each surviving node sees one logon from it per
/// failover, not one per try (two are allowed: a link may fail once on a starved host). Every
/// client handshaking with every node on each try slowed the very election it waited for
/// (docs/performance.md, "Five nodes").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_finds_the_new_leader_on_one_connection_per_node() {
    let mut cluster = Cluster::start(
        "standby",
        3,
        28_400,
        &["--metrics-listen", "127.0.0.1:{metrics}"],
    );
    let mut client = cluster.client();
    setup_market(&mut client, 1).await;
    let logons = |cluster: &Cluster, id: u64| {
        cluster
            .metric(id, "exchange_gateway_logons_total")
            .expect("the logon counter")
    };
    for round in 0..3 {
        let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
        // Connected to the leader, and to no other node.
        accepted(
            &submit(
                &mut client,
                limit(1, Side::Buy, 100 + round, 1),
                Duration::from_secs(5),
            )
            .await,
        );
        let others: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
        let before: Vec<f64> = others.iter().map(|&id| logons(&cluster, id)).collect();
        cluster.kill(leader);
        // Sent at once: the client finds the dead leader gone while the others elect.
        accepted(
            &submit(
                &mut client,
                limit(1, Side::Buy, 200 + round, 1),
                Duration::from_secs(10),
            )
            .await,
        );
        for (id, before) in others.iter().zip(before) {
            let logged_on = logons(&cluster, *id) - before;
            assert!(
                logged_on <= 2.0,
                "round {round}: node {id} saw {logged_on} logons from one client's failover"
            );
        }
        cluster.start_node(leader);
        cluster.assert_converged(Duration::from_secs(15)).await;
    }
}
