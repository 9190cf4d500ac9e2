//! `keel dev`: a local N-node cluster for trying Keel out. CLI glue only: it
//! runs N `keel start` child processes of this executable (node ids 1..N,
//! consecutive ports from three bases, data in DIR/node-ID), prints where
//! they listen, and supervises them: on Ctrl-C or SIGTERM it sends SIGTERM
//! to every node, waits for them and exits 0 when all drained cleanly; if a
//! node exits on its own it says which, stops the others and exits 1.
//!
//! A port base of 0 means any free ports: the nodes bind port 0 for Kafka
//! and admin and report what they bound (`listeners.json` in their data
//! dir), and the supervisor binds every broker-to-broker listener itself
//! and hands each node its socket (`--broker-listener-fd`), since every node
//! must know the others' addresses before it starts. Nothing picks a port
//! and hopes it stays free, so tests on a busy machine cannot collide.
//!
//! Children run in their own process group, so a terminal's Ctrl-C reaches
//! only this supervisor (which forwards one SIGTERM), and on Linux each
//! child gets SIGTERM if the supervisor dies without stopping it. Each
//! line a node writes is passed on with its node id in front (`[node 2] ...`),
//! stdout to stdout and stderr to stderr, so interleaved logs say whose they are.

use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use clap::Args;

use crate::config::LogFormat;

/// A line on stdout; a closed stdout (the reader went away) is not an error.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// How often the supervisor looks at its children.
const CHILD_POLL_MS: u64 = 100;
/// After a node's drain timeout, how much longer it gets to exit before SIGKILL.
const STOP_GRACE_MS: u64 = 20_000;

