//! The coordinator: every group this node coordinates, request validation
//! (Kafka's `GroupCoordinator.handle*`), member id generation, and the
//! exactly-once bookkeeping of waiting requests.

use std::collections::{BTreeMap, BTreeSet};

use crate::group::Group;
use crate::types::{
    Config, ConfigError, GroupDescription, GroupOverview, GroupState, HeartbeatRequest, HeartbeatResponse, JoinRequest, JoinResponse, LeaveMemberResponse,
    LeaveRequest, LeaveResponse, LoadError, Output, Response, StoredGroup, SyncRequest, SyncResponse,
};
use keel_error_codes as error_code;

/// Kafka's generation id for "no generation" (simple consumers, admin clients).
const NO_GENERATION: i32 = -1;

fn reply(out: &mut Vec<Output>, request_id: u64, response: Response) {
    out.push(Output::Reply { request_id, response });
}

fn join_error(out: &mut Vec<Output>, request_id: u64, member_id: &str, error_code: i16) {
    reply(out, request_id, Response::Join(JoinResponse::error(member_id, error_code)));
}

fn sync_error(out: &mut Vec<Output>, request_id: u64, error_code: i16) {
    reply(out, request_id, Response::Sync(SyncResponse::error(error_code)));
}

/// The group coordinator of one node, for the groups it currently owns.
/// Which groups a node owns (and NOT_COORDINATOR for the others) is the
/// caller's business; `clear` drops everything when ownership moves.
pub struct Coordinator {
    config: Config,
    groups: BTreeMap<String, Group>,
    /// Never reset, so member ids stay unique across `clear`.
    next_member_seq: u64,
    /// Requests not answered yet: each is some member's waiting JoinGroup
    /// or SyncGroup.
    waiting_request_ids: BTreeSet<u64>,
    /// The latest `now_ms` seen: the clock is monotonic.
    last_now_ms: u64,
    /// The number of the next `Output::Store`.
    next_store_id: u64,
}

impl Coordinator {
    pub fn new(config: Config) -> Result<Coordinator, ConfigError> {
        config.validate()?;
        Ok(Coordinator { config, groups: BTreeMap::new(), next_member_seq: 0, waiting_request_ids: BTreeSet::new(), last_now_ms: 0, next_store_id: 0 })
    }

    /// Takes over the groups a previous coordinator made durable (the last
    /// `Output::Store` of each group that succeeded). Must come before any
    /// other call that creates groups. Either every group loads or none
    /// does. Loaded members are in their stored generation with their
    /// assignments; each member's session starts at `now_ms`.
    pub fn load(&mut self, now_ms: u64, stored: Vec<StoredGroup>) -> Result<(), LoadError> {
        self.begin(now_ms, None);
        assert!(self.groups.is_empty());
        let mut loaded = BTreeMap::new();
        for stored_group in stored {
            let group_id = stored_group.group_id.clone();
            let group = Group::load(now_ms, stored_group)?;
            if loaded.insert(group_id.clone(), group).is_some() {
                return Err(LoadError { group_id, reason: "stored twice".to_owned() });
            }
        }
        self.groups = loaded;
        let mut out = Vec::new();
        self.finish(None, &mut out, None);
        assert!(out.is_empty());
        Ok(())
    }

    /// The store `store_id` (an `Output::Store` of this coordinator) is
    /// durable: a SyncGroup assignment it held back goes out now.
    pub fn stored(&mut self, now_ms: u64, store_id: u64) -> Vec<Output> {
        self.begin(now_ms, None);
        assert!(store_id < self.next_store_id);
        let mut out = Vec::new();
        let group_id = self.group_awaiting_store(store_id);
        if let Some(group) = group_id.as_ref().and_then(|id| self.groups.get_mut(id)) {
            group.stored(now_ms, store_id, &mut out);
        }
        self.finish(None, &mut out, group_id.as_deref());
        out
    }

    /// The store `store_id` failed (or its outcome is unknown): a SyncGroup
    /// assignment it held back is never handed out; the members waiting for
    /// it get `error_code` and the group rebalances.
    pub fn store_failed(&mut self, now_ms: u64, store_id: u64, error_code: i16) -> Vec<Output> {
        self.begin(now_ms, None);
        assert!(store_id < self.next_store_id);
        assert!(error_code != error_code::NONE);
        let mut out = Vec::new();
        let group_id = self.group_awaiting_store(store_id);
        let config = &self.config;
        if let Some(group) = group_id.as_ref().and_then(|id| self.groups.get_mut(id)) {
            group.store_failed(now_ms, config, store_id, error_code, &mut out);
        }
        self.finish(None, &mut out, group_id.as_deref());
        out
    }

