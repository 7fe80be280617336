//! Starting and stopping a node.
//!
//! ```text
//! certificates ─▶ log (recover torn tail) ─▶ snapshot? ─▶ engine thread ─▶ state machine
//!   ─▶ Raft (QUIC mutual TLS between nodes) ─▶ initialize (--bootstrap, empty log only)
//!   ─▶ sequencer ─▶ broker endpoint, divergence watcher ─▶ run until SIGINT/SIGTERM
//!   ─▶ shut down Raft
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver as _;
use openraft::{Config, SnapshotPolicy};
use tokio::signal::unix::{signal, SignalKind};

use super::brokers::apply_when_leader as apply_brokers_file;
use super::config::NodeConfig;
use super::divergence_watch::watch as watch_divergence;
use super::error::StartError;
use super::metrics::{serve as serve_metrics, MetricsSources};
use super::outputs::NodeTap;
use crate::fix::server::{serve as serve_fix, FixMetrics, FixServer, LeaderFixAddress};
use crate::gateway::credentials::BrokersFile;
use crate::gateway::metrics::GatewayMetrics;
use crate::gateway::server::{serve as serve_brokers, Gateway};
use crate::http::cluster::{ClusterView, LeaderSample};
use crate::http::{serve as serve_http, HttpSources};
use crate::latency::LatencyHistogram;
use crate::marketdata::history::MarketHistory;
use crate::marketdata::hub::MarketHub;
use crate::net::tls;
use crate::replication::divergence::DivergenceLog;
use crate::replication::engine_thread::{
    AppliedPosition, EngineHandle, EngineThreadConfig, OutputTap,
};
use crate::replication::keys::BrokerKeys;
use crate::replication::leadership::Leadership;
use crate::replication::log_store::LogStore;
use crate::replication::network::{keep_connected, serve as serve_raft, LeaderContact, Network};
use crate::replication::reports::ReportJournal;
use crate::replication::sequencer::Sequencer;
use crate::replication::state_machine::{Raft, StateMachine, StoredSnapshot};
use crate::replication::types::{raft_stopped, NodeAddr};
use crate::report::Reporter;

/// How often the node looks whether Raft stopped on a fatal error.
const FATAL_CHECK_EVERY: Duration = Duration::from_millis(100);

/// A running node.
pub struct Node {
    pub id: u64,
    pub raft: Raft,
    raft_endpoint: quinn::Endpoint,
    broker_endpoint: quinn::Endpoint,
    /// The market data endpoint (`--md-listen`), on the fan-out runtime.
    market_data_endpoint: Option<quinn::Endpoint>,
    /// Dropped last, after Raft: it writes what is queued before the process ends.
    reporter: Option<Arc<Reporter>>,
}

fn raft_config(config: &NodeConfig) -> Result<Config, StartError> {
    Config {
        cluster_name: "exchange".into(),
        heartbeat_interval: config.heartbeat_ms,
        election_timeout_min: config.election_min_ms,
        election_timeout_max: config.election_max_ms,
        // How fast a follower that fell behind (restarted, resumed, healed) catches up: one
        // round trip and one fsync per message. At 4 a follower a second behind was still
        // catching up when the next fault came, and on three nodes the new leader's first
        // commit waited for it: pause-leader RTO 174 ms against 118 at 32 (docs/performance.md,
        // "Five nodes"). The log store caps a message at 1 MiB of entries, or one entry if it
        // is larger (`APPEND_PAYLOAD_BYTES`), so full batches still make small messages, and an
        // AppendEntries that outlives its heartbeat is waited for, not resent
        // (`replication::network`). A follower that keeps up gets one entry a message anyway.
        max_payload_entries: 32,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
        // Keep enough log behind a snapshot that a briefly lagging follower catches up from
        // the log rather than by a full snapshot.
        max_in_snapshot_log_to_keep: config.snapshot_every / 2,
        purge_batch_size: (config.snapshot_every / 4).clamp(1, 256),
        install_snapshot_timeout: 10_000,
        // A node asks whether a majority would vote before it stands (and raises the term),
        // so a node cut off or restarted does not depose a leader the others still hear.
        enable_pre_vote: Some(true),
        // Replication sends entries as soon as they are written, not after this node's loop
        // turns: the leader's disk write overlaps the followers'.
        broadcast_submitted_on_append: Some(true),
        // A node whose recovery cut a torn tail holds fewer entries than it may have
        // acknowledged (only if its disk lost synced writes): the leader then sends again from
        // where its log really ends, as openraft 0.9 did, rather than stop on it. The majority
        // that committed those entries still holds them.
        allow_log_reversion: Some(true),
        ..Default::default()
    }
    .validate()
    .map_err(|e| StartError::Config(format!("Raft settings: {e}")))
}

