//! Sessions: logon with a broker's key or the admin key, and the audit of key changes.

use subtle::ConstantTimeEq;

use super::*;

/// The audit line of a broker key set or revoked by a command (never the key itself).
pub(super) fn audit_key_change(session: &Session, command: &Command, outputs: &[Output]) {
    let Command::Admin(AdminCommand::SetBrokerKey { broker, key_digest }) = command else {
        return;
    };
    if outputs.iter().any(|o| o.event.reject_reason().is_some()) {
        return;
    }
    let change = if key_digest.is_revoked() {
        "revoked"
    } else {
        "set"
    };
    tracing::info!(target: "audit", event = "broker key", broker = broker.0, change, remote = %session.remote, "broker key changed");
}

/// Why a logon is refused.
#[derive(Debug)]
pub(super) enum LogonRefusal {
    /// A well-formed key that no broker has: said only by a leader that confirmed it leads
    /// and applied everything committed before it looked, since keys come through the log.
    UnknownKey,
    /// This node cannot tell: it does not lead (or cannot confirm it does). The broker goes to
    /// the leader.
    NotLeader,
    /// Anything else (protocol version, a malformed key, the engine stopped): final.
    Other(String),
}

impl std::fmt::Display for LogonRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogonRefusal::UnknownKey => write!(f, "logon refused: unknown API key"),
            LogonRefusal::NotLeader => write!(f, "logon refused: this node is not the leader"),
            LogonRefusal::Other(why) => write!(f, "{why}"),
        }
    }
}

/// The reply a session whose key was rotated or revoked gets before it is closed.
pub(super) const KEY_CHANGED: &str =
    "session ended: this broker's key was changed or revoked; log on with the current key";

/// Failed logons one source address may make within `FAILED_LOGON_WINDOW` before every logon
/// from it waits `FAILED_LOGON_DELAY` for its answer until the window has passed. A guesser
/// gets one answer a second a connection; a broker sharing its address is slowed, never
/// locked out (a lock-out would let a guesser lock out every broker behind its address).
pub const FAILED_LOGONS_PER_SOURCE_MAX: u32 = 5;
pub const FAILED_LOGON_WINDOW: Duration = Duration::from_secs(60);
pub const FAILED_LOGON_DELAY: Duration = Duration::from_secs(1);
/// Addresses remembered at most (bounded memory under a spread-out attack); past it, the
/// oldest half of the record is forgotten.
const FAILED_LOGON_SOURCES_MAX: usize = 65_536;

/// Failed logons per source address.
#[derive(Default)]
pub struct FailedLogons {
    by_source: Mutex<std::collections::HashMap<std::net::IpAddr, (u32, Instant)>>,
}

impl FailedLogons {
    /// Whether `source` failed too often lately.
    pub(super) fn throttled(&self, source: std::net::IpAddr, now: Instant) -> bool {
        let by_source = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
        by_source.get(&source).is_some_and(|&(failures, since)| {
            failures >= FAILED_LOGONS_PER_SOURCE_MAX
                && now.saturating_duration_since(since) < FAILED_LOGON_WINDOW
        })
    }

    pub(super) fn failed(&self, source: std::net::IpAddr, now: Instant) {
        let mut by_source = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
        if by_source.len() >= FAILED_LOGON_SOURCES_MAX {
            by_source.retain(|_, (_, since)| {
                now.saturating_duration_since(*since) < FAILED_LOGON_WINDOW
            });
            if by_source.len() >= FAILED_LOGON_SOURCES_MAX {
                let mut times: Vec<Instant> = by_source.values().map(|(_, since)| *since).collect();
                times.sort_unstable();
                let cut = times[times.len() / 2];
                by_source.retain(|_, (_, since)| *since > cut);
            }
        }
        let entry = by_source.entry(source).or_insert((0, now));
        if now.saturating_duration_since(entry.1) >= FAILED_LOGON_WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
    }
}

impl Gateway {
    /// Checks a logon from `source`; the session's principal and the digest of the key it
    /// used, when the key is known.
    pub(super) async fn log_on(
        &self,
        source: std::net::IpAddr,
        protocol_version: u16,
        api_key: &str,
    ) -> Result<(Principal, KeyDigest), LogonRefusal> {
        if protocol_version != PROTOCOL_VERSION {
            return Err(LogonRefusal::Other(format!(
                "protocol version {protocol_version} is not spoken here (this node speaks {PROTOCOL_VERSION})"
            )));
        }
        if self.failed_logons.throttled(source, Instant::now()) {
            self.metrics.logons_delayed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(FAILED_LOGON_DELAY).await;
        }
        let result = self.check_key(api_key).await;
        if matches!(
            result,
            Err(LogonRefusal::UnknownKey | LogonRefusal::Other(_))
        ) {
            self.failed_logons.failed(source, Instant::now());
        }
        result
    }

