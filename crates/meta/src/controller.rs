//! Controller policy: what the metadata Raft leader proposes. Pure functions
//! of the current state (and, for placement, a start index the caller draws
//! from its node RNG), so they are tested without any runtime.
//!
//! Rules kept here: replicas only on live brokers, spread across racks when
//! racks are set; a new partition is led by its first replica; a leader is
//! only ever chosen from the ISR (no unclean election).

use std::collections::BTreeMap;

use crate::proto::{ChangePartition, Command, CreatePartitions, CreateTopic, FenceBroker, MetadataBatch, PartitionAssignment, TopicConfig};
use crate::state::{validate_topic_name, MetadataState, Partition};
use crate::{BrokerId, MetadataError};

pub use crate::state::PARTITION_COUNT_MAX;

/// Orders brokers so that consecutive positions alternate racks
/// (rack A's first, rack B's first, ..., rack A's second, ...). Brokers without
/// a rack form one group. Input order does not matter: output is by id within racks.
pub fn rack_alternating_order(brokers: &[(BrokerId, Option<String>)]) -> Vec<BrokerId> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<BrokerId>> = BTreeMap::new();
    for (id, rack) in brokers {
        by_rack.entry(rack.as_deref()).or_default().push(*id);
    }
    by_rack.values_mut().for_each(|ids| ids.sort_unstable());
    let longest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    let mut order = Vec::with_capacity(brokers.len());
    for round in 0..longest {
        for ids in by_rack.values() {
            if let Some(id) = ids.get(round) {
                order.push(*id);
            }
        }
    }
    order
}

/// Replica lists for `partition_count` partitions: partition p's replicas are
/// `replication_factor` consecutive brokers of the rack-alternating order,
/// starting at `start_index + p`, so leadership (first replica) rotates
/// evenly and each partition spans as many racks as the order allows.
pub fn assign_replicas(
    live_brokers: &[(BrokerId, Option<String>)],
    partition_count: u32,
    replication_factor: u32,
    start_index: usize,
) -> Result<Vec<Vec<BrokerId>>, MetadataError> {
    if partition_count == 0 || partition_count > PARTITION_COUNT_MAX {
        return Err(MetadataError::InvalidPartitionCount(partition_count));
    }
    let order = rack_alternating_order(live_brokers);
    if replication_factor == 0 || replication_factor as usize > order.len() {
        return Err(MetadataError::InvalidReplicationFactor { requested: replication_factor, live_brokers: order.len() });
    }
    let assignment: Vec<Vec<BrokerId>> =
        (0..partition_count as usize).map(|p| (0..replication_factor as usize).map(|k| order[(start_index + p + k) % order.len()]).collect()).collect();
    Ok(assignment)
}

/// The `CreateTopic` batch for a client's request, validated against `state`.
pub fn plan_create_topic(
    state: &MetadataState,
    name: &str,
    partition_count: u32,
    replication_factor: u32,
    configs: &[(String, String)],
    start_index: usize,
) -> Result<MetadataBatch, MetadataError> {
    validate_topic_name(name)?;
    if state.topic(name).is_some() {
        return Err(MetadataError::TopicAlreadyExists(name.to_string()));
    }
    let live: Vec<(BrokerId, Option<String>)> = state.brokers().filter(|b| !b.fenced).map(|b| (b.broker_id, b.rack.clone())).collect();
    let replicas = assign_replicas(&live, partition_count, replication_factor, start_index)?;
    let partitions = replicas.into_iter().map(|replicas| PartitionAssignment { leader: replicas[0], replicas }).collect();
    let configs = configs.iter().map(|(key, value)| TopicConfig { key: key.clone(), value: value.clone() }).collect();
    let create = CreateTopic { name: name.to_string(), partitions, configs, planned_at_version: state.metadata_version() };
    Ok(MetadataBatch { commands: vec![Command::CreateTopic(create).into()] })
}

