//! The decoding guard (`keel_kafka::guard`) against kafka-protocol's own
//! encoders and decoders: it accepts every valid request and ends where the
//! decoder ends, it refuses whatever the decoder would refuse (when it can
//! tell without allocating), and the frame it exists for really does abort
//! an unguarded process.

#[path = "support/sample_requests.rs"]
mod sample_requests;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;
use keel_kafka::apis::SUPPORTED_APIS;
use keel_kafka::guard::{check_request, decode_request, message_schema, GuardError, RequestDecodeError};

/// What the decoder reads of `frame` without the guard: header and body
/// bytes, or its error. Only for frames the guard has shown to be safe.
fn decoded_length(api_key: ApiKey, version: i16, frame: &Bytes) -> Result<usize, String> {
    let mut body = frame.clone();
    RequestHeader::decode(&mut body, api_key.request_header_version(version))
        .and_then(|_| RequestKind::decode(api_key, &mut body, version))
        .map_err(|error| error.to_string())?;
    Ok(frame.len() - body.len())
}

/// Sample frames over every version kafka-protocol decodes for each served API.
fn all_sample_frames() -> Vec<(ApiKey, i16, Bytes)> {
    let ranges: Vec<(ApiKey, i16, i16)> = SUPPORTED_APIS
        .iter()
        .map(|(key, _, _)| {
            let schema = message_schema(*key).expect("every served API has a schema");
            (*key, schema.min, schema.max)
        })
        .collect();
    sample_requests::sample_frames(&ranges)
}

#[test]
fn every_served_api_has_samples_that_walk_exactly_as_the_decoder_reads() {
    let frames = all_sample_frames();
    for (key, _, _) in SUPPORTED_APIS {
        if !frames.iter().any(|(k, _, _)| k == key) {
            eprintln!("note: no sample request for {key:?} in tests/support/sample_requests.rs; only its schema is checked");
        }
    }
    assert!(frames.len() >= 80, "{} sample frames", frames.len());
    for (api_key, version, frame) in &frames {
        let walked = check_request(*api_key, *version, frame);
        assert_eq!(walked, Ok(frame.len()), "{api_key:?} v{version}: the guard must accept a valid request and walk all of it");
        assert_eq!(decoded_length(*api_key, *version, frame), Ok(frame.len()), "{api_key:?} v{version}: the decoder reads it all too");
        assert!(decode_request(*api_key, *version, frame).is_ok(), "{api_key:?} v{version}");
    }
}

/// Every prefix and every single-byte change of every sample: when the
/// guard accepts, the decoder (safe to run then) ends where the guard ends
/// or fails; when the guard refuses for a reason the decoder can meet
/// without allocating, the decoder fails too (so the guard never refuses a
/// request the decoder takes).
#[test]
fn cut_and_changed_samples_get_the_same_verdict_from_guard_and_decoder() {
    let mut checked = 0usize;
    let mut refused = 0usize;
    let mut verdict = |api_key: ApiKey, version: i16, frame: Bytes, what: &str| {
        checked += 1;
        match check_request(api_key, version, &frame) {
            Ok(walked) => {
                if let Ok(read) = decoded_length(api_key, version, &frame) {
                    assert_eq!(walked, read, "{api_key:?} v{version} {what}: guard and decoder end apart");
                }
            }
            Err(error) if error.decoder_fails_safely() => {
                refused += 1;
                let decoded = decoded_length(api_key, version, &frame);
                assert!(decoded.is_err(), "{api_key:?} v{version} {what}: guard refused ({error}) what the decoder takes");
            }
            Err(_) => refused += 1,
        }
    };
    for (api_key, version, frame) in all_sample_frames() {
        for cut in 0..frame.len() {
            verdict(api_key, version, frame.slice(..cut), &format!("cut at {cut}"));
        }
        for at in 0..frame.len() {
            for value in [0x00u8, 0x01, 0x02, 0x7f, 0x80, 0xfe, 0xff] {
                let mut changed = frame.to_vec();
                changed[at] = value;
                verdict(api_key, version, Bytes::from(changed), &format!("byte {at} = {value:#x}"));
            }
        }
    }
    assert!(checked > 10_000 && refused > 1_000, "{checked} frames, {refused} refused");
}

