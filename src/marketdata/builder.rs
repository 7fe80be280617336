//! Builds market data from the engine's outputs, on the engine thread, between entries.
//!
//! Deterministic like the engine it follows: its input is each command's outputs, the log
//! index and the leader's timestamp of each entry, and the engine's book after the entry. So
//! every node builds the same messages with the same sequence numbers, and the builder's
//! state (numbers, candles, recent trades) travels in the Raft snapshot with the engine's.
//!
//! The book channel is conflated per entry: one update per entry and symbol, with the levels
//! of the published depth whose totals changed (a level that left the depth has quantity 0).

use std::collections::{BTreeMap, VecDeque};

use exchange_domain::{Event, Liquidity, Output, Side, SymbolId};
use exchange_engine::Engine;
use serde::{Deserialize, Serialize};

use super::feed::{
    Candle, Channel, Interval, Level, LevelChange, MdBody, MdMessage, TradeTick, BOOK_LEVELS,
    RECENT_TRADES,
};

/// Bumped when the saved state changes shape.
const STATE_VERSION: u32 = 1;

#[derive(Debug, Default)]
pub struct MarketData {
    feeds: BTreeMap<u32, SymbolFeed>,
    /// Symbols whose book, trades or candles the current entry touched, in first-touch order.
    touched: Vec<u32>,
    /// Symbols the current entry added: their streams start with a snapshot (number 0).
    added: Vec<u32>,
    /// The earliest end of an open candle: no candle closes by time before it.
    next_close_ns: u64,
    last_index: u64,
    last_timestamp_ns: u64,
    scratch: Vec<Level>,
}

#[derive(Debug, Default)]
struct SymbolFeed {
    /// The last sequence number of each channel, indexed by `Channel as usize`.
    seq: [u64; 3],
    /// The log index and timestamp of each channel's last message (what a snapshot says).
    last: [(u64, u64); 3],
    /// The published depth, best first.
    bids: Vec<Level>,
    asks: Vec<Level>,
    recent: VecDeque<TradeTick>,
    /// The open candle of each interval, indexed like `Interval::ALL`.
    open: [Option<Candle>; 2],
    closed: [VecDeque<Candle>; 2],
    touched: bool,
    pending_trades: Vec<TradeTick>,
    pending_candles: Vec<Candle>,
}

#[derive(Serialize, Deserialize)]
struct SavedState {
    version: u32,
    last_index: u64,
    last_timestamp_ns: u64,
    feeds: Vec<SavedFeed>,
}

#[derive(Serialize, Deserialize)]
struct SavedFeed {
    symbol: u32,
    seq: [u64; 3],
    last: [(u64, u64); 3],
    recent: Vec<TradeTick>,
    open: [Option<Candle>; 2],
    closed: [Vec<Candle>; 2],
}

impl MarketData {
    pub fn new() -> MarketData {
        MarketData {
            next_close_ns: u64::MAX,
            ..MarketData::default()
        }
    }

    /// Takes note of one command's outputs.
    pub fn observe(&mut self, outputs: &[Output]) {
        for output in outputs {
            let symbol = match output.event {
                Event::SymbolAdded { spec } => {
                    self.feeds.entry(spec.symbol.0).or_default();
                    self.added.push(spec.symbol.0);
                    continue;
                }
                Event::Execution {
                    symbol,
                    trade_id,
                    side,
                    price,
                    qty,
                    liquidity: Liquidity::Taker,
                    ..
                } => {
                    let tick = TradeTick {
                        trade_id: trade_id.0,
                        price: price.0,
                        qty: qty.0,
                        aggressor: side,
                        timestamp_ns: output.timestamp_ns,
                    };
                    if let Some(feed) = self.feeds.get_mut(&symbol.0) {
                        feed.pending_trades.push(tick);
                    }
                    symbol
                }
                Event::Accepted { symbol, .. }
                | Event::Execution { symbol, .. }
                | Event::Cancelled { symbol, .. }
                | Event::Replaced { symbol, .. } => symbol,
                _ => continue,
            };
            self.touch(symbol.0);
        }
    }

