//! Hostile input against a live node: random and mutated frames, oversize frames, requests
//! before logon, floods over the session limits. Each bad session is answered and closed; the
//! node carries on, and a well-behaved session beside them is served throughout.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use exchange::domain::{
    AccountId, ClientOrderId, Command, NewOrder, OrderType, Price, Qty, SelfTradePrevention, Side,
    TimeInForce,
};
use exchange::gateway::protocol::{Reply, Request, PROTOCOL_VERSION};
use rand::{Rng, SeedableRng};
use support::*;

struct Raw {
    connection: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

async fn raw(cluster: &Cluster, addr: SocketAddr) -> Raw {
    let ca = exchange::net::tls::load_ca(&cluster.dir.join("certs")).expect("CA");
    let config = exchange::net::tls::broker_client(
        &ca,
        exchange::net::tls::transport(Duration::from_secs(5)),
    )
    .expect("client config");
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("endpoint");
    endpoint.set_default_client_config(config);
    let connection = endpoint
        .connect(addr, "localhost")
        .expect("connect")
        .await
        .expect("handshake");
    let (send, recv) = connection.open_bi().await.expect("stream");
    Raw {
        connection,
        send,
        recv,
    }
}

impl Raw {
    async fn send_bytes(&mut self, length: u32, body: &[u8]) {
        let _ = self.send.write_all(&length.to_le_bytes()).await;
        let _ = self.send.write_all(body).await;
    }

    async fn request(&mut self, request: &Request) -> Option<Reply> {
        let bytes = postcard::to_allocvec(request).expect("encode");
        self.send_bytes(bytes.len() as u32, &bytes).await;
        self.reply().await
    }

    async fn reply(&mut self) -> Option<Reply> {
        let mut len = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), self.recv.read_exact(&mut len))
            .await
            .ok()?
            .ok()?;
        let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
        self.recv.read_exact(&mut body).await.ok()?;
        postcard::from_bytes(&body).ok()
    }

    /// Whether the node closes the session within a few seconds.
    async fn closed_by_node(&self) -> bool {
        tokio::time::timeout(Duration::from_secs(5), self.connection.closed())
            .await
            .is_ok()
    }
}

fn order(client_order_id: u64) -> Command {
    Command::NewOrder(NewOrder {
        account: AccountId(BROKERS[0].2[0]),
        symbol: SYMBOL,
        client_order_id: ClientOrderId(client_order_id),
        side: Side::Buy,
        order_type: OrderType::Limit,
        time_in_force: TimeInForce::Gtc,
        price: Price(1),
        qty: Qty(1),
        self_trade_prevention: SelfTradePrevention::None,
    })
}

/// One order on the well-behaved session, which must be served.
async fn good_order(good: &mut Raw, next_id: &mut u64) {
    *next_id += 1;
    match good.request(&Request::Submit(order(*next_id))).await {
        Some(Reply::Outputs(outputs)) => assert!(matches!(
            outputs[0].event,
            exchange::domain::Event::Accepted { .. }
        )),
        other => panic!("the good session was not served: {other:?}"),
    }
}

