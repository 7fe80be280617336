//! `exchange-cli status`, `order ...` and `admin ...`: a broker's and an operator's view of a
//! running cluster, through the client library.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use exchange_domain::parse_decimal;
use exchange_domain::{
    AccountId, AdminCommand, Amount, AssetId, Cancel, CancelReplace, ClientOrderId, Command,
    MassCancel, Name, NewOrder, OrderId, OrderType, Output, Price, Qty, RiskLimits,
    SelfTradePrevention, Side, SymbolId, SymbolSpec, TimeInForce,
};

use crate::cli::catalog::{Catalog, CatalogInput};
use crate::cli::outcome::CliError;
use crate::gateway::client::{trust, Client};
use crate::gateway::credentials::{self, BrokersFile};

/// Where the cluster is: `scripts/cluster.sh` starts one that these defaults reach.
#[derive(Args, Clone, Debug)]
pub struct ClusterArgs {
    /// The nodes' broker addresses, comma separated: ip:port or host:port.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        value_parser = parse_node_address,
        env = "EXCHANGE_NODES",
        default_value = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"
    )]
    pub nodes: Vec<SocketAddr>,
    /// The name the nodes' certificates carry for brokers (the development ones: localhost).
    #[arg(
        long,
        global = true,
        env = "EXCHANGE_SERVER_NAME",
        default_value = crate::gateway::client::SERVER_NAME_DEFAULT
    )]
    pub server_name: String,
    /// The directory holding the cluster authority's ca.pem.
    #[arg(
        long,
        global = true,
        env = "EXCHANGE_CERTS",
        default_value = "cluster/certs"
    )]
    pub certs_dir: PathBuf,
    /// The API key to log on with: a broker's key, or the admin key.
    #[arg(long, global = true, env = "EXCHANGE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Log on as the operator, with the admin key of --brokers-file (when no --api-key is
    /// given). Without a key or --admin, the CLI logs on as nobody: commands are refused.
    #[arg(long, global = true)]
    pub admin: bool,
    /// Where --admin reads the admin key.
    #[arg(long, global = true, default_value = "cluster/brokers.toml")]
    pub brokers_file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ClusterArgs {
    /// The key to log on with, if any: --api-key (or $EXCHANGE_API_KEY), else with --admin the
    /// admin key of --brokers-file. Never the admin key unasked.
    pub fn api_key(&self) -> Result<Option<String>, String> {
        if let Some(key) = &self.api_key {
            return Ok(Some(key.clone()));
        }
        if !self.admin {
            return Ok(None);
        }
        BrokersFile::load(&self.brokers_file)?
            .admin_key
            .map(Some)
            .ok_or_else(|| {
                format!(
                    "--admin: {} holds no admin key",
                    self.brokers_file.display()
                )
            })
    }

    /// The key, for commands that need one (`what` says which, for the error).
    pub fn required_key(&self, what: &str) -> Result<String, String> {
        self.api_key()?.ok_or_else(|| {
            format!(
                "{what} need a logon: --api-key KEY (or $EXCHANGE_API_KEY), or --admin for the \
                 operator's key from {}",
                self.brokers_file.display()
            )
        })
    }

    /// A client that logs on with [`ClusterArgs::api_key`].
    pub fn client(&self) -> Result<Client, String> {
        let client = self.anonymous_client()?;
        Ok(match self.api_key()? {
            Some(key) => client.with_api_key(key),
            None => client,
        })
    }

    /// A client that logs on with `key`.
    pub fn client_with_key(&self, key: &str) -> Result<Client, String> {
        Ok(self.anonymous_client()?.with_api_key(key))
    }

    /// A client that logs on with `key` to `first`, and only when it cannot be reached to the
    /// other nodes, in order (`None`: to whichever of the nodes answers first).
    pub fn client_first_to(&self, first: Option<SocketAddr>, key: &str) -> Result<Client, String> {
        let client = match first {
            None => self.anonymous_client()?,
            Some(first) => {
                let mut nodes = self.nodes.clone();
                nodes.retain(|node| *node != first);
                nodes.insert(0, first);
                let ca = trust(&self.certs_dir).map_err(|e| e.to_string())?;
                Client::new(nodes, &ca)
                    .map_err(|e| e.to_string())?
                    .with_server_name(self.server_name.clone())
                    .with_nodes_in_order()
            }
        };
        Ok(client.with_api_key(key))
    }

    /// As [`ClusterArgs::client`], with a small stream window (see
    /// `Client::with_stream_window`).
    pub fn client_with_stream_window(&self, bytes: u32) -> Result<Client, String> {
        let ca = trust(&self.certs_dir).map_err(|e| e.to_string())?;
        let client = Client::with_stream_window(self.nodes.clone(), &ca, bytes)
            .map_err(|e| e.to_string())?
            .with_server_name(self.server_name.clone());
        Ok(match self.api_key()? {
            Some(key) => client.with_api_key(key),
            None => client,
        })
    }

    fn anonymous_client(&self) -> Result<Client, String> {
        let ca = trust(&self.certs_dir).map_err(|e| e.to_string())?;
        Ok(Client::new(self.nodes.clone(), &ca)
            .map_err(|e| e.to_string())?
            .with_server_name(self.server_name.clone()))
    }
}

