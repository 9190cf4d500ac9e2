//! Idempotent producers: which batches each producer id has in a partition
//! log, so a retried batch is answered with its original offsets instead of
//! being appended twice, and a gap in the sequence is refused.
//!
//! The state is a function of the log: every replica rebuilds it from the
//! producer stamps stored with the records (when a log is opened, and after a
//! truncation) and extends it on every append, so a follower that becomes
//! leader already knows what the old leader accepted (Kafka's producer state,
//! without its snapshots: Keel's logs are scanned once when opened anyway).

use std::collections::{BTreeMap, VecDeque};

use crate::error::ReplError;

/// The producer id of a record written without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;

/// How many recent batches per producer are kept for duplicate detection.
/// Kafka's producers keep at most 5 requests in flight when idempotent, so a
/// retry is always one of the last 5 batches.
pub const RECENT_BATCHES_MAX: usize = 5;

/// What an idempotent batch says about itself (all its records share it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerStamp {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub last_sequence: i32,
}

impl ProducerStamp {
    /// The stamp of records written without a producer id.
    pub const NONE: ProducerStamp = ProducerStamp { producer_id: NO_PRODUCER_ID, producer_epoch: -1, base_sequence: -1, last_sequence: -1 };

    /// A batch of `record_count` records starting at `base_sequence`
    /// (sequences wrap from `i32::MAX` to 0, as Kafka's do).
    pub fn batch(producer_id: i64, producer_epoch: i16, base_sequence: i32, record_count: usize) -> ProducerStamp {
        assert!(producer_id >= 0, "an idempotent batch has a producer id");
        assert!(base_sequence >= 0, "sequences are not negative");
        assert!(record_count > 0, "a batch has records");
        let last_sequence = sequence_after(base_sequence, record_count as i64 - 1);
        ProducerStamp { producer_id, producer_epoch, base_sequence, last_sequence }
    }

    pub fn is_idempotent(&self) -> bool {
        self.producer_id != NO_PRODUCER_ID
    }

    /// How many records the batch has.
    pub fn record_count(&self) -> u64 {
        let span = i64::from(self.last_sequence) - i64::from(self.base_sequence);
        if span >= 0 {
            span as u64 + 1
        } else {
            (span + i64::from(i32::MAX) + 1) as u64 + 1
        }
    }
}

/// What a stored record says about its producer: the batch's producer id and
/// epoch, the record's own sequence and its batch's last sequence (so a batch
/// is recognised in the log without knowing where it started).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordStamp {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub sequence: i32,
    pub last_sequence: i32,
}

impl RecordStamp {
    /// The stamp of a record written without a producer id.
    pub const NONE: RecordStamp = RecordStamp { producer_id: NO_PRODUCER_ID, producer_epoch: -1, sequence: -1, last_sequence: -1 };

    pub fn is_idempotent(&self) -> bool {
        self.producer_id != NO_PRODUCER_ID
    }
}

impl ProducerStamp {
    /// The stamp of the batch's record at `index`.
    pub fn record(&self, index: usize) -> RecordStamp {
        if !self.is_idempotent() {
            return RecordStamp::NONE;
        }
        assert!((index as u64) < self.record_count(), "the record is in the batch");
        RecordStamp {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            sequence: sequence_after(self.base_sequence, index as i64),
            last_sequence: self.last_sequence,
        }
    }
}

/// `sequence` advanced by `steps`, wrapping past `i32::MAX` to 0.
pub fn sequence_after(sequence: i32, steps: i64) -> i32 {
    assert!(sequence >= 0, "sequences are not negative");
    assert!(steps >= 0, "sequences only advance");
    ((i64::from(sequence) + steps) % (i64::from(i32::MAX) + 1)) as i32
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BatchInLog {
    base_sequence: i32,
    last_sequence: i32,
    base_offset: u64,
    end_offset: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ProducerEntry {
    producer_epoch: i16,
    recent: VecDeque<BatchInLog>,
}

/// Whether a batch is appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Append,
    /// Already in the log at `[base_offset, end_offset)`: answer with these.
    Duplicate {
        base_offset: u64,
        end_offset: u64,
    },
}

/// The first records of a batch whose last record was not observed yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PartialBatch {
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    last_sequence: i32,
    base_offset: u64,
    end_offset: u64,
}

