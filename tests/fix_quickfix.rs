//! FIX order entry with a real FIX engine as the broker: QuickFIX (C++, Debian's
//! libquickfix-dev), built and its FIX44.xml data dictionary fetched by `scripts/quickfix.sh`,
//! driven through `tests/fix/initiator.cpp`. QuickFIX runs the broker's session layer and
//! validates every message the exchange sends against the dictionary: a message that fails is
//! answered with a Reject(3), which these tests look for.
//!
//! Ignored in a plain `cargo test` (they need QuickFIX); `scripts/test.sh` builds it and runs
//! them: `cargo test --profile release-checked --test fix_quickfix -- --ignored`.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use exchange::domain::{Command as ExchangeCommand, Event, Price, Qty, SymbolId, SymbolSpec};
use support::{setup_broker_accounts, submit, Cluster, BASE, BROKERS, DROP_COPY, QUOTE};

const BASE_PORT: u16 = 29_600;

/// The instrument the tests trade: prices with 2 decimals.
const AAPL: SymbolId = SymbolId(7);

/// Where `scripts/quickfix.sh` puts the initiator and the dictionary.
fn quickfix_dir() -> PathBuf {
    std::env::var_os("EXCHANGE_QUICKFIX_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/quickfix"))
}

/// One FIX message as the initiator printed it (`|` for SOH): its fields in order.
#[derive(Clone, Debug)]
struct Fix {
    kind: String,
    fields: Vec<(u32, String)>,
}

impl Fix {
    fn parse(line: &str) -> Option<Fix> {
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        let fields = rest
            .split('|')
            .filter(|f| !f.is_empty())
            .filter_map(|f| {
                let (tag, value) = f.split_once('=')?;
                Some((tag.parse().ok()?, value.to_string()))
            })
            .collect();
        Some(Fix {
            kind: kind.to_string(),
            fields,
        })
    }

    fn get(&self, tag: u32) -> Option<&str> {
        self.fields
            .iter()
            .find(|(t, _)| *t == tag)
            .map(|(_, v)| v.as_str())
    }

    fn is(&self, kind: &str, msg_type: &str) -> bool {
        self.kind == kind && self.get(35) == Some(msg_type)
    }
}

/// A QuickFIX initiator process, as the broker.
struct Initiator {
    child: Child,
    stdin: ChildStdin,
    events: mpsc::Receiver<String>,
    seen: Vec<Fix>,
    name: String,
}

impl Initiator {
    /// Starts an initiator for `comp_id` with `key`, connecting to `ports` in turn (QuickFIX's
    /// SocketConnectHost<n>); its store and log live in `dir`, so a second one started on the
    /// same `dir` carries on the sequence numbers.
    fn start(dir: &std::path::Path, comp_id: &str, key: &str, ports: &[u16]) -> Initiator {
        Initiator::launch(dir, comp_id, key, ports, None)
    }

    /// The same over TLS (QuickFIX's SSLSocketInitiator), trusting the CA in `ca`.
    fn start_tls(
        dir: &std::path::Path,
        comp_id: &str,
        key: &str,
        ports: &[u16],
        ca: &std::path::Path,
    ) -> Initiator {
        Initiator::launch(dir, comp_id, key, ports, Some(ca))
    }

