//! `GET /api/v1/ws`: market data live over WebSocket, one JSON object a message.
//!
//! A client subscribes to a channel (`book`, `trades`, `candles`) of a symbol by name, and may
//! give `since`, the last sequence number it holds: it then gets exactly the messages after it
//! (or a snapshot when this node no longer keeps them). Every message carries its stream's
//! sequence number; the server never sends a number twice nor skips one without a snapshot
//! (a gap, a client that fell behind the hub's broadcast, or a reset of the hub all resend the
//! stream's state as a snapshot). A client that does not read is closed after
//! `SEND_TIMEOUT`: it never holds the node.
//!
//! Cheap per client: each of the hub's messages is made into JSON once for every session
//! (`Published::text`), and a session writes at most once each `--md-frame-ms`, the messages
//! of a burst together.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use exchange_client::catalog::Catalog;
use futures_util::SinkExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::{self, error::RecvError};

use super::names::{rfc3339, CandleJson, LevelChangeJson, LevelJson, Scale, TradeJson};
use super::Http;
use crate::marketdata::feed::{Channel, MdBody, MdMessage};
use crate::marketdata::hub::{Published, Start};

/// A client's message larger than this closes the connection (a subscription is one line).
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 4 * 1024;
/// Streams one connection may follow.
pub const SUBSCRIPTIONS_MAX: usize = 64;
/// A message the client has not taken in this long closes the connection.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The most live messages queued before one flush.
const BURST_MESSAGES_MAX: usize = 256;

/// What a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum ClientMessage {
    Subscribe {
        channel: ChannelName,
        symbol: String,
        /// The last sequence number the client holds on this stream.
        since: Option<u64>,
    },
    Unsubscribe {
        channel: ChannelName,
        symbol: String,
    },
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChannelName {
    Book,
    Trades,
    Candles,
}

impl ChannelName {
    fn channel(self) -> Channel {
        match self {
            ChannelName::Book => Channel::Book,
            ChannelName::Trades => Channel::Trades,
            ChannelName::Candles => Channel::Candles,
        }
    }

    fn of(channel: Channel) -> ChannelName {
        match channel {
            Channel::Book => ChannelName::Book,
            Channel::Trades => ChannelName::Trades,
            Channel::Candles => ChannelName::Candles,
        }
    }
}

/// What the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMessage {
    Subscribed {
        channel: ChannelName,
        symbol: String,
    },
    Unsubscribed {
        channel: ChannelName,
        symbol: String,
    },
    /// The stream's whole state after `seq`.
    Snapshot(Data),
    /// What message `seq` changed.
    Update(Data),
    Error {
        message: String,
    },
}

#[derive(Debug, Serialize)]
pub struct Data {
    pub channel: ChannelName,
    pub symbol: String,
    pub seq: u64,
    /// The log index of the entry that made it.
    pub index: u64,
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bids: Option<Vec<LevelJson>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asks: Option<Vec<LevelJson>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<LevelChangeJson>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trades: Option<Vec<TradeJson>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candles: Option<Vec<CandleJson>>,
}

/// One followed stream.
struct Followed {
    name: String,
    catalog: Arc<Catalog>,
    /// The last sequence number sent (or the client's own, when it is ahead of this node).
    last: u64,
}

pub(crate) async fn upgrade(State(http): State<Http>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(CLIENT_MESSAGE_BYTES_MAX)
        .on_upgrade(move |socket| session(http, socket))
}

struct Session {
    http: Http,
    socket: WebSocket,
    followed: BTreeMap<(u32, Channel), Followed>,
    /// Every stream's live messages, from the hub's broadcast (one receiver for all streams).
    live: Option<broadcast::Receiver<Arc<Published>>>,
    /// When the last burst of live messages was queued; `None`: the next may go at once.
    last_burst: Option<Instant>,
}

/// Why a session ends.
struct Closed;

async fn session(http: Http, socket: WebSocket) {
    let mut session = Session {
        http,
        socket,
        followed: BTreeMap::new(),
        live: None,
        last_burst: None,
    };
    let _ = session.run().await;
}

