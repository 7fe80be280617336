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

/// The key digest of a broker whose key was revoked: no key hashes to it.
const REVOKED: KeyDigest = KeyDigest([0; 32]);

/// Emits the refusal of a whole command.
fn refuse<S: EventSink>(command: &Command, reason: RejectReason, out: &mut Emitter<S>) {
    out.emit(command.rejected(reason));
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
    ///
    /// Permission comes first: a broker that is not registered, or whose key was revoked,
    /// may do nothing, and a broker may act only for its own accounts. Only then does a new
    /// order meet the exactly-once window, so a refusal for permission is never remembered
    /// (ownership never changes, so it repeats by itself) and a broker never learns about
    /// another broker's orders through a duplicate answer.
    pub fn dispatch<S: EventSink>(&mut self, input: &Input, out: &mut Emitter<S>) {
        let broker = input.broker;
        if let Command::Admin(admin) = &input.command {
            return if broker == BrokerId::OPERATOR {
                self.admin(admin, out)
            } else {
                out.emit(Event::AdminRejected {
                    reason: RejectReason::NotPermitted,
                })
            };
        }
        let broker_index = match self.permit(broker, input.command.account()) {
            Ok(index) => index,
            Err(reason) => return refuse(&input.command, reason, out),
        };
        match &input.command {
            Command::NewOrder(order) => {
                self.broker_new_order(broker_index, OrderId(input.seq), order, out)
            }
            Command::Cancel(cancel) => self.cancel(cancel, out),
            Command::CancelReplace(replace) => self.cancel_replace(replace, out),
            Command::MassCancel(mass) => self.mass_cancel(mass, out),
            // Answered above.
            Command::Admin(_) => {}
        }
    }

    /// Whether `broker` may act for `account`; the broker's table index (`None` for the
    /// operator, who may act for every account). An account that does not exist is let
    /// through, so that the command itself reports it as unknown.
    fn permit(
        &self,
        broker: BrokerId,
        account: Option<AccountId>,
    ) -> Result<Option<u32>, RejectReason> {
        if broker == BrokerId::OPERATOR {
            return Ok(None);
        }
        let index = *self
            .broker_index
            .get(&broker)
            .ok_or(RejectReason::NotPermitted)?;
        if self.brokers[index as usize].key_digest == REVOKED {
            return Err(RejectReason::NotPermitted);
        }
        let owner = account
            .and_then(|account| self.account_index.get(&account))
            .map(|&account| self.accounts[account as usize].owner);
        match owner {
            Some(owner) if owner != broker => Err(RejectReason::NotPermitted),
            _ => Ok(Some(index)),
        }
    }

    /// A permitted new order: the operator's goes straight in; a broker's meets the
    /// exactly-once window first.
    fn broker_new_order<S: EventSink>(
        &mut self,
        broker_index: Option<u32>,
        order_id: OrderId,
        cmd: &NewOrder,
        out: &mut Emitter<S>,
    ) {
        let Some(broker_index) = broker_index else {
            self.new_order(order_id, cmd, out);
            return;
        };
        let client_order_id = cmd.client_order_id.0;
        let reject = |reason| cmd.rejected(reason);
        if client_order_id == 0 {
            return out.emit(reject(RejectReason::InvalidClientOrderId));
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
            Recall::Stale => return out.emit(reject(RejectReason::StaleClientOrderId)),
            Recall::Fresh => {}
        }
        let rejected = self.new_order(order_id, cmd, out);
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
