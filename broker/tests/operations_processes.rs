//! Operating the `keel` binary as a process on 127.0.0.1 on ports it binds
//! itself (port 0, read back from `listeners.json`):
//! /healthz, /readyz and /metrics; `--config` files and their precedence;
//! SIGTERM draining; `keel dev`. (Waits are liveness bounds, generous for a
//! loaded machine, not timings.)

#[path = "support/admin_client.rs"]
mod admin_client;
#[path = "support/kafka_wire.rs"]
mod kafka_wire;
#[path = "support/process.rs"]
mod process;

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use admin_client::{cluster_settled, http, http_with_body, json_field};
use kafka_wire::{header, read_response, send_frame};
use keel_error_codes::{NOT_ENOUGH_REPLICAS, UNSUPPORTED_VERSION};
use process::{parse_prometheus, pid_alive, signal_pid, start_dev, stderr_of, Bound, Keel, WAIT};

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while started.elapsed() < WAIT {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not reached within {WAIT:?}");
}

fn ready(admin_port: u16) -> bool {
    http(admin_port, "GET", "/readyz").is_some_and(|(code, _)| code == 200)
}

/// A single-node `keel start` in `dir` (data in `dir/data`) on ports it
/// binds itself; more voters in `peers_after` (ids 2.. at addresses nobody
/// answers on) when a test needs a node without a quorum.
fn start_single(dir: &Path, peers_after: &str, extra: &[&str]) -> (Keel, Bound) {
    let data = dir.join("data");
    let peers = format!("1=127.0.0.1:0{peers_after}");
    let mut args: Vec<String> = vec!["start".into(), "--data-dir".into(), data.to_string_lossy().into_owned()];
    args.extend(["--admin-addr", "127.0.0.1:0", "--kafka-addr", "127.0.0.1:0", "--peers", &peers].map(String::from));
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut keel = Keel::spawn(dir, &args, &[], &dir.join("stderr.log"));
    let bound = keel.bound(&data);
    (keel, bound)
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    stream
}

/// A Fetch v4 of one partition from offset 0 that the broker holds up to `max_wait_ms`.
fn fetch_v4(correlation_id: i32, topic: &str, max_wait_ms: i32) -> Vec<u8> {
    let mut out = header(1, 4, correlation_id);
    out.extend_from_slice(&(-1i32).to_be_bytes()); // replica id: a consumer
    out.extend_from_slice(&max_wait_ms.to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes()); // min bytes
    out.extend_from_slice(&(1i32 << 20).to_be_bytes()); // max bytes
    out.push(0); // isolation level
    out.extend_from_slice(&1i32.to_be_bytes()); // one topic
    out.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(&1i32.to_be_bytes()); // one partition
    out.extend_from_slice(&0i32.to_be_bytes()); // partition 0
    out.extend_from_slice(&0i64.to_be_bytes()); // fetch offset
    out.extend_from_slice(&(1i32 << 20).to_be_bytes()); // partition max bytes
    out
}

fn create_topic(admin_port: u16, name: &str) {
    let (code, body) = http(admin_port, "POST", &format!("/topics/{name}?partitions=1&replication_factor=1")).expect("create");
    assert_eq!(code, 201, "{body}");
    wait_for("the partition has its replica on this node", || {
        http(admin_port, "GET", "/replicas").is_some_and(|(_, body)| body.contains(&format!("\"topic\":\"{name}\"")) && body.contains("\"role\":\"leader\""))
    });
}

