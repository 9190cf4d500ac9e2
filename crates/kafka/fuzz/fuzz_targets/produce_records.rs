//! A produced record set through `records::decode_produced` (what the front
//! runs on every partition of a Produce), then, when it is accepted, back
//! out through `encode_fetched` as a fetch would.
//!
//! The first input byte is a switch: when its low bit is set, the harness
//! rewrites each batch's CRC-32C before decoding, so the fuzzer gets past
//! the checksum into the batch and record decoders (the rest of the input
//! is the record set).

#![no_main]

use bytes::Bytes;
use keel_kafka::records::{decode_produced, decode_stored_record, encode_fetched, LogRecord};
use keel_kafka::KafkaConfig;
use libfuzzer_sys::fuzz_target;

/// Where a v2 batch's length, CRC and CRC-covered bytes start.
const BATCH_LENGTH_OFFSET: usize = 8;
const CRC_OFFSET: usize = 17;
const CRC_START: usize = 21;

/// Rewrites the CRC of every batch whose length fits what is left.
fn fix_crcs(record_set: &mut [u8]) {
    let mut at = 0usize;
    while record_set.len() - at >= CRC_START {
        let rest = &mut record_set[at..];
        let length = i32::from_be_bytes(rest[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].try_into().expect("4 bytes"));
        let Some(end) = usize::try_from(length).ok().map(|length| length + BATCH_LENGTH_OFFSET + 4).filter(|end| *end >= CRC_START && *end <= rest.len())
        else {
            return;
        };
        let crc = crc32c::crc32c(&rest[CRC_START..end]);
        rest[CRC_OFFSET..CRC_START].copy_from_slice(&crc.to_be_bytes());
        at += end;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((switch, record_set)) = data.split_first() else { return };
    let mut record_set = record_set.to_vec();
    if switch & 1 == 1 {
        fix_crcs(&mut record_set);
    }
    let records_max = KafkaConfig::new(1, "keel-fuzz").produce_records_max;
    let Ok(produced) = decode_produced(&Bytes::from(record_set), records_max) else { return };
    assert!(!produced.stored.is_empty() && produced.stored.len() <= records_max, "{} records", produced.stored.len());
    let log: Vec<LogRecord<'_>> = produced
        .stored
        .iter()
        .enumerate()
        .map(|(index, stored)| {
            decode_stored_record(index as u64, stored).expect("a stored record decodes");
            LogRecord { offset: index as u64, leader_epoch: 0, stamp: keel_repl::RecordStamp::NONE, stored }
        })
        .collect();
    encode_fetched(&log).expect("accepted records can be fetched back");
});
