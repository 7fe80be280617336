//! Brokers: ownership of accounts, the operator's rights, and exactly-once new orders.

use exchange_domain::{
    AdminCommand, Cancel, Command, Event, KeyDigest, MassCancel, OrderId, RejectReason, Side,
};
use proptest::prelude::*;

use super::*;
use crate::{Engine, Snapshot, CLIENT_ORDER_ID_WINDOW};

fn brokers() -> Harness {
    let mut h = Harness::new();
    h.register_broker(BROKER_A);
    h.register_broker(BROKER_B);
    h
}

fn accepted_id(events: &[Event]) -> Option<OrderId> {
    events.iter().find_map(|e| match *e {
        Event::Accepted { order_id, .. } => Some(order_id),
        _ => None,
    })
}

#[test]
fn a_broker_acts_only_for_its_own_accounts() {
    let mut h = brokers();
    let alice_order = accepted_id(&h.broker_order(BROKER_A, ALICE, 1, Side::Buy, 10))
        .expect("alice's broker may trade alice");
    let events = h.broker_order(BROKER_A, BOB, 2, Side::Buy, 10);
    assert_eq!(rejection(&events), Some(RejectReason::NotPermitted));
    // Nor may it cancel, replace or mass-cancel for another broker's account.
    let bob_order = accepted_id(&h.broker_order(BROKER_B, BOB, 1, Side::Sell, 50)).unwrap();
    let cancel = Command::Cancel(Cancel {
        account: BOB,
        order_id: bob_order,
    });
    assert_eq!(
        rejection(&h.run_as(BROKER_A, cancel)),
        Some(RejectReason::NotPermitted)
    );
    let mass = Command::MassCancel(MassCancel {
        account: BOB,
        symbol: None,
    });
    assert_eq!(
        rejection(&h.run_as(BROKER_A, mass)),
        Some(RejectReason::NotPermitted)
    );
    // A broker naming its own account but another's order is refused by the order check.
    let cancel = Command::Cancel(Cancel {
        account: ALICE,
        order_id: bob_order,
    });
    assert_eq!(
        rejection(&h.run_as(BROKER_A, cancel)),
        Some(RejectReason::NotOrderOwner)
    );
    assert!(h.engine.open_order(alice_order).is_some());
    assert!(h.engine.open_order(bob_order).is_some());
}

#[test]
fn only_the_operator_administers_and_unregistered_brokers_trade_nothing() {
    let mut h = brokers();
    let deposit = Command::Admin(AdminCommand::Deposit {
        account: ALICE,
        asset: USD,
        amount: exchange_domain::Amount(1),
    });
    assert_eq!(
        rejection(&h.run_as(BROKER_A, deposit)),
        Some(RejectReason::NotPermitted)
    );
    let stranger = BrokerId(99);
    assert_eq!(
        rejection(&h.broker_order(stranger, ALICE, 1, Side::Buy, 10)),
        Some(RejectReason::NotPermitted)
    );
    // The operator's key is not replicated state.
    let events = h.admin(AdminCommand::SetBrokerKey {
        broker: BrokerId::OPERATOR,
        key_digest: KeyDigest([7; 32]),
    });
    assert_eq!(rejection(&events), Some(RejectReason::NotPermitted));
    // The operator may act for any account.
    assert!(accepted_id(&h.limit(ALICE, Side::Buy, 10, 1, TimeInForce::Gtc).1).is_some());
}

