//! The data workload: producers and consumers (over the internal path or
//! the Kafka wire from the clients' host) and consumer-group members.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_io::NodeRng;
use madsim::runtime::NodeHandle;

use crate::data_world::{DataClients, DATA_TOPIC};
use crate::kafka_world::KafkaClients;
use crate::meta_check::TopicOpOutcome;
use crate::report::{DataReport, KafkaReport, RunReport};
use crate::scenario::CreateTarget;
use crate::shared::{lock, SharedHistory, WorldClock};
use crate::workload::topics::*;
use crate::workload::{Phase, Workload};
use crate::world::*;

/// After the data converged: the group consumes and commits every
/// committed record within `bound_ms`, its members stop (leaving the
/// group), and its final committed offsets are checked.
#[allow(clippy::too_many_arguments)]
async fn finish_group(
    clock: &WorldClock,
    history: &SharedHistory,
    group: &crate::scenario::GroupSpec,
    kafka: &KafkaClients,
    host: &NodeHandle,
    group_stop: &Arc<AtomicBool>,
    members: Vec<tokio::task::JoinHandle<()>>,
    heal_at_ms: u64,
    bound_ms: u64,
    mut rng: NodeRng,
) -> crate::group_check::GroupStats {
    {
        let mut history = lock(history);
        if let Some((from_ms, to_ms)) = history.group.longest_commit_gap(heal_at_ms) {
            history.group.stats.longest_commit_gap_ms = to_ms - from_ms;
        }
        if let Some(gap_ms_max) = group.commit_gap_ms_max {
            let verdict = history.group.check_commit_gap(heal_at_ms, gap_ms_max);
            history.data_verdict(clock.now_us(), verdict);
        }
    }
    let since_ms = clock.now_ms();
    let committed = lock(history).data.committed_offsets();
    let mut caught_up = false;
    while lock(history).violation().is_none() && clock.now_ms() < since_ms + bound_ms {
        // Consumed everything, and the group's committed offsets (as the
        // coordinator answers them now) are past every committed record.
        if lock(history).group.caught_up(&committed) {
            let (kafka, group, deadline_ms) = (kafka.clone(), group.clone(), clock.now_ms() + 2_000);
            let probe_rng = rng.fork(clock.now_ms());
            let offsets =
                host.spawn(async move { crate::group_world::final_committed(kafka, group, deadline_ms, probe_rng).await }).await.expect("offsets task");
            if offsets.is_some_and(|offsets| crate::group_check::commits_cover(&committed, &offsets)) {
                caught_up = true;
                break;
            }
        }
        clock.0.sleep(Duration::from_millis(200)).await;
    }
    if !caught_up && lock(history).violation().is_none() {
        let message = format!("the group did not consume and commit every committed record within {bound_ms} ms of the data converging");
        lock(history).violate(clock.now_us(), crate::group_check::checker::GROUP_PROGRESS, message);
    }
    group_stop.store(true, Ordering::SeqCst);
    for member in members {
        member.await.expect("group member task");
    }
    if lock(history).violation().is_none() {
        let (kafka, group, deadline_ms) = (kafka.clone(), group.clone(), clock.now_ms() + bound_ms);
        let finals = host.spawn(async move { crate::group_world::final_committed(kafka, group, deadline_ms, rng).await }).await.expect("final offsets task");
        let mut history = lock(history);
        let now_us = clock.now_us();
        match finals {
            Some(finals) => {
                let verdict = history.group.check_final(&committed, &finals);
                history.data_verdict(now_us, verdict);
            }
            None => {
                let message = format!("the group's committed offsets could not be read within {bound_ms} ms");
                history.violate(now_us, crate::group_check::checker::GROUP_PROGRESS, message);
            }
        }
    }
    lock(history).group.stats.clone()
}

/// The producer, consumer and group member tasks of the `[data]` workload.
type DataTasks = (Vec<tokio::task::JoinHandle<()>>, Vec<tokio::task::JoinHandle<()>>, Vec<tokio::task::JoinHandle<()>>);

