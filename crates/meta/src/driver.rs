//! The metadata node's event loop: ticks from the node's Clock, Raft frames
//! from the `keel-net` endpoint, proposals from `MetaHandle`s; after each
//! event, `MetaNode::process_ready` persists and the loop sends what it may.
//!
//! The loop starts serving at once and never waits for a leader (incident
//! 003: a constructor waited for a leader before the Raft loop ran). Readiness
//! is published in `MetaStatus::ready` instead.

use std::collections::BTreeMap;
use std::time::Duration;

use keel_io::{Clock, Disk, NodeRng};
use keel_log::LogConfig;
use keel_net::{Endpoint, NetConfig};
use prost::Message as _;
use raft::eraftpb::Message;
use raft::StateRole;
use tokio::sync::{mpsc, oneshot, watch};

use crate::node::{MetaNode, MetaNodeError, ProposeError};
use crate::proto::MetadataBatch;
use crate::raft_node::RaftTiming;
use crate::state::{MetadataError, MetadataState};

/// Frame kind of a Raft message on the broker transport.
pub const FRAME_KIND_RAFT: u8 = 1;

#[derive(Clone, Debug)]
pub struct MetaDriverConfig {
    pub cluster_id: String,
    pub node_id: u64,
    /// Every voter's id and `host:port`, this node included.
    pub voters: BTreeMap<u64, String>,
    /// Where this node listens (often this node's entry in `voters`).
    pub listen_addr: String,
    /// Directory of the Raft store on the node's Disk.
    pub data_dir: String,
    pub timing: RaftTiming,
    /// A proposal not applied within this long fails (retriable).
    pub proposal_timeout_ms: u64,
    pub log_config: LogConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum MetaDriverError {
    #[error(transparent)]
    Node(#[from] MetaNodeError),
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: String, error: std::io::Error },
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
}

enum Request {
    Propose { batch: MetadataBatch, reply: oneshot::Sender<Result<u64, ProposalError>> },
    ReadState { reply: oneshot::Sender<MetadataState> },
}

/// A cheap, cloneable handle on a running metadata node.
#[derive(Clone)]
pub struct MetaHandle {
    requests: mpsc::Sender<Request>,
    status: watch::Receiver<MetaStatus>,
}

impl MetaHandle {
    /// Proposes `batch` once; returns the metadata version after it applied.
    pub async fn propose(&self, batch: MetadataBatch) -> Result<u64, ProposalError> {
        let (reply, response) = oneshot::channel();
        self.requests.send(Request::Propose { batch, reply }).await.map_err(|_| ProposalError::Stopped)?;
        response.await.map_err(|_| ProposalError::Stopped)?
    }

    /// The applied metadata of this node.
    pub async fn read_state(&self) -> Result<MetadataState, ProposalError> {
        let (reply, response) = oneshot::channel();
        self.requests.send(Request::ReadState { reply }).await.map_err(|_| ProposalError::Stopped)?;
        response.await.map_err(|_| ProposalError::Stopped)
    }

    pub fn status(&self) -> MetaStatus {
        self.status.borrow().clone()
    }

