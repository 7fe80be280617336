//! `exchange-cli bench`: a closed-loop load against a running cluster.
//!
//! N clients (each its own QUIC connection) send orders one after another (or
//! `--orders-per-request` at a time, in one frame) for a fixed time; each order's time from
//! send to acknowledgement (committed on a majority and applied) goes into an HDR histogram. The orders rest on both sides of a wide book, with a crossing order
//! now and then, over one account per client, all created and funded before the run.
//! (The brokers issue extends this with target rates, coordinated-omission correction and an
//! order mix.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use exchange_domain::{
    AccountId, AdminCommand, Amount, AssetId, ClientOrderId, Command, Event, NewOrder, OrderType,
    Price, Qty, RiskLimits, SelfTradePrevention, Side, SymbolId, SymbolSpec, TimeInForce,
};
use hdrhistogram::Histogram;
use serde::Serialize;

use super::cluster::ClusterArgs;

#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub clients: u64,
    pub duration: Duration,
    /// The symbol to create and trade (a fresh one per run keeps runs independent).
    pub symbol: u32,
    /// Account ids start here.
    pub first_account: u64,
    /// Orders each client sends per request (1: one at a time; more: a batch per frame).
    pub orders_per_request: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClusterBenchReport {
    pub clients: u64,
    pub duration_s: f64,
    pub sent: u64,
    pub acked: u64,
    pub rejected: u64,
    pub failed: u64,
    pub throughput_per_sec: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

fn order(account: u64, symbol: u32, i: i64) -> Command {
    let (side, price) = match i % 10 {
        0 => (Side::Buy, 10_100),
        n if n % 2 == 0 => (Side::Buy, 9_000 + (i % 500)),
        _ => (Side::Sell, 10_500 + (i % 500)),
    };
    Command::NewOrder(NewOrder {
        account: AccountId(account),
        symbol: SymbolId(symbol),
        client_order_id: ClientOrderId(i as u64),
        side,
        order_type: OrderType::Limit,
        time_in_force: TimeInForce::Gtc,
        price: Price(price),
        qty: Qty(1),
        self_trade_prevention: SelfTradePrevention::None,
    })
}

async fn setup(args: &ClusterArgs, config: &BenchConfig) -> Result<(), String> {
    let mut client = args.client()?;
    let symbol = SymbolId(config.symbol);
    let mut commands = vec![Command::Admin(AdminCommand::AddSymbol(SymbolSpec {
        symbol,
        base: AssetId(1),
        quote: AssetId(2),
        tick_size: Price(1),
        lot_size: Qty(1),
        price_band_bps: 0,
        reference_price: Price(0),
    }))];
    for account in config.first_account..config.first_account + config.clients {
        let account = AccountId(account);
        commands.push(Command::Admin(AdminCommand::CreateAccount {
            account,
            owner: exchange_domain::BrokerId::OPERATOR,
        }));
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
    }
    for command in commands {
        let outputs = client.submit(command).await.map_err(|e| e.to_string())?;
        if let Some(reason) = outputs.iter().find_map(|o| match o.event {
            Event::AdminRejected { reason } => Some(reason),
            _ => None,
        }) {
            return Err(format!(
                "setting up the benchmark: {reason:?} (use another --symbol and --first-account?)"
            ));
        }
    }
    Ok(())
}

pub async fn run(
    args: &ClusterArgs,
    config: &BenchConfig,
    progress: bool,
) -> Result<ClusterBenchReport, String> {
    setup(args, config).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut drivers = Vec::new();
    for n in 0..config.clients {
        let account = config.first_account + n;
        let symbol = config.symbol;
        let per_request = config.orders_per_request;
        let stop = Arc::clone(&stop);
        let mut client = args.client()?;
        drivers.push(tokio::spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("static bounds");
            let (mut sent, mut rejected, mut failed) = (0u64, 0u64, 0u64);
            let mut i = 0i64;
            while !stop.load(Ordering::Acquire) {
                let start = Instant::now();
                let orders: Vec<Command> = (0..per_request)
                    .map(|_| {
                        i += 1;
                        order(account, symbol, i)
                    })
                    .collect();
                sent += orders.len() as u64;
                let results = if per_request == 1 {
                    client
                        .submit(orders[0])
                        .await
                        .map(|outputs| vec![Ok(outputs)])
                } else {
                    client.submit_batch(orders).await
                };
                let elapsed = start.elapsed().as_micros() as u64;
                match results {
                    Ok(results) => {
                        for result in results {
                            match result {
                                Ok(outputs) => {
                                    if outputs
                                        .iter()
                                        .any(|o| matches!(o.event, Event::Rejected { .. }))
                                    {
                                        rejected += 1;
                                    }
                                    histogram.saturating_record(elapsed);
                                }
                                Err(_) => failed += 1,
                            }
                        }
                    }
                    Err(_) => failed += per_request as u64,
                }
            }
            (histogram, sent, rejected, failed)
        }));
    }
    let started = Instant::now();
    while started.elapsed() < config.duration {
        tokio::time::sleep(Duration::from_millis(250).min(config.duration)).await;
        if progress {
            let done = started.elapsed().as_secs_f64() / config.duration.as_secs_f64();
            let filled = ((done.min(1.0)) * 30.0) as usize;
            eprint!(
                "\r[{}{}] {:>3.0}%",
                "#".repeat(filled),
                " ".repeat(30 - filled),
                done.min(1.0) * 100.0
            );
        }
    }
    stop.store(true, Ordering::Release);
    let elapsed = started.elapsed();
    if progress {
        eprintln!();
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("static bounds");
    let (mut sent, mut rejected, mut failed) = (0, 0, 0);
    for driver in drivers {
        let (histogram, s, r, f) = driver.await.map_err(|e| e.to_string())?;
        all.add(histogram).map_err(|e| e.to_string())?;
        sent += s;
        rejected += r;
        failed += f;
    }
    Ok(ClusterBenchReport {
        clients: config.clients,
        duration_s: elapsed.as_secs_f64(),
        sent,
        acked: all.len(),
        rejected,
        failed,
        throughput_per_sec: all.len() as f64 / elapsed.as_secs_f64(),
        p50_us: all.value_at_quantile(0.5),
        p90_us: all.value_at_quantile(0.9),
        p99_us: all.value_at_quantile(0.99),
        p999_us: all.value_at_quantile(0.999),
        max_us: all.max(),
    })
}
