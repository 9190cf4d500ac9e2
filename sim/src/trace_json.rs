//! Traces as JSON lines: a header naming the build, scenario and seed, one
//! object per trace line (simulated time, node, actor, event, fields, and
//! the line's own text), and the violation last if the run failed.
//!
//! The text lines stay the record: each object keeps its line whole in
//! `text`, and the trace hash is still the hash of those lines, so the JSON
//! form adds structure without changing what replays are compared by.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `trace` field of every JSON trace's header.
pub const TRACE_KIND: &str = "keel-sim";
/// The JSON trace format this build writes and reads.
pub const TRACE_FORMAT: u64 = 1;

/// The first line of a JSON trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceHeader {
    /// Always `keel-sim`.
    pub trace: String,
    pub format: u64,
    /// The build id of the binary that recorded the run (`build_id`).
    pub build: String,
    /// The subcommand that ran the seed: `run`, `log-check`, `raft-store-check`.
    pub command: String,
    /// The scenario file, for `run`.
    pub scenario: Option<String>,
    pub seed: u64,
    /// The trace hash of the text lines, 16 hex digits.
    pub trace_hash: String,
    /// The command line that replays this seed on this build.
    pub replay: String,
}

impl TraceHeader {
    /// The header of a trace this binary recorded.
    pub fn new(command: &str, scenario: Option<String>, seed: u64, trace_hash: u64, replay: String) -> TraceHeader {
        TraceHeader {
            trace: TRACE_KIND.to_string(),
            format: TRACE_FORMAT,
            build: crate::build_id::build_id().to_string(),
            command: command.to_string(),
            scenario,
            seed,
            trace_hash: format!("{trace_hash:016x}"),
            replay,
        }
    }
}

/// The checker that failed, when, and what it saw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceViolation {
    pub checker: String,
    /// Simulated time, for a scenario run.
    pub t_us: Option<u64>,
    /// The operation number, for the crash-consistency checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    pub message: String,
}

/// The last line of a failed run's JSON trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViolationLine {
    pub violation: TraceViolation,
}

/// One trace line, parsed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// Simulated time in microseconds (absent in the step-numbered traces of
    /// the crash-consistency checks).
    pub t_us: Option<u64>,
    /// The broker the event happened on or was addressed to, `n1`...
    pub node: Option<String>,
    /// The client or workload that acted: `c0`, `p2`, `k1`, `g0.1`, `client`...
    pub actor: Option<String>,
    pub event: String,
    pub fields: BTreeMap<String, Value>,
    /// The trace line exactly as hashed.
    pub text: String,
}

/// A whole JSON trace as written.
pub fn render(header: &TraceHeader, lines: &[String], violation: Option<&TraceViolation>) -> String {
    let mut out = serde_json::to_string(header).expect("a header serializes");
    out.push('\n');
    for line in lines {
        out.push_str(&serde_json::to_string(&parse_line(line)).expect("an event serializes"));
        out.push('\n');
    }
    if let Some(violation) = violation {
        out.push_str(&serde_json::to_string(&ViolationLine { violation: violation.clone() }).expect("a violation serializes"));
        out.push('\n');
    }
    out
}

/// `1.087003s` as microseconds.
pub fn parse_time_us(token: &str) -> Option<u64> {
    let (seconds, micros) = token.strip_suffix('s')?.split_once('.')?;
    if micros.len() != 6 || !seconds.bytes().chain(micros.bytes()).all(|b| b.is_ascii_digit()) || seconds.is_empty() {
        return None;
    }
    seconds.parse::<u64>().ok()?.checked_mul(1_000_000)?.checked_add(micros.parse().ok()?)
}

/// `n12` as a node name.
fn node_name(token: &str) -> Option<&str> {
    let digits = token.strip_prefix('n')?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(token)
}

/// A number field if the text is a number, else a string field (a hash
/// such as `0123` stays text: as a number it would lose its leading zero).
fn value(text: &str) -> Value {
    if text.len() > 1 && text.starts_with('0') {
        return Value::from(text);
    }
    match text.parse::<u64>() {
        Ok(number) => Value::from(number),
        Err(_) => match text.parse::<i64>() {
            Ok(number) => Value::from(number),
            Err(_) => Value::from(text),
        },
    }
}

