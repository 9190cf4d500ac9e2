//! Partition data in a simulated world (`[data]` in a scenario): producers
//! with acks=all or acks=1 that retry like Kafka clients, consumers that
//! read from any replica below its high watermark, the liveness probe, data
//! convergence and the final logs the checkers of `data_check` compare.
//! Everything a client sends, is acknowledged, is refused or reads goes to
//! the history.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_io::NodeRng;
use keel_meta::driver::MetaHandle;
use keel_repl::driver::{Acks, ProduceRequest, ReadLimit, ReadRecord, ReplHandle, ReplicaRole};
use rand::Rng;

use crate::data_check::checker;
use crate::scenario::{AcksSpec, DataSpec};
use crate::shared::{lock, MetaHandles, ReplHandles, SharedHistory, WorldClock};

/// The topic every `[data]` workload writes.
pub const DATA_TOPIC: &str = "data";
/// Bytes a consumer asks for per read.
const READ_BYTES_MAX: usize = 16 * 1024;

/// How one batch ended (for the Kafka clients of `kafka_world` too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    Acknowledged,
    OutOfTime,
    RefusedForGood,
}

/// What the data clients share.
#[derive(Clone)]
pub struct DataClients {
    pub spec: DataSpec,
    pub meta: MetaHandles,
    pub repl: ReplHandles,
    pub history: SharedHistory,
    pub clock: WorldClock,
}

impl DataClients {
    /// The partition's leader and leader epoch as some serving broker's metadata says.
    fn leader_of(&self, partition: u32, rng: &mut NodeRng) -> Option<(u64, u32, ReplHandle)> {
        let metas: Vec<MetaHandle> = lock(&self.meta).values().cloned().collect();
        if metas.is_empty() {
            return None;
        }
        let state = metas[rng.gen_range(0..metas.len())].feed().current();
        let metadata = state.partition(DATA_TOPIC, partition)?;
        let leader = metadata.leader?;
        let leader_epoch = u32::try_from(metadata.leader_epoch).expect("epoch fits u32");
        let handle = lock(&self.repl).get(&leader).cloned()?;
        Some((leader, leader_epoch, handle))
    }

    /// Sends one batch to the partition's current leader (as some broker's
    /// metadata names it, with its leader epoch), retrying with backoff until
    /// it is acknowledged or `deadline_ms` passes. Every attempt, refusal and
    /// acknowledgement goes to the history; a valid batch refused for good is
    /// a `data-liveness` violation.
    async fn send(&self, who: &str, partition: u32, acks: Acks, values: &[Vec<u8>], deadline_ms: u64, rng: &mut NodeRng) -> Sent {
        let mut backoff_ms = 20u64;
        let first_send_us = self.clock.now_us();
        while self.clock.now_ms() < deadline_ms {
            if let Some((leader, leader_epoch, handle)) = self.leader_of(partition, rng) {
                let mut request = ProduceRequest::new(DATA_TOPIC, partition, acks, values.to_vec(), self.spec.produce_timeout_ms);
                request.leader_epoch = Some(leader_epoch);
                let sent = format!("{who} sends {} to n{leader} (partition {partition}, epoch {leader_epoch})", values.len());
                lock(&self.history).note(self.clock.now_us(), sent);
                let result = handle.produce(request).await;
                let mut history = lock(&self.history);
                let now_us = self.clock.now_us();
                match result {
                    Ok(produced) => {
                        if acks == Acks::All {
                            let verdict = history.data.acked_all(partition, produced.base_offset, values);
                            history.data_verdict(now_us, verdict);
                        } else {
                            history.data.acks_leader_acknowledged += 1;
                        }
                        history.data.produce_latency.record(acks == Acks::All, now_us - first_send_us);
                        let line = format_args!("{who} acks={acks:?} -> n{leader} {}@{} epoch {}", values.len(), produced.base_offset, produced.leader_epoch);
                        history.note(now_us, line);
                        return Sent::Acknowledged;
                    }
                    Err(error) => {
                        *history.data.produce_errors.entry(error.kafka_code()).or_default() += 1;
                        history.note(now_us, format_args!("{who} refused by n{leader}: {error}"));
                        if !error.is_retriable() {
                            let message = format!("{who}: a valid batch was refused for good by broker {leader}: {error}");
                            history.violate(now_us, checker::DATA_LIVENESS, message);
                            return Sent::RefusedForGood;
                        }
                    }
                }
            }
            self.clock.0.sleep(Duration::from_millis(backoff_ms + rng.gen_range(0..backoff_ms))).await;
            backoff_ms = (backoff_ms * 2).min(500);
        }
        Sent::OutOfTime
    }

