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
//!
//! With idempotent producers (`[data] idempotent = true`, Kafka clients),
//! `no-duplicates` too: online, no value of an idempotent producer is
//! committed (acknowledged or read) at two offsets; at the end, every value
//! such a producer sent is in the converged log at most once and every
//! acknowledged one exactly once, stamped with the producer id, epoch and
//! sequence it was sent with, and each producer id's records in a partition
//! carry the sequences 0, 1, 2, ... in offset order. `idempotent-sequence`:
//! such a producer, retrying only its latest batch, is never refused with
//! OUT_OF_ORDER_SEQUENCE_NUMBER or INVALID_PRODUCER_EPOCH.

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
    pub const NO_DUPLICATES: &str = "no-duplicates";
    pub const IDEMPOTENT_SEQUENCE: &str = "idempotent-sequence";
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

/// Who sent one record of an idempotent producer (its value is unique).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdempotentRecord {
    pub partition: u32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub sequence: i32,
}

/// One acknowledged batch of an idempotent producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdempotentAck {
    pub partition: u32,
    pub base_offset: u64,
    /// Produce requests sent for this batch, the acknowledged one included.
    pub attempts: u32,
    /// The leader epoch the client's metadata gave the broker that acknowledged it.
    pub leader_epoch: i32,
}

/// What the Kafka clients did, for the summary.
#[derive(Debug, Default)]
pub struct KafkaStats {
    /// Producer ids handed out by InitProducerId.
    pub producer_ids: u64,
    /// Batches sent more than once.
    pub batches_retried: u64,
    /// Retries after an attempt the broker may have appended (a request
    /// timeout, a lost connection, REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS_AFTER_APPEND).
    pub retries_after_maybe_appended: u64,
    /// Batches given up after `client_timeout_ms` (the producer then takes a new id).
    pub batches_given_up: u64,
    pub acks: Vec<IdempotentAck>,
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
    /// Every value an idempotent producer sent, and who sent it.
    idempotent: BTreeMap<Vec<u8>, IdempotentRecord>,
    /// Where each of those values was first committed (acknowledged or read).
    idempotent_at: BTreeMap<Vec<u8>, (u32, u64)>,
    pub kafka: KafkaStats,
    /// Simulated time from each acknowledged batch's first send to its acknowledgement.
    pub produce_latency: crate::summary::ProduceLatency,
}

impl DataHistory {
    /// Partition -> every offset known committed (acknowledged with acks=all or read below the high watermark).
    pub fn committed_offsets(&self) -> BTreeMap<u32, std::collections::BTreeSet<u64>> {
        let mut out: BTreeMap<u32, std::collections::BTreeSet<u64>> = BTreeMap::new();
        for (partition, offset) in self.committed.keys() {
            out.entry(*partition).or_default().insert(*offset);
        }
        out
    }

    /// An idempotent producer is about to send `values` as one batch
    /// (before its first attempt, so every copy in any log is known).
    pub fn idempotent_batch(&mut self, partition: u32, producer_id: i64, producer_epoch: i16, base_sequence: i32, values: &[Vec<u8>]) {
        for (index, value) in values.iter().enumerate() {
            let sequence = base_sequence + i32::try_from(index).expect("small batches");
            let record = IdempotentRecord { partition, producer_id, producer_epoch, sequence };
            let earlier = self.idempotent.insert(value.clone(), record);
            assert!(earlier.is_none(), "the workload sends each value once: `{}` again", shown(value));
        }
    }

    /// `value` of an idempotent producer is committed at `offset`: it must
    /// never be committed at another one.
    fn committed_once(&mut self, partition: u32, offset: u64, value: &[u8]) -> Result<(), DataViolation> {
        let Some(sent) = self.idempotent.get(value) else { return Ok(()) };
        match self.idempotent_at.get(value) {
            None => {
                self.idempotent_at.insert(value.to_vec(), (partition, offset));
                Ok(())
            }
            Some(first) if *first == (partition, offset) => Ok(()),
            Some((first_partition, first_offset)) => violation(
                checker::NO_DUPLICATES,
                format!(
                    "`{}` (producer {} sequence {}) is committed at partition {first_partition} offset {first_offset} and at partition {partition} offset {offset}",
                    shown(value),
                    sent.producer_id,
                    sent.sequence
                ),
            ),
        }
    }

