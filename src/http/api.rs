//! The REST endpoints: instruments, book, trades, candles, the cluster, health and readiness.
//! Every market data answer carries the stream's sequence number and the log index it stands
//! at, so a client that asks two nodes sees which one is behind.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::cluster::epoch_ms;
use super::names::{
    parse_interval, parse_time, rfc3339, CandleJson, InstrumentJson, LevelJson, NamesError, Scale,
    TradeJson,
};
use super::Http;
use crate::gateway::protocol::NodeStatus;
use crate::marketdata::feed::{
    Candle, Channel, Interval, MdBody, MdMessage, BOOK_LEVELS, RECENT_TRADES,
};
use crate::marketdata::history::HistoryError;

/// Trades `GET /api/v1/trades` answers when no limit is given.
pub const TRADES_DEFAULT: usize = 50;
/// The most trades one answer holds (with a history; without one, `RECENT_TRADES`).
pub const TRADES_MAX: usize = 1_000;
/// The most candles one answer holds, and how many it holds when no limit is given: a day
/// of minutes, or more than an hour of seconds.
pub const CANDLES_MAX: usize = 5_000;
/// A node this many entries behind what it knows committed is not ready.
pub const READY_APPLY_LAG_MAX: u64 = crate::marketdata::SERVED_APPLY_LAG_MAX;

