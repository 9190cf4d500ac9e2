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
//!
//! Headers are an ordered list in Kafka and a key may repeat. kafka-protocol's
//! `Record` keeps them in a map (a repeated key keeps only its last value), so
//! produced headers are read from the record bytes here, and fetched batches
//! are encoded here, byte for byte in Kafka's v2 format.

use std::cell::RefCell;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE};
use keel_error_codes as code;
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
            BatchError::Corrupt(_) => code::CORRUPT_MESSAGE,
            BatchError::Invalid(_) => code::INVALID_RECORD,
            BatchError::UnsupportedCompression(_) => code::UNSUPPORTED_COMPRESSION_TYPE,
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
    let mut headers = Vec::new();
    while !input.is_empty() {
        // Our decompression step checks what the decoder would reserve or
        // overflow (see `plain_records`); the framing check left >= 61 bytes.
        let base_offset = i64::from_be_bytes(input[..8].try_into().expect("8 bytes"));
        let first_timestamp = i64::from_be_bytes(input[FIRST_TIMESTAMP_OFFSET..FIRST_TIMESTAMP_OFFSET + 8].try_into().expect("8 bytes"));
        // The plain records section, kept to read the headers in order.
        let plain_seen = RefCell::new(Bytes::new());
        let checked = |records: &mut Bytes, compression| {
            let plain = plain_records(records, compression, base_offset, first_timestamp).map_err(std::io::Error::other)?;
            *plain_seen.borrow_mut() = plain.clone();
            Ok(plain)
        };
        let set = RecordBatchDecoder::decode_with_custom_compression(&mut input, Some(checked)).map_err(|error| classify_decode_error(&error.to_string()))?;
        let batch_headers = record_headers(&plain_seen.into_inner(), set.records.len()).map_err(BatchError::Corrupt)?;
        assert_eq!(batch_headers.len(), set.records.len(), "one header list per decoded record");
        headers.extend(batch_headers);
        record_sets.push(set);
    }
    let records: Vec<&Record> = record_sets.iter().flat_map(|set| set.records.iter()).collect();
    assert_eq!(records.len(), headers.len(), "one header list per record");
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
            return Err(BatchError::Invalid(format!(
                "producer id {} epoch {}: ids and epochs are not negative",
                producer.producer_id, producer.producer_epoch
            )));
        }
        if producer.base_sequence < 0 || !in_order {
            return Err(BatchError::Invalid("idempotent records must carry consecutive sequences from a base >= 0".into()));
        }
    }
    let stored = records
        .iter()
        .zip(headers)
        .map(|(record, headers)| {
            StoredRecord {
                timestamp_ms: record.timestamp,
                key: record.key.as_ref().map(|key| key.to_vec()),
                value: record.value.as_ref().map(|value| value.to_vec()),
                headers,
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
    let value =
        if bytes_max == 5 { i64::from(((zigzag as u32 >> 1) as i32) ^ -((zigzag & 1) as i32)) } else { ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64) };
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

/// Every record's headers, in the order the producer wrote them (repeated
/// keys kept), read from a batch's plain records section that
/// kafka-protocol's decoder has already accepted (so the walk follows the
/// same grammar: a size-bounded record, attributes, timestamp and offset
/// deltas, key, value, then `count` headers of key and nullable value).
fn record_headers(plain: &[u8], record_count: usize) -> Result<Vec<Vec<StoredHeader>>, String> {
    let cut = |what: &str| format!("a record's {what} is cut short");
    let mut input = plain;
    let mut all = Vec::with_capacity(record_count);
    for _ in 0..record_count {
        let size = read_varint(&mut input, 5).and_then(|size| usize::try_from(size).ok()).ok_or_else(|| cut("size"))?;
        let mut fields = input.get(..size).ok_or_else(|| cut("body"))?;
        input = &input[size..];
        fields = fields.get(1..).ok_or_else(|| cut("attributes"))?;
        read_varint(&mut fields, 10).ok_or_else(|| cut("timestamp delta"))?;
        read_varint(&mut fields, 5).ok_or_else(|| cut("offset delta"))?;
        for what in ["key", "value"] {
            read_nullable_bytes(&mut fields).ok_or_else(|| cut(what))?;
        }
        let count = read_varint(&mut fields, 5).and_then(|count| usize::try_from(count).ok()).ok_or_else(|| cut("header count"))?;
        // Each header takes at least 2 bytes: never reserve past what is there.
        let mut headers = Vec::with_capacity(count.min(fields.len() / 2));
        for _ in 0..count {
            let key = read_nullable_bytes(&mut fields).flatten().ok_or_else(|| cut("header key"))?;
            let key = std::str::from_utf8(key).map_err(|_| "a header key is not UTF-8".to_string())?;
            let value = read_nullable_bytes(&mut fields).ok_or_else(|| cut("header value"))?;
            headers.push(StoredHeader { key: key.to_string(), value: value.map(<[u8]>::to_vec) });
        }
        all.push(headers);
    }
    Ok(all)
}

/// A varint length and that many bytes (`Some(None)` for length -1).
fn read_nullable_bytes<'a>(input: &mut &'a [u8]) -> Option<Option<&'a [u8]>> {
    match read_varint(input, 5)? {
        -1 => Some(None),
        length => {
            let length = usize::try_from(length).ok()?;
            let bytes = input.get(..length)?;
            *input = &input[length..];
            Some(Some(bytes))
        }
    }
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

/// Encodes consecutive log records as uncompressed v2 record batches: the
/// records of one produced batch (same producer, epoch and batch, consecutive
/// sequences) go back into one batch, and records without a producer into one
/// batch per run of a leader epoch.
pub fn encode_fetched(records: &[LogRecord<'_>]) -> Result<Bytes, FetchEncodeError> {
    let mut out = BytesMut::new();
    let mut batch: Vec<(&LogRecord<'_>, StoredRecord)> = Vec::new();
    for log_record in records {
        let stored = decode_stored_record(log_record.offset, log_record.stored)?;
        if batch.last().is_some_and(|(previous, _)| !same_batch(previous, log_record)) {
            encode_batch(&mut out, &batch)?;
            batch.clear();
        }
        batch.push((log_record, stored));
    }
    if !batch.is_empty() {
        encode_batch(&mut out, &batch)?;
    }
    Ok(out.freeze())
}

/// Whether `next` continues the batch that `previous` is in.
fn same_batch(previous: &LogRecord<'_>, next: &LogRecord<'_>) -> bool {
    let (a, b) = (previous.stamp, next.stamp);
    let consecutive = previous.offset.checked_add(1) == Some(next.offset) && previous.leader_epoch == next.leader_epoch;
    let same_producer = match (a.is_idempotent(), b.is_idempotent()) {
        (false, false) => true,
        (true, true) => {
            a.producer_id == b.producer_id
                && a.producer_epoch == b.producer_epoch
                && a.last_sequence == b.last_sequence
                && a.sequence != a.last_sequence
                && keel_repl::producers::sequence_after(a.sequence, 1) == b.sequence
        }
        _ => false,
    };
    consecutive && same_producer
}

/// Positions and sizes in a v2 batch header that the encoder fills in last.
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;

/// Appends one uncompressed v2 batch of `records` (consecutive offsets) to `out`.
fn encode_batch(out: &mut BytesMut, records: &[(&LogRecord<'_>, StoredRecord)]) -> Result<(), FetchEncodeError> {
    let (first, _) = records.first().expect("a batch has records");
    let (last, _) = records.last().expect("a batch has records");
    let base_offset = i64::try_from(first.offset).expect("log offsets fit i64");
    let last_offset_delta = i32::try_from(last.offset - first.offset).map_err(|_| FetchEncodeError::Encode("a batch spans more than 2^31 offsets".into()))?;
    let record_count = i32::try_from(records.len()).map_err(|_| FetchEncodeError::Encode("more than 2^31 records in a batch".into()))?;
    let leader_epoch = i32::try_from(first.leader_epoch).expect("leader epochs fit i32");
    // Deltas from the smallest timestamp are never negative; stored
    // timestamps are -1 or within 0..=TIMESTAMP_MAX, so no delta overflows.
    let base_timestamp = records.iter().map(|(_, stored)| stored.timestamp_ms).min().expect("a batch has records");
    let max_timestamp = records.iter().map(|(_, stored)| stored.timestamp_ms).max().expect("a batch has records");
    let (producer_id, producer_epoch, base_sequence) = match first.stamp.is_idempotent() {
        true => (first.stamp.producer_id, first.stamp.producer_epoch, first.stamp.sequence),
        false => (NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE),
    };
    let batch_start = out.len();
    out.put_i64(base_offset);
    out.put_i32(0); // batch length, filled in below
    out.put_i32(leader_epoch);
    out.put_i8(2);
    out.put_u32(0); // CRC-32C, filled in below
    out.put_i16(0); // no compression, create time, not transactional, not control
    out.put_i32(last_offset_delta);
    out.put_i64(base_timestamp);
    out.put_i64(max_timestamp);
    out.put_i64(producer_id);
    out.put_i16(producer_epoch);
    out.put_i32(base_sequence);
    out.put_i32(record_count);
    debug_assert_eq!(out.len() - batch_start, BATCH_HEADER_BYTES);
    let mut body = Vec::new();
    for (log_record, stored) in records {
        body.clear();
        body.push(0); // record attributes: unused in v2
        put_varlong(&mut body, stored.timestamp_ms - base_timestamp);
        put_varint(&mut body, (log_record.offset - first.offset) as i64);
        put_nullable_bytes(&mut body, stored.key.as_deref());
        put_nullable_bytes(&mut body, stored.value.as_deref());
        put_varint(&mut body, stored.headers.len() as i64);
        for header in &stored.headers {
            put_nullable_bytes(&mut body, Some(header.key.as_bytes()));
            put_nullable_bytes(&mut body, header.value.as_deref());
        }
        let mut size = Vec::with_capacity(5);
        put_varint(&mut size, body.len() as i64);
        out.extend_from_slice(&size);
        out.extend_from_slice(&body);
    }
    let batch_length =
        i32::try_from(out.len() - batch_start - BATCH_LENGTH_OFFSET - 4).map_err(|_| FetchEncodeError::Encode("a batch larger than 2 GiB".into()))?;
    out[batch_start + BATCH_LENGTH_OFFSET..batch_start + BATCH_LENGTH_OFFSET + 4].copy_from_slice(&batch_length.to_be_bytes());
    let crc = crc32c::crc32c(&out[batch_start + ATTRIBUTES_OFFSET..]);
    out[batch_start + CRC_OFFSET..batch_start + CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// A zigzag varint of at most 32 bits (lengths, counts, offset deltas).
fn put_varint(out: &mut Vec<u8>, value: i64) {
    let value = i32::try_from(value).expect("a varint field fits 32 bits");
    put_uvarint(out, ((value << 1) ^ (value >> 31)) as u32 as u64);
}

/// A zigzag varint of 64 bits (timestamp deltas).
fn put_varlong(out: &mut Vec<u8>, value: i64) {
    put_uvarint(out, ((value << 1) ^ (value >> 63)) as u64);
}

fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A varint length (-1 for null) and the bytes.
fn put_nullable_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(bytes) => {
            put_varint(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indexmap::IndexMap;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{RecordBatchEncoder, RecordEncodeOptions, TimestampType};

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

    /// One v2 batch of one record with `headers`, written byte by byte as a
    /// Java or librdkafka producer writes it (kafka-protocol's encoder
    /// cannot write a key twice).
    fn batch_with_headers(headers: &[(&str, Option<&[u8]>)]) -> Bytes {
        let stored = StoredRecord {
            timestamp_ms: 1_700_000_000_000,
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers: headers.iter().map(|(key, value)| StoredHeader { key: key.to_string(), value: value.map(<[u8]>::to_vec) }).collect(),
        };
        let encoded = stored.encode_to_vec();
        let mut out = BytesMut::new();
        encode_batch(&mut out, &[(&LogRecord { offset: 0, leader_epoch: 0, stamp: RecordStamp::NONE, stored: &encoded }, stored)]).expect("encode");
        out.freeze()
    }

    fn headers_of(stored: &[u8]) -> Vec<(String, Option<Vec<u8>>)> {
        decode_stored_record(0, stored).expect("decodes").headers.into_iter().map(|h| (h.key, h.value)).collect()
    }

    #[test]
    fn repeated_header_keys_are_kept_in_the_order_the_producer_sent_them() {
        let sent: [(&str, Option<&[u8]>); 5] = [("dup", Some(b"v0")), ("dup", Some(b"v1")), ("k2", Some(b"x")), ("dup", Some(b"v3")), ("dup", None)];
        let want: Vec<(String, Option<Vec<u8>>)> = sent.iter().map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec))).collect();
        let batch = batch_with_headers(&sent);
        // The batch is valid Kafka: kafka-protocol's decoder accepts it.
        assert_eq!(RecordBatchDecoder::decode_all(&mut batch.clone()).expect("a valid batch").len(), 1);
        let produced = decode_produced(&batch, 100).expect("valid batch");
        assert_eq!(headers_of(&produced.stored[0]), want);
        // Fetched back: our encoder writes every header, in order.
        let log = [LogRecord { offset: 9, leader_epoch: 4, stamp: RecordStamp::NONE, stored: &produced.stored[0] }];
        let fetched = encode_fetched(&log).expect("encode");
        let again = decode_produced(&fetched, 100).expect("a fetched batch is a valid batch");
        assert_eq!(headers_of(&again.stored[0]), want);
    }

    #[test]
    fn fetched_batches_follow_the_produced_batches_and_decode_in_kafka_protocol() {
        // Two idempotent batches of one producer, then records without one:
        // three batches back, each with its own base sequence.
        let first: Vec<Record> = (0..2).map(|i| record(i, "a", Some((7, 0, i as i32)))).collect();
        let second: Vec<Record> = (2..5).map(|i| record(i, "b", Some((7, 0, i as i32)))).collect();
        let plain: Vec<Record> = (5..7).map(|i| record(i, "c", None)).collect();
        let mut stored = Vec::new();
        let mut stamps = Vec::new();
        for batch in [&first, &second] {
            let produced = decode_produced(&client_batch(batch), 100).expect("valid");
            let producer = produced.producer.expect("idempotent");
            let stamp = keel_repl::ProducerStamp::batch(producer.producer_id, producer.producer_epoch, producer.base_sequence, produced.stored.len());
            stamps.extend((0..produced.stored.len()).map(|i| stamp.record(i)));
            stored.extend(produced.stored);
        }
        let produced = decode_produced(&client_batch(&plain), 100).expect("valid");
        stamps.extend(std::iter::repeat_n(RecordStamp::NONE, produced.stored.len()));
        stored.extend(produced.stored);
        let log: Vec<LogRecord<'_>> = stored
            .iter()
            .zip(&stamps)
            .enumerate()
            .map(|(i, (s, stamp))| LogRecord { offset: 100 + i as u64, leader_epoch: 2, stamp: *stamp, stored: s })
            .collect();
        let mut bytes = encode_fetched(&log).expect("encode");
        let sets = RecordBatchDecoder::decode_all(&mut bytes).expect("kafka-protocol decodes our batches");
        assert_eq!(sets.iter().map(|set| set.records.len()).collect::<Vec<_>>(), vec![2, 3, 2]);
        let records: Vec<&Record> = sets.iter().flat_map(|set| &set.records).collect();
        assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), (100..107).collect::<Vec<_>>());
        assert_eq!(records.iter().map(|r| r.sequence).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, -1, 0]);
        assert!(records.iter().all(|r| r.partition_leader_epoch == 2));
        assert_eq!(records.iter().map(|r| r.timestamp).collect::<Vec<_>>(), (0..7).map(|i| 1_700_000_000_000 + i).collect::<Vec<_>>());
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
        assert_eq!(decode_produced(&Bytes::from(flipped), 100).map_err(|e| e.kafka_code()), Err(code::CORRUPT_MESSAGE), "checksum mismatch");
        let cut = good.slice(..good.len() - 3);
        assert_eq!(decode_produced(&cut, 100).map_err(|e| e.kafka_code()), Err(code::CORRUPT_MESSAGE), "cut short");
        assert_eq!(decode_produced(&good.slice(..20), 100).map_err(|e| e.kafka_code()), Err(code::CORRUPT_MESSAGE), "shorter than a header");
        let mut old_magic = good.to_vec();
        old_magic[MAGIC_OFFSET] = 1;
        assert_eq!(decode_produced(&Bytes::from(old_magic), 100).map_err(|e| e.kafka_code()), Err(code::INVALID_RECORD), "magic 1");
        assert_eq!(decode_produced(&Bytes::new(), 100).map_err(|e| e.kafka_code()), Err(code::INVALID_RECORD), "no records");
        assert_eq!(decode_produced(&good, 1).map_err(|e| e.kafka_code()), Err(code::INVALID_RECORD), "more records than allowed");
        let mut transactional = record(0, "t", Some((1, 0, 0)));
        transactional.transactional = true;
        assert_eq!(decode_produced(&client_batch(&[transactional]), 100).map_err(|e| e.kafka_code()), Err(code::INVALID_RECORD), "transactional");
        let gap = [record(0, "a", Some((1, 0, 0))), record(1, "b", Some((1, 0, 5)))];
        let mut two_batches = client_batch(&gap[..1]).to_vec();
        two_batches.extend_from_slice(&client_batch(&gap[1..]));
        assert_eq!(decode_produced(&Bytes::from(two_batches), 100).map_err(|e| e.kafka_code()), Err(code::INVALID_RECORD), "sequence gap");
        let negative_producer = [record(0, "a", Some((-5, 0, 0)))];
        assert_eq!(decode_produced(&client_batch(&negative_producer), 100).map_err(|e| e.kafka_code()), Err(code::INVALID_RECORD), "negative producer id");
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
        assert_eq!(refused.kafka_code(), code::CORRUPT_MESSAGE, "{refused}");
    }
}
