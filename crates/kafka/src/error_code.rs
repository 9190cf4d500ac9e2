//! The Kafka error codes the front answers with (Kafka's `Errors` enum).

pub const UNKNOWN_SERVER_ERROR: i16 = -1;
pub const NONE: i16 = 0;
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const CORRUPT_MESSAGE: i16 = 2;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const LEADER_NOT_AVAILABLE: i16 = 5;
pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
pub const REQUEST_TIMED_OUT: i16 = 7;
pub const BROKER_NOT_AVAILABLE: i16 = 8;
pub const MESSAGE_TOO_LARGE: i16 = 10;
pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
pub const INVALID_REQUIRED_ACKS: i16 = 21;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
pub const INVALID_PARTITIONS: i16 = 37;
pub const INVALID_REPLICATION_FACTOR: i16 = 38;
pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
pub const INVALID_CONFIG: i16 = 40;
pub const INVALID_REQUEST: i16 = 42;
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
pub const FENCED_LEADER_EPOCH: i16 = 74;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const NOT_COORDINATOR: i16 = 16;
pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
pub const INVALID_COMMIT_OFFSET_SIZE: i16 = 28;
pub const UNKNOWN_TOPIC_ID: i16 = 100;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const INVALID_GROUP_ID: i16 = 24;
pub const NETWORK_EXCEPTION: i16 = 13;
pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
pub const NOT_ENOUGH_REPLICAS: i16 = 19;
pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const KAFKA_STORAGE_ERROR: i16 = 56;
pub const MEMBER_ID_REQUIRED: i16 = 79;
pub const UNKNOWN_LEADER_EPOCH: i16 = 75;

#[cfg(test)]
mod tests {
    use kafka_protocol::error::ResponseError;

    #[test]
    fn codes_match_the_protocol_crate() {
        let pairs = [
            (super::OFFSET_OUT_OF_RANGE, ResponseError::OffsetOutOfRange),
            (super::CORRUPT_MESSAGE, ResponseError::CorruptMessage),
            (super::UNKNOWN_TOPIC_OR_PARTITION, ResponseError::UnknownTopicOrPartition),
            (super::LEADER_NOT_AVAILABLE, ResponseError::LeaderNotAvailable),
            (super::NOT_LEADER_OR_FOLLOWER, ResponseError::NotLeaderOrFollower),
            (super::REQUEST_TIMED_OUT, ResponseError::RequestTimedOut),
            (super::BROKER_NOT_AVAILABLE, ResponseError::BrokerNotAvailable),
            (super::MESSAGE_TOO_LARGE, ResponseError::MessageTooLarge),
            (super::INVALID_TOPIC_EXCEPTION, ResponseError::InvalidTopicException),
            (super::INVALID_REQUIRED_ACKS, ResponseError::InvalidRequiredAcks),
            (super::UNSUPPORTED_VERSION, ResponseError::UnsupportedVersion),
            (super::TOPIC_ALREADY_EXISTS, ResponseError::TopicAlreadyExists),
            (super::INVALID_PARTITIONS, ResponseError::InvalidPartitions),
            (super::INVALID_REPLICATION_FACTOR, ResponseError::InvalidReplicationFactor),
            (super::INVALID_REPLICA_ASSIGNMENT, ResponseError::InvalidReplicaAssignment),
            (super::INVALID_CONFIG, ResponseError::InvalidConfig),
            (super::INVALID_REQUEST, ResponseError::InvalidRequest),
            (super::TRANSACTIONAL_ID_AUTHORIZATION_FAILED, ResponseError::TransactionalIdAuthorizationFailed),
            (super::FENCED_LEADER_EPOCH, ResponseError::FencedLeaderEpoch),
            (super::UNKNOWN_LEADER_EPOCH, ResponseError::UnknownLeaderEpoch),
            (super::COORDINATOR_NOT_AVAILABLE, ResponseError::CoordinatorNotAvailable),
            (super::NOT_COORDINATOR, ResponseError::NotCoordinator),
            (super::OFFSET_METADATA_TOO_LARGE, ResponseError::OffsetMetadataTooLarge),
            (super::INVALID_COMMIT_OFFSET_SIZE, ResponseError::InvalidCommitOffsetSize),
            (super::UNKNOWN_TOPIC_ID, ResponseError::UnknownTopicId),
            (super::GROUP_ID_NOT_FOUND, ResponseError::GroupIdNotFound),
            (super::INVALID_GROUP_ID, ResponseError::InvalidGroupId),
            (super::NETWORK_EXCEPTION, ResponseError::NetworkException),
            (super::COORDINATOR_LOAD_IN_PROGRESS, ResponseError::CoordinatorLoadInProgress),
            (super::NOT_ENOUGH_REPLICAS, ResponseError::NotEnoughReplicas),
            (super::NOT_ENOUGH_REPLICAS_AFTER_APPEND, ResponseError::NotEnoughReplicasAfterAppend),
            (super::ILLEGAL_GENERATION, ResponseError::IllegalGeneration),
            (super::UNKNOWN_MEMBER_ID, ResponseError::UnknownMemberId),
            (super::REBALANCE_IN_PROGRESS, ResponseError::RebalanceInProgress),
            (super::OUT_OF_ORDER_SEQUENCE_NUMBER, ResponseError::OutOfOrderSequenceNumber),
            (super::INVALID_PRODUCER_EPOCH, ResponseError::InvalidProducerEpoch),
            (super::KAFKA_STORAGE_ERROR, ResponseError::KafkaStorageError),
            (super::MEMBER_ID_REQUIRED, ResponseError::MemberIdRequired),
        ];
        for (code, error) in pairs {
            assert_eq!(code, error.code(), "{error:?}");
        }
    }
}
