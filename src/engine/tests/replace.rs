//! Cancel-replace: which changes keep time priority, and the funds each change moves.

use exchange_domain::{Event, Price, RejectReason, Side, TimeInForce};

use super::*;

fn replaced(events: &[Event]) -> Option<bool> {
    events.iter().find_map(|e| match e {
        Event::Replaced { priority_kept, .. } => Some(*priority_kept),
        _ => None,
    })
}

#[test]
fn reducing_quantity_keeps_priority_and_releases_funds() {
    let mut h = Harness::new();
    let first = h.gtc(BOB, Side::Buy, 100, 10);
    let second = h.gtc(CAROL, Side::Buy, 100, 10);
    let events = h.replace(BOB, first, 100, 4);
    assert_eq!(replaced(&events), Some(true));
    assert_eq!(
        h.engine.queue(SYM, Side::Buy, Price(100)),
        vec![first, second]
    );
    assert_eq!(h.depth(Side::Buy), vec![(100, 14)]);
    assert_eq!(h.balance(BOB, USD), (FUNDS - 400, 400));
    // The next seller meets the reduced order first.
    let (_, events) = h.limit(ALICE, Side::Sell, 100, 5, TimeInForce::Ioc);
    assert_eq!(fills(&events)[0], (first, 100, 4, 0));
    assert_eq!(fills(&events)[2], (second, 100, 1, 9));
}

#[test]
fn increasing_quantity_loses_priority() {
    let mut h = Harness::new();
    let first = h.gtc(BOB, Side::Sell, 100, 10);
    let second = h.gtc(CAROL, Side::Sell, 100, 10);
    let events = h.replace(BOB, first, 100, 11);
    assert_eq!(replaced(&events), Some(false));
    assert_eq!(
        h.engine.queue(SYM, Side::Sell, Price(100)),
        vec![second, first]
    );
    assert_eq!(h.balance(BOB, BASE), (FUNDS - 11, 11));
}

#[test]
fn a_new_price_loses_priority_even_when_moving_back() {
    let mut h = Harness::new();
    let first = h.gtc(BOB, Side::Buy, 100, 10);
    let second = h.gtc(CAROL, Side::Buy, 100, 10);
    assert_eq!(replaced(&h.replace(BOB, first, 99, 10)), Some(false));
    assert_eq!(h.depth(Side::Buy), vec![(100, 10), (99, 10)]);
    assert_eq!(h.balance(BOB, USD), (FUNDS - 990, 990));
    assert_eq!(replaced(&h.replace(BOB, first, 100, 10)), Some(false));
    assert_eq!(
        h.engine.queue(SYM, Side::Buy, Price(100)),
        vec![second, first]
    );
    assert_eq!(h.balance(BOB, USD), (FUNDS - 1_000, 1_000));
}

#[test]
fn a_replace_to_a_crossing_price_trades_like_a_new_order() {
    let mut h = Harness::new();
    let ask = h.gtc(ALICE, Side::Sell, 105, 3);
    let bid = h.gtc(BOB, Side::Buy, 100, 5);
    let events = h.replace(BOB, bid, 106, 5);
    assert_eq!(replaced(&events), Some(false));
    assert_eq!(fills(&events), vec![(ask, 105, 3, 0), (bid, 105, 3, 2)]);
    assert_eq!(h.depth(Side::Buy), vec![(106, 2)]);
    assert_eq!(h.depth(Side::Sell), vec![]);
    // Paid 315 for 3, holds 212 for the 2 left at 106.
    assert_eq!(h.balance(BOB, USD), (FUNDS - 315 - 212, 212));
}

#[test]
fn a_replace_that_fills_completely_closes_the_order() {
    let mut h = Harness::new();
    h.gtc(ALICE, Side::Sell, 105, 5);
    let bid = h.gtc(BOB, Side::Buy, 100, 5);
    h.replace(BOB, bid, 105, 5);
    assert_eq!(h.engine.open_order(bid), None);
    assert_eq!(
        rejection(&h.cancel(BOB, bid)),
        Some(RejectReason::UnknownOrder)
    );
}

#[test]
fn a_replace_without_funds_is_rejected_and_changes_nothing() {
    let mut h = Harness::new();
    let bid = h.gtc(BOB, Side::Buy, 1, FUNDS);
    let events = h.replace(BOB, bid, 2, FUNDS);
    assert_eq!(rejection(&events), Some(RejectReason::InsufficientFunds));
    let order = h.engine.open_order(bid).expect("still open");
    assert_eq!((order.price, order.leaves.0), (Price(1), FUNDS));
    assert_eq!(h.balance(BOB, USD), (0, FUNDS));
}

#[test]
fn a_post_only_order_cannot_be_replaced_into_a_trade() {
    let mut h = Harness::new();
    h.gtc(ALICE, Side::Sell, 105, 3);
    let (bid, _) = h.limit(BOB, Side::Buy, 100, 3, TimeInForce::PostOnly);
    assert_eq!(
        rejection(&h.replace(BOB, bid, 105, 3)),
        Some(RejectReason::PostOnlyWouldTrade)
    );
    assert_eq!(replaced(&h.replace(BOB, bid, 104, 3)), Some(false));
}

#[test]
fn replace_checks_the_new_values_like_a_new_order() {
    let mut h = Harness::new();
    let bid = h.gtc(BOB, Side::Buy, 100, 3);
    assert_eq!(
        rejection(&h.replace(BOB, bid, 0, 3)),
        Some(RejectReason::InvalidPrice)
    );
    assert_eq!(
        rejection(&h.replace(BOB, bid, 100, 0)),
        Some(RejectReason::InvalidQuantity)
    );
    assert_eq!(
        rejection(&h.replace(BOB, exchange_domain::OrderId(999), 100, 1)),
        Some(RejectReason::UnknownOrder)
    );
    h.admin(exchange_domain::AdminCommand::HaltSymbol { symbol: SYM });
    assert_eq!(
        rejection(&h.replace(BOB, bid, 101, 3)),
        Some(RejectReason::SymbolHalted)
    );
    // Cancelling stays possible while the symbol is halted.
    assert!(matches!(h.cancel(BOB, bid)[..], [Event::Cancelled { .. }]));
}
