//! The metadata state machine.
//!
//! `apply_batch` is deterministic: the same committed batches in the same
//! order give byte-identical snapshots on every node. A batch applies
//! atomically: if any command is invalid against the current state (for
//! example a topic created twice by racing proposals), nothing changes and
//! the error says why; the proposer reports it to its client.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::proto::{
    AllocateProducerIds, BrokerRecord, ChangePartition, ClaimGroupCoordinator, Command, CommitOffsets, CommitStamp, CommittedOffsetRecord, CreatePartitions,
    CreateTopic, DeleteTopic, GroupOffsetsRecord, GroupRecord, MetadataBatch, MetadataSnapshot, PartitionAssignment, PartitionRecord, RegisterBroker,
    TopicConfig, TopicRecord,
};
use crate::BrokerId;

/// Kafka's limit on topic name length.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broker {
    pub broker_id: BrokerId,
    pub host: String,
    pub port: u32,
    pub rack: Option<String>,
    pub incarnation_id: u64,
    pub fenced: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub replicas: Vec<BrokerId>,
    pub leader: Option<BrokerId>,
    pub leader_epoch: u64,
    pub partition_epoch: u64,
    pub isr: Vec<BrokerId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topic {
    pub name: String,
    /// Unique over the cluster's life: a topic deleted and created again gets
    /// a new id, so no broker mistakes the old topic's log for the new one's.
    pub topic_id: u64,
    pub partitions: Vec<Partition>,
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("empty metadata command")]
    EmptyCommand,
    #[error("empty metadata batch")]
    EmptyBatch,
    #[error("topic `{0}` already exists")]
    TopicAlreadyExists(String),
    #[error("unknown topic `{0}`")]
    UnknownTopic(String),
    #[error("topic `{topic}` has no partition {partition}")]
    UnknownPartition { topic: String, partition: u32 },
    #[error("invalid topic name `{name}`: {reason}")]
    InvalidTopicName { name: String, reason: String },
    #[error("invalid partition assignment for `{topic}`: {reason}")]
    InvalidAssignment { topic: String, reason: String },
    #[error("unknown broker {0}")]
    UnknownBroker(BrokerId),
    #[error("broker {0} is fenced")]
    BrokerFenced(BrokerId),
    #[error("broker {broker_id} registration conflicts: {reason}")]
    InvalidRegistration { broker_id: BrokerId, reason: String },
    #[error("partition {topic}-{partition} is at partition epoch {actual}, not {expected}: the change was decided on stale metadata")]
    StalePartitionEpoch { topic: String, partition: u32, expected: u64, actual: u64 },
    #[error("invalid change to {topic}-{partition}: {reason}")]
    InvalidPartitionChange { topic: String, partition: u32, reason: String },
    #[error("snapshot is inconsistent: {0}")]
    InvalidSnapshot(String),
    #[error("invalid partition count {0}: a topic needs 1 to {max} partitions", max = PARTITION_COUNT_MAX)]
    InvalidPartitionCount(u32),
    #[error("topic `{topic}` has {current} partitions; it can only grow, not to {requested}")]
    InvalidPartitionGrowth { topic: String, current: u32, requested: u32 },
    #[error("producer id block at {expected} was decided on stale metadata: the next free id is {actual}")]
    StaleProducerIdBlock { expected: u64, actual: u64 },
    #[error("{operation} of topic `{topic}` was planned on metadata a topic delete changed since; plan again")]
    StaleTopicPlan { operation: &'static str, topic: String },
    #[error("a producer id block needs 1 to {max} ids, not {count}", max = PRODUCER_ID_BLOCK_MAX)]
    InvalidProducerIdBlock { count: u32 },
    #[error("replication factor {requested} is not possible with {live_brokers} live brokers")]
    InvalidReplicationFactor { requested: u32, live_brokers: usize },
    #[error("the group coordinator of term {term} is not the one of term {claimed_term}, which claimed the groups")]
    GroupCoordinatorTerm { term: u64, claimed_term: u64 },
    #[error("store of group `{group}` at {stamp:?} is older than the stored one at {stored:?}")]
    StaleGroupStore { group: String, stamp: (u64, u64), stored: (u64, u64) },
    #[error("invalid group `{group}`: {reason}")]
    InvalidGroup { group: String, reason: String },
}