#[test]
fn a_resent_order_is_executed_once_and_answered_with_its_original_outcome() {
    let mut h = brokers();
    h.gtc(CAROL, Side::Sell, 100, 5);
    let first = h.broker_order(BROKER_A, ALICE, 42, Side::Buy, 100);
    let original = accepted_id(&first).expect("accepted");
    assert_eq!(fills(&first).len(), 2, "it traded: {first:?}");
    let (available, held) = h.engine.balance(ALICE, BASE).unwrap();
    let resent = h.broker_order(BROKER_A, ALICE, 42, Side::Buy, 100);
    assert_eq!(
        resent,
        vec![Event::DuplicateOrder {
            account: ALICE,
            client_order_id: ClientOrderId(42),
            order_id: original,
            rejected: None,
        }]
    );
    assert_eq!(h.engine.balance(ALICE, BASE), Some((available, held)));
    assert_eq!(h.engine.trade_count(), 1);
    // A rejected order's resend is answered with the original reason, not re-checked.
    let mut unknown_symbol = new_order(ALICE, Side::Buy, 100, 1, TimeInForce::Gtc);
    unknown_symbol.symbol = exchange_domain::SymbolId(77);
    unknown_symbol.client_order_id = ClientOrderId(43);
    let refused = h.run_as(BROKER_A, Command::NewOrder(unknown_symbol));
    assert_eq!(rejection(&refused), Some(RejectReason::UnknownSymbol));
    let resent = h.run_as(BROKER_A, Command::NewOrder(unknown_symbol));
    assert!(matches!(
        resent[..],
        [Event::DuplicateOrder {
            rejected: Some(RejectReason::UnknownSymbol),
            ..
        }]
    ));
    // A refusal for permission is checked before the window and not remembered, so an id
    // used on another broker's account tells nothing about the orders behind it.
    for _ in 0..2 {
        let refused = h.broker_order(BROKER_A, BOB, 42, Side::Buy, 100);
        assert_eq!(refused.len(), 1);
        assert_eq!(rejection(&refused), Some(RejectReason::NotPermitted));
    }
    // Client order ids are per broker: another broker may use 42.
    assert!(accepted_id(&h.broker_order(BROKER_B, BOB, 42, Side::Buy, 1)).is_some());
}

#[test]
fn the_window_survives_a_snapshot() {
    let mut h = brokers();
    let original = accepted_id(&h.broker_order(BROKER_A, ALICE, 7, Side::Buy, 10)).unwrap();
    let bytes = h.engine.snapshot().to_bytes();
    let restored = Engine::restore(&Snapshot::from_bytes(&bytes).unwrap()).unwrap();
    assert_eq!(
        restored.brokers().collect::<Vec<_>>(),
        h.engine.brokers().collect::<Vec<_>>()
    );
    assert_eq!(restored.account_owner(ALICE), Some(BROKER_A));
    h.engine = restored;
    let resent = h.broker_order(BROKER_A, ALICE, 7, Side::Buy, 10);
    assert!(matches!(
        resent[..],
        [Event::DuplicateOrder { order_id, rejected: None, .. }] if order_id == original
    ));
}

#[test]
fn a_snapshot_with_an_impossible_window_is_refused() {
    let mut h = brokers();
    h.broker_order(BROKER_A, ALICE, 7, Side::Buy, 10);
    let mut snapshot = h.engine.snapshot();
    snapshot.brokers[0].high_water = 9;
    assert!(
        Engine::restore(&snapshot).is_err(),
        "the highest id is not remembered"
    );
    let mut snapshot = h.engine.snapshot();
    snapshot.brokers[0].remembered[0].order_id = h.engine.last_seq() + 1;
    assert!(
        Engine::restore(&snapshot).is_err(),
        "an order from the future"
    );
}

#[test]
fn a_key_can_be_replaced_and_revoked() {
    let mut h = brokers();
    let events = h.admin(AdminCommand::SetBrokerKey {
        broker: BROKER_A,
        key_digest: KeyDigest([0; 32]),
    });
    assert!(matches!(events[..], [Event::BrokerKeySet { .. }]));
    assert!(h
        .engine
        .brokers()
        .any(|(id, digest)| id == BROKER_A && digest == KeyDigest([0; 32])));
    assert_eq!(h.engine.brokers().count(), 2);
    // A revoked broker may do nothing, also in a session that logged on before.
    let refused = h.broker_order(BROKER_A, ALICE, 1, Side::Buy, 10);
    assert_eq!(rejection(&refused), Some(RejectReason::NotPermitted));
    // A new key lets it back in.
    h.register_broker(BROKER_A);
    let accepted = h.broker_order(BROKER_A, ALICE, 2, Side::Buy, 10);
    assert!(
        matches!(accepted[0], Event::Accepted { .. }),
        "{accepted:?}"
    );
}