    fn touch(&mut self, symbol: u32) {
        if let Some(feed) = self.feeds.get_mut(&symbol) {
            if !feed.touched {
                feed.touched = true;
                self.touched.push(symbol);
            }
        }
    }

    /// Ends an entry: appends the messages it made to `out`, per symbol in the order the
    /// entry first touched them: book, then trades, then candles.
    pub fn finish_entry(
        &mut self,
        engine: &Engine,
        index: u64,
        timestamp_ns: u64,
        out: &mut Vec<MdMessage>,
    ) {
        self.last_index = index;
        self.last_timestamp_ns = self.last_timestamp_ns.max(timestamp_ns);
        let now = self.last_timestamp_ns;
        if now >= self.next_close_ns {
            self.close_candles_before(now);
        }
        for symbol in std::mem::take(&mut self.added) {
            if let Some(feed) = self.feeds.get_mut(&symbol) {
                feed.last = [(index, now); 3];
            }
            for channel in Channel::ALL {
                out.extend(self.snapshot(symbol, channel));
            }
        }
        let mut touched = std::mem::take(&mut self.touched);
        for &symbol in &touched {
            let Some(feed) = self.feeds.get_mut(&symbol) else {
                continue;
            };
            feed.touched = false;
            let message = |channel: Channel, seq: u64, body: MdBody| MdMessage {
                symbol,
                channel,
                seq,
                index,
                timestamp_ns: now,
                body,
            };
            let emitted = out.len();
            let changes = feed.diff_book(engine, SymbolId(symbol), &mut self.scratch);
            if !changes.is_empty() {
                feed.seq[Channel::Book as usize] += 1;
                out.push(message(
                    Channel::Book,
                    feed.seq[Channel::Book as usize],
                    MdBody::BookUpdate { changes },
                ));
            }
            if !feed.pending_trades.is_empty() {
                let trades = std::mem::take(&mut feed.pending_trades);
                for tick in &trades {
                    feed.add_to_candles(tick);
                    if feed.recent.len() == RECENT_TRADES {
                        feed.recent.pop_front();
                    }
                    feed.recent.push_back(*tick);
                }
                for candle in feed.open.iter().flatten() {
                    feed.pending_candles.push(*candle);
                }
                feed.seq[Channel::Trades as usize] += 1;
                out.push(message(
                    Channel::Trades,
                    feed.seq[Channel::Trades as usize],
                    MdBody::Trades { trades },
                ));
            }
            if !feed.pending_candles.is_empty() {
                let candles = std::mem::take(&mut feed.pending_candles);
                feed.seq[Channel::Candles as usize] += 1;
                out.push(message(
                    Channel::Candles,
                    feed.seq[Channel::Candles as usize],
                    MdBody::Candles { candles },
                ));
            }
            for sent in &out[emitted..] {
                feed.last[sent.channel as usize] = (index, now);
            }
        }
        touched.clear();
        self.touched = touched;
        self.next_close_ns = self.earliest_candle_end();
    }

    /// Closes every open candle whose interval ended by `now`.
    fn close_candles_before(&mut self, now: u64) {
        for (&symbol, feed) in self.feeds.iter_mut() {
            let mut closed_any = false;
            for slot in 0..Interval::ALL.len() {
                if feed.open[slot].is_some_and(|c| c.end_ns() <= now) {
                    feed.close(slot);
                    closed_any = true;
                }
            }
            if closed_any && !feed.touched {
                feed.touched = true;
                self.touched.push(symbol);
            }
        }
    }

