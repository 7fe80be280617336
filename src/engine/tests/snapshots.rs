//! Snapshot and restore: the restored engine continues exactly as the original.

use exchange_domain::{Side, TimeInForce};

use super::*;
use crate::{Engine, RestoreError, Snapshot};

#[test]
fn a_restored_engine_continues_with_the_same_outputs_and_hash() {
    let mut h = Harness::new();
    h.admin(exchange_domain::AdminCommand::AddAsset {
        asset: USD,
        name: exchange_domain::Name::new("USD").unwrap(),
        decimals: 2,
    });
    h.admin(exchange_domain::AdminCommand::SetPriceBand {
        symbol: SYM,
        price_band_bps: 5_000,
        reference_price: exchange_domain::Price(100),
    });
    h.gtc(ALICE, Side::Sell, 101, 5);
    h.gtc(ALICE, Side::Sell, 100, 5);
    let bid = h.gtc(BOB, Side::Buy, 99, 5);
    h.gtc(CAROL, Side::Buy, 99, 5);
    h.replace(BOB, bid, 99, 3);

    let bytes = h.engine.snapshot().to_bytes();
    let restored =
        Engine::restore(&Snapshot::from_bytes(&bytes).expect("decode")).expect("restore");
    assert_eq!(restored.output_hash(), h.engine.output_hash());
    assert_eq!(restored.snapshot(), h.engine.snapshot());
    assert_eq!(restored.assets(), h.engine.assets(), "named assets survive");
    assert_eq!(
        restored.instruments().collect::<Vec<_>>(),
        h.engine.instruments().collect::<Vec<_>>(),
        "names, bands and reference prices survive"
    );

    let mut twin = Harness {
        engine: restored,
        seq: h.seq,
        outputs: Vec::new(),
    };
    let start = h.outputs.len();
    for harness in [&mut h, &mut twin] {
        harness.limit(CAROL, Side::Buy, 101, 7, TimeInForce::Ioc);
        harness.limit(BOB, Side::Sell, 99, 6, TimeInForce::Gtc);
        harness.mass_cancel(ALICE, None);
    }
    assert_eq!(h.outputs[start..], twin.outputs[..]);
    assert_eq!(h.engine.output_hash(), twin.engine.output_hash());
}

#[test]
fn a_format_3_snapshot_is_still_read() {
    let mut h = Harness::new();
    h.register_broker(BROKER_A);
    h.register_broker(BROKER_B);
    h.broker_order(BROKER_A, ALICE, 7, Side::Buy, 10);
    let snapshot = h.engine.snapshot();
    assert!(snapshot.brokers.iter().all(|b| b.fix_comp_id.is_none()));
    let read = Snapshot::from_bytes(&snapshot.to_v3_bytes()).expect("a format 3 snapshot");
    assert_eq!(read, snapshot);
    let restored = Engine::restore(&read).expect("restore");
    assert_eq!(restored.output_hash(), h.engine.output_hash());
}

#[test]
fn damaged_snapshot_bytes_are_an_error_not_a_panic() {
    let mut h = Harness::new();
    h.gtc(ALICE, Side::Sell, 101, 5);
    let bytes = h.engine.snapshot().to_bytes();
    for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
        assert!(Snapshot::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut flipped = bytes.clone();
    for i in (0..flipped.len()).step_by(7) {
        flipped[i] ^= 0x5a;
    }
    if let Ok(snapshot) = Snapshot::from_bytes(&flipped) {
        // It may decode as plain data; then the invariants must catch what it describes, or it
        // must describe a consistent state.
        match Engine::restore(&snapshot) {
            Ok(engine) => engine
                .check_invariants()
                .expect("restored state is consistent"),
            Err(RestoreError::Inconsistent(_) | RestoreError::UnsupportedVersion(_)) => {}
            Err(other) => panic!("unexpected error {other}"),
        }
    }
}

#[test]
fn an_inconsistent_snapshot_is_refused() {
    let mut h = Harness::new();
    h.gtc(ALICE, Side::Sell, 101, 5);
    let mut snapshot = h.engine.snapshot();
    // Pretend ALICE holds less than her resting order needs.
    for account in &mut snapshot.accounts {
        for balance in &mut account.balances {
            balance.held = 0;
        }
    }
    assert!(matches!(
        Engine::restore(&snapshot),
        Err(RestoreError::Inconsistent(_))
    ));
    let mut snapshot = h.engine.snapshot();
    snapshot.format_version += 1;
    assert!(matches!(
        Engine::restore(&snapshot),
        Err(RestoreError::UnsupportedVersion(_))
    ));
}

#[test]
fn the_key_salt_is_kept_and_a_format_4_snapshot_is_read_without_one() {
    use exchange_domain::{AdminCommand, KeySalt};
    let mut h = Harness::new();
    let salt = KeySalt([9; 16]);
    h.admin(AdminCommand::SetKeySalt { salt });
    h.register_broker(BROKER_A);
    let snapshot = h.engine.snapshot();
    assert_eq!(snapshot.key_salt, Some(salt));
    let restored = Engine::restore(&Snapshot::from_bytes(&snapshot.to_bytes()).expect("read"))
        .expect("restore");
    assert_eq!(restored.key_salt(), Some(salt));
    assert_eq!(restored.output_hash(), h.engine.output_hash());
    // Format 4 had no salt: its clusters keep plain digests.
    let read = Snapshot::from_bytes(&snapshot.to_v4_bytes()).expect("a format 4 snapshot");
    assert_eq!(read.key_salt, None);
    assert_eq!(read.brokers, snapshot.brokers);
    assert_eq!(read.format_version, crate::SNAPSHOT_FORMAT_VERSION);
}
