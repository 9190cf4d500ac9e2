//! The metadata node's event loop: ticks from the node's Clock, Raft frames
//! from the node's `keel-net` endpoint (which the node builds and shares with
//! partition replication), proposals from `MetaHandle`s; after each event,
//! `MetaNode::process_ready` persists and the loop sends what it may.
//!
//! The loop starts serving at once and never waits for a leader: a start
//! that waited for a leader before running the Raft loop would wait forever
//! (no loop, no election). Readiness is published in `MetaStatus::ready`
//! instead.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_io::{Clock, Disk, NodeRng};
use keel_log::LogConfig;
use keel_net::{Endpoint, Inbound};
use prost::Message as _;
use raft::eraftpb::{Message, MessageType};
use raft::StateRole;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::controller::{plan_elect_offline_leaders, plan_fence_broker};
use crate::node::{AppliedEntry, MetaNode, MetaNodeError, ProposeError};
use crate::proto::{Command, MetadataBatch, RegisterBroker};
use crate::raft_node::RaftTiming;
use crate::state::{MetadataError, MetadataState};

/// Frame kind of a Raft message on the broker transport.
pub use keel_net::FRAME_KIND_RAFT;

#[derive(Clone, Debug)]
pub struct MetaDriverConfig {
    pub cluster_id: String,
    pub node_id: u64,
    /// Every voter's id and `host:port`, this node included; every other
    /// voter must be a peer of the node's endpoint.
    pub voters: BTreeMap<u64, String>,
    /// Directory of the Raft store on the node's Disk.
    pub data_dir: String,
    pub timing: RaftTiming,
    /// A proposal not applied within this long fails (retriable).
    pub proposal_timeout_ms: u64,
    pub log_config: LogConfig,
    /// What this broker registers (its Kafka listener, later).
    pub advertised_host: String,
    pub advertised_port: u32,
    pub rack: Option<String>,
    /// Changes on every process start, so a restart re-registers.
    pub incarnation_id: u64,
    /// A broker silent to the leader for longer than this is fenced.
    pub registration_lease_ms: u64,
    /// Compact the Raft log once this many applied entries follow the snapshot.
    pub compact_after_entries: u64,
    /// Told of every election won, entry applied and snapshot installed.
    pub observer: Option<MetaObserver>,
}

