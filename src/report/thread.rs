//! The reporter thread: owns the [`ReportDb`], drains a bounded queue, one write per round.
//!
//! Under load each round takes everything queued (up to a batch's bounds), so one transaction
//! (one sync) covers thousands of entries; when idle a round is the one entry that woke it, so
//! rows appear promptly. Rounds are at least `REPORT_ROUND_EVERY` apart, so a steady stream of
//! small entries is written in a few transactions, not one each. The queue is bounded and
//! `send` blocks when it is full: a reporter that cannot keep up slows its sender rather than
//! lose rows or grow without bound.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{
    EntryOutputs, ReportDb, ReportError, REPORT_BATCH_ENTRIES_MAX, REPORT_BATCH_OUTPUTS_MAX,
    REPORT_QUEUE_ENTRIES, REPORT_ROUND_EVERY,
};

enum Message {
    Entry(EntryOutputs),
    /// A snapshot moved the engine to this index: the entries before it will never come.
    SkipTo(u64),
    /// The [`Reporter`] is dropped: write what is queued, then end.
    Stop,
}

/// What the thread shares with its handles.
struct Shared {
    /// The durable cursor: updated after each commit.
    cursor: AtomicU64,
    stopped: AtomicBool,
    failed: Mutex<Option<String>>,
    /// Guards nothing but the wake-ups of [`Reporter::wait_for`]: the thread takes it after
    /// each change, so a waiter that checked under it cannot miss one.
    progress: Mutex<()>,
    progressed: Condvar,
}

impl Shared {
    fn notify(&self) {
        let _guard = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        self.progressed.notify_all();
    }
}

/// The reporter: its thread, queue and durable cursor. Dropping it writes what is queued and
/// joins the thread.
pub struct Reporter {
    sender: ReportSender,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Queues entries for the reporter. Cheap to clone; `Send`.
#[derive(Clone)]
pub struct ReportSender {
    queue: SyncSender<Message>,
}

/// Why [`ReportSender::try_send`] did not queue an entry.
#[derive(Debug)]
pub enum TrySendError {
    /// The queue is full: here is the entry back.
    Full(EntryOutputs),
    /// The reporter thread has stopped.
    Stopped,
}

/// The reporter thread has stopped (see [`Reporter::failed`]); nothing more can be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReporterStopped;

impl std::fmt::Display for ReporterStopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the reporter has stopped")
    }
}

impl std::error::Error for ReporterStopped {}

impl ReportSender {
    /// Queues one committed entry. Blocks while the queue is full. `Ok` means queued, not
    /// written: what is durable is the cursor, and entries above it are re-sent after a restart.
    pub fn send(&self, entry: EntryOutputs) -> Result<(), ReporterStopped> {
        self.queue
            .send(Message::Entry(entry))
            .map_err(|_| ReporterStopped)
    }

    /// Queues one committed entry if there is room, else gives it back.
    pub fn try_send(&self, entry: EntryOutputs) -> Result<(), TrySendError> {
        match self.queue.try_send(Message::Entry(entry)) {
            Ok(()) => Ok(()),
            Err(std::sync::mpsc::TrySendError::Full(Message::Entry(entry))) => {
                Err(TrySendError::Full(entry))
            }
            Err(_) => Err(TrySendError::Stopped),
        }
    }

    /// A snapshot jumped the engine to `index`: the entries up to it will never be sent, so the
    /// reporter records a gap (after the entries queued before this call).
    pub fn skip_to(&self, index: u64) -> Result<(), ReporterStopped> {
        self.queue
            .send(Message::SkipTo(index))
            .map_err(|_| ReporterStopped)
    }
}

impl Reporter {
    /// Opens the database here, so that a bad path or file is reported to the caller, then
    /// hands it to a thread named "reporter".
    pub fn spawn(path: &Path) -> Result<Reporter, ReportError> {
        let db = ReportDb::open(path)?;
        let shared = Arc::new(Shared {
            cursor: AtomicU64::new(db.cursor()),
            stopped: AtomicBool::new(false),
            failed: Mutex::new(None),
            progress: Mutex::new(()),
            progressed: Condvar::new(),
        });
        let (queue, receiver) = sync_channel(REPORT_QUEUE_ENTRIES);
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("reporter".into())
            .spawn(move || run(db, receiver, &thread_shared))
            .map_err(ReportError::Spawn)?;
        Ok(Reporter {
            sender: ReportSender { queue },
            shared,
            thread: Some(thread),
        })
    }

    pub fn sender(&self) -> ReportSender {
        self.sender.clone()
    }

    /// The last log index whose rows are committed.
    pub fn cursor(&self) -> u64 {
        self.shared.cursor.load(Ordering::Acquire)
    }

