//! The application layer: FIX order messages into the engine's commands, and the engine's
//! outputs about a broker's orders into ExecutionReports, OrderCancelRejects and
//! OrderMassCancelReports.
//!
//! The engine's events carry integers and ids; a FIX report needs more (the order's quantity,
//! what is filled, its average price, the ClOrdID of the cancel that ended it). The
//! [`OrderView`] keeps that for each live order, built from the same outputs in the same
//! order; the [`Requests`] remember what this session asked for until the engine answers.

use std::collections::HashMap;

use exchange_client::catalog::Catalog;
use exchange_client::protocol::InstrumentInfo;
use exchange_domain::{
    format_decimal, parse_decimal, AccountId, CancelReason, ClientOrderId, Command, Event,
    NewOrder, OrderId, OrderType, Output, Price, Qty, RejectReason, SelfTradePrevention, Side,
    SymbolId, TimeInForce,
};

use super::clordid::{to_client_order_id, to_text};
use super::codec::{tag, BadField, Builder, Message};

/// Requests awaiting the engine's answer that one session may hold; past it, a request is
/// refused at once (the native session's in-flight bound is the same).
pub const REQUESTS_PENDING_MAX: usize = 65_536;

/// What a FIX message became.
pub enum Translated {
    /// Commands for the engine (one, or a mass cancel's one per account).
    Commands(Vec<Command>),
    /// Answered without the engine: the reply to send.
    Answer(Builder),
}

/// A problem with a field the session layer answers with Reject(3).
pub type FieldProblem = BadField;

/// A new order this session sent, until the engine accepts or refuses it.
#[derive(Clone, Debug)]
struct NewRequest {
    cl_ord_id: String,
    account: AccountId,
    symbol: SymbolId,
    side: Side,
    order_type: OrderType,
    qty: Qty,
    /// Sent again with PossResend after a reconnect: a duplicate is the order's status, not a
    /// refusal.
    poss_resend: bool,
}

/// A cancel or replace this session sent, until the engine answers it.
#[derive(Clone, Debug)]
struct AmendRequest {
    cl_ord_id: String,
    orig_cl_ord_id: String,
    /// The replace's new ClOrdID takes over the order; a cancel's ends it.
    replace: bool,
}

/// A mass cancel, until every account it covers has answered.
#[derive(Clone, Debug)]
struct MassRequest {
    cl_ord_id: String,
    request_type: char,
    symbol: Option<String>,
    accounts_left: usize,
    cancelled: u64,
    rejected: Option<RejectReason>,
    seq: u64,
}

/// What this session asked for and the engine has not answered yet.
#[derive(Default)]
pub struct Requests {
    new: HashMap<(AccountId, ClientOrderId), NewRequest>,
    amend: HashMap<OrderId, AmendRequest>,
    mass: HashMap<AccountId, u64>,
    masses: HashMap<u64, MassRequest>,
    mass_ids: u64,
}

impl Requests {
    fn len(&self) -> usize {
        self.new.len() + self.amend.len() + self.masses.len()
    }

    /// Forgets what a refused request would have been answered with.
    pub fn forget(&mut self, commands: &[Command]) {
        for command in commands {
            match command {
                Command::NewOrder(order) => {
                    self.new.remove(&(order.account, order.client_order_id));
                }
                Command::Cancel(c) => {
                    self.amend.remove(&c.order_id);
                }
                Command::CancelReplace(r) => {
                    self.amend.remove(&r.order_id);
                }
                Command::MassCancel(m) => {
                    if let Some(id) = self.mass.remove(&m.account) {
                        self.masses.remove(&id);
                    }
                }
                Command::Admin(_) => {}
            }
        }
    }
}

/// A live order as FIX reports it.
#[derive(Clone, Debug)]
struct OrderState {
    account: AccountId,
    symbol: SymbolId,
    side: Side,
    order_type: OrderType,
    time_in_force: TimeInForce,
    price: Price,
    /// OrderQty: what is filled plus what is open.
    order_qty: i64,
    cum_qty: i64,
    /// Sum of price times quantity of the fills, for AvgPx.
    notional: i128,
    /// The ClOrdID that names the order now (a replace's, after a replace).
    cl_ord_id: String,
}

/// The broker's live orders, from the engine's outputs.
#[derive(Default)]
pub struct OrderView {
    orders: HashMap<OrderId, OrderState>,
    by_cl_ord_id: HashMap<(AccountId, String), OrderId>,
}

impl OrderView {
    fn insert(&mut self, order_id: OrderId, state: OrderState) {
        self.by_cl_ord_id
            .insert((state.account, state.cl_ord_id.clone()), order_id);
        self.orders.insert(order_id, state);
    }

    fn remove(&mut self, order_id: OrderId) -> Option<OrderState> {
        let state = self.orders.remove(&order_id)?;
        self.by_cl_ord_id
            .remove(&(state.account, state.cl_ord_id.clone()));
        Some(state)
    }

