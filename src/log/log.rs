//! The writer: append, sync, truncate, purge.

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::config::{Config, FlushPolicy};
use crate::dir;
use crate::error::{Error, Result};
use crate::meta::MetaFile;
use crate::reader::{LogReader, RecordIter, Shared, Table};
use crate::record::{record_bytes, Header, Record, RECORD_HEADER_BYTES};
use crate::recovery;
use crate::segment::{self, payload_bytes_max, Segment, SEGMENT_HEADER_BYTES};

/// The meta file in the log directory holding the first index not purged.
const FIRST_INDEX_FILE: &str = "first-index.meta";

/// What an append achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The last index in the log (None only for an empty batch on an empty log).
    pub last_index: Option<u64>,
    /// Whether everything up to `last_index` is on disk. Always true after an append under
    /// `Always` or `Batch`; under `Never`, true only once `sync` ran.
    pub durable: bool,
}

/// The one writer of a log directory. Readers come from `reader()`.
pub struct Log {
    dir: PathBuf,
    config: Config,
    meta: MetaFile,
    shared: Arc<Shared>,
    /// The writer's copy of the segment table (the one readers see).
    table: Arc<Table>,
    /// The segment being appended to. None until the next append starts a new one: the writer
    /// never appends to a segment it did not create in this process, nor after a truncate.
    active: Option<Active>,
    first_index: u64,
    next_index: u64,
    /// Written but unsynced ranges of segments no longer active (under `Never`).
    pending: Vec<Pending>,
    /// Segment files made or removed since the last directory sync (under `Never`).
    dir_pending: bool,
    /// Records encoded but not yet written to the active segment: they go in one write at the
    /// end of the batch (or when this grows to `STAGE_BYTES_MAX`). Empty between calls.
    stage: Vec<u8>,
    /// The index of the first staged record.
    stage_first: u64,
    reader: LogReader,
}

