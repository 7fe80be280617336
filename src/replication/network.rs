//! Raft's network: one QUIC connection per peer (mutual TLS), one bidirectional stream per
//! RPC, postcard frames. The outbound side implements openraft's network traits; the inbound
//! side only decodes and forwards to `raft.append_entries / vote / pre_vote /
//! install_full_snapshot`.
//!
//! Every RPC is bounded by openraft's deadline for it; a failed connection is dropped and
//! re-dialled on the next RPC, so a healed partition reconnects by itself.
//!
//! openraft gives each AppendEntries one heartbeat (20 ms by default) and, when that runs
//! out, sends the same entries again at once. On a busy host a follower's answer (its fsync
//! included) can take longer than that for a while: every try would time out and each resend
//! would queue behind the last. So an AppendEntries exchange runs as a task of its own that
//! outlives the call's deadline, and a resend from the same place in the log waits for that
//! exchange's answer instead of sending the entries again (`PeerConnection::in_flight`); when
//! the resend carries more entries than the exchange did, the answer says how far the
//! follower matched (a partial success), and the rest goes in the next request. After a few
//! deadlines an unanswered exchange is taken for lost and the entries are sent again.

use std::future::Future;
use std::io::Cursor;
use std::net::SocketAddr;
use std::time::Duration;

use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::OptionalSend;
use serde::{Deserialize, Serialize};

use super::state_machine::Raft;
use super::types::{
    raft_stopped, LogId, NodeAddr, NodeId, Snapshot, SnapshotData, SnapshotMeta, TypeConfig, Vote,
};
use crate::net::frame::{read_frame, read_frame_by_kind, write_frame, FrameError};
use crate::net::tls::node_name;

/// The largest Raft frame: a whole snapshot travels in one. Memory for it is taken as its
/// bytes arrive, not when a peer announces it.
pub const RAFT_FRAME_BYTES_MAX: usize = 1 << 30;
/// The largest AppendEntries frame: the log store gives replication at most
/// `APPEND_PAYLOAD_BYTES` (1 MiB) of entries, or one entry if it is larger, and one holds at most
/// `BATCH_COMMANDS_MAX` (2,048) commands of about 100 bytes; this leaves room for membership
/// entries and a change of encoding.
pub const APPEND_FRAME_BYTES_MAX: usize = 16 << 20;
/// The largest Vote or PreVote frame (a vote and a log id).
pub const VOTE_FRAME_BYTES_MAX: usize = 4 << 10;
/// The largest answer to any RPC (a vote, a log id, an error's text).
pub const RESPONSE_FRAME_BYTES_MAX: usize = 1 << 20;
/// Frames larger than this are decoded on a blocking thread.
const LARGE_FRAME_BYTES: usize = 1 << 20;
/// How long an AppendEntries exchange may go on after the call that started it gave up (a
/// resend of the same entries picks up its answer).
const APPEND_OUTLIVES_CALL: Duration = Duration::from_secs(2);
/// Resends join a running exchange for at most this many calls' deadlines; after that it is
/// taken for lost and the entries go again, well within an election timeout (a request the
/// follower never got must not hold replication to it up for `APPEND_OUTLIVES_CALL`).
const APPEND_JOIN_DEADLINES: u32 = 4;
/// How long dialling a peer may take before the RPC counts the peer unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// A snapshot transfer's deadline: a base plus time per megabyte.
const SNAPSHOT_TIMEOUT_BASE: Duration = Duration::from_secs(5);
const SNAPSHOT_TIMEOUT_PER_MIB: Duration = Duration::from_millis(100);

/// What a Raft RPC is. postcard writes an enum's variant index first (a varint, one byte for
/// these), so the first byte of a request's frame says which it is, and how large it may be.
///
/// A node of a build on openraft 0.9 cannot read a Vote of this one (it gained a field), nor
/// this one its: such a request is answered `Malformed`, so a cluster moves to this build all
/// at once (README, release notes).
#[derive(Serialize, Deserialize)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    FullSnapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    },
    /// Would this node vote for the candidate? Asked before an election, which a candidate
    /// holds only if a majority would: a node cut off and back does not depose a live leader.
    PreVote(VoteRequest<TypeConfig>),
}

