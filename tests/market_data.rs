//! Market data on a real cluster: a subscriber across a leader kill, a subscriber served by a
//! follower, candles on every node, and a subscriber that stops reading.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use exchange::domain::{Command, Event, Liquidity, Side};
use exchange::gateway::client::{Client, ClientError, MarketFeed};
use exchange::marketdata::feed::{Channel, Interval, MdBody, MdMessage, BOOK_LEVELS};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use support::*;

/// Accounts the load trades between.
const ACCOUNTS: u64 = 4;

/// Sends batches of crossing limit orders until told to stop, counting the batches sequenced
/// in `batches`; returns the ids of the trades the acknowledgements reported.
async fn trade(
    mut client: Client,
    seed: u64,
    stop: Arc<AtomicBool>,
    batches: Arc<AtomicU64>,
) -> Vec<u64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut trades = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let commands: Vec<Command> = (0..16)
            .map(|_| {
                let side = if rng.gen_bool(0.5) {
                    Side::Buy
                } else {
                    Side::Sell
                };
                let account = rng.gen_range(1..=ACCOUNTS);
                limit(
                    account,
                    side,
                    rng.gen_range(990..=1010),
                    rng.gen_range(1..=5),
                )
            })
            .collect();
        match client.submit_batch(commands).await {
            Ok(results) => {
                batches.fetch_add(1, Ordering::Relaxed);
                for outputs in results.into_iter().flatten() {
                    trades.extend(outputs.iter().filter_map(|o| match o.event {
                        Event::Execution {
                            trade_id,
                            liquidity: Liquidity::Taker,
                            ..
                        } => Some(trade_id.0),
                        _ => None,
                    }));
                }
            }
            // The leader is gone or changing: try again shortly.
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    trades
}

/// Reads a feed until told to stop and then until it has been quiet for a second; returns
/// it and every message it received.
async fn follow(mut feed: MarketFeed, stop: Arc<AtomicBool>) -> (MarketFeed, Vec<MdMessage>) {
    let mut seen = Vec::new();
    let mut quiet_since = Instant::now();
    loop {
        match feed.next(Duration::from_millis(200)).await {
            Ok(batch) if !batch.is_empty() => {
                quiet_since = Instant::now();
                seen.extend(batch);
            }
            Ok(_) => {}
            Err(ClientError::Rejected(why)) => panic!("subscription refused: {why}"),
            // No leader for the moment: the feed subscribes again on the next call.
            Err(_) => {}
        }
        if stop.load(Ordering::Relaxed) && quiet_since.elapsed() > Duration::from_secs(1) {
            return (feed, seen);
        }
    }
}

/// A feed that subscribes on node `id`, and on the other nodes, in order, only when it cannot
/// reach that one.
fn feed_first_on(cluster: &Cluster, id: u64, channel: Channel) -> MarketFeed {
    let ca = exchange::net::tls::load_ca(&cluster.dir.join("certs")).expect("CA");
    let mut nodes = cluster.brokers();
    nodes.retain(|node| *node != cluster.broker(id));
    nodes.insert(0, cluster.broker(id));
    Client::new(nodes, &ca)
        .expect("client")
        .with_api_key(ADMIN_KEY)
        .with_nodes_in_order()
        .into_market_feed(SYMBOL.0, channel)
}

