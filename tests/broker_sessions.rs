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
    Command::NewOrder(NewOrder {
        account: AccountId(account),
        symbol: SYMBOL,
        client_order_id: ClientOrderId(client_order_id),
        side: Side::Buy,
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
    let cluster = Cluster::start("sessions", 3, 26_000, &[]);
    cluster.wait_for_leader(Duration::from_secs(10)).await;
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
    assert!(
        matches!(outputs[0].event, Event::Accepted { .. }),
        "{outputs:?}"
    );
    assert_eq!(broker.broker(), Some(broker_1));

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
        Err(ClientError::Rejected(why)) => assert!(why.contains("logon refused"), "{why}"),
        other => panic!("a revoked key was accepted: {other:?}"),
    }
    let index = cluster.assert_converged(Duration::from_secs(10)).await;
    cluster.assert_no_divergence(index).await;
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

    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut sessions = tokio::task::JoinSet::new();
    for (broker_index, (broker, key, accounts)) in BROKERS.into_iter().enumerate() {
        for session in 0..SESSIONS_PER_BROKER {
            let mut client = cluster.client_with_key(key);
            let acknowledged = Arc::clone(&acknowledged);
            sessions.spawn(async move {
                // Sessions of one broker interleave their ids, so they rise together.
                let mut answers: BTreeMap<u64, Vec<Output>> = BTreeMap::new();
                for batch in 0..BATCHES {
                    let ids: Vec<u64> = (0..BATCH)
                        .map(|i| (batch * BATCH + i) * SESSIONS_PER_BROKER + session + 1)
                        .collect();
                    let commands = ids.iter().map(|&id| buy(accounts[0], id, 10)).collect();
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
            let order_id = match outputs[..] {
                [Output {
                    event: Event::Accepted { order_id, .. },
                    ..
                }] => order_id,
                // The first send was executed before the crash; the resend says so.
                [Output {
                    event:
                        Event::DuplicateOrder {
                            order_id,
                            rejected: None,
                            ..
                        },
                    ..
                }] => {
                    duplicates_answered += 1;
                    order_id
                }
                _ => panic!("order {id}: unexpected answer {outputs:?}"),
            };
            assert!(per_broker[broker_index].insert(id, order_id).is_none());
        }
    }
    let sent = BATCHES * BATCH * SESSIONS_PER_BROKER;
    // Every order exists exactly once: the book holds exactly one order per client order id.
    for (broker_index, (_, _, accounts)) in BROKERS.into_iter().enumerate() {
        assert_eq!(per_broker[broker_index].len() as u64, sent);
        let cancel_all = Command::MassCancel(MassCancel {
            account: AccountId(accounts[0]),
            symbol: None,
        });
        let outputs = submit(&mut admin, cancel_all, Duration::from_secs(10)).await;
        let count = outputs.iter().find_map(|o| match o.event {
            Event::MassCancelled { count, .. } => Some(count as u64),
            _ => None,
        });
        assert_eq!(
            count,
            Some(sent),
            "broker {} has a different number of orders than it sent",
            broker_index + 1
        );
    }
    println!(
        "killed the leader after {killed_at} acknowledged orders, with up to {} in flight; \
         {duplicates_answered} resends answered as duplicates",
        BROKERS.len() as u64 * SESSIONS_PER_BROKER * BATCH
    );
    cluster.start_node(leader);
    let index = cluster.assert_converged(Duration::from_secs(20)).await;
    cluster.assert_no_divergence(index).await;
}
