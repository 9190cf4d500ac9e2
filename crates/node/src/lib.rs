//! keel-node: the one composition root of a broker node. `keel start`, the
//! simulator (`keel-sim`), the fuzz harness and the tests boot every node
//! through [`Node::start`], so the simulator's verdict is a verdict on the
//! node that operators deploy.
//!
//! A node is the metadata Raft driver (with its controller), the partition
//! replication driver, the Kafka listener and the admin HTTP endpoint, over
//! one clock, one disk and one seeded RNG (the [`Seams`] the world hands
//! in: the real ones in `keel`, simulated ones in `keel-sim`). Any of its
//! tasks that ends on its own stops the node with its reason
//! ([`Node::run_until`]); a graceful stop drains it ([`Node::drain`]), the
//! path SIGTERM takes.

pub mod admin;
pub mod config;
mod metrics;
mod prometheus;

use core::net::SocketAddr;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use keel_io::{Clock, Disk, DiskError, DiskErrorKind, NodeRng};
use keel_kafka::metrics::KafkaMetrics;
use keel_kafka::server::{drain_tasks, serve_until, Drained, ServeOptions, StopSignal};
use keel_kafka::{KafkaConfig, KafkaFront};
use keel_log::LogConfig;
use keel_meta::driver::{MetaDriverConfig, MetaDriverError, MetaHandle, MetaObserver};
use keel_meta::node::MetaNodeError;
use keel_meta::raft_store::RaftStoreError;
use keel_net::{Endpoint, NetConfig, NodeTransport};
use keel_repl::driver::{ReplConfig, ReplDriverError, ReplHandle, ReplObserver};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use admin::not_ready_reasons;
pub use config::{ConfigError, NodeConfig, NodeIdentity};

/// Where the metadata Raft store lives on the node's disk.
const META_DIR: &str = "meta";
/// The file in the data dir that records the bound addresses.
pub const LISTENERS_FILE: &str = "listeners.json";
/// How often a starting node checks whether it is ready to serve Kafka clients.
const READY_POLL_MS: u64 = 20;
/// How long the replication and metadata loops get to stop once nothing
/// feeds them any more (their last turn flushes; see `Node::drain`).
const LOOP_STOP_TIMEOUT_MS: u64 = 10_000;

/// What the world hands a node: its clock (with whatever skew and drift the
/// world gives it), its disk, its RNG, its incarnation id, and observers a
/// simulator may attach. One clock instance reaches every component.
pub struct Seams {
    pub disk: Disk,
    pub clock: Clock,
    pub rng: NodeRng,
    /// Differs on every start of the node, so a restarted broker registers
    /// anew and its partitions move to new leader epochs.
    pub incarnation_id: u64,
    pub meta_observer: Option<MetaObserver>,
    pub repl_observer: Option<ReplObserver>,
}

impl Seams {
    /// The seams of one start: the incarnation id is the RNG's first draw
    /// (fresh entropy in `keel`, the seed in the simulator: a new value on
    /// every start in both).
    pub fn new(disk: Disk, clock: Clock, mut rng: NodeRng) -> Seams {
        let incarnation_id = rand::RngCore::next_u64(&mut rng);
        Seams { disk, clock, rng, incarnation_id, meta_observer: None, repl_observer: None }
    }
}

/// The three listeners of a node, bound before the node touches its disk (a
/// start that cannot listen must not change a data dir).
pub struct Listeners {
    pub kafka: TcpListener,
    pub admin: TcpListener,
    pub broker: TcpListener,
}

/// The addresses the listeners were bound to (port 0 binds any free port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundAddrs {
    pub kafka: SocketAddr,
    pub admin: SocketAddr,
    pub broker: SocketAddr,
}

impl Listeners {
    /// Binds all three; the error names the listener that could not bind.
    pub async fn bind(kafka_addr: &str, admin_addr: &str, broker_addr: &str) -> Result<Listeners, BindError> {
        let bind = |what: &'static str, addr: &str| {
            let addr = addr.to_string();
            async move { TcpListener::bind(&addr).await.map_err(|error| BindError { what, addr, error: error.to_string() }) }
        };
        let broker = bind("broker-to-broker", broker_addr).await?;
        let kafka = bind("Kafka", kafka_addr).await?;
        let admin = bind("admin", admin_addr).await?;
        Ok(Listeners { kafka, admin, broker })
    }

    pub fn addrs(&self) -> Result<BoundAddrs, BindError> {
        let addr =
            |what: &'static str, listener: &TcpListener| listener.local_addr().map_err(|error| BindError { what, addr: "?".into(), error: error.to_string() });
        Ok(BoundAddrs { kafka: addr("Kafka", &self.kafka)?, admin: addr("admin", &self.admin)?, broker: addr("broker-to-broker", &self.broker)? })
    }
}

