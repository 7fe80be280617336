//! `exchange-cli bench`: load against a running cluster, as brokers see it.
//!
//! N sessions, each a broker of its own (registered with a fresh key for the run) with one
//! account, send new orders (and, by the order mix, cancels) for a fixed time:
//!
//! - `--rate R` (orders per second, over all sessions): each order has a scheduled send time;
//!   a session sends everything that is due in one request, and an order's latency is
//!   measured from its *scheduled* time, so a slow answer counts against every order that
//!   waited behind it (no coordinated omission).
//! - `--rate 0`: closed loop, each session sending as soon as its last request is answered.
//!
//! Order-to-ack: until the answer (committed on a majority, applied by the engine). Order-to-
//! fill: for the orders that cross the spread, until their execution report is received.
//! Beside the load, the floor it cannot beat is measured in the same run: a QUIC round trip
//! on loopback plus one `fdatasync` of a small write.

use std::collections::VecDeque;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use exchange_domain::{
    AccountId, AdminCommand, Amount, AssetId, BrokerId, Cancel, ClientOrderId, Command, Event,
    NewOrder, OrderId, OrderType, Price, Qty, RiskLimits, SelfTradePrevention, Side, SymbolId,
    SymbolSpec, TimeInForce,
};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::cluster::ClusterArgs;
use crate::gateway::client::{Client, ClientError, MarketFeed, Pipeline};
use crate::marketdata::feed::{Channel, MdBody};

#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub sessions: u64,
    pub duration: Duration,
    /// Orders per second over all sessions; 0: closed loop.
    pub rate: u64,
    /// The symbol to create and trade (a fresh one per run keeps runs independent).
    pub symbol: u32,
    /// Account ids start here; broker ids start at `first_broker`.
    pub first_account: u64,
    pub first_broker: u32,
    /// Closed loop: orders each session sends per request. Open loop: the most due orders
    /// sent in one request.
    pub orders_per_request: usize,
    /// Percent of orders that cross the spread and trade at once.
    pub cross_pct: u8,
    /// Percent of requests that cancel one of the session's resting orders instead.
    pub cancel_pct: u8,
    /// Where to measure the fdatasync floor (a directory on the cluster's disk).
    pub floor_dir: PathBuf,
    /// Market data subscribers that read the symbol's book and trades throughout.
    pub md_subscribers: u64,
    /// The node they read (`None`: whichever node answers first); the others only when it
    /// cannot be reached.
    pub md_node: Option<std::net::SocketAddr>,
    /// Market data subscribers that subscribe to the book and then stop reading.
    pub md_stalled: u64,
    /// WebSocket subscribers (the HTTP API's) that follow the symbol's book and trades.
    pub ws_subscribers: u64,
    /// Where they connect: a node's `ws://HOST:PORT/api/v1/ws`.
    pub ws_url: Option<String>,
    /// The nice value of the subscribers' threads (0: the bench's own priority): at 19 they
    /// take only the CPU the cluster leaves, which tells their own cost from the node's.
    pub subscribers_nice: i32,
    /// Open loop: send each order when due without waiting for earlier answers.
    pub pipeline: bool,
}