    /// The live order a ClOrdID names, for `account` (or any account of the broker).
    fn find(&self, account: Option<AccountId>, cl_ord_id: &str) -> Option<OrderId> {
        match account {
            Some(account) => self
                .by_cl_ord_id
                .get(&(account, cl_ord_id.to_string()))
                .copied(),
            None => self
                .by_cl_ord_id
                .iter()
                .find(|((_, id), _)| id == cl_ord_id)
                .map(|(_, &order)| order),
        }
    }

    /// Accounts with live orders, in order.
    fn accounts(&self) -> Vec<AccountId> {
        let mut accounts: Vec<AccountId> = self.orders.values().map(|o| o.account).collect();
        accounts.sort_unstable();
        accounts.dedup();
        accounts
    }

    pub fn live_orders(&self) -> usize {
        self.orders.len()
    }
}

/// The session's application state: its orders and its requests in flight.
#[derive(Default)]
pub struct Application {
    pub view: OrderView,
    pub requests: Requests,
}

fn side_of(text: &str) -> Option<Side> {
    match text {
        "1" => Some(Side::Buy),
        "2" => Some(Side::Sell),
        _ => None,
    }
}

fn side_code(side: Side) -> &'static str {
    match side {
        Side::Buy => "1",
        Side::Sell => "2",
    }
}

fn ord_type_code(order_type: OrderType) -> &'static str {
    match order_type {
        OrderType::Market => "1",
        OrderType::Limit => "2",
    }
}

fn tif_code(tif: TimeInForce) -> &'static str {
    match tif {
        TimeInForce::Gtc | TimeInForce::PostOnly => "1",
        TimeInForce::Ioc => "3",
        TimeInForce::Fok => "4",
    }
}

/// A price the broker wrote, on the instrument's scale and tick (the engine checks the tick
/// again; this only refuses what cannot be an integer price at all).
fn price_of(text: &str, instrument: &InstrumentInfo) -> Result<Price, String> {
    parse_decimal(text, instrument.price_decimals)
        .map(Price)
        .map_err(|e| format!("Price(44) {text:?}: {e}"))
}

/// A quantity in base units: a whole number ("100" or "100.0").
fn qty_of(text: &str) -> Result<Qty, String> {
    match parse_decimal(text, 0) {
        Ok(q) if q > 0 => Ok(Qty(q)),
        Ok(_) => Err(format!("OrderQty(38) {text:?} is not above zero")),
        Err(e) => Err(format!(
            "OrderQty(38) {text:?} is not a whole number of base units: {e}"
        )),
    }
}

fn account_of(message: &Message) -> Result<Option<AccountId>, BadField> {
    Ok(message.get_u64(tag::ACCOUNT)?.map(AccountId))
}

/// The decimal form of an integer price.
fn px(price: i64, instrument: Option<&InstrumentInfo>) -> String {
    format_decimal(price, instrument.map_or(0, |i| i.price_decimals))
}

