//! `engine-replay`: runs a CSV of orders and cancels through the engine on one symbol.
//!
//! The CSV has the header `op,order_id,account,side,price,qty,tif`:
//! - `op`: `new` or `cancel`;
//! - `order_id`: the file's own id of the order (a cancel names the order it cancels);
//! - `account`: a number; each account is created and funded before the run, so no order is
//!   refused for funds (a cancel may leave it empty: the order's owner is used);
//! - `side`: `buy` or `sell`; `price` and `qty`: integers in the symbol's units;
//! - `tif`: `gtc`, `ioc`, `fok`, `post_only`, or `market` (an IOC market order whose `price` is
//!   its protection price).
//!
//! A cancel may leave side, price, qty and tif empty. Risk limits do not bind and self-trade
//! prevention is off, so the result is the bare matching of the stream.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use exchange_domain::{
    AccountId, AdminCommand, Amount, AssetId, Cancel, ClientOrderId, Command, Event, Input,
    Liquidity, NewOrder, OrderId, OrderType, Output, Price, Qty, RejectReason, SelfTradePrevention,
    Side, SymbolId, SymbolSpec, TimeInForce, REJECT_REASONS,
};
use exchange_engine::{Engine, EngineConfig, EventSink};
use serde::{Deserialize, Serialize};

pub const REPLAY_SYMBOL: SymbolId = SymbolId(1);
pub const REPLAY_BASE: AssetId = AssetId(1);
pub const REPLAY_QUOTE: AssetId = AssetId(2);

/// One row of the replay CSV, as written in the file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Row {
    pub op: Op,
    pub order_id: u64,
    pub account: Option<u64>,
    pub side: Option<CsvSide>,
    pub price: Option<i64>,
    pub qty: Option<i64>,
    pub tif: Option<CsvTif>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    New,
    Cancel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CsvSide {
    Buy,
    Sell,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CsvTif {
    Gtc,
    Ioc,
    Fok,
    PostOnly,
    Market,
}

#[derive(Debug)]
pub enum ReplayError {
    Io(std::io::Error),
    /// A row that cannot be read or lacks a field its op needs. `line` is 1-based, header included.
    Row {
        line: u64,
        message: String,
    },
    /// The engine's state failed its consistency check after the run: a bug, reported loudly.
    Invariant(exchange_engine::InvariantViolation),
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayError::Io(e) => write!(f, "{e}"),
            ReplayError::Row { line, message } => write!(f, "line {line}: {message}"),
            ReplayError::Invariant(v) => write!(f, "{v}"),
        }
    }
}

impl std::error::Error for ReplayError {}

/// Settings of the replayed symbol.
#[derive(Clone, Copy, Debug)]
pub struct ReplayConfig {
    pub tick_size: i64,
    pub lot_size: i64,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            tick_size: 1,
            lot_size: 1,
        }
    }
}

/// Reads and checks every row. Reading is not part of the measured work.
pub fn read_rows(path: &Path) -> Result<Vec<Row>, ReplayError> {
    let file = std::fs::File::open(path).map_err(ReplayError::Io)?;
    parse_rows(file)
}

