//! The Kafka layer in a simulated world (`[data] client = "kafka"`): each
//! broker serves keel-kafka's `KafkaFront` on its address at port 9092, and
//! the workload's clients run on their own simulated host, speaking the
//! Kafka wire protocol (`kafka_client`) over simulated TCP: Metadata to find
//! partition leaders, InitProducerId and Produce with sequence numbers for
//! idempotent producers, Fetch for consumers. So every seed runs the whole
//! request path: frames, header and body codecs, dispatch, record batch
//! conversion, the replication driver and back.
//!
//! Producers send one batch at a time (one in flight per producer: simpler
//! than Kafka's up to 5, and every retry is then of the latest batch) and
//! retry it, the same bytes with the same sequence, on request timeouts,
//! lost connections and retriable errors (after refreshing metadata for the
//! leadership ones): exactly the retries that duplicate records without
//! idempotence. A batch still unacknowledged after `client_timeout_ms`
//! (Kafka's delivery.timeout.ms) is given up, and an idempotent producer
//! then takes a new producer id, so it never sends a sequence after a gap.
//!
//! Which refusals are legitimate for such a producer (one batch in flight,
//! acks=all, retrying only its latest batch):
//! - OUT_OF_ORDER_SEQUENCE_NUMBER (45): only from a deposed leader whose
//!   metadata is behind (another broker has led the partition in a newer
//!   leader epoch): it still takes produces, and its log lacks the batches
//!   the newer leader acknowledged; nothing is appended, and the producer
//!   refreshes its metadata and retries. From any other broker never: the
//!   batch before it was acknowledged with acks=all, so it is committed
//!   and in the log (and the producer state) of every later leader. It
//!   would be legitimate after
//!   a producer skips a sequence (ours take a new id instead), after the
//!   log lost the producer's batches (retention, unclean leader election:
//!   neither happens here), or with more batches in flight than the
//!   broker remembers per producer (5).
//! - INVALID_PRODUCER_EPOCH (47): never. Only a newer epoch of the same
//!   producer id fences an older one (a KIP-360 epoch bump, a transactional
//!   producer taking over); Keel hands every InitProducerId a fresh id.
//!
//! Both are `idempotent-sequence` violations; any other non-retriable error
//! for a valid batch is a `data-liveness` violation, as in `data_world`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_io::NodeRng;
use keel_repl::driver::ReadRecord;
use keel_repl::RecordStamp;
use rand::Rng;

use crate::data_check::{checker, DataViolation, IdempotentAck};
use crate::data_world::{Sent, DATA_TOPIC};
use crate::kafka_client::{code, encode_batch, BatchProducer, ClientError, KafkaConnection, KAFKA_PORT};
use crate::scenario::{AcksSpec, DataSpec};
use crate::shared::{ip_of, lock, SharedHistory, WorldClock};

/// Bytes a consumer asks for per fetch.
const FETCH_BYTES_MAX: i32 = 16 * 1024;
/// How long a consumer's fetch may be parked at the broker.
const FETCH_WAIT_MS: i32 = 100;

/// The final logs as the checkers compare them: each record's Kafka value
/// (the log stores keel-kafka's `StoredRecord` around it).
pub fn kafka_values(logs: BTreeMap<u32, BTreeMap<u64, Vec<ReadRecord>>>) -> Result<BTreeMap<u32, BTreeMap<u64, Vec<ReadRecord>>>, DataViolation> {
    let mut out = BTreeMap::new();
    for (partition, replicas) in logs {
        let mut decoded = BTreeMap::new();
        for (broker, log) in replicas {
            let mut records = Vec::with_capacity(log.len());
            for record in log {
                let stored = keel_kafka::records::decode_stored_record(record.offset, &record.value).map_err(|error| DataViolation {
                    checker: checker::DATA_CONVERGENCE,
                    message: format!("broker {broker} partition {partition}: {error}"),
                })?;
                records.push(ReadRecord { value: stored.value.unwrap_or_default(), ..record });
            }
            decoded.insert(broker, records);
        }
        out.insert(partition, decoded);
    }
    Ok(out)
}

