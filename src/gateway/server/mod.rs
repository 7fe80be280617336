//! Serves brokers on the node's broker address.
//!
//! A connection is a session. It logs on with an API key (a broker) or the admin key (the
//! operator); until then only `Status` and `Heartbeat` are served. Every command a session
//! sends is stamped with its broker, so the engine decides ownership and exactly-once; the
//! gateway refuses early what needs no state to refuse (admin commands from a broker), and
//! bounds each session's rate and the commands it has in flight. A malformed frame, a refused
//! logon or a protocol violation is answered with an error and closes the session; other
//! sessions never notice.
//!
//! One file per concern: `logon` (sessions and keys), `admission` (limits and sequencing),
//! `queries`, `streams` (reports and market data), `admin` (membership), `faults` (planted
//! test faults, compiled only with `test-faults`); this file routes requests to them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use exchange_domain::{
    AccountId, AdminCommand, BrokerCommand, BrokerId, Command, KeyDigest, Output,
};
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
use crate::replication::keys::BrokerKeys;
use crate::replication::leadership::{Leadership, LeadershipError};
use crate::replication::reports::ReportJournal;
use crate::replication::sequencer::{Sequencer, SubmitError};

mod admin;
mod admission;
mod connections;
mod faults;
mod logon;
mod queries;
mod quota;
mod streams;
mod translated;

use admission::TokenBucket;
pub use admission::{
    BrokerRates, BrokerSessions, SessionLimits, BROKER_COMMANDS_PER_SEC_DEFAULT,
    BROKER_READS_PER_SEC_DEFAULT, COMMANDS_PER_SEC_DEFAULT, READS_PER_SEC_DEFAULT,
    SESSIONS_PER_BROKER_MAX_DEFAULT,
};
pub use connections::{
    ConnectionAdmission, HANDSHAKE_TIMEOUT, PENDING_MAX, PENDING_PER_SOURCE_MAX, RETRY_WHEN_PENDING,
};
pub use faults::{FaultState, GatewayFaults};
use logon::{audit_key_change, LogonRefusal, KEY_CHANGED};
pub use logon::{
    FailedLogons, FAILED_LOGONS_PER_SOURCE_MAX, FAILED_LOGON_DELAY, FAILED_LOGON_WINDOW,
};
pub use queries::catalog_of;
use queries::Balance;
pub use quota::{Place, Quota};
pub use translated::{NotQueued, Queued, TranslatedLogon, TranslatedSession};

/// What the gateway needs of its node.
#[derive(Clone)]
pub struct Gateway {
    /// Where market data streams run (a runtime at a lower priority); `None`: here.
    pub fanout: Option<tokio::runtime::Handle>,
    /// The market data endpoint's gateway (`--md-listen`): it answers logons, market data and
    /// status, and refuses the rest.
    pub market_data_only: bool,
    /// Who leads, and membership changes: the gateway's one window on Raft.
    pub leadership: Leadership,
    pub sequencer: Sequencer,
    pub engine: Arc<EngineHandle>,
    pub committed: Arc<AtomicU64>,
    pub divergence: DivergenceLog,
    /// The operator's credential; `None`: nobody may administer through this node.
    pub admin_digest: Option<KeyDigest>,
    /// Each broker's key digest as this node has applied them.
    pub keys: Arc<BrokerKeys>,
    /// Failed logons per source address, to slow down key guessing.
    pub failed_logons: Arc<FailedLogons>,
    /// Each broker's sessions on this node, held to `SessionLimits::sessions_per_broker_max`.
    pub broker_sessions: Arc<BrokerSessions>,
    /// Each broker's command and read rates over all its sessions on this node.
    pub broker_rates: Arc<BrokerRates>,
    /// The node's connection places: a small pending pool, then a place per session.
    pub connections: Arc<ConnectionAdmission>,
    /// A development node (`--dev`), which says so in its status.
    pub development: bool,
    /// The node's HTTP API address, which its status names.
    pub http_listen: Option<std::net::SocketAddr>,
    /// The node's FIX address, which its status names.
    pub fix_listen: Option<std::net::SocketAddr>,
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

/// The largest frame read from a session that has not logged on yet.
pub const ANONYMOUS_FRAME_BYTES_MAX: usize = 4 * 1024;

/// A connection that has not logged on within this time is closed (status queries finish far
/// sooner): a connection that never logs on holds a pending place this long at most.
pub const LOGON_TIMEOUT: Duration = Duration::from_secs(3);

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
    /// The digest of the key the session logged on with: once the broker's key is another,
    /// the session ends.
    key: OnceLock<KeyDigest>,
    /// The key table's generation at which `key` was last found current.
    keys_checked: AtomicU64,
    /// Whether the session was found with a key no longer its broker's (counted once).
    ended_by_key_change: std::sync::atomic::AtomicBool,
    /// The broker's count of sessions holds this one while it lives.
    slot: OnceLock<Place<BrokerId>>,
    /// Its place in the pending pool, until it logs on.
    pending: Mutex<Option<connections::PendingSlot>>,
    /// Its place among the node's sessions, once it logged on.
    place: OnceLock<tokio::sync::OwnedSemaphorePermit>,
    bucket: Mutex<TokenBucket>,
    /// The session's read rate.
    read_bucket: Mutex<TokenBucket>,
    /// Its broker's rates over all the broker's sessions on this node, once it logged on as
    /// a broker.
    broker_rates: OnceLock<Arc<admission::BrokerBuckets>>,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl Session {
    /// A connection from `remote` that has not logged on, holding `pending`.
    fn new(
        remote: std::net::SocketAddr,
        pending: connections::PendingSlot,
        limits: &SessionLimits,
    ) -> Session {
        Session {
            remote,
            principal: OnceLock::new(),
            key: OnceLock::new(),
            keys_checked: AtomicU64::new(0),
            ended_by_key_change: Default::default(),
            slot: OnceLock::new(),
            pending: Mutex::new(Some(pending)),
            place: OnceLock::new(),
            bucket: Mutex::new(TokenBucket::new(limits.commands_per_sec)),
            read_bucket: Mutex::new(TokenBucket::new(limits.reads_per_sec)),
            broker_rates: OnceLock::new(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(limits.in_flight_max as usize)),
        }
    }
}

/// What a request does to its session besides its reply.
enum After {
    Continue,
    /// Answer, then close the session with this code.
    Close(u32),
}

/// Sessions logged on at once; more logons are refused (bounded memory for any number of
/// brokers). Connections that have not logged on come from a pool of their own
/// (`connections::PENDING_MAX`).
pub const BROKER_CONNECTIONS_MAX: usize = 4_096;

impl Gateway {
    pub fn status(&self) -> NodeStatus {
        let view = self.leadership.view();
        let (applied_index, output_hash) = self.engine.status().applied();
        let (role, leader) = if self.planted_hidden_leader(applied_index) {
            ("follower", None)
        } else {
            (view.role.name(), view.leader)
        };
        NodeStatus {
            id: self.leadership.id(),
            role: role.into(),
            term: view.term,
            leader,
            last_log_index: view.last_log_index,
            commit_index: self.committed.load(Ordering::Acquire),
            applied_index,
            output_hash: format!("{output_hash:016x}"),
            voters: view.voters,
            divergence: self.divergence.first().map(|d| d.to_string()),
            hashes_checked: self.divergence.checked().into_iter().collect(),
            development: self.development,
            http: self.http_listen.map(|addr| addr.to_string()),
            fix: self.fix_listen.map(|addr| addr.to_string()),
        }
    }

