//! Helpers shared by the log's integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use exchange_log::{Config, FlushPolicy, Log, Record};

/// Small segments, so that a few records cross a segment boundary.
pub const SMALL_SEGMENT_BYTES: u64 = 4096;

pub fn small(flush: FlushPolicy) -> Config {
    Config {
        segment_bytes: SMALL_SEGMENT_BYTES,
        flush,
        first_index: 1,
    }
}

/// A payload that names its record: never all zeros, different for every (index, len).
pub fn payload(index: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (index.wrapping_mul(31).wrapping_add(i as u64) % 255) as u8 + 1)
        .collect()
}

/// What a record should read back as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub term: u64,
    pub index: u64,
    pub payload: Vec<u8>,
}

impl Expected {
    pub fn new(term: u64, index: u64, len: usize) -> Expected {
        Expected {
            term,
            index,
            payload: payload(index, len),
        }
    }

    pub fn record(&self) -> Record<'_> {
        Record {
            term: self.term,
            index: self.index,
            payload: &self.payload,
        }
    }

    /// The record's bytes as the format documents them (an independent encoder).
    pub fn encode(&self) -> Vec<u8> {
        let len = self.payload.len() as u32;
        let mut covered = Vec::new();
        covered.extend_from_slice(&len.to_le_bytes());
        covered.extend_from_slice(&self.term.to_le_bytes());
        covered.extend_from_slice(&self.index.to_le_bytes());
        covered.extend_from_slice(&self.payload);
        let crc = crc32c::crc32c(&covered);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(&covered[4..]);
        bytes
    }
}

/// Everything readable from the log, in order.
pub fn read_all(log: &mut Log) -> Vec<Expected> {
    let range = log.first_index()..log.next_index();
    log.range(range)
        .expect("range within the log")
        .map(|r| {
            let r = r.expect("record readable");
            assert_eq!(r.payload.as_ptr() as usize % 8, 0, "payload 8-byte aligned");
            Expected {
                term: r.term,
                index: r.index,
                payload: r.payload.to_vec(),
            }
        })
        .collect()
}

/// Check that the log holds exactly `expected`, reading by range and one by one.
pub fn check(log: &mut Log, expected: &[Expected]) {
    assert_eq!(read_all(log), expected);
    assert_eq!(log.last_index(), expected.last().map(|e| e.index));
    for e in expected {
        let r = log.get(e.index).expect("record readable");
        assert_eq!(
            (r.term, r.index, r.payload),
            (e.term, e.index, &e.payload[..])
        );
    }
}
