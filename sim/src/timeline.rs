//! `keel-sim timeline`: one run's JSON trace drawn as a self-contained HTML
//! page with an inline SVG (no scripts, no external resources): a lane per
//! broker with its Raft role and term over time and the spans it was down,
//! faults as shaded spans from firing to undo, client produce/ack/read marks
//! on the broker they addressed, and the violation marked at its time with
//! the trace records it names highlighted.
//!
//! Every element a reader (or a test) looks for carries a class and data
//! attributes: `g.lane[data-node]`, `rect.leader[data-term]`, `rect.down`,
//! `rect.fault[data-kind]`, `.mark.send|ack|read`, `.involved`, `#violation`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::trace_json::{TraceEvent, TraceHeader, TraceViolation, ViolationLine, TRACE_FORMAT, TRACE_KIND};

/// Why a trace could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error("{path}: cannot read: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Malformed { path: String, line: usize, message: String },
    #[error("{path}: cannot write: {source}")]
    Write { path: String, source: std::io::Error },
}

/// A JSON trace, read back.
#[derive(Clone, Debug)]
pub struct TimelineInput {
    pub header: TraceHeader,
    pub events: Vec<TraceEvent>,
    pub violation: Option<TraceViolation>,
}

/// Reads the JSON trace `text` (from `path`, named in errors).
pub fn parse(path: &str, text: &str) -> Result<TimelineInput, TimelineError> {
    let malformed = |line: usize, message: String| TimelineError::Malformed { path: path.to_string(), line, message };
    let mut lines = text.lines().enumerate().map(|(index, line)| (index + 1, line)).filter(|(_, line)| !line.trim().is_empty());
    let (first_line, first) = lines.next().ok_or_else(|| malformed(1, "empty file; expected a keel-sim JSON trace (`--trace FILE.jsonl`)".to_string()))?;
    let header_value: Value = serde_json::from_str(first).map_err(|error| {
        malformed(first_line, format!("not a keel-sim JSON trace ({error}); a `.txt` trace cannot be drawn: record the seed again with `--trace FILE.jsonl`"))
    })?;
    if header_value.get("trace").and_then(Value::as_str) != Some(TRACE_KIND) {
        return Err(malformed(first_line, format!("not a keel-sim JSON trace: the first line has no `\"trace\": \"{TRACE_KIND}\"`")));
    }
    if header_value.get("format").and_then(Value::as_u64) != Some(TRACE_FORMAT) {
        return Err(malformed(first_line, format!("trace format {} is not the format {TRACE_FORMAT} this keel-sim reads", header_value["format"])));
    }
    let header: TraceHeader = serde_json::from_value(header_value).map_err(|error| malformed(first_line, format!("bad trace header: {error}")))?;
    let mut events = Vec::new();
    let mut violation = None;
    for (number, line) in lines {
        if violation.is_some() {
            return Err(malformed(number, "a line after the violation, which ends a trace".to_string()));
        }
        let value: Value = serde_json::from_str(line).map_err(|error| malformed(number, format!("not JSON: {error}")))?;
        if value.get("violation").is_some() {
            let ViolationLine { violation: found } = serde_json::from_value(value).map_err(|error| malformed(number, format!("bad violation: {error}")))?;
            violation = Some(found);
        } else {
            events.push(serde_json::from_value(value).map_err(|error| malformed(number, format!("not a trace event: {error}")))?);
        }
    }
    Ok(TimelineInput { header, events, violation })
}

/// Reads `trace`, writes the page to `output`; returns a one-line summary.
pub fn render_file(trace: &Path, output: &Path) -> Result<String, TimelineError> {
    let path = trace.display().to_string();
    let text = std::fs::read_to_string(trace).map_err(|source| TimelineError::Read { path: path.clone(), source })?;
    let input = parse(&path, &text)?;
    let timeline = Timeline::build(&input);
    std::fs::write(output, timeline.html(&input)).map_err(|source| TimelineError::Write { path: output.display().to_string(), source })?;
    let violation = match &timeline.violation {
        Some(violation) => format!("violation of `{}`, {} records involved", violation.checker, timeline.involved.len()),
        None => "no violation".to_string(),
    };
    Ok(format!("{} lanes, {} events, {} fault spans, {violation}", timeline.nodes.len(), input.events.len(), timeline.faults.len()))
}

/// A shaded span on a lane, or on the cluster lane when `node` is `None`.
#[derive(Clone, Debug)]
struct Span {
    node: Option<u64>,
    start: f64,
    end: f64,
    kind: String,
    label: String,
    /// The trace line (index into the events) that opened it.
    line: usize,
}

/// The timeline a trace draws, in trace time units (seconds, or steps for
/// the step-numbered crash-consistency traces).
struct Timeline {
    nodes: Vec<u64>,
    end: f64,
    unit: &'static str,
    leaders: Vec<(u64, f64, f64, u64)>,
    down: Vec<Span>,
    faults: Vec<Span>,
    instants: Vec<(f64, usize)>,
    marks: Vec<usize>,
    times: Vec<f64>,
    violation: Option<TraceViolation>,
    violation_at: Option<f64>,
    involved: BTreeSet<usize>,
}

