//! Checkers over a consumer group's history (`[group]` scenarios), fed by
//! the group members of `group_world` as they act:
//!
//! - `group-commits-durable`: an offset the coordinator acknowledged as
//!   committed is never lost: every OffsetFetch answers at least the highest
//!   offset acknowledged for that partition before the fetch was sent, and
//!   the group's final committed offsets are at least the highest
//!   acknowledged ones (across coordinator failovers). The one lower answer
//!   allowed is the offset of an unanswered commit (its member timed out and
//!   dropped the connection) of a generation no acknowledged commit of that
//!   partition has moved past: Kafka applies the commits of a generation in
//!   the order they reach the coordinator, so such a commit, held up in the
//!   network, may land after a later one of the same member and generation.
//! - `group-single-owner`: within one generation (named by its leader and
//!   generation id: a new coordinator counts generations afresh), no
//!   partition is handed to two members.
//! - `group-progress`: after the faults heal, the group consumes every
//!   record acknowledged with acks=all and commits past it.
//! - `group-stable-progress` (with `commit_gap_ms_max`): from the group's
//!   first acknowledged commit until the heal, it never goes longer than
//!   the bound without one, coordinator failovers included (the scenario's
//!   producers keep producing, so there is always something to commit).

use std::collections::{BTreeMap, BTreeSet};

use crate::data_check::DataViolation;

pub mod checker {
    pub const GROUP_COMMITS_DURABLE: &str = "group-commits-durable";
    pub const GROUP_SINGLE_OWNER: &str = "group-single-owner";
    pub const GROUP_PROGRESS: &str = "group-progress";
    pub const GROUP_STABLE_PROGRESS: &str = "group-stable-progress";
}

fn violation(checker: &'static str, message: String) -> Result<(), DataViolation> {
    Err(DataViolation { checker, message })
}

/// Counts for the seed's summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupStats {
    pub joins: u64,
    /// Distinct generations handed out (each one a rebalance).
    pub generations_formed: u64,
    pub generations_synced: u64,
    pub commits_acknowledged: u64,
    pub commits_refused: u64,
    pub coordinator_moves: u64,
    pub leaves: u64,
    pub crashes: u64,
    pub records_consumed: u64,
    /// The longest simulated time without an acknowledged commit, from the
    /// first commit until the heal.
    pub longest_commit_gap_ms: u64,
}

/// Whether `committed_offsets` are past every record of `committed_records`.
pub fn commits_cover(committed_records: &BTreeMap<u32, BTreeSet<u64>>, committed_offsets: &BTreeMap<u32, i64>) -> bool {
    committed_records.iter().all(|(partition, offsets)| {
        let end = offsets.iter().next_back().map_or(0, |last| *last as i64 + 1);
        committed_offsets.get(partition).is_some_and(|committed| *committed >= end)
    })
}

#[derive(Debug, Default)]
pub struct GroupHistory {
    /// Partition -> the highest committed offset acknowledged so far.
    acked_max: BTreeMap<u32, i64>,
    /// (leader member id, generation id) -> partition -> its member.
    owners: BTreeMap<(String, i32), BTreeMap<u32, String>>,
    /// (partition, offset) consumed by some member.
    consumed: BTreeSet<(u32, u64)>,
    /// When each commit was acknowledged (simulated ms), in order.
    commit_times_ms: Vec<u64>,
    /// (leader member id, generation id) -> its place in the order the
    /// generations were first handed out.
    generation_order: BTreeMap<(String, i32), u64>,
    /// Partition -> (offset, generation order) of each commit sent without an
    /// answer that may still land: one in a generation before that of an
    /// acknowledged commit of the partition no longer can (the coordinator
    /// refuses it once a later generation formed, and a later coordinator's
    /// commits outrank it).
    unanswered: BTreeMap<u32, Vec<(i64, u64)>>,
    pub stats: GroupStats,
}

impl GroupHistory {
    /// The highest acknowledged commit of `partition` (-1: none yet).
    pub fn acked_max(&self, partition: u32) -> i64 {
        self.acked_max.get(&partition).copied().unwrap_or(-1)
    }

