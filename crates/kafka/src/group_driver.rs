//! Runs the consumer-group coordinator (`keel_group::Coordinator`) for this
//! broker: one task owns it, the Kafka front sends it requests and awaits the
//! replies, and the task ticks it at its deadlines.
//!
//! The coordinator of every group is the metadata Raft leader (Kafka hashes
//! groups over `__consumer_offsets` partitions; Keel keeps committed offsets
//! in the metadata, so its leader is where a commit is cheapest). Group
//! membership is durable too, as Kafka's GroupMetadata records are: the
//! coordinator's `Output::Store`s become `StoreGroup` metadata commands
//! stamped with (term, store id). When leadership moves, the old node drops
//! its groups (waiting requests are answered NOT_COORDINATOR); the new leader
//! first commits `ClaimGroupCoordinator` for its term, so no store of an
//! earlier coordinator can land after it, then loads the stored groups from
//! its applied metadata (answering COORDINATOR_LOAD_IN_PROGRESS until then).
//! Members of a Stable group carry on in their generation without rejoining.
//! Committed offsets are replicated metadata and survive the move.

use std::collections::BTreeMap;
use std::time::Duration;

use keel_group::{
    Config as GroupConfig, Coordinator, GroupDescription, GroupOverview, HeartbeatRequest, JoinRequest, LeaveRequest, Output, Protocol, Response, StoredGroup,
    StoredMember, SyncRequest,
};
use keel_io::Clock;
use keel_meta::driver::{MetaHandle, ProposalError};
use keel_meta::proto::{CommitStamp, GroupMemberRecord, GroupProtocolRecord, GroupRecord};
use keel_meta::MetadataError;
use tokio::sync::{mpsc, oneshot};

use keel_error_codes as code;

/// How often the task looks at whether this node still leads the metadata.
const LEADERSHIP_POLL_MS: u64 = 100;
/// How long between attempts to claim the groups.
const CLAIM_RETRY_MS: u64 = 100;

/// A request for the coordinator.
pub enum GroupCall {
    Join(JoinRequest),
    Sync(SyncRequest),
    Heartbeat(HeartbeatRequest),
    Leave(LeaveRequest),
}

enum Call {
    Request {
        call: GroupCall,
        reply: oneshot::Sender<Response>,
    },
    ValidateCommit {
        group_id: String,
        member_id: String,
        group_instance_id: Option<String>,
        generation_id: i32,
        reply: oneshot::Sender<Result<CommitStamp, i16>>,
    },
    Describe {
        group_ids: Vec<String>,
        reply: oneshot::Sender<Result<Vec<GroupDescription>, i16>>,
    },
    List {
        reply: oneshot::Sender<Result<Vec<GroupOverview>, i16>>,
    },
}

/// The front's way to the coordinator task.
#[derive(Clone)]
pub struct GroupHandle {
    calls: mpsc::UnboundedSender<Call>,
}

impl GroupHandle {
    /// Starts the coordinator task. `config.member_id_epoch` is replaced by
    /// the metadata term each time this node starts coordinating, so member
    /// ids of two coordinator instances never collide.
    pub fn start(meta: MetaHandle, clock: Clock, config: GroupConfig) -> GroupHandle {
        let (calls, calls_rx) = mpsc::unbounded_channel();
        tokio::spawn(run(meta, clock, config, calls_rx));
        GroupHandle { calls }
    }

    /// One group request; NOT_COORDINATOR-style errors come back as responses.
    pub async fn request(&self, call: GroupCall) -> Result<Response, i16> {
        let (reply, answer) = oneshot::channel();
        self.calls.send(Call::Request { call, reply }).map_err(|_| code::COORDINATOR_NOT_AVAILABLE)?;
        answer.await.map_err(|_| code::COORDINATOR_NOT_AVAILABLE)
    }

