//! Append, read, truncate, purge and reopen, across segment boundaries; the meta file.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;

use common::{check, small, Expected};
use exchange_log::{Config, Damage, Error, FlushPolicy, Log, MetaFile, Record};
use proptest::prelude::*;

/// Records 1..=n of term 1, sized so that about five fit a 4 KiB segment.
fn records(from: u64, n: u64, term: u64) -> Vec<Expected> {
    (from..from + n)
        .map(|i| Expected::new(term, i, 500 + (i as usize * 37) % 400))
        .collect()
}

fn append(log: &mut Log, records: &[Expected]) {
    log.append_batch(records.iter().map(Expected::record))
        .expect("append");
}

fn segment_count(log: &Log) -> usize {
    fs::read_dir(log.dir())
        .expect("read dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        })
        .count()
}

#[test]
fn appends_read_back_across_segments_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small(FlushPolicy::Batch)).expect("open");
    assert_eq!(
        (log.first_index(), log.next_index(), log.last_index()),
        (1, 1, None)
    );
    let expected = records(1, 40, 1);
    for chunk in expected.chunks(7) {
        let appended = log
            .append_batch(chunk.iter().map(Expected::record))
            .expect("append");
        assert_eq!(appended.last_index, chunk.last().map(|r| r.index));
        assert!(appended.durable);
    }
    assert!(segment_count(&log) > 5, "records cross many segments");
    check(&mut log, &expected);
    drop(log);
    let mut log = Log::open(dir.path(), small(FlushPolicy::Batch)).expect("reopen");
    check(&mut log, &expected);
}

/// Batches of every size the writer treats differently: a few bytes (copied into the map),
/// many kilobytes (one `pwrite`), more than its staging buffer (several), and records larger
/// than that buffer (written on their own), under every flush policy, across segments.
#[test]
fn large_batches_and_large_records_read_back_and_reopen() {
    for flush in [FlushPolicy::Never, FlushPolicy::Batch, FlushPolicy::Always] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config {
            segment_bytes: 1 << 20,
            flush,
            first_index: 1,
        };
        let mut log = Log::open(dir.path(), config).expect("open");
        let mut expected = Vec::new();
        let shapes: [(u64, usize); 7] = [
            (1, 10),
            (40, 100),
            (3000, 90),
            (1, 300 << 10),
            (3, 200 << 10),
            (2, 900 << 10),
            (500, 7),
        ];
        for (round, &(n, len)) in shapes.iter().cycle().take(14).enumerate() {
            let from = log.next_index();
            let batch: Vec<Expected> = (from..from + n)
                .map(|i| Expected::new(round as u64 + 1, i, len + (i as usize % 9)))
                .collect();
            let appended = log
                .append_batch(batch.iter().map(Expected::record))
                .expect("append");
            assert_eq!(appended.durable, flush != FlushPolicy::Never);
            expected.extend(batch);
        }
        assert!(segment_count(&log) > 5, "records cross many segments");
        check(&mut log, &expected);
        drop(log);
        let mut log = Log::open(dir.path(), config).expect("reopen");
        check(&mut log, &expected);
    }
}