#[derive(Args, Debug)]
pub struct DevArgs {
    /// How many nodes to run (each one a `keel start` process).
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// Node ID keeps its data in DIR/node-ID.
    #[arg(long, default_value = "keel-dev-data")]
    pub data_dir: String,
    /// Host every node listens on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Node ID's Kafka listener is on this port + ID - 1 (0: any free port, printed once bound).
    #[arg(long, default_value_t = 9092)]
    pub kafka_port_base: u16,
    /// Node ID's admin HTTP endpoint is on this port + ID - 1 (0: any free port, printed once bound).
    #[arg(long, default_value_t = 8080)]
    pub admin_port_base: u16,
    /// Node ID's broker-to-broker port (metadata Raft and replication) is this + ID - 1 (0: free ports bound by keel dev).
    #[arg(long, default_value_t = 19091)]
    pub peer_port_base: u16,
    /// Names the cluster (each node refuses a data dir of another cluster).
    #[arg(long, default_value = "keel-dev")]
    pub cluster_id: String,
    /// Replicas of auto-created topics (default: 3 with 3 or more nodes, else the node count).
    #[arg(long)]
    pub default_replication_factor: Option<u32>,
    /// ISR size acks=all needs (default: 2 with 3 or more nodes, else 1).
    #[arg(long)]
    pub min_insync_replicas: Option<usize>,
    /// A `keel start --config` file every node reads (node ids, addresses and data dirs come from keel dev).
    #[arg(long)]
    pub config: Option<String>,
    /// Each node's --drain-timeout-ms on stop.
    #[arg(long, default_value_t = 10_000)]
    pub drain_timeout_ms: u64,
    /// Log format of the nodes (RUST_LOG sets the level; default info).
    #[arg(long, env = "KEEL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// One node of the dev cluster, as the supervisor sees it.
struct DevNode {
    id: u16,
    kafka_addr: String,
    admin_addr: String,
    data_dir: String,
    child: Child,
    exited: Option<ExitStatus>,
}

/// The port of node `id` (1-based) from a base, if it fits (base 0: any free port).
fn port(base: u16, id: u16) -> Option<u16> {
    if base == 0 {
        return Some(0);
    }
    base.checked_add(id - 1)
}

/// Checks the flags; the message says how to fix them.
fn validate(args: &DevArgs) -> Result<(), String> {
    if args.nodes == 0 {
        return Err("--nodes must be at least 1".into());
    }
    let n = args.nodes;
    let ranges = [("--kafka-port-base", args.kafka_port_base), ("--admin-port-base", args.admin_port_base), ("--peer-port-base", args.peer_port_base)];
    for (flag, base) in ranges {
        if port(base, n).is_none() {
            return Err(format!("{flag} {base}: {n} nodes need ports {base}..{base}+{} within 1..65535; pick a lower base", n - 1));
        }
    }
    let fixed: Vec<(&str, u16)> = ranges.into_iter().filter(|(_, base)| *base != 0).collect();
    for (i, (flag_a, a)) in fixed.iter().enumerate() {
        for (flag_b, b) in &fixed[i + 1..] {
            let (a, b) = (u32::from(*a), u32::from(*b));
            if a < b + u32::from(n) && b < a + u32::from(n) {
                return Err(format!("{flag_a} and {flag_b} overlap for {n} nodes; space the bases at least {n} apart"));
            }
        }
    }
    if args.default_replication_factor.is_some_and(|rf| rf == 0 || rf > u32::from(n)) {
        return Err(format!("--default-replication-factor must be from 1 to --nodes ({n})"));
    }
    let rf = replication_factor(args);
    if args.min_insync_replicas.is_some_and(|min| min == 0 || min > rf as usize) {
        return Err(format!("--min-insync-replicas must be from 1 to the replication factor ({rf})"));
    }
    Ok(())
}

fn replication_factor(args: &DevArgs) -> u32 {
    args.default_replication_factor.unwrap_or(if args.nodes >= 3 { 3 } else { u32::from(args.nodes) })
}

fn min_insync_replicas(args: &DevArgs) -> usize {
    args.min_insync_replicas.unwrap_or(if args.nodes >= 3 { 2 } else { 1 })
}

/// `keel dev`: exit 0 after a clean stop, 1 if a node failed, 2 on bad flags.
pub fn run(args: DevArgs) -> ExitCode {
    if let Err(message) = validate(&args) {
        eprintln!("keel dev: {message}");
        return ExitCode::from(2);
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(error) => {
            eprintln!("keel dev: cannot find this executable to start the nodes: {error}");
            return ExitCode::from(1);
        }
    };
    // One thread: the children are spawned from the main thread, which lives
    // as long as the supervisor (the parent-death signal follows the thread).
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("keel dev: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(supervise(&args, &exe))
}

fn node_command(args: &DevArgs, exe: &std::path::Path, id: u16, peers: &str, broker_fd: Option<i32>) -> (Command, String, String, String) {
    let kafka_addr = format!("{}:{}", args.host, port(args.kafka_port_base, id).expect("validated"));
    let admin_addr = format!("{}:{}", args.host, port(args.admin_port_base, id).expect("validated"));
    let data_dir = std::path::Path::new(&args.data_dir).join(format!("node-{id}")).to_string_lossy().into_owned();
    let mut command = Command::new(exe);
    command
        .arg("start")
        .args(["--node-id", &id.to_string(), "--peers", peers, "--data-dir", &data_dir])
        .args(["--kafka-addr", &kafka_addr, "--admin-addr", &admin_addr, "--cluster-id", &args.cluster_id])
        .args(["--default-replication-factor", &replication_factor(args).to_string()])
        .args(["--min-insync-replicas", &min_insync_replicas(args).to_string()])
        .args(["--drain-timeout-ms", &args.drain_timeout_ms.to_string()])
        .args(["--log-format", if args.log_format == LogFormat::Json { "json" } else { "text" }]);
    if let Some(config) = &args.config {
        command.args(["--config", config]);
    }
    if let Some(fd) = broker_fd {
        command.args(["--broker-listener-fd", &fd.to_string()]);
        // SAFETY: fcntl is async-signal-safe; it clears close-on-exec on the
        // one listener this child is given, in the child only.
        unsafe {
            command.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    command.process_group(0).stdout(Stdio::piped()).stderr(Stdio::piped());
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches only the child's own state.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    (command, kafka_addr, admin_addr, data_dir)
}

async fn supervise(args: &DevArgs, exe: &std::path::Path) -> ExitCode {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut terminate, mut interrupt) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(terminate), Ok(interrupt)) => (terminate, interrupt),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("keel dev: cannot listen for SIGTERM and SIGINT: {error}");
            return ExitCode::from(1);
        }
    };
    // Base 0: bind every broker listener here, kept open for the cluster's life.
    let mut broker_listeners = Vec::new();
    if args.peer_port_base == 0 {
        for id in 1..=args.nodes {
            match tokio::net::TcpListener::bind((args.host.as_str(), 0)).await.and_then(|l| l.into_std()) {
                Ok(listener) => broker_listeners.push(listener),
                Err(error) => {
                    eprintln!("keel dev: cannot listen on {}:0 for node {id}'s broker port: {error}", args.host);
                    return ExitCode::from(1);
                }
            }
        }
    }
    let peer_port = |id: u16| match broker_listeners.get(usize::from(id - 1)) {
        Some(listener) => listener.local_addr().map(|a| a.port()).unwrap_or(0),
        None => port(args.peer_port_base, id).expect("validated"),
    };
    let peers = (1..=args.nodes).map(|id| format!("{id}={}:{}", args.host, peer_port(id))).collect::<Vec<_>>().join(",");
    let mut nodes: Vec<DevNode> = Vec::new();
    let mut copiers = Vec::new();
    for id in 1..=args.nodes {
        let broker_fd = broker_listeners.get(usize::from(id - 1)).map(std::os::fd::AsRawFd::as_raw_fd);
        let (mut command, kafka_addr, admin_addr, data_dir) = node_command(args, exe, id, &peers, broker_fd);
        match command.spawn() {
            Ok(mut child) => {
                copiers.extend(pass_on_output(id, &mut child));
                nodes.push(DevNode { id, kafka_addr, admin_addr, data_dir, child, exited: None });
            }
            Err(error) => {
                eprintln!("keel dev: cannot start node {id} ({}): {error}", exe.display());
                stop_all(&mut nodes, args.drain_timeout_ms).await;
                return ExitCode::from(1);
            }
        }
    }
    if args.kafka_port_base == 0 || args.admin_port_base == 0 {
        if let Err(message) = learn_bound_addrs(&mut nodes).await {
            eprintln!("keel dev: {message}; stopping the others");
            stop_all(&mut nodes, args.drain_timeout_ms).await;
            return ExitCode::from(1);
        }
    }
    let bootstrap = nodes.iter().map(|n| n.kafka_addr.as_str()).collect::<Vec<_>>().join(",");
    say!(
        "keel dev: {} nodes (cluster {}, replication factor {}, min insync replicas {})",
        args.nodes,
        args.cluster_id,
        replication_factor(args),
        min_insync_replicas(args)
    );
    say!("  bootstrap servers: {bootstrap}");
    for node in &nodes {
        say!("  node {}: kafka {}  admin http://{}  data {}  pid {}", node.id, node.kafka_addr, node.admin_addr, node.data_dir, node.child.id());
    }
    say!("  ready when every http://ADMIN/readyz answers 200; Ctrl-C stops the cluster");
    let unexpected = loop {
        tokio::select! {
            biased;
            _ = interrupt.recv() => {
                tracing::info!("interrupted; stopping every node");
                break None;
            }
            _ = terminate.recv() => {
                tracing::info!("SIGTERM; stopping every node");
                break None;
            }
            _ = tokio::time::sleep(Duration::from_millis(CHILD_POLL_MS)) => {
                if let Some(id) = reap(&mut nodes).into_iter().next() {
                    break Some(id);
                }
            }
        }
    };
    if let Some(id) = unexpected {
        let node = nodes.iter().find(|n| n.id == id).expect("reaped from the list");
        eprintln!(
            "keel dev: node {id} (pid {}) exited unexpectedly ({}); stopping the others",
            node.child.id(),
            node.exited.map(|s| s.to_string()).unwrap_or_default()
        );
    }
    let clean = stop_all(&mut nodes, args.drain_timeout_ms).await;
    // Every node has exited: its pipes end, and its last lines are out
    // before the verdict.
    for copier in copiers {
        let _ = copier.await;
    }
    if unexpected.is_some() || !clean {
        return ExitCode::from(1);
    }
    say!("keel dev: every node stopped");
    ExitCode::SUCCESS
}

