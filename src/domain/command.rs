//! Commands: what the leader sequences into the log and every engine applies.

use serde::{Deserialize, Serialize};

use crate::{
    AccountId, Amount, AssetId, BrokerId, ClientOrderId, CompId, Event, Name, OrderId, OrderType,
    Price, Qty, RejectReason, SelfTradePrevention, Side, SymbolId, TimeInForce,
};

/// One sequenced command: the engine's entire input. Nothing else reaches the engine.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub struct Input {
    /// The global sequence number, strictly increasing (derived from the Raft log index).
    pub seq: u64,
    /// The leader's wall clock in nanoseconds since the Unix epoch, stamped by the sequencer.
    /// Non-decreasing; the engine never reads a clock of its own.
    pub timestamp_ns: u64,
    /// Who sent the command, as authenticated by the gateway.
    pub broker: BrokerId,
    pub command: Command,
}

/// The size of an archived [`Input`] as it sits in the log. Pinned so a change is deliberate:
/// it changes the on-disk format.
pub const INPUT_ARCHIVED_BYTES: usize = 88;
const _: () = assert!(std::mem::size_of::<ArchivedInput>() == INPUT_ARCHIVED_BYTES);
// A symbol's description (the largest admin command) must not outgrow a new order: every
// command in a batch takes the largest variant's room.
const _: () = assert!(
    std::mem::size_of::<ArchivedAdminCommand>() <= std::mem::size_of::<ArchivedNewOrder>() + 8
);

impl NewOrder {
    /// The event that refuses this order.
    pub fn rejected(&self, reason: RejectReason) -> Event {
        Event::Rejected {
            account: self.account,
            symbol: self.symbol,
            client_order_id: self.client_order_id,
            reason,
        }
    }
}

impl Command {
    /// The event that refuses this command as a whole.
    pub fn rejected(&self, reason: RejectReason) -> Event {
        match *self {
            Command::NewOrder(order) => order.rejected(reason),
            Command::Cancel(Cancel { account, order_id }) => Event::CancelRejected {
                account,
                order_id,
                reason,
            },
            Command::CancelReplace(CancelReplace {
                account, order_id, ..
            }) => Event::ReplaceRejected {
                account,
                order_id,
                reason,
            },
            Command::MassCancel(MassCancel { account, .. }) => {
                Event::MassCancelRejected { account, reason }
            }
            Command::Admin(_) => Event::AdminRejected { reason },
        }
    }

    /// The account an order command acts for (`None` for administration).
    pub fn account(&self) -> Option<AccountId> {
        match self {
            Command::NewOrder(order) => Some(order.account),
            Command::Cancel(cancel) => Some(cancel.account),
            Command::CancelReplace(replace) => Some(replace.account),
            Command::MassCancel(mass) => Some(mass.account),
            Command::Admin(_) => None,
        }
    }
}

/// A command with the broker it came from: what the sequencer puts into a batch.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub struct BrokerCommand {
    pub broker: BrokerId,
    pub command: Command,
}

impl BrokerCommand {
    /// A command from the exchange operator.
    pub fn operator(command: Command) -> Self {
        BrokerCommand {
            broker: BrokerId::OPERATOR,
            command,
        }
    }
}

/// The cluster's key salt: random bytes chosen once, by the first leader of a new cluster,
/// that every broker key digest is keyed with (HMAC-SHA-256), so that a digest in one
/// cluster's log or snapshot says nothing of the same key in another, and no table computed
/// ahead of time finds a key.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq))]
pub struct KeySalt(pub [u8; 16]);

