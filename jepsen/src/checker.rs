//! Checkers over the history and the final state. Each counts what it finds and keeps the
//! first few examples; a run passes only if every count is zero.

use std::collections::{BTreeMap, BTreeSet};

use exchange::domain::{Event, Liquidity, Output};
use serde::Serialize;

use crate::linearizable;
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
    /// Report streams whose sequence numbers do not rise, and market data gaps.
    pub sequence_errors: u64,
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
    /// Nodes that exited by themselves during the run (a fault must never crash a node).
    pub crashes: u64,
    /// The run could not gather what the checkers need (a report feed that failed).
    pub harness_errors: u64,
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
            && self.conservation_errors == 0
            && self.linearizability_errors == 0
            && self.crashes == 0
            && self.harness_errors == 0
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < 20 {
            self.problems.push(text);
        }
    }
}

pub fn check(history: &[Op], state: &FinalState) -> Verdict {
    let mut verdict = Verdict::default();
    let all: Vec<&Output> = state.reports.values().flatten().collect();

    // What the final state holds.
    let mut accepted: BTreeMap<u64, u32> = BTreeMap::new();
    let mut by_client_id: BTreeMap<(u64, u64), u32> = BTreeMap::new();
    let mut balance_seqs: BTreeSet<u64> = BTreeSet::new();
    let mut cancelled: BTreeSet<u64> = BTreeSet::new();
    let mut replaced: BTreeSet<u64> = BTreeSet::new();
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
            Event::Cancelled { order_id, .. } => {
                cancelled.insert(order_id.0);
            }
            Event::Replaced { order_id, .. } => {
                replaced.insert(order_id.0);
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
    );
    verdict.linearizability_ops = ledger.operations;
    verdict.linearizability_errors = ledger.violations.len() as u64;
    verdict.linearizability_inconclusive = ledger.inconclusive.len() as u64;
    for why in ledger.violations {
        verdict.problem(format!("not linearizable: {why}"));
    }
    for why in ledger.inconclusive {
        verdict.problem(format!(
            "linearizability not settled (not a failure): {why}"
        ));
    }

    // Sequences. Timestamps come from the leaders' clocks (which the nemesis moves) but the
    // sequencer never lets them go back.
    for (broker, reports) in &state.reports {
        if let Some(pair) = reports
            .windows(2)
            .find(|w| w[1].timestamp_ns < w[0].timestamp_ns)
        {
            verdict.sequence_errors += 1;
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
        verdict.sequence_errors += state.market_data_gaps;
        verdict.problem(format!("{} market data gaps", state.market_data_gaps));
    }
    if !state.market_data_book_matches {
        verdict.sequence_errors += 1;
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
}
