//! A real cluster of `exchange-node` processes on loopback for integration tests.
//!
//! Each test gives its own port base so tests never collide. The cluster's processes are
//! killed and its directory removed when the `Cluster` is dropped, also when the test fails;
//! on failure the tail of every node's log is printed.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use exchange::domain::{
    AccountId, AdminCommand, Amount, AssetId, ClientOrderId, Command as ExchangeCommand, Event,
    NewOrder, OrderId, OrderType, Output, Price, Qty, RiskLimits, SelfTradePrevention, Side,
    SymbolId, SymbolSpec, TimeInForce,
};
use exchange::gateway::client::Client;
use exchange::gateway::protocol::NodeStatus;

pub const SYMBOL: SymbolId = SymbolId(1);
/// The operator's key in every test cluster.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";
/// Brokers of every test cluster: (id, key, accounts it owns).
pub const BROKERS: [(u32, &str, [u64; 2]); 2] = [
    (1, "test-broker-1-key-0123456789", [1001, 1002]),
    (2, "test-broker-2-key-0123456789", [2001, 2002]),
];
/// The FIX drop copy of broker 1 in every test cluster: (SenderCompID, key).
pub const DROP_COPY: (&str, &str) = ("DROPCOPY1", "test-dropcopy-1-key-0123456789");
pub const BASE: AssetId = AssetId(1);
pub const QUOTE: AssetId = AssetId(2);

/// Raft timeouts for tests that judge behaviour, not timing: a shared 2-core host (CI) can stall
/// a node for longer than the tuned defaults' 60 ms lease, and the election that follows turns an
/// exact scripted flow into "outcome unknown". The tests that judge the defaults' timing
/// (cluster_rto, cluster_load, the chaos suite) run the defaults via `start_with_default_timeouts`.
const RELAXED_TIMEOUTS: [&str; 6] = [
    "--heartbeat-ms",
    "50",
    "--election-min-ms",
    "250",
    "--election-max-ms",
    "500",
];

/// Cluster tests in one binary run one at a time: three nodes each already fill two cores.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Holds the binary's one cluster place: for a test that starts nodes of its own.
pub fn one_cluster_at_a_time() -> MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

pub struct Cluster {
    _exclusive: MutexGuard<'static, ()>,
    pub dir: PathBuf,
    certs: PathBuf,
    base_port: u16,
    /// The founding members, 1..=size.
    size: u64,
    /// Nodes that may join later (size+1..=size+spares): certificates and ports reserved.
    spares: u64,
    flags: Vec<String>,
    nodes: BTreeMap<u64, Child>,
}

impl Cluster {
    /// Starts `size` nodes with Raft on `base_port + id` and brokers on `base_port + 100 + id`,
    /// with relaxed Raft timeouts (`RELAXED_TIMEOUTS`).
    pub fn start(name: &str, size: u64, base_port: u16, flags: &[&str]) -> Cluster {
        Self::start_with_spares(name, size, 0, base_port, flags)
    }

    /// As `start`, with the node's default (tuned) Raft timeouts: for the tests that judge them.
    pub fn start_with_default_timeouts(
        name: &str,
        size: u64,
        base_port: u16,
        flags: &[&str],
    ) -> Cluster {
        settle_disk();
        Self::start_inner(name, size, 0, base_port, flags, false)
    }

    /// As `start`, reserving `spares` more nodes that can join later with `start_spare`.
    pub fn start_with_spares(
        name: &str,
        size: u64,
        spares: u64,
        base_port: u16,
        flags: &[&str],
    ) -> Cluster {
        Self::start_inner(name, size, spares, base_port, flags, true)
    }