/// The engine's book (from any node, once all agree) equals what the feed built.
async fn assert_book_matches_engine(cluster: &Cluster, feed: &MarketFeed) {
    cluster.assert_converged(Duration::from_secs(10)).await;
    let mut client = cluster.client();
    let (index, bids, asks) = client
        .depth(SYMBOL.0, BOOK_LEVELS as u32)
        .await
        .expect("depth");
    let state = feed.state();
    assert!(!bids.is_empty() && !asks.is_empty(), "the load left a book");
    assert_eq!(state.bids, bids, "bids at index {index}");
    assert_eq!(state.asks, asks, "asks at index {index}");
    let snapshot = client
        .market_snapshot(SYMBOL.0, Channel::Book)
        .await
        .expect("snapshot");
    assert_eq!(
        Some(snapshot.seq),
        state.seq,
        "the feed saw the last message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_sees_every_message_once_across_a_leader_kill() {
    let mut cluster = Cluster::start("md-failover", 3, 26_600, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let mut admin = cluster.client();
    setup_market(&mut admin, ACCOUNTS).await;

    // Both subscribed on the leader (their snapshots received) before the first trade.
    let mut book = feed_first_on(&cluster, leader, Channel::Book);
    let mut trades = feed_first_on(&cluster, leader, Channel::Trades);
    for feed in [&mut book, &mut trades] {
        let first = feed.next(Duration::from_secs(5)).await.expect("subscribe");
        assert!(first.first().is_some_and(|m| m.is_snapshot()), "{first:?}");
        assert_eq!(feed.node(), Some(cluster.broker(leader)));
    }
    let stop_reading = Arc::new(AtomicBool::new(false));
    let book = tokio::spawn(follow(book, Arc::clone(&stop_reading)));
    let trades = tokio::spawn(follow(trades, Arc::clone(&stop_reading)));

    let stop_trading = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..2)
        .map(|seed| {
            let batches = Arc::new(AtomicU64::new(0));
            tokio::spawn(trade(
                cluster.client(),
                seed,
                Arc::clone(&stop_trading),
                batches,
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    assert_ne!(new_leader, leader);
    // Long enough for candles of one second to close on the new leader.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    stop_trading.store(true, Ordering::Relaxed);
    let mut acknowledged = BTreeSet::new();
    for task in load {
        acknowledged.extend(task.await.expect("load"));
    }
    stop_reading.store(true, Ordering::Relaxed);
    let (book, book_messages) = book.await.expect("book feed");
    let (trades, trade_messages) = trades.await.expect("trades feed");

    // Gapless and without a second snapshot: the feed resumed on the new leader after its
    // last message, from that leader's own copy of the same stream.
    for (name, feed) in [("book", &book), ("trades", &trades)] {
        assert_eq!(
            feed.gaps(),
            0,
            "{name}: a message did not follow its predecessor"
        );
        assert!(feed.subscriptions() >= 2, "{name} never had to resubscribe");
        assert_eq!(
            feed.state().snapshots,
            1,
            "{name} resumed without a snapshot"
        );
    }
    assert!(
        book_messages.len() > 50,
        "{} book messages",
        book_messages.len()
    );
    assert_book_matches_engine(&cluster, &book).await;

    // Every trade once, in order, including every trade an acknowledgement reported.
    let ids: Vec<u64> = trade_messages
        .iter()
        .flat_map(|m| match &m.body {
            MdBody::Trades { trades } => trades.iter().map(|t| t.trade_id).collect(),
            _ => Vec::new(),
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "trade ids rise");
    let streamed: BTreeSet<u64> = ids.iter().copied().collect();
    assert!(acknowledged.len() > 100, "{} trades", acknowledged.len());
    let missing: Vec<_> = acknowledged.difference(&streamed).take(5).collect();
    assert!(
        missing.is_empty(),
        "acknowledged trades not streamed: {missing:?}"
    );

    // Candles: the killed node, restarted, rebuilds them from its log; every node's equal.
    cluster.start_node(leader);
    cluster.assert_converged(Duration::from_secs(20)).await;
    let mut candles = Vec::new();
    for id in 1..=3 {
        let ca = exchange::net::tls::load_ca(&cluster.dir.join("certs")).expect("CA");
        let mut node = Client::new(vec![cluster.broker(id)], &ca)
            .expect("client")
            .with_api_key(ADMIN_KEY);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match node.market_snapshot(SYMBOL.0, Channel::Candles).await {
                Ok(snapshot) => {
                    candles.push((id, snapshot));
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "node {id}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    let (_, first) = &candles[0];
    let MdBody::CandlesSnapshot { candles: kept } = &first.body else {
        panic!("not a candles snapshot: {first:?}");
    };
    let closed_seconds = kept
        .iter()
        .filter(|c| c.interval == Interval::OneSecond && c.closed)
        .count();
    assert!(closed_seconds >= 2, "{closed_seconds} closed 1 s candles");
    for (id, snapshot) in &candles[1..] {
        assert_eq!(snapshot, first, "node {id}'s candles differ from node 1's");
    }
    // The trades the candles count are the trades streamed.
    let volume: i64 = kept
        .iter()
        .filter(|c| c.interval == Interval::OneMinute)
        .map(|c| c.volume)
        .sum();
    let streamed_volume: i64 = trade_messages
        .iter()
        .flat_map(|m| match &m.body {
            MdBody::Trades { trades } => trades.iter().map(|t| t.qty).collect(),
            _ => Vec::new(),
        })
        .sum();
    assert_eq!(
        volume, streamed_volume,
        "minute candles' volume is every trade's"
    );
}

/// Any node in touch with the leader serves market data (every node numbers the streams alike),
/// so subscribers may leave the leader's cores to orders: one on a follower is served there and
/// the leader sends nothing; when that follower goes, the feed resumes on another node after
/// its last message, with no gap and no second snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_serves_market_data_and_its_subscriber_resumes_elsewhere_when_it_goes() {
    let mut cluster = Cluster::start(
        "md-follower",
        3,
        29_900,
        &["--metrics-listen", "127.0.0.1:{metrics}"],
    );
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let mut admin = cluster.client();
    setup_market(&mut admin, ACCOUNTS).await;

    let mut book = feed_first_on(&cluster, follower, Channel::Book);
    let first = book.next(Duration::from_secs(5)).await.expect("subscribe");
    assert!(first.first().is_some_and(|m| m.is_snapshot()), "{first:?}");
    assert_eq!(
        book.node(),
        Some(cluster.broker(follower)),
        "the follower took the subscription itself"
    );
    let stop_reading = Arc::new(AtomicBool::new(false));
    let book = tokio::spawn(follow(book, Arc::clone(&stop_reading)));
    let stop_trading = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..2)
        .map(|seed| {
            let batches = Arc::new(AtomicU64::new(0));
            tokio::spawn(trade(
                cluster.client(),
                seed,
                Arc::clone(&stop_trading),
                batches,
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let sent = |id| {
        cluster
            .metric(id, "exchange_market_messages_sent_total")
            .unwrap_or_else(|| panic!("node {id} has no market data metrics"))
    };
    assert!(sent(follower) > 0.0, "the follower sent no market data");
    assert_eq!(sent(leader), 0.0, "the leader sent market data");

    cluster.kill(follower);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop_trading.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load");
    }
    stop_reading.store(true, Ordering::Relaxed);
    let (book, messages) = book.await.expect("book feed");
    assert_eq!(book.gaps(), 0, "a message did not follow its predecessor");
    assert!(
        book.subscriptions() >= 2,
        "the feed never had to resubscribe"
    );
    assert_eq!(book.state().snapshots, 1, "it resumed without a snapshot");
    assert!(
        book.node()
            .is_some_and(|node| node != cluster.broker(follower)),
        "the feed is on another node now: {:?}",
        book.node()
    );
    assert!(messages.len() > 50, "{} book messages", messages.len());
    assert_book_matches_engine(&cluster, &book).await;
}

/// The market data endpoint (`--md-listen`, on the fan-out runtime) serves subscribers on any
/// node in touch with the leader, and refuses orders and reports with a pointer to the broker
/// endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_market_data_endpoint_serves_subscribers_and_refuses_orders() {
    let cluster = Cluster::start("md-endpoint", 3, 27_700, &["--md-listen", "127.0.0.1:{md}"]);
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let mut admin = cluster.client();
    setup_market(&mut admin, ACCOUNTS).await;
    submit(
        &mut admin,
        limit(1, Side::Buy, 995, 3),
        Duration::from_secs(10),
    )
    .await;

    let ca = exchange::net::tls::load_ca(&cluster.dir.join("certs")).expect("CA");
    let endpoint = || {
        Client::new(vec![cluster.market_data(follower)], &ca)
            .expect("client")
            .with_api_key(ADMIN_KEY)
    };
    let mut book = endpoint().into_market_feed(SYMBOL.0, Channel::Book);
    let first = book.next(Duration::from_secs(5)).await.expect("subscribe");
    assert!(first.first().is_some_and(|m| m.is_snapshot()), "{first:?}");
    assert_eq!(book.node(), Some(cluster.market_data(follower)));
    assert_eq!(
        book.state().bids.first().map(|l| (l.price, l.qty)),
        Some((995, 3))
    );
    // The book moves: the subscriber sees it.
    submit(
        &mut admin,
        limit(2, Side::Sell, 1_005, 4),
        Duration::from_secs(10),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while book.state().asks.is_empty() {
        assert!(Instant::now() < deadline, "the ask never came");
        book.next(Duration::from_millis(200)).await.expect("next");
    }
    assert_eq!(book.state().asks[0].price, 1_005);

    // Market data queries are answered there.
    let mut client = endpoint();
    let snapshot = client
        .market_snapshot(SYMBOL.0, Channel::Trades)
        .await
        .expect("a snapshot on the market data endpoint");
    assert!(snapshot.is_snapshot());
    let (_, bids, asks) = client.depth(SYMBOL.0, 5).await.expect("depth");
    assert_eq!((bids[0].price, asks[0].price), (995, 1_005));
    assert!(!client
        .instruments()
        .await
        .expect("instruments")
        .0
        .is_empty());
    // Orders, order queries and reports are not.
    match client.submit(limit(1, Side::Buy, 990, 1)).await {
        Err(ClientError::Rejected(why)) => assert!(why.contains("--md-listen"), "{why}"),
        other => panic!("an order on the market data endpoint: {other:?}"),
    }
    match client.open_orders(1).await {
        Err(ClientError::Rejected(why)) => assert!(why.contains("--md-listen"), "{why}"),
        other => panic!("open orders on the market data endpoint: {other:?}"),
    }
    let mut reports = endpoint().into_report_feed(0);
    match reports.next(Duration::from_secs(5)).await {
        Err(ClientError::Rejected(why)) => assert!(why.contains("broker endpoint"), "{why}"),
        other => panic!("reports on the market data endpoint: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_resynchronised_by_a_snapshot() {
    let cluster = Cluster::start("md-slow", 3, 26_800, &["--md-subscriber-buffer", "32"]);
    cluster.wait_for_leader(Duration::from_secs(10)).await;
    let mut admin = cluster.client();
    setup_market(&mut admin, ACCOUNTS).await;

    // A small window: the node can send little ahead of this subscriber reading.
    let ca = exchange::net::tls::load_ca(&cluster.dir.join("certs")).expect("CA");
    let mut slow = Client::with_stream_window(cluster.brokers(), &ca, 4_096)
        .expect("client")
        .with_api_key(ADMIN_KEY)
        .into_market_feed(SYMBOL.0, Channel::Book);
    let first = slow.next(Duration::from_secs(5)).await.expect("snapshot");
    assert!(first[0].is_snapshot());

    // It stops reading while the market moves.
    // Trades until far more has happened than the node's buffer for it (32 messages), the
    // stream window and the client library's queue (64 replies) hold: 2,000 sequenced batches,
    // each an entry with its own market data. A count, not a time, so that a busy host
    // cannot make it too little.
    let stop = Arc::new(AtomicBool::new(false));
    let batches = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = (0..2)
        .map(|seed| {
            let (stop, batches) = (Arc::clone(&stop), Arc::clone(&batches));
            tokio::spawn(trade(cluster.client(), seed, stop, batches))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while batches.load(Ordering::Relaxed) < 2_000 {
        assert!(
            Instant::now() < deadline,
            "2,000 batches were not sequenced within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load");
    }

    // Then reads again: the node skipped what it could not deliver and sent a fresh
    // snapshot; from it the book is right again, and nothing after it is missing.
    let stop_reading = Arc::new(AtomicBool::new(true));
    let (slow, _) = follow(slow, stop_reading).await;
    assert_eq!(slow.gaps(), 0);
    assert!(
        slow.state().snapshots >= 2,
        "no snapshot after falling behind"
    );
    assert_book_matches_engine(&cluster, &slow).await;
}