/// Copies `from` line by line, each line with `[node ID] ` in front, to
/// `emit` (one call per line, so lines from several nodes never interleave
/// mid-line). A last line without a line feed gets one. Bytes pass as they
/// are: a log line need not be UTF-8.
fn copy_prefixed(id: u16, mut from: impl BufRead, mut emit: impl FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
    let prefix = format!("[node {id}] ");
    let mut line = prefix.clone().into_bytes();
    loop {
        line.truncate(prefix.len());
        if from.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        emit(&line)?;
    }
}

/// Passes the child's stdout and stderr on to ours, prefixed with its node
/// id; the copies end when the child closes them (at exit).
fn pass_on_output(id: u16, child: &mut Child) -> Vec<tokio::task::JoinHandle<()>> {
    let mut copiers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        copiers.push(tokio::task::spawn_blocking(move || {
            let _ = copy_prefixed(id, std::io::BufReader::new(stdout), |line| std::io::stdout().lock().write_all(line));
        }));
    }
    if let Some(stderr) = child.stderr.take() {
        copiers.push(tokio::task::spawn_blocking(move || {
            let _ = copy_prefixed(id, std::io::BufReader::new(stderr), |line| std::io::stderr().lock().write_all(line));
        }));
    }
    copiers
}

/// Waits until every node recorded the addresses it bound (its
/// `listeners.json`, written by this very process: the pid matches), and
/// takes its Kafka and admin addresses from there.
async fn learn_bound_addrs(nodes: &mut [DevNode]) -> Result<(), String> {
    for node in nodes.iter_mut() {
        let disk = keel_io::Disk::Real(keel_io::RealDisk::new(&node.data_dir));
        let pid = format!("\"pid\":{},", node.child.id());
        loop {
            if let Ok(Some(status)) = node.child.try_wait() {
                return Err(format!("node {} exited while starting ({status})", node.id));
            }
            let written = match disk.open(keel_node::LISTENERS_FILE).await {
                Ok(file) => file.read_at(0, 4096).await.ok().map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
                Err(_) => None,
            };
            if let Some(json) = written.filter(|json| json.contains(&pid)) {
                let field = |name: &str| json.split(&format!("\"{name}\":\"")).nth(1).and_then(|rest| rest.split('"').next()).map(str::to_string);
                node.kafka_addr = field("kafka").ok_or_else(|| format!("node {}'s listeners.json has no kafka address: {json}", node.id))?;
                node.admin_addr = field("admin").ok_or_else(|| format!("node {}'s listeners.json has no admin address: {json}", node.id))?;
                break;
            }
            tokio::time::sleep(Duration::from_millis(CHILD_POLL_MS)).await;
        }
    }
    Ok(())
}