/// A committed consumer group offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    /// The coordinator's order of the commit that set it.
    pub stamp: CommitStamp,
}

impl MetadataError {
    /// The command was planned on state another committed command changed
    /// first: planning again on newer state may succeed.
    pub fn is_stale_plan(&self) -> bool {
        matches!(self, MetadataError::StaleProducerIdBlock { .. } | MetadataError::StaleTopicPlan { .. })
    }
}

/// Kafka's topic name rule: 1..=249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), MetadataError> {
    let invalid = |reason: &str| Err(MetadataError::InvalidTopicName { name: name.to_string(), reason: reason.to_string() });
    if name.is_empty() {
        return invalid("must not be empty");
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return invalid("longer than 249 characters");
    }
    if name == "." || name == ".." {
        return invalid("`.` and `..` are reserved");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return invalid("only ASCII letters, digits, `.`, `_` and `-` are allowed");
    }
    Ok(())
}

/// The topic a command changes, if any (fencing changes partitions only
/// through the ChangePartition commands batched with it).
fn touched_topic(command: Option<&Command>) -> Option<&str> {
    match command? {
        Command::CreateTopic(create) => Some(&create.name),
        Command::ChangePartition(change) => Some(&change.topic),
        Command::CreatePartitions(create) => Some(&create.topic),
        Command::RegisterBroker(_) | Command::FenceBroker(_) | Command::UnfenceBroker(_) | Command::DeleteTopic(_) => None,
        Command::AllocateProducerIds(_) | Command::CommitOffsets(_) => None,
        Command::ClaimGroupCoordinator(_) | Command::StoreGroup(_) => None,
    }
}

/// The first rule a stored group breaks, if any (shared by `StoreGroup`
/// and snapshot validation). The coordinator that loads it checks its own
/// invariants again; these are the ones the metadata relies on.
fn group_violation(record: &GroupRecord) -> Option<&'static str> {
    if record.group.is_empty() {
        return Some("empty group id");
    }
    if record.stamp.is_none() {
        return Some("no stamp");
    }
    if record.generation_id < 0 {
        return Some("negative generation");
    }
    let member_ids: BTreeSet<&str> = record.members.iter().map(|m| m.member_id.as_str()).collect();
    if member_ids.len() != record.members.len() {
        return Some("a member is listed twice");
    }
    if member_ids.contains("") {
        return Some("a member has an empty id");
    }
    if record.leader_id.as_deref() != record.members.first().map(|m| m.member_id.as_str()) {
        return Some("the leader is not the first member");
    }
    if record.protocol_name.is_some() == record.members.is_empty() {
        return Some("a protocol without members, or members without one");
    }
    None
}

/// The first structural invariant `partition` breaks, if any: one condition
/// per check, shared by the assertions after every batch and by snapshot
/// validation, so the two can never disagree.
fn partition_violation(partition: &Partition, brokers: &BTreeMap<BrokerId, Broker>) -> Option<&'static str> {
    if partition.replicas.is_empty() {
        return Some("no replicas");
    }
    if has_duplicates(&partition.replicas) {
        return Some("a replica is listed twice");
    }
    if partition.isr.is_empty() {
        return Some("empty ISR");
    }
    if has_duplicates(&partition.isr) {
        return Some("an ISR member is listed twice");
    }
    if !partition.isr.iter().all(|id| partition.replicas.contains(id)) {
        return Some("an ISR member is not a replica");
    }
    if partition.leader.is_some_and(|leader| !partition.isr.contains(&leader)) {
        return Some("the leader is outside the ISR");
    }
    if !partition.replicas.iter().all(|id| brokers.contains_key(id)) {
        return Some("a replica is on an unregistered broker");
    }
    None
}

fn has_duplicates(ids: &[BrokerId]) -> bool {
    ids.iter().collect::<BTreeSet<_>>().len() != ids.len()
}