fn logon(key: &str) -> Request {
    Request::Logon {
        protocol_version: PROTOCOL_VERSION,
        api_key: key.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_their_session_and_nothing_else() {
    let cluster = Cluster::start(
        "hostile",
        3,
        26_400,
        &["--session-rate", "2000", "--session-in-flight", "100"],
    );
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let addr = cluster.broker(leader);
    let mut admin = cluster.client();
    setup_market(&mut admin, 1).await;
    let deposit = Command::Admin(exchange::domain::AdminCommand::Deposit {
        account: AccountId(BROKERS[0].2[0]),
        asset: QUOTE,
        amount: exchange::domain::Amount(1_000_000_000),
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !submit(&mut admin, deposit, Duration::from_secs(5))
        .await
        .iter()
        .any(|o| matches!(o.event, exchange::domain::Event::BalanceChanged { .. }))
    {
        assert!(
            Instant::now() < deadline,
            "the broker's account never opened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A well-behaved broker session, kept open beside everything that follows.
    let good_since = Instant::now();
    let mut good = raw(&cluster, addr).await;
    assert!(matches!(
        good.request(&logon(BROKERS[0].1)).await,
        Some(Reply::LoggedOn { broker: 1 })
    ));
    let mut next_id = 1u64;
    good_order(&mut good, &mut next_id).await;

    // Random bytes and mutated valid frames, each on its own session, logged on or not.
    let valid: Vec<Vec<u8>> = [logon(BROKERS[0].1), Request::Submit(order(1_000_000))]
        .iter()
        .map(|r| postcard::to_allocvec(r).unwrap())
        .collect();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0x5eed);
    let mut closed = 0;
    let mut answered = 0;
    const CASES: usize = 120;
    for case in 0..CASES {
        let mut session = raw(&cluster, addr).await;
        if case % 2 == 1 {
            assert!(matches!(
                session.request(&logon(BROKERS[0].1)).await,
                Some(Reply::LoggedOn { .. })
            ));
        }
        let body: Vec<u8> = if case % 3 == 0 {
            (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect()
        } else {
            let mut frame = valid[case % 2].clone();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..frame.len());
                frame[at] ^= rng.gen_range(1..=255u8);
            }
            frame.truncate(rng.gen_range(1..=frame.len()));
            frame
        };
        session.send_bytes(body.len() as u32, &body).await;
        // Some mutations still decode (a different id, a different key, another request):
        // they get an ordinary answer (maybe a refusal), and the session may go on.
        let decodes = postcard::from_bytes::<Request>(&body).is_ok();
        let reply = session.reply().await;
        if decodes {
            assert!(
                reply.is_some(),
                "case {case}: a request that decodes got no answer"
            );
            answered += 1;
        } else {
            // Refused (or cut off before the refusal arrived), and closed: every one of them.
            assert!(
                matches!(reply, Some(Reply::Error(_)) | None),
                "case {case}: a frame that does not decode was answered {reply:?}"
            );
            assert!(
                session.closed_by_node().await,
                "case {case}: a bad frame left its session open"
            );
            closed += 1;
        }
        if case % 20 == 0 {
            good_order(&mut good, &mut next_id).await;
        }
    }
    println!("{CASES} hostile frames: {closed} sessions closed, {answered} answered normally");
    assert_eq!(closed + answered, CASES);
    assert!(
        closed >= CASES / 3,
        "the cases barely exercised bad frames: {closed} of {CASES}"
    );

    // An oversize frame is refused before its body is read, and closes the session.
    let mut session = raw(&cluster, addr).await;
    session.send_bytes(u32::MAX, b"x").await;
    assert!(matches!(session.reply().await, Some(Reply::Error(e)) if e.contains("exceeds")));
    assert!(session.closed_by_node().await);

    // A command before logon, a second logon, a wrong protocol version.
    let mut session = raw(&cluster, addr).await;
    assert!(
        matches!(session.request(&Request::Submit(order(5))).await, Some(Reply::Error(e)) if e.contains("log on first"))
    );
    assert!(session.closed_by_node().await);
    let mut session = raw(&cluster, addr).await;
    session.request(&logon(BROKERS[0].1)).await;
    assert!(matches!(
        session.request(&logon(BROKERS[0].1)).await,
        Some(Reply::Error(_))
    ));
    assert!(session.closed_by_node().await);
    let mut session = raw(&cluster, addr).await;
    let wrong_version = Request::Logon {
        protocol_version: PROTOCOL_VERSION + 1,
        api_key: BROKERS[0].1.into(),
    };
    assert!(
        matches!(session.request(&wrong_version).await, Some(Reply::Error(e)) if e.contains("protocol version"))
    );
    assert!(session.closed_by_node().await);

    // Floods: a request larger than the in-flight bound (100) can never pass and is refused
    // outright; over the rate (2,000/s) a session is throttled. Neither is served, and the
    // session stays open.
    let mut flood = raw(&cluster, addr).await;
    flood.request(&logon(BROKERS[1].1)).await;
    let batch = |from: u64, n: u64| Request::SubmitBatch((from..from + n).map(order).collect());
    assert!(matches!(
        flood.request(&batch(1, 101)).await,
        Some(Reply::Error(e)) if e.contains("in-flight limit")
    ));
    let mut throttled = 0;
    for round in 0..40 {
        match flood.request(&batch(1_000 + round * 100, 100)).await {
            Some(Reply::Throttled { .. }) => throttled += 1,
            Some(Reply::BatchOutputs(_)) => {}
            other => panic!("flood: {other:?}"),
        }
    }
    assert!(
        throttled > 0,
        "4,000 commands at once were never throttled at 2,000/s"
    );
    good_order(&mut good, &mut next_id).await;

    // The logon deadline closes only sessions that never logged on: the good one, on its
    // one stream, outlives it.
    let outlived = good_since + exchange::gateway::server::LOGON_TIMEOUT + Duration::from_secs(1);
    tokio::time::sleep_until(outlived.into()).await;
    good_order(&mut good, &mut next_id).await;

    let index = cluster.assert_converged(Duration::from_secs(10)).await;
    cluster.assert_no_divergence(index).await;
}