/// Every producer id's recent batches in one partition log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: BTreeMap<i64, ProducerEntry>,
    /// Only whole batches are in `producers`; this one is still being observed.
    partial: Option<PartialBatch>,
}

impl ProducerStates {
    pub fn new() -> Self {
        ProducerStates::default()
    }

    /// Kafka's rules for an incoming idempotent batch: an older producer
    /// epoch is fenced; a batch equal to a recent one is a duplicate; a new
    /// epoch starts at sequence 0; otherwise the batch continues the last
    /// sequence. A producer id this log has no batch of may start anywhere
    /// (its records may have been removed by retention).
    pub fn admit(&self, stamp: &ProducerStamp) -> Result<Admission, ReplError> {
        assert!(stamp.is_idempotent(), "only idempotent batches are admitted");
        assert!(self.partial.is_none(), "a leader's log ends with a whole batch");
        let Some(entry) = self.producers.get(&stamp.producer_id) else { return Ok(Admission::Append) };
        if stamp.producer_epoch < entry.producer_epoch {
            return Err(ReplError::InvalidProducerEpoch { producer_id: stamp.producer_id, requested: stamp.producer_epoch, current: entry.producer_epoch });
        }
        if stamp.producer_epoch > entry.producer_epoch {
            if stamp.base_sequence != 0 {
                return Err(ReplError::OutOfOrderSequence { producer_id: stamp.producer_id, expected: 0, received: stamp.base_sequence });
            }
            return Ok(Admission::Append);
        }
        if let Some(batch) = entry.recent.iter().find(|b| b.base_sequence == stamp.base_sequence && b.last_sequence == stamp.last_sequence) {
            return Ok(Admission::Duplicate { base_offset: batch.base_offset, end_offset: batch.end_offset });
        }
        let last = entry.recent.back().expect("an entry has a batch");
        let expected = sequence_after(last.last_sequence, 1);
        if stamp.base_sequence != expected {
            return Err(ReplError::OutOfOrderSequence { producer_id: stamp.producer_id, expected, received: stamp.base_sequence });
        }
        Ok(Admission::Append)
    }

    /// A batch was appended at `[base_offset, end_offset)`.
    pub fn appended(&mut self, stamp: &ProducerStamp, base_offset: u64, end_offset: u64) {
        assert!(stamp.is_idempotent(), "only idempotent batches are tracked");
        assert!(self.partial.is_none(), "a batch is appended only after the log's last batch is whole");
        assert_eq!(end_offset - base_offset, stamp.record_count(), "a batch's offsets and sequences have the same length");
        self.open_batch(stamp, base_offset, end_offset);
    }

    /// One stored record, in offset order (rebuilding from a log, or a
    /// follower appending fetched records). A batch is recorded only once its
    /// last record (sequence == the batch's last sequence) is seen: a prefix
    /// of a batch taken for the whole batch would answer the producer's retry
    /// as a duplicate with the prefix's offsets, and the rest of the batch
    /// would never be written. Batches are atomic in the log, so the records
    /// of a batch are contiguous and the next record after an unfinished
    /// batch can only be that batch's next record.
    pub fn observe_record(&mut self, offset: u64, stamp: &RecordStamp) {
        if let Some(partial) = &mut self.partial {
            assert!(stamp.is_idempotent(), "a batch is never followed by another record before its last record");
            assert_eq!(stamp.producer_id, partial.producer_id, "a batch's records share its producer id");
            assert_eq!(stamp.producer_epoch, partial.producer_epoch, "a batch's records share its producer epoch");
            assert_eq!(stamp.last_sequence, partial.last_sequence, "a batch's records share its last sequence");
            assert_eq!(offset, partial.end_offset, "a batch's records are contiguous in the log");
            assert_eq!(stamp.sequence, sequence_after(partial.base_sequence, (offset - partial.base_offset) as i64), "a batch's sequences follow its offsets");
            partial.end_offset = offset + 1;
        } else if stamp.is_idempotent() {
            self.partial = Some(PartialBatch {
                producer_id: stamp.producer_id,
                producer_epoch: stamp.producer_epoch,
                base_sequence: stamp.sequence,
                last_sequence: stamp.last_sequence,
                base_offset: offset,
                end_offset: offset + 1,
            });
        } else {
            return;
        }
        if stamp.sequence == stamp.last_sequence {
            let whole = self.partial.take().expect("set above");
            let batch = ProducerStamp {
                producer_id: whole.producer_id,
                producer_epoch: whole.producer_epoch,
                base_sequence: whole.base_sequence,
                last_sequence: whole.last_sequence,
            };
            assert_eq!(whole.end_offset - whole.base_offset, batch.record_count(), "a whole batch has one record per sequence");
            self.open_batch(&batch, whole.base_offset, whole.end_offset);
        }
    }

