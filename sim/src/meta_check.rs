//! The metadata layer's checkers, fed by what the nodes report
//! (`keel_meta::driver::MetaEvent`) and what the clients saw.
//!
//! Online, as events arrive: at most one leader per term; every node applies
//! indexes in order without gaps; an index carries the same entry (term, bytes,
//! outcome) on every node and across restarts; states at one applied index are
//! identical. At the end (`History::check_final`): nothing ever applied is
//! missing from a converged node (no committed command lost across crashes or
//! power loss), every acknowledged create is visible on every node, and no
//! topic exists that no client asked for.

use std::collections::{BTreeMap, BTreeSet};

use keel_meta::driver::MetaEvent;
use keel_meta::MetadataState;

use crate::trace::{Trace, TraceHash};
use crate::trace_json::TraceViolation;

/// Names of the checkers, as failures report them.
pub mod checker {
    pub const ONE_LEADER_PER_TERM: &str = "one-leader-per-term";
    pub const APPLIED_IN_ORDER: &str = "applied-in-order";
    pub const IDENTICAL_APPLIED_LOGS: &str = "identical-applied-logs";
    pub const NO_COMMITTED_COMMAND_LOST: &str = "no-committed-command-lost";
    pub const CONVERGENCE: &str = "convergence";
    pub const ACKED_CREATES_VISIBLE: &str = "acked-creates-visible";
    pub const NO_PHANTOM_TOPICS: &str = "no-phantom-topics";
    pub const ACKED_DELETES_GONE: &str = "acked-deletes-gone";
    pub const NO_PHANTOM_DELETES: &str = "no-phantom-deletes";
    pub const DELETED_TOPIC_LOGS_REMOVED: &str = "deleted-topic-logs-removed";
    pub const LIVENESS: &str = "liveness";
    pub const NO_PANICS: &str = "no-panics";
    /// Every node's `/readyz` (served over the simulated network) answers
    /// 200 once the cluster converged after the heal.
    pub const READY_AFTER_CONVERGENCE: &str = "ready-after-convergence";
}

/// The first checker that failed, when (simulated) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub checker: &'static str,
    pub at_us: u64,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "checker `{}` failed at {} simulated: {}", self.checker, format_time(self.at_us), self.message)
    }
}

/// Simulated time as seconds with microseconds, the trace's time format.
pub fn format_time(at_us: u64) -> String {
    format!("{}.{:06}s", at_us / 1_000_000, at_us % 1_000_000)
}

/// FNV-1a of a state's canonical encoding: equal states, equal hashes.
pub fn state_hash(state: &MetadataState) -> u64 {
    let mut hash = TraceHash::new();
    hash.update(&state.snapshot().encode_to_bytes());
    hash.value()
}

fn bytes_hash(bytes: &[u8]) -> u64 {
    let mut hash = TraceHash::new();
    hash.update(bytes);
    hash.value()
}

/// One index of the applied log as first seen: (term, entry hash, outcome).
#[derive(Clone, Debug, PartialEq, Eq)]
struct AppliedRecord {
    term: u64,
    entry_hash: u64,
    outcome: String,
    first_node: u64,
}

/// What a client was told about one topic create or delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicOpOutcome {
    /// Applied; the asked node answered with this metadata version.
    Acknowledged { node_id: u64, metadata_version: u64 },
    /// An earlier attempt timed out and a retry found it done (the topic
    /// there after a create, gone after a delete): it committed, but
    /// nobody was told so.
    FoundAfterRetry,
    /// Gave up (every attempt failed retriably within the client's timeout).
    GaveUp(String),
    /// Refused for good by the state machine.
    Refused(String),
}

impl TopicOpOutcome {
    /// The operation took effect: acknowledged, or found done by a retry.
    pub fn done(&self) -> bool {
        matches!(self, TopicOpOutcome::Acknowledged { .. } | TopicOpOutcome::FoundAfterRetry)
    }
}

