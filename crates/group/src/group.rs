//! One consumer group: its members, generation and rebalance state machine
//! (Kafka's `GroupMetadata`, `MemberMetadata` and the rebalance half of
//! `GroupCoordinator`).
//!
//! Kafka's delayed operations become deadlines stored here:
//! `join_deadline_ms` (DelayedJoin / InitialDelayedJoin), each member's
//! `session_deadline_ms` (DelayedHeartbeat), each pending member's expiry
//! and `sync_deadline_ms` (DelayedSync). `next_event` names the earliest and
//! `handle_event` fires it.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::types::{
    Config, GroupDescription, GroupState, JoinRequest, JoinResponse, JoinResponseMember, LoadError, MemberAssignment, MemberDescription, Output, Protocol,
    Response, StoredGroup, StoredMember, SyncResponse,
};
use keel_error_codes as error_code;

pub(crate) struct Member {
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    /// Order of joining the group: the leader is the earliest remaining.
    join_seq: u64,
    pub(crate) session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    /// In the member's order of preference.
    protocols: Vec<Protocol>,
    /// Set when the leader's SyncGroup of the current generation arrived.
    assignment: Option<Bytes>,
    /// The request id of the member's waiting JoinGroup.
    pub(crate) awaiting_join: Option<u64>,
    /// The request id of the member's waiting SyncGroup.
    pub(crate) awaiting_sync: Option<u64>,
    /// Added in the current rebalance and not yet answered: such a member is
    /// held to `new_member_join_timeout_ms` even while its JoinGroup waits.
    is_new: bool,
    pub(crate) session_deadline_ms: u64,
}

impl Member {
    /// Kafka's `hasSatisfiedHeartbeat` inverted: a member waiting for the
    /// coordinator cannot be blamed for not heartbeating, unless it is new.
    fn session_can_expire(&self) -> bool {
        self.is_new || (self.awaiting_join.is_none() && self.awaiting_sync.is_none())
    }

    fn matches(&self, protocols: &[Protocol]) -> bool {
        self.protocols == protocols
    }

    fn metadata(&self, protocol_name: &str) -> Bytes {
        let protocol = self.protocols.iter().find(|p| p.name == protocol_name);
        // The chosen protocol is one every member supports (checked on join).
        assert!(protocol.is_some());
        protocol.map(|p| p.metadata.clone()).unwrap_or_default()
    }
}

/// Kafka's InitialDelayedJoin: the first rebalance of an Empty group waits
/// `delay_ms`, and again while new members keep arriving, up to the
/// rebalance timeout in all.
#[derive(Clone, Copy, Debug)]
struct InitialDelay {
    delay_ms: u64,
    remaining_ms: u64,
    new_member_added: bool,
}

/// A timer that came due, in the order `next_event` ranks them at equal
/// deadlines.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Event {
    PendingMemberExpired(String),
    SessionExpired(String),
    JoinDeadline,
    SyncDeadline,
}

pub(crate) struct Group {
    pub(crate) group_id: String,
    pub(crate) state: GroupState,
    pub(crate) generation_id: i32,
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol_name: Option<String>,
    pub(crate) leader_id: Option<String>,
    pub(crate) members: BTreeMap<String, Member>,
    /// Ids handed out with MEMBER_ID_REQUIRED, with their expiry.
    pub(crate) pending_members: BTreeMap<String, u64>,
    /// Members of the current generation that have not sent SyncGroup yet.
    pending_sync_members: BTreeSet<String>,
    /// Some exactly while PreparingRebalance.
    join_deadline_ms: Option<u64>,
    /// Some only while PreparingRebalance, for a rebalance that left Empty.
    initial_delay: Option<InitialDelay>,
    /// Some exactly while `pending_sync_members` is not empty.
    sync_deadline_ms: Option<u64>,
    next_join_seq: u64,
    /// The leader's assignment of the current generation (one entry per
    /// member), held back until it is durable. Some only while
    /// CompletingRebalance.
    awaiting_store: Option<BTreeMap<String, Bytes>>,
    /// The store that makes `awaiting_store` durable, once the coordinator
    /// numbered it.
    pub(crate) awaiting_store_id: Option<u64>,
    /// Set when the group reached a state to make durable (an assignment
    /// to hold back, or Empty); the coordinator turns it into an
    /// `Output::Store` at the end of the call.
    pub(crate) store_needed: bool,
}

