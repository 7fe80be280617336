//! Readers: follow the published watermark, borrow payloads from the maps, no lock per record.
//!
//! The writer and all readers share one `Shared`. The writer writes a batch to the file, fills
//! the offset slots, then stores the new end with Release; a reader loads the end with Acquire,
//! so every record below it is fully visible. The segment table (which files exist) is an
//! `Arc<Table>` behind a mutex: the writer swaps in a new one when it adds or removes a
//! segment and then bumps `generation`; a reader compares the generation (one atomic load) and
//! takes the lock only when it changed, about once per segment.
//!
//! A truncate or purge may remove records a reader is about to read. The reader then gets
//! `Error::IndexOutOfRange` or, if it raced past the check, the old record, but never torn
//! bytes or freed memory: removed segments stay mapped while a reader's table holds them, and
//! truncated bytes are never rewritten (see `segment`). Raft truncates only uncommitted entries
//! and purges only entries a snapshot covers, so a reader that stays within the committed range
//! and ahead of the purge point never sees either.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::record::{Record, RECORD_ALIGN, RECORD_HEADER_BYTES};
use crate::segment::Segment;

/// The segments of the log, in index order. Immutable once shared; the writer makes a new one.
#[derive(Debug, Default)]
pub(crate) struct Table {
    pub segments: Vec<Arc<Segment>>,
    pub generation: u64,
}

impl Table {
    /// The position in `segments` of the one that would hold `index`.
    fn find(&self, index: u64, hint: usize) -> Option<usize> {
        let segments = &self.segments;
        let holds = |k: usize| {
            segments[k].first_index() <= index
                && segments
                    .get(k + 1)
                    .is_none_or(|next| index < next.first_index())
        };
        if hint < segments.len() && holds(hint) {
            return Some(hint);
        }
        segments
            .partition_point(|s| s.first_index() <= index)
            .checked_sub(1)
    }
}

/// Keeps a hot atomic on its own cache line, so that readers polling one do not slow the
/// writer storing another.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct CachePadded<T>(pub T);

/// State the writer publishes to readers.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// One past the last appended record: readers may read below it.
    pub end: CachePadded<AtomicU64>,
    /// One past the last durable record.
    pub durable: CachePadded<AtomicU64>,
    /// The first index not purged.
    pub first: AtomicU64,
    /// Bumped after every change of `table`.
    pub generation: AtomicU64,
    pub table: Mutex<Arc<Table>>,
}

impl Shared {
    pub fn table(&self) -> Arc<Table> {
        // The mutex guards a pointer swap, which cannot be left half done: ignore poisoning.
        Arc::clone(&self.table.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Install a new segment table. Readers switch to it at their next read.
    pub fn publish_table(&self, segments: Vec<Arc<Segment>>) -> Arc<Table> {
        let mut guard = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let generation = guard.generation + 1;
        let table = Arc::new(Table {
            segments,
            generation,
        });
        *guard = Arc::clone(&table);
        self.generation.store(generation, Ordering::Release);
        table
    }
}

/// A handle for reading the log from any thread, while the writer appends. Cheap to clone.
///
/// Reads take `&mut self` to update the cached segment table, so a record borrowed from one
/// read lives until the next; use `range` to hold many at once.
#[derive(Debug, Clone)]
pub struct LogReader {
    shared: Arc<Shared>,
    table: Arc<Table>,
    /// The segment of the last read: sequential reads find the next record there.
    hint: usize,
}

impl LogReader {
    pub(crate) fn new(shared: Arc<Shared>) -> LogReader {
        let table = shared.table();
        LogReader {
            shared,
            table,
            hint: 0,
        }
    }

    /// The first index still in the log.
    pub fn first_index(&self) -> u64 {
        self.shared.first.load(Ordering::Acquire)
    }

    /// One past the last record readers may read (the published watermark).
    pub fn next_index(&self) -> u64 {
        self.shared.end.0.load(Ordering::Acquire)
    }

    /// The last record readers may read, if any.
    pub fn last_index(&self) -> Option<u64> {
        let (first, next) = (self.first_index(), self.next_index());
        (next > first).then(|| next - 1)
    }

    /// One past the last durable record.
    pub fn durable_next_index(&self) -> u64 {
        self.shared.durable.0.load(Ordering::Acquire)
    }

    /// The record at `index`, its payload borrowed from the map.
    pub fn get(&mut self, index: u64) -> Result<Record<'_>> {
        let next = self.refresh();
        let first = self.first_index();
        if index < first || index >= next {
            return Err(Error::IndexOutOfRange { index, first, next });
        }
        let hint = &mut self.hint;
        read(&self.table, &self.shared, hint, index)
    }

    /// The records in `range`, which must lie within the log. The iterator yields an error only
    /// if a concurrent truncate or purge removes a record before it is read.
    pub fn range(&mut self, range: Range<u64>) -> Result<RecordIter<'_>> {
        let next = self.refresh();
        let first = self.first_index();
        let out_of_range = |index| Error::IndexOutOfRange { index, first, next };
        if range.start > range.end {
            return Err(out_of_range(range.start));
        }
        if range.start < first && range.start < range.end {
            return Err(out_of_range(range.start));
        }
        if range.end > next {
            return Err(out_of_range(range.end - 1));
        }
        Ok(RecordIter {
            table: &self.table,
            shared: &self.shared,
            hint: self.hint,
            range,
        })
    }

