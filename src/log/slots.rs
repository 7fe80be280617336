//! A small value overwritten in place: Raft's vote, saved at every election.
//!
//! `MetaFile` replaces its file (write a temporary, sync, rename, sync the directory): two
//! journal commits on ext4, which queue behind every other writer's commits on the same file
//! system. On a loaded 2-core host (tests/cluster_rto.rs beside two CPU hogs) a vote saved that
//! way took up to 1.8 s, and the elections waiting for it timed out one after another. A
//! `SlotFile` is made once, with both slots written, and then overwritten in place with
//! `pwrite` and `fdatasync`: no size change and no block allocation, so the sync flushes the
//! data and waits for no journal commit.
//!
//! Two slots, one page each, so that a torn write (a crash mid-write) can damage only the value
//! being written, which was never reported saved: each write goes to the slot that does not
//! hold the newest value, and a read takes the valid slot with the higher sequence number.
//!
//! ```text
//! each slot (SLOT_BYTES apart):
//! offset  size  field
//!      0     4  magic  b"EXSL"
//!      4     4  crc    CRC32C over seq, len and the value
//!      8     8  seq    one more than the previous write's (u64, little-endian)
//!     16     4  len    value length (u32, little-endian)
//!     20   len  value
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::dir;
use crate::error::{Damage, Error, Result};

const SLOT_MAGIC: [u8; 4] = *b"EXSL";
const SLOT_HEADER_BYTES: usize = 20;
/// A page: a write to one slot never touches the other's page.
const SLOT_BYTES: usize = 4096;
const SLOTS: usize = 2;
/// Largest value a slot holds.
pub const SLOT_VALUE_BYTES_MAX: usize = SLOT_BYTES - SLOT_HEADER_BYTES;

const _: () = assert!(SLOT_HEADER_BYTES == 4 + 4 + 8 + 4);

/// A small file holding one value, overwritten in place (see the module's comment).
#[derive(Debug)]
pub struct SlotFile {
    path: PathBuf,
    /// Open once the file exists.
    file: Option<File>,
    /// The newest valid slot: its sequence number and position.
    newest: Option<(u64, usize)>,
}

impl SlotFile {
    /// Opens the file at `path` if it exists (its directory must), and returns it with the last
    /// value written completely, or None if none ever was. Nothing is created until `write`.
    pub fn open(path: impl Into<PathBuf>) -> Result<(SlotFile, Option<Vec<u8>>)> {
        let path = path.into();
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let empty = SlotFile {
                    path,
                    file: None,
                    newest: None,
                };
                return Ok((empty, None));
            }
            Err(e) => return Err(Error::io(&path)(e)),
        };
        let mut bytes = vec![0u8; SLOT_BYTES * SLOTS];
        let len = file.metadata().map_err(Error::io(&path))?.len();
        if len != bytes.len() as u64 {
            return Err(Error::Corrupt {
                path,
                offset: 0,
                damage: Damage::BadLength,
            });
        }
        file.read_exact_at(&mut bytes, 0)
            .map_err(Error::io(&path))?;
        let newest = bytes
            .chunks_exact(SLOT_BYTES)
            .enumerate()
            .filter_map(|(slot, bytes)| decode(bytes).map(|(seq, value)| (seq, slot, value)))
            .max_by_key(|&(seq, _, _)| seq);
        // The file is made with its first slot valid, and a write damages at most one slot.
        let Some((seq, slot, value)) = newest else {
            return Err(Error::Corrupt {
                path,
                offset: 0,
                damage: Damage::BadChecksum,
            });
        };
        let opened = SlotFile {
            path,
            file: Some(file),
            newest: Some((seq, slot)),
        };
        Ok((opened, Some(value.to_vec())))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `value` durably: when this returns Ok, `open` finds it even after a crash.
    pub fn write(&mut self, value: &[u8]) -> Result<()> {
        if value.len() > SLOT_VALUE_BYTES_MAX {
            return Err(Error::RecordTooLarge {
                payload_bytes: value.len(),
                max: SLOT_VALUE_BYTES_MAX,
            });
        }
        let (Some(file), Some((seq, slot))) = (&self.file, self.newest) else {
            return self.create(value);
        };
        let (seq, slot) = (seq + 1, (slot + 1) % SLOTS);
        file.write_all_at(&encode(seq, value), (slot * SLOT_BYTES) as u64)
            .map_err(Error::io(&self.path))?;
        file.sync_data().map_err(Error::io(&self.path))?;
        self.newest = Some((seq, slot));
        Ok(())
    }

    /// The first write: the whole file, both slots allocated, made under a temporary name and
    /// renamed into place, so a file with the final name always holds a valid slot.
    fn create(&mut self, value: &[u8]) -> Result<()> {
        let mut bytes = vec![0u8; SLOT_BYTES * SLOTS];
        let first = encode(1, value);
        bytes[..first.len()].copy_from_slice(&first);
        let tmp = dir::tmp_path(&self.path);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(Error::io(&tmp))?;
        file.write_all(&bytes).map_err(Error::io(&tmp))?;
        file.sync_all().map_err(Error::io(&tmp))?;
        fs::rename(&tmp, &self.path).map_err(Error::io(&self.path))?;
        dir::sync_dir(self.path.parent().unwrap_or(Path::new(".")))?;
        self.file = Some(file);
        self.newest = Some((1, 0));
        Ok(())
    }
}

