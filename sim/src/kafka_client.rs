//! A minimal Kafka wire client for the simulator's workloads: one TCP
//! connection to one broker (madsim TCP under `--cfg madsim`), requests
//! framed and encoded with `kafka-protocol` exactly as a real client frames
//! them (size prefix, `RequestHeader`, body; correlation ids checked on the
//! way back), one request in flight at a time, each with a deadline in
//! simulated time.
//!
//! `KafkaConnection::request` is the generic call (any API key, version and
//! `RequestKind`); `metadata`, `init_producer_id`, `produce` and `fetch` are
//! helpers over it for the data workloads. Group requests (FindCoordinator,
//! JoinGroup, SyncGroup, Heartbeat, OffsetCommit...) go through `request`
//! the same way once the broker serves them.
//!
//! After any error the connection's byte stream is in an unknown state (a
//! response may still be on its way): the caller drops the connection and
//! opens a new one, as Kafka clients do after a request timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, FetchRequest, InitProducerIdRequest, MetadataRequest, ProduceRequest, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID, NO_SEQUENCE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The port every simulated broker serves Kafka on (and advertises in its
/// registration, so Metadata answers name it).
pub const KAFKA_PORT: u16 = 9092;
/// The largest response frame the client accepts.
const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The versions this client speaks: the newest Keel serves (crates/kafka
/// apis.rs), as a current Java client would negotiate them.
pub mod version {
    pub const API_VERSIONS: i16 = 3;
    pub const METADATA: i16 = 12;
    pub const PRODUCE: i16 = 9;
    pub const FETCH: i16 = 12;
    pub const INIT_PRODUCER_ID: i16 = 4;
}

/// Kafka error codes the workloads act on (the table the broker answers from).
pub mod code {
    pub use keel_error_codes::*;

    /// Errors a Kafka client retries (after refreshing its metadata for
    /// the leadership ones). Everything else is final for the request.
    pub fn is_retriable(code: i16) -> bool {
        matches!(
            code,
            CORRUPT_MESSAGE
                | UNKNOWN_TOPIC_OR_PARTITION
                | LEADER_NOT_AVAILABLE
                | NOT_LEADER_OR_FOLLOWER
                | REQUEST_TIMED_OUT
                | BROKER_NOT_AVAILABLE
                | NETWORK_EXCEPTION
                | COORDINATOR_LOAD_IN_PROGRESS
                | COORDINATOR_NOT_AVAILABLE
                | NOT_ENOUGH_REPLICAS
                | NOT_ENOUGH_REPLICAS_AFTER_APPEND
                | KAFKA_STORAGE_ERROR
                | FENCED_LEADER_EPOCH
                | UNKNOWN_LEADER_EPOCH
        )
    }

    /// Errors after which the client's idea of the partition leader is stale.
    pub fn is_stale_leader(code: i16) -> bool {
        matches!(code, UNKNOWN_TOPIC_OR_PARTITION | LEADER_NOT_AVAILABLE | NOT_LEADER_OR_FOLLOWER | FENCED_LEADER_EPOCH | UNKNOWN_LEADER_EPOCH)
    }
}

/// Why a request got no usable response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Nothing was sent.
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// Sent (maybe): no response within the request timeout.
    #[error("no response from {addr} within {timeout_ms} ms")]
    TimedOut { addr: String, timeout_ms: u64 },
    /// Sent (maybe): the connection broke before the response was whole.
    #[error("connection to {addr} lost: {reason}")]
    ConnectionLost { addr: String, reason: String },
    /// The broker answered with a bare error code (an API or version it
    /// does not serve, or a request it could not decode).
    #[error("{addr} answered with a bare error code {code}")]
    BareError { addr: String, code: i16 },
    /// The response does not decode, or answers another request.
    #[error("malformed response from {addr}: {reason}")]
    Malformed { addr: String, reason: String },
    /// ApiVersions says the broker does not serve a version this client speaks.
    #[error("{addr} does not serve {api:?} v{version} (it serves {served:?})")]
    Unsupported { addr: String, api: ApiKey, version: i16, served: Option<(i16, i16)> },
}

impl ClientError {
    /// Whether the broker may have acted on the request (so a retry may
    /// repeat an append that already happened).
    pub fn maybe_delivered(&self) -> bool {
        !matches!(self, ClientError::Connect { .. } | ClientError::Unsupported { .. })
    }
}

/// The (API, version) pairs the helpers below send.
pub const SPOKEN: &[(ApiKey, i16)] = &[
    (ApiKey::ApiVersions, version::API_VERSIONS),
    (ApiKey::Metadata, version::METADATA),
    (ApiKey::Produce, version::PRODUCE),
    (ApiKey::Fetch, version::FETCH),
    (ApiKey::InitProducerId, version::INIT_PRODUCER_ID),
];