    fn start_inner(
        name: &str,
        size: u64,
        spares: u64,
        base_port: u16,
        flags: &[&str],
        relaxed_timeouts: bool,
    ) -> Cluster {
        let exclusive = one_cluster_at_a_time();
        for id in 1..=size + spares {
            for port in [base_port + id as u16, base_port + 100 + id as u16] {
                assert!(
                    UdpSocket::bind(("127.0.0.1", port)).is_ok(),
                    "port {port} is taken: another test or process is using this test's ports"
                );
            }
        }
        let dir = std::env::temp_dir().join(format!("exchange-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test directory");
        let certs = dir.join("certs");
        exchange::net::tls::generate(&certs, &(1..=size + spares).collect::<Vec<_>>(), &[])
            .expect("certificates");
        let mut brokers_file = format!("admin_key = \"{ADMIN_KEY}\"\n");
        for (id, key, accounts) in BROKERS {
            brokers_file.push_str(&format!(
                "[[broker]]\nid = {id}\nkey = \"{key}\"\naccounts = {accounts:?}\nfix_comp_id = \"BROKER{id}\"\n"
            ));
        }
        brokers_file.push_str(&format!(
            "[[drop_copy]]\nfix_comp_id = \"{}\"\nkey = \"{}\"\nbroker = 1\n",
            DROP_COPY.0, DROP_COPY.1
        ));
        std::fs::write(dir.join("brokers.toml"), brokers_file).expect("brokers file");
        let timeouts: &[&str] = if relaxed_timeouts {
            &RELAXED_TIMEOUTS
        } else {
            &[]
        };
        let mut cluster = Cluster {
            _exclusive: exclusive,
            dir,
            certs,
            base_port,
            size,
            spares,
            flags: timeouts
                .iter()
                .chain(flags)
                .map(|f| f.to_string())
                .collect(),
            nodes: BTreeMap::new(),
        };
        for id in 1..=size {
            cluster.start_node(id);
        }
        cluster
    }

    fn peers(&self, upto: u64) -> String {
        (1..=upto)
            .map(|id| format!("{id}=127.0.0.1:{}", self.base_port + id as u16))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn broker(&self, id: u64) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base_port + 100 + id as u16))
    }

    /// The address `--md-listen 127.0.0.1:{md}` gives node `id`'s market data endpoint.
    pub fn market_data(&self, id: u64) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base_port + 500 + id as u16))
    }

    pub fn brokers(&self) -> Vec<SocketAddr> {
        (1..=self.size + self.spares)
            .map(|id| self.broker(id))
            .collect()
    }

    /// The port `--metrics-listen 127.0.0.1:{metrics}` gives node `id`.
    pub fn metrics_port(&self, id: u64) -> u16 {
        self.base_port + 200 + id as u16
    }

    /// The port `--http-listen 127.0.0.1:{http}` gives node `id`.
    pub fn http_port(&self, id: u64) -> u16 {
        self.base_port + 300 + id as u16
    }

    /// The cluster's certificate directory (`ca.pem` and the nodes' certificates).
    pub fn certs_dir(&self) -> &std::path::Path {
        &self.certs
    }

    /// The port `--fix-listen 127.0.0.1:{fix}` gives node `id`.
    pub fn fix_port(&self, id: u64) -> u16 {
        self.base_port + 400 + id as u16
    }

    /// Node `id`'s Prometheus page.
    pub fn scrape_metrics(&self, id: u64) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port(id)))
            .expect("metrics listener");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
            .expect("request");
        let mut page = String::new();
        stream.read_to_string(&mut page).expect("response");
        assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
        page
    }

    /// The value of node `id`'s first sample that `line_start` begins (a metric's name, maybe
    /// with some of its labels); `None` if the page has none.
    pub fn metric(&self, id: u64, line_start: &str) -> Option<f64> {
        metric_sample(&self.scrape_metrics(id), line_start)
    }

    pub fn raft_addr(&self, id: u64) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base_port + id as u16))
    }

    /// Starts a spare node: it knows the cluster but is no member until the leader adds it.
    pub fn start_spare(&mut self, id: u64) {
        assert!(
            id > self.size && id <= self.size + self.spares,
            "node {id} is not a spare"
        );
        self.spawn(id, self.peers(id));
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}"))
    }

    pub fn start_node(&mut self, id: u64) {
        let peers = if id <= self.size {
            self.peers(self.size)
        } else {
            self.peers(id)
        };
        self.spawn(id, peers);
    }

    /// Starts a founding node with extra flags (for a test-only fault, say).
    pub fn start_node_with(&mut self, id: u64, extra: &[&str]) {
        let saved = self.flags.clone();
        self.flags.extend(extra.iter().map(|f| f.to_string()));
        self.start_node(id);
        self.flags = saved;
    }

    fn spawn(&mut self, id: u64, peers: String) {
        // Node 1 founds the cluster on its very first start.
        let bootstrap = id == 1 && !self.data_dir(1).exists();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node-{id}.log")))
            .expect("node log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_exchange-node"));
        // The node dies with the test process, even if the test is killed before Drop runs.
        // SAFETY: prctl is async-signal-safe and touches only the child being created.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .arg("--id")
            .arg(id.to_string())
            .arg("--peers")
            .arg(peers)
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .arg("--certs-dir")
            .arg(&self.certs)
            .arg("--brokers")
            .arg(self.dir.join("brokers.toml"))
            .args(self.flags.iter().map(|f| {
                // A flag may name a per-node port: `{metrics}` is base port + 200 + id,
                // `{http}` base port + 300 + id, `{fix}` base port + 400 + id, `{md}` base
                // port + 500 + id; `{id}` is the node's id, `{dir}` the test's directory.
                f.replace("{metrics}", &self.metrics_port(id).to_string())
                    .replace("{md}", &self.market_data(id).port().to_string())
                    .replace("{http}", &self.http_port(id).to_string())
                    .replace("{fix}", &self.fix_port(id).to_string())
                    .replace("{id}", &id.to_string())
                    .replace("{dir}", &self.dir.to_string_lossy())
            }))
            .args(bootstrap.then_some("--bootstrap"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start exchange-node");
        self.nodes.insert(id, child);
    }

    /// Node `id`'s process id, while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.nodes.get(&id).map(|child| child.id())
    }

    /// SIGKILL: a crash, with no chance to clean up.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.remove(&id) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `exchange-cli ARGS` against this cluster (its nodes and certificates, bounded to
    /// 30 s); returns the exit code and stdout.
    pub fn cli(&self, args: &[&str]) -> (Option<i32>, String) {
        let nodes = self
            .brokers()
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_exchange-cli"))
            .args(args)
            .args(["--nodes", &nodes])
            .arg("--certs-dir")
            .arg(&self.certs)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start exchange-cli");
        let started = Instant::now();
        while child.try_wait().expect("poll exchange-cli").is_none() {
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("exchange-cli {args:?} ran past 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().expect("exchange-cli output");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    }

    /// A client logged on as the operator.
    pub fn client(&self) -> Client {
        self.client_with_key(ADMIN_KEY)
    }

    /// A client that logs on with `key`.
    pub fn client_with_key(&self, key: &str) -> Client {
        let ca = exchange::net::tls::load_ca(&self.certs).expect("CA");
        Client::new(self.brokers(), &ca)
            .expect("client")
            .with_api_key(key)
    }

    /// Every running node's status, asked in parallel (None for a node that does not answer).
    pub async fn statuses(&self) -> BTreeMap<u64, Option<NodeStatus>> {
        let client = std::sync::Arc::new(self.client());
        let mut asks = tokio::task::JoinSet::new();
        for &id in self.nodes.keys() {
            let (client, addr) = (std::sync::Arc::clone(&client), self.broker(id));
            asks.spawn(async move { (id, client.status_of(addr).await.ok()) });
        }
        let mut statuses = BTreeMap::new();
        while let Some(Ok((id, status))) = asks.join_next().await {
            statuses.insert(id, status);
        }
        statuses
    }

    /// Waits until one node leads and every running node agrees on it.
    pub async fn wait_for_leader(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let statuses = self.statuses().await;
            let running: Vec<&NodeStatus> = statuses
                .iter()
                .filter(|(id, _)| self.nodes.contains_key(id))
                .filter_map(|(_, s)| s.as_ref())
                .collect();
            let leaders: Vec<u64> = running
                .iter()
                .filter(|s| s.role == "leader")
                .map(|s| s.id)
                .collect();
            if let [leader] = leaders[..] {
                if running.len() == self.nodes.len()
                    && running.iter().all(|s| s.leader == Some(leader))
                {
                    return leader;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {within:?}: {statuses:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every running node has applied the same index, and returns their hashes
    /// there (one per node).
    pub async fn wait_for_convergence(&self, within: Duration) -> BTreeMap<u64, (u64, String)> {
        let deadline = Instant::now() + within;
        loop {
            let statuses = self.statuses().await;
            let applied: BTreeMap<u64, (u64, String)> = statuses
                .iter()
                .filter(|(id, _)| self.nodes.contains_key(id))
                .filter_map(|(id, s)| {
                    s.as_ref()
                        .map(|s| (*id, (s.applied_index, s.output_hash.clone())))
                })
                .collect();
            let indexes: std::collections::BTreeSet<u64> = applied.values().map(|a| a.0).collect();
            let commit = statuses
                .values()
                .flatten()
                .map(|s| s.commit_index)
                .max()
                .unwrap_or(0);
            if applied.len() == self.nodes.len() && indexes.len() == 1 && indexes.contains(&commit)
            {
                return applied;
            }
            assert!(
                Instant::now() < deadline,
                "nodes did not converge within {within:?}: {statuses:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.nodes) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for id in 1..=self.size + self.spares {
                let log = std::fs::read_to_string(self.dir.join(format!("node-{id}.log")))
                    .unwrap_or_default();
                // A node's panic first: its backtrace would push the message out of the tail.
                let lines: Vec<&str> = log.lines().collect();
                for (n, line) in lines.iter().enumerate() {
                    if line.contains("panicked at") {
                        eprintln!("---- node {id} panicked ----");
                        for line in &lines[n..(n + 3).min(lines.len())] {
                            eprintln!("{line}");
                        }
                    }
                }
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!("---- node {id} log (last lines) ----");
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
            // Whole logs for a post-mortem, where asked for.
            if let Some(keep) = std::env::var_os("EXCHANGE_TEST_KEEP_LOGS") {
                let keep = PathBuf::from(keep).join(self.dir.file_name().unwrap_or_default());
                let _ = std::fs::create_dir_all(&keep);
                for id in 1..=self.size + self.spares {
                    let name = format!("node-{id}.log");
                    let _ = std::fs::copy(self.dir.join(&name), keep.join(&name));
                }
                eprintln!("node logs kept in {}", keep.display());
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Cluster {
    /// Waits until every running node has applied the same index, asserts that they all have
    /// the same output hash there, and returns the index.
    pub async fn assert_converged(&self, within: Duration) -> u64 {
        let converged = self.wait_for_convergence(within).await;
        let hashes: std::collections::BTreeSet<&String> =
            converged.values().map(|(_, hash)| hash).collect();
        assert_eq!(hashes.len(), 1, "replicas diverged: {converged:?}");
        converged
            .values()
            .map(|(index, _)| *index)
            .max()
            .unwrap_or(0)
    }

    /// After the divergence watchers had time to compare, every running node has compared its
    /// hash with every other running node's, at or after `index`, and found no difference.
    pub async fn assert_no_divergence(&self, index: u64) {
        let deadline =
            Instant::now() + exchange::replication::divergence::DIVERGENCE_CHECK_INTERVAL * 10;
        loop {
            let statuses = self.statuses().await;
            let mut all_checked = true;
            for (id, status) in &statuses {
                let status = status
                    .as_ref()
                    .unwrap_or_else(|| panic!("node {id} does not answer"));
                assert_eq!(status.divergence, None, "node {id} reports a divergence");
                for peer in self.nodes.keys().filter(|peer| *peer != id) {
                    let checked = status
                        .hashes_checked
                        .iter()
                        .find(|(p, _)| p == peer)
                        .map(|(_, i)| *i);
                    all_checked &= checked.is_some_and(|i| i >= index);
                }
            }
            if all_checked {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "hashes were not compared at or after {index}: {statuses:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Asserts that every order in `ids` (of `account`) still rests. It asks the leader for each
/// order's status, a read that may be repeated after any error; a cancel, resent after an
/// unknown outcome that had in fact cancelled it, would call a present order lost.
pub async fn assert_all_present(client: &mut Client, account: u64, ids: &[OrderId]) {
    for order_id in ids {
        let deadline = Instant::now() + Duration::from_secs(10);
        let open = loop {
            match client.order_status(order_id.0).await {
                Ok(open) => break open,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "order {order_id}'s status not read within 10 s: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        assert!(
            open.is_some_and(|open| open.account == account),
            "acknowledged order {order_id} was lost: {open:?}"
        );
    }
}

/// Submits a command, retrying while the cluster has no leader (up to `within`).
pub async fn submit(
    client: &mut Client,
    command: ExchangeCommand,
    within: Duration,
) -> Vec<Output> {
    let deadline = Instant::now() + within;
    loop {
        match client.submit(command).await {
            Ok(outputs) => return outputs,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "command not acknowledged within {within:?}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// A symbol and `accounts` accounts, each with plenty of both assets.
pub async fn setup_market(client: &mut Client, accounts: u64) {
    let mut commands = vec![ExchangeCommand::Admin(AdminCommand::AddSymbol(
        SymbolSpec {
            symbol: SYMBOL,
            base: BASE,
            quote: QUOTE,
            tick_size: Price(1),
            lot_size: Qty(1),
            name: exchange_domain::Name::numbered("SYM", SYMBOL.0 as u64),
            price_decimals: 0,
        },
    ))];
    for account in 1..=accounts {
        commands.push(ExchangeCommand::Admin(AdminCommand::CreateAccount {
            account: AccountId(account),
            owner: exchange::domain::BrokerId::OPERATOR,
        }));
        commands.push(ExchangeCommand::Admin(AdminCommand::SetRiskLimits {
            account: AccountId(account),
            limits: RiskLimits {
                max_order_qty: Qty(1_000_000),
                max_order_notional: Amount(i64::MAX),
                max_open_orders: 1_000_000,
            },
        }));
        for asset in [BASE, QUOTE] {
            commands.push(ExchangeCommand::Admin(AdminCommand::Deposit {
                account: AccountId(account),
                asset,
                amount: Amount(1_000_000_000),
            }));
        }
    }
    for command in commands {
        let outputs = submit(client, command, Duration::from_secs(10)).await;
        assert!(
            !outputs
                .iter()
                .any(|o| matches!(o.event, Event::AdminRejected { .. })),
            "setup rejected: {outputs:?}"
        );
    }
}

/// `spec`, and for each of `accounts` (brokers' accounts, which the leader opens from the
/// brokers file once it has taken office: waited for) wide risk limits and funds in both of the
/// symbol's assets.
pub async fn setup_broker_accounts(client: &mut Client, spec: SymbolSpec, accounts: &[u64]) {
    let mut commands = vec![ExchangeCommand::Admin(AdminCommand::AddSymbol(spec))];
    for &account in accounts {
        commands.push(ExchangeCommand::Admin(AdminCommand::SetRiskLimits {
            account: AccountId(account),
            limits: RiskLimits {
                max_order_qty: Qty(1_000_000),
                max_order_notional: Amount(i64::MAX),
                max_open_orders: 10_000,
            },
        }));
        for asset in [spec.base, spec.quote] {
            commands.push(ExchangeCommand::Admin(AdminCommand::Deposit {
                account: AccountId(account),
                asset,
                amount: Amount(1_000_000_000_000),
            }));
        }
    }
    for command in commands {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let outputs = submit(client, command, Duration::from_secs(10)).await;
            if !outputs
                .iter()
                .any(|o| matches!(o.event, Event::AdminRejected { .. }))
            {
                break;
            }
            assert!(Instant::now() < deadline, "setup rejected: {outputs:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The value of the first sample in a Prometheus page that `line_start` begins: a metric's
/// name (not the start of a longer name), maybe with some of its labels.
pub fn metric_sample(page: &str, line_start: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(line_start).is_some_and(|rest| {
                !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            })
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

pub fn limit(account: u64, side: Side, price: i64, qty: i64) -> ExchangeCommand {
    ExchangeCommand::NewOrder(NewOrder {
        account: AccountId(account),
        symbol: SYMBOL,
        client_order_id: ClientOrderId(0),
        side,
        order_type: OrderType::Limit,
        time_in_force: TimeInForce::Gtc,
        price: Price(price),
        qty: Qty(qty),
        self_trade_prevention: SelfTradePrevention::None,
    })
}

/// The id of the order a command's outputs accepted.
pub fn accepted(outputs: &[Output]) -> OrderId {
    outputs
        .iter()
        .find_map(|o| match o.event {
            Event::Accepted { order_id, .. } => Some(order_id),
            _ => None,
        })
        .unwrap_or_else(|| panic!("order not accepted: {outputs:?}"))
}

/// Writes out what earlier work on the host left dirty (a build's output, the tests before):
/// the tests that judge the default timeouts judge a cluster under its own load, and on a
/// shared disk every node's sync would otherwise queue behind that write-back (a full-load
/// test lost its leader so right after `scripts/test.sh`'s build, and not when run alone).
fn settle_disk() {
    let began = Instant::now();
    match Command::new("sync").status() {
        Ok(status) if status.success() => {}
        other => eprintln!("sync before the cluster started: {other:?}"),
    }
    if began.elapsed() > Duration::from_secs(1) {
        eprintln!(
            "the host's write-back took {:?} before the cluster started",
            began.elapsed()
        );
    }
}
