#![allow(dead_code, unused_variables, deprecated)]
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io::{self, Cursor};
use std::ops::RangeBounds;
use std::time::Duration;
use futures::{Stream, TryStreamExt};
use openraft::error::{ClientWriteError, Fatal, ForwardReason, InitializeError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError, Unreachable, NetworkError, Timeout};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::storage::{EntryResponder, IOFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftLogReader, RaftSnapshotBuilder, ReadPolicy, ServerState};
use serde::{Deserialize, Serialize};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::Instant as _;
use openraft::vote::RaftLeaderId as _;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr { pub raft: String, pub broker: String }
impl std::fmt::Display for NodeAddr { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "{}", self.raft) } }
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct D(pub u64);
// AppData now requires Display:
impl std::fmt::Display for D { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "batch {}", self.0) } }
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied { pub outputs: Vec<u64> }

openraft::declare_raft_types!(
    pub TC:
        D = D,
        R = Applied,
        NodeId = u64,
        Node = NodeAddr,
        AsyncRuntime = openraft::TokioRuntime,
);
pub type Raft = openraft::Raft<TC, StateMachine>;
pub type Entry = openraft::type_config::alias::EntryOf<TC>;
pub type LogId = openraft::type_config::alias::LogIdOf<TC>;
pub type Vote = openraft::type_config::alias::VoteOf<TC>;
pub type LeaderId = openraft::type_config::alias::LeaderIdOf<TC>;
pub type CommittedLeaderId = openraft::type_config::alias::CommittedLeaderIdOf<TC>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TC>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TC>;
pub type Membership = openraft::Membership<u64, NodeAddr>;
pub type SmSnapshot = openraft::type_config::alias::SnapshotOf<TC, Cursor<Vec<u8>>>;

pub struct LogStore;
#[derive(Clone)]
pub struct LogStoreReader;
impl RaftLogReader<TC> for LogStoreReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(&mut self, range: RB) -> Result<Vec<Entry>, io::Error> { Ok(vec![]) }
    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> { Ok(None) }
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, io::Error> { self.try_get_log_entries(start..end).await }
}
impl RaftLogStorage<TC> for LogStore {
    type LogReader = LogStoreReader;
    async fn get_log_state(&mut self) -> Result<LogState<TC>, io::Error> { Ok(LogState { last_purged_log_id: None, last_log_id: None }) }
    async fn get_log_reader(&mut self) -> LogStoreReader { LogStoreReader }
    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> { Ok(()) }
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> { Ok(()) }
    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> { Ok(None) }
    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TC>) -> Result<(), io::Error>
    where I: IntoIterator<Item = Entry> + OptionalSend, I::IntoIter: OptionalSend {
        for e in entries { let (t, n, i) = (e.log_id.leader_id.term, e.log_id.leader_id.node_id, e.log_id.index); }
        std::thread::spawn(move || callback.io_completed(Ok(())));
        Ok(())
    }
    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> { let first_removed = last_log_id.map_or(0, |l| l.index + 1); Ok(()) }
    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> { Ok(()) }
}

#[derive(Clone)]
pub struct StateMachine;
impl RaftSnapshotBuilder<TC> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    async fn build_snapshot(&mut self) -> Result<SmSnapshot, io::Error> {
        Ok(Snapshot { meta: SnapshotMeta { last_log_id: None, last_membership: StoredMembership::default() }, snapshot: Cursor::new(vec![]) })
    }
}
impl RaftStateMachine<TC> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;
    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> { Ok((None, StoredMembership::default())) }
    async fn apply<S>(&mut self, entries: S) -> Result<(), io::Error>
    where S: Stream<Item = Result<EntryResponder<TC>, io::Error>> + Unpin + OptionalSend {
        let batch: Vec<EntryResponder<TC>> = entries.try_collect().await?;
        for (entry, responder) in batch {
            let m = match &entry.payload { EntryPayload::Membership(m) => Some(StoredMembership::new(Some(entry.log_id), m.clone())), _ => None };
            if let Some(r) = responder { r.send(Applied::default()); }
        }
        Ok(())
    }
    async fn get_snapshot_builder(&mut self) -> Self { self.clone() }
    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Cursor<Vec<u8>>) -> Result<(), io::Error> { let bytes = snapshot.into_inner(); Ok(()) }
    async fn get_current_snapshot(&mut self) -> Result<Option<SmSnapshot>, io::Error> { Ok(None) }
}

