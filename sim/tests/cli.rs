//! keel-sim's command line as a user meets it: scenario files are validated
//! with the file and line of a mistake, bad input exits 2, the normal
//! build says where scenarios run, and a scenario's nodes print keel's
//! settings.
#![cfg(not(madsim))]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn keel_sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel-sim")).args(args).output().expect("run keel-sim")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every scenario file shipped in scenarios/, sorted.
fn shipped_scenarios() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenarios dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    paths
}

#[test]
fn every_shipped_scenario_is_valid() {
    let paths = shipped_scenarios();
    for path in &paths {
        keel_sim::scenario::Scenario::load(path).unwrap_or_else(|error| panic!("{error}"));
    }
    assert!(paths.len() >= 6, "expected at least the six metadata scenarios, found {}", paths.len());
}

/// The simulator's nodes are keel's nodes: each scenario's printed node
/// settings are keel's defaults except the keys its `[node]` table sets.
#[test]
fn every_scenarios_node_config_is_keels_defaults_but_for_its_node_table() {
    let defaults: toml::Table = keel_node::NodeConfig::default().to_toml().parse().expect("the defaults print as TOML");
    for path in shipped_scenarios() {
        let shown = path.display().to_string();
        let output = keel_sim(&["config", "--scenario", &shown, "--node", "1"]);
        assert!(output.status.success(), "{shown}: {}", stderr(&output));
        let printed: toml::Table = String::from_utf8(output.stdout).expect("utf-8").parse().unwrap_or_else(|error| panic!("{shown}: {error}"));
        let file: toml::Table = std::fs::read_to_string(&path).expect("read").parse().expect("valid TOML");
        let set = file.get("node").and_then(toml::Value::as_table).cloned().unwrap_or_default();
        assert_eq!(printed.keys().collect::<Vec<_>>(), defaults.keys().collect::<Vec<_>>(), "{shown}: printed keys");
        for (key, value) in &printed {
            match set.get(key) {
                Some(written) => assert_eq!(value, written, "{shown}: `{key}` is not what its [node] table sets"),
                None => assert_eq!(Some(value), defaults.get(key), "{shown}: `{key}` differs from keel's default but its [node] table does not set it"),
            }
        }
    }
}

#[test]
fn config_of_a_broker_the_scenario_does_not_have_exits_2() {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/election-storm.toml");
    let output = keel_sim(&["config", "--scenario", scenario.to_str().expect("utf-8"), "--node", "6"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("brokers 1 to 5"), "{}", stderr(&output));
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

#[test]
fn bad_sweep_options_exit_2_with_the_form_to_write() {
    for (flag, value, told) in [("--shard", "3/3", "INDEX/COUNT"), ("--shard", "x", "INDEX/COUNT"), ("--time-budget", "10", "e.g. 90s")] {
        let output = keel_sim(&["log-check", "--seeds", "1..4", flag, value]);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}: {}", stderr(&output));
        assert!(stderr(&output).contains(told), "{flag} {value}: {}", stderr(&output));
    }
}

#[test]
fn a_sharded_sweep_runs_its_share_of_the_seeds_and_writes_a_json_summary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json_path = dir.path().join("summary.json");
    let json_arg = json_path.to_str().expect("utf-8 path");
    let output = keel_sim(&["log-check", "--seeds", "1..7", "--steps", "20", "--shard", "1/3", "--time-budget", "10m", "--json", json_arg]);
    assert_eq!(output.status.code(), Some(0), "{}{}", String::from_utf8_lossy(&output.stdout), stderr(&output));
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_path).expect("summary written")).expect("valid JSON");
    // Shard 1 of 3 of seeds 1..7 is seeds 2 and 5.
    assert_eq!(summary["seeds_planned"], 2, "{summary}");
    assert_eq!(summary["seeds_run"], 2, "{summary}");
    assert_eq!(summary["seeds_failed"], 0, "{summary}");
    assert_eq!(summary["shard"]["index"], 1, "{summary}");
    assert_eq!(summary["time_budget_ran_out"], false, "{summary}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("2 passed, 0 failed (shard 1/3)"));
}

#[test]
fn the_shipped_regression_corpus_names_valid_scenarios() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let corpus = root.join(keel_sim::regressions::DEFAULT_CORPUS);
    let regressions = keel_sim::regressions::load(&corpus).unwrap_or_else(|error| panic!("{error}"));
    assert!(!regressions.is_empty(), "the corpus keeps the seeds that once failed");
    for regression in &regressions {
        keel_sim::scenario::Scenario::load(&root.join(&regression.scenario)).unwrap_or_else(|error| panic!("seed {}: {error}", regression.seed));
    }
}

