//! Names and decimals at the CLI's edge: the cluster's instruments and assets, fetched once per
//! command, turn "AAPL" and "100.50" into the engine's integers, and the engine's outputs into
//! lines a person reads (`FILLED 200 AAPL @ 100.40 buy ord 720896 clord 8 leaves 0 maker ord
//! 589824`). A symbol or asset may be given by name or by number; one that was never named
//! reads as its number, with no decimals.

use std::time::{Duration, UNIX_EPOCH};

use exchange_domain::{format_decimal, parse_decimal, Event, Liquidity, Output, RejectReason};

use crate::cli::outcome::CliError;
use crate::gateway::client::Client;
use crate::report::{
    cancel_reason_name, order_type_name, reject_reason_name, side_name, time_in_force_name,
};

pub use exchange_client::catalog::Catalog;

/// The cluster's catalog, fetched once per command.
pub async fn fetch(client: &mut Client) -> Result<Catalog, CliError> {
    let (symbols, assets) = client.instruments().await?;
    Ok(Catalog { symbols, assets })
}

/// What the CLI adds to the catalog: reading what a person typed, and describing outputs.
pub trait CatalogInput {
    /// A symbol by name or number. An unknown number passes (the exchange answers for it); an
    /// unknown name is a usage error that lists the known ones.
    fn symbol_id(&self, text: &str) -> Result<u32, CliError>;
    /// An asset by name or number (an asset need not be named to be held).
    fn asset_id(&self, text: &str) -> Result<u32, CliError>;
    /// A price typed for `symbol` ("100.50") as the engine's integer.
    fn parse_price(&self, symbol: u32, text: &str) -> Result<i64, CliError>;
    fn parse_qty(&self, symbol: u32, text: &str) -> Result<i64, CliError>;
    fn parse_amount(&self, asset: u32, text: &str) -> Result<i64, CliError>;
    /// One output as a line a person reads: what happened first, in capitals.
    fn describe(&self, output: &Output) -> String;
}

impl CatalogInput for Catalog {
    fn symbol_id(&self, text: &str) -> Result<u32, CliError> {
        let named = self.symbols.iter().map(|s| (s.symbol, s.name.as_str()));
        by_name_or_number(text, named, "symbol")
    }

    fn asset_id(&self, text: &str) -> Result<u32, CliError> {
        let named = self.assets.iter().map(|a| (a.asset, a.name.as_str()));
        by_name_or_number(text, named, "asset")
    }

    fn parse_price(&self, symbol: u32, text: &str) -> Result<i64, CliError> {
        parse_decimal(text, self.price_decimals(symbol))
            .map_err(|e| CliError::Usage(format!("price: {e}")))
    }

    fn parse_qty(&self, symbol: u32, text: &str) -> Result<i64, CliError> {
        parse_decimal(text, self.qty_decimals(symbol))
            .map_err(|e| CliError::Usage(format!("quantity: {e}")))
    }

    fn parse_amount(&self, asset: u32, text: &str) -> Result<i64, CliError> {
        parse_decimal(text, self.amount_decimals(asset))
            .map_err(|e| CliError::Usage(format!("amount: {e}")))
    }

