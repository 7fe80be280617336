//! Faults planted so that the chaos suite and the tests can show their checkers catch them.
//! The settings (`GatewayFaults`) exist in every build, so that configuration is one type; the
//! faults themselves are compiled only with the `test-faults` feature: a production build
//! carries none of this code, and its hooks below are empty.

use super::*;

/// The planted faults' counters ("every Nth") and the stale-read fault's memory (unread, and
/// empty, in a production build).
#[derive(Default)]
#[cfg_attr(not(feature = "test-faults"), allow(dead_code))]
pub struct FaultState {
    orders: AtomicU64,
    commands: AtomicU64,
    market_messages: AtomicU64,
    executions: AtomicU64,
    report_batches: AtomicU64,
    balance_reads: AtomicU64,
    admin_moves: AtomicU64,
    /// The last balances read per account, for the stale-read fault to answer again.
    balances: std::sync::Mutex<std::collections::HashMap<u64, Vec<Balance>>>,
}

/// Counts one more with `counter` and says whether it is an Nth one (the planted faults'
/// "every Nth").
#[cfg(feature = "test-faults")]
pub(super) fn nth(counter: &AtomicU64, every: u64) -> bool {
    (counter.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(every)
}

/// Faults planted in the gateway so that the chaos suite can show its checkers catch them.
/// Only `test-faults` builds of exchange-node can set them; the default is none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GatewayFaults {
    /// Answer every Nth identified new order of a broker with a made-up acceptance, without
    /// sequencing it: an acknowledged order that does not exist.
    pub ack_unsequenced_every: Option<u64>,
    /// Sequence every Nth identified new order of a broker a second time as the operator's,
    /// past the exactly-once window: the client order id is entered twice.
    pub double_submit_every: Option<u64>,
    /// Leave every Nth execution out of the report stream: one side of a trade never
    /// reaches its broker.
    pub drop_execution_every: Option<u64>,
    /// Send every Nth report batch of two or more with its last two reports swapped: the
    /// stream goes back.
    pub reorder_reports_every: Option<u64>,
    /// Answer every Nth balances read with the previous read of that account: a stale read.
    pub stale_balances_every: Option<u64>,
    /// Count held funds as available too in balances replies: money from nowhere.
    pub count_held_twice: bool,
    /// Answer every Nth broker command that was sequenced with a refusal: the broker is told
    /// "failed" for a command that took effect.
    pub refuse_sequenced_every: Option<u64>,
    /// Leave every Nth market data message (not a snapshot) out of a subscriber's stream: a gap.
    pub market_gap_every: Option<u64>,
    /// Answer depth reads with one more lot at the best bid than the book holds: a wrong
    /// final book.
    pub wrong_depth: bool,
    /// Stamp the last report of every Nth report batch of two or more earlier than the first:
    /// report timestamps that go back.
    pub report_time_back_every: Option<u64>,
    /// Exit the process after this many broker commands (a node crash).
    pub exit_after_commands: Option<u64>,
    /// Answer every Nth operator deposit or withdrawal that was sequenced with "outcome
    /// unknown": history the linearizability search cannot settle.
    pub admin_unknown_every: Option<u64>,
    /// Once this node has applied this log index, report it a follower that knows no
    /// leader, even when it leads: a run that cannot find the leader to fault.
    pub status_hides_leader_from: Option<u64>,
    /// Refuse every status request: a node whose final state nobody can read.
    pub status_refused: bool,
}

#[cfg(feature = "test-faults")]
impl Gateway {
    /// The test-only refusal of a command that was sequenced (`GatewayFaults`), and the
    /// test-only crash after a number of commands.
    pub(super) fn planted_refusal(&self, principal: Principal) -> bool {
        let GatewayFaults {
            refuse_sequenced_every,
            exit_after_commands,
            ..
        } = self.faults;
        if principal.is_operator()
            || (refuse_sequenced_every.is_none() && exit_after_commands.is_none())
        {
            return false;
        }
        let n = self.fault_state.commands.fetch_add(1, Ordering::Relaxed) + 1;
        if exit_after_commands.is_some_and(|limit| n >= limit) {
            eprintln!("exchange-node: exiting after {n} commands (a planted test fault)");
            std::process::exit(70);
        }
        refuse_sequenced_every.is_some_and(|every| n.is_multiple_of(every))
    }

    /// The test-only "outcome unknown" for an operator's deposit or withdrawal that was
    /// sequenced.
    pub(super) fn planted_unknown(&self, principal: Principal, command: &Command) -> bool {
        let Some(every) = self.faults.admin_unknown_every else {
            return false;
        };
        principal.is_operator()
            && matches!(
                command,
                Command::Admin(AdminCommand::Deposit { .. } | AdminCommand::Withdraw { .. })
            )
            && nth(&self.fault_state.admin_moves, every)
    }