#[test]
fn a_fix_comp_id_names_one_registered_broker_and_survives_a_snapshot() {
    let mut h = brokers();
    let comp_id = |text| exchange_domain::CompId::new(text).unwrap();
    let set = |h: &mut Harness, broker, text| {
        h.admin(AdminCommand::SetFixCompId {
            broker,
            comp_id: comp_id(text),
        })
    };
    // Only a registered broker has one.
    assert_eq!(
        rejection(&set(&mut h, BrokerId(99), "NOBODY")),
        Some(RejectReason::InvalidCompId)
    );
    assert!(matches!(
        set(&mut h, BROKER_A, "FIRM-A")[..],
        [Event::FixCompIdSet { broker, .. }] if broker == BROKER_A
    ));
    // Another broker's is refused; once given up, it may be taken.
    assert_eq!(
        rejection(&set(&mut h, BROKER_B, "FIRM-A")),
        Some(RejectReason::InvalidCompId)
    );
    set(&mut h, BROKER_A, "FIRM-A2");
    assert!(matches!(
        set(&mut h, BROKER_B, "FIRM-A")[..],
        [Event::FixCompIdSet { .. }]
    ));
    // Bytes no CompId::new makes (a damaged or forged command) are refused.
    let mut forged = comp_id("X");
    forged.0[5] = b'Y';
    assert_eq!(
        rejection(&h.admin(AdminCommand::SetFixCompId {
            broker: BROKER_A,
            comp_id: forged,
        })),
        Some(RejectReason::InvalidCompId)
    );
    let mut ids = h.engine.fix_comp_ids().collect::<Vec<_>>();
    ids.sort();
    assert_eq!(
        ids,
        vec![
            (BROKER_A, comp_id("FIRM-A2")),
            (BROKER_B, comp_id("FIRM-A"))
        ]
    );
    let restored = Engine::restore(&h.engine.snapshot()).expect("restore");
    let mut again = restored.fix_comp_ids().collect::<Vec<_>>();
    again.sort();
    assert_eq!(again, ids);
    // A snapshot in which two brokers share one is refused.
    let mut snapshot = h.engine.snapshot();
    for broker in &mut snapshot.brokers {
        broker.fix_comp_id = Some(comp_id("SAME"));
    }
    assert!(Engine::restore(&snapshot).is_err());
}

