//! One partition replica on this broker: its log, its role (a `Leader` or
//! `Follower` core, or idle), and the role changes the metadata asks for.

use keel_io::Disk;
use keel_log::{Log, LogError};
use keel_meta::state::Partition;

use super::{ReadLimit, ReadRecord, ReadResult, ReplConfig, ReplDriverError, ReplicaRole, ReplicaStatus};
use crate::epoch_cache::EpochCache;
use crate::error::ReplError;
use crate::follower::Follower;
use crate::leader::{Leader, LeaderConfig, LeaderOutput, LogState};
use crate::producers::ProducerStates;
use crate::stored::{decode_stored, BatchPosition};
use crate::BrokerId;

pub(super) enum Role {
    Leader(Leader),
    Follower(Follower, FetchState),
    /// Not acting: no leader, not registered yet, or no longer a replica.
    Idle(LogState),
}

#[derive(Debug, Default)]
pub(super) struct FetchState {
    /// (request id, sent at) of the fetch awaiting its answer.
    pub in_flight: Option<(u64, u64)>,
    pub next_fetch_ms: u64,
}

/// A follower's fetch the leader holds until there is something new.
#[derive(Debug)]
pub(super) struct Parked {
    pub follower: BrokerId,
    pub request_id: u64,
    pub leader_epoch: u32,
    pub fetch_offset: u64,
    pub bytes_max: u32,
    /// The high watermark when it was parked: a higher one is news.
    pub high_watermark: u64,
    pub deadline_ms: u64,
}

impl Parked {
    /// Whether it is answered now: there are records past its offset, the
    /// high watermark moved, or its wait is over.
    pub fn ready(&self, log_end_offset: u64, high_watermark: u64, now_ms: u64) -> bool {
        self.fetch_offset < log_end_offset || self.high_watermark < high_watermark || self.deadline_ms <= now_ms
    }
}

#[derive(Clone, Debug)]
pub(super) struct IsrProposal {
    pub leader_epoch: u32,
    pub expected_partition_epoch: u64,
    pub isr: Vec<BrokerId>,
    pub retry_at_ms: Option<u64>,
}

/// The role the metadata gives this broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Desired {
    Leader { leader_epoch: u32 },
    Follower { leader_id: BrokerId, leader_epoch: u32 },
    Idle,
}

impl Desired {
    pub fn from_partition(me: BrokerId, partition: &Partition) -> Desired {
        let leader_epoch = u32::try_from(partition.leader_epoch).expect("leader epochs fit u32");
        match partition.leader {
            Some(leader) if leader == me => Desired::Leader { leader_epoch },
            Some(leader_id) => Desired::Follower { leader_id, leader_epoch },
            None => Desired::Idle,
        }
    }
}

/// What a metadata change did to a replica.
#[derive(Default)]
pub(super) struct RoleChange {
    pub became: Option<ReplicaRole>,
    pub outputs: Vec<LeaderOutput>,
    /// The ISR a staying leader had and the one the metadata now names,
    /// when the two differ.
    pub isr_moved: Option<(Vec<BrokerId>, Vec<BrokerId>)>,
}

pub(super) enum ReadError {
    Repl(ReplError),
    Log(LogError),
    Corrupt { offset: u64, error: ReplError },
}

pub(super) struct Replica {
    pub log: Log,
    /// The topic's id in the metadata: a topic of the same name created after
    /// this one was deleted is another topic with another log.
    pub topic_id: u64,
    pub role: Role,
    /// The partition epoch of the metadata this replica last followed.
    pub partition_epoch: u64,
    pub parked: Vec<Parked>,
    /// Appended since the last flush (leaders; followers flush at once).
    pub dirty: bool,
    pub isr_proposal: Option<IsrProposal>,
    /// The idempotent producers' recent batches in this log (every role
    /// keeps it, so a new leader already has it).
    pub producers: ProducerStates,
    /// Opening the log cut off what a crash tore: the tail of a frame, or
    /// the first records of a batch.
    pub torn_tail_recovered: bool,
}

