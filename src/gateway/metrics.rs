//! What the broker endpoint counts: commands received, throttled, and the time from a
//! request's arrival to its answer (committed and applied). Atomics only: recording never
//! blocks a request.

use std::sync::atomic::AtomicU64;

use crate::latency::LatencyHistogram;

#[derive(Debug, Default)]
pub struct GatewayMetrics {
    /// Commands brokers sent that were admitted for sequencing.
    pub commands: AtomicU64,
    /// Requests refused for a session's rate or in-flight limit.
    pub throttled: AtomicU64,
    /// Sessions that logged on.
    pub logons: AtomicU64,
    /// Logons refused.
    pub logons_refused: AtomicU64,
    /// Sessions logged on now.
    pub sessions: AtomicU64,
    /// Logons held back because their address failed to log on too often lately.
    pub logons_delayed: AtomicU64,
    /// Sessions ended because their broker's key was changed or revoked.
    pub sessions_ended_by_key_change: AtomicU64,
    /// Connections refused because the pending pool, or the source's share of it, was full.
    pub connections_refused: AtomicU64,
    /// Connections asked to validate their address (QUIC Retry) first.
    pub address_validations: AtomicU64,
    /// Market data messages sent to subscribers (each subscriber's copy counts).
    pub market_messages: AtomicU64,
    /// Frames those messages went out in (several messages of a burst share one).
    pub market_frames: AtomicU64,
    /// Subscribers that fell behind and were sent a fresh snapshot.
    pub market_resyncs: AtomicU64,
    /// From a Submit or SubmitBatch's arrival to its answer.
    pub ack_latency: LatencyHistogram,
}