/// What the market data subscribers saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MarketDataReport {
    pub subscribers: u64,
    pub stalled: u64,
    pub ws_subscribers: u64,
    /// CPU the subscribers took on this host (their runtime's threads: decryption, decoding,
    /// bookkeeping), in seconds, and as a share of the run's wall time.
    pub subscribers_cpu_s: f64,
    pub subscribers_cpu_share: f64,
    /// Messages all reading subscribers received (book and trades), and per second.
    pub messages: u64,
    pub messages_per_sec: f64,
    /// Level changes and trades in those messages, per second.
    pub updates_per_sec: f64,
    /// Messages that did not follow their predecessor (must be 0).
    pub gaps: u64,
    /// Snapshots beyond each stream's first: resynchronisations after falling behind.
    pub resyncs: u64,
    /// Stalled subscribers that, reading again, were resynchronised by a snapshot.
    pub stalled_recovered: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Percentiles {
    pub(crate) fn of(histogram: &Histogram<u64>) -> Self {
        Percentiles {
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.5),
            p90_us: histogram.value_at_quantile(0.9),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ClusterBenchReport {
    pub sessions: u64,
    /// The target rate (0: closed loop).
    pub rate: u64,
    pub duration_s: f64,
    /// Orders and cancels sent, answered, refused by the engine, and lost (no answer).
    pub sent: u64,
    pub acked: u64,
    pub rejected: u64,
    pub failed: u64,
    /// The failed orders by kind, and why the first one failed (`None` when none did).
    pub failures: Failures,
    pub first_failure: Option<String>,
    pub throughput_per_sec: f64,
    /// Order-to-ack.
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub fill: Percentiles,
    /// From each order's scheduled time to the sending of its request: the load generator's
    /// own part of order-to-ack (waiting for the session's previous answer, or for a core).
    pub send_lag: Percentiles,
    /// A QUIC round trip on loopback plus one fdatasync, measured in this run.
    pub floor: Percentiles,
    pub market_data: Option<MarketDataReport>,
}

/// Failed orders by what a client can conclude: `unavailable`, nothing was sequenced;
/// `unknown`, the outcome is unknown (the leader failed or lost its majority mid-request);
/// `refused`, any other error.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Failures {
    pub unavailable: u64,
    pub unknown: u64,
    pub refused: u64,
}

impl Failures {
    fn count(&mut self, error: &ClientError, orders: u64) {
        match error {
            ClientError::Unavailable(_) => self.unavailable += orders,
            ClientError::OutcomeUnknown(_) => self.unknown += orders,
            ClientError::Rejected(_) => self.refused += orders,
        }
    }

    fn add(&mut self, other: Failures) {
        self.unavailable += other.unavailable;
        self.unknown += other.unknown;
        self.refused += other.refused;
    }
}

/// Orders released to one session and not yet sent: a session this far behind holds back the
/// pacer (the orders' scheduled times stay what they were).
const RELEASED_QUEUE_MAX: usize = 65_536;

/// How long a pipelined request refused as unavailable (nothing was sequenced: the leader is
/// briefly without its majority, or the connection is gone) is sent again, as a broker would,
/// before it counts as failed. Its latency runs from its scheduled time throughout.
const UNAVAILABLE_RESEND_FOR: Duration = Duration::from_secs(2);
const UNAVAILABLE_RESEND_PAUSE: Duration = Duration::from_millis(5);

/// How long the subscribers may take to connect and have their snapshots before the run.
const SUBSCRIBED_WITHIN: Duration = Duration::from_secs(60);

/// The stream window of a stalled subscriber's connection.
const STALLED_WINDOW_BYTES: u32 = 16 * 1024;

/// What one reading subscriber counted.
#[derive(Default)]
struct FeedCount {
    /// The last error the feed met, if any.
    last_error: Option<String>,
    messages: u64,
    updates: u64,
    gaps: u64,
    resyncs: u64,
}

/// Reads one stream until `stop`, counting; adds one to `subscribed` once its snapshot came.
async fn read_feed(
    mut feed: MarketFeed,
    stop: Arc<AtomicBool>,
    subscribed: Arc<AtomicU64>,
) -> FeedCount {
    let mut count = FeedCount::default();
    let mut counted = false;
    while !stop.load(Ordering::Acquire) {
        let batch = match feed.next(Duration::from_millis(100)).await {
            Ok(batch) => batch,
            Err(e) => {
                // Kept for the report if the subscriber never gets going; the feed subscribes
                // again on the next call.
                count.last_error = Some(e.to_string());
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !counted && !batch.is_empty() {
            counted = true;
            subscribed.fetch_add(1, Ordering::AcqRel);
        }
        count.messages += batch.len() as u64;
        count.updates += batch
            .iter()
            .map(|m| match &m.body {
                MdBody::BookUpdate { changes } => changes.len() as u64,
                MdBody::Trades { trades } => trades.len() as u64,
                _ => 0,
            })
            .sum::<u64>();
    }
    count.gaps = feed.gaps();
    count.resyncs = feed.state().snapshots.saturating_sub(1);
    count
}

/// A WebSocket subscriber of the HTTP API: follows the symbol's book and trades until `stop`,
/// counting messages and checking that each stream's sequence numbers follow each other; adds
/// one to `subscribed` once both snapshots came.
async fn read_ws(
    url: String,
    symbol: String,
    stop: Arc<AtomicBool>,
    subscribed: Arc<AtomicU64>,
) -> Result<FeedCount, String> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .map_err(|e| format!("WebSocket {url}: {e}"))?;
    for channel in ["book", "trades"] {
        let subscribe =
            serde_json::json!({"op": "subscribe", "channel": channel, "symbol": symbol});
        socket
            .send(Message::Text(subscribe.to_string().into()))
            .await
            .map_err(|e| format!("WebSocket {url}: {e}"))?;
    }
    let mut count = FeedCount::default();
    let mut last: std::collections::BTreeMap<String, u64> = Default::default();
    let mut snapshots = 0u64;
    while !stop.load(Ordering::Acquire) {
        let Ok(received) = tokio::time::timeout(Duration::from_millis(100), socket.next()).await
        else {
            continue;
        };
        let text = match received {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("WebSocket {url}: {e}")),
            None => return Err(format!("WebSocket {url}: closed by the node")),
        };
        let message: serde_json::Value =
            serde_json::from_str(text.as_str()).map_err(|e| format!("WebSocket {url}: {e}"))?;
        let (Some(kind), Some(channel), Some(seq)) = (
            message["type"].as_str(),
            message["channel"].as_str(),
            message["seq"].as_u64(),
        ) else {
            continue;
        };
        count.messages += 1;
        let previous = last.insert(channel.to_string(), seq);
        match kind {
            "snapshot" => {
                snapshots += 1;
                if snapshots == 2 {
                    subscribed.fetch_add(1, Ordering::AcqRel);
                }
            }
            _ => {
                if previous.is_some_and(|p| seq != p + 1) {
                    count.gaps += 1;
                }
                count.updates += ["changes", "trades"]
                    .iter()
                    .filter_map(|k| message[*k].as_array())
                    .map(|a| a.len() as u64)
                    .sum::<u64>();
            }
        }
    }
    count.resyncs = snapshots.saturating_sub(2);
    Ok(count)
}

/// CPU seconds taken so far by this process's threads named `name`.
fn threads_cpu_s(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut total = 0u64;
    for task in tasks.flatten() {
        let path = task.path();
        let named = std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim() == name);
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // The fields after the command's closing parenthesis; utime and stime are 14 and 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
        if named && fields.len() > 13 {
            total +=
                fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
        }
    }
    total as f64 / ticks
}

