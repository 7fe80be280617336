//! SIGKILL a process appending with `FlushPolicy::Always` at random moments: every record it
//! reported durable must be there after reopening, intact.
//!
//! The child is this test binary run again with `CHILD_DIR_ENV` set, filtered to
//! `child_appends_until_killed`; it prints `durable N` after each append returns.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use common::payload;
use exchange_log::{Config, FlushPolicy, Log, Record};

const CHILD_DIR_ENV: &str = "EXCHANGE_LOG_KILL_CHILD_DIR";
const ROUNDS: usize = 4;
/// The child is killed after a random time up to this.
const KILL_AFTER_MAX: Duration = Duration::from_millis(600);
/// Bounds a round: a child that reports nothing by then has hung.
const ROUND_DEADLINE: Duration = Duration::from_secs(30);

fn config() -> Config {
    Config {
        segment_bytes: 64 << 10, // a segment switch every few hundred records
        flush: FlushPolicy::Always,
        first_index: 1,
    }
}

fn len_of(index: u64) -> usize {
    (index * 7919 % 700) as usize
}

/// The child: append forever (until killed, or a bound), reporting durable indexes.
#[test]
fn child_appends_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return; // run normally: only the kill test below runs this as a child
    };
    let mut log = Log::open(Path::new(&dir), config()).expect("child: open");
    let start = Instant::now();
    while start.elapsed() < ROUND_DEADLINE {
        let first = log.next_index();
        let batch = first % 3 + 1;
        let payloads: Vec<Vec<u8>> = (first..first + batch)
            .map(|i| payload(i, len_of(i)))
            .collect();
        let appended = log
            .append_batch((first..).zip(&payloads).map(|(index, p)| Record {
                term: 1,
                index,
                payload: p,
            }))
            .expect("child: append");
        assert!(appended.durable);
        println!("durable {}", appended.last_index.expect("not empty"));
    }
}

/// Kills the child if the test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn random_delay(round: usize) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let seed = nanos ^ (round as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let max = KILL_AFTER_MAX.as_millis() as u64;
    Duration::from_millis(20 + seed % max)
}

#[test]
fn records_reported_durable_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test executable");
    let mut reported_max = 0;
    for round in 0..ROUNDS {
        let child = Command::new(&exe)
            .args(["--exact", "child_appends_until_killed", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let mut child = KillOnDrop(child);
        let stdout = child.0.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel();
        let lines = thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(index) = line.strip_prefix("durable ") {
                    let _ = tx.send(index.parse::<u64>().expect("an index"));
                }
            }
        });
        // Wait for the first report, then let it run a random while and kill it.
        let first = rx.recv_timeout(ROUND_DEADLINE).expect("child reports");
        assert!(
            first > reported_max,
            "the child continues after the last round"
        );
        thread::sleep(random_delay(round));
        child.0.kill().expect("SIGKILL");
        child.0.wait().expect("reap");
        lines.join().expect("reader thread");
        let round_max = rx.try_iter().last().unwrap_or(first);
        assert!(round_max >= reported_max);
        reported_max = round_max;

        let mut log = Log::open(dir.path(), config()).expect("reopen after SIGKILL");
        let last = log.last_index().expect("records");
        assert!(
            last >= reported_max,
            "round {round}: reported {reported_max} durable, found only up to {last}"
        );
        eprintln!("round {round}: {reported_max} reported durable, {last} found");
        for index in 1..=last {
            let record = log.get(index).expect("record");
            assert_eq!(record.payload, &payload(index, len_of(index))[..]);
        }
    }
}
