//! Named bounds on every resource the engine holds. Each has a reason; they live in one place.

use exchange_domain::{Amount, Qty, RiskLimits};

/// Distinct assets one account may hold. Bounded so that a balance lookup is a short scan and
/// a balance's position fits in a byte cached inside each order.
pub const ASSETS_PER_ACCOUNT_MAX: usize = 64;
const _: () = assert!(ASSETS_PER_ACCOUNT_MAX <= u8::MAX as usize);

/// Orders resting in all books together, by default. Bounds memory; the arena's handles are u32.
pub const ORDERS_OPEN_MAX_DEFAULT: u32 = 4_000_000;
/// Accounts, by default.
pub const ACCOUNTS_MAX_DEFAULT: u32 = 1_000_000;
/// Symbols, by default.
pub const SYMBOLS_MAX_DEFAULT: u32 = 10_000;
/// Brokers the engine remembers. Each costs a window of remembered client order ids.
pub const BROKERS_MAX: usize = 1_024;
/// New orders per broker whose outcome is remembered for resends: at least the most a broker
/// may have in flight (the gateway's per-session limit is below it).
pub const CLIENT_ORDER_ID_WINDOW: usize = 4_096;

/// A price band is given in basis points; more than 100% below the reference makes no sense
/// for the lower bound but a wide upper band is allowed, up to 100x.
pub const PRICE_BAND_BPS_MAX: u32 = 1_000_000;
/// FIX sessions whose place is kept (brokers' and drop copies'): the leader marks only
/// sessions that logged on, so this bounds what a misbehaving leader could make it hold.
pub const FIX_SESSIONS_MAX: usize = 4_096;
/// Assets that may be named (a lookup scans them: they are named by hand, and few).
pub const NAMED_ASSETS_MAX: usize = 1_024;

/// The engine's configuration. Part of the replicated state: every replica must use the same.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct EngineConfig {
    /// Risk limits a new account starts with.
    pub default_limits: RiskLimits,
    pub orders_open_max: u32,
    pub accounts_max: u32,
    pub symbols_max: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            default_limits: RiskLimits {
                max_order_qty: Qty(1_000_000),
                max_order_notional: Amount(1_000_000_000_000),
                max_open_orders: 1_000,
            },
            orders_open_max: ORDERS_OPEN_MAX_DEFAULT,
            accounts_max: ACCOUNTS_MAX_DEFAULT,
            symbols_max: SYMBOLS_MAX_DEFAULT,
        }
    }
}

impl EngineConfig {
    /// Limits that never bind: for replays and backtests that must not be shaped by risk rules.
    pub fn unbounded() -> Self {
        EngineConfig {
            default_limits: RiskLimits {
                max_order_qty: Qty(i64::MAX),
                max_order_notional: Amount(i64::MAX),
                max_open_orders: u32::MAX,
            },
            ..EngineConfig::default()
        }
    }
}
