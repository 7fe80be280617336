//! Admission: a session's rate and in-flight limits, the stateless checks, and sequencing a
//! request's commands; who leads, as brokers are told it.

use super::logon::LogonRefusal;
use super::quota::Quota;
use super::*;

/// What one session may demand of the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// Commands per second, with a burst of one second's worth.
    pub commands_per_sec: u32,
    /// Commands sent but not yet answered. At most the engine's exactly-once window, so that
    /// everything a session may have to resend is still remembered.
    pub in_flight_max: u32,
    /// Sessions one broker may have logged on at once, on this node.
    pub sessions_per_broker_max: u32,
    /// Reads (depth, balances, order status, open orders, instruments, market snapshots) per
    /// second, with a burst of one second's worth: each costs the engine thread a question
    /// and most a leadership round.
    pub reads_per_sec: u32,
    /// Commands per second one broker may send over all its sessions on this node, with a
    /// burst of one second's worth: more sessions do not buy a broker more of the exchange.
    pub broker_commands_per_sec: u32,
    /// Reads per second one broker may make over all its sessions on this node.
    pub broker_reads_per_sec: u32,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            commands_per_sec: COMMANDS_PER_SEC_DEFAULT,
            in_flight_max: 4_096,
            sessions_per_broker_max: SESSIONS_PER_BROKER_MAX_DEFAULT,
            reads_per_sec: READS_PER_SEC_DEFAULT,
            broker_commands_per_sec: BROKER_COMMANDS_PER_SEC_DEFAULT,
            broker_reads_per_sec: BROKER_READS_PER_SEC_DEFAULT,
        }
    }
}

/// Commands one broker session may send a second by default: a busy trading system's order
/// gateway at its peak, with room; a tenth of what a 3-node cluster on a 2-core host sustains
/// (about 200,000 a second, docs/performance.md), so that no one session can fill it.
pub const COMMANDS_PER_SEC_DEFAULT: u32 = 20_000;

/// Commands one broker may send a second over all its sessions by default: a quarter of what
/// the cluster sustains, so that four brokers at their limit still leave room.
pub const BROKER_COMMANDS_PER_SEC_DEFAULT: u32 = 50_000;

/// Reads one broker may make a second over all its sessions by default.
pub const BROKER_READS_PER_SEC_DEFAULT: u32 = 5_000;

const _: () = assert!(4_096 <= exchange_engine::CLIENT_ORDER_ID_WINDOW);

/// Reads one broker session may make a second by default: a screen refreshing its balances and
/// books many times a second needs far fewer.
pub const READS_PER_SEC_DEFAULT: u32 = 1_000;

/// Sessions one broker may hold by default: an order gateway, a drop copy, a few desks and
/// their reconnects, with room to spare; far below the node's 4,096 connections, so that one
/// broker cannot take them all.
pub const SESSIONS_PER_BROKER_MAX_DEFAULT: u32 = 64;

/// Commands that passed admission, not yet queued.
pub(super) struct Admitted {
    permit: tokio::sync::OwnedSemaphorePermit,
    stamped: Vec<BrokerCommand>,
    accounts: Vec<Option<AccountId>>,
    principal: Principal,
}

/// Commands queued for sequencing: they hold their places in flight until answered.
pub struct InFlight {
    queued: crate::replication::sequencer::Queued,
    _permit: tokio::sync::OwnedSemaphorePermit,
    accounts: Vec<Option<AccountId>>,
    principal: Principal,
}

/// How many sessions each broker has logged on at this node.
pub type BrokerSessions = Quota<BrokerId>;

/// Each broker's rates over all its sessions on this node: one pair of buckets per broker
/// that logged on here (so as many as the cluster has brokers), shared by its sessions.
#[derive(Default)]
pub struct BrokerRates {
    by_broker: Mutex<std::collections::HashMap<BrokerId, Arc<BrokerBuckets>>>,
}

/// One broker's command and read buckets.
pub(super) struct BrokerBuckets {
    commands: Mutex<TokenBucket>,
    reads: Mutex<TokenBucket>,
}

impl BrokerRates {
    /// The buckets of `broker`, made full the first time it logs on here.
    pub(super) fn of(&self, broker: BrokerId, limits: &SessionLimits) -> Arc<BrokerBuckets> {
        let mut by_broker = self.by_broker.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(by_broker.entry(broker).or_insert_with(|| {
            Arc::new(BrokerBuckets {
                commands: Mutex::new(TokenBucket::new(limits.broker_commands_per_sec)),
                reads: Mutex::new(TokenBucket::new(limits.broker_reads_per_sec)),
            })
        }))
    }
}

