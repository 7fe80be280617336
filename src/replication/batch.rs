//! The unit the leader proposes and Raft replicates: a batch of commands with the leader's
//! timestamp. Each command's sequence number (the engine's input `seq`, and so the id of an
//! order it creates) derives from the log position: `index << 16 | position in the batch`.

use exchange_domain::{BrokerCommand, Input};
use serde::{Deserialize, Serialize};

/// Commands in one batch: an entry stays small enough (about 200 KiB) that a follower can
/// receive, decode, write and sync a few of them within one heartbeat.
pub const BATCH_COMMANDS_MAX: usize = 2_048;
/// The sequence number gives a command's position in its batch 16 bits.
pub const SEQ_POSITION_BITS: u32 = 16;
const _: () = assert!(BATCH_COMMANDS_MAX <= 1 << SEQ_POSITION_BITS);
/// Log indexes must leave room for the position bits in a u64 sequence number.
pub const LOG_INDEX_MAX: u64 = u64::MAX >> SEQ_POSITION_BITS;

/// Serialized (for the log, and inside Raft's messages) as its rkyv archive, so the bytes on
/// disk and on the wire are the same and a reader can check them without a second format.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Batch {
    /// The leader's wall clock when it proposed the batch, never below any earlier batch's.
    pub timestamp_ns: u64,
    pub commands: Vec<BrokerCommand>,
}

/// How openraft's logs name an entry's payload.
impl std::fmt::Display for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "batch of {} commands at {} ns",
            self.commands.len(),
            self.timestamp_ns
        )
    }
}

/// The alignment an archived batch needs where it is read in place (the log keeps payloads
/// 8-byte aligned).
pub const BATCH_ARCHIVE_ALIGN: usize = 8;
const _: () = assert!(std::mem::align_of::<ArchivedBatch>() <= BATCH_ARCHIVE_ALIGN);

impl Serialize for Batch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> serde::de::Visitor<'de> for BytesVisitor {
            type Value = Batch;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the bytes of an archived batch")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Batch, E> {
                Batch::from_bytes(bytes).map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Batch, A::Error> {
                let mut bytes = Vec::new();
                while let Some(byte) = seq.next_element::<u8>()? {
                    bytes.push(byte);
                }
                self.visit_bytes(&bytes)
            }
        }
        deserializer.deserialize_bytes(BytesVisitor)
    }
}

/// Why bytes are not a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchError {
    /// Not a valid archive of a batch.
    Malformed(String),
    /// More commands than one entry may carry.
    TooManyCommands(usize),
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Malformed(why) => write!(f, "not a batch: {why}"),
            BatchError::TooManyCommands(n) => write!(
                f,
                "a batch of {n} commands (at most {BATCH_COMMANDS_MAX} fit one entry's sequence numbers)"
            ),
        }
    }
}

impl std::error::Error for BatchError {}

/// The engine's sequence number of the command at `position` in the batch at log `index`.
pub fn seq_of(index: u64, position: usize) -> u64 {
    debug_assert!(index <= LOG_INDEX_MAX && position < BATCH_COMMANDS_MAX);
    (index << SEQ_POSITION_BITS) | position as u64
}

/// The log index and batch position a sequence number (or order id) came from.
pub fn position_of(seq: u64) -> (u64, usize) {
    (
        seq >> SEQ_POSITION_BITS,
        (seq & ((1 << SEQ_POSITION_BITS) - 1)) as usize,
    )
}

impl Batch {
    /// The batch's rkyv archive.
    pub fn to_bytes(&self) -> rkyv::util::AlignedVec {
        match rkyv::to_bytes::<rkyv::rancor::Error>(self) {
            Ok(bytes) => bytes,
            // Plain owned data into a growable buffer: no failure mode.
            Err(error) => unreachable!("batch serialization failed: {error}"),
        }
    }

    /// Decodes and validates an archive; `bytes` may be unaligned (it is then copied). A
    /// batch of more than `BATCH_COMMANDS_MAX` commands is refused: `seq_of` does not number
    /// past it (and past 65,536 the numbers would run into the next entry's), and a peer, not
    /// only this node's own sequencer, can send one.
    pub fn from_bytes(bytes: &[u8]) -> Result<Batch, BatchError> {
        let batch = if (bytes.as_ptr() as usize).is_multiple_of(BATCH_ARCHIVE_ALIGN) {
            rkyv::from_bytes::<Batch, rkyv::rancor::Error>(bytes)
        } else {
            let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
            aligned.extend_from_slice(bytes);
            rkyv::from_bytes::<Batch, rkyv::rancor::Error>(&aligned)
        }
        .map_err(|e| BatchError::Malformed(e.to_string()))?;
        if batch.commands.len() > BATCH_COMMANDS_MAX {
            return Err(BatchError::TooManyCommands(batch.commands.len()));
        }
        Ok(batch)
    }

    /// The engine inputs of this batch, committed at log `index`.
    pub fn inputs(&self, index: u64) -> impl Iterator<Item = Input> + '_ {
        self.commands
            .iter()
            .enumerate()
            .map(move |(position, submitted)| Input {
                seq: seq_of(index, position),
                timestamp_ns: self.timestamp_ns,
                broker: submitted.broker,
                command: submitted.command,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_survives_postcard_and_json_and_rejects_garbage() {
        let batch = Batch {
            timestamp_ns: 5,
            commands: vec![BrokerCommand {
                broker: exchange_domain::BrokerId(9),
                command: exchange_domain::Command::MassCancel(exchange_domain::MassCancel {
                    account: exchange_domain::AccountId(3),
                    symbol: None,
                }),
            }],
        };
        let wire = postcard::to_allocvec(&batch).expect("encode");
        assert_eq!(postcard::from_bytes::<Batch>(&wire).expect("decode"), batch);
        let json = serde_json::to_string(&batch).expect("json");
        assert_eq!(
            serde_json::from_str::<Batch>(&json).expect("json back"),
            batch
        );
        let mut bytes = batch.to_bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        bytes.truncate(bytes.len() / 2);
        assert!(Batch::from_bytes(&bytes).is_err());
        assert!(Batch::from_bytes(&[]).is_err());
    }

    /// A peer's entry with one command too many is refused when decoded, before it can reach
    /// the log or the engine (it used to decode, and numbering it stopped the engine thread).
    #[test]
    fn a_batch_of_too_many_commands_is_refused() {
        let command = BrokerCommand {
            broker: exchange_domain::BrokerId(9),
            command: exchange_domain::Command::MassCancel(exchange_domain::MassCancel {
                account: exchange_domain::AccountId(3),
                symbol: None,
            }),
        };
        let full = Batch {
            timestamp_ns: 5,
            commands: vec![command; BATCH_COMMANDS_MAX],
        };
        assert_eq!(Batch::from_bytes(&full.to_bytes()), Ok(full.clone()));
        let mut over = full;
        over.commands.push(command);
        assert_eq!(
            Batch::from_bytes(&over.to_bytes()),
            Err(BatchError::TooManyCommands(BATCH_COMMANDS_MAX + 1))
        );
        let wire = postcard::to_allocvec(&over).expect("encode");
        assert!(
            postcard::from_bytes::<Batch>(&wire).is_err(),
            "nor over the wire"
        );
    }

    #[test]
    fn sequence_numbers_rise_with_index_then_position() {
        assert!(seq_of(1, BATCH_COMMANDS_MAX - 1) < seq_of(2, 0));
        assert_eq!(position_of(seq_of(77, 5)), (77, 5));
        assert_eq!(position_of(seq_of(LOG_INDEX_MAX, 0)), (LOG_INDEX_MAX, 0));
    }
}
