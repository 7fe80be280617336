//! openraft's type configuration for the exchange: what Raft replicates (batches of
//! commands), what applying an entry returns, and what the cluster knows about each node.

use exchange_domain::Output;
use openraft::type_config::alias;
use serde::{Deserialize, Serialize};

use super::batch::Batch;

pub type NodeId = u64;

/// Where a node listens: Raft traffic between nodes, and brokers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    pub raft: String,
    pub broker: String,
}

impl std::fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "raft {} broker {}", self.raft, self.broker)
    }
}

/// What applying one entry produced: each command's outputs, in order. Filled on the node that
/// proposed the entry (its brokers wait for them) and empty elsewhere.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub outputs: Vec<Vec<Output>>,
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Batch,
        R = Applied,
        NodeId = NodeId,
        Node = NodeAddr,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Entry = alias::EntryOf<TypeConfig>;
pub type LogId = alias::LogIdOf<TypeConfig>;
pub type Vote = alias::VoteOf<TypeConfig>;
/// The leader of a term, as log ids and votes name it.
pub type CommittedLeaderId = alias::CommittedLeaderIdOf<TypeConfig>;
pub type StoredMembership = alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot as openraft moves it: its meta and the bytes in memory.
pub type Snapshot = alias::SnapshotOf<TypeConfig, SnapshotData>;
/// A snapshot's bytes, held in memory (they are one engine state, encoded).
pub type SnapshotData = std::io::Cursor<Vec<u8>>;
pub type Membership = openraft::Membership<NodeId, NodeAddr>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;

/// What openraft publishes its metrics through.
pub type MetricsReceiver<T> = alias::WatchReceiverOf<TypeConfig, T>;

/// Whether the Raft that publishes to `metrics` has stopped. Takes any change waiting, so
/// a caller that waits for changes reads the value again afterwards.
pub fn raft_stopped<T>(metrics: &mut MetricsReceiver<T>) -> bool
where
    T: openraft::OptionalSend + openraft::OptionalSync,
{
    use futures_util::FutureExt;
    use openraft::async_runtime::watch::WatchReceiver;
    metrics
        .changed()
        .now_or_never()
        .is_some_and(|changed| changed.is_err())
}