#[derive(Serialize, Deserialize)]
pub enum Response {
    AppendEntries(Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>>),
    Vote(Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>>),
    FullSnapshot(Result<SnapshotResponse<TypeConfig>, Fatal<TypeConfig>>),
    /// The request could not be decoded.
    Malformed(String),
    PreVote(Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>>),
}

#[derive(Debug)]
struct Failure(String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

/// Creates a connection handle per peer; openraft calls it for each replication stream (its
/// heartbeats and snapshots too), and for each round of vote requests.
#[derive(Clone)]
pub struct Network {
    endpoint: quinn::Endpoint,
    connections: std::sync::Arc<Connections>,
}

impl Network {
    pub fn new(endpoint: quinn::Endpoint) -> Self {
        Network {
            endpoint,
            connections: std::sync::Arc::default(),
        }
    }
}

/// This node's connection to each peer, shared by every handle openraft makes for it.
/// openraft makes a new handle for each election's pre-vote and vote rounds and for each new
/// leader's replication streams; with a connection of its own, each of them began with a
/// QUIC and TLS handshake, on a failover's critical path and when the host is busiest (five
/// nodes on two cores: docs/performance.md, "Five nodes"). `keep_connected` keeps one open to
/// every member, followers' connections to each other included.
#[derive(Default)]
struct Connections(std::sync::Mutex<PeerTable>);

/// Each peer's shared connection, and the address it was dialled at.
type PeerTable = std::collections::HashMap<NodeId, (String, quinn::Connection)>;

/// A dial under way (`dial`), and the connection it ends with.
type Dial = tokio::task::JoinHandle<Result<quinn::Connection, String>>;

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, PeerTable> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The open connection to `target` at `addr` in `table`, if there is one.
    fn open_in(table: &PeerTable, target: NodeId, addr: &str) -> Option<quinn::Connection> {
        let (at, connection) = table.get(&target)?;
        (at == addr && connection.close_reason().is_none()).then(|| connection.clone())
    }

    /// The open connection to `target` at `addr`, if there is one.
    fn get(&self, target: NodeId, addr: &str) -> Option<quinn::Connection> {
        Self::open_in(&self.lock(), target, addr)
    }

    /// Shares a connection just dialled, unless an open one to `target` is shared already:
    /// returns the one to use (a spare is closed as its last handle drops).
    fn keep(&self, target: NodeId, addr: &str, connection: quinn::Connection) -> quinn::Connection {
        let mut table = self.lock();
        if let Some(open) = Self::open_in(&table, target, addr) {
            return open;
        }
        table.insert(target, (addr.to_string(), connection.clone()));
        connection
    }

    /// Forgets `connection` (an exchange on it failed), unless another has replaced it.
    fn forget(&self, target: NodeId, connection: &quinn::Connection) {
        let mut connections = self.lock();
        if connections
            .get(&target)
            .is_some_and(|(_, kept)| kept.stable_id() == connection.stable_id())
        {
            connections.remove(&target);
        }
    }
}

pub struct PeerConnection {
    endpoint: quinn::Endpoint,
    shared: std::sync::Arc<Connections>,
    target: NodeId,
    addr: String,
    connection: Option<quinn::Connection>,
    /// A dial in progress. It runs as a task of its own, so that a call whose deadline (one
    /// heartbeat) ends mid-handshake does not throw the handshake away: on a busy host a QUIC
    /// and TLS handshake can take longer than a heartbeat, and a node just restarted would
    /// otherwise never be reached, stand for election, and depose a healthy leader.
    dialing: Option<Dial>,
    /// The AppendEntries exchange whose call timed out, still running, and its answer to come.
    in_flight: Option<InFlight>,
}

/// An AppendEntries exchange: the leader's vote, the log id before its entries and the last
/// entry's (the entries run contiguously between them), and its answer to come.
struct InFlight {
    started: tokio::time::Instant,
    vote: Vote,
    prev: Option<LogId>,
    last: Option<LogId>,
    exchange: tokio::task::JoinHandle<Result<Response, CallError>>,
}

