//! Snapshot and restore of the whole engine state.
//!
//! A snapshot is taken between two commands and records everything that decides future
//! outputs: accounts with balances and limits, every resting order in queue order, symbol
//! states, counters and the output hash. Restoring it and continuing gives the same outputs and
//! hash as never having stopped. Bytes are rkyv, validated on the way in: a damaged snapshot
//! is an error, never a panic, and a restored state must pass the invariant check.

use exchange_domain::{
    AccountId, AssetId, BrokerId, ClientOrderId, CompId, FixSessionMark, KeyDigest, KeySalt, Name,
    OrderId, Price, Qty, RejectReason, RiskLimits, SelfTradePrevention, Side, SymbolSpec,
    TimeInForce,
};

use crate::arena::{Order, NIL};
use crate::book::Book;
use crate::brokers::{Broker, Remembered};
use crate::engine::{Engine, Market};
use crate::hash::OutputHasher;
use crate::invariants::InvariantViolation;
use crate::limits::EngineConfig;
use crate::wallet::{Account, Balance};

/// Bumped whenever the snapshot's layout or meaning changes. Format 5 keeps the key salt;
/// format 4 gave brokers their FIX CompID and kept FIX sessions' marks. Formats 3 and 4 are
/// still read (`Snapshot::from_bytes`).
pub const SNAPSHOT_FORMAT_VERSION: u32 = 5;

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Snapshot {
    pub format_version: u32,
    pub config: EngineConfig,
    pub last_seq: u64,
    pub last_timestamp_ns: u64,
    pub output_hash: u64,
    pub trades: u64,
    pub executions: u64,
    /// In the engine's table order.
    pub accounts: Vec<AccountSnapshot>,
    /// In the engine's table order.
    pub markets: Vec<MarketSnapshot>,
    pub asset_totals: Vec<AssetTotal>,
    /// Named assets, in the engine's table order.
    pub assets: Vec<NamedAsset>,
    /// In the engine's table order.
    pub brokers: Vec<BrokerSnapshot>,
    /// Each FIX session's last mark, by CompID.
    pub fix_sessions: Vec<(CompId, FixSessionMark)>,
    /// The salt broker key digests are keyed with, once set.
    pub key_salt: Option<KeySalt>,
}

/// Format 4's layout: format 5's without the key salt.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SnapshotV4 {
    format_version: u32,
    config: EngineConfig,
    last_seq: u64,
    last_timestamp_ns: u64,
    output_hash: u64,
    trades: u64,
    executions: u64,
    accounts: Vec<AccountSnapshot>,
    markets: Vec<MarketSnapshot>,
    asset_totals: Vec<AssetTotal>,
    assets: Vec<NamedAsset>,
    brokers: Vec<BrokerSnapshot>,
    fix_sessions: Vec<(CompId, FixSessionMark)>,
}

