//! Replication: openraft over the mmap event log, the engine thread it feeds, and the QUIC
//! network between nodes.

pub mod batch;
pub mod codec;
pub mod engine_thread;
pub mod log_store;
pub mod state_machine;
pub mod types;
