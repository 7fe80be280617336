//! One segment file: a 32-byte header, then records back to back, then zeros.
//!
//! ```text
//! offset  size  field
//!      0     8  magic    b"EXCHLOG\0"
//!      8     4  version  SEGMENT_VERSION (u32, little-endian)
//!     12     4  crc      CRC32C over the other 28 bytes
//!     16     8  first    index of the first record (also the file name)
//!     24     8  reserved zero
//!     32        records (see `record`)
//! ```
//!
//! The file is preallocated with `set_len` (sparse: measured no slower to sync than zero-filled
//! or fallocated files on ext4, and free to create) and mapped shared, read-write, once.
//! Readers borrow payloads from the map. The writer hands a batch to the kernel with
//! `pwrite` (a fresh page written through the map costs a page fault, a read-around of the
//! hole and a zero-fill before the copy: about twice the cost of the copy `pwrite` does), and
//! copies only small writes (under `MAP_WRITE_BYTES_MAX`) straight into the map, where a
//! system call would cost more. Both land in the one page cache the map shows (Linux's page
//! cache is coherent between `pwrite` and shared maps), and both are done before the writer
//! publishes the records, so readers see them whole. Syncs are `fdatasync`, which writes back
//! pages dirtied either way.
//!
//! Bytes in the map are written at most once while this process has the segment mapped:
//! records are only ever appended past the published end, and after a truncate, a restart or
//! a failed write the writer moves on to a new file instead of writing over old bytes. That is what makes it
//! sound to hand out `&[u8]` into the map while the writer runs. The only exception is
//! `clear_header`, which zeroes a truncated record's header with atomic stores (readers load
//! headers atomically, and never hold a reference to one).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapRaw;

use crate::dir;
use crate::error::{Damage, Error, Result};
use crate::offsets::OffsetTable;
use crate::record::{Header, RECORD_ALIGN, RECORD_HEADER_BYTES};

pub(crate) const SEGMENT_HEADER_BYTES: usize = 32;
/// Writes shorter than this are copied into the map, longer ones go through `pwrite`. A
/// system call costs about as much as faulting in one fresh page of the map, so below a page
/// the copy wins (the page it lands on is usually mapped already), and above it `pwrite` does.
pub(crate) const MAP_WRITE_BYTES_MAX: usize = 4096;
const SEGMENT_MAGIC: [u8; 8] = *b"EXCHLOG\0";
const SEGMENT_VERSION: u32 = 1;

/// Smallest segment: one page. Useful only in tests, which want to cross segment boundaries
/// often; production uses tens of MiB.
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Largest segment. Record offsets are kept as u32, and a bigger file only makes recovery scans
/// and purges coarser.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;

const _: () = assert!(SEGMENT_HEADER_BYTES == 8 + 4 + 4 + 8 + 8);
const _: () = assert!(SEGMENT_HEADER_BYTES.is_multiple_of(RECORD_ALIGN));
const _: () = assert!(SEGMENT_BYTES_MIN as usize > SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES);
const _: () = assert!(SEGMENT_BYTES_MIN <= SEGMENT_BYTES_MAX);
// The offset table holds u32 byte offsets.
const _: () = assert!(SEGMENT_BYTES_MAX <= u32::MAX as u64);

/// Largest payload a segment of `segment_bytes` holds: everything after both headers. It is a
/// multiple of 8 when `segment_bytes` is, so the padded record fits too.
pub(crate) fn payload_bytes_max(segment_bytes: u64) -> usize {
    segment_bytes as usize - SEGMENT_HEADER_BYTES - RECORD_HEADER_BYTES
}

pub(crate) struct Segment {
    first_index: u64,
    path: PathBuf,
    map: MmapRaw,
    /// Where each record starts; filled by the writer and by recovery.
    pub(crate) offsets: OffsetTable,
    /// For `pwrite` and `fdatasync`.
    file: File,
}

