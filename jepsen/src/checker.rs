//! Checkers over the history and the final state. Each counts what it finds and keeps the
//! first few examples; a run passes only if every count is zero.

use std::collections::{BTreeMap, BTreeSet};

use exchange::domain::{CancelReason, Event, Liquidity, Output};
use serde::Serialize;

use crate::linearizable;
pub use crate::linearizable::VISITS_MAX as SEARCH_VISITS_MAX;
use crate::workload::{self, Op};

/// What the cluster holds at the end, as the checkers need it.
pub struct FinalState {
    /// Per broker, every report from the first kept one, in the order received.
    pub reports: BTreeMap<u32, Vec<Output>>,
    /// Per node: (applied index, output hash, divergence reported).
    pub nodes: BTreeMap<u64, (u64, String, Option<String>)>,
    /// Market data: messages that did not follow their predecessor, over the whole run.
    pub market_data_gaps: u64,
    /// Whether the subscriber's book equals the engine's at the end.
    pub market_data_book_matches: bool,
    /// The cluster's voters at the end: each must report a final status.
    pub members: Vec<u64>,
    /// Every account's final balances: (asset, available, held).
    pub balances: BTreeMap<u64, Vec<(u32, i64, i64)>>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Verdict {
    /// Acknowledged orders, cancels, replaces, deposits and withdrawals missing from the final
    /// state.
    pub lost: u64,
    /// When each lost operation was acknowledged (run time, ns): the report charges it to the
    /// fault in force then.
    #[serde(skip)]
    pub lost_at_ns: Vec<u64>,
    /// Orders, executions or reports that appear twice, or a client order id used twice.
    pub duplicates: u64,
    /// Nodes whose output hash differs at the same index, or that reported a divergence.
    pub divergences: u64,
    /// Trades whose two sides do not match (one side missing, prices or quantities differ).
    pub unmatched_trades: u64,
    /// Report streams whose sequence numbers do not rise.
    pub sequence_errors: u64,
    /// Report streams whose timestamps go back (the sequencer never lets them, whatever the
    /// leaders' clocks do).
    pub timestamp_errors: u64,
    /// Market data messages that did not follow their predecessor.
    pub market_data_gaps: u64,
    /// The market data subscriber's final book differs from the engine's.
    pub book_mismatches: u64,
    /// Orders, cancels and replaces the client was told failed (certainly not done) that the
    /// reports show took effect.
    pub failed_took_effect: u64,
    /// Assets whose balances do not add up to deposits minus withdrawals, and negative
    /// balances.
    pub conservation_errors: u64,
    /// Ledger accounts whose deposits, withdrawals and reads have no linearization (or an
    /// operation that failed yet took effect).
    pub linearizability_errors: u64,
    /// Ledger operations the linearizability search placed.
    pub linearizability_ops: u64,
    /// Ledger accounts whose search grew past its bounds: neither proven nor refuted.
    pub linearizability_inconclusive: u64,
    /// The ledger operations of those accounts.
    pub linearizability_inconclusive_ops: u64,
    /// Nodes that exited by themselves during the run (a fault must never crash a node).
    pub crashes: u64,
    /// The run could not gather what the checkers need (a report feed that failed).
    pub harness_errors: u64,
    /// The run did not do the work it names: a requested fault kind not injected, fewer
    /// faults than asked, too few operations checked, a node's final status missing, or too
    /// much of the linearizability search left unsettled.
    pub coverage_errors: u64,
    /// Faults after which clients waited longer than the run allows for an acknowledged
    /// order (or never got one).
    pub rto_errors: u64,
    /// Operations with an unknown outcome (allowed either way, never twice).
    pub unknown: u64,
    pub acknowledged: u64,
    /// The first examples of each problem.
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.duplicates == 0
            && self.divergences == 0
            && self.unmatched_trades == 0
            && self.sequence_errors == 0
            && self.timestamp_errors == 0
            && self.market_data_gaps == 0
            && self.book_mismatches == 0
            && self.failed_took_effect == 0
            && self.conservation_errors == 0
            && self.linearizability_errors == 0
            && self.crashes == 0
            && self.harness_errors == 0
            && self.coverage_errors == 0
            && self.rto_errors == 0
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < 20 {
            self.problems.push(text);
        }
    }

