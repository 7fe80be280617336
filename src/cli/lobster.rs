//! Replays a LOBSTER message file through the engine and compares the engine's visible price
//! levels with LOBSTER's order book file, row by row.
//!
//! LOBSTER (lobsterdata.com) reconstructs NASDAQ books. Its message file holds, per event:
//! time, type, order id, size, price ($ x 10000) and direction (1 buy, -1 sell; for an
//! execution, the side of the resting order). Types are mapped as:
//! - 1 (new limit order): a post-only limit order, since a submission never trades on entry;
//! - 2 (partial cancel): a cancel-replace that reduces the order's quantity (keeps priority);
//! - 3 (delete): a cancel;
//! - 4 (visible execution): an incoming IOC order of the opposite side at the resting order's
//!   price and size, which must meet the named order first in its queue;
//! - 5 (hidden execution): ignored, it changes no visible level;
//! - 7 (halt indicator): price -1 halts the symbol, 0 or 1 resumes it.
//!
//! The files only cover the requested levels, so some liquidity is invisible to them: orders
//! resting before the file starts, and every event at prices outside the visible range at the
//! time. Two rules reconcile this, and only this:
//! - an event on an order id never seen acts on the level's pre-existing liquidity, which the
//!   replay keeps as one synthetic order at the front of the level (it is older than any order
//!   seen in the file);
//! - after each event, a price whose quantity differs from the book file is reconciled (seeded
//!   at the front, or trimmed from the back) only if that price was outside the previous row's
//!   visible levels: its content was unknowable. Seeds go to the front of the queue, trims
//!   take the oldest orders first. A difference at a price that was visible is a real
//!   mismatch, and is counted and reported.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use exchange_domain::{
    AccountId, AdminCommand, Amount, AssetId, Cancel, CancelReplace, ClientOrderId, Command, Event,
    Input, Liquidity, NewOrder, OrderId, OrderType, Output, Price, Qty, SelfTradePrevention, Side,
    SymbolId, SymbolSpec, TimeInForce,
};
use exchange_engine::{Engine, EngineConfig};
use serde::Serialize;

const SYMBOL: SymbolId = SymbolId(1);
const MAKERS: AccountId = AccountId(1);
const TAKERS: AccountId = AccountId(2);
/// LOBSTER prices are $ x 10000 and US equities tick in cents.
const TICK: i64 = 100;
/// LOBSTER's placeholders for empty levels.
const EMPTY_ASK: i64 = 9_999_999_999;
const EMPTY_BID: i64 = -9_999_999_999;
/// Reconciling one row stops after this many rounds; each round removes or fills at least one
/// level, and a book has far fewer stale levels than this.
const RECONCILE_ROUNDS_MAX: usize = 10_000;

#[derive(Clone, Copy, Debug)]
struct Message {
    kind: u8,
    order_id: u64,
    size: i64,
    price: i64,
    direction: i64,
}

/// One row of the book file: per side, the visible (price, size) levels, best first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct BookRow {
    asks: Vec<(i64, i64)>,
    bids: Vec<(i64, i64)>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LobsterReport {
    pub levels: usize,
    pub rows: u64,
    /// Rows whose visible levels equal the engine's with no reconciliation.
    pub rows_matched: u64,
    /// Rows that matched after reconciling prices that were outside the visible range before.
    pub rows_matched_after_reveal: u64,
    /// Rows that differ at a price that was visible: real mismatches.
    pub rows_mismatched: u64,
    /// Rows whose visible prices differ from the previous row's: the only rows where liquidity
    /// the file could not show comes into view, so the most that may need reconciling.
    pub rows_levels_moved: u64,
    pub submissions: u64,
    pub partial_cancels: u64,
    pub deletions: u64,
    pub executions: u64,
    /// Visible executions whose named order was not first in its queue in the engine.
    pub executions_not_first: u64,
    pub hidden_executions_ignored: u64,
    pub halts: u64,
    /// Events naming an order the file never showed, applied to pre-existing liquidity.
    pub events_on_unseen_orders: u64,
    /// Cancels whose named order held less than the cancelled size in the engine, because an
    /// earlier reconciliation guessed wrong which invisible order had gone; the rest came off
    /// the level's oldest orders.
    pub cancels_reattributed: u64,
    /// Levels seeded or trimmed to reconcile liquidity the file could not show.
    pub reveals: u64,
    /// Commands the engine rejected (none are expected).
    pub engine_rejects: u64,
    pub first_mismatches: Vec<String>,
    pub output_hash: String,
}

