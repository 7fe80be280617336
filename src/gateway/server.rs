//! Serves brokers on the node's broker address.
//!
//! A connection is a session. It logs on with an API key (a broker) or the admin key (the
//! operator); until then only `Status` and `Heartbeat` are served. Every command a session
//! sends is stamped with its broker, so the engine decides ownership and exactly-once; the
//! gateway refuses early what needs no state to refuse (admin commands from a broker), and
//! bounds each session's rate and the commands it has in flight. A malformed frame, a refused
//! logon or a protocol violation is answered with an error and closes the session; other
//! sessions never notice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use exchange_domain::{
    AccountId, AdminCommand, BrokerCommand, BrokerId, Command, KeyDigest, Output,
};
use openraft::ServerState;
use tokio::sync::broadcast;

use super::credentials;
use super::metrics::GatewayMetrics;
use super::protocol::{
    AccountOrderInfo, AssetInfo, CommandAnswer, InstrumentInfo, NodeStatus, OpenOrderStatus, Reply,
    Request, BALANCE_ASSETS_MAX, BROKER_FRAME_BYTES_MAX, DEPTH_LEVELS_MAX,
    LEARNER_CATCH_UP_TIMEOUT, MARKET_MESSAGES_PER_FRAME_MAX, OPEN_ORDERS_PER_REPLY_MAX,
    PROTOCOL_VERSION, REPORTS_PER_FRAME_MAX, SUBMIT_BATCH_COMMANDS_MAX,
};
use crate::marketdata::feed::{Channel, Level};
use crate::marketdata::hub::{MarketHub, Published, Start};
use crate::net::frame::{read_frame, write_frame};
use crate::replication::divergence::DivergenceLog;
use crate::replication::engine_thread::EngineHandle;
use crate::replication::reports::ReportJournal;
use crate::replication::sequencer::{Sequencer, SubmitError};
use crate::replication::types::Raft;

/// What the gateway needs of its node.
#[derive(Clone)]
pub struct Gateway {
    pub id: u64,
    pub raft: Raft,
    pub sequencer: Sequencer,
    pub engine: Arc<EngineHandle>,
    pub committed: Arc<AtomicU64>,
    pub divergence: DivergenceLog,
    /// A leader that has heard from no majority for this long answers as if it were not the
    /// leader, so brokers go look for the real one.
    pub quorum_lost_after: Duration,
    /// The operator's credential; `None`: nobody may administer through this node.
    pub admin_digest: Option<KeyDigest>,
    pub session_limits: SessionLimits,
    /// What the engine said about each broker's accounts, to publish.
    pub reports: Arc<ReportJournal>,
    /// This node's market data, to publish (leader) and to answer snapshots from (any node).
    pub market: Arc<MarketHub>,
    pub metrics: Arc<GatewayMetrics>,
    /// Test-only planted faults (settable only in `test-faults` builds); none otherwise.
    pub faults: GatewayFaults,
    /// What the planted faults count and remember.
    pub fault_state: Arc<FaultState>,
}

/// The planted faults' counters ("every Nth") and the stale-read fault's memory.
#[derive(Default)]
pub struct FaultState {
    orders: AtomicU64,
    commands: AtomicU64,
    market_messages: AtomicU64,
    executions: AtomicU64,
    report_batches: AtomicU64,
    balance_reads: AtomicU64,
    admin_moves: AtomicU64,
    /// The last balances read per account, for the stale-read fault to answer again.
    balances: std::sync::Mutex<std::collections::HashMap<u64, Vec<Balance>>>,
}

/// The audit line of a broker key set or revoked by a command (never the key itself).
fn audit_key_change(session: &Session, command: &Command, outputs: &[Output]) {
    let Command::Admin(AdminCommand::SetBrokerKey { broker, key_digest }) = command else {
        return;
    };
    if outputs.iter().any(|o| o.event.reject_reason().is_some()) {
        return;
    }
    let change = if key_digest.0 == [0; 32] {
        "revoked"
    } else {
        "set"
    };
    tracing::info!(target: "audit", event = "broker key", broker = broker.0, change, remote = %session.remote, "broker key changed");
}

/// Counts one more with `counter` and says whether it is an Nth one (the planted faults'
/// "every Nth").
fn nth(counter: &AtomicU64, every: u64) -> bool {
    (counter.fetch_add(1, Ordering::Relaxed) + 1) % every == 0
}

/// (asset, available, held), as a balances reply carries it.
type Balance = (u32, i64, i64);

/// Why a logon is refused.
#[derive(Debug)]
enum LogonRefusal {
    /// A well-formed key that no broker has, as far as this node has applied: only final on
    /// the leader, since keys are registered through the log.
    UnknownKey,
    /// Anything else (protocol version, a malformed key, the engine stopped): final.
    Other(String),
}

impl std::fmt::Display for LogonRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogonRefusal::UnknownKey => write!(f, "logon refused: unknown API key"),
            LogonRefusal::Other(why) => write!(f, "{why}"),
        }
    }
}