    /// A problem that must be seen even after many others: the run's own shortcomings are few
    /// and say why the verdict cannot be trusted.
    fn run_problem(&mut self, text: String) {
        self.problems.insert(0, text);
        self.problems.truncate(40);
    }
}

/// What the run did, as the rules that judge the run itself need it.
pub struct RunFacts {
    pub faults_asked: usize,
    pub faults_injected: usize,
    /// Requested fault kinds this machine could not inject: (kind, why, allowed by
    /// `--allow-missing`).
    pub missing_kinds: Vec<(String, String, bool)>,
    /// Faults the nemesis gave up on (no agreed leader, say), with why.
    pub skipped: Vec<String>,
    /// From the clients' start to their stop.
    pub run_seconds: f64,
    /// Each fault's kind, when it began (run time, s) and the clients' recovery time.
    pub recoveries: Vec<(String, f64, Option<f64>)>,
}

/// The run's own bars: what it must have done for its verdict to mean anything.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// Longest clients may wait after a fault for an acknowledged order.
    pub rto_max_ms: f64,
    /// Acknowledged operations per second of the run, at least.
    pub acknowledged_per_s_min: f64,
    /// Ledger operations checked for linearizability per second of the run, at least.
    pub ledger_ops_per_s_min: f64,
    /// Share of the ledger operations the search may leave unsettled.
    pub inconclusive_share_max: f64,
}

/// Judges the run itself: a verdict over a run that skipped its faults, checked next to
/// nothing, lost sight of a node or recovered too slowly fails, whatever the checkers found.
pub fn judge_run(verdict: &mut Verdict, facts: &RunFacts, state: &FinalState, rules: &Rules) {
    let coverage = |verdict: &mut Verdict, why: String| {
        verdict.coverage_errors += 1;
        verdict.run_problem(why);
    };
    for (kind, why, allowed) in &facts.missing_kinds {
        if !allowed {
            coverage(
                verdict,
                format!("fault kind {kind} was asked for but cannot be injected here: {why} (--allow-missing {kind} accepts that)"),
            );
        }
    }
    if facts.faults_injected < facts.faults_asked {
        coverage(
            verdict,
            format!(
                "{} of {} faults injected{}",
                facts.faults_injected,
                facts.faults_asked,
                match facts.skipped.first() {
                    Some(why) => format!(" (first skipped: {why})"),
                    None => String::new(),
                }
            ),
        );
    }
    for (what, checked, per_s) in [
        (
            "operations acknowledged",
            verdict.acknowledged,
            rules.acknowledged_per_s_min,
        ),
        (
            "ledger operations checked for linearizability",
            verdict.linearizability_ops,
            rules.ledger_ops_per_s_min,
        ),
    ] {
        let needed = ((per_s * facts.run_seconds).ceil() as u64).max(1);
        if checked < needed {
            coverage(
                verdict,
                format!(
                    "only {checked} {what} in {:.1} s; the checks need at least {needed}",
                    facts.run_seconds
                ),
            );
        }
    }
    let unsettled = verdict.linearizability_inconclusive_ops as f64;
    if unsettled > rules.inconclusive_share_max * verdict.linearizability_ops as f64 {
        coverage(
            verdict,
            format!(
                "the linearizability search left {} of {} ledger operations unsettled (at most {:.0}% may be)",
                verdict.linearizability_inconclusive_ops,
                verdict.linearizability_ops,
                rules.inconclusive_share_max * 100.0
            ),
        );
    }
    for id in &state.members {
        if !state.nodes.contains_key(id) {
            coverage(
                verdict,
                format!("node {id} gave no final status: its state was never compared"),
            );
        }
    }
    for (kind, at_s, rto) in &facts.recoveries {
        let why = match rto {
            Some(ms) if *ms > rules.rto_max_ms => format!(
                "{kind} at {at_s:.1} s: clients waited {ms:.0} ms for an acknowledged order (at most {:.0} ms allowed)",
                rules.rto_max_ms
            ),
            Some(_) => continue,
            None => format!("{kind} at {at_s:.1} s: no order sent after it was ever acknowledged"),
        };
        verdict.rto_errors += 1;
        verdict.run_problem(why);
    }
}

#[cfg(test)]
pub fn check(history: &[Op], state: &FinalState) -> Verdict {
    check_with(history, state, linearizable::VISITS_MAX)
}

