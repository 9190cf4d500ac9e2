//! keel: the broker binary (composition root for production).
//!
//! A node runs the metadata Raft group (and its controller) and the
//! partition replication driver on the real disk and TCP (one broker
//! endpoint for both), the Kafka listener, and an admin HTTP endpoint that
//! also produces and reads. `keel status` lists what exists and what does not.

mod admin;
mod config;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use keel_io::{Clock, Disk, NodeRng, RealDisk};
use keel_kafka::{KafkaConfig, KafkaFront};
use keel_log::LogConfig;
use keel_meta::driver::{start as start_meta, MetaDriverConfig, MetaDriverError};
use keel_meta::node::MetaNodeError;
use keel_meta::raft_node::RaftTiming;
use keel_meta::raft_store::RaftStoreError;
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
    /// Start a node: the metadata Raft group and the admin endpoint (single node with no arguments).
    Start(StartArgs),
    /// Print what this build contains and what is still to come.
    Status,
}

#[derive(Args, Debug)]
struct StartArgs {
    /// This node's id; must appear in --peers.
    #[arg(long, env = "KEEL_NODE_ID", default_value_t = 1)]
    node_id: u64,
    /// Every metadata voter as ID=HOST:PORT, this node included.
    #[arg(long, env = "KEEL_PEERS", default_value = "1=127.0.0.1:19091")]
    peers: String,
    /// Where this node keeps its data.
    #[arg(long, env = "KEEL_DATA_DIR", default_value = "keel-data")]
    data_dir: String,
    /// Names the cluster; a data dir or peer of another cluster is refused.
    #[arg(long, env = "KEEL_CLUSTER_ID", default_value = "keel-local")]
    cluster_id: String,
    /// The admin HTTP endpoint (GET /status, GET /topics, POST /topics/NAME).
    #[arg(long, env = "KEEL_ADMIN_ADDR", default_value = "127.0.0.1:8080")]
    admin_addr: String,
    /// The Kafka listener (what clients bootstrap from).
    #[arg(long, env = "KEEL_KAFKA_ADDR", default_value = "127.0.0.1:9092")]
    kafka_addr: String,
    /// Host this broker registers for clients (default: the --kafka-addr host).
    #[arg(long, env = "KEEL_ADVERTISED_HOST")]
    advertised_host: Option<String>,
    /// Port this broker registers for clients (default: the --kafka-addr port).
    #[arg(long, env = "KEEL_ADVERTISED_PORT")]
    advertised_port: Option<u16>,
    /// Kafka's auto.create.topics.enable: a Metadata request for an unknown topic creates it.
    #[arg(long, env = "KEEL_AUTO_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    auto_create_topics: bool,
    /// Kafka's num.partitions: partitions of an auto-created topic.
    #[arg(long, env = "KEEL_NUM_PARTITIONS", default_value_t = 1)]
    num_partitions: u32,
    /// Kafka's default.replication.factor: replicas of an auto-created topic.
    #[arg(long, env = "KEEL_DEFAULT_REPLICATION_FACTOR", default_value_t = 1)]
    default_replication_factor: u32,
    /// Kafka's socket.request.max.bytes: larger request frames are refused.
    #[arg(long, env = "KEEL_SOCKET_REQUEST_MAX_BYTES", default_value_t = keel_kafka::codec::FRAME_BYTES_MAX_DEFAULT)]
    socket_request_max_bytes: usize,
    /// Rack, for rack-aware replica placement.
    #[arg(long, env = "KEEL_RACK")]
    rack: Option<String>,
    /// Milliseconds of silence after which the controller fences a broker.
    #[arg(long, env = "KEEL_REGISTRATION_LEASE_MS", default_value_t = 3_000)]
    registration_lease_ms: u64,
    /// ISR size acks=all needs for topics that do not set min.insync.replicas.
    #[arg(long, env = "KEEL_MIN_INSYNC_REPLICAS", default_value_t = 1)]
    min_insync_replicas: usize,
    /// A follower not caught up for this long leaves the ISR (Kafka's replica.lag.time.max.ms).
    #[arg(long, env = "KEEL_REPLICA_LAG_TIME_MAX_MS", default_value_t = 10_000)]
    replica_lag_time_max_ms: u64,
}

const BUILT: &[&str] = &[
    "io seams: Clock (skew/drift), Disk (real files + SimDisk fault model), node RNG",
    "segmented checksummed log with group commit, truncation and crash recovery",
    "metadata Raft group: state machine, controller (placement, lease fencing, leader moves), durable Raft store",
    "broker-to-broker transport over TCP (simulated TCP under madsim)",
    "partition replication: leader epochs, durable high watermark, acks=0/1/all, ISR shrink/expand through the metadata, divergence truncation",
    "Kafka listener: ApiVersions, Metadata (auto-create), Produce (acks 0/1/all), Fetch (long poll), ListOffsets, OffsetForLeaderEpoch, CreateTopics, DescribeConfigs, DescribeCluster",
    "admin HTTP endpoint: GET /status, GET /topics[?consistency=linearizable], POST /topics/NAME, POST /produce/TOPIC/PARTITION, GET /records/TOPIC/PARTITION, GET /replicas",
    "keel-sim run/sweep with scenario files, metadata and data checkers; log-check and raft-store-check",
];

