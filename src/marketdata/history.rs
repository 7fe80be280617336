//! Market data history: every trade and every closed candle, kept in a SQLite file of the
//! node's own (`<data-dir>/market-history.db` unless `--md-history` says otherwise), so that
//! `GET /api/v1/candles?from=` reaches back beyond the hub's in-memory window and across
//! restarts.
//!
//! ```text
//! hub task ──trades, closed candles──▶ bounded queue ──▶ "md-history" thread ──▶ SQLite
//!           (never waits: a full queue               (one transaction at most
//!            drops the batch and counts it)           every WRITE_EVERY)
//! ```
//!
//! The hub's messages are a function of the log, so rows are keyed by what the log made them
//! (a trade by its id, a candle by its interval and start) and written with `INSERT OR IGNORE`:
//! the entries a node replays after a restart, or the snapshots it is sent after a reset, write
//! nothing twice. A closed candle never changes again, so writing it once is writing it right.
//! Open candles are not stored: the hub's memory always has them.
//!
//! What the history can miss, and says nowhere else: trades of entries the hub dropped (its
//! queue full) or that a follower skipped by installing a Raft snapshot, beyond the recent
//! trades that the next snapshot message carries. Candles cannot be missed that way while the
//! gap is shorter than the hub's window: each candles snapshot carries every kept closed one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exchange_domain::Side;
use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};

use super::feed::{Candle, Interval, MdBody, MdMessage, TradeTick};

/// Batches of rows waiting for the writer.
pub const HISTORY_QUEUE_BATCHES: usize = 4_096;
/// At most one transaction this often: rows appear in the file at most this much later (the
/// hub's memory answers for the latest ones meanwhile).
pub const WRITE_EVERY: Duration = Duration::from_millis(100);
/// The most rows one transaction takes.
const WRITE_ROWS_MAX: usize = 200_000;

/// `PRAGMA application_id` of a market data history: "EXMH".
pub const APPLICATION_ID: i64 = 0x4558_4d48;
/// `PRAGMA user_version`: the schema below.
pub const SCHEMA_VERSION: i64 = 1;

/// Prices and quantities are the engine's integers; times are the leader's nanoseconds; ids and
/// times are stored bit for bit as SQLite's signed integers.
const TABLES: &str = "
CREATE TABLE trades (
    symbol       INTEGER NOT NULL,
    trade_id     INTEGER NOT NULL,
    price        INTEGER NOT NULL,
    qty          INTEGER NOT NULL,
    aggressor    TEXT    NOT NULL,
    timestamp_ns INTEGER NOT NULL,
    PRIMARY KEY (symbol, trade_id)
) WITHOUT ROWID;
CREATE TABLE candles (
    symbol     INTEGER NOT NULL,
    interval_s INTEGER NOT NULL,
    start_ns   INTEGER NOT NULL,
    open       INTEGER NOT NULL,
    high       INTEGER NOT NULL,
    low        INTEGER NOT NULL,
    close      INTEGER NOT NULL,
    volume     INTEGER NOT NULL,
    trades     INTEGER NOT NULL,
    PRIMARY KEY (symbol, interval_s, start_ns)
) WITHOUT ROWID;
";

/// Why the history could not be opened, written or read.
#[derive(Debug)]
pub enum HistoryError {
    /// SQLite refused an operation; `context` says which.
    Sqlite {
        context: &'static str,
        source: rusqlite::Error,
    },
    /// The file exists but is not a market data history of this schema.
    NotAHistory { path: PathBuf, reason: String },
    /// The writer thread could not be started.
    Spawn(std::io::Error),
}

impl std::fmt::Display for HistoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HistoryError::Sqlite { context, source } => write!(f, "{context}: {source}"),
            HistoryError::NotAHistory { path, reason } => write!(
                f,
                "{} is not a market data history: {reason} (give --md-history another path)",
                path.display()
            ),
            HistoryError::Spawn(e) => write!(f, "starting the history writer: {e}"),
        }
    }
}

