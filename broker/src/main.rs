//! keel: the broker binary (composition root for production).
//!
//! A node runs the metadata Raft group (and its controller) and the
//! partition replication driver on the real disk and TCP (one broker
//! endpoint for both), the Kafka listener, and an admin HTTP endpoint that
//! also produces and reads and serves /healthz, /readyz and /metrics.
//! SIGTERM drains it (see `start`). `keel dev` runs a local cluster of such
//! nodes as child processes. `keel status` lists what exists and what does not.

mod admin;
mod config;
mod dev;
mod listeners;
mod metrics;
mod prometheus;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use config::{LogFormat, StartArgs};
use keel_io::{Clock, Disk, NodeRng, RealDisk};
use keel_kafka::metrics::KafkaMetrics;
use keel_kafka::server::{drain_tasks, serve_until, ServeOptions, StopSignal};
use keel_kafka::{KafkaConfig, KafkaFront};
use keel_log::LogConfig;
use keel_meta::driver::{start as start_meta, MetaDriverConfig, MetaDriverError};
use keel_meta::node::MetaNodeError;
use keel_meta::raft_node::RaftTiming;
use keel_meta::raft_store::RaftStoreError;
use keel_net::{Endpoint, NetConfig, NodeTransport};
use keel_repl::driver::ReplConfig;
use rand::RngCore;

#[derive(Parser)]
#[command(name = "keel", version, about = "Kafka-compatible broker built inside a deterministic simulator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a node: metadata Raft, replication, the Kafka listener and the admin endpoint (single node with no arguments).
    Start(StartArgs),
    /// Run a local N-node cluster (N `keel start` child processes) until Ctrl-C.
    Dev(dev::DevArgs),
    /// Print what this build contains and what is still to come.
    Status,
}

const BUILT: &[&str] = &[
    "io seams: Clock (skew/drift), Disk (real files + SimDisk fault model), node RNG",
    "segmented checksummed log with group commit, truncation and crash recovery",
    "metadata Raft group: state machine, controller (placement, lease fencing, leader moves), durable Raft store",
    "broker-to-broker transport over TCP (simulated TCP under madsim)",
    "partition replication: leader epochs, durable high watermark, acks=0/1/all, ISR shrink/expand through the metadata, divergence truncation",
    "Kafka listener: ApiVersions, Metadata (auto-create), Produce (acks 0/1/all), Fetch (long poll), ListOffsets, OffsetForLeaderEpoch, CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs, DescribeCluster; requests checked before decoding (array counts), compressed batches bounded",
    "idempotent producers: InitProducerId (ids through the metadata Raft group), duplicates answered with their offsets, sequence gaps and fenced epochs refused, state rebuilt from the log",
    "consumer groups: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups (eager rebalance, coordinator on the metadata leader, committed offsets in the metadata)",
    "admin HTTP endpoint: GET /status, GET /topics[?consistency=linearizable], POST /topics/NAME, POST /produce/TOPIC/PARTITION, GET /records/TOPIC/PARTITION, GET /replicas",
    "operations: GET /healthz, /readyz, /metrics (Prometheus); keel dev; keel start --config FILE; --log-format json; SIGTERM drains",
    "keel-sim run/sweep with scenario files, metadata, data, idempotence and consumer-group checkers, Kafka wire clients over simulated TCP; log-check and raft-store-check",
];

const NOT_BUILT: &[&str] = &[
    "transactions (a transactional id is refused), static group membership, the KIP-848 consumer protocol, cooperative rebalancing",
    "topic ids in requests (Fetch v13+, Produce v12+); produced batches are stored record by record and served uncompressed",
];

fn print_status() {
    println!("keel {}", env!("CARGO_PKG_VERSION"));
    println!("built:");
    BUILT.iter().for_each(|line| println!("  - {line}"));
    println!("not built yet:");
    NOT_BUILT.iter().for_each(|line| println!("  - {line}"));
}

