//! The partition follower's replication core: what to fetch, where to
//! truncate when the leader says the logs diverge, and the follower's high
//! watermark. The driver reads and writes the log; this core keeps the
//! offsets and the epoch cache and checks every step against them.

use crate::epoch_cache::EpochCache;
use crate::leader::{FetchRequest, LogState};
use crate::BrokerId;

/// What the driver must do to the log after a leader's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FollowerStep {
    /// Cut the log at this offset (drop it and everything after), then fetch again.
    Truncate { end_offset: u64 },
    /// Nothing to cut: fetch again.
    FetchAgain,
}

/// One partition this broker follows, under one leader and leader epoch.
#[derive(Debug)]
pub struct Follower {
    broker_id: BrokerId,
    leader_id: BrokerId,
    leader_epoch: u32,
    log_start_offset: u64,
    log_end_offset: u64,
    durable_end_offset: u64,
    high_watermark: u64,
    epoch_cache: EpochCache,
}

impl Follower {
    pub fn new(broker_id: BrokerId, leader_id: BrokerId, leader_epoch: u32, log: LogState) -> Follower {
        assert_ne!(broker_id, leader_id, "a broker does not follow itself");
        assert!(log.durable_end_offset <= log.log_end_offset, "durable end beyond log end");
        let mut epoch_cache = log.epoch_cache;
        // An epoch this broker led without writing owns no offsets; dropping
        // it lets the new leader's older epochs follow in the cache.
        epoch_cache.truncate_from_end(log.log_end_offset);
        Follower {
            broker_id,
            leader_id,
            leader_epoch,
            log_start_offset: log.log_start_offset,
            log_end_offset: log.log_end_offset,
            durable_end_offset: log.durable_end_offset,
            high_watermark: log.high_watermark.min(log.log_end_offset),
            epoch_cache,
        }
    }

    pub fn leader_id(&self) -> BrokerId {
        self.leader_id
    }

    pub fn leader_epoch(&self) -> u32 {
        self.leader_epoch
    }

    pub fn log_end_offset(&self) -> u64 {
        self.log_end_offset
    }

    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    pub fn epoch_cache(&self) -> &EpochCache {
        &self.epoch_cache
    }

    /// The next fetch. The log must be flushed first: the fetch offset tells
    /// the leader that everything below it is durable here.
    pub fn fetch_request(&self) -> FetchRequest {
        assert_eq!(self.durable_end_offset, self.log_end_offset, "flush before fetching: the fetch offset is a durability claim");
        let last_fetched_epoch = if self.log_end_offset > self.log_start_offset { self.epoch_cache.epoch_at(self.log_end_offset - 1) } else { None };
        FetchRequest { follower: self.broker_id, leader_epoch: self.leader_epoch, fetch_offset: self.log_end_offset, last_fetched_epoch }
    }

    /// The leader says our log diverges: what `epoch` wrote ends at
    /// `end_offset` on the leader. Cut to the smaller of that and where the
    /// same epoch ends here (Kafka's follower rule); the next fetch checks again.
    pub fn diverging(&mut self, epoch: u32, end_offset: u64) -> FollowerStep {
        let ours = self.epoch_cache.end_offset_for(epoch, self.log_end_offset).map_or(self.log_start_offset, |(_, end)| end);
        let cut = end_offset.min(ours).max(self.log_start_offset).min(self.log_end_offset);
        if cut == self.log_end_offset {
            return FollowerStep::FetchAgain;
        }
        self.truncated(cut);
        FollowerStep::Truncate { end_offset: cut }
    }

    /// The driver cut the log at `end_offset`.
    fn truncated(&mut self, end_offset: u64) {
        assert!(end_offset >= self.log_start_offset, "never truncate below the log start");
        self.log_end_offset = end_offset;
        self.durable_end_offset = self.durable_end_offset.min(end_offset);
        self.high_watermark = self.high_watermark.min(end_offset);
        self.epoch_cache.truncate_from_end(end_offset);
    }

