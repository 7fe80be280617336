//! The FIX acceptor: TCP connections, the session layer (logon, sequence numbers, heartbeats,
//! resends, logout) and the hand-over of application messages to [`super::orders`] and of
//! their commands to the gateway's admission path.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use exchange_client::catalog::Catalog;
use exchange_domain::{
    AdminCommand, BrokerCommand, BrokerId, Command, CompId, Event, FixSessionMark, KeyDigest,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex as AsyncMutex;

use super::codec::{tag, utc_timestamp, Builder, Frame, Framer, Message};
use super::orders::{exec_id_of, Translated};
use super::session::{SessionState, NUMBERS_RESERVED_AHEAD, QUEUED_INBOUND_MAX};
use super::EXCHANGE_COMP_ID;
use crate::gateway::server::{catalog_of, Gateway, NotQueued, TranslatedLogon, TranslatedSession};

/// A connection that has not sent its Logon within this time is closed.
pub const LOGON_TIMEOUT: Duration = Duration::from_secs(5);

/// HeartBtInt(108) accepted, in seconds.
pub const HEART_BT_INT_MAX: u64 = 600;

/// A TestRequest asking for receipt of reports that is not answered within this is asked
/// again (its answer may have been lost in a gap).
const RECEIPT_ASKED_AGAIN_AFTER: Duration = Duration::from_secs(5);

/// Reports the journal hands over at a time.
const REPORTS_PER_BATCH: usize = 1_024;

/// Who leads, as the FIX acceptor tells a broker that logged on to a follower: the leader's
/// FIX address, when known.
pub type LeaderFixAddress = Arc<dyn Fn(u64) -> Option<String> + Send + Sync>;

/// Counters of the FIX acceptor.
#[derive(Default)]
pub struct FixMetrics {
    pub sessions: AtomicU64,
    pub logons: AtomicU64,
    pub logons_refused: AtomicU64,
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    /// Frames ignored because their framing, BodyLength or CheckSum was broken.
    pub garbled: AtomicU64,
    pub session_rejects: AtomicU64,
    pub resend_requests: AtomicU64,
}

/// One session's place in the acceptor: its state, and whether a connection holds it.
struct Slot {
    /// Whose session it is: a CompID given to another broker starts a session of its own.
    broker: BrokerId,
    state: Arc<AsyncMutex<SessionState>>,
    active: bool,
    /// The Raft term this node led in when the state was made: in a later term another
    /// leader may have gone on with the session, and its replicated mark is the truth.
    term: u64,
}

/// The FIX acceptor of one node.
pub struct FixServer {
    gateway: Gateway,
    /// SenderCompID of each drop copy: its key's digest and whose reports it reads (`None`:
    /// every broker's).
    drop_copies: BTreeMap<String, (KeyDigest, Option<BrokerId>)>,
    sessions: Mutex<HashMap<String, Slot>>,
    catalog: Mutex<(Arc<Catalog>, Option<Instant>)>,
    leader_fix: LeaderFixAddress,
    pub metrics: Arc<FixMetrics>,
}

/// The catalog is asked again at most this often when a symbol is not found in it.
const CATALOG_REFRESH_MIN: Duration = Duration::from_millis(200);

impl FixServer {
    pub fn new(
        gateway: Gateway,
        drop_copies: BTreeMap<String, (KeyDigest, Option<BrokerId>)>,
        leader_fix: LeaderFixAddress,
        metrics: Arc<FixMetrics>,
    ) -> Self {
        FixServer {
            gateway,
            drop_copies,
            sessions: Mutex::new(HashMap::new()),
            catalog: Mutex::new((Arc::new(Catalog::default()), None)),
            leader_fix,
            metrics,
        }
    }

    /// The engine's symbols and assets; asked of the engine again when `stale` says the copy
    /// lacks something (at most every `CATALOG_REFRESH_MIN`).
    async fn catalog(&self, stale: impl Fn(&Catalog) -> bool) -> Arc<Catalog> {
        let (current, asked) = {
            let c = self.catalog.lock().unwrap_or_else(|p| p.into_inner());
            (Arc::clone(&c.0), c.1)
        };
        if !stale(&current) || asked.is_some_and(|at| at.elapsed() < CATALOG_REFRESH_MIN) {
            return current;
        }
        let fresh = match self.gateway.engine.query(catalog_of).await {
            Ok(catalog) => Arc::new(catalog),
            Err(_) => return current,
        };
        *self.catalog.lock().unwrap_or_else(|p| p.into_inner()) =
            (Arc::clone(&fresh), Some(Instant::now()));
        fresh
    }
}

/// Why outbound numbers could not be reserved.
#[derive(Debug)]
struct NotReserved;

impl FixServer {
    /// Queues a mark of a session (where it stands, for a later leader) for sequencing.
    async fn propose_mark(
        &self,
        comp_id: &str,
        mark: FixSessionMark,
    ) -> Option<crate::replication::sequencer::Queued> {
        let comp_id = CompId::new(comp_id).ok()?;
        let command = Command::Admin(AdminCommand::MarkFixSession { comp_id, mark });
        Some(
            self.gateway
                .sequencer
                .enqueue_many(vec![BrokerCommand::operator(command)])
                .await,
        )
    }

    /// Proposes the session's mark unless it says what the last one said; nobody waits for
    /// it (a later mark carries as much).
    async fn mark_if_changed(&self, state: &mut SessionState) {
        let mark = state.mark();
        if state.marked == Some(mark) || state.retired {
            return;
        }
        state.marked = Some(mark);
        let _ = self.propose_mark(&state.comp_id, mark).await;
    }

    /// Makes sure `count` more outbound numbers may be used: asks for the next block of
    /// numbers when half the reservation is used, and waits for it only when they run out
    /// (the session's lock is held meanwhile: nothing else may number a message).
    async fn reserve(
        &self,
        shared: &Arc<AsyncMutex<SessionState>>,
        state: &mut SessionState,
        count: u64,
    ) -> Result<(), NotReserved> {
        if state.retired {
            return Err(NotReserved);
        }
        let needed = state.next_out + count;
        let low = state.numbers_left() < count + NUMBERS_RESERVED_AHEAD / 2;
        let asking = state.out_reserving > state.out_reserved;
        if needed <= state.out_reserved && (!low || asking) {
            return Ok(());
        }
        let target = needed + NUMBERS_RESERVED_AHEAD;
        // A mark holds numbers below 2^32 (MsgSeqNum is a 32-bit int in most FIX engines).
        if target > u64::from(u32::MAX) {
            return Err(NotReserved);
        }
        state.out_reserving = state.out_reserving.max(target);
        let mark = state.mark();
        state.marked = Some(mark);
        let Some(queued) = self.propose_mark(&state.comp_id, mark).await else {
            return Err(NotReserved);
        };
        if needed > state.out_reserved {
            if !mark_committed(queued.answers().await) {
                state.out_reserving = state.out_reserved;
                return Err(NotReserved);
            }
            state.out_reserved = state.out_reserved.max(mark.next_out.into());
            return if needed <= state.out_reserved {
                Ok(())
            } else {
                Err(NotReserved)
            };
        }
        let shared = Arc::clone(shared);
        let epoch = state.epoch;
        tokio::spawn(async move {
            let committed = mark_committed(queued.answers().await);
            let mut state = shared.lock().await;
            if state.epoch != epoch || state.retired {
                // Reset or replaced since: this reservation is not the session's any more.
            } else if committed {
                state.out_reserved = state.out_reserved.max(mark.next_out.into());
            } else if state.out_reserving == u64::from(mark.next_out) {
                state.out_reserving = state.out_reserved;
            }
        });
        Ok(())
    }
}

/// Whether a mark's command was committed and applied as a mark.
fn mark_committed(answers: Vec<crate::replication::sequencer::Answer>) -> bool {
    matches!(
        answers.first(),
        Some(Ok(outputs)) if outputs.iter().any(|o| matches!(o.event, Event::FixSessionMarked { .. }))
    )
}

/// Accepts FIX connections (over TLS with `tls`) until the listener fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: Arc<FixServer>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("FIX accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(translated) = server.gateway.open_translated(remote) else {
            // The pool of connections not yet logged on, or this source's share, is full.
            drop(stream);
            continue;
        };
        let server = Arc::clone(&server);
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    let (reader, writer) = tokio::io::split(stream);
                    run_connection(server, translated, remote, reader, writer).await;
                }
                // The handshake counts against the logon's deadline.
                Some(tls) => match tokio::time::timeout(LOGON_TIMEOUT, tls.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let (reader, writer) = tokio::io::split(stream);
                        run_connection(server, translated, remote, reader, writer).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%remote, "FIX TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%remote, "FIX TLS handshake timed out"),
                },
            }
        });
    }
}

