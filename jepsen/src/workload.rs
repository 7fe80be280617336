//! The clients: brokers sending new orders and cancels for their accounts, and the operator
//! depositing and withdrawing, each operation recorded in the history as it is invoked and as
//! it completes (ok: answered; fail: certainly not done; info: unknown, it may have been).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exchange::domain::{
    AccountId, AdminCommand, Amount, AssetId, Cancel, CancelReplace, ClientOrderId, Command, Event,
    NewOrder, OrderId, OrderType, Output, Price, Qty, RiskLimits, SelfTradePrevention, Side,
    SymbolId, SymbolSpec, TimeInForce,
};
use exchange::gateway::client::{Client, ClientError};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

pub const ADMIN_KEY: &str = "chaos-admin-key-0123456789";
pub const SYMBOL: SymbolId = SymbolId(1);
pub const BASE: AssetId = AssetId(1);
pub const QUOTE: AssetId = AssetId(2);
const BROKERS: u32 = 4;
const ACCOUNTS_PER_BROKER: u64 = 4;
/// The desk that owns the ledger accounts: it places no orders, so the only changes to those
/// accounts are the clerks' deposits and withdrawals, which makes their histories small enough
/// for a linearizability search.
pub const LEDGER_DESK: u32 = 9;
pub const LEDGER_ACCOUNTS: [u64; 3] = [901, 902, 903];
/// Concurrent clerks working the ledger accounts.
pub const LEDGER_CLERKS: u32 = 3;

pub struct BrokerSpec {
    pub id: u32,
    pub key: String,
    pub accounts: Vec<u64>,
}

/// The brokers of the test cluster, each with its accounts.
pub fn brokers() -> Vec<BrokerSpec> {
    (1..=BROKERS)
        .map(|id| BrokerSpec {
            id,
            key: format!("chaos-broker-{id}-key-0123456789"),
            accounts: (1..=ACCOUNTS_PER_BROKER)
                .map(|n| id as u64 * 100 + n)
                .collect(),
        })
        .collect()
}

/// The order brokers and the ledger desk: every owner of accounts, as the brokers file lists
/// them.
pub fn desks() -> Vec<BrokerSpec> {
    let mut all = brokers();
    all.push(BrokerSpec {
        id: LEDGER_DESK,
        key: "chaos-ledger-desk-key-0123456789".into(),
        accounts: LEDGER_ACCOUNTS.to_vec(),
    });
    all
}

/// One line of the history.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Op {
    /// The client that ran it.
    pub process: u32,
    /// Unique per operation; the invoke and its completion share it.
    pub op: u64,
    /// invoke, ok, fail or info.
    pub kind: String,
    /// order, cancel, replace, deposit, withdraw or read (a balance).
    pub f: String,
    /// Nanoseconds since the run began.
    pub time_ns: u64,
    pub account: u64,
    /// The client order id (orders), the order id (cancels, replaces), the amount (funds).
    pub value: u64,
    /// On completion: what the exchange answered (the order id, the reject reason, the
    /// command's sequence number) or why it failed.
    pub result: Option<serde_json::Value>,
}

/// The history, shared by the clients.
#[derive(Clone)]
pub struct History {
    ops: Arc<Mutex<Vec<Op>>>,
    started: Instant,
    next_op: Arc<std::sync::atomic::AtomicU64>,
}