/// `check`, with the linearizability search bounded by `search_visits_max` states per account.
pub fn check_with(history: &[Op], state: &FinalState, search_visits_max: u64) -> Verdict {
    let mut verdict = Verdict::default();
    let all: Vec<&Output> = state.reports.values().flatten().collect();

    // What the final state holds.
    let mut accepted: BTreeMap<u64, u32> = BTreeMap::new();
    let mut by_client_id: BTreeMap<(u64, u64), u32> = BTreeMap::new();
    let mut balance_seqs: BTreeSet<u64> = BTreeSet::new();
    let mut cancelled: BTreeSet<u64> = BTreeSet::new();
    let mut replaced: BTreeSet<u64> = BTreeSet::new();
    // Cancels on request and replaces that took effect, per order.
    let mut cancels_done: BTreeMap<u64, u32> = BTreeMap::new();
    let mut replaces_done: BTreeMap<u64, u32> = BTreeMap::new();
    let mut executions: BTreeMap<u64, u32> = BTreeMap::new();
    let mut trades: BTreeMap<u64, Vec<&Output>> = BTreeMap::new();
    for output in &all {
        match output.event {
            Event::Accepted {
                order_id,
                account,
                client_order_id,
                ..
            } => {
                *accepted.entry(order_id.0).or_default() += 1;
                if client_order_id.0 > 0 {
                    *by_client_id
                        .entry((account.0, client_order_id.0))
                        .or_default() += 1;
                }
            }
            Event::BalanceChanged { .. } => {
                balance_seqs.insert(output.seq);
            }
            Event::Cancelled {
                order_id, reason, ..
            } => {
                cancelled.insert(order_id.0);
                if reason == CancelReason::Requested {
                    *cancels_done.entry(order_id.0).or_default() += 1;
                }
            }
            Event::Replaced { order_id, .. } => {
                replaced.insert(order_id.0);
                *replaces_done.entry(order_id.0).or_default() += 1;
            }
            Event::Execution {
                exec_id, trade_id, ..
            } => {
                *executions.entry(exec_id.0).or_default() += 1;
                trades.entry(trade_id.0).or_default().push(output);
            }
            _ => {}
        }
    }

    // RPO = 0: everything acknowledged is there.
    for op in history.iter().filter(|op| op.kind != "invoke") {
        match op.kind.as_str() {
            "ok" => verdict.acknowledged += 1,
            "info" => {
                verdict.unknown += 1;
                continue;
            }
            _ => continue,
        }
        let result = op.result.clone().unwrap_or_default();
        let missing = match op.f.as_str() {
            "order" => result["order_id"]
                .as_u64()
                .is_some_and(|id| !accepted.contains_key(&id)),
            "cancel" => {
                result["cancelled"].as_bool() == Some(true) && !cancelled.contains(&op.value)
            }
            "replace" => {
                result["replaced"].as_bool() == Some(true) && !replaced.contains(&op.value)
            }
            "deposit" | "withdraw" => result["seq"]
                .as_u64()
                .is_some_and(|seq| !balance_seqs.contains(&seq)),
            _ => false,
        };
        if missing {
            verdict.lost += 1;
            verdict.lost_at_ns.push(op.time_ns);
            verdict.problem(format!(
                "lost: acknowledged {} {:?} -> {result}",
                op.f, op.value
            ));
        }
    }

    // Nothing the client was told failed took effect. An order is known by its client order
    // id; a cancel or replace by the order it names, so those are counted: the reports may
    // show no more of them than were acknowledged as done or left unknown.
    let mut cancels_allowed: BTreeMap<u64, u32> = BTreeMap::new();
    let mut replaces_allowed: BTreeMap<u64, u32> = BTreeMap::new();
    let mut failed_amends: Vec<&Op> = Vec::new();
    for op in history.iter().filter(|op| op.kind != "invoke") {
        let result = op.result.clone().unwrap_or_default();
        let (allowed, done_field) = match op.f.as_str() {
            "cancel" => (&mut cancels_allowed, "cancelled"),
            "replace" => (&mut replaces_allowed, "replaced"),
            "order" => {
                if op.kind == "fail" && by_client_id.contains_key(&(op.account, op.value)) {
                    verdict.failed_took_effect += 1;
                    verdict.problem(format!(
                        "order {} of account {} was reported failed ({result}), yet it was accepted",
                        op.value, op.account
                    ));
                }
                continue;
            }
            _ => continue,
        };
        match op.kind.as_str() {
            "ok" if result[done_field].as_bool() == Some(true) => {
                *allowed.entry(op.value).or_default() += 1
            }
            "info" => *allowed.entry(op.value).or_default() += 1,
            "fail" => failed_amends.push(op),
            _ => {}
        }
    }
    for op in failed_amends {
        let (done, allowed) = if op.f == "cancel" {
            (&cancels_done, &cancels_allowed)
        } else {
            (&replaces_done, &replaces_allowed)
        };
        let (done, allowed) = (
            done.get(&op.value).copied().unwrap_or(0),
            allowed.get(&op.value).copied().unwrap_or(0),
        );
        if done > allowed {
            verdict.failed_took_effect += 1;
            verdict.problem(format!(
                "{} of order {} was reported failed ({}), yet the reports show {done} taking effect and only {allowed} acknowledged or unknown",
                op.f,
                op.value,
                op.result.clone().unwrap_or_default()
            ));
        }
    }

    // Nothing twice.
    for (id, count) in &accepted {
        if *count > 1 {
            verdict.duplicates += 1;
            verdict.problem(format!("order {id} accepted {count} times"));
        }
    }
    for ((account, client_order_id), count) in &by_client_id {
        if *count > 1 {
            verdict.duplicates += 1;
            verdict.problem(format!(
                "client order id {client_order_id} of account {account} entered {count} times"
            ));
        }
    }
    for (id, count) in &executions {
        if *count > 1 {
            verdict.duplicates += 1;
            verdict.problem(format!("execution {id} reported {count} times"));
        }
    }

    // Both sides of every trade.
    for (trade_id, sides) in &trades {
        let matched = match sides[..] {
            [a, b] => match (a.event, b.event) {
                (
                    Event::Execution {
                        side: side_a,
                        price: price_a,
                        qty: qty_a,
                        liquidity: liquidity_a,
                        ..
                    },
                    Event::Execution {
                        side: side_b,
                        price: price_b,
                        qty: qty_b,
                        liquidity: liquidity_b,
                        ..
                    },
                ) => {
                    side_a != side_b
                        && price_a == price_b
                        && qty_a == qty_b
                        && (liquidity_a == Liquidity::Maker) != (liquidity_b == Liquidity::Maker)
                }
                _ => false,
            },
            _ => false,
        };
        if !matched {
            verdict.unmatched_trades += 1;
            verdict.problem(format!("trade {trade_id}: sides {sides:?}"));
        }
    }

    // Replicas identical.
    let mut hashes: BTreeMap<u64, BTreeSet<&String>> = BTreeMap::new();
    for (id, (index, hash, divergence)) in &state.nodes {
        hashes.entry(*index).or_default().insert(hash);
        if let Some(divergence) = divergence {
            verdict.divergences += 1;
            verdict.problem(format!("node {id} reports a divergence: {divergence}"));
        }
    }
    for (index, distinct) in &hashes {
        if distinct.len() > 1 {
            verdict.divergences += 1;
            verdict.problem(format!(
                "different output hashes at index {index}: {distinct:?}"
            ));
        }
    }
    if hashes.len() > 1 {
        verdict.divergences += 1;
        verdict.problem(format!("the nodes never converged: {:?}", state.nodes));
    }

    // Money is conserved: per asset, the balances add up to what was deposited minus what was
    // withdrawn (trades only move it between accounts), and none is negative.
    let mut moved: BTreeMap<u32, i64> = BTreeMap::new();
    for output in &all {
        if let Event::BalanceChanged { asset, delta, .. } = output.event {
            *moved.entry(asset.0).or_default() += delta.0;
        }
    }
    let mut held: BTreeMap<u32, i64> = BTreeMap::new();
    for (account, balances) in &state.balances {
        for &(asset, available, locked) in balances {
            *held.entry(asset).or_default() += available + locked;
            if available < 0 || locked < 0 {
                verdict.conservation_errors += 1;
                verdict.problem(format!(
                    "account {account} asset {asset}: negative balance {available} / {locked}"
                ));
            }
        }
    }
    for asset in moved.keys().chain(held.keys()).collect::<BTreeSet<_>>() {
        let (deposited, total) = (
            moved.get(asset).copied().unwrap_or(0),
            held.get(asset).copied().unwrap_or(0),
        );
        if deposited != total {
            verdict.conservation_errors += 1;
            verdict.problem(format!(
                "asset {asset}: balances add up to {total}, deposits less withdrawals to {deposited}"
            ));
        }
    }

    // The ledger accounts behave as one account each would.
    let effects: BTreeSet<(u64, i64)> = all
        .iter()
        .filter_map(|output| match output.event {
            Event::BalanceChanged {
                account,
                asset,
                delta,
                ..
            } if asset == workload::QUOTE => Some((account.0, delta.0)),
            _ => None,
        })
        .collect();
    let final_balances: BTreeMap<u64, i64> = workload::LEDGER_ACCOUNTS
        .iter()
        .map(|&account| {
            let available = state
                .balances
                .get(&account)
                .and_then(|held| held.iter().find(|b| b.0 == workload::QUOTE.0))
                .map_or(0, |b| b.1);
            (account, available)
        })
        .collect();
    let ledger = linearizable::check(
        history,
        &workload::LEDGER_ACCOUNTS,
        &effects,
        &final_balances,
        search_visits_max,
    );
    verdict.linearizability_ops = ledger.operations;
    verdict.linearizability_errors = ledger.violations.len() as u64;
    verdict.linearizability_inconclusive = ledger.inconclusive.len() as u64;
    verdict.linearizability_inconclusive_ops = ledger.inconclusive_operations;
    for why in ledger.violations {
        verdict.problem(format!("not linearizable: {why}"));
    }
    for why in ledger.inconclusive {
        verdict.problem(format!("linearizability not settled: {why}"));
    }

    // Sequences. Timestamps come from the leaders' clocks (which the nemesis moves) but the
    // sequencer never lets them go back.
    for (broker, reports) in &state.reports {
        if let Some(pair) = reports
            .windows(2)
            .find(|w| w[1].timestamp_ns < w[0].timestamp_ns)
        {
            verdict.timestamp_errors += 1;
            verdict.problem(format!(
                "broker {broker}'s report timestamps go back: seq {} at {} then seq {} at {}",
                pair[0].seq, pair[0].timestamp_ns, pair[1].seq, pair[1].timestamp_ns
            ));
        }
    }
    for (broker, reports) in &state.reports {
        if let Some(pair) = reports
            .windows(2)
            .find(|w| w[0].seq > w[1].seq || w[0] == w[1])
        {
            verdict.sequence_errors += 1;
            verdict.problem(format!(
                "broker {broker}'s reports go back: {} then {}",
                pair[0].seq, pair[1].seq
            ));
        }
    }
    if state.market_data_gaps > 0 {
        verdict.market_data_gaps += state.market_data_gaps;
        verdict.problem(format!("{} market data gaps", state.market_data_gaps));
    }
    if !state.market_data_book_matches {
        verdict.book_mismatches += 1;
        verdict.problem("the market data book differs from the engine's".into());
    }
    verdict
}

