//! Replication: openraft over the mmap event log, the engine thread it feeds, and the QUIC
//! network between nodes.

// openraft's StorageError is large and is what its traits return; boxing ours would not help.
#![allow(clippy::result_large_err)]

pub mod batch;
pub mod codec;
pub mod data_format;
pub mod divergence;
pub mod election;
pub mod engine_thread;
pub mod keys;
pub mod leadership;
pub mod log_store;
pub mod network;
pub mod reports;
pub mod sequencer;
pub mod state_machine;
pub mod types;
