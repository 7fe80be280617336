//! The order arena: every resting order lives in one slab, addressed by a u32 handle.
//!
//! Orders link to their neighbours in the price level's FIFO queue and in their account's
//! order list by handle, so inserting and removing an order is O(1) and allocates nothing once
//! the slab has grown. Freed slots form a free list threaded through `next`.

use exchange_domain::{ClientOrderId, OrderId, Price, Qty, SelfTradePrevention, Side, TimeInForce};

/// A slot index in the arena. `NIL` ends every list.
pub(crate) type Handle = u32;
pub(crate) const NIL: Handle = u32::MAX;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Order {
    pub id: OrderId,
    pub client_order_id: ClientOrderId,
    pub price: Price,
    pub leaves: Qty,
    /// The sequence number at which the order joined its price level: its place in the queue.
    pub priority: u64,
    /// Index of the owning account in the engine's account table.
    pub account: u32,
    /// Index of the symbol in the engine's symbol table.
    pub symbol: u32,
    /// Positions of the symbol's base and quote balances in the account's balance table, which
    /// only ever grows, so the positions stay valid for the order's life.
    pub base_slot: u8,
    pub quote_slot: u8,
    pub side: Side,
    pub time_in_force: TimeInForce,
    pub self_trade_prevention: SelfTradePrevention,
    /// FIFO queue of the price level.
    pub prev: Handle,
    pub next: Handle,
    /// The account's list of open orders, in order id order.
    pub account_prev: Handle,
    pub account_next: Handle,
    /// Where the order's level was in its side's vector when the order joined it. Levels move
    /// only when a new price is inserted below them or empty slots are compacted, so this is
    /// usually still right and saves a search; it is checked before use. A u16 keeps the
    /// order at 72 bytes (a u32 would pad it to 80); past 65,535 levels there is no hint.
    pub level_hint: u16,
}

const _: () = assert!(std::mem::size_of::<Order>() == 72);

#[derive(Default)]
pub(crate) struct OrderArena {
    slots: Vec<Order>,
    free_head: Option<Handle>,
    live: u32,
}

impl OrderArena {
    pub fn live(&self) -> u32 {
        self.live
    }

    pub fn insert(&mut self, order: Order) -> Handle {
        self.live += 1;
        match self.free_head {
            Some(handle) => {
                let slot = &mut self.slots[handle as usize];
                self.free_head = (slot.next != NIL).then_some(slot.next);
                *slot = order;
                handle
            }
            None => {
                let handle = self.slots.len() as Handle;
                assert!(handle != NIL, "order arena exhausted its handle space");
                self.slots.push(order);
                handle
            }
        }
    }

    pub fn remove(&mut self, handle: Handle) -> Order {
        let order = self.slots[handle as usize];
        self.slots[handle as usize].next = self.free_head.unwrap_or(NIL);
        self.free_head = Some(handle);
        self.live -= 1;
        order
    }

    #[inline(always)]
    pub fn get(&self, handle: Handle) -> &Order {
        &self.slots[handle as usize]
    }

    #[inline(always)]
    pub fn get_mut(&mut self, handle: Handle) -> &mut Order {
        &mut self.slots[handle as usize]
    }
}
