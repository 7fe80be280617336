//! FIX 4.4 order entry for brokers' FIX engines (`--fix-listen`): a translator onto the same
//! admission path as the native protocol, with nothing of its own about orders.
//!
//! - [`codec`]: framing, BodyLength and CheckSum, fields, writing messages;
//! - [`clordid`]: ClOrdID(11) to the engine's client order id and back;
//! - [`orders`]: order messages into commands, the engine's outputs into ExecutionReports;
//! - [`session`]: what a session keeps between connections (sequence numbers, sent messages);
//! - [`server`]: the acceptor and the session rules.
//!
//! docs/fix.md is the broker's guide: the messages and tags, the session rules, and what
//! survives a reconnect and a change of leader.

pub mod clordid;
pub mod codec;
pub mod orders;
pub mod server;
pub mod session;

/// TargetCompID(56) of every session: the exchange.
pub const EXCHANGE_COMP_ID: &str = "EXCHANGE";