/// Upper bound on partitions per topic, so one request cannot bloat
/// metadata (the state machine refuses more; the controller plans within it).
pub const PARTITION_COUNT_MAX: u32 = 10_000;

/// One group's committed offsets by (topic, partition).
type GroupOffsets = BTreeMap<(String, u32), CommittedOffset>;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataState {
    metadata_version: u64,
    // Shared until written (Arc::make_mut): every applied batch copies the
    // state, and every publication hands a copy to the replication driver,
    // so the large maps a command leaves alone are not copied.
    brokers: Arc<BTreeMap<BrokerId, Broker>>,
    topics: Arc<BTreeMap<String, Topic>>,
    last_topic_id: u64,
    next_producer_id: u64,
    group_offsets: Arc<BTreeMap<String, GroupOffsets>>,
    /// Each group's membership as its coordinator last stored it.
    groups: BTreeMap<String, GroupRecord>,
    /// The term of the coordinator that last claimed the groups.
    group_coordinator_term: u64,
    /// The metadata version right after the latest topic delete: creates
    /// planned before it are stale.
    last_delete_version: u64,
}

/// The most producer ids one allocation hands out.
pub const PRODUCER_ID_BLOCK_MAX: u32 = 1_000_000;

impl MetadataState {
    pub fn new() -> Self {
        MetadataState::default()
    }

    /// Increases by one for every applied command; equal versions on two
    /// nodes mean they applied the same commands.
    pub fn metadata_version(&self) -> u64 {
        self.metadata_version
    }

    /// Whether `other` has the same brokers and topics (partitions, leaders,
    /// ISRs, configs), all that partition replication follows; offset
    /// commits and group records leave them alone. Cheap when neither map
    /// was written since one state was copied from the other.
    pub fn same_brokers_and_topics(&self, other: &MetadataState) -> bool {
        self.brokers == other.brokers && self.topics == other.topics
    }

    pub fn brokers(&self) -> impl Iterator<Item = &Broker> {
        self.brokers.values()
    }

    pub fn broker(&self, broker_id: BrokerId) -> Option<&Broker> {
        self.brokers.get(&broker_id)
    }

    pub fn topics(&self) -> impl Iterator<Item = &Topic> {
        self.topics.values()
    }

    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    pub fn partition(&self, topic: &str, partition: u32) -> Option<&Partition> {
        self.topics.get(topic).and_then(|t| t.partitions.get(partition as usize))
    }

    /// The highest topic id handed out (ids only grow; 0: none yet).
    pub fn last_topic_id(&self) -> u64 {
        self.last_topic_id
    }

    /// The first producer id no broker was handed yet.
    pub fn next_producer_id(&self) -> u64 {
        self.next_producer_id
    }

    /// A group's committed offsets, by (topic, partition).
    pub fn group_offsets(&self, group: &str) -> Option<&BTreeMap<(String, u32), CommittedOffset>> {
        self.group_offsets.get(group)
    }

    /// Every group with committed offsets.
    pub fn groups_with_offsets(&self) -> impl Iterator<Item = &str> {
        self.group_offsets.keys().map(String::as_str)
    }

    /// Every stored group membership, in group order.
    pub fn groups(&self) -> impl Iterator<Item = &GroupRecord> {
        self.groups.values()
    }

    /// The term of the group coordinator that claimed the groups last (0: none).
    pub fn group_coordinator_term(&self) -> u64 {
        self.group_coordinator_term
    }

    pub fn is_live(&self, broker_id: BrokerId) -> bool {
        self.brokers.get(&broker_id).is_some_and(|b| !b.fenced)
    }

