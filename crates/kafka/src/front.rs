//! Request dispatch: one decoded Kafka request in, its response out, served
//! from this broker's metadata and replication drivers.
//!
//! Every field a response version does not have is left at its default:
//! kafka-protocol refuses to encode a set field the version lacks, so each
//! version-dependent field below is set behind the version that has it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest, CreateTopicsResponse, DescribeClusterRequest, DescribeClusterResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ProduceRequest, ProduceResponse, RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use keel_meta::admin_ops::{MetaOpError, TopicCreate};
use keel_meta::driver::MetaHandle;
use keel_meta::state::{validate_topic_name, MetadataState, Partition};
use keel_meta::MetadataError;
use keel_repl::driver::{Acks, ProduceRequest as ReplProduce, ReadLimit, ReplHandle, MIN_INSYNC_REPLICAS_CONFIG};
use keel_repl::ProducerStamp;

use crate::apis::{is_supported, SUPPORTED_APIS};
use crate::codec::{encode_bare_error, encode_response, peek_header, Inbound};
use crate::group_driver::GroupHandle;
use crate::metrics::{KafkaMetrics, ProduceRefusalNotice};
use crate::records::{decode_produced, decode_stored_record, encode_fetched, LogRecord};
use keel_error_codes as code;
use keel_io::Clock;

/// What the front serves with; every figure has Kafka's name in the docs.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    pub node_id: u64,
    pub cluster_id: String,
    /// `socket.request.max.bytes`: larger request frames are refused.
    pub frame_bytes_max: usize,
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// `num.partitions`: partitions of an auto-created topic or a create with -1.
    pub default_partitions: u32,
    /// `default.replication.factor`.
    pub default_replication_factor: u32,
    /// `min.insync.replicas` for topics that do not set it (reported by DescribeConfigs).
    pub min_insync_replicas_default: usize,
    /// `replica.lag.time.max.ms` (reported by DescribeConfigs).
    pub replica_lag_time_max_ms: u64,
    /// `message.max.bytes`: the largest record set one partition of a produce may carry.
    pub message_bytes_max: usize,
    /// Records one partition of one produce may carry.
    pub produce_records_max: usize,
    /// How often a parked fetch looks for new records.
    pub fetch_poll_interval_ms: u64,
    /// The longest a fetch is held, whatever the client asks.
    pub fetch_wait_ms_max: u64,
    /// The longest a create (CreateTopics or auto-create) keeps retrying.
    pub create_budget_ms: u64,
    /// Kafka's `group.*` settings for the consumer-group coordinator.
    pub group: keel_group::Config,
}

impl KafkaConfig {
    pub fn new(node_id: u64, cluster_id: &str) -> Self {
        KafkaConfig {
            node_id,
            cluster_id: cluster_id.to_string(),
            frame_bytes_max: crate::codec::FRAME_BYTES_MAX_DEFAULT,
            auto_create_topics: true,
            default_partitions: 1,
            default_replication_factor: 1,
            min_insync_replicas_default: 1,
            replica_lag_time_max_ms: 10_000,
            message_bytes_max: 1024 * 1024,
            produce_records_max: 100_000,
            fetch_poll_interval_ms: 5,
            fetch_wait_ms_max: 30_000,
            create_budget_ms: 15_000,
            group: keel_group::Config::default(),
        }
    }
}

/// Who sent a request: the header's client id and the connection's address.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Client<'a> {
    pub id: &'a str,
    pub host: &'a str,
}