impl Application {
    /// Translates NewOrderSingle(D).
    pub fn new_order(
        &mut self,
        message: &Message,
        catalog: &Catalog,
        poss_resend: bool,
    ) -> Result<Translated, FieldProblem> {
        let cl_ord_id = message.require(tag::CL_ORD_ID)?.to_string();
        let side = side_of(message.require(tag::SIDE)?).ok_or(BadField::Value(tag::SIDE))?;
        let symbol_name = message.require(tag::SYMBOL)?;
        let qty_text = message.require(tag::ORDER_QTY)?;
        let ord_type = message.require(tag::ORD_TYPE)?;
        let account = account_of(message)?;
        let reject = |text: String, reason: u32| {
            Translated::Answer(
                Builder::new("8")
                    .field(tag::ORDER_ID, "NONE")
                    .field(tag::CL_ORD_ID, &cl_ord_id)
                    .field(tag::EXEC_ID, format!("R-{cl_ord_id}"))
                    .field(tag::EXEC_TYPE, "8")
                    .field(tag::ORD_STATUS, "8")
                    .field(tag::SYMBOL, symbol_name)
                    .field(tag::SIDE, side_code(side))
                    .field(tag::LEAVES_QTY, 0)
                    .field(tag::CUM_QTY, 0)
                    .field(tag::AVG_PX, 0)
                    .field(tag::ORD_REJ_REASON, reason)
                    .field(tag::TEXT, text),
            )
        };
        let Some(account) = account else {
            return Ok(reject(
                "Account(1) is required: the account the order is for".into(),
                99,
            ));
        };
        let client_order_id = match to_client_order_id(&cl_ord_id) {
            Ok(id) => id,
            Err(why) => return Ok(reject(why.0, 99)),
        };
        let Some(instrument) = catalog.symbols.iter().find(|s| s.name == symbol_name) else {
            return Ok(reject(format!("unknown symbol {symbol_name:?}"), 1));
        };
        let qty = match qty_of(qty_text) {
            Ok(q) => q,
            Err(why) => return Ok(reject(why, 13)),
        };
        let order_type = match ord_type {
            "1" => OrderType::Market,
            "2" => OrderType::Limit,
            other => {
                return Ok(reject(
                    format!("OrdType(40) {other:?} is not supported: 1 (market) or 2 (limit)"),
                    99,
                ))
            }
        };
        let mut time_in_force = match (message.get(tag::TIME_IN_FORCE), order_type) {
            // A market order never rests: its remainder is cancelled.
            (None | Some("0"), OrderType::Market) => TimeInForce::Ioc,
            // The exchange has no trading day's end yet: a Day order rests until cancelled.
            (None | Some("0") | Some("1"), _) => TimeInForce::Gtc,
            (Some("3"), _) => TimeInForce::Ioc,
            (Some("4"), _) => TimeInForce::Fok,
            (Some(other), _) => {
                return Ok(reject(
                    format!(
                        "TimeInForce(59) {other:?} is not supported: 0 (day), 1 (GTC), 3 (IOC) \
                         or 4 (FOK)"
                    ),
                    99,
                ))
            }
        };
        if message
            .get(tag::EXEC_INST)
            .is_some_and(|inst| inst.split(' ').any(|i| i == "6"))
        {
            if time_in_force != TimeInForce::Gtc || order_type != OrderType::Limit {
                return Ok(reject(
                    "ExecInst(18) 6 (post only) needs a limit order that rests (day or GTC)".into(),
                    99,
                ));
            }
            time_in_force = TimeInForce::PostOnly;
        }
        let self_trade_prevention = match message.get(tag::SELF_TRADE_PREVENTION) {
            None => SelfTradePrevention::None,
            Some("N") => SelfTradePrevention::CancelNewest,
            Some("O") => SelfTradePrevention::CancelOldest,
            Some("B") => SelfTradePrevention::CancelBoth,
            Some(other) => {
                return Ok(reject(
                    format!(
                        "SelfTradePrevention(7928) {other:?} is not supported: N (cancel the \
                         incoming order), O (the resting one) or B (both)"
                    ),
                    99,
                ))
            }
        };
        let price = match (message.get(tag::PRICE), order_type) {
            (Some(text), _) => match price_of(text, instrument) {
                Ok(p) => p,
                Err(why) => return Ok(reject(why, 99)),
            },
            (None, OrderType::Limit) => return Err(BadField::Missing(tag::PRICE)),
            (None, OrderType::Market) => {
                return Ok(reject(
                    "a market order needs Price(44): its protection price, the worst price it \
                     may trade at"
                        .into(),
                    99,
                ))
            }
        };
        if self.requests.len() >= REQUESTS_PENDING_MAX {
            return Ok(reject(
                "too many requests of this session await an answer".into(),
                99,
            ));
        }
        self.requests.new.insert(
            (account, client_order_id),
            NewRequest {
                cl_ord_id,
                account,
                symbol: SymbolId(instrument.symbol),
                side,
                order_type,
                qty,
                poss_resend,
            },
        );
        Ok(Translated::Commands(vec![Command::NewOrder(NewOrder {
            account,
            symbol: SymbolId(instrument.symbol),
            client_order_id,
            side,
            order_type,
            time_in_force,
            price,
            qty,
            self_trade_prevention,
        })]))
    }

    /// Translates OrderCancelRequest(F) and OrderCancelReplaceRequest(G).
    pub fn amend(
        &mut self,
        message: &Message,
        catalog: &Catalog,
        replace: bool,
    ) -> Result<Translated, FieldProblem> {
        let cl_ord_id = message.require(tag::CL_ORD_ID)?.to_string();
        let orig_cl_ord_id = message.require(tag::ORIG_CL_ORD_ID)?.to_string();
        let account = account_of(message)?;
        let order_id = match message.get_u64(tag::ORDER_ID) {
            Ok(Some(id)) => Some(OrderId(id)),
            _ => self.view.find(account, &orig_cl_ord_id),
        };
        let cancel_reject = |text: String, reason: u32, order_id: Option<OrderId>| {
            Translated::Answer(
                Builder::new("9")
                    .field(
                        tag::ORDER_ID,
                        order_id.map_or("NONE".to_string(), |o| o.0.to_string()),
                    )
                    .field(tag::CL_ORD_ID, &cl_ord_id)
                    .field(tag::ORIG_CL_ORD_ID, &orig_cl_ord_id)
                    .field(tag::ORD_STATUS, "8")
                    .field(tag::CXL_REJ_RESPONSE_TO, if replace { "2" } else { "1" })
                    .field(tag::CXL_REJ_REASON, reason)
                    .field(tag::TEXT, text),
            )
        };
        let Some(order_id) = order_id else {
            return Ok(cancel_reject(
                format!("no live order of this broker has ClOrdID {orig_cl_ord_id:?}"),
                1,
                None,
            ));
        };
        let Some(state) = self.view.orders.get(&order_id) else {
            return Ok(cancel_reject(
                format!("order {} is not live", order_id.0),
                1,
                Some(order_id),
            ));
        };
        if self.requests.amend.contains_key(&order_id) {
            return Ok(cancel_reject(
                "a cancel or replace of this order is already pending".into(),
                3,
                Some(order_id),
            ));
        }
        let command = if replace {
            let instrument = catalog.symbol(state.symbol.0);
            let price = match (message.get(tag::PRICE), instrument) {
                (Some(text), Some(instrument)) => match price_of(text, instrument) {
                    Ok(p) => p,
                    Err(why) => return Ok(cancel_reject(why, 99, Some(order_id))),
                },
                (None, _) => state.price,
                (Some(_), None) => {
                    return Ok(cancel_reject(
                        "the order's symbol is not known to this node yet".into(),
                        99,
                        Some(order_id),
                    ))
                }
            };
            let order_qty = match qty_of(message.require(tag::ORDER_QTY)?) {
                Ok(q) => q.0,
                Err(why) => return Ok(cancel_reject(why, 99, Some(order_id))),
            };
            let leaves = order_qty - state.cum_qty;
            if leaves <= 0 {
                return Ok(cancel_reject(
                    format!(
                        "OrderQty(38) {order_qty} is not above what is filled ({})",
                        state.cum_qty
                    ),
                    99,
                    Some(order_id),
                ));
            }
            Command::CancelReplace(exchange_domain::CancelReplace {
                account: state.account,
                order_id,
                price,
                qty: Qty(leaves),
            })
        } else {
            Command::Cancel(exchange_domain::Cancel {
                account: state.account,
                order_id,
            })
        };
        if self.requests.len() >= REQUESTS_PENDING_MAX {
            return Ok(cancel_reject(
                "too many requests of this session await an answer".into(),
                99,
                Some(order_id),
            ));
        }
        self.requests.amend.insert(
            order_id,
            AmendRequest {
                cl_ord_id,
                orig_cl_ord_id,
                replace,
            },
        );
        Ok(Translated::Commands(vec![command]))
    }