/// An error answer: `{"error": "..."}` with its status.
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn message(self) -> String {
        self.message
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<NamesError> for ApiError {
    fn from(e: NamesError) -> ApiError {
        match e {
            NamesError::UnknownSymbol(name) => ApiError {
                status: StatusCode::NOT_FOUND,
                message: format!("unknown symbol '{name}' (GET /api/v1/instruments lists them)"),
            },
            NamesError::EngineStopped => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "the node is shutting down".into(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (
            self.status,
            Json(Body {
                error: self.message,
            }),
        )
            .into_response()
    }
}

pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// Why not, when not.
    pub reasons: Vec<String>,
    pub leader: Option<u64>,
    pub applied_index: u64,
    pub commit_index: u64,
}

/// Ready: this node knows a leader, has applied nearly all it knows committed, and agrees with
/// its peers' output hashes. A node cut off from the leader loses it within an election
/// timeout and a lease, and answers 503 from then on.
pub(crate) async fn readyz(State(http): State<Http>) -> (StatusCode, Json<Readiness>) {
    let status = (http.sources.status)();
    let mut reasons = Vec::new();
    if status.leader.is_none() {
        reasons.push("no leader known: this node is cut off, or an election is under way".into());
    }
    let lag = status.commit_index.saturating_sub(status.applied_index);
    if lag > READY_APPLY_LAG_MAX {
        reasons.push(format!(
            "behind: applied {} of {} committed",
            status.applied_index, status.commit_index
        ));
    }
    if let Some(divergence) = &status.divergence {
        reasons.push(format!("diverged from a peer: {divergence}"));
    }
    let code = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let readiness = Readiness {
        ready: reasons.is_empty(),
        reasons,
        leader: status.leader,
        applied_index: status.applied_index,
        commit_index: status.commit_index,
    };
    (code, Json(readiness))
}

#[derive(Serialize)]
pub struct Instruments {
    pub instruments: Vec<InstrumentJson>,
}

pub(crate) async fn instruments(State(http): State<Http>) -> Result<Json<Instruments>, ApiError> {
    let catalog = http.names.catalog().await?;
    let instruments = catalog
        .symbols
        .iter()
        .map(|info| InstrumentJson::of(&catalog, info))
        .collect();
    Ok(Json(Instruments { instruments }))
}

/// Where a stream stands: its last message's sequence number, log index and time.
#[derive(Serialize)]
pub struct StreamPosition {
    pub seq: u64,
    pub index: u64,
    pub time: String,
}

impl StreamPosition {
    fn of(message: Option<&MdMessage>) -> StreamPosition {
        let (seq, index, timestamp_ns) =
            message.map_or((0, 0, 0), |m| (m.seq, m.index, m.timestamp_ns));
        StreamPosition {
            seq,
            index,
            time: rfc3339(timestamp_ns),
        }
    }
}

#[derive(Deserialize)]
pub struct DepthQuery {
    pub depth: Option<usize>,
}

#[derive(Serialize)]
pub struct Book {
    pub symbol: String,
    #[serde(flatten)]
    pub position: StreamPosition,
    /// Best first.
    pub bids: Vec<LevelJson>,
    pub asks: Vec<LevelJson>,
}

/// The published depth (at most `BOOK_LEVELS` a side), as the book channel builds it.
pub(crate) async fn book(
    State(http): State<Http>,
    Path(symbol): Path<String>,
    Query(query): Query<DepthQuery>,
) -> Result<Json<Book>, ApiError> {
    let depth = query.depth.unwrap_or(BOOK_LEVELS);
    if depth == 0 || depth > BOOK_LEVELS {
        return Err(ApiError::bad_request(format!(
            "depth must be 1 to {BOOK_LEVELS} (the published depth)"
        )));
    }
    let (catalog, info) = http.names.symbol(&symbol).await?;
    let snapshot = http.sources.market.snapshot(info.symbol, Channel::Book);
    let scale = Scale {
        catalog: &catalog,
        symbol: info.symbol,
    };
    let (bids, asks) = match snapshot.as_ref().map(|m| &m.body) {
        Some(MdBody::BookSnapshot { bids, asks }) => (
            scale.levels(&bids[..depth.min(bids.len())]),
            scale.levels(&asks[..depth.min(asks.len())]),
        ),
        _ => (Vec::new(), Vec::new()),
    };
    Ok(Json(Book {
        symbol,
        position: StreamPosition::of(snapshot.as_ref()),
        bids,
        asks,
    }))
}

#[derive(Deserialize)]
pub struct LimitQuery {
    pub limit: Option<usize>,
}

#[derive(Serialize)]
pub struct Trades {
    pub symbol: String,
    #[serde(flatten)]
    pub position: StreamPosition,
    /// Oldest first.
    pub trades: Vec<TradeJson>,
}

/// The most recent trades, oldest first: the hub's last `RECENT_TRADES`, and older ones from
/// the history.
pub(crate) async fn trades(
    State(http): State<Http>,
    Path(symbol): Path<String>,
    Query(query): Query<LimitQuery>,
) -> Result<Json<Trades>, ApiError> {
    let most = if http.sources.history.is_some() {
        TRADES_MAX
    } else {
        RECENT_TRADES
    };
    let limit = query.limit.unwrap_or(TRADES_DEFAULT);
    if limit == 0 || limit > most {
        return Err(ApiError::bad_request(format!("limit must be 1 to {most}")));
    }
    let (catalog, info) = http.names.symbol(&symbol).await?;
    let snapshot = http.sources.market.snapshot(info.symbol, Channel::Trades);
    let recent = match snapshot.as_ref().map(|m| &m.body) {
        Some(MdBody::TradesSnapshot { recent }) => recent.as_slice(),
        _ => &[],
    };
    let mut trades = recent[recent.len().saturating_sub(limit)..].to_vec();
    if let (Some(history), true) = (&http.sources.history, trades.len() < limit) {
        let before = trades.first().map_or(u64::MAX, |t| t.trade_id);
        let wanted = limit - trades.len();
        let history = Arc::clone(history);
        let symbol = info.symbol;
        let mut older = read_history(move || history.trades_before(symbol, before, wanted)).await?;
        older.append(&mut trades);
        trades = older;
    }
    let scale = Scale {
        catalog: &catalog,
        symbol: info.symbol,
    };
    Ok(Json(Trades {
        symbol,
        position: StreamPosition::of(snapshot.as_ref()),
        trades: trades.iter().map(|t| scale.trade(t)).collect(),
    }))
}

#[derive(Deserialize)]
pub struct CandlesQuery {
    pub interval: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Serialize)]
pub struct Candles {
    pub symbol: String,
    pub interval: &'static str,
    #[serde(flatten)]
    pub position: StreamPosition,
    /// Whether this node keeps a history (without one, only the hub's window is served).
    pub history: bool,
    /// Oldest first; the last ones may still be open.
    pub candles: Vec<CandleJson>,
}

/// The latest `limit` candles of one interval whose start lies in `from..=to` (either may be
/// left out): the hub's window, and before it the history.
pub(crate) async fn candles(
    State(http): State<Http>,
    Path(symbol): Path<String>,
    Query(query): Query<CandlesQuery>,
) -> Result<Json<Candles>, ApiError> {
    let interval = match query.interval.as_deref() {
        None => Interval::OneMinute,
        Some(text) => parse_interval(text)
            .ok_or_else(|| ApiError::bad_request(format!("interval '{text}': give 1s or 1m")))?,
    };
    let time = |name: &str, text: Option<&str>| match text {
        None => Ok(None),
        Some(text) => parse_time(text).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name} '{text}': give an RFC 3339 time or milliseconds since the epoch"
            ))
        }),
    };
    let from = time("from", query.from.as_deref())?.unwrap_or(0);
    let to = time("to", query.to.as_deref())?.unwrap_or(u64::MAX);
    let limit = query.limit.unwrap_or(CANDLES_MAX);
    if limit == 0 || limit > CANDLES_MAX {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {CANDLES_MAX}"
        )));
    }
    let (catalog, info) = http.names.symbol(&symbol).await?;
    let snapshot = http.sources.market.snapshot(info.symbol, Channel::Candles);
    let window: Vec<Candle> = match snapshot.as_ref().map(|m| &m.body) {
        Some(MdBody::CandlesSnapshot { candles }) => candles
            .iter()
            .filter(|c| c.interval == interval)
            .copied()
            .collect(),
        _ => Vec::new(),
    };
    let stored = match (&http.sources.history, before_window(&window, from, to)) {
        (Some(history), Some(until)) => {
            let history = Arc::clone(history);
            let symbol = info.symbol;
            read_history(move || history.candles(symbol, interval, from, until, limit)).await?
        }
        _ => Vec::new(),
    };
    let candles = join_candles(stored, window, from, to, limit);
    let scale = Scale {
        catalog: &catalog,
        symbol: info.symbol,
    };
    Ok(Json(Candles {
        symbol,
        interval: super::names::interval_name(interval),
        position: StreamPosition::of(snapshot.as_ref()),
        history: http.sources.history.is_some(),
        candles: candles.iter().map(|c| scale.candle(c)).collect(),
    }))
}

