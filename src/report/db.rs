//! The writer: rows of committed entries and the cursor that covers them, one transaction.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use exchange_domain::{
    CancelReason, Event, Liquidity, OrderType, Output, RejectReason, Side, TimeInForce,
    REJECT_REASONS,
};
use rusqlite::{params, CachedStatement, Connection, Transaction, TransactionBehavior};

use super::schema::{self, BUSY_TIMEOUT_MS};
use super::{from_sql_int, sql_int, Context, EntryOutputs, ReportError};

/// Statements kept prepared between transactions (there are 12; room to spare).
const STATEMENT_CACHE_CAPACITY: usize = 32;
/// SQLite's page cache for the writer. The per-account indexes take inserts at as many places
/// as there are active accounts; keeping their pages cached measured about 15% faster than
/// SQLite's 2 MiB default.
const WRITER_CACHE_KIB: i64 = 64 * 1024;
/// Pages the write-ahead log grows to before it is copied back into the database (SQLite's
/// default is 1,000: about one checkpoint, and with FULL one more sync, after every large
/// batch). 64 MiB measured 20-30% faster on batches of thousands of entries.
const WAL_CHECKPOINT_PAGES: i64 = 16 * 1024;
/// What the log is cut back to after a checkpoint, so it does not keep its high-water size.
const WAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

/// The report database, open for writing. One writer per file: the reporter thread.
pub struct ReportDb {
    conn: Connection,
    cursor: u64,
    last_timestamp_ns: u64,
}

/// What one [`ReportDb::write`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Entries written (index above the cursor).
    pub entries: u64,
    /// Entries skipped: at or below the cursor, already in the database.
    pub entries_skipped: u64,
    /// Outputs of the written entries, reported or not.
    pub outputs: u64,
    /// Rows inserted or updated, the cursor not counted.
    pub rows: u64,
    /// The cursor after the write.
    pub cursor: u64,
}

impl ReportDb {
    /// Opens (creating it and its tables if missing) a report database. Refuses, with an error
    /// that says why, a file that is not one or is of another schema version.
    pub fn open(path: &Path) -> Result<ReportDb, ReportError> {
        let mut conn = Connection::open(path).map_err(|e| ReportError::Open {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))
            .context("setting the busy timeout")?;
        // Before any change to the file: a file that is not ours is left as it was.
        schema::inspect(&conn, path)?;
        // WAL: readers (`exchange-cli report`) never block the writer, nor the writer them.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))
            .context("switching to WAL")?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(ReportError::NotAReportDb {
                path: path.to_path_buf(),
                reason: format!("it cannot use a write-ahead log (journal mode {mode})"),
            });
        }
        // FULL: a commit is on disk when it returns, so the cursor survives a power loss too,
        // not only a killed process. Batching keeps its cost to one sync per round.
        conn.pragma_update(None, "synchronous", "FULL")
            .context("setting synchronous")?;
        for (pragma, value) in [
            ("cache_size", -WRITER_CACHE_KIB),
            ("wal_autocheckpoint", WAL_CHECKPOINT_PAGES),
            ("journal_size_limit", WAL_SIZE_LIMIT_BYTES),
        ] {
            conn.pragma_update(None, pragma, value)
                .context("tuning the write-ahead log")?;
        }
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        schema::create_or_check(&mut conn, path)?;
        let (cursor, last_timestamp_ns) = read_cursor(&conn)?;
        Ok(ReportDb {
            conn,
            cursor,
            last_timestamp_ns,
        })
    }

    /// The last log index whose rows are committed.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Writes the rows of every entry above the cursor, then the cursor, in one transaction:
    /// all of it is committed or none of it. Entries at or below the cursor (re-sent after a
    /// restart) are skipped. Indexes may jump (entries that produce nothing need not be sent).
    pub fn write(&mut self, entries: &[EntryOutputs]) -> Result<WriteStats, ReportError> {
        let mut stats = WriteStats {
            cursor: self.cursor,
            ..WriteStats::default()
        };
        if entries.iter().all(|e| e.index <= self.cursor) {
            // Nothing new: no transaction, no sync.
            stats.entries_skipped = entries.len() as u64;
            return Ok(stats);
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("starting a write")?;
        // Read again under the write lock: the cursor in memory is a cache, and a second writer
        // on the same file (a misconfiguration) then skips rows instead of doubling them.
        let (mut cursor, mut last_timestamp_ns) = read_cursor(&tx)?;
        {
            let mut rows = Rows::prepare(&tx)?;
            for entry in entries {
                if entry.index <= cursor {
                    stats.entries_skipped += 1;
                    continue;
                }
                rows.entry(entry, &mut stats)?;
                cursor = entry.index;
                last_timestamp_ns = entry.timestamp_ns;
                stats.entries += 1;
            }
            rows.cursor
                .execute(params![sql_int(cursor), sql_int(last_timestamp_ns)])
                .context("writing the cursor")?;
        }
        tx.commit().context("committing a write")?;
        self.cursor = cursor;
        self.last_timestamp_ns = last_timestamp_ns;
        stats.cursor = cursor;
        Ok(stats)
    }

    /// Entries `cursor + 1 ..= up_to_index` will never come (the node installed a snapshot):
    /// records the gap and moves the cursor past it, one transaction. Nothing if `up_to_index`
    /// is not above the cursor.
    pub fn record_gap(&mut self, up_to_index: u64) -> Result<(), ReportError> {
        if up_to_index <= self.cursor {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("starting a gap")?;
        let (cursor, _) = read_cursor(&tx)?;
        if up_to_index <= cursor {
            self.cursor = cursor;
            return Ok(());
        }
        tx.prepare_cached(
            "INSERT INTO gaps (from_index, to_index, recorded_at_index) VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut s| {
            s.execute(params![
                sql_int(cursor + 1),
                sql_int(up_to_index),
                sql_int(cursor)
            ])
        })
        .context("recording a gap")?;
        // The entries skipped carry the only timestamps there were: the last one stays.
        tx.prepare_cached("UPDATE cursor SET last_index = ?1 WHERE id = 0")
            .and_then(|mut s| s.execute(params![sql_int(up_to_index)]))
            .context("writing the cursor")?;
        tx.commit().context("committing a gap")?;
        self.cursor = up_to_index;
        Ok(())
    }

    /// The connection, for tests that check what was written.
    #[cfg(test)]
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Sets a pragma (tests compare `synchronous` FULL with NORMAL, and cache sizes).
    #[cfg(test)]
    pub(crate) fn set_pragma(&self, name: &str, value: &str) -> Result<(), ReportError> {
        self.conn
            .pragma_update(None, name, value)
            .context("setting a pragma")
    }
}

