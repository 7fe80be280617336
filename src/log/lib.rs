//! The mmap event log: Raft's log on disk, read zero-copy by the engine thread.
//!
//! It knows records (term, index, payload bytes), not Raft and not orders.
//!
//! # Map
//!
//! - `record`: the record format (header, CRC32C, alignment).
//! - `segment`: one preallocated, memory-mapped segment file.
//! - `offsets`: where each record of a segment starts, for reads by index.
//! - `recovery`: opening a log: checking every record, cutting a torn tail.
//! - `log`: the writer, `Log`: append with a flush policy, sync, truncate, purge.
//! - `reader`: `LogReader`, reading from other threads while the writer appends.
//! - `meta`: `MetaFile`, a small value replaced atomically (the first index).
//! - `slots`: `SlotFile`, a small value overwritten in place (Raft's vote).
//! - `dir`: file names in the log directory; `config`, `error`: the rest.
//!
//! # On disk
//!
//! A directory of segment files, each named by the index of its first record
//! (`00000000000000000042.seg`), preallocated to `Config::segment_bytes` and filled front to
//! back with records:
//!
//! ```text
//! segment: [header 32 B: magic, version, crc, first index][record][record]...[zeros]
//! record:  [len u32][crc32c u32][term u64][index u64][payload, padded to 8 bytes]
//! ```
//!
//! The CRC covers len, term, index and payload. Payloads start 8-byte aligned in the map, so
//! an rkyv archive can be read in place. Indexes are contiguous across segments. A file
//! `first-index.meta` (a `MetaFile`) holds the first index not purged.
//!
//! # Durability
//!
//! `FlushPolicy::Always` syncs each record, `Batch` each append call (group commit), `Never`
//! leaves it to the kernel; `Log::sync` syncs everything. `Appended::durable` tells the caller
//! when it may report the entries durable. Truncate and purge are durable on return.
//!
//! On open, every segment but the last must be intact (else `Error::Corrupt` names the file
//! and byte); the last one is read up to its first bad record, which is where a crash tore
//! the writes, and cut there. A crash can tear a batch that crossed into new segments, so
//! trailing segments that hold no record at all are removed first (durably), and the one
//! before them is the last. Opening never panics on any file content.
//!
//! # Concurrency
//!
//! One writer (`Log`, which takes `&mut self`) and any number of `LogReader`s on other
//! threads. The writer encodes a batch into a buffer of its own and writes it to the segment
//! file in one `pwrite` (a short one it copies straight into the map instead); either way the
//! bytes are in the page cache, which the readers' map shows, when the call returns. Only then
//! does it publish the new end with a Release store; readers load it with Acquire and read only
//! below it, so they never see a half-written record and take no lock per record. The segment table is shared as an `Arc` swapped under a
//! mutex when a segment is added or removed; readers notice through a generation counter and
//! take the lock about once per segment.
//!
//! Contract for truncate and purge: a reader must stay within the records it may rely on. A
//! record being truncated or purged while a reader reads it comes back as
//! `Error::IndexOutOfRange` or as the old record, never as torn bytes or freed memory, since
//! the writer never rewrites bytes a reader could be reading and a removed segment stays
//! mapped while any reader still holds it. Raft gives this for free: the engine reads only
//! committed entries, which are never truncated, and purges only what a snapshot covers.
//!
//! The directory belongs to one process: another process writing to the files while they are
//! mapped would break the zero-copy reads.

mod config;
mod dir;
mod error;
mod log;
mod meta;
mod offsets;
mod reader;
mod record;
mod recovery;
mod segment;
mod slots;

pub use config::{Config, FlushPolicy, SEGMENT_BYTES_ALIGN, SEGMENT_BYTES_DEFAULT};
pub use error::{Damage, Error, Result};
pub use log::{Appended, Log, SyncJob};
pub use meta::{MetaFile, META_VALUE_BYTES_MAX};
pub use reader::{LogReader, Position, RecordIter};
pub use record::{Record, RECORD_ALIGN, RECORD_HEADER_BYTES};
pub use segment::{SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN};
pub use slots::{SlotFile, SLOT_VALUE_BYTES_MAX};
