//! Throughput of the mmap event log, beside the disk's floor.
//!
//! - `append_never`: records copied into the map, no sync (target: 10 M records/s, 64 B).
//! - `group_commit`: `FlushPolicy::Batch`, one sync per batch of 1, 64 or 1024 records.
//! - `floor`: the same bytes written with plain `write()` and `fdatasync()`, per batch: what
//!   the disk costs without the log (target: group commit within 1.5x of it).
//! - `read`: sequential reads of 64-byte records through `LogReader::range`.
//!
//! Files go to `$EXCHANGE_LOG_BENCH_DIR` (default: the system temp dir), which should be on
//! the disk the log will use. Run: `cargo bench --bench log -- --measurement-time 3`.

use std::fs::{self, File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use exchange_log::{Config, FlushPolicy, Log, Record, RECORD_ALIGN, RECORD_HEADER_BYTES};

const PAYLOAD_SIZES: [usize; 2] = [64, 512];
const GROUP_BATCHES: [u64; 3] = [1, 64, 1024];
/// Purge (untimed) once the log holds this much, to bound the disk space a run takes.
const LOG_BYTES_KEPT_MAX: u64 = 1 << 30;
const READ_RECORDS: u64 = 1 << 20;
const SEGMENT_BYTES: u64 = 64 << 20;

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let base = std::env::var_os("EXCHANGE_LOG_BENCH_DIR")
            .map_or_else(std::env::temp_dir, PathBuf::from);
        let dir = base.join(format!("exchange-log-bench-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("bench dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn open(scratch: &Scratch, flush: FlushPolicy) -> Log {
    let config = Config {
        segment_bytes: SEGMENT_BYTES,
        flush,
        first_index: 1,
    };
    Log::open(&scratch.0, config).expect("open log")
}

fn record_bytes(payload: usize) -> u64 {
    (RECORD_HEADER_BYTES + payload.next_multiple_of(RECORD_ALIGN)) as u64
}

/// Append `iters` batches of `batch` records, timing only the appends.
fn append_batches(log: &mut Log, payload: &[u8], batch: u64, iters: u64) -> Duration {
    let mut elapsed = Duration::ZERO;
    let mut appended_bytes = 0;
    for _ in 0..iters {
        let first = log.next_index();
        let records = (first..first + batch).map(|index| Record {
            term: 1,
            index,
            payload,
        });
        let start = Instant::now();
        black_box(log.append_batch(records).expect("append"));
        elapsed += start.elapsed();
        appended_bytes += batch * record_bytes(payload.len());
        if appended_bytes > LOG_BYTES_KEPT_MAX {
            log.purge(log.next_index() - 1).expect("purge");
            appended_bytes = 0;
        }
    }
    elapsed
}

fn append_never(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_never");
    for size in PAYLOAD_SIZES {
        for batch in [1, 1024] {
            let scratch = Scratch::new("never");
            let mut log = open(&scratch, FlushPolicy::Never);
            let payload = vec![7u8; size];
            group.throughput(Throughput::Elements(batch));
            group.bench_function(BenchmarkId::new(format!("{size}B"), batch), |b| {
                b.iter_custom(|iters| append_batches(&mut log, &payload, batch, iters))
            });
        }
    }
    group.finish();
}

fn group_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("group_commit");
    for size in PAYLOAD_SIZES {
        for batch in GROUP_BATCHES {
            let scratch = Scratch::new("batch");
            let mut log = open(&scratch, FlushPolicy::Batch);
            let payload = vec![7u8; size];
            group.throughput(Throughput::Elements(batch));
            group.bench_function(BenchmarkId::new(format!("{size}B"), batch), |b| {
                b.iter_custom(|iters| append_batches(&mut log, &payload, batch, iters))
            });
        }
    }
    group.finish();
}

/// The same bytes per batch with `write()` + `fdatasync()`, into files preallocated the way
/// segments are (sparse `set_len`), a new file when one is full.
fn floor(c: &mut Criterion) {
    let mut group = c.benchmark_group("floor");
    for size in PAYLOAD_SIZES {
        for batch in GROUP_BATCHES {
            let scratch = Scratch::new("floor");
            let bytes = vec![7u8; (batch * record_bytes(size)) as usize];
            let mut file_no = 0;
            let new_file = |file_no: &mut u64| -> File {
                *file_no += 1;
                let path = scratch.0.join(format!("{file_no}.dat"));
                let _ = fs::remove_file(scratch.0.join(format!("{}.dat", *file_no - 1)));
                let file = OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .open(path)
                    .expect("floor file");
                file.set_len(SEGMENT_BYTES).expect("preallocate");
                file
            };
            let mut file = new_file(&mut file_no);
            let mut written = 0;
            group.throughput(Throughput::Elements(batch));
            group.bench_function(BenchmarkId::new(format!("{size}B"), batch), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        if written + bytes.len() as u64 > SEGMENT_BYTES {
                            file = new_file(&mut file_no);
                            written = 0;
                        }
                        file.write_all(&bytes).expect("write");
                        file.sync_data().expect("fdatasync");
                        written += bytes.len() as u64;
                    }
                    start.elapsed()
                })
            });
        }
    }
    group.finish();
}

fn read(c: &mut Criterion) {
    let scratch = Scratch::new("read");
    let mut log = open(&scratch, FlushPolicy::Never);
    let payload = [7u8; 64];
    append_batches(&mut log, &payload, 1024, READ_RECORDS / 1024);
    let mut reader = log.reader();
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Elements(READ_RECORDS));
    group.bench_function("sequential_64B", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for record in reader.range(1..READ_RECORDS + 1).expect("range") {
                let record = record.expect("record");
                sum += record.payload[0] as u64 + record.term;
            }
            black_box(sum)
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = append_never, group_commit, floor, read
}
criterion_main!(benches);