/// (last index, its timestamp) as committed.
fn read_cursor(conn: &Connection) -> Result<(u64, u64), ReportError> {
    conn.prepare_cached("SELECT last_index, last_timestamp_ns FROM cursor WHERE id = 0")
        .and_then(|mut s| s.query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))))
        .map(|(index, ns)| (from_sql_int(index), from_sql_int(ns)))
        .context("reading the cursor")
}

/// The prepared statements of one write transaction.
struct Rows<'tx> {
    order_event: CachedStatement<'tx>,
    order_accepted: CachedStatement<'tx>,
    order_executed: CachedStatement<'tx>,
    order_cancelled: CachedStatement<'tx>,
    order_replaced: CachedStatement<'tx>,
    execution: CachedStatement<'tx>,
    trade: CachedStatement<'tx>,
    balance_change: CachedStatement<'tx>,
    instrument: CachedStatement<'tx>,
    asset: CachedStatement<'tx>,
    cursor: CachedStatement<'tx>,
}

/// The columns of an `order_events` row besides its key, time and kind.
#[derive(Default)]
struct OrderEvent {
    account: u64,
    symbol: Option<u32>,
    order_id: Option<u64>,
    client_order_id: Option<u64>,
    side: Option<&'static str>,
    price: Option<i64>,
    qty: Option<i64>,
    leaves_qty: Option<i64>,
    reason: Option<&'static str>,
    count: Option<u32>,
    priority_kept: Option<bool>,
}

