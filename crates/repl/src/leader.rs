//! The partition leader's replication core: follower progress, the high
//! watermark, acks=all waits, and ISR shrink/expand decisions.
//!
//! The driver appends produced batches to the log, flushes it (group commit)
//! and reports both; followers' fetches come in as `FetchRequest`s and are
//! answered with a `FetchPlan` (what to read, or where the follower's log
//! diverges). ISR changes are decisions (`LeaderOutput::ProposeIsr`): the
//! driver proposes them through the metadata Raft group and calls
//! `isr_changed` once the change is applied, so the ISR the leader acts on is
//! always one the metadata committed.

use std::collections::{BTreeMap, VecDeque};

use crate::epoch_cache::EpochCache;
use crate::error::ReplError;
use crate::BrokerId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderConfig {
    /// acks=all needs at least this many ISR members (Kafka's `min.insync.replicas`).
    pub min_insync_replicas: usize,
    /// A follower not caught up for this long leaves the ISR (`replica.lag.time.max.ms`).
    pub replica_lag_time_max_ms: u64,
}

/// A follower's fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchRequest {
    pub follower: BrokerId,
    /// The leader epoch the follower believes current.
    pub leader_epoch: u32,
    /// The follower's log end: everything below it is durable on the follower.
    pub fetch_offset: u64,
    /// The epoch of the follower's record at `fetch_offset - 1` (`None` for an empty log).
    pub last_fetched_epoch: Option<u32>,
}

/// The leader's answer to a valid fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchPlan {
    /// The follower's log diverges from the leader's: what `epoch` wrote ends
    /// at `end_offset` here. The follower truncates to at most that and fetches again.
    Diverging { epoch: u32, end_offset: u64 },
    /// Send the records in `[from, to)` and the high watermark.
    Read { from: u64, to: u64, high_watermark: u64 },
}