impl History {
    pub fn new(started: Instant) -> History {
        History {
            ops: Arc::default(),
            started,
            next_op: Arc::default(),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    fn invoke(&self, process: u32, f: &str, account: u64, value: u64) -> Op {
        let op = Op {
            process,
            op: self.next_op.fetch_add(1, Ordering::Relaxed),
            kind: "invoke".into(),
            f: f.into(),
            time_ns: self.now_ns(),
            account,
            value,
            result: None,
        };
        self.push(op.clone());
        op
    }

    fn complete(&self, invoked: &Op, kind: &str, result: serde_json::Value) {
        self.push(Op {
            kind: kind.into(),
            time_ns: self.now_ns(),
            result: Some(result),
            ..invoked.clone()
        });
    }

    fn push(&self, op: Op) {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).push(op);
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// How a request ended, in the history's words.
fn outcome(error: &ClientError) -> &'static str {
    match error {
        ClientError::Unavailable(_) | ClientError::Rejected(_) => "fail",
        ClientError::OutcomeUnknown(_) => "info",
    }
}

/// The market, the accounts' funds and limits, before the clients start.
pub async fn setup(admin: &mut Client) -> Result<(), String> {
    let mut commands = vec![Command::Admin(AdminCommand::AddSymbol(SymbolSpec {
        symbol: SYMBOL,
        base: BASE,
        quote: QUOTE,
        tick_size: Price(1),
        lot_size: Qty(1),
        name: exchange::domain::Name::numbered("SYM", SYMBOL.0 as u64),
        price_decimals: 0,
    }))];
    for broker in brokers() {
        for account in broker.accounts {
            commands.push(Command::Admin(AdminCommand::SetRiskLimits {
                account: AccountId(account),
                limits: RiskLimits {
                    max_order_qty: Qty(1_000_000),
                    max_order_notional: Amount(i64::MAX),
                    max_open_orders: 1_000_000,
                },
            }));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for command in commands {
        loop {
            match admin.submit(command).await {
                // A try whose answer was lost added the symbol already.
                Ok(outputs)
                    if outputs.iter().any(|o| {
                        o.event.reject_reason()
                            == Some(exchange::domain::RejectReason::SymbolExists)
                    }) =>
                {
                    break
                }
                // The leader opens the brokers' accounts when it takes office: wait for them.
                Ok(outputs) if outputs.iter().any(|o| o.event.reject_reason().is_some()) => {
                    if Instant::now() > deadline {
                        return Err(format!("setup refused: {outputs:?}"));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => return Err(format!("setup: {e}")),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    Ok(())
}

fn first_accepted(outputs: &[Output]) -> Option<OrderId> {
    outputs.iter().find_map(|o| match o.event {
        Event::Accepted { order_id, .. } => Some(order_id),
        Event::DuplicateOrder {
            order_id,
            rejected: None,
            ..
        } => Some(order_id),
        _ => None,
    })
}

/// What a broker does to one of its resting orders.
enum Amend {
    Cancel,
    Replace { price: Price, qty: Qty },
}

/// Cancels or replaces a resting order and records it in the history (as "cancel" or
/// "replace"), with whether the outputs show it took effect and the first output's sequence
/// number.
async fn amend(
    client: &mut Client,
    history: &History,
    process: u32,
    (account, order_id): (u64, OrderId),
    how: Amend,
) {
    let (op, shown_as, command) = match how {
        Amend::Cancel => (
            "cancel",
            "cancelled",
            Command::Cancel(Cancel {
                account: AccountId(account),
                order_id,
            }),
        ),
        Amend::Replace { price, qty } => (
            "replace",
            "replaced",
            Command::CancelReplace(CancelReplace {
                account: AccountId(account),
                order_id,
                price,
                qty,
            }),
        ),
    };
    let invoked = history.invoke(process, op, account, order_id.0);
    match client.submit(command).await {
        Ok(outputs) => {
            let took_effect = outputs.iter().any(|o| match o.event {
                Event::Cancelled { order_id: id, .. } => op == "cancel" && id == order_id,
                Event::Replaced { order_id: id, .. } => op == "replace" && id == order_id,
                _ => false,
            });
            let mut value = serde_json::Map::new();
            value.insert(shown_as.into(), took_effect.into());
            value.insert(
                "seq".into(),
                serde_json::json!(outputs.first().map(|o| o.seq)),
            );
            history.complete(&invoked, "ok", serde_json::Value::Object(value));
        }
        Err(e) => history.complete(&invoked, outcome(&e), serde_json::json!(e.to_string())),
    }
}

/// A broker sending orders (most of them resting, some crossing) and cancels until `stop`.
pub async fn broker(
    process: u32,
    mut client: Client,
    accounts: Vec<u64>,
    history: History,
    stop: Arc<AtomicBool>,
) {
    let mut rng = SmallRng::seed_from_u64(process as u64);
    let mut next_client_order_id = 0u64;
    let mut resting: Vec<(u64, OrderId)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let account = accounts[rng.gen_range(0..accounts.len())];
        let roll = rng.gen_range(0..100);
        if (25..35).contains(&roll) && !resting.is_empty() {
            let resting_order = resting[rng.gen_range(0..resting.len())];
            let price = Price(rng.gen_range(990..=1010));
            let qty = Qty(rng.gen_range(1..=10));
            let how = Amend::Replace { price, qty };
            amend(&mut client, &history, process, resting_order, how).await;
            continue;
        }
        if roll < 25 && !resting.is_empty() {
            let resting_order = resting.swap_remove(rng.gen_range(0..resting.len()));
            amend(&mut client, &history, process, resting_order, Amend::Cancel).await;
            continue;
        }
        next_client_order_id += 1;
        let side = if rng.gen_bool(0.5) {
            Side::Buy
        } else {
            Side::Sell
        };
        let price = rng.gen_range(990..=1010);
        let qty = rng.gen_range(1..=10);
        let invoked = history.invoke(process, "order", account, next_client_order_id);
        let order = Command::NewOrder(NewOrder {
            account: AccountId(account),
            symbol: SYMBOL,
            client_order_id: ClientOrderId(next_client_order_id),
            side,
            order_type: OrderType::Limit,
            time_in_force: TimeInForce::Gtc,
            price: Price(price),
            qty: Qty(qty),
            self_trade_prevention: SelfTradePrevention::None,
        });
        match client.submit(order).await {
            Ok(outputs) => {
                let order_id = first_accepted(&outputs);
                let reason = outputs.iter().find_map(|o| o.event.reject_reason());
                if let Some(order_id) = order_id {
                    resting.push((account, order_id));
                    if resting.len() > 256 {
                        resting.remove(0);
                    }
                }
                history.complete(
                    &invoked,
                    "ok",
                    serde_json::json!({
                        "order_id": order_id.map(|o| o.0),
                        "rejected": reason.map(|r| format!("{r:?}")),
                    }),
                );
            }
            Err(e) => history.complete(&invoked, outcome(&e), serde_json::json!(e.to_string())),
        }
    }
}

/// The operator moving funds in and out of the brokers' accounts until `stop`. Admin commands
/// have no exactly-once id, so an unknown outcome is not resent (it stays `info`).
pub async fn treasurer(process: u32, mut admin: Client, history: History, stop: Arc<AtomicBool>) {
    let mut rng = SmallRng::seed_from_u64(1_000 + process as u64);
    let accounts: Vec<u64> = brokers().into_iter().flat_map(|b| b.accounts).collect();
    while !stop.load(Ordering::Relaxed) {
        let account = accounts[rng.gen_range(0..accounts.len())];
        let asset = if rng.gen_bool(0.5) { BASE } else { QUOTE };
        // Mostly deposits: balances grow, so withdrawals rarely lack funds.
        let withdraw = rng.gen_range(0..100) < 30;
        let amount = rng.gen_range(1..=1_000) * if asset == QUOTE { 1_000 } else { 1 };
        let f = if withdraw { "withdraw" } else { "deposit" };
        let invoked = history.invoke(process, f, account, amount as u64);
        let command = if withdraw {
            AdminCommand::Withdraw {
                account: AccountId(account),
                asset,
                amount: Amount(amount),
            }
        } else {
            AdminCommand::Deposit {
                account: AccountId(account),
                asset,
                amount: Amount(amount),
            }
        };
        match admin.submit(Command::Admin(command)).await {
            Ok(outputs) => {
                let changed = outputs.iter().find_map(|o| match o.event {
                    Event::BalanceChanged { delta, .. } => Some((o.seq, delta.0)),
                    _ => None,
                });
                history.complete(
                    &invoked,
                    "ok",
                    serde_json::json!({
                        "seq": changed.map(|c| c.0),
                        "delta": changed.map(|c| c.1),
                        "asset": asset.0,
                    }),
                );
            }
            Err(e) => history.complete(&invoked, outcome(&e), serde_json::json!(e.to_string())),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A clerk depositing into, withdrawing from and reading the ledger accounts until `stop`,
/// concurrently with the other clerks. Every amount is unique in the run (clerk `index` uses
/// amounts congruent to it), so the checker can tell from the desk's reports whether an
/// operation with an unknown outcome took effect. Withdrawals are as likely as deposits, so
/// some find too little money and are refused: an observation of the balance too.
pub async fn ledger_clerk(index: u32, mut admin: Client, history: History, stop: Arc<AtomicBool>) {
    let process = 200 + index;
    let mut rng = SmallRng::seed_from_u64(2_000 + index as u64);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let account = LEDGER_ACCOUNTS[rng.gen_range(0..LEDGER_ACCOUNTS.len())];
        let roll = rng.gen_range(0..100);
        if roll < 30 {
            let invoked = history.invoke(process, "read", account, 0);
            match admin.balances(account, vec![QUOTE.0]).await {
                Ok(balances) => {
                    let available = balances.iter().find(|b| b.0 == QUOTE.0).map_or(0, |b| b.1);
                    history.complete(
                        &invoked,
                        "ok",
                        serde_json::json!({ "available": available }),
                    );
                }
                Err(e) => history.complete(&invoked, "fail", serde_json::json!(e.to_string())),
            }
        } else {
            n += 1;
            let amount = 1_000 + (n * LEDGER_CLERKS as u64 + index as u64) as i64;
            let withdraw = roll >= 65;
            let f = if withdraw { "withdraw" } else { "deposit" };
            let invoked = history.invoke(process, f, account, amount as u64);
            let (account_id, asset, amount) = (AccountId(account), QUOTE, Amount(amount));
            let command = if withdraw {
                AdminCommand::Withdraw {
                    account: account_id,
                    asset,
                    amount,
                }
            } else {
                AdminCommand::Deposit {
                    account: account_id,
                    asset,
                    amount,
                }
            };
            match admin.submit(Command::Admin(command)).await {
                Ok(outputs) => {
                    let changed = outputs.iter().find_map(|o| match o.event {
                        Event::BalanceChanged {
                            delta, available, ..
                        } => Some((o.seq, delta.0, available.0)),
                        _ => None,
                    });
                    let rejected = outputs.iter().find_map(|o| o.event.reject_reason());
                    history.complete(
                        &invoked,
                        "ok",
                        serde_json::json!({
                            "seq": changed.map(|c| c.0),
                            "delta": changed.map(|c| c.1),
                            "available": changed.map(|c| c.2),
                            "asset": asset.0,
                            "rejected": rejected.map(|r| format!("{r:?}")),
                        }),
                    );
                }
                Err(e) => history.complete(&invoked, outcome(&e), serde_json::json!(e.to_string())),
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
