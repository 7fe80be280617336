//! Where the engine's outputs leave this node's engine thread, all in one place: the market
//! data builder (its messages go to the hub), the brokers' report journal (what the leader
//! streams as execution reports), the brokers' keys (what logons and sessions check), and the
//! reporter, when the node has one.

use std::collections::VecDeque;
use std::sync::Arc;

use exchange_domain::{BrokerId, Event, Output};
use exchange_engine::Engine;

use crate::marketdata::hub::MdPublisher;
use crate::marketdata::{MarketData, MdMessage};
use crate::replication::engine_thread::OutputTap;
use crate::replication::keys::BrokerKeys;
use crate::replication::reports::ReportJournal;
use crate::report::{EntryOutputs, ReportSender, TrySendError};

pub struct NodeTap {
    /// Each broker's reports, for the leader to stream.
    journal: Arc<ReportJournal>,
    /// Each broker's key digest, for the gateway.
    keys: Arc<BrokerKeys>,
    md: MarketData,
    publisher: MdPublisher,
    messages: Vec<MdMessage>,
    /// The reporter's queue, when the node runs one.
    report: Option<ReportSender>,
    /// Entries the reporter's queue had no room for, oldest first. The engine thread does not
    /// wait for a slow reporter (on the leader that would slow every answer): it keeps them
    /// here, and waits only when this too is full (`REPORT_OVERFLOW_ENTRIES_MAX`), since the
    /// reporter may never lose a row.
    overflow: VecDeque<EntryOutputs>,
    /// The current entry's outputs, for the reporter.
    entry_outputs: Vec<Output>,
    warned_full: bool,
}

impl NodeTap {
    pub fn new(
        publisher: MdPublisher,
        report: Option<ReportSender>,
        journal: Arc<ReportJournal>,
        keys: Arc<BrokerKeys>,
    ) -> NodeTap {
        NodeTap {
            journal,
            keys,
            md: MarketData::new(),
            publisher,
            messages: Vec::new(),
            report,
            overflow: VecDeque::new(),
            entry_outputs: Vec::new(),
            warned_full: false,
        }
    }

    /// Hands the reporter what it has room for, oldest first; with `must_wait`, waits for
    /// room for the oldest.
    fn feed_reporter(&mut self, must_wait: bool) {
        let Some(report) = &self.report else {
            self.overflow.clear();
            return;
        };
        let mut stopped = false;
        while let Some(entry) = self.overflow.pop_front() {
            match report.try_send(entry) {
                Ok(()) => {}
                Err(TrySendError::Full(entry)) if must_wait => {
                    stopped = report.send(entry).is_err();
                    break;
                }
                Err(TrySendError::Full(entry)) => {
                    self.overflow.push_front(entry);
                    break;
                }
                Err(TrySendError::Stopped) => {
                    stopped = true;
                    break;
                }
            }
        }
        if stopped {
            tracing::error!(
                "the reporter has stopped (see its error above): no more rows are written"
            );
            self.report = None;
            self.overflow.clear();
        }
    }
}

/// Entries kept for a reporter that cannot keep up before the engine thread waits for it.
pub const REPORT_OVERFLOW_ENTRIES_MAX: usize = 1 << 20;

impl OutputTap for NodeTap {
    fn command(&mut self, outputs: &[Output]) {
        self.md.observe(outputs);
        for output in outputs {
            match output.event {
                Event::BrokerKeySet { broker, key_digest } => self.keys.set(broker, key_digest),
                Event::FixCompIdSet { broker, comp_id } => self.keys.set_comp_id(broker, comp_id),
                Event::KeySaltSet { salt } => self.keys.set_salt(Some(salt)),
                _ => {}
            }
        }
        if self.report.is_some() {
            self.entry_outputs.extend_from_slice(outputs);
        }
    }

    fn reports(&mut self, reports: &[(BrokerId, Output)]) {
        self.journal.record(reports);
    }

    fn entry(&mut self, engine: &Engine, index: u64, timestamp_ns: u64) {
        self.md
            .finish_entry(engine, index, timestamp_ns, &mut self.messages);
        if self.publisher.needs_reset() {
            // Batches were dropped: snapshots replace them (and cover this entry's messages).
            self.messages.clear();
            let md = &self.md;
            self.publisher.reset(|| md.snapshots());
        } else if !self.messages.is_empty() {
            self.publisher.publish(std::mem::take(&mut self.messages));
        }
        if self.report.is_some() {
            self.overflow.push_back(EntryOutputs {
                index,
                timestamp_ns,
                outputs: std::mem::take(&mut self.entry_outputs),
            });
            let full = self.overflow.len() > REPORT_OVERFLOW_ENTRIES_MAX;
            if full && !self.warned_full {
                tracing::warn!("the reporter is far behind: the engine now waits for it");
                self.warned_full = true;
            }
            self.feed_reporter(full);
        }
    }

    fn idle(&mut self) {
        if !self.overflow.is_empty() {
            self.feed_reporter(false);
        }
        if self.publisher.needs_reset() {
            let md = &self.md;
            self.publisher.reset(|| md.snapshots());
        }
    }

    fn save(&self) -> Vec<u8> {
        self.md.to_bytes()
    }

    fn restore(&mut self, engine: &Engine, index: u64, saved: &[u8]) -> Result<(), String> {
        self.md = MarketData::restore(engine, saved)?;
        self.keys.set_salt(engine.key_salt());
        self.keys.replace_all(engine.brokers());
        self.keys.replace_all_comp_ids(engine.fix_comp_ids());
        // Reports before the snapshot are not kept here: the journal starts after it.
        self.journal.restart_at(engine.last_seq());
        self.messages.clear();
        let md = &self.md;
        self.publisher.reset(|| md.snapshots());
        self.entry_outputs.clear();
        // What is waiting goes first, then the gap.
        self.feed_reporter(false);
        while !self.overflow.is_empty() && self.report.is_some() {
            self.feed_reporter(true);
        }
        if let Some(report) = &self.report {
            // The entries up to the snapshot will not come: a gap unless already reported
            // (after a restart they are: snapshots wait for the reporter).
            if report.skip_to(index).is_err() {
                self.report = None;
            }
        }
        Ok(())
    }
}

/// Snapshots wait for the reporter: a restart begins at the snapshot, so its cursor must be
/// there already.
impl crate::replication::state_machine::SnapshotGate for crate::report::Reporter {
    fn wait_for(&self, index: u64, timeout: std::time::Duration) -> bool {
        crate::report::Reporter::wait_for(self, index, timeout)
    }

    fn stopped(&self) -> Option<String> {
        self.failed()
    }
}