fn reply(out: &mut Vec<Output>, request_id: u64, response: Response) {
    out.push(Output::Reply { request_id, response });
}

impl Group {
    pub(crate) fn new(group_id: String) -> Group {
        Group {
            group_id,
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            pending_sync_members: BTreeSet::new(),
            join_deadline_ms: None,
            initial_delay: None,
            sync_deadline_ms: None,
            next_join_seq: 0,
            awaiting_store: None,
            awaiting_store_id: None,
            store_needed: false,
        }
    }

    /// A group a previous coordinator made durable. Its session timers start
    /// now: every member gets a full session timeout on this coordinator.
    pub(crate) fn load(now_ms: u64, stored: StoredGroup) -> Result<Group, LoadError> {
        let refuse = |reason: &str| LoadError { group_id: stored.group_id.clone(), reason: reason.to_owned() };
        if stored.group_id.is_empty() {
            return Err(refuse("empty group id"));
        }
        if stored.generation_id < 0 {
            return Err(refuse("negative generation"));
        }
        let member_ids: BTreeSet<&str> = stored.members.iter().map(|m| m.member_id.as_str()).collect();
        if member_ids.len() != stored.members.len() {
            return Err(refuse("a member is listed twice"));
        }
        if member_ids.contains("") {
            return Err(refuse("a member has an empty id"));
        }
        let first_member = stored.members.first().map(|m| m.member_id.as_str());
        if stored.leader_id.as_deref() != first_member {
            return Err(refuse("the leader is not the first member"));
        }
        if stored.members.is_empty() && stored.protocol_name.is_some() {
            return Err(refuse("an Empty group has a protocol"));
        }
        if !stored.members.is_empty() {
            if stored.generation_id == 0 {
                return Err(refuse("members without a generation"));
            }
            if stored.protocol_type.as_deref().is_none_or(str::is_empty) {
                return Err(refuse("members without a protocol type"));
            }
            let Some(name) = stored.protocol_name.as_deref() else {
                return Err(refuse("members without a protocol"));
            };
            if !stored.members.iter().all(|m| m.protocols.iter().any(|p| p.name == name)) {
                return Err(refuse("a member does not support the group's protocol"));
            }
        }
        let mut group = Group::new(stored.group_id);
        group.generation_id = stored.generation_id;
        group.protocol_type = stored.protocol_type;
        group.protocol_name = stored.protocol_name;
        group.leader_id = stored.leader_id;
        group.state = if stored.members.is_empty() { GroupState::Empty } else { GroupState::Stable };
        for stored_member in stored.members {
            let member = Member {
                client_id: stored_member.client_id,
                client_host: stored_member.client_host,
                join_seq: group.next_join_seq,
                session_timeout_ms: stored_member.session_timeout_ms,
                rebalance_timeout_ms: stored_member.rebalance_timeout_ms,
                protocols: stored_member.protocols,
                assignment: Some(stored_member.assignment),
                awaiting_join: None,
                awaiting_sync: None,
                is_new: false,
                session_deadline_ms: now_ms.saturating_add(stored_member.session_timeout_ms),
            };
            group.next_join_seq += 1;
            group.members.insert(stored_member.member_id, member);
        }
        Ok(group)
    }

    /// The state `Output::Store` makes durable, if the group is in one
    /// worth storing: a generation whose assignment waits for the store,
    /// or Empty.
    pub(crate) fn to_store(&self) -> Option<StoredGroup> {
        let members = match (&self.awaiting_store, self.state) {
            (Some(assignments), _) => {
                let mut in_join_order: Vec<(&String, &Member)> = self.members.iter().collect();
                in_join_order.sort_by_key(|(_, m)| m.join_seq);
                in_join_order
                    .into_iter()
                    .map(|(member_id, m)| StoredMember {
                        member_id: member_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        session_timeout_ms: m.session_timeout_ms,
                        rebalance_timeout_ms: m.rebalance_timeout_ms,
                        protocols: m.protocols.clone(),
                        assignment: assignments.get(member_id).cloned().unwrap_or_default(),
                    })
                    .collect()
            }
            (None, GroupState::Empty) => Vec::new(),
            (None, _) => return None,
        };
        Some(StoredGroup {
            group_id: self.group_id.clone(),
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader_id: self.leader_id.clone(),
            members,
        })
    }

