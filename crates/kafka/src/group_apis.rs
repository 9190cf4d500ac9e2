//! Consumer groups on the wire: FindCoordinator, JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups and
//! DescribeGroups, mapped to the coordinator task (`group_driver`) and to
//! the committed offsets in the metadata (`MetaHandle::commit_offsets`).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as WireCoordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{OffsetFetchResponsePartition, OffsetFetchResponseTopic};
use kafka_protocol::messages::{
    DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use keel_group::{LeaveMember, MemberAssignment, Protocol, Response};

use crate::group_driver::GroupCall;
use keel_meta::proto::CommittedOffsetRecord;
use keel_meta::MetadataState;

use crate::front::{str_bytes, Client, KafkaFront};
use keel_error_codes as code;

/// Kafka's `offset.metadata.max.bytes`.
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// FindCoordinator key types.
const KEY_TYPE_GROUP: i8 = 0;

fn group_name(text: &str) -> GroupId {
    GroupId(str_bytes(text))
}

fn optional_string(text: &Option<StrBytes>) -> Option<String> {
    text.as_ref().map(|t| t.as_str().to_string())
}

impl KafkaFront {
    /// The lock that orders `group_id`'s commits before its offset fetches.
    fn group_commits(&self, group_id: &str) -> Arc<tokio::sync::RwLock<()>> {
        let mut locks = self.group_commit_locks.lock().expect("not poisoned");
        Arc::clone(locks.entry(group_id.to_string()).or_default())
    }

    /// Every group's coordinator is the metadata Raft leader.
    pub(crate) fn find_coordinator(&self, version: i16, request: FindCoordinatorRequest) -> FindCoordinatorResponse {
        let state = self.meta.feed().current();
        let leader = self.meta.status().leader_id.and_then(|id| state.broker(id).filter(|b| !b.fenced).cloned());
        let answer = |key: &StrBytes| -> WireCoordinator {
            let mut entry = WireCoordinator::default().with_key(key.clone());
            if request.key_type != KEY_TYPE_GROUP {
                entry.error_code = code::INVALID_REQUEST;
                entry.error_message = Some(str_bytes("only consumer groups have coordinators: Keel has no transactions"));
                entry.node_id = kafka_protocol::messages::BrokerId(-1);
                entry.port = -1;
                return entry;
            }
            match &leader {
                Some(broker) => {
                    entry.node_id = kafka_protocol::messages::BrokerId(i32::try_from(broker.broker_id).unwrap_or(-1));
                    entry.host = str_bytes(&broker.host);
                    entry.port = i32::try_from(broker.port).unwrap_or(-1);
                }
                None => {
                    entry.error_code = code::COORDINATOR_NOT_AVAILABLE;
                    entry.error_message = Some(str_bytes("no metadata leader is known yet; retry"));
                    entry.node_id = kafka_protocol::messages::BrokerId(-1);
                    entry.port = -1;
                }
            }
            entry
        };
        let mut response = FindCoordinatorResponse::default();
        if version >= 4 {
            response.coordinators = request.coordinator_keys.iter().map(answer).collect();
        } else {
            let entry = answer(&request.key);
            response.error_code = entry.error_code;
            if version >= 1 {
                response.error_message = entry.error_message;
            }
            response.node_id = entry.node_id;
            response.host = entry.host;
            response.port = entry.port;
        }
        response
    }

    pub(crate) async fn join_group(&self, version: i16, client: Client<'_>, request: JoinGroupRequest) -> JoinGroupResponse {
        let session_timeout_ms = u64::try_from(request.session_timeout_ms).unwrap_or(0);
        let join = keel_group::JoinRequest {
            group_id: request.group_id.0.as_str().to_string(),
            member_id: request.member_id.as_str().to_string(),
            group_instance_id: optional_string(&request.group_instance_id),
            client_id: client.id.to_string(),
            client_host: client.host.to_string(),
            session_timeout_ms,
            // v0 has no rebalance timeout: Kafka uses the session timeout.
            rebalance_timeout_ms: if version >= 1 { u64::try_from(request.rebalance_timeout_ms).unwrap_or(0) } else { session_timeout_ms },
            protocol_type: request.protocol_type.as_str().to_string(),
            protocols: request.protocols.iter().map(|p| Protocol { name: p.name.as_str().to_string(), metadata: p.metadata.clone() }).collect(),
            require_known_member_id: version >= 4,
        };
        let mut response = JoinGroupResponse::default().with_generation_id(-1).with_member_id(request.member_id.clone());
        match self.groups.request(GroupCall::Join(join)).await {
            Ok(Response::Join(joined)) => {
                response.error_code = joined.error_code;
                response.generation_id = joined.generation_id;
                response.member_id = str_bytes(&joined.member_id);
                response.leader = str_bytes(&joined.leader_id);
                response.members = joined
                    .members
                    .iter()
                    .map(|m| JoinGroupResponseMember::default().with_member_id(str_bytes(&m.member_id)).with_metadata(m.metadata.clone()))
                    .collect();
                let protocol_name = joined.protocol_name.as_deref().map(str_bytes);
                if version >= 7 {
                    response.protocol_type = joined.protocol_type.as_deref().map(str_bytes);
                    response.protocol_name = protocol_name;
                } else {
                    response.protocol_name = Some(protocol_name.unwrap_or_default());
                }
            }
            Ok(other) => unreachable!("a join is answered with a join response, not {other:?}"),
            Err(error_code) => {
                response.error_code = error_code;
                if version < 7 {
                    response.protocol_name = Some(StrBytes::default());
                }
            }
        }
        if response.error_code != code::NONE {
            tracing::debug!(group = %request.group_id.0.as_str(), error_code = response.error_code, "JoinGroup refused");
        }
        response
    }

    pub(crate) async fn sync_group(&self, version: i16, request: SyncGroupRequest) -> SyncGroupResponse {
        let sync = keel_group::SyncRequest {
            group_id: request.group_id.0.as_str().to_string(),
            generation_id: request.generation_id,
            member_id: request.member_id.as_str().to_string(),
            group_instance_id: optional_string(&request.group_instance_id),
            protocol_type: optional_string(&request.protocol_type),
            protocol_name: optional_string(&request.protocol_name),
            assignments: request
                .assignments
                .iter()
                .map(|a| MemberAssignment { member_id: a.member_id.as_str().to_string(), assignment: a.assignment.clone() })
                .collect(),
        };
        let mut response = SyncGroupResponse::default();
        match self.groups.request(GroupCall::Sync(sync)).await {
            Ok(Response::Sync(synced)) => {
                response.error_code = synced.error_code;
                response.assignment = synced.assignment;
                if version >= 5 {
                    response.protocol_type = synced.protocol_type.as_deref().map(str_bytes);
                    response.protocol_name = synced.protocol_name.as_deref().map(str_bytes);
                }
            }
            Ok(other) => unreachable!("a sync is answered with a sync response, not {other:?}"),
            Err(error_code) => response.error_code = error_code,
        }
        response
    }

    pub(crate) async fn heartbeat(&self, request: HeartbeatRequest) -> HeartbeatResponse {
        let heartbeat = keel_group::HeartbeatRequest {
            group_id: request.group_id.0.as_str().to_string(),
            generation_id: request.generation_id,
            member_id: request.member_id.as_str().to_string(),
            group_instance_id: optional_string(&request.group_instance_id),
        };
        let error_code = match self.groups.request(GroupCall::Heartbeat(heartbeat)).await {
            Ok(response) => response.error_code(),
            Err(error_code) => error_code,
        };
        HeartbeatResponse::default().with_error_code(error_code)
    }

    pub(crate) async fn leave_group(&self, version: i16, request: LeaveGroupRequest) -> LeaveGroupResponse {
        let members: Vec<LeaveMember> = if version >= 3 {
            request
                .members
                .iter()
                .map(|m| LeaveMember { member_id: m.member_id.as_str().to_string(), group_instance_id: optional_string(&m.group_instance_id) })
                .collect()
        } else {
            vec![LeaveMember { member_id: request.member_id.as_str().to_string(), group_instance_id: None }]
        };
        let leave = keel_group::LeaveRequest { group_id: request.group_id.0.as_str().to_string(), members };
        let mut response = LeaveGroupResponse::default();
        match self.groups.request(GroupCall::Leave(leave)).await {
            Ok(Response::Leave(left)) => {
                if version >= 3 {
                    response.error_code = left.error_code;
                    response.members = left
                        .members
                        .iter()
                        .map(|m| {
                            MemberResponse::default()
                                .with_member_id(str_bytes(&m.member_id))
                                .with_group_instance_id(m.group_instance_id.as_deref().map(str_bytes))
                                .with_error_code(m.error_code)
                        })
                        .collect();
                } else {
                    // One member: its error is the request's error.
                    response.error_code =
                        if left.error_code != code::NONE { left.error_code } else { left.members.first().map_or(code::NONE, |m| m.error_code) };
                }
            }
            Ok(other) => unreachable!("a leave is answered with a leave response, not {other:?}"),
            Err(error_code) => response.error_code = error_code,
        }
        response
    }

    /// Validates the member (as Kafka's coordinator does) and the
    /// partitions, then stores the offsets through the metadata Raft group.
    pub(crate) async fn offset_commit(&self, version: i16, request: OffsetCommitRequest) -> OffsetCommitResponse {
        let group_id = request.group_id.0.as_str().to_string();
        // Held from the membership check until the offsets are stored: an
        // OffsetFetch waits for it (Kafka's require_stable), so a member that
        // takes over a partition never starts below a commit that was
        // checked against the previous generation and lands after its read.
        let commits = self.group_commits(&group_id);
        let _in_flight = commits.read().await;
        let state = self.meta.feed().current();
        let (generation_id, member_id) = (request.generation_id_or_member_epoch, request.member_id.as_str().to_string());
        let membership = if group_id.is_empty() {
            Err(code::INVALID_GROUP_ID)
        } else {
            self.groups.validate_commit(&group_id, &member_id, optional_string(&request.group_instance_id), generation_id).await
        };
        let mut per_partition: Vec<(String, i32, i16)> = Vec::new();
        let mut to_commit = Vec::new();
        for topic in &request.topics {
            let name = topic.name.0.as_str().to_string();
            for partition in &topic.partitions {
                let metadata = partition.committed_metadata.as_ref().map_or("", |m| m.as_str());
                let error_code = match &membership {
                    Err(error_code) => *error_code,
                    Ok(_) if u32::try_from(partition.partition_index).ok().and_then(|p| state.partition(&name, p)).is_none() => {
                        code::UNKNOWN_TOPIC_OR_PARTITION
                    }
                    Ok(_) if metadata.len() > OFFSET_METADATA_BYTES_MAX => code::OFFSET_METADATA_TOO_LARGE,
                    Ok(_) => {
                        to_commit.push(CommittedOffsetRecord {
                            topic: name.clone(),
                            partition: u32::try_from(partition.partition_index).expect("checked above"),
                            offset: partition.committed_offset,
                            leader_epoch: if version >= 6 { partition.committed_leader_epoch } else { -1 },
                            metadata: metadata.to_string(),
                            stamp: None,
                        });
                        code::NONE
                    }
                };
                per_partition.push((name.clone(), partition.partition_index, error_code));
            }
        }
        if let (false, Ok(stamp)) = (to_commit.is_empty(), membership) {
            if let Err(error) = self.meta.commit_offsets(&group_id, to_commit, stamp, self.config.create_budget_ms).await {
                // The commit may still apply later; the client retries it.
                tracing::warn!(group = %group_id, %error, "offset commit not stored");
                for entry in per_partition.iter_mut().filter(|e| e.2 == code::NONE) {
                    entry.2 = code::REQUEST_TIMED_OUT;
                }
            }
        }
        let mut topics: BTreeMap<String, OffsetCommitResponseTopic> = BTreeMap::new();
        let mut order = Vec::new();
        for (name, partition_index, error_code) in per_partition {
            let topic = topics.entry(name.clone()).or_insert_with(|| {
                order.push(name.clone());
                OffsetCommitResponseTopic::default().with_name(crate::front::topic_name(&name))
            });
            topic.partitions.push(OffsetCommitResponsePartition::default().with_partition_index(partition_index).with_error_code(error_code));
        }
        let mut response = OffsetCommitResponse::default();
        response.topics = order.iter().filter_map(|name| topics.remove(name)).collect();
        response
    }

    /// Committed offsets, read linearizably from the metadata so a new
    /// coordinator never answers from before the last commit.
    pub(crate) async fn offset_fetch(&self, version: i16, request: OffsetFetchRequest) -> OffsetFetchResponse {
        let mut response = OffsetFetchResponse::default();
        let fail = |mut response: OffsetFetchResponse, error_code: i16| {
            if version >= 2 {
                response.error_code = error_code;
            }
            response
        };
        if !self.meta.status().is_leader {
            return fail(response, code::NOT_COORDINATOR);
        }
        let commits = self.group_commits(request.group_id.0.as_str());
        let _settled = commits.write().await;
        let state: MetadataState = match self.meta.read_linearizable().await {
            Ok(state) => state,
            Err(error) => {
                tracing::debug!(%error, "OffsetFetch: no linearizable read");
                return fail(response, code::COORDINATOR_NOT_AVAILABLE);
            }
        };
        let group_id = request.group_id.0.as_str();
        let committed = state.group_offsets(group_id);
        let requested: Vec<(String, Vec<i32>)> = match &request.topics {
            Some(topics) => topics.iter().map(|t| (t.name.0.as_str().to_string(), t.partition_indexes.clone())).collect(),
            // v2+: None asks for every committed offset of the group.
            None => {
                let mut all: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for (topic, partition) in committed.into_iter().flat_map(|offsets| offsets.keys()) {
                    all.entry(topic.clone()).or_default().push(i32::try_from(*partition).expect("partition fits i32"));
                }
                all.into_iter().collect()
            }
        };
        for (name, partitions) in requested {
            let mut topic = OffsetFetchResponseTopic::default().with_name(crate::front::topic_name(&name));
            for partition_index in partitions {
                let found = u32::try_from(partition_index).ok().and_then(|p| committed.and_then(|offsets| offsets.get(&(name.clone(), p))));
                let mut entry = OffsetFetchResponsePartition::default()
                    .with_partition_index(partition_index)
                    .with_committed_offset(-1)
                    .with_metadata(Some(StrBytes::default()));
                if version >= 5 {
                    entry.committed_leader_epoch = -1;
                }
                if let Some(offset) = found {
                    entry.committed_offset = offset.offset;
                    entry.metadata = Some(str_bytes(&offset.metadata));
                    if version >= 5 {
                        entry.committed_leader_epoch = offset.leader_epoch;
                    }
                }
                topic.partitions.push(entry);
            }
            response.topics.push(topic);
        }
        response
    }

    pub(crate) async fn list_groups(&self, _version: i16, request: ListGroupsRequest) -> ListGroupsResponse {
        let mut response = ListGroupsResponse::default();
        let live = match self.groups.list().await {
            Ok(live) => live,
            // Admin clients ask every broker and merge the answers: a broker
            // that coordinates nothing lists nothing (as Kafka's do).
            Err(code::NOT_COORDINATOR) => return response,
            Err(error_code) => {
                response.error_code = error_code;
                return response;
            }
        };
        let state = self.meta.feed().current();
        let mut listed: BTreeMap<String, (String, String)> = live.into_iter().map(|g| (g.group_id, (g.protocol_type, g.state.as_str().to_string()))).collect();
        // Groups that only have committed offsets exist too (Kafka lists them Empty).
        for group in state.groups_with_offsets() {
            listed.entry(group.to_string()).or_insert_with(|| ("consumer".to_string(), keel_group::GroupState::Empty.as_str().to_string()));
        }
        let states_filter: Vec<String> = request.states_filter.iter().map(|s| s.as_str().to_lowercase()).collect();
        for (group_id, (protocol_type, group_state)) in listed {
            if !states_filter.is_empty() && !states_filter.contains(&group_state.to_lowercase()) {
                continue;
            }
            response.groups.push(
                ListedGroup::default()
                    .with_group_id(group_name(&group_id))
                    .with_protocol_type(str_bytes(&protocol_type))
                    .with_group_state(str_bytes(&group_state)),
            );
        }
        response
    }

    pub(crate) async fn describe_groups(&self, _version: i16, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
        let group_ids: Vec<String> = request.groups.iter().map(|g| g.0.as_str().to_string()).collect();
        let mut response = DescribeGroupsResponse::default();
        match self.groups.describe(group_ids.clone()).await {
            Ok(described) => {
                for group in described {
                    let members = group
                        .members
                        .iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(str_bytes(&m.member_id))
                                .with_client_id(str_bytes(&m.client_id))
                                .with_client_host(str_bytes(&m.client_host))
                                .with_member_metadata(m.metadata.clone())
                                .with_member_assignment(m.assignment.clone())
                        })
                        .collect();
                    response.groups.push(
                        DescribedGroup::default()
                            .with_group_id(group_name(&group.group_id))
                            .with_group_state(str_bytes(group.state.as_str()))
                            .with_protocol_type(str_bytes(&group.protocol_type))
                            .with_protocol_data(str_bytes(&group.protocol_name))
                            .with_members(members),
                    );
                }
            }
            Err(error_code) => {
                for group_id in group_ids {
                    response.groups.push(DescribedGroup::default().with_group_id(group_name(&group_id)).with_error_code(error_code));
                }
            }
        }
        response
    }
}
