//! The exchange cluster (work in progress).
pub use exchange_domain as domain;