/// A node's broker address: `ip:port`, or `host:port` resolved now (its first address).
pub fn parse_node_address(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .map_err(|e| format!("{text}: {e}"))?
        .next()
        .ok_or_else(|| format!("{text}: the name has no address"))
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SideArg {
    Buy,
    Sell,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TifArg {
    Gtc,
    Ioc,
    Fok,
    PostOnly,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StpArg {
    None,
    CancelNewest,
    CancelOldest,
    CancelBoth,
}

#[derive(Subcommand, Clone, Debug)]
pub enum OrderCommand {
    /// A new order. Prints its execution reports: ACCEPTED, FILLED or PARTIALLY FILLED per
    /// match, CANCELLED for what an IOC could not trade, or REJECTED with the reason.
    New {
        /// The account the order is for (the broker's own).
        #[arg(long)]
        account: u64,
        /// The symbol, by name (AAPL) or number.
        #[arg(long)]
        symbol: String,
        /// Buy or sell.
        #[arg(long, value_enum)]
        side: SideArg,
        /// The limit price as a decimal on the symbol's scale ("100.50"), or a market order's
        /// protection price (the worst it may trade at).
        #[arg(long, allow_negative_numbers = true)]
        price: String,
        /// The quantity, in units of the symbol's base asset.
        #[arg(long, allow_negative_numbers = true)]
        qty: String,
        /// Time in force: good till cancelled, immediate or cancel, fill or kill, or post only
        /// (refused if it would trade at once).
        #[arg(long, value_enum, default_value = "gtc")]
        tif: TifArg,
        /// A market order (IOC or FOK) whose --price is its protection price.
        #[arg(long)]
        market: bool,
        /// The broker's id for the order: resending the same id never makes a second order.
        /// [default: the current time in microseconds, which rises from call to call].
        #[arg(long)]
        client_order_id: Option<u64>,
        /// Self-trade prevention: what happens when the order would trade against another
        /// order of the same account.
        #[arg(long, value_enum, default_value = "none")]
        stp: StpArg,
    },
    /// Cancel a resting order.
    Cancel {
        /// The account that owns the order.
        #[arg(long)]
        account: u64,
        /// The exchange's order id (the "ord" of its ACCEPTED line).
        #[arg(long)]
        order_id: u64,
    },
    /// Change a resting order's price and/or open quantity. A smaller quantity at the same
    /// price keeps the order's place in its queue; anything else loses it.
    Replace {
        /// The account that owns the order.
        #[arg(long)]
        account: u64,
        /// The exchange's order id.
        #[arg(long)]
        order_id: u64,
        /// The new price, as a decimal on the order's symbol's scale.
        #[arg(long, allow_negative_numbers = true)]
        price: String,
        /// The new open (leaves) quantity.
        #[arg(long, allow_negative_numbers = true)]
        qty: String,
    },
    /// Whether one of your orders rests in the book, and how much of it is open.
    Status {
        /// The exchange's order id.
        #[arg(long)]
        order_id: u64,
    },
    /// Cancel every open order of an account (on one symbol, or all).
    MassCancel {
        /// The account whose orders to cancel.
        #[arg(long)]
        account: u64,
        /// Only this symbol's orders (name or number).
        #[arg(long)]
        symbol: Option<String>,
    },
}

#[derive(Subcommand, Clone, Debug)]
pub enum AdminArg {
    /// Open an account owned by a broker: only that broker's sessions (and the operator) may
    /// act for it.
    CreateAccount {
        /// The new account's number.
        #[arg(long)]
        account: u64,
        /// The owning broker's id (0: the operator only).
        #[arg(long, default_value_t = 0)]
        owner: u32,
    },
    /// Credit an account with an amount of an asset.
    Deposit {
        /// The account to credit.
        #[arg(long)]
        account: u64,
        /// The asset, by name (USD) or number.
        #[arg(long)]
        asset: String,
        /// The amount, as a decimal on the asset's scale ("1000.00").
        #[arg(long, allow_negative_numbers = true)]
        amount: String,
    },
    /// Take an amount of an asset out of an account (available funds only).
    Withdraw {
        /// The account to debit.
        #[arg(long)]
        account: u64,
        /// The asset, by name or number.
        #[arg(long)]
        asset: String,
        /// The amount, as a decimal on the asset's scale.
        #[arg(long, allow_negative_numbers = true)]
        amount: String,
    },
    /// Name an asset and the decimals its amounts are written with ("USD", 2). Amounts stay
    /// integers inside: 2 decimals means the integer counts cents.
    AddAsset {
        /// The asset's number.
        #[arg(long)]
        asset: u32,
        /// Its name: up to 15 letters, digits and . - _ /, a letter first.
        #[arg(long)]
        name: String,
        /// Decimals of its amounts as people write them.
        #[arg(long, default_value_t = 0)]
        decimals: u8,
    },
    /// Add a symbol trading --base against --quote.
    ///
    /// Its prices are integers of quote units per base unit, written with --price-decimals
    /// decimals; when both assets are named, --price-decimals must be the quote asset's
    /// decimals less the base asset's, so that a price reads in whole quote units per whole
    /// base unit (USD with 2 decimals, AAPL with 0: 2).
    AddSymbol {
        /// The symbol's number.
        #[arg(long)]
        symbol: u32,
        /// Its name: up to 15 letters, digits and . - _ /, a letter first.
        #[arg(long)]
        name: String,
        /// Decimals of its prices as people write them.
        #[arg(long, default_value_t = 0)]
        price_decimals: u8,
        /// The asset bought and sold (name or number).
        #[arg(long)]
        base: String,
        /// The asset prices are in (name or number).
        #[arg(long)]
        quote: String,
        /// Prices must be multiples of this (a decimal price) [default: the smallest price].
        #[arg(long)]
        tick_size: Option<String>,
        /// Quantities must be multiples of this [default: one base unit].
        #[arg(long)]
        lot_size: Option<String>,
        /// Price band around the reference price, in basis points (sent as set-price-band
        /// right after).
        #[arg(long)]
        band_bps: Option<u32>,
        /// The reference price the band starts from, until the first trade.
        #[arg(long, requires = "band_bps")]
        reference_price: Option<String>,
    },
    /// Set an account's pre-trade risk limits.
    SetRiskLimits {
        /// The account.
        #[arg(long)]
        account: u64,
        /// The largest quantity of one order, in base units (integer).
        #[arg(long)]
        max_order_qty: i64,
        /// The largest price times quantity of one order, in quote units (integer).
        #[arg(long)]
        max_order_notional: i64,
        /// The most orders the account may have resting.
        #[arg(long)]
        max_open_orders: u32,
    },
    /// Set a symbol's price band: orders priced further from the reference price are refused.
    SetPriceBand {
        /// The symbol, by name or number.
        #[arg(long)]
        symbol: String,
        /// The band, in basis points of the reference price (0: none).
        #[arg(long)]
        band_bps: u32,
        /// A new reference price, as a decimal (0 keeps the current one, or the last trade's).
        #[arg(long, default_value = "0")]
        reference_price: String,
    },
    /// Halt trading on a symbol: new orders and replaces are refused, cancels still work.
    Halt {
        /// The symbol, by name or number.
        #[arg(long)]
        symbol: String,
    },
    /// Register a broker with an API key, or replace its key; an empty key revokes it.
    SetBrokerKey {
        /// The broker's id.
        #[arg(long)]
        broker: u32,
        /// The broker's new key (16 to 256 characters), sent over TLS to the leader, which
        /// keeps only its digest keyed with the cluster's salt.
        #[arg(long, env = "EXCHANGE_NEW_BROKER_KEY", hide_env_values = true)]
        key: String,
    },
    /// Give a registered broker the FIX SenderCompID(49) its sessions log on with, or replace
    /// it. Its FIX sessions under the old CompID end at their next message.
    SetFixCompId {
        /// The broker's id.
        #[arg(long)]
        broker: u32,
        /// 1 to 32 printable ASCII characters, not `=`, not EXCHANGE; no other broker's.
        #[arg(long)]
        comp_id: String,
    },
    /// Resume trading on a halted symbol.
    Resume {
        /// The symbol, by name or number.
        #[arg(long)]
        symbol: String,
    },
}

impl OrderCommand {
    /// Whether turning the command into the engine's form needs the cluster's names.
    pub fn replaced_order(&self) -> Option<u64> {
        match *self {
            OrderCommand::Replace { order_id, .. } => Some(order_id),
            _ => None,
        }
    }
}

/// The command an `order` subcommand sends (`status` is a query, not a command), with names
/// and decimals resolved by `catalog`. `replaced_symbol` is the symbol of the order a replace
/// changes, when it is open.
pub fn order_command(
    order: &OrderCommand,
    catalog: &Catalog,
    replaced_symbol: Option<u32>,
) -> Result<Command, CliError> {
    Ok(match order {
        OrderCommand::Status { .. } => {
            return Err(CliError::Usage(
                "order status is a query: use Client::order_status".into(),
            ))
        }
        OrderCommand::New {
            account,
            symbol,
            side,
            price,
            qty,
            tif,
            market,
            client_order_id,
            stp,
        } => {
            let symbol = catalog.symbol_id(symbol)?;
            Command::NewOrder(NewOrder {
                account: AccountId(*account),
                symbol: SymbolId(symbol),
                client_order_id: ClientOrderId(client_order_id.unwrap_or_else(|| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(1, |d| d.as_micros() as u64)
                })),
                side: match side {
                    SideArg::Buy => Side::Buy,
                    SideArg::Sell => Side::Sell,
                },
                order_type: if *market {
                    OrderType::Market
                } else {
                    OrderType::Limit
                },
                time_in_force: match tif {
                    TifArg::Gtc => TimeInForce::Gtc,
                    TifArg::Ioc => TimeInForce::Ioc,
                    TifArg::Fok => TimeInForce::Fok,
                    TifArg::PostOnly => TimeInForce::PostOnly,
                },
                price: Price(catalog.parse_price(symbol, price)?),
                qty: Qty(catalog.parse_qty(symbol, qty)?),
                self_trade_prevention: match stp {
                    StpArg::None => SelfTradePrevention::None,
                    StpArg::CancelNewest => SelfTradePrevention::CancelNewest,
                    StpArg::CancelOldest => SelfTradePrevention::CancelOldest,
                    StpArg::CancelBoth => SelfTradePrevention::CancelBoth,
                },
            })
        }
        OrderCommand::Cancel { account, order_id } => Command::Cancel(Cancel {
            account: AccountId(*account),
            order_id: OrderId(*order_id),
        }),
        OrderCommand::Replace {
            account,
            order_id,
            price,
            qty,
        } => {
            // An order that is not open has no scale; the exchange refuses the replace as an
            // unknown order, so any whole number will do to let it say so.
            let symbol = replaced_symbol.unwrap_or(u32::MAX);
            Command::CancelReplace(CancelReplace {
                account: AccountId(*account),
                order_id: OrderId(*order_id),
                price: Price(catalog.parse_price(symbol, price)?),
                qty: Qty(catalog.parse_qty(symbol, qty)?),
            })
        }
        OrderCommand::MassCancel { account, symbol } => Command::MassCancel(MassCancel {
            account: AccountId(*account),
            symbol: symbol
                .as_deref()
                .map(|s| catalog.symbol_id(s).map(SymbolId))
                .transpose()?,
        }),
    })
}

/// What an `admin` subcommand sends.
pub enum AdminRequest {
    /// Commands, in order (one, or two for a symbol with a band).
    Commands(Vec<Command>),
    /// A broker's key, which the leader digests with the cluster's salt (empty: revoked).
    SetBrokerKey { broker: u32, key: String },
}

/// What an `admin` subcommand sends, checked here first.
pub fn admin_request(admin: &AdminArg, catalog: &Catalog) -> Result<AdminRequest, CliError> {
    if let AdminArg::SetBrokerKey { broker, key } = admin {
        if !key.is_empty() {
            credentials::check_key(key)?;
        }
        return Ok(AdminRequest::SetBrokerKey {
            broker: *broker,
            key: key.clone(),
        });
    }
    admin_commands(admin, catalog).map(AdminRequest::Commands)
}

fn admin_commands(admin: &AdminArg, catalog: &Catalog) -> Result<Vec<Command>, CliError> {
    let name = |text: &str| Name::new(text).map_err(|e| CliError::Usage(format!("--name: {e}")));
    let one = |command| Ok(vec![Command::Admin(command)]);
    match admin {
        AdminArg::SetBrokerKey { .. } => Err(CliError::Usage(
            "set-broker-key is a request of its own (admin_request)".into(),
        )),
        AdminArg::SetFixCompId { broker, comp_id } => one(AdminCommand::SetFixCompId {
            broker: exchange_domain::BrokerId(*broker),
            comp_id: exchange_domain::CompId::new(comp_id)
                .map_err(|e| CliError::Usage(format!("--comp-id: {e}")))?,
        }),
        AdminArg::CreateAccount { account, owner } => one(AdminCommand::CreateAccount {
            account: AccountId(*account),
            owner: exchange_domain::BrokerId(*owner),
        }),
        AdminArg::Deposit {
            account,
            asset,
            amount,
        } => {
            let asset = catalog.asset_id(asset)?;
            one(AdminCommand::Deposit {
                account: AccountId(*account),
                asset: AssetId(asset),
                amount: Amount(catalog.parse_amount(asset, amount)?),
            })
        }
        AdminArg::Withdraw {
            account,
            asset,
            amount,
        } => {
            let asset = catalog.asset_id(asset)?;
            one(AdminCommand::Withdraw {
                account: AccountId(*account),
                asset: AssetId(asset),
                amount: Amount(catalog.parse_amount(asset, amount)?),
            })
        }
        AdminArg::AddAsset {
            asset,
            name: asset_name,
            decimals,
        } => one(AdminCommand::AddAsset {
            asset: AssetId(*asset),
            name: name(asset_name)?,
            decimals: *decimals,
        }),
        AdminArg::AddSymbol {
            symbol,
            name: symbol_name,
            price_decimals,
            base,
            quote,
            tick_size,
            lot_size,
            band_bps,
            reference_price,
        } => {
            let base = catalog.asset_id(base)?;
            let scaled = |text: &Option<String>, decimals: u8, what: &str| {
                text.as_deref().map_or(Ok(1), |text| {
                    parse_decimal(text, decimals)
                        .map_err(|e| CliError::Usage(format!("--{what}: {e}")))
                })
            };
            let mut commands = vec![Command::Admin(AdminCommand::AddSymbol(SymbolSpec {
                symbol: SymbolId(*symbol),
                base: AssetId(base),
                quote: AssetId(catalog.asset_id(quote)?),
                tick_size: Price(scaled(tick_size, *price_decimals, "tick-size")?),
                lot_size: Qty(scaled(lot_size, catalog.amount_decimals(base), "lot-size")?),
                name: name(symbol_name)?,
                price_decimals: *price_decimals,
            }))];
            if let Some(band_bps) = band_bps {
                commands.push(Command::Admin(AdminCommand::SetPriceBand {
                    symbol: SymbolId(*symbol),
                    price_band_bps: *band_bps,
                    reference_price: Price(scaled(
                        reference_price,
                        *price_decimals,
                        "reference-price",
                    )?),
                }));
            }
            Ok(commands)
        }
        AdminArg::SetRiskLimits {
            account,
            max_order_qty,
            max_order_notional,
            max_open_orders,
        } => one(AdminCommand::SetRiskLimits {
            account: AccountId(*account),
            limits: RiskLimits {
                max_order_qty: Qty(*max_order_qty),
                max_order_notional: Amount(*max_order_notional),
                max_open_orders: *max_open_orders,
            },
        }),
        AdminArg::SetPriceBand {
            symbol,
            band_bps,
            reference_price,
        } => {
            let symbol = catalog.symbol_id(symbol)?;
            one(AdminCommand::SetPriceBand {
                symbol: SymbolId(symbol),
                price_band_bps: *band_bps,
                reference_price: Price(catalog.parse_price(symbol, reference_price)?),
            })
        }
        AdminArg::Halt { symbol } => one(AdminCommand::HaltSymbol {
            symbol: SymbolId(catalog.symbol_id(symbol)?),
        }),
        AdminArg::Resume { symbol } => one(AdminCommand::ResumeSymbol {
            symbol: SymbolId(catalog.symbol_id(symbol)?),
        }),
    }
}

/// Prints outputs: one JSON array (the engine's full form), or one execution-report line
/// each.
pub fn print_outputs(outputs: &[Output], json: bool, catalog: &Catalog) -> Result<(), String> {
    if json {
        println!(
            "{}",
            serde_json::to_string(outputs).map_err(|e| e.to_string())?
        );
    } else {
        for output in outputs {
            println!("{}", catalog.describe(output));
        }
    }
    Ok(())
}