/// `OneWay` as `one_way`: the scenario files' names for fault kinds.
fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (index, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && index > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The fault kind a fault line describes (`Kill n2`, `partition [[1], [2, 3]]`,
/// `one-way cut n1 -> n2`, `power loss of every broker`...), as named in scenario files.
fn fault_kind(described: &str) -> String {
    let first = described.split([' ', ':']).next().unwrap_or_default();
    match first {
        "one-way" => "one_way".to_string(),
        "power" => "power_loss".to_string(),
        other => snake_case(other),
    }
}

/// The numbers in `[1, 2]` or `[(1, 2), (3, 1)]`, flattened.
fn numbers_in(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit()).filter(|part| !part.is_empty()).filter_map(|part| part.parse().ok()).collect()
}

/// The word after `key` among `tokens`.
fn after<'a>(tokens: &[&'a str], key: &str) -> Option<&'a str> {
    tokens.iter().position(|t| *t == key).and_then(|at| tokens.get(at + 1)).copied()
}

fn trimmed(token: &str) -> &str {
    token.trim_matches(|c: char| matches!(c, '(' | ')' | ',' | ':' | '`'))
}

/// Parses one trace line into an event. Never fails: a line of no known
/// shape is an event named by its first word, with its `key=value` fields.
pub fn parse_line(line: &str) -> TraceEvent {
    let mut event = TraceEvent { t_us: None, node: None, actor: None, event: String::new(), fields: BTreeMap::new(), text: line.to_string() };
    let mut rest = line;
    if let Some((first, after_first)) = line.split_once(' ') {
        if let Some(t_us) = parse_time_us(first) {
            event.t_us = Some(t_us);
            rest = after_first;
        } else if first.len() == 4 && first.bytes().all(|b| b.is_ascii_digit()) {
            // The crash-consistency checks number their operations instead.
            event.fields.insert("step".to_string(), Value::from(first.parse::<u64>().expect("four digits")));
            rest = after_first;
        }
    }
    let tokens: Vec<&str> = rest.split(' ').collect();
    for token in &tokens {
        if let Some((key, text)) = token.split_once('=') {
            if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') && !text.is_empty() {
                event.fields.insert(key.to_string(), value(trimmed(text)));
            }
        }
    }
    let head = tokens.first().copied().unwrap_or_default();
    match head {
        "fault" | "undo" => parse_fault(&mut event, head, rest),
        "heal:" | "heal" => event.event = "heal".to_string(),
        "VIOLATION" => {
            event.event = "violation".to_string();
            if let Some((checker, message)) = rest["VIOLATION ".len().min(rest.len())..].split_once(": ") {
                event.fields.insert("checker".to_string(), Value::from(checker));
                event.fields.insert("message".to_string(), Value::from(message));
            }
        }
        _ if node_name(head).is_some() => {
            event.node = Some(head.to_string());
            event.event = tokens.get(1).map(|t| trimmed(t)).unwrap_or_default().to_string();
            parse_node_event(&mut event, &tokens);
        }
        _ => {
            event.event = trimmed(tokens.get(1).copied().unwrap_or(head)).to_string();
            // Clients act in simulated time; the step-numbered checks have no actors.
            if event.t_us.is_some() && tokens.len() > 1 && !matches!(head, "scenario" | "converged") {
                event.actor = Some(trimmed(head).to_string());
                parse_actor_event(&mut event, &tokens);
            } else {
                event.event = trimmed(head).to_string();
            }
        }
    }
    event
}

/// `fault (swarm) Kill n2`, `fault (line 12) partition [[1], [2, 3]]`,
/// `undo (line 0) Kill [2] []`.
fn parse_fault(event: &mut TraceEvent, head: &str, rest: &str) {
    event.event = head.to_string();
    let Some((source, described)) = rest[head.len()..].trim_start().strip_prefix('(').and_then(|s| s.split_once(") ")) else { return };
    match source.strip_prefix("line ") {
        Some(line) => {
            event.fields.insert("source".to_string(), Value::from("line"));
            event.fields.insert("line".to_string(), value(line));
        }
        None => {
            event.fields.insert("source".to_string(), Value::from(source));
        }
    }
    if head == "undo" {
        let (kind, lists) = described.split_once(' ').unwrap_or((described, ""));
        event.fields.insert("kind".to_string(), Value::from(snake_case(kind)));
        let (brokers, links) = lists.split_once("] ").unwrap_or((lists, ""));
        event.fields.insert("brokers".to_string(), Value::from(numbers_in(brokers)));
        let links = numbers_in(links);
        event.fields.insert("links".to_string(), Value::from(links.chunks(2).map(|pair| Value::from(pair.to_vec())).collect::<Vec<_>>()));
        return;
    }
    event.fields.insert("kind".to_string(), Value::from(fault_kind(described)));
    event.fields.insert("described".to_string(), Value::from(described));
    let skipped = described.contains("skipped") || described.contains("no effect");
    event.fields.insert("skipped".to_string(), Value::from(skipped));
    let nodes: Vec<Value> = described.split([' ', ':', ',']).filter_map(node_name).map(Value::from).collect();
    if !nodes.is_empty() {
        event.fields.insert("nodes".to_string(), Value::from(nodes));
    }
    if let Some(first) = described.split(' ').nth(1).and_then(node_name) {
        event.node = Some(first.to_string());
    }
}

