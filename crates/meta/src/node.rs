//! One node of the metadata Raft group: raft-rs's `RawNode` over the durable
//! `RaftStore`, the `MetadataState` it drives, and seeded election jitter.
//!
//! The node does disk I/O (through the store) but no network I/O: raft
//! messages to send and proposal completions are returned as `ReadyOutput`,
//! and the driver (a TCP transport in `keel`, the simulated network in
//! `keel-sim`) delivers them. A proposal can be made on any node: raft-rs
//! forwards it to the leader, and it completes on the proposing node when the
//! node applies the entry carrying its proposal id.

use keel_io::{Disk, NodeRng};
use keel_log::LogConfig;
use raft::eraftpb::{Entry, EntryType, HardState, Message};
use raft::{RawNode, SnapshotStatus, StateRole};

use crate::proto::{MetadataBatch, MetadataSnapshot};
use crate::raft_node::{raft_config, raft_logger, ElectionJitter, RaftTiming};
use crate::raft_store::{RaftStorageView, RaftStore, RaftStoreError};
use crate::state::{MetadataError, MetadataState};

/// Applied entries kept in the log beyond the snapshot before compacting, by default.
pub const COMPACT_AFTER_ENTRIES: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum MetaNodeError {
    #[error(transparent)]
    Store(#[from] RaftStoreError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("committed entry {index} is not a metadata batch: {reason}")]
    BadEntry { index: u64, reason: String },
    #[error("snapshot at {index} is not a metadata snapshot: {reason}")]
    BadSnapshot { index: u64, reason: String },
}

/// Why a proposal could not even be handed to Raft. Retriable: the caller
/// retries with backoff, and reports NOT_CONTROLLER-style errors if it gives up.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProposeError {
    #[error("no metadata leader is known yet (election in progress); retry")]
    NoLeader,
    #[error("raft refused the proposal: {0}; retry")]
    Dropped(String),
}

/// A proposal made on this node, applied (or refused by the state machine).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub proposal_id: u64,
    pub index: u64,
    /// The new metadata version, or why the batch was refused on apply.
    pub result: Result<u64, MetadataError>,
}

/// One committed entry as applied (every entry, empty ones included), for
/// checkers comparing the applied logs of nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedEntry {
    pub index: u64,
    pub term: u64,
    pub data: Vec<u8>,
    /// The node the entry was proposed on (raft-rs forwards a follower's
    /// proposal to the leader); None for a leader's empty entry.
    pub proposer: Option<u64>,
    /// The metadata version after the entry, or why its batch was refused.
    /// Empty entries and configuration changes leave the version as it was.
    pub result: Result<u64, MetadataError>,
}

#[derive(Debug, Default)]
pub struct ReadyOutput {
    /// Raft messages for peers; every state they depend on is durable.
    pub messages: Vec<Message>,
    pub completions: Vec<Completion>,
    pub applied: Vec<AppliedEntry>,
    /// Linearizable reads (`read_index`) that may now be served from `state()`.
    pub reads_ready: Vec<u64>,
    /// The index of a leader's snapshot this node installed, replacing its state.
    pub snapshot_installed: Option<u64>,
}

pub struct MetaNode {
    node_id: u64,
    raw: RawNode<RaftStorageView>,
    store: RaftStore,
    jitter: ElectionJitter,
    state: MetadataState,
    applied_index: u64,
    /// ReadIndex answers waiting for the applied index to reach them: (read id, index).
    pending_reads: Vec<(u64, u64)>,
    compact_after_entries: u64,
}

/// The metadata state a snapshot's bytes encode, validated: snapshots come
/// from disk or from the leader, so they are input, not truth.
fn restore_state(index: u64, bytes: &[u8]) -> Result<MetadataState, MetaNodeError> {
    let snapshot = MetadataSnapshot::decode_from(bytes).map_err(|e| MetaNodeError::BadSnapshot { index, reason: e.to_string() })?;
    MetadataState::from_snapshot(&snapshot).map_err(|e| MetaNodeError::BadSnapshot { index, reason: e.to_string() })
}

fn encode_context(node_id: u64, proposal_id: u64) -> Vec<u8> {
    let mut context = Vec::with_capacity(16);
    context.extend_from_slice(&node_id.to_le_bytes());
    context.extend_from_slice(&proposal_id.to_le_bytes());
    context
}

