//! Crash recovery, as property tests: append random batches, damage the files the way a crash
//! (or a bad disk) would, reopen, and expect exactly the longest intact prefix, with appends
//! continuing from it.

mod common;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::{check, small, Expected};
use exchange_log::{Error, FlushPolicy, Log, Position, RECORD_HEADER_BYTES};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Damage {
    /// Cut the file `segment` (a fraction of the segments) at a byte, drop later segments.
    Cut { segment: f64, at: f64 },
    /// Zero the file from a byte on (pages never written back), drop later segments.
    Zero { segment: f64, at: f64 },
    /// Flip bytes in the last few records.
    Flip { flips: Vec<(usize, f64, u8)> },
    /// Write the first part of one more record after the last.
    HalfRecord { len: usize, at: f64 },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0.0..1.0f64, 0.0..1.0f64).prop_map(|(segment, at)| Damage::Cut { segment, at }),
        (0.0..1.0f64, 0.0..1.0f64).prop_map(|(segment, at)| Damage::Zero { segment, at }),
        prop::collection::vec((0..4usize, 0.0..1.0f64, 1..=255u8), 1..4)
            .prop_map(|flips| Damage::Flip { flips }),
        (0..300usize, 0.0..1.0f64).prop_map(|(len, at)| Damage::HalfRecord { len, at }),
    ]
}

/// Batches of payload lengths; some records are larger than a quarter segment.
fn batches() -> impl Strategy<Value = Vec<Vec<usize>>> {
    let len = prop_oneof![4 => 0..200usize, 1 => 200..1500usize];
    prop::collection::vec(prop::collection::vec(len, 1..12), 1..8)
}

struct Written {
    records: Vec<Expected>,
    positions: Vec<Position>,
    segments: Vec<PathBuf>,
}

fn write(dir: &Path, first_index: u64, batches: &[Vec<usize>]) -> Written {
    let mut log = Log::open(dir, config(first_index)).expect("open a new log");
    let mut records = Vec::new();
    for (term, batch) in (1u64..).zip(batches) {
        let start = records.len();
        for &len in batch {
            records.push(Expected::new(term, first_index + records.len() as u64, len));
        }
        let appended = log
            .append_batch(records[start..].iter().map(Expected::record))
            .expect("append");
        assert_eq!(appended.last_index, records.last().map(|r| r.index));
    }
    let mut reader = log.reader();
    let positions: Vec<Position> = records
        .iter()
        .map(|r| reader.position(r.index).expect("position"))
        .collect();
    let mut segments: Vec<PathBuf> = positions.iter().map(|p| p.segment.clone()).collect();
    segments.dedup();
    Written {
        records,
        positions,
        segments,
    }
}

fn config(first_index: u64) -> exchange_log::Config {
    // Never: the damage below stands for what a crash leaves; syncing would only cost time.
    exchange_log::Config {
        first_index,
        ..small(FlushPolicy::Never)
    }
}

/// What reopening should give: the intact prefix, or the error naming a damaged middle file.
enum Outcome {
    Prefix(usize),
    Corrupt { path: PathBuf, offset: u64 },
}