#[cfg(test)]
mod tests {
    use exchange::domain::{
        AccountId, AssetId, ClientOrderId, ExecId, OrderId, OrderType, Price, Qty, Side, SymbolId,
        TimeInForce, TradeId,
    };

    use super::*;

    fn accepted(seq: u64, order_id: u64, client_order_id: u64) -> Output {
        Output {
            seq,
            timestamp_ns: 0,
            event: Event::Accepted {
                order_id: OrderId(order_id),
                account: AccountId(101),
                symbol: SymbolId(1),
                client_order_id: ClientOrderId(client_order_id),
                side: Side::Buy,
                order_type: OrderType::Limit,
                time_in_force: TimeInForce::Gtc,
                price: Price(1_000),
                qty: Qty(1),
            },
        }
    }

    fn execution(seq: u64, exec_id: u64, side: Side, liquidity: Liquidity, qty: i64) -> Output {
        Output {
            seq,
            timestamp_ns: 0,
            event: Event::Execution {
                exec_id: ExecId(exec_id),
                trade_id: TradeId(1),
                order_id: OrderId(seq),
                account: AccountId(101),
                symbol: SymbolId(1),
                client_order_id: ClientOrderId(0),
                side,
                price: Price(1_000),
                qty: Qty(qty),
                leaves_qty: Qty(0),
                liquidity,
                counter_order_id: OrderId(0),
            },
        }
    }

