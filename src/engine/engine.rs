//! The engine: state plus the running output hash, the single entry point `process`, and the
//! dispatch of each command: permission (which broker may act for which account), the
//! exactly-once window for brokers' new orders, then the handler that applies it.

use std::collections::BTreeMap;

use exchange_domain::{
    AccountId, AssetId, BrokerId, Command, CompId, Event, FixSessionMark, Input, KeyDigest,
    KeySalt, Name, NewOrder, OrderId, Output, Price, Qty, RejectReason, Side, SymbolId, SymbolSpec,
};
use rustc_hash::FxHashMap;

use crate::arena::{Handle, OrderArena};
use crate::book::Book;
use crate::brokers::{Broker, Recall};
use crate::hash::OutputHasher;
use crate::limits::{EngineConfig, BROKERS_MAX, FIX_SESSIONS_MAX};
use crate::sink::EventSink;
use crate::wallet::Account;

/// A symbol's static spec, its trading state and its book.
pub(crate) struct Market {
    pub spec: SymbolSpec,
    pub halted: bool,
    /// Orders priced further than this from the reference price are refused, in basis points
    /// of it (0: no band).
    pub price_band_bps: u32,
    /// The last trade's price, or the price an administrator set; 0 when there is none.
    pub reference_price: Price,
    pub book: Book,
}

/// Everything the engine knows. Maps keyed by id are only ever looked up, never iterated in
/// their own order, so hash-map order cannot leak into outputs.
pub(crate) struct State {
    pub config: EngineConfig,
    pub orders: OrderArena,
    pub order_index: FxHashMap<OrderId, Handle>,
    pub accounts: Vec<Account>,
    pub account_index: FxHashMap<AccountId, u32>,
    pub markets: Vec<Market>,
    pub market_index: FxHashMap<SymbolId, u32>,
    pub brokers: Vec<Broker>,
    pub broker_index: FxHashMap<BrokerId, u32>,
    /// Named assets, in the order they were named.
    pub assets: Vec<AssetSpec>,
    /// Deposits minus withdrawals per asset: what the balances of every account must sum to.
    pub asset_totals: BTreeMap<AssetId, i64>,
    /// Each FIX session's place as its leader last marked it.
    pub fix_sessions: BTreeMap<CompId, FixSessionMark>,
    /// The salt broker key digests are keyed with; `None` until the first leader sets it (and
    /// for good in a cluster made before salts).
    pub key_salt: Option<KeySalt>,
    pub trades: u64,
    pub executions: u64,
    pub last_seq: u64,
    pub last_timestamp_ns: u64,
}

/// Stamps, hashes and delivers the outputs of the command being processed.
pub(crate) struct Emitter<'a, S> {
    pub seq: u64,
    pub timestamp_ns: u64,
    hasher: &'a mut OutputHasher,
    sink: &'a mut S,
}

impl<S: EventSink> Emitter<'_, S> {
    #[inline]
    pub fn emit(&mut self, event: Event) {
        let output = Output {
            seq: self.seq,
            timestamp_ns: self.timestamp_ns,
            event,
        };
        self.hasher.update(&output);
        self.sink.emit(&output);
    }
}

/// A resting order as queries see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenOrder {
    pub account: AccountId,
    pub symbol: SymbolId,
    pub side: Side,
    pub price: Price,
    pub leaves: Qty,
}

/// A named asset: what people call it and the decimals its amounts are written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AssetSpec {
    pub asset: AssetId,
    pub name: Name,
    pub decimals: u8,
}

/// A symbol as people see it: its description and trading state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instrument {
    pub spec: SymbolSpec,
    pub halted: bool,
    pub price_band_bps: u32,
    pub reference_price: Price,
}

/// One of an account's open orders, as queries see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountOrder {
    pub order_id: OrderId,
    pub client_order_id: exchange_domain::ClientOrderId,
    pub symbol: SymbolId,
    pub side: Side,
    pub price: Price,
    pub leaves: Qty,
}

