//! A consumer group in a simulated world (`[group]`): members that speak
//! Kafka's group protocol over simulated TCP (FindCoordinator, JoinGroup
//! with MEMBER_ID_REQUIRED, SyncGroup with a range assignment computed by
//! the leader, Heartbeat, OffsetFetch, Fetch, OffsetCommit, LeaveGroup), as
//! an eager-protocol Kafka consumer does, consuming the `[data]` topic while
//! brokers crash and partitions cut the coordinator off. Members also churn:
//! one leaves cleanly or just stops (a crashed consumer, found out by its
//! session timeout) and comes back with a new member id.
//!
//! Every acknowledged commit, assignment and consumed record goes to the
//! history for `group_check`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest, OffsetFetchRequest, RequestKind,
    ResponseKind, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use keel_io::NodeRng;
use rand::Rng;

use crate::data_world::DATA_TOPIC;
use crate::kafka_client::{code, ClientError};
use crate::kafka_world::{KafkaClients, Session};
use crate::scenario::GroupSpec;
use crate::shared::lock;

/// The group every member joins.
pub const GROUP_ID: &str = "sim-group";

/// Versions the members speak (all served by Keel, crates/kafka apis.rs).
mod version {
    pub const FIND_COORDINATOR: i16 = 3;
    pub const JOIN_GROUP: i16 = 5;
    pub const SYNC_GROUP: i16 = 3;
    pub const HEARTBEAT: i16 = 3;
    pub const LEAVE_GROUP: i16 = 3;
    pub const OFFSET_COMMIT: i16 = 6;
    pub const OFFSET_FETCH: i16 = 5;
}

fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn group_id() -> GroupId {
    GroupId(str_bytes(GROUP_ID))
}

/// The leader's assignment for one member: partition numbers, comma separated.
fn encode_assignment(partitions: &[u32]) -> Bytes {
    Bytes::from(partitions.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
}

fn decode_assignment(bytes: &[u8]) -> Result<Vec<u32>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "an assignment that is not text".to_string())?;
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',').map(|p| p.parse().map_err(|_| format!("assignment `{text}` is not partition numbers"))).collect()
}

/// Kafka's range assignor over one topic: members in id order, partitions
/// split into contiguous runs.
pub fn range_assignment(members: &[String], partitions: u32) -> BTreeMap<String, Vec<u32>> {
    let mut sorted = members.to_vec();
    sorted.sort();
    let count = sorted.len() as u32;
    let (base, extra) = (partitions / count, partitions % count);
    let mut next = 0;
    let mut out = BTreeMap::new();
    for (index, member) in sorted.into_iter().enumerate() {
        let take = base + u32::from((index as u32) < extra);
        out.insert(member, (next..next + take).collect());
        next += take;
    }
    out
}

/// Why a member's current life ended.
enum Ended {
    Stopped,
    Churned,
}

/// A coordinator request that got no answer.
struct Unanswered {
    /// False when no connection was made, so nothing was sent.
    maybe_sent: bool,
}

/// One member's protocol state.
struct Member {
    session: Session,
    spec: GroupSpec,
    coordinator: Option<u64>,
    /// The coordinator found last (to count moves).
    last_coordinator: Option<u64>,
    member_id: String,
    /// -1: not in a generation (join next).
    generation_id: i32,
    leader_id: String,
    assignment: Vec<u32>,
    /// Partition -> next offset to consume (known once OffsetFetch answered).
    positions: BTreeMap<u32, i64>,
    /// Partition -> the position last acknowledged as committed.
    committed: BTreeMap<u32, i64>,
    next_heartbeat_ms: u64,
    next_commit_ms: u64,
    /// Churn stops when the faults heal.
    heal_at_ms: u64,
}

