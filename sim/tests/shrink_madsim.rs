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
use keel_sim::scenario::{FaultAction, FaultKind, Scenario, Target};
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

fn keel_sim(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_keel-sim")).args(args).output().expect("run keel-sim")
}

#[test]
fn shrink_of_bad_input_or_a_passing_seed_exits_2() {
    let swarm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/swarm.toml");
    let swarm = swarm.to_str().expect("utf-8");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.toml");
    let out = out.to_str().expect("utf-8");
    let missing = keel_sim(&["shrink", "--scenario", "no/such/scenario.toml", "--seed", "1", "-o", out]);
    assert_eq!(missing.status.code(), Some(2), "{}", String::from_utf8_lossy(&missing.stderr));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no/such/scenario.toml"));
    let bad_seed = keel_sim(&["shrink", "--scenario", swarm, "--seed", "seven", "-o", out]);
    assert_eq!(bad_seed.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad_seed.stderr));
    let passing = keel_sim(&["shrink", "--scenario", swarm, "--seed", "1", "-o", out]);
    assert_eq!(passing.status.code(), Some(2), "{}", String::from_utf8_lossy(&passing.stdout));
    assert!(String::from_utf8_lossy(&passing.stdout).contains("passes: nothing to shrink"));
    assert!(!Path::new(out).exists(), "nothing is written for a passing seed");
}

/// Five faults (two of them repeating or jittered), one of which leaves
/// broker 3 down at the heal; the convergence bound is too short for its
/// restart, so that kill is the whole failure.
const DOWN_AT_THE_HEAL: &str = r#"duration_ms = 8000
convergence_ms_max = 60

[cluster]
brokers = 3

[[fault]]
kind = "latency"
min_ms = 1
max_ms = 5
at_ms = 1000
jitter_ms = 400
duration_ms = 500

[[fault]]
kind = "pause"
node = 2
at_ms = 2000
jitter_ms = 400
duration_ms = 300

[[fault]]
kind = "loss"
rate = 0.01
at_ms = 3000
duration_ms = 500

[[fault]]
kind = "clog"
node = 1
at_ms = 4000
every_ms = 1000
until_ms = 6000
duration_ms = 200

[[fault]]
kind = "kill"
node = 3
at_ms = 7000
jitter_ms = 500
"#;

#[test]
fn shrink_reduces_seven_fault_events_to_the_kill_that_fails_convergence_and_the_file_fails_alike() {
    use keel_sim::shrink::{run_in_sim, shrink, ShrinkEnd, ShrinkRequest};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("down-at-the-heal.toml");
    std::fs::write(&path, DOWN_AT_THE_HEAL).expect("write scenario");
    let scenario = Scenario::load(&path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(scenario.faults.len(), 7, "the clog repeats three times");
    let out = dir.path().join("shrunk.toml");
    let request = ShrinkRequest { scenario: &scenario, seed: 2, out: out.clone(), runs_max: 60, jobs: 2 };
    let end = shrink(&request, &run_in_sim(Duration::from_secs(120))).expect("shrink");
    assert_eq!(end, ShrinkEnd::Shrunk);
    let shrunk = Scenario::load(&out).unwrap_or_else(|error| panic!("{error}"));
    let kinds: Vec<_> = shrunk.faults.iter().map(|fault| (fault.kind, fault.action.clone())).collect();
    assert_eq!(kinds, vec![(FaultKind::Kill, FaultAction::OnBroker(Target::Broker(3)))]);
    assert!(shrunk.faults[0].at_ms >= 7_000 && shrunk.faults[0].jitter_ms == 0, "{:?}", shrunk.faults[0]);
    assert_eq!(shrunk.schedule_draws.jitter_ms, vec![400, 400, 500], "the original's jitter draws, in order");
}