#[derive(Clone)] pub struct Network;
pub struct Peer { target: u64 }
impl RaftNetworkFactory<TC> for Network {
    type Network = Peer;
    async fn new_client(&mut self, target: u64, node: &NodeAddr) -> Peer { Peer { target } }
}
impl RaftNetworkV2<TC> for Peer {
    type SnapshotData = Cursor<Vec<u8>>;
    async fn append_entries(&mut self, rpc: AppendEntriesRequest<TC>, option: RPCOption) -> Result<AppendEntriesResponse<TC>, RPCError<TC>> {
        let deadline = option.hard_ttl(); let soft = option.soft_ttl();
        let remote: RaftError<TC> = RaftError::Fatal(Fatal::Stopped); let _ = RPCError::<TC>::Unreachable(Unreachable::new(&remote));
        
        if false { return Err(RPCError::Timeout(Timeout { action: RPCTypes::AppendEntries, id: 0, target: self.target, timeout: deadline })); }
        Err(RPCError::Unreachable(Unreachable::from_string("x")))
    }
    async fn vote(&mut self, rpc: VoteRequest<TC>, option: RPCOption) -> Result<VoteResponse<TC>, RPCError<TC>> { Err(RPCError::Network(NetworkError::from_string("x"))) }
    async fn pre_vote(&mut self, rpc: VoteRequest<TC>, option: RPCOption) -> Result<VoteResponse<TC>, RPCError<TC>> { Err(RPCError::Network(NetworkError::from_string("x"))) }
    async fn full_snapshot(&mut self, vote: Vote, snapshot: SmSnapshot, cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static, option: RPCOption) -> Result<SnapshotResponse<TC>, StreamingError<TC>> {
        let data = snapshot.snapshot.into_inner();
        Err(StreamingError::Unreachable(Unreachable::from_string("x")))
    }
}

async fn uses(raft: Raft) {
    let cfg = openraft::Config { cluster_name: "exchange".into(), heartbeat_interval: 20, election_timeout_min: 30, election_timeout_max: 60, max_payload_entries: 4,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(100), max_in_snapshot_log_to_keep: 50, purge_batch_size: 25, install_snapshot_timeout: 10_000,
        enable_pre_vote: Some(true), broadcast_submitted_on_append: Some(true), ..Default::default() }.validate().unwrap();
    let r = openraft::Raft::<TC, StateMachine>::new(1, std::sync::Arc::new(cfg), Network, LogStore, StateMachine).await;
    match raft.client_write(D(1)).await {
        Ok(resp) => { let _o: Applied = resp.data; let _l: LogId = resp.log_id; }
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => { let _ = (f.leader_id, f.reason == ForwardReason::LeaseExpired); }
        Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(f))) => {}
        Err(RaftError::APIError(other)) => {}
        Err(RaftError::Fatal(_)) => {}
    }
    let _ = raft.ensure_linearizable(ReadPolicy::ReadIndex).await.map_err(|e| e.forward_to_leader().is_some());
    let m = raft.metrics().borrow_watched().clone();
    let _ = (m.state == ServerState::Leader, m.current_leader, m.current_term, m.last_log_index, m.millis_since_quorum_ack, m.last_quorum_acked, m.snapshot, m.purged, m.id);
    let _lost: Option<Duration> = m.last_quorum_acked.as_ref().map(|t| t.elapsed());
    let _v: Vote = m.vote; let _c = m.vote.is_committed(); let _t = m.vote.leader_id().term; let _n = m.vote.leader_id().node_id;
    if let Err(f) = &m.running_state { let _ = f.to_string(); }
    let membership = m.membership_config.membership(); let _ : Vec<u64> = membership.voter_ids().collect(); let _ : Vec<u64> = membership.learner_ids().collect(); let _ = membership.get_node(&1).map(|n| n.broker.clone());
    for (peer, matched) in m.replication.iter().flatten() { let _ = matched.map_or(0, |m| m.index); }
    let s = raft.server_metrics(); let sm = s.borrow_watched(); let _ = (sm.vote.clone(), sm.state, sm.current_leader, sm.membership_config.clone()); drop(sm);
    let _ = raft.with_raft_state(|st| st.server_state == ServerState::Leader).await;
    let _ = raft.wait(Some(Duration::from_secs(1))).metrics(|m| m.current_leader.is_some(), "a leader is heard").await;
    raft.runtime_config().elect(false); raft.runtime_config().pre_vote(true);
    let _ = raft.trigger().elect(false).await;
    let _ = raft.add_learner(2, NodeAddr::default(), true).await.map_err(|e| e.forward_to_leader().is_some());
    let _ = raft.change_membership(BTreeSet::from([1u64, 2]), false).await.map_err(|e| e.forward_to_leader().is_some());
    match raft.initialize(BTreeMap::from([(1u64, NodeAddr::default())])).await { Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}, _ => {} }
    let _ = raft.append_entries(AppendEntriesRequest { vote: Vote::new_committed(1, 1), prev_log_id: None, entries: vec![], leader_commit: None }).await;
    let _ = raft.vote(VoteRequest::new(Vote::new(1, 1), None)).await;
    let _ = raft.pre_vote(VoteRequest::new(Vote::new(1, 1), None)).await;
    let snap: SmSnapshot = Snapshot { meta: SnapshotMeta::default(), snapshot: Cursor::new(vec![]) };
    let _: Result<SnapshotResponse<TC>, Fatal<TC>> = raft.install_full_snapshot(Vote::new_committed(1, 1), snap).await;
    let _ = raft.wait_for_recovery(Some(Duration::from_secs(5))).await;
    let _ = raft.shutdown().await;
}

