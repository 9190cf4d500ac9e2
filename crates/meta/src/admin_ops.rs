//! Operator and client actions that any broker can start and that go through
//! the metadata Raft group: shared by the admin HTTP endpoint and the Kafka
//! front, so both retry and refuse in the same way.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::controller::{plan_create_partitions, plan_create_topic};
use crate::driver::{MetaHandle, ProposalError};
use crate::proto::{AllocateProducerIds, Command, CommitOffsets, CommitStamp, CommittedOffsetRecord, DeleteTopic, MetadataBatch};
use crate::state::{MetadataError, MetadataState};
use crate::BrokerId;

/// How long between retries of a retriable proposal error.
const RETRY_BACKOFF_MS: u64 = 100;

/// A topic to create, with its already validated configs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicCreate {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u32,
    pub configs: Vec<(String, String)>,
    /// Plan the creation (every check) without proposing it.
    pub validate_only: bool,
}

/// Why a metadata operation did not happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetaOpError {
    /// The metadata refused it (name, partition count, replication factor, exists).
    #[error("{0}")]
    Refused(MetadataError),
    #[error("node still starting after {waited_ms} ms (no metadata leader or not registered); retry")]
    NotReady { waited_ms: u64 },
    #[error("not done within {budget_ms} ms: {last_error}; retry")]
    TimedOut { budget_ms: u64, last_error: String },
    #[error("{0}")]
    Stopped(ProposalError),
}

/// What an operation decides on the current state.
enum Plan {
    Propose(MetadataBatch),
    /// Nothing to propose (a validate-only request): done at this version.
    Done,
}

impl MetaHandle {
    /// Creates a topic, retrying retriable proposal errors (no leader yet,
    /// leader change) within `budget_ms`. Returns the metadata version the
    /// create applied at (for `validate_only`, the version it was checked at).
    pub async fn create_topic(&self, create: &TopicCreate, budget_ms: u64) -> Result<u64, MetaOpError> {
        let plan = |state: &MetadataState, attempt: usize| {
            let batch = plan_create_topic(state, &create.name, create.partitions, create.replication_factor, &create.configs, attempt)?;
            Ok(if create.validate_only { Plan::Done } else { Plan::Propose(batch) })
        };
        // After a retry, "already exists" means an earlier attempt that timed
        // out committed after all: the create succeeded.
        let done_before = |error: &MetadataError| matches!(error, MetadataError::TopicAlreadyExists(_));
        self.propose_with_retry(budget_ms, plan, done_before).await
    }

