//! Queries: an order's state, open orders, balances, instruments, the engine's depth. Reads of
//! a broker's own state are linearizable (the leader confirms its leadership first).

use exchange_client::catalog::Catalog;

use super::*;

/// (asset, available, held), as a balances reply carries it.
pub(super) type Balance = (u32, i64, i64);

impl Gateway {
    /// An order's open state, from the leader's engine (which has applied everything the
    /// session was answered). A broker sees only orders of its own accounts.
    pub(super) async fn order_status(&self, principal: Principal, order_id: u64) -> Reply {
        if let Err(reply) = self.confirm_leadership().await {
            return reply;
        }
        let found = self
            .engine
            .query(move |engine| {
                engine
                    .open_order(exchange_domain::OrderId(order_id))
                    .map(|open| (open, engine.account_owner(open.account)))
            })
            .await;
        let open = match found {
            Err(e) => return Reply::Error(e.to_string()),
            Ok(Some((open, owner)))
                if principal.is_operator() || owner == Some(principal.broker) =>
            {
                Some(OpenOrderStatus {
                    account: open.account.0,
                    symbol: open.symbol.0,
                    side: open.side,
                    price: open.price.0,
                    leaves_qty: open.leaves.0,
                })
            }
            // Another broker's order is as good as unknown to this one.
            Ok(_) => None,
        };
        Reply::OrderStatus { order_id, open }
    }

    /// Every symbol and named asset, from this node's engine (any node: they are replicated).
    pub(super) async fn instruments(&self) -> Reply {
        match self.engine.query(catalog_of).await {
            Ok(Catalog { symbols, assets }) => Reply::Instruments { symbols, assets },
            Err(e) => Reply::Error(e.to_string()),
        }
    }

    /// An account's open orders, from the leader's engine. A broker sees only its own accounts.
    pub(super) async fn open_orders(&self, principal: Principal, account: u64) -> Reply {
        if let Err(reply) = self.confirm_leadership().await {
            return reply;
        }
        let read = self
            .engine
            .query(move |engine| {
                let id = AccountId(account);
                let orders = engine
                    .account_orders(id, OPEN_ORDERS_PER_REPLY_MAX)
                    .into_iter()
                    .map(|o| AccountOrderInfo {
                        order_id: o.order_id.0,
                        client_order_id: o.client_order_id.0,
                        symbol: o.symbol.0,
                        side: o.side,
                        price: o.price.0,
                        leaves_qty: o.leaves.0,
                    })
                    .collect::<Vec<_>>();
                (engine.account_owner(id), orders)
            })
            .await;
        match read {
            Err(e) => Reply::Error(e.to_string()),
            Ok((owner, orders)) if principal.is_operator() || owner == Some(principal.broker) => {
                Reply::OpenOrders { account, orders }
            }
            // Another broker's account is as good as unknown to this one.
            Ok(_) => Reply::OpenOrders {
                account,
                orders: Vec::new(),
            },
        }
    }

    /// The engine's own book, read between two commands.
    pub(super) async fn depth(&self, symbol: u32, levels: u32) -> Reply {
        let levels = levels.min(DEPTH_LEVELS_MAX) as usize;
        let status = self.engine.shared_status();
        let read = self
            .engine
            .query(move |engine| {
                let symbol = exchange_domain::SymbolId(symbol);
                let side = |side| {
                    engine
                        .levels(symbol, side)
                        .take(levels)
                        .map(|(price, qty)| Level {
                            price: price.0,
                            qty: qty.0,
                        })
                        .collect::<Vec<_>>()
                };
                engine.has_symbol(symbol).then(|| {
                    (
                        // Read between entries, on the engine thread: the book after it.
                        status.applied_index(),
                        side(exchange_domain::Side::Buy),
                        side(exchange_domain::Side::Sell),
                    )
                })
            })
            .await;
        match read {
            Ok(Some((index, mut bids, asks))) => {
                if self.faults.wrong_depth {
                    match bids.first_mut() {
                        Some(best) => best.qty += 1,
                        None => bids.push(Level { price: 1, qty: 1 }),
                    }
                }
                Reply::Depth { index, bids, asks }
            }
            Ok(None) => Reply::Error(format!("unknown symbol {symbol}")),
            Err(e) => Reply::Error(e.to_string()),
        }
    }

    /// The answer for a symbol without market data: unknown, or not yet known to a node that
    /// is still applying the log (a restarted node elected before it caught up): then "try
    /// again shortly".
    pub(super) fn no_market_data(&self, symbol: u32) -> Reply {
        if self.engine.status().applied_index() < self.committed.load(Ordering::Acquire) {
            return Reply::Throttled {
                reason: "this node is still applying the log".into(),
                retry_after_ms: 50,
            };
        }
        Reply::Error(format!("no market data for symbol {symbol}"))
    }

    /// An account's balances, from the leader's engine. A broker sees only its own accounts.
    pub(super) async fn balances(
        &self,
        principal: Principal,
        account: u64,
        assets: Vec<u32>,
    ) -> Reply {
        if let Err(reply) = self.confirm_leadership().await {
            return reply;
        }
        if assets.len() > BALANCE_ASSETS_MAX {
            return Reply::Error(format!(
                "at most {BALANCE_ASSETS_MAX} assets a request, got {}",
                assets.len()
            ));
        }
        let read = self
            .engine
            .query(move |engine| {
                let id = AccountId(account);
                let owner = engine.account_owner(id);
                let balances = if assets.is_empty() {
                    engine
                        .account_balances(id)
                        .into_iter()
                        .map(|(asset, available, held)| (asset.0, available, held))
                        .collect::<Vec<_>>()
                } else {
                    assets
                        .iter()
                        .filter_map(|&asset| {
                            engine
                                .balance(id, exchange_domain::AssetId(asset))
                                .map(|(available, held)| (asset, available, held))
                        })
                        .collect::<Vec<_>>()
                };
                (owner, balances)
            })
            .await;
        match read {
            Err(e) => Reply::Error(e.to_string()),
            Ok((owner, balances)) if principal.is_operator() || owner == Some(principal.broker) => {
                Reply::Balances {
                    account,
                    balances: self.planted_balance_faults(account, balances),
                }
            }
            // Another broker's account is as good as unknown to this one.
            Ok(_) => Reply::Balances {
                account,
                balances: Vec::new(),
            },
        }
    }
}

/// The engine's symbols and named assets, as every edge shows them (run it on the engine
/// thread, through `EngineHandle::query`).
pub fn catalog_of(engine: &exchange_engine::Engine) -> Catalog {
    let symbols = engine
        .instruments()
        .map(|i| InstrumentInfo {
            symbol: i.spec.symbol.0,
            name: i.spec.name.to_string(),
            base: i.spec.base.0,
            quote: i.spec.quote.0,
            tick_size: i.spec.tick_size.0,
            lot_size: i.spec.lot_size.0,
            price_decimals: i.spec.price_decimals,
            halted: i.halted,
            price_band_bps: i.price_band_bps,
            reference_price: i.reference_price.0,
        })
        .collect();
    let assets = engine
        .assets()
        .iter()
        .map(|a| AssetInfo {
            asset: a.asset.0,
            name: a.name.to_string(),
            decimals: a.decimals,
        })
        .collect();
    Catalog { symbols, assets }
}