/// The `CreatePartitions` batch growing `topic` to `partition_count`
/// partitions, placed like a new topic's (the new ones continue the rotation).
pub fn plan_create_partitions(state: &MetadataState, topic: &str, partition_count: u32, start_index: usize) -> Result<MetadataBatch, MetadataError> {
    let existing = state.topic(topic).ok_or_else(|| MetadataError::UnknownTopic(topic.to_string()))?;
    let current = u32::try_from(existing.partitions.len()).expect("partition counts are bounded");
    if partition_count <= current {
        return Err(MetadataError::InvalidPartitionGrowth { topic: topic.to_string(), current, requested: partition_count });
    }
    let replication_factor = u32::try_from(existing.partitions[0].replicas.len()).expect("replica counts are small");
    let live: Vec<(BrokerId, Option<String>)> = state.brokers().filter(|b| !b.fenced).map(|b| (b.broker_id, b.rack.clone())).collect();
    let replicas = assign_replicas(&live, partition_count, replication_factor, start_index)?;
    let partitions = replicas.into_iter().skip(current as usize).map(|replicas| PartitionAssignment { leader: replicas[0], replicas }).collect();
    let create = CreatePartitions { topic: topic.to_string(), partitions };
    Ok(MetadataBatch { commands: vec![Command::CreatePartitions(create).into()] })
}

/// The leader for `partition` if `unavailable` must not lead: the first
/// replica (preferred order) that is in the ISR, live, and not `unavailable`.
/// `None` when no ISR member qualifies: the partition goes offline rather than
/// electing an out-of-sync replica.
pub fn elect_leader(state: &MetadataState, partition: &Partition, unavailable: Option<BrokerId>) -> Option<BrokerId> {
    partition.replicas.iter().copied().find(|id| Some(*id) != unavailable && partition.isr.contains(id) && state.is_live(*id))
}

/// Fencing a broker (its registration lease expired), atomically with every
/// partition change it forces: it leaves every ISR it is in (unless it is the
/// last member, which keeps the partition recoverable when it returns), and
/// partitions it led move to another ISR member with a new leader epoch.
pub fn plan_fence_broker(state: &MetadataState, broker_id: BrokerId) -> Result<MetadataBatch, MetadataError> {
    if state.broker(broker_id).is_none() {
        return Err(MetadataError::UnknownBroker(broker_id));
    }
    let mut commands = vec![Command::FenceBroker(FenceBroker { broker_id }).into()];
    for topic in state.topics() {
        for (index, partition) in topic.partitions.iter().enumerate() {
            if !partition.isr.contains(&broker_id) {
                continue;
            }
            let isr: Vec<BrokerId> =
                if partition.isr.len() > 1 { partition.isr.iter().copied().filter(|id| *id != broker_id).collect() } else { partition.isr.clone() };
            let leader = if partition.leader == Some(broker_id) {
                elect_leader(state, &Partition { isr: isr.clone(), ..partition.clone() }, Some(broker_id))
            } else {
                partition.leader
            };
            commands.push(
                Command::ChangePartition(ChangePartition {
                    topic: topic.name.clone(),
                    partition: u32::try_from(index).expect("partition index fits u32"),
                    expected_partition_epoch: partition.partition_epoch,
                    leader,
                    isr,
                })
                .into(),
            );
        }
    }
    Ok(MetadataBatch { commands })
}

/// Leaders for partitions that have none (every ISR member was fenced) once
/// an ISR member is live again; `None` when there is nothing to elect.
pub fn plan_elect_offline_leaders(state: &MetadataState) -> Option<MetadataBatch> {
    let mut commands = Vec::new();
    for topic in state.topics() {
        for (index, partition) in topic.partitions.iter().enumerate() {
            if partition.leader.is_some() {
                continue;
            }
            if let Some(leader) = elect_leader(state, partition, None) {
                commands.push(
                    Command::ChangePartition(ChangePartition {
                        topic: topic.name.clone(),
                        partition: u32::try_from(index).expect("partition index fits u32"),
                        expected_partition_epoch: partition.partition_epoch,
                        leader: Some(leader),
                        isr: partition.isr.clone(),
                    })
                    .into(),
                );
            }
        }
    }
    (!commands.is_empty()).then_some(MetadataBatch { commands })
}