#[test]
fn healthz_readyz_and_metrics_report_raft_partitions_and_kafka_requests() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut keel, ports) = start_single(dir.path(), "", &[]);
    wait_for("/healthz answers", || http(ports.admin, "GET", "/healthz").is_some_and(|(code, _)| code == 200));
    wait_for("/readyz says ready", || ready(ports.admin));
    let (_, readyz) = http(ports.admin, "GET", "/readyz").expect("readyz");
    assert_eq!(json_field(&readyz, "ready").as_deref(), Some("true"), "{readyz}");

    create_topic(ports.admin, "metered");
    let (code, body) = http_with_body(ports.admin, "POST", "/produce/metered/0?acks=all", "one\ntwo\nthree").expect("produce");
    assert_eq!(code, 200, "{body}");

    // Kafka requests: two ApiVersions, and a Fetch of a version nobody serves.
    let mut stream = connect(ports.kafka);
    send_frame(&mut stream, &header(18, 0, 1));
    send_frame(&mut stream, &header(18, 0, 2));
    send_frame(&mut stream, &header(1, 99, 3));
    for _ in 0..3 {
        read_response(&mut stream);
    }
    drop(stream);

    let mut page = None;
    // The request is counted once its response is written: wait until it is.
    wait_for("the unsupported Fetch is counted", || {
        let Some((code, text)) = http(ports.admin, "GET", "/metrics") else { return false };
        assert_eq!(code, 200, "{text}");
        let parsed = parse_prometheus(&text);
        let counted =
            parsed.value("keel_kafka_request_errors_total", &[("api", "Fetch"), ("error_code", UNSUPPORTED_VERSION.to_string().as_str())]) == Some(1.0);
        page = Some(parsed);
        counted
    });
    let page = page.expect("a page");
    let partition = [("topic", "metered"), ("partition", "0")];
    assert_eq!(page.value("keel_partition_high_watermark", &partition), Some(3.0));
    assert_eq!(page.value("keel_partition_log_end_offset", &partition), Some(3.0));
    assert_eq!(page.value("keel_partition_isr_size", &partition), Some(1.0));
    assert_eq!(page.value("keel_partition_is_leader", &partition), Some(1.0));
    assert_eq!(page.value("keel_raft_leader_id", &[]), Some(1.0));
    assert_eq!(page.value("keel_raft_is_leader", &[]), Some(1.0));
    assert_eq!(page.value("keel_node_ready", &[]), Some(1.0));
    let term = page.value("keel_raft_term", &[]).expect("term");
    let commit = page.value("keel_raft_commit_index", &[]).expect("commit index");
    let applied = page.value("keel_raft_applied_index", &[]).expect("applied index");
    assert!(term >= 1.0 && applied >= 1.0 && commit >= applied, "term {term}, commit {commit}, applied {applied}");
    let api_versions = [("api", "ApiVersions"), ("api_key", "18")];
    assert_eq!(page.value("keel_kafka_requests_total", &api_versions), Some(2.0));
    assert_eq!(page.value("keel_kafka_request_duration_seconds_count", &api_versions), Some(2.0));
    assert_eq!(page.value("keel_kafka_request_duration_seconds_bucket", &[("api", "ApiVersions"), ("le", "+Inf")]), Some(2.0));
    assert_eq!(page.types.get("keel_kafka_request_duration_seconds").map(String::as_str), Some("histogram"));
    assert_eq!(page.types.get("keel_kafka_requests_total").map(String::as_str), Some("counter"));
    assert_eq!(page.value("keel_kafka_connections_accepted_total", &[]), Some(1.0));

    keel.signal(libc::SIGTERM);
    assert_eq!(keel.wait_exit().code(), Some(0), "{}", stderr_of(dir.path()));
}

