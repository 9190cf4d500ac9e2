//! The regression corpus: seeds that once failed, kept so that every test
//! run replays them (`keel-sim regressions`, run by the test command). A
//! sweep given `--corpus FILE` appends its failing seeds; a person adds a
//! note of what the seed found once it is fixed, or points the entry at the
//! file `keel-sim shrink` wrote for it (a shrunk file keeps its schedule
//! even when the scenario it came from changes).
//!
//! The file is TOML, one `[[regression]]` table per seed:
//!
//! ```toml
//! [[regression]]
//! scenario = "scenarios/swarm.toml"   # relative to the repository root
//! seed = 19
//! checker = "acked-deletes-gone"      # the checker that failed
//! note = "a held-up create re-created a topic after its acknowledged delete"
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The corpus the test command replays.
pub const DEFAULT_CORPUS: &str = "scenarios/regressions/seeds.toml";

/// One kept seed.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Regression {
    pub scenario: PathBuf,
    pub seed: u64,
    pub checker: String,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CorpusFile {
    #[serde(default)]
    regression: Vec<Regression>,
}

/// Bad corpus input, with the file and line.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("{path}: cannot read the regression corpus: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Malformed { path: PathBuf, line: usize, message: String },
}

/// Reads a corpus.
pub fn load(path: &Path) -> Result<Vec<Regression>, CorpusError> {
    let text = std::fs::read_to_string(path).map_err(|source| CorpusError::Read { path: path.to_path_buf(), source })?;
    let file: CorpusFile = toml::from_str(&text).map_err(|error| {
        let line = error.span().map_or(1, |span| crate::scenario::line_at(&text, span.start));
        CorpusError::Malformed { path: path.to_path_buf(), line, message: error.message().to_string() }
    })?;
    Ok(file.regression)
}

/// Appends one failing seed as a `[[regression]]` table (the file and its
/// folder are made if missing).
pub fn append(corpus: &Path, scenario: &Path, seed: u64, checker: &str) -> std::io::Result<()> {
    if let Some(folder) = corpus.parent().filter(|folder| !folder.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder)?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(corpus)?;
    let scenario = scenario.display().to_string();
    writeln!(file, "\n[[regression]]\nscenario = {}\nseed = {seed}\nchecker = {}", toml_string(&scenario), toml_string(checker))
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_seeds_load_back_in_order_with_their_checker() {
        let dir = tempfile::tempdir().expect("temp dir");
        let corpus = dir.path().join("regressions").join("seeds.toml");
        append(&corpus, Path::new("scenarios/swarm.toml"), 19, "acked-deletes-gone").expect("append");
        append(&corpus, Path::new("scenarios/a \"quoted\" name.toml"), 7, "lost-write").expect("append");
        let loaded = load(&corpus).expect("load");
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[0], Regression { scenario: "scenarios/swarm.toml".into(), seed: 19, checker: "acked-deletes-gone".into(), note: None });
        assert_eq!(loaded[1].scenario, PathBuf::from("scenarios/a \"quoted\" name.toml"));
        assert_eq!(loaded[1].seed, 7);
    }

    #[test]
    fn a_malformed_corpus_names_its_file_and_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let corpus = dir.path().join("seeds.toml");
        std::fs::write(&corpus, "[[regression]]\nscenario = \"s.toml\"\nseed = \"nineteen\"\nchecker = \"x\"\n").expect("write");
        let error = load(&corpus).unwrap_err().to_string();
        assert!(error.contains("seeds.toml:3:"), "{error}");
        std::fs::write(&corpus, "[[regression]]\nscenario = \"s.toml\"\nseed = 1\nchecker = \"x\"\nseeed = 2\n").expect("write");
        let error = load(&corpus).unwrap_err().to_string();
        assert!(error.contains("seeds.toml:5:") && error.contains("seeed"), "{error}");
    }
}