    /// Kafka's OffsetCommit membership check; a valid commit gets its place
    /// in the coordinator's order of commits.
    pub async fn validate_commit(&self, group_id: &str, member_id: &str, group_instance_id: Option<String>, generation_id: i32) -> Result<CommitStamp, i16> {
        let (reply, answer) = oneshot::channel();
        let call = Call::ValidateCommit { group_id: group_id.to_string(), member_id: member_id.to_string(), group_instance_id, generation_id, reply };
        self.calls.send(call).map_err(|_| code::COORDINATOR_NOT_AVAILABLE)?;
        answer.await.map_err(|_| code::COORDINATOR_NOT_AVAILABLE)?
    }

    pub async fn describe(&self, group_ids: Vec<String>) -> Result<Vec<GroupDescription>, i16> {
        let (reply, answer) = oneshot::channel();
        self.calls.send(Call::Describe { group_ids, reply }).map_err(|_| code::COORDINATOR_NOT_AVAILABLE)?;
        answer.await.map_err(|_| code::COORDINATOR_NOT_AVAILABLE)?
    }

    pub async fn list(&self) -> Result<Vec<GroupOverview>, i16> {
        let (reply, answer) = oneshot::channel();
        self.calls.send(Call::List { reply }).map_err(|_| code::COORDINATOR_NOT_AVAILABLE)?;
        answer.await.map_err(|_| code::COORDINATOR_NOT_AVAILABLE)?
    }
}

/// The coordinator while this node leads the metadata, with the term it leads in.
struct Active {
    term: u64,
    coordinator: Coordinator,
    /// Commits validated in this term so far.
    commits: u64,
}

/// What the metadata answered to the task's proposals.
enum Event {
    /// The claim of `term` applied; the groups stored as of then.
    Claimed { term: u64, groups: Vec<GroupRecord> },
    /// A `StoreGroup` of `term` finished.
    Stored { term: u64, store_id: u64, result: Result<(), ProposalError> },
}

struct Task {
    meta: MetaHandle,
    clock: Clock,
    config: GroupConfig,
    active: Option<Active>,
    /// The term whose claim is in flight (this node leads it, the groups
    /// are not loaded yet).
    claiming: Option<u64>,
    events: mpsc::UnboundedSender<Event>,
    next_request_id: u64,
    waiting: BTreeMap<u64, oneshot::Sender<Response>>,
}

async fn run(meta: MetaHandle, clock: Clock, config: GroupConfig, mut calls: mpsc::UnboundedReceiver<Call>) {
    let (events, mut events_rx) = mpsc::unbounded_channel();
    let mut task = Task { meta, clock, config, active: None, claiming: None, events, next_request_id: 0, waiting: BTreeMap::new() };
    loop {
        task.follow_leadership();
        let now_ms = task.now_ms();
        let next_tick_ms = task.active.as_ref().and_then(|a| a.coordinator.next_deadline_ms()).unwrap_or(u64::MAX);
        let wait_ms = next_tick_ms.saturating_sub(now_ms).min(LEADERSHIP_POLL_MS);
        tokio::select! {
            biased;
            event = events_rx.recv() => {
                // The task holds a sender, so the channel never closes.
                if let Some(event) = event {
                    task.on_event(event);
                }
            }
            call = calls.recv() => match call {
                Some(call) => task.on_call(call),
                None => return,
            },
            _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => {
                let now_ms = task.now_ms();
                if let Some(active) = task.active.as_mut() {
                    if active.coordinator.next_deadline_ms().is_some_and(|deadline_ms| deadline_ms <= now_ms) {
                        let outputs = active.coordinator.tick(now_ms);
                        task.deliver(outputs);
                    }
                }
            }
        }
    }
}

impl Task {
    fn now_ms(&self) -> u64 {
        self.clock.now().as_millis()
    }

    /// The metadata term this node leads in, if it leads and is ready.
    fn leading_term(&self) -> Option<u64> {
        let status = self.meta.status();
        (status.is_leader && status.ready).then_some(status.term)
    }

    /// Starts coordinating when this node leads the metadata (claim, then
    /// load); stops (every group dropped, waiting requests answered
    /// NOT_COORDINATOR) when it no longer does or leads in a newer term.
    fn follow_leadership(&mut self) {
        let leading_term = self.leading_term();
        if self.active.as_ref().map(|a| a.term).or(self.claiming) == leading_term {
            return;
        }
        if let Some(mut previous) = self.active.take() {
            tracing::info!(term = previous.term, "no longer the group coordinator; groups dropped");
            let outputs = previous.coordinator.clear();
            self.deliver(outputs);
        }
        self.claiming = leading_term;
        if let Some(term) = leading_term {
            tracing::debug!(term, "claiming the groups");
            tokio::spawn(claim(self.meta.clone(), term, self.events.clone()));
        }
    }