impl<'tx> Rows<'tx> {
    fn prepare(tx: &'tx Transaction<'_>) -> Result<Rows<'tx>, ReportError> {
        let p = |sql: &str| tx.prepare_cached(sql).context("preparing a statement");
        Ok(Rows {
            order_event: p(
                "INSERT INTO order_events (seq, n, log_index, timestamp_ns, kind, \
                 account, symbol, order_id, client_order_id, side, price, qty, leaves_qty, \
                 reason, count, priority_kept) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )?,
            order_accepted: p(
                "INSERT INTO orders (order_id, account, symbol, client_order_id, \
                 side, order_type, time_in_force, price, qty, filled_qty, leaves_qty, status, \
                 created_ns, updated_ns) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?9, 'open', ?10, ?10)",
            )?,
            order_executed: p(
                "UPDATE orders SET filled_qty = filled_qty + ?2, leaves_qty = ?3, \
                 status = CASE WHEN ?3 = 0 THEN 'filled' ELSE 'partially_filled' END, \
                 updated_ns = ?4 WHERE order_id = ?1",
            )?,
            order_cancelled: p("UPDATE orders SET leaves_qty = 0, status = 'cancelled', \
                 updated_ns = ?2 WHERE order_id = ?1")?,
            order_replaced: p("UPDATE orders SET price = ?2, qty = filled_qty + ?3, \
                 leaves_qty = ?3, status = 'replaced', updated_ns = ?4 WHERE order_id = ?1")?,
            execution: p(
                "INSERT INTO executions (exec_id, trade_id, order_id, account, symbol, \
                 client_order_id, side, price, qty, leaves_qty, liquidity, counter_order_id, \
                 seq, n, log_index, timestamp_ns) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )?,
            trade: p(
                "INSERT INTO trades (trade_id, symbol, price, qty, aggressor_side, \
                 taker_order_id, taker_account, maker_order_id, maker_account, seq, log_index, \
                 timestamp_ns) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?,
            balance_change: p(
                "INSERT INTO balance_changes (seq, n, account, asset, delta, \
                 available, held, log_index, timestamp_ns) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?,
            instrument: p(
                "INSERT INTO instruments (symbol, name, price_decimals, base, quote, tick_size, \
                 lot_size, log_index) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?,
            asset: p("INSERT INTO assets (asset, name, decimals, log_index) \
                 VALUES (?1, ?2, ?3, ?4)")?,
            cursor: p("UPDATE cursor SET last_index = ?1, last_timestamp_ns = ?2 WHERE id = 0")?,
        })
    }

    /// The rows of one entry's outputs. `n` counts outputs within a command, so `(seq, n)`
    /// names one output of the engine's stream.
    fn entry(&mut self, entry: &EntryOutputs, stats: &mut WriteStats) -> Result<(), ReportError> {
        let mut n = 0u32;
        let mut previous_seq = None;
        for (i, output) in entry.outputs.iter().enumerate() {
            if previous_seq != Some(output.seq) {
                previous_seq = Some(output.seq);
                n = 0;
            }
            stats.rows += self.output(entry, i, n)?;
            stats.outputs += 1;
            n += 1;
        }
        Ok(())
    }

    /// Writes the rows of `entry.outputs[i]`; returns how many.
    fn output(&mut self, entry: &EntryOutputs, i: usize, n: u32) -> Result<u64, ReportError> {
        let output = &entry.outputs[i];
        let key = Key {
            seq: output.seq,
            n,
            log_index: entry.index,
            timestamp_ns: output.timestamp_ns,
        };
        let ts = sql_int(output.timestamp_ns);
        match output.event {
            Event::Accepted {
                order_id,
                account,
                symbol,
                client_order_id,
                side,
                order_type,
                time_in_force,
                price,
                qty,
            } => {
                self.order_accepted
                    .execute(params![
                        sql_int(order_id.0),
                        sql_int(account.0),
                        symbol.0,
                        sql_int(client_order_id.0),
                        side_name(side),
                        order_type_name(order_type),
                        time_in_force_name(time_in_force),
                        price.0,
                        qty.0,
                        ts,
                    ])
                    .context("inserting an order")?;
                let event = OrderEvent {
                    account: account.0,
                    symbol: Some(symbol.0),
                    order_id: Some(order_id.0),
                    client_order_id: Some(client_order_id.0),
                    side: Some(side_name(side)),
                    price: Some(price.0),
                    qty: Some(qty.0),
                    leaves_qty: Some(qty.0),
                    ..OrderEvent::default()
                };
                Ok(1 + self.order_event(&key, "accepted", &event)?)
            }
            Event::Rejected {
                account,
                symbol,
                client_order_id,
                reason,
            } => {
                let event = OrderEvent {
                    account: account.0,
                    symbol: Some(symbol.0),
                    client_order_id: Some(client_order_id.0),
                    reason: Some(reject_reason_name(reason)),
                    ..OrderEvent::default()
                };
                self.order_event(&key, "rejected", &event)
            }
            Event::Execution {
                exec_id,
                trade_id,
                order_id,
                account,
                symbol,
                client_order_id,
                side,
                price,
                qty,
                leaves_qty,
                liquidity,
                counter_order_id,
            } => {
                self.execution
                    .execute(params![
                        sql_int(exec_id.0),
                        sql_int(trade_id.0),
                        sql_int(order_id.0),
                        sql_int(account.0),
                        symbol.0,
                        sql_int(client_order_id.0),
                        side_name(side),
                        price.0,
                        qty.0,
                        leaves_qty.0,
                        liquidity_name(liquidity),
                        sql_int(counter_order_id.0),
                        sql_int(key.seq),
                        key.n,
                        sql_int(key.log_index),
                        ts,
                    ])
                    .context("inserting an execution")?;
                // An order accepted before a gap has no row to update: that is not an error.
                let updated = self
                    .order_executed
                    .execute(params![sql_int(order_id.0), qty.0, leaves_qty.0, ts])
                    .context("updating an order")?;
                let mut rows = 1 + updated as u64;
                if liquidity == Liquidity::Taker {
                    let Some(maker_account) = maker_account(&entry.outputs, i, trade_id.0) else {
                        return Err(ReportError::Invalid(format!(
                            "trade {trade_id} (seq {}) has no maker execution in its command",
                            key.seq
                        )));
                    };
                    self.trade
                        .execute(params![
                            sql_int(trade_id.0),
                            symbol.0,
                            price.0,
                            qty.0,
                            side_name(side),
                            sql_int(order_id.0),
                            sql_int(account.0),
                            sql_int(counter_order_id.0),
                            sql_int(maker_account),
                            sql_int(key.seq),
                            sql_int(key.log_index),
                            ts,
                        ])
                        .context("inserting a trade")?;
                    rows += 1;
                }
                Ok(rows)
            }
            Event::Cancelled {
                order_id,
                account,
                symbol,
                client_order_id,
                leaves_qty,
                reason,
            } => {
                let updated = self
                    .order_cancelled
                    .execute(params![sql_int(order_id.0), ts])
                    .context("updating an order")?;
                let event = OrderEvent {
                    account: account.0,
                    symbol: Some(symbol.0),
                    order_id: Some(order_id.0),
                    client_order_id: Some(client_order_id.0),
                    leaves_qty: Some(leaves_qty.0),
                    reason: Some(cancel_reason_name(reason)),
                    ..OrderEvent::default()
                };
                Ok(updated as u64 + self.order_event(&key, "cancelled", &event)?)
            }
            Event::Replaced {
                order_id,
                account,
                symbol,
                price,
                qty,
                priority_kept,
            } => {
                let updated = self
                    .order_replaced
                    .execute(params![sql_int(order_id.0), price.0, qty.0, ts])
                    .context("updating an order")?;
                let event = OrderEvent {
                    account: account.0,
                    symbol: Some(symbol.0),
                    order_id: Some(order_id.0),
                    price: Some(price.0),
                    qty: Some(qty.0),
                    leaves_qty: Some(qty.0),
                    priority_kept: Some(priority_kept),
                    ..OrderEvent::default()
                };
                Ok(updated as u64 + self.order_event(&key, "replaced", &event)?)
            }
            Event::CancelRejected {
                account,
                order_id,
                reason,
            }
            | Event::ReplaceRejected {
                account,
                order_id,
                reason,
            } => {
                let kind = if matches!(output.event, Event::CancelRejected { .. }) {
                    "cancel_rejected"
                } else {
                    "replace_rejected"
                };
                let event = OrderEvent {
                    account: account.0,
                    order_id: Some(order_id.0),
                    reason: Some(reject_reason_name(reason)),
                    ..OrderEvent::default()
                };
                self.order_event(&key, kind, &event)
            }
            Event::MassCancelled {
                account,
                symbol,
                count,
            } => {
                let event = OrderEvent {
                    account: account.0,
                    symbol: symbol.map(|s| s.0),
                    count: Some(count),
                    ..OrderEvent::default()
                };
                self.order_event(&key, "mass_cancelled", &event)
            }
            Event::MassCancelRejected { account, reason } => {
                let event = OrderEvent {
                    account: account.0,
                    reason: Some(reject_reason_name(reason)),
                    ..OrderEvent::default()
                };
                self.order_event(&key, "mass_cancel_rejected", &event)
            }
            Event::DuplicateOrder {
                account,
                client_order_id,
                order_id,
                rejected,
            } => {
                let event = OrderEvent {
                    account: account.0,
                    order_id: Some(order_id.0),
                    client_order_id: Some(client_order_id.0),
                    reason: rejected.map(reject_reason_name),
                    ..OrderEvent::default()
                };
                self.order_event(&key, "duplicate_order", &event)
            }
            Event::BalanceChanged {
                account,
                asset,
                delta,
                available,
                held,
            } => {
                self.balance_change
                    .execute(params![
                        sql_int(key.seq),
                        key.n,
                        sql_int(account.0),
                        asset.0,
                        delta.0,
                        available.0,
                        held.0,
                        sql_int(key.log_index),
                        ts,
                    ])
                    .context("inserting a balance change")?;
                Ok(1)
            }
            Event::SymbolAdded { spec } => {
                self.instrument
                    .execute(params![
                        spec.symbol.0,
                        spec.name.as_str(),
                        spec.price_decimals,
                        spec.base.0,
                        spec.quote.0,
                        spec.tick_size.0,
                        spec.lot_size.0,
                        sql_int(key.log_index),
                    ])
                    .context("inserting an instrument")?;
                Ok(1)
            }
            Event::AssetAdded {
                asset,
                name,
                decimals,
            } => {
                self.asset
                    .execute(params![
                        asset.0,
                        name.as_str(),
                        decimals,
                        sql_int(key.log_index)
                    ])
                    .context("inserting an asset")?;
                Ok(1)
            }
            // Administration the reports do not cover (accounts, limits, halts, keys and their salt, FIX sessions).
            Event::AccountCreated { .. }
            | Event::RiskLimitsSet { .. }
            | Event::PriceBandSet { .. }
            | Event::TradingStatus { .. }
            | Event::AdminRejected { .. }
            | Event::BrokerKeySet { .. }
            | Event::FixCompIdSet { .. }
            | Event::FixSessionMarked { .. }
            | Event::KeySaltSet { .. } => Ok(0),
        }
    }

    fn order_event(
        &mut self,
        key: &Key,
        kind: &str,
        event: &OrderEvent,
    ) -> Result<u64, ReportError> {
        self.order_event
            .execute(params![
                sql_int(key.seq),
                key.n,
                sql_int(key.log_index),
                sql_int(key.timestamp_ns),
                kind,
                sql_int(event.account),
                event.symbol,
                event.order_id.map(sql_int),
                event.client_order_id.map(sql_int),
                event.side,
                event.price,
                event.qty,
                event.leaves_qty,
                event.reason,
                event.count,
                event.priority_kept,
            ])
            .context("inserting an order event")?;
        Ok(1)
    }
}

/// Where an output sits in the stream.
struct Key {
    seq: u64,
    n: u32,
    log_index: u64,
    timestamp_ns: u64,
}

/// The account of the maker's execution of `trade_id`, looked for among the outputs of the
/// same command as the taker's execution at `taker`. The engine emits the maker's first, right
/// before the taker's, so the backward search ends at once; forward covers the other order.
fn maker_account(outputs: &[Output], taker: usize, trade_id: u64) -> Option<u64> {
    let seq = outputs[taker].seq;
    let is_maker = |o: &Output| match o.event {
        Event::Execution {
            trade_id: t,
            liquidity: Liquidity::Maker,
            account,
            ..
        } if t.0 == trade_id => Some(account.0),
        _ => None,
    };
    let backward = outputs[..taker].iter().rev().take_while(|o| o.seq == seq);
    let forward = outputs[taker + 1..].iter().take_while(|o| o.seq == seq);
    backward.chain(forward).find_map(is_maker)
}

pub(crate) fn side_name(side: Side) -> &'static str {
    match side {
        Side::Buy => "buy",
        Side::Sell => "sell",
    }
}

pub(crate) fn order_type_name(order_type: OrderType) -> &'static str {
    match order_type {
        OrderType::Limit => "limit",
        OrderType::Market => "market",
    }
}

pub(crate) fn time_in_force_name(tif: TimeInForce) -> &'static str {
    match tif {
        TimeInForce::Gtc => "gtc",
        TimeInForce::Ioc => "ioc",
        TimeInForce::Fok => "fok",
        TimeInForce::PostOnly => "post_only",
    }
}

pub(crate) fn liquidity_name(liquidity: Liquidity) -> &'static str {
    match liquidity {
        Liquidity::Maker => "maker",
        Liquidity::Taker => "taker",
    }
}