    pub(crate) fn is_leader(&self, member_id: &str) -> bool {
        self.leader_id.as_deref() == Some(member_id)
    }

    /// The longest rebalance timeout of any member (0 with no members).
    fn rebalance_timeout_ms(&self) -> u64 {
        self.members.values().map(|m| m.rebalance_timeout_ms).max().unwrap_or(0)
    }

    /// Kafka's `supportsProtocols`, checked against the members other than
    /// `member_id` (see the crate docs): the joiner must share at least one
    /// protocol with every other member, so a common one always exists.
    pub(crate) fn supports_protocols(&self, member_id: &str, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.state == GroupState::Empty {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|protocol| {
            self.members.iter().filter(|(id, _)| id.as_str() != member_id).all(|(_, other)| other.protocols.iter().any(|p| p.name == protocol.name))
        })
    }

    /// Protocols every member supports, in the leader's order of preference.
    fn candidate_protocols(&self) -> Vec<String> {
        let Some(leader) = self.leader_id.as_ref().and_then(|id| self.members.get(id)) else {
            return Vec::new();
        };
        leader
            .protocols
            .iter()
            .filter(|protocol| self.members.values().all(|member| member.protocols.iter().any(|p| p.name == protocol.name)))
            .map(|p| p.name.clone())
            .collect()
    }

    /// Kafka's `selectProtocol`: each member votes for its most preferred
    /// candidate; most votes wins, ties go to the leader's preference.
    fn select_protocol(&self) -> String {
        let candidates = self.candidate_protocols();
        assert!(!candidates.is_empty());
        let mut votes = vec![0usize; candidates.len()];
        for member in self.members.values() {
            let vote = member.protocols.iter().find_map(|p| candidates.iter().position(|c| *c == p.name));
            // Every candidate is supported by every member, so each member votes.
            assert!(vote.is_some());
            if let Some(index) = vote {
                votes[index] += 1;
            }
        }
        let mut best = 0;
        for index in 1..candidates.len() {
            // Strictly more: ties keep the earlier (leader-preferred) candidate.
            if votes[index] > votes[best] {
                best = index;
            }
        }
        candidates[best].clone()
    }

    fn can_rebalance(&self) -> bool {
        matches!(self.state, GroupState::Empty | GroupState::CompletingRebalance | GroupState::Stable)
    }

    fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    /// The JoinGroup answer for `member_id` in the current generation.
    fn join_response(&self, member_id: &str) -> JoinResponse {
        assert!(matches!(self.state, GroupState::CompletingRebalance | GroupState::Stable));
        let protocol_name = self.protocol_name.clone();
        assert!(protocol_name.is_some());
        let members = if self.is_leader(member_id) {
            let name = protocol_name.as_deref().unwrap_or_default();
            self.members.iter().map(|(id, m)| JoinResponseMember { member_id: id.clone(), metadata: m.metadata(name) }).collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            error_code: error_code::NONE,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name,
            leader_id: self.leader_id.clone().unwrap_or_default(),
            member_id: member_id.to_owned(),
            members,
        }
    }

    pub(crate) fn add_pending_member(&mut self, member_id: String, expiry_ms: u64) {
        assert!(!self.members.contains_key(&member_id));
        let previous = self.pending_members.insert(member_id, expiry_ms);
        assert!(previous.is_none());
    }

    /// Kafka's `addMemberAndRebalance`.
    pub(crate) fn add_member_and_rebalance(
        &mut self,
        now_ms: u64,
        config: &Config,
        member_id: String,
        request_id: u64,
        request: JoinRequest,
        out: &mut Vec<Output>,
    ) {
        assert!(!self.members.contains_key(&member_id));
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        assert!(self.protocol_type.as_deref() == Some(request.protocol_type.as_str()));
        if self.leader_id.is_none() {
            self.leader_id = Some(member_id.clone());
        }
        if self.generation_id == 0 {
            // Only a group's very first rebalance stretches its initial delay
            // for each newcomer (Kafka's `newMemberAdded`).
            if let Some(initial_delay) = self.initial_delay.as_mut() {
                initial_delay.new_member_added = true;
            }
        }
        self.pending_members.remove(&member_id);
        let member = Member {
            client_id: request.client_id,
            client_host: request.client_host,
            join_seq: self.next_join_seq,
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            protocols: request.protocols,
            assignment: None,
            awaiting_join: Some(request_id),
            awaiting_sync: None,
            is_new: true,
            // It cannot heartbeat before it has its JoinGroup answer.
            session_deadline_ms: now_ms.saturating_add(config.new_member_join_timeout_ms),
        };
        self.next_join_seq += 1;
        self.members.insert(member_id, member);
        self.maybe_prepare_rebalance(now_ms, config, out);
        self.try_complete_join(now_ms, out);
    }

