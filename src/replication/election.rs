//! Standing for election on time when the leader falls silent.
//!
//! openraft 0.9 looked at its election timer on a tick every one and a half heartbeats (30 ms
//! with the defaults), so a follower whose leader died stood up to a tick after its timeout
//! passed: 15 ms late on average, the largest part of a failover after the timeouts themselves
//! (0.10 ticks every fifth of a heartbeat, but still draws each node's timeout at random).
//! [`stand_on_time`] looks at openraft's own rule (nothing heard from the leader, and the vote
//! unchanged, for the leader's lease and an election timeout) every few milliseconds and starts
//! the election when it says so. The timeout is not drawn at random but staggered by the node's
//! rank among the voters, a step of the configured range apart: two followers that stand
//! within a vote's round trip of each other split the vote and both wait a whole timeout more
//! (with random draws checked this often, about one failover in ten took 190-300 ms), while a
//! step of 10 ms lets the first one's request reach the others before they stand. It takes
//! only the first step: a follower of a known leader stands once; a candidate that lost goes
//! on under openraft's timer, which also waits longer when another node's log is known to be
//! ahead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::watch::WatchReceiver as _;
use openraft::ServerState;

use super::network::LeaderContact;
use super::state_machine::Raft;
use super::types::{raft_stopped, NodeId};

/// How often the rule is looked at.
const CHECK_EVERY: Duration = Duration::from_millis(4);

/// Runs for the node's life (ends with Raft). `lease` is the leader's lease (openraft: the
/// election timeout's upper end); `timeout_ms` the election timeout's range, which the voters'
/// timeouts divide among themselves.
pub async fn stand_on_time(
    raft: Raft,
    id: NodeId,
    contact: Arc<LeaderContact>,
    lease: Duration,
    timeout_ms: (u64, u64),
) {
    let mut server = raft.server_metrics();
    let mut vote = server.borrow_watched().vote;
    let mut vote_changed = Instant::now();
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        if raft_stopped(&mut server) {
            return;
        }
        let (current, state, leader, rank) = {
            let m = server.borrow_watched();
            // This node's place among the voters, and how many there are (no allocation: this
            // runs every few milliseconds).
            let (mut rank, mut voters) = (None, 0);
            for voter in m.membership_config.membership().voter_ids() {
                if voter == id {
                    rank = Some(voters);
                }
                voters += 1;
            }
            let rank = rank.map(|rank| (rank, voters));
            (m.vote, m.state, m.current_leader, rank)
        };
        if current != vote {
            vote = current;
            vote_changed = Instant::now();
        }
        // Only a voter following a leader it knows, and has heard since this node started.
        let Some((rank, voters)) = rank else {
            continue;
        };
        if state != ServerState::Follower
            || !vote.is_committed()
            || leader.is_none_or(|leader| leader == id)
        {
            continue;
        }
        let Some((_, heard)) = contact.last() else {
            continue;
        };
        let step = (timeout_ms.1 - timeout_ms.0) / voters as u64;
        let timeout = Duration::from_millis(timeout_ms.0 + step * rank as u64);
        let quiet_since = heard.max(vote_changed);
        if quiet_since.elapsed() >= lease + timeout {
            tracing::info!(
                silent_ms = quiet_since.elapsed().as_millis() as u64,
                "the leader is silent past its lease and the election timeout: standing for election"
            );
            // A pre-vote first: the election goes ahead only if a majority has lost the leader too.
            if raft.trigger().elect(true).await.is_err() {
                return;
            }
            // Once: the vote changes with the election, or this waits a whole timeout again.
            vote_changed = Instant::now();
        }
    }
}
