//! The order manager: the checks every order passes before it may trade, and the order
//! commands (new, cancel, cancel-replace, mass cancel).
//!
//! Pipeline of a new order, in the order the checks run (the first failure is the reason):
//!
//! ```text
//! symbol, account ─▶ price and quantity (positive, on tick, on lot) ─▶ order type
//!   ─▶ halted ─▶ risk (max quantity, max notional, price band, open orders, capacity)
//!   ─▶ post-only would trade ─▶ funds hold ─▶ Accepted ─▶ match ─▶ rest or cancel remainder
//! ```

use exchange_domain::{
    AccountId, Amount, Cancel, CancelReason, CancelReplace, Event, MassCancel, NewOrder, OrderId,
    OrderType, Price, Qty, RejectReason, RiskLimits, Side, SymbolSpec, TimeInForce,
};

use crate::arena::{Handle, Order, NIL};
use crate::engine::{Emitter, Market, State};
use crate::matching::{MatchEnd, Taker};
use crate::sink::EventSink;

/// Price and quantity must be positive and on the symbol's grid.
fn check_price_qty(spec: &SymbolSpec, price: Price, qty: Qty) -> Result<(), RejectReason> {
    if qty.0 <= 0 {
        return Err(RejectReason::InvalidQuantity);
    }
    if qty.0 % spec.lot_size.0 != 0 {
        return Err(RejectReason::QtyOffLot);
    }
    if price.0 <= 0 {
        return Err(RejectReason::InvalidPrice);
    }
    if price.0 % spec.tick_size.0 != 0 {
        return Err(RejectReason::PriceOffTick);
    }
    Ok(())
}

/// The account's per-order limits and the symbol's price band. Returns the order's notional.
fn check_risk(
    limits: &RiskLimits,
    market: &Market,
    price: Price,
    qty: Qty,
) -> Result<Amount, RejectReason> {
    if qty > limits.max_order_qty {
        return Err(RejectReason::MaxOrderQtyExceeded);
    }
    let notional = price
        .notional(qty)
        .filter(|notional| *notional <= limits.max_order_notional)
        .ok_or(RejectReason::MaxNotionalExceeded)?;
    let band_bps = market.price_band_bps;
    let reference = market.reference_price.0;
    if band_bps > 0 && reference > 0 {
        // In i128: both factors are below 2^63 and 2^21, so nothing overflows.
        let distance = (price.0 as i128 - reference as i128).abs();
        if distance * 10_000 > reference as i128 * band_bps as i128 {
            return Err(RejectReason::PriceOutsideBand);
        }
    }
    Ok(notional)
}

/// An order that passed every check and holds its funds.
struct Admitted {
    market: u32,
    account: u32,
    base_slot: u8,
    quote_slot: u8,
}