/// What a scan of a whole log found.
struct Scanned {
    epoch_cache: EpochCache,
    producers: ProducerStates,
    /// Where a batch starts whose last record is not in the log (only ever
    /// the log's last batch: a torn write kept the first records of it).
    unfinished_batch_offset: Option<u64>,
}

/// Reads the whole log once: the epoch cache, the producers' state, and
/// whether the log ends inside a batch. Every record is checked to continue
/// the batch before it or start a new one after it ended (batches are
/// atomic in the log); anything else is corruption.
async fn scan(log: &Log, config: &ReplConfig, topic: &str, partition: u32) -> Result<Scanned, ReplDriverError> {
    let corrupt = |offset: u64, error: ReplError| ReplDriverError::Corrupt { topic: topic.to_string(), partition, offset, error };
    let mut epoch_cache = EpochCache::new();
    let mut producers = ProducerStates::new();
    let mut previous: Option<BatchPosition> = None;
    let mut batch_start = log.start_offset();
    let mut next = log.start_offset();
    while next < log.next_offset() {
        let records = log.read_from(next, config.log_config.read_chunk_bytes).await.map_err(|error| ReplDriverError::Log {
            topic: topic.to_string(),
            partition,
            error,
        })?;
        for record in &records {
            let stored = decode_stored(&record.payload).map_err(|error| corrupt(record.offset, error))?;
            let continues = match &previous {
                Some(previous) => previous.is_followed_by(&stored.batch),
                None => stored.batch.is_first(),
            };
            if !continues {
                let reason = format!("record {:?} after {previous:?}: a batch is cut inside the log", stored.batch);
                return Err(corrupt(record.offset, ReplError::CorruptMessage { reason }));
            }
            if stored.batch.is_first() {
                batch_start = record.offset;
            }
            previous = Some(stored.batch);
            epoch_cache.assign(stored.leader_epoch, record.offset);
            producers.observe_record(record.offset, &stored.stamp);
        }
        next = records.last().expect("a read below the end yields records").offset + 1;
    }
    let unfinished_batch_offset = previous.filter(|last| !last.is_last()).map(|_| batch_start);
    if let (Some(from_positions), Some(from_producers)) = (unfinished_batch_offset, producers.unfinished_batch_offset()) {
        assert_eq!(from_positions, from_producers, "the batch positions and the producer stamps agree on where the unfinished batch starts");
    }
    assert!(unfinished_batch_offset.is_some() || producers.unfinished_batch_offset().is_none(), "an unfinished idempotent batch is an unfinished batch");
    Ok(Scanned { epoch_cache, producers, unfinished_batch_offset })
}

impl Replica {
    /// Opens (or creates) the log and rebuilds the epoch cache and the
    /// producers' state from the records, verifying every stored record's checksum.
    pub async fn open(disk: &Disk, config: &ReplConfig, topic: &str, topic_id: u64, partition: u32) -> Result<Replica, ReplDriverError> {
        let dir = format!("{}/{topic}-{partition}-{topic_id}", config.data_dir);
        let log_error = |error| ReplDriverError::Log { topic: topic.to_string(), partition, error };
        let mut log = Log::open(disk.clone(), &dir, config.log_config.clone()).await.map_err(log_error)?;
        let mut scanned = scan(&log, config, topic, partition).await?;
        let torn_tail_recovered = log.torn_tail_bytes_dropped() > 0 || scanned.unfinished_batch_offset.is_some();
        if let Some(batch_start) = scanned.unfinished_batch_offset {
            // A crash tore the last batch's write: only its first records are
            // here. It was never durable here whole, so it was never
            // acknowledged through this replica (a durable end is always a
            // batch boundary); the producer's retry appends it whole.
            tracing::warn!(topic, partition, batch_start, log_end_offset = log.next_offset(), "truncating the first records of a batch torn by a crash");
            log.truncate(batch_start).await.map_err(log_error)?;
            assert_eq!(log.next_offset(), batch_start, "the log ends where it was cut");
            scanned = scan(&log, config, topic, partition).await?;
            assert_eq!(scanned.unfinished_batch_offset, None, "a log cut at a batch's start ends with a whole batch");
        }
        let Scanned { epoch_cache, producers, .. } = scanned;
        assert_eq!(log.flushed_offset(), log.next_offset(), "an opened log is durable to its end");
        let state = LogState {
            log_start_offset: log.start_offset(),
            log_end_offset: log.next_offset(),
            durable_end_offset: log.flushed_offset(),
            high_watermark: 0,
            epoch_cache,
        };
        Ok(Replica {
            log,
            topic_id,
            role: Role::Idle(state),
            partition_epoch: 0,
            parked: Vec::new(),
            dirty: false,
            isr_proposal: None,
            producers,
            torn_tail_recovered,
        })
    }

