//! How a log is opened: segment size, flush policy, first index of a new log.

use crate::error::{Error, Result};
use crate::segment::{SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN};

/// When appended records are made durable (`--fsync always|batch|never`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Sync after every record, so each record is durable on its own, even inside a batch.
    Always,
    /// Sync once per `append`/`append_batch` call, before it returns: group commit.
    #[default]
    Batch,
    /// Never sync on append; the kernel writes back when it likes. `Log::sync` still works.
    Never,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Size of each new segment file, preallocated. A multiple of 4 KiB (the page size, so that
    /// maps and syncs line up) between `SEGMENT_BYTES_MIN` and `SEGMENT_BYTES_MAX`. Existing
    /// segments keep the size they were made with.
    pub segment_bytes: u64,
    pub flush: FlushPolicy,
    /// The index the first record of a new, empty log must carry. Ignored for an existing log.
    pub first_index: u64,
}

/// Default segment size: a segment switch every few seconds at full speed, and few enough
/// files for a long log.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;

/// The alignment segment sizes need: the page size of the platforms we run on.
pub const SEGMENT_BYTES_ALIGN: u64 = 4096;

impl Default for Config {
    fn default() -> Self {
        Config {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            flush: FlushPolicy::default(),
            first_index: 0,
        }
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.segment_bytes < SEGMENT_BYTES_MIN {
            return Err(Error::InvalidConfig(
                "segment_bytes below SEGMENT_BYTES_MIN",
            ));
        }
        if self.segment_bytes > SEGMENT_BYTES_MAX {
            return Err(Error::InvalidConfig(
                "segment_bytes above SEGMENT_BYTES_MAX",
            ));
        }
        if self.segment_bytes % SEGMENT_BYTES_ALIGN != 0 {
            return Err(Error::InvalidConfig(
                "segment_bytes not a multiple of SEGMENT_BYTES_ALIGN",
            ));
        }
        if self.first_index == u64::MAX {
            return Err(Error::InvalidConfig(
                "first_index leaves no room for a record",
            ));
        }
        Ok(())
    }
}
