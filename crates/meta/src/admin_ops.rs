//! Operator actions that any broker can start and that go through the
//! metadata Raft group: shared by the admin HTTP endpoint and the Kafka
//! front, so both retry and refuse in the same way.

use std::time::Duration;

use crate::controller::plan_create_topic;
use crate::driver::{MetaHandle, ProposalError};
use crate::state::MetadataError;

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

/// Why a create did not happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CreateTopicError {
    /// The metadata refused it (name, partition count, replication factor, exists).
    #[error("{0}")]
    Refused(MetadataError),
    #[error("node still starting after {waited_ms} ms (no metadata leader or not registered); retry")]
    NotReady { waited_ms: u64 },
    #[error("not created within {budget_ms} ms: {last_error}; retry")]
    TimedOut { budget_ms: u64, last_error: String },
    #[error("{0}")]
    Stopped(ProposalError),
}

impl MetaHandle {
    /// Creates a topic, retrying retriable proposal errors (no leader yet,
    /// leader change) within `budget_ms`. Returns the metadata version the
    /// create applied at (for `validate_only`, the version it was checked at).
    pub async fn create_topic(&self, create: &TopicCreate, budget_ms: u64) -> Result<u64, CreateTopicError> {
        // A create that arrives while this node is starting waits for it to
        // know a leader and be registered, instead of failing on half-built
        // metadata (incident 004: creates during startup failed after 5 s).
        let mut waiter = self.clone();
        let started = tokio::time::timeout(Duration::from_millis(budget_ms), waiter.wait_for(|s| s.ready && s.registered)).await;
        if !matches!(started, Ok(Ok(_))) {
            return Err(CreateTopicError::NotReady { waited_ms: budget_ms });
        }
        let mut retried = false;
        let mut last_error = String::from("no attempt finished");
        for attempt in 0..(budget_ms / RETRY_BACKOFF_MS).max(1) {
            let state = self.read_state().await.map_err(CreateTopicError::Stopped)?;
            let planned = plan_create_topic(&state, &create.name, create.partitions, create.replication_factor, &create.configs, attempt as usize);
            let batch = match planned {
                Ok(batch) => batch,
                Err(error) => return refused(error, retried, state.metadata_version()),
            };
            if create.validate_only {
                return Ok(state.metadata_version());
            }
            match self.propose(batch).await {
                Ok(version) => return Ok(version),
                Err(ProposalError::Refused(error)) => return refused(error, retried, state.metadata_version()),
                Err(error) if error.is_retriable() => {
                    retried = true;
                    last_error = error.to_string();
                    tokio::time::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await;
                }
                Err(error) => return Err(CreateTopicError::Stopped(error)),
            }
        }
        Err(CreateTopicError::TimedOut { budget_ms, last_error })
    }
}

/// After a retry, "already exists" means an earlier attempt that timed out
/// committed after all: the create succeeded.
fn refused(error: MetadataError, retried: bool, metadata_version: u64) -> Result<u64, CreateTopicError> {
    match error {
        MetadataError::TopicAlreadyExists(_) if retried => Ok(metadata_version),
        error => Err(CreateTopicError::Refused(error)),
    }
}