    /// A known member's JoinGroup (Kafka's `doCurrentMemberJoinGroup` for a
    /// member that passed validation).
    pub(crate) fn join_existing_member(&mut self, now_ms: u64, config: &Config, member_id: &str, request_id: u64, request: JoinRequest, out: &mut Vec<Output>) {
        let member = self.members.get(member_id);
        assert!(member.is_some());
        let Some(member) = member else { return };
        let matches = member.matches(&request.protocols);
        match self.state {
            GroupState::PreparingRebalance => self.update_member_and_rebalance(now_ms, config, member_id, request_id, request, out),
            GroupState::CompletingRebalance if matches => {
                // It lost its JoinGroup answer: send it again.
                reply(out, request_id, Response::Join(self.join_response(member_id)));
            }
            GroupState::Stable if matches && !self.is_leader(member_id) => {
                reply(out, request_id, Response::Join(self.join_response(member_id)));
            }
            // Changed metadata, or the leader asking for a new assignment
            // (e.g. because topic metadata changed).
            GroupState::CompletingRebalance | GroupState::Stable => self.update_member_and_rebalance(now_ms, config, member_id, request_id, request, out),
            GroupState::Empty | GroupState::Dead => {
                unreachable!("a group with members is neither Empty nor Dead")
            }
        }
    }

    fn update_member_and_rebalance(&mut self, now_ms: u64, config: &Config, member_id: &str, request_id: u64, request: JoinRequest, out: &mut Vec<Output>) {
        let Some(member) = self.members.get_mut(member_id) else {
            unreachable!("update of a member that is not in the group");
        };
        if let Some(superseded) = member.awaiting_join.replace(request_id) {
            // Kafka drops the older callback; answering it keeps every
            // request answered exactly once, and the client just retries.
            let response = JoinResponse::error(member_id, error_code::REBALANCE_IN_PROGRESS);
            reply(out, superseded, Response::Join(response));
        }
        member.protocols = request.protocols;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.session_timeout_ms = request.session_timeout_ms;
        self.maybe_prepare_rebalance(now_ms, config, out);
        self.try_complete_join(now_ms, out);
    }

    fn maybe_prepare_rebalance(&mut self, now_ms: u64, config: &Config, out: &mut Vec<Output>) {
        if self.can_rebalance() {
            self.prepare_rebalance(now_ms, config, out);
        }
    }

    /// Kafka's `prepareRebalance`: cancel the sync phase and wait for joins.
    fn prepare_rebalance(&mut self, now_ms: u64, config: &Config, out: &mut Vec<Output>) {
        assert!(self.can_rebalance());
        if self.state == GroupState::CompletingRebalance {
            // The leader's assignment, if it comes, is for a generation that
            // will not exist: send everyone waiting back to JoinGroup.
            for member in self.members.values_mut() {
                member.assignment = None;
                if let Some(request_id) = member.awaiting_sync.take() {
                    reply(out, request_id, Response::Sync(SyncResponse::error(error_code::REBALANCE_IN_PROGRESS)));
                    member.session_deadline_ms = now_ms.saturating_add(member.session_timeout_ms);
                }
            }
        }
        self.pending_sync_members.clear();
        self.sync_deadline_ms = None;
        // A store still in flight is for a generation that will not exist.
        self.awaiting_store = None;
        self.awaiting_store_id = None;
        let rebalance_timeout_ms = self.rebalance_timeout_ms();
        if self.state == GroupState::Empty {
            let delay_ms = config.group_initial_rebalance_delay_ms;
            self.initial_delay = Some(InitialDelay { delay_ms, remaining_ms: rebalance_timeout_ms.saturating_sub(delay_ms), new_member_added: false });
            self.join_deadline_ms = Some(now_ms.saturating_add(delay_ms));
        } else {
            self.initial_delay = None;
            self.join_deadline_ms = Some(now_ms.saturating_add(rebalance_timeout_ms));
        }
        self.state = GroupState::PreparingRebalance;
        self.try_complete_join(now_ms, out);
    }

