//! One request frame (header + body, as the front gets it after the size
//! prefix) through the decoding guard, kafka-protocol's decoder and
//! `KafkaFront::handle` of a real single-node broker booted through keel-node
//! (on a temp dir), created once per fuzz process.
//!
//! Checks beyond "no panic, no abort":
//! - the guard and the decoder agree: a frame the guard accepts is read to
//!   the same byte by the decoder, and one the guard refuses for a reason
//!   the decoder can meet safely is refused by the decoder too;
//! - a frame with a whole header prefix is answered (never `Close`, which
//!   means Keel built a response it cannot encode), with its correlation id.

#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;
use keel_io::{Clock, Disk, NodeRng, RealDisk};
use keel_kafka::codec::{peek_header, Inbound};
use keel_kafka::guard::check_request;
use keel_kafka::Reply;
use keel_meta::admin_ops::TopicCreate;
use keel_node::{Listeners, Node, NodeConfig, NodeIdentity, Seams};
use libfuzzer_sys::fuzz_target;

/// The topic the seed corpus produces to and fetches from.
const TOPIC: &str = "fuzz";
/// A request still running after this is dropped (as when its connection
/// closes). A JoinGroup waits for the group's other members and may
/// legitimately take far longer; a short cut-off keeps the fuzzer fast.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(100);

struct Broker {
    runtime: tokio::runtime::Runtime,
    node: Node,
    _data: tempfile::TempDir,
}

fn broker() -> &'static Broker {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    BROKER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        // Under $TMPDIR: ci/fuzz.sh points it at a scratch dir it removes.
        let data = tempfile::Builder::new().prefix("keel-fuzz-broker-").tempdir().expect("temp dir");
        let root = data.path().to_str().expect("utf-8 temp path").to_string();
        let node = runtime.block_on(start_broker(root));
        Broker { runtime, node, _data: data }
    })
}

/// A single-node broker booted through keel-node, as `keel start` boots it.
async fn start_broker(root: String) -> Node {
    let disk = Disk::Real(RealDisk::open_root(&root).await.expect("open the data dir"));
    let identity = NodeIdentity::alone("keel-fuzz", "127.0.0.1");
    // Short waits keep the fuzzer fast: long polls, creates and a new
    // group's first rebalance are otherwise held for seconds.
    let config = NodeConfig {
        registration_lease_ms: 60_000,
        fetch_wait_max_ms: 10,
        create_topic_timeout_ms: 1_000,
        group_initial_rebalance_delay_ms: 0,
        ..NodeConfig::default()
    };
    let listeners = Listeners::bind("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0").await.expect("bind");
    let node = Node::start(identity, &config, Seams::new(disk, Clock::new(), NodeRng::from_entropy()), listeners, None).await.expect("start the node");
    let (meta, repl) = (node.meta(), node.repl());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !(meta.status().registered && meta.status().is_leader) {
        assert!(tokio::time::Instant::now() < deadline, "the single node did not become leader and register: {:?}", meta.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let create = TopicCreate { name: TOPIC.into(), partitions: 1, replication_factor: 1, configs: Vec::new(), validate_only: false };
    meta.create_topic(&create, 10_000).await.expect("create the fuzz topic");
    while repl.replica_status(TOPIC, 0).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the fuzz topic's replica did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node
}

/// Bytes the decoder reads without the guard, or its error.
fn decoded_length(api_key: ApiKey, version: i16, frame: &Bytes) -> Result<usize, String> {
    let mut body = frame.clone();
    RequestHeader::decode(&mut body, api_key.request_header_version(version))
        .and_then(|_| RequestKind::decode(api_key, &mut body, version))
        .map_err(|error| error.to_string())?;
    Ok(frame.len() - body.len())
}

fuzz_target!(|data: &[u8]| {
    let broker = broker();
    let frame = Bytes::copy_from_slice(data);
    let prefix = peek_header(&frame);
    if let Some(prefix) = prefix {
        if let Ok(api_key) = ApiKey::try_from(prefix.api_key) {
            match check_request(api_key, prefix.api_version, &frame) {
                Ok(walked) => {
                    if let Ok(read) = decoded_length(api_key, prefix.api_version, &frame) {
                        assert_eq!(walked, read, "guard and decoder end at different bytes");
                    }
                }
                Err(refusal) if refusal.decoder_fails_safely() => {
                    let decoded = decoded_length(api_key, prefix.api_version, &frame);
                    assert!(decoded.is_err(), "the guard refused ({refusal}) a frame the decoder takes");
                }
                // A count the bytes cannot back: kafka-protocol would reserve
                // it and abort. The front answers INVALID_REQUEST before
                // decoding (guard::decode_request), so nothing more to run.
                Err(_) => return,
            }
        }
    }
    let reply = broker.runtime.block_on(async { tokio::time::timeout(REQUEST_TIMEOUT, broker.node.kafka_front().handle(Inbound::Frame(frame.clone()))).await });
    match (reply, prefix) {
        (Err(_elapsed), _) => {}
        (Ok(Reply::Send(response)), Some(prefix)) => {
            assert!(response.len() >= 8, "a response frame holds a size and a correlation id");
            let size = i32::from_be_bytes(response[..4].try_into().expect("4 bytes"));
            assert_eq!(usize::try_from(size).ok(), Some(response.len() - 4), "response size prefix");
            let correlation_id = i32::from_be_bytes(response[4..8].try_into().expect("4 bytes"));
            assert_eq!(correlation_id, prefix.correlation_id, "response correlation id");
        }
        (Ok(Reply::Nothing), Some(prefix)) => assert_eq!(prefix.api_key, ApiKey::Produce as i16, "only an acks=0 produce goes unanswered"),
        (Ok(Reply::Close(reason)), Some(_)) => panic!("a request with a whole header was not answered: {reason}"),
        (Ok(Reply::Close(_)), None) => {}
        (Ok(other), None) => panic!("a frame shorter than a header prefix got {other:?}"),
    }
});
