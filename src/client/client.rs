//! The client library: connects to any node, logs on, follows leader redirects, and submits
//! commands. A broker's new orders (those with a client order id) are resent when their outcome
//! is unknown (the leader failed mid-request): the engine answers a resend with the original
//! outcome, so each order is executed exactly once.

use std::net::SocketAddr;
use std::time::Duration;

use exchange_domain::{Command, Output};
use rustls::pki_types::CertificateDer;

use crate::feed::{Channel, Level, MdMessage, StreamState};
use crate::frame::{read_frame, write_frame};
use crate::protocol::{CommandAnswer, NodeStatus, Reply, Request, PROTOCOL_VERSION};
use crate::tls;

/// Redirects followed, and waits for an election, before a submit gives up.
const REDIRECTS_MAX: u32 = 20;
const NO_LEADER_PAUSE: Duration = Duration::from_millis(10);
/// The longest a request may wait for its reply; past it the outcome is unknown. Longer than a
/// proposal's own deadline on the leader (2 s), so the node normally answers first.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest reply accepted: a mass cancel of a big account is many events.
pub const BROKER_REPLY_BYTES_MAX: usize = 64 << 20;
/// A connection silent this long is dead: a crashed leader is given up on this fast (keep-alives
/// flow four times as often, so a live but idle node is never mistaken for dead). Comparable to
/// the cluster's election time, so that a client notices a crash about when a new leader is up.
pub const DEAD_NODE_TIMEOUT_DEFAULT: Duration = Duration::from_millis(100);
/// A node that does not complete a handshake in this time is taken for down (on a LAN a
/// handshake takes a millisecond).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a broker keeps resending a new order whose outcome is unknown: longer than any
/// failover takes.
const RESEND_FOR: Duration = Duration::from_secs(15);