/// The deterministic matching engine: `(state, input) -> (state', outputs)`.
///
/// It never reads a clock, a random source or the environment, and performs no IO: the same
/// inputs always give the same outputs, byte for byte, and the same [`Engine::output_hash`].
pub struct Engine {
    pub(crate) state: State,
    pub(crate) hasher: OutputHasher,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Self {
        Engine {
            state: State {
                config,
                orders: OrderArena::default(),
                order_index: FxHashMap::default(),
                accounts: Vec::new(),
                account_index: FxHashMap::default(),
                markets: Vec::new(),
                market_index: FxHashMap::default(),
                brokers: Vec::new(),
                broker_index: FxHashMap::default(),
                assets: Vec::new(),
                fix_sessions: BTreeMap::new(),
                key_salt: None,
                asset_totals: BTreeMap::new(),
                trades: 0,
                executions: 0,
                last_seq: 0,
                last_timestamp_ns: 0,
            },
            hasher: OutputHasher::default(),
        }
    }

    /// Applies one sequenced command, emitting its outputs to `sink` in order.
    ///
    /// Contract: `input.seq` rises strictly from one call to the next (it becomes the order id
    /// of a new order). A caller that breaks it has a bug that would corrupt state, so the
    /// engine stops rather than guess.
    pub fn process<S: EventSink>(&mut self, input: &Input, sink: &mut S) {
        assert!(
            input.seq > self.state.last_seq,
            "input sequence {} does not follow {}",
            input.seq,
            self.state.last_seq
        );
        self.state.last_seq = input.seq;
        self.state.last_timestamp_ns = input.timestamp_ns;
        let mut out = Emitter {
            seq: input.seq,
            timestamp_ns: input.timestamp_ns,
            hasher: &mut self.hasher,
            sink,
        };
        self.state.dispatch(input, &mut out);
    }

    /// The running hash of every output so far.
    pub fn output_hash(&self) -> u64 {
        self.hasher.value()
    }

