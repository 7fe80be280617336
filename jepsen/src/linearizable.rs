//! A linearizability check of the ledger accounts' histories: is there one order of every
//! deposit, withdrawal and balance read, each placed between its invoke and its completion,
//! in which every answer the clients got (the balance after, a refusal for too little money,
//! the balance read) is what a single account would have answered? Stale reads, lost or
//! doubled operations and answers out of order all make the answer no.
//!
//! The search keeps the set of states the account can be in (a balance, and which of the
//! operations still open have already taken effect), advancing it operation by operation in
//! time order, as Wing and Gong's and Lowe's checkers do. Each account is checked alone
//! (linearizability composes). Operations whose outcome the client never learned are settled
//! first from the desk's reports (every amount is unique in the run): one that took effect
//! must be placed somewhere after its invoke, one that did not is left out, so the search stays
//! small.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::workload::Op;

/// What a ledger operation does to the account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    Deposit(i64),
    Withdraw(i64),
    Read,
}

/// What the client was told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Observed {
    /// The balance after the operation (or the balance read).
    Balance(i64),
    /// A withdrawal refused for too little money: the balance was below its amount.
    Refused,
    /// The outcome never reached the client, but the reports show it took effect.
    Unobserved,
}

#[derive(Clone, Copy, Debug)]
struct LedgerOp {
    effect: Effect,
    observed: Observed,
    invoked_ns: u64,
    /// When the answer came; operations never answered must take effect before the end.
    completed_ns: u64,
}

impl LedgerOp {
    /// The balance after applying this operation to `balance`, if the answer allows it.
    fn apply(&self, balance: i64) -> Option<i64> {
        match (self.effect, self.observed) {
            (Effect::Read, Observed::Balance(seen)) => (balance == seen).then_some(balance),
            (Effect::Deposit(amount), Observed::Balance(after)) => {
                (balance + amount == after).then_some(after)
            }
            (Effect::Deposit(amount), Observed::Unobserved) => Some(balance + amount),
            (Effect::Withdraw(amount), Observed::Balance(after)) => {
                (balance >= amount && balance - amount == after).then_some(after)
            }
            (Effect::Withdraw(amount), Observed::Refused) => (balance < amount).then_some(balance),
            (Effect::Withdraw(amount), Observed::Unobserved) => {
                (balance >= amount).then_some(balance - amount)
            }
            _ => None,
        }
    }
}

/// The verdict over every ledger account.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Operations that entered the search.
    pub operations: u64,
    /// Accounts with no valid order of their operations, each with the first operation that
    /// could not be placed.
    pub violations: Vec<String>,
    /// Accounts whose search grew past its bounds (neither proven nor refuted).
    pub inconclusive: Vec<String>,
    /// The operations of those accounts.
    pub inconclusive_operations: u64,
}

/// Bounds of one account's search: states kept at once, and states visited in all (the
/// default of `exchange-chaos --search-visits-max`).
const STATES_MAX: usize = 50_000;
pub const VISITS_MAX: u64 = 20_000_000;