impl InFlight {
    /// Whether a request from `vote`, after `prev`, up to `last` covers what this exchange
    /// sent: the same leader and place in the log, and as many entries or more (a leader's
    /// entries after one log id are the same whenever it sends them). Its answer then answers
    /// the request, as far as this exchange's entries go. (The leader's commit index may have
    /// moved on; the follower learns it with the next request.)
    fn answers(
        &self,
        vote: &Vote,
        prev: &Option<LogId>,
        last: &Option<LogId>,
        join_for: Duration,
    ) -> bool {
        self.started.elapsed() < join_for
            && self.vote == *vote
            && self.prev == *prev
            && self.last <= *last
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> PeerConnection {
        PeerConnection::new(self, target, node.raft.clone())
    }
}

/// How often `keep_connected` looks for a member it has no open connection to.
const KEEP_CONNECTED_EVERY: Duration = Duration::from_millis(250);

/// Keeps a connection open from this node to every other member, for the node's life (it
/// ends with Raft), so that a candidate's vote requests and a new leader's first
/// AppendEntries find one ready: a follower otherwise has none to the other followers. The
/// transport's keep-alives hold an idle one open (one every election timeout's upper end, 60
/// ms by default, each way per pair); a closed one (a peer restarted, a partition, an exchange
/// that failed) is dialled again within `KEEP_CONNECTED_EVERY`, without waiting for the dial
/// here. A node that is no longer a member keeps none.
pub async fn keep_connected(raft: Raft, network: Network, id: NodeId) {
    use openraft::async_runtime::watch::WatchReceiver as _;
    let mut server = raft.server_metrics();
    let mut dials: std::collections::HashMap<NodeId, Dial> = Default::default();
    loop {
        tokio::time::sleep(KEEP_CONNECTED_EVERY).await;
        if raft_stopped(&mut server) {
            return;
        }
        // The other members, if this node is one.
        let peers: Vec<(NodeId, String)> = {
            let metrics = server.borrow_watched();
            let membership = metrics.membership_config.membership();
            match membership.get_node(&id) {
                Some(_) => membership
                    .nodes()
                    .filter(|(peer, _)| **peer != id)
                    .map(|(peer, node)| (*peer, node.raft.clone()))
                    .collect(),
                None => Vec::new(),
            }
        };
        let is_peer = |peer: &NodeId, addr: Option<&str>| {
            peers
                .iter()
                .any(|(of, at)| of == peer && addr.is_none_or(|addr| at == addr))
        };
        dials.retain(|peer, dial| {
            let keep = !dial.is_finished() && is_peer(peer, None);
            if !keep {
                dial.abort();
            }
            keep
        });
        network
            .connections
            .lock()
            .retain(|peer, (addr, _)| is_peer(peer, Some(addr)));
        for (peer, addr) in &peers {
            if network.connections.get(*peer, addr).is_none() && !dials.contains_key(peer) {
                let dialling = dial(&network.endpoint, &network.connections, *peer, addr.clone());
                dials.insert(*peer, dialling);
            }
        }
    }
}

/// What went wrong with one call, before it is mapped to openraft's error types.
enum CallError {
    Unreachable(String),
    Network(String),
    Timeout,
}

/// Dials `target` at `addr` on a task of its own and shares what it opens (`Connections::keep`):
/// a handle that gives up waiting, or is dropped, mid-handshake does not waste the handshake
/// (on a busy host one can outlast a heartbeat).
fn dial(
    endpoint: &quinn::Endpoint,
    shared: &std::sync::Arc<Connections>,
    target: NodeId,
    addr: String,
) -> Dial {
    let (endpoint, shared) = (endpoint.clone(), std::sync::Arc::clone(shared));
    tokio::spawn(async move {
        let at: SocketAddr = tokio::net::lookup_host(&addr)
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| format!("cannot resolve {addr}"))?;
        let connecting = endpoint
            .connect(at, &node_name(target))
            .map_err(|e| e.to_string())?;
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| format!("connecting to {at} timed out"))?
            .map_err(|e| e.to_string())?;
        Ok(shared.keep(target, &addr, connection))
    })
}

impl PeerConnection {
    fn new(network: &Network, target: NodeId, addr: String) -> Self {
        PeerConnection {
            endpoint: network.endpoint.clone(),
            shared: std::sync::Arc::clone(&network.connections),
            target,
            addr,
            connection: None,
            dialing: None,
            in_flight: None,
        }
    }

