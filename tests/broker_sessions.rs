//! Broker sessions on a real cluster: logon, ownership of accounts, the admin credential, and
//! exactly-once new orders, also across the leader's crash.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use exchange::domain::{
    AccountId, AdminCommand, Amount, ClientOrderId, Command, Event, MassCancel, NewOrder,
    OrderType, Output, Price, Qty, RejectReason, RiskLimits, SelfTradePrevention, Side,
    TimeInForce,
};
use exchange::gateway::client::{Client, ClientError};
use support::*;

/// Funds the brokers' accounts (which the leader opens from the brokers file, so the first
/// deposits may have to wait for it) and lifts their risk limits.
async fn fund_broker_accounts(admin: &mut Client) {
    for (_, _, accounts) in BROKERS {
        for account in accounts {
            let deadline = Instant::now() + Duration::from_secs(10);
            for asset in [BASE, QUOTE] {
                loop {
                    let deposit = Command::Admin(AdminCommand::Deposit {
                        account: AccountId(account),
                        asset,
                        amount: Amount(1_000_000_000),
                    });
                    let outputs = submit(admin, deposit, Duration::from_secs(10)).await;
                    match outputs[..] {
                        [Output {
                            event: Event::BalanceChanged { .. },
                            ..
                        }] => break,
                        _ => {
                            assert!(
                                Instant::now() < deadline,
                                "account {account} never opened: {outputs:?}"
                            );
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
            let limits = Command::Admin(AdminCommand::SetRiskLimits {
                account: AccountId(account),
                limits: RiskLimits {
                    max_order_qty: Qty(1_000_000),
                    max_order_notional: Amount(i64::MAX),
                    max_open_orders: 1_000_000,
                },
            });
            submit(admin, limits, Duration::from_secs(10)).await;
        }
    }
}

fn buy(account: u64, client_order_id: u64, price: i64) -> Command {
    order(Side::Buy, account, client_order_id, price)
}

fn order(side: Side, account: u64, client_order_id: u64, price: i64) -> Command {
    Command::NewOrder(NewOrder {
        account: AccountId(account),
        symbol: SYMBOL,
        client_order_id: ClientOrderId(client_order_id),
        side,
        order_type: OrderType::Limit,
        time_in_force: TimeInForce::Gtc,
        price: Price(price),
        qty: Qty(1),
        self_trade_prevention: SelfTradePrevention::None,
    })
}

fn rejected(outputs: &[Output]) -> Option<RejectReason> {
    outputs.iter().find_map(|o| match o.event {
        Event::Rejected { reason, .. } => Some(reason),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_authenticated_and_act_only_for_their_own_accounts() {
    let cluster = Cluster::start(
        "sessions",
        3,
        26_000,
        &["--metrics-listen", "127.0.0.1:{metrics}"],
    );
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let mut admin = cluster.client();
    setup_market(&mut admin, 1).await;
    fund_broker_accounts(&mut admin).await;
    let (broker_1, key_1, accounts_1) = BROKERS[0];
    let (_, _, accounts_2) = BROKERS[1];

    // A wrong key, a key too short, and no logon at all are refused with a reason.
    for key in ["a-wrong-key-0123456789", "short"] {
        match cluster
            .client_with_key(key)
            .submit(buy(accounts_1[0], 1, 10))
            .await
        {
            Err(ClientError::Rejected(why)) => assert!(why.contains("logon refused"), "{why}"),
            other => panic!("key {key:?} was not refused: {other:?}"),
        }
    }
    let ca = exchange::net::tls::load_ca(&cluster.dir.join("certs")).expect("CA");
    let mut anonymous = Client::new(cluster.brokers(), &ca).expect("client");
    match anonymous.submit(buy(accounts_1[0], 1, 10)).await {
        Err(ClientError::Rejected(why)) => assert!(why.contains("log on first"), "{why}"),
        other => panic!("a session without logon was served: {other:?}"),
    }

    let mut broker = cluster.client_with_key(key_1);
    let outputs = broker
        .submit(buy(accounts_1[0], 1, 10))
        .await
        .expect("own account");
    let resting = accepted(&outputs);
    assert_eq!(broker.broker(), Some(broker_1));
    let status = broker.order_status(resting.0).await.expect("status");
    assert_eq!(
        status.map(|s| (s.account, s.leaves_qty)),
        Some((accounts_1[0], 1))
    );
    // Another broker cannot see it.
    let other = cluster
        .client_with_key(BROKERS[1].1)
        .order_status(resting.0)
        .await;
    assert_eq!(other.expect("status"), None);

    // Another broker's account, an operator's account, an admin command: all refused.
    let outputs = broker
        .submit(buy(accounts_2[0], 2, 10))
        .await
        .expect("reply");
    assert_eq!(rejected(&outputs), Some(RejectReason::NotPermitted));
    let outputs = broker.submit(buy(1, 3, 10)).await.expect("reply");
    assert_eq!(rejected(&outputs), Some(RejectReason::NotPermitted));
    let cancel_all = Command::MassCancel(MassCancel {
        account: AccountId(accounts_2[0]),
        symbol: None,
    });
    let outputs = broker.submit(cancel_all).await.expect("reply");
    assert!(
        matches!(
            outputs[..],
            [Output {
                event: Event::MassCancelRejected {
                    reason: RejectReason::NotPermitted,
                    ..
                },
                ..
            }]
        ),
        "{outputs:?}"
    );
    let deposit = Command::Admin(AdminCommand::Deposit {
        account: AccountId(accounts_1[0]),
        asset: QUOTE,
        amount: Amount(1),
    });
    match broker.submit(deposit).await {
        Err(ClientError::Rejected(why)) => assert!(why.contains("not permitted"), "{why}"),
        other => panic!("a broker administered: {other:?}"),
    }

    // A resend of the same client order id is executed once and answered with the original.
    let first = broker
        .submit(buy(accounts_1[0], 50, 11))
        .await
        .expect("order");
    let original = accepted(&first);
    let again = broker
        .submit(buy(accounts_1[0], 50, 11))
        .await
        .expect("resend");
    assert!(
        matches!(
            again[..],
            [Output { event: Event::DuplicateOrder { order_id, rejected: None, .. }, .. }]
                if order_id == original
        ),
        "{again:?}"
    );
    let outputs = broker
        .submit(buy(accounts_1[0], 0, 11))
        .await
        .expect("reply");
    assert_eq!(rejected(&outputs), Some(RejectReason::InvalidClientOrderId));

    // A trade between two brokers: each answer shows only the sender's own side; the maker
    // learns of its fill from its report feed.
    let mut feed = cluster.client_with_key(key_1).into_report_feed(0);
    let (_, key_2, _) = BROKERS[1];
    let mut seller = cluster.client_with_key(key_2);
    let outputs = seller
        .submit(order(Side::Sell, accounts_2[0], 1, 11))
        .await
        .expect("sell");
    assert!(
        outputs
            .iter()
            .all(|o| o.event.account() == Some(AccountId(accounts_2[0]))),
        "the seller saw another broker's events: {outputs:?}"
    );
    assert!(outputs
        .iter()
        .any(|o| matches!(o.event, Event::Execution { .. })));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut maker_fill = None;
    while maker_fill.is_none() {
        assert!(
            Instant::now() < deadline,
            "the maker's fill never reached its feed"
        );
        let batch = feed.next(Duration::from_secs(1)).await.expect("feed");
        assert!(batch
            .iter()
            .all(|o| o.event.account().is_some_and(|a| accounts_1.contains(&a.0))));
        maker_fill = batch
            .into_iter()
            .find(|o| matches!(o.event, Event::Execution { order_id, .. } if order_id == original));
    }

    // The operator revokes the key: new sessions with it are refused.
    let revoke = Command::Admin(AdminCommand::SetBrokerKey {
        broker: exchange::domain::BrokerId(broker_1),
        key_digest: exchange::domain::KeyDigest([0; 32]),
    });
    submit(&mut admin, revoke, Duration::from_secs(5)).await;
    match cluster
        .client_with_key(key_1)
        .submit(buy(accounts_1[0], 60, 10))
        .await
    {
        // Refused at logon; or, for a session that logged on as the revocation was being
        // applied, ended by the key change at its first request (seen once on a loaded host).
        Err(ClientError::Rejected(why)) => assert!(
            why.contains("logon refused") || why.contains("key was changed or revoked"),
            "{why}"
        ),
        other => panic!("a revoked key was accepted: {other:?}"),
    }
    let index = cluster.assert_converged(Duration::from_secs(10)).await;
    cluster.assert_no_divergence(index).await;

    // The leader's metrics saw all of it.
    let page = cluster.scrape_metrics(leader);
    let value = |line_start: &str| value_of(&page, line_start);
    assert_eq!(value("exchange_role{role=\"leader\"}"), 1);
    assert!(value("exchange_rejects_total{reason=\"NotPermitted\"") >= 2);
    assert!(value("exchange_rejects_total{reason=\"InvalidClientOrderId\"") >= 1);
    assert!(value("exchange_commands_applied_total") >= 10);
    assert!(value("exchange_order_ack_seconds_count") >= 5);
    // Every answered command went through a committed round, and every round through a log
    // append; a round is part of an answer, so it cannot take longer in all.
    let rounds = value("exchange_raft_round_seconds_count");
    assert!(rounds >= 5, "{page}");
    assert!(
        value("exchange_log_append_seconds_count") >= rounds,
        "{page}"
    );
    assert!(
        value_of_f64(&page, "exchange_raft_round_seconds_sum") > 0.0,
        "{page}"
    );
    assert!(value("exchange_gateway_logons_refused_total") >= 2);
    assert_eq!(value("exchange_apply_lag"), 0);
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    assert_eq!(
        value_of(
            &cluster.scrape_metrics(follower),
            "exchange_role{role=\"follower\"}"
        ),
        1
    );
}

fn value_of(page: &str, line_start: &str) -> u64 {
    value_of_f64(page, line_start) as u64
}

fn value_of_f64(page: &str, line_start: &str) -> f64 {
    metric_sample(page, line_start).unwrap_or_else(|| panic!("no {line_start} in\n{page}"))
}

type OrderIds = BTreeMap<u64, exchange::domain::OrderId>;

/// Reads a broker's feed until it has seen `sent` acceptances and `sent` lots filled; returns
/// the order id accepted per client order id and the quantity filled per order. Fails on any
/// report seen twice.
async fn follow_feed(
    broker_index: usize,
    mut feed: exchange::gateway::client::ReportFeed,
    sent: u64,
) -> (OrderIds, BTreeMap<exchange::domain::OrderId, i64>) {
    let mut accepted_ids = BTreeMap::new();
    let mut filled: BTreeMap<_, i64> = BTreeMap::new();
    let mut exec_ids = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while filled.values().sum::<i64>() < sent as i64 || (accepted_ids.len() as u64) < sent {
        assert!(
            Instant::now() < deadline,
            "broker {}: the feed stopped at {} accepted, {} filled",
            broker_index + 1,
            accepted_ids.len(),
            filled.values().sum::<i64>()
        );
        let batch = match feed.next(Duration::from_secs(1)).await {
            Ok(batch) => batch,
            Err(ClientError::Rejected(why)) => panic!("report feed refused: {why}"),
            // No leader yet (the test kills it): the feed follows the next one on the next
            // call; the deadline above bounds the wait.
            Err(_) => continue,
        };
        for output in batch {
            match output.event {
                Event::Accepted {
                    order_id,
                    client_order_id,
                    ..
                } => assert!(
                    accepted_ids.insert(client_order_id.0, order_id).is_none(),
                    "client order id {} accepted twice",
                    client_order_id.0
                ),
                Event::Execution {
                    exec_id,
                    order_id,
                    qty,
                    ..
                } => {
                    assert!(
                        exec_ids.insert(exec_id),
                        "execution {exec_id} reported twice"
                    );
                    *filled.entry(order_id).or_default() += qty.0;
                }
                _ => {}
            }
        }
    }
    (accepted_ids, filled)
}

/// Orders each session sends, in batches of `BATCH`; four sessions have 1,000 in flight.
const BATCHES: u64 = 8;
const BATCH: u64 = 250;
const SESSIONS_PER_BROKER: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_with_a_thousand_orders_in_flight_enters_each_exactly_once() {
    let mut cluster = Cluster::start("exactly-once", 3, 26_200, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let mut admin = cluster.client();
    setup_market(&mut admin, 1).await;
    fund_broker_accounts(&mut admin).await;

    // Broker 1's sessions buy and broker 2's sell, one lot each at one price: every order
    // trades, some as maker, some as taker, and each broker's feed follows it.
    let sides = [Side::Buy, Side::Sell];
    let sent = BATCHES * BATCH * SESSIONS_PER_BROKER;
    // Each broker's feed runs from the start, through the crash, until it has seen all.
    let mut feeds = Vec::new();
    for (broker_index, (_, key, _)) in BROKERS.into_iter().enumerate() {
        let feed = cluster.client_with_key(key).into_report_feed(0);
        feeds.push(tokio::spawn(follow_feed(broker_index, feed, sent)));
    }
    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut sessions = tokio::task::JoinSet::new();
    for (broker_index, (broker, key, accounts)) in BROKERS.into_iter().enumerate() {
        for session in 0..SESSIONS_PER_BROKER {
            let mut client = cluster.client_with_key(key);
            let acknowledged = Arc::clone(&acknowledged);
            let side = sides[broker_index];
            sessions.spawn(async move {
                // Sessions of one broker interleave their ids, so they rise together.
                let mut answers: BTreeMap<u64, Vec<Output>> = BTreeMap::new();
                for batch in 0..BATCHES {
                    let ids: Vec<u64> = (0..BATCH)
                        .map(|i| (batch * BATCH + i) * SESSIONS_PER_BROKER + session + 1)
                        .collect();
                    let commands = ids
                        .iter()
                        .map(|&id| order(side, accounts[0], id, 10))
                        .collect();
                    let results = client
                        .submit_batch(commands)
                        .await
                        .unwrap_or_else(|e| panic!("broker {broker} session {session}: {e}"));
                    for (id, result) in ids.iter().zip(results) {
                        let outputs = result.unwrap_or_else(|e| panic!("order {id}: {e}"));
                        answers.insert(*id, outputs);
                    }
                    acknowledged.fetch_add(BATCH, Ordering::Relaxed);
                }
                (broker_index, answers)
            });
        }
    }
    // Kill the leader once every session is well into its stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.load(Ordering::Relaxed) < 4 * 2 * BATCH {
        assert!(Instant::now() < deadline, "the sessions made no progress");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let killed_at = acknowledged.load(Ordering::Relaxed);
    cluster.kill(leader);

    let mut per_broker = [BTreeMap::new(), BTreeMap::new()];
    let mut duplicates_answered = 0;
    while let Some(done) = sessions.join_next().await {
        let (broker_index, answers) = done.expect("a session failed");
        for (id, outputs) in answers {
            let order_id = match outputs.first().map(|o| o.event) {
                Some(Event::Accepted { order_id, .. }) => order_id,
                // The first send was executed before the crash; the resend says so.
                Some(Event::DuplicateOrder {
                    order_id,
                    rejected: None,
                    ..
                }) => {
                    duplicates_answered += 1;
                    order_id
                }
                _ => panic!("order {id}: unexpected answer {outputs:?}"),
            };
            assert!(per_broker[broker_index].insert(id, order_id).is_none());
        }
    }
    // Every order exists exactly once, and each broker's feed held every report about it,
    // once: one acceptance per client order id, and fills adding up to its one lot.
    for (broker_index, feed) in feeds.into_iter().enumerate() {
        assert_eq!(per_broker[broker_index].len() as u64, sent);
        let (accepted_ids, filled) = feed.await.expect("feed task");
        assert_eq!(accepted_ids, per_broker[broker_index]);
        assert_eq!(filled.len() as u64, sent);
        assert!(
            filled.values().all(|&qty| qty == 1),
            "an order filled twice"
        );
    }
    println!(
        "killed the leader after {killed_at} acknowledged orders, with up to {} in flight; \
         {duplicates_answered} resends answered as duplicates; both feeds complete",
        BROKERS.len() as u64 * SESSIONS_PER_BROKER * BATCH
    );
    cluster.start_node(leader);
    let index = cluster.assert_converged(Duration::from_secs(20)).await;
    cluster.assert_no_divergence(index).await;
}