#[derive(Debug)]
pub enum ClientError {
    /// No node could be reached, or none knew a leader in time: the request was not sent.
    Unavailable(String),
    /// The request was sent but no reply came (the node failed or went silent): it may or may
    /// not have been executed. Resending is safe only for requests that are idempotent (exactly
    /// once for orders comes with their client order id).
    OutcomeUnknown(String),
    /// The node answered with an error.
    Rejected(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unavailable(e) => write!(f, "cluster unavailable: {e}"),
            ClientError::OutcomeUnknown(e) => write!(f, "no reply, outcome unknown: {e}"),
            ClientError::Rejected(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A batch's answers: each command's outputs or why it has none; or why the whole request
/// failed.
pub type BatchAnswers = Result<Vec<Result<Vec<Output>, ClientError>>, ClientError>;

/// Each command's answer as the client library reports answers.
fn per_command(answers: Vec<CommandAnswer>) -> Vec<Result<Vec<Output>, ClientError>> {
    answers
        .into_iter()
        .map(|answer| match answer {
            CommandAnswer::Outputs(outputs) => Ok(outputs),
            CommandAnswer::NotSequenced(why) => Err(ClientError::Rejected(why)),
            CommandAnswer::OutcomeUnknown(why) => Err(ClientError::OutcomeUnknown(why)),
        })
        .collect()
}

struct Link {
    addr: SocketAddr,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    _connection: quinn::Connection,
}

/// A node whose connection just failed is not tried again for this long (unless no other node
/// answers): followers keep naming a crashed leader until they elect a new one.
const SUSPECT_FOR: Duration = Duration::from_millis(1_000);
/// A node under suspicion that the others still name as leader this long after its failure is
/// tried again: longer than an election takes with the default timeouts (90-120 ms of silence
/// before a vote). Trusting suspicion for the whole `SUSPECT_FOR` stalled brokers for up to a
/// second whenever their connection to a live leader had failed.
const TRUST_REDIRECT_AFTER: Duration = Duration::from_millis(150);

/// A connection attempt's end: the logged-on link and the broker it acts as, or why not.
type Attempt = Result<(Link, Option<u32>), ConnectError>;

/// Why a connection could not be used.
enum ConnectError {
    /// The node could not be reached (down, unreachable, slow).
    Network(String),
    /// The node refused the logon: no other node will accept it either.
    Refused(String),
}

/// A broker's connection to the cluster.
pub struct Client {
    endpoint: quinn::Endpoint,
    nodes: Vec<SocketAddr>,
    /// The key every connection logs on with; `None`: no logon (status queries only).
    api_key: Option<String>,
    /// Who the node said the session acts as (0: the operator), once logged on.
    broker: Option<u32>,
    link: Option<Link>,
    /// Logged-on links to other nodes, opened while looking for the leader and kept until it
    /// answers: during a failover the client asks one node after another, and a link already
    /// open costs no handshake. (Every client handshaking with every node on each round slowed
    /// the very election it waited for: docs/performance.md, "Five nodes".)
    standby: Vec<Link>,
    /// Connection attempts `connect_any` started and has not yet collected, with the node each
    /// one is to.
    connecting: tokio::task::JoinSet<Attempt>,
    connecting_to: Vec<(tokio::task::Id, SocketAddr)>,
    /// Nodes whose connection failed within `SUSPECT_FOR`, and when.
    suspects: Vec<(SocketAddr, std::time::Instant)>,
    /// The name the nodes' certificates must carry (`SERVER_NAME_DEFAULT` unless told).
    server_name: std::sync::Arc<str>,
    /// Try the nodes one at a time, in the order given, instead of all at once.
    in_order: bool,
}

/// The name development certificates carry for every node (`exchange-node gen-certs`).
pub const SERVER_NAME_DEFAULT: &str = "localhost";

impl Client {
    /// A client that trusts the cluster authority `ca` and knows the nodes' broker addresses.
    pub fn new(nodes: Vec<SocketAddr>, ca: &CertificateDer<'static>) -> Result<Self, ClientError> {
        Self::with_dead_node_timeout(nodes, ca, DEAD_NODE_TIMEOUT_DEFAULT)
    }

    /// As `new`, declaring a silent connection dead after `dead_node_timeout`.
    pub fn with_dead_node_timeout(
        nodes: Vec<SocketAddr>,
        ca: &CertificateDer<'static>,
        dead_node_timeout: Duration,
    ) -> Result<Self, ClientError> {
        Self::with_transport(nodes, ca, tls::transport(dead_node_timeout))
    }

    /// As `new`, with a stream flow-control window of `bytes`: what a node may send ahead of
    /// this client reading. A small one makes a subscriber that stops reading fall behind
    /// soon (tests, benchmarks of slow subscribers).
    pub fn with_stream_window(
        nodes: Vec<SocketAddr>,
        ca: &CertificateDer<'static>,
        bytes: u32,
    ) -> Result<Self, ClientError> {
        let mut transport = tls::transport_config(DEAD_NODE_TIMEOUT_DEFAULT);
        transport.stream_receive_window(quinn::VarInt::from_u32(bytes));
        Self::with_transport(nodes, ca, std::sync::Arc::new(transport))
    }

    fn with_transport(
        nodes: Vec<SocketAddr>,
        ca: &CertificateDer<'static>,
        transport: std::sync::Arc<quinn::TransportConfig>,
    ) -> Result<Self, ClientError> {
        let config = tls::broker_client(ca, transport)
            .map_err(|e| ClientError::Unavailable(e.to_string()))?;
        let bind: SocketAddr = if nodes.first().is_some_and(|a| a.is_ipv6()) {
            "[::]:0".parse().expect("literal address")
        } else {
            "0.0.0.0:0".parse().expect("literal address")
        };
        let mut endpoint =
            quinn::Endpoint::client(bind).map_err(|e| ClientError::Unavailable(e.to_string()))?;
        endpoint.set_default_client_config(config);
        Ok(Client {
            endpoint,
            nodes,
            api_key: None,
            broker: None,
            link: None,
            standby: Vec::new(),
            connecting: tokio::task::JoinSet::new(),
            connecting_to: Vec::new(),
            suspects: Vec::new(),
            server_name: SERVER_NAME_DEFAULT.into(),
            in_order: false,
        })
    }

    /// Check the nodes' certificates for `name` instead of `localhost`: the name brokers
    /// connect to, in certificates from the operator's own authority.
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = name.into().into();
        self
    }

    /// Log every connection on with `api_key` (a broker's key, or the admin key).
    pub fn with_api_key(mut self, api_key: impl Into<String>) -> Self {
        self.api_key = Some(api_key.into());
        self
    }

    /// Try the nodes one at a time in the order given (the next one only when a node cannot
    /// be reached), instead of all at once. For a client meant to stay on one node while it
    /// lives: a market data feed on a follower, which leaves the leader's cores to orders.
    pub fn with_nodes_in_order(mut self) -> Self {
        self.in_order = true;
        self
    }

    /// The broker this client acts as, once a connection has logged on (0: the operator).
    pub fn broker(&self) -> Option<u32> {
        self.broker
    }

    /// Connects to every candidate at once and returns the first that answers, so a dead node
    /// costs nothing while another is up; the other connections are kept on standby (until
    /// the leader answers) for the redirect or the next try. A link already on standby to a
    /// candidate is used at once, and a candidate already being connected to is not connected
    /// to twice. A refused logon counts only if no node accepts it: a node that has not yet
    /// applied a broker's registration (just replaced, or behind) does not know its key, while
    /// the others do.
    async fn connect_any(&mut self, candidates: &[SocketAddr]) -> Result<Link, ConnectError> {
        self.collect_connected();
        if let Some(link) = self.take_standby(candidates) {
            return Ok(link);
        }
        if self.in_order {
            return self.connect_in_order(candidates).await;
        }
        for &addr in candidates {
            if self.connecting_to.iter().any(|(_, to)| *to == addr) {
                continue;
            }
            let endpoint = self.endpoint.clone();
            let api_key = self.api_key.clone();
            let name = self.server_name.clone();
            let attempt = self
                .connecting
                .spawn(async move { connect(&endpoint, addr, &name, api_key.as_deref()).await });
            self.connecting_to.push((attempt.id(), addr));
        }
        let mut last_error = String::from("no node to connect to");
        let mut refused = None;
        while self
            .connecting_to
            .iter()
            .any(|(_, to)| candidates.contains(to))
        {
            let Some(joined) = self.connecting.join_next_with_id().await else {
                break;
            };
            let (addr, attempt) = self.attempt_ended(joined);
            let wanted = addr.is_some_and(|addr| candidates.contains(&addr));
            match attempt {
                Some(Ok(link)) if wanted => return Ok(link),
                Some(Ok(link)) => self.keep_on_standby(link),
                Some(Err(ConnectError::Refused(e))) if wanted => {
                    refused.get_or_insert(e);
                }
                Some(Err(ConnectError::Network(e))) if wanted => last_error = e,
                _ => {}
            }
        }
        Err(match refused {
            Some(why) => ConnectError::Refused(why),
            None => ConnectError::Network(last_error),
        })
    }

    /// Takes a finished connection attempt off the books: the node it was to, and its link
    /// or why there is none (`None`: the attempt's task itself failed). A logon's broker is
    /// noted.
    fn attempt_ended(
        &mut self,
        joined: Result<(tokio::task::Id, Attempt), tokio::task::JoinError>,
    ) -> (Option<SocketAddr>, Option<Result<Link, ConnectError>>) {
        let (id, attempt) = match joined {
            Ok((id, attempt)) => (id, Some(attempt)),
            Err(e) => (e.id(), None),
        };
        let addr = self
            .connecting_to
            .iter()
            .position(|(of, _)| *of == id)
            .map(|at| self.connecting_to.swap_remove(at).1);
        let attempt = attempt.map(|result| {
            result.map(|(link, broker)| {
                if broker.is_some() {
                    self.broker = broker;
                }
                link
            })
        });
        (addr, attempt)
    }

    /// Moves the links that attempts have opened since `connect_any` returned onto standby,
    /// without waiting for the others.
    fn collect_connected(&mut self) {
        while let Some(joined) = self.connecting.try_join_next_with_id() {
            if let (_, Some(Ok(link))) = self.attempt_ended(joined) {
                self.keep_on_standby(link);
            }
        }
    }

    /// Keeps `link` for a later try, in place of any older one to the same node: the standby
    /// links are at most one a node.
    fn keep_on_standby(&mut self, link: Link) {
        self.standby.retain(|kept| kept.addr != link.addr);
        self.standby.push(link);
    }

    /// A live standby link to one of `candidates`, the longest kept first (a node asked and
    /// put back goes last, so asking round the nodes visits each in turn).
    fn take_standby(&mut self, candidates: &[SocketAddr]) -> Option<Link> {
        self.standby
            .retain(|link| link._connection.close_reason().is_none());
        let at = self
            .standby
            .iter()
            .position(|link| candidates.contains(&link.addr))?;
        Some(self.standby.remove(at))
    }

    /// The leader answered: the links kept for finding it are closed, and attempts still under
    /// way are abandoned.
    fn leader_found(&mut self) {
        self.standby.clear();
        // Checked first: aborting walks the set under its lock, on every answered request.
        if !self.connecting.is_empty() {
            self.connecting.abort_all();
            self.connecting.detach_all();
            self.connecting_to.clear();
        }
    }

    /// As `connect_any`, one candidate at a time.
    async fn connect_in_order(&mut self, candidates: &[SocketAddr]) -> Result<Link, ConnectError> {
        let mut last_error = String::from("no node to connect to");
        let mut refused = None;
        for &addr in candidates {
            let api_key = self.api_key.as_deref();
            match connect(&self.endpoint, addr, &self.server_name, api_key).await {
                Ok((link, broker)) => {
                    if broker.is_some() {
                        self.broker = broker;
                    }
                    return Ok(link);
                }
                Err(ConnectError::Refused(e)) => {
                    refused.get_or_insert(e);
                }
                Err(ConnectError::Network(e)) => last_error = e,
            }
        }
        Err(match refused {
            Some(why) => ConnectError::Refused(why),
            None => ConnectError::Network(last_error),
        })
    }

    async fn exchange(link: &mut Link, request: &Request) -> Result<Reply, String> {
        let bytes = postcard::to_allocvec(request).map_err(|e| e.to_string())?;
        let round_trip = async {
            write_frame(&mut link.send, &bytes)
                .await
                .map_err(|e| e.to_string())?;
            read_frame(&mut link.recv, BROKER_REPLY_BYTES_MAX)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "the node closed the stream".to_string())
        };
        let timeout = reply_timeout(request);
        let reply = tokio::time::timeout(timeout, round_trip)
            .await
            .map_err(|_| format!("no reply within {timeout:?}"))??;
        postcard::from_bytes(&reply).map_err(|e| e.to_string())
    }

    /// Sends one request to `addr` over a fresh connection (for per-node queries). A node
    /// that cannot be reached or does not answer is `Unavailable`; a refused logon is
    /// `Rejected`.
    pub async fn ask(&self, addr: SocketAddr, request: &Request) -> Result<Reply, ClientError> {
        let (mut link, _) = connect(
            &self.endpoint,
            addr,
            &self.server_name,
            self.api_key.as_deref(),
        )
        .await
        .map_err(|e| match e {
            ConnectError::Network(e) => ClientError::Unavailable(e),
            ConnectError::Refused(e) => ClientError::Rejected(e),
        })?;
        Self::exchange(&mut link, request)
            .await
            .map_err(|e| ClientError::Unavailable(format!("{addr}: {e}")))
    }

    /// One node's status.
    pub async fn status_of(&self, addr: SocketAddr) -> Result<NodeStatus, ClientError> {
        match self.ask(addr, &Request::Status).await? {
            Reply::Status(status) => Ok(*status),
            other => Err(unexpected(other)),
        }
    }

    fn suspect(&mut self, addr: SocketAddr) {
        self.suspects.retain(|(a, _)| *a != addr);
        self.suspects.push((addr, std::time::Instant::now()));
    }

    /// When `addr`'s connection failed, if that was within `SUSPECT_FOR`.
    fn failed_at(&mut self, addr: SocketAddr) -> Option<std::time::Instant> {
        self.suspects
            .retain(|(_, failed)| failed.elapsed() < SUSPECT_FOR);
        self.suspects
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, failed)| *failed)
    }

    fn is_suspect(&mut self, addr: SocketAddr) -> bool {
        self.failed_at(addr).is_some()
    }

    /// Whether to follow a redirect to `leader`: yes unless its connection failed within
    /// `TRUST_REDIRECT_AFTER`. Followers go on naming a crashed leader only until they elect
    /// another; one still named after that has been heard from since (the failure was the
    /// client's connection, or a fault now healed).
    fn follow_redirect_to(&mut self, leader: SocketAddr) -> bool {
        self.failed_at(leader)
            .is_none_or(|failed| failed.elapsed() >= TRUST_REDIRECT_AFTER)
    }

    /// The nodes not under suspicion, or all of them if every one is.
    fn healthy_nodes(&mut self) -> Vec<SocketAddr> {
        let nodes = self.nodes.clone();
        let healthy: Vec<SocketAddr> = nodes
            .iter()
            .copied()
            .filter(|a| !self.is_suspect(*a))
            .collect();
        if healthy.is_empty() {
            nodes
        } else {
            healthy
        }
    }

    /// Whether these commands are all new orders with client order ids: what the engine
    /// executes at most once when a broker (not the operator) sends them.
    fn only_identified_new_orders<'c>(mut commands: impl Iterator<Item = &'c Command>) -> bool {
        commands.all(|c| matches!(c, Command::NewOrder(o) if o.client_order_id.0 != 0))
    }

    /// Sends a request to the leader; when its outcome is unknown and it may safely be sent
    /// again, resends it (to the new leader, after a failover) until it is answered. A
    /// request the node throttled (nothing done) is sent again after the wait it names. Whether
    /// the session is a broker's is known only once it has logged on, so it is asked then.
    async fn request_with_resend(
        &mut self,
        request: &Request,
        identified_new_orders: bool,
    ) -> Result<Reply, ClientError> {
        let give_up = std::time::Instant::now() + RESEND_FOR;
        loop {
            let answer = self.request_leader(request).await;
            let resendable = identified_new_orders && self.broker.is_some_and(|b| b != 0);
            match answer {
                Err(ClientError::OutcomeUnknown(_) | ClientError::Unavailable(_))
                    if resendable && std::time::Instant::now() < give_up =>
                {
                    tokio::time::sleep(NO_LEADER_PAUSE).await;
                }
                Ok(Reply::Throttled { retry_after_ms, .. })
                    if std::time::Instant::now() < give_up =>
                {
                    // Nothing was sequenced: waiting and sending again is always safe.
                    tokio::time::sleep(Duration::from_millis(retry_after_ms.min(1_000))).await;
                }
                other => return other,
            }
        }
    }

    /// Submits a command to the leader, following redirects, and returns its outputs.
    ///
    /// A broker's new order with a client order id is resent if its outcome is unknown; if
    /// the first send had been executed, the answer is a `DuplicateOrder` event naming the
    /// original order. Other commands whose connection broke are reported as
    /// `OutcomeUnknown`.
    pub async fn submit(&mut self, command: Command) -> Result<Vec<Output>, ClientError> {
        let identified = Self::only_identified_new_orders(std::iter::once(&command));
        match self
            .request_with_resend(&Request::Submit(command), identified)
            .await?
        {
            Reply::Outputs(outputs) => Ok(outputs),
            other => Err(unexpected(other)),
        }
    }

    /// Registers a broker or gives it a new key (empty: revoked), as the operator; the node
    /// digests the key. The command's outputs, as `submit` gives them.
    pub async fn set_broker_key(
        &mut self,
        broker: u32,
        key: &str,
    ) -> Result<Vec<Output>, ClientError> {
        let request = Request::SetBrokerKey {
            broker,
            key: key.to_owned(),
        };
        match self.request_with_resend(&request, false).await? {
            Reply::Outputs(outputs) => Ok(outputs),
            other => Err(unexpected(other)),
        }
    }

    /// Whether an order of this session's broker rests, and how much of it is open.
    pub async fn order_status(
        &mut self,
        order_id: u64,
    ) -> Result<Option<crate::protocol::OpenOrderStatus>, ClientError> {
        match self
            .request_with_resend(&Request::OrderStatus { order_id }, false)
            .await?
        {
            Reply::OrderStatus { open, .. } => Ok(open),
            other => Err(unexpected(other)),
        }
    }

    /// Submits several commands at once, in order; returns each one's outputs, or why it has
    /// none: `Rejected` (not sequenced) or `OutcomeUnknown` (it may have happened). Resent as
    /// `submit` resends, when every command may be.
    pub async fn submit_batch(&mut self, commands: Vec<Command>) -> BatchAnswers {
        let identified = Self::only_identified_new_orders(commands.iter());
        match self
            .request_with_resend(&Request::SubmitBatch(commands), identified)
            .await?
        {
            Reply::BatchOutputs(answers) => Ok(per_command(answers)),
            other => Err(unexpected(other)),
        }
    }

    /// Sends a request the leader must serve (a command, a membership change), following
    /// redirects, and returns the leader's reply.
    pub async fn request_leader(&mut self, request: &Request) -> Result<Reply, ClientError> {
        // With a live cached link (the usual case) nothing here allocates.
        let mut candidates = if self.link.is_some() {
            Vec::new()
        } else {
            self.healthy_nodes()
        };
        let mut last_error = String::new();
        let mut redirected_to = Vec::new();
        for _ in 0..REDIRECTS_MAX {
            // A cached link whose connection died since (the node crashed between requests)
            // is dropped before anything is sent on it.
            if self
                .link
                .as_ref()
                .is_some_and(|link| link._connection.close_reason().is_some())
            {
                if let Some(dead) = self.link.take() {
                    self.suspect(dead.addr);
                }
                candidates = self.healthy_nodes();
            }
            let mut link = match self.link.take() {
                Some(link) => link,
                // The redirect target first; if it cannot be reached, any healthy node.
                None => match self.connect_any(&candidates).await {
                    Ok(link) => link,
                    Err(ConnectError::Refused(e)) => return Err(ClientError::Rejected(e)),
                    Err(ConnectError::Network(_)) => {
                        for addr in &candidates {
                            self.suspect(*addr);
                        }
                        let others = self.healthy_nodes();
                        match self.connect_any(&others).await {
                            Ok(link) => link,
                            Err(ConnectError::Refused(e)) => return Err(ClientError::Rejected(e)),
                            Err(ConnectError::Network(e)) => {
                                return Err(ClientError::Unavailable(e))
                            }
                        }
                    }
                },
            };
            match Self::exchange(&mut link, request).await {
                Ok(Reply::NotLeader { broker, .. }) => {
                    last_error = format!("{} is not the leader", link.addr);
                    match broker.and_then(|b| b.parse::<SocketAddr>().ok()) {
                        Some(leader) if self.follow_redirect_to(leader) => {
                            // Nodes naming each other mid-election: pause before going round again.
                            if redirected_to.contains(&leader) {
                                tokio::time::sleep(NO_LEADER_PAUSE).await;
                            }
                            redirected_to.push(leader);
                            candidates = vec![leader];
                            self.keep_on_standby(link);
                        }
                        // No leader known, or the one named just failed us: an election is
                        // under way. Give it a moment, then ask another node: this one may
                        // be a leader cut off from its majority, which knows no leader.
                        _ => {
                            tokio::time::sleep(NO_LEADER_PAUSE).await;
                            let others: Vec<SocketAddr> = self
                                .healthy_nodes()
                                .into_iter()
                                .filter(|addr| *addr != link.addr)
                                .collect();
                            if others.is_empty() {
                                self.link = Some(link);
                            } else {
                                candidates = others;
                                self.keep_on_standby(link);
                            }
                        }
                    }
                }
                Ok(Reply::Error(e)) => {
                    self.link = Some(link);
                    self.leader_found();
                    return Err(ClientError::Rejected(e));
                }
                Ok(Reply::OutcomeUnknown(e)) => {
                    // This node lost its majority: try the others first next time.
                    self.suspect(link.addr);
                    return Err(ClientError::OutcomeUnknown(format!("{}: {e}", link.addr)));
                }
                Ok(reply) => {
                    self.link = Some(link);
                    self.leader_found();
                    return Ok(reply);
                }
                Err(e) => {
                    self.suspect(link.addr);
                    return Err(ClientError::OutcomeUnknown(format!("{}: {e}", link.addr)));
                }
            }
        }
        if last_error.is_empty() {
            last_error = "no node answered".into();
        }
        Err(ClientError::Unavailable(last_error))
    }
}

