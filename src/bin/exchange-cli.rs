//! `exchange-cli`: the exchange's command-line tool. Today: the engine's replay (backtest and
//! audit) and its benchmark; the broker client, admin commands and the cluster load generator
//! join as the cluster lands.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use exchange::cli::catalog::{self, Catalog, CatalogInput};
use exchange::cli::outcome::CliError;
use exchange::cli::{bench, cluster, lobster, market, replay, workload};
use exchange::gateway::client::Client;

#[derive(Parser)]
#[command(
    name = "exchange-cli",
    version,
    about = "Command-line tool of the exchange cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run a CSV of orders and cancels through the matching engine on one symbol.
    ///
    /// The CSV header is `op,order_id,account,side,price,qty,tif`; op is new or cancel; side is
    /// buy or sell; tif is gtc, ioc, fok, post_only or market (price is then the protection
    /// price). A cancel row may leave side, price, qty and tif empty. Accounts are created and
    /// funded before the run, risk limits do not bind and self-trade prevention is off.
    /// Prints the trades, volume, notional, final best prices, the output hash, and the
    /// engine's speed measured over the engine's work alone.
    EngineReplay {
        /// The CSV file to replay.
        file: PathBuf,
        /// Print one JSON line instead of a table.
        #[arg(long)]
        json: bool,
        /// Prices must be multiples of this.
        #[arg(long, default_value_t = 1)]
        tick_size: i64,
        /// Quantities must be multiples of this.
        #[arg(long, default_value_t = 1)]
        lot_size: i64,
        /// Also write every output event, one JSON object a line, to this file.
        #[arg(long, value_name = "FILE")]
        events: Option<PathBuf>,
    },
    /// Benchmark the engine alone on a seeded synthetic stream held in memory.
    ///
    /// About --resting orders rest around a mid price; then new limit orders, about 10%
    /// marketable orders, and a cancel for most orders. Reports throughput and per-command
    /// latency percentiles (HDR histogram).
    EngineBench {
        /// Print one JSON line instead of a table.
        #[arg(long)]
        json: bool,
        /// The random seed: the same seed makes the same stream (and output hash).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Commands in the stream.
        #[arg(long, default_value_t = 1_000_000)]
        commands: usize,
        /// Orders resting in the book.
        #[arg(long, default_value_t = 1_000)]
        resting: usize,
        /// Write the stream as a replay CSV to this file instead of benchmarking it.
        #[arg(long, value_name = "FILE")]
        write_csv: Option<PathBuf>,
    },
    /// Replay a LOBSTER message file and compare the engine's book with LOBSTER's, row by row.
    ///
    /// Reports how many rows match exactly, how many after reconciling liquidity the files
    /// could not show (orders older than the file, events outside the visible levels), and
    /// any real mismatch. Exits with an error if there is a real mismatch.
    LobsterCheck {
        /// The LOBSTER message file (TICKER_..._message_N.csv).
        messages: PathBuf,
        /// The matching order book file (TICKER_..._orderbook_N.csv).
        orderbook: PathBuf,
        /// Levels in the order book file (N in its name).
        #[arg(long)]
        levels: usize,
        /// Print one JSON line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Load a running cluster as brokers do, and measure order-to-ack and order-to-fill
    /// latency (HDR histograms, corrected for coordinated omission) and throughput.
    ///
    /// Creates what it needs (a symbol, one broker with a fresh key and one funded account per
    /// session) with the admin key, then runs the sessions for --duration seconds. With --rate,
    /// orders are scheduled evenly and latency counts from each order's scheduled time; with
    /// --rate 0, each session sends as soon as its last request is answered. "Send lag" is the
    /// load generator's own part: from an order's scheduled time to the sending of its request
    /// (a session with one request out sends what fell due meanwhile when the answer comes;
    /// see --pipeline). Also measures, in the same run, the floor: a QUIC round trip on
    /// loopback plus one fdatasync. Each session is a broker of its own, held to the nodes'
    /// --session-rate (20,000 commands a second by default): start the nodes with more
    /// (EXCHANGE_SESSION_RATE=1000000) to drive a session harder, or a throttled request
    /// waits and its wait counts in the latencies.
    Bench {
        /// Broker sessions, each with its own connection, broker and account.
        #[arg(long, visible_alias = "clients", default_value_t = 16)]
        sessions: u64,
        /// Orders per second over all sessions; 0 runs a closed loop as fast as it goes.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Seconds to run.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Closed loop: orders per request [default: 1]. Open loop: the most due orders one
        /// request carries [default: 512].
        #[arg(long)]
        orders_per_request: Option<usize>,
        /// Order mix: percent of orders that cross the spread and trade at once.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=100))]
        cross_pct: u8,
        /// Order mix: percent of requests that cancel one of the session's resting orders.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
        cancel_pct: u8,
        /// The symbol to create and trade; a fresh one per run keeps runs independent.
        #[arg(long, default_value_t = 900)]
        symbol: u32,
        /// The first of the accounts to create.
        #[arg(long, default_value_t = 900_000)]
        first_account: u64,
        /// The first of the broker ids to register.
        #[arg(long, default_value_t = 100)]
        first_broker: u32,
        /// Where to measure the fdatasync floor: a directory on the cluster's disk.
        #[arg(long, env = "EXCHANGE_DATA", default_value = "data")]
        floor_dir: PathBuf,
        /// Market data subscribers that follow the symbol's book and trades during the run
        /// (each its own connection); the report adds what they received per second.
        #[arg(long, default_value_t = 0)]
        md_subscribers: u64,
        /// The node the market data subscribers read, by broker address: any node in touch
        /// with the leader serves market data, so they may leave the leader's cores to orders.
        /// The other --nodes are tried only when it cannot be reached; without it each
        /// subscriber reads whichever of them answers first.
        #[arg(long, value_name = "ADDR", value_parser = cluster::parse_node_address)]
        md_node: Option<std::net::SocketAddr>,
        /// Market data subscribers that subscribe to the book and then stop reading, to show
        /// that a slow reader does not slow orders (compare with a run without).
        #[arg(long, default_value_t = 0)]
        md_stalled: u64,
        /// WebSocket subscribers of the HTTP API that follow the symbol's book and trades
        /// (each its own connection, to --ws-url); counted with the market data subscribers.
        #[arg(long, default_value_t = 0, requires = "ws_url")]
        ws_subscribers: u64,
        /// The node the WebSocket subscribers read: ws://HOST:PORT/api/v1/ws (a node started
        /// with --http-listen; any node serves it).
        #[arg(long, value_name = "URL")]
        ws_url: Option<String>,
        /// Run the subscribers' threads at this nice value (0 to 19): at 19 they take only the
        /// CPU the cluster leaves, which shows how much of their cost is their own processing
        /// on a host they share with the nodes.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=19))]
        subscribers_nice: i32,
        /// Open loop: send each order when it is due, without waiting for the answers to the
        /// session's earlier ones (each request on a QUIC stream of its own). Without it a
        /// session has one request out at a time and sends what fell due meanwhile together;
        /// on a host with few cores that batching is cheaper. A request refused as unavailable
        /// (nothing sequenced) is sent again for up to 2 s, timed from its scheduled send.
        #[arg(long)]
        pipeline: bool,
        #[command(flatten)]
        cluster: cluster::ClusterArgs,
    },
    /// Order-to-acknowledgement latency over FIX: one FIX session (a broker's SenderCompID and
    /// key) sends NewOrderSingles open loop at --rate for --duration seconds; each order's
    /// latency runs from its scheduled time to its first ExecutionReport. Creates the symbol
    /// and funds --account with the admin key (--admin). Compare with `bench --sessions 1` at
    /// the same rate (scripts/bench-fix.sh alternates the two).
    FixBench {
        /// The leader's FIX address (a node started with --fix-listen).
        #[arg(long, value_name = "ADDR")]
        fix: std::net::SocketAddr,
        /// The broker's SenderCompID (its fix_comp_id in the brokers file).
        #[arg(long, default_value = "BROKER1")]
        comp_id: String,
        /// The broker's API key, sent as Password(554).
        #[arg(
            long,
            env = "EXCHANGE_FIX_KEY",
            default_value = "dev-broker-1-key-not-secret"
        )]
        fix_key: String,
        /// The broker's account the orders are for.
        #[arg(long, default_value_t = 1001)]
        account: u64,
        /// Orders per second.
        #[arg(long, default_value_t = 2_000)]
        rate: u64,
        /// Seconds to run.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Order mix: percent of orders that cross the spread and trade at once.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=100))]
        cross_pct: u8,
        /// The symbol to create (or reuse) and trade.
        #[arg(long, default_value_t = 901)]
        symbol: u32,
        #[command(flatten)]
        cluster: cluster::ClusterArgs,
    },
    /// Change the cluster's membership online (the leader carries it out).
    Cluster {
        #[command(subcommand)]
        change: MembershipCommand,
        #[command(flatten)]
        cluster: cluster::ClusterArgs,
    },
    /// Every node's view of the cluster: role, term, leader, log, commit and applied index,
    /// and the output hash at the applied index (equal hashes at equal indexes: no divergence).
    Status {
        #[command(flatten)]
        cluster: cluster::ClusterArgs,
    },
    /// The symbols and named assets: names, ids, tick and lot sizes, decimals, status.
    Instruments {
        #[command(flatten)]
        cluster: cluster::ClusterArgs,
    },
    /// An account's balances of every asset it holds: available and held (for open orders).
    Balances {
        /// The account (a broker's own, or any for the operator).
        #[arg(long)]
        account: u64,
        #[command(flatten)]
        cluster: cluster::ClusterArgs,
    },
    /// An account's open orders, oldest first.
    Orders {
        /// The account (a broker's own, or any for the operator).
        #[arg(long)]
        account: u64,
        #[command(flatten)]
        cluster: cluster::ClusterArgs,
    },
    /// The logged-on broker's execution reports, one line each with its RFC 3339 time: those
    /// after --since, then with --follow each new one as it happens (across failovers).
    Reports {
        /// Start after this report sequence number (0: from the first kept).
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// Keep following new reports until interrupted (or for --seconds).
        #[arg(long)]
        follow: bool,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<f64>,
        #[command(flatten)]
        cluster: cluster::ClusterArgs,
    },
    /// Send an order command to the cluster's leader and print its execution reports.
    Order {
        #[command(subcommand)]
        order: cluster::OrderCommand,
        #[command(flatten)]
        cluster: cluster::ClusterArgs,
    },
    /// Watch market data live: `watch book SYMBOL` redraws the book in place, `watch trades
    /// SYMBOL` prints each trade. Follows the leader across failovers with no gap.
    Watch {
        #[command(subcommand)]
        what: market::WatchWhat,
        #[command(flatten)]
        cluster: cluster::ClusterArgs,
    },
    /// A symbol's OHLCV candles (1 s or 1 min, from the sequenced timestamps): the kept ones,
    /// or with --follow each as it changes.
    Candles {
        #[command(flatten)]
        candles: market::CandlesArgs,
        #[command(flatten)]
        cluster: cluster::ClusterArgs,
    },
    /// Read the reporting database a node writes with --report-db: trades, orders,
    /// executions, balance changes, order events, or a summary; filters by account, symbol and
    /// time; a table, --json or --csv.
    Report(exchange::cli::report::ReportArgs),
    /// Send an administrative command (accounts, funds, symbols, limits, halts).
    Admin {
        #[command(subcommand)]
        admin: cluster::AdminArg,
        #[command(flatten)]
        cluster: cluster::ClusterArgs,
    },
}