fn decode_context(context: &[u8]) -> Option<(u64, u64)> {
    if context.len() != 16 {
        return None;
    }
    let node_id = u64::from_le_bytes(context[0..8].try_into().ok()?);
    let proposal_id = u64::from_le_bytes(context[8..16].try_into().ok()?);
    Some((node_id, proposal_id))
}

impl MetaNode {
    /// Opens the node's durable state and starts its Raft node. Never waits
    /// for a leader: a node serves (and reports not-ready) at once.
    // One argument per seam (disk, RNG) and setting, as the metadata driver holds them.
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        disk: Disk,
        dir: &str,
        cluster_id: &str,
        node_id: u64,
        voters: &[u64],
        timing: RaftTiming,
        rng: NodeRng,
        log_config: LogConfig,
    ) -> Result<MetaNode, MetaNodeError> {
        let store = RaftStore::open(disk, dir, cluster_id, voters, log_config).await?;
        let durable = store.durable_state();
        let (state, applied_index) = if durable.snapshot_data.is_empty() {
            (MetadataState::new(), durable.snapshot_metadata.index)
        } else {
            let index = durable.snapshot_metadata.index;
            (restore_state(index, &durable.snapshot_data)?, index)
        };
        let config = raft_config(node_id, timing, applied_index)?;
        let jitter = ElectionJitter::new(rng, &config);
        let raw = RawNode::new(&config, store.storage(), &raft_logger(node_id))?;
        let mut node = MetaNode { node_id, raw, store, jitter, state, applied_index, pending_reads: Vec::new(), compact_after_entries: COMPACT_AFTER_ENTRIES };
        node.jitter.apply(&mut node.raw);
        Ok(node)
    }

    /// Compacts once this many applied entries are beyond the snapshot (at least 1).
    pub fn set_compact_after_entries(&mut self, entries: u64) {
        self.compact_after_entries = entries.max(1);
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    pub fn state(&self) -> &MetadataState {
        &self.state
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn role(&self) -> StateRole {
        self.raw.raft.state
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The leader this node knows of, if any.
    pub fn leader_id(&self) -> Option<u64> {
        let leader = self.raw.raft.leader_id;
        (leader != raft::INVALID_ID).then_some(leader)
    }

    /// Leader only: the peers that answered since raft-rs last checked the
    /// quorum (it clears the flags every election timeout).
    pub fn recently_active_peers(&self) -> Vec<u64> {
        if !self.is_leader() {
            return Vec::new();
        }
        self.raw.raft.prs().iter().filter(|(id, progress)| **id != self.node_id && progress.recent_active).map(|(id, _)| *id).collect()
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// Ready to serve metadata: a leader is known and everything committed
    /// that this node knows of is applied.
    pub fn is_ready(&self) -> bool {
        self.leader_id().is_some() && self.applied_index >= self.commit_index()
    }

    /// One Raft tick (the driver calls this every `RaftTiming::tick_ms`).
    pub fn tick(&mut self) {
        self.raw.tick();
        self.jitter.apply(&mut self.raw);
    }

    /// A message from a peer. Errors are logged and dropped: a peer's bad or
    /// stale message must not stop this node.
    pub fn step(&mut self, message: Message) {
        if let Err(error) = self.raw.step(message) {
            tracing::debug!(node_id = self.node_id, %error, "raft dropped a message");
        }
        self.jitter.apply(&mut self.raw);
    }

    /// The transport took (`queued`) or refused a snapshot for `to`.
    /// raft-rs sends a follower nothing more after a snapshot until this is
    /// reported: a snapshot lost on the way (a partition, the follower
    /// crashing) would stall that follower for good. Taken counts as sent:
    /// if it never arrives, the follower refuses the next append and the
    /// leader sends the snapshot again.
    pub fn report_snapshot(&mut self, to: u64, queued: bool) {
        let status = if queued { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
        self.raw.report_snapshot(to, status);
    }

    /// Proposes `batch`; on a follower raft-rs forwards it to the leader.
    pub fn propose(&mut self, proposal_id: u64, batch: &MetadataBatch) -> Result<(), ProposeError> {
        if self.leader_id().is_none() {
            return Err(ProposeError::NoLeader);
        }
        let result = self.raw.propose(encode_context(self.node_id, proposal_id), batch.encode_to_bytes());
        self.jitter.apply(&mut self.raw);
        result.map_err(|e| ProposeError::Dropped(e.to_string()))
    }

    /// Starts a linearizable read (Raft's ReadIndex): once the leader confirms
    /// its leadership and this node has applied up to the leader's commit
    /// index at that moment, `read_id` appears in `ReadyOutput::reads_ready`
    /// and `state()` reflects every write acknowledged before the read began.
    /// Without a leader the request is dropped; the caller times it out.
    pub fn read_index(&mut self, read_id: u64) -> Result<(), ProposeError> {
        if self.leader_id().is_none() {
            return Err(ProposeError::NoLeader);
        }
        self.raw.read_index(read_id.to_le_bytes().to_vec());
        self.jitter.apply(&mut self.raw);
        Ok(())
    }

    /// Persists what Raft produced, applies what committed, and returns what
    /// the driver must send. Messages are only returned once the state they
    /// depend on is durable.
    pub async fn process_ready(&mut self) -> Result<ReadyOutput, MetaNodeError> {
        let mut output = ReadyOutput::default();
        if !self.raw.has_ready() {
            return Ok(output);
        }
        debug_assert!(self.pending_reads.iter().all(|(_, index)| *index > self.applied_index), "served reads are removed");
        let mut ready = self.raw.ready();
        // A leader's own messages may go out before its entries are durable
        // (Raft section 10.2.1): they do not depend on its own persistence.
        output.messages.extend(ready.take_messages());
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.store.apply_snapshot(&snapshot).await?;
            let index = snapshot.get_metadata().index;
            self.state = restore_state(index, &snapshot.data)?;
            self.applied_index = index;
            output.snapshot_installed = Some(index);
        }
        for read_state in ready.take_read_states() {
            if let Ok(bytes) = <[u8; 8]>::try_from(read_state.request_ctx.as_slice()) {
                self.pending_reads.push((u64::from_le_bytes(bytes), read_state.index));
            }
        }
        let committed = ready.take_committed_entries();
        self.apply_entries(committed, &mut output)?;
        self.store.append(ready.entries()).await?;
        if let Some(hard_state) = ready.hs() {
            self.store.set_hard_state(hard_state).await?;
        }
        output.messages.extend(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            let mut hard_state: HardState = self.store.durable_state().hard_state;
            hard_state.commit = commit;
            self.store.set_hard_state(&hard_state).await?;
        }
        output.messages.extend(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply_entries(committed, &mut output)?;
        self.raw.advance_apply();
        self.jitter.apply(&mut self.raw);
        let applied_index = self.applied_index;
        self.pending_reads.retain(|(read_id, index)| {
            let ready = *index <= applied_index;
            if ready {
                output.reads_ready.push(*read_id);
            }
            !ready
        });
        self.maybe_compact().await?;
        Ok(output)
    }

    fn apply_entries(&mut self, entries: Vec<Entry>, output: &mut ReadyOutput) -> Result<(), MetaNodeError> {
        for entry in entries {
            if entry.index <= self.applied_index {
                continue;
            }
            assert_eq!(entry.index, self.applied_index + 1, "committed entries apply in order without gaps");
            self.applied_index = entry.index;
            if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
                // A new leader's empty entry, or a configuration change (membership is static).
                let result = Ok(self.state.metadata_version());
                output.applied.push(AppliedEntry { index: entry.index, term: entry.term, data: entry.data, proposer: None, result });
                continue;
            }
            let batch = MetadataBatch::decode_from(&entry.data).map_err(|e| MetaNodeError::BadEntry { index: entry.index, reason: e.to_string() })?;
            let result = self.state.apply_batch(&batch);
            if let Err(error) = &result {
                tracing::debug!(node_id = self.node_id, index = entry.index, %error, "metadata batch refused on apply");
            }
            let context = decode_context(&entry.context);
            if let Some((node_id, proposal_id)) = context {
                if node_id == self.node_id {
                    output.completions.push(Completion { proposal_id, index: entry.index, result: result.clone() });
                }
            }
            let proposer = context.map(|(node_id, _)| node_id);
            output.applied.push(AppliedEntry { index: entry.index, term: entry.term, data: entry.data, proposer, result });
        }
        Ok(())
    }

    /// Snapshots the applied state and drops older log entries once enough
    /// have accumulated, so the Raft log does not grow forever.
    async fn maybe_compact(&mut self) -> Result<(), MetaNodeError> {
        let durable = self.store.durable_state();
        // The snapshot must be exactly the state at the index it names: only
        // the applied index qualifies, and only once it is durably committed.
        let due = self.applied_index >= durable.snapshot_index() + self.compact_after_entries;
        if due && self.applied_index <= durable.hard_state.commit {
            let bytes = self.state.snapshot().encode_to_bytes();
            self.store.compact(self.applied_index, bytes).await?;
        }
        Ok(())
    }
}
