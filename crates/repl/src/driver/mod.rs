//! The replication driver: one task per broker that owns every partition
//! replica on the broker (its keel-log log and its `Leader`/`Follower` core),
//! follows the applied metadata, serves produces, reads and followers'
//! fetches, fetches from leaders, and proposes ISR changes through the
//! metadata Raft group.
//!
//! Roles come from the metadata only, and only once this broker is
//! registered with its current incarnation: a restarted broker acts on
//! nothing until the metadata that knows of its restart (which moved every
//! partition it led to a new leader epoch) is applied here. Followers pull
//! (Kafka's model), so a follower whose metadata is behind simply has not
//! started fetching yet; nothing is ever pushed to a broker that could drop it.
//!
//! Group commit: each turn of the loop handles one event plus every produce
//! already queued (up to `produce_group_max`), then flushes each log it
//! appended to once. Followers flush what they fetched before fetching again:
//! the next fetch offset tells the leader those records are durable.
//!
//! Memory is bounded: the request queue (`produce_queue_len`), acks=all
//! waits (`acks_all_waiting_max`), batch size and fetch size all have limits,
//! and hitting one is a retriable error the producer sees.
//!
//! A disk error on a partition log stops the loop with an error (Kafka halts
//! a broker whose log directory fails): after a failed fsync the unsynced
//! records are gone, and continuing in the same leader epoch could put two
//! different records at one offset of one epoch. The restarted broker
//! re-registers, which moves its partitions to a new leader epoch.

mod changes;
mod replica;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keel_io::{Clock, Disk};
use keel_log::{LogConfig, LogError};
use keel_meta::driver::{MetaHandle, MetadataFeed, ProposalError};
use keel_meta::proto::{ChangePartition, Command, MetadataBatch};
use keel_meta::{MetadataError, MetadataState};
use keel_net::{Endpoint, Inbound};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};

use crate::error::ReplError;
use crate::leader::{FetchPlan, FetchRequest, LeaderOutput};
use crate::producers::{Admission, ProducerStamp, RecordStamp};
use crate::stored::{batch_crc, decode_stored, encode_stored, BatchPosition, STORED_HEADER_BYTES};
use crate::wire::{FetchMessage, FetchResponseMessage, FRAME_KIND_FETCH, FRAME_KIND_FETCH_RESPONSE};
use crate::BrokerId;
use replica::{Parked, Replica, Role};

/// Topic config key for the ISR size acks=all needs (Kafka's name).
pub const MIN_INSYNC_REPLICAS_CONFIG: &str = "min.insync.replicas";

/// Where a produce's answer goes.
type ProduceReply = oneshot::Sender<Result<Produced, ReplError>>;

#[derive(Clone, Debug)]
pub struct ReplConfig {
    pub node_id: BrokerId,
    /// The incarnation the metadata must show for this broker before it acts.
    pub incarnation_id: u64,
    /// Partition logs live in `{data_dir}/{topic}-{partition}-{topic_id}` on the node's Disk.
    pub data_dir: String,
    pub log_config: LogConfig,
    pub tick_ms: u64,
    /// Used when a topic sets no `min.insync.replicas` (Kafka's default is 1).
    pub min_insync_replicas_default: usize,
    pub replica_lag_time_max_ms: u64,
    /// A leader holds a fetch with nothing new for at most this long.
    pub fetch_wait_ms_max: u64,
    /// A follower gives up on a fetch unanswered for this long and sends another.
    pub fetch_timeout_ms: u64,
    /// After a refused fetch, a follower waits this long (its metadata may be behind).
    pub fetch_backoff_ms: u64,
    pub fetch_bytes_max: u32,
    /// Produce and read requests queued for the loop; a full queue is `Busy`.
    pub produce_queue_len: usize,
    /// Produces handled per loop turn before the group commit.
    pub produce_group_max: usize,
    /// acks=all produces waiting for the ISR, over all partitions.
    pub acks_all_waiting_max: usize,
    pub produce_batch_bytes_max: usize,
    /// A failed ISR proposal (timeout, no leader) is retried after this long.
    pub isr_retry_backoff_ms: u64,
    /// Partition logs opened (recovered and scanned) at once, each in its
    /// own task, while the loop keeps serving the replicas already open.
    pub log_opens_in_flight_max: usize,
    pub observer: Option<ReplObserver>,
}

impl ReplConfig {
    pub fn new(node_id: BrokerId, incarnation_id: u64) -> Self {
        ReplConfig {
            node_id,
            incarnation_id,
            data_dir: PARTITION_LOGS_DIR.into(),
            log_config: LogConfig::default(),
            tick_ms: 10,
            min_insync_replicas_default: 1,
            replica_lag_time_max_ms: 10_000,
            fetch_wait_ms_max: 200,
            fetch_timeout_ms: 2_000,
            fetch_backoff_ms: 50,
            fetch_bytes_max: 1024 * 1024,
            produce_queue_len: 1024,
            produce_group_max: 256,
            acks_all_waiting_max: 4096,
            produce_batch_bytes_max: 1024 * 1024,
            isr_retry_backoff_ms: 200,
            log_opens_in_flight_max: 4,
            observer: None,
        }
    }
}

/// Kafka's `acks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// 0: the producer does not wait (the broker still appends).
    None,
    /// 1: answered once the leader appended.
    Leader,
    /// -1 / all: answered once every ISR member has the batch durably.
    All,
}

