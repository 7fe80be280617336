//! What a market data subscriber receives, and the book it keeps from it.
//!
//! Every message belongs to one stream, a (symbol, channel) pair, and carries that stream's
//! sequence number. The numbers are a function of the Raft log (each applied entry that changes
//! a stream gives it the next number), so every node numbers every message alike, and a
//! subscriber that reconnects to any node resumes from its last number with no gap and no
//! duplicate. A snapshot carries the number of the last message it includes.

use exchange_domain::Side;
use serde::{Deserialize, Serialize};

/// Price levels per side that the book channel publishes.
pub const BOOK_LEVELS: usize = 10;
/// Trades a trades snapshot carries (the most recent ones).
pub const RECENT_TRADES: usize = 64;

/// What a subscription follows for one symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// L2 depth: the top `BOOK_LEVELS` price levels per side, a snapshot then changes.
    Book,
    /// Every trade: price, quantity, and the side of the order that took liquidity.
    Trades,
    /// OHLCV candles of 1 s and 1 min, from the timestamps stamped into the sequenced stream.
    Candles,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Book, Channel::Trades, Channel::Candles];
}

/// A candle's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    #[cfg_attr(feature = "clap", value(name = "1s"))]
    #[serde(rename = "1s")]
    OneSecond,
    #[cfg_attr(feature = "clap", value(name = "1m"))]
    #[serde(rename = "1m")]
    OneMinute,
}

impl Interval {
    pub const ALL: [Interval; 2] = [Interval::OneSecond, Interval::OneMinute];

    pub fn nanos(self) -> u64 {
        match self {
            Interval::OneSecond => 1_000_000_000,
            Interval::OneMinute => 60_000_000_000,
        }
    }

    /// The start of the candle that holds `timestamp_ns`.
    pub fn start_of(self, timestamp_ns: u64) -> u64 {
        timestamp_ns - timestamp_ns % self.nanos()
    }

    /// Closed candles kept per symbol (an hour of seconds is too many; ten minutes is plenty
    /// for a screen), and a day of minutes.
    pub fn kept(self) -> usize {
        match self {
            Interval::OneSecond => 600,
            Interval::OneMinute => 1_440,
        }
    }
}

/// One price level: the total quantity resting at a price.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Level {
    pub price: i64,
    pub qty: i64,
}

/// A level's new total; zero means the level left the published depth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelChange {
    pub side: Side,
    pub price: i64,
    pub qty: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeTick {
    pub trade_id: u64,
    pub price: i64,
    pub qty: i64,
    /// The side of the incoming order (the one that took liquidity).
    pub aggressor: Side,
    pub timestamp_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candle {
    pub interval: Interval,
    pub start_ns: u64,
    pub open: i64,
    pub high: i64,
    pub low: i64,
    pub close: i64,
    /// Quantity traded, in lots.
    pub volume: i64,
    pub trades: u32,
    /// Whether the interval is over: a closed candle never changes again.
    pub closed: bool,
}

impl Candle {
    pub fn end_ns(&self) -> u64 {
        self.start_ns + self.interval.nanos()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MdBody {
    /// The published depth after message `seq`, best first.
    BookSnapshot { bids: Vec<Level>, asks: Vec<Level> },
    /// What one log entry changed in the published depth.
    BookUpdate { changes: Vec<LevelChange> },
    /// The trades of one log entry, in order.
    Trades { trades: Vec<TradeTick> },
    /// The most recent trades up to message `seq`, oldest first. Trades before them are in
    /// the reporting database, not in the feed.
    TradesSnapshot { recent: Vec<TradeTick> },
    /// Candles that one log entry changed or closed.
    Candles { candles: Vec<Candle> },
    /// The kept closed candles and the open ones after message `seq`, oldest first.
    CandlesSnapshot { candles: Vec<Candle> },
}

/// One market data message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MdMessage {
    pub symbol: u32,
    pub channel: Channel,
    /// The stream's sequence number: an update is `seq`, a snapshot includes up to `seq`.
    pub seq: u64,
    /// The Raft log index of the entry that made it (for a snapshot, the last one applied).
    pub index: u64,
    /// The leader's timestamp stamped into that entry.
    pub timestamp_ns: u64,
    pub body: MdBody,
}

impl MdMessage {
    pub fn is_snapshot(&self) -> bool {
        matches!(
            self.body,
            MdBody::BookSnapshot { .. }
                | MdBody::TradesSnapshot { .. }
                | MdBody::CandlesSnapshot { .. }
        )
    }
}

/// A subscriber's side of one stream: checks that sequence numbers follow each other and
/// keeps the state the messages describe.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamState {
    /// The last message applied; `None` until the first snapshot.
    pub seq: Option<u64>,
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
    pub trades: Vec<TradeTick>,
    pub candles: Vec<Candle>,
    /// Snapshots applied (the first one, and one after each resynchronisation).
    pub snapshots: u64,
    /// The log index and timestamp of the last message applied.
    pub index: u64,
    pub timestamp_ns: u64,
}

/// A message did not follow the last one applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SequenceGap {
    pub expected: u64,
    pub got: u64,
}

impl std::fmt::Display for SequenceGap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "expected message {} and got {}", self.expected, self.got)
    }
}

impl std::error::Error for SequenceGap {}

/// Trades a subscriber's state keeps for display.
const TRADES_KEPT: usize = 1_000;

