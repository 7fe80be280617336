//! Sessions of other protocols (FIX) on the native admission path: a translator opens a
//! session here and gets the same connection places, logon checks (failed logons slowed per
//! source, the key table, the broker's session cap), rate and in-flight limits, key-change
//! checks and sequencing as a native session. A protocol is a translator, never a second way
//! in.

use super::admission::InFlight;
use super::logon::LogonRefusal;
use super::*;

/// A session of another protocol, from its connection to its end. Dropping it gives back
/// every place it holds.
pub struct TranslatedSession {
    session: Arc<Session>,
    metrics: Arc<GatewayMetrics>,
    /// Logged on with a read-only key (a drop copy): it holds a session's place, and no
    /// principal, so it can sequence nothing.
    read_only: std::sync::atomic::AtomicBool,
}

/// How a logon ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TranslatedLogon {
    LoggedOn(BrokerId),
    /// This node does not lead (or cannot tell a key is unknown): the broker goes to the leader.
    NotLeader,
    Refused(String),
}

/// Why commands were not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotQueued {
    /// This node does not lead, or lost its majority.
    NotLeader,
    /// Over the session's rate or in-flight limit: the commands may be sent again later.
    Throttled(String),
    /// The session's key was changed or revoked: the session must end.
    KeyChanged,
    Refused(String),
}

impl std::fmt::Display for NotQueued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotQueued::NotLeader => write!(f, "this node is not the leader"),
            NotQueued::Throttled(why) => write!(f, "throttled: {why}"),
            NotQueued::KeyChanged => write!(f, "{KEY_CHANGED}"),
            NotQueued::Refused(why) => write!(f, "{why}"),
        }
    }
}

/// Commands queued for a translated session; [`Gateway::translated_answers`] waits for them.
pub struct Queued {
    in_flight: InFlight,
    arrived: Instant,
}

impl Gateway {
    /// A session for a connection from `remote`, holding a place in the pool of connections not
    /// yet logged on; `None` when the pool, or the source's share of it, is full.
    pub fn open_translated(&self, remote: std::net::SocketAddr) -> Option<TranslatedSession> {
        let Some(pending) = self.connections.try_pending(remote.ip()) else {
            self.metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            return None;
        };
        Some(TranslatedSession {
            session: Arc::new(Session::new(remote, pending, &self.session_limits)),
            metrics: Arc::clone(&self.metrics),
            read_only: Default::default(),
        })
    }