    /// The place of the generation `generation_id` led by `leader` in the
    /// order generations were handed out (0 before any was).
    pub fn generation_order(&self, leader: &str, generation_id: i32) -> u64 {
        self.generation_order.get(&(leader.to_string(), generation_id)).copied().unwrap_or(0)
    }

    /// The coordinator acknowledged `offset` as `partition`'s committed
    /// offset at `now_ms`, committed in the generation at `generation_order`.
    pub fn commit_acknowledged(&mut self, now_ms: u64, partition: u32, offset: i64, generation_order: u64) {
        self.stats.commits_acknowledged += 1;
        assert!(self.commit_times_ms.last().is_none_or(|last| *last <= now_ms));
        self.commit_times_ms.push(now_ms);
        let max = self.acked_max.entry(partition).or_insert(-1);
        *max = (*max).max(offset);
        if let Some(unanswered) = self.unanswered.get_mut(&partition) {
            unanswered.retain(|(_, order)| *order >= generation_order);
        }
    }

    /// A commit of `offset` to `partition` in the generation at
    /// `generation_order` was sent (maybe) and never answered.
    pub fn commit_unanswered(&mut self, partition: u32, offset: i64, generation_order: u64) {
        self.unanswered.entry(partition).or_default().push((offset, generation_order));
    }

    /// Whether `committed` is what an unanswered commit of `partition` that
    /// may still land would leave.
    fn unanswered_landed(&self, partition: u32, committed: i64) -> bool {
        self.unanswered.get(&partition).is_some_and(|unanswered| unanswered.iter().any(|(offset, _)| *offset == committed))
    }

    /// An OffsetFetch sent when `acked_max_at_send` was acknowledged answered `committed`.
    pub fn committed_fetched(&self, member: &str, partition: u32, committed: i64, acked_max_at_send: i64) -> Result<(), DataViolation> {
        if committed < acked_max_at_send && !self.unanswered_landed(partition, committed) {
            let message = format!(
                "{member}: OffsetFetch of partition {partition} answered {committed}, but {acked_max_at_send} was acknowledged as committed before it was sent"
            );
            return violation(checker::GROUP_COMMITS_DURABLE, message);
        }
        Ok(())
    }

    /// `member` was handed `partitions` in the generation `generation_id` led by `leader`.
    pub fn assigned(&mut self, member: &str, leader: &str, generation_id: i32, partitions: &[u32]) -> Result<(), DataViolation> {
        let next_order = self.generation_order.len() as u64 + 1;
        if let std::collections::btree_map::Entry::Vacant(entry) = self.generation_order.entry((leader.to_string(), generation_id)) {
            entry.insert(next_order);
            self.stats.generations_formed += 1;
        }
        let owners = self.owners.entry((leader.to_string(), generation_id)).or_default();
        for partition in partitions {
            match owners.get(partition) {
                Some(other) if other != member => {
                    let message = format!("partition {partition} handed to {other} and to {member} in generation {generation_id} led by {leader}");
                    return violation(checker::GROUP_SINGLE_OWNER, message);
                }
                _ => {
                    owners.insert(*partition, member.to_string());
                }
            }
        }
        Ok(())
    }

    /// The longest stretch (start ms, end ms) without an acknowledged
    /// commit between the first commit and `until_ms`; None before any.
    pub fn longest_commit_gap(&self, until_ms: u64) -> Option<(u64, u64)> {
        // A group whose first commit comes after the heal made no progress
        // at all in the window.
        let first_ms = *self.commit_times_ms.first().filter(|first_ms| **first_ms <= until_ms)?;
        let mut longest = (first_ms, first_ms);
        let ends = self.commit_times_ms.iter().copied().filter(|at_ms| *at_ms <= until_ms).chain([until_ms.max(first_ms)]);
        let mut previous_ms = first_ms;
        for at_ms in ends {
            if at_ms - previous_ms > longest.1 - longest.0 {
                longest = (previous_ms, at_ms);
            }
            previous_ms = at_ms;
        }
        Some(longest)
    }