    fn order_op(kind: &str, client_order_id: u64, order_id: Option<u64>) -> Op {
        Op {
            process: 1,
            op: client_order_id,
            kind: kind.into(),
            f: "order".into(),
            time_ns: 0,
            account: 101,
            value: client_order_id,
            result: Some(serde_json::json!({ "order_id": order_id })),
        }
    }

    fn state(reports: Vec<Output>) -> FinalState {
        FinalState {
            reports: BTreeMap::from([(1, reports)]),
            nodes: BTreeMap::from([
                (1, (9, "aa".to_string(), None)),
                (2, (9, "aa".to_string(), None)),
            ]),
            market_data_gaps: 0,
            market_data_book_matches: true,
            balances: BTreeMap::new(),
            members: vec![1, 2],
        }
    }

    #[test]
    fn a_clean_run_passes() {
        let history = vec![order_op("ok", 1, Some(65_536)), order_op("info", 2, None)];
        let verdict = check(
            &history,
            &state(vec![
                accepted(65_536, 65_536, 1),
                execution(70_000, 1, Side::Buy, Liquidity::Taker, 1),
                execution(70_000, 2, Side::Sell, Liquidity::Maker, 1),
            ]),
        );
        assert!(verdict.passed(), "{verdict:?}");
        assert_eq!((verdict.acknowledged, verdict.unknown), (1, 1));
    }

