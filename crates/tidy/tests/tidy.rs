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

/// Every BUGGIFY point in the code is in `keel_io::buggify::SITES` (the
/// list the simulator's coverage table shows), once, and every listed site
/// is in the code: a site added or renamed without the list would never be
/// seen to fire.
#[test]
fn every_buggify_site_is_listed_once_and_every_listed_site_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().expect("workspace root");
    let mut in_code = Vec::new();
    for file in keel_tidy::rust_files(&root).expect("walk workspace") {
        let source = std::fs::read_to_string(root.join(&file)).expect("read source");
        in_code.extend(keel_tidy::buggify_sites(&source).into_iter().map(|site| (site, file.clone())));
    }
    let listed: Vec<String> = keel_io::buggify::SITES.iter().map(|site| site.to_string()).collect();
    for (site, file) in &in_code {
        assert!(listed.contains(site), "{file}: BUGGIFY site `{site}` is not in keel_io::buggify::SITES");
        assert_eq!(in_code.iter().filter(|(other, _)| other == site).count(), 1, "{site} is used at more than one place");
    }
    for site in &listed {
        assert!(in_code.iter().any(|(used, _)| used == site), "keel_io::buggify::SITES lists `{site}`, but no code has it");
    }
}