/// A token bucket: `rate` tokens a second, holding at most one second's worth.
pub(super) struct TokenBucket {
    rate: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    pub(super) fn new(rate: u32) -> Self {
        TokenBucket {
            rate: rate as f64,
            tokens: rate as f64,
            refilled: Instant::now(),
        }
    }

    /// Takes `n` tokens, or says how long until they are there.
    pub(super) fn take(&mut self, n: u32) -> Result<(), Duration> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate.max(n as f64));
        self.refilled = now;
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (n as f64 - self.tokens) / self.rate.max(1.0),
            ))
        }
    }

    /// Returns `n` tokens taken for a request that another bucket refused.
    pub(super) fn give_back(&mut self, n: u32) {
        self.tokens = (self.tokens + n as f64).min(self.rate.max(n as f64));
    }
}

/// Why a request was throttled: which of the two `kind` rates it passed.
fn over_rate(kind: &str, by_broker: bool, session_rate: u32, broker_rate: u32) -> String {
    if by_broker {
        format!(
            "over the broker's {kind} rate over all its sessions on this node ({broker_rate} a \
             second)"
        )
    } else {
        format!("over the session's {kind} rate ({session_rate} a second)")
    }
}

/// Takes `n` tokens from the session's bucket, then from its broker's (when it has one),
/// giving the session's back if the broker's refuse: a refused request spends nothing.
fn take_both(
    session: &Mutex<TokenBucket>,
    broker: Option<&Mutex<TokenBucket>>,
    n: u32,
) -> Result<(), (Duration, bool)> {
    // Buckets are plain numbers: a panic elsewhere cannot leave one half-written.
    let mut own = session.lock().unwrap_or_else(|p| p.into_inner());
    own.take(n).map_err(|wait| (wait, false))?;
    if let Some(broker) = broker {
        let taken = broker.lock().unwrap_or_else(|p| p.into_inner()).take(n);
        if let Err(wait) = taken {
            own.give_back(n);
            return Err((wait, true));
        }
    }
    Ok(())
}

impl Gateway {
    /// Gives a session that logged on its places: one of its broker's (a broker holds at most
    /// `sessions_per_broker_max`, so that one broker cannot take every connection; the
    /// operator is not counted), then one of the node's sessions, and gives back its place in
    /// the pool of connections not yet logged on.
    pub(super) fn admit_session(
        &self,
        session: &Session,
        principal: Principal,
    ) -> Result<(), LogonRefusal> {
        if !principal.is_operator() {
            let max = self.session_limits.sessions_per_broker_max;
            let slot = self
                .broker_sessions
                .take(principal.broker, max, u32::MAX)
                .ok_or_else(|| {
                    tracing::warn!(target: "audit", event = "logon refused", broker = principal.broker.0, remote = %session.remote, "logon refused: too many sessions");
                    LogonRefusal::Other(format!(
                        "logon refused: broker {} already has {max} sessions on this node, the \
                         most one broker may hold (--broker-sessions-max)",
                        principal.broker.0
                    ))
                })?;
            let _ = session.slot.set(slot);
            let _ = session
                .broker_rates
                .set(self.broker_rates.of(principal.broker, &self.session_limits));
        }
        let place = self.connections.try_session().ok_or_else(|| {
            LogonRefusal::Other(format!(
                "logon refused: this node serves its most sessions ({BROKER_CONNECTIONS_MAX}); \
                 try again later or another node"
            ))
        })?;
        let _ = session.place.set(place);
        session
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        Ok(())
    }

    /// Admits one read of a broker's session against its read rate; the reply that refuses
    /// it, if any. The operator's reads are not counted.
    pub(super) fn admit_read(&self, session: &Session, principal: Principal) -> Option<Reply> {
        if principal.is_operator() {
            return None;
        }
        let broker = session.broker_rates.get().map(|b| &b.reads);
        let (wait, by_broker) = take_both(&session.read_bucket, broker, 1).err()?;
        self.metrics.throttled.fetch_add(1, Ordering::Relaxed);
        let limits = &self.session_limits;
        Some(Reply::Throttled {
            reason: over_rate(
                "read",
                by_broker,
                limits.reads_per_sec,
                limits.broker_reads_per_sec,
            ),
            retry_after_ms: wait.as_millis().max(1) as u64,
        })
    }

    /// Admits commands and sequences them: the stateless checks (size, leadership,
    /// permission), then the session's in-flight bound, then its rate, so that a refused
    /// request spends nothing. Answers each command's outputs as the session may see them,
    /// or the reply that refuses the whole request.
    pub(super) async fn sequence(
        &self,
        session: &Session,
        principal: Principal,
        commands: Vec<Command>,
    ) -> Result<Vec<Result<Vec<Output>, SubmitError>>, Reply> {
        let admitted = self.admit_commands(session, principal, commands)?;
        self.settle(self.enqueue(admitted).await).await
    }

