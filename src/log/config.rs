//! How a log is opened: segment size, flush policy, first index of a new log.

use crate::error::{Error, Result};
use crate::segment::{SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN};

/// When appended records are made durable: the one vocabulary of the log and of the node
/// (`exchange-node --fsync always|batch|never`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlushPolicy {
    /// Sync after every record, so each record is durable on its own, even inside a batch.
    Always,
    /// Group commit: one sync for everything one `append`/`append_batch` call wrote. The log
    /// syncs before the call returns; the node's log store instead appends without a sync,
    /// lets readers see the records, and then calls [`crate::Log::sync`] once for all it
    /// wrote: the same single sync, issued by the caller (`Log::append_unsynced`).
    #[default]
    Batch,
    /// Never sync on append; the kernel writes back when it likes. `Log::sync` still works.
    /// An acknowledged record can be lost if the machine loses power: for tests.
    Never,
}

impl FlushPolicy {
    pub const NAMES: [&'static str; 3] = ["always", "batch", "never"];

    pub fn name(self) -> &'static str {
        match self {
            FlushPolicy::Always => "always",
            FlushPolicy::Batch => "batch",
            FlushPolicy::Never => "never",
        }
    }
}

impl std::fmt::Display for FlushPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for FlushPolicy {
    type Err = String;
    fn from_str(text: &str) -> Result<FlushPolicy, String> {
        match text {
            "always" => Ok(FlushPolicy::Always),
            "batch" => Ok(FlushPolicy::Batch),
            "never" => Ok(FlushPolicy::Never),
            other => Err(format!(
                "{other:?} is not a flush policy (always, batch or never)"
            )),
        }
    }
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
        if !self.segment_bytes.is_multiple_of(SEGMENT_BYTES_ALIGN) {
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
