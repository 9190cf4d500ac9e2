//! Kafka record batches in and out of the partition log.
//!
//! The replication layer stores one log record per Kafka record (the log
//! offset is the Kafka offset). A produced batch is validated whole (magic 2,
//! CRC-32C, record count, no transactional or control batches) and each of
//! its records becomes one `StoredRecord`: timestamp, key, value and headers.
//! The producer's id, epoch and sequences travel beside it to the replication
//! layer, which stores them in its own record header (it checks and rebuilds
//! the idempotence state from them) and hands them back on reads. A fetch turns a run of stored records back into v2 batches
//! (uncompressed) with the Kafka offsets and the leader epoch that wrote them.
//!
//! Batches are not stored byte for byte as received: the log's offsets count
//! entries, and a batch spans several Kafka offsets. ARCHITECTURE.md says why
//! and what it costs (re-encoding on fetch, compression not kept).

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
};
use keel_repl::RecordStamp;
use prost::Message;

/// One Kafka record as the log keeps it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredRecord {
    #[prost(int64, tag = "1")]
    pub timestamp_ms: i64,
    // Tag 2 held the producer stamp, now in the replication layer's header.
    #[prost(bytes = "vec", optional, tag = "3")]
    pub key: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub value: Option<Vec<u8>>,
    #[prost(message, repeated, tag = "5")]
    pub headers: Vec<StoredHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredHeader {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub value: Option<Vec<u8>>,
}

/// Why a produced record set was refused, each with its Kafka error code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("CORRUPT_MESSAGE: {0}")]
    Corrupt(String),
    #[error("INVALID_RECORD: {0}")]
    Invalid(String),
    #[error("UNSUPPORTED_COMPRESSION_TYPE: {0}")]
    UnsupportedCompression(String),
}

impl BatchError {
    pub fn kafka_code(&self) -> i16 {
        match self {
            BatchError::Corrupt(_) => 2,
            BatchError::Invalid(_) => 87,
            BatchError::UnsupportedCompression(_) => 76,
        }
    }
}

/// The producer of a produced record set (all its batches must agree).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchProducer {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// The records of a produce request's record set, ready for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducedRecords {
    pub stored: Vec<Vec<u8>>,
    /// `None` for a producer without idempotence.
    pub producer: Option<BatchProducer>,
}

/// A record without a timestamp.
const NO_TIMESTAMP: i64 = -1;
/// Stored timestamps stay far from i64's ends: a fetch re-encodes records as
/// deltas from their batch's smallest timestamp, and kafka-protocol
/// subtracts unchecked (a panic under overflow checks).
const TIMESTAMP_MAX: i64 = i64::MAX / 2;

/// Positions in a v2 batch header.
const BATCH_LENGTH_OFFSET: usize = 8;
const MAGIC_OFFSET: usize = 16;
const FIRST_TIMESTAMP_OFFSET: usize = 27;
const RECORD_COUNT_OFFSET: usize = 57;
const BATCH_HEADER_BYTES: usize = 61;