    /// The session settings are the project's sample (cluster/fix/quickfix.cfg, or
    /// quickfix-tls.cfg), with this test's paths, CompID, heartbeat and ports.
    fn launch(
        dir: &std::path::Path,
        comp_id: &str,
        key: &str,
        ports: &[u16],
        ca: Option<&std::path::Path>,
    ) -> Initiator {
        let qf = quickfix_dir();
        let binary = qf.join("initiator");
        let dictionary = qf.join("FIX44.xml");
        assert!(
            binary.exists() && dictionary.exists(),
            "QuickFIX is not built: run scripts/quickfix.sh (it installs libquickfix-dev, builds \
             {} and fetches {})",
            binary.display(),
            dictionary.display()
        );
        std::fs::create_dir_all(dir).unwrap();
        let sample = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(if ca.is_some() {
            "cluster/fix/quickfix-tls.cfg"
        } else {
            "cluster/fix/quickfix.cfg"
        });
        let sample = std::fs::read_to_string(&sample)
            .unwrap_or_else(|e| panic!("{}: {e}", sample.display()));
        let store = dir.join("store").display().to_string();
        let log = dir.join("log").display().to_string();
        let dict = dictionary.display().to_string();
        let ca = ca.map(|ca| ca.display().to_string());
        let mut replaced = 0;
        let mut config = String::new();
        for line in sample.lines() {
            let value = match line.split_once('=').map(|(k, _)| k) {
                Some("FileStorePath") => Some(store.as_str()),
                Some("FileLogPath") => Some(log.as_str()),
                Some("DataDictionary") => Some(dict.as_str()),
                Some("HeartBtInt") => Some("10"),
                Some("SenderCompID") => Some(comp_id),
                Some("CertificationAuthoritiesFile") => ca.as_deref(),
                // This test's ports take their place, at the end of the [SESSION].
                Some(k) if k.starts_with("SocketConnect") => {
                    replaced += 1;
                    continue;
                }
                _ => None,
            };
            match value {
                Some(value) => {
                    let key = line.split_once('=').unwrap().0;
                    config.push_str(&format!("{key}={value}\n"));
                    replaced += 1;
                }
                None => config.push_str(&format!("{line}\n")),
            }
        }
        // FileStorePath, FileLogPath, DataDictionary, HeartBtInt, SenderCompID, the CA for
        // TLS, and three hosts with their ports: a sample without them is not what the
        // docs say.
        let expected = 5 + 6 + usize::from(ca.is_some());
        assert_eq!(replaced, expected, "the sample's keys changed:\n{sample}");
        for (i, port) in ports.iter().enumerate() {
            let n = if i == 0 { String::new() } else { i.to_string() };
            config.push_str(&format!(
                "SocketConnectHost{n}=127.0.0.1\nSocketConnectPort{n}={port}\n"
            ));
        }
        let config_path = dir.join("initiator.cfg");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new(&binary)
            .arg(&config_path)
            .arg(key)
            .args(ca.map(|_| "tls"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the QuickFIX initiator");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Initiator {
            child,
            stdin,
            events,
            seen: Vec::new(),
            name: comp_id.to_string(),
        }
    }

    fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write to the initiator");
        self.stdin.flush().unwrap();
    }

    fn send(&mut self, fields: &str) {
        self.command(&format!("send {fields}"));
    }

    /// The next event `matches` accepts, within `within`; every event is kept in `seen`.
    fn wait_for(&mut self, within: Duration, what: &str, matches: impl Fn(&Fix) -> bool) -> Fix {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.events.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => panic!(
                    "{}: no {what} within {within:?}; events so far:\n{}",
                    self.name,
                    self.seen
                        .iter()
                        .map(|f| format!("{} {:?}", f.kind, f.fields))
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            };
            let Some(fix) = Fix::parse(&line) else {
                continue;
            };
            self.seen.push(fix.clone());
            if matches(&fix) {
                return fix;
            }
        }
    }

    /// Everything that arrives within `for_`.
    fn drain(&mut self, for_: Duration) {
        let deadline = Instant::now() + for_;
        while let Ok(line) = self
            .events
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if let Some(fix) = Fix::parse(&line) {
                self.seen.push(fix);
            }
        }
    }

    /// The execution reports received so far for a ClOrdID.
    fn reports_of(&self, cl_ord_id: &str) -> Vec<Fix> {
        self.seen
            .iter()
            .filter(|f| f.is("FROM_APP", "8") && f.get(11) == Some(cl_ord_id))
            .cloned()
            .collect()
    }

    /// Rejects QuickFIX sent: each is a message of the exchange that broke the session rules
    /// or the data dictionary.
    fn rejects_sent(&self) -> Vec<Fix> {
        self.seen
            .iter()
            .filter(|f| {
                f.kind == "TO_ADMIN" && f.get(35) == Some("3")
                    || f.kind == "TO_APP" && f.get(35) == Some("j")
            })
            .cloned()
            .collect()
    }

    fn stop(mut self) {
        let _ = writeln!(self.stdin, "quit");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Initiator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// AAPL (2 decimals) and funds for broker 1's accounts 1001 and 1002 and broker 2's 2001.
async fn setup(cluster: &Cluster) {
    let aapl = SymbolSpec {
        symbol: AAPL,
        base: BASE,
        quote: QUOTE,
        tick_size: Price(1),
        lot_size: Qty(1),
        name: exchange::domain::Name::new("AAPL").unwrap(),
        price_decimals: 2,
    };
    setup_broker_accounts(&mut cluster.client(), aapl, &[1001, 1002, 2001]).await;
}

fn key(broker: u32) -> &'static str {
    BROKERS.iter().find(|(id, _, _)| *id == broker).unwrap().1
}

