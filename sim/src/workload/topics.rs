//! The topic workload: clients creating (and deleting) topics through the
//! admin path every client takes, and the probe create after the heal.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use keel_io::{NodeRng, SimDisk};
use keel_meta::admin_ops::{MetaOpError, TopicCreate};
use keel_meta::driver::{MetaHandle, ProposalError};
use keel_meta::MetadataError;
use keel_repl::driver::{parse_log_dir, PARTITION_LOGS_DIR};
use rand::Rng;

use crate::meta_check::{checker, History, TopicOpOutcome};
use crate::report::RunReport;
use crate::scenario::CreateTarget;
use crate::shared::{lock, MetaHandles, SharedHistory, WorldClock};
use crate::workload::{Phase, Workload};
use crate::world::*;

/// One create attempt through one broker keeps retrying for at most this long.
pub(crate) const CREATE_ATTEMPT_BUDGET_MS: u64 = 3_000;

/// One client's create: what to ask for and for how long to keep trying.
pub struct CreateRequest {
    pub topic: String,
    pub partitions: u32,
    pub replication_factor: u32,
    pub configs: Vec<(String, String)>,
    pub to: CreateTarget,
    pub client_timeout_ms: u64,
}

/// A client's create, through keel-meta's admin_ops (the path of the admin
/// endpoint's POST /topics, Kafka's CreateTopics and auto-create): retried
/// with backoff on any suitable broker until acknowledged, found committed
/// by an earlier attempt, refused for good, or out of time.
pub async fn create_topic(handles: MetaHandles, history: SharedHistory, clock: WorldClock, rng: NodeRng, request: CreateRequest) -> TopicOpOutcome {
    let CreateRequest { topic, partitions, replication_factor, configs, to, client_timeout_ms } = &request;
    let create =
        TopicCreate { name: topic.clone(), partitions: *partitions, replication_factor: *replication_factor, configs: configs.clone(), validate_only: false };
    let announce = |history: &mut History, at_us: u64, node_id: u64| history.create_attempted(at_us, topic, node_id);
    let attempt = |handle: MetaHandle, budget_ms: u64| {
        let create = create.clone();
        async move { handle.create_topic(&create, budget_ms).await }
    };
    let settled = |error: &MetadataError, maybe_committed: bool| match error {
        MetadataError::TopicAlreadyExists(_) if maybe_committed => Some(TopicOpOutcome::FoundAfterRetry),
        MetadataError::TopicAlreadyExists(_) => {
            let message = format!("creating `{topic}` was refused as existing, but no earlier attempt could have committed");
            lock(&history).violate(clock.now_us(), checker::NO_PHANTOM_TOPICS, message);
            Some(TopicOpOutcome::Refused("already existed".into()))
        }
        MetadataError::InvalidTopicName { .. } | MetadataError::InvalidPartitionCount(_) => Some(TopicOpOutcome::Refused(error.to_string())),
        _ => None,
    };
    let client = MetaClient { handles: &handles, history: &history, clock: &clock, to: *to, client_timeout_ms: *client_timeout_ms };
    let outcome = client.attempts(rng, announce, attempt, settled).await;
    lock(&history).create_finished(clock.now_us(), topic, outcome.clone());
    outcome
}

/// A client's delete of `topic`, through admin_ops as Kafka's DeleteTopics
/// does, retried like a create. `create_acknowledged`: the client was told
/// the topic exists, so a refusal as unknown before any attempt of its own
/// could have committed means something else deleted it.
async fn delete_topic(
    handles: MetaHandles,
    history: SharedHistory,
    clock: WorldClock,
    rng: NodeRng,
    topic: &str,
    create_acknowledged: bool,
    client_timeout_ms: u64,
) -> TopicOpOutcome {
    let announce = |history: &mut History, at_us: u64, node_id: u64| history.delete_attempted(at_us, topic, node_id);
    let attempt = |handle: MetaHandle, budget_ms: u64| {
        let topic = topic.to_string();
        async move { handle.delete_topic(&topic, budget_ms).await }
    };
    let settled = |error: &MetadataError, maybe_committed: bool| match error {
        MetadataError::UnknownTopic(_) if maybe_committed => Some(TopicOpOutcome::FoundAfterRetry),
        MetadataError::UnknownTopic(_) if create_acknowledged => {
            let message = format!("deleting `{topic}` was refused as unknown, but its create was acknowledged and no delete attempt could have committed");
            lock(&history).violate(clock.now_us(), checker::NO_PHANTOM_DELETES, message);
            Some(TopicOpOutcome::Refused("unknown".into()))
        }
        MetadataError::UnknownTopic(_) => Some(TopicOpOutcome::Refused("unknown (its create was never acknowledged)".into())),
        _ => None,
    };
    let client = MetaClient { handles: &handles, history: &history, clock: &clock, to: CreateTarget::Any, client_timeout_ms };
    let outcome = client.attempts(rng, announce, attempt, settled).await;
    lock(&history).delete_finished(clock.now_us(), topic, outcome.clone());
    outcome
}