/// Validates `record_set` (one or more v2 batches) and converts its records.
pub fn decode_produced(record_set: &Bytes, records_max: usize) -> Result<ProducedRecords, BatchError> {
    check_batch_framing(record_set, records_max)?;
    let mut input = record_set.clone();
    let mut record_sets = Vec::new();
    while !input.is_empty() {
        // Our decompression step checks what the decoder would reserve or
        // overflow (see `plain_records`); the framing check left >= 61 bytes.
        let base_offset = i64::from_be_bytes(input[..8].try_into().expect("8 bytes"));
        let first_timestamp = i64::from_be_bytes(input[FIRST_TIMESTAMP_OFFSET..FIRST_TIMESTAMP_OFFSET + 8].try_into().expect("8 bytes"));
        let checked = |records: &mut Bytes, compression| {
            plain_records(records, compression, base_offset, first_timestamp).map_err(|reason| std::io::Error::other(reason).into())
        };
        let set = RecordBatchDecoder::decode_with_custom_compression(&mut input, Some(checked)).map_err(|error| classify_decode_error(&error.to_string()))?;
        record_sets.push(set);
    }
    let records: Vec<&Record> = record_sets.iter().flat_map(|set| set.records.iter()).collect();
    if records.is_empty() {
        return Err(BatchError::Invalid("the record set holds no records".into()));
    }
    if let Some(record) = records.iter().find(|record| !(NO_TIMESTAMP..=TIMESTAMP_MAX).contains(&record.timestamp)) {
        return Err(BatchError::Invalid(format!("record timestamp {} is out of range (-1, or 0 to {TIMESTAMP_MAX})", record.timestamp)));
    }
    if records.len() > records_max {
        return Err(BatchError::Invalid(format!("{} records in one produce, more than {records_max}", records.len())));
    }
    let first = records[0];
    if records.iter().any(|r| r.transactional || r.control) {
        return Err(BatchError::Invalid("transactional and control batches are not supported (Keel has no transactions)".into()));
    }
    if records.iter().any(|r| r.producer_id != first.producer_id || r.producer_epoch != first.producer_epoch) {
        return Err(BatchError::Invalid("the batches of one partition name different producers".into()));
    }
    let producer = (first.producer_id != NO_PRODUCER_ID).then_some(BatchProducer {
        producer_id: first.producer_id,
        producer_epoch: first.producer_epoch,
        base_sequence: first.sequence,
    });
    if let Some(producer) = producer {
        let in_order = records.iter().enumerate().all(|(index, r)| i64::from(r.sequence) == i64::from(producer.base_sequence) + index as i64);
        if producer.producer_id < 0 || producer.producer_epoch < 0 {
            return Err(BatchError::Invalid(format!("producer id {} epoch {}: ids and epochs are not negative", producer.producer_id, producer.producer_epoch)));
        }
        if producer.base_sequence < 0 || !in_order {
            return Err(BatchError::Invalid("idempotent records must carry consecutive sequences from a base >= 0".into()));
        }
    }
    let stored = records
        .iter()
        .map(|record| {
            StoredRecord {
                timestamp_ms: record.timestamp,
                key: record.key.as_ref().map(|key| key.to_vec()),
                value: record.value.as_ref().map(|value| value.to_vec()),
                headers: record
                    .headers
                    .iter()
                    .map(|(key, value)| StoredHeader { key: key.as_str().to_string(), value: value.as_ref().map(|v| v.to_vec()) })
                    .collect(),
            }
            .encode_to_vec()
        })
        .collect();
    Ok(ProducedRecords { stored, producer })
}

/// Walks the batch boundaries before decoding, so a refusal says what is
/// wrong in Kafka's terms: an old message format (magic 0 or 1) is
/// INVALID_RECORD, lengths that do not tile the record set are
/// CORRUPT_MESSAGE with the byte counts (the decoder would also fail on
/// them, but with a message that does not name the batch).
///
/// It also bounds each batch's record count by `records_max` (in total):
/// kafka-protocol reserves room for the count a batch claims before it
/// decodes one record (`Vec::reserve(record_count)`, about 100 bytes a
/// record), so a 61-byte batch claiming 2^31 records would abort the broker.
fn check_batch_framing(record_set: &Bytes, records_max: usize) -> Result<(), BatchError> {
    let mut at = 0usize;
    let mut records_total = 0u64;
    while at < record_set.len() {
        let rest = &record_set[at..];
        if rest.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Corrupt(format!("a record batch is cut short: {} bytes, a v2 header alone is {BATCH_HEADER_BYTES}", rest.len())));
        }
        let magic = rest[MAGIC_OFFSET] as i8;
        if magic != 2 {
            return Err(BatchError::Invalid(format!("record batch magic {magic}: only v2 batches (Kafka 0.11+ clients) are supported")));
        }
        let record_count = i32::from_be_bytes(rest[RECORD_COUNT_OFFSET..RECORD_COUNT_OFFSET + 4].try_into().expect("4 bytes"));
        let Ok(record_count) = u64::try_from(record_count) else {
            return Err(BatchError::Corrupt(format!("record batch with a negative record count {record_count}")));
        };
        records_total += record_count;
        if records_total > records_max as u64 {
            return Err(BatchError::Invalid(format!("{records_total} records in one produce, more than {records_max}")));
        }
        let batch_length = i32::from_be_bytes(rest[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].try_into().expect("4 bytes"));
        let total = usize::try_from(batch_length).ok().map(|length| length + BATCH_LENGTH_OFFSET + 4);
        match total {
            Some(total) if total >= BATCH_HEADER_BYTES && total <= rest.len() => at += total,
            _ => return Err(BatchError::Corrupt(format!("record batch length {batch_length} does not fit the {} bytes left", rest.len()))),
        }
    }
    Ok(())
}

