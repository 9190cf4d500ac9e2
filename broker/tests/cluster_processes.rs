//! Three real `keel` processes on 127.0.0.1 form a metadata cluster; the Raft
//! leader is SIGKILLed; a new leader is elected, a topic created afterwards
//! is visible on every node, including the killed one after its restart.
//! (Waits are liveness bounds, generous for a loaded machine, not timings.)

#[path = "support/admin_client.rs"]
mod admin_client;
#[path = "support/cluster.rs"]
mod cluster;
use admin_client::http;
use cluster::{bound_addr, broker_listeners, leader_of, log_tail, wait_for, Node};

use std::process::{Command, Stdio};

fn has_topic(node: &Node, name: &str) -> bool {
    http(node.admin_port, "GET", "/topics").is_some_and(|(_, body)| body.contains(&format!("\"name\":\"{name}\"")))
}

#[test]
fn three_processes_elect_survive_a_sigkilled_leader_and_converge() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut nodes = cluster::start_settled(dir.path(), 3, &[]);
    let old_leader = leader_of(&nodes).expect("a leader");
    let follower = nodes.iter().find(|n| n.id != old_leader).expect("a follower").admin_port;
    let (code, body) = http(follower, "POST", "/topics/before-kill?partitions=3&replication_factor=3").expect("create");
    assert_eq!(code, 201, "create on a follower: {body}");

    nodes[old_leader as usize - 1].kill();
    wait_for("a new leader among the survivors", || leader_of(&nodes).is_some_and(|l| l != old_leader));
    let survivor = nodes.iter().find(|n| n.id != old_leader).expect("survivor").admin_port;
    let (code, body) = http(survivor, "POST", "/topics/after-kill?partitions=2&replication_factor=2").expect("create");
    assert_eq!(code, 201, "create after the leader was killed: {body}");
    for node in nodes.iter().filter(|n| n.id != old_leader) {
        wait_for(&format!("after-kill visible on node {}", node.id), || has_topic(node, "after-kill"));
    }

    // A linearizable read on any survivor includes the acknowledged create at once.
    for node in nodes.iter().filter(|n| n.id != old_leader) {
        let (code, body) = http(node.admin_port, "GET", "/topics?consistency=linearizable").expect("linearizable read");
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"name\":\"after-kill\""), "node {}: {body}", node.id);
    }

    nodes[old_leader as usize - 1].start();
    for node in &nodes {
        wait_for(&format!("both topics visible on node {}", node.id), || has_topic(node, "before-kill") && has_topic(node, "after-kill"));
    }
}

#[test]
fn a_create_sent_while_the_node_starts_waits_for_it_instead_of_failing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut listeners, peers) = broker_listeners(1);
    let mut node = Node::new(1, dir.path(), &peers, listeners.remove(0), &[]);
    node.start();
    let admin_port = node.admin_port;
    // Send the create as soon as the admin endpoint answers, before any election.
    wait_for("admin endpoint up", || http(admin_port, "GET", "/status").is_some());
    let (code, body) = http(admin_port, "POST", "/topics/early?partitions=2").expect("create");
    assert_eq!(code, 201, "{body}");
}

