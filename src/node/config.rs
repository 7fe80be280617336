//! A node's configuration: command-line flags, optionally on top of a TOML file (the examples
//! in cluster/). A flag given on the command line wins over the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::gateway::server::SessionLimits;
use crate::replication::engine_thread::IdleStrategy;
use exchange_log::FlushPolicy;

/// Where a peer listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr {
    pub raft: SocketAddr,
    pub broker: SocketAddr,
}

/// The broker port of a peer given only its Raft address: the Raft port plus this.
pub const BROKER_PORT_OFFSET: u16 = 100;

/// An address given as `ip:port` or `host:port`; a host name is resolved once, here (the
/// first address it resolves to).
fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|e| format!("'{text}': {e}"))?
        .next()
        .ok_or_else(|| format!("'{text}' resolves to no address"))
}

/// Parses `id=RAFT_ADDR` or `id=RAFT_ADDR/BROKER_ADDR`; an address is `ip:port` or
/// `host:port`.
pub fn parse_peer(text: &str) -> Result<(u64, PeerAddr), String> {
    let (id, addrs) = text
        .split_once('=')
        .ok_or_else(|| format!("peer '{text}' is not id=address"))?;
    let id: u64 = id
        .trim()
        .parse()
        .map_err(|_| format!("peer '{text}': '{id}' is not a node id"))?;
    let (raft, broker) = match addrs.split_once('/') {
        Some((raft, broker)) => (raft, Some(broker)),
        None => (addrs, None),
    };
    let raft = socket_addr(raft).map_err(|e| format!("peer '{text}': {e}"))?;
    let broker = match broker {
        Some(broker) => socket_addr(broker).map_err(|e| format!("peer '{text}': {e}"))?,
        None => {
            let port = raft.port().checked_add(BROKER_PORT_OFFSET).ok_or_else(|| {
                format!(
                    "peer '{text}': no room for a broker port above {}",
                    raft.port()
                )
            })?;
            SocketAddr::new(raft.ip(), port)
        }
    };
    Ok((id, PeerAddr { raft, broker }))
}

/// What a node runs with, after flags and file are merged and checked.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: u64,
    pub peers: BTreeMap<u64, PeerAddr>,
    pub data_dir: PathBuf,
    pub certs_dir: PathBuf,
    /// Where to bind the Raft and broker listeners (default: the addresses in `peers`).
    pub raft_listen: SocketAddr,
    pub broker_listen: SocketAddr,
    pub fsync: FlushPolicy,
    pub idle: IdleStrategy,
    pub pin_core: Option<usize>,
    /// Threads of the runtime that serves brokers and Raft (`RUNTIME_THREADS_DEFAULT`).
    pub runtime_threads: usize,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot (and purge the log behind it) every this many entries.
    pub snapshot_every: u64,
    pub segment_bytes: u64,
    /// Found a new cluster with `peers` as its members. Only for the first start of the first
    /// node: a node started without it joins the cluster it is part of, and a node whose data
    /// was lost must not found a second cluster under the same name.
    pub bootstrap: bool,
    /// Test-only: report a wrong output hash from this index on (`test-faults` builds only).
    pub fault_diverge_at: Option<u64>,
    /// Test-only: the gateway planted faults the chaos suite's checkers must catch.
    pub gateway_faults: crate::gateway::server::GatewayFaults,
    /// The admin key and the brokers to register (`cluster/brokers.toml`).
    pub brokers_file: Option<PathBuf>,
    /// A development node: the public development keys are accepted (`--dev`).
    pub dev: bool,
    pub session_limits: SessionLimits,
    /// Serve Prometheus metrics (`GET /metrics`) here.
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the HTTP API (market data, the cluster's state) here.
    pub http_listen: Option<SocketAddr>,
    /// Accept FIX 4.4 sessions here (docs/fix.md).
    pub fix_listen: Option<SocketAddr>,
    /// Serve native market data subscribers here, on the fan-out runtime (`--md-listen`).
    pub md_listen: Option<SocketAddr>,
    /// FIX over TLS, with the node certificate.
    pub fix_tls: bool,
    /// Market data messages a live subscriber may fall behind before it is resynchronised.
    pub md_subscriber_buffer: usize,
    /// The least time between two market data frames to one subscriber.
    pub md_frame_every: std::time::Duration,
    /// Keep every trade and closed candle in this SQLite file (`None`: only in memory).
    pub md_history: Option<PathBuf>,
    /// Run the reporter into this SQLite database.
    pub report_db: Option<PathBuf>,
}