/// A `[data]` workload under way.
pub struct DataRun {
    clients: DataClients,
    kafka: Option<KafkaClients>,
    /// Until `converge` takes it.
    workload: Option<tokio::task::JoinHandle<DataTasks>>,
    data_stop: Arc<AtomicBool>,
    group_stop: Arc<AtomicBool>,
}

impl DataRun {
    /// Creates the data topic, then starts the producers, consumers and
    /// group members (on the Kafka clients' host with `client = "kafka"`).
    pub fn start(world: &World, kafka_clients: Option<KafkaClients>, rng: &mut NodeRng) -> Option<DataRun> {
        let scenario = &world.scenario;
        let (history, clock) = (&world.history, world.clock.clone());
        let data_stop = Arc::new(AtomicBool::new(false));
        let group_stop = Arc::new(AtomicBool::new(false));
        let data_clients = scenario.data.clone().map(|spec| DataClients {
            spec,
            meta: Arc::clone(&world.handles),
            repl: Arc::clone(&world.repl),
            history: Arc::clone(history),
            clock: clock.clone(),
        })?;
        let clients = data_clients.clone();
        let (handles, history, clock, stop) = (Arc::clone(&world.handles), Arc::clone(history), clock.clone(), Arc::clone(&data_stop));
        let mut rng = rng.fork(4);
        let kafka = kafka_clients.clone();
        let (group, members_stop, heal_at_ms) = (scenario.group.clone(), Arc::clone(&group_stop), scenario.duration_ms);
        // Kafka clients run on their own host (the data topic is created
        // from there too, through the metadata handles, as before).
        let spawn_on = world.client_host.clone();
        let workload = async move {
            let spec = clients.spec.clone();
            clock.sleep_until_ms(spec.start_ms).await;
            let create = CreateRequest {
                topic: DATA_TOPIC.into(),
                partitions: spec.partitions,
                replication_factor: spec.replication_factor,
                configs: vec![(keel_repl::driver::MIN_INSYNC_REPLICAS_CONFIG.into(), spec.min_insync_replicas.to_string())],
                to: CreateTarget::Any,
                client_timeout_ms: spec.client_timeout_ms,
            };
            let outcome = create_topic(handles, Arc::clone(&history), clock.clone(), rng.fork(1), create).await;
            if !matches!(outcome, TopicOpOutcome::Acknowledged { .. } | TopicOpOutcome::FoundAfterRetry) {
                let message = format!("the data topic could not be created: {outcome:?}");
                lock(&history).violate(clock.now_us(), crate::data_check::checker::DATA_LIVENESS, message);
                return (Vec::new(), Vec::new(), Vec::new());
            }
            if let Some(kafka) = kafka {
                let producers: Vec<_> = (0..spec.producers).map(|k| tokio::spawn(kafka.clone().produce(k, rng.fork(100 + k)))).collect();
                let consumers: Vec<_> = (0..spec.consumers).map(|k| tokio::spawn(kafka.clone().consume(k, Arc::clone(&stop), rng.fork(10_000 + k)))).collect();
                let members: Vec<_> = match &group {
                    Some(group) => (0..group.members)
                        .map(|k| {
                            tokio::spawn(crate::group_world::member(
                                kafka.clone(),
                                group.clone(),
                                k,
                                heal_at_ms,
                                Arc::clone(&members_stop),
                                rng.fork(20_000 + k),
                            ))
                        })
                        .collect(),
                    None => Vec::new(),
                };
                return (producers, consumers, members);
            }
            let producers: Vec<_> = (0..spec.producers).map(|k| tokio::spawn(clients.clone().produce(k, rng.fork(100 + k)))).collect();
            let consumers: Vec<_> = (0..spec.consumers).map(|k| tokio::spawn(clients.clone().consume(k, Arc::clone(&stop), rng.fork(10_000 + k)))).collect();
            (producers, consumers, Vec::new())
        };
        let workload = match spawn_on {
            Some(host) => host.spawn(workload),
            None => tokio::spawn(workload),
        };
        Some(DataRun { clients: data_clients, kafka: kafka_clients, workload: Some(workload), data_stop, group_stop })
    }
}