/// Faults planted in the gateway so that the chaos suite can show its checkers catch them.
/// Only `test-faults` builds of exchange-node can set them; the default is none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GatewayFaults {
    /// Answer every Nth identified new order of a broker with a made-up acceptance, without
    /// sequencing it: an acknowledged order that does not exist.
    pub ack_unsequenced_every: Option<u64>,
    /// Sequence every Nth identified new order of a broker a second time as the operator's,
    /// past the exactly-once window: the client order id is entered twice.
    pub double_submit_every: Option<u64>,
    /// Leave every Nth execution out of the report stream: one side of a trade never
    /// reaches its broker.
    pub drop_execution_every: Option<u64>,
    /// Send every Nth report batch of two or more with its last two reports swapped: the
    /// stream goes back.
    pub reorder_reports_every: Option<u64>,
    /// Answer every Nth balances read with the previous read of that account: a stale read.
    pub stale_balances_every: Option<u64>,
    /// Count held funds as available too in balances replies: money from nowhere.
    pub count_held_twice: bool,
    /// Answer every Nth broker command that was sequenced with a refusal: the broker is told
    /// "failed" for a command that took effect.
    pub refuse_sequenced_every: Option<u64>,
    /// Leave every Nth market data message (not a snapshot) out of a subscriber's stream: a gap.
    pub market_gap_every: Option<u64>,
    /// Answer depth reads with one more lot at the best bid than the book holds: a wrong
    /// final book.
    pub wrong_depth: bool,
    /// Stamp the last report of every Nth report batch of two or more earlier than the first:
    /// report timestamps that go back.
    pub report_time_back_every: Option<u64>,
    /// Exit the process after this many broker commands (a node crash).
    pub exit_after_commands: Option<u64>,
    /// Answer every Nth operator deposit or withdrawal that was sequenced with "outcome
    /// unknown": history the linearizability search cannot settle.
    pub admin_unknown_every: Option<u64>,
    /// Once this node has applied this log index, report it a follower that knows no
    /// leader, even when it leads: a run that cannot find the leader to fault.
    pub status_hides_leader_from: Option<u64>,
    /// Refuse every status request: a node whose final state nobody can read.
    pub status_refused: bool,
}

/// What one session may demand of the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// Commands per second, with a burst of one second's worth.
    pub commands_per_sec: u32,
    /// Commands sent but not yet answered. At most the engine's exactly-once window, so that
    /// everything a session may have to resend is still remembered.
    pub in_flight_max: u32,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            commands_per_sec: 500_000,
            in_flight_max: 4_096,
        }
    }
}

const _: () = assert!(4_096 <= exchange_engine::CLIENT_ORDER_ID_WINDOW);

/// The largest frame read from a session that has not logged on yet.
pub const ANONYMOUS_FRAME_BYTES_MAX: usize = 4 * 1024;

/// A connection that has not logged on within this time is closed (status queries finish far
/// sooner).
pub const LOGON_TIMEOUT: Duration = Duration::from_secs(10);

/// QUIC application close codes the node uses.
pub mod close_code {
    /// A frame that does not decode, is too large, or breaks the protocol.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// The logon was refused.
    pub const LOGON_REFUSED: u32 = 2;
    /// No logon in time.
    pub const LOGON_TIMEOUT: u32 = 3;
}

/// Who a session acts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Principal {
    pub broker: BrokerId,
}

impl Principal {
    pub fn is_operator(&self) -> bool {
        self.broker == BrokerId::OPERATOR
    }

    /// What a command's answer shows this session: a broker sees the events about the
    /// account it acted for (the other side of a trade learns of it from its own reports);
    /// the operator sees everything.
    fn visible(&self, account: Option<AccountId>, mut outputs: Vec<Output>) -> Vec<Output> {
        if !self.is_operator() {
            outputs.retain(|o| o.event.account().is_none_or(|a| Some(a) == account));
        }
        outputs
    }
}

/// One connection's session state, shared by its streams.
struct Session {
    /// The broker's address, for the audit trail.
    remote: std::net::SocketAddr,
    principal: OnceLock<Principal>,
    bucket: Mutex<TokenBucket>,
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// A token bucket: `rate` tokens a second, holding at most one second's worth.
struct TokenBucket {
    rate: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    fn new(rate: u32) -> Self {
        TokenBucket {
            rate: rate as f64,
            tokens: rate as f64,
            refilled: Instant::now(),
        }
    }

    /// Takes `n` tokens, or says how long until they are there.
    fn take(&mut self, n: u32) -> Result<(), Duration> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate.max(n as f64));
        self.refilled = now;
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (n as f64 - self.tokens) / self.rate.max(1.0),
            ))
        }
    }
}

/// What a request does to its session besides its reply.
enum After {
    Continue,
    /// Answer, then close the session with this code.
    Close(u32),
}

/// A Raft role as `status` and the metrics name it.
pub fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

/// Connections served at once; more are refused (bounded memory for any number of brokers).
pub const BROKER_CONNECTIONS_MAX: usize = 4_096;
/// A read whose leadership check fell short of a majority tries again after this pause.
const READ_INDEX_RETRY_PAUSE: Duration = Duration::from_millis(2);

impl Gateway {
    pub fn status(&self) -> NodeStatus {
        // Clone at once: holding the metrics borrow would block Raft's updates.
        let metrics = self.raft.metrics().borrow().clone();
        let (applied_index, output_hash) = self.engine.status().applied();
        let hidden = self
            .faults
            .status_hides_leader_from
            .is_some_and(|index| applied_index >= index);
        let (role, leader) = if hidden {
            ("follower", None)
        } else {
            (role_name(metrics.state), metrics.current_leader)
        };
        NodeStatus {
            id: self.id,
            role: role.into(),
            term: metrics.current_term,
            leader,
            last_log_index: metrics.last_log_index,
            commit_index: self.committed.load(Ordering::Acquire),
            applied_index,
            output_hash: format!("{output_hash:016x}"),
            voters: metrics.membership_config.membership().voter_ids().collect(),
            divergence: self.divergence.first().map(|d| d.to_string()),
            hashes_checked: self.divergence.checked().into_iter().collect(),
        }
    }

    /// Whether this node leads but has not heard from a majority lately. On every order's
    /// path: two fields read under a brief borrow, not a copy of all the metrics.
    fn quorum_lost(&self) -> bool {
        let receiver = self.raft.metrics();
        let metrics = receiver.borrow();
        metrics.state == ServerState::Leader
            && metrics
                .millis_since_quorum_ack
                .is_some_and(|ms| ms > self.quorum_lost_after.as_millis() as u64)
    }

    fn not_leader(&self) -> Reply {
        let mut metrics = self.raft.metrics().borrow().clone();
        // A leader without its majority still names itself: it must not send brokers back
        // to itself.
        if metrics.current_leader == Some(self.id) {
            metrics.current_leader = None;
        }
        let broker = metrics.current_leader.and_then(|leader| {
            metrics
                .membership_config
                .membership()
                .get_node(&leader)
                .map(|node| node.broker.clone())
        });
        Reply::NotLeader {
            leader_id: metrics.current_leader,
            broker,
        }
    }