    /// After a truncation the producers' state is rebuilt from what is left.
    /// Truncations cut at epoch boundaries, and an epoch holds whole batches.
    pub async fn rebuild_producers(&mut self, config: &ReplConfig, key: &(String, u32)) -> Result<(), ReplDriverError> {
        let scanned = scan(&self.log, config, &key.0, key.1).await?;
        assert_eq!(scanned.unfinished_batch_offset, None, "a truncation cuts between batches");
        self.producers = scanned.producers;
        Ok(())
    }

    /// The topic was deleted: the replica leaves its role and its log is removed.
    pub async fn destroy(mut self) -> Result<RoleChange, LogError> {
        let change = self.become_idle().await?;
        self.log.destroy().await?;
        Ok(change)
    }

    pub fn leader(&self) -> Option<&Leader> {
        match &self.role {
            Role::Leader(leader) => Some(leader),
            _ => None,
        }
    }

    pub fn leader_mut(&mut self) -> Option<&mut Leader> {
        match &mut self.role {
            Role::Leader(leader) => Some(leader),
            _ => None,
        }
    }

    fn current(&self) -> Desired {
        match &self.role {
            Role::Leader(leader) => Desired::Leader { leader_epoch: leader.leader_epoch() },
            Role::Follower(follower, _) => Desired::Follower { leader_id: follower.leader_id(), leader_epoch: follower.leader_epoch() },
            Role::Idle(_) => Desired::Idle,
        }
    }

    /// Follows one metadata update: a new role, or (same leader epoch) a new ISR.
    pub async fn follow_metadata(
        &mut self,
        now_ms: u64,
        config: &ReplConfig,
        desired: Desired,
        partition: &Partition,
        min_insync_replicas: usize,
    ) -> Result<RoleChange, LogError> {
        let epoch_moved = partition.partition_epoch != self.partition_epoch;
        self.partition_epoch = partition.partition_epoch;
        if desired == self.current() {
            let mut change = RoleChange::default();
            if let (true, Role::Leader(leader)) = (epoch_moved, &mut self.role) {
                // The ISR changed under this leader epoch (this leader's proposal or a fencing).
                self.isr_proposal = None;
                if leader.isr() != partition.isr.as_slice() {
                    change.isr_moved = Some((leader.isr().to_vec(), partition.isr.clone()));
                }
                change.outputs = leader.isr_changed(now_ms, partition.isr.clone());
            }
            return Ok(change);
        }
        let (outputs, state) = self.leave_role().await?;
        let newest_epoch_in_log = state.epoch_cache.latest().map(|latest| latest.epoch);
        let became = match desired {
            Desired::Leader { leader_epoch } if newest_epoch_in_log.is_some_and(|newest| newest > leader_epoch) => {
                // Records from a newer epoch than the metadata names: this
                // broker's metadata is behind; wait for it.
                self.role = Role::Idle(state);
                ReplicaRole::Idle
            }
            Desired::Leader { leader_epoch } => {
                let leader_config = LeaderConfig { min_insync_replicas, replica_lag_time_max_ms: config.replica_lag_time_max_ms };
                let leader = Leader::new(now_ms, config.node_id, leader_epoch, partition.replicas.clone(), partition.isr.clone(), leader_config, state);
                self.role = Role::Leader(leader);
                ReplicaRole::Leader
            }
            Desired::Follower { leader_id, leader_epoch } => {
                let follower = Follower::new(config.node_id, leader_id, leader_epoch, state);
                self.role = Role::Follower(follower, FetchState { in_flight: None, next_fetch_ms: now_ms });
                ReplicaRole::Follower { leader_id }
            }
            Desired::Idle => {
                self.role = Role::Idle(state);
                ReplicaRole::Idle
            }
        };
        Ok(RoleChange { became: Some(became), outputs, isr_moved: None })
    }