pub(crate) fn cancel_reason_name(reason: CancelReason) -> &'static str {
    match reason {
        CancelReason::Requested => "requested",
        CancelReason::MassCancel => "mass_cancel",
        CancelReason::Unfilled => "unfilled",
        CancelReason::FillOrKill => "fill_or_kill",
        CancelReason::SelfTrade => "self_trade",
    }
}

/// A reject reason's snake_case name, as serde writes it (so JSON tools and the reports agree).
pub(crate) fn reject_reason_name(reason: RejectReason) -> &'static str {
    static NAMES: OnceLock<[String; REJECT_REASONS]> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        RejectReason::ALL.map(|r| match serde_json::to_value(r) {
            Ok(serde_json::Value::String(name)) => name,
            // Unreachable for a unit variant; a name is still better than a panic.
            _ => format!("{r:?}"),
        })
    });
    &names[reason as usize]
}

#[cfg(test)]
mod tests {
    use exchange_domain::{
        AccountId, CancelReplace, ClientOrderId, Command, MassCancel, NewOrder, OrderId, Price,
        Qty, SelfTradePrevention,
    };

    use super::*;
    use crate::report::query::{self, Counts, Filter};
    use crate::report::testing::*;

    fn counts(db: &ReportDb) -> Counts {
        query::counts(db.connection()).expect("counts")
    }