/// Everything a seed observed, and the first violation.
#[derive(Debug, Default)]
pub struct History {
    trace: Trace,
    violation: Option<Violation>,
    leaders: BTreeMap<u64, u64>,
    applied: BTreeMap<u64, AppliedRecord>,
    state_hashes: BTreeMap<u64, (u64, u64)>,
    last_applied: BTreeMap<u64, u64>,
    applied_index_max: u64,
    /// The highest index applied when the final (linearizable) reads of
    /// every node's state began: each read state must hold it. Brokers keep
    /// proposing (ISR changes, group stores) while the reads run, so an
    /// index applied meanwhile need not be in a state read before it.
    applied_index_max_at_final_reads: Option<u64>,
    creates_attempted: BTreeSet<String>,
    creates: BTreeMap<String, TopicOpOutcome>,
    deletes_attempted: BTreeSet<String>,
    deletes: BTreeMap<String, TopicOpOutcome>,
    pub entries_applied: u64,
    pub elections: u64,
    /// Events that show a path was reached (see `coverage`).
    pub coverage: crate::coverage::Coverage,
    /// The partition data's history (scenarios with `[data]`).
    pub data: crate::data_check::DataHistory,
    /// The consumer group's history (scenarios with `[group]`).
    pub group: crate::group_check::GroupHistory,
}

impl History {
    pub fn new() -> Self {
        History::default()
    }

    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// The trace, with the first violation for the JSON trace's last line.
    pub fn into_trace(mut self) -> Trace {
        if let Some(Violation { checker, at_us, message }) = self.violation {
            self.trace.set_violation(TraceViolation { checker: checker.to_string(), t_us: Some(at_us), step: None, message });
        }
        self.trace
    }

    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    /// The highest index any node applied so far: committed, so never to be lost.
    pub fn applied_index_max(&self) -> u64 {
        self.applied_index_max
    }

    /// The final reads of every node's state begin now (see `check_final`).
    pub fn final_reads_begin(&mut self) {
        self.applied_index_max_at_final_reads = Some(self.applied_index_max);
    }

    pub fn creates(&self) -> &BTreeMap<String, TopicOpOutcome> {
        &self.creates
    }

    /// Adds a line to the trace, stamped with simulated time.
    pub fn note(&mut self, at_us: u64, line: impl std::fmt::Display) {
        self.trace.record(format!("{} {line}", format_time(at_us)));
    }

    /// Records a violation; only the first one is kept (later ones are often
    /// its consequences), but each goes into the trace.
    pub fn violate(&mut self, at_us: u64, checker: &'static str, message: String) {
        self.note(at_us, format_args!("VIOLATION {checker}: {message}"));
        if self.violation.is_none() {
            self.violation = Some(Violation { checker, at_us, message });
        }
    }

    /// Records a data checker's verdict; returns whether it held.
    pub fn data_verdict(&mut self, at_us: u64, verdict: Result<(), crate::data_check::DataViolation>) -> bool {
        match verdict {
            Ok(()) => true,
            Err(violation) => {
                self.violate(at_us, violation.checker, violation.message);
                false
            }
        }
    }

