//! The engine: state plus the running output hash, and the single entry point `process`.

use std::collections::BTreeMap;

use exchange_domain::{
    AccountId, AssetId, BrokerId, Event, Input, KeyDigest, OrderId, Output, Price, Qty, Side,
    SymbolId, SymbolSpec,
};
use rustc_hash::FxHashMap;

use crate::arena::{Handle, OrderArena};
use crate::book::Book;
use crate::brokers::Broker;
use crate::hash::OutputHasher;
use crate::limits::EngineConfig;
use crate::sink::EventSink;
use crate::wallet::Account;

/// A symbol's static spec, its trading state and its book.
pub(crate) struct Market {
    pub spec: SymbolSpec,
    pub halted: bool,
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
    /// Deposits minus withdrawals per asset: what the balances of every account must sum to.
    pub asset_totals: BTreeMap<AssetId, i64>,
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

    /// Whether the account exists.
    pub fn has_account(&self, account: AccountId) -> bool {
        self.state.account_index.contains_key(&account)
    }

    /// Whether the symbol exists.
    pub fn has_symbol(&self, symbol: SymbolId) -> bool {
        self.state.market_index.contains_key(&symbol)
    }
}
