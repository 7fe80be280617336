//! Property tests over thousands of random command sequences on several accounts and symbols.
//!
//! After every command: the full invariant check (every asset conserved, no negative balance,
//! no crossed book at rest, FIFO priority inside each level, holds equal to what orders need).
//! Over each sequence: a model of every order's open quantity (filled never exceeds ordered),
//! the matching order of makers (price, then time), determinism of two engines, and a
//! snapshot taken at a random point, restored from bytes, continuing identically.

use std::collections::BTreeMap;

use exchange_domain::{
    AdminCommand, Amount, Cancel, CancelReason, CancelReplace, ClientOrderId, Command, Event,
    Input, Liquidity, MassCancel, NewOrder, OrderId, OrderType, Output, Price, Qty,
    SelfTradePrevention, Side, TimeInForce,
};
use proptest::prelude::*;

use super::*;
use crate::{Engine, EngineConfig, Snapshot};

const ACCOUNTS: [AccountId; 3] = [ALICE, BOB, CAROL];
const SYMBOLS: [(SymbolId, i64, i64); 2] = [(SYM, 1, 1), (GRID, 10, 100)];

#[derive(Clone, Debug)]
enum Op {
    New {
        account: usize,
        symbol: usize,
        side: Side,
        kind: u8,
        price: i64,
        qty: i64,
        stp: u8,
    },
    Cancel {
        pick: usize,
        by_owner: bool,
    },
    Replace {
        pick: usize,
        price: i64,
        qty: i64,
    },
    MassCancel {
        account: usize,
        symbol: Option<usize>,
    },
    Deposit {
        account: usize,
        asset: u32,
        amount: i64,
    },
    Withdraw {
        account: usize,
        asset: u32,
        amount: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0..3usize, 0..2usize, any::<bool>(), 0..6u8, 0..24i64, -1..20i64, 0..8u8).prop_map(
            |(account, symbol, buy, kind, price, qty, stp)| Op::New {
                account,
                symbol,
                side: if buy { Side::Buy } else { Side::Sell },
                kind,
                price,
                qty,
                stp,
            }
        ),
        3 => (any::<usize>(), prop::bool::weighted(0.9))
            .prop_map(|(pick, by_owner)| Op::Cancel { pick, by_owner }),
        3 => (any::<usize>(), 0..24i64, 1..20i64)
            .prop_map(|(pick, price, qty)| Op::Replace { pick, price, qty }),
        1 => (0..3usize, prop::option::of(0..2usize))
            .prop_map(|(account, symbol)| Op::MassCancel { account, symbol }),
        1 => (0..3usize, 1..3u32, 1..50_000i64)
            .prop_map(|(account, asset, amount)| Op::Deposit { account, asset, amount }),
        1 => (0..3usize, 1..3u32, 1..50_000i64)
            .prop_map(|(account, asset, amount)| Op::Withdraw { account, asset, amount }),
    ]
}