    fn group_awaiting_store(&self, store_id: u64) -> Option<String> {
        self.groups.values().find(|g| g.awaiting_store_id == Some(store_id)).map(|g| g.group_id.clone())
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// JoinGroup. The reply comes now (errors, MEMBER_ID_REQUIRED, a known
    /// member's rejoin of a settled generation) or once the join phase ends.
    pub fn join(&mut self, now_ms: u64, request_id: u64, request: JoinRequest) -> Vec<Output> {
        self.begin(now_ms, Some(request_id));
        let mut out = Vec::new();
        let group_id = request.group_id.clone();
        self.join_inner(now_ms, request_id, request, &mut out);
        self.finish(Some(request_id), &mut out, Some(&group_id));
        out
    }

    /// SyncGroup. A follower's reply waits for the leader's SyncGroup.
    pub fn sync(&mut self, now_ms: u64, request_id: u64, request: SyncRequest) -> Vec<Output> {
        self.begin(now_ms, Some(request_id));
        let mut out = Vec::new();
        let group_id = request.group_id.clone();
        self.sync_inner(now_ms, request_id, request, &mut out);
        self.finish(Some(request_id), &mut out, Some(&group_id));
        out
    }

    /// Heartbeat; always answered now.
    pub fn heartbeat(&mut self, now_ms: u64, request_id: u64, request: HeartbeatRequest) -> Vec<Output> {
        self.begin(now_ms, Some(request_id));
        let mut out = Vec::new();
        let error_code = self.heartbeat_inner(now_ms, request);
        reply(&mut out, request_id, Response::Heartbeat(HeartbeatResponse { error_code }));
        self.finish(Some(request_id), &mut out, None);
        out
    }

    /// LeaveGroup; answered now, and may answer other members' waiting
    /// requests (the leaver's own JoinGroup, or everyone's if the leaver was
    /// the last one the join phase waited for).
    pub fn leave(&mut self, now_ms: u64, request_id: u64, request: LeaveRequest) -> Vec<Output> {
        self.begin(now_ms, Some(request_id));
        let mut out = Vec::new();
        let group_id = request.group_id.clone();
        let response = self.leave_inner(now_ms, request, &mut out);
        reply(&mut out, request_id, Response::Leave(response));
        self.finish(Some(request_id), &mut out, Some(&group_id));
        out
    }

    /// Fires every deadline at or before `now_ms`, earliest first (ties by
    /// group id, then event kind, then member id).
    pub fn tick(&mut self, now_ms: u64) -> Vec<Output> {
        self.begin(now_ms, None);
        let mut out = Vec::new();
        // Each event removes a member or pending member, or moves a join
        // phase on; a join phase that ends without removing anyone leaves
        // no due deadline behind. So the loop is bounded by a few events per
        // member, pending member and group.
        let entities: usize = self.groups.values().map(|g| 1 + g.members.len() + g.pending_members.len()).sum();
        let events_max = 4 * entities + 4;
        let mut events = 0usize;
        let mut touched = BTreeSet::new();
        loop {
            let due =
                self.groups.iter().filter_map(|(group_id, group)| group.next_event().map(|(deadline_ms, event)| (deadline_ms, group_id.clone(), event))).min();
            let Some((deadline_ms, group_id, event)) = due else {
                break;
            };
            if deadline_ms > now_ms {
                break;
            }
            events += 1;
            assert!(events <= events_max);
            let config = &self.config;
            let Some(group) = self.groups.get_mut(&group_id) else { unreachable!() };
            group.handle_event(now_ms, config, event, &mut out);
            touched.insert(group_id);
        }
        for group_id in &touched {
            self.take_store(group_id, &mut out);
        }
        self.finish(None, &mut out, None);
        if let Some(deadline_ms) = self.next_deadline_ms() {
            assert!(deadline_ms > now_ms);
        }
        out
    }

    /// When `tick` has work next; None while no timer runs.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.groups.values().filter_map(|g| g.next_event().map(|(deadline_ms, _)| deadline_ms)).min()
    }

