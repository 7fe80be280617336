//! What `exchange-cli` does, as library code so tests and benches can call it directly.
//!
//! - [`replay`]: `engine-replay`, a CSV of orders and cancels through one engine (backtest,
//!   audit);
//! - [`workload`]: the seeded synthetic order stream of `engine-bench` and the benchmarks;
//! - [`bench`]: `engine-bench`, throughput and per-command latency percentiles;
//! - [`outcome`]: how the CLI ends, and its exit codes;
//! - [`catalog`]: names and decimal prices at the edge, and execution-report lines.

pub mod bench;
pub mod catalog;
pub mod cluster;
pub mod cluster_bench;
pub mod fix_bench;
pub mod lobster;
pub mod market;
pub mod outcome;
pub mod replay;
pub mod report;
pub mod workload;