/// One config as DescribeConfigs lists it: name, value, config source.
type ConfigEntry = (&'static str, String, i8);

/// What to do after a frame.
#[derive(Debug)]
pub enum Reply {
    Send(Bytes),
    /// acks=0 produce: Kafka sends nothing back.
    Nothing,
    /// The stream cannot be read on (or answered) safely.
    Close(String),
}

#[derive(Clone)]
pub struct KafkaFront {
    pub(crate) meta: MetaHandle,
    pub(crate) repl: ReplHandle,
    pub(crate) config: Arc<KafkaConfig>,
    pub(crate) groups: GroupHandle,
    /// Per group: commits hold it shared, offset fetches exclusively.
    pub(crate) group_commit_locks: Arc<std::sync::Mutex<std::collections::BTreeMap<String, Arc<tokio::sync::RwLock<()>>>>>,
    /// Producer ids this broker was handed by the metadata and not given out yet.
    pub(crate) producer_ids: Arc<tokio::sync::Mutex<std::ops::Range<u64>>>,
    /// Where produce refusals are counted (the listener's, see `with_metrics`).
    pub(crate) metrics: Arc<KafkaMetrics>,
}

pub(crate) fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

pub(crate) fn topic_name(text: &str) -> TopicName {
    TopicName(str_bytes(text))
}

fn broker_id(id: u64) -> BrokerId {
    BrokerId(i32::try_from(id).unwrap_or(-1))
}

fn epoch_i32(epoch: u64) -> i32 {
    i32::try_from(epoch).unwrap_or(i32::MAX)
}

fn offset_i64(offset: u64) -> i64 {
    i64::try_from(offset).expect("log offsets fit i64")
}

impl KafkaFront {
    /// The front of one broker; starts its group coordinator task (call it
    /// inside the node's runtime, so the task lives and dies with the node).
    /// `clock` is the node's (the group coordinator's session timeouts run on it).
    pub fn new(meta: MetaHandle, repl: ReplHandle, config: KafkaConfig, clock: Clock) -> Self {
        let groups = GroupHandle::start(meta.clone(), clock, config.group.clone());
        KafkaFront {
            meta,
            repl,
            config: Arc::new(config),
            groups,
            group_commit_locks: Arc::default(),
            producer_ids: Arc::new(tokio::sync::Mutex::new(0..0)),
            metrics: Arc::new(KafkaMetrics::new()),
        }
    }

    /// Counts into `metrics` (the listener's, which the admin endpoint
    /// serves) instead of the front's own.
    pub fn with_metrics(mut self, metrics: Arc<KafkaMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// Answers one inbound frame from a client whose address is unknown.
    pub async fn handle(&self, inbound: Inbound) -> Reply {
        self.handle_from("", inbound).await
    }

    /// Answers one inbound frame from `client_host` (Kafka's "/ip" form,
    /// reported by DescribeGroups).
    pub async fn handle_from(&self, client_host: &str, inbound: Inbound) -> Reply {
        let frame = match inbound {
            Inbound::Oversized { size_bytes, head } => {
                let limit = self.config.frame_bytes_max;
                return match peek_header(&head) {
                    Some(prefix) => {
                        tracing::warn!(size_bytes, limit, api_key = prefix.api_key, "request frame larger than socket.request.max.bytes; refused");
                        Reply::Send(encode_bare_error(prefix.correlation_id, code::MESSAGE_TOO_LARGE))
                    }
                    None => Reply::Close(format!("frame of {size_bytes} bytes is over the limit of {limit}")),
                };
            }
            Inbound::Frame(frame) => frame,
        };
        let Some(prefix) = peek_header(&frame) else {
            return Reply::Close(format!("frame of {} bytes is shorter than a request header", frame.len()));
        };
        let correlation_id = prefix.correlation_id;
        if !is_supported(prefix.api_key, prefix.api_version) {
            if prefix.api_key == ApiKey::ApiVersions as i16 {
                // Kafka's rule: an ApiVersions the broker cannot parse gets a
                // v0 answer listing what it can, so the client can retry.
                let mut body = api_versions_body();
                body.error_code = code::UNSUPPORTED_VERSION;
                return self.encoded(ApiKey::ApiVersions, 0, correlation_id, &ResponseKind::ApiVersions(body));
            }
            tracing::debug!(api_key = prefix.api_key, api_version = prefix.api_version, "unsupported API or version");
            return Reply::Send(encode_bare_error(correlation_id, code::UNSUPPORTED_VERSION));
        }
        let api_key = ApiKey::try_from(prefix.api_key).expect("served APIs are known to kafka-protocol");
        let version = prefix.api_version;
        // The guard first: kafka-protocol reserves memory for array counts
        // read off the wire before it reads an element (guard.rs).
        let decoded = crate::guard::decode_request(api_key, version, &frame);
        let (header, request) = match decoded {
            Ok(decoded) => decoded,
            Err(error) => {
                tracing::debug!(?api_key, version, %error, "undecodable request");
                return Reply::Send(encode_bare_error(correlation_id, code::INVALID_REQUEST));
            }
        };
        let client_id = header.client_id.as_ref().map_or("", |id| id.as_str());
        match self.dispatch(version, Client { id: client_id, host: client_host }, request).await {
            Some(response) => self.encoded(api_key, version, correlation_id, &response),
            None => Reply::Nothing,
        }
    }

    fn encoded(&self, api_key: ApiKey, version: i16, correlation_id: i32, response: &ResponseKind) -> Reply {
        match encode_response(api_key, version, correlation_id, response) {
            Ok(bytes) => Reply::Send(bytes),
            // A response Keel built but cannot encode is Keel's bug; the
            // client cannot be answered on this stream any more.
            Err(error) => {
                tracing::error!(%error, "cannot encode a response");
                Reply::Close(error)
            }
        }
    }

    async fn dispatch(&self, version: i16, client: Client<'_>, request: RequestKind) -> Option<ResponseKind> {
        Some(match request {
            RequestKind::ApiVersions(request) => ResponseKind::ApiVersions(self.api_versions(version, request)),
            RequestKind::Metadata(request) => ResponseKind::Metadata(self.metadata(version, request).await),
            RequestKind::Produce(request) => return self.produce(version, request).await.map(ResponseKind::Produce),
            RequestKind::Fetch(request) => ResponseKind::Fetch(self.fetch(version, request).await),
            RequestKind::ListOffsets(request) => ResponseKind::ListOffsets(self.list_offsets(version, request).await),
            RequestKind::OffsetForLeaderEpoch(request) => ResponseKind::OffsetForLeaderEpoch(self.offset_for_leader_epoch(request).await),
            RequestKind::CreateTopics(request) => ResponseKind::CreateTopics(self.create_topics(version, request).await),
            RequestKind::DescribeConfigs(request) => ResponseKind::DescribeConfigs(self.describe_configs(version, request)),
            RequestKind::DescribeCluster(request) => ResponseKind::DescribeCluster(self.describe_cluster(version, request)),
            RequestKind::DeleteTopics(request) => ResponseKind::DeleteTopics(self.delete_topics(version, request).await),
            RequestKind::CreatePartitions(request) => ResponseKind::CreatePartitions(self.create_partitions(version, request).await),
            RequestKind::InitProducerId(request) => ResponseKind::InitProducerId(self.init_producer_id(request).await),
            RequestKind::FindCoordinator(request) => ResponseKind::FindCoordinator(self.find_coordinator(version, request)),
            RequestKind::JoinGroup(request) => ResponseKind::JoinGroup(self.join_group(version, client, request).await),
            RequestKind::SyncGroup(request) => ResponseKind::SyncGroup(self.sync_group(version, request).await),
            RequestKind::Heartbeat(request) => ResponseKind::Heartbeat(self.heartbeat(request).await),
            RequestKind::LeaveGroup(request) => ResponseKind::LeaveGroup(self.leave_group(version, request).await),
            RequestKind::OffsetCommit(request) => ResponseKind::OffsetCommit(self.offset_commit(version, request).await),
            RequestKind::OffsetFetch(request) => ResponseKind::OffsetFetch(self.offset_fetch(version, request).await),
            RequestKind::ListGroups(request) => ResponseKind::ListGroups(self.list_groups(version, request).await),
            RequestKind::DescribeGroups(request) => ResponseKind::DescribeGroups(self.describe_groups(version, request).await),
            other => unreachable!("an API outside SUPPORTED_APIS passed the version check: {other:?}"),
        })
    }

    fn metadata_state(&self) -> Arc<MetadataState> {
        self.meta.feed().current()
    }

    fn api_versions(&self, _version: i16, _request: ApiVersionsRequest) -> ApiVersionsResponse {
        api_versions_body()
    }

    fn live_brokers<'a>(&self, state: &'a MetadataState) -> impl Iterator<Item = &'a keel_meta::state::Broker> {
        state.brokers().filter(|broker| !broker.fenced)
    }

    fn controller_id(&self) -> BrokerId {
        self.meta.status().leader_id.map_or(BrokerId(-1), broker_id)
    }

    async fn metadata(&self, version: i16, request: MetadataRequest) -> MetadataResponse {
        let mut state = self.metadata_state();
        let requested: Option<Vec<String>> = match request.topics {
            // v0 has no null: an empty list means every topic.
            Some(topics) if version == 0 && topics.is_empty() => None,
            Some(topics) => Some(topics.into_iter().filter_map(|t| t.name.map(|n| n.0.as_str().to_string())).collect()),
            None => None,
        };
        let allow_create = self.config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
        let mut creation_errors: Vec<(String, i16)> = Vec::new();
        if let Some(names) = &requested {
            let missing: BTreeSet<&String> = names.iter().filter(|name| state.topic(name).is_none()).collect();
            for name in missing {
                if validate_topic_name(name).is_err() {
                    creation_errors.push((name.clone(), code::INVALID_TOPIC_EXCEPTION));
                } else if !allow_create {
                    creation_errors.push((name.clone(), code::UNKNOWN_TOPIC_OR_PARTITION));
                } else {
                    let create = self.default_create(name);
                    match self.meta.create_topic(&create, self.config.create_budget_ms).await {
                        Ok(_) => {
                            tracing::info!(topic = %name, partitions = create.partitions, replication_factor = create.replication_factor, "auto-created topic");
                            warn_if_min_insync_above_replication_factor(&create, self.config.min_insync_replicas_default);
                        }
                        Err(MetaOpError::Refused(MetadataError::TopicAlreadyExists(_))) => {}
                        Err(error) => {
                            tracing::warn!(topic = %name, %error, "auto-create failed");
                            creation_errors.push((name.clone(), create_error_code(&error)));
                        }
                    }
                }
            }
            state = self.metadata_state();
        }
        let mut response = MetadataResponse::default();
        response.brokers = self
            .live_brokers(&state)
            .map(|broker| {
                let mut entry = MetadataResponseBroker::default()
                    .with_node_id(broker_id(broker.broker_id))
                    .with_host(str_bytes(&broker.host))
                    .with_port(i32::try_from(broker.port).unwrap_or(-1));
                if version >= 1 {
                    entry.rack = broker.rack.as_deref().map(str_bytes);
                }
                entry
            })
            .collect();
        if version >= 2 {
            response.cluster_id = Some(str_bytes(&self.config.cluster_id));
        }
        if version >= 1 {
            response.controller_id = self.controller_id();
        }
        let names: Vec<String> = requested.unwrap_or_else(|| state.topics().map(|t| t.name.clone()).collect());
        for name in names {
            let mut topic = MetadataResponseTopic::default().with_name(Some(topic_name(&name)));
            if let Some((_, error_code)) = creation_errors.iter().find(|(n, _)| *n == name) {
                topic.error_code = *error_code;
            } else if let Some(found) = state.topic(&name) {
                topic.partitions = found
                    .partitions
                    .iter()
                    .enumerate()
                    .map(|(index, partition)| {
                        let mut entry = MetadataResponsePartition::default()
                            .with_partition_index(i32::try_from(index).expect("partition count fits i32"))
                            .with_leader_id(partition.leader.map_or(BrokerId(-1), broker_id))
                            .with_replica_nodes(partition.replicas.iter().copied().map(broker_id).collect())
                            .with_isr_nodes(partition.isr.iter().copied().map(broker_id).collect());
                        if partition.leader.is_none() {
                            entry.error_code = code::LEADER_NOT_AVAILABLE;
                        }
                        if version >= 7 {
                            entry.leader_epoch = epoch_i32(partition.leader_epoch);
                        }
                        if version >= 5 {
                            entry.offline_replicas = partition.replicas.iter().copied().filter(|id| !state.is_live(*id)).map(broker_id).collect();
                        }
                        entry
                    })
                    .collect();
            } else {
                topic.error_code = code::UNKNOWN_TOPIC_OR_PARTITION;
            }
            response.topics.push(topic);
        }
        response
    }

    fn default_create(&self, name: &str) -> TopicCreate {
        TopicCreate {
            name: name.to_string(),
            partitions: self.config.default_partitions,
            replication_factor: self.config.default_replication_factor,
            configs: Vec::new(),
            validate_only: false,
        }
    }

    /// A partition as a request names it, checked against the metadata.
    fn locate<'a>(&self, state: &'a MetadataState, topic: &str, partition: i32) -> Result<&'a Partition, i16> {
        if validate_topic_name(topic).is_err() {
            return Err(code::INVALID_TOPIC_EXCEPTION);
        }
        u32::try_from(partition).ok().and_then(|index| state.partition(topic, index)).ok_or(code::UNKNOWN_TOPIC_OR_PARTITION)
    }

    /// The checks every consumer-facing read shares: the partition exists,
    /// this broker leads it, and the client's leader epoch (when given) is
    /// the current one. Returns the partition and its index.
    fn led_partition<'a>(&self, state: &'a MetadataState, topic: &str, partition: i32, current_leader_epoch: i32) -> Result<(&'a Partition, u32), i16> {
        let found = self.locate(state, topic, partition)?;
        if found.leader != Some(self.config.node_id) {
            return Err(code::NOT_LEADER_OR_FOLLOWER);
        }
        if current_leader_epoch >= 0 {
            let current = i64::try_from(found.leader_epoch).unwrap_or(i64::MAX);
            match i64::from(current_leader_epoch).cmp(&current) {
                std::cmp::Ordering::Less => return Err(code::FENCED_LEADER_EPOCH),
                std::cmp::Ordering::Greater => return Err(code::UNKNOWN_LEADER_EPOCH),
                std::cmp::Ordering::Equal => {}
            }
        }
        Ok((found, u32::try_from(partition).expect("located partitions are >= 0")))
    }

    async fn produce(&self, version: i16, request: ProduceRequest) -> Option<ProduceResponse> {
        let acks = Acks::from_kafka(request.acks);
        let state = self.metadata_state();
        let timeout_ms = u64::try_from(request.timeout_ms.max(0)).unwrap_or(0);
        let transactional = request.transactional_id.is_some();
        let mut pending = Vec::new();
        for topic in request.topic_data {
            let name = topic.name.0.as_str().to_string();
            let mut partitions = Vec::new();
            for partition in topic.partition_data {
                let index = partition.index;
                let refusal: Result<_, (i16, String)> = (|| {
                    let acks = acks.clone().map_err(|error| (code::INVALID_REQUIRED_ACKS, error.to_string()))?;
                    if transactional {
                        return Err((code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "transactions are not supported by Keel".to_string()));
                    }
                    if let Err(error_code) = self.locate(&state, &name, index) {
                        return Err((error_code, format!("{name}-{index} is not a partition of this cluster")));
                    }
                    let records = partition.records.unwrap_or_default();
                    if records.len() > self.config.message_bytes_max {
                        return Err((
                            code::MESSAGE_TOO_LARGE,
                            format!("record set of {} bytes exceeds message.max.bytes {}", records.len(), self.config.message_bytes_max),
                        ));
                    }
                    let produced = decode_produced(&records, self.config.produce_records_max).map_err(|error| (error.kafka_code(), error.to_string()))?;
                    let index = u32::try_from(index).expect("located partitions are >= 0");
                    let record_count = produced.stored.len();
                    let mut repl_request = ReplProduce::new(&name, index, acks, produced.stored, timeout_ms);
                    repl_request.producer = produced.producer.map(|p| ProducerStamp::batch(p.producer_id, p.producer_epoch, p.base_sequence, record_count));
                    Ok(repl_request)
                })();
                let task = match refusal {
                    Ok(repl_request) => {
                        let repl = self.repl.clone();
                        Ok(tokio::spawn(async move { repl.produce(repl_request).await }))
                    }
                    Err(refused) => Err(refused),
                };
                partitions.push((index, task));
            }
            pending.push((name, partitions));
        }
        let mut response = ProduceResponse::default();
        for (name, partitions) in pending {
            let mut topic = TopicProduceResponse::default().with_name(topic_name(&name));
            for (index, task) in partitions {
                let outcome = match task {
                    Ok(handle) => match handle.await {
                        Ok(Ok(produced)) => Ok(produced.base_offset),
                        Ok(Err(error)) => Err((error.kafka_code(), error.to_string())),
                        Err(join_error) => Err((code::UNKNOWN_SERVER_ERROR, format!("produce task failed: {join_error}"))),
                    },
                    Err(refused) => Err(refused),
                };
                let known = u32::try_from(index).is_ok_and(|partition| state.partition(&name, partition).is_some());
                let refusal = outcome.as_ref().err().map(|(error_code, message)| (*error_code, message.as_str()));
                match self.metrics.record_produce_outcome(&name, index, known, refusal) {
                    Some(notice @ ProduceRefusalNotice::IsrTooSmall { error_code }) => {
                        let message = refusal.map_or("", |(_, message)| message);
                        tracing::info!(topic = %name, partition = index, error_code, %message, "{}", notice.message());
                    }
                    Some(notice @ ProduceRefusalNotice::AcceptedAgain { refused }) => {
                        tracing::info!(topic = %name, partition = index, refused, "{}", notice.message())
                    }
                    None => {}
                }
                let mut entry = PartitionProduceResponse::default().with_index(index);
                match outcome {
                    Ok(base_offset) => entry.base_offset = offset_i64(base_offset),
                    Err((error_code, message)) => {
                        tracing::debug!(topic = %name, partition = index, error_code, %message, "produce refused");
                        entry.error_code = error_code;
                        if version >= 8 {
                            entry.error_message = Some(str_bytes(&message));
                        }
                    }
                }
                topic.partition_responses.push(entry);
            }
            response.responses.push(topic);
        }
        // acks=0: the producer reads no answer (the appends still happened).
        (request.acks != 0).then_some(response)
    }

    async fn fetch(&self, version: i16, request: FetchRequest) -> FetchResponse {
        if request.replica_id.0 >= 0 {
            let mut response = FetchResponse::default();
            if version >= 7 {
                response.error_code = code::INVALID_REQUEST;
            }
            return response;
        }
        let wait_ms = u64::try_from(request.max_wait_ms.max(0)).unwrap_or(0).min(self.config.fetch_wait_ms_max);
        let min_bytes = usize::try_from(request.min_bytes.max(0)).unwrap_or(0);
        let response_bytes_max = usize::try_from(request.max_bytes.max(0)).unwrap_or(0);
        let deadline = tokio::time::sleep(Duration::from_millis(wait_ms));
        tokio::pin!(deadline);
        let mut expired = wait_ms == 0;
        loop {
            let (response, bytes, refused) = self.fetch_once(version, &request, response_bytes_max).await;
            if bytes >= min_bytes.max(1) || refused || expired {
                return response;
            }
            tokio::select! {
                biased;
                _ = &mut deadline => expired = true,
                _ = tokio::time::sleep(Duration::from_millis(self.config.fetch_poll_interval_ms)) => {}
            }
        }
    }

    /// One pass over the requested partitions: the response, its record
    /// bytes, and whether any partition was refused (answered at once).
    async fn fetch_once(&self, version: i16, request: &FetchRequest, response_bytes_max: usize) -> (FetchResponse, usize, bool) {
        let state = self.metadata_state();
        let mut response = FetchResponse::default();
        let mut bytes_total = 0usize;
        let mut refused = false;
        for topic in &request.topics {
            let name = topic.topic.0.as_str();
            let mut topic_response = FetchableTopicResponse::default().with_topic(topic.topic.clone());
            for partition in &topic.partitions {
                let mut entry = PartitionData::default().with_partition_index(partition.partition);
                let budget = usize::try_from(partition.partition_max_bytes.max(0)).unwrap_or(0).min(response_bytes_max.saturating_sub(bytes_total));
                match self.fetch_partition(&state, name, partition.partition, partition.current_leader_epoch, partition.fetch_offset, budget.max(1)).await {
                    Ok((records, log_start_offset, high_watermark)) => {
                        bytes_total += records.len();
                        entry.high_watermark = offset_i64(high_watermark);
                        entry.last_stable_offset = offset_i64(high_watermark);
                        if version >= 5 {
                            entry.log_start_offset = offset_i64(log_start_offset);
                        }
                        entry.records = Some(records);
                    }
                    Err(error_code) => {
                        refused = true;
                        entry.error_code = error_code;
                        entry.high_watermark = -1;
                        entry.records = Some(Bytes::new());
                    }
                }
                topic_response.partitions.push(entry);
            }
            response.responses.push(topic_response);
        }
        (response, bytes_total, refused)
    }

    async fn fetch_partition(
        &self,
        state: &MetadataState,
        topic: &str,
        partition: i32,
        current_leader_epoch: i32,
        fetch_offset: i64,
        bytes_max: usize,
    ) -> Result<(Bytes, u64, u64), i16> {
        let (_, index) = self.led_partition(state, topic, partition, current_leader_epoch)?;
        let offset = u64::try_from(fetch_offset).map_err(|_| code::OFFSET_OUT_OF_RANGE)?;
        let read = self.repl.read(topic, index, offset, bytes_max, ReadLimit::HighWatermark).await.map_err(|error| error.kafka_code())?;
        let log_records: Vec<LogRecord<'_>> =
            read.records.iter().map(|r| LogRecord { offset: r.offset, leader_epoch: r.leader_epoch, stamp: r.stamp, stored: &r.value }).collect();
        let batches = encode_fetched(&log_records).map_err(|error| {
            tracing::error!(topic, partition, %error, "stored records do not convert to a batch");
            code::CORRUPT_MESSAGE
        })?;
        Ok((batches, read.log_start_offset, read.high_watermark))
    }

    async fn list_offsets(&self, version: i16, request: ListOffsetsRequest) -> ListOffsetsResponse {
        let state = self.metadata_state();
        let mut response = ListOffsetsResponse::default();
        for topic in request.topics {
            let name = topic.name.0.as_str().to_string();
            let mut topic_response = ListOffsetsTopicResponse::default().with_name(topic.name.clone());
            for partition in topic.partitions {
                let mut entry = ListOffsetsPartitionResponse::default().with_partition_index(partition.partition_index);
                match self.list_offset(&state, &name, partition.partition_index, partition.current_leader_epoch, partition.timestamp).await {
                    Ok((timestamp, offset, leader_epoch)) => {
                        entry.timestamp = timestamp;
                        entry.offset = offset;
                        if version >= 4 {
                            entry.leader_epoch = leader_epoch;
                        }
                    }
                    Err(error_code) => entry.error_code = error_code,
                }
                topic_response.partitions.push(entry);
            }
            response.topics.push(topic_response);
        }
        response
    }

    /// (timestamp, offset, leader epoch) for Kafka's special timestamps
    /// (-2 earliest, -1 latest, -3 the record with the largest timestamp) or
    /// the first offset whose timestamp is at or after `timestamp`.
    async fn list_offset(&self, state: &MetadataState, topic: &str, partition: i32, current_leader_epoch: i32, timestamp: i64) -> Result<(i64, i64, i32), i16> {
        const LATEST: i64 = -1;
        const EARLIEST: i64 = -2;
        const MAX_TIMESTAMP: i64 = -3;
        let (found, index) = self.led_partition(state, topic, partition, current_leader_epoch)?;
        let leader_epoch = epoch_i32(found.leader_epoch);
        let replica = self.repl.replica_status(topic, index).await.map_err(|error| error.kafka_code())?;
        let (log_start_offset, high_watermark) = (replica.log_start_offset, replica.high_watermark);
        match timestamp {
            EARLIEST => Ok((-1, offset_i64(log_start_offset), leader_epoch)),
            LATEST => Ok((-1, offset_i64(high_watermark), leader_epoch)),
            timestamp if timestamp == MAX_TIMESTAMP || timestamp >= 0 => {
                let found = self.scan_timestamps(topic, index, log_start_offset, high_watermark, timestamp).await?;
                Ok(found.map_or((-1, -1, leader_epoch), |(ts, offset, epoch)| (ts, offset_i64(offset), epoch_i32(u64::from(epoch)))))
            }
            _ => Err(code::INVALID_REQUEST),
        }
    }

    /// Reads the committed records in order: the first with a timestamp at
    /// or after `target`, or (for -3) the one with the largest timestamp.
    async fn scan_timestamps(&self, topic: &str, partition: u32, start: u64, end: u64, target: i64) -> Result<Option<(i64, u64, u32)>, i16> {
        const SCAN_BYTES: usize = 1024 * 1024;
        let mut best: Option<(i64, u64, u32)> = None;
        let mut offset = start;
        while offset < end {
            let read = self.repl.read(topic, partition, offset, SCAN_BYTES, ReadLimit::HighWatermark).await.map_err(|e| e.kafka_code())?;
            let Some(last) = read.records.last() else { break };
            offset = last.offset + 1;
            for record in &read.records {
                let stored = decode_stored_record(record.offset, &record.value).map_err(|_| code::CORRUPT_MESSAGE)?;
                let candidate = (stored.timestamp_ms, record.offset, record.leader_epoch);
                if target >= 0 && stored.timestamp_ms >= target {
                    return Ok(Some(candidate));
                }
                if target < 0 && best.is_none_or(|(ts, _, _)| stored.timestamp_ms > ts) {
                    best = Some(candidate);
                }
            }
        }
        Ok(best)
    }

    async fn offset_for_leader_epoch(&self, request: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
        let state = self.metadata_state();
        let mut response = OffsetForLeaderEpochResponse::default();
        for topic in request.topics {
            let name = topic.topic.0.as_str().to_string();
            let mut topic_response = OffsetForLeaderTopicResult::default().with_topic(topic.topic.clone());
            for partition in topic.partitions {
                let mut entry = EpochEndOffset::default().with_partition(partition.partition);
                let answer = async {
                    let (_, index) = self.led_partition(&state, &name, partition.partition, partition.current_leader_epoch)?;
                    let Ok(requested) = u32::try_from(partition.leader_epoch) else {
                        return Ok(None);
                    };
                    self.repl.epoch_end_offset(&name, index, requested).await.map_err(|error| error.kafka_code())
                };
                match answer.await {
                    Ok(Some((epoch, end_offset))) => {
                        entry.leader_epoch = epoch_i32(u64::from(epoch));
                        entry.end_offset = offset_i64(end_offset);
                    }
                    // UNDEFINED_EPOCH_OFFSET: the log knows no such epoch.
                    Ok(None) => {
                        entry.leader_epoch = -1;
                        entry.end_offset = -1;
                    }
                    Err(error_code) => entry.error_code = error_code,
                }
                topic_response.partitions.push(entry);
            }
            response.topics.push(topic_response);
        }
        response
    }

    async fn create_topics(&self, version: i16, request: CreateTopicsRequest) -> CreateTopicsResponse {
        let budget_ms = u64::try_from(request.timeout_ms.max(0)).unwrap_or(0).clamp(1, self.config.create_budget_ms);
        let mut seen = BTreeSet::new();
        let duplicated: BTreeSet<String> = request.topics.iter().map(|t| t.name.0.as_str().to_string()).filter(|name| !seen.insert(name.clone())).collect();
        let mut response = CreateTopicsResponse::default();
        for topic in request.topics {
            let name = topic.name.0.as_str().to_string();
            let mut entry = CreatableTopicResult::default().with_name(topic.name.clone());
            let planned = (|| {
                if duplicated.contains(&name) {
                    return Err((code::INVALID_REQUEST, format!("topic {name} is named twice in one request")));
                }
                if !topic.assignments.is_empty() {
                    return Err((code::INVALID_REPLICA_ASSIGNMENT, "manual replica assignment is not supported; give a replication factor".into()));
                }
                let partitions = match topic.num_partitions {
                    -1 => self.config.default_partitions,
                    n => u32::try_from(n).map_err(|_| (code::INVALID_PARTITIONS, format!("{n} partitions: a topic needs at least 1")))?,
                };
                let replication_factor = match topic.replication_factor {
                    -1 => self.config.default_replication_factor,
                    n => u32::try_from(n).map_err(|_| (code::INVALID_REPLICATION_FACTOR, format!("replication factor {n}: needs at least 1")))?,
                };
                let mut configs = Vec::new();
                for config in &topic.configs {
                    let key = config.name.as_str();
                    let value = config.value.as_ref().map(|v| v.as_str()).unwrap_or("");
                    if key != MIN_INSYNC_REPLICAS_CONFIG {
                        return Err((code::INVALID_CONFIG, format!("topic config {key} is not supported (Keel honours only {MIN_INSYNC_REPLICAS_CONFIG})")));
                    }
                    match value.parse::<u32>() {
                        Ok(min) if (1..=replication_factor).contains(&min) => configs.push((key.to_string(), min.to_string())),
                        _ => return Err((code::INVALID_CONFIG, format!("{key}={value}: expected 1 to the replication factor ({replication_factor})"))),
                    }
                }
                Ok(TopicCreate { name: name.clone(), partitions, replication_factor, configs, validate_only: request.validate_only })
            })();
            let outcome = match planned {
                Ok(create) => match self.meta.create_topic(&create, budget_ms).await {
                    Ok(_) => Ok(create),
                    Err(error) => Err((create_error_code(&error), error.to_string())),
                },
                Err(refused) => Err(refused),
            };
            match outcome {
                Ok(create) => {
                    tracing::info!(topic = %name, partitions = create.partitions, replication_factor = create.replication_factor, validate_only = create.validate_only, "CreateTopics");
                    if !create.validate_only {
                        warn_if_min_insync_above_replication_factor(&create, self.config.min_insync_replicas_default);
                    }
                    if version >= 5 {
                        entry.num_partitions = i32::try_from(create.partitions).unwrap_or(-1);
                        entry.replication_factor = i16::try_from(create.replication_factor).unwrap_or(-1);
                        entry.configs = Some(Vec::new());
                    }
                }
                Err((error_code, message)) => {
                    tracing::debug!(topic = %name, error_code, %message, "CreateTopics refused");
                    entry.error_code = error_code;
                    if version >= 1 {
                        entry.error_message = Some(str_bytes(&message));
                    }
                    if version >= 5 {
                        entry.configs = None;
                    }
                }
            }
            response.topics.push(entry);
        }
        response
    }

    fn describe_configs(&self, version: i16, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
        const TOPIC: i8 = 2;
        const BROKER: i8 = 4;
        // ConfigSource values of the protocol.
        const TOPIC_CONFIG: i8 = 1;
        const STATIC_BROKER_CONFIG: i8 = 4;
        const DEFAULT_CONFIG: i8 = 5;
        let state = self.metadata_state();
        let config = &self.config;
        let mut response = DescribeConfigsResponse::default();
        for resource in request.resources {
            let name = resource.resource_name.as_str().to_string();
            let mut result = DescribeConfigsResult::default().with_resource_type(resource.resource_type).with_resource_name(resource.resource_name.clone());
            let entries: Result<Vec<ConfigEntry>, (i16, String)> = match resource.resource_type {
                TOPIC => match state.topic(&name) {
                    Some(topic) => {
                        let min_insync = topic.configs.get(MIN_INSYNC_REPLICAS_CONFIG);
                        Ok(vec![
                            (
                                MIN_INSYNC_REPLICAS_CONFIG,
                                min_insync.cloned().unwrap_or_else(|| config.min_insync_replicas_default.to_string()),
                                if min_insync.is_some() { TOPIC_CONFIG } else { STATIC_BROKER_CONFIG },
                            ),
                            ("max.message.bytes", config.message_bytes_max.to_string(), STATIC_BROKER_CONFIG),
                            ("message.timestamp.type", "CreateTime".to_string(), DEFAULT_CONFIG),
                        ])
                    }
                    None => Err((code::UNKNOWN_TOPIC_OR_PARTITION, format!("unknown topic {name}"))),
                },
                BROKER if name.is_empty() || name == config.node_id.to_string() => Ok(vec![
                    ("broker.id", config.node_id.to_string(), STATIC_BROKER_CONFIG),
                    ("auto.create.topics.enable", config.auto_create_topics.to_string(), STATIC_BROKER_CONFIG),
                    ("num.partitions", config.default_partitions.to_string(), STATIC_BROKER_CONFIG),
                    ("default.replication.factor", config.default_replication_factor.to_string(), STATIC_BROKER_CONFIG),
                    (MIN_INSYNC_REPLICAS_CONFIG, config.min_insync_replicas_default.to_string(), STATIC_BROKER_CONFIG),
                    ("replica.lag.time.max.ms", config.replica_lag_time_max_ms.to_string(), STATIC_BROKER_CONFIG),
                    ("message.max.bytes", config.message_bytes_max.to_string(), STATIC_BROKER_CONFIG),
                    ("socket.request.max.bytes", config.frame_bytes_max.to_string(), STATIC_BROKER_CONFIG),
                ]),
                BROKER => Err((code::INVALID_REQUEST, format!("broker {name} is not this broker ({}); ask it directly", config.node_id))),
                other => Err((code::INVALID_REQUEST, format!("resource type {other} is not supported (2 topic, 4 broker)"))),
            };
            match entries {
                Ok(entries) => {
                    let wanted = resource.configuration_keys.as_ref().map(|keys| keys.iter().map(|k| k.as_str().to_string()).collect::<BTreeSet<_>>());
                    result.configs = entries
                        .into_iter()
                        .filter(|(key, _, _)| wanted.as_ref().is_none_or(|w| w.contains(*key)))
                        .map(|(key, value, source)| {
                            let mut entry = DescribeConfigsResourceResult::default()
                                .with_name(str_bytes(key))
                                .with_value(Some(str_bytes(&value)))
                                .with_read_only(true)
                                .with_config_source(source);
                            if version >= 3 {
                                entry.documentation = None;
                            }
                            entry
                        })
                        .collect();
                }
                Err((error_code, message)) => {
                    result.error_code = error_code;
                    result.error_message = Some(str_bytes(&message));
                }
            }
            response.results.push(result);
        }
        response
    }

    fn describe_cluster(&self, _version: i16, _request: DescribeClusterRequest) -> DescribeClusterResponse {
        let state = self.metadata_state();
        let mut response = DescribeClusterResponse::default().with_cluster_id(str_bytes(&self.config.cluster_id)).with_controller_id(self.controller_id());
        response.brokers = self
            .live_brokers(&state)
            .map(|broker| {
                DescribeClusterBroker::default()
                    .with_broker_id(broker_id(broker.broker_id))
                    .with_host(str_bytes(&broker.host))
                    .with_port(i32::try_from(broker.port).unwrap_or(-1))
                    .with_rack(broker.rack.as_deref().map(str_bytes))
            })
            .collect();
        response
    }
}

