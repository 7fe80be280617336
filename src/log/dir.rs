//! The log directory: file names, listing, and making directory changes durable.
//!
//! A segment is named by the index of its first record, zero-padded so that names sort in
//! log order: `00000000000000000042.seg`. A segment is made under a `.tmp` name and renamed
//! into place, so a file with a final name always has a complete header.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const SEGMENT_SUFFIX: &str = ".seg";
const TMP_SUFFIX: &str = ".tmp";
/// Digits in a segment name: enough for any u64.
const SEGMENT_NAME_DIGITS: usize = 20;

pub(crate) fn segment_path(dir: &Path, first_index: u64) -> PathBuf {
    dir.join(format!(
        "{first_index:0SEGMENT_NAME_DIGITS$}{SEGMENT_SUFFIX}"
    ))
}

/// The name a file gets while it is being made, before its rename into place.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}

/// The first indexes of the segments in `dir`, in order. Other files are not ours to judge,
/// and leftover `.tmp` files are removed: they were never renamed into place.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut firsts = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TMP_SUFFIX) && name.contains(SEGMENT_SUFFIX) {
            remove_file(&entry.path())?;
            continue;
        }
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        if stem.len() == SEGMENT_NAME_DIGITS && stem.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(first) = stem.parse::<u64>() {
                firsts.push(first);
            }
        }
    }
    firsts.sort_unstable();
    Ok(firsts)
}

pub(crate) fn remove_file(path: &Path) -> Result<()> {
    fs::remove_file(path).map_err(Error::io(path))
}

/// Make creations, renames and removals in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_index_order() {
        let dir = Path::new("/log");
        let a = segment_path(dir, 9);
        let b = segment_path(dir, 10);
        assert!(a < b);
        assert_eq!(
            b,
            Path::new("/log/00000000000000000010.seg"),
            "20 digits hold u64::MAX"
        );
        assert_eq!(u64::MAX.to_string().len(), SEGMENT_NAME_DIGITS);
    }
}