    fn all() -> Filter {
        Filter::default()
    }

    #[test]
    fn a_crossing_order_gives_two_executions_one_trade_and_both_accounts() {
        let mut s = Scenario::new();
        let ask = s.limit(ALICE, Side::Sell, 100, 5, TimeInForce::Gtc);
        let bid = s.limit(BOB, Side::Buy, 105, 3, TimeInForce::Gtc);
        let (_dir, path) = temp_db();
        let mut db = ReportDb::open(&path).expect("open");
        let stats = db.write(&s.entries).expect("write");
        assert_eq!(stats.entries, s.entries.len() as u64);
        assert_eq!(stats.cursor, bid.0);
        assert_eq!(db.cursor(), bid.0);
        let conn = db.connection();

        let trades = query::trades(conn, &all()).expect("trades");
        assert_eq!(trades.len(), 1, "{trades:?}");
        let trade = &trades[0];
        assert_eq!((trade.price, trade.qty), (100, 3));
        assert_eq!(trade.aggressor_side, "buy");
        assert_eq!((trade.taker_order_id, trade.taker_account), (bid.0, BOB.0));
        assert_eq!(
            (trade.maker_order_id, trade.maker_account),
            (ask.0, ALICE.0)
        );
        assert_eq!(trade.timestamp_ns, T0 + bid.0);
        assert_eq!((trade.seq, trade.log_index), (bid.0, bid.0));

        let executions = query::executions(conn, &all()).expect("executions");
        let sides: Vec<_> = executions
            .iter()
            .map(|e| (e.order_id, e.account, e.liquidity.as_str(), e.leaves_qty))
            .collect();
        assert_eq!(
            sides,
            vec![(ask.0, ALICE.0, "maker", 2), (bid.0, BOB.0, "taker", 0)]
        );
        assert!(executions.iter().all(|e| e.trade_id == trade.trade_id));

        let orders = query::orders(conn, &all()).expect("orders");
        let states: Vec<_> = orders
            .iter()
            .map(|o| {
                (
                    o.order_id,
                    o.status.as_str(),
                    o.qty,
                    o.filled_qty,
                    o.leaves_qty,
                )
            })
            .collect();
        assert_eq!(
            states,
            vec![
                (ask.0, "partially_filled", 5, 3, 2),
                (bid.0, "filled", 3, 3, 0)
            ]
        );
        assert_eq!(orders[1].time_in_force, "gtc");
        assert_eq!(orders[1].client_order_id, bid.0 * 10);

        // The deposits of the setup: one row each, with the balance after it.
        let balances = query::balance_changes(conn, &all()).expect("balances");
        let deposits: Vec<_> = balances
            .iter()
            .map(|b| (b.account, b.asset, b.delta, b.available, b.held))
            .collect();
        assert_eq!(
            deposits,
            vec![
                (ALICE.0, BASE.0, FUNDS, FUNDS, 0),
                (ALICE.0, USD.0, FUNDS, FUNDS, 0),
                (BOB.0, BASE.0, FUNDS, FUNDS, 0),
                (BOB.0, USD.0, FUNDS, FUNDS, 0),
            ]
        );
        assert_eq!(
            counts(&db),
            Counts {
                cursor: bid.0,
                last_timestamp_ns: T0 + bid.0,
                order_events: 2,
                orders: 2,
                executions: 2,
                trades: 1,
                balance_changes: 4,
                gaps: 0,
            }
        );
    }

