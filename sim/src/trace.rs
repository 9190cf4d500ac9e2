//! Run traces: one line per event, hashed so two runs compare byte for byte.

use std::fmt::Write as _;

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

    /// Writes the rendered trace to a host file for the developer to read.
    pub fn write_to(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, self.render())
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
