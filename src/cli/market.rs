//! `exchange-cli watch book|trades` and `exchange-cli candles`: market data in a terminal.
//!
//! `watch book` redraws the book in place as it changes (at most ten times a second);
//! `watch trades` prints each trade on a line; `candles` prints a symbol's candles, and with
//! `--follow` each candle as it changes. `--json` prints each message (or trade, or candle) as
//! one JSON object a line instead, for scripts.

use std::io::Write;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use super::catalog::{self, rfc3339, Catalog, CatalogInput};
use super::cluster::ClusterArgs;
use crate::marketdata::feed::{Candle, Channel, Interval, Level, MdBody, StreamState, TradeTick};

#[derive(Subcommand, Clone, Debug)]
pub enum WatchWhat {
    /// The book (L2 depth, top 10 levels a side), redrawn in place as it changes.
    Book(WatchArgs),
    /// Every trade as it happens: time, price, quantity, and the aggressor's side.
    Trades(WatchArgs),
}

#[derive(Args, Clone, Debug)]
pub struct WatchArgs {
    /// The symbol, by name (AAPL) or number.
    pub symbol: String,
    /// Stop after this many seconds [default: run until interrupted].
    #[arg(long, value_name = "SECONDS")]
    pub seconds: Option<f64>,
}

#[derive(Args, Clone, Debug)]
pub struct CandlesArgs {
    /// The symbol, by name (AAPL) or number.
    pub symbol: String,
    /// The candle length.
    #[arg(long, value_enum, default_value = "1m")]
    pub interval: Interval,
    /// Keep printing each candle as it changes or closes.
    #[arg(long)]
    pub follow: bool,
    /// With --follow: stop after this many seconds [default: run until interrupted].
    #[arg(long, value_name = "SECONDS")]
    pub seconds: Option<f64>,
}

/// How long one wait for messages lasts before the loop looks at the clock again.
const POLL: Duration = Duration::from_millis(100);
/// The book is redrawn at most this often.
const REDRAW_EVERY: Duration = Duration::from_millis(100);

