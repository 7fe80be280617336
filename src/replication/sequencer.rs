//! The sequencer: on the leader, turns the commands brokers send into Raft entries.
//!
//! Batching is by demand, not by timer: while one batch is being replicated and applied,
//! everything that arrives queues; the next proposal takes all of it (up to the batch limit).
//! Under light load a batch is one command; under heavy load, hundreds. Each batch is stamped
//! with the leader's wall clock, never below any timestamp already in this node's log or
//! applied by its engine, so stamps never go backwards, across a change of leader too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use exchange_domain::{BrokerCommand, Output};
use openraft::async_runtime::watch::WatchReceiver as _;
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot};

use super::batch::{Batch, BATCH_COMMANDS_MAX};
use super::engine_thread::EngineHandle;
use super::leadership::Leadership;
use super::state_machine::Raft;
use super::types::NodeId;
use crate::latency::LatencyHistogram;

/// How long a proposal may wait to be committed and applied. Past it, the leader has lost its
/// majority (openraft refuses new proposals then, but not the ones in flight): its waiters are told the
/// outcome is unknown instead of hanging.
pub const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Commands waiting for the next proposal. Bounded: when the cluster cannot keep up, brokers
/// wait (and see it in their latency) rather than the node's memory growing.
pub const SEQUENCER_QUEUE_COMMANDS_MAX: usize = 65_536;

/// Why a command was not sequenced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// This node is not the leader (nothing was proposed); the leader, if known.
    NotLeader { leader_id: Option<NodeId> },
    /// The node is shutting down or its Raft has stopped.
    Stopped,
    /// Raft refused the proposal for another reason.
    Failed(String),
    /// Proposed, but neither committed nor refused: the leader lost its majority, or the
    /// proposal timed out. It may still commit; a broker resends with the same client order id.
    Unknown(String),
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::NotLeader { leader_id, .. } => match leader_id {
                Some(id) => write!(f, "not the leader; node {id} is"),
                None => write!(f, "not the leader; no leader is known yet"),
            },
            SubmitError::Stopped => write!(f, "the node is stopping"),
            SubmitError::Failed(e) => write!(f, "{e}"),
            SubmitError::Unknown(e) => write!(f, "outcome unknown: {e}"),
        }
    }
}

struct Pending {
    command: BrokerCommand,
    reply: oneshot::Sender<Result<Vec<Output>, SubmitError>>,
}

/// The handle gateways submit through.
#[derive(Clone)]
pub struct Sequencer {
    queue: mpsc::Sender<Pending>,
}

impl Sequencer {
    /// Starts the proposing task. `log_max_timestamp` and `engine` give the timestamps already
    /// used, which new stamps must not go below.
    /// A proposal waiting while this leader has lost its majority (`Leadership::quorum_lost`)
    /// is answered "outcome unknown". Each committed proposal's time, from
    /// proposing to the engine's outputs, goes into `round_latency`.
    pub fn start(
        raft: Raft,
        log_max_timestamp: Arc<AtomicU64>,
        engine: Arc<EngineHandle>,
        leadership: Leadership,
        round_latency: Arc<LatencyHistogram>,
    ) -> Self {
        let (queue, pending) = mpsc::channel(SEQUENCER_QUEUE_COMMANDS_MAX);
        tokio::spawn(run(
            raft,
            pending,
            log_max_timestamp,
            engine,
            leadership,
            round_latency,
        ));
        Sequencer { queue }
    }

    /// Sequences commands in order; returns each one's outputs once committed and applied.
    /// They are queued together, so they usually travel in one entry.
    pub async fn submit_many(
        &self,
        commands: Vec<BrokerCommand>,
    ) -> Vec<Result<Vec<Output>, SubmitError>> {
        self.enqueue_many(commands).await.answers().await
    }

    /// Queues commands in order and returns as soon as they are queued: a caller that
    /// enqueues request after request, and waits for the answers elsewhere, keeps its order
    /// without waiting a round for each.
    pub async fn enqueue_many(&self, commands: Vec<BrokerCommand>) -> Queued {
        let mut answers = Vec::with_capacity(commands.len());
        for command in commands {
            let (reply, answer) = oneshot::channel();
            if self.queue.send(Pending { command, reply }).await.is_err() {
                answers.push(None);
                continue;
            }
            answers.push(Some(answer));
        }
        Queued { answers }
    }
}

/// Commands queued for sequencing, whose answers are still to come.
pub struct Queued {
    /// One per command; `None` where the queue had closed (the sequencer stopped).
    answers: Vec<Option<oneshot::Receiver<Answer>>>,
}

/// One command's answer: its outputs, or why it has none.
pub type Answer = Result<Vec<Output>, SubmitError>;

impl Queued {
    /// Each command's outputs once committed and applied, in order.
    pub async fn answers(self) -> Vec<Result<Vec<Output>, SubmitError>> {
        let mut results = Vec::with_capacity(self.answers.len());
        for answer in self.answers {
            results.push(match answer {
                Some(answer) => answer.await.unwrap_or(Err(SubmitError::Stopped)),
                None => Err(SubmitError::Stopped),
            });
        }
        results
    }
}