/// What the Kafka clients share.
#[derive(Clone)]
pub struct KafkaClients {
    pub spec: DataSpec,
    pub history: SharedHistory,
    pub clock: WorldClock,
    /// Every broker id: the bootstrap list.
    pub brokers: Vec<u64>,
}

/// One attempt to send a batch: what, where, and how many tries so far.
#[derive(Clone, Copy)]
struct Attempt<'a> {
    what: &'a str,
    partition: u32,
    acks: AcksSpec,
    values: &'a [Vec<u8>],
    producer: Option<BatchProducer>,
    leader: u64,
    leader_epoch: i32,
    attempts: u32,
}

/// One client's connections and its view of the cluster.
pub(crate) struct Session {
    pub(crate) clients: KafkaClients,
    pub(crate) name: String,
    pub(crate) rng: NodeRng,
    connections: BTreeMap<u64, KafkaConnection>,
    /// Broker id -> `host:port`, as Metadata answered.
    addrs: BTreeMap<u64, String>,
    /// Partition -> (leader, leader epoch), as Metadata answered.
    leaders: BTreeMap<u32, (u64, i32)>,
}

impl Session {
    pub(crate) fn new(clients: KafkaClients, name: String, rng: NodeRng) -> Self {
        Session { clients, name, rng, connections: BTreeMap::new(), addrs: BTreeMap::new(), leaders: BTreeMap::new() }
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.clients.spec.request_timeout_ms())
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.clients.clock.now_ms()
    }

    pub(crate) fn note(&self, line: impl std::fmt::Display) {
        lock(&self.clients.history).note(self.clients.clock.now_us(), format_args!("{} {line}", self.name));
    }

    pub(crate) async fn backoff(&mut self, backoff_ms: &mut u64) {
        let jitter_ms = self.rng.gen_range(0..*backoff_ms);
        self.clients.clock.0.sleep(Duration::from_millis(*backoff_ms + jitter_ms)).await;
        *backoff_ms = (*backoff_ms * 2).min(500);
    }

    /// The open connection to `broker`, opened if need be.
    pub(crate) async fn connection(&mut self, broker: u64) -> Result<&mut KafkaConnection, ClientError> {
        if !self.connections.contains_key(&broker) {
            let addr = self.addrs.get(&broker).cloned().unwrap_or_else(|| format!("{}:{KAFKA_PORT}", ip_of(broker)));
            let connection = match KafkaConnection::connect_negotiated(&addr, &self.name, self.request_timeout()).await {
                Ok(connection) => connection,
                Err(error @ ClientError::Unsupported { .. }) => {
                    let message = format!("{}: broker {broker} cannot be spoken to: {error}", self.name);
                    lock(&self.clients.history).violate(self.clients.clock.now_us(), checker::DATA_LIVENESS, message);
                    return Err(error);
                }
                Err(error) => return Err(error),
            };
            self.connections.insert(broker, connection);
        }
        Ok(self.connections.get_mut(&broker).expect("just opened"))
    }

    /// After an error the stream may still carry an old response: close it.
    pub(crate) fn close(&mut self, broker: u64) {
        self.connections.remove(&broker);
    }

    pub(crate) fn random_broker(&mut self) -> u64 {
        let brokers = &self.clients.brokers;
        brokers[self.rng.gen_range(0..brokers.len())]
    }

    /// Asks a random broker for the data topic's metadata; `false` if it
    /// could not answer.
    pub(crate) async fn refresh_metadata(&mut self) -> bool {
        let broker = self.random_broker();
        let timeout = self.request_timeout();
        let answer = match self.connection(broker).await {
            Ok(connection) => connection.metadata(&[DATA_TOPIC], timeout).await,
            Err(error) => Err(error),
        };
        match answer {
            Ok(view) => {
                for (id, addr) in view.brokers {
                    if let Ok(id) = u64::try_from(id) {
                        self.addrs.insert(id, addr);
                    }
                }
                self.leaders.clear();
                for ((topic, partition), leader) in view.partitions {
                    let (Ok(partition), Ok(leader_id)) = (u32::try_from(partition), u64::try_from(leader.leader_id)) else { continue };
                    if topic == DATA_TOPIC && leader.error_code == code::NONE {
                        self.leaders.insert(partition, (leader_id, leader.leader_epoch));
                    }
                }
                true
            }
            Err(error) => {
                self.close(broker);
                self.note(format_args!("metadata from n{broker} failed: {error}"));
                false
            }
        }
    }

    /// Forgets the partition's leader (after an error naming it stale).
    pub(crate) fn forget_leader(&mut self, partition: u32) {
        self.leaders.remove(&partition);
    }

    /// The partition's leader and its epoch, refreshing metadata if unknown.
    pub(crate) async fn leader_of(&mut self, partition: u32) -> Option<(u64, i32)> {
        if !self.leaders.contains_key(&partition) {
            self.refresh_metadata().await;
        }
        self.leaders.get(&partition).copied()
    }

    /// InitProducerId from random brokers until answered or `deadline_ms`.
    async fn init_producer_id(&mut self, deadline_ms: u64) -> Option<(i64, i16)> {
        let mut backoff_ms = 20u64;
        while self.now_ms() < deadline_ms {
            let broker = self.random_broker();
            let timeout = self.request_timeout();
            let answer = match self.connection(broker).await {
                Ok(connection) => connection.init_producer_id(timeout).await,
                Err(error) => Err(error),
            };
            match answer {
                Ok((code::NONE, producer_id, producer_epoch)) => {
                    lock(&self.clients.history).data.kafka.producer_ids += 1;
                    self.note(format_args!("has producer id {producer_id} epoch {producer_epoch} from n{broker}"));
                    return Some((producer_id, producer_epoch));
                }
                Ok((error_code, _, _)) if code::is_retriable(error_code) => {
                    self.note(format_args!("InitProducerId refused by n{broker} with error {error_code}"));
                }
                Ok((error_code, _, _)) => {
                    let message = format!("{}: InitProducerId refused for good by broker {broker} with error {error_code}", self.name);
                    lock(&self.clients.history).violate(self.clients.clock.now_us(), checker::DATA_LIVENESS, message);
                    return None;
                }
                Err(error) => {
                    self.close(broker);
                    self.note(format_args!("InitProducerId to n{broker} failed: {error}"));
                }
            }
            self.backoff(&mut backoff_ms).await;
        }
        None
    }

    /// Sends one batch to the partition's leader until acknowledged, refused
    /// for good or `deadline_ms`: the same bytes (and so the same sequence)
    /// every time. Every attempt, refusal and acknowledgement goes to the
    /// history.
    async fn send(&mut self, what: &str, partition: u32, acks: AcksSpec, values: &[Vec<u8>], producer: Option<BatchProducer>, deadline_ms: u64) -> Sent {
        let records = encode_batch(values, producer, i64::try_from(self.now_ms()).expect("simulated time fits i64"));
        if let Some(p) = producer {
            lock(&self.clients.history).data.idempotent_batch(partition, p.producer_id, p.producer_epoch, p.base_sequence, values);
        }
        let acks_code: i16 = if acks == AcksSpec::All { -1 } else { 1 };
        let broker_timeout_ms = i32::try_from(self.clients.spec.produce_timeout_ms).unwrap_or(i32::MAX);
        let sequence = producer.map_or(String::new(), |p| format!(" seq {}", p.base_sequence));
        let mut attempts = 0u32;
        let mut maybe_appended = false;
        let mut retried_after_maybe_appended = false;
        let mut backoff_ms = 20u64;
        let first_send_us = self.clients.clock.now_us();
        let outcome = loop {
            if self.now_ms() >= deadline_ms {
                break Sent::OutOfTime;
            }
            let Some((leader, leader_epoch)) = self.leader_of(partition).await else {
                self.backoff(&mut backoff_ms).await;
                continue;
            };
            attempts += 1;
            retried_after_maybe_appended |= maybe_appended;
            self.note(format_args!("{what} sends {}{sequence} to n{leader} (partition {partition}, epoch {leader_epoch}, attempt {attempts})", values.len()));
            let timeout = self.request_timeout();
            let answer = match self.connection(leader).await {
                Ok(connection) => connection.produce(DATA_TOPIC, kafka_partition(partition), acks_code, records.clone(), broker_timeout_ms, timeout).await,
                Err(error) => Err(error),
            };
            let now_us = self.clients.clock.now_us();
            match answer {
                Ok(answer) if answer.error_code == code::NONE => {
                    let attempt = Attempt { what, partition, acks, values, producer, leader, leader_epoch, attempts };
                    break self.acknowledged(&attempt, answer.base_offset, first_send_us, now_us);
                }
                Ok(answer) => {
                    let error_code = answer.error_code;
                    let message = answer.error_message.unwrap_or_default();
                    let attempt = Attempt { what, partition, acks, values, producer, leader, leader_epoch, attempts };
                    if let Some(sent) = self.refused(&attempt, error_code, &message, now_us) {
                        break sent;
                    }
                    // REQUEST_TIMED_OUT is also "broker busy, nothing appended";
                    // either way the retry may meet the first append.
                    maybe_appended |= matches!(error_code, code::REQUEST_TIMED_OUT | code::NOT_ENOUGH_REPLICAS_AFTER_APPEND);
                }
                Err(error) => {
                    self.close(leader);
                    self.leaders.remove(&partition);
                    maybe_appended |= error.maybe_delivered();
                    self.note(format_args!("{what} to n{leader}: {error}"));
                }
            }
            self.backoff(&mut backoff_ms).await;
        };
        let mut history = lock(&self.clients.history);
        let stats = &mut history.data.kafka;
        stats.batches_retried += u64::from(attempts > 1);
        stats.retries_after_maybe_appended += u64::from(retried_after_maybe_appended);
        if outcome == Sent::OutOfTime {
            stats.batches_given_up += 1;
            history.note(self.clients.clock.now_us(), format_args!("{} {what} given up after {attempts} attempts", self.name));
        }
        outcome
    }

    /// An acknowledged produce (first sent at `first_send_us`), checked and recorded.
    fn acknowledged(&self, attempt: &Attempt<'_>, base_offset: i64, first_send_us: u64, now_us: u64) -> Sent {
        let Attempt { what, partition, acks, values, producer, leader, leader_epoch, attempts } = *attempt;
        let Ok(base_offset) = u64::try_from(base_offset) else {
            let message = format!("{}: {what} acknowledged at base offset {base_offset}", self.name);
            lock(&self.clients.history).violate(now_us, checker::INCONSISTENT_OFFSETS, message);
            return Sent::RefusedForGood;
        };
        let mut history = lock(&self.clients.history);
        history.data.produce_latency.record(acks == AcksSpec::All, now_us - first_send_us);
        if acks == AcksSpec::All {
            let verdict = history.data.acked_all(partition, base_offset, values);
            history.data_verdict(now_us, verdict);
        } else {
            history.data.acks_leader_acknowledged += 1;
        }
        if producer.is_some() {
            history.data.kafka.acks.push(IdempotentAck { partition, base_offset, attempts, leader_epoch });
        }
        history.note(now_us, format_args!("{} {what} acks={acks:?} -> n{leader} {}@{base_offset} (attempt {attempts})", self.name, values.len()));
        Sent::Acknowledged
    }

    /// A refused produce: `Some` ends the batch (refused for good, a
    /// violation recorded), `None` retries it.
    fn refused(&mut self, attempt: &Attempt<'_>, error_code: i16, message: &str, now_us: u64) -> Option<Sent> {
        let Attempt { what, partition, producer, leader, .. } = *attempt;
        let mut history = lock(&self.clients.history);
        *history.data.produce_errors.entry(error_code).or_default() += 1;
        history.note(now_us, format_args!("{} {what} refused by n{leader} with error {error_code}: {message}", self.name));
        // Allowed only from a deposed leader that does not know
        // it yet: the current one has the producer's batches.
        let refused_by_deposed_leader = if let (Some(p), code::OUT_OF_ORDER_SEQUENCE_NUMBER | code::INVALID_PRODUCER_EPOCH) = (producer, error_code) {
            let verdict = history.data.sequence_refused(&self.name, DATA_TOPIC, partition, leader, p.producer_id, p.base_sequence, error_code, message);
            if !history.data_verdict(now_us, verdict) {
                return Some(Sent::RefusedForGood);
            }
            true
        } else {
            false
        };
        if !refused_by_deposed_leader && !code::is_retriable(error_code) {
            let message = format!("{}: a valid batch was refused for good by broker {leader} with error {error_code}: {message}", self.name);
            history.violate(now_us, checker::DATA_LIVENESS, message);
            return Some(Sent::RefusedForGood);
        }
        drop(history);
        if refused_by_deposed_leader || code::is_stale_leader(error_code) {
            self.leaders.remove(&partition);
        }
        None
    }
}