/// `n12` as 12.
fn node_id(name: &str) -> Option<u64> {
    name.strip_prefix('n').and_then(|digits| digits.parse().ok())
}

fn field_u64(event: &TraceEvent, key: &str) -> Option<u64> {
    event.fields.get(key).and_then(Value::as_u64)
}

fn field_str<'a>(event: &'a TraceEvent, key: &str) -> Option<&'a str> {
    event.fields.get(key).and_then(Value::as_str)
}

/// The node ids a fault line names (`nodes`), an undo line's `brokers`.
fn fault_nodes(event: &TraceEvent) -> Vec<u64> {
    let listed = event.fields.get("nodes").or(event.fields.get("brokers")).and_then(Value::as_array);
    listed.into_iter().flatten().filter_map(|v| v.as_u64().or_else(|| v.as_str().and_then(node_id))).collect()
}

/// Fault kinds that take their broker down.
const DOWN_KINDS: [&str; 3] = ["kill", "crash", "stop"];
/// Fault kinds the heal does not end.
const OUTLIVE_HEAL: [&str; 1] = ["clock"];

impl Timeline {
    fn build(input: &TimelineInput) -> Timeline {
        let events = &input.events;
        let has_time = events.iter().any(|e| e.t_us.is_some());
        let unit = if has_time { "s" } else { "step" };
        // Lines without a time of their own stand at the time of the line before.
        let mut times = Vec::with_capacity(events.len());
        let mut now = 0.0;
        for event in events {
            let at = if has_time { event.t_us.map(|t| t as f64 / 1e6) } else { field_u64(event, "step").map(|s| s as f64) };
            now = at.unwrap_or(now);
            times.push(now);
        }
        let violation = input.violation.clone().or_else(|| {
            events.iter().find(|e| e.event == "violation").map(|e| TraceViolation {
                checker: field_str(e, "checker").unwrap_or("unknown").to_string(),
                t_us: e.t_us,
                step: field_u64(e, "step"),
                message: field_str(e, "message").unwrap_or(&e.text).to_string(),
            })
        });
        let violation_at = violation.as_ref().and_then(|v| if has_time { v.t_us.map(|t| t as f64 / 1e6) } else { v.step.map(|s| s as f64) });
        let end = times.iter().copied().chain(violation_at).fold(0.0_f64, f64::max).max(if has_time { 0.001 } else { 1.0 });

        let mut nodes = BTreeSet::new();
        for event in events {
            nodes.extend(event.node.as_deref().and_then(node_id));
            nodes.extend(field_str(event, "leader").and_then(node_id));
            if event.event == "fault" {
                nodes.extend(fault_nodes(event));
            }
        }
        let mut timeline = Timeline {
            nodes: nodes.into_iter().collect(),
            end,
            unit,
            leaders: Vec::new(),
            down: Vec::new(),
            faults: Vec::new(),
            instants: Vec::new(),
            marks: Vec::new(),
            times,
            violation,
            violation_at,
            involved: BTreeSet::new(),
        };
        timeline.walk(events);
        if let Some(violation) = timeline.violation.clone() {
            timeline.involved = involved(events, &violation.message);
        }
        timeline
    }

