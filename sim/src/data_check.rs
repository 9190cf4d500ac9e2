//! The partition data checkers (Jepsen's Kafka checks, exact here because
//! the simulator sees every acknowledgement, every read and every replica).
//!
//! Online: a consumer's reads continue its position without gaps or
//! repeats, stay below the high watermark the replica reported, and agree
//! with every earlier read and acknowledgement of the same offset; one
//! broker leads a partition per leader epoch. At the end, after the heal and
//! convergence: every replica of a partition holds the same records, every
//! acks=all acknowledgement is in that log at its offset, and every read
//! matches it.

use std::collections::BTreeMap;

use keel_repl::driver::ReadRecord;

/// Names of the data checkers, as failures report them.
pub mod checker {
    pub const LOST_WRITE: &str = "lost-write";
    pub const INCONSISTENT_OFFSETS: &str = "inconsistent-offsets";
    pub const NON_MONOTONIC_READ: &str = "non-monotonic-read";
    pub const READ_ABOVE_HIGH_WATERMARK: &str = "read-above-high-watermark";
    pub const REPLICA_DIVERGENCE: &str = "replica-divergence";
    pub const ONE_LEADER_PER_EPOCH: &str = "one-leader-per-epoch";
    pub const DATA_CONVERGENCE: &str = "data-convergence";
    pub const DATA_LIVENESS: &str = "data-liveness";
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataViolation {
    pub checker: &'static str,
    pub message: String,
}

fn violation(checker: &'static str, message: String) -> Result<(), DataViolation> {
    Err(DataViolation { checker, message })
}

/// A record value for messages: its text, shortened.
pub fn shown(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    let trimmed = text.trim_end_matches('.');
    trimmed.chars().take(40).collect()
}

/// Who said a value is at an offset.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Witness {
    AcksAll,
    Read { consumer: u64 },
}

#[derive(Debug, Default)]
pub struct DataHistory {
    /// (partition, offset) -> value and who reported it first (an acks=all
    /// acknowledgement or a read below the high watermark: both committed).
    committed: BTreeMap<(u32, u64), (Vec<u8>, Witness)>,
    /// (topic, partition, leader epoch) -> the broker that led it.
    leaders: BTreeMap<(String, u32, u32), u64>,
    pub acks_all_acknowledged: u64,
    pub acks_leader_acknowledged: u64,
    pub produce_errors: BTreeMap<i16, u64>,
    pub records_read: u64,
}

impl DataHistory {
    fn commit(&mut self, partition: u32, offset: u64, value: &[u8], witness: Witness) -> Result<(), DataViolation> {
        match self.committed.get(&(partition, offset)) {
            None => {
                self.committed.insert((partition, offset), (value.to_vec(), witness));
                Ok(())
            }
            Some((known, _)) if known.as_slice() == value => Ok(()),
            Some((known, first)) => violation(
                checker::INCONSISTENT_OFFSETS,
                format!(
                    "partition {partition} offset {offset}: {first:?} saw `{}`, {witness:?} saw `{}`",
                    shown(known),
                    shown(value)
                ),
            ),
        }
    }

    /// An acks=all produce of `values` was acknowledged at `base_offset`.
    pub fn acked_all(&mut self, partition: u32, base_offset: u64, values: &[Vec<u8>]) -> Result<(), DataViolation> {
        self.acks_all_acknowledged += 1;
        for (index, value) in values.iter().enumerate() {
            self.commit(partition, base_offset + index as u64, value, Witness::AcksAll)?;
        }
        Ok(())
    }

    /// A consumer at `position` read `records` from a replica that reported `high_watermark`.
    pub fn consumer_read(&mut self, consumer: u64, partition: u32, position: u64, records: &[ReadRecord], high_watermark: u64) -> Result<(), DataViolation> {
        for (index, record) in records.iter().enumerate() {
            let expected = position + index as u64;
            if record.offset != expected {
                return violation(
                    checker::NON_MONOTONIC_READ,
                    format!("consumer {consumer} at partition {partition} position {position}: record {index} has offset {}, expected {expected}", record.offset),
                );
            }
            if record.offset >= high_watermark {
                return violation(
                    checker::READ_ABOVE_HIGH_WATERMARK,
                    format!("consumer {consumer} read partition {partition} offset {} at or above the high watermark {high_watermark}", record.offset),
                );
            }
            self.records_read += 1;
            self.commit(partition, record.offset, &record.value, Witness::Read { consumer })?;
        }
        Ok(())
    }

    pub fn became_leader(&mut self, node_id: u64, topic: &str, partition: u32, leader_epoch: u32) -> Result<(), DataViolation> {
        match self.leaders.get(&(topic.to_string(), partition, leader_epoch)) {
            None => {
                self.leaders.insert((topic.to_string(), partition, leader_epoch), node_id);
                Ok(())
            }
            Some(other) if *other == node_id => Ok(()),
            Some(other) => violation(
                checker::ONE_LEADER_PER_EPOCH,
                format!("brokers {other} and {node_id} both led {topic}-{partition} in leader epoch {leader_epoch}"),
            ),
        }
    }

