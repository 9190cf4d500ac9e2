//! Wire and disk encoding of metadata commands and snapshots (prost; these
//! messages are Keel's own, so no protoc step is needed).
//!
//! A Raft entry carries one `MetadataBatch`; a batch applies atomically (all
//! commands or none), like Kafka's metadata record batches, so e.g. fencing a
//! broker and moving its partition leaderships can never be half applied.

use prost::Message as _;

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MetadataBatch {
    #[prost(message, repeated, tag = "1")]
    pub commands: Vec<MetadataCommand>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MetadataCommand {
    #[prost(oneof = "Command", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11")]
    pub command: Option<Command>,
}

#[derive(Clone, PartialEq, Eq, prost::Oneof)]
pub enum Command {
    #[prost(message, tag = "1")]
    RegisterBroker(RegisterBroker),
    #[prost(message, tag = "2")]
    FenceBroker(FenceBroker),
    #[prost(message, tag = "3")]
    UnfenceBroker(UnfenceBroker),
    #[prost(message, tag = "4")]
    CreateTopic(CreateTopic),
    #[prost(message, tag = "5")]
    DeleteTopic(DeleteTopic),
    #[prost(message, tag = "6")]
    ChangePartition(ChangePartition),
    #[prost(message, tag = "7")]
    AllocateProducerIds(AllocateProducerIds),
    #[prost(message, tag = "8")]
    CommitOffsets(CommitOffsets),
    #[prost(message, tag = "9")]
    CreatePartitions(CreatePartitions),
    #[prost(message, tag = "10")]
    ClaimGroupCoordinator(ClaimGroupCoordinator),
    #[prost(message, tag = "11")]
    StoreGroup(GroupRecord),
}

impl From<Command> for MetadataCommand {
    fn from(command: Command) -> Self {
        MetadataCommand { command: Some(command) }
    }
}

/// A broker (re)joins. `incarnation_id` changes on every process start so the
/// controller can tell a restart from a duplicate registration.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RegisterBroker {
    #[prost(uint64, tag = "1")]
    pub broker_id: u64,
    #[prost(string, tag = "2")]
    pub host: String,
    #[prost(uint32, tag = "3")]
    pub port: u32,
    #[prost(string, optional, tag = "4")]
    pub rack: Option<String>,
    #[prost(uint64, tag = "5")]
    pub incarnation_id: u64,
}

/// The broker missed its registration lease: it may not lead or stay in an ISR.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct FenceBroker {
    #[prost(uint64, tag = "1")]
    pub broker_id: u64,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct UnfenceBroker {
    #[prost(uint64, tag = "1")]
    pub broker_id: u64,
}

/// A topic with its partitions fully decided by the controller.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct CreateTopic {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, repeated, tag = "2")]
    pub partitions: Vec<PartitionAssignment>,
    #[prost(message, repeated, tag = "3")]
    pub configs: Vec<TopicConfig>,
    /// The metadata version the create was planned at (0: not given). A
    /// create planned before the latest delete applied is refused as
    /// stale: a proposal held up in the network, whose client already had
    /// its answer, must not bring back a topic deleted since.
    #[prost(uint64, tag = "4")]
    pub planned_at_version: u64,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PartitionAssignment {
    #[prost(uint64, repeated, tag = "1")]
    pub replicas: Vec<u64>,
    /// Must be the first replica: new partitions start led by their preferred leader.
    #[prost(uint64, tag = "2")]
    pub leader: u64,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct TopicConfig {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DeleteTopic {
    #[prost(string, tag = "1")]
    pub name: String,
    /// The id of the topic the delete was planned on (0: whichever has the
    /// name). Another id means the topic was deleted and created again
    /// since: a held-up delete must not remove the new one.
    #[prost(uint64, tag = "2")]
    pub topic_id: u64,
}

/// A block of idempotent producer ids for one broker to hand out (Kafka's
/// AllocateProducerIds, KIP-730). Applies only if the next free id is still
/// `expected_next_producer_id`, so the proposer knows its block is
/// `[expected_next_producer_id, + count)` once it commits.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct AllocateProducerIds {
    #[prost(uint64, tag = "1")]
    pub broker_id: u64,
    #[prost(uint64, tag = "2")]
    pub expected_next_producer_id: u64,
    #[prost(uint32, tag = "3")]
    pub count: u32,
}

/// A consumer group's committed offsets (Kafka's OffsetCommit), replicated
/// with the rest of the metadata so a coordinator failover loses none.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct CommitOffsets {
    #[prost(string, tag = "1")]
    pub group: String,
    #[prost(message, repeated, tag = "2")]
    pub offsets: Vec<CommittedOffsetRecord>,
    /// The coordinator's order of this commit: (its metadata term, its
    /// count). A commit applies to a partition only if it is not older than
    /// the one there, so a retried or delayed proposal of an earlier commit
    /// never overwrites a later one.
    #[prost(message, optional, tag = "3")]
    pub stamp: Option<CommitStamp>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, prost::Message)]