#[derive(Subcommand)]
enum MembershipCommand {
    /// Replace a dead (or any) voter by a new node: the new node is added as a learner, catches
    /// up (from a snapshot when the log behind it was purged), then becomes a voter in the old
    /// one's place. Start the new node first, with --id NEW and the peers list.
    Replace {
        /// The voter to remove.
        #[arg(long)]
        old: u64,
        /// The new node's id.
        #[arg(long)]
        new: u64,
        /// The new node's Raft address.
        #[arg(long)]
        raft: String,
        /// The new node's broker address.
        #[arg(long)]
        broker: String,
    },
    /// Add a node as a learner and wait until it has caught up.
    AddLearner {
        /// The new node's id.
        #[arg(long)]
        id: u64,
        /// The new node's Raft address (ip:port).
        #[arg(long)]
        raft: String,
        /// The new node's broker address (ip:port).
        #[arg(long)]
        broker: String,
    },
    /// Make exactly these nodes the voters (comma separated).
    SetVoters {
        /// Every voter's id: learners named are promoted, voters not named are removed.
        #[arg(long, value_delimiter = ',')]
        voters: Vec<u64>,
    },
}

fn main() -> ExitCode {
    // Writing into a closed pipe (`exchange-cli ... | head`) ends the program quietly, as for
    // any Unix tool, instead of failing every later print.
    // SAFETY: called first thing, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result: Result<(), CliError> = match cli.command {
        Commands::EngineReplay {
            file,
            json,
            tick_size,
            lot_size,
            events,
        } => engine_replay(file, json, tick_size, lot_size, events).map_err(CliError::from),
        Commands::EngineBench {
            json,
            seed,
            commands,
            resting,
            write_csv,
        } => {
            let config = workload::WorkloadConfig {
                seed,
                commands,
                resting,
                ..workload::WorkloadConfig::default()
            };
            engine_bench(config, json, write_csv).map_err(CliError::from)
        }
        Commands::LobsterCheck {
            messages,
            orderbook,
            levels,
            json,
        } => lobster_check(messages, orderbook, levels, json).map_err(CliError::from),
        Commands::Status { cluster } => on_runtime(|rt| rt.block_on(status(cluster))),
        Commands::Cluster { change, cluster } => {
            on_runtime(|rt| rt.block_on(membership(cluster, change)))
        }
        Commands::Bench {
            sessions,
            rate,
            duration,
            orders_per_request,
            cross_pct,
            cancel_pct,
            symbol,
            first_account,
            first_broker,
            floor_dir,
            md_subscribers,
            md_node,
            md_stalled,
            ws_subscribers,
            ws_url,
            subscribers_nice,
            pipeline,
            cluster,
        } => {
            let per_request = orders_per_request.unwrap_or(if rate == 0 { 1 } else { 512 });
            let config = exchange::cli::cluster_bench::BenchConfig {
                sessions: sessions.clamp(1, exchange_engine::BROKERS_MAX as u64 - 10),
                duration: std::time::Duration::from_secs_f64(duration.max(0.1)),
                rate,
                symbol,
                first_account,
                first_broker: first_broker.max(1),
                orders_per_request: per_request
                    .clamp(1, exchange::gateway::protocol::SUBMIT_BATCH_COMMANDS_MAX),
                cross_pct,
                cancel_pct,
                floor_dir,
                md_subscribers,
                md_node,
                md_stalled,
                ws_subscribers,
                ws_url,
                subscribers_nice,
                pipeline,
            };
            multi_thread_runtime()
                .and_then(|rt| rt.block_on(cluster_bench(cluster, config)))
                .map_err(CliError::from)
        }
        Commands::FixBench {
            fix,
            comp_id,
            fix_key,
            account,
            rate,
            duration,
            cross_pct,
            symbol,
            cluster,
        } => {
            let config = exchange::cli::fix_bench::FixBenchConfig {
                fix,
                comp_id,
                key: fix_key,
                account,
                symbol,
                rate: rate.max(1),
                duration: std::time::Duration::from_secs_f64(duration.max(0.1)),
                cross_pct,
            };
            multi_thread_runtime()
                .and_then(|rt| rt.block_on(fix_bench(cluster, config)))
                .map_err(CliError::from)
        }
        Commands::Order {
            order: cluster::OrderCommand::Status { order_id },
            cluster,
        } => on_runtime(|rt| rt.block_on(order_status(cluster, order_id))),
        Commands::Order { order, cluster } => {
            on_runtime(|rt| rt.block_on(order_command(cluster, order)))
        }
        Commands::Instruments { cluster } => on_runtime(|rt| rt.block_on(instruments(cluster))),
        Commands::Balances { account, cluster } => {
            on_runtime(|rt| rt.block_on(balances(cluster, account)))
        }
        Commands::Orders { account, cluster } => {
            on_runtime(|rt| rt.block_on(open_orders(cluster, account)))
        }
        Commands::Reports {
            since,
            follow,
            seconds,
            cluster,
        } => on_runtime(|rt| rt.block_on(reports(cluster, since, follow, seconds))),
        Commands::Watch { what, cluster } => on_runtime(|rt| {
            rt.block_on(market::watch(&cluster, &what))
                .map_err(CliError::from)
        }),
        Commands::Candles { candles, cluster } => on_runtime(|rt| {
            rt.block_on(market::candles(&cluster, &candles))
                .map_err(CliError::from)
        }),
        Commands::Report(args) => {
            exchange::cli::report::run(&args, &mut std::io::stdout().lock()).map_err(CliError::from)
        }
        Commands::Admin { admin, cluster } => {
            on_runtime(|rt| rt.block_on(admin_command(cluster, admin)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("exchange-cli: {error}");
            error.exit_code()
        }
    }
}

fn engine_replay(
    file: PathBuf,
    json: bool,
    tick_size: i64,
    lot_size: i64,
    events: Option<PathBuf>,
) -> Result<(), String> {
    if tick_size <= 0 || lot_size <= 0 {
        return Err("--tick-size and --lot-size must be positive".into());
    }
    let rows = replay::read_rows(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let prepared = replay::prepare(
        &rows,
        replay::ReplayConfig {
            tick_size,
            lot_size,
        },
    );
    let mut outputs = events.as_ref().map(|_| Vec::new());
    let report = replay::run(&prepared, outputs.as_mut()).map_err(|e| e.to_string())?;
    if let (Some(path), Some(outputs)) = (events, outputs) {
        let file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut writer = std::io::BufWriter::new(file);
        for output in &outputs {
            serde_json::to_writer(&mut writer, output).map_err(|e| e.to_string())?;
            writer.write_all(b"\n").map_err(|e| e.to_string())?;
        }
        writer
            .flush()
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        let price = |p: Option<i64>| p.map_or("-".to_string(), |p| p.to_string());
        println!("commands          {}", report.commands);
        println!("accepted          {}", report.accepted);
        println!("rejected          {}", report.rejected);
        println!("cancelled         {}", report.cancelled);
        println!("trades            {}", report.trades);
        println!("volume            {}", report.volume);
        println!("notional          {}", report.notional);
        println!(
            "best bid / ask    {} / {}",
            price(report.best_bid),
            price(report.best_ask)
        );
        println!("open orders       {}", report.open_orders);
        println!("output hash       {}", report.output_hash);
        for (reason, count) in &report.rejects_by_reason {
            println!("  rejected {reason:<24} {count}");
        }
        println!(
            "engine            {:.1} ms, {:.2} M commands/s",
            report.elapsed_ms,
            report.commands_per_sec / 1e6
        );
    }
    Ok(())
}

fn engine_bench(
    config: workload::WorkloadConfig,
    json: bool,
    write_csv: Option<PathBuf>,
) -> Result<(), String> {
    if let Some(path) = write_csv {
        let rows = workload::generate(&config);
        let file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        workload::write_csv(&rows, std::io::BufWriter::new(file))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {} rows to {}", rows.len(), path.display());
        return Ok(());
    }
    if config.commands == 0 {
        return Err("--commands must be positive".into());
    }
    if !json {
        eprintln!(
            "benchmarking {} commands (seed {})...",
            config.commands, config.seed
        );
    }
    let report = bench::run(&config);
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        println!("commands          {}", report.commands);
        println!(
            "throughput        {:.2} M commands/s",
            report.commands_per_sec / 1e6
        );
        println!(
            "latency (ns)      p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            report.p50_ns, report.p90_ns, report.p99_ns, report.p999_ns, report.max_ns
        );
        println!("output hash       {}", report.output_hash);
    }
    Ok(())
}

fn lobster_check(
    messages: PathBuf,
    orderbook: PathBuf,
    levels: usize,
    json: bool,
) -> Result<(), String> {
    if levels == 0 {
        return Err("--levels must be positive".into());
    }
    let report = lobster::check(&messages, &orderbook, levels).map_err(|e| e.to_string())?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        println!("rows                      {}", report.rows);
        println!("matched exactly           {}", report.rows_matched);
        println!(
            "matched after reveal      {}",
            report.rows_matched_after_reveal
        );
        println!("real mismatches           {}", report.rows_mismatched);
        println!(
            "events                    {} new, {} partial cancels, {} deletions, {} executions, {} hidden, {} halts",
            report.submissions,
            report.partial_cancels,
            report.deletions,
            report.executions,
            report.hidden_executions_ignored,
            report.halts
        );
        println!("executions not first      {}", report.executions_not_first);
        println!(
            "events on unseen orders   {}",
            report.events_on_unseen_orders
        );
        println!("levels reconciled         {}", report.reveals);
        println!("cancels reattributed      {}", report.cancels_reattributed);
        println!("engine rejects            {}", report.engine_rejects);
        for mismatch in &report.first_mismatches {
            println!("  {mismatch}");
        }
    }
    if report.rows_mismatched > 0 {
        return Err(format!(
            "{} rows differ from the LOBSTER book",
            report.rows_mismatched
        ));
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// Runs `f` on a fresh single-threaded runtime.
fn on_runtime(
    f: impl FnOnce(tokio::runtime::Runtime) -> Result<(), CliError>,
) -> Result<(), CliError> {
    f(runtime()?)
}

/// Every node's view. Exits 3 when no node answers or none is leader, 5 when a node reports
/// a divergence.
async fn status(args: cluster::ClusterArgs) -> Result<(), CliError> {
    let client = args.client()?;
    let mut rows = Vec::new();
    for addr in &args.nodes {
        match client.status_of(*addr).await {
            Ok(status) => {
                rows.push(serde_json::json!({ "node": addr.to_string(), "status": status }))
            }
            Err(e) => {
                // The node's own trouble, without the cluster-wide "unavailable" prefix.
                let why = match e {
                    exchange::gateway::client::ClientError::Unavailable(why) => why,
                    other => other.to_string(),
                };
                rows.push(serde_json::json!({ "node": addr.to_string(), "error": why }))
            }
        }
    }
    let health = health(&rows);
    if args.json {
        println!("{}", serde_json::Value::Array(rows));
        return health;
    }
    println!(
        "{:<18} {:>3} {:<10} {:>5} {:>6} {:>9} {:>9} {:>9}  output hash",
        "node", "id", "role", "term", "leader", "last log", "commit", "applied"
    );
    let development = rows
        .iter()
        .any(|row| row["status"]["development"].as_bool() == Some(true));
    for row in rows {
        let node = row["node"].as_str().unwrap_or("?");
        match serde_json::from_value::<exchange::gateway::protocol::NodeStatus>(
            row["status"].clone(),
        ) {
            Ok(s) => println!(
                "{:<18} {:>3} {:<10} {:>5} {:>6} {:>9} {:>9} {:>9}  {}",
                node,
                s.id,
                s.role,
                s.term,
                s.leader.map_or("-".into(), |l| l.to_string()),
                s.last_log_index.map_or("-".into(), |i| i.to_string()),
                s.commit_index,
                s.applied_index,
                match &s.divergence {
                    None => s.output_hash.clone(),
                    Some(d) => format!("{}  DIVERGED: {d}", s.output_hash),
                }
            ),
            Err(_) => println!(
                "{:<18} unreachable: {}",
                node,
                row["error"].as_str().unwrap_or("?")
            ),
        }
    }
    if development {
        println!(
            "a development cluster (--dev): it accepts the public keys of cluster/brokers.toml"
        );
    }
    health
}

/// What `status` rows say of the cluster as a whole.
fn health(rows: &[serde_json::Value]) -> Result<(), CliError> {
    let statuses: Vec<exchange::gateway::protocol::NodeStatus> = rows
        .iter()
        .filter_map(|row| serde_json::from_value(row["status"].clone()).ok())
        .collect();
    if let Some(diverged) = statuses.iter().find(|s| s.divergence.is_some()) {
        return Err(CliError::Unhealthy(format!(
            "node {} reports a divergence: {}",
            diverged.id,
            diverged.divergence.as_deref().unwrap_or_default()
        )));
    }
    if statuses.is_empty() {
        return Err(CliError::Unavailable("no node answered".into()));
    }
    if !statuses.iter().any(|s| s.role == "leader") {
        return Err(CliError::Unavailable(format!(
            "{} of {} nodes answered, and none is the leader",
            statuses.len(),
            rows.len()
        )));
    }
    Ok(())
}

/// Sends one command (`what` names its kind, for the error without a logon); exits 1 when the
/// exchange refused it.
/// A logged-on client and the cluster's names, for commands that need both.
async fn logged_on(args: &cluster::ClusterArgs, what: &str) -> Result<(Client, Catalog), CliError> {
    let key = args.required_key(what)?;
    let mut client = args.client_with_key(&key)?;
    let catalog = catalog::fetch(&mut client).await?;
    Ok((client, catalog))
}

async fn order_command(
    args: cluster::ClusterArgs,
    order: cluster::OrderCommand,
) -> Result<(), CliError> {
    if let cluster::OrderCommand::Status { order_id } = order {
        return order_status(args, order_id).await;
    }
    let (mut client, catalog) = logged_on(&args, "orders").await?;
    let replaced_symbol = match order.replaced_order() {
        Some(order_id) => client.order_status(order_id).await?.map(|o| o.symbol),
        None => None,
    };
    let command = cluster::order_command(&order, &catalog, replaced_symbol)?;
    let outputs = client.submit(command).await?;
    cluster::print_outputs(&outputs, args.json, &catalog)?;
    refusal(&outputs)
}

async fn admin_command(
    args: cluster::ClusterArgs,
    admin: cluster::AdminArg,
) -> Result<(), CliError> {
    let (mut client, catalog) = logged_on(&args, "admin commands").await?;
    let mut outputs = Vec::new();
    match cluster::admin_request(&admin, &catalog)? {
        cluster::AdminRequest::SetBrokerKey { broker, key } => {
            outputs = client.set_broker_key(broker, &key).await?;
        }
        cluster::AdminRequest::Commands(commands) if commands.len() == 1 => {
            outputs = client.submit(commands[0]).await?;
        }
        cluster::AdminRequest::Commands(commands) => {
            for answer in client.submit_batch(commands).await? {
                outputs.extend(answer?);
            }
        }
    }
    // Describe what was just added with the names it brought.
    let catalog = if outputs.iter().any(|o| {
        matches!(
            o.event,
            exchange::domain::Event::SymbolAdded { .. }
                | exchange::domain::Event::AssetAdded { .. }
        )
    }) {
        catalog::fetch(&mut client).await.unwrap_or(catalog)
    } else {
        catalog
    };
    cluster::print_outputs(&outputs, args.json, &catalog)?;
    refusal(&outputs)
}

/// Exit 1 when the exchange refused the command.
fn refusal(outputs: &[exchange::domain::Output]) -> Result<(), CliError> {
    match outputs.iter().find_map(|o| o.event.reject_reason()) {
        Some(reason) => Err(CliError::Refused(format!(
            "refused: {}",
            exchange::cli::catalog::reason_text(reason)
        ))),
        None => Ok(()),
    }
}

async fn order_status(args: cluster::ClusterArgs, order_id: u64) -> Result<(), CliError> {
    let (mut client, catalog) = logged_on(&args, "order status").await?;
    let open = client.order_status(order_id).await?;
    if args.json {
        let json = serde_json::json!({ "order_id": order_id, "open": open });
        println!("{json}");
    } else {
        match open {
            Some(o) => println!(
                "OPEN ord {order_id} account {} {} {} {} @ {} leaves {}",
                o.account,
                side_name(o.side),
                catalog.qty(o.symbol, o.leaves_qty),
                catalog.symbol_name(o.symbol),
                catalog.price(o.symbol, o.price),
                catalog.qty(o.symbol, o.leaves_qty)
            ),
            None => println!("NOT OPEN ord {order_id} (filled, cancelled, or not yours)"),
        }
    }
    Ok(())
}

fn side_name(side: exchange::domain::Side) -> &'static str {
    match side {
        exchange::domain::Side::Buy => "buy",
        exchange::domain::Side::Sell => "sell",
    }
}

async fn instruments(args: cluster::ClusterArgs) -> Result<(), CliError> {
    let (_, catalog) = logged_on(&args, "instruments").await?;
    if args.json {
        let json = serde_json::json!({ "symbols": catalog.symbols, "assets": catalog.assets });
        println!("{json}");
        return Ok(());
    }
    println!(
        "{:<16} {:>6} {:<12} {:<12} {:>10} {:>8} {:>8}  status",
        "symbol", "id", "base", "quote", "tick", "lot", "band bps"
    );
    for s in &catalog.symbols {
        println!(
            "{:<16} {:>6} {:<12} {:<12} {:>10} {:>8} {:>8}  {}",
            s.name,
            s.symbol,
            catalog.asset_name(s.base),
            catalog.asset_name(s.quote),
            catalog.price(s.symbol, s.tick_size),
            catalog.qty(s.symbol, s.lot_size),
            s.price_band_bps,
            if s.halted { "halted" } else { "trading" }
        );
    }
    if !catalog.assets.is_empty() {
        println!();
        println!("{:<16} {:>6} {:>8}", "asset", "id", "decimals");
        for a in &catalog.assets {
            println!("{:<16} {:>6} {:>8}", a.name, a.asset, a.decimals);
        }
    }
    Ok(())
}

async fn balances(args: cluster::ClusterArgs, account: u64) -> Result<(), CliError> {
    let (mut client, catalog) = logged_on(&args, "balances").await?;
    let balances = client.balances(account, Vec::new()).await?;
    if args.json {
        let rows: Vec<_> = balances
            .iter()
            .map(|&(asset, available, held)| {
                serde_json::json!({ "asset": asset, "name": catalog.asset(asset).map(|a| &a.name),
                    "available": available, "held": held })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "account": account, "balances": rows })
        );
        return Ok(());
    }
    if balances.is_empty() {
        println!("account {account}: no balances (unknown, empty, or not yours)");
        return Ok(());
    }
    println!("{:<16} {:>20} {:>20}", "asset", "available", "held");
    for (asset, available, held) in balances {
        println!(
            "{:<16} {:>20} {:>20}",
            catalog.asset_name(asset),
            catalog.amount(asset, available),
            catalog.amount(asset, held)
        );
    }
    Ok(())
}

