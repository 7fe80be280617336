//! The engine thread: the one thread that owns the engine state.
//!
//! The async world (openraft's state machine, the node's control paths) hands it requests
//! through a bounded lock-free queue and gets answers through oneshot channels; nothing holds a
//! lock while an order is matched. The thread waits for work with an idle strategy: `spin`
//! (lowest latency, burns a core), `yield`, or `backoff` (spin briefly, then park; the
//! default, so that three nodes share a two-core machine). `--pin-core` pins it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use exchange_domain::{BrokerId, Output, RejectReason, REJECT_REASONS};
use exchange_engine::{Engine, EngineConfig, EventSink, RestoreError, Snapshot};
use tokio::sync::oneshot;

use super::batch::Batch;
use super::types::{LogId, StoredMembership};

/// What the test-only divergence fault flips in the reported hash.
const FAULT_HASH_FLIP: u64 = 0x5eed_0000_0000_0001;

/// Requests waiting for the engine thread. Bounded so a stalled engine pushes back on Raft
/// instead of growing memory; a request carries many entries, so this is plenty.
pub const ENGINE_QUEUE_REQUESTS_MAX: usize = 1_024;
/// Reads waiting for the engine thread; more wait in their tasks.
pub const ENGINE_QUERIES_MAX: usize = 256;

/// A read of the engine's state, run on the engine thread between entries.
type Question = Box<dyn FnOnce(&Engine) + Send>;
/// Backoff: busy polls before parking. No yields between: on a machine with fewer cores than
/// busy threads each yield hands the core to another thread and takes it back, and the 64 it
/// once made after every entry came to 70,000 `sched_yield` calls a second per node in a
/// one-session closed loop (1,200 orders/s), all of it taken from the order path's threads.
const BACKOFF_SPINS: u32 = 256;
/// A parked engine thread wakes at least this often even if an unpark were lost.
const PARK_TIMEOUT: Duration = Duration::from_millis(1);

/// How the engine thread waits for work.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum IdleStrategy {
    /// Poll without pause: lowest latency, one core fully busy.
    Spin,
    /// Poll, yielding the core between polls.
    Yield,
    /// Spin briefly, then park until woken (the default).
    #[default]
    Backoff,
}

#[derive(Clone, Copy, Debug)]
pub struct EngineThreadConfig {
    pub engine: EngineConfig,
    pub idle: IdleStrategy,
    /// Pin the engine thread to this core.
    pub pin_core: Option<usize>,
    /// This node's id: the entries it proposed are the ones whose outputs brokers await.
    pub node_id: u64,
    /// Test-only fault: from this log index on, report a wrong output hash, as a replica with a
    /// nondeterminism bug would. Settable only in builds with the `test-faults` feature.
    pub fault_diverge_at: Option<u64>,
}

/// A committed log entry as the engine sees it. Blank and membership entries carry no
/// commands but still advance the applied position, which a snapshot records.
#[derive(Clone, Debug)]
pub struct CommittedEntry {
    pub log_id: LogId,
    pub batch: Option<Batch>,
    /// The cluster membership this entry installs, if it is a membership entry.
    pub membership: Option<StoredMembership>,
}

impl CommittedEntry {
    pub fn index(&self) -> u64 {
        self.log_id.index
    }
}

/// What one applied entry produced. `outputs[i]` belongs to command `i`, on the node that
/// proposed the entry (where brokers wait for them); empty elsewhere.
#[derive(Clone, Debug, Default)]
pub struct EntryOutcome {
    pub outputs: Vec<Vec<Output>>,
}

/// Where the engine's outputs leave the engine thread, all of them in one place, between
/// commands: market data, the reporter and the brokers' report journal. Deterministic state it
/// keeps travels in snapshots beside the engine's.
pub trait OutputTap: Send + 'static {
    /// One command's outputs, in order.
    fn command(&mut self, outputs: &[Output]);
    /// One entry's outputs about brokers' accounts, each with the owning broker, in order
    /// (a refusal for permission is the sender's answer, not the owner's news): before
    /// `entry`.
    fn reports(&mut self, reports: &[(BrokerId, Output)]);
    /// The end of one entry; `engine` is the state after it.
    fn entry(&mut self, engine: &Engine, index: u64, timestamp_ns: u64);
    /// The state to save beside the engine's in a snapshot.
    fn save(&self) -> Vec<u8>;
    /// The engine now stands at `index`, restored from a snapshot whose tap state is `saved`.
    fn restore(&mut self, engine: &Engine, index: u64, saved: &[u8]) -> Result<(), String>;
    /// The engine thread has nothing to do: a moment to finish deferred work.
    fn idle(&mut self) {}
}

