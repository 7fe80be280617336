//! Every reject reason, each provoked by the smallest scenario that should produce it, and
//! each leaving the state as it was.

use exchange_domain::{
    AdminCommand, Amount, AssetId, Event, Name, OrderId, OrderType, Price, Qty, RejectReason,
    RiskLimits, Side, SymbolId, TimeInForce,
};

use super::*;
use crate::EngineConfig;

type Scenario = fn(&mut Harness) -> Vec<Event>;

fn limits(max_qty: i64, max_notional: i64, max_open: u32) -> AdminCommand {
    AdminCommand::SetRiskLimits {
        account: BOB,
        limits: RiskLimits {
            max_order_qty: Qty(max_qty),
            max_order_notional: Amount(max_notional),
            max_open_orders: max_open,
        },
    }
}

/// Adding a reason to the enum without a scenario here fails to compile.
fn scenario(reason: RejectReason) -> Scenario {
    match reason {
        RejectReason::UnknownSymbol => |h| {
            let mut order = new_order(BOB, Side::Buy, 100, 1, TimeInForce::Gtc);
            order.symbol = SymbolId(99);
            h.order(order).1
        },
        RejectReason::UnknownAccount => |h| {
            h.limit(AccountId(999), Side::Buy, 100, 1, TimeInForce::Gtc)
                .1
        },
        RejectReason::UnknownOrder => |h| h.cancel(BOB, OrderId(12_345)),
        RejectReason::InvalidPrice => |h| {
            assert_eq!(
                rejection(&h.limit(BOB, Side::Buy, 0, 1, TimeInForce::Gtc).1),
                Some(RejectReason::InvalidPrice)
            );
            h.limit(BOB, Side::Sell, -100, 1, TimeInForce::Gtc).1
        },
        RejectReason::PriceOffTick => |h| {
            let mut order = new_order(BOB, Side::Buy, 15, 100, TimeInForce::Gtc);
            order.symbol = GRID;
            h.order(order).1
        },
        RejectReason::InvalidQuantity => |h| {
            assert_eq!(
                rejection(&h.limit(BOB, Side::Buy, 100, 0, TimeInForce::Gtc).1),
                Some(RejectReason::InvalidQuantity)
            );
            h.limit(BOB, Side::Buy, 100, -5, TimeInForce::Gtc).1
        },
        RejectReason::QtyOffLot => |h| {
            let mut order = new_order(BOB, Side::Buy, 10, 150, TimeInForce::Gtc);
            order.symbol = GRID;
            h.order(order).1
        },
        RejectReason::InvalidTimeInForce => |h| {
            let mut order = new_order(BOB, Side::Buy, 100, 1, TimeInForce::Gtc);
            order.order_type = OrderType::Market;
            h.order(order).1
        },
        RejectReason::SymbolHalted => |h| {
            h.admin(AdminCommand::HaltSymbol { symbol: SYM });
            h.limit(BOB, Side::Buy, 100, 1, TimeInForce::Gtc).1
        },
        RejectReason::MaxOrderQtyExceeded => |h| {
            h.admin(limits(10, 1_000_000, 10));
            assert_eq!(
                rejection(&h.limit(BOB, Side::Buy, 1, 10, TimeInForce::Gtc).1),
                None
            );
            h.limit(BOB, Side::Buy, 1, 11, TimeInForce::Gtc).1
        },
        RejectReason::MaxNotionalExceeded => |h| {
            h.admin(limits(1_000, 1_000, 10));
            assert_eq!(
                rejection(&h.limit(BOB, Side::Buy, 100, 10, TimeInForce::Gtc).1),
                None
            );
            // A notional that does not even fit in 64 bits is refused the same way.
            assert_eq!(
                rejection(
                    &h.limit(ALICE, Side::Sell, i64::MAX / 2, 3, TimeInForce::Gtc)
                        .1
                ),
                Some(RejectReason::MaxNotionalExceeded)
            );
            h.limit(BOB, Side::Buy, 101, 10, TimeInForce::Gtc).1
        },
        RejectReason::PriceOutsideBand => |h| {
            h.admin(AdminCommand::SetPriceBand {
                symbol: SYM,
                price_band_bps: 500,
                reference_price: Price(1_000),
            });
            assert_eq!(
                rejection(&h.limit(BOB, Side::Buy, 950, 1, TimeInForce::Gtc).1),
                None
            );
            assert_eq!(
                rejection(&h.limit(BOB, Side::Sell, 1_050, 1, TimeInForce::Gtc).1),
                None
            );
            h.limit(BOB, Side::Buy, 949, 1, TimeInForce::Gtc).1
        },
        RejectReason::MaxOpenOrdersExceeded => |h| {
            h.admin(limits(1_000, 1_000_000, 2));
            h.gtc(BOB, Side::Buy, 10, 1);
            h.gtc(BOB, Side::Buy, 11, 1);
            // An IOC never rests, so the limit does not apply to it.
            assert_eq!(
                rejection(&h.limit(BOB, Side::Buy, 12, 1, TimeInForce::Ioc).1),
                None
            );
            h.limit(BOB, Side::Buy, 12, 1, TimeInForce::Gtc).1
        },
        RejectReason::NotOrderOwner => |h| {
            let id = h.gtc(ALICE, Side::Buy, 10, 1);
            assert_eq!(
                rejection(&h.replace(BOB, id, 10, 1)),
                Some(RejectReason::NotOrderOwner)
            );
            h.cancel(BOB, id)
        },
        RejectReason::OrderCapacityExceeded => |h| {
            *h = Harness::empty(EngineConfig {
                orders_open_max: 2,
                ..EngineConfig::default()
            });
            h.admin(AdminCommand::AddSymbol(spec(SYM, 1, 1)));
            h.funded_account(BOB, FUNDS, FUNDS);
            h.gtc(BOB, Side::Buy, 10, 1);
            h.gtc(BOB, Side::Buy, 11, 1);
            h.limit(BOB, Side::Buy, 12, 1, TimeInForce::Gtc).1
        },
        RejectReason::InsufficientFunds => |h| {
            assert_eq!(
                rejection(&h.admin(AdminCommand::Withdraw {
                    account: BOB,
                    asset: USD,
                    amount: Amount(FUNDS + 1)
                })),
                Some(RejectReason::InsufficientFunds)
            );
            h.gtc(BOB, Side::Buy, 1, FUNDS / 2);
            h.limit(BOB, Side::Buy, 1, FUNDS / 2 + 1, TimeInForce::Gtc)
                .1
        },
        RejectReason::PostOnlyWouldTrade => |h| {
            h.gtc(ALICE, Side::Buy, 100, 1);
            h.limit(BOB, Side::Sell, 100, 1, TimeInForce::PostOnly).1
        },
        RejectReason::AccountExists => |h| {
            h.admin(AdminCommand::CreateAccount {
                account: BOB,
                owner: BROKER_B,
            })
        },
        RejectReason::SymbolExists => |h| h.admin(AdminCommand::AddSymbol(spec(SYM, 1, 1))),
        RejectReason::InvalidAmount => |h| {
            assert_eq!(
                rejection(&h.admin(AdminCommand::Withdraw {
                    account: BOB,
                    asset: USD,
                    amount: Amount(-1)
                })),
                Some(RejectReason::InvalidAmount)
            );
            h.admin(AdminCommand::Deposit {
                account: BOB,
                asset: USD,
                amount: Amount(0),
            })
        },
        RejectReason::BalanceOverflow => |h| {
            h.admin(AdminCommand::Deposit {
                account: BOB,
                asset: USD,
                amount: Amount(i64::MAX),
            })
        },
        RejectReason::InvalidSymbolSpec => |h| {
            assert_eq!(
                rejection(&h.admin(AdminCommand::AddSymbol(spec(SymbolId(7), 1, 0)))),
                Some(RejectReason::InvalidSymbolSpec)
            );
            let mut same_assets = spec(SymbolId(8), 1, 1);
            same_assets.quote = same_assets.base;
            assert_eq!(
                rejection(&h.admin(AdminCommand::AddSymbol(same_assets))),
                Some(RejectReason::InvalidSymbolSpec)
            );
            let mut unnamed = spec(SymbolId(10), 1, 1);
            unnamed.name = Name([0; 15]);
            assert_eq!(
                rejection(&h.admin(AdminCommand::AddSymbol(unnamed))),
                Some(RejectReason::InvalidSymbolSpec)
            );
            // Named assets fix the price decimals: USD 2, the base 0, so prices have 2.
            for (asset, name, decimals) in [(USD, "USD", 2), (BASE, "BASEX", 0)] {
                h.admin(AdminCommand::AddAsset {
                    asset,
                    name: Name::new(name).unwrap(),
                    decimals,
                });
            }
            let mut misread = spec(SymbolId(11), 1, 1);
            misread.price_decimals = 4;
            assert_eq!(
                rejection(&h.admin(AdminCommand::AddSymbol(misread))),
                Some(RejectReason::InvalidSymbolSpec)
            );
            misread.price_decimals = 2;
            assert_eq!(rejection(&h.admin(AdminCommand::AddSymbol(misread))), None);
            h.admin(AdminCommand::AddSymbol(spec(SymbolId(9), 0, 1)))
        },
        RejectReason::InvalidRiskLimits => |h| h.admin(limits(0, 1, 1)),
        RejectReason::TooManyAssets => |h| {
            for asset in 10..(10 + crate::ASSETS_PER_ACCOUNT_MAX as u32 - 2) {
                let events = h.admin(AdminCommand::Deposit {
                    account: BOB,
                    asset: AssetId(asset),
                    amount: Amount(1),
                });
                assert_eq!(rejection(&events), None);
            }
            h.admin(AdminCommand::Deposit {
                account: BOB,
                asset: AssetId(5),
                amount: Amount(1),
            })
        },
        RejectReason::TooManyAccounts => |h| {
            *h = Harness::empty(EngineConfig {
                accounts_max: 1,
                ..EngineConfig::default()
            });
            h.admin(AdminCommand::CreateAccount {
                account: ALICE,
                owner: BROKER_A,
            });
            h.admin(AdminCommand::CreateAccount {
                account: BOB,
                owner: BROKER_B,
            })
        },
        RejectReason::InvalidClientOrderId => |h| {
            h.register_broker(BROKER_B);
            let order = new_order(BOB, Side::Buy, 10, 1, TimeInForce::Gtc);
            h.run_as(BROKER_B, Command::NewOrder(order))
        },
        RejectReason::StaleClientOrderId => |h| {
            h.register_broker(BROKER_B);
            let window = crate::CLIENT_ORDER_ID_WINDOW as u64;
            h.broker_order(BROKER_B, BOB, window + 5, Side::Buy, 10);
            h.broker_order(BROKER_B, BOB, 5, Side::Buy, 10)
        },
        RejectReason::NotPermitted => |h| {
            h.register_broker(BROKER_A);
            h.broker_order(BROKER_A, BOB, 1, Side::Buy, 10)
        },
        RejectReason::TooManyBrokers => |h| {
            for broker in 1..=crate::BROKERS_MAX as u32 {
                h.register_broker(BrokerId(broker));
            }
            h.admin(AdminCommand::SetBrokerKey {
                broker: BrokerId(crate::BROKERS_MAX as u32 + 1),
                key_digest: exchange_domain::KeyDigest([1; 32]),
            })
        },
        RejectReason::TooManySymbols => |h| {
            *h = Harness::empty(EngineConfig {
                symbols_max: 1,
                ..EngineConfig::default()
            });
            h.admin(AdminCommand::AddSymbol(spec(SYM, 1, 1)));
            h.admin(AdminCommand::AddSymbol(spec(GRID, 1, 1)))
        },
        RejectReason::AssetExists => |h| {
            let usd = |name| AdminCommand::AddAsset {
                asset: USD,
                name: Name::new(name).unwrap(),
                decimals: 2,
            };
            assert_eq!(rejection(&h.admin(usd("USD"))), None);
            h.admin(usd("DOLLAR"))
        },
        RejectReason::NameTaken => |h| {
            // A symbol's name is unique among symbols, an asset's among assets; an asset may
            // share its symbol's name (AAPL trades AAPL).
            let taken = spec(SYM, 1, 1).name;
            let asset = |asset| AdminCommand::AddAsset {
                asset,
                name: taken,
                decimals: 0,
            };
            assert_eq!(rejection(&h.admin(asset(BASE))), None);
            assert_eq!(
                rejection(&h.admin(asset(AssetId(99)))),
                Some(RejectReason::NameTaken)
            );
            let mut again = spec(SymbolId(77), 1, 1);
            again.name = taken;
            h.admin(AdminCommand::AddSymbol(again))
        },
        RejectReason::InvalidAssetSpec => |h| {
            assert_eq!(
                rejection(&h.admin(AdminCommand::AddAsset {
                    asset: USD,
                    name: Name::new("USD").unwrap(),
                    decimals: 19,
                })),
                Some(RejectReason::InvalidAssetSpec)
            );
            h.admin(AdminCommand::AddAsset {
                asset: USD,
                name: Name([b'9'; 15]),
                decimals: 2,
            })
        },
        RejectReason::KeyInUse => |h| {
            let key = |broker, byte| AdminCommand::SetBrokerKey {
                broker: BrokerId(broker),
                key_digest: exchange_domain::KeyDigest([byte; 32]),
            };
            assert_eq!(rejection(&h.admin(key(1, 7))), None);
            // The same broker may be given its own key again; any number may be revoked.
            assert_eq!(rejection(&h.admin(key(1, 7))), None);
            assert_eq!(rejection(&h.admin(key(2, 0))), None);
            assert_eq!(rejection(&h.admin(key(3, 0))), None);
            h.admin(key(2, 7))
        },
        RejectReason::InvalidCompId => |h| {
            h.register_broker(BROKER_A);
            h.register_broker(BROKER_B);
            let comp_id = |broker| AdminCommand::SetFixCompId {
                broker,
                comp_id: exchange_domain::CompId::new("FIRM").unwrap(),
            };
            assert_eq!(rejection(&h.admin(comp_id(BROKER_A))), None);
            h.admin(comp_id(BROKER_B))
        },
    }
}

