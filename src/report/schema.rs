//! The report database's tables, and the check that a file is one.
//!
//! A report database is marked twice in its header: `application_id` says "this is an exchange
//! report" and `user_version` says which schema. A file with another mark is refused, never
//! "migrated" by guesswork. Change [`SCHEMA_VERSION`] with any change below.

use std::path::Path;

use rusqlite::{Connection, ErrorCode, TransactionBehavior};

use super::{Context, ReportError};

/// `PRAGMA application_id` of a report database: "EXRP".
pub const APPLICATION_ID: i64 = 0x4558_5250;
/// `PRAGMA user_version`: the schema below.
pub const SCHEMA_VERSION: i64 = 2;

/// How long a connection waits for a lock held by another one (a checkpoint, a reader that
/// is starting) before it gives up.
pub const BUSY_TIMEOUT_MS: u64 = 5_000;

/// Every table and index. Prices, quantities and amounts are integers in the engine's units;
/// enums are snake_case text; times are the nanoseconds the leader stamped on the command.
/// Every row also names its log index (`log_index`) and output key (`seq`, `n`: the command's
/// sequence number and the output's position among that command's outputs).
const TABLES: &str = "
CREATE TABLE cursor (
    id                INTEGER PRIMARY KEY CHECK (id = 0),
    last_index        INTEGER NOT NULL,
    last_timestamp_ns INTEGER NOT NULL
);
INSERT INTO cursor (id, last_index, last_timestamp_ns) VALUES (0, 0, 0);

-- Entries from_index..=to_index that will never be reported: the node installed a snapshot.
-- recorded_at_index is the cursor when the gap was recorded (the last index reported before it).
CREATE TABLE gaps (
    from_index        INTEGER PRIMARY KEY,
    to_index          INTEGER NOT NULL,
    recorded_at_index INTEGER NOT NULL
);

CREATE TABLE order_events (
    seq             INTEGER NOT NULL,
    n               INTEGER NOT NULL,
    log_index       INTEGER NOT NULL,
    timestamp_ns    INTEGER NOT NULL,
    kind            TEXT    NOT NULL,
    account         INTEGER NOT NULL,
    symbol          INTEGER,
    order_id        INTEGER,
    client_order_id INTEGER,
    side            TEXT,
    price           INTEGER,
    qty             INTEGER,
    leaves_qty      INTEGER,
    reason          TEXT,
    count           INTEGER,
    priority_kept   INTEGER,
    PRIMARY KEY (seq, n)
) WITHOUT ROWID;
CREATE INDEX order_events_time ON order_events (timestamp_ns);
CREATE INDEX order_events_account ON order_events (account, timestamp_ns);
CREATE INDEX order_events_symbol ON order_events (symbol, timestamp_ns);
CREATE INDEX order_events_order ON order_events (order_id);

-- One row per accepted order, kept current. qty = filled_qty + what was open when it left the
-- book (or is still open); leaves_qty is what is open now (0 once filled or cancelled).
CREATE TABLE orders (
    order_id        INTEGER PRIMARY KEY,
    account         INTEGER NOT NULL,
    symbol          INTEGER NOT NULL,
    client_order_id INTEGER NOT NULL,
    side            TEXT    NOT NULL,
    order_type      TEXT    NOT NULL,
    time_in_force   TEXT    NOT NULL,
    price           INTEGER NOT NULL,
    qty             INTEGER NOT NULL,
    filled_qty      INTEGER NOT NULL,
    leaves_qty      INTEGER NOT NULL,
    status          TEXT    NOT NULL,
    created_ns      INTEGER NOT NULL,
    updated_ns      INTEGER NOT NULL
);
CREATE INDEX orders_time ON orders (created_ns);
CREATE INDEX orders_account ON orders (account, created_ns);
CREATE INDEX orders_symbol ON orders (symbol, created_ns);

CREATE TABLE executions (
    exec_id          INTEGER PRIMARY KEY,
    trade_id         INTEGER NOT NULL,
    order_id         INTEGER NOT NULL,
    account          INTEGER NOT NULL,
    symbol           INTEGER NOT NULL,
    client_order_id  INTEGER NOT NULL,
    side             TEXT    NOT NULL,
    price            INTEGER NOT NULL,
    qty              INTEGER NOT NULL,
    leaves_qty       INTEGER NOT NULL,
    liquidity        TEXT    NOT NULL,
    counter_order_id INTEGER NOT NULL,
    seq              INTEGER NOT NULL,
    n                INTEGER NOT NULL,
    log_index        INTEGER NOT NULL,
    timestamp_ns     INTEGER NOT NULL
);
CREATE INDEX executions_time ON executions (timestamp_ns);
CREATE INDEX executions_account ON executions (account, timestamp_ns);
CREATE INDEX executions_symbol ON executions (symbol, timestamp_ns);
CREATE INDEX executions_order ON executions (order_id);