/// Subscribes to the book, reads its snapshot (then adds one to `subscribed`), stops reading
/// until `stop`, then reads again for a moment. Returns whether it was resynchronised by a
/// fresh snapshot.
async fn stall_feed(
    mut feed: MarketFeed,
    stop: Arc<AtomicBool>,
    subscribed: Arc<AtomicU64>,
) -> bool {
    let until = Instant::now() + SUBSCRIBED_WITHIN;
    while Instant::now() < until && !stop.load(Ordering::Acquire) {
        if feed
            .next(Duration::from_secs(1))
            .await
            .is_ok_and(|b| !b.is_empty())
        {
            subscribed.fetch_add(1, Ordering::AcqRel);
            break;
        }
    }
    while !stop.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until && feed.state().snapshots < 2 {
        let _ = feed.next(Duration::from_millis(100)).await;
    }
    feed.state().snapshots >= 2 && feed.gaps() == 0
}

/// The name of the subscribers' threads.
const SUBSCRIBER_THREADS: &str = "bench-md";

/// A runtime that may be dropped inside another one (it is shut down without waiting).
struct BackgroundRuntime(Option<tokio::runtime::Runtime>);

impl Drop for BackgroundRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("static bounds")
}

/// One session's broker: id, key, account.
struct Member {
    broker: BrokerId,
    key: String,
    account: AccountId,
}

async fn setup(args: &ClusterArgs, config: &BenchConfig) -> Result<Vec<Member>, String> {
    let key = args.required_key("the bench (it registers brokers and funds accounts)")?;
    let mut admin = args.client_with_key(&key)?;
    let symbol = SymbolId(config.symbol);
    let mut commands = vec![Command::Admin(AdminCommand::AddSymbol(SymbolSpec {
        symbol,
        base: AssetId(1),
        quote: AssetId(2),
        tick_size: Price(1),
        lot_size: Qty(1),
        name: exchange_domain::Name::numbered("SYM", symbol.0 as u64),
        price_decimals: 0,
    }))];
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut members = Vec::new();
    for n in 0..config.sessions {
        let member = Member {
            broker: BrokerId(config.first_broker + n as u32),
            key: format!("bench-{}-{n}-{nonce:x}", config.symbol),
            account: AccountId(config.first_account + n),
        };
        // The leader digests each key with the cluster's salt: one request a broker.
        let outputs = admin
            .set_broker_key(member.broker.0, &member.key)
            .await
            .map_err(|e| format!("setting up the benchmark: {e}"))?;
        refused_setup(&outputs)?;
        commands.push(Command::Admin(AdminCommand::CreateAccount {
            account: member.account,
            owner: member.broker,
        }));
        commands.push(Command::Admin(AdminCommand::SetRiskLimits {
            account: member.account,
            limits: RiskLimits {
                max_order_qty: Qty(1_000_000),
                max_order_notional: Amount(i64::MAX),
                max_open_orders: u32::MAX,
            },
        }));
        for asset in [AssetId(1), AssetId(2)] {
            commands.push(Command::Admin(AdminCommand::Deposit {
                account: member.account,
                asset,
                amount: Amount(1 << 50),
            }));
        }
        members.push(member);
    }
    for chunk in commands.chunks(1_000) {
        let results = admin
            .submit_batch(chunk.to_vec())
            .await
            .map_err(|e| format!("setting up the benchmark: {e}"))?;
        for result in results {
            refused_setup(&result.map_err(|e| format!("setting up the benchmark: {e}"))?)?;
        }
    }
    Ok(members)
}

/// The refusal of a set-up command, if it was refused.
fn refused_setup(outputs: &[exchange_domain::Output]) -> Result<(), String> {
    match outputs.iter().find_map(|o| match o.event {
        Event::AdminRejected { reason } => Some(reason),
        _ => None,
    }) {
        Some(reason) => Err(format!(
            "setting up the benchmark: {reason:?} (another --symbol, --first-account and \
             --first-broker for a second run on the same cluster)"
        )),
        None => Ok(()),
    }
}

/// What one session measured.
struct SessionResult {
    ack: Histogram<u64>,
    /// From each order's scheduled time to the sending of its request.
    send_lag: Histogram<u64>,
    fill: Histogram<u64>,
    sent: u64,
    rejected: u64,
    failed: u64,
    failures: Failures,
    first_failure: Option<String>,
}