impl State {
    /// Returns the reject reason when the order was refused.
    pub fn new_order<S: EventSink>(
        &mut self,
        order_id: OrderId,
        cmd: &NewOrder,
        out: &mut Emitter<S>,
    ) -> Option<RejectReason> {
        let admitted = match self.admit(cmd) {
            Ok(admitted) => admitted,
            Err(reason) => {
                out.emit(cmd.rejected(reason));
                return Some(reason);
            }
        };
        out.emit(Event::Accepted {
            order_id,
            account: cmd.account,
            symbol: cmd.symbol,
            client_order_id: cmd.client_order_id,
            side: cmd.side,
            order_type: cmd.order_type,
            time_in_force: cmd.time_in_force,
            price: cmd.price,
            qty: cmd.qty,
        });
        let mut taker = Taker {
            order_id,
            client_order_id: cmd.client_order_id,
            market: admitted.market,
            account: admitted.account,
            side: cmd.side,
            limit: cmd.price,
            leaves: cmd.qty,
            self_trade_prevention: cmd.self_trade_prevention,
            base_slot: admitted.base_slot,
            quote_slot: admitted.quote_slot,
        };
        if cmd.time_in_force == TimeInForce::Fok
            && !self.can_fill_completely(admitted.market, &taker)
        {
            self.drop_taker(&taker, CancelReason::FillOrKill, out);
            return None;
        }
        let end = self.match_taker(admitted.market, &mut taker, out);
        if taker.leaves.0 == 0 {
            return None;
        }
        match (end, cmd.time_in_force) {
            (MatchEnd::SelfTrade, _) => self.drop_taker(&taker, CancelReason::SelfTrade, out),
            (MatchEnd::Done, TimeInForce::Gtc | TimeInForce::PostOnly) => {
                let handle = self.orders.insert(Order {
                    id: order_id,
                    client_order_id: cmd.client_order_id,
                    price: cmd.price,
                    leaves: taker.leaves,
                    priority: order_id.0,
                    account: admitted.account,
                    symbol: admitted.market,
                    base_slot: admitted.base_slot,
                    quote_slot: admitted.quote_slot,
                    side: cmd.side,
                    time_in_force: cmd.time_in_force,
                    self_trade_prevention: cmd.self_trade_prevention,
                    prev: NIL,
                    next: NIL,
                    account_prev: NIL,
                    account_next: NIL,
                    level_hint: 0,
                });
                self.rest(handle);
            }
            (MatchEnd::Done, TimeInForce::Ioc | TimeInForce::Fok) => {
                debug_assert!(
                    cmd.time_in_force != TimeInForce::Fok,
                    "FOK left a remainder"
                );
                self.drop_taker(&taker, CancelReason::Unfilled, out)
            }
        }
        None
    }

    /// Runs every pre-trade check of a new order and holds its funds.
    fn admit(&mut self, cmd: &NewOrder) -> Result<Admitted, RejectReason> {
        let market_index = *self
            .market_index
            .get(&cmd.symbol)
            .ok_or(RejectReason::UnknownSymbol)?;
        let account_index = *self
            .account_index
            .get(&cmd.account)
            .ok_or(RejectReason::UnknownAccount)?;
        let market = &self.markets[market_index as usize];
        check_price_qty(&market.spec, cmd.price, cmd.qty)?;
        if cmd.order_type == OrderType::Market
            && !matches!(cmd.time_in_force, TimeInForce::Ioc | TimeInForce::Fok)
        {
            return Err(RejectReason::InvalidTimeInForce);
        }
        if market.halted {
            return Err(RejectReason::SymbolHalted);
        }
        let account = &self.accounts[account_index as usize];
        let notional = check_risk(&account.limits, market, cmd.price, cmd.qty)?;
        if matches!(cmd.time_in_force, TimeInForce::Gtc | TimeInForce::PostOnly) {
            if account.open_orders >= account.limits.max_open_orders {
                return Err(RejectReason::MaxOpenOrdersExceeded);
            }
            if self.orders.live() >= self.config.orders_open_max {
                return Err(RejectReason::OrderCapacityExceeded);
            }
        }
        if cmd.time_in_force == TimeInForce::PostOnly {
            let opposite = market.book.side(cmd.side.opposite());
            if let Some(best) = opposite.best() {
                if opposite.crosses(best.price, cmd.price) {
                    return Err(RejectReason::PostOnlyWouldTrade);
                }
            }
        }
        let (base, quote) = (market.spec.base, market.spec.quote);
        let account = &mut self.accounts[account_index as usize];
        let base_slot = account
            .slot_or_create(base)
            .ok_or(RejectReason::TooManyAssets)?;
        let quote_slot = account
            .slot_or_create(quote)
            .ok_or(RejectReason::TooManyAssets)?;
        let held = match cmd.side {
            Side::Buy => account.hold(quote_slot, notional),
            Side::Sell => account.hold(base_slot, Amount(cmd.qty.0)),
        };
        if !held {
            return Err(RejectReason::InsufficientFunds);
        }
        Ok(Admitted {
            market: market_index,
            account: account_index,
            base_slot,
            quote_slot,
        })
    }