    async fn connection(&mut self) -> Result<quinn::Connection, CallError> {
        if let Some(connection) = &self.connection {
            if connection.close_reason().is_none() {
                return Ok(connection.clone());
            }
        }
        self.drop_connection();
        if let Some(connection) = self.shared.get(self.target, &self.addr) {
            // A dial of this handle's own is not waited for: it goes on, and what it opens is
            // kept only if no other is shared by then.
            self.dialing = None;
            self.connection = Some(connection.clone());
            return Ok(connection);
        }
        if self.dialing.is_none() {
            self.dialing = Some(dial(
                &self.endpoint,
                &self.shared,
                self.target,
                self.addr.clone(),
            ));
        }
        // Awaiting the handle is cancel-safe: a call that times out here leaves the dial
        // running for the next call to pick up.
        let dialed = match self.dialing.as_mut() {
            Some(dialing) => dialing.await,
            None => return Err(CallError::Unreachable("no dial in progress".into())),
        };
        self.dialing = None;
        let connection = dialed
            .map_err(|e| CallError::Unreachable(format!("dialing node {}: {e}", self.target)))?
            .map_err(CallError::Unreachable)?;
        self.connection = Some(connection.clone());
        Ok(connection)
    }

    /// Stops using the connection (it closed, or an exchange on it failed): the next call
    /// takes another peer handle's, or dials afresh.
    fn drop_connection(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.shared.forget(self.target, &connection);
        }
    }

    async fn call(&mut self, request: &Request, deadline: Duration) -> Result<Response, CallError> {
        let bytes =
            postcard::to_allocvec(request).map_err(|e| CallError::Network(e.to_string()))?;
        self.call_encoded(bytes, deadline, PRIORITY_DEFAULT).await
    }

    async fn call_encoded(
        &mut self,
        bytes: Vec<u8>,
        deadline: Duration,
        priority: i32,
    ) -> Result<Response, CallError> {
        let attempt = async {
            let connection = self.connection().await?;
            exchange(&connection, &bytes, priority).await
        };
        match tokio::time::timeout(deadline, attempt).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => {
                // Drop the connection so the next call dials afresh.
                self.drop_connection();
                Err(error)
            }
            Err(_) => Err(CallError::Timeout),
        }
    }

    /// `exchange` as a task of its own, bounded by `bound`.
    fn spawn_exchange(
        connection: quinn::Connection,
        bytes: Vec<u8>,
        bound: Duration,
    ) -> tokio::task::JoinHandle<Result<Response, CallError>> {
        tokio::spawn(async move {
            tokio::time::timeout(bound, exchange(&connection, &bytes, PRIORITY_DEFAULT))
                .await
                .unwrap_or(Err(CallError::Timeout))
        })
    }

    /// An AppendEntries: joins the exchange still running from the same place in the log, or
    /// starts one; answers within `deadline`, leaving an unfinished exchange for the resend.
    async fn append(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        deadline: Duration,
    ) -> Result<Response, CallError> {
        let started = tokio::time::Instant::now();
        let (vote, prev) = (rpc.vote, rpc.prev_log_id);
        let last = rpc.entries.last().map(|entry| entry.log_id).or(prev);
        let joins = self.in_flight.as_ref().is_some_and(|running| {
            running.answers(&vote, &prev, &last, deadline * APPEND_JOIN_DEADLINES)
        });
        if !joins {
            // Another request: an exchange still running for an older one goes on alone.
            self.in_flight = None;
            let connection = match tokio::time::timeout(deadline, self.connection()).await {
                Ok(connection) => connection?,
                Err(_) => return Err(CallError::Timeout),
            };
            let bytes = postcard::to_allocvec(&Request::AppendEntries(rpc))
                .map_err(|e| CallError::Network(e.to_string()))?;
            let exchange = Self::spawn_exchange(connection, bytes, deadline + APPEND_OUTLIVES_CALL);
            self.in_flight = Some(InFlight {
                started,
                vote,
                prev,
                last,
                exchange,
            });
        }
        let Some(running) = self.in_flight.as_mut() else {
            return Err(CallError::Network("no exchange in flight".into()));
        };
        let left = deadline.saturating_sub(started.elapsed());
        let answer = match tokio::time::timeout(left, &mut running.exchange).await {
            // Not yet: the exchange stays for the resend to pick up.
            Err(_) => return Err(CallError::Timeout),
            Ok(joined) => joined,
        };
        let sent_up_to = running.last;
        self.in_flight = None;
        match answer {
            // The follower has what the exchange carried; the request's further entries go
            // in the next one.
            Ok(Ok(Response::AppendEntries(Ok(AppendEntriesResponse::Success))))
                if sent_up_to != last =>
            {
                Ok(Response::AppendEntries(Ok(
                    AppendEntriesResponse::PartialSuccess(sent_up_to),
                )))
            }
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => {
                if !matches!(error, CallError::Timeout) {
                    // Drop the connection so the next call dials afresh.
                    self.drop_connection();
                }
                Err(error)
            }
            Err(join) => Err(CallError::Network(format!("the exchange failed: {join}"))),
        }
    }

    fn rpc_error(
        &self,
        error: CallError,
        deadline: Duration,
        action: openraft::network::RPCTypes,
    ) -> RPCError<TypeConfig> {
        match error {
            CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&Failure(e))),
            CallError::Network(e) => RPCError::Network(NetworkError::new(&Failure(e))),
            CallError::Timeout => RPCError::Timeout(Timeout {
                action,
                id: 0,
                target: self.target,
                timeout: deadline,
            }),
        }
    }
}

