//! Engine tests. Every scenario runs through [`Harness`], which checks the engine's full
//! invariants when the test ends, so each test also proves the state it leaves is consistent.

mod admin;
mod brokers;
mod orders;
mod properties;
mod rejects;
mod replace;
mod self_trade;
mod snapshots;

use exchange_domain::{
    AccountId, AdminCommand, Amount, AssetId, BrokerId, Cancel, CancelReplace, ClientOrderId,
    Command, Event, Input, MassCancel, NewOrder, OrderId, OrderType, Output, Price, Qty,
    SelfTradePrevention, Side, SymbolId, SymbolSpec, TimeInForce,
};

use crate::{Engine, EngineConfig};

pub const SYM: SymbolId = SymbolId(1);
/// A second symbol with a coarse grid: tick 10, lot 100.
pub const GRID: SymbolId = SymbolId(2);
pub const BASE: AssetId = AssetId(1);
pub const USD: AssetId = AssetId(2);
pub const ALICE: AccountId = AccountId(100);
pub const BOB: AccountId = AccountId(200);
pub const CAROL: AccountId = AccountId(300);
pub const FUNDS: i64 = 1_000_000;
/// ALICE's broker.
pub const BROKER_A: BrokerId = BrokerId(1);
/// BOB's and CAROL's broker.
pub const BROKER_B: BrokerId = BrokerId(2);

/// The broker that owns one of the test accounts.
pub fn owner_of(account: AccountId) -> BrokerId {
    if account == ALICE {
        BROKER_A
    } else {
        BROKER_B
    }
}

pub struct Harness {
    pub engine: Engine,
    seq: u64,
    pub outputs: Vec<Output>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            if let Err(violation) = self.engine.check_invariants() {
                panic!("test left the engine inconsistent: {violation}");
            }
        }
    }
}

pub fn spec(symbol: SymbolId, tick: i64, lot: i64) -> SymbolSpec {
    SymbolSpec {
        symbol,
        base: BASE,
        quote: USD,
        tick_size: Price(tick),
        lot_size: Qty(lot),
        name: exchange_domain::Name::numbered("SYM", symbol.0 as u64),
        price_decimals: 0,
    }
}

impl Harness {
    /// Two symbols, and ALICE, BOB and CAROL each funded with FUNDS of both assets.
    pub fn new() -> Self {
        let mut h = Harness::empty(EngineConfig::default());
        h.admin(AdminCommand::AddSymbol(spec(SYM, 1, 1)));
        h.admin(AdminCommand::AddSymbol(spec(GRID, 10, 100)));
        for account in [ALICE, BOB, CAROL] {
            h.funded_account(account, FUNDS, FUNDS);
        }
        h
    }

    pub fn empty(config: EngineConfig) -> Self {
        Harness {
            engine: Engine::new(config),
            seq: 0,
            outputs: Vec::new(),
        }
    }

    pub fn funded_account(&mut self, account: AccountId, base: i64, quote: i64) {
        self.admin(AdminCommand::CreateAccount {
            account,
            owner: owner_of(account),
        });
        for (asset, amount) in [(BASE, base), (USD, quote)] {
            if amount > 0 {
                self.admin(AdminCommand::Deposit {
                    account,
                    asset,
                    amount: Amount(amount),
                });
            }
        }
    }

    /// Runs one command as the operator and returns the events it produced.
    pub fn run(&mut self, command: Command) -> Vec<Event> {
        self.run_as(BrokerId::OPERATOR, command)
    }

    /// Runs one command sent by `broker` and returns the events it produced.
    pub fn run_as(&mut self, broker: BrokerId, command: Command) -> Vec<Event> {
        self.seq += 1;
        let input = Input {
            seq: self.seq,
            timestamp_ns: 1_000 + self.seq,
            broker,
            command,
        };
        let mut outputs = Vec::new();
        self.engine.process(&input, &mut outputs);
        for output in &outputs {
            assert_eq!(
                output.seq, input.seq,
                "every output carries its input's seq"
            );
            assert_eq!(output.timestamp_ns, input.timestamp_ns);
        }
        self.outputs.extend_from_slice(&outputs);
        outputs.into_iter().map(|o| o.event).collect()
    }

    /// The sequence number the next command gets: the order id of a new order.
    pub fn next_id(&self) -> OrderId {
        OrderId(self.seq + 1)
    }

