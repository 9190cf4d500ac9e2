//! Request metrics of the Kafka listener, recorded by `server.rs` around each
//! request: per API key a request count, a latency histogram (hdrhistogram,
//! microseconds) and error counts by Kafka error code; plus connection
//! counts; and, recorded by the front, produce refusals per partition and
//! error code. Read as a `KafkaMetricsSnapshot` (the broker's admin endpoint
//! renders it as Prometheus text).
//!
//! One `Mutex` over a small map, held for a few integer updates per request
//! and never across an await. Label cardinality is bounded: an API key
//! kafka-protocol does not know is counted under `UNKNOWN_API_KEY`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiKey;

/// Where requests without a known API key are counted (a frame too short for
/// a header, or a key kafka-protocol does not know).
pub const UNKNOWN_API_KEY: i16 = -1;

/// Latencies are recorded in microseconds, from 1 µs to one hour (longer ones
/// count as one hour), to 3 significant digits.
const LATENCY_US_MAX: u64 = 3_600 * 1_000_000;
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// Upper bounds, in seconds, of the latency buckets a snapshot reports (a
/// final `+Inf` bucket is the request count).
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

struct ApiStats {
    requests: u64,
    errors: BTreeMap<i16, u64>,
    latency_us: Histogram<u64>,
    latency_us_sum: u128,
}

impl ApiStats {
    fn new() -> Self {
        ApiStats {
            requests: 0,
            errors: BTreeMap::new(),
            latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS).expect("valid histogram bounds"),
            latency_us_sum: 0,
        }
    }
}

/// One partition's produce refusals, and whether its last refusal for too
/// small an ISR was logged.
#[derive(Default)]
struct PartitionRefusals {
    /// Refusals by Kafka error code.
    by_error_code: BTreeMap<i16, u64>,
    /// The too-small-ISR refusal last logged (error code and message, which
    /// carries the ISR size and min.insync.replicas) and the refusals since
    /// then; cleared when the partition accepts a produce.
    isr_refusal_logged: Option<((i16, String), u64)>,
}

/// What the front should log about one partition's produce outcome: a
/// refusal for too small an ISR is logged once per partition and state (not
/// once per request of a retrying producer), and so is the first produce the
/// partition accepts again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProduceRefusalNotice {
    /// A NOT_ENOUGH_REPLICAS(_AFTER_APPEND) refusal whose reason differs from
    /// the one last logged for the partition, or the first since it accepted one.
    IsrTooSmall { error_code: i16 },
    /// The partition accepted a produce after refusing these many for too small an ISR.
    AcceptedAgain { refused: u64 },
}

impl ProduceRefusalNotice {
    /// The log message for the notice.
    pub fn message(&self) -> &'static str {
        match self {
            ProduceRefusalNotice::IsrTooSmall { .. } => "produce refused: ISR below min.insync.replicas (logged once until the ISR or the setting changes)",
            ProduceRefusalNotice::AcceptedAgain { .. } => "produce accepted again after refusals for an ISR below min.insync.replicas",
        }
    }
}

/// Produce refusals of one partition with one error code. `topic` is empty
/// and `partition` -1 for partitions the metadata does not have (so clients
/// naming random topics cannot grow the page).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProduceRefusalCount {
    pub topic: String,
    pub partition: i32,
    pub error_code: i16,
    pub refusals: u64,
}

/// The Kafka listener's counters. Cheap to share (`Arc`).
pub struct KafkaMetrics {
    apis: Mutex<BTreeMap<i16, ApiStats>>,
    /// By topic, then partition.
    produce_refusals: Mutex<BTreeMap<String, BTreeMap<i32, PartitionRefusals>>>,
    connections_accepted: AtomicU64,
    connections_open: AtomicU64,
    connections_closed_by_broker: AtomicU64,
    requests_in_flight: AtomicU64,
}

