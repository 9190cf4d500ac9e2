//! Real `keel` processes on 127.0.0.1 for the process tests (included with
//! `#[path]` next to `admin_client.rs`). Waits are liveness bounds, generous
//! for a loaded machine, not timings.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::admin_client::{cluster_settled, free_port, http, json_field};

pub const WAIT: Duration = Duration::from_secs(60);

pub struct Node {
    pub id: u64,
    pub admin_port: u16,
    /// The Kafka listener.
    pub kafka_port: u16,
    pub child: Option<Child>,
    pub data_dir: std::path::PathBuf,
    pub peers: String,
    /// More `keel start` arguments.
    pub extra_args: Vec<String>,
}

impl Node {
    pub fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["start", "--node-id", &self.id.to_string(), "--peers", &self.peers])
            .args(["--data-dir", self.data_dir.to_str().expect("utf8 path")])
            .args(["--admin-addr", &format!("127.0.0.1:{}", self.admin_port)])
            .args(["--cluster-id", "process-test", "--registration-lease-ms", "2000"])
            .args(["--kafka-addr", &format!("127.0.0.1:{}", self.kafka_port)])
            .args(&self.extra_args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn keel");
        self.child = Some(child);
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
        self.kill();
    }
}

/// Starts `count` nodes under `dir` and waits until each is registered,
/// ready and has applied everyone's registration.
pub fn start_settled(dir: &Path, count: u64, extra_args: &[&str]) -> Vec<Node> {
    let ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
    let peers = (1..=count).map(|id| format!("{id}=127.0.0.1:{}", ports[id as usize - 1])).collect::<Vec<_>>().join(",");
    let mut nodes: Vec<Node> = (1..=count)
        .map(|id| Node {
            id,
            admin_port: free_port(),
            kafka_port: free_port(),
            child: None,
            data_dir: dir.join(format!("node-{id}")),
            peers: peers.clone(),
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        })
        .collect();
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