    /// Where the record at `index` lies on disk: for diagnostics and audits ("index 17 is at
    /// byte 4096 of 00000000000000000001.seg").
    pub fn position(&mut self, index: u64) -> Result<Position> {
        let record = self.get(index)?;
        let bytes = (RECORD_HEADER_BYTES + record.payload.len()) as u64;
        let segment = &self.table.segments[self.hint];
        let offset = segment
            .offsets
            .get(index - segment.first_index())
            .map_or(0, u64::from);
        Ok(Position {
            segment: segment.path().to_path_buf(),
            offset,
            bytes,
        })
    }

    /// Load the watermark and, if the segment table changed, the new table. Returns the end.
    fn refresh(&mut self) -> u64 {
        // Load the end before the generation: a table change is published before any end
        // that depends on it, so seeing the end implies seeing the generation bump.
        let next = self.shared.end.0.load(Ordering::Acquire);
        if self.shared.generation.load(Ordering::Acquire) != self.table.generation {
            self.table = self.shared.table();
            self.hint = 0;
        }
        next
    }
}

/// Read `index` from `table`; the caller checked it is below the end it loaded.
fn read<'t>(table: &'t Table, shared: &Shared, hint: &mut usize, index: u64) -> Result<Record<'t>> {
    let removed = || Error::IndexOutOfRange {
        index,
        first: shared.first.load(Ordering::Acquire),
        next: shared.end.0.load(Ordering::Acquire),
    };
    let k = table.find(index, *hint).ok_or_else(removed)?;
    *hint = k;
    let segment = &table.segments[k];
    let offset = segment
        .offsets
        .get(index - segment.first_index())
        .ok_or_else(removed)? as usize;
    // A truncate zeroes the header of its first removed record: check the header is still the
    // one we want, and take the length from it only within the file.
    let header = segment.header(offset).ok_or_else(removed)?;
    if header.index != index {
        return Err(removed());
    }
    let payload = segment.payload(offset, header.len).ok_or_else(removed)?;
    debug_assert!((payload.as_ptr() as usize).is_multiple_of(RECORD_ALIGN));
    Ok(Record {
        term: header.term,
        index,
        payload,
    })
}

/// Where a record lies: `bytes` bytes (header and payload, without padding) from `offset` in
/// the file `segment`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub segment: PathBuf,
    pub offset: u64,
    pub bytes: u64,
}

/// The records of a range, in order, borrowed from the reader's segment table.
#[derive(Debug)]
pub struct RecordIter<'a> {
    table: &'a Table,
    shared: &'a Shared,
    hint: usize,
    range: Range<u64>,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Record<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        let index = self.range.next()?;
        Some(read(self.table, self.shared, &mut self.hint, index))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.range.size_hint()
    }
}