    /// Kafka's DelayedJoin `tryComplete`: done once everyone rejoined. The
    /// initial delay never completes early: waiting for more members is its
    /// point.
    pub(crate) fn try_complete_join(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        if self.state == GroupState::PreparingRebalance && self.initial_delay.is_none() && self.all_members_joined() {
            self.complete_join(now_ms, out);
        }
    }

    /// Kafka's `onCompleteJoin`: drop who did not rejoin, start the next
    /// generation, answer every JoinGroup.
    fn complete_join(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        assert!(self.state == GroupState::PreparingRebalance);
        let not_rejoined: Vec<String> = self.members.iter().filter(|(_, m)| m.awaiting_join.is_none()).map(|(id, _)| id.clone()).collect();
        for member_id in not_rejoined {
            self.remove_member(&member_id, error_code::UNKNOWN_MEMBER_ID, out);
        }
        self.join_deadline_ms = None;
        self.initial_delay = None;
        self.generation_id += 1;
        if self.members.is_empty() {
            self.protocol_name = None;
            self.state = GroupState::Empty;
            // A new coordinator must not bring back members that are gone.
            self.store_needed = true;
            return;
        }
        // Everyone left has rejoined, the leader included (removal re-elects
        // among the remaining).
        assert!(self.leader_id.as_ref().is_some_and(|id| self.members.contains_key(id)));
        self.protocol_name = Some(self.select_protocol());
        self.state = GroupState::CompletingRebalance;
        let member_ids: Vec<String> = self.members.keys().cloned().collect();
        for member_id in &member_ids {
            let response = self.join_response(member_id);
            let Some(member) = self.members.get_mut(member_id) else { unreachable!() };
            let request_id = member.awaiting_join.take();
            assert!(request_id.is_some());
            if let Some(request_id) = request_id {
                reply(out, request_id, Response::Join(response));
            }
            member.assignment = None;
            member.is_new = false;
            member.session_deadline_ms = now_ms.saturating_add(member.session_timeout_ms);
            self.pending_sync_members.insert(member_id.clone());
        }
        self.sync_deadline_ms = Some(now_ms.saturating_add(self.rebalance_timeout_ms()));
    }

    /// Takes the member out, answering its waiting requests with
    /// `error_code`, and re-elects the leader. No state transition.
    fn remove_member(&mut self, member_id: &str, error_code: i16, out: &mut Vec<Output>) {
        let member = self.members.remove(member_id);
        assert!(member.is_some());
        let Some(member) = member else { return };
        if let Some(request_id) = member.awaiting_join {
            // Empty member id: Kafka's answer tells the client to start over.
            reply(out, request_id, Response::Join(JoinResponse::error("", error_code)));
        }
        if let Some(request_id) = member.awaiting_sync {
            reply(out, request_id, Response::Sync(SyncResponse::error(error_code)));
        }
        self.remove_pending_sync(member_id);
        if self.is_leader(member_id) {
            self.leader_id = self.members.iter().min_by_key(|(_, m)| m.join_seq).map(|(id, _)| id.clone());
        }
    }

    fn remove_pending_sync(&mut self, member_id: &str) {
        self.pending_sync_members.remove(member_id);
        if self.pending_sync_members.is_empty() {
            // Kafka's DelayedSync completes once everyone synced.
            self.sync_deadline_ms = None;
        }
    }

    /// Kafka's `removeMemberAndUpdateGroup` (LeaveGroup, session expiry).
    pub(crate) fn remove_member_and_update(&mut self, now_ms: u64, config: &Config, member_id: &str, out: &mut Vec<Output>) {
        self.remove_member(member_id, error_code::UNKNOWN_MEMBER_ID, out);
        match self.state {
            GroupState::Empty | GroupState::Dead => {}
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(now_ms, config, out),
            GroupState::PreparingRebalance => self.try_complete_join(now_ms, out),
        }
    }

    pub(crate) fn remove_pending_member(&mut self, now_ms: u64, member_id: &str, out: &mut Vec<Output>) {
        let removed = self.pending_members.remove(member_id);
        assert!(removed.is_some());
        // A pending member holds the join phase open; it may be the last.
        self.try_complete_join(now_ms, out);
    }