pub fn parse_rows(reader: impl std::io::Read) -> Result<Vec<Row>, ReplayError> {
    let mut csv = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(reader);
    let header = csv
        .headers()
        .map_err(|e| row_error(1, e.to_string()))?
        .clone();
    let expected = ["op", "order_id", "account", "side", "price", "qty", "tif"];
    if header.iter().collect::<Vec<_>>() != expected {
        return Err(row_error(
            1,
            format!(
                "header is {:?}, expected {}",
                header.iter().collect::<Vec<_>>(),
                expected.join(",")
            ),
        ));
    }
    let mut rows = Vec::new();
    for (index, record) in csv.deserialize::<Row>().enumerate() {
        let line = index as u64 + 2;
        let row = record.map_err(|e| row_error(line, e.to_string()))?;
        if row.op == Op::New {
            let missing: Vec<&str> = [
                ("account", row.account.is_none()),
                ("side", row.side.is_none()),
                ("price", row.price.is_none()),
                ("qty", row.qty.is_none()),
                ("tif", row.tif.is_none()),
            ]
            .iter()
            .filter(|(_, missing)| *missing)
            .map(|(name, _)| *name)
            .collect();
            if !missing.is_empty() {
                return Err(row_error(
                    line,
                    format!("a new order needs {}", missing.join(", ")),
                ));
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

fn row_error(line: u64, message: String) -> ReplayError {
    ReplayError::Row { line, message }
}

/// The commands of a replay: the setup (symbol, accounts, funds) and the rows themselves.
pub struct Prepared {
    pub setup: Vec<Input>,
    pub commands: Vec<Input>,
}

/// Turns rows into engine inputs. Order ids are the sequence numbers of the rows that create
/// them, so a cancel's target is known before the run.
pub fn prepare(rows: &[Row], config: ReplayConfig) -> Prepared {
    let mut accounts: Vec<u64> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for row in rows {
        if let Some(account) = row.account {
            if seen.insert(account) {
                accounts.push(account);
            }
        }
    }
    // Fund everyone equally with as much as the asset totals allow: no funds reject can happen.
    let funding = i64::MAX / (accounts.len() as i64 + 1);
    let mut setup = vec![Command::Admin(AdminCommand::AddSymbol(SymbolSpec {
        symbol: REPLAY_SYMBOL,
        base: REPLAY_BASE,
        quote: REPLAY_QUOTE,
        tick_size: Price(config.tick_size),
        lot_size: Qty(config.lot_size),
        name: exchange_domain::Name::numbered("SYM", REPLAY_SYMBOL.0 as u64),
        price_decimals: 0,
    }))];
    for &account in &accounts {
        let account = AccountId(account);
        setup.push(Command::Admin(AdminCommand::CreateAccount {
            account,
            owner: exchange_domain::BrokerId::OPERATOR,
        }));
        for asset in [REPLAY_BASE, REPLAY_QUOTE] {
            setup.push(Command::Admin(AdminCommand::Deposit {
                account,
                asset,
                amount: Amount(funding),
            }));
        }
    }
    let first_row_seq = setup.len() as u64 + 1;
    // File order id -> (engine order id, owner).
    let mut ids: BTreeMap<u64, (OrderId, u64)> = BTreeMap::new();
    let mut commands = Vec::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        let seq = first_row_seq + index as u64;
        let command = match row.op {
            Op::New => {
                let account = row.account.unwrap_or_default();
                ids.insert(row.order_id, (OrderId(seq), account));
                let (order_type, time_in_force) = match row.tif.unwrap_or(CsvTif::Gtc) {
                    CsvTif::Gtc => (OrderType::Limit, TimeInForce::Gtc),
                    CsvTif::Ioc => (OrderType::Limit, TimeInForce::Ioc),
                    CsvTif::Fok => (OrderType::Limit, TimeInForce::Fok),
                    CsvTif::PostOnly => (OrderType::Limit, TimeInForce::PostOnly),
                    CsvTif::Market => (OrderType::Market, TimeInForce::Ioc),
                };
                Command::NewOrder(NewOrder {
                    account: AccountId(account),
                    symbol: REPLAY_SYMBOL,
                    client_order_id: ClientOrderId(row.order_id),
                    side: match row.side.unwrap_or(CsvSide::Buy) {
                        CsvSide::Buy => Side::Buy,
                        CsvSide::Sell => Side::Sell,
                    },
                    order_type,
                    time_in_force,
                    price: Price(row.price.unwrap_or_default()),
                    qty: Qty(row.qty.unwrap_or_default()),
                    self_trade_prevention: SelfTradePrevention::None,
                })
            }
            Op::Cancel => {
                // An id never created maps to order 0, which no order has: the engine rejects it.
                let (order_id, owner) = ids.get(&row.order_id).copied().unwrap_or((OrderId(0), 0));
                Command::Cancel(Cancel {
                    account: AccountId(row.account.unwrap_or(owner)),
                    order_id,
                })
            }
        };
        commands.push(command);
    }
    let stamp = |(index, command): (usize, Command)| Input {
        seq: index as u64 + 1,
        timestamp_ns: 0,
        broker: exchange_domain::BrokerId::OPERATOR,
        command,
    };
    let setup: Vec<Input> = setup.into_iter().enumerate().map(stamp).collect();
    let commands = commands
        .into_iter()
        .enumerate()
        .map(|(i, command)| stamp((i + setup.len(), command)))
        .collect();
    Prepared { setup, commands }
}

/// Counts what a replay produced, while it runs.
#[derive(Clone, Debug)]
pub struct ReplayStats {
    pub accepted: u64,
    pub rejected: u64,
    pub cancelled: u64,
    pub trades: u64,
    pub volume: i128,
    pub notional: i128,
    /// Counts per reason, indexed as `RejectReason::ALL`: nothing allocated per reject while
    /// the replay is timed.
    pub rejects: [u64; REJECT_REASONS],
}

impl Default for ReplayStats {
    fn default() -> Self {
        ReplayStats {
            accepted: 0,
            rejected: 0,
            cancelled: 0,
            trades: 0,
            volume: 0,
            notional: 0,
            rejects: [0; REJECT_REASONS],
        }
    }
}

impl EventSink for ReplayStats {
    #[inline]
    fn emit(&mut self, output: &Output) {
        match output.event {
            Event::Accepted { .. } => self.accepted += 1,
            Event::Cancelled { .. } => self.cancelled += 1,
            Event::Execution {
                liquidity: Liquidity::Taker,
                price,
                qty,
                ..
            } => {
                self.trades += 1;
                self.volume += qty.0 as i128;
                self.notional += price.0 as i128 * qty.0 as i128;
            }
            Event::Rejected { reason, .. } | Event::CancelRejected { reason, .. } => {
                self.rejected += 1;
                self.rejects[reason as usize] += 1;
            }
            _ => {}
        }
    }
}

/// What `engine-replay --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    pub commands: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub cancelled: u64,
    pub trades: u64,
    pub volume: i128,
    pub notional: i128,
    pub best_bid: Option<i64>,
    pub best_ask: Option<i64>,
    pub open_orders: u32,
    /// The engine's running output hash, as 16 hex digits.
    pub output_hash: String,
    pub rejects_by_reason: BTreeMap<String, u64>,
    pub elapsed_ms: f64,
    /// Commands over the engine's time alone: the file was read and prepared before.
    pub commands_per_sec: f64,
}

/// Runs a prepared replay and reports. `events` receives every output of the rows, if given.
pub fn run(
    prepared: &Prepared,
    events: Option<&mut Vec<Output>>,
) -> Result<ReplayReport, ReplayError> {
    let mut engine = Engine::new(EngineConfig::unbounded());
    let mut setup_sink = exchange_engine::DiscardSink;
    for input in &prepared.setup {
        engine.process(input, &mut setup_sink);
    }
    let mut stats = ReplayStats::default();
    let started = Instant::now();
    match events {
        None => {
            for input in &prepared.commands {
                engine.process(input, &mut stats);
            }
        }
        Some(events) => {
            let mut both = Tee(&mut stats, events);
            for input in &prepared.commands {
                engine.process(input, &mut both);
            }
        }
    }
    let elapsed = started.elapsed();
    engine.check_invariants().map_err(ReplayError::Invariant)?;
    let commands = prepared.commands.len() as u64;
    Ok(ReplayReport {
        commands,
        accepted: stats.accepted,
        rejected: stats.rejected,
        cancelled: stats.cancelled,
        trades: stats.trades,
        volume: stats.volume,
        notional: stats.notional,
        best_bid: engine.best(REPLAY_SYMBOL, Side::Buy).map(|(p, _)| p.0),
        best_ask: engine.best(REPLAY_SYMBOL, Side::Sell).map(|(p, _)| p.0),
        open_orders: engine.open_order_count(),
        output_hash: format!("{:016x}", engine.output_hash()),
        rejects_by_reason: RejectReason::ALL
            .iter()
            .zip(stats.rejects)
            .filter(|(_, count)| *count > 0)
            .map(|(reason, count)| (format!("{reason:?}"), count))
            .collect(),
        elapsed_ms: elapsed.as_secs_f64() * 1e3,
        commands_per_sec: commands as f64 / elapsed.as_secs_f64().max(1e-9),
    })
}

struct Tee<'a>(&'a mut ReplayStats, &'a mut Vec<Output>);

impl EventSink for Tee<'_> {
    fn emit(&mut self, output: &Output) {
        self.0.emit(output);
        self.1.push(*output);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(csv: &str) -> ReplayReport {
        let rows = parse_rows(csv.as_bytes()).expect("parse");
        run(&prepare(&rows, ReplayConfig::default()), None).expect("run")
    }

    #[test]
    fn a_small_replay_counts_trades_volume_and_notional() {
        let report = replay(
            "op,order_id,account,side,price,qty,tif\n\
             new,1,10,sell,101,5,gtc\n\
             new,2,10,sell,100,5,gtc\n\
             new,3,20,buy,101,7,ioc\n\
             new,4,20,buy,99,1,post_only\n\
             cancel,1,,,,,\n\
             cancel,77,,,,,\n\
             new,5,30,buy,200,1,market\n",
        );
        assert_eq!(report.commands, 7);
        assert_eq!(report.trades, 2);
        assert_eq!(report.volume, 7);
        assert_eq!(report.notional, 5 * 100 + 2 * 101);
        assert_eq!(report.best_bid, Some(99));
        assert_eq!(report.best_ask, None);
        assert_eq!(report.rejected, 1, "the cancel of an unknown id");
        assert_eq!(report.rejects_by_reason.get("UnknownOrder"), Some(&1));
    }

    #[test]
    fn the_same_file_gives_the_same_hash() {
        let csv =
            "op,order_id,account,side,price,qty,tif\nnew,1,1,sell,5,5,gtc\nnew,2,2,buy,5,2,gtc\n";
        assert_eq!(replay(csv).output_hash, replay(csv).output_hash);
    }

    #[test]
    fn bad_rows_name_their_line() {
        let cases = [
            (
                "op,order_id,account,side,price,qty,tif\nnew,1,1,bye,5,5,gtc\n",
                2,
            ),
            (
                "op,order_id,account,side,price,qty,tif\nnew,1,1,buy,5,5,gtc\nnew,2,1,buy,,5,gtc\n",
                3,
            ),
            (
                "op,order_id,account,side,price,qty,tif\nnew,x,1,buy,5,5,gtc\n",
                2,
            ),
            ("op,id\nnew,1\n", 1),
        ];
        for (csv, expected_line) in cases {
            match parse_rows(csv.as_bytes()) {
                Err(ReplayError::Row { line, .. }) => assert_eq!(line, expected_line, "{csv}"),
                other => panic!("{csv}: {other:?}"),
            }
        }
    }
}
