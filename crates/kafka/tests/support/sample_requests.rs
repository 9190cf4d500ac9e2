//! Valid request frames (header + body, no size prefix) for every API and
//! version Keel serves, encoded with kafka-protocol's encoders, with every
//! array non-empty where the version allows. Shared by
//! `tests/request_guard.rs` and the fuzz corpus generator
//! (`fuzz/src/bin/gen_corpus.rs`).

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::create_partitions_request::{CreatePartitionsAssignment, CreatePartitionsTopic};
use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics};
use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, BrokerId, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest,
    DescribeGroupsRequest, FetchRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest, InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest,
    ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest, OffsetFetchRequest, OffsetForLeaderEpochRequest, ProduceRequest,
    RequestHeader, RequestKind, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType, NO_PRODUCER_EPOCH, NO_PRODUCER_ID};

/// The topic the samples name (the fuzz broker creates it).
pub const TOPIC: &str = "fuzz";

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// The consumer group the samples name.
pub const GROUP: &str = "fuzz-group";

fn group() -> GroupId {
    GroupId(text(GROUP))
}

fn topic(value: &str) -> TopicName {
    TopicName(text(value))
}

/// An unknown tagged field, for flexible versions (the decoder keeps it).
fn unknown_tags(flexible: bool) -> BTreeMap<i32, Bytes> {
    let mut tags = BTreeMap::new();
    if flexible {
        tags.insert(1000, Bytes::from_static(b"tag"));
    }
    tags
}

/// One v2 batch of two records (keys, values, a header), uncompressed.
pub fn record_batch(compression: Compression) -> Bytes {
    let records: Vec<Record> = (0..2i64)
        .map(|offset| {
            let mut headers = IndexMap::new();
            headers.insert(text("h"), Some(Bytes::from_static(b"v")));
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: NO_PRODUCER_ID,
                producer_epoch: NO_PRODUCER_EPOCH,
                timestamp_type: TimestampType::Creation,
                offset,
                sequence: -1,
                timestamp: 1_700_000_000_000 + offset,
                key: Some(Bytes::from(format!("k{offset}"))),
                value: Some(Bytes::from(format!("value {offset}"))),
                headers,
            }
        })
        .collect();
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(&mut out, records.iter(), &RecordEncodeOptions { version: 2, compression }).expect("encode a record batch");
    out.freeze()
}