    /// Applies every command of `batch` or none. Returns the new metadata version.
    pub fn apply_batch(&mut self, batch: &MetadataBatch) -> Result<u64, MetadataError> {
        if batch.commands.is_empty() {
            return Err(MetadataError::EmptyBatch);
        }
        let version_before = self.metadata_version;
        if let [single] = batch.commands.as_slice() {
            // Every command validates completely before it changes anything,
            // so a one-command batch (the common case) is atomic in place.
            self.apply_command(single.command.as_ref().ok_or(MetadataError::EmptyCommand)?)?;
            self.metadata_version += 1;
        } else {
            // Later commands may fail after earlier ones changed the state:
            // apply to a copy and swap it in.
            let mut next = self.clone();
            for command in &batch.commands {
                next.apply_command(command.command.as_ref().ok_or(MetadataError::EmptyCommand)?)?;
                next.metadata_version += 1;
            }
            *self = next;
        }
        for command in &batch.commands {
            if let Some(topic) = touched_topic(command.command.as_ref()) {
                if let Some(topic) = self.topics.get(topic) {
                    self.check_topic_invariants(topic);
                }
            }
        }
        assert!(self.metadata_version > version_before, "metadata version must increase");
        Ok(self.metadata_version)
    }

    fn apply_command(&mut self, command: &Command) -> Result<(), MetadataError> {
        match command {
            Command::RegisterBroker(register) => self.register_broker(register),
            Command::FenceBroker(fence) => self.set_fenced(fence.broker_id, true),
            Command::UnfenceBroker(unfence) => self.set_fenced(unfence.broker_id, false),
            Command::CreateTopic(create) => self.create_topic(create),
            Command::DeleteTopic(delete) => self.delete_topic(delete),
            Command::ChangePartition(change) => self.change_partition(change),
            Command::AllocateProducerIds(allocate) => self.allocate_producer_ids(allocate),
            Command::CommitOffsets(commit) => self.commit_offsets(commit),
            Command::CreatePartitions(create) => self.create_partitions(create),
            Command::ClaimGroupCoordinator(claim) => self.claim_group_coordinator(claim),
            Command::StoreGroup(record) => self.store_group(record),
        }
    }

    fn claim_group_coordinator(&mut self, claim: &ClaimGroupCoordinator) -> Result<(), MetadataError> {
        // Equal terms: a retried claim of the same coordinator.
        if claim.coordinator_term < self.group_coordinator_term {
            return Err(MetadataError::GroupCoordinatorTerm { term: claim.coordinator_term, claimed_term: self.group_coordinator_term });
        }
        self.group_coordinator_term = claim.coordinator_term;
        Ok(())
    }

    fn store_group(&mut self, record: &GroupRecord) -> Result<(), MetadataError> {
        if let Some(reason) = group_violation(record) {
            return Err(MetadataError::InvalidGroup { group: record.group.clone(), reason: reason.to_string() });
        }
        let stamp = record.stamp.unwrap_or_default();
        // Only the coordinator that claimed the groups last may store: one
        // that lost the metadata leadership (its proposal delayed, or
        // forwarded to the new leader) never overwrites what its successor
        // loaded.
        if stamp.coordinator_term != self.group_coordinator_term {
            return Err(MetadataError::GroupCoordinatorTerm { term: stamp.coordinator_term, claimed_term: self.group_coordinator_term });
        }
        if let Some(stored) = self.groups.get(&record.group).and_then(|g| g.stamp) {
            // Equal: the same store retried.
            if stored > stamp {
                return Err(MetadataError::StaleGroupStore {
                    group: record.group.clone(),
                    stamp: (stamp.coordinator_term, stamp.sequence),
                    stored: (stored.coordinator_term, stored.sequence),
                });
            }
        }
        self.groups.insert(record.group.clone(), record.clone());
        Ok(())
    }

    fn allocate_producer_ids(&mut self, allocate: &AllocateProducerIds) -> Result<(), MetadataError> {
        if allocate.count == 0 || allocate.count > PRODUCER_ID_BLOCK_MAX {
            return Err(MetadataError::InvalidProducerIdBlock { count: allocate.count });
        }
        if allocate.expected_next_producer_id != self.next_producer_id {
            return Err(MetadataError::StaleProducerIdBlock { expected: allocate.expected_next_producer_id, actual: self.next_producer_id });
        }
        if !self.brokers.contains_key(&allocate.broker_id) {
            return Err(MetadataError::UnknownBroker(allocate.broker_id));
        }
        self.next_producer_id += u64::from(allocate.count);
        assert!(self.next_producer_id <= i64::MAX as u64, "producer ids fit Kafka's int64");
        Ok(())
    }

