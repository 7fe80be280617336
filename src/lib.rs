//! The exchange cluster: a stock exchange whose deterministic matching engine runs on every
//! node of a Raft cluster.
//!
//! The workspace is one crate per room that must stay pure, and this crate for the rest:
//!
//! - [`domain`] (`src/domain`): plain data: ids, integer prices and quantities, commands, events.
//! - [`engine`] (`src/engine`): the pure state machine: order manager (risk, wallets), order
//!   books, matching, output hash, snapshots. No IO, no clock, no async.
//! - [`log`] (`src/log`): the mmap event log: segments, CRC32C records, recovery, group commit.
//! - [`latency`]: fixed-bucket latency histograms for the nodes' metrics.
//! - [`net`]: QUIC plumbing: TLS from the cluster's authority, length-prefixed frames.
//! - [`replication`]: openraft over the log, the engine thread it feeds, the node network.
//! - [`gateway`]: the broker endpoint (QUIC), its protocol and the client library.
//! - [`http`]: the public market data API and the cluster's state over HTTP and WebSocket.
//! - [`node`]: one node wired together: configuration, start, roles, stop.
//! - [`cli`]: what `exchange-cli` does (replay, synthetic workloads, engine benchmark).
//!
//! Data flows down this list; nothing below reaches back up. Binaries: `exchange-node` and
//! `exchange-cli` (src/bin). See README.md for how to run them and docs/architecture.md for the
//! map.

pub use exchange_client as client;
pub use exchange_domain as domain;
pub use exchange_engine as engine;
pub use exchange_log as log;

pub mod cli;
pub mod fix;
pub mod gateway;
pub mod http;
pub mod latency;
pub mod marketdata;
pub mod net;
pub mod node;
pub mod replication;
pub mod report;