    /// A node's report (`MetaObserver`).
    pub fn observe(&mut self, at_us: u64, event: &MetaEvent<'_>) {
        match event {
            MetaEvent::Opened { node_id, applied_index, state } => {
                let hash = state_hash(state);
                self.note(at_us, format_args!("n{node_id} opened applied={applied_index} state={hash:016x}"));
                self.last_applied.insert(*node_id, *applied_index);
                self.state_at(at_us, *node_id, *applied_index, hash);
            }
            MetaEvent::BecameLeader { node_id, term } => {
                self.elections += 1;
                self.note(at_us, format_args!("n{node_id} leader term={term}"));
                match self.leaders.get(term) {
                    Some(other) if other != node_id => {
                        let message = format!("nodes {other} and {node_id} were both leader of term {term}");
                        self.violate(at_us, checker::ONE_LEADER_PER_TERM, message);
                    }
                    _ => {
                        self.leaders.insert(*term, *node_id);
                    }
                }
            }
            MetaEvent::SnapshotInstalled { node_id, index } => {
                self.note(at_us, format_args!("n{node_id} installed snapshot at {index}"));
                self.coverage.add(crate::coverage::METADATA_SNAPSHOT_INSTALLS, 1);
                let last = self.last_applied.get(node_id).copied().unwrap_or(0);
                if *index < last {
                    let message = format!("node {node_id} installed a snapshot at {index} after applying up to {last}");
                    self.violate(at_us, checker::APPLIED_IN_ORDER, message);
                }
                self.last_applied.insert(*node_id, *index);
            }
            MetaEvent::Applied { node_id, entry } => {
                self.entries_applied += 1;
                let outcome = match &entry.result {
                    Ok(version) => format!("v{version}"),
                    Err(error) => format!("refused: {error}"),
                };
                let entry_hash = bytes_hash(&entry.data);
                self.note(at_us, format_args!("n{node_id} apply {} term={} entry={entry_hash:016x} {outcome}", entry.index, entry.term));
                let expected = self.last_applied.get(node_id).copied().unwrap_or(0) + 1;
                if entry.index != expected {
                    let message = format!("node {node_id} applied index {} where {expected} was next", entry.index);
                    self.violate(at_us, checker::APPLIED_IN_ORDER, message);
                }
                self.last_applied.insert(*node_id, entry.index);
                self.applied_index_max = self.applied_index_max.max(entry.index);
                let record = AppliedRecord { term: entry.term, entry_hash, outcome, first_node: *node_id };
                match self.applied.get(&entry.index) {
                    None => {
                        self.applied.insert(entry.index, record);
                        // The leader of the entry's term appended it: a
                        // proposal made on another node reached it forwarded.
                        if entry.proposer.is_some_and(|proposer| self.leaders.get(&entry.term).is_some_and(|leader| *leader != proposer)) {
                            self.coverage.add(crate::coverage::FORWARDED_PROPOSALS, 1);
                        }
                    }
                    Some(first) if (first.term, first.entry_hash, &first.outcome) != (record.term, record.entry_hash, &record.outcome) => {
                        let message = format!(
                            "index {}: node {} applied term {} entry {:016x} ({}), node {node_id} applied term {} entry {:016x} ({})",
                            entry.index, first.first_node, first.term, first.entry_hash, first.outcome, record.term, record.entry_hash, record.outcome
                        );
                        self.violate(at_us, checker::IDENTICAL_APPLIED_LOGS, message);
                    }
                    Some(_) => {}
                }
            }
            MetaEvent::StateAt { node_id, applied_index, state } => {
                let hash = state_hash(state);
                self.note(at_us, format_args!("n{node_id} state at {applied_index} = {hash:016x} v{}", state.metadata_version()));
                self.state_at(at_us, *node_id, *applied_index, hash);
            }
        }
    }

    fn state_at(&mut self, at_us: u64, node_id: u64, applied_index: u64, hash: u64) {
        match self.state_hashes.get(&applied_index) {
            None => {
                self.state_hashes.insert(applied_index, (hash, node_id));
            }
            Some((first_hash, first_node)) if *first_hash != hash => {
                let message =
                    format!("states at applied index {applied_index} differ: node {first_node} has {first_hash:016x}, node {node_id} has {hash:016x}");
                self.violate(at_us, checker::IDENTICAL_APPLIED_LOGS, message);
            }
            Some(_) => {}
        }
    }

    /// A client is about to ask for `topic` (names are unique per seed).
    pub fn create_attempted(&mut self, at_us: u64, topic: &str, node_id: u64) {
        self.note(at_us, format_args!("client create {topic} via n{node_id}"));
        self.creates_attempted.insert(topic.to_string());
    }

    pub fn create_finished(&mut self, at_us: u64, topic: &str, outcome: TopicOpOutcome) {
        self.note(at_us, format_args!("client create {topic}: {outcome:?}"));
        self.creates.insert(topic.to_string(), outcome);
    }

    pub fn delete_attempted(&mut self, at_us: u64, topic: &str, node_id: u64) {
        self.note(at_us, format_args!("client delete {topic} via n{node_id}"));
        self.deletes_attempted.insert(topic.to_string());
    }

    pub fn delete_finished(&mut self, at_us: u64, topic: &str, outcome: TopicOpOutcome) {
        self.note(at_us, format_args!("client delete {topic}: {outcome:?}"));
        self.deletes.insert(topic.to_string(), outcome);
    }

