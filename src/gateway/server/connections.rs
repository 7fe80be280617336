//! Connection admission: who may hold the node's connections. Handshakes, and sessions that
//! have not logged on yet, come from a small pool capped per source address and must log on
//! within `LOGON_TIMEOUT`; only a session that logged on takes one of the node's
//! `BROKER_CONNECTIONS_MAX` places. While the pool is busy, a source must prove it owns its
//! address (a QUIC Retry: one round trip for it, no cryptography for the node) before its
//! handshake begins. So a flood of connections that never log on holds a bounded, short-lived
//! part of the node, and no source alone can fill even that.

use std::net::IpAddr;

use super::quota::{Place, Quota};
use super::*;

/// Handshakes and sessions not yet logged on, from all sources.
pub const PENDING_MAX: u32 = 1_024;
/// Handshakes and sessions not yet logged on, from one source address: enough for a broker's
/// every session to reconnect at once after a change of leader.
pub const PENDING_PER_SOURCE_MAX: u32 = 64;
/// Past this many pending connections, a source must validate its address (Retry) first.
pub const RETRY_WHEN_PENDING: u32 = 128;
/// A handshake that has not completed by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// The node's connection places.
pub struct ConnectionAdmission {
    /// Connections that have not logged on yet, per source address.
    pending: Arc<Quota<IpAddr>>,
    sessions: Arc<tokio::sync::Semaphore>,
}

impl Default for ConnectionAdmission {
    fn default() -> Self {
        ConnectionAdmission {
            pending: Arc::default(),
            sessions: Arc::new(tokio::sync::Semaphore::new(BROKER_CONNECTIONS_MAX)),
        }
    }
}

/// A place in the pending pool, given back when dropped (at logon, or when the connection
/// ends without one).
pub(super) type PendingSlot = Place<IpAddr>;

impl ConnectionAdmission {
    /// Connections in the pending pool now.
    pub fn pending(&self) -> u32 {
        self.pending.total()
    }

    /// A pending place for a connection from `source`, unless the pool or the source's share
    /// of it is full.
    pub(super) fn try_pending(&self, source: IpAddr) -> Option<PendingSlot> {
        self.pending
            .take(source, PENDING_PER_SOURCE_MAX, PENDING_MAX)
    }

    /// A session place, for a session that logged on.
    pub(super) fn try_session(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.sessions).try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_source_cannot_fill_the_pool_and_places_come_back() {
        let admission = ConnectionAdmission::default();
        let (greedy, other): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let held: Vec<PendingSlot> = (0..PENDING_PER_SOURCE_MAX)
            .map(|_| admission.try_pending(greedy).expect("a place"))
            .collect();
        assert!(
            admission.try_pending(greedy).is_none(),
            "past the source's share"
        );
        let theirs = admission
            .try_pending(other)
            .expect("another source gets in");
        assert_eq!(admission.pending(), PENDING_PER_SOURCE_MAX + 1);
        drop(held);
        drop(theirs);
        assert_eq!(admission.pending(), 0);
        assert!(admission.try_pending(greedy).is_some());
        // The pool as a whole is bounded too.
        let many: Vec<PendingSlot> = (0..PENDING_MAX)
            .filter_map(|n| admission.try_pending(IpAddr::from([10, 1, (n >> 8) as u8, n as u8])))
            .collect();
        assert_eq!(many.len() as u32, PENDING_MAX);
        assert!(admission.try_pending([10, 2, 0, 1].into()).is_none());
    }
}