    /// Kafka's OffsetCommit membership check. `generation_id` -1 with an
    /// empty member id is a simple consumer or admin client: allowed only
    /// while the group is Empty (an unknown group is then created Empty, as
    /// Kafka does). A member's valid commit counts as liveness (its session
    /// restarts), as in Kafka.
    pub fn validate_commit(&mut self, now_ms: u64, group_id: &str, member_id: &str, group_instance_id: Option<&str>, generation_id: i32) -> Result<(), i16> {
        self.begin(now_ms, None);
        let result = self.validate_commit_inner(now_ms, group_id, member_id, group_instance_id, generation_id);
        // A commit never changes what is stored.
        self.finish(None, &mut Vec::new(), None);
        result
    }

    /// DeleteGroups: only an Empty group can go.
    pub fn remove_group(&mut self, group_id: &str) -> Result<(), i16> {
        let Some(group) = self.groups.get(group_id) else {
            return Err(error_code::GROUP_ID_NOT_FOUND);
        };
        if group.state != GroupState::Empty {
            return Err(error_code::NON_EMPTY_GROUP);
        }
        // Empty means no members, hence nothing waiting.
        assert!(group.waiting_request_ids().next().is_none());
        self.groups.remove(group_id);
        self.finish(None, &mut Vec::new(), None);
        Ok(())
    }

    /// This node stopped coordinating (failover): drop every group and
    /// answer every waiting request NOT_COORDINATOR, so clients look up the
    /// new coordinator.
    pub fn clear(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        for group in self.groups.values_mut() {
            group.fail_all_waiting(error_code::NOT_COORDINATOR, &mut out);
        }
        self.groups.clear();
        self.finish(None, &mut out, None);
        assert!(self.waiting_request_ids.is_empty());
        out
    }

    /// DescribeGroups: an unknown group is reported Dead, as Kafka does.
    pub fn describe(&self, group_id: &str) -> GroupDescription {
        match self.groups.get(group_id) {
            Some(group) => group.describe(),
            None => GroupDescription {
                group_id: group_id.to_owned(),
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol_name: String::new(),
                generation_id: NO_GENERATION,
                leader_id: None,
                members: Vec::new(),
            },
        }
    }

    /// ListGroups, in group id order.
    pub fn list(&self) -> Vec<GroupOverview> {
        self.groups
            .values()
            .map(|g| GroupOverview { group_id: g.group_id.clone(), protocol_type: g.protocol_type.clone().unwrap_or_default(), state: g.state })
            .collect()
    }

    /// Every invariant of every group and of the waiting-request
    /// bookkeeping. Cost grows with the number of members: run after every
    /// call in debug builds, and by tests and the simulator.
    pub fn check_invariants(&self) {
        let mut waiting = BTreeSet::new();
        for (group_id, group) in &self.groups {
            assert!(*group_id == group.group_id);
            group.check_invariants();
            for request_id in group.waiting_request_ids() {
                let first = waiting.insert(request_id);
                assert!(first);
            }
            // Every call numbers the stores it asked for before it returns.
            assert!(!group.store_needed);
            if let Some(store_id) = group.awaiting_store_id {
                assert!(store_id < self.next_store_id);
            }
        }
        assert!(waiting == self.waiting_request_ids);
    }

    fn begin(&mut self, now_ms: u64, request_id: Option<u64>) {
        assert!(now_ms >= self.last_now_ms);
        self.last_now_ms = now_ms;
        if let Some(request_id) = request_id {
            // Reusing a waiting request's id would make its answers ambiguous.
            assert!(!self.waiting_request_ids.contains(&request_id));
        }
    }

    /// Numbers the store `group_id` needs, if any, and adds it to `out`.
    fn take_store(&mut self, group_id: &str, out: &mut Vec<Output>) {
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        if !std::mem::take(&mut group.store_needed) {
            return;
        }
        // The state that asked for the store may have moved on within the
        // same call (e.g. Empty, then joined): store what is there now.
        let Some(stored) = group.to_store() else {
            return;
        };
        let store_id = self.next_store_id;
        self.next_store_id += 1;
        if group.awaiting_store_id.is_none() && stored.leader_id.is_some() {
            group.awaiting_store_id = Some(store_id);
        }
        out.push(Output::Store { store_id, group: stored });
    }

    /// Books the call's replies: each answers the current request (at most
    /// once) or a request that was waiting; an unanswered current request
    /// is now waiting. Adds the store `group_id` (the group the call was
    /// about) needs.
    fn finish(&mut self, request_id: Option<u64>, out: &mut Vec<Output>, group_id: Option<&str>) {
        if let Some(group_id) = group_id {
            self.take_store(group_id, out);
        }
        let mut current_answers = 0usize;
        for output in out.iter() {
            let Output::Reply { request_id: answered, .. } = output else {
                continue;
            };
            if Some(*answered) == request_id {
                current_answers += 1;
            } else {
                let was_waiting = self.waiting_request_ids.remove(answered);
                assert!(was_waiting);
            }
        }
        assert!(current_answers <= 1);
        if let Some(request_id) = request_id {
            if current_answers == 0 {
                self.waiting_request_ids.insert(request_id);
            }
        }
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
    }