/// The first bytes of a node's state in a snapshot: the engine's, then the tap's.
const STATE_MAGIC: &[u8; 8] = b"XSTATE01";

/// A node's state as one byte string: the engine's snapshot and the tap's state.
pub fn encode_state(engine: &[u8], tap: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16 + engine.len() + tap.len());
    bytes.extend_from_slice(STATE_MAGIC);
    bytes.extend_from_slice(&(engine.len() as u64).to_le_bytes());
    bytes.extend_from_slice(engine);
    bytes.extend_from_slice(tap);
    bytes
}

/// The engine's and the tap's parts of `encode_state`'s bytes.
pub fn decode_state(bytes: &[u8]) -> Result<(&[u8], &[u8]), RestoreError> {
    let malformed = || RestoreError::Malformed("not a node state snapshot".into());
    let rest = bytes.strip_prefix(STATE_MAGIC).ok_or_else(malformed)?;
    let (length, rest) = rest.split_first_chunk::<8>().ok_or_else(malformed)?;
    let length = usize::try_from(u64::from_le_bytes(*length)).map_err(|_| malformed())?;
    if length > rest.len() {
        return Err(malformed());
    }
    Ok(rest.split_at(length))
}

/// The engine state after one applied entry, as snapshot bytes, with the Raft position and
/// membership it corresponds to.
#[derive(Clone, Debug)]
pub struct EngineSnapshot {
    pub last_log_id: Option<LogId>,
    pub membership: StoredMembership,
    pub output_hash: u64,
    pub bytes: Vec<u8>,
}

/// Where the engine stands in the Raft log.
#[derive(Clone, Debug, Default)]
pub struct AppliedPosition {
    pub last_log_id: Option<LogId>,
    pub membership: StoredMembership,
}

/// Recent (applied index, output hash) pairs, so that replicas can compare hashes at equal
/// indexes even while they are a few entries apart.
pub const HASH_HISTORY_ENTRIES: usize = 16_384;

/// What other threads may read about the engine without asking it.
#[derive(Debug)]
pub struct EngineStatus {
    /// The last `HASH_HISTORY_ENTRIES` (index, hash) pairs, oldest first. A std mutex taken
    /// once per applied entry, never while an order is matched.
    history: std::sync::Mutex<std::collections::VecDeque<(u64, u64)>>,
    /// A sequence lock over (applied index, output hash): odd while the engine writes them.
    version: AtomicU64,
    applied_index: AtomicU64,
    output_hash: AtomicU64,
    last_timestamp_ns: AtomicU64,
    /// Commands applied since this process started.
    commands_applied: AtomicU64,
    /// Refusals since this process started, by `RejectReason as usize`.
    rejects: [AtomicU64; REJECT_REASONS],
}