    #[test]
    fn each_checker_catches_its_fault() {
        // An acknowledged order that is not there.
        let lost = check(&[order_op("ok", 1, Some(65_536))], &state(Vec::new()));
        assert_eq!(lost.lost, 1);
        // One client order id entered twice.
        let doubled = check(
            &[],
            &state(vec![
                accepted(65_536, 65_536, 1),
                accepted(131_072, 131_072, 1),
            ]),
        );
        assert_eq!(doubled.duplicates, 1);
        // A trade with one side only, and one whose sides disagree.
        let one_sided = check(
            &[],
            &state(vec![execution(70_000, 1, Side::Buy, Liquidity::Taker, 1)]),
        );
        assert_eq!(one_sided.unmatched_trades, 1);
        let disagree = check(
            &[],
            &state(vec![
                execution(70_000, 1, Side::Buy, Liquidity::Taker, 1),
                execution(70_000, 2, Side::Sell, Liquidity::Maker, 2),
            ]),
        );
        assert_eq!(disagree.unmatched_trades, 1);
        // Replicas with different hashes at one index.
        let mut diverged = state(Vec::new());
        diverged.nodes.insert(3, (9, "bb".into(), None));
        assert_eq!(check(&[], &diverged).divergences, 1);
        // Reports that go back.
        let back = check(
            &[],
            &state(vec![
                accepted(131_072, 131_072, 2),
                accepted(65_536, 65_536, 1),
            ]),
        );
        assert_eq!(back.sequence_errors, 1);
        // Money from nowhere: a deposit of 5, balances of 7.
        let mut minted = state(vec![Output {
            seq: 1,
            timestamp_ns: 0,
            event: Event::BalanceChanged {
                account: AccountId(101),
                asset: AssetId(2),
                delta: exchange::domain::Amount(5),
                available: exchange::domain::Amount(5),
                held: exchange::domain::Amount(0),
            },
        }]);
        minted.balances.insert(101, vec![(2, 5, 0)]);
        assert!(check(&[], &minted).passed(), "conserved");
        minted.balances.insert(102, vec![(2, 2, 0)]);
        assert_eq!(check(&[], &minted).conservation_errors, 1);
        let _ = AssetId(1);
    }

    fn op(kind: &str, f: &str, account: u64, value: u64, result: serde_json::Value) -> Op {
        Op {
            process: 1,
            op: 0,
            kind: kind.into(),
            f: f.into(),
            time_ns: 0,
            account,
            value,
            result: Some(result),
        }
    }

    /// An invoke and its completion, `at` and `at + 1` ns.
    fn timed(id: u64, at: u64, mut done: Op) -> [Op; 2] {
        done.op = id;
        done.time_ns = at + 1;
        let invoked = Op {
            op: id,
            kind: "invoke".into(),
            time_ns: at,
            result: None,
            ..done.clone()
        };
        [invoked, done]
    }

    fn output(seq: u64, event: Event) -> Output {
        Output {
            seq,
            timestamp_ns: seq,
            event,
        }
    }

    fn cancelled(seq: u64, order_id: u64) -> Output {
        output(
            seq,
            Event::Cancelled {
                order_id: OrderId(order_id),
                account: AccountId(101),
                symbol: SymbolId(1),
                client_order_id: ClientOrderId(1),
                leaves_qty: Qty(1),
                reason: CancelReason::Requested,
            },
        )
    }

