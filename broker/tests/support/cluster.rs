//! Real `keel` processes on 127.0.0.1 for the process tests (included with
//! `#[path]` next to `admin_client.rs`). Waits are liveness bounds, generous
//! for a loaded machine, not timings.
//!
//! No port is picked and then hoped free: each node binds port 0 for Kafka
//! and admin and reports what it bound (`listeners.json` in its data dir),
//! and the test binds every node's broker-to-broker listener itself, keeps
//! it for the test's life and hands it to each start of the node
//! (`--broker-listener-fd`), so the peers know each other's addresses up
//! front and a restarted node gets its port back. Every start's stderr is
//! kept in `node-ID.log`; a failing test prints each node's tail.

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::admin_client::{cluster_settled, http, json_field};

pub const WAIT: Duration = Duration::from_secs(180);

pub struct Node {
    pub id: u64,
    /// The admin endpoint (bound by the node on port 0; changes with each start).
    pub admin_port: u16,
    /// The Kafka listener (bound by the node on port 0; changes with each start).
    pub kafka_port: u16,
    pub child: Option<Child>,
    pub data_dir: PathBuf,
    pub peers: String,
    /// More `keel start` arguments.
    pub extra_args: Vec<String>,
    /// This node's broker-to-broker listener, bound by the test.
    pub broker_listener: TcpListener,
    /// Every start's stderr, appended.
    pub log: PathBuf,
}

/// `count` broker-to-broker listeners on 127.0.0.1 and the `--peers` value naming them.
pub fn broker_listeners(count: u64) -> (Vec<TcpListener>, String) {
    let listeners: Vec<TcpListener> = (0..count).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a broker listener")).collect();
    let peers = listeners
        .iter()
        .enumerate()
        .map(|(index, listener)| format!("{}={}", index + 1, listener.local_addr().expect("bound address")))
        .collect::<Vec<_>>()
        .join(",");
    (listeners, peers)
}

/// The last `lines` lines of a log file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| format!("(cannot read {}: {error})", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A field of `listeners.json` written by process `pid` in `data_dir`, once it is there.
pub fn bound_addr(data_dir: &Path, pid: u32, field: &str) -> Option<String> {
    let json = std::fs::read_to_string(data_dir.join("listeners.json")).ok()?;
    json.contains(&format!("\"pid\":{pid},")).then_some(())?;
    json.split(&format!("\"{field}\":\"")).nth(1)?.split('"').next().map(str::to_string)
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no port in {addr}"))
}

impl Node {
    /// Node `id` of a cluster whose `--peers` is `peers`, with its data and log under `dir`.
    pub fn new(id: u64, dir: &Path, peers: &str, broker_listener: TcpListener, extra_args: &[&str]) -> Node {
        Node {
            id,
            admin_port: 0,
            kafka_port: 0,
            child: None,
            data_dir: dir.join(format!("node-{id}")),
            peers: peers.to_string(),
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            broker_listener,
            log: dir.join(format!("node-{id}.log")),
        }
    }

    /// Starts the process and waits until it has bound its ports (not until it is ready).
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("node log");
        let fd = self.broker_listener.as_raw_fd();
        let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
        command
            .args(["start", "--node-id", &self.id.to_string(), "--peers", &self.peers])
            .args(["--data-dir", self.data_dir.to_str().expect("utf8 path")])
            .args(["--admin-addr", "127.0.0.1:0", "--kafka-addr", "127.0.0.1:0"])
            .args(["--broker-listener-fd", &fd.to_string()])
            .args(["--cluster-id", "process-test", "--registration-lease-ms", "2000"])
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: fcntl is async-signal-safe; it lets this one listener
        // survive exec, in the child only.
        unsafe {
            command.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("spawn keel");
        let pid = child.id();
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let (Some(kafka), Some(admin)) = (bound_addr(&self.data_dir, pid, "kafka"), bound_addr(&self.data_dir, pid, "admin")) {
                (self.kafka_port, self.admin_port) = (port_of(&kafka), port_of(&admin));
                return;
            }
            if let Some(status) = self.child.as_mut().expect("just started").try_wait().expect("try_wait") {
                panic!("node {} exited while starting ({status}); its log ends:\n{}", self.id, log_tail(&self.log, 40));
            }
            assert!(started.elapsed() < WAIT, "node {} did not bind its ports within {WAIT:?}; its log ends:\n{}", self.id, log_tail(&self.log, 40));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the process dies at once (the page cache survives, as in a crash of the process).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    pub fn status(&self) -> Option<String> {
        http(self.admin_port, "GET", "/status").map(|(_, body)| body)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- node {} log tail ({}) ----\n{}\n---- end of node {} ----", self.id, self.log.display(), log_tail(&self.log, 60), self.id);
        }
        self.kill();
    }
}

/// Starts `count` nodes under `dir` and waits until each is registered,
/// ready and has applied everyone's registration.
pub fn start_settled(dir: &Path, count: u64, extra_args: &[&str]) -> Vec<Node> {
    let (listeners, peers) = broker_listeners(count);
    let mut nodes: Vec<Node> =
        listeners.into_iter().enumerate().map(|(index, listener)| Node::new(index as u64 + 1, dir, &peers, listener, extra_args)).collect();
    nodes.iter_mut().for_each(Node::start);
    wait_for("every node registered, ready, and aware of all the others", || cluster_settled(&nodes.iter().map(Node::status).collect::<Vec<_>>()));
    nodes
}

pub fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while started.elapsed() < WAIT {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not reached within {WAIT:?}");
}

/// The metadata Raft leader, as the nodes report it.
#[allow(dead_code, reason = "shared by the process tests; not every test binary needs it")]
pub fn leader_of(nodes: &[Node]) -> Option<u64> {
    nodes.iter().find(|n| n.status().is_some_and(|s| json_field(&s, "is_leader").as_deref() == Some("true"))).map(|n| n.id)
}

/// A temporary directory under `KEEL_BENCH_DIR` (the disk the benchmark
/// measures), else the system's temp dir.
#[allow(dead_code, reason = "used by the benchmarks, not by every test binary")]
pub fn bench_temp_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(std::env::var_os("KEEL_BENCH_DIR").unwrap_or_else(|| std::env::temp_dir().into_os_string())).expect("temp dir")
}

/// Partition 0's leader and leader epoch for `topic`, as node `via` reports them.
#[allow(dead_code, reason = "used by some test binaries, not all")]
pub fn partition_leader(via: &Node, topic: &str) -> Option<(u64, u64)> {
    let (_, body) = http(via.admin_port, "GET", "/topics")?;
    let topic_json = body.split(&format!("\"name\":\"{topic}\"")).nth(1)?;
    let leader = json_field(topic_json, "leader")?.parse().ok()?;
    let epoch = json_field(topic_json, "leader_epoch")?.parse().ok()?;
    Some((leader, epoch))
}
