//! The hub: the node's recent market data, kept for resumes and snapshots, and the fan-out to
//! live subscribers.
//!
//! The engine thread hands each entry's messages to the hub through a bounded queue and never
//! waits: when the queue is full the batch is dropped and the next entry sends fresh snapshots
//! instead (subscribers then see a jump in sequence numbers and resynchronise). A task drains
//! the queue into the history, the per-stream state and a broadcast channel. A subscriber that
//! falls further behind than the broadcast keeps gets a fresh snapshot: a slow reader costs
//! itself a resynchronisation, never the engine a wait.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use super::feed::{Channel, Interval, MdBody, MdMessage, StreamState, RECENT_TRADES};
use super::history::HistoryRecorder;

/// Entries' batches waiting for the hub task.
pub const HUB_QUEUE_BATCHES: usize = 16_384;
/// Messages kept for resumes (all streams together).
pub const HISTORY_MESSAGES: usize = 131_072;
/// Messages a live subscriber may fall behind before it is resynchronised by a snapshot.
pub const SUBSCRIBER_BUFFER: usize = 16_384;
/// A subscriber is sent at most one frame this often (`--md-frame-ms`): in a burst, the
/// messages that arrive meanwhile share a frame.
pub const FRAME_EVERY_DEFAULT: Duration = Duration::from_millis(5);

/// What the engine thread sends.
pub enum MdBatch {
    /// The messages of one entry.
    Messages(Vec<MdMessage>),
    /// Start again from these snapshots (after a restore, or after batches were dropped).
    Reset(Vec<MdMessage>),
}

/// The engine thread's end of the queue.
pub struct MdPublisher {
    queue: mpsc::Sender<MdBatch>,
    /// Set when a batch could not be queued: the next entry must send snapshots.
    lost: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
}