    fn replaced(seq: u64, order_id: u64) -> Output {
        output(
            seq,
            Event::Replaced {
                order_id: OrderId(order_id),
                account: AccountId(101),
                symbol: SymbolId(1),
                price: Price(1_000),
                qty: Qty(2),
                priority_kept: false,
            },
        )
    }

    fn deposited(seq: u64, account: u64, amount: i64, available: i64) -> Output {
        output(
            seq,
            Event::BalanceChanged {
                account: AccountId(account),
                asset: workload::QUOTE,
                delta: exchange::domain::Amount(amount),
                available: exchange::domain::Amount(available),
                held: exchange::domain::Amount(0),
            },
        )
    }

    #[test]
    fn lost_cancels_replaces_and_deposits_are_caught() {
        let history = [
            op(
                "ok",
                "cancel",
                101,
                7,
                serde_json::json!({"cancelled": true, "seq": 9}),
            ),
            op(
                "ok",
                "replace",
                101,
                8,
                serde_json::json!({"replaced": true, "seq": 10}),
            ),
            op("ok", "deposit", 101, 5, serde_json::json!({"seq": 11})),
        ];
        let verdict = check(&history, &state(Vec::new()));
        assert_eq!(verdict.lost, 3, "{verdict:?}");
        let present = state(vec![
            cancelled(9, 7),
            replaced(10, 8),
            deposited(11, 101, 5, 5),
        ]);
        let mut present = present;
        present
            .balances
            .insert(101, vec![(workload::QUOTE.0, 5, 0)]);
        let verdict = check(&history, &present);
        assert!(verdict.passed(), "{verdict:?}");
    }

    #[test]
    fn a_command_reported_failed_that_took_effect_is_caught() {
        let failed = |f: &str, value| op("fail", f, 101, value, serde_json::json!("refused"));
        // An order told "failed" whose client order id was accepted.
        let verdict = check(
            &[failed("order", 1)],
            &state(vec![accepted(65_536, 65_536, 1)]),
        );
        assert_eq!(verdict.failed_took_effect, 1, "{verdict:?}");
        // A cancel told "failed" of an order the reports show cancelled on request.
        let verdict = check(&[failed("cancel", 7)], &state(vec![cancelled(9, 7)]));
        assert_eq!(verdict.failed_took_effect, 1, "{verdict:?}");
        // A replace told "failed", with one replace of the order acknowledged and two done.
        let history = [
            failed("replace", 8),
            op(
                "ok",
                "replace",
                101,
                8,
                serde_json::json!({"replaced": true}),
            ),
        ];
        let two = state(vec![replaced(9, 8), replaced(10, 8)]);
        assert_eq!(check(&history, &two).failed_took_effect, 1);
        // Allowed: a failed cancel beside an unknown one (that one took effect), and a failed
        // order that was never accepted.
        let history = [
            failed("cancel", 7),
            op("info", "cancel", 101, 7, serde_json::json!("timed out")),
            failed("order", 2),
        ];
        let verdict = check(&history, &state(vec![cancelled(9, 7)]));
        assert_eq!(verdict.failed_took_effect, 0, "{verdict:?}");
    }

    #[test]
    fn a_stale_ledger_read_is_caught() {
        let account = workload::LEDGER_ACCOUNTS[0];
        let mut history = Vec::new();
        history.extend(timed(
            1,
            10,
            op(
                "ok",
                "deposit",
                account,
                1_000,
                serde_json::json!({"seq": 5, "available": 1_000}),
            ),
        ));
        // Read after the deposit was answered, yet it saw the balance before it.
        history.extend(timed(
            2,
            20,
            op(
                "ok",
                "read",
                account,
                0,
                serde_json::json!({"available": 0}),
            ),
        ));
        let mut final_state = state(vec![deposited(5, account, 1_000, 1_000)]);
        final_state
            .balances
            .insert(account, vec![(workload::QUOTE.0, 1_000, 0)]);
        let verdict = check(&history, &final_state);
        assert_eq!(verdict.linearizability_errors, 1, "{verdict:?}");
        // The same read seeing the deposit is fine.
        history[3].result = Some(serde_json::json!({"available": 1_000}));
        let verdict = check(&history, &final_state);
        assert!(verdict.passed(), "{verdict:?}");
        assert_eq!(
            verdict.linearizability_ops, 5,
            "two operations and three final reads"
        );
    }