    fn earliest_candle_end(&self) -> u64 {
        self.feeds
            .values()
            .flat_map(|f| f.open.iter().flatten())
            .map(Candle::end_ns)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// A snapshot message of one stream as of the last entry, or `None` for an unknown symbol.
    pub fn snapshot(&self, symbol: u32, channel: Channel) -> Option<MdMessage> {
        let feed = self.feeds.get(&symbol)?;
        let body = match channel {
            Channel::Book => MdBody::BookSnapshot {
                bids: feed.bids.clone(),
                asks: feed.asks.clone(),
            },
            Channel::Trades => MdBody::TradesSnapshot {
                recent: feed.recent.iter().copied().collect(),
            },
            Channel::Candles => MdBody::CandlesSnapshot {
                candles: (0..Interval::ALL.len())
                    .flat_map(|slot| feed.closed[slot].iter().chain(feed.open[slot].iter()))
                    .copied()
                    .collect(),
            },
        };
        let (index, timestamp_ns) = feed.last[channel as usize];
        Some(MdMessage {
            symbol,
            channel,
            seq: feed.seq[channel as usize],
            index,
            timestamp_ns,
            body,
        })
    }

    /// A snapshot of every stream, ascending by symbol then channel.
    pub fn snapshots(&self) -> Vec<MdMessage> {
        self.feeds
            .keys()
            .flat_map(|&symbol| Channel::ALL.map(|channel| self.snapshot(symbol, channel)))
            .flatten()
            .collect()
    }

    /// The state a Raft snapshot carries beside the engine's (the published depth is not in
    /// it: it is the engine's book, read again on restore).
    pub fn to_bytes(&self) -> Vec<u8> {
        let saved = SavedState {
            version: STATE_VERSION,
            last_index: self.last_index,
            last_timestamp_ns: self.last_timestamp_ns,
            feeds: self
                .feeds
                .iter()
                .map(|(&symbol, feed)| SavedFeed {
                    symbol,
                    seq: feed.seq,
                    last: feed.last,
                    recent: feed.recent.iter().copied().collect(),
                    open: feed.open,
                    closed: [
                        feed.closed[0].iter().copied().collect(),
                        feed.closed[1].iter().copied().collect(),
                    ],
                })
                .collect(),
        };
        // Plain owned data into a growable buffer: postcard has no failure mode here.
        postcard::to_allocvec(&saved).unwrap_or_default()
    }

    /// The builder as it was when `bytes` were saved, over `engine` restored from the same
    /// snapshot.
    pub fn restore(engine: &Engine, bytes: &[u8]) -> Result<MarketData, String> {
        let saved: SavedState =
            postcard::from_bytes(bytes).map_err(|e| format!("market data state: {e}"))?;
        if saved.version != STATE_VERSION {
            return Err(format!(
                "market data state version {} is not supported (this build reads {STATE_VERSION})",
                saved.version
            ));
        }
        let mut md = MarketData::new();
        md.last_index = saved.last_index;
        md.last_timestamp_ns = saved.last_timestamp_ns;
        for saved_feed in saved.feeds {
            let [closed_short, closed_long] = saved_feed.closed;
            let mut feed = SymbolFeed {
                seq: saved_feed.seq,
                last: saved_feed.last,
                recent: saved_feed.recent.into(),
                open: saved_feed.open,
                closed: [closed_short.into(), closed_long.into()],
                ..SymbolFeed::default()
            };
            feed.diff_book(engine, SymbolId(saved_feed.symbol), &mut md.scratch);
            md.feeds.insert(saved_feed.symbol, feed);
        }
        md.next_close_ns = md.earliest_candle_end();
        Ok(md)
    }
}

impl SymbolFeed {
    /// Reads the engine's depth and returns what changed in the published part of it.
    fn diff_book(
        &mut self,
        engine: &Engine,
        symbol: SymbolId,
        scratch: &mut Vec<Level>,
    ) -> Vec<LevelChange> {
        let mut changes = Vec::new();
        for side in [Side::Buy, Side::Sell] {
            scratch.clear();
            scratch.extend(
                engine
                    .levels(symbol, side)
                    .take(BOOK_LEVELS)
                    .map(|(price, qty)| Level {
                        price: price.0,
                        qty: qty.0,
                    }),
            );
            let view = match side {
                Side::Buy => &mut self.bids,
                Side::Sell => &mut self.asks,
            };
            if view == scratch {
                continue;
            }
            for old in view.iter() {
                if !scratch.iter().any(|new| new.price == old.price) {
                    changes.push(LevelChange {
                        side,
                        price: old.price,
                        qty: 0,
                    });
                }
            }
            for new in scratch.iter() {
                if !view.contains(new) {
                    changes.push(LevelChange {
                        side,
                        price: new.price,
                        qty: new.qty,
                    });
                }
            }
            view.clone_from(scratch);
        }
        changes
    }

