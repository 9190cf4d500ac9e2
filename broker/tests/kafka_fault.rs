//! A real-process fault test of the Kafka path: three `keel` processes, an
//! idempotent confluent-kafka producer sending 20,000 acks=all records
//! (broker/tests/clients/fault_producer.py), and a SIGKILL of a partition
//! leader halfway, restarted a moment later. Every acknowledged record must
//! be read back exactly once, in order per partition.

#[path = "support/admin_client.rs"]
mod admin_client;
#[path = "support/cluster.rs"]
mod cluster;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use cluster::{partition_leader, start_settled, wait_for};

const TOPIC: &str = "fault-orders";
const RECORDS: &str = "20000";

#[test]
fn idempotent_acks_all_records_survive_a_sigkilled_partition_leader_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut nodes = start_settled(dir.path(), 3, &["--default-replication-factor", "3", "--replica-lag-time-max-ms", "2000"]);
    let bootstrap = nodes.iter().map(|n| format!("127.0.0.1:{}", n.kafka_port)).collect::<Vec<_>>().join(",");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/fault_producer.py");
    let python = std::env::var("KEEL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut producer = Command::new(python)
        .args([script, &bootstrap, TOPIC, "3", RECORDS])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run python3; ci/test.sh installs confluent-kafka");
    let mut stdout = BufReader::new(producer.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read the producer's progress");
    assert_eq!(line.trim(), "HALFWAY", "the producer stopped before halfway");

    let mut leader = None;
    wait_for("partition 0 has a leader", || {
        leader = partition_leader(&nodes[0], TOPIC).map(|(id, _)| id);
        leader.is_some()
    });
    let victim = &mut nodes[leader.expect("leader") as usize - 1];
    victim.kill();
    std::thread::sleep(std::time::Duration::from_secs(3));
    victim.start();

    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("read the producer's verdict");
    let mut stderr = String::new();
    producer.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read stderr");
    let status = producer.wait().expect("wait for the producer");
    assert!(status.success(), "the producer's check failed:\n{rest}\n{stderr}");
    println!("{}", rest.trim());
}
