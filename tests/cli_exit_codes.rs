//! `exchange-cli` on a real cluster: its exit codes say what happened (0 done, 1 refused by
//! the exchange, 2 usage, 3 cluster unavailable), and it never logs on as the operator
//! unless asked to.

mod support;

use std::time::{Duration, Instant};

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_follow_the_outcome() {
    let mut cluster = Cluster::start("cli-codes", 3, 27_600, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    setup_market(&mut cluster.client(), 1).await;

    let (code, out) = cluster.cli(&["status"]);
    assert_eq!(code, Some(0), "status of a healthy cluster: {out}");
    assert!(out.contains("leader"), "{out}");

    // No key and no --admin: refused before anything is sent, as a usage error.
    let (code, out) = cluster.cli(&["admin", "deposit", "--account", "1", "--asset", "2"]);
    assert_eq!(code, Some(2), "a clap usage error (no --amount): {out}");
    let deposit = [
        "admin",
        "deposit",
        "--account",
        "1",
        "--asset",
        "2",
        "--amount",
        "5",
    ];
    let (code, out) = cluster.cli(&deposit);
    assert_eq!(code, Some(2), "an admin command without a logon: {out}");
    let brokers_file = cluster.dir.join("brokers.toml");
    let brokers_file = brokers_file.to_str().expect("a UTF-8 path");
    let as_operator = [&deposit[..], &["--admin", "--brokers-file", brokers_file]].concat();
    let (code, out) = cluster.cli(&as_operator);
    assert_eq!(code, Some(0), "the deposit with --admin: {out}");

    // A broker acting for an account it does not own: refused by the exchange.
    let order = [
        "order",
        "new",
        "--account",
        "1",
        "--symbol",
        "1",
        "--side",
        "buy",
        "--price",
        "100",
        "--qty",
        "1",
        "--client-order-id",
        "1",
        "--api-key",
        BROKERS[0].1,
    ];
    let (code, out) = cluster.cli(&order);
    assert_eq!(code, Some(1), "an order the exchange rejects: {out}");

    // The leader and one follower gone: the last node knows no leader.
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let last = (1..=3)
        .find(|id| *id != leader && *id != follower)
        .expect("a third node");
    cluster.kill(leader);
    cluster.kill(follower);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, out) = cluster.cli(&["status"]);
        if code == Some(3) {
            assert!(out.contains("unreachable"), "{out}");
            break;
        }
        // Until node {last} notices, it may still name the old leader.
        assert!(
            Instant::now() < deadline,
            "status with only node {last} up exited {code:?}: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
