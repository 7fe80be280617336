//! How a Raft entry sits in a log record.
//!
//! The record carries the term and index; the payload carries the rest:
//!
//! ```text
//! [kind u64][leader node id u64][body]
//! kind 0: blank (a new leader's first entry), no body
//! kind 1: a batch of commands, body = its rkyv archive (8-byte aligned: read in place)
//! kind 2: a membership change, body = postcard of openraft's Membership
//! ```

use openraft::EntryPayload;

use super::batch::Batch;
use super::types::{CommittedLeaderId, Entry, LogId, Membership};

const KIND_BLANK: u64 = 0;
const KIND_BATCH: u64 = 1;
const KIND_MEMBERSHIP: u64 = 2;
/// Kind and leader id, in whole words so the body stays 8-byte aligned.
pub const PAYLOAD_HEADER_BYTES: usize = 16;

/// A record that is not a valid entry: the log's checksum passed, so this is a bug or a
/// version mismatch, never a torn write.
#[derive(Debug)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "undecodable log entry: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// An entry that could not be encoded: it is never written (an empty or partial record would
/// be replicated as if it were the entry).
#[derive(Debug)]
pub struct EncodeError(pub String);

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "log entry not encodable: {}", self.0)
    }
}

impl std::error::Error for EncodeError {}

/// Appends the payload of `entry` to `out`; on an error `out` is as it was.
pub fn encode_payload(entry: &Entry, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    // Encoded first, so that a failure leaves nothing behind.
    let membership = match &entry.payload {
        EntryPayload::Membership(membership) => Some(
            postcard::to_allocvec(membership)
                .map_err(|e| EncodeError(format!("entry {}: {e}", entry.log_id.index)))?,
        ),
        _ => None,
    };
    let kind = match &entry.payload {
        EntryPayload::Blank => KIND_BLANK,
        EntryPayload::Normal(_) => KIND_BATCH,
        EntryPayload::Membership(_) => KIND_MEMBERSHIP,
    };
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&entry.log_id.leader_id.node_id.to_le_bytes());
    match &entry.payload {
        EntryPayload::Blank => {}
        // The archive goes straight into the record, with no intermediate copy.
        EntryPayload::Normal(batch) => out.extend_from_slice(&batch.to_bytes()),
        // Rare, so a copy is fine.
        EntryPayload::Membership(_) => out.extend_from_slice(membership.as_deref().unwrap_or(&[])),
    }
    Ok(())
}