    /// The sequence number of the last command processed (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.state.last_seq
    }

    /// The timestamp of the last command processed.
    pub fn last_timestamp_ns(&self) -> u64 {
        self.state.last_timestamp_ns
    }

    pub fn config(&self) -> &EngineConfig {
        &self.state.config
    }

    /// Matches so far; each produced two executions.
    pub fn trade_count(&self) -> u64 {
        self.state.trades
    }

    /// Orders resting in all books.
    pub fn open_order_count(&self) -> u32 {
        self.state.orders.live()
    }

    fn market(&self, symbol: SymbolId) -> Option<&Market> {
        let index = *self.state.market_index.get(&symbol)?;
        Some(&self.state.markets[index as usize])
    }

    /// The best price and the total quantity resting there.
    pub fn best(&self, symbol: SymbolId, side: Side) -> Option<(Price, Qty)> {
        let level = self.market(symbol)?.book.side(side).best()?;
        Some((level.price, level.total))
    }

    /// Up to `levels` price levels of one side from the best, as (price, total quantity).
    pub fn depth(&self, symbol: SymbolId, side: Side, levels: usize) -> Vec<(Price, Qty)> {
        self.market(symbol)
            .map(|m| m.book.side(side).depth().take(levels).collect())
            .unwrap_or_default()
    }

    /// The price levels of one side from the best, as (price, total quantity), without
    /// allocating: what market data reads after every entry.
    pub fn levels(&self, symbol: SymbolId, side: Side) -> impl Iterator<Item = (Price, Qty)> + '_ {
        self.market(symbol)
            .into_iter()
            .flat_map(move |m| m.book.side(side).depth())
    }

    /// The total quantity resting at one price (zero when there is no such level).
    pub fn level_qty(&self, symbol: SymbolId, side: Side, price: Price) -> Qty {
        let Some(market) = self.market(symbol) else {
            return Qty(0);
        };
        let book_side = market.book.side(side);
        match book_side.find(price) {
            Ok(index) => book_side.levels[index].total,
            Err(_) => Qty(0),
        }
    }

    /// The order ids at one price level, front of the queue first.
    pub fn queue(&self, symbol: SymbolId, side: Side, price: Price) -> Vec<OrderId> {
        let Some(market) = self.market(symbol) else {
            return Vec::new();
        };
        let book_side = market.book.side(side);
        let Ok(index) = book_side.find(price) else {
            return Vec::new();
        };
        let mut ids = Vec::new();
        let mut handle = book_side.levels[index].head;
        while handle != crate::arena::NIL {
            let order = self.state.orders.get(handle);
            ids.push(order.id);
            handle = order.next;
        }
        ids
    }

    /// A resting order, if `order_id` is open.
    pub fn open_order(&self, order_id: OrderId) -> Option<OpenOrder> {
        let handle = *self.state.order_index.get(&order_id)?;
        let order = self.state.orders.get(handle);
        Some(OpenOrder {
            account: self.state.accounts[order.account as usize].id,
            symbol: self.state.markets[order.symbol as usize].spec.symbol,
            side: order.side,
            price: order.price,
            leaves: order.leaves,
        })
    }

    /// An account's (available, held) amounts of an asset.
    pub fn balance(&self, account: AccountId, asset: AssetId) -> Option<(i64, i64)> {
        let index = *self.state.account_index.get(&account)?;
        let account = &self.state.accounts[index as usize];
        let slot = account.slot_of(asset)?;
        let balance = account.balances[slot as usize];
        Some((balance.available, balance.held))
    }

    /// Deposits minus withdrawals of an asset: what all balances of it must add up to.
    pub fn asset_total(&self, asset: AssetId) -> i64 {
        self.state.asset_totals.get(&asset).copied().unwrap_or(0)
    }

    /// The broker that owns the account.
    pub fn account_owner(&self, account: AccountId) -> Option<BrokerId> {
        let index = *self.state.account_index.get(&account)?;
        Some(self.state.accounts[index as usize].owner)
    }

    /// Every registered broker with its key digest (all zeros: revoked), in registration order.
    pub fn brokers(&self) -> impl Iterator<Item = (BrokerId, KeyDigest)> + '_ {
        self.state.brokers.iter().map(|b| (b.id, b.key_digest))
    }

    /// Every broker's FIX SenderCompID, of those given one.
    pub fn fix_comp_ids(&self) -> impl Iterator<Item = (BrokerId, CompId)> + '_ {
        self.state
            .brokers
            .iter()
            .filter_map(|b| Some((b.id, b.fix_comp_id?)))
    }

    /// Where a FIX session stood at its last mark.
    pub fn fix_session(&self, comp_id: &CompId) -> Option<FixSessionMark> {
        self.state.fix_sessions.get(comp_id).copied()
    }

    /// The salt broker key digests are keyed with, once set.
    pub fn key_salt(&self) -> Option<KeySalt> {
        self.state.key_salt
    }

    /// Every FIX session's mark.
    pub fn fix_sessions(&self) -> impl Iterator<Item = (CompId, FixSessionMark)> + '_ {
        self.state.fix_sessions.iter().map(|(c, m)| (*c, *m))
    }

    /// Every symbol, in the order they were added.
    pub fn instruments(&self) -> impl Iterator<Item = Instrument> + '_ {
        self.state.markets.iter().map(|market| Instrument {
            spec: market.spec,
            halted: market.halted,
            price_band_bps: market.price_band_bps,
            reference_price: market.reference_price,
        })
    }

    /// Every named asset, in the order they were named.
    pub fn assets(&self) -> &[AssetSpec] {
        &self.state.assets
    }

    /// An account's open orders, oldest first, at most `max` (its open-order limit bounds
    /// them anyway).
    pub fn account_orders(&self, account: AccountId, max: usize) -> Vec<AccountOrder> {
        let Some(&index) = self.state.account_index.get(&account) else {
            return Vec::new();
        };
        let mut orders = Vec::new();
        let mut handle = self.state.accounts[index as usize].orders_head;
        while handle != crate::arena::NIL && orders.len() < max {
            let order = self.state.orders.get(handle);
            orders.push(AccountOrder {
                order_id: order.id,
                client_order_id: order.client_order_id,
                symbol: self.state.markets[order.symbol as usize].spec.symbol,
                side: order.side,
                price: order.price,
                leaves: order.leaves,
            });
            handle = order.account_next;
        }
        orders
    }

    /// Every asset the account holds or held, with (available, held), in the order it first
    /// held them.
    pub fn account_balances(&self, account: AccountId) -> Vec<(AssetId, i64, i64)> {
        let Some(&index) = self.state.account_index.get(&account) else {
            return Vec::new();
        };
        self.state.accounts[index as usize]
            .balances
            .iter()
            .map(|b| (b.asset, b.available, b.held))
            .collect()
    }

    /// Whether the account exists.
    pub fn has_account(&self, account: AccountId) -> bool {
        self.state.account_index.contains_key(&account)
    }

    /// Whether the symbol exists.
    pub fn has_symbol(&self, symbol: SymbolId) -> bool {
        self.state.market_index.contains_key(&symbol)
    }
}