impl Session {
    async fn run(&mut self) -> Result<(), Closed> {
        loop {
            tokio::select! {
                incoming = self.socket.recv() => match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Err(Closed),
                    Some(Ok(Message::Text(text))) => self.on_client(text.as_str()).await?,
                    Some(Ok(Message::Binary(_))) => {
                        self.send(&error("messages are JSON text")).await?;
                    }
                    // Pings are answered by the library.
                    Some(Ok(_)) => {}
                },
                live = next_live(&mut self.live) => match live {
                    Ok(published) => self.on_live_burst(published).await?,
                    Err(RecvError::Lagged(_)) => self.resynchronise_all().await?,
                    Err(RecvError::Closed) => return Err(Closed),
                },
            }
            // Whatever was queued goes out in one write.
            self.flush().await?;
        }
    }

    /// A live message and what followed it within the frame window: queued together, so a
    /// burst costs one write and one wake-up of the client, not one per message.
    async fn on_live_burst(&mut self, first: Arc<Published>) -> Result<(), Closed> {
        let frame_every = self.http.sources.market.frame_every();
        if let Some(wait) = self
            .last_burst
            .map(|at| frame_every.saturating_sub(at.elapsed()))
        {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(published) = next.take() {
            self.on_live(&published).await?;
            taken += 1;
            if taken == BURST_MESSAGES_MAX {
                break;
            }
            next = match self.live.as_mut().map(|live| live.try_recv()) {
                Some(Ok(published)) => Some(published),
                Some(Err(broadcast::error::TryRecvError::Lagged(_))) => {
                    // Conflated: the state now, instead of what it missed.
                    self.resynchronise_all().await?;
                    None
                }
                _ => None,
            };
        }
        // A full burst leaves more waiting: the next goes at once.
        self.last_burst = (taken < BURST_MESSAGES_MAX).then(Instant::now);
        Ok(())
    }

    async fn on_client(&mut self, text: &str) -> Result<(), Closed> {
        let message = match serde_json::from_str::<ClientMessage>(text) {
            Ok(message) => message,
            Err(e) => return self.send(&error(format!("not understood: {e}"))).await,
        };
        match message {
            ClientMessage::Subscribe {
                channel,
                symbol,
                since,
            } => self.subscribe(channel, symbol, since).await,
            ClientMessage::Unsubscribe { channel, symbol } => {
                let found = self
                    .followed
                    .iter()
                    .find(|((_, c), f)| *c == channel.channel() && f.name == symbol)
                    .map(|(key, _)| *key);
                match found {
                    Some(key) => {
                        self.followed.remove(&key);
                        self.send(&ServerMessage::Unsubscribed { channel, symbol })
                            .await
                    }
                    None => {
                        self.send(&error(format!("not subscribed to {symbol} {channel:?}")))
                            .await
                    }
                }
            }
        }
    }

    async fn subscribe(
        &mut self,
        channel: ChannelName,
        symbol: String,
        since: Option<u64>,
    ) -> Result<(), Closed> {
        if self.followed.len() >= SUBSCRIPTIONS_MAX {
            let why = format!("at most {SUBSCRIPTIONS_MAX} subscriptions a connection");
            return self.send(&error(why)).await;
        }
        let (catalog, info) = match self.http.names.symbol(&symbol).await {
            Ok(found) => found,
            Err(e) => {
                return self
                    .send(&error(super::api::ApiError::from(e).message()))
                    .await
            }
        };
        let key = (info.symbol, channel.channel());
        let Some(subscription) =
            self.http
                .sources
                .market
                .subscribe(info.symbol, channel.channel(), since)
        else {
            return self
                .send(&error(format!("no market data for {symbol} yet")))
                .await;
        };
        // The new receiver starts where this subscription's start ends. The old one may hold
        // messages of the other streams that the new one never gets: deliver them first (any
        // it also holds come again later, and are skipped by their sequence numbers).
        if let Some(mut old) = self.live.take() {
            loop {
                match old.try_recv() {
                    Ok(published) => self.on_live(&published).await?,
                    Err(broadcast::error::TryRecvError::Lagged(_)) => {
                        self.resynchronise_all().await?
                    }
                    Err(_) => break,
                }
            }
        }
        self.live = Some(subscription.live);
        self.send(&ServerMessage::Subscribed {
            channel,
            symbol: symbol.clone(),
        })
        .await?;
        self.followed.insert(
            key,
            Followed {
                name: symbol,
                catalog,
                last: since.unwrap_or(0),
            },
        );
        match subscription.start {
            Start::Snapshot(snapshot) => self.deliver(&snapshot, None).await,
            Start::Resume(later) => {
                for published in later {
                    self.deliver(&published.message, Some(&published)).await?;
                }
                Ok(())
            }
        }
    }

    /// A live message: queued if followed and next in its stream; a gap resends the state.
    async fn on_live(&mut self, published: &Published) -> Result<(), Closed> {
        let message = &published.message;
        let key = (message.symbol, message.channel);
        let Some(followed) = self.followed.get(&key) else {
            return Ok(());
        };
        if !message.is_snapshot() && message.seq > followed.last + 1 {
            return self.resynchronise(key).await;
        }
        self.deliver(message, Some(published)).await
    }

    /// Queues `message` unless the client already has it, and notes its sequence number. A
    /// message of the hub's is made into text once, for every session.
    async fn deliver(
        &mut self,
        message: &MdMessage,
        published: Option<&Published>,
    ) -> Result<(), Closed> {
        let key = (message.symbol, message.channel);
        let Some(followed) = self.followed.get_mut(&key) else {
            return Ok(());
        };
        if !message.is_snapshot() && message.seq <= followed.last {
            return Ok(());
        }
        followed.last = message.seq;
        let render = || {
            let scale = Scale {
                catalog: &followed.catalog,
                symbol: message.symbol,
            };
            let data = data(&scale, followed.name.clone(), message);
            let out = if message.is_snapshot() {
                ServerMessage::Snapshot(data)
            } else {
                ServerMessage::Update(data)
            };
            serde_json::to_string(&out).unwrap_or_default()
        };
        let text = match published {
            Some(published) => {
                let text = published.text.get_or_init(|| Bytes::from(render()));
                Utf8Bytes::try_from(text.clone()).map_err(|_| Closed)?
            }
            None => Utf8Bytes::from(render()),
        };
        self.queue(text).await
    }

    async fn resynchronise(&mut self, key: (u32, Channel)) -> Result<(), Closed> {
        match self.http.sources.market.snapshot(key.0, key.1) {
            Some(snapshot) => self.deliver(&snapshot, None).await,
            None => Ok(()),
        }
    }

    async fn resynchronise_all(&mut self) -> Result<(), Closed> {
        let keys: Vec<(u32, Channel)> = self.followed.keys().copied().collect();
        for key in keys {
            self.resynchronise(key).await?;
        }
        Ok(())
    }

    /// Queues a control message (it goes out with the next flush).
    async fn send(&mut self, message: &ServerMessage) -> Result<(), Closed> {
        let text = serde_json::to_string(message).map_err(|_| Closed)?;
        self.queue(text.into()).await
    }

    /// Queues one message; the socket writes when its buffer fills or at the next flush.
    async fn queue(&mut self, text: Utf8Bytes) -> Result<(), Closed> {
        match tokio::time::timeout(SEND_TIMEOUT, self.socket.feed(Message::Text(text))).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Closed),
        }
    }

    async fn flush(&mut self) -> Result<(), Closed> {
        match tokio::time::timeout(SEND_TIMEOUT, self.socket.flush()).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Closed),
        }
    }
}