/// Rows between two checks of the engine's invariants during a replay.
const INVARIANT_CHECK_EVERY: usize = 1_000;

#[derive(Debug)]
pub enum LobsterError {
    Io(String, std::io::Error),
    Parse {
        file: String,
        line: usize,
        message: String,
    },
    RowCount {
        messages: usize,
        books: usize,
    },
    /// The engine broke one of its invariants during the replay: a bug, never the data's.
    Invariant {
        row: usize,
        violation: exchange_engine::InvariantViolation,
    },
}

impl std::fmt::Display for LobsterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LobsterError::Io(file, e) => write!(f, "{file}: {e}"),
            LobsterError::Parse {
                file,
                line,
                message,
            } => write!(f, "{file} line {line}: {message}"),
            LobsterError::RowCount { messages, books } => write!(
                f,
                "the message file has {messages} rows and the book file {books}: they must pair up"
            ),
            LobsterError::Invariant { row, violation } => {
                write!(f, "the engine broke an invariant at row {row}: {violation}")
            }
        }
    }
}

impl std::error::Error for LobsterError {}

/// Reads numeric CSV rows, skipping a header line if there is one.
fn read_numeric_rows(path: &Path) -> Result<Vec<Vec<f64>>, LobsterError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| LobsterError::Io(name.clone(), e))?;
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let fields: Result<Vec<f64>, _> =
            line.split(',').map(|f| f.trim().parse::<f64>()).collect();
        match fields {
            Ok(fields) => rows.push(fields),
            Err(_) if index == 0 => continue,
            Err(e) => {
                return Err(LobsterError::Parse {
                    file: name,
                    line: index + 1,
                    message: e.to_string(),
                })
            }
        }
    }
    Ok(rows)
}

fn read_messages(path: &Path) -> Result<Vec<Message>, LobsterError> {
    let rows = read_numeric_rows(path)?;
    rows.iter()
        .enumerate()
        .map(|(index, r)| {
            if r.len() < 6 {
                return Err(LobsterError::Parse {
                    file: path.display().to_string(),
                    line: index + 1,
                    message: format!("expected 6 columns, found {}", r.len()),
                });
            }
            Ok(Message {
                kind: r[1] as u8,
                order_id: r[2] as u64,
                size: r[3] as i64,
                price: r[4] as i64,
                direction: r[5] as i64,
            })
        })
        .collect()
}

fn read_books(path: &Path, levels: usize) -> Result<Vec<BookRow>, LobsterError> {
    let rows = read_numeric_rows(path)?;
    rows.iter()
        .enumerate()
        .map(|(index, r)| {
            if r.len() != 4 * levels {
                return Err(LobsterError::Parse {
                    file: path.display().to_string(),
                    line: index + 1,
                    message: format!(
                        "expected {} columns for {levels} levels, found {}",
                        4 * levels,
                        r.len()
                    ),
                });
            }
            let mut row = BookRow::default();
            for level in r.chunks(4) {
                let (ask, ask_size, bid, bid_size) = (
                    level[0] as i64,
                    level[1] as i64,
                    level[2] as i64,
                    level[3] as i64,
                );
                if ask != EMPTY_ASK && ask_size > 0 {
                    row.asks.push((ask, ask_size));
                }
                if bid != EMPTY_BID && bid_size > 0 {
                    row.bids.push((bid, bid_size));
                }
            }
            Ok(row)
        })
        .collect()
}

/// The engine plus the mapping from LOBSTER's order ids to the engine's.
struct Replay {
    engine: Engine,
    seq: u64,
    ids: HashMap<u64, OrderId>,
    file_ids: HashMap<OrderId, u64>,
    /// Per (side, price): the synthetic order holding the level's pre-existing liquidity.
    hidden: HashMap<(Side, i64), OrderId>,
    outputs: Vec<Output>,
    rejects: u64,
}