/// Requests sent without waiting for earlier answers: each on a QUIC stream of its own over
/// one logged-on connection to the leader, so an order does not queue behind the replies to
/// the orders before it (as on a `Client`, which has one request out at a time). Cheap to
/// clone. It does not follow a change of leader or resend: a request whose connection fails is
/// reported as `OutcomeUnknown`, and a new pipeline is taken from the `Client`.
#[derive(Clone)]
pub struct Pipeline {
    addr: SocketAddr,
    connection: quinn::Connection,
}

impl Client {
    /// A pipeline on this client's connection to the leader, connecting (and logging on)
    /// first if it has none.
    pub async fn pipeline(&mut self) -> Result<Pipeline, ClientError> {
        if self.link.is_none() {
            // The node that answers a heartbeat is not necessarily the leader: ask for
            // something only the leader serves.
            self.request_leader(&Request::Balances {
                account: 0,
                assets: Vec::new(),
            })
            .await?;
        }
        let link = self
            .link
            .as_ref()
            .ok_or_else(|| ClientError::Unavailable("no connection to the leader".into()))?;
        Ok(Pipeline {
            addr: link.addr,
            connection: link._connection.clone(),
        })
    }
}

impl Pipeline {
    /// Submits several commands in one request, in order, on a stream of its own; returns each
    /// one's outputs, or why it has none (as `Client::submit_batch`).
    pub async fn submit_batch(&self, commands: Vec<Command>) -> BatchAnswers {
        let request = Request::SubmitBatch(commands);
        let bytes =
            postcard::to_allocvec(&request).map_err(|e| ClientError::Rejected(e.to_string()))?;
        let round_trip = async {
            let (mut send, mut recv) = self
                .connection
                .open_bi()
                .await
                .map_err(|e| ClientError::Unavailable(e.to_string()))?;
            let unknown = |e: String| ClientError::OutcomeUnknown(format!("{}: {e}", self.addr));
            write_frame(&mut send, &bytes)
                .await
                .map_err(|e| unknown(e.to_string()))?;
            // Nothing more on this stream: the node's task for it ends after the reply.
            let _ = send.finish();
            read_frame(&mut recv, BROKER_REPLY_BYTES_MAX)
                .await
                .map_err(|e| unknown(e.to_string()))?
                .ok_or_else(|| unknown("the node closed the stream".into()))
        };
        let reply = tokio::time::timeout(REQUEST_TIMEOUT, round_trip)
            .await
            .map_err(|_| {
                ClientError::OutcomeUnknown(format!(
                    "{}: no reply within {REQUEST_TIMEOUT:?}",
                    self.addr
                ))
            })??;
        match postcard::from_bytes(&reply).map_err(|e| ClientError::Rejected(e.to_string()))? {
            Reply::BatchOutputs(answers) => Ok(per_command(answers)),
            Reply::NotLeader { .. } => Err(ClientError::Unavailable(format!(
                "{} is no longer the leader",
                self.addr
            ))),
            Reply::Error(e) => Err(ClientError::Rejected(e)),
            other => Err(unexpected(other)),
        }
    }
}

