//! Administrative commands: accounts, funds, symbols, limits, trading status.

use exchange_domain::{AdminCommand, Amount, Event, Price, RejectReason, SymbolSpec, DECIMALS_MAX};

use crate::book::Book;
use crate::engine::{AssetSpec, Emitter, Market, State};
use crate::limits::{NAMED_ASSETS_MAX, PRICE_BAND_BPS_MAX};
use crate::sink::EventSink;
use crate::wallet::Account;

impl State {
    pub fn admin<S: EventSink>(&mut self, cmd: &AdminCommand, out: &mut Emitter<S>) {
        match self.try_admin(cmd) {
            Ok(event) => out.emit(event),
            Err(reason) => out.emit(Event::AdminRejected { reason }),
        }
    }

    fn try_admin(&mut self, cmd: &AdminCommand) -> Result<Event, RejectReason> {
        match *cmd {
            AdminCommand::SetBrokerKey { broker, key_digest } => {
                self.set_broker_key(broker, key_digest)
            }
            AdminCommand::SetFixCompId { broker, comp_id } => self.set_fix_comp_id(broker, comp_id),
            AdminCommand::MarkFixSession { comp_id, mark } => self.mark_fix_session(comp_id, mark),
            AdminCommand::SetKeySalt { salt } => self.set_key_salt(salt),
            AdminCommand::CreateAccount { account, owner } => {
                if self.account_index.contains_key(&account) {
                    return Err(RejectReason::AccountExists);
                }
                if self.accounts.len() >= self.config.accounts_max as usize {
                    return Err(RejectReason::TooManyAccounts);
                }
                self.account_index
                    .insert(account, self.accounts.len() as u32);
                self.accounts
                    .push(Account::new(account, owner, self.config.default_limits));
                Ok(Event::AccountCreated { account })
            }
            AdminCommand::Deposit {
                account,
                asset,
                amount,
            } => {
                let index = self.account(account)?;
                if amount.0 <= 0 {
                    return Err(RejectReason::InvalidAmount);
                }
                let total = self.asset_totals.get(&asset).copied().unwrap_or(0);
                // Bounding the asset's total bounds every balance of it, so no settlement can
                // overflow.
                let new_total = total
                    .checked_add(amount.0)
                    .ok_or(RejectReason::BalanceOverflow)?;
                let account = &mut self.accounts[index];
                let slot = account
                    .slot_or_create(asset)
                    .ok_or(RejectReason::TooManyAssets)?;
                account.credit(slot, amount);
                self.asset_totals.insert(asset, new_total);
                let balance = account.balances[slot as usize];
                Ok(Event::BalanceChanged {
                    account: account.id,
                    asset,
                    delta: amount,
                    available: Amount(balance.available),
                    held: Amount(balance.held),
                })
            }
            AdminCommand::Withdraw {
                account,
                asset,
                amount,
            } => {
                let index = self.account(account)?;
                if amount.0 <= 0 {
                    return Err(RejectReason::InvalidAmount);
                }
                let account = &mut self.accounts[index];
                let slot = account
                    .slot_of(asset)
                    .ok_or(RejectReason::InsufficientFunds)?;
                let balance = &mut account.balances[slot as usize];
                if balance.available < amount.0 {
                    return Err(RejectReason::InsufficientFunds);
                }
                balance.available -= amount.0;
                let balance = *balance;
                let account = &self.accounts[index];
                *self.asset_totals.entry(asset).or_insert(0) -= amount.0;
                Ok(Event::BalanceChanged {
                    account: account.id,
                    asset,
                    delta: Amount(-amount.0),
                    available: Amount(balance.available),
                    held: Amount(balance.held),
                })
            }
            AdminCommand::AddSymbol(spec) => {
                if self.market_index.contains_key(&spec.symbol) {
                    return Err(RejectReason::SymbolExists);
                }
                if self.markets.len() >= self.config.symbols_max as usize {
                    return Err(RejectReason::TooManySymbols);
                }
                if !spec_is_valid(&spec) {
                    return Err(RejectReason::InvalidSymbolSpec);
                }
                if self.markets.iter().any(|m| m.spec.name == spec.name) {
                    return Err(RejectReason::NameTaken);
                }
                // With both assets named, a price must read in whole quote units per whole
                // base unit, or people would misread every price.
                let decimals = |asset| self.assets.iter().find(|a| a.asset == asset);
                if let (Some(base), Some(quote)) = (decimals(spec.base), decimals(spec.quote)) {
                    if i16::from(quote.decimals) - i16::from(base.decimals)
                        != i16::from(spec.price_decimals)
                    {
                        return Err(RejectReason::InvalidSymbolSpec);
                    }
                }
                self.market_index
                    .insert(spec.symbol, self.markets.len() as u32);
                self.markets.push(Market {
                    spec,
                    halted: false,
                    price_band_bps: 0,
                    reference_price: Price(0),
                    book: Book::new(),
                });
                Ok(Event::SymbolAdded { spec })
            }
            AdminCommand::AddAsset {
                asset,
                name,
                decimals,
            } => {
                if self.assets.iter().any(|a| a.asset == asset) {
                    return Err(RejectReason::AssetExists);
                }
                if !name.is_valid() || decimals > DECIMALS_MAX {
                    return Err(RejectReason::InvalidAssetSpec);
                }
                if self.assets.iter().any(|a| a.name == name) {
                    return Err(RejectReason::NameTaken);
                }
                if self.assets.len() >= NAMED_ASSETS_MAX {
                    return Err(RejectReason::TooManyAssets);
                }
                self.assets.push(AssetSpec {
                    asset,
                    name,
                    decimals,
                });
                Ok(Event::AssetAdded {
                    asset,
                    name,
                    decimals,
                })
            }
            AdminCommand::SetRiskLimits { account, limits } => {
                let index = self.account(account)?;
                if limits.max_order_qty.0 <= 0
                    || limits.max_order_notional.0 <= 0
                    || limits.max_open_orders == 0
                {
                    return Err(RejectReason::InvalidRiskLimits);
                }
                self.accounts[index].limits = limits;
                Ok(Event::RiskLimitsSet { account, limits })
            }
            AdminCommand::SetPriceBand {
                symbol,
                price_band_bps,
                reference_price,
            } => {
                let index = self.market(symbol)?;
                if price_band_bps > PRICE_BAND_BPS_MAX {
                    return Err(RejectReason::InvalidSymbolSpec);
                }
                if reference_price.0 < 0 {
                    return Err(RejectReason::InvalidPrice);
                }
                let market = &mut self.markets[index];
                market.price_band_bps = price_band_bps;
                if reference_price.0 > 0 {
                    market.reference_price = reference_price;
                }
                Ok(Event::PriceBandSet {
                    symbol,
                    price_band_bps,
                    reference_price: market.reference_price,
                })
            }
            AdminCommand::HaltSymbol { symbol } => {
                let index = self.market(symbol)?;
                self.markets[index].halted = true;
                Ok(Event::TradingStatus {
                    symbol,
                    halted: true,
                })
            }
            AdminCommand::ResumeSymbol { symbol } => {
                let index = self.market(symbol)?;
                self.markets[index].halted = false;
                Ok(Event::TradingStatus {
                    symbol,
                    halted: false,
                })
            }
        }
    }

    fn account(&self, account: exchange_domain::AccountId) -> Result<usize, RejectReason> {
        self.account_index
            .get(&account)
            .map(|&index| index as usize)
            .ok_or(RejectReason::UnknownAccount)
    }

    fn market(&self, symbol: exchange_domain::SymbolId) -> Result<usize, RejectReason> {
        self.market_index
            .get(&symbol)
            .map(|&index| index as usize)
            .ok_or(RejectReason::UnknownSymbol)
    }
}

fn spec_is_valid(spec: &SymbolSpec) -> bool {
    spec.tick_size.0 > 0
        && spec.lot_size.0 > 0
        && spec.base != spec.quote
        && spec.name.is_valid()
        && spec.price_decimals <= DECIMALS_MAX
}