    /// Producer `producer`: `batches_per_producer` batches, each retried
    /// until acknowledged or out of time (a timed-out batch may still be
    /// committed; without idempotence a retry may then duplicate it).
    pub async fn produce(self, producer: u64, mut rng: NodeRng) {
        let spec = &self.spec;
        let acks = match spec.acks[(producer as usize) % spec.acks.len()] {
            AcksSpec::All => Acks::All,
            AcksSpec::Leader => Acks::Leader,
        };
        for batch in 0..spec.batches_per_producer {
            let count = rng.gen_range(spec.records_per_batch[0]..=spec.records_per_batch[1]);
            let values: Vec<Vec<u8>> = (0..count).map(|record| padded(format!("p{producer}-b{batch}-r{record}"), spec.record_bytes)).collect();
            let partition = rng.gen_range(0..spec.partitions);
            let deadline_ms = self.clock.now_ms() + spec.client_timeout_ms;
            if self.send(&format!("p{producer} b{batch}"), partition, acks, &values, deadline_ms, &mut rng).await == Sent::RefusedForGood {
                return;
            }
            let gap_ms = rng.gen_range(spec.gap_ms[0]..=spec.gap_ms[1]);
            self.clock.0.sleep(Duration::from_millis(gap_ms)).await;
        }
    }