    fn on_event(&mut self, event: Event) {
        self.follow_leadership();
        match event {
            Event::Claimed { term, groups } => {
                if self.claiming != Some(term) {
                    return;
                }
                self.claiming = None;
                let config = GroupConfig { member_id_epoch: term, ..self.config.clone() };
                let mut coordinator = Coordinator::new(config).expect("group config validated at startup");
                let mut stored: Vec<StoredGroup> = groups.into_iter().map(from_record).collect();
                let now_ms = self.now_ms();
                // The metadata checked each stored group; one the coordinator
                // still refuses is a bug: its members start over, the others
                // carry on.
                while let Err(error) = coordinator.load(now_ms, stored.clone()) {
                    tracing::error!(term, %error, "stored group not loaded; its members must rejoin");
                    stored.retain(|g| g.group_id != error.group_id);
                }
                tracing::info!(term, groups = stored.len(), "group coordinator for every group; stored groups loaded");
                self.active = Some(Active { term, coordinator, commits: 0 });
            }
            Event::Stored { term, store_id, result } => {
                let now_ms = self.now_ms();
                let Some(active) = self.active.as_mut().filter(|a| a.term == term) else {
                    return;
                };
                let outputs = match result {
                    Ok(()) => active.coordinator.stored(now_ms, store_id),
                    Err(error) => {
                        tracing::debug!(term, store_id, %error, "group store failed");
                        // Refused: another coordinator took over. Otherwise the
                        // metadata did not answer in time (Kafka's answer to a
                        // group write that failed that way).
                        let error_code = match error {
                            ProposalError::Refused(MetadataError::GroupCoordinatorTerm { .. }) => code::NOT_COORDINATOR,
                            _ => code::COORDINATOR_NOT_AVAILABLE,
                        };
                        active.coordinator.store_failed(now_ms, store_id, error_code)
                    }
                };
                self.deliver(outputs);
            }
        }
    }

    fn on_call(&mut self, call: Call) {
        self.follow_leadership();
        let now_ms = self.now_ms();
        let Some(active) = self.active.as_mut() else {
            // Kafka answers COORDINATOR_LOAD_IN_PROGRESS while it loads a
            // group partition it just took over; clients retry.
            let error_code = if self.claiming.is_some() { code::COORDINATOR_LOAD_IN_PROGRESS } else { code::NOT_COORDINATOR };
            refuse(call, error_code);
            return;
        };
        match call {
            Call::Request { call, reply } => {
                let request_id = self.next_request_id;
                self.next_request_id += 1;
                self.waiting.insert(request_id, reply);
                let coordinator = &mut active.coordinator;
                let outputs = match call {
                    GroupCall::Join(request) => coordinator.join(now_ms, request_id, request),
                    GroupCall::Sync(request) => coordinator.sync(now_ms, request_id, request),
                    GroupCall::Heartbeat(request) => coordinator.heartbeat(now_ms, request_id, request),
                    GroupCall::Leave(request) => coordinator.leave(now_ms, request_id, request),
                };
                self.deliver(outputs);
            }
            Call::ValidateCommit { group_id, member_id, group_instance_id, generation_id, reply } => {
                let result = active.coordinator.validate_commit(now_ms, &group_id, &member_id, group_instance_id.as_deref(), generation_id).map(|()| {
                    active.commits += 1;
                    CommitStamp { coordinator_term: active.term, sequence: active.commits }
                });
                let _ = reply.send(result);
            }
            Call::Describe { group_ids, reply } => {
                let _ = reply.send(Ok(group_ids.iter().map(|id| active.coordinator.describe(id)).collect()));
            }
            Call::List { reply } => {
                let _ = reply.send(Ok(active.coordinator.list()));
            }
        }
    }

