//! Where each record of a segment starts: slot `index - first_index` holds its byte offset.
//!
//! The writer fills a slot before it publishes the index; readers read slots only below the
//! published watermark, so relaxed atomics suffice (the watermark's Release/Acquire orders
//! them). The table lives in an anonymous map sized for the most records a segment can hold;
//! the kernel commits its pages only as they are touched, so a segment of large records costs
//! little memory.

use std::io;
use std::mem::{align_of, size_of};
use std::sync::atomic::{AtomicU32, Ordering};

use memmap2::{MmapMut, MmapRaw};

// Offsets are u32 (half the memory of u64): segment.rs keeps segments below 4 GiB.
// The table is viewed as [AtomicU32] over bytes the map hands out.
const _: () = assert!(size_of::<AtomicU32>() == 4 && align_of::<AtomicU32>() == 4);

/// A slot's value before the writer fills it. Records never start at offset 0 (the segment
/// header is there), so it cannot be a real offset.
const EMPTY: u32 = 0;

pub(crate) struct OffsetTable {
    map: MmapRaw,
    slots: usize,
}

impl OffsetTable {
    pub fn new(slots: usize) -> io::Result<OffsetTable> {
        // A zero-length anonymous map is an error; keep one slot.
        let slots = slots.max(1);
        let map = MmapMut::map_anon(slots * size_of::<AtomicU32>())?.into();
        Ok(OffsetTable { map, slots })
    }

    fn slots(&self) -> &[AtomicU32] {
        // SAFETY: the map is `slots * 4` bytes, page-aligned (so 4-byte aligned), zero-filled
        // (zero is a valid AtomicU32), and lives as long as `self`. Every access goes through
        // the atomics, so the shared slice may be written through `&self`: AtomicU32 is an
        // UnsafeCell, and the raw map's pointer comes from mmap, not from a reference.
        unsafe { std::slice::from_raw_parts(self.map.as_mut_ptr().cast::<AtomicU32>(), self.slots) }
    }

    /// The offset of record `slot`, if the writer has placed it.
    pub fn get(&self, slot: u64) -> Option<u32> {
        let slot = usize::try_from(slot).ok()?;
        match self.slots().get(slot)?.load(Ordering::Relaxed) {
            EMPTY => None,
            offset => Some(offset),
        }
    }

    /// Place record `slot` at `offset`. Only the writer calls this, before publishing.
    pub fn set(&self, slot: u64, offset: u32) {
        assert!(offset != EMPTY, "a record cannot start at offset 0");
        self.slots()[slot as usize].store(offset, Ordering::Relaxed);
    }

    /// Forget slots from `slot` on (after a truncate), so that no reader finds them.
    pub fn clear_from(&self, slot: u64) {
        let from = usize::try_from(slot).map_or(self.slots, |s| s.min(self.slots));
        for entry in &self.slots()[from..] {
            if entry.load(Ordering::Relaxed) == EMPTY {
                break; // slots fill in order, so the rest are empty too
            }
            entry.store(EMPTY, Ordering::Relaxed);
        }
    }
}