    async fn check_key(&self, api_key: &str) -> Result<(Principal, KeyDigest), LogonRefusal> {
        credentials::check_key(api_key)
            .map_err(|e| LogonRefusal::Other(format!("logon refused: {e}")))?;
        // The admin key is the node's own configuration, never replicated: plain SHA-256.
        let admin = credentials::digest(api_key);
        if self
            .admin_digest
            .is_some_and(|digest| bool::from(digest.0.ct_eq(&admin.0)))
        {
            return Ok((
                Principal {
                    broker: BrokerId::OPERATOR,
                },
                admin,
            ));
        }
        let digest = credentials::broker_digest(self.keys.salt(), api_key);
        if let Some(broker) = self.keys.broker_of(&digest) {
            return Ok((Principal { broker }, digest));
        }
        // Not known here, yet perhaps registered in an entry this node has not applied (it
        // just started, or is behind). Only a leader that confirms it leads may say no: the
        // confirmation returns once everything committed before it is applied, and so in the
        // key table (the engine thread records a key change before it answers the entry). The
        // salt too: a node that had not applied it yet digests the key again.
        self.leadership
            .confirm()
            .await
            .map_err(|_| LogonRefusal::NotLeader)?;
        let digest = credentials::broker_digest(self.keys.salt(), api_key);
        self.keys
            .broker_of(&digest)
            .map(|broker| (Principal { broker }, digest))
            .ok_or(LogonRefusal::UnknownKey)
    }

    /// Registers a broker or gives it a new key (empty: revoked), for the operator: the key
    /// is digested here with the cluster's salt (settled first on a new cluster).
    pub(super) async fn set_broker_key(
        &self,
        session: &Session,
        principal: Principal,
        broker: u32,
        key: &str,
    ) -> Reply {
        let key_digest = if key.is_empty() {
            KeyDigest::REVOKED
        } else {
            if let Err(why) = credentials::check_key(key) {
                return Reply::Error(format!("refused: {why}"));
            }
            match crate::gateway::key_salt::settle(&self.sequencer, &self.engine).await {
                Ok(salt) => credentials::broker_digest(salt, key),
                Err(_) if !self.publishing() => return self.not_leader(),
                Err(e) => return Reply::Error(e.to_string()),
            }
        };
        let command = Command::Admin(AdminCommand::SetBrokerKey {
            broker: BrokerId(broker),
            key_digest,
        });
        match self.sequence(session, principal, vec![command]).await {
            Ok(mut results) => super::one_answer(session, &command, results.pop()),
            Err(reply) => reply,
        }
    }

    /// Whether the key the session logged on with is still its broker's (the operator's key
    /// is the node's own configuration). One atomic load while no key changes.
    pub(super) fn key_still_valid(&self, session: &Session) -> bool {
        let (Some(principal), Some(digest)) = (session.principal.get(), session.key.get()) else {
            return true;
        };
        if principal.is_operator() {
            return true;
        }
        let generation = self.keys.generation();
        if session.keys_checked.load(Ordering::Acquire) == generation {
            return true;
        }
        let valid = self.keys.holds(principal.broker, digest);
        if valid {
            session.keys_checked.store(generation, Ordering::Release);
        } else if !session.ended_by_key_change.swap(true, Ordering::Relaxed) {
            self.metrics
                .sessions_ended_by_key_change
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(target: "audit", event = "session ended by key change", broker = principal.broker.0, remote = %session.remote, "session ended: its key was changed or revoked");
        }
        valid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_that_keeps_failing_is_slowed_for_the_window() {
        let failed = FailedLogons::default();
        let (source, other) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let start = Instant::now();
        for _ in 0..FAILED_LOGONS_PER_SOURCE_MAX {
            assert!(!failed.throttled(source, start));
            failed.failed(source, start);
        }
        assert!(failed.throttled(source, start + Duration::from_secs(1)));
        // Another address is not held up, and the first is not after the window.
        assert!(!failed.throttled(other, start));
        assert!(!failed.throttled(source, start + FAILED_LOGON_WINDOW));
        failed.failed(source, start + FAILED_LOGON_WINDOW);
        assert!(!failed.throttled(source, start + FAILED_LOGON_WINDOW));
    }
}
