//! The reporter: committed outputs into SQLite (being written).
