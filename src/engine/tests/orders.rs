//! Every order type, matching priority, and the funds each step moves.

use exchange_domain::{CancelReason, Event, Liquidity, OrderType, Side, TimeInForce, TradeId};

use super::*;

#[test]
fn gtc_rests_then_trades_at_the_resting_price() {
    let mut h = Harness::new();
    let ask = h.gtc(ALICE, Side::Sell, 100, 10);
    assert_eq!(h.depth(Side::Sell), vec![(100, 10)]);
    assert_eq!(h.balance(ALICE, BASE), (FUNDS - 10, 10));

    // The buyer bids 105; the trade happens at the maker's 100 and the buyer keeps the 5 a lot.
    let (bid, events) = h.limit(BOB, Side::Buy, 105, 4, TimeInForce::Gtc);
    assert_eq!(fills(&events), vec![(ask, 100, 4, 6), (bid, 100, 4, 0)]);
    assert_eq!(h.depth(Side::Sell), vec![(100, 6)]);
    assert_eq!(h.depth(Side::Buy), vec![]);
    assert_eq!(h.balance(BOB, USD), (FUNDS - 400, 0));
    assert_eq!(h.balance(BOB, BASE), (FUNDS + 4, 0));
    assert_eq!(h.balance(ALICE, USD), (FUNDS + 400, 0));
    assert_eq!(h.balance(ALICE, BASE), (FUNDS - 10, 6));
}

#[test]
fn each_match_emits_two_executions_maker_first_with_one_trade_id() {
    let mut h = Harness::new();
    let ask = h.gtc(ALICE, Side::Sell, 100, 5);
    let (bid, events) = h.limit(BOB, Side::Buy, 100, 5, TimeInForce::Gtc);
    let executions: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Event::Execution { .. }))
        .collect();
    assert_eq!(executions.len(), 2);
    let (
        Event::Execution {
            exec_id: maker_exec,
            trade_id: maker_trade,
            order_id: maker_order,
            liquidity: Liquidity::Maker,
            counter_order_id: maker_counter,
            side: Side::Sell,
            account: ALICE,
            ..
        },
        Event::Execution {
            exec_id: taker_exec,
            trade_id: taker_trade,
            order_id: taker_order,
            liquidity: Liquidity::Taker,
            counter_order_id: taker_counter,
            side: Side::Buy,
            account: BOB,
            ..
        },
    ) = (*executions[0], *executions[1])
    else {
        panic!("unexpected executions {executions:?}");
    };
    assert_eq!((maker_order, taker_order), (ask, bid));
    assert_eq!((maker_counter, taker_counter), (bid, ask));
    assert_eq!(maker_trade, TradeId(1));
    assert_eq!(taker_trade, maker_trade);
    assert_ne!(maker_exec, taker_exec);
    assert_eq!(h.engine.trade_count(), 1);
}

#[test]
fn price_time_priority_across_and_within_levels() {
    let mut h = Harness::new();
    let a1 = h.gtc(ALICE, Side::Sell, 101, 3);
    let a2 = h.gtc(BOB, Side::Sell, 100, 2);
    let a3 = h.gtc(CAROL, Side::Sell, 100, 2);
    let a4 = h.gtc(ALICE, Side::Sell, 100, 2);
    assert_eq!(
        h.engine.queue(SYM, Side::Sell, exchange_domain::Price(100)),
        vec![a2, a3, a4]
    );
    // Best price first, then first come first served within it.
    let (bid, events) = h.limit(CAROL, Side::Buy, 101, 8, TimeInForce::Gtc);
    assert_eq!(
        fills(&events),
        vec![
            (a2, 100, 2, 0),
            (bid, 100, 2, 6),
            (a3, 100, 2, 0),
            (bid, 100, 2, 4),
            (a4, 100, 2, 0),
            (bid, 100, 2, 2),
            (a1, 101, 2, 1),
            (bid, 101, 2, 0),
        ]
    );
    assert_eq!(h.depth(Side::Sell), vec![(101, 1)]);
}

#[test]
fn ioc_trades_what_it_can_and_cancels_the_rest() {
    let mut h = Harness::new();
    let ask = h.gtc(ALICE, Side::Sell, 100, 3);
    let (bid, events) = h.limit(BOB, Side::Buy, 100, 5, TimeInForce::Ioc);
    assert_eq!(fills(&events), vec![(ask, 100, 3, 0), (bid, 100, 3, 2)]);
    assert!(matches!(
        events.last(),
        Some(Event::Cancelled { order_id, leaves_qty, reason: CancelReason::Unfilled, .. })
            if *order_id == bid && leaves_qty.0 == 2
    ));
    assert_eq!(h.depth(Side::Buy), vec![], "an IOC never rests");
    assert_eq!(
        h.balance(BOB, USD),
        (FUNDS - 300, 0),
        "the remainder's hold is released"
    );
}