#[test]
fn a_malformed_regression_corpus_exits_2_naming_the_file_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let corpus = dir.path().join("seeds.toml");
    std::fs::write(&corpus, "[[regression]]\nscenario = \"scenarios/swarm.toml\"\nseed = -1\nchecker = \"x\"\n").expect("write");
    let output = keel_sim(&["regressions", "--corpus", corpus.to_str().expect("utf-8 path")]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("seeds.toml:3:"), "{}", stderr(&output));
}

/// A JSON trace: the header names this binary's build and the replay line
/// passes it back; each text line is an event whose `text` is the line as
/// hashed, so the hash is unchanged. (The `--build` check itself is tested
/// on the release simulation build, `timeline_madsim.rs`: hashing a debug
/// binary's 150 MB takes seconds.)
#[test]
fn a_json_trace_records_the_build_and_the_hash_of_the_text_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace_path = dir.path().join("trace-3.jsonl");
    let output = keel_sim(&["log-check", "--seed", "3", "--steps", "40", "--trace", trace_path.to_str().expect("utf-8")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let text = std::fs::read_to_string(&trace_path).expect("read trace");
    let mut lines = text.lines();
    let header: keel_sim::trace_json::TraceHeader = serde_json::from_str(lines.next().expect("header")).expect("a header");
    assert_eq!((header.trace.as_str(), header.format, header.command.as_str(), header.seed), ("keel-sim", 1, "log-check", 3));
    assert!(header.build.starts_with(concat!(env!("CARGO_PKG_VERSION"), "-")), "{}", header.build);
    assert!(header.replay.contains("--trace trace-3.jsonl"), "{}", header.replay);
    assert!(header.replay.ends_with(&format!("--build {}", header.build)), "{}", header.replay);
    assert!(stdout.contains(&format!("trace-hash {}", header.trace_hash)), "{stdout}");
    let mut hash = keel_sim::trace::TraceHash::new();
    for line in lines {
        let event: keel_sim::trace_json::TraceEvent = serde_json::from_str(line).expect("an event");
        hash.update(event.text.as_bytes());
        hash.update(b"\n");
    }
    assert_eq!(format!("{:016x}", hash.value()), header.trace_hash, "the hash is the hash of the text lines");

    // A `.txt` trace is still the text: the lines, then the hash.
    let text_path = dir.path().join("trace-3.txt");
    let output = keel_sim(&["log-check", "--seed", "3", "--steps", "40", "--trace", text_path.to_str().expect("utf-8")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = std::fs::read_to_string(&text_path).expect("read trace");
    assert_eq!(text.lines().last(), Some(format!("trace-hash {}", header.trace_hash).as_str()));
    assert!(!text.starts_with('{'), "{text}");
}

#[test]
fn a_timeline_of_bad_input_exits_2_naming_the_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let page = dir.path().join("run.html");
    let page = page.to_str().expect("utf-8");
    let text_trace = dir.path().join("trace-1.txt");
    std::fs::write(&text_trace, "0.000000s n1 start\ntrace-hash 0123456789abcdef\n").expect("write");
    let output = keel_sim(&["timeline", text_trace.to_str().expect("utf-8"), "-o", page]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains(&format!("{}:1: not a keel-sim JSON trace", text_trace.display())), "{}", stderr(&output));

    let header = r#"{"trace":"keel-sim","format":1,"build":"b","command":"run","scenario":null,"seed":1,"trace_hash":"0123456789abcdef","replay":"r"}"#;
    let broken = dir.path().join("trace-2.jsonl");
    std::fs::write(&broken, format!("{header}\n{{\"t_us\":1,\"node\":null,\"actor\":null,\"event\":\"x\",\"fields\":{{}},\"text\":\"x\"}}\n{{\"t_us\":\n"))
        .expect("write");
    let output = keel_sim(&["timeline", broken.to_str().expect("utf-8"), "-o", page]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains(&format!("{}:3: not JSON", broken.display())), "{}", stderr(&output));

    let output = keel_sim(&["timeline", "no/such/trace.jsonl", "-o", page]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("no/such/trace.jsonl: cannot read"), "{}", stderr(&output));
    assert!(!Path::new(page).exists(), "no page for bad input");
}