/// A metadata client: which brokers it asks, and for how long.
struct MetaClient<'a> {
    handles: &'a MetaHandles,
    history: &'a SharedHistory,
    clock: &'a WorldClock,
    to: CreateTarget,
    client_timeout_ms: u64,
}

impl MetaClient<'_> {
    /// Sends `attempt` to a seeded choice of the brokers serving now (those
    /// `to` names, or any when none of them is), with backoff, until it is
    /// acknowledged, a refusal is `settled` (told whether an earlier attempt
    /// may have committed: proposed, then timed out or lost its node), or
    /// the client's time is up. `announce` records the first broker asked.
    async fn attempts<F: Future<Output = Result<u64, MetaOpError>>>(
        &self,
        mut rng: NodeRng,
        announce: impl FnOnce(&mut History, u64, u64),
        attempt: impl Fn(MetaHandle, u64) -> F,
        settled: impl Fn(&MetadataError, bool) -> Option<TopicOpOutcome>,
    ) -> TopicOpOutcome {
        let deadline_ms = self.clock.now_ms() + self.client_timeout_ms;
        let mut maybe_committed = false;
        let mut last_error = "no broker was up".to_string();
        let mut backoff_ms = 50u64;
        let mut announce = Some(announce);
        while self.clock.now_ms() < deadline_ms {
            let candidates = self.candidates();
            if !candidates.is_empty() {
                let (node_id, handle) = candidates[rng.gen_range(0..candidates.len())].clone();
                if let Some(announce) = announce.take() {
                    announce(&mut lock(self.history), self.clock.now_us(), node_id);
                }
                // admin_ops retries retriable errors itself, within this budget.
                let attempt_budget_ms = deadline_ms.saturating_sub(self.clock.now_ms()).clamp(1, CREATE_ATTEMPT_BUDGET_MS);
                match attempt(handle, attempt_budget_ms).await {
                    Ok(metadata_version) => return TopicOpOutcome::Acknowledged { node_id, metadata_version },
                    Err(MetaOpError::Refused(error)) => {
                        if let Some(outcome) = settled(&error, maybe_committed) {
                            return outcome;
                        }
                        last_error = error.to_string();
                    }
                    Err(error) => {
                        // An attempt that proposed and then timed out, or whose
                        // node stopped, may still commit.
                        let proposed = match &error {
                            MetaOpError::TimedOut { .. } => true,
                            MetaOpError::Stopped(error) => matches!(error, ProposalError::Timeout { .. } | ProposalError::Stopped | ProposalError::Dropped(_)),
                            MetaOpError::NotReady { .. } | MetaOpError::Refused(_) => false,
                        };
                        maybe_committed |= proposed;
                        last_error = error.to_string();
                    }
                }
            }
            self.clock.0.sleep(Duration::from_millis(backoff_ms + rng.gen_range(0..backoff_ms))).await;
            backoff_ms = (backoff_ms * 2).min(1_000);
        }
        TopicOpOutcome::GaveUp(last_error)
    }

    /// The serving brokers `to` names, or every serving broker when none of them is.
    fn candidates(&self) -> Vec<(u64, MetaHandle)> {
        let all = serving(self.handles);
        let pick: Vec<(u64, MetaHandle)> = match self.to {
            CreateTarget::Any => all.clone(),
            CreateTarget::Followers => all.iter().filter(|(_, h)| !h.status().is_leader).cloned().collect(),
            CreateTarget::Leader => all.iter().filter(|(_, h)| h.status().is_leader).cloned().collect(),
        };
        if pick.is_empty() {
            all
        } else {
            pick
        }
    }
}

