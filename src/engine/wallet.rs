//! Accounts and their wallets: per asset, an available and a held amount.
//!
//! Funds move in three ways only: a hold moves available to held when an order is accepted, a
//! release moves it back when the order leaves the book unfilled, and a settlement moves held
//! funds of one account to the available funds of the other when orders trade. Deposits and
//! withdrawals change an asset's total; nothing else does.

use exchange_domain::{AccountId, Amount, AssetId, BrokerId, RiskLimits};

use crate::arena::{Handle, NIL};
use crate::limits::ASSETS_PER_ACCOUNT_MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Balance {
    pub asset: AssetId,
    pub available: i64,
    pub held: i64,
}

#[derive(Clone, Debug)]
pub(crate) struct Account {
    pub id: AccountId,
    /// The only broker (besides the operator) that may act for the account.
    pub owner: BrokerId,
    pub limits: RiskLimits,
    /// Grows only: an order caches the positions of its balances.
    pub balances: Vec<Balance>,
    pub open_orders: u32,
    /// The account's open orders, oldest first.
    pub orders_head: Handle,
    pub orders_tail: Handle,
}

impl Account {
    pub fn new(id: AccountId, owner: BrokerId, limits: RiskLimits) -> Self {
        Account {
            id,
            owner,
            limits,
            balances: Vec::new(),
            open_orders: 0,
            orders_head: NIL,
            orders_tail: NIL,
        }
    }

    pub fn slot_of(&self, asset: AssetId) -> Option<u8> {
        self.balances
            .iter()
            .position(|b| b.asset == asset)
            .map(|slot| slot as u8)
    }

    /// The position of the asset's balance, created empty if the account never held it.
    /// `None` when the account already holds as many assets as it may.
    pub fn slot_or_create(&mut self, asset: AssetId) -> Option<u8> {
        if let Some(slot) = self.slot_of(asset) {
            return Some(slot);
        }
        if self.balances.len() >= ASSETS_PER_ACCOUNT_MAX {
            return None;
        }
        self.balances.push(Balance {
            asset,
            available: 0,
            held: 0,
        });
        Some((self.balances.len() - 1) as u8)
    }

    /// Moves `amount` from available to held; false (and nothing moved) if not enough is
    /// available.
    #[inline]
    pub fn hold(&mut self, slot: u8, amount: Amount) -> bool {
        let balance = &mut self.balances[slot as usize];
        if balance.available < amount.0 {
            return false;
        }
        balance.available -= amount.0;
        balance.held += amount.0;
        true
    }

    /// Moves `amount` from held back to available.
    ///
    /// The money checks here are `assert!`s in every build: a broken one means the engine's
    /// accounting is wrong, and stopping the node beats publishing money from nowhere.
    #[inline]
    pub fn release(&mut self, slot: u8, amount: Amount) {
        self.spend_held(slot, amount);
        self.credit(slot, amount);
    }

    /// Spends `amount` of held funds (they leave this account).
    #[inline]
    pub fn spend_held(&mut self, slot: u8, amount: Amount) {
        let balance = &mut self.balances[slot as usize];
        assert!(
            amount.0 >= 0 && balance.held >= amount.0,
            "account {}: take {} of asset {} from {} held",
            self.id,
            amount.0,
            balance.asset,
            balance.held
        );
        balance.held -= amount.0;
    }

    /// Credits `amount` to available funds.
    #[inline]
    pub fn credit(&mut self, slot: u8, amount: Amount) {
        let balance = &mut self.balances[slot as usize];
        assert!(amount.0 >= 0, "account {}: credit of {}", self.id, amount.0);
        balance.available = balance
            .available
            .checked_add(amount.0)
            .expect("available funds overflow on credit");
    }
}