    fn membership(&self) -> Reply {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        Reply::Membership {
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
        }
    }

    /// Checks a logon; the session's principal when the key is known. Keys are registered
    /// through the log, so only the leader's "unknown" is final.
    async fn log_on(
        &self,
        protocol_version: u16,
        api_key: &str,
    ) -> Result<Principal, LogonRefusal> {
        if protocol_version != PROTOCOL_VERSION {
            return Err(LogonRefusal::Other(format!(
                "protocol version {protocol_version} is not spoken here (this node speaks {PROTOCOL_VERSION})"
            )));
        }
        credentials::check_key(api_key)
            .map_err(|e| LogonRefusal::Other(format!("logon refused: {e}")))?;
        let digest = credentials::digest(api_key);
        if self.admin_digest == Some(digest) {
            return Ok(Principal {
                broker: BrokerId::OPERATOR,
            });
        }
        let broker = self
            .engine
            .query(move |engine| {
                engine
                    .brokers()
                    .find(|(_, known)| *known == digest)
                    .map(|(id, _)| id)
            })
            .await
            .map_err(|e| LogonRefusal::Other(e.to_string()))?;
        broker
            .map(|broker| Principal { broker })
            .ok_or(LogonRefusal::UnknownKey)
    }

    async fn handle(&self, session: &Session, request: Request) -> (Reply, After) {
        let principal = match request {
            Request::Status if self.faults.status_refused => {
                return (
                    Reply::Error("status refused (a planted test fault)".into()),
                    After::Continue,
                )
            }
            Request::Status => return (Reply::Status(self.status()), After::Continue),
            Request::Heartbeat => return (Reply::Heartbeat, After::Continue),
            Request::Logon {
                protocol_version,
                api_key,
            } => {
                if session.principal.get().is_some() {
                    return (
                        Reply::Error("this session has already logged on".into()),
                        After::Close(close_code::PROTOCOL_ERROR),
                    );
                }
                let logon = self.log_on(protocol_version, &api_key).await;
                let counter = match &logon {
                    Ok(principal) => {
                        tracing::info!(target: "audit", event = "logon", broker = principal.broker.0, remote = %session.remote, "logged on");
                        &self.metrics.logons
                    }
                    Err(why) => {
                        tracing::warn!(target: "audit", event = "logon refused", remote = %session.remote, %why, "logon refused");
                        &self.metrics.logons_refused
                    }
                };
                counter.fetch_add(1, Ordering::Relaxed);
                // A node that is not the leader may not have applied the broker's registration
                // yet (just replaced, or behind): send the broker to the leader instead.
                if matches!(logon, Err(LogonRefusal::UnknownKey)) && !self.publishing() {
                    return (self.not_leader(), After::Close(close_code::LOGON_REFUSED));
                }
                return match logon {
                    Ok(principal) => {
                        // Two streams racing to log on: the first wins, the other is refused.
                        if session.principal.set(principal).is_err() {
                            return (
                                Reply::Error("this session has already logged on".into()),
                                After::Close(close_code::PROTOCOL_ERROR),
                            );
                        }
                        (
                            Reply::LoggedOn {
                                broker: principal.broker.0,
                            },
                            After::Continue,
                        )
                    }
                    Err(why) => (
                        Reply::Error(why.to_string()),
                        After::Close(close_code::LOGON_REFUSED),
                    ),
                };
            }
            other => match session.principal.get() {
                Some(principal) => (other, *principal),
                None => {
                    return (
                        Reply::Error("log on first".into()),
                        After::Close(close_code::PROTOCOL_ERROR),
                    )
                }
            },
        };
        let (request, principal) = principal;
        let arrived = Instant::now();
        let counts = matches!(request, Request::Submit(_) | Request::SubmitBatch(_));
        let reply = self.serve_request(session, principal, request).await;
        match &reply {
            Reply::Throttled { .. } => {
                self.metrics.throttled.fetch_add(1, Ordering::Relaxed);
            }
            Reply::Outputs(_) | Reply::BatchOutputs(_) if counts => {
                self.metrics.ack_latency.record(arrived.elapsed());
            }
            _ => {}
        }
        (reply, After::Continue)
    }

    /// Admits commands and sequences them: the stateless checks (size, leadership,
    /// permission), then the session's in-flight bound, then its rate, so that a refused
    /// request spends nothing. Answers each command's outputs as the session may see them,
    /// or the reply that refuses the whole request.
    async fn sequence(
        &self,
        session: &Session,
        principal: Principal,
        commands: Vec<Command>,
    ) -> Result<Vec<Result<Vec<Output>, SubmitError>>, Reply> {
        let count = commands.len();
        if count > SUBMIT_BATCH_COMMANDS_MAX {
            return Err(Reply::Error(format!(
                "a batch holds at most {SUBMIT_BATCH_COMMANDS_MAX} commands, got {count}"
            )));
        }
        if count > self.session_limits.in_flight_max as usize {
            return Err(Reply::Error(format!(
                "a request may carry at most {} commands on this node (its in-flight limit)",
                self.session_limits.in_flight_max
            )));
        }
        if self.quorum_lost() {
            return Err(Reply::NotLeader {
                leader_id: None,
                broker: None,
            });
        }
        if !principal.is_operator() && commands.iter().any(|c| matches!(c, Command::Admin(_))) {
            return Err(Reply::Error(
                "not permitted: admin commands need the admin credential".into(),
            ));
        }
        let throttled = |reason: String, retry_after: Duration| Reply::Throttled {
            reason,
            retry_after_ms: retry_after.as_millis().max(1) as u64,
        };
        let _permit = Arc::clone(&session.in_flight)
            .try_acquire_many_owned(count as u32)
            .map_err(|_| {
                throttled(
                    format!(
                        "over the session's limit of {} commands in flight",
                        self.session_limits.in_flight_max
                    ),
                    Duration::from_millis(1),
                )
            })?;
        session
            .bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(count as u32)
            .map_err(|wait| throttled("over the session's command rate".into(), wait))?;
        self.metrics
            .commands
            .fetch_add(count as u64, Ordering::Relaxed);
        let accounts: Vec<_> = commands.iter().map(Command::account).collect();
        let stamped = commands
            .into_iter()
            .map(|command| BrokerCommand {
                broker: principal.broker,
                command,
            })
            .collect();
        let results = self.sequencer.submit_many(stamped).await;
        // Not the leader, or stopping: nothing was sequenced (every command got the same
        // answer), and the broker is sent elsewhere.
        match results.first() {
            Some(Err(SubmitError::NotLeader { .. })) => return Err(self.not_leader()),
            Some(Err(SubmitError::Stopped)) => {
                return Err(Reply::NotLeader {
                    leader_id: None,
                    broker: None,
                })
            }
            _ => {}
        }
        Ok(results
            .into_iter()
            .zip(accounts)
            .map(|(result, account)| result.map(|outputs| principal.visible(account, outputs)))
            .collect())
    }