/// What one topic client was told.
struct TopicOutcome {
    create: TopicOpOutcome,
    /// Its delete's answer, when it deleted the topic.
    delete: Option<TopicOpOutcome>,
}

/// The topic clients' tasks, once every one has been started.
type TopicClients = tokio::task::JoinHandle<Vec<tokio::task::JoinHandle<TopicOutcome>>>;

/// The `[workload]` topic clients (one task per topic, spaced by the
/// scenario's gaps: a create, then for `deletes` of them a delete), and
/// after the heal a probe create.
pub struct TopicWorkload {
    clients: Option<TopicClients>,
    outcomes: Vec<TopicOutcome>,
}

impl TopicWorkload {
    pub fn start(world: &World, rng: &mut NodeRng) -> TopicWorkload {
        let clients = world.scenario.workload.clone().map(|workload| {
            let (handles, history, clock) = (Arc::clone(&world.handles), Arc::clone(&world.history), world.clock.clone());
            let mut rng = rng.fork(2);
            tokio::spawn(async move {
                let mut spawned = Vec::new();
                clock.sleep_until_ms(workload.start_ms).await;
                // Drawn only when there are deletes: scenarios without keep their seeds' runs.
                let deleted = if workload.deletes > 0 { chosen(workload.creates, workload.deletes, &mut rng.fork(7)) } else { BTreeSet::new() };
                for k in 0..workload.creates {
                    let partitions = rng.gen_range(workload.partitions[0]..=workload.partitions[1]);
                    let replication_factor = rng.gen_range(workload.replication_factor[0]..=workload.replication_factor[1]);
                    let request = CreateRequest {
                        topic: format!("topic-{k}"),
                        partitions,
                        replication_factor,
                        configs: Vec::new(),
                        to: workload.to,
                        client_timeout_ms: workload.client_timeout_ms,
                    };
                    let create_rng = rng.fork(100 + k);
                    let delete = deleted.contains(&k).then(|| (workload.delete_after_ms, rng.fork(50_000 + k)));
                    let client = topic_client(Arc::clone(&handles), Arc::clone(&history), clock.clone(), create_rng, request, delete);
                    spawned.push(tokio::spawn(client));
                    clock.0.sleep(Duration::from_millis(rng.gen_range(workload.gap_ms[0]..=workload.gap_ms[1]))).await;
                }
                spawned
            })
        });
        TopicWorkload { clients, outcomes: Vec::new() }
    }
}

/// `count` distinct numbers of `0..of`, drawn from `rng`.
fn chosen(of: u64, count: u64, rng: &mut NodeRng) -> BTreeSet<u64> {
    let mut all: Vec<u64> = (0..of).collect();
    for i in 0..count.min(of) as usize {
        let j = rng.gen_range(i..all.len());
        all.swap(i, j);
    }
    all.into_iter().take(count as usize).collect()
}

/// One topic's client: its create, then (with `delete`: a pause drawn from
/// its range, and the delete's seeded stream) its delete, unless the create
/// was refused for good.
async fn topic_client(
    handles: MetaHandles,
    history: SharedHistory,
    clock: WorldClock,
    rng: NodeRng,
    request: CreateRequest,
    delete: Option<([u64; 2], NodeRng)>,
) -> TopicOutcome {
    let (topic, client_timeout_ms) = (request.topic.clone(), request.client_timeout_ms);
    let create = create_topic(Arc::clone(&handles), Arc::clone(&history), clock.clone(), rng, request).await;
    let delete = match delete {
        Some((after_ms, mut rng)) if !matches!(create, TopicOpOutcome::Refused(_)) => {
            clock.0.sleep(Duration::from_millis(rng.gen_range(after_ms[0]..=after_ms[1]))).await;
            Some(delete_topic(handles, history, clock, rng, &topic, create.done(), client_timeout_ms).await)
        }
        _ => None,
    };
    TopicOutcome { create, delete }
}