fn encode(seq: u64, value: &[u8]) -> Vec<u8> {
    let len = value.len() as u32; // bounded by SLOT_VALUE_BYTES_MAX
    let mut bytes = Vec::with_capacity(SLOT_HEADER_BYTES + value.len());
    bytes.extend_from_slice(&SLOT_MAGIC);
    bytes.extend_from_slice(&checksum(seq, len, value).to_le_bytes());
    bytes.extend_from_slice(&seq.to_le_bytes());
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(value);
    bytes
}

/// A slot's sequence number and value, or None for a slot never written or torn.
fn decode(slot: &[u8]) -> Option<(u64, &[u8])> {
    let (header, rest) = slot.split_first_chunk::<SLOT_HEADER_BYTES>()?;
    let (magic, header) = header.split_first_chunk::<4>()?;
    let (crc, header) = header.split_first_chunk::<4>()?;
    let (seq, len) = header.split_first_chunk::<8>()?;
    let len = u32::from_le_bytes(len.try_into().ok()?);
    let seq = u64::from_le_bytes(*seq);
    let value = rest.get(..len as usize)?;
    (*magic == SLOT_MAGIC && u32::from_le_bytes(*crc) == checksum(seq, len, value))
        .then_some((seq, value))
}

fn checksum(seq: u64, len: u32, value: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&seq.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c_append(crc, &len.to_le_bytes()), value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("temp dir")
    }

    #[test]
    fn a_missing_file_holds_nothing_until_written() {
        let dir = temp_dir();
        let path = dir.path().join("vote.slots");
        let (mut file, value) = SlotFile::open(&path).expect("open");
        assert_eq!(value, None);
        assert!(!path.exists(), "opening creates nothing");
        file.write(b"first").expect("write");
        assert_eq!(
            SlotFile::open(&path).expect("reopen").1.as_deref(),
            Some(&b"first"[..])
        );
    }

    #[test]
    fn every_write_is_read_back_and_the_size_never_changes() {
        let dir = temp_dir();
        let path = dir.path().join("vote.slots");
        let (mut file, _) = SlotFile::open(&path).expect("open");
        for i in 0..10u32 {
            let value = format!("vote {i}").repeat(i as usize + 1);
            file.write(value.as_bytes()).expect("write");
            let (reopened, read) = SlotFile::open(&path).expect("reopen");
            assert_eq!(read.as_deref(), Some(value.as_bytes()));
            assert_eq!(reopened.newest, file.newest);
            assert_eq!(
                fs::metadata(&path).expect("metadata").len(),
                (SLOT_BYTES * SLOTS) as u64
            );
        }
    }

    #[test]
    fn a_torn_write_leaves_the_value_before_it() {
        let dir = temp_dir();
        // The third write goes to the first slot again: tear it at every length.
        let torn = encode(3, b"never reported saved");
        for cut in 0..torn.len() {
            let path = dir.path().join(format!("vote-{cut}.slots"));
            let (mut file, _) = SlotFile::open(&path).expect("open");
            file.write(b"saved").expect("write");
            file.write(b"also saved").expect("write");
            let raw = OpenOptions::new().write(true).open(&path).expect("raw");
            raw.write_all_at(&torn[..cut], 0).expect("tear");
            let (mut reopened, read) = SlotFile::open(&path).expect("open after a tear");
            assert_eq!(read.as_deref(), Some(&b"also saved"[..]), "cut at {cut}");
            // And the writes go on from there.
            reopened.write(b"after").expect("write after a tear");
            assert_eq!(
                SlotFile::open(&path).expect("reopen").1.as_deref(),
                Some(&b"after"[..])
            );
        }
    }

    #[test]
    fn damage_to_both_slots_or_the_size_is_an_error_not_a_panic() {
        let dir = temp_dir();
        let path = dir.path().join("vote.slots");
        let (mut file, _) = SlotFile::open(&path).expect("open");
        file.write(b"one").expect("write");
        file.write(b"two").expect("write");
        fs::write(&path, vec![0xAB; SLOT_BYTES * SLOTS]).expect("garble");
        assert!(matches!(
            SlotFile::open(&path),
            Err(Error::Corrupt {
                damage: Damage::BadChecksum,
                ..
            })
        ));
        fs::write(&path, b"short").expect("truncate");
        assert!(matches!(
            SlotFile::open(&path),
            Err(Error::Corrupt {
                damage: Damage::BadLength,
                ..
            })
        ));
    }

    #[test]
    fn a_value_too_large_is_refused() {
        let dir = temp_dir();
        let (mut file, _) = SlotFile::open(dir.path().join("vote.slots")).expect("open");
        assert!(matches!(
            file.write(&vec![1; SLOT_VALUE_BYTES_MAX + 1]),
            Err(Error::RecordTooLarge { .. })
        ));
        file.write(&vec![1; SLOT_VALUE_BYTES_MAX])
            .expect("the largest fits");
    }
}