    fn commit_offsets(&mut self, commit: &CommitOffsets) -> Result<(), MetadataError> {
        for offset in &commit.offsets {
            if self.partition(&offset.topic, offset.partition).is_none() {
                return Err(MetadataError::UnknownPartition { topic: offset.topic.clone(), partition: offset.partition });
            }
        }
        let stamp = commit.stamp.unwrap_or_default();
        let offsets = Arc::make_mut(&mut self.group_offsets).entry(commit.group.clone()).or_default();
        for offset in &commit.offsets {
            let key = (offset.topic.clone(), offset.partition);
            if offsets.get(&key).is_some_and(|existing| existing.stamp > stamp) {
                // A delayed or retried earlier commit: the later one stays.
                continue;
            }
            let committed = CommittedOffset { offset: offset.offset, leader_epoch: offset.leader_epoch, metadata: offset.metadata.clone(), stamp };
            offsets.insert(key, committed);
        }
        Ok(())
    }

    fn create_partitions(&mut self, create: &CreatePartitions) -> Result<(), MetadataError> {
        let topic = self.topics.get(&create.topic).ok_or_else(|| MetadataError::UnknownTopic(create.topic.clone()))?;
        let replication_factor = topic.partitions[0].replicas.len();
        let total = topic.partitions.len() + create.partitions.len();
        if create.partitions.is_empty() || total > PARTITION_COUNT_MAX as usize {
            return Err(MetadataError::InvalidPartitionCount(u32::try_from(total).unwrap_or(u32::MAX)));
        }
        let partitions = self.new_partitions(&create.topic, &create.partitions, replication_factor)?;
        Arc::make_mut(&mut self.topics).get_mut(&create.topic).expect("checked above").partitions.extend(partitions);
        Ok(())
    }

    /// Validates new partitions' assignments (each with `replication_factor`
    /// distinct live replicas, led by the first) and builds them.
    fn new_partitions(&self, topic: &str, assignments: &[PartitionAssignment], replication_factor: usize) -> Result<Vec<Partition>, MetadataError> {
        let invalid = |reason: String| MetadataError::InvalidAssignment { topic: topic.to_string(), reason };
        let mut partitions = Vec::with_capacity(assignments.len());
        for (index, assignment) in assignments.iter().enumerate() {
            if assignment.replicas.is_empty() {
                return Err(invalid(format!("partition {index} has no replicas")));
            }
            if assignment.replicas.len() != replication_factor {
                return Err(invalid(format!("partition {index} has {} replicas, the topic has {replication_factor}", assignment.replicas.len())));
            }
            if has_duplicates(&assignment.replicas) {
                return Err(invalid(format!("partition {index} lists a replica twice")));
            }
            for replica in &assignment.replicas {
                let broker = self.brokers.get(replica).ok_or(MetadataError::UnknownBroker(*replica))?;
                if broker.fenced {
                    return Err(MetadataError::BrokerFenced(*replica));
                }
            }
            if assignment.leader != assignment.replicas[0] {
                return Err(invalid(format!("partition {index} must start led by its first replica")));
            }
            partitions.push(Partition {
                replicas: assignment.replicas.clone(),
                leader: Some(assignment.leader),
                leader_epoch: 0,
                partition_epoch: 0,
                isr: assignment.replicas.clone(),
            });
        }
        Ok(partitions)
    }