/// The records of one batch, decompressed, once checked for what the
/// decoder would reserve ahead of the data: kafka-protocol sizes each
/// record's header map by the count the record claims
/// (`IndexMap::with_capacity(count)`), and its snappy decoder zero-fills the
/// uncompressed length a block claims (`BytesMut::resize`), both before
/// reading what they describe. A header takes at least 2 bytes and snappy
/// expands at most about 22 times, so larger claims are refused here. Gzip,
/// lz4 and zstd are decompressed here with streaming decoders that stop at
/// `DECOMPRESSED_BYTES_MAX` (a few kilobytes can claim gigabytes).
/// The decoder also adds each record's deltas to the batch's base offset
/// and first timestamp unchecked (a panic under overflow checks), so those
/// sums are checked here too.
fn plain_records(records: &mut Bytes, compression: Compression, base_offset: i64, first_timestamp: i64) -> Result<Bytes, String> {
    use kafka_protocol::compression::{Decompressor, Snappy};
    let take = |plain: &mut Bytes| Ok(std::mem::take(plain));
    let plain = match compression {
        Compression::None => std::mem::take(records),
        Compression::Snappy => {
            check_snappy_lengths(records)?;
            <Snappy as Decompressor<Bytes>>::decompress(records, take).map_err(|error| error.to_string())?
        }
        Compression::Gzip => bounded("gzip", flate2::read::GzDecoder::new(&records[..]))?,
        Compression::Lz4 => bounded("lz4", lz4::Decoder::new(&records[..]).map_err(|error| format!("lz4: {error}"))?)?,
        Compression::Zstd => bounded("zstd", zstd::stream::read::Decoder::new(&records[..]).map_err(|error| format!("zstd: {error}"))?)?,
    };
    check_records(&plain, base_offset, first_timestamp)?;
    Ok(plain)
}

/// The most bytes one compressed batch may decompress to.
pub const DECOMPRESSED_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Everything `decoder` yields, refused past `DECOMPRESSED_BYTES_MAX`.
fn bounded(what: &str, decoder: impl std::io::Read) -> Result<Bytes, String> {
    use std::io::Read as _;
    let mut plain = Vec::new();
    let read = decoder.take(DECOMPRESSED_BYTES_MAX + 1).read_to_end(&mut plain).map_err(|error| format!("{what}: {error}"))?;
    if read as u64 > DECOMPRESSED_BYTES_MAX {
        return Err(format!("a {what} batch decompresses to more than {DECOMPRESSED_BYTES_MAX} bytes"));
    }
    Ok(Bytes::from(plain))
}

/// Snappy never expands a byte into more than 22 (a 3-byte copy writes at
/// most 64 bytes).
const SNAPPY_EXPANSION_MAX: u64 = 32;
const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";

