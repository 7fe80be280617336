//! `exchange-node`: one node of the exchange cluster.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use exchange::gateway::server::SessionLimits;
use exchange::log::FlushPolicy;
use exchange::node::config::{self, parse_peer, FileConfig, NodeConfig};
use exchange::node::run::Node;
use exchange::replication::engine_thread::IdleStrategy;

#[derive(Parser)]
#[command(
    name = "exchange-node",
    version,
    about = "One node of the exchange cluster",
    long_about = "One node of the exchange cluster. Every node runs the same deterministic matching \
engine over the command stream that the leader sequences and Raft replicates; the leader answers \
brokers, followers are hot standbys that redirect brokers to the leader.\n\n\
Example: exchange-node --id 1 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 --data-dir d1\n\n\
A peer is id=RAFT_ADDR (its broker address is then the same host, port + 100) or \
id=RAFT_ADDR/BROKER_ADDR. On the cluster's first start, one node is given --bootstrap.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Make development TLS certificates: a cluster authority and one certificate per node.
    /// The authority's private key goes to a directory of its own, which nodes never read.
    GenCerts {
        /// Where to write the certificates (an existing authority is reused).
        #[arg(long, default_value = "cluster/certs")]
        dir: PathBuf,
        /// Where the authority's private key is kept [default: DIR-ca, beside DIR].
        #[arg(long, value_name = "DIR")]
        ca_key_dir: Option<PathBuf>,
        /// Node ids, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
        nodes: Vec<u64>,
        /// Extra addresses or names the node certificates are valid for.
        #[arg(long = "san", value_name = "NAME_OR_IP")]
        sans: Vec<String>,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Print the configuration this node would run with (flags over environment over the
    /// --config file over defaults), then exit without starting.
    #[arg(long)]
    check_config: bool,
    /// This node's id; must appear in --peers.
    #[arg(long, env = "EXCHANGE_ID")]
    id: Option<u64>,
    /// Every node of the cluster, comma separated: id=RAFT_ADDR[/BROKER_ADDR]. An address is
    /// ip:port or host:port (a host name is resolved once, at start).
    #[arg(long, value_delimiter = ',', env = "EXCHANGE_PEERS")]
    peers: Vec<String>,
    /// A TOML file with any of these settings (see cluster/three-nodes.toml); flags win.
    #[arg(long, value_name = "FILE", env = "EXCHANGE_CONFIG")]
    config: Option<PathBuf>,
    /// How log lines are written to stderr: text for people, json (one object a line) for
    /// log collectors [default: text]. RUST_LOG filters them (default: info, openraft errors).
    #[arg(long, value_enum, env = "EXCHANGE_LOG_FORMAT")]
    log_format: Option<config::LogFormat>,
    /// Where this node keeps its log, vote and snapshot [default: data/node-ID].
    #[arg(long, env = "EXCHANGE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The TLS certificate directory [default: cluster/certs].
    #[arg(long, env = "EXCHANGE_CERTS_DIR")]
    certs_dir: Option<PathBuf>,
    /// Bind Raft here instead of this node's address in --peers (e.g. 0.0.0.0:7001).
    #[arg(long, env = "EXCHANGE_RAFT_LISTEN")]
    raft_listen: Option<SocketAddr>,
    /// Bind the broker endpoint here instead of this node's broker address.
    #[arg(long, env = "EXCHANGE_BROKER_LISTEN")]
    broker_listen: Option<SocketAddr>,
    /// When log appends are made durable [default: batch].
    #[arg(long, env = "EXCHANGE_FSYNC", value_name = "always|batch|never")]
    fsync: Option<FlushPolicy>,
    /// How the engine thread waits for work [default: backoff].
    #[arg(long, value_enum, env = "EXCHANGE_IDLE")]
    idle: Option<IdleStrategy>,
    /// Pin the engine thread to this CPU core.
    #[arg(long, env = "EXCHANGE_PIN_CORE")]
    pin_core: Option<usize>,
    /// Threads serving brokers and Raft: one keeps an order's many task hand-offs on one
    /// thread (no wake-ups between threads); more may help a node with many busy sessions
    /// [default: 1].
    #[arg(long, env = "EXCHANGE_RUNTIME_THREADS")]
    runtime_threads: Option<usize>,
    /// Leader heartbeat interval; also the deadline of each AppendEntries [default: 20].
    #[arg(long, env = "EXCHANGE_HEARTBEAT_MS")]
    heartbeat_ms: Option<u64>,
    /// Election timeout range, lower end [default: 30].
    #[arg(long, env = "EXCHANGE_ELECTION_MIN_MS")]
    election_min_ms: Option<u64>,
    /// Election timeout range, upper end [default: 60].
    #[arg(long, env = "EXCHANGE_ELECTION_MAX_MS")]
    election_max_ms: Option<u64>,
    /// Snapshot (and purge the log behind it) every this many entries [default: 20000].
    #[arg(long, env = "EXCHANGE_SNAPSHOT_EVERY")]
    snapshot_every: Option<u64>,
    /// Log segment size in MiB [default: 64].
    #[arg(long, env = "EXCHANGE_SEGMENT_MIB")]
    segment_mib: Option<u64>,
    /// Found a new cluster with --peers as its members: give it to one node, on the cluster's
    /// very first start (ignored if the node already has a log). Other nodes, and restarts,
    /// go without it. A node that lost its data should rejoin under a new id (cluster replace).
    #[arg(long, env = "EXCHANGE_BOOTSTRAP")]
    bootstrap: bool,
    /// The brokers file: the admin key, and brokers with their API keys and accounts. The
    /// leader registers a broker of it the first time it sees it; later changes are made with
    /// `exchange-cli admin set-broker-key` and win [default with --dev: cluster/brokers.toml].
    #[arg(long, value_name = "FILE", env = "EXCHANGE_BROKERS")]
    brokers: Option<PathBuf>,
    /// A development node: it accepts the public development keys of cluster/brokers.toml
    /// (and reads that file when no --brokers is given). Without it a node refuses to start
    /// with any of those keys. Never for a cluster that anyone else can reach.
    #[arg(long, env = "EXCHANGE_DEV")]
    dev: bool,
    /// Commands per second one broker session may send (a burst of one second's worth); more
    /// are answered Throttled. Sized for a busy trading system; raise it for benchmarks.
    /// [default: 20000]
    #[arg(long, env = "EXCHANGE_SESSION_RATE")]
    session_rate: Option<u32>,
    /// Commands one session may have waiting for their answers; at most 4096 (the engine's
    /// exactly-once window).
    /// [default: 4096]
    #[arg(long, env = "EXCHANGE_SESSION_IN_FLIGHT")]
    session_in_flight: Option<u32>,
    /// Reads (depth, balances, order status, open orders, instruments, market snapshots) one
    /// broker session may make a second; more are answered Throttled.
    /// [default: 1000]
    #[arg(long, env = "EXCHANGE_SESSION_READ_RATE")]
    session_read_rate: Option<u32>,
    /// Sessions one broker may hold logged on at once, on this node; a logon beyond it is
    /// refused and says so.
    /// [default: 64]
    #[arg(long, env = "EXCHANGE_BROKER_SESSIONS_MAX")]
    broker_sessions_max: Option<u32>,
    /// Commands per second one broker may send over all its sessions on this node (a burst
    /// of one second's worth); more are answered Throttled.
    /// [default: 50000]
    #[arg(long, env = "EXCHANGE_BROKER_RATE")]
    broker_rate: Option<u32>,
    /// Reads per second one broker may make over all its sessions on this node.
    /// [default: 5000]
    #[arg(long, env = "EXCHANGE_BROKER_READ_RATE")]
    broker_read_rate: Option<u32>,
    /// Serve Prometheus metrics (GET /metrics: role, term, commit and applied index, apply
    /// lag, commands applied, rejects by reason; latency of broker answers, of Raft rounds
    /// and of log appends) on this address.
    #[arg(long, value_name = "ADDR", env = "EXCHANGE_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Serve the public market data API and the cluster's state on this address, over plain
    /// HTTP (GET /api/v1/instruments, /api/v1/book/SYMBOL, /api/v1/trades/SYMBOL,
    /// /api/v1/candles/SYMBOL, /api/v1/cluster, /healthz, /readyz) and market data live over
    /// WebSocket (GET /api/v1/ws): docs/http-api.md. Any node may serve it. Off unless given.
    #[arg(long, value_name = "ADDR", env = "EXCHANGE_HTTP_LISTEN")]
    http_listen: Option<std::net::SocketAddr>,
    /// Accept FIX 4.4 order entry sessions here (TCP; TargetCompID EXCHANGE, each broker's
    /// SenderCompID from the brokers file's fix_comp_id, Password(554) the broker's API key):
    /// docs/fix.md. Only the leader takes logons; a follower's Logout names the leader. Off
    /// unless given.
    #[arg(long, value_name = "ADDR", env = "EXCHANGE_FIX_LISTEN")]
    fix_listen: Option<std::net::SocketAddr>,
    /// A second endpoint of the native protocol (QUIC, the broker certificate and keys), for
    /// market data subscribers only: its connections run on the fan-out runtime at a lower
    /// priority than the order path, so that many subscribers' packets, acknowledgements and
    /// encryption wait for the orders' and not the other way round. It answers logons,
    /// Subscribe, MarketSnapshot, Depth, Instruments and Status; anything else is refused
    /// with a pointer to the broker endpoint. Any node in touch with the leader serves it.
    /// Off unless given.
    #[arg(long, value_name = "ADDR", env = "EXCHANGE_MD_LISTEN")]
    md_listen: Option<std::net::SocketAddr>,
    /// FIX over TLS (1.2 or 1.3) on --fix-listen, with the node's certificate (the brokers
    /// verify it with the cluster's ca.pem); without it FIX is plain TCP.
    #[arg(long, env = "EXCHANGE_FIX_TLS")]
    fix_tls: bool,
    /// Market data messages a live subscriber may fall behind before the node sends it a
    /// fresh snapshot instead (a slow subscriber never slows the engine).
    #[arg(long, value_name = "MESSAGES", env = "EXCHANGE_MD_SUBSCRIBER_BUFFER")]
    md_subscriber_buffer: Option<usize>,
    /// Send a market data subscriber (native or WebSocket) at most one frame this often, in
    /// milliseconds: in a burst, the messages that arrive meanwhile share a frame, which costs
    /// the node and the subscriber one write and one wake-up instead of one per message. A
    /// lone message after a quiet spell goes at once. 0: every message at once.
    #[arg(long, value_name = "MS", env = "EXCHANGE_MD_FRAME_MS")]
    md_frame_ms: Option<u64>,
    /// Keep every trade and closed candle in this SQLite file, so that the HTTP API's candles
    /// and trades reach back beyond the last minutes and across restarts (default:
    /// market-history.db in the data directory).
    #[arg(long, value_name = "PATH", env = "EXCHANGE_MD_HISTORY")]
    md_history: Option<PathBuf>,
    /// Keep market data only in memory (the last 10 minutes of 1 s candles, a day of 1 min
    /// candles, the last 64 trades of each symbol).
    #[arg(long, conflicts_with = "md_history")]
    no_md_history: bool,
    /// Write every order, execution, trade and balance change into this SQLite database
    /// (the reporter; a follower is a good place). Its cursor is committed with the rows, so
    /// a crash neither loses nor doubles a row. Read it with `exchange-cli report`.
    #[arg(long, value_name = "PATH", env = "EXCHANGE_REPORT_DB")]
    report_db: Option<PathBuf>,
    /// Test-only fault: report a wrong output hash from this log index on, to prove that
    /// divergence detection catches it. Exists only in builds with the `test-faults` feature;
    /// production builds reject it as an unknown flag.
    #[cfg(feature = "test-faults")]
    #[arg(long, hide = true)]
    fault_diverge_at: Option<u64>,
    /// Test-only fault: answer every Nth new order of a broker with a made-up acceptance,
    /// without sequencing it (an acknowledgement that was never committed).
    #[cfg(feature = "test-faults")]
    #[arg(long, hide = true)]
    fault_ack_unsequenced_every: Option<u64>,
    /// Test-only fault: sequence every Nth new order of a broker a second time, past the
    /// exactly-once window (a client order id entered twice).
    #[cfg(feature = "test-faults")]
    #[arg(long, hide = true)]
    fault_double_submit_every: Option<u64>,
    /// Test-only fault: leave every Nth execution out of the report stream (a trade with one
    /// side).
    #[cfg(feature = "test-faults")]
    #[arg(long, hide = true)]
    fault_drop_execution_every: Option<u64>,
    /// Test-only fault: swap the last two reports of every Nth report batch (a stream that
    /// goes back).
    #[cfg(feature = "test-faults")]
    #[arg(long, hide = true)]
    fault_reorder_reports_every: Option<u64>,
    /// Test-only fault: answer every Nth balances read with the account's previous read (a
    /// stale read).
    #[cfg(feature = "test-faults")]
    #[arg(long, hide = true)]
    fault_stale_balances_every: Option<u64>,
    /// Test-only fault: count held funds as available too in balances replies.
    #[cfg(feature = "test-faults")]
    #[arg(long, hide = true)]
    fault_count_held_twice: bool,
    /// Test-only fault: answer every Nth sequenced broker command with a refusal (failed, yet
    /// it took effect).
    #[cfg(feature = "test-faults")]
    #[arg(long, hide = true)]
    fault_refuse_sequenced_every: Option<u64>,
    /// Test-only fault: leave every Nth market data message out of a subscriber's stream (a gap).
    #[cfg(feature = "test-faults")]
    #[arg(long, hide = true)]
    fault_market_gap_every: Option<u64>,
    /// Test-only fault: answer depth reads with one lot too many at the best bid.
    #[cfg(feature = "test-faults")]
    #[arg(long, hide = true)]
    fault_wrong_depth: bool,
    /// Test-only fault: stamp the last report of every Nth report batch earlier than the first.
    #[cfg(feature = "test-faults")]
    #[arg(long, hide = true)]
    fault_report_time_back_every: Option<u64>,
    /// Test-only fault: exit after this many broker commands (a crash).
    #[cfg(feature = "test-faults")]
    #[arg(long, hide = true)]
    fault_exit_after_commands: Option<u64>,
    /// Test-only fault: answer every Nth sequenced operator deposit or withdrawal with
    /// "outcome unknown".
    #[cfg(feature = "test-faults")]
    #[arg(long, hide = true)]
    fault_admin_unknown_every: Option<u64>,
    /// Test-only fault: once this log index is applied, report this node a follower that
    /// knows no leader.
    #[cfg(feature = "test-faults")]
    #[arg(long, hide = true)]
    fault_status_hides_leader_from: Option<u64>,
    /// Test-only fault: refuse every status request.
    #[cfg(feature = "test-faults")]
    #[arg(long, hide = true)]
    fault_status_refused: bool,
}

fn resolve(args: RunArgs) -> Result<NodeConfig, String> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let dev = args.dev || file.dev.unwrap_or(false);
    let id = args
        .id
        .or(file.id)
        .ok_or("--id is required (or EXCHANGE_ID, or id in the --config file)")?;
    let peer_texts = if args.peers.is_empty() {
        file.peers.clone().unwrap_or_default()
    } else {
        args.peers.clone()
    };
    if peer_texts.is_empty() {
        return Err("--peers is required (or a --config file with peers)".into());
    }
    let mut peers = BTreeMap::new();
    for text in &peer_texts {
        let (peer_id, addr) = parse_peer(text)?;
        if peers.insert(peer_id, addr).is_some() {
            return Err(format!("node {peer_id} appears twice in --peers"));
        }
    }
    let me = *peers
        .get(&id)
        .ok_or(format!("--id {id} is not among --peers"))?;
    let segment_mib = args
        .segment_mib
        .or(file.segment_mib)
        .unwrap_or(config::SEGMENT_MIB_DEFAULT);
    let data_dir = args
        .data_dir
        .or(file.data_dir.map(|d| d.join(format!("node-{id}"))))
        .unwrap_or_else(|| PathBuf::from(format!("data/node-{id}")));
    let md_history = if args.no_md_history || file.no_md_history == Some(true) {
        None
    } else {
        Some(
            args.md_history
                .or(file.md_history)
                .unwrap_or_else(|| data_dir.join("market-history.db")),
        )
    };
    Ok(NodeConfig {
        id,
        data_dir,
        certs_dir: args
            .certs_dir
            .or(file.certs_dir)
            .unwrap_or_else(|| PathBuf::from("cluster/certs")),
        raft_listen: args.raft_listen.or(file.raft_listen).unwrap_or(me.raft),
        broker_listen: args
            .broker_listen
            .or(file.broker_listen)
            .unwrap_or(me.broker),
        peers,
        fsync: args.fsync.or(file.fsync).unwrap_or_default(),
        idle: args.idle.or(file.idle).unwrap_or_default(),
        pin_core: args.pin_core.or(file.pin_core),
        runtime_threads: args
            .runtime_threads
            .or(file.runtime_threads)
            .unwrap_or(config::RUNTIME_THREADS_DEFAULT),
        heartbeat_ms: args
            .heartbeat_ms
            .or(file.heartbeat_ms)
            .unwrap_or(config::HEARTBEAT_MS_DEFAULT),
        election_min_ms: args
            .election_min_ms
            .or(file.election_min_ms)
            .unwrap_or(config::ELECTION_MIN_MS_DEFAULT),
        election_max_ms: args
            .election_max_ms
            .or(file.election_max_ms)
            .unwrap_or(config::ELECTION_MAX_MS_DEFAULT),
        snapshot_every: args
            .snapshot_every
            .or(file.snapshot_every)
            .unwrap_or(config::SNAPSHOT_EVERY_DEFAULT),
        segment_bytes: segment_mib.saturating_mul(1 << 20),
        bootstrap: args.bootstrap || file.bootstrap.unwrap_or(false),
        brokers_file: args.brokers.or(file.brokers).or_else(|| {
            // Only a development node falls back on the development file.
            Some(PathBuf::from("cluster/brokers.toml")).filter(|p| dev && p.exists())
        }),
        dev,
        metrics_listen: args.metrics_listen.or(file.metrics_listen),
        http_listen: args.http_listen.or(file.http_listen),
        fix_listen: args.fix_listen.or(file.fix_listen),
        md_listen: args.md_listen.or(file.md_listen),
        fix_tls: args.fix_tls || file.fix_tls.unwrap_or(false),
        md_subscriber_buffer: args
            .md_subscriber_buffer
            .or(file.md_subscriber_buffer)
            .unwrap_or(exchange::marketdata::hub::SUBSCRIBER_BUFFER)
            .clamp(1, 1 << 20),
        md_frame_every: args
            .md_frame_ms
            .or(file.md_frame_ms)
            .map(|ms| std::time::Duration::from_millis(ms.min(1_000)))
            .unwrap_or(exchange::marketdata::hub::FRAME_EVERY_DEFAULT),
        md_history,
        report_db: args.report_db.or(file.report_db),
        session_limits: exchange::gateway::server::SessionLimits {
            commands_per_sec: args
                .session_rate
                .or(file.session_rate)
                .unwrap_or(SessionLimits::default().commands_per_sec),
            in_flight_max: args
                .session_in_flight
                .or(file.session_in_flight)
                .unwrap_or(SessionLimits::default().in_flight_max),
            reads_per_sec: args
                .session_read_rate
                .or(file.session_read_rate)
                .unwrap_or(SessionLimits::default().reads_per_sec),
            sessions_per_broker_max: args
                .broker_sessions_max
                .or(file.broker_sessions_max)
                .unwrap_or(SessionLimits::default().sessions_per_broker_max),
            broker_commands_per_sec: args
                .broker_rate
                .or(file.broker_rate)
                .unwrap_or(SessionLimits::default().broker_commands_per_sec),
            broker_reads_per_sec: args
                .broker_read_rate
                .or(file.broker_read_rate)
                .unwrap_or(SessionLimits::default().broker_reads_per_sec),
        },
        #[cfg(feature = "test-faults")]
        fault_diverge_at: args.fault_diverge_at,
        #[cfg(feature = "test-faults")]
        gateway_faults: exchange::gateway::server::GatewayFaults {
            ack_unsequenced_every: args.fault_ack_unsequenced_every.filter(|n| *n > 0),
            double_submit_every: args.fault_double_submit_every.filter(|n| *n > 0),
            drop_execution_every: args.fault_drop_execution_every.filter(|n| *n > 0),
            reorder_reports_every: args.fault_reorder_reports_every.filter(|n| *n > 0),
            stale_balances_every: args.fault_stale_balances_every.filter(|n| *n > 0),
            count_held_twice: args.fault_count_held_twice,
            refuse_sequenced_every: args.fault_refuse_sequenced_every.filter(|n| *n > 0),
            market_gap_every: args.fault_market_gap_every.filter(|n| *n > 0),
            wrong_depth: args.fault_wrong_depth,
            report_time_back_every: args.fault_report_time_back_every.filter(|n| *n > 0),
            exit_after_commands: args.fault_exit_after_commands.filter(|n| *n > 0),
            admin_unknown_every: args.fault_admin_unknown_every.filter(|n| *n > 0),
            status_hides_leader_from: args.fault_status_hides_leader_from,
            status_refused: args.fault_status_refused,
        },
        #[cfg(not(feature = "test-faults"))]
        gateway_faults: exchange::gateway::server::GatewayFaults::default(),
        #[cfg(not(feature = "test-faults"))]
        fault_diverge_at: None,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::GenCerts {
        dir,
        ca_key_dir,
        nodes,
        sans,
    }) = cli.command
    {
        let ca_key_dir = ca_key_dir.unwrap_or_else(|| exchange::net::tls::default_ca_key_dir(&dir));
        return match exchange::net::tls::generate_with_ca_key(&dir, &ca_key_dir, &nodes, &sans) {
            Ok(written) => {
                for path in written {
                    println!("wrote {}", path.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("exchange-node gen-certs: {e}");
                ExitCode::from(2)
            }
        };
    }
    // The format is known before the rest of the configuration is checked, so that those
    // errors are logged in it too; a file that cannot be read is reported by `resolve`.
    let log_format = cli
        .run
        .log_format
        .or_else(|| {
            let path = cli.run.config.as_ref()?;
            FileConfig::load(path).ok()?.log_format
        })
        .unwrap_or_default();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=error"));
    let logger = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log_format {
        config::LogFormat::Text => logger
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        config::LogFormat::Json => logger.json().init(),
    }
    let check_only = cli.run.check_config;
    let config = match resolve(cli.run) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("exchange-node: {e}");
            return ExitCode::from(2);
        }
    };
    if check_only {
        if let Err(e) = config.check() {
            eprintln!("exchange-node: {e}");
            return ExitCode::from(2);
        }
        println!("{config:#?}");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.runtime_threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("exchange-node: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let node = Node::start(&config).await.map_err(|e| e.to_string())?;
        node.run_until_signalled().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("exchange-node {}: {e}", config.id);
            ExitCode::from(1)
        }
    }
}