/// Metadata v0 from a client claiming i32::MAX topics: 14 bytes.
fn crafted_frame() -> Bytes {
    let mut frame = Vec::new();
    frame.extend((ApiKey::Metadata as i16).to_be_bytes());
    frame.extend(0i16.to_be_bytes());
    frame.extend(42i32.to_be_bytes());
    frame.extend((-1i16).to_be_bytes());
    frame.extend(i32::MAX.to_be_bytes());
    Bytes::from(frame)
}

const CHILD: &str = "KEEL_GUARD_CHILD";

/// Runs in a child process only (see below): decodes the crafted frame with
/// or without the guard, as the parent asks.
#[test]
fn child_decodes_the_crafted_frame() {
    let Ok(mode) = std::env::var(CHILD) else { return };
    let frame = crafted_frame();
    if mode == "unguarded-records" {
        let outcome = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut batch(0, 1, &HEADER_BOMB_RECORD));
        println!("unguarded record decode returned: {outcome:?}");
    } else if mode == "guarded-records" {
        let outcome = keel_kafka::records::decode_produced(&batch(0, 1, &HEADER_BOMB_RECORD), 100_000);
        println!("record set refused: {}", outcome.expect_err("refused"));
    } else if mode == "unguarded" {
        let outcome = decoded_length(ApiKey::Metadata, 0, &frame);
        println!("unguarded decode returned: {outcome:?}");
    } else {
        match decode_request(ApiKey::Metadata, 0, &frame) {
            Err(RequestDecodeError::Refused(error @ GuardError::CountTooLarge { .. })) => println!("refused: {error}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

fn run_child(mode: &str) -> std::process::Output {
    // Under an 8 GiB address-space limit, so the outcome does not depend on
    // the machine's memory or overcommit policy.
    std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 8388608 && exec \"$0\" \"$@\"")
        .arg(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_decodes_the_crafted_frame", "--nocapture", "--test-threads=1"])
        .env(CHILD, mode)
        .output()
        .expect("run the test binary")
}

#[test]
fn without_the_guard_a_14_byte_frame_aborts_the_process_and_with_it_is_refused() {
    use std::os::unix::process::ExitStatusExt;
    let unguarded = run_child("unguarded");
    let stderr = String::from_utf8_lossy(&unguarded.stderr);
    assert_eq!(unguarded.status.signal(), Some(6), "SIGABRT expected; status {:?}, stderr:\n{stderr}", unguarded.status);
    assert!(stderr.contains("memory allocation of") && stderr.contains("failed"), "stderr:\n{stderr}");

    let guarded = run_child("guarded");
    let stdout = String::from_utf8_lossy(&guarded.stdout);
    assert!(guarded.status.success(), "status {:?}\n{stdout}\n{}", guarded.status, String::from_utf8_lossy(&guarded.stderr));
    assert!(stdout.contains("refused: topics at byte 10: 2147483647 elements"), "{stdout}");
}

#[test]
fn without_the_record_checks_a_one_record_batch_aborts_the_process_and_with_them_is_refused() {
    use std::os::unix::process::ExitStatusExt;
    let unguarded = run_child("unguarded-records");
    let stderr = String::from_utf8_lossy(&unguarded.stderr);
    assert_eq!(unguarded.status.signal(), Some(6), "SIGABRT expected; status {:?}, stderr:\n{stderr}", unguarded.status);
    assert!(stderr.contains("memory allocation of") && stderr.contains("failed"), "stderr:\n{stderr}");
    let guarded = run_child("guarded-records");
    let stdout = String::from_utf8_lossy(&guarded.stdout);
    assert!(guarded.status.success() && stdout.contains("record set refused: CORRUPT_MESSAGE"), "{stdout}");
}

/// CRC-32C (Castagnoli), bit by bit: enough for a few test batches.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82f6_3b78 } else { crc >> 1 };
        }
    }
    !crc
}

