//! What a broker needs to trade on the exchange, and nothing of the exchange itself: the
//! broker protocol's messages ([`protocol`], docs/protocol.md), the QUIC client library that
//! follows the leader, resends a broker's new orders exactly once and streams reports and
//! market data ([`client`]), the market data feed it applies ([`feed`]), length-prefixed frames
//! ([`frame`]) and TLS ([`tls`]). It depends on the domain's plain data, quinn, rustls, tokio,
//! serde and postcard: a broker's build compiles no openraft, no SQLite and no engine.

pub mod catalog;
pub mod client;
pub mod feed;
pub mod frame;
pub mod protocol;
pub mod tls;

pub use client::{trust, BatchAnswers, Client, ClientError, SERVER_NAME_DEFAULT};
