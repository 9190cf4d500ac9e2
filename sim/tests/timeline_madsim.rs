//! `keel-sim timeline` end to end: a real swarm seed recorded with
//! `--trace FILE.jsonl` by the simulation build, a violation appended that
//! names one of the run's acknowledged records, the page rendered by the
//! binary and loaded in headless Chromium. The DOM Chromium builds must have
//! a lane per broker, the violation marker and the named record highlighted.
//! CI (`ci/test.sh`) installs Chromium; without it the test says loudly that
//! it skipped. And a replay names the build it needs: the recording build
//! runs it, another one refuses (exit 2).
#![cfg(madsim)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use keel_sim::data_check::checker::LOST_WRITE;
use keel_sim::trace_json::{TraceEvent, TraceHeader, TraceViolation, ViolationLine};

fn keel_sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel-sim")).args(args).output().expect("run keel-sim")
}

fn shown(output: &Output) -> String {
    format!("status {:?}\nstdout:\n{}\nstderr:\n{}", output.status, String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// The Chromium binary on PATH, under its Debian or other names.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// The DOM headless Chromium builds from `page` (no scripts run: the page has none).
fn dump_dom(browser: &Path, page: &Path, profile: &Path) -> String {
    let output = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(output.status.success(), "chromium --dump-dom failed: {}", shown(&output));
    String::from_utf8(output.stdout).expect("the DOM is UTF-8")
}

/// Swarm seed 7 (three brokers, faults, produce and read traffic) recorded
/// as JSON; the last acknowledged batch declared lost, as the lost-write
/// checker words it; the page drawn and loaded in Chromium.
#[test]
fn a_failing_swarm_seed_renders_in_headless_chromium_with_a_lane_per_broker_and_the_violation_marked() {
    let Some(browser) = chromium() else {
        eprintln!("SKIPPED timeline test: chromium is not installed (Debian: apt-get install chromium; ci/test.sh installs it)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/swarm.toml");
    let trace_path = dir.path().join("trace-7.jsonl");
    let run = keel_sim(&["run", "--scenario", scenario.to_str().expect("utf-8"), "--seed", "7", "--trace", trace_path.to_str().expect("utf-8")]);
    assert!(run.status.success(), "swarm seed 7 should pass: {}", shown(&run));

    let text = std::fs::read_to_string(&trace_path).expect("read the trace");
    let mut lines = text.lines();
    let header: TraceHeader = serde_json::from_str(lines.next().expect("a header")).expect("the header parses");
    assert_eq!((header.seed, header.command.as_str()), (7, "run"));
    let events: Vec<TraceEvent> = lines.map(|line| serde_json::from_str(line).expect("an event parses")).collect();
    // The last acknowledged batch, and the partition its send line names.
    let (ack_index, ack) = events.iter().enumerate().rev().find(|(_, e)| e.event == "ack").expect("swarm seed 7 acknowledges produces");
    let (actor, batch) = (ack.actor.clone().expect("an ack has its producer"), ack.fields["batch"].as_str().expect("a batch id").to_string());
    let send =
        events.iter().find(|e| e.event == "send" && e.actor.as_deref() == Some(&actor) && e.fields["batch"] == ack.fields["batch"]).expect("the batch's send");
    let (partition, base_offset) = (send.fields["partition"].as_u64().expect("partition"), ack.fields["base_offset"].as_u64().expect("base offset"));
    let at_us = events.last().and_then(|e| e.t_us).expect("the run's end time");
    let violation = TraceViolation {
        checker: LOST_WRITE.to_string(),
        t_us: Some(at_us),
        step: None,
        message: format!("partition {partition} offset {base_offset}: AcksAll saw `{actor}-{batch}-r0`, the converged log ends before it"),
    };
    let failed = format!("{text}{}\n", serde_json::to_string(&ViolationLine { violation }).expect("serialize"));
    let failed_path = dir.path().join("failed-7.jsonl");
    std::fs::write(&failed_path, failed).expect("write the failing trace");

    let page = dir.path().join("run.html");
    let drawn = keel_sim(&["timeline", failed_path.to_str().expect("utf-8"), "-o", page.to_str().expect("utf-8")]);
    assert!(drawn.status.success(), "{}", shown(&drawn));
    assert!(String::from_utf8_lossy(&drawn.stdout).contains("violation of `lost-write`"), "{}", shown(&drawn));

    let dom = dump_dom(&browser, &page, &dir.path().join("chromium-profile"));
    for node in 1..=3 {
        assert_eq!(dom.matches(&format!("<g class=\"lane\" data-node=\"n{node}\">")).count(), 1, "one lane for n{node}");
    }
    assert!(!dom.contains("data-node=\"n4\""), "swarm.toml has three brokers");
    assert_eq!(dom.matches("id=\"violation\"").count(), 1, "one violation marker");
    assert!(dom.contains("data-checker=\"lost-write\""), "the marker names its checker");
    assert!(dom.contains("<section id=\"violation-details\">"), "the violation's checker and message are shown");
    assert!(dom.contains(&format!("class=\"mark ack involved\" data-line=\"{ack_index}\"")), "the acknowledged batch the violation names is highlighted");
    assert!(dom.contains("class=\"leader\""), "Raft leadership is drawn");
    assert!(dom.contains("class=\"fault\""), "swarm seed 7's faults are drawn");
}

/// `--build` from a trace's header: the binary that recorded it replays the
/// seed; any other build id is refused with exit 2, naming both builds.
#[test]
fn a_replay_with_the_recording_build_runs_and_with_another_build_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/election-storm.toml");
    let scenario = scenario.to_str().expect("utf-8");
    let trace_path = dir.path().join("trace-1.jsonl");
    let recorded = keel_sim(&["run", "--scenario", scenario, "--seed", "1", "--trace", trace_path.to_str().expect("utf-8")]);
    assert!(recorded.status.success(), "{}", shown(&recorded));
    let text = std::fs::read_to_string(&trace_path).expect("read the trace");
    let header: TraceHeader = serde_json::from_str(text.lines().next().expect("a header")).expect("the header parses");
    assert!(header.replay.ends_with(&format!("--trace trace-1.jsonl --build {}", header.build)), "{}", header.replay);

    let same = keel_sim(&["run", "--scenario", scenario, "--seed", "1", "--build", &header.build]);
    assert!(same.status.success(), "the recording build replays: {}", shown(&same));
    assert!(String::from_utf8_lossy(&same.stdout).contains(&format!("trace-hash {}", header.trace_hash)), "{}", shown(&same));

    let other_build = format!("{}-00000000000000aa", env!("CARGO_PKG_VERSION"));
    let other = keel_sim(&["run", "--scenario", scenario, "--seed", "1", "--build", &other_build]);
    assert_eq!(other.status.code(), Some(2), "{}", shown(&other));
    let message = String::from_utf8_lossy(&other.stderr);
    assert!(message.contains(&format!("seed 1 was recorded by build {other_build}; this binary is build {}", header.build)), "{message}");
    assert!(message.contains("Rebuild at the recorded commit, or drop --build"), "{message}");
    assert!(other.stdout.is_empty(), "nothing ran: {}", shown(&other));
}
