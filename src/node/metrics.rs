//! `--metrics-listen ADDR`: the node's metrics in the Prometheus text format, over plain HTTP
//! (`GET /metrics`). Build, role, term, log, commit and applied index, apply lag, each
//! follower's replication lag (leader), snapshots, divergence, the reporter's lag, commands
//! applied (orders per second is its rate), refusals by reason, the broker endpoint's counters,
//! sessions and latency histograms, and the process's CPU, memory, threads and descriptors.
//! `cluster/grafana/exchange.json` is a dashboard over them.

use openraft::async_runtime::watch::WatchReceiver as _;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use exchange_domain::RejectReason;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::gateway::metrics::GatewayMetrics;
use crate::latency::{LatencyHistogram, LATENCY_BUCKETS_US};
use crate::marketdata::history::MarketHistory;
use crate::replication::divergence::DivergenceLog;
use crate::replication::engine_thread::EngineHandle;
use crate::replication::leadership::Role;
use crate::replication::state_machine::Raft;
use crate::replication::types::RaftMetrics;
use crate::report::Reporter;

/// What the metrics page is made of.
#[derive(Clone)]
pub struct MetricsSources {
    pub id: u64,
    pub raft: Raft,
    pub engine: Arc<EngineHandle>,
    pub committed: Arc<std::sync::atomic::AtomicU64>,
    pub gateway: Arc<GatewayMetrics>,
    /// Each log append's write and sync.
    pub append_latency: Arc<LatencyHistogram>,
    /// Each committed proposal, from proposing to the engine's outputs (leader).
    pub round_latency: Arc<LatencyHistogram>,
    /// What the divergence watcher found.
    pub divergence: DivergenceLog,
    /// The reporter, when the node writes a report database.
    pub reporter: Option<Arc<Reporter>>,
    /// The market data history, unless the node keeps market data only in memory.
    pub history: Option<Arc<MarketHistory>>,
    /// The FIX acceptor's counters (zero when the node serves no FIX).
    pub fix: Arc<crate::fix::server::FixMetrics>,
}

/// A request head larger than this is refused (a scrape is one short line).
const REQUEST_BYTES_MAX: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes served at once.
const SCRAPES_MAX: usize = 16;

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// As `metric`, for samples whose labels are made while rendering.
fn labelled(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let samples: Vec<(&str, u64)> = samples.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric(out, name, kind, help, &samples);
}