    fn deliver(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Reply { request_id, response } => {
                    let waiter = self.waiting.remove(&request_id);
                    assert!(waiter.is_some(), "the coordinator answers each request once");
                    // The client may have gone; its connection task dropped the receiver.
                    let _ = waiter.expect("checked").send(response);
                }
                Output::Store { store_id, group } => {
                    let term = self.active.as_ref().map(|a| a.term);
                    // Only a running coordinator asks for stores.
                    assert!(term.is_some());
                    let term = term.expect("checked");
                    let record = to_record(group, CommitStamp { coordinator_term: term, sequence: store_id });
                    let (meta, events) = (self.meta.clone(), self.events.clone());
                    tokio::spawn(async move {
                        let result = meta.store_group(record).await.map(|_| ());
                        let _ = events.send(Event::Stored { term, store_id, result });
                    });
                }
            }
        }
    }
}

/// Claims the groups for `term` (retrying while this node still leads in
/// it), then reads the groups stored as of the claim.
async fn claim(meta: MetaHandle, term: u64, events: mpsc::UnboundedSender<Event>) {
    loop {
        let status = meta.status();
        if !(status.is_leader && status.term == term) {
            return;
        }
        match meta.claim_group_coordinator(term).await {
            Ok(_) => break,
            Err(error) if error.is_retriable() => {
                tracing::debug!(term, %error, "claim of the groups not applied; retrying");
                tokio::time::sleep(Duration::from_millis(CLAIM_RETRY_MS)).await;
            }
            // A newer term claimed the groups (or the node stops): this one
            // never coordinates.
            Err(error) => {
                tracing::info!(term, %error, "groups not claimed");
                return;
            }
        }
    }
    // The claim applied here, so the local state includes it and every store
    // that can ever apply before it.
    let Ok(state) = meta.read_state().await else { return };
    let groups = state.groups().cloned().collect();
    let _ = events.send(Event::Claimed { term, groups });
}

fn to_record(group: StoredGroup, stamp: CommitStamp) -> GroupRecord {
    GroupRecord {
        group: group.group_id,
        generation_id: group.generation_id,
        protocol_type: group.protocol_type,
        protocol_name: group.protocol_name,
        leader_id: group.leader_id,
        members: group
            .members
            .into_iter()
            .map(|m| GroupMemberRecord {
                member_id: m.member_id,
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                protocols: m.protocols.into_iter().map(|p| GroupProtocolRecord { name: p.name, metadata: p.metadata.to_vec() }).collect(),
                assignment: m.assignment.to_vec(),
            })
            .collect(),
        stamp: Some(stamp),
    }
}

fn from_record(record: GroupRecord) -> StoredGroup {
    StoredGroup {
        group_id: record.group,
        generation_id: record.generation_id,
        protocol_type: record.protocol_type,
        protocol_name: record.protocol_name,
        leader_id: record.leader_id,
        members: record
            .members
            .into_iter()
            .map(|m| StoredMember {
                member_id: m.member_id,
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                protocols: m.protocols.into_iter().map(|p| Protocol { name: p.name, metadata: p.metadata.into() }).collect(),
                assignment: m.assignment.into(),
            })
            .collect(),
    }
}

/// Answers a call without a coordinator.
fn refuse(call: Call, error_code: i16) {
    match call {
        Call::Request { call, reply } => {
            let response = match call {
                GroupCall::Join(request) => Response::Join(keel_group::JoinResponse::error(&request.member_id, error_code)),
                GroupCall::Sync(_) => Response::Sync(keel_group::SyncResponse::error(error_code)),
                GroupCall::Heartbeat(_) => Response::Heartbeat(keel_group::HeartbeatResponse { error_code }),
                GroupCall::Leave(_) => Response::Leave(keel_group::LeaveResponse { error_code, members: Vec::new() }),
            };
            let _ = reply.send(response);
        }
        Call::ValidateCommit { reply, .. } => {
            let _ = reply.send(Err(error_code));
        }
        Call::Describe { reply, .. } => {
            let _ = reply.send(Err(error_code));
        }
        Call::List { reply } => {
            let _ = reply.send(Err(error_code));
        }
    }
}
