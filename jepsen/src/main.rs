//! `exchange-chaos`: the exchange's chaos suite. It makes test hosts (network namespaces, or
//! loopback processes where they cannot be made), starts a cluster, runs brokers and an
//! operator against it while a nemesis injects faults, records every operation, then heals
//! everything and checks the history and the final state: nothing acknowledged lost, nothing
//! twice, both sides of every trade, replicas identical, sequences without gaps. It writes
//! `history.jsonl`, `report.json` and `timeline.svg` and exits non-zero if a check fails.

mod checker;
mod hosts;
mod linearizable;
mod report;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use exchange::gateway::client::Client;
use exchange::marketdata::feed::{Channel, BOOK_LEVELS};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use checker::FinalState;
use hosts::{Hosts, Placement};
use report::FaultRecord;
use workload::History;

/// How long the final state's reads, all together, are asked again while the cluster has no
/// leader (a planted crash can take one down as they are made).
const FINAL_READ_RETRY_FOR: Duration = Duration::from_secs(30);

/// One read of the final state, asked again while the cluster is unavailable (the others elect
/// a new leader) until `give_up`: one deadline for all of them, so a cluster left without a
/// leader costs the run `FINAL_READ_RETRY_FOR` once, not once per account.
async fn read_final<T>(
    probe: &mut Client,
    give_up: Instant,
    mut read: impl AsyncFnMut(&mut Client) -> Result<T, exchange::gateway::client::ClientError>,
) -> Result<T, exchange::gateway::client::ClientError> {
    loop {
        match read(probe).await {
            Err(exchange::gateway::client::ClientError::Unavailable(_))
                if Instant::now() < give_up =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// The faults the nemesis injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum FaultKind {
    /// SIGKILL a random node, restart it after the hold.
    Kill,
    /// SIGKILL the leader, restart it after the hold.
    KillLeader,
    /// SIGSTOP the leader for the hold, then SIGCONT (the stale-leader test).
    PauseLeader,
    /// Cut the leader off from the other nodes.
    IsolateLeader,
    /// Split the nodes into a minority and a majority at random.
    Halves,
    /// Majorities ring: every node sees a majority, no two the same one (with 3 nodes: one
    /// link cut, so one node bridges the other two).
    Ring,
    /// Drop 20% of the packets between nodes.
    Loss,
    /// Move the leader's wall clock an hour forward or back (libfaketime).
    Clock,
    /// SIGKILL a node, tear the tail of its log (an unfinished record), restart it.
    TornLog,
    /// Replace a node: SIGKILL it (the machine is lost), start a new node on an empty spare
    /// host, add it as a learner, make it a voter in the lost node's place.
    Membership,
}

impl FaultKind {
    fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }

    fn needs_network(self) -> bool {
        matches!(
            self,
            FaultKind::IsolateLeader | FaultKind::Halves | FaultKind::Ring | FaultKind::Loss
        )
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "exchange-chaos",
    about = "The chaos suite: faults against a live cluster, a recorded history, checkers, a report"
)]
struct Args {
    /// Nodes in the cluster (3 or 5).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=5))]
    nodes: u64,
    /// Faults to inject in all, taking the kinds in turn.
    #[arg(long, default_value_t = 12)]
    faults: usize,
    /// The kinds to inject [default: all this machine allows].
    #[arg(long, value_enum, value_delimiter = ',')]
    kinds: Vec<FaultKind>,
    /// Pick each fault's kind at random (from the seed) instead of taking the kinds in turn.
    #[arg(long)]
    random_order: bool,
    /// How long each fault lasts, in milliseconds.
    #[arg(long, default_value_t = 1_500)]
    hold_ms: u64,
    /// Quiet time between two faults, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    quiet_ms: u64,
    /// Seed of the nemesis's and the clients' choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the history, report and picture go (and the nodes' data and logs).
    #[arg(long, default_value = "target/chaos")]
    out: PathBuf,
    /// The exchange-node binary to run.
    #[arg(long, default_value = "target/release/exchange-node")]
    node_bin: PathBuf,
    /// Run the nodes as loopback processes even where namespaces can be made.
    #[arg(long)]
    loopback: bool,
    /// First port of the loopback placement (Raft on +id, brokers on +100+id).
    #[arg(long, default_value_t = 29_000)]
    base_port: u16,
    /// An extra flag for one node, as ID:FLAG (repeatable): a planted fault from a
    /// `test-faults` build, for instance `2:--fault-diverge-at=200`.
    #[arg(long, value_name = "ID:FLAG")]
    node_flag: Vec<String>,
    /// Print the report as one JSON line (faults, lost, duplicates, divergences,
    /// rto_ms_median, rto_ms_max, ...).
    #[arg(long)]
    json: bool,
    /// A fault kind this run may leave out when the machine cannot inject it (no nftables,
    /// no namespaces, no libfaketime); the report says so. Without it, a requested kind that
    /// cannot be injected fails the run.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "KIND")]
    allow_missing: Vec<FaultKind>,
    /// The longest clients may wait after any fault for an acknowledged order, in ms; a fault
    /// that costs more fails the run.
    #[arg(long, default_value_t = 1_000.0)]
    rto_max_ms: f64,
    /// Acknowledged operations per second of the run the checks need at least (an idle run
    /// proves nothing).
    #[arg(long, default_value_t = 100.0)]
    min_acknowledged_per_s: f64,
    /// Ledger operations per second of the run the linearizability check needs at least.
    #[arg(long, default_value_t = 20.0)]
    min_ledger_ops_per_s: f64,
    /// Share of the ledger operations the linearizability search may leave unsettled.
    #[arg(long, default_value_t = 0.05)]
    inconclusive_share_max: f64,
    /// States the linearizability search may visit per ledger account before it leaves the
    /// account unsettled.
    #[arg(long, default_value_t = checker::SEARCH_VISITS_MAX)]
    search_visits_max: u64,
}

/// The file that marks a directory as exchange-chaos output: it lists what a run created
/// there, the only things a later run with the same `--out` removes.
const OUT_MARKER: &str = ".exchange-chaos";

/// Makes `out` ready for a run without deleting anything a run did not create: a new or empty
/// directory is used as it is; one a previous run marked loses what that run listed; any
/// other refuses the run. Returns what is in it before the run.
fn prepare_out(
    out: &std::path::Path,
) -> Result<std::collections::BTreeSet<std::ffi::OsString>, String> {
    let shown = out.display();
    std::fs::create_dir_all(out).map_err(|e| format!("--out {shown}: {e}"))?;
    let entries = |out: &std::path::Path| -> Result<std::collections::BTreeSet<_>, String> {
        std::fs::read_dir(out)
            .map_err(|e| format!("--out {shown}: {e}"))?
            .map(|entry| {
                entry
                    .map(|e| e.file_name())
                    .map_err(|e| format!("--out {shown}: {e}"))
            })
            .collect()
    };
    let present = entries(out)?;
    if present.is_empty() {
        return Ok(present);
    }
    let marker = out.join(OUT_MARKER);
    let listed = std::fs::read_to_string(&marker).map_err(|_| {
        format!(
            "--out {shown} is not empty and was not made by exchange-chaos: give a new or empty directory (nothing was deleted)"
        )
    })?;
    for name in listed.lines().filter(|name| !name.is_empty()) {
        // Only plain names a run wrote at the top of the directory.
        if name.contains('/') || name == "." || name == ".." {
            continue;
        }
        let path = out.join(name);
        let removed = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(_) => Ok(()),
        };
        removed.map_err(|e| format!("{}: {e}", path.display()))?;
    }
    entries(out)
}

