//! One writer appending while readers follow the watermark on other threads.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::payload;
use exchange_log::{Config, FlushPolicy, Log, LogReader, Record};

const RECORDS: u64 = 500_000;
/// Small segments, so that readers cross hundreds of segment switches.
const SEGMENT_BYTES: u64 = 64 << 10;
const DEADLINE: Duration = Duration::from_secs(60);

fn len_of(index: u64) -> usize {
    (index * 7919 % 300) as usize
}

fn verify(record: Record<'_>, index: u64) {
    assert_eq!(record.index, index);
    assert_eq!(record.term, index / 1000 + 1);
    assert_eq!(
        record.payload,
        &payload(index, len_of(index))[..],
        "index {index}"
    );
    assert_eq!(record.payload.as_ptr() as usize % 8, 0);
}

/// Read every record once, in order, by index or by range, as the watermark moves.
fn follow(mut reader: LogReader, by_range: bool, failed: &AtomicBool) -> u64 {
    let start = Instant::now();
    let mut next = 1;
    while next <= RECORDS {
        assert!(start.elapsed() < DEADLINE, "reader stuck at {next}");
        if failed.load(Ordering::Relaxed) {
            break;
        }
        let end = reader.next_index();
        if end == next {
            thread::yield_now();
            continue;
        }
        if by_range {
            for (record, index) in reader.range(next..end).expect("range").zip(next..) {
                verify(record.expect("record"), index);
            }
        } else {
            for index in next..end {
                verify(reader.get(index).expect("record"), index);
            }
        }
        next = end;
    }
    next - 1
}

#[test]
fn readers_follow_the_writer_and_see_every_record_once_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        segment_bytes: SEGMENT_BYTES,
        flush: FlushPolicy::Never,
        first_index: 1,
    };
    let mut log = Log::open(dir.path(), config).expect("open");
    let failed = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = [false, true, false]
        .into_iter()
        .map(|by_range| {
            let reader = log.reader();
            let failed = Arc::clone(&failed);
            thread::spawn(move || {
                let done = follow(reader, by_range, &failed);
                failed.fetch_or(done != RECORDS, Ordering::Relaxed);
                done
            })
        })
        .collect();

    let mut index = 1;
    while index <= RECORDS {
        // From one record to about 12 KiB: both short writes (copied into the map) and
        // long ones (`pwrite`) must be whole when readers see them.
        let batch = (index % 67 + 1).min(RECORDS - index + 1);
        let owned: Vec<(u64, Vec<u8>)> = (index..index + batch)
            .map(|i| (i, payload(i, len_of(i))))
            .collect();
        log.append_batch(owned.iter().map(|(i, p)| Record {
            term: i / 1000 + 1,
            index: *i,
            payload: p,
        }))
        .expect("append");
        index += batch;
    }
    for reader in readers {
        assert_eq!(reader.join().expect("reader thread"), RECORDS);
    }
    assert!(!failed.load(Ordering::Relaxed));
}