    /// Blocks until the cursor reaches `index` (true), or the reporter stopped or `timeout`
    /// passed (false unless the cursor got there). Keeps snapshots behind the reporter: a
    /// snapshot past the cursor would make the entries between them a gap.
    pub fn wait_for(&self, index: u64, timeout: Duration) -> bool {
        // None: a timeout too long to add to now, so no deadline at all.
        let deadline = Instant::now().checked_add(timeout);
        let mut guard = self
            .shared
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        loop {
            if self.cursor() >= index {
                return true;
            }
            if self.shared.stopped.load(Ordering::Acquire) {
                return false;
            }
            guard = match deadline {
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return false;
                    }
                    self.shared
                        .progressed
                        .wait_timeout(guard, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self
                    .shared
                    .progressed
                    .wait(guard)
                    .unwrap_or_else(|p| p.into_inner()),
            };
        }
    }

    /// Why the thread stopped, if it stopped on an error.
    pub fn failed(&self) -> Option<String> {
        self.shared
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        // Fails only if the thread is gone already; then there is nothing to flush.
        let _ = self.sender.queue.send(Message::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread: rounds of (wait for one message, take what else is queued, write) until told to
/// stop, every sender is gone, or a write fails.
fn run(db: ReportDb, receiver: Receiver<Message>, shared: &Shared) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut writer = Writer {
            db,
            shared,
            batch: Vec::new(),
            outputs: 0,
        };
        writer.rounds(&receiver)
    }));
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(panic) => Some(format!(
            "the reporter thread panicked: {}",
            panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)")
        )),
    };
    if let Some(reason) = &failure {
        tracing::error!(%reason, "reporter stopped; reports will lag until the node restarts");
        *shared.failed.lock().unwrap_or_else(|p| p.into_inner()) = failure;
    }
    // The receiver goes first: whoever sees `stopped` then knows every send fails from now on.
    drop(receiver);
    shared.stopped.store(true, Ordering::Release);
    shared.notify();
}

struct Writer<'a> {
    db: ReportDb,
    shared: &'a Shared,
    /// Entries taken from the queue and not yet written.
    batch: Vec<EntryOutputs>,
    outputs: usize,
}

