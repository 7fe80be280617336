//! The baseline of the engine's speed claim: the `lobster` crate's bare order book (no risk,
//! no wallets, no output hash) on the same replay CSV that `exchange-cli engine-replay` reads.
//!
//!     cargo run --release --example lobster_baseline -- FILE.csv
//!
//! Prints one JSON line: commands, trades, volume, commands_per_sec (over the book's work
//! alone, after the file is loaded), like `engine-replay --json`.

use std::process::ExitCode;
use std::time::Instant;

use exchange::cli::replay::{read_rows, CsvSide, CsvTif, Op};
use lobster::{OrderBook, OrderEvent, OrderType, Side};

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: lobster_baseline FILE.csv");
        return ExitCode::from(2);
    };
    let rows = match read_rows(path.as_ref()) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("lobster_baseline: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut orders = Vec::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        let side = match row.side {
            Some(CsvSide::Sell) => Side::Ask,
            _ => Side::Bid,
        };
        let id = row.order_id as u128;
        let (qty, price) = (row.qty.unwrap_or(0) as u64, row.price.unwrap_or(0) as u64);
        orders.push(match (row.op, row.tif) {
            (Op::Cancel, _) => OrderType::Cancel { id },
            (Op::New, Some(CsvTif::Gtc)) => OrderType::Limit {
                id,
                side,
                qty,
                price,
            },
            (Op::New, Some(CsvTif::Market)) => OrderType::Market { id, side, qty },
            (Op::New, tif) => {
                eprintln!(
                    "lobster_baseline: line {}: lobster has no {tif:?} orders",
                    index + 2
                );
                return ExitCode::from(2);
            }
        });
    }
    // Sized for the resting book (about 1,000 orders), as its docs advise: the arena and its
    // id map are preallocated, and an oversized map only costs cache misses.
    let mut book = OrderBook::new(4_096, 16, false);
    let (mut trades, mut volume) = (0u64, 0u64);
    let started = Instant::now();
    for order in orders {
        match book.execute(order) {
            OrderEvent::Filled { fills, .. } | OrderEvent::PartiallyFilled { fills, .. } => {
                trades += fills.len() as u64;
                volume += fills.iter().map(|f| f.qty).sum::<u64>();
            }
            _ => {}
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{{\"commands\":{},\"trades\":{trades},\"volume\":{volume},\"commands_per_sec\":{:.0}}}",
        rows.len(),
        rows.len() as f64 / elapsed.max(1e-9)
    );
    ExitCode::SUCCESS
}