    fn commit(&mut self, partition: u32, offset: u64, value: &[u8], witness: Witness) -> Result<(), DataViolation> {
        self.committed_once(partition, offset, value)?;
        match self.committed.get(&(partition, offset)) {
            None => {
                self.committed.insert((partition, offset), (value.to_vec(), witness));
                Ok(())
            }
            Some((known, _)) if known.as_slice() == value => Ok(()),
            Some((known, first)) => violation(
                checker::INCONSISTENT_OFFSETS,
                format!("partition {partition} offset {offset}: {first:?} saw `{}`, {witness:?} saw `{}`", shown(known), shown(value)),
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
                    format!(
                        "consumer {consumer} at partition {partition} position {position}: record {index} has offset {}, expected {expected}",
                        record.offset
                    ),
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

    /// An idempotent producer's latest batch was refused by `broker` with
    /// `error_code` (OUT_OF_ORDER_SEQUENCE_NUMBER or INVALID_PRODUCER_EPOCH).
    /// OUT_OF_ORDER_SEQUENCE_NUMBER is what Kafka
    /// answers from a leader deposed without knowing it yet (its metadata is
    /// behind, so it still takes produces): its log lacks the batches the
    /// producer had acknowledged by the newer leader, and nothing is appended.
    /// So it is allowed from a broker when another broker has led the
    /// partition in a newer leader epoch than any this broker led (the
    /// producer then refreshes its metadata and retries); from the
    /// partition's newest leader it is a violation. INVALID_PRODUCER_EPOCH
    /// always is (see `kafka_world`).
    #[allow(clippy::too_many_arguments)]
    pub fn sequence_refused(
        &mut self,
        who: &str,
        topic: &str,
        partition: u32,
        broker: u64,
        producer_id: i64,
        base_sequence: i32,
        error_code: i16,
        message: &str,
    ) -> Result<(), DataViolation> {
        let epochs = self.leaders.range((topic.to_string(), partition, 0)..=(topic.to_string(), partition, u32::MAX));
        let newest_led_by_broker = epochs.clone().filter(|(_, leader)| **leader == broker).map(|((_, _, epoch), _)| *epoch).max();
        let newest = epochs.map(|((_, _, epoch), leader)| (*epoch, *leader)).max();
        let deposed = match (newest_led_by_broker, newest) {
            (Some(led), Some((newest_epoch, newest_leader))) => newest_leader != broker && newest_epoch > led,
            _ => false,
        };
        if error_code == keel_error_codes::OUT_OF_ORDER_SEQUENCE_NUMBER && deposed {
            return Ok(());
        }
        violation(
            checker::IDEMPOTENT_SEQUENCE,
            format!(
                "{who}: producer {producer_id} batch at sequence {base_sequence} to partition {partition} refused by broker {broker} (newest leader epoch it led: {newest_led_by_broker:?}; the partition's newest epoch and leader: {newest:?}) with error {error_code} ({message}); it only ever retries its latest batch"
            ),
        )
    }

    pub fn became_leader(&mut self, node_id: u64, topic: &str, partition: u32, leader_epoch: u32) -> Result<(), DataViolation> {
        match self.leaders.get(&(topic.to_string(), partition, leader_epoch)) {
            None => {
                self.leaders.insert((topic.to_string(), partition, leader_epoch), node_id);
                Ok(())
            }
            Some(other) if *other == node_id => Ok(()),
            Some(other) => {
                violation(checker::ONE_LEADER_PER_EPOCH, format!("brokers {other} and {node_id} both led {topic}-{partition} in leader epoch {leader_epoch}"))
            }
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
                None => {
                    return violation(
                        checker,
                        format!("partition {partition} offset {offset}: {witness:?} saw `{}`, the converged log ends before it", shown(value)),
                    )
                }
            }
        }
        Ok(())
    }
}

impl DataHistory {
    /// After convergence, over `logs` as `check_final` takes them (with the
    /// Kafka values): every value an idempotent producer sent is in its
    /// partition's log at most once (and `check_final` found every
    /// acknowledged one at its offset: so exactly once),
    /// with the stamp it was sent with, and each producer id's sequences
    /// in a partition run 0, 1, 2, ... in offset order (one batch in flight
    /// and retries of only the latest batch, so the log can hold nothing else).
    pub fn check_no_duplicates(&self, logs: &BTreeMap<u32, BTreeMap<u64, Vec<ReadRecord>>>) -> Result<(), DataViolation> {
        let mut found: BTreeMap<&[u8], u64> = BTreeMap::new();
        for (partition, replicas) in logs {
            let Some(log) = replicas.values().next() else { continue };
            let mut next_sequence: BTreeMap<(i64, i16), i32> = BTreeMap::new();
            for record in log {
                let Some(sent) = self.idempotent.get(&record.value) else { continue };
                let value = shown(&record.value);
                if let Some(offset) = found.get(record.value.as_slice()) {
                    return violation(
                        checker::NO_DUPLICATES,
                        format!(
                            "`{value}` (producer {} sequence {}) is in the converged log of partition {partition} twice: offsets {offset} and {}",
                            sent.producer_id, sent.sequence, record.offset
                        ),
                    );
                }
                found.insert(&record.value, record.offset);
                if sent.partition != *partition {
                    return violation(checker::NO_DUPLICATES, format!("`{value}` was sent to partition {} and is in partition {partition}", sent.partition));
                }
                let stamp = &record.stamp;
                if (stamp.producer_id, stamp.producer_epoch, stamp.sequence) != (sent.producer_id, sent.producer_epoch, sent.sequence) {
                    return violation(
                        checker::NO_DUPLICATES,
                        format!(
                            "partition {partition} offset {}: `{value}` was sent as producer {} epoch {} sequence {}, the log stamps it producer {} epoch {} sequence {}",
                            record.offset, sent.producer_id, sent.producer_epoch, sent.sequence, stamp.producer_id, stamp.producer_epoch, stamp.sequence
                        ),
                    );
                }
                let expected = next_sequence.entry((sent.producer_id, sent.producer_epoch)).or_insert(0);
                if sent.sequence != *expected {
                    return violation(
                        checker::NO_DUPLICATES,
                        format!(
                            "partition {partition} offset {}: producer {} has sequence {} where {} comes next (its records must be in sequence order, each once)",
                            record.offset, sent.producer_id, sent.sequence, expected
                        ),
                    );
                }
                *expected += 1;
            }
        }
        // Acknowledged values are in the log at their offsets (`check_final`),
        // so with the above each is there exactly once.
        Ok(())
    }

    /// Of the acknowledged batches sent more than once, how many were
    /// answered from an earlier attempt's append: their records in the
    /// converged log were written in an older leader epoch than the one of
    /// the broker that acknowledged them (a lower bound: a retry answered
    /// as a duplicate by the leader that appended the first attempt is not
    /// counted).
    pub fn duplicates_answered(&self, logs: &BTreeMap<u32, BTreeMap<u64, Vec<ReadRecord>>>) -> u64 {
        let written_epoch = |partition: u32, offset: u64| -> Option<u32> {
            let log = logs.get(&partition)?.values().next()?;
            log.get(usize::try_from(offset).ok()?).map(|record| record.leader_epoch)
        };
        let older = |ack: &&IdempotentAck| match (written_epoch(ack.partition, ack.base_offset), u32::try_from(ack.leader_epoch)) {
            (Some(written), Ok(acknowledged)) => written < acknowledged,
            _ => false,
        };
        self.kafka.acks.iter().filter(|ack| ack.attempts > 1).filter(older).count() as u64
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

    fn stamped(offset: u64, value: &str, producer_id: i64, sequence: i32) -> ReadRecord {
        let stamp = keel_repl::RecordStamp { producer_id, producer_epoch: 0, sequence, last_sequence: sequence };
        ReadRecord { stamp, ..record(offset, value) }
    }

    fn idempotent_history() -> DataHistory {
        let mut history = DataHistory::default();
        history.idempotent_batch(0, 7, 0, 0, &[b"a".to_vec(), b"b".to_vec()]);
        history.idempotent_batch(0, 7, 0, 2, &[b"c".to_vec()]);
        history
    }

    #[test]
    fn an_idempotent_value_committed_at_two_offsets_is_a_duplicate() {
        let mut history = idempotent_history();
        history.acked_all(0, 0, &[b"a".to_vec(), b"b".to_vec()]).expect("first ack");
        let again = [record(2, "a")];
        assert_eq!(history.consumer_read(1, 0, 2, &again, 3).unwrap_err().checker, checker::NO_DUPLICATES);
    }

    #[test]
    fn the_converged_log_holds_each_idempotent_record_once_in_sequence_order() {
        let history = idempotent_history();
        let once = vec![stamped(0, "a", 7, 0), stamped(1, "b", 7, 1), record(2, "other"), stamped(3, "c", 7, 2)];
        assert_eq!(history.check_no_duplicates(&logs(&[(1, once.clone()), (2, once)])), Ok(()));
        let twice = vec![stamped(0, "a", 7, 0), stamped(1, "b", 7, 1), stamped(2, "a", 7, 0)];
        assert_eq!(history.check_no_duplicates(&logs(&[(1, twice)])).unwrap_err().checker, checker::NO_DUPLICATES);
        let reordered = vec![stamped(0, "a", 7, 0), stamped(1, "c", 7, 2), stamped(2, "b", 7, 1)];
        assert_eq!(history.check_no_duplicates(&logs(&[(1, reordered)])).unwrap_err().checker, checker::NO_DUPLICATES);
        let restamped = vec![stamped(0, "a", 8, 0)];
        assert_eq!(history.check_no_duplicates(&logs(&[(1, restamped)])).unwrap_err().checker, checker::NO_DUPLICATES);
    }

    #[test]
    fn a_sequence_refusal_is_a_violation_unless_a_deposed_leader_answers_out_of_order() {
        let mut history = DataHistory::default();
        assert_eq!(history.sequence_refused("k1", "t", 0, 1, 7, 3, 45, "gap").unwrap_err().checker, checker::IDEMPOTENT_SEQUENCE, "no leader known");
        history.became_leader(1, "t", 0, 4).expect("first leader");
        assert_eq!(history.sequence_refused("k1", "t", 0, 1, 7, 3, 45, "gap").unwrap_err().checker, checker::IDEMPOTENT_SEQUENCE, "the newest leader");
        // Broker 2 leads epoch 5 and acknowledges the producer's batch at
        // sequences 3..=5; broker 1, its metadata behind, still takes
        // produces in epoch 4 and lacks that batch: sequence 6 is out of order there.
        history.became_leader(2, "t", 0, 5).expect("new leader");
        assert_eq!(history.sequence_refused("k1", "t", 0, 1, 7, 6, 45, "expects 3"), Ok(()), "a deposed leader");
        assert_eq!(history.sequence_refused("k1", "t", 0, 2, 7, 6, 45, "gap").unwrap_err().checker, checker::IDEMPOTENT_SEQUENCE, "the newest leader");
        assert_eq!(history.sequence_refused("k1", "t", 0, 1, 7, 6, 47, "fenced").unwrap_err().checker, checker::IDEMPOTENT_SEQUENCE, "an epoch refusal");
        assert_eq!(history.sequence_refused("k1", "t", 1, 1, 7, 6, 45, "gap").unwrap_err().checker, checker::IDEMPOTENT_SEQUENCE, "another partition");
        assert_eq!(history.sequence_refused("k1", "t", 0, 3, 7, 6, 45, "gap").unwrap_err().checker, checker::IDEMPOTENT_SEQUENCE, "a broker that never led");
        // Broker 1 leads again in epoch 6: now its refusal is a violation.
        history.became_leader(1, "t", 0, 6).expect("leader again");
        assert_eq!(history.sequence_refused("k1", "t", 0, 1, 7, 6, 45, "gap").unwrap_err().checker, checker::IDEMPOTENT_SEQUENCE, "leads the newest epoch");
        assert_eq!(history.sequence_refused("k1", "t", 0, 2, 7, 6, 45, "expects 3"), Ok(()), "broker 2 is deposed in turn");
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
