//! Metadata benchmark (not a test): `ci/bench.sh meta`.
//!
//! Starts three `keel` processes on 127.0.0.1 and measures, through the admin
//! endpoint, the round trip from a create request on a random node until the
//! topic is visible on every node (p50/p99; target p99 < 20 ms), then 100
//! concurrent creates until all are visible on all nodes (target < 1 s).
//! Visibility is polled, so figures include up to one poll round (~1 ms).

#[path = "../tests/support/admin_client.rs"]
mod admin_client;
#[path = "../tests/support/cluster.rs"]
mod cluster;
use admin_client::http;

use std::time::{Duration, Instant};

fn visible_everywhere(admin_ports: &[u16], names: &[String]) -> bool {
    admin_ports.iter().all(|port| http(*port, "GET", "/topics").is_some_and(|(_, body)| names.iter().all(|n| body.contains(&format!("\"name\":\"{n}\"")))))
}

fn wait_visible(admin_ports: &[u16], names: &[String], budget: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < budget {
        if visible_everywhere(admin_ports, names) {
            return Some(started.elapsed());
        }
    }
    None
}

fn main() {
    let creates: usize = std::env::var("KEEL_BENCH_CREATES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let dir = cluster::bench_temp_dir();
    let nodes = cluster::start_settled(dir.path(), 3, &[]);
    let ports: Vec<u16> = nodes.iter().map(|node| node.admin_port).collect();
    let mut round_trip_us = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    for i in 0..creates {
        let name = format!("rt-{i}");
        let started = Instant::now();
        let (code, body) = http(ports[i % 3], "POST", &format!("/topics/{name}?partitions=1&replication_factor=3")).expect("create");
        assert_eq!(code, 201, "create {name}: {body}");
        wait_visible(&ports, std::slice::from_ref(&name), Duration::from_secs(10)).expect("visible within 10 s");
        round_trip_us.record(started.elapsed().as_micros() as u64).expect("record");
    }
    println!(
        "topic create, request on a random node -> visible on all 3 ({creates} creates): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 < 20 ms)",
        round_trip_us.value_at_quantile(0.5) as f64 / 1000.0,
        round_trip_us.value_at_quantile(0.99) as f64 / 1000.0,
        round_trip_us.max() as f64 / 1000.0
    );
    let names: Vec<String> = (0..100).map(|i| format!("burst-{i}")).collect();
    let started = Instant::now();
    let threads: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (port, name) = (ports[i % 3], name.clone());
            std::thread::spawn(move || http(port, "POST", &format!("/topics/{name}?partitions=1&replication_factor=3")).map(|(code, _)| code))
        })
        .collect();
    let codes: Vec<Option<u16>> = threads.into_iter().map(|t| t.join().expect("thread")).collect();
    assert!(codes.iter().all(|c| *c == Some(201)), "every concurrent create succeeds: {codes:?}");
    let all_visible = wait_visible(&ports, &names, Duration::from_secs(30)).map(|_| started.elapsed()).expect("all visible within 30 s");
    println!(
        "100 concurrent creates -> all visible on all 3: {:.0} ms, {:.0} creates/s (target < 1000 ms)",
        all_visible.as_secs_f64() * 1000.0,
        100.0 / all_visible.as_secs_f64()
    );
}
