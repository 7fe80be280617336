//! Test hosts: one network namespace per node, joined by a bridge in a namespace of its own,
//! and one namespace for the clients (this process joins it), so that partitions can be cut at
//! the bridge without touching the machine's own network. Where namespaces cannot be made (no
//! root, no iproute2), nodes run as processes on loopback and partitions are not available:
//! the report says which.
//!
//! Everything made here (namespaces, rules, processes) is removed by `teardown`, which `Drop`
//! also runs, so a failed run leaves nothing behind.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// How the nodes are placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// One network namespace per node (10.77.0.i), partitions at the bridge (nftables).
    Namespaces,
    /// Processes on 127.0.0.1: kills and pauses only.
    Loopback,
}

pub struct Hosts {
    pub placement: Placement,
    /// Whether nftables is there to cut partitions.
    pub can_partition: bool,
    /// Host slots: the cluster's nodes and one spare, so that a node can be replaced by a new
    /// machine (a slot keeps its address; a node retired from the cluster frees its slot,
    /// which then serves as the next spare, its data wiped).
    slots: u64,
    /// The cluster's voters now.
    members: std::collections::BTreeSet<u64>,
    /// Whether the cluster was founded (node 1's first start): never twice.
    founded: bool,
    /// Names of everything made here start with this (unique per run).
    prefix: String,
    pub dir: PathBuf,
    node_bin: PathBuf,
    base_port: u16,
    children: BTreeMap<u64, Child>,
    /// Extra flags per node (a planted fault on one node, say).
    node_flags: BTreeMap<u64, Vec<String>>,
    torn_down: bool,
}