#[test]
fn bad_appends_are_errors_not_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small(FlushPolicy::Never)).expect("open");
    let gap = Expected::new(1, 2, 10);
    assert!(matches!(
        log.append(gap.record()),
        Err(Error::NonContiguous {
            expected: 1,
            got: 2
        })
    ));
    let max = log.payload_bytes_max();
    let too_big = vec![1u8; max + 1];
    let record = |index, payload| Record {
        term: 1,
        index,
        payload,
    };
    assert!(matches!(
        log.append(record(1, &too_big)),
        Err(Error::RecordTooLarge { .. })
    ));
    // The largest record fills a segment exactly; the next one starts another.
    let appended = log.append(record(1, &too_big[..max])).expect("max fits");
    assert!(!appended.durable, "Never leaves syncing to the caller");
    log.append(record(2, &[])).expect("empty payload");
    log.sync().expect("sync");
    assert_eq!(log.durable_next_index(), 3);
    assert_eq!(log.get(1).expect("read").payload.len(), max);
    assert_eq!(log.get(2).expect("read").payload, &[] as &[u8]);
    assert!(matches!(
        log.get(3),
        Err(Error::IndexOutOfRange {
            index: 3,
            first: 1,
            next: 3
        })
    ));
    // A batch that fails halfway keeps what came before the failure.
    let batch = [record(3, b"ok"), record(5, b"gap")];
    assert!(log.append_batch(batch).is_err());
    assert_eq!(log.next_index(), 4);
    let empty = log.append_batch([]).expect("empty batch");
    assert_eq!(empty.last_index, Some(3));
    assert!(matches!(
        Log::open(
            dir.path(),
            Config {
                segment_bytes: 5000,
                ..Config::default()
            }
        ),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn truncate_within_and_across_segments_then_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small(FlushPolicy::Batch);
    let mut log = Log::open(dir.path(), config).expect("open");
    let mut expected = records(1, 30, 1);
    append(&mut log, &expected);

    // Inside a segment, then at whatever lands on a segment's first record.
    for cut in [27u64, 20, 11] {
        log.truncate(cut).expect("truncate");
        expected.truncate(cut as usize - 1);
        check(&mut log, &expected);
        drop(log);
        log = Log::open(dir.path(), config).expect("reopen");
        check(&mut log, &expected);
    }
    // Rewrite the suffix with a new term, truncate the rewrite, twice at the same index:
    // records hidden by the first truncate must not come back.
    for term in [2, 3] {
        let rewrite = records(11, 8, term);
        append(&mut log, &rewrite);
        log.truncate(11).expect("truncate the rewrite");
        check(&mut log, &expected);
        drop(log);
        log = Log::open(dir.path(), config).expect("reopen");
        check(&mut log, &expected);
    }
    let tail = records(11, 6, 4);
    append(&mut log, &tail);
    expected.extend(tail);
    log.truncate(100).expect("past the end: nothing to do");
    check(&mut log, &expected);
    drop(log);
    let mut log = Log::open(dir.path(), config).expect("reopen");
    check(&mut log, &expected);
    log.truncate(1).expect("truncate everything");
    check(&mut log, &[]);
    assert_eq!(log.next_index(), 1);
    drop(log);
    let mut log = Log::open(dir.path(), config).expect("reopen");
    check(&mut log, &[]);
    append(&mut log, &records(1, 3, 5));
}

#[test]
fn truncate_at_a_segment_start_after_reopen_keeps_the_torn_tail_hidden() {
    // Recovery leaves the old last segment sealed; a truncate exactly at the segment that
    // followed it makes it last again.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small(FlushPolicy::Batch);
    let mut log = Log::open(dir.path(), config).expect("open");
    let mut expected = records(1, 3, 1);
    append(&mut log, &expected);
    drop(log);
    let mut log = Log::open(dir.path(), config).expect("reopen");
    append(&mut log, &records(4, 3, 2));
    log.truncate(4).expect("truncate the new segment whole");
    check(&mut log, &expected);
    drop(log);
    let mut log = Log::open(dir.path(), config).expect("reopen");
    check(&mut log, &expected);
    let tail = records(4, 2, 3);
    append(&mut log, &tail);
    expected.extend(tail);
    check(&mut log, &expected);
}

#[test]
fn purge_removes_whole_segments_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small(FlushPolicy::Batch);
    let mut log = Log::open(dir.path(), config).expect("open");
    let mut expected = records(1, 30, 1);
    append(&mut log, &expected);
    let before = segment_count(&log);

    let mut reader = log.reader();
    log.purge(12).expect("purge");
    expected.drain(..12);
    assert_eq!(log.first_index(), 13);
    assert!(segment_count(&log) < before, "whole segments removed");
    check(&mut log, &expected);
    assert!(matches!(
        reader.get(12),
        Err(Error::IndexOutOfRange {
            index: 12,
            first: 13,
            ..
        })
    ));
    assert!(reader.get(13).is_ok());
    drop(log);
    let mut log = Log::open(dir.path(), config).expect("reopen");
    assert_eq!(log.first_index(), 13);
    check(&mut log, &expected);

    // Purge, then truncate, then purge again, reopening after each.
    log.truncate(25).expect("truncate");
    expected.truncate(25 - 13);
    log.purge(20).expect("purge");
    expected.drain(..20 - 12);
    check(&mut log, &expected);
    drop(log);
    let mut log = Log::open(dir.path(), config).expect("reopen");
    check(&mut log, &expected);
    assert!(matches!(
        log.truncate(5),
        Err(Error::IndexOutOfRange { index: 5, .. })
    ));

    // Past the end (a snapshot ahead of the log): the log is empty and continues after it.
    log.purge(99).expect("purge past the end");
    assert_eq!((log.first_index(), log.next_index()), (100, 100));
    assert_eq!(segment_count(&log), 0);
    drop(log);
    let mut log = Log::open(dir.path(), config).expect("reopen");
    assert_eq!((log.first_index(), log.next_index()), (100, 100));
    let tail = records(100, 12, 2);
    append(&mut log, &tail);
    check(&mut log, &tail);
    drop(log);
    let mut log = Log::open(dir.path(), config).expect("reopen");
    check(&mut log, &tail);
}