/// Emits the refusal of a whole command.
fn refuse<S: EventSink>(command: &Command, reason: RejectReason, out: &mut Emitter<S>) {
    out.emit(command.rejected(reason));
}

impl State {
    /// Applies one command on behalf of the broker that sent it.
    ///
    /// Permission comes first: a broker that is not registered, or whose key was revoked,
    /// may do nothing, and a broker may act only for its own accounts. Only then does a new
    /// order meet the exactly-once window, so a refusal for permission is never remembered
    /// (ownership never changes, so it repeats by itself) and a broker never learns about
    /// another broker's orders through a duplicate answer.
    pub fn dispatch<S: EventSink>(&mut self, input: &Input, out: &mut Emitter<S>) {
        let broker = input.broker;
        if let Command::Admin(admin) = &input.command {
            return if broker == BrokerId::OPERATOR {
                self.admin(admin, out)
            } else {
                out.emit(Event::AdminRejected {
                    reason: RejectReason::NotPermitted,
                })
            };
        }
        let broker_index = match self.permit(broker, input.command.account()) {
            Ok(index) => index,
            Err(reason) => return refuse(&input.command, reason, out),
        };
        match &input.command {
            Command::NewOrder(order) => {
                self.broker_new_order(broker_index, OrderId(input.seq), order, out)
            }
            Command::Cancel(cancel) => self.cancel(cancel, out),
            Command::CancelReplace(replace) => self.cancel_replace(replace, out),
            Command::MassCancel(mass) => self.mass_cancel(mass, out),
            // Answered above.
            Command::Admin(_) => {}
        }
    }

    /// Whether `broker` may act for `account`; the broker's table index (`None` for the
    /// operator, who may act for every account). An account that does not exist is let
    /// through, so that the command itself reports it as unknown.
    fn permit(
        &self,
        broker: BrokerId,
        account: Option<AccountId>,
    ) -> Result<Option<u32>, RejectReason> {
        if broker == BrokerId::OPERATOR {
            return Ok(None);
        }
        let index = *self
            .broker_index
            .get(&broker)
            .ok_or(RejectReason::NotPermitted)?;
        if self.brokers[index as usize].is_revoked() {
            return Err(RejectReason::NotPermitted);
        }
        let owner = account
            .and_then(|account| self.account_index.get(&account))
            .map(|&account| self.accounts[account as usize].owner);
        match owner {
            Some(owner) if owner != broker => Err(RejectReason::NotPermitted),
            _ => Ok(Some(index)),
        }
    }

    /// A permitted new order: the operator's goes straight in; a broker's meets the
    /// exactly-once window first.
    fn broker_new_order<S: EventSink>(
        &mut self,
        broker_index: Option<u32>,
        order_id: OrderId,
        cmd: &NewOrder,
        out: &mut Emitter<S>,
    ) {
        let Some(broker_index) = broker_index else {
            self.new_order(order_id, cmd, out);
            return;
        };
        let client_order_id = cmd.client_order_id.0;
        let reject = |reason| cmd.rejected(reason);
        if client_order_id == 0 {
            return out.emit(reject(RejectReason::InvalidClientOrderId));
        }
        match self.brokers[broker_index as usize].recall(client_order_id) {
            Recall::Duplicate(original) => {
                return out.emit(Event::DuplicateOrder {
                    account: cmd.account,
                    client_order_id: cmd.client_order_id,
                    order_id: OrderId(original.order_id),
                    rejected: original.rejected,
                })
            }
            Recall::Stale => return out.emit(reject(RejectReason::StaleClientOrderId)),
            Recall::Fresh => {}
        }
        let rejected = self.new_order(order_id, cmd, out);
        self.brokers[broker_index as usize].remember(client_order_id, order_id.0, rejected);
    }