/// Why `keel start` stopped: bad input (exit 2) or a failure while running (exit 1).
enum StartError {
    BadInput(String),
    Failed(anyhow::Error),
}

async fn start(args: StartArgs) -> Result<(), StartError> {
    // Listening from the start: a SIGTERM during startup drains once started.
    let signals = Signals::listen()?;
    let peers = config::parse_peers(&args.peers).map_err(StartError::BadInput)?;
    let listen_addr = peers.get(&args.node_id).cloned().ok_or_else(|| {
        StartError::BadInput(format!(
            "--node-id {} is not in --peers ({}); add it as {}=HOST:PORT or pick one of those ids",
            args.node_id,
            args.peers,
            args.node_id
        ))
    })?;
    config::check_peer_ports(&peers, args.node_id).map_err(StartError::BadInput)?;
    let (kafka_host, _) = config::parse_listen_addr(&args.kafka_addr).map_err(|e| StartError::BadInput(format!("--kafka-addr: {e}")))?;
    config::parse_listen_addr(&args.admin_addr).map_err(|e| StartError::BadInput(format!("--admin-addr: {e}")))?;
    if args.num_partitions == 0 || args.default_replication_factor == 0 {
        return Err(StartError::BadInput("--num-partitions and --default-replication-factor must be at least 1".into()));
    }
    // Every port first: a start that cannot listen leaves the data dir untouched.
    let listeners::Listeners { kafka, admin, broker, kafka_addr, admin_addr, broker_addr } =
        listeners::bind_all(&args.kafka_addr, &args.admin_addr, &listen_addr, args.broker_listener_fd).await.map_err(StartError::BadInput)?;
    let bound = listeners::Listeners::json_of(args.node_id, kafka_addr, admin_addr, broker_addr);
    let advertised_host = args.advertised_host.clone().unwrap_or(kafka_host);
    let advertised_port = args.advertised_port.unwrap_or(kafka_addr.port());
    let disk = RealDisk::open_root(&args.data_dir)
        .await
        .map_err(|e| StartError::BadInput(format!("cannot use --data-dir {}: {e}", args.data_dir)))?;
    let mut entropy = NodeRng::from_entropy();
    // The node's one broker endpoint, shared by the metadata and replication drivers.
    let NodeTransport { endpoint, raft_frames, repl_frames } =
        Endpoint::for_node(NetConfig::new(&args.cluster_id, args.node_id), broker, Clock::new(), entropy.fork(2), &peers)
            .map_err(|e| StartError::Failed(anyhow::anyhow!("cannot serve the broker listener: {e}")))?;
    let config = MetaDriverConfig {
        cluster_id: args.cluster_id.clone(),
        node_id: args.node_id,
        voters: peers,
        data_dir: "meta".into(),
        timing: RaftTiming::default(),
        proposal_timeout_ms: 5_000,
        log_config: LogConfig::default(),
        advertised_host,
        advertised_port: u32::from(advertised_port),
        rack: args.rack.clone(),
        incarnation_id: entropy.next_u64(),
        registration_lease_ms: args.registration_lease_ms,
        compact_after_entries: keel_meta::node::COMPACT_AFTER_ENTRIES,
        observer: None,
    };
    let incarnation_id = config.incarnation_id;
    let disk = Disk::Real(disk);
    // Takes the data dir's lock before anything in it is read or written.
    let (meta, meta_task) = match start_meta(disk.clone(), Clock::new(), entropy.fork(1), config, Arc::clone(&endpoint), raft_frames).await {
        Ok(started) => started,
        Err(MetaDriverError::Locked(error)) => {
            return Err(StartError::BadInput(format!(
                "refusing to start: the data dir {} is in use ({error}); stop that process or give this node its own --data-dir",
                args.data_dir
            )));
        }
        Err(MetaDriverError::Node(MetaNodeError::Store(error @ (RaftStoreError::WrongCluster { .. } | RaftStoreError::WrongVoters { .. })))) => {
            return Err(StartError::BadInput(format!("refusing to start: {error} (data dir {})", args.data_dir)));
        }
        Err(error @ MetaDriverError::Config(_)) => return Err(StartError::BadInput(error.to_string())),
        Err(error) => return Err(StartError::Failed(error.into())),
    };
    listeners::record(&disk, &bound).await.map_err(|e| StartError::Failed(anyhow::anyhow!("cannot record the bound addresses: {e}")))?;
    let repl_config = ReplConfig {
        min_insync_replicas_default: args.min_insync_replicas,
        replica_lag_time_max_ms: args.replica_lag_time_max_ms,
        ..ReplConfig::new(args.node_id, incarnation_id)
    };
    let (repl, repl_task) = keel_repl::driver::start(disk, Clock::new(), meta.clone(), endpoint, repl_frames, repl_config);
    let kafka_config = KafkaConfig {
        frame_bytes_max: args.socket_request_max_bytes,
        auto_create_topics: args.auto_create_topics,
        default_partitions: args.num_partitions,
        default_replication_factor: args.default_replication_factor,
        min_insync_replicas_default: args.min_insync_replicas,
        replica_lag_time_max_ms: args.replica_lag_time_max_ms,
        group: keel_group::Config { group_initial_rebalance_delay_ms: args.group_initial_rebalance_delay_ms, ..keel_group::Config::default() },
        ..KafkaConfig::new(args.node_id, &args.cluster_id)
    };
    tracing::info!(
        node_id = args.node_id,
        kafka_addr = %kafka_addr,
        broker_addr = %broker_addr,
        admin_addr = %admin_addr,
        data_dir = %args.data_dir,
        "keel node started"
    );
    let clock = Clock::new();
    let drain_timeout = Duration::from_millis(args.drain_timeout_ms);
    let kafka_metrics = Arc::new(KafkaMetrics::new());
    let (kafka_stop, admin_stop) = (StopSignal::new(), StopSignal::new());
    let kafka_options = ServeOptions { metrics: Arc::clone(&kafka_metrics), clock: clock.clone(), stop: kafka_stop.clone(), drain_timeout };
    let front = KafkaFront::new(meta.clone(), repl.clone(), kafka_config);
    let kafka_server = tokio::spawn(serve_once_ready(kafka, front, meta.clone(), kafka_options));
    let node = admin::Node { meta, repl, cluster_id: args.cluster_id.clone(), kafka_metrics, draining: kafka_stop.clone(), listeners: bound };
    let admin_server = tokio::spawn(admin::serve(admin, node, admin_stop.clone()));
    let running = Running { meta_task, repl_task, kafka_server, admin_server, kafka_stop, admin_stop, clock, drain_timeout };
    running.until_stopped(signals).await
}

