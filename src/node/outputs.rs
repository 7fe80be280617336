//! What follows the engine's outputs on this node's engine thread: the market data builder,
//! whose messages go to the hub, and the reporter, when the node has one.

use exchange_domain::Output;
use exchange_engine::Engine;

use crate::marketdata::hub::MdPublisher;
use crate::marketdata::{MarketData, MdMessage};
use crate::replication::engine_thread::OutputTap;
use crate::report::{EntryOutputs, ReportSender};

pub struct NodeTap {
    md: MarketData,
    publisher: MdPublisher,
    messages: Vec<MdMessage>,
    /// The reporter's queue, when the node runs one. Sending blocks while it is full: the
    /// reporter never loses a row, and on a follower (where it belongs) a slow disk only
    /// delays this node's applying, not the cluster's commits.
    report: Option<ReportSender>,
    /// The current entry's outputs, for the reporter.
    entry_outputs: Vec<Output>,
}

impl NodeTap {
    pub fn new(publisher: MdPublisher, report: Option<ReportSender>) -> NodeTap {
        NodeTap {
            md: MarketData::new(),
            publisher,
            messages: Vec::new(),
            report,
            entry_outputs: Vec::new(),
        }
    }
}

impl OutputTap for NodeTap {
    fn command(&mut self, outputs: &[Output]) {
        self.md.observe(outputs);
        if self.report.is_some() {
            self.entry_outputs.extend_from_slice(outputs);
        }
    }

    fn entry(&mut self, engine: &Engine, index: u64, timestamp_ns: u64) {
        self.md
            .finish_entry(engine, index, timestamp_ns, &mut self.messages);
        if self.publisher.needs_reset() {
            // Batches were dropped: snapshots replace them (and cover this entry's messages).
            self.messages.clear();
            self.publisher.reset(self.md.snapshots());
        } else if !self.messages.is_empty() {
            self.publisher.publish(std::mem::take(&mut self.messages));
        }
        if let Some(report) = &self.report {
            let entry = EntryOutputs {
                index,
                timestamp_ns,
                outputs: std::mem::take(&mut self.entry_outputs),
            };
            if report.send(entry).is_err() {
                tracing::error!(
                    index,
                    "the reporter has stopped (see its error above): no more rows are written"
                );
                self.report = None;
            }
        }
    }

    fn save(&self) -> Vec<u8> {
        self.md.to_bytes()
    }

    fn restore(&mut self, engine: &Engine, index: u64, saved: &[u8]) -> Result<(), String> {
        self.md = MarketData::restore(engine, saved)?;
        self.messages.clear();
        self.publisher.reset(self.md.snapshots());
        self.entry_outputs.clear();
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