fn kafka_partition(partition: u32) -> i32 {
    i32::try_from(partition).expect("at most 64 partitions")
}

/// A value of `bytes` bytes that starts with `text` (padded with dots).
fn padded(mut text: String, bytes: usize) -> Vec<u8> {
    while text.len() < bytes {
        text.push('.');
    }
    text.into_bytes()
}

impl KafkaClients {
    /// Producer `producer`: `batches_per_producer` batches, one at a time,
    /// each retried until acknowledged or out of time. Idempotent producers
    /// take a producer id first and number each partition's records from 0;
    /// after giving up on a batch they take a new id.
    pub async fn produce(self, producer: u64, mut rng: NodeRng) {
        let spec = self.spec.clone();
        let acks = spec.acks[(producer as usize) % spec.acks.len()];
        let mut session = Session::new(self, format!("k{producer}"), rng.fork(1));
        let mut identity: Option<(i64, i16)> = None;
        let mut sequences: BTreeMap<u32, i32> = BTreeMap::new();
        for batch in 0..spec.batches_per_producer {
            let count = rng.gen_range(spec.records_per_batch[0]..=spec.records_per_batch[1]);
            let partition = rng.gen_range(0..spec.partitions);
            let gap_ms = rng.gen_range(spec.gap_ms[0]..=spec.gap_ms[1]);
            let deadline_ms = session.now_ms() + spec.client_timeout_ms;
            if spec.idempotent && identity.is_none() {
                identity = session.init_producer_id(deadline_ms).await;
                sequences.clear();
            }
            let stamp = match (spec.idempotent, identity) {
                (false, _) => None,
                (true, Some((producer_id, producer_epoch))) => {
                    Some(BatchProducer { producer_id, producer_epoch, base_sequence: *sequences.entry(partition).or_insert(0) })
                }
                // No producer id within the client's time: this batch is lost to it.
                (true, None) => {
                    if lock(&session.clients.history).violation().is_some() {
                        return;
                    }
                    continue;
                }
            };
            let values: Vec<Vec<u8>> = (0..count)
                .map(|record| {
                    let text = match stamp {
                        Some(p) => format!("k{producer}-b{batch}-r{record}-id{}-s{}", p.producer_id, u64::try_from(p.base_sequence).unwrap_or(0) + record),
                        None => format!("k{producer}-b{batch}-r{record}"),
                    };
                    padded(text, spec.record_bytes)
                })
                .collect();
            match session.send(&format!("b{batch}"), partition, acks, &values, stamp, deadline_ms).await {
                Sent::Acknowledged => {
                    if let Some(next) = sequences.get_mut(&partition) {
                        *next += i32::try_from(count).expect("small batches");
                    }
                }
                // The batch may still be in the log: its sequences are
                // spent, and with them this producer id (KIP-360).
                Sent::OutOfTime => identity = None,
                Sent::RefusedForGood => return,
            }
            session.clients.clock.0.sleep(Duration::from_millis(gap_ms)).await;
        }
    }