/// What handling a message leaves the connection to do.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    /// Close the connection (a Logout was sent, or none is due).
    Close,
}

/// Order messages that arrive together are queued together, at most this many at a time.
const ORDERS_PER_BATCH_MAX: usize = 256;

/// Commands of order messages translated and not yet queued.
#[derive(Default)]
struct OrderBatch {
    commands: Vec<Command>,
    /// MsgSeqNum of the first message in the batch.
    first_seq: u64,
    catalog: Option<Arc<Catalog>>,
}

/// Whose reports a session gets, and whether it may send orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// A broker's order entry session: its orders in, its reports out.
    Orders(BrokerId),
    /// A drop copy: read only; one broker's reports, or (`None`) every broker's.
    DropCopy(Option<BrokerId>),
}

/// Frames waiting for the connection's writer, at most: past it the session waits (a broker
/// that does not read its reports slows only itself).
const OUTBOX_FRAMES_MAX: usize = 4_096;

/// The most bytes the writer puts in one write.
const WRITE_BYTES_MAX: usize = 256 * 1024;

/// A logged-on session's connection.
struct Connection {
    server: Arc<FixServer>,
    translated: TranslatedSession,
    remote: SocketAddr,
    state: Arc<AsyncMutex<SessionState>>,
    /// Numbered messages, in order, to the connection's writer.
    outbox: tokio::sync::mpsc::Sender<Vec<u8>>,
    broker: BrokerId,
    scope: Scope,
    comp_id: String,
    heart_bt_int: Duration,
    last_sent: Mutex<Instant>,
    batch: Mutex<OrderBatch>,
    /// The keys' generation at which the CompID was last found still this broker's.
    comp_id_checked: std::sync::atomic::AtomicU64,
}

