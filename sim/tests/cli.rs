//! keel-sim's command line as a user meets it: scenario files are validated
//! with the file and line of a mistake, bad input exits 2, and the normal
//! build says where scenarios run.
#![cfg(not(madsim))]

use std::path::Path;
use std::process::{Command, Output};

fn keel_sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel-sim")).args(args).output().expect("run keel-sim")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn every_shipped_scenario_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("scenarios dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            keel_sim::scenario::Scenario::load(&path).unwrap_or_else(|error| panic!("{error}"));
            count += 1;
        }
    }
    assert!(count >= 6, "expected at least the six metadata scenarios, found {count}");
}

#[test]
fn a_malformed_scenario_exits_2_naming_the_file_line_and_expectation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "duration_ms = 5000\nconvergence_ms_max = 5000\n[cluster]\nbrokers = 3\n\n[[fault]]\nkind = \"kill\"\nnode = 9\nat_ms = 10\n")
        .expect("write");
    let output = keel_sim(&["run", "--scenario", path.to_str().expect("utf-8"), "--seed", "1"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains(&format!("{}:6:", path.display())), "{message}");
    assert!(message.contains("expected a broker id 1..=3"), "{message}");
}

#[test]
fn a_missing_scenario_file_and_a_bad_seed_range_exit_2() {
    let output = keel_sim(&["sweep", "--scenario", "no/such/file.toml", "--seeds", "1..5"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("no/such/file.toml"), "{}", stderr(&output));
    let output = keel_sim(&["sweep", "--scenario", "x.toml", "--seeds", "9..1"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("is empty"), "{}", stderr(&output));
}

#[test]
fn the_normal_build_points_scenario_runs_at_the_simulation_build() {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/election-storm.toml");
    let output = keel_sim(&["run", "--scenario", scenario.to_str().expect("utf-8"), "--seed", "42"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("ci/sim.sh"), "{}", stderr(&output));
}