    /// Puts an order at the back of its price level and into its account's list.
    fn rest(&mut self, handle: Handle) {
        let order = self.orders.get(handle);
        let (id, market, side) = (order.id, order.symbol, order.side);
        self.markets[market as usize]
            .book
            .side_mut(side)
            .push_back(&mut self.orders, handle);
        self.link_to_account(handle);
        self.order_index.insert(id, handle);
    }

    /// Releases what an incoming order still holds and reports its remainder cancelled.
    fn drop_taker<S: EventSink>(
        &mut self,
        taker: &Taker,
        reason: CancelReason,
        out: &mut Emitter<S>,
    ) {
        let (slot, amount) = taker.hold();
        let account = &mut self.accounts[taker.account as usize];
        account.release(slot, amount);
        let account_id = account.id;
        let symbol = self.markets[taker.market as usize].spec.symbol;
        out.emit(Event::Cancelled {
            order_id: taker.order_id,
            account: account_id,
            symbol,
            client_order_id: taker.client_order_id,
            leaves_qty: taker.leaves,
            reason,
        });
    }

    /// The resting order `order_id`, if it exists and belongs to `account`.
    fn owned_order(&self, account: AccountId, order_id: OrderId) -> Result<Handle, RejectReason> {
        let handle = *self
            .order_index
            .get(&order_id)
            .ok_or(RejectReason::UnknownOrder)?;
        let owner = self.orders.get(handle).account;
        if self.accounts[owner as usize].id != account {
            return Err(RejectReason::NotOrderOwner);
        }
        Ok(handle)
    }

    pub fn cancel<S: EventSink>(&mut self, cmd: &Cancel, out: &mut Emitter<S>) {
        match self.owned_order(cmd.account, cmd.order_id) {
            Ok(handle) => self.cancel_resting(handle, CancelReason::Requested, out),
            Err(reason) => out.emit(Event::CancelRejected {
                account: cmd.account,
                order_id: cmd.order_id,
                reason,
            }),
        }
    }

    pub fn cancel_replace<S: EventSink>(&mut self, cmd: &CancelReplace, out: &mut Emitter<S>) {
        if let Err(reason) = self.try_cancel_replace(cmd, out) {
            out.emit(Event::ReplaceRejected {
                account: cmd.account,
                order_id: cmd.order_id,
                reason,
            });
        }
    }