/// Turns generated ops into commands; ids of orders created so far are picked by index.
fn commands(ops: &[Op]) -> Vec<Command> {
    let mut setup = vec![];
    for (symbol, tick, lot) in SYMBOLS {
        setup.push(Command::Admin(AdminCommand::AddSymbol(spec(
            symbol, tick, lot,
        ))));
    }
    for account in ACCOUNTS {
        setup.push(Command::Admin(AdminCommand::CreateAccount {
            account,
            owner: exchange_domain::BrokerId(1),
        }));
        setup.push(Command::Admin(AdminCommand::Deposit {
            account,
            asset: BASE,
            amount: Amount(20_000),
        }));
        setup.push(Command::Admin(AdminCommand::Deposit {
            account,
            asset: USD,
            amount: Amount(1_000_000),
        }));
    }
    let mut created: Vec<(OrderId, usize, usize)> = vec![];
    let mut out = setup;
    for op in ops {
        let seq = out.len() as u64 + 1;
        let command = match *op {
            Op::New {
                account,
                symbol,
                side,
                kind,
                price,
                qty,
                stp,
            } => {
                let (symbol_id, tick, lot) = SYMBOLS[symbol];
                let (order_type, time_in_force) = match kind {
                    0 => (OrderType::Limit, TimeInForce::Gtc),
                    1 => (OrderType::Limit, TimeInForce::Ioc),
                    2 => (OrderType::Limit, TimeInForce::Fok),
                    3 => (OrderType::Limit, TimeInForce::PostOnly),
                    4 => (OrderType::Market, TimeInForce::Ioc),
                    _ => (OrderType::Market, TimeInForce::Fok),
                };
                created.push((OrderId(seq), account, symbol));
                Command::NewOrder(NewOrder {
                    account: ACCOUNTS[account],
                    symbol: symbol_id,
                    client_order_id: ClientOrderId(seq),
                    side,
                    order_type,
                    time_in_force,
                    price: Price((88 + price) * tick),
                    qty: Qty(qty * lot),
                    self_trade_prevention: match stp {
                        1 => SelfTradePrevention::CancelNewest,
                        2 => SelfTradePrevention::CancelOldest,
                        3 => SelfTradePrevention::CancelBoth,
                        _ => SelfTradePrevention::None,
                    },
                })
            }
            Op::Cancel { pick, by_owner } if !created.is_empty() => {
                let (order_id, owner, _) = created[pick % created.len()];
                let account = if by_owner { owner } else { (owner + 1) % 3 };
                Command::Cancel(Cancel {
                    account: ACCOUNTS[account],
                    order_id,
                })
            }
            Op::Replace { pick, price, qty } if !created.is_empty() => {
                let (order_id, owner, symbol) = created[pick % created.len()];
                let (_, tick, lot) = SYMBOLS[symbol];
                Command::CancelReplace(CancelReplace {
                    account: ACCOUNTS[owner],
                    order_id,
                    price: Price((88 + price) * tick),
                    qty: Qty(qty * lot),
                })
            }
            Op::Cancel { .. } | Op::Replace { .. } => continue,
            Op::MassCancel { account, symbol } => Command::MassCancel(MassCancel {
                account: ACCOUNTS[account],
                symbol: symbol.map(|s| SYMBOLS[s].0),
            }),
            Op::Deposit {
                account,
                asset,
                amount,
            } => Command::Admin(AdminCommand::Deposit {
                account: ACCOUNTS[account],
                asset: AssetId(asset),
                amount: Amount(amount),
            }),
            Op::Withdraw {
                account,
                asset,
                amount,
            } => Command::Admin(AdminCommand::Withdraw {
                account: ACCOUNTS[account],
                asset: AssetId(asset),
                amount: Amount(amount),
            }),
        };
        out.push(command);
    }
    out
}

fn input(index: usize, command: Command) -> Input {
    Input {
        seq: index as u64 + 1,
        timestamp_ns: 7 * index as u64,
        broker: exchange_domain::BrokerId::OPERATOR,
        command,
    }
}

/// The queues (front first) at every level of one side of a book, best level first.
type Queues = Vec<(Price, Vec<OrderId>)>;

/// For a command that may take liquidity: its side, and the queues of the side it would trade
/// against.
fn opposite_queues(engine: &Engine, command: &Command) -> Option<(Side, Queues)> {
    let (symbol, side) = match command {
        Command::NewOrder(order) => (order.symbol, order.side),
        Command::CancelReplace(replace) => {
            let order = engine.open_order(replace.order_id)?;
            (order.symbol, order.side)
        }
        _ => return None,
    };
    let opposite = side.opposite();
    let levels = engine
        .depth(symbol, opposite, usize::MAX)
        .into_iter()
        .map(|(price, _)| (price, engine.queue(symbol, opposite, price)))
        .collect();
    Some((side, levels))
}

/// Makers must be met best price first and, within a price, front of the queue first, skipping
/// only orders cancelled by self-trade prevention.
fn check_priority(
    side: Side,
    queues: &[(Price, Vec<OrderId>)],
    events: &[Event],
) -> Result<(), TestCaseError> {
    let stp_cancelled: Vec<OrderId> = events
        .iter()
        .filter_map(|e| match e {
            Event::Cancelled {
                order_id,
                reason: CancelReason::SelfTrade,
                ..
            } => Some(*order_id),
            _ => None,
        })
        .collect();
    let makers: Vec<(Price, OrderId)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Execution {
                liquidity: Liquidity::Maker,
                price,
                order_id,
                ..
            } => Some((*price, *order_id)),
            _ => None,
        })
        .collect();
    for pair in makers.windows(2) {
        let ordered = match side {
            Side::Buy => pair[0].0 <= pair[1].0,
            Side::Sell => pair[0].0 >= pair[1].0,
        };
        prop_assert!(ordered, "makers out of price priority: {:?}", makers);
    }
    for (price, queue) in queues {
        let met: Vec<OrderId> = makers
            .iter()
            .filter(|m| m.0 == *price)
            .map(|m| m.1)
            .collect();
        let eligible: Vec<OrderId> = queue
            .iter()
            .copied()
            .filter(|id| !stp_cancelled.contains(id))
            .collect();
        prop_assert!(
            eligible.starts_with(&met),
            "at {} makers {:?} do not follow the queue {:?}",
            price,
            met,
            eligible
        );
    }
    Ok(())
}