/// min.insync.replicas 2 on one node: a topic of one replica is created with
/// a warning, and every acks=all produce to it is refused NOT_ENOUGH_REPLICAS.
/// kcat retries the refusal until its message timeout: the refusals are
/// counted on /metrics per partition and code, and logged once.
#[test]
fn produce_refusals_are_counted_per_partition_on_metrics_and_logged_once_and_a_topic_below_min_insync_is_warned_about() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut keel, ports) = start_single(dir.path(), "", &["--min-insync-replicas", "2"]);
    wait_for("/readyz says ready", || ready(ports.admin));
    create_topic(ports.admin, "short");
    let bootstrap = format!("127.0.0.1:{}", ports.kafka);
    let kcat = std::process::Command::new("kcat")
        .args(["-b", &bootstrap, "-P", "-t", "short", "-p", "0", "-X", "acks=all", "-X", "message.timeout.ms=3000", "-X", "retry.backoff.ms=50"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let mut kcat = kcat.expect("kcat runs (ci/test.sh installs it)");
    {
        use std::io::Write as _;
        let mut stdin = kcat.stdin.take().expect("piped stdin");
        stdin.write_all(b"refused\n").expect("kcat stdin");
    }
    kcat.wait().expect("kcat exits once its message timed out");

    let not_enough_replicas = NOT_ENOUGH_REPLICAS.to_string();
    let refused = [("topic", "short"), ("partition", "0"), ("error_code", not_enough_replicas.as_str()), ("error", "NotEnoughReplicas")];
    let mut refusals = None;
    wait_for("the refused produce is counted", || {
        let Some((code, text)) = http(ports.admin, "GET", "/metrics") else { return false };
        assert_eq!(code, 200, "{text}");
        let page = parse_prometheus(&text);
        assert_eq!(page.types.get("keel_kafka_produce_refusals_total").map(String::as_str), Some("counter"));
        refusals = page.value("keel_kafka_produce_refusals_total", &refused);
        refusals.is_some()
    });
    let refusals = refusals.expect("counted");
    keel.signal(libc::SIGTERM);
    assert_eq!(keel.wait_exit().code(), Some(0), "{}", stderr_of(dir.path()));

    let stderr = stderr_of(dir.path());
    let warned = stderr.lines().filter(|l| l.contains(" WARN ") && l.contains("topic created with a replication factor below its min.insync.replicas")).count();
    assert_eq!(warned, 1, "one warning for the one create: {stderr}");
    let logged: Vec<&str> = stderr.lines().filter(|l| l.contains("produce refused: ISR below min.insync.replicas")).collect();
    assert_eq!(logged.len(), 1, "{refusals} refusals in one state, logged once: {stderr}");
    assert!(
        logged[0].contains(" INFO ") && logged[0].contains("topic=short") && logged[0].contains(&format!("error_code={NOT_ENOUGH_REPLICAS}")),
        "{}",
        logged[0]
    );
}

#[test]
fn a_node_without_a_metadata_quorum_is_healthy_but_not_ready_and_says_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Voter 2 never starts: no quorum, so no leader is ever elected. Its
    // address is a listener this test holds and never serves.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let (mut keel, ports) = start_single(dir.path(), &format!(",2={}", silent.local_addr().expect("addr")), &[]);
    wait_for("/healthz answers", || http(ports.admin, "GET", "/healthz").is_some_and(|(code, _)| code == 200));
    let (code, body) = http(ports.admin, "GET", "/readyz").expect("readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"ready\":false") && body.contains("no metadata Raft leader is known") && body.contains("not registered"), "{body}");
    let (_, metrics) = http(ports.admin, "GET", "/metrics").expect("metrics");
    let page = parse_prometheus(&metrics);
    assert_eq!(page.value("keel_node_ready", &[]), Some(0.0));
    assert_eq!(page.value("keel_raft_leader_id", &[]), Some(0.0));
    keel.signal(libc::SIGTERM);
    assert_eq!(keel.wait_exit().code(), Some(0), "{}", stderr_of(dir.path()));
}