    fn describe(&self, output: &Output) -> String {
        let side = side_name;
        match output.event {
            Event::Accepted {
                order_id,
                account,
                symbol,
                client_order_id,
                side: s,
                order_type,
                time_in_force,
                price,
                qty,
            } => format!(
                "ACCEPTED {} {} {} @ {} {} {} ord {} clord {} account {}",
                side(s),
                self.qty(symbol.0, qty.0),
                self.symbol_name(symbol.0),
                self.price(symbol.0, price.0),
                order_type_name(order_type),
                words(time_in_force_name(time_in_force)),
                order_id,
                client_order_id,
                account
            ),
            Event::Rejected {
                account,
                symbol,
                client_order_id,
                reason,
            } => format!(
                "REJECTED clord {} account {} {}: {}",
                client_order_id,
                account,
                self.symbol_name(symbol.0),
                reason_text(reason)
            ),
            Event::Execution {
                order_id,
                symbol,
                client_order_id,
                side: s,
                price,
                qty,
                leaves_qty,
                liquidity,
                counter_order_id,
                trade_id,
                ..
            } => format!(
                "{} {} {} @ {} {} ord {} clord {} leaves {} {} ord {} trade {}",
                if leaves_qty.0 == 0 {
                    "FILLED"
                } else {
                    "PARTIALLY FILLED"
                },
                self.qty(symbol.0, qty.0),
                self.symbol_name(symbol.0),
                self.price(symbol.0, price.0),
                side(s),
                order_id,
                client_order_id,
                self.qty(symbol.0, leaves_qty.0),
                // The other side's role: a taker's counterparty is the maker.
                match liquidity {
                    Liquidity::Taker => "maker",
                    Liquidity::Maker => "taker",
                },
                counter_order_id,
                trade_id
            ),
            Event::Cancelled {
                order_id,
                symbol,
                client_order_id,
                leaves_qty,
                reason,
                ..
            } => format!(
                "CANCELLED ord {} clord {} {} leaves {}: {}",
                order_id,
                client_order_id,
                self.symbol_name(symbol.0),
                self.qty(symbol.0, leaves_qty.0),
                words(cancel_reason_name(reason))
            ),
            Event::Replaced {
                order_id,
                symbol,
                price,
                qty,
                priority_kept,
                ..
            } => format!(
                "REPLACED ord {} {} now {} @ {} (queue place {})",
                order_id,
                self.symbol_name(symbol.0),
                self.qty(symbol.0, qty.0),
                self.price(symbol.0, price.0),
                if priority_kept { "kept" } else { "lost" }
            ),
            Event::CancelRejected {
                order_id, reason, ..
            } => format!("CANCEL REJECTED ord {order_id}: {}", reason_text(reason)),
            Event::ReplaceRejected {
                order_id, reason, ..
            } => format!("REPLACE REJECTED ord {order_id}: {}", reason_text(reason)),
            Event::MassCancelled {
                account,
                symbol,
                count,
            } => format!(
                "MASS CANCELLED {count} orders of account {account}{}",
                symbol.map_or(String::new(), |s| format!(" on {}", self.symbol_name(s.0)))
            ),
            Event::MassCancelRejected { account, reason } => format!(
                "MASS CANCEL REJECTED account {account}: {}",
                reason_text(reason)
            ),
            Event::AccountCreated { account } => format!("ACCOUNT CREATED {account}"),
            Event::BalanceChanged {
                account,
                asset,
                delta,
                available,
                held,
            } => format!(
                "BALANCE account {} {} {}{} available {} held {}",
                account,
                self.asset_name(asset.0),
                if delta.0 >= 0 { "+" } else { "" },
                self.amount(asset.0, delta.0),
                self.amount(asset.0, available.0),
                self.amount(asset.0, held.0)
            ),
            Event::SymbolAdded { spec } => format!(
                "SYMBOL ADDED {} (symbol {}) {}/{} tick {} lot {} price decimals {}",
                spec.name,
                spec.symbol,
                self.asset_name(spec.base.0),
                self.asset_name(spec.quote.0),
                format_decimal(spec.tick_size.0, spec.price_decimals),
                format_decimal(spec.lot_size.0, self.amount_decimals(spec.base.0)),
                spec.price_decimals
            ),
            Event::AssetAdded {
                asset,
                name,
                decimals,
            } => format!("ASSET ADDED {name} (asset {asset}) decimals {decimals}"),
            Event::RiskLimitsSet { account, limits } => format!(
                "RISK LIMITS account {} max order qty {} max order notional {} max open orders {}",
                account, limits.max_order_qty, limits.max_order_notional, limits.max_open_orders
            ),
            Event::PriceBandSet {
                symbol,
                price_band_bps,
                reference_price,
            } => format!(
                "PRICE BAND {} {} bps around {}",
                self.symbol_name(symbol.0),
                price_band_bps,
                self.price(symbol.0, reference_price.0)
            ),
            Event::TradingStatus { symbol, halted } => format!(
                "{} {}",
                if halted { "HALTED" } else { "RESUMED" },
                self.symbol_name(symbol.0)
            ),
            Event::AdminRejected { reason } => format!("REJECTED: {}", reason_text(reason)),
            Event::DuplicateOrder {
                account,
                client_order_id,
                order_id,
                rejected,
            } => format!(
                "DUPLICATE clord {} account {}: already {} {}",
                client_order_id,
                account,
                match rejected {
                    Some(reason) => format!("rejected ({})", reason_text(reason)),
                    None => "accepted".to_string(),
                },
                match rejected {
                    Some(_) => format!("as command {order_id}"),
                    None => format!("as ord {order_id}"),
                }
            ),
            Event::FixCompIdSet { broker, comp_id } => {
                format!("FIX COMPID SET broker {broker} {comp_id}")
            }
            Event::FixSessionMarked { comp_id, mark } => format!(
                "FIX SESSION MARKED {comp_id} in {} out {} reports {}",
                mark.next_in, mark.next_out, mark.reports_received
            ),
            // The salt is no secret, but nobody needs to read it.
            Event::KeySaltSet { .. } => "KEY SALT SET".to_string(),
            Event::BrokerKeySet { broker, key_digest } => {
                if key_digest.is_revoked() {
                    format!("BROKER KEY REVOKED broker {broker}")
                } else {
                    format!("BROKER KEY SET broker {broker}")
                }
            }
        }
    }
}