/// Rebuilds the entry stored at (`term`, `index`) from its payload.
pub fn decode(term: u64, index: u64, payload: &[u8]) -> Result<Entry, DecodeError> {
    if payload.len() < PAYLOAD_HEADER_BYTES {
        return Err(DecodeError(format!(
            "entry {index}: payload of {} bytes",
            payload.len()
        )));
    }
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&payload[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    let (kind, leader) = (word(0), word(8));
    let body = &payload[PAYLOAD_HEADER_BYTES..];
    let payload = match kind {
        KIND_BLANK => EntryPayload::Blank,
        KIND_BATCH => EntryPayload::Normal(
            Batch::from_bytes(body).map_err(|e| DecodeError(format!("entry {index}: {e}")))?,
        ),
        KIND_MEMBERSHIP => EntryPayload::Membership(
            postcard::from_bytes::<Membership>(body)
                .map_err(|e| DecodeError(format!("entry {index}: {e}")))?,
        ),
        other => return Err(DecodeError(format!("entry {index}: unknown kind {other}"))),
    };
    Ok(Entry {
        log_id: LogId::new(leader_of(term, leader), index),
        payload,
    })
}

/// The log id of the entry stored at (`term`, `index`), from its payload's header alone.
pub fn log_id(term: u64, index: u64, payload: &[u8]) -> Result<LogId, DecodeError> {
    if payload.len() < PAYLOAD_HEADER_BYTES {
        return Err(DecodeError(format!(
            "entry {index}: payload of {} bytes",
            payload.len()
        )));
    }
    let mut leader = [0u8; 8];
    leader.copy_from_slice(&payload[8..16]);
    Ok(LogId::new(
        leader_of(term, u64::from_le_bytes(leader)),
        index,
    ))
}

/// The leader of `term`, `node`, as a log id names it.
pub fn leader_of(term: u64, node: u64) -> CommittedLeaderId {
    CommittedLeaderId {
        term,
        node_id: node,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::replication::types::{NodeAddr, SnapshotMeta, StoredMembership, Vote};

    fn round_trip(entry: Entry) {
        let mut payload = Vec::new();
        encode_payload(&entry, &mut payload).expect("encode");
        let back =
            decode(entry.log_id.leader_id.term, entry.log_id.index, &payload).expect("decode");
        assert_eq!(back.log_id, entry.log_id);
        assert_eq!(
            format!("{:?}", back.payload),
            format!("{:?}", entry.payload)
        );
        assert_eq!(
            log_id(entry.log_id.leader_id.term, entry.log_id.index, &payload).expect("id"),
            entry.log_id
        );
    }

    #[test]
    fn every_kind_of_entry_round_trips() {
        let id = LogId::new(leader_of(3, 2), 41);
        round_trip(Entry {
            log_id: id,
            payload: EntryPayload::Blank,
        });
        round_trip(Entry {
            log_id: id,
            payload: EntryPayload::Normal(Batch {
                timestamp_ns: 9,
                commands: vec![],
            }),
        });
        let nodes = BTreeMap::from([(
            1,
            NodeAddr {
                raft: "a".into(),
                broker: "b".into(),
            },
        )]);
        let membership = Membership::new(vec![BTreeSet::from([1])], nodes).expect("membership");
        round_trip(Entry {
            log_id: id,
            payload: EntryPayload::Membership(membership),
        });
    }

    #[test]
    fn damaged_payloads_are_errors() {
        assert!(decode(1, 1, &[1, 2, 3]).is_err());
        let mut unknown = vec![0u8; 16];
        unknown[0] = 9;
        assert!(decode(1, 1, &unknown).is_err());
        let mut batch = vec![0u8; 16];
        batch[0] = 1;
        batch.extend_from_slice(&[0xff; 5]);
        assert!(decode(1, 1, &batch).is_err());
    }

    fn hex(value: &impl serde::Serialize) -> String {
        let bytes = postcard::to_allocvec(value).expect("encode");
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn bytes(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// The openraft types this node keeps on disk (the vote, the purge point, membership
    /// entries, the snapshot's meta) encode to the bytes openraft 0.9 wrote, so a data
    /// directory written before the move to 0.10 opens as it was.
    #[test]
    fn stored_openraft_types_keep_the_bytes_openraft_0_9_wrote() {
        let id = LogId::new(leader_of(7, 3), 42);
        assert_eq!(hex(&Vote::new(7, 3)), "070300");
        assert_eq!(hex(&Vote::new_committed(7, 3)), "070301");
        assert_eq!(hex(&id), "07032a");
        let nodes = BTreeMap::from([
            (
                1,
                NodeAddr {
                    raft: "a".into(),
                    broker: "b".into(),
                },
            ),
            (
                2,
                NodeAddr {
                    raft: "c".into(),
                    broker: "d".into(),
                },
            ),
        ]);
        let membership = Membership::new(vec![BTreeSet::from([1, 2])], nodes).expect("membership");
        let membership_hex = "010201020201016101620201630164";
        assert_eq!(hex(&membership), membership_hex);
        let stored = StoredMembership::new(Some(id), membership);
        assert_eq!(hex(&stored), format!("0107032a{membership_hex}"));
        let meta = SnapshotMeta {
            last_log_id: Some(id),
            last_membership: stored,
        };
        // 0.9's meta ended with a snapshot id ("7-42-00ff" here); 0.10 writes it empty and
        // ignores it on reading.
        assert_eq!(hex(&meta), format!("0107032a0107032a{membership_hex}00"));
        let written_by_0_9 = bytes(&format!(
            "0107032a0107032a{membership_hex}09372d34322d30306666"
        ));
        let read: SnapshotMeta = postcard::from_bytes(&written_by_0_9).expect("0.9 meta");
        assert_eq!(read, meta);
        let entry = Entry {
            log_id: id,
            payload: EntryPayload::Blank,
        };
        assert_eq!(hex(&entry.log_id), "07032a");
    }
}