/// How often a starting node checks whether it is ready to serve Kafka clients.
const READY_POLL_MS: u64 = 20;

/// Serves Kafka clients once the node is ready (as `/readyz` says), like
/// Kafka, whose listener takes requests only once the broker can answer
/// them. The port is bound and listening from the start, so a client's
/// connection waits in the backlog and its first request is answered by a
/// ready node. Answered earlier, librdkafka got a Metadata response with
/// no brokers and no controller, and its admin requests waited for a
/// controller until they timed out (it does not refresh that soon).
async fn serve_once_ready(listener: tokio::net::TcpListener, front: KafkaFront, meta: keel_meta::driver::MetaHandle, options: ServeOptions) -> keel_kafka::server::Drained {
    loop {
        if admin::not_ready_reasons(&meta.status(), false).is_empty() {
            break;
        }
        tokio::select! {
            biased;
            _ = options.stop.stopped() => return keel_kafka::server::Drained { tasks_running: 0, tasks_aborted: 0 },
            _ = options.clock.sleep(Duration::from_millis(READY_POLL_MS)) => {}
        }
    }
    tracing::info!("ready: serving Kafka clients");
    serve_until(listener, front, options).await
}

/// SIGTERM and SIGINT (Ctrl-C), the two ways to stop a node.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn listen() -> Result<Signals, StartError> {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind| signal(kind).map_err(|e| StartError::Failed(anyhow::anyhow!("cannot listen for signals: {e}")));
        Ok(Signals { terminate: listen(SignalKind::terminate())?, interrupt: listen(SignalKind::interrupt())? })
    }
}

