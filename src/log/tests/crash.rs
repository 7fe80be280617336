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
    /// Zero the file from a byte on, and leave every later segment with no record: a crash
    /// during a batch that crossed into them.
    Rollover { segment: f64, at: f64, later: usize },
    /// Flip bytes in the last few records.
    Flip { flips: Vec<(usize, f64, u8)> },
    /// Write the first part of one more record after the last.
    HalfRecord { len: usize, at: f64 },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0.0..1.0f64, 0.0..1.0f64).prop_map(|(segment, at)| Damage::Cut { segment, at }),
        (0.0..1.0f64, 0.0..1.0f64).prop_map(|(segment, at)| Damage::Zero { segment, at }),
        (0.0..1.0f64, 0.0..1.0f64, 0..EMPTIED.len())
            .prop_map(|(segment, at, later)| { Damage::Rollover { segment, at, later } }),
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
        Damage::Cut { segment, at }
        | Damage::Zero { segment, at }
        | Damage::Rollover { segment, at, .. } => {
            let s = pick(segment, w.segments.len());
            for (i, later) in w.segments[s + 1..].iter().enumerate() {
                match *damage {
                    Damage::Rollover { later: how, .. } => {
                        empty_out(later, EMPTIED[(how + i) % EMPTIED.len()]);
                    }
                    _ => fs::remove_file(later).expect("remove a later segment"),
                }
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
            let zero = matches!(damage, Damage::Zero { .. } | Damage::Rollover { .. });
            if zero {
                // `used` may run past the end of a full segment.
                let len = file.metadata().expect("metadata").len();
                file.write_all_at(&vec![0; len.saturating_sub(cut) as usize], cut)
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
            // Later segments whose records are all bad hold no record: they are a torn tail
            // with the first hit's segment. One intact record in them makes the hit an error.
            let p = &w.positions[first_hit];
            let hit: Vec<usize> = flips
                .iter()
                .map(|&(back, _, _)| n - 1 - back.min(n - 1))
                .collect();
            let later_intact =
                (first_hit..n).any(|r| w.positions[r].segment != p.segment && !hit.contains(&r));
            if !later_intact {
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

/// What a crash during a segment switch may leave of a segment made in the batch that was
/// torn: never a record.
#[derive(Clone, Copy, Debug)]
enum Emptied {
    /// A valid header, then zeros: no record written back.
    HeaderOnly,
    /// Zeros throughout, header included (the rename was written back, the data was not).
    Zeros,
    /// Cut to this many bytes (the file's size was not written back, or only partly).
    Short(u64),
    /// A valid header, then the first record torn by the crash (its length and checksum
    /// written, the rest not), and zeros after it.
    TornFirst,
}

const EMPTIED: [Emptied; 8] = [
    Emptied::HeaderOnly,
    Emptied::Zeros,
    Emptied::Short(0),
    Emptied::Short(5),
    Emptied::Short(31),
    Emptied::Short(32),
    Emptied::Short(40),
    Emptied::TornFirst,
];

fn empty_out(path: &Path, how: Emptied) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let len = file.metadata().expect("metadata").len();
    match how {
        Emptied::HeaderOnly => file.write_all_at(&vec![0; len as usize - 32], 32),
        Emptied::Zeros => file.write_all_at(&vec![0; len as usize], 0),
        Emptied::Short(to) => file.set_len(to),
        Emptied::TornFirst => file.write_all_at(&vec![0; len as usize - 40], 40),
    }
    .expect("empty out a segment");
}

/// Zero the second half of record `p` (its header stays, so its checksum fails).
fn tear(p: &Position) {
    let file = OpenOptions::new()
        .write(true)
        .open(&p.segment)
        .expect("open");
    let from = p.offset + p.bytes / 2;
    file.write_all_at(&vec![0; (p.offset + p.bytes - from) as usize], from)
        .expect("tear");
}

/// Flip a byte in the header of record `p`.
fn flip(p: &Position) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p.segment)
        .expect("open");
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, p.offset + 8).expect("read");
    file.write_all_at(&[!byte[0]], p.offset + 8).expect("flip");
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    files
}

