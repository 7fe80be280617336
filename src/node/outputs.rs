//! What follows the engine's outputs on this node's engine thread: the market data builder,
//! whose messages go to the hub, and the reporter, when the node has one.

use exchange_domain::Output;
use exchange_engine::Engine;

use crate::marketdata::hub::MdPublisher;
use crate::marketdata::{MarketData, MdMessage};
use crate::replication::engine_thread::OutputTap;

pub struct NodeTap {
    md: MarketData,
    publisher: MdPublisher,
    messages: Vec<MdMessage>,
}

impl NodeTap {
    pub fn new(publisher: MdPublisher) -> NodeTap {
        NodeTap {
            md: MarketData::new(),
            publisher,
            messages: Vec::new(),
        }
    }
}

impl OutputTap for NodeTap {
    fn command(&mut self, outputs: &[Output]) {
        self.md.observe(outputs);
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
    }

    fn save(&self) -> Vec<u8> {
        self.md.to_bytes()
    }

    fn restore(&mut self, engine: &Engine, _index: u64, saved: &[u8]) -> Result<(), String> {
        self.md = MarketData::restore(engine, saved)?;
        self.messages.clear();
        self.publisher.reset(self.md.snapshots());
        Ok(())
    }
}
