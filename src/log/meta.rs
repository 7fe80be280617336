//! Small values written atomically: the log's first index, the data format (Raft's vote, saved
//! at every election, is a `SlotFile`: see slots.rs for why).
//!
//! A write goes to `NAME.tmp`, is synced, renamed over `NAME`, and the directory is synced.
//! So `NAME` always holds the last complete value, and a torn `NAME.tmp` (a crash mid-write)
//! is simply ignored: reads never look at it, and the next write replaces it.
//!
//! ```text
//! offset  size  field
//!      0     4  magic  b"EXMF"
//!      4     4  len    value length (u32, little-endian)
//!      8     4  crc    CRC32C over len and the value
//!     12   len  value
//! ```

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::dir;
use crate::error::{Damage, Error, Result};

const META_MAGIC: [u8; 4] = *b"EXMF";
const META_HEADER_BYTES: usize = 12;
/// Largest value: these files hold a vote or an index, and are read whole at start-up.
pub const META_VALUE_BYTES_MAX: usize = 64 << 10;

const _: () = assert!(META_HEADER_BYTES == 4 + 4 + 4);

/// A small file holding one value, replaced atomically.
#[derive(Clone, Debug)]
pub struct MetaFile {
    path: PathBuf,
}

impl MetaFile {
    /// The file at `path`; its directory must exist. Nothing is read or written yet.
    pub fn new(path: impl Into<PathBuf>) -> MetaFile {
        MetaFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last value written completely, or None if none ever was.
    pub fn read(&self) -> Result<Option<Vec<u8>>> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&self.path)(e)),
        };
        decode(&bytes)
            .map(Some)
            .map_err(|(offset, damage)| Error::Corrupt {
                path: self.path.clone(),
                offset,
                damage,
            })
    }

    /// Replace the value; durable when this returns.
    pub fn write(&self, value: &[u8]) -> Result<()> {
        if value.len() > META_VALUE_BYTES_MAX {
            return Err(Error::RecordTooLarge {
                payload_bytes: value.len(),
                max: META_VALUE_BYTES_MAX,
            });
        }
        let tmp = dir::tmp_path(&self.path);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(Error::io(&tmp))?;
        file.write_all(&encode(value)).map_err(Error::io(&tmp))?;
        file.sync_all().map_err(Error::io(&tmp))?;
        fs::rename(&tmp, &self.path).map_err(Error::io(&self.path))?;
        dir::sync_dir(self.path.parent().unwrap_or(Path::new(".")))
    }
}

fn encode(value: &[u8]) -> Vec<u8> {
    let len = value.len() as u32; // bounded by META_VALUE_BYTES_MAX
    let mut bytes = Vec::with_capacity(META_HEADER_BYTES + value.len());
    bytes.extend_from_slice(&META_MAGIC);
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(&checksum(len, value).to_le_bytes());
    bytes.extend_from_slice(value);
    bytes
}

fn decode(bytes: &[u8]) -> Result<Vec<u8>, (u64, Damage)> {
    let Some((header, value)) = bytes.split_first_chunk::<META_HEADER_BYTES>() else {
        return Err((0, Damage::Short));
    };
    let [m0, m1, m2, m3, l0, l1, l2, l3, c0, c1, c2, c3] = *header;
    if [m0, m1, m2, m3] != META_MAGIC {
        return Err((0, Damage::BadMagic));
    }
    let len = u32::from_le_bytes([l0, l1, l2, l3]);
    if len as usize != value.len() {
        return Err((4, Damage::BadLength));
    }
    if u32::from_le_bytes([c0, c1, c2, c3]) != checksum(len, value) {
        return Err((8, Damage::BadChecksum));
    }
    Ok(value.to_vec())
}

fn checksum(len: u32, value: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), value)
}