async fn open_orders(args: cluster::ClusterArgs, account: u64) -> Result<(), CliError> {
    let (mut client, catalog) = logged_on(&args, "orders").await?;
    let orders = client.open_orders(account).await?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "account": account, "orders": orders })
        );
        return Ok(());
    }
    if orders.is_empty() {
        println!("account {account}: no open orders (or not yours)");
        return Ok(());
    }
    for o in orders {
        println!(
            "OPEN ord {} clord {} {} {} {} @ {}",
            o.order_id,
            o.client_order_id,
            side_name(o.side),
            catalog.qty(o.symbol, o.leaves_qty),
            catalog.symbol_name(o.symbol),
            catalog.price(o.symbol, o.price)
        );
    }
    Ok(())
}

async fn reports(
    args: cluster::ClusterArgs,
    since: u64,
    follow: bool,
    seconds: Option<f64>,
) -> Result<(), CliError> {
    let (client, mut catalog) = logged_on(&args, "reports").await?;
    let mut feed = client.into_report_feed(since);
    let deadline =
        seconds.map(|s| std::time::Instant::now() + std::time::Duration::from_secs_f64(s.max(0.0)));
    let mut quiet_rounds = 0;
    loop {
        let batch = feed.next(std::time::Duration::from_millis(500)).await?;
        if batch.is_empty() {
            quiet_rounds += 1;
        }
        for output in &batch {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string(output).map_err(|e| e.to_string())?
                );
            } else {
                if matches!(output.event, exchange::domain::Event::SymbolAdded { .. }) {
                    catalog = logged_on(&args, "reports")
                        .await
                        .map(|(_, c)| c)
                        .unwrap_or(catalog);
                }
                println!(
                    "{} seq {} {}",
                    exchange::cli::catalog::rfc3339(output.timestamp_ns),
                    output.seq,
                    catalog.describe(output)
                );
            }
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Ok(());
        }
        // Without --follow: what is there now, then stop once the feed goes quiet.
        if !follow && deadline.is_none() && batch.is_empty() && quiet_rounds >= 1 {
            return Ok(());
        }
    }
}