const WAIT: Duration = Duration::from_secs(10);

fn order(cl_ord_id: &str, account: u64, side: u8, qty: u64, price: &str) -> String {
    format!(
        "35=D|11={cl_ord_id}|1={account}|55=AAPL|54={side}|38={qty}|40=2|44={price}|59=1|60=20261203-10:00:00.000"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs QuickFIX: scripts/quickfix.sh builds it; scripts/test.sh runs this"]
async fn a_quickfix_broker_logs_on_trades_and_recovers_a_gap() {
    let cluster = Cluster::start(
        "fix-quickfix",
        3,
        BASE_PORT,
        &["--fix-listen", "127.0.0.1:{fix}"],
    );
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    setup(&cluster).await;
    let port = cluster.fix_port(leader);
    let dir = cluster.dir.join("quickfix");

    // Refused: a wrong key, and broker 1's key under broker 2's CompID.
    let mut wrong = Initiator::start(
        &dir.join("wrong-key"),
        "BROKER1",
        "not-the-key-of-anyone",
        &[port],
    );
    let logout = wrong.wait_for(WAIT, "a Logout", |f| f.is("FROM_ADMIN", "5"));
    assert!(
        logout.get(58).unwrap_or("").contains("unknown API key"),
        "{logout:?}"
    );
    assert!(!wrong.seen.iter().any(|f| f.kind == "LOGON"));
    wrong.stop();
    let mut other = Initiator::start(&dir.join("other-compid"), "BROKER2", key(1), &[port]);
    let logout = other.wait_for(WAIT, "a Logout", |f| f.is("FROM_ADMIN", "5"));
    assert!(
        logout
            .get(58)
            .unwrap_or("")
            .contains("not the CompID of broker 1"),
        "{logout:?}"
    );
    assert!(!other.seen.iter().any(|f| f.kind == "LOGON"));
    other.stop();

    // Logged on with the good key; broker 1's drop copy beside it (a wrong key refused first).
    let mut broker = Initiator::start(&dir.join("broker1"), "BROKER1", key(1), &[port]);
    broker.wait_for(WAIT, "LOGON", |f| f.kind == "LOGON");
    let mut wrong = Initiator::start(&dir.join("wrong-drop-copy"), DROP_COPY.0, key(1), &[port]);
    let logout = wrong.wait_for(WAIT, "a Logout", |f| f.is("FROM_ADMIN", "5"));
    assert!(
        logout.get(58).unwrap_or("").contains("wrong key"),
        "{logout:?}"
    );
    wrong.stop();
    let mut drop_copy = Initiator::start(&dir.join("drop-copy"), DROP_COPY.0, DROP_COPY.1, &[port]);
    drop_copy.wait_for(WAIT, "LOGON", |f| f.kind == "LOGON");

    // A resting buy, partly filled by a sell of another account of the same broker.
    broker.send(&order("o-1", 1001, 1, 10, "100.50"));
    let new = broker.wait_for(WAIT, "the buy's New", |f| {
        f.is("FROM_APP", "8") && f.get(11) == Some("o-1")
    });
    assert_eq!(
        (
            new.get(150),
            new.get(39),
            new.get(151),
            new.get(14),
            new.get(44)
        ),
        (Some("0"), Some("0"), Some("10"), Some("0"), Some("100.50"))
    );
    let order_id = new.get(37).unwrap().to_string();
    broker.send(&order("o-2", 1002, 2, 4, "100.50"));
    let fill = broker.wait_for(WAIT, "the buy's fill", |f| {
        f.is("FROM_APP", "8") && f.get(11) == Some("o-1") && f.get(150) == Some("F")
    });
    assert_eq!(
        (
            fill.get(39),
            fill.get(32),
            fill.get(31),
            fill.get(14),
            fill.get(151),
            fill.get(6)
        ),
        (
            Some("1"),
            Some("4"),
            Some("100.50"),
            Some("4"),
            Some("6"),
            Some("100.5000")
        )
    );
    let sell = broker.wait_for(WAIT, "the sell's fill", |f| {
        f.is("FROM_APP", "8") && f.get(11) == Some("o-2") && f.get(150) == Some("F")
    });
    assert_eq!(
        (sell.get(39), sell.get(14), sell.get(151)),
        (Some("2"), Some("4"), Some("0"))
    );

    // Replace: 8 in all (4 filled, 4 open) at 100.40; then cancel.
    broker.send(
        "35=G|11=r-1|41=o-1|1=1001|55=AAPL|54=1|38=8|40=2|44=100.40|60=20261203-10:00:01.000",
    );
    let replaced = broker.wait_for(WAIT, "Replaced", |f| {
        f.is("FROM_APP", "8") && f.get(150) == Some("5")
    });
    assert_eq!(
        (
            replaced.get(11),
            replaced.get(41),
            replaced.get(37),
            replaced.get(38),
            replaced.get(151),
            replaced.get(14),
            replaced.get(44)
        ),
        (
            Some("r-1"),
            Some("o-1"),
            Some(order_id.as_str()),
            Some("8"),
            Some("4"),
            Some("4"),
            Some("100.40")
        )
    );
    broker.send("35=H|11=r-1|1=1001|55=AAPL|54=1");
    let status = broker.wait_for(WAIT, "the order's status", |f| {
        f.is("FROM_APP", "8") && f.get(150) == Some("I")
    });
    assert_eq!(
        (status.get(39), status.get(151), status.get(14)),
        (Some("1"), Some("4"), Some("4"))
    );
    broker.send("35=F|11=r-2|41=r-1|1=1001|55=AAPL|54=1|38=8|60=20261203-10:00:02.000");
    let cancelled = broker.wait_for(WAIT, "Canceled", |f| {
        f.is("FROM_APP", "8") && f.get(150) == Some("4")
    });
    assert_eq!(
        (
            cancelled.get(11),
            cancelled.get(41),
            cancelled.get(39),
            cancelled.get(151),
            cancelled.get(14)
        ),
        (Some("r-2"), Some("r-1"), Some("4"), Some("0"), Some("4"))
    );
    // A cancel of an order that is no longer live.
    broker.send("35=F|11=r-3|41=r-1|1=1001|55=AAPL|54=1|38=8|60=20261203-10:00:03.000");
    let refused = broker.wait_for(WAIT, "OrderCancelReject", |f| f.is("FROM_APP", "9"));
    assert_eq!(
        (refused.get(11), refused.get(434), refused.get(102)),
        (Some("r-3"), Some("1"), Some("1"))
    );

    // Mass cancel of two resting orders.
    broker.send(&order("o-3", 1001, 1, 5, "99"));
    broker.send(&order("o-4", 1001, 2, 5, "101.01"));
    broker.wait_for(WAIT, "o-4's New", |f| {
        f.is("FROM_APP", "8") && f.get(11) == Some("o-4")
    });
    broker.send("35=q|11=mass-1|530=7|60=20261203-10:00:04.000");
    let report = broker.wait_for(WAIT, "OrderMassCancelReport", |f| f.is("FROM_APP", "r"));
    assert_eq!(
        (report.get(11), report.get(531), report.get(533)),
        (Some("mass-1"), Some("7"), Some("2"))
    );
    for id in ["o-3", "o-4"] {
        assert!(
            broker
                .reports_of(id)
                .iter()
                .any(|f| f.get(150) == Some("4")),
            "{id} cancelled"
        );
    }

    // A new order refused by the engine (off the tick: 3 decimals), and an unknown symbol.
    broker.send(&order("o-5", 1001, 1, 1, "100.505"));
    let bad = broker.wait_for(WAIT, "a Rejected", |f| {
        f.is("FROM_APP", "8") && f.get(11) == Some("o-5")
    });
    assert_eq!((bad.get(150), bad.get(39)), (Some("8"), Some("8")));
    broker.send("35=D|11=o-6|1=1001|55=NOPE|54=1|38=1|40=2|44=1|60=20261203-10:00:05.000");
    let bad = broker.wait_for(WAIT, "a Rejected", |f| {
        f.is("FROM_APP", "8") && f.get(11) == Some("o-6")
    });
    assert_eq!((bad.get(150), bad.get(103)), (Some("8"), Some("1")));

    // A gap: the initiator skips three numbers; the exchange asks for them, QuickFIX fills
    // the gap and resends the order, which is entered once.
    broker.command("skip 3");
    broker.send(&order("o-7", 1001, 1, 1, "90"));
    let ask = broker.wait_for(WAIT, "a ResendRequest", |f| f.is("FROM_ADMIN", "2"));
    assert_eq!(ask.get(16), Some("0"));
    broker.wait_for(WAIT, "a gap fill", |f| {
        f.is("TO_ADMIN", "4") && f.get(123) == Some("Y")
    });
    broker.wait_for(WAIT, "o-7's New", |f| {
        f.is("FROM_APP", "8") && f.get(11) == Some("o-7")
    });
    broker.drain(Duration::from_secs(1));
    assert_eq!(
        broker.reports_of("o-7").len(),
        1,
        "o-7 was entered once: {:?}",
        broker.reports_of("o-7")
    );

    // A message type the exchange does not take: a BusinessMessageReject.
    broker.send(
        "35=AE|571=x|487=0|856=0|570=N|55=AAPL|32=1|31=1|75=20261203|60=20261203-10:00:06.000",
    );
    let reject = broker.wait_for(WAIT, "BusinessMessageReject", |f| f.is("FROM_APP", "j"));
    assert_eq!((reject.get(372), reject.get(380)), (Some("AE"), Some("3")));

    // The drop copy received every execution report of the broker's orders that the engine
    // made (not the answers only the sender gets: rejects of its requests, statuses), once,
    // with the same ids and quantities; and it may send no order.
    drop_copy.send(&order("dc-1", 1001, 1, 1, "1"));
    let refused = drop_copy.wait_for(WAIT, "BusinessMessageReject", |f| f.is("FROM_APP", "j"));
    assert!(
        refused.get(58).unwrap_or("").contains("read only"),
        "{refused:?}"
    );
    broker.drain(Duration::from_millis(500));
    drop_copy.drain(Duration::from_millis(500));
    let engine_made = |f: &Fix| matches!(f.get(150), Some("0" | "F" | "4" | "5"));
    let shape = |f: &Fix| {
        (
            f.get(17).unwrap_or("").to_string(),
            f.get(150).unwrap_or("").to_string(),
            f.get(37).unwrap_or("").to_string(),
            f.get(14).unwrap_or("").to_string(),
            f.get(151).unwrap_or("").to_string(),
        )
    };
    let of = |initiator: &Initiator| {
        let mut reports: Vec<_> = initiator
            .seen
            .iter()
            .filter(|f| f.is("FROM_APP", "8") && engine_made(f))
            .map(shape)
            .collect();
        reports.sort();
        reports
    };
    let (sent_to_broker, copied) = (of(&broker), of(&drop_copy));
    assert!(sent_to_broker.len() >= 11, "{sent_to_broker:?}");
    assert_eq!(
        copied, sent_to_broker,
        "the drop copy's reports are the broker's"
    );
    let rejects = drop_copy.rejects_sent();
    drop_copy.stop();
    assert!(
        rejects.is_empty(),
        "QuickFIX refused messages of the exchange: {rejects:?}"
    );

    // Away and back: the initiator ends, a fill happens while it is away, and a new initiator
    // on the same store logs on with the next sequence numbers and receives the fill.
    broker.send(&order("o-8", 1001, 2, 3, "100.10"));
    let new = broker.wait_for(WAIT, "o-8's New", |f| {
        f.is("FROM_APP", "8") && f.get(11) == Some("o-8")
    });
    assert_eq!(new.get(150), Some("0"), "{new:?}");
    broker.command("logout");
    broker.wait_for(WAIT, "LOGOUT", |f| f.kind == "LOGOUT");
    let last_in = broker
        .seen
        .iter()
        .filter(|f| f.kind.starts_with("FROM_"))
        .filter_map(|f| f.get(34)?.parse::<u64>().ok())
        .max()
        .unwrap();
    let rejects = broker.rejects_sent();
    broker.stop();
    assert!(
        rejects.is_empty(),
        "QuickFIX refused messages of the exchange: {rejects:?}"
    );

    let mut client = cluster.client();
    let taker = support::limit(2001, exchange::domain::Side::Buy, 10_010, 3);
    let taker = match taker {
        ExchangeCommand::NewOrder(mut o) => {
            o.symbol = AAPL;
            ExchangeCommand::NewOrder(o)
        }
        other => other,
    };
    let outputs = submit(&mut client, taker, Duration::from_secs(10)).await;
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o.event, Event::Execution { .. })),
        "{outputs:?}"
    );

    let mut back = Initiator::start(&dir.join("broker1"), "BROKER1", key(1), &[port]);
    let logon = back.wait_for(WAIT, "the exchange's Logon", |f| f.is("FROM_ADMIN", "A"));
    assert_eq!(
        logon.get(34).and_then(|s| s.parse::<u64>().ok()),
        Some(last_in + 1),
        "the exchange's numbers carry on"
    );
    let fill = back.wait_for(WAIT, "the fill made while away", |f| {
        f.is("FROM_APP", "8") && f.get(11) == Some("o-8") && f.get(150) == Some("F")
    });
    assert_eq!(
        (fill.get(39), fill.get(32), fill.get(31)),
        (Some("2"), Some("3"), Some("100.10"))
    );
    back.drain(Duration::from_secs(1));
    assert_eq!(
        back.reports_of("o-8")
            .iter()
            .filter(|f| f.get(150) == Some("F"))
            .count(),
        1
    );
    let rejects = back.rejects_sent();
    back.stop();
    assert!(
        rejects.is_empty(),
        "QuickFIX refused messages of the exchange: {rejects:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs QuickFIX: scripts/quickfix.sh builds it; scripts/test.sh runs this"]