impl Workload for DataRun {
    /// Its probe comes after the last produce, in `converge`.
    fn probe_after_heal<'a>(&'a mut self, _world: &'a mut World, _healed_ms: u64, _rng: &'a mut NodeRng) -> Phase<'a> {
        Box::pin(async {})
    }

    /// After the last produce: the acks=all probe, data convergence, the
    /// consumers and group stopped.
    fn converge<'a>(&'a mut self, world: &'a mut World, report: &'a mut RunReport, rng: &'a mut NodeRng) -> Phase<'a> {
        Box::pin(async move {
            let (clients, kafka) = (&self.clients, &self.kafka);
            let (history, bound_ms) = (Arc::clone(&world.history), world.scenario.convergence_ms_max);
            let workload = self.workload.take().expect("converged once");
            let (producers, consumers, members) = workload.await.expect("data workload task");
            for producer in producers {
                producer.await.expect("producer task");
            }
            let since_ms = world.clock.now_ms();
            let probed = lock(&history).violation().is_none()
                && match (kafka, &world.client_host) {
                    (Some(kafka), Some(host)) => {
                        let (kafka, probe_rng) = (kafka.clone(), rng.fork(5));
                        host.spawn(async move { kafka.probe(since_ms + bound_ms, probe_rng).await }).await.expect("probe task")
                    }
                    _ => clients.probe(since_ms + bound_ms, rng.fork(5)).await,
                };
            if probed {
                let checker = crate::data_check::checker::DATA_CONVERGENCE;
                await_convergence(world, since_ms, bound_ms, checker, "replicas after the last produce", || clients.not_converged()).await;
            }
            self.data_stop.store(true, Ordering::SeqCst);
            for consumer in consumers {
                consumer.await.expect("consumer task");
            }
            let scenario = Arc::clone(&world.scenario);
            if let (Some(group), Some(kafka), Some(host)) = (&scenario.group, kafka, &world.client_host) {
                let group_rng = rng.fork(6);
                let stop = &self.group_stop;
                report.group = Some(finish_group(&world.clock, &history, group, kafka, host, stop, members, scenario.duration_ms, bound_ms, group_rng).await);
            }
        })
    }

    /// Every replica's final log, unless a checker already failed the seed.
    fn report<'a>(&'a mut self, world: &'a mut World, report: &'a mut RunReport) -> Phase<'a> {
        Box::pin(async move {
            if lock(&world.history).violation().is_none() {
                report.data = Some(check_final_logs(world, &self.clients, self.kafka.is_some()).await);
            }
        })
    }
}

/// Every replica's final log against every acknowledged write (and, for
/// idempotent producers, no record twice); what the data clients did.
async fn check_final_logs(world: &World, clients: &DataClients, kafka: bool) -> DataReport {
    let (history, clock) = (&world.history, &world.clock);
    let logs = clients.final_logs().await;
    let logs = match kafka {
        // Records written through Kafka are stored wrapped: compare their Kafka values.
        true => crate::kafka_world::kafka_values(logs),
        false => Ok(logs),
    };
    let logs = logs.unwrap_or_else(|violation| {
        lock(history).data_verdict(clock.now_us(), Err(violation));
        BTreeMap::new()
    });
    let mut history = lock(history);
    let verdict = history.data.check_final(&logs);
    if history.data_verdict(clock.now_us(), verdict) && clients.spec.idempotent {
        let verdict = history.data.check_no_duplicates(&logs);
        history.data_verdict(clock.now_us(), verdict);
    }
    let kafka = kafka.then(|| {
        let stats = &history.data.kafka;
        KafkaReport {
            producer_ids: stats.producer_ids,
            batches_retried: stats.batches_retried,
            retries_after_maybe_appended: stats.retries_after_maybe_appended,
            duplicates_answered: history.data.duplicates_answered(&logs),
            batches_given_up: stats.batches_given_up,
        }
    });
    let records_in_final_log = logs.values().filter_map(|replicas| replicas.values().next()).map(|log| log.len() as u64).sum();
    let data = &history.data;
    DataReport {
        acks_all_acknowledged: data.acks_all_acknowledged,
        acks_leader_acknowledged: data.acks_leader_acknowledged,
        produce_errors: data.produce_errors.clone(),
        records_read: data.records_read,
        records_in_final_log,
        halts: world.halts,
        kafka,
    }
}
