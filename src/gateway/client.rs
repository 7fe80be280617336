//! The client library: connects to any node, follows leader redirects, and submits commands.

use std::net::SocketAddr;
use std::time::Duration;

use exchange_domain::{Command, Output};
use rustls::pki_types::CertificateDer;

use super::protocol::{NodeStatus, Reply, Request, BROKER_FRAME_BYTES_MAX};
use crate::net::frame::{read_frame, write_frame};
use crate::net::tls;

/// Redirects followed, and waits for an election, before a submit gives up.
const REDIRECTS_MAX: u32 = 20;
const NO_LEADER_PAUSE: Duration = Duration::from_millis(100);
/// A connection silent this long is dead: a crashed leader is given up on this fast (keep-alives
/// flow four times as often, so a live but idle node is never mistaken for dead).
const DEAD_NODE_TIMEOUT: Duration = Duration::from_millis(500);
/// A node that does not complete a handshake in this time is taken for down (on a LAN a
/// handshake takes a millisecond).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub enum ClientError {
    /// No node could be reached, or none knew a leader in time.
    Unavailable(String),
    /// The node answered with an error.
    Rejected(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unavailable(e) => write!(f, "cluster unavailable: {e}"),
            ClientError::Rejected(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClientError {}

struct Link {
    addr: SocketAddr,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    _connection: quinn::Connection,
}

/// A broker's connection to the cluster.
pub struct Client {
    endpoint: quinn::Endpoint,
    nodes: Vec<SocketAddr>,
    link: Option<Link>,
}

impl Client {
    /// A client that trusts the cluster authority `ca` and knows the nodes' broker addresses.
    pub fn new(nodes: Vec<SocketAddr>, ca: &CertificateDer<'static>) -> Result<Self, ClientError> {
        let config = tls::broker_client(ca, tls::transport(DEAD_NODE_TIMEOUT))
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
            link: None,
        })
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Link, String> {
        connect(&self.endpoint, addr).await
    }

    /// Connects to every candidate at once and keeps the first that answers, so a dead node
    /// costs nothing while another is up.
    async fn connect_any(&self, candidates: &[SocketAddr]) -> Result<Link, String> {
        let mut attempts = tokio::task::JoinSet::new();
        for &addr in candidates {
            let endpoint = self.endpoint.clone();
            attempts.spawn(async move { connect(&endpoint, addr).await });
        }
        let mut last_error = String::from("no node to connect to");
        while let Some(attempt) = attempts.join_next().await {
            match attempt {
                Ok(Ok(link)) => return Ok(link),
                Ok(Err(e)) => last_error = e,
                Err(e) => last_error = e.to_string(),
            }
        }
        Err(last_error)
    }

    async fn exchange(link: &mut Link, request: &Request) -> Result<Reply, String> {
        let bytes = postcard::to_allocvec(request).map_err(|e| e.to_string())?;
        write_frame(&mut link.send, &bytes)
            .await
            .map_err(|e| e.to_string())?;
        let reply = read_frame(&mut link.recv, BROKER_FRAME_BYTES_MAX)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the node closed the stream".to_string())?;
        postcard::from_bytes(&reply).map_err(|e| e.to_string())
    }

    /// Sends one request to `addr` over a fresh connection (for per-node queries).
    pub async fn ask(&self, addr: SocketAddr, request: &Request) -> Result<Reply, String> {
        let mut link = self.connect(addr).await?;
        Self::exchange(&mut link, request).await
    }

    /// One node's status.
    pub async fn status_of(&self, addr: SocketAddr) -> Result<NodeStatus, String> {
        match self.ask(addr, &Request::Status).await? {
            Reply::Status(status) => Ok(status),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }

    /// Submits a command to the leader, following redirects, and returns its outputs.
    ///
    /// A command whose connection broke before the reply may or may not have been executed:
    /// it is not resent here (exactly-once resends need the broker's client order id).
    pub async fn submit(&mut self, command: Command) -> Result<Vec<Output>, ClientError> {
        let mut candidates = self.nodes.clone();
        let mut last_error = String::from("no node answered");
        for _ in 0..REDIRECTS_MAX {
            let mut link = match self.link.take() {
                Some(link) => link,
                // The redirect target first; if it cannot be reached, any node.
                None => match self.connect_any(&candidates).await {
                    Ok(link) => link,
                    Err(_) => match self.connect_any(&self.nodes.clone()).await {
                        Ok(link) => link,
                        Err(e) => return Err(ClientError::Unavailable(e)),
                    },
                },
            };
            match Self::exchange(&mut link, &Request::Submit(command)).await {
                Ok(Reply::Outputs(outputs)) => {
                    self.link = Some(link);
                    return Ok(outputs);
                }
                Ok(Reply::NotLeader { broker, .. }) => {
                    last_error = format!("{} is not the leader", link.addr);
                    candidates = match broker.and_then(|b| b.parse::<SocketAddr>().ok()) {
                        Some(leader) => vec![leader],
                        None => {
                            // An election is under way: give it a moment.
                            tokio::time::sleep(NO_LEADER_PAUSE).await;
                            self.nodes.clone()
                        }
                    };
                }
                Ok(Reply::Error(e)) => return Err(ClientError::Rejected(e)),
                Ok(other) => {
                    return Err(ClientError::Rejected(format!("unexpected reply {other:?}")))
                }
                Err(e) => {
                    return Err(ClientError::Unavailable(format!("{}: {e}", link.addr)));
                }
            }
        }
        Err(ClientError::Unavailable(last_error))
    }
}

async fn connect(endpoint: &quinn::Endpoint, addr: SocketAddr) -> Result<Link, String> {
    // Any node's certificate carries "localhost"; the authority is what is checked.
    let connecting = endpoint
        .connect(addr, "localhost")
        .map_err(|e| e.to_string())?;
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| format!("{addr}: connect timed out"))?
        .map_err(|e| format!("{addr}: {e}"))?;
    let (send, recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
    Ok(Link {
        addr,
        send,
        recv,
        _connection: connection,
    })
}

/// Reads the cluster authority a client must trust.
pub fn trust(certs_dir: &std::path::Path) -> Result<CertificateDer<'static>, ClientError> {
    tls::load_ca(certs_dir).map_err(|e| ClientError::Unavailable(e.to_string()))
}