    async fn serve_request(
        &self,
        session: &Session,
        principal: Principal,
        request: Request,
    ) -> Reply {
        match request {
            Request::Status
            | Request::Heartbeat
            | Request::Logon { .. }
            | Request::Reports { .. }
            | Request::Subscribe { .. } => {
                Reply::Error("internal: session request routed as a command".into())
            }
            Request::MarketSnapshot { symbol, channel } => {
                match self.market.snapshot(symbol, channel) {
                    Some(snapshot) => Reply::Market(vec![snapshot]),
                    None => self.no_market_data(symbol),
                }
            }
            Request::Depth { symbol, levels } => self.depth(symbol, levels).await,
            Request::OrderStatus { order_id } => self.order_status(principal, order_id).await,
            Request::Balances { account, assets } => {
                self.balances(principal, account, assets).await
            }
            Request::Instruments => self.instruments().await,
            Request::OpenOrders { account } => self.open_orders(principal, account).await,
            Request::AddLearner { .. } | Request::SetVoters { .. } if !principal.is_operator() => {
                Reply::Error("not permitted: membership changes need the admin credential".into())
            }
            Request::SubmitBatch(commands) => {
                match self.sequence(session, principal, commands).await {
                    Ok(results) => Reply::BatchOutputs(
                        results
                            .into_iter()
                            .map(|result| match result {
                                Ok(outputs) => CommandAnswer::Outputs(outputs),
                                Err(SubmitError::Unknown(why)) => {
                                    CommandAnswer::OutcomeUnknown(why)
                                }
                                Err(e) => CommandAnswer::NotSequenced(e.to_string()),
                            })
                            .collect(),
                    ),
                    Err(reply) => reply,
                }
            }
            Request::AddLearner { id, raft, broker } => {
                if raft.parse::<std::net::SocketAddr>().is_err()
                    || broker.parse::<std::net::SocketAddr>().is_err()
                {
                    return Reply::Error(format!(
                        "node {id}: addresses must be ip:port, got {raft} and {broker}"
                    ));
                }
                let node = crate::replication::types::NodeAddr { raft, broker };
                match tokio::time::timeout(LEARNER_CATCH_UP_TIMEOUT, self.raft.add_learner(id, node, true)).await {
                    Ok(Ok(_)) => {
                        tracing::info!(target: "audit", event = "membership", learner = id, remote = %session.remote, "node added as a learner");
                        self.membership()
                    }
                    Ok(Err(e)) if e.forward_to_leader().is_some() => self.not_leader(),
                    Ok(Err(e)) => Reply::Error(format!("adding node {id}: {e}")),
                    Err(_) => Reply::Error(format!(
                        "node {id} was added as a learner but did not catch up within {LEARNER_CATCH_UP_TIMEOUT:?}; it is not a voter"
                    )),
                }
            }
            Request::SetVoters { voters } => {
                let voters: std::collections::BTreeSet<u64> = voters.into_iter().collect();
                if voters.is_empty() {
                    return Reply::Error("a cluster needs at least one voter".into());
                }
                match self.raft.change_membership(voters.clone(), false).await {
                    Ok(_) => {
                        tracing::info!(target: "audit", event = "membership", voters = ?voters, remote = %session.remote, "voters changed");
                        self.membership()
                    }
                    Err(e) if e.forward_to_leader().is_some() => self.not_leader(),
                    Err(e) => Reply::Error(format!("changing the voters: {e}")),
                }
            }
            Request::Submit(command) => {
                if let Some(reply) = self.planted_fault(principal, &command).await {
                    return reply;
                }
                match self.sequence(session, principal, vec![command]).await {
                    Ok(mut results) => match results.pop() {
                        Some(Ok(_)) if self.planted_refusal(principal) => {
                            Reply::Error("refused (a planted test fault)".into())
                        }
                        Some(Ok(_)) if self.planted_unknown(principal, &command) => {
                            Reply::OutcomeUnknown("no answer (a planted test fault)".into())
                        }
                        Some(Ok(outputs)) => {
                            audit_key_change(session, &command, &outputs);
                            Reply::Outputs(outputs)
                        }
                        Some(Err(SubmitError::Unknown(why))) => Reply::OutcomeUnknown(why),
                        Some(Err(e)) => Reply::Error(e.to_string()),
                        None => Reply::Error("the engine returned no outputs".into()),
                    },
                    Err(reply) => reply,
                }
            }
        }
    }
}

