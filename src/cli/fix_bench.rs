//! `exchange-cli fix-bench`: order-to-acknowledgement latency over FIX, as a broker's FIX
//! engine sees it. One FIX session sends NewOrderSingles open loop at a rate; each order's
//! latency runs from its scheduled time (so a late send counts, as in `bench`) to its first
//! ExecutionReport (New, or Rejected). Run it beside `exchange-cli bench --sessions 1` at the
//! same rate on the same cluster to compare the protocols (`scripts/bench-fix.sh` alternates
//! them).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use exchange_domain::{
    AccountId, AdminCommand, Amount, AssetId, Command, Event, Price, Qty, RiskLimits, SymbolId,
    SymbolSpec,
};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::cluster::ClusterArgs;
use super::cluster_bench::Percentiles;
use crate::fix::codec::{tag, utc_timestamp, Builder, Frame, Framer, Header, Message};
use crate::fix::EXCHANGE_COMP_ID;

/// What one run does.
#[derive(Clone, Debug)]
pub struct FixBenchConfig {
    /// The leader's FIX address.
    pub fix: SocketAddr,
    pub comp_id: String,
    /// The broker's API key (Password(554)).
    pub key: String,
    /// The broker's account the orders are for (funded by the run, with the admin key).
    pub account: u64,
    pub symbol: u32,
    /// Orders per second (open loop).
    pub rate: u64,
    pub duration: Duration,
    /// Percent of orders that cross the spread and trade at once.
    pub cross_pct: u8,
}

#[derive(Clone, Debug, Serialize)]
pub struct FixBenchReport {
    pub protocol: &'static str,
    pub rate: u64,
    pub duration_s: f64,
    pub sent: u64,
    /// Orders answered with an ExecutionReport.
    pub acked: u64,
    /// Of them, rejected.
    pub rejected: u64,
    /// Orders with no answer when the run ended.
    pub unanswered: u64,
    pub throughput_per_sec: f64,
    pub ack: Percentiles,
    /// From each order's scheduled time to its send.
    pub send_lag: Percentiles,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// The symbol and the account's funds and limits, with the admin key of `args`.
async fn setup(args: &ClusterArgs, config: &FixBenchConfig) -> Result<String, String> {
    let key = args.required_key("fix-bench (it creates the symbol and funds the account)")?;
    let mut admin = args.client_with_key(&key)?;
    let symbol = SymbolId(config.symbol);
    let name = exchange_domain::Name::numbered("SYM", symbol.0 as u64);
    let account = AccountId(config.account);
    let mut commands = vec![Command::Admin(AdminCommand::AddSymbol(SymbolSpec {
        symbol,
        base: AssetId(1),
        quote: AssetId(2),
        tick_size: Price(1),
        lot_size: Qty(1),
        name,
        price_decimals: 0,
    }))];
    commands.push(Command::Admin(AdminCommand::SetRiskLimits {
        account,
        limits: RiskLimits {
            max_order_qty: Qty(1_000_000),
            max_order_notional: Amount(i64::MAX),
            max_open_orders: u32::MAX,
        },
    }));
    for asset in [AssetId(1), AssetId(2)] {
        commands.push(Command::Admin(AdminCommand::Deposit {
            account,
            asset,
            amount: Amount(1 << 50),
        }));
    }
    let results = admin
        .submit_batch(commands)
        .await
        .map_err(|e| format!("setting up the FIX benchmark: {e}"))?;
    for (i, result) in results.into_iter().enumerate() {
        let outputs = result.map_err(|e| format!("setting up the FIX benchmark: {e}"))?;
        if let Some(reason) = outputs.iter().find_map(|o| match o.event {
            Event::AdminRejected { reason } => Some(reason),
            _ => None,
        }) {
            // The symbol may exist from an earlier run: it is reused.
            if i > 0 || reason != exchange_domain::RejectReason::SymbolExists {
                return Err(format!(
                    "setting up the FIX benchmark: {reason:?} (is account {} the broker's?)",
                    config.account
                ));
            }
        }
    }
    Ok(name.to_string())
}

struct Writer {
    stream: TcpStream,
    comp_id: String,
    next: u64,
}

impl Writer {
    /// The message's bytes with the next number.
    fn frame(&mut self, message: &Builder, sending_time: &str) -> Vec<u8> {
        let bytes = message.finish(&Header {
            sender: &self.comp_id,
            target: EXCHANGE_COMP_ID,
            seq: self.next,
            sending_time,
            poss_dup: false,
            orig_sending_time: None,
        });
        self.next += 1;
        bytes
    }