impl Node {
    pub async fn start(config: &NodeConfig) -> Result<Node, StartError> {
        config.check().map_err(StartError::Config)?;
        // The credentials first: a node refused them touches nothing.
        let brokers = match &config.brokers_file {
            Some(path) => {
                let file = BrokersFile::load(path).map_err(StartError::Brokers)?;
                let public = file.development_keys_used();
                if !config.dev && !public.is_empty() {
                    return Err(StartError::Brokers(format!(
                        "the brokers file {} holds the public development keys of {} (they are \
                         in the exchange's repository): give every broker and the admin a key \
                         of your own, or start a development node with --dev",
                        path.display(),
                        public.join(", ")
                    )));
                }
                file
            }
            None => {
                tracing::warn!(
                    "no brokers file: no admin key, so nobody can administer through this node"
                );
                BrokersFile::default()
            }
        };
        let identity =
            tls::load_identity(&config.certs_dir, config.id).map_err(StartError::Certificates)?;
        if let Some(key) = tls::stray_ca_key(&config.certs_dir) {
            tracing::warn!(
                "{} is the certificate authority's private key, in the directory every node \
                 reads: whoever breaks into a node can mint certificates for the others. Keep it \
                 elsewhere (exchange-node gen-certs moves it to {})",
                key.display(),
                tls::default_ca_key_dir(&config.certs_dir).display()
            );
        }

        crate::replication::data_format::check_or_mark(&config.data_dir).map_err(|source| {
            StartError::DataFormat {
                dir: config.data_dir.clone(),
                source,
            }
        })?;
        let append_latency = Arc::new(LatencyHistogram::default());
        let round_latency = Arc::new(LatencyHistogram::default());
        let log = LogStore::open(
            config.id,
            &config.data_dir.join("log"),
            config.fsync,
            config.segment_bytes,
            Arc::clone(&append_latency),
        )
        .map_err(StartError::Log)?;
        let snapshot =
            StoredSnapshot::load(&config.data_dir).map_err(|reason| StartError::Snapshot {
                dir: config.data_dir.clone(),
                reason,
            })?;
        let engine_config = EngineThreadConfig {
            engine: exchange_engine::EngineConfig::default(),
            idle: config.idle,
            pin_core: config.pin_core,
            node_id: config.id,
            fault_diverge_at: config.fault_diverge_at,
        };
        // The hub's feeding task needs a runtime, which `start` runs on.
        let (history, recorder) = match &config.md_history {
            Some(path) => {
                let (history, recorder) =
                    MarketHistory::open(path).map_err(|e| StartError::MdHistory(e.to_string()))?;
                (Some(history), Some(recorder))
            }
            None => (None, None),
        };
        let (market, publisher, feed_market) =
            MarketHub::new(config.md_subscriber_buffer, config.md_frame_every, recorder);
        tokio::spawn(feed_market);
        let reporter = match &config.report_db {
            Some(path) => Some(Arc::new(
                Reporter::spawn(path).map_err(|e| StartError::ReportDb(e.to_string()))?,
            )),
            None => None,
        };
        // Every output leaves the engine thread through the tap; the journal's start is the
        // engine's last command, set once the engine stands where it starts (below).
        let reports = Arc::new(ReportJournal::new(0));
        let keys = Arc::new(BrokerKeys::default());
        let tap: Box<dyn OutputTap> = Box::new(NodeTap::new(
            publisher,
            reporter.as_ref().map(|r| r.sender()),
            Arc::clone(&reports),
            Arc::clone(&keys),
        ));
        let (engine, position) = match &snapshot {
            Some(stored) => {
                let position = stored.position();
                let engine = EngineHandle::spawn(
                    engine_config,
                    Some((position.clone(), &stored.state)),
                    Some(tap),
                )
                .map_err(|e| StartError::Snapshot {
                    dir: config.data_dir.clone(),
                    reason: e.to_string(),
                })?;
                (engine, position)
            }
            None => (
                EngineHandle::spawn(engine_config, None, Some(tap))
                    .map_err(|e| StartError::Engine(e.to_string()))?,
                AppliedPosition::default(),
            ),
        };
        let engine = Arc::new(engine);
        let max_timestamp = log.max_timestamp();
        let committed = log.committed();
        let start_seq = engine
            .query(|engine| engine.last_seq())
            .await
            .map_err(|e| StartError::Engine(e.to_string()))?;
        reports.restart_at(start_seq);
        let state_machine = StateMachine::new(
            Arc::clone(&engine),
            &config.data_dir,
            position,
            snapshot,
            reporter
                .clone()
                .map(|r| r as Arc<dyn crate::replication::state_machine::SnapshotGate>),
        );

        let me = config.peers[&config.id];
        let transport = tls::transport(Duration::from_millis(config.election_max_ms * 4));
        let mut raft_endpoint = quinn::Endpoint::server(
            tls::mutual_server(&identity, Arc::clone(&transport))
                .map_err(StartError::Certificates)?,
            config.raft_listen,
        )
        .map_err(|e| StartError::Listen {
            what: "raft",
            addr: config.raft_listen,
            reason: e.to_string(),
        })?;
        raft_endpoint.set_default_client_config(
            tls::mutual_client(&identity, Arc::clone(&transport))
                .map_err(StartError::Certificates)?,
        );

        let network = Network::new(raft_endpoint.clone());
        let raft = Raft::new(
            config.id,
            Arc::new(raft_config(config)?),
            network.clone(),
            log,
            state_machine,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let leader_contact = Arc::new(LeaderContact::default());
        tokio::spawn(serve_raft(
            raft_endpoint.clone(),
            raft.clone(),
            Arc::clone(&leader_contact),
        ));

        // Only an explicit bootstrap founds a cluster; on a restart Raft already knows its
        // members, and a node that lost its data must not found a second cluster.
        let mut founded = false;
        if config.bootstrap {
            let members: BTreeMap<u64, NodeAddr> = config
                .peers
                .iter()
                .map(|(&id, peer)| {
                    (
                        id,
                        NodeAddr {
                            raft: peer.raft.to_string(),
                            broker: peer.broker.to_string(),
                        },
                    )
                })
                .collect();
            match raft.initialize(members).await {
                Ok(()) => {
                    founded = true;
                    tracing::info!("initialized a new cluster")
                }
                Err(openraft::error::RaftError::APIError(
                    openraft::error::InitializeError::NotAllowed(_),
                )) => {}
                Err(e) => return Err(StartError::Raft(format!("initializing the cluster: {e}"))),
            }
        }

        if !founded {
            hold_candidacy_until_a_leader_is_heard(&raft);
        }
        tokio::spawn(keep_connected(raft.clone(), network, config.id));
        tokio::spawn(crate::replication::election::stand_on_time(
            raft.clone(),
            config.id,
            Arc::clone(&leader_contact),
            Duration::from_millis(config.election_max_ms),
            (config.election_min_ms, config.election_max_ms),
        ));

        let leadership = Leadership::new(
            raft.clone(),
            config.id,
            config.quorum_lost_after(),
            Arc::clone(&leader_contact),
        );
        let sequencer = Sequencer::start(
            raft.clone(),
            max_timestamp,
            Arc::clone(&engine),
            leadership.clone(),
            Arc::clone(&round_latency),
        );
        let admin_digest = brokers.admin_digest();
        let gateway_metrics = Arc::new(GatewayMetrics::default());
        let fix_metrics = Arc::new(FixMetrics::default());
        let divergence = DivergenceLog::default();
        if let Some(addr) = config.metrics_listen {
            serve_metrics(
                addr,
                MetricsSources {
                    id: config.id,
                    raft: raft.clone(),
                    engine: Arc::clone(&engine),
                    committed: Arc::clone(&committed),
                    gateway: Arc::clone(&gateway_metrics),
                    append_latency,
                    round_latency,
                    divergence: divergence.clone(),
                    reporter: reporter.clone(),
                    history: history.clone(),
                    fix: Arc::clone(&fix_metrics),
                },
            )
            .await
            .map_err(|reason| StartError::Listen {
                what: "metrics",
                addr,
                reason,
            })?;
        }
        let fix_drop_copies = brokers
            .fix_drop_copies()
            .into_iter()
            .map(|(comp_id, digest, whose)| (comp_id, (digest, whose)))
            .collect();
        tokio::spawn(apply_brokers_file(
            raft.clone(),
            Arc::clone(&engine),
            sequencer.clone(),
            brokers,
        ));
        let broker_endpoint = quinn::Endpoint::server(
            tls::broker_server(&identity, tls::broker_transport())
                .map_err(StartError::Certificates)?,
            config.broker_listen,
        )
        .map_err(|e| StartError::Listen {
            what: "broker",
            addr: config.broker_listen,
            reason: e.to_string(),
        })?;
        let peers = config
            .peers
            .iter()
            .filter(|(id, _)| **id != config.id)
            .map(|(id, peer)| (*id, peer.broker))
            .collect();
        let cluster_view = Arc::new(ClusterView::default());
        tokio::spawn(watch_divergence(
            Arc::clone(&engine),
            peers,
            identity.ca.clone(),
            divergence.clone(),
            Arc::clone(&cluster_view),
        ));
        let fanout = fanout_runtime().map_err(StartError::Threads)?;
        let gateway = Gateway {
            fanout: Some(fanout.clone()),
            market_data_only: false,
            leadership,
            sequencer,
            engine,
            committed,
            divergence,
            admin_digest,
            keys,
            failed_logons: Arc::default(),
            broker_sessions: Arc::default(),
            broker_rates: Arc::default(),
            connections: Arc::default(),
            development: config.dev,
            http_listen: config.http_listen,
            fix_listen: config.fix_listen,
            session_limits: config.session_limits,
            reports,
            market,
            metrics: Arc::clone(&gateway_metrics),
            faults: config.gateway_faults,
            fault_state: Arc::default(),
        };
        if let Some(addr) = config.fix_listen {
            let listener =
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| StartError::Listen {
                        what: "FIX",
                        addr,
                        reason: e.to_string(),
                    })?;
            let peers = Arc::clone(&cluster_view);
            let leader_fix: LeaderFixAddress = Arc::new(move |id| {
                peers
                    .peers()
                    .get(&id)
                    .and_then(|peer| peer.status.as_ref().ok()?.fix.clone())
            });
            let server = FixServer::new(
                gateway.clone(),
                fix_drop_copies,
                leader_fix,
                Arc::clone(&fix_metrics),
            );
            let tls = match config.fix_tls {
                true => Some(tokio_rustls::TlsAcceptor::from(
                    tls::fix_server(&identity).map_err(StartError::Certificates)?,
                )),
                false => None,
            };
            tokio::spawn(serve_fix(listener, Arc::new(server), tls));
        }
        if let Some(addr) = config.http_listen {
            let watched = raft.clone();
            let view = Arc::clone(&cluster_view);
            let me = config.id;
            tokio::spawn(async move {
                view.watch_leader(|| {
                    let metrics = watched.metrics();
                    let now = metrics.borrow_watched();
                    // While its vote is for a candidate not yet elected, the node knows no
                    // leader (openraft keeps naming the old one until it learns the new).
                    let leader = now.vote.is_committed().then_some(now.current_leader);
                    LeaderSample {
                        me,
                        leader: leader.flatten(),
                        term: now.current_term,
                        heard: leader_contact.last(),
                    }
                })
                .await
            });
            let status = gateway.clone();
            let sources = HttpSources {
                market: Arc::clone(&gateway.market),
                engine: Arc::clone(&gateway.engine),
                status: Arc::new(move || status.status()),
                cluster: cluster_view,
                history,
            };
            serve_http(addr, sources, &fanout).map_err(|reason| StartError::Listen {
                what: "HTTP",
                addr,
                reason,
            })?;
        }
        let market_data_endpoint = match config.md_listen {
            Some(addr) => {
                // Made and served on the fan-out runtime: quinn runs the endpoint's socket and
                // each connection's driver (packets, acknowledgements, encryption, timers) on
                // the runtime that makes them, so all of it waits for the order path.
                let _fanout = fanout.enter();
                let endpoint = quinn::Endpoint::server(
                    tls::broker_server(&identity, tls::broker_transport())
                        .map_err(StartError::Certificates)?,
                    addr,
                )
                .map_err(|e| StartError::Listen {
                    what: "market data",
                    addr,
                    reason: e.to_string(),
                })?;
                let market_data = Gateway {
                    market_data_only: true,
                    // Already on the fan-out runtime: its streams need no hop to it.
                    fanout: None,
                    ..gateway.clone()
                };
                fanout.spawn(serve_brokers(endpoint.clone(), market_data));
                Some(endpoint)
            }
            None => None,
        };
        tokio::spawn(serve_brokers(broker_endpoint.clone(), gateway));
        tracing::info!(
            id = config.id,
            raft = %me.raft,
            broker = %me.broker,
            data = %config.data_dir.display(),
            "node started"
        );
        Ok(Node {
            id: config.id,
            raft,
            raft_endpoint,
            broker_endpoint,
            market_data_endpoint,
            reporter,
        })
    }

