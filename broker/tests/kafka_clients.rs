//! Unchanged Kafka clients against real `keel` processes: kcat (librdkafka),
//! confluent-kafka and kafka-python (broker/tests/clients/kafka_clients.py),
//! against one node and against three; and raw frames a client should never
//! send, which get Kafka error codes while the broker keeps serving.
//! ci/test.sh installs the clients.

#[path = "support/admin_client.rs"]
mod admin_client;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/kafka_wire.rs"]
mod kafka_wire;
#[allow(dead_code, reason = "the operations tests use the rest of this support module")]
#[path = "support/process.rs"]
mod process;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use cluster::{start_settled, Node};
use kafka_wire::{header, read_response, send_frame};

fn bootstrap(nodes: &[Node]) -> String {
    nodes.iter().map(|n| format!("127.0.0.1:{}", n.kafka_port)).collect::<Vec<_>>().join(",")
}

fn run(program: &str, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}); ci/test.sh installs it"));
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let output = child.wait_with_output().expect("wait");
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// kcat produces lines with acks=all (the topic is auto-created) and reads them back.
fn kcat_round_trip(bootstrap: &str, topic: &str) {
    let lines: Vec<String> = (0..500).map(|i| format!("kcat-record-{i}")).collect();
    let input = lines.join("\n") + "\n";
    let (ok, _, stderr) = run("kcat", &["-b", bootstrap, "-P", "-t", topic, "-X", "acks=all"], &input);
    assert!(ok, "kcat produce failed: {stderr}");
    let (ok, stdout, stderr) = run("kcat", &["-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q"], "");
    assert!(ok, "kcat consume failed: {stderr}");
    let read: Vec<&str> = stdout.lines().collect();
    assert_eq!(read, lines.iter().map(String::as_str).collect::<Vec<_>>(), "kcat read back something else");
}

fn python_clients(bootstrap: &str, topic_prefix: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/kafka_clients.py");
    let python = std::env::var("KEEL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    for client in ["confluent", "confluent-group", "kafka-python"] {
        let topic = format!("{topic_prefix}-{client}");
        let (ok, stdout, stderr) = run(&python, &[script, client, bootstrap, &topic, "2000"], "");
        assert!(ok, "{client} failed:\n{stdout}\n{stderr}");
    }
}

#[test]
fn kcat_confluent_kafka_and_kafka_python_produce_and_consume_on_one_node() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nodes = start_settled(dir.path(), 1, &[]);
    let bootstrap = bootstrap(&nodes);
    kcat_round_trip(&bootstrap, "kcat-single");
    python_clients(&bootstrap, "single");
}

/// Against `keel dev --nodes 3` (replication factor 3, min.insync.replicas 2).
#[test]
fn kcat_confluent_kafka_and_kafka_python_produce_and_consume_on_keel_dev_three_nodes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut dev = process::start_dev(dir.path(), &[]);
    cluster::wait_for("every keel dev node settled", || {
        admin_client::cluster_settled(&dev.admin_ports.iter().map(|port| admin_client::http(*port, "GET", "/status").map(|(_, body)| body)).collect::<Vec<_>>())
    });
    kcat_round_trip(&dev.bootstrap, "kcat-three");
    python_clients(&dev.bootstrap, "three");
    dev.keel.signal(libc::SIGTERM);
    assert_eq!(dev.keel.wait_exit().code(), Some(0), "keel dev stops cleanly: {}", process::stderr_of(dir.path()));
}

