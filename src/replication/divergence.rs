//! Divergence detection: every node compares its output hash with its peers' at equal log
//! indexes. The engine is deterministic, so any difference is a bug (or a corrupted node) and
//! must never pass silently: it is logged as an error and shown by `status`.
//!
//! This is the record of what was compared; the watcher that asks the peers is node wiring
//! (node/divergence_watch.rs).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often each peer is compared.
pub const DIVERGENCE_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// A difference found between this node's output and a peer's at the same index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    pub peer: u64,
    pub index: u64,
    pub ours: String,
    pub theirs: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "output diverges from node {} at index {}: ours {}, theirs {}",
            self.peer, self.index, self.ours, self.theirs
        )
    }
}

/// What the watcher found; shared with the status endpoint.
#[derive(Clone, Default)]
pub struct DivergenceLog {
    first: Arc<Mutex<Option<Divergence>>>,
    /// Per peer, the last index compared equal.
    checked: Arc<Mutex<BTreeMap<u64, u64>>>,
}

impl DivergenceLog {
    /// The first divergence seen, if any. It stays: a diverged replica needs an operator.
    pub fn first(&self) -> Option<Divergence> {
        self.first.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Per peer, the last index at which the hashes were compared and equal.
    pub fn checked(&self) -> BTreeMap<u64, u64> {
        self.checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Compares a peer's (index, hash) with ours; returns a divergence if they differ.
    pub fn compare(
        &self,
        peer: u64,
        index: u64,
        theirs: &str,
        ours: Option<u64>,
    ) -> Option<Divergence> {
        let ours = format!("{:016x}", ours?);
        if ours == theirs {
            self.checked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(peer, index);
            return None;
        }
        let divergence = Divergence {
            peer,
            index,
            ours,
            theirs: theirs.to_string(),
        };
        let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            tracing::error!(%divergence, "REPLICA DIVERGENCE");
            *first = Some(divergence.clone());
        }
        Some(divergence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_hashes_are_checked_and_a_difference_is_kept() {
        let log = DivergenceLog::default();
        assert_eq!(log.compare(2, 10, "00000000000000ff", Some(0xff)), None);
        assert_eq!(log.checked().get(&2), Some(&10));
        assert_eq!(
            log.compare(2, 11, "00000000000000ff", None),
            None,
            "no hash of ours: nothing to say"
        );
        let found = log
            .compare(3, 12, "0000000000000001", Some(2))
            .expect("a divergence");
        assert_eq!(found.peer, 3);
        log.compare(2, 13, "0000000000000005", Some(6));
        assert_eq!(log.first(), Some(found), "the first divergence is kept");
    }
}