pub async fn watch(cluster: &ClusterArgs, what: &WatchWhat) -> Result<(), String> {
    let (args, channel) = match what {
        WatchWhat::Book(args) => (args, Channel::Book),
        WatchWhat::Trades(args) => (args, Channel::Trades),
    };
    let (client, catalog, symbol) = market_client(cluster, &args.symbol).await?;
    let mut feed = client.into_market_feed(symbol, channel);
    let until = args
        .seconds
        .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    // On a terminal the book is redrawn in place; into a pipe or a file it is printed once,
    // when the watch ends, without the terminal's control codes.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut out = std::io::stdout().lock();
    let mut last_draw: Option<Instant> = None;
    let mut dirty = false;
    while until.is_none_or(|t| Instant::now() < t) {
        let messages = feed.next(POLL).await.map_err(|e| e.to_string())?;
        if cluster.json {
            for message in &messages {
                print_json(&mut out, message)?;
            }
            continue;
        }
        match channel {
            Channel::Book => {
                dirty |= !messages.is_empty();
                if terminal && dirty && last_draw.is_none_or(|t| t.elapsed() >= REDRAW_EVERY) {
                    draw_book(&mut out, &catalog, symbol, feed.state(), true)?;
                    last_draw = Some(Instant::now());
                    dirty = false;
                }
            }
            _ => {
                for message in &messages {
                    match &message.body {
                        MdBody::Trades { trades } => {
                            print_trades(&mut out, &catalog, symbol, trades)?
                        }
                        MdBody::TradesSnapshot { recent } => {
                            writeln!(out, "-- recent trades of {}", catalog.symbol_name(symbol))
                                .map_err(io)?;
                            print_trades(&mut out, &catalog, symbol, recent)?;
                            writeln!(out, "-- live").map_err(io)?;
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    if channel == Channel::Book && !cluster.json {
        draw_book(&mut out, &catalog, symbol, feed.state(), terminal)?;
    }
    Ok(())
}

/// A client for market data (which a session reads once logged on), the cluster's names, and
/// the symbol asked for.
async fn market_client(
    cluster: &ClusterArgs,
    symbol: &str,
) -> Result<(crate::gateway::client::Client, Catalog, u32), String> {
    let mut client = cluster.client_with_key(&cluster.required_key("market data")?)?;
    let catalog = catalog::fetch(&mut client)
        .await
        .map_err(|e| e.to_string())?;
    let symbol = catalog.symbol_id(symbol).map_err(|e| e.to_string())?;
    Ok((client, catalog, symbol))
}

pub async fn candles(cluster: &ClusterArgs, args: &CandlesArgs) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    let (mut client, catalog, symbol) = market_client(cluster, &args.symbol).await?;
    if !args.follow {
        let snapshot = client
            .market_snapshot(symbol, Channel::Candles)
            .await
            .map_err(|e| e.to_string())?;
        let mut state = StreamState::default();
        state.apply(&snapshot).map_err(|e| e.to_string())?;
        if !cluster.json {
            writeln!(out, "{}", candle_header()).map_err(io)?;
        }
        for candle in state.candles(args.interval) {
            print_candle(&mut out, &catalog, symbol, candle, cluster.json)?;
        }
        return Ok(());
    }
    let mut feed = client.into_market_feed(symbol, Channel::Candles);
    let until = args
        .seconds
        .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    if !cluster.json {
        writeln!(out, "{}", candle_header()).map_err(io)?;
    }
    while until.is_none_or(|t| Instant::now() < t) {
        for message in feed.next(POLL).await.map_err(|e| e.to_string())? {
            let candles = match &message.body {
                MdBody::Candles { candles } | MdBody::CandlesSnapshot { candles } => candles,
                _ => continue,
            };
            for candle in candles.iter().filter(|c| c.interval == args.interval) {
                print_candle(&mut out, &catalog, symbol, candle, cluster.json)?;
            }
        }
    }
    Ok(())
}

fn io(e: std::io::Error) -> String {
    format!("writing to the terminal: {e}")
}

fn print_json(out: &mut impl Write, value: &impl serde::Serialize) -> Result<(), String> {
    serde_json::to_writer(&mut *out, value).map_err(|e| e.to_string())?;
    writeln!(out).map_err(io)?;
    out.flush().map_err(io)
}

fn draw_book(
    out: &mut impl Write,
    catalog: &Catalog,
    symbol: u32,
    state: &StreamState,
    in_place: bool,
) -> Result<(), String> {
    // Home the cursor and clear the screen: the book stays in place as it changes.
    let mut screen = String::from(if in_place { "\x1b[H\x1b[2J" } else { "" });
    screen.push_str(&format!(
        "{}   message {}   log index {}   {}\n\n",
        catalog.symbol_name(symbol),
        state.seq.map_or("-".into(), |s| s.to_string()),
        state.index,
        rfc3339(state.timestamp_ns)
    ));
    screen.push_str(&format!("    {:>12} {:>12}\n", "price", "quantity"));
    let row = |side: &str, level: &Level| {
        format!(
            "{side} {:>12} {:>12}\n",
            catalog.price(symbol, level.price),
            catalog.qty(symbol, level.qty)
        )
    };
    for level in state.asks.iter().rev() {
        screen.push_str(&row("ask", level));
    }
    screen.push_str("    ---------------------\n");
    for level in &state.bids {
        screen.push_str(&row("bid", level));
    }
    if state.bids.is_empty() && state.asks.is_empty() {
        screen.push_str("    (the book is empty)\n");
    }
    out.write_all(screen.as_bytes()).map_err(io)?;
    out.flush().map_err(io)
}

fn print_trades(
    out: &mut impl Write,
    catalog: &Catalog,
    symbol: u32,
    trades: &[TradeTick],
) -> Result<(), String> {
    for trade in trades {
        writeln!(
            out,
            "{}  TRADE {} {} @ {}  {} aggressor  (trade {})",
            rfc3339(trade.timestamp_ns),
            catalog.qty(symbol, trade.qty),
            catalog.symbol_name(symbol),
            catalog.price(symbol, trade.price),
            match trade.aggressor {
                exchange_domain::Side::Buy => "buy",
                exchange_domain::Side::Sell => "sell",
            },
            trade.trade_id
        )
        .map_err(io)?;
    }
    out.flush().map_err(io)
}

fn candle_header() -> String {
    format!(
        "{:<27} {:>10} {:>10} {:>10} {:>10} {:>12} {:>7}  state",
        "start", "open", "high", "low", "close", "volume", "trades"
    )
}

fn print_candle(
    out: &mut impl Write,
    catalog: &Catalog,
    symbol: u32,
    candle: &Candle,
    json: bool,
) -> Result<(), String> {
    if json {
        return print_json(out, candle);
    }
    let price = |p| catalog.price(symbol, p);
    writeln!(
        out,
        "{:<27} {:>10} {:>10} {:>10} {:>10} {:>12} {:>7}  {}",
        rfc3339(candle.start_ns),
        price(candle.open),
        price(candle.high),
        price(candle.low),
        price(candle.close),
        catalog.qty(symbol, candle.volume),
        candle.trades,
        if candle.closed { "closed" } else { "open" }
    )
    .map_err(io)?;
    out.flush().map_err(io)
}
