//! A node that falls far behind catches up from a snapshot, and log compaction keeps going.

mod support;

use std::time::Duration;

use exchange::domain::Side;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_far_behind_catches_up_from_a_snapshot() {
    // Snapshot every 20 entries, so the log behind the others is purged while node 3 is down.
    let mut cluster = Cluster::start("snapshot", 3, 24_400, &["--snapshot-every", "20"]);
    cluster.wait_for_leader(Duration::from_secs(10)).await;
    let mut client = cluster.client();
    setup_market(&mut client, 2).await;

    let lagging = if cluster.wait_for_leader(Duration::from_secs(5)).await == 3 {
        2
    } else {
        3
    };
    cluster.kill(lagging);
    for i in 0..120 {
        let side = if i % 3 == 0 { Side::Sell } else { Side::Buy };
        let outputs = submit(
            &mut client,
            limit(1 + i % 2, side, 100 + (i as i64 % 7), 3),
            Duration::from_secs(5),
        )
        .await;
        accepted(&outputs);
    }
    cluster.start_node(lagging);
    cluster.assert_converged(Duration::from_secs(20)).await;
    let log =
        std::fs::read_to_string(cluster.dir.join(format!("node-{lagging}.log"))).expect("node log");
    assert!(
        log.contains("installed a snapshot from the leader"),
        "the lagging node should have caught up through a snapshot"
    );
    assert!(cluster.data_dir(lagging).join("snapshot.bin").exists());
}
