//! Criterion benchmarks of the matching engine, beside the `lobster` crate's bare order book on
//! the same stream (about 1,000 resting orders, 10% marketable orders, a cancel for most).
//!
//!     cargo bench --bench engine
//!
//! The engine's figure includes its risk checks, wallet holds and settlement, and the output
//! hash; lobster does the matching alone.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use exchange::cli::replay::{prepare, CsvSide, CsvTif, Op, ReplayConfig, Row};
use exchange::cli::workload::{generate, WorkloadConfig};
use exchange::engine::{DiscardSink, Engine, EngineConfig};

const COMMANDS: usize = 200_000;

fn lobster_orders(rows: &[Row]) -> Vec<lobster::OrderType> {
    rows.iter()
        .map(|row| {
            let side = match row.side {
                Some(CsvSide::Sell) => lobster::Side::Ask,
                _ => lobster::Side::Bid,
            };
            let id = row.order_id as u128;
            let qty = row.qty.unwrap_or(0) as u64;
            match (row.op, row.tif) {
                (Op::Cancel, _) => lobster::OrderType::Cancel { id },
                (Op::New, Some(CsvTif::Market)) => lobster::OrderType::Market { id, side, qty },
                (Op::New, _) => lobster::OrderType::Limit {
                    id,
                    side,
                    qty,
                    price: row.price.unwrap_or(0) as u64,
                },
            }
        })
        .collect()
}

fn stream(c: &mut Criterion) {
    let rows = generate(&WorkloadConfig {
        commands: COMMANDS,
        ..WorkloadConfig::default()
    });
    let prepared = prepare(&rows, ReplayConfig::default());
    let orders = lobster_orders(&rows);

    let mut group = c.benchmark_group("stream_1k_resting");
    group.throughput(Throughput::Elements(COMMANDS as u64));
    group.sample_size(20);
    group.bench_function("exchange_engine", |b| {
        b.iter_batched(
            || {
                let mut engine = Engine::new(EngineConfig::unbounded());
                for input in &prepared.setup {
                    engine.process(input, &mut DiscardSink);
                }
                engine
            },
            |mut engine| {
                for input in &prepared.commands {
                    engine.process(input, &mut DiscardSink);
                }
                engine
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("lobster_crate", |b| {
        b.iter_batched(
            || (lobster::OrderBook::new(4_096, 16, false), orders.clone()),
            |(mut book, orders)| {
                for order in orders {
                    criterion::black_box(book.execute(order));
                }
                book
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, stream);
criterion_main!(benches);
