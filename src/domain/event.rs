//! Output events: everything the engine says, in the order it says it.

use serde::{Deserialize, Serialize};

use crate::{
    AccountId, Amount, AssetId, BrokerId, ClientOrderId, CompId, ExecId, FixSessionMark, KeyDigest,
    KeySalt, Name, OrderId, OrderType, Price, Qty, RiskLimits, Side, SymbolId, SymbolSpec,
    TimeInForce, TradeId,
};

/// One output event, stamped with the sequence number and timestamp of the input that caused it.
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
pub struct Output {
    pub seq: u64,
    pub timestamp_ns: u64,
    pub event: Event,
}

/// Why a command was refused. Exhaustive: every refusal in the exchange is one of these, and
/// the numbers (grouped by the stage that decides) are stable on the wire and in reports.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[rkyv(derive(Debug, PartialEq))]
pub enum RejectReason {
    // 1xx: the command itself is malformed or names something that does not exist.
    UnknownSymbol,
    UnknownAccount,
    UnknownOrder,
    InvalidPrice,
    PriceOffTick,
    InvalidQuantity,
    QtyOffLot,
    /// A market order must be IOC or FOK.
    InvalidTimeInForce,
    /// A broker's order needs a client order id above zero.
    InvalidClientOrderId,
    /// The client order id is older than the exactly-once window remembers: it cannot be told
    /// apart from a resend, so it is refused rather than risk a double.
    StaleClientOrderId,
    // 2xx: risk and state checks before matching.
    SymbolHalted,
    MaxOrderQtyExceeded,
    MaxNotionalExceeded,
    PriceOutsideBand,
    MaxOpenOrdersExceeded,
    NotOrderOwner,
    /// The exchange-wide bound on resting orders is reached.
    OrderCapacityExceeded,
    /// The broker may not act for this account, or may not administer.
    NotPermitted,
    // 3xx: funds.
    InsufficientFunds,
    // 4xx: matching.
    PostOnlyWouldTrade,
    // 5xx: administration.
    AccountExists,
    SymbolExists,
    InvalidAmount,
    /// The deposit would take the asset's total in the exchange past what an amount can hold.
    BalanceOverflow,
    InvalidSymbolSpec,
    InvalidRiskLimits,
    /// The account already holds as many different assets as an account may, or the exchange
    /// has named as many assets as it may.
    TooManyAssets,
    TooManyAccounts,
    TooManySymbols,
    TooManyBrokers,
    /// The asset id is already named.
    AssetExists,
    /// Another symbol already has this name, or another asset (a symbol and its base asset
    /// may share one: AAPL trades AAPL).
    NameTaken,
    /// An asset's name or decimals are not valid.
    InvalidAssetSpec,
    /// Another broker already has this key: a key must name one broker.
    KeyInUse,
    /// The FIX CompID is malformed or another broker's, or the broker is not registered; or a
    /// FIX session's mark is malformed, or one too many.
    InvalidCompId,
}

/// How many reject reasons there are; `reason as usize` is below it.
pub const REJECT_REASONS: usize = 35;

impl RejectReason {
    /// Every reason, in declaration order: `ALL[reason as usize] == reason`.
    pub const ALL: [RejectReason; REJECT_REASONS] = [
        RejectReason::UnknownSymbol,
        RejectReason::UnknownAccount,
        RejectReason::UnknownOrder,
        RejectReason::InvalidPrice,
        RejectReason::PriceOffTick,
        RejectReason::InvalidQuantity,
        RejectReason::QtyOffLot,
        RejectReason::InvalidTimeInForce,
        RejectReason::InvalidClientOrderId,
        RejectReason::StaleClientOrderId,
        RejectReason::SymbolHalted,
        RejectReason::MaxOrderQtyExceeded,
        RejectReason::MaxNotionalExceeded,
        RejectReason::PriceOutsideBand,
        RejectReason::MaxOpenOrdersExceeded,
        RejectReason::NotOrderOwner,
        RejectReason::OrderCapacityExceeded,
        RejectReason::NotPermitted,
        RejectReason::InsufficientFunds,
        RejectReason::PostOnlyWouldTrade,
        RejectReason::AccountExists,
        RejectReason::SymbolExists,
        RejectReason::InvalidAmount,
        RejectReason::BalanceOverflow,
        RejectReason::InvalidSymbolSpec,
        RejectReason::InvalidRiskLimits,
        RejectReason::TooManyAssets,
        RejectReason::TooManyAccounts,
        RejectReason::TooManySymbols,
        RejectReason::TooManyBrokers,
        RejectReason::AssetExists,
        RejectReason::NameTaken,
        RejectReason::InvalidAssetSpec,
        RejectReason::KeyInUse,
        RejectReason::InvalidCompId,
    ];