impl Workload for TopicWorkload {
    /// Liveness: a create made after the heal is acknowledged within the bound.
    fn probe_after_heal<'a>(&'a mut self, world: &'a mut World, healed_ms: u64, rng: &'a mut NodeRng) -> Phase<'a> {
        Box::pin(async move {
            let (history, clock, bound_ms) = (&world.history, &world.clock, world.scenario.convergence_ms_max);
            let request = CreateRequest {
                topic: "probe-after-heal".into(),
                partitions: 1,
                replication_factor: u32::try_from(world.scenario.cluster.brokers.min(3)).expect("small"),
                configs: Vec::new(),
                to: CreateTarget::Any,
                client_timeout_ms: (healed_ms + bound_ms).saturating_sub(world.clock.now_ms()).max(1),
            };
            let probe = create_topic(Arc::clone(&world.handles), Arc::clone(history), clock.clone(), rng.fork(3), request).await;
            if !probe.done() {
                let message = format!("a create after the heal was not acknowledged within {bound_ms} ms: {probe:?}");
                lock(history).violate(clock.now_us(), checker::LIVENESS, message);
            }
        })
    }

    /// Every client's answers; once topics were deleted, no node keeps a
    /// log of a topic its metadata no longer has.
    fn converge<'a>(&'a mut self, world: &'a mut World, _report: &'a mut RunReport, _rng: &'a mut NodeRng) -> Phase<'a> {
        Box::pin(async move {
            let clients = match self.clients.take() {
                Some(workload) => workload.await.expect("workload task"),
                None => Vec::new(),
            };
            for client in clients {
                self.outcomes.push(client.await.expect("client task"));
            }
            if self.outcomes.iter().any(|outcome| outcome.delete.is_some()) && lock(&world.history).violation().is_none() {
                let (since_ms, bound_ms) = (world.clock.now_ms(), world.scenario.convergence_ms_max);
                let nodes: Vec<(u64, SimDisk)> = world.brokers.values().map(|broker| (broker.id, broker.disk.clone())).collect();
                let handles = Arc::clone(&world.handles);
                let not_removed = || logs_of_deleted_topics(Arc::clone(&handles), nodes.clone());
                await_convergence(world, since_ms, bound_ms, checker::DELETED_TOPIC_LOGS_REMOVED, "logs of deleted topics removed", not_removed).await;
            }
        })
    }

    fn report<'a>(&'a mut self, _world: &'a mut World, report: &'a mut RunReport) -> Phase<'a> {
        Box::pin(async move {
            for outcome in &self.outcomes {
                match &outcome.create {
                    TopicOpOutcome::Acknowledged { .. } => report.creates_acknowledged += 1,
                    TopicOpOutcome::FoundAfterRetry => report.creates_found_after_retry += 1,
                    TopicOpOutcome::GaveUp(_) | TopicOpOutcome::Refused(_) => report.creates_given_up += 1,
                }
                match &outcome.delete {
                    Some(TopicOpOutcome::Acknowledged { .. } | TopicOpOutcome::FoundAfterRetry) => report.deletes_acknowledged += 1,
                    Some(TopicOpOutcome::GaveUp(_) | TopicOpOutcome::Refused(_)) => report.deletes_given_up += 1,
                    None => {}
                }
            }
        })
    }
}

/// A partition log on a node whose metadata has no topic of that name and
/// id, or `None`: a deleted topic's replicas remove their logs once they
/// apply the delete (or, for a broker that was down, when it starts again).
async fn logs_of_deleted_topics(handles: MetaHandles, nodes: Vec<(u64, SimDisk)>) -> Option<String> {
    let serving: BTreeMap<u64, MetaHandle> = serving(&handles).into_iter().collect();
    let prefix = format!("{PARTITION_LOGS_DIR}/");
    for (id, disk) in nodes {
        let Some(handle) = serving.get(&id) else {
            return Some(format!("n{id} is not serving"));
        };
        let Ok(state) = handle.read_state().await else {
            return Some(format!("n{id} stopped"));
        };
        for (path, _) in disk.files() {
            let Some(dir) = path.strip_prefix(&prefix).and_then(|rest| rest.split('/').next()) else { continue };
            let Some((topic, _partition, topic_id)) = parse_log_dir(dir) else { continue };
            if state.topic(topic).is_none_or(|t| t.topic_id != topic_id) {
                return Some(format!("n{id} still has {path}, of a topic its metadata no longer has"));
            }
        }
    }
    None
}
