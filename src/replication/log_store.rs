//! Raft's log storage on the mmap event log.
//!
//! The log's writer sits behind a mutex, taken in the order openraft calls (it awaits each call
//! before the next), so appends, truncations, purges and vote writes take effect in the order
//! they were submitted. An append writes its entries on the caller's thread, with no hop to
//! another thread, and returns once they are readable (openraft 0.10 then replicates them at
//! once). The leader's own entries are synced on the sync thread, which merges every sync
//! waiting for it into one `fdatasync` per file and only then calls openraft's flush callbacks,
//! in order, so no entry is ever reported durable before it is (the trap in openraft's rocksdb
//! example). So the leader's own disk write overlaps the followers' (the leader counts toward
//! the commit quorum only once its callback fires). A follower's append syncs before it returns
//! and reports at once: the follower answers only after its sync and has nothing to overlap it
//! with, and the hop to the sync thread and back cost two thread wake-ups on every round.
//! Segments' blocks are allocated ahead (`exchange_log`) so a sync writes only data and waits
//! for no file system journal.
//! Truncations, purges and votes, which sync, run on a blocking thread; a truncation first
//! waits for the syncs before it, so no late callback reports entries that are gone.
//!
//! Readers (openraft's replication and apply tasks) read records directly from the map through
//! their own `LogReader`, decoding each into an entry.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use exchange_log::{
    Config as LogConfig, FlushPolicy, Log, LogReader, MetaFile, Record, SlotFile, SyncJob,
};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{EntryPayload, OptionalSend, RaftLogReader};

use super::codec;
use super::types::{Entry, LogId, TypeConfig, Vote};
use crate::latency::LatencyHistogram;

/// Raft's vote, overwritten in place at every election (a `SlotFile`: see its module for why).
const VOTE_FILE: &str = "vote.slots";
/// Where data format 2 kept the vote: read until the first vote is saved in `VOTE_FILE`.
const LEGACY_VOTE_FILE: &str = "vote.meta";
/// Appends waiting for their sync. openraft waits for each append to be written but not
/// synced; the bound makes a stuck disk stop Raft rather than grow memory.
const SYNC_QUEUE_REQUESTS_MAX: usize = 64;
const LAST_PURGED_FILE: &str = "last-purged.meta";

/// What the writer hands the sync thread, in the order of the log's writes.
enum SyncRequest {
    /// Call `flushed` once the records of an append are durable: after `job` (and every job
    /// before it) has run, or at once under a flush policy that leaves nothing to sync. An
    /// append that failed carries its error instead, which openraft keeps.
    Flush {
        job: Option<SyncJob>,
        failed: Option<String>,
        flushed: IOFlushed<TypeConfig>,
        began: Instant,
    },
    /// Answer once everything before has been synced and reported.
    Barrier(mpsc::SyncSender<()>),
}

/// The writer side, given to openraft.
pub struct LogStore {
    /// This node: an append of entries it proposed is its own as leader.
    node_id: u64,
    writer: Arc<Mutex<Writer>>,
    reader: LogReader,
    /// The vote saved last, shared with readers (openraft reads it through one at start).
    vote: Arc<Mutex<Option<Vote>>>,
    last_purged: Option<LogId>,
    /// The largest leader timestamp in any batch this node has stored.
    max_timestamp_ns: Arc<AtomicU64>,
    /// The last index this node knows committed (kept in memory only: after a restart the
    /// leader says it again).
    committed: Arc<AtomicU64>,
}

/// A reader, given to openraft's replication tasks.
#[derive(Clone)]
pub struct LogStoreReader {
    reader: LogReader,
    vote: Arc<Mutex<Option<Vote>>>,
}

/// Why the log store failed: what a node's start reports, and what openraft is told as a
/// storage error.
#[derive(Debug)]
pub enum LogStoreError {
    /// The log directory could not be made.
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// The mmap log (opening and recovering it, or an append, truncation or purge).
    Log {
        dir: PathBuf,
        source: exchange_log::Error,
    },
    /// An entry in the log does not decode.
    Entry { index: u64, reason: String },
    /// A small meta file (the vote, the purge point) cannot be read, decoded or written.
    Meta { path: PathBuf, reason: String },
    /// The sync thread could not start.
    Wal(String),
}