/// What the leader decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaderOutput {
    /// An acks=all produce is answered.
    ProduceDone { produce_id: u64, result: Result<(), ReplError> },
    /// Propose this ISR through the metadata group (one proposal at a time).
    ProposeIsr { isr: Vec<BrokerId> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FollowerProgress {
    /// Everything below this is durable on the follower (its last fetch offset).
    durable_end_offset: u64,
    last_caught_up_ms: u64,
    last_fetch_ms: u64,
    /// The leader's log end when the follower last fetched.
    leader_end_at_last_fetch: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AcksAllWait {
    produce_id: u64,
    end_offset: u64,
    waiting_since_ms: u64,
    deadline_ms: u64,
}

/// One partition led by this broker, in one leader epoch.
#[derive(Debug)]
pub struct Leader {
    broker_id: BrokerId,
    leader_epoch: u32,
    replicas: Vec<BrokerId>,
    isr: Vec<BrokerId>,
    config: LeaderConfig,
    log_start_offset: u64,
    log_end_offset: u64,
    durable_end_offset: u64,
    high_watermark: u64,
    epoch_cache: EpochCache,
    followers: BTreeMap<BrokerId, FollowerProgress>,
    waiting: VecDeque<AcksAllWait>,
    /// The ISR proposed and not yet applied. Its additions count toward the
    /// high watermark at once (Kafka's "maximal ISR", KIP-497): the metadata
    /// may commit the expansion, and the controller elect the new member,
    /// before this leader hears of it, so nothing may be committed without it.
    pending_isr: Option<Vec<BrokerId>>,
}

/// Where a log stands when its broker becomes leader or follower.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogState {
    pub log_start_offset: u64,
    pub log_end_offset: u64,
    pub durable_end_offset: u64,
    pub high_watermark: u64,
    pub epoch_cache: EpochCache,
}

impl Leader {
    /// Becomes leader of `leader_epoch` (the epoch the metadata assigned).
    /// Every follower gets a full lag allowance before it can be judged.
    pub fn new(
        now_ms: u64,
        broker_id: BrokerId,
        leader_epoch: u32,
        replicas: Vec<BrokerId>,
        isr: Vec<BrokerId>,
        config: LeaderConfig,
        log: LogState,
    ) -> Leader {
        assert!(replicas.contains(&broker_id), "a leader is one of the replicas");
        assert!(isr.contains(&broker_id), "a leader is in the ISR (no unclean election)");
        assert!(isr.iter().all(|id| replicas.contains(id)), "the ISR is a subset of the replicas");
        assert!(log.durable_end_offset <= log.log_end_offset, "durable end beyond log end");
        assert!(log.log_start_offset <= log.log_end_offset, "log start beyond log end");
        let mut epoch_cache = log.epoch_cache;
        if let Some(latest) = epoch_cache.latest() {
            assert!(leader_epoch >= latest.epoch, "leader epoch {leader_epoch} is older than epoch {} in the log", latest.epoch);
        }
        epoch_cache.assign(leader_epoch, log.log_end_offset);
        let followers = replicas
            .iter()
            .filter(|id| **id != broker_id)
            .map(|id| {
                let progress =
                    FollowerProgress { durable_end_offset: 0, last_caught_up_ms: now_ms, last_fetch_ms: now_ms, leader_end_at_last_fetch: log.log_end_offset };
                (*id, progress)
            })
            .collect();
        Leader {
            broker_id,
            leader_epoch,
            replicas,
            isr,
            config,
            log_start_offset: log.log_start_offset,
            log_end_offset: log.log_end_offset,
            durable_end_offset: log.durable_end_offset,
            high_watermark: log.high_watermark.min(log.durable_end_offset),
            epoch_cache,
            followers,
            waiting: VecDeque::new(),
            pending_isr: None,
        }
    }

    pub fn leader_epoch(&self) -> u32 {
        self.leader_epoch
    }

    pub fn isr(&self) -> &[BrokerId] {
        &self.isr
    }

    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    pub fn log_end_offset(&self) -> u64 {
        self.log_end_offset
    }

    pub fn epoch_cache(&self) -> &EpochCache {
        &self.epoch_cache
    }

    /// May an acks=all produce be appended now? (Checked before appending:
    /// refused produces append nothing.)
    pub fn check_acks_all(&self) -> Result<(), ReplError> {
        if self.isr.len() < self.config.min_insync_replicas {
            return Err(ReplError::NotEnoughReplicas { isr_size: self.isr.len(), min_insync_replicas: self.config.min_insync_replicas });
        }
        Ok(())
    }

    /// The driver appended `[base_offset, end_offset)` in this leader epoch.
    pub fn appended(&mut self, base_offset: u64, end_offset: u64) {
        assert_eq!(base_offset, self.log_end_offset, "appends continue the log");
        assert!(end_offset > base_offset, "an append adds at least one record");
        self.log_end_offset = end_offset;
    }

    /// An acks=all produce appended up to `end_offset` waits for the ISR.
    pub fn await_acks_all(&mut self, now_ms: u64, produce_id: u64, end_offset: u64, timeout_ms: u64) -> Vec<LeaderOutput> {
        assert!(end_offset <= self.log_end_offset, "waiting for offsets not appended");
        self.waiting.push_back(AcksAllWait { produce_id, end_offset, waiting_since_ms: now_ms, deadline_ms: now_ms + timeout_ms });
        self.complete_waits()
    }

    /// The driver's flush made everything below `durable_end_offset` durable here.
    pub fn flushed(&mut self, durable_end_offset: u64) -> Vec<LeaderOutput> {
        assert!(durable_end_offset <= self.log_end_offset, "flushed beyond the log end");
        self.durable_end_offset = self.durable_end_offset.max(durable_end_offset);
        self.advance_high_watermark()
    }

    /// Validates a follower's fetch and records its progress.
    pub fn fetch(&mut self, now_ms: u64, request: FetchRequest) -> Result<(FetchPlan, Vec<LeaderOutput>), ReplError> {
        if request.follower == self.broker_id || !self.replicas.contains(&request.follower) {
            return Err(ReplError::NotReplica { broker_id: request.follower });
        }
        if request.leader_epoch < self.leader_epoch {
            return Err(ReplError::FencedLeaderEpoch { requested: request.leader_epoch, current: self.leader_epoch });
        }
        if request.leader_epoch > self.leader_epoch {
            return Err(ReplError::UnknownLeaderEpoch { requested: request.leader_epoch, current: self.leader_epoch });
        }
        if let Some(last_fetched_epoch) = request.last_fetched_epoch {
            match self.epoch_cache.end_offset_for(last_fetched_epoch, self.log_end_offset) {
                None => return Ok((FetchPlan::Diverging { epoch: last_fetched_epoch, end_offset: self.log_start_offset }, Vec::new())),
                Some((epoch, end_offset)) if epoch != last_fetched_epoch || end_offset < request.fetch_offset => {
                    return Ok((FetchPlan::Diverging { epoch, end_offset }, Vec::new()));
                }
                Some(_) => {}
            }
        } else if request.fetch_offset > self.log_start_offset {
            // A follower with records but no epoch for them cannot be validated.
            return Ok((FetchPlan::Diverging { epoch: 0, end_offset: self.log_start_offset }, Vec::new()));
        }
        if request.fetch_offset < self.log_start_offset || request.fetch_offset > self.log_end_offset {
            return Err(ReplError::OffsetOutOfRange {
                offset: request.fetch_offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.log_end_offset,
            });
        }
        let progress = self.followers.get_mut(&request.follower).expect("every replica but the leader has progress");
        // Caught up: at the leader's end now, or at least where the leader's
        // end was at the follower's previous fetch (Kafka's rule).
        if request.fetch_offset >= self.log_end_offset {
            progress.last_caught_up_ms = now_ms;
        } else if request.fetch_offset >= progress.leader_end_at_last_fetch {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(progress.last_fetch_ms);
        }
        progress.durable_end_offset = request.fetch_offset;
        progress.last_fetch_ms = now_ms;
        progress.leader_end_at_last_fetch = self.log_end_offset;
        let mut outputs = self.advance_high_watermark();
        let epoch_start = self.epoch_cache.latest().map_or(0, |latest| latest.start_offset);
        let caught_up = request.fetch_offset >= self.high_watermark && request.fetch_offset >= epoch_start;
        if !self.isr.contains(&request.follower) && caught_up && self.pending_isr.is_none() {
            let mut isr = self.isr.clone();
            isr.push(request.follower);
            isr.sort_unstable();
            self.pending_isr = Some(isr.clone());
            outputs.push(LeaderOutput::ProposeIsr { isr });
        }
        let plan = FetchPlan::Read { from: request.fetch_offset, to: self.log_end_offset, high_watermark: self.high_watermark };
        Ok((plan, outputs))
    }

    /// Time passes: acks=all waits time out, lagging followers leave the ISR.
    pub fn tick(&mut self, now_ms: u64) -> Vec<LeaderOutput> {
        let mut outputs = Vec::new();
        // A broker ticks every partition it leads many times a second, and
        // almost every tick finds nothing due: nothing is allocated then.
        self.waiting.retain(|wait| {
            let due = wait.deadline_ms <= now_ms;
            if due {
                let result = Err(ReplError::RequestTimedOut { waited_ms: now_ms - wait.waiting_since_ms });
                outputs.push(LeaderOutput::ProduceDone { produce_id: wait.produce_id, result });
            }
            !due
        });
        let lags = |id: &BrokerId| *id != self.broker_id && now_ms.saturating_sub(self.followers[id].last_caught_up_ms) > self.config.replica_lag_time_max_ms;
        if self.pending_isr.is_none() && self.isr.iter().any(lags) {
            let isr: Vec<BrokerId> = self.isr.iter().copied().filter(|id| !lags(id)).collect();
            self.pending_isr = Some(isr.clone());
            outputs.push(LeaderOutput::ProposeIsr { isr });
        }
        outputs
    }

    /// The metadata applied a new ISR for this leader epoch (or a proposal
    /// failed: then `isr` is the current one and a new decision may follow).
    pub fn isr_changed(&mut self, now_ms: u64, isr: Vec<BrokerId>) -> Vec<LeaderOutput> {
        assert!(isr.contains(&self.broker_id), "the leader stays in its ISR");
        assert!(isr.iter().all(|id| self.replicas.contains(id)), "the ISR is a subset of the replicas");
        for id in &isr {
            if !self.isr.contains(id) && *id != self.broker_id {
                // A new member gets a full allowance from the moment it joined.
                self.followers.get_mut(id).expect("replica progress").last_caught_up_ms = now_ms;
            }
        }
        self.isr = isr;
        self.pending_isr = None;
        self.advance_high_watermark()
    }

    /// This broker no longer leads: every wait is answered NOT_LEADER_OR_FOLLOWER,
    /// and the log's state goes on to the next role.
    pub fn resign(self) -> (Vec<LeaderOutput>, LogState) {
        let broker_id = self.broker_id;
        let outputs = self
            .waiting
            .into_iter()
            .map(|wait| LeaderOutput::ProduceDone { produce_id: wait.produce_id, result: Err(ReplError::NotLeader { broker_id }) })
            .collect();
        let log = LogState {
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset,
            durable_end_offset: self.durable_end_offset,
            high_watermark: self.high_watermark,
            epoch_cache: self.epoch_cache,
        };
        (outputs, log)
    }

    /// High watermark = the smallest durable end over the maximal ISR (the
    /// applied ISR plus pending additions; the leader's own flushed end
    /// included). It never moves back.
    fn advance_high_watermark(&mut self) -> Vec<LeaderOutput> {
        let pending = self.pending_isr.iter().flatten();
        let candidate = self
            .isr
            .iter()
            .chain(pending)
            .map(|id| if *id == self.broker_id { self.durable_end_offset } else { self.followers[id].durable_end_offset })
            .min()
            .expect("the ISR holds the leader");
        let mut outputs = Vec::new();
        if candidate > self.high_watermark {
            assert!(candidate <= self.log_end_offset, "high watermark beyond the leader's log end");
            self.high_watermark = candidate;
        }
        outputs.extend(self.complete_waits());
        outputs
    }

    fn complete_waits(&mut self) -> Vec<LeaderOutput> {
        let mut outputs = Vec::new();
        let mut still_waiting = VecDeque::with_capacity(self.waiting.len());
        for wait in self.waiting.drain(..) {
            if wait.end_offset <= self.high_watermark {
                let result = if self.isr.len() < self.config.min_insync_replicas {
                    Err(ReplError::NotEnoughReplicasAfterAppend { isr_size: self.isr.len(), min_insync_replicas: self.config.min_insync_replicas })
                } else {
                    Ok(())
                };
                outputs.push(LeaderOutput::ProduceDone { produce_id: wait.produce_id, result });
            } else {
                still_waiting.push_back(wait);
            }
        }
        self.waiting = still_waiting;
        outputs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: LeaderConfig = LeaderConfig { min_insync_replicas: 2, replica_lag_time_max_ms: 1_000 };

    fn empty_log() -> LogState {
        LogState { log_start_offset: 0, log_end_offset: 0, durable_end_offset: 0, high_watermark: 0, epoch_cache: EpochCache::new() }
    }

    fn leader() -> Leader {
        Leader::new(0, 1, 5, vec![1, 2, 3], vec![1, 2, 3], CONFIG, empty_log())
    }

    fn fetch(follower: BrokerId, fetch_offset: u64, last_fetched_epoch: Option<u32>) -> FetchRequest {
        FetchRequest { follower, leader_epoch: 5, fetch_offset, last_fetched_epoch }
    }

    #[test]
    fn acks_all_completes_only_when_every_isr_member_has_the_batch_durably() {
        let mut leader = leader();
        leader.appended(0, 10);
        assert!(leader.await_acks_all(0, 7, 10, 5_000).is_empty());
        assert!(leader.flushed(10).iter().all(|o| !matches!(o, LeaderOutput::ProduceDone { .. })));
        leader.fetch(1, fetch(2, 10, Some(5))).expect("valid");
        assert_eq!(leader.high_watermark(), 0, "follower 3 has nothing yet");
        let (_, outputs) = leader.fetch(2, fetch(3, 10, Some(5))).expect("valid");
        assert_eq!(leader.high_watermark(), 10);
        assert!(outputs.contains(&LeaderOutput::ProduceDone { produce_id: 7, result: Ok(()) }), "{outputs:?}");
    }

    #[test]
    fn the_leaders_own_unflushed_records_hold_the_high_watermark_back() {
        let mut leader = leader();
        leader.appended(0, 4);
        leader.fetch(1, fetch(2, 4, Some(5))).expect("valid");
        leader.fetch(1, fetch(3, 4, Some(5))).expect("valid");
        assert_eq!(leader.high_watermark(), 0);
        leader.flushed(4);
        assert_eq!(leader.high_watermark(), 4);
    }

    #[test]
    fn too_small_an_isr_refuses_acks_all_before_appending() {
        let leader = Leader::new(0, 1, 5, vec![1, 2, 3], vec![1], CONFIG, empty_log());
        assert_eq!(leader.check_acks_all(), Err(ReplError::NotEnoughReplicas { isr_size: 1, min_insync_replicas: 2 }));
        assert_eq!(leader.check_acks_all().unwrap_err().kafka_code(), keel_error_codes::NOT_ENOUGH_REPLICAS);
    }

    #[test]
    fn a_lagging_follower_is_proposed_out_and_a_caught_up_one_back_in() {
        let mut leader = leader();
        leader.appended(0, 3);
        leader.flushed(3);
        leader.fetch(500, fetch(2, 3, Some(5))).expect("valid");
        let outputs = leader.tick(1_200);
        assert_eq!(outputs, vec![LeaderOutput::ProposeIsr { isr: vec![1, 2] }], "3 never fetched for 1.2 s");
        assert!(leader.tick(1_300).is_empty(), "one ISR proposal at a time");
        assert_eq!(leader.high_watermark(), 0, "held back by 3, which has nothing");
        leader.isr_changed(1_400, vec![1, 2]);
        assert_eq!(leader.high_watermark(), 3, "the ISR without 3 has everything");
        let (_, outputs) = leader.fetch(1_500, fetch(3, 3, Some(5))).expect("valid");
        assert!(outputs.contains(&LeaderOutput::ProposeIsr { isr: vec![1, 2, 3] }), "{outputs:?}");
    }

    #[test]
    fn an_isr_shrinking_below_the_minimum_answers_not_enough_replicas_after_append() {
        let mut leader = leader();
        leader.appended(0, 2);
        leader.await_acks_all(0, 9, 2, 10_000);
        leader.flushed(2);
        leader.fetch(10, fetch(2, 2, Some(5))).expect("valid");
        let outputs = leader.isr_changed(20, vec![1]);
        let expected =
            LeaderOutput::ProduceDone { produce_id: 9, result: Err(ReplError::NotEnoughReplicasAfterAppend { isr_size: 1, min_insync_replicas: 2 }) };
        assert!(outputs.contains(&expected), "{outputs:?}");
    }

    #[test]
    fn a_wait_times_out_with_request_timed_out() {
        let mut leader = leader();
        leader.appended(0, 1);
        leader.await_acks_all(100, 3, 1, 500);
        assert!(leader.tick(599).is_empty());
        let outputs = leader.tick(600);
        assert_eq!(outputs, vec![LeaderOutput::ProduceDone { produce_id: 3, result: Err(ReplError::RequestTimedOut { waited_ms: 500 }) }]);
    }

    #[test]
    fn stale_and_future_epochs_and_strangers_are_refused() {
        let mut leader = leader();
        let stale = FetchRequest { leader_epoch: 4, ..fetch(2, 0, None) };
        assert_eq!(leader.fetch(0, stale).unwrap_err().kafka_code(), keel_error_codes::FENCED_LEADER_EPOCH);
        let future = FetchRequest { leader_epoch: 6, ..fetch(2, 0, None) };
        assert_eq!(leader.fetch(0, future).unwrap_err().kafka_code(), keel_error_codes::UNKNOWN_LEADER_EPOCH);
        assert_eq!(leader.fetch(0, fetch(9, 0, None)).unwrap_err(), ReplError::NotReplica { broker_id: 9 });
    }

    #[test]
    fn a_follower_ahead_in_an_old_epoch_is_told_where_its_log_diverges() {
        // The leader's log: epoch 2 wrote [0, 5), epoch 5 (this one) starts at 5.
        let mut cache = EpochCache::new();
        cache.assign(2, 0);
        let log = LogState { log_start_offset: 0, log_end_offset: 5, durable_end_offset: 5, high_watermark: 5, epoch_cache: cache };
        let mut leader = Leader::new(0, 1, 5, vec![1, 2, 3], vec![1, 2, 3], CONFIG, log);
        // Follower 2 followed a deposed leader of epoch 3 and has [0, 8) with epoch 3 at the end.
        let (plan, _) = leader.fetch(0, fetch(2, 8, Some(3))).expect("valid");
        assert_eq!(plan, FetchPlan::Diverging { epoch: 2, end_offset: 5 });
        // Follower 3 wrote epoch 2 up to 7 (more than the leader kept).
        let (plan, _) = leader.fetch(0, fetch(3, 7, Some(2))).expect("valid");
        assert_eq!(plan, FetchPlan::Diverging { epoch: 2, end_offset: 5 });
        let (plan, _) = leader.fetch(0, fetch(3, 5, Some(2))).expect("valid");
        assert_eq!(plan, FetchPlan::Read { from: 5, to: 5, high_watermark: 5 });
    }
}