impl Gateway {
    /// An order's open state, from the leader's engine (which has applied everything the
    /// session was answered). A broker sees only orders of its own accounts.
    async fn order_status(&self, principal: Principal, order_id: u64) -> Reply {
        if let Err(reply) = self.confirm_leadership().await {
            return reply;
        }
        let found = self
            .engine
            .query(move |engine| {
                engine
                    .open_order(exchange_domain::OrderId(order_id))
                    .map(|open| (open, engine.account_owner(open.account)))
            })
            .await;
        let open = match found {
            Err(e) => return Reply::Error(e.to_string()),
            Ok(Some((open, owner)))
                if principal.is_operator() || owner == Some(principal.broker) =>
            {
                Some(OpenOrderStatus {
                    account: open.account.0,
                    symbol: open.symbol.0,
                    side: open.side,
                    price: open.price.0,
                    leaves_qty: open.leaves.0,
                })
            }
            // Another broker's order is as good as unknown to this one.
            Ok(_) => None,
        };
        Reply::OrderStatus { order_id, open }
    }

    /// Every symbol and named asset, from this node's engine (any node: they are replicated).
    async fn instruments(&self) -> Reply {
        let read = self
            .engine
            .query(|engine| {
                let symbols = engine
                    .instruments()
                    .map(|i| InstrumentInfo {
                        symbol: i.spec.symbol.0,
                        name: i.spec.name.to_string(),
                        base: i.spec.base.0,
                        quote: i.spec.quote.0,
                        tick_size: i.spec.tick_size.0,
                        lot_size: i.spec.lot_size.0,
                        price_decimals: i.spec.price_decimals,
                        halted: i.halted,
                        price_band_bps: i.price_band_bps,
                        reference_price: i.reference_price.0,
                    })
                    .collect();
                let assets = engine
                    .assets()
                    .iter()
                    .map(|a| AssetInfo {
                        asset: a.asset.0,
                        name: a.name.to_string(),
                        decimals: a.decimals,
                    })
                    .collect();
                (symbols, assets)
            })
            .await;
        match read {
            Ok((symbols, assets)) => Reply::Instruments { symbols, assets },
            Err(e) => Reply::Error(e.to_string()),
        }
    }

    /// An account's open orders, from the leader's engine. A broker sees only its own accounts.
    async fn open_orders(&self, principal: Principal, account: u64) -> Reply {
        if let Err(reply) = self.confirm_leadership().await {
            return reply;
        }
        let read = self
            .engine
            .query(move |engine| {
                let id = AccountId(account);
                let orders = engine
                    .account_orders(id, OPEN_ORDERS_PER_REPLY_MAX)
                    .into_iter()
                    .map(|o| AccountOrderInfo {
                        order_id: o.order_id.0,
                        client_order_id: o.client_order_id.0,
                        symbol: o.symbol.0,
                        side: o.side,
                        price: o.price.0,
                        leaves_qty: o.leaves.0,
                    })
                    .collect::<Vec<_>>();
                (engine.account_owner(id), orders)
            })
            .await;
        match read {
            Err(e) => Reply::Error(e.to_string()),
            Ok((owner, orders)) if principal.is_operator() || owner == Some(principal.broker) => {
                Reply::OpenOrders { account, orders }
            }
            // Another broker's account is as good as unknown to this one.
            Ok(_) => Reply::OpenOrders {
                account,
                orders: Vec::new(),
            },
        }
    }

    /// The test-only refusal of a command that was sequenced (`GatewayFaults`), and the
    /// test-only crash after a number of commands.
    fn planted_refusal(&self, principal: Principal) -> bool {
        let GatewayFaults {
            refuse_sequenced_every,
            exit_after_commands,
            ..
        } = self.faults;
        if principal.is_operator()
            || (refuse_sequenced_every.is_none() && exit_after_commands.is_none())
        {
            return false;
        }
        let n = self.fault_state.commands.fetch_add(1, Ordering::Relaxed) + 1;
        if exit_after_commands.is_some_and(|limit| n >= limit) {
            eprintln!("exchange-node: exiting after {n} commands (a planted test fault)");
            std::process::exit(70);
        }
        refuse_sequenced_every.is_some_and(|every| n % every == 0)
    }

    /// The test-only "outcome unknown" for an operator's deposit or withdrawal that was
    /// sequenced.
    fn planted_unknown(&self, principal: Principal, command: &Command) -> bool {
        let Some(every) = self.faults.admin_unknown_every else {
            return false;
        };
        principal.is_operator()
            && matches!(
                command,
                Command::Admin(AdminCommand::Deposit { .. } | AdminCommand::Withdraw { .. })
            )
            && nth(&self.fault_state.admin_moves, every)
    }

    /// The test-only faults (`GatewayFaults`): a made-up acceptance instead of sequencing, or a
    /// second copy of the order sequenced past the exactly-once window.
    async fn planted_fault(&self, principal: Principal, command: &Command) -> Option<Reply> {
        let GatewayFaults {
            ack_unsequenced_every,
            double_submit_every,
            ..
        } = self.faults;
        if ack_unsequenced_every.is_none() && double_submit_every.is_none() {
            return None;
        }
        let Command::NewOrder(order) = command else {
            return None;
        };
        if principal.is_operator() || order.client_order_id.0 == 0 || !self.publishing() {
            return None;
        }
        let n = self.fault_state.orders.fetch_add(1, Ordering::Relaxed) + 1;
        if ack_unsequenced_every.is_some_and(|every| n % every == 0) {
            let made_up = Output {
                seq: u64::MAX - n,
                timestamp_ns: 0,
                event: exchange_domain::Event::Accepted {
                    order_id: exchange_domain::OrderId(u64::MAX - n),
                    account: order.account,
                    symbol: order.symbol,
                    client_order_id: order.client_order_id,
                    side: order.side,
                    order_type: order.order_type,
                    time_in_force: order.time_in_force,
                    price: order.price,
                    qty: order.qty,
                },
            };
            return Some(Reply::Outputs(vec![made_up]));
        }
        if double_submit_every.is_some_and(|every| n % every == 0) {
            let copy = BrokerCommand {
                broker: BrokerId::OPERATOR,
                command: *command,
            };
            let _ = self.sequencer.submit_many(vec![copy]).await;
        }
        None
    }

