//! openraft's type configuration for the exchange: what Raft replicates (batches of
//! commands), what applying an entry returns, and what the cluster knows about each node.

use std::io::Cursor;

use exchange_domain::Output;
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
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeAddr>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeAddr>;
pub type StorageError = openraft::StorageError<NodeId>;