    /// The checks of [`Gateway::sequence`], without waiting: the commands stamped with their
    /// broker and holding their places among the session's commands in flight.
    pub(super) fn admit_commands(
        &self,
        session: &Session,
        principal: Principal,
        commands: Vec<Command>,
    ) -> Result<Admitted, Reply> {
        let count = commands.len();
        if count > SUBMIT_BATCH_COMMANDS_MAX {
            return Err(Reply::Error(format!(
                "a batch holds at most {SUBMIT_BATCH_COMMANDS_MAX} commands, got {count}"
            )));
        }
        if count > self.session_limits.in_flight_max as usize {
            return Err(Reply::Error(format!(
                "a request may carry at most {} commands on this node (its in-flight limit)",
                self.session_limits.in_flight_max
            )));
        }
        if self.leadership.quorum_lost() {
            return Err(Reply::NotLeader {
                leader_id: None,
                broker: None,
            });
        }
        if !principal.is_operator() && commands.iter().any(|c| matches!(c, Command::Admin(_))) {
            return Err(Reply::Error(
                "not permitted: admin commands need the admin credential".into(),
            ));
        }
        let throttled = |reason: String, retry_after: Duration| Reply::Throttled {
            reason,
            retry_after_ms: retry_after.as_millis().max(1) as u64,
        };
        let permit = Arc::clone(&session.in_flight)
            .try_acquire_many_owned(count as u32)
            .map_err(|_| {
                throttled(
                    format!(
                        "over the session's limit of {} commands in flight",
                        self.session_limits.in_flight_max
                    ),
                    Duration::from_millis(1),
                )
            })?;
        let broker = session.broker_rates.get().map(|b| &b.commands);
        take_both(&session.bucket, broker, count as u32).map_err(|(wait, by_broker)| {
            let limits = &self.session_limits;
            let reason = over_rate(
                "command",
                by_broker,
                limits.commands_per_sec,
                limits.broker_commands_per_sec,
            );
            throttled(reason, wait)
        })?;
        self.metrics
            .commands
            .fetch_add(count as u64, Ordering::Relaxed);
        let accounts = commands.iter().map(Command::account).collect();
        let stamped = commands
            .into_iter()
            .map(|command| BrokerCommand {
                broker: principal.broker,
                command,
            })
            .collect();
        Ok(Admitted {
            permit,
            stamped,
            accounts,
            principal,
        })
    }

    /// Queues admitted commands for sequencing, in the order this is called.
    pub(super) async fn enqueue(&self, admitted: Admitted) -> InFlight {
        let Admitted {
            permit,
            stamped,
            accounts,
            principal,
        } = admitted;
        InFlight {
            queued: self.sequencer.enqueue_many(stamped).await,
            _permit: permit,
            accounts,
            principal,
        }
    }

    /// Waits for queued commands' answers: each command's outputs as the session may see
    /// them, or the reply that refuses them all (not the leader, stopping).
    pub(super) async fn settle(
        &self,
        in_flight: InFlight,
    ) -> Result<Vec<Result<Vec<Output>, SubmitError>>, Reply> {
        let InFlight {
            queued,
            _permit,
            accounts,
            principal,
        } = in_flight;
        let results = queued.answers().await;
        // Not the leader, or stopping: nothing was sequenced (every command got the same
        // answer), and the broker is sent elsewhere.
        match results.first() {
            Some(Err(SubmitError::NotLeader { .. })) => return Err(self.not_leader()),
            Some(Err(SubmitError::Stopped)) => {
                return Err(Reply::NotLeader {
                    leader_id: None,
                    broker: None,
                })
            }
            _ => {}
        }
        Ok(results
            .into_iter()
            .zip(accounts)
            .map(|(result, account)| result.map(|outputs| principal.visible(account, outputs)))
            .collect())
    }

    pub(super) fn not_leader(&self) -> Reply {
        let (leader_id, broker) = self.leadership.leader_elsewhere();
        Reply::NotLeader { leader_id, broker }
    }

    /// Makes a read linearizable (`Leadership::confirm`): a deposed leader answers
    /// `NotLeader` instead of reading a stale state.
    pub(super) async fn confirm_leadership(&self) -> Result<(), Reply> {
        self.leadership
            .confirm()
            .await
            .map_err(|_| self.not_leader())
    }

    /// Whether this node leads and has heard from a majority lately: only then it serves
    /// commands and publishes.
    pub fn publishing(&self) -> bool {
        self.leadership.publishing()
    }
}