/// Damage the files; return the expected outcome.
fn apply(damage: &Damage, w: &Written) -> Outcome {
    let pick = |fraction: f64, n: usize| ((fraction * n as f64) as usize).min(n - 1);
    match *damage {
        Damage::Cut { segment, at } | Damage::Zero { segment, at } => {
            let s = pick(segment, w.segments.len());
            for later in &w.segments[s + 1..] {
                fs::remove_file(later).expect("remove a later segment");
            }
            let path = &w.segments[s];
            // Cut anywhere from the segment header to a little past the last record.
            let used = w
                .positions
                .iter()
                .filter(|p| &p.segment == path)
                .map(|p| p.offset + p.bytes)
                .max()
                .unwrap_or(0)
                + RECORD_HEADER_BYTES as u64;
            let cut = (at * used as f64) as u64;
            let file = OpenOptions::new().write(true).open(path).expect("open");
            let zero = matches!(damage, Damage::Zero { .. });
            if zero {
                let len = file.metadata().expect("metadata").len();
                file.write_all_at(&vec![0; (len - cut) as usize], cut)
                    .expect("zero");
            } else {
                file.set_len(cut).expect("cut");
            }
            let intact = |(r, p): (&Expected, &Position)| {
                let before = w.segments.iter().position(|s| s == &p.segment) < Some(s);
                let end = p.offset + p.bytes;
                before
                    || (&p.segment == path
                        && (end <= cut
                            // Zeroing bytes that were zero anyway changes nothing.
                            || zero
                                && cut >= p.offset
                                && r.encode()[(cut - p.offset) as usize..]
                                    .iter()
                                    .all(|&b| b == 0)))
            };
            Outcome::Prefix(
                w.records
                    .iter()
                    .zip(&w.positions)
                    .take_while(|&x| intact(x))
                    .count(),
            )
        }
        Damage::Flip { ref flips } => {
            let n = w.records.len();
            let mut first_hit = n;
            for &(back, at, xor) in flips {
                let r = n - 1 - back.min(n - 1);
                let p = &w.positions[r];
                let offset = p.offset + ((at * p.bytes as f64) as u64).min(p.bytes - 1);
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&p.segment)
                    .expect("open");
                let mut byte = [0u8];
                file.read_exact_at(&mut byte, offset).expect("read");
                file.write_all_at(&[byte[0] ^ xor], offset).expect("flip");
                first_hit = first_hit.min(r);
            }
            let p = &w.positions[first_hit];
            if &p.segment == w.segments.last().expect("a segment") {
                Outcome::Prefix(first_hit)
            } else {
                Outcome::Corrupt {
                    path: p.segment.clone(),
                    offset: p.offset,
                }
            }
        }
        Damage::HalfRecord { len, at } => {
            let last = w.records.last().expect("a record");
            let p = w.positions.last().expect("a position");
            let next = Expected::new(last.term, last.index + 1, len);
            let bytes = next.encode();
            let written = 1 + ((at * (bytes.len() - 1) as f64) as usize).min(bytes.len() - 2);
            // A prefix whose missing bytes are all zero (an empty payload and the high bytes
            // of a small index) is the whole record, which reopening rightly keeps: leave
            // out at least the last nonzero byte, so that the record stays torn.
            let last_nonzero = bytes.iter().rposition(|&b| b != 0).unwrap_or(1);
            let written = written.min(last_nonzero).max(1);
            let offset = (p.offset + p.bytes).next_multiple_of(8);
            let file = OpenOptions::new()
                .write(true)
                .open(&p.segment)
                .expect("open");
            let file_len = file.metadata().expect("metadata").len();
            if offset + bytes.len() as u64 <= file_len {
                file.write_all_at(&bytes[..written], offset)
                    .expect("write half");
            }
            Outcome::Prefix(w.records.len())
        }
    }
}

fn crash_case(first_index: u64, batches: &[Vec<usize>], damage: &Damage) {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = write(dir.path(), first_index, batches);
    let outcome = apply(damage, &w);
    let opened = Log::open(dir.path(), config(first_index));
    let intact = match outcome {
        Outcome::Corrupt { path, offset } => match opened {
            Err(Error::Corrupt {
                path: p, offset: o, ..
            }) => {
                assert_eq!((p, o), (path, offset));
                return;
            }
            other => panic!("expected a corrupt-segment error, got {other:?}"),
        },
        Outcome::Prefix(n) => n,
    };
    let mut log = opened.expect("reopen after a torn tail");
    let mut expected = w.records[..intact].to_vec();
    check(&mut log, &expected);
    assert_eq!(log.next_index(), first_index + intact as u64);

    // Appending continues from the prefix, and survives another reopen.
    let term = expected.last().map_or(1, |r| r.term) + 1;
    let more: Vec<Expected> = (0..5)
        .map(|i| Expected::new(term, log.next_index() + i, 100 * i as usize))
        .collect();
    log.append_batch(more.iter().map(Expected::record))
        .expect("append after recovery");
    expected.extend(more);
    check(&mut log, &expected);
    drop(log);
    let mut log = Log::open(dir.path(), config(first_index)).expect("reopen");
    check(&mut log, &expected);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn reopening_yields_the_longest_intact_prefix(
        first_index in prop_oneof![Just(0u64), Just(1), 1_000..1_000_000u64],
        batches in batches(),
        damage in damage(),
    ) {
        crash_case(first_index, &batches, &damage);
    }

    /// Whatever the files hold, opening returns a log or an error; it never panics.
    #[test]
    fn opening_never_panics_on_garbage(
        files in prop::collection::vec(
            (0..4u64, prop::collection::vec(any::<u8>(), 0..600), any::<bool>()), 1..4),
        meta in prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        // A real log first, so that headers are valid and the garbage lands in records.
        let w = write(dir.path(), 1, &[vec![10, 20, 30], vec![400, 5]]);
        for (k, bytes, keep_header) in files {
            let path = w.segments.get(k as usize).cloned()
                .unwrap_or_else(|| dir.path().join(format!("{:020}.seg", 100 + k)));
            let offset = if keep_header { 32 } else { 0 };
            let file = OpenOptions::new().create(true).truncate(!keep_header).write(true)
                .open(&path).expect("open");
            file.write_all_at(&bytes, offset).expect("write garbage");
        }
        if let Some(meta) = meta {
            fs::write(dir.path().join("first-index.meta"), meta).expect("write meta");
        }
        if let Ok(mut log) = Log::open(dir.path(), config(1)) {
            let _ = common::read_all(&mut log);
            let next = log.next_index();
            let record = Expected::new(9, next, 50);
            log.append(record.record()).expect("append after open");
        }
    }
}