/// One API's figures at the time of the snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiMetrics {
    pub api_key: i16,
    /// kafka-protocol's name of the API (`Produce`, `ApiVersions`), or `Unknown`.
    pub api_name: String,
    pub requests: u64,
    /// (Kafka error code, requests answered with it), by code.
    pub errors: Vec<(i16, u64)>,
    /// (upper bound in seconds, requests at most that long), one per
    /// `LATENCY_BUCKETS_SECONDS`; cumulative, as Prometheus buckets are.
    pub latency_buckets: Vec<(f64, u64)>,
    pub latency_seconds_sum: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct KafkaMetricsSnapshot {
    /// By API key.
    pub apis: Vec<ApiMetrics>,
    pub connections_accepted: u64,
    pub connections_open: u64,
    /// Connections the broker closed because their stream could not go on
    /// (frame boundary lost, a response it could not encode).
    pub connections_closed_by_broker: u64,
    /// Requests read and not yet answered.
    pub requests_in_flight: u64,
    /// By topic, partition and error code.
    pub produce_refusals: Vec<ProduceRefusalCount>,
}

/// NOT_ENOUGH_REPLICAS or NOT_ENOUGH_REPLICAS_AFTER_APPEND: acks=all meets
/// an ISR smaller than min.insync.replicas.
fn is_isr_too_small(error_code: i16) -> bool {
    error_code == keel_error_codes::NOT_ENOUGH_REPLICAS || error_code == keel_error_codes::NOT_ENOUGH_REPLICAS_AFTER_APPEND
}

/// The name of an API key as kafka-protocol spells it, or `Unknown`.
pub fn api_name(api_key: i16) -> String {
    match ApiKey::try_from(api_key) {
        Ok(key) => format!("{key:?}"),
        Err(()) => "Unknown".to_string(),
    }
}

/// The name of a Kafka error code as kafka-protocol spells it (`UnsupportedVersion`), or `Unknown`.
pub fn error_name(error_code: i16) -> String {
    match ResponseError::try_from_code(error_code) {
        Some(ResponseError::Unknown(_)) | None => "Unknown".to_string(),
        Some(error) => format!("{error:?}"),
    }
}

impl Default for KafkaMetrics {
    fn default() -> Self {
        KafkaMetrics::new()
    }
}

impl KafkaMetrics {
    pub fn new() -> Self {
        KafkaMetrics {
            apis: Mutex::new(BTreeMap::new()),
            produce_refusals: Mutex::new(BTreeMap::new()),
            connections_accepted: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            connections_closed_by_broker: AtomicU64::new(0),
            requests_in_flight: AtomicU64::new(0),
        }
    }

    fn with_api<T>(&self, api_key: i16, update: impl FnOnce(&mut ApiStats) -> T) -> T {
        let api_key = if ApiKey::try_from(api_key).is_ok() { api_key } else { UNKNOWN_API_KEY };
        let mut apis = self.apis.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        update(apis.entry(api_key).or_insert_with(ApiStats::new))
    }

    /// One answered request: how long it took and the request-level error
    /// code it was answered with, if any.
    pub fn record_request(&self, api_key: i16, latency: Duration, error_code: Option<i16>) {
        let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.with_api(api_key, |stats| {
            stats.requests += 1;
            stats.latency_us.saturating_record(latency_us.clamp(1, LATENCY_US_MAX));
            stats.latency_us_sum += u128::from(latency_us);
            if let Some(code) = error_code {
                *stats.errors.entry(code).or_insert(0) += 1;
            }
        });
    }

    /// An error answered inside a response (a partition's or topic's error
    /// code), for the request handlers to report; counted with the request-level ones.
    pub fn record_error(&self, api_key: i16, error_code: i16) {
        self.with_api(api_key, |stats| *stats.errors.entry(error_code).or_insert(0) += 1);
    }

    /// One partition's answer to a produce: accepted (`None`) or refused with
    /// a Kafka error code and message. `known` says whether the partition is
    /// in the metadata (refusals of unknown ones are counted together).
    /// Returns what to log, if anything.
    pub fn record_produce_outcome(&self, topic: &str, partition: i32, known: bool, refusal: Option<(i16, &str)>) -> Option<ProduceRefusalNotice> {
        let (topic, partition) = if known { (topic, partition) } else { ("", -1) };
        let mut topics = self.produce_refusals.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some((error_code, message)) = refusal else {
            // Accepted: only a partition that has refused before has an entry.
            let stats = topics.get_mut(topic)?.get_mut(&partition)?;
            let (_, refused) = stats.isr_refusal_logged.take()?;
            return Some(ProduceRefusalNotice::AcceptedAgain { refused });
        };
        if !topics.contains_key(topic) {
            topics.insert(topic.to_string(), BTreeMap::new());
        }
        let stats = topics.get_mut(topic).expect("inserted above").entry(partition).or_default();
        *stats.by_error_code.entry(error_code).or_insert(0) += 1;
        if !is_isr_too_small(error_code) {
            return None;
        }
        match &mut stats.isr_refusal_logged {
            Some((reason, refused)) if reason.0 == error_code && reason.1 == message => {
                *refused += 1;
                None
            }
            logged => {
                *logged = Some(((error_code, message.to_string()), 1));
                Some(ProduceRefusalNotice::IsrTooSmall { error_code })
            }
        }
    }

