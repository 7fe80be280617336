//! A seeded synthetic order stream shaped like a busy book: about `resting` orders resting
//! around a fixed mid price, a stream of new limit orders on both sides, about one marketable
//! order in ten, and a cancel for most orders. The same seed gives the same stream.

use std::collections::{BTreeMap, HashMap, VecDeque};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::replay::{CsvSide, CsvTif, Op, Row};

#[derive(Clone, Copy, Debug)]
pub struct WorkloadConfig {
    pub seed: u64,
    /// Rows in the stream, including the initial resting orders.
    pub commands: usize,
    /// How many orders rest at the start, and roughly throughout.
    pub resting: usize,
    pub accounts: u64,
    /// The share of new orders that are marketable (market orders), in percent.
    pub marketable_pct: u32,
    pub mid_price: i64,
    /// Resting prices fall within this many ticks of the mid.
    pub spread_ticks: i64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            seed: 42,
            commands: 1_000_000,
            resting: 1_000,
            accounts: 100,
            marketable_pct: 10,
            mid_price: 100_000,
            spread_ticks: 50,
        }
    }
}

pub fn generate(config: &WorkloadConfig) -> Vec<Row> {
    let mut rng = SmallRng::seed_from_u64(config.seed);
    let mut rows = Vec::with_capacity(config.commands);
    let mut book = ShadowBook::default();
    let mut next_id = 1u64;
    let target = config.resting.max(1);
    while rows.len() < config.commands {
        let warm = rows.len() < config.resting;
        let roll = rng.gen_range(0..1_000u32);
        // About 55% new orders (10% of them marketable) and 45% cancels, steered so the book
        // stays near `resting` orders: a cancel for most orders.
        let marketable = !warm && roll < config.marketable_pct * 55 / 10;
        let mut cancel = !warm && !marketable && roll >= 550;
        if book.len() > target + target / 10 {
            cancel = !marketable;
        } else if book.len() < target - target / 10 {
            cancel = false;
        }
        if cancel && book.len() > 0 {
            let (order_id, account) = book.cancel_random(&mut rng);
            rows.push(Row {
                op: Op::Cancel,
                order_id,
                account: Some(account),
                side: None,
                price: None,
                qty: None,
                tif: None,
            });
            continue;
        }
        let account = rng.gen_range(1..=config.accounts);
        let buy = rng.gen_bool(0.5);
        let qty = rng.gen_range(1..=10i64) * 10;
        let order_id = next_id;
        next_id += 1;
        let (price, tif) = if marketable {
            // A protection price far past the book: it never binds, like a bare market order.
            let reach = 10 * config.spread_ticks;
            let price = if buy {
                config.mid_price + reach
            } else {
                config.mid_price - reach
            };
            book.take(buy, qty);
            (price, CsvTif::Market)
        } else {
            let offset = rng.gen_range(1..=config.spread_ticks);
            let price = if buy {
                config.mid_price - offset
            } else {
                config.mid_price + offset
            };
            book.rest(order_id, account, buy, price, qty);
            (price, CsvTif::Gtc)
        };
        rows.push(Row {
            op: Op::New,
            order_id,
            account: Some(account),
            side: Some(if buy { CsvSide::Buy } else { CsvSide::Sell }),
            price: Some(price),
            qty: Some(qty),
            tif: Some(tif),
        });
    }
    rows
}

/// Just enough of a book to know which generated orders still rest, so that every cancel
/// names a live order. Limit orders never cross (bids below the mid, asks above), so only
/// market orders take liquidity.
#[derive(Default)]
struct ShadowBook {
    /// Per side, price -> queue of (order id, open quantity).
    bids: BTreeMap<i64, VecDeque<(u64, i64)>>,
    asks: BTreeMap<i64, VecDeque<(u64, i64)>>,
    /// Live orders, for uniform random picks, with each one's place in the vector.
    live: Vec<(u64, u64, bool, i64)>,
    place: HashMap<u64, usize>,
}

impl ShadowBook {
    fn len(&self) -> usize {
        self.live.len()
    }

    fn rest(&mut self, id: u64, account: u64, buy: bool, price: i64, qty: i64) {
        let side = if buy { &mut self.bids } else { &mut self.asks };
        side.entry(price).or_default().push_back((id, qty));
        self.place.insert(id, self.live.len());
        self.live.push((id, account, buy, price));
    }

    fn forget(&mut self, id: u64) {
        if let Some(index) = self.place.remove(&id) {
            self.live.swap_remove(index);
            if let Some(moved) = self.live.get(index) {
                self.place.insert(moved.0, index);
            }
        }
    }

    fn cancel_random(&mut self, rng: &mut SmallRng) -> (u64, u64) {
        let (id, account, buy, price) = self.live[rng.gen_range(0..self.live.len())];
        let side = if buy { &mut self.bids } else { &mut self.asks };
        if let Some(queue) = side.get_mut(&price) {
            queue.retain(|(queued, _)| *queued != id);
            if queue.is_empty() {
                side.remove(&price);
            }
        }
        self.forget(id);
        (id, account)
    }

    /// A market order of `qty`: consumes the opposite side from its best price.
    fn take(&mut self, buy: bool, mut qty: i64) {
        while qty > 0 {
            let side = if buy { &mut self.asks } else { &mut self.bids };
            let best = if buy {
                side.keys().next()
            } else {
                side.keys().next_back()
            };
            let Some(&price) = best else { return };
            let queue = side.get_mut(&price).expect("best level exists");
            let mut filled = Vec::new();
            while qty > 0 {
                let Some(front) = queue.front_mut() else {
                    break;
                };
                let traded = qty.min(front.1);
                qty -= traded;
                front.1 -= traded;
                if front.1 == 0 {
                    filled.push(front.0);
                    queue.pop_front();
                }
            }
            if queue.is_empty() {
                side.remove(&price);
            }
            for id in filled {
                self.forget(id);
            }
        }
    }
}

/// Writes rows in the replay CSV format.
pub fn write_csv(rows: &[Row], writer: impl std::io::Write) -> csv::Result<()> {
    let mut csv = csv::Writer::from_writer(writer);
    for row in rows {
        csv.serialize(row)?;
    }
    csv.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_has_the_promised_shape() {
        let rows = generate(&WorkloadConfig {
            commands: 100_000,
            ..WorkloadConfig::default()
        });
        let news = rows.iter().filter(|r| r.op == Op::New).count();
        let cancels = rows.len() - news;
        let market = rows
            .iter()
            .filter(|r| r.tif == Some(CsvTif::Market))
            .count();
        let market_pct = market * 100 / news;
        assert!((8..=12).contains(&market_pct), "{market_pct}% marketable");
        assert!(
            cancels * 100 / news >= 75,
            "most orders are cancelled: {cancels} of {news}"
        );
        assert_eq!(
            rows,
            generate(&WorkloadConfig {
                commands: 100_000,
                ..WorkloadConfig::default()
            })
        );
    }

    #[test]
    fn csv_written_reads_back_identically() {
        let rows = generate(&WorkloadConfig {
            commands: 500,
            ..WorkloadConfig::default()
        });
        let mut bytes = Vec::new();
        write_csv(&rows, &mut bytes).expect("write");
        let back = super::super::replay::parse_rows(&bytes[..]).expect("read");
        assert_eq!(back, rows);
    }
}
