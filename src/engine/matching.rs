//! Price-time priority matching of one incoming order against the opposite side of a book.
//!
//! The incoming order (the taker) trades with the first order in the queue at the best price
//! while the prices cross; every trade is at the resting order's (the maker's) price. Each
//! match settles both wallets and emits two executions, the maker's first.

use exchange_domain::{
    Amount, CancelReason, ClientOrderId, Event, ExecId, Liquidity, OrderId, Price, Qty,
    SelfTradePrevention, Side, TradeId,
};

use crate::arena::{Handle, Order, NIL};
use crate::engine::{Emitter, State};
use crate::sink::EventSink;

/// The incoming side of a match: a new order, or a resting order that lost its priority in a
/// cancel-replace and re-enters.
pub(crate) struct Taker {
    pub order_id: OrderId,
    pub client_order_id: ClientOrderId,
    /// Index of the symbol in the engine's market table.
    pub market: u32,
    pub account: u32,
    pub side: Side,
    /// The limit price, or a market order's protection price. A buy holds `limit * leaves`.
    pub limit: Price,
    pub leaves: Qty,
    pub self_trade_prevention: SelfTradePrevention,
    pub base_slot: u8,
    pub quote_slot: u8,
}

impl Taker {
    /// The funds the taker still holds: quote at its limit for a buy, base for a sell.
    pub fn hold(&self) -> (u8, Amount) {
        match self.side {
            Side::Buy => (self.quote_slot, Amount(self.limit.0 * self.leaves.0)),
            Side::Sell => (self.base_slot, Amount(self.leaves.0)),
        }
    }
}

/// Why matching stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MatchEnd {
    /// The taker is filled, or the book no longer crosses its limit.
    Done,
    /// Self-trade prevention requires the taker's remainder to be cancelled.
    SelfTrade,
}

impl State {
    /// Whether `taker` could be filled completely right now, without being stopped by
    /// self-trade prevention: the fill-or-kill test, which changes nothing.
    pub fn can_fill_completely(&self, market: u32, taker: &Taker) -> bool {
        let book_side = self.markets[market as usize]
            .book
            .side(taker.side.opposite());
        let mut fillable = 0i64;
        for level in book_side.levels.iter().rev() {
            if !book_side.crosses(level.price, taker.limit) {
                break;
            }
            if taker.self_trade_prevention == SelfTradePrevention::None {
                fillable += level.total.0;
            } else {
                let mut handle = level.head;
                while handle != NIL {
                    let maker = self.orders.get(handle);
                    if maker.account != taker.account {
                        fillable += maker.leaves.0;
                    } else if taker.self_trade_prevention != SelfTradePrevention::CancelOldest {
                        return fillable >= taker.leaves.0;
                    }
                    if fillable >= taker.leaves.0 {
                        return true;
                    }
                    handle = maker.next;
                }
            }
            if fillable >= taker.leaves.0 {
                return true;
            }
        }
        fillable >= taker.leaves.0
    }

    /// Trades `taker` against the book until it is filled or no longer crosses.
    pub fn match_taker<S: EventSink>(
        &mut self,
        market: u32,
        taker: &mut Taker,
        out: &mut Emitter<S>,
    ) -> MatchEnd {
        let mut end = MatchEnd::Done;
        let mut last_price = None;
        while taker.leaves.0 > 0 {
            let book_side = self.markets[market as usize]
                .book
                .side_mut(taker.side.opposite());
            let Some(level) = book_side.best() else {
                break;
            };
            if !book_side.crosses(level.price, taker.limit) {
                break;
            }
            let price = level.price;
            let maker_handle = level.head;
            let maker = *self.orders.get(maker_handle);

            if maker.account == taker.account
                && taker.self_trade_prevention != SelfTradePrevention::None
            {
                let prevention = taker.self_trade_prevention;
                if matches!(
                    prevention,
                    SelfTradePrevention::CancelOldest | SelfTradePrevention::CancelBoth
                ) {
                    self.cancel_resting(maker_handle, CancelReason::SelfTrade, out);
                }
                if matches!(
                    prevention,
                    SelfTradePrevention::CancelNewest | SelfTradePrevention::CancelBoth
                ) {
                    end = MatchEnd::SelfTrade;
                    break;
                }
                continue;
            }

            let qty = Qty(taker.leaves.0.min(maker.leaves.0));
            self.settle(taker, &maker, price, qty);
            taker.leaves.0 -= qty.0;
            let maker_leaves = Qty(maker.leaves.0 - qty.0);
            if maker_leaves.0 == 0 {
                self.detach_resting(maker_handle);
            } else {
                self.orders.get_mut(maker_handle).leaves = maker_leaves;
                let book_side = self.markets[market as usize]
                    .book
                    .side_mut(taker.side.opposite());
                let last = book_side.levels.len() - 1;
                book_side.levels[last].total.0 -= qty.0;
            }

            self.trades += 1;
            let trade_id = TradeId(self.trades);
            let symbol = self.markets[market as usize].spec.symbol;
            self.executions += 1;
            out.emit(Event::Execution {
                exec_id: ExecId(self.executions),
                trade_id,
                order_id: maker.id,
                account: self.accounts[maker.account as usize].id,
                symbol,
                client_order_id: maker.client_order_id,
                side: maker.side,
                price,
                qty,
                leaves_qty: maker_leaves,
                liquidity: Liquidity::Maker,
                counter_order_id: taker.order_id,
            });
            self.executions += 1;
            out.emit(Event::Execution {
                exec_id: ExecId(self.executions),
                trade_id,
                order_id: taker.order_id,
                account: self.accounts[taker.account as usize].id,
                symbol,
                client_order_id: taker.client_order_id,
                side: taker.side,
                price,
                qty,
                leaves_qty: taker.leaves,
                liquidity: Liquidity::Taker,
                counter_order_id: maker.id,
            });
            last_price = Some(price);
        }
        if let Some(price) = last_price {
            self.markets[market as usize].reference_price = price;
        }
        end
    }

