//! A full check of the engine's internal consistency. Tests end with it, and a restored
//! snapshot must pass it before the engine accepts it. It walks the whole state: O(state).

use std::collections::BTreeMap;

use exchange_domain::Side;

use crate::arena::NIL;
use crate::brokers::Broker;
use crate::engine::Engine;

/// A broken invariant: a bug in the engine, or a snapshot that was not made by it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvariantViolation(pub String);

impl std::fmt::Display for InvariantViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "engine invariant violated: {}", self.0)
    }
}

impl std::error::Error for InvariantViolation {}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(InvariantViolation(format!($($msg)+)));
        }
    };
}

impl Engine {
    /// Checks every structural and accounting invariant:
    /// - levels strictly ordered, the best never empty and empty slots counted, totals equal
    ///   to the sum of their orders, queues
    ///   in priority order, and the book not crossed at rest;
    /// - every resting order indexed, listed in its account in id order, and counted;
    /// - held funds equal to what the resting orders hold; no negative balance;
    /// - every asset conserved: all balances add up to deposits minus withdrawals;
    /// - brokers indexed, and their exactly-once windows consistent.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let state = &self.state;
        let mut expected_held: BTreeMap<(u32, u8), i64> = BTreeMap::new();
        let mut resting = 0u32;
        for (market_index, market) in state.markets.iter().enumerate() {
            for side in [Side::Buy, Side::Sell] {
                let book_side = market.book.side(side);
                for pair in book_side.levels.windows(2) {
                    ensure!(
                        book_side.crosses(pair[1].price, pair[0].price)
                            && pair[0].price != pair[1].price,
                        "{:?} levels of symbol {} out of order: {} then {}",
                        side,
                        market.spec.symbol,
                        pair[0].price,
                        pair[1].price
                    );
                }
                ensure!(
                    book_side.levels.last().is_none_or(|l| l.count > 0),
                    "the best {:?} level of symbol {} is empty",
                    side,
                    market.spec.symbol
                );
                let empty = book_side.levels.iter().filter(|l| l.count == 0).count();
                ensure!(
                    empty == book_side.empty_levels(),
                    "{:?} side of symbol {} counts {} empty levels, has {}",
                    side,
                    market.spec.symbol,
                    book_side.empty_levels(),
                    empty
                );
                for level in &book_side.levels {
                    if level.count == 0 {
                        ensure!(
                            level.total.0 == 0 && level.head == NIL && level.tail == NIL,
                            "empty level {} still links orders",
                            level.price
                        );
                        continue;
                    }
                    let (mut handle, mut prev, mut count, mut total) =
                        (level.head, NIL, 0u32, 0i64);
                    let mut last_priority = None;
                    while handle != NIL {
                        let order = state.orders.get(handle);
                        ensure!(
                            order.prev == prev,
                            "order {} has a broken queue link",
                            order.id
                        );
                        ensure!(
                            order.symbol as usize == market_index
                                && order.side == side
                                && order.price == level.price,
                            "order {} sits in the wrong level",
                            order.id
                        );
                        ensure!(
                            order.leaves.0 > 0,
                            "order {} rests with nothing left",
                            order.id
                        );
                        ensure!(
                            last_priority.is_none_or(|p| p < order.priority),
                            "order {} is out of time priority at {}",
                            order.id,
                            level.price
                        );
                        ensure!(
                            state.order_index.get(&order.id) == Some(&handle),
                            "order {} is not indexed",
                            order.id
                        );
                        last_priority = Some(order.priority);
                        let (slot, amount) = match side {
                            Side::Buy => {
                                (order.quote_slot, order.price.0.checked_mul(order.leaves.0))
                            }
                            Side::Sell => (order.base_slot, Some(order.leaves.0)),
                        };
                        // Checked sums: a wrapped total could hide money from nowhere.
                        let held = expected_held.entry((order.account, slot)).or_insert(0);
                        let sum = amount.and_then(|amount| held.checked_add(amount));
                        ensure!(sum.is_some(), "order {} holds more than an i64", order.id);
                        *held = sum.unwrap_or_default();
                        count += 1;
                        total += order.leaves.0;
                        prev = handle;
                        handle = order.next;
                    }
                    ensure!(level.tail == prev, "level {} has a stale tail", level.price);
                    ensure!(count > 0, "empty level at {}", level.price);
                    ensure!(
                        count == level.count && total == level.total.0,
                        "level {} counts {} orders / {} lots, holds {} / {}",
                        level.price,
                        level.count,
                        level.total,
                        count,
                        total
                    );
                    resting += count;
                }
            }
            if let (Some(bid), Some(ask)) = (market.book.bids.best(), market.book.asks.best()) {
                ensure!(
                    bid.price < ask.price,
                    "book of symbol {} rests crossed: bid {} ask {}",
                    market.spec.symbol,
                    bid.price,
                    ask.price
                );
            }
        }
        ensure!(
            resting == state.orders.live() && resting as usize == state.order_index.len(),
            "{} orders in books, {} in the arena, {} indexed",
            resting,
            state.orders.live(),
            state.order_index.len()
        );