#[test]
fn sigterm_answers_the_fetch_in_flight_refuses_new_connections_and_exits_0() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut keel, ports) = start_single(dir.path(), "", &["--drain-timeout-ms", "30000"]);
    wait_for("ready", || ready(ports.admin));
    create_topic(ports.admin, "drained");
    let (code, body) = http_with_body(ports.admin, "POST", "/produce/drained/0?acks=1", "before-sigterm").expect("produce");
    assert_eq!(code, 200, "{body}");

    // A long-poll Fetch past the end: the broker holds it for up to 5 s.
    let mut idle = connect(ports.kafka);
    let mut fetching = connect(ports.kafka);
    let mut fetch = fetch_v4(41, "drained", 5_000);
    // Fetch from offset 1 (past the one record), so the broker waits.
    let offset_at = fetch.len() - 12;
    fetch[offset_at..offset_at + 8].copy_from_slice(&1i64.to_be_bytes());
    send_frame(&mut fetching, &fetch);
    wait_for("the Fetch is in flight", || {
        http(ports.admin, "GET", "/metrics").is_some_and(|(_, text)| parse_prometheus(&text).value("keel_kafka_requests_in_flight", &[]) == Some(1.0))
    });

    keel.signal(libc::SIGTERM);
    // New connections are refused once the listener stopped accepting ...
    wait_for("the Kafka listener refuses new connections", || TcpStream::connect(("127.0.0.1", ports.kafka)).is_err());
    // ... an idle connection is closed without an answer ...
    let mut byte = [0u8; 1];
    assert_eq!(idle.read(&mut byte).expect("read after close"), 0, "the idle connection is closed");
    // ... and the Fetch in flight is answered, then its connection closed.
    let response = read_response(&mut fetching);
    assert_eq!(i32::from_be_bytes(response[0..4].try_into().expect("4")), 41, "the answer to the Fetch in flight");
    assert_eq!(fetching.read(&mut byte).expect("read after close"), 0, "closed after the answer");
    let status = keel.wait_exit();
    let stderr = stderr_of(dir.path());
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("replication loop stopped; every partition log is flushed") && stderr.contains("stopped cleanly"), "{stderr}");

    // The acks=1 record is on disk: a restart serves it.
    let (mut again, ports) = start_single(dir.path(), "", &[]);
    wait_for("ready after restart", || ready(ports.admin));
    wait_for("the record survived", || {
        http(ports.admin, "GET", "/records/drained/0?offset=0&upto=log_end").is_some_and(|(_, body)| body.contains("before-sigterm"))
    });
    again.signal(libc::SIGTERM);
    assert_eq!(again.wait_exit().code(), Some(0));
}

#[test]
fn config_file_values_lose_to_keel_env_which_loses_to_flags() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("keel.toml");
    std::fs::write(&file, "node_id = 7\ncluster_id = \"from-file\"\ndata_dir = \"file-data\"\nnum_partitions = 4\nlog_format = \"json\"\n").expect("write");
    let print = |env: &[(&str, &str)], flags: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["start", "--config", file.to_str().expect("utf8"), "--print-config"])
            .args(flags)
            .envs(env.iter().copied())
            .output()
            .expect("run keel");
        assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).expect("utf8")
    };
    let file_only = print(&[], &[]);
    for line in [
        "node_id = 7",
        "cluster_id = \"from-file\"",
        "data_dir = \"file-data\"",
        "num_partitions = 4",
        "log_format = \"json\"",
        "kafka_addr = \"127.0.0.1:9092\"",
    ] {
        assert!(file_only.contains(line), "`{line}` in:\n{file_only}");
    }
    let env_over_file = print(&[("KEEL_CLUSTER_ID", "from-env"), ("KEEL_NUM_PARTITIONS", "5")], &[]);
    assert!(env_over_file.contains("cluster_id = \"from-env\"") && env_over_file.contains("num_partitions = 5"), "{env_over_file}");
    assert!(env_over_file.contains("node_id = 7"), "the file still fills what env does not set: {env_over_file}");
    let flag_over_env = print(&[("KEEL_CLUSTER_ID", "from-env")], &["--cluster-id", "from-flag", "--log-format", "text"]);
    assert!(flag_over_env.contains("cluster_id = \"from-flag\"") && flag_over_env.contains("log_format = \"text\""), "{flag_over_env}");

    // The file is honoured by a real start: its node id, ports and data dir.
    let data = dir.path().join("from-file-data");
    std::fs::write(
        &file,
        format!("node_id = 3\npeers = \"3=127.0.0.1:0\"\nadmin_addr = \"127.0.0.1:0\"\nkafka_addr = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n", data.display()),
    )
    .expect("write");
    let mut keel = Keel::spawn(dir.path(), &["start", "--config", file.to_str().expect("utf8")], &[], &dir.path().join("stderr.log"));
    let ports = keel.bound(&data);
    wait_for("the node from the file is ready", || ready(ports.admin));
    let (_, status) = http(ports.admin, "GET", "/status").expect("status");
    assert_eq!(json_field(&status, "node_id").as_deref(), Some("3"), "{status}");
    assert!(data.join("meta").is_dir(), "the file's data dir is used");
    keel.signal(libc::SIGTERM);
    assert_eq!(keel.wait_exit().code(), Some(0), "{}", stderr_of(dir.path()));
}

