//! Seeded crash-consistency of the metadata Raft store on SimDisk.

use keel_sim::check::{expect_seed_passes, test_sweep_seeds};
use keel_sim::raft_store_check::{check_raft_store, RaftStoreCheckReport};

const STEPS: usize = 300;

fn run_or_report(seed: u64) -> RaftStoreCheckReport {
    expect_seed_passes("raft-store-check", seed, STEPS, move || check_raft_store(seed, STEPS))
}

#[test]
fn raft_store_keeps_votes_and_entries_across_crashes_seeds_1_to_1000() {
    let mut total = RaftStoreCheckReport::default();
    for seed in test_sweep_seeds(1..=1000) {
        let report = run_or_report(seed);
        total.appends += report.appends;
        total.compactions += report.compactions;
        total.snapshot_installs += report.snapshot_installs;
        total.failed_operations += report.failed_operations;
        total.disk.torn_crashes += report.disk.torn_crashes;
        total.disk.sync_eio += report.disk.sync_eio;
        total.disk.write_enospc += report.disk.write_enospc;
        total.disk.read_bit_flips += report.disk.read_bit_flips;
    }
    assert!(total.appends > 0, "{total:?}");
    assert!(total.compactions > 0, "{total:?}");
    assert!(total.snapshot_installs > 0, "{total:?}");
    assert!(total.failed_operations > 0, "{total:?}");
    assert!(total.disk.torn_crashes > 0, "{total:?}");
    assert!(total.disk.sync_eio > 0, "{total:?}");
    assert!(total.disk.write_enospc > 0, "{total:?}");
    assert!(total.disk.read_bit_flips > 0, "{total:?}");
}

#[test]
fn raft_store_check_is_deterministic_per_seed() {
    let first = run_or_report(7);
    assert_eq!(first, run_or_report(7));
    assert_ne!(first.trace_hash, run_or_report(8).trace_hash);
}
