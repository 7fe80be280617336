//! The report journal: what the engine said about each broker's accounts, kept per broker so
//! that the gateway can push it to the broker's sessions and replay what a session missed.
//!
//! Every node keeps it (from the same committed stream, so every node's journal is the same),
//! so a follower that becomes leader publishes from where the old leader stopped. It is
//! bounded per broker; a session asking for reports older than what is kept is told so
//! instead of being given a stream with a hole in it.

use std::collections::VecDeque;
use std::sync::Mutex;

use exchange_domain::{BrokerId, Output};
use rustc_hash::FxHashMap;

/// Reports kept per broker (about 30 MiB at most each).
pub const REPORTS_PER_BROKER_MAX: usize = 1 << 18;

#[derive(Default)]
struct BrokerReports {
    events: VecDeque<Output>,
    /// Everything up to this sequence number may be gone (evicted, or before this node's
    /// start); the journal holds every report after it.
    complete_after: u64,
}

struct Journal {
    brokers: FxHashMap<BrokerId, BrokerReports>,
    /// What a broker not seen yet is complete after: where this node's engine started.
    start: u64,
}

/// Reports after `since` are not all kept any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The journal is complete after this sequence number.
    pub complete_after: u64,
}

pub struct ReportJournal {
    journal: Mutex<Journal>,
    /// The last sequence number recorded: subscribers wait on it.
    recorded: tokio::sync::watch::Sender<u64>,
}

impl ReportJournal {
    /// A journal that starts at sequence number `start` (the engine's last applied command).
    pub fn new(start: u64) -> Self {
        ReportJournal {
            journal: Mutex::new(Journal {
                brokers: FxHashMap::default(),
                start,
            }),
            recorded: tokio::sync::watch::Sender::new(start),
        }
    }