fn api_versions_body() -> ApiVersionsResponse {
    let mut body = ApiVersionsResponse::default();
    body.api_keys =
        SUPPORTED_APIS.iter().map(|(key, min, max)| ApiVersion::default().with_api_key(*key as i16).with_min_version(*min).with_max_version(*max)).collect();
    body
}

/// The min.insync.replicas a topic created by `create` gets: its own, or
/// the broker's default.
pub fn min_insync_replicas_of(create: &TopicCreate, min_insync_replicas_default: usize) -> usize {
    create.configs.iter().find(|(key, _)| key == MIN_INSYNC_REPLICAS_CONFIG).and_then(|(_, value)| value.parse().ok()).unwrap_or(min_insync_replicas_default)
}

/// Warns when a created topic has fewer replicas than its min.insync.replicas:
/// every acks=all produce to it will be refused with NOT_ENOUGH_REPLICAS.
/// Kafka's CreateTopics answer has no warning field, so the log says it.
pub fn warn_if_min_insync_above_replication_factor(create: &TopicCreate, min_insync_replicas_default: usize) {
    let min_insync_replicas = min_insync_replicas_of(create, min_insync_replicas_default);
    if usize::try_from(create.replication_factor).is_ok_and(|replication_factor| replication_factor < min_insync_replicas) {
        tracing::warn!(
            topic = %create.name,
            replication_factor = create.replication_factor,
            min_insync_replicas,
            "topic created with a replication factor below its min.insync.replicas: every acks=all produce to it will be refused (NOT_ENOUGH_REPLICAS)"
        );
    }
}

pub(crate) fn create_error_code(error: &MetaOpError) -> i16 {
    match error {
        MetaOpError::Refused(refused) => match refused {
            MetadataError::TopicAlreadyExists(_) => code::TOPIC_ALREADY_EXISTS,
            MetadataError::InvalidTopicName { .. } => code::INVALID_TOPIC_EXCEPTION,
            MetadataError::InvalidPartitionCount(_) => code::INVALID_PARTITIONS,
            MetadataError::InvalidReplicationFactor { .. } => code::INVALID_REPLICATION_FACTOR,
            MetadataError::InvalidAssignment { .. } => code::INVALID_REPLICA_ASSIGNMENT,
            MetadataError::UnknownTopic(_) => code::UNKNOWN_TOPIC_OR_PARTITION,
            MetadataError::InvalidPartitionGrowth { .. } => code::INVALID_PARTITIONS,
            _ => code::INVALID_REQUEST,
        },
        MetaOpError::NotReady { .. } | MetaOpError::TimedOut { .. } => code::REQUEST_TIMED_OUT,
        MetaOpError::Stopped(_) => code::BROKER_NOT_AVAILABLE,
    }
}