/// A number, or the id of the one named `text` among `named`; else a usage error listing the
/// names there are.
fn by_name_or_number<'a>(
    text: &str,
    named: impl Iterator<Item = (u32, &'a str)> + Clone,
    what: &str,
) -> Result<u32, CliError> {
    if let Ok(id) = text.parse::<u32>() {
        return Ok(id);
    }
    if let Some((id, _)) = named.clone().find(|(_, name)| *name == text) {
        return Ok(id);
    }
    let known: Vec<&str> = named.map(|(_, name)| name).collect();
    Err(CliError::Usage(format!(
        "no {what} is called {text:?} (known: {})",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    )))
}

/// A report name in words: `post_only` reads "post only".
fn words(name: &str) -> String {
    name.replace('_', " ")
}

/// "not permitted (207)".
pub fn reason_text(reason: RejectReason) -> String {
    format!("{} ({})", words(reject_reason_name(reason)), reason.code())
}

/// Nanoseconds since the epoch as RFC 3339 UTC with microseconds.
pub fn rfc3339(timestamp_ns: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_nanos(timestamp_ns)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::protocol::{AssetInfo, InstrumentInfo};
    use exchange_domain::{
        AccountId, ClientOrderId, ExecId, OrderId, Price, Qty, Side, SymbolId, TradeId,
    };

    fn catalog() -> Catalog {
        Catalog {
            symbols: vec![InstrumentInfo {
                symbol: 1,
                name: "AAPL".into(),
                base: 1,
                quote: 2,
                tick_size: 1,
                lot_size: 1,
                price_decimals: 2,
                halted: false,
                price_band_bps: 0,
                reference_price: 0,
            }],
            assets: vec![
                AssetInfo {
                    asset: 1,
                    name: "AAPL".into(),
                    decimals: 0,
                },
                AssetInfo {
                    asset: 2,
                    name: "USD".into(),
                    decimals: 2,
                },
            ],
        }
    }

    #[test]
    fn names_and_numbers_resolve() {
        let c = catalog();
        assert_eq!(c.symbol_id("AAPL").unwrap(), 1);
        assert_eq!(c.symbol_id("7").unwrap(), 7);
        let err = c.symbol_id("MSFT").unwrap_err().to_string();
        assert!(err.contains("MSFT") && err.contains("AAPL"), "{err}");
        assert_eq!(c.asset_id("USD").unwrap(), 2);
        assert_eq!(c.parse_price(1, "100.5").unwrap(), 10050);
        assert!(c.parse_price(1, "100.505").is_err());
        assert_eq!(
            c.parse_price(9, "42").unwrap(),
            42,
            "an unknown symbol: no decimals"
        );
        assert_eq!(c.parse_amount(2, "1000000.00").unwrap(), 100_000_000);
    }

    #[test]
    fn a_fill_reads_as_an_execution_report() {
        let output = Output {
            seq: 1,
            timestamp_ns: 0,
            event: Event::Execution {
                exec_id: ExecId(3),
                trade_id: TradeId(4),
                order_id: OrderId(720896),
                account: AccountId(2001),
                symbol: SymbolId(1),
                client_order_id: ClientOrderId(8),
                side: Side::Buy,
                price: Price(10040),
                qty: Qty(200),
                leaves_qty: Qty(0),
                liquidity: Liquidity::Taker,
                counter_order_id: OrderId(589824),
            },
        };
        assert_eq!(
            catalog().describe(&output),
            "FILLED 200 AAPL @ 100.40 buy ord 720896 clord 8 leaves 0 maker ord 589824 trade 4"
        );
        let rejected = Output {
            seq: 2,
            timestamp_ns: 0,
            event: Event::Rejected {
                account: AccountId(1001),
                symbol: SymbolId(1),
                client_order_id: ClientOrderId(9),
                reason: RejectReason::NotPermitted,
            },
        };
        assert_eq!(
            catalog().describe(&rejected),
            "REJECTED clord 9 account 1001 AAPL: not permitted (207)"
        );
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(
            rfc3339(1_500_000_000_123_456_789),
            "2017-07-14T02:40:00.123456Z"
        );
    }
}
