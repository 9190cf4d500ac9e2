//! How a record sits in a partition log, and the produce batch checksum.
//!
//! One keel-log record per Kafka record (the log offset is the Kafka offset):
//! `leader_epoch u32 LE | crc32c(rest) u32 LE | producer_id i64 LE |
//! producer_epoch i16 LE | sequence i32 LE | batch last_sequence i32 LE |
//! batch_index u32 LE | batch_records u32 LE | value`. The leader epoch
//! rebuilds the epoch cache when a log is opened and the producer stamp
//! rebuilds the idempotent producers' state. The batch position (this
//! record's index in the produced batch, and the batch's record count) makes
//! batches atomic in the log for every record, idempotent or not: a reader
//! finds where each batch starts and ends, so a torn tail that holds only the
//! first records of a batch is recognised (and cut) instead of being taken
//! for the whole batch. The checksum covers everything after it and travels
//! with the record from the leader to every replica and every read, so a
//! record is checked before it is written and after it is read on each
//! broker, independently of the log's own frame checksums.

use crate::error::ReplError;
use crate::producers::RecordStamp;

pub const STORED_HEADER_BYTES: usize = 34;

/// Where a record sits in the batch it was produced in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPosition {
    pub index: u32,
    pub records: u32,
}

impl BatchPosition {
    /// The record at `index` of a batch of `records`.
    pub fn new(index: usize, records: usize) -> BatchPosition {
        assert!(index < records, "the record is in its batch");
        let records = u32::try_from(records).expect("a batch holds fewer than 2^32 records");
        BatchPosition { index: index as u32, records }
    }

    pub fn is_first(&self) -> bool {
        self.index == 0
    }

    /// The batch's last record: the batch ends after it.
    pub fn is_last(&self) -> bool {
        self.index + 1 == self.records
    }

    /// Does `next` (the record after this one in the log) continue this
    /// record's batch, or start the next batch after this one ended?
    pub fn is_followed_by(&self, next: &BatchPosition) -> bool {
        if self.is_last() {
            next.is_first()
        } else {
            next.records == self.records && next.index == self.index + 1
        }
    }
}

/// A stored record, checksum verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredView<'a> {
    pub leader_epoch: u32,
    pub stamp: RecordStamp,
    pub batch: BatchPosition,
    pub value: &'a [u8],
}

pub fn encode_stored(leader_epoch: u32, stamp: &RecordStamp, batch: BatchPosition, value: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(STORED_HEADER_BYTES + value.len());
    payload.extend_from_slice(&leader_epoch.to_le_bytes());
    payload.extend_from_slice(&[0; 4]);
    payload.extend_from_slice(&stamp.producer_id.to_le_bytes());
    payload.extend_from_slice(&stamp.producer_epoch.to_le_bytes());
    payload.extend_from_slice(&stamp.sequence.to_le_bytes());
    payload.extend_from_slice(&stamp.last_sequence.to_le_bytes());
    payload.extend_from_slice(&batch.index.to_le_bytes());
    payload.extend_from_slice(&batch.records.to_le_bytes());
    payload.extend_from_slice(value);
    let crc = crc32c::crc32c(&payload[8..]);
    payload[4..8].copy_from_slice(&crc.to_le_bytes());
    payload
}

pub fn decode_stored(payload: &[u8]) -> Result<StoredView<'_>, ReplError> {
    let corrupt = |reason: &str| ReplError::CorruptMessage { reason: reason.to_string() };
    if payload.len() < STORED_HEADER_BYTES {
        return Err(corrupt("stored record shorter than its header"));
    }
    let crc = u32::from_le_bytes(payload[4..8].try_into().expect("4 bytes"));
    if crc32c::crc32c(&payload[8..]) != crc {
        return Err(corrupt("stored record fails its checksum"));
    }
    let stamp = RecordStamp {
        producer_id: i64::from_le_bytes(payload[8..16].try_into().expect("8 bytes")),
        producer_epoch: i16::from_le_bytes(payload[16..18].try_into().expect("2 bytes")),
        sequence: i32::from_le_bytes(payload[18..22].try_into().expect("4 bytes")),
        last_sequence: i32::from_le_bytes(payload[22..26].try_into().expect("4 bytes")),
    };
    let batch = BatchPosition {
        index: u32::from_le_bytes(payload[26..30].try_into().expect("4 bytes")),
        records: u32::from_le_bytes(payload[30..34].try_into().expect("4 bytes")),
    };
    if batch.index >= batch.records {
        return Err(corrupt("stored record's batch position is outside its batch"));
    }
    if stamp.is_idempotent() && (stamp.sequence == stamp.last_sequence) != batch.is_last() {
        return Err(corrupt("stored record's sequence and batch position disagree on where its batch ends"));
    }
    let leader_epoch = u32::from_le_bytes(payload[0..4].try_into().expect("4 bytes"));
    Ok(StoredView { leader_epoch, stamp, batch, value: &payload[STORED_HEADER_BYTES..] })
}