impl From<SnapshotV4> for Snapshot {
    fn from(old: SnapshotV4) -> Snapshot {
        Snapshot {
            format_version: SNAPSHOT_FORMAT_VERSION,
            config: old.config,
            last_seq: old.last_seq,
            last_timestamp_ns: old.last_timestamp_ns,
            output_hash: old.output_hash,
            trades: old.trades,
            executions: old.executions,
            accounts: old.accounts,
            markets: old.markets,
            asset_totals: old.asset_totals,
            assets: old.assets,
            brokers: old.brokers,
            fix_sessions: old.fix_sessions,
            // A cluster made before salts keeps plain digests, and no salt.
            key_salt: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct BrokerSnapshot {
    pub id: BrokerId,
    pub key_digest: KeyDigest,
    pub high_water: u64,
    /// The occupied slots of the exactly-once window, in slot order.
    pub remembered: Vec<RememberedOrder>,
    pub fix_comp_id: Option<CompId>,
}

/// Format 3's layout, read from data directories written before format 4.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SnapshotV3 {
    format_version: u32,
    config: EngineConfig,
    last_seq: u64,
    last_timestamp_ns: u64,
    output_hash: u64,
    trades: u64,
    executions: u64,
    accounts: Vec<AccountSnapshot>,
    markets: Vec<MarketSnapshot>,
    asset_totals: Vec<AssetTotal>,
    assets: Vec<NamedAsset>,
    brokers: Vec<BrokerSnapshotV3>,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct BrokerSnapshotV3 {
    id: BrokerId,
    key_digest: KeyDigest,
    high_water: u64,
    remembered: Vec<RememberedOrder>,
}

impl From<SnapshotV3> for Snapshot {
    fn from(old: SnapshotV3) -> Snapshot {
        Snapshot {
            format_version: SNAPSHOT_FORMAT_VERSION,
            config: old.config,
            last_seq: old.last_seq,
            last_timestamp_ns: old.last_timestamp_ns,
            output_hash: old.output_hash,
            trades: old.trades,
            executions: old.executions,
            accounts: old.accounts,
            markets: old.markets,
            asset_totals: old.asset_totals,
            assets: old.assets,
            brokers: old
                .brokers
                .into_iter()
                .map(|b| BrokerSnapshot {
                    id: b.id,
                    key_digest: b.key_digest,
                    high_water: b.high_water,
                    remembered: b.remembered,
                    fix_comp_id: None,
                })
                .collect(),
            fix_sessions: Vec::new(),
            key_salt: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct RememberedOrder {
    pub client_order_id: u64,
    pub order_id: u64,
    pub rejected: Option<RejectReason>,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct AccountSnapshot {
    pub id: AccountId,
    pub owner: BrokerId,
    pub limits: RiskLimits,
    /// In slot order: orders refer to balances by position.
    pub balances: Vec<BalanceSnapshot>,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct BalanceSnapshot {
    pub asset: AssetId,
    pub available: i64,
    pub held: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MarketSnapshot {
    pub spec: SymbolSpec,
    pub halted: bool,
    pub price_band_bps: u32,
    pub reference_price: Price,
    /// Worst level first, each level's queue front first.
    pub bids: Vec<OrderSnapshot>,
    pub asks: Vec<OrderSnapshot>,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct OrderSnapshot {
    pub id: OrderId,
    pub client_order_id: ClientOrderId,
    pub account: AccountId,
    pub price: Price,
    pub leaves: Qty,
    pub priority: u64,
    pub time_in_force: TimeInForce,
    pub self_trade_prevention: SelfTradePrevention,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct NamedAsset {
    pub asset: AssetId,
    pub name: Name,
    pub decimals: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct AssetTotal {
    pub asset: AssetId,
    pub total: i64,
}

/// Why a snapshot could not be restored.
#[derive(Debug)]
pub enum RestoreError {
    /// The bytes are not a valid snapshot archive.
    Malformed(String),
    UnsupportedVersion(u32),
    /// The snapshot decodes but describes an impossible state.
    Inconsistent(InvariantViolation),
}

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreError::Malformed(why) => write!(f, "malformed snapshot: {why}"),
            RestoreError::UnsupportedVersion(v) => write!(
                f,
                "snapshot format {v} is not supported (this build reads {SNAPSHOT_FORMAT_VERSION})"
            ),
            RestoreError::Inconsistent(why) => write!(f, "inconsistent snapshot: {why}"),
        }
    }
}

impl std::error::Error for RestoreError {}

fn inconsistent(why: String) -> RestoreError {
    RestoreError::Inconsistent(InvariantViolation(why))
}

impl Snapshot {
    pub fn to_bytes(&self) -> Vec<u8> {
        match rkyv::to_bytes::<rkyv::rancor::Error>(self) {
            Ok(bytes) => bytes.into_vec(),
            // Serializing plain owned data into a growable buffer has no failure mode.
            Err(error) => unreachable!("snapshot serialization failed: {error}"),
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Snapshot, RestoreError> {
        // rkyv needs its archive aligned; copy into an aligned buffer so any slice works.
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        let current = rkyv::from_bytes::<Snapshot, rkyv::rancor::Error>(&aligned);
        if let Ok(snapshot) = &current {
            if snapshot.format_version == SNAPSHOT_FORMAT_VERSION {
                return current.map_err(|e| RestoreError::Malformed(e.to_string()));
            }
        }
        // Not this format's layout: perhaps format 4's (no key salt) or 3's (brokers without a
        // CompID).
        if let Ok(old) = rkyv::from_bytes::<SnapshotV4, rkyv::rancor::Error>(&aligned) {
            if old.format_version == 4 {
                return Ok(old.into());
            }
        }
        if let Ok(old) = rkyv::from_bytes::<SnapshotV3, rkyv::rancor::Error>(&aligned) {
            if old.format_version == 3 {
                return Ok(old.into());
            }
        }
        let snapshot = current.map_err(|e| RestoreError::Malformed(e.to_string()))?;
        Err(RestoreError::UnsupportedVersion(snapshot.format_version))
    }

    /// This snapshot in format 4's layout (its key salt left out), for the test that this
    /// build still reads it.
    #[cfg(test)]
    pub(crate) fn to_v4_bytes(&self) -> Vec<u8> {
        let old = SnapshotV4 {
            format_version: 4,
            config: self.config,
            last_seq: self.last_seq,
            last_timestamp_ns: self.last_timestamp_ns,
            output_hash: self.output_hash,
            trades: self.trades,
            executions: self.executions,
            accounts: self.accounts.clone(),
            markets: self.markets.clone(),
            asset_totals: self.asset_totals.clone(),
            assets: self.assets.clone(),
            brokers: self.brokers.clone(),
            fix_sessions: self.fix_sessions.clone(),
        };
        rkyv::to_bytes::<rkyv::rancor::Error>(&old)
            .expect("plain owned data serializes")
            .into_vec()
    }

    /// This snapshot in format 3's layout (its brokers' CompIDs left out), for the test
    /// that this build still reads it.
    #[cfg(test)]
    pub(crate) fn to_v3_bytes(&self) -> Vec<u8> {
        let old = SnapshotV3 {
            format_version: 3,
            config: self.config,
            last_seq: self.last_seq,
            last_timestamp_ns: self.last_timestamp_ns,
            output_hash: self.output_hash,
            trades: self.trades,
            executions: self.executions,
            accounts: self.accounts.clone(),
            markets: self.markets.clone(),
            asset_totals: self.asset_totals.clone(),
            assets: self.assets.clone(),
            brokers: self
                .brokers
                .iter()
                .map(|b| BrokerSnapshotV3 {
                    id: b.id,
                    key_digest: b.key_digest,
                    high_water: b.high_water,
                    remembered: b.remembered.clone(),
                })
                .collect(),
        };
        rkyv::to_bytes::<rkyv::rancor::Error>(&old)
            .expect("plain owned data serializes")
            .into_vec()
    }
}

impl Engine {
    /// The whole state, at the point between the last command processed and the next.
    pub fn snapshot(&self) -> Snapshot {
        let state = &self.state;
        let order_snapshot = |order: &Order| OrderSnapshot {
            id: order.id,
            client_order_id: order.client_order_id,
            account: state.accounts[order.account as usize].id,
            price: order.price,
            leaves: order.leaves,
            priority: order.priority,
            time_in_force: order.time_in_force,
            self_trade_prevention: order.self_trade_prevention,
        };
        let side_snapshot = |market: &Market, side: Side| {
            let mut orders = Vec::new();
            for level in &market.book.side(side).levels {
                let mut handle = level.head;
                while handle != NIL {
                    let order = state.orders.get(handle);
                    orders.push(order_snapshot(order));
                    handle = order.next;
                }
            }
            orders
        };
        Snapshot {
            format_version: SNAPSHOT_FORMAT_VERSION,
            config: state.config,
            last_seq: state.last_seq,
            last_timestamp_ns: state.last_timestamp_ns,
            output_hash: self.hasher.value(),
            trades: state.trades,
            executions: state.executions,
            accounts: state
                .accounts
                .iter()
                .map(|account| AccountSnapshot {
                    id: account.id,
                    owner: account.owner,
                    limits: account.limits,
                    balances: account
                        .balances
                        .iter()
                        .map(|b| BalanceSnapshot {
                            asset: b.asset,
                            available: b.available,
                            held: b.held,
                        })
                        .collect(),
                })
                .collect(),
            markets: state
                .markets
                .iter()
                .map(|market| MarketSnapshot {
                    spec: market.spec,
                    halted: market.halted,
                    price_band_bps: market.price_band_bps,
                    reference_price: market.reference_price,
                    bids: side_snapshot(market, Side::Buy),
                    asks: side_snapshot(market, Side::Sell),
                })
                .collect(),
            asset_totals: state
                .asset_totals
                .iter()
                .map(|(&asset, &total)| AssetTotal { asset, total })
                .collect(),
            assets: state
                .assets
                .iter()
                .map(|a| NamedAsset {
                    asset: a.asset,
                    name: a.name,
                    decimals: a.decimals,
                })
                .collect(),
            brokers: state
                .brokers
                .iter()
                .map(|broker| BrokerSnapshot {
                    id: broker.id,
                    key_digest: broker.key_digest,
                    high_water: broker.high_water,
                    remembered: broker
                        .window
                        .iter()
                        .filter(|slot| slot.client_order_id != 0)
                        .map(|slot| RememberedOrder {
                            client_order_id: slot.client_order_id,
                            order_id: slot.order_id,
                            rejected: slot.rejected,
                        })
                        .collect(),
                    fix_comp_id: broker.fix_comp_id,
                })
                .collect(),
            fix_sessions: state.fix_sessions.iter().map(|(c, m)| (*c, *m)).collect(),
            key_salt: state.key_salt,
        }
    }

    /// Rebuilds an engine from a snapshot, checking that the state it describes is consistent.
    pub fn restore(snapshot: &Snapshot) -> Result<Engine, RestoreError> {
        if snapshot.format_version != SNAPSHOT_FORMAT_VERSION {
            return Err(RestoreError::UnsupportedVersion(snapshot.format_version));
        }
        let mut engine = Engine::new(snapshot.config);
        engine.hasher = OutputHasher::resume(snapshot.output_hash);
        let state = &mut engine.state;
        state.last_seq = snapshot.last_seq;
        state.last_timestamp_ns = snapshot.last_timestamp_ns;
        state.trades = snapshot.trades;
        state.executions = snapshot.executions;
        for total in &snapshot.asset_totals {
            state.asset_totals.insert(total.asset, total.total);
        }
        for saved in &snapshot.assets {
            if !saved.name.is_valid() || state.assets.iter().any(|a| a.asset == saved.asset) {
                return Err(inconsistent(format!(
                    "asset {} is named twice or invalidly",
                    saved.asset
                )));
            }
            state.assets.push(crate::engine::AssetSpec {
                asset: saved.asset,
                name: saved.name,
                decimals: saved.decimals,
            });
        }
        for saved in &snapshot.accounts {
            if saved.balances.len() > crate::limits::ASSETS_PER_ACCOUNT_MAX {
                return Err(inconsistent(format!(
                    "account {} holds too many assets",
                    saved.id
                )));
            }
            let index = state.accounts.len() as u32;
            if state.account_index.insert(saved.id, index).is_some() {
                return Err(inconsistent(format!("account {} appears twice", saved.id)));
            }
            let mut account = Account::new(saved.id, saved.owner, saved.limits);
            account.balances = saved
                .balances
                .iter()
                .map(|b| Balance {
                    asset: b.asset,
                    available: b.available,
                    held: b.held,
                })
                .collect();
            state.accounts.push(account);
        }
        if snapshot.brokers.len() > crate::limits::BROKERS_MAX {
            return Err(inconsistent("too many brokers".into()));
        }
        for saved in &snapshot.brokers {
            let index = state.brokers.len() as u32;
            if saved.id == BrokerId::OPERATOR
                || state.broker_index.insert(saved.id, index).is_some()
            {
                return Err(inconsistent(format!(
                    "broker {} is invalid or twice",
                    saved.id
                )));
            }
            let mut broker = Broker::new(saved.id, saved.key_digest);
            broker.high_water = saved.high_water;
            if let Some(comp_id) = saved.fix_comp_id {
                if !comp_id.is_valid()
                    || state.brokers.iter().any(|b| b.fix_comp_id == Some(comp_id))
                {
                    return Err(inconsistent(format!(
                        "broker {} has an invalid or another broker's FIX CompID",
                        saved.id
                    )));
                }
                broker.fix_comp_id = Some(comp_id);
            }
            for order in &saved.remembered {
                let slot = &mut broker.window[Broker::slot(order.client_order_id)];
                if order.client_order_id == 0
                    || order.client_order_id > saved.high_water
                    || slot.client_order_id != 0
                {
                    return Err(inconsistent(format!(
                        "broker {} remembers client order id {} impossibly",
                        saved.id, order.client_order_id
                    )));
                }
                *slot = Remembered {
                    client_order_id: order.client_order_id,
                    order_id: order.order_id,
                    rejected: order.rejected,
                };
            }
            state.brokers.push(broker);
        }
        if snapshot.fix_sessions.len() > crate::limits::FIX_SESSIONS_MAX {
            return Err(inconsistent("too many FIX sessions".into()));
        }
        for &(comp_id, mark) in &snapshot.fix_sessions {
            if !comp_id.is_valid() || state.fix_sessions.insert(comp_id, mark).is_some() {
                return Err(inconsistent(
                    "a FIX session's CompID is invalid or twice".into(),
                ));
            }
        }
        state.key_salt = snapshot.key_salt;
        let mut by_id = Vec::new();
        for (market_index, saved) in snapshot.markets.iter().enumerate() {
            if state
                .market_index
                .insert(saved.spec.symbol, market_index as u32)
                .is_some()
            {
                return Err(inconsistent(format!(
                    "symbol {} appears twice",
                    saved.spec.symbol
                )));
            }
            if !saved.spec.name.is_valid() {
                return Err(inconsistent(format!(
                    "symbol {} has an invalid name",
                    saved.spec.symbol
                )));
            }
            state.markets.push(Market {
                spec: saved.spec,
                halted: saved.halted,
                price_band_bps: saved.price_band_bps,
                reference_price: saved.reference_price,
                book: Book::new(),
            });
            for (side, orders) in [(Side::Buy, &saved.bids), (Side::Sell, &saved.asks)] {
                for saved_order in orders {
                    let account_index =
                        *state
                            .account_index
                            .get(&saved_order.account)
                            .ok_or_else(|| {
                                inconsistent(format!("order {} has no account", saved_order.id))
                            })?;
                    let account = &state.accounts[account_index as usize];
                    let (Some(base_slot), Some(quote_slot)) = (
                        account.slot_of(saved.spec.base),
                        account.slot_of(saved.spec.quote),
                    ) else {
                        return Err(inconsistent(format!(
                            "order {} has no balances to hold",
                            saved_order.id
                        )));
                    };
                    if saved_order.leaves.0 <= 0
                        || saved_order.price.0 <= 0
                        || saved_order.price.notional(saved_order.leaves).is_none()
                    {
                        return Err(inconsistent(format!(
                            "order {} has an impossible price or quantity",
                            saved_order.id
                        )));
                    }
                    let handle = state.orders.insert(Order {
                        id: saved_order.id,
                        client_order_id: saved_order.client_order_id,
                        price: saved_order.price,
                        leaves: saved_order.leaves,
                        priority: saved_order.priority,
                        account: account_index,
                        symbol: market_index as u32,
                        base_slot,
                        quote_slot,
                        side,
                        time_in_force: saved_order.time_in_force,
                        self_trade_prevention: saved_order.self_trade_prevention,
                        prev: NIL,
                        next: NIL,
                        account_prev: NIL,
                        account_next: NIL,
                        level_hint: 0,
                    });
                    if state.order_index.insert(saved_order.id, handle).is_some() {
                        return Err(inconsistent(format!(
                            "order {} appears twice",
                            saved_order.id
                        )));
                    }
                    state.markets[market_index]
                        .book
                        .side_mut(side)
                        .push_back(&mut state.orders, handle);
                    by_id.push((saved_order.id, handle));
                }
            }
        }
        // Account lists are in order id order, which is the order they were created in.
        by_id.sort_unstable();
        for (_, handle) in by_id {
            state.link_to_account(handle);
        }
        engine
            .check_invariants()
            .map_err(RestoreError::Inconsistent)?;
        Ok(engine)
    }
}