/// Reads the end of a stream whose one frame has been read, when it has arrived (it comes with
/// the frame): a stream dropped before its end is read makes quinn send the peer a
/// STOP_SENDING, which was a packet of its own on every round of replication.
fn take_end(recv: &mut quinn::RecvStream) {
    use futures_util::FutureExt;
    let _ = recv.read(&mut [0u8; 1]).now_or_never();
}

/// The priority of a request's stream among those on its connection.
const PRIORITY_DEFAULT: i32 = 0;
/// A snapshot (up to a GiB) shares its peer's connection with entries, heartbeats and votes:
/// its stream sends only what they leave room for.
const PRIORITY_SNAPSHOT: i32 = -1;

/// One request and its answer, on a stream of its own on `connection`, at `priority`.
async fn exchange(
    connection: &quinn::Connection,
    bytes: &[u8],
    priority: i32,
) -> Result<Response, CallError> {
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(|e| CallError::Unreachable(e.to_string()))?;
    if priority != PRIORITY_DEFAULT {
        let _ = send.set_priority(priority);
    }
    let frame_error = |e: FrameError| CallError::Network(e.to_string());
    write_frame(&mut send, bytes).await.map_err(frame_error)?;
    let _ = send.finish();
    let reply = read_frame(&mut recv, RESPONSE_FRAME_BYTES_MAX)
        .await
        .map_err(frame_error)?
        .ok_or_else(|| CallError::Network("the peer closed the stream".into()))?;
    take_end(&mut recv);
    postcard::from_bytes::<Response>(&reply).map_err(|e| CallError::Network(e.to_string()))
}

type RpcResult<T> = Result<T, RPCError<TypeConfig>>;

/// A peer that answered with an error of its own (it is shutting down, say) is, for the
/// caller, a peer that cannot take the request now.
fn remote_failure(target: NodeId, error: &RaftError<TypeConfig>) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&Failure(format!(
        "node {target} answered: {error}"
    ))))
}

fn unexpected_reply() -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&Failure("unexpected reply".into())))
}