#[test]
fn a_fix_session_mark_is_replaced_kept_in_a_snapshot_and_dropped_with_its_comp_id() {
    use exchange_domain::{CompId, FixSessionMark};
    let mut h = brokers();
    let comp_id = |text| CompId::new(text).unwrap();
    let mark = |next_in, next_out, reports_received| FixSessionMark {
        next_in,
        next_out,
        reports_received,
    };
    let set_mark = |h: &mut Harness, text, m| {
        h.admin(AdminCommand::MarkFixSession {
            comp_id: comp_id(text),
            mark: m,
        })
    };
    h.admin(AdminCommand::SetFixCompId {
        broker: BROKER_A,
        comp_id: comp_id("FIRM-A"),
    });
    assert!(matches!(
        set_mark(&mut h, "FIRM-A", mark(5, 10_001, 40))[..],
        [Event::FixSessionMarked { mark: m, .. }] if m == mark(5, 10_001, 40)
    ));
    // A later mark replaces the earlier one whole (a reset moves numbers down).
    set_mark(&mut h, "FIRM-A", mark(1, 10_001, 41));
    // A drop copy's CompID is no broker's, and is marked all the same.
    set_mark(&mut h, "DROP", mark(2, 3, 4));
    assert_eq!(
        h.engine.fix_session(&comp_id("FIRM-A")),
        Some(mark(1, 10_001, 41))
    );
    let restored = Engine::restore(&h.engine.snapshot()).expect("restore");
    assert_eq!(
        restored.fix_sessions().collect::<Vec<_>>(),
        h.engine.fix_sessions().collect::<Vec<_>>()
    );
    // Numbers start at 1.
    assert_eq!(
        rejection(&set_mark(&mut h, "FIRM-A", mark(0, 9, 9))),
        Some(RejectReason::InvalidCompId)
    );
    // Bytes no CompId::new makes are refused.
    let mut forged = comp_id("X");
    forged.0[5] = b'Y';
    assert_eq!(
        rejection(&h.admin(AdminCommand::MarkFixSession {
            comp_id: forged,
            mark: mark(1, 1, 1),
        })),
        Some(RejectReason::InvalidCompId)
    );
    // Setting the same CompID again keeps the session; giving the broker another starts both
    // the old and the new CompID afresh.
    h.admin(AdminCommand::SetFixCompId {
        broker: BROKER_A,
        comp_id: comp_id("FIRM-A"),
    });
    assert!(h.engine.fix_session(&comp_id("FIRM-A")).is_some());
    set_mark(&mut h, "FIRM-A2", mark(7, 7, 7));
    h.admin(AdminCommand::SetFixCompId {
        broker: BROKER_A,
        comp_id: comp_id("FIRM-A2"),
    });
    assert_eq!(h.engine.fix_session(&comp_id("FIRM-A")), None);
    assert_eq!(h.engine.fix_session(&comp_id("FIRM-A2")), None);
    assert_eq!(h.engine.fix_session(&comp_id("DROP")), Some(mark(2, 3, 4)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever order a broker sends client order ids in, each id it ever sent is entered at
    /// most once, and every id sent more than once is answered as a duplicate or as stale.
    #[test]
    fn no_client_order_id_is_ever_entered_twice(
        ids in proptest::collection::vec(1u64..(3 * CLIENT_ORDER_ID_WINDOW as u64), 1..400),
    ) {
        let mut h = brokers();
        let mut entered = std::collections::BTreeSet::new();
        for id in ids {
            let events = h.broker_order(BROKER_A, ALICE, id, Side::Buy, 1);
            match events[..] {
                [Event::Accepted { .. }, ..] | [Event::Rejected { .. }] => {
                    let reason = rejection(&events);
                    if reason != Some(RejectReason::StaleClientOrderId) {
                        prop_assert!(entered.insert(id), "id {} entered twice", id);
                    }
                }
                [Event::DuplicateOrder { client_order_id, .. }] => {
                    prop_assert_eq!(client_order_id, ClientOrderId(id));
                    prop_assert!(entered.contains(&id));
                }
                _ => prop_assert!(false, "unexpected {:?}", events),
            }
        }
    }
}

#[test]
fn the_key_salt_is_set_once_and_only_before_any_broker() {
    use exchange_domain::KeySalt;
    let refused = |events: &[Event]| {
        events
            .iter()
            .any(|e| e.reject_reason() == Some(RejectReason::NotPermitted))
    };
    let mut h = Harness::new();
    let events = h.admin(AdminCommand::SetKeySalt {
        salt: KeySalt([1; 16]),
    });
    assert!(matches!(events[..], [Event::KeySaltSet { salt }] if salt == KeySalt([1; 16])));
    // A second salt would break every digest made with the first.
    assert!(refused(&h.admin(AdminCommand::SetKeySalt {
        salt: KeySalt([2; 16]),
    })));
    assert_eq!(h.engine.key_salt(), Some(KeySalt([1; 16])));
    // A revoked broker holds no key: revoking first does not turn salting off.
    let mut revoked_first = Harness::new();
    revoked_first.admin(AdminCommand::SetBrokerKey {
        broker: BROKER_A,
        key_digest: KeyDigest::REVOKED,
    });
    let events = revoked_first.admin(AdminCommand::SetKeySalt {
        salt: KeySalt([4; 16]),
    });
    assert!(
        matches!(events[..], [Event::KeySaltSet { .. }]),
        "{events:?}"
    );
    // A cluster whose brokers were registered without a salt keeps none.
    let mut old = brokers();
    assert!(refused(&old.admin(AdminCommand::SetKeySalt {
        salt: KeySalt([3; 16]),
    })));
    assert_eq!(old.engine.key_salt(), None);
}
