//! The crate's one error type. Bad input from the caller and damage found on disk are values
//! here; a broken internal invariant is a bug and panics.

use std::fmt;
use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug)]
pub enum Error {
    /// An operating-system call failed on `path`.
    Io { path: PathBuf, source: io::Error },
    /// A file that must be intact is not: a segment other than the last, a segment's header, or
    /// a meta file. The log does not skip such damage, since records after it would be lost
    /// silently; an operator has to look.
    Corrupt {
        path: PathBuf,
        offset: u64,
        damage: Damage,
    },
    /// An append did not carry the next index.
    NonContiguous { expected: u64, got: u64 },
    /// A record does not fit in a segment.
    RecordTooLarge { payload_bytes: usize, max: usize },
    /// The index is not in the log (purged, not yet appended, or removed concurrently by a
    /// truncate or purge).
    IndexOutOfRange { index: u64, first: u64, next: u64 },
    /// The configuration breaks a limit.
    InvalidConfig(&'static str),
}

/// What is wrong at a place in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// Shorter than its header.
    Short,
    /// Wrong magic number or version.
    BadMagic,
    /// The header's checksum does not match.
    BadHeader,
    /// The segment header names another first index than the file name does.
    WrongFirstIndex { expected: u64, found: u64 },
    /// A record's length runs past the end of the file.
    BadLength,
    /// A record's checksum does not match (a torn or flipped record, or zeros).
    BadChecksum,
    /// A record carries another index than the one expected at its place.
    WrongIndex { expected: u64, found: u64 },
    /// The records end before the next segment's first index: some are missing.
    MissingRecords { expected: u64 },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Corrupt {
                path,
                offset,
                damage,
            } => write!(f, "{} at byte {offset}: {damage}", path.display()),
            Error::NonContiguous { expected, got } => {
                write!(f, "append of index {got}, but the next index is {expected}")
            }
            Error::RecordTooLarge { payload_bytes, max } => write!(
                f,
                "payload of {payload_bytes} bytes, but a segment holds at most {max}"
            ),
            Error::IndexOutOfRange { index, first, next } => {
                write!(f, "index {index} is not in the log [{first}, {next})")
            }
            Error::InvalidConfig(reason) => write!(f, "invalid log configuration: {reason}"),
        }
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Short => write!(f, "file shorter than its header"),
            Damage::BadMagic => write!(f, "not a log file of this version"),
            Damage::BadHeader => write!(f, "file header checksum mismatch"),
            Damage::WrongFirstIndex { expected, found } => {
                write!(
                    f,
                    "header says first index {found}, file name says {expected}"
                )
            }
            Damage::BadLength => write!(f, "record length runs past the end of the file"),
            Damage::BadChecksum => write!(f, "record checksum mismatch"),
            Damage::WrongIndex { expected, found } => {
                write!(f, "record index {found} where {expected} was expected")
            }
            Damage::MissingRecords { expected } => {
                write!(f, "records end before index {expected}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