impl Member {
    /// A member that has not joined yet.
    fn new(session: Session, spec: GroupSpec, assignment: Vec<u32>, heal_at_ms: u64) -> Member {
        Member {
            session,
            spec,
            coordinator: None,
            last_coordinator: None,
            member_id: String::new(),
            generation_id: -1,
            leader_id: String::new(),
            assignment,
            positions: BTreeMap::new(),
            committed: BTreeMap::new(),
            next_heartbeat_ms: 0,
            next_commit_ms: 0,
            heal_at_ms,
        }
    }

    fn timeout(&self) -> Duration {
        self.session.request_timeout()
    }

    /// Sends one group request to the coordinator (found first if unknown).
    /// A request to the coordinator; Err says whether it may have reached
    /// the coordinator (and so may still take effect).
    async fn ask_coordinator(&mut self, api_key: ApiKey, version: i16, request: RequestKind) -> Result<ResponseKind, Unanswered> {
        let coordinator = match self.coordinator {
            Some(coordinator) => coordinator,
            None => self.find_coordinator().await.ok_or(Unanswered { maybe_sent: false })?,
        };
        let timeout = match api_key {
            // A JoinGroup waits for the whole join phase: a Kafka consumer
            // gives it the rebalance timeout on top of its request timeout.
            ApiKey::JoinGroup => self.timeout() + Duration::from_millis(self.spec.rebalance_timeout_ms),
            _ => self.timeout(),
        };
        let answer = match self.session.connection(coordinator).await {
            Ok(connection) => connection.request(api_key, version, &request, timeout).await,
            Err(error) => Err(error),
        };
        match answer {
            Ok(response) => Ok(response),
            Err(error) => {
                self.lost_coordinator(coordinator, &error);
                Err(Unanswered { maybe_sent: !matches!(error, ClientError::Connect { .. }) })
            }
        }
    }

    fn lost_coordinator(&mut self, coordinator: u64, error: &ClientError) {
        self.session.close(coordinator);
        self.session.note(format_args!("lost coordinator n{coordinator}: {error}"));
        self.coordinator = None;
    }

    /// A coordinator error: find it again.
    fn coordinator_moved(&mut self) {
        if let Some(coordinator) = self.coordinator.take() {
            self.session.note(format_args!("n{coordinator} is no longer the coordinator"));
        }
    }

    async fn find_coordinator(&mut self) -> Option<u64> {
        let broker = self.session.random_broker();
        let timeout = self.timeout();
        let request = FindCoordinatorRequest::default().with_key(str_bytes(GROUP_ID)).with_key_type(0);
        let answer = match self.session.connection(broker).await {
            Ok(connection) => connection.request(ApiKey::FindCoordinator, version::FIND_COORDINATOR, &RequestKind::FindCoordinator(request), timeout).await,
            Err(error) => Err(error),
        };
        match answer {
            Ok(ResponseKind::FindCoordinator(found)) if found.error_code == code::NONE => {
                let coordinator = u64::try_from(found.node_id.0).ok()?;
                self.session.note(format_args!("coordinator is n{coordinator} (asked n{broker})"));
                if self.last_coordinator.is_some_and(|last| last != coordinator) {
                    lock(&self.session.clients.history).group.stats.coordinator_moves += 1;
                }
                self.last_coordinator = Some(coordinator);
                self.coordinator = Some(coordinator);
                Some(coordinator)
            }
            Ok(other) => {
                self.session.note(format_args!("FindCoordinator at n{broker}: {other:?}"));
                None
            }
            Err(error) => {
                self.session.close(broker);
                self.session.note(format_args!("FindCoordinator at n{broker} failed: {error}"));
                None
            }
        }
    }

    /// Out of the generation: partitions revoked (eager protocol), join next.
    fn leave_generation(&mut self, why: &str) {
        if self.generation_id >= 0 {
            self.session.note(format_args!("leaves generation {} ({why})", self.generation_id));
        }
        self.generation_id = -1;
        self.assignment.clear();
        self.positions.clear();
        self.committed.clear();
    }

