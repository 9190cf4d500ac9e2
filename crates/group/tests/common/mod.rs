//! A test driver around `Coordinator`: a clock, request ids, and replies
//! collected per request id (each asserted to come exactly once).

#![allow(dead_code)]

use std::collections::BTreeMap;

use bytes::Bytes;
use keel_group::{
    Config, Coordinator, HeartbeatRequest, JoinRequest, JoinResponse, LeaveMember, LeaveRequest, LeaveResponse, MemberAssignment, Output, Protocol, Response,
    StoredGroup, SyncRequest, SyncResponse,
};

pub const SESSION_TIMEOUT_MS: u64 = 10_000;
pub const REBALANCE_TIMEOUT_MS: u64 = 30_000;

pub fn protocol(name: &str) -> Protocol {
    Protocol { name: name.to_owned(), metadata: Bytes::from(format!("meta-{name}")) }
}

pub fn join_request(group_id: &str, member_id: &str, client_id: &str) -> JoinRequest {
    JoinRequest {
        group_id: group_id.to_owned(),
        member_id: member_id.to_owned(),
        group_instance_id: None,
        client_id: client_id.to_owned(),
        client_host: "/10.0.0.1".to_owned(),
        session_timeout_ms: SESSION_TIMEOUT_MS,
        rebalance_timeout_ms: REBALANCE_TIMEOUT_MS,
        protocol_type: "consumer".to_owned(),
        protocols: vec![protocol("range")],
        require_known_member_id: false,
    }
}

pub fn sync_request(group_id: &str, member_id: &str, generation_id: i32) -> SyncRequest {
    SyncRequest {
        group_id: group_id.to_owned(),
        generation_id,
        member_id: member_id.to_owned(),
        group_instance_id: None,
        protocol_type: Some("consumer".to_owned()),
        protocol_name: None,
        assignments: Vec::new(),
    }
}

pub fn assignments(pairs: &[(&str, &str)]) -> Vec<MemberAssignment> {
    pairs
        .iter()
        .map(|(member_id, assignment)| MemberAssignment { member_id: (*member_id).to_owned(), assignment: Bytes::from((*assignment).to_owned()) })
        .collect()
}

pub fn heartbeat_request(group_id: &str, member_id: &str, generation_id: i32) -> HeartbeatRequest {
    HeartbeatRequest { group_id: group_id.to_owned(), generation_id, member_id: member_id.to_owned(), group_instance_id: None }
}

pub fn leave_request(group_id: &str, member_ids: &[&str]) -> LeaveRequest {
    LeaveRequest {
        group_id: group_id.to_owned(),
        members: member_ids.iter().map(|id| LeaveMember { member_id: (*id).to_owned(), group_instance_id: None }).collect(),
    }
}

pub fn config_without_delay() -> Config {
    Config { group_initial_rebalance_delay_ms: 0, ..Config::default() }
}

pub struct Harness {
    pub coordinator: Coordinator,
    pub now_ms: u64,
    next_request_id: u64,
    /// Every reply seen, by request id.
    pub replies: BTreeMap<u64, Response>,
    /// Every store asked for, by store id.
    pub stores: BTreeMap<u64, StoredGroup>,
    /// Stores not reported done yet, oldest first (only while
    /// `hold_stores`).
    pub held_stores: Vec<u64>,
    /// Keep stores in flight instead of reporting each done at once.
    pub hold_stores: bool,
}

impl Harness {
    pub fn new(config: Config) -> Harness {
        Harness {
            coordinator: Coordinator::new(config).expect("valid config"),
            now_ms: 1_000,
            next_request_id: 1,
            replies: BTreeMap::new(),
            stores: BTreeMap::new(),
            held_stores: Vec::new(),
            hold_stores: false,
        }
    }

    /// Books replies; a store is reported done at once (a durable store
    /// that takes no time) unless `hold_stores`.
    fn record(&mut self, out: Vec<Output>) {
        let mut done = Vec::new();
        for output in out {
            match output {
                Output::Reply { request_id, response } => {
                    let previous = self.replies.insert(request_id, response);
                    assert!(previous.is_none(), "request {request_id} answered twice");
                }
                Output::Store { store_id, group } => {
                    let previous = self.stores.insert(store_id, group);
                    assert!(previous.is_none(), "store {store_id} asked for twice");
                    if self.hold_stores {
                        self.held_stores.push(store_id);
                    } else {
                        done.push(store_id);
                    }
                }
            }
        }
        self.coordinator.check_invariants();
        for store_id in done {
            let out = self.coordinator.stored(self.now_ms, store_id);
            self.record(out);
        }
    }

    /// Reports the oldest held store done.
    pub fn complete_store(&mut self) -> u64 {
        let store_id = self.held_stores.remove(0);
        let out = self.coordinator.stored(self.now_ms, store_id);
        self.record(out);
        store_id
    }

    /// Reports the oldest held store failed with `error_code`.
    pub fn fail_store(&mut self, error_code: i16) -> u64 {
        let store_id = self.held_stores.remove(0);
        let out = self.coordinator.store_failed(self.now_ms, store_id, error_code);
        self.record(out);
        store_id
    }