    /// After convergence, each live node's final applied index and state
    /// (`finals`) against `checks` (every scenario runs `FINAL_CHECKS`).
    pub fn check_final(&mut self, at_us: u64, finals: &BTreeMap<u64, (u64, MetadataState)>, checks: &[FinalCheck]) {
        let mut violations = Vec::new();
        for (node_id, (applied_index, state)) in finals {
            let node = NodeFinal { node_id: *node_id, applied_index: *applied_index, state };
            for check in checks {
                violations.extend((check.find)(self, &node).into_iter().map(|message| (check.checker, message)));
            }
        }
        for (checker, message) in violations {
            self.violate(at_us, checker, message);
        }
    }
}

/// One node's converged metadata.
pub struct NodeFinal<'a> {
    pub node_id: u64,
    pub applied_index: u64,
    pub state: &'a MetadataState,
}

/// A checker of the final metadata: its name, and what it finds wrong in
/// one node's converged state given the history. Checkers compose:
/// `History::check_final` runs any list of them over a history, and each
/// is unit-tested alone.
#[derive(Clone, Copy)]
pub struct FinalCheck {
    pub checker: &'static str,
    pub find: fn(&History, &NodeFinal<'_>) -> Vec<String>,
}

/// The final metadata checks every scenario runs.
pub const FINAL_CHECKS: [FinalCheck; 4] = [
    FinalCheck { checker: checker::NO_COMMITTED_COMMAND_LOST, find: committed_command_lost },
    FinalCheck { checker: checker::ACKED_CREATES_VISIBLE, find: acked_creates_missing },
    FinalCheck { checker: checker::ACKED_DELETES_GONE, find: acked_deletes_present },
    FinalCheck { checker: checker::NO_PHANTOM_TOPICS, find: phantom_topics },
];

/// The node converged below an index some node applied (so committed).
fn committed_command_lost(history: &History, node: &NodeFinal<'_>) -> Vec<String> {
    let committed = history.applied_index_max_at_final_reads.unwrap_or(history.applied_index_max);
    if node.applied_index >= committed {
        return Vec::new();
    }
    vec![format!(
        "node {} converged at applied index {}, but index {committed} was applied (so committed) before its state was read",
        node.node_id, node.applied_index
    )]
}

/// Topics whose create a client was told is done, missing on the node (a
/// topic a client went on to delete may be gone).
fn acked_creates_missing(history: &History, node: &NodeFinal<'_>) -> Vec<String> {
    let missing = history.creates.iter().filter(|(topic, outcome)| outcome.done() && !history.deletes_attempted.contains(*topic));
    let missing = missing.filter(|(topic, _)| node.state.topic(topic).is_none());
    missing.map(|(topic, outcome)| format!("node {} lacks topic `{topic}`, whose create was {outcome:?}", node.node_id)).collect()
}

/// Topics whose delete a client was told is done, still on the node.
fn acked_deletes_present(history: &History, node: &NodeFinal<'_>) -> Vec<String> {
    let present = history.deletes.iter().filter(|(topic, outcome)| outcome.done() && node.state.topic(topic).is_some());
    present.map(|(topic, outcome)| format!("node {} still has topic `{topic}`, whose delete was {outcome:?}", node.node_id)).collect()
}

/// Topics on the node that no client ever asked to create.
fn phantom_topics(history: &History, node: &NodeFinal<'_>) -> Vec<String> {
    let phantoms = node.state.topics().filter(|topic| !history.creates_attempted.contains(&topic.name));
    phantoms.map(|topic| format!("node {} has topic `{}`, which no client created", node.node_id, topic.name)).collect()
}

#[cfg(test)]
mod tests {
    use keel_meta::node::AppliedEntry;

    use super::*;

    /// A state with broker 1 registered (different from the empty one).
    fn with_broker_1() -> MetadataState {
        let register = keel_meta::proto::RegisterBroker { broker_id: 1, host: "h".into(), port: 1, rack: None, incarnation_id: 1 };
        let batch = keel_meta::proto::MetadataBatch { commands: vec![keel_meta::proto::Command::RegisterBroker(register).into()] };
        let mut state = MetadataState::new();
        state.apply_batch(&batch).expect("register");
        state
    }

    fn entry(index: u64, term: u64, data: &[u8]) -> AppliedEntry {
        AppliedEntry { index, term, data: data.to_vec(), proposer: None, result: Ok(index) }
    }

