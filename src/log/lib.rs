//! The mmap event log (work in progress: see issue 3).
