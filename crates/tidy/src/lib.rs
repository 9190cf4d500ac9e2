//! Source checks for Keel's architecture invariants, run by `cargo test`.
//!
//! Architecture Invariant: broker logic reaches time, disk, network, threads
//! and randomness only through `crates/io` and tokio (madsim-tokio). The calls
//! below are forbidden everywhere else, so the same code replays exactly under
//! madsim. Test code (`tests/`, `benches/`, and a file's trailing
//! `#[cfg(test)]` module) is exempt; the simulation runner's few needs (an OS
//! thread per seed, a wall-clock watchdog) are listed in `ALLOWED` with reasons.

use std::path::Path;

/// A forbidden call and why it is forbidden.
pub struct Rule {
    pub needle: &'static str,
    pub why: &'static str,
}

pub const RULES: &[Rule] = &[
    Rule { needle: "Instant::now", why: "use keel_io::Clock::now (simulated time, per-node drift)" },
    Rule { needle: "SystemTime::now", why: "use keel_io::Clock::wall_now_ms (simulated time, per-node skew)" },
    Rule { needle: "thread_rng", why: "use keel_io::NodeRng (madsim cannot intercept thread_rng)" },
    Rule { needle: "OsRng", why: "use keel_io::NodeRng (seeded per node and incarnation)" },
    Rule { needle: "rand::random", why: "use keel_io::NodeRng (seeded per node and incarnation)" },
    Rule { needle: "std::fs", why: "use keel_io::Disk (SimDisk models crashes; std::fs writes the host disk)" },
    Rule { needle: "std::net", why: "use tokio::net (madsim simulates it)" },
    Rule { needle: "std::thread", why: "use tokio::spawn (madsim schedules tasks deterministically)" },
    Rule { needle: "tokio::fs", why: "use keel_io::Disk (tokio::fs is not simulated)" },
    Rule {
        needle: "select! without biased",
        why: "start every select! with `biased;`: unbiased select! draws from tokio's thread RNG, seeded from a process-wide counter, so a seed replayed in another process (or later in a sweep) takes other branches",
    },
];

/// `select! {` not followed by `biased;`: the line of each such select.
fn unbiased_selects(code: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("select!") {
        let start = from + at;
        let rest = code[start + "select!".len()..].trim_start();
        let body = rest.strip_prefix(['{', '(']).map(str::trim_start).unwrap_or(rest);
        if !body.starts_with("biased;") {
            lines.push(code[..start].bytes().filter(|b| *b == b'\n').count() + 1);
        }
        from = start + "select!".len();
    }
    lines
}

/// Files (relative to the workspace root, `/`-separated) allowed one needle, and why.
pub const ALLOWED: &[(&str, &str, &str)] = &[
    ("sim/src/runner.rs", "std::thread", "each seed runs on a fresh OS thread: madsim seeds HashMap per thread"),
    ("sim/src/runner.rs", "Instant::now", "wall-clock watchdog reports hung seeds (a deadlock stops simulated time)"),
    ("sim/src/trace.rs", "std::fs", "a finished trace is written to the host for the developer to read"),
    ("sim/src/scenario.rs", "std::fs", "scenario files are read from the host before a simulated world exists"),
    ("sim/src/regressions.rs", "std::fs", "the regression corpus is a host file, read before and appended after simulated worlds"),
    ("sim/src/main.rs", "std::fs", "a sweep's JSON summary is written to the host for CI to gather"),
    ("sim/src/shrink.rs", "std::fs", "the shrunk scenario file is written to the host for the developer to run"),
    ("sim/src/shrink.rs", "std::thread", "candidate schedules run side by side, each seed still on its own fresh thread (run_seed)"),
    ("sim/src/build_id.rs", "std::fs", "the running executable is read from the host to name its build"),
    ("sim/src/timeline.rs", "std::fs", "a finished JSON trace is read from the host and its page written there"),
    ("broker/src/config.rs", "std::fs", "the --config file is read from the host (read-only) before the node starts"),
    ("broker/src/listeners.rs", "std::net", "a listener inherited from a supervisor arrives as a raw fd; std::net turns it into a socket tokio takes"),
];

