//! The reporter: tails committed engine outputs into a SQLite database, off the critical path.
//!
//! ```text
//! engine thread ──EntryOutputs──▶ bounded queue ──▶ "reporter" thread ──one transaction──▶ SQLite
//!                 (blocks when full)                 (drains the queue:     rows + cursor
//!                                                     one write per round)
//! ```
//!
//! Exactly once across crashes: the cursor (the last Raft log index whose rows are in the
//! database) is updated in the same transaction as the rows it covers. After a restart the node
//! re-sends entries from wherever it starts; those at or below the cursor are skipped. A node that
//! installs a snapshot jumps over entries it will never see: the reporter records that as a gap.
//!
//! - [`schema`]: the tables, the schema version, and the check that a file is a report database;
//! - [`db`](ReportDb): the writer (one transaction per batch, prepared statements);
//! - [`thread`](Reporter): the thread that owns the writer, its queue and its cursor;
//! - [`query`]: typed reads for `exchange-cli report` and for tests.
//!
//! Ids (`u64`) are stored bit for bit as SQLite's signed 64-bit integers, so any id a client can
//! send is storable; the query layer converts back. Prices, quantities and amounts are integers.

mod db;
/// The snake_case names the reports use for enums, for other edges that show them.
pub(crate) use db::{
    cancel_reason_name, order_type_name, reject_reason_name, side_name, time_in_force_name,
};
pub mod query;
pub mod schema;
mod thread;

#[cfg(test)]
pub(crate) mod testing;

use std::path::PathBuf;

pub use db::{ReportDb, WriteStats};
pub use thread::{ReportSender, Reporter, ReporterStopped, TrySendError};

/// Entries the reporter's queue holds before `send` blocks (backpressure, never a drop).
pub const REPORT_QUEUE_ENTRIES: usize = 65_536;
/// The most entries one write (one transaction) takes from the queue.
pub const REPORT_BATCH_ENTRIES_MAX: usize = 4_096;
/// The most outputs one write takes: bounds the transaction when entries are large.
pub const REPORT_BATCH_OUTPUTS_MAX: usize = 100_000;
/// At most one write (one transaction) this often: under a steady stream of small entries a
/// transaction each cost a quarter of a core; rows appear at most this much later.
pub const REPORT_ROUND_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

const _: () = assert!(REPORT_BATCH_ENTRIES_MAX <= REPORT_QUEUE_ENTRIES);

/// What one committed log entry produced, in order.
#[derive(Clone, Debug, Default)]
pub struct EntryOutputs {
    pub index: u64,
    pub timestamp_ns: u64,
    pub outputs: Vec<exchange_domain::Output>,
}

/// Why the report database could not be opened, written or read.
#[derive(Debug)]
pub enum ReportError {
    /// SQLite refused an operation; `context` says which.
    Sqlite {
        context: &'static str,
        source: rusqlite::Error,
    },
    /// The file could not be opened at all (missing, a missing directory, no permission).
    Open { path: PathBuf, reason: String },
    /// The file exists but is not a report database (not SQLite, or another application's).
    NotAReportDb { path: PathBuf, reason: String },
    /// A report database of another schema version.
    SchemaVersion {
        path: PathBuf,
        found: i64,
        expected: i64,
    },
    /// The reporter thread could not be started.
    Spawn(std::io::Error),
    /// The outputs broke a contract of the engine (for example a trade without its maker's
    /// execution): a bug upstream, refused rather than stored half-right.
    Invalid(String),
}

impl std::fmt::Display for ReportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReportError::Sqlite { context, source } => write!(f, "{context}: {source}"),
            ReportError::Open { path, reason } => {
                write!(f, "cannot open {}: {reason}", path.display())
            }
            ReportError::NotAReportDb { path, reason } => {
                write!(f, "{} is not a report database: {reason}", path.display())
            }
            ReportError::SchemaVersion {
                path,
                found,
                expected,
            } => write!(
                f,
                "{} is a report database of schema version {found}; this build reads version \
                 {expected}",
                path.display()
            ),
            ReportError::Spawn(e) => write!(f, "cannot start the reporter thread: {e}"),
            ReportError::Invalid(message) => write!(f, "invalid outputs: {message}"),
        }
    }
}

impl std::error::Error for ReportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReportError::Sqlite { source, .. } => Some(source),
            ReportError::Spawn(source) => Some(source),
            _ => None,
        }
    }
}

/// Adds what was being done to a SQLite error.
pub(crate) trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, ReportError>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn context(self, context: &'static str) -> Result<T, ReportError> {
        self.map_err(|source| ReportError::Sqlite { context, source })
    }
}

/// A `u64` as stored: the same 64 bits read as signed (ids above `i64::MAX` read negative in
/// raw SQL; [`from_sql_int`] undoes it).
#[inline(always)]
pub(crate) fn sql_int(value: u64) -> i64 {
    value as i64
}

/// The inverse of [`sql_int`].
#[inline(always)]
pub(crate) fn from_sql_int(value: i64) -> u64 {
    value as u64
}