    fn add_to_candles(&mut self, tick: &TradeTick) {
        for (slot, interval) in Interval::ALL.into_iter().enumerate() {
            let start = interval.start_of(tick.timestamp_ns);
            if self.open[slot].is_some_and(|c| c.start_ns != start) {
                self.close(slot);
            }
            let candle = self.open[slot].get_or_insert(Candle {
                interval,
                start_ns: start,
                open: tick.price,
                high: tick.price,
                low: tick.price,
                close: tick.price,
                volume: 0,
                trades: 0,
                closed: false,
            });
            candle.high = candle.high.max(tick.price);
            candle.low = candle.low.min(tick.price);
            candle.close = tick.price;
            candle.volume = candle.volume.saturating_add(tick.qty);
            candle.trades = candle.trades.saturating_add(1);
        }
    }

    fn close(&mut self, slot: usize) {
        let Some(mut candle) = self.open[slot].take() else {
            return;
        };
        candle.closed = true;
        let closed = &mut self.closed[slot];
        if closed.len() == Interval::ALL[slot].kept() {
            closed.pop_front();
        }
        closed.push_back(candle);
        self.pending_candles.push(candle);
    }
}

#[cfg(test)]
mod tests {
    use exchange_domain::{BrokerId, Input};
    use exchange_engine::EngineConfig;

    use super::*;
    use crate::cli::replay::{prepare, ReplayConfig};
    use crate::cli::workload::{generate, WorkloadConfig};
    use crate::marketdata::feed::StreamState;

    const SYMBOL: u32 = 1;
    /// Entries are 70 ms apart: a 1 s candle closes every 14 or 15 entries.
    const ENTRY_NS: u64 = 70_000_000;

    /// The synthetic workload's commands, cut into entries of `per_entry` commands.
    fn entries(commands: usize, per_entry: usize) -> Vec<Vec<exchange_domain::Command>> {
        let prepared = prepare(
            &generate(&WorkloadConfig {
                commands,
                resting: 200,
                ..WorkloadConfig::default()
            }),
            ReplayConfig::default(),
        );
        let all: Vec<_> = prepared
            .setup
            .iter()
            .chain(&prepared.commands)
            .map(|input| input.command)
            .collect();
        all.chunks(per_entry).map(|c| c.to_vec()).collect()
    }

    struct Node {
        engine: Engine,
        md: MarketData,
        seq: u64,
    }

    impl Node {
        fn new() -> Node {
            Node {
                engine: Engine::new(EngineConfig::default()),
                md: MarketData::new(),
                seq: 0,
            }
        }

        fn apply(&mut self, index: u64, commands: &[exchange_domain::Command]) -> Vec<MdMessage> {
            let timestamp_ns = 1_700_000_000_000_000_000 + index * ENTRY_NS;
            let mut outputs = Vec::new();
            for command in commands {
                self.seq += 1;
                outputs.clear();
                let input = Input {
                    seq: self.seq,
                    timestamp_ns,
                    broker: BrokerId::OPERATOR,
                    command: *command,
                };
                self.engine.process(&input, &mut outputs);
                self.md.observe(&outputs);
            }
            let mut messages = Vec::new();
            self.md
                .finish_entry(&self.engine, index, timestamp_ns, &mut messages);
            messages
        }
    }