/// Tracks every order's open quantity from the events alone.
#[derive(Default)]
struct QuantityModel {
    open: BTreeMap<OrderId, i64>,
}

impl QuantityModel {
    fn apply(&mut self, event: &Event) -> Result<(), TestCaseError> {
        match *event {
            Event::Accepted { order_id, qty, .. } => {
                prop_assert!(
                    self.open.insert(order_id, qty.0).is_none(),
                    "order {} accepted twice",
                    order_id
                );
            }
            Event::Execution {
                order_id,
                qty,
                leaves_qty,
                ..
            } => {
                let open = self.open.get_mut(&order_id).ok_or_else(|| {
                    TestCaseError::fail(format!("fill of unknown order {order_id}"))
                })?;
                prop_assert!(
                    qty.0 > 0 && qty.0 <= *open,
                    "order {} filled {} with {} open",
                    order_id,
                    qty,
                    open
                );
                *open -= qty.0;
                prop_assert_eq!(*open, leaves_qty.0);
                if *open == 0 {
                    self.open.remove(&order_id);
                }
            }
            Event::Replaced { order_id, qty, .. } => {
                let open = self.open.get_mut(&order_id).ok_or_else(|| {
                    TestCaseError::fail(format!("replace of unknown order {order_id}"))
                })?;
                *open = qty.0;
            }
            Event::Cancelled {
                order_id,
                leaves_qty,
                ..
            } => {
                let open = self.open.remove(&order_id).ok_or_else(|| {
                    TestCaseError::fail(format!("cancel of unknown order {order_id}"))
                })?;
                prop_assert_eq!(
                    open,
                    leaves_qty.0,
                    "order {} cancelled with the wrong remainder",
                    order_id
                );
            }
            _ => {}
        }
        Ok(())
    }
}

fn run_all(engine: &mut Engine, inputs: &[Input]) -> Vec<Output> {
    let mut outputs = Vec::new();
    for input in inputs {
        engine.process(input, &mut outputs);
    }
    outputs
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000),
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_sequences_keep_every_invariant(ops in prop::collection::vec(op(), 1..160), cut in any::<prop::sample::Index>()) {
        let inputs: Vec<Input> = commands(&ops).into_iter().enumerate().map(|(i, c)| input(i, c)).collect();

        let mut engine = Engine::new(EngineConfig::default());
        let mut model = QuantityModel::default();
        let mut outputs = Vec::new();
        for input in &inputs {
            let queues = opposite_queues(&engine, &input.command);
            let start = outputs.len();
            engine.process(input, &mut outputs);
            let events: Vec<Event> = outputs[start..].iter().map(|o| o.event).collect();
            if let Some((side, queues)) = queues {
                check_priority(side, &queues, &events)?;
            }
            for event in &events {
                model.apply(event)?;
            }
            if let Err(violation) = engine.check_invariants() {
                return Err(TestCaseError::fail(format!("after seq {}: {violation}", input.seq)));
            }
        }
        for (order_id, open) in &model.open {
            let resting = engine.open_order(*order_id).map(|order| order.leaves.0);
            prop_assert_eq!(resting, Some(*open), "order {} open in the model", order_id);
        }
        prop_assert_eq!(engine.open_order_count() as usize, model.open.len());

        // Determinism: a second engine fed the same inputs says the same bytes.
        let mut twin = Engine::new(EngineConfig::default());
        let twin_outputs = run_all(&mut twin, &inputs);
        prop_assert!(twin_outputs == outputs, "two engines diverged");
        prop_assert_eq!(twin.output_hash(), engine.output_hash());

        // Snapshot at a random point, through bytes, and continue.
        let cut = cut.index(inputs.len() + 1);
        let mut first = Engine::new(EngineConfig::default());
        let before = run_all(&mut first, &inputs[..cut]);
        let bytes = first.snapshot().to_bytes();
        let mut restored = Engine::restore(&Snapshot::from_bytes(&bytes).expect("decode")).expect("restore");
        let after = run_all(&mut restored, &inputs[cut..]);
        prop_assert!(before.len() + after.len() == outputs.len());
        prop_assert!(outputs[..before.len()] == before[..] && outputs[before.len()..] == after[..], "restored engine diverged");
        prop_assert_eq!(restored.output_hash(), engine.output_hash());
    }
}