    #[test]
    fn two_leaders_in_one_term_are_a_violation() {
        let mut history = History::new();
        history.observe(1, &MetaEvent::BecameLeader { node_id: 1, term: 3 });
        history.observe(2, &MetaEvent::BecameLeader { node_id: 1, term: 3 });
        history.observe(3, &MetaEvent::BecameLeader { node_id: 2, term: 4 });
        assert!(history.violation().is_none());
        history.observe(4, &MetaEvent::BecameLeader { node_id: 3, term: 4 });
        assert_eq!(history.violation().map(|v| v.checker), Some(checker::ONE_LEADER_PER_TERM));
    }

    #[test]
    fn a_different_entry_at_an_applied_index_is_a_violation() {
        let mut history = History::new();
        history.observe(1, &MetaEvent::Applied { node_id: 1, entry: &entry(1, 1, b"a") });
        history.observe(1, &MetaEvent::Applied { node_id: 2, entry: &entry(1, 1, b"a") });
        assert!(history.violation().is_none());
        history.observe(2, &MetaEvent::Applied { node_id: 3, entry: &entry(1, 2, b"a") });
        assert_eq!(history.violation().map(|v| v.checker), Some(checker::IDENTICAL_APPLIED_LOGS));
    }

    #[test]
    fn a_different_outcome_of_the_same_entry_is_a_violation() {
        let mut history = History::new();
        history.observe(1, &MetaEvent::Applied { node_id: 1, entry: &entry(1, 1, b"a") });
        let refused = AppliedEntry { result: Err(keel_meta::MetadataError::EmptyBatch), ..entry(1, 1, b"a") };
        history.observe(2, &MetaEvent::Applied { node_id: 2, entry: &refused });
        assert_eq!(history.violation().map(|v| v.checker), Some(checker::IDENTICAL_APPLIED_LOGS));
    }

    #[test]
    fn a_gap_in_one_nodes_applied_log_is_a_violation_but_a_restart_replay_is_not() {
        let mut history = History::new();
        let empty = MetadataState::new();
        history.observe(1, &MetaEvent::Applied { node_id: 1, entry: &entry(1, 1, b"a") });
        history.observe(1, &MetaEvent::Applied { node_id: 1, entry: &entry(2, 1, b"b") });
        // A restart from an empty snapshot re-applies the same entries.
        history.observe(2, &MetaEvent::Opened { node_id: 1, applied_index: 0, state: &empty });
        history.observe(3, &MetaEvent::Applied { node_id: 1, entry: &entry(1, 1, b"a") });
        history.observe(3, &MetaEvent::Applied { node_id: 1, entry: &entry(2, 1, b"b") });
        assert!(history.violation().is_none());
        history.observe(4, &MetaEvent::Applied { node_id: 1, entry: &entry(4, 1, b"d") });
        assert_eq!(history.violation().map(|v| v.checker), Some(checker::APPLIED_IN_ORDER));
    }

    #[test]
    fn different_states_at_one_index_are_a_violation() {
        let mut history = History::new();
        let empty = MetadataState::new();
        let other = with_broker_1();
        history.observe(1, &MetaEvent::StateAt { node_id: 1, applied_index: 5, state: &empty });
        history.observe(1, &MetaEvent::StateAt { node_id: 2, applied_index: 5, state: &empty });
        assert!(history.violation().is_none());
        history.observe(2, &MetaEvent::StateAt { node_id: 3, applied_index: 5, state: &other });
        assert_eq!(history.violation().map(|v| v.checker), Some(checker::IDENTICAL_APPLIED_LOGS));
    }

    #[test]
    fn an_index_applied_while_the_final_states_are_read_need_not_be_in_them() {
        let mut history = History::new();
        history.observe(1, &MetaEvent::Applied { node_id: 1, entry: &entry(1, 1, b"a") });
        history.observe(1, &MetaEvent::Applied { node_id: 1, entry: &entry(2, 1, b"b") });
        history.final_reads_begin();
        history.observe(2, &MetaEvent::Applied { node_id: 1, entry: &entry(3, 1, b"c") });
        history.check_final(9, &BTreeMap::from([(2, (2, MetadataState::new()))]), &FINAL_CHECKS);
        assert_eq!(history.violation(), None);
        history.check_final(9, &BTreeMap::from([(2, (1, MetadataState::new()))]), &FINAL_CHECKS);
        assert_eq!(history.violation().map(|v| v.checker), Some(checker::NO_COMMITTED_COMMAND_LOST));
    }