-- One row per match, from the taker's execution; the maker's account from the maker's.
CREATE TABLE trades (
    trade_id        INTEGER PRIMARY KEY,
    symbol          INTEGER NOT NULL,
    price           INTEGER NOT NULL,
    qty             INTEGER NOT NULL,
    aggressor_side  TEXT    NOT NULL,
    taker_order_id  INTEGER NOT NULL,
    taker_account   INTEGER NOT NULL,
    maker_order_id  INTEGER NOT NULL,
    maker_account   INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    log_index       INTEGER NOT NULL,
    timestamp_ns    INTEGER NOT NULL
);
CREATE INDEX trades_time ON trades (timestamp_ns);
CREATE INDEX trades_symbol ON trades (symbol, timestamp_ns);
CREATE INDEX trades_taker ON trades (taker_account, timestamp_ns);
CREATE INDEX trades_maker ON trades (maker_account, timestamp_ns);

CREATE TABLE balance_changes (
    seq          INTEGER NOT NULL,
    n            INTEGER NOT NULL,
    account      INTEGER NOT NULL,
    asset        INTEGER NOT NULL,
    delta        INTEGER NOT NULL,
    available    INTEGER NOT NULL,
    held         INTEGER NOT NULL,
    log_index    INTEGER NOT NULL,
    timestamp_ns INTEGER NOT NULL,
    PRIMARY KEY (seq, n)
) WITHOUT ROWID;
CREATE INDEX balance_changes_time ON balance_changes (timestamp_ns);
CREATE INDEX balance_changes_account ON balance_changes (account, timestamp_ns);

-- What people call symbols and assets, and the decimals their prices and amounts are written
-- with: join on symbol or asset to show names and decimal prices.
CREATE TABLE instruments (
    symbol         INTEGER PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    price_decimals INTEGER NOT NULL,
    base           INTEGER NOT NULL,
    quote          INTEGER NOT NULL,
    tick_size      INTEGER NOT NULL,
    lot_size       INTEGER NOT NULL,
    log_index      INTEGER NOT NULL
);
CREATE TABLE assets (
    asset     INTEGER PRIMARY KEY,
    name      TEXT NOT NULL UNIQUE,
    decimals  INTEGER NOT NULL,
    log_index INTEGER NOT NULL
);
";

/// What a file holds, as far as the report database cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// A new or empty SQLite file: no tables, no marks.
    Empty,
    /// A report database of this schema version.
    Current,
}

/// Reads the file's marks; refuses anything that is neither empty nor a current report database.
pub(crate) fn inspect(conn: &Connection, path: &Path) -> Result<Found, ReportError> {
    let not_ours = |reason: String| ReportError::NotAReportDb {
        path: path.to_path_buf(),
        reason,
    };
    // The first read of the header is where a file that is not SQLite shows itself.
    let application_id: i64 = match conn.query_row("PRAGMA application_id", [], |r| r.get(0)) {
        Ok(id) => id,
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::NotADatabase => {
            return Err(not_ours("not an SQLite database".into()))
        }
        Err(source) => {
            return Err(ReportError::Sqlite {
                context: "reading the database header",
                source,
            })
        }
    };
    let user_version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .context("reading the schema version")?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .context("listing the tables")?;
    match (application_id, user_version, objects) {
        (0, 0, 0) => Ok(Found::Empty),
        (APPLICATION_ID, SCHEMA_VERSION, _) => Ok(Found::Current),
        (APPLICATION_ID, found, _) => Err(ReportError::SchemaVersion {
            path: path.to_path_buf(),
            found,
            expected: SCHEMA_VERSION,
        }),
        (other, _, _) => Err(not_ours(format!(
            "an SQLite database of another application (application_id {other:#x}, \
             {objects} tables and indexes)"
        ))),
    }
}

/// Creates the tables in an empty file, or checks the marks of an existing one. One immediate
/// transaction, so two openers of a new file cannot both create it.
pub(crate) fn create_or_check(conn: &mut Connection, path: &Path) -> Result<(), ReportError> {
    if inspect(conn, path)? == Found::Current {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .context("starting the schema transaction")?;
    if inspect(&tx, path)? == Found::Empty {
        tx.execute_batch(TABLES).context("creating the tables")?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .context("marking the database")?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .context("marking the schema version")?;
    }
    tx.commit().context("committing the schema")
}