/// A subscription's replies, read by a task of their own: waiting for the next one with a
/// deadline never loses half a frame (reading a frame is not cancel-safe; receiving from a
/// channel is).
struct Subscription {
    addr: SocketAddr,
    replies: tokio::sync::mpsc::Receiver<Reply>,
    /// Kept so the stream and connection live as long as the subscription.
    _send: quinn::SendStream,
    _connection: quinn::Connection,
}

/// What waiting on a subscription gave.
enum Received {
    Reply(Reply),
    /// Nothing before the deadline.
    Nothing,
    /// The stream or connection ended, or sent something that is not a reply.
    Ended,
}

impl Subscription {
    /// Takes over a link whose stream the node now streams replies on.
    fn start(link: Link) -> Subscription {
        let Link {
            addr,
            send,
            mut recv,
            _connection,
        } = link;
        let (sender, replies) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            while let Ok(Some(bytes)) = read_frame(&mut recv, BROKER_REPLY_BYTES_MAX).await {
                let Ok(reply) = postcard::from_bytes::<Reply>(&bytes) else {
                    return;
                };
                if sender.send(reply).await.is_err() {
                    return;
                }
            }
        });
        Subscription {
            addr,
            replies,
            _send: send,
            _connection,
        }
    }

    async fn next(&mut self, deadline: tokio::time::Instant) -> Received {
        match tokio::time::timeout_at(deadline, self.replies.recv()).await {
            Err(_) => Received::Nothing,
            Ok(Some(reply)) => Received::Reply(reply),
            Ok(None) => Received::Ended,
        }
    }
}