    /// Translates OrderMassCancelRequest(q): by symbol (530=1) or everything (530=7), for
    /// Account(1) or, without it, for every account with a live order.
    /// The answer to a cancel, replace or mass cancel sent again after a change of leader
    /// from where the old leader may have taken it: the exchange cannot tell whether it took
    /// effect (these have no exactly-once key, as a new order's ClOrdID is), so it does not run
    /// it a second time; the broker asks the orders' status and sends a new request if needed.
    pub fn resent_across_failover(message: &Message, seq: u64) -> Result<Builder, FieldProblem> {
        let cl_ord_id = message.require(tag::CL_ORD_ID)?;
        let text = "sent again after a change of leader, and it may have taken effect before: \
                    not run a second time; ask the orders' status (OrderStatusRequest) and send \
                    a new request if it is still wanted";
        if message.msg_type() == "q" {
            return Ok(Builder::new("r")
                .field(tag::CL_ORD_ID, cl_ord_id)
                .field(tag::ORDER_ID, format!("M{seq}"))
                .field(
                    tag::MASS_CANCEL_REQUEST_TYPE,
                    message.require(tag::MASS_CANCEL_REQUEST_TYPE)?,
                )
                .field(tag::MASS_CANCEL_RESPONSE, "0")
                .field(tag::MASS_CANCEL_REJECT_REASON, 99)
                .field(tag::TEXT, text)
                .field(tag::TOTAL_AFFECTED_ORDERS, 0));
        }
        Ok(Builder::new("9")
            .field(tag::ORDER_ID, message.get(tag::ORDER_ID).unwrap_or("NONE"))
            .field(tag::CL_ORD_ID, cl_ord_id)
            .field(tag::ORIG_CL_ORD_ID, message.require(tag::ORIG_CL_ORD_ID)?)
            .field(tag::ORD_STATUS, "8")
            .field(
                tag::CXL_REJ_RESPONSE_TO,
                if message.msg_type() == "G" { "2" } else { "1" },
            )
            .field(tag::CXL_REJ_REASON, 99)
            .field(tag::TEXT, text))
    }