/// Checks the ledger accounts. `effects` holds every (account, delta) the desk's reports show
/// (every amount is unique); `final_balances` each account's balance at the end. An account
/// whose search visits more than `visits_max` states is left unsettled.
pub fn check(
    history: &[Op],
    accounts: &[u64],
    effects: &BTreeSet<(u64, i64)>,
    final_balances: &BTreeMap<u64, i64>,
    visits_max: u64,
) -> Outcome {
    let mut outcome = Outcome::default();
    let end = history.iter().map(|op| op.time_ns).max().unwrap_or(0) + 1;
    let mut invoked: BTreeMap<u64, &Op> = BTreeMap::new();
    let mut per_account: BTreeMap<u64, Vec<LedgerOp>> = BTreeMap::new();
    for op in history {
        if !accounts.contains(&op.account) {
            continue;
        }
        if op.kind == "invoke" {
            invoked.insert(op.op, op);
            continue;
        }
        let Some(start) = invoked.get(&op.op) else {
            continue;
        };
        let effect = match op.f.as_str() {
            "deposit" => Effect::Deposit(op.value as i64),
            "withdraw" => Effect::Withdraw(op.value as i64),
            "read" => Effect::Read,
            _ => continue,
        };
        let delta = match effect {
            Effect::Deposit(amount) => amount,
            Effect::Withdraw(amount) => -amount,
            Effect::Read => 0,
        };
        let took_effect = delta != 0 && effects.contains(&(op.account, delta));
        let result = op.result.clone().unwrap_or_default();
        let observed = match op.kind.as_str() {
            "ok" => match (
                effect,
                result["available"].as_i64(),
                result["rejected"].as_str(),
            ) {
                (_, Some(balance), _) => Observed::Balance(balance),
                (Effect::Withdraw(_), None, Some("InsufficientFunds")) => Observed::Refused,
                // Refused for another reason (the account unknown, say): says nothing of the
                // balance.
                _ => continue,
            },
            "info" if took_effect => Observed::Unobserved,
            "info" => continue,
            _ if took_effect => {
                outcome.violations.push(format!(
                    "account {}: {} of {} failed, yet the reports show it took effect",
                    op.account, op.f, op.value
                ));
                continue;
            }
            _ => continue,
        };
        let completed_ns = if observed == Observed::Unobserved {
            end
        } else {
            op.time_ns
        };
        per_account.entry(op.account).or_default().push(LedgerOp {
            effect,
            observed,
            invoked_ns: start.time_ns,
            completed_ns,
        });
    }
    for &account in accounts {
        let mut ops = per_account.remove(&account).unwrap_or_default();
        // The final balance, read after everything else.
        if let Some(&balance) = final_balances.get(&account) {
            ops.push(LedgerOp {
                effect: Effect::Read,
                observed: Observed::Balance(balance),
                invoked_ns: end + 1,
                completed_ns: end + 2,
            });
        }
        outcome.operations += ops.len() as u64;
        match search(&ops, visits_max) {
            Search::Linearizable => {}
            Search::Violation(why) => outcome.violations.push(format!("account {account}: {why}")),
            Search::TooLarge(why) => {
                outcome.inconclusive_operations += ops.len() as u64;
                outcome
                    .inconclusive
                    .push(format!("account {account}: {why}"))
            }
        }
    }
    outcome
}

#[derive(Debug, PartialEq, Eq)]
enum Search {
    Linearizable,
    Violation(String),
    TooLarge(String),
}

/// One state of the account: its balance and which open operations have taken effect (sorted).
type State = (i64, Vec<usize>);

