//! The scenario runner end to end under madsim: every scenario in
//! `scenarios/` passes its first seeds, and a run is a pure function of its
//! seed (byte-identical traces for one seed, different ones for another).
//! CI sweeps seeds 1..500 of every scenario with `ci/sim.sh sweep`.
#![cfg(madsim)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keel_sim::run::run_scenario;
use keel_sim::runner::{replay_command, run_seed, SeedOutcome};
use keel_sim::scenario::Scenario;
use keel_sim::trace::Trace;

fn scenario(name: &str) -> Arc<Scenario> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios").join(format!("{name}.toml"));
    Arc::new(Scenario::load(&path).unwrap_or_else(|error| panic!("{error}")))
}

/// Runs one seed; panics with the checker, the seed and the replay command.
fn trace_of(scenario: &Arc<Scenario>, seed: u64) -> Trace {
    let replay = replay_command("run", seed, &format!("--scenario {}", scenario.path.display()));
    let run = Arc::clone(scenario);
    match run_seed(seed, Duration::from_secs(120), move || run_scenario(run, seed)) {
        SeedOutcome::Finished(Ok((_, trace))) => trace,
        SeedOutcome::Finished(Err((violation, _))) => panic!("{violation}\nseed: {seed}\nreplay: {replay}"),
        SeedOutcome::Panicked(message) => panic!("panicked: {message}\nseed: {seed}\nreplay: {replay}"),
        SeedOutcome::Hung { wall_clock_budget } => panic!("hung for {wall_clock_budget:?}\nseed: {seed}\nreplay: {replay}"),
    }
}

#[test]
fn election_storm_seed_42_replays_byte_identically_and_seed_43_differs() {
    let storm = scenario("election-storm");
    let first = trace_of(&storm, 42);
    let second = trace_of(&storm, 42);
    assert_eq!(first.render(), second.render(), "seed 42 gave two different traces");
    assert!(first.lines().len() > 100, "a storm run should trace hundreds of events, got {}", first.lines().len());
    let other = trace_of(&storm, 43);
    assert_ne!(first.hash(), other.hash(), "seeds 42 and 43 gave the same trace");
}

#[test]
fn a_truncating_data_run_replays_byte_identically() {
    let truncation = scenario("partition-heal-truncation");
    let first = trace_of(&truncation, 42);
    let second = trace_of(&truncation, 42);
    assert_eq!(first.render(), second.render(), "seed 42 gave two different traces");
    assert!(first.lines().iter().any(|line| line.contains(" truncates data-0 to ")), "seed 42 should truncate a deposed leader's tail");
}

#[test]
fn idempotent_retries_no_duplicates_seed_42_replays_byte_identically_and_retries_acknowledged_batches() {
    let idempotent = scenario("idempotent-retries-no-duplicates");
    let first = trace_of(&idempotent, 42);
    let second = trace_of(&idempotent, 42);
    assert_eq!(first.render(), second.render(), "seed 42 gave two different traces");
    let acknowledged_after_a_retry = first.lines().iter().filter(|line| line.contains(" acks=All -> ") && !line.contains("(attempt 1)")).count();
    assert!(acknowledged_after_a_retry > 0, "seed 42 should acknowledge batches only a retry got through");
}

#[test]
fn every_scenario_passes_its_first_seeds() {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("scenarios dir")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|name| name.strip_suffix(".toml").map(str::to_string))
        .collect();
    names.sort();
    assert!(names.len() >= 14, "expected the six metadata and eight replication scenarios, found {names:?}");
    for name in names {
        let scenario = scenario(&name);
        for seed in 1..=5 {
            trace_of(&scenario, seed);
        }
    }
}