/// The uncompressed length a raw snappy block starts with must be one its
/// bytes can produce.
fn check_snappy_lengths(compressed: &[u8]) -> Result<(), String> {
    let check_block = |block: &[u8]| {
        let mut cursor = block;
        match read_uvarint(&mut cursor, 10) {
            Some(length) if length > (block.len() as u64).saturating_mul(SNAPPY_EXPANSION_MAX) => {
                Err(format!("a snappy block of {} bytes claims {length} uncompressed bytes", block.len()))
            }
            _ => Ok(()),
        }
    };
    let Some(mut blocks) = compressed.strip_prefix(XERIAL_HEADER.as_slice()) else { return check_block(compressed) };
    while blocks.len() >= 4 {
        let size = u32::from_be_bytes(blocks[..4].try_into().expect("4 bytes")) as usize;
        let Some(block) = blocks.get(4..4 + size) else { return Ok(()) };
        check_block(block)?;
        blocks = &blocks[4 + size..];
    }
    Ok(())
}

/// kafka-protocol's unsigned varint: at most `bytes_max` bytes (5 for an
/// int, 10 for a long), extra high bits dropped; `None` when cut short.
fn read_uvarint(input: &mut &[u8], bytes_max: u32) -> Option<u64> {
    let mut value = 0u64;
    for index in 0..bytes_max {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f).wrapping_shl(index * 7);
        if byte < 0x80 {
            break;
        }
    }
    Some(value)
}

/// A zigzag varint (kafka-protocol's `VarInt`/`VarLong`).
fn read_varint(input: &mut &[u8], bytes_max: u32) -> Option<i64> {
    let zigzag = read_uvarint(input, bytes_max)?;
    let value = if bytes_max == 5 { i64::from(((zigzag as u32 >> 1) as i32) ^ -((zigzag & 1) as i32)) } else { ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64) };
    Some(value)
}

/// Walks the records as `Record::decode_new` reads them, up to each
/// record's header count, and refuses a timestamp or offset delta that
/// overflows the batch's base, and a header count that the record's
/// remaining bytes cannot hold. A record that does not parse ends the walk:
/// the decoder fails on it too, or never reaches it.
fn check_records(plain: &[u8], base_offset: i64, first_timestamp: i64) -> Result<(), String> {
    let mut input = plain;
    while !input.is_empty() {
        let Some(size) = read_varint(&mut input, 5).and_then(|size| usize::try_from(size).ok()) else { return Ok(()) };
        let Some(record) = input.get(..size) else { return Ok(()) };
        input = &input[size..];
        let mut fields = record;
        let Some((_attributes, rest)) = fields.split_first() else { return Ok(()) };
        fields = rest;
        // In the decoder's order: it adds the timestamp delta before it
        // reads the offset delta, so a record cut after its timestamp still
        // overflows there.
        let Some(timestamp_delta) = read_varint(&mut fields, 10) else { return Ok(()) };
        if first_timestamp.checked_add(timestamp_delta).is_none() {
            return Err(format!("record timestamp delta {timestamp_delta} overflows the batch's base timestamp {first_timestamp}"));
        }
        let Some(offset_delta) = read_varint(&mut fields, 5) else { return Ok(()) };
        if base_offset.checked_add(offset_delta).is_none() {
            return Err(format!("record offset delta {offset_delta} overflows the batch's base offset {base_offset}"));
        }
        for _key_then_value in 0..2 {
            match read_varint(&mut fields, 5) {
                Some(-1) => {}
                Some(length) if length >= 0 && (length as usize) <= fields.len() => fields = &fields[length as usize..],
                _ => return Ok(()),
            }
        }
        let Some(headers) = read_varint(&mut fields, 5) else { return Ok(()) };
        if headers > 0 && (headers as u64).saturating_mul(2) > fields.len() as u64 {
            return Err(format!("a record claims {headers} headers in the {} bytes left of it", fields.len()));
        }
    }
    Ok(())
}

fn classify_decode_error(message: &str) -> BatchError {
    if message.contains("compression") {
        BatchError::UnsupportedCompression(message.to_string())
    } else {
        BatchError::Corrupt(message.to_string())
    }
}

