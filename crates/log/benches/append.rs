//! Log append throughput on the real-file backend with group commit.
//!
//! Not a test: `ci/bench.sh log` runs it next to `dd oflag=dsync` on the same
//! file system. Directory: $KEEL_BENCH_DIR (default: a temp dir under target/).
//! Volume per case: $KEEL_BENCH_MB (default 256).

use std::time::Instant;

use keel_io::{Disk, RealDisk};
use keel_log::{FlushPolicy, Log, LogConfig};

struct Case {
    record_bytes: usize,
    group_commit_bytes: u64,
}

struct CaseResult {
    appends_per_second: f64,
    megabytes_per_second: f64,
    records: u64,
    /// Per-append latency; the tail is the group-commit fsync a caller waits for.
    append_latency_us: hdrhistogram::Histogram<u64>,
}

async fn run_case(root: &std::path::Path, case: &Case, total_bytes: u64) -> CaseResult {
    let dir = format!("bench-{}-{}", case.record_bytes, case.group_commit_bytes);
    let disk = Disk::Real(RealDisk::new(root));
    let config = LogConfig {
        flush_policy: FlushPolicy::Threshold { unflushed_bytes_max: case.group_commit_bytes, unflushed_records_max: u64::MAX },
        write_buffer_bytes_max: usize::try_from(case.group_commit_bytes).expect("fits"),
        ..LogConfig::default()
    };
    let mut log = Log::open(disk, &dir, config).await.expect("open bench log");
    let payload = vec![0x5a_u8; case.record_bytes];
    let records = total_bytes / case.record_bytes as u64;
    let mut append_latency_us = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    let started = Instant::now();
    for _ in 0..records {
        let append_started = Instant::now();
        log.append(&payload).await.expect("append");
        append_latency_us.saturating_record(append_started.elapsed().as_micros() as u64);
    }
    log.flush().await.expect("final flush");
    let seconds = started.elapsed().as_secs_f64();
    std::fs::remove_dir_all(root.join(&dir)).expect("clean bench dir");
    CaseResult {
        appends_per_second: records as f64 / seconds,
        megabytes_per_second: (records * case.record_bytes as u64) as f64 / seconds / 1e6,
        records,
        append_latency_us,
    }
}

fn main() {
    // `cargo bench` passes --bench; any other argument filters nothing here.
    let root = std::env::var_os("KEEL_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-tmp"));
    std::fs::create_dir_all(&root).expect("bench dir");
    let total_mb: u64 = std::env::var("KEEL_BENCH_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let total_bytes = total_mb * 1024 * 1024;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let cases = [
        Case { record_bytes: 1024, group_commit_bytes: 1024 * 1024 },
        Case { record_bytes: 64 * 1024, group_commit_bytes: 1024 * 1024 },
        Case { record_bytes: 1024, group_commit_bytes: 4 * 1024 * 1024 },
        Case { record_bytes: 64 * 1024, group_commit_bytes: 4 * 1024 * 1024 },
    ];
    println!("{:<10} {:>14} {:>10} {:>12} {:>10} {:>12} {:>12}", "record", "group_commit", "records", "appends/s", "MB/s", "p50_us", "p99.9_us");
    for case in &cases {
        let result = runtime.block_on(run_case(&root, case, total_bytes));
        let megabytes_per_second = result.megabytes_per_second;
        println!(
            "{:<10} {:>12}KiB {:>10} {:>12.0} {:>10.1} {:>12} {:>12}",
            format!("{}B", case.record_bytes),
            case.group_commit_bytes / 1024,
            result.records,
            result.appends_per_second,
            megabytes_per_second,
            result.append_latency_us.value_at_quantile(0.5),
            result.append_latency_us.value_at_quantile(0.999)
        );
        println!("RESULT log_append record_bytes={} group_commit_bytes={} mb_per_s={megabytes_per_second:.1}", case.record_bytes, case.group_commit_bytes);
    }
}
