//! Plain data of the exchange: identifiers, integer units, commands and output events.
//!
//! Everything here is data without behaviour beyond validation helpers and a canonical
//! encoding. Commands are what the leader sequences into the replicated log; events are what
//! the engine emits for each command. Both derive `rkyv` (for the log and the wire, read
//! zero-copy) and `serde` (for JSON tools and tests).
//!
//! Units, chosen so that all money arithmetic is exact integer arithmetic:
//! - a [`Qty`] counts base-asset units (shares, satoshis...);
//! - a [`Price`] counts quote-asset units per base-asset unit, so `price * qty` is the
//!   notional in quote-asset units with no scaling;
//! - each symbol declares a `tick_size` (prices must be multiples of it) and a `lot_size`
//!   (quantities must be multiples of it). LOBSTER's US equities, for example, use prices in
//!   units of $0.0001 with a tick of 100 ($0.01) and a lot of 1 share.

mod command;
mod event;
mod ids;
mod names;
mod order;
mod units;

pub use command::{
    AdminCommand, ArchivedInput, BrokerCommand, Cancel, CancelReplace, Command, FixSessionMark,
    Input, KeyDigest, KeySalt, MassCancel, NewOrder, RiskLimits, SymbolSpec, INPUT_ARCHIVED_BYTES,
};
pub use event::{
    CancelReason, Event, Liquidity, Output, RejectReason, OUTPUT_CANONICAL_BYTES_MAX,
    REJECT_REASONS,
};
pub use ids::{AccountId, AssetId, BrokerId, ClientOrderId, ExecId, OrderId, SymbolId, TradeId};
pub use names::{
    format_decimal, parse_decimal, CompId, CompIdError, DecimalError, Name, NameError,
    COMP_ID_BYTES_MAX, DECIMALS_MAX, EXCHANGE_COMP_ID, NAME_BYTES_MAX,
};
pub use order::{OrderType, SelfTradePrevention, Side, TimeInForce};
pub use units::{Amount, Price, Qty};