    /// `group-stable-progress`: no stretch longer than `gap_ms_max` without
    /// an acknowledged commit, from the first commit until `until_ms` (the
    /// heal). Records the longest stretch for the summary.
    pub fn check_commit_gap(&mut self, until_ms: u64, gap_ms_max: u64) -> Result<(), DataViolation> {
        let Some((from_ms, to_ms)) = self.longest_commit_gap(until_ms) else {
            return violation(checker::GROUP_STABLE_PROGRESS, format!("the group acknowledged no commit before the heal at {until_ms} ms"));
        };
        self.stats.longest_commit_gap_ms = to_ms - from_ms;
        if to_ms - from_ms > gap_ms_max {
            let message = format!("no commit was acknowledged from {from_ms} ms to {to_ms} ms ({} ms, bound {gap_ms_max} ms)", to_ms - from_ms);
            return violation(checker::GROUP_STABLE_PROGRESS, message);
        }
        Ok(())
    }

    pub fn consumed(&mut self, partition: u32, offset: u64) {
        if self.consumed.insert((partition, offset)) {
            self.stats.records_consumed += 1;
        }
    }

    /// Whether the group consumed every offset of `committed_records` (its
    /// commits past them are checked at the end: a commit that applied but
    /// whose answer was lost is acknowledged to nobody, yet counts).
    pub fn caught_up(&self, committed_records: &BTreeMap<u32, BTreeSet<u64>>) -> bool {
        committed_records.iter().all(|(partition, offsets)| offsets.iter().all(|offset| self.consumed.contains(&(*partition, *offset))))
    }