/// The page, in the Prometheus text exposition format (version 0.0.4).
pub fn render(sources: &MetricsSources) -> String {
    let raft = sources.raft.metrics().borrow_watched().clone();
    let status = sources.engine.status();
    let applied = status.applied_index();
    let committed = sources.committed.load(Ordering::Acquire);
    let mut out = String::with_capacity(8 * 1024);
    let role = Role::of(raft.state).name();
    let roles: Vec<(String, u64)> = ["leader", "follower", "candidate", "learner", "shutdown"]
        .iter()
        .map(|r| (format!("{{role=\"{r}\"}}"), u64::from(*r == role)))
        .collect();
    metric(
        &mut out,
        "exchange_node_id",
        "gauge",
        "This node's id.",
        &[("", sources.id)],
    );
    labelled(
        &mut out,
        "exchange_role",
        "gauge",
        "1 for the node's current Raft role.",
        &roles,
    );
    metric(
        &mut out,
        "exchange_term",
        "gauge",
        "The current Raft term.",
        &[("", raft.current_term)],
    );
    metric(
        &mut out,
        "exchange_last_log_index",
        "gauge",
        "The last index in this node's log.",
        &[("", raft.last_log_index.unwrap_or(0))],
    );
    metric(
        &mut out,
        "exchange_commit_index",
        "gauge",
        "The last index known committed.",
        &[("", committed)],
    );
    metric(
        &mut out,
        "exchange_applied_index",
        "gauge",
        "The last index the engine applied.",
        &[("", applied)],
    );
    metric(
        &mut out,
        "exchange_apply_lag",
        "gauge",
        "Committed entries the engine has not applied yet.",
        &[("", committed.saturating_sub(applied))],
    );
    metric(
        &mut out,
        "exchange_commands_applied_total",
        "counter",
        "Commands the engine applied since the node started; its rate is orders per second.",
        &[("", status.commands_applied())],
    );
    metric(
        &mut out,
        "exchange_build_info",
        "gauge",
        "1, labelled with this build's version.",
        &[(&format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")), 1)],
    );
    replication_metrics(&mut out, &raft);
    metric(
        &mut out,
        "exchange_divergence",
        "gauge",
        "1 once this node's output hash has differed from a peer's at the same index (it stays: a diverged replica needs an operator).",
        &[("", u64::from(sources.divergence.first().is_some()))],
    );
    let checked: Vec<(String, u64)> = sources
        .divergence
        .checked()
        .into_iter()
        .map(|(peer, index)| (format!("{{peer=\"{peer}\"}}"), index))
        .collect();
    labelled(
        &mut out,
        "exchange_divergence_checked_index",
        "gauge",
        "Per peer, the last index at which its output hash was compared with this node's and equal.",
        &checked,
    );
    if let Some(history) = &sources.history {
        let stats = history.stats();
        for (name, help, value) in [
            (
                "exchange_md_history_batches_written_total",
                "Batches of trades and closed candles written to the market data history.",
                &stats.written,
            ),
            (
                "exchange_md_history_batches_dropped_total",
                "Batches the market data history's queue had no room for: their rows are missing from the file.",
                &stats.dropped,
            ),
            (
                "exchange_md_history_writes_failed_total",
                "Writes of the market data history that failed (logged): their rows are missing from the file.",
                &stats.failed,
            ),
        ] {
            metric(
                &mut out,
                name,
                "counter",
                help,
                &[("", value.load(std::sync::atomic::Ordering::Relaxed))],
            );
        }
    }
    if let Some(reporter) = &sources.reporter {
        let cursor = reporter.cursor();
        metric(
            &mut out,
            "exchange_reporter_index",
            "gauge",
            "The last log index whose rows the report database holds.",
            &[("", cursor)],
        );
        metric(
            &mut out,
            "exchange_reporter_lag",
            "gauge",
            "Applied entries whose rows the report database does not hold yet.",
            &[("", applied.saturating_sub(cursor))],
        );
        metric(
            &mut out,
            "exchange_reporter_failed",
            "gauge",
            "1 when the reporter stopped on an error (reports lag until the node restarts).",
            &[("", u64::from(reporter.failed().is_some()))],
        );
    }
    let samples: Vec<(String, u64)> = RejectReason::ALL
        .iter()
        .map(|r| format!("{{reason=\"{r:?}\",code=\"{}\"}}", r.code()))
        .zip(status.rejects())
        .collect();
    labelled(
        &mut out,
        "exchange_rejects_total",
        "counter",
        "Commands the engine refused, by reason.",
        &samples,
    );
    let gateway = &sources.gateway;
    for (name, help, value) in [
        (
            "exchange_gateway_commands_total",
            "Commands brokers sent to this node for sequencing.",
            &gateway.commands,
        ),
        (
            "exchange_gateway_throttled_total",
            "Requests refused for a session's rate or in-flight limit.",
            &gateway.throttled,
        ),
        (
            "exchange_gateway_logons_total",
            "Sessions that logged on.",
            &gateway.logons,
        ),
        (
            "exchange_gateway_logons_refused_total",
            "Logons refused.",
            &gateway.logons_refused,
        ),
        (
            "exchange_gateway_logons_delayed_total",
            "Logons held back because their address failed to log on too often lately.",
            &gateway.logons_delayed,
        ),
        (
            "exchange_gateway_sessions_ended_by_key_change_total",
            "Sessions ended because their broker's key was changed or revoked.",
            &gateway.sessions_ended_by_key_change,
        ),
        (
            "exchange_gateway_connections_refused_total",
            "Connections refused because the pool for handshakes and logons, or the source's share of it, was full.",
            &gateway.connections_refused,
        ),
        (
            "exchange_gateway_address_validations_total",
            "Connections asked to validate their address (QUIC Retry) first.",
            &gateway.address_validations,
        ),
        (
            "exchange_market_messages_sent_total",
            "Market data messages sent to subscribers, each subscriber's copy counted.",
            &gateway.market_messages,
        ),
        (
            "exchange_market_frames_sent_total",
            "Frames the market data messages went out in (a burst's messages share one).",
            &gateway.market_frames,
        ),
        (
            "exchange_market_resyncs_total",
            "Subscribers that fell behind and were sent a fresh snapshot.",
            &gateway.market_resyncs,
        ),
    ] {
        metric(
            &mut out,
            name,
            "counter",
            help,
            &[("", value.load(Ordering::Relaxed))],
        );
    }
    metric(
        &mut out,
        "exchange_gateway_sessions",
        "gauge",
        "Broker sessions logged on now.",
        &[("", gateway.sessions.load(Ordering::Relaxed))],
    );
    let fix = &sources.fix;
    for (name, help, value) in [
        (
            "exchange_fix_logons_total",
            "FIX sessions that logged on.",
            &fix.logons,
        ),
        (
            "exchange_fix_logons_refused_total",
            "FIX logons refused (wrong key or CompID, not the leader, a session of the CompID already on).",
            &fix.logons_refused,
        ),
        (
            "exchange_fix_messages_received_total",
            "FIX messages received that parsed.",
            &fix.messages_received,
        ),
        (
            "exchange_fix_messages_sent_total",
            "FIX messages sent, resends included.",
            &fix.messages_sent,
        ),
        (
            "exchange_fix_garbled_total",
            "FIX frames ignored as garbled (framing, BodyLength or CheckSum broken).",
            &fix.garbled,
        ),
        (
            "exchange_fix_session_rejects_total",
            "Reject(3) messages sent for messages that broke the session rules.",
            &fix.session_rejects,
        ),
        (
            "exchange_fix_resend_requests_total",
            "ResendRequests the exchange sent for gaps in what it received.",
            &fix.resend_requests,
        ),
    ] {
        metric(
            &mut out,
            name,
            "counter",
            help,
            &[("", value.load(Ordering::Relaxed))],
        );
    }
    metric(
        &mut out,
        "exchange_fix_sessions",
        "gauge",
        "FIX sessions logged on now (each also counts in exchange_gateway_sessions).",
        &[("", fix.sessions.load(Ordering::Relaxed))],
    );
    process_metrics(&mut out);
    for (name, help, histogram) in [
        (
            "exchange_order_ack_seconds",
            "From a broker request's arrival to its answer (committed and applied).",
            &gateway.ack_latency,
        ),
        (
            "exchange_raft_round_seconds",
            "From proposing an entry to the engine's outputs for it: replicated to a majority, committed and applied (leader).",
            &*sources.round_latency,
        ),
        (
            "exchange_log_append_seconds",
            "Writing a log append and syncing it (as --fsync says).",
            &*sources.append_latency,
        ),
    ] {
        latency_histogram(&mut out, name, help, histogram);
    }
    out
}

/// Each follower's matched index and how far it is behind the leader's log (only a leader
/// knows), and the snapshot and purge points.
fn replication_metrics(out: &mut String, raft: &RaftMetrics) {
    let last = raft.last_log_index.unwrap_or(0);
    let followers: Vec<(String, u64)> = raft
        .replication
        .iter()
        .flatten()
        .filter(|(peer, _)| **peer != raft.id)
        .map(|(peer, matched)| {
            (
                format!("{{peer=\"{peer}\"}}"),
                matched.map_or(0, |m| m.index),
            )
        })
        .collect();
    let lag: Vec<(String, u64)> = followers
        .iter()
        .map(|(l, v)| (l.clone(), last.saturating_sub(*v)))
        .collect();
    labelled(
        out,
        "exchange_replication_matched_index",
        "gauge",
        "Per follower, the last index the leader knows it holds (leader only).",
        &followers,
    );
    labelled(
        out,
        "exchange_replication_lag",
        "gauge",
        "Per follower, entries in the leader's log it is not known to hold (leader only).",
        &lag,
    );
    metric(
        out,
        "exchange_snapshot_index",
        "gauge",
        "The last index the latest snapshot covers (0: none yet).",
        &[("", raft.snapshot.map_or(0, |s| s.index))],
    );
    metric(
        out,
        "exchange_purged_index",
        "gauge",
        "The last index removed from the log, covered by a snapshot (0: none).",
        &[("", raft.purged.map_or(0, |p| p.index))],
    );
}

/// The process metrics Prometheus' client libraries export, read from `/proc/self` (Linux).
/// A value that cannot be read is left out rather than shown as zero.
fn process_metrics(out: &mut String) {
    // SAFETY: sysconf only reads a configuration value.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let mut gauge = |name: &str, kind: &str, help: &str, value: Option<String>| {
        if let Some(value) = value {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    };
    if ticks > 0 {
        let cpu = field(14)
            .zip(field(15))
            .map(|(user, system)| format!("{}", (user + system) as f64 / ticks as f64));
        gauge(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, in seconds.",
            cpu,
        );
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())
        });
        let start = boot
            .zip(field(22))
            .map(|(boot, since)| format!("{}", boot as f64 + since as f64 / ticks as f64));
        gauge(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
            start,
        );
    }
    gauge(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        field(23).map(|v| v.to_string()),
    );
    if page > 0 {
        gauge(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            field(24).map(|pages| (pages * page as u64).to_string()),
        );
    }
    gauge(
        "process_threads",
        "gauge",
        "Threads in the process.",
        field(20).map(|v| v.to_string()),
    );
    let fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count().to_string());
    gauge("process_open_fds", "gauge", "Open file descriptors.", fds);
}

fn latency_histogram(out: &mut String, name: &str, help: &str, histogram: &LatencyHistogram) {
    let (counts, sum_us) = histogram.cumulative();
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (bound, count) in LATENCY_BUCKETS_US.iter().zip(&counts) {
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"{}\"}} {count}",
            *bound as f64 / 1e6
        );
    }
    let total = counts.last().copied().unwrap_or(0);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "{name}_sum {}", sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {total}");
}

/// Serves `GET /metrics` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, sources: MetricsSources) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("metrics listener {addr}: {e}"))?;
    let scrapes = Arc::new(tokio::sync::Semaphore::new(SCRAPES_MAX));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors, say: pause rather than spin on the error.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Ok(permit) = Arc::clone(&scrapes).try_acquire_owned() else {
                continue;
            };
            let sources = sources.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &sources)).await;
            });
        }
    });
    Ok(())
}

async fn answer(
    mut stream: tokio::net::TcpStream,
    sources: &MetricsSources,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > REQUEST_BYTES_MAX {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let first_line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let (status, content_type, body) = if first_line.starts_with(b"GET /metrics ") {
        ("200 OK", "text/plain; version=0.0.4", render(sources))
    } else {
        ("404 Not Found", "text/plain", "GET /metrics\n".to_string())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