    fn join_inner(&mut self, now_ms: u64, request_id: u64, request: JoinRequest, out: &mut Vec<Output>) {
        if request.group_instance_id.is_some() {
            return join_error(out, request_id, &request.member_id, error_code::UNSUPPORTED_VERSION);
        }
        if request.group_id.is_empty() {
            return join_error(out, request_id, &request.member_id, error_code::INVALID_GROUP_ID);
        }
        if request.session_timeout_ms < self.config.group_min_session_timeout_ms || request.session_timeout_ms > self.config.group_max_session_timeout_ms {
            return join_error(out, request_id, &request.member_id, error_code::INVALID_SESSION_TIMEOUT);
        }
        let is_new_member = request.member_id.is_empty();
        if !self.groups.contains_key(&request.group_id) {
            if !is_new_member {
                // An id from an earlier incarnation of the group, or another
                // coordinator: the client must start over.
                return join_error(out, request_id, &request.member_id, error_code::UNKNOWN_MEMBER_ID);
            }
            let group = Group::new(request.group_id.clone());
            // Refuse before creating, so a refused join leaves nothing behind.
            if !group.supports_protocols("", &request.protocol_type, &request.protocols) {
                return join_error(out, request_id, "", error_code::INCONSISTENT_GROUP_PROTOCOL);
            }
            self.groups.insert(request.group_id.clone(), group);
        }
        let config = &self.config;
        let Some(group) = self.groups.get_mut(&request.group_id) else { unreachable!() };

        if is_new_member {
            if !group.supports_protocols("", &request.protocol_type, &request.protocols) {
                return join_error(out, request_id, "", error_code::INCONSISTENT_GROUP_PROTOCOL);
            }
            // The suffix after the last '-' is a coordinator-wide counter, so
            // ids are unique whatever the client ids look like.
            let member_id = format!("{}-{}-{}", request.client_id, config.member_id_epoch, self.next_member_seq);
            self.next_member_seq += 1;
            if request.require_known_member_id {
                // The client must come back with this id; until then it holds
                // the join phase open, up to its session timeout.
                group.add_pending_member(member_id.clone(), now_ms.saturating_add(request.session_timeout_ms));
                return join_error(out, request_id, &member_id, error_code::MEMBER_ID_REQUIRED);
            }
            return group.add_member_and_rebalance(now_ms, config, member_id, request_id, request, out);
        }

        let member_id = request.member_id.clone();
        if !group.supports_protocols(&member_id, &request.protocol_type, &request.protocols) {
            return join_error(out, request_id, &member_id, error_code::INCONSISTENT_GROUP_PROTOCOL);
        }
        if group.pending_members.contains_key(&member_id) {
            return group.add_member_and_rebalance(now_ms, config, member_id, request_id, request, out);
        }
        if !group.members.contains_key(&member_id) {
            return join_error(out, request_id, &member_id, error_code::UNKNOWN_MEMBER_ID);
        }
        group.join_existing_member(now_ms, config, &member_id, request_id, request, out);
    }

    fn sync_inner(&mut self, now_ms: u64, request_id: u64, request: SyncRequest, out: &mut Vec<Output>) {
        if request.group_instance_id.is_some() {
            return sync_error(out, request_id, error_code::UNSUPPORTED_VERSION);
        }
        if request.group_id.is_empty() {
            return sync_error(out, request_id, error_code::INVALID_GROUP_ID);
        }
        let Some(group) = self.groups.get_mut(&request.group_id) else {
            return sync_error(out, request_id, error_code::UNKNOWN_MEMBER_ID);
        };
        if !group.members.contains_key(&request.member_id) {
            return sync_error(out, request_id, error_code::UNKNOWN_MEMBER_ID);
        }
        if request.generation_id != group.generation_id {
            return sync_error(out, request_id, error_code::ILLEGAL_GENERATION);
        }
        if request.protocol_type.is_some() && request.protocol_type != group.protocol_type {
            return sync_error(out, request_id, error_code::INCONSISTENT_GROUP_PROTOCOL);
        }
        if request.protocol_name.is_some() && request.protocol_name != group.protocol_name {
            return sync_error(out, request_id, error_code::INCONSISTENT_GROUP_PROTOCOL);
        }
        group.sync_member(now_ms, &request.member_id, request_id, request.assignments, out);
    }