fn hex<T: Serialize>(name: &str, v: &T) { let b = postcard::to_allocvec(v).unwrap(); println!("{name}: {}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()); }
fn main() {
    let l = LogId::new(CommittedLeaderId::new(7, 3), 42);
    hex("vote_uncommitted", &Vote::new(7, 3)); hex("vote_committed", &Vote::new_committed(7, 3));
    hex("log_id", &l); hex("opt_log_id", &Some(l));
    let nodes = BTreeMap::from([(1u64, NodeAddr{raft:"a".into(), broker:"b".into()}), (2, NodeAddr{raft:"c".into(), broker:"d".into()})]);
    let m = Membership::new(vec![BTreeSet::from([1u64,2])], nodes).unwrap(); hex("membership", &m);
    let sm = StoredMembership::new(Some(l), m.clone()); hex("stored_membership", &sm);
    let meta = SnapshotMeta { last_log_id: Some(l), last_membership: sm.clone() }; hex("snapshot_meta", &meta);
    let e = Entry { log_id: l, payload: EntryPayload::Normal(D(5)) }; hex("entry", &e);
    hex("vote_request", &VoteRequest::<TC>::new(Vote::new(7,3), Some(l)));
    hex("vote_response", &VoteResponse::<TC>{ vote: Vote::new(7,3), vote_granted: true, last_log_id: Some(l) });
    hex("ae_resp_partial", &AppendEntriesResponse::<TC>::PartialSuccess(Some(l)));
    hex("ae_resp_higher", &AppendEntriesResponse::<TC>::HigherVote(Vote::new_committed(7,3)));
    hex("ae_req", &AppendEntriesRequest::<TC>{ vote: Vote::new_committed(7,3), prev_log_id: Some(l), entries: vec![e.clone()], leader_commit: Some(l)});
    hex("snapshot_response", &SnapshotResponse::<TC>{ vote: Vote::new_committed(7,3)});
    // decode 0.9 bytes into 0.10 types
    let old_meta_with_id = hex_to("0107032a0107032a01020102020101610162020163016409372d34322d30306666");
    let back: SnapshotMeta = postcard::from_bytes(&old_meta_with_id).unwrap(); println!("0.9 meta (with snapshot_id) -> 0.10: {:?}", back.last_log_id);
    let v: Vote = postcard::from_bytes(&hex_to("070301")).unwrap(); println!("0.9 vote -> 0.10 {v:?}");
    let old_vreq = hex_to("0703000107032a"); println!("0.9 VoteRequest -> 0.10: {:?}", postcard::from_bytes::<VoteRequest<TC>>(&old_vreq).map(|_| ()));
}
fn hex_to(s: &str) -> Vec<u8> { (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i+2], 16).unwrap()).collect() }