const NOT_BUILT: &[&str] = &[
    "consumer groups (FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups)",
    "idempotent producers (InitProducerId), DeleteTopics, CreatePartitions",
    "/metrics, /healthz, /readyz, keel dev, --config files, JSON logs",
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
    let peers = config::parse_peers(&args.peers).map_err(StartError::BadInput)?;
    let listen_addr = peers.get(&args.node_id).cloned().ok_or_else(|| {
        StartError::BadInput(format!(
            "--node-id {} is not in --peers ({}); add it as {}=HOST:PORT or pick one of those ids",
            args.node_id,
            args.peers,
            args.node_id
        ))
    })?;
    let (kafka_host, kafka_port) = config::parse_host_port(&args.kafka_addr).map_err(|e| StartError::BadInput(format!("--kafka-addr: {e}")))?;
    let advertised_host = args.advertised_host.clone().unwrap_or(kafka_host);
    let advertised_port = args.advertised_port.unwrap_or(kafka_port);
    if args.num_partitions == 0 || args.default_replication_factor == 0 {
        return Err(StartError::BadInput("--num-partitions and --default-replication-factor must be at least 1".into()));
    }
    let disk = RealDisk::open_root(&args.data_dir)
        .await
        .map_err(|e| StartError::BadInput(format!("cannot use --data-dir {}: {e}", args.data_dir)))?;
    let mut entropy = NodeRng::from_entropy();
    let (frames_tx, frames_rx) = tokio::sync::mpsc::channel(4096);
    let config = MetaDriverConfig {
        cluster_id: args.cluster_id.clone(),
        node_id: args.node_id,
        voters: peers,
        listen_addr: listen_addr.clone(),
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
        other_frames: Some(frames_tx),
    };
    let incarnation_id = config.incarnation_id;
    let disk = Disk::Real(disk);
    let (meta, task) = match start_meta(disk.clone(), Clock::new(), entropy.fork(1), config).await {
        Ok(started) => started,
        Err(MetaDriverError::Node(MetaNodeError::Store(error @ (RaftStoreError::WrongCluster { .. } | RaftStoreError::WrongVoters { .. })))) => {
            return Err(StartError::BadInput(format!("refusing to start: {error} (data dir {})", args.data_dir)));
        }
        Err(error @ (MetaDriverError::Listen { .. } | MetaDriverError::Config(_))) => return Err(StartError::BadInput(error.to_string())),
        Err(error) => return Err(StartError::Failed(error.into())),
    };
    let admin = tokio::net::TcpListener::bind(args.admin_addr.as_str())
        .await
        .map_err(|e| StartError::BadInput(format!("cannot listen on --admin-addr {}: {e}", args.admin_addr)))?;
    let kafka = tokio::net::TcpListener::bind(args.kafka_addr.as_str())
        .await
        .map_err(|e| StartError::BadInput(format!("cannot listen on --kafka-addr {}: {e}", args.kafka_addr)))?;
    let repl_config = ReplConfig {
        min_insync_replicas_default: args.min_insync_replicas,
        replica_lag_time_max_ms: args.replica_lag_time_max_ms,
        ..ReplConfig::new(args.node_id, incarnation_id)
    };
    let (repl, repl_task) = keel_repl::driver::start(disk, Clock::new(), meta.clone(), frames_rx, repl_config);
    let kafka_config = KafkaConfig {
        frame_bytes_max: args.socket_request_max_bytes,
        auto_create_topics: args.auto_create_topics,
        default_partitions: args.num_partitions,
        default_replication_factor: args.default_replication_factor,
        min_insync_replicas_default: args.min_insync_replicas,
        replica_lag_time_max_ms: args.replica_lag_time_max_ms,
        ..KafkaConfig::new(args.node_id, &args.cluster_id)
    };
    tracing::info!(
        node_id = args.node_id,
        kafka_addr = %args.kafka_addr,
        broker_addr = %listen_addr,
        admin_addr = %args.admin_addr,
        data_dir = %args.data_dir,
        "keel node started"
    );
    tokio::spawn(keel_kafka::server::serve(kafka, KafkaFront::new(meta.clone(), repl.clone(), kafka_config)));
    tokio::spawn(admin::serve(admin, admin::Node { meta, repl }));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| StartError::Failed(e.into()))?;
    tokio::select! {
        biased;
        result = task => match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(StartError::Failed(error.into())),
            Err(join_error) => Err(StartError::Failed(anyhow::anyhow!("metadata loop panicked: {join_error}"))),
        },
        // A disk error on a partition log stops the broker (its unsynced
        // records may be gone); the restarted broker recovers the log and
        // re-registers, which moves its partitions to a new leader epoch.
        result = repl_task => match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(StartError::Failed(error.into())),
            Err(join_error) => Err(StartError::Failed(anyhow::anyhow!("replication loop panicked: {join_error}"))),
        },
        _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted; stopping"); Ok(()) }
        _ = terminate.recv() => { tracing::info!("SIGTERM; stopping (every acknowledged metadata change is already durable)"); Ok(()) }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Status => {
            print_status();
            ExitCode::SUCCESS
        }
        Command::Start(args) => {
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("keel start: cannot start the async runtime: {error}");
                    return ExitCode::from(1);
                }
            };
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
