//! The audit trail an operator reads (target `audit` in the node's log): logons, refused
//! logons and logoffs with the broker and its address, leader changes, and broker key changes
//! (never the key).

mod support;

use std::time::{Duration, Instant};

use support::*;

/// The leader's audit records so far, as JSON objects.
fn audit_records(cluster: &Cluster, id: u64) -> Vec<serde_json::Value> {
    let log = std::fs::read_to_string(cluster.dir.join(format!("node-{id}.log"))).expect("log");
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|record| record["target"] == "audit")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logons_keys_and_leaders_are_audited() {
    let cluster = Cluster::start("audit", 3, 27_900, &["--log-format", "json"]);
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let mut admin = cluster.client();
    setup_market(&mut admin, 1).await;
    // A refused logon: a key nobody has.
    let mut stranger = cluster.client_with_key("nobody-has-this-key-0123456789");
    assert!(stranger.balances(1, vec![2]).await.is_err());
    // A broker key set by the operator.
    let key = "audited-broker-key-0123456789";
    admin.set_broker_key(7, key).await.expect("set the key");
    drop(admin);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records = audit_records(&cluster, leader);
        let has = |event: &str| records.iter().any(|r| r["fields"]["event"] == event);
        let key_set = records
            .iter()
            .any(|r| r["fields"]["event"] == "broker key" && r["fields"]["broker"] == 7);
        if has("logon") && has("logon refused") && has("logoff") && has("leader") && key_set {
            let text = records.iter().map(|r| r.to_string()).collect::<String>();
            assert!(
                !text.contains(key),
                "the key itself is never logged: {text}"
            );
            let logon = records
                .iter()
                .find(|r| r["fields"]["event"] == "logon")
                .expect("a logon");
            assert!(
                logon["fields"]["remote"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("127.0.0.1:")),
                "{logon}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "audit records of node {leader}: {records:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