/// Collects the nodes that exited since the last look; returns their ids.
fn reap(nodes: &mut [DevNode]) -> Vec<u16> {
    let mut exited = Vec::new();
    for node in nodes.iter_mut().filter(|n| n.exited.is_none()) {
        match node.child.try_wait() {
            Ok(Some(status)) => {
                node.exited = Some(status);
                exited.push(node.id);
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(node_id = node.id, %error, "cannot check on node"),
        }
    }
    exited
}

/// SIGTERM to every running node, then waits for them (SIGKILL after the
/// drain timeout and a grace period). True when every node that was running
/// exited with status 0.
async fn stop_all(nodes: &mut [DevNode], drain_timeout_ms: u64) -> bool {
    reap(nodes);
    let stopping: Vec<u16> = nodes.iter().filter(|n| n.exited.is_none()).map(|n| n.id).collect();
    for node in nodes.iter().filter(|n| n.exited.is_none()) {
        let pid = libc::pid_t::try_from(node.child.id()).expect("pids fit pid_t");
        // SAFETY: kill(2) on our own unreaped child: the pid cannot be reused yet.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            tracing::warn!(node_id = node.id, error = %std::io::Error::last_os_error(), "cannot send SIGTERM");
        }
    }
    let polls = (drain_timeout_ms + STOP_GRACE_MS) / CHILD_POLL_MS;
    for _ in 0..polls {
        reap(nodes);
        if nodes.iter().all(|n| n.exited.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(CHILD_POLL_MS)).await;
    }
    let mut clean = true;
    for node in nodes.iter_mut() {
        if node.exited.is_none() {
            eprintln!("keel dev: node {} did not stop within {} ms of SIGTERM; killing it", node.id, drain_timeout_ms + STOP_GRACE_MS);
            let _ = node.child.kill();
            node.exited = node.child.wait().ok();
            clean = false;
        } else if stopping.contains(&node.id) && !node.exited.is_some_and(|s| s.success()) {
            eprintln!("keel dev: node {} stopped with {}", node.id, node.exited.map(|s| s.to_string()).unwrap_or_default());
            clean = false;
        }
    }
    clean
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        dev: DevArgs,
    }

    fn parse(args: &[&str]) -> DevArgs {
        Cli::try_parse_from(std::iter::once("dev").chain(args.iter().copied())).expect("parses").dev
    }

    #[test]
    fn three_nodes_get_replication_factor_3_min_insync_2_and_bad_flags_say_how_to_fix_them() {
        let three = parse(&[]);
        assert_eq!((three.nodes, replication_factor(&three), min_insync_replicas(&three)), (3, 3, 2));
        assert_eq!(validate(&three), Ok(()));
        let one = parse(&["--nodes", "1"]);
        assert_eq!((replication_factor(&one), min_insync_replicas(&one)), (1, 1));
        assert!(validate(&parse(&["--nodes", "0"])).expect_err("zero").contains("at least 1"));
        assert!(validate(&parse(&["--kafka-port-base", "65534"])).expect_err("overflow").contains("pick a lower base"));
        assert!(validate(&parse(&["--admin-port-base", "9093"])).expect_err("overlap").contains("overlap"));
        assert_eq!(validate(&parse(&["--kafka-port-base", "0", "--admin-port-base", "0", "--peer-port-base", "0"])), Ok(()));
        assert!(validate(&parse(&["--nodes", "2", "--default-replication-factor", "3"])).expect_err("rf").contains("from 1 to --nodes"));
        assert!(validate(&parse(&["--min-insync-replicas", "4"])).expect_err("min").contains("replication factor (3)"));
    }

    #[test]
    fn every_line_of_a_node_gets_its_node_id_in_front_and_a_cut_last_line_is_ended() {
        let output = b"2026-01-01T00:00:00Z  INFO keel: ready\n\nnot utf-8: \xff\xfe\nlast line without a line feed";
        let mut lines: Vec<Vec<u8>> = Vec::new();
        copy_prefixed(2, &output[..], |line| {
            lines.push(line.to_vec());
            Ok(())
        })
        .expect("copies");
        let expected: [&[u8]; 4] = [
            b"[node 2] 2026-01-01T00:00:00Z  INFO keel: ready\n",
            b"[node 2] \n",
            b"[node 2] not utf-8: \xff\xfe\n",
            b"[node 2] last line without a line feed\n",
        ];
        assert_eq!(lines, expected.map(<[u8]>::to_vec));
        let mut nothing = 0;
        copy_prefixed(3, &b""[..], |_| {
            nothing += 1;
            Ok(())
        })
        .expect("copies");
        assert_eq!(nothing, 0, "no output, no lines");
    }
}
