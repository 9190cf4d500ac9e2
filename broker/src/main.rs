//! keel: the broker binary (composition root for production).
//!
//! A node runs the metadata Raft group (and its controller) and the
//! partition replication driver on the real disk and TCP (one broker
//! endpoint for both), the Kafka listener, and an admin HTTP endpoint that
//! also produces and reads and serves /healthz, /readyz and /metrics.
//! SIGTERM drains it (see `start`). `keel dev` runs a local cluster of such
//! nodes as child processes. `keel status` lists what exists and what does not.

mod config;
mod dev;
mod listeners;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use config::{LogFormat, StartArgs};
use keel_io::{Clock, Disk, NodeRng, RealDisk};
use keel_node::{Node, NodeConfig, NodeError, NodeIdentity, Seams};

#[derive(Parser)]
#[command(name = "keel", version, about = "Kafka-compatible broker built inside a deterministic simulator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a node: metadata Raft, replication, the Kafka listener and the admin endpoint (single node with no arguments).
    Start(Box<StartArgs>),
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
    "one composition root (crates/node): keel and every simulated broker boot the same full node from the same NodeConfig defaults; graceful stop and /readyz in the simulator; keel-sim config",
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

impl From<NodeError> for StartError {
    fn from(error: NodeError) -> Self {
        if error.is_bad_input() {
            StartError::BadInput(format!("refusing to start: {error}"))
        } else {
            StartError::Failed(error.into())
        }
    }
}

/// Checks the operator's input, binds every port (a start that cannot
/// listen leaves the data dir untouched), opens the data dir and hands all
/// of it to the node; then waits for a signal and drains.
async fn start(args: StartArgs, node_config: NodeConfig) -> Result<(), StartError> {
    // Listening from the start: a SIGTERM during startup drains once started.
    let mut signals = Signals::listen()?;
    let peers = config::parse_peers(&args.peers).map_err(StartError::BadInput)?;
    let listen_addr = peers.get(&args.node_id).cloned().ok_or_else(|| {
        StartError::BadInput(format!(
            "--node-id {} is not in --peers ({}); add it as {}=HOST:PORT or pick one of those ids",
            args.node_id, args.peers, args.node_id
        ))
    })?;
    config::check_peer_ports(&peers, args.node_id).map_err(StartError::BadInput)?;
    let (kafka_host, _) = config::parse_listen_addr(&args.kafka_addr).map_err(|e| StartError::BadInput(format!("--kafka-addr: {e}")))?;
    config::parse_listen_addr(&args.admin_addr).map_err(|e| StartError::BadInput(format!("--admin-addr: {e}")))?;
    node_config.validate().map_err(|e| StartError::BadInput(format!("{e} (flag --{}, or `{}` in --config)", e.key.replace('_', "-"), e.key)))?;
    let listeners = listeners::bind_all(&args.kafka_addr, &args.admin_addr, &listen_addr, args.broker_listener_fd).await.map_err(StartError::BadInput)?;
    let bound = listeners.addrs().map_err(|e| StartError::BadInput(e.to_string()))?;
    let disk = RealDisk::open_root(&args.data_dir).await.map_err(|e| StartError::BadInput(format!("cannot use --data-dir {}: {e}", args.data_dir)))?;
    let identity = NodeIdentity {
        node_id: args.node_id,
        cluster_id: args.cluster_id.clone(),
        voters: peers,
        advertised_host: args.advertised_host.clone().unwrap_or(kafka_host),
        advertised_port: args.advertised_port.unwrap_or(bound.kafka.port()),
        rack: args.rack.clone(),
    };
    let seams = Seams::new(Disk::Real(disk), Clock::new(), NodeRng::from_entropy());
    let node = Node::start(identity, &node_config, seams, listeners, Some(std::process::id())).await.map_err(|error| match error {
        NodeError::DataDirInUse(_) | NodeError::ForeignStore(_) => StartError::BadInput(format!("refusing to start: {error} (data dir {})", args.data_dir)),
        error => error.into(),
    })?;
    let signal_name = signals.first();
    let node = node.run_until(signal_name).await?;
    tokio::select! {
        biased;
        signal = signals.next() => Err(StartError::Failed(anyhow::anyhow!("second {signal} while draining: stopped without waiting for the drain"))),
        result = node.drain() => result.map(|_| ()).map_err(StartError::from),
    }
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

    /// The next signal's name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            biased;
            _ = self.interrupt.recv() => "interrupt",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }

    /// Resolves at the first signal, logging which.
    async fn first(&mut self) {
        let name = self.next().await;
        tracing::info!(signal = name, "stop requested");
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

/// The effective `keel start` settings and node settings: flags and env
/// over the `--config` file over defaults. Bad input is a message for exit
/// status 2.
fn effective_settings(args: StartArgs, matches: &clap::ArgMatches) -> Result<(StartArgs, NodeConfig), String> {
    let Some(path) = args.config.clone() else {
        let node = args.node.apply(NodeConfig::default());
        return Ok((args, node));
    };
    let text = config::read_config_file(&path)?;
    let file = config::parse_config_file(&path, &text)?;
    let node = args.node.apply(file.node);
    Ok((config::apply_file(args, matches, file.start), node))
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
            let (args, node_config) = match effective_settings(*args, start_matches) {
                Ok(settings) => settings,
                Err(message) => {
                    eprintln!("keel start: {message}");
                    return ExitCode::from(2);
                }
            };
            if args.print_config {
                print!("{}", config::effective_toml(&args, &node_config));
                return ExitCode::SUCCESS;
            }
            init_logging(args.log_format);
            match runtime.block_on(start(args, node_config)) {
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
