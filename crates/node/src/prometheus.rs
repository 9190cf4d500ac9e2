//! Prometheus text exposition format 0.0.4: each family once with `# HELP`
//! and `# TYPE`, then its samples; label values and help text escaped.

use std::collections::BTreeSet;
use std::fmt::Write as _;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample's value: integers print exactly, floats in Prometheus' spelling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Uint(u64),
    Float(f64),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Value::Uint(v) => write!(f, "{v}"),
            Value::Float(v) if v.is_nan() => f.write_str("NaN"),
            Value::Float(v) if v == f64::INFINITY => f.write_str("+Inf"),
            Value::Float(v) if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            Value::Float(v) => write!(f, "{v}"),
        }
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Uint(v)
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Uint(u64::from(v))
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Uint(v as u64)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Uint(u64::from(v))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

/// Label value escaping: backslash, double quote and line feed.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Help text escaping: backslash and line feed.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A page of metric families being written.
#[derive(Default)]
pub struct Exposition {
    out: String,
    families: BTreeSet<String>,
    current: Option<(String, Kind)>,
}

impl Exposition {
    pub fn new() -> Self {
        Exposition::default()
    }

    /// Starts a family; its samples follow. A family is declared once.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        assert!(self.families.insert(name.to_string()), "metric family {name} declared twice");
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.name());
        self.current = Some((name.to_string(), kind));
    }

    /// One sample of the current family (`name` is the family's, or for a
    /// histogram its `_bucket`, `_sum` or `_count` series).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Value>) {
        let (family, kind) = self.current.as_ref().expect("a sample belongs to a declared family");
        let belongs = match kind {
            Kind::Histogram => [format!("{family}_bucket"), format!("{family}_sum"), format!("{family}_count")].iter().any(|n| n == name),
            Kind::Counter | Kind::Gauge => name == family,
        };
        assert!(belongs, "sample {name} outside its family {family}");
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (index, (label, value)) in labels.iter().enumerate() {
                if index > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", escape_label_value(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", value.into());
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_carry_help_and_type_and_labels_are_escaped() {
        let mut page = Exposition::new();
        page.family("keel_partition_high_watermark", Kind::Gauge, "High watermark\\next line");
        page.sample("keel_partition_high_watermark", &[("topic", "a\"b\\c\nd"), ("partition", "0")], 3u64);
        page.family("keel_latency_seconds", Kind::Histogram, "Latency.");
        page.sample("keel_latency_seconds_bucket", &[("le", "+Inf")], 2u64);
        page.sample("keel_latency_seconds_sum", &[], 0.25);
        page.sample("keel_latency_seconds_count", &[], 2u64);
        let text = page.finish();
        assert_eq!(
            text,
            concat!(
                "# HELP keel_partition_high_watermark High watermark\\\\next line\n",
                "# TYPE keel_partition_high_watermark gauge\n",
                "keel_partition_high_watermark{topic=\"a\\\"b\\\\c\\nd\",partition=\"0\"} 3\n",
                "# HELP keel_latency_seconds Latency.\n",
                "# TYPE keel_latency_seconds histogram\n",
                "keel_latency_seconds_bucket{le=\"+Inf\"} 2\n",
                "keel_latency_seconds_sum 0.25\n",
                "keel_latency_seconds_count 2\n",
            )
        );
        assert_eq!(Value::Float(f64::INFINITY).to_string(), "+Inf");
        assert_eq!(Value::Float(1.0).to_string(), "1");
        assert_eq!(Value::Float(f64::NAN).to_string(), "NaN");
    }
}