/// Records of 500 bytes: seven fill a 4 KiB segment. Appends batches of `sizes` records with
/// `flush` and returns them with their positions; asserts that the last batch starts in one
/// segment and ends `spans` segments later.
fn rollover(
    dir: &Path,
    flush: FlushPolicy,
    sizes: &[u64],
    spans: usize,
) -> (Vec<Expected>, Vec<Position>) {
    let config = small(flush);
    let mut log = Log::open(dir, config).expect("open");
    let mut records = Vec::new();
    for (term, &n) in (1u64..).zip(sizes) {
        let from = log.next_index();
        let batch: Vec<Expected> = (from..from + n)
            .map(|i| Expected::new(term, i, 500))
            .collect();
        log.append_batch(batch.iter().map(Expected::record))
            .expect("append");
        // What the node does under Never: sync after each batch, then report it durable.
        log.sync().expect("sync");
        records.extend(batch);
    }
    let mut reader = log.reader();
    let positions: Vec<Position> = records
        .iter()
        .map(|r| reader.position(r.index).expect("position"))
        .collect();
    let last_batch = sizes.last().copied().unwrap_or(0) as usize;
    let first_of_batch = &positions[positions.len() - last_batch].segment;
    let files = segment_files(dir);
    let at = files
        .iter()
        .position(|f| f == first_of_batch)
        .expect("file");
    assert_eq!(
        files.len() - 1 - at,
        spans,
        "the last batch spans the expected segment switches"
    );
    (records, positions)
}

/// Reopen, expect exactly `intact`, append more, reopen again.
fn reopen_and_continue(dir: &Path, flush: FlushPolicy, intact: &[Expected]) {
    let mut log = Log::open(dir, small(flush)).expect("reopen after a torn segment switch");
    let mut expected = intact.to_vec();
    check(&mut log, &expected);
    assert_eq!(log.next_index(), 1 + intact.len() as u64);
    let term = expected.last().map_or(1, |r| r.term) + 1;
    let more: Vec<Expected> = (0..10)
        .map(|i| Expected::new(term, log.next_index() + i, 500))
        .collect();
    log.append_batch(more.iter().map(Expected::record))
        .expect("append after recovery");
    log.sync().expect("sync");
    expected.extend(more);
    check(&mut log, &expected);
    drop(log);
    let mut log = Log::open(dir, small(flush)).expect("reopen");
    check(&mut log, &expected);
}

/// A crash during a batch that crossed into a new segment: the old segment's unsynced tail is
/// torn, and the new segment holds no record. The torn region is the tail, across the switch.
#[test]
fn a_crash_during_a_segment_switch_leaves_the_intact_prefix() {
    for flush in [FlushPolicy::Batch, FlushPolicy::Never] {
        for how in EMPTIED {
            let dir = tempfile::tempdir().expect("tempdir");
            // Records 1..=4, then 5..=9: 5, 6, 7 end the first segment, 8 and 9 start the next.
            let (records, positions) = rollover(dir.path(), flush, &[4, 5], 1);
            let new = positions[7].segment.clone();
            assert_ne!(positions[6].segment, new, "record 8 starts a new segment");
            tear(&positions[6]);
            empty_out(&new, how);
            reopen_and_continue(dir.path(), flush, &records[..6]);
        }
    }
}

/// The same crash when the previous segment's tail was written back whole: nothing is lost.
#[test]
fn a_crash_during_a_segment_switch_with_the_old_tail_intact() {
    for how in EMPTIED {
        let dir = tempfile::tempdir().expect("tempdir");
        let (records, positions) = rollover(dir.path(), FlushPolicy::Batch, &[4, 5], 1);
        empty_out(&positions[7].segment, how);
        reopen_and_continue(dir.path(), FlushPolicy::Batch, &records[..7]);
    }
}