/// The TOML file: every key optional, with the flags' names.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub id: Option<u64>,
    pub peers: Option<Vec<String>>,
    pub raft_listen: Option<SocketAddr>,
    pub broker_listen: Option<SocketAddr>,
    pub pin_core: Option<usize>,
    pub bootstrap: Option<bool>,
    pub session_rate: Option<u32>,
    pub session_in_flight: Option<u32>,
    pub broker_sessions_max: Option<u32>,
    pub session_read_rate: Option<u32>,
    pub broker_rate: Option<u32>,
    pub broker_read_rate: Option<u32>,
    pub data_dir: Option<PathBuf>,
    pub certs_dir: Option<PathBuf>,
    pub fsync: Option<FlushPolicy>,
    pub idle: Option<IdleStrategy>,
    pub runtime_threads: Option<usize>,
    pub heartbeat_ms: Option<u64>,
    pub election_min_ms: Option<u64>,
    pub election_max_ms: Option<u64>,
    pub snapshot_every: Option<u64>,
    pub segment_mib: Option<u64>,
    pub brokers: Option<PathBuf>,
    pub dev: Option<bool>,
    pub metrics_listen: Option<SocketAddr>,
    pub http_listen: Option<SocketAddr>,
    pub fix_listen: Option<SocketAddr>,
    pub md_listen: Option<SocketAddr>,
    pub fix_tls: Option<bool>,
    pub md_subscriber_buffer: Option<usize>,
    pub md_frame_ms: Option<u64>,
    pub md_history: Option<PathBuf>,
    pub no_md_history: Option<bool>,
    pub report_db: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
}

/// How a node writes its log lines (to stderr).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// For people: time, level, target, message and fields on a line.
    #[default]
    Text,
    /// For log collectors: one JSON object a line.
    Json,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Defaults, measured rather than guessed (docs/performance.md, failover): a crashed leader is replaced in
/// about 120 ms, and a full load on a 2-core machine causes no leader change
/// (tests/cluster_rto.rs, tests/cluster_load.rs). openraft lets a follower stand for
/// election only after the leader's lease (the election timeout's upper end) and then its own
/// election timeout (staggered by rank among the voters, checked every 4 ms:
/// `replication::election`), so a crash costs 90-110 ms of silence before a vote; the heartbeat does not
/// enter into it. openraft gives every AppendEntries one heartbeat to finish, the follower's
/// fsync included: at 10 ms, a fully loaded 2-core host with other work beside it answered too
/// late for 80 ms in a row and the leader gave up on a majority it still had (cluster_load beside
/// two CPU hogs), so 20 ms. Raise them for slow disks or a WAN.
pub const HEARTBEAT_MS_DEFAULT: u64 = 20;
/// One thread serves brokers and Raft: an order's path hands work from task to task a dozen
/// times, and on one thread a hand-off is a queue push, where between two threads it is often a
/// wake-up of a parked one (a context switch, 10-30 us on the 2-core test machine). Measured
/// there, one against two (docs/performance.md, "openraft 0.10"): p50 0.84 against 0.92 ms in
/// the one-session closed loop, 189,800 against 172,700 orders/s at 200,000/s open loop. The
/// work that must not wait for it (the engine, the log's syncs, market data fan-out, the
/// reporter) has threads of its own.
pub const RUNTIME_THREADS_DEFAULT: usize = 1;
/// More threads than this serve no node.
pub const RUNTIME_THREADS_MAX: usize = 64;
pub const ELECTION_MIN_MS_DEFAULT: u64 = 30;
pub const ELECTION_MAX_MS_DEFAULT: u64 = 60;
pub const SNAPSHOT_EVERY_DEFAULT: u64 = 20_000;
pub const SEGMENT_MIB_DEFAULT: u64 = 64;