    fn register_broker(&mut self, register: &RegisterBroker) -> Result<(), MetadataError> {
        let conflict = self.brokers.values().find(|b| b.broker_id != register.broker_id && b.host == register.host && b.port == register.port);
        if let Some(other) = conflict {
            return Err(MetadataError::InvalidRegistration {
                broker_id: register.broker_id,
                reason: format!("{}:{} is already broker {}", register.host, register.port, other.broker_id),
            });
        }
        if register.port == 0 || register.port > u32::from(u16::MAX) {
            return Err(MetadataError::InvalidRegistration { broker_id: register.broker_id, reason: format!("port {} is not a TCP port", register.port) });
        }
        // A new incarnation (a restart) never continues a leader epoch the
        // broker held before: it may have lost unflushed records that
        // followers already copied, and a second history under one epoch
        // would make divergence undetectable. Partitions it leads move to a
        // new leader epoch (it stays leader).
        let restarted = self.brokers.get(&register.broker_id).is_some_and(|b| b.incarnation_id != register.incarnation_id);
        if restarted {
            for topic in Arc::make_mut(&mut self.topics).values_mut() {
                for partition in topic.partitions.iter_mut().filter(|p| p.leader == Some(register.broker_id)) {
                    partition.leader_epoch += 1;
                    partition.partition_epoch += 1;
                }
            }
        }
        // A registration (new or after a restart) makes the broker live; a
        // retried registration of the same incarnation changes nothing.
        Arc::make_mut(&mut self.brokers).insert(
            register.broker_id,
            Broker {
                broker_id: register.broker_id,
                host: register.host.clone(),
                port: register.port,
                rack: register.rack.clone(),
                incarnation_id: register.incarnation_id,
                fenced: false,
            },
        );
        Ok(())
    }

    fn set_fenced(&mut self, broker_id: BrokerId, fenced: bool) -> Result<(), MetadataError> {
        let broker = Arc::make_mut(&mut self.brokers).get_mut(&broker_id).ok_or(MetadataError::UnknownBroker(broker_id))?;
        broker.fenced = fenced;
        Ok(())
    }

    fn delete_topic(&mut self, delete: &DeleteTopic) -> Result<(), MetadataError> {
        let topic = self.topics.get(&delete.name).ok_or_else(|| MetadataError::UnknownTopic(delete.name.clone()))?;
        if delete.topic_id != 0 && delete.topic_id != topic.topic_id {
            return Err(MetadataError::StaleTopicPlan { operation: "a delete", topic: delete.name.clone() });
        }
        Arc::make_mut(&mut self.topics).remove(&delete.name);
        // The version this delete gives the state (it is counted after the command).
        self.last_delete_version = self.metadata_version + 1;
        // Offsets of a deleted topic would apply to a later topic of the same name.
        let group_offsets = Arc::make_mut(&mut self.group_offsets);
        for offsets in group_offsets.values_mut() {
            offsets.retain(|(topic, _), _| *topic != delete.name);
        }
        group_offsets.retain(|_, offsets| !offsets.is_empty());
        Ok(())
    }

    fn create_topic(&mut self, create: &CreateTopic) -> Result<(), MetadataError> {
        validate_topic_name(&create.name)?;
        if create.planned_at_version != 0 && create.planned_at_version < self.last_delete_version {
            return Err(MetadataError::StaleTopicPlan { operation: "a create", topic: create.name.clone() });
        }
        if self.topics.contains_key(&create.name) {
            return Err(MetadataError::TopicAlreadyExists(create.name.clone()));
        }
        if create.partitions.is_empty() {
            return Err(MetadataError::InvalidAssignment { topic: create.name.clone(), reason: "a topic needs at least one partition".into() });
        }
        let partitions = self.new_partitions(&create.name, &create.partitions, create.partitions[0].replicas.len())?;
        let configs = create.configs.iter().map(|c| (c.key.clone(), c.value.clone())).collect();
        self.last_topic_id += 1;
        let topic = Topic { name: create.name.clone(), topic_id: self.last_topic_id, partitions, configs };
        Arc::make_mut(&mut self.topics).insert(create.name.clone(), topic);
        Ok(())
    }