    /// The engine's own book, read between two commands.
    async fn depth(&self, symbol: u32, levels: u32) -> Reply {
        let levels = levels.min(DEPTH_LEVELS_MAX) as usize;
        let status = self.engine.shared_status();
        let read = self
            .engine
            .query(move |engine| {
                let symbol = exchange_domain::SymbolId(symbol);
                let side = |side| {
                    engine
                        .levels(symbol, side)
                        .take(levels)
                        .map(|(price, qty)| Level {
                            price: price.0,
                            qty: qty.0,
                        })
                        .collect::<Vec<_>>()
                };
                engine.has_symbol(symbol).then(|| {
                    (
                        // Read between entries, on the engine thread: the book after it.
                        status.applied_index(),
                        side(exchange_domain::Side::Buy),
                        side(exchange_domain::Side::Sell),
                    )
                })
            })
            .await;
        match read {
            Ok(Some((index, mut bids, asks))) => {
                if self.faults.wrong_depth {
                    match bids.first_mut() {
                        Some(best) => best.qty += 1,
                        None => bids.push(Level { price: 1, qty: 1 }),
                    }
                }
                Reply::Depth { index, bids, asks }
            }
            Ok(None) => Reply::Error(format!("unknown symbol {symbol}")),
            Err(e) => Reply::Error(e.to_string()),
        }
    }

    /// The answer for a symbol without market data: unknown, or not yet known to a node that
    /// is still applying the log (a restarted node elected before it caught up): then "try
    /// again shortly".
    fn no_market_data(&self, symbol: u32) -> Reply {
        if self.engine.status().applied_index() < self.committed.load(Ordering::Acquire) {
            return Reply::Throttled {
                reason: "this node is still applying the log".into(),
                retry_after_ms: 50,
            };
        }
        Reply::Error(format!("no market data for symbol {symbol}"))
    }