#[test]
fn an_unknown_config_key_exits_2_naming_it_and_the_valid_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("keel.toml");
    std::fs::write(&file, "node_id = 1\nlog_retention_hours = 168\n").expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keel")).args(["start", "--config", file.to_str().expect("utf8")]).output().expect("run keel");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown key `log_retention_hours`") && stderr.contains("valid keys: node_id, peers, data_dir"), "{stderr}");

    std::fs::write(&file, "data-dir = \"x\"\n").expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keel")).args(["start", "--config", file.to_str().expect("utf8")]).output().expect("run keel");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("write `data_dir`"));

    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_keel")).args(["start", "--config", "/nonexistent/keel.toml"]).output().expect("run keel");
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read --config /nonexistent/keel.toml"));
}

#[test]
fn the_example_config_file_is_accepted_as_is() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("keel.example.toml");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["start", "--config", example.to_str().expect("utf8"), "--print-config"])
        .output()
        .expect("run keel");
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let defaults = std::process::Command::new(env!("CARGO_BIN_EXE_keel")).args(["start", "--print-config"]).output().expect("run keel");
    assert_eq!(output.stdout, defaults.stdout, "the example spells out the built-in defaults");
}

#[test]
fn keel_start_with_no_arguments_serves_kafka_on_9092_admin_on_8080_with_data_in_keel_data() {
    let busy = [9092u16, 8080, 19091].into_iter().filter(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_err()).collect::<Vec<_>>();
    if !busy.is_empty() {
        eprintln!("skipped: the default ports {busy:?} are in use on this machine");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut keel = Keel::spawn(dir.path(), &["start"], &[], &dir.path().join("stderr.log"));
    wait_for("ready on the default admin port", || ready(8080));
    let mut stream = connect(9092);
    send_frame(&mut stream, &header(18, 0, 9));
    assert_eq!(&read_response(&mut stream)[0..6], &[0, 0, 0, 9, 0, 0], "ApiVersions answered without error");
    assert!(dir.path().join("keel-data").join("meta").is_dir(), "data in ./keel-data");
    keel.signal(libc::SIGTERM);
    assert_eq!(keel.wait_exit().code(), Some(0), "{}", stderr_of(dir.path()));
}

/// `keel dev` on free port runs; returns it and the admin ports of its nodes.
#[test]
fn keel_dev_starts_three_nodes_that_become_ready_and_sigterm_stops_them_all_with_exit_0() {
    let dir = tempfile::tempdir().expect("temp dir");
    let process::DevCluster { keel: mut dev, admin_ports, pids, stdout: _stdout, .. } = start_dev(dir.path(), &[]);
    for port in &admin_ports {
        wait_for(&format!("node on admin port {port} ready"), || ready(*port));
    }
    wait_for("every node applied every registration", || {
        cluster_settled(&admin_ports.iter().map(|port| http(*port, "GET", "/status").map(|(_, body)| body)).collect::<Vec<_>>())
    });
    // One cluster: every node knows all three brokers, and auto-created
    // topics get three replicas with min.insync.replicas 2.
    let (code, body) = http(admin_ports[0], "POST", "/topics/dev-check?partitions=1&replication_factor=3").expect("create");
    assert_eq!(code, 201, "{body}");
    for node in 1..=3 {
        assert!(dir.path().join("cluster").join(format!("node-{node}")).join("meta").is_dir(), "node-{node} data dir");
    }
    dev.signal(libc::SIGTERM);
    let status = dev.wait_exit();
    let stderr = stderr_of(dir.path());
    assert_eq!(status.code(), Some(0), "{stderr}");
    // Each node's log lines carry its node id in front.
    for node in 1..=3 {
        let started = stderr.lines().filter(|l| l.contains("keel node started")).filter(|l| l.starts_with(&format!("[node {node}] "))).count();
        assert_eq!(started, 1, "node {node}'s start line, prefixed: {stderr}");
    }
    for pid in pids {
        assert!(!pid_alive(pid), "node pid {pid} is gone");
    }
    for port in admin_ports {
        assert!(http(port, "GET", "/healthz").is_none(), "admin port {port} no longer answers");
    }
}

#[test]
fn keel_dev_reports_a_node_that_dies_stops_the_others_and_exits_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let process::DevCluster { keel: mut dev, admin_ports, pids, stdout: _stdout, .. } = start_dev(dir.path(), &[]);
    wait_for("node 2 answers", || http(admin_ports[1], "GET", "/healthz").is_some());
    signal_pid(pids[1], libc::SIGKILL);
    let status = dev.wait_exit();
    let stderr = stderr_of(dir.path());
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("node 2") && stderr.contains("exited unexpectedly") && stderr.contains("stopping the others"), "{stderr}");
    for pid in [pids[0], pids[2]] {
        assert!(!pid_alive(pid), "node pid {pid} was stopped");
    }
}