    /// The stable numeric code (1xx request, 2xx risk, 3xx funds, 4xx matching, 5xx admin).
    pub fn code(self) -> u16 {
        match self {
            RejectReason::UnknownSymbol => 100,
            RejectReason::UnknownAccount => 101,
            RejectReason::UnknownOrder => 102,
            RejectReason::InvalidPrice => 103,
            RejectReason::PriceOffTick => 104,
            RejectReason::InvalidQuantity => 105,
            RejectReason::QtyOffLot => 106,
            RejectReason::InvalidTimeInForce => 107,
            RejectReason::InvalidClientOrderId => 108,
            RejectReason::StaleClientOrderId => 109,
            RejectReason::SymbolHalted => 200,
            RejectReason::MaxOrderQtyExceeded => 201,
            RejectReason::MaxNotionalExceeded => 202,
            RejectReason::PriceOutsideBand => 203,
            RejectReason::MaxOpenOrdersExceeded => 204,
            RejectReason::NotOrderOwner => 205,
            RejectReason::OrderCapacityExceeded => 206,
            RejectReason::NotPermitted => 207,
            RejectReason::InsufficientFunds => 300,
            RejectReason::PostOnlyWouldTrade => 400,
            RejectReason::AccountExists => 500,
            RejectReason::SymbolExists => 501,
            RejectReason::InvalidAmount => 502,
            RejectReason::BalanceOverflow => 503,
            RejectReason::InvalidSymbolSpec => 504,
            RejectReason::InvalidRiskLimits => 505,
            RejectReason::TooManyAssets => 506,
            RejectReason::TooManyAccounts => 507,
            RejectReason::TooManySymbols => 508,
            RejectReason::TooManyBrokers => 509,
            RejectReason::AssetExists => 510,
            RejectReason::NameTaken => 511,
            RejectReason::InvalidAssetSpec => 512,
            RejectReason::KeyInUse => 513,
            RejectReason::InvalidCompId => 514,
        }
    }
}

/// Why an order left the book without being filled.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[rkyv(derive(Debug, PartialEq))]
#[repr(u8)]
pub enum CancelReason {
    /// The owner asked.
    Requested = 0,
    /// The owner's mass cancel.
    MassCancel = 1,
    /// What an IOC or market order could not trade at once.
    Unfilled = 2,
    /// A fill-or-kill order that could not be filled completely.
    FillOrKill = 3,
    /// Self-trade prevention.
    SelfTrade = 4,
}