        let mut totals: BTreeMap<exchange_domain::AssetId, i64> = BTreeMap::new();
        let mut listed = 0u32;
        for (account_index, account) in state.accounts.iter().enumerate() {
            let (mut handle, mut prev, mut count, mut last_id) =
                (account.orders_head, NIL, 0, None);
            while handle != NIL {
                let order = state.orders.get(handle);
                ensure!(
                    order.account as usize == account_index && order.account_prev == prev,
                    "order {} is linked into the wrong account list",
                    order.id
                );
                ensure!(
                    last_id.is_none_or(|id| id < order.id),
                    "account {} lists order {} out of id order",
                    account.id,
                    order.id
                );
                last_id = Some(order.id);
                count += 1;
                prev = handle;
                handle = order.account_next;
            }
            ensure!(
                account.orders_tail == prev && count == account.open_orders,
                "account {} counts {} open orders, lists {}",
                account.id,
                account.open_orders,
                count
            );
            listed += count;
            for (slot, balance) in account.balances.iter().enumerate() {
                ensure!(
                    balance.available >= 0 && balance.held >= 0,
                    "account {} has a negative balance of asset {}",
                    account.id,
                    balance.asset
                );
                let expected = expected_held
                    .get(&(account_index as u32, slot as u8))
                    .copied()
                    .unwrap_or(0);
                ensure!(
                    balance.held == expected,
                    "account {} holds {} of asset {}, its orders need {}",
                    account.id,
                    balance.held,
                    balance.asset,
                    expected
                );
                let total = totals.entry(balance.asset).or_insert(0);
                let sum = balance
                    .available
                    .checked_add(balance.held)
                    .and_then(|funds| total.checked_add(funds));
                ensure!(
                    sum.is_some(),
                    "asset {}'s balances add up to more than an i64",
                    balance.asset
                );
                *total = sum.unwrap_or_default();
            }
        }
        ensure!(
            listed == resting,
            "{} orders in accounts, {} in books",
            listed,
            resting
        );
        for (asset, total) in &state.asset_totals {
            let held_by_accounts = totals.get(asset).copied().unwrap_or(0);
            ensure!(
                held_by_accounts == *total,
                "asset {} not conserved: balances add up to {}, deposits less withdrawals {}",
                asset,
                held_by_accounts,
                total
            );
        }
        for (asset, total) in &totals {
            ensure!(
                *total == 0 || state.asset_totals.contains_key(asset),
                "asset {} appeared from nowhere: {}",
                asset,
                total
            );
        }
        self.check_brokers()
    }

    /// The broker table and each broker's exactly-once window: indexed once each, never the
    /// operator; every remembered id in its own slot, at most the highest seen, which is
    /// itself remembered; every remembered order a command already processed.
    fn check_brokers(&self) -> Result<(), InvariantViolation> {
        let state = &self.state;
        ensure!(
            state.broker_index.len() == state.brokers.len(),
            "{} brokers indexed, {} in the table",
            state.broker_index.len(),
            state.brokers.len()
        );
        for (index, broker) in state.brokers.iter().enumerate() {
            ensure!(
                broker.id != exchange_domain::BrokerId::OPERATOR
                    && state.broker_index.get(&broker.id) == Some(&(index as u32)),
                "broker {} is misindexed",
                broker.id
            );
            ensure!(
                broker.high_water == 0
                    || broker.window[Broker::slot(broker.high_water)].client_order_id
                        == broker.high_water,
                "broker {} forgot its highest client order id {}",
                broker.id,
                broker.high_water
            );
            for (slot, remembered) in broker.window.iter().enumerate() {
                let id = remembered.client_order_id;
                ensure!(
                    id == 0
                        || (Broker::slot(id) == slot
                            && id <= broker.high_water
                            && remembered.order_id > 0
                            && remembered.order_id <= state.last_seq),
                    "broker {} remembers client order id {} impossibly",
                    broker.id,
                    id
                );
            }
        }
        Ok(())
    }
}