    fn change_partition(&mut self, change: &ChangePartition) -> Result<(), MetadataError> {
        let live: BTreeSet<BrokerId> = self.brokers.values().filter(|b| !b.fenced).map(|b| b.broker_id).collect();
        let topic = Arc::make_mut(&mut self.topics).get_mut(&change.topic).ok_or_else(|| MetadataError::UnknownTopic(change.topic.clone()))?;
        let partition = topic
            .partitions
            .get_mut(change.partition as usize)
            .ok_or_else(|| MetadataError::UnknownPartition { topic: change.topic.clone(), partition: change.partition })?;
        if partition.partition_epoch != change.expected_partition_epoch {
            return Err(MetadataError::StalePartitionEpoch {
                topic: change.topic.clone(),
                partition: change.partition,
                expected: change.expected_partition_epoch,
                actual: partition.partition_epoch,
            });
        }
        let invalid =
            |reason: &str| MetadataError::InvalidPartitionChange { topic: change.topic.clone(), partition: change.partition, reason: reason.to_string() };
        if change.isr.is_empty() {
            return Err(invalid("the ISR must keep at least one member"));
        }
        if has_duplicates(&change.isr) {
            return Err(invalid("the ISR lists a replica twice"));
        }
        if !change.isr.iter().all(|id| partition.replicas.contains(id)) {
            return Err(invalid("the ISR may only hold replicas of the partition"));
        }
        if let Some(leader) = change.leader {
            // No unclean election: a leader always comes from the ISR.
            if !change.isr.contains(&leader) {
                return Err(invalid("the leader must be in the ISR"));
            }
            if !live.contains(&leader) {
                return Err(MetadataError::BrokerFenced(leader));
            }
        }
        if change.leader != partition.leader {
            partition.leader_epoch += 1;
        }
        partition.leader = change.leader;
        partition.isr = change.isr.clone();
        partition.partition_epoch += 1;
        Ok(())
    }

    /// Structural invariants of the whole state (snapshots, tests).
    pub fn check_invariants(&self) {
        for topic in self.topics.values() {
            self.check_topic_invariants(topic);
        }
    }

    /// Structural invariants of one topic; they hold after every batch or the
    /// state machine has a bug, so they are asserted (in release builds too)
    /// for every topic a batch touched.
    fn check_topic_invariants(&self, topic: &Topic) {
        assert!(!topic.partitions.is_empty(), "topic {} has no partitions", topic.name);
        for (index, partition) in topic.partitions.iter().enumerate() {
            if let Some(violation) = partition_violation(partition, &self.brokers) {
                panic!("{}-{index}: {violation}", topic.name);
            }
        }
    }

    /// The whole state, in a canonical order (so equal states encode to equal bytes).
    pub fn snapshot(&self) -> MetadataSnapshot {
        MetadataSnapshot {
            metadata_version: self.metadata_version,
            brokers: self
                .brokers
                .values()
                .map(|b| BrokerRecord {
                    broker_id: b.broker_id,
                    host: b.host.clone(),
                    port: b.port,
                    rack: b.rack.clone(),
                    incarnation_id: b.incarnation_id,
                    fenced: b.fenced,
                })
                .collect(),
            topics: self
                .topics
                .values()
                .map(|t| TopicRecord {
                    name: t.name.clone(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| PartitionRecord {
                            replicas: p.replicas.clone(),
                            leader: p.leader,
                            leader_epoch: p.leader_epoch,
                            partition_epoch: p.partition_epoch,
                            isr: p.isr.clone(),
                        })
                        .collect(),
                    configs: t.configs.iter().map(|(k, v)| TopicConfig { key: k.clone(), value: v.clone() }).collect(),
                    topic_id: t.topic_id,
                })
                .collect(),
            last_topic_id: self.last_topic_id,
            next_producer_id: self.next_producer_id,
            group_offsets: self
                .group_offsets
                .iter()
                .map(|(group, offsets)| GroupOffsetsRecord {
                    group: group.clone(),
                    offsets: offsets
                        .iter()
                        .map(|((topic, partition), committed)| CommittedOffsetRecord {
                            topic: topic.clone(),
                            partition: *partition,
                            offset: committed.offset,
                            leader_epoch: committed.leader_epoch,
                            metadata: committed.metadata.clone(),
                            stamp: Some(committed.stamp),
                        })
                        .collect(),
                })
                .collect(),
            groups: self.groups.values().cloned().collect(),
            group_coordinator_term: self.group_coordinator_term,
            last_delete_version: self.last_delete_version,
        }
    }