/// Maker (the resting order) or taker (the incoming one).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[rkyv(derive(Debug, PartialEq))]
#[repr(u8)]
pub enum Liquidity {
    Maker = 0,
    Taker = 1,
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
pub enum Event {
    /// A new order passed every check; it now trades and/or rests.
    Accepted {
        order_id: OrderId,
        account: AccountId,
        symbol: SymbolId,
        client_order_id: ClientOrderId,
        side: Side,
        order_type: OrderType,
        time_in_force: TimeInForce,
        price: Price,
        qty: Qty,
    },
    /// A new order was refused; no order exists.
    Rejected {
        account: AccountId,
        symbol: SymbolId,
        client_order_id: ClientOrderId,
        reason: RejectReason,
    },
    /// One side of one match. `leaves_qty` is what remains open: zero means filled, more
    /// means partially filled.
    Execution {
        exec_id: ExecId,
        trade_id: TradeId,
        order_id: OrderId,
        account: AccountId,
        symbol: SymbolId,
        client_order_id: ClientOrderId,
        side: Side,
        price: Price,
        qty: Qty,
        leaves_qty: Qty,
        liquidity: Liquidity,
        counter_order_id: OrderId,
    },
    /// An order left the book (or an incoming order's remainder was dropped) unfilled.
    Cancelled {
        order_id: OrderId,
        account: AccountId,
        symbol: SymbolId,
        client_order_id: ClientOrderId,
        leaves_qty: Qty,
        reason: CancelReason,
    },
    /// A cancel-replace took effect. `qty` is the new open quantity.
    Replaced {
        order_id: OrderId,
        account: AccountId,
        symbol: SymbolId,
        price: Price,
        qty: Qty,
        priority_kept: bool,
    },
    CancelRejected {
        account: AccountId,
        order_id: OrderId,
        reason: RejectReason,
    },
    ReplaceRejected {
        account: AccountId,
        order_id: OrderId,
        reason: RejectReason,
    },
    /// A mass cancel finished; one `Cancelled` event per order precedes it.
    MassCancelled {
        account: AccountId,
        symbol: Option<SymbolId>,
        count: u32,
    },
    MassCancelRejected {
        account: AccountId,
        reason: RejectReason,
    },
    AccountCreated {
        account: AccountId,
    },
    /// A deposit (positive delta) or withdrawal (negative delta) took effect.
    BalanceChanged {
        account: AccountId,
        asset: AssetId,
        delta: Amount,
        available: Amount,
        held: Amount,
    },
    SymbolAdded {
        spec: SymbolSpec,
    },
    AssetAdded {
        asset: AssetId,
        name: Name,
        decimals: u8,
    },
    RiskLimitsSet {
        account: AccountId,
        limits: RiskLimits,
    },
    PriceBandSet {
        symbol: SymbolId,
        price_band_bps: u32,
        reference_price: Price,
    },
    TradingStatus {
        symbol: SymbolId,
        halted: bool,
    },
    AdminRejected {
        reason: RejectReason,
    },
    /// A broker resent a client order id it had used: nothing new happened. `order_id` is
    /// the original order (or, when it was rejected, the sequence number of the original
    /// command) and `rejected` the original reject reason, if any.
    DuplicateOrder {
        account: AccountId,
        client_order_id: ClientOrderId,
        order_id: OrderId,
        rejected: Option<RejectReason>,
    },
    BrokerKeySet {
        broker: BrokerId,
        key_digest: KeyDigest,
    },
    FixCompIdSet {
        broker: BrokerId,
        comp_id: CompId,
    },
    FixSessionMarked {
        comp_id: CompId,
        mark: FixSessionMark,
    },
    KeySaltSet {
        salt: KeySalt,
    },
}

impl Event {
    /// Why a command was refused, if the event is a refusal.
    pub fn reject_reason(&self) -> Option<RejectReason> {
        match *self {
            Event::Rejected { reason, .. }
            | Event::CancelRejected { reason, .. }
            | Event::ReplaceRejected { reason, .. }
            | Event::MassCancelRejected { reason, .. }
            | Event::AdminRejected { reason } => Some(reason),
            _ => None,
        }
    }

    /// The account the event is about, if it is about one.
    pub fn account(&self) -> Option<AccountId> {
        match *self {
            Event::Accepted { account, .. }
            | Event::Rejected { account, .. }
            | Event::Execution { account, .. }
            | Event::Cancelled { account, .. }
            | Event::Replaced { account, .. }
            | Event::CancelRejected { account, .. }
            | Event::ReplaceRejected { account, .. }
            | Event::MassCancelled { account, .. }
            | Event::MassCancelRejected { account, .. }
            | Event::AccountCreated { account }
            | Event::BalanceChanged { account, .. }
            | Event::RiskLimitsSet { account, .. }
            | Event::DuplicateOrder { account, .. } => Some(account),
            Event::SymbolAdded { .. }
            | Event::AssetAdded { .. }
            | Event::PriceBandSet { .. }
            | Event::TradingStatus { .. }
            | Event::AdminRejected { .. }
            | Event::BrokerKeySet { .. }
            | Event::FixCompIdSet { .. }
            | Event::FixSessionMarked { .. }
            | Event::KeySaltSet { .. } => None,
        }
    }
}

/// The longest canonical encoding of an [`Output`]: 2 header words, a tag and at most 12 fields.
pub const OUTPUT_CANONICAL_BYTES_MAX: usize = 15 * 8;

/// Encodes into whole little-endian words, so the encoding is the same on every platform.
struct WordWriter<'a> {
    buf: &'a mut [u8; OUTPUT_CANONICAL_BYTES_MAX],
    len: usize,
}