    /// Where the batch whose last record has not been observed yet starts
    /// (`None` when every observed batch is whole).
    pub fn unfinished_batch_offset(&self) -> Option<u64> {
        self.partial.as_ref().map(|partial| partial.base_offset)
    }

    fn open_batch(&mut self, stamp: &ProducerStamp, base_offset: u64, end_offset: u64) {
        let entry = self.producers.entry(stamp.producer_id).or_insert(ProducerEntry { producer_epoch: stamp.producer_epoch, recent: VecDeque::new() });
        assert!(stamp.producer_epoch >= entry.producer_epoch, "the log never goes back to an older producer epoch");
        if stamp.producer_epoch > entry.producer_epoch {
            entry.producer_epoch = stamp.producer_epoch;
            entry.recent.clear();
        }
        if let Some(last) = entry.recent.back() {
            assert!(last.end_offset <= base_offset, "batches are appended in offset order");
        }
        entry.recent.push_back(BatchInLog { base_sequence: stamp.base_sequence, last_sequence: stamp.last_sequence, base_offset, end_offset });
        while entry.recent.len() > RECENT_BATCHES_MAX {
            entry.recent.pop_front();
        }
    }

    /// How many producer ids have batches here.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(states: &mut ProducerStates, stamp: ProducerStamp, base_offset: u64) -> u64 {
        assert_eq!(states.admit(&stamp), Ok(Admission::Append));
        let end = base_offset + stamp.record_count();
        states.appended(&stamp, base_offset, end);
        end
    }

    #[test]
    fn a_retried_batch_is_a_duplicate_with_its_original_offsets() {
        let mut states = ProducerStates::new();
        let first = ProducerStamp::batch(7, 0, 0, 3);
        let end = append(&mut states, first, 10);
        append(&mut states, ProducerStamp::batch(7, 0, 3, 2), end);
        assert_eq!(states.admit(&first), Ok(Admission::Duplicate { base_offset: 10, end_offset: 13 }));
    }

    #[test]
    fn a_sequence_gap_is_out_of_order_and_an_older_epoch_is_fenced() {
        let mut states = ProducerStates::new();
        append(&mut states, ProducerStamp::batch(7, 2, 0, 3), 0);
        assert_eq!(states.admit(&ProducerStamp::batch(7, 2, 4, 1)).unwrap_err().kafka_code(), keel_error_codes::OUT_OF_ORDER_SEQUENCE_NUMBER);
        assert_eq!(states.admit(&ProducerStamp::batch(7, 1, 3, 1)).unwrap_err().kafka_code(), keel_error_codes::INVALID_PRODUCER_EPOCH);
        assert_eq!(states.admit(&ProducerStamp::batch(7, 3, 5, 1)).unwrap_err().kafka_code(), keel_error_codes::OUT_OF_ORDER_SEQUENCE_NUMBER);
        assert_eq!(states.admit(&ProducerStamp::batch(7, 3, 0, 1)), Ok(Admission::Append));
        assert_eq!(states.admit(&ProducerStamp::batch(7, 2, 3, 1)), Ok(Admission::Append));
    }

    #[test]
    fn an_unknown_producer_may_start_at_any_sequence() {
        let states = ProducerStates::new();
        assert_eq!(states.admit(&ProducerStamp::batch(9, 0, 42, 1)), Ok(Admission::Append));
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut states = ProducerStates::new();
        let mut offset = 0;
        for batch in 0..6 {
            offset = append(&mut states, ProducerStamp::batch(1, 0, batch, 1), offset);
        }
        assert_eq!(states.admit(&ProducerStamp::batch(1, 0, 1, 1)), Ok(Admission::Duplicate { base_offset: 1, end_offset: 2 }));
        assert_eq!(states.admit(&ProducerStamp::batch(1, 0, 0, 1)).unwrap_err().kafka_code(), keel_error_codes::OUT_OF_ORDER_SEQUENCE_NUMBER);
    }

    #[test]
    fn state_rebuilt_from_records_equals_state_built_from_appends() {
        let mut appended = ProducerStates::new();
        let mut rebuilt = ProducerStates::new();
        let batches = [ProducerStamp::batch(1, 0, 0, 3), ProducerStamp::batch(2, 0, 0, 1), ProducerStamp::batch(1, 0, 3, 2), ProducerStamp::batch(1, 1, 0, 2)];
        let mut offset = 0;
        for stamp in batches {
            rebuilt.observe_record(offset, &RecordStamp::NONE);
            offset += 1;
            let end = append(&mut appended, stamp, offset);
            for record in offset..end {
                rebuilt.observe_record(record, &stamp.record((record - offset) as usize));
            }
            offset = end;
        }
        assert_eq!(rebuilt, appended);
    }

    #[test]
    fn the_first_records_of_a_batch_are_not_taken_for_the_whole_batch() {
        // A torn write kept 2 of the batch's 5 records: its retry must be
        // appended whole, never answered as a duplicate at the prefix's offsets.
        let batch = ProducerStamp::batch(7, 0, 10, 5);
        let mut states = ProducerStates::new();
        states.observe_record(40, &batch.record(0));
        states.observe_record(41, &batch.record(1));
        assert_eq!(states.unfinished_batch_offset(), Some(40));
        let cut = states.clone();
        let mut states = ProducerStates::new();
        assert_eq!(cut.producers, states.producers, "an unfinished batch is not recorded");
        for (index, offset) in (40..45).enumerate() {
            states.observe_record(offset, &batch.record(index));
        }
        assert_eq!(states.unfinished_batch_offset(), None);
        assert_eq!(states.admit(&batch), Ok(Admission::Duplicate { base_offset: 40, end_offset: 45 }));
    }

    #[test]
    #[should_panic(expected = "a leader's log ends with a whole batch")]
    fn a_retry_is_never_answered_from_the_first_records_of_its_batch() {
        let batch = ProducerStamp::batch(7, 0, 10, 5);
        let mut states = ProducerStates::new();
        states.observe_record(40, &batch.record(0));
        states.observe_record(41, &batch.record(1));
        let _ = states.admit(&batch);
    }

    #[test]
    #[should_panic(expected = "a batch is never followed by another record before its last record")]
    fn a_batch_followed_by_another_record_before_its_last_is_a_bug() {
        let mut states = ProducerStates::new();
        states.observe_record(0, &ProducerStamp::batch(7, 0, 0, 3).record(0));
        states.observe_record(1, &RecordStamp::NONE);
    }

    #[test]
    #[should_panic(expected = "a batch's records share its last sequence")]
    fn a_batch_cut_and_followed_by_the_next_batch_of_its_producer_is_a_bug() {
        // What a leader's log held after a torn tail became the start of new
        // appends: records 0..2 of the batch at sequence 0, then sequence 3.
        let mut states = ProducerStates::new();
        let cut = ProducerStamp::batch(7, 0, 0, 3);
        states.observe_record(0, &cut.record(0));
        states.observe_record(1, &cut.record(1));
        states.observe_record(2, &ProducerStamp::batch(7, 0, 3, 1).record(0));
    }

    #[test]
    fn sequences_wrap_past_the_maximum() {
        assert_eq!(sequence_after(i32::MAX, 1), 0);
        let stamp = ProducerStamp::batch(1, 0, i32::MAX - 1, 4);
        assert_eq!(stamp.last_sequence, 1);
        assert_eq!(stamp.record_count(), 4);
        let mut states = ProducerStates::new();
        append(&mut states, stamp, 0);
        assert_eq!(states.admit(&ProducerStamp::batch(1, 0, 2, 1)), Ok(Admission::Append));
    }
}