    /// The driver appended records fetched from `from`: `batches` lists each
    /// run's leader epoch and end offset (exclusive), in order.
    pub fn appended(&mut self, from: u64, batches: &[(u32, u64)], leader_high_watermark: u64) {
        assert_eq!(from, self.log_end_offset, "fetched records continue the log");
        let mut start = from;
        for (epoch, end_offset) in batches {
            assert!(*end_offset > start, "a fetched run holds records");
            assert!(*epoch <= self.leader_epoch, "records from epoch {epoch} are newer than the leader epoch {}", self.leader_epoch);
            self.epoch_cache.assign(*epoch, start);
            start = *end_offset;
        }
        self.log_end_offset = start;
        self.high_watermark = self.high_watermark.max(leader_high_watermark.min(self.log_end_offset));
    }

    /// The leader's high watermark arrived with an empty read.
    pub fn leader_high_watermark(&mut self, leader_high_watermark: u64) {
        self.high_watermark = self.high_watermark.max(leader_high_watermark.min(self.log_end_offset));
    }

    /// The driver's flush made everything below `durable_end_offset` durable.
    pub fn flushed(&mut self, durable_end_offset: u64) {
        assert!(durable_end_offset <= self.log_end_offset, "flushed beyond the log end");
        self.durable_end_offset = self.durable_end_offset.max(durable_end_offset);
    }

    /// Where the log stands, for becoming leader (or following another).
    pub fn into_log_state(self) -> LogState {
        LogState {
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset,
            durable_end_offset: self.durable_end_offset,
            high_watermark: self.high_watermark,
            epoch_cache: self.epoch_cache,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower_with(entries: &[(u32, u64)], log_end_offset: u64) -> Follower {
        let mut epoch_cache = EpochCache::new();
        for (epoch, start) in entries {
            epoch_cache.assign(*epoch, *start);
        }
        let log = LogState { log_start_offset: 0, log_end_offset, durable_end_offset: log_end_offset, high_watermark: 0, epoch_cache };
        Follower::new(2, 1, 5, log)
    }

    #[test]
    fn the_fetch_names_the_epoch_of_the_last_record() {
        let follower = follower_with(&[(1, 0), (3, 4)], 9);
        assert_eq!(follower.fetch_request(), FetchRequest { follower: 2, leader_epoch: 5, fetch_offset: 9, last_fetched_epoch: Some(3) });
        let empty = follower_with(&[], 0);
        assert_eq!(empty.fetch_request().last_fetched_epoch, None);
    }

    #[test]
    fn divergence_cuts_at_the_smaller_of_both_ends_of_the_epoch() {
        // Ours: epoch 1 [0, 4), epoch 3 [4, 9). The leader never saw epoch 3:
        // it says epoch 1 ends at 6 there; ours ends at 4, so cut at 4.
        let mut follower = follower_with(&[(1, 0), (3, 4)], 9);
        assert_eq!(follower.diverging(1, 6), FollowerStep::Truncate { end_offset: 4 });
        assert_eq!(follower.log_end_offset(), 4);
        assert_eq!(follower.fetch_request().last_fetched_epoch, Some(1));
        // Now the leader says epoch 1 ends at 6 and ours ends at 4: nothing to cut.
        assert_eq!(follower.diverging(1, 6), FollowerStep::FetchAgain);
    }

    #[test]
    fn appended_runs_extend_the_epoch_cache_and_the_high_watermark_stays_within_the_log() {
        let mut follower = follower_with(&[(1, 0)], 2);
        follower.appended(2, &[(1, 4), (5, 6)], 100);
        assert_eq!(follower.log_end_offset(), 6);
        assert_eq!(follower.high_watermark(), 6);
        assert_eq!(follower.epoch_cache().epoch_at(5), Some(5));
        assert_eq!(follower.epoch_cache().epoch_at(3), Some(1));
    }

    #[test]
    #[should_panic(expected = "flush before fetching")]
    fn fetching_with_unflushed_records_is_a_bug() {
        let mut follower = follower_with(&[(1, 0)], 2);
        follower.appended(2, &[(1, 3)], 0);
        let _ = follower.fetch_request();
    }
}
