//! Operators' log of what each metadata update changed in the partitions
//! this broker holds a replica of: a new leader (or leader epoch) and a new
//! ISR, at info, one line per partition and change.

use keel_meta::state::Partition;
use keel_meta::MetadataState;

use crate::BrokerId;

/// The message for a partition that went from `before` to `after`, or None
/// when neither its leadership nor its ISR changed.
pub(super) fn change_message(before: &Partition, after: &Partition) -> Option<&'static str> {
    let leadership_changed = before.leader != after.leader || before.leader_epoch != after.leader_epoch;
    let isr_changed = before.isr != after.isr;
    match (leadership_changed, isr_changed) {
        (true, true) => Some("partition leader and ISR changed"),
        (true, false) => Some("partition leader changed"),
        (false, true) => Some("partition ISR changed"),
        (false, false) => None,
    }
}

/// Logs every partition with a replica on `me` (before or after) whose leader
/// or ISR differs between the two metadata states. A topic new in `after`
/// (or re-created under another id) is not a change: its creation is logged
/// where it is created.
pub(super) fn log_partition_changes(me: BrokerId, before: &MetadataState, after: &MetadataState) {
    for topic in after.topics() {
        let Some(earlier) = before.topic(&topic.name).filter(|earlier| earlier.topic_id == topic.topic_id) else { continue };
        for (index, (old, new)) in earlier.partitions.iter().zip(&topic.partitions).enumerate() {
            if !old.replicas.contains(&me) && !new.replicas.contains(&me) {
                continue;
            }
            let Some(message) = change_message(old, new) else { continue };
            tracing::info!(
                node_id = me,
                topic = %topic.name,
                partition = index,
                leader_before = ?old.leader,
                leader = ?new.leader,
                leader_epoch = new.leader_epoch,
                isr_before = ?old.isr,
                isr = ?new.isr,
                partition_epoch = new.partition_epoch,
                "{message}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(leader: Option<BrokerId>, leader_epoch: u64, isr: &[BrokerId]) -> Partition {
        Partition { replicas: vec![1, 2, 3], leader, leader_epoch, partition_epoch: 0, isr: isr.to_vec() }
    }

    #[test]
    fn a_new_leader_a_new_leader_epoch_and_a_new_isr_are_each_named_and_nothing_else_is_logged() {
        let before = partition(Some(1), 4, &[1, 2, 3]);
        assert_eq!(change_message(&before, &before), None);
        let moved_epoch_only = Partition { partition_epoch: 9, ..before.clone() };
        assert_eq!(change_message(&before, &moved_epoch_only), None, "a partition epoch alone is not a leader or ISR change");
        assert_eq!(change_message(&before, &partition(Some(2), 5, &[1, 2, 3])), Some("partition leader changed"));
        assert_eq!(change_message(&before, &partition(Some(1), 5, &[1, 2, 3])), Some("partition leader changed"), "re-elected in a new epoch");
        assert_eq!(change_message(&before, &partition(None, 5, &[1, 2, 3])), Some("partition leader changed"), "no leader");
        assert_eq!(change_message(&before, &partition(Some(1), 4, &[1, 3])), Some("partition ISR changed"), "shrank");
        assert_eq!(change_message(&partition(Some(1), 4, &[1]), &before), Some("partition ISR changed"), "grew");
        assert_eq!(change_message(&before, &partition(Some(2), 5, &[2, 3])), Some("partition leader and ISR changed"));
    }
}