    /// The test-only faults (`GatewayFaults`): a made-up acceptance instead of sequencing, or a
    /// second copy of the order sequenced past the exactly-once window.
    pub(super) async fn planted_fault(
        &self,
        principal: Principal,
        command: &Command,
    ) -> Option<Reply> {
        let GatewayFaults {
            ack_unsequenced_every,
            double_submit_every,
            ..
        } = self.faults;
        if ack_unsequenced_every.is_none() && double_submit_every.is_none() {
            return None;
        }
        let Command::NewOrder(order) = command else {
            return None;
        };
        if principal.is_operator() || order.client_order_id.0 == 0 || !self.publishing() {
            return None;
        }
        let n = self.fault_state.orders.fetch_add(1, Ordering::Relaxed) + 1;
        if ack_unsequenced_every.is_some_and(|every| n.is_multiple_of(every)) {
            let made_up = Output {
                seq: u64::MAX - n,
                timestamp_ns: 0,
                event: exchange_domain::Event::Accepted {
                    order_id: exchange_domain::OrderId(u64::MAX - n),
                    account: order.account,
                    symbol: order.symbol,
                    client_order_id: order.client_order_id,
                    side: order.side,
                    order_type: order.order_type,
                    time_in_force: order.time_in_force,
                    price: order.price,
                    qty: order.qty,
                },
            };
            return Some(Reply::Outputs(vec![made_up]));
        }
        if double_submit_every.is_some_and(|every| n.is_multiple_of(every)) {
            let copy = BrokerCommand {
                broker: BrokerId::OPERATOR,
                command: *command,
            };
            let _ = self.sequencer.submit_many(vec![copy]).await;
        }
        None
    }

    /// The test-only faults of balances replies: held funds counted twice, or a stale read.
    pub(super) fn planted_balance_faults(
        &self,
        account: u64,
        mut balances: Vec<Balance>,
    ) -> Vec<Balance> {
        if self.faults.count_held_twice {
            for (_, available, held) in balances.iter_mut() {
                *available += *held;
            }
        }
        if let Some(every) = self.faults.stale_balances_every {
            let n = self
                .fault_state
                .balance_reads
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            let mut last = self
                .fault_state
                .balances
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let previous = last.insert(account, balances.clone());
            if n.is_multiple_of(every) {
                if let Some(previous) = previous {
                    return previous;
                }
            }
        }
        balances
    }

    /// The test-only market data gap: every Nth message (other than a snapshot) left out.
    pub(super) fn planted_market_gap(&self, batch: &mut Vec<Arc<Published>>) {
        let Some(every) = self.faults.market_gap_every else {
            return;
        };
        batch.retain(|published| {
            published.message.is_snapshot() || !nth(&self.fault_state.market_messages, every)
        });
    }

    /// The test-only faults of the report stream: executions left out, reports reordered,
    /// timestamps that go back.
    pub(super) fn planted_report_faults(&self, batch: &mut Vec<Output>) {
        if let Some(every) = self.faults.report_time_back_every {
            if batch.len() >= 2 && nth(&self.fault_state.report_batches, every) {
                let first = batch[0].timestamp_ns;
                if let Some(last) = batch.last_mut() {
                    last.timestamp_ns = first.saturating_sub(1);
                }
            }
        }
        if let Some(every) = self.faults.drop_execution_every {
            batch.retain(|report| {
                !matches!(report.event, exchange_domain::Event::Execution { .. })
                    || !nth(&self.fault_state.executions, every)
            });
        }
        if let Some(every) = self.faults.reorder_reports_every {
            if batch.len() >= 2 && nth(&self.fault_state.report_batches, every) {
                let last = batch.len() - 1;
                batch.swap(last - 1, last);
            }
        }
    }

    /// The test-only status refusal: a node whose final state nobody can read.
    pub(super) fn planted_status_refused(&self) -> bool {
        self.faults.status_refused
    }

    /// The test-only hidden leader: from a log index on, report "follower, no leader".
    pub(super) fn planted_hidden_leader(&self, applied_index: u64) -> bool {
        self.faults
            .status_hides_leader_from
            .is_some_and(|index| applied_index >= index)
    }
}

/// Without `test-faults`: no fault, and nothing for the optimiser to keep.
#[cfg(not(feature = "test-faults"))]
impl Gateway {
    #[inline(always)]
    pub(super) fn planted_refusal(&self, _: Principal) -> bool {
        false
    }

    #[inline(always)]
    pub(super) fn planted_unknown(&self, _: Principal, _: &Command) -> bool {
        false
    }

    #[inline(always)]
    pub(super) async fn planted_fault(&self, _: Principal, _: &Command) -> Option<Reply> {
        None
    }

    #[inline(always)]
    pub(super) fn planted_balance_faults(&self, _: u64, balances: Vec<Balance>) -> Vec<Balance> {
        balances
    }

    #[inline(always)]
    pub(super) fn planted_market_gap(&self, _: &mut Vec<Arc<Published>>) {}

    #[inline(always)]
    pub(super) fn planted_report_faults(&self, _: &mut Vec<Output>) {}

    #[inline(always)]
    pub(super) fn planted_status_refused(&self) -> bool {
        false
    }

    #[inline(always)]
    pub(super) fn planted_hidden_leader(&self, _: u64) -> bool {
        false
    }
}