    #[test]
    fn final_checks_compose_each_checker_judges_only_its_own_property() {
        let mut history = History::new();
        history.create_attempted(1, "orders", 1);
        history.create_finished(2, "orders", TopicOpOutcome::Acknowledged { node_id: 1, metadata_version: 3 });
        let finals = BTreeMap::from([(1, (0, with_broker_1()))]);
        let phantoms_only: Vec<FinalCheck> = FINAL_CHECKS.iter().copied().filter(|check| check.checker == checker::NO_PHANTOM_TOPICS).collect();
        history.check_final(9, &finals, &phantoms_only);
        assert_eq!(history.violation(), None, "a missing create is not a phantom topic");
        history.check_final(9, &finals, &FINAL_CHECKS);
        assert_eq!(history.violation().map(|v| v.checker), Some(checker::ACKED_CREATES_VISIBLE));
    }

    #[test]
    fn an_acknowledged_delete_must_leave_the_topic_gone_and_excuses_its_create() {
        let mut state = with_broker_1();
        let create = keel_meta::controller::plan_create_topic(&state, "orders", 1, 1, &[], 0).expect("plan");
        state.apply_batch(&create).expect("create");
        let acknowledged = TopicOpOutcome::Acknowledged { node_id: 1, metadata_version: 3 };
        let mut history = History::new();
        history.create_attempted(1, "orders", 1);
        history.create_finished(2, "orders", acknowledged.clone());
        history.delete_attempted(3, "orders", 1);
        history.delete_finished(4, "orders", acknowledged.clone());
        history.check_final(9, &BTreeMap::from([(1, (0, state))]), &FINAL_CHECKS);
        assert_eq!(history.violation().map(|v| v.checker), Some(checker::ACKED_DELETES_GONE));

        let mut history = History::new();
        history.create_attempted(1, "orders", 1);
        history.create_finished(2, "orders", acknowledged.clone());
        history.delete_attempted(3, "orders", 1);
        history.delete_finished(4, "orders", TopicOpOutcome::GaveUp("timed out".into()));
        history.check_final(9, &BTreeMap::from([(1, (0, with_broker_1()))]), &FINAL_CHECKS);
        assert_eq!(history.violation(), None, "a topic whose delete may have committed may be gone");
    }

    #[test]
    fn final_checks_catch_a_lost_index_a_missing_acked_create_and_a_phantom_topic() {
        let mut history = History::new();
        history.observe(1, &MetaEvent::Applied { node_id: 1, entry: &entry(1, 1, b"a") });
        history.observe(1, &MetaEvent::Applied { node_id: 1, entry: &entry(2, 1, b"b") });
        let finals = BTreeMap::from([(1, (1, MetadataState::new()))]);
        history.check_final(9, &finals, &FINAL_CHECKS);
        assert_eq!(history.violation().map(|v| v.checker), Some(checker::NO_COMMITTED_COMMAND_LOST));

        let mut history = History::new();
        history.create_attempted(1, "orders", 1);
        history.create_finished(2, "orders", TopicOpOutcome::Acknowledged { node_id: 1, metadata_version: 3 });
        history.check_final(9, &BTreeMap::from([(2, (0, MetadataState::new()))]), &FINAL_CHECKS);
        assert_eq!(history.violation().map(|v| v.checker), Some(checker::ACKED_CREATES_VISIBLE));

        let mut history = History::new();
        let mut state = with_broker_1();
        let create = keel_meta::controller::plan_create_topic(&state, "ghost", 1, 1, &[], 0).expect("plan");
        state.apply_batch(&create).expect("create");
        history.check_final(9, &BTreeMap::from([(1, (0, state))]), &FINAL_CHECKS);
        assert_eq!(history.violation().map(|v| v.checker), Some(checker::NO_PHANTOM_TOPICS));
    }
}