/// Lists in the marker what this run created in `out` (what is there now and was not before).
fn mark_out(
    out: &std::path::Path,
    before: &std::collections::BTreeSet<std::ffi::OsString>,
) -> Result<(), String> {
    let mut created = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(out).map_err(|e| format!("{}: {e}", out.display()))? {
        let name = entry.map_err(|e| e.to_string())?.file_name();
        if !before.contains(&name) && name != OUT_MARKER {
            created.insert(name);
        }
    }
    let mut listed = String::new();
    for name in created.iter().filter_map(|name| name.to_str()) {
        listed.push_str(name);
        listed.push('\n');
    }
    let marker = out.join(OUT_MARKER);
    std::fs::write(&marker, listed).map_err(|e| format!("{}: {e}", marker.display()))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("exchange-chaos: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<bool, String> {
    let node_bin = std::fs::canonicalize(&args.node_bin).map_err(|e| {
        format!(
            "{}: {e} (build it: cargo build --release)",
            args.node_bin.display()
        )
    })?;
    let before = prepare_out(&args.out)?;
    let out = std::fs::canonicalize(&args.out).map_err(|e| e.to_string())?;
    // Marked before anything is made, so that even a run that stops half-way is cleaned up by
    // the next, and marked again with everything at the end.
    std::fs::write(out.join(OUT_MARKER), "").map_err(|e| format!("{}: {e}", out.display()))?;
    let outcome = run_in(&args, &out, &node_bin);
    let marked = mark_out(&out, &before);
    let passed = outcome?;
    marked?;
    Ok(passed)
}

fn run_in(args: &Args, out: &std::path::Path, node_bin: &std::path::Path) -> Result<bool, String> {
    let mut hosts = Hosts::create(args.nodes, out, node_bin, !args.loopback, args.base_port)?;
    for spec in &args.node_flag {
        let (id, flag) = spec
            .split_once(':')
            .and_then(|(id, flag)| Some((id.parse::<u64>().ok()?, flag)))
            .ok_or_else(|| format!("--node-flag {spec}: expected ID:FLAG"))?;
        hosts.add_node_flag(id, flag.to_string());
    }
    // A kind that cannot be injected fails the run before it starts, unless allowed.
    let missing = missing_kinds(args, &hosts);
    let refused: Vec<_> = missing
        .iter()
        .filter(|(kind, _)| !args.allow_missing.contains(kind))
        .collect();
    if !refused.is_empty() {
        hosts.teardown();
        for (kind, why) in refused {
            let kind = kind.name();
            println!("NOT INJECTABLE   {kind}: {why} (--allow-missing {kind} runs without it)");
        }
        println!("FAILED   (the run would not inject every fault kind it was asked for)");
        return Ok(false);
    }
    // Every thread of the runtime below is born in the clients' namespace.
    hosts.enter_client_namespace()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = runtime.block_on(chaos(args, &mut hosts, missing));
    hosts.teardown();
    let (report, history) = result?;
    write_outputs(out, &report, &history)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        print_summary(&report, out);
    }
    Ok(report.passed)
}

