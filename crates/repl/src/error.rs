//! Errors a producer or a fetching follower is answered with, each mapped to
//! the Kafka error code a Java client expects.

/// Why a produce or a fetch was refused. Retriable unless said otherwise.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplError {
    #[error("NOT_ENOUGH_REPLICAS: the ISR has {isr_size} members, min.insync.replicas is {min_insync_replicas}; nothing was appended")]
    NotEnoughReplicas { isr_size: usize, min_insync_replicas: usize },
    #[error(
        "NOT_ENOUGH_REPLICAS_AFTER_APPEND: appended, but the ISR shrank to {isr_size} (< min.insync.replicas {min_insync_replicas}) before every member had it"
    )]
    NotEnoughReplicasAfterAppend { isr_size: usize, min_insync_replicas: usize },
    #[error("REQUEST_TIMED_OUT: the ISR did not have the batch durably within {waited_ms} ms; it may still commit")]
    RequestTimedOut { waited_ms: u64 },
    #[error("NOT_LEADER_OR_FOLLOWER: broker {broker_id} does not lead this partition (it no longer leads, or never did)")]
    NotLeader { broker_id: u64 },
    #[error("NOT_LEADER_OR_FOLLOWER: broker {broker_id} is not a replica of this partition")]
    NotReplica { broker_id: u64 },
    #[error("FENCED_LEADER_EPOCH: the request names leader epoch {requested}, older than the current {current}")]
    FencedLeaderEpoch { requested: u32, current: u32 },
    #[error("UNKNOWN_LEADER_EPOCH: the request names leader epoch {requested}, newer than this broker's {current}; its metadata is behind")]
    UnknownLeaderEpoch { requested: u32, current: u32 },
    #[error("OFFSET_OUT_OF_RANGE: offset {offset} is outside the log [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange { offset: u64, log_start_offset: u64, log_end_offset: u64 },
}

impl ReplError {
    /// The Kafka protocol error code.
    pub fn kafka_code(&self) -> i16 {
        match self {
            ReplError::OffsetOutOfRange { .. } => 1,
            ReplError::NotLeader { .. } | ReplError::NotReplica { .. } => 6,
            ReplError::RequestTimedOut { .. } => 7,
            ReplError::NotEnoughReplicas { .. } => 19,
            ReplError::NotEnoughReplicasAfterAppend { .. } => 20,
            ReplError::FencedLeaderEpoch { .. } => 74,
            ReplError::UnknownLeaderEpoch { .. } => 75,
        }
    }

    /// Whether a client should retry (all of them are retriable in Kafka, but
    /// an out-of-range offset needs a new position, not the same request).
    pub fn is_retriable(&self) -> bool {
        !matches!(self, ReplError::OffsetOutOfRange { .. })
    }
}
