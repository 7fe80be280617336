//! Serves brokers on the node's broker address.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;

use super::protocol::{
    NodeStatus, Reply, Request, BROKER_FRAME_BYTES_MAX, SUBMIT_BATCH_COMMANDS_MAX,
};
use crate::net::frame::{read_frame, write_frame};
use crate::replication::divergence::DivergenceLog;
use crate::replication::engine_thread::EngineHandle;
use crate::replication::sequencer::{Sequencer, SubmitError};
use crate::replication::types::Raft;

/// What the gateway needs of its node.
#[derive(Clone)]
pub struct Gateway {
    pub id: u64,
    pub raft: Raft,
    pub sequencer: Sequencer,
    pub engine: Arc<EngineHandle>,
    pub committed: Arc<AtomicU64>,
    pub divergence: DivergenceLog,
    /// A leader that has heard from no majority for this long answers as if it were not the
    /// leader, so brokers go look for the real one.
    pub quorum_lost_after: Duration,
}

/// Connections served at once; more are refused (bounded memory for any number of brokers).
pub const BROKER_CONNECTIONS_MAX: usize = 4_096;
/// How long adding a learner may take to catch it up.
pub const LEARNER_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

impl Gateway {
    pub fn status(&self) -> NodeStatus {
        // Clone at once: holding the metrics borrow would block Raft's updates.
        let metrics = self.raft.metrics().borrow().clone();
        let (applied_index, output_hash) = self.engine.status().applied();
        NodeStatus {
            id: self.id,
            role: match metrics.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            }
            .into(),
            term: metrics.current_term,
            leader: metrics.current_leader,
            last_log_index: metrics.last_log_index,
            commit_index: self.committed.load(Ordering::Acquire),
            applied_index,
            output_hash: format!("{output_hash:016x}"),
            voters: metrics.membership_config.membership().voter_ids().collect(),
            divergence: self.divergence.first().map(|d| d.to_string()),
            hashes_checked: self.divergence.checked().into_iter().collect(),
        }
    }

    /// Whether this node leads but has not heard from a majority lately.
    fn quorum_lost(&self) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        metrics.state == ServerState::Leader
            && metrics
                .millis_since_quorum_ack
                .is_some_and(|ms| ms > self.quorum_lost_after.as_millis() as u64)
    }

    fn not_leader(&self) -> Reply {
        let metrics = self.raft.metrics().borrow().clone();
        let broker = metrics.current_leader.and_then(|leader| {
            metrics
                .membership_config
                .membership()
                .get_node(&leader)
                .map(|node| node.broker.clone())
        });
        Reply::NotLeader {
            leader_id: metrics.current_leader,
            broker,
        }
    }

    fn membership(&self) -> Reply {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        Reply::Membership {
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
        }
    }

    async fn handle(&self, request: Request) -> Reply {
        match request {
            Request::Status => Reply::Status(self.status()),
            Request::SubmitBatch(commands) => {
                if commands.len() > SUBMIT_BATCH_COMMANDS_MAX {
                    return Reply::Error(format!(
                        "a batch holds at most {SUBMIT_BATCH_COMMANDS_MAX} commands, got {}",
                        commands.len()
                    ));
                }
                if self.quorum_lost() {
                    return Reply::NotLeader {
                        leader_id: None,
                        broker: None,
                    };
                }
                let results = self.sequencer.submit_many(commands).await;
                // Not the leader: nothing was sequenced (each command got the same answer).
                if let Some(Err(SubmitError::NotLeader { leader_id, leader })) = results.first() {
                    return Reply::NotLeader {
                        leader_id: *leader_id,
                        broker: leader.as_ref().map(|node| node.broker.clone()),
                    };
                }
                Reply::BatchOutputs(
                    results
                        .into_iter()
                        .map(|result| result.map_err(|e| e.to_string()))
                        .collect(),
                )
            }
            Request::AddLearner { id, raft, broker } => {
                if raft.parse::<std::net::SocketAddr>().is_err()
                    || broker.parse::<std::net::SocketAddr>().is_err()
                {
                    return Reply::Error(format!(
                        "node {id}: addresses must be ip:port, got {raft} and {broker}"
                    ));
                }
                let node = crate::replication::types::NodeAddr { raft, broker };
                match tokio::time::timeout(LEARNER_CATCH_UP_TIMEOUT, self.raft.add_learner(id, node, true)).await {
                    Ok(Ok(_)) => self.membership(),
                    Ok(Err(e)) if e.forward_to_leader().is_some() => self.not_leader(),
                    Ok(Err(e)) => Reply::Error(format!("adding node {id}: {e}")),
                    Err(_) => Reply::Error(format!(
                        "node {id} was added as a learner but did not catch up within {LEARNER_CATCH_UP_TIMEOUT:?}; it is not a voter"
                    )),
                }
            }
            Request::SetVoters { voters } => {
                let voters: std::collections::BTreeSet<u64> = voters.into_iter().collect();
                if voters.is_empty() {
                    return Reply::Error("a cluster needs at least one voter".into());
                }
                match self.raft.change_membership(voters, false).await {
                    Ok(_) => self.membership(),
                    Err(e) if e.forward_to_leader().is_some() => self.not_leader(),
                    Err(e) => Reply::Error(format!("changing the voters: {e}")),
                }
            }
            Request::Submit(command) => {
                if self.quorum_lost() {
                    return Reply::NotLeader {
                        leader_id: None,
                        broker: None,
                    };
                }
                match self.sequencer.submit(command).await {
                    Ok(outputs) => Reply::Outputs(outputs),
                    Err(SubmitError::NotLeader { leader_id, leader }) => Reply::NotLeader {
                        leader_id,
                        broker: leader.map(|node| node.broker),
                    },
                    // A stopping node sends the broker elsewhere.
                    Err(SubmitError::Stopped) => Reply::NotLeader {
                        leader_id: None,
                        broker: None,
                    },
                    Err(e) => Reply::Error(e.to_string()),
                }
            }
        }
    }
}

/// Accepts brokers until the endpoint closes.
pub async fn serve(endpoint: quinn::Endpoint, gateway: Gateway) {
    let connections = Arc::new(tokio::sync::Semaphore::new(BROKER_CONNECTIONS_MAX));
    while let Some(incoming) = endpoint.accept().await {
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(connection) = incoming.await else {
                return;
            };
            while let Ok((send, recv)) = connection.accept_bi().await {
                tokio::spawn(serve_stream(gateway.clone(), send, recv));
            }
        });
    }
}

async fn serve_stream(gateway: Gateway, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    loop {
        let reply = match read_frame(&mut recv, BROKER_FRAME_BYTES_MAX).await {
            Ok(None) => break,
            Ok(Some(bytes)) => match postcard::from_bytes::<Request>(&bytes) {
                Ok(request) => gateway.handle(request).await,
                Err(e) => {
                    // A frame that does not decode ends the stream after saying why.
                    let reply = Reply::Error(format!("malformed request: {e}"));
                    let _ = write(&mut send, &reply).await;
                    break;
                }
            },
            Err(e) => {
                let _ = write(&mut send, &Reply::Error(e.to_string())).await;
                break;
            }
        };
        if write(&mut send, &reply).await.is_err() {
            break;
        }
    }
    let _ = send.finish();
}

async fn write(send: &mut quinn::SendStream, reply: &Reply) -> Result<(), ()> {
    let bytes = postcard::to_allocvec(reply).map_err(|_| ())?;
    write_frame(send, &bytes).await.map_err(|_| ())
}