async fn run_connection<R, W>(
    server: Arc<FixServer>,
    translated: TranslatedSession,
    remote: SocketAddr,
    mut reader: R,
    mut writer: W,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut framer = Framer::default();
    let mut buffer = vec![0u8; 16 * 1024];
    // The Logon: the first message, within the deadline.
    let deadline = tokio::time::Instant::now() + LOGON_TIMEOUT;
    let logon = loop {
        match framer.next_frame() {
            Some(Frame::Message(bytes)) => match Message::parse(bytes) {
                Ok(message) => break message,
                Err(why) => {
                    server.metrics.garbled.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%remote, %why, "garbled FIX message before logon ignored");
                    continue;
                }
            },
            Some(Frame::Garbled(_)) => {
                server.metrics.garbled.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            None => {}
        }
        match tokio::time::timeout_at(deadline, reader.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => framer.extend(&buffer[..n]),
            _ => return,
        }
    };
    server
        .metrics
        .messages_received
        .fetch_add(1, Ordering::Relaxed);
    let Some(connection) = log_on(&server, translated, remote, &logon, &mut writer).await else {
        let _ = writer.shutdown().await;
        return;
    };
    // The connection's writer: what the session numbered, in order, several messages to a
    // write when they queue up; the session's lock is never held across a socket write.
    let (outbox, mut frames) = tokio::sync::mpsc::channel::<Vec<u8>>(OUTBOX_FRAMES_MAX);
    let (stop_writing, mut writing_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut writer_task = tokio::spawn(async move {
        let mut bytes = Vec::with_capacity(64 * 1024);
        let mut stopping = false;
        loop {
            let first = if stopping {
                frames.recv().await
            } else {
                tokio::select! {
                    biased;
                    first = frames.recv() => first,
                    // Polled once at most: a finished oneshot must not be polled again.
                    _ = &mut writing_stopped => {
                        // What was queued before the end still goes (a Logout, last reports).
                        stopping = true;
                        frames.close();
                        frames.recv().await
                    }
                }
            };
            let Some(first) = first else { break };
            bytes.clear();
            bytes.extend_from_slice(&first);
            while bytes.len() < WRITE_BYTES_MAX {
                match frames.try_recv() {
                    Ok(more) => bytes.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    let connection = Arc::new(Connection {
        outbox,
        ..connection
    });
    server.metrics.logons.fetch_add(1, Ordering::Relaxed);
    server.metrics.sessions.fetch_add(1, Ordering::Relaxed);
    tracing::info!(target: "audit", event = "fix logon", broker = connection.broker.0, comp_id = %connection.comp_id, %remote, "FIX session logged on");

    let reports = tokio::spawn(Arc::clone(&connection).send_reports());
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_received = Instant::now();
    let mut test_request_sent: Option<Instant> = None;
    let flow = 'session: loop {
        // Messages already framed first (the Logon's read may have brought more).
        while let Some(frame) = framer.next_frame() {
            let message = match frame {
                Frame::Message(bytes) => Message::parse(bytes),
                Frame::Garbled(why) => Err(why),
            };
            let message = match message {
                Ok(message) => message,
                Err(why) => {
                    server.metrics.garbled.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(comp_id = %connection.comp_id, %why, "garbled FIX message ignored");
                    continue;
                }
            };
            server
                .metrics
                .messages_received
                .fetch_add(1, Ordering::Relaxed);
            last_received = Instant::now();
            test_request_sent = None;
            if connection.receive(message).await == Flow::Close {
                // Orders received before the message that ended the session are not lost:
                // they are queued (their reports wait for the next logon).
                connection.flush_orders().await;
                break 'session Flow::Close;
            }
        }
        // Everything this read brought is handled: its orders go out together.
        if connection.flush_orders().await == Flow::Close {
            break 'session Flow::Close;
        }
        {
            // Every message taken so far had its commands queued: a mark may say so.
            let mut state = connection.state.lock().await;
            state.in_sequenced = state.next_in;
        }
        tokio::select! {
            read = reader.read(&mut buffer) => match read {
                Ok(n) if n > 0 => framer.extend(&buffer[..n]),
                _ => break Flow::Close,
            },
            _ = tick.tick() => {
                if reports.is_finished() {
                    break Flow::Close;
                }
                if !connection.server.gateway.publishing() {
                    connection.logout("this node is no longer the leader; log on to the new leader").await;
                    break Flow::Close;
                }
                if !connection.server.gateway.translated_key_valid(&connection.translated) {
                    connection.logout("session ended: this broker's key was changed or revoked").await;
                    break Flow::Close;
                }
                let quiet = last_received.elapsed();
                let grace = connection.heart_bt_int + connection.heart_bt_int / 5 + Duration::from_millis(500);
                match test_request_sent {
                    Some(sent) if sent.elapsed() >= grace => {
                        connection.logout("no answer to a TestRequest: the session is closed").await;
                        break Flow::Close;
                    }
                    None if quiet >= grace => {
                        let id = format!("TEST-{}", utc_timestamp(SystemTime::now()));
                        let _ = connection.send_admin(Builder::new("1").field(tag::TEST_REQ_ID, id)).await;
                        test_request_sent = Some(Instant::now());
                    }
                    _ => {}
                }
                if connection.ask_receipt_and_mark().await.is_err() {
                    break Flow::Close;
                }
                let since_sent = connection.last_sent.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
                if since_sent >= connection.heart_bt_int && connection.send_admin(Builder::new("0")).await.is_err() {
                    break Flow::Close;
                }
            }
        }
    };
    debug_assert_eq!(flow, Flow::Close);
    reports.abort();
    {
        // Where the session ends, for whichever leader it logs on to next.
        let mut state = connection.state.lock().await;
        state.in_sequenced = state.next_in;
        server.mark_if_changed(&mut state).await;
    }
    let _ = stop_writing.send(());
    // A broker that does not read keeps neither the task nor the socket: a second at most.
    if tokio::time::timeout(Duration::from_secs(1), &mut writer_task)
        .await
        .is_err()
    {
        writer_task.abort();
    }
    server.metrics.sessions.fetch_sub(1, Ordering::Relaxed);
    {
        let mut sessions = server.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = sessions.get_mut(&connection.comp_id) {
            slot.active = false;
        }
    }
    tracing::info!(target: "audit", event = "fix logoff", broker = connection.broker.0, comp_id = %connection.comp_id, %remote, "FIX session ended");
}

/// Writes a message outside any session (a refused logon's Logout): numbered 1, since no
/// session state is the broker's yet.
async fn refuse<W: AsyncWrite + Unpin>(
    metrics: &FixMetrics,
    writer: &mut W,
    target: &str,
    text: &str,
) {
    metrics.logons_refused.fetch_add(1, Ordering::Relaxed);
    let bytes = Builder::new("5")
        .field(tag::TEXT, text)
        .finish(&super::codec::Header {
            sender: EXCHANGE_COMP_ID,
            target,
            seq: 1,
            sending_time: &utc_timestamp(SystemTime::now()),
            poss_dup: false,
            orig_sending_time: None,
        });
    let _ = writer.write_all(&bytes).await;
    let _ = writer.flush().await;
    // Give the Logout a moment to leave before the connection closes.
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Checks a Logon and, when it is good, answers it: the session's connection, with its state
/// taken for this connection alone. `None`: refused (a Logout with the reason was sent).
async fn log_on<W: AsyncWrite + Unpin>(
    server: &Arc<FixServer>,
    translated: TranslatedSession,
    remote: SocketAddr,
    logon: &Message,
    writer: &mut W,
) -> Option<Connection> {
    let sender = logon.get(tag::SENDER_COMP_ID).unwrap_or("").to_string();
    let refused = |why: String| {
        tracing::warn!(target: "audit", event = "fix logon refused", comp_id = %sender, %remote, %why, "FIX logon refused");
        why
    };
    let problem = if logon.msg_type() != "A" {
        Some(refused(format!(
            "the first message must be a Logon(A), not {:?}",
            logon.msg_type()
        )))
    } else if logon.get(tag::TARGET_COMP_ID) != Some(EXCHANGE_COMP_ID) {
        Some(refused(format!(
            "TargetCompID(56) must be {EXCHANGE_COMP_ID}"
        )))
    } else if logon.get(tag::ENCRYPT_METHOD) != Some("0") {
        Some(refused(
            "EncryptMethod(98) must be 0 (none; use --fix-tls for encryption)".into(),
        ))
    } else {
        None
    };
    if let Some(why) = problem {
        refuse(&server.metrics, writer, &sender, &why).await;
        return None;
    }
    let heart_bt_int = match logon.get_u64(tag::HEART_BT_INT) {
        Ok(Some(h)) if (1..=HEART_BT_INT_MAX).contains(&h) => h,
        _ => {
            let why = refused(format!(
                "HeartBtInt(108) must be 1 to {HEART_BT_INT_MAX} seconds"
            ));
            refuse(&server.metrics, writer, &sender, &why).await;
            return None;
        }
    };
    let Ok(Some(seq)) = logon.get_u64(tag::MSG_SEQ_NUM) else {
        refuse(
            &server.metrics,
            writer,
            &sender,
            &refused("MsgSeqNum(34) is missing".into()),
        )
        .await;
        return None;
    };
    let reset = logon.get_flag(tag::RESET_SEQ_NUM_FLAG).unwrap_or(false);
    // Only the leader takes logons: a follower names the leader.
    if !server.gateway.publishing() {
        let (leader, _) = server.gateway.leadership.leader_elsewhere();
        let text = match leader.map(|id| (id, (server.leader_fix)(id))) {
            Some((id, Some(addr))) => {
                format!("not the leader; the leader is node {id}, FIX at {addr}")
            }
            Some((id, None)) => format!("not the leader; the leader is node {id}"),
            None => "not the leader; no leader is known yet, try again".to_string(),
        };
        refuse(&server.metrics, writer, &sender, &refused(text)).await;
        return None;
    }
    // A broker's CompID is replicated state (the brokers file seeds it, `admin
    // set-fix-comp-id` changes it); a drop copy's is the brokers file's.
    let scope = match (
        server.gateway.keys.broker_of_comp_id(&sender),
        server.drop_copies.get(&sender),
    ) {
        (Some(broker), None) => Scope::Orders(broker),
        (None, Some(&(_, whose))) => Scope::DropCopy(whose),
        (Some(broker), Some(_)) => {
            let why = refused(format!(
                "SenderCompID(49) {sender:?} is both broker {}'s and a drop copy's in the \
                 brokers file: the operator must give one of them another",
                broker.0
            ));
            refuse(&server.metrics, writer, &sender, &why).await;
            return None;
        }
        (None, None) => {
            let why = refused(format!(
                "SenderCompID(49) {sender:?} is not a FIX session of this exchange"
            ));
            refuse(&server.metrics, writer, &sender, &why).await;
            return None;
        }
    };
    let broker = match scope {
        Scope::Orders(broker) | Scope::DropCopy(Some(broker)) => broker,
        Scope::DropCopy(None) => BrokerId::OPERATOR,
    };
    let Some(password) = logon.get(tag::PASSWORD) else {
        let why = refused("Password(554) is required: the broker's API key".into());
        refuse(&server.metrics, writer, &sender, &why).await;
        return None;
    };
    let answer = match scope {
        Scope::DropCopy(_) => {
            let expected = server.drop_copies[&sender].0;
            match server
                .gateway
                .log_on_read_only(&translated, password, expected)
                .await
            {
                Ok(()) => TranslatedLogon::LoggedOn(broker),
                Err(why) => TranslatedLogon::Refused(why),
            }
        }
        Scope::Orders(_) => {
            server
                .gateway
                .log_on_translated(&translated, password)
                .await
        }
    };
    match answer {
        TranslatedLogon::LoggedOn(logged) if logged == broker => {}
        TranslatedLogon::LoggedOn(other) => {
            let why = refused(format!(
                "SenderCompID(49) {sender:?} is not the CompID of broker {} whose key this is",
                other.0
            ));
            refuse(&server.metrics, writer, &sender, &why).await;
            return None;
        }
        TranslatedLogon::NotLeader => {
            refuse(
                &server.metrics,
                writer,
                &sender,
                &refused("not the leader; try another node".into()),
            )
            .await;
            return None;
        }
        TranslatedLogon::Refused(why) => {
            refuse(&server.metrics, writer, &sender, &refused(why)).await;
            return None;
        }
    }
    // The session's state, for this connection alone. A CompID this node has not served yet
    // (its first logon here, or the first on a new leader) starts from the broker's orders as
    // the journal knows them, so that fills of orders entered before are reported.
    // In a term of its own, a node goes on from the session's replicated mark (another
    // leader may have served it since), not from what it kept in memory.
    let term = server.gateway.leadership.term();
    let known = server
        .sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&sender)
        .is_some_and(|slot| slot.broker == broker && slot.term == term);
    let mut seeded = None;
    if !known {
        match seeded_session(server, broker, scope, &sender).await {
            Some(state) => seeded = Some(state),
            None => {
                let why = refused("not the leader any more; try another node".into());
                refuse(&server.metrics, writer, &sender, &why).await;
                return None;
            }
        }
    }
    let state = {
        let mut sessions = server.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let cursor = *server.gateway.reports.subscribe().borrow();
        let mut fresh = || Slot {
            broker,
            state: Arc::new(AsyncMutex::new(
                seeded
                    .take()
                    .unwrap_or_else(|| SessionState::new(broker, sender.clone(), cursor)),
            )),
            active: false,
            term,
        };
        let slot = sessions.entry(sender.clone()).or_insert_with(&mut fresh);
        // The CompID was another broker's: nothing of that session (its numbers, its messages,
        // its orders) passes to this one. While the other's connection lasts, it is refused
        // below as logged on already; that connection ends at its next message. A state of an
        // earlier term gives way to the mark likewise.
        if (slot.broker != broker || slot.term != term) && !slot.active {
            let old = std::mem::replace(slot, fresh());
            // Tasks of the old state's connection may still hold it: they stop using it.
            tokio::spawn(async move { old.state.lock().await.retired = true });
        }
        if slot.active {
            None
        } else {
            slot.active = true;
            Some(Arc::clone(&slot.state))
        }
    };
    let Some(state) = state else {
        let why = refused(format!("a session of {sender} is logged on already"));
        refuse(&server.metrics, writer, &sender, &why).await;
        return None;
    };
    let release = |server: &Arc<FixServer>| {
        let mut sessions = server.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = sessions.get_mut(&sender) {
            slot.active = false;
        }
    };
    let mut guard = state.lock().await;
    // Resumed from another leader's mark (before this logon's own reservation marks it).
    let resumed = !known && guard.marked.is_some();
    if reset {
        guard.reset();
    }
    // A TestRequest asked on an earlier connection is never answered.
    guard.receipt_asked = None;
    // The Logon's answer and a ResendRequest: numbers reserved by a committed mark first.
    if server.reserve(&state, &mut guard, 2).await.is_err() {
        drop(guard);
        release(server);
        let why = refused(
            "the session's numbers could not be reserved (this node no longer leads, or the \
             cluster holds as many FIX sessions as it may); try again"
                .into(),
        );
        refuse(&server.metrics, writer, &sender, &why).await;
        return None;
    }
    if resumed && !reset {
        // Resumed from another leader's mark: the broker's messages from the mark's number
        // to this Logon may have been sequenced there, or not.
        guard.uncertain_in = guard.next_in..seq;
    }
    if seq < guard.next_in {
        let text = format!(
            "MsgSeqNum too low, expecting {} but received {seq}",
            guard.next_in
        );
        let bytes = guard.number(
            &Builder::new("5").field(tag::TEXT, &text),
            &utc_timestamp(SystemTime::now()),
            true,
        );
        drop(guard);
        server
            .metrics
            .logons_refused
            .fetch_add(1, Ordering::Relaxed);
        let _ = writer.write_all(&bytes).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        refused(text);
        release(server);
        return None;
    }
    let mut answer = Builder::new("A")
        .field(tag::ENCRYPT_METHOD, 0)
        .field(tag::HEART_BT_INT, heart_bt_int);
    if reset {
        answer.push(tag::RESET_SEQ_NUM_FLAG, "Y");
    }
    let now = utc_timestamp(SystemTime::now());
    let mut bytes = guard.number(&answer, &now, true);
    if seq == guard.next_in {
        guard.next_in += 1;
    } else {
        // Ahead of what the exchange has: ask for the gap; the Logon waits in the queue.
        let from = guard.next_in;
        guard.queued.insert(seq, logon.clone());
        guard.resend_pending_to = seq;
        bytes.extend(
            guard.number(
                &Builder::new("2")
                    .field(tag::BEGIN_SEQ_NO, from)
                    .field(tag::END_SEQ_NO, 0),
                &now,
                true,
            ),
        );
    }
    drop(guard);
    if writer.write_all(&bytes).await.is_err() {
        release(server);
        return None;
    }
    Some(Connection {
        server: Arc::clone(server),
        translated,
        remote,
        state,
        // Replaced by the connection's writer once the logon is answered.
        outbox: tokio::sync::mpsc::channel(1).0,
        broker,
        scope,
        comp_id: sender.clone(),
        heart_bt_int: Duration::from_secs(heart_bt_int),
        last_sent: Mutex::new(Instant::now()),
        batch: Mutex::default(),
        // None yet: the first message looks.
        comp_id_checked: std::sync::atomic::AtomicU64::new(u64::MAX),
    })
}

/// A new session's state: reports from now on, and the broker's orders (their ClOrdIDs,
/// quantities filled, average prices) as the journal has them so far, each output of it read as
/// if it had been reported (and nothing sent).
async fn seeded_session(
    server: &FixServer,
    broker: BrokerId,
    scope: Scope,
    comp_id: &str,
) -> Option<SessionState> {
    let reports = &server.gateway.reports;
    // Everything committed before this node led is applied first (a read index): the last
    // mark the old leader made, and every report it could have sent.
    if server.gateway.leadership.confirm().await.is_err() {
        return None;
    }
    let mark = match CompId::new(comp_id) {
        Ok(comp_id) => server
            .gateway
            .engine
            .query(move |engine| engine.fix_session(&comp_id))
            .await
            .ok()
            .flatten(),
        Err(_) => None,
    };
    let head = *reports.subscribe().borrow();
    // A session an earlier leader marked goes on from where its broker confirmed its reports.
    let cursor = mark.map_or(head, |mark| mark.reports_received);
    let mut state = SessionState::new(broker, comp_id.to_string(), cursor);
    let catalog = server.catalog(|_| false).await;
    let mut since = 0;
    loop {
        let batch = match scope {
            Scope::DropCopy(None) => reports
                .since_all(since, REPORTS_PER_BATCH)
                .map(|all| all.into_iter().map(|(_, output)| output).collect()),
            _ => reports.since(broker, since, REPORTS_PER_BATCH),
        };
        let batch = match batch {
            Ok(batch) => batch,
            // The oldest are no longer kept: orders entered before them stay unknown here.
            Err(gap) if gap.complete_after > since => {
                since = gap.complete_after;
                continue;
            }
            Err(_) => break,
        };
        let Some(last) = batch.last() else { break };
        let last = last.seq;
        for output in batch.iter().take_while(|o| o.seq <= cursor) {
            state.application.on_output(output, &catalog, "");
        }
        if last >= cursor {
            break;
        }
        since = last;
        // A long journal is read a batch at a time, between other sessions' work.
        tokio::task::yield_now().await;
    }
    if let Some(mark) = mark {
        state.resume(mark);
        // Reports up to the journal's head (everything applied before this node led) may
        // have reached the broker from the old leader: they go out marked PossResend.
        state.poss_resend_through = head;
    }
    Some(state)
}

impl Connection {
    /// Numbers and writes messages, in order, under the session's lock.
    async fn send_locked(
        &self,
        state: &mut SessionState,
        messages: impl IntoIterator<Item = (Builder, bool), IntoIter: ExactSizeIterator>,
    ) -> std::io::Result<()> {
        let messages = messages.into_iter();
        let count = messages.len() as u64;
        if count == 0 {
            return Ok(());
        }
        self.server
            .reserve(&self.state, state, count)
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "no outbound numbers: this node no longer leads",
                )
            })?;
        let now = utc_timestamp(SystemTime::now());
        let mut bytes = Vec::new();
        for (message, admin) in messages {
            bytes.extend(state.number(&message, &now, admin));
        }
        self.outbox.send(bytes).await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the connection is closed")
        })?;
        *self.last_sent.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.server
            .metrics
            .messages_sent
            .fetch_add(count, Ordering::Relaxed);
        Ok(())
    }

    /// Asks the broker to confirm the reports sent since it last did (a TestRequest, whose
    /// Heartbeat answers for every message before it), and marks the session if it moved.
    async fn ask_receipt_and_mark(&self) -> std::io::Result<()> {
        let mut state = self.state.lock().await;
        let unanswered = state
            .receipt_asked
            .as_ref()
            .is_some_and(|(_, _, at)| at.elapsed() >= RECEIPT_ASKED_AGAIN_AFTER);
        if (state.receipt_asked.is_none() || unanswered)
            && state.report_cursor > state.reports_received
        {
            let position = state.report_cursor;
            let id = format!("RECEIPT-{position}");
            state.receipt_asked = Some((id.clone(), position, Instant::now()));
            let ask = Builder::new("1").field(tag::TEST_REQ_ID, id);
            self.send_locked(&mut state, [(ask, true)]).await?;
        }
        self.server.mark_if_changed(&mut state).await;
        Ok(())
    }

    async fn send_admin(&self, message: Builder) -> std::io::Result<()> {
        let mut state = self.state.lock().await;
        self.send_locked(&mut state, [(message, true)]).await
    }

    async fn send_app(&self, messages: Vec<Builder>) -> std::io::Result<()> {
        let mut state = self.state.lock().await;
        self.send_locked(&mut state, messages.into_iter().map(|m| (m, false)))
            .await
    }

    async fn logout(&self, text: &str) {
        tracing::info!(comp_id = %self.comp_id, remote = %self.remote, %text, "FIX logout sent");
        let _ = self
            .send_admin(Builder::new("5").field(tag::TEXT, text))
            .await;
        // The writer sends it before it stops (`run_connection`); a moment for the broker to
        // read it before the close.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    async fn reject(
        &self,
        ref_seq: u64,
        message: &Message,
        reason: u32,
        ref_tag: Option<u32>,
        text: &str,
    ) {
        self.server
            .metrics
            .session_rejects
            .fetch_add(1, Ordering::Relaxed);
        let mut b = Builder::new("3")
            .field(tag::REF_SEQ_NUM, ref_seq)
            .field(tag::REF_MSG_TYPE, message.msg_type())
            .field(tag::SESSION_REJECT_REASON, reason);
        if let Some(t) = ref_tag {
            b.push(tag::REF_TAG_ID, t);
        }
        b.push(tag::TEXT, text);
        let _ = self.send_admin(b).await;
    }

    /// One message from the broker: the session rules, then the message itself.
    async fn receive(self: &Arc<Self>, message: Message) -> Flow {
        // Orders of this read that wait in the batch go before anything else is handled (a
        // Logout, a status request, a message that ends the session), in the order received.
        if !matches!(message.msg_type(), "D" | "F" | "G" | "q")
            && self.flush_orders().await == Flow::Close
        {
            return Flow::Close;
        }
        // The CompID is looked up again only when a key or CompID changed since the last look.
        let keys = &self.server.gateway.keys;
        let generation = keys.generation();
        if let Scope::Orders(broker) = self.scope {
            if self.comp_id_checked.swap(generation, Ordering::Relaxed) != generation
                && keys
                    .comp_id_of(broker)
                    .is_none_or(|c| c.as_str() != self.comp_id)
            {
                self.logout("session ended: this broker's FIX CompID was changed")
                    .await;
                return Flow::Close;
            }
        }
        if message.get(tag::SENDER_COMP_ID) != Some(self.comp_id.as_str())
            || message.get(tag::TARGET_COMP_ID) != Some(EXCHANGE_COMP_ID)
        {
            let seq = message
                .get_u64(tag::MSG_SEQ_NUM)
                .ok()
                .flatten()
                .unwrap_or(0);
            self.reject(seq, &message, 9, None, "CompID problem").await;
            self.logout("SenderCompID(49) or TargetCompID(56) is not this session's")
                .await;
            return Flow::Close;
        }
        let seq = match message.get_u64(tag::MSG_SEQ_NUM) {
            Ok(Some(seq)) => seq,
            _ => {
                self.logout("MsgSeqNum(34) is missing or not a number")
                    .await;
                return Flow::Close;
            }
        };
        let poss_dup = message.get_flag(tag::POSS_DUP_FLAG).unwrap_or(false);
        // SequenceReset-Reset moves the expected number whatever its own number is.
        if message.msg_type() == "4" && !message.get_flag(tag::GAP_FILL_FLAG).unwrap_or(false) {
            return self.sequence_reset(&message, seq).await;
        }
        let expected = self.state.lock().await.next_in;
        if seq > expected {
            if message.msg_type() == "2" {
                // A ResendRequest is answered at once, even ahead of a gap.
                self.resend(&message).await;
            }
            let mut state = self.state.lock().await;
            if state.queued.len() < QUEUED_INBOUND_MAX {
                state.queued.insert(seq, message);
            }
            if state.resend_pending_to == 0 {
                state.resend_pending_to = seq;
                let from = state.next_in;
                self.server
                    .metrics
                    .resend_requests
                    .fetch_add(1, Ordering::Relaxed);
                let ask = Builder::new("2")
                    .field(tag::BEGIN_SEQ_NO, from)
                    .field(tag::END_SEQ_NO, 0);
                if self.send_locked(&mut state, [(ask, true)]).await.is_err() {
                    return Flow::Close;
                }
            }
            return Flow::Continue;
        }
        if seq < expected {
            if poss_dup {
                return Flow::Continue;
            }
            self.logout(&format!(
                "MsgSeqNum too low, expecting {expected} but received {seq}"
            ))
            .await;
            return Flow::Close;
        }
        // In order: this one, then what waited behind it.
        let mut next = Some(message);
        while let Some(message) = next.take() {
            let seq = message
                .get_u64(tag::MSG_SEQ_NUM)
                .ok()
                .flatten()
                .unwrap_or(0);
            {
                let mut state = self.state.lock().await;
                state.next_in = seq + 1;
            }
            if self.process(message, seq).await == Flow::Close {
                return Flow::Close;
            }
            let mut state = self.state.lock().await;
            let next_in = state.next_in;
            state.queued.retain(|&s, _| s >= next_in);
            next = state.queued.remove(&next_in);
            if state.resend_pending_to != 0 && next_in > state.resend_pending_to {
                state.resend_pending_to = 0;
            }
        }
        Flow::Continue
    }

    async fn sequence_reset(&self, message: &Message, seq: u64) -> Flow {
        let Ok(Some(new_seq)) = message.get_u64(tag::NEW_SEQ_NO) else {
            self.reject(
                seq,
                message,
                1,
                Some(tag::NEW_SEQ_NO),
                "NewSeqNo(36) is required",
            )
            .await;
            return Flow::Continue;
        };
        let mut state = self.state.lock().await;
        if new_seq < state.next_in {
            drop(state);
            self.reject(
                seq,
                message,
                5,
                Some(tag::NEW_SEQ_NO),
                "NewSeqNo(36) is below the expected MsgSeqNum",
            )
            .await;
            return Flow::Continue;
        }
        state.next_in = new_seq;
        state.queued.retain(|&s, _| s >= new_seq);
        Flow::Continue
    }

    /// A message in sequence.
    async fn process(self: &Arc<Self>, message: Message, seq: u64) -> Flow {
        match message.msg_type() {
            "0" => {
                // The answer to a TestRequest asking for receipt: the broker has every report
                // numbered before it.
                let mut state = self.state.lock().await;
                let confirmed = match (&state.receipt_asked, message.get(tag::TEST_REQ_ID)) {
                    (Some((asked, position, _)), Some(id)) if asked == id => Some(*position),
                    _ => None,
                };
                if let Some(position) = confirmed {
                    state.receipt_asked = None;
                    state.reports_received = state.reports_received.max(position);
                    self.server.mark_if_changed(&mut state).await;
                }
                Flow::Continue
            }
            "3" => Flow::Continue,
            "A" => Flow::Continue, // the Logon that waited behind a gap: already answered
            "1" => {
                let mut b = Builder::new("0");
                if let Some(id) = message.get(tag::TEST_REQ_ID) {
                    b.push(tag::TEST_REQ_ID, id);
                }
                match self.send_admin(b).await {
                    Ok(()) => Flow::Continue,
                    Err(_) => Flow::Close,
                }
            }
            "2" => {
                self.resend(&message).await;
                Flow::Continue
            }
            "4" => {
                // GapFill in sequence: the numbers up to NewSeqNo were session messages.
                match message.get_u64(tag::NEW_SEQ_NO) {
                    Ok(Some(new_seq)) if new_seq > seq => {
                        let mut state = self.state.lock().await;
                        state.next_in = state.next_in.max(new_seq);
                    }
                    _ => {
                        self.reject(
                            seq,
                            &message,
                            5,
                            Some(tag::NEW_SEQ_NO),
                            "NewSeqNo(36) must be above MsgSeqNum(34)",
                        )
                        .await;
                    }
                }
                Flow::Continue
            }
            "5" => {
                let _ = self.send_admin(Builder::new("5")).await;
                Flow::Close
            }
            "D" | "F" | "G" | "q" | "H" if matches!(self.scope, Scope::DropCopy(_)) => {
                let b = Builder::new("j")
                    .field(tag::REF_SEQ_NUM, seq)
                    .field(tag::REF_MSG_TYPE, message.msg_type())
                    .field(tag::BUSINESS_REJECT_REASON, 0)
                    .field(
                        tag::TEXT,
                        "a drop copy session is read only: it sends no orders",
                    );
                let _ = self.send_app(vec![b]).await;
                Flow::Continue
            }
            "D" | "F" | "G" | "q" => self.order_message(message, seq).await,
            "H" => {
                let catalog = self.server.catalog(|_| false).await;
                let answer = self
                    .state
                    .lock()
                    .await
                    .application
                    .order_status(&message, &catalog);
                match answer {
                    Ok(b) => {
                        let _ = self.send_app(vec![b]).await;
                    }
                    Err(bad) => {
                        self.reject(
                            seq,
                            &message,
                            bad.session_reject_reason(),
                            Some(bad.tag()),
                            &bad.to_string(),
                        )
                        .await;
                    }
                }
                Flow::Continue
            }
            other => {
                let b = Builder::new("j")
                    .field(tag::REF_SEQ_NUM, seq)
                    .field(tag::REF_MSG_TYPE, other)
                    .field(tag::BUSINESS_REJECT_REASON, 3)
                    .field(
                        tag::TEXT,
                        format!("MsgType {other:?} is not supported by this exchange"),
                    );
                let _ = self.send_app(vec![b]).await;
                Flow::Continue
            }
        }
    }

    async fn resend(&self, message: &Message) {
        let (Ok(Some(begin)), Ok(end)) = (
            message.get_u64(tag::BEGIN_SEQ_NO),
            message.get_u64(tag::END_SEQ_NO),
        ) else {
            let seq = message
                .get_u64(tag::MSG_SEQ_NUM)
                .ok()
                .flatten()
                .unwrap_or(0);
            self.reject(
                seq,
                message,
                1,
                Some(tag::BEGIN_SEQ_NO),
                "BeginSeqNo(7) and EndSeqNo(16) are required",
            )
            .await;
            return;
        };
        let state = self.state.lock().await;
        let messages = state.resend(begin, end.unwrap_or(0), &utc_timestamp(SystemTime::now()));
        let count = messages.len() as u64;
        for bytes in messages {
            if self.outbox.send(bytes).await.is_err() {
                return;
            }
        }
        self.server
            .metrics
            .messages_sent
            .fetch_add(count, Ordering::Relaxed);
        *self.last_sent.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// An order message: translated, then queued on the admission path in the order received;
    /// its reports come from the broker's journal (`send_reports`).
    async fn order_message(self: &Arc<Self>, message: Message, seq: u64) -> Flow {
        let symbol = message.get(tag::SYMBOL).map(str::to_string);
        let catalog = self
            .server
            .catalog(|c| {
                symbol
                    .as_ref()
                    .is_some_and(|s| !c.symbols.iter().any(|i| &i.name == s))
            })
            .await;
        // Sent before, by the application (PossResend) or by the session layer (PossDupFlag,
        // a message that was behind a gap): a duplicate is the order's status, not a refusal.
        let poss_resend = message.get_flag(tag::POSS_RESEND).unwrap_or(false)
            || message.get_flag(tag::POSS_DUP_FLAG).unwrap_or(false);
        let translated = {
            let mut state = self.state.lock().await;
            let uncertain = poss_resend && state.uncertain_in.contains(&seq);
            let app = &mut state.application;
            match message.msg_type() {
                // A cancel, replace or mass cancel the old leader may have run: answered only.
                "F" | "G" | "q" if uncertain => {
                    super::orders::Application::resent_across_failover(&message, seq)
                        .map(Translated::Answer)
                }
                "D" => app.new_order(&message, &catalog, poss_resend),
                "F" => app.amend(&message, &catalog, false),
                "G" => app.amend(&message, &catalog, true),
                _ => app.mass_cancel(&message, &catalog, seq),
            }
        };
        let commands = match translated {
            Ok(Translated::Answer(answer)) => {
                let _ = self.send_app(vec![answer]).await;
                return Flow::Continue;
            }
            Ok(Translated::Commands(commands)) => commands,
            Err(bad) => {
                self.reject(
                    seq,
                    &message,
                    bad.session_reject_reason(),
                    Some(bad.tag()),
                    &bad.to_string(),
                )
                .await;
                return Flow::Continue;
            }
        };
        // Queued with the other order messages of the same read (`flush_orders`): one
        // admission and one wait for their answers, however many arrived together.
        let full = {
            let mut batch = self.batch.lock().unwrap_or_else(|p| p.into_inner());
            if batch.commands.is_empty() {
                batch.first_seq = seq;
            }
            batch.commands.extend(commands);
            batch.catalog = Some(catalog);
            batch.commands.len() >= ORDERS_PER_BATCH_MAX
        };
        if full {
            return self.flush_orders().await;
        }
        Flow::Continue
    }

    /// Queues the order messages translated since the last flush, in the order received.
    async fn flush_orders(self: &Arc<Self>) -> Flow {
        let (commands, seq, catalog) = {
            let mut batch = self.batch.lock().unwrap_or_else(|p| p.into_inner());
            let Some(catalog) = batch.catalog.take() else {
                return Flow::Continue;
            };
            (
                std::mem::take(&mut batch.commands),
                batch.first_seq,
                catalog,
            )
        };
        if commands.is_empty() {
            return Flow::Continue;
        }
        match self
            .server
            .gateway
            .queue_translated(&self.translated, commands.clone())
            .await
        {
            Ok(queued) => {
                let connection = Arc::clone(self);
                tokio::spawn(async move {
                    let answers = connection.server.gateway.translated_answers(queued).await;
                    connection.answered(commands, answers, seq, catalog).await;
                });
                Flow::Continue
            }
            Err(not_queued) => {
                self.refused(&commands, &catalog, &not_queued.to_string(), seq)
                    .await;
                match not_queued {
                    NotQueued::NotLeader => {
                        self.logout("this node is no longer the leader; log on to the new leader")
                            .await;
                        Flow::Close
                    }
                    NotQueued::KeyChanged => {
                        self.logout("session ended: this broker's key was changed or revoked")
                            .await;
                        Flow::Close
                    }
                    _ => Flow::Continue,
                }
            }
        }
    }

    async fn refused(&self, commands: &[Command], catalog: &Catalog, text: &str, seq: u64) {
        let mut state = self.state.lock().await;
        let answers = state
            .application
            .refused(commands, catalog, text, &format!("N{seq}"));
        let _ = self
            .send_locked(&mut state, answers.into_iter().map(|m| (m, false)))
            .await;
    }

    /// The engine's answer to queued commands: what never reaches the journal is reported
    /// from here; the rest comes through the journal.
    async fn answered(
        &self,
        commands: Vec<Command>,
        answers: Result<Vec<crate::replication::sequencer::Answer>, NotQueued>,
        seq: u64,
        catalog: Arc<Catalog>,
    ) {
        let answers = match answers {
            Ok(answers) => answers,
            Err(not_queued) => {
                return self
                    .refused(&commands, &catalog, &not_queued.to_string(), seq)
                    .await
            }
        };
        // Most answers hold nothing the journal does not also report: the session's state is
        // not even locked for them.
        let answer_only = |output: &exchange_domain::Output| {
            matches!(
                output.event.reject_reason(),
                Some(
                    exchange_domain::RejectReason::NotPermitted
                        | exchange_domain::RejectReason::UnknownAccount
                )
            )
        };
        let nothing = answers.iter().all(|answer| match answer {
            Ok(outputs) => !outputs.iter().any(answer_only),
            Err(crate::replication::sequencer::SubmitError::Unknown(_)) => true,
            Err(_) => false,
        });
        if nothing {
            return;
        }
        let mut state = self.state.lock().await;
        let mut out = Vec::new();
        for (i, (command, answer)) in commands.iter().zip(answers).enumerate() {
            match answer {
                Ok(outputs) => {
                    for (k, output) in outputs.iter().enumerate() {
                        let exec_id = format!("{}.a{k}", output.seq);
                        out.extend(state.application.on_answer_only(output, &catalog, &exec_id));
                    }
                }
                // Committed or not, nobody can tell yet: if it was, the journal reports it.
                Err(crate::replication::sequencer::SubmitError::Unknown(_)) => {}
                Err(e) => out.extend(state.application.refused(
                    std::slice::from_ref(command),
                    &catalog,
                    &e.to_string(),
                    &format!("N{seq}.{i}"),
                )),
            }
        }
        let _ = self
            .send_locked(&mut state, out.into_iter().map(|m| (m, false)))
            .await;
    }

    /// Sends the broker's reports from the journal, in order, each once, while the session
    /// lives; those made while it was away first.
    async fn send_reports(self: Arc<Self>) {
        let reports = &self.server.gateway.reports;
        let mut recorded = reports.subscribe();
        loop {
            recorded.borrow_and_update();
            let cursor = self.state.lock().await.report_cursor;
            let batch = match self.scope {
                Scope::DropCopy(None) => reports.since_all(cursor, REPORTS_PER_BATCH).map(|all| {
                    all.into_iter()
                        .map(|(_, output)| output)
                        .collect::<Vec<_>>()
                }),
                _ => reports.since(self.broker, cursor, REPORTS_PER_BATCH),
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(gap) => {
                    tracing::warn!(
                        comp_id = %self.comp_id,
                        "reports after seq {cursor} up to {} are no longer kept on this node: \
                         they are not sent over FIX",
                        gap.complete_after
                    );
                    self.state.lock().await.report_cursor = gap.complete_after;
                    continue;
                }
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = recorded.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                continue;
            }
            let missing = |c: &Catalog| {
                batch.iter().any(|o| {
                    super::orders::symbol_of(&o.event).is_some_and(|s| c.symbol(s.0).is_none())
                })
            };
            let catalog = self.server.catalog(missing).await;
            let mut state = self.state.lock().await;
            let mut out = Vec::new();
            let mut k = 0;
            let mut last_seq = None;
            for output in &batch {
                k = if last_seq == Some(output.seq) {
                    k + 1
                } else {
                    0
                };
                last_seq = Some(output.seq);
                let exec_id = exec_id_of(output, k);
                let first = out.len();
                out.extend(state.application.on_output(output, &catalog, &exec_id));
                if output.seq <= state.poss_resend_through {
                    // The old leader may have sent it: the broker checks the ExecID.
                    out[first..].iter_mut().for_each(Builder::set_poss_resend);
                }
            }
            if let Some(last) = batch.last() {
                state.report_cursor = last.seq;
            }
            if self
                .send_locked(&mut state, out.into_iter().map(|m| (m, false)))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}