/// A batch that crossed two segment switches: both new segments hold no record.
#[test]
fn a_torn_region_across_several_segments_is_the_tail() {
    for (a, b) in [
        (Emptied::HeaderOnly, Emptied::HeaderOnly),
        (Emptied::TornFirst, Emptied::Zeros),
        (Emptied::HeaderOnly, Emptied::Short(0)),
        (Emptied::Zeros, Emptied::TornFirst),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        // Records 1..=4, then 5..=18: 5..=7 end segment 1, 8..=14 fill the next, 15.. start a third.
        let (records, positions) = rollover(dir.path(), FlushPolicy::Batch, &[4, 14], 2);
        tear(&positions[5]);
        empty_out(&positions[7].segment, a);
        empty_out(&positions[14].segment, b);
        drop(Log::open(dir.path(), small(FlushPolicy::Batch)).expect("reopen"));
        assert_eq!(
            segment_files(dir.path()),
            [positions[0].segment.clone()],
            "the emptied segments are removed"
        );
        reopen_and_continue(dir.path(), FlushPolicy::Batch, &records[..5]);
    }
}

/// A bad record followed by a segment that does hold an intact record is damage in the middle
/// of the log, reported with its file and byte, not skipped: even when that record lies behind
/// a bad one, and even when later segments hold none.
#[test]
fn a_torn_segment_before_intact_records_is_still_an_error() {
    for (flip_second, third) in [
        (false, None),
        (false, Some(Emptied::HeaderOnly)),
        (true, None),
        (true, Some(Emptied::TornFirst)),
        (true, Some(Emptied::Zeros)),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        // Records 1..=4, then 5..=18 over three segments: 8..=14 in the second, 15.. the third.
        let (_, positions) = rollover(dir.path(), FlushPolicy::Batch, &[4, 14], 2);
        tear(&positions[6]);
        // The second segment keeps its records, or loses its first (a flipped byte in its
        // header) and keeps the rest.
        if flip_second {
            flip(&positions[7]);
        }
        if let Some(how) = third {
            empty_out(&positions[14].segment, how);
        }
        let bad = &positions[6];
        let files = segment_files(dir.path());
        match Log::open(dir.path(), small(FlushPolicy::Batch)) {
            Err(Error::Corrupt { path, offset, .. }) => {
                assert_eq!((path, offset), (bad.segment.clone(), bad.offset));
            }
            other => panic!("expected a corrupt-segment error, got {other:?}"),
        }
        assert_eq!(segment_files(dir.path()), files, "an error removes nothing");
    }
}

/// A segment whose header and first records were not written back, while a later page of its
/// records was, is removed like any segment torn while being made; but its intact records end
/// the torn region, so the segment before it must be intact.
#[test]
fn a_segment_with_a_lost_header_but_later_records_needs_an_intact_one_before() {
    for torn_before in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        // Records 1..=4, then 5..=18: 8..=14 in the second segment, 15.. in the third.
        let (records, positions) = rollover(dir.path(), FlushPolicy::Never, &[4, 14], 2);
        // The third segment's header and first record are zeros; its second record is intact.
        let third = &positions[14];
        let file = OpenOptions::new()
            .write(true)
            .open(&third.segment)
            .expect("open");
        file.write_all_at(&vec![0; (positions[15].offset) as usize], 0)
            .expect("zero the front");
        if torn_before {
            tear(&positions[13]);
            let files = segment_files(dir.path());
            match Log::open(dir.path(), small(FlushPolicy::Never)) {
                Err(Error::Corrupt { path, offset, .. }) => {
                    let bad = &positions[13];
                    assert_eq!((path, offset), (bad.segment.clone(), bad.offset));
                }
                other => panic!("expected a corrupt-segment error, got {other:?}"),
            }
            assert_eq!(segment_files(dir.path()), files, "an error removes nothing");
        } else {
            reopen_and_continue(dir.path(), FlushPolicy::Never, &records[..14]);
        }
    }
}
