//! How a record sits in a partition log, and the produce batch checksum.
//!
//! One keel-log record per Kafka record (the log offset is the Kafka offset):
//! `leader_epoch u32 LE | crc32c(value) u32 LE | value`. The leader epoch
//! rebuilds the epoch cache when a log is opened; the value checksum travels
//! with the record from the produce request to every replica and every read,
//! so a record is checked before it is written and after it is read on each
//! broker, independently of the log's own frame checksums.

use crate::error::ReplError;

pub const STORED_HEADER_BYTES: usize = 8;

pub fn encode_stored(leader_epoch: u32, value: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(STORED_HEADER_BYTES + value.len());
    payload.extend_from_slice(&leader_epoch.to_le_bytes());
    payload.extend_from_slice(&crc32c::crc32c(value).to_le_bytes());
    payload.extend_from_slice(value);
    payload
}

/// A stored record's leader epoch and value, checksum verified.
pub fn decode_stored(payload: &[u8]) -> Result<(u32, &[u8]), ReplError> {
    let corrupt = |reason: &str| ReplError::CorruptMessage { reason: reason.to_string() };
    if payload.len() < STORED_HEADER_BYTES {
        return Err(corrupt("stored record shorter than its header"));
    }
    let leader_epoch = u32::from_le_bytes(payload[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(payload[4..8].try_into().expect("4 bytes"));
    let value = &payload[STORED_HEADER_BYTES..];
    if crc32c::crc32c(value) != crc {
        return Err(corrupt("stored record fails its checksum"));
    }
    Ok((leader_epoch, value))
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
        let mut payload = encode_stored(7, b"hello");
        assert_eq!(decode_stored(&payload).expect("valid"), (7, &b"hello"[..]));
        payload[9] ^= 0x10;
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