    /// Registers a broker or replaces its key.
    pub fn set_broker_key(
        &mut self,
        broker: BrokerId,
        key_digest: KeyDigest,
    ) -> Result<Event, RejectReason> {
        if broker == BrokerId::OPERATOR {
            // The operator's credential is the nodes' admin key, not replicated state.
            return Err(RejectReason::NotPermitted);
        }
        // A key names one broker: a second broker with it could act for the first. Any number
        // of brokers may be revoked.
        if !key_digest.is_revoked()
            && self
                .brokers
                .iter()
                .any(|b| b.id != broker && b.key_digest == key_digest)
        {
            return Err(RejectReason::KeyInUse);
        }
        match self.broker_index.get(&broker) {
            Some(&index) => self.brokers[index as usize].key_digest = key_digest,
            None => {
                if self.brokers.len() >= BROKERS_MAX {
                    return Err(RejectReason::TooManyBrokers);
                }
                self.broker_index.insert(broker, self.brokers.len() as u32);
                self.brokers.push(Broker::new(broker, key_digest));
            }
        }
        Ok(Event::BrokerKeySet { broker, key_digest })
    }

    /// Gives a registered broker its FIX SenderCompID, which no other broker may have.
    pub fn set_fix_comp_id(
        &mut self,
        broker: BrokerId,
        comp_id: CompId,
    ) -> Result<Event, RejectReason> {
        if !comp_id.is_valid() {
            return Err(RejectReason::InvalidCompId);
        }
        let Some(&index) = self.broker_index.get(&broker) else {
            return Err(RejectReason::InvalidCompId);
        };
        if self
            .brokers
            .iter()
            .any(|b| b.id != broker && b.fix_comp_id == Some(comp_id))
        {
            return Err(RejectReason::InvalidCompId);
        }
        // A CompID that passes to another broker, or that a broker gives up, starts afresh.
        let previous = self.brokers[index as usize].fix_comp_id.replace(comp_id);
        if previous != Some(comp_id) {
            if let Some(old) = previous {
                self.fix_sessions.remove(&old);
            }
            self.fix_sessions.remove(&comp_id);
        }
        Ok(Event::FixCompIdSet { broker, comp_id })
    }

    /// Records where a FIX session stands (replacing its earlier mark).
    pub fn mark_fix_session(
        &mut self,
        comp_id: CompId,
        mark: FixSessionMark,
    ) -> Result<Event, RejectReason> {
        if !comp_id.is_valid() {
            return Err(RejectReason::InvalidCompId);
        }
        // Numbers start at 1.
        if mark.next_in == 0 || mark.next_out == 0 {
            return Err(RejectReason::InvalidCompId);
        }
        if self.fix_sessions.len() >= FIX_SESSIONS_MAX && !self.fix_sessions.contains_key(&comp_id)
        {
            return Err(RejectReason::InvalidCompId);
        }
        self.fix_sessions.insert(comp_id, mark);
        Ok(Event::FixSessionMarked { comp_id, mark })
    }

    /// Sets the key salt: once, and only while no broker holds a key, since a digest made
    /// without the salt would no longer match (a cluster made before salts keeps none). A
    /// revoked broker holds none: revoking an id first does not turn salting off.
    pub fn set_key_salt(&mut self, salt: KeySalt) -> Result<Event, RejectReason> {
        if self.key_salt.is_some() || self.brokers.iter().any(|b| !b.key_digest.is_revoked()) {
            return Err(RejectReason::NotPermitted);
        }
        self.key_salt = Some(salt);
        Ok(Event::KeySaltSet { salt })
    }
}