    pub fn mass_cancel(
        &mut self,
        message: &Message,
        catalog: &Catalog,
        seq: u64,
    ) -> Result<Translated, FieldProblem> {
        let cl_ord_id = message.require(tag::CL_ORD_ID)?.to_string();
        let request_type = message.require(tag::MASS_CANCEL_REQUEST_TYPE)?;
        let symbol_name = message.get(tag::SYMBOL);
        let account = account_of(message)?;
        let report = |response: &str, reject: Option<(u32, String)>, affected: u64| {
            let mut b = Builder::new("r")
                .field(tag::CL_ORD_ID, &cl_ord_id)
                .field(tag::ORDER_ID, format!("M{seq}"))
                .field(tag::MASS_CANCEL_REQUEST_TYPE, request_type)
                .field(tag::MASS_CANCEL_RESPONSE, response);
            if let Some((reason, text)) = reject {
                b.push(tag::MASS_CANCEL_REJECT_REASON, reason);
                b.push(tag::TEXT, text);
            }
            b.push(tag::TOTAL_AFFECTED_ORDERS, affected);
            if let Some(symbol) = symbol_name {
                b.push(tag::SYMBOL, symbol);
            }
            Translated::Answer(b)
        };
        let symbol = match (request_type, symbol_name) {
            ("7", _) => None,
            ("1", Some(name)) => match catalog.symbols.iter().find(|s| s.name == name) {
                Some(instrument) => Some(SymbolId(instrument.symbol)),
                None => {
                    return Ok(report(
                        "0",
                        Some((1, format!("unknown symbol {name:?}"))),
                        0,
                    ))
                }
            },
            ("1", None) => return Err(BadField::Missing(tag::SYMBOL)),
            (other, _) => {
                return Ok(report(
                    "0",
                    Some((
                        99,
                        format!(
                            "MassCancelRequestType(530) {other:?} is not supported: 1 (by \
                             symbol) or 7 (all orders)"
                        ),
                    )),
                    0,
                ))
            }
        };
        let accounts = match account {
            Some(account) => vec![account],
            None => self.view.accounts(),
        };
        if accounts.is_empty() {
            return Ok(report(request_type, None, 0));
        }
        if accounts.iter().any(|a| self.requests.mass.contains_key(a)) {
            return Ok(report(
                "0",
                Some((
                    99,
                    "a mass cancel of this account is already pending".into(),
                )),
                0,
            ));
        }
        self.requests.mass_ids += 1;
        let id = self.requests.mass_ids;
        for &account in &accounts {
            self.requests.mass.insert(account, id);
        }
        self.requests.masses.insert(
            id,
            MassRequest {
                cl_ord_id,
                request_type: request_type.chars().next().unwrap_or('7'),
                symbol: symbol_name.map(str::to_string),
                accounts_left: accounts.len(),
                cancelled: 0,
                rejected: None,
                seq,
            },
        );
        Ok(Translated::Commands(
            accounts
                .into_iter()
                .map(|account| Command::MassCancel(exchange_domain::MassCancel { account, symbol }))
                .collect(),
        ))
    }

    /// Answers OrderStatusRequest(H) from the view.
    pub fn order_status(
        &self,
        message: &Message,
        catalog: &Catalog,
    ) -> Result<Builder, FieldProblem> {
        let cl_ord_id = message.require(tag::CL_ORD_ID)?;
        let side = side_of(message.require(tag::SIDE)?).ok_or(BadField::Value(tag::SIDE))?;
        let symbol = message.require(tag::SYMBOL)?;
        let account = account_of(message)?;
        let exec_id = format!("S-{cl_ord_id}");
        Ok(match self.view.find(account, cl_ord_id) {
            Some(order_id) => {
                let state = &self.view.orders[&order_id];
                report(order_id, state, catalog, "I", &exec_id)
            }
            None => Builder::new("8")
                .field(tag::ORDER_ID, "NONE")
                .field(tag::CL_ORD_ID, cl_ord_id)
                .field(tag::EXEC_ID, exec_id)
                .field(tag::EXEC_TYPE, "I")
                .field(tag::ORD_STATUS, "8")
                .field(tag::SYMBOL, symbol)
                .field(tag::SIDE, side_code(side))
                .field(tag::LEAVES_QTY, 0)
                .field(tag::CUM_QTY, 0)
                .field(tag::AVG_PX, 0)
                .field(
                    tag::TEXT,
                    "no live order of this broker has this ClOrdID (it may have ended)",
                ),
        })
    }