impl Segment {
    /// Make a new, empty segment of `bytes` bytes for records from `first_index`, replacing any
    /// file of that name. With `durable`, the file and its directory entry are synced before it
    /// is used, so a record synced in it later is found after a crash.
    pub fn create(dir: &Path, first_index: u64, bytes: u64, durable: bool) -> Result<Segment> {
        let path = dir::segment_path(dir, first_index);
        let tmp = dir::tmp_path(&path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(Error::io(&tmp))?;
        file.set_len(bytes).map_err(Error::io(&tmp))?;
        file.write_all_at(&segment_header(first_index), 0)
            .map_err(Error::io(&tmp))?;
        if durable {
            file.sync_data().map_err(Error::io(&tmp))?;
        }
        fs::rename(&tmp, &path).map_err(Error::io(&path))?;
        if durable {
            dir::sync_dir(dir)?;
        }
        Segment::map(path, file, first_index)
    }

    /// Open an existing segment. Its header is checked by `check_header`, its records by
    /// recovery: a damaged header means something different in the last segment.
    pub fn open(dir: &Path, first_index: u64) -> Result<Segment> {
        let path = dir::segment_path(dir, first_index);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        let len = file.metadata().map_err(Error::io(&path))?.len();
        let corrupt = |damage| Error::Corrupt {
            path: path.clone(),
            offset: 0,
            damage,
        };
        if len < SEGMENT_HEADER_BYTES as u64 {
            return Err(corrupt(Damage::Short));
        }
        if len > SEGMENT_BYTES_MAX {
            return Err(corrupt(Damage::BadLength));
        }
        Segment::map(path, file, first_index)
    }

    pub fn check_header(&self) -> Result<(), Damage> {
        // SAFETY: the header lies in the map (files shorter than it are not mapped) and is
        // written only before the segment is shared.
        let bytes = unsafe { std::slice::from_raw_parts(self.map.as_ptr(), SEGMENT_HEADER_BYTES) };
        let mut header = [0u8; SEGMENT_HEADER_BYTES];
        header.copy_from_slice(bytes);
        check_segment_header(&header, self.first_index)
    }

    fn map(path: PathBuf, file: File, first_index: u64) -> Result<Segment> {
        let map = MmapRaw::map_raw(&file).map_err(Error::io(&path))?;
        let slots = (map.len() - SEGMENT_HEADER_BYTES) / RECORD_HEADER_BYTES;
        let offsets = OffsetTable::new(slots).map_err(Error::io(&path))?;
        Ok(Segment {
            first_index,
            path,
            map,
            offsets,
            file,
        })
    }

    pub fn first_index(&self) -> u64 {
        self.first_index
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The header at `offset`, or None if it would run past the end of the file.
    pub fn header(&self, offset: usize) -> Option<Header> {
        assert!(
            offset.is_multiple_of(RECORD_ALIGN),
            "record offsets are aligned"
        );
        if offset.checked_add(RECORD_HEADER_BYTES)? > self.len() {
            return None;
        }
        let mut words = [0u64; 3];
        for (i, word) in words.iter_mut().enumerate() {
            // SAFETY: in bounds (checked above), 8-byte aligned (the map is page-aligned and
            // offset is a multiple of 8), and only ever accessed atomically while others may
            // access it (see the module doc).
            let atomic = unsafe { &*self.map.as_ptr().add(offset + 8 * i).cast::<AtomicU64>() };
            *word = u64::from_le(atomic.load(Ordering::Relaxed));
        }
        Some(Header::from_words(words))
    }

    /// The payload of `len` bytes after the header at `offset`, if it lies in the file.
    pub fn payload(&self, offset: usize, len: u32) -> Option<&[u8]> {
        let start = offset.checked_add(RECORD_HEADER_BYTES)?;
        let end = start.checked_add(len as usize)?;
        if end > self.len() {
            return None;
        }
        // SAFETY: in bounds; the map lives as long as `&self`; and these bytes are not written
        // again while mapped (module doc), so no `&mut` or write aliases the slice.
        Some(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(start), len as usize) })
    }