    /// Streams one market data stream until the subscriber goes, or this node stops leading.
    /// Returns the reply that ends the stream, if any.
    async fn stream_market(
        &self,
        symbol: u32,
        channel: Channel,
        mut since: Option<u64>,
        send: &mut quinn::SendStream,
    ) -> Option<Reply> {
        'subscribe: loop {
            if !self.publishing() {
                return Some(self.not_leader());
            }
            let Some(subscription) = self.market.subscribe(symbol, channel, since) else {
                return Some(self.no_market_data(symbol));
            };
            let mut live = subscription.live;
            let mut last = match subscription.start {
                Start::Resume(later) => {
                    let last = later.last().map_or(since.unwrap_or(0), |p| p.message.seq);
                    if later.is_empty() {
                        write(send, &Reply::Market(Vec::new())).await.ok()?;
                    }
                    for chunk in later.chunks(MARKET_MESSAGES_PER_FRAME_MAX) {
                        write_market(send, chunk).await.ok()?;
                    }
                    last
                }
                Start::Snapshot(snapshot) => {
                    let last = snapshot.seq;
                    write(send, &Reply::Market(vec![snapshot])).await.ok()?;
                    last
                }
            };
            let mine = |p: &Published| p.message.symbol == symbol && p.message.channel == channel;
            let mut batch: Vec<Arc<Published>> = Vec::new();
            loop {
                let first = tokio::select! {
                    received = live.recv() => received,
                    _ = send.stopped() => return None,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {
                        if !self.publishing() {
                            return Some(self.not_leader());
                        }
                        continue;
                    }
                };
                let mut lagged = false;
                let mut next = Some(first);
                batch.clear();
                while let Some(received) = next.take() {
                    match received {
                        Ok(published) if mine(&published) && published.message.is_snapshot() => {
                            // The hub started again from snapshots (messages were dropped on
                            // their way to it): so does the subscriber.
                            last = published.message.seq;
                            batch.push(published);
                        }
                        Ok(published) if mine(&published) && published.message.seq > last => {
                            if published.message.seq != last + 1 {
                                // Messages were dropped on their way to the hub: resynchronise.
                                lagged = true;
                                break;
                            }
                            last = published.message.seq;
                            batch.push(published);
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            lagged = true;
                            break;
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            return Some(Reply::Error("the node is stopping".into()));
                        }
                    }
                    if batch.len() < MARKET_MESSAGES_PER_FRAME_MAX {
                        next = match live.try_recv() {
                            Ok(published) => Some(Ok(published)),
                            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                                Some(Err(broadcast::error::RecvError::Lagged(n)))
                            }
                            Err(broadcast::error::TryRecvError::Closed) => {
                                Some(Err(broadcast::error::RecvError::Closed))
                            }
                            Err(broadcast::error::TryRecvError::Empty) => None,
                        };
                    }
                }
                self.planted_market_gap(&mut batch);
                if !batch.is_empty() {
                    write_market(send, &batch).await.ok()?;
                    self.metrics
                        .market_messages
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
                if !self.publishing() {
                    return Some(self.not_leader());
                }
                if lagged {
                    // Too far behind to catch up message by message: start again from a
                    // fresh snapshot.
                    self.metrics.market_resyncs.fetch_add(1, Ordering::Relaxed);
                    since = None;
                    continue 'subscribe;
                }
            }
        }
    }

    /// An account's balances, from the leader's engine. A broker sees only its own accounts.
    async fn balances(&self, principal: Principal, account: u64, assets: Vec<u32>) -> Reply {
        if let Err(reply) = self.confirm_leadership().await {
            return reply;
        }
        if assets.len() > BALANCE_ASSETS_MAX {
            return Reply::Error(format!(
                "at most {BALANCE_ASSETS_MAX} assets a request, got {}",
                assets.len()
            ));
        }
        let read = self
            .engine
            .query(move |engine| {
                let id = AccountId(account);
                let owner = engine.account_owner(id);
                let balances = if assets.is_empty() {
                    engine
                        .account_balances(id)
                        .into_iter()
                        .map(|(asset, available, held)| (asset.0, available, held))
                        .collect::<Vec<_>>()
                } else {
                    assets
                        .iter()
                        .filter_map(|&asset| {
                            engine
                                .balance(id, exchange_domain::AssetId(asset))
                                .map(|(available, held)| (asset, available, held))
                        })
                        .collect::<Vec<_>>()
                };
                (owner, balances)
            })
            .await;
        match read {
            Err(e) => Reply::Error(e.to_string()),
            Ok((owner, balances)) if principal.is_operator() || owner == Some(principal.broker) => {
                Reply::Balances {
                    account,
                    balances: self.planted_balance_faults(account, balances),
                }
            }
            // Another broker's account is as good as unknown to this one.
            Ok(_) => Reply::Balances {
                account,
                balances: Vec::new(),
            },
        }
    }

    /// The test-only faults of balances replies: held funds counted twice, or a stale read.
    fn planted_balance_faults(&self, account: u64, mut balances: Vec<Balance>) -> Vec<Balance> {
        if self.faults.count_held_twice {
            for (_, available, held) in balances.iter_mut() {
                *available += *held;
            }
        }
        if let Some(every) = self.faults.stale_balances_every {
            let n = self
                .fault_state
                .balance_reads
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            let mut last = self
                .fault_state
                .balances
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let previous = last.insert(account, balances.clone());
            if n % every == 0 {
                if let Some(previous) = previous {
                    return previous;
                }
            }
        }
        balances
    }

    /// The test-only market data gap: every Nth message (other than a snapshot) left out.
    fn planted_market_gap(&self, batch: &mut Vec<Arc<Published>>) {
        let Some(every) = self.faults.market_gap_every else {
            return;
        };
        batch.retain(|published| {
            published.message.is_snapshot() || !nth(&self.fault_state.market_messages, every)
        });
    }

    /// The test-only faults of the report stream: executions left out, reports reordered,
    /// timestamps that go back.
    fn planted_report_faults(&self, batch: &mut Vec<Output>) {
        if let Some(every) = self.faults.report_time_back_every {
            if batch.len() >= 2 && nth(&self.fault_state.report_batches, every) {
                let first = batch[0].timestamp_ns;
                if let Some(last) = batch.last_mut() {
                    last.timestamp_ns = first.saturating_sub(1);
                }
            }
        }
        if let Some(every) = self.faults.drop_execution_every {
            batch.retain(|report| {
                !matches!(report.event, exchange_domain::Event::Execution { .. })
                    || !nth(&self.fault_state.executions, every)
            });
        }
        if let Some(every) = self.faults.reorder_reports_every {
            if batch.len() >= 2 && nth(&self.fault_state.report_batches, every) {
                let last = batch.len() - 1;
                batch.swap(last - 1, last);
            }
        }
    }

    /// Makes a read linearizable (Raft's read index): a leader deposed without knowing it yet
    /// would answer from a stale state, so it first confirms with a majority that it still
    /// leads, and waits until its engine has applied everything committed before the read.
    async fn confirm_leadership(&self) -> Result<(), Reply> {
        let deadline = tokio::time::Instant::now() + self.quorum_lost_after * 4;
        loop {
            if !self.publishing() {
                return Err(self.not_leader());
            }
            match tokio::time::timeout_at(deadline, self.raft.ensure_linearizable()).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) if e.forward_to_leader().is_some() => return Err(self.not_leader()),
                // The heartbeats of this round did not reach a majority in time (a busy host
                // answers late): another round may, until the deadline.
                Ok(Err(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(READ_INDEX_RETRY_PAUSE).await;
                }
                // No majority confirmed this node's leadership in time: as good as not leading.
                Ok(Err(_)) | Err(_) => return Err(self.not_leader()),
            }
        }
    }

    /// Whether this node leads and has heard from a majority lately: only then it publishes.
    fn publishing(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader && !self.quorum_lost()
    }

    /// Streams a broker's reports after `since` until the stream fails or this node stops
    /// leading. Returns the reply that ends the stream, if any.
    async fn stream_reports(
        &self,
        broker: BrokerId,
        mut since: u64,
        send: &mut quinn::SendStream,
    ) -> Option<Reply> {
        let mut recorded = self.reports.subscribe();
        let mut first = true;
        loop {
            if !self.publishing() {
                return Some(self.not_leader());
            }
            recorded.borrow_and_update();
            let batch = match self.reports.since(broker, since, REPORTS_PER_FRAME_MAX) {
                Ok(batch) => batch,
                Err(gap) => {
                    return Some(Reply::Error(format!(
                        "reports up to seq {} are no longer kept on this node; asked since {since}",
                        gap.complete_after
                    )))
                }
            };
            if batch.is_empty() && !first {
                // Wake on news, now and then to notice a lost leadership, and at once when
                // the subscriber goes away (else this task would outlive its connection).
                tokio::select! {
                    _ = recorded.changed() => {}
                    _ = send.stopped() => return None,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                continue;
            }
            first = false;
            if let Some(last) = batch.last() {
                since = last.seq;
            }
            let mut batch = batch;
            self.planted_report_faults(&mut batch);
            write(send, &Reply::Reports(batch)).await.ok()?;
        }
    }
}