/// One session's order stream: resting orders on both sides of a wide book, crossing orders
/// that trade, cancels of its own resting orders.
struct Flow {
    rng: rand::rngs::SmallRng,
    account: AccountId,
    symbol: SymbolId,
    next_client_order_id: u64,
    resting: VecDeque<OrderId>,
    cross_pct: u8,
    cancel_pct: u8,
}

impl Flow {
    /// The next command, and whether it is a crossing order (measured to its fill).
    fn next(&mut self) -> (Command, bool) {
        if self.rng.gen_range(0..100) < self.cancel_pct {
            if let Some(order_id) = self.resting.pop_front() {
                let cancel = Cancel {
                    account: self.account,
                    order_id,
                };
                return (Command::Cancel(cancel), false);
            }
        }
        self.next_client_order_id += 1;
        let crossing = self.rng.gen_range(0..100) < self.cross_pct;
        let buy = self.rng.gen_bool(0.5);
        let (side, price, tif) = match (crossing, buy) {
            (true, true) => (Side::Buy, 11_000, TimeInForce::Ioc),
            (true, false) => (Side::Sell, 9_000, TimeInForce::Ioc),
            (false, true) => (
                Side::Buy,
                self.rng.gen_range(9_000..10_000),
                TimeInForce::Gtc,
            ),
            (false, false) => (
                Side::Sell,
                self.rng.gen_range(10_001..11_000),
                TimeInForce::Gtc,
            ),
        };
        let order = NewOrder {
            account: self.account,
            symbol: self.symbol,
            client_order_id: ClientOrderId(self.next_client_order_id),
            side,
            order_type: OrderType::Limit,
            time_in_force: tif,
            price: Price(price),
            qty: Qty(1),
            self_trade_prevention: SelfTradePrevention::None,
        };
        (Command::NewOrder(order), crossing)
    }
}

/// An order as the session sent it: the command, whether it crosses (measured to its fill),
/// and its scheduled send time.
type Sent = (Command, bool, Instant);

impl SessionResult {
    fn new() -> Self {
        SessionResult {
            ack: histogram(),
            send_lag: histogram(),
            fill: histogram(),
            sent: 0,
            rejected: 0,
            failed: 0,
            failures: Failures::default(),
            first_failure: None,
        }
    }

    /// Records a request's answers (latency from each order's scheduled time) and keeps the
    /// session's resting orders for its cancels.
    fn record(
        &mut self,
        flow: &mut Flow,
        due: &[Sent],
        sent_at: Instant,
        answers: Answers,
        answered: Instant,
    ) {
        for (_, _, scheduled) in due {
            self.send_lag
                .saturating_record(sent_at.saturating_duration_since(*scheduled).as_micros() as u64);
        }
        let answers = match answers {
            Ok(answers) => answers,
            Err(e) => {
                self.failed += due.len() as u64;
                self.failures.count(&e, due.len() as u64);
                self.first_failure.get_or_insert_with(|| e.to_string());
                return;
            }
        };
        for ((command, crossing, scheduled), answer) in due.iter().zip(answers) {
            let outputs = match answer {
                Ok(outputs) => outputs,
                Err(e) => {
                    self.failed += 1;
                    self.failures.count(&e, 1);
                    self.first_failure.get_or_insert_with(|| e.to_string());
                    continue;
                }
            };
            let micros = answered.duration_since(*scheduled).as_micros() as u64;
            self.ack.saturating_record(micros);
            for output in &outputs {
                match output.event {
                    Event::Rejected { .. } | Event::CancelRejected { .. } => self.rejected += 1,
                    Event::Accepted {
                        order_id,
                        time_in_force: TimeInForce::Gtc,
                        ..
                    } if matches!(command, Command::NewOrder(_)) => {
                        flow.resting.push_back(order_id)
                    }
                    _ => {}
                }
            }
            let filled = outputs
                .iter()
                .any(|o| matches!(o.event, Event::Execution { .. }));
            if *crossing && filled {
                self.fill.saturating_record(micros);
            }
        }
        // Keep the book bounded: resting orders filled by others are simply cancelled late.
        while flow.resting.len() > 10_000 {
            flow.resting.pop_front();
        }
    }
}

type Answers = crate::gateway::client::BatchAnswers;

/// Sends due orders in one request (a single one as a plain submit); returns when it was sent
/// and the answers.
async fn submit_due(client: &mut Client, due: &[Sent]) -> (Instant, Answers) {
    let commands: Vec<Command> = due.iter().map(|(c, _, _)| *c).collect();
    let sent_at = Instant::now();
    let answers = if commands.len() == 1 {
        client.submit(commands[0]).await.map(|o| vec![Ok(o)])
    } else {
        client.submit_batch(commands).await
    };
    (sent_at, answers)
}

/// Closed loop: each session sends its next request as soon as the last is answered.
async fn drive_closed_loop(
    mut client: Client,
    mut flow: Flow,
    config: BenchConfig,
    stop: Arc<AtomicBool>,
    acked_so_far: Arc<AtomicU64>,
) -> SessionResult {
    let mut result = SessionResult::new();
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        let due: Vec<Sent> = (0..config.orders_per_request)
            .map(|_| {
                let (command, crossing) = flow.next();
                (command, crossing, now)
            })
            .collect();
        result.sent += due.len() as u64;
        let (sent_at, answers) = submit_due(&mut client, &due).await;
        result.record(&mut flow, &due, sent_at, answers, Instant::now());
        acked_so_far.fetch_add(due.len() as u64, Ordering::Relaxed);
    }
    result
}