/// The checksum a producer sends with a batch: CRC32C over each record's
/// length (u32 LE) and bytes, in order.
pub fn batch_crc(values: &[Vec<u8>]) -> u32 {
    let mut crc = 0u32;
    for value in values {
        let len = u32::try_from(value.len()).expect("a record is smaller than 4 GiB");
        crc = crc32c::crc32c_append(crc, &len.to_le_bytes());
        crc = crc32c::crc32c_append(crc, value);
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_record_round_trips_and_a_flipped_bit_is_caught() {
        let stamp = crate::producers::ProducerStamp::batch(3, 1, 40, 2).record(1);
        let batch = BatchPosition::new(1, 2);
        let mut payload = encode_stored(7, &stamp, batch, b"hello");
        assert_eq!(decode_stored(&payload).expect("valid"), StoredView { leader_epoch: 7, stamp, batch, value: b"hello" });
        let mut stamp_flipped = payload.clone();
        stamp_flipped[12] ^= 0x01;
        assert_eq!(decode_stored(&stamp_flipped).unwrap_err().kafka_code(), keel_error_codes::CORRUPT_MESSAGE);
        payload[STORED_HEADER_BYTES + 1] ^= 0x10;
        assert_eq!(decode_stored(&payload).unwrap_err().kafka_code(), keel_error_codes::CORRUPT_MESSAGE);
        assert_eq!(decode_stored(&payload[..5]).unwrap_err().kafka_code(), keel_error_codes::CORRUPT_MESSAGE);
    }

    #[test]
    fn a_batch_position_outside_its_batch_or_disagreeing_with_the_sequence_is_refused() {
        let none = RecordStamp::NONE;
        assert_eq!(
            decode_stored(&encode_stored(1, &none, BatchPosition { index: 2, records: 2 }, b"x")).unwrap_err().kafka_code(),
            keel_error_codes::CORRUPT_MESSAGE
        );
        let middle = crate::producers::ProducerStamp::batch(3, 1, 40, 3).record(1);
        assert_eq!(decode_stored(&encode_stored(1, &middle, BatchPosition::new(2, 3), b"x")).unwrap_err().kafka_code(), keel_error_codes::CORRUPT_MESSAGE);
        assert!(decode_stored(&encode_stored(1, &middle, BatchPosition::new(1, 3), b"x")).is_ok());
    }

    #[test]
    fn batch_positions_chain_within_a_batch_and_from_one_batch_to_the_next() {
        let (first, second, last) = (BatchPosition::new(0, 3), BatchPosition::new(1, 3), BatchPosition::new(2, 3));
        assert!(first.is_followed_by(&second));
        assert!(second.is_followed_by(&last));
        assert!(last.is_followed_by(&BatchPosition::new(0, 1)));
        assert!(!second.is_followed_by(&BatchPosition::new(0, 1)), "a batch cut after its second record");
        assert!(!first.is_followed_by(&BatchPosition::new(1, 4)), "records of another batch");
        assert!(!last.is_followed_by(&BatchPosition::new(1, 2)), "a batch without its first record");
    }

    #[test]
    fn the_batch_checksum_covers_record_boundaries() {
        let split_one_way = vec![b"ab".to_vec(), b"c".to_vec()];
        let split_another = vec![b"a".to_vec(), b"bc".to_vec()];
        assert_ne!(batch_crc(&split_one_way), batch_crc(&split_another));
    }
}