impl MdPublisher {
    /// Queues one entry's messages without waiting. Returns false if they were dropped (the
    /// caller then owes the hub a reset).
    pub fn publish(&self, messages: Vec<MdMessage>) -> bool {
        if self.lost.load(Ordering::Relaxed) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if self.queue.try_send(MdBatch::Messages(messages)).is_err() {
            self.lost.store(true, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Whether batches were dropped since the last reset.
    pub fn needs_reset(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Replaces the hub's state with `snapshots()`; true if queued. The snapshots are built
    /// only once the queue has room for them: never on a full queue, again and again.
    pub fn reset(&self, snapshots: impl FnOnce() -> Vec<MdMessage>) -> bool {
        match self.queue.try_reserve() {
            Ok(slot) => {
                slot.send(MdBatch::Reset(snapshots()));
                self.lost.store(false, Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.lost.store(true, Ordering::Relaxed);
                false
            }
        }
    }
}

/// A message as the hub keeps it: also encoded (postcard) once, for every subscriber.
#[derive(Debug)]
pub struct Published {
    pub message: MdMessage,
    pub encoded: Vec<u8>,
    /// The message as text (the HTTP API's JSON), made by the first WebSocket session that
    /// sends it, for every other one.
    pub text: OnceLock<bytes::Bytes>,
}

impl Published {
    pub fn new(message: MdMessage) -> Published {
        let encoded = postcard::to_allocvec(&message).unwrap_or_default();
        Published {
            message,
            encoded,
            text: OnceLock::new(),
        }
    }
}

#[derive(Default)]
struct Recent {
    history: VecDeque<Arc<Published>>,
    streams: BTreeMap<(u32, Channel), StreamState>,
}

pub struct MarketHub {
    recent: Mutex<Recent>,
    frame_every: Duration,
    live: broadcast::Sender<Arc<Published>>,
    published: AtomicU64,
    dropped: Arc<AtomicU64>,
}

/// Where a new subscription starts.
pub enum Start {
    /// The messages after the subscriber's last one, from the history.
    Resume(Vec<Arc<Published>>),
    /// The stream's state now.
    Snapshot(MdMessage),
}

pub struct Subscription {
    pub start: Start,
    /// Every message published after `start`, of every stream.
    pub live: broadcast::Receiver<Arc<Published>>,
}

impl MarketHub {
    /// A hub whose live subscribers may fall `subscriber_buffer` messages behind, the
    /// publisher for the engine thread, and the task that feeds the hub (spawn it on the
    /// runtime) and hands the history what it keeps.
    pub fn new(
        subscriber_buffer: usize,
        frame_every: Duration,
        history: Option<HistoryRecorder>,
    ) -> (
        Arc<MarketHub>,
        MdPublisher,
        impl std::future::Future<Output = ()> + Send,
    ) {
        let (queue, mut batches) = mpsc::channel(HUB_QUEUE_BATCHES);
        let dropped = Arc::new(AtomicU64::new(0));
        let hub = Arc::new(MarketHub {
            recent: Mutex::new(Recent::default()),
            frame_every,
            live: broadcast::channel(subscriber_buffer.max(1)).0,
            published: AtomicU64::new(0),
            dropped: Arc::clone(&dropped),
        });
        let publisher = MdPublisher {
            queue,
            lost: Arc::new(AtomicBool::new(false)),
            dropped,
        };
        let feeding = Arc::clone(&hub);
        let pump = async move {
            while let Some(batch) = batches.recv().await {
                if let Some(history) = &history {
                    let (MdBatch::Messages(messages) | MdBatch::Reset(messages)) = &batch;
                    history.record(messages);
                }
                feeding.take(batch);
            }
        };
        (hub, publisher, pump)
    }

    fn take(&self, batch: MdBatch) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let messages = match batch {
            MdBatch::Reset(snapshots) => {
                recent.history.clear();
                recent.streams.clear();
                for snapshot in snapshots {
                    let mut state = StreamState::default();
                    let _ = state.apply(&snapshot);
                    recent
                        .streams
                        .insert((snapshot.symbol, snapshot.channel), state);
                    // Live subscribers start again from it too (they may have missed messages
                    // that will never come, on a stream that may stay quiet).
                    let _ = self.live.send(Arc::new(Published::new(snapshot)));
                }
                return;
            }
            MdBatch::Messages(messages) => messages,
        };
        for message in messages {
            let key = (message.symbol, message.channel);
            let state = recent.streams.entry(key).or_default();
            // Cannot fail short of a bug upstream: the builder numbers each stream in order.
            if let Err(gap) = state.apply(&message) {
                tracing::error!(symbol = key.0, channel = ?key.1, %gap, "market data out of order");
            }
            let message = Arc::new(Published::new(message));
            if recent.history.len() == HISTORY_MESSAGES {
                recent.history.pop_front();
            }
            recent.history.push_back(Arc::clone(&message));
            // Sent under the lock, so a subscriber sees each message either in the history
            // or live, never both and never neither.
            let _ = self.live.send(message);
            self.published.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Starts a subscription to one stream after message `since` (or from a snapshot when
    /// `since` is `None` or no longer kept). `None` if the stream is unknown.
    pub fn subscribe(
        &self,
        symbol: u32,
        channel: Channel,
        since: Option<u64>,
    ) -> Option<Subscription> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let state = recent.streams.get(&(symbol, channel))?;
        let live = self.live.subscribe();
        let resumed = since.and_then(|since| {
            let later: Vec<Arc<Published>> = recent
                .history
                .iter()
                .filter(|p| {
                    let m = &p.message;
                    m.symbol == symbol && m.channel == channel && m.seq > since
                })
                .cloned()
                .collect();
            let current = state.seq.unwrap_or(0);
            let follows = match later.first() {
                Some(first) => first.message.seq == since + 1,
                None => since == current,
            };
            // A subscriber ahead of this node (it was on a node further along) waits for
            // this one to catch up: it will build the same messages, since it applies the
            // same committed entries, and a snapshot would take the subscriber backwards.
            if since > current {
                return Some(Vec::new());
            }
            follows.then_some(later)
        });
        let start = match resumed {
            Some(later) => Start::Resume(later),
            None => Start::Snapshot(snapshot_of(symbol, channel, state)),
        };
        Some(Subscription { start, live })
    }

    /// One stream's state now, as a snapshot message.
    pub fn snapshot(&self, symbol: u32, channel: Channel) -> Option<MdMessage> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let state = recent.streams.get(&(symbol, channel))?;
        Some(snapshot_of(symbol, channel, state))
    }

    /// The least time between two frames to one subscriber.
    pub fn frame_every(&self) -> Duration {
        self.frame_every
    }

    /// Messages handed to subscribers since start.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Entries' batches the engine thread could not queue (each followed by snapshots).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn snapshot_of(symbol: u32, channel: Channel, state: &StreamState) -> MdMessage {
    let body = match channel {
        Channel::Book => MdBody::BookSnapshot {
            bids: state.bids.clone(),
            asks: state.asks.clone(),
        },
        Channel::Trades => MdBody::TradesSnapshot {
            recent: state.trades[state.trades.len().saturating_sub(RECENT_TRADES)..].to_vec(),
        },
        Channel::Candles => MdBody::CandlesSnapshot {
            candles: Interval::ALL
                .into_iter()
                .flat_map(|interval| state.candles(interval).copied())
                .collect(),
        },
    };
    MdMessage {
        symbol,
        channel,
        seq: state.seq.unwrap_or(0),
        index: state.index,
        timestamp_ns: state.timestamp_ns,
        body,
    }
}

#[cfg(test)]
mod tests {
    use exchange_domain::Side;

    use super::*;
    use crate::marketdata::feed::{Level, LevelChange};

    fn snapshot(seq: u64, bid: i64) -> MdMessage {
        MdMessage {
            symbol: 1,
            channel: Channel::Book,
            seq,
            index: seq,
            timestamp_ns: 0,
            body: MdBody::BookSnapshot {
                bids: vec![Level { price: bid, qty: 1 }],
                asks: Vec::new(),
            },
        }
    }

    fn update(seq: u64, price: i64) -> MdMessage {
        MdMessage {
            symbol: 1,
            channel: Channel::Book,
            seq,
            index: seq,
            timestamp_ns: 0,
            body: MdBody::BookUpdate {
                changes: vec![LevelChange {
                    side: Side::Buy,
                    price,
                    qty: 1,
                }],
            },
        }
    }

    /// A hub fed directly (as its task would), with a stream at message 3.
    fn hub() -> Arc<MarketHub> {
        let (hub, _publisher, _pump) = MarketHub::new(8, Duration::ZERO, None);
        hub.take(MdBatch::Reset(vec![snapshot(0, 10)]));
        hub.take(MdBatch::Messages(vec![
            update(1, 11),
            update(2, 12),
            update(3, 13),
        ]));
        hub
    }

    #[test]
    fn a_resume_gets_exactly_what_followed() {
        let hub = hub();
        let Some(Subscription {
            start: Start::Resume(later),
            ..
        }) = hub.subscribe(1, Channel::Book, Some(1))
        else {
            panic!("not a resume");
        };
        let seqs: Vec<u64> = later.iter().map(|p| p.message.seq).collect();
        assert_eq!(seqs, [2, 3]);
        // Up to date: nothing to send, live from here.
        assert!(matches!(
            hub.subscribe(1, Channel::Book, Some(3)).map(|s| s.start),
            Some(Start::Resume(later)) if later.is_empty()
        ));
        // Unknown streams are refused; a stream the history no longer covers gets a snapshot.
        assert!(hub.subscribe(2, Channel::Book, None).is_none());
        assert!(matches!(
            hub.subscribe(1, Channel::Book, None).map(|s| s.start),
            Some(Start::Snapshot(s)) if s.seq == 3
        ));
    }

    #[test]
    fn a_subscriber_ahead_of_this_node_waits_for_it_instead_of_going_back() {
        let hub = hub();
        let mut subscription = hub.subscribe(1, Channel::Book, Some(5)).expect("stream");
        assert!(matches!(&subscription.start, Start::Resume(later) if later.is_empty()));
        // This node catches up: the subscriber gets what follows its own last message.
        hub.take(MdBatch::Messages(vec![
            update(4, 14),
            update(5, 15),
            update(6, 16),
        ]));
        let live: Vec<u64> = std::iter::from_fn(|| subscription.live.try_recv().ok())
            .map(|p| p.message.seq)
            .collect();
        assert_eq!(live, [4, 5, 6], "the stream's server skips up to 5 itself");
    }

    #[test]
    fn a_reset_reaches_live_subscribers_and_the_next_snapshot() {
        let hub = hub();
        let mut subscription = hub.subscribe(1, Channel::Book, Some(3)).expect("stream");
        hub.take(MdBatch::Reset(vec![snapshot(9, 20)]));
        let live = subscription.live.try_recv().expect("the reset's snapshot");
        assert!(live.message.is_snapshot());
        assert_eq!(live.message.seq, 9);
        let now = hub.snapshot(1, Channel::Book).expect("stream");
        assert_eq!(now, live.message);
        // The history before the reset is gone: an old resume gets the snapshot.
        assert!(matches!(
            hub.subscribe(1, Channel::Book, Some(2)).map(|s| s.start),
            Some(Start::Snapshot(s)) if s.seq == 9
        ));
    }

    #[tokio::test]
    async fn a_full_queue_drops_batches_and_asks_for_a_reset() {
        let (hub, publisher, pump) = MarketHub::new(8, Duration::ZERO, None);
        // No pump running: the queue fills.
        let mut published = 0;
        while publisher.publish(vec![update(1, 1)]) {
            published += 1;
        }
        assert_eq!(published, HUB_QUEUE_BATCHES);
        assert!(publisher.needs_reset());
        assert!(
            !publisher.publish(vec![update(2, 2)]),
            "dropped while a reset is owed"
        );
        assert!(hub.dropped() >= 2);
        let mut built = false;
        assert!(!publisher.reset(|| {
            built = true;
            Vec::new()
        }));
        assert!(!built, "no snapshots are built for a full queue");
        // The hub drains; the reset then goes through.
        let task = tokio::spawn(pump);
        while !publisher.reset(|| vec![snapshot(7, 1)]) {
            tokio::task::yield_now().await;
        }
        assert!(!publisher.needs_reset());
        while hub.snapshot(1, Channel::Book).map(|s| s.seq) != Some(7) {
            tokio::task::yield_now().await;
        }
        drop(publisher);
        task.await.expect("pump ends with its publisher");
    }
}
