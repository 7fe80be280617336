//! `exchange-cli report` (being written).