    /// A connection was accepted; it counts as open until the guard is dropped.
    pub fn connection_opened(self: &Arc<Self>) -> OpenConnection {
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        OpenConnection { metrics: Arc::clone(self) }
    }

    /// A request was read; it counts as in flight until the guard is dropped.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.requests_in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { metrics: Arc::clone(self) }
    }

    pub fn connection_closed_by_broker(&self) {
        self.connections_closed_by_broker.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> KafkaMetricsSnapshot {
        let apis = self.apis.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let apis = apis
            .iter()
            .map(|(api_key, stats)| ApiMetrics {
                api_key: *api_key,
                api_name: api_name(*api_key),
                requests: stats.requests,
                errors: stats.errors.iter().map(|(code, count)| (*code, *count)).collect(),
                latency_buckets: LATENCY_BUCKETS_SECONDS
                    .iter()
                    .map(|le_seconds| {
                        let le_us = (le_seconds * 1_000_000.0) as u64;
                        (*le_seconds, stats.latency_us.count_between(1, le_us))
                    })
                    .collect(),
                latency_seconds_sum: stats.latency_us_sum as f64 / 1_000_000.0,
            })
            .collect();
        let topics = self.produce_refusals.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let produce_refusals = topics
            .iter()
            .flat_map(|(topic, partitions)| {
                partitions.iter().flat_map(move |(partition, stats)| {
                    stats.by_error_code.iter().map(move |(error_code, refusals)| ProduceRefusalCount {
                        topic: topic.clone(),
                        partition: *partition,
                        error_code: *error_code,
                        refusals: *refusals,
                    })
                })
            })
            .collect();
        KafkaMetricsSnapshot {
            apis,
            produce_refusals,
            connections_accepted: self.connections_accepted.load(Ordering::Relaxed),
            connections_open: self.connections_open.load(Ordering::Relaxed),
            connections_closed_by_broker: self.connections_closed_by_broker.load(Ordering::Relaxed),
            requests_in_flight: self.requests_in_flight.load(Ordering::Relaxed),
        }
    }
}

/// An open connection, counted until dropped.
pub struct OpenConnection {
    metrics: Arc<KafkaMetrics>,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request in flight, counted until dropped.
pub struct InFlight {
    metrics: Arc<KafkaMetrics>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.metrics.requests_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_latencies_and_errors_are_counted_per_api() {
        use keel_error_codes::{NOT_LEADER_OR_FOLLOWER, UNSUPPORTED_VERSION};
        let metrics = Arc::new(KafkaMetrics::new());
        let produce = ApiKey::Produce as i16;
        metrics.record_request(produce, Duration::from_micros(300), None);
        metrics.record_request(produce, Duration::from_millis(20), Some(UNSUPPORTED_VERSION));
        metrics.record_request(produce, Duration::from_secs(7200), None);
        metrics.record_error(produce, NOT_LEADER_OR_FOLLOWER);
        metrics.record_request(9_999, Duration::from_millis(1), Some(UNSUPPORTED_VERSION));
        let connection = metrics.connection_opened();
        let request = metrics.request_started();
        let snapshot = metrics.snapshot();
        assert_eq!((snapshot.connections_open, snapshot.requests_in_flight), (1, 1));
        drop((connection, request));
        assert_eq!((metrics.snapshot().connections_open, metrics.snapshot().requests_in_flight), (0, 0));
        assert_eq!(metrics.snapshot().connections_accepted, 1);

        let unknown = &snapshot.apis[0];
        assert_eq!((unknown.api_key, unknown.api_name.as_str(), unknown.requests), (UNKNOWN_API_KEY, "Unknown", 1));
        let produced = &snapshot.apis[1];
        assert_eq!((produced.api_key, produced.api_name.as_str(), produced.requests), (produce, "Produce", 3));
        assert_eq!(produced.errors, vec![(NOT_LEADER_OR_FOLLOWER, 1), (UNSUPPORTED_VERSION, 1)]);
        let bucket = |le: f64| produced.latency_buckets.iter().find(|(bound, _)| *bound == le).map(|(_, count)| *count);
        assert_eq!(bucket(0.0005), Some(1));
        assert_eq!(bucket(0.025), Some(2));
        assert_eq!(bucket(30.0), Some(2), "the two-hour request is only in +Inf");
        assert!(produced.latency_buckets.windows(2).all(|w| w[0].1 <= w[1].1), "buckets are cumulative");
        assert!((produced.latency_seconds_sum - 7200.0203).abs() < 1e-6, "{}", produced.latency_seconds_sum);
        assert_eq!(error_name(UNSUPPORTED_VERSION), "UnsupportedVersion");
    }