impl Client {
    /// The next reply of a subscription that follows the leader: with none open, sends
    /// `request` to the leader and opens one on its stream (the reply is then `(reply,
    /// true)`); else waits for the stream's next reply. When the stream ends or the node stops
    /// leading, subscribes again (with `request` made anew, so it resumes after what the caller
    /// received). `None`: nothing came within `within`. A node's `Error` is a refusal.
    async fn next_streamed(
        &mut self,
        subscription: &mut Option<Subscription>,
        request: impl Fn() -> Request,
        within: Duration,
    ) -> Result<Option<(Reply, bool)>, ClientError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let Some(open) = subscription.as_mut() else {
                match self.request_leader(&request()).await {
                    Ok(reply @ (Reply::Reports(_) | Reply::Market(_))) => {
                        if let Some(link) = self.link.take() {
                            *subscription = Some(Subscription::start(link));
                        }
                        return Ok(Some((reply, true)));
                    }
                    // The node is still catching up: nothing was done, ask again shortly.
                    Ok(Reply::Throttled { retry_after_ms, .. })
                        if tokio::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(retry_after_ms.min(1_000))).await;
                    }
                    Ok(Reply::Throttled { .. }) => return Ok(None),
                    Ok(other) => return Ok(Some((other, true))),
                    Err(ClientError::Rejected(e)) => return Err(ClientError::Rejected(e)),
                    Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                    Err(_) => tokio::time::sleep(NO_LEADER_PAUSE).await,
                }
                continue;
            };
            match open.next(deadline).await {
                Received::Nothing => return Ok(None),
                Received::Reply(Reply::Error(e)) => return Err(ClientError::Rejected(e)),
                Received::Reply(reply @ (Reply::Reports(_) | Reply::Market(_))) => {
                    return Ok(Some((reply, false)))
                }
                Received::Ended => {
                    self.suspect(open.addr);
                    *subscription = None;
                }
                // The node may serve the stream no longer (NotLeader), or said something odd:
                // subscribe again.
                Received::Reply(_) => *subscription = None,
            }
        }
    }
}

