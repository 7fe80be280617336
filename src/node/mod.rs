//! One node wired together: configuration, the threads and tasks, and its roles.

pub mod brokers;
pub mod config;
pub mod divergence_watch;
pub mod error;
pub mod metrics;
pub mod outputs;
pub mod run;