    /// The reports of one output about the broker's orders (most give one; an output of an
    /// order this session knows nothing of may give none). `exec_id` is unique to the output.
    pub fn on_output(&mut self, output: &Output, catalog: &Catalog, exec_id: &str) -> Vec<Builder> {
        let mut out = Vec::new();
        match output.event {
            Event::Accepted {
                order_id,
                account,
                symbol,
                client_order_id,
                side,
                order_type,
                time_in_force,
                price,
                qty,
            } => {
                let request = self.requests.new.remove(&(account, client_order_id));
                let state = OrderState {
                    account,
                    symbol,
                    side,
                    order_type,
                    time_in_force,
                    price,
                    order_qty: qty.0,
                    cum_qty: 0,
                    notional: 0,
                    cl_ord_id: request
                        .map(|r| r.cl_ord_id)
                        .unwrap_or_else(|| to_text(client_order_id)),
                };
                let mut b = report(order_id, &state, catalog, "0", exec_id);
                b.push(
                    tag::TRANSACT_TIME,
                    super::codec::utc_timestamp_ns(output.timestamp_ns),
                );
                out.push(b);
                self.view.insert(order_id, state);
            }
            Event::Rejected {
                account,
                client_order_id,
                reason,
                ..
            } => {
                if let Some(request) = self.requests.new.remove(&(account, client_order_id)) {
                    out.push(rejected(&request, catalog, reason, exec_id));
                }
            }
            Event::DuplicateOrder {
                account,
                client_order_id,
                order_id,
                rejected: original,
            } => {
                let Some(request) = self.requests.new.remove(&(account, client_order_id)) else {
                    return out;
                };
                match (
                    request.poss_resend,
                    self.view.orders.get(&order_id),
                    original,
                ) {
                    // A resend of an order already entered: its status, not a second order.
                    (true, Some(state), None) => {
                        let mut b = report(order_id, state, catalog, "I", exec_id);
                        b.push(
                            tag::TEXT,
                            "PossResend: the order was entered before; its status",
                        );
                        out.push(b);
                    }
                    (true, _, Some(reason)) => {
                        out.push(rejected(&request, catalog, reason, exec_id))
                    }
                    (true, None, None) => {
                        let mut b = ended_report(&request, order_id, catalog, exec_id);
                        b.push(
                            tag::TEXT,
                            "PossResend: the order was entered before and has ended",
                        );
                        out.push(b);
                    }
                    (false, _, _) => {
                        out.push(rejected_with(&request, catalog, exec_id, 6, format!(
                            "duplicate ClOrdID {:?}: an order with it was entered before (order {})",
                            request.cl_ord_id, order_id.0
                        )));
                    }
                }
            }
            Event::Execution {
                order_id,
                price,
                qty,
                leaves_qty,
                ..
            } => {
                let Some(state) = self.view.orders.get_mut(&order_id) else {
                    return out;
                };
                state.cum_qty += qty.0;
                state.notional += i128::from(price.0) * i128::from(qty.0);
                state.order_qty = state.cum_qty + leaves_qty.0;
                let state = state.clone();
                let instrument = catalog.symbol(state.symbol.0);
                let mut b = report(order_id, &state, catalog, "F", exec_id);
                b.push(tag::LAST_PX, px(price.0, instrument));
                b.push(tag::LAST_QTY, qty.0);
                b.push(
                    tag::TRANSACT_TIME,
                    super::codec::utc_timestamp_ns(output.timestamp_ns),
                );
                out.push(b);
                if leaves_qty.0 == 0 {
                    self.view.remove(order_id);
                }
            }
            Event::Cancelled {
                order_id, reason, ..
            } => {
                let Some(mut state) = self.view.remove(order_id) else {
                    return out;
                };
                state.order_qty = state.cum_qty; // nothing open any more
                let amend = self.requests.amend.remove(&order_id);
                let mut b = report_with_leaves(order_id, &state, catalog, "4", exec_id, 0, "4");
                match (&amend, reason) {
                    (Some(a), CancelReason::Requested) if !a.replace => {
                        b.push(tag::CL_ORD_ID, &a.cl_ord_id);
                        b.push(tag::ORIG_CL_ORD_ID, &a.orig_cl_ord_id);
                    }
                    _ => b.push(tag::CL_ORD_ID, &state.cl_ord_id),
                }
                b.push(tag::TEXT, cancel_text(reason));
                out.push(b);
                // A replace answered by a cancel (the order left the book meanwhile) still
                // wants its reject.
                if let Some(a) = amend.filter(|a| a.replace) {
                    self.requests.amend.insert(order_id, a);
                }
            }
            Event::Replaced {
                order_id,
                price,
                qty,
                ..
            } => {
                let amend = self.requests.amend.remove(&order_id);
                let Some(mut state) = self.view.remove(order_id) else {
                    return out;
                };
                state.price = price;
                state.order_qty = state.cum_qty + qty.0;
                let orig = state.cl_ord_id.clone();
                if let Some(a) = &amend {
                    state.cl_ord_id = a.cl_ord_id.clone();
                }
                let mut b = report(order_id, &state, catalog, "5", exec_id);
                b.push(tag::ORIG_CL_ORD_ID, orig);
                out.push(b);
                self.view.insert(order_id, state);
            }
            Event::CancelRejected {
                order_id, reason, ..
            }
            | Event::ReplaceRejected {
                order_id, reason, ..
            } => {
                let replace = matches!(output.event, Event::ReplaceRejected { .. });
                let Some(amend) = self.requests.amend.remove(&order_id) else {
                    return out;
                };
                let status = self.view.orders.get(&order_id).map_or("4", ord_status);
                out.push(
                    Builder::new("9")
                        .field(tag::ORDER_ID, order_id.0)
                        .field(tag::CL_ORD_ID, &amend.cl_ord_id)
                        .field(tag::ORIG_CL_ORD_ID, &amend.orig_cl_ord_id)
                        .field(tag::ORD_STATUS, status)
                        .field(tag::CXL_REJ_RESPONSE_TO, if replace { "2" } else { "1" })
                        .field(
                            tag::CXL_REJ_REASON,
                            if reason == RejectReason::UnknownOrder {
                                1
                            } else {
                                99
                            },
                        )
                        .field(tag::TEXT, reason_text(reason)),
                );
            }
            Event::MassCancelled { account, count, .. } => {
                out.extend(self.mass_answered(account, Some(count), None));
            }
            Event::MassCancelRejected { account, reason } => {
                out.extend(self.mass_answered(account, None, Some(reason)));
            }
            _ => {}
        }
        out
    }