    /// After the heal: every acks=all record (`acknowledged`: partition ->
    /// offsets) was consumed, and the final committed offsets (`final_committed`)
    /// are at least every acknowledged commit and past every acknowledged record.
    pub fn check_final(&self, acknowledged: &BTreeMap<u32, BTreeSet<u64>>, final_committed: &BTreeMap<u32, i64>) -> Result<(), DataViolation> {
        for (partition, max) in &self.acked_max {
            let committed = final_committed.get(partition).copied().unwrap_or(-1);
            if committed < *max && !self.unanswered_landed(*partition, committed) {
                let message = format!("partition {partition}: the final committed offset is {committed}, below the acknowledged commit {max}");
                return violation(checker::GROUP_COMMITS_DURABLE, message);
            }
        }
        for (partition, offsets) in acknowledged {
            if let Some(offset) = offsets.iter().find(|offset| !self.consumed.contains(&(*partition, **offset))) {
                let message = format!("partition {partition}: the acknowledged record at offset {offset} was never consumed by the group");
                return violation(checker::GROUP_PROGRESS, message);
            }
            let end = offsets.iter().next_back().map_or(0, |last| *last as i64 + 1);
            let committed = final_committed.get(partition).copied().unwrap_or(-1);
            if committed < end {
                let message = format!("partition {partition}: the group committed {committed}, not past the last acknowledged record (offset {})", end - 1);
                return violation(checker::GROUP_PROGRESS, message);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_fetch_below_an_acknowledged_commit_is_a_lost_commit() {
        let mut history = GroupHistory::default();
        history.commit_acknowledged(0, 0, 40, 1);
        assert!(history.committed_fetched("m1", 0, 40, history.acked_max(0)).is_ok());
        let lost = history.committed_fetched("m1", 0, 39, history.acked_max(0)).unwrap_err();
        assert_eq!(lost.checker, checker::GROUP_COMMITS_DURABLE);
    }

    #[test]
    fn an_unanswered_commit_may_land_after_a_later_one_of_its_generation_but_not_past_a_later_generation() {
        let mut history = GroupHistory::default();
        history.assigned("m1", "m1", 1, &[0]).expect("generation 1");
        let first = history.generation_order("m1", 1);
        // 28 is sent, its connection dropped unanswered; 35 is acknowledged
        // over a new connection, then the held-up 28 lands.
        history.commit_unanswered(0, 28, first);
        history.commit_acknowledged(0, 0, 35, first);
        assert!(history.committed_fetched("m1", 0, 28, history.acked_max(0)).is_ok());
        assert_eq!(history.check_final(&BTreeMap::new(), &[(0, 28)].into_iter().collect()), Ok(()));
        // Any other lower answer is a lost commit.
        assert_eq!(history.committed_fetched("m1", 0, 30, history.acked_max(0)).unwrap_err().checker, checker::GROUP_COMMITS_DURABLE);
        // A commit acknowledged in a later generation: 28 can no longer land.
        history.assigned("m1", "m1", 2, &[0]).expect("generation 2");
        history.commit_acknowledged(0, 0, 35, history.generation_order("m1", 2));
        assert_eq!(history.committed_fetched("m1", 0, 28, history.acked_max(0)).unwrap_err().checker, checker::GROUP_COMMITS_DURABLE);
        let lost = history.check_final(&BTreeMap::new(), &[(0, 28)].into_iter().collect()).unwrap_err();
        assert_eq!(lost.checker, checker::GROUP_COMMITS_DURABLE);
    }

    #[test]
    fn two_owners_of_a_partition_in_one_generation_are_caught_but_not_across_generations() {
        let mut history = GroupHistory::default();
        history.assigned("m1", "m1", 3, &[0, 1]).expect("first owner");
        history.assigned("m1", "m1", 3, &[0, 1]).expect("the same member again");
        history.assigned("m2", "m1", 4, &[0]).expect("another generation");
        history.assigned("m2", "m9", 3, &[0]).expect("another coordinator's generation 3");
        let twice = history.assigned("m2", "m1", 3, &[1]).unwrap_err();
        assert_eq!(twice.checker, checker::GROUP_SINGLE_OWNER);
    }

    #[test]
    fn a_stretch_without_commits_longer_than_the_bound_is_caught_up_to_the_heal() {
        let mut history = GroupHistory::default();
        assert_eq!(history.check_commit_gap(5_000, 1_000).unwrap_err().checker, checker::GROUP_STABLE_PROGRESS);
        for at_ms in [1_000, 1_400, 2_300, 2_700] {
            history.commit_acknowledged(at_ms, 0, at_ms as i64, 1);
        }
        assert_eq!(history.longest_commit_gap(3_000), Some((1_400, 2_300)));
        assert!(history.check_commit_gap(3_000, 900).is_ok());
        assert_eq!(history.stats.longest_commit_gap_ms, 900);
        assert_eq!(history.check_commit_gap(3_000, 899).unwrap_err().checker, checker::GROUP_STABLE_PROGRESS);
        // Silence up to the heal counts too; commits after it do not matter.
        assert_eq!(history.check_commit_gap(4_000, 1_000).unwrap_err().checker, checker::GROUP_STABLE_PROGRESS);
        history.commit_acknowledged(9_000, 0, 9_000, 1);
        assert_eq!(history.longest_commit_gap(3_700), Some((2_700, 3_700)));
        // A group that first commits after the heal never progressed in time.
        let mut late = GroupHistory::default();
        late.commit_acknowledged(6_000, 0, 1, 1);
        assert_eq!(late.longest_commit_gap(5_000), None);
        assert_eq!(late.check_commit_gap(5_000, 1_000).unwrap_err().checker, checker::GROUP_STABLE_PROGRESS);
    }

    #[test]
    fn the_final_check_wants_every_acknowledged_record_consumed_and_committed() {
        let mut history = GroupHistory::default();
        let acknowledged: BTreeMap<u32, BTreeSet<u64>> = [(0, [0, 1, 2].into_iter().collect())].into_iter().collect();
        history.consumed(0, 0);
        history.consumed(0, 1);
        history.commit_acknowledged(0, 0, 2, 1);
        let committed: BTreeMap<u32, i64> = [(0, 3)].into_iter().collect();
        assert_eq!(history.check_final(&acknowledged, &committed).unwrap_err().checker, checker::GROUP_PROGRESS);
        history.consumed(0, 2);
        assert!(history.check_final(&acknowledged, &committed).is_ok());
        let behind: BTreeMap<u32, i64> = [(0, 2)].into_iter().collect();
        assert_eq!(history.check_final(&acknowledged, &behind).unwrap_err().checker, checker::GROUP_PROGRESS);
        history.commit_acknowledged(0, 0, 5, 1);
        assert_eq!(history.check_final(&acknowledged, &committed).unwrap_err().checker, checker::GROUP_COMMITS_DURABLE);
    }
}