#[test]
fn bad_configuration_is_refused_with_status_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_keel")).arg("start").args(args).output().expect("run keel");
    let not_a_peer = run(&["--node-id", "4", "--peers", "1=127.0.0.1:1,2=127.0.0.1:2"]);
    assert_eq!(not_a_peer.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&not_a_peer.stderr).contains("--node-id 4 is not in --peers"));
    let duplicate = run(&["--peers", "1=127.0.0.1:1,1=127.0.0.1:2"]);
    assert_eq!(duplicate.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("appears twice"));

    // A data dir from another cluster: create it as cluster a, then start as b.
    let data = dir.path().join("data");
    let log = dir.path().join("first.log");
    let mut first = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["start", "--cluster-id", "a", "--peers", "1=127.0.0.1:0"])
        .args(["--data-dir", data.to_str().expect("utf8"), "--admin-addr", "127.0.0.1:0", "--kafka-addr", "127.0.0.1:0"])
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let pid = first.id();
    wait_for("first start created its data dir", || {
        bound_addr(&data, pid, "admin")
            .is_some_and(|admin| http(admin.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port"), "GET", "/status").is_some())
    });
    first.kill().expect("kill");
    first.wait().expect("reap");
    let other = run(&[
        "--cluster-id",
        "b",
        "--peers",
        "1=127.0.0.1:0",
        "--data-dir",
        data.to_str().expect("utf8"),
        "--admin-addr",
        "127.0.0.1:0",
        "--kafka-addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(other.status.code(), Some(2), "first start's log:\n{}", log_tail(&log, 40));
    assert!(String::from_utf8_lossy(&other.stderr).contains("belongs to cluster `a`, not `b`"), "{}", String::from_utf8_lossy(&other.stderr));
}

/// A child `keel`, SIGKILLed and reaped when dropped (a failing test leaks none).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `keel start` on port-0 listeners in `data` (single node).
fn start_args(data: &std::path::Path) -> Vec<String> {
    ["start", "--peers", "1=127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--kafka-addr", "127.0.0.1:0", "--data-dir"]
        .into_iter()
        .map(String::from)
        .chain([data.to_string_lossy().into_owned()])
        .collect()
}

/// Every file and directory under `dir`, relative, sorted (empty if `dir` is missing).
fn tree(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else { continue };
        for entry in entries {
            let path = entry.expect("entry").path();
            found.push(path.strip_prefix(dir).expect("below").display().to_string());
            if path.is_dir() {
                pending.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn a_second_start_on_a_data_dir_in_use_exits_2_naming_the_holders_pid_and_the_holder_keeps_serving() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let log = dir.path().join("holder.log");
    let mut holder =
        Reaped(Command::new(env!("CARGO_BIN_EXE_keel")).args(start_args(&data)).stderr(std::fs::File::create(&log).expect("log")).spawn().expect("spawn"));
    let pid = holder.0.id();
    let mut admin_port = None;
    wait_for("the holder is ready", || {
        admin_port = bound_addr(&data, pid, "admin").and_then(|a| a.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()));
        admin_port.is_some_and(|port| http(port, "GET", "/readyz").is_some_and(|(code, _)| code == 200))
    });
    let admin_port = admin_port.expect("bound");
    let before = tree(&data);

    let second_log = dir.path().join("second.log");
    let mut second = Reaped(
        Command::new(env!("CARGO_BIN_EXE_keel")).args(start_args(&data)).stderr(std::fs::File::create(&second_log).expect("log")).spawn().expect("spawn"),
    );
    let mut status = None;
    wait_for("the second start exits", || {
        status = second.0.try_wait().expect("try_wait");
        status.is_some()
    });
    let stderr = std::fs::read_to_string(&second_log).expect("second log");
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{stderr}");
    assert!(stderr.contains("in use") && stderr.contains(&format!("pid {pid}")), "the refusal names the holder's pid {pid}: {stderr}");
    assert_eq!(tree(&data), before, "the refused start changed the data dir");

    // The holder is unaffected: it still serves, and writes go through.
    let (code, body) = http(admin_port, "POST", "/topics/after-refusal?partitions=1&replication_factor=1").expect("create");
    assert_eq!(code, 201, "{body}\nholder log:\n{}", log_tail(&log, 40));
    assert!(holder.0.try_wait().expect("try_wait").is_none(), "the holder is still running");
    drop(holder);

    // The lock died with its holder (SIGKILL): the data dir opens again.
    let again = Reaped(Command::new(env!("CARGO_BIN_EXE_keel")).args(start_args(&data)).stderr(Stdio::null()).spawn().expect("spawn"));
    let again_pid = again.0.id();
    wait_for("a restart after the holder died takes the lock", || bound_addr(&data, again_pid, "admin").is_some());
}

#[test]
fn a_start_whose_port_is_taken_exits_2_and_writes_nothing_into_a_fresh_data_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Held by this test for the whole check: each start below finds it taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = taken.local_addr().expect("addr").to_string();
    for (flag, rest) in [("--kafka-addr", ["--admin-addr", "127.0.0.1:0"]), ("--admin-addr", ["--kafka-addr", "127.0.0.1:0"])] {
        let data = dir.path().join(format!("fresh{flag}"));
        let output = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["start", "--peers", "1=127.0.0.1:0", "--data-dir", data.to_str().expect("utf8"), flag, &taken])
            .args(rest)
            .output()
            .expect("run keel");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag} taken: {stderr}");
        assert!(stderr.contains(&format!("cannot listen on {flag} {taken}")), "{stderr}");
        assert!(!data.exists(), "{flag} taken: the data dir was created: {:?}", tree(&data));
    }
    // The broker-to-broker port too, and an existing empty data dir stays empty.
    let data = dir.path().join("empty");
    std::fs::create_dir(&data).expect("mkdir");
    let output = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args([
            "start",
            "--peers",
            &format!("1={taken}"),
            "--data-dir",
            data.to_str().expect("utf8"),
            "--admin-addr",
            "127.0.0.1:0",
            "--kafka-addr",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run keel");
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(tree(&data), Vec::<String>::new(), "the broker port was taken, yet the data dir was written");
}