    /// One pass over the events: roles, down spans, fault spans, marks.
    fn walk(&mut self, events: &[TraceEvent]) {
        let mut leading: BTreeMap<u64, (f64, u64)> = BTreeMap::new();
        let mut down_since: BTreeMap<u64, (f64, String, usize)> = BTreeMap::new();
        let mut up: BTreeSet<u64> = BTreeSet::new();
        let mut open: Vec<(Span, &TraceEvent)> = Vec::new();
        let end = self.end;
        for (index, event) in events.iter().enumerate() {
            let at = self.times[index];
            let node = event.node.as_deref().and_then(node_id);
            // A broker goes down: its leadership ends there.
            let mut take_down =
                |ids: &[u64], why: &str, up: &mut BTreeSet<u64>, leading: &mut BTreeMap<u64, (f64, u64)>, leaders: &mut Vec<(u64, f64, f64, u64)>| {
                    for id in ids {
                        up.remove(id);
                        down_since.entry(*id).or_insert((at, why.to_string(), index));
                        if let Some((since, term)) = leading.remove(id) {
                            leaders.push((*id, since, at, term));
                        }
                    }
                };
            match event.event.as_str() {
                "leader" if node.is_some() => {
                    let (id, term) = (node.expect("checked"), field_u64(event, "term").unwrap_or(0));
                    // A leader of a newer term ends every older leadership.
                    let ended: Vec<u64> = leading.iter().filter(|(other, (_, t))| **other == id || *t < term).map(|(other, _)| *other).collect();
                    for other in ended {
                        let (since, t) = leading.remove(&other).expect("listed");
                        self.leaders.push((other, since, at, t));
                    }
                    leading.insert(id, (at, term));
                }
                "start" | "restart" | "restarted" if node.is_some() => {
                    let id = node.expect("checked");
                    up.insert(id);
                    if let Some((since, why, line)) = down_since.remove(&id) {
                        self.down.push(Span { node: Some(id), start: since, end: at, kind: "down".to_string(), label: why, line });
                    }
                }
                "halts" if node.is_some() => take_down(&[node.expect("checked")], "halted", &mut up, &mut leading, &mut self.leaders),
                "fault" => {
                    let kind = field_str(event, "kind").unwrap_or("fault").to_string();
                    let described = field_str(event, "described").unwrap_or(&event.text).to_string();
                    let skipped = event.fields.get("skipped").and_then(Value::as_bool).unwrap_or(false);
                    let targets = fault_nodes(event);
                    if kind == "heal" {
                        self.close_all(&mut open, at);
                        self.instants.push((at, index));
                    } else if skipped || kind == "restart" {
                        self.instants.push((at, index));
                    } else {
                        if DOWN_KINDS.contains(&kind.as_str()) {
                            take_down(&targets, &kind, &mut up, &mut leading, &mut self.leaders);
                        }
                        if kind == "power_loss" {
                            let every: Vec<u64> = up.iter().copied().collect();
                            take_down(&every, &kind, &mut up, &mut leading, &mut self.leaders);
                        }
                        let span_node = if targets.len() == 1 && kind != "one_way" { targets.first().copied() } else { None };
                        open.push((Span { node: span_node, start: at, end, kind, label: described, line: index }, event));
                    }
                }
                "undo" => {
                    let kind = field_str(event, "kind").unwrap_or_default();
                    let brokers = fault_nodes(event);
                    // A drawn (swarm) fault has no line of its own: its undo says line 0.
                    let line = field_u64(event, "line").unwrap_or(0);
                    let same = |fault: &TraceEvent| field_u64(fault, "line").unwrap_or(0) == line && field_str(fault, "kind") == Some(kind);
                    let matching = open
                        .iter()
                        .position(|(_, fault)| same(fault) && (brokers.is_empty() || fault_nodes(fault) == brokers))
                        .or_else(|| open.iter().position(|(_, fault)| same(fault)));
                    if let Some(at_index) = matching {
                        let (mut span, _) = open.remove(at_index);
                        span.end = at;
                        self.faults.push(span);
                    }
                }
                "heal" => self.close_all(&mut open, at),
                "send" | "ack" | "read" | "leads" | "truncates" => self.marks.push(index),
                _ if event.actor.is_some() && node.is_some() && is_error(event) => self.marks.push(index),
                _ => {}
            }
        }
        for (id, (since, term)) in leading {
            self.leaders.push((id, since, end, term));
        }
        for (id, (since, why, line)) in down_since {
            self.down.push(Span { node: Some(id), start: since, end, kind: "down".to_string(), label: why, line });
        }
        self.faults.extend(open.into_iter().map(|(span, _)| span));
        self.faults.sort_by(|a, b| a.start.total_cmp(&b.start).then(a.line.cmp(&b.line)));
    }

    /// The heal ends the faults still open (but a clock's skew and drift).
    fn close_all(&mut self, open: &mut Vec<(Span, &TraceEvent)>, at: f64) {
        let (kept, ended): (Vec<_>, Vec<_>) = open.drain(..).partition(|(span, _)| OUTLIVE_HEAL.contains(&span.kind.as_str()));
        *open = kept;
        self.faults.extend(ended.into_iter().map(|(mut span, _)| {
            span.end = at;
            span
        }));
    }
}

/// A client's request that failed: refused, answered with an error, given up.
fn is_error(event: &TraceEvent) -> bool {
    ["refused", "error", "failed", "given up"].iter().any(|word| event.text.contains(word))
}