/// A listener that could not bind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot listen for {what} connections on {addr}: {error}")]
pub struct BindError {
    pub what: &'static str,
    pub addr: String,
    pub error: String,
}

/// Why a node did not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid setting {0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Identity(String),
    /// Another node holds the data dir.
    #[error("the data dir is in use ({0}); stop that process or give this node its own data dir")]
    DataDirInUse(DiskError),
    /// The data dir belongs to another cluster or voter set.
    #[error("{0}")]
    ForeignStore(RaftStoreError),
    #[error("{0}")]
    Bind(#[from] BindError),
    #[error("cannot record the bound addresses in {LISTENERS_FILE}: {0}")]
    Record(DiskError),
    #[error("the metadata node could not start: {0}")]
    MetaStart(MetaDriverError),
    /// A component ended while the node was serving.
    #[error("the {component} stopped unexpectedly")]
    Stopped { component: &'static str },
    #[error("the {component} failed: {reason}")]
    Failed { component: &'static str, reason: String },
    #[error("the {component} panicked: {reason}")]
    Panicked { component: &'static str, reason: String },
    #[error("the {component} did not stop within {timeout_ms} ms of the drain; {consequence}")]
    DrainTimeout { component: &'static str, timeout_ms: u64, consequence: &'static str },
}

impl NodeError {
    /// The operator's input cannot work (exit status 2 in `keel`), as
    /// opposed to a failure while running.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, NodeError::Config(_) | NodeError::Identity(_) | NodeError::DataDirInUse(_) | NodeError::ForeignStore(_) | NodeError::Bind(_))
    }

    /// A component panicked (never legitimate, even after injected faults).
    pub fn is_panic(&self) -> bool {
        matches!(self, NodeError::Panicked { .. })
    }
}

/// How a graceful stop went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Kafka requests still in flight at the drain timeout, cut off.
    pub kafka_requests_aborted: usize,
    pub drain_ms: u64,
}

/// A running broker node and its tasks.
pub struct Node {
    node_id: u64,
    meta: MetaHandle,
    repl: ReplHandle,
    front: KafkaFront,
    clock: Clock,
    drain_timeout: Duration,
    meta_task: JoinHandle<Result<(), MetaDriverError>>,
    repl_task: JoinHandle<Result<(), ReplDriverError>>,
    kafka_server: JoinHandle<Drained>,
    admin_server: JoinHandle<Vec<JoinHandle<()>>>,
    /// Fired first on a graceful stop; also what `/readyz` reads as draining.
    kafka_stop: StopSignal,
    admin_stop: StopSignal,
    bound: BoundAddrs,
}

impl Node {
    /// Starts a node: the metadata driver first (it takes the disk's lock
    /// before anything on the disk is read or written), then replication,
    /// the admin endpoint, and the Kafka listener, which answers once the
    /// node is ready (clients' connections wait in the backlog until then).
    pub async fn start(identity: NodeIdentity, config: &NodeConfig, seams: Seams, listeners: Listeners, process_id: Option<u32>) -> Result<Node, NodeError> {
        config.validate()?;
        if !identity.voters.contains_key(&identity.node_id) {
            return Err(NodeError::Identity(format!(
                "node id {} is not among the voters {:?}; add it or pick one of those ids",
                identity.node_id,
                identity.voters.keys().collect::<Vec<_>>()
            )));
        }
        let bound = listeners.addrs()?;
        let Seams { disk, clock, mut rng, incarnation_id, meta_observer, repl_observer } = seams;
        // The node's one broker endpoint: it sorts inbound frames by kind
        // into the metadata driver's queue and the replication driver's.
        let net_config = NetConfig::new(&identity.cluster_id, identity.node_id);
        let NodeTransport { endpoint, raft_frames, repl_frames } =
            Endpoint::for_node(net_config, listeners.broker, clock.clone(), rng.fork(2), &identity.voters).map_err(|error| BindError {
                what: "broker-to-broker",
                addr: bound.broker.to_string(),
                error: error.to_string(),
            })?;
        let meta_config = meta_driver_config(&identity, config, incarnation_id, meta_observer);
        let started = keel_meta::driver::start(disk.clone(), clock.clone(), rng.fork(1), meta_config, Arc::clone(&endpoint), raft_frames).await;
        let (meta, meta_task) = started.map_err(|error| match error {
            MetaDriverError::Locked(error) => NodeError::DataDirInUse(error),
            MetaDriverError::Node(MetaNodeError::Store(error @ (RaftStoreError::WrongCluster { .. } | RaftStoreError::WrongVoters { .. }))) => {
                NodeError::ForeignStore(error)
            }
            MetaDriverError::Config(message) => NodeError::Identity(message),
            error => NodeError::MetaStart(error),
        })?;
        let listeners_json = listeners_json(identity.node_id, &bound, process_id);
        record_listeners(&disk, &listeners_json).await.map_err(NodeError::Record)?;
        let repl_config = repl_config(&identity, config, incarnation_id, repl_observer);
        let (repl, repl_task) = keel_repl::driver::start(disk, clock.clone(), meta.clone(), endpoint, repl_frames, repl_config);
        let kafka_metrics = Arc::new(KafkaMetrics::new());
        let (kafka_stop, admin_stop) = (StopSignal::new(), StopSignal::new());
        let drain_timeout = Duration::from_millis(config.drain_timeout_ms);
        let front = KafkaFront::new(meta.clone(), repl.clone(), kafka_config(&identity, config), clock.clone());
        let admin_state = admin::AdminState {
            meta: meta.clone(),
            repl: repl.clone(),
            cluster_id: identity.cluster_id.clone(),
            kafka_metrics: Arc::clone(&kafka_metrics),
            draining: kafka_stop.clone(),
            listeners: listeners_json,
            create_topic_timeout_ms: config.create_topic_timeout_ms,
        };
        let admin_server = tokio::spawn(admin::serve(listeners.admin, admin_state, admin_stop.clone()));
        let options = ServeOptions { metrics: kafka_metrics, clock: clock.clone(), stop: kafka_stop.clone(), drain_timeout };
        let kafka_server = tokio::spawn(serve_once_ready(listeners.kafka, front.clone(), meta.clone(), options));
        tracing::info!(node_id = identity.node_id, incarnation_id, kafka_addr = %bound.kafka, broker_addr = %bound.broker, admin_addr = %bound.admin, "keel node started");
        Ok(Node {
            node_id: identity.node_id,
            meta,
            repl,
            front,
            clock,
            drain_timeout,
            meta_task,
            repl_task,
            kafka_server,
            admin_server,
            kafka_stop,
            admin_stop,
            bound,
        })
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    pub fn meta(&self) -> &MetaHandle {
        &self.meta
    }

    pub fn repl(&self) -> &ReplHandle {
        &self.repl
    }

    /// The Kafka request handler the listener serves (the fuzz harness calls it directly).
    pub fn kafka_front(&self) -> &KafkaFront {
        &self.front
    }

    pub fn bound(&self) -> BoundAddrs {
        self.bound
    }

    /// Why the node is not ready (empty when it is): what `/readyz` answers.
    pub fn not_ready_reasons(&self) -> Vec<String> {
        not_ready_reasons(&self.meta.status(), self.kafka_stop.is_stopped())
    }

    /// Serves until `stop` resolves (then hands the node back to be
    /// drained) or one of its tasks ends on its own, which stops the node
    /// with that task's reason: a disk error on a partition log stops the
    /// broker (its unsynced records may be gone), and the restarted broker
    /// recovers the log and re-registers, moving its partitions to a new
    /// leader epoch.
    pub async fn run_until(mut self, stop: impl Future<Output = ()>) -> Result<Node, NodeError> {
        tokio::select! {
            biased;
            result = &mut self.meta_task => Err(loop_ended("metadata loop", result)),
            result = &mut self.repl_task => Err(loop_ended("replication loop", result)),
            result = &mut self.kafka_server => Err(server_ended("Kafka listener", result.map(|_| ()))),
            result = &mut self.admin_server => Err(server_ended("admin endpoint", result.map(|_| ()))),
            _ = stop => Ok(self),
        }
    }

    /// Stops every task at once, as the process's death would (no drain,
    /// nothing flushed); returns once they are gone, and with them the
    /// disk lock the node held.
    pub async fn abort(self) {
        let Node { meta_task, repl_task, kafka_server, admin_server, .. } = self;
        meta_task.abort();
        repl_task.abort();
        kafka_server.abort();
        admin_server.abort();
        let _ = (meta_task.await, repl_task.await, kafka_server.await, admin_server.await);
    }

    /// The graceful stop: stop accepting Kafka connections (`/readyz` says
    /// draining), let requests in flight finish (bounded by the drain
    /// timeout), then the admin endpoint's; once every connection is gone
    /// nothing holds a driver handle, so the replication loop returns after
    /// a turn (each turn ends with its logs flushed: group commit, and
    /// followers flush what they fetch) and the metadata loop after it (its
    /// Raft store is durable at every step).
    pub async fn drain(self) -> Result<DrainReport, NodeError> {
        let Node { clock, drain_timeout, meta_task, repl_task, kafka_server, admin_server, kafka_stop, admin_stop, meta, repl, front, .. } = self;
        let started = clock.now();
        tracing::info!(drain_timeout_ms = drain_timeout.as_millis() as u64, "stopping: draining connections, then flushing");
        kafka_stop.stop();
        let drained = kafka_server.await.map_err(|error| NodeError::Panicked { component: "Kafka listener", reason: error.to_string() })?;
        if drained.tasks_aborted > 0 {
            tracing::warn!(aborted = drained.tasks_aborted, "Kafka requests still in flight at the drain timeout were cut off");
        }
        admin_stop.stop();
        let admin_connections = admin_server.await.map_err(|error| NodeError::Panicked { component: "admin endpoint", reason: error.to_string() })?;
        let remaining = drain_timeout.saturating_sub(clock.now().saturating_since(started));
        drain_tasks(admin_connections, remaining).await;
        // The node's own handles go last: the loops stop once no handle is left.
        drop((meta, repl, front));
        let consequence = "a task still holds its handle; records appended since its last flush may be lost";
        stop_loop(repl_task, "replication loop", consequence).await?;
        tracing::info!("replication loop stopped; every partition log is flushed");
        let consequence = "a task still holds its handle; every acknowledged metadata change is durable regardless";
        stop_loop(meta_task, "metadata loop", consequence).await?;
        tracing::info!("metadata loop stopped");
        let drain_ms = clock.now().saturating_since(started).as_millis() as u64;
        tracing::info!(drain_ms, "stopped cleanly");
        Ok(DrainReport { kafka_requests_aborted: drained.tasks_aborted, drain_ms })
    }
}

/// The metadata driver's settings.
fn meta_driver_config(identity: &NodeIdentity, config: &NodeConfig, incarnation_id: u64, observer: Option<MetaObserver>) -> MetaDriverConfig {
    MetaDriverConfig {
        cluster_id: identity.cluster_id.clone(),
        node_id: identity.node_id,
        voters: identity.voters.clone(),
        data_dir: META_DIR.into(),
        timing: config.raft_timing(),
        proposal_timeout_ms: config.proposal_timeout_ms,
        log_config: LogConfig { segment_bytes_max: config.metadata_segment_bytes, ..LogConfig::default() },
        advertised_host: identity.advertised_host.clone(),
        advertised_port: u32::from(identity.advertised_port),
        rack: identity.rack.clone(),
        incarnation_id,
        registration_lease_ms: config.registration_lease_ms,
        compact_after_entries: config.metadata_compact_after_entries,
        observer,
    }
}

/// The replication driver's settings.
fn repl_config(identity: &NodeIdentity, config: &NodeConfig, incarnation_id: u64, observer: Option<ReplObserver>) -> ReplConfig {
    let defaults = ReplConfig::new(identity.node_id, incarnation_id);
    ReplConfig {
        log_config: LogConfig { segment_bytes_max: config.log_segment_bytes, ..defaults.log_config.clone() },
        min_insync_replicas_default: config.min_insync_replicas,
        replica_lag_time_max_ms: config.replica_lag_time_max_ms,
        fetch_wait_ms_max: config.replica_fetch_wait_max_ms,
        fetch_bytes_max: config.replica_fetch_max_bytes,
        produce_queue_len: config.produce_queue_len,
        observer,
        ..defaults
    }
}

/// The Kafka front's settings.
fn kafka_config(identity: &NodeIdentity, config: &NodeConfig) -> KafkaConfig {
    KafkaConfig {
        frame_bytes_max: config.socket_request_max_bytes,
        auto_create_topics: config.auto_create_topics,
        default_partitions: config.num_partitions,
        default_replication_factor: config.default_replication_factor,
        min_insync_replicas_default: config.min_insync_replicas,
        replica_lag_time_max_ms: config.replica_lag_time_max_ms,
        fetch_poll_interval_ms: config.fetch_poll_interval_ms,
        fetch_wait_ms_max: config.fetch_wait_max_ms,
        create_budget_ms: config.create_topic_timeout_ms,
        group: keel_group::Config {
            group_min_session_timeout_ms: config.group_min_session_timeout_ms,
            group_max_session_timeout_ms: config.group_max_session_timeout_ms,
            group_initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
            ..keel_group::Config::default()
        },
        ..KafkaConfig::new(identity.node_id, &identity.cluster_id)
    }
}

/// `{"pid":..,"node_id":..,"kafka":"HOST:PORT","admin":..,"broker":..}`
/// (the pid only for a real process).
pub fn listeners_json(node_id: u64, bound: &BoundAddrs, process_id: Option<u32>) -> String {
    let pid = process_id.map_or(String::new(), |pid| format!("\"pid\":{pid},"));
    format!("{{{pid}\"node_id\":{node_id},\"kafka\":\"{}\",\"admin\":\"{}\",\"broker\":\"{}\"}}", bound.kafka, bound.admin, bound.broker)
}

/// Writes `json` to `listeners.json` in the data dir (temp file, fsync,
/// rename, fsync of the dir), so a reader sees the old file or the new one.
async fn record_listeners(disk: &Disk, json: &str) -> Result<(), DiskError> {
    let temp = format!("{LISTENERS_FILE}.tmp");
    match disk.remove(&temp).await {
        Ok(()) | Err(DiskError { kind: DiskErrorKind::NotFound, .. }) => {}
        Err(error) => return Err(error),
    }
    let file = disk.create(&temp).await?;
    file.write_at(0, format!("{json}\n").as_bytes()).await?;
    file.sync().await?;
    disk.rename(&temp, LISTENERS_FILE).await?;
    disk.sync_dir("").await
}

/// Serves Kafka clients once the node is ready (as `/readyz` says), like
/// Kafka, whose listener takes requests only once the broker can answer
/// them. The port is bound and listening from the start, so a client's
/// connection waits in the backlog and its first request is answered by a
/// ready node. Answered earlier, librdkafka got a Metadata response with
/// no brokers and no controller, and its admin requests waited for a
/// controller until they timed out (it does not refresh that soon).
async fn serve_once_ready(listener: TcpListener, front: KafkaFront, meta: MetaHandle, options: ServeOptions) -> Drained {
    loop {
        if not_ready_reasons(&meta.status(), false).is_empty() {
            break;
        }
        tokio::select! {
            biased;
            _ = options.stop.stopped() => return Drained { tasks_running: 0, tasks_aborted: 0 },
            _ = options.clock.sleep(Duration::from_millis(READY_POLL_MS)) => {}
        }
    }
    drop(meta);
    tracing::info!("ready: serving Kafka clients");
    serve_until(listener, front, options).await
}

/// Waits for a driver loop that nothing feeds any more to return, at most
/// `LOOP_STOP_TIMEOUT_MS`; `consequence` says what a loop that does not means.
async fn stop_loop<E: std::fmt::Display>(task: JoinHandle<Result<(), E>>, component: &'static str, consequence: &'static str) -> Result<(), NodeError> {
    match tokio::time::timeout(Duration::from_millis(LOOP_STOP_TIMEOUT_MS), task).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(result) => Err(loop_ended(component, result)),
        Err(_) => Err(NodeError::DrainTimeout { component, timeout_ms: LOOP_STOP_TIMEOUT_MS, consequence }),
    }
}

/// A driver loop that returned while the node was serving: Ok means it was
/// stopped from outside, which only the drain does.
fn loop_ended<E: std::fmt::Display>(component: &'static str, result: Result<Result<(), E>, tokio::task::JoinError>) -> NodeError {
    match result {
        Ok(Ok(())) => NodeError::Stopped { component },
        Ok(Err(error)) => NodeError::Failed { component, reason: error.to_string() },
        Err(join_error) => NodeError::Panicked { component, reason: join_error.to_string() },
    }
}

/// A server task that returned while the node was serving (it returns only
/// once stopped).
fn server_ended(component: &'static str, result: Result<(), tokio::task::JoinError>) -> NodeError {
    match result {
        Ok(()) => NodeError::Stopped { component },
        Err(join_error) => NodeError::Panicked { component, reason: join_error.to_string() },
    }
}
