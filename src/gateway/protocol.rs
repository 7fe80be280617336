//! The broker protocol (version 0): postcard-encoded frames on a QUIC bidirectional stream,
//! one reply per request, in order. A client may open several streams to pipeline.

use exchange_domain::{Command, Output};
use serde::{Deserialize, Serialize};

pub const PROTOCOL_VERSION: u16 = 0;
/// The largest request or reply frame. A request is one command; a reply is one command's
/// outputs (a mass cancel of a full account is the largest).
pub const BROKER_FRAME_BYTES_MAX: usize = 1 << 20;
/// Commands in one `SubmitBatch`.
pub const SUBMIT_BATCH_COMMANDS_MAX: usize = 4_096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Sequence a command; the reply is its outputs.
    Submit(Command),
    /// Sequence several commands at once (at most `SUBMIT_BATCH_COMMANDS_MAX`), in order; the
    /// reply has one result per command. They usually share one Raft entry.
    SubmitBatch(Vec<Command>),
    /// This node's view of the cluster.
    Status,
    /// Membership (leader only): add a node as a learner and wait until it has caught up
    /// (from the log, or from a snapshot when the log behind it was purged).
    AddLearner {
        id: u64,
        raft: String,
        broker: String,
    },
    /// Membership (leader only): make exactly these nodes the voters. Learners named here are
    /// promoted; voters not named are removed.
    SetVoters { voters: Vec<u64> },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The command was committed and applied: everything the engine said about it.
    Outputs(Vec<Output>),
    /// Per command of a `SubmitBatch`: its outputs, or why it was not sequenced.
    BatchOutputs(Vec<Result<Vec<Output>, String>>),
    /// Ask the leader instead. `broker` is its broker address, when known.
    NotLeader {
        leader_id: Option<u64>,
        broker: Option<String>,
    },
    Status(NodeStatus),
    /// A membership change took effect: the voters now.
    Membership {
        voters: Vec<u64>,
        learners: Vec<u64>,
    },
    /// The request could not be served (malformed, node stopping, ...).
    Error(String),
}

/// One node's view, as `exchange-cli status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: u64,
    /// leader, follower, candidate, learner or shutdown.
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_log_index: Option<u64>,
    /// The last index this node knows committed.
    pub commit_index: u64,
    pub applied_index: u64,
    /// The engine's output hash after the applied index, as 16 hex digits.
    pub output_hash: String,
    pub voters: Vec<u64>,
    /// The first difference found between this node's output hash and a peer's at the same
    /// index. Always `None` in a healthy cluster.
    pub divergence: Option<String>,
    /// Per peer, the last log index at which this node compared output hashes and found them
    /// equal: (peer id, index).
    pub hashes_checked: Vec<(u64, u64)>,
}
