//! Opening a log: find the segments, check every record, cut a torn tail.
//!
//! Every segment but the last must hold, intact, exactly the records up to the next segment's
//! first index; anything else is damage the log reports (naming file and byte) and does not
//! skip. The last segment is where a crash tears writes: its records are read up to the first
//! bad length, checksum or index, and the rest is cut off by zeroing the header there. A record
//! the log ever reported durable lies before that point, because it was synced before the
//! report and every record before it was synced no later.
//!
//! A crash can tear writes across a segment switch too: a batch that crossed into a new
//! segment leaves the old one's tail torn and the new one with no record (a header, zeros, a
//! short file, or a torn first record and nothing after it). Trailing segments with no record
//! are therefore removed first (once the rest has checked, and durably), and the segment before
//! them is the last one, read only up to the index where the first removed one began. But a
//! segment with an intact record anywhere, even behind bad bytes, ends the torn region: the
//! segments before it must be intact, so a bad record there is damage in the middle of the log.
//!
//! The writer never appends to a segment it found on open (it starts a new one), so bytes that
//! a torn write left past the cut can never come back to life after a later crash.

use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::dir;
use crate::error::{Damage, Error, Result};
use crate::meta::MetaFile;
use crate::record::{record_bytes, RECORD_ALIGN};
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

    // The torn tail may span segments: a batch that crossed into new segments and was never
    // synced can leave them with no record (or no header) and the one before them torn. Such
    // trailing segments go, newest first, and the one before becomes the last. They are
    // removed only once the segments that stay have checked, so that an error leaves the
    // directory as the crash left it.
    let mut last = None;
    let mut emptied: Vec<u64> = Vec::new();
    let mut intact_before = false;
    while let Some(&first) = firsts.last() {
        let until = emptied.last().copied();
        match open_last(dir, first, until, firsts.len() >= 2, intact_before)? {
            Tail::Last(segment, scan) => {
                last = Some((segment, scan));
                break;
            }
            Tail::Empty { records_behind } => {
                firsts.pop();
                emptied.push(first);
                intact_before = records_behind;
            }
        }
    }

    let mut segments = Vec::with_capacity(firsts.len());
    for pair in firsts.windows(2) {
        let segment = Segment::open(dir, pair[0])?;
        segment_header_intact(&segment)?;
        let scan = scan(&segment, Some(pair[1]));
        check_reached(&segment, &scan, pair[1])?;
        segments.push(Arc::new(segment));
    }

    if !emptied.is_empty() {
        for &first in &emptied {
            dir::remove_file(&dir::segment_path(dir, first))?;
        }
        // Durable before anything relies on the shorter log: an emptied segment that came back
        // after a later crash would hide the records appended from here on in new segments.
        dir::sync_dir(dir)?;
    }

    let mut next_index = first_index;
    if let Some((segment, scan)) = last {
        if scan.stop != Stop::Zero && scan.stop != Stop::Full {
            // Cut the torn tail (or, where a removed segment began, whatever lies past it),
            // so that no later scan reads past this point.
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

/// What `open_last` found.
enum Tail {
    /// The last segment, read up to its first bad record.
    Last(Segment, Scan),
    /// A segment with no record in front, which only a crash explains (a segment torn while
    /// being made, or while a batch crossing into it was being written): the caller removes
    /// it, and the one before is last. `records_behind`: an intact record lies behind the bad
    /// bytes, so the segment before must be intact (see `open_last`).
    Empty { records_behind: bool },
}

/// Open the last segment and read its records, up to `until` (where a segment removed after
/// it began). It is `Tail::Empty` if it has a damaged header, or if it has a valid one and
/// there is an earlier segment (`earlier`) the torn region may have begun in.
///
/// No record the log reported durable is lost by that: it was synced before the report, and
/// so was every record before it, in this segment and the earlier ones. But where an intact
/// record lies behind the bad bytes, something may have been made durable that far, so the
/// torn region cannot reach back past this segment: a valid header keeps it as the last one,
/// and a damaged one, removed, asks for the segment before it to be intact (`intact`). Damage
/// in any segment before one that holds an intact record is thus an error, not skipped.
fn open_last(
    dir: &Path,
    first: u64,
    until: Option<u64>,
    earlier: bool,
    intact: bool,
) -> Result<Tail> {
    let segment = match Segment::open(dir, first) {
        Ok(segment) => segment,
        Err(Error::Corrupt {
            damage: Damage::Short,
            ..
        }) if !intact => {
            return Ok(Tail::Empty {
                records_behind: false,
            })
        }
        Err(e) => return Err(e),
    };
    let scan = scan(&segment, until);
    if intact {
        segment_header_intact(&segment)?;
        if let Some(until) = until {
            check_reached(&segment, &scan, until)?;
        }
        return Ok(Tail::Last(segment, scan));
    }
    let records_behind = || holds_a_record(&segment, scan.offset, until);
    if let Err(e) = segment_header_intact(&segment) {
        if scan.next_index > first {
            return Err(e); // records behind a damaged header: not a torn creation
        }
        let records_behind = records_behind();
        return Ok(Tail::Empty { records_behind });
    }
    if earlier && scan.next_index == first && !records_behind() {
        return Ok(Tail::Empty {
            records_behind: false,
        });
    }
    Ok(Tail::Last(segment, scan))
}

/// A segment followed by one that begins at `next` must hold every record up to it.
fn check_reached(segment: &Segment, scan: &Scan, next: u64) -> Result<()> {
    let damage = match scan.stop {
        Stop::Reached => return Ok(()),
        Stop::Damaged(damage) => damage,
        Stop::Full | Stop::Zero => Damage::MissingRecords { expected: next },
    };
    Err(Error::Corrupt {
        path: segment.path().to_path_buf(),
        offset: scan.offset as u64,
        damage,
    })
}

/// Whether an intact record of `segment` (below `until`) starts anywhere from `offset` on, for
/// instance one written back past a torn one. Only a segment with no record in front is
/// searched, which happens only after a crash; a zero-filled one costs a few loads per 8 bytes.
fn holds_a_record(segment: &Segment, mut offset: usize, until: Option<u64>) -> bool {
    let first = segment.first_index();
    while let Some(header) = segment.header(offset) {
        let plausible = !header.is_zero()
            && header.index >= first
            && until.is_none_or(|until| header.index < until);
        if plausible {
            let payload = segment.payload(offset, header.len);
            if payload.is_some_and(|payload| header.checksum(payload) == header.crc) {
                return true;
            }
        }
        offset += RECORD_ALIGN;
    }
    false
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
    debug_assert!(offset >= SEGMENT_HEADER_BYTES && offset.is_multiple_of(8));
    Scan {
        next_index: index,
        offset,
        stop,
    }
}
