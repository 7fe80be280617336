//! The run's report: per fault, when it began and healed and how long clients waited for the
//! next acknowledged order (the RTO they saw); the summary; and a timeline picture (every
//! operation's latency over time, the fault windows shaded), since a timeline is read faster
//! than a table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::checker::Verdict;
use crate::workload::Op;

#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    pub kind: String,
    /// What it hit (node ids).
    pub targets: Vec<u64>,
    /// The leader when it began, if one was agreed on, and the voters it named.
    pub leader: Option<u64>,
    pub voters: Vec<u64>,
    /// Whether it took the leader out of the majority (killed, paused, cut off or replaced it,
    /// or left it in the minority): then clients wait for an election.
    pub hit_leader: bool,
    /// What exactly was done, where it needs saying (the bytes torn, the clock offset).
    pub detail: String,
    pub start_ns: u64,
    pub healed_ns: u64,
    /// From the fault's start to the first acknowledged order sent after it.
    pub rto_ms: Option<f64>,
    /// Acknowledged operations lost that were acknowledged from this fault's start to the
    /// next one's (must be 0).
    pub lost: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct KindSummary {
    pub count: usize,
    pub rto_ms_median: Option<f64>,
    pub rto_ms_max: Option<f64>,
    /// How many of them hit the leader, and the median RTO of those and of the others.
    pub hit_leader: usize,
    pub rto_ms_median_leader_hit: Option<f64>,
    pub rto_ms_median_leader_spared: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub placement: String,
    pub nodes: u64,
    pub faults: usize,
    pub lost: u64,
    pub duplicates: u64,
    pub divergences: u64,
    pub unmatched_trades: u64,
    pub sequence_errors: u64,
    pub timestamp_errors: u64,
    pub market_data_gaps: u64,
    pub book_mismatches: u64,
    pub failed_took_effect: u64,
    pub conservation_errors: u64,
    pub linearizability_errors: u64,
    pub linearizability_ops: u64,
    pub linearizability_inconclusive: u64,
    pub linearizability_inconclusive_ops: u64,
    pub crashes: u64,
    pub harness_errors: u64,
    pub coverage_errors: u64,
    pub rto_errors: u64,
    pub acknowledged: u64,
    pub unknown: u64,
    pub rto_ms_median: Option<f64>,
    pub rto_ms_max: Option<f64>,
    pub by_kind: BTreeMap<String, KindSummary>,
    /// Fault kinds this run could not inject here, and why.
    pub not_injected: Vec<String>,
    pub passed: bool,
    pub problems: Vec<String>,
    pub fault_log: Vec<FaultRecord>,
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// The clients' recovery time for each fault: from its start to the first acknowledged order
/// that was sent after it began.
pub fn recovery_times(history: &[Op], faults: &mut [FaultRecord]) {
    let mut invoked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut acknowledged: Vec<(u64, u64)> = Vec::new();
    for op in history {
        match op.kind.as_str() {
            "invoke" => {
                invoked.insert(op.op, op.time_ns);
            }
            "ok" if op.f == "order" => {
                if let Some(at) = invoked.get(&op.op) {
                    acknowledged.push((*at, op.time_ns));
                }
            }
            _ => {}
        }
    }
    for fault in faults.iter_mut() {
        fault.rto_ms = acknowledged
            .iter()
            .filter(|(sent, _)| *sent >= fault.start_ns)
            .map(|(_, done)| done - fault.start_ns)
            .min()
            .map(|ns| ns as f64 / 1e6);
    }
}

pub fn build(
    placement: &str,
    nodes: u64,
    mut faults: Vec<FaultRecord>,
    verdict: &Verdict,
    not_injected: Vec<String>,
) -> Report {
    for at in &verdict.lost_at_ns {
        if let Some(fault) = faults.iter_mut().rev().find(|f| f.start_ns <= *at) {
            fault.lost += 1;
        }
    }
    let mut all: Vec<f64> = faults.iter().filter_map(|f| f.rto_ms).collect();
    let max = all
        .iter()
        .copied()
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let mut by_kind: BTreeMap<String, Vec<&FaultRecord>> = BTreeMap::new();
    for fault in &faults {
        by_kind.entry(fault.kind.clone()).or_default().push(fault);
    }
    let by_kind = by_kind
        .into_iter()
        .map(|(kind, faults)| {
            let rtos = |hit: Option<bool>| -> Vec<f64> {
                faults
                    .iter()
                    .filter(|f| hit.is_none_or(|hit| f.hit_leader == hit))
                    .filter_map(|f| f.rto_ms)
                    .collect()
            };
            let mut values = rtos(None);
            let max = values.iter().copied().reduce(f64::max);
            (
                kind,
                KindSummary {
                    count: faults.len(),
                    rto_ms_median: median(&mut values),
                    rto_ms_max: max,
                    hit_leader: faults.iter().filter(|f| f.hit_leader).count(),
                    rto_ms_median_leader_hit: median(&mut rtos(Some(true))),
                    rto_ms_median_leader_spared: median(&mut rtos(Some(false))),
                },
            )
        })
        .collect();
    Report {
        placement: placement.into(),
        nodes,
        faults: faults.len(),
        lost: verdict.lost,
        duplicates: verdict.duplicates,
        divergences: verdict.divergences,
        unmatched_trades: verdict.unmatched_trades,
        sequence_errors: verdict.sequence_errors,
        timestamp_errors: verdict.timestamp_errors,
        market_data_gaps: verdict.market_data_gaps,
        book_mismatches: verdict.book_mismatches,
        failed_took_effect: verdict.failed_took_effect,
        conservation_errors: verdict.conservation_errors,
        linearizability_errors: verdict.linearizability_errors,
        linearizability_ops: verdict.linearizability_ops,
        linearizability_inconclusive: verdict.linearizability_inconclusive,
        linearizability_inconclusive_ops: verdict.linearizability_inconclusive_ops,
        crashes: verdict.crashes,
        harness_errors: verdict.harness_errors,
        coverage_errors: verdict.coverage_errors,
        rto_errors: verdict.rto_errors,
        acknowledged: verdict.acknowledged,
        unknown: verdict.unknown,
        rto_ms_median: median(&mut all),
        rto_ms_max: max,
        by_kind,
        not_injected,
        passed: verdict.passed(),
        problems: verdict.problems.clone(),
        fault_log: faults,
    }
}

/// An SVG timeline: one dot per completed operation at (completion time, latency on a log
/// scale): green acknowledged, red failed, orange unknown; fault windows shaded and named.
pub fn timeline_svg(history: &[Op], faults: &[FaultRecord]) -> String {
    const WIDTH: f64 = 1200.0;
    const HEIGHT: f64 = 420.0;
    const LEFT: f64 = 60.0;
    const BOTTOM: f64 = 30.0;
    let mut invoked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut points = Vec::new();
    for op in history {
        if op.kind == "invoke" {
            invoked.insert(op.op, op.time_ns);
        } else if let Some(at) = invoked.get(&op.op) {
            points.push((op.time_ns, (op.time_ns - at) as f64 / 1e6, op.kind.as_str()));
        }
    }
    let end = points.iter().map(|p| p.0).max().unwrap_or(1).max(1) as f64;
    let x = |ns: u64| LEFT + (ns as f64 / end) * (WIDTH - LEFT - 10.0);
    // Latency from 0.1 ms to 10 s on a log scale.
    let y = |ms: f64| {
        let decades = (ms.clamp(0.1, 10_000.0) / 0.1).log10() / 5.0;
        HEIGHT - BOTTOM - decades * (HEIGHT - BOTTOM - 10.0)
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for fault in faults {
        let (x0, x1) = (x(fault.start_ns), x(fault.healed_ns.max(fault.start_ns)));
        let _ = write!(
            svg,
            r##"<rect x="{x0:.1}" y="10" width="{:.1}" height="{:.1}" fill="#d0d8f0" opacity="0.7"/><text x="{x0:.1}" y="22" fill="#334">{}</text>"##,
            (x1 - x0).max(1.0),
            HEIGHT - BOTTOM - 10.0,
            fault.kind
        );
    }
    for ms in [0.1, 1.0, 10.0, 100.0, 1_000.0, 10_000.0] {
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{WIDTH}" y1="{0:.1}" y2="{0:.1}" stroke="#ddd"/><text x="4" y="{0:.1}">{ms} ms</text>"##,
            y(ms)
        );
    }
    for (at, latency, kind) in &points {
        let colour = match *kind {
            "ok" => "#2a7",
            "fail" => "#d33",
            _ => "#e90",
        };
        let _ = write!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="1.5" fill="{colour}"/>"#,
            x(*at),
            y(*latency)
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{LEFT}" y="{}" fill="#333">time ({:.1} s) - green: acknowledged, red: failed, orange: unknown; shaded: faults</text></svg>"##,
        HEIGHT - 8.0,
        end / 1e9
    );
    svg
}
