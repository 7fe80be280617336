//! What the rest of the node may know and ask of Raft, so that openraft stays inside
//! replication: this node's role, the leader and its broker address, whether a leader has lost
//! its majority, the confirmation a linearizable read needs, and membership changes.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver as _;
use openraft::{ReadPolicy, ServerState};

use crate::replication::network::LeaderContact;
use crate::replication::state_machine::Raft;
use crate::replication::types::{MetricsReceiver, NodeAddr, RaftMetrics};

/// A Raft role, as `status` and the metrics name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }

    pub fn of(state: ServerState) -> Role {
        match state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        }
    }
}

/// This node's view of the cluster now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub role: Role,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_log_index: Option<u64>,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
}

/// Why leadership could not be confirmed, or a membership change made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeadershipError {
    /// This node does not lead (or no longer does): ask the leader.
    NotLeader,
    /// No majority confirmed this node's leadership in time.
    NoMajority,
    /// The change was refused or failed (the reason).
    Failed(String),
}

impl std::fmt::Display for LeadershipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeadershipError::NotLeader => write!(f, "this node is not the leader"),
            LeadershipError::NoMajority => write!(f, "no majority confirmed the leadership"),
            LeadershipError::Failed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for LeadershipError {}

/// A read whose leadership check fell short of a majority tries again after this pause.
const CONFIRM_RETRY_PAUSE: Duration = Duration::from_millis(2);

/// The handle. Cheap to clone.
#[derive(Clone)]
pub struct Leadership {
    raft: Raft,
    id: u64,
    quorum_lost_after: Duration,
    /// Whether this leader has lost its majority, as `watch_quorum` last judged.
    quorum_lost: Arc<AtomicBool>,
    /// Confirmations shared by the reads that arrive together.
    rounds: Arc<Rounds>,
    /// When this node last heard from a leader, and what that leader had committed.
    contact: Arc<LeaderContact>,
}

/// Samples of Raft's reports are taken at least this far apart.
const QUORUM_SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// How long ago a majority last acknowledged this leader, by its report. A leader that is
/// the only voter is its own majority (openraft 0.10 stamps the quorum's acknowledgement only
/// when a follower answers, so a lone voter's stamp is its election's).
fn quorum_heard_ms_ago(report: &RaftMetrics) -> Option<u64> {
    use openraft::Instant as _;
    let voters = report.membership_config.membership().voter_ids().count();
    if voters <= 1 {
        return Some(0);
    }
    report
        .last_quorum_acked
        .as_ref()
        .map(|at| at.elapsed().as_millis() as u64)
}

/// Keeps `lost`: set when two of Raft's reports, fresh when taken and at least
/// `QUORUM_SAMPLE_EVERY` apart, both say this node leads and has heard from no majority for
/// `quorum_lost_after`; cleared by the first report that says otherwise. One report is not
/// enough: Raft's core computes its report at the top of its loop, so the first one after the
/// core itself stalled (on its own log sync, or a busy CPU) counts the answers that queued
/// meanwhile as missing; it takes them an instant later. Ends with Raft.
async fn watch_quorum(
    mut reports: MetricsReceiver<RaftMetrics>,
    quorum_lost_after: Duration,
    lost: Arc<AtomicBool>,
) {
    let window_ms = quorum_lost_after.as_millis() as u64;
    let mut lost_before = false;
    loop {
        tokio::time::sleep(QUORUM_SAMPLE_EVERY).await;
        // A report made after the pause: one waiting already may be the stale one.
        let _ = reports.borrow_and_update();
        if reports.changed().await.is_err() {
            return;
        }
        let lost_now = {
            let report = reports.borrow_and_update();
            report.state == ServerState::Leader
                && quorum_heard_ms_ago(&report).is_some_and(|ms| ms > window_ms)
        };
        let lost_both = lost_now && lost_before;
        if lost.swap(lost_both, Ordering::AcqRel) != lost_both {
            let report = reports.borrow_watched();
            if lost_both {
                tracing::warn!(
                    heard_ms_ago = quorum_heard_ms_ago(&report),
                    term = report.current_term,
                    "no majority heard from lately: brokers are sent away until one answers"
                );
            } else {
                tracing::info!(term = report.current_term, "a majority answers again");
            }
        }
        lost_before = lost_now;
    }
}

/// Leadership confirmations, one at a time, each shared by every read waiting for it.
struct Rounds {
    state: std::sync::Mutex<RoundState>,
    /// The last round finished: its number and result.
    done: tokio::sync::watch::Sender<(u64, Result<(), LeadershipError>)>,
}

#[derive(Default)]
struct RoundState {
    /// Rounds started so far (the current one's number, while one runs).
    started: u64,
    running: bool,
    /// A read arrived while a round ran: another round follows it.
    wanted: bool,
}

