//! Market data: L2 depth, trades and OHLCV candles built from the engine's outputs on every
//! node, alike on each (sequence numbers come from the log), so that any node in touch with
//! the leader may serve them.
//!
//! - [`builder`]: the deterministic builder the engine thread runs between entries;
//! - [`feed`]: the messages, their sequence numbers, and the state a subscriber keeps;
//! - [`hub`]: recent messages kept for resumes, and the fan-out to subscribers;
//! - [`history`]: every trade and closed candle in SQLite, for reads beyond the hub's window.

pub mod builder;
pub use exchange_client::feed;
pub mod history;
pub mod hub;

pub use builder::MarketData;
pub use feed::{Channel, Interval, MdBody, MdMessage, StreamState};

/// A node this many entries behind what it knows committed serves no market data (it sends
/// subscribers elsewhere) and is not ready (`GET /readyz`).
pub const SERVED_APPLY_LAG_MAX: u64 = 1_000;