#[test]
fn a_damaged_middle_segment_is_an_error_naming_file_and_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small(FlushPolicy::Batch)).expect("open");
    append(&mut log, &records(1, 20, 1));
    let position = log.reader().position(3).expect("position");
    drop(log);
    let file = fs::OpenOptions::new()
        .write(true)
        .open(&position.segment)
        .expect("open segment");
    file.write_all_at(b"X", position.offset + 30).expect("flip");
    match Log::open(dir.path(), small(FlushPolicy::Batch)) {
        Err(Error::Corrupt {
            path,
            offset,
            damage: Damage::BadChecksum,
        }) => {
            assert_eq!((path, offset), (position.segment, position.offset));
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    // A missing middle segment is a gap, also reported.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small(FlushPolicy::Batch)).expect("open");
    append(&mut log, &records(1, 20, 1));
    let middle = log.reader().position(10).expect("position").segment;
    drop(log);
    fs::remove_file(&middle).expect("remove");
    assert!(matches!(
        Log::open(dir.path(), small(FlushPolicy::Batch)),
        Err(Error::Corrupt {
            damage: Damage::MissingRecords { .. },
            ..
        })
    ));
}

#[test]
fn meta_file_keeps_the_last_complete_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vote = MetaFile::new(dir.path().join("vote"));
    assert_eq!(vote.read().expect("read"), None);
    vote.write(b"term 3, voted for 2").expect("write");
    assert_eq!(
        vote.read().expect("read").as_deref(),
        Some(&b"term 3, voted for 2"[..])
    );
    vote.write(b"term 4").expect("overwrite");
    assert_eq!(vote.read().expect("read").as_deref(), Some(&b"term 4"[..]));

    // A crash mid-write leaves a torn tmp file: ignored, and replaced by the next write.
    let tmp = dir.path().join("vote.tmp");
    fs::write(&tmp, b"EXMF\x05\0\0\0garb").expect("torn tmp");
    assert_eq!(vote.read().expect("read").as_deref(), Some(&b"term 4"[..]));
    vote.write(b"term 5").expect("write over a torn tmp");
    assert_eq!(vote.read().expect("read").as_deref(), Some(&b"term 5"[..]));
    assert!(!tmp.exists());

    // A torn tmp and no value yet: absent.
    let fresh = MetaFile::new(dir.path().join("fresh"));
    fs::write(dir.path().join("fresh.tmp"), b"EXM").expect("torn tmp");
    assert_eq!(fresh.read().expect("read"), None);

    // The file itself damaged (not a crash: a bad disk): an error, not a guess.
    let mut bytes = fs::read(vote.path()).expect("read raw");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(vote.path(), &bytes).expect("damage");
    assert!(matches!(
        vote.read(),
        Err(Error::Corrupt {
            damage: Damage::BadChecksum,
            ..
        })
    ));
    fs::write(vote.path(), b"EX").expect("short");
    assert!(matches!(
        vote.read(),
        Err(Error::Corrupt {
            damage: Damage::Short,
            ..
        })
    ));
}

/// An operation of the model test.
#[derive(Clone, Debug)]
enum Op {
    Append(Vec<usize>),
    Truncate(f64),
    Purge(f64),
    Sync,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(0..1200usize, 1..10).prop_map(Op::Append),
        2 => (0.0..1.1f64).prop_map(Op::Truncate),
        1 => (0.0..1.1f64).prop_map(Op::Purge),
        1 => Just(Op::Sync),
        2 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Any sequence of operations leaves the log equal to a Vec doing the same.
    #[test]
    fn operations_match_a_model(ops in prop::collection::vec(op(), 1..25)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = small(FlushPolicy::Never);
        let mut log = Log::open(dir.path(), config).expect("open");
        let mut model: Vec<Expected> = Vec::new();
        let mut first = 1u64;
        let mut term = 1;
        for op in ops {
            let next = first + model.len() as u64;
            match op {
                Op::Append(lens) => {
                    term += 1;
                    let batch: Vec<Expected> = (next..).zip(lens)
                        .map(|(i, len)| Expected::new(term, i, len)).collect();
                    append(&mut log, &batch);
                    model.extend(batch);
                }
                Op::Truncate(at) => {
                    let at = first + (at * model.len() as f64) as u64;
                    log.truncate(at).expect("truncate");
                    model.truncate(at.saturating_sub(first) as usize);
                }
                Op::Purge(upto) => {
                    let upto = first + (upto * model.len() as f64) as u64;
                    if upto > first {
                        log.purge(upto - 1).expect("purge");
                        model.drain(..((upto - first) as usize).min(model.len()));
                        first = upto;
                    }
                }
                Op::Sync => log.sync().expect("sync"),
                Op::Reopen => {
                    drop(log);
                    log = Log::open(dir.path(), config).expect("reopen");
                }
            }
            prop_assert_eq!(log.first_index(), first);
            check(&mut log, &model);
        }
    }
}