impl Replay {
    fn new() -> Self {
        let mut replay = Replay {
            engine: Engine::new(EngineConfig::unbounded()),
            seq: 0,
            ids: HashMap::new(),
            file_ids: HashMap::new(),
            hidden: HashMap::new(),
            outputs: Vec::new(),
            rejects: 0,
        };
        replay.run(Command::Admin(AdminCommand::AddSymbol(SymbolSpec {
            symbol: SYMBOL,
            base: AssetId(1),
            quote: AssetId(2),
            tick_size: Price(TICK),
            lot_size: Qty(1),
            name: exchange_domain::Name::numbered("SYM", SYMBOL.0 as u64),
            price_decimals: 0,
        })));
        for account in [MAKERS, TAKERS] {
            replay.run(Command::Admin(AdminCommand::CreateAccount {
                account,
                owner: exchange_domain::BrokerId::OPERATOR,
            }));
            for asset in [AssetId(1), AssetId(2)] {
                replay.run(Command::Admin(AdminCommand::Deposit {
                    account,
                    asset,
                    amount: Amount(i64::MAX / 4),
                }));
            }
        }
        replay
    }

    fn run(&mut self, command: Command) -> OrderId {
        self.seq += 1;
        self.outputs.clear();
        let input = Input {
            seq: self.seq,
            timestamp_ns: 0,
            broker: exchange_domain::BrokerId::OPERATOR,
            command,
        };
        self.engine.process(&input, &mut self.outputs);
        self.rejects += self
            .outputs
            .iter()
            .filter(|o| o.event.reject_reason().is_some())
            .count() as u64;
        OrderId(self.seq)
    }

    fn rest(&mut self, side: Side, price: i64, qty: i64, file_id: Option<u64>) -> OrderId {
        let id = self.run(Command::NewOrder(NewOrder {
            account: MAKERS,
            symbol: SYMBOL,
            client_order_id: ClientOrderId(file_id.unwrap_or(0)),
            side,
            order_type: OrderType::Limit,
            time_in_force: TimeInForce::PostOnly,
            price: Price(price),
            qty: Qty(qty),
            self_trade_prevention: SelfTradePrevention::None,
        }));
        if let Some(file_id) = file_id {
            self.ids.insert(file_id, id);
            self.file_ids.insert(id, file_id);
        }
        id
    }

    /// Reduces an order by `size`, cancelling it when nothing would be left.
    fn reduce(&mut self, order_id: OrderId, size: i64) {
        let Some(order) = self.engine.open_order(order_id) else {
            return;
        };
        if size >= order.leaves.0 {
            self.run(Command::Cancel(Cancel {
                account: MAKERS,
                order_id,
            }));
        } else {
            self.run(Command::CancelReplace(CancelReplace {
                account: MAKERS,
                order_id,
                price: order.price,
                qty: Qty(order.leaves.0 - size),
            }));
        }
    }

    /// Adds pre-existing liquidity at the front of a level: the orders already there are
    /// re-entered behind it, in their order (keeping their ids' mapping).
    fn seed_front(&mut self, side: Side, price: i64, qty: i64) {
        let queue = self.engine.queue(SYMBOL, side, Price(price));
        let mut behind = Vec::new();
        for id in queue {
            let leaves = self.engine.open_order(id).map(|o| o.leaves.0).unwrap_or(0);
            if self.hidden.get(&(side, price)) == Some(&id) {
                // Merge the existing synthetic liquidity into the new front order.
                self.run(Command::Cancel(Cancel {
                    account: MAKERS,
                    order_id: id,
                }));
                behind.push((None, leaves, true));
                continue;
            }
            self.run(Command::Cancel(Cancel {
                account: MAKERS,
                order_id: id,
            }));
            behind.push((self.file_ids.remove(&id), leaves, false));
        }
        let merged: i64 = behind.iter().filter(|b| b.2).map(|b| b.1).sum();
        let front = self.rest(side, price, qty + merged, None);
        self.hidden.insert((side, price), front);
        for (file_id, leaves, synthetic) in behind {
            if !synthetic {
                self.rest(side, price, leaves, file_id);
            }
        }
    }