/// How long the replication and metadata loops get to stop once nothing
/// feeds them any more (their last turn flushes; see `Running::drain`).
const LOOP_STOP_TIMEOUT_MS: u64 = 10_000;

/// A started node's tasks, owned by `start` until the node stops.
struct Running {
    meta_task: tokio::task::JoinHandle<Result<(), MetaDriverError>>,
    repl_task: tokio::task::JoinHandle<Result<(), keel_repl::driver::ReplDriverError>>,
    kafka_server: tokio::task::JoinHandle<keel_kafka::server::Drained>,
    admin_server: tokio::task::JoinHandle<Vec<tokio::task::JoinHandle<()>>>,
    kafka_stop: StopSignal,
    admin_stop: StopSignal,
    clock: Clock,
    drain_timeout: Duration,
}

impl Running {
    /// Runs until a loop fails (exit 1) or SIGTERM / Ctrl-C (drain, exit 0).
    /// A second signal while draining stops at once (exit 1).
    async fn until_stopped(mut self, signals: Signals) -> Result<(), StartError> {
        let Signals { mut terminate, mut interrupt } = signals;
        let signal_name = tokio::select! {
            biased;
            result = &mut self.meta_task => return Err(loop_ended("metadata", result)),
            // A disk error on a partition log stops the broker (its unsynced
            // records may be gone); the restarted broker recovers the log and
            // re-registers, which moves its partitions to a new leader epoch.
            result = &mut self.repl_task => return Err(loop_ended("replication", result)),
            _ = interrupt.recv() => "interrupt",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = signal_name, drain_timeout_ms = self.drain_timeout.as_millis() as u64, "stopping: draining connections, then flushing");
        tokio::select! {
            biased;
            _ = terminate.recv() => Err(StartError::Failed(anyhow::anyhow!("second SIGTERM while draining: stopped without waiting for the drain"))),
            _ = interrupt.recv() => Err(StartError::Failed(anyhow::anyhow!("second interrupt while draining: stopped without waiting for the drain"))),
            result = self.drain() => result,
        }
    }

    /// Stop accepting Kafka connections, let requests in flight finish
    /// (bounded by the drain timeout), then the admin endpoint's; once every
    /// connection is gone nothing holds a driver handle, so the replication
    /// loop returns after a turn (each turn ends with its logs flushed:
    /// group commit, and followers flush what they fetch) and the metadata
    /// loop after it (its Raft store is durable at every step).
    async fn drain(&mut self) -> Result<(), StartError> {
        let started = self.clock.now();
        self.kafka_stop.stop();
        match (&mut self.kafka_server).await {
            Ok(drained) if drained.tasks_aborted > 0 => {
                tracing::warn!(aborted = drained.tasks_aborted, "Kafka requests still in flight at the drain timeout were cut off")
            }
            Ok(_) => {}
            Err(join_error) => return Err(StartError::Failed(anyhow::anyhow!("Kafka listener panicked: {join_error}"))),
        }
        self.admin_stop.stop();
        let admin_connections = (&mut self.admin_server).await.map_err(|e| StartError::Failed(anyhow::anyhow!("admin endpoint panicked: {e}")))?;
        let remaining = self.drain_timeout.saturating_sub(self.clock.now().saturating_since(started));
        drain_tasks(admin_connections, remaining).await;
        let loop_timeout = Duration::from_millis(LOOP_STOP_TIMEOUT_MS);
        match tokio::time::timeout(loop_timeout, &mut self.repl_task).await {
            Ok(Ok(Ok(()))) => tracing::info!("replication loop stopped; every partition log is flushed"),
            Ok(result) => return Err(loop_ended("replication", result)),
            Err(_) => {
                return Err(StartError::Failed(anyhow::anyhow!(
                    "the replication loop did not stop within {LOOP_STOP_TIMEOUT_MS} ms of the drain (a task still holds its handle); records appended since its last flush may be lost"
                )))
            }
        }
        match tokio::time::timeout(loop_timeout, &mut self.meta_task).await {
            Ok(Ok(Ok(()))) => tracing::info!("metadata loop stopped"),
            Ok(result) => return Err(loop_ended("metadata", result)),
            Err(_) => {
                return Err(StartError::Failed(anyhow::anyhow!(
                    "the metadata loop did not stop within {LOOP_STOP_TIMEOUT_MS} ms of the drain (a task still holds its handle); every acknowledged metadata change is durable regardless"
                )))
            }
        }
        tracing::info!(drain_ms = self.clock.now().saturating_since(started).as_millis() as u64, "stopped cleanly");
        Ok(())
    }
}

