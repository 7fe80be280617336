//! `engine-bench`: the engine alone on a seeded in-memory workload.
//!
//! Two passes over the same stream on fresh engines: one untimed per command for throughput,
//! one timing every command into an HDR histogram for latency percentiles (the clock reads
//! add a few tens of nanoseconds to each sample, so the percentiles are an upper bound).

use std::time::Instant;

use exchange_domain::Input;
use exchange_engine::{DiscardSink, Engine, EngineConfig};
use hdrhistogram::Histogram;
use serde::Serialize;

use super::replay::{prepare, Prepared, ReplayConfig};
use super::workload::{generate, WorkloadConfig};

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub seed: u64,
    pub commands: u64,
    pub commands_per_sec: f64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    pub output_hash: String,
}

fn fresh_engine(prepared: &Prepared) -> Engine {
    let mut engine = Engine::new(EngineConfig::unbounded());
    for input in &prepared.setup {
        engine.process(input, &mut DiscardSink);
    }
    engine
}

pub fn run(config: &WorkloadConfig) -> BenchReport {
    let prepared = prepare(&generate(config), ReplayConfig::default());
    let commands: &[Input] = &prepared.commands;

    let mut engine = fresh_engine(&prepared);
    let started = Instant::now();
    for input in commands {
        engine.process(input, &mut DiscardSink);
    }
    let elapsed = started.elapsed();
    let output_hash = engine.output_hash();

    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .expect("static histogram bounds are valid");
    let mut engine = fresh_engine(&prepared);
    for input in commands {
        let start = Instant::now();
        engine.process(input, &mut DiscardSink);
        histogram.saturating_record(start.elapsed().as_nanos() as u64);
    }
    assert_eq!(
        engine.output_hash(),
        output_hash,
        "the engine is deterministic"
    );

    BenchReport {
        seed: config.seed,
        commands: commands.len() as u64,
        commands_per_sec: commands.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_ns: histogram.value_at_quantile(0.50),
        p90_ns: histogram.value_at_quantile(0.90),
        p99_ns: histogram.value_at_quantile(0.99),
        p999_ns: histogram.value_at_quantile(0.999),
        max_ns: histogram.max(),
        output_hash: format!("{output_hash:016x}"),
    }
}
