//! Streams: a broker's execution reports, from the leader only, and market data, from any node
//! in touch with the leader; each follows its source with no gap until the subscriber goes or
//! the node may serve it no longer.

use super::*;
use crate::marketdata::SERVED_APPLY_LAG_MAX;

impl Gateway {
    /// `stream_market` on the fan-out runtime, whose threads run at a lower priority than the
    /// order path's. Hands the stream back (`None` if the task failed).
    pub(super) async fn stream_market_apart(
        &self,
        session: Arc<Session>,
        symbol: u32,
        channel: Channel,
        since: Option<u64>,
        mut send: quinn::SendStream,
    ) -> (Option<Reply>, Option<quinn::SendStream>) {
        let gateway = self.clone();
        let task = async move {
            let end = gateway
                .stream_market(&session, symbol, channel, since, &mut send)
                .await;
            (end, send)
        };
        match &self.fanout {
            Some(runtime) => match runtime.spawn(task).await {
                Ok((end, send)) => (end, Some(send)),
                Err(_) => (None, None),
            },
            None => {
                let (end, send) = task.await;
                (end, Some(send))
            }
        }
    }

    /// Whether this node may serve market data now: it leads with a majority, or it follows a
    /// leader it has heard from lately (`Leadership::in_touch_with_leader`) and has applied
    /// all but `SERVED_APPLY_LAG_MAX` of what that leader had committed. Every node builds the
    /// same streams with the same numbers (they come from the log), so subscribers may read a
    /// follower and leave the leader's cores to orders. A follower cut off, removed or behind
    /// ends its streams (`market_data_elsewhere`), and the client's feed resumes on another
    /// node after its last message.
    pub(super) fn serves_market_data(&self) -> bool {
        self.publishing()
            || self
                .leadership
                .in_touch_with_leader()
                .is_some_and(|leader_commit| {
                    let committed = leader_commit.max(self.committed.load(Ordering::Acquire));
                    self.engine.status().applied_index() + SERVED_APPLY_LAG_MAX >= committed
                })
    }

    /// How a node that may not serve market data ends a stream or refuses one: `NotLeader`
    /// naming no leader, so that the client tries its other nodes (its followers, its market
    /// data endpoints) rather than the leader's order path.
    fn market_data_elsewhere(&self) -> Reply {
        Reply::NotLeader {
            leader_id: None,
            broker: None,
        }
    }