#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    pub file: String,
    pub line: usize,
    pub needle: &'static str,
    pub why: &'static str,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: `{}` is forbidden here: {}", self.file, self.line, self.needle, self.why)
    }
}

/// Blanks comments and string/char literals, keeping line structure, so a
/// needle in prose or a message never counts and one in code always does.
pub fn strip_comments_and_strings(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, b: u8| out.push(if b == b'\n' { b'\n' } else { b' ' });
    while i < bytes.len() {
        let rest = &bytes[i..];
        if rest.starts_with(b"//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            while i < bytes.len() {
                if bytes[i..].starts_with(b"/*") {
                    depth += 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                } else if bytes[i..].starts_with(b"*/") {
                    depth -= 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, bytes[i]);
                    i += 1;
                }
            }
        } else if rest.starts_with(b"r#\"") || rest.starts_with(b"r\"") {
            let hashes = rest[1..].iter().take_while(|b| **b == b'#').count();
            let mut closing = vec![b'"'];
            closing.extend(std::iter::repeat_n(b'#', hashes));
            let open_len = 2 + hashes;
            out.extend(std::iter::repeat_n(b' ', open_len));
            i += open_len;
            while i < bytes.len() && !bytes[i..].starts_with(&closing) {
                blank(&mut out, bytes[i]);
                i += 1;
            }
            let close_len = closing.len().min(bytes.len() - i);
            out.extend(std::iter::repeat_n(b' ', close_len));
            i += close_len;
        } else if bytes[i] == b'"' {
            out.push(b' ');
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    blank(&mut out, bytes[i]);
                    i += 1;
                }
                blank(&mut out, bytes[i]);
                i += 1;
            }
            if i < bytes.len() {
                out.push(b' ');
                i += 1;
            }
        } else if bytes[i] == b'\'' && i + 2 < bytes.len() && (bytes[i + 2] == b'\'' || bytes[i + 1] == b'\\') {
            // A char literal ('x' or '\n'); lifetimes ('a) have no closing quote nearby.
            let end = bytes[i + 1..].iter().position(|b| *b == b'\'').map(|p| i + 1 + p).unwrap_or(i);
            while i <= end {
                blank(&mut out, bytes[i]);
                i += 1;
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("only ASCII bytes were replaced")
}

/// Cuts the trailing `#[cfg(test)]` module (unit tests may use the host).
fn without_test_module(code: &str) -> &str {
    let mut cut = code.len();
    for marker in ["#[cfg(test)]", "#[cfg(all(test"] {
        if let Some(at) = code.find(marker) {
            cut = cut.min(at);
        }
    }
    &code[..cut]
}

/// `use std::{fs, net::X}` style imports spell the needle without `std::fs`.
fn grouped_std_imports(line: &str) -> Vec<&'static str> {
    let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(start) = compact.find("std::{") else { return Vec::new() };
    let group = &compact[start + 6..];
    let mut found = Vec::new();
    for (item, needle) in [("fs", "std::fs"), ("net", "std::net"), ("thread", "std::thread")] {
        let hit = group.split([',', '}', '{']).any(|part| part == item || part.starts_with(&format!("{item}::")));
        if hit {
            found.push(needle);
        }
    }
    found
}

/// Checks one source file; `relative_path` decides the allowances.
pub fn check_source(relative_path: &str, source: &str) -> Vec<Violation> {
    let stripped = strip_comments_and_strings(source);
    let code = without_test_module(&stripped);
    let mut violations = Vec::new();
    let unbiased = unbiased_selects(code);
    for (line_index, line) in code.lines().enumerate() {
        let mut needles: Vec<&'static str> = RULES.iter().filter(|rule| line.contains(rule.needle)).map(|rule| rule.needle).collect();
        needles.extend(grouped_std_imports(line));
        if unbiased.contains(&(line_index + 1)) {
            needles.push("select! without biased");
        }
        for needle in needles {
            let allowed = ALLOWED.iter().any(|(file, allowed, _)| *file == relative_path && *allowed == needle);
            if allowed {
                continue;
            }
            let why = RULES.iter().find(|rule| rule.needle == needle).map(|rule| rule.why).unwrap_or("");
            if !violations.iter().any(|v: &Violation| v.line == line_index + 1 && v.needle == needle) {
                violations.push(Violation { file: relative_path.to_string(), line: line_index + 1, needle, why });
            }
        }
    }
    violations
}