    #[test]
    fn produce_refusals_are_counted_per_partition_and_code_and_a_too_small_isr_is_noticed_once_per_state() {
        use keel_error_codes::{NOT_ENOUGH_REPLICAS, NOT_ENOUGH_REPLICAS_AFTER_APPEND, NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION};
        let metrics = KafkaMetrics::new();
        let isr_1_of_2 = "NOT_ENOUGH_REPLICAS: the ISR has 1 members, min.insync.replicas is 2; nothing was appended";
        let isr_1_of_3 = "NOT_ENOUGH_REPLICAS: the ISR has 1 members, min.insync.replicas is 3; nothing was appended";
        assert_eq!(metrics.record_produce_outcome("orders", 0, true, None), None, "an accepted produce with no refusal before is not news");
        let refuse = |message| metrics.record_produce_outcome("orders", 0, true, Some((NOT_ENOUGH_REPLICAS, message)));
        assert_eq!(refuse(isr_1_of_2), Some(ProduceRefusalNotice::IsrTooSmall { error_code: NOT_ENOUGH_REPLICAS }));
        for _ in 0..5 {
            assert_eq!(refuse(isr_1_of_2), None, "a retrying producer's flood is not logged again");
        }
        assert_eq!(refuse(isr_1_of_3), Some(ProduceRefusalNotice::IsrTooSmall { error_code: NOT_ENOUGH_REPLICAS }), "the setting changed");
        assert_eq!(refuse(isr_1_of_3), None);
        assert!(metrics.record_produce_outcome("orders", 1, true, Some((NOT_ENOUGH_REPLICAS, isr_1_of_3))).is_some(), "another partition");
        assert_eq!(metrics.record_produce_outcome("orders", 0, true, Some((NOT_LEADER_OR_FOLLOWER, "not the leader"))), None);
        assert_eq!(metrics.record_produce_outcome("orders", 0, true, None), Some(ProduceRefusalNotice::AcceptedAgain { refused: 2 }));
        assert_eq!(metrics.record_produce_outcome("orders", 0, true, None), None, "noticed once");
        assert_eq!(refuse(isr_1_of_3), Some(ProduceRefusalNotice::IsrTooSmall { error_code: NOT_ENOUGH_REPLICAS }), "the ISR shrank again");
        assert_eq!(
            metrics.record_produce_outcome("orders", 0, true, Some((NOT_ENOUGH_REPLICAS_AFTER_APPEND, "appended, but the ISR shrank"))),
            Some(ProduceRefusalNotice::IsrTooSmall { error_code: NOT_ENOUGH_REPLICAS_AFTER_APPEND })
        );
        for name in ["typo-1", "typo-2"] {
            assert_eq!(metrics.record_produce_outcome(name, 7, false, Some((UNKNOWN_TOPIC_OR_PARTITION, "no such topic"))), None);
        }

        let count = |topic: &str, partition: i32, error_code: i16| ProduceRefusalCount { topic: topic.to_string(), partition, error_code, refusals: 0 };
        let expected = [
            (count("", -1, UNKNOWN_TOPIC_OR_PARTITION), 2),
            (count("orders", 0, NOT_LEADER_OR_FOLLOWER), 1),
            (count("orders", 0, NOT_ENOUGH_REPLICAS), 9),
            (count("orders", 0, NOT_ENOUGH_REPLICAS_AFTER_APPEND), 1),
            (count("orders", 1, NOT_ENOUGH_REPLICAS), 1),
        ]
        .map(|(count, refusals)| ProduceRefusalCount { refusals, ..count });
        assert_eq!(metrics.snapshot().produce_refusals, expected);
    }
}
