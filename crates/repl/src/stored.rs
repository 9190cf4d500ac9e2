//! How a record sits in a partition log, and the produce batch checksum.
//!
//! One keel-log record per Kafka record (the log offset is the Kafka offset):
//! `leader_epoch u32 LE | crc32c(rest) u32 LE | producer_id i64 LE |
//! producer_epoch i16 LE | sequence i32 LE | batch last_sequence i32 LE |
//! value`. The leader epoch rebuilds the epoch cache when a log is opened and
//! the producer stamp rebuilds the idempotent producers' state. The checksum covers the stamp and
//! the value and travels with the record from the leader to every replica and
//! every read, so a record is checked before it is written and after it is
//! read on each broker, independently of the log's own frame checksums.

use crate::error::ReplError;
use crate::producers::RecordStamp;

pub const STORED_HEADER_BYTES: usize = 26;

/// A stored record, checksum verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredView<'a> {
    pub leader_epoch: u32,
    pub stamp: RecordStamp,
    pub value: &'a [u8],
}

pub fn encode_stored(leader_epoch: u32, stamp: &RecordStamp, value: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(STORED_HEADER_BYTES + value.len());
    payload.extend_from_slice(&leader_epoch.to_le_bytes());
    payload.extend_from_slice(&[0; 4]);
    payload.extend_from_slice(&stamp.producer_id.to_le_bytes());
    payload.extend_from_slice(&stamp.producer_epoch.to_le_bytes());
    payload.extend_from_slice(&stamp.sequence.to_le_bytes());
    payload.extend_from_slice(&stamp.last_sequence.to_le_bytes());
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
    let leader_epoch = u32::from_le_bytes(payload[0..4].try_into().expect("4 bytes"));
    Ok(StoredView { leader_epoch, stamp, value: &payload[STORED_HEADER_BYTES..] })
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
        let mut payload = encode_stored(7, &stamp, b"hello");
        assert_eq!(decode_stored(&payload).expect("valid"), StoredView { leader_epoch: 7, stamp, value: b"hello" });
        let mut stamp_flipped = payload.clone();
        stamp_flipped[12] ^= 0x01;
        assert_eq!(decode_stored(&stamp_flipped).unwrap_err().kafka_code(), 2);
        payload[STORED_HEADER_BYTES + 1] ^= 0x10;
        assert_eq!(decode_stored(&payload).unwrap_err().kafka_code(), 2);
        assert_eq!(decode_stored(&payload[..5]).unwrap_err().kafka_code(), 2);
    }

    #[test]
    fn the_batch_checksum_covers_record_boundaries() {
        let split_one_way = vec![b"ab".to_vec(), b"c".to_vec()];
        let split_another = vec![b"a".to_vec(), b"bc".to_vec()];
        assert_ne!(batch_crc(&split_one_way), batch_crc(&split_another));
    }
}
