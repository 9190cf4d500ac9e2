//! `keel-sim shrink` starts from a seed's schedule written out as explicit
//! faults; these tests show that file runs, under the same seed, as the
//! seed itself did: the same events at the same simulated times, for a
//! swarm seed and for a file of jittered, repeating faults. Only the lines
//! naming where a fault came from (its file line, or the swarm) differ.
#![cfg(madsim)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use keel_sim::run::run_scenario;
use keel_sim::runner::{run_seed, SeedOutcome};
use keel_sim::scenario::Scenario;
use keel_sim::schedule::explicit;
use keel_sim::trace::Trace;

fn scenario(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios").join(format!("{name}.toml"));
    Scenario::load(&path).unwrap_or_else(|error| panic!("{error}"))
}

fn trace_of(scenario: Scenario, seed: u64) -> Trace {
    let scenario = Arc::new(scenario);
    match run_seed(seed, Duration::from_secs(120), move || run_scenario(scenario, seed)) {
        SeedOutcome::Finished(Ok((_, trace)) | Err((_, trace))) => trace,
        SeedOutcome::Panicked(message) => panic!("seed {seed} panicked: {message}"),
        SeedOutcome::Hung { wall_clock_budget } => panic!("seed {seed} hung for {wall_clock_budget:?}"),
    }
}

/// The trace without what names a fault's origin: `fault (line 12)` and
/// `fault (swarm)` both read `fault`, and the scenario's path is dropped.
fn without_origins(trace: &Trace) -> Vec<String> {
    trace
        .lines()
        .iter()
        .filter(|line| !line.contains(" scenario "))
        .map(|line| match line.split_once(" (") {
            Some((head, rest)) if head.ends_with(" fault") || head.ends_with(" undo") => {
                format!("{head}{}", rest.split_once(')').map_or("", |(_, tail)| tail))
            }
            _ => line.clone(),
        })
        .collect()
}

fn assert_explicit_replays(name: &str, seed: u64) {
    let original = scenario(name);
    let written = explicit(&original, seed).to_toml();
    let reread = Scenario::parse(Path::new("explicit.toml"), &written).unwrap_or_else(|error| panic!("{error}\n{written}"));
    assert!(!reread.faults.is_empty(), "{name} seed {seed}: no faults written out");
    let (want, got) = (without_origins(&trace_of(original, seed)), without_origins(&trace_of(reread, seed)));
    assert!(want.len() > 100, "{name} seed {seed}: a short trace ({} lines)", want.len());
    if let Some(at) = want.iter().zip(&got).position(|(a, b)| a != b) {
        panic!("{name} seed {seed}: the explicit schedule's run departs at line {at}:\n  seed:     {}\n  explicit: {}\nfile:\n{written}", want[at], got[at]);
    }
    assert_eq!(want.len(), got.len(), "{name} seed {seed}: trace lengths");
}

#[test]
fn a_swarm_seeds_schedule_written_out_replays_the_same_run() {
    for seed in [1, 2] {
        assert_explicit_replays("swarm", seed);
    }
}

#[test]
fn a_jittered_repeating_schedule_written_out_replays_the_same_run() {
    assert_explicit_replays("leader-kill-loop", 1);
    assert_explicit_replays("consumer-group-rebalance-under-faults", 1);
}
