//! Run traces: one line per event, hashed so two runs compare byte for byte.

use std::fmt::Write as _;

use crate::trace_json::{TraceHeader, TraceViolation};

/// FNV-1a 64: stable across Rust versions and platforms, unlike `DefaultHasher`.
#[derive(Clone, Debug)]
pub struct TraceHash(u64);

impl TraceHash {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub fn new() -> Self {
        TraceHash(Self::OFFSET_BASIS)
    }

    pub fn update(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    pub fn value(&self) -> u64 {
        self.0
    }
}

impl Default for TraceHash {
    fn default() -> Self {
        TraceHash::new()
    }
}

/// The lines of one run. Kept whole so a failing seed can be written out.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    lines: Vec<String>,
    hash: TraceHash,
    /// The failed check, for the JSON trace's last line; not hashed (its
    /// line is, where the run notes it). Boxed: a failure carries its trace
    /// by value, and most traces have none.
    violation: Option<Box<TraceViolation>>,
}

impl Trace {
    pub fn new() -> Self {
        Trace::default()
    }

    pub fn record(&mut self, line: String) {
        self.hash.update(line.as_bytes());
        self.hash.update(b"\n");
        self.lines.push(line);
    }

    pub fn hash(&self) -> u64 {
        self.hash.value()
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Records what failed (the first violation is the one to keep).
    pub fn set_violation(&mut self, violation: TraceViolation) {
        self.violation.get_or_insert(Box::new(violation));
    }

    pub fn violation(&self) -> Option<&TraceViolation> {
        self.violation.as_deref()
    }

    /// A copy of the trace of a crash-consistency check that failed at operation `step`.
    pub fn failed(&self, check: &str, step: usize, message: &str) -> Trace {
        let mut trace = self.clone();
        trace.set_violation(TraceViolation { checker: check.to_string(), t_us: None, step: Some(step as u64), message: message.to_string() });
        trace
    }

    /// Writes the trace to a host file for the developer to read: JSON lines
    /// (`trace_json`) headed by `header`, ending with the violation if the
    /// run failed; or, for a file named `*.txt`, the text `render` gives.
    pub fn write_to(&self, path: &std::path::Path, header: &TraceHeader) -> std::io::Result<()> {
        if path.extension().is_some_and(|extension| extension == "txt") {
            std::fs::write(path, self.render())
        } else {
            std::fs::write(path, crate::trace_json::render(header, &self.lines, self.violation()))
        }
    }

    /// The whole trace as text, one event per line, ending with its hash.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for line in &self.lines {
            text.push_str(line);
            text.push('\n');
        }
        let _ = writeln!(text, "trace-hash {:016x}", self.hash());
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_vectors() {
        let mut hash = TraceHash::new();
        assert_eq!(hash.value(), 0xcbf2_9ce4_8422_2325);
        hash.update(b"a");
        assert_eq!(hash.value(), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn trace_hash_depends_on_every_line_and_order() {
        let build = |lines: &[&str]| {
            let mut trace = Trace::new();
            lines.iter().for_each(|l| trace.record(l.to_string()));
            trace.hash()
        };
        assert_eq!(build(&["a", "b"]), build(&["a", "b"]));
        assert_ne!(build(&["a", "b"]), build(&["b", "a"]));
        assert_ne!(build(&["ab"]), build(&["a", "b"]));
    }
}