/// The end of the range to read from the history, if any of `from..=to` lies before the
/// hub's window. The history holds what the window holds too, but may be a moment behind it.
fn before_window(window: &[Candle], from: u64, to: u64) -> Option<u64> {
    let until = match window.first() {
        Some(first) => first.start_ns.checked_sub(1)?,
        None => u64::MAX,
    };
    (from <= until).then_some(to.min(until))
}

/// The latest `limit` candles in `from..=to`: the stored ones (all before the window, oldest
/// first) and then the window's.
fn join_candles(
    mut stored: Vec<Candle>,
    window: Vec<Candle>,
    from: u64,
    to: u64,
    limit: usize,
) -> Vec<Candle> {
    stored.extend(
        window
            .into_iter()
            .filter(|c| (from..=to).contains(&c.start_ns)),
    );
    let surplus = stored.len().saturating_sub(limit);
    stored.drain(..surplus);
    stored
}

/// Runs a history read off the runtime's workers (SQLite blocks).
async fn read_history<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, HistoryError> + Send + 'static,
) -> Result<T, ApiError> {
    let unavailable = |message: String| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: format!("the market data history could not be read: {message}"),
    };
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .map_err(|e| unavailable(e.to_string()))
}

/// One node in `GET /api/v1/cluster`: its status, or why it did not answer.
#[derive(Serialize)]
pub struct NodeJson {
    pub id: u64,
    /// When this status was read (the serving node's own: now; a peer's: its last answer).
    pub as_of_ms: u64,
    pub status: Option<NodeStatus>,
    pub error: Option<String>,
}

