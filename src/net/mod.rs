//! QUIC plumbing shared by the node network and the broker gateway: TLS from the cluster's
//! certificate authority, endpoints, and length-prefixed frames on bidirectional streams (the
//! frames and the client half of TLS live in the client crate, which brokers use too).

pub use exchange_client::frame;
pub mod tls;