fn multi_thread_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

async fn fix_bench(
    args: cluster::ClusterArgs,
    config: exchange::cli::fix_bench::FixBenchConfig,
) -> Result<(), String> {
    let report = exchange::cli::fix_bench::run(&args, &config).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!("FIX session       1 ({} orders/s target)", report.rate);
    println!("duration          {:.1} s", report.duration_s);
    println!(
        "sent / answered   {} / {} ({} rejected, {} unanswered)",
        report.sent, report.acked, report.rejected, report.unanswered
    );
    println!(
        "throughput        {:.0} orders/s",
        report.throughput_per_sec
    );
    let p = &report.ack;
    println!(
        "order to ack      p50 {} us, p90 {} us, p99 {} us, p99.9 {} us, max {} us",
        p.p50_us, p.p90_us, p.p99_us, p.p999_us, p.max_us
    );
    let p = &report.send_lag;
    println!(
        "send lag          p50 {} us, p99 {} us, max {} us",
        p.p50_us, p.p99_us, p.max_us
    );
    Ok(())
}

async fn cluster_bench(
    args: cluster::ClusterArgs,
    config: exchange::cli::cluster_bench::BenchConfig,
) -> Result<(), String> {
    let report = exchange::cli::cluster_bench::run(&args, &config, !args.json).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        let rate = match report.rate {
            0 => "closed loop".to_string(),
            rate => format!("{rate} orders/s target"),
        };
        println!("sessions          {} ({rate})", report.sessions);
        println!("duration          {:.1} s", report.duration_s);
        println!("sent / answered   {} / {}", report.sent, report.acked);
        println!("rejected, failed  {}, {}", report.rejected, report.failed);
        if let Some(why) = &report.first_failure {
            let f = report.failures;
            println!(
                "failures          {} unavailable, {} outcome unknown, {} refused; the first: {why}",
                f.unavailable, f.unknown, f.refused
            );
        }
        println!(
            "throughput        {:.0} orders/s",
            report.throughput_per_sec
        );
        println!();
        println!(
            "{:<22} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "latency (us)", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        let fill = &report.fill;
        let lag = &report.send_lag;
        let floor = &report.floor;
        for (name, count, p) in [
            (
                "order-to-ack",
                report.acked,
                [
                    report.p50_us,
                    report.p90_us,
                    report.p99_us,
                    report.p999_us,
                    report.max_us,
                ],
            ),
            (
                "order-to-fill",
                fill.count,
                [
                    fill.p50_us,
                    fill.p90_us,
                    fill.p99_us,
                    fill.p999_us,
                    fill.max_us,
                ],
            ),
            (
                "  of which send lag",
                lag.count,
                [lag.p50_us, lag.p90_us, lag.p99_us, lag.p999_us, lag.max_us],
            ),
            (
                "floor: QUIC rtt+fsync",
                floor.count,
                [
                    floor.p50_us,
                    floor.p90_us,
                    floor.p99_us,
                    floor.p999_us,
                    floor.max_us,
                ],
            ),
        ] {
            println!(
                "{name:<22} {count:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
                p[0], p[1], p[2], p[3], p[4]
            );
        }
        if let Some(md) = &report.market_data {
            println!();
            println!(
                "market data       {} subscribers (book + trades), {} over WebSocket, {} stalled",
                md.subscribers, md.ws_subscribers, md.stalled
            );
            println!(
                "subscribers' CPU  {:.1} s on this host ({:.0}% of a core over the run)",
                md.subscribers_cpu_s,
                md.subscribers_cpu_share * 100.0
            );
            println!(
                "received          {} messages, {:.0}/s, {:.0} updates/s",
                md.messages, md.messages_per_sec, md.updates_per_sec
            );
            println!(
                "gaps, resyncs     {}, {}   stalled then recovered by a snapshot: {}",
                md.gaps, md.resyncs, md.stalled_recovered
            );
        }
    }
    Ok(())
}