impl StreamState {
    /// Applies one message. A snapshot replaces the state (and is how a stream starts); an
    /// update must be the next number, else nothing changes and the gap is returned.
    pub fn apply(&mut self, message: &MdMessage) -> Result<(), SequenceGap> {
        if message.is_snapshot() {
            self.seq = Some(message.seq);
            self.snapshots += 1;
        } else {
            let expected = self.seq.map_or(0, |s| s + 1);
            if self.seq.is_none() || message.seq != expected {
                return Err(SequenceGap {
                    expected,
                    got: message.seq,
                });
            }
            self.seq = Some(message.seq);
        }
        self.index = message.index;
        self.timestamp_ns = message.timestamp_ns;
        match &message.body {
            MdBody::BookSnapshot { bids, asks } => {
                self.bids = bids.clone();
                self.asks = asks.clone();
            }
            MdBody::BookUpdate { changes } => {
                for change in changes {
                    let levels = match change.side {
                        Side::Buy => &mut self.bids,
                        Side::Sell => &mut self.asks,
                    };
                    apply_change(levels, change.side, change.price, change.qty);
                }
            }
            MdBody::Trades { trades } => {
                self.trades.extend_from_slice(trades);
                let excess = self.trades.len().saturating_sub(TRADES_KEPT);
                self.trades.drain(..excess);
            }
            MdBody::TradesSnapshot { recent } => self.trades = recent.clone(),
            MdBody::Candles { candles } => {
                for candle in candles {
                    match self
                        .candles
                        .iter_mut()
                        .rev()
                        .find(|c| c.interval == candle.interval && c.start_ns == candle.start_ns)
                    {
                        Some(known) => {
                            *known = *candle;
                            if candle.closed {
                                self.forget_old_candles(candle.interval);
                            }
                        }
                        None => {
                            self.candles.push(*candle);
                            self.forget_old_candles(candle.interval);
                        }
                    }
                }
            }
            MdBody::CandlesSnapshot { candles } => self.candles = candles.clone(),
        }
        Ok(())
    }

    /// Keeps the closed candles the builder keeps (`Interval::kept`), and the open one.
    fn forget_old_candles(&mut self, interval: Interval) {
        let closed = self
            .candles
            .iter()
            .filter(|c| c.interval == interval && c.closed)
            .count();
        let mut excess = closed.saturating_sub(interval.kept());
        if excess > 0 {
            self.candles.retain(|c| {
                let old = c.interval == interval && c.closed && excess > 0;
                excess -= old as usize;
                !old
            });
        }
    }

    /// The candles of one interval, oldest first.
    pub fn candles(&self, interval: Interval) -> impl Iterator<Item = &Candle> + '_ {
        self.candles.iter().filter(move |c| c.interval == interval)
    }
}

/// Sets one level of a side kept best first (bids high to low, asks low to high).
fn apply_change(levels: &mut Vec<Level>, side: Side, price: i64, qty: i64) {
    let better = |a: i64, b: i64| match side {
        Side::Buy => a > b,
        Side::Sell => a < b,
    };
    match levels.iter().position(|l| !better(l.price, price)) {
        Some(i) if levels[i].price == price => {
            if qty == 0 {
                levels.remove(i);
            } else {
                levels[i].qty = qty;
            }
        }
        Some(i) if qty != 0 => levels.insert(i, Level { price, qty }),
        None if qty != 0 => levels.push(Level { price, qty }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64, body: MdBody) -> MdMessage {
        MdMessage {
            symbol: 1,
            channel: Channel::Book,
            seq,
            index: seq,
            timestamp_ns: 0,
            body,
        }
    }

    #[test]
    fn a_book_follows_snapshot_and_changes_and_refuses_a_gap() {
        let mut state = StreamState::default();
        let update = |seq, side, price, qty| {
            message(
                seq,
                MdBody::BookUpdate {
                    changes: vec![LevelChange { side, price, qty }],
                },
            )
        };
        assert!(
            state.apply(&update(1, Side::Buy, 10, 5)).is_err(),
            "no snapshot yet"
        );
        state
            .apply(&message(
                4,
                MdBody::BookSnapshot {
                    bids: vec![Level { price: 10, qty: 5 }],
                    asks: vec![Level { price: 12, qty: 1 }],
                },
            ))
            .unwrap();
        state.apply(&update(5, Side::Buy, 11, 2)).unwrap();
        state.apply(&update(6, Side::Buy, 9, 3)).unwrap();
        state.apply(&update(7, Side::Sell, 13, 4)).unwrap();
        state.apply(&update(8, Side::Buy, 10, 0)).unwrap();
        let prices: Vec<i64> = state.bids.iter().map(|l| l.price).collect();
        assert_eq!(prices, [11, 9]);
        let asks: Vec<i64> = state.asks.iter().map(|l| l.price).collect();
        assert_eq!(asks, [12, 13]);
        let gap = state.apply(&update(10, Side::Buy, 8, 1)).unwrap_err();
        assert_eq!(
            gap,
            SequenceGap {
                expected: 9,
                got: 10
            }
        );
        assert_eq!(state.seq, Some(8), "a refused message changes nothing");
        assert!(
            state.apply(&update(8, Side::Buy, 8, 1)).is_err(),
            "nor a duplicate"
        );
    }
}