    /// A valid SyncGroup of the current generation (Kafka's `doSyncGroup`
    /// after validation).
    pub(crate) fn sync_member(&mut self, now_ms: u64, member_id: &str, request_id: u64, assignments: Vec<MemberAssignment>, out: &mut Vec<Output>) {
        assert!(self.members.contains_key(member_id));
        match self.state {
            GroupState::PreparingRebalance => {
                reply(out, request_id, Response::Sync(SyncResponse::error(error_code::REBALANCE_IN_PROGRESS)));
            }
            GroupState::CompletingRebalance => {
                let Some(member) = self.members.get_mut(member_id) else { unreachable!() };
                if let Some(superseded) = member.awaiting_sync.replace(request_id) {
                    reply(out, superseded, Response::Sync(SyncResponse::error(error_code::REBALANCE_IN_PROGRESS)));
                }
                self.remove_pending_sync(member_id);
                if self.is_leader(member_id) {
                    self.complete_sync(assignments);
                }
            }
            GroupState::Stable => {
                self.remove_pending_sync(member_id);
                let protocol_type = self.protocol_type.clone();
                let protocol_name = self.protocol_name.clone();
                let Some(member) = self.members.get_mut(member_id) else { unreachable!() };
                let assignment = member.assignment.clone();
                // Stable means the leader's assignment covered everyone.
                assert!(assignment.is_some());
                let response = SyncResponse { error_code: error_code::NONE, protocol_type, protocol_name, assignment: assignment.unwrap_or_default() };
                reply(out, request_id, Response::Sync(response));
                member.session_deadline_ms = now_ms.saturating_add(member.session_timeout_ms);
            }
            GroupState::Empty | GroupState::Dead => {
                unreachable!("a group with members is neither Empty nor Dead")
            }
        }
    }

    /// The leader's assignment arrived: hold it back until it is durable
    /// (Kafka answers SyncGroup from the GroupMetadata write's callback).
    fn complete_sync(&mut self, assignments: Vec<MemberAssignment>) {
        assert!(self.state == GroupState::CompletingRebalance);
        if self.awaiting_store.is_some() {
            // The leader sent SyncGroup again while its first assignment is
            // being stored: that one stands.
            return;
        }
        let mut by_member: BTreeMap<String, Bytes> = BTreeMap::new();
        for assignment in assignments {
            // Later entries win, as Kafka's map conversion does.
            by_member.insert(assignment.member_id, assignment.assignment);
        }
        // Members the leader left out get an empty assignment (Kafka); ids
        // it named that are not members are dropped.
        let assignments: BTreeMap<String, Bytes> = self
            .members
            .keys()
            .map(|member_id| {
                let assignment = by_member.get(member_id).cloned().unwrap_or_default();
                (member_id.clone(), assignment)
            })
            .collect();
        self.awaiting_store = Some(assignments);
        self.store_needed = true;
    }

    /// The store numbered `store_id` is durable. If it holds this
    /// generation's assignment back, hand the assignment out and become
    /// Stable; otherwise (an Empty group's store, or one a rebalance made
    /// moot) nothing changes.
    pub(crate) fn stored(&mut self, now_ms: u64, store_id: u64, out: &mut Vec<Output>) {
        if self.awaiting_store_id != Some(store_id) {
            return;
        }
        assert!(self.state == GroupState::CompletingRebalance);
        self.awaiting_store_id = None;
        let assignments = self.awaiting_store.take();
        assert!(assignments.is_some());
        let assignments = assignments.unwrap_or_default();
        // No member came or went while the store was in flight: either
        // starts a rebalance, which drops the awaited store.
        assert!(assignments.len() == self.members.len());
        let protocol_type = self.protocol_type.clone();
        let protocol_name = self.protocol_name.clone();
        for (member_id, member) in self.members.iter_mut() {
            let assignment = assignments.get(member_id).cloned();
            assert!(assignment.is_some());
            let assignment = assignment.unwrap_or_default();
            member.assignment = Some(assignment.clone());
            if let Some(request_id) = member.awaiting_sync.take() {
                let response =
                    SyncResponse { error_code: error_code::NONE, protocol_type: protocol_type.clone(), protocol_name: protocol_name.clone(), assignment };
                reply(out, request_id, Response::Sync(response));
                // Its session did not run while it waited.
                member.session_deadline_ms = now_ms.saturating_add(member.session_timeout_ms);
            }
        }
        self.state = GroupState::Stable;
    }