    pub fn admin(&mut self, command: AdminCommand) -> Vec<Event> {
        self.run(Command::Admin(command))
    }

    pub fn order(&mut self, order: NewOrder) -> (OrderId, Vec<Event>) {
        let id = self.next_id();
        (id, self.run(Command::NewOrder(order)))
    }

    /// A limit order on SYM with no self-trade prevention.
    pub fn limit(
        &mut self,
        account: AccountId,
        side: Side,
        price: i64,
        qty: i64,
        tif: TimeInForce,
    ) -> (OrderId, Vec<Event>) {
        self.order(new_order(account, side, price, qty, tif))
    }

    pub fn gtc(&mut self, account: AccountId, side: Side, price: i64, qty: i64) -> OrderId {
        let (id, events) = self.limit(account, side, price, qty, TimeInForce::Gtc);
        assert!(
            matches!(events[0], Event::Accepted { .. }),
            "order not accepted: {events:?}"
        );
        id
    }

    /// Registers a broker with a key digest derived from its id.
    pub fn register_broker(&mut self, broker: BrokerId) {
        // A key of its own (keys are unique), never the revoked one.
        let mut key_digest = [0xA5; 32];
        key_digest[..4].copy_from_slice(&broker.0.to_le_bytes());
        let events = self.admin(AdminCommand::SetBrokerKey {
            broker,
            key_digest: exchange_domain::KeyDigest(key_digest),
        });
        assert!(
            matches!(events[..], [Event::BrokerKeySet { .. }]),
            "{events:?}"
        );
    }

    /// A one-lot GTC limit order on SYM sent by `broker` with a client order id.
    pub fn broker_order(
        &mut self,
        broker: BrokerId,
        account: AccountId,
        client_order_id: u64,
        side: Side,
        price: i64,
    ) -> Vec<Event> {
        let mut order = new_order(account, side, price, 1, TimeInForce::Gtc);
        order.client_order_id = ClientOrderId(client_order_id);
        self.run_as(broker, Command::NewOrder(order))
    }

    pub fn cancel(&mut self, account: AccountId, order_id: OrderId) -> Vec<Event> {
        self.run(Command::Cancel(Cancel { account, order_id }))
    }

    pub fn replace(
        &mut self,
        account: AccountId,
        order_id: OrderId,
        price: i64,
        qty: i64,
    ) -> Vec<Event> {
        self.run(Command::CancelReplace(CancelReplace {
            account,
            order_id,
            price: Price(price),
            qty: Qty(qty),
        }))
    }

    pub fn mass_cancel(&mut self, account: AccountId, symbol: Option<SymbolId>) -> Vec<Event> {
        self.run(Command::MassCancel(MassCancel { account, symbol }))
    }

    /// (available, held) of an asset.
    pub fn balance(&self, account: AccountId, asset: AssetId) -> (i64, i64) {
        self.engine.balance(account, asset).unwrap_or((0, 0))
    }

    pub fn depth(&self, side: Side) -> Vec<(i64, i64)> {
        self.engine
            .depth(SYM, side, usize::MAX)
            .into_iter()
            .map(|(p, q)| (p.0, q.0))
            .collect()
    }
}

pub fn new_order(
    account: AccountId,
    side: Side,
    price: i64,
    qty: i64,
    tif: TimeInForce,
) -> NewOrder {
    NewOrder {
        account,
        symbol: SYM,
        client_order_id: ClientOrderId(0),
        side,
        order_type: OrderType::Limit,
        time_in_force: tif,
        price: Price(price),
        qty: Qty(qty),
        self_trade_prevention: SelfTradePrevention::None,
    }
}

/// The executions among `events`, as (order id, price, qty, leaves).
pub fn fills(events: &[Event]) -> Vec<(OrderId, i64, i64, i64)> {
    events
        .iter()
        .filter_map(|e| match *e {
            Event::Execution {
                order_id,
                price,
                qty,
                leaves_qty,
                ..
            } => Some((order_id, price.0, qty.0, leaves_qty.0)),
            _ => None,
        })
        .collect()
}

/// The reason of the single rejection among `events`.
pub fn rejection(events: &[Event]) -> Option<exchange_domain::RejectReason> {
    events.iter().find_map(Event::reject_reason)
}