/// What a session on a thread of its own needs besides its client: its place among the
/// sessions, its runtime (which drives its client's connection), and the handshake with the
/// main thread: it reports once connected, then waits for the time the run starts.
struct SessionThread {
    index: u64,
    runtime: tokio::runtime::Runtime,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
    start: std::sync::mpsc::Receiver<Instant>,
}

/// Open loop, one request out at a time: the session's orders are evenly spaced; what falls
/// due while a request is out goes together in the next (at most `orders_per_request`).
/// Latency counts from each order's scheduled time. The session runs on a thread of its own
/// with a single-threaded runtime and waits for the next order with the kernel's timer: the
/// async runtime's timer wakes on millisecond ticks, which sent orders 1.2 ms late at the
/// median, counted as the exchange's latency.
fn drive_open_loop(
    mut client: Client,
    mut flow: Flow,
    config: BenchConfig,
    session: SessionThread,
    stop: Arc<AtomicBool>,
    acked_so_far: Arc<AtomicU64>,
) -> SessionResult {
    let mut result = SessionResult::new();
    let SessionThread {
        index,
        runtime,
        ready,
        start,
    } = session;
    let connected = runtime.block_on(client.pipeline()).map(|_| ());
    let _ = ready.send(connected.map_err(|e| e.to_string()));
    let Ok(started) = start.recv() else {
        return result;
    };
    // Order k of session i is due at (k * sessions + i) / rate: the sessions' orders
    // interleave evenly, not in bursts of one per session.
    let interval = Duration::from_secs_f64(1.0 / config.rate as f64);
    let due_at = |k: u64| started + interval.mul_f64((k * config.sessions + index) as f64);
    let mut scheduled_count = 0u64;
    while !stop.load(Ordering::Acquire) {
        let next_at = due_at(scheduled_count);
        let now = Instant::now();
        if next_at > now {
            std::thread::sleep(next_at - now);
            continue;
        }
        let mut due: Vec<Sent> = Vec::new();
        while due.len() < config.orders_per_request {
            let at = due_at(scheduled_count);
            if at > now {
                break;
            }
            let (command, crossing) = flow.next();
            due.push((command, crossing, at));
            scheduled_count += 1;
        }
        result.sent += due.len() as u64;
        let (sent_at, answers) = runtime.block_on(submit_due(&mut client, &due));
        result.record(&mut flow, &due, sent_at, answers, Instant::now());
        acked_so_far.fetch_add(due.len() as u64, Ordering::Relaxed);
    }
    result
}

/// Open loop, pipelined: the session sends each order when the pacer releases it (at its
/// scheduled time), without waiting for the answers to earlier ones, each request on a stream
/// of its own, as a broker with orders to send does. Orders released together go in one
/// request (at most `orders_per_request`).
async fn drive_pipelined(
    pipeline: Pipeline,
    mut flow: Flow,
    config: BenchConfig,
    mut released: tokio::sync::mpsc::Receiver<Instant>,
    acked_so_far: Arc<AtomicU64>,
) -> SessionResult {
    let mut result = SessionResult::new();
    let mut in_flight = tokio::task::JoinSet::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            scheduled = released.recv(), if open => {
                let Some(scheduled) = scheduled else {
                    open = false;
                    continue;
                };
                let mut due: Vec<Sent> = Vec::with_capacity(1);
                let (command, crossing) = flow.next();
                due.push((command, crossing, scheduled));
                while due.len() < config.orders_per_request {
                    let Ok(scheduled) = released.try_recv() else { break };
                    let (command, crossing) = flow.next();
                    due.push((command, crossing, scheduled));
                }
                result.sent += due.len() as u64;
                let pipeline = pipeline.clone();
                in_flight.spawn(async move {
                    let commands: Vec<Command> = due.iter().map(|(c, _, _)| *c).collect();
                    let sent_at = Instant::now();
                    let answers = loop {
                        match pipeline.submit_batch(commands.clone()).await {
                            Err(ClientError::Unavailable(_))
                                if sent_at.elapsed() < UNAVAILABLE_RESEND_FOR =>
                            {
                                tokio::time::sleep(UNAVAILABLE_RESEND_PAUSE).await
                            }
                            answers => break answers,
                        }
                    };
                    (due, sent_at, answers, Instant::now())
                });
            }
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                // A request task ends only by returning or panicking (none is aborted).
                let (due, sent_at, answers, answered) =
                    done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                acked_so_far.fetch_add(due.len() as u64, Ordering::Relaxed);
                result.record(&mut flow, &due, sent_at, answers, answered);
            }
        }
    }
    result
}