/// A script that creates a topic the moment `keel start`'s Kafka port
/// accepts a connection gets it created. Answered before the node was ready,
/// librdkafka's AdminClient saw a Metadata response with no brokers and no
/// controller and waited for a controller until its 40 s timeout.
#[test]
fn a_topic_created_as_soon_as_the_kafka_port_accepts_is_created() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/create_at_once.py");
    let python = std::env::var("KEEL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    // The client first (it waits for the port), so it connects at the first moment it can.
    let client = Command::new(&python)
        .args([script, data.to_str().expect("utf8"), "created-at-once"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python} ({e}); ci/test.sh installs confluent-kafka"));
    let args = ["start", "--data-dir", data.to_str().expect("utf8"), "--peers", "1=127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--kafka-addr", "127.0.0.1:0"];
    let _keel = process::Keel::spawn(dir.path(), &args, &[], &dir.path().join("stderr.log"));
    let output = client.wait_with_output().expect("wait for the client");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the create sent at once failed:\n{stdout}\n{stderr}");
    assert!(process::stderr_of(dir.path()).contains("CreateTopics"), "the broker logged the create");
}

/// (correlation id, first i16 after it): the error code for ApiVersions and the bare error answers.
fn id_and_code(body: &[u8]) -> (i32, i16) {
    (i32::from_be_bytes(body[0..4].try_into().expect("4")), i16::from_be_bytes(body[4..6].try_into().expect("2")))
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    stream
}

#[test]
fn bad_frames_get_kafka_error_codes_and_the_broker_keeps_serving() {
    use keel_error_codes::{INVALID_REQUEST, MESSAGE_TOO_LARGE, NONE, UNSUPPORTED_VERSION};
    let dir = tempfile::tempdir().expect("temp dir");
    let nodes = start_settled(dir.path(), 1, &["--socket-request-max-bytes", "65536"]);
    let port = nodes[0].kafka_port;
    let mut stream = connect(port);

    // An unknown API key and an unsupported version: answered, connection kept.
    send_frame(&mut stream, &header(999, 0, 1));
    assert_eq!(id_and_code(&read_response(&mut stream)), (1, UNSUPPORTED_VERSION));
    send_frame(&mut stream, &header(1, 99, 2));
    assert_eq!(id_and_code(&read_response(&mut stream)), (2, UNSUPPORTED_VERSION));
    // An ApiVersions of a version from the future gets a v0 answer listing what is served.
    send_frame(&mut stream, &header(18, 99, 3));
    let answer = read_response(&mut stream);
    assert_eq!(id_and_code(&answer), (3, UNSUPPORTED_VERSION));
    assert!(answer.len() > 10, "the v0 answer lists the served APIs");
    // A Metadata request whose body is cut short: INVALID_REQUEST.
    let mut metadata = header(3, 1, 4);
    metadata.extend_from_slice(&[0, 0, 0, 9, 0]);
    send_frame(&mut stream, &metadata);
    assert_eq!(id_and_code(&read_response(&mut stream)), (4, INVALID_REQUEST));
    // A tiny Metadata v0 that claims 2^31-1 topics: refused before the
    // decoder would reserve memory for them (crates/kafka/src/guard.rs).
    let mut huge_count = header(3, 0, 40);
    huge_count.extend_from_slice(&i32::MAX.to_be_bytes());
    send_frame(&mut stream, &huge_count);
    assert_eq!(id_and_code(&read_response(&mut stream)), (40, INVALID_REQUEST));
    // A frame over --socket-request-max-bytes is skipped whole and refused.
    let mut oversized = header(0, 9, 5);
    oversized.resize(100_000, 7);
    send_frame(&mut stream, &oversized);
    assert_eq!(id_and_code(&read_response(&mut stream)), (5, MESSAGE_TOO_LARGE));
    // The same connection still serves a well-formed request.
    send_frame(&mut stream, &header(18, 0, 6));
    assert_eq!(id_and_code(&read_response(&mut stream)), (6, NONE));

    // A negative size loses the frame boundary: that connection is closed ...
    let mut lost = connect(port);
    lost.write_all(&(-7i32).to_be_bytes()).expect("send");
    let mut byte = [0u8; 1];
    assert_eq!(lost.read(&mut byte).expect("read after close"), 0, "closed without an answer");
    // ... and a frame too short for a header is closed as well.
    let mut short = connect(port);
    send_frame(&mut short, &[0, 18]);
    assert_eq!(short.read(&mut byte).expect("read after close"), 0, "closed without an answer");

    // Every other client is still served: kcat round trip on a fresh topic.
    kcat_round_trip(&format!("127.0.0.1:{port}"), "after-bad-frames");
}
