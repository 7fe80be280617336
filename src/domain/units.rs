//! Integer units. No floating point anywhere in the exchange's state.
//!
//! The values are signed so that a negative quantity or price sent by a client is
//! representable and is rejected with a reason instead of wrapping around.

use serde::{Deserialize, Serialize};

macro_rules! unit_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash,
            Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
        )]
        #[serde(transparent)]
        #[rkyv(derive(Debug, PartialEq))]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

unit_type!(
    /// Quote-asset units per base-asset unit; a multiple of the symbol's tick size.
    Price
);
unit_type!(
    /// Base-asset units; a multiple of the symbol's lot size.
    Qty
);
unit_type!(
    /// An amount of one asset, in that asset's units (balances, deposits, notionals).
    Amount
);

impl Price {
    /// The notional of `qty` at this price, or `None` if it does not fit in an [`Amount`].
    pub fn notional(self, qty: Qty) -> Option<Amount> {
        self.0.checked_mul(qty.0).map(Amount)
    }
}