async fn a_quickfix_broker_trades_over_tls_and_checks_the_certificate() {
    let cluster = Cluster::start(
        "fix-quickfix-tls",
        1,
        BASE_PORT + 20,
        &["--fix-listen", "127.0.0.1:{fix}", "--fix-tls"],
    );
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    setup(&cluster).await;
    let port = cluster.fix_port(leader);
    let dir = cluster.dir.join("quickfix");

    // A CA that did not sign the node's certificate: QuickFIX refuses the server, no Logon.
    let stranger = dir.join("stranger-ca");
    exchange::net::tls::generate(&stranger, &[1], &[]).expect("another CA");
    let mut doubting = Initiator::start_tls(
        &dir.join("stranger"),
        "BROKER1",
        key(1),
        &[port],
        &stranger.join("ca.pem"),
    );
    doubting.drain(Duration::from_secs(3));
    assert!(
        !doubting.seen.iter().any(|f| f.kind == "LOGON"),
        "logged on through a certificate its CA did not sign: {:?}",
        doubting.seen
    );
    doubting.stop();
    // And it was the certificate: QuickFIX's event log says the TLS handshake failed.
    let events = std::fs::read_dir(dir.join("stranger/log"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".event."))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(
        events.contains("ssl handshake") || events.contains("SSL_connect failed"),
        "QuickFIX's events: {events}"
    );

    // The cluster's CA: logged on, an order rests and is filled by a sell of the same broker.
    let ca = cluster.certs_dir().join("ca.pem");
    let mut broker = Initiator::start_tls(&dir.join("broker1"), "BROKER1", key(1), &[port], &ca);
    broker.wait_for(WAIT, "LOGON over TLS", |f| f.kind == "LOGON");
    broker.send(&order("t-1", 1001, 1, 5, "99.00"));
    let new = broker.wait_for(WAIT, "the buy's New", |f| {
        f.is("FROM_APP", "8") && f.get(11) == Some("t-1")
    });
    assert_eq!((new.get(150), new.get(151)), (Some("0"), Some("5")));
    broker.send(&order("t-2", 1002, 2, 5, "99.00"));
    for cl_ord_id in ["t-1", "t-2"] {
        let fill = broker.wait_for(WAIT, "a fill", |f| {
            f.is("FROM_APP", "8") && f.get(11) == Some(cl_ord_id) && f.get(150) == Some("F")
        });
        assert_eq!(
            (fill.get(39), fill.get(32), fill.get(31), fill.get(14)),
            (Some("2"), Some("5"), Some("99.00"), Some("5")),
            "{cl_ord_id}: {fill:?}"
        );
    }
    broker.drain(Duration::from_millis(300));
    let rejects = broker.rejects_sent();
    assert!(
        rejects.is_empty(),
        "QuickFIX rejected messages of the exchange over TLS: {rejects:?}"
    );
    broker.stop();
}