    /// Streams one market data stream until the subscriber goes, or this node may serve it no
    /// longer (`serves_market_data`). Returns the reply that ends the stream, if any.
    pub(super) async fn stream_market(
        &self,
        session: &Session,
        symbol: u32,
        channel: Channel,
        mut since: Option<u64>,
        send: &mut quinn::SendStream,
    ) -> Option<Reply> {
        let mut keys_changed = self.keys.subscribe();
        'subscribe: loop {
            if !self.serves_market_data() {
                return Some(self.market_data_elsewhere());
            }
            let Some(subscription) = self.market.subscribe(symbol, channel, since) else {
                return Some(self.no_market_data(symbol));
            };
            let mut live = subscription.live;
            let mut last = match subscription.start {
                Start::Resume(later) => {
                    let last = later.last().map_or(since.unwrap_or(0), |p| p.message.seq);
                    if later.is_empty() {
                        write(send, &Reply::Market(Vec::new())).await.ok()?;
                    }
                    for chunk in later.chunks(MARKET_MESSAGES_PER_FRAME_MAX) {
                        write_market(send, chunk).await.ok()?;
                    }
                    last
                }
                Start::Snapshot(snapshot) => {
                    let last = snapshot.seq;
                    write(send, &Reply::Market(vec![snapshot])).await.ok()?;
                    last
                }
            };
            let mine = |p: &Published| p.message.symbol == symbol && p.message.channel == channel;
            let mut batch: Vec<Arc<Published>> = Vec::new();
            let frame_every = self.market.frame_every();
            // When the last frame went; `None`: the next may go at once.
            let mut last_frame: Option<Instant> = None;
            loop {
                if !self.key_still_valid(session) {
                    return Some(Reply::Error(KEY_CHANGED.into()));
                }
                let first = tokio::select! {
                    received = live.recv() => received,
                    _ = send.stopped() => return None,
                    _ = keys_changed.changed() => continue,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {
                        if !self.serves_market_data() {
                            return Some(self.market_data_elsewhere());
                        }
                        continue;
                    }
                };
                // At most one frame each `frame_every`: in a burst, what arrives meanwhile goes
                // out in one frame (one packet, one wake-up of the subscriber) instead of one
                // by one. A subscriber that falls behind the broadcast meanwhile is conflated
                // to a snapshot below.
                if let Some(wait) = last_frame.map(|at| frame_every.saturating_sub(at.elapsed())) {
                    if !wait.is_zero() {
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            _ = send.stopped() => return None,
                        }
                    }
                }
                let mut lagged = false;
                let mut next = Some(first);
                batch.clear();
                while let Some(received) = next.take() {
                    match received {
                        Ok(published) if mine(&published) && published.message.is_snapshot() => {
                            // The hub started again from snapshots (messages were dropped on
                            // their way to it): so does the subscriber.
                            last = published.message.seq;
                            batch.push(published);
                        }
                        Ok(published) if mine(&published) && published.message.seq > last => {
                            if published.message.seq != last + 1 {
                                // Messages were dropped on their way to the hub: resynchronise.
                                lagged = true;
                                break;
                            }
                            last = published.message.seq;
                            batch.push(published);
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            lagged = true;
                            break;
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            return Some(Reply::Error("the node is stopping".into()));
                        }
                    }
                    if batch.len() < MARKET_MESSAGES_PER_FRAME_MAX {
                        next = match live.try_recv() {
                            Ok(published) => Some(Ok(published)),
                            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                                Some(Err(broadcast::error::RecvError::Lagged(n)))
                            }
                            Err(broadcast::error::TryRecvError::Closed) => {
                                Some(Err(broadcast::error::RecvError::Closed))
                            }
                            Err(broadcast::error::TryRecvError::Empty) => None,
                        };
                    }
                }
                self.planted_market_gap(&mut batch);
                if !batch.is_empty() {
                    write_market(send, &batch).await.ok()?;
                    self.metrics
                        .market_messages
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    self.metrics.market_frames.fetch_add(1, Ordering::Relaxed);
                    // A full frame leaves more waiting: the next goes at once.
                    last_frame = (batch.len() < MARKET_MESSAGES_PER_FRAME_MAX).then(Instant::now);
                }
                if !self.serves_market_data() {
                    return Some(self.market_data_elsewhere());
                }
                if lagged {
                    // Too far behind to catch up message by message: start again from a
                    // fresh snapshot.
                    self.metrics.market_resyncs.fetch_add(1, Ordering::Relaxed);
                    since = None;
                    continue 'subscribe;
                }
            }
        }
    }

    /// Streams a broker's reports after `since` until the stream fails or this node stops
    /// leading. Returns the reply that ends the stream, if any.
    pub(super) async fn stream_reports(
        &self,
        session: &Session,
        broker: BrokerId,
        mut since: u64,
        send: &mut quinn::SendStream,
    ) -> Option<Reply> {
        let mut recorded = self.reports.subscribe();
        let mut keys_changed = self.keys.subscribe();
        let mut first = true;
        loop {
            if !self.publishing() {
                return Some(self.not_leader());
            }
            if !self.key_still_valid(session) {
                return Some(Reply::Error(KEY_CHANGED.into()));
            }
            recorded.borrow_and_update();
            let batch = match self.reports.since(broker, since, REPORTS_PER_FRAME_MAX) {
                Ok(batch) => batch,
                Err(gap) => {
                    return Some(Reply::Error(format!(
                        "reports up to seq {} are no longer kept on this node; asked since {since}",
                        gap.complete_after
                    )))
                }
            };
            if batch.is_empty() && !first {
                // Wake on news, now and then to notice a lost leadership, and at once when
                // the subscriber goes away (else this task would outlive its connection).
                tokio::select! {
                    _ = recorded.changed() => {}
                    _ = keys_changed.changed() => {}
                    _ = send.stopped() => return None,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                continue;
            }
            first = false;
            if let Some(last) = batch.last() {
                since = last.seq;
            }
            let mut batch = batch;
            self.planted_report_faults(&mut batch);
            write(send, &Reply::Reports(batch)).await.ok()?;
        }
    }
}

/// Writes `Reply::Market` of already encoded messages: postcard encodes an enum as its variant
/// index then its content, and a vector as its length then its elements, so the frame is the
/// variant's prefix, the count, and the messages' bytes as the hub encoded them once for all.
pub(super) async fn write_market(
    send: &mut quinn::SendStream,
    messages: &[Arc<Published>],
) -> Result<(), ()> {
    let frame = market_frame(messages);
    write_frame(send, &frame).await.map_err(|_| ())
}

pub(super) fn market_frame(messages: &[Arc<Published>]) -> Vec<u8> {
    let mut frame = postcard::to_allocvec(&Reply::Market(Vec::new())).unwrap_or_default();
    // The empty vector's length is the last byte (a varint 0): replace it by the count.
    frame.pop();
    let mut count = [0u8; 10];
    // A usize's varint takes at most 10 bytes: this cannot fail.
    if let Ok(count) = postcard::to_slice(&messages.len(), &mut count) {
        frame.extend_from_slice(count);
    }
    for published in messages {
        frame.extend_from_slice(&published.encoded);
    }
    frame
}