/// The trace lines a violation's message names: produce and read records
/// covering an offset it names (in its partition, where the trace says
/// which), the batch of a record value it quotes (`p2-b1-r3`), and lines
/// naming a topic or partition it names (`topic-7`, `data-0`).
fn involved(events: &[TraceEvent], message: &str) -> BTreeSet<usize> {
    let words: Vec<&str> = message.split(|c: char| c.is_whitespace() || c == ',' || c == ':' || c == ';' || c == '(' || c == ')').collect();
    let mut offsets: Vec<(Option<u64>, u64)> = Vec::new();
    let mut partition = None;
    for (at, word) in words.iter().enumerate() {
        let next = words.get(at + 1).and_then(|w| w.parse::<u64>().ok());
        match *word {
            "partition" => partition = next.or(partition),
            "offset" | "offsets" => {
                let mut rest = at + 1;
                while let Some(offset) = words.get(rest).and_then(|w| w.parse::<u64>().ok()).or_else(|| (words.get(rest) == Some(&"and")).then_some(u64::MAX)) {
                    if offset != u64::MAX {
                        offsets.push((partition, offset));
                    }
                    rest += 1;
                }
            }
            _ => {}
        }
    }
    // Values quoted in backticks: a record value names its producer and batch.
    let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    let batches: BTreeSet<(String, String)> = quoted
        .iter()
        .filter_map(|value| {
            let mut parts = value.split('-');
            let (actor, batch) = (parts.next()?, parts.next()?);
            (batch.starts_with('b') && batch.len() > 1).then(|| (actor.to_string(), batch.to_string()))
        })
        .collect();
    // Names with a number: topics and partitions (`topic-7`, `data-0`), not record values.
    let names: BTreeSet<&str> = words
        .iter()
        .map(|w| w.trim_matches(|c: char| c == '`' || c == '.' || c == '\''))
        .filter(|w| w.contains('-') && w.bytes().any(|b| b.is_ascii_digit()) && w.bytes().next().is_some_and(|b| b.is_ascii_alphabetic()))
        .filter(|w| !quoted.contains(w) || !batches.iter().any(|(actor, _)| w.starts_with(actor.as_str())))
        .collect();
    // Which partition each batch went to, from its send line.
    let mut batch_partition: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for event in events {
        if let (Some(actor), Some(batch), Some(partition)) = (event.actor.as_deref(), field_str(event, "batch"), field_u64(event, "partition")) {
            batch_partition.insert((actor, batch), partition);
        }
    }
    let mut found = BTreeSet::new();
    for (index, event) in events.iter().enumerate() {
        if event.event == "violation" {
            continue;
        }
        let actor = event.actor.as_deref().unwrap_or_default();
        let batch = field_str(event, "batch");
        if batch.is_some_and(|batch| batches.contains(&(actor.to_string(), batch.to_string()))) {
            found.insert(index);
        }
        let range = match event.event.as_str() {
            "ack" => field_u64(event, "base_offset").zip(field_u64(event, "count")),
            "read" => field_u64(event, "offset").zip(field_u64(event, "count")),
            _ => None,
        };
        if let Some((first, count)) = range {
            let in_partition = batch.and_then(|batch| batch_partition.get(&(actor, batch))).copied();
            let covers = |(wanted, offset): &(Option<u64>, u64)| {
                (first..first.saturating_add(count)).contains(offset) && (wanted.is_none() || in_partition.is_none() || *wanted == in_partition)
            };
            if offsets.iter().any(covers) {
                found.insert(index);
            }
        }
        let tokens = event.text.split(|c: char| c.is_whitespace() || c == '`' || c == ',' || c == ':' || c == '(' || c == ')');
        if tokens.into_iter().any(|token| names.contains(token)) {
            found.insert(index);
        }
    }
    found
}

/// Text for HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const WIDTH: f64 = 1400.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
/// A lane: the role bar (18 high), the band of the broker's faults (9), then
/// rows of produce sends, acks and reads.
const LANE_HEIGHT: f64 = 56.0;
const ROLE_HEIGHT: f64 = 18.0;
const FAULT_BAND_TOP: f64 = 20.0;
const FAULT_BAND_HEIGHT: f64 = 9.0;
const MARKS_TOP: f64 = 31.0;
const CLUSTER_ROW_HEIGHT: f64 = 16.0;