/// A sell of broker 2's account 2001 on AAPL at 100.00, over the native protocol.
fn aapl_sell(client_order_id: u64, qty: i64) -> ExchangeCommand {
    match support::limit(2001, exchange::domain::Side::Sell, 10_000, qty) {
        ExchangeCommand::NewOrder(mut o) => {
            o.symbol = AAPL;
            o.client_order_id = exchange::domain::ClientOrderId(client_order_id);
            ExchangeCommand::NewOrder(o)
        }
        other => other,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs QuickFIX: scripts/quickfix.sh builds it; scripts/test.sh runs this"]
async fn a_quickfix_broker_and_drop_copy_ride_out_a_leader_kill() {
    let mut cluster = Cluster::start(
        "fix-quickfix-failover",
        3,
        BASE_PORT + 40,
        &["--fix-listen", "127.0.0.1:{fix}"],
    );
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    setup(&cluster).await;
    // Every node, as a broker configures them: the initiators find the leader themselves.
    let ports: Vec<u16> = (1..=3).map(|id| cluster.fix_port(id)).collect();
    let dir = cluster.dir.join("quickfix");
    let mut broker = Initiator::start(&dir.join("broker1"), "BROKER1", key(1), &ports);
    let mut drop_copy = Initiator::start(&dir.join("drop-copy"), DROP_COPY.0, DROP_COPY.1, &ports);
    broker.wait_for(Duration::from_secs(20), "LOGON", |f| f.kind == "LOGON");
    drop_copy.wait_for(Duration::from_secs(20), "LOGON", |f| f.kind == "LOGON");
    let mut seller = cluster.client_with_key(key(2));
    let sell = aapl_sell;

    // Buys of 2 at 100.00, each filled in two halves by broker 2's sells in the end.
    const ORDERS: usize = 30;
    let id = |i: usize| format!("k-{i}");
    for i in 1..=10 {
        broker.send(&order(&id(i), 1001, 1, 2, "100.00"));
    }
    for i in 1..=10 {
        broker.wait_for(WAIT, "a New", |f| {
            f.is("FROM_APP", "8") && f.get(11) == Some(id(i).as_str())
        });
    }
    submit(&mut seller, sell(1, 5), WAIT).await;
    // The stream goes on while the leader dies: some of these reach the old leader, some
    // are committed without an answer, some never arrive.
    for i in 11..=20 {
        broker.send(&order(&id(i), 1001, 1, 2, "100.00"));
    }
    cluster.kill(leader);
    let killed = Instant::now();
    let new_leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    assert_ne!(new_leader, leader);
    // Fills while the broker and its drop copy are away.
    submit(&mut seller, sell(2, 4), WAIT).await;
    let was_logged_on = |i: &Initiator| i.seen.iter().filter(|f| f.kind == "LOGON").count();
    let before = (was_logged_on(&broker), was_logged_on(&drop_copy));
    let back = |i: &mut Initiator, before: usize| {
        while was_logged_on(i) == before {
            i.wait_for(Duration::from_secs(30), "LOGON on the new leader", |f| {
                f.kind == "LOGON"
            });
        }
    };
    back(&mut broker, before.0);
    back(&mut drop_copy, before.1);
    eprintln!(
        "both QuickFIX sessions logged on to node {new_leader} {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    // The broker's application cannot tell what the old leader did with the orders sent as
    // it died: it sends every one of them again, PossResend. Each is entered once, whatever
    // happened to it: those already entered are answered with their status.
    broker.drain(Duration::from_secs(1));
    for i in 11..=20 {
        broker.send(&format!("97=Y|{}", order(&id(i), 1001, 1, 2, "100.00")));
    }
    for i in 11..=20 {
        broker.wait_for(WAIT, "the answer to a PossResend", |f| {
            f.is("FROM_APP", "8")
                && f.get(11) == Some(id(i).as_str())
                && f.get(150) == Some("I")
                && f.get(39) != Some("8")
        });
    }
    for i in 21..=ORDERS {
        broker.send(&order(&id(i), 1001, 1, 2, "100.00"));
    }
    for i in 1..=ORDERS {
        if broker.reports_of(&id(i)).is_empty() {
            broker.wait_for(WAIT, "an answer", |f| {
                f.is("FROM_APP", "8") && f.get(11) == Some(id(i).as_str())
            });
        }
    }
    // The rest of every order is filled: 2 each, 9 so far.
    submit(&mut seller, sell(3, 2 * ORDERS as i64 - 9), WAIT).await;
    let filled = |i: &Initiator, n: usize| {
        i.seen.iter().any(|f| {
            f.is("FROM_APP", "8") && f.get(11) == Some(id(n).as_str()) && f.get(39) == Some("2")
        })
    };
    for n in 1..=ORDERS {
        if !filled(&broker, n) {
            broker.wait_for(WAIT, "a last fill", |f| {
                f.is("FROM_APP", "8") && f.get(11) == Some(id(n).as_str()) && f.get(39) == Some("2")
            });
        }
        if !filled(&drop_copy, n) {
            drop_copy.wait_for(WAIT, "a last fill", |f| {
                f.is("FROM_APP", "8") && f.get(11) == Some(id(n).as_str()) && f.get(39) == Some("2")
            });
        }
    }
    broker.drain(Duration::from_secs(1));
    drop_copy.drain(Duration::from_secs(1));

    // Each initiator: every report the engine made, each under one ExecID; a copy of one
    // comes again only marked PossResend(97) or PossDupFlag(43), with the same content.
    let engine_made = |f: &Fix| {
        f.is("FROM_APP", "8")
            && f.get(11).is_some_and(|c| c.starts_with("k-"))
            && matches!(f.get(150), Some("0" | "F"))
    };
    let reports = |i: &Initiator| {
        let mut by_exec_id = std::collections::BTreeMap::<String, Fix>::new();
        for f in i.seen.iter().filter(|f| engine_made(f)) {
            let exec_id = f.get(17).expect("ExecID").to_string();
            match by_exec_id.get(&exec_id) {
                None => {
                    by_exec_id.insert(exec_id, f.clone());
                }
                Some(first) => {
                    assert!(
                        f.get(97) == Some("Y") || f.get(43) == Some("Y"),
                        "{}: ExecID {exec_id} came twice, the second time not marked as a \
                         possible resend: {f:?}",
                        i.name
                    );
                    let content = |f: &Fix| {
                        [11, 37, 150, 39, 14, 151, 32, 31].map(|t| f.get(t).map(str::to_string))
                    };
                    assert_eq!(content(first), content(f), "{}: {exec_id}", i.name);
                }
            }
        }
        by_exec_id
    };
    let (to_broker, copied) = (reports(&broker), reports(&drop_copy));
    for n in 1..=ORDERS {
        let of_order: Vec<&Fix> = to_broker
            .values()
            .filter(|f| f.get(11) == Some(id(n).as_str()))
            .collect();
        // Entered once: one New, one OrderID; nothing lost: its fills add up to its 2.
        assert_eq!(
            of_order.iter().filter(|f| f.get(150) == Some("0")).count(),
            1,
            "{}: {of_order:?}",
            id(n)
        );
        let order_ids: std::collections::BTreeSet<_> =
            of_order.iter().filter_map(|f| f.get(37)).collect();
        assert_eq!(order_ids.len(), 1, "{}: {of_order:?}", id(n));
        let filled: u64 = of_order
            .iter()
            .filter(|f| f.get(150) == Some("F"))
            .map(|f| f.get(32).unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(filled, 2, "{}: fills reported {of_order:?}", id(n));
    }
    assert_eq!(
        copied.keys().collect::<Vec<_>>(),
        to_broker.keys().collect::<Vec<_>>(),
        "the drop copy's reports are the broker's"
    );
    // The broker went on with its numbers: no logon asked for a reset, none was too low.
    for i in [&broker, &drop_copy] {
        assert!(
            !i.seen
                .iter()
                .any(|f| f.is("TO_ADMIN", "A") && f.get(141) == Some("Y")),
            "{}: a Logon reset the numbers",
            i.name
        );
        assert!(
            !i.seen
                .iter()
                .any(|f| f.is("FROM_ADMIN", "5") && f.get(58).unwrap_or("").contains("too low")),
            "{}: {:?}",
            i.name,
            i.seen
                .iter()
                .filter(|f| f.get(35) == Some("5"))
                .collect::<Vec<_>>()
        );
        let rejects = i.rejects_sent();
        assert!(
            rejects.is_empty(),
            "{}: QuickFIX refused messages of the exchange: {rejects:?}",
            i.name
        );
    }
    let resent = |i: &Initiator| {
        i.seen
            .iter()
            .filter(|f| f.is("FROM_APP", "8") && f.get(97) == Some("Y"))
            .count()
    };
    eprintln!(
        "reports: {} to the broker ({} of them PossResend), {} to the drop copy ({} PossResend)",
        to_broker.len(),
        resent(&broker),
        copied.len(),
        resent(&drop_copy)
    );
    broker.stop();
    drop_copy.stop();
}