/// Releases the open loop's orders at their scheduled times, round robin over the sessions,
/// until `stop`. A thread of its own that sleeps with the kernel's timer (tens of
/// microseconds late, where the async runtime's timer rounds up to the next millisecond), so
/// the schedule the latency is measured from is the schedule orders are sent on.
fn pace(
    rate: u64,
    started: Instant,
    sessions: Vec<tokio::sync::mpsc::Sender<Instant>>,
    stop: Arc<AtomicBool>,
) {
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut next = 0u64;
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        let mut at = started + interval.mul_f64(next as f64);
        if at > now {
            std::thread::sleep(at - now);
            continue;
        }
        while at <= now {
            // A full queue means the session is behind: waiting here delays the release but
            // not the scheduled time the order is measured from.
            if sessions[(next % sessions.len() as u64) as usize]
                .blocking_send(at)
                .is_err()
            {
                return;
            }
            next += 1;
            at = started + interval.mul_f64(next as f64);
        }
    }
}

/// The floor: QUIC echo round trips on loopback and fdatasyncs of 64-byte appends.
async fn measure_floor(dir: &Path, samples: usize) -> Result<Percentiles, String> {
    let echo = quic_echo_round_trips(samples).await?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("bench-floor-{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut floor = histogram();
    let record = [7u8; 64];
    for echo_us in echo {
        let start = Instant::now();
        file.write_all(&record).map_err(|e| e.to_string())?;
        file.sync_data().map_err(|e| e.to_string())?;
        floor.saturating_record(echo_us + start.elapsed().as_micros() as u64);
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(Percentiles::of(&floor))
}

async fn quic_echo_round_trips(samples: usize) -> Result<Vec<u64>, String> {
    let scratch = std::env::temp_dir().join(format!("exchange-bench-echo-{}", std::process::id()));
    let dir = scratch.join("certs");
    crate::net::tls::generate(&dir, &[1], &[]).map_err(|e| e.to_string())?;
    let identity = crate::net::tls::load_identity(&dir, 1).map_err(|e| e.to_string())?;
    let ca = crate::net::tls::load_ca(&dir).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&scratch);
    let transport = crate::net::tls::transport(Duration::from_secs(10));
    let server_config = crate::net::tls::broker_server(&identity, Arc::clone(&transport))
        .map_err(|e| e.to_string())?;
    let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().expect("literal"))
        .map_err(|e| e.to_string())?;
    let addr = server.local_addr().map_err(|e| e.to_string())?;
    let echo = tokio::spawn(async move {
        let Some(incoming) = server.accept().await else {
            return;
        };
        let Ok(connection) = incoming.await else {
            return;
        };
        let Ok((mut send, mut recv)) = connection.accept_bi().await else {
            return;
        };
        while let Ok(Some(frame)) = crate::net::frame::read_frame(&mut recv, 1 << 16).await {
            if crate::net::frame::write_frame(&mut send, &frame)
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("literal"))
        .map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(
        crate::net::tls::broker_client(&ca, transport).map_err(|e| e.to_string())?,
    );
    let connection = endpoint
        .connect(addr, "localhost")
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
    let payload = [1u8; 64];
    let mut round_trips = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        crate::net::frame::write_frame(&mut send, &payload)
            .await
            .map_err(|e| e.to_string())?;
        crate::net::frame::read_frame(&mut recv, 1 << 16)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the echo server stopped")?;
        round_trips.push(start.elapsed().as_micros() as u64);
    }
    let _ = send.finish();
    connection.close(0u32.into(), b"done");
    echo.abort();
    Ok(round_trips)
}

pub async fn run(
    args: &ClusterArgs,
    config: &BenchConfig,
    progress: bool,
) -> Result<ClusterBenchReport, String> {
    let floor = measure_floor(&config.floor_dir, 2_000).await?;
    let members = setup(args, config).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    // An open loop with one request out at a time runs each session on a thread of its own,
    // with a runtime of its own that must drive its client's connection.
    let own_runtimes = config.rate > 0 && !config.pipeline;
    let mut clients = Vec::new();
    let mut runtimes = Vec::new();
    for member in &members {
        if own_runtimes {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start a session's runtime: {e}"))?;
            let entered = runtime.enter();
            clients.push(args.client_with_key(&member.key)?);
            drop(entered);
            runtimes.push(runtime);
        } else {
            clients.push(args.client_with_key(&member.key)?);
        }
    }
    let stop_feeds = Arc::new(AtomicBool::new(false));
    let subscribed = Arc::new(AtomicU64::new(0));
    // The subscribers run on threads of their own, so that their CPU can be told apart.
    let subscribers_runtime = BackgroundRuntime(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(SUBSCRIBER_THREADS)
            .on_thread_start({
                let nice = config.subscribers_nice;
                move || {
                    if nice != 0 {
                        crate::node::run::lower_priority(nice);
                    }
                }
            })
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the subscribers' runtime: {e}"))?,
    ));
    let mut readers = Vec::new();
    let mut ws_readers = Vec::new();
    {
        let _entered = subscribers_runtime.0.as_ref().map(|r| r.enter());
        for _ in 0..config.md_subscribers {
            for channel in [Channel::Book, Channel::Trades] {
                let feed = args
                    .client_first_to(config.md_node, &args.required_key("market data")?)?
                    .into_market_feed(config.symbol, channel);
                readers.push(tokio::spawn(read_feed(
                    feed,
                    Arc::clone(&stop_feeds),
                    Arc::clone(&subscribed),
                )));
            }
        }
        if config.ws_subscribers > 0 {
            let url = config
                .ws_url
                .clone()
                .ok_or("--ws-subscribers needs --ws-url ws://HOST:PORT/api/v1/ws")?;
            let name = exchange_domain::Name::numbered("SYM", config.symbol as u64).to_string();
            for _ in 0..config.ws_subscribers {
                ws_readers.push(tokio::spawn(read_ws(
                    url.clone(),
                    name.clone(),
                    Arc::clone(&stop_feeds),
                    Arc::clone(&subscribed),
                )));
            }
        }
    }
    let mut stalled = Vec::new();
    for _ in 0..config.md_stalled {
        // A small window, so that the node soon has nothing it may send ahead and the
        // subscriber falls behind the hub (a large one only delays that).
        let feed = args
            .client_with_stream_window(STALLED_WINDOW_BYTES)?
            .into_market_feed(config.symbol, Channel::Book);
        stalled.push(tokio::spawn(stall_feed(
            feed,
            Arc::clone(&stop_feeds),
            Arc::clone(&subscribed),
        )));
    }
    // Every subscriber has its snapshots before the clock starts: 200 handshakes, logons and
    // snapshots within the run would count against the orders scheduled meanwhile, and the
    // run measures what serving subscribers costs, not what connecting them does.
    let subscribers = readers.len() + ws_readers.len() + stalled.len();
    let deadline = Instant::now() + SUBSCRIBED_WITHIN;
    while subscribed.load(Ordering::Acquire) < subscribers as u64 {
        // A WebSocket subscriber that failed has ended: say why at once.
        if let Some(index) = ws_readers.iter().position(|r| r.is_finished()) {
            let why = match ws_readers.swap_remove(index).await {
                Ok(Err(why)) => why,
                Ok(Ok(_)) => "it ended before it subscribed".into(),
                Err(e) => e.to_string(),
            };
            stop_feeds.store(true, Ordering::Release);
            return Err(format!("a WebSocket subscriber failed: {why}"));
        }
        if Instant::now() >= deadline {
            stop_feeds.store(true, Ordering::Release);
            let mut why = String::new();
            for reader in readers {
                if let Ok(FeedCount {
                    last_error: Some(e),
                    ..
                }) = reader.await
                {
                    why = format!(" (a native subscriber's last error: {e})");
                    break;
                }
            }
            return Err(format!(
                "{} of {subscribers} market data subscribers had their snapshots within {:?}{why}",
                subscribed.load(Ordering::Acquire),
                SUBSCRIBED_WITHIN
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let subscribers_cpu_before = threads_cpu_s(SUBSCRIBER_THREADS);
    let flows: Vec<Flow> = members
        .iter()
        .enumerate()
        .map(|(n, member)| Flow {
            rng: rand::rngs::SmallRng::seed_from_u64(n as u64),
            account: member.account,
            symbol: SymbolId(config.symbol),
            next_client_order_id: 0,
            resting: VecDeque::new(),
            cross_pct: config.cross_pct,
            cancel_pct: config.cancel_pct,
        })
        .collect();
    // Every session connects and logs on before the clock starts: a handshake within the run
    // would count against the orders scheduled meanwhile (it made the p99.9).
    let unreachable = |e: &dyn std::fmt::Display| format!("a session cannot reach the leader: {e}");
    let mut drivers = Vec::new();
    let mut releases = Vec::new();
    let started = if own_runtimes {
        let (ready, connected) = std::sync::mpsc::channel();
        let mut starts = Vec::new();
        let sessions = clients.into_iter().zip(flows).zip(runtimes);
        for (index, ((client, flow), runtime)) in sessions.enumerate() {
            let (start, wait_for_start) = std::sync::mpsc::channel();
            starts.push(start);
            let session = SessionThread {
                index: index as u64,
                runtime,
                ready: ready.clone(),
                start: wait_for_start,
            };
            let (stop, acked, config) = (Arc::clone(&stop), Arc::clone(&acked), config.clone());
            let thread = std::thread::Builder::new()
                .name(format!("bench-session-{index}"))
                .spawn(move || drive_open_loop(client, flow, config, session, stop, acked))
                .map_err(|e| format!("cannot start a session thread: {e}"))?;
            drivers.push(tokio::task::spawn_blocking(move || {
                thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }));
        }
        drop(ready);
        let count = starts.len();
        let all_connected = tokio::task::spawn_blocking(move || {
            (0..count).try_for_each(|_| {
                connected
                    .recv()
                    .unwrap_or_else(|_| Err("a session thread stopped".into()))
            })
        })
        .await
        .map_err(|e| e.to_string())?;
        // On an error the sessions' start senders are dropped here, and they end.
        all_connected.map_err(|e| unreachable(&e))?;
        let started = Instant::now();
        for start in starts {
            let _ = start.send(started);
        }
        started
    } else {
        let mut pipelines = Vec::with_capacity(clients.len());
        for client in &mut clients {
            pipelines.push(client.pipeline().await.map_err(|e| unreachable(&e))?);
        }
        let started = Instant::now();
        for ((client, flow), pipeline) in clients.into_iter().zip(flows).zip(pipelines) {
            let acked = Arc::clone(&acked);
            drivers.push(if config.rate > 0 {
                let (release, released) = tokio::sync::mpsc::channel(RELEASED_QUEUE_MAX);
                releases.push(release);
                tokio::spawn(drive_pipelined(
                    pipeline,
                    flow,
                    config.clone(),
                    released,
                    acked,
                ))
            } else {
                let stop = Arc::clone(&stop);
                tokio::spawn(drive_closed_loop(client, flow, config.clone(), stop, acked))
            });
        }
        started
    };
    let pacer = (config.rate > 0 && config.pipeline).then(|| {
        let (rate, stop) = (config.rate, Arc::clone(&stop));
        std::thread::Builder::new()
            .name("bench-pacer".into())
            .spawn(move || pace(rate, started, releases, stop))
    });
    let pacer = match pacer {
        Some(Ok(pacer)) => Some(pacer),
        Some(Err(e)) => return Err(format!("cannot start the pacing thread: {e}")),
        None => None,
    };
    while started.elapsed() < config.duration {
        tokio::time::sleep(Duration::from_millis(250).min(config.duration)).await;
        if progress {
            let done = (started.elapsed().as_secs_f64() / config.duration.as_secs_f64()).min(1.0);
            let filled = (done * 30.0) as usize;
            eprint!(
                "\r[{}{}] {:>3.0}%  {} answered",
                "#".repeat(filled),
                " ".repeat(30 - filled),
                done * 100.0,
                acked.load(Ordering::Relaxed)
            );
        }
    }
    stop.store(true, Ordering::Release);
    if let Some(pacer) = pacer {
        // Its end closes the sessions' queues, so they finish what is in flight and return.
        tokio::task::spawn_blocking(move || pacer.join())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|_| "the pacing thread panicked".to_string())?;
    }
    let mut ack = histogram();
    let mut send_lag = histogram();
    let mut fill = histogram();
    let (mut sent, mut rejected, mut failed) = (0, 0, 0);
    let mut first_failure = None;
    let mut failures = Failures::default();
    for driver in drivers {
        let result = driver.await.map_err(|e| e.to_string())?;
        ack.add(result.ack).map_err(|e| e.to_string())?;
        send_lag.add(result.send_lag).map_err(|e| e.to_string())?;
        fill.add(result.fill).map_err(|e| e.to_string())?;
        sent += result.sent;
        rejected += result.rejected;
        failed += result.failed;
        first_failure = first_failure.or(result.first_failure);
        failures.add(result.failures);
    }
    // Answers that came after the stop count: their orders were sent within the run.
    let elapsed = started.elapsed();
    stop_feeds.store(true, Ordering::Release);
    let mut market_data = (config.md_subscribers + config.md_stalled + config.ws_subscribers > 0)
        .then(|| MarketDataReport {
            subscribers: config.md_subscribers,
            stalled: config.md_stalled,
            ws_subscribers: config.ws_subscribers,
            subscribers_cpu_s: threads_cpu_s(SUBSCRIBER_THREADS) - subscribers_cpu_before,
            ..MarketDataReport::default()
        });
    if let Some(md) = market_data.as_mut() {
        let mut updates = 0;
        for reader in readers {
            let count = reader.await.map_err(|e| e.to_string())?;
            md.messages += count.messages;
            updates += count.updates;
            md.gaps += count.gaps;
            md.resyncs += count.resyncs;
        }
        for reader in ws_readers {
            let count = reader.await.map_err(|e| e.to_string())??;
            md.messages += count.messages;
            updates += count.updates;
            md.gaps += count.gaps;
            md.resyncs += count.resyncs;
        }
        for stalled in stalled {
            md.stalled_recovered += stalled.await.map_err(|e| e.to_string())? as u64;
        }
        md.subscribers_cpu_share = md.subscribers_cpu_s / elapsed.as_secs_f64();
        md.messages_per_sec = md.messages as f64 / elapsed.as_secs_f64();
        md.updates_per_sec = updates as f64 / elapsed.as_secs_f64();
    }
    if progress {
        eprintln!();
    }
    let acks = Percentiles::of(&ack);
    Ok(ClusterBenchReport {
        sessions: config.sessions,
        rate: config.rate,
        duration_s: elapsed.as_secs_f64(),
        sent,
        acked: ack.len(),
        rejected,
        failed,
        failures,
        first_failure,
        throughput_per_sec: ack.len() as f64 / elapsed.as_secs_f64(),
        p50_us: acks.p50_us,
        p90_us: acks.p90_us,
        p99_us: acks.p99_us,
        p999_us: acks.p999_us,
        max_us: acks.max_us,
        fill: Percentiles::of(&fill),
        send_lag: Percentiles::of(&send_lag),
        floor,
        market_data,
    })
}
