//! Order attributes.

use serde::{Deserialize, Serialize};

macro_rules! plain_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $value:expr),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
            Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
        )]
        #[serde(rename_all = "snake_case")]
        #[rkyv(derive(Debug, PartialEq))]
        #[repr(u8)]
        pub enum $name { $($(#[$vdoc])* $variant = $value),+ }
    };
}

plain_enum!(
    /// Buy or sell.
    Side {
        Buy = 0,
        Sell = 1,
    }
);

impl Side {
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

plain_enum!(
    /// How the order's price is used.
    OrderType {
        /// Trades at its price or better.
        Limit = 0,
        /// Trades at any price up to its protection price (the order's `price` field), and never
        /// rests: its time in force must be IOC or FOK.
        Market = 1,
    }
);

plain_enum!(
    /// How long the order lives.
    TimeInForce {
        /// Good till cancelled: the remainder rests in the book.
        Gtc = 0,
        /// Immediate or cancel: trades what it can, the remainder is cancelled.
        Ioc = 1,
        /// Fill or kill: trades its whole quantity at once, or nothing at all.
        Fok = 2,
        /// Post only (good till crossing): rests in the book; rejected if it would trade on entry.
        PostOnly = 3,
    }
);

plain_enum!(
    /// What to do when an incoming order would trade against a resting order of the same
    /// account. The incoming order's mode decides.
    SelfTradePrevention {
        /// Let the two orders trade.
        None = 0,
        /// Cancel the incoming order (its remainder); the resting order stays.
        CancelNewest = 1,
        /// Cancel the resting order and keep matching the incoming one.
        CancelOldest = 2,
        /// Cancel both.
        CancelBoth = 3,
    }
);
