//! Divergence detection catches a replica whose output differs: a node built with the
//! `test-faults` feature reports a wrong hash from a chosen index on, and `status` shows the
//! divergence on every node. Runs only in builds with that feature (scripts/test.sh enables it).

#![cfg(feature = "test-faults")]

mod support;

use std::time::{Duration, Instant};

use exchange::domain::Side;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_wrong_hash_is_reported_by_status() {
    let mut cluster = Cluster::start("divergence", 3, 25_800, &[]);
    cluster.wait_for_leader(Duration::from_secs(10)).await;
    let mut client = cluster.client();
    setup_market(&mut client, 1).await;
    // Restart node 3 as a faulty replica: from index 20 on it reports a wrong hash.
    cluster.kill(3);
    cluster.start_node_with(3, &["--fault-diverge-at", "20"]);
    for i in 0..30 {
        accepted(
            &submit(
                &mut client,
                limit(1, Side::Buy, 100 + i, 1),
                Duration::from_secs(5),
            )
            .await,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let statuses = cluster.statuses().await;
        let diverged: Vec<u64> = statuses
            .iter()
            .filter(|(_, s)| s.as_ref().is_some_and(|s| s.divergence.is_some()))
            .map(|(id, _)| *id)
            .collect();
        if diverged.len() == 3 {
            let healthy = statuses[&1].as_ref().expect("node 1");
            let report = healthy.divergence.as_ref().expect("divergence");
            assert!(
                report.contains("node 3"),
                "node 1 should name node 3: {report}"
            );
            // `exchange-cli status` shows it and exits 5: the cluster answers, but is unhealthy.
            let (code, out) = cluster.cli(&["status"]);
            assert_eq!(code, Some(5), "status with a divergence: {out}");
            assert!(out.contains("DIVERGED"), "{out}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "divergence not reported by every node: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