    fn send(&mut self, message: &Builder) -> Result<(), String> {
        let bytes = self.frame(message, &utc_timestamp(SystemTime::now()));
        self.stream
            .write_all(&bytes)
            .map_err(|e| format!("FIX connection: {e}"))
    }
}

/// Hands each message read to `each`, and `None` when 200 ms pass without one, until `each`
/// says to stop or the connection ends.
fn read_messages(mut stream: TcpStream, mut each: impl FnMut(Option<Message>) -> bool) {
    let mut framer = Framer::default();
    let mut buffer = vec![0u8; 64 * 1024];
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    loop {
        while let Some(frame) = framer.next_frame() {
            if let Frame::Message(bytes) = frame {
                if let Ok(message) = Message::parse(bytes) {
                    if !each(Some(message)) {
                        return;
                    }
                }
            }
        }
        match stream.read(&mut buffer) {
            Ok(0) => return,
            Ok(n) => framer.extend(&buffer[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if !each(None) {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

pub async fn run(args: &ClusterArgs, config: &FixBenchConfig) -> Result<FixBenchReport, String> {
    let symbol = setup(args, config).await?;
    let config = config.clone();
    tokio::task::spawn_blocking(move || drive(&config, &symbol))
        .await
        .map_err(|e| format!("the FIX benchmark failed: {e}"))?
}

fn drive(config: &FixBenchConfig, symbol: &str) -> Result<FixBenchReport, String> {
    let stream = TcpStream::connect_timeout(&config.fix, Duration::from_secs(5))
        .map_err(|e| format!("FIX {}: {e}", config.fix))?;
    let _ = stream.set_nodelay(true);
    let mut writer = Writer {
        stream: stream.try_clone().map_err(|e| e.to_string())?,
        comp_id: config.comp_id.clone(),
        next: 1,
    };
    writer.send(
        &Builder::new("A")
            .field(tag::ENCRYPT_METHOD, 0)
            .field(tag::HEART_BT_INT, 30)
            .field(tag::RESET_SEQ_NUM_FLAG, "Y")
            .field(tag::PASSWORD, &config.key),
    )?;
    // The Logon's answer first.
    let mut logon: Result<(), String> = Err("no answer to the Logon".into());
    let deadline = Instant::now() + Duration::from_secs(5);
    read_messages(stream.try_clone().map_err(|e| e.to_string())?, |m| {
        let Some(m) = m else {
            return Instant::now() < deadline;
        };
        match m.msg_type() {
            "A" => {
                logon = Ok(());
                false
            }
            "5" => {
                logon = Err(format!(
                    "FIX logon refused: {}",
                    m.get(tag::TEXT).unwrap_or("(no reason given)")
                ));
                false
            }
            _ => Instant::now() < deadline,
        }
    });
    logon?;

    // Orders out, by scheduled time; answers in, on a thread of their own.
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let sent = Arc::clone(&sent);
        let stop = Arc::clone(&stop);
        let stream = stream.try_clone().map_err(|e| e.to_string())?;
        std::thread::Builder::new()
            .name("fix-bench-reader".into())
            .spawn(move || {
                let mut ack = histogram();
                let (mut acked, mut rejected) = (0u64, 0u64);
                read_messages(stream, |m| {
                    if let Some(m) = m.filter(|m| m.msg_type() == "8") {
                        let exec_type = m.get(tag::EXEC_TYPE);
                        if matches!(exec_type, Some("0") | Some("8")) {
                            if let Some(id) = m.get(tag::CL_ORD_ID) {
                                let scheduled = sent.lock().unwrap().remove(id);
                                if let Some(at) = scheduled {
                                    let _ = ack.record(at.elapsed().as_micros().max(1) as u64);
                                    acked += 1;
                                    rejected += u64::from(exec_type == Some("8"));
                                }
                            }
                        }
                    }
                    !(stop.load(Ordering::Acquire) && sent.lock().unwrap().is_empty())
                });
                (ack, acked, rejected)
            })
            .map_err(|e| e.to_string())?
    };

    let mut rng = rand::rngs::SmallRng::seed_from_u64(config.account);
    // ClOrdIDs rise across runs: they start at the time in microseconds.
    let first_id = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64);
    let interval = Duration::from_secs_f64(1.0 / config.rate.max(1) as f64);
    let mut send_lag = histogram();
    let started = Instant::now();
    let mut count = 0u64;
    // What fell due meanwhile goes out in one write, as the native bench sends what fell due
    // in one request: a FIX engine under load writes what it has queued together.
    let mut out = Vec::with_capacity(64 * 1024);
    while started.elapsed() < config.duration {
        let now = Instant::now();
        let first_due = started + interval.mul_f64(count as f64);
        if first_due > now {
            std::thread::sleep(first_due - now);
            continue;
        }
        let sending_time = utc_timestamp(SystemTime::now());
        let mut due_now = Vec::new();
        loop {
            let due = started + interval.mul_f64(count as f64);
            if due > now || due_now.len() == 512 {
                break;
            }
            let crossing = rng.gen_range(0..100) < config.cross_pct;
            let buy = rng.gen_bool(0.5);
            let (side, price, tif) = match (crossing, buy) {
                (true, true) => ("1", 11_000, "3"),
                (true, false) => ("2", 9_000, "3"),
                (false, true) => ("1", rng.gen_range(9_000..10_000), "1"),
                (false, false) => ("2", rng.gen_range(10_001..11_000), "1"),
            };
            let id = (first_id + count).to_string();
            let message = Builder::new("D")
                .field(tag::CL_ORD_ID, &id)
                .field(tag::ACCOUNT, config.account)
                .field(tag::SYMBOL, symbol)
                .field(tag::SIDE, side)
                .field(tag::ORDER_QTY, 1)
                .field(tag::ORD_TYPE, "2")
                .field(tag::PRICE, price)
                .field(tag::TIME_IN_FORCE, tif)
                .field(tag::TRANSACT_TIME, &sending_time);
            out.extend(writer.frame(&message, &sending_time));
            due_now.push((id, due));
            count += 1;
        }
        {
            let mut sent = sent.lock().unwrap();
            for (id, due) in due_now.iter() {
                sent.insert(id.clone(), *due);
            }
        }
        for (_, due) in &due_now {
            let _ = send_lag.record(due.elapsed().as_micros().max(1) as u64);
        }
        writer
            .stream
            .write_all(&out)
            .map_err(|e| format!("FIX connection: {e}"))?;
        out.clear();
    }
    let duration = started.elapsed();
    // The stragglers' answers, for up to 2 s.
    let wait_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < wait_until && !sent.lock().unwrap().is_empty() {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Release);
    let unanswered = sent.lock().unwrap().len() as u64;
    sent.lock().unwrap().clear();
    let _ = writer.send(&Builder::new("5"));
    let (ack, acked, rejected) = reader
        .join()
        .map_err(|_| "the FIX benchmark's reader failed".to_string())?;
    Ok(FixBenchReport {
        protocol: "fix",
        rate: config.rate,
        duration_s: duration.as_secs_f64(),
        sent: count,
        acked,
        rejected,
        unanswered,
        throughput_per_sec: acked as f64 / duration.as_secs_f64(),
        ack: Percentiles::of(&ack),
        send_lag: Percentiles::of(&send_lag),
    })
}