    #[test]
    fn a_cancel_gives_an_order_event_and_a_cancelled_order() {
        let mut s = Scenario::new();
        let ask = s.limit(ALICE, Side::Sell, 100, 5, TimeInForce::Gtc);
        s.cancel(ALICE, ask);
        // A cancel of an order that is gone is refused: an event, no change to the order.
        s.cancel(ALICE, ask);
        let (_dir, path) = temp_db();
        let mut db = ReportDb::open(&path).expect("open");
        db.write(&s.entries).expect("write");
        let conn = db.connection();
        let events = query::order_events(conn, &all()).expect("events");
        let kinds: Vec<_> = events
            .iter()
            .map(|e| {
                (
                    e.kind.as_str(),
                    e.order_id,
                    e.leaves_qty,
                    e.reason.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("accepted", Some(ask.0), Some(5), None),
                ("cancelled", Some(ask.0), Some(5), Some("requested")),
                ("cancel_rejected", Some(ask.0), None, Some("unknown_order")),
            ]
        );
        assert_eq!(events[1].symbol, Some(SYM.0));
        assert_eq!(events[2].symbol, None);
        let orders = query::orders(conn, &all()).expect("orders");
        assert_eq!(orders.len(), 1);
        assert_eq!(
            (
                orders[0].status.as_str(),
                orders[0].filled_qty,
                orders[0].leaves_qty
            ),
            ("cancelled", 0, 0)
        );
        assert_eq!(orders[0].updated_ns, T0 + ask.0 + 1);
    }

    #[test]
    fn rejects_replaces_and_ioc_remainders_are_reported() {
        let mut s = Scenario::new();
        let ask = s.limit(ALICE, Side::Sell, 100, 2, TimeInForce::Gtc);
        // Trades 2, its remaining 3 is cancelled: filled 2 of 5, then cancelled.
        let ioc = s.limit(BOB, Side::Buy, 100, 5, TimeInForce::Ioc);
        let rest = s.limit(ALICE, Side::Sell, 120, 4, TimeInForce::Gtc);
        s.run(Command::CancelReplace(CancelReplace {
            account: ALICE,
            order_id: rest,
            price: Price(121),
            qty: Qty(3),
        }));
        // An unknown account: rejected, no order.
        s.run(Command::NewOrder(NewOrder {
            account: AccountId(999),
            symbol: SYM,
            client_order_id: ClientOrderId(7),
            side: Side::Buy,
            order_type: OrderType::Limit,
            time_in_force: TimeInForce::Gtc,
            price: Price(100),
            qty: Qty(1),
            self_trade_prevention: SelfTradePrevention::None,
        }));
        s.run(Command::MassCancel(MassCancel {
            account: ALICE,
            symbol: Some(SYM),
        }));
        let (_dir, path) = temp_db();
        let mut db = ReportDb::open(&path).expect("open");
        db.write(&s.entries).expect("write");
        let conn = db.connection();

        let orders = query::orders(conn, &all()).expect("orders");
        let states: Vec<_> = orders
            .iter()
            .map(|o| (o.order_id, o.status.as_str(), o.price, o.qty, o.filled_qty))
            .collect();
        assert_eq!(
            states,
            vec![
                (ask.0, "filled", 100, 2, 2),
                (ioc.0, "cancelled", 100, 5, 2),
                (rest.0, "cancelled", 121, 3, 0),
            ]
        );
        let events = query::order_events(conn, &all()).expect("events");
        let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            vec![
                "accepted",
                "accepted",
                "cancelled",
                "accepted",
                "replaced",
                "rejected",
                "cancelled",
                "mass_cancelled"
            ]
        );
        assert_eq!(events[2].reason.as_deref(), Some("unfilled"));
        assert_eq!(events[4].priority_kept, Some(false));
        assert_eq!(events[5].account, 999);
        assert_eq!(events[5].reason.as_deref(), Some("unknown_account"));
        assert_eq!(events[6].reason.as_deref(), Some("mass_cancel"));
        assert_eq!(events[7].count, Some(1));
        // (seq, n): the IOC's events are its outputs 0 (accepted), 1, 2 (executions), 3.
        assert_eq!((events[2].seq, events[2].n), (ioc.0, 3));
    }

    #[test]
    fn rows_are_written_once_across_reopen() {
        let s = Scenario::busy(200);
        let first_100: Vec<_> = s
            .entries
            .iter()
            .filter(|e| e.index <= 100)
            .cloned()
            .collect();
        assert_eq!(first_100.len(), 100);
        let (_dir, path) = temp_db();
        {
            let mut db = ReportDb::open(&path).expect("open");
            db.write(&first_100[..50]).expect("write");
            assert_eq!(db.cursor(), 50);
        }
        let mut db = ReportDb::open(&path).expect("reopen");
        assert_eq!(db.cursor(), 50);
        let stats = db.write(&first_100).expect("write again");
        assert_eq!((stats.entries, stats.entries_skipped), (50, 50));
        assert_eq!(db.cursor(), 100);
        // All re-sent: nothing to do, not even a transaction.
        let stats = db.write(&first_100).expect("write a third time");
        assert_eq!((stats.entries, stats.rows, stats.cursor), (0, 0, 100));

        let (_dir2, once_path) = temp_db();
        let mut once = ReportDb::open(&once_path).expect("open");
        once.write(&first_100).expect("write once");
        let (a, b) = (db.connection(), once.connection());
        assert_eq!(counts(&db), counts(&once));
        assert!(counts(&db).trades > 10, "{:?}", counts(&db));
        assert_eq!(query::trades(a, &all()).ok(), query::trades(b, &all()).ok());
        assert_eq!(query::orders(a, &all()).ok(), query::orders(b, &all()).ok());
        assert_eq!(
            query::order_events(a, &all()).ok(),
            query::order_events(b, &all()).ok()
        );
        assert_eq!(
            query::executions(a, &all()).ok(),
            query::executions(b, &all()).ok()
        );
    }

    #[test]
    fn a_write_that_fails_midway_leaves_neither_rows_nor_cursor() {
        let (_dir, path) = temp_db();
        let mut db = ReportDb::open(&path).expect("open");
        // The second entry breaks the engine's contract (a trade with no maker).
        let error = db
            .write(&[
                deposit_entry(1, ALICE),
                broken_entry(2),
                deposit_entry(3, BOB),
            ])
            .expect_err("refused");
        assert!(matches!(error, ReportError::Invalid(_)), "{error}");
        assert_eq!(db.cursor(), 0);
        assert_eq!(counts(&db), Counts::zero());

        // The second entry breaks a key: SQLite refuses it; the first's rows go too.
        db.write(&[deposit_entry(1, ALICE)]).expect("write");
        let mut twice = deposit_entry(3, BOB);
        twice.outputs.push(twice.outputs[0]);
        twice.outputs[1].seq = 2; // Same (seq, n) as entry 2's deposit.
        twice.outputs.swap(0, 1);
        let error = db
            .write(&[deposit_entry(2, ALICE), twice])
            .expect_err("refused");
        assert!(matches!(error, ReportError::Sqlite { .. }), "{error}");
        assert_eq!(db.cursor(), 1);
        drop(db);
        let db = ReportDb::open(&path).expect("reopen");
        assert_eq!(db.cursor(), 1);
        assert_eq!(counts(&db).balance_changes, 1);
    }