    /// Waits until the published status satisfies `condition`.
    pub async fn wait_for(&mut self, condition: impl Fn(&MetaStatus) -> bool) -> Result<MetaStatus, ProposalError> {
        let status = self.status.wait_for(|s| condition(s)).await.map_err(|_| ProposalError::Stopped)?;
        Ok(status.clone())
    }
}

struct Waiter {
    reply: oneshot::Sender<Result<u64, ProposalError>>,
    deadline_ms: u64,
}

/// Opens the node and starts its loop; returns at once (no leader needed).
pub async fn start(
    disk: Disk,
    clock: Clock,
    rng: NodeRng,
    config: MetaDriverConfig,
) -> Result<(MetaHandle, tokio::task::JoinHandle<Result<(), MetaDriverError>>), MetaDriverError> {
    if !config.voters.contains_key(&config.node_id) {
        return Err(MetaDriverError::Config(format!("node id {} is not among the voters {:?}", config.node_id, config.voters.keys())));
    }
    let mut rng = rng;
    let voters: Vec<u64> = config.voters.keys().copied().collect();
    let node = MetaNode::open(
        disk,
        &config.data_dir,
        &config.cluster_id,
        config.node_id,
        &voters,
        config.timing,
        rng.fork(1),
        config.log_config.clone(),
    )
    .await?;
    let net_config = NetConfig::new(&config.cluster_id, config.node_id);
    let (mut endpoint, inbox) = Endpoint::bind(net_config, &config.listen_addr, clock.clone(), rng.fork(2))
        .await
        .map_err(|error| MetaDriverError::Listen { addr: config.listen_addr.clone(), error })?;
    for (peer, addr) in &config.voters {
        if *peer != config.node_id {
            endpoint.add_peer(*peer, addr);
        }
    }
    let (requests, request_rx) = mpsc::channel(1024);
    let (status_tx, status) = watch::channel(status_of(&node));
    let task = tokio::spawn(run(node, endpoint, inbox, request_rx, status_tx, clock, config));
    Ok((MetaHandle { requests, status }, task))
}

fn status_of(node: &MetaNode) -> MetaStatus {
    MetaStatus {
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

async fn run(
    mut node: MetaNode,
    endpoint: Endpoint,
    mut inbox: mpsc::Receiver<keel_net::Inbound>,
    mut requests: mpsc::Receiver<Request>,
    status: watch::Sender<MetaStatus>,
    clock: Clock,
    config: MetaDriverConfig,
) -> Result<(), MetaDriverError> {
    let tick = Duration::from_millis(config.timing.tick_ms);
    let mut next_tick = clock.now().checked_add(tick).expect("clock overflow");
    let mut waiters: BTreeMap<u64, Waiter> = BTreeMap::new();
    let mut next_proposal_id = 1u64;
    loop {
        tokio::select! {
            _ = clock.sleep_until(next_tick) => {
                node.tick();
                next_tick = next_tick.checked_add(tick).expect("clock overflow");
                let now_ms = clock.now().as_millis();
                let expired: Vec<u64> = waiters.iter().filter(|(_, w)| w.deadline_ms <= now_ms).map(|(id, _)| *id).collect();
                for id in expired {
                    let waiter = waiters.remove(&id).expect("listed");
                    let _ = waiter.reply.send(Err(ProposalError::Timeout { timeout_ms: config.proposal_timeout_ms }));
                }
            }
            Some(frame) = inbox.recv() => {
                if frame.kind != FRAME_KIND_RAFT {
                    tracing::warn!(node_id = config.node_id, from = frame.from, kind = frame.kind, "unexpected frame kind on the metadata transport");
                    continue;
                }
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
                            let deadline_ms = clock.now().as_millis() + config.proposal_timeout_ms;
                            waiters.insert(proposal_id, Waiter { reply, deadline_ms });
                        }
                        Err(ProposeError::NoLeader) => { let _ = reply.send(Err(ProposalError::NoLeader)); }
                        Err(ProposeError::Dropped(reason)) => { let _ = reply.send(Err(ProposalError::Dropped(reason))); }
                    }
                }
                Some(Request::ReadState { reply }) => { let _ = reply.send(node.state().clone()); }
                None => return Ok(()), // every handle is gone: shut down
            },
        }
        let output = node.process_ready().await?;
        for message in output.messages {
            let to = message.to;
            // Raft retransmits, so a full queue to an unreachable peer only delays.
            if let Err(error) = endpoint.send(to, FRAME_KIND_RAFT, message.encode_to_vec()) {
                tracing::debug!(node_id = config.node_id, to, %error, "raft message not queued");
            }
        }
        for completion in output.completions {
            if let Some(waiter) = waiters.remove(&completion.proposal_id) {
                let _ = waiter.reply.send(completion.result.map_err(ProposalError::Refused));
            }
        }
        status.send_if_modified(|current| {
            let next = status_of(&node);
            let changed = *current != next;
            *current = next;
            changed
        });
    }
}
