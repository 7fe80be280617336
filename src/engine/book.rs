//! One symbol's order book: two sides of price levels, each level a FIFO queue of orders.
//!
//! A side keeps its levels in a vector sorted so that the best price is the last element:
//! matching, which works at the best price, pops and pushes at the end, and a new price near
//! the top of the book (where almost all activity is) moves few elements. Levels are found by
//! binary search. Nothing here allocates per order.
//!
//! A level that empties inside the vector stays as an empty slot, because orders come back to
//! the same prices all the time and re-inserting would move every level behind it. The last
//! (best) level is never empty, and empty slots are compacted away once they outnumber the
//! live levels, so the vector stays proportional to the live book.

use exchange_domain::{Price, Qty, Side};

use crate::arena::{Handle, Order, OrderArena, NIL};

#[derive(Clone, Copy, Debug)]
pub(crate) struct Level {
    pub price: Price,
    /// Sum of the leaves quantity of the level's orders.
    pub total: Qty,
    pub count: u32,
    pub head: Handle,
    pub tail: Handle,
}

/// Empty slots are compacted away when there are more of them than live levels plus this.
const EMPTY_LEVELS_SLACK: usize = 64;

pub(crate) struct BookSide {
    side: Side,
    /// Sorted by `key(price)` ascending: best last. The last level is never empty.
    pub levels: Vec<Level>,
    /// Levels with no order left.
    empty_levels: usize,
}

impl BookSide {
    pub fn new(side: Side) -> Self {
        BookSide {
            side,
            levels: Vec::new(),
            empty_levels: 0,
        }
    }

    pub fn empty_levels(&self) -> usize {
        self.empty_levels
    }

    /// Orders the levels so that the best price sorts last on both sides.
    #[inline(always)]
    fn key(&self, price: Price) -> i64 {
        match self.side {
            Side::Buy => price.0,
            Side::Sell => -price.0,
        }
    }

    /// Whether an incoming order of the opposite side with limit `limit` trades with `price`.
    #[inline(always)]
    pub fn crosses(&self, price: Price, limit: Price) -> bool {
        self.key(price) >= self.key(limit)
    }

    #[inline(always)]
    pub fn best(&self) -> Option<&Level> {
        self.levels.last()
    }

    #[inline]
    pub fn find(&self, price: Price) -> Result<usize, usize> {
        let key = self.key(price);
        // Most lookups hit the best level; check it before searching.
        match self.levels.last() {
            Some(best) if best.price == price => Ok(self.levels.len() - 1),
            _ => self
                .levels
                .binary_search_by_key(&key, |level| self.key(level.price)),
        }
    }

    /// Appends an order at the back of the queue at its price, creating the level if needed.
    pub fn push_back(&mut self, orders: &mut OrderArena, handle: Handle) {
        let (price, leaves) = {
            let order = orders.get(handle);
            (order.price, order.leaves)
        };
        let index = match self.find(price) {
            Ok(index) => {
                if self.levels[index].count == 0 {
                    self.empty_levels -= 1;
                }
                index
            }
            Err(index) => {
                self.levels.insert(
                    index,
                    Level {
                        price,
                        total: Qty(0),
                        count: 0,
                        head: NIL,
                        tail: NIL,
                    },
                );
                index
            }
        };
        let level = &mut self.levels[index];
        let order = orders.get_mut(handle);
        order.level_hint = u16::try_from(index).unwrap_or(u16::MAX);
        order.prev = level.tail;
        order.next = NIL;
        let old_tail = level.tail;
        level.tail = handle;
        if old_tail == NIL {
            level.head = handle;
        } else {
            orders.get_mut(old_tail).next = handle;
        }
        level.total.0 += leaves.0;
        level.count += 1;
    }

    /// Unlinks an order from its level (found by the order's price); a level it empties
    /// becomes an empty slot, or goes if it was the best.
    pub fn unlink(&mut self, orders: &mut OrderArena, handle: Handle) {
        let index = self.locate(orders.get(handle));
        self.unlink_at(orders, index, handle);
    }

    /// The index of a resting order's level.
    #[inline]
    pub fn locate(&self, order: &Order) -> usize {
        let hint = order.level_hint as usize;
        if self
            .levels
            .get(hint)
            .is_some_and(|l| l.price == order.price)
        {
            return hint;
        }
        match self.find(order.price) {
            Ok(index) => index,
            Err(_) => unreachable!("resting order {} has no level", order.id),
        }
    }

    pub fn unlink_at(&mut self, orders: &mut OrderArena, index: usize, handle: Handle) {
        let (prev, next, leaves) = {
            let order = orders.get(handle);
            (order.prev, order.next, order.leaves)
        };
        let level = &mut self.levels[index];
        if prev == NIL {
            level.head = next;
        } else {
            orders.get_mut(prev).next = next;
        }
        if next == NIL {
            level.tail = prev;
        } else {
            orders.get_mut(next).prev = prev;
        }
        level.total.0 -= leaves.0;
        level.count -= 1;
        if level.count == 0 {
            self.empty_levels += 1;
            if index + 1 == self.levels.len() {
                // Keep the best level live: drop it and any empty slots it uncovers.
                while self.levels.last().is_some_and(|l| l.count == 0) {
                    self.levels.pop();
                    self.empty_levels -= 1;
                }
            } else if self.empty_levels > self.levels.len() - self.empty_levels + EMPTY_LEVELS_SLACK
            {
                self.levels.retain(|l| l.count > 0);
                self.empty_levels = 0;
            }
        }
    }

    /// Price levels from the best, as (price, total quantity).
    pub fn depth(&self) -> impl Iterator<Item = (Price, Qty)> + '_ {
        self.live_levels().rev().map(|l| (l.price, l.total))
    }

    /// The levels that hold orders, worst first.
    pub fn live_levels(&self) -> impl DoubleEndedIterator<Item = &Level> + '_ {
        self.levels.iter().filter(|l| l.count > 0)
    }
}

pub(crate) struct Book {
    pub bids: BookSide,
    pub asks: BookSide,
}

impl Book {
    pub fn new() -> Self {
        Book {
            bids: BookSide::new(Side::Buy),
            asks: BookSide::new(Side::Sell),
        }
    }

    /// The side where orders of `side` rest.
    #[inline(always)]
    pub fn side_mut(&mut self, side: Side) -> &mut BookSide {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    #[inline(always)]
    pub fn side(&self, side: Side) -> &BookSide {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }
}
