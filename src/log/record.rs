//! The record format: a 24-byte header, then the payload padded to 8 bytes.
//!
//! ```text
//! offset  size  field
//!      0     4  len    payload length in bytes (u32, little-endian)
//!      4     4  crc    CRC32C over len, term, index and the payload
//!      8     8  term   Raft term (u64, little-endian)
//!     16     8  index  Raft index (u64, little-endian)
//!     24   len  payload, then zero to seven bytes of padding
//! ```
//!
//! Records start 8-byte aligned, and so does every payload, because the header is a multiple
//! of 8 bytes: a caller can read an rkyv archive in place. The CRC covers the header fields
//! besides itself, so a torn header is caught as surely as a torn payload. An all-zero header
//! (what a preallocated segment holds past its last record) never checks, because the CRC32C
//! of twenty zero bytes is not zero: the scan needs no separate end marker.

/// Bytes before the payload.
pub const RECORD_HEADER_BYTES: usize = 24;

/// Records and payloads start on this boundary, so that rkyv archives (which need at most
/// 8-byte alignment for u64 fields) can be read straight from the map.
pub const RECORD_ALIGN: usize = 8;

const _: () = assert!(RECORD_HEADER_BYTES == 4 + 4 + 8 + 8);
const _: () = assert!(RECORD_HEADER_BYTES.is_multiple_of(RECORD_ALIGN));

/// One record: what a caller appends, and what a reader gets back (the payload then borrows
/// from the map, zero-copy, 8-byte aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub term: u64,
    pub index: u64,
    pub payload: &'a [u8],
}

/// A decoded record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub len: u32,
    pub crc: u32,
    pub term: u64,
    pub index: u64,
}

impl Header {
    /// The header of `record`, with its CRC. The caller has checked that the payload length
    /// fits in a u32 (segments are far smaller).
    pub fn for_record(record: &Record<'_>, len: u32) -> Header {
        let mut header = Header {
            len,
            crc: 0,
            term: record.term,
            index: record.index,
        };
        header.crc = header.checksum(record.payload);
        header
    }

    /// The CRC32C this header should carry for `payload`.
    pub fn checksum(&self, payload: &[u8]) -> u32 {
        crc32c::crc32c_append(self.covered_crc(), payload)
    }

    /// The CRC32C of the header fields the checksum covers: len, term, index, little-endian.
    /// On the append path for every record, so on x86-64 it is three CRC32 instructions
    /// rather than a generic call over a 20-byte buffer that starts at an odd alignment.
    fn covered_crc(&self) -> u32 {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU supports SSE4.2, checked just above.
            return unsafe { covered_crc_sse42(self.len, self.term, self.index) };
        }
        covered_crc_portable(self.len, self.term, self.index)
    }

    /// The header as the three little-endian words it occupies on disk.
    pub fn to_words(self) -> [u64; 3] {
        [
            u64::from(self.len) | (u64::from(self.crc) << 32),
            self.term,
            self.index,
        ]
    }

    pub fn from_words(words: [u64; 3]) -> Header {
        Header {
            len: words[0] as u32,
            crc: (words[0] >> 32) as u32,
            term: words[1],
            index: words[2],
        }
    }

    pub fn to_bytes(self) -> [u8; RECORD_HEADER_BYTES] {
        let mut bytes = [0u8; RECORD_HEADER_BYTES];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(self.to_words()) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        bytes
    }

    pub fn is_zero(&self) -> bool {
        self.to_words() == [0; 3]
    }
}

fn covered_crc_portable(len: u32, term: u64, index: u64) -> u32 {
    let mut covered = [0u8; RECORD_HEADER_BYTES - 4];
    covered[0..4].copy_from_slice(&len.to_le_bytes());
    covered[4..12].copy_from_slice(&term.to_le_bytes());
    covered[12..20].copy_from_slice(&index.to_le_bytes());
    crc32c::crc32c(&covered)
}

/// `covered_crc_portable` with the SSE4.2 CRC32 instruction (which computes CRC32C, on
/// little-endian operands, without the initial and final inversion).
///
/// # Safety
///
/// The CPU must support SSE4.2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn covered_crc_sse42(len: u32, term: u64, index: u64) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u32, _mm_crc32_u64};
    let crc = _mm_crc32_u32(!0, len);
    let crc = _mm_crc32_u64(u64::from(crc), term);
    let crc = _mm_crc32_u64(crc, index);
    !(crc as u32)
}

/// Bytes a record with a payload of `payload_bytes` occupies, padding included.
pub(crate) fn record_bytes(payload_bytes: usize) -> usize {
    RECORD_HEADER_BYTES + payload_bytes.next_multiple_of(RECORD_ALIGN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_header_never_checks() {
        let zero = Header::from_words([0; 3]);
        assert!(zero.is_zero());
        assert_ne!(zero.checksum(&[]), zero.crc);
    }

    #[test]
    fn header_round_trips_through_bytes_and_words() {
        let payload = b"abc";
        let record = Record {
            term: 7,
            index: 42,
            payload,
        };
        let header = Header::for_record(&record, 3);
        let bytes = header.to_bytes();
        let mut words = [0u64; 3];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            *word = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
        }
        assert_eq!(Header::from_words(words), header);
        assert_eq!(header.checksum(payload), header.crc);
        assert_ne!(header.checksum(b"abd"), header.crc);
    }

    #[test]
    fn the_fast_header_crc_matches_the_portable_one() {
        for (len, term, index) in [(0, 0, 0), (3, 7, 42), (u32::MAX, u64::MAX, 1 << 63)] {
            let header = Header {
                len,
                crc: 0,
                term,
                index,
            };
            assert_eq!(header.covered_crc(), covered_crc_portable(len, term, index));
        }
    }

    #[test]
    fn records_are_padded_to_the_alignment() {
        assert_eq!(record_bytes(0), 24);
        assert_eq!(record_bytes(1), 32);
        assert_eq!(record_bytes(8), 32);
        assert_eq!(record_bytes(64), 88);
    }
}