/// A v2 batch around `records` (already encoded), with a valid CRC.
fn batch(attributes: i16, record_count: i32, records: &[u8]) -> Bytes {
    let mut after_crc = Vec::new();
    after_crc.extend(attributes.to_be_bytes());
    after_crc.extend(0i32.to_be_bytes()); // last offset delta
    after_crc.extend(1_700_000_000_000i64.to_be_bytes());
    after_crc.extend(1_700_000_000_000i64.to_be_bytes());
    after_crc.extend((-1i64).to_be_bytes()); // producer id
    after_crc.extend((-1i16).to_be_bytes());
    after_crc.extend((-1i32).to_be_bytes()); // base sequence
    after_crc.extend(record_count.to_be_bytes());
    after_crc.extend(records);
    let mut out = Vec::new();
    out.extend(0i64.to_be_bytes());
    out.extend(i32::try_from(4 + 1 + 4 + after_crc.len()).expect("small").to_be_bytes());
    out.extend((-1i32).to_be_bytes()); // partition leader epoch
    out.push(2);
    out.extend(crc32c(&after_crc).to_be_bytes());
    out.extend(after_crc);
    Bytes::from(out)
}

/// One record without key or value whose header count is i32::MAX
/// (zigzag varint 0xfffffffe).
const HEADER_BOMB_RECORD: [u8; 11] = [20, 0, 0, 0, 1, 1, 0xfe, 0xff, 0xff, 0xff, 0x0f];

#[test]
fn record_batches_that_claim_more_than_their_bytes_hold_are_refused() {
    use keel_error_codes::{CORRUPT_MESSAGE, INVALID_RECORD};
    use keel_kafka::records::decode_produced;
    let code = |record_set: &Bytes| decode_produced(record_set, 100_000).map_err(|error| (error.kafka_code(), error.to_string()));
    // 2^31 - 1 records claimed by a 61-byte batch: INVALID_RECORD (over the per-produce limit).
    let claimed = code(&batch(0, i32::MAX, &[]));
    assert!(matches!(&claimed, Err((INVALID_RECORD, message)) if message.contains("2147483647 records")), "{claimed:?}");
    // A negative count: CORRUPT_MESSAGE.
    assert!(matches!(code(&batch(0, -5, &[])), Err((CORRUPT_MESSAGE, _))));
    // A record claiming 2^31 - 1 headers: CORRUPT_MESSAGE.
    let headers = code(&batch(0, 1, &HEADER_BOMB_RECORD));
    assert!(matches!(&headers, Err((CORRUPT_MESSAGE, message)) if message.contains("2147483647 headers")), "{headers:?}");
    // A snappy (xerial) block of 6 bytes claiming 4 GiB uncompressed: CORRUPT_MESSAGE.
    let mut snappy = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
    snappy.extend(6u32.to_be_bytes());
    snappy.extend([0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]);
    let bomb = code(&batch(2, 1, &snappy));
    assert!(matches!(&bomb, Err((CORRUPT_MESSAGE, message)) if message.contains("claims 4294967295 uncompressed bytes")), "{bomb:?}");
    // The same shapes with honest counts still decode.
    let honest = code(&batch(0, 1, &[12, 0, 0, 0, 1, 1, 0]));
    assert!(honest.is_ok(), "{honest:?}");
}

/// Writes the fuzz seed corpus (`fuzz/corpus/`): one valid frame per served
/// API and version, and record sets in every compression. Run after
/// changing the served APIs or the samples:
/// `cargo test -p keel-kafka --test request_guard -- --ignored write_fuzz_corpus`
#[test]
#[ignore]
fn write_fuzz_corpus() {
    use kafka_protocol::records::Compression;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let requests = root.join("request_dispatch");
    let records = root.join("produce_records");
    for dir in [&requests, &records] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).expect("clear the old seeds");
        }
        std::fs::create_dir_all(dir).expect("corpus dir");
    }
    for (api_key, version, frame) in sample_requests::sample_frames(SUPPORTED_APIS) {
        std::fs::write(requests.join(format!("{api_key:?}-v{version}")), &frame).expect("write a seed");
    }
    for compression in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
        // First byte: the harness's switch (0: keep the CRC as it is).
        let mut seed = vec![0u8];
        seed.extend_from_slice(&sample_requests::record_batch(compression));
        std::fs::write(records.join(format!("{compression:?}")), seed).expect("write a seed");
    }
}
