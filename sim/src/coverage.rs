//! The coverage table: counts of events that show a fault actually reached
//! a path (a leader changed, a log was truncated, an fsync failed and was
//! handled...), summed over a sweep. A sweep prints every listed event, so
//! one that stays at 0 (a path the fault mix never reached) is visible.

use std::collections::BTreeMap;

/// The events a scenario sweep counts, in the order the table lists them.
pub const EVENTS: [&str; 20] = [
    FAULTS_FIRED,
    METADATA_ELECTIONS,
    METADATA_SNAPSHOT_INSTALLS,
    FORWARDED_PROPOSALS,
    PARTITION_LEADER_CHANGES,
    EPOCH_TRUNCATIONS,
    ISR_SHRINKS,
    ISR_EXPANDS,
    GRACEFUL_DRAINS,
    DISK_HALTS,
    FSYNC_FAILURES_HANDLED,
    WRITE_ENOSPC,
    TORN_WRITES_AT_CRASH,
    TORN_TAIL_RECOVERIES,
    READ_BIT_FLIPS,
    CREATES_FOUND_AFTER_RETRY,
    DELETES_DONE,
    PRODUCE_ERRORS_ANSWERED,
    GROUP_REBALANCES,
    GROUP_GENERATIONS,
];

pub const FAULTS_FIRED: &str = "faults fired";
pub const METADATA_ELECTIONS: &str = "metadata leader elections";
pub const METADATA_SNAPSHOT_INSTALLS: &str = "metadata snapshots installed";
/// Committed metadata entries proposed on a node other than the leader that
/// appended them (raft-rs forwarded the proposal).
pub const FORWARDED_PROPOSALS: &str = "forwarded proposals committed";
pub const PARTITION_LEADER_CHANGES: &str = "partition leaders taking over";
/// A follower cut its log where it diverged from the leader's epochs.
pub const EPOCH_TRUNCATIONS: &str = "epoch truncations (followers)";
/// A leader saw the metadata apply a smaller (larger) ISR under its epoch.
pub const ISR_SHRINKS: &str = "ISR shrinks applied";
pub const ISR_EXPANDS: &str = "ISR expands applied";
pub const GRACEFUL_DRAINS: &str = "graceful drains";
pub const DISK_HALTS: &str = "halts on a disk error (restarted)";
/// fsync EIOs the simulated disk returned to a broker; counted over passing
/// seeds only, so every one was handled (the broker halted or retried)
/// without breaking a checker.
pub const FSYNC_FAILURES_HANDLED: &str = "fsync failures (EIO) handled";
/// Writes the simulated disk failed with ENOSPC (nothing written), over passing seeds.
pub const WRITE_ENOSPC: &str = "ENOSPC on a write handled";
pub const TORN_WRITES_AT_CRASH: &str = "torn writes at a crash";
/// A partition log's open cut off a tail a crash tore (a frame's first
/// bytes, or a batch's first records).
pub const TORN_TAIL_RECOVERIES: &str = "torn-tail recoveries at log open";
pub const READ_BIT_FLIPS: &str = "read bit flips";
pub const CREATES_FOUND_AFTER_RETRY: &str = "creates found done by a retry";
pub const DELETES_DONE: &str = "topic deletes done";
pub const PRODUCE_ERRORS_ANSWERED: &str = "produce errors answered";
/// Generations the consumer group formed (each one a rebalance), as its
/// members learnt them.
pub const GROUP_REBALANCES: &str = "consumer group rebalances";
/// Generations synced, summed over members.
pub const GROUP_GENERATIONS: &str = "consumer group member syncs";

/// Event counts by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage(BTreeMap<&'static str, u64>);

impl Coverage {
    pub fn add(&mut self, event: &'static str, count: u64) {
        *self.0.entry(event).or_default() += count;
    }

    pub fn count(&self, event: &str) -> u64 {
        self.0.get(event).copied().unwrap_or(0)
    }

    pub fn merge(&mut self, other: &Coverage) {
        for (event, count) in &other.0 {
            self.add(event, *count);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every listed event (0 if never reached), then any other counted.
    pub fn rows(&self) -> Vec<(&'static str, u64)> {
        let others = self.0.keys().copied().filter(|event| !EVENTS.contains(event));
        EVENTS.iter().copied().chain(others).map(|event| (event, self.count(event))).collect()
    }

    /// Every listed event (and any other counted), one line each, those
    /// never reached marked.
    pub fn table(&self, seeds: u64) -> String {
        let mut lines = vec![format!("coverage over {seeds} passing seeds:")];
        for (event, count) in self.rows() {
            let mark = if count == 0 { "  <- never reached" } else { "" };
            lines.push(format!("  {event:<36} {count:>10}{mark}"));
        }
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweeps_table_sums_its_seeds_and_marks_what_it_never_reached() {
        let mut first = Coverage::default();
        first.add(FAULTS_FIRED, 3);
        let mut second = Coverage::default();
        second.add(FAULTS_FIRED, 4);
        second.add(EPOCH_TRUNCATIONS, 1);
        first.merge(&second);
        assert_eq!(first.count(FAULTS_FIRED), 7);
        let table = first.table(2);
        assert!(table.lines().any(|line| line.contains(EPOCH_TRUNCATIONS) && line.trim_end().ends_with('1')), "{table}");
        assert!(table.lines().any(|line| line.contains(FSYNC_FAILURES_HANDLED) && line.ends_with("never reached")), "{table}");
        assert_eq!(table.lines().count(), 1 + EVENTS.len());
    }
}