impl Writer<'_> {
    fn rounds(&mut self, receiver: &Receiver<Message>) -> Result<(), ReportError> {
        let mut last_round: Option<Instant> = None;
        loop {
            // Entries that come meanwhile wait in the queue and join the next round.
            if let Some(wait) =
                last_round.and_then(|at| REPORT_ROUND_EVERY.checked_sub(at.elapsed()))
            {
                std::thread::sleep(wait);
            }
            let Ok(first) = receiver.recv() else {
                return Ok(()); // Every sender is gone, and so is the Reporter.
            };
            last_round = Some(Instant::now());
            let mut stop = self.take(first)?;
            // Take what else is queued, within a batch's bounds; after a stop, all of it.
            loop {
                if self.batch.len() >= REPORT_BATCH_ENTRIES_MAX
                    || self.outputs >= REPORT_BATCH_OUTPUTS_MAX
                {
                    if !stop {
                        break;
                    }
                    self.flush()?;
                }
                match receiver.try_recv() {
                    Ok(message) => stop |= self.take(message)?,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.flush()?;
            if stop {
                return Ok(());
            }
        }
    }

    /// Takes one message; true if it says stop.
    fn take(&mut self, message: Message) -> Result<bool, ReportError> {
        match message {
            Message::Entry(entry) => {
                self.outputs += entry.outputs.len();
                self.batch.push(entry);
                Ok(false)
            }
            Message::SkipTo(index) => {
                // The entries queued before the jump go first: the gap starts after them.
                self.flush()?;
                let from = self.db.cursor() + 1;
                self.db.record_gap(index)?;
                if index >= from {
                    tracing::info!(from, to = index, "reporter: gap recorded (snapshot)");
                }
                self.published();
                Ok(false)
            }
            Message::Stop => Ok(true),
        }
    }

    fn flush(&mut self) -> Result<(), ReportError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.db.write(&self.batch)?;
        self.batch.clear();
        self.outputs = 0;
        self.published();
        Ok(())
    }

    fn published(&self) {
        self.shared
            .cursor
            .store(self.db.cursor(), Ordering::Release);
        self.shared.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::query;
    use crate::report::testing::*;

    const WAIT: Duration = Duration::from_secs(20);

    fn counts(path: &Path) -> query::Counts {
        let conn = query::open_read_only(path).expect("open read-only");
        query::counts(&conn).expect("counts")
    }

    #[test]
    fn entries_sent_are_written_and_waited_for() {
        let s = Scenario::busy(2_000);
        let last = s.entries.last().map_or(0, |e| e.index);
        let (_dir, path) = temp_db();
        let reporter = Reporter::spawn(&path).expect("spawn");
        let sender = reporter.sender();
        // From another thread, as the engine thread would.
        let entries = s.entries.clone();
        std::thread::spawn(move || {
            for entry in entries {
                sender.send(entry).expect("send");
            }
        })
        .join()
        .expect("sender thread");
        assert!(
            reporter.wait_for(last, WAIT),
            "cursor {}",
            reporter.cursor()
        );
        assert_eq!(reporter.cursor(), last);
        assert_eq!(reporter.failed(), None);
        drop(reporter);

        // The same entries written in one go by the writer directly: the same rows.
        let (_dir2, once) = temp_db();
        ReportDb::open(&once)
            .and_then(|mut db| db.write(&s.entries))
            .expect("write once");
        assert_eq!(counts(&path), counts(&once));
        assert!(counts(&path).trades > 100);
    }

    #[test]
    fn dropping_the_reporter_writes_what_is_queued() {
        let (_dir, path) = temp_db();
        let reporter = Reporter::spawn(&path).expect("spawn");
        let sender = reporter.sender();
        for index in 1..=10_000 {
            sender.send(deposit_entry(index, ALICE)).expect("send");
        }
        drop(reporter);
        let c = counts(&path);
        assert_eq!((c.cursor, c.balance_changes), (10_000, 10_000));
        // The thread is gone: a sender left behind is told so.
        assert_eq!(
            sender.send(deposit_entry(10_001, ALICE)),
            Err(ReporterStopped)
        );
    }

    #[test]
    fn skip_to_records_a_gap_in_order_with_the_entries() {
        let (_dir, path) = temp_db();
        let reporter = Reporter::spawn(&path).expect("spawn");
        let sender = reporter.sender();
        for index in 1..=5 {
            sender.send(deposit_entry(index, ALICE)).expect("send");
        }
        sender.skip_to(20).expect("skip");
        // Re-sent from before the snapshot: skipped.
        sender.send(deposit_entry(12, BOB)).expect("send");
        for index in 21..=25 {
            sender.send(deposit_entry(index, BOB)).expect("send");
        }
        assert!(reporter.wait_for(25, WAIT));
        let conn = query::open_read_only(&path).expect("open");
        assert_eq!(
            query::gaps(&conn).expect("gaps"),
            vec![query::GapRow {
                from_index: 6,
                to_index: 20,
                recorded_at_index: 5
            }]
        );
        let c = query::counts(&conn).expect("counts");
        assert_eq!((c.cursor, c.balance_changes, c.gaps), (25, 10, 1));
    }

    #[test]
    fn a_failed_write_stops_the_thread_and_the_senders_are_told() {
        let (_dir, path) = temp_db();
        let reporter = Reporter::spawn(&path).expect("spawn");
        let sender = reporter.sender();
        sender.send(deposit_entry(1, ALICE)).expect("send");
        assert!(reporter.wait_for(1, WAIT));
        sender.send(broken_entry(2)).expect("send");
        // Never reached: the thread stops instead, and wait_for returns at once.
        assert!(!reporter.wait_for(3, WAIT));
        let reason = reporter.failed().expect("a reason");
        assert!(reason.contains("no maker execution"), "{reason}");
        assert_eq!(sender.send(deposit_entry(3, ALICE)), Err(ReporterStopped));
        assert_eq!(sender.skip_to(9), Err(ReporterStopped));
        assert_eq!(reporter.cursor(), 1);
        drop(reporter);
        assert_eq!(counts(&path).cursor, 1);
    }

    #[test]
    fn wait_for_times_out_when_nothing_comes() {
        let (_dir, path) = temp_db();
        let reporter = Reporter::spawn(&path).expect("spawn");
        let start = Instant::now();
        assert!(!reporter.wait_for(1, Duration::from_millis(50)));
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(reporter.wait_for(0, Duration::ZERO));
    }

    #[test]
    fn spawn_reports_a_bad_file_to_the_caller() {
        let (_dir, path) = temp_db();
        std::fs::write(
            &path,
            b"this is not a database, not even close: 0123456789abcdef",
        )
        .expect("write");
        let error = Reporter::spawn(&path).err().expect("refused");
        assert!(matches!(error, ReportError::NotAReportDb { .. }), "{error}");
    }

    #[test]
    fn a_restarted_reporter_resumes_from_its_cursor() {
        let (_dir, path) = temp_db();
        {
            let reporter = Reporter::spawn(&path).expect("spawn");
            for index in 1..=30 {
                reporter
                    .sender()
                    .send(deposit_entry(index, ALICE))
                    .expect("send");
            }
        }
        let reporter = Reporter::spawn(&path).expect("respawn");
        assert_eq!(reporter.cursor(), 30);
        for index in 1..=40 {
            reporter
                .sender()
                .send(deposit_entry(index, ALICE))
                .expect("send");
        }
        assert!(reporter.wait_for(40, WAIT));
        drop(reporter);
        assert_eq!(counts(&path).balance_changes, 40);
    }
}
