//! The broker endpoint: QUIC (TLS) on every node. The leader sequences what brokers send; a
//! follower answers with the leader's address, which the client library follows.
//!
//! This is the minimal endpoint of the replicated cluster: commands in, each command's outputs
//! back once its entry is committed and applied. Sessions, authentication, exactly-once
//! resends and execution-report fan-out build on it.

pub use exchange_client::client;
pub mod credentials;
pub mod key_salt;
pub mod metrics;
pub use exchange_client::protocol;
pub mod server;
