//! Throughput of the mmap event log, beside the disk's floor.
//!
//! - `append_never`: records copied into the map, no sync (target: 10 M records/s, 64 B).
//! - `group_commit`: `FlushPolicy::Batch`, one sync per batch of 1, 64 or 1024 records, made
//!   the way the node's WAL thread makes it: `append_unsynced`, then `sync`.
//! - `floor`: the same bytes written with plain `write()` and `fdatasync()`, per batch: what
//!   the disk costs without the log (target: group commit within 1.5x of it). Each floor runs
//!   right after the group commit it is compared with, so that both see the same load.
//! - `group_commit_vs_floor` (printed, not criterion): the two interleaved batch by batch,
//!   the ratio to trust when the disk is shared and its latency drifts.
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

/// Append `iters` batches of `batch` records, timing only the appends. The clock is read
/// around the loop, not around each call, and stopped only for a purge: on this VM a clock
/// read costs tens of nanoseconds, as much as appending one small record.
/// Appends `iters` batches; under `FlushPolicy::Batch` each is synced as the node's WAL thread
/// does it (`append_unsynced`, readers see the records, then one `sync`).
fn append_batches(log: &mut Log, payload: &[u8], batch: u64, iters: u64) -> Duration {
    let mut elapsed = Duration::ZERO;
    let mut appended_bytes = 0;
    let mut start = Instant::now();
    for _ in 0..iters {
        let first = log.next_index();
        let records = (first..first + batch).map(|index| Record {
            term: 1,
            index,
            payload,
        });
        black_box(log.append_unsynced(records).expect("append"));
        if log.config().flush == FlushPolicy::Batch {
            log.sync().expect("sync");
        }
        appended_bytes += batch * record_bytes(payload.len());
        if appended_bytes > LOG_BYTES_KEPT_MAX {
            elapsed += start.elapsed();
            log.purge(log.next_index() - 1).expect("purge");
            appended_bytes = 0;
            start = Instant::now();
        }
    }
    elapsed + start.elapsed()
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

/// Group commit and its floor, each pair measured back to back: the disk's latency drifts
/// with whatever else the machine does, and a ratio of two runs minutes apart measures that.
fn group_commit_and_floor(c: &mut Criterion) {
    for size in PAYLOAD_SIZES {
        for batch in GROUP_BATCHES {
            group_commit(c, size, batch);
            floor(c, size, batch);
        }
    }
}

fn group_commit(c: &mut Criterion, size: usize, batch: u64) {
    let mut group = c.benchmark_group("group_commit");
    let scratch = Scratch::new("batch");
    let mut log = open(&scratch, FlushPolicy::Batch);
    let payload = vec![7u8; size];
    group.throughput(Throughput::Elements(batch));
    group.bench_function(BenchmarkId::new(format!("{size}B"), batch), |b| {
        b.iter_custom(|iters| append_batches(&mut log, &payload, batch, iters))
    });
    group.finish();
}

/// The same bytes per batch with `write()` + `fdatasync()` (the call the log syncs with),
/// into files preallocated the way segments are (sparse `set_len`, same size), a new file
/// when one is full. As for the log, making a file is timed and removing one is not.
fn floor(c: &mut Criterion, size: usize, batch: u64) {
    let mut group = c.benchmark_group("floor");
    let scratch = Scratch::new("floor");
    let bytes = vec![7u8; (batch * record_bytes(size)) as usize];
    let mut file_no = 0u64;
    let mut new_file = |elapsed: &mut Duration| -> File {
        let _ = fs::remove_file(scratch.0.join(format!("{file_no}.dat")));
        file_no += 1;
        let start = Instant::now();
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(scratch.0.join(format!("{file_no}.dat")))
            .expect("floor file");
        file.set_len(SEGMENT_BYTES).expect("preallocate");
        *elapsed += start.elapsed();
        file
    };
    let mut untimed = Duration::ZERO;
    let mut file = new_file(&mut untimed);
    let mut written = 0;
    group.throughput(Throughput::Elements(batch));
    group.bench_function(BenchmarkId::new(format!("{size}B"), batch), |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                if written + bytes.len() as u64 > SEGMENT_BYTES {
                    file = new_file(&mut elapsed);
                    written = 0;
                }
                let start = Instant::now();
                file.write_all(&bytes).expect("write");
                file.sync_data().expect("fdatasync");
                elapsed += start.elapsed();
                written += bytes.len() as u64;
            }
            elapsed
        })
    });
    group.finish();
}

/// Group commit against its floor, one batch of each in turn (the order alternating), so
/// that both see the same disk at the same moment: on a disk shared with other tenants, whose
/// sync latency swings tenfold within a minute, this is the ratio to trust. Prints the median
/// of each and the median of the per-pair ratios; it is not a criterion measurement.
fn group_commit_vs_floor(_: &mut Criterion) {
    const PAIRS: usize = 300;
    println!("group_commit_vs_floor: median of {PAIRS} interleaved pairs");
    for size in PAYLOAD_SIZES {
        for batch in GROUP_BATCHES {
            let scratch = Scratch::new("pairs");
            let mut log = open(&scratch, FlushPolicy::Batch);
            let payload = vec![7u8; size];
            let bytes = vec![7u8; (batch * record_bytes(size)) as usize];
            let path = scratch.0.join("floor.dat");
            let mut file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(path)
                .expect("floor file");
            file.set_len(SEGMENT_BYTES).expect("preallocate");
            let mut floor_batch = || {
                let start = Instant::now();
                file.write_all(&bytes).expect("write");
                file.sync_data().expect("fdatasync");
                start.elapsed()
            };
            let (mut logs, mut floors, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            for pair in 0..PAIRS + 10 {
                let (l, f) = if pair % 2 == 0 {
                    let l = append_batches(&mut log, &payload, batch, 1);
                    (l, floor_batch())
                } else {
                    let f = floor_batch();
                    (append_batches(&mut log, &payload, batch, 1), f)
                };
                if pair >= 10 {
                    logs.push(l);
                    floors.push(f);
                    ratios.push(l.as_secs_f64() / f.as_secs_f64());
                }
            }
            let (l, f) = (median(&mut logs), median(&mut floors));
            ratios.sort_by(f64::total_cmp);
            println!(
                "  {size}B x {batch}: log {:.1} us, floor {:.1} us, ratio {:.2} (median of pair ratios {:.2})",
                l.as_secs_f64() * 1e6,
                f.as_secs_f64() * 1e6,
                l.as_secs_f64() / f.as_secs_f64(),
                ratios[ratios.len() / 2],
            );
        }
    }
}

fn median(durations: &mut [Duration]) -> Duration {
    durations.sort();
    durations[durations.len() / 2]
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
    targets = append_never, group_commit_and_floor, group_commit_vs_floor, read
}
criterion_main!(benches);
