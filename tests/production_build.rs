//! The node a real exchange runs is built without the `test-faults` feature, and must refuse
//! every planted-fault flag as an unknown argument, so that no configuration can switch one on.

#![cfg(not(feature = "test-faults"))]

use std::process::Command;

/// Every flag a `test-faults` build of exchange-node accepts (src/bin/exchange-node.rs).
const FAULT_FLAGS: &[&str] = &[
    "--fault-diverge-at=300",
    "--fault-ack-unsequenced-every=50",
    "--fault-double-submit-every=50",
    "--fault-drop-execution-every=20",
    "--fault-reorder-reports-every=10",
    "--fault-stale-balances-every=5",
    "--fault-count-held-twice",
    "--fault-refuse-sequenced-every=100",
    "--fault-market-gap-every=20",
    "--fault-wrong-depth",
    "--fault-report-time-back-every=10",
    "--fault-exit-after-commands=500",
    "--fault-admin-unknown-every=3",
    "--fault-status-hides-leader-from=200",
    "--fault-status-refused",
];

/// The list above names every fault flag the node's source declares: a new one cannot be
/// left out of the check.
#[test]
fn the_list_names_every_fault_flag() {
    let source = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/bin/exchange-node.rs"
    ))
    .expect("read exchange-node.rs");
    let declared: Vec<String> = source
        .lines()
        .filter_map(|line| line.trim().strip_prefix("fault_"))
        .filter_map(|rest| rest.split(':').next())
        .map(|name| format!("--fault-{}", name.replace('_', "-")))
        .collect();
    let listed: Vec<&str> = FAULT_FLAGS
        .iter()
        .map(|flag| flag.split('=').next().unwrap_or(flag))
        .collect();
    assert!(declared.len() >= 15, "found only {declared:?}");
    for name in &declared {
        assert!(listed.contains(&name.as_str()), "{name} is not checked");
    }
}

#[test]
fn a_production_node_refuses_every_fault_flag() {
    for flag in FAULT_FLAGS.iter().copied() {
        let out = Command::new(env!("CARGO_BIN_EXE_exchange-node"))
            .args(["--id", "1", "--peers", "1=127.0.0.1:1", flag])
            .output()
            .expect("run exchange-node");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        let name = flag.split('=').next().unwrap_or(flag);
        assert!(
            stderr.contains("unexpected argument") && stderr.contains(name),
            "{flag}: {stderr}"
        );
    }
}
