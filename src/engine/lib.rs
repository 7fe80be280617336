//! The exchange's matching engine: a pure, deterministic state machine.
//!
//! `(state, sequenced command) -> (state', output events)`. The engine is given each command
//! with its sequence number and the leader's timestamp; it never reads a clock, a random source,
//! the environment or the network, and does no IO. This crate depends on no async runtime and
//! no replication code, so the compiler keeps it that way. Replicas that feed it the same
//! commands emit the same bytes, and compare a running hash of them ([`Engine::output_hash`]).
//!
//! Rooms:
//! - [`engine`](Engine): the state and the single entry point, [`Engine::process`].
//! - `orders`: the order manager: validation, risk checks, funds holds, the order commands.
//! - `matching`: price-time priority matching and settlement.
//! - `book`: price levels (sorted, best last) of FIFO queues linked through the arena.
//! - `arena`: the slab every resting order lives in; handles instead of pointers.
//! - `wallet`: accounts with available and held funds per asset.
//! - `brokers`: which broker may act for which account; exactly-once new orders.
//! - `admin`: accounts, deposits, withdrawals, symbols, limits, halts.
//! - [`snapshot`](Snapshot): the whole state as validated rkyv bytes, and its restore.
//! - `invariants`: the full consistency check tests end with.
//!
//! Integer prices and quantities only (see `exchange_domain`); no hash-map iteration order
//! reaches an output.

mod admin;
mod arena;
mod book;
mod brokers;
mod engine;
mod hash;
mod invariants;
mod limits;
mod matching;
mod orders;
mod sink;
mod snapshot;
mod wallet;

#[cfg(test)]
mod tests;

pub use engine::{AccountOrder, AssetSpec, Engine, Instrument, OpenOrder};
pub use hash::OutputHasher;
pub use invariants::InvariantViolation;
pub use limits::{
    EngineConfig, ACCOUNTS_MAX_DEFAULT, ASSETS_PER_ACCOUNT_MAX, BROKERS_MAX,
    CLIENT_ORDER_ID_WINDOW, ORDERS_OPEN_MAX_DEFAULT, PRICE_BAND_BPS_MAX, SYMBOLS_MAX_DEFAULT,
};
pub use sink::{DiscardSink, EventSink, FnSink};
pub use snapshot::{
    AccountSnapshot, AssetTotal, BalanceSnapshot, BrokerSnapshot, MarketSnapshot, NamedAsset,
    OrderSnapshot, RememberedOrder, RestoreError, Snapshot, SNAPSHOT_FORMAT_VERSION,
};
