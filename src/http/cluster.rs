//! The cluster as one node sees it: its peers' last statuses (the divergence watcher asks each
//! peer twice a second and records the answers here) and the leader changes this node saw,
//! each with how long it knew no leader.
//!
//! A node learns that its leader is gone only when an election starts (after the leader's
//! lease and an election timeout), so the no-leader time measured here is the election's own
//! length as this node lived it; the silence before it is at most the election timeout's upper
//! end plus a lease (docs/http-api.md).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::gateway::protocol::NodeStatus;

/// Leader changes kept.
pub const LEADER_CHANGES_KEPT: usize = 64;
/// How often the node's own leader is looked at.
pub const LEADER_WATCH_INTERVAL: Duration = Duration::from_millis(10);

/// A peer's last answer, or why it gave none.
#[derive(Clone, Debug)]
pub struct PeerStatus {
    pub at: SystemTime,
    pub status: Result<NodeStatus, String>,
}

/// One change of leader as this node saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderChange {
    /// When this node learned the new leader (or lost the old one, for `leader: None`).
    pub at: SystemTime,
    pub leader: Option<u64>,
    pub term: u64,
    /// How long this node knew no leader before this one (zero for a direct hand-over).
    pub no_leader: Duration,
}

#[derive(Default)]
struct State {
    peers: BTreeMap<u64, PeerStatus>,
    changes: VecDeque<LeaderChange>,
    /// The leader last seen, and since when none has been known (if none is).
    leader: Option<u64>,
    leaderless_since: Option<Instant>,
    started: bool,
}

#[derive(Default)]
pub struct ClusterView {
    state: Mutex<State>,
}

impl ClusterView {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a peer's answer to the status request (or the failure to get one).
    pub fn record_peer(&self, id: u64, status: Result<NodeStatus, String>) {
        let at = SystemTime::now();
        self.state().peers.insert(id, PeerStatus { at, status });
    }

    pub fn peers(&self) -> BTreeMap<u64, PeerStatus> {
        self.state().peers.clone()
    }

    /// The leader changes this node saw, oldest first.
    pub fn leader_changes(&self) -> Vec<LeaderChange> {
        self.state().changes.iter().cloned().collect()
    }

    /// Notes this node's current view of the leader; called every `LEADER_WATCH_INTERVAL`.
    pub fn observe(&self, leader: Option<u64>, term: u64, now: Instant) {
        let mut state = self.state();
        if state.started && state.leader == leader {
            return;
        }
        let first = !state.started;
        state.started = true;
        state.leader = leader;
        match leader {
            None => {
                state.leaderless_since.get_or_insert(now);
            }
            Some(_) => {
                let no_leader = state
                    .leaderless_since
                    .take()
                    .map_or(Duration::ZERO, |since| now - since);
                // The leader found at start is no change.
                if !first {
                    if state.changes.len() == LEADER_CHANGES_KEPT {
                        state.changes.pop_front();
                    }
                    state.changes.push_back(LeaderChange {
                        at: SystemTime::now(),
                        leader,
                        term,
                        no_leader,
                    });
                }
            }
        }
    }

    /// Watches this node's own view of the leader until the process ends.
    pub async fn watch_leader(&self, view: impl Fn() -> (Option<u64>, u64)) {
        let mut interval = tokio::time::interval(LEADER_WATCH_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            let (leader, term) = view();
            self.observe(leader, term, Instant::now());
        }
    }
}

/// Milliseconds since the epoch.
pub fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_change_records_the_time_without_a_leader() {
        let view = ClusterView::default();
        let t0 = Instant::now();
        view.observe(Some(1), 1, t0);
        assert!(
            view.leader_changes().is_empty(),
            "the first leader is no change"
        );
        view.observe(Some(1), 1, t0 + Duration::from_millis(5));
        view.observe(None, 2, t0 + Duration::from_millis(100));
        view.observe(None, 2, t0 + Duration::from_millis(110));
        view.observe(Some(2), 2, t0 + Duration::from_millis(140));
        let changes = view.leader_changes();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].leader, Some(2));
        assert_eq!(changes[0].term, 2);
        assert_eq!(changes[0].no_leader, Duration::from_millis(40));
        // A direct hand-over: no time without a leader.
        view.observe(Some(3), 3, t0 + Duration::from_millis(200));
        assert_eq!(view.leader_changes()[1].no_leader, Duration::ZERO);
    }

    #[test]
    fn only_the_latest_changes_are_kept() {
        let view = ClusterView::default();
        let t0 = Instant::now();
        for i in 0..(LEADER_CHANGES_KEPT as u64 + 10) {
            view.observe(Some(i % 3 + 1), i, t0);
        }
        let changes = view.leader_changes();
        assert_eq!(changes.len(), LEADER_CHANGES_KEPT);
        assert_eq!(
            changes.last().map(|c| c.term),
            Some(LEADER_CHANGES_KEPT as u64 + 9)
        );
    }
}