/// A driver loop that returned: Ok while running means it was stopped from
/// outside, which only the drain does.
fn loop_ended<E>(name: &str, result: Result<Result<(), E>, tokio::task::JoinError>) -> StartError
where
    E: std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(Ok(())) => StartError::Failed(anyhow::anyhow!("the {name} loop stopped unexpectedly")),
        Ok(Err(error)) => StartError::Failed(anyhow::Error::new(error).context(format!("the {name} loop failed"))),
        Err(join_error) => StartError::Failed(anyhow::anyhow!("the {name} loop panicked: {join_error}")),
    }
}

/// Logs to stderr in `format`; RUST_LOG sets the filter (default info).
fn init_logging(format: LogFormat) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|error| {
            eprintln!("keel: RUST_LOG={directives:?} is not a valid filter ({error}); logging at info (example: RUST_LOG=info,keel_repl=debug)");
            tracing_subscriber::EnvFilter::new("info")
        }),
        _ => tracing_subscriber::EnvFilter::new("info"),
    };
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => logs.json().init(),
    }
}

/// The effective `keel start` settings: flags and env over the `--config`
/// file over defaults. Bad input is a message for exit status 2.
async fn effective_start_args(args: StartArgs, matches: &clap::ArgMatches) -> Result<StartArgs, String> {
    let Some(path) = args.config.clone() else { return Ok(args) };
    let text = config::read_config_file(&path)?;
    let file = config::parse_config_file(&path, &text)?;
    Ok(config::apply_file(args, matches, file))
}

fn main() -> ExitCode {
    // clap exits with status 2 (and says why) on bad flags.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    match cli.command {
        Command::Status => {
            print_status();
            ExitCode::SUCCESS
        }
        Command::Dev(args) => {
            init_logging(args.log_format);
            dev::run(args)
        }
        Command::Start(args) => {
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("keel start: cannot start the async runtime: {error}");
                    return ExitCode::from(1);
                }
            };
            let start_matches = matches.subcommand_matches("start").expect("the start subcommand was parsed");
            let args = match runtime.block_on(effective_start_args(args, start_matches)) {
                Ok(args) => args,
                Err(message) => {
                    eprintln!("keel start: {message}");
                    return ExitCode::from(2);
                }
            };
            if args.print_config {
                print!("{}", config::effective_toml(&args));
                return ExitCode::SUCCESS;
            }
            init_logging(args.log_format);
            match runtime.block_on(start(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(StartError::BadInput(message)) => {
                    eprintln!("keel start: {message}");
                    ExitCode::from(2)
                }
                Err(StartError::Failed(error)) => {
                    eprintln!("keel start: {error:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