    fn mass_answered(
        &mut self,
        account: AccountId,
        count: Option<u32>,
        rejected: Option<RejectReason>,
    ) -> Option<Builder> {
        let id = self.requests.mass.remove(&account)?;
        let mass = self.requests.masses.get_mut(&id)?;
        mass.accounts_left -= 1;
        mass.cancelled += u64::from(count.unwrap_or(0));
        mass.rejected = mass.rejected.or(rejected);
        if mass.accounts_left > 0 {
            return None;
        }
        let mass = self.requests.masses.remove(&id)?;
        let mut b = Builder::new("r")
            .field(tag::CL_ORD_ID, &mass.cl_ord_id)
            .field(tag::ORDER_ID, format!("M{}", mass.seq))
            .field(tag::MASS_CANCEL_REQUEST_TYPE, mass.request_type);
        match mass.rejected {
            Some(reason) => {
                b.push(tag::MASS_CANCEL_RESPONSE, "0");
                b.push(tag::MASS_CANCEL_REJECT_REASON, 99);
                b.push(tag::TEXT, reason_text(reason));
            }
            None => b.push(tag::MASS_CANCEL_RESPONSE, mass.request_type),
        }
        b.push(tag::TOTAL_AFFECTED_ORDERS, mass.cancelled);
        if let Some(symbol) = &mass.symbol {
            b.push(tag::SYMBOL, symbol);
        }
        Some(b)
    }

    /// The reports of outputs that never reach the broker's journal (a refusal for an account
    /// the broker may not act for, or one that does not exist): from the command's answer.
    pub fn on_answer_only(
        &mut self,
        output: &Output,
        catalog: &Catalog,
        exec_id: &str,
    ) -> Vec<Builder> {
        match output.event.reject_reason() {
            Some(RejectReason::NotPermitted | RejectReason::UnknownAccount) => {
                self.on_output(output, catalog, exec_id)
            }
            _ => Vec::new(),
        }
    }

    /// Requests of refused commands, answered without the engine (throttled, not sequenced).
    pub fn refused(
        &mut self,
        commands: &[Command],
        catalog: &Catalog,
        text: &str,
        exec_id_base: &str,
    ) -> Vec<Builder> {
        let mut out = Vec::new();
        for command in commands {
            match command {
                Command::NewOrder(order) => {
                    if let Some(request) = self
                        .requests
                        .new
                        .remove(&(order.account, order.client_order_id))
                    {
                        out.push(rejected_with(
                            &request,
                            catalog,
                            &format!("{exec_id_base}-{}", out.len()),
                            99,
                            text.to_string(),
                        ));
                    }
                }
                Command::Cancel(exchange_domain::Cancel { order_id, .. })
                | Command::CancelReplace(exchange_domain::CancelReplace { order_id, .. }) => {
                    if let Some(amend) = self.requests.amend.remove(order_id) {
                        let status = self.view.orders.get(order_id).map_or("4", ord_status);
                        out.push(
                            Builder::new("9")
                                .field(tag::ORDER_ID, order_id.0)
                                .field(tag::CL_ORD_ID, &amend.cl_ord_id)
                                .field(tag::ORIG_CL_ORD_ID, &amend.orig_cl_ord_id)
                                .field(tag::ORD_STATUS, status)
                                .field(
                                    tag::CXL_REJ_RESPONSE_TO,
                                    if amend.replace { "2" } else { "1" },
                                )
                                .field(tag::CXL_REJ_REASON, 99)
                                .field(tag::TEXT, text),
                        );
                    }
                }
                Command::MassCancel(m) => {
                    out.extend(
                        self.mass_answered(m.account, None, Some(RejectReason::NotPermitted))
                            .map(|mut b| {
                                b.push(tag::TEXT, text);
                                b
                            }),
                    );
                }
                Command::Admin(_) => {}
            }
        }
        out
    }
}

fn ord_status(state: &OrderState) -> &'static str {
    if state.cum_qty == 0 {
        "0"
    } else if state.cum_qty < state.order_qty {
        "1"
    } else {
        "2"
    }
}

fn report(
    order_id: OrderId,
    state: &OrderState,
    catalog: &Catalog,
    exec_type: &str,
    exec_id: &str,
) -> Builder {
    let leaves = state.order_qty - state.cum_qty;
    let mut b = report_with_leaves(
        order_id,
        state,
        catalog,
        exec_type,
        exec_id,
        leaves,
        ord_status(state),
    );
    if exec_type != "4" {
        b.push(tag::CL_ORD_ID, &state.cl_ord_id);
    }
    b
}

/// An ExecutionReport of a live order (ClOrdID added by the caller when it is not the order's).
fn report_with_leaves(
    order_id: OrderId,
    state: &OrderState,
    catalog: &Catalog,
    exec_type: &str,
    exec_id: &str,
    leaves: i64,
    status: &str,
) -> Builder {
    let instrument = catalog.symbol(state.symbol.0);
    let avg = if state.cum_qty > 0 {
        // AvgPx is a float on the wire: the exact average, to the instrument's decimals and two
        // more.
        let decimals = instrument.map_or(0, |i| i.price_decimals) + 2;
        let scaled = state.notional * 10i128.pow(2) / i128::from(state.cum_qty);
        format_decimal(scaled as i64, decimals)
    } else {
        "0".to_string()
    };
    let mut b = Builder::new("8")
        .field(tag::ORDER_ID, order_id.0)
        .field(tag::EXEC_ID, exec_id)
        .field(tag::EXEC_TYPE, exec_type)
        .field(tag::ORD_STATUS, status)
        .field(tag::ACCOUNT, state.account.0)
        .field(
            tag::SYMBOL,
            instrument.map_or_else(|| state.symbol.0.to_string(), |i| i.name.clone()),
        )
        .field(tag::SIDE, side_code(state.side))
        .field(tag::ORDER_QTY, state.order_qty)
        .field(tag::ORD_TYPE, ord_type_code(state.order_type))
        .field(tag::TIME_IN_FORCE, tif_code(state.time_in_force))
        .field(tag::LEAVES_QTY, leaves)
        .field(tag::CUM_QTY, state.cum_qty)
        .field(tag::AVG_PX, avg);
    if state.order_type == OrderType::Limit {
        b.push(tag::PRICE, px(state.price.0, instrument));
    }
    b
}