/// What a node tells its observer, as it happens.
#[derive(Debug)]
pub enum MetaEvent<'a> {
    /// The node opened its durable state (at start and every restart).
    Opened { node_id: u64, applied_index: u64, state: &'a MetadataState },
    /// The node became the Raft leader of `term`.
    BecameLeader { node_id: u64, term: u64 },
    /// The node replaced its state with a leader's snapshot taken at `index`.
    SnapshotInstalled { node_id: u64, index: u64 },
    /// The node applied one committed entry, in index order.
    Applied { node_id: u64, entry: &'a AppliedEntry },
    /// The node's state after applying everything up to `applied_index`.
    StateAt { node_id: u64, applied_index: u64, state: &'a MetadataState },
}

/// A callback for `MetaEvent`s: the simulator's checkers listen here. It runs
/// on the node's loop, so it must be quick and must not block.
#[derive(Clone)]
pub struct MetaObserver(Arc<dyn Fn(&MetaEvent<'_>) + Send + Sync>);

impl MetaObserver {
    pub fn new(observe: impl Fn(&MetaEvent<'_>) + Send + Sync + 'static) -> Self {
        MetaObserver(Arc::new(observe))
    }

    fn notify(&self, event: MetaEvent<'_>) {
        (self.0)(&event);
    }
}

impl std::fmt::Debug for MetaObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetaObserver")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetaDriverError {
    #[error(transparent)]
    Node(#[from] MetaNodeError),
    /// Another live process (or simulated node) holds this node's disk.
    #[error("the data dir is in use: {0}")]
    Locked(keel_io::DiskError),
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Why a proposal failed. All but `Refused` are retriable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    #[error("no metadata leader is known yet; retry")]
    NoLeader,
    #[error("raft dropped the proposal ({0}); retry")]
    Dropped(String),
    #[error("not applied within {timeout_ms} ms (leader change or partition); retry")]
    Timeout { timeout_ms: u64 },
    #[error("the metadata node is shut down")]
    Stopped,
    #[error("refused: {0}")]
    Refused(MetadataError),
}

impl ProposalError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, ProposalError::NoLeader | ProposalError::Dropped(_) | ProposalError::Timeout { .. })
    }
}

/// What a node publishes about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaStatus {
    pub node_id: u64,
    pub term: u64,
    pub is_leader: bool,
    pub leader_id: Option<u64>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub metadata_version: u64,
    /// A leader is known and everything known committed is applied.
    pub ready: bool,
    /// This broker is registered (with its current incarnation) and not fenced.
    pub registered: bool,
}

enum Request {
    Propose { batch: MetadataBatch, reply: oneshot::Sender<Result<u64, ProposalError>> },
    ReadState { reply: oneshot::Sender<MetadataState> },
    ReadLinearizable { reply: oneshot::Sender<Result<MetadataState, ProposalError>> },
}

/// The newest applied metadata, for one consumer on the same node (the
/// partition replication driver). A `Notify`, not a `watch`: tokio's watch
/// picks a waker slot with its thread RNG, which would break replay.
pub struct MetadataFeed {
    latest: Mutex<Arc<MetadataState>>,
    changed: Notify,
}

impl MetadataFeed {
    fn new(state: &MetadataState) -> Self {
        MetadataFeed { latest: Mutex::new(Arc::new(state.clone())), changed: Notify::new() }
    }

    fn publish(&self, state: &MetadataState) {
        *self.latest.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(state.clone());
        self.changed.notify_one();
    }

    /// The newest applied metadata.
    pub fn current(&self) -> Arc<MetadataState> {
        Arc::clone(&self.latest.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Returns once metadata was published after the previous call returned
    /// (a publication before the first wait counts).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// How often `MetaHandle::wait_for` looks at the status.
const STATUS_POLL_MS: u64 = 10;

/// A cheap, cloneable handle on a running metadata node.
#[derive(Clone)]
pub struct MetaHandle {
    requests: mpsc::Sender<Request>,
    status: watch::Receiver<MetaStatus>,
    feed: Arc<MetadataFeed>,
}

impl MetaHandle {
    /// Proposes `batch` once; returns the metadata version after it applied.
    pub async fn propose(&self, batch: MetadataBatch) -> Result<u64, ProposalError> {
        let (reply, response) = oneshot::channel();
        self.requests.send(Request::Propose { batch, reply }).await.map_err(|_| ProposalError::Stopped)?;
        response.await.map_err(|_| ProposalError::Stopped)?
    }

    /// Metadata that includes every change acknowledged before this call
    /// (Raft ReadIndex through the leader). Retriable errors as for proposals.
    pub async fn read_linearizable(&self) -> Result<MetadataState, ProposalError> {
        let (reply, response) = oneshot::channel();
        self.requests.send(Request::ReadLinearizable { reply }).await.map_err(|_| ProposalError::Stopped)?;
        response.await.map_err(|_| ProposalError::Stopped)?
    }

    /// The applied metadata of this node (may lag the leader; see `read_linearizable`).
    pub async fn read_state(&self) -> Result<MetadataState, ProposalError> {
        let (reply, response) = oneshot::channel();
        self.requests.send(Request::ReadState { reply }).await.map_err(|_| ProposalError::Stopped)?;
        response.await.map_err(|_| ProposalError::Stopped)
    }

    pub fn status(&self) -> MetaStatus {
        self.status.borrow().clone()
    }

    /// The node's applied metadata as it changes.
    pub fn feed(&self) -> Arc<MetadataFeed> {
        Arc::clone(&self.feed)
    }

    /// Waits until the published status satisfies `condition`, looking
    /// every `STATUS_POLL_MS`. It polls rather than wait on the watch
    /// channel: tokio's watch wakes its waiters through a slot picked with
    /// tokio's thread RNG, seeded from a process-wide counter, so a
    /// simulated seed run twice in one process took different branches the
    /// second time.
    pub async fn wait_for(&mut self, condition: impl Fn(&MetaStatus) -> bool) -> Result<MetaStatus, ProposalError> {
        loop {
            if self.status.has_changed().is_err() {
                return Err(ProposalError::Stopped);
            }
            let status = self.status.borrow_and_update().clone();
            if condition(&status) {
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(STATUS_POLL_MS)).await;
        }
    }
}

/// Replies owed to callers (proposals, linearizable reads), each failing as a
/// retriable timeout once its deadline passes.
struct PendingReplies<T> {
    replies: BTreeMap<u64, (oneshot::Sender<Result<T, ProposalError>>, u64)>,
}

impl<T> PendingReplies<T> {
    fn new() -> Self {
        PendingReplies { replies: BTreeMap::new() }
    }

    fn insert(&mut self, id: u64, reply: oneshot::Sender<Result<T, ProposalError>>, deadline_ms: u64) {
        self.replies.insert(id, (reply, deadline_ms));
    }

    /// Answers `id` if it is still owed (it may have timed out already).
    fn complete(&mut self, id: u64, result: impl FnOnce() -> Result<T, ProposalError>) {
        if let Some((reply, _)) = self.replies.remove(&id) {
            let _ = reply.send(result());
        }
    }

    fn expire(&mut self, now_ms: u64, timeout_ms: u64) {
        let expired: Vec<u64> = self.replies.iter().filter(|(_, (_, deadline))| *deadline <= now_ms).map(|(id, _)| *id).collect();
        for id in expired {
            self.complete(id, || Err(ProposalError::Timeout { timeout_ms }));
        }
    }
}

/// Opens the node and starts its loop; returns at once (no leader needed).
/// The loop sends on the node's `endpoint` and steps the Raft frames of
/// `raft_frames` (the endpoint's queue for `FRAME_KIND_RAFT`).
///
/// First of all it takes the disk's exclusive lock, before anything on the
/// disk is read or written: two nodes on one store would both vote and both
/// write, and corrupt it. The lock is held by the loop's task, so for as
/// long as the node runs (and by the process: a real lock goes when the
/// process dies).
pub async fn start(
    disk: Disk,
    clock: Clock,
    rng: NodeRng,
    config: MetaDriverConfig,
    endpoint: Arc<Endpoint>,
    raft_frames: mpsc::Receiver<Inbound>,
) -> Result<(MetaHandle, tokio::task::JoinHandle<Result<(), MetaDriverError>>), MetaDriverError> {
    let disk_lock = disk.lock_exclusive(config.node_id).await.map_err(MetaDriverError::Locked)?;
    if !config.voters.contains_key(&config.node_id) {
        return Err(MetaDriverError::Config(format!("node id {} is not among the voters {:?}", config.node_id, config.voters.keys())));
    }
    if endpoint.node_id() != config.node_id {
        return Err(MetaDriverError::Config(format!("the endpoint speaks for node {}, this is node {}", endpoint.node_id(), config.node_id)));
    }
    if let Some(voter) = config.voters.keys().find(|voter| **voter != config.node_id && !endpoint.has_peer(**voter)) {
        return Err(MetaDriverError::Config(format!("voter {voter} is not a peer of the endpoint")));
    }
    let mut rng = rng;
    let voters: Vec<u64> = config.voters.keys().copied().collect();
    let mut node =
        MetaNode::open(disk, &config.data_dir, &config.cluster_id, config.node_id, &voters, config.timing, rng.fork(1), config.log_config.clone()).await?;
    node.set_compact_after_entries(config.compact_after_entries);
    if let Some(observer) = &config.observer {
        observer.notify(MetaEvent::Opened { node_id: config.node_id, applied_index: node.applied_index(), state: node.state() });
    }
    let (requests, request_rx) = mpsc::channel(1024);
    let (status_tx, status) = watch::channel(status_of(&node, config.incarnation_id));
    let feed = Arc::new(MetadataFeed::new(node.state()));
    let published = Published { status: status_tx, feed: Arc::clone(&feed) };
    let running = run(node, endpoint, raft_frames, request_rx, published, clock, config);
    let task = tokio::spawn(async move {
        let result = running.await;
        drop(disk_lock);
        result
    });
    Ok((MetaHandle { requests, status, feed }, task))
}

fn status_of(node: &MetaNode, incarnation_id: u64) -> MetaStatus {
    let registered = node.state().broker(node.node_id()).is_some_and(|b| !b.fenced && b.incarnation_id == incarnation_id);
    MetaStatus {
        registered,
        node_id: node.node_id(),
        term: node.term(),
        is_leader: node.role() == StateRole::Leader,
        leader_id: node.leader_id(),
        commit_index: node.commit_index(),
        applied_index: node.applied_index(),
        metadata_version: node.state().metadata_version(),
        ready: node.is_ready(),
    }
}

/// What the loop publishes for its handles: the status and the applied state.
struct Published {
    status: watch::Sender<MetaStatus>,
    feed: Arc<MetadataFeed>,
}

async fn run(
    mut node: MetaNode,
    endpoint: Arc<Endpoint>,
    mut raft_frames: mpsc::Receiver<Inbound>,
    mut requests: mpsc::Receiver<Request>,
    published: Published,
    clock: Clock,
    config: MetaDriverConfig,
) -> Result<(), MetaDriverError> {
    let Published { status, feed } = published;
    let tick = Duration::from_millis(config.timing.tick_ms);
    let mut next_tick = clock.now().checked_add(tick).expect("clock overflow");
    let mut proposals: PendingReplies<u64> = PendingReplies::new();
    let mut reads: PendingReplies<MetadataState> = PendingReplies::new();
    let mut next_proposal_id = 1u64;
    let mut duties = Duties::default();
    let mut led_term = None;
    loop {
        // Biased (fixed order) for replay: ticks first so timers never starve,
        // then Raft traffic, then callers' requests.
        tokio::select! {
            biased;
            _ = clock.sleep_until(next_tick) => {
                node.tick();
                next_tick = next_tick.checked_add(tick).expect("clock overflow");
                let now_ms = clock.now().as_millis();
                proposals.expire(now_ms, config.proposal_timeout_ms);
                reads.expire(now_ms, config.proposal_timeout_ms);
            }
            Some(frame) = raft_frames.recv() => {
                assert_eq!(frame.kind, FRAME_KIND_RAFT, "the endpoint routes only Raft frames here");
                match Message::decode(frame.payload.as_slice()) {
                    Ok(message) if message.to == config.node_id && message.from == frame.from => node.step(message),
                    Ok(message) => tracing::warn!(node_id = config.node_id, from = frame.from, to = message.to, "misaddressed raft message dropped"),
                    Err(error) => tracing::warn!(node_id = config.node_id, from = frame.from, %error, "undecodable raft message dropped"),
                }
            }
            request = requests.recv() => match request {
                Some(Request::Propose { batch, reply }) => {
                    let proposal_id = next_proposal_id;
                    next_proposal_id += 1;
                    match node.propose(proposal_id, &batch) {
                        Ok(()) => {
                            // The proposal times out at once though it may still
                            // commit: the client's retry meets its effect.
                            let timeout_ms = if keel_io::buggify!("meta: proposal times out at once") { 0 } else { config.proposal_timeout_ms };
                            proposals.insert(proposal_id, reply, clock.now().as_millis() + timeout_ms)
                        }
                        Err(ProposeError::NoLeader) => { let _ = reply.send(Err(ProposalError::NoLeader)); }
                        Err(ProposeError::Dropped(reason)) => { let _ = reply.send(Err(ProposalError::Dropped(reason))); }
                    }
                }
                Some(Request::ReadState { reply }) => { let _ = reply.send(node.state().clone()); }
                Some(Request::ReadLinearizable { reply }) => {
                    let read_id = next_proposal_id;
                    next_proposal_id += 1;
                    match node.read_index(read_id) {
                        Ok(()) => reads.insert(read_id, reply, clock.now().as_millis() + config.proposal_timeout_ms),
                        Err(_) => { let _ = reply.send(Err(ProposalError::NoLeader)); }
                    }
                }
                None => return Ok(()), // every handle is gone: shut down
            },
        }
        let output = node.process_ready().await?;
        if output.snapshot_installed.is_some() || !output.applied.is_empty() {
            feed.publish(node.state());
        }
        if let Some(observer) = &config.observer {
            let node_id = config.node_id;
            if node.is_leader() && led_term != Some(node.term()) {
                led_term = Some(node.term());
                observer.notify(MetaEvent::BecameLeader { node_id, term: node.term() });
            }
            if let Some(index) = output.snapshot_installed {
                observer.notify(MetaEvent::SnapshotInstalled { node_id, index });
            }
            for entry in &output.applied {
                observer.notify(MetaEvent::Applied { node_id, entry });
            }
            if output.snapshot_installed.is_some() || !output.applied.is_empty() {
                let applied_index = node.applied_index();
                observer.notify(MetaEvent::StateAt { node_id, applied_index, state: node.state() });
            }
        }
        for message in output.messages {
            let (to, snapshot) = (message.to, message.msg_type() == MessageType::MsgSnapshot);
            // Raft retransmits, so a full queue to an unreachable peer only delays.
            let queued = endpoint.send(to, FRAME_KIND_RAFT, message.encode_to_vec());
            if let Err(error) = &queued {
                tracing::debug!(node_id = config.node_id, to, %error, "raft message not queued");
            }
            if snapshot {
                node.report_snapshot(to, queued.is_ok());
            }
        }
        for read_id in output.reads_ready {
            reads.complete(read_id, || Ok(node.state().clone()));
        }
        for completion in output.completions {
            duties.completed(completion.proposal_id, &completion.result, clock.now().as_millis(), &config);
            proposals.complete(completion.proposal_id, || completion.result.map_err(ProposalError::Refused));
        }
        let now_ms = clock.now().as_millis();
        duties.run(&mut node, &config, now_ms, &mut next_proposal_id);
        status.send_if_modified(|current| {
            let next = status_of(&node, config.incarnation_id);
            let changed = *current != next;
            *current = next;
            changed
        });
    }
}

/// What a node does on its own: register itself (every node) and, on the
/// Raft leader, the controller's duties. One proposal of each kind in flight
/// at a time, so no decision is proposed twice from the same stale state.
#[derive(Default)]
struct Duties {
    registration_in_flight: Option<(u64, u64)>,
    controller_in_flight: Option<(u64, u64)>,
    /// Leader only: when each broker last answered Raft traffic.
    last_seen_ms: BTreeMap<u64, u64>,
}

impl Duties {
    fn completed(&mut self, proposal_id: u64, result: &Result<u64, MetadataError>, now_ms: u64, config: &MetaDriverConfig) {
        if self.registration_in_flight.is_some_and(|(id, _)| id == proposal_id) {
            self.registration_in_flight = None;
            if let Err(error) = result {
                // Bad configuration (e.g. an endpoint another broker owns):
                // say so, and retry only after a pause, not every tick.
                tracing::warn!(node_id = config.node_id, %error, "broker registration refused; fix the advertised address");
                self.registration_in_flight = Some((u64::MAX, now_ms + config.proposal_timeout_ms));
            }
        }
        if self.controller_in_flight.is_some_and(|(id, _)| id == proposal_id) {
            self.controller_in_flight = None;
        }
    }

    fn run(&mut self, node: &mut MetaNode, config: &MetaDriverConfig, now_ms: u64, next_proposal_id: &mut u64) {
        let expired = |slot: &Option<(u64, u64)>| slot.is_none_or(|(_, deadline_ms)| deadline_ms <= now_ms);
        let deadline_ms = now_ms + config.proposal_timeout_ms;
        let mut propose = |node: &mut MetaNode, batch: &MetadataBatch| -> Option<(u64, u64)> {
            let proposal_id = *next_proposal_id;
            *next_proposal_id += 1;
            node.propose(proposal_id, batch).ok().map(|()| (proposal_id, deadline_ms))
        };
        // Self-registration, retried until committed: a registration given
        // up after one lost proposal leaves the broker unregistered for
        // good. Re-registering unfences.
        if node.is_ready() && expired(&self.registration_in_flight) {
            let current = node.state().broker(config.node_id);
            let needed = current.is_none_or(|b| b.fenced || b.incarnation_id != config.incarnation_id);
            self.registration_in_flight = None;
            if needed {
                let register = RegisterBroker {
                    broker_id: config.node_id,
                    host: config.advertised_host.clone(),
                    port: config.advertised_port,
                    rack: config.rack.clone(),
                    incarnation_id: config.incarnation_id,
                };
                let batch = MetadataBatch { commands: vec![Command::RegisterBroker(register).into()] };
                self.registration_in_flight = propose(node, &batch);
            }
        }
        if !node.is_leader() {
            self.last_seen_ms.clear();
            self.controller_in_flight = None;
            return;
        }
        // A new leader gives every broker a full lease before judging it.
        for broker in node.state().brokers() {
            self.last_seen_ms.entry(broker.broker_id).or_insert(now_ms);
        }
        self.last_seen_ms.insert(config.node_id, now_ms);
        for peer in node.recently_active_peers() {
            self.last_seen_ms.insert(peer, now_ms);
        }
        if !node.is_ready() || !expired(&self.controller_in_flight) {
            return;
        }
        self.controller_in_flight = None;
        let silent = node
            .state()
            .brokers()
            .find(|b| !b.fenced && self.last_seen_ms.get(&b.broker_id).is_some_and(|seen| now_ms.saturating_sub(*seen) > config.registration_lease_ms));
        let decision = match silent {
            Some(broker) => {
                tracing::info!(node_id = config.node_id, broker = broker.broker_id, "registration lease expired; fencing broker");
                plan_fence_broker(node.state(), broker.broker_id).ok()
            }
            None => plan_elect_offline_leaders(node.state()),
        };
        if let Some(batch) = decision {
            self.controller_in_flight = propose(node, &batch);
        }
    }
}