    /// Records the reports of applied entries, in order: (owning broker, output). One lock
    /// and one wake-up per call, however many entries it covers.
    pub fn record<'a>(&self, reports: impl IntoIterator<Item = &'a (BrokerId, Output)>) {
        let mut reports = reports.into_iter().peekable();
        if reports.peek().is_none() {
            return;
        }
        let mut last = 0;
        {
            let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
            let start = journal.start;
            for (broker, output) in reports {
                last = output.seq;
                let kept = journal
                    .brokers
                    .entry(*broker)
                    .or_insert_with(|| BrokerReports {
                        events: VecDeque::new(),
                        complete_after: start,
                    });
                if kept.events.len() == REPORTS_PER_BROKER_MAX {
                    if let Some(evicted) = kept.events.pop_front() {
                        kept.complete_after = evicted.seq;
                    }
                }
                kept.events.push_back(*output);
            }
        }
        self.recorded.send_replace(last);
    }

    /// The state was replaced by a snapshot at `seq`: what was kept no longer follows on.
    pub fn restart_at(&self, seq: u64) {
        let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        journal.brokers.clear();
        journal.start = seq;
        drop(journal);
        self.recorded.send_replace(seq);
    }

    /// About `max` of the broker's reports with sequence numbers above `since`, oldest first.
    /// A batch never ends inside one command's reports (they share a sequence number, and
    /// the next request asks for what comes after it): it stops before that command, or, if
    /// the command alone has more than `max`, takes all of it.
    pub fn since(&self, broker: BrokerId, since: u64, max: usize) -> Result<Vec<Output>, Gap> {
        let journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        let Some(kept) = journal.brokers.get(&broker) else {
            return if since >= journal.start {
                Ok(Vec::new())
            } else {
                Err(Gap {
                    complete_after: journal.start,
                })
            };
        };
        if since < kept.complete_after {
            return Err(Gap {
                complete_after: kept.complete_after,
            });
        }
        let first = kept.events.partition_point(|o| o.seq <= since);
        let mut end = (first + max.max(1)).min(kept.events.len());
        if end < kept.events.len() && kept.events[end].seq == kept.events[end - 1].seq {
            let cut = kept.events[end - 1].seq;
            let group_start = kept.events.partition_point(|o| o.seq < cut).max(first);
            end = if group_start > first {
                group_start
            } else {
                kept.events.partition_point(|o| o.seq <= cut)
            };
        }
        Ok(kept.events.range(first..end).copied().collect())
    }

    /// About `max` of every broker's reports with sequence numbers above `since`, in log order
    /// (within one command, by broker): what a drop copy of every broker reads. Like
    /// [`ReportJournal::since`], a batch never ends inside one command's reports.
    pub fn since_all(&self, since: u64, max: usize) -> Result<Vec<(BrokerId, Output)>, Gap> {
        let journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        // A broker not seen yet is complete after the start; one that is, after what it lost.
        let complete_after = journal
            .brokers
            .values()
            .map(|kept| kept.complete_after)
            .chain([journal.start])
            .max()
            .unwrap_or(journal.start);
        if since < complete_after {
            return Err(Gap { complete_after });
        }
        let mut brokers: Vec<(&BrokerId, &BrokerReports)> = journal.brokers.iter().collect();
        brokers.sort_unstable_by_key(|(broker, _)| **broker);
        let max = max.max(1);
        let mut seqs: Vec<u64> = Vec::new();
        for (_, kept) in &brokers {
            let first = kept.events.partition_point(|o| o.seq <= since);
            seqs.extend(kept.events.range(first..).take(max).map(|o| o.seq));
        }
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        seqs.sort_unstable();
        let cut = seqs[max.min(seqs.len()) - 1];
        let mut out = Vec::new();
        for (broker, kept) in brokers {
            let first = kept.events.partition_point(|o| o.seq <= since);
            let end = kept.events.partition_point(|o| o.seq <= cut);
            out.extend(kept.events.range(first..end).map(|o| (*broker, *o)));
        }
        out.sort_by_key(|(_, o)| o.seq);
        Ok(out)
    }

    /// A receiver that wakes when anything is recorded.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.recorded.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use exchange_domain::{AccountId, Event};

    fn output(seq: u64) -> Output {
        Output {
            seq,
            timestamp_ns: 0,
            event: Event::AccountCreated {
                account: AccountId(seq),
            },
        }
    }

    #[test]
    fn reports_are_kept_per_broker_and_replayed_after_a_sequence_number() {
        let journal = ReportJournal::new(0);
        let (a, b) = (BrokerId(1), BrokerId(2));
        journal.record(&[(a, output(1)), (b, output(2)), (a, output(3))]);
        let seqs = |v: Vec<Output>| v.iter().map(|o| o.seq).collect::<Vec<_>>();
        assert_eq!(seqs(journal.since(a, 0, 10).unwrap()), vec![1, 3]);
        assert_eq!(seqs(journal.since(a, 1, 10).unwrap()), vec![3]);
        assert_eq!(seqs(journal.since(a, 3, 10).unwrap()), Vec::<u64>::new());
        assert_eq!(seqs(journal.since(b, 0, 10).unwrap()), vec![2]);
        assert_eq!(seqs(journal.since(a, 0, 1).unwrap()), vec![1]);
        assert_eq!(*journal.subscribe().borrow(), 3);
    }

    #[test]
    fn every_brokers_reports_come_in_log_order_each_once() {
        let journal = ReportJournal::new(0);
        let (a, b) = (BrokerId(1), BrokerId(2));
        // seq 2 concerns both brokers (a trade between them), seq 3 has two of a's.
        journal.record(&[
            (a, output(1)),
            (b, output(2)),
            (a, output(2)),
            (a, output(3)),
            (a, output(3)),
            (b, output(4)),
        ]);
        let all = |since, max| {
            journal
                .since_all(since, max)
                .unwrap()
                .into_iter()
                .map(|(broker, o)| (broker.0, o.seq))
                .collect::<Vec<_>>()
        };
        assert_eq!(all(0, 10), [(1, 1), (1, 2), (2, 2), (1, 3), (1, 3), (2, 4)]);
        assert_eq!(
            all(1, 1),
            [(1, 2), (2, 2)],
            "all of seq 2, whoever it concerns"
        );
        assert_eq!(all(2, 1), [(1, 3), (1, 3)]);
        assert_eq!(all(4, 10), []);
        // Following the batches sees every report once.
        let (mut since, mut seen) = (0, Vec::new());
        loop {
            let batch = all(since, 1);
            let Some(&(_, last)) = batch.last() else {
                break;
            };
            since = last;
            seen.extend(batch);
        }
        assert_eq!(seen, all(0, 10));
        let late = ReportJournal::new(10);
        assert_eq!(late.since_all(5, 10), Err(Gap { complete_after: 10 }));
    }

    #[test]
    fn a_batch_never_splits_one_commands_reports() {
        let journal = ReportJournal::new(0);
        let b = BrokerId(1);
        // seq 5 has three reports (a taker's acceptance and fills), seq 6 one.
        journal.record(&[
            (b, output(4)),
            (b, output(5)),
            (b, output(5)),
            (b, output(5)),
            (b, output(6)),
        ]);
        let seqs = |v: Vec<Output>| v.iter().map(|o| o.seq).collect::<Vec<_>>();
        assert_eq!(
            seqs(journal.since(b, 0, 2).unwrap()),
            vec![4],
            "stops before seq 5"
        );
        assert_eq!(
            seqs(journal.since(b, 4, 2).unwrap()),
            vec![5, 5, 5],
            "all of seq 5"
        );
        assert_eq!(seqs(journal.since(b, 0, 4).unwrap()), vec![4, 5, 5, 5]);
        assert_eq!(seqs(journal.since(b, 5, 2).unwrap()), vec![6]);
        // Following the batches from 0 sees every report once.
        let mut since = 0;
        let mut seen = Vec::new();
        loop {
            let batch = journal.since(b, since, 2).unwrap();
            let Some(last) = batch.last() else { break };
            since = last.seq;
            seen.extend(seqs(batch));
        }
        assert_eq!(seen, vec![4, 5, 5, 5, 6]);
    }

    #[test]
    fn what_is_no_longer_kept_is_reported_as_a_gap() {
        let journal = ReportJournal::new(100);
        assert_eq!(
            journal.since(BrokerId(1), 5, 10),
            Err(Gap {
                complete_after: 100
            })
        );
        assert_eq!(journal.since(BrokerId(1), 100, 10), Ok(Vec::new()));
        let many: Vec<_> = (0..REPORTS_PER_BROKER_MAX as u64 + 2)
            .map(|i| (BrokerId(1), output(101 + i)))
            .collect();
        journal.record(&many);
        assert_eq!(
            journal.since(BrokerId(1), 101, 1),
            Err(Gap {
                complete_after: 102
            })
        );
        assert_eq!(journal.since(BrokerId(1), 102, 1).unwrap()[0].seq, 103);
        journal.restart_at(5_000_000);
        assert!(journal.since(BrokerId(1), 200, 1).is_err());
    }
}
