//! Raft's state machine: the engine thread, plus the snapshot it builds, kept on disk.
//!
//! `apply` hands the committed entries to the engine thread and waits for their outcomes (one
//! per entry, blank and membership entries included), which go to the entries' proposers. Snapshots are
//! built by the engine thread between two entries, so they are a consistent cut even though
//! openraft builds them concurrently with later applies; the engine reports the log id and
//! membership of the cut itself.
//!
//! Snapshot file (`snapshot.bin`, replaced atomically):
//!
//! ```text
//! [magic 8 B "EXSNAP01"][crc32c u32 of the rest][meta length u32][meta: postcard][state: engine
//! and market data, see `engine_thread::encode_state`]
//! ```

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};

use super::engine_thread::{AppliedPosition, CommittedEntry, EngineHandle, EngineStopped};
use super::types::{
    Applied, LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig,
};

const SNAPSHOT_FILE: &str = "snapshot.bin";
const SNAPSHOT_MAGIC: &[u8; 8] = b"EXSNAP01";
const SNAPSHOT_HEADER_BYTES: usize = 8 + 4 + 4;

/// A snapshot as this node keeps it.
#[derive(Clone, Debug)]
pub struct StoredSnapshot {
    pub meta: SnapshotMeta,
    /// The node's state: `engine_thread::encode_state` of the engine's and the tap's.
    pub state: Vec<u8>,
}

