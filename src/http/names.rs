//! Names and decimals for the HTTP API: the catalog, cached, and the JSON shapes that carry
//! prices and quantities as decimal strings on the instrument's scale.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use exchange_client::catalog::Catalog;
use serde::Serialize;

use crate::gateway::protocol::InstrumentInfo;
use crate::gateway::server::catalog_of;
use crate::marketdata::feed::{Candle, Interval, Level, LevelChange, TradeTick};
use crate::replication::engine_thread::EngineHandle;

/// A catalog younger than this is used as it is; an unknown name refreshes it at most this
/// often, so a client asking for names that do not exist costs the engine one read a second.
const CATALOG_FRESH_FOR: Duration = Duration::from_secs(1);

/// The catalog, read from the engine's read queue when older than `CATALOG_FRESH_FOR`.
pub struct Names {
    engine: Arc<EngineHandle>,
    cached: Mutex<Option<(Instant, Arc<Catalog>)>>,
}

/// Why a name could not be looked up.
#[derive(Debug)]
pub enum NamesError {
    UnknownSymbol(String),
    /// The engine thread has stopped (the node is shutting down).
    EngineStopped,
}

impl Names {
    pub fn new(engine: Arc<EngineHandle>) -> Names {
        Names {
            engine,
            cached: Mutex::new(None),
        }
    }

    pub async fn catalog(&self) -> Result<Arc<Catalog>, NamesError> {
        if let Some((at, catalog)) = &*self.cached.lock().unwrap_or_else(|p| p.into_inner()) {
            if at.elapsed() < CATALOG_FRESH_FOR {
                return Ok(Arc::clone(catalog));
            }
        }
        let catalog = Arc::new(
            self.engine
                .query(catalog_of)
                .await
                .map_err(|_| NamesError::EngineStopped)?,
        );
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), Arc::clone(&catalog)));
        Ok(catalog)
    }

    /// The catalog and the symbol named `name`.
    pub async fn symbol(&self, name: &str) -> Result<(Arc<Catalog>, InstrumentInfo), NamesError> {
        let catalog = self.catalog().await?;
        match catalog.symbol_named(name) {
            Some(info) => Ok((Arc::clone(&catalog), info.clone())),
            None => Err(NamesError::UnknownSymbol(name.to_string())),
        }
    }
}

/// One instrument as `GET /api/v1/instruments` lists it.
#[derive(Serialize)]
pub struct InstrumentJson {
    pub symbol: String,
    pub base: String,
    pub quote: String,
    pub tick_size: String,
    pub lot_size: String,
    pub price_decimals: u8,
    pub qty_decimals: u8,
    pub halted: bool,
}

impl InstrumentJson {
    pub fn of(catalog: &Catalog, info: &InstrumentInfo) -> InstrumentJson {
        InstrumentJson {
            symbol: info.name.clone(),
            base: catalog.asset_name(info.base),
            quote: catalog.asset_name(info.quote),
            tick_size: catalog.price(info.symbol, info.tick_size),
            lot_size: catalog.qty(info.symbol, info.lot_size),
            price_decimals: info.price_decimals,
            qty_decimals: catalog.qty_decimals(info.symbol),
            halted: info.halted,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LevelJson {
    pub price: String,
    pub qty: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct LevelChangeJson {
    pub side: &'static str,
    pub price: String,
    /// "0" when the level left the published depth.
    pub qty: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct TradeJson {
    pub trade_id: u64,
    pub price: String,
    pub qty: String,
    /// The side of the order that took liquidity.
    pub aggressor: &'static str,
    pub time: String,
    pub time_ms: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct CandleJson {
    pub interval: &'static str,
    pub start: String,
    pub start_ms: u64,
    pub open: String,
    pub high: String,
    pub low: String,
    pub close: String,
    pub volume: String,
    pub trades: u32,
    /// A closed candle never changes again.
    pub closed: bool,
}

/// Formats one symbol's prices and quantities.
pub struct Scale<'a> {
    pub catalog: &'a Catalog,
    pub symbol: u32,
}

impl Scale<'_> {
    pub fn price(&self, price: i64) -> String {
        self.catalog.price(self.symbol, price)
    }

    pub fn qty(&self, qty: i64) -> String {
        self.catalog.qty(self.symbol, qty)
    }

    pub fn levels(&self, levels: &[Level]) -> Vec<LevelJson> {
        levels
            .iter()
            .map(|l| LevelJson {
                price: self.price(l.price),
                qty: self.qty(l.qty),
            })
            .collect()
    }

    pub fn change(&self, change: &LevelChange) -> LevelChangeJson {
        LevelChangeJson {
            side: side_name(change.side),
            price: self.price(change.price),
            qty: self.qty(change.qty),
        }
    }

    pub fn trade(&self, trade: &TradeTick) -> TradeJson {
        TradeJson {
            trade_id: trade.trade_id,
            price: self.price(trade.price),
            qty: self.qty(trade.qty),
            aggressor: side_name(trade.aggressor),
            time: rfc3339(trade.timestamp_ns),
            time_ms: trade.timestamp_ns / 1_000_000,
        }
    }

    pub fn candle(&self, candle: &Candle) -> CandleJson {
        CandleJson {
            interval: interval_name(candle.interval),
            start: rfc3339(candle.start_ns),
            start_ms: candle.start_ns / 1_000_000,
            open: self.price(candle.open),
            high: self.price(candle.high),
            low: self.price(candle.low),
            close: self.price(candle.close),
            volume: self.qty(candle.volume),
            trades: candle.trades,
            closed: candle.closed,
        }
    }
}

pub fn side_name(side: exchange_domain::Side) -> &'static str {
    match side {
        exchange_domain::Side::Buy => "buy",
        exchange_domain::Side::Sell => "sell",
    }
}

pub fn interval_name(interval: Interval) -> &'static str {
    match interval {
        Interval::OneSecond => "1s",
        Interval::OneMinute => "1m",
    }
}

pub fn parse_interval(text: &str) -> Option<Interval> {
    Interval::ALL
        .into_iter()
        .find(|&i| interval_name(i) == text)
}

/// Nanoseconds since the epoch as RFC 3339 UTC with milliseconds.
pub fn rfc3339(timestamp_ns: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(timestamp_ns)).to_string()
}

/// A time given as RFC 3339 or as milliseconds since the epoch, in nanoseconds since the epoch.
pub fn parse_time(text: &str) -> Option<u64> {
    if let Ok(ms) = text.parse::<u64>() {
        return ms.checked_mul(1_000_000);
    }
    let at = humantime::parse_rfc3339_weak(text).ok()?;
    u64::try_from(at.duration_since(UNIX_EPOCH).ok()?.as_nanos()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_as_rfc3339_or_epoch_milliseconds() {
        let ns = 1_764_700_000_123_000_000u64;
        assert_eq!(parse_time("1764700000123"), Some(ns));
        assert_eq!(parse_time(&rfc3339(ns)), Some(ns));
        assert_eq!(parse_time("2025-12-02T18:26:40.123Z"), Some(ns));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("99999999999999999999"), None);
    }

    #[test]
    fn intervals_read_as_they_are_written() {
        for interval in Interval::ALL {
            assert_eq!(parse_interval(interval_name(interval)), Some(interval));
        }
        assert_eq!(parse_interval("5m"), None);
    }
}