    #[test]
    fn a_gap_moves_the_cursor_and_later_entries_follow_it() {
        let (_dir, path) = temp_db();
        let mut db = ReportDb::open(&path).expect("open");
        db.write(&[deposit_entry(1, ALICE), deposit_entry(2, ALICE)])
            .expect("write");
        db.record_gap(10).expect("gap");
        db.record_gap(5)
            .expect("a gap behind the cursor is nothing");
        assert_eq!(db.cursor(), 10);
        let entries: Vec<_> = (3..=12).map(|i| deposit_entry(i, BOB)).collect();
        let stats = db.write(&entries).expect("write");
        assert_eq!((stats.entries, stats.entries_skipped), (2, 8));
        let gaps = query::gaps(db.connection()).expect("gaps");
        assert_eq!(
            gaps,
            vec![query::GapRow {
                from_index: 3,
                to_index: 10,
                recorded_at_index: 2
            }]
        );
        let c = counts(&db);
        assert_eq!((c.cursor, c.balance_changes, c.gaps), (12, 4, 1));
    }

    #[test]
    fn a_second_writer_on_the_same_file_does_not_double_rows() {
        let (_dir, path) = temp_db();
        let mut a = ReportDb::open(&path).expect("open");
        let mut b = ReportDb::open(&path).expect("open again");
        let entries: Vec<_> = (1..=15).map(|i| deposit_entry(i, ALICE)).collect();
        a.write(&entries[..10]).expect("write");
        let stats = b.write(&entries).expect("write");
        assert_eq!((stats.entries, stats.entries_skipped), (5, 10));
        b.record_gap(12)
            .expect("a gap behind the cursor is nothing");
        a.record_gap(20).expect("gap");
        let c = counts(&b);
        assert_eq!((c.cursor, c.balance_changes, c.gaps), (20, 15, 1));
    }

    /// The process is killed (SIGKILL) in the middle of writing: on reopen the cursor covers
    /// exactly the rows there are (one per entry here), and re-sending everything adds each
    /// missing row once.
    #[test]
    fn a_killed_writer_leaves_rows_and_cursor_in_step() {
        let (_dir, path) = temp_db();
        let exe = std::env::current_exe().expect("test executable");
        let mut child = std::process::Command::new(exe)
            .args([
                "report::db::tests::write_until_killed",
                "--exact",
                "--ignored",
                "--test-threads=1",
            ])
            .env(KILL_TEST_DB, &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn the writer");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let written = || {
            query::open_read_only(&path)
                .and_then(|c| query::counts(&c))
                .map_or(0, |c| c.cursor)
        };
        while written() < 2_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never got going"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("kill");
        child.wait().expect("reap");

        let mut db = ReportDb::open(&path).expect("reopen");
        let cursor = db.cursor();
        assert!(cursor >= 2_000);
        assert_eq!(counts(&db).balance_changes, cursor);
        let all: Vec<_> = (1..=cursor + 500)
            .map(|i| deposit_entry(i, ALICE))
            .collect();
        for chunk in all.chunks(300) {
            db.write(chunk).expect("write");
        }
        let c = counts(&db);
        assert_eq!((c.cursor, c.balance_changes), (cursor + 500, cursor + 500));
    }

    const KILL_TEST_DB: &str = "EXCHANGE_REPORT_KILL_TEST_DB";

    /// The writer [`a_killed_writer_leaves_rows_and_cursor_in_step`] kills; does nothing unless
    /// that test started it.
    #[test]
    #[ignore]
    fn write_until_killed() {
        let Some(path) = std::env::var_os(KILL_TEST_DB) else {
            return;
        };
        let mut db = ReportDb::open(std::path::Path::new(&path)).expect("open");
        let start = std::time::Instant::now();
        let mut next = 1;
        // Bounded, in case the parent died before killing it.
        while start.elapsed() < Duration::from_secs(120) {
            let batch: Vec<_> = (next..next + 100)
                .map(|i| deposit_entry(i, ALICE))
                .collect();
            db.write(&batch).expect("write");
            next += 100;
        }
    }

    #[test]
    fn entries_without_outputs_advance_the_cursor() {
        let (_dir, path) = temp_db();
        let mut db = ReportDb::open(&path).expect("open");
        let empty = |index| EntryOutputs {
            index,
            timestamp_ns: T0 + index,
            outputs: Vec::new(),
        };
        let stats = db.write(&[empty(1), empty(2), empty(7)]).expect("write");
        assert_eq!((stats.entries, stats.rows, stats.cursor), (3, 0, 7));
        drop(db);
        let db = ReportDb::open(&path).expect("reopen");
        assert_eq!(db.cursor(), 7);
        assert_eq!(counts(&db).last_timestamp_ns, T0 + 7);
    }