fn client(hosts: &Hosts, key: &str) -> Result<Client, String> {
    let ca = exchange::net::tls::load_ca(&hosts.certs()).map_err(|e| e.to_string())?;
    Ok(Client::new(hosts.brokers(), &ca)
        .map_err(|e| e.to_string())?
        .with_api_key(key))
}

/// The node every running node names as leader, if they agree.
async fn leader(hosts: &Hosts, within: Duration) -> Option<u64> {
    leader_and_voters(hosts, within).await.map(|(id, _)| id)
}

/// The agreed leader and the voters it names.
async fn leader_and_voters(hosts: &Hosts, within: Duration) -> Option<(u64, Vec<u64>)> {
    let probe = client(hosts, workload::ADMIN_KEY).ok()?;
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let mut named = Vec::new();
        for id in hosts.ids().filter(|id| hosts.is_running(*id)) {
            if let Ok(status) = probe.status_of(hosts.broker_addr(id)).await {
                if status.role == "leader" {
                    named.push((status.id, status.voters));
                }
            }
        }
        if named.len() == 1 {
            return named.pop();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Every node's (applied index, hash, divergence) once all agree, or what they say at the
/// deadline.
async fn converged(
    hosts: &Hosts,
    within: Duration,
) -> BTreeMap<u64, (u64, String, Option<String>)> {
    let deadline = Instant::now() + within;
    let Ok(probe) = client(hosts, workload::ADMIN_KEY) else {
        return BTreeMap::new();
    };
    loop {
        let mut nodes = BTreeMap::new();
        for id in hosts.ids() {
            if let Ok(status) = probe.status_of(hosts.broker_addr(id)).await {
                nodes.insert(
                    id,
                    (status.applied_index, status.output_hash, status.divergence),
                );
            }
        }
        // All at the same index: equal hashes there, or a divergence for the checker to see.
        let agreed = nodes.len() as u64 == hosts.ids().count() as u64
            && nodes
                .values()
                .map(|n| n.0)
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                == 1;
        if agreed || Instant::now() > deadline {
            return nodes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (at most `within`) until every node has applied what was committed when it began:
/// the clients keep going meanwhile, so equal indexes are not to be expected.
async fn caught_up(hosts: &Hosts, within: Duration) {
    let Ok(probe) = client(hosts, workload::ADMIN_KEY) else {
        return;
    };
    let deadline = Instant::now() + within;
    let mut target = None;
    while Instant::now() < deadline {
        let mut applied = Vec::new();
        let mut committed = 0;
        for id in hosts.ids() {
            match probe.status_of(hosts.broker_addr(id)).await {
                Ok(status) => {
                    applied.push(status.applied_index);
                    committed = committed.max(status.commit_index);
                }
                Err(_) => applied.push(0),
            }
        }
        let target = *target.get_or_insert(committed);
        if applied.iter().all(|a| *a >= target) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The fault kinds the run was asked for.
fn requested_kinds(args: &Args) -> Vec<FaultKind> {
    if args.kinds.is_empty() {
        FaultKind::value_variants().to_vec()
    } else {
        args.kinds.clone()
    }
}

/// The requested kinds these hosts cannot inject, and why.
fn missing_kinds(args: &Args, hosts: &Hosts) -> Vec<(FaultKind, String)> {
    let mut missing = Vec::new();
    for kind in requested_kinds(args) {
        if kind.needs_network() && !hosts.can_partition {
            let why = match hosts.placement {
                Placement::Loopback => "no network namespaces here (loopback placement)",
                Placement::Namespaces => "nftables (nft) is not installed",
            };
            missing.push((kind, why.to_string()));
        }
        if kind == FaultKind::Clock && !hosts.can_move_clocks() {
            missing.push((
                kind,
                "libfaketime is not installed (apt-get install faketime)".into(),
            ));
        }
    }
    missing
}

async fn chaos(
    args: &Args,
    hosts: &mut Hosts,
    missing: Vec<(FaultKind, String)>,
) -> Result<(report::Report, Vec<workload::Op>), String> {
    for id in hosts.ids().collect::<Vec<_>>() {
        hosts.start(id)?;
    }
    leader(hosts, Duration::from_secs(20))
        .await
        .ok_or("no leader elected within 20 s (see the node logs)")?;
    let mut admin = client(hosts, workload::ADMIN_KEY)?;
    workload::setup(&mut admin).await?;

    let started = Instant::now();
    let history = History::new(started);
    let stop = Arc::new(AtomicBool::new(false));
    let md_stop_reports = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for (n, broker) in workload::brokers().into_iter().enumerate() {
        clients.push(tokio::spawn(workload::broker(
            n as u32 + 1,
            client(hosts, &broker.key)?,
            broker.accounts,
            history.clone(),
            Arc::clone(&stop),
        )));
    }
    clients.push(tokio::spawn(workload::treasurer(
        100,
        client(hosts, workload::ADMIN_KEY)?,
        history.clone(),
        Arc::clone(&stop),
    )));
    for index in 0..workload::LEDGER_CLERKS {
        clients.push(tokio::spawn(workload::ledger_clerk(
            index,
            client(hosts, workload::ADMIN_KEY)?,
            history.clone(),
            Arc::clone(&stop),
        )));
    }
    // Every broker's reports, read throughout the run (a node keeps only the recent ones):
    // the final state the checkers compare the history with.
    let mut report_readers = Vec::new();
    for broker in workload::desks() {
        let mut feed = client(hosts, &broker.key)?.into_report_feed(0);
        let stop = Arc::clone(&md_stop_reports);
        report_readers.push(tokio::spawn(async move {
            let mut all = Vec::new();
            let mut quiet_since = Instant::now();
            loop {
                match feed.next(Duration::from_millis(200)).await {
                    Ok(batch) if !batch.is_empty() => {
                        quiet_since = Instant::now();
                        all.extend(batch);
                    }
                    Ok(_) => {}
                    // Fell behind what the nodes keep: the run cannot be checked.
                    Err(exchange::gateway::client::ClientError::Rejected(why)) => {
                        return Err(format!("broker {}'s reports: {why}", broker.id));
                    }
                    // No leader for the moment: the feed resumes on the next call.
                    Err(_) => {}
                }
                if stop.load(Ordering::Relaxed) && quiet_since.elapsed() > Duration::from_secs(1) {
                    return Ok((broker.id, all));
                }
            }
        }));
    }
    // A market data subscriber throughout: its stream must have no gap.
    let md_gaps = Arc::new(AtomicU64::new(0));
    let md_stop = Arc::new(AtomicBool::new(false));
    let md_task = {
        let mut feed =
            client(hosts, workload::ADMIN_KEY)?.into_market_feed(workload::SYMBOL.0, Channel::Book);
        let (gaps, stop) = (Arc::clone(&md_gaps), Arc::clone(&md_stop));
        tokio::spawn(async move {
            let mut quiet_since = Instant::now();
            loop {
                if let Ok(batch) = feed.next(Duration::from_millis(200)).await {
                    if !batch.is_empty() {
                        quiet_since = Instant::now();
                    }
                }
                gaps.store(feed.gaps(), Ordering::Relaxed);
                if stop.load(Ordering::Relaxed) && quiet_since.elapsed() > Duration::from_secs(1) {
                    return feed;
                }
            }
        })
    };

    let mut kinds = requested_kinds(args);
    kinds.retain(|kind| missing.iter().all(|(gone, _)| gone != kind));
    let not_injected: Vec<String> = missing
        .iter()
        .map(|(kind, why)| {
            let allowed = if args.allow_missing.contains(kind) {
                "allowed by --allow-missing"
            } else {
                "fails the run"
            };
            format!("{}: {why} ({allowed})", kind.name())
        })
        .collect();
    let mut skipped: Vec<String> = Vec::new();
    let mut rng = SmallRng::seed_from_u64(args.seed);
    let mut faults = Vec::new();
    let mut crashes: Vec<String> = Vec::new();
    let hold = Duration::from_millis(args.hold_ms);
    for n in 0..args.faults {
        if kinds.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(args.quiet_ms)).await;
        // A node that exited by itself crashed: note it, and bring it back.
        for (id, why) in hosts.reap_exited() {
            crashes.push(format!(
                "node {id} exited by itself at {:.1} s ({why})",
                history.now_ns() as f64 / 1e9
            ));
            hosts.start(id)?;
        }
        // One fault at a time: the next waits until every node has caught up with the last.
        caught_up(hosts, Duration::from_secs(10)).await;
        let kind = if args.random_order {
            kinds[rng.gen_range(0..kinds.len())]
        } else {
            kinds[n % kinds.len()]
        };
        let (current, voters) = match leader_and_voters(hosts, Duration::from_secs(10)).await {
            Some((id, voters)) => (Some(id), voters),
            None => (None, Vec::new()),
        };
        let all: Vec<u64> = hosts.ids().collect();
        // Inject, then note the time: the fault counts from when it is in force.
        let mut detail = String::new();
        let targets = match kind {
            FaultKind::Kill => {
                let victim = all[rng.gen_range(0..all.len())];
                crashed_before_the_fault(hosts.kill(victim), victim, &history, &mut crashes);
                vec![victim]
            }
            FaultKind::KillLeader | FaultKind::PauseLeader | FaultKind::IsolateLeader => {
                let Some(victim) = current else {
                    skipped.push(format!(
                        "fault {} ({}): no leader agreed on within 10 s",
                        n + 1,
                        kind.name()
                    ));
                    continue;
                };
                match kind {
                    FaultKind::KillLeader => {
                        crashed_before_the_fault(hosts.kill(victim), victim, &history, &mut crashes)
                    }
                    FaultKind::PauseLeader => hosts.pause(victim),
                    _ => {
                        let others: Vec<u64> =
                            all.iter().copied().filter(|id| *id != victim).collect();
                        hosts.partition(&[vec![victim], others])?;
                    }
                }
                vec![victim]
            }
            FaultKind::Halves => {
                let mut shuffled = all.clone();
                for i in (1..shuffled.len()).rev() {
                    shuffled.swap(i, rng.gen_range(0..=i));
                }
                let minority = shuffled[..all.len() / 2].to_vec();
                let majority = shuffled[all.len() / 2..].to_vec();
                hosts.partition(&[minority.clone(), majority])?;
                minority
            }
            FaultKind::Ring => {
                let mut ring = all.clone();
                for i in (1..ring.len()).rev() {
                    ring.swap(i, rng.gen_range(0..=i));
                }
                let links = ring_cuts(&ring);
                detail = format!("ring {ring:?}, cut {links:?}");
                hosts.cut(&links)?;
                all.clone()
            }
            FaultKind::Loss => {
                hosts.lose_packets(20)?;
                all.clone()
            }
            FaultKind::Membership => {
                let Some(spare) = hosts.spare() else {
                    skipped.push(format!("fault {} (membership): no spare host", n + 1));
                    continue;
                };
                let victim = all[rng.gen_range(0..all.len())];
                crashed_before_the_fault(hosts.kill(victim), victim, &history, &mut crashes);
                detail = format!("node {victim} lost, node {spare} replaces it");
                vec![victim, spare]
            }
            FaultKind::Clock => {
                let Some(victim) = current else {
                    skipped.push(format!(
                        "fault {} (clock): no leader agreed on within 10 s",
                        n + 1
                    ));
                    continue;
                };
                let offset = if rng.gen_bool(0.5) { "+1h" } else { "-1h" };
                hosts.set_clock(victim, offset)?;
                detail = format!("wall clock {offset}");
                vec![victim]
            }
            FaultKind::TornLog => {
                let victim = all[rng.gen_range(0..all.len())];
                crashed_before_the_fault(hosts.kill(victim), victim, &history, &mut crashes);
                detail = hosts.tear_log(victim, rng.gen_range(1..=300), rng.gen())?;
                vec![victim]
            }
        };
        let start_ns = history.now_ns();
        tokio::time::sleep(hold).await;
        match kind {
            FaultKind::Kill | FaultKind::KillLeader | FaultKind::TornLog => {
                hosts.start(targets[0])?
            }
            FaultKind::Clock => hosts.set_clock(targets[0], "+0")?,
            FaultKind::PauseLeader => hosts.resume(targets[0]),
            FaultKind::IsolateLeader | FaultKind::Halves | FaultKind::Ring | FaultKind::Loss => {
                hosts.heal()?
            }
            FaultKind::Membership => {
                let (victim, spare) = (targets[0], targets[1]);
                if let Err(why) = replace_node(hosts, victim, spare).await {
                    crashes.push(format!(
                        "replacing node {victim} with node {spare} at {:.1} s failed: {why}",
                        start_ns as f64 / 1e9
                    ));
                    detail.push_str(&format!(" (failed: {why})"));
                }
            }
        }
        let hit_leader = current.is_some_and(|leader| match kind {
            FaultKind::Loss => false,
            FaultKind::Halves => targets.contains(&leader),
            FaultKind::Ring => false,
            FaultKind::Clock => false,
            FaultKind::Membership => targets[0] == leader,
            _ => targets.contains(&leader),
        });
        faults.push(FaultRecord {
            kind: kind.name(),
            leader: current,
            voters,
            hit_leader,
            targets,
            detail,
            start_ns,
            healed_ns: history.now_ns(),
            rto_ms: None,
            lost: 0,
        });
        eprint!(
            "\rfaults {}/{}  operations {}   ",
            n + 1,
            args.faults,
            history.ops().len() / 2
        );
    }
    eprintln!();

    // Heal, let everyone catch up, stop the clients, and read the final state.
    hosts.heal()?;
    for (id, why) in hosts.reap_exited() {
        crashes.push(format!("node {id} exited by itself ({why})"));
    }
    for id in hosts.ids().collect::<Vec<_>>() {
        hosts.resume(id);
        hosts.start(id)?;
    }
    tokio::time::sleep(Duration::from_millis(args.quiet_ms)).await;
    stop.store(true, Ordering::Relaxed);
    let run_seconds = history.now_ns() as f64 / 1e9;
    for task in clients {
        task.await.map_err(|e| e.to_string())?;
    }
    let nodes = converged(hosts, Duration::from_secs(60)).await;
    md_stop.store(true, Ordering::Relaxed);
    let feed = md_task.await.map_err(|e| e.to_string())?;
    let mut probe = client(hosts, workload::ADMIN_KEY)?;
    // A final state that cannot be read (no leader for FINAL_READ_RETRY_FOR) fails the run
    // with the reason, and its history and report are still written.
    let mut unread = Vec::new();
    let give_up = Instant::now() + FINAL_READ_RETRY_FOR;
    let depth = read_final(&mut probe, give_up, async |probe| {
        probe.depth(workload::SYMBOL.0, BOOK_LEVELS as u32).await
    });
    let book_matches = match depth.await {
        Ok((_, bids, asks)) => feed.state().bids == bids && feed.state().asks == asks,
        Err(e) => {
            unread.push(format!("the final book could not be read: {e}"));
            false
        }
    };
    md_stop_reports.store(true, Ordering::Relaxed);
    // A feed that failed leaves the checkers without part of the final state: the run fails
    // and says why, but its history and report are still written.
    let mut reports = BTreeMap::new();
    let mut feed_errors = Vec::new();
    for reader in report_readers {
        match reader.await.map_err(|e| e.to_string())? {
            Ok((broker, all)) => {
                reports.insert(broker, all);
            }
            Err(why) => feed_errors.push(format!(
                "a report feed failed, so the checkers cannot see every report: {why}"
            )),
        }
    }
    let mut balances = BTreeMap::new();
    for account in workload::desks().into_iter().flat_map(|b| b.accounts) {
        let held = read_final(&mut probe, give_up, async |probe| {
            probe
                .balances(account, vec![workload::BASE.0, workload::QUOTE.0])
                .await
        });
        match held.await {
            Ok(held) => {
                balances.insert(account, held);
            }
            Err(e) => unread.push(format!(
                "account {account}'s final balances could not be read: {e}"
            )),
        }
    }
    // A node that died after the last fault, even while the final state was read, crashed.
    for (id, why) in hosts.reap_exited() {
        crashes.push(format!("node {id} exited by itself at the end ({why})"));
    }
    let ops = history.ops();
    let state = FinalState {
        reports,
        nodes,
        market_data_gaps: md_gaps.load(Ordering::Relaxed),
        market_data_book_matches: book_matches,
        balances,
        members: hosts.ids().collect(),
    };
    let mut verdict = checker::check_with(&ops, &state, args.search_visits_max);
    verdict.crashes = crashes.len() as u64;
    verdict.problems.extend(crashes);
    verdict.harness_errors = (feed_errors.len() + unread.len()) as u64;
    verdict.problems.extend(feed_errors);
    verdict.problems.extend(unread);
    report::recovery_times(&ops, &mut faults);
    let facts = checker::RunFacts {
        faults_asked: args.faults,
        faults_injected: faults.len(),
        missing_kinds: missing
            .iter()
            .map(|(kind, why)| (kind.name(), why.clone(), args.allow_missing.contains(kind)))
            .collect(),
        skipped,
        run_seconds,
        recoveries: faults
            .iter()
            .map(|f| (f.kind.clone(), f.start_ns as f64 / 1e9, f.rto_ms))
            .collect(),
    };
    let rules = checker::Rules {
        rto_max_ms: args.rto_max_ms,
        acknowledged_per_s_min: args.min_acknowledged_per_s,
        ledger_ops_per_s_min: args.min_ledger_ops_per_s,
        inconclusive_share_max: args.inconclusive_share_max,
    };
    checker::judge_run(&mut verdict, &facts, &state, &rules);
    let placement = match hosts.placement {
        Placement::Namespaces => "namespaces",
        Placement::Loopback => "loopback",
    };
    Ok((
        report::build(placement, args.nodes, faults, &verdict, not_injected),
        ops,
    ))
}

/// A node that a fault was to kill but that had exited by itself first crashed: the fault's
/// kill must not hide it from the verdict.
fn crashed_before_the_fault(
    exited: Option<String>,
    id: u64,
    history: &History,
    crashes: &mut Vec<String>,
) {
    if let Some(why) = exited {
        crashes.push(format!(
            "node {id} exited by itself before {:.1} s ({why})",
            history.now_ns() as f64 / 1e9
        ));
    }
}

/// The links a majorities ring cuts: with 5 nodes every node keeps its two neighbours on the
/// ring (itself and two: a majority, different for each); with 3, the first and last lose
/// each other and the middle one bridges them.
fn ring_cuts(ring: &[u64]) -> Vec<(u64, u64)> {
    let n = ring.len();
    if n == 3 {
        return vec![(ring[0], ring[2])];
    }
    let mut cuts = Vec::new();
    for a in 0..n {
        for b in a + 1..n {
            let distance = (b - a).min(n - (b - a));
            if distance > 1 {
                cuts.push((ring[a], ring[b]));
            }
        }
    }
    cuts
}

/// Replaces lost node `victim` (stopped, its data intact) with a new node on the empty
/// `spare` host: start it, add it as a learner (the leader waits until it has caught up),
/// then make it a voter in the victim's place. On success the victim's host is wiped and
/// becomes the next spare; on failure the new node is removed and the victim restarted.
async fn replace_node(hosts: &mut Hosts, victim: u64, spare: u64) -> Result<(), String> {
    use exchange::gateway::protocol::{Reply, Request};
    hosts.wipe(spare)?;
    hosts.start(spare)?;
    let mut admin = client(hosts, workload::ADMIN_KEY)?;
    let voters: Vec<u64> = hosts
        .ids()
        .filter(|id| *id != victim)
        .chain([spare])
        .collect();
    let requests = [
        Request::AddLearner {
            id: spare,
            raft: hosts.raft_addr(spare).to_string(),
            broker: hosts.broker_addr(spare).to_string(),
        },
        Request::SetVoters {
            voters: voters.clone(),
        },
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut outcome = Ok(());
    'requests: for request in &requests {
        loop {
            let why = match admin.request_leader(request).await {
                Ok(Reply::Membership { .. }) => continue 'requests,
                Ok(other) => format!("{other:?}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                outcome = Err(why);
                break 'requests;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    match outcome {
        Ok(()) => hosts.replaced(victim, spare),
        Err(why) => {
            // The replacement failed and is counted as a crash by the caller.
            let _ = hosts.kill(spare);
            hosts.wipe(spare)?;
            hosts.start(victim)?;
            Err(why)
        }
    }
}

fn write_outputs(
    out: &std::path::Path,
    report: &report::Report,
    history: &[workload::Op],
) -> Result<(), String> {
    let mut lines = String::new();
    for op in history {
        lines.push_str(&serde_json::to_string(op).map_err(|e| e.to_string())?);
        lines.push('\n');
    }
    let write = |name: &str, text: &str| {
        std::fs::write(out.join(name), text)
            .map_err(|e| format!("{}: {e}", out.join(name).display()))
    };
    write("history.jsonl", &lines)?;
    write(
        "report.json",
        &serde_json::to_string_pretty(report).map_err(|e| e.to_string())?,
    )?;
    write(
        "timeline.svg",
        &report::timeline_svg(history, &report.fault_log),
    )
}

fn print_summary(report: &report::Report, out: &std::path::Path) {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    println!(
        "placement        {} ({} nodes)",
        report.placement, report.nodes
    );
    println!("faults           {}", report.faults);
    println!(
        "operations       {} acknowledged, {} unknown",
        report.acknowledged, report.unknown
    );
    println!(
        "lost / duplicates / divergences / unmatched trades / sequence / conservation errors   {} / {} / {} / {} / {} / {}",
        report.lost,
        report.duplicates,
        report.divergences,
        report.unmatched_trades,
        report.sequence_errors,
        report.conservation_errors
    );
    println!(
        "linearizability  {} ledger operations, {} accounts not linearizable, {} not settled",
        report.linearizability_ops,
        report.linearizability_errors,
        report.linearizability_inconclusive
    );
    println!(
        "timestamps back / market data gaps / book mismatches / failed yet took effect   {} / {} / {} / {}",
        report.timestamp_errors,
        report.market_data_gaps,
        report.book_mismatches,
        report.failed_took_effect
    );
    println!("node crashes     {}", report.crashes);
    println!(
        "run rules        {} coverage errors, {} faults over the RTO limit",
        report.coverage_errors, report.rto_errors
    );
    if report.harness_errors > 0 {
        println!("harness errors   {}", report.harness_errors);
    }
    println!(
        "RTO (ms)         median {}  max {}",
        ms(report.rto_ms_median),
        ms(report.rto_ms_max)
    );
    for (kind, summary) in &report.by_kind {
        println!(
            "  {kind:<16} {:>4} faults  RTO median {:>6}  max {:>6}   ({} hit the leader: median {}; the others: median {})",
            summary.count,
            ms(summary.rto_ms_median),
            ms(summary.rto_ms_max),
            summary.hit_leader,
            ms(summary.rto_ms_median_leader_hit),
            ms(summary.rto_ms_median_leader_spared),
        );
    }
    for line in &report.not_injected {
        println!("not injected     {line}");
    }
    for problem in &report.problems {
        println!("PROBLEM          {problem}");
    }
    println!(
        "{}   (history, report and timeline in {})",
        if report.passed { "PASSED" } else { "FAILED" },
        out.display()
    );
}

#[cfg(test)]
mod tests {
    use super::{mark_out, prepare_out, ring_cuts, OUT_MARKER};

    #[test]
    fn out_never_deletes_what_a_run_did_not_create() {
        let dir = std::env::temp_dir().join(format!("chaos-out-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // A directory with someone's work in it: refused, and left as it was.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        let refused = prepare_out(&dir).unwrap_err();
        assert!(refused.contains("not made by exchange-chaos"), "{refused}");
        assert!(dir.join("notes.txt").exists());
        // A run's directory: its next run removes what it listed, and nothing else.
        std::fs::write(dir.join(OUT_MARKER), "").unwrap();
        let before = prepare_out(&dir).unwrap();
        std::fs::create_dir_all(dir.join("node-1")).unwrap();
        std::fs::write(dir.join("report.json"), "{}").unwrap();
        mark_out(&dir, &before).unwrap();
        let listed = std::fs::read_to_string(dir.join(OUT_MARKER)).unwrap();
        assert_eq!(listed, "node-1\nreport.json\n");
        prepare_out(&dir).unwrap();
        assert!(!dir.join("node-1").exists() && !dir.join("report.json").exists());
        assert!(dir.join("notes.txt").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Every node keeps a majority of the cluster (itself included), and no two nodes keep
    /// the same one.
    fn views(ring: &[u64]) -> Vec<Vec<u64>> {
        let cuts = ring_cuts(ring);
        let mut nodes = ring.to_vec();
        nodes.sort();
        nodes
            .iter()
            .map(|&x| {
                nodes
                    .iter()
                    .copied()
                    .filter(|&y| !cuts.contains(&(x, y)) && !cuts.contains(&(y, x)))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_majorities_ring_leaves_every_node_a_different_majority() {
        let five = views(&[3, 1, 5, 2, 4]);
        for view in &five {
            assert_eq!(view.len(), 3, "{five:?}");
        }
        for (i, a) in five.iter().enumerate() {
            assert!(five[i + 1..].iter().all(|b| b != a), "{five:?}");
        }
        // Three nodes: the ends lose each other, the middle one bridges them.
        assert_eq!(ring_cuts(&[2, 3, 1]), vec![(2, 1)]);
        for view in views(&[2, 3, 1]) {
            assert!(view.len() >= 2);
        }
    }
}
