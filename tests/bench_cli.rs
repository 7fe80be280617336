//! `exchange-cli bench` against a real 3-node cluster: the open loop (one request out per
//! session, and pipelined) and the closed loop each answer every order they send, and the
//! JSON report adds up.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Longer than any of these runs takes, even on a loaded 2-core host.
const BENCH_DEADLINE: Duration = Duration::from_secs(90);

/// Runs `exchange-cli bench` with `args` against `cluster` and returns its JSON report. The
/// process is killed if it overruns its deadline.
fn bench(cluster: &Cluster, run: u32, args: &[&str]) -> serde_json::Value {
    let nodes = cluster
        .brokers()
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    // A fresh symbol, brokers and accounts per run: a run registers its own.
    let symbol = (900 + run).to_string();
    let first_account = (900_000 + 1_000 * run as u64).to_string();
    let first_broker = (100 + 20 * run).to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_exchange-cli"))
        .arg("bench")
        .args(args)
        .args(["--json", "--sessions", "4", "--nodes", &nodes])
        .args(["--symbol", &symbol, "--first-account", &first_account])
        .args(["--first-broker", &first_broker, "--api-key", ADMIN_KEY])
        .arg("--certs-dir")
        .arg(cluster.dir.join("certs"))
        .arg("--floor-dir")
        .arg(&cluster.dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start exchange-cli bench");
    let started = Instant::now();
    while child.try_wait().expect("poll the bench").is_none() {
        if started.elapsed() > BENCH_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("exchange-cli bench {args:?} ran past {BENCH_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("bench output");
    assert!(
        output.status.success(),
        "exchange-cli bench {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "exchange-cli bench {args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// The highest term any node reports.
fn term(cluster: &Cluster, runtime: &tokio::runtime::Runtime) -> u64 {
    runtime
        .block_on(cluster.statuses())
        .values()
        .flatten()
        .map(|status| status.term)
        .max()
        .unwrap_or(0)
}

/// A bench run in which no order failed. On a loaded host the leader can lose its majority
/// for a moment (it then answers "outcome unknown" or "unavailable") or be replaced: a real
/// client's outcomes, never a wrong answer. A run whose failures are all of these kinds is
/// made again (as a new run number), at most twice; one with any other failure fails the test.
fn clean_bench(
    cluster: &Cluster,
    runtime: &tokio::runtime::Runtime,
    run: u32,
    args: &[&str],
) -> serde_json::Value {
    let mut attempt = 0;
    loop {
        let before = term(cluster, runtime);
        let report = bench(cluster, run + 10 * attempt, args);
        if number(&report, &["failed"]) == 0.0 {
            return report;
        }
        assert_eq!(
            number(&report, &["failures", "refused"]),
            0.0,
            "{args:?}: orders refused: {report}"
        );
        assert!(
            attempt < 2,
            "{args:?}: orders failed in three runs: {report}"
        );
        eprintln!(
            "{args:?}: {} orders unavailable or of unknown outcome (term {before} -> {}; the first: {}); running it again",
            number(&report, &["failed"]),
            term(cluster, runtime),
            report["first_failure"]
        );
        attempt += 1;
    }
}

fn number(report: &serde_json::Value, path: &[&str]) -> f64 {
    let mut value = report;
    for key in path {
        value = &value[key];
    }
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{path:?} missing from the report: {report}"))
}

/// Every order answered, none failed, and the figures consistent with each other.
fn assert_sound(report: &serde_json::Value, what: &str) {
    let sent = number(report, &["sent"]);
    let acked = number(report, &["acked"]);
    assert!(sent > 0.0, "{what}: nothing sent: {report}");
    assert_eq!(number(report, &["failed"]), 0.0, "{what}: {report}");
    assert_eq!(acked, sent, "{what}: every order answered: {report}");
    let (p50, p99, max) = (
        number(report, &["p50_us"]),
        number(report, &["p99_us"]),
        number(report, &["max_us"]),
    );
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= max,
        "{what}: percentiles out of order: {report}"
    );
    // Each order's send lag is part of its order-to-ack.
    assert_eq!(number(report, &["send_lag", "count"]), sent, "{what}");
    assert!(
        number(report, &["send_lag", "p50_us"]) <= p50,
        "{what}: send lag above order-to-ack: {report}"
    );
    assert!(
        number(report, &["floor", "count"]) > 0.0,
        "{what}: {report}"
    );
}

#[test]
fn bench_reports_every_order_in_each_mode() {
    let cluster = Cluster::start("bench", 3, 27_200, &[]);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(cluster.wait_for_leader(Duration::from_secs(10)));

    let open = clean_bench(
        &cluster,
        &runtime,
        1,
        &["--rate", "1000", "--duration", "2"],
    );
    assert_sound(&open, "open loop");
    // 2,000 orders scheduled over 2 s: all of them sent (the last few may fall just after).
    let sent = number(&open, &["sent"]);
    assert!(
        (1_900.0..=2_100.0).contains(&sent),
        "open loop at 1,000/s for 2 s sent {sent}"
    );

    let pipelined = clean_bench(
        &cluster,
        &runtime,
        2,
        &["--rate", "1000", "--duration", "2", "--pipeline"],
    );
    assert_sound(&pipelined, "pipelined open loop");
    let sent = number(&pipelined, &["sent"]);
    assert!(
        (1_900.0..=2_100.0).contains(&sent),
        "pipelined open loop at 1,000/s for 2 s sent {sent}"
    );

    let closed = clean_bench(&cluster, &runtime, 3, &["--rate", "0", "--duration", "1"]);
    assert_sound(&closed, "closed loop");
    eprintln!(
        "open loop p50 {} us (send lag p50 {} us); pipelined p50 {} us; closed loop {:.0} orders/s",
        number(&open, &["p50_us"]),
        number(&open, &["send_lag", "p50_us"]),
        number(&pipelined, &["p50_us"]),
        number(&closed, &["throughput_per_sec"]),
    );
}
