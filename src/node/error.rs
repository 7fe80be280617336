//! Why a node could not start: one variant per thing it needs, each naming what failed, so
//! that an operator (or a supervisor reading the exit) knows where to look.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::net::tls::TlsError;
use crate::replication::data_format::DataFormatError;
use crate::replication::log_store::LogStoreError;

#[derive(Debug)]
pub enum StartError {
    /// The settings contradict each other (`NodeConfig::check`), or Raft refuses them.
    Config(String),
    /// The node's certificate, key or the cluster's authority.
    Certificates(TlsError),
    /// The data directory holds another format, or cannot be marked.
    DataFormat {
        dir: PathBuf,
        source: DataFormatError,
    },
    /// The log could not be opened or recovered.
    Log(LogStoreError),
    /// The stored snapshot is damaged, or the engine cannot be restored from it.
    Snapshot { dir: PathBuf, reason: String },
    /// The reporting database (`--report-db`).
    ReportDb(String),
    /// The market data history (`--md-history`).
    MdHistory(String),
    /// A thread or runtime of the node's own could not be started.
    Threads(String),
    /// The engine thread could not start.
    Engine(String),
    /// A listener could not be bound (what it is for, and where).
    Listen {
        what: &'static str,
        addr: SocketAddr,
        reason: String,
    },
    /// openraft would not start.
    Raft(String),
    /// The brokers file (`--brokers`).
    Brokers(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(why) => write!(f, "configuration: {why}"),
            StartError::Certificates(e) => write!(
                f,
                "{e} (make development certificates with `exchange-node gen-certs`)"
            ),
            StartError::DataFormat { dir, source } => write!(f, "{}: {source}", dir.display()),
            StartError::Log(e) => write!(f, "log: {e}"),
            StartError::Snapshot { dir, reason } => {
                write!(f, "{}: snapshot: {reason}", dir.display())
            }
            StartError::ReportDb(why) => write!(f, "--report-db: {why}"),
            StartError::MdHistory(why) => write!(f, "--md-history: {why}"),
            StartError::Threads(why) => write!(f, "{why}"),
            StartError::Engine(why) => write!(f, "engine: {why}"),
            StartError::Listen { what, addr, reason } => {
                write!(f, "{what} listener {addr}: {reason}")
            }
            StartError::Raft(why) => write!(f, "starting Raft: {why}"),
            StartError::Brokers(why) => write!(f, "brokers file: {why}"),
        }
    }
}

impl std::error::Error for StartError {}