    /// Write `bytes` (whole records) at `offset`: copied into the map when short, else
    /// handed to the kernel with `pwrite`. Either way the bytes are in the page cache, and so
    /// in every map of the file, when this returns. On an error some of them may be written.
    ///
    /// # Safety
    ///
    /// The caller is the one writer, and no reader can reach `offset..offset + bytes.len()`
    /// yet (it lies past the published end): nothing else references those bytes.
    pub unsafe fn write(&self, offset: usize, bytes: &[u8]) -> Result<()> {
        let end = offset.checked_add(bytes.len());
        assert!(
            end.is_some_and(|end| end <= self.len()),
            "the writer checks that records fit"
        );
        assert!(
            offset.is_multiple_of(RECORD_ALIGN),
            "record offsets are aligned"
        );
        if bytes.len() < MAP_WRITE_BYTES_MAX {
            // SAFETY: in bounds (asserted), and exclusively ours by the caller's contract;
            // `bytes` is the writer's own memory, not the map, so the two do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    self.map.as_mut_ptr().add(offset),
                    bytes.len(),
                );
            }
            return Ok(());
        }
        // The kernel copies into the page cache, the pages the map shows: it touches only
        // these bytes, which no reader references (the caller's contract).
        self.file
            .write_all_at(bytes, offset as u64)
            .map_err(Error::io(&self.path))
    }

    /// Write zeros over `from..to`, which the file holds as a hole, so that the file system
    /// allocates its blocks now, once, and a later record's sync writes only data. (A record
    /// written into a hole makes every `fdatasync` commit the allocation through the file
    /// system's journal, where it waits behind every other writer of the disk: 60 ms and more
    /// on a loaded host, against under 15 ms for data alone.)
    ///
    /// # Safety
    ///
    /// As for `write`: the caller is the one writer and no reader can reach these bytes.
    pub unsafe fn allocate(&self, from: usize, to: usize) -> Result<()> {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        assert!(
            from <= to && to <= self.len(),
            "allocations stay in the file"
        );
        let mut at = from;
        while at < to {
            let chunk = (to - at).min(ZEROS.len());
            self.file
                .write_all_at(&ZEROS[..chunk], at as u64)
                .map_err(Error::io(&self.path))?;
            at += chunk;
        }
        Ok(())
    }

    /// Zero the header at `offset`, so that scans stop there: the end of the segment's records
    /// after a truncate or a torn tail.
    pub fn clear_header(&self, offset: usize) {
        if offset + RECORD_HEADER_BYTES > self.len() {
            return; // a cut file: there is nothing past its end to hide
        }
        assert!(
            offset.is_multiple_of(RECORD_ALIGN),
            "record offsets are aligned"
        );
        for i in 0..RECORD_HEADER_BYTES / 8 {
            // SAFETY: as in `header`: in bounds, aligned, accessed only atomically.
            let atomic = unsafe { &*self.map.as_ptr().add(offset + 8 * i).cast::<AtomicU64>() };
            atomic.store(0, Ordering::Relaxed);
        }
    }

    /// Make `from..to` durable: `fdatasync`, which writes back every dirty page of the file,
    /// whether written by `pwrite` or through the map (the only writer of the file is this
    /// process's writer, so there are no others to wait for). A no-op for an empty range.
    pub fn sync_range(&self, from: usize, to: usize) -> Result<()> {
        if to <= from {
            return Ok(());
        }
        self.file.sync_data().map_err(Error::io(&self.path))
    }
}

fn segment_header(first_index: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&first_index.to_le_bytes());
    let crc = segment_header_crc(&header);
    header[12..16].copy_from_slice(&crc.to_le_bytes());
    header
}

fn segment_header_crc(header: &[u8; SEGMENT_HEADER_BYTES]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header[0..12]), &header[16..])
}

fn check_segment_header(
    header: &[u8; SEGMENT_HEADER_BYTES],
    first_index: u64,
) -> Result<(), Damage> {
    let [m0, m1, m2, m3, m4, m5, m6, m7, v0, v1, v2, v3, c0, c1, c2, c3, f0, f1, f2, f3, f4, f5, f6, f7, ..] =
        *header;
    let version = u32::from_le_bytes([v0, v1, v2, v3]);
    if [m0, m1, m2, m3, m4, m5, m6, m7] != SEGMENT_MAGIC || version != SEGMENT_VERSION {
        return Err(Damage::BadMagic);
    }
    if u32::from_le_bytes([c0, c1, c2, c3]) != segment_header_crc(header) {
        return Err(Damage::BadHeader);
    }
    let found = u64::from_le_bytes([f0, f1, f2, f3, f4, f5, f6, f7]);
    if found != first_index {
        return Err(Damage::WrongFirstIndex {
            expected: first_index,
            found,
        });
    }
    Ok(())
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("path", &self.path)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// Remove a segment's file. Maps of it stay valid until dropped (Unix keeps the inode).
pub(crate) fn remove(segment: &Segment) -> Result<()> {
    match fs::remove_file(segment.path()) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(Error::io(segment.path())),
    }
}