const RAFT_PORT: u16 = 7001;
/// libfaketime, where Debian's `faketime` package puts it: nodes started under it read their
/// wall clock's offset from a file the nemesis rewrites (monotonic time stays true).
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const BROKER_PORT: u16 = 7101;

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Hosts {
    /// Makes the hosts for `nodes` nodes: namespaces if `namespaces` and this machine allows,
    /// else loopback. Does not start the nodes.
    pub fn create(
        nodes: u64,
        dir: &Path,
        node_bin: &Path,
        namespaces: bool,
        base_port: u16,
    ) -> Result<Hosts, String> {
        let prefix = format!("xc{}", std::process::id() % 100_000);
        let mut hosts = Hosts {
            placement: Placement::Loopback,
            can_partition: false,
            slots: nodes + 1,
            members: (1..=nodes).collect(),
            founded: false,
            prefix,
            dir: dir.to_path_buf(),
            node_bin: node_bin.to_path_buf(),
            base_port,
            children: BTreeMap::new(),
            node_flags: BTreeMap::new(),
            torn_down: false,
        };
        if namespaces {
            match hosts.make_namespaces() {
                Ok(()) => {
                    hosts.placement = Placement::Namespaces;
                    hosts.can_partition = run(&["nft", "--version"]).is_ok();
                }
                Err(why) => {
                    hosts.remove_namespaces();
                    tracing::warn!(%why, "no network namespaces: nodes run on loopback");
                }
            }
        }
        exchange::net::tls::generate(&hosts.certs(), &hosts.slots().collect::<Vec<_>>(), &[])
            .map_err(|e| e.to_string())?;
        let mut brokers = format!("admin_key = \"{}\"\n", crate::workload::ADMIN_KEY);
        for broker in crate::workload::desks() {
            brokers.push_str(&format!(
                "[[broker]]\nid = {}\nkey = \"{}\"\naccounts = {:?}\n",
                broker.id, broker.key, broker.accounts
            ));
        }
        std::fs::write(hosts.dir.join("brokers.toml"), brokers).map_err(|e| e.to_string())?;
        Ok(hosts)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.prefix)
    }

    fn host(&self, id: u64) -> String {
        format!("{}n{id}", self.prefix)
    }

    fn client_ns(&self) -> String {
        format!("{}cl", self.prefix)
    }

    /// The veth end on the bridge of node `id` (0: the clients').
    fn port(&self, id: u64) -> String {
        format!("{}v{id}", self.prefix)
    }

    fn make_namespaces(&mut self) -> Result<(), String> {
        let bridge = self.bridge();
        run(&["ip", "netns", "add", &bridge])?;
        run(&["ip", "-n", &bridge, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &bridge, "link", "set", "br0", "up"])?;
        run(&["ip", "-n", &bridge, "link", "set", "lo", "up"])?;
        let client = self.client_ns();
        let mut attach = vec![(0u64, client)];
        attach.extend(self.slots().map(|id| (id, self.host(id))));
        for (id, ns) in attach {
            let port = self.port(id);
            let address = format!("10.77.0.{}/24", if id == 0 { 100 } else { id });
            run(&["ip", "netns", "add", &ns])?;
            run(&[
                "ip", "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            run(&["ip", "link", "set", &port, "netns", &bridge])?;
            run(&[
                "ip", "-n", &bridge, "link", "set", &port, "master", "br0", "up",
            ])?;
            run(&["ip", "-n", &ns, "addr", "add", &address, "dev", "eth0"])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    fn remove_namespaces(&self) {
        let mut all = vec![self.client_ns(), self.bridge()];
        all.extend(self.slots().map(|id| self.host(id)));
        for ns in all {
            let _ = run(&["ip", "netns", "del", &ns]);
        }
    }

    /// Moves this thread (and the threads it starts afterwards) into the clients' namespace.
    /// Call it before starting the async runtime.
    pub fn enter_client_namespace(&self) -> Result<(), String> {
        if self.placement != Placement::Namespaces {
            return Ok(());
        }
        let path = format!("/run/netns/{}", self.client_ns());
        let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a valid namespace file descriptor, for this thread only.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    pub fn certs(&self) -> PathBuf {
        self.dir.join("certs")
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}"))
    }

    pub fn raft_addr(&self, id: u64) -> SocketAddr {
        match self.placement {
            Placement::Namespaces => SocketAddr::from(([10, 77, 0, id as u8], RAFT_PORT)),
            Placement::Loopback => SocketAddr::from(([127, 0, 0, 1], self.base_port + id as u16)),
        }
    }

    pub fn broker_addr(&self, id: u64) -> SocketAddr {
        match self.placement {
            Placement::Namespaces => SocketAddr::from(([10, 77, 0, id as u8], BROKER_PORT)),
            Placement::Loopback => {
                SocketAddr::from(([127, 0, 0, 1], self.base_port + 100 + id as u16))
            }
        }
    }

    /// Every slot's broker address: where clients look for the leader.
    pub fn brokers(&self) -> Vec<SocketAddr> {
        self.slots().map(|id| self.broker_addr(id)).collect()
    }

    /// The cluster's members (voters) now.
    pub fn ids(&self) -> impl Iterator<Item = u64> {
        self.members.clone().into_iter()
    }

    fn slots(&self) -> impl Iterator<Item = u64> {
        1..=self.slots
    }

    /// The free slot a new node can start in.
    pub fn spare(&self) -> Option<u64> {
        self.slots().find(|id| !self.members.contains(id))
    }

    /// Node `joined` replaced node `left` in the cluster: `left` is stopped and its data
    /// wiped (the machine is gone; its slot is the next spare).
    pub fn replaced(&mut self, left: u64, joined: u64) -> Result<(), String> {
        // The fault killed `left` already; this only makes sure.
        let _ = self.kill(left);
        self.wipe(left)?;
        self.members.remove(&left);
        self.members.insert(joined);
        Ok(())
    }

    /// Removes a stopped node's data: a new, empty machine in its slot.
    pub fn wipe(&mut self, id: u64) -> Result<(), String> {
        match std::fs::remove_dir_all(self.data_dir(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("{}: {e}", self.data_dir(id).display()))
            }
            _ => Ok(()),
        }
    }

    /// Extra flags node `id` starts with.
    pub fn add_node_flag(&mut self, id: u64, flag: String) {
        self.node_flags.entry(id).or_default().push(flag);
    }

    /// Whether nodes run under libfaketime, so their clocks can be moved.
    pub fn can_move_clocks(&self) -> bool {
        Path::new(FAKETIME_LIB).exists()
    }

    fn clock_file(&self, id: u64) -> PathBuf {
        self.dir.join(format!("clock-{id}"))
    }

    /// Moves node `id`'s wall clock by `offset` (libfaketime syntax: "+1h", "-30m", "+0").
    pub fn set_clock(&self, id: u64, offset: &str) -> Result<(), String> {
        std::fs::write(self.clock_file(id), offset).map_err(|e| e.to_string())
    }

    /// Tears the tail of node `id`'s log as a crash in the middle of a write would (the node
    /// must be stopped): `len` bytes of a record that was never finished, right after the last
    /// whole one. Records the node had made durable stay as they are: Raft relies on that, and
    /// a nemesis that destroyed them would test a disk that loses acknowledged writes instead.
    pub fn tear_log(&self, id: u64, len: usize, seed: u64) -> Result<String, String> {
        use std::io::{Seek, SeekFrom, Write};
        let dir = self.data_dir(id).join("log");
        let (segment, end, last) = {
            let log = exchange::log::Log::open(&dir, exchange::log::Config::default())
                .map_err(|e| format!("{}: {e}", dir.display()))?;
            let Some(last) = log.last_index() else {
                return Ok("an empty log: nothing to tear".into());
            };
            let position = log
                .reader()
                .position(last)
                .map_err(|e| format!("{}: {e}", dir.display()))?;
            let align = exchange::log::RECORD_ALIGN as u64;
            let end = (position.offset + position.bytes).div_ceil(align) * align;
            (position.segment, end, last)
        };
        let room = std::fs::metadata(&segment)
            .map_err(|e| e.to_string())?
            .len()
            .saturating_sub(end);
        let len = len.min(room as usize);
        if len == 0 {
            return Ok("a full segment: nothing to tear".into());
        }
        // Never a zero byte first: a zero would read as the end of the log, not a torn record.
        let mut state = seed | 1;
        let garbage: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 255) as u8 + 1
            })
            .collect();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .map_err(|e| format!("{}: {e}", segment.display()))?;
        file.seek(SeekFrom::Start(end))
            .and_then(|_| file.write_all(&garbage))
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("{}: {e}", segment.display()))?;
        Ok(format!(
            "{len} bytes of an unfinished record after index {last}, at byte {end} of {}",
            segment.display()
        ))
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.children.contains_key(&id)
    }

    /// Nodes that exited by themselves (not killed here), with the end of their log: a crash
    /// is a finding. They are forgotten, so `start` brings them back.
    pub fn reap_exited(&mut self) -> Vec<(u64, String)> {
        let exited: Vec<(u64, String)> = self
            .children
            .iter_mut()
            .filter_map(|(id, child)| match child.try_wait() {
                Ok(Some(status)) => Some((*id, status.to_string())),
                _ => None,
            })
            .collect();
        exited
            .into_iter()
            .map(|(id, status)| {
                self.children.remove(&id);
                (id, self.exit_reason(id, &status))
            })
            .collect()
    }

    /// The exit status with the node's last words from its log.
    fn exit_reason(&self, id: u64, status: &str) -> String {
        let log =
            std::fs::read_to_string(self.dir.join(format!("node-{id}.log"))).unwrap_or_default();
        let last = log
            .lines()
            .rev()
            .find(|l| l.contains("exchange-node") || l.contains("fatal"))
            .unwrap_or("");
        format!("{status}: {last}")
    }

    pub fn start(&mut self, id: u64) -> Result<(), String> {
        if self.children.contains_key(&id) {
            return Ok(());
        }
        // The founder names the first members (they become the voters); anyone else knows
        // every slot, members and spare, to compare output hashes with.
        let bootstrap = id == 1 && !self.founded;
        let named: Vec<u64> = if bootstrap {
            self.ids().collect()
        } else {
            self.slots().collect()
        };
        let peers: Vec<String> = named
            .iter()
            .map(|&p| format!("{p}={}/{}", self.raft_addr(p), self.broker_addr(p)))
            .collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node-{id}.log")))
            .map_err(|e| e.to_string())?;
        let mut command = match self.placement {
            Placement::Namespaces => {
                // `ip netns exec` replaces itself with the node: the child's pid is the node's.
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &self.host(id)])
                    .arg(&self.node_bin);
                c
            }
            Placement::Loopback => Command::new(&self.node_bin),
        };
        if self.can_move_clocks() {
            if !self.clock_file(id).exists() {
                self.set_clock(id, "+0")?;
            }
            command
                .env("LD_PRELOAD", FAKETIME_LIB)
                .env("FAKETIME_TIMESTAMP_FILE", self.clock_file(id))
                .env("FAKETIME_NO_CACHE", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        command
            .arg("--id")
            .arg(id.to_string())
            .arg("--peers")
            .arg(peers.join(","))
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .arg("--certs-dir")
            .arg(self.certs())
            .arg("--brokers")
            .arg(self.dir.join("brokers.toml"))
            .args(self.node_flags.get(&id).into_iter().flatten())
            .args(bootstrap.then_some("--bootstrap"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        // The node dies with this process, even if it is killed before teardown runs.
        // SAFETY: prctl is async-signal-safe and touches only the child being created.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("starting node {id}: {e}"))?;
        self.children.insert(id, child);
        self.founded |= bootstrap;
        Ok(())
    }

    /// SIGKILL: a crash.
    /// Kills the node. A node that had already exited by itself crashed, and a fault must not
    /// hide that: its exit is returned, for the run to count.
    #[must_use = "a node found already dead crashed, and the run must count it"]
    pub fn kill(&mut self, id: u64) -> Option<String> {
        let mut child = self.children.remove(&id)?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(self.exit_reason(id, &status.to_string()));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    fn signal(&self, id: u64, signal: i32) {
        if let Some(child) = self.children.get(&id) {
            // SAFETY: a plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
        }
    }

    pub fn pause(&self, id: u64) {
        self.signal(id, libc::SIGSTOP);
    }

    pub fn resume(&self, id: u64) {
        self.signal(id, libc::SIGCONT);
    }

    /// Cuts the network between the groups (nodes not named keep every link). Symmetric and
    /// silent: packets are dropped at the bridge.
    pub fn partition(&self, groups: &[Vec<u64>]) -> Result<(), String> {
        let mut links = Vec::new();
        for (a, group) in groups.iter().enumerate() {
            for other in &groups[a + 1..] {
                for x in group {
                    for y in other {
                        links.push((*x, *y));
                    }
                }
            }
        }
        self.cut(&links)
    }

    /// Cuts the links between these pairs of nodes, both ways; every other link stays.
    pub fn cut(&self, links: &[(u64, u64)]) -> Result<(), String> {
        if !self.can_partition {
            return Err("partitions need network namespaces and nftables".into());
        }
        let _ = self.heal();
        let mut rules = String::new();
        for (x, y) in links {
            let (px, py) = (self.port(*x), self.port(*y));
            rules.push_str(&format!(
                "iifname \"{px}\" oifname \"{py}\" drop\niifname \"{py}\" oifname \"{px}\" drop\n"
            ));
        }
        let script = format!(
            "table bridge chaos {{ chain cut {{ type filter hook forward priority 0; policy accept;\n{rules}}}\n}}\n"
        );
        let path = self.dir.join("partition.nft");
        std::fs::write(&path, script).map_err(|e| e.to_string())?;
        let path = path.to_string_lossy().to_string();
        run(&["ip", "netns", "exec", &self.bridge(), "nft", "-f", &path])
    }

    /// Drops a share of every packet between nodes (not to or from clients).
    pub fn lose_packets(&self, percent: u32) -> Result<(), String> {
        if !self.can_partition {
            return Err("packet loss needs network namespaces and nftables".into());
        }
        let _ = self.heal();
        let mut rules = String::new();
        for x in self.slots() {
            for y in self.slots().filter(|y| *y != x) {
                rules.push_str(&format!(
                    "iifname \"{}\" oifname \"{}\" numgen random mod 100 < {percent} drop\n",
                    self.port(x),
                    self.port(y)
                ));
            }
        }
        let script = format!(
            "table bridge chaos {{ chain cut {{ type filter hook forward priority 0; policy accept;\n{rules}}}\n}}\n"
        );
        let path = self.dir.join("loss.nft");
        std::fs::write(&path, script).map_err(|e| e.to_string())?;
        let path = path.to_string_lossy().to_string();
        run(&["ip", "netns", "exec", &self.bridge(), "nft", "-f", &path])
    }

    /// Removes every cut.
    pub fn heal(&self) -> Result<(), String> {
        if !self.can_partition {
            return Ok(());
        }
        match run(&[
            "ip",
            "netns",
            "exec",
            &self.bridge(),
            "nft",
            "delete",
            "table",
            "bridge",
            "chaos",
        ]) {
            // Nothing was cut: nothing to heal.
            Err(e) if e.contains("No such file") => Ok(()),
            other => other,
        }
    }

    /// Stops every node and removes everything this run made.
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        for id in self.slots().collect::<Vec<_>>() {
            self.resume(id);
            // The run's verdict is written: a node that died by now was counted by the last
            // reaping or is past judging.
            let _ = self.kill(id);
        }
        if self.placement == Placement::Namespaces {
            let _ = self.heal();
            self.remove_namespaces();
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.teardown();
    }
}
