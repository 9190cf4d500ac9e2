//! Seeded crash-consistency of keel-log on SimDisk (2,000 seeds in an
//! optimised build, `test_sweep_seeds`), the same
//! contract on real files, and determinism of the check itself.

use keel_sim::check::{expect_seed_passes, test_sweep_seeds};
use keel_sim::log_check::{check_log, LogCheckConfig, LogCheckReport};

/// Runs one seed; a failure panics with the seed and its replay command.
fn run_or_report(config: LogCheckConfig) -> LogCheckReport {
    let (seed, steps) = (config.seed, config.steps);
    expect_seed_passes("log-check", seed, steps, move || check_log(config))
}

/// Sums what the faults did across a sweep, so a sweep where a fault never
/// fired fails instead of passing vacuously.
fn sweep(seeds: std::ops::RangeInclusive<u64>) -> LogCheckReport {
    let mut total = LogCheckReport::default();
    for seed in test_sweep_seeds(seeds) {
        let report = run_or_report(LogCheckConfig::sim(seed));
        total.appends += report.appends;
        total.recoveries += report.recoveries;
        total.mid_operation_crashes += report.mid_operation_crashes;
        total.truncates += report.truncates;
        total.failed_operations += report.failed_operations;
        total.disk.crashes += report.disk.crashes;
        total.disk.torn_crashes += report.disk.torn_crashes;
        total.disk.sync_eio += report.disk.sync_eio;
        total.disk.write_enospc += report.disk.write_enospc;
        total.disk.read_bit_flips += report.disk.read_bit_flips;
    }
    total
}

fn assert_every_fault_fired(total: &LogCheckReport) {
    assert!(total.appends > 0, "no appends: {total:?}");
    assert!(total.truncates > 0, "no truncates: {total:?}");
    assert!(total.mid_operation_crashes > 0, "no mid-operation power cuts: {total:?}");
    assert!(total.failed_operations > 0, "no operation ever failed: {total:?}");
    assert!(total.disk.torn_crashes > 0, "no torn writes: {total:?}");
    assert!(total.disk.sync_eio > 0, "no fsync EIO: {total:?}");
    assert!(total.disk.write_enospc > 0, "no ENOSPC: {total:?}");
    assert!(total.disk.read_bit_flips > 0, "no read bit flips: {total:?}");
}

// 2,000 seeds in two halves so the test harness runs them on both cores.
#[test]
fn log_survives_crashes_and_disk_faults_seeds_1_to_1000() {
    assert_every_fault_fired(&sweep(1..=1000));
}

#[test]
fn log_survives_crashes_and_disk_faults_seeds_1001_to_2000() {
    assert_every_fault_fired(&sweep(1001..=2000));
}

#[test]
fn same_seed_gives_the_same_trace_hash_and_different_seeds_differ() {
    let first = run_or_report(LogCheckConfig::sim(42));
    let second = run_or_report(LogCheckConfig::sim(42));
    let other = run_or_report(LogCheckConfig::sim(43));
    assert_eq!(first.trace_hash, second.trace_hash, "seed 42 is not deterministic");
    assert_eq!(first, second, "seed 42 did different work on its second run");
    assert_ne!(first.trace_hash, other.trace_hash, "seeds 42 and 43 produced the same trace");
}

// The real backend has no crash injection, so it proves the contract without
// faults; tokio's paused clock is not needed but harmless (no SimDisk latency).
#[cfg(not(madsim))]
#[test]
fn log_obeys_the_same_contract_on_real_files() {
    use keel_sim::log_check::Backend;
    for seed in 1..=12u64 {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = LogCheckConfig { seed, steps: 200, backend: Backend::Real { root: dir.path().to_path_buf() } };
        let report = run_or_report(config);
        assert!(report.recoveries > 1, "seed {seed}: the real backend was never reopened");
        assert!(report.appends > 0, "seed {seed}: nothing appended");
    }
}