impl WordWriter<'_> {
    #[inline(always)]
    fn word(&mut self, value: u64) -> &mut Self {
        self.buf[self.len..self.len + 8].copy_from_slice(&value.to_le_bytes());
        self.len += 8;
        self
    }
    #[inline(always)]
    fn signed(&mut self, value: i64) -> &mut Self {
        self.word(value as u64)
    }
    /// Bytes as little-endian words (a whole number of them).
    fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        for chunk in bytes.chunks_exact(8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.word(u64::from_le_bytes(word));
        }
        self
    }
    /// A name as two words, zero-padded.
    fn name(&mut self, name: Name) -> &mut Self {
        let mut words = [0u8; 16];
        words[..name.0.len()].copy_from_slice(&name.0);
        self.word(u64::from_le_bytes(words[..8].try_into().expect("8 bytes")))
            .word(u64::from_le_bytes(words[8..].try_into().expect("8 bytes")))
    }
}

impl Output {
    /// Writes the canonical byte encoding of this output into `buf` and returns its length.
    ///
    /// This encoding defines the engine's output hash: replicas and replays compare hashes of
    /// it, so it must never depend on memory layout or compiler choices. Changing it changes
    /// every recorded hash: do so only deliberately.
    #[inline]
    pub fn canonical_bytes(&self, buf: &mut [u8; OUTPUT_CANONICAL_BYTES_MAX]) -> usize {
        let mut w = WordWriter { buf, len: 0 };
        w.word(self.seq).word(self.timestamp_ns);
        match self.event {
            Event::Accepted {
                order_id,
                account,
                symbol,
                client_order_id,
                side,
                order_type,
                time_in_force,
                price,
                qty,
            } => {
                w.word(1)
                    .word(order_id.0)
                    .word(account.0)
                    .word(symbol.0 as u64)
                    .word(client_order_id.0)
                    .word(side as u64)
                    .word(order_type as u64)
                    .word(time_in_force as u64)
                    .signed(price.0)
                    .signed(qty.0);
            }
            Event::Rejected {
                account,
                symbol,
                client_order_id,
                reason,
            } => {
                w.word(2)
                    .word(account.0)
                    .word(symbol.0 as u64)
                    .word(client_order_id.0)
                    .word(reason.code() as u64);
            }
            Event::Execution {
                exec_id,
                trade_id,
                order_id,
                account,
                symbol,
                client_order_id,
                side,
                price,
                qty,
                leaves_qty,
                liquidity,
                counter_order_id,
            } => {
                w.word(3)
                    .word(exec_id.0)
                    .word(trade_id.0)
                    .word(order_id.0)
                    .word(account.0)
                    .word(symbol.0 as u64)
                    .word(client_order_id.0)
                    .word(side as u64)
                    .signed(price.0)
                    .signed(qty.0)
                    .signed(leaves_qty.0)
                    .word(liquidity as u64)
                    .word(counter_order_id.0);
            }
            Event::Cancelled {
                order_id,
                account,
                symbol,
                client_order_id,
                leaves_qty,
                reason,
            } => {
                w.word(4)
                    .word(order_id.0)
                    .word(account.0)
                    .word(symbol.0 as u64)
                    .word(client_order_id.0)
                    .signed(leaves_qty.0)
                    .word(reason as u64);
            }
            Event::Replaced {
                order_id,
                account,
                symbol,
                price,
                qty,
                priority_kept,
            } => {
                w.word(5)
                    .word(order_id.0)
                    .word(account.0)
                    .word(symbol.0 as u64)
                    .signed(price.0)
                    .signed(qty.0)
                    .word(priority_kept as u64);
            }
            Event::CancelRejected {
                account,
                order_id,
                reason,
            } => {
                w.word(6)
                    .word(account.0)
                    .word(order_id.0)
                    .word(reason.code() as u64);
            }
            Event::ReplaceRejected {
                account,
                order_id,
                reason,
            } => {
                w.word(7)
                    .word(account.0)
                    .word(order_id.0)
                    .word(reason.code() as u64);
            }
            Event::MassCancelled {
                account,
                symbol,
                count,
            } => {
                w.word(8)
                    .word(account.0)
                    .word(symbol.map_or(u64::MAX, |s| s.0 as u64))
                    .word(count as u64);
            }
            Event::MassCancelRejected { account, reason } => {
                w.word(16).word(account.0).word(reason.code() as u64);
            }
            Event::AccountCreated { account } => {
                w.word(9).word(account.0);
            }
            Event::BalanceChanged {
                account,
                asset,
                delta,
                available,
                held,
            } => {
                w.word(10)
                    .word(account.0)
                    .word(asset.0 as u64)
                    .signed(delta.0)
                    .signed(available.0)
                    .signed(held.0);
            }
            Event::SymbolAdded { spec } => {
                w.word(11)
                    .word(spec.symbol.0 as u64)
                    .word(spec.base.0 as u64)
                    .word(spec.quote.0 as u64)
                    .signed(spec.tick_size.0)
                    .signed(spec.lot_size.0)
                    .name(spec.name)
                    .word(spec.price_decimals as u64);
            }
            Event::AssetAdded {
                asset,
                name,
                decimals,
            } => {
                w.word(19)
                    .word(asset.0 as u64)
                    .name(name)
                    .word(decimals as u64);
            }
            Event::RiskLimitsSet { account, limits } => {
                w.word(12)
                    .word(account.0)
                    .signed(limits.max_order_qty.0)
                    .signed(limits.max_order_notional.0)
                    .word(limits.max_open_orders as u64);
            }
            Event::PriceBandSet {
                symbol,
                price_band_bps,
                reference_price,
            } => {
                w.word(13)
                    .word(symbol.0 as u64)
                    .word(price_band_bps as u64)
                    .signed(reference_price.0);
            }
            Event::TradingStatus { symbol, halted } => {
                w.word(14).word(symbol.0 as u64).word(halted as u64);
            }
            Event::AdminRejected { reason } => {
                w.word(15).word(reason.code() as u64);
            }
            Event::DuplicateOrder {
                account,
                client_order_id,
                order_id,
                rejected,
            } => {
                w.word(17)
                    .word(account.0)
                    .word(client_order_id.0)
                    .word(order_id.0)
                    .word(rejected.map_or(0, |r| r.code() as u64));
            }
            Event::BrokerKeySet { broker, key_digest } => {
                w.word(18).word(broker.0 as u64).bytes(&key_digest.0);
            }
            Event::FixCompIdSet { broker, comp_id } => {
                w.word(20).word(broker.0 as u64).bytes(&comp_id.0);
            }
            Event::FixSessionMarked { comp_id, mark } => {
                w.word(21)
                    .bytes(&comp_id.0)
                    .word(mark.next_in as u64)
                    .word(mark.next_out as u64)
                    .word(mark.reports_received);
            }
            Event::KeySaltSet { salt } => {
                w.word(22).bytes(&salt.0);
            }
        }
        w.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_bytes_differ_when_any_field_differs() {
        let base = Output {
            seq: 7,
            timestamp_ns: 9,
            event: Event::Cancelled {
                order_id: OrderId(1),
                account: AccountId(2),
                symbol: SymbolId(3),
                client_order_id: ClientOrderId(4),
                leaves_qty: Qty(5),
                reason: CancelReason::Requested,
            },
        };
        let mut other = base;
        if let Event::Cancelled { reason, .. } = &mut other.event {
            *reason = CancelReason::MassCancel;
        }
        let (mut a, mut b) = (
            [0u8; OUTPUT_CANONICAL_BYTES_MAX],
            [0u8; OUTPUT_CANONICAL_BYTES_MAX],
        );
        let (la, lb) = (base.canonical_bytes(&mut a), other.canonical_bytes(&mut b));
        assert_eq!(la, lb);
        assert_ne!(a[..la], b[..lb]);
    }

    #[test]
    fn events_round_trip_through_a_binary_format() {
        let event = Event::Accepted {
            order_id: OrderId(1),
            account: AccountId(2),
            symbol: SymbolId(3),
            client_order_id: ClientOrderId(4),
            side: Side::Sell,
            order_type: OrderType::Limit,
            time_in_force: TimeInForce::Ioc,
            price: Price(5),
            qty: Qty(6),
        };
        let bytes = postcard::to_allocvec(&event).expect("serialize");
        assert_eq!(
            postcard::from_bytes::<Event>(&bytes).expect("deserialize"),
            event
        );
    }

    #[test]
    fn every_reason_is_listed_at_its_own_index() {
        for (index, reason) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index);
        }
    }

    #[test]
    fn events_round_trip_through_json() {
        let event = Event::MassCancelled {
            account: AccountId(1),
            symbol: None,
            count: 3,
        };
        let json = serde_json::to_string(&event).expect("serialize");
        let back: Event = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(event, back);
    }
}