    /// The latest store of `group_id`, as a coordinator taking over would
    /// load it.
    pub fn last_store(&self, group_id: &str) -> Option<StoredGroup> {
        self.stores.values().rev().find(|g| g.group_id == group_id).cloned()
    }

    fn request_id(&mut self) -> u64 {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        request_id
    }

    pub fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
        let out = self.coordinator.tick(self.now_ms);
        self.record(out);
    }

    /// Moves the clock to `at_ms`, ticking at every deadline on the way, as
    /// a driver would.
    pub fn advance_to(&mut self, at_ms: u64) {
        assert!(at_ms >= self.now_ms);
        while let Some(deadline_ms) = self.coordinator.next_deadline_ms() {
            if deadline_ms > at_ms {
                break;
            }
            self.now_ms = self.now_ms.max(deadline_ms);
            let out = self.coordinator.tick(self.now_ms);
            self.record(out);
        }
        self.now_ms = at_ms;
        let out = self.coordinator.tick(self.now_ms);
        self.record(out);
    }

    pub fn join(&mut self, request: JoinRequest) -> u64 {
        let request_id = self.request_id();
        let out = self.coordinator.join(self.now_ms, request_id, request);
        self.record(out);
        request_id
    }

    pub fn sync(&mut self, request: SyncRequest) -> u64 {
        let request_id = self.request_id();
        let out = self.coordinator.sync(self.now_ms, request_id, request);
        self.record(out);
        request_id
    }

    pub fn heartbeat(&mut self, group_id: &str, member_id: &str, generation_id: i32) -> i16 {
        let request_id = self.request_id();
        let out = self.coordinator.heartbeat(self.now_ms, request_id, heartbeat_request(group_id, member_id, generation_id));
        assert!(out.len() == 1);
        self.record(out);
        match self.replies.get(&request_id) {
            Some(Response::Heartbeat(response)) => response.error_code,
            other => panic!("heartbeat {request_id} got {other:?}"),
        }
    }

    pub fn leave(&mut self, request: LeaveRequest) -> LeaveResponse {
        let request_id = self.request_id();
        let out = self.coordinator.leave(self.now_ms, request_id, request);
        self.record(out);
        match self.replies.get(&request_id) {
            Some(Response::Leave(response)) => response.clone(),
            other => panic!("leave {request_id} got {other:?}"),
        }
    }

    pub fn commit(&mut self, group_id: &str, member_id: &str, generation_id: i32) -> Result<(), i16> {
        let result = self.coordinator.validate_commit(self.now_ms, group_id, member_id, None, generation_id);
        self.coordinator.check_invariants();
        result
    }

    /// A JoinGroup that must be answered at once.
    pub fn join_now(&mut self, request: JoinRequest) -> JoinResponse {
        let request_id = self.join(request);
        self.join_reply(request_id)
    }

    /// A SyncGroup that must be answered at once.
    pub fn sync_now(&mut self, request: SyncRequest) -> SyncResponse {
        let request_id = self.sync(request);
        self.sync_reply(request_id)
    }

    pub fn is_answered(&self, request_id: u64) -> bool {
        self.replies.contains_key(&request_id)
    }

    pub fn join_reply(&self, request_id: u64) -> JoinResponse {
        match self.replies.get(&request_id) {
            Some(Response::Join(response)) => response.clone(),
            other => panic!("join {request_id} got {other:?}"),
        }
    }

    pub fn sync_reply(&self, request_id: u64) -> SyncResponse {
        match self.replies.get(&request_id) {
            Some(Response::Sync(response)) => response.clone(),
            other => panic!("sync {request_id} got {other:?}"),
        }
    }

    /// A member id for `client_id`: a first JoinGroup without one, read
    /// back from the group (works while the group is rebalancing).
    pub fn join_new(&mut self, group_id: &str, client_id: &str) -> (u64, String) {
        let before: Vec<String> = self.coordinator.describe(group_id).members.into_iter().map(|m| m.member_id).collect();
        let request_id = self.join(join_request(group_id, "", client_id));
        let after = self.coordinator.describe(group_id).members;
        let added: Vec<String> = after.into_iter().map(|m| m.member_id).filter(|id| !before.contains(id)).collect();
        assert!(added.len() == 1, "join of {client_id} added {added:?}");
        (request_id, added[0].clone())
    }

    /// Two members A and B in a Stable group at generation 1, A the leader
    /// with assignment "a", B with "b". Returns (A, B).
    pub fn stable_pair(&mut self, group_id: &str) -> (String, String) {
        let (join_a, a) = self.join_new(group_id, "client-a");
        let (join_b, b) = self.join_new(group_id, "client-b");
        // The initial delay (3 s), stretched once because B joined in it.
        self.advance_to(self.now_ms + 6_000);
        assert!(self.join_reply(join_a).generation_id == 1);
        assert!(self.join_reply(join_b).generation_id == 1);
        let mut leader_sync = sync_request(group_id, &a, 1);
        leader_sync.assignments = assignments(&[(&a, "a"), (&b, "b")]);
        let sync_a = self.sync(leader_sync);
        let sync_b = self.sync(sync_request(group_id, &b, 1));
        assert!(self.sync_reply(sync_a).error_code == keel_error_codes::NONE);
        assert!(self.sync_reply(sync_b).error_code == keel_error_codes::NONE);
        (a, b)
    }
}