const ALL_REASONS: [RejectReason; exchange_domain::REJECT_REASONS] = RejectReason::ALL;

#[test]
fn every_reject_reason_is_produced_by_its_scenario_and_changes_nothing() {
    for reason in ALL_REASONS {
        let mut h = Harness::new();
        let events = scenario(reason)(&mut h);
        assert_eq!(
            rejection(&events),
            Some(reason),
            "scenario for {reason:?} gave {events:?}"
        );
        // A reject emits exactly one event and no order comes to exist.
        assert_eq!(events.len(), 1, "{reason:?}: {events:?}");
    }
}

#[test]
fn reject_codes_are_unique_and_grouped_by_stage() {
    let codes: std::collections::BTreeSet<u16> = ALL_REASONS.iter().map(|r| r.code()).collect();
    assert_eq!(codes.len(), ALL_REASONS.len());
    assert!(codes.iter().all(|c| (100..600).contains(c)));
}

#[test]
fn a_rejected_order_holds_nothing() {
    let mut h = Harness::new();
    h.admin(limits(10, 1_000_000, 10));
    let before = h.balance(BOB, USD);
    h.limit(BOB, Side::Buy, 100, 11, TimeInForce::Gtc);
    h.limit(BOB, Side::Buy, 100, FUNDS, TimeInForce::Gtc);
    assert_eq!(h.balance(BOB, USD), before);
    assert_eq!(h.engine.open_order_count(), 0);
}