/// A stored record read back from the log, with where it sits.
pub struct LogRecord<'a> {
    pub offset: u64,
    pub leader_epoch: u32,
    pub stamp: RecordStamp,
    pub stored: &'a [u8],
}

/// Why stored records could not be turned back into batches.
#[derive(Debug, thiserror::Error)]
pub enum FetchEncodeError {
    #[error("stored record at offset {offset} does not decode: {reason}")]
    Undecodable { offset: u64, reason: String },
    #[error("encoding batches: {0}")]
    Encode(String),
}

/// Decodes one stored record.
pub fn decode_stored_record(offset: u64, stored: &[u8]) -> Result<StoredRecord, FetchEncodeError> {
    StoredRecord::decode(stored).map_err(|error| FetchEncodeError::Undecodable { offset, reason: error.to_string() })
}

/// Encodes consecutive log records as v2 record batches; records that share
/// leader epoch and producer go into one batch.
pub fn encode_fetched(records: &[LogRecord<'_>]) -> Result<Bytes, FetchEncodeError> {
    let mut kafka_records = Vec::with_capacity(records.len());
    let mut run_start = 0usize;
    for (index, log_record) in records.iter().enumerate() {
        let stored = decode_stored_record(log_record.offset, log_record.stored)?;
        let offset = i64::try_from(log_record.offset).expect("log offsets fit i64");
        let leader_epoch = i32::try_from(log_record.leader_epoch).expect("leader epochs fit i32");
        let stamp = log_record.stamp;
        let (producer_id, producer_epoch, sequence) = match stamp.is_idempotent() {
            true => (stamp.producer_id, stamp.producer_epoch, stamp.sequence),
            false => {
                // The encoder groups records whose offset minus sequence is
                // constant; records without a producer get sequences that
                // count up from NO_SEQUENCE within a run, so the batch's
                // base sequence is NO_SEQUENCE as the format requires.
                let previous: Option<&Record> = kafka_records.last();
                let continues = previous.is_some_and(|p| p.producer_id == NO_PRODUCER_ID && p.partition_leader_epoch == leader_epoch);
                if !continues {
                    run_start = index;
                }
                (NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE.wrapping_add((index - run_start) as i32))
            }
        };
        kafka_records.push(Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: leader_epoch,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence,
            timestamp: stored.timestamp_ms,
            key: stored.key.map(Bytes::from),
            value: stored.value.map(Bytes::from),
            // Kafka allows a header key twice; kafka-protocol's record keeps
            // one value per key, on produce as on fetch.
            headers: stored.headers.into_iter().map(|h| (StrBytes::from_string(h.key), h.value.map(Bytes::from))).collect::<IndexMap<_, _>>(),
        });
    }
    let mut out = BytesMut::new();
    if !kafka_records.is_empty() {
        let options = RecordEncodeOptions { version: 2, compression: Compression::None };
        RecordBatchEncoder::encode(&mut out, kafka_records.iter(), &options).map_err(|error| FetchEncodeError::Encode(error.to_string()))?;
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: i64, value: &str, producer: Option<(i64, i16, i32)>) -> Record {
        let (producer_id, producer_epoch, sequence) = producer.unwrap_or((NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE));
        let mut headers = IndexMap::new();
        headers.insert(StrBytes::from_static_str("trace"), Some(Bytes::from_static(b"t-1")));
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence,
            timestamp: 1_700_000_000_000 + offset,
            key: Some(Bytes::from(format!("k{offset}"))),
            value: Some(Bytes::from(value.to_string())),
            headers,
        }
    }

    /// What a client sends: one v2 batch of `records`.
    fn client_batch(records: &[Record]) -> Bytes {
        let mut out = BytesMut::new();
        RecordBatchEncoder::encode(&mut out, records.iter(), &RecordEncodeOptions { version: 2, compression: Compression::None }).expect("encode");
        out.freeze()
    }

    fn fetched(produced: &ProducedRecords, base_offset: u64, leader_epoch: u32) -> Vec<Record> {
        let batch = produced.producer.map(|p| keel_repl::ProducerStamp::batch(p.producer_id, p.producer_epoch, p.base_sequence, produced.stored.len()));
        let log: Vec<LogRecord<'_>> = produced
            .stored
            .iter()
            .enumerate()
            .map(|(i, s)| LogRecord { offset: base_offset + i as u64, leader_epoch, stamp: batch.map_or(RecordStamp::NONE, |b| b.record(i)), stored: s })
            .collect();
        let mut bytes = encode_fetched(&log).expect("encode fetched");
        RecordBatchDecoder::decode_all(&mut bytes).expect("decode fetched").into_iter().flat_map(|set| set.records).collect()
    }

    #[test]
    fn produced_records_come_back_with_log_offsets_leader_epoch_keys_values_and_headers() {
        let sent: Vec<Record> = (0..5).map(|i| record(i, &format!("v{i}"), None)).collect();
        let produced = decode_produced(&client_batch(&sent), 100).expect("valid batch");
        assert_eq!(produced.producer, None);
        assert_eq!(produced.stored.len(), 5);
        let back = fetched(&produced, 40, 3);
        assert_eq!(back.len(), 5);
        for (i, (got, want)) in back.iter().zip(&sent).enumerate() {
            assert_eq!(got.offset, 40 + i as i64);
            assert_eq!(got.partition_leader_epoch, 3);
            assert_eq!(got.key, want.key);
            assert_eq!(got.value, want.value);
            assert_eq!(got.timestamp, want.timestamp);
            assert_eq!(got.headers, want.headers);
            assert_eq!(got.producer_id, NO_PRODUCER_ID);
        }
    }

    #[test]
    fn an_idempotent_batch_keeps_its_producer_and_sequences() {
        let sent: Vec<Record> = (0..3).map(|i| record(i, "x", Some((7, 2, 10 + i as i32)))).collect();
        let produced = decode_produced(&client_batch(&sent), 100).expect("valid batch");
        assert_eq!(produced.producer, Some(BatchProducer { producer_id: 7, producer_epoch: 2, base_sequence: 10 }));
        let back = fetched(&produced, 0, 0);
        assert_eq!(back.iter().map(|r| (r.producer_id, r.producer_epoch, r.sequence)).collect::<Vec<_>>(), vec![(7, 2, 10), (7, 2, 11), (7, 2, 12)]);
    }

    #[test]
    fn records_of_different_leader_epochs_are_fetched_as_separate_batches() {
        let produced = decode_produced(&client_batch(&[record(0, "a", None), record(1, "b", None)]), 100).expect("valid");
        let log = [
            LogRecord { offset: 5, leader_epoch: 1, stamp: RecordStamp::NONE, stored: &produced.stored[0] },
            LogRecord { offset: 6, leader_epoch: 2, stamp: RecordStamp::NONE, stored: &produced.stored[1] },
        ];
        let mut bytes = encode_fetched(&log).expect("encode");
        let sets = RecordBatchDecoder::decode_all(&mut bytes).expect("decode");
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[1].records[0].partition_leader_epoch, 2);
        assert_eq!(sets[1].records[0].offset, 6);
    }

    #[test]
    fn damaged_record_sets_are_refused_with_kafka_codes() {
        let good = client_batch(&[record(0, "a", None), record(1, "b", None)]);
        let mut flipped = good.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert_eq!(decode_produced(&Bytes::from(flipped), 100).map_err(|e| e.kafka_code()), Err(2), "checksum mismatch");
        let cut = good.slice(..good.len() - 3);
        assert_eq!(decode_produced(&cut, 100).map_err(|e| e.kafka_code()), Err(2), "cut short");
        assert_eq!(decode_produced(&good.slice(..20), 100).map_err(|e| e.kafka_code()), Err(2), "shorter than a header");
        let mut old_magic = good.to_vec();
        old_magic[MAGIC_OFFSET] = 1;
        assert_eq!(decode_produced(&Bytes::from(old_magic), 100).map_err(|e| e.kafka_code()), Err(87), "magic 1");
        assert_eq!(decode_produced(&Bytes::new(), 100).map_err(|e| e.kafka_code()), Err(87), "no records");
        assert_eq!(decode_produced(&good, 1).map_err(|e| e.kafka_code()), Err(87), "more records than allowed");
        let mut transactional = record(0, "t", Some((1, 0, 0)));
        transactional.transactional = true;
        assert_eq!(decode_produced(&client_batch(&[transactional]), 100).map_err(|e| e.kafka_code()), Err(87), "transactional");
        let gap = [record(0, "a", Some((1, 0, 0))), record(1, "b", Some((1, 0, 5)))];
        let mut two_batches = client_batch(&gap[..1]).to_vec();
        two_batches.extend_from_slice(&client_batch(&gap[1..]));
        assert_eq!(decode_produced(&Bytes::from(two_batches), 100).map_err(|e| e.kafka_code()), Err(87), "sequence gap");
        let negative_producer = [record(0, "a", Some((-5, 0, 0)))];
        assert_eq!(decode_produced(&client_batch(&negative_producer), 100).map_err(|e| e.kafka_code()), Err(87), "negative producer id");
    }

    #[test]
    fn a_compressed_batch_that_decompresses_past_the_limit_is_refused() {
        use std::io::Write as _;
        let encode = |compression| {
            let mut out = BytesMut::new();
            RecordBatchEncoder::encode(&mut out, [record(0, "a", None)].iter(), &RecordEncodeOptions { version: 2, compression }).expect("encode");
            out.to_vec()
        };
        // A real zstd batch decodes; its records section swapped for a
        // few kilobytes of zstd that expand to more than the limit does not.
        assert!(decode_produced(&Bytes::from(encode(Compression::Zstd)), 100).is_ok());
        let mut bomb = zstd::stream::write::Encoder::new(Vec::new(), 19).expect("encoder");
        let zeros = vec![0u8; 1024 * 1024];
        for _ in 0..(DECOMPRESSED_BYTES_MAX / zeros.len() as u64 + 2) {
            bomb.write_all(&zeros).expect("compress");
        }
        let bomb = bomb.finish().expect("finish");
        assert!(bomb.len() < 64 * 1024, "the bomb is small: {} bytes", bomb.len());
        let mut batch = encode(Compression::Zstd);
        batch.truncate(BATCH_HEADER_BYTES);
        batch.extend_from_slice(&bomb);
        let length = i32::try_from(batch.len() - BATCH_LENGTH_OFFSET - 4).expect("small");
        batch[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        let refused = decode_produced(&Bytes::from(batch), 100).expect_err("a decompression bomb");
        assert!(refused.to_string().contains("decompresses to more than"), "{refused}");
    }

    #[test]
    fn a_timestamp_delta_that_overflows_is_refused_even_when_the_record_is_cut_after_it() {
        // The fuzzer's find: a ten-byte timestamp delta of i64::MIN, then an
        // offset delta cut short. The decoder adds the timestamp first.
        let mut batch = client_batch(&[record(0, "a", None)]).to_vec();
        batch.truncate(BATCH_HEADER_BYTES);
        batch[FIRST_TIMESTAMP_OFFSET..FIRST_TIMESTAMP_OFFSET + 8].copy_from_slice(&(-3_959_488_257i64).to_be_bytes());
        let mut record = vec![0u8];
        record.extend_from_slice(&[0xff; 10]);
        record.extend_from_slice(&[0xff, 0xff, 0x93]);
        batch.push(u8::try_from(record.len() * 2).expect("small"));
        batch.extend_from_slice(&record);
        let length = i32::try_from(batch.len() - BATCH_LENGTH_OFFSET - 4).expect("small");
        batch[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        let refused = decode_produced(&Bytes::from(batch), 100).expect_err("an overflowing timestamp delta");
        assert_eq!(refused.kafka_code(), 2, "{refused}");
    }
}
