//! The leader-epoch cache: for each leader epoch, the first offset written in
//! it. Kafka's `leader-epoch-checkpoint`; here rebuilt from the batches' epochs
//! when a log is opened, and kept in step with every append and truncation.

/// Leader epoch `epoch` wrote the offsets from `start_offset` up to the next
/// entry's start (or the log end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: u32,
    pub start_offset: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpochCache {
    /// Strictly increasing in epoch and in start offset.
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    pub fn new() -> Self {
        EpochCache::default()
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Records that `epoch` wrote `start_offset` (its first offset, or a later
    /// one: an epoch already present is left as it is).
    pub fn assign(&mut self, epoch: u32, start_offset: u64) {
        if let Some(latest) = self.latest() {
            if latest.epoch == epoch {
                return;
            }
            assert!(epoch > latest.epoch, "leader epochs only grow: {epoch} after {}", latest.epoch);
            assert!(start_offset >= latest.start_offset, "epoch {epoch} starts at {start_offset}, before epoch {} at {}", latest.epoch, latest.start_offset);
            if start_offset == latest.start_offset {
                // The previous epoch wrote nothing; it owns no offsets.
                self.entries.pop();
            }
        }
        self.entries.push(EpochEntry { epoch, start_offset });
        self.check_invariants();
    }

    /// Kafka's OffsetForLeaderEpoch: the largest epoch `<= epoch` this log
    /// knows and the end offset (exclusive) of what that epoch wrote here.
    /// `None` when every known epoch is newer (or the cache is empty).
    pub fn end_offset_for(&self, epoch: u32, log_end_offset: u64) -> Option<(u32, u64)> {
        let index = self.entries.iter().rposition(|entry| entry.epoch <= epoch)?;
        let end_offset = self.entries.get(index + 1).map_or(log_end_offset, |next| next.start_offset);
        Some((self.entries[index].epoch, end_offset))
    }

    /// The epoch that wrote `offset`, if known.
    pub fn epoch_at(&self, offset: u64) -> Option<u32> {
        self.entries.iter().rev().find(|entry| entry.start_offset <= offset).map(|entry| entry.epoch)
    }

    /// The log was cut at `end_offset`: epochs that start at or after it wrote nothing left.
    pub fn truncate_from_end(&mut self, end_offset: u64) {
        self.entries.retain(|entry| entry.start_offset < end_offset);
    }

    /// The log now starts at `start_offset`: the epoch covering it starts there.
    pub fn truncate_from_start(&mut self, start_offset: u64) {
        let Some(covering) = self.entries.iter().rposition(|entry| entry.start_offset <= start_offset) else { return };
        self.entries.drain(..covering);
        self.entries[0].start_offset = start_offset;
        self.check_invariants();
    }

    fn check_invariants(&self) {
        for pair in self.entries.windows(2) {
            assert!(pair[0].epoch < pair[1].epoch, "epoch cache epochs increase: {pair:?}");
            assert!(pair[0].start_offset < pair[1].start_offset, "epoch cache start offsets increase: {pair:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(u32, u64)]) -> EpochCache {
        let mut cache = EpochCache::new();
        for (epoch, start) in entries {
            cache.assign(*epoch, *start);
        }
        cache
    }

    #[test]
    fn end_offset_for_answers_like_offset_for_leader_epoch() {
        let cache = cache(&[(1, 0), (3, 10), (4, 25)]);
        assert_eq!(cache.end_offset_for(1, 40), Some((1, 10)));
        // Epoch 2 never wrote here: the answer is the largest epoch below it.
        assert_eq!(cache.end_offset_for(2, 40), Some((1, 10)));
        assert_eq!(cache.end_offset_for(3, 40), Some((3, 25)));
        assert_eq!(cache.end_offset_for(4, 40), Some((4, 40)));
        assert_eq!(cache.end_offset_for(9, 40), Some((4, 40)));
        assert_eq!(cache.end_offset_for(0, 40), None);
    }

    #[test]
    fn an_epoch_that_wrote_nothing_is_replaced_and_repeats_are_ignored() {
        let cache = cache(&[(1, 0), (2, 5), (2, 7), (3, 5)]);
        assert_eq!(cache.entries(), &[EpochEntry { epoch: 1, start_offset: 0 }, EpochEntry { epoch: 3, start_offset: 5 }]);
    }

    #[test]
    fn truncation_from_either_end_keeps_the_cache_exact() {
        let mut from_end = cache(&[(1, 0), (3, 10), (4, 25)]);
        from_end.truncate_from_end(10);
        assert_eq!(from_end.latest(), Some(EpochEntry { epoch: 1, start_offset: 0 }));
        let mut from_start = cache(&[(1, 0), (3, 10), (4, 25)]);
        from_start.truncate_from_start(12);
        assert_eq!(from_start.entries()[0], EpochEntry { epoch: 3, start_offset: 12 });
        assert_eq!(from_start.epoch_at(30), Some(4));
        assert_eq!(from_start.epoch_at(12), Some(3));
    }

    #[test]
    #[should_panic(expected = "leader epochs only grow")]
    fn an_older_epoch_after_a_newer_one_is_a_bug() {
        cache(&[(3, 0), (2, 5)]);
    }
}