impl std::error::Error for HistoryError {}

trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, HistoryError>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn context(self, context: &'static str) -> Result<T, HistoryError> {
        self.map_err(|source| HistoryError::Sqlite { context, source })
    }
}

/// The trades and closed candles of some of the hub's messages.
#[derive(Debug, Default, PartialEq)]
pub struct Rows {
    pub trades: Vec<(u32, TradeTick)>,
    pub candles: Vec<(u32, Candle)>,
}

impl Rows {
    /// What the history keeps of some messages.
    pub fn of(messages: &[MdMessage]) -> Rows {
        let mut rows = Rows::default();
        for message in messages {
            rows.add(message);
        }
        rows
    }

    fn add(&mut self, message: &MdMessage) {
        let symbol = message.symbol;
        match &message.body {
            MdBody::Trades { trades } | MdBody::TradesSnapshot { recent: trades } => {
                self.trades.extend(trades.iter().map(|t| (symbol, *t)));
            }
            MdBody::Candles { candles } | MdBody::CandlesSnapshot { candles } => {
                self.candles
                    .extend(candles.iter().filter(|c| c.closed).map(|c| (symbol, *c)));
            }
            MdBody::BookSnapshot { .. } | MdBody::BookUpdate { .. } => {}
        }
    }

    pub fn len(&self) -> usize {
        self.trades.len() + self.candles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn append(&mut self, mut other: Rows) {
        self.trades.append(&mut other.trades);
        self.candles.append(&mut other.candles);
    }
}

/// Counters of the writer, for metrics and tests.
#[derive(Debug, Default)]
pub struct HistoryStats {
    /// Batches handed to the writer.
    pub queued: AtomicU64,
    /// Batches dropped because the writer's queue was full (their rows are missing).
    pub dropped: AtomicU64,
    /// Batches written (a batch is counted once its transaction committed).
    pub written: AtomicU64,
    /// Transactions that failed (their rows are missing; the error is logged).
    pub failed: AtomicU64,
}

/// The hub task's end of the writer's queue. Dropping it stops the writer once it has written
/// what was queued.
pub struct HistoryRecorder {
    queue: SyncSender<Rows>,
    stats: Arc<HistoryStats>,
}

impl HistoryRecorder {
    /// Queues what `messages` hold for the history, without waiting.
    pub fn record(&self, messages: &[MdMessage]) {
        let rows = Rows::of(messages);
        if rows.is_empty() {
            return;
        }
        match self.queue.try_send(rows) {
            Ok(()) => self.stats.queued.fetch_add(1, Ordering::Relaxed),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// The history's reading side, shared by the HTTP API's handlers.
pub struct MarketHistory {
    path: PathBuf,
    reader: Mutex<Connection>,
    stats: Arc<HistoryStats>,
}

impl MarketHistory {
    /// Opens (or creates) the history at `path` and starts its writer thread. A file that is
    /// neither empty nor a history of this schema is refused, never overwritten.
    pub fn open(path: &Path) -> Result<(Arc<MarketHistory>, HistoryRecorder), HistoryError> {
        let mut writer = Connection::open(path).context("opening the file")?;
        writer
            .busy_timeout(Duration::from_secs(5))
            .context("setting the busy timeout")?;
        create_or_check(&mut writer, path)?;
        // WAL: the API's reads never wait for the writer. NORMAL: a power cut may lose the
        // last transactions, which the log's replay after the restart writes again.
        writer
            .pragma_update(None, "journal_mode", "WAL")
            .context("choosing the WAL journal")?;
        writer
            .pragma_update(None, "synchronous", "NORMAL")
            .context("choosing the sync level")?;
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .context("opening the file for reading")?;
        reader
            .busy_timeout(Duration::from_secs(5))
            .context("setting the busy timeout")?;
        let stats = Arc::new(HistoryStats::default());
        let (queue, batches) = sync_channel(HISTORY_QUEUE_BATCHES);
        let writing = Arc::clone(&stats);
        std::thread::Builder::new()
            .name("md-history".into())
            .spawn(move || write_loop(writer, batches, &writing))
            .map_err(HistoryError::Spawn)?;
        let history = Arc::new(MarketHistory {
            path: path.to_path_buf(),
            reader: Mutex::new(reader),
            stats: Arc::clone(&stats),
        });
        Ok((history, HistoryRecorder { queue, stats }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> &HistoryStats {
        &self.stats
    }

    /// The latest `limit` stored candles of one interval whose start lies in `from_ns..=to_ns`,
    /// oldest first. All are closed.
    pub fn candles(
        &self,
        symbol: u32,
        interval: Interval,
        from_ns: u64,
        to_ns: u64,
        limit: usize,
    ) -> Result<Vec<Candle>, HistoryError> {
        let reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let mut statement = reader
            .prepare_cached(
                "SELECT start_ns, open, high, low, close, volume, trades FROM candles
                 WHERE symbol = ?1 AND interval_s = ?2 AND start_ns BETWEEN ?3 AND ?4
                 ORDER BY start_ns DESC LIMIT ?5",
            )
            .context("preparing the candles query")?;
        let rows = statement
            .query_map(
                params![
                    symbol,
                    interval_seconds(interval),
                    stored_bound(from_ns),
                    stored_bound(to_ns),
                    limit as i64
                ],
                |row| {
                    Ok(Candle {
                        interval,
                        start_ns: row.get::<_, i64>(0)? as u64,
                        open: row.get(1)?,
                        high: row.get(2)?,
                        low: row.get(3)?,
                        close: row.get(4)?,
                        volume: row.get(5)?,
                        trades: row.get(6)?,
                        closed: true,
                    })
                },
            )
            .context("reading candles")?;
        let mut candles = rows
            .collect::<Result<Vec<_>, _>>()
            .context("reading candles")?;
        candles.reverse();
        Ok(candles)
    }

    /// The latest `limit` stored trades of a symbol before trade `before` (by id), oldest first.
    pub fn trades_before(
        &self,
        symbol: u32,
        before: u64,
        limit: usize,
    ) -> Result<Vec<TradeTick>, HistoryError> {
        let reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let mut statement = reader
            .prepare_cached(
                "SELECT trade_id, price, qty, aggressor, timestamp_ns FROM trades
                 WHERE symbol = ?1 AND trade_id < ?2 ORDER BY trade_id DESC LIMIT ?3",
            )
            .context("preparing the trades query")?;
        let rows = statement
            .query_map(params![symbol, stored_bound(before), limit as i64], |row| {
                let aggressor: String = row.get(3)?;
                Ok(TradeTick {
                    trade_id: row.get::<_, i64>(0)? as u64,
                    price: row.get(1)?,
                    qty: row.get(2)?,
                    aggressor: if aggressor == "sell" {
                        Side::Sell
                    } else {
                        Side::Buy
                    },
                    timestamp_ns: row.get::<_, i64>(4)? as u64,
                })
            })
            .context("reading trades")?;
        let mut trades = rows
            .collect::<Result<Vec<_>, _>>()
            .context("reading trades")?;
        trades.reverse();
        Ok(trades)
    }
}

fn interval_seconds(interval: Interval) -> i64 {
    (interval.nanos() / 1_000_000_000) as i64
}

/// A bound of a range query (an id or a time): values above `i64::MAX` do not occur, but a
/// caller's "no bound" (`u64::MAX`) must not wrap to -1.
fn stored_bound(value: u64) -> i64 {
    value.min(i64::MAX as u64) as i64
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Buy => "buy",
        Side::Sell => "sell",
    }
}

/// Creates the tables in an empty file, or checks the marks of an existing one.
fn create_or_check(conn: &mut Connection, path: &Path) -> Result<(), HistoryError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| HistoryError::NotAHistory {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let marks = |name: &str| -> Result<i64, HistoryError> {
        tx.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .map_err(|e| HistoryError::NotAHistory {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
    };
    let (application_id, version) = (marks("application_id")?, marks("user_version")?);
    let objects: i64 = tx
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .context("listing the tables")?;
    match (application_id, version, objects) {
        (0, 0, 0) => {
            tx.execute_batch(TABLES).context("creating the tables")?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)
                .context("marking the file")?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .context("marking the schema version")?;
        }
        (APPLICATION_ID, SCHEMA_VERSION, _) => {}
        (APPLICATION_ID, found, _) => {
            return Err(HistoryError::NotAHistory {
                path: path.to_path_buf(),
                reason: format!("schema version {found}, this build reads {SCHEMA_VERSION}"),
            })
        }
        (other, _, _) => {
            return Err(HistoryError::NotAHistory {
                path: path.to_path_buf(),
                reason: format!(
                    "an SQLite file of another application (application_id {other:#x}, \
                     {objects} tables and indexes)"
                ),
            })
        }
    }
    tx.commit().context("committing the schema")
}

fn write_loop(mut conn: Connection, batches: Receiver<Rows>, stats: &HistoryStats) {
    let mut last_write: Option<Instant> = None;
    while let Ok(first) = batches.recv() {
        // One transaction per round: under a steady stream, one commit a round, not one a batch.
        if let Some(wait) = last_write.map(|at| WRITE_EVERY.saturating_sub(at.elapsed())) {
            std::thread::sleep(wait);
        }
        let mut rows = first;
        let mut taken = 1;
        while rows.len() < WRITE_ROWS_MAX {
            match batches.try_recv() {
                Ok(more) => {
                    rows.append(more);
                    taken += 1;
                }
                Err(_) => break,
            }
        }
        match write(&mut conn, &rows) {
            Ok(()) => stats.written.fetch_add(taken, Ordering::Relaxed),
            Err(e) => {
                tracing::error!(error = %e, rows = rows.len(), "the market data history lost a write");
                stats.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
        last_write = Some(Instant::now());
    }
}

fn write(conn: &mut Connection, rows: &Rows) -> Result<(), HistoryError> {
    let tx = conn.transaction().context("starting a write")?;
    {
        let mut trade = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO trades (symbol, trade_id, price, qty, aggressor, timestamp_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .context("preparing the trade insert")?;
        for (symbol, t) in &rows.trades {
            trade
                .execute(params![
                    symbol,
                    t.trade_id as i64,
                    t.price,
                    t.qty,
                    side_name(t.aggressor),
                    t.timestamp_ns as i64
                ])
                .context("writing a trade")?;
        }
        let mut candle = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO candles
                 (symbol, interval_s, start_ns, open, high, low, close, volume, trades)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .context("preparing the candle insert")?;
        for (symbol, c) in &rows.candles {
            candle
                .execute(params![
                    symbol,
                    interval_seconds(c.interval),
                    c.start_ns as i64,
                    c.open,
                    c.high,
                    c.low,
                    c.close,
                    c.volume,
                    c.trades
                ])
                .context("writing a candle")?;
        }
    }
    tx.commit().context("committing a write")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marketdata::feed::Channel;

    fn tick(trade_id: u64, price: i64, at_s: u64) -> TradeTick {
        TradeTick {
            trade_id,
            price,
            qty: 1,
            aggressor: Side::Sell,
            timestamp_ns: at_s * 1_000_000_000,
        }
    }

    fn candle(start_s: u64, close: i64, closed: bool) -> Candle {
        Candle {
            interval: Interval::OneSecond,
            start_ns: start_s * 1_000_000_000,
            open: 100,
            high: 110,
            low: 90,
            close,
            volume: 7,
            trades: 3,
            closed,
        }
    }

    fn message(channel: Channel, body: MdBody) -> MdMessage {
        MdMessage {
            symbol: 1,
            channel,
            seq: 1,
            index: 1,
            timestamp_ns: 0,
            body,
        }
    }

    /// Waits until the writer has written every batch queued so far.
    fn settle(history: &MarketHistory) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let stats = history.stats();
        while stats.written.load(Ordering::Relaxed) + stats.failed.load(Ordering::Relaxed)
            < stats.queued.load(Ordering::Relaxed)
        {
            assert!(Instant::now() < deadline, "the writer never caught up");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn trades_and_closed_candles_are_kept_once_and_open_ones_not_at_all() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("history.db");
        let (history, recorder) = MarketHistory::open(&path).expect("open");
        let batch = vec![
            message(
                Channel::Trades,
                MdBody::Trades {
                    trades: vec![tick(1, 100, 10), tick(2, 101, 11)],
                },
            ),
            message(
                Channel::Candles,
                MdBody::Candles {
                    candles: vec![candle(10, 100, true), candle(11, 101, false)],
                },
            ),
        ];
        recorder.record(&batch);
        // A replay after a restart, and a reset's snapshots: nothing is written twice.
        recorder.record(&batch);
        recorder.record(&[
            message(
                Channel::Trades,
                MdBody::TradesSnapshot {
                    recent: vec![tick(2, 101, 11), tick(3, 102, 12)],
                },
            ),
            message(
                Channel::Candles,
                MdBody::CandlesSnapshot {
                    candles: vec![candle(10, 100, true), candle(11, 102, true)],
                },
            ),
        ]);
        settle(&history);
        assert_eq!(history.stats().failed.load(Ordering::Relaxed), 0);
        let candles = history
            .candles(1, Interval::OneSecond, 0, u64::MAX, 100)
            .expect("candles");
        assert_eq!(candles, [candle(10, 100, true), candle(11, 102, true)]);
        assert!(history
            .candles(1, Interval::OneMinute, 0, u64::MAX, 100)
            .expect("minutes")
            .is_empty());
        assert!(history
            .candles(2, Interval::OneSecond, 0, u64::MAX, 100)
            .expect("another symbol")
            .is_empty());
        let trades = history.trades_before(1, u64::MAX, 100).expect("trades");
        assert_eq!(
            trades,
            [tick(1, 100, 10), tick(2, 101, 11), tick(3, 102, 12)]
        );
        // Ranges and limits: the latest ones of the range, oldest first.
        assert_eq!(
            history.trades_before(1, 3, 1).expect("trades"),
            [tick(2, 101, 11)]
        );
        assert_eq!(
            history
                .candles(1, Interval::OneSecond, 0, 10_000_000_000, 100)
                .expect("candles"),
            [candle(10, 100, true)]
        );
        assert_eq!(
            history
                .candles(1, Interval::OneSecond, 0, u64::MAX, 1)
                .expect("candles"),
            [candle(11, 102, true)]
        );

        // Across a restart of the node: the rows are still there.
        drop(recorder);
        drop(history);
        let (history, _recorder) = MarketHistory::open(&path).expect("open again");
        assert_eq!(
            history
                .trades_before(1, u64::MAX, 100)
                .expect("trades")
                .len(),
            3
        );
    }

    #[test]
    fn a_file_that_is_not_a_history_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("other.db");
        let other = Connection::open(&path).expect("open");
        other
            .execute_batch("CREATE TABLE mine (x INTEGER); INSERT INTO mine VALUES (42);")
            .expect("another application's table");
        drop(other);
        let error = MarketHistory::open(&path).err().expect("refused");
        assert!(
            error.to_string().contains("not a market data history"),
            "{error}"
        );
        let other = Connection::open(&path).expect("open");
        let kept: i64 = other
            .query_row("SELECT x FROM mine", [], |r| r.get(0))
            .expect("still there");
        assert_eq!(kept, 42);

        let text = dir.path().join("text.db");
        std::fs::write(
            &text,
            "not sqlite at all, just some text that is long enough",
        )
        .unwrap();
        let error = MarketHistory::open(&text).err().expect("refused");
        assert!(
            error.to_string().contains("not a market data history"),
            "{error}"
        );
    }
}