#[test]
fn log_format_json_writes_one_json_object_per_line_at_info_by_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = ["start", "--data-dir", "data", "--admin-addr", "127.0.0.1:0", "--kafka-addr", "127.0.0.1:0", "--peers", "1=127.0.0.1:0"];
    // No RUST_LOG: the level is info.
    let mut keel = Keel::spawn(dir.path(), &args, &[("KEEL_LOG_FORMAT", "json"), ("RUST_LOG", "")], &dir.path().join("stderr.log"));
    let ports = keel.bound(&dir.path().join("data"));
    wait_for("ready", || ready(ports.admin));
    keel.signal(libc::SIGTERM);
    assert_eq!(keel.wait_exit().code(), Some(0));
    let stderr = stderr_of(dir.path());
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.iter().any(|l| l.contains("\"message\":\"keel node started\"")), "{stderr}");
    assert!(lines.iter().any(|l| l.contains("\"message\":\"stopped cleanly\"")), "{stderr}");
    for line in lines {
        assert!(line.starts_with('{') && line.ends_with('}') && line.contains("\"timestamp\":"), "not a JSON log line: {line}");
        assert!(!line.contains("\"level\":\"DEBUG\"") && !line.contains("\"level\":\"TRACE\""), "debug output at the default level: {line}");
    }
}

#[test]
fn keel_prints_the_node_defaults_every_simulated_node_starts_from() {
    // keel-sim's `config` prints NodeConfig's defaults with a scenario's
    // [node] table over them (sim/tests/cli.rs checks that it differs in
    // nothing else); keel prints the same defaults under the same keys.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keel")).args(["start", "--print-config"]).output().expect("run keel");
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: toml::Table = String::from_utf8(output.stdout).expect("utf8").parse().expect("keel prints TOML");
    let defaults: toml::Table = keel_node::NodeConfig::default().to_toml().parse().expect("the defaults print as TOML");
    for (key, value) in &defaults {
        assert_eq!(printed.get(key), Some(value), "keel's `{key}`");
    }
}