    async fn handle(&self, session: &Session, request: Request) -> (Reply, After) {
        if self.market_data_only && !market_data_request(&request) {
            // Before logon, as on the broker endpoint: the session ends.
            let after = match session.principal.get() {
                Some(_) => After::Continue,
                None => After::Close(close_code::PROTOCOL_ERROR),
            };
            return (Reply::Error(MARKET_DATA_ONLY.into()), after);
        }
        let principal = match request {
            Request::Status if self.planted_status_refused() => {
                return (
                    Reply::Error("status refused (a planted test fault)".into()),
                    After::Continue,
                )
            }
            Request::Status => return (Reply::Status(Box::new(self.status())), After::Continue),
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
                let keys_generation = self.keys.generation();
                let logon = self
                    .log_on(session.remote.ip(), protocol_version, &api_key)
                    .await;
                let counter = match &logon {
                    Ok((principal, _)) => {
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
                if matches!(
                    logon,
                    Err(LogonRefusal::UnknownKey | LogonRefusal::NotLeader)
                ) && !self.publishing()
                {
                    return (self.not_leader(), After::Close(close_code::LOGON_REFUSED));
                }
                let logon = logon.and_then(|(principal, digest)| {
                    self.admit_session(session, principal)?;
                    Ok((principal, digest))
                });
                return match logon {
                    Ok((principal, digest)) => {
                        // Two streams racing to log on: the first wins, the other is refused.
                        if session.key.set(digest).is_err()
                            || session.principal.set(principal).is_err()
                        {
                            return (
                                Reply::Error("this session has already logged on".into()),
                                After::Close(close_code::PROTOCOL_ERROR),
                            );
                        }
                        session
                            .keys_checked
                            .store(keys_generation, Ordering::Release);
                        self.metrics.sessions.fetch_add(1, Ordering::Relaxed);
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
                Some(_) if !self.key_still_valid(session) => {
                    return (
                        Reply::Error(KEY_CHANGED.into()),
                        After::Close(close_code::LOGON_REFUSED),
                    )
                }
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

    async fn serve_request(
        &self,
        session: &Session,
        principal: Principal,
        request: Request,
    ) -> Reply {
        let read = matches!(
            request,
            Request::MarketSnapshot { .. }
                | Request::Depth { .. }
                | Request::OrderStatus { .. }
                | Request::Balances { .. }
                | Request::Instruments
                | Request::OpenOrders { .. }
        );
        if read {
            if let Some(refusal) = self.admit_read(session, principal) {
                return refusal;
            }
        }
        let digest_sent = match &request {
            Request::Submit(command) => sends_a_digest(command),
            Request::SubmitBatch(commands) => commands.iter().any(sends_a_digest),
            _ => false,
        };
        if digest_sent {
            return Reply::Error(
                "a broker key is set with the SetBrokerKey request (exchange-cli admin \
                 set-broker-key), which sends the key for the node to digest with the \
                 cluster's salt; a digest, and the salt, are not taken from a client"
                    .into(),
            );
        }
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
                self.add_learner(session, id, raft, broker).await
            }
            Request::SetVoters { voters } => self.set_voters(session, voters).await,
            Request::SetBrokerKey { .. } if !principal.is_operator() => {
                Reply::Error("not permitted: broker keys need the admin credential".into())
            }
            Request::SetBrokerKey { broker, key } => {
                self.set_broker_key(session, principal, broker, &key).await
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
                        answer => one_answer(session, &command, answer),
                    },
                    Err(reply) => reply,
                }
            }
        }
    }
}

/// The reply to one sequenced command: its outputs (a key change audited), or why not.
fn one_answer(
    session: &Session,
    command: &Command,
    answer: Option<Result<Vec<Output>, SubmitError>>,
) -> Reply {
    match answer {
        Some(Ok(outputs)) => {
            audit_key_change(session, command, &outputs);
            Reply::Outputs(outputs)
        }
        Some(Err(SubmitError::Unknown(why))) => Reply::OutcomeUnknown(why),
        Some(Err(e)) => Reply::Error(e.to_string()),
        None => Reply::Error("the engine returned no outputs".into()),
    }
}

/// Whether a command carries what only the node may make: a key digest (revoking, the
/// all-zero digest, needs no key) or the key salt.
fn sends_a_digest(command: &Command) -> bool {
    match command {
        Command::Admin(AdminCommand::SetBrokerKey { key_digest, .. }) => !key_digest.is_revoked(),
        Command::Admin(AdminCommand::SetKeySalt { .. }) => true,
        _ => false,
    }
}

/// What the market data endpoint (`--md-listen`) answers to any other request.
pub const MARKET_DATA_ONLY: &str = "this is a market data endpoint (--md-listen): it serves \
     logons, Subscribe, MarketSnapshot, Depth, Instruments and Status; send orders, reports and \
     other queries to the node's broker endpoint";

/// What the market data endpoint answers.
fn market_data_request(request: &Request) -> bool {
    matches!(
        request,
        Request::Status
            | Request::Heartbeat
            | Request::Logon { .. }
            | Request::Subscribe { .. }
            | Request::MarketSnapshot { .. }
            | Request::Depth { .. }
            | Request::Instruments
    )
}

/// Accepts brokers until the endpoint closes.
pub async fn serve(endpoint: quinn::Endpoint, gateway: Gateway) {
    while let Some(incoming) = endpoint.accept().await {
        let admission = &gateway.connections;
        // Busy: the source proves its address before the node spends a handshake on it.
        if admission.pending() >= RETRY_WHEN_PENDING
            && !incoming.remote_address_validated()
            && incoming.may_retry()
        {
            gateway
                .metrics
                .address_validations
                .fetch_add(1, Ordering::Relaxed);
            let _ = incoming.retry();
            continue;
        }
        let Some(pending) = admission.try_pending(incoming.remote_address().ip()) else {
            gateway
                .metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            incoming.refuse();
            continue;
        };
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let Ok(Ok(connection)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await else {
                return;
            };
            let session = Arc::new(Session::new(
                connection.remote_address(),
                pending,
                &gateway.session_limits,
            ));
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
                gateway.metrics.sessions.fetch_sub(1, Ordering::Relaxed);
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
                Ok(Request::Reports { .. }) if gateway.market_data_only => {
                    (Reply::Error(MARKET_DATA_ONLY.into()), After::Continue)
                }
                Ok(Request::Reports { since_seq }) => match session.principal.get() {
                    Some(principal) if !principal.is_operator() => {
                        let end = gateway
                            .stream_reports(&session, principal.broker, since_seq, &mut send)
                            .await;
                        // The stream stays usable after a refusal (not the leader, a gap),
                        // unless the session's key is no longer its broker's.
                        match end {
                            Some(reply) if !gateway.key_still_valid(&session) => {
                                (reply, After::Close(close_code::LOGON_REFUSED))
                            }
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
                        let (end, returned) = gateway
                            .stream_market_apart(Arc::clone(&session), symbol, channel, since, send)
                            .await;
                        // The streaming task failed: the stream went with it.
                        let Some(returned) = returned else { return };
                        send = returned;
                        match end {
                            Some(reply) if !gateway.key_still_valid(&session) => {
                                (reply, After::Close(close_code::LOGON_REFUSED))
                            }
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

async fn write(send: &mut quinn::SendStream, reply: &Reply) -> Result<(), ()> {
    let bytes = postcard::to_allocvec(reply).map_err(|_| ())?;
    write_frame(send, &bytes).await.map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::streams::market_frame;
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
                .map(|m| Arc::new(Published::new(m.clone())))
                .collect();
            let expected = postcard::to_allocvec(&Reply::Market(messages)).unwrap();
            assert_eq!(market_frame(&published), expected, "{count} messages");
        }
    }
}
