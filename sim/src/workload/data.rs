//! The data workload: producers and consumers of the data topic, over the
//! internal path or the Kafka wire from the clients' host.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::oneshot;

use keel_io::NodeRng;

use crate::data_world::{DataClients, DATA_TOPIC};
use crate::kafka_world::KafkaClients;
use crate::report::{DataReport, KafkaReport, RunReport};
use crate::scenario::CreateTarget;
use crate::shared::lock;
use crate::workload::topics::*;
use crate::workload::{Phase, Workload};
use crate::world::*;

/// The producer and consumer tasks of the `[data]` workload.
type DataTasks = (Vec<tokio::task::JoinHandle<()>>, Vec<tokio::task::JoinHandle<()>>);

/// A `[data]` workload under way.
pub struct DataRun {
    clients: DataClients,
    kafka: Option<KafkaClients>,
    /// Until `converge` takes it.
    workload: Option<tokio::task::JoinHandle<DataTasks>>,
    data_stop: Arc<AtomicBool>,
    /// Told once the data topic exists (dropped if it could not be created),
    /// until a workload over the topic (the consumer group) takes it.
    topic_created: Option<oneshot::Receiver<()>>,
}

impl DataRun {
    /// Creates the data topic, then starts the producers and consumers (on
    /// the Kafka clients' host with `client = "kafka"`).
    pub fn start(world: &World, kafka_clients: Option<KafkaClients>, rng: &mut NodeRng) -> Option<DataRun> {
        let scenario = &world.scenario;
        let (history, clock) = (&world.history, world.clock.clone());
        let data_stop = Arc::new(AtomicBool::new(false));
        let (created_tx, topic_created) = oneshot::channel();
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
            if !outcome.done() {
                let message = format!("the data topic could not be created: {outcome:?}");
                lock(&history).violate(clock.now_us(), crate::data_check::checker::DATA_LIVENESS, message);
                return (Vec::new(), Vec::new());
            }
            // Nobody may be listening (no group): nothing to tell then.
            let _ = created_tx.send(());
            if let Some(kafka) = kafka {
                let producers: Vec<_> = (0..spec.producers).map(|k| tokio::spawn(kafka.clone().produce(k, rng.fork(100 + k)))).collect();
                let consumers: Vec<_> = (0..spec.consumers).map(|k| tokio::spawn(kafka.clone().consume(k, Arc::clone(&stop), rng.fork(10_000 + k)))).collect();
                return (producers, consumers);
            }
            let producers: Vec<_> = (0..spec.producers).map(|k| tokio::spawn(clients.clone().produce(k, rng.fork(100 + k)))).collect();
            let consumers: Vec<_> = (0..spec.consumers).map(|k| tokio::spawn(clients.clone().consume(k, Arc::clone(&stop), rng.fork(10_000 + k)))).collect();
            (producers, consumers)
        };
        let workload = match spawn_on {
            Some(host) => host.spawn(workload),
            None => tokio::spawn(workload),
        };
        Some(DataRun { clients: data_clients, kafka: kafka_clients, workload: Some(workload), data_stop, topic_created: Some(topic_created) })
    }

    /// The Kafka clients (with `client = "kafka"`), and the signal that the
    /// data topic exists, for a workload over the same topic; once.
    pub fn for_group(&mut self) -> Option<(KafkaClients, oneshot::Receiver<()>)> {
        let kafka = self.kafka.clone()?;
        Some((kafka, self.topic_created.take().expect("one workload over the data topic")))
    }
}

impl Workload for DataRun {
    /// After the last produce: the acks=all probe (after the producers, so
    /// here rather than in `probe_after_heal`), data convergence, the
    /// consumers stopped.
    fn converge<'a>(&'a mut self, world: &'a mut World, _report: &'a mut RunReport, rng: &'a mut NodeRng) -> Phase<'a> {
        Box::pin(async move {
            let (clients, kafka) = (&self.clients, &self.kafka);
            let (history, bound_ms) = (Arc::clone(&world.history), world.scenario.convergence_ms_max);
            let workload = self.workload.take().expect("converged once");
            let (producers, consumers) = workload.await.expect("data workload task");
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
        produce_latency: data.produce_latency.clone(),
        kafka,
    }
}