    fn try_cancel_replace<S: EventSink>(
        &mut self,
        cmd: &CancelReplace,
        out: &mut Emitter<S>,
    ) -> Result<(), RejectReason> {
        let handle = self.owned_order(cmd.account, cmd.order_id)?;
        let order = *self.orders.get(handle);
        let market = &self.markets[order.symbol as usize];
        if market.halted {
            return Err(RejectReason::SymbolHalted);
        }
        check_price_qty(&market.spec, cmd.price, cmd.qty)?;
        let limits = self.accounts[order.account as usize].limits;
        let notional = check_risk(&limits, market, cmd.price, cmd.qty)?;
        let symbol = market.spec.symbol;

        if cmd.price == order.price && cmd.qty <= order.leaves {
            // Same price, same or less quantity: the order keeps its place in the queue.
            let reduction = Qty(order.leaves.0 - cmd.qty.0);
            let book_side = self.markets[order.symbol as usize]
                .book
                .side_mut(order.side);
            let level = book_side.locate(&order);
            book_side.levels[level].total.0 -= reduction.0;
            self.orders.get_mut(handle).leaves = cmd.qty;
            let account = &mut self.accounts[order.account as usize];
            match order.side {
                Side::Buy => account.release(order.quote_slot, Amount(order.price.0 * reduction.0)),
                Side::Sell => account.release(order.base_slot, Amount(reduction.0)),
            }
            out.emit(Event::Replaced {
                order_id: order.id,
                account: cmd.account,
                symbol,
                price: cmd.price,
                qty: cmd.qty,
                priority_kept: true,
            });
            return Ok(());
        }

        // A new price or a larger quantity: the order goes to the back of the queue at its new
        // price, trading first if that price crosses.
        if order.time_in_force == TimeInForce::PostOnly {
            let opposite = market.book.side(order.side.opposite());
            if let Some(best) = opposite.best() {
                if opposite.crosses(best.price, cmd.price) {
                    return Err(RejectReason::PostOnlyWouldTrade);
                }
            }
        }
        let (slot, old_hold, new_hold) = match order.side {
            Side::Buy => (order.quote_slot, order.price.0 * order.leaves.0, notional.0),
            Side::Sell => (order.base_slot, order.leaves.0, cmd.qty.0),
        };
        let account = &mut self.accounts[order.account as usize];
        if new_hold > old_hold {
            if !account.hold(slot, Amount(new_hold - old_hold)) {
                return Err(RejectReason::InsufficientFunds);
            }
        } else {
            account.release(slot, Amount(old_hold - new_hold));
        }

        self.markets[order.symbol as usize]
            .book
            .side_mut(order.side)
            .unlink(&mut self.orders, handle);
        out.emit(Event::Replaced {
            order_id: order.id,
            account: cmd.account,
            symbol,
            price: cmd.price,
            qty: cmd.qty,
            priority_kept: false,
        });
        let mut taker = Taker {
            order_id: order.id,
            client_order_id: order.client_order_id,
            market: order.symbol,
            account: order.account,
            side: order.side,
            limit: cmd.price,
            leaves: cmd.qty,
            self_trade_prevention: order.self_trade_prevention,
            base_slot: order.base_slot,
            quote_slot: order.quote_slot,
        };
        let end = self.match_taker(order.symbol, &mut taker, out);
        let resting = self.orders.get_mut(handle);
        resting.price = cmd.price;
        resting.leaves = taker.leaves;
        resting.priority = out.seq;
        if taker.leaves.0 > 0 && end == MatchEnd::Done {
            self.markets[order.symbol as usize]
                .book
                .side_mut(order.side)
                .push_back(&mut self.orders, handle);
            return Ok(());
        }
        // Filled, or stopped by self-trade prevention: the order leaves its account's list.
        // It is out of the book already, so it is detached here rather than by detach_resting.
        self.unlink_from_account(handle);
        self.order_index.remove(&order.id);
        self.orders.remove(handle);
        if taker.leaves.0 > 0 {
            self.drop_taker(&taker, CancelReason::SelfTrade, out);
        }
        Ok(())
    }

    pub fn mass_cancel<S: EventSink>(&mut self, cmd: &MassCancel, out: &mut Emitter<S>) {
        let Some(&account_index) = self.account_index.get(&cmd.account) else {
            out.emit(Event::MassCancelRejected {
                account: cmd.account,
                reason: RejectReason::UnknownAccount,
            });
            return;
        };
        let market_filter = match cmd.symbol {
            None => None,
            Some(symbol) => match self.market_index.get(&symbol) {
                Some(&index) => Some(index),
                None => {
                    out.emit(Event::MassCancelRejected {
                        account: cmd.account,
                        reason: RejectReason::UnknownSymbol,
                    });
                    return;
                }
            },
        };
        let mut count = 0u32;
        let mut handle = self.accounts[account_index as usize].orders_head;
        while handle != NIL {
            let order = self.orders.get(handle);
            let next = order.account_next;
            if market_filter.is_none_or(|market| market == order.symbol) {
                self.cancel_resting(handle, CancelReason::MassCancel, out);
                count += 1;
            }
            handle = next;
        }
        out.emit(Event::MassCancelled {
            account: cmd.account,
            symbol: cmd.symbol,
            count,
        });
    }
}