impl NodeConfig {
    /// How long a leader may go without hearing from a majority before it stops answering
    /// brokers (their waiting orders are told "outcome unknown" and they go elsewhere): two
    /// leader leases (the election timeout's upper end), 120 ms with the defaults. It guards no
    /// write (nothing commits without a majority) and no read (reads confirm leadership with a
    /// majority first); it only decides how soon a cut-off leader sends brokers away, and a
    /// replacement cannot be elected sooner than a lease and an election timeout anyway.
    /// Shorter turned a loaded 2-core host's late acknowledgements into failed orders (60 ms
    /// did under full load; 80 ms did with other work beside it).
    pub fn quorum_lost_after(&self) -> Duration {
        Duration::from_millis(2 * self.election_max_ms)
    }

    pub fn check(&self) -> Result<(), String> {
        if !self.peers.contains_key(&self.id) {
            return Err(format!("--id {} is not among --peers", self.id));
        }
        if self.fix_tls && self.fix_listen.is_none() {
            return Err(
                "--fix-tls needs --fix-listen: the address FIX over TLS is served on".into(),
            );
        }
        if !(1..=RUNTIME_THREADS_MAX).contains(&self.runtime_threads) {
            return Err(format!(
                "--runtime-threads must be 1 to {RUNTIME_THREADS_MAX}, not {}",
                self.runtime_threads
            ));
        }
        if self.heartbeat_ms == 0
            || self.election_min_ms <= self.heartbeat_ms
            || self.election_max_ms <= self.election_min_ms
        {
            return Err(format!(
                "timeouts must satisfy 0 < heartbeat ({}) < election min ({}) < election max ({})",
                self.heartbeat_ms, self.election_min_ms, self.election_max_ms
            ));
        }
        let limits = self.session_limits;
        if limits.commands_per_sec == 0
            || limits.sessions_per_broker_max == 0
            || limits.reads_per_sec == 0
            || limits.in_flight_max == 0
            || limits.in_flight_max as usize > exchange_engine::CLIENT_ORDER_ID_WINDOW
        {
            return Err(format!(
                "session limits must be positive, in flight at most {} (got rate {}, in flight {})",
                exchange_engine::CLIENT_ORDER_ID_WINDOW,
                limits.commands_per_sec,
                limits.in_flight_max
            ));
        }
        if self.snapshot_every == 0 {
            return Err("--snapshot-every must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_may_be_named_by_host() {
        let (id, peer) = parse_peer("3=localhost:7003/localhost:7103").expect("parse");
        assert_eq!(id, 3);
        assert!(peer.raft.ip().is_loopback(), "{peer:?}");
        assert_eq!((peer.raft.port(), peer.broker.port()), (7003, 7103));
        let error = parse_peer("3=no-such-host.invalid:7003").expect_err("unresolvable");
        assert!(error.contains("no-such-host.invalid"), "{error}");
    }

    #[test]
    fn peers_parse_with_and_without_broker_addresses() {
        let (id, peer) = parse_peer("2=127.0.0.1:7002").expect("parse");
        assert_eq!(id, 2);
        assert_eq!(
            peer.broker,
            "127.0.0.1:7102".parse::<SocketAddr>().expect("addr")
        );
        let (_, peer) = parse_peer("3=10.0.0.3:7000/10.0.0.3:9000").expect("parse");
        assert_eq!(
            peer.broker,
            "10.0.0.3:9000".parse::<SocketAddr>().expect("addr")
        );
        for bad in ["7002", "x=127.0.0.1:7002", "1=nowhere", "1=127.0.0.1:65500"] {
            assert!(parse_peer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_cluster_examples_parse() {
        for file in ["three-nodes.toml", "five-nodes.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("cluster")
                .join(file);
            let config = FileConfig::load(&path).expect("parse");
            let peers = config.peers.expect("peers");
            assert!(peers.iter().all(|p| parse_peer(p).is_ok()));
        }
    }
}
