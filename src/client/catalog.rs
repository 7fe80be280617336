//! Names and decimals at the edges: what the cluster calls its symbols and assets, and how many
//! decimals their prices and quantities carry. The engine deals in integers; a tool or a server
//! that shows a person "AAPL" and "100.50" asks a `Catalog`. A symbol or asset never named reads
//! as its number, with no decimals.

use exchange_domain::format_decimal;

use crate::protocol::{AssetInfo, InstrumentInfo};

/// The cluster's symbols and named assets, as `Request::Instruments` answers them.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub symbols: Vec<InstrumentInfo>,
    pub assets: Vec<AssetInfo>,
}

impl Catalog {
    pub fn symbol(&self, id: u32) -> Option<&InstrumentInfo> {
        self.symbols.iter().find(|s| s.symbol == id)
    }

    /// A symbol by its exact name.
    pub fn symbol_named(&self, name: &str) -> Option<&InstrumentInfo> {
        self.symbols.iter().find(|s| s.name == name)
    }

    pub fn asset(&self, id: u32) -> Option<&AssetInfo> {
        self.assets.iter().find(|a| a.asset == id)
    }

    pub fn price_decimals(&self, symbol: u32) -> u8 {
        self.symbol(symbol).map_or(0, |s| s.price_decimals)
    }

    /// Decimals of a symbol's quantities: those of its base asset.
    pub fn qty_decimals(&self, symbol: u32) -> u8 {
        self.symbol(symbol)
            .and_then(|s| self.asset(s.base))
            .map_or(0, |a| a.decimals)
    }

    pub fn amount_decimals(&self, asset: u32) -> u8 {
        self.asset(asset).map_or(0, |a| a.decimals)
    }

    pub fn symbol_name(&self, id: u32) -> String {
        self.symbol(id)
            .map_or_else(|| format!("symbol {id}"), |s| s.name.clone())
    }

    pub fn asset_name(&self, id: u32) -> String {
        self.asset(id)
            .map_or_else(|| format!("asset {id}"), |a| a.name.clone())
    }

    pub fn price(&self, symbol: u32, price: i64) -> String {
        format_decimal(price, self.price_decimals(symbol))
    }

    pub fn qty(&self, symbol: u32, qty: i64) -> String {
        format_decimal(qty, self.qty_decimals(symbol))
    }

    pub fn amount(&self, asset: u32, amount: i64) -> String {
        format_decimal(amount, self.amount_decimals(asset))
    }
}