    /// The store numbered `store_id` failed. If it held this generation's
    /// assignment back, the generation cannot be handed out: members
    /// waiting for it get `error_code` and the group rebalances (Kafka's
    /// `resetAndPropagateAssignmentError`).
    pub(crate) fn store_failed(&mut self, now_ms: u64, config: &Config, store_id: u64, error_code: i16, out: &mut Vec<Output>) {
        if self.awaiting_store_id != Some(store_id) {
            return;
        }
        assert!(self.state == GroupState::CompletingRebalance);
        for member in self.members.values_mut() {
            if let Some(request_id) = member.awaiting_sync.take() {
                reply(out, request_id, Response::Sync(SyncResponse::error(error_code)));
                member.session_deadline_ms = now_ms.saturating_add(member.session_timeout_ms);
            }
        }
        self.prepare_rebalance(now_ms, config, out);
    }

    /// The earliest timer of this group, ranked by (deadline, event).
    pub(crate) fn next_event(&self) -> Option<(u64, Event)> {
        let pending = self.pending_members.iter().map(|(id, expiry_ms)| (*expiry_ms, Event::PendingMemberExpired(id.clone())));
        let sessions = self.members.iter().filter(|(_, m)| m.session_can_expire()).map(|(id, m)| (m.session_deadline_ms, Event::SessionExpired(id.clone())));
        let join = self.join_deadline_ms.map(|deadline_ms| (deadline_ms, Event::JoinDeadline));
        let sync = self.sync_deadline_ms.map(|deadline_ms| (deadline_ms, Event::SyncDeadline));
        pending.chain(sessions).chain(join).chain(sync).min()
    }

    /// Fires a timer `next_event` named.
    pub(crate) fn handle_event(&mut self, now_ms: u64, config: &Config, event: Event, out: &mut Vec<Output>) {
        match event {
            Event::PendingMemberExpired(member_id) => self.remove_pending_member(now_ms, &member_id, out),
            Event::SessionExpired(member_id) => {
                assert!(self.members.get(&member_id).is_some_and(Member::session_can_expire));
                self.remove_member_and_update(now_ms, config, &member_id, out);
            }
            Event::JoinDeadline => self.on_join_deadline(now_ms, config, out),
            Event::SyncDeadline => self.on_sync_deadline(now_ms, config, out),
        }
    }

    fn on_join_deadline(&mut self, now_ms: u64, config: &Config, out: &mut Vec<Output>) {
        assert!(self.state == GroupState::PreparingRebalance);
        if let Some(initial_delay) = self.initial_delay {
            if initial_delay.new_member_added && initial_delay.remaining_ms != 0 {
                let delay_ms = config.group_initial_rebalance_delay_ms.min(initial_delay.remaining_ms);
                self.initial_delay = Some(InitialDelay {
                    delay_ms,
                    // Kafka subtracts the delay that just ended.
                    remaining_ms: initial_delay.remaining_ms.saturating_sub(initial_delay.delay_ms),
                    new_member_added: false,
                });
                self.join_deadline_ms = Some(now_ms.saturating_add(delay_ms));
                return;
            }
        }
        self.complete_join(now_ms, out);
    }

    /// Kafka's `onExpirePendingSync`: members that never sent SyncGroup are
    /// dropped and the group rebalances without them.
    fn on_sync_deadline(&mut self, now_ms: u64, config: &Config, out: &mut Vec<Output>) {
        assert!(matches!(self.state, GroupState::CompletingRebalance | GroupState::Stable));
        assert!(!self.pending_sync_members.is_empty());
        let laggards: Vec<String> = self.pending_sync_members.iter().cloned().collect();
        for member_id in laggards {
            self.remove_member(&member_id, error_code::UNKNOWN_MEMBER_ID, out);
        }
        assert!(self.sync_deadline_ms.is_none());
        self.prepare_rebalance(now_ms, config, out);
    }

    /// Answers every waiting request with `error_code` (failover).
    pub(crate) fn fail_all_waiting(&mut self, error_code: i16, out: &mut Vec<Output>) {
        for (member_id, member) in self.members.iter_mut() {
            if let Some(request_id) = member.awaiting_join.take() {
                reply(out, request_id, Response::Join(JoinResponse::error(member_id, error_code)));
            }
            if let Some(request_id) = member.awaiting_sync.take() {
                reply(out, request_id, Response::Sync(SyncResponse::error(error_code)));
            }
        }
    }