#[test]
fn fok_fills_completely_or_not_at_all() {
    let mut h = Harness::new();
    h.gtc(ALICE, Side::Sell, 100, 3);
    h.gtc(BOB, Side::Sell, 101, 3);
    let (kill, events) = h.limit(CAROL, Side::Buy, 101, 7, TimeInForce::Fok);
    assert_eq!(fills(&events), vec![]);
    assert!(matches!(
        events[..],
        [Event::Accepted { .. }, Event::Cancelled { order_id, reason: CancelReason::FillOrKill, .. }]
            if order_id == kill
    ));
    assert_eq!(
        h.depth(Side::Sell),
        vec![(100, 3), (101, 3)],
        "a killed FOK touches nothing"
    );
    assert_eq!(h.balance(CAROL, USD), (FUNDS, 0));

    let (fill, events) = h.limit(CAROL, Side::Buy, 101, 6, TimeInForce::Fok);
    let filled = fills(&events);
    assert_eq!(filled.len(), 4);
    assert_eq!(filled[3], (fill, 101, 3, 0));
    assert_eq!(h.depth(Side::Sell), vec![]);
}

#[test]
fn post_only_rests_and_never_takes() {
    let mut h = Harness::new();
    h.gtc(ALICE, Side::Sell, 100, 3);
    let (_, events) = h.limit(BOB, Side::Buy, 99, 3, TimeInForce::PostOnly);
    assert!(matches!(events[..], [Event::Accepted { .. }]));
    assert_eq!(h.depth(Side::Buy), vec![(99, 3)]);
    let (_, events) = h.limit(BOB, Side::Buy, 100, 3, TimeInForce::PostOnly);
    assert_eq!(
        rejection(&events),
        Some(exchange_domain::RejectReason::PostOnlyWouldTrade)
    );
    assert_eq!(h.depth(Side::Buy), vec![(99, 3)]);
}

#[test]
fn market_order_trades_up_to_its_protection_price() {
    let mut h = Harness::new();
    let a1 = h.gtc(ALICE, Side::Sell, 100, 2);
    let a2 = h.gtc(ALICE, Side::Sell, 105, 2);
    h.gtc(ALICE, Side::Sell, 110, 2);
    let mut order = new_order(BOB, Side::Buy, 106, 10, TimeInForce::Ioc);
    order.order_type = OrderType::Market;
    let (bid, events) = h.order(order);
    assert_eq!(
        fills(&events),
        vec![
            (a1, 100, 2, 0),
            (bid, 100, 2, 8),
            (a2, 105, 2, 0),
            (bid, 105, 2, 6)
        ]
    );
    assert!(matches!(
        events.last(),
        Some(Event::Cancelled { leaves_qty, reason: CancelReason::Unfilled, .. }) if leaves_qty.0 == 6
    ));
    assert_eq!(h.balance(BOB, USD), (FUNDS - 200 - 210, 0));
    assert_eq!(h.depth(Side::Sell), vec![(110, 2)]);
}

#[test]
fn market_sell_into_an_empty_book_is_cancelled_unfilled() {
    let mut h = Harness::new();
    let mut order = new_order(BOB, Side::Sell, 1, 10, TimeInForce::Ioc);
    order.order_type = OrderType::Market;
    let (_, events) = h.order(order);
    assert!(matches!(
        events[..],
        [
            Event::Accepted { .. },
            Event::Cancelled {
                reason: CancelReason::Unfilled,
                ..
            }
        ]
    ));
    assert_eq!(h.balance(BOB, BASE), (FUNDS, 0));
}

#[test]
fn market_fok_is_all_or_nothing() {
    let mut h = Harness::new();
    h.gtc(ALICE, Side::Buy, 100, 5);
    let mut order = new_order(BOB, Side::Sell, 90, 6, TimeInForce::Fok);
    order.order_type = OrderType::Market;
    let (_, events) = h.order(order);
    assert!(matches!(
        events.last(),
        Some(Event::Cancelled {
            reason: CancelReason::FillOrKill,
            ..
        })
    ));
    order.qty = exchange_domain::Qty(5);
    let (_, events) = h.order(order);
    assert_eq!(fills(&events).len(), 2);
}