impl Acks {
    pub fn from_kafka(acks: i16) -> Result<Acks, ReplError> {
        match acks {
            0 => Ok(Acks::None),
            1 => Ok(Acks::Leader),
            -1 => Ok(Acks::All),
            other => Err(ReplError::InvalidRequest { reason: format!("acks must be 0, 1 or -1 (all), not {other}") }),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProduceRequest {
    pub topic: String,
    pub partition: u32,
    pub acks: Acks,
    /// The leader epoch the producer believes current; checked when given.
    pub leader_epoch: Option<u32>,
    pub records: Vec<Vec<u8>>,
    /// An idempotent producer's batch: retries are answered with the
    /// original offsets, gaps refused (`None`: appended as it comes).
    pub producer: Option<ProducerStamp>,
    /// `stored::batch_crc` of `records`, computed by the producer.
    pub batch_crc: u32,
    pub timeout_ms: u64,
}

impl ProduceRequest {
    /// A request for `records` with its checksum computed.
    pub fn new(topic: &str, partition: u32, acks: Acks, records: Vec<Vec<u8>>, timeout_ms: u64) -> Self {
        let batch_crc = batch_crc(&records);
        ProduceRequest { topic: topic.to_string(), partition, acks, leader_epoch: None, records, producer: None, batch_crc, timeout_ms }
    }
}

/// Where a produced batch landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Produced {
    pub base_offset: u64,
    pub leader_epoch: u32,
}

/// How far a read may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadLimit {
    /// What consumers see: below the replica's high watermark.
    HighWatermark,
    /// Everything in the log (for tools and checkers, never for consumers).
    LogEnd,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRecord {
    pub offset: u64,
    pub leader_epoch: u32,
    /// The idempotent producer's stamp (`RecordStamp::NONE` without idempotence).
    pub stamp: RecordStamp,
    pub value: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResult {
    pub records: Vec<ReadRecord>,
    pub log_start_offset: u64,
    pub high_watermark: u64,
    pub log_end_offset: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaRole {
    Leader,
    Follower { leader_id: BrokerId },
    Idle,
}

/// One replica as its broker sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub topic: String,
    pub partition: u32,
    pub role: ReplicaRole,
    pub leader_epoch: Option<u32>,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
    pub durable_end_offset: u64,
    pub high_watermark: u64,
    /// The ISR the leader acts on (leaders only).
    pub isr: Vec<BrokerId>,
}

/// What the driver tells its observer (the simulator's checkers and trace).
/// `IsrChanged`: the metadata applied a new ISR under this broker's leader
/// epoch (its own shrink or expand, or a fencing of a member).
/// `TornTailRecovered`: opening the replica's log cut off a tail a crash tore.
#[derive(Debug)]
pub enum ReplEvent<'a> {
    BecameLeader { node_id: BrokerId, topic: &'a str, partition: u32, leader_epoch: u32, log_end_offset: u64 },
    BecameFollower { node_id: BrokerId, topic: &'a str, partition: u32, leader_id: BrokerId, leader_epoch: u32, log_end_offset: u64 },
    Truncated { node_id: BrokerId, topic: &'a str, partition: u32, end_offset: u64 },
    IsrChanged { node_id: BrokerId, topic: &'a str, partition: u32, leader_epoch: u32, isr_before: &'a [BrokerId], isr: &'a [BrokerId] },
    TornTailRecovered { node_id: BrokerId, topic: &'a str, partition: u32, log_end_offset: u64 },
}

#[derive(Clone)]
pub struct ReplObserver(Arc<dyn Fn(&ReplEvent<'_>) + Send + Sync>);

impl ReplObserver {
    pub fn new(observe: impl Fn(&ReplEvent<'_>) + Send + Sync + 'static) -> Self {
        ReplObserver(Arc::new(observe))
    }
}

impl std::fmt::Debug for ReplObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplObserver")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplDriverError {
    #[error("partition {topic}-{partition}: {error}; the broker stops (restart it to recover the log)")]
    Log { topic: String, partition: u32, error: LogError },
    #[error("partition {topic}-{partition} at offset {offset}: {error}")]
    Corrupt { topic: String, partition: u32, offset: u64, error: ReplError },
}

enum Request {
    Produce {
        request: ProduceRequest,
        reply: oneshot::Sender<Result<Produced, ReplError>>,
    },
    Read {
        topic: String,
        partition: u32,
        offset: u64,
        bytes_max: usize,
        limit: ReadLimit,
        reply: oneshot::Sender<Result<ReadResult, ReplError>>,
    },
    /// Every replica, or only the one named.
    Status {
        only: Option<(String, u32)>,
        reply: oneshot::Sender<Vec<ReplicaStatus>>,
    },
    EpochEnd {
        topic: String,
        partition: u32,
        leader_epoch: u32,
        reply: oneshot::Sender<Result<Option<(u32, u64)>, ReplError>>,
    },
}

/// A cheap, cloneable handle on a broker's replication loop.
#[derive(Clone)]
pub struct ReplHandle {
    requests: mpsc::Sender<Request>,
    min_insync_replicas_default: usize,
}

impl ReplHandle {
    /// The min.insync.replicas of topics that do not set their own.
    pub fn min_insync_replicas_default(&self) -> usize {
        self.min_insync_replicas_default
    }

    /// Produces on this broker (which must lead the partition).
    pub async fn produce(&self, request: ProduceRequest) -> Result<Produced, ReplError> {
        let (reply, response) = oneshot::channel();
        self.enqueue(Request::Produce { request, reply })?;
        response.await.map_err(|_| ReplError::Stopped)?
    }

    /// Reads this broker's replica from `offset` (any role; see `ReadLimit`).
    pub async fn read(&self, topic: &str, partition: u32, offset: u64, bytes_max: usize, limit: ReadLimit) -> Result<ReadResult, ReplError> {
        let (reply, response) = oneshot::channel();
        self.enqueue(Request::Read { topic: topic.to_string(), partition, offset, bytes_max, limit, reply })?;
        response.await.map_err(|_| ReplError::Stopped)?
    }

    /// Kafka's OffsetForLeaderEpoch, answered by the partition's leader: the
    /// largest epoch `<= leader_epoch` its log knows and where that epoch's
    /// records end; `None` when the log knows no such epoch.
    pub async fn epoch_end_offset(&self, topic: &str, partition: u32, leader_epoch: u32) -> Result<Option<(u32, u64)>, ReplError> {
        let (reply, response) = oneshot::channel();
        self.enqueue(Request::EpochEnd { topic: topic.to_string(), partition, leader_epoch, reply })?;
        response.await.map_err(|_| ReplError::Stopped)?
    }

    /// Every replica on this broker.
    pub async fn status(&self) -> Result<Vec<ReplicaStatus>, ReplError> {
        let (reply, response) = oneshot::channel();
        self.enqueue(Request::Status { only: None, reply })?;
        response.await.map_err(|_| ReplError::Stopped)
    }

    /// This broker's replica of one partition.
    pub async fn replica_status(&self, topic: &str, partition: u32) -> Result<ReplicaStatus, ReplError> {
        let (reply, response) = oneshot::channel();
        self.enqueue(Request::Status { only: Some((topic.to_string(), partition)), reply })?;
        let found = response.await.map_err(|_| ReplError::Stopped)?;
        found.into_iter().next().ok_or_else(|| ReplError::UnknownTopicOrPartition { topic: topic.to_string(), partition })
    }

    /// A full queue is the producer's problem to retry, never a silent wait.
    fn enqueue(&self, request: Request) -> Result<(), ReplError> {
        self.requests.try_send(request).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => ReplError::Busy { reason: "the broker's request queue is full".into() },
            mpsc::error::TrySendError::Closed(_) => ReplError::Stopped,
        })
    }
}

/// The outcome of one ISR proposal, back on the loop.
struct IsrResult {
    topic: String,
    partition: u32,
    leader_epoch: u32,
    expected_partition_epoch: u64,
    result: Result<u64, ProposalError>,
}

struct Waiter {
    reply: oneshot::Sender<Result<Produced, ReplError>>,
    produced: Produced,
}

/// Starts the loop. It sends on the node's `endpoint` (shared with the
/// metadata driver) and serves `frames`, the endpoint's queue for the
/// replication kinds (`FRAME_KIND_FETCH`, `FRAME_KIND_FETCH_RESPONSE`).
pub fn start(
    disk: Disk,
    clock: Clock,
    meta: MetaHandle,
    endpoint: Arc<Endpoint>,
    frames: mpsc::Receiver<Inbound>,
    config: ReplConfig,
) -> (ReplHandle, tokio::task::JoinHandle<Result<(), ReplDriverError>>) {
    let (requests, request_rx) = mpsc::channel(config.produce_queue_len);
    let min_insync_replicas_default = config.min_insync_replicas_default;
    let (isr_results, isr_rx) = mpsc::channel(1024);
    let (opened, opened_rx) = mpsc::channel(config.log_opens_in_flight_max.max(1));
    let feed = meta.feed();
    assert_eq!(endpoint.node_id(), config.node_id, "the endpoint speaks for this broker");
    let driver = Driver {
        endpoint,
        metadata: feed.current(),
        meta,
        disk,
        clock,
        config,
        replicas: BTreeMap::new(),
        waiters: BTreeMap::new(),
        next_produce_id: 1,
        next_request_id: 1,
        isr_results,
        opening: BTreeMap::new(),
        opened,
        produces_awaiting_open: BTreeMap::new(),
        orphans_swept: false,
    };
    let task = tokio::spawn(driver.run(feed, frames, request_rx, isr_rx, opened_rx));
    (ReplHandle { requests, min_insync_replicas_default }, task)
}

struct Driver {
    config: ReplConfig,
    disk: Disk,
    clock: Clock,
    meta: MetaHandle,
    endpoint: Arc<Endpoint>,
    metadata: Arc<MetadataState>,
    replicas: BTreeMap<(String, u32), Replica>,
    waiters: BTreeMap<u64, Waiter>,
    next_produce_id: u64,
    next_request_id: u64,
    isr_results: mpsc::Sender<IsrResult>,
    /// Replicas whose logs are being opened in their own tasks (topic id by
    /// partition); each comes back on `opened`.
    opening: BTreeMap<(String, u32), u64>,
    opened: mpsc::Sender<Opened>,
    /// Produces to a partition assigned here whose log is not open yet, in
    /// arrival order: served once it is. Refusing them instead made a
    /// producer with several batches in flight retry the first after later
    /// ones were appended (records out of order in a new topic's log).
    produces_awaiting_open: BTreeMap<(String, u32), Vec<(ProduceRequest, ProduceReply)>>,
    /// Logs of topics deleted while this broker was down were removed.
    orphans_swept: bool,
}

/// A replica whose log an opening task recovered and scanned, back on the loop.
struct Opened {
    key: (String, u32),
    topic_id: u64,
    result: Result<Replica, ReplDriverError>,
}

/// Where a node's partition logs live by default: `{PARTITION_LOGS_DIR}/{topic}-{partition}-{topic_id}`.
pub const PARTITION_LOGS_DIR: &str = "data";

type DriverResult = Result<(), ReplDriverError>;

/// What a tick found due on one replica.
enum TickDue {
    Leader { outputs: Vec<LeaderOutput>, retry_isr: bool },
    Fetch,
}

impl Driver {
    async fn run(
        mut self,
        feed: Arc<MetadataFeed>,
        mut frames: mpsc::Receiver<Inbound>,
        mut requests: mpsc::Receiver<Request>,
        mut isr_rx: mpsc::Receiver<IsrResult>,
        mut opened_rx: mpsc::Receiver<Opened>,
    ) -> DriverResult {
        let tick = Duration::from_millis(self.config.tick_ms);
        let mut next_tick = self.clock.now().checked_add(tick).expect("clock overflow");
        self.reconcile(feed.current()).await?;
        loop {
            // Biased (fixed order) for replay; ticks first so timers never starve.
            tokio::select! {
                biased;
                _ = self.clock.sleep_until(next_tick) => {
                    next_tick = next_tick.checked_add(tick).expect("clock overflow");
                    self.tick().await?;
                }
                _ = feed.changed() => {
                    let metadata = feed.current();
                    if metadata.same_brokers_and_topics(&self.metadata) {
                        // Committed offsets or group records: no replica's role moves.
                        self.metadata = metadata;
                    } else {
                        changes::log_partition_changes(self.config.node_id, &self.metadata, &metadata);
                        self.reconcile(metadata).await?
                    }
                }
                Some(frame) = frames.recv() => self.on_frame(frame).await?,
                Some(result) = isr_rx.recv() => self.on_isr_result(result),
                Some(opened) = opened_rx.recv() => self.on_opened(opened).await?,
                request = requests.recv() => {
                    let Some(request) = request else { return Ok(()) };
                    self.on_request(request).await?;
                    for _ in 1..self.config.produce_group_max {
                        let Ok(request) = requests.try_recv() else { break };
                        self.on_request(request).await?;
                    }
                }
            }
            self.group_commit().await?;
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.now().as_millis()
    }

    fn observe(&self, event: ReplEvent<'_>) {
        if let Some(observer) = &self.config.observer {
            (observer.0)(&event);
        }
    }

    /// Brings every replica's role in line with the applied metadata.
    async fn reconcile(&mut self, metadata: Arc<MetadataState>) -> DriverResult {
        self.metadata = metadata;
        let me = self.config.node_id;
        let registered = self.metadata.broker(me).is_some_and(|b| !b.fenced && b.incarnation_id == self.config.incarnation_id);
        // A replica of a deleted topic (or of an earlier topic of the same
        // name) is removed with its log before anything opens the new one.
        let deleted: Vec<(String, u32)> = self
            .replicas
            .iter()
            .filter(|(key, replica)| self.metadata.topic(&key.0).is_none_or(|t| t.topic_id != replica.topic_id))
            .map(|(key, _)| key.clone())
            .collect();
        for key in deleted {
            let replica = self.replicas.remove(&key).expect("listed above");
            let change = replica.destroy().await.map_err(|error| log_error(&key, error))?;
            self.after_role_change(&key, change);
            tracing::info!(node_id = me, topic = key.0, partition = key.1, "topic deleted; replica log removed");
        }
        let mut assigned = Vec::new();
        for topic in self.metadata.topics() {
            for (index, partition) in topic.partitions.iter().enumerate() {
                if partition.replicas.contains(&me) {
                    let index = u32::try_from(index).expect("partition index fits u32");
                    assigned.push((topic.name.clone(), topic.topic_id, index));
                }
            }
        }
        if registered && !self.orphans_swept {
            self.orphans_swept = true;
            self.sweep_orphan_logs().await?;
        }
        for (topic_name, topic_id, index) in assigned {
            let key = (topic_name, index);
            if !self.replicas.contains_key(&key) {
                // Opening a log reads all of it: on slow disks, hundreds of
                // logs take many seconds, and the replicas already open keep
                // replicating meanwhile. The replica joins when it is open.
                self.start_opening(key, topic_id);
                continue;
            }
            let metadata = Arc::clone(&self.metadata);
            let topic = metadata.topic(&key.0).expect("assigned from this metadata");
            let partition = &topic.partitions[key.1 as usize];
            let min_insync_replicas =
                topic.configs.get(MIN_INSYNC_REPLICAS_CONFIG).and_then(|value| value.parse().ok()).unwrap_or(self.config.min_insync_replicas_default);
            let desired = if registered { replica::Desired::from_partition(me, partition) } else { replica::Desired::Idle };
            let now_ms = self.now_ms();
            let replica = self.replicas.get_mut(&key).expect("opened above");
            let change =
                replica.follow_metadata(now_ms, &self.config, desired, partition, min_insync_replicas).await.map_err(|error| log_error(&key, error))?;
            self.after_role_change(&key, change);
        }
        let orphans: Vec<(String, u32)> =
            self.replicas.keys().filter(|key| self.metadata.partition(&key.0, key.1).is_none_or(|p| !p.replicas.contains(&me))).cloned().collect();
        for key in orphans {
            let replica = self.replicas.get_mut(&key).expect("listed above");
            let change = replica.become_idle().await.map_err(|error| log_error(&key, error))?;
            self.after_role_change(&key, change);
        }
        // Produces waiting for a log that will no longer open here are
        // refused now (on_produce finds no replica) instead of never.
        let unassigned: Vec<(String, u32)> = self
            .produces_awaiting_open
            .keys()
            .filter(|key| self.metadata.partition(&key.0, key.1).is_none_or(|p| !p.replicas.contains(&me)))
            .cloned()
            .collect();
        for key in unassigned {
            for (request, reply) in self.produces_awaiting_open.remove(&key).unwrap_or_default() {
                self.on_produce(request, reply).await?;
            }
        }
        Ok(())
    }

    /// Opens `key`'s log in its own task (at most `log_opens_in_flight_max`
    /// at once; the rest wait for a later reconcile). Under madsim the task
    /// runs on this node's simulated runtime: no OS thread, and the results
    /// come back in the order the seed decides.
    fn start_opening(&mut self, key: (String, u32), topic_id: u64) {
        if self.opening.contains_key(&key) || self.opening.len() >= self.config.log_opens_in_flight_max.max(1) {
            return;
        }
        self.opening.insert(key.clone(), topic_id);
        let (disk, config, opened) = (self.disk.clone(), self.config.clone(), self.opened.clone());
        tokio::spawn(async move {
            let result = Replica::open(&disk, &config, &key.0, topic_id, key.1).await;
            // The loop holds a sender, so the channel closes only when the loop ended.
            let _ = opened.send(Opened { key, topic_id, result }).await;
        });
    }

    /// An opened replica joins the loop and follows the metadata (a log that
    /// failed to open stops the broker, as a failed log does anywhere).
    async fn on_opened(&mut self, opened: Opened) -> DriverResult {
        let Opened { key, topic_id, result } = opened;
        let opening = self.opening.remove(&key);
        assert_eq!(opening, Some(topic_id), "every opened replica was being opened");
        assert!(!self.replicas.contains_key(&key), "a replica is opened once");
        let replica = result?;
        if replica.torn_tail_recovered {
            let (node_id, log_end_offset) = (self.config.node_id, replica.log.next_offset());
            self.observe(ReplEvent::TornTailRecovered { node_id, topic: &key.0, partition: key.1, log_end_offset });
        }
        if self.metadata.topic(&key.0).is_none_or(|t| t.topic_id != topic_id) {
            // The topic was deleted while its log was being opened.
            replica.destroy().await.map_err(|error| log_error(&key, error))?;
            tracing::info!(node_id = self.config.node_id, topic = key.0, partition = key.1, "topic deleted; replica log removed");
        } else {
            self.replicas.insert(key.clone(), replica);
        }
        self.reconcile(Arc::clone(&self.metadata)).await?;
        // Served in arrival order, as if they had waited in the queue.
        for (request, reply) in self.produces_awaiting_open.remove(&key).unwrap_or_default() {
            self.on_produce(request, reply).await?;
        }
        Ok(())
    }

    /// Removes the logs of topics deleted while this broker was down: a
    /// directory `{topic}-{partition}-{topic_id}` whose id the metadata has
    /// handed out (ids only grow) but no longer has. Run once, when the
    /// metadata shows this broker registered (so it is at least as new as
    /// this start); an id the metadata has not reached yet is kept.
    async fn sweep_orphan_logs(&mut self) -> DriverResult {
        let names = match self.disk.list(&self.config.data_dir).await {
            Ok(names) => names,
            Err(error) => {
                // Nothing was ever written here: no orphans.
                tracing::debug!(node_id = self.config.node_id, %error, "no partition log directory to sweep");
                return Ok(());
            }
        };
        for name in names {
            let Some((topic, partition, topic_id)) = parse_log_dir(&name) else { continue };
            let live = self.metadata.topic(topic).is_some_and(|t| t.topic_id == topic_id);
            let key = (topic.to_string(), partition);
            // In use is this very partition's log: another partition of the
            // same deleted topic still opening (at most
            // `log_opens_in_flight_max` open at once) is removed when its open
            // ends, and must not keep this one on the disk for good.
            let in_use = self.replicas.get(&key).is_some_and(|r| r.topic_id == topic_id) || self.opening.get(&key) == Some(&topic_id);
            if live || topic_id > self.metadata.last_topic_id() || in_use {
                continue;
            }
            let dir = format!("{}/{name}", self.config.data_dir);
            let log = keel_log::Log::open(self.disk.clone(), &dir, self.config.log_config.clone()).await.map_err(|error| log_error(&key, error))?;
            log.destroy().await.map_err(|error| log_error(&key, error))?;
            tracing::info!(node_id = self.config.node_id, topic, partition, topic_id, "log of a topic deleted while this broker was down removed");
        }
        Ok(())
    }

    fn after_role_change(&mut self, key: &(String, u32), change: replica::RoleChange) {
        let me = self.config.node_id;
        let (topic, partition) = (key.0.as_str(), key.1);
        match change.became {
            Some(ReplicaRole::Leader) => {
                let leader = self.replicas[key].leader().expect("just became leader");
                let (leader_epoch, log_end_offset) = (leader.leader_epoch(), leader.log_end_offset());
                tracing::debug!(node_id = me, topic, partition, leader_epoch, log_end_offset, "leading");
                self.observe(ReplEvent::BecameLeader { node_id: me, topic, partition, leader_epoch, log_end_offset });
            }
            Some(ReplicaRole::Follower { leader_id }) => {
                let (leader_epoch, log_end_offset) = match &self.replicas[key].role {
                    Role::Follower(follower, _) => (follower.leader_epoch(), follower.log_end_offset()),
                    _ => unreachable!("just became follower"),
                };
                tracing::debug!(node_id = me, topic, partition, leader_id, leader_epoch, log_end_offset, "following");
                self.observe(ReplEvent::BecameFollower { node_id: me, topic, partition, leader_id, leader_epoch, log_end_offset });
            }
            Some(ReplicaRole::Idle) | None => {}
        }
        if let Some((isr_before, isr)) = &change.isr_moved {
            let leader_epoch = self.replicas.get(key).and_then(|r| r.leader()).map(|leader| leader.leader_epoch());
            assert!(leader_epoch.is_some(), "an ISR moves under a staying leader");
            let leader_epoch = leader_epoch.expect("checked");
            tracing::debug!(node_id = me, topic, partition, leader_epoch, ?isr_before, ?isr, "ISR changed");
            self.observe(ReplEvent::IsrChanged { node_id: me, topic, partition, leader_epoch, isr_before, isr });
        }
        self.handle_outputs(key, change.outputs);
    }

    /// Acts on the leader core's decisions for `key`.
    fn handle_outputs(&mut self, key: &(String, u32), outputs: Vec<LeaderOutput>) {
        for output in outputs {
            match output {
                LeaderOutput::ProduceDone { produce_id, result } => {
                    if let Some(waiter) = self.waiters.remove(&produce_id) {
                        let _ = waiter.reply.send(result.map(|()| waiter.produced));
                    }
                }
                LeaderOutput::ProposeIsr { isr } => {
                    let Some(replica) = self.replicas.get_mut(key) else { continue };
                    let Some(leader) = replica.leader() else { continue };
                    let leader_epoch = leader.leader_epoch();
                    replica.isr_proposal =
                        Some(replica::IsrProposal { leader_epoch, expected_partition_epoch: replica.partition_epoch, isr, retry_at_ms: None });
                    self.propose_isr(key);
                }
            }
        }
    }

    fn propose_isr(&self, key: &(String, u32)) {
        let Some(proposal) = self.replicas.get(key).and_then(|r| r.isr_proposal.clone()) else { return };
        let change = ChangePartition {
            topic: key.0.clone(),
            partition: key.1,
            expected_partition_epoch: proposal.expected_partition_epoch,
            leader: Some(self.config.node_id),
            isr: proposal.isr.clone(),
        };
        tracing::debug!(node_id = self.config.node_id, topic = key.0, partition = key.1, isr = ?proposal.isr, "proposing ISR change");
        let batch = MetadataBatch { commands: vec![Command::ChangePartition(change).into()] };
        let (meta, results) = (self.meta.clone(), self.isr_results.clone());
        let (topic, partition) = key.clone();
        tokio::spawn(async move {
            let result = meta.propose(batch).await;
            let outcome =
                IsrResult { topic, partition, leader_epoch: proposal.leader_epoch, expected_partition_epoch: proposal.expected_partition_epoch, result };
            let _ = results.send(outcome).await;
        });
    }

    /// Only a definite refusal clears the proposal here: a proposal that
    /// timed out may still commit, so it is retried (the same expected
    /// partition epoch makes a second commit impossible) until the metadata
    /// shows the partition epoch moved, which `reconcile` acts on.
    fn on_isr_result(&mut self, outcome: IsrResult) {
        let now_ms = self.now_ms();
        let key = (outcome.topic, outcome.partition);
        let current_isr = self.metadata.partition(&key.0, key.1).map(|p| p.isr.clone());
        let Some(replica) = self.replicas.get_mut(&key) else { return };
        let Some(proposal) = replica.isr_proposal.as_mut() else { return };
        if proposal.leader_epoch != outcome.leader_epoch || proposal.expected_partition_epoch != outcome.expected_partition_epoch {
            return;
        }
        match outcome.result {
            Ok(_) | Err(ProposalError::Refused(MetadataError::StalePartitionEpoch { .. })) => {}
            Err(error) if error.is_retriable() || matches!(error, ProposalError::Stopped) => {
                proposal.retry_at_ms = Some(now_ms + self.config.isr_retry_backoff_ms);
            }
            Err(error) => {
                tracing::warn!(node_id = self.config.node_id, topic = key.0, partition = key.1, %error, "ISR change refused");
                replica.isr_proposal = None;
                if replica.partition_epoch != outcome.expected_partition_epoch {
                    return;
                }
                let (Some(leader), Some(isr)) = (replica.leader_mut(), current_isr) else { return };
                let outputs = leader.isr_changed(now_ms, isr);
                self.handle_outputs(&key, outputs);
            }
        }
    }

    async fn tick(&mut self) -> DriverResult {
        let now_ms = self.now_ms();
        // A broker holds hundreds of replicas and ticks every tick_ms; most
        // have nothing due. One pass finds those that do (in key order, the
        // order they are then served in), so the rest cost no key clone and
        // no second lookup.
        let mut due: Vec<((String, u32), TickDue)> = Vec::new();
        for (key, replica) in &mut self.replicas {
            match &mut replica.role {
                Role::Leader(leader) => {
                    let outputs = leader.tick(now_ms);
                    let (log_end_offset, high_watermark) = (leader.log_end_offset(), leader.high_watermark());
                    let retry_isr = replica.isr_proposal.as_mut().is_some_and(|proposal| match proposal.retry_at_ms {
                        Some(at_ms) if at_ms <= now_ms => {
                            proposal.retry_at_ms = None;
                            true
                        }
                        _ => false,
                    });
                    let parked_ready = replica.parked.iter().any(|parked| parked.ready(log_end_offset, high_watermark, now_ms));
                    if retry_isr || !outputs.is_empty() || parked_ready {
                        due.push((key.clone(), TickDue::Leader { outputs, retry_isr }));
                    }
                }
                Role::Follower(_, fetch) => {
                    if fetch.in_flight.is_some_and(|(_, sent_ms)| now_ms.saturating_sub(sent_ms) >= self.config.fetch_timeout_ms) {
                        fetch.in_flight = None;
                    }
                    if fetch.in_flight.is_none() && fetch.next_fetch_ms <= now_ms {
                        due.push((key.clone(), TickDue::Fetch));
                    }
                }
                Role::Idle(_) => {}
            }
        }
        for (key, work) in due {
            match work {
                TickDue::Leader { outputs, retry_isr } => {
                    if retry_isr {
                        self.propose_isr(&key);
                    }
                    self.handle_outputs(&key, outputs);
                    self.answer_parked(&key, now_ms).await?;
                }
                TickDue::Fetch => self.send_fetch(&key),
            }
        }
        Ok(())
    }

    fn send_fetch(&mut self, key: &(String, u32)) {
        let now_ms = self.now_ms();
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let Some(replica) = self.replicas.get_mut(key) else { return };
        let Role::Follower(follower, fetch) = &mut replica.role else { return };
        let request = follower.fetch_request();
        let message = FetchMessage {
            request_id,
            topic: key.0.clone(),
            partition: key.1,
            leader_epoch: request.leader_epoch,
            fetch_offset: request.fetch_offset,
            last_fetched_epoch: request.last_fetched_epoch,
            // One batch per fetch (the leader always sends at least one): the
            // follower's catch-up, its high watermark and its divergence
            // checks then run batch by batch.
            bytes_max: if keel_io::buggify!("repl: tiny follower fetch") { 1 } else { self.config.fetch_bytes_max },
        };
        match self.endpoint.send(follower.leader_id(), FRAME_KIND_FETCH, message.encode_to_vec()) {
            Ok(()) => fetch.in_flight = Some((request_id, now_ms)),
            Err(error) => {
                tracing::debug!(node_id = self.config.node_id, leader = follower.leader_id(), %error, "fetch not sent");
                fetch.next_fetch_ms = now_ms + self.config.fetch_backoff_ms;
            }
        }
    }

    async fn on_frame(&mut self, frame: Inbound) -> DriverResult {
        match frame.kind {
            FRAME_KIND_FETCH => match FetchMessage::decode(frame.payload.as_slice()) {
                Ok(message) => self.on_fetch(frame.from, message).await,
                Err(error) => {
                    tracing::warn!(node_id = self.config.node_id, from = frame.from, %error, "undecodable fetch dropped");
                    Ok(())
                }
            },
            FRAME_KIND_FETCH_RESPONSE => match FetchResponseMessage::decode(frame.payload.as_slice()) {
                Ok(message) => self.on_fetch_response(frame.from, message).await,
                Err(error) => {
                    tracing::warn!(node_id = self.config.node_id, from = frame.from, %error, "undecodable fetch response dropped");
                    Ok(())
                }
            },
            kind => {
                tracing::warn!(node_id = self.config.node_id, from = frame.from, kind, "unexpected frame kind for replication");
                Ok(())
            }
        }
    }

    fn respond(&self, to: BrokerId, response: FetchResponseMessage) {
        if let Err(error) = self.endpoint.send(to, FRAME_KIND_FETCH_RESPONSE, response.encode_to_vec()) {
            // The follower's fetch times out and it asks again.
            tracing::debug!(node_id = self.config.node_id, to, %error, "fetch response not sent");
        }
    }

    /// A follower's fetch, on the leader.
    async fn on_fetch(&mut self, from: BrokerId, message: FetchMessage) -> DriverResult {
        let now_ms = self.now_ms();
        let key = (message.topic.clone(), message.partition);
        // Every answer names the fetch it answers.
        let answer = FetchResponseMessage {
            request_id: message.request_id,
            topic: message.topic.clone(),
            partition: message.partition,
            leader_epoch: message.leader_epoch,
            ..FetchResponseMessage::default()
        };
        let refuse = |error: ReplError| FetchResponseMessage { error_code: i32::from(error.kafka_code()), error_message: error.to_string(), ..answer.clone() };
        let Some(replica) = self.replicas.get_mut(&key) else {
            self.respond(from, refuse(ReplError::UnknownTopicOrPartition { topic: message.topic.clone(), partition: message.partition }));
            return Ok(());
        };
        let Some(leader) = replica.leader_mut() else {
            self.respond(from, refuse(ReplError::NotLeader { broker_id: self.config.node_id }));
            return Ok(());
        };
        let request = FetchRequest {
            follower: from,
            leader_epoch: message.leader_epoch,
            fetch_offset: message.fetch_offset,
            last_fetched_epoch: message.last_fetched_epoch,
        };
        let (plan, outputs) = match leader.fetch(now_ms, request) {
            Ok(answer) => answer,
            Err(error) => {
                self.respond(from, refuse(error));
                return Ok(());
            }
        };
        let high_watermark = leader.high_watermark();
        match plan {
            FetchPlan::Diverging { epoch, end_offset } => {
                let response = FetchResponseMessage { diverging_epoch: Some(epoch), diverging_end_offset: Some(end_offset), high_watermark, ..answer };
                self.respond(from, response);
            }
            FetchPlan::Read { from: fetch_offset, .. } => {
                let bytes_max = message.bytes_max.min(self.config.fetch_bytes_max);
                let parked = Parked {
                    follower: from,
                    request_id: message.request_id,
                    leader_epoch: message.leader_epoch,
                    fetch_offset,
                    bytes_max,
                    high_watermark,
                    deadline_ms: now_ms + self.config.fetch_wait_ms_max,
                };
                replica.parked.push(parked);
            }
        }
        self.handle_outputs(&key, outputs);
        self.answer_parked(&key, now_ms).await
    }

    /// Answers the parked fetches of `key` that have something new (records
    /// or a higher high watermark) or whose wait is over.
    async fn answer_parked(&mut self, key: &(String, u32), now_ms: u64) -> DriverResult {
        let Some(replica) = self.replicas.get_mut(key) else { return Ok(()) };
        let Some(leader) = replica.leader() else {
            replica.parked.clear();
            return Ok(());
        };
        let (log_end_offset, high_watermark) = (leader.log_end_offset(), leader.high_watermark());
        let (ready, waiting): (Vec<Parked>, Vec<Parked>) =
            std::mem::take(&mut replica.parked).into_iter().partition(|parked| parked.ready(log_end_offset, high_watermark, now_ms));
        replica.parked = waiting;
        let mut responses = Vec::with_capacity(ready.len());
        for parked in ready {
            let records = if parked.fetch_offset < log_end_offset {
                read_whole_batches(&replica.log, key, parked.fetch_offset, parked.bytes_max as usize).await?
            } else {
                Vec::new()
            };
            let response = FetchResponseMessage {
                request_id: parked.request_id,
                topic: key.0.clone(),
                partition: key.1,
                leader_epoch: parked.leader_epoch,
                high_watermark,
                base_offset: parked.fetch_offset,
                records: records.into_iter().map(|record| record.payload).collect(),
                ..FetchResponseMessage::default()
            };
            responses.push((parked.follower, response));
        }
        for (follower, response) in responses {
            self.respond(follower, response);
        }
        Ok(())
    }

    /// The leader's answer, on a follower. Only the answer to the fetch in
    /// flight, from the leader and epoch this follower follows, is taken.
    async fn on_fetch_response(&mut self, from: BrokerId, message: FetchResponseMessage) -> DriverResult {
        let now_ms = self.now_ms();
        let key = (message.topic.clone(), message.partition);
        let me = self.config.node_id;
        let Some(replica) = self.replicas.get_mut(&key) else { return Ok(()) };
        let Role::Follower(follower, fetch) = &mut replica.role else { return Ok(()) };
        let current =
            follower.leader_id() == from && follower.leader_epoch() == message.leader_epoch && fetch.in_flight.is_some_and(|(id, _)| id == message.request_id);
        if !current {
            return Ok(());
        }
        // The answer is lost on the way: the fetch times out and is sent again.
        if keel_io::buggify!("repl: follower loses a fetch answer") {
            return Ok(());
        }
        fetch.in_flight = None;
        fetch.next_fetch_ms = now_ms;
        if message.error_code != 0 {
            // Most often one side's metadata is behind: wait for it.
            tracing::debug!(node_id = me, topic = key.0, partition = key.1, code = message.error_code, error = message.error_message, "fetch refused");
            fetch.next_fetch_ms = now_ms + self.config.fetch_backoff_ms;
            return Ok(());
        }
        if let (Some(epoch), Some(end_offset)) = (message.diverging_epoch, message.diverging_end_offset) {
            if let crate::follower::FollowerStep::Truncate { end_offset } = follower.diverging(epoch, end_offset) {
                replica.log.truncate(end_offset).await.map_err(|error| log_error(&key, error))?;
                assert_eq!(replica.log.next_offset(), end_offset, "the log ends where it was cut");
                replica.rebuild_producers(&self.config, &key).await?;
                self.observe(ReplEvent::Truncated { node_id: me, topic: &key.0, partition: key.1, end_offset });
            }
            self.send_fetch(&key);
            return Ok(());
        }
        if message.records.is_empty() {
            follower.leader_high_watermark(message.high_watermark);
            self.send_fetch(&key);
            return Ok(());
        }
        let (runs, stamps) = match check_fetched(follower, &message) {
            Ok(runs) => runs,
            Err(error) => {
                tracing::warn!(node_id = me, topic = key.0, partition = key.1, from, %error, "fetched records refused");
                fetch.next_fetch_ms = now_ms + self.config.fetch_backoff_ms;
                return Ok(());
            }
        };
        let payloads: Vec<&[u8]> = message.records.iter().map(Vec::as_slice).collect();
        let range = replica.log.append_batch(&payloads).await.map_err(|error| log_error(&key, error))?;
        assert_eq!(range.start, message.base_offset, "fetched records land where the leader has them");
        for (offset, stamp) in (range.start..range.end).zip(&stamps) {
            replica.producers.observe_record(offset, stamp);
        }
        assert_eq!(replica.producers.unfinished_batch_offset(), None, "fetched records end with a whole batch");
        let flushed = replica.log.flush().await.map_err(|error| log_error(&key, error))?;
        assert_eq!(flushed, range.end, "a follower fetches again only with everything durable");
        follower.appended(message.base_offset, &runs, message.high_watermark);
        follower.flushed(flushed);
        self.send_fetch(&key);
        Ok(())
    }

    async fn on_request(&mut self, request: Request) -> DriverResult {
        match request {
            Request::Produce { request, reply } => {
                let key = (request.topic.clone(), request.partition);
                let me = self.config.node_id;
                let assigned_here = self.metadata.partition(&key.0, key.1).is_some_and(|p| p.replicas.contains(&me));
                if assigned_here && !self.replicas.contains_key(&key) {
                    let waiting = self.produces_awaiting_open.entry(key.clone()).or_default();
                    if waiting.len() < self.config.produce_queue_len {
                        waiting.push((request, reply));
                        return Ok(());
                    }
                }
                self.on_produce(request, reply).await
            }
            Request::Read { topic, partition, offset, bytes_max, limit, reply } => {
                let key = (topic, partition);
                let Some(replica) = self.replicas.get(&key) else {
                    let _ = reply.send(Err(ReplError::UnknownTopicOrPartition { topic: key.0.clone(), partition }));
                    return Ok(());
                };
                match replica.read(offset, bytes_max, limit).await {
                    Ok(read) => {
                        let _ = reply.send(Ok(read));
                    }
                    Err(replica::ReadError::Repl(refused)) => {
                        let _ = reply.send(Err(refused));
                    }
                    Err(replica::ReadError::Log(error)) => return Err(log_error(&key, error)),
                    Err(replica::ReadError::Corrupt { offset, error }) => {
                        return Err(ReplDriverError::Corrupt { topic: key.0.clone(), partition, offset, error });
                    }
                }
                Ok(())
            }
            Request::Status { only: None, reply } => {
                let _ = reply.send(self.replicas.iter().map(|(key, replica)| replica.status(key)).collect());
                Ok(())
            }
            Request::Status { only: Some(key), reply } => {
                let _ = reply.send(self.replicas.get(&key).map(|replica| replica.status(&key)).into_iter().collect());
                Ok(())
            }
            Request::EpochEnd { topic, partition, leader_epoch, reply } => {
                let me = self.config.node_id;
                let answer = match self.replicas.get(&(topic, partition)).map(|replica| &replica.role) {
                    Some(replica::Role::Leader(leader)) => Ok(leader.epoch_cache().end_offset_for(leader_epoch, leader.log_end_offset())),
                    Some(_) => Err(ReplError::NotLeader { broker_id: me }),
                    None => Err(ReplError::NotReplica { broker_id: me }),
                };
                let _ = reply.send(answer);
                Ok(())
            }
        }
    }

    async fn on_produce(&mut self, request: ProduceRequest, reply: ProduceReply) -> DriverResult {
        let now_ms = self.now_ms();
        let key = (request.topic.clone(), request.partition);
        if let Err(error) = self.check_produce(&key, &request) {
            let _ = reply.send(Err(error));
            return Ok(());
        }
        let replica = self.replicas.get_mut(&key).expect("checked");
        let leader = replica.leader_mut().expect("checked");
        let leader_epoch = leader.leader_epoch();
        let stamp = request.producer.unwrap_or(ProducerStamp::NONE);
        let admission = if stamp.is_idempotent() { replica.producers.admit(&stamp) } else { Ok(Admission::Append) };
        let range = match admission {
            Err(error) => {
                let _ = reply.send(Err(error));
                return Ok(());
            }
            Ok(Admission::Duplicate { base_offset, end_offset }) => {
                // The retry of a batch already in the log: answered like the
                // original (acks=all still waits for it to be committed).
                tracing::debug!(
                    node_id = self.config.node_id,
                    topic = key.0,
                    partition = key.1,
                    producer_id = stamp.producer_id,
                    base_offset,
                    "duplicate batch answered with its offsets"
                );
                base_offset..end_offset
            }
            Ok(Admission::Append) => {
                let count = request.records.len();
                let payloads: Vec<Vec<u8>> = request
                    .records
                    .iter()
                    .enumerate()
                    .map(|(index, value)| encode_stored(leader_epoch, &stamp.record(index), BatchPosition::new(index, count), value))
                    .collect();
                let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
                let range = replica.log.append_batch(&refs).await.map_err(|error| log_error(&key, error))?;
                replica.dirty = true;
                if stamp.is_idempotent() {
                    replica.producers.appended(&stamp, range.start, range.end);
                }
                replica.leader_mut().expect("checked").appended(range.start, range.end);
                range
            }
        };
        let leader = replica.leader_mut().expect("checked");
        let produced = Produced { base_offset: range.start, leader_epoch };
        match request.acks {
            Acks::None | Acks::Leader => {
                let _ = reply.send(Ok(produced));
            }
            Acks::All => {
                let produce_id = self.next_produce_id;
                self.next_produce_id += 1;
                self.waiters.insert(produce_id, Waiter { reply, produced });
                // The wait ends at once: the batch is appended but answered
                // REQUEST_TIMED_OUT, and the client's retry must not lose or
                // (with idempotence) duplicate it.
                let timeout_ms = if keel_io::buggify!("repl: acks=all wait times out at once") { 0 } else { request.timeout_ms };
                let outputs = leader.await_acks_all(now_ms, produce_id, range.end, timeout_ms);
                self.handle_outputs(&key, outputs);
            }
        }
        self.answer_parked(&key, now_ms).await
    }

    /// Every reason to refuse a produce before anything is appended.
    fn check_produce(&self, key: &(String, u32), request: &ProduceRequest) -> Result<(), ReplError> {
        let replica = self.replicas.get(key).ok_or_else(|| ReplError::UnknownTopicOrPartition { topic: key.0.clone(), partition: key.1 })?;
        let leader = replica.leader().ok_or(ReplError::NotLeader { broker_id: self.config.node_id })?;
        if let Some(requested) = request.leader_epoch {
            let current = leader.leader_epoch();
            if requested < current {
                return Err(ReplError::FencedLeaderEpoch { requested, current });
            }
            if requested > current {
                return Err(ReplError::UnknownLeaderEpoch { requested, current });
            }
        }
        if request.records.is_empty() {
            return Err(ReplError::InvalidRequest { reason: "a produce needs at least one record".into() });
        }
        let bytes: usize = request.records.iter().map(Vec::len).sum();
        if bytes > self.config.produce_batch_bytes_max {
            return Err(ReplError::MessageTooLarge { bytes, bytes_max: self.config.produce_batch_bytes_max });
        }
        let record_bytes_max = (self.config.log_config.record_bytes_max as usize).saturating_sub(STORED_HEADER_BYTES);
        if let Some(record) = request.records.iter().find(|r| r.len() > record_bytes_max) {
            return Err(ReplError::MessageTooLarge { bytes: record.len(), bytes_max: record_bytes_max });
        }
        if let Some(stamp) = &request.producer {
            if stamp.record_count() != request.records.len() as u64 {
                let reason = format!("the batch has {} records and {} sequences", request.records.len(), stamp.record_count());
                return Err(ReplError::InvalidRequest { reason });
            }
        }
        if batch_crc(&request.records) != request.batch_crc {
            return Err(ReplError::CorruptMessage { reason: "the batch checksum does not match its records".into() });
        }
        if request.acks == Acks::All {
            leader.check_acks_all()?;
            if self.waiters.len() >= self.config.acks_all_waiting_max {
                let reason = format!("{} acks=all produces already wait for their ISR", self.waiters.len());
                return Err(ReplError::Busy { reason });
            }
        }
        Ok(())
    }

    /// One flush per log appended to since the last one (group commit).
    async fn group_commit(&mut self) -> DriverResult {
        let dirty: Vec<(String, u32)> = self.replicas.iter().filter(|(_, r)| r.dirty).map(|(key, _)| key.clone()).collect();
        let now_ms = self.now_ms();
        for key in dirty {
            let replica = self.replicas.get_mut(&key).expect("listed above");
            replica.dirty = false;
            let flushed = replica.log.flush().await.map_err(|error| log_error(&key, error))?;
            if let Some(leader) = replica.leader_mut() {
                let outputs = leader.flushed(flushed);
                self.handle_outputs(&key, outputs);
                self.answer_parked(&key, now_ms).await?;
            }
        }
        Ok(())
    }
}

/// A partition log's directory name, `{topic}-{partition}-{topic_id}`
/// (topic names may hold dashes), read back.
pub fn parse_log_dir(name: &str) -> Option<(&str, u32, u64)> {
    let mut parts = name.rsplitn(3, '-');
    let topic_id = parts.next()?.parse().ok()?;
    let partition = parts.next()?.parse().ok()?;
    let topic = parts.next().filter(|topic| !topic.is_empty())?;
    Some((topic, partition, topic_id))
}

fn log_error(key: &(String, u32), error: LogError) -> ReplDriverError {
    ReplDriverError::Log { topic: key.0.clone(), partition: key.1, error }
}

/// A leader's read for a follower: records from `from` (a batch's first
/// record) up to about `bytes_max`, cut after the last batch that ends within
/// the read, and at least one whole batch when the first batch alone is
/// larger (Kafka's rule). Batches are atomic in the log: a follower never
/// holds the first records of a batch without the rest, so its log end (the
/// durable end it reports, and so the high watermark) is always a batch
/// boundary.
async fn read_whole_batches(log: &keel_log::Log, key: &(String, u32), from: u64, bytes_max: usize) -> Result<Vec<keel_log::Record>, ReplDriverError> {
    let position = |record: &keel_log::Record| {
        decode_stored(&record.payload).map(|stored| stored.batch).map_err(|error| ReplDriverError::Corrupt {
            topic: key.0.clone(),
            partition: key.1,
            offset: record.offset,
            error,
        })
    };
    let mut records = log.read_from(from, bytes_max).await.map_err(|error| log_error(key, error))?;
    let Some(last) = records.last() else { return Ok(records) };
    let last_position = position(last)?;
    if last_position.is_last() {
        return Ok(records);
    }
    let batch_start = last.offset - u64::from(last_position.index);
    if batch_start > from {
        records.retain(|record| record.offset < batch_start);
        return Ok(records);
    }
    assert_eq!(batch_start, from, "a fetch starts at a batch's first record");
    let batch_end = batch_start + u64::from(last_position.records);
    assert!(batch_end <= log.next_offset(), "the leader's log ends with a whole batch");
    while records.last().expect("read above").offset + 1 < batch_end {
        let next = records.last().expect("read above").offset + 1;
        let more = log.read_from(next, bytes_max).await.map_err(|error| log_error(key, error))?;
        records.extend(more.into_iter().filter(|record| record.offset < batch_end));
    }
    Ok(records)
}

/// (leader epoch, end offset) of each run of records written in one epoch.
type EpochRuns = Vec<(u32, u64)>;

/// Checks fetched records before anything is written: each stored record's
/// checksum, that they continue this log, that they are whole batches
/// (the first starts a batch, each continues the one before or starts the
/// next, the last ends its batch), and that their epochs never go back and
/// never exceed the leader's. Returns the (epoch, end offset) runs and each
/// record's producer stamp.
fn check_fetched(follower: &crate::follower::Follower, message: &FetchResponseMessage) -> Result<(EpochRuns, Vec<RecordStamp>), ReplError> {
    if message.base_offset != follower.log_end_offset() {
        return Err(ReplError::InvalidRequest { reason: format!("records start at {}, the log ends at {}", message.base_offset, follower.log_end_offset()) });
    }
    let mut runs: Vec<(u32, u64)> = Vec::new();
    let mut stamps = Vec::with_capacity(message.records.len());
    let mut previous_epoch = follower.epoch_cache().latest().map_or(0, |latest| latest.epoch);
    let mut previous_position: Option<BatchPosition> = None;
    for (index, payload) in message.records.iter().enumerate() {
        let stored = decode_stored(payload)?;
        let whole = match &previous_position {
            Some(previous) => previous.is_followed_by(&stored.batch),
            None => stored.batch.is_first(),
        };
        if !whole {
            let reason = format!("record {:?} after {previous_position:?} at offset {}: a batch is cut", stored.batch, message.base_offset + index as u64);
            return Err(ReplError::InvalidRequest { reason });
        }
        previous_position = Some(stored.batch);
        stamps.push(stored.stamp);
        let epoch = stored.leader_epoch;
        if epoch < previous_epoch || epoch > follower.leader_epoch() {
            let reason = format!("record epoch {epoch} after epoch {previous_epoch} under leader epoch {}", follower.leader_epoch());
            return Err(ReplError::InvalidRequest { reason });
        }
        previous_epoch = epoch;
        let end_offset = message.base_offset + index as u64 + 1;
        match runs.last_mut() {
            Some((run_epoch, run_end)) if *run_epoch == epoch => *run_end = end_offset,
            _ => runs.push((epoch, end_offset)),
        }
    }
    if previous_position.is_some_and(|last| !last.is_last()) {
        return Err(ReplError::InvalidRequest { reason: "the fetched records end inside a batch".into() });
    }
    Ok((runs, stamps))
}

#[cfg(test)]
mod tests {
    use super::parse_log_dir;

    #[test]
    fn log_directories_name_topic_partition_and_topic_id_and_topics_may_hold_dashes() {
        assert_eq!(parse_log_dir("orders-3-17"), Some(("orders", 3, 17)));
        assert_eq!(parse_log_dir("a-b-c-0-2"), Some(("a-b-c", 0, 2)));
        assert_eq!(parse_log_dir("orders-3"), None);
        assert_eq!(parse_log_dir("-3-17"), None);
        assert_eq!(parse_log_dir("orders-x-17"), None);
        assert_eq!(parse_log_dir("meta"), None);
    }
}