    /// Removes `size` at `price`: from the named order first, and what it does not hold from
    /// the level's oldest orders (the file says the level shrank by `size`; which invisible
    /// order an earlier reconciliation took is a guess). Returns what the named order lacked.
    fn remove_at(&mut self, side: Side, price: i64, named: Option<OrderId>, size: i64) -> i64 {
        let named_leaves = named
            .and_then(|id| self.engine.open_order(id))
            .filter(|o| o.price.0 == price && o.side == side)
            .map_or(0, |o| o.leaves.0);
        let from_named = size.min(named_leaves);
        if let (Some(id), true) = (named, from_named > 0) {
            self.reduce(id, from_named);
        }
        let missing = size - from_named;
        if missing > 0 {
            self.trim_oldest(side, price, missing);
        }
        missing
    }

    /// Removes `qty` from a level, oldest orders first: liquidity the file no longer shows
    /// was cancelled while out of sight, which only orders older than that can have been.
    fn trim_oldest(&mut self, side: Side, price: i64, mut qty: i64) {
        let queue = self.engine.queue(SYMBOL, side, Price(price));
        for id in queue {
            if qty <= 0 {
                break;
            }
            let leaves = self.engine.open_order(id).map(|o| o.leaves.0).unwrap_or(0);
            let cut = qty.min(leaves);
            self.reduce(id, cut);
            qty -= cut;
        }
    }

    fn visible(&self, levels: usize) -> BookRow {
        let depth = |side| {
            self.engine
                .depth(SYMBOL, side, levels)
                .into_iter()
                .map(|(p, q)| (p.0, q.0))
                .collect()
        };
        BookRow {
            asks: depth(Side::Sell),
            bids: depth(Side::Buy),
        }
    }
}

fn side_of(direction: i64) -> Side {
    if direction == 1 {
        Side::Buy
    } else {
        Side::Sell
    }
}

/// Replays `messages` and compares every row with `books`, which shows `levels` levels.
pub fn check(messages: &Path, books: &Path, levels: usize) -> Result<LobsterReport, LobsterError> {
    let messages = read_messages(messages)?;
    let books = read_books(books, levels)?;
    if messages.len() != books.len() {
        return Err(LobsterError::RowCount {
            messages: messages.len(),
            books: books.len(),
        });
    }
    let mut report = LobsterReport {
        levels,
        ..LobsterReport::default()
    };
    let mut replay = Replay::new();
    let Some(first) = messages.first() else {
        return Ok(report);
    };

    // Seed the state before the first event: the first row, with the first event undone.
    let mut before = books[0].clone();
    let undo = match first.kind {
        1 => -first.size,
        2..=4 => first.size,
        _ => 0,
    };
    if undo != 0 {
        let side = side_of(first.direction);
        let levels = if side == Side::Buy {
            &mut before.bids
        } else {
            &mut before.asks
        };
        match levels.iter_mut().find(|l| l.0 == first.price) {
            Some(level) => level.1 += undo,
            None if undo > 0 => levels.push((first.price, undo)),
            None => {}
        }
    }
    for (side, levels) in [(Side::Sell, &before.asks), (Side::Buy, &before.bids)] {
        for &(price, qty) in levels {
            if qty > 0 {
                replay.seed_front(side, price, qty);
            }
        }
    }

    let mut window = window_of(&before);
    for (index, (message, book)) in messages.iter().zip(&books).enumerate() {
        apply(&mut replay, &mut report, message);
        let mut reconciled = false;
        let mut real_mismatch = None;
        // Reconciling a level can bring a deeper one into view: repeat until stable.
        for _ in 0..RECONCILE_ROUNDS_MAX {
            let engine = replay.visible(levels);
            if engine == *book {
                break;
            }
            let mut changed = false;
            for (side, file_levels, engine_levels) in [
                (Side::Sell, &book.asks, &engine.asks),
                (Side::Buy, &book.bids, &engine.bids),
            ] {
                let prices: BTreeSet<i64> = file_levels
                    .iter()
                    .chain(engine_levels.iter())
                    .map(|l| l.0)
                    .collect();
                for price in prices {
                    let want = file_levels.iter().find(|l| l.0 == price).map_or(0, |l| l.1);
                    // The engine's whole level, which may lie below its visible ones.
                    let have = replay.engine.level_qty(SYMBOL, side, Price(price)).0;
                    // A level beyond the file's last visible one is not shown by it.
                    let shown = file_levels.len() < levels
                        || match side {
                            Side::Sell => price <= file_levels[levels - 1].0,
                            Side::Buy => price >= file_levels[levels - 1].0,
                        };
                    if want == have || !shown {
                        continue;
                    }
                    if window.contains(&(side, price)) {
                        real_mismatch.get_or_insert_with(|| {
                            format!(
                                "row {}: {:?} level {} has {} in the engine, {} in the file",
                                index + 1,
                                side,
                                price,
                                have,
                                want
                            )
                        });
                        continue;
                    }
                    if want > have {
                        replay.seed_front(side, price, want - have);
                    } else {
                        replay.trim_oldest(side, price, have - want);
                    }
                    report.reveals += 1;
                    changed = true;
                    reconciled = true;
                }
            }
            if !changed {
                break;
            }
        }
        report.rows += 1;
        match real_mismatch {
            Some(what) => {
                report.rows_mismatched += 1;
                if report.first_mismatches.len() < 10 {
                    report.first_mismatches.push(what);
                }
            }
            None if reconciled => report.rows_matched_after_reveal += 1,
            None => report.rows_matched += 1,
        }
        let now_visible = window_of(book);
        if now_visible != window {
            report.rows_levels_moved += 1;
        }
        window = now_visible;
        // The whole-state check walks every book and account: every 1,000th row and the last,
        // in every build.
        if index % INVARIANT_CHECK_EVERY == 0 || index + 1 == books.len() {
            replay
                .engine
                .check_invariants()
                .map_err(|violation| LobsterError::Invariant {
                    row: index + 1,
                    violation,
                })?;
        }
    }
    report.engine_rejects = replay.rejects;
    report.output_hash = format!("{:016x}", replay.engine.output_hash());
    Ok(report)
}