    #[test]
    fn market_data_and_timestamp_faults_are_caught() {
        let mut gaps = state(Vec::new());
        gaps.market_data_gaps = 2;
        assert_eq!(check(&[], &gaps).market_data_gaps, 2);
        let mut wrong_book = state(Vec::new());
        wrong_book.market_data_book_matches = false;
        assert_eq!(check(&[], &wrong_book).book_mismatches, 1);
        let mut later = accepted(131_072, 131_072, 2);
        later.timestamp_ns = 5;
        let mut earlier = accepted(65_536, 65_536, 1);
        earlier.timestamp_ns = 9;
        let back = check(&[], &state(vec![earlier, later]));
        assert_eq!((back.timestamp_errors, back.sequence_errors), (1, 0));
    }

    fn facts() -> RunFacts {
        RunFacts {
            faults_asked: 2,
            faults_injected: 2,
            missing_kinds: Vec::new(),
            skipped: Vec::new(),
            run_seconds: 1.0,
            recoveries: vec![
                ("kill".into(), 0.5, Some(12.0)),
                ("halves".into(), 0.8, Some(150.0)),
            ],
        }
    }

    const RULES: Rules = Rules {
        rto_max_ms: 1_000.0,
        acknowledged_per_s_min: 2.0,
        ledger_ops_per_s_min: 2.0,
        inconclusive_share_max: 0.05,
    };

    /// A verdict the checkers passed, with enough operations for the rules.
    fn busy() -> Verdict {
        Verdict {
            acknowledged: 10,
            linearizability_ops: 10,
            ..Verdict::default()
        }
    }

    fn judged(facts: &RunFacts, state: &FinalState, verdict: Verdict) -> Verdict {
        let mut verdict = verdict;
        judge_run(&mut verdict, facts, state, &RULES);
        verdict
    }

    #[test]
    fn every_run_rule_fails_a_run_that_breaks_it() {
        let clean = judged(&facts(), &state(Vec::new()), busy());
        assert!(clean.passed(), "{clean:?}");
        // A kind that could not be injected, unless allowed.
        let mut missing = facts();
        missing.missing_kinds = vec![("ring".into(), "nftables is not installed".into(), false)];
        assert_eq!(
            judged(&missing, &state(Vec::new()), busy()).coverage_errors,
            1
        );
        missing.missing_kinds[0].2 = true;
        assert!(judged(&missing, &state(Vec::new()), busy()).passed());
        // Fewer faults than asked.
        let mut fewer = facts();
        fewer.faults_injected = 1;
        fewer.skipped = vec!["fault 2 (kill-leader): no leader agreed on within 10 s".into()];
        let verdict = judged(&fewer, &state(Vec::new()), busy());
        assert_eq!(verdict.coverage_errors, 1);
        assert!(
            verdict.problems[0].contains("no leader agreed"),
            "{verdict:?}"
        );
        // An idle run: too few acknowledged operations, or ledger operations, for its length.
        let mut long = facts();
        long.run_seconds = 60.0;
        assert_eq!(judged(&long, &state(Vec::new()), busy()).coverage_errors, 2);
        assert_eq!(
            judged(&facts(), &state(Vec::new()), Verdict::default()).coverage_errors,
            2
        );
        // A node whose final status is missing (only one node answered).
        let mut one_answered = state(Vec::new());
        one_answered.nodes.remove(&2);
        let verdict = judged(&facts(), &one_answered, busy());
        assert_eq!(verdict.coverage_errors, 1, "{verdict:?}");
        // A linearizability search that settled too little.
        let unsettled = Verdict {
            linearizability_inconclusive: 1,
            linearizability_inconclusive_ops: 3,
            ..busy()
        };
        assert_eq!(
            judged(&facts(), &state(Vec::new()), unsettled).coverage_errors,
            1
        );
        // A fault that cost clients more than the limit, and one after which nothing was
        // acknowledged at all.
        let mut slow = facts();
        slow.recoveries
            .push(("kill-leader".into(), 0.9, Some(1_500.0)));
        slow.recoveries.push(("pause-leader".into(), 0.95, None));
        assert_eq!(judged(&slow, &state(Vec::new()), busy()).rto_errors, 2);
    }
}