    /// Rebuilds the state from a snapshot, refusing one that breaks an invariant
    /// (a snapshot arrives from disk or another node: it is input, not truth).
    pub fn from_snapshot(snapshot: &MetadataSnapshot) -> Result<Self, MetadataError> {
        let mut state = MetadataState {
            metadata_version: snapshot.metadata_version,
            last_topic_id: snapshot.last_topic_id,
            next_producer_id: snapshot.next_producer_id,
            group_coordinator_term: snapshot.group_coordinator_term,
            last_delete_version: snapshot.last_delete_version,
            ..MetadataState::default()
        };
        for b in &snapshot.brokers {
            let broker =
                Broker { broker_id: b.broker_id, host: b.host.clone(), port: b.port, rack: b.rack.clone(), incarnation_id: b.incarnation_id, fenced: b.fenced };
            if Arc::make_mut(&mut state.brokers).insert(b.broker_id, broker).is_some() {
                return Err(MetadataError::InvalidSnapshot(format!("broker {} appears twice", b.broker_id)));
            }
        }
        for t in &snapshot.topics {
            validate_topic_name(&t.name)?;
            let mut partitions = Vec::with_capacity(t.partitions.len());
            for (index, p) in t.partitions.iter().enumerate() {
                let partition = Partition {
                    replicas: p.replicas.clone(),
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    isr: p.isr.clone(),
                };
                if let Some(violation) = partition_violation(&partition, &state.brokers) {
                    return Err(MetadataError::InvalidSnapshot(format!("partition {}-{index}: {violation}", t.name)));
                }
                partitions.push(partition);
            }
            if partitions.is_empty() {
                return Err(MetadataError::InvalidSnapshot(format!("topic {} has no partitions", t.name)));
            }
            let configs = t.configs.iter().map(|c| (c.key.clone(), c.value.clone())).collect();
            if state.topics.values().any(|other| other.topic_id == t.topic_id) {
                return Err(MetadataError::InvalidSnapshot(format!("topic id {} appears twice", t.topic_id)));
            }
            if t.topic_id == 0 || t.topic_id > snapshot.last_topic_id {
                return Err(MetadataError::InvalidSnapshot(format!("topic {} has id {}, ids run 1..={}", t.name, t.topic_id, snapshot.last_topic_id)));
            }
            let topic = Topic { name: t.name.clone(), topic_id: t.topic_id, partitions, configs };
            if Arc::make_mut(&mut state.topics).insert(t.name.clone(), topic).is_some() {
                return Err(MetadataError::InvalidSnapshot(format!("topic {} appears twice", t.name)));
            }
        }
        for group in &snapshot.group_offsets {
            let mut offsets = BTreeMap::new();
            for o in &group.offsets {
                if state.partition(&o.topic, o.partition).is_none() {
                    return Err(MetadataError::InvalidSnapshot(format!("group {} has an offset for unknown {}-{}", group.group, o.topic, o.partition)));
                }
                let committed =
                    CommittedOffset { offset: o.offset, leader_epoch: o.leader_epoch, metadata: o.metadata.clone(), stamp: o.stamp.unwrap_or_default() };
                offsets.insert((o.topic.clone(), o.partition), committed);
            }
            if Arc::make_mut(&mut state.group_offsets).insert(group.group.clone(), offsets).is_some() {
                return Err(MetadataError::InvalidSnapshot(format!("group {} appears twice", group.group)));
            }
        }
        for record in &snapshot.groups {
            if let Some(reason) = group_violation(record) {
                return Err(MetadataError::InvalidSnapshot(format!("group {}: {reason}", record.group)));
            }
            if record.stamp.is_some_and(|stamp| stamp.coordinator_term > snapshot.group_coordinator_term) {
                return Err(MetadataError::InvalidSnapshot(format!("group {} was stored by a coordinator that never claimed the groups", record.group)));
            }
            if state.groups.insert(record.group.clone(), record.clone()).is_some() {
                return Err(MetadataError::InvalidSnapshot(format!("stored group {} appears twice", record.group)));
            }
        }
        Ok(state)
    }
}