impl Leadership {
    /// `quorum_lost_after`: a leader that has heard from no majority for this long is treated
    /// as not leading (it stops answering brokers and publishing, and its proposals are
    /// answered "outcome unknown").
    pub fn new(
        raft: Raft,
        id: u64,
        quorum_lost_after: Duration,
        contact: Arc<LeaderContact>,
    ) -> Leadership {
        let quorum_lost = Arc::new(AtomicBool::new(false));
        tokio::spawn(watch_quorum(
            raft.metrics(),
            quorum_lost_after,
            Arc::clone(&quorum_lost),
        ));
        Leadership {
            raft,
            id,
            quorum_lost_after,
            quorum_lost,
            contact,
            rounds: Arc::new(Rounds {
                state: std::sync::Mutex::default(),
                done: tokio::sync::watch::Sender::new((0, Err(LeadershipError::NotLeader))),
            }),
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn quorum_lost_after(&self) -> Duration {
        self.quorum_lost_after
    }

    /// The Raft term this node is in.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    pub fn view(&self) -> View {
        // Clone at once: holding the borrow would block Raft's updates.
        let metrics = self.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        View {
            role: Role::of(metrics.state),
            term: metrics.current_term,
            leader: metrics.current_leader,
            last_log_index: metrics.last_log_index,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
        }
    }

    /// Whether this node leads but has not heard from a majority for `quorum_lost_after`: the
    /// one check of it in the node, kept by `watch_quorum`. On every order's path: one atomic
    /// load.
    pub fn quorum_lost(&self) -> bool {
        self.quorum_lost.load(Ordering::Acquire)
    }

    /// Whether this node leads and has heard from a majority lately: only then it serves
    /// brokers and publishes.
    pub fn publishing(&self) -> bool {
        self.raft.metrics().borrow_watched().state == ServerState::Leader && !self.quorum_lost()
    }

    /// What the leader had committed by its last AppendEntries, if this node follows (or
    /// learns from) a leader that it knows (another node, for which its vote is settled) and
    /// has heard from it within `quorum_lost_after`. `None` for a node cut off (a learner
    /// never stands for election, so its vote alone would go on naming the leader), removed
    /// from the cluster, just restarted and not yet reached, or in an election.
    pub fn in_touch_with_leader(&self) -> Option<u64> {
        let leader = {
            let metrics = self.raft.metrics();
            let now = metrics.borrow_watched();
            let follows = matches!(now.state, ServerState::Follower | ServerState::Learner)
                && now.vote.is_committed();
            now.current_leader
                .filter(|&leader| follows && leader != self.id)?
        };
        let (heard_from, at) = self.contact.last()?;
        (heard_from == leader && at.elapsed() <= self.quorum_lost_after)
            .then(|| self.contact.leader_commit())
    }

    /// The leader, if it is another node, with its broker address when known. A leader
    /// without its majority still names itself: it must not send brokers back to itself.
    pub fn leader_elsewhere(&self) -> (Option<u64>, Option<String>) {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let leader = metrics.current_leader.filter(|&leader| leader != self.id);
        let broker = leader.and_then(|leader| {
            metrics
                .membership_config
                .membership()
                .get_node(&leader)
                .map(|node| node.broker.clone())
        });
        (leader, broker)
    }

    /// Makes a read linearizable (Raft's read index): a leader deposed without knowing it yet
    /// would answer from a stale state, so it first confirms with a majority that it still
    /// leads. Reads that arrive together share a confirmation: each waits for the first round
    /// that began after it arrived (one running already may have begun before, so it waits
    /// for the next), so a thousand readers cost a round at a time, not a thousand rounds.
    pub async fn confirm(&self) -> Result<(), LeadershipError> {
        let (need, drive) = {
            let mut state = self.rounds.state.lock().unwrap_or_else(|p| p.into_inner());
            if state.running {
                state.wanted = true;
                (state.started + 1, false)
            } else {
                state.running = true;
                state.started += 1;
                (state.started, true)
            }
        };
        let mut done = self.rounds.done.subscribe();
        if drive {
            let leadership = self.clone();
            tokio::spawn(async move { leadership.drive_rounds().await });
        }
        loop {
            {
                let (round, result) = &*done.borrow_and_update();
                if *round >= need {
                    return result.clone();
                }
            }
            if done.changed().await.is_err() {
                return Err(LeadershipError::NotLeader);
            }
        }
    }

    /// Runs rounds while reads want them.
    async fn drive_rounds(self) {
        loop {
            let round = self
                .rounds
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .started;
            let result = self.confirm_once().await;
            // The value it replaces was every waiter's already, or none's.
            let _previous = self.rounds.done.send_replace((round, result));
            let mut state = self.rounds.state.lock().unwrap_or_else(|p| p.into_inner());
            if state.wanted {
                state.wanted = false;
                state.started += 1;
            } else {
                state.running = false;
                return;
            }
        }
    }

    /// One confirmation. Rounds that fall short of a majority (a busy host answers late) are
    /// tried again until four times `quorum_lost_after` have passed.
    async fn confirm_once(&self) -> Result<(), LeadershipError> {
        let deadline = tokio::time::Instant::now() + self.quorum_lost_after * 4;
        loop {
            if !self.publishing() {
                return Err(LeadershipError::NotLeader);
            }
            match tokio::time::timeout_at(
                deadline,
                self.raft.ensure_linearizable(ReadPolicy::ReadIndex),
            )
            .await
            {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) if e.forward_to_leader().is_some() => {
                    return Err(LeadershipError::NotLeader)
                }
                Ok(Err(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(CONFIRM_RETRY_PAUSE).await;
                }
                Ok(Err(_)) | Err(_) => return Err(LeadershipError::NoMajority),
            }
        }
    }

    /// Adds a node as a learner and waits until it has caught up (from the log, or from a
    /// snapshot when the log behind it was purged).
    pub async fn add_learner(&self, id: u64, node: NodeAddr) -> Result<(), LeadershipError> {
        match self.raft.add_learner(id, node, true).await {
            Ok(_) => Ok(()),
            Err(e) if e.forward_to_leader().is_some() => Err(LeadershipError::NotLeader),
            Err(e) => Err(LeadershipError::Failed(e.to_string())),
        }
    }

    /// Makes exactly these nodes the voters (learners named are promoted, voters not named
    /// removed).
    pub async fn set_voters(&self, voters: BTreeSet<u64>) -> Result<(), LeadershipError> {
        match self.raft.change_membership(voters, false).await {
            Ok(_) => Ok(()),
            Err(e) if e.forward_to_leader().is_some() => Err(LeadershipError::NotLeader),
            Err(e) => Err(LeadershipError::Failed(e.to_string())),
        }
    }
}