    /// Acts on an error code of a member request; returns whether it was NONE.
    fn on_group_error(&mut self, what: &str, error_code: i16) -> bool {
        match error_code {
            code::NONE => return true,
            code::UNKNOWN_MEMBER_ID => {
                self.member_id.clear();
                self.leave_generation("unknown member");
            }
            code::ILLEGAL_GENERATION | code::REBALANCE_IN_PROGRESS => self.leave_generation("rebalance"),
            code::NOT_COORDINATOR | code::COORDINATOR_NOT_AVAILABLE | code::COORDINATOR_LOAD_IN_PROGRESS => self.coordinator_moved(),
            _ => {}
        }
        self.session.note(format_args!("{what} answered error {error_code}"));
        false
    }

    /// JoinGroup then SyncGroup; on success the member has a generation and
    /// an assignment (and its positions are to be fetched).
    async fn join(&mut self) {
        let request = JoinGroupRequest::default()
            .with_group_id(group_id())
            .with_session_timeout_ms(i32::try_from(self.spec.session_timeout_ms).expect("small"))
            .with_rebalance_timeout_ms(i32::try_from(self.spec.rebalance_timeout_ms).expect("small"))
            .with_member_id(str_bytes(&self.member_id))
            .with_protocol_type(str_bytes("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default().with_name(str_bytes("range")).with_metadata(Bytes::from_static(DATA_TOPIC.as_bytes()))]);
        lock(&self.session.clients.history).group.stats.joins += 1;
        let Ok(ResponseKind::JoinGroup(joined)) = self.ask_coordinator(ApiKey::JoinGroup, version::JOIN_GROUP, RequestKind::JoinGroup(request)).await else {
            return;
        };
        if joined.error_code == code::MEMBER_ID_REQUIRED {
            self.member_id = joined.member_id.as_str().to_string();
            return;
        }
        if !self.on_group_error("JoinGroup", joined.error_code) {
            return;
        }
        self.member_id = joined.member_id.as_str().to_string();
        self.generation_id = joined.generation_id;
        self.leader_id = joined.leader.as_str().to_string();
        let assignments = if self.leader_id == self.member_id {
            let members: Vec<String> = joined.members.iter().map(|m| m.member_id.as_str().to_string()).collect();
            range_assignment(&members, self.session.clients.spec.partitions)
                .into_iter()
                .map(|(member, partitions)| {
                    SyncGroupRequestAssignment::default().with_member_id(str_bytes(&member)).with_assignment(encode_assignment(&partitions))
                })
                .collect()
        } else {
            Vec::new()
        };
        let request = SyncGroupRequest::default()
            .with_group_id(group_id())
            .with_generation_id(self.generation_id)
            .with_member_id(str_bytes(&self.member_id))
            .with_assignments(assignments);
        let Ok(ResponseKind::SyncGroup(synced)) = self.ask_coordinator(ApiKey::SyncGroup, version::SYNC_GROUP, RequestKind::SyncGroup(request)).await else {
            self.leave_generation("SyncGroup unanswered");
            return;
        };
        if !self.on_group_error("SyncGroup", synced.error_code) {
            self.leave_generation("SyncGroup refused");
            return;
        }
        let partitions = match decode_assignment(&synced.assignment) {
            Ok(partitions) => partitions,
            Err(reason) => {
                let now_us = self.session.clients.clock.now_us();
                lock(&self.session.clients.history).violate(
                    now_us,
                    crate::group_check::checker::GROUP_SINGLE_OWNER,
                    format!("{}: {reason}", self.session.name),
                );
                return;
            }
        };
        let now_us = self.session.clients.clock.now_us();
        let mut history = lock(&self.session.clients.history);
        history.group.stats.generations_synced += 1;
        let verdict = history.group.assigned(&self.member_id, &self.leader_id, self.generation_id, &partitions);
        history.data_verdict(now_us, verdict);
        history.note(
            now_us,
            format_args!("{} ({}) generation {} led by {}: partitions {partitions:?}", self.session.name, self.member_id, self.generation_id, self.leader_id),
        );
        drop(history);
        self.assignment = partitions;
        let now_ms = self.session.now_ms();
        self.next_heartbeat_ms = now_ms + self.spec.heartbeat_interval_ms;
        self.next_commit_ms = now_ms + self.spec.commit_interval_ms;
    }

    /// The committed offsets of the assigned partitions become the positions.
    async fn fetch_positions(&mut self) {
        let acked_before: BTreeMap<u32, i64> = {
            let history = lock(&self.session.clients.history);
            self.assignment.iter().map(|p| (*p, history.group.acked_max(*p))).collect()
        };
        let topic = OffsetFetchRequestTopic::default()
            .with_name(TopicName(str_bytes(DATA_TOPIC)))
            .with_partition_indexes(self.assignment.iter().map(|p| i32::try_from(*p).expect("small")).collect());
        let request = OffsetFetchRequest::default().with_group_id(group_id()).with_topics(Some(vec![topic]));
        let Ok(ResponseKind::OffsetFetch(fetched)) = self.ask_coordinator(ApiKey::OffsetFetch, version::OFFSET_FETCH, RequestKind::OffsetFetch(request)).await
        else {
            return;
        };
        if !self.on_group_error("OffsetFetch", fetched.error_code) {
            return;
        }
        let now_us = self.session.clients.clock.now_us();
        for partition in fetched.topics.iter().flat_map(|t| t.partitions.iter()) {
            let Ok(index) = u32::try_from(partition.partition_index) else { continue };
            if partition.error_code != code::NONE || !self.assignment.contains(&index) {
                continue;
            }
            self.session.note(format_args!("OffsetFetch: partition {index} committed at {}", partition.committed_offset));
            let mut history = lock(&self.session.clients.history);
            let verdict = history.group.committed_fetched(&self.session.name, index, partition.committed_offset, acked_before[&index]);
            history.data_verdict(now_us, verdict);
            drop(history);
            self.positions.insert(index, partition.committed_offset.max(0));
            self.committed.insert(index, partition.committed_offset);
        }
    }

    async fn heartbeat(&mut self) {
        let request = HeartbeatRequest::default().with_group_id(group_id()).with_generation_id(self.generation_id).with_member_id(str_bytes(&self.member_id));
        if let Ok(ResponseKind::Heartbeat(answer)) = self.ask_coordinator(ApiKey::Heartbeat, version::HEARTBEAT, RequestKind::Heartbeat(request)).await {
            if answer.error_code == code::REBALANCE_IN_PROGRESS {
                // Eager protocol: commit what was consumed before giving the
                // partitions up (the generation is still current while the
                // group prepares the rebalance).
                self.commit(false).await;
            }
            self.on_group_error("Heartbeat", answer.error_code);
        }
    }

    /// Commits every position that moved since its last acknowledged commit
    /// (`all`: every position, as a Kafka consumer's auto-commit does each
    /// interval, so a stalled coordinator shows even while no records arrive).
    async fn commit(&mut self, all: bool) {
        let moved: Vec<(u32, i64)> = self.positions.iter().filter(|(p, at)| all || self.committed.get(p) != Some(at)).map(|(p, at)| (*p, *at)).collect();
        if moved.is_empty() {
            return;
        }
        let partitions = moved
            .iter()
            .map(|(p, at)| OffsetCommitRequestPartition::default().with_partition_index(i32::try_from(*p).expect("small")).with_committed_offset(*at))
            .collect();
        let request = OffsetCommitRequest::default()
            .with_group_id(group_id())
            .with_generation_id_or_member_epoch(self.generation_id)
            .with_member_id(str_bytes(&self.member_id))
            .with_topics(vec![OffsetCommitRequestTopic::default().with_name(TopicName(str_bytes(DATA_TOPIC))).with_partitions(partitions)]);
        let answer = match self.ask_coordinator(ApiKey::OffsetCommit, version::OFFSET_COMMIT, RequestKind::OffsetCommit(request)).await {
            Ok(ResponseKind::OffsetCommit(answer)) => answer,
            Err(Unanswered { maybe_sent: true }) => {
                // The request may sit in the network or in the coordinator's
                // socket and be applied after a later commit of this member
                // (Kafka applies a generation's commits in arrival order).
                let mut history = lock(&self.session.clients.history);
                let generation = history.group.generation_order(&self.leader_id, self.generation_id);
                for (partition, offset) in &moved {
                    history.group.commit_unanswered(*partition, *offset, generation);
                }
                return;
            }
            _ => return,
        };
        for partition in answer.topics.iter().flat_map(|t| t.partitions.iter()) {
            let Ok(index) = u32::try_from(partition.partition_index) else { continue };
            let Some((_, offset)) = moved.iter().find(|(p, _)| *p == index) else { continue };
            if partition.error_code == code::NONE {
                let coordinator = self.coordinator.map_or(0, |c| c);
                self.session.note(format_args!("committed partition {index} at {offset} (generation {}, coordinator n{coordinator})", self.generation_id));
                let now_ms = self.session.now_ms();
                let mut history = lock(&self.session.clients.history);
                let generation = history.group.generation_order(&self.leader_id, self.generation_id);
                history.group.commit_acknowledged(now_ms, index, *offset, generation);
                drop(history);
                self.committed.insert(index, *offset);
            } else {
                lock(&self.session.clients.history).group.stats.commits_refused += 1;
                self.on_group_error("OffsetCommit", partition.error_code);
                break;
            }
        }
    }

    /// One fetch of one assigned partition from its leader.
    async fn consume(&mut self, partition: u32) {
        let Some(position) = self.positions.get(&partition).copied() else { return };
        let Some((leader, leader_epoch)) = self.session.leader_of(partition).await else { return };
        let timeout = self.timeout();
        let answer = match self.session.connection(leader).await {
            Ok(connection) => connection.fetch(DATA_TOPIC, i32::try_from(partition).expect("small"), position, leader_epoch, 50, 16 * 1024, timeout).await,
            Err(error) => Err(error),
        };
        match answer {
            Ok(fetched) if fetched.error_code == code::NONE => {
                let mut history = lock(&self.session.clients.history);
                let mut next = position;
                for record in fetched.records.iter().filter(|r| r.offset >= position) {
                    history.group.consumed(partition, u64::try_from(record.offset).expect("not negative"));
                    next = record.offset + 1;
                }
                drop(history);
                self.positions.insert(partition, next);
            }
            Ok(fetched) => {
                self.session.note(format_args!("fetch of partition {partition} refused by n{leader}: {}", fetched.error_code));
                self.session.forget_leader(partition);
            }
            Err(error) => {
                self.session.close(leader);
                self.session.forget_leader(partition);
                self.session.note(format_args!("fetch from n{leader}: {error}"));
            }
        }
    }

    async fn leave(&mut self) {
        if self.member_id.is_empty() {
            return;
        }
        self.commit(false).await;
        let request =
            LeaveGroupRequest::default().with_group_id(group_id()).with_members(vec![MemberIdentity::default().with_member_id(str_bytes(&self.member_id))]);
        let _ = self.ask_coordinator(ApiKey::LeaveGroup, version::LEAVE_GROUP, RequestKind::LeaveGroup(request)).await;
        lock(&self.session.clients.history).group.stats.leaves += 1;
        self.session.note(format_args!("left the group as {}", self.member_id));
    }

    /// One life of the member: until `stop`, or its churn time comes.
    async fn live(&mut self, stop: &AtomicBool, ends_at_ms: u64, leaves_cleanly: bool) -> Ended {
        loop {
            if stop.load(Ordering::SeqCst) {
                self.leave().await;
                return Ended::Stopped;
            }
            let now_ms = self.session.now_ms();
            if now_ms >= ends_at_ms && now_ms < self.heal_at_ms {
                if leaves_cleanly {
                    self.leave().await;
                } else {
                    lock(&self.session.clients.history).group.stats.crashes += 1;
                    self.session.note("stops without leaving (a crash)");
                }
                return Ended::Churned;
            }
            if self.generation_id < 0 {
                self.join().await;
                if self.generation_id < 0 {
                    let pause_ms = self.session.rng.gen_range(20..200);
                    self.session.clients.clock.0.sleep(Duration::from_millis(pause_ms)).await;
                }
                continue;
            }
            if self.positions.len() < self.assignment.len() {
                self.fetch_positions().await;
                if self.positions.len() < self.assignment.len() {
                    let pause_ms = self.session.rng.gen_range(20..200);
                    self.session.clients.clock.0.sleep(Duration::from_millis(pause_ms)).await;
                }
                continue;
            }
            if now_ms >= self.next_heartbeat_ms {
                self.next_heartbeat_ms = now_ms + self.spec.heartbeat_interval_ms;
                self.heartbeat().await;
                continue;
            }
            if now_ms >= self.next_commit_ms {
                self.next_commit_ms = now_ms + self.spec.commit_interval_ms;
                self.commit(true).await;
                continue;
            }
            for partition in self.assignment.clone() {
                self.consume(partition).await;
            }
            if self.assignment.is_empty() {
                let until_ms = self.next_heartbeat_ms.min(self.next_commit_ms);
                self.session.clients.clock.0.sleep(Duration::from_millis(until_ms.saturating_sub(now_ms).max(1))).await;
            }
        }
    }
}

/// Member `index` of the group: lives, churns (until the faults heal at
/// `heal_at_ms`: churn is one of them) and comes back as a new member,
/// until `stop`.
pub async fn member(clients: KafkaClients, spec: GroupSpec, index: u64, heal_at_ms: u64, stop: Arc<AtomicBool>, mut rng: NodeRng) {
    for life in 0u64.. {
        let session = Session::new(clients.clone(), format!("g{index}.{life}"), rng.fork(life));
        let now_ms = session.now_ms();
        let ends_at_ms = match spec.churn_every_ms {
            Some([low, high]) if now_ms < heal_at_ms => now_ms + rng.gen_range(low..=high),
            _ => u64::MAX,
        };
        let leaves_cleanly = rng.gen_bool(0.5);
        let mut member = Member::new(session, spec.clone(), Vec::new(), heal_at_ms);
        match member.live(&stop, ends_at_ms, leaves_cleanly).await {
            Ended::Stopped => return,
            Ended::Churned => {
                let pause_ms = rng.gen_range(spec.rejoin_after_ms[0]..=spec.rejoin_after_ms[1]);
                clients.clock.0.sleep(Duration::from_millis(pause_ms)).await;
            }
        }
    }
}

/// The group's committed offsets, asked of the coordinator until answered
/// or `deadline_ms` (after the members stopped).
pub async fn final_committed(clients: KafkaClients, spec: GroupSpec, deadline_ms: u64, rng: NodeRng) -> Option<BTreeMap<u32, i64>> {
    let session = Session::new(clients.clone(), "group-check".to_string(), rng);
    // Not a member: it only reads the offsets of every partition (and never churns).
    let mut member = Member::new(session, spec, (0..clients.spec.partitions).collect(), 0);
    while member.session.now_ms() < deadline_ms {
        member.fetch_positions().await;
        if member.committed.len() == member.assignment.len() {
            return Some(member.committed.clone());
        }
        member.session.clients.clock.0.sleep(Duration::from_millis(100)).await;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_assignment_covers_every_partition_once_in_member_order() {
        let members = vec!["b".to_string(), "a".to_string(), "c".to_string()];
        let assigned = range_assignment(&members, 7);
        assert_eq!(assigned["a"], vec![0, 1, 2]);
        assert_eq!(assigned["b"], vec![3, 4]);
        assert_eq!(assigned["c"], vec![5, 6]);
        assert_eq!(decode_assignment(&encode_assignment(&assigned["b"])).expect("decodes"), vec![3, 4]);
        assert_eq!(decode_assignment(b"").expect("empty"), Vec::<u32>::new());
        assert!(decode_assignment(b"x").is_err());
    }
}