/// A broker's execution reports: every event about its accounts, in order, each once. Follows
/// the leader: when the connection fails or the node stops leading, it reconnects (to the new
/// leader) and asks for what came after the last report it received.
pub struct ReportFeed {
    client: Client,
    since: u64,
    subscription: Option<Subscription>,
}

impl Client {
    /// This client's broker's reports after sequence number `since` (0: all that are kept).
    /// The client must have a broker's API key.
    pub fn into_report_feed(self, since: u64) -> ReportFeed {
        ReportFeed {
            client: self,
            since,
            subscription: None,
        }
    }
}

impl ReportFeed {
    /// The sequence number of the last report received.
    pub fn since(&self) -> u64 {
        self.since
    }

    /// The next reports, waiting at most `within` for them (an empty batch: none came).
    pub async fn next(&mut self, within: Duration) -> Result<Vec<Output>, ClientError> {
        let since_seq = self.since;
        let next = self
            .client
            .next_streamed(
                &mut self.subscription,
                || Request::Reports { since_seq },
                within,
            )
            .await?;
        match next {
            Some((Reply::Reports(batch), _)) => Ok(self.received(batch)),
            Some((other, _)) => Err(unexpected(other)),
            None => Ok(Vec::new()),
        }
    }

    fn received(&mut self, batch: Vec<Output>) -> Vec<Output> {
        if let Some(last) = batch.last() {
            self.since = last.seq;
        }
        batch
    }
}