impl RaftNetworkV2<TypeConfig> for PeerConnection {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<TypeConfig>> {
        let deadline = option.hard_ttl();
        match self.append(rpc, deadline).await {
            Ok(Response::AppendEntries(Ok(response))) => Ok(response),
            Ok(Response::AppendEntries(Err(e))) => Err(remote_failure(self.target, &e)),
            Ok(_) => Err(unexpected_reply()),
            Err(e) => Err(self.rpc_error(e, deadline, openraft::network::RPCTypes::AppendEntries)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<TypeConfig>> {
        let deadline = option.hard_ttl();
        match self.call(&Request::Vote(rpc), deadline).await {
            Ok(Response::Vote(Ok(response))) => Ok(response),
            Ok(Response::Vote(Err(e))) => Err(remote_failure(self.target, &e)),
            Ok(_) => Err(unexpected_reply()),
            Err(e) => Err(self.rpc_error(e, deadline, openraft::network::RPCTypes::Vote)),
        }
    }

    /// A peer that cannot be asked counts as a refusal (openraft's default would grant it).
    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<TypeConfig>> {
        let deadline = option.hard_ttl();
        match self.call(&Request::PreVote(rpc), deadline).await {
            Ok(Response::PreVote(Ok(response))) => Ok(response),
            Ok(Response::PreVote(Err(e))) => Err(remote_failure(self.target, &e)),
            Ok(_) => Err(unexpected_reply()),
            Err(e) => Err(self.rpc_error(e, deadline, openraft::network::RPCTypes::Vote)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let data = snapshot.snapshot.into_inner();
        let deadline = SNAPSHOT_TIMEOUT_BASE + SNAPSHOT_TIMEOUT_PER_MIB * (data.len() >> 20) as u32;
        let request = Request::FullSnapshot {
            vote,
            meta: snapshot.meta,
            data,
        };
        // Encoding a whole snapshot takes long enough to stall heartbeats on an async worker.
        let encoded = tokio::task::spawn_blocking(move || postcard::to_allocvec(&request))
            .await
            .map_err(|e| StreamingError::Network(NetworkError::new(&Failure(e.to_string()))))?
            .map_err(|e| StreamingError::Network(NetworkError::new(&Failure(e.to_string()))))?;
        let call = self.call_encoded(encoded, deadline, PRIORITY_SNAPSHOT);
        let result = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            result = call => result,
        };
        match result {
            Ok(Response::FullSnapshot(Ok(response))) => Ok(response),
            Ok(Response::FullSnapshot(Err(fatal))) => Err(StreamingError::Unreachable(
                Unreachable::new(&Failure(format!(
                    "node {} failed installing the snapshot: {fatal}",
                    self.target
                ))),
            )),
            Ok(_) => Err(StreamingError::Network(NetworkError::new(&Failure(
                "unexpected reply".into(),
            )))),
            Err(CallError::Unreachable(e)) => {
                Err(StreamingError::Unreachable(Unreachable::new(&Failure(e))))
            }
            Err(CallError::Network(e)) => {
                Err(StreamingError::Network(NetworkError::new(&Failure(e))))
            }
            Err(CallError::Timeout) => Err(StreamingError::Timeout(Timeout {
                action: openraft::network::RPCTypes::InstallSnapshot,
                id: 0,
                target: self.target,
                timeout: deadline,
            })),
        }
    }
}

/// The largest frame a request of this kind (its first byte: the variant) may be.
fn request_frame_max(variant: u8) -> usize {
    match variant {
        0 => APPEND_FRAME_BYTES_MAX,
        1 | 3 => VOTE_FRAME_BYTES_MAX,
        2 => RAFT_FRAME_BYTES_MAX,
        _ => 0,
    }
}

/// The node a connection's certificate names: every RPC on it must speak for that node (a
/// node's certificate, stolen or misused, cannot vote or lead as another).
struct PeerCertificate {
    der: Option<rustls::pki_types::CertificateDer<'static>>,
    /// The node id last found named by it (`u64::MAX`: none yet).
    verified: std::sync::atomic::AtomicU64,
}

impl PeerCertificate {
    fn of(connection: &quinn::Connection) -> Self {
        let der = connection
            .peer_identity()
            .and_then(|any| {
                any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                    .ok()
            })
            .and_then(|chain| chain.into_iter().next());
        PeerCertificate {
            der,
            verified: std::sync::atomic::AtomicU64::new(u64::MAX),
        }
    }

    /// Whether the certificate was issued to node `id` (it names `node-<id>`).
    fn names(&self, id: NodeId) -> bool {
        use std::sync::atomic::Ordering;
        if self.verified.load(Ordering::Relaxed) == id {
            return true;
        }
        let Some(der) = &self.der else {
            return false;
        };
        let Ok(cert) = webpki::EndEntityCert::try_from(der) else {
            return false;
        };
        let Ok(name) = rustls::pki_types::DnsName::try_from(node_name(id)) else {
            return false;
        };
        let named = cert
            .verify_is_valid_for_subject_name(&rustls::pki_types::ServerName::DnsName(name))
            .is_ok();
        if named {
            self.verified.store(id, Ordering::Relaxed);
        }
        named
    }
}

/// The node a request speaks for: the candidate of a vote, the leader of the rest.
fn speaker(request: &Request) -> Option<NodeId> {
    let vote = match request {
        Request::AppendEntries(rpc) => &rpc.vote,
        Request::Vote(rpc) | Request::PreVote(rpc) => &rpc.vote,
        Request::FullSnapshot { vote, .. } => vote,
    };
    Some(vote.leader_id().node_id)
}

/// When this node last took an AppendEntries (entries or a heartbeat) from a leader, and from
/// which: the HTTP API's measure of how long a change of leader left the node without one.
pub struct LeaderContact {
    since: std::time::Instant,
    /// The leader's id, and nanoseconds after `since` (0: never).
    leader: std::sync::atomic::AtomicU64,
    at_ns: std::sync::atomic::AtomicU64,
    /// The commit index that leader's last AppendEntries carried.
    leader_commit: std::sync::atomic::AtomicU64,
}

impl Default for LeaderContact {
    fn default() -> Self {
        LeaderContact {
            since: std::time::Instant::now(),
            leader: Default::default(),
            at_ns: Default::default(),
            leader_commit: Default::default(),
        }
    }
}

impl LeaderContact {
    fn heard(&self, leader: NodeId, leader_commit: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.leader.store(leader, Relaxed);
        self.leader_commit.store(leader_commit, Relaxed);
        self.at_ns
            .store(self.since.elapsed().as_nanos().max(1) as u64, Relaxed);
    }

    /// The commit index the last AppendEntries carried: what the leader had committed then,
    /// which a follower still catching up has not yet got to itself.
    pub fn leader_commit(&self) -> u64 {
        self.leader_commit
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The leader last heard from, and when.
    pub fn last(&self) -> Option<(NodeId, std::time::Instant)> {
        use std::sync::atomic::Ordering::Relaxed;
        let at_ns = self.at_ns.load(Relaxed);
        (at_ns > 0).then(|| {
            let at = self.since + Duration::from_nanos(at_ns);
            (self.leader.load(Relaxed), at)
        })
    }
}

/// Serves Raft RPCs from peers on `endpoint` until it closes.
pub async fn serve(endpoint: quinn::Endpoint, raft: Raft, contact: std::sync::Arc<LeaderContact>) {
    while let Some(incoming) = endpoint.accept().await {
        let raft = raft.clone();
        let contact = std::sync::Arc::clone(&contact);
        tokio::spawn(async move {
            let Ok(connection) = incoming.await else {
                return;
            };
            let peer = std::sync::Arc::new(PeerCertificate::of(&connection));
            while let Ok((send, recv)) = connection.accept_bi().await {
                let (raft, peer) = (raft.clone(), std::sync::Arc::clone(&peer));
                let contact = std::sync::Arc::clone(&contact);
                tokio::spawn(handle_stream(raft, peer, contact, send, recv));
            }
        });
    }
}

async fn handle_stream(
    raft: Raft,
    peer: std::sync::Arc<PeerCertificate>,
    contact: std::sync::Arc<LeaderContact>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let bytes = match read_frame_by_kind(&mut recv, RAFT_FRAME_BYTES_MAX, request_frame_max).await {
        Ok(Some(bytes)) => {
            take_end(&mut recv);
            bytes
        }
        Ok(None) => return,
        Err(e) => {
            tracing::warn!("a peer's Raft frame was refused: {e}");
            return respond(&mut send, &Response::Malformed(format!("refused: {e}"))).await;
        }
    };
    // A large frame is a snapshot: decode it off the async workers.
    let decoded = if bytes.len() > LARGE_FRAME_BYTES {
        tokio::task::spawn_blocking(move || {
            postcard::from_bytes::<Request>(&bytes).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
    } else {
        postcard::from_bytes::<Request>(&bytes).map_err(|e| e.to_string())
    };
    let decoded = decoded
        .map_err(|e| {
            tracing::warn!(
                "a peer's Raft request does not decode ({e}): a node of another version? A \
                 cluster moves to a build on another openraft version all at once"
            );
            format!("undecodable request: {e}")
        })
        .and_then(|request| match speaker(&request) {
            Some(id) if peer.names(id) => Ok(request),
            claimed => {
                let why = format!(
                "refused: an RPC speaking for node {} on a connection whose certificate is not \
                 that node's",
                claimed.map_or("none".into(), |id| id.to_string())
            );
                tracing::warn!("{why}");
                Err(why)
            }
        });
    let response = match decoded {
        Ok(Request::AppendEntries(rpc)) => {
            let leader = Some(rpc.vote.leader_id().node_id);
            let leader_commit = rpc.leader_commit.map_or(0, |id| id.index);
            let answer = raft.append_entries(rpc).await;
            // Taken from a leader this node follows (a higher vote of its own refuses it).
            if let (Ok(response), Some(leader)) = (&answer, leader) {
                if !matches!(response, AppendEntriesResponse::HigherVote(_)) {
                    contact.heard(leader, leader_commit);
                }
            }
            Response::AppendEntries(answer)
        }
        Ok(Request::Vote(rpc)) => Response::Vote(raft.vote(rpc).await),
        Ok(Request::PreVote(rpc)) => Response::PreVote(raft.pre_vote(rpc).await),
        Ok(Request::FullSnapshot { vote, meta, data }) => {
            let snapshot = Snapshot {
                meta,
                snapshot: Cursor::new(data),
            };
            Response::FullSnapshot(raft.install_full_snapshot(vote, snapshot).await)
        }
        Err(e) => Response::Malformed(e),
    };
    respond(&mut send, &response).await;
}

/// Answers a peer's RPC and ends the stream (a peer that went away needs no answer).
async fn respond(send: &mut quinn::SendStream, response: &Response) {
    if let Ok(bytes) = postcard::to_allocvec(response) {
        let _ = write_frame(send, &bytes).await;
        let _ = send.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::net::tls;

    /// A Raft endpoint for node 2 that counts the connections it accepts, and node 1's
    /// `Network` towards it.
    async fn node_two_and_a_network_to_it(
        scratch: &std::path::Path,
    ) -> (quinn::Endpoint, Arc<AtomicUsize>, Network) {
        let certs = scratch.join("certs");
        tls::generate(&certs, &[1, 2], &[]).expect("certificates");
        let transport = tls::transport(Duration::from_secs(5));
        let loopback: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let two = tls::load_identity(&certs, 2).expect("identity");
        let server = quinn::Endpoint::server(
            tls::mutual_server(&two, Arc::clone(&transport)).expect("server config"),
            loopback,
        )
        .expect("node 2's endpoint");
        let accepted = Arc::new(AtomicUsize::new(0));
        let (listener, counter) = (server.clone(), Arc::clone(&accepted));
        tokio::spawn(async move {
            while let Some(incoming) = listener.accept().await {
                // Counted when the handshake begins: the dialler may finish first.
                counter.fetch_add(1, Ordering::SeqCst);
                if let Ok(connection) = incoming.await {
                    // Held open until the peer closes it.
                    tokio::spawn(async move { connection.closed().await });
                }
            }
        });
        let one = tls::load_identity(&certs, 1).expect("identity");
        let mut client = quinn::Endpoint::client(loopback).expect("node 1's endpoint");
        client
            .set_default_client_config(tls::mutual_client(&one, transport).expect("client config"));
        (server, accepted, Network::new(client))
    }

    fn node_two(server: &quinn::Endpoint) -> NodeAddr {
        NodeAddr {
            raft: server.local_addr().expect("bound").to_string(),
            broker: String::new(),
        }
    }

    #[tokio::test]
    async fn every_handle_to_a_peer_uses_one_connection() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let (server, accepted, mut network) = node_two_and_a_network_to_it(scratch.path()).await;
        // As openraft makes them: a replication stream's handle, then a vote round's.
        let mut replication = network.new_client(2, &node_two(&server)).await;
        let mut vote_round = network.new_client(2, &node_two(&server)).await;
        let first = replication.connection().await.ok().expect("connected");
        let second = vote_round.connection().await.ok().expect("connected");
        assert_eq!(first.stable_id(), second.stable_id());
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one handshake");
    }

    #[tokio::test]
    async fn a_closed_connection_is_replaced_once_for_every_handle() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let (server, accepted, mut network) = node_two_and_a_network_to_it(scratch.path()).await;
        let mut replication = network.new_client(2, &node_two(&server)).await;
        let mut vote_round = network.new_client(2, &node_two(&server)).await;
        let old = replication.connection().await.ok().expect("connected");
        old.close(0u32.into(), b"test");
        let new = vote_round.connection().await.ok().expect("dialled again");
        assert_ne!(new.stable_id(), old.stable_id());
        let taken_up = replication.connection().await.ok().expect("connected");
        assert_eq!(taken_up.stable_id(), new.stable_id());
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "one more handshake");
    }
}
