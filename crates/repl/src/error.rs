//! Errors a producer or a fetching follower is answered with, each mapped to
//! the Kafka error code a Java client expects.

use keel_error_codes as code;

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
    #[error("UNKNOWN_TOPIC_OR_PARTITION: this broker has no replica of {topic}-{partition}")]
    UnknownTopicOrPartition { topic: String, partition: u32 },
    #[error("CORRUPT_MESSAGE: {reason}; nothing was appended")]
    CorruptMessage { reason: String },
    #[error("MESSAGE_TOO_LARGE: the batch has {bytes} bytes, the limit is {bytes_max}; nothing was appended")]
    MessageTooLarge { bytes: usize, bytes_max: usize },
    #[error("INVALID_REQUEST: {reason}")]
    InvalidRequest { reason: String },
    #[error("REQUEST_TIMED_OUT: broker busy ({reason}); nothing was appended, retry with backoff")]
    Busy { reason: String },
    #[error("KAFKA_STORAGE_ERROR: {reason}")]
    Storage { reason: String },
    #[error("OUT_OF_ORDER_SEQUENCE_NUMBER: producer {producer_id} sent sequence {received}, this partition expects {expected}; nothing was appended")]
    OutOfOrderSequence { producer_id: i64, expected: i32, received: i32 },
    #[error("INVALID_PRODUCER_EPOCH: producer {producer_id} sent epoch {requested}, older than the current {current}; a newer producer took over this id")]
    InvalidProducerEpoch { producer_id: i64, requested: i16, current: i16 },
    #[error("BROKER_NOT_AVAILABLE: the replication loop of this broker has stopped")]
    Stopped,
}

impl ReplError {
    /// The Kafka protocol error code.
    pub fn kafka_code(&self) -> i16 {
        match self {
            ReplError::OffsetOutOfRange { .. } => code::OFFSET_OUT_OF_RANGE,
            ReplError::CorruptMessage { .. } => code::CORRUPT_MESSAGE,
            ReplError::UnknownTopicOrPartition { .. } => code::UNKNOWN_TOPIC_OR_PARTITION,
            ReplError::NotLeader { .. } | ReplError::NotReplica { .. } => code::NOT_LEADER_OR_FOLLOWER,
            ReplError::RequestTimedOut { .. } | ReplError::Busy { .. } => code::REQUEST_TIMED_OUT,
            ReplError::Stopped => code::BROKER_NOT_AVAILABLE,
            ReplError::MessageTooLarge { .. } => code::MESSAGE_TOO_LARGE,
            ReplError::InvalidRequest { .. } => code::INVALID_REQUEST,
            ReplError::Storage { .. } => code::KAFKA_STORAGE_ERROR,
            ReplError::NotEnoughReplicas { .. } => code::NOT_ENOUGH_REPLICAS,
            ReplError::NotEnoughReplicasAfterAppend { .. } => code::NOT_ENOUGH_REPLICAS_AFTER_APPEND,
            ReplError::FencedLeaderEpoch { .. } => code::FENCED_LEADER_EPOCH,
            ReplError::UnknownLeaderEpoch { .. } => code::UNKNOWN_LEADER_EPOCH,
            ReplError::OutOfOrderSequence { .. } => code::OUT_OF_ORDER_SEQUENCE_NUMBER,
            ReplError::InvalidProducerEpoch { .. } => code::INVALID_PRODUCER_EPOCH,
        }
    }

    /// Whether a client should retry the same request (after refreshing its
    /// metadata for the leader and epoch errors).
    pub fn is_retriable(&self) -> bool {
        !matches!(
            self,
            ReplError::OffsetOutOfRange { .. }
                | ReplError::CorruptMessage { .. }
                | ReplError::MessageTooLarge { .. }
                | ReplError::InvalidRequest { .. }
                | ReplError::OutOfOrderSequence { .. }
                | ReplError::InvalidProducerEpoch { .. }
        )
    }
}