    #[test]
    fn a_subscriber_keeps_the_engines_depth_and_gapless_streams() {
        let entries = entries(20_000, 7);
        let mut node = Node::new();
        let mut states: BTreeMap<Channel, StreamState> = BTreeMap::new();
        let mut messages_seen = 0;
        for (i, commands) in entries.iter().enumerate() {
            let index = i as u64 + 1;
            if index == 40 {
                // Subscribe part way: each stream starts from a snapshot.
                for channel in Channel::ALL {
                    let snapshot = node.md.snapshot(SYMBOL, channel).expect("symbol");
                    states.entry(channel).or_default().apply(&snapshot).unwrap();
                }
            }
            for message in node.apply(index, commands) {
                assert_eq!(message.index, index);
                if let Some(state) = states.get_mut(&message.channel) {
                    state.apply(&message).expect("gapless");
                    messages_seen += 1;
                }
            }
            if let Some(book) = states.get(&Channel::Book) {
                let depth = |side| {
                    node.engine
                        .levels(SymbolId(SYMBOL), side)
                        .take(BOOK_LEVELS)
                        .map(|(p, q)| Level {
                            price: p.0,
                            qty: q.0,
                        })
                        .collect::<Vec<_>>()
                };
                assert_eq!(book.bids, depth(Side::Buy), "bids after entry {index}");
                assert_eq!(book.asks, depth(Side::Sell), "asks after entry {index}");
            }
        }
        assert!(messages_seen > 1_000, "only {messages_seen} messages");
        let trades = &states[&Channel::Trades];
        assert!(!trades.trades.is_empty());
        // Every trade the engine made after the subscription is in the trades stream, in
        // order, and the candles agree with them.
        let closed: Vec<&Candle> = states[&Channel::Candles]
            .candles(Interval::OneSecond)
            .filter(|c| c.closed)
            .collect();
        assert!(closed.len() > 10, "{} closed 1 s candles", closed.len());
        assert!(closed.windows(2).all(|w| w[0].start_ns < w[1].start_ns));
        for candle in &closed {
            assert!(candle.low <= candle.open.min(candle.close));
            assert!(candle.high >= candle.open.max(candle.close));
            assert!(candle.volume > 0 && candle.trades > 0);
        }
        // The subscriber's candles equal a fresh snapshot's.
        let snapshot = node.md.snapshot(SYMBOL, Channel::Candles).unwrap();
        let mut fresh = StreamState::default();
        fresh.apply(&snapshot).unwrap();
        for interval in Interval::ALL {
            let mine: Vec<_> = states[&Channel::Candles].candles(interval).collect();
            let theirs: Vec<_> = fresh.candles(interval).collect();
            let kept = theirs.len().min(mine.len());
            assert_eq!(mine[mine.len() - kept..], theirs[theirs.len() - kept..]);
        }
    }

    #[test]
    fn a_restored_builder_continues_exactly_like_the_original() {
        let entries = entries(6_000, 5);
        let mut original = Node::new();
        let cut = entries.len() / 2;
        let mut restored = None;
        for (i, commands) in entries.iter().enumerate() {
            let index = i as u64 + 1;
            let produced = original.apply(index, commands);
            if i == cut {
                let bytes = original.engine.snapshot().to_bytes();
                let engine =
                    Engine::restore(&exchange_engine::Snapshot::from_bytes(&bytes).unwrap())
                        .unwrap();
                let md = MarketData::restore(&engine, &original.md.to_bytes()).unwrap();
                restored = Some(Node {
                    engine,
                    md,
                    seq: original.seq,
                });
                continue;
            }
            if let Some(copy) = restored.as_mut() {
                assert_eq!(copy.apply(index, commands), produced, "entry {index}");
            }
        }
        let copy = restored.expect("cut");
        for channel in Channel::ALL {
            assert_eq!(
                copy.md.snapshot(SYMBOL, channel),
                original.md.snapshot(SYMBOL, channel)
            );
        }
        assert!(MarketData::restore(&copy.engine, b"garbage").is_err());
    }

    #[test]
    fn candles_close_by_the_sequenced_clock_even_without_trades() {
        let entries = entries(3_000, 50);
        let mut node = Node::new();
        let mut index = 0;
        for commands in &entries {
            index += 1;
            node.apply(index, commands);
        }
        let open_before = node.md.snapshot(SYMBOL, Channel::Candles).unwrap();
        let MdBody::CandlesSnapshot { candles } = &open_before.body else {
            panic!("not a candles snapshot");
        };
        assert!(candles.iter().any(|c| !c.closed), "an open candle");
        // An empty entry two minutes later closes every open candle.
        let messages = node.apply(index + 2_000, &[]);
        let closed: Vec<&Candle> = messages
            .iter()
            .flat_map(|m| match &m.body {
                MdBody::Candles { candles } => candles.iter().collect(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(closed.len(), 2, "the open 1 s and 1 min candles close");
        assert!(closed.iter().all(|c| c.closed));
        assert_eq!(node.md.next_close_ns, u64::MAX);
    }
}