/// The node's log store hands the leader's syncs to a thread of their own and goes on
/// appending: jobs
/// made across segment boundaries, merged and run on another thread, make every record they
/// cover durable, and a reopened log holds them all.
#[test]
fn syncs_handed_to_another_thread_make_their_records_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small(FlushPolicy::Batch)).expect("open");
    let first = records(1, 3, 1);
    log.append_unsynced(first.iter().map(Expected::record))
        .expect("append");
    let mut job = log.sync_later();
    assert_eq!(job.next_index(), 4);
    assert!(
        log.durable_next_index() < 4,
        "not durable before the job runs"
    );
    // More records while the job waits, across several segments (about five fit one).
    let second = records(4, 14, 1);
    log.append_unsynced(second.iter().map(Expected::record))
        .expect("append");
    job.absorb(log.sync_later());
    assert_eq!(job.next_index(), 18);
    std::thread::spawn(move || job.run())
        .join()
        .expect("sync thread")
        .expect("sync");
    assert_eq!(log.durable_next_index(), 18);
    let empty = log.sync_later();
    assert_eq!(empty.next_index(), 18);
    empty.run().expect("an empty job");
    drop(log);
    let mut log = Log::open(dir.path(), small(FlushPolicy::Batch)).expect("reopen");
    let all: Vec<Expected> = first.into_iter().chain(second).collect();
    check(&mut log, &all);
}

/// The log store's way to group-commit: the records are readable at once and durable only
/// after the one `sync` that follows.
#[test]
fn unsynced_appends_are_readable_then_durable_after_one_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small(FlushPolicy::Batch)).expect("open");
    let batch = records(1, 12, 1);
    let appended = log
        .append_unsynced(batch.iter().map(Expected::record))
        .expect("append");
    assert!(!appended.durable, "nothing synced yet");
    assert_eq!(
        log.reader().last_index(),
        Some(12),
        "readers see them at once"
    );
    assert!(log.durable_next_index() < 13);
    log.sync().expect("sync");
    assert_eq!(log.durable_next_index(), 13);
    let appended = log
        .append_batch(records(13, 3, 1).iter().map(Expected::record))
        .expect("append");
    assert!(appended.durable, "append_batch syncs under Batch itself");
}

#[test]
fn flush_policies_read_as_their_names() {
    for policy in [FlushPolicy::Always, FlushPolicy::Batch, FlushPolicy::Never] {
        assert_eq!(policy.name().parse::<FlushPolicy>(), Ok(policy));
        assert_eq!(policy.to_string(), policy.name());
    }
    assert!("sometimes".parse::<FlushPolicy>().is_err());
}

#[test]
fn segment_blocks_are_allocated_ahead_of_the_records() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        segment_bytes: 8 << 20,
        flush: FlushPolicy::Batch,
        first_index: 1,
    };
    let mut log = Log::open(dir.path(), config).expect("open");
    log.append_unsynced(records(1, 3, 1).iter().map(Expected::record))
        .expect("append");
    log.sync().expect("sync");
    let segment = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").path())
        .find(|p| p.metadata().is_ok_and(|m| m.len() == 8 << 20))
        .expect("the segment file");
    let allocated = segment.metadata().expect("stat").blocks() * 512;
    // A hole costs a journal commit at every sync that fills it; blocks written ahead do not.
    assert!(
        allocated >= 1 << 20,
        "3 small records, {allocated} bytes allocated: the next MiB should be"
    );
    assert!(allocated < 8 << 20, "not the whole segment at once");
    assert_eq!(common::read_all(&mut log), records(1, 3, 1));
}
