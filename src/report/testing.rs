//! Test helpers: entries made by the real engine, and scratch databases.

use std::path::PathBuf;

use exchange_domain::{
    AccountId, AdminCommand, Amount, AssetId, BrokerId, Cancel, ClientOrderId, Command, Event,
    ExecId, Input, Liquidity, NewOrder, OrderId, OrderType, Output, Price, Qty,
    SelfTradePrevention, Side, SymbolId, SymbolSpec, TimeInForce, TradeId,
};
use exchange_engine::{Engine, EngineConfig};

use super::EntryOutputs;

pub(crate) const SYM: SymbolId = SymbolId(1);
pub(crate) const BASE: AssetId = AssetId(1);
pub(crate) const USD: AssetId = AssetId(2);
pub(crate) const ALICE: AccountId = AccountId(100);
pub(crate) const BOB: AccountId = AccountId(200);
pub(crate) const FUNDS: i64 = 1_000_000;
/// Timestamps are this plus the sequence number.
pub(crate) const T0: u64 = 1_700_000_000_000_000_000;

/// Runs commands through the engine, one command per log entry (index = seq).
pub(crate) struct Scenario {
    engine: Engine,
    seq: u64,
    pub entries: Vec<EntryOutputs>,
}

impl Scenario {
    /// One symbol; ALICE and BOB each funded with FUNDS of both assets (7 entries).
    pub fn new() -> Scenario {
        let mut s = Scenario {
            engine: Engine::new(EngineConfig::default()),
            seq: 0,
            entries: Vec::new(),
        };
        s.run(Command::Admin(AdminCommand::AddSymbol(SymbolSpec {
            symbol: SYM,
            base: BASE,
            quote: USD,
            tick_size: Price(1),
            lot_size: Qty(1),
            name: exchange_domain::Name::numbered("SYM", SYM.0 as u64),
            price_decimals: 0,
        })));
        for account in [ALICE, BOB] {
            s.run(Command::Admin(AdminCommand::CreateAccount {
                account,
                owner: BrokerId::OPERATOR,
            }));
            for asset in [BASE, USD] {
                s.run(Command::Admin(AdminCommand::Deposit {
                    account,
                    asset,
                    amount: Amount(FUNDS),
                }));
            }
        }
        s
    }

    /// Runs one command as the operator, as the entry after the last; returns its events.
    pub fn run(&mut self, command: Command) -> Vec<Event> {
        self.seq += 1;
        let input = Input {
            seq: self.seq,
            timestamp_ns: T0 + self.seq,
            broker: BrokerId::OPERATOR,
            command,
        };
        let mut outputs = Vec::new();
        self.engine.process(&input, &mut outputs);
        let events = outputs.iter().map(|o| o.event).collect();
        self.entries.push(EntryOutputs {
            index: self.seq,
            timestamp_ns: input.timestamp_ns,
            outputs,
        });
        events
    }

    /// A limit order on SYM; returns its order id (the command's seq).
    pub fn limit(
        &mut self,
        account: AccountId,
        side: Side,
        price: i64,
        qty: i64,
        tif: TimeInForce,
    ) -> OrderId {
        let id = OrderId(self.seq + 1);
        self.run(Command::NewOrder(NewOrder {
            account,
            symbol: SYM,
            client_order_id: ClientOrderId(id.0 * 10),
            side,
            order_type: OrderType::Limit,
            time_in_force: tif,
            price: Price(price),
            qty: Qty(qty),
            self_trade_prevention: SelfTradePrevention::None,
        }));
        id
    }

    pub fn cancel(&mut self, account: AccountId, order_id: OrderId) -> Vec<Event> {
        self.run(Command::Cancel(Cancel { account, order_id }))
    }

    /// The setup and then `orders` orders: ALICE's asks and BOB's crossing bids in turn, so
    /// half of them trade, with a cancel of a resting ask now and then.
    pub fn busy(orders: usize) -> Scenario {
        let mut s = Scenario::new();
        let mut resting = Vec::new();
        for i in 0..orders {
            if i % 2 == 0 {
                resting.push(s.limit(ALICE, Side::Sell, 100 + (i % 7) as i64, 3, TimeInForce::Gtc));
            } else if i % 5 == 0 {
                if let Some(id) = resting.pop() {
                    s.cancel(ALICE, id);
                }
            } else {
                s.limit(BOB, Side::Buy, 110, 2, TimeInForce::Ioc);
            }
        }
        s
    }
}

/// A scratch directory and a database path in it.
pub(crate) fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("report.db");
    (dir, path)
}

/// An entry whose only output is a taker execution without its maker's: the writer refuses it.
pub(crate) fn broken_entry(index: u64) -> EntryOutputs {
    EntryOutputs {
        index,
        timestamp_ns: T0 + index,
        outputs: vec![Output {
            seq: index,
            timestamp_ns: T0 + index,
            event: Event::Execution {
                exec_id: ExecId(1_000_000 + index),
                trade_id: TradeId(1_000_000 + index),
                order_id: OrderId(index),
                account: ALICE,
                symbol: SYM,
                client_order_id: ClientOrderId(0),
                side: Side::Buy,
                price: Price(100),
                qty: Qty(1),
                leaves_qty: Qty(0),
                liquidity: Liquidity::Taker,
                counter_order_id: OrderId(1),
            },
        }],
    }
}

/// An entry of one deposit-like balance change.
pub(crate) fn deposit_entry(index: u64, account: AccountId) -> EntryOutputs {
    EntryOutputs {
        index,
        timestamp_ns: T0 + index,
        outputs: vec![Output {
            seq: index,
            timestamp_ns: T0 + index,
            event: Event::BalanceChanged {
                account,
                asset: USD,
                delta: Amount(10),
                available: Amount(10 * index as i64),
                held: Amount(0),
            },
        }],
    }
}