    fn heartbeat_inner(&mut self, now_ms: u64, request: HeartbeatRequest) -> i16 {
        if request.group_instance_id.is_some() {
            return error_code::UNSUPPORTED_VERSION;
        }
        if request.group_id.is_empty() {
            return error_code::INVALID_GROUP_ID;
        }
        let Some(group) = self.groups.get_mut(&request.group_id) else {
            return error_code::UNKNOWN_MEMBER_ID;
        };
        let state = group.state;
        let generation_id = group.generation_id;
        let Some(member) = group.members.get_mut(&request.member_id) else {
            return error_code::UNKNOWN_MEMBER_ID;
        };
        if request.generation_id != generation_id {
            return error_code::ILLEGAL_GENERATION;
        }
        member.session_deadline_ms = now_ms.saturating_add(member.session_timeout_ms);
        match state {
            // Tells the member to rejoin.
            GroupState::PreparingRebalance => error_code::REBALANCE_IN_PROGRESS,
            // Members heartbeat between their JoinGroup and SyncGroup answers.
            GroupState::CompletingRebalance | GroupState::Stable => error_code::NONE,
            GroupState::Empty | GroupState::Dead => {
                unreachable!("a group with members is neither Empty nor Dead")
            }
        }
    }

    fn leave_inner(&mut self, now_ms: u64, request: LeaveRequest, out: &mut Vec<Output>) -> LeaveResponse {
        if request.group_id.is_empty() {
            return LeaveResponse { error_code: error_code::INVALID_GROUP_ID, members: Vec::new() };
        }
        let config = &self.config;
        let mut group = self.groups.get_mut(&request.group_id);
        let mut members = Vec::with_capacity(request.members.len());
        for leaving in request.members {
            let error_code = match group.as_deref_mut() {
                _ if leaving.group_instance_id.is_some() => error_code::UNSUPPORTED_VERSION,
                None => error_code::UNKNOWN_MEMBER_ID,
                Some(group) if group.pending_members.contains_key(&leaving.member_id) => {
                    group.remove_pending_member(now_ms, &leaving.member_id, out);
                    error_code::NONE
                }
                Some(group) if group.members.contains_key(&leaving.member_id) => {
                    group.remove_member_and_update(now_ms, config, &leaving.member_id, out);
                    error_code::NONE
                }
                Some(_) => error_code::UNKNOWN_MEMBER_ID,
            };
            members.push(LeaveMemberResponse { member_id: leaving.member_id, group_instance_id: leaving.group_instance_id, error_code });
        }
        LeaveResponse { error_code: error_code::NONE, members }
    }

    fn validate_commit_inner(&mut self, now_ms: u64, group_id: &str, member_id: &str, group_instance_id: Option<&str>, generation_id: i32) -> Result<(), i16> {
        if group_instance_id.is_some() {
            return Err(error_code::UNSUPPORTED_VERSION);
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            if generation_id < 0 {
                // A group used for offsets only ("simple consumer"): Kafka
                // creates it Empty, so it lists and describes.
                self.groups.insert(group_id.to_owned(), Group::new(group_id.to_owned()));
                return Ok(());
            }
            // A generation of a group this coordinator does not know.
            return Err(error_code::ILLEGAL_GENERATION);
        };
        if generation_id < 0 && group.state == GroupState::Empty {
            return Ok(());
        }
        if generation_id < 0 && member_id.is_empty() {
            // Only members may commit while the group has any.
            return Err(error_code::UNKNOWN_MEMBER_ID);
        }
        let state = group.state;
        let current_generation_id = group.generation_id;
        let Some(member) = group.members.get_mut(member_id) else {
            return Err(error_code::UNKNOWN_MEMBER_ID);
        };
        if generation_id != current_generation_id {
            return Err(error_code::ILLEGAL_GENERATION);
        }
        match state {
            // Members of the generation being replaced may still commit; the
            // heartbeat tells them to rejoin.
            GroupState::Stable | GroupState::PreparingRebalance => {
                member.session_deadline_ms = now_ms.saturating_add(member.session_timeout_ms);
                Ok(())
            }
            // The member got its JoinGroup answer but not yet its assignment.
            GroupState::CompletingRebalance => Err(error_code::REBALANCE_IN_PROGRESS),
            GroupState::Empty | GroupState::Dead => {
                unreachable!("a group with members is neither Empty nor Dead")
            }
        }
    }
}