    /// Consumer `consumer`: follows one partition from offset 0, reading
    /// from a random broker each time (followers too: KIP-392 fetching),
    /// until `stop` is set.
    pub async fn consume(self, consumer: u64, stop: Arc<AtomicBool>, mut rng: NodeRng) {
        let partition = u32::try_from(consumer).expect("small") % self.spec.partitions;
        let mut position = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let handles: Vec<(u64, ReplHandle)> = lock(&self.repl).iter().map(|(id, handle)| (*id, handle.clone())).collect();
            if !handles.is_empty() {
                let (broker, handle) = &handles[rng.gen_range(0..handles.len())];
                if let Ok(read) = handle.read(DATA_TOPIC, partition, position, READ_BYTES_MAX, ReadLimit::HighWatermark).await {
                    let mut history = lock(&self.history);
                    if !read.records.is_empty() {
                        let line =
                            format_args!("c{consumer} reads {} from n{broker} at {position} (high watermark {})", read.records.len(), read.high_watermark);
                        history.note(self.clock.now_us(), line);
                    }
                    let verdict = history.data.consumer_read(consumer, partition, position, &read.records, read.high_watermark);
                    if !history.data_verdict(self.clock.now_us(), verdict) {
                        return;
                    }
                    position += read.records.len() as u64;
                }
            }
            self.clock.0.sleep(Duration::from_millis(rng.gen_range(10..60))).await;
        }
    }

    /// Liveness: an acks=all produce after the heal is acknowledged before `deadline_ms`.
    pub async fn probe(&self, deadline_ms: u64, mut rng: NodeRng) -> bool {
        let values = [padded("probe-after-heal".to_string(), self.spec.record_bytes)];
        match self.send("probe", 0, Acks::All, &values, deadline_ms, &mut rng).await {
            Sent::Acknowledged => true,
            Sent::RefusedForGood => false,
            Sent::OutOfTime => {
                let message = format!("an acks=all produce after the heal was not acknowledged by {deadline_ms} ms");
                lock(&self.history).violate(self.clock.now_us(), checker::DATA_LIVENESS, message);
                false
            }
        }
    }

    /// Why the replicas have not converged yet: every replica of every
    /// partition follows the metadata's leader and epoch, the leader's ISR is
    /// every replica, and all have the same log end and high watermark.
    pub async fn not_converged(&self) -> Option<String> {
        let metas: Vec<MetaHandle> = lock(&self.meta).values().cloned().collect();
        let state = metas.first()?.feed().current();
        let topic = state.topic(DATA_TOPIC)?;
        let repl = lock(&self.repl).clone();
        let mut statuses = BTreeMap::new();
        for (id, handle) in &repl {
            match handle.status().await {
                Ok(status) => {
                    statuses.insert(*id, status);
                }
                Err(error) => return Some(format!("broker {id}: {error}")),
            }
        }
        for (index, partition) in topic.partitions.iter().enumerate() {
            let index = u32::try_from(index).expect("small");
            let leader = partition.leader?;
            let mut ends = Vec::new();
            for replica in &partition.replicas {
                let Some(status) = statuses.get(replica).and_then(|all| all.iter().find(|s| s.topic == DATA_TOPIC && s.partition == index)) else {
                    return Some(format!("broker {replica} has no replica of {DATA_TOPIC}-{index} yet"));
                };
                let role_ok = if *replica == leader {
                    let mut isr = status.isr.clone();
                    isr.sort_unstable();
                    let mut replicas = partition.replicas.clone();
                    replicas.sort_unstable();
                    status.role == ReplicaRole::Leader && isr == replicas
                } else {
                    status.role == ReplicaRole::Follower { leader_id: leader }
                };
                if !role_ok || status.leader_epoch != u32::try_from(partition.leader_epoch).ok() {
                    return Some(format!("broker {replica}: {DATA_TOPIC}-{index} is {:?} epoch {:?} isr {:?}", status.role, status.leader_epoch, status.isr));
                }
                ends.push((*replica, status.log_end_offset, status.high_watermark));
            }
            let (_, end, _) = ends[0];
            if ends.iter().any(|(_, e, hw)| *e != end || *hw != end) {
                return Some(format!("{DATA_TOPIC}-{index}: (broker, log end, high watermark) = {ends:?}"));
            }
        }
        None
    }

    /// Every replica's whole log, per partition.
    pub async fn final_logs(&self) -> BTreeMap<u32, BTreeMap<u64, Vec<ReadRecord>>> {
        let metas: Vec<MetaHandle> = lock(&self.meta).values().cloned().collect();
        let repl = lock(&self.repl).clone();
        let mut logs = BTreeMap::new();
        let Some(state) = metas.first().map(|m| m.feed().current()) else { return logs };
        let Some(topic) = state.topic(DATA_TOPIC) else { return logs };
        for (index, partition) in topic.partitions.iter().enumerate() {
            let index = u32::try_from(index).expect("small");
            let mut replicas = BTreeMap::new();
            for replica in &partition.replicas {
                let Some(handle) = repl.get(replica) else { continue };
                let mut records = Vec::new();
                loop {
                    match handle.read(DATA_TOPIC, index, records.len() as u64, 1024 * 1024, ReadLimit::LogEnd).await {
                        Ok(read) if read.records.is_empty() => break,
                        Ok(read) => records.extend(read.records),
                        Err(error) => {
                            let message = format!("broker {replica} cannot read its log of {DATA_TOPIC}-{index}: {error}");
                            lock(&self.history).violate(self.clock.now_us(), checker::DATA_CONVERGENCE, message);
                            break;
                        }
                    }
                }
                replicas.insert(*replica, records);
            }
            logs.insert(index, replicas);
        }
        logs
    }
}

/// A value of `bytes` bytes that starts with `text` (padded with dots).
fn padded(mut text: String, bytes: usize) -> Vec<u8> {
    while text.len() < bytes {
        text.push('.');
    }
    text.into_bytes()
}