fn rejected(
    request: &NewRequest,
    catalog: &Catalog,
    reason: RejectReason,
    exec_id: &str,
) -> Builder {
    rejected_with(
        request,
        catalog,
        exec_id,
        ord_rej_reason(reason),
        reason_text(reason),
    )
}

fn rejected_with(
    request: &NewRequest,
    catalog: &Catalog,
    exec_id: &str,
    code: u32,
    text: String,
) -> Builder {
    let instrument = catalog.symbol(request.symbol.0);
    Builder::new("8")
        .field(tag::ORDER_ID, "NONE")
        .field(tag::CL_ORD_ID, &request.cl_ord_id)
        .field(tag::EXEC_ID, exec_id)
        .field(tag::EXEC_TYPE, "8")
        .field(tag::ORD_STATUS, "8")
        .field(tag::ACCOUNT, request.account.0)
        .field(
            tag::SYMBOL,
            instrument.map_or_else(|| request.symbol.0.to_string(), |i| i.name.clone()),
        )
        .field(tag::SIDE, side_code(request.side))
        .field(tag::ORDER_QTY, request.qty.0)
        .field(tag::ORD_TYPE, ord_type_code(request.order_type))
        .field(tag::LEAVES_QTY, 0)
        .field(tag::CUM_QTY, 0)
        .field(tag::AVG_PX, 0)
        .field(tag::ORD_REJ_REASON, code)
        .field(tag::TEXT, text)
}

/// The status of an order that was entered and has ended, which the view no longer holds.
fn ended_report(
    request: &NewRequest,
    order_id: OrderId,
    catalog: &Catalog,
    exec_id: &str,
) -> Builder {
    let instrument = catalog.symbol(request.symbol.0);
    Builder::new("8")
        .field(tag::ORDER_ID, order_id.0)
        .field(tag::CL_ORD_ID, &request.cl_ord_id)
        .field(tag::EXEC_ID, exec_id)
        .field(tag::EXEC_TYPE, "I")
        .field(tag::ORD_STATUS, "4")
        .field(tag::ACCOUNT, request.account.0)
        .field(
            tag::SYMBOL,
            instrument.map_or_else(|| request.symbol.0.to_string(), |i| i.name.clone()),
        )
        .field(tag::SIDE, side_code(request.side))
        .field(tag::ORDER_QTY, request.qty.0)
        .field(tag::LEAVES_QTY, 0)
        .field(tag::CUM_QTY, 0)
        .field(tag::AVG_PX, 0)
}

/// OrdRejReason(103) for an engine's refusal of a new order.
fn ord_rej_reason(reason: RejectReason) -> u32 {
    match reason {
        RejectReason::UnknownSymbol => 1,
        RejectReason::SymbolHalted => 2,
        RejectReason::MaxOrderQtyExceeded
        | RejectReason::MaxNotionalExceeded
        | RejectReason::MaxOpenOrdersExceeded
        | RejectReason::InsufficientFunds => 3,
        RejectReason::UnknownAccount => 15,
        RejectReason::InvalidQuantity | RejectReason::QtyOffLot => 13,
        RejectReason::PriceOffTick
        | RejectReason::InvalidPrice
        | RejectReason::PriceOutsideBand => 99,
        _ => 99,
    }
}

/// The engine's reason in words, with its stable name.
fn reason_text(reason: RejectReason) -> String {
    let name = serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{reason:?}"));
    format!("rejected: {name}")
}

fn cancel_text(reason: CancelReason) -> &'static str {
    match reason {
        CancelReason::Requested => "cancelled as requested",
        CancelReason::MassCancel => "cancelled by a mass cancel",
        CancelReason::Unfilled => "the remainder that could not trade at once was cancelled",
        CancelReason::FillOrKill => "fill or kill: could not be filled completely",
        CancelReason::SelfTrade => "cancelled by self-trade prevention",
    }
}

/// Outputs of one command, numbered for their ExecIDs: `seq.k`.
pub fn exec_id_of(output: &Output, k: usize) -> String {
    match output.event {
        Event::Execution { exec_id, .. } => exec_id.0.to_string(),
        _ => format!("{}.{k}", output.seq),
    }
}

/// The symbol an output about an order names, if any.
pub fn symbol_of(event: &Event) -> Option<SymbolId> {
    match *event {
        Event::Accepted { symbol, .. }
        | Event::Rejected { symbol, .. }
        | Event::Execution { symbol, .. }
        | Event::Cancelled { symbol, .. }
        | Event::Replaced { symbol, .. } => Some(symbol),
        _ => None,
    }
}
