//! `exchange-node` flags an operator relies on: a peer named by host name, and log lines as
//! JSON for a log collector.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the node when the test ends, also when it fails.
struct Node(std::process::Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_node_named_by_host_logs_json_lines() {
    let dir = tempfile::tempdir().expect("scratch directory");
    let certs = dir.path().join("certs");
    let status = Command::new(env!("CARGO_BIN_EXE_exchange-node"))
        .args(["gen-certs", "--nodes", "1", "--dir"])
        .arg(&certs)
        .stdout(Stdio::null())
        .status()
        .expect("gen-certs");
    assert!(status.success());
    let mut node = Node(
        Command::new(env!("CARGO_BIN_EXE_exchange-node"))
            .args(["--id", "1", "--peers", "1=localhost:27801", "--bootstrap"])
            .args(["--log-format", "json", "--data-dir"])
            .arg(dir.path().join("node-1"))
            .arg("--certs-dir")
            .arg(&certs)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start exchange-node"),
    );
    let stderr = node.0.stderr.take().expect("stderr");
    // Read on a thread of its own, so that a node that says nothing cannot hang the test.
    let (lines, read) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = read
            .recv_timeout(left)
            .expect("the node logged 'node started' within 10 s");
        let record: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(record["level"].is_string(), "{line}");
        if record["fields"]["message"] == "node started" {
            // The host name was resolved to the loopback address it names.
            let raft = record["fields"]["raft"].as_str().expect("raft address");
            assert!(raft == "127.0.0.1:27801" || raft == "[::1]:27801", "{line}");
            break;
        }
    }
}

/// Runs `exchange-node --check-config` with `args` and `env` (and no other EXCHANGE_ variable);
/// returns what it printed.
fn checked_config(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_exchange-node"));
    command.arg("--check-config").args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("EXCHANGE_") {
            command.env_remove(name);
        }
    }
    let out = command
        .envs(env.iter().copied())
        .output()
        .expect("run exchange-node");
    assert!(
        out.status.success(),
        "exchange-node --check-config {args:?} {env:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn a_node_configured_by_toml_or_by_environment_runs_the_same() {
    let dir = tempfile::tempdir().expect("scratch directory");
    let toml = dir.path().join("node.toml");
    std::fs::write(
        &toml,
        r#"
id = 2
peers = ["1=127.0.0.1:27811", "2=127.0.0.1:27812/127.0.0.1:27912", "3=localhost:27813"]
data_dir = "/var/lib/exchange"
certs_dir = "/etc/exchange/certs"
raft_listen = "0.0.0.0:27812"
broker_listen = "0.0.0.0:27912"
fsync = "always"
idle = "spin"
pin_core = 3
runtime_threads = 3
heartbeat_ms = 25
election_min_ms = 50
election_max_ms = 100
snapshot_every = 5000
segment_mib = 16
bootstrap = true
brokers = "/etc/exchange/brokers.toml"
dev = true
session_rate = 1000
session_in_flight = 64
broker_sessions_max = 8
session_read_rate = 300
broker_rate = 4000
broker_read_rate = 900
metrics_listen = "127.0.0.1:27999"
md_subscriber_buffer = 512
report_db = "/var/lib/exchange/report.db"
log_format = "json"
"#,
    )
    .expect("write the TOML file");
    let from_toml = checked_config(&["--config", toml.to_str().expect("path")], &[]);
    let from_env = checked_config(
        &[],
        &[
            ("EXCHANGE_ID", "2"),
            (
                "EXCHANGE_PEERS",
                "1=127.0.0.1:27811,2=127.0.0.1:27812/127.0.0.1:27912,3=localhost:27813",
            ),
            // The file's data_dir is the root of every node's; the variable, like the flag,
            // is this node's own.
            ("EXCHANGE_DATA_DIR", "/var/lib/exchange/node-2"),
            ("EXCHANGE_CERTS_DIR", "/etc/exchange/certs"),
            ("EXCHANGE_RAFT_LISTEN", "0.0.0.0:27812"),
            ("EXCHANGE_BROKER_LISTEN", "0.0.0.0:27912"),
            ("EXCHANGE_FSYNC", "always"),
            ("EXCHANGE_IDLE", "spin"),
            ("EXCHANGE_PIN_CORE", "3"),
            ("EXCHANGE_RUNTIME_THREADS", "3"),
            ("EXCHANGE_HEARTBEAT_MS", "25"),
            ("EXCHANGE_ELECTION_MIN_MS", "50"),
            ("EXCHANGE_ELECTION_MAX_MS", "100"),
            ("EXCHANGE_SNAPSHOT_EVERY", "5000"),
            ("EXCHANGE_SEGMENT_MIB", "16"),
            ("EXCHANGE_BOOTSTRAP", "true"),
            ("EXCHANGE_BROKERS", "/etc/exchange/brokers.toml"),
            ("EXCHANGE_DEV", "true"),
            ("EXCHANGE_SESSION_RATE", "1000"),
            ("EXCHANGE_SESSION_IN_FLIGHT", "64"),
            ("EXCHANGE_BROKER_SESSIONS_MAX", "8"),
            ("EXCHANGE_SESSION_READ_RATE", "300"),
            ("EXCHANGE_BROKER_RATE", "4000"),
            ("EXCHANGE_BROKER_READ_RATE", "900"),
            ("EXCHANGE_METRICS_LISTEN", "127.0.0.1:27999"),
            ("EXCHANGE_MD_SUBSCRIBER_BUFFER", "512"),
            ("EXCHANGE_REPORT_DB", "/var/lib/exchange/report.db"),
            ("EXCHANGE_LOG_FORMAT", "json"),
        ],
    );
    assert_eq!(from_toml, from_env);
    // And it is this configuration, not the defaults.
    for expected in [
        "pin_core: Some(\n        3,",
        "heartbeat_ms: 25",
        "runtime_threads: 3",
        "bootstrap: true",
        "dev: true",
        "sessions_per_broker_max: 8",
        "reads_per_sec: 300",
        "broker_commands_per_sec: 4000",
        "broker_reads_per_sec: 900",
        "Always",
        "Spin",
    ] {
        assert!(from_toml.contains(expected), "{expected} in {from_toml}");
    }
    // A flag wins over both.
    let flagged = checked_config(
        &[
            "--config",
            toml.to_str().expect("path"),
            "--heartbeat-ms",
            "30",
        ],
        &[("EXCHANGE_HEARTBEAT_MS", "40")],
    );
    assert!(flagged.contains("heartbeat_ms: 30"), "{flagged}");
}
