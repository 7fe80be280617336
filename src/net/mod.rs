//! QUIC plumbing shared by the node network and the broker gateway: TLS from the cluster's
//! certificate authority, endpoints, and length-prefixed frames on bidirectional streams.

pub mod frame;
pub mod tls;