/// The digest of a broker's API key: HMAC-SHA-256 keyed with the cluster's [`KeySalt`] (plain
/// SHA-256 in a cluster made before salts, which has none). The replicated state holds only
/// digests, so no log, snapshot or report holds a usable key.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq))]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    /// The digest of no key: a broker holding it is revoked (no key hashes to all zeros).
    pub const REVOKED: KeyDigest = KeyDigest([0; 32]);

    pub fn is_revoked(&self) -> bool {
        *self == KeyDigest::REVOKED
    }
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[rkyv(derive(Debug))]
pub enum Command {
    NewOrder(NewOrder),
    Cancel(Cancel),
    CancelReplace(CancelReplace),
    MassCancel(MassCancel),
    Admin(AdminCommand),
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub struct NewOrder {
    pub account: AccountId,
    pub symbol: SymbolId,
    pub client_order_id: ClientOrderId,
    pub side: Side,
    pub order_type: OrderType,
    pub time_in_force: TimeInForce,
    /// The limit price, or for a market order its protection price (the worst acceptable).
    pub price: Price,
    pub qty: Qty,
    pub self_trade_prevention: SelfTradePrevention,
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub struct Cancel {
    pub account: AccountId,
    pub order_id: OrderId,
}

/// Changes a resting order's price and/or open quantity. Reducing the quantity at the same
/// price keeps the order's place in its queue; a new price or a larger quantity loses it
/// (the order re-enters as if new, and may trade if the new price crosses).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub struct CancelReplace {
    pub account: AccountId,
    pub order_id: OrderId,
    pub price: Price,
    /// The new open (leaves) quantity.
    pub qty: Qty,
}

/// Cancels every open order of an account, on one symbol or on all.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub struct MassCancel {
    pub account: AccountId,
    pub symbol: Option<SymbolId>,
}

/// Static description of a tradable symbol.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub struct SymbolSpec {
    pub symbol: SymbolId,
    pub base: AssetId,
    pub quote: AssetId,
    /// Prices must be positive multiples of this.
    pub tick_size: Price,
    /// Quantities must be positive multiples of this.
    pub lot_size: Qty,
    /// What people call it; unique among symbols.
    pub name: Name,
    /// Decimals of its prices as people write them: a price of 10050 with 2 decimals reads
    /// "100.50". Display only: the engine works on the integers.
    pub price_decimals: u8,
}

/// Per-account pre-trade limits.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub struct RiskLimits {
    pub max_order_qty: Qty,
    /// Largest `price * qty` of a single order, in quote-asset units.
    pub max_order_notional: Amount,
    pub max_open_orders: u32,
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[rkyv(derive(Debug))]
pub enum AdminCommand {
    /// Opens an account with the engine's default risk limits, owned by `owner`: only that
    /// broker (and the operator) may act for it.
    CreateAccount {
        account: AccountId,
        owner: BrokerId,
    },
    /// Registers a broker, or replaces its API key.
    SetBrokerKey {
        broker: BrokerId,
        key_digest: KeyDigest,
    },
    Deposit {
        account: AccountId,
        asset: AssetId,
        amount: Amount,
    },
    Withdraw {
        account: AccountId,
        asset: AssetId,
        amount: Amount,
    },
    AddSymbol(SymbolSpec),
    /// Names an asset and the decimals its amounts are written with (display only: balances
    /// stay integers). Unique ids and names; an asset need not be named to be deposited.
    AddAsset {
        asset: AssetId,
        name: Name,
        decimals: u8,
    },
    SetRiskLimits {
        account: AccountId,
        limits: RiskLimits,
    },
    /// Sets the price band and, when `reference_price` is positive, the reference price. A new
    /// symbol has no band (and no reference price until its first trade).
    SetPriceBand {
        symbol: SymbolId,
        price_band_bps: u32,
        reference_price: Price,
    },
    HaltSymbol {
        symbol: SymbolId,
    },
    ResumeSymbol {
        symbol: SymbolId,
    },
    /// Gives a registered broker the SenderCompID its FIX sessions log on with, or replaces
    /// it. A CompID names one broker.
    SetFixCompId {
        broker: BrokerId,
        comp_id: CompId,
    },
    /// Where a FIX session stands, as its leader last recorded it, so that a new leader goes
    /// on with its numbers (docs/fix.md, "Sequence numbers and failover"). Replaces the
    /// session's earlier mark.
    MarkFixSession {
        comp_id: CompId,
        mark: FixSessionMark,
    },
    /// Sets the cluster's key salt: once, before any broker is registered (a digest made
    /// without it would no longer match). Proposed by the first leader of a new cluster.
    SetKeySalt {
        salt: KeySalt,
    },
}

/// A FIX session's place, replicated: what a new leader needs to go on with it.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq))]
pub struct FixSessionMark {
    /// The broker's MsgSeqNum expected next: every message below it had its commands
    /// sequenced before this mark.
    pub next_in: u32,
    /// The exchange's MsgSeqNum: no message of the session was, or will be until a later
    /// mark, numbered at or above it (numbers are reserved ahead).
    pub next_out: u32,
    /// The report journal's sequence number up to which the broker confirmed it received its
    /// execution reports (it answered a TestRequest sent after them).
    pub reports_received: u64,
}