impl Client {
    /// One market data stream's state now, from the first node that answers (any node
    /// builds market data; give the client one address to ask that node).
    pub async fn market_snapshot(
        &mut self,
        symbol: u32,
        channel: Channel,
    ) -> Result<MdMessage, ClientError> {
        match self
            .request_with_resend(&Request::MarketSnapshot { symbol, channel }, false)
            .await?
        {
            Reply::Market(mut messages) if messages.len() == 1 => Ok(messages.remove(0)),
            other => Err(unexpected(other)),
        }
    }

    /// An account's balances of `assets`: (asset, available, held), from the leader.
    pub async fn balances(
        &mut self,
        account: u64,
        assets: Vec<u32>,
    ) -> Result<Vec<(u32, i64, i64)>, ClientError> {
        match self
            .request_with_resend(&Request::Balances { account, assets }, false)
            .await?
        {
            Reply::Balances { balances, .. } => Ok(balances),
            other => Err(unexpected(other)),
        }
    }

    /// Every symbol and named asset (from the first node that answers).
    pub async fn instruments(
        &mut self,
    ) -> Result<
        (
            Vec<crate::protocol::InstrumentInfo>,
            Vec<crate::protocol::AssetInfo>,
        ),
        ClientError,
    > {
        match self
            .request_with_resend(&Request::Instruments, false)
            .await?
        {
            Reply::Instruments { symbols, assets } => Ok((symbols, assets)),
            other => Err(unexpected(other)),
        }
    }

    /// An account's open orders, oldest first, from the leader.
    pub async fn open_orders(
        &mut self,
        account: u64,
    ) -> Result<Vec<crate::protocol::AccountOrderInfo>, ClientError> {
        match self
            .request_with_resend(&Request::OpenOrders { account }, false)
            .await?
        {
            Reply::OpenOrders { orders, .. } => Ok(orders),
            other => Err(unexpected(other)),
        }
    }

    /// The engine's own book: (applied index, bids, asks), best first.
    pub async fn depth(
        &mut self,
        symbol: u32,
        levels: u32,
    ) -> Result<(u64, Vec<Level>, Vec<Level>), ClientError> {
        match self
            .request_with_resend(&Request::Depth { symbol, levels }, false)
            .await?
        {
            Reply::Depth { index, bids, asks } => Ok((index, bids, asks)),
            other => Err(unexpected(other)),
        }
    }

