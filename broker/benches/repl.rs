//! Replication benchmark (not a test): `ci/bench.sh repl`.
//!
//! A real 3-process loopback cluster (`keel start`), one partition with
//! replication factor 3 and min.insync.replicas 2, produced to through the
//! admin path (one HTTP request per batch of 100-byte records), so it measures
//! replication without the Kafka front (`ci/kafka-loadgen` measures that
//! path). For acks=all and acks=1: records/s and
//! MB/s with several concurrent producers, and p50/p99 batch latency, both
//! under that load and for one producer sending small batches.

#[path = "../tests/support/admin_client.rs"]
mod admin_client;
#[path = "../tests/support/cluster.rs"]
mod cluster;
use admin_client::{http, http_with_body, json_field};

use std::time::{Duration, Instant};

const RECORD_BYTES: usize = 100;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One batch body: `records` lines of `RECORD_BYTES` bytes each (newline included).
fn batch_body(records: usize) -> String {
    let line = "r".repeat(RECORD_BYTES - 1);
    vec![line; records].join("\n")
}

struct Run {
    records: u64,
    elapsed: Duration,
    latency_us: hdrhistogram::Histogram<u64>,
}

/// `producers` threads send batches of `batch_records` to `port` for `seconds`.
fn run(port: u16, acks: &str, producers: usize, batch_records: usize, seconds: u64) -> Run {
    let body = batch_body(batch_records);
    let path = format!("/produce/bench/0?acks={acks}&timeout_ms=10000");
    let started = Instant::now();
    let threads: Vec<_> = (0..producers)
        .map(|_| {
            let (body, path) = (body.clone(), path.clone());
            std::thread::spawn(move || {
                let mut latency_us = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
                let mut records = 0u64;
                while started.elapsed() < Duration::from_secs(seconds) {
                    let sent = Instant::now();
                    let (code, answer) = http_with_body(port, "POST", &path, &body).expect("produce answered");
                    assert_eq!(code, 200, "produce: {answer}");
                    latency_us.record(sent.elapsed().as_micros() as u64).expect("record");
                    records += batch_records as u64;
                }
                (records, latency_us)
            })
        })
        .collect();
    let mut total = Run { records: 0, elapsed: Duration::ZERO, latency_us: hdrhistogram::Histogram::new(3).expect("histogram") };
    for thread in threads {
        let (records, latency_us) = thread.join().expect("producer");
        total.records += records;
        total.latency_us.add(latency_us).expect("merge");
    }
    total.elapsed = started.elapsed();
    total
}

fn report(what: &str, run: &Run) {
    let seconds = run.elapsed.as_secs_f64();
    println!(
        "{what}: {:.0} records/s, {:.1} MB/s, batch latency p50 {:.2} ms p99 {:.2} ms ({} records in {:.1} s)",
        run.records as f64 / seconds,
        run.records as f64 * RECORD_BYTES as f64 / seconds / 1e6,
        run.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
        run.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
        run.records,
        seconds
    );
}

fn main() {
    let seconds = env_or("KEEL_BENCH_SECONDS", 5);
    let producers = env_or("KEEL_BENCH_PRODUCERS", 8) as usize;
    let batch_records = env_or("KEEL_BENCH_BATCH_RECORDS", 1000) as usize;
    let dir = cluster::bench_temp_dir();
    let nodes = cluster::start_settled(dir.path(), 3, &[]);
    let (code, body) = http(nodes[0].admin_port, "POST", "/topics/bench?partitions=1&replication_factor=3&min_insync_replicas=2").expect("create");
    assert_eq!(code, 201, "create: {body}");
    let mut leader_port = None;
    cluster::wait_for("the partition leader takes acks=all produces", || {
        let leader = http(nodes[0].admin_port, "GET", "/topics").and_then(|(_, body)| json_field(&body, "leader")?.parse::<usize>().ok());
        leader_port = leader.map(|id| nodes[id - 1].admin_port);
        leader_port.is_some_and(|port| http_with_body(port, "POST", "/produce/bench/0?acks=all", "warm-up").is_some_and(|(code, _)| code == 200))
    });
    let port = leader_port.expect("leader");
    println!("3 brokers on 127.0.0.1, replication factor 3, min.insync.replicas 2, {RECORD_BYTES}-byte records, HTTP admin path");
    for acks in ["all", "1"] {
        let load = run(port, acks, producers, batch_records, seconds);
        report(&format!("acks={acks:<3} {producers} producers x {batch_records}-record batches"), &load);
        let light = run(port, acks, 1, 10, seconds.min(3));
        report(&format!("acks={acks:<3} 1 producer x 10-record batches"), &light);
    }
}