/// `n2 follows n1 for data-0 epoch 0 from log end 18`, `n1 leads topic-1-0
/// epoch 0 at log end 0`, `n3 leader term=1`, `n2 apply 4 term=1 ...`.
fn parse_node_event(event: &mut TraceEvent, tokens: &[&str]) {
    let mut insert = |key: &str, text: Option<&str>| {
        if let Some(text) = text {
            event.fields.insert(key.to_string(), value(trimmed(text)));
        }
    };
    match event.event.as_str() {
        "follows" => {
            insert("leader", tokens.get(2).copied());
            insert("partition", after(tokens, "for"));
            insert("epoch", after(tokens, "epoch"));
            insert("log_end", after(tokens, "end"));
        }
        "leads" => {
            insert("partition", tokens.get(2).copied());
            insert("epoch", after(tokens, "epoch"));
            insert("log_end", after(tokens, "end"));
        }
        "truncates" => {
            insert("partition", tokens.get(2).copied());
            insert("end_offset", after(tokens, "to"));
        }
        "apply" | "state" => insert("index", tokens.get(2).copied().filter(|t| *t != "at").or(tokens.get(3).copied())),
        "installed" => insert("index", after(tokens, "at")),
        _ => {}
    }
}

/// Client lines: `p2 b1 acks=Leader -> n1 8@18 epoch 0`, `k0 b0 sends 4 seq
/// 0 to n2 (partition 1, epoch 0, attempt 1)`, `c0 reads 8 from n1 at 10
/// (high watermark 18)`, `client create data via n2`.
fn parse_actor_event(event: &mut TraceEvent, tokens: &[&str]) {
    let batch = tokens.get(1).filter(|t| t.len() > 1 && t.starts_with('b') && t[1..].bytes().all(|b| b.is_ascii_digit()));
    if let Some(batch) = batch {
        event.fields.insert("batch".to_string(), Value::from(*batch));
        event.event = trimmed(tokens.get(2).copied().unwrap_or_default()).to_string();
        if event.event.starts_with("acks=") {
            event.event = "ack".to_string();
        }
    }
    let node = after(tokens, "->").or(after(tokens, "to")).or(after(tokens, "from")).or(after(tokens, "via")).and_then(|t| node_name(trimmed(t)));
    event.node = node.map(str::to_string);
    let mut insert = |key: &str, text: Option<&str>| {
        if let Some(text) = text {
            event.fields.insert(key.to_string(), value(trimmed(text)));
        }
    };
    match event.event.as_str() {
        "ack" => {
            let placed = tokens.iter().find(|t| t.contains('@')).and_then(|t| t.split_once('@'));
            insert("count", placed.map(|(count, _)| count));
            insert("base_offset", placed.map(|(_, base)| base));
            insert("epoch", after(tokens, "epoch"));
            insert("attempt", after(tokens, "(attempt"));
        }
        "sends" => {
            event.event = "send".to_string();
            insert("count", after(tokens, "sends"));
            insert("sequence", after(tokens, "seq"));
            insert("partition", after(tokens, "(partition"));
            insert("epoch", after(tokens, "epoch"));
            insert("attempt", after(tokens, "attempt"));
        }
        "reads" => {
            event.event = "read".to_string();
            insert("count", after(tokens, "reads"));
            insert("offset", after(tokens, "at"));
            insert("high_watermark", after(tokens, "watermark"));
        }
        "create" | "delete" => insert("topic", tokens.get(2).copied()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(line: &str) -> Value {
        let event = parse_line(line);
        json!({"t_us": event.t_us, "node": event.node, "actor": event.actor, "event": event.event, "fields": event.fields})
    }

    #[test]
    fn node_lines_name_the_node_the_event_and_its_fields() {
        assert_eq!(fields("0.737658s n3 leader term=1"), json!({"t_us": 737_658, "node": "n3", "actor": null, "event": "leader", "fields": {"term": 1}}));
        assert_eq!(
            fields("1.565613s n2 follows n1 for data-0 epoch 0 from log end 18"),
            json!({"t_us": 1_565_613, "node": "n2", "actor": null, "event": "follows",
                   "fields": {"leader": "n1", "partition": "data-0", "epoch": 0, "log_end": 18}})
        );
        assert_eq!(
            fields("0.725355s n2 leads topic-1-0 epoch 3 at log end 7"),
            json!({"t_us": 725_355, "node": "n2", "actor": null, "event": "leads", "fields": {"partition": "topic-1-0", "epoch": 3, "log_end": 7}})
        );
        assert_eq!(fields("0.000000s n1 start"), json!({"t_us": 0, "node": "n1", "actor": null, "event": "start", "fields": {}}));
    }

    #[test]
    fn faults_and_undos_carry_kind_source_and_targets() {
        assert_eq!(
            fields("1.087003s fault (swarm) Kill n2"),
            json!({"t_us": 1_087_003, "node": "n2", "actor": null, "event": "fault",
                   "fields": {"source": "swarm", "kind": "kill", "described": "Kill n2", "skipped": false, "nodes": ["n2"]}})
        );
        assert_eq!(
            fields("1.438004s undo (line 12) OneWay [] [(1, 2)]"),
            json!({"t_us": 1_438_004, "node": null, "actor": null, "event": "undo",
                   "fields": {"source": "line", "line": 12, "kind": "one_way", "brokers": [], "links": [[1, 2]]}})
        );
        let power = parse_line("2.000000s fault (line 3) power loss of every broker");
        assert_eq!(power.fields["kind"], json!("power_loss"));
        let skipped = parse_line("4.840012s fault (line 61) Pause on Leader: no such broker now, skipped");
        assert_eq!(skipped.fields["skipped"], json!(true));
        assert_eq!(skipped.fields["kind"], json!("pause"));
    }

    #[test]
    fn client_lines_name_the_actor_the_broker_and_the_records() {
        assert_eq!(
            fields("1.200286s p2 b1 acks=Leader -> n1 8@18 epoch 0"),
            json!({"t_us": 1_200_286, "node": "n1", "actor": "p2", "event": "ack",
                   "fields": {"acks": "Leader", "batch": "b1", "count": 8, "base_offset": 18, "epoch": 0}})
        );
        assert_eq!(
            fields("0.799641s k0 b0 sends 4 seq 0 to n2 (partition 1, epoch 0, attempt 1)"),
            json!({"t_us": 799_641, "node": "n2", "actor": "k0", "event": "send",
                   "fields": {"batch": "b0", "count": 4, "sequence": 0, "partition": 1, "epoch": 0, "attempt": 1}})
        );
        assert_eq!(
            fields("1.059288s c0 reads 8 from n1 at 10 (high watermark 18)"),
            json!({"t_us": 1_059_288, "node": "n1", "actor": "c0", "event": "read",
                   "fields": {"count": 8, "offset": 10, "high_watermark": 18}})
        );
    }

    #[test]
    fn violations_and_step_numbered_lines_parse_and_every_event_keeps_its_text() {
        let violation = parse_line("27.459896s VIOLATION acked-deletes-gone: node 1 still has topic `topic-7`: x");
        assert_eq!(violation.event, "violation");
        assert_eq!(violation.fields["checker"], json!("acked-deletes-gone"));
        assert_eq!(violation.fields["message"], json!("node 1 still has topic `topic-7`: x"));
        let step = parse_line("0042 append len=17 -> 9");
        assert_eq!((step.t_us, step.fields["step"].clone(), step.fields["len"].clone()), (None, json!(42), json!(17)));
        assert_eq!((step.event.as_str(), step.actor.as_deref()), ("append", None));
        for line in ["", " ", "x", "1.5s", "trace-hash 0123456789abcdef", "0.100000s heal: every fault ends", "0.1s n1"] {
            assert_eq!(parse_line(line).text, line);
        }
    }

    #[test]
    fn a_rendered_trace_is_a_header_an_event_per_line_and_the_violation() {
        let header = TraceHeader {
            trace: TRACE_KIND.to_string(),
            format: TRACE_FORMAT,
            build: "0.1.0-00000000000000aa".to_string(),
            command: "run".to_string(),
            scenario: Some("scenarios/swarm.toml".to_string()),
            seed: 7,
            trace_hash: "0123456789abcdef".to_string(),
            replay: "ci/sim.sh run --seed 7".to_string(),
        };
        let violation = TraceViolation { checker: "x".to_string(), t_us: Some(5), step: None, message: "m".to_string() };
        let text = render(&header, &["0.000001s n1 start".to_string(), "0.000002s n2 start".to_string()], Some(&violation));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(serde_json::from_str::<TraceHeader>(lines[0]).expect("header"), header);
        assert_eq!(serde_json::from_str::<TraceEvent>(lines[2]).expect("event").text, "0.000002s n2 start");
        assert_eq!(serde_json::from_str::<ViolationLine>(lines[3]).expect("violation").violation, violation);
    }
}