impl Default for EngineStatus {
    fn default() -> Self {
        EngineStatus {
            history: Default::default(),
            version: AtomicU64::new(0),
            applied_index: AtomicU64::new(0),
            output_hash: AtomicU64::new(0),
            last_timestamp_ns: AtomicU64::new(0),
            commands_applied: AtomicU64::new(0),
            rejects: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl EngineStatus {
    /// The last log index the engine has applied.
    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::SeqCst)
    }

    /// The applied index and the output hash after it, read consistently.
    pub fn applied(&self) -> (u64, u64) {
        loop {
            let before = self.version.load(Ordering::SeqCst);
            if before.is_multiple_of(2) {
                let index = self.applied_index.load(Ordering::SeqCst);
                let hash = self.output_hash.load(Ordering::SeqCst);
                if self.version.load(Ordering::SeqCst) == before {
                    return (index, hash);
                }
            }
            std::hint::spin_loop();
        }
    }

    fn publish(&self, index: u64, hash: u64) {
        self.version.fetch_add(1, Ordering::SeqCst);
        self.applied_index.store(index, Ordering::SeqCst);
        self.output_hash.store(hash, Ordering::SeqCst);
        self.version.fetch_add(1, Ordering::SeqCst);
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if history.back().is_some_and(|(last, _)| *last >= index) {
            // A snapshot installed over a newer history: start again from it.
            history.clear();
        }
        if history.len() == HASH_HISTORY_ENTRIES {
            history.pop_front();
        }
        history.push_back((index, hash));
    }

    /// The output hash after applying `index`, if it is recent enough to be remembered.
    pub fn hash_at(&self, index: u64) -> Option<u64> {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let position = history.binary_search_by_key(&index, |(i, _)| *i).ok()?;
        Some(history[position].1)
    }

    /// Commands applied since this process started.
    pub fn commands_applied(&self) -> u64 {
        self.commands_applied.load(Ordering::Relaxed)
    }

    /// Refusals since this process started, per reason (indexed as `RejectReason::ALL`).
    pub fn rejects(&self) -> [u64; REJECT_REASONS] {
        std::array::from_fn(|i| self.rejects[i].load(Ordering::Relaxed))
    }

    /// The largest leader timestamp among the applied batches.
    pub fn last_timestamp_ns(&self) -> u64 {
        self.last_timestamp_ns.load(Ordering::Acquire)
    }
}

/// The engine thread stopped (it panicked on a broken invariant, or was shut down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineStopped;

impl std::fmt::Display for EngineStopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the engine thread has stopped")
    }
}

impl std::error::Error for EngineStopped {}

enum Request {
    Apply {
        entries: Vec<CommittedEntry>,
        reply: oneshot::Sender<Vec<EntryOutcome>>,
    },
    Snapshot {
        reply: oneshot::Sender<EngineSnapshot>,
    },
    Restore {
        position: AppliedPosition,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<(), RestoreError>>,
    },
    Shutdown,
}

/// The handle the async world holds. Dropping it stops the thread.
pub struct EngineHandle {
    queue: Arc<ArrayQueue<Request>>,
    /// Reads (`query`): a queue of their own, served only when `queue` is empty, so that no
    /// number of readers delays applying the log.
    queries: Arc<ArrayQueue<Question>>,
    thread: Thread,
    status: Arc<EngineStatus>,
    join: Option<JoinHandle<()>>,
}