/// Accepts brokers until the endpoint closes.
pub async fn serve(endpoint: quinn::Endpoint, gateway: Gateway) {
    let connections = Arc::new(tokio::sync::Semaphore::new(BROKER_CONNECTIONS_MAX));
    while let Some(incoming) = endpoint.accept().await {
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(connection) = incoming.await else {
                return;
            };
            let session = Arc::new(Session {
                remote: connection.remote_address(),
                principal: OnceLock::new(),
                bucket: Mutex::new(TokenBucket::new(gateway.session_limits.commands_per_sec)),
                in_flight: Arc::new(tokio::sync::Semaphore::new(
                    gateway.session_limits.in_flight_max as usize,
                )),
            });
            let logon_deadline = tokio::time::sleep(LOGON_TIMEOUT);
            tokio::pin!(logon_deadline);
            // A guard is read when the select is entered, which may be before a stream
            // logged on: the deadline branch looks again before it closes anything.
            let mut logged_on = false;
            loop {
                tokio::select! {
                    accepted = connection.accept_bi() => {
                        let Ok((send, recv)) = accepted else { break };
                        tokio::spawn(serve_stream(
                            gateway.clone(),
                            Arc::clone(&session),
                            connection.clone(),
                            send,
                            recv,
                        ));
                    }
                    () = &mut logon_deadline, if !logged_on => {
                        if session.principal.get().is_some() {
                            logged_on = true;
                            continue;
                        }
                        connection.close(
                            close_code::LOGON_TIMEOUT.into(),
                            b"no logon in time",
                        );
                        break;
                    }
                }
            }
            if let Some(principal) = session.principal.get() {
                let why = connection
                    .close_reason()
                    .map(|r| r.to_string())
                    .unwrap_or_default();
                tracing::info!(target: "audit", event = "logoff", broker = principal.broker.0, remote = %session.remote, %why, "session ended");
            }
        });
    }
}

async fn serve_stream(
    gateway: Gateway,
    session: Arc<Session>,
    connection: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    loop {
        // Before logon a frame can only be a logon, a status or a heartbeat: a few hundred
        // bytes, so an anonymous peer cannot make the node read a megabyte.
        let limit = match session.principal.get() {
            Some(_) => BROKER_FRAME_BYTES_MAX,
            None => ANONYMOUS_FRAME_BYTES_MAX,
        };
        let (reply, after) = match read_frame(&mut recv, limit).await {
            Ok(None) => break,
            Ok(Some(bytes)) => match postcard::from_bytes::<Request>(&bytes) {
                Ok(Request::Reports { since_seq }) => match session.principal.get() {
                    Some(principal) if !principal.is_operator() => {
                        let end = gateway
                            .stream_reports(principal.broker, since_seq, &mut send)
                            .await;
                        // The stream stays usable after a refusal (not the leader, a gap).
                        match end {
                            Some(reply) if write(&mut send, &reply).await.is_ok() => continue,
                            _ => break,
                        }
                    }
                    Some(_) => (
                        Reply::Error("the operator has no reports; log on as a broker".into()),
                        After::Continue,
                    ),
                    None => (
                        Reply::Error("log on first".into()),
                        After::Close(close_code::PROTOCOL_ERROR),
                    ),
                },
                Ok(Request::Subscribe {
                    symbol,
                    channel,
                    since,
                }) => match session.principal.get() {
                    Some(_) => {
                        let end = gateway
                            .stream_market(symbol, channel, since, &mut send)
                            .await;
                        match end {
                            Some(reply) if write(&mut send, &reply).await.is_ok() => continue,
                            _ => break,
                        }
                    }
                    None => (
                        Reply::Error("log on first".into()),
                        After::Close(close_code::PROTOCOL_ERROR),
                    ),
                },
                Ok(request) => gateway.handle(&session, request).await,
                Err(e) => (
                    Reply::Error(format!("malformed request: {e}")),
                    After::Close(close_code::PROTOCOL_ERROR),
                ),
            },
            Err(e) => (
                Reply::Error(e.to_string()),
                After::Close(close_code::PROTOCOL_ERROR),
            ),
        };
        let written = write(&mut send, &reply).await;
        if let After::Close(code) = after {
            let _ = send.finish();
            // Give the error a moment to leave before the connection goes.
            let _ = tokio::time::timeout(Duration::from_millis(100), send.stopped()).await;
            connection.close(code.into(), b"session closed by the node");
            return;
        }
        if written.is_err() {
            break;
        }
    }
    let _ = send.finish();
}

/// Writes `Reply::Market` of already encoded messages: postcard encodes an enum as its variant
/// index then its content, and a vector as its length then its elements, so the frame is the
/// variant's prefix, the count, and the messages' bytes as the hub encoded them once for all.
async fn write_market(send: &mut quinn::SendStream, messages: &[Arc<Published>]) -> Result<(), ()> {
    let frame = market_frame(messages);
    write_frame(send, &frame).await.map_err(|_| ())
}

fn market_frame(messages: &[Arc<Published>]) -> Vec<u8> {
    let mut frame = postcard::to_allocvec(&Reply::Market(Vec::new())).unwrap_or_default();
    // The empty vector's length is the last byte (a varint 0): replace it by the count.
    frame.pop();
    let mut count = [0u8; 10];
    // A usize's varint takes at most 10 bytes: this cannot fail.
    if let Ok(count) = postcard::to_slice(&messages.len(), &mut count) {
        frame.extend_from_slice(count);
    }
    for published in messages {
        frame.extend_from_slice(&published.encoded);
    }
    frame
}

async fn write(send: &mut quinn::SendStream, reply: &Reply) -> Result<(), ()> {
    let bytes = postcard::to_allocvec(reply).map_err(|_| ())?;
    write_frame(send, &bytes).await.map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marketdata::feed::{LevelChange, MdBody, MdMessage};

    #[test]
    fn a_market_frame_is_what_postcard_makes_of_the_reply() {
        for count in [0usize, 1, 3, 200] {
            let messages: Vec<MdMessage> = (0..count as u64)
                .map(|seq| MdMessage {
                    symbol: 7,
                    channel: Channel::Book,
                    seq,
                    index: seq * 3,
                    timestamp_ns: seq * 1_000,
                    body: MdBody::BookUpdate {
                        changes: vec![LevelChange {
                            side: exchange_domain::Side::Sell,
                            price: 100 + seq as i64,
                            qty: 5,
                        }],
                    },
                })
                .collect();
            let published: Vec<Arc<Published>> = messages
                .iter()
                .map(|m| {
                    Arc::new(Published {
                        message: m.clone(),
                        encoded: postcard::to_allocvec(m).unwrap(),
                    })
                })
                .collect();
            let expected = postcard::to_allocvec(&Reply::Market(messages)).unwrap();
            assert_eq!(market_frame(&published), expected, "{count} messages");
        }
    }
}