    /// Follows one market data stream from the leader, starting from a snapshot.
    pub fn into_market_feed(self, symbol: u32, channel: Channel) -> MarketFeed {
        MarketFeed {
            client: self,
            symbol,
            channel,
            state: StreamState::default(),
            subscription: None,
            gaps: 0,
            subscriptions: 0,
        }
    }
}

/// One market data stream, kept in a [`StreamState`]. Any node in touch with the leader serves
/// it: when the connection fails or the node may serve it no longer (it lost the leader, fell
/// behind, or stopped leading), it subscribes again, on another node if need be, after the last
/// message applied, so it sees every message once and in order.
pub struct MarketFeed {
    client: Client,
    symbol: u32,
    channel: Channel,
    state: StreamState,
    subscription: Option<Subscription>,
    gaps: u64,
    subscriptions: u64,
}

impl MarketFeed {
    /// What the stream describes now (the book, recent trades, candles) and its last number.
    pub fn state(&self) -> &StreamState {
        &self.state
    }

    /// Messages that did not follow the last one (each one made the feed subscribe again).
    /// Always zero unless something is broken.
    pub fn gaps(&self) -> u64 {
        self.gaps
    }

    /// Subscriptions made: the first, and one per reconnection.
    pub fn subscriptions(&self) -> u64 {
        self.subscriptions
    }

    /// The node serving the stream now (its broker address), while subscribed.
    pub fn node(&self) -> Option<SocketAddr> {
        self.subscription.as_ref().map(|s| s.addr)
    }

    /// The next messages, applied to the state, waiting at most `within` for them (an empty
    /// batch: none came).
    pub async fn next(&mut self, within: Duration) -> Result<Vec<MdMessage>, ClientError> {
        let (symbol, channel, since) = (self.symbol, self.channel, self.state.seq);
        let next = self
            .client
            .next_streamed(
                &mut self.subscription,
                || Request::Subscribe {
                    symbol,
                    channel,
                    since,
                },
                within,
            )
            .await?;
        match next {
            Some((Reply::Market(batch), subscribed)) => {
                self.subscriptions += subscribed as u64;
                Ok(self.received(batch))
            }
            Some((other, _)) => Err(unexpected(other)),
            None => Ok(Vec::new()),
        }
    }

    fn received(&mut self, mut batch: Vec<MdMessage>) -> Vec<MdMessage> {
        if let Some(bad) = batch.iter().position(|m| self.state.apply(m).is_err()) {
            // Never expected: drop the subscription and resume after the last message applied.
            self.gaps += 1;
            self.subscription = None;
            batch.truncate(bad);
        }
        batch
    }
}

/// How long a request's reply may take: adding a learner waits for it to catch up.
fn reply_timeout(request: &Request) -> Duration {
    match request {
        Request::AddLearner { .. } => crate::protocol::LEARNER_CATCH_UP_TIMEOUT + REQUEST_TIMEOUT,
        _ => REQUEST_TIMEOUT,
    }
}

fn unexpected(reply: Reply) -> ClientError {
    match reply {
        Reply::Throttled { reason, .. } => ClientError::Rejected(format!("throttled: {reason}")),
        other => ClientError::Rejected(format!("unexpected reply {other:?}")),
    }
}

/// Connects to `addr` and, given a key, logs on; returns the link and the broker it acts as.
async fn connect(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    server_name: &str,
    api_key: Option<&str>,
) -> Attempt {
    let network = ConnectError::Network;
    // Every node's certificate carries the server name (development ones: "localhost"), and
    // the cluster's authority signed it.
    let connecting = endpoint
        .connect(addr, server_name)
        .map_err(|e| network(e.to_string()))?;
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| network(format!("{addr}: connect timed out")))?
        .map_err(|e| network(format!("{addr}: {e}")))?;
    let (send, recv) = connection
        .open_bi()
        .await
        .map_err(|e| network(e.to_string()))?;
    let mut link = Link {
        addr,
        send,
        recv,
        _connection: connection,
    };
    let Some(api_key) = api_key else {
        return Ok((link, None));
    };
    let logon = Request::Logon {
        protocol_version: PROTOCOL_VERSION,
        api_key: api_key.to_string(),
    };
    match Client::exchange(&mut link, &logon).await {
        Ok(Reply::LoggedOn { broker }) => Ok((link, Some(broker))),
        Ok(Reply::Error(why)) => Err(ConnectError::Refused(format!("{addr}: {why}"))),
        // A node that is not the leader and does not know the key (yet): ask the others.
        Ok(Reply::NotLeader { .. }) => Err(network(format!(
            "{addr}: not the leader, and it does not know this key (it may be behind)"
        ))),
        Ok(other) => Err(ConnectError::Refused(format!(
            "{addr}: unexpected logon reply {other:?}"
        ))),
        Err(e) => Err(network(format!("{addr}: logon: {e}"))),
    }
}

/// Reads the cluster authority a client must trust.
pub fn trust(certs_dir: &std::path::Path) -> Result<CertificateDer<'static>, ClientError> {
    tls::load_ca(certs_dir).map_err(|e| ClientError::Unavailable(e.to_string()))
}
