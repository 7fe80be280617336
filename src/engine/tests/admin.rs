//! Administrative commands and the events they produce.

use exchange_domain::{AdminCommand, Amount, Event, RejectReason, Side, TimeInForce};

use super::*;

#[test]
fn deposits_and_withdrawals_change_available_funds_and_the_asset_total() {
    let mut h = Harness::new();
    let events = h.admin(AdminCommand::Deposit {
        account: BOB,
        asset: USD,
        amount: Amount(50),
    });
    assert!(matches!(
        events[..],
        [Event::BalanceChanged { delta: Amount(50), available, held: Amount(0), .. }] if available.0 == FUNDS + 50
    ));
    h.gtc(BOB, Side::Buy, 10, 5);
    let events = h.admin(AdminCommand::Withdraw {
        account: BOB,
        asset: USD,
        amount: Amount(FUNDS),
    });
    assert!(matches!(
        events[..],
        [Event::BalanceChanged { delta, available, held, .. }] if delta.0 == -FUNDS && available.0 == 0 && held.0 == 50
    ));
    // Held funds cannot be withdrawn.
    let events = h.admin(AdminCommand::Withdraw {
        account: BOB,
        asset: USD,
        amount: Amount(1),
    });
    assert_eq!(rejection(&events), Some(RejectReason::InsufficientFunds));
    assert_eq!(h.engine.asset_total(USD), 3 * FUNDS + 50 - FUNDS);
}

#[test]
fn a_halted_symbol_refuses_orders_until_resumed() {
    let mut h = Harness::new();
    let resting = h.gtc(ALICE, Side::Sell, 100, 1);
    let events = h.admin(AdminCommand::HaltSymbol { symbol: SYM });
    assert!(matches!(
        events[..],
        [Event::TradingStatus { halted: true, .. }]
    ));
    let (_, events) = h.limit(BOB, Side::Buy, 100, 1, TimeInForce::Gtc);
    assert_eq!(rejection(&events), Some(RejectReason::SymbolHalted));
    assert!(
        h.engine.open_order(resting).is_some(),
        "a halt cancels nothing"
    );
    let events = h.admin(AdminCommand::ResumeSymbol { symbol: SYM });
    assert!(matches!(
        events[..],
        [Event::TradingStatus { halted: false, .. }]
    ));
    let (_, events) = h.limit(BOB, Side::Buy, 100, 1, TimeInForce::Gtc);
    assert_eq!(fills(&events).len(), 2);
}

#[test]
fn an_account_without_a_balance_in_the_asset_cannot_buy_with_it() {
    let mut h = Harness::new();
    h.admin(AdminCommand::CreateAccount {
        account: AccountId(7),
        owner: BROKER_B,
    });
    let (_, events) = h.limit(AccountId(7), Side::Buy, 1, 1, TimeInForce::Gtc);
    assert_eq!(rejection(&events), Some(RejectReason::InsufficientFunds));
    let (_, events) = h.limit(AccountId(7), Side::Sell, 1, 1, TimeInForce::Gtc);
    assert_eq!(rejection(&events), Some(RejectReason::InsufficientFunds));
}

#[test]
fn unknown_targets_of_admin_commands_are_rejected() {
    let mut h = Harness::new();
    let nobody = AccountId(4_242);
    for command in [
        AdminCommand::Deposit {
            account: nobody,
            asset: USD,
            amount: Amount(1),
        },
        AdminCommand::Withdraw {
            account: nobody,
            asset: USD,
            amount: Amount(1),
        },
    ] {
        assert_eq!(
            rejection(&h.admin(command)),
            Some(RejectReason::UnknownAccount)
        );
    }
    let events = h.admin(AdminCommand::HaltSymbol {
        symbol: SymbolId(77),
    });
    assert_eq!(rejection(&events), Some(RejectReason::UnknownSymbol));
    let events = h.mass_cancel(nobody, None);
    assert_eq!(rejection(&events), Some(RejectReason::UnknownAccount));
    let events = h.mass_cancel(BOB, Some(SymbolId(77)));
    assert_eq!(rejection(&events), Some(RejectReason::UnknownSymbol));
}

#[test]
#[should_panic(expected = "does not follow")]
fn a_sequence_number_that_does_not_rise_stops_the_engine() {
    let mut engine = crate::Engine::new(crate::EngineConfig::default());
    let input = exchange_domain::Input {
        seq: 5,
        timestamp_ns: 0,
        broker: exchange_domain::BrokerId::OPERATOR,
        command: exchange_domain::Command::Admin(AdminCommand::CreateAccount {
            account: BOB,
            owner: BROKER_B,
        }),
    };
    engine.process(&input, &mut crate::DiscardSink);
    engine.process(&input, &mut crate::DiscardSink);
}