impl EngineHandle {
    /// Starts the engine thread on an empty engine, or on a node state (`encode_state`)
    /// taken at `position`.
    pub fn spawn(
        config: EngineThreadConfig,
        start: Option<(AppliedPosition, &[u8])>,
        mut tap: Option<Box<dyn OutputTap>>,
    ) -> Result<Self, RestoreError> {
        let (engine, position) = match start {
            Some((position, bytes)) => {
                let (engine_bytes, tap_bytes) = decode_state(bytes)?;
                let engine = Engine::restore(&Snapshot::from_bytes(engine_bytes)?)?;
                if let Some(tap) = tap.as_mut() {
                    tap.restore(&engine, index_of(&position), tap_bytes)
                        .map_err(RestoreError::Malformed)?;
                }
                (engine, position)
            }
            None => (Engine::new(config.engine), AppliedPosition::default()),
        };
        let status = Arc::new(EngineStatus::default());
        status.publish(index_of(&position), engine.output_hash());
        status
            .last_timestamp_ns
            .store(engine.last_timestamp_ns(), Ordering::Release);
        let queue = Arc::new(ArrayQueue::new(ENGINE_QUEUE_REQUESTS_MAX));
        let queries = Arc::new(ArrayQueue::new(ENGINE_QUERIES_MAX));
        let worker = Worker {
            engine,
            position,
            config,
            queue: Arc::clone(&queue),
            queries: Arc::clone(&queries),
            status: Arc::clone(&status),
            scratch: Vec::new(),
            entry_reports: Vec::new(),
            tap,
        };
        let join = std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || worker.run())
            .map_err(|e| RestoreError::Malformed(format!("cannot start the engine thread: {e}")))?;
        Ok(EngineHandle {
            queue,
            queries,
            thread: join.thread().clone(),
            status,
            join: Some(join),
        })
    }

    pub fn status(&self) -> &EngineStatus {
        &self.status
    }

    /// The status, to read from a query closure (which runs on the engine thread, between
    /// entries, where the applied index is the state the closure sees).
    pub fn shared_status(&self) -> Arc<EngineStatus> {
        Arc::clone(&self.status)
    }

    async fn submit(&self, request: Request) -> Result<(), EngineStopped> {
        self.push(&self.queue, request).await
    }

    /// Queues `item` for the engine thread, waiting for room (the log's queue, or the reads').
    async fn push<T>(&self, queue: &ArrayQueue<T>, mut item: T) -> Result<(), EngineStopped> {
        loop {
            if self.join.as_ref().is_none_or(|j| j.is_finished()) {
                return Err(EngineStopped);
            }
            match queue.push(item) {
                Ok(()) => {
                    self.thread.unpark();
                    if self.join.as_ref().is_none_or(|j| j.is_finished()) {
                        // The thread died as we pushed: nobody will answer what is queued.
                        while queue.pop().is_some() {}
                        return Err(EngineStopped);
                    }
                    return Ok(());
                }
                Err(back) => {
                    item = back;
                    tokio::task::yield_now().await;
                }
            }
        }
    }

    /// Applies committed entries, in log order, and returns their outcomes.
    pub async fn apply(
        &self,
        entries: Vec<CommittedEntry>,
    ) -> Result<Vec<EntryOutcome>, EngineStopped> {
        let (reply, answer) = oneshot::channel();
        self.submit(Request::Apply { entries, reply }).await?;
        answer.await.map_err(|_| EngineStopped)
    }

    /// A snapshot of the engine at its applied index.
    pub async fn snapshot(&self) -> Result<EngineSnapshot, EngineStopped> {
        let (reply, answer) = oneshot::channel();
        self.submit(Request::Snapshot { reply }).await?;
        answer.await.map_err(|_| EngineStopped)
    }

    /// Answers `question` from the engine's state between two entries. Reads wait while any
    /// entry, snapshot or restore is queued: the log has priority. A read made after an
    /// `apply` returned sees that entry's effects.
    pub async fn query<T: Send + 'static>(
        &self,
        question: impl FnOnce(&Engine) -> T + Send + 'static,
    ) -> Result<T, EngineStopped> {
        let (reply, answer) = oneshot::channel();
        let ask = move |engine: &Engine| {
            let _ = reply.send(question(engine));
        };
        // Readers wait for room in their own queue; the log never waits for them.
        self.push(&self.queries, Box::new(ask) as Question).await?;
        answer.await.map_err(|_| EngineStopped)
    }

    /// Replaces the engine state with a snapshot taken at `position`.
    pub async fn restore(
        &self,
        position: AppliedPosition,
        bytes: Vec<u8>,
    ) -> Result<Result<(), RestoreError>, EngineStopped> {
        let (reply, answer) = oneshot::channel();
        self.submit(Request::Restore {
            position,
            bytes,
            reply,
        })
        .await?;
        answer.await.map_err(|_| EngineStopped)
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        let mut request = Request::Shutdown;
        // The queue may be full of work the thread is about to finish: wait for room.
        while let Err(back) = self.queue.push(request) {
            if self.join.as_ref().is_none_or(|j| j.is_finished()) {
                break;
            }
            request = back;
            std::thread::yield_now();
        }
        self.thread.unpark();
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

struct Worker {
    engine: Engine,
    position: AppliedPosition,
    config: EngineThreadConfig,
    queue: Arc<ArrayQueue<Request>>,
    queries: Arc<ArrayQueue<Question>>,
    status: Arc<EngineStatus>,
    /// Where a command's outputs go when no broker waits for them (reused, not reallocated).
    scratch: Vec<Output>,
    /// The current entry's reports (reused: nothing allocated per entry once grown).
    entry_reports: Vec<(BrokerId, Output)>,
    tap: Option<Box<dyn OutputTap>>,
}

/// Collects each command's outputs into its own vector.
struct PerCommand<'a>(&'a mut Vec<Output>);

impl EventSink for PerCommand<'_> {
    #[inline]
    fn emit(&mut self, output: &Output) {
        self.0.push(*output);
    }
}

/// Drops every queued request and question when the engine thread ends, even by a panic, so
/// that whoever waits for an answer learns at once that none is coming.
struct DrainOnExit(Arc<ArrayQueue<Request>>, Arc<ArrayQueue<Question>>);

impl Drop for DrainOnExit {
    fn drop(&mut self) {
        while self.0.pop().is_some() {}
        while self.1.pop().is_some() {}
    }
}

