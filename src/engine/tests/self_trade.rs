//! Self-trade prevention: each mode, decided by the incoming order.

use exchange_domain::{CancelReason, Event, OrderId, SelfTradePrevention, Side, TimeInForce};

use super::*;

fn cancelled(events: &[Event]) -> Vec<(OrderId, CancelReason)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Cancelled {
                order_id, reason, ..
            } => Some((*order_id, *reason)),
            _ => None,
        })
        .collect()
}

/// ALICE rests 2 at 100, then BOB 2 at 100 behind her; ALICE then buys 3 at 100 with `mode`.
fn scenario(mode: SelfTradePrevention) -> (Harness, OrderId, OrderId, OrderId, Vec<Event>) {
    let mut h = Harness::new();
    let own = h.gtc(ALICE, Side::Sell, 100, 2);
    let other = h.gtc(BOB, Side::Sell, 100, 2);
    let mut order = new_order(ALICE, Side::Buy, 100, 3, TimeInForce::Gtc);
    order.self_trade_prevention = mode;
    let (taker, events) = h.order(order);
    (h, own, other, taker, events)
}

#[test]
fn none_lets_an_account_trade_with_itself() {
    let (h, own, other, taker, events) = scenario(SelfTradePrevention::None);
    assert_eq!(
        fills(&events),
        vec![
            (own, 100, 2, 0),
            (taker, 100, 2, 1),
            (other, 100, 1, 1),
            (taker, 100, 1, 0)
        ]
    );
    assert_eq!(h.balance(ALICE, USD), (FUNDS - 100, 0));
}

#[test]
fn cancel_newest_cancels_the_incoming_order() {
    let (h, own, _, taker, events) = scenario(SelfTradePrevention::CancelNewest);
    assert_eq!(fills(&events), vec![]);
    assert_eq!(cancelled(&events), vec![(taker, CancelReason::SelfTrade)]);
    assert!(h.engine.open_order(own).is_some());
    assert_eq!(h.balance(ALICE, USD), (FUNDS, 0));
}

#[test]
fn cancel_oldest_cancels_the_resting_order_and_keeps_matching() {
    let (h, own, other, taker, events) = scenario(SelfTradePrevention::CancelOldest);
    assert_eq!(cancelled(&events), vec![(own, CancelReason::SelfTrade)]);
    assert_eq!(fills(&events), vec![(other, 100, 2, 0), (taker, 100, 2, 1)]);
    // The remainder rests.
    assert_eq!(h.depth(Side::Buy), vec![(100, 1)]);
    assert_eq!(h.balance(ALICE, BASE), (FUNDS + 2, 0));
}

#[test]
fn cancel_both_cancels_both_orders() {
    let (h, own, other, taker, events) = scenario(SelfTradePrevention::CancelBoth);
    assert_eq!(
        cancelled(&events),
        vec![
            (own, CancelReason::SelfTrade),
            (taker, CancelReason::SelfTrade)
        ]
    );
    assert_eq!(fills(&events), vec![]);
    assert!(h.engine.open_order(other).is_some());
    assert_eq!(h.balance(ALICE, USD), (FUNDS, 0));
    assert_eq!(h.balance(ALICE, BASE), (FUNDS, 0));
}

#[test]
fn stp_applies_after_trading_with_others_first() {
    let mut h = Harness::new();
    let other = h.gtc(BOB, Side::Sell, 100, 1);
    h.gtc(ALICE, Side::Sell, 100, 1);
    let mut order = new_order(ALICE, Side::Buy, 100, 3, TimeInForce::Gtc);
    order.self_trade_prevention = SelfTradePrevention::CancelNewest;
    let (taker, events) = h.order(order);
    assert_eq!(fills(&events), vec![(other, 100, 1, 0), (taker, 100, 1, 2)]);
    assert_eq!(cancelled(&events), vec![(taker, CancelReason::SelfTrade)]);
}

#[test]
fn fok_counts_only_liquidity_it_may_trade_with() {
    let mut h = Harness::new();
    h.gtc(ALICE, Side::Sell, 100, 2);
    h.gtc(BOB, Side::Sell, 100, 2);
    // With CancelNewest, ALICE's own order stops the FOK before it could fill: kill it whole.
    let mut order = new_order(ALICE, Side::Buy, 100, 3, TimeInForce::Fok);
    order.self_trade_prevention = SelfTradePrevention::CancelNewest;
    let (_, events) = h.order(order);
    assert_eq!(fills(&events), vec![]);
    assert_eq!(h.depth(Side::Sell), vec![(100, 4)]);
    // With CancelOldest only BOB's 2 count: 3 cannot fill, 2 can.
    order.self_trade_prevention = SelfTradePrevention::CancelOldest;
    let (_, events) = h.order(order);
    assert_eq!(fills(&events), vec![]);
    order.qty = exchange_domain::Qty(2);
    let (_, events) = h.order(order);
    assert_eq!(fills(&events).len(), 2);
    assert_eq!(h.depth(Side::Sell), vec![]);
}