fn search(ops: &[LedgerOp], visits_max: u64) -> Search {
    // Invokes before completions at equal times: operations that touch are concurrent.
    let mut events: Vec<(u64, bool, usize)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        events.push((op.invoked_ns, false, i));
        events.push((op.completed_ns, true, i));
    }
    events.sort();
    let mut open: BTreeSet<usize> = BTreeSet::new();
    let mut states: HashSet<State> = HashSet::from([(0, Vec::new())]);
    let mut visits = 0u64;
    for (_, completes, i) in events {
        if !completes {
            open.insert(i);
            continue;
        }
        // Every way to reach a state in which operation `i` has taken effect, by letting
        // open operations take effect one after another.
        let mut next: HashSet<State> = HashSet::new();
        let mut seen: HashSet<State> = HashSet::new();
        let mut stack: Vec<State> = states.drain().collect();
        while let Some(state) = stack.pop() {
            visits += 1;
            if visits > visits_max || next.len() > STATES_MAX {
                return Search::TooLarge(format!(
                    "over {visits_max} states visited or {STATES_MAX} kept"
                ));
            }
            if !seen.insert(state.clone()) {
                continue;
            }
            let (balance, done) = &state;
            if let Ok(at) = done.binary_search(&i) {
                let mut done = done.clone();
                done.remove(at);
                next.insert((*balance, done));
                continue;
            }
            for &candidate in open.iter() {
                let Err(at) = done.binary_search(&candidate) else {
                    continue;
                };
                if let Some(after) = ops[candidate].apply(*balance) {
                    let mut done = done.clone();
                    done.insert(at, candidate);
                    stack.push((after, done));
                }
            }
        }
        open.remove(&i);
        if next.is_empty() {
            let op = ops[i];
            let balances: BTreeSet<i64> = seen.iter().map(|s| s.0).collect();
            return Search::Violation(format!(
                "{:?} answered {:?} (invoked at {:.3} s, answered at {:.3} s) fits no order of the operations before it; the balance could then be one of {:?}",
                op.effect,
                op.observed,
                op.invoked_ns as f64 / 1e9,
                op.completed_ns as f64 / 1e9,
                balances.iter().take(8).collect::<Vec<_>>()
            ));
        }
        states = next;
    }
    Search::Linearizable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(effect: Effect, observed: Observed, invoked_ns: u64, completed_ns: u64) -> LedgerOp {
        LedgerOp {
            effect,
            observed,
            invoked_ns,
            completed_ns,
        }
    }

    #[test]
    fn a_sequential_history_is_linearizable() {
        let ops = [
            op(Effect::Deposit(10), Observed::Balance(10), 0, 1),
            op(Effect::Withdraw(4), Observed::Balance(6), 2, 3),
            op(Effect::Withdraw(7), Observed::Refused, 4, 5),
            op(Effect::Read, Observed::Balance(6), 6, 7),
        ];
        assert_eq!(search(&ops, VISITS_MAX), Search::Linearizable);
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // Two deposits overlap; the second to answer saw the first: fine either way round.
        let ops = [
            op(Effect::Deposit(10), Observed::Balance(15), 0, 10),
            op(Effect::Deposit(5), Observed::Balance(5), 1, 9),
            op(Effect::Read, Observed::Balance(15), 11, 12),
        ];
        assert_eq!(search(&ops, VISITS_MAX), Search::Linearizable);
    }

    #[test]
    fn a_stale_read_is_caught() {
        // The deposit was answered before the read began, yet the read missed it.
        let ops = [
            op(Effect::Deposit(10), Observed::Balance(10), 0, 1),
            op(Effect::Read, Observed::Balance(0), 2, 3),
        ];
        assert!(matches!(search(&ops, VISITS_MAX), Search::Violation(_)));
        // Overlapping, the same read is allowed.
        let ops = [
            op(Effect::Deposit(10), Observed::Balance(10), 0, 5),
            op(Effect::Read, Observed::Balance(0), 2, 3),
        ];
        assert_eq!(search(&ops, VISITS_MAX), Search::Linearizable);
    }

    #[test]
    fn an_unanswered_operation_that_took_effect_must_be_placed_once() {
        let ops = [
            op(Effect::Deposit(10), Observed::Unobserved, 0, 100),
            op(Effect::Read, Observed::Balance(0), 1, 2),
            op(Effect::Read, Observed::Balance(10), 3, 4),
            op(Effect::Read, Observed::Balance(10), 101, 102),
        ];
        assert_eq!(search(&ops, VISITS_MAX), Search::Linearizable);
        // Seen, then unseen again: no single point works.
        let ops = [
            op(Effect::Deposit(10), Observed::Unobserved, 0, 100),
            op(Effect::Read, Observed::Balance(10), 1, 2),
            op(Effect::Read, Observed::Balance(0), 3, 4),
        ];
        assert!(matches!(search(&ops, VISITS_MAX), Search::Violation(_)));
    }

    #[test]
    fn a_refusal_with_enough_money_is_caught() {
        let ops = [
            op(Effect::Deposit(10), Observed::Balance(10), 0, 1),
            op(Effect::Withdraw(5), Observed::Refused, 2, 3),
        ];
        assert!(matches!(search(&ops, VISITS_MAX), Search::Violation(_)));
    }

    #[test]
    fn histories_are_settled_from_the_reports() {
        let line = |op: u64, kind: &str, f: &str, value: u64, time_ns: u64, result| Op {
            process: 200,
            op,
            kind: kind.into(),
            f: f.into(),
            time_ns,
            account: 901,
            value,
            result,
        };
        let history = vec![
            line(1, "invoke", "deposit", 1_003, 0, None),
            line(
                1,
                "info",
                "deposit",
                1_003,
                5,
                Some(serde_json::json!("timed out")),
            ),
            line(2, "invoke", "read", 0, 6, None),
            line(
                2,
                "ok",
                "read",
                0,
                7,
                Some(serde_json::json!({ "available": 1_003 })),
            ),
        ];
        let finals = BTreeMap::from([(901, 1_003)]);
        // The reports show the deposit: linearizable.
        let effects = BTreeSet::from([(901, 1_003)]);
        let outcome = check(&history, &[901], &effects, &finals, VISITS_MAX);
        assert!(outcome.violations.is_empty(), "{outcome:?}");
        // They do not: the read saw money that never arrived.
        let outcome = check(&history, &[901], &BTreeSet::new(), &finals, VISITS_MAX);
        assert_eq!(outcome.violations.len(), 1, "{outcome:?}");
    }
}