/// Whether a workspace file is broker or simulation logic subject to the rules.
pub fn is_checked(relative_path: &str) -> bool {
    let is_rust = relative_path.ends_with(".rs");
    let under_logic = relative_path.starts_with("broker/") || relative_path.starts_with("sim/") || relative_path.starts_with("crates/");
    let exempt = relative_path.starts_with("crates/io/")
        || relative_path.starts_with("crates/tidy/")
        || relative_path.contains("/tests/")
        || relative_path.contains("/benches/")
        || relative_path.contains("/fuzz/");
    is_rust && under_logic && !exempt
}

/// Every checked `.rs` file under `root`, as `/`-separated relative paths.
pub fn checked_files(root: &Path) -> std::io::Result<Vec<String>> {
    Ok(rust_files(root)?.into_iter().filter(|relative| is_checked(relative)).collect())
}

/// Architecture Invariant: `crates/node` is the one composition root of a
/// broker node. Only it starts the metadata driver, the replication driver,
/// the Kafka server or the group coordinator; `keel`, the simulator, the fuzz
/// harness and every test boot nodes through it. Each entry is a call and
/// the crate that defines it (whose own `src/`, unit tests included, may
/// use it; its integration tests and fuzz targets may not).
pub const COMPOSITION: &[(&str, &str)] = &[
    ("keel_meta::driver::start", "crates/meta/"),
    ("keel_repl::driver::start", "crates/repl/"),
    ("serve_until", "crates/kafka/"),
    ("KafkaFront::new", "crates/kafka/"),
    ("GroupHandle::start", "crates/kafka/"),
];

/// Where a node is composed outside `crates/node`: a call of one of
/// `COMPOSITION`'s, or an import of a driver's `start` (`use
/// keel_meta::driver::{start, ..}`), in any Rust file of the workspace
/// (tests, benches and fuzz targets included).
pub fn composition_violations(relative_path: &str, source: &str) -> Vec<Violation> {
    const WHY: &str = "boot a node through keel_node::Node::start (the one composition root), so the simulator runs what keel runs";
    if relative_path.starts_with("crates/node/") || relative_path.starts_with("crates/tidy/") {
        return Vec::new();
    }
    let code = strip_comments_and_strings(source);
    let mut violations = Vec::new();
    for (line_index, line) in code.lines().enumerate() {
        for (needle, home) in COMPOSITION {
            if relative_path.starts_with(&format!("{home}src/")) {
                continue;
            }
            let imported = needle.rsplit_once("::").is_some_and(|(module, item)| {
                line.split(&format!("{module}::{{")).nth(1).is_some_and(|items| {
                    items.split(['}', ',']).map(|i| i.split_whitespace().next().unwrap_or("")).any(|i| i == item || i == format!("{item}_on"))
                })
            });
            if line.contains(needle) || imported {
                violations.push(Violation { file: relative_path.to_string(), line: line_index + 1, needle, why: WHY });
            }
        }
    }
    violations
}

/// The site names of the BUGGIFY points (the macro given a string literal) in `source`, in order
/// (the macro's own definition and its tests, sites named `test: ...`, left out).
pub fn buggify_sites(source: &str) -> Vec<String> {
    const OPEN: &str = "buggify!(\"";
    let mut sites = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find(OPEN) {
        rest = &rest[start + OPEN.len()..];
        let Some(end) = rest.find('"') else { break };
        let site = &rest[..end];
        if !site.starts_with("test: ") {
            sites.push(site.to_string());
        }
        rest = &rest[end..];
    }
    sites
}