    /// Deletes a topic (its replicas remove their logs once they apply it).
    pub async fn delete_topic(&self, name: &str, budget_ms: u64) -> Result<u64, MetaOpError> {
        let plan = |state: &MetadataState, _attempt: usize| {
            let topic = state.topic(name).ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))?;
            let delete = DeleteTopic { name: name.to_string(), topic_id: topic.topic_id };
            Ok(Plan::Propose(MetadataBatch { commands: vec![Command::DeleteTopic(delete).into()] }))
        };
        self.propose_with_retry(budget_ms, plan, |error| matches!(error, MetadataError::UnknownTopic(_))).await
    }

    /// Grows `topic` to `partition_count` partitions.
    pub async fn create_partitions(&self, topic: &str, partition_count: u32, validate_only: bool, budget_ms: u64) -> Result<u64, MetaOpError> {
        let plan = |state: &MetadataState, attempt: usize| {
            let batch = plan_create_partitions(state, topic, partition_count, attempt)?;
            Ok(if validate_only { Plan::Done } else { Plan::Propose(batch) })
        };
        // After a retry the earlier attempt may have committed: the topic then
        // already has the count asked for, which the plan refuses.
        self.propose_with_retry(
            budget_ms,
            plan,
            |error| matches!(error, MetadataError::InvalidPartitionGrowth { current, requested, .. } if current == requested),
        )
        .await
    }

    /// A block of `count` producer ids for `broker_id` to hand out.
    pub async fn allocate_producer_ids(&self, broker_id: BrokerId, count: u32, budget_ms: u64) -> Result<Range<u64>, MetaOpError> {
        let expected = AtomicU64::new(0);
        let plan = |state: &MetadataState, _attempt: usize| {
            let next = state.next_producer_id();
            expected.store(next, Ordering::Relaxed);
            let allocate = AllocateProducerIds { broker_id, expected_next_producer_id: next, count };
            Ok(Plan::Propose(MetadataBatch { commands: vec![Command::AllocateProducerIds(allocate).into()] }))
        };
        // No "done before": a retried allocation that committed only wastes ids.
        self.propose_with_retry(budget_ms, plan, |_| false).await?;
        let first = expected.load(Ordering::Relaxed);
        Ok(first..first + u64::from(count))
    }

    /// Stores a group's committed offsets (replicated with the metadata);
    /// `stamp` orders it among the group's commits (see `CommitOffsets`).
    pub async fn commit_offsets(&self, group: &str, offsets: Vec<CommittedOffsetRecord>, stamp: CommitStamp, budget_ms: u64) -> Result<u64, MetaOpError> {
        let plan = |_state: &MetadataState, _attempt: usize| {
            let commit = CommitOffsets { group: group.to_string(), offsets: offsets.clone(), stamp: Some(stamp) };
            Ok(Plan::Propose(MetadataBatch { commands: vec![Command::CommitOffsets(commit).into()] }))
        };
        self.propose_with_retry(budget_ms, plan, |_| false).await
    }

    /// Plans (see `plan_on_committed`) and proposes, retrying retriable
    /// errors (no leader yet, leader change, a plan made on stale state)
    /// within `budget_ms`. A refusal that `done_before` recognises after a retry
    /// means an earlier attempt committed: success.
    async fn propose_with_retry(
        &self,
        budget_ms: u64,
        plan: impl Fn(&MetadataState, usize) -> Result<Plan, MetadataError>,
        done_before: impl Fn(&MetadataError) -> bool,
    ) -> Result<u64, MetaOpError> {
        // An operation that arrives while this node is starting waits for it
        // to know a leader and be registered, instead of failing on half-built
        // metadata (a create sent during startup would otherwise fail on a
        // node that has no leader yet, though one is seconds away).
        let mut waiter = self.clone();
        let started = tokio::time::timeout(Duration::from_millis(budget_ms), waiter.wait_for(|s| s.ready && s.registered)).await;
        if !matches!(started, Ok(Ok(_))) {
            return Err(MetaOpError::NotReady { waited_ms: budget_ms });
        }
        let mut retried = false;
        let mut last_error = String::from("no attempt finished");
        for attempt in 0..(budget_ms / RETRY_BACKOFF_MS).max(1) {
            let planned = match self.plan_on_committed(&plan, attempt as usize).await {
                Ok(planned) => planned,
                Err(error) if error.is_retriable() => {
                    last_error = error.to_string();
                    tokio::time::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await;
                    continue;
                }
                Err(error) => return Err(MetaOpError::Stopped(error)),
            };
            let (version, batch) = match planned {
                (version, Ok(Plan::Propose(batch))) => (version, batch),
                (version, Ok(Plan::Done)) => return Ok(version),
                (version, Err(error)) => return refused(error, retried, version, &done_before),
            };
            match self.propose(batch).await {
                Ok(version) => return Ok(version),
                Err(ProposalError::Refused(error)) if !error.is_stale_plan() => return refused(error, retried, version, &done_before),
                // No leader yet, a leader change, or a plan made on state
                // that another proposal changed first: plan again.
                Err(error) if error.is_retriable() || matches!(&error, ProposalError::Refused(_)) => {
                    retried = true;
                    last_error = error.to_string();
                    tokio::time::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await;
                }
                Err(error) => return Err(MetaOpError::Stopped(error)),
            }
        }
        Err(MetaOpError::TimedOut { budget_ms, last_error })
    }

    /// Plans on this node's applied metadata, which may lag the leader: a
    /// plan made there is safe to propose (the state machine checks it again
    /// on the committed state), but a refusal or a validate-only answer
    /// made there may be stale (a topic deleted a moment ago still exists
    /// here). Those are decided again on metadata read through the leader
    /// (ReadIndex), so a client is never refused on a lagging broker's view.
    /// Returns the metadata version the plan was made at.
    async fn plan_on_committed(
        &self,
        plan: &impl Fn(&MetadataState, usize) -> Result<Plan, MetadataError>,
        attempt: usize,
    ) -> Result<(u64, Result<Plan, MetadataError>), ProposalError> {
        let local = self.read_state().await?;
        let planned = plan(&local, attempt);
        if matches!(planned, Ok(Plan::Propose(_))) {
            return Ok((local.metadata_version(), planned));
        }
        let committed = self.read_linearizable().await?;
        Ok((committed.metadata_version(), plan(&committed, attempt)))
    }
}

/// A refusal, unless `done_before` recognises it after a retry as the mark
/// of an earlier attempt that committed after all.
fn refused(error: MetadataError, retried: bool, version: u64, done_before: &impl Fn(&MetadataError) -> bool) -> Result<u64, MetaOpError> {
    if retried && done_before(&error) {
        Ok(version)
    } else {
        Err(MetaOpError::Refused(error))
    }
}