    pub async fn become_idle(&mut self) -> Result<RoleChange, LogError> {
        if matches!(self.role, Role::Idle(_)) {
            return Ok(RoleChange::default());
        }
        let (outputs, state) = self.leave_role().await?;
        self.role = Role::Idle(state);
        Ok(RoleChange { became: Some(ReplicaRole::Idle), outputs, isr_moved: None })
    }

    /// Ends the current role: a leader resigns (its waits are answered),
    /// parked fetches and a pending ISR proposal are dropped, and the log is
    /// flushed, so the next role starts from a durable log. Leaves the
    /// replica idle and returns the log's state for the next core.
    async fn leave_role(&mut self) -> Result<(Vec<LeaderOutput>, LogState), LogError> {
        let (outputs, mut state) = match std::mem::replace(&mut self.role, Role::Idle(LogState::default())) {
            Role::Leader(leader) => leader.resign(),
            Role::Follower(follower, _) => (Vec::new(), follower.into_log_state()),
            Role::Idle(state) => (Vec::new(), state),
        };
        self.parked.clear();
        self.isr_proposal = None;
        let flushed = self.log.flush().await?;
        assert_eq!(flushed, self.log.next_offset(), "a role change starts from a durable log");
        assert_eq!(state.log_end_offset, self.log.next_offset(), "the core and the log agree on the log end");
        state.durable_end_offset = flushed;
        Ok((outputs, state))
    }

    fn high_watermark(&self) -> u64 {
        match &self.role {
            Role::Leader(leader) => leader.high_watermark(),
            Role::Follower(follower, _) => follower.high_watermark(),
            Role::Idle(state) => state.high_watermark,
        }
    }

    pub async fn read(&self, offset: u64, bytes_max: usize, limit: ReadLimit) -> Result<ReadResult, ReadError> {
        let (log_start_offset, log_end_offset) = (self.log.start_offset(), self.log.next_offset());
        let high_watermark = self.high_watermark();
        let end = match limit {
            ReadLimit::HighWatermark => high_watermark,
            ReadLimit::LogEnd => log_end_offset,
        };
        if offset < log_start_offset || offset > log_end_offset {
            return Err(ReadError::Repl(ReplError::OffsetOutOfRange { offset, log_start_offset, log_end_offset }));
        }
        let mut records = Vec::new();
        if offset < end {
            for record in self.log.read_from(offset, bytes_max).await.map_err(ReadError::Log)? {
                if record.offset >= end {
                    break;
                }
                let stored = decode_stored(&record.payload).map_err(|error| ReadError::Corrupt { offset: record.offset, error })?;
                records.push(ReadRecord { offset: record.offset, leader_epoch: stored.leader_epoch, stamp: stored.stamp, value: stored.value.to_vec() });
            }
        }
        Ok(ReadResult { records, log_start_offset, high_watermark, log_end_offset })
    }

    pub fn status(&self, key: &(String, u32)) -> ReplicaStatus {
        let (role, leader_epoch, isr) = match &self.role {
            Role::Leader(leader) => (ReplicaRole::Leader, Some(leader.leader_epoch()), leader.isr().to_vec()),
            Role::Follower(follower, _) => (ReplicaRole::Follower { leader_id: follower.leader_id() }, Some(follower.leader_epoch()), Vec::new()),
            Role::Idle(_) => (ReplicaRole::Idle, None, Vec::new()),
        };
        ReplicaStatus {
            topic: key.0.clone(),
            partition: key.1,
            role,
            leader_epoch,
            log_start_offset: self.log.start_offset(),
            log_end_offset: self.log.next_offset(),
            durable_end_offset: self.log.flushed_offset(),
            high_watermark: self.high_watermark(),
            isr,
        }
    }
}
