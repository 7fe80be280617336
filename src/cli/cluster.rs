//! `exchange-cli status`, `order ...` and `admin ...`: a broker's and an operator's view of a
//! running cluster, through the client library.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use exchange_domain::{
    AccountId, AdminCommand, Amount, AssetId, Cancel, CancelReplace, ClientOrderId, Command,
    MassCancel, NewOrder, OrderId, OrderType, Output, Price, Qty, RiskLimits, SelfTradePrevention,
    Side, SymbolId, SymbolSpec, TimeInForce,
};

use crate::gateway::client::{trust, Client};
use crate::gateway::credentials::{self, BrokersFile};

/// Where the cluster is: `scripts/cluster.sh` starts one that these defaults reach.
#[derive(Args, Clone, Debug)]
pub struct ClusterArgs {
    /// The nodes' broker addresses, comma separated.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        env = "EXCHANGE_NODES",
        default_value = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"
    )]
    pub nodes: Vec<SocketAddr>,
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

    /// As [`ClusterArgs::client`], with a small stream window (see
    /// `Client::with_stream_window`).
    pub fn client_with_stream_window(&self, bytes: u32) -> Result<Client, String> {
        let ca = trust(&self.certs_dir).map_err(|e| e.to_string())?;
        let client = Client::with_stream_window(self.nodes.clone(), &ca, bytes)
            .map_err(|e| e.to_string())?;
        Ok(match self.api_key()? {
            Some(key) => client.with_api_key(key),
            None => client,
        })
    }

    fn anonymous_client(&self) -> Result<Client, String> {
        let ca = trust(&self.certs_dir).map_err(|e| e.to_string())?;
        Client::new(self.nodes.clone(), &ca).map_err(|e| e.to_string())
    }
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
    /// A new order.
    New {
        #[arg(long)]
        account: u64,
        #[arg(long)]
        symbol: u32,
        #[arg(long, value_enum)]
        side: SideArg,
        /// The limit price, or a market order's protection price.
        #[arg(long, allow_negative_numbers = true)]
        price: i64,
        #[arg(long, allow_negative_numbers = true)]
        qty: i64,
        #[arg(long, value_enum, default_value = "gtc")]
        tif: TifArg,
        /// A market order (IOC or FOK) whose --price is its protection price.
        #[arg(long)]
        market: bool,
        /// The broker's id for the order: resending the same id never makes a second order.
        /// [default: the current time in microseconds, which rises from call to call].
        #[arg(long)]
        client_order_id: Option<u64>,
        #[arg(long, value_enum, default_value = "none")]
        stp: StpArg,
    },
    /// Cancel a resting order.
    Cancel {
        #[arg(long)]
        account: u64,
        #[arg(long)]
        order_id: u64,
    },
    /// Change a resting order's price and/or open quantity.
    Replace {
        #[arg(long)]
        account: u64,
        #[arg(long)]
        order_id: u64,
        #[arg(long, allow_negative_numbers = true)]
        price: i64,
        #[arg(long, allow_negative_numbers = true)]
        qty: i64,
    },
    /// Whether one of your orders rests in the book, and how much of it is open.
    Status {
        #[arg(long)]
        order_id: u64,
    },
    /// Cancel every open order of an account (on one symbol, or all).
    MassCancel {
        #[arg(long)]
        account: u64,
        #[arg(long)]
        symbol: Option<u32>,
    },
}

#[derive(Subcommand, Clone, Debug)]
pub enum AdminArg {
    /// Open an account owned by a broker: only that broker's sessions (and the operator) may
    /// act for it.
    CreateAccount {
        #[arg(long)]
        account: u64,
        /// The owning broker's id (0: the operator only).
        #[arg(long, default_value_t = 0)]
        owner: u32,
    },
    Deposit {
        #[arg(long)]
        account: u64,
        #[arg(long)]
        asset: u32,
        #[arg(long, allow_negative_numbers = true)]
        amount: i64,
    },
    Withdraw {
        #[arg(long)]
        account: u64,
        #[arg(long)]
        asset: u32,
        #[arg(long, allow_negative_numbers = true)]
        amount: i64,
    },
    /// Add a symbol trading --base against --quote.
    AddSymbol {
        #[arg(long)]
        symbol: u32,
        #[arg(long)]
        base: u32,
        #[arg(long)]
        quote: u32,
        #[arg(long, default_value_t = 1)]
        tick_size: i64,
        #[arg(long, default_value_t = 1)]
        lot_size: i64,
        /// Price band around the reference price, in basis points (0: none).
        #[arg(long, default_value_t = 0)]
        band_bps: u32,
        #[arg(long, default_value_t = 0)]
        reference_price: i64,
    },
    SetRiskLimits {
        #[arg(long)]
        account: u64,
        #[arg(long)]
        max_order_qty: i64,
        #[arg(long)]
        max_order_notional: i64,
        #[arg(long)]
        max_open_orders: u32,
    },
    SetPriceBand {
        #[arg(long)]
        symbol: u32,
        #[arg(long)]
        band_bps: u32,
        /// A new reference price (0 keeps the current one).
        #[arg(long, default_value_t = 0)]
        reference_price: i64,
    },
    Halt {
        #[arg(long)]
        symbol: u32,
    },
    /// Register a broker with an API key, or replace its key; an empty key revokes it.
    SetBrokerKey {
        #[arg(long)]
        broker: u32,
        /// The broker's new key (16 to 256 characters); only its SHA-256 digest is sent.
        #[arg(long, env = "EXCHANGE_NEW_BROKER_KEY", hide_env_values = true)]
        key: String,
    },
    Resume {
        #[arg(long)]
        symbol: u32,
    },
}