    /// Runs until SIGINT or SIGTERM, then stops cleanly; or until Raft stops on a fatal error
    /// (a failed disk, a stopped engine), which ends the process with an error so that brokers
    /// move on and a supervisor can restart it.
    pub async fn run_until_signalled(self) -> Result<(), String> {
        let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut metrics = self.raft.metrics();
        // Looked at now and then, not on every change: Raft's metrics change several times
        // per entry, and waking this thread for each cost thousands of context switches a
        // second under load.
        let fatal = async move {
            let mut every = tokio::time::interval(FATAL_CHECK_EVERY);
            loop {
                every.tick().await;
                if let Err(fatal) = &metrics.borrow_watched().running_state {
                    return fatal.to_string();
                }
                if raft_stopped(&mut metrics) {
                    return "Raft stopped".to_string();
                }
            }
        };
        tokio::spawn(audit_leaders(self.raft.clone()));
        let result = tokio::select! {
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = terminate.recv() => Ok(()),
            error = fatal => Err(format!("Raft stopped on a fatal error: {error}")),
        };
        tracing::info!(id = self.id, "stopping");
        self.stop().await;
        result
    }

    pub async fn stop(self) {
        self.broker_endpoint.close(0u32.into(), b"node stopping");
        if let Some(endpoint) = &self.market_data_endpoint {
            endpoint.close(0u32.into(), b"node stopping");
        }
        let _ = self.raft.shutdown().await;
        self.raft_endpoint.close(0u32.into(), b"node stopping");
        if let Some(why) = self.reporter.as_ref().and_then(|r| r.failed()) {
            tracing::error!(%why, "the reporter had stopped");
        }
    }
}

