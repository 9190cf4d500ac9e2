//! Runs the consumer-group coordinator (`keel_group::Coordinator`) for this
//! broker: one task owns it, the Kafka front sends it requests and awaits the
//! replies, and the task ticks it at its deadlines.
//!
//! The coordinator of every group is the metadata Raft leader (Kafka hashes
//! groups over `__consumer_offsets` partitions; Keel keeps committed offsets
//! in the metadata, so its leader is where a commit is cheapest). Membership
//! lives in memory, as in Kafka: when leadership moves, this node drops its
//! groups (waiting requests are answered NOT_COORDINATOR), and the members
//! find the new coordinator and join again. Committed offsets are replicated
//! metadata and survive the move.

use std::collections::BTreeMap;
use std::time::Duration;

use keel_group::{
    Config as GroupConfig, Coordinator, GroupDescription, GroupOverview, HeartbeatRequest, JoinRequest, LeaveRequest, Output, Response, SyncRequest,
};
use keel_io::Clock;
use keel_meta::driver::MetaHandle;
use keel_meta::proto::CommitStamp;
use tokio::sync::{mpsc, oneshot};

use crate::error_code as code;

/// How often the task looks at whether this node still leads the metadata.
const LEADERSHIP_POLL_MS: u64 = 100;

/// A request for the coordinator.
pub enum GroupCall {
    Join(JoinRequest),
    Sync(SyncRequest),
    Heartbeat(HeartbeatRequest),
    Leave(LeaveRequest),
}

enum Call {
    Request { call: GroupCall, reply: oneshot::Sender<Response> },
    ValidateCommit { group_id: String, member_id: String, group_instance_id: Option<String>, generation_id: i32, reply: oneshot::Sender<Result<CommitStamp, i16>> },
    Describe { group_ids: Vec<String>, reply: oneshot::Sender<Result<Vec<GroupDescription>, i16>> },
    List { reply: oneshot::Sender<Result<Vec<GroupOverview>, i16>> },
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

struct Task {
    meta: MetaHandle,
    clock: Clock,
    config: GroupConfig,
    active: Option<Active>,
    next_request_id: u64,
    waiting: BTreeMap<u64, oneshot::Sender<Response>>,
}

async fn run(meta: MetaHandle, clock: Clock, config: GroupConfig, mut calls: mpsc::UnboundedReceiver<Call>) {
    let mut task = Task { meta, clock, config, active: None, next_request_id: 0, waiting: BTreeMap::new() };
    loop {
        task.follow_leadership();
        let now_ms = task.now_ms();
        let next_tick_ms = task.active.as_ref().and_then(|a| a.coordinator.next_deadline_ms()).unwrap_or(u64::MAX);
        let wait_ms = next_tick_ms.saturating_sub(now_ms).min(LEADERSHIP_POLL_MS);
        tokio::select! {
            biased;
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

    /// Starts coordinating when this node leads the metadata; stops (every
    /// group dropped, waiting requests answered NOT_COORDINATOR) when it no
    /// longer does or leads in a newer term.
    fn follow_leadership(&mut self) {
        let status = self.meta.status();
        let leading_term = (status.is_leader && status.ready).then_some(status.term);
        if self.active.as_ref().map(|a| a.term) == leading_term {
            return;
        }
        if let Some(mut previous) = self.active.take() {
            tracing::info!(term = previous.term, "no longer the group coordinator; groups dropped");
            let outputs = previous.coordinator.clear();
            self.deliver(outputs);
        }
        if let Some(term) = leading_term {
            let config = GroupConfig { member_id_epoch: term, ..self.config.clone() };
            let coordinator = Coordinator::new(config).expect("group config validated at startup");
            tracing::info!(term, "group coordinator for every group");
            self.active = Some(Active { term, coordinator, commits: 0 });
        }
    }

    fn on_call(&mut self, call: Call) {
        self.follow_leadership();
        let now_ms = self.now_ms();
        let Some(active) = self.active.as_mut() else {
            refuse(call, code::NOT_COORDINATOR);
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
            let Output::Reply { request_id, response } = output;
            let waiter = self.waiting.remove(&request_id);
            assert!(waiter.is_some(), "the coordinator answers each request once");
            // The client may have gone; its connection task dropped the receiver.
            let _ = waiter.expect("checked").send(response);
        }
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
