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
