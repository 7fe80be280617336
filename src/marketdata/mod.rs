//! Market data: L2 depth, trades and OHLCV candles built from the engine's outputs on every
//! node, published by the leader only.
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
