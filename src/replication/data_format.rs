//! The data directory's format: what the log's entries, the snapshots and the engine's state
//! look like on disk. A node writes the number into a new directory (`FORMAT`) and refuses to
//! start on a directory of another format, with an error that says so, instead of misreading
//! entries written by another build.
//!
//! Format 2 gave symbols names and price decimals (and took the price band out of a symbol's
//! description). Format 3 keeps Raft's vote in `log/vote.slots`, overwritten in place, where
//! format 2 replaced `log/vote.meta`: a format 2 directory is upgraded in place when a node of
//! this build opens it (the vote is read from the old file until the first new one is saved,
//! and the old file is then removed), and from then on a format 2 build refuses it instead of
//! reading a stale vote. Format 4 adds a command (a broker's FIX CompID) that older builds
//! cannot read, and snapshots that carry it; a format 3 directory is upgraded in place (its
//! snapshots are still read), and older builds then refuse it. Format 5 adds the cluster's
//! key salt (a command and a snapshot field); a format 4 directory is upgraded in place and
//! keeps no salt (its brokers' digests were made without one). Format 1 directories have no
//! `FORMAT` file.

use std::path::Path;

use exchange_log::MetaFile;

/// The format this build writes and reads.
pub const DATA_FORMAT_VERSION: u32 = 5;
/// Formats this build upgrades in place by marking them with its own.
const UPGRADED_IN_PLACE: [u32; 3] = [2, 3, 4];
const FORMAT_FILE: &str = "FORMAT";

/// Why a data directory cannot be used by this build.
#[derive(Debug, PartialEq, Eq)]
pub enum DataFormatError {
    /// Written by another format (1: before the `FORMAT` file existed).
    Other {
        found: u32,
    },
    Unreadable(String),
}

impl std::fmt::Display for DataFormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataFormatError::Other { found } => write!(
                f,
                "the data directory holds data format {found}, and this build reads format \
                 {DATA_FORMAT_VERSION} only (see the release notes in README.md): start this \
                 node on an empty data directory, or run the build that wrote it"
            ),
            DataFormatError::Unreadable(why) => write!(f, "data format: {why}"),
        }
    }
}

impl std::error::Error for DataFormatError {}

/// Checks the directory's format, marking a new (empty) directory with this build's.
pub fn check_or_mark(data_dir: &Path) -> Result<(), DataFormatError> {
    let file = MetaFile::new(data_dir.join(FORMAT_FILE));
    let unreadable = |e: &dyn std::fmt::Display| DataFormatError::Unreadable(e.to_string());
    match file.read().map_err(|e| unreadable(&e))? {
        Some(bytes) => {
            let found = <[u8; 4]>::try_from(bytes.as_slice())
                .map(u32::from_le_bytes)
                .map_err(|_| unreadable(&"FORMAT is not a format number"))?;
            if found == DATA_FORMAT_VERSION {
                Ok(())
            } else if UPGRADED_IN_PLACE.contains(&found) {
                file.write(&DATA_FORMAT_VERSION.to_le_bytes())
                    .map_err(|e| unreadable(&e))
            } else {
                Err(DataFormatError::Other { found })
            }
        }
        None if holds_data(data_dir) => Err(DataFormatError::Other { found: 1 }),
        None => {
            std::fs::create_dir_all(data_dir).map_err(|e| unreadable(&e))?;
            file.write(&DATA_FORMAT_VERSION.to_le_bytes())
                .map_err(|e| unreadable(&e))
        }
    }
}

/// Whether the directory already holds a log or a snapshot (a directory without a `FORMAT`
/// file, so one from before it existed).
fn holds_data(data_dir: &Path) -> bool {
    let non_empty =
        |path: &Path| std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_some());
    non_empty(&data_dir.join("log")) || data_dir.join("snapshot.bin").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_is_marked_and_then_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("node");
        assert_eq!(check_or_mark(&data), Ok(()));
        assert!(data.join(FORMAT_FILE).exists());
        assert_eq!(check_or_mark(&data), Ok(()));
    }

    #[test]
    fn another_format_is_refused_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        MetaFile::new(dir.path().join(FORMAT_FILE))
            .write(&7u32.to_le_bytes())
            .unwrap();
        let error = check_or_mark(dir.path()).unwrap_err();
        assert_eq!(error, DataFormatError::Other { found: 7 });
        assert!(error.to_string().contains("format 7"), "{error}");
    }

    #[test]
    fn formats_2_to_4_are_upgraded_in_place() {
        for old in [2u32, 3, 4] {
            let dir = tempfile::tempdir().unwrap();
            let file = MetaFile::new(dir.path().join(FORMAT_FILE));
            file.write(&old.to_le_bytes()).unwrap();
            assert_eq!(check_or_mark(dir.path()), Ok(()));
            assert_eq!(
                file.read().unwrap(),
                Some(DATA_FORMAT_VERSION.to_le_bytes().to_vec())
            );
        }
    }

    #[test]
    fn a_directory_from_before_the_format_file_is_format_1() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("log")).unwrap();
        std::fs::write(
            dir.path().join("log").join("00000000000000000001.seg"),
            b"x",
        )
        .unwrap();
        assert_eq!(
            check_or_mark(dir.path()),
            Err(DataFormatError::Other { found: 1 })
        );
        assert!(!dir.path().join(FORMAT_FILE).exists(), "left as it was");
    }
}