    /// Moves the funds of one match: the buyer's held quote to the seller, the seller's held
    /// base to the buyer. A buying taker held at its limit and gets the price improvement back.
    #[inline]
    fn settle(&mut self, taker: &Taker, maker: &Order, price: Price, qty: Qty) {
        // Cannot overflow: price * qty <= maker.price * maker.leaves, checked when it was accepted.
        let notional = Amount(price.0 * qty.0);
        let base = Amount(qty.0);
        match taker.side {
            Side::Buy => {
                let held_at_limit = Amount(taker.limit.0 * qty.0);
                // A buyer never pays above its limit: the improvement it gets back is >= 0.
                assert!(
                    held_at_limit.0 >= notional.0,
                    "trade at {} above the buyer's limit {}",
                    price.0,
                    taker.limit.0
                );
                let buyer = &mut self.accounts[taker.account as usize];
                buyer.spend_held(taker.quote_slot, held_at_limit);
                buyer.credit(taker.quote_slot, Amount(held_at_limit.0 - notional.0));
                buyer.credit(taker.base_slot, base);
                let seller = &mut self.accounts[maker.account as usize];
                seller.spend_held(maker.base_slot, base);
                seller.credit(maker.quote_slot, notional);
            }
            Side::Sell => {
                let seller = &mut self.accounts[taker.account as usize];
                seller.spend_held(taker.base_slot, base);
                seller.credit(taker.quote_slot, notional);
                let buyer = &mut self.accounts[maker.account as usize];
                buyer.spend_held(maker.quote_slot, notional);
                buyer.credit(maker.base_slot, base);
            }
        }
    }

    /// Removes a resting order from its level, its account's list and the index, and frees its
    /// slot. Its held funds are the caller's to settle or release.
    pub fn detach_resting(&mut self, handle: Handle) -> Order {
        let order = *self.orders.get(handle);
        self.markets[order.symbol as usize]
            .book
            .side_mut(order.side)
            .unlink(&mut self.orders, handle);
        self.unlink_from_account(handle);
        self.order_index.remove(&order.id);
        self.orders.remove(handle)
    }

    /// Cancels a resting order: detaches it, releases its hold and reports it.
    pub fn cancel_resting<S: EventSink>(
        &mut self,
        handle: Handle,
        reason: CancelReason,
        out: &mut Emitter<S>,
    ) {
        let order = self.detach_resting(handle);
        self.release_resting_hold(&order);
        out.emit(Event::Cancelled {
            order_id: order.id,
            account: self.accounts[order.account as usize].id,
            symbol: self.markets[order.symbol as usize].spec.symbol,
            client_order_id: order.client_order_id,
            leaves_qty: order.leaves,
            reason,
        });
    }

    pub fn release_resting_hold(&mut self, order: &Order) {
        let account = &mut self.accounts[order.account as usize];
        match order.side {
            Side::Buy => account.release(order.quote_slot, Amount(order.price.0 * order.leaves.0)),
            Side::Sell => account.release(order.base_slot, Amount(order.leaves.0)),
        }
    }

    pub fn link_to_account(&mut self, handle: Handle) {
        let account_index = self.orders.get(handle).account;
        let account = &mut self.accounts[account_index as usize];
        let old_tail = account.orders_tail;
        account.orders_tail = handle;
        account.open_orders += 1;
        if old_tail == NIL {
            account.orders_head = handle;
        } else {
            self.orders.get_mut(old_tail).account_next = handle;
        }
        let order = self.orders.get_mut(handle);
        order.account_prev = old_tail;
        order.account_next = NIL;
    }

    pub fn unlink_from_account(&mut self, handle: Handle) {
        let order = *self.orders.get(handle);
        let account = &mut self.accounts[order.account as usize];
        account.open_orders -= 1;
        if order.account_prev == NIL {
            account.orders_head = order.account_next;
        } else {
            self.orders.get_mut(order.account_prev).account_next = order.account_next;
        }
        if order.account_next == NIL {
            account.orders_tail = order.account_prev;
        } else {
            self.orders.get_mut(order.account_next).account_prev = order.account_prev;
        }
    }
}