/// A populated request of `api_key` at `version`, or `None` for an API
/// without a sample here.
pub fn sample_request(api_key: ApiKey, version: i16) -> Option<RequestKind> {
    let flexible = api_key.request_header_version(version) >= 2;
    let tags = || unknown_tags(flexible);
    Some(match api_key {
        ApiKey::Produce => {
            let mut topic_data = TopicProduceData::default()
                .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(record_batch(Compression::None)))]);
            if version <= 12 {
                topic_data.name = topic(TOPIC);
            }
            RequestKind::Produce(
                ProduceRequest::default().with_acks(-1).with_timeout_ms(5_000).with_topic_data(vec![topic_data]).with_unknown_tagged_fields(tags()),
            )
        }
        ApiKey::Fetch => {
            let mut partition = FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(1 << 20);
            if version >= 9 {
                partition.current_leader_epoch = -1;
            }
            let mut fetch_topic = FetchTopic::default().with_partitions(vec![partition]);
            if version <= 12 {
                fetch_topic.topic = topic(TOPIC);
            }
            let mut request = FetchRequest::default()
                .with_max_wait_ms(0)
                .with_min_bytes(1)
                .with_max_bytes(1 << 20)
                .with_topics(vec![fetch_topic])
                .with_unknown_tagged_fields(tags());
            if version <= 14 {
                request.replica_id = BrokerId(-1);
            }
            if version >= 7 {
                let mut forgotten = ForgottenTopic::default().with_partitions(vec![1, 2]);
                if version <= 12 {
                    forgotten.topic = topic("gone");
                }
                request.forgotten_topics_data = vec![forgotten];
            }
            if version >= 11 {
                request.rack_id = text("rack-a");
            }
            RequestKind::Fetch(request)
        }
        ApiKey::ListOffsets => {
            let partition = ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-1);
            RequestKind::ListOffsets(
                ListOffsetsRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_topics(vec![ListOffsetsTopic::default().with_name(topic(TOPIC)).with_partitions(vec![partition])])
                    .with_unknown_tagged_fields(tags()),
            )
        }
        ApiKey::Metadata => RequestKind::Metadata(
            MetadataRequest::default()
                .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic(TOPIC)))]))
                .with_unknown_tagged_fields(tags()),
        ),
        ApiKey::ApiVersions => {
            let mut request = ApiVersionsRequest::default().with_unknown_tagged_fields(tags());
            if version >= 3 {
                request.client_software_name = text("keel-fuzz");
                request.client_software_version = text("1");
            }
            RequestKind::ApiVersions(request)
        }
        ApiKey::CreateTopics => {
            let created = CreatableTopic::default()
                .with_name(topic("fuzz-created"))
                .with_num_partitions(1)
                .with_replication_factor(1)
                .with_configs(vec![CreatableTopicConfig::default().with_name(text("min.insync.replicas")).with_value(Some(text("1")))]);
            let assigned = CreatableTopic::default()
                .with_name(topic("fuzz-assigned"))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_assignments(vec![CreatableReplicaAssignment::default().with_partition_index(0).with_broker_ids(vec![BrokerId(1)])]);
            RequestKind::CreateTopics(
                CreateTopicsRequest::default().with_topics(vec![created, assigned]).with_timeout_ms(1_000).with_unknown_tagged_fields(tags()),
            )
        }
        ApiKey::OffsetForLeaderEpoch => {
            let partition = OffsetForLeaderPartition::default().with_partition(0).with_current_leader_epoch(-1).with_leader_epoch(0);
            RequestKind::OffsetForLeaderEpoch(
                OffsetForLeaderEpochRequest::default()
                    .with_topics(vec![OffsetForLeaderTopic::default().with_topic(topic(TOPIC)).with_partitions(vec![partition])])
                    .with_unknown_tagged_fields(tags()),
            )
        }
        ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(
            DescribeConfigsRequest::default()
                .with_resources(vec![
                    DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(text(TOPIC))
                        .with_configuration_keys(Some(vec![text("min.insync.replicas")])),
                    DescribeConfigsResource::default().with_resource_type(4).with_resource_name(text("1")).with_configuration_keys(None),
                ])
                .with_unknown_tagged_fields(tags()),
        ),
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(DescribeClusterRequest::default().with_unknown_tagged_fields(tags())),
        ApiKey::DeleteTopics => {
            let mut request = DeleteTopicsRequest::default().with_timeout_ms(1_000).with_unknown_tagged_fields(tags());
            if version >= 6 {
                request.topics = vec![DeleteTopicState::default().with_name(Some(topic("fuzz-deleted")))];
            } else {
                request.topic_names = vec![topic("fuzz-deleted")];
            }
            RequestKind::DeleteTopics(request)
        }
        ApiKey::CreatePartitions => RequestKind::CreatePartitions(
            CreatePartitionsRequest::default()
                .with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(topic(TOPIC))
                    .with_count(2)
                    .with_assignments(Some(vec![CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(1)])]))])
                .with_timeout_ms(1_000)
                .with_validate_only(true)
                .with_unknown_tagged_fields(tags()),
        ),
        ApiKey::InitProducerId => {
            RequestKind::InitProducerId(InitProducerIdRequest::default().with_transaction_timeout_ms(60_000).with_unknown_tagged_fields(tags()))
        }
        ApiKey::FindCoordinator => {
            let mut request = FindCoordinatorRequest::default().with_unknown_tagged_fields(tags());
            if version <= 3 {
                request.key = text(GROUP);
            } else {
                request.coordinator_keys = vec![text(GROUP)];
            }
            RequestKind::FindCoordinator(request)
        }
        ApiKey::JoinGroup => {
            let mut request = JoinGroupRequest::default()
                .with_group_id(group())
                .with_session_timeout_ms(10_000)
                .with_protocol_type(text("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default().with_name(text("range")).with_metadata(Bytes::from_static(b"\0\0"))])
                .with_unknown_tagged_fields(tags());
            if version >= 1 {
                request.rebalance_timeout_ms = 30_000;
            }
            RequestKind::JoinGroup(request)
        }
        ApiKey::SyncGroup => RequestKind::SyncGroup(
            SyncGroupRequest::default()
                .with_group_id(group())
                .with_generation_id(1)
                .with_member_id(text("member-1"))
                .with_assignments(vec![SyncGroupRequestAssignment::default().with_member_id(text("member-1")).with_assignment(Bytes::from_static(b"a"))])
                .with_unknown_tagged_fields(tags()),
        ),
        ApiKey::Heartbeat => RequestKind::Heartbeat(
            HeartbeatRequest::default().with_group_id(group()).with_generation_id(1).with_member_id(text("member-1")).with_unknown_tagged_fields(tags()),
        ),
        ApiKey::LeaveGroup => {
            let mut request = LeaveGroupRequest::default().with_group_id(group()).with_unknown_tagged_fields(tags());
            if version <= 2 {
                request.member_id = text("member-1");
            } else {
                request.members = vec![MemberIdentity::default().with_member_id(text("member-1"))];
            }
            RequestKind::LeaveGroup(request)
        }
        ApiKey::OffsetCommit => {
            let partition = OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(1).with_committed_metadata(Some(text("")));
            RequestKind::OffsetCommit(
                OffsetCommitRequest::default()
                    .with_group_id(group())
                    .with_generation_id_or_member_epoch(-1)
                    .with_topics(vec![OffsetCommitRequestTopic::default().with_name(topic(TOPIC)).with_partitions(vec![partition])])
                    .with_unknown_tagged_fields(tags()),
            )
        }
        ApiKey::OffsetFetch => {
            let mut request = OffsetFetchRequest::default().with_unknown_tagged_fields(tags());
            if version <= 7 {
                request.group_id = group();
                request.topics = Some(vec![OffsetFetchRequestTopic::default().with_name(topic(TOPIC)).with_partition_indexes(vec![0])]);
            } else {
                request.groups = vec![OffsetFetchRequestGroup::default()
                    .with_group_id(group())
                    .with_topics(Some(vec![OffsetFetchRequestTopics::default().with_name(topic(TOPIC)).with_partition_indexes(vec![0])]))];
            }
            RequestKind::OffsetFetch(request)
        }
        ApiKey::ListGroups => {
            let mut request = ListGroupsRequest::default().with_unknown_tagged_fields(tags());
            if version >= 4 {
                request.states_filter = vec![text("Stable")];
            }
            RequestKind::ListGroups(request)
        }
        ApiKey::DescribeGroups => RequestKind::DescribeGroups(DescribeGroupsRequest::default().with_groups(vec![group()]).with_unknown_tagged_fields(tags())),
        _ => return None,
    })
}

/// The frame of `request` (header + body, as the front receives it after
/// the size).
pub fn request_frame(api_key: ApiKey, version: i16, correlation_id: i32, request: &RequestKind) -> Bytes {
    let mut out = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(text("keel-fuzz")))
        .encode(&mut out, api_key.request_header_version(version))
        .expect("encode a request header");
    request.encode(&mut out, version).unwrap_or_else(|error| panic!("encode {api_key:?} v{version}: {error}"));
    out.freeze()
}

/// Every (api, version, frame) in `served` that has a sample.
pub fn sample_frames(served: &[(ApiKey, i16, i16)]) -> Vec<(ApiKey, i16, Bytes)> {
    let mut frames = Vec::new();
    for (api_key, min, max) in served {
        // (A served version kafka-protocol cannot encode has no sample: it
        // cannot decode it either.)
        let valid = api_key.valid_versions();
        for version in (*min).max(valid.min)..=(*max).min(valid.max) {
            if let Some(request) = sample_request(*api_key, version) {
                frames.push((*api_key, version, request_frame(*api_key, version, 1, &request)));
            }
        }
    }
    frames
}