impl std::fmt::Display for LogStoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogStoreError::Dir { dir, source } => write!(f, "{}: {source}", dir.display()),
            LogStoreError::Log { dir, source } => write!(f, "{}: {source}", dir.display()),
            LogStoreError::Entry { index, reason } => {
                write!(f, "log entry {index} does not decode: {reason}")
            }
            LogStoreError::Meta { path, reason } => write!(f, "{}: {reason}", path.display()),
            LogStoreError::Wal(why) => write!(f, "the log's sync thread: {why}"),
        }
    }
}

impl std::error::Error for LogStoreError {}

fn io_error(message: impl Into<String>) -> std::io::Error {
    std::io::Error::other(message.into())
}

fn storage_error(e: impl std::fmt::Display) -> std::io::Error {
    io_error(e.to_string())
}

impl LogStore {
    /// Opens (or creates) the log in `dir` for node `node_id`, recovering a torn tail, and
    /// starts the sync thread. Each append's write and sync time goes into `append_latency`.
    pub fn open(
        node_id: u64,
        dir: &Path,
        flush: FlushPolicy,
        segment_bytes: u64,
        append_latency: Arc<LatencyHistogram>,
    ) -> Result<Self, LogStoreError> {
        std::fs::create_dir_all(dir).map_err(|source| LogStoreError::Dir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let config = LogConfig {
            segment_bytes,
            flush,
            first_index: 0,
        };
        let log = Log::open(dir, config).map_err(|source| LogStoreError::Log {
            dir: dir.to_path_buf(),
            source,
        })?;
        let mut reader = log.reader();
        let last_purged = read_meta::<LogId>(&dir.join(LAST_PURGED_FILE))?;
        let max_timestamp_ns = Arc::new(AtomicU64::new(last_timestamp(&mut reader, dir)?));
        let vote = Arc::new(Mutex::new(read_vote(dir)?));
        let vote_path = dir.join(VOTE_FILE);
        let (vote_file, _) = SlotFile::open(&vote_path).map_err(|e| meta_error(&vote_path, e))?;
        let (syncs, sync_requests) = mpsc::sync_channel(SYNC_QUEUE_REQUESTS_MAX);
        let syncs_in_flight = Arc::new(AtomicUsize::new(0));
        let thread_latency = Arc::clone(&append_latency);
        let thread_in_flight = Arc::clone(&syncs_in_flight);
        std::thread::Builder::new()
            .name("wal-sync".into())
            .spawn(move || sync_thread(sync_requests, &thread_latency, &thread_in_flight))
            .map_err(|e| LogStoreError::Wal(format!("cannot start its sync thread: {e}")))?;
        let writer = Writer {
            log,
            vote_file,
            vote: Arc::clone(&vote),
            dir: dir.to_path_buf(),
            flush,
            syncs,
            syncs_in_flight,
            append_latency,
        };
        Ok(LogStore {
            node_id,
            writer: Arc::new(Mutex::new(writer)),
            reader,
            vote,
            last_purged,
            max_timestamp_ns,
            committed: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Shared view of the committed index, for status reports.
    pub fn committed(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.committed)
    }

    /// Shared view of the largest timestamp stored, for the sequencer.
    pub fn max_timestamp(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.max_timestamp_ns)
    }

    /// A reader of the committed log for other tasks (audits, catch-up).
    pub fn reader(&self) -> LogReader {
        self.reader.clone()
    }

    /// Runs `work` on the writer on a blocking thread: truncations, purges and vote writes
    /// sync files of their own (a truncation first waits for the sync thread), and no round of
    /// replication waits on them as a follower's answer waits on its append's sync (which runs
    /// in place, `Writer::append`).
    async fn on_writer(
        &self,
        work: impl FnOnce(&mut Writer) -> Result<(), LogStoreError> + Send + 'static,
    ) -> Result<(), std::io::Error> {
        let writer = Arc::clone(&self.writer);
        tokio::task::spawn_blocking(move || work(&mut lock(&writer)))
            .await
            .map_err(|e| io_error(format!("the log writer's task failed: {e}")))?
            .map_err(storage_error)
    }
}

fn meta_error(path: &Path, reason: impl std::fmt::Display) -> LogStoreError {
    LogStoreError::Meta {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn read_meta<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, LogStoreError> {
    match MetaFile::new(path).read() {
        Ok(None) => Ok(None),
        Ok(Some(bytes)) => postcard::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| meta_error(path, e)),
        Err(e) => Err(meta_error(path, e)),
    }
}

/// The vote saved last: from `VOTE_FILE`, or from a format 2 directory's `LEGACY_VOTE_FILE`
/// before this build saved one.
fn read_vote(dir: &Path) -> Result<Option<Vote>, LogStoreError> {
    let path = dir.join(VOTE_FILE);
    match SlotFile::open(&path).map_err(|e| meta_error(&path, e))? {
        (_, Some(bytes)) => postcard::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| meta_error(&path, e)),
        (_, None) => read_meta::<Vote>(&dir.join(LEGACY_VOTE_FILE)),
    }
}

/// Saves `vote` durably; the first save removes a format 2 directory's old vote file, which
/// no read looks at once the new one exists.
fn save_vote(file: &mut SlotFile, dir: &Path, vote: &Vote) -> Result<(), LogStoreError> {
    let bytes = postcard::to_allocvec(vote).map_err(|e| meta_error(file.path(), e))?;
    file.write(&bytes).map_err(|e| meta_error(file.path(), e))?;
    let legacy = dir.join(LEGACY_VOTE_FILE);
    if legacy.exists() {
        std::fs::remove_file(&legacy).map_err(|e| meta_error(&legacy, e))?;
    }
    Ok(())
}

fn write_meta<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), LogStoreError> {
    let bytes = postcard::to_allocvec(value).map_err(|e| meta_error(path, e))?;
    MetaFile::new(path)
        .write(&bytes)
        .map_err(|e| meta_error(path, e))
}

/// The timestamp of the last batch in the log: batches are stamped in rising order along it.
fn last_timestamp(reader: &mut LogReader, dir: &Path) -> Result<u64, LogStoreError> {
    let Some(mut index) = reader.last_index() else {
        return Ok(0);
    };
    loop {
        let record = reader.get(index).map_err(|source| LogStoreError::Log {
            dir: dir.to_path_buf(),
            source,
        })?;
        let entry = codec::decode(record.term, record.index, record.payload).map_err(|e| {
            LogStoreError::Entry {
                index,
                reason: e.to_string(),
            }
        })?;
        if let EntryPayload::Normal(batch) = entry.payload {
            return Ok(batch.timestamp_ns);
        }
        if index == reader.first_index() {
            return Ok(0);
        }
        index -= 1;
    }
}

/// The log's one writer, and the vote's file.
struct Writer {
    log: Log,
    vote_file: SlotFile,
    vote: Arc<Mutex<Option<Vote>>>,
    dir: PathBuf,
    flush: FlushPolicy,
    syncs: mpsc::SyncSender<SyncRequest>,
    /// Flush requests handed to the sync thread and not yet reported.
    syncs_in_flight: Arc<AtomicUsize>,
    append_latency: Arc<LatencyHistogram>,
}

fn lock(writer: &Mutex<Writer>) -> std::sync::MutexGuard<'_, Writer> {
    writer.lock().unwrap_or_else(|p| p.into_inner())
}