/// Staged bytes that trigger a write in the middle of a batch, and the largest record that is
/// staged (a larger one is written on its own, not copied twice). Big enough that the system
/// call is lost in the copy, small enough to stay in the cache.
const STAGE_BYTES_MAX: usize = 256 << 10;

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("first_index", &self.first_index)
            .field("next_index", &self.next_index)
            .field("segments", &self.table.segments.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Active {
    segment: Arc<Segment>,
    /// Where the next record goes (staged records included).
    offset: usize,
    /// Bytes before this are in the file; staged records lie from here to `offset`.
    written: usize,
    /// Bytes before this are on disk.
    synced: usize,
    /// Bytes before this have their blocks in the file (records, or zeros written ahead of
    /// them: `Segment::allocate`).
    allocated: usize,
}

impl Active {
    /// Allocate the segment's blocks through `end`, and some way past it.
    ///
    /// # Safety
    ///
    /// As for `Segment::write`: the one writer, and `end` past the published end.
    unsafe fn allocate_through(&mut self, end: usize) -> Result<()> {
        if end <= self.allocated {
            return Ok(());
        }
        let to = (end + ALLOCATE_AHEAD_BYTES).min(self.segment.len());
        // SAFETY: `allocated` is at or past `written`, so `allocated..to` holds no record and
        // lies past the published end (the caller's contract).
        unsafe { self.segment.allocate(self.allocated, to)? };
        self.allocated = to;
        Ok(())
    }
}

/// How far ahead of the records a segment's blocks are allocated: one allocation (and one
/// journal commit) per this many bytes of log, not one per sync.
const ALLOCATE_AHEAD_BYTES: usize = 1 << 20;

#[derive(Debug)]
struct Pending {
    segment: Arc<Segment>,
    from: usize,
    to: usize,
}

impl Log {
    /// Open the log in `dir` (made if missing), recovering from a crash: see `recovery`.
    ///
    /// One process at a time may open a directory: nothing stops a second, and two writers
    /// corrupt each other.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Log> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let meta = MetaFile::new(dir.join(FIRST_INDEX_FILE));
        let recovered = recovery::recover(&dir, &meta, &config)?;
        let shared = Arc::new(Shared::default());
        shared.first.store(recovered.first_index, Ordering::Release);
        shared.end.0.store(recovered.next_index, Ordering::Release);
        shared
            .durable
            .0
            .store(recovered.next_index, Ordering::Release);
        let table = shared.publish_table(recovered.segments);
        let reader = LogReader::new(Arc::clone(&shared));
        Ok(Log {
            dir,
            config,
            meta,
            shared,
            table,
            active: None,
            first_index: recovered.first_index,
            next_index: recovered.next_index,
            pending: Vec::new(),
            dir_pending: false,
            stage: Vec::new(),
            stage_first: recovered.next_index,
            reader,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The first index not purged (equal to `next_index` when the log is empty).
    pub fn first_index(&self) -> u64 {
        self.first_index
    }

    /// The index the next append must carry.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    pub fn last_index(&self) -> Option<u64> {
        (self.next_index > self.first_index).then(|| self.next_index - 1)
    }

    /// One past the last durable record.
    pub fn durable_next_index(&self) -> u64 {
        self.shared.durable.0.load(Ordering::Acquire)
    }

    /// The largest payload a record may carry with this configuration.
    pub fn payload_bytes_max(&self) -> usize {
        payload_bytes_max(self.config.segment_bytes)
    }

    /// A reader for another thread.
    pub fn reader(&self) -> LogReader {
        LogReader::new(Arc::clone(&self.shared))
    }

    /// Read one record (see `LogReader::get`).
    pub fn get(&mut self, index: u64) -> Result<Record<'_>> {
        self.reader.get(index)
    }

    /// Read a range of records (see `LogReader::range`).
    pub fn range(&mut self, range: Range<u64>) -> Result<RecordIter<'_>> {
        self.reader.range(range)
    }

    /// Append one record; see `append_batch`.
    pub fn append(&mut self, record: Record<'_>) -> Result<Appended> {
        self.append_batch([record])
    }

    /// Append records, each carrying the next index, and sync as the flush policy says.
    ///
    /// On an error (a wrong index, a record too large, a failed write) the records before the
    /// failing one stay appended and visible to readers, but are not synced; `next_index` says
    /// where the log stands.
    pub fn append_batch<'a>(
        &mut self,
        records: impl IntoIterator<Item = Record<'a>>,
    ) -> Result<Appended> {
        self.append_unsynced(records)?;
        if self.config.flush == FlushPolicy::Batch {
            self.sync()?;
        }
        Ok(Appended {
            last_index: self.last_index(),
            durable: self.durable_next_index() == self.next_index,
        })
    }

    /// As [`Log::append_batch`], but under `FlushPolicy::Batch` without the sync: readers see
    /// the records at once, and the caller makes them durable with one [`Log::sync`] when it
    /// likes (the node's log store: publish first, then sync). `Always` still syncs each
    /// record.
    pub fn append_unsynced<'a>(
        &mut self,
        records: impl IntoIterator<Item = Record<'a>>,
    ) -> Result<Appended> {
        let written = self.write_all(records);
        self.shared.end.0.store(self.next_index, Ordering::Release);
        written?;
        Ok(Appended {
            last_index: self.last_index(),
            durable: self.durable_next_index() == self.next_index,
        })
    }

    /// Write the records to the active segment, one write per batch (see `stage`). On return
    /// nothing is staged, and `next_index` is one past the last record written.
    fn write_all<'a>(&mut self, records: impl IntoIterator<Item = Record<'a>>) -> Result<()> {
        for record in records {
            if let Err(e) = self.stage_record(record) {
                // The records before this one stay appended.
                self.flush_stage()?;
                return Err(e);
            }
            if self.config.flush == FlushPolicy::Always {
                self.flush_stage()?;
                self.shared.end.0.store(self.next_index, Ordering::Release);
                self.sync()?;
            }
        }
        self.flush_stage()
    }

    /// Write the staged records to the active segment. On a failed write they are dropped
    /// (`next_index` goes back to the first of them) and the segment is left: some of their
    /// bytes may be in the file, past the records readers know, and the writer does not write
    /// those bytes twice. They become visible when the end is published.
    fn flush_stage(&mut self) -> Result<()> {
        if self.stage.is_empty() {
            return Ok(());
        }
        let Some(active) = self.active.as_mut() else {
            unreachable!("records are staged only into an active segment");
        };
        debug_assert_eq!(active.offset - active.written, self.stage.len());
        // SAFETY (both): `&mut self` makes us the one writer, and `active.written` (and
        // `allocated` after it) lies past every record published so far, in a segment this
        // process created: no reader can reach these bytes until `end` is stored after this
        // write.
        let end = active.offset;
        let written = unsafe { active.allocate_through(end) }
            .and_then(|()| unsafe { active.segment.write(active.written, &self.stage) });
        self.stage.clear();
        if self.stage.capacity() > STAGE_BYTES_MAX {
            self.stage.shrink_to(STAGE_BYTES_MAX);
        }
        match written {
            Ok(()) => {
                active.written = active.offset;
                Ok(())
            }
            Err(e) => {
                self.abandon_records(self.stage_first);
                Err(e)
            }
        }
    }

    /// Forget the unpublished records from `index` on after a failed write, and leave the
    /// active segment: the next append starts a new one at `index`.
    fn abandon_records(&mut self, index: u64) {
        if let Some(old) = self.active.take() {
            old.segment
                .offsets
                .clear_from(index - old.segment.first_index());
            self.pending.push(Pending {
                segment: old.segment,
                from: old.synced,
                to: old.written,
            });
        }
        self.next_index = index;
    }

    /// Encode one record into the stage (or, if it is large, write it on its own). It is in
    /// the file once the stage is flushed, and visible once the end is published.
    fn stage_record(&mut self, record: Record<'_>) -> Result<()> {
        if record.index != self.next_index {
            return Err(Error::NonContiguous {
                expected: self.next_index,
                got: record.index,
            });
        }
        let Some(next_index) = record.index.checked_add(1) else {
            return Err(Error::IndexOutOfRange {
                index: record.index,
                first: self.first_index,
                next: self.next_index,
            });
        };
        let max = self.payload_bytes_max();
        if record.payload.len() > max {
            return Err(Error::RecordTooLarge {
                payload_bytes: record.payload.len(),
                max,
            });
        }
        let bytes = record_bytes(record.payload.len());
        let fits = self
            .active
            .as_ref()
            .is_some_and(|a| a.offset + bytes <= a.segment.len());
        if !fits {
            self.flush_stage()?;
            self.start_segment()?;
        }
        // The payload fits a u32: it is at most payload_bytes_max(SEGMENT_BYTES_MAX).
        let header = Header::for_record(&record, record.payload.len() as u32);
        if bytes > STAGE_BYTES_MAX {
            // Too large to copy twice: write what is staged, then this record by itself.
            self.flush_stage()?;
            self.stage_first = record.index;
            let Some(active) = self.active.as_mut() else {
                unreachable!("start_segment sets the active segment");
            };
            let head = header.to_bytes();
            // SAFETY: as in `flush_stage`: we are the one writer, and these bytes lie past
            // the published end, in a segment this process created.
            let written = unsafe {
                active
                    .allocate_through(active.offset + bytes)
                    .and_then(|()| active.segment.write(active.offset, &head))
                    .and_then(|()| {
                        let payload_at = active.offset + RECORD_HEADER_BYTES;
                        active.segment.write(payload_at, record.payload)
                    })
            };
            // The padding after the payload is left as the file has it: zeros, since bytes
            // past the published end were never written (the CRC does not cover it anyway).
            match written {
                Ok(()) => {
                    active.offset += bytes;
                    active.written = active.offset;
                }
                Err(e) => {
                    self.abandon_records(record.index);
                    return Err(e);
                }
            }
        } else {
            let Some(active) = self.active.as_mut() else {
                unreachable!("start_segment sets the active segment");
            };
            if self.stage.is_empty() {
                self.stage_first = record.index;
            }
            self.stage.extend_from_slice(&header.to_bytes());
            self.stage.extend_from_slice(record.payload);
            self.stage.resize(
                self.stage.len() + bytes - RECORD_HEADER_BYTES - record.payload.len(),
                0,
            );
            active.offset += bytes;
        }
        let Some(active) = self.active.as_ref() else {
            unreachable!("start_segment sets the active segment");
        };
        let slot = record.index - active.segment.first_index();
        active
            .segment
            .offsets
            .set(slot, (active.offset - bytes) as u32);
        self.next_index = next_index;
        if self.stage.len() >= STAGE_BYTES_MAX {
            self.flush_stage()?;
        }
        Ok(())
    }

    /// Start a new segment at the next index, after the active one filled up, or because there
    /// is none (a new log, or after open, truncate or purge).
    fn start_segment(&mut self) -> Result<()> {
        if let Some(old) = self.active.take() {
            // The old segment is synced before anything goes into the new one, so a crash can
            // never leave later records on disk behind an unsynced, torn tail (which recovery
            // would have to treat as damage in the middle of the log). One sync per segment.
            // Synced here even when a `sync_later` job covers it: that job may not have run.
            old.segment.sync_range(SEGMENT_HEADER_BYTES, old.written)?;
        }
        let mut segments = self.table.segments.clone();
        // A segment that starts at the next index holds no record; the new one replaces it.
        if segments
            .last()
            .is_some_and(|s| s.first_index() == self.next_index)
        {
            segments.pop();
        }
        let durable = self.config.flush != FlushPolicy::Never;
        let segment = Arc::new(Segment::create(
            &self.dir,
            self.next_index,
            self.config.segment_bytes,
            durable,
        )?);
        self.dir_pending |= !durable;
        segments.push(Arc::clone(&segment));
        self.table = self.shared.publish_table(segments);
        self.active = Some(Active {
            segment,
            offset: SEGMENT_HEADER_BYTES,
            written: SEGMENT_HEADER_BYTES,
            synced: SEGMENT_HEADER_BYTES,
            allocated: SEGMENT_HEADER_BYTES,
        });
        Ok(())
    }

    /// Hand the sync of every record appended so far to another thread, so that the writer
    /// goes on appending while the disk works: the job's [`SyncJob::run`] makes them durable.
    /// Jobs may be merged ([`SyncJob::absorb`]) and run in any number, in order or not: each
    /// `fdatasync` writes back all of a file's dirty pages, whoever wrote them.
    ///
    /// The writer counts the records as synced from here on, so it must not rely on their
    /// durability (`truncate`, or reporting them durable) before the job has run. A segment
    /// that fills up is synced by the writer itself before the next one starts, as ever.
    pub fn sync_later(&mut self) -> SyncJob {
        let mut segments: Vec<Arc<Segment>> = self.pending.drain(..).map(|p| p.segment).collect();
        if let Some(active) = self.active.as_mut() {
            if active.written > active.synced {
                segments.push(Arc::clone(&active.segment));
                active.synced = active.written;
            }
        }
        let dir = std::mem::take(&mut self.dir_pending).then(|| self.dir.clone());
        SyncJob {
            segments,
            dir,
            next_index: self.next_index,
            shared: Arc::clone(&self.shared),
        }
    }

    /// Make every appended record durable. Cheap when nothing is pending.
    pub fn sync(&mut self) -> Result<()> {
        while let Some(pending) = self.pending.last() {
            pending.segment.sync_range(pending.from, pending.to)?;
            self.pending.pop();
        }
        if let Some(active) = self.active.as_mut() {
            active.segment.sync_range(active.synced, active.written)?;
            active.synced = active.written;
        }
        if self.dir_pending {
            dir::sync_dir(&self.dir)?;
            self.dir_pending = false;
        }
        self.shared
            .durable
            .0
            .store(self.next_index, Ordering::Release);
        Ok(())
    }

    /// Remove the records from `index` on (Raft: a conflicting suffix). Durable on return,
    /// whatever the flush policy. A no-op when `index` is past the end.
    ///
    /// Readers must not rely on records from `index` on: one that reads them concurrently gets
    /// an error or the old record. Raft never truncates committed entries.
    pub fn truncate(&mut self, index: u64) -> Result<()> {
        if index >= self.next_index {
            return Ok(());
        }
        if index < self.first_index {
            return Err(Error::IndexOutOfRange {
                index,
                first: self.first_index,
                next: self.next_index,
            });
        }
        self.next_index = index;
        self.shared.end.0.store(index, Ordering::Release);
        self.shared.durable.0.fetch_min(index, Ordering::Release);
        if let Some(old) = self.active.take() {
            self.pending.push(Pending {
                segment: old.segment,
                from: old.synced,
                to: old.written,
            });
        }

        // Remove whole segments from the end, and make that durable before hiding records in
        // the segment that remains: a crash in between then leaves a shorter log, never a
        // segment that ends before the next one begins.
        let mut segments = self.table.segments.clone();
        let mut removed = false;
        while segments.last().is_some_and(|s| s.first_index() >= index) {
            if let Some(last) = segments.pop() {
                segment::remove(&last)?;
                removed = true;
            }
        }
        self.pending.retain(|p| p.segment.first_index() < index);
        if removed {
            dir::sync_dir(&self.dir)?;
        }
        if let Some(last) = segments.last() {
            let slot = index - last.first_index();
            if let Some(offset) = last.offsets.get(slot) {
                let offset = offset as usize;
                last.clear_header(offset);
                last.offsets.clear_from(slot);
                last.sync_range(offset, offset + RECORD_HEADER_BYTES)?;
            }
        }
        self.table = self.shared.publish_table(segments);
        Ok(())
    }

    /// Remove the records up to and including `upto` (Raft: covered by a snapshot). Durable on
    /// return. Whole segments go; the one holding `upto + 1` stays, and the first index is
    /// kept in a meta file. Purging past the end empties the log, and the next append must
    /// carry `upto + 1`.
    ///
    /// Readers still reading below `upto` get `IndexOutOfRange`; a record already read stays
    /// valid (the segment's map lives until the last reader lets go of it).
    pub fn purge(&mut self, upto: u64) -> Result<()> {
        let Some(first) = upto.checked_add(1) else {
            return Err(Error::IndexOutOfRange {
                index: upto,
                first: self.first_index,
                next: self.next_index,
            });
        };
        if first <= self.first_index {
            return Ok(());
        }
        // The meta file first: after a crash, recovery removes what it says is purged.
        self.meta.write(&first.to_le_bytes())?;
        self.first_index = first;
        self.shared.first.store(first, Ordering::Release);
        if self.next_index <= first {
            self.next_index = first;
            self.shared.end.0.store(first, Ordering::Release);
            self.shared.durable.0.store(first, Ordering::Release);
            self.active = None;
        }

        let mut segments = self.table.segments.clone();
        let mut keep_from = 0;
        for (k, segment) in segments.iter().enumerate() {
            let end = segments
                .get(k + 1)
                .map_or(self.next_index, |next| next.first_index());
            if end > first {
                break;
            }
            segment::remove(segment)?;
            keep_from = k + 1;
        }
        if keep_from == 0 {
            return Ok(());
        }
        segments.drain(..keep_from);
        if segments.is_empty() {
            self.active = None;
        }
        let kept = |s: &Arc<Segment>| segments.iter().any(|k| Arc::ptr_eq(k, s));
        self.pending.retain(|p| kept(&p.segment));
        dir::sync_dir(&self.dir)?;
        self.table = self.shared.publish_table(segments);
        Ok(())
    }
}

