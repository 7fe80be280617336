//! Identifiers. Newtypes so that an account can never be passed where an order is expected.

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash,
            Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
        )]
        #[serde(transparent)]
        #[rkyv(derive(Debug, PartialEq))]
        pub struct $name(pub $inner);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A trading account: the owner of balances and orders.
    AccountId(u64)
);
id_type!(
    /// A tradable instrument, trading a base asset against a quote asset.
    SymbolId(u32)
);
id_type!(
    /// An asset held in wallets (a currency, a stock).
    AssetId(u32)
);
id_type!(
    /// The exchange's order id: the sequence number of the command that created the order,
    /// so every replica assigns the same id without any counter of its own.
    OrderId(u64)
);
id_type!(
    /// A broker: the member firm whose sessions send orders. Every command carries the broker
    /// it came from (stamped by the gateway from the authenticated session, never by the
    /// broker itself), so the engine can decide ownership and exactly-once deterministically.
    BrokerId(u32)
);

impl BrokerId {
    /// The exchange operator: may administer and act for every account; its orders are not
    /// subject to exactly-once checks (replays and tools use it).
    pub const OPERATOR: BrokerId = BrokerId(0);
}

id_type!(
    /// The broker's own id for an order, echoed in every report about it.
    ClientOrderId(u64)
);
id_type!(
    /// One execution (one side of one match). Each match produces two.
    ExecId(u64)
);
id_type!(
    /// One match between a taker and a maker; both executions of a match carry it.
    TradeId(u64)
);