/// Resolves once this node, still leading, has heard from no majority for the leadership's
/// `quorum_lost_after`.
async fn majority_lost(leadership: &Leadership) {
    while !leadership.quorum_lost() {
        tokio::time::sleep(MAJORITY_CHECK_EVERY).await;
    }
}

/// `None` while this node leads; else "not the leader", naming the leader if one is known.
async fn not_leading(raft: &Raft) -> Option<SubmitError> {
    let leads = |state| state == openraft::ServerState::Leader;
    if leads(raft.metrics().borrow_watched().state) {
        return None;
    }
    // The metrics trail Raft's own state for a moment after an election: ask Raft before
    // turning brokers away from a leader.
    if raft
        .with_raft_state(move |state| leads(state.server_state))
        .await
        .unwrap_or(false)
    {
        return None;
    }
    let leader_id = raft.metrics().borrow_watched().current_leader;
    Some(SubmitError::NotLeader { leader_id })
}

/// How often a waiting proposal looks at whether the leader still has its majority.
const MAJORITY_CHECK_EVERY: Duration = Duration::from_millis(20);

fn wall_clock_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

async fn run(
    raft: Raft,
    mut pending: mpsc::Receiver<Pending>,
    log_max_timestamp: Arc<AtomicU64>,
    engine: Arc<EngineHandle>,
    leadership: Leadership,
    round_latency: Arc<LatencyHistogram>,
) {
    let mut last_stamp = 0u64;
    let mut waiting = Vec::with_capacity(BATCH_COMMANDS_MAX.min(4_096));
    while let Some(first) = pending.recv().await {
        waiting.push(first);
        while waiting.len() < BATCH_COMMANDS_MAX {
            match pending.try_recv() {
                Ok(next) => waiting.push(next),
                Err(_) => break,
            }
        }
        // Only a leader proposes. What Raft drops after appending it (`LogEntryDiscarded`) a
        // later leader may still commit: its outcome is unknown, never a plain "not the
        // leader" that a client would take as "not done".
        if let Some(not_leader) = not_leading(&raft).await {
            for waiter in waiting.drain(..) {
                let _ = waiter.reply.send(Err(not_leader.clone()));
            }
            continue;
        }
        // Never below anything stamped before, here or by an earlier leader.
        let floor = last_stamp
            .max(log_max_timestamp.load(Ordering::Acquire))
            .max(engine.status().last_timestamp_ns());
        let timestamp_ns = wall_clock_ns().max(floor);
        last_stamp = timestamp_ns;
        let batch = Batch {
            timestamp_ns,
            commands: waiting.iter().map(|p| p.command).collect(),
        };
        let proposed = std::time::Instant::now();
        let write = raft.client_write(batch);
        let unanswered = tokio::select! {
            outcome = write => Ok(outcome),
            () = tokio::time::sleep(PROPOSAL_TIMEOUT) => Err(format!(
                "not committed within {PROPOSAL_TIMEOUT:?}"
            )),
            // Brokers waiting on a leader cut off from its majority would wait for the cut to
            // heal: tell them at once, so they resend to the new leader.
            () = majority_lost(&leadership) => Err(
                "the leader lost its majority before this was committed".to_string()
            ),
        };
        let outcome = match unanswered {
            Ok(outcome) => outcome,
            Err(why) => {
                for waiter in waiting.drain(..) {
                    let _ = waiter.reply.send(Err(SubmitError::Unknown(why.clone())));
                }
                continue;
            }
        };
        match outcome {
            Ok(response) => {
                round_latency.record(proposed.elapsed());
                let mut outputs = response.data.outputs.into_iter();
                for waiter in waiting.drain(..) {
                    let result = outputs.next().ok_or_else(|| {
                        SubmitError::Failed("the engine returned no outputs".into())
                    });
                    let _ = waiter.reply.send(result);
                }
            }
            Err(error) => {
                let error = match error {
                    // Refused before it was appended (another leader, or this one without a
                    // majority's answer within its lease): not done, and safe to send again.
                    RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
                        SubmitError::NotLeader {
                            leader_id: forward.leader_id,
                        }
                    }
                    // Appended, then dropped when another leader's log replaced it: that
                    // leader may have it too, and commit it.
                    RaftError::APIError(ClientWriteError::LogEntryDiscarded(forward)) => {
                        SubmitError::Unknown(format!(
                            "leadership passed to {} while this was proposed",
                            forward
                                .leader_id
                                .map_or("an unknown node".to_string(), |id| format!("node {id}"))
                        ))
                    }
                    RaftError::APIError(other) => SubmitError::Failed(other.to_string()),
                    RaftError::Fatal(_) => SubmitError::Stopped,
                };
                for waiter in waiting.drain(..) {
                    let _ = waiter.reply.send(Err(error.clone()));
                }
            }
        }
    }
}
