//! Brokers: who may act for which account, and exactly-once new orders.
//!
//! Every command carries the broker that sent it (the gateway stamps it from the authenticated
//! session). A broker may act only for the accounts it owns; the operator may act for all and
//! alone may administer. Each broker's new orders are remembered by `client_order_id` in a
//! bounded window, so a resend (after a lost reply, or a failover) is answered with the
//! original outcome instead of being entered twice.
//!
//! The window: ids are expected to rise within a broker (not strictly, not densely). The
//! engine keeps the highest id seen and the last outcome per slot `id % window`. An id in its
//! slot is a duplicate; an id a whole window below the highest is too old to tell apart and is
//! refused (never executed twice); anything else is new. An id only leaves its slot when a
//! newer id, at least a window above it, takes the slot, and that same id then makes it stale.

use exchange_domain::{
    AccountId, BrokerId, Command, Event, Input, KeyDigest, NewOrder, OrderId, RejectReason,
};

use crate::engine::{Emitter, State};
use crate::limits::{BROKERS_MAX, CLIENT_ORDER_ID_WINDOW};
use crate::sink::EventSink;

/// One new order's outcome, as remembered for resends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Remembered {
    /// 0: the slot is empty.
    pub client_order_id: u64,
    /// The sequence number of the original command (the order id when it was accepted).
    pub order_id: u64,
    pub rejected: Option<RejectReason>,
}

#[derive(Clone, Debug)]
pub(crate) struct Broker {
    pub id: BrokerId,
    /// All zeros: no key (revoked).
    pub key_digest: KeyDigest,
    /// The highest client order id seen.
    pub high_water: u64,
    /// `CLIENT_ORDER_ID_WINDOW` slots, indexed by `client_order_id % window`.
    pub window: Box<[Remembered]>,
}

pub(crate) enum Recall {
    Fresh,
    Duplicate(Remembered),
    Stale,
}

impl Broker {
    pub fn new(id: BrokerId, key_digest: KeyDigest) -> Self {
        Broker {
            id,
            key_digest,
            high_water: 0,
            window: vec![Remembered::default(); CLIENT_ORDER_ID_WINDOW].into_boxed_slice(),
        }
    }

    #[inline]
    pub fn slot(client_order_id: u64) -> usize {
        (client_order_id % CLIENT_ORDER_ID_WINDOW as u64) as usize
    }

    #[inline]
    fn recall(&self, client_order_id: u64) -> Recall {
        let slot = self.window[Self::slot(client_order_id)];
        if slot.client_order_id == client_order_id {
            Recall::Duplicate(slot)
        } else if client_order_id.saturating_add(CLIENT_ORDER_ID_WINDOW as u64) <= self.high_water {
            Recall::Stale
        } else {
            Recall::Fresh
        }
    }

    #[inline]
    fn remember(&mut self, client_order_id: u64, order_id: u64, rejected: Option<RejectReason>) {
        self.window[Self::slot(client_order_id)] = Remembered {
            client_order_id,
            order_id,
            rejected,
        };
        self.high_water = self.high_water.max(client_order_id);
    }
}

impl State {
    /// Applies one command on behalf of the broker that sent it.
    pub fn dispatch<S: EventSink>(&mut self, input: &Input, out: &mut Emitter<S>) {
        let broker = input.broker;
        match &input.command {
            Command::NewOrder(order) => {
                self.broker_new_order(broker, OrderId(input.seq), order, out)
            }
            Command::Cancel(cancel) => match self.permit(broker, cancel.account) {
                Ok(()) => self.cancel(cancel, out),
                Err(reason) => out.emit(Event::CancelRejected {
                    account: cancel.account,
                    order_id: cancel.order_id,
                    reason,
                }),
            },
            Command::CancelReplace(replace) => match self.permit(broker, replace.account) {
                Ok(()) => self.cancel_replace(replace, out),
                Err(reason) => out.emit(Event::ReplaceRejected {
                    account: replace.account,
                    order_id: replace.order_id,
                    reason,
                }),
            },
            Command::MassCancel(mass) => match self.permit(broker, mass.account) {
                Ok(()) => self.mass_cancel(mass, out),
                Err(reason) => out.emit(Event::MassCancelRejected {
                    account: mass.account,
                    reason,
                }),
            },
            Command::Admin(admin) if broker == BrokerId::OPERATOR => self.admin(admin, out),
            Command::Admin(_) => out.emit(Event::AdminRejected {
                reason: RejectReason::NotPermitted,
            }),
        }
    }

    /// Whether `broker` may act for `account`. An account that does not exist is let through,
    /// so that the command itself reports it as unknown.
    fn permit(&self, broker: BrokerId, account: AccountId) -> Result<(), RejectReason> {
        if broker == BrokerId::OPERATOR {
            return Ok(());
        }
        match self.account_index.get(&account) {
            Some(&index) if self.accounts[index as usize].owner != broker => {
                Err(RejectReason::NotPermitted)
            }
            _ => Ok(()),
        }
    }

    fn broker_new_order<S: EventSink>(
        &mut self,
        broker: BrokerId,
        order_id: OrderId,
        cmd: &NewOrder,
        out: &mut Emitter<S>,
    ) {
        if broker == BrokerId::OPERATOR {
            self.new_order(order_id, cmd, out);
            return;
        }
        let reject = |reason, out: &mut Emitter<S>| {
            out.emit(Event::Rejected {
                account: cmd.account,
                symbol: cmd.symbol,
                client_order_id: cmd.client_order_id,
                reason,
            })
        };
        let Some(&broker_index) = self.broker_index.get(&broker) else {
            return reject(RejectReason::NotPermitted, out);
        };
        let client_order_id = cmd.client_order_id.0;
        if client_order_id == 0 {
            return reject(RejectReason::InvalidClientOrderId, out);
        }
        match self.brokers[broker_index as usize].recall(client_order_id) {
            Recall::Duplicate(original) => {
                return out.emit(Event::DuplicateOrder {
                    account: cmd.account,
                    client_order_id: cmd.client_order_id,
                    order_id: OrderId(original.order_id),
                    rejected: original.rejected,
                })
            }
            Recall::Stale => return reject(RejectReason::StaleClientOrderId, out),
            Recall::Fresh => {}
        }
        let rejected = match self.permit(broker, cmd.account) {
            Ok(()) => self.new_order(order_id, cmd, out),
            Err(reason) => {
                reject(reason, out);
                Some(reason)
            }
        };
        self.brokers[broker_index as usize].remember(client_order_id, order_id.0, rejected);
    }

    /// Registers a broker or replaces its key.
    pub fn set_broker_key(
        &mut self,
        broker: BrokerId,
        key_digest: KeyDigest,
    ) -> Result<Event, RejectReason> {
        if broker == BrokerId::OPERATOR {
            // The operator's credential is the nodes' admin key, not replicated state.
            return Err(RejectReason::NotPermitted);
        }
        match self.broker_index.get(&broker) {
            Some(&index) => self.brokers[index as usize].key_digest = key_digest,
            None => {
                if self.brokers.len() >= BROKERS_MAX {
                    return Err(RejectReason::TooManyBrokers);
                }
                self.broker_index.insert(broker, self.brokers.len() as u32);
                self.brokers.push(Broker::new(broker, key_digest));
            }
        }
        Ok(Event::BrokerKeySet { broker, key_digest })
    }
}