impl Writer {
    fn truncate(&mut self, index: u64) -> Result<(), LogStoreError> {
        // Syncs in flight cover entries this may remove: their callbacks go first.
        self.wait_for_syncs();
        self.log.truncate(index).map_err(|e| self.log_error(e))
    }

    fn purge(&mut self, log_id: LogId) -> Result<(), LogStoreError> {
        // The purge point is recorded first: a crash between the two leaves entries the log
        // still holds but Raft no longer asks for, never a gap.
        write_meta(&self.dir.join(LAST_PURGED_FILE), &log_id)?;
        self.log.purge(log_id.index).map_err(|e| self.log_error(e))
    }

    fn save_vote(&mut self, vote: Vote) -> Result<(), LogStoreError> {
        save_vote(&mut self.vote_file, &self.dir, &vote)?;
        *self.vote.lock().unwrap_or_else(|p| p.into_inner()) = Some(vote);
        Ok(())
    }

    /// Writes the entries (readable when this returns). The leader's own entries
    /// (`proposed_here`) have their sync handed to the sync thread, which calls `flushed`, so
    /// that replication goes on meanwhile; a follower's are synced before this returns.
    fn append(
        &mut self,
        payloads: &[u8],
        records: &[(u64, u64, usize)],
        proposed_here: bool,
        flushed: IOFlushed<TypeConfig>,
    ) -> Result<(), LogStoreError> {
        let began = Instant::now();
        let mut start = 0;
        // Readers (replication, the state machine) see the entries before they are synced:
        // they are applied only once committed, which needs them synced on a majority.
        let result = self
            .log
            .append_unsynced(records.iter().map(|&(term, index, end)| {
                let payload = &payloads[start..end];
                start = end;
                Record {
                    term,
                    index,
                    payload,
                }
            }));
        let failed = result.as_ref().err().map(|e| e.to_string());
        if !proposed_here && failed.is_none() {
            // A follower's append: it answers its leader only once these are durable, and has
            // nothing to overlap the sync with, so it syncs here rather than wake a thread to
            // do it and be woken in turn (two thread switches off every round's path).
            let synced = self.sync_in_order();
            self.append_latency.record(began.elapsed());
            flushed.io_completed(
                synced
                    .as_ref()
                    .map_err(|e| io_error(e.to_string()))
                    .copied(),
            );
            return synced;
        }
        // Group commit: the sync thread merges this with every sync waiting beside it. (A
        // segment that fills up is synced here, and the next one made: once per segment.)
        let job =
            (failed.is_none() && self.flush == FlushPolicy::Batch).then(|| self.log.sync_later());
        let request = SyncRequest::Flush {
            job,
            failed,
            flushed,
            began,
        };
        self.syncs_in_flight.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::SendError(SyncRequest::Flush { flushed, .. })) = self.syncs.send(request) {
            self.syncs_in_flight.fetch_sub(1, Ordering::AcqRel);
            flushed.io_completed(Err(io_error("the log's sync thread has stopped")));
        }
        result.map(|_| ()).map_err(|e| self.log_error(e))
    }

    /// Makes every record appended so far durable on this thread. Syncs still with the sync
    /// thread (appends from this node's time as leader) run and are reported first: their
    /// callbacks name earlier entries, which openraft must hear of in order.
    fn sync_in_order(&mut self) -> Result<(), LogStoreError> {
        if self.syncs_in_flight.load(Ordering::Acquire) > 0 {
            self.wait_for_syncs();
        }
        match self.flush {
            FlushPolicy::Batch => self.log.sync().map_err(|e| self.log_error(e)),
            _ => Ok(()),
        }
    }

    /// Returns once every sync handed over before has run and been reported.
    fn wait_for_syncs(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        if self.syncs.send(SyncRequest::Barrier(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    fn log_error(&self, source: exchange_log::Error) -> LogStoreError {
        LogStoreError::Log {
            dir: self.dir.clone(),
            source,
        }
    }
}

/// Runs the syncs the writer hands over: everything waiting is merged into one job (one
/// `fdatasync` per file), and its callbacks are then called in the order of the writes.
fn sync_thread(
    requests: mpsc::Receiver<SyncRequest>,
    append_latency: &LatencyHistogram,
    in_flight: &AtomicUsize,
) {
    let mut waiting = Vec::new();
    while let Ok(first) = requests.recv() {
        waiting.push(first);
        waiting.extend(requests.try_iter());
        let mut merged: Option<SyncJob> = None;
        for request in &mut waiting {
            if let SyncRequest::Flush { job, .. } = request {
                if let Some(job) = job.take() {
                    match merged.as_mut() {
                        Some(merged) => merged.absorb(job),
                        None => merged = Some(job),
                    }
                }
            }
        }
        let synced = merged.map_or(Ok(()), |job| job.run().map_err(|e| e.to_string()));
        for request in waiting.drain(..) {
            match request {
                SyncRequest::Flush {
                    failed,
                    flushed,
                    began,
                    ..
                } => {
                    let result = match (&failed, &synced) {
                        (Some(e), _) | (None, Err(e)) => Err(io_error(e.clone())),
                        (None, Ok(())) => Ok(()),
                    };
                    append_latency.record(began.elapsed());
                    flushed.io_completed(result);
                    in_flight.fetch_sub(1, Ordering::AcqRel);
                }
                SyncRequest::Barrier(done) => {
                    let _ = done.send(());
                }
            }
        }
    }
}

fn bounds(range: &impl RangeBounds<u64>, first: u64, next: u64) -> std::ops::Range<u64> {
    // `first` only stands in for an unbounded start.
    let start = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i + 1,
        Bound::Unbounded => first,
    };
    let end = match range.end_bound() {
        Bound::Included(&i) => i + 1,
        Bound::Excluded(&i) => i,
        Bound::Unbounded => next,
    };
    start..end.min(next)
}

/// The most entry bytes one AppendEntries carries, unless its first entry alone is larger
/// (the first always goes): `max_payload_entries` bounds the count, this the size, so that a
/// follower catching up writes, syncs and answers each message in about a heartbeat even when
/// the entries are full batches, and a message stays far inside `APPEND_FRAME_BYTES_MAX`.
pub const APPEND_PAYLOAD_BYTES: usize = 1 << 20;

/// The entries in `range` whose payloads fit `budget` bytes, the first always: a prefix of
/// the range, as openraft's replication may be given (`usize::MAX`: the whole range).
fn read_entries(
    reader: &mut LogReader,
    range: &impl RangeBounds<u64>,
    budget: usize,
) -> Result<Vec<Entry>, std::io::Error> {
    let range = bounds(range, reader.first_index(), reader.next_index());
    let mut entries = Vec::with_capacity(range.end.saturating_sub(range.start) as usize);
    if range.is_empty() {
        return Ok(entries);
    }
    let mut bytes = 0usize;
    for record in reader.range(range).map_err(storage_error)? {
        let record = record.map_err(storage_error)?;
        bytes = bytes.saturating_add(record.payload.len());
        if !entries.is_empty() && bytes > budget {
            break;
        }
        entries
            .push(codec::decode(record.term, record.index, record.payload).map_err(storage_error)?);
    }
    Ok(entries)
}

impl RaftLogReader<TypeConfig> for LogStoreReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, std::io::Error> {
        read_entries(&mut self.reader, &range, usize::MAX)
    }

    /// What replication sends: at most `APPEND_PAYLOAD_BYTES` of entries a message.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, std::io::Error> {
        read_entries(&mut self.reader, &(start..end), APPEND_PAYLOAD_BYTES)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, std::io::Error> {
        Ok(*self.vote.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStoreReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, std::io::Error> {
        let last_log_id = match self.reader.last_index() {
            Some(index) => {
                let record = self.reader.get(index).map_err(storage_error)?;
                Some(
                    codec::log_id(record.term, record.index, record.payload)
                        .map_err(storage_error)?,
                )
            }
            None => self.last_purged,
        };
        Ok(LogState {
            last_purged_log_id: self.last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogStoreReader {
            reader: self.reader.clone(),
            vote: Arc::clone(&self.vote),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), std::io::Error> {
        let vote = *vote;
        self.on_writer(move |writer| writer.save_vote(vote)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), std::io::Error> {
        if let Some(committed) = committed {
            self.committed.fetch_max(committed.index, Ordering::AcqRel);
        }
        Ok(())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), std::io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut payloads = Vec::new();
        let mut records = Vec::new();
        let mut proposed_here = false;
        for entry in entries {
            // The last entry's leader decides: a follower's entries come from its leader.
            proposed_here = entry.log_id.leader_id.node_id == self.node_id;
            if let EntryPayload::Normal(batch) = &entry.payload {
                self.max_timestamp_ns
                    .fetch_max(batch.timestamp_ns, Ordering::AcqRel);
            }
            codec::encode_payload(&entry, &mut payloads).map_err(storage_error)?;
            records.push((
                entry.log_id.leader_id.term,
                entry.log_id.index,
                payloads.len(),
            ));
        }
        // Written here, with no hop to another thread: a copy into the log's map or a
        // `pwrite` into allocated blocks; the sync goes to the sync thread.
        lock(&self.writer)
            .append(&payloads, &records, proposed_here, callback)
            .map_err(storage_error)
    }

    /// Keeps `last_log_id` and removes every entry after it.
    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), std::io::Error> {
        // Nothing below the first entry kept is Raft's to remove (a purge took it).
        let index = last_log_id
            .map_or(0, |id| id.index + 1)
            .max(self.reader.first_index());
        self.on_writer(move |writer| writer.truncate(index)).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), std::io::Error> {
        self.on_writer(move |writer| writer.purge(log_id)).await?;
        self.last_purged = Some(log_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::IOFlushed;
    use openraft::type_config::TypeConfigExt;
    use openraft::EntryPayload;

    use super::*;
    use crate::replication::codec::leader_of;

    const NODE: u64 = 1;

    fn store(dir: &Path) -> LogStore {
        LogStore::open(
            NODE,
            dir,
            FlushPolicy::Batch,
            1 << 20,
            Arc::new(LatencyHistogram::default()),
        )
        .expect("open")
    }

    fn blank(leader: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(leader_of(1, leader), index),
            payload: EntryPayload::Blank,
        }
    }

    #[tokio::test]
    async fn a_followers_append_is_durable_and_reported_when_it_returns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = store(dir.path());
        let (flushed, mut reported) = TypeConfig::oneshot();
        log.append([blank(2, 0), blank(2, 1)], IOFlushed::signal(flushed))
            .await
            .expect("append");
        assert!(matches!(reported.try_recv(), Ok(Ok(()))));
        assert_eq!(log.reader().durable_next_index(), 2);
    }

    #[tokio::test]
    async fn the_leaders_append_is_reported_once_durable_and_before_a_later_followers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = store(dir.path());
        let (leader_flushed, mut leader_reported) = TypeConfig::oneshot();
        log.append([blank(NODE, 0)], IOFlushed::signal(leader_flushed))
            .await
            .expect("append");
        // Deposed: the next entries come from another leader. They are reported (at once)
        // only after the leader's own append before them.
        let (flushed, mut reported) = TypeConfig::oneshot();
        log.append([blank(2, 1)], IOFlushed::signal(flushed))
            .await
            .expect("append");
        assert!(matches!(reported.try_recv(), Ok(Ok(()))));
        assert!(matches!(leader_reported.try_recv(), Ok(Ok(()))));
        assert_eq!(log.reader().durable_next_index(), 2);
    }

    /// A batch whose payload is `commands` mass cancels (a few dozen bytes each).
    fn batch(leader: u64, index: u64, commands: usize) -> Entry {
        let command = exchange_domain::BrokerCommand {
            broker: exchange_domain::BrokerId(9),
            command: exchange_domain::Command::MassCancel(exchange_domain::MassCancel {
                account: exchange_domain::AccountId(3),
                symbol: None,
            }),
        };
        Entry {
            log_id: LogId::new(leader_of(1, leader), index),
            payload: EntryPayload::Normal(crate::replication::batch::Batch {
                timestamp_ns: index,
                commands: vec![command; commands],
            }),
        }
    }

    #[tokio::test]
    async fn replication_reads_a_prefix_within_the_byte_budget_and_never_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = store(dir.path());
        let entries: Vec<Entry> = (0..8).map(|index| batch(NODE, index, 1_000)).collect();
        let (flushed, reported) = TypeConfig::oneshot();
        log.append(entries.clone(), IOFlushed::signal(flushed))
            .await
            .expect("append");
        reported.await.expect("reported").expect("synced");
        let mut reader = log.reader();
        let one = reader.range(0..1).expect("range").next().expect("a record");
        let size = one.expect("record").payload.len();
        // Room for three entries and a half: three are read.
        let three = read_entries(&mut reader, &(2..8), size * 7 / 2).expect("read");
        assert_eq!(three, entries[2..5]);
        // An entry larger than the budget still goes, alone: replication must progress.
        let alone = read_entries(&mut reader, &(6..8), size / 2).expect("read");
        assert_eq!(alone, entries[6..7]);
        // What replication calls: all eight fit the real budget.
        let mut reader = log.get_log_reader().await;
        let all = reader.limited_get_log_entries(0, 8).await.expect("read");
        assert_eq!(all, entries);
    }

    #[tokio::test]
    async fn the_leaders_own_append_becomes_durable_on_the_sync_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = store(dir.path());
        let (flushed, reported) = TypeConfig::oneshot();
        log.append([blank(NODE, 0), blank(NODE, 1)], IOFlushed::signal(flushed))
            .await
            .expect("append");
        reported.await.expect("reported").expect("synced");
        assert_eq!(log.reader().durable_next_index(), 2);
    }
}