#[derive(Serialize)]
pub struct LeaderChangeJson {
    pub at: String,
    pub at_ms: u64,
    pub leader: Option<u64>,
    pub term: u64,
    /// How long the serving node knew no leader before this one.
    pub no_leader_ms: f64,
}

#[derive(Serialize)]
pub struct ClusterJson {
    /// The node that answered.
    pub node: u64,
    pub nodes: Vec<NodeJson>,
    /// Oldest first, as the answering node saw them.
    pub leader_changes: Vec<LeaderChangeJson>,
}

pub(crate) async fn cluster(State(http): State<Http>) -> Json<ClusterJson> {
    let own = (http.sources.status)();
    let me = own.id;
    let now_ms = epoch_ms(std::time::SystemTime::now());
    let mut nodes = vec![NodeJson {
        id: me,
        as_of_ms: now_ms,
        status: Some(own),
        error: None,
    }];
    for (id, peer) in http.sources.cluster.peers() {
        let (status, error) = match peer.status {
            Ok(status) => (Some(status), None),
            Err(e) => (None, Some(e)),
        };
        nodes.push(NodeJson {
            id,
            as_of_ms: epoch_ms(peer.at),
            status,
            error,
        });
    }
    nodes.sort_by_key(|n| n.id);
    let leader_changes = http
        .sources
        .cluster
        .leader_changes()
        .into_iter()
        .map(|c| LeaderChangeJson {
            at: humantime::format_rfc3339_millis(c.at).to_string(),
            at_ms: epoch_ms(c.at),
            leader: c.leader,
            term: c.term,
            no_leader_ms: c.no_leader.as_secs_f64() * 1e3,
        })
        .collect();
    Json(ClusterJson {
        node: me,
        nodes,
        leader_changes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minute(start_min: u64, closed: bool) -> Candle {
        Candle {
            interval: Interval::OneMinute,
            start_ns: start_min * 60_000_000_000,
            open: 1,
            high: 2,
            low: 1,
            close: 2,
            volume: 3,
            trades: 1,
            closed,
        }
    }

    #[test]
    fn candles_before_the_window_come_from_the_history_and_the_rest_from_memory() {
        let window = vec![minute(10, true), minute(11, false)];
        let at = |m: u64| m * 60_000_000_000;
        // Only what lies before the window is read from the history.
        assert_eq!(before_window(&window, 0, u64::MAX), Some(at(10) - 1));
        assert_eq!(before_window(&window, at(3), at(5)), Some(at(5)));
        assert_eq!(before_window(&window, at(10), u64::MAX), None);
        assert_eq!(before_window(&[], at(3), u64::MAX), Some(u64::MAX));
        assert_eq!(before_window(&[minute(0, false)], 0, u64::MAX), None);

        let stored = vec![minute(7, true), minute(8, true)];
        let all: Vec<u64> = join_candles(stored.clone(), window.clone(), 0, u64::MAX, 100)
            .iter()
            .map(|c| c.start_ns / 60_000_000_000)
            .collect();
        assert_eq!(all, [7, 8, 10, 11]);
        // The limit keeps the latest; the range cuts the window too.
        let latest = join_candles(stored.clone(), window.clone(), 0, u64::MAX, 3);
        assert_eq!(
            latest,
            [minute(8, true), minute(10, true), minute(11, false)]
        );
        let cut = join_candles(stored, window, 0, at(10), 100);
        assert_eq!(cut.last(), Some(&minute(10, true)));
    }
}