async fn next_live(
    live: &mut Option<broadcast::Receiver<Arc<Published>>>,
) -> Result<Arc<Published>, RecvError> {
    match live {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

fn error(message: impl Into<String>) -> ServerMessage {
    ServerMessage::Error {
        message: message.into(),
    }
}

fn data(scale: &Scale<'_>, symbol: String, message: &MdMessage) -> Data {
    let mut data = Data {
        channel: ChannelName::of(message.channel),
        symbol,
        seq: message.seq,
        index: message.index,
        time: rfc3339(message.timestamp_ns),
        bids: None,
        asks: None,
        changes: None,
        trades: None,
        candles: None,
    };
    match &message.body {
        MdBody::BookSnapshot { bids, asks } => {
            data.bids = Some(scale.levels(bids));
            data.asks = Some(scale.levels(asks));
        }
        MdBody::BookUpdate { changes } => {
            data.changes = Some(changes.iter().map(|c| scale.change(c)).collect());
        }
        MdBody::Trades { trades } | MdBody::TradesSnapshot { recent: trades } => {
            data.trades = Some(trades.iter().map(|t| scale.trade(t)).collect());
        }
        MdBody::Candles { candles } | MdBody::CandlesSnapshot { candles } => {
            data.candles = Some(candles.iter().map(|c| scale.candle(c)).collect());
        }
    }
    data
}