    /// Logs a translated session on with a broker's API key. The operator's key is refused:
    /// these protocols are for brokers.
    pub async fn log_on_translated(
        &self,
        translated: &TranslatedSession,
        api_key: &str,
    ) -> TranslatedLogon {
        let session = &translated.session;
        if session.principal.get().is_some() {
            return TranslatedLogon::Refused("this session has already logged on".into());
        }
        let keys_generation = self.keys.generation();
        let logon = self
            .log_on(session.remote.ip(), PROTOCOL_VERSION, api_key)
            .await
            .and_then(|(principal, digest)| {
                if principal.is_operator() {
                    return Err(LogonRefusal::Other(
                        "logon refused: the admin key administers over the native protocol; \
                         log on with a broker's key"
                            .into(),
                    ));
                }
                Ok((principal, digest))
            });
        let logon = match logon {
            Err(LogonRefusal::UnknownKey | LogonRefusal::NotLeader) if !self.publishing() => {
                self.metrics.logons_refused.fetch_add(1, Ordering::Relaxed);
                return TranslatedLogon::NotLeader;
            }
            other => other.and_then(|(principal, digest)| {
                self.admit_session(session, principal)?;
                Ok((principal, digest))
            }),
        };
        match logon {
            Ok((principal, digest)) => {
                if session.key.set(digest).is_err() || session.principal.set(principal).is_err() {
                    return TranslatedLogon::Refused("this session has already logged on".into());
                }
                session
                    .keys_checked
                    .store(keys_generation, Ordering::Release);
                self.metrics.logons.fetch_add(1, Ordering::Relaxed);
                self.metrics.sessions.fetch_add(1, Ordering::Relaxed);
                tracing::info!(target: "audit", event = "logon", broker = principal.broker.0, remote = %session.remote, "logged on");
                TranslatedLogon::LoggedOn(principal.broker)
            }
            Err(why) => {
                self.metrics.logons_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "audit", event = "logon refused", remote = %session.remote, %why, "logon refused");
                TranslatedLogon::Refused(why.to_string())
            }
        }
    }

    /// Logs a translated session on with a read-only key (a FIX drop copy's, from the node's
    /// brokers file): compared in constant time with `expected`, failures slowed per source
    /// address as every logon's. The session gets a session's place and no principal.
    pub async fn log_on_read_only(
        &self,
        translated: &TranslatedSession,
        key: &str,
        expected: KeyDigest,
    ) -> Result<(), String> {
        let session = &translated.session;
        let source = session.remote.ip();
        if self.failed_logons.throttled(source, Instant::now()) {
            self.metrics.logons_delayed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(FAILED_LOGON_DELAY).await;
        }
        let given = credentials::digest(key);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&given.0[..], &expected.0[..])) {
            self.failed_logons.failed(source, Instant::now());
            self.metrics.logons_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(target: "audit", event = "logon refused", remote = %session.remote, "read-only logon refused: wrong key");
            return Err("logon refused: wrong key".into());
        }
        let place = self.connections.try_session().ok_or_else(|| {
            format!(
                "logon refused: this node serves its most sessions ({BROKER_CONNECTIONS_MAX}); \
                 try again later or another node"
            )
        })?;
        let _ = session.place.set(place);
        session
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        translated.read_only.store(true, Ordering::Relaxed);
        self.metrics.logons.fetch_add(1, Ordering::Relaxed);
        self.metrics.sessions.fetch_add(1, Ordering::Relaxed);
        tracing::info!(target: "audit", event = "logon", read_only = true, remote = %session.remote, "logged on read-only");
        Ok(())
    }

    /// Whether the session's key is still its broker's.
    pub fn translated_key_valid(&self, translated: &TranslatedSession) -> bool {
        self.key_still_valid(&translated.session)
    }

    /// Admits commands of a logged-on session and queues them, in the order of the calls;
    /// their answers come from [`Gateway::translated_answers`].
    pub async fn queue_translated(
        &self,
        translated: &TranslatedSession,
        commands: Vec<Command>,
    ) -> Result<Queued, NotQueued> {
        let session = &translated.session;
        let Some(&principal) = session.principal.get() else {
            return Err(NotQueued::Refused("log on first".into()));
        };
        if !self.key_still_valid(session) {
            return Err(NotQueued::KeyChanged);
        }
        let arrived = Instant::now();
        let admitted = self
            .admit_commands(session, principal, commands)
            .map_err(|reply| match reply {
                Reply::NotLeader { .. } => NotQueued::NotLeader,
                Reply::Throttled { reason, .. } => {
                    self.metrics.throttled.fetch_add(1, Ordering::Relaxed);
                    NotQueued::Throttled(reason)
                }
                Reply::Error(why) => NotQueued::Refused(why),
                other => NotQueued::Refused(format!("{other:?}")),
            })?;
        Ok(Queued {
            in_flight: self.enqueue(admitted).await,
            arrived,
        })
    }

    /// The answers of queued commands: each one's outputs as the session may see them, or
    /// `NotQueued::NotLeader` when none was sequenced.
    pub async fn translated_answers(
        &self,
        queued: Queued,
    ) -> Result<Vec<Result<Vec<Output>, SubmitError>>, NotQueued> {
        let answers = self
            .settle(queued.in_flight)
            .await
            .map_err(|_| NotQueued::NotLeader)?;
        self.metrics.ack_latency.record(queued.arrived.elapsed());
        Ok(answers)
    }
}

impl Drop for TranslatedSession {
    fn drop(&mut self) {
        if let Some(principal) = self.session.principal.get() {
            self.metrics.sessions.fetch_sub(1, Ordering::Relaxed);
            tracing::info!(target: "audit", event = "logoff", broker = principal.broker.0, remote = %self.session.remote, "session ended");
        } else if self.read_only.load(Ordering::Relaxed) {
            self.metrics.sessions.fetch_sub(1, Ordering::Relaxed);
            tracing::info!(target: "audit", event = "logoff", read_only = true, remote = %self.session.remote, "session ended");
        }
    }
}