impl StoredSnapshot {
    fn encode(&self) -> Result<Vec<u8>, String> {
        let meta = postcard::to_allocvec(&self.meta)
            .map_err(|e| format!("the snapshot's metadata is not encodable: {e}"))?;
        let mut body = Vec::with_capacity(4 + meta.len() + self.state.len());
        body.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        body.extend_from_slice(&meta);
        body.extend_from_slice(&self.state);
        let mut file = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + body.len());
        file.extend_from_slice(SNAPSHOT_MAGIC);
        file.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        file.extend_from_slice(&body);
        Ok(file)
    }

    fn decode(bytes: &[u8]) -> Result<StoredSnapshot, String> {
        if bytes.len() < SNAPSHOT_HEADER_BYTES || &bytes[..8] != SNAPSHOT_MAGIC {
            return Err("not a snapshot file".into());
        }
        let word = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let body = &bytes[12..];
        if crc32c::crc32c(body) != word(8) {
            return Err("snapshot checksum mismatch".into());
        }
        let meta_len = word(12) as usize;
        let meta_bytes = body
            .get(4..4 + meta_len)
            .ok_or_else(|| "snapshot meta runs past the file".to_string())?;
        let meta = postcard::from_bytes(meta_bytes).map_err(|e| format!("snapshot meta: {e}"))?;
        Ok(StoredSnapshot {
            meta,
            state: body[4 + meta_len..].to_vec(),
        })
    }

    /// The snapshot in `dir`, if there is one. A damaged file is an error: the node must not
    /// start from a state it cannot trust.
    pub fn load(dir: &Path) -> Result<Option<StoredSnapshot>, String> {
        let path = dir.join(SNAPSHOT_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Self::decode(&bytes)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Writes the snapshot to `dir` atomically: a temporary file, synced, renamed over the old
    /// one, and the directory synced.
    fn save(&self, dir: &Path) -> std::io::Result<()> {
        let path = dir.join(SNAPSHOT_FILE);
        let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let bytes = self.encode().map_err(std::io::Error::other)?;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    }

    pub fn position(&self) -> AppliedPosition {
        AppliedPosition {
            last_log_id: self.meta.last_log_id,
            membership: self.meta.last_membership.clone(),
        }
    }
}

/// The node's Raft: openraft over this state machine.
pub type Raft = openraft::Raft<TypeConfig, StateMachine>;

#[derive(Clone)]
pub struct StateMachine {
    engine: Arc<EngineHandle>,
    dir: PathBuf,
    applied: AppliedPosition,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    gate: Option<Arc<dyn SnapshotGate>>,
}

fn sm_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl StateMachine {
    /// `applied` is where the engine stands (the snapshot it started from, or nothing), and
    /// `snapshot` that snapshot. Snapshots wait for `gate`, if any.
    pub fn new(
        engine: Arc<EngineHandle>,
        dir: &Path,
        applied: AppliedPosition,
        snapshot: Option<StoredSnapshot>,
        gate: Option<Arc<dyn SnapshotGate>>,
    ) -> Self {
        StateMachine {
            engine,
            dir: dir.to_path_buf(),
            applied,
            current: Arc::new(Mutex::new(snapshot)),
            gate,
        }
    }

    /// Saves `snapshot` as the current one, unless the current one is as new or newer: a build
    /// (which openraft runs concurrently) may finish after a newer snapshot was installed, and
    /// must not replace it on disk. Runs on a blocking thread: it writes and syncs a file.
    async fn keep(&self, snapshot: StoredSnapshot) -> Result<(), std::io::Error> {
        let (current, dir) = (Arc::clone(&self.current), self.dir.clone());
        let last = snapshot.meta.last_log_id;
        let saved = tokio::task::spawn_blocking(move || {
            // A std mutex, held across the save so that two saves never interleave; nothing
            // awaits while it is held.
            let mut current = current.lock().unwrap_or_else(|p| p.into_inner());
            let newer = current
                .as_ref()
                .is_none_or(|c| snapshot.meta.last_log_id > c.meta.last_log_id);
            if newer {
                snapshot.save(&dir)?;
                *current = Some(snapshot);
            }
            Ok::<(), std::io::Error>(())
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|saved| saved);
        saved.map_err(|e| {
            let at = last.map_or(0, |id| id.index);
            std::io::Error::new(e.kind(), format!("saving the snapshot at {at}: {e}"))
        })
    }
}

/// Holds a snapshot back until a consumer of the engine's outputs that must not miss any (the
/// reporter) has taken everything up to it: a snapshot lets the log behind it be purged, and a
/// restart begins at the snapshot, so outputs before it could never be produced again.
pub trait SnapshotGate: Send + Sync + 'static {
    /// Blocks until the consumer has everything up to `index` (true), or `timeout` passed.
    fn wait_for(&self, index: u64, timeout: Duration) -> bool;
    /// Why the consumer stopped for good, if it did: then waiting is pointless.
    fn stopped(&self) -> Option<String>;
}

/// How long one wait for the gate lasts before the node says it is still waiting.
const GATE_WAIT: Duration = Duration::from_secs(5);

impl StateMachine {
    async fn pass_gate(&self, index: u64) {
        let Some(gate) = self.gate.clone() else {
            return;
        };
        loop {
            let waiting = Arc::clone(&gate);
            let passed = tokio::task::spawn_blocking(move || waiting.wait_for(index, GATE_WAIT))
                .await
                .unwrap_or(false);
            if passed {
                return;
            }
            if let Some(why) = gate.stopped() {
                tracing::error!(index, %why, "snapshot taken past a stopped reporter");
                return;
            }
            tracing::warn!(index, "the snapshot waits for the reporter to catch up");
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, std::io::Error> {
        let cut = self.engine.snapshot().await.map_err(sm_error)?;
        let last = cut.last_log_id;
        self.pass_gate(last.map_or(0, |id| id.index)).await;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: cut.membership,
        };
        tracing::debug!(
            index = last.map_or(0, |id| id.index),
            output_hash = format_args!("{:016x}", cut.output_hash),
            "built a snapshot"
        );
        let stored = StoredSnapshot {
            meta: meta.clone(),
            state: cut.bytes,
        };
        let data = stored.state.clone();
        self.keep(stored).await?;
        Ok(Snapshot {
            meta,
            snapshot: Cursor::new(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), std::io::Error> {
        Ok((self.applied.last_log_id, self.applied.membership.clone()))
    }

    async fn apply<S>(&mut self, entries: S) -> Result<(), std::io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, std::io::Error>> + Unpin + OptionalSend,
    {
        let entries: Vec<EntryResponder<TypeConfig>> = entries.try_collect().await?;
        let mut responders = Vec::with_capacity(entries.len());
        let committed: Vec<CommittedEntry> = entries
            .into_iter()
            .map(|(entry, responder)| {
                responders.push(responder);
                let (batch, membership) = match entry.payload {
                    EntryPayload::Blank => (None, None),
                    EntryPayload::Normal(batch) => (Some(batch), None),
                    EntryPayload::Membership(membership) => (
                        None,
                        Some(StoredMembership::new(Some(entry.log_id), membership)),
                    ),
                };
                CommittedEntry {
                    log_id: entry.log_id,
                    batch,
                    membership,
                }
            })
            .collect();
        let count = committed.len();
        if let Some(last) = committed.last() {
            self.applied.last_log_id = Some(last.log_id);
        }
        if let Some(membership) = committed.iter().rev().find_map(|e| e.membership.clone()) {
            self.applied.membership = membership;
        }
        let outcomes = self
            .engine
            .apply(committed)
            .await
            .map_err(|e: EngineStopped| sm_error(e))?;
        // Each entry's proposer waits for its outcome, and the engine thread gives one per
        // entry.
        if outcomes.len() != count {
            return Err(sm_error(format!(
                "the engine answered {} of {count} entries",
                outcomes.len()
            )));
        }
        for (outcome, responder) in outcomes.into_iter().zip(responders) {
            if let Some(responder) = responder {
                responder.send(Applied {
                    outputs: outcome.outputs,
                });
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), std::io::Error> {
        let bytes = snapshot.into_inner();
        let position = AppliedPosition {
            last_log_id: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        self.engine
            .restore(position.clone(), bytes.clone())
            .await
            .map_err(sm_error)?
            .map_err(sm_error)?;
        self.applied = position;
        self.keep(StoredSnapshot {
            meta: meta.clone(),
            state: bytes,
        })
        .await?;
        tracing::info!(
            index = meta.last_log_id.map_or(0, |id| id.index),
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, std::io::Error> {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(current.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Cursor::new(stored.state),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_file_round_trips_and_damage_is_detected() {
        let stored = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: Some(LogId::new(super::super::codec::leader_of(2, 1), 9)),
                last_membership: StoredMembership::default(),
            },
            state: vec![7; 100],
        };
        let bytes = stored.encode().expect("encode");
        let back = StoredSnapshot::decode(&bytes).expect("decode");
        assert_eq!(back.meta, stored.meta);
        assert_eq!(back.state, stored.state);
        for cut in [0, 10, bytes.len() - 1] {
            assert!(StoredSnapshot::decode(&bytes[..cut]).is_err());
        }
        let mut flipped = bytes.clone();
        flipped[40] ^= 1;
        assert!(StoredSnapshot::decode(&flipped).is_err());
    }
}
