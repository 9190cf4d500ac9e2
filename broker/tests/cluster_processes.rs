//! Three real `keel` processes on 127.0.0.1 form a metadata cluster; the Raft
//! leader is SIGKILLed; a new leader is elected, a topic created afterwards
//! is visible on every node, including the killed one after its restart.
//! (Waits are liveness bounds, generous for a loaded machine, not timings.)

#[path = "support/admin_client.rs"]
mod admin_client;
#[path = "support/cluster.rs"]
mod cluster;
use admin_client::{free_port, http};
use cluster::{leader_of, wait_for, Node};

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
    let admin_port = free_port();
    let mut node = Node {
        id: 1,
        admin_port,
        kafka_port: free_port(),
        child: None,
        data_dir: dir.path().join("node-1"),
        peers: format!("1=127.0.0.1:{}", free_port()),
        extra_args: Vec::new(),
    };
    node.start();
    // Send the create as soon as the admin endpoint answers, before any election.
    wait_for("admin endpoint up", || http(admin_port, "GET", "/status").is_some());
    let (code, body) = http(admin_port, "POST", "/topics/early?partitions=2").expect("create");
    assert_eq!(code, 201, "{body}");
}

#[test]
fn bad_configuration_is_refused_with_status_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_keel")).arg("start").args(args).output().expect("run keel")
    };
    let not_a_peer = run(&["--node-id", "4", "--peers", "1=127.0.0.1:1,2=127.0.0.1:2"]);
    assert_eq!(not_a_peer.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&not_a_peer.stderr).contains("--node-id 4 is not in --peers"));
    let duplicate = run(&["--peers", "1=127.0.0.1:1,1=127.0.0.1:2"]);
    assert_eq!(duplicate.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("appears twice"));

    // A data dir from another cluster: create it as cluster a, then start as b.
    let data = dir.path().join("data");
    let port = free_port();
    let admin = free_port();
    let mut first = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["start", "--cluster-id", "a", "--peers", &format!("1=127.0.0.1:{port}")])
        .args(["--data-dir", data.to_str().expect("utf8"), "--admin-addr", &format!("127.0.0.1:{admin}")])
        .args(["--kafka-addr", &format!("127.0.0.1:{}", free_port())])
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    wait_for("first start created its data dir", || http(admin, "GET", "/status").is_some());
    first.kill().expect("kill");
    first.wait().expect("reap");
    let other = run(&["--cluster-id", "b", "--peers", &format!("1=127.0.0.1:{port}"), "--data-dir", data.to_str().expect("utf8"), "--admin-addr", "127.0.0.1:0", "--kafka-addr", &format!("127.0.0.1:{}", free_port())]);
    assert_eq!(other.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&other.stderr).contains("belongs to cluster `a`, not `b`"), "{}", String::from_utf8_lossy(&other.stderr));
}
