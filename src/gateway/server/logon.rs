//! Sessions: logon with a broker's key or the admin key, and the audit of key changes.

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
    /// A well-formed key that no broker has, as far as this node has applied: only final on
    /// the leader, since keys are registered through the log.
    UnknownKey,
    /// Anything else (protocol version, a malformed key, the engine stopped): final.
    Other(String),
}

impl std::fmt::Display for LogonRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogonRefusal::UnknownKey => write!(f, "logon refused: unknown API key"),
            LogonRefusal::Other(why) => write!(f, "{why}"),
        }
    }
}

impl Gateway {
    /// Checks a logon; the session's principal when the key is known. Keys are registered
    /// through the log, so only the leader's "unknown" is final.
    pub(super) async fn log_on(
        &self,
        protocol_version: u16,
        api_key: &str,
    ) -> Result<Principal, LogonRefusal> {
        if protocol_version != PROTOCOL_VERSION {
            return Err(LogonRefusal::Other(format!(
                "protocol version {protocol_version} is not spoken here (this node speaks {PROTOCOL_VERSION})"
            )));
        }
        credentials::check_key(api_key)
            .map_err(|e| LogonRefusal::Other(format!("logon refused: {e}")))?;
        let digest = credentials::digest(api_key);
        if self.admin_digest == Some(digest) {
            return Ok(Principal {
                broker: BrokerId::OPERATOR,
            });
        }
        let broker = self
            .engine
            .query(move |engine| {
                engine
                    .brokers()
                    .find(|(_, known)| *known == digest)
                    .map(|(id, _)| id)
            })
            .await
            .map_err(|e| LogonRefusal::Other(e.to_string()))?;
        broker
            .map(|broker| Principal { broker })
            .ok_or(LogonRefusal::UnknownKey)
    }
}