pub struct CommitStamp {
    #[prost(uint64, tag = "1")]
    pub coordinator_term: u64,
    #[prost(uint64, tag = "2")]
    pub sequence: u64,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct CommittedOffsetRecord {
    #[prost(string, tag = "1")]
    pub topic: String,
    #[prost(uint32, tag = "2")]
    pub partition: u32,
    #[prost(int64, tag = "3")]
    pub offset: i64,
    /// -1 when the client did not say.
    #[prost(int32, tag = "4")]
    pub leader_epoch: i32,
    #[prost(string, tag = "5")]
    pub metadata: String,
    /// In snapshots: the stamp of the commit that set it.
    #[prost(message, optional, tag = "6")]
    pub stamp: Option<CommitStamp>,
}

/// The metadata leader of `coordinator_term` becomes the group coordinator.
/// From here on only its `StoreGroup`s apply (a store of an earlier
/// coordinator, delayed or forwarded, is refused), so the groups it loads
/// once this has applied are the last any earlier coordinator stored.
/// Applies only if no later term claimed the groups already.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ClaimGroupCoordinator {
    #[prost(uint64, tag = "1")]
    pub coordinator_term: u64,
}

/// A consumer group's membership as its coordinator stored it (Kafka's
/// GroupMetadata record): a settled generation with each member's
/// assignment, or an Empty group with the generation it reached. As a
/// command it applies only if its stamp's term is the claimed coordinator
/// term and it is not older than the group's stored stamp.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct GroupRecord {
    #[prost(string, tag = "1")]
    pub group: String,
    #[prost(int32, tag = "2")]
    pub generation_id: i32,
    #[prost(string, optional, tag = "3")]
    pub protocol_type: Option<String>,
    /// Set exactly when there are members.
    #[prost(string, optional, tag = "4")]
    pub protocol_name: Option<String>,
    /// Set exactly when there are members: the first of them.
    #[prost(string, optional, tag = "5")]
    pub leader_id: Option<String>,
    /// In the order they joined, the leader first.
    #[prost(message, repeated, tag = "6")]
    pub members: Vec<GroupMemberRecord>,
    /// (coordinator term, the coordinator's store count): later stores of
    /// a group have larger stamps.
    #[prost(message, optional, tag = "7")]
    pub stamp: Option<CommitStamp>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct GroupMemberRecord {
    #[prost(string, tag = "1")]
    pub member_id: String,
    #[prost(string, tag = "2")]
    pub client_id: String,
    #[prost(string, tag = "3")]
    pub client_host: String,
    #[prost(uint64, tag = "4")]
    pub session_timeout_ms: u64,
    #[prost(uint64, tag = "5")]
    pub rebalance_timeout_ms: u64,
    /// In the member's order of preference.
    #[prost(message, repeated, tag = "6")]
    pub protocols: Vec<GroupProtocolRecord>,
    /// The leader's assignment for this member.
    #[prost(bytes = "vec", tag = "7")]
    pub assignment: Vec<u8>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct GroupProtocolRecord {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub metadata: Vec<u8>,
}

/// More partitions for an existing topic (Kafka's CreatePartitions).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct CreatePartitions {
    #[prost(string, tag = "1")]
    pub topic: String,
    /// The new partitions, numbered after the existing ones.
    #[prost(message, repeated, tag = "2")]
    pub partitions: Vec<PartitionAssignment>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct GroupOffsetsRecord {
    #[prost(string, tag = "1")]
    pub group: String,
    #[prost(message, repeated, tag = "2")]
    pub offsets: Vec<CommittedOffsetRecord>,
}

/// A leader and/or ISR change (Kafka's AlterPartition / PartitionChangeRecord).
/// Applies only if the partition is still at `expected_partition_epoch`, so a
/// decision made on stale state is refused rather than applied.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ChangePartition {
    #[prost(string, tag = "1")]
    pub topic: String,
    #[prost(uint32, tag = "2")]
    pub partition: u32,
    #[prost(uint64, tag = "3")]
    pub expected_partition_epoch: u64,
    /// None: the partition has no leader (every ISR member is fenced).
    #[prost(uint64, optional, tag = "4")]
    pub leader: Option<u64>,
    #[prost(uint64, repeated, tag = "5")]
    pub isr: Vec<u64>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct BrokerRecord {
    #[prost(uint64, tag = "1")]
    pub broker_id: u64,
    #[prost(string, tag = "2")]
    pub host: String,
    #[prost(uint32, tag = "3")]
    pub port: u32,
    #[prost(string, optional, tag = "4")]
    pub rack: Option<String>,
    #[prost(uint64, tag = "5")]
    pub incarnation_id: u64,
    #[prost(bool, tag = "6")]
    pub fenced: bool,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PartitionRecord {
    #[prost(uint64, repeated, tag = "1")]
    pub replicas: Vec<u64>,
    #[prost(uint64, optional, tag = "2")]
    pub leader: Option<u64>,
    /// Bumped on every leader change; followers refuse data from older epochs.
    #[prost(uint64, tag = "3")]
    pub leader_epoch: u64,
    /// Bumped on every leader or ISR change; guards ChangePartition.
    #[prost(uint64, tag = "4")]
    pub partition_epoch: u64,
    #[prost(uint64, repeated, tag = "5")]
    pub isr: Vec<u64>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct TopicRecord {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, repeated, tag = "2")]
    pub partitions: Vec<PartitionRecord>,
    #[prost(message, repeated, tag = "3")]
    pub configs: Vec<TopicConfig>,
    /// Tells a topic from an earlier one of the same name (its log directories carry it).
    #[prost(uint64, tag = "4")]
    pub topic_id: u64,
}

/// The whole state machine, for Raft snapshots and divergence checks.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MetadataSnapshot {
    #[prost(uint64, tag = "1")]
    pub metadata_version: u64,
    #[prost(message, repeated, tag = "2")]
    pub brokers: Vec<BrokerRecord>,
    #[prost(message, repeated, tag = "3")]
    pub topics: Vec<TopicRecord>,
    #[prost(uint64, tag = "4")]
    pub last_topic_id: u64,
    #[prost(uint64, tag = "5")]
    pub next_producer_id: u64,
    #[prost(message, repeated, tag = "6")]
    pub group_offsets: Vec<GroupOffsetsRecord>,
    /// Every stored group, in group order.
    #[prost(message, repeated, tag = "7")]
    pub groups: Vec<GroupRecord>,
    /// The latest `ClaimGroupCoordinator` term (0: none yet).
    #[prost(uint64, tag = "8")]
    pub group_coordinator_term: u64,
    /// The metadata version right after the latest topic delete (0: none).
    #[prost(uint64, tag = "9")]
    pub last_delete_version: u64,
}

impl MetadataBatch {
    pub fn encode_to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    pub fn decode_from(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        Self::decode(bytes)
    }
}

impl MetadataSnapshot {
    pub fn encode_to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    pub fn decode_from(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        Self::decode(bytes)
    }
}