impl Worker {
    fn run(mut self) {
        let _drain = DrainOnExit(Arc::clone(&self.queue), Arc::clone(&self.queries));
        if let Some(core) = self.config.pin_core {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                tracing::warn!(core, "could not pin the engine thread");
            }
        }
        let mut idle_rounds = 0u32;
        loop {
            match self.queue.pop() {
                Some(Request::Shutdown) => return,
                Some(request) => {
                    idle_rounds = 0;
                    self.handle(request);
                }
                // Nothing of the log's waits: one read, then look at the log again.
                None if !self.queries.is_empty() => {
                    idle_rounds = 0;
                    if let Some(ask) = self.queries.pop() {
                        ask(&self.engine);
                    }
                }
                None => {
                    if let Some(tap) = self.tap.as_mut() {
                        tap.idle();
                    }
                    idle(self.config.idle, idle_rounds);
                    idle_rounds = idle_rounds.saturating_add(1);
                }
            }
        }
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Apply { entries, reply } => {
                let outcomes = self.apply(entries);
                let _ = reply.send(outcomes);
            }
            Request::Snapshot { reply } => {
                let tap = self.tap.as_ref().map(|t| t.save()).unwrap_or_default();
                let _ = reply.send(EngineSnapshot {
                    last_log_id: self.position.last_log_id,
                    membership: self.position.membership.clone(),
                    output_hash: self.engine.output_hash(),
                    bytes: encode_state(&self.engine.snapshot().to_bytes(), &tap),
                });
            }
            Request::Restore {
                position,
                bytes,
                reply,
            } => {
                let restored = decode_state(&bytes).and_then(|(engine_bytes, tap_bytes)| {
                    let engine = Engine::restore(&Snapshot::from_bytes(engine_bytes)?)?;
                    if let Some(tap) = self.tap.as_mut() {
                        tap.restore(&engine, index_of(&position), tap_bytes)
                            .map_err(RestoreError::Malformed)?;
                    }
                    Ok(engine)
                });
                let result = restored.map(|engine| {
                    self.engine = engine;
                    self.position = position;
                    self.status
                        .last_timestamp_ns
                        .store(self.engine.last_timestamp_ns(), Ordering::Release);
                    self.publish_applied();
                });
                let _ = reply.send(result);
            }
            Request::Shutdown => {}
        }
    }

    fn apply(&mut self, entries: Vec<CommittedEntry>) -> Vec<EntryOutcome> {
        let mut outcomes = Vec::with_capacity(entries.len());
        for entry in entries {
            // Raft applies in order, each entry once: anything else is a bug upstream.
            assert!(
                self.position
                    .last_log_id
                    .is_none_or(|last| entry.index() > last.index),
                "entry {} applied after {:?}",
                entry.index(),
                self.position.last_log_id
            );
            let mut outcome = EntryOutcome::default();
            let mut entry_reports = std::mem::take(&mut self.entry_reports);
            entry_reports.clear();
            if let Some(batch) = &entry.batch {
                // Only the node that proposed the entry has brokers waiting for each
                // command's outputs; every other node reuses one scratch vector.
                let proposed_here = entry.log_id.leader_id.node_id == self.config.node_id;
                for input in batch.inputs(entry.index()) {
                    let mut outputs = if proposed_here {
                        Vec::new()
                    } else {
                        std::mem::take(&mut self.scratch)
                    };
                    outputs.clear();
                    self.engine.process(&input, &mut PerCommand(&mut outputs));
                    self.note(&outputs, &mut entry_reports);
                    if let Some(tap) = self.tap.as_mut() {
                        tap.command(&outputs);
                    }
                    if proposed_here {
                        outcome.outputs.push(outputs);
                    } else {
                        self.scratch = outputs;
                    }
                }
                self.status
                    .last_timestamp_ns
                    .fetch_max(batch.timestamp_ns, Ordering::AcqRel);
                self.status
                    .commands_applied
                    .fetch_add(batch.commands.len() as u64, Ordering::Relaxed);
            }
            if let Some(tap) = self.tap.as_mut() {
                if !entry_reports.is_empty() {
                    tap.reports(&entry_reports);
                }
                let timestamp_ns = entry
                    .batch
                    .as_ref()
                    .map_or(self.engine.last_timestamp_ns(), |b| b.timestamp_ns);
                tap.entry(&self.engine, entry.index(), timestamp_ns);
            }
            self.entry_reports = entry_reports;
            self.position.last_log_id = Some(entry.log_id);
            if let Some(membership) = entry.membership {
                self.position.membership = membership;
            }
            self.publish_applied();
            outcomes.push(outcome);
        }
        outcomes
    }

    /// Counts refusals by reason, and keeps every output about a broker's account as a
    /// report for that broker. A refusal for permission is the sender's answer, not news
    /// for the account's owner.
    fn note(&self, outputs: &[Output], reports: &mut Vec<(BrokerId, Output)>) {
        for output in outputs {
            let reason = output.event.reject_reason();
            if let Some(reason) = reason {
                self.status.rejects[reason as usize].fetch_add(1, Ordering::Relaxed);
            }
            if reason == Some(RejectReason::NotPermitted) {
                continue;
            }
            let owner = output
                .event
                .account()
                .and_then(|account| self.engine.account_owner(account));
            if let Some(owner) = owner.filter(|o| *o != BrokerId::OPERATOR) {
                reports.push((owner, *output));
            }
        }
    }

    fn publish_applied(&self) {
        let index = index_of(&self.position);
        let mut hash = self.engine.output_hash();
        if self.config.fault_diverge_at.is_some_and(|at| index >= at) {
            hash ^= FAULT_HASH_FLIP;
        }
        self.status.publish(index, hash);
    }
}