    /// The request ids of every waiting request of this group.
    pub(crate) fn waiting_request_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.members.values().flat_map(|m| m.awaiting_join.into_iter().chain(m.awaiting_sync))
    }

    pub(crate) fn describe(&self) -> GroupDescription {
        let stable_protocol = if self.state == GroupState::Stable { self.protocol_name.clone() } else { None };
        let members = self
            .members
            .iter()
            .map(|(id, m)| MemberDescription {
                member_id: id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: stable_protocol.as_deref().map(|name| m.metadata(name)).unwrap_or_default(),
                assignment: if stable_protocol.is_some() { m.assignment.clone().unwrap_or_default() } else { Bytes::new() },
            })
            .collect();
        GroupDescription {
            group_id: self.group_id.clone(),
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name: stable_protocol.unwrap_or_default(),
            generation_id: self.generation_id,
            leader_id: self.leader_id.clone(),
            members,
        }
    }

    /// Every structural invariant of the group; cost grows with its size.
    pub(crate) fn check_invariants(&self) {
        let state = self.state;
        let rebalancing = state == GroupState::PreparingRebalance;
        let assigning = state == GroupState::CompletingRebalance;
        let generation_running = matches!(state, GroupState::CompletingRebalance | GroupState::Stable);

        assert!(state != GroupState::Dead);
        assert!(self.generation_id >= 0);
        if state == GroupState::Empty {
            assert!(self.members.is_empty());
        }
        if generation_running {
            assert!(!self.members.is_empty());
            assert!(self.protocol_name.is_some());
        }
        if self.members.is_empty() {
            assert!(self.leader_id.is_none());
        }
        if !self.members.is_empty() {
            let leader = self.leader_id.as_ref();
            assert!(leader.is_some());
            assert!(leader.is_some_and(|id| self.members.contains_key(id)));
            assert!(self.protocol_type.is_some());
            // Joins are refused unless this stays true, so a protocol can be chosen.
            assert!(!self.candidate_protocols().is_empty());
        }
        assert!(self.join_deadline_ms.is_some() == rebalancing);
        if self.initial_delay.is_some() {
            assert!(rebalancing);
        }
        let syncs_pending = !self.pending_sync_members.is_empty();
        assert!(self.sync_deadline_ms.is_some() == syncs_pending);
        if !self.pending_sync_members.is_empty() {
            assert!(generation_running);
        }
        for member_id in &self.pending_sync_members {
            assert!(self.members.contains_key(member_id));
        }
        for member_id in self.pending_members.keys() {
            assert!(!self.members.contains_key(member_id));
        }
        for (member_id, member) in &self.members {
            if member.awaiting_join.is_some() {
                assert!(rebalancing);
            }
            if member.awaiting_sync.is_some() {
                assert!(assigning);
            }
            if member.awaiting_sync.is_some() {
                // A member with a waiting SyncGroup has sent it.
                assert!(!self.pending_sync_members.contains(member_id));
            }
            if member.is_new {
                assert!(member.awaiting_join.is_some());
            }
            if state == GroupState::Stable {
                assert!(member.assignment.is_some());
            }
            if state == GroupState::CompletingRebalance {
                assert!(member.assignment.is_none());
            }
            if generation_running {
                let name = self.protocol_name.as_deref().unwrap_or_default();
                assert!(member.protocols.iter().any(|p| p.name == name));
            }
            assert!(member.join_seq < self.next_join_seq);
        }
        if let Some(assignments) = &self.awaiting_store {
            assert!(assigning);
            assert!(assignments.len() == self.members.len());
            assert!(assignments.keys().all(|id| self.members.contains_key(id)));
        }
        if self.awaiting_store_id.is_some() {
            assert!(self.awaiting_store.is_some());
        }
        if self.awaiting_store.is_some() && !self.store_needed {
            // Numbered at the end of the call that asked for it.
            assert!(self.awaiting_store_id.is_some());
        }
        if let Some(leader) = self.leader_id.as_ref().and_then(|id| self.members.get(id)) {
            // The leader is the earliest joiner still present: set by the
            // first join, re-elected as the earliest on removal, and later
            // joiners get larger sequence numbers.
            assert!(self.members.values().all(|m| m.join_seq >= leader.join_seq));
        }
    }
}