/// Every `.rs` file of the workspace outside build output, as `/`-separated relative paths.
pub fn rust_files(root: &Path) -> std::io::Result<Vec<String>> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    pending.push(path);
                }
                continue;
            }
            if name.ends_with(".rs") {
                let relative =
                    path.strip_prefix(root).expect("below root").components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>();
                files.push(relative.join("/"));
            }
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buggify_sites_are_found_by_their_literal_and_test_sites_left_out() {
        let source = "if keel_io::buggify!(\"disk: short read\") {}\nlet x = crate::buggify!(\"test: odd\");\nbuggify!(\"repl: tiny\")";
        assert_eq!(buggify_sites(source), vec!["disk: short read".to_string(), "repl: tiny".to_string()]);
    }

    #[test]
    fn forbidden_calls_in_code_are_flagged_with_file_and_line() {
        let source = "fn f() {\n    let t = std::time::Instant::now();\n    let r = rand::thread_rng();\n}\n";
        let found = check_source("crates/log/src/x.rs", source);
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].line, found[0].needle), (2, "Instant::now"));
        assert_eq!((found[1].line, found[1].needle), (3, "thread_rng"));
    }

    #[test]
    fn select_without_biased_is_flagged_and_with_biased_is_not() {
        let unbiased = "fn f() {\n    tokio::select! {\n        _ = a => {}\n    }\n}\n";
        let violations = check_source("crates/x/src/lib.rs", unbiased);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!((violations[0].line, violations[0].needle), (2, "select! without biased"));
        let biased = "fn f() {\n    tokio::select! {\n        biased;\n        _ = a => {}\n    }\n}\n";
        assert!(check_source("crates/x/src/lib.rs", biased).is_empty());
    }

    #[test]
    fn grouped_imports_are_flagged() {
        let found = check_source("broker/src/main.rs", "use std::{io, fs::File};\nuse std::{net};\n");
        let needles: Vec<_> = found.iter().map(|v| v.needle).collect();
        assert_eq!(needles, vec!["std::fs", "std::net"]);
    }

    #[test]
    fn comments_strings_and_test_modules_are_not_code() {
        let source = concat!(
            "// std::fs is forbidden\n",
            "/* Instant::now */ fn f() -> &'static str { \"std::net\" }\n",
            "const R: &str = r#\"thread_rng\"#;\n",
            "#[cfg(test)]\nmod tests { fn g() { std::fs::read(\"x\"); } }\n",
        );
        assert_eq!(check_source("crates/log/src/x.rs", source), Vec::new());
    }

    #[test]
    fn allowances_are_per_file_and_per_needle() {
        let source = "fn f() { std::thread::spawn(|| ()); std::fs::read(\"x\"); }\n";
        let found = check_source("sim/src/runner.rs", source);
        assert_eq!(found.iter().map(|v| v.needle).collect::<Vec<_>>(), vec!["std::fs"]);
        assert_eq!(check_source("sim/src/world.rs", source).len(), 2);
    }

    #[test]
    fn a_node_composed_outside_crates_node_is_flagged_in_code_tests_and_fuzz_targets() {
        let wiring = "use keel_meta::driver::{start as start_meta, MetaDriverConfig};\nfn f() { keel_repl::driver::start(d, c, m, f, r); KafkaFront::new(m, r, c, k); }\n";
        let found: Vec<&str> = composition_violations("sim/tests/x.rs", wiring).iter().map(|v| v.needle).collect();
        assert_eq!(found, vec!["keel_meta::driver::start", "keel_repl::driver::start", "KafkaFront::new"]);
        assert_eq!(composition_violations("crates/kafka/fuzz/fuzz_targets/t.rs", "fn f() { serve_until(l, f, o); }\n").len(), 1);
        assert!(composition_violations("crates/node/src/lib.rs", wiring).is_empty(), "the composition root itself");
        assert!(composition_violations("crates/kafka/src/server.rs", "fn f() { serve_until(l, f, o); }\n").is_empty(), "the defining crate");
        let handles_only = "use keel_meta::driver::{MetaHandle, ProposalError};\n// keel_repl::driver::start in prose\n";
        assert!(composition_violations("sim/src/world.rs", handles_only).is_empty());
    }

    #[test]
    fn io_crate_tests_and_benches_are_exempt() {
        assert!(!is_checked("crates/io/src/disk/real.rs"));
        assert!(!is_checked("crates/log/benches/append.rs"));
        assert!(!is_checked("sim/tests/log_crash_consistency.rs"));
        assert!(is_checked("crates/log/src/log.rs"));
        assert!(is_checked("broker/src/main.rs"));
        assert!(!is_checked("README.md"));
    }
}