/// The applied index; 0 before anything (Raft's first entry, at index 0, has no commands).
fn index_of(position: &AppliedPosition) -> u64 {
    position.last_log_id.map_or(0, |id| id.index)
}

fn idle(strategy: IdleStrategy, rounds: u32) {
    match strategy {
        IdleStrategy::Spin => std::hint::spin_loop(),
        IdleStrategy::Yield => std::thread::yield_now(),
        IdleStrategy::Backoff if rounds < BACKOFF_SPINS => std::hint::spin_loop(),
        IdleStrategy::Backoff => std::thread::park_timeout(PARK_TIMEOUT),
    }
}

#[cfg(test)]
mod tests {
    use exchange_domain::{
        AccountId, AdminCommand, Amount, AssetId, BrokerCommand, ClientOrderId, Command, NewOrder,
        OrderType, Price, Qty, SelfTradePrevention, Side, SymbolId, SymbolSpec, TimeInForce,
    };

    use super::*;

    fn config(idle: IdleStrategy) -> EngineThreadConfig {
        EngineThreadConfig {
            engine: EngineConfig::default(),
            idle,
            pin_core: None,
            node_id: 1,
            fault_diverge_at: None,
        }
    }

    fn setup_batch() -> Batch {
        let mut commands = vec![Command::Admin(AdminCommand::AddSymbol(SymbolSpec {
            symbol: SymbolId(1),
            base: AssetId(1),
            quote: AssetId(2),
            tick_size: Price(1),
            lot_size: Qty(1),
            name: exchange_domain::Name::numbered("SYM", 1),
            price_decimals: 0,
        }))];
        for account in [AccountId(1), AccountId(2)] {
            commands.push(Command::Admin(AdminCommand::CreateAccount {
                account,
                owner: exchange_domain::BrokerId::OPERATOR,
            }));
            for asset in [AssetId(1), AssetId(2)] {
                commands.push(Command::Admin(AdminCommand::Deposit {
                    account,
                    asset,
                    amount: Amount(1_000_000),
                }));
            }
        }
        Batch {
            timestamp_ns: 10,
            commands: commands.into_iter().map(BrokerCommand::operator).collect(),
        }
    }

    fn order(account: u64, side: Side, price: i64) -> Command {
        Command::NewOrder(NewOrder {
            account: AccountId(account),
            symbol: SymbolId(1),
            client_order_id: ClientOrderId(0),
            side,
            order_type: OrderType::Limit,
            time_in_force: TimeInForce::Gtc,
            price: Price(price),
            qty: Qty(5),
            self_trade_prevention: SelfTradePrevention::None,
        })
    }

    fn entry(index: u64, batch: Option<Batch>) -> CommittedEntry {
        CommittedEntry {
            log_id: LogId::new(crate::replication::codec::leader_of(1, 1), index),
            batch,
            membership: None,
        }
    }