    /// Consumer `consumer`: follows one partition from offset 0 with Fetch
    /// requests to its leader (as Metadata names it, with its leader epoch),
    /// until `stop` is set. Records below the fetch position are skipped, as
    /// a Kafka consumer skips them; the rest must continue the position.
    pub async fn consume(self, consumer: u64, stop: Arc<AtomicBool>, rng: NodeRng) {
        let partition = u32::try_from(consumer).expect("small") % self.spec.partitions;
        let mut session = Session::new(self, format!("c{consumer}"), rng);
        let mut position = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let mut pause = true;
            if let Some((leader, leader_epoch)) = session.leader_of(partition).await {
                let timeout = session.request_timeout();
                let offset = i64::try_from(position).expect("offsets fit i64");
                let answer = match session.connection(leader).await {
                    Ok(connection) => {
                        connection.fetch(DATA_TOPIC, kafka_partition(partition), offset, leader_epoch, FETCH_WAIT_MS, FETCH_BYTES_MAX, timeout).await
                    }
                    Err(error) => Err(error),
                };
                match answer {
                    Ok(fetched) if fetched.error_code == code::NONE => {
                        let records: Vec<ReadRecord> = fetched
                            .records
                            .iter()
                            .filter(|r| r.offset >= offset)
                            .map(|r| ReadRecord {
                                offset: u64::try_from(r.offset).expect("fetched offsets are not negative"),
                                leader_epoch: u32::try_from(r.partition_leader_epoch).unwrap_or(0),
                                stamp: RecordStamp {
                                    producer_id: r.producer_id,
                                    producer_epoch: r.producer_epoch,
                                    sequence: r.sequence,
                                    last_sequence: r.sequence,
                                },
                                value: r.value.as_ref().map(|v| v.to_vec()).unwrap_or_default(),
                            })
                            .collect();
                        let high_watermark = u64::try_from(fetched.high_watermark).unwrap_or(0);
                        let mut history = lock(&session.clients.history);
                        if !records.is_empty() {
                            let line = format_args!("c{consumer} fetches {} from n{leader} at {position} (high watermark {high_watermark})", records.len());
                            history.note(session.clients.clock.now_us(), line);
                        }
                        let verdict = history.data.consumer_read(consumer, partition, position, &records, high_watermark);
                        if !history.data_verdict(session.clients.clock.now_us(), verdict) {
                            return;
                        }
                        position += records.len() as u64;
                        pause = records.is_empty();
                    }
                    Ok(fetched) => {
                        session.note(format_args!("fetch refused by n{leader} with error {}", fetched.error_code));
                        session.leaders.remove(&partition);
                    }
                    Err(error) => {
                        session.close(leader);
                        session.leaders.remove(&partition);
                        session.note(format_args!("fetch from n{leader}: {error}"));
                    }
                }
            }
            if pause {
                let pause_ms = session.rng.gen_range(10..60);
                session.clients.clock.0.sleep(Duration::from_millis(pause_ms)).await;
            }
        }
    }

    /// Liveness: a new producer's acks=all batch to partition 0 after the
    /// heal is acknowledged before `deadline_ms`.
    pub async fn probe(&self, deadline_ms: u64, rng: NodeRng) -> bool {
        let mut session = Session::new(self.clone(), "probe".to_string(), rng);
        let stamp = if self.spec.idempotent {
            session.init_producer_id(deadline_ms).await.map(|(producer_id, producer_epoch)| BatchProducer { producer_id, producer_epoch, base_sequence: 0 })
        } else {
            None
        };
        let sent = if self.spec.idempotent && stamp.is_none() {
            if lock(&self.history).violation().is_some() {
                return false;
            }
            Sent::OutOfTime
        } else {
            let values = [padded("probe-after-heal".to_string(), self.spec.record_bytes)];
            session.send("probe", 0, AcksSpec::All, &values, stamp, deadline_ms).await
        };
        match sent {
            Sent::Acknowledged => true,
            Sent::RefusedForGood => false,
            Sent::OutOfTime => {
                let message = format!("a Kafka acks=all produce after the heal was not acknowledged by {deadline_ms} ms");
                lock(&self.history).violate(self.clock.now_us(), checker::DATA_LIVENESS, message);
                false
            }
        }
    }
}