/// How long a node that starts into an existing cluster waits to hear a leader before it may
/// stand for election itself.
const CANDIDACY_HOLD_ON_START: Duration = Duration::from_secs(1);

/// The audit trail: each leader this node learns of, once, logged when it learns of it. It
/// watches Raft's server metrics, which change with the vote, the role or the leader, not with
/// every entry, so the timestamps say when a failover ended at no cost under load.
async fn audit_leaders(raft: Raft) {
    let mut server = raft.server_metrics();
    let mut leader_seen = None;
    loop {
        let (leader, term) = {
            let now = server.borrow_watched();
            (now.current_leader, now.vote.leader_id().term)
        };
        if leader.is_some() && leader != leader_seen {
            leader_seen = leader;
            tracing::info!(target: "audit", event = "leader", leader = leader, term, "leader changed");
        }
        if server.changed().await.is_err() {
            return;
        }
    }
}

/// A node that (re)starts into a running cluster does not stand for election until it has
/// heard a leader, or for `CANDIDACY_HOLD_ON_START`. Under openraft 0.9, which had no pre-vote,
/// a node restarted while the leader's first heartbeats had not yet reached it (a slow
/// handshake on a busy host) stood for election with a higher term, and although the others
/// refused it (its log is behind), the higher term alone made a leader with a healthy majority
/// step down. Pre-vote (0.10) now keeps such a node from raising its term; the hold stays until
/// a test shows restarts under load without it. A whole cluster restarting elects its first
/// leader this much later.
fn hold_candidacy_until_a_leader_is_heard(raft: &Raft) {
    raft.runtime_config().elect(false);
    let raft = raft.clone();
    tokio::spawn(async move {
        let heard = raft
            .wait(Some(CANDIDACY_HOLD_ON_START))
            .metrics(|m| m.current_leader.is_some(), "a leader is heard")
            .await;
        if heard.is_err() {
            tracing::info!("no leader heard within {CANDIDACY_HOLD_ON_START:?}: standing for election is allowed");
        }
        raft.runtime_config().elect(true);
    });
}

/// Nice value of the fan-out runtime's threads: the kernel runs the order path's first.
pub const FANOUT_NICE: i32 = 10;

/// The runtime that serves market data to subscribers (native streams, the HTTP API and its
/// WebSockets), on a thread of its own at a lower priority than the node's other threads: the
/// fan-out takes what CPU the order path leaves. It lives as long as the process (a node runs
/// one), so it is leaked rather than owned.
fn fanout_runtime() -> Result<tokio::runtime::Handle, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fanout")
        .on_thread_start(|| lower_priority(FANOUT_NICE))
        .enable_all()
        .build()
        .map_err(|e| format!("starting the fan-out runtime: {e}"))?;
    let runtime: &'static tokio::runtime::Runtime = Box::leak(Box::new(runtime));
    Ok(runtime.handle().clone())
}

/// Raises the calling thread's nice value (Linux keeps one per thread).
pub fn lower_priority(nice: i32) {
    // SAFETY: gettid and setpriority take no pointers and touch only this thread's priority.
    let done = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
    };
    if done != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "a thread meant to run at a lower priority runs at the process's"
        );
    }
}
