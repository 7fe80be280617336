//! The cluster as one node sees it: its peers' last statuses (the divergence watcher asks each
//! peer twice a second and records the answers here) and the leader changes it saw, each with
//! how long it was without a leader: from the last AppendEntries (entries or a heartbeat) it
//! took from the old leader to the moment it knew the new one, so the detection of the loss
//! (a lease and an election timeout) and the election are both in it. A node that itself
//! leads counts as hearing from its leader. Sampled every `LEADER_WATCH_INTERVAL`.

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

/// What the node's own view of the leader is at one moment.
#[derive(Clone, Copy, Debug)]
pub struct LeaderSample {
    pub me: u64,
    /// `None` while no leader is known (an election under way).
    pub leader: Option<u64>,
    pub term: u64,
    /// The leader this node last took an AppendEntries from, and when.
    pub heard: Option<(u64, Instant)>,
}

#[derive(Default)]
struct State {
    peers: BTreeMap<u64, PeerStatus>,
    changes: VecDeque<LeaderChange>,
    /// The leader last seen.
    leader: Option<u64>,
    /// When this node last heard from a leader: the start of a time without one.
    last_heard: Option<Instant>,
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

    /// Notes this node's view of the leader at `now`; called every `LEADER_WATCH_INTERVAL`.
    pub fn observe(&self, sample: LeaderSample, now: Instant) {
        let mut state = self.state();
        // Contact with the leader known so far (not yet with a new one: its first message
        // ends the time without a leader), or this node leading all along.
        if state.leader == Some(sample.me) && sample.leader == Some(sample.me) {
            state.last_heard = Some(now);
        } else if let Some((from, at)) = sample.heard {
            if state.leader == Some(from) {
                state.last_heard = Some(state.last_heard.map_or(at, |last| last.max(at)));
            }
        }
        if state.started && state.leader == sample.leader {
            return;
        }
        let first = !state.started;
        state.started = true;
        state.leader = sample.leader;
        // A new leader after another (or after none): the leader found at start is no change.
        if sample.leader.is_some() && !first {
            let no_leader = state
                .last_heard
                .map_or(Duration::ZERO, |last| now.saturating_duration_since(last));
            if state.changes.len() == LEADER_CHANGES_KEPT {
                state.changes.pop_front();
            }
            state.changes.push_back(LeaderChange {
                at: SystemTime::now(),
                leader: sample.leader,
                term: sample.term,
                no_leader,
            });
            // The new leader's contact counts from now on.
            state.last_heard = Some(now);
        }
    }

    /// Watches this node's own view of the leader until the process ends.
    pub async fn watch_leader(&self, sample: impl Fn() -> LeaderSample) {
        let mut interval = tokio::time::interval(LEADER_WATCH_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            self.observe(sample(), Instant::now());
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

    fn sample(leader: Option<u64>, term: u64, heard: Option<(u64, Instant)>) -> LeaderSample {
        LeaderSample {
            me: 2,
            leader,
            term,
            heard,
        }
    }

    #[test]
    fn a_leader_change_counts_from_the_old_leader_last_heard() {
        let view = ClusterView::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        view.observe(sample(Some(1), 1, Some((1, t0))), t0);
        assert!(
            view.leader_changes().is_empty(),
            "the first leader is no change"
        );
        // Heartbeats from 1 until t0 + 50 ms; then it dies. An election from t0 + 160 ms.
        view.observe(sample(Some(1), 1, Some((1, t0 + ms(50)))), t0 + ms(55));
        view.observe(sample(Some(1), 1, Some((1, t0 + ms(50)))), t0 + ms(150));
        view.observe(sample(None, 2, Some((1, t0 + ms(50)))), t0 + ms(160));
        view.observe(sample(Some(3), 2, Some((1, t0 + ms(50)))), t0 + ms(190));
        let changes = view.leader_changes();
        assert_eq!(changes.len(), 1);
        assert_eq!((changes[0].leader, changes[0].term), (Some(3), 2));
        assert_eq!(changes[0].no_leader, ms(140));
        // This node itself elected next: from node 3's last heartbeat to its own leadership.
        view.observe(sample(Some(3), 2, Some((3, t0 + ms(300)))), t0 + ms(305));
        view.observe(sample(Some(2), 3, Some((3, t0 + ms(300)))), t0 + ms(420));
        assert_eq!(view.leader_changes()[1].no_leader, ms(120));
    }

    #[test]
    fn only_the_latest_changes_are_kept() {
        let view = ClusterView::default();
        let t0 = Instant::now();
        for i in 0..(LEADER_CHANGES_KEPT as u64 + 10) {
            view.observe(sample(Some(i % 3 + 1), i, None), t0);
        }
        let changes = view.leader_changes();
        assert_eq!(changes.len(), LEADER_CHANGES_KEPT);
        assert_eq!(
            changes.last().map(|c| c.term),
            Some(LEADER_CHANGES_KEPT as u64 + 9)
        );
    }
}
