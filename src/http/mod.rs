//! `--http-listen ADDR`: the public market data API and the cluster's state, as JSON over
//! HTTP, and market data live over WebSocket (docs/http-api.md).
//!
//! Off the order path: every answer is read from what the node already holds, the market data
//! hub (built identically on every node, so any node may serve it), the node's market data
//! history for older candles and trades, the node's status and the cluster view the divergence
//! watcher keeps. Names and decimals come from a catalog read through the engine's read queue,
//! which the log never waits for, at most once a second. A WebSocket client reads from the
//! hub's broadcast: one that falls behind is sent a snapshot, and never slows the node.
//!
//! - [`api`]: the REST endpoints;
//! - [`ws`]: the WebSocket channels;
//! - [`cluster`]: the cluster view (peers' statuses, leader changes);
//! - [`names`]: the catalog cache and the JSON shapes of prices and quantities;
//! - `console.html`: the web console at `/`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::gateway::protocol::NodeStatus;
use crate::marketdata::history::MarketHistory;
use crate::marketdata::hub::MarketHub;
use crate::replication::engine_thread::EngineHandle;

pub mod api;
pub mod cluster;
pub mod names;
pub mod ws;

/// What the HTTP API reads.
#[derive(Clone)]
pub struct HttpSources {
    pub market: Arc<MarketHub>,
    pub engine: Arc<EngineHandle>,
    /// This node's status, as `exchange-cli status` shows it.
    pub status: Arc<dyn Fn() -> NodeStatus + Send + Sync>,
    pub cluster: Arc<cluster::ClusterView>,
    /// Every trade and closed candle, beyond the hub's window (`None`: `--no-md-history`).
    pub history: Option<Arc<MarketHistory>>,
}

/// The shared state of every handler.
#[derive(Clone)]
pub(crate) struct Http {
    sources: HttpSources,
    names: Arc<names::Names>,
}

/// The routes, for `serve` and for tests.
pub fn router(sources: HttpSources) -> Router {
    let names = Arc::new(names::Names::new(Arc::clone(&sources.engine)));
    Router::new()
        .route("/", get(console))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/api/v1/instruments", get(api::instruments))
        .route("/api/v1/book/{symbol}", get(api::book))
        .route("/api/v1/trades/{symbol}", get(api::trades))
        .route("/api/v1/candles/{symbol}", get(api::candles))
        .route("/api/v1/cluster", get(api::cluster))
        .route("/api/v1/ws", get(ws::upgrade))
        .with_state(Http { sources, names })
        // Public market data: a page served by one node may read any other (the console does
        // when its node dies).
        .layer(axum::middleware::map_response(allow_any_origin))
}

/// The web console: one page, its script and styles inline, nothing fetched from elsewhere.
const CONSOLE: &str = include_str!("console.html");

async fn console() -> axum::response::Html<&'static str> {
    axum::response::Html(CONSOLE)
}

async fn allow_any_origin(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
        axum::http::HeaderValue::from_static("*"),
    );
    response
}

/// Binds `addr` (so that a taken port fails the node's start) and serves on `runtime`: the
/// node's fan-out runtime, whose threads run at a lower priority than the order path's, so
/// that WebSocket fan-out and page loads take what CPU the order path leaves.
pub fn serve(
    addr: SocketAddr,
    sources: HttpSources,
    runtime: &tokio::runtime::Handle,
) -> Result<(), String> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let app = router(sources);
    runtime.spawn(async move {
        let served = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => axum::serve(listener, app).await,
            Err(e) => Err(e),
        };
        if let Err(e) = served {
            tracing::error!(%addr, error = %e, "the HTTP API stopped");
        }
    });
    Ok(())
}