    /// After convergence: `logs[partition][broker]` is each replica's whole log.
    pub fn check_final(&self, logs: &BTreeMap<u32, BTreeMap<u64, Vec<ReadRecord>>>) -> Result<(), DataViolation> {
        for (partition, replicas) in logs {
            let mut replicas = replicas.iter();
            let Some((first_broker, first_log)) = replicas.next() else { continue };
            for (broker, log) in replicas {
                if log.len() != first_log.len() {
                    return violation(
                        checker::REPLICA_DIVERGENCE,
                        format!("partition {partition}: broker {first_broker} has {} records, broker {broker} has {}", first_log.len(), log.len()),
                    );
                }
                if let Some((a, b)) = first_log.iter().zip(log).find(|(a, b)| a != b) {
                    return violation(
                        checker::REPLICA_DIVERGENCE,
                        format!(
                            "partition {partition} offset {}: broker {first_broker} has `{}` (epoch {}), broker {broker} has `{}` (epoch {})",
                            a.offset,
                            shown(&a.value),
                            a.leader_epoch,
                            shown(&b.value),
                            b.leader_epoch
                        ),
                    );
                }
            }
        }
        for ((partition, offset), (value, witness)) in &self.committed {
            let final_log = logs.get(partition).and_then(|replicas| replicas.values().next());
            let found = final_log.and_then(|log| log.get(*offset as usize));
            let checker = if *witness == Witness::AcksAll { checker::LOST_WRITE } else { checker::INCONSISTENT_OFFSETS };
            match found {
                Some(record) if record.value == *value => {}
                Some(record) => {
                    return violation(
                        checker,
                        format!("partition {partition} offset {offset}: {witness:?} saw `{}`, the converged log has `{}`", shown(value), shown(&record.value)),
                    )
                }
                None => return violation(checker, format!("partition {partition} offset {offset}: {witness:?} saw `{}`, the converged log ends before it", shown(value))),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: u64, value: &str) -> ReadRecord {
        ReadRecord { offset, leader_epoch: 1, stamp: keel_repl::RecordStamp::NONE, value: value.as_bytes().to_vec() }
    }

    fn logs(replicas: &[(u64, Vec<ReadRecord>)]) -> BTreeMap<u32, BTreeMap<u64, Vec<ReadRecord>>> {
        BTreeMap::from([(0, replicas.iter().cloned().collect())])
    }

    #[test]
    fn an_acknowledged_record_missing_from_the_converged_log_is_a_lost_write() {
        let mut history = DataHistory::default();
        history.acked_all(0, 0, &[b"a".to_vec(), b"b".to_vec()]).expect("first ack");
        let truncated = logs(&[(1, vec![record(0, "a")]), (2, vec![record(0, "a")])]);
        assert_eq!(history.check_final(&truncated).unwrap_err().checker, checker::LOST_WRITE);
        let replaced = logs(&[(1, vec![record(0, "a"), record(1, "x")]), (2, vec![record(0, "a"), record(1, "x")])]);
        assert_eq!(history.check_final(&replaced).unwrap_err().checker, checker::LOST_WRITE);
        let kept = logs(&[(1, vec![record(0, "a"), record(1, "b")]), (2, vec![record(0, "a"), record(1, "b")])]);
        assert_eq!(history.check_final(&kept), Ok(()));
    }

    #[test]
    fn two_values_at_one_offset_are_inconsistent() {
        let mut history = DataHistory::default();
        history.acked_all(0, 5, &[b"a".to_vec()]).expect("ack");
        let read = [record(5, "b")];
        assert_eq!(history.consumer_read(1, 0, 5, &read, 6).unwrap_err().checker, checker::INCONSISTENT_OFFSETS);
    }

    #[test]
    fn reads_must_continue_the_position_and_stay_below_the_high_watermark() {
        let mut history = DataHistory::default();
        assert_eq!(history.consumer_read(1, 0, 3, &[record(4, "x")], 9).unwrap_err().checker, checker::NON_MONOTONIC_READ);
        assert_eq!(history.consumer_read(1, 0, 3, &[record(3, "x")], 3).unwrap_err().checker, checker::READ_ABOVE_HIGH_WATERMARK);
        assert_eq!(history.consumer_read(1, 0, 3, &[record(3, "x"), record(4, "y")], 5), Ok(()));
    }

    #[test]
    fn diverging_replicas_and_two_leaders_of_one_epoch_are_caught() {
        let history = DataHistory::default();
        let diverged = logs(&[(1, vec![record(0, "a")]), (2, vec![record(0, "b")])]);
        assert_eq!(history.check_final(&diverged).unwrap_err().checker, checker::REPLICA_DIVERGENCE);
        let shorter = logs(&[(1, vec![record(0, "a")]), (2, vec![])]);
        assert_eq!(history.check_final(&shorter).unwrap_err().checker, checker::REPLICA_DIVERGENCE);
        let mut history = DataHistory::default();
        history.became_leader(1, "t", 0, 4).expect("first");
        history.became_leader(1, "t", 0, 4).expect("same broker again");
        assert_eq!(history.became_leader(2, "t", 0, 4).unwrap_err().checker, checker::ONE_LEADER_PER_EPOCH);
    }
}
