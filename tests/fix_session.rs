//! The FIX session rules against a real cluster, with a raw TCP client that can break them:
//! garbled frames ignored, a gap asked for and filled, a number too low ended with a Logout, a
//! follower naming the leader, hostile bytes that end nothing but their own connection. (The
//! same flows with a real FIX engine are in tests/fix_quickfix.rs.)

mod support;

use std::time::{Duration, Instant, SystemTime};

use exchange::domain::{
    AccountId, Command as ExchangeCommand, NewOrder, OrderType, Price, Qty, SelfTradePrevention,
    Side, SymbolSpec, TimeInForce,
};
use exchange::fix::codec::{tag, utc_timestamp, Builder, Frame, Framer, Header, Message};
use support::{setup_broker_accounts, submit, Cluster, BASE, BROKERS, QUOTE, SYMBOL};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const BASE_PORT: u16 = 29_650;
const WAIT: Duration = Duration::from_secs(10);

/// A FIX client that writes whatever it is told to.
struct Raw<S = TcpStream> {
    stream: S,
    framer: Framer,
    comp_id: String,
    next_out: u64,
    /// Messages read ahead and put back, read again first.
    stash: std::collections::VecDeque<Message>,
}

impl Raw {
    async fn connect(port: u16, comp_id: &str) -> Raw {
        Raw {
            stream: TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect"),
            framer: Framer::default(),
            comp_id: comp_id.to_string(),
            next_out: 1,
            stash: Default::default(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    fn frame(&self, message: &Builder, seq: u64, poss_dup: bool) -> Vec<u8> {
        message.finish(&Header {
            sender: &self.comp_id,
            target: "EXCHANGE",
            seq,
            sending_time: &utc_timestamp(SystemTime::now()),
            poss_dup,
            orig_sending_time: poss_dup.then_some("20261203-00:00:00.000"),
        })
    }

    /// Sends `message` with the next number.
    async fn send(&mut self, message: Builder) -> u64 {
        let seq = self.next_out;
        self.next_out += 1;
        let bytes = self.frame(&message, seq, false);
        self.stream.write_all(&bytes).await.unwrap();
        seq
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn log_on(&mut self, key: &str) -> Message {
        self.send(logon_message(key)).await;
        self.expect("A", WAIT).await
    }

    /// The next message, or `None` when the connection closes or `within` passes.
    async fn next(&mut self, within: Duration) -> Option<Message> {
        if let Some(message) = self.stash.pop_front() {
            return Some(message);
        }
        let deadline = tokio::time::Instant::now() + within;
        let mut buffer = [0u8; 4096];
        loop {
            while let Some(frame) = self.framer.next_frame() {
                if let Frame::Message(bytes) = frame {
                    return Some(Message::parse(bytes).expect("the exchange writes valid FIX"));
                }
            }
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buffer)).await {
                Ok(Ok(n)) if n > 0 => self.framer.extend(&buffer[..n]),
                _ => return None,
            }
        }
    }

    /// The next message of `msg_type`, skipping heartbeats.
    async fn expect(&mut self, msg_type: &str, within: Duration) -> Message {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = self
                .next(left)
                .await
                .unwrap_or_else(|| panic!("no {msg_type} within {within:?}"));
            if message.msg_type() == msg_type {
                return message;
            }
            if message.msg_type() == "1" {
                // A TestRequest (the exchange asks whether its reports arrived): answered as
                // a FIX engine answers it.
                let mut heartbeat = Builder::new("0");
                if let Some(id) = message.get(tag::TEST_REQ_ID) {
                    heartbeat.push(tag::TEST_REQ_ID, id);
                }
                self.send(heartbeat).await;
                continue;
            }
            assert_eq!(
                message.msg_type(),
                "0",
                "unexpected {:?}",
                String::from_utf8_lossy(message.as_bytes())
            );
        }
    }

    /// Whether the exchange closes the connection within `within`.
    async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let mut buffer = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buffer)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

fn key(broker: u32) -> &'static str {
    BROKERS.iter().find(|(id, _, _)| *id == broker).unwrap().1
}