fn window_of(book: &BookRow) -> BTreeSet<(Side, i64)> {
    book.asks
        .iter()
        .map(|l| (Side::Sell, l.0))
        .chain(book.bids.iter().map(|l| (Side::Buy, l.0)))
        .collect()
}

fn apply(replay: &mut Replay, report: &mut LobsterReport, message: &Message) {
    let side = side_of(message.direction);
    let known = replay.ids.get(&message.order_id).copied();
    let target = known.or_else(|| {
        let hidden = replay.hidden.get(&(side, message.price)).copied();
        if matches!(message.kind, 2..=4) {
            report.events_on_unseen_orders += 1;
        }
        hidden
    });
    match message.kind {
        1 => {
            report.submissions += 1;
            replay.rest(side, message.price, message.size, Some(message.order_id));
        }
        2 | 3 => {
            if message.kind == 2 {
                report.partial_cancels += 1;
            } else {
                report.deletions += 1;
            }
            let missing = replay.remove_at(side, message.price, target, message.size);
            if missing > 0 {
                report.cancels_reattributed += 1;
            }
        }
        4 => {
            report.executions += 1;
            replay.run(Command::NewOrder(NewOrder {
                account: TAKERS,
                symbol: SYMBOL,
                client_order_id: ClientOrderId(message.order_id),
                side: side.opposite(),
                order_type: OrderType::Limit,
                time_in_force: TimeInForce::Ioc,
                price: Price(message.price),
                qty: Qty(message.size),
                self_trade_prevention: SelfTradePrevention::None,
            }));
            let first_maker = replay.outputs.iter().find_map(|o| match o.event {
                Event::Execution {
                    liquidity: Liquidity::Maker,
                    order_id,
                    ..
                } => Some(order_id),
                _ => None,
            });
            if first_maker.is_none() || first_maker != target {
                report.executions_not_first += 1;
            }
        }
        5 => report.hidden_executions_ignored += 1,
        7 => {
            report.halts += 1;
            let command = if message.price == -1 {
                AdminCommand::HaltSymbol { symbol: SYMBOL }
            } else {
                AdminCommand::ResumeSymbol { symbol: SYMBOL }
            };
            replay.run(Command::Admin(command));
        }
        _ => {}
    }
}
