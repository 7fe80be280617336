//! Credentials on a real cluster: development keys only on a development node, keys that stay
//! revoked across elections, sessions that end when their key changes, and one key per broker.

mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use exchange::domain::{AccountId, AdminCommand, Amount, BrokerId, Event, KeyDigest, RejectReason};
use exchange::domain::{Command as ExchangeCommand, Side};
use exchange::gateway::client::{Client, ClientError};
use exchange::gateway::credentials;
use exchange::replication::network::{Request as RaftRequest, Response as RaftResponse};
use support::*;

/// One single-node cluster process, killed when the test ends, also when it fails.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const DEV_ADMIN_KEY: &str = "dev-admin-key-not-secret";

/// Starts a one-node cluster (Raft on `port`, brokers on `port + 100`) from the repository's
/// root, as an operator would from a checkout.
fn one_node(dir: &Path, port: u16, extra: &[&str]) -> Node {
    let certs = dir.join("certs");
    if !certs.exists() {
        exchange::net::tls::generate(&certs, &[1], &[]).expect("certificates");
    }
    Node(
        Command::new(env!("CARGO_BIN_EXE_exchange-node"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["--id", "1", "--bootstrap", "--peers"])
            .arg(format!("1=127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir.join("node-1"))
            .arg("--certs-dir")
            .arg(&certs)
            .args(extra)
            .env_remove("EXCHANGE_BROKERS")
            .env_remove("EXCHANGE_DEV")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start exchange-node"),
    )
}

fn client(dir: &Path, port: u16, key: &str) -> Client {
    let ca = exchange::net::tls::load_ca(&dir.join("certs")).expect("CA");
    Client::new(vec![SocketAddr::from(([127, 0, 0, 1], port + 100))], &ca)
        .expect("client")
        .with_api_key(key)
}

/// Submits `command` until the node answers at all (it may still be electing itself).
async fn first_answer(
    client: &mut Client,
    command: ExchangeCommand,
) -> Result<Vec<exchange::domain::Output>, ClientError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.submit(command).await {
            Err(ClientError::Unavailable(why)) if Instant::now() < deadline => {
                let _ = why;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

fn create_account(account: u64) -> ExchangeCommand {
    ExchangeCommand::Admin(AdminCommand::CreateAccount {
        account: AccountId(account),
        owner: BrokerId::OPERATOR,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The guard is held on purpose for the whole test, as a `Cluster` holds it; the test's body is
// the only task on its thread.
#[allow(clippy::await_holding_lock)]
async fn development_keys_work_only_on_a_development_node() {
    // Its nodes must not share the two cores with another test's cluster.
    let _exclusive = one_cluster_at_a_time();
    let scratch = tempfile::tempdir().expect("scratch directory");
    let dev_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster/brokers.toml");

    // Given the development brokers file without --dev: it refuses to start, and says why.
    let refused = scratch.path().join("refused");
    let mut node = one_node(
        &refused,
        28_201,
        &["--brokers", dev_file.to_str().expect("path")],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = node.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the node started with public keys"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    node.0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert!(!status.success());
    assert!(
        stderr.contains("public development keys") && stderr.contains("--dev"),
        "{stderr}"
    );
    assert!(
        !refused.join("node-1").exists(),
        "a refused node touched its data directory"
    );

    // From the checkout, with no brokers file named and no --dev: the development file beside
    // it is not read, so the development admin key is nobody's.
    let plain = scratch.path().join("plain");
    let _node = one_node(&plain, 28_202, &[]);
    match first_answer(
        &mut client(&plain, 28_202, DEV_ADMIN_KEY),
        create_account(1),
    )
    .await
    {
        Err(ClientError::Rejected(why)) => assert!(why.contains("logon refused"), "{why}"),
        other => panic!("the development admin key was accepted: {other:?}"),
    }
    drop(_node);

    // With --dev it is the operator's, and the node says it is a development node.
    let dev = scratch.path().join("dev");
    let _node = one_node(&dev, 28_203, &["--dev"]);
    let mut admin = client(&dev, 28_203, DEV_ADMIN_KEY);
    let outputs = first_answer(&mut admin, create_account(1))
        .await
        .expect("the development admin key on a development node");
    assert!(
        matches!(
            outputs[..],
            [exchange::domain::Output {
                event: Event::AccountCreated { .. },
                ..
            }]
        ),
        "{outputs:?}"
    );
    let status = admin
        .status_of(SocketAddr::from(([127, 0, 0, 1], 28_303)))
        .await
        .expect("status");
    assert!(status.development);
}

/// Deposits quote funds into a broker's account once the leader has opened it (it does so
/// from the brokers file when it takes office).
async fn fund_when_open(admin: &mut Client, account: u64, amount: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let deposit = ExchangeCommand::Admin(AdminCommand::Deposit {
            account: AccountId(account),
            asset: QUOTE,
            amount: Amount(amount),
        });
        let outputs = submit(admin, deposit, Duration::from_secs(10)).await;
        if matches!(
            outputs[..],
            [exchange::domain::Output {
                event: Event::BalanceChanged { .. },
                ..
            }]
        ) {
            return;
        }
        assert!(Instant::now() < deadline, "account {account} never opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A broker's one-lot buy order: brokers number their orders.
fn broker_order(account: u64) -> ExchangeCommand {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let mut command = limit(account, Side::Buy, 10, 1);
    if let ExchangeCommand::NewOrder(order) = &mut command {
        order.client_order_id = exchange::domain::ClientOrderId(
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
    }
    command
}

/// Logs on with `key` and sends a one-lot order for `account`; what the exchange said.
async fn order_with(cluster: &Cluster, key: &str, account: u64) -> Result<(), String> {
    let mut client = cluster.client_with_key(key);
    match client.submit(broker_order(account)).await {
        Ok(outputs) => {
            accepted(&outputs);
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The key change was taken.
fn accepted_key(outputs: &[exchange::domain::Output]) {
    assert!(
        matches!(
            outputs[..],
            [exchange::domain::Output {
                event: Event::BrokerKeySet { .. },
                ..
            }]
        ),
        "{outputs:?}"
    );
}

fn set_key(broker: u32, key_digest: KeyDigest) -> ExchangeCommand {
    ExchangeCommand::Admin(AdminCommand::SetBrokerKey {
        broker: BrokerId(broker),
        key_digest,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_keys_end_sessions_and_stay_changed_across_elections() {
    let mut cluster = Cluster::start("security-keys", 3, 28_210, &[]);
    cluster.wait_for_leader(Duration::from_secs(10)).await;
    let mut admin = cluster.client();
    setup_market(&mut admin, 1).await;
    let (broker_1, key_1, accounts_1) = BROKERS[0];
    let (broker_2, key_2, _) = BROKERS[1];
    let account = accounts_1[0];
    fund_when_open(&mut admin, account, 1_000_000).await;

    // A second broker may not be given a key another broker has.
    let outputs = admin.set_broker_key(7, key_2).await.expect("an answer");
    assert!(
        matches!(
            outputs[..],
            [exchange::domain::Output {
                event: Event::AdminRejected {
                    reason: RejectReason::KeyInUse
                },
                ..
            }]
        ),
        "{outputs:?}"
    );
    let mut second = cluster.client_with_key(key_2);
    second.submit(broker_order(BROKERS[1].2[0])).await.ok();
    assert_eq!(
        second.broker(),
        Some(broker_2),
        "the key still names broker {broker_2}"
    );

    // A session trading, and the same broker's report stream.
    let mut trading = cluster.client_with_key(key_1);
    accepted(
        &trading
            .submit(broker_order(account))
            .await
            .expect("an order"),
    );
    let mut reports = cluster.client_with_key(key_1).into_report_feed(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while reports
        .next(Duration::from_millis(200))
        .await
        .expect("reports")
        .is_empty()
    {
        assert!(Instant::now() < deadline, "no report within 10 s");
    }

    // The key is rotated: the trading session's next order is refused and its session ends;
    // the report stream ends too; the new key trades.
    let key_1b = "rotated-broker-1-key-0123456789";
    accepted_key(
        &admin
            .set_broker_key(broker_1, key_1b)
            .await
            .expect("an answer"),
    );
    match trading.submit(broker_order(account)).await {
        Err(ClientError::Rejected(why)) => {
            assert!(
                why.contains("changed or revoked") || why.contains("logon refused"),
                "{why}"
            )
        }
        other => panic!("an order on a session of the old key was served: {other:?}"),
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match reports.next(Duration::from_millis(200)).await {
            Err(_) => break,
            Ok(_) => assert!(
                Instant::now() < deadline,
                "the report stream outlived its key"
            ),
        }
    }
    order_with(&cluster, key_1b, account)
        .await
        .expect("the new key trades");

    // Revoked, then the leader is killed: the next leader applies the brokers file (which
    // still names the first key) but a broker it has seen keeps the key the cluster gave it.
    submit(
        &mut admin,
        set_key(broker_1, KeyDigest::REVOKED),
        Duration::from_secs(5),
    )
    .await;
    let old_leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    cluster.kill(old_leader);
    let new_leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    assert_ne!(new_leader, old_leader);
    // Long enough for the new leader to have applied the file (it does so at once).
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        for key in [key_1, key_1b] {
            let why = order_with(&cluster, key, account)
                .await
                .expect_err("a revoked key traded");
            assert!(why.contains("logon refused"), "{key}: {why}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // And after the old leader comes back.
    cluster.start_node(old_leader);
    cluster.assert_converged(Duration::from_secs(20)).await;
    let why = order_with(&cluster, key_1, account)
        .await
        .expect_err("a revoked key traded");
    assert!(why.contains("logon refused"), "{why}");

    // Digests are keyed with the cluster's salt: no node's log or snapshot holds the plain
    // SHA-256 of a key it registered (broker 2's from the file, broker 1's rotated one), and
    // a client may not send a digest of its own.
    let mut searched = 0;
    for id in 1..=3 {
        for file in files_under(&cluster.data_dir(id)) {
            let bytes = std::fs::read(&file).expect("a data file");
            searched += bytes.len();
            for key in [key_2, key_1b] {
                let plain = credentials::digest(key).0;
                assert!(
                    !bytes.windows(32).any(|w| w == plain),
                    "{} holds the unsalted digest of {key}",
                    file.display()
                );
            }
        }
    }
    assert!(searched > 1_000, "only {searched} bytes of data searched");
    match admin
        .request_leader(&exchange::gateway::protocol::Request::Submit(set_key(
            9,
            credentials::digest("a-digest-made-by-a-client-0123"),
        )))
        .await
    {
        Ok(exchange::gateway::protocol::Reply::Error(why)) | Err(ClientError::Rejected(why)) => {
            assert!(why.contains("SetBrokerKey request"), "{why}")
        }
        other => panic!("a client's digest was taken: {other:?}"),
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// A connection to node `to`'s Raft port, presenting node `as_node`'s certificate.
async fn raft_peer(cluster: &Cluster, as_node: u64, to: u64) -> quinn::Connection {
    let identity =
        exchange::net::tls::load_identity(&cluster.dir.join("certs"), as_node).expect("identity");
    let config = exchange::net::tls::mutual_client(
        &identity,
        exchange::net::tls::transport(Duration::from_secs(10)),
    )
    .expect("client config");
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("endpoint");
    endpoint.set_default_client_config(config);
    let name = exchange::net::tls::node_name(to);
    tokio::time::timeout(
        Duration::from_secs(5),
        endpoint
            .connect(cluster.raft_addr(to), &name)
            .expect("connect"),
    )
    .await
    .expect("handshake in time")
    .expect("handshake")
}

/// Sends one Raft frame and reads the answer (None: the stream ended without one).
async fn raft_call(connection: &quinn::Connection, frame: &[u8]) -> Option<RaftResponse> {
    let (mut send, mut recv) = connection.open_bi().await.expect("stream");
    exchange::net::frame::write_frame(&mut send, frame)
        .await
        .expect("write");
    let _ = send.finish();
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        exchange::net::frame::read_frame(&mut recv, 1 << 20),
    )
    .await
    .expect("an answer in time")
    .ok()??;
    Some(
        postcard::from_bytes(&reply)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&reply))),
    )
}

fn vote_request(term: u64, candidate: u64) -> Vec<u8> {
    let request = RaftRequest::Vote(openraft::raft::VoteRequest::new(
        openraft::Vote::new(term, candidate),
        None,
    ));
    postcard::to_allocvec(&request).expect("encode")
}

/// The node's virtual memory size, in bytes.
fn virtual_size(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_speaks_only_for_its_own_certificate_and_within_bounds() {
    let cluster = Cluster::start("security-peers", 3, 28_230, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let target = if leader == 1 { 2 } else { 1 };
    let impostor = (1..=3)
        .find(|id| *id != leader && *id != target)
        .expect("a third node");
    let victim = exchange::net::tls::node_name(target);
    let term_before = cluster.statuses().await[&target]
        .as_ref()
        .expect("status")
        .term;

    // With the impostor's certificate, a vote for the leader at a far higher term: refused
    // before Raft sees it (it would have deposed the leader).
    let peer = raft_peer(&cluster, impostor, target).await;
    match raft_call(&peer, &vote_request(term_before + 1_000, leader)).await {
        Some(RaftResponse::Malformed(why)) => assert!(why.contains("certificate"), "{why}"),
        Some(_) => panic!("{victim} took a vote speaking for node {leader} from node {impostor}"),
        None => panic!("no answer"),
    }
    // Its own vote, at a stale term, is answered (and lost): the check is the certificate's.
    assert!(matches!(
        raft_call(&peer, &vote_request(1, impostor)).await,
        Some(RaftResponse::Vote(_))
    ));

    // A frame claiming 1 GiB: an AppendEntries is refused as too large; a snapshot is taken
    // only as its bytes come, so claims cost nothing.
    let mut claim = (1u32 << 30).to_le_bytes().to_vec();
    claim.push(0);
    let (mut send, mut recv) = peer.open_bi().await.expect("stream");
    send.write_all(&claim).await.expect("write");
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        exchange::net::frame::read_frame(&mut recv, 1 << 20),
    )
    .await
    .expect("an answer in time")
    .expect("a frame")
    .expect("a reply");
    match postcard::from_bytes(&reply).expect("a response") {
        RaftResponse::Malformed(why) => assert!(why.contains("exceeds"), "{why}"),
        _ => panic!("a 1 GiB AppendEntries was taken"),
    }
    let pid = cluster.pid(target).expect("running");
    let before = virtual_size(pid);
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut claim = (1u32 << 30).to_le_bytes().to_vec();
        claim.push(2);
        let (mut send, recv) = peer.open_bi().await.expect("stream");
        send.write_all(&claim).await.expect("write");
        held.push((send, recv));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = virtual_size(pid).saturating_sub(before);
    assert!(
        grown < 512 << 20,
        "four 1 GiB claims grew {victim}'s memory by {} MiB",
        grown >> 20
    );
    drop(held);

    // A batch of 2,049 commands, from a peer that speaks for itself: refused when decoded, and
    // the node goes on.
    let commands = (0..=exchange::replication::batch::BATCH_COMMANDS_MAX as u64)
        .map(|account| {
            exchange::domain::BrokerCommand::operator(ExchangeCommand::Admin(
                AdminCommand::CreateAccount {
                    account: AccountId(1_000_000 + account),
                    owner: BrokerId::OPERATOR,
                },
            ))
        })
        .collect();
    let batch = exchange::replication::batch::Batch {
        timestamp_ns: 1,
        commands,
    };
    let append = RaftRequest::AppendEntries(openraft::raft::AppendEntriesRequest {
        vote: openraft::Vote::new_committed(1, impostor),
        prev_log_id: None,
        entries: vec![exchange::replication::types::Entry {
            log_id: openraft::LogId::new(exchange::replication::codec::leader_of(1, impostor), 1),
            payload: openraft::EntryPayload::Normal(batch),
        }],
        leader_commit: None,
    });
    let frame = postcard::to_allocvec(&append).expect("encode");
    match raft_call(&peer, &frame).await {
        // (postcard's decode error does not carry the batch's reason.)
        Some(RaftResponse::Malformed(_)) => {}
        _ => panic!("a batch of 2,049 commands was taken"),
    }
    assert_eq!(
        cluster.wait_for_leader(Duration::from_secs(10)).await,
        leader
    );
    let mut admin = cluster.client();
    setup_market(&mut admin, 1).await;
    let status = cluster.statuses().await[&target].clone().expect("status");
    assert!(status.term < term_before + 1_000, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_holds_at_most_its_sessions() {
    let cluster = Cluster::start(
        "security-sessions",
        1,
        28_250,
        &["--broker-sessions-max", "3", "--session-read-rate", "5"],
    );
    cluster.wait_for_leader(Duration::from_secs(10)).await;
    let (broker, key, accounts) = BROKERS[1];
    // Sessions that stay logged on (each answered a query).
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut session = cluster.client_with_key(key);
        let deadline = Instant::now() + Duration::from_secs(10);
        // The leader opens the broker's accounts when it takes office.
        while session.balances(accounts[0], vec![]).await.is_err() {
            assert!(Instant::now() < deadline, "broker {broker} never logged on");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        held.push(session);
    }
    match cluster
        .client_with_key(key)
        .balances(accounts[0], vec![])
        .await
    {
        Err(ClientError::Rejected(why)) => {
            assert!(
                why.contains("3 sessions") && why.contains("--broker-sessions-max"),
                "{why}"
            )
        }
        other => panic!("a fourth session of broker {broker} was let in: {other:?}"),
    }
    // Reads are held to the session's rate: 16 at 5 a second (a burst of 5) take 2 s or more.
    let started = Instant::now();
    for _ in 0..16 {
        held[0]
            .balances(accounts[0], vec![])
            .await
            .expect("a read, once throttled");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1_900),
        "16 reads at 5 a second took {:?}",
        started.elapsed()
    );
    // The operator is not counted, and a session that ends frees its place.
    cluster
        .client()
        .balances(accounts[0], vec![])
        .await
        .expect("the operator");
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster
        .client_with_key(key)
        .balances(accounts[0], vec![])
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "a closed session's place was not freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A throttled request's reason, or a panic naming what came instead.
fn throttled_reason(reply: Result<exchange::gateway::protocol::Reply, ClientError>) -> String {
    match reply {
        Ok(exchange::gateway::protocol::Reply::Throttled { reason, .. }) => reason,
        other => panic!("expected Throttled, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_is_held_to_its_rates_over_all_its_sessions() {
    use exchange::gateway::protocol::{Reply, Request};
    // Each session alone may send 10 commands and make 6 reads in its first second; the
    // broker, over all its sessions, 15 and 8.
    let cluster = Cluster::start(
        "security-broker-rates",
        1,
        28_060,
        &[
            "--session-rate",
            "10",
            "--broker-rate",
            "15",
            "--session-read-rate",
            "6",
            "--broker-read-rate",
            "8",
        ],
    );
    cluster.wait_for_leader(Duration::from_secs(10)).await;
    let ((_, key_1, accounts_1), (_, key_2, accounts_2)) = (BROKERS[0], BROKERS[1]);
    let batch = |account| Request::SubmitBatch((0..10).map(|_| broker_order(account)).collect());
    let (mut first, mut second, mut other) = (
        cluster.client_with_key(key_1),
        cluster.client_with_key(key_1),
        cluster.client_with_key(key_2),
    );
    // Logged on (the leader opens the brokers' accounts when it takes office).
    for (session, account) in [
        (&mut first, accounts_1[0]),
        (&mut second, accounts_1[0]),
        (&mut other, accounts_2[0]),
    ] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while session.instruments().await.is_err() {
            assert!(Instant::now() < deadline, "no logon for account {account}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Commands: the first session's 10 pass; the second session's 10 would pass its own
    // bucket but not the broker's (5 left), and spend nothing of its own; another broker is
    // not held back.
    let started = Instant::now();
    match first.request_leader(&batch(accounts_1[0])).await {
        Ok(Reply::BatchOutputs(answers)) => assert_eq!(answers.len(), 10),
        other => panic!("the first session's batch: {other:?}"),
    }
    let why = throttled_reason(second.request_leader(&batch(accounts_1[0])).await);
    assert!(
        why.contains("broker's command rate") && why.contains("15"),
        "{why}"
    );
    match other.request_leader(&batch(accounts_2[0])).await {
        Ok(Reply::BatchOutputs(answers)) => assert_eq!(answers.len(), 10),
        other => panic!("another broker's batch: {other:?}"),
    }
    // Reads: each session has 5 of its 6 left and the broker 6 of its 8 (each logon above
    // read the instruments). Alternating between the two sessions, the broker's rate binds
    // first, while each session still has reads of its own.
    let mut reads = 0;
    let why = loop {
        let session = if reads % 2 == 0 {
            &mut first
        } else {
            &mut second
        };
        match session.request_leader(&read_of(accounts_1[0])).await {
            Ok(Reply::Balances { .. }) => reads += 1,
            reply => break throttled_reason(reply),
        }
        assert!(
            reads < 12,
            "12 reads answered: the broker's rate did not bind"
        );
    };
    assert!(
        why.contains("broker's read rate") && why.contains("8 a second"),
        "after {reads} reads: {why}"
    );
    // A session alone is held to its own rate first: broker 2 has 7 reads left, the session 6.
    let mut alone = cluster.client_with_key(key_2);
    let mut reads = 0;
    let why = loop {
        match alone.request_leader(&read_of(accounts_2[0])).await {
            Ok(Reply::Balances { .. }) => reads += 1,
            reply => break throttled_reason(reply),
        }
        assert!(
            reads < 12,
            "12 reads answered: the session's rate did not bind"
        );
    };
    assert!(
        why.contains("session's read rate (6 a second)"),
        "after {reads} reads: {why}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "too slow to judge rates"
    );
}

fn read_of(account: u64) -> exchange::gateway::protocol::Request {
    exchange::gateway::protocol::Request::Balances {
        account,
        assets: vec![],
    }
}

/// The order was accepted: at once, or, resent by the client after an unknown outcome, with
/// the answer naming the original.
fn assert_taken(outputs: &[exchange::domain::Output]) {
    assert!(
        outputs.iter().any(|o| matches!(
            o.event,
            Event::Accepted { .. } | Event::DuplicateOrder { rejected: None, .. }
        )),
        "{outputs:?}"
    );
}

/// Orders sent one at a time by a logged-on broker; each one's time to its answer, sorted.
async fn order_latencies(client: &mut Client, account: u64, orders: usize) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(orders);
    for _ in 0..orders {
        let sent = Instant::now();
        let outputs = client
            .submit(broker_order(account))
            .await
            .expect("an order");
        latencies.push(sent.elapsed());
        assert_taken(&outputs);
    }
    latencies.sort();
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Connections from `from` to `server` that never log on, `concurrent` at a time, opened again
/// as soon as one ends, until `stop`; (handshakes tried, connections established).
async fn flood(
    server: SocketAddr,
    ca: rustls::pki_types::CertificateDer<'static>,
    from: std::net::IpAddr,
    concurrent: usize,
    pause_after_refusal: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (u64, u64) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let mut endpoint = quinn::Endpoint::client(SocketAddr::new(from, 0)).expect("endpoint");
    endpoint.set_default_client_config(
        exchange::net::tls::broker_client(
            &ca,
            exchange::net::tls::transport(Duration::from_secs(30)),
        )
        .expect("client config"),
    );
    let (tried, established) = (
        std::sync::Arc::new(AtomicU64::new(0)),
        std::sync::Arc::new(AtomicU64::new(0)),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrent {
        let (endpoint, stop) = (endpoint.clone(), std::sync::Arc::clone(&stop));
        let (tried, established) = (
            std::sync::Arc::clone(&tried),
            std::sync::Arc::clone(&established),
        );
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tried.fetch_add(1, Ordering::Relaxed);
                let Ok(connecting) = endpoint.connect(server, "localhost") else {
                    return;
                };
                match tokio::time::timeout(Duration::from_secs(5), connecting).await {
                    Ok(Ok(connection)) => {
                        established.fetch_add(1, Ordering::Relaxed);
                        // Held, never logged on, until the node closes it or the flood ends.
                        while !stop.load(Ordering::Relaxed) {
                            if tokio::time::timeout(Duration::from_millis(100), connection.closed())
                                .await
                                .is_ok()
                            {
                                break;
                            }
                        }
                    }
                    _ => tokio::time::sleep(pause_after_refusal).await,
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    (
        tried.load(std::sync::atomic::Ordering::Relaxed),
        established.load(std::sync::atomic::Ordering::Relaxed),
    )
}

/// One node with metrics, a market, and the first broker's account funded: what a flood test
/// floods.
async fn one_node_to_flood(name: &str, base_port: u16) -> Cluster {
    let cluster = Cluster::start(
        name,
        1,
        base_port,
        &["--metrics-listen", "127.0.0.1:{metrics}"],
    );
    cluster.wait_for_leader(Duration::from_secs(10)).await;
    let mut admin = cluster.client();
    setup_market(&mut admin, 1).await;
    fund_when_open(&mut admin, BROKERS[0].2[0], 1_000_000_000).await;
    cluster
}

/// Logs a broker on and reads its balances, trying again when its connection is lost (as any
/// client does), the whole logon held to 1 s; returns the session and how long it took.
async fn log_on_within_a_second(cluster: &Cluster, key: &str, account: u64) -> (Client, Duration) {
    let started = Instant::now();
    let mut client = cluster.client_with_key(key);
    while let Err(e) = client.balances(account, vec![]).await {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the broker could not log on within 1 s: {e}"
        );
    }
    (client, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_does_not_lock_a_broker_out() {
    let cluster = one_node_to_flood("security-flood", 28_270).await;
    let (_, key, accounts) = BROKERS[0];
    const ORDERS: usize = 300;
    let mut quiet = cluster.client_with_key(key);
    let without = order_latencies(&mut quiet, accounts[0], ORDERS).await;
    drop(quiet);

    // 4,096 connections that never log on from one address, and handshakes as fast as this
    // process can make them from another.
    let ca = exchange::net::tls::load_ca(&cluster.dir.join("certs")).expect("CA");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = cluster.broker(1);
    let holders = tokio::spawn(flood(
        server,
        ca.clone(),
        [127, 0, 0, 2].into(),
        4_096,
        Duration::from_millis(50),
        std::sync::Arc::clone(&stop),
    ));
    let shakers = tokio::spawn(flood(
        server,
        ca,
        [127, 0, 0, 3].into(),
        16,
        Duration::ZERO,
        std::sync::Arc::clone(&stop),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let flood_began = Instant::now();

    let (mut broker_client, logon) = log_on_within_a_second(&cluster, key, accounts[0]).await;
    let with = order_latencies(&mut broker_client, accounts[0], ORDERS).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flood_seconds = flood_began.elapsed().as_secs_f64() + 2.0;
    let (held_tried, held) = holders.await.expect("holders");
    let (shakes, shaken) = shakers.await.expect("shakers");
    println!(
        "flood: {held_tried} connections tried from 127.0.0.2 ({held} established), {shakes} \
         handshakes from 127.0.0.3 ({shaken} established), over {flood_seconds:.1} s; the \
         broker logged on in {logon:?}; order-to-ack p50/p99 without the flood {:?} / {:?}, \
         with it {:?} / {:?}",
        percentile(&without, 0.5),
        percentile(&without, 0.99),
        percentile(&with, 0.5),
        percentile(&with, 0.99),
    );
    assert!(
        logon < Duration::from_secs(1),
        "the broker needed {logon:?} to log on"
    );
    assert!(
        held_tried >= 4_096,
        "the flood did not happen: {held_tried}"
    );
    // The node turned most of them away: refused past the pending pool's share of one
    // address, or sent to validate their address first.
    let page = cluster.scrape_metrics(1);
    let count = |name: &str| metric_sample(&page, name).unwrap_or(0.0) as u64;
    let refused = count("exchange_gateway_connections_refused_total");
    let validated = count("exchange_gateway_address_validations_total");
    println!(
        "the node refused {refused} connections and asked {validated} to validate their address"
    );
    assert!(
        refused + validated > 0,
        "the flood was not turned away: {page}"
    );
}

/// `sessions` sessions of `key` sending orders for `account` at `rate` a second in all, for
/// `seconds`; every order's time to its answer, sorted.
async fn paced_orders(
    cluster: &Cluster,
    key: &str,
    account: u64,
    sessions: usize,
    rate: u32,
    seconds: u64,
) -> Vec<Duration> {
    let mut tasks = tokio::task::JoinSet::new();
    let per_session = Duration::from_secs_f64(sessions as f64 / f64::from(rate));
    let orders = (u64::from(rate) * seconds) as usize / sessions;
    for _ in 0..sessions {
        let mut client = cluster.client_with_key(key);
        tasks.spawn(async move {
            let start = Instant::now();
            let mut latencies = Vec::with_capacity(orders);
            for n in 0..orders {
                tokio::time::sleep_until((start + per_session * n as u32).into()).await;
                let sent = Instant::now();
                let outputs = client
                    .submit(broker_order(account))
                    .await
                    .expect("an order");
                latencies.push(sent.elapsed());
                assert_taken(&outputs);
            }
            latencies
        });
    }
    let mut all = Vec::new();
    while let Some(latencies) = tasks.join_next().await {
        all.extend(latencies.expect("an order session"));
    }
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_starve_the_log() {
    let cluster = Cluster::start("security-readers", 3, 28_290, &[]);
    cluster.wait_for_leader(Duration::from_secs(10)).await;
    let mut admin = cluster.client();
    setup_market(&mut admin, 1).await;
    let ((_, key_1, accounts_1), (_, key_2, accounts_2)) = (BROKERS[0], BROKERS[1]);
    for account in [accounts_1[0], accounts_2[0]] {
        fund_when_open(&mut admin, account, 1_000_000_000).await;
    }
    // Every order rests: room for all of them.
    let limits = ExchangeCommand::Admin(AdminCommand::SetRiskLimits {
        account: AccountId(accounts_1[0]),
        limits: exchange::domain::RiskLimits {
            max_order_qty: exchange::domain::Qty(1_000_000),
            max_order_notional: Amount(i64::MAX),
            max_open_orders: 1_000_000,
        },
    });
    submit(&mut admin, limits, Duration::from_secs(10)).await;
    let term = |statuses: &std::collections::BTreeMap<
        u64,
        Option<exchange::gateway::protocol::NodeStatus>,
    >| {
        statuses
            .values()
            .flatten()
            .map(|s| s.term)
            .max()
            .unwrap_or(0)
    };
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let term_before = term(&cluster.statuses().await);

    // 2,000 orders a second for 3 s, alone, then beside 64 sessions reading as fast as they
    // may (each held to its read rate).
    let alone = paced_orders(&cluster, key_1, accounts_1[0], 4, 2_000, 3).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reads = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut readers = tokio::task::JoinSet::new();
    for n in 0..64 {
        let (key, account) = if n % 2 == 0 {
            (key_1, accounts_1[1])
        } else {
            (key_2, accounts_2[0])
        };
        let mut client = cluster.client_with_key(key);
        let (stop, reads) = (std::sync::Arc::clone(&stop), std::sync::Arc::clone(&reads));
        readers.spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let depth = client.depth(SYMBOL.0, 10).await;
                let balances = client.balances(account, vec![]).await;
                if depth.is_ok() && balances.is_ok() {
                    reads.fetch_add(2, std::sync::atomic::Ordering::Relaxed);
                } else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let read_from = reads.load(std::sync::atomic::Ordering::Relaxed);
    let began = Instant::now();
    let beside = paced_orders(&cluster, key_1, accounts_1[0], 4, 2_000, 3).await;
    let read_rate = (reads.load(std::sync::atomic::Ordering::Relaxed) - read_from) as f64
        / began.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    while readers.join_next().await.is_some() {}
    println!(
        "2,000 orders/s: p50/p99 alone {:?} / {:?}; beside 64 readers ({read_rate:.0} reads/s \
         answered) {:?} / {:?}",
        percentile(&alone, 0.5),
        percentile(&alone, 0.99),
        percentile(&beside, 0.5),
        percentile(&beside, 0.99),
    );
    assert!(
        read_rate > 100.0,
        "the readers barely read: {read_rate:.0}/s"
    );
    assert_eq!(
        cluster.wait_for_leader(Duration::from_secs(10)).await,
        leader
    );
    assert_eq!(
        term(&cluster.statuses().await),
        term_before,
        "the leader changed while the readers read"
    );
}

/// Past `RETRY_WHEN_PENDING` handshakes and logons in progress, the node asks each new
/// connection to prove its address first (QUIC Retry), and a broker, whose client answers the
/// Retry as any QUIC client does, still logs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_128_pending_connections_the_node_asks_for_address_validation() {
    let cluster = one_node_to_flood("security-retry", 29_550).await;
    let (_, key, accounts) = BROKERS[0];
    let validations = || {
        cluster
            .metric(1, "exchange_gateway_address_validations_total")
            .unwrap_or(0.0) as u64
    };
    assert_eq!(validations(), 0, "no Retry before the flood");

    // Three sources, each holding as many pending places as the node gives one source (64):
    // 192 in progress, past the 128 at which the node starts asking for validation.
    let ca = exchange::net::tls::load_ca(&cluster.dir.join("certs")).expect("CA");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut floods = Vec::new();
    for source in [2, 4, 5] {
        floods.push(tokio::spawn(flood(
            cluster.broker(1),
            ca.clone(),
            [127, 0, 0, source].into(),
            128,
            Duration::from_millis(50),
            std::sync::Arc::clone(&stop),
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while validations() == 0 {
        assert!(
            Instant::now() < deadline,
            "192 pending connections and no Retry in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (mut broker_client, logon) = log_on_within_a_second(&cluster, key, accounts[0]).await;
    let traded = order_latencies(&mut broker_client, accounts[0], 10).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut established = 0;
    for flood in floods {
        established += flood.await.expect("flood").1;
    }
    let asked = validations();
    println!(
        "the node asked {asked} connections to validate their address; {established} flood \
         connections were established; the broker logged on in {logon:?} and its 10 orders \
         took {:?} at most",
        traded.last()
    );
    assert!(
        established >= 128,
        "the flood held too little: {established}"
    );
}