/// A Logon(A) with the broker's key, a 30 s heartbeat.
fn logon_message(key: &str) -> Builder {
    Builder::new("A")
        .field(tag::ENCRYPT_METHOD, 0)
        .field(tag::HEART_BT_INT, 30)
        .field(tag::PASSWORD, key)
}

fn test_request(id: &str) -> Builder {
    Builder::new("1").field(tag::TEST_REQ_ID, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_rules_hold_and_hostile_bytes_end_only_their_connection() {
    let cluster = Cluster::start(
        "fix-session",
        3,
        BASE_PORT,
        &[
            "--fix-listen",
            "127.0.0.1:{fix}",
            "--metrics-listen",
            "127.0.0.1:{metrics}",
        ],
    );
    let leader = cluster.wait_for_leader(WAIT).await;
    let port = cluster.fix_port(leader);

    // A follower refuses the logon and names the leader's FIX address (once it has heard the
    // leader's status: the divergence watcher asks twice a second).
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let leader_fix = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + WAIT;
    loop {
        let mut raw = Raw::connect(cluster.fix_port(follower), "BROKER1").await;
        raw.send(logon_message(key(1))).await;
        let logout = raw.expect("5", WAIT).await;
        let text = logout.get(tag::TEXT).unwrap_or("").to_string();
        assert!(text.contains("not the leader"), "{text}");
        assert!(
            raw.closed_within(WAIT).await,
            "the follower closes the connection"
        );
        if text.contains(&leader_fix) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the follower never named {leader_fix}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Garbage before the logon is skipped; the logon after it is answered.
    let mut one = Raw::connect(port, "BROKER1").await;
    one.send_raw(
        b"\x00\xffjunk 8=FIX.4.2\x019=5\x0135=0\x0110=000\x01 8=FIX.4.4\x019=99999999\x01",
    )
    .await;
    let logon = one.log_on(key(1)).await;
    assert_eq!(logon.get_u64(tag::MSG_SEQ_NUM), Ok(Some(1)));
    let mut two = Raw::connect(port, "BROKER2").await;
    two.log_on(key(2)).await;

    // A TestRequest with a broken CheckSum is ignored (and does not use up its number); the
    // same number sent correctly is answered.
    let mut bad = one.frame(&test_request("bad"), one.next_out, false);
    let at = bad.len() - 2;
    bad[at] = if bad[at] == b'0' { b'1' } else { b'0' };
    one.send_raw(&bad).await;
    one.send(test_request("good")).await;
    let heartbeat = one.expect("0", WAIT).await;
    assert_eq!(heartbeat.get(tag::TEST_REQ_ID), Some("good"));

    // A gap: numbers 4 and 5 skipped. The exchange asks from 4; a gap fill to 6 lets the
    // message that waited (6) through.
    let skipped_from = one.next_out;
    one.next_out += 2;
    one.send(test_request("after-gap")).await;
    let ask = one.expect("2", WAIT).await;
    assert_eq!(ask.get_u64(tag::BEGIN_SEQ_NO), Ok(Some(skipped_from)));
    let gap_fill = Builder::new("4")
        .field(tag::GAP_FILL_FLAG, "Y")
        .field(tag::NEW_SEQ_NO, skipped_from + 2);
    let bytes = one.frame(&gap_fill, skipped_from, true);
    one.send_raw(&bytes).await;
    let heartbeat = one.expect("0", WAIT).await;
    assert_eq!(heartbeat.get(tag::TEST_REQ_ID), Some("after-gap"));

    // The exchange resends what it sent: its Logon and heartbeats as a gap fill.
    one.send(
        Builder::new("2")
            .field(tag::BEGIN_SEQ_NO, 1)
            .field(tag::END_SEQ_NO, 0),
    )
    .await;
    let fill = one.expect("4", WAIT).await;
    assert_eq!(fill.get(tag::GAP_FILL_FLAG), Some("Y"));
    assert_eq!(fill.get_u64(tag::MSG_SEQ_NUM), Ok(Some(1)));
    assert_eq!(fill.get_flag(tag::POSS_DUP_FLAG), Ok(true));

    // A number below the expected without PossDupFlag: a Logout that says so, and the close.
    let low = one.frame(&test_request("low"), 2, false);
    one.send_raw(&low).await;
    let logout = one.expect("5", WAIT).await;
    assert!(
        logout
            .get(tag::TEXT)
            .unwrap_or("")
            .contains("MsgSeqNum too low"),
        "{logout:?}"
    );
    assert!(one.closed_within(WAIT).await);

    // Hostile bytes on a third connection: an oversized BodyLength, then random bytes. The
    // connection is the only thing that suffers; the other session still answers.
    let mut hostile = Raw::connect(port, "BROKER1").await;
    hostile
        .send_raw(b"8=FIX.4.4\x019=4000000000\x0135=A\x01")
        .await;
    let noise: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    hostile.send_raw(&noise).await;
    two.send(test_request("still-here")).await;
    let heartbeat = two.expect("0", WAIT).await;
    assert_eq!(heartbeat.get(tag::TEST_REQ_ID), Some("still-here"));
    assert!(
        hostile.closed_within(Duration::from_secs(8)).await,
        "no logon in time closes it"
    );

    // BROKER1 logs on again on a new connection: its numbers carry on from where they were.
    let mut again = Raw::connect(port, "BROKER1").await;
    again.next_out = skipped_from + 4;
    let logon = again.log_on(key(1)).await;
    assert!(
        logon.get_u64(tag::MSG_SEQ_NUM).unwrap().unwrap() > 5,
        "{logon:?}"
    );
    // A second session of the same CompID at once is refused.
    let mut twin = Raw::connect(port, "BROKER1").await;
    twin.send(logon_message(key(1))).await;
    let logout = twin.expect("5", WAIT).await;
    assert!(
        logout
            .get(tag::TEXT)
            .unwrap_or("")
            .contains("logged on already"),
        "{logout:?}"
    );

    // What the node counted of all this.
    let counted = |name: &str| cluster.metric(leader, name).unwrap_or(0.0);
    assert!(
        counted("exchange_fix_garbled_total") >= 2.0,
        "the junk and the bad CheckSum"
    );
    assert!(counted("exchange_fix_resend_requests_total") >= 1.0);
    assert!(
        counted("exchange_fix_logons_refused_total") >= 1.0,
        "the twin"
    );
    assert_eq!(
        counted("exchange_fix_sessions"),
        2.0,
        "BROKER2 and BROKER1 again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fix_over_tls_logs_on_with_the_nodes_certificate() {
    let cluster = Cluster::start(
        "fix-tls",
        1,
        BASE_PORT + 50,
        &["--fix-listen", "127.0.0.1:{fix}", "--fix-tls"],
    );
    let leader = cluster.wait_for_leader(WAIT).await;
    let ca = exchange::client::tls::load_ca(cluster.certs_dir()).expect("the cluster's ca.pem");
    let tls = rustls::ClientConfig::builder_with_provider(exchange::client::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(exchange::client::tls::roots(&ca).unwrap())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    // The leader registers the brokers file's keys and CompIDs once it has taken office: until
    // then a logon is refused.
    let deadline = Instant::now() + WAIT;
    let mut raw = loop {
        let tcp = TcpStream::connect(("127.0.0.1", cluster.fix_port(leader)))
            .await
            .unwrap();
        let name =
            rustls::pki_types::ServerName::try_from(exchange::net::tls::node_name(leader)).unwrap();
        let stream = connector
            .connect(name, tcp)
            .await
            .expect("TLS with the node's certificate");
        let mut raw = Raw {
            stream,
            framer: Framer::default(),
            comp_id: "BROKER1".into(),
            next_out: 1,
            stash: Default::default(),
        };
        raw.send(logon_message(key(1))).await;
        let answer = raw.next(WAIT).await.expect("an answer to the Logon");
        if answer.msg_type() == "A" {
            break raw;
        }
        // Until the brokers file is applied, neither the CompID nor the key is known.
        let text = answer.get(tag::TEXT).unwrap_or("");
        assert!(
            (text.contains("is not a FIX session of this exchange")
                || text.contains("unknown API key"))
                && Instant::now() < deadline,
            "{:?}",
            String::from_utf8_lossy(answer.as_bytes())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    raw.send(test_request("over-tls")).await;
    let heartbeat = raw.expect("0", WAIT).await;
    assert_eq!(heartbeat.get(tag::TEST_REQ_ID), Some("over-tls"));

    // Plain FIX on the TLS port is not FIX: the handshake fails and nothing is answered.
    let mut plain = Raw::connect(cluster.fix_port(leader), "BROKER2").await;
    plain.send(logon_message(key(2))).await;
    assert!(plain.next(Duration::from_secs(2)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compid_set_by_admin_command_is_replicated_and_ends_the_old_session() {
    let mut cluster = Cluster::start(
        "fix-compid",
        3,
        BASE_PORT + 100,
        &["--fix-listen", "127.0.0.1:{fix}"],
    );
    let leader = cluster.wait_for_leader(WAIT).await;
    let port = cluster.fix_port(leader);
    // The brokers file's CompID, seeded once the leader has taken office.
    let mut old = logged_on(port, "BROKER1", key(1), 1).await;

    // The operator renames broker 1's sessions (the CLI, as an operator would).
    let brokers_file = cluster.dir.join("brokers.toml");
    let brokers_file = brokers_file.to_str().expect("a UTF-8 path");
    let set = |broker: &'static str, comp_id: &'static str| {
        [
            "admin",
            "set-fix-comp-id",
            "--broker",
            broker,
            "--comp-id",
            comp_id,
            "--admin",
            "--brokers-file",
            brokers_file,
        ]
    };
    let (code, out) = cluster.cli(&set("1", "FIRM-ONE"));
    assert_eq!(code, Some(0), "set-fix-comp-id: {out}");
    // Another broker may not take it; nor may anyone be EXCHANGE (refused before sending).
    let (code, out) = cluster.cli(&set("2", "FIRM-ONE"));
    assert_eq!(code, Some(1), "broker 2 given broker 1's CompID: {out}");
    let (code, out) = cluster.cli(&set("2", "EXCHANGE"));
    assert_eq!(code, Some(2), "the exchange's own CompID: {out}");

    // The session under the old CompID ends at its next message.
    old.send(test_request("renamed?")).await;
    let logout = old.expect("5", WAIT).await;
    assert!(
        logout
            .get(tag::TEXT)
            .unwrap_or("")
            .contains("CompID was changed"),
        "{logout:?}"
    );
    assert!(old.closed_within(WAIT).await);

    // The old CompID is nobody's now; the new one logs on, also on a new leader after the old
    // one is killed (the CompID is replicated state, not the leader's memory).
    let mut stale = Raw::connect(port, "BROKER1").await;
    stale.send(logon_message(key(1))).await;
    let logout = stale.expect("5", WAIT).await;
    assert!(
        logout
            .get(tag::TEXT)
            .unwrap_or("")
            .contains("is not a FIX session of this exchange"),
        "{logout:?}"
    );
    // Broker 2 takes the CompID broker 1 gave up: a session of its own, nothing of broker 1's
    // (broker 1's numbers there were past 1 both ways: this client starts at 1 and is answered
    // from 1).
    let (code, out) = cluster.cli(&set("2", "BROKER1"));
    assert_eq!(code, Some(0), "broker 2 takes BROKER1: {out}");
    let mut taken = Raw::connect(port, "BROKER1").await;
    let logon = taken.log_on(key(2)).await;
    assert_eq!(logon.get_u64(tag::MSG_SEQ_NUM), Ok(Some(1)), "{logon:?}");
    drop(taken);
    let mut renamed = Raw::connect(port, "FIRM-ONE").await;
    renamed.log_on(key(1)).await;
    let next_out = renamed.next_out;
    drop(renamed);
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    assert_ne!(new_leader, leader);
    // The broker goes on from its own next number, as a FIX engine would: the new leader
    // expects it, or a lower one if the session's last mark had not committed before the kill
    // (a gap that the exchange then asks to be resent), never a higher one.
    logged_on(cluster.fix_port(new_leader), "FIRM-ONE", key(1), next_out).await;
}

/// Logs on as `comp_id` with `key`, the Logon numbered `next_out`, until the node answers with
/// a Logon (the brokers file is applied by a new leader first).
async fn logged_on(port: u16, comp_id: &str, key: &str, next_out: u64) -> Raw {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut raw = Raw::connect(port, comp_id).await;
        raw.next_out = next_out;
        raw.send(logon_message(key)).await;
        match raw.next(WAIT).await {
            Some(answer) if answer.msg_type() == "A" => return raw,
            answer => assert!(
                Instant::now() < deadline,
                "{comp_id} never logged on: {answer:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_reports_fills_of_orders_entered_before_it_led() {
    let mut cluster = Cluster::start(
        "fix-new-leader",
        3,
        BASE_PORT + 150,
        &["--fix-listen", "127.0.0.1:{fix}"],
    );
    let leader = cluster.wait_for_leader(WAIT).await;
    // A symbol (no decimals) and funds for broker 1's accounts 1001 and 1002.
    let sym1 = SymbolSpec {
        symbol: SYMBOL,
        base: BASE,
        quote: QUOTE,
        tick_size: Price(1),
        lot_size: Qty(1),
        name: exchange::domain::Name::new("SYM1").unwrap(),
        price_decimals: 0,
    };
    setup_broker_accounts(&mut cluster.client(), sym1, &[1001, 1002]).await;

    // A resting buy over FIX on the first leader, partly filled there.
    let mut fix = logged_on(cluster.fix_port(leader), "BROKER1", key(1), 1).await;
    let buy_at = |cl_ord_id: &str, price: i64, poss_resend: bool| {
        let mut b = Builder::new("D")
            .field(tag::CL_ORD_ID, cl_ord_id)
            .field(tag::ACCOUNT, 1001)
            .field(tag::SYMBOL, "SYM1")
            .field(tag::SIDE, 1)
            .field(tag::ORDER_QTY, 10)
            .field(tag::ORD_TYPE, 2)
            .field(tag::PRICE, price)
            .field(tag::TIME_IN_FORCE, 1)
            .field(tag::TRANSACT_TIME, "20261203-10:00:00.000");
        if poss_resend {
            b.push(tag::POSS_RESEND, "Y");
        }
        b
    };
    let buy = |cl_ord_id: &str, poss_resend: bool| buy_at(cl_ord_id, 100, poss_resend);
    fix.send(buy("77", false)).await;
    let new = fix.expect("8", WAIT).await;
    assert_eq!(
        (new.get(tag::CL_ORD_ID), new.get(tag::EXEC_TYPE)),
        (Some("77"), Some("0"))
    );
    let order_id = new.get(tag::ORDER_ID).unwrap().to_string();
    // The exchange asks whether its reports arrived; the answer confirms the New one, and the
    // session's replicated mark says so.
    let asked = fix.expect("1", WAIT).await;
    let id = asked.get(tag::TEST_REQ_ID).unwrap().to_string();
    assert!(id.starts_with("RECEIPT-"), "{asked:?}");
    fix.send(Builder::new("0").field(tag::TEST_REQ_ID, id))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut broker = cluster.client_with_key(key(1));
    let sell = |client_order_id, qty| {
        ExchangeCommand::NewOrder(NewOrder {
            account: AccountId(1002),
            symbol: SYMBOL,
            client_order_id: exchange::domain::ClientOrderId(client_order_id),
            side: Side::Sell,
            order_type: OrderType::Limit,
            time_in_force: TimeInForce::Ioc,
            price: Price(100),
            qty: Qty(qty),
            self_trade_prevention: SelfTradePrevention::None,
        })
    };
    submit(&mut broker, sell(1, 3), WAIT).await;
    let fill = loop {
        let m = fix.expect("8", WAIT).await;
        if m.get(tag::CL_ORD_ID) == Some("77") && m.get(tag::EXEC_TYPE) == Some("F") {
            break m;
        }
    };
    assert_eq!(fill.get(tag::CUM_QTY), Some("3"));
    let last_received = fill.get_u64(tag::MSG_SEQ_NUM).unwrap().unwrap();
    // The fill's receipt is never confirmed: the connection ends before the question comes.
    let next_out = fix.next_out;
    drop(fix);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The leader dies. BROKER1 logs on to the new one with its numbers: the new leader goes
    // on from the session's mark, past every number the old one could have used.
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    assert_ne!(new_leader, leader);
    let deadline = Instant::now() + WAIT;
    let (mut fix, logon) = loop {
        let mut raw = Raw::connect(cluster.fix_port(new_leader), "BROKER1").await;
        raw.next_out = next_out + 2;
        raw.send(logon_message(key(1))).await;
        match raw.next(WAIT).await {
            Some(answer) if answer.msg_type() == "A" => break (raw, answer),
            answer => assert!(
                Instant::now() < deadline,
                "BROKER1 never logged on to the new leader: {answer:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let logon_seq = logon.get_u64(tag::MSG_SEQ_NUM).unwrap().unwrap();
    assert!(
        logon_seq > last_received,
        "the new leader's numbers must go on past {last_received}: {logon:?}"
    );
    // The Logon came two numbers ahead, as if two messages went into the dead connection:
    // the new leader asks for them. They are a replace of 77 (which the old leader might have
    // run) and a gap fill: the replace is not run again, since nobody can tell whether it was.
    let mut ahead = Vec::new();
    let asked = loop {
        let m = fix.next(WAIT).await.expect("a ResendRequest");
        if m.msg_type() == "2" {
            break m;
        }
        ahead.push(m);
    };
    assert_eq!(
        asked.get_u64(tag::BEGIN_SEQ_NO),
        Ok(Some(next_out)),
        "{asked:?}"
    );
    let replace = Builder::new("G")
        .field(tag::CL_ORD_ID, "78")
        .field(tag::ORIG_CL_ORD_ID, "77")
        .field(tag::ACCOUNT, 1001)
        .field(tag::SYMBOL, "SYM1")
        .field(tag::SIDE, 1)
        .field(tag::ORDER_QTY, 50)
        .field(tag::ORD_TYPE, 2)
        .field(tag::PRICE, 100)
        .field(tag::TRANSACT_TIME, "20261203-10:00:00.000");
    let mut bytes = fix.frame(&replace, next_out, true);
    bytes.extend(
        fix.frame(
            &Builder::new("4")
                .field(tag::GAP_FILL_FLAG, "Y")
                .field(tag::NEW_SEQ_NO, next_out + 2),
            next_out + 1,
            true,
        ),
    );
    fix.send_raw(&bytes).await;
    let answer = loop {
        let m = fix.next(WAIT).await.expect("the replace's answer");
        if m.msg_type() == "9" {
            break m;
        }
        ahead.push(m);
    };
    assert_eq!(
        (
            answer.get(tag::CL_ORD_ID),
            answer.get(tag::CXL_REJ_RESPONSE_TO)
        ),
        (Some("78"), Some("2")),
        "{answer:?}"
    );
    assert!(
        answer
            .get(tag::TEXT)
            .unwrap_or("")
            .contains("change of leader"),
        "{answer:?}"
    );
    fix.stash.extend(ahead);
    // What the broker did not confirm comes again, marked PossResend: the fill (after the
    // reports of the account-1002 sell that made it, also broker 1's), not the New.
    let again = loop {
        let m = fix.expect("8", WAIT).await;
        assert_eq!(m.get(tag::POSS_RESEND), Some("Y"), "{m:?}");
        assert_ne!(
            (m.get(tag::CL_ORD_ID), m.get(tag::EXEC_TYPE)),
            (Some("77"), Some("0")),
            "a report the broker confirmed was sent again"
        );
        if m.get(tag::CL_ORD_ID) == Some("77") {
            break m;
        }
    };
    assert_eq!(
        (
            again.get(tag::CL_ORD_ID),
            again.get(tag::EXEC_TYPE),
            again.get(tag::CUM_QTY),
            again.get(tag::POSS_RESEND),
            again.get(tag::EXEC_ID),
        ),
        (
            Some("77"),
            Some("F"),
            Some("3"),
            Some("Y"),
            fill.get(tag::EXEC_ID)
        ),
        "{again:?}"
    );

    // A resend of the order with PossResend: not entered again, its status instead (after
    // the rest of what is sent again).
    fix.send(buy("77", true)).await;
    let status = loop {
        let m = fix.expect("8", WAIT).await;
        if m.get(tag::CL_ORD_ID) == Some("77") {
            break m;
        }
        assert_eq!(m.get(tag::POSS_RESEND), Some("Y"), "{m:?}");
    };
    assert_eq!(
        (
            status.get(tag::CL_ORD_ID),
            status.get(tag::EXEC_TYPE),
            status.get(tag::ORD_STATUS),
            status.get(tag::ORDER_ID),
            status.get(tag::CUM_QTY),
            status.get(tag::LEAVES_QTY),
        ),
        (
            Some("77"),
            Some("I"),
            Some("1"),
            Some(order_id.as_str()),
            Some("3"),
            Some("7")
        ),
        "{status:?}"
    );

    // Another fill of it, made by the new leader: reported, with what was filled before.
    submit(&mut broker, sell(2, 4), WAIT).await;
    let fill = loop {
        let m = fix.expect("8", WAIT).await;
        if m.get(tag::CL_ORD_ID) == Some("77") && m.get(tag::EXEC_TYPE) == Some("F") {
            break m;
        }
    };
    assert_eq!(
        (
            fill.get(tag::ORDER_ID),
            fill.get(tag::LAST_QTY),
            fill.get(tag::CUM_QTY),
            fill.get(tag::LEAVES_QTY),
            fill.get(tag::AVG_PX),
            fill.get(tag::ORD_STATUS),
        ),
        (
            Some(order_id.as_str()),
            Some("4"),
            Some("7"),
            Some("3"),
            Some("100.00"),
            Some("1")
        ),
        "{fill:?}"
    );

    // Two orders and a Logout in one write: the orders are entered before the session ends.
    let mut bytes = Vec::new();
    for (cl_ord_id, price) in [("91", 90), ("92", 91)] {
        bytes.extend(fix.frame(&buy_at(cl_ord_id, price, false), fix.next_out, false));
        fix.next_out += 1;
    }
    bytes.extend(fix.frame(&Builder::new("5"), fix.next_out, false));
    fix.send_raw(&bytes).await;
    let deadline = Instant::now() + WAIT;
    while fix.next(WAIT).await.is_some_and(|m| m.msg_type() != "5") {
        assert!(Instant::now() < deadline, "no Logout answered");
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let open: Vec<u64> = broker
            .open_orders(1001)
            .await
            .map(|orders| orders.iter().map(|o| o.client_order_id).collect())
            .unwrap_or_default();
        if open.contains(&91) && open.contains(&92) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orders sent before a Logout were lost: open {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
