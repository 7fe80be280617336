//! The running hash of the output stream.
//!
//! Each output's canonical encoding is hashed with xxh3-64, seeded with the hash so far, so the
//! value after output n commits to outputs 1..=n in order. Replicas compare it at equal
//! sequence numbers; a replay compares it with the recorded one.

use exchange_domain::{Output, OUTPUT_CANONICAL_BYTES_MAX};
use xxhash_rust::xxh3::xxh3_64_with_seed;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutputHasher {
    hash: u64,
}

impl OutputHasher {
    pub fn resume(hash: u64) -> Self {
        OutputHasher { hash }
    }

    pub fn value(&self) -> u64 {
        self.hash
    }

    #[inline]
    pub fn update(&mut self, output: &Output) {
        let mut buf = [0u8; OUTPUT_CANONICAL_BYTES_MAX];
        let len = output.canonical_bytes(&mut buf);
        self.hash = xxh3_64_with_seed(&buf[..len], self.hash);
    }
}