    #[test]
    fn ids_above_i64_max_are_stored_and_read_back() {
        let (_dir, path) = temp_db();
        let mut db = ReportDb::open(&path).expect("open");
        let mut entry = deposit_entry(1, AccountId(u64::MAX));
        entry.outputs.push(Output {
            seq: 1,
            timestamp_ns: T0,
            event: Event::CancelRejected {
                account: AccountId(u64::MAX - 1),
                order_id: OrderId(1 << 63),
                reason: RejectReason::UnknownOrder,
            },
        });
        db.write(&[entry]).expect("write");
        let conn = db.connection();
        let filter = Filter {
            account: Some(u64::MAX),
            ..Filter::default()
        };
        let balances = query::balance_changes(conn, &filter).expect("balances");
        assert_eq!(balances.len(), 1);
        assert_eq!(balances[0].account, u64::MAX);
        let events = query::order_events(conn, &all()).expect("events");
        assert_eq!(events[0].account, u64::MAX - 1);
        assert_eq!(events[0].order_id, Some(1 << 63));
    }

    #[test]
    fn a_file_that_is_not_a_report_database_is_refused_and_left_alone() {
        let (dir, path) = temp_db();
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
        std::fs::write(&path, &garbage).expect("write garbage");
        let error = ReportDb::open(&path).err().expect("refused");
        assert!(matches!(error, ReportError::NotAReportDb { .. }), "{error}");
        assert!(
            error.to_string().contains("not an SQLite database"),
            "{error}"
        );
        assert_eq!(std::fs::read(&path).expect("read"), garbage);
        assert!(query::open_read_only(&path).is_err());

        // Another application's SQLite database.
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .and_then(|c| c.execute_batch("CREATE TABLE t (x INTEGER);"))
            .expect("other db");
        let error = ReportDb::open(&other).err().expect("refused");
        assert!(error.to_string().contains("another application"), "{error}");

        // A report database of another schema version.
        let newer = dir.path().join("newer.db");
        drop(ReportDb::open(&newer).expect("create"));
        Connection::open(&newer)
            .and_then(|c| c.pragma_update(None, "user_version", schema::SCHEMA_VERSION + 1))
            .expect("bump version");
        let error = ReportDb::open(&newer).err().expect("refused");
        assert!(
            matches!(error, ReportError::SchemaVersion { .. }),
            "{error}"
        );
        assert!(query::open_read_only(&newer).is_err());

        // No file at all: reading refuses, writing creates it.
        let missing = dir.path().join("missing.db");
        let error = query::open_read_only(&missing).expect_err("refused");
        assert!(error.to_string().contains("missing.db"), "{error}");
        assert!(!missing.exists());
    }

    #[test]
    fn names_are_the_serde_names() {
        fn serde_name<T: serde::Serialize>(value: T) -> String {
            serde_json::to_value(value)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        }
        for side in [Side::Buy, Side::Sell] {
            assert_eq!(side_name(side), serde_name(side));
        }
        for t in [OrderType::Limit, OrderType::Market] {
            assert_eq!(order_type_name(t), serde_name(t));
        }
        for tif in [
            TimeInForce::Gtc,
            TimeInForce::Ioc,
            TimeInForce::Fok,
            TimeInForce::PostOnly,
        ] {
            assert_eq!(time_in_force_name(tif), serde_name(tif));
        }
        for l in [Liquidity::Maker, Liquidity::Taker] {
            assert_eq!(liquidity_name(l), serde_name(l));
        }
        for r in [
            CancelReason::Requested,
            CancelReason::MassCancel,
            CancelReason::Unfilled,
            CancelReason::FillOrKill,
            CancelReason::SelfTrade,
        ] {
            assert_eq!(cancel_reason_name(r), serde_name(r));
        }
        assert_eq!(
            reject_reason_name(RejectReason::InsufficientFunds),
            "insufficient_funds"
        );
        for r in RejectReason::ALL {
            assert_eq!(reject_reason_name(r), serde_name(r));
        }
    }

    /// Throughput of `write` on the engine's outputs for a synthetic stream, FULL against
    /// NORMAL. Not a timed assertion: run by hand and read the numbers.
    /// `cargo test --release --lib report::db::tests::write_throughput -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn write_throughput() {
        use crate::cli::{replay, workload};
        let rows = workload::generate(&workload::WorkloadConfig {
            commands: 400_000,
            ..workload::WorkloadConfig::default()
        });
        let prepared = replay::prepare(&rows, replay::ReplayConfig::default());
        let mut engine = exchange_engine::Engine::new(exchange_engine::EngineConfig::default());
        let mut outputs = Vec::new();
        for input in prepared.setup.iter().chain(&prepared.commands) {
            engine.process(input, &mut outputs);
        }
        for commands_per_entry in [1usize, 16] {
            let entries: Vec<EntryOutputs> = outputs
                .chunk_by(|a, b| a.seq == b.seq)
                .collect::<Vec<_>>()
                .chunks(commands_per_entry)
                .enumerate()
                .map(|(i, commands)| EntryOutputs {
                    index: i as u64 + 1,
                    timestamp_ns: commands[0][0].timestamp_ns,
                    outputs: commands.concat(),
                })
                .collect();
            for synchronous in ["FULL", "NORMAL"] {
                for batch in [64usize, 4_096] {
                    let (_dir, path) = temp_db();
                    let mut db = ReportDb::open(&path).expect("open");
                    db.set_pragma("synchronous", synchronous)
                        .expect("synchronous");
                    let start = std::time::Instant::now();
                    let mut rows = 0;
                    for chunk in entries.chunks(batch) {
                        rows += db.write(chunk).expect("write").rows;
                    }
                    let secs = start.elapsed().as_secs_f64();
                    println!(
                        "{synchronous:<6} {commands_per_entry:>2} commands/entry, batches of \
                         {batch:>4} entries: {} outputs, {rows} rows in {secs:.2} s = \
                         {:.0} rows/s, {:.0} outputs/s",
                        outputs.len(),
                        rows as f64 / secs,
                        outputs.len() as f64 / secs
                    );
                }
            }
        }
    }
}