/// One connection to one broker.
pub struct KafkaConnection {
    stream: TcpStream,
    addr: String,
    client_id: StrBytes,
    next_correlation_id: i32,
}

impl KafkaConnection {
    /// Connects to `addr` (`ip:port`) within `timeout`.
    pub async fn connect(addr: &str, client_id: &str, timeout: Duration) -> Result<KafkaConnection, ClientError> {
        let connect_error = |reason: String| ClientError::Connect { addr: addr.to_string(), reason };
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(connect_error(error.to_string())),
            Err(_) => return Err(connect_error(format!("no connection within {} ms", timeout.as_millis()))),
        };
        let _ = stream.set_nodelay(true);
        Ok(KafkaConnection { stream, addr: addr.to_string(), client_id: StrBytes::from_string(client_id.to_string()), next_correlation_id: 1 })
    }

    /// Connects and asks ApiVersions first, as Kafka clients do: an error
    /// unless the broker serves every version in `SPOKEN`.
    pub async fn connect_negotiated(addr: &str, client_id: &str, timeout: Duration) -> Result<KafkaConnection, ClientError> {
        let mut connection = KafkaConnection::connect(addr, client_id, timeout).await?;
        let served = connection.api_versions(timeout).await?;
        for (api, version) in SPOKEN {
            let range = served.get(&(*api as i16)).copied();
            if !range.is_some_and(|(min, max)| (min..=max).contains(version)) {
                return Err(ClientError::Unsupported { addr: addr.to_string(), api: *api, version: *version, served: range });
            }
        }
        Ok(connection)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends one request and waits up to `timeout` for its response.
    pub async fn request(&mut self, api_key: ApiKey, version: i16, request: &RequestKind, timeout: Duration) -> Result<ResponseKind, ClientError> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = self.encode_request(api_key, version, correlation_id, request)?;
        let addr = self.addr.clone();
        let exchange = async {
            self.stream.write_all(&frame).await?;
            // madsim's TCP sends what was written only on flush (as a
            // buffered writer would).
            self.stream.flush().await?;
            let mut size = [0u8; 4];
            self.stream.read_exact(&mut size).await?;
            let size = i32::from_be_bytes(size);
            let size = usize::try_from(size)
                .ok()
                .filter(|size| *size <= RESPONSE_BYTES_MAX)
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("response frame size {size}")))?;
            let mut body = vec![0u8; size];
            self.stream.read_exact(&mut body).await?;
            Ok::<Bytes, std::io::Error>(Bytes::from(body))
        };
        let mut body = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(body)) => body,
            Ok(Err(error)) => return Err(ClientError::ConnectionLost { addr, reason: error.to_string() }),
            Err(_) => return Err(ClientError::TimedOut { addr, timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX) }),
        };
        let raw = body.clone();
        let malformed = |reason: String| ClientError::Malformed { addr: addr.clone(), reason };
        let decoded =
            ResponseHeader::decode(&mut body, api_key.response_header_version(version)).map_err(|error| format!("header: {error}")).and_then(|header| {
                let response = ResponseKind::decode(api_key, &mut body, version).map_err(|error| format!("{api_key:?} v{version}: {error}"))?;
                Ok((header.correlation_id, response))
            });
        match decoded {
            Ok((answered, _)) if answered != correlation_id => {
                Err(malformed(format!("correlation id {answered} answers another request than {correlation_id}")))
            }
            Ok((_, response)) => Ok(response),
            // `codec::encode_bare_error`: a v0 header (the correlation id)
            // and nothing but an error code, whatever the API's layout.
            Err(_) if raw.len() == 6 && raw[..4] == correlation_id.to_be_bytes() => {
                Err(ClientError::BareError { addr, code: i16::from_be_bytes([raw[4], raw[5]]) })
            }
            Err(reason) => Err(malformed(reason)),
        }
    }

    fn encode_request(&self, api_key: ApiKey, version: i16, correlation_id: i32, request: &RequestKind) -> Result<Bytes, ClientError> {
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let encoded = header.encode(&mut buf, api_key.request_header_version(version)).and_then(|()| request.encode(&mut buf, version));
        // A request the client cannot encode is the workload's bug.
        encoded.unwrap_or_else(|error| panic!("{api_key:?} v{version} request does not encode: {error}"));
        let size = i32::try_from(buf.len() - 4).expect("requests are small");
        buf[0..4].copy_from_slice(&size.to_be_bytes());
        Ok(buf.freeze())
    }

    /// ApiVersions: the broker's (api key, min, max) table.
    pub async fn api_versions(&mut self, timeout: Duration) -> Result<BTreeMap<i16, (i16, i16)>, ClientError> {
        let request = RequestKind::ApiVersions(
            ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("keel-sim"))
                .with_client_software_version(StrBytes::from_static_str("0.1")),
        );
        match self.request(ApiKey::ApiVersions, version::API_VERSIONS, &request, timeout).await? {
            ResponseKind::ApiVersions(response) => Ok(response.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect()),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Metadata for `topics` (never auto-creating them).
    pub async fn metadata(&mut self, topics: &[&str], timeout: Duration) -> Result<ClusterView, ClientError> {
        let mut request = MetadataRequest::default();
        request.topics = Some(topics.iter().map(|name| MetadataRequestTopic::default().with_name(Some(topic_name(name)))).collect());
        request.allow_auto_topic_creation = false;
        let response = match self.request(ApiKey::Metadata, version::METADATA, &RequestKind::Metadata(request), timeout).await? {
            ResponseKind::Metadata(response) => response,
            other => return Err(self.unexpected(&other)),
        };
        let mut view = ClusterView::default();
        for broker in &response.brokers {
            view.brokers.insert(broker.node_id.0, format!("{}:{}", broker.host.as_str(), broker.port));
        }
        for topic in &response.topics {
            let name = topic.name.as_ref().map(|n| n.0.as_str().to_string()).unwrap_or_default();
            if topic.error_code != code::NONE {
                view.topic_errors.insert(name.clone(), topic.error_code);
            }
            for partition in &topic.partitions {
                let leader = PartitionLeader { error_code: partition.error_code, leader_id: partition.leader_id.0, leader_epoch: partition.leader_epoch };
                view.partitions.insert((name.clone(), partition.partition_index), leader);
            }
        }
        Ok(view)
    }

    /// InitProducerId for an idempotent (non-transactional) producer:
    /// (error code, producer id, producer epoch).
    pub async fn init_producer_id(&mut self, timeout: Duration) -> Result<(i16, i64, i16), ClientError> {
        let mut request = InitProducerIdRequest::default();
        request.transactional_id = None;
        request.transaction_timeout_ms = 60_000;
        match self.request(ApiKey::InitProducerId, version::INIT_PRODUCER_ID, &RequestKind::InitProducerId(request), timeout).await? {
            ResponseKind::InitProducerId(response) => Ok((response.error_code, response.producer_id.0, response.producer_epoch)),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Produce one record set to one partition; `broker_timeout_ms` is how
    /// long the broker waits for acks=all (the request's `timeout_ms`).
    pub async fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        acks: i16,
        records: Bytes,
        broker_timeout_ms: i32,
        timeout: Duration,
    ) -> Result<ProducePartition, ClientError> {
        let data = PartitionProduceData::default().with_index(partition).with_records(Some(records));
        let request = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(broker_timeout_ms)
            .with_topic_data(vec![TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(vec![data])]);
        let response = match self.request(ApiKey::Produce, version::PRODUCE, &RequestKind::Produce(request), timeout).await? {
            ResponseKind::Produce(response) => response,
            other => return Err(self.unexpected(&other)),
        };
        let answer = response
            .responses
            .iter()
            .filter(|t| t.name.0.as_str() == topic)
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == partition)
            .ok_or_else(|| ClientError::Malformed { addr: self.addr.clone(), reason: format!("no answer for {topic}-{partition}") })?;
        Ok(ProducePartition {
            error_code: answer.error_code,
            base_offset: answer.base_offset,
            error_message: answer.error_message.as_ref().map(|m| m.as_str().to_string()),
        })
    }

    /// Fetch one partition from `offset` (a consumer's fetch: replica id -1).
    #[allow(clippy::too_many_arguments)]
    pub async fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        current_leader_epoch: i32,
        max_wait_ms: i32,
        bytes_max: i32,
        timeout: Duration,
    ) -> Result<FetchedPartition, ClientError> {
        let wanted = FetchPartition::default()
            .with_partition(partition)
            .with_current_leader_epoch(current_leader_epoch)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(bytes_max);
        let mut request = FetchRequest::default().with_max_wait_ms(max_wait_ms).with_min_bytes(1).with_max_bytes(bytes_max);
        request.topics = vec![FetchTopic::default().with_topic(topic_name(topic)).with_partitions(vec![wanted])];
        let response = match self.request(ApiKey::Fetch, version::FETCH, &RequestKind::Fetch(request), timeout).await? {
            ResponseKind::Fetch(response) => response,
            other => return Err(self.unexpected(&other)),
        };
        let malformed = |reason: String| ClientError::Malformed { addr: self.addr.clone(), reason };
        if response.error_code != code::NONE {
            return Ok(FetchedPartition { error_code: response.error_code, high_watermark: -1, records: Vec::new() });
        }
        let answer = response
            .responses
            .iter()
            .filter(|t| t.topic.0.as_str() == topic)
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| malformed(format!("no answer for {topic}-{partition}")))?;
        let mut records = Vec::new();
        if let Some(bytes) = &answer.records {
            if !bytes.is_empty() {
                let mut input = bytes.clone();
                let sets = RecordBatchDecoder::decode_all(&mut input).map_err(|error| malformed(format!("record batches: {error}")))?;
                records = sets.into_iter().flat_map(|set| set.records).collect();
            }
        }
        Ok(FetchedPartition { error_code: answer.error_code, high_watermark: answer.high_watermark, records })
    }

    fn unexpected(&self, response: &ResponseKind) -> ClientError {
        ClientError::Malformed { addr: self.addr.clone(), reason: format!("a response of another API: {response:?}") }
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// One partition's leadership as a Metadata response gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionLeader {
    pub error_code: i16,
    /// -1: no leader.
    pub leader_id: i32,
    pub leader_epoch: i32,
}

