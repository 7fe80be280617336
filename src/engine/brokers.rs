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

use exchange_domain::{BrokerId, CompId, KeyDigest, RejectReason};

use crate::limits::CLIENT_ORDER_ID_WINDOW;

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
    /// The SenderCompID its FIX sessions log on with, once given.
    pub fix_comp_id: Option<CompId>,
}

pub(crate) enum Recall {
    Fresh,
    Duplicate(Remembered),
    Stale,
}

impl Broker {
    /// Whether the broker's key was revoked: it may do nothing.
    pub fn is_revoked(&self) -> bool {
        self.key_digest.is_revoked()
    }

    pub fn new(id: BrokerId, key_digest: KeyDigest) -> Self {
        Broker {
            id,
            key_digest,
            high_water: 0,
            window: vec![Remembered::default(); CLIENT_ORDER_ID_WINDOW].into_boxed_slice(),
            fix_comp_id: None,
        }
    }

    #[inline]
    pub fn slot(client_order_id: u64) -> usize {
        (client_order_id % CLIENT_ORDER_ID_WINDOW as u64) as usize
    }

    #[inline]
    pub fn recall(&self, client_order_id: u64) -> Recall {
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
    pub fn remember(
        &mut self,
        client_order_id: u64,
        order_id: u64,
        rejected: Option<RejectReason>,
    ) {
        self.window[Self::slot(client_order_id)] = Remembered {
            client_order_id,
            order_id,
            rejected,
        };
        self.high_water = self.high_water.max(client_order_id);
    }
}