    fn entries() -> Vec<CommittedEntry> {
        vec![
            entry(1, None),
            entry(2, Some(setup_batch())),
            entry(
                3,
                Some(Batch {
                    timestamp_ns: 20,
                    commands: vec![
                        BrokerCommand::operator(order(1, Side::Sell, 100)),
                        BrokerCommand::operator(order(2, Side::Buy, 101)),
                    ],
                }),
            ),
        ]
    }

    /// The same entries processed directly, as the reference.
    fn reference() -> (Engine, Vec<Output>) {
        let mut engine = Engine::new(EngineConfig::default());
        let mut outputs = Vec::new();
        for entry in entries() {
            if let Some(batch) = &entry.batch {
                for input in batch.inputs(entry.index()) {
                    engine.process(&input, &mut outputs);
                }
            }
        }
        (engine, outputs)
    }

    #[tokio::test]
    async fn the_proposing_node_gets_each_commands_outputs() {
        let handle = EngineHandle::spawn(config(IdleStrategy::Backoff), None, None).expect("spawn");
        let outcomes = handle.apply(entries()).await.expect("apply");
        let (engine, outputs) = reference();
        let flat: Vec<Output> = outcomes
            .iter()
            .flat_map(|o| o.outputs.iter().flatten().copied())
            .collect();
        assert_eq!(flat, outputs);
        assert_eq!(outcomes.len(), 3);
        assert_eq!(outcomes[2].outputs.len(), 2, "one vector per command");
        assert_eq!(handle.status().applied(), (3, engine.output_hash()));
        assert_eq!(handle.status().last_timestamp_ns(), 20);
    }

    #[tokio::test]
    async fn the_hash_history_answers_for_recent_indexes() {
        let handle = EngineHandle::spawn(config(IdleStrategy::Backoff), None, None).expect("spawn");
        handle.apply(entries()).await.expect("apply");
        let (index, hash) = handle.status().applied();
        assert_eq!(handle.status().hash_at(index), Some(hash));
        assert!(handle.status().hash_at(2).is_some());
        assert_eq!(handle.status().hash_at(99), None);
    }

    #[tokio::test]
    async fn another_node_computes_the_same_hash_without_collecting() {
        for idle in [
            IdleStrategy::Spin,
            IdleStrategy::Yield,
            IdleStrategy::Backoff,
        ] {
            let other_node = EngineThreadConfig {
                node_id: 2,
                ..config(idle)
            };
            let handle = EngineHandle::spawn(other_node, None, None).expect("spawn");
            let outcomes = handle.apply(entries()).await.expect("apply");
            assert_eq!(outcomes.len(), 3, "one outcome per entry");
            assert!(outcomes.iter().all(|o| o.outputs.is_empty()));
            assert_eq!(handle.status().applied().1, reference().0.output_hash());
        }
    }

    #[tokio::test]
    async fn snapshot_and_restore_through_the_thread() {
        let leader = EngineHandle::spawn(config(IdleStrategy::Backoff), None, None).expect("spawn");
        leader.apply(entries()).await.expect("apply");
        let snapshot = leader.snapshot().await.expect("snapshot");
        assert_eq!(snapshot.last_log_id.map(|id| id.index), Some(3));
        let position = AppliedPosition {
            last_log_id: snapshot.last_log_id,
            membership: snapshot.membership.clone(),
        };

        let fresh = EngineHandle::spawn(config(IdleStrategy::Backoff), None, None).expect("spawn");
        fresh
            .restore(position.clone(), snapshot.bytes.clone())
            .await
            .expect("thread")
            .expect("restore");
        assert_eq!(fresh.status().applied(), leader.status().applied());
        let garbage = fresh
            .restore(AppliedPosition::default(), vec![1, 2, 3])
            .await
            .expect("thread");
        assert!(garbage.is_err(), "bad snapshot bytes are refused");
        assert_eq!(fresh.status().applied_index(), 3, "and change nothing");

        // Restarting from the snapshot also works.
        let restarted = EngineHandle::spawn(
            config(IdleStrategy::Backoff),
            Some((position, &snapshot.bytes)),
            None,
        )
        .expect("spawn");
        assert_eq!(restarted.status().applied(), leader.status().applied());
    }
}