/// The sync of records a [`Log`]'s writer appended, run by whoever holds it: see
/// [`Log::sync_later`].
#[derive(Debug)]
pub struct SyncJob {
    segments: Vec<Arc<Segment>>,
    /// The log's directory, when segment files were made or removed since its last sync.
    dir: Option<PathBuf>,
    /// One past the last record this job makes durable.
    next_index: u64,
    shared: Arc<Shared>,
}

impl SyncJob {
    /// One past the last record that is durable once this job has run.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Take a later job's work into this one: running the merged job does both with one
    /// `fdatasync` per file.
    pub fn absorb(&mut self, later: SyncJob) {
        for segment in later.segments {
            if !self.segments.iter().any(|s| Arc::ptr_eq(s, &segment)) {
                self.segments.push(segment);
            }
        }
        self.dir = self.dir.take().or(later.dir);
        self.next_index = self.next_index.max(later.next_index);
    }

    /// Make the job's records durable, and publish that to readers.
    pub fn run(self) -> Result<()> {
        for segment in &self.segments {
            segment.sync_range(SEGMENT_HEADER_BYTES, segment.len())?;
        }
        if let Some(dir) = &self.dir {
            dir::sync_dir(dir)?;
        }
        // A truncation after this job was made may have moved the end below it.
        let end = self.shared.end.0.load(Ordering::Acquire);
        self.shared
            .durable
            .0
            .fetch_max(self.next_index.min(end), Ordering::Release);
        Ok(())
    }
}