const STYLE: &str = "\
body{font:13px/1.4 system-ui,sans-serif;margin:16px;color:#222}
h1{font-size:18px;margin:0 0 6px}
code,pre{font:12px ui-monospace,monospace}
.meta td{padding:0 12px 0 0}
svg{border:1px solid #ccc;background:#fff}
.lane-bg{fill:#f4f6f8}
.up{fill:#dfe9df}
.leader{fill:#3d7dd8}
.down{fill:#555;opacity:.55}
.fault{fill:#e69a2e;opacity:.6;stroke:#c0701a;stroke-width:.5}
.fault-point{stroke:#c0701a;stroke-width:2}
.mark.send{fill:#7a5cc2}
.mark.ack{fill:#2a9d4b}
.mark.read{fill:#1d8aa8}
.mark.leads{fill:#3d7dd8}
.mark.truncates{fill:#b8322a}
.mark.error{fill:#b8322a}
.involved{stroke:#d4145a;stroke-width:2.5}
.mark.involved{fill:#d4145a}
#violation{stroke:#d4145a;stroke-width:2}
.violation-label{fill:#d4145a;font-weight:bold}
.axis line{stroke:#999}
text{font-size:11px;fill:#333}
.lane-label{font-weight:bold;font-size:12px}
.term-label{fill:#fff;font-size:10px}
.fault-label{font-size:10px;fill:#5a3000}
.fault-label.small{font-size:8px}
#violation-details{border:2px solid #d4145a;padding:8px 12px;margin:12px 0;background:#fff3f7}
li.involved-line{background:#ffe0ec}
.legend span{display:inline-block;margin-right:14px}
.swatch{display:inline-block;width:14px;height:10px;margin-right:4px;vertical-align:middle}
";

impl Timeline {
    fn x(&self, at: f64) -> f64 {
        LEFT + (at / self.end).clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT)
    }

    fn width(&self, start: f64, end: f64) -> f64 {
        (self.x(end) - self.x(start)).max(1.5)
    }

    /// Cluster-wide faults stacked in rows so overlapping spans stay visible.
    fn cluster_rows(&self) -> Vec<usize> {
        let mut row_ends: Vec<f64> = Vec::new();
        let mut rows = Vec::new();
        for span in self.faults.iter().filter(|s| s.node.is_none()) {
            let row = row_ends.iter().position(|end| *end <= span.start).unwrap_or(row_ends.len());
            if row == row_ends.len() {
                row_ends.push(span.end);
            } else {
                row_ends[row] = span.end;
            }
            rows.push(row);
        }
        rows
    }

    fn html(&self, input: &TimelineInput) -> String {
        let header = &input.header;
        let mut page = String::new();
        let title = format!("keel-sim seed {} {}", header.seed, header.scenario.as_deref().unwrap_or(&header.command));
        let _ = write!(
            page,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
            escape(&title),
            escape(&title)
        );
        let _ = writeln!(
            page,
            "<table class=\"meta\"><tr><td>build</td><td><code id=\"build\">{}</code></td></tr><tr><td>trace hash</td><td><code>{}</code></td></tr><tr><td>replay</td><td><code>{}</code></td></tr><tr><td>events</td><td>{}</td></tr></table>",
            escape(&header.build),
            escape(&header.trace_hash),
            escape(&header.replay),
            input.events.len()
        );
        match &self.violation {
            Some(violation) => {
                let at = match (violation.t_us, violation.step) {
                    (Some(t_us), _) => crate::meta_check::format_time(t_us) + " simulated",
                    (None, Some(step)) => format!("step {step}"),
                    (None, None) => "the end".to_string(),
                };
                let _ = write!(
                    page,
                    "<section id=\"violation-details\"><b>checker <code class=\"checker\">{}</code> failed at {}</b><p class=\"message\">{}</p>",
                    escape(&violation.checker),
                    escape(&at),
                    escape(&violation.message)
                );
                let _ = writeln!(page, "<p>{} trace records involved (highlighted in the chart):</p><ol class=\"involved-list\">", self.involved.len());
                for index in &self.involved {
                    let _ = writeln!(page, "<li class=\"involved-line\" data-line=\"{index}\"><code>{}</code></li>", escape(&input.events[*index].text));
                }
                page.push_str("</ol></section>\n");
            }
            None => page.push_str("<p id=\"no-violation\">The run passed: no violation.</p>\n"),
        }
        page.push_str(
            "<p class=\"legend\"><span><i class=\"swatch\" style=\"background:#dfe9df\"></i>up (follower or candidate)</span>\
             <span><i class=\"swatch\" style=\"background:#3d7dd8\"></i>Raft leader (term)</span>\
             <span><i class=\"swatch\" style=\"background:#555\"></i>down</span>\
             <span><i class=\"swatch\" style=\"background:#e69a2e\"></i>fault</span>\
             <span><i class=\"swatch\" style=\"background:#7a5cc2\"></i>produce sent</span>\
             <span><i class=\"swatch\" style=\"background:#2a9d4b\"></i>produce acknowledged</span>\
             <span><i class=\"swatch\" style=\"background:#1d8aa8\"></i>read</span>\
             <span><i class=\"swatch\" style=\"background:#b8322a\"></i>error, truncation</span>\
             <span><i class=\"swatch\" style=\"background:#d4145a\"></i>violation and the records involved</span> (hover for the trace line)</p>\n",
        );
        self.svg(&mut page, input);
        page.push_str("<details><summary>The whole trace</summary><ol start=\"0\" class=\"trace\">\n");
        for (index, event) in input.events.iter().enumerate() {
            let class = if self.involved.contains(&index) { " class=\"involved-line\"" } else { "" };
            let _ = writeln!(page, "<li id=\"line-{index}\"{class}><code>{}</code></li>", escape(&event.text));
        }
        page.push_str("</ol></details>\n</body></html>\n");
        page
    }

    fn svg(&self, page: &mut String, input: &TimelineInput) {
        let rows = self.cluster_rows();
        let cluster_rows = rows.iter().copied().max().map_or(1, |max| max + 1);
        let cluster_height = cluster_rows as f64 * CLUSTER_ROW_HEIGHT + 8.0;
        let lanes_top = TOP + cluster_height;
        let height = lanes_top + self.nodes.len() as f64 * LANE_HEIGHT + 40.0;
        let lane_top = |node: u64| lanes_top + self.nodes.iter().position(|n| *n == node).unwrap_or(0) as f64 * LANE_HEIGHT;
        let _ =
            writeln!(page, "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"timeline\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\">");
        // The cluster lane: faults on the network or on every broker.
        let _ = writeln!(page, "<g class=\"lane cluster\" data-lane=\"cluster\"><text class=\"lane-label\" x=\"4\" y=\"{}\">cluster</text>", TOP + 12.0);
        let _ = writeln!(page, "<rect class=\"lane-bg\" x=\"{LEFT}\" y=\"{TOP}\" width=\"{}\" height=\"{}\"/>", WIDTH - LEFT - RIGHT, cluster_height - 4.0);
        for (span, row) in self.faults.iter().filter(|s| s.node.is_none()).zip(&rows) {
            let y = TOP + *row as f64 * CLUSTER_ROW_HEIGHT + 1.0;
            self.fault_rect(page, span, y, CLUSTER_ROW_HEIGHT - 2.0, input);
        }
        page.push_str("</g>\n");
        for node in &self.nodes {
            let top = lane_top(*node);
            let _ = writeln!(page, "<g class=\"lane\" data-node=\"n{node}\"><text class=\"lane-label\" x=\"4\" y=\"{}\">n{node}</text>", top + 16.0);
            let _ = writeln!(page, "<rect class=\"lane-bg\" x=\"{LEFT}\" y=\"{top}\" width=\"{}\" height=\"{}\"/>", WIDTH - LEFT - RIGHT, LANE_HEIGHT - 4.0);
            // Up from the first start to the end; down spans and leadership over it.
            let first_up = input.events.iter().zip(&self.times).find(|(e, _)| e.node.as_deref().and_then(node_id) == Some(*node)).map(|(_, at)| *at);
            if let Some(start) = first_up {
                let _ = writeln!(
                    page,
                    "<rect class=\"up\" x=\"{:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{ROLE_HEIGHT}\"/>",
                    self.x(start),
                    self.width(start, self.end)
                );
            }
            for (id, start, end, term) in self.leaders.iter().filter(|l| l.0 == *node) {
                let (x, width) = (self.x(*start), self.width(*start, *end));
                let _ = write!(
                    page,
                    "<rect class=\"leader\" data-node=\"n{id}\" data-term=\"{term}\" x=\"{x:.1}\" y=\"{top}\" width=\"{width:.1}\" height=\"{ROLE_HEIGHT}\"><title>n{id} Raft leader, term {term}: {} to {}</title></rect>",
                    self.show(*start),
                    self.show(*end)
                );
                if width > 28.0 {
                    let _ = write!(page, "<text class=\"term-label\" x=\"{:.1}\" y=\"{}\">t{term}</text>", x + 3.0, top + 13.0);
                }
                page.push('\n');
            }
            for span in self.down.iter().filter(|s| s.node == Some(*node)) {
                let _ = writeln!(
                    page,
                    "<rect class=\"down\" data-node=\"n{node}\" data-reason=\"{}\" x=\"{:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{ROLE_HEIGHT}\"><title>n{node} down ({}): {} to {}</title></rect>",
                    escape(&span.label),
                    self.x(span.start),
                    self.width(span.start, span.end),
                    escape(&span.label),
                    self.show(span.start),
                    self.show(span.end)
                );
            }
            for span in self.faults.iter().filter(|s| s.node == Some(*node)) {
                self.fault_rect(page, span, top + FAULT_BAND_TOP, FAULT_BAND_HEIGHT, input);
            }
            for index in self.marks.iter().filter(|i| input.events[**i].node.as_deref().and_then(node_id) == Some(*node)) {
                self.mark(page, *index, &input.events[*index], top + MARKS_TOP);
            }
            page.push_str("</g>\n");
        }
        for (at, index) in &self.instants {
            let x = self.x(*at);
            let _ = writeln!(
                page,
                "<line class=\"fault-point\" data-line=\"{index}\" x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{}\"><title>{}</title></line>",
                TOP + cluster_height - 4.0,
                escape(&input.events[*index].text)
            );
        }
        self.axis(page, lanes_top + self.nodes.len() as f64 * LANE_HEIGHT);
        if let (Some(violation), Some(at)) = (&self.violation, self.violation_at) {
            let x = self.x(at);
            let _ = writeln!(
                page,
                "<line id=\"violation\" class=\"violation\" data-checker=\"{}\" data-at=\"{}\" x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\"><title>checker {} failed at {}: {}</title></line>",
                escape(&violation.checker),
                self.show(at),
                TOP - 12.0,
                lanes_top + self.nodes.len() as f64 * LANE_HEIGHT,
                escape(&violation.checker),
                self.show(at),
                escape(&violation.message)
            );
            let anchor = if x > WIDTH / 2.0 { "end" } else { "start" };
            let _ = writeln!(
                page,
                "<text class=\"violation-label\" x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{} at {}</text>",
                if anchor == "end" { x - 4.0 } else { x + 4.0 },
                TOP - 16.0 + 12.0 - 8.0,
                escape(&violation.checker),
                self.show(at)
            );
        }
        page.push_str("</svg>\n");
    }

    fn fault_rect(&self, page: &mut String, span: &Span, y: f64, height: f64, input: &TimelineInput) {
        let (x, width) = (self.x(span.start), self.width(span.start, span.end));
        let node = span.node.map_or(String::new(), |n| format!(" data-node=\"n{n}\""));
        let _ = write!(
            page,
            "<rect class=\"fault\" data-kind=\"{}\"{node} data-line=\"{}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{width:.1}\" height=\"{height:.1}\"><title>{} ({} to {})</title></rect>",
            escape(&span.kind),
            span.line,
            escape(&input.events[span.line].text),
            self.show(span.start),
            self.show(span.end)
        );
        // The cluster lane says what the fault was; a broker's band its kind.
        let (label, size) = if span.node.is_none() { (span.label.as_str(), 5.5) } else { (span.kind.as_str(), 4.5) };
        if width > 8.0 * size {
            let label: String = label.chars().take((width / size) as usize).collect();
            let class = if span.node.is_none() { "fault-label" } else { "fault-label small" };
            let _ = write!(page, "<text class=\"{class}\" x=\"{:.1}\" y=\"{:.1}\">{}</text>", x + 2.0, y + height - 2.0, escape(&label));
        }
        page.push('\n');
    }

    fn mark(&self, page: &mut String, index: usize, event: &TraceEvent, y: f64) {
        let x = self.x(self.times[index]);
        let kind = if matches!(event.event.as_str(), "send" | "ack" | "read" | "leads" | "truncates") { event.event.as_str() } else { "error" };
        let involved = if self.involved.contains(&index) { " involved" } else { "" };
        let mut data = format!(" data-line=\"{index}\"");
        if let Some(actor) = &event.actor {
            let _ = write!(data, " data-actor=\"{}\"", escape(actor));
        }
        for key in ["batch", "partition", "base_offset", "offset", "count", "epoch"] {
            if let Some(value) = event.fields.get(key) {
                let shown = value.as_str().map_or_else(|| value.to_string(), str::to_string);
                let _ = write!(data, " data-{}=\"{}\"", key.replace('_', "-"), escape(&shown));
            }
        }
        let title = escape(&event.text);
        // Each kind in its own row of the lane and its own shape.
        let _ = match kind {
            "send" => writeln!(page, "<path class=\"mark send{involved}\"{data} d=\"M{:.1},{:.1} l3.5,6 l-7,0 z\"><title>{title}</title></path>", x, y),
            "ack" => writeln!(page, "<circle class=\"mark ack{involved}\"{data} cx=\"{x:.1}\" cy=\"{:.1}\" r=\"3\"><title>{title}</title></circle>", y + 10.0),
            "read" => writeln!(
                page,
                "<rect class=\"mark read{involved}\"{data} x=\"{:.1}\" y=\"{:.1}\" width=\"6\" height=\"6\"><title>{title}</title></rect>",
                x - 3.0,
                y + 14.0
            ),
            other => writeln!(
                page,
                "<rect class=\"mark {other}{involved}\"{data} x=\"{:.1}\" y=\"{y:.1}\" width=\"2\" height=\"20\"><title>{title}</title></rect>",
                x - 1.0
            ),
        };
    }

    fn axis(&self, page: &mut String, y: f64) {
        let step = nice_step(self.end / 10.0);
        page.push_str("<g class=\"axis\">");
        let mut tick = 0.0;
        while tick <= self.end + step * 1e-9 {
            let x = self.x(tick);
            let _ = write!(
                page,
                "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke-dasharray=\"2,4\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                y + 4.0,
                y + 16.0,
                self.show(tick)
            );
            tick += step;
        }
        let label = if self.unit == "s" { "simulated time (s)" } else { "operation (step)" };
        let _ = writeln!(page, "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text></g>", (WIDTH + LEFT) / 2.0, y + 32.0);
    }

    /// A time in the trace's unit, as the axis and titles show it.
    fn show(&self, at: f64) -> String {
        if self.unit == "s" {
            let text = format!("{at:.3}");
            format!("{}s", text.trim_end_matches('0').trim_end_matches('.'))
        } else {
            format!("{}", at.round() as u64)
        }
    }
}

/// 1, 2 or 5 times a power of ten, at least `rough`.
fn nice_step(rough: f64) -> f64 {
    let rough = rough.max(1e-6);
    let power = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * power).find(|step| *step >= rough).unwrap_or(10.0 * power)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace_json::{parse_line, render, TraceHeader};

    fn header() -> TraceHeader {
        TraceHeader {
            trace: TRACE_KIND.to_string(),
            format: TRACE_FORMAT,
            build: "0.1.0-00000000000000aa".to_string(),
            command: "run".to_string(),
            scenario: Some("scenarios/x.toml".to_string()),
            seed: 3,
            trace_hash: "0123456789abcdef".to_string(),
            replay: "ci/sim.sh run --seed 3".to_string(),
        }
    }

    fn input(lines: &[&str], violation: Option<TraceViolation>) -> TimelineInput {
        let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        parse("t.jsonl", &render(&header(), &lines, violation.as_ref())).expect("a rendered trace parses")
    }

    const RUN: &[&str] = &[
        "0.000000s n1 start",
        "0.000000s n2 start",
        "0.000000s n3 start",
        "0.500000s n1 leader term=1",
        "0.800000s p0 b0 sends 4 to n1 (partition 0, epoch 0)",
        "0.900000s p0 b0 acks=All -> n1 4@0 epoch 0",
        "1.000000s fault (swarm) Kill n1",
        "1.200000s n2 leader term=2",
        "1.300000s fault (line 9) partition [[1], [2, 3]]",
        "1.400000s p0 b1 sends 2 to n2 (partition 0, epoch 1)",
        "1.500000s p0 b1 acks=All -> n2 2@4 epoch 1",
        "1.600000s c0 reads 6 from n2 at 0 (high watermark 6)",
        "1.900000s undo (line 9) Kill [1] []",
        "2.000000s undo (line 0) Kill [1] []",
        "2.000000s n1 restart",
        "2.500000s heal: every fault ends",
        "3.000000s VIOLATION acks-all-durable: partition 0 offset 5: AcksAll saw `p0-b1-r1`, the converged log ends before it",
    ];

    #[test]
    fn roles_down_spans_and_faults_follow_the_trace() {
        let input = input(RUN, None);
        let timeline = Timeline::build(&input);
        assert_eq!(timeline.nodes, vec![1, 2, 3]);
        assert_eq!(timeline.leaders, vec![(1, 0.5, 1.0, 1), (2, 1.2, 3.0, 2)], "n1 leads until killed, n2 from its election to the end");
        assert_eq!(timeline.down.len(), 1);
        assert_eq!((timeline.down[0].node, timeline.down[0].start, timeline.down[0].end), (Some(1), 1.0, 2.0));
        let faults: Vec<(Option<u64>, &str, f64, f64)> = timeline.faults.iter().map(|s| (s.node, s.kind.as_str(), s.start, s.end)).collect();
        assert_eq!(faults, vec![(Some(1), "kill", 1.0, 2.0), (None, "partition", 1.3, 2.5)], "the kill ends at its undo, the partition at the heal");
        assert_eq!(timeline.marks.len(), 5, "two sends, two acks, one read");
    }

    #[test]
    fn the_violation_comes_from_the_violation_line_or_else_from_the_trace() {
        let from_line = TraceViolation { checker: "acks-all-durable".to_string(), t_us: Some(3_000_000), step: None, message: "x".to_string() };
        let timeline = Timeline::build(&input(RUN, Some(from_line.clone())));
        assert_eq!(timeline.violation, Some(from_line));
        let timeline = Timeline::build(&input(RUN, None));
        assert_eq!(timeline.violation.as_ref().map(|v| v.checker.as_str()), Some("acks-all-durable"));
        assert_eq!(timeline.violation_at, Some(3.0));
        let passing = Timeline::build(&input(&RUN[..RUN.len() - 1], None));
        assert!(passing.violation.is_none());
    }

    #[test]
    fn the_records_a_violation_names_are_involved() {
        let events: Vec<TraceEvent> = RUN.iter().map(|l| parse_line(l)).collect();
        let texts = |found: BTreeSet<usize>| found.into_iter().map(|i| events[i].text.clone()).collect::<Vec<_>>();
        // Offset 5 of partition 0: the second batch's ack (4..6) and the read (0..6); the quoted value names batch b1 of p0.
        assert_eq!(texts(involved(&events, "partition 0 offset 5: AcksAll saw `p0-b1-r1`, the converged log ends before it")), vec![RUN[9], RUN[10], RUN[11]]);
        // An offset in another partition matches no acknowledged batch.
        assert_eq!(texts(involved(&events, "partition 1 offset 1: x")), vec![RUN[11]], "reads name no partition, so they stay candidates");
        assert!(involved(&events, "node 1 still has topic `topic-7`").is_empty());
        let topics: Vec<TraceEvent> =
            ["1.0s x", "0.100000s client create topic-7 via n1", "0.200000s client create topic-70 via n1"].iter().map(|l| parse_line(l)).collect();
        assert_eq!(involved(&topics, "node 1 still has topic `topic-7`").into_iter().collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn the_page_has_a_lane_per_node_the_violation_and_no_external_resources() {
        let html = Timeline::build(&input(RUN, None)).html(&input(RUN, None));
        for node in ["n1", "n2", "n3"] {
            assert_eq!(html.matches(&format!("<g class=\"lane\" data-node=\"{node}\">")).count(), 1, "{node}");
        }
        assert_eq!(html.matches("id=\"violation\"").count(), 1);
        assert!(html.contains("class=\"mark ack involved\""), "the involved ack is highlighted");
        assert!(html.contains("&lt;") || !html.contains("<p0"), "trace text is escaped");
        for external in ["<script", "src=", "href=", "@import", "url("] {
            assert!(!html.contains(external), "{external}");
        }
    }

    #[test]
    fn bad_input_names_the_file_and_line() {
        let error = |text: &str| parse("t.jsonl", text).expect_err("bad input").to_string();
        assert!(error("").starts_with("t.jsonl:1: empty file"), "{}", error(""));
        assert!(error("0.000000s n1 start\n").starts_with("t.jsonl:1: not a keel-sim JSON trace"), "{}", error("0.000000s n1 start\n"));
        assert!(error("{\"trace\":\"other\"}\n").starts_with("t.jsonl:1: not a keel-sim JSON trace"));
        let good_header = serde_json::to_string(&header()).expect("header");
        assert!(error(&format!("{good_header}\n{{\"x\":1}}\n")).starts_with("t.jsonl:2: not a trace event"));
        assert!(error(&format!("{good_header}\n\n{{oops\n")).starts_with("t.jsonl:3: not JSON"));
        let violation = "{\"violation\":{\"checker\":\"c\",\"t_us\":1,\"message\":\"m\"}}";
        let after = format!("{good_header}\n{violation}\n{}\n", serde_json::to_string(&parse_line("0.1s")).expect("event"));
        assert!(error(&after).starts_with("t.jsonl:3: a line after the violation"), "{}", error(&after));
        let future = good_header.replace("\"format\":1", "\"format\":2");
        assert!(error(&future).contains("trace format 2"), "{}", error(&future));
    }

    #[test]
    fn axis_steps_are_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.3), 2.0);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(6.0), 10.0);
        assert_eq!(nice_step(0.03), 0.05);
    }
}