#[test]
fn cancel_releases_the_hold_and_removes_the_level() {
    let mut h = Harness::new();
    let bid = h.gtc(BOB, Side::Buy, 50, 10);
    assert_eq!(h.balance(BOB, USD), (FUNDS - 500, 500));
    let events = h.cancel(BOB, bid);
    assert!(matches!(
        events[..],
        [Event::Cancelled { order_id, leaves_qty, reason: CancelReason::Requested, .. }]
            if order_id == bid && leaves_qty.0 == 10
    ));
    assert_eq!(h.balance(BOB, USD), (FUNDS, 0));
    assert_eq!(h.depth(Side::Buy), vec![]);
    assert_eq!(h.engine.open_order_count(), 0);
}

#[test]
fn cancel_of_a_partially_filled_order_releases_only_its_remainder() {
    let mut h = Harness::new();
    let bid = h.gtc(BOB, Side::Buy, 50, 10);
    h.limit(ALICE, Side::Sell, 50, 4, TimeInForce::Ioc);
    let events = h.cancel(BOB, bid);
    assert!(matches!(events[..], [Event::Cancelled { leaves_qty, .. }] if leaves_qty.0 == 6));
    assert_eq!(h.balance(BOB, USD), (FUNDS - 200, 0));
    assert_eq!(h.balance(BOB, BASE), (FUNDS + 4, 0));
}

#[test]
fn mass_cancel_cancels_every_open_order_of_the_account_oldest_first() {
    let mut h = Harness::new();
    let o1 = h.gtc(ALICE, Side::Buy, 50, 1);
    let o2 = h.gtc(ALICE, Side::Sell, 150, 1);
    let other = h.gtc(BOB, Side::Buy, 50, 1);
    let mut grid = new_order(ALICE, Side::Buy, 50, 100, TimeInForce::Gtc);
    grid.symbol = GRID;
    let (o3, _) = h.order(grid);
    let events = h.mass_cancel(ALICE, Some(SYM));
    let cancelled: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Cancelled {
                order_id,
                reason: CancelReason::MassCancel,
                ..
            } => Some(*order_id),
            _ => None,
        })
        .collect();
    assert_eq!(cancelled, vec![o1, o2]);
    assert!(matches!(
        events.last(),
        Some(Event::MassCancelled { count: 2, .. })
    ));
    assert!(h.engine.open_order(other).is_some());
    assert!(h.engine.open_order(o3).is_some());
    let events = h.mass_cancel(ALICE, None);
    assert!(
        matches!(events[..], [Event::Cancelled { order_id, .. }, Event::MassCancelled { count: 1, .. }] if order_id == o3)
    );
    assert_eq!(h.balance(ALICE, USD), (FUNDS, 0));
    assert_eq!(h.balance(ALICE, BASE), (FUNDS, 0));
}

#[test]
fn a_buyer_gets_back_what_it_held_above_the_trade_price() {
    let mut h = Harness::new();
    h.gtc(ALICE, Side::Sell, 90, 1);
    h.gtc(ALICE, Side::Sell, 95, 1);
    // Holds 2 * 100, pays 90 + 95, and rests nothing: all of the 15 comes back.
    let (_, events) = h.limit(BOB, Side::Buy, 100, 2, TimeInForce::Gtc);
    assert_eq!(fills(&events).len(), 4);
    assert_eq!(h.balance(BOB, USD), (FUNDS - 185, 0));
}

#[test]
fn the_last_trade_becomes_the_reference_price() {
    let mut h = Harness::new();
    h.admin(exchange_domain::AdminCommand::SetPriceBand {
        symbol: SYM,
        price_band_bps: 1_000,
        reference_price: exchange_domain::Price(100),
    });
    h.gtc(ALICE, Side::Sell, 105, 1);
    h.limit(BOB, Side::Buy, 105, 1, TimeInForce::Ioc);
    // The band is now 10% around 105: 95 is inside, 116 outside.
    let (_, events) = h.limit(BOB, Side::Buy, 95, 1, TimeInForce::Gtc);
    assert_eq!(rejection(&events), None);
    let (_, events) = h.limit(BOB, Side::Sell, 116, 1, TimeInForce::Gtc);
    assert_eq!(
        rejection(&events),
        Some(exchange_domain::RejectReason::PriceOutsideBand)
    );
}