async fn membership(args: cluster::ClusterArgs, change: MembershipCommand) -> Result<(), CliError> {
    use exchange::gateway::protocol::{Reply, Request};
    let key = args.required_key("membership changes")?;
    let mut client = args.client_with_key(&key)?;
    async fn ask(
        client: &mut exchange::gateway::client::Client,
        request: Request,
    ) -> Result<Reply, CliError> {
        match client.request_leader(&request).await? {
            Reply::Error(why) => Err(CliError::Refused(why)),
            reply => Ok(reply),
        }
    }
    let reply = match change {
        MembershipCommand::AddLearner { id, raft, broker } => {
            ask(&mut client, Request::AddLearner { id, raft, broker }).await?
        }
        MembershipCommand::SetVoters { voters } => {
            ask(&mut client, Request::SetVoters { voters }).await?
        }
        MembershipCommand::Replace {
            old,
            new,
            raft,
            broker,
        } => {
            let Reply::Membership { voters, .. } = ask(
                &mut client,
                Request::AddLearner {
                    id: new,
                    raft,
                    broker,
                },
            )
            .await?
            else {
                return Err(CliError::Refused(
                    "unexpected reply to adding the learner".into(),
                ));
            };
            eprintln!("node {new} has caught up as a learner");
            let voters: Vec<u64> = voters
                .into_iter()
                .filter(|v| *v != old)
                .chain([new])
                .collect();
            ask(&mut client, Request::SetVoters { voters }).await?
        }
    };
    match reply {
        Reply::Membership { voters, learners } => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "voters": voters, "learners": learners })
                );
            } else {
                println!("voters {voters:?}, learners {learners:?}");
            }
            Ok(())
        }
        other => Err(CliError::Refused(format!("unexpected reply {other:?}"))),
    }
}