/// The command an `order` subcommand sends (`status` is a query, not a command).
pub fn order_command(order: &OrderCommand) -> Result<Command, String> {
    Ok(match *order {
        OrderCommand::Status { .. } => {
            return Err("order status is a query: use Client::order_status".into())
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
        } => Command::NewOrder(NewOrder {
            account: AccountId(account),
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
            order_type: if market {
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
            price: Price(price),
            qty: Qty(qty),
            self_trade_prevention: match stp {
                StpArg::None => SelfTradePrevention::None,
                StpArg::CancelNewest => SelfTradePrevention::CancelNewest,
                StpArg::CancelOldest => SelfTradePrevention::CancelOldest,
                StpArg::CancelBoth => SelfTradePrevention::CancelBoth,
            },
        }),
        OrderCommand::Cancel { account, order_id } => Command::Cancel(Cancel {
            account: AccountId(account),
            order_id: OrderId(order_id),
        }),
        OrderCommand::Replace {
            account,
            order_id,
            price,
            qty,
        } => Command::CancelReplace(CancelReplace {
            account: AccountId(account),
            order_id: OrderId(order_id),
            price: Price(price),
            qty: Qty(qty),
        }),
        OrderCommand::MassCancel { account, symbol } => Command::MassCancel(MassCancel {
            account: AccountId(account),
            symbol: symbol.map(SymbolId),
        }),
    })
}

pub fn admin_command(admin: &AdminArg) -> Result<Command, String> {
    Ok(Command::Admin(match *admin {
        AdminArg::SetBrokerKey { broker, ref key } => AdminCommand::SetBrokerKey {
            broker: exchange_domain::BrokerId(broker),
            key_digest: if key.is_empty() {
                exchange_domain::KeyDigest([0; 32])
            } else {
                credentials::check_key(key)?;
                credentials::digest(key)
            },
        },
        AdminArg::CreateAccount { account, owner } => AdminCommand::CreateAccount {
            account: AccountId(account),
            owner: exchange_domain::BrokerId(owner),
        },
        AdminArg::Deposit {
            account,
            asset,
            amount,
        } => AdminCommand::Deposit {
            account: AccountId(account),
            asset: AssetId(asset),
            amount: Amount(amount),
        },
        AdminArg::Withdraw {
            account,
            asset,
            amount,
        } => AdminCommand::Withdraw {
            account: AccountId(account),
            asset: AssetId(asset),
            amount: Amount(amount),
        },
        AdminArg::AddSymbol {
            symbol,
            base,
            quote,
            tick_size,
            lot_size,
            band_bps,
            reference_price,
        } => AdminCommand::AddSymbol(SymbolSpec {
            symbol: SymbolId(symbol),
            base: AssetId(base),
            quote: AssetId(quote),
            tick_size: Price(tick_size),
            lot_size: Qty(lot_size),
            price_band_bps: band_bps,
            reference_price: Price(reference_price),
        }),
        AdminArg::SetRiskLimits {
            account,
            max_order_qty,
            max_order_notional,
            max_open_orders,
        } => AdminCommand::SetRiskLimits {
            account: AccountId(account),
            limits: RiskLimits {
                max_order_qty: Qty(max_order_qty),
                max_order_notional: Amount(max_order_notional),
                max_open_orders,
            },
        },
        AdminArg::SetPriceBand {
            symbol,
            band_bps,
            reference_price,
        } => AdminCommand::SetPriceBand {
            symbol: SymbolId(symbol),
            price_band_bps: band_bps,
            reference_price: Price(reference_price),
        },
        AdminArg::Halt { symbol } => AdminCommand::HaltSymbol {
            symbol: SymbolId(symbol),
        },
        AdminArg::Resume { symbol } => AdminCommand::ResumeSymbol {
            symbol: SymbolId(symbol),
        },
    }))
}

/// Prints a command's outputs: one JSON array, or one line per event.
pub fn print_outputs(outputs: &[Output], json: bool) -> Result<(), String> {
    if json {
        println!(
            "{}",
            serde_json::to_string(outputs).map_err(|e| e.to_string())?
        );
    } else {
        for output in outputs {
            println!("seq {} {:?}", output.seq, output.event);
        }
    }
    Ok(())
}
