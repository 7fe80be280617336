//! Opening a log: find the segments, check every record, cut a torn tail.
//!
//! Every segment but the last must hold, intact, exactly the records up to the next segment's
//! first index; anything else is damage the log reports (naming file and byte) and does not
//! skip. The last segment is where a crash tears writes: its records are read up to the first
//! bad length, checksum or index, and the rest is cut off by zeroing the header there. A record
//! the log ever reported durable lies before that point, because it was synced before the
//! report and every record before it was synced no later.
//!
//! The writer never appends to a segment it found on open (it starts a new one), so bytes that
//! a torn write left past the cut can never come back to life after a later crash.

use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::dir;
use crate::error::{Damage, Error, Result};
use crate::meta::MetaFile;
use crate::record::record_bytes;
use crate::segment::{self, Segment, SEGMENT_HEADER_BYTES};

/// The log as found on disk.
pub(crate) struct Recovered {
    pub segments: Vec<Arc<Segment>>,
    /// The first index not purged.
    pub first_index: u64,
    /// One past the last record.
    pub next_index: u64,
}

/// Why a scan of a segment's records stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// At the index where the next segment begins.
    Reached,
    /// At the end of the file.
    Full,
    /// At an all-zero header: the end of what was written.
    Zero,
    Damaged(Damage),
}

struct Scan {
    next_index: u64,
    offset: usize,
    stop: Stop,
}

pub(crate) fn recover(dir: &Path, meta: &MetaFile, config: &Config) -> Result<Recovered> {
    let mut firsts = dir::list_segments(dir)?;
    let first_index = match meta.read()? {
        Some(value) => decode_first_index(meta, &value)?,
        None => {
            // A new log, or one whose meta file was never written (a crash while creating it).
            let first = firsts.first().copied().unwrap_or(config.first_index);
            meta.write(&first.to_le_bytes())?;
            first
        }
    };

    // Segments wholly below the first index are left over from a purge cut short.
    while firsts.len() >= 2 && firsts[1] <= first_index {
        dir::remove_file(&dir::segment_path(dir, firsts[0]))?;
        firsts.remove(0);
    }

    let mut last = None;
    while let Some(&first) = firsts.last() {
        match open_last(dir, first)? {
            Some(found) => {
                last = Some(found);
                break;
            }
            None => {
                firsts.pop();
            }
        }
    }

    let mut segments = Vec::with_capacity(firsts.len());
    for pair in firsts.windows(2) {
        let segment = Segment::open(dir, pair[0])?;
        let corrupt = |segment: &Segment, offset: usize, damage| Error::Corrupt {
            path: segment.path().to_path_buf(),
            offset: offset as u64,
            damage,
        };
        segment_header_intact(&segment)?;
        let scan = scan(&segment, Some(pair[1]));
        match scan.stop {
            Stop::Reached => {}
            Stop::Damaged(damage) => return Err(corrupt(&segment, scan.offset, damage)),
            Stop::Full | Stop::Zero => {
                let damage = Damage::MissingRecords { expected: pair[1] };
                return Err(corrupt(&segment, scan.offset, damage));
            }
        }
        segments.push(Arc::new(segment));
    }

    let mut next_index = first_index;
    if let Some((segment, scan)) = last {
        if scan.stop != Stop::Zero && scan.stop != Stop::Full {
            // Cut the torn tail, so that no later scan reads past this point.
            segment.clear_header(scan.offset);
        }
        next_index = scan.next_index;
        segments.push(Arc::new(segment));
    }

    // A purge past the end of the log may have been cut short: drop what it covers.
    if next_index <= first_index {
        for segment in segments.drain(..) {
            segment::remove(&segment)?;
        }
        next_index = first_index;
    }
    if let Some(first) = segments.first() {
        if first.first_index() > first_index {
            return Err(Error::Corrupt {
                path: first.path().to_path_buf(),
                offset: 0,
                damage: Damage::MissingRecords {
                    expected: first_index,
                },
            });
        }
    }

    // Whatever the previous process left in the page cache is made durable now, so that the
    // durable watermark starts at the end. Clean files sync in microseconds.
    for segment in &segments {
        segment.sync_range(0, segment.len())?;
    }
    dir::sync_dir(dir)?;

    Ok(Recovered {
        segments,
        first_index,
        next_index,
    })
}

fn decode_first_index(meta: &MetaFile, value: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = value.try_into().map_err(|_| Error::Corrupt {
        path: meta.path().to_path_buf(),
        offset: 0,
        damage: Damage::BadLength,
    })?;
    Ok(u64::from_le_bytes(bytes))
}

/// Open the last segment and read its records. None if the file holds nothing a crash could
/// not explain (a segment torn while being made): it is removed, and the one before is last.
fn open_last(dir: &Path, first: u64) -> Result<Option<(Segment, Scan)>> {
    let segment = match Segment::open(dir, first) {
        Ok(segment) => segment,
        Err(Error::Corrupt {
            damage: Damage::Short,
            ..
        }) => {
            dir::remove_file(&dir::segment_path(dir, first))?;
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let scan = scan(&segment, None);
    if let Err(e) = segment_header_intact(&segment) {
        if scan.next_index > first {
            return Err(e); // records behind a damaged header: not a torn creation
        }
        segment::remove(&segment)?;
        return Ok(None);
    }
    Ok(Some((segment, scan)))
}

fn segment_header_intact(segment: &Segment) -> Result<()> {
    segment.check_header().map_err(|damage| Error::Corrupt {
        path: segment.path().to_path_buf(),
        offset: 0,
        damage,
    })
}

/// Check the records from the start of `segment`, filling its offset table, until the index
/// `until` (exclusive) or the first record that does not check.
fn scan(segment: &Segment, until: Option<u64>) -> Scan {
    let first = segment.first_index();
    let mut index = first;
    let mut offset = SEGMENT_HEADER_BYTES;
    let stop = loop {
        if Some(index) == until {
            break Stop::Reached;
        }
        let Some(header) = segment.header(offset) else {
            break Stop::Full;
        };
        if header.is_zero() {
            break Stop::Zero;
        }
        let Some(payload) = segment.payload(offset, header.len) else {
            break Stop::Damaged(Damage::BadLength);
        };
        if header.checksum(payload) != header.crc {
            break Stop::Damaged(Damage::BadChecksum);
        }
        if header.index != index {
            let damage = Damage::WrongIndex {
                expected: index,
                found: header.index,
            };
            break Stop::Damaged(damage);
        }
        let Some(next) = index.checked_add(1) else {
            break Stop::Full; // u64::MAX cannot be followed
        };
        // Offsets fit u32 (segments are at most SEGMENT_BYTES_MAX) and slots exist for every
        // record (each takes at least a header).
        segment.offsets.set(index - first, offset as u32);
        index = next;
        offset += record_bytes(payload.len());
    };
    debug_assert!(offset >= SEGMENT_HEADER_BYTES && offset % 8 == 0);
    Scan {
        next_index: index,
        offset,
        stop,
    }
}
