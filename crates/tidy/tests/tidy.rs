//! Architecture Invariants: no forbidden host call outside `crates/io`
//! (see keel_tidy::RULES), and no node composed outside `crates/node`
//! (keel_tidy::COMPOSITION).

use std::path::Path;

#[test]
fn broker_and_sim_code_reach_the_host_only_through_the_io_seams() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().expect("workspace root");
    let files = keel_tidy::checked_files(&root).expect("walk workspace");
    assert!(files.iter().any(|f| f == "crates/log/src/log.rs"), "tidy must see the log crate: {files:?}");
    let mut violations = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(root.join(file)).expect("read source");
        violations.extend(keel_tidy::check_source(file, &source));
    }
    let report: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(report.is_empty(), "forbidden calls outside crates/io:\n{}", report.join("\n"));
}

#[test]
fn only_crates_node_composes_a_broker_node() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().expect("workspace root");
    let files = keel_tidy::rust_files(&root).expect("walk workspace");
    assert!(files.iter().any(|f| f == "crates/kafka/fuzz/fuzz_targets/request_dispatch.rs"), "the fuzz targets are checked too: {files:?}");
    let mut violations = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(root.join(file)).expect("read source");
        violations.extend(keel_tidy::composition_violations(file, &source));
    }
    let report: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(report.is_empty(), "nodes composed outside crates/node:\n{}", report.join("\n"));
}