/// What one Metadata response says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// Broker id -> `host:port`.
    pub brokers: BTreeMap<i32, String>,
    pub partitions: BTreeMap<(String, i32), PartitionLeader>,
    pub topic_errors: BTreeMap<String, i16>,
}

/// The answer for one partition of a Produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducePartition {
    pub error_code: i16,
    pub base_offset: i64,
    pub error_message: Option<String>,
}

/// The answer for one partition of a Fetch, its batches decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct FetchedPartition {
    pub error_code: i16,
    pub high_watermark: i64,
    pub records: Vec<Record>,
}

/// An idempotent producer's stamp on a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchProducer {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// One v2 record batch (magic 2, uncompressed) of `values`, offsets
/// relative from 0, every record stamped `timestamp_ms`; with `producer`,
/// the idempotent producer's id, epoch and consecutive sequences.
pub fn encode_batch(values: &[Vec<u8>], producer: Option<BatchProducer>, timestamp_ms: i64) -> Bytes {
    assert!(!values.is_empty(), "a batch has records");
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(index, value)| {
            let index_i32 = i32::try_from(index).expect("small batches");
            let (producer_id, producer_epoch, sequence) = match producer {
                Some(p) => (p.producer_id, p.producer_epoch, p.base_sequence + index_i32),
                // The encoder keeps records in one batch while offset minus
                // sequence stays constant; the base sequence is NO_SEQUENCE.
                None => (NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE.wrapping_add(index_i32)),
            };
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
                producer_id,
                producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset: i64::from(index_i32),
                sequence,
                timestamp: timestamp_ms,
                key: None,
                value: Some(Bytes::from(value.clone())),
                headers: Default::default(),
            }
        })
        .collect();
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut out, records.iter(), &options).expect("an uncompressed v2 batch encodes");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idempotent_batch_decodes_to_its_values_producer_and_sequences() {
        let values = vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()];
        let producer = BatchProducer { producer_id: 7, producer_epoch: 0, base_sequence: 12 };
        let mut bytes = encode_batch(&values, Some(producer), 1_000);
        let sets = RecordBatchDecoder::decode_all(&mut bytes).expect("decodes");
        assert_eq!(sets.len(), 1, "one batch");
        let records = &sets[0].records;
        assert_eq!(records.iter().map(|r| r.value.clone().expect("value").to_vec()).collect::<Vec<_>>(), values);
        assert_eq!(records.iter().map(|r| (r.producer_id, r.producer_epoch, r.sequence)).collect::<Vec<_>>(), vec![(7, 0, 12), (7, 0, 13), (7, 0, 14)]);
    }

    #[test]
    fn a_plain_batch_has_no_producer() {
        let mut bytes = encode_batch(&[b"x".to_vec(), b"y".to_vec()], None, 5);
        let sets = RecordBatchDecoder::decode_all(&mut bytes).expect("decodes");
        assert_eq!(sets.len(), 1, "one batch");
        assert!(sets[0].records.iter().all(|r| r.producer_id == NO_PRODUCER_ID));
    }

    #[test]
    fn only_listed_codes_are_retried() {
        assert!(code::is_retriable(code::NOT_LEADER_OR_FOLLOWER));
        assert!(code::is_retriable(code::NOT_ENOUGH_REPLICAS_AFTER_APPEND));
        assert!(!code::is_retriable(code::OUT_OF_ORDER_SEQUENCE_NUMBER));
        assert!(!code::is_retriable(code::INVALID_PRODUCER_EPOCH));
        assert!(code::is_stale_leader(code::FENCED_LEADER_EPOCH));
        assert!(!code::is_stale_leader(code::REQUEST_TIMED_OUT));
    }
}
