//! `NodeConfig`: every setting of a broker node, stated once with its
//! default. `keel start` maps its flags, `KEEL_*` variables and config file
//! keys onto it (same names); a simulator scenario's `[node]` table sets
//! the same keys. Defaults that belong to a component (Raft timing, log
//! segments, replication, Kafka, groups) are read from that component, so
//! each value is written in one place.
//!
//! What the world gives a node rather than configures (its id, the
//! cluster, the voters' addresses, what it advertises, its rack) is
//! `NodeIdentity`; the seams (clock, disk, RNG, incarnation id) are
//! `crate::Seams`.

use std::collections::BTreeMap;

use keel_kafka::KafkaConfig;
use keel_log::LogConfig;
use keel_meta::raft_node::RaftTiming;
use keel_repl::driver::ReplConfig;
use serde::{Deserialize, Serialize};

/// Who a node is and where its peers are: given by the operator (flags) or
/// the simulated world (host addresses), never defaulted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    pub node_id: u64,
    pub cluster_id: String,
    /// Every metadata voter's id and broker-to-broker `host:port`, this node included.
    pub voters: BTreeMap<u64, String>,
    /// What this broker registers for Kafka clients.
    pub advertised_host: String,
    pub advertised_port: u16,
    /// For rack-aware replica placement.
    pub rack: Option<String>,
}

impl NodeIdentity {
    /// The only voter of its own cluster, advertising `host` (a
    /// single-node broker, as the tests and the fuzz harness run it); its
    /// broker listener is bound wherever the caller's `Listeners` are.
    pub fn alone(cluster_id: &str, host: &str) -> NodeIdentity {
        NodeIdentity {
            node_id: 1,
            cluster_id: cluster_id.to_string(),
            voters: [(1, format!("{host}:0"))].into_iter().collect(),
            advertised_host: host.to_string(),
            advertised_port: 9092,
            rack: None,
        }
    }
}

/// A node's tunable settings. The TOML keys are the field names (as in
/// `keel start --config`); a missing key keeps its default; an unknown key
/// is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Raft tick of the metadata group, in milliseconds of the node's clock.
    pub raft_tick_ms: u64,
    /// A metadata leader heartbeats every this many ticks.
    pub raft_heartbeat_ticks: usize,
    /// Election timeouts are drawn from `[election_ticks, 2 * election_ticks)` ticks.
    pub raft_election_ticks: usize,
    /// A metadata proposal not applied within this long fails (retriable).
    pub proposal_timeout_ms: u64,
    /// A broker silent to the metadata leader for longer than this is fenced.
    pub registration_lease_ms: u64,
    /// The metadata Raft log is snapshotted and compacted after this many applied entries.
    pub metadata_compact_after_entries: u64,
    /// Segment size of the metadata Raft log.
    pub metadata_segment_bytes: u64,
    /// Segment size of partition logs (Kafka's `log.segment.bytes`).
    pub log_segment_bytes: u64,
    /// ISR size acks=all needs for topics that do not set `min.insync.replicas`.
    pub min_insync_replicas: usize,
    /// A follower not caught up for this long leaves the ISR (Kafka's `replica.lag.time.max.ms`).
    pub replica_lag_time_max_ms: u64,
    /// Bytes a follower asks for per fetch (Kafka's `replica.fetch.max.bytes`).
    pub replica_fetch_max_bytes: u32,
    /// A partition leader holds a follower's fetch with nothing new for at most this long.
    pub replica_fetch_wait_max_ms: u64,
    /// Produce and read requests queued for the replication loop; a full queue answers busy.
    pub produce_queue_len: usize,
    /// Kafka's `auto.create.topics.enable`: a Metadata request for an unknown topic creates it.
    pub auto_create_topics: bool,
    /// Kafka's `num.partitions`: partitions of an auto-created topic.
    pub num_partitions: u32,
    /// Kafka's `default.replication.factor`: replicas of an auto-created topic.
    pub default_replication_factor: u32,
    /// Kafka's `socket.request.max.bytes`: larger request frames are refused.
    pub socket_request_max_bytes: usize,
    /// How often a parked Kafka fetch looks for new records.
    pub fetch_poll_interval_ms: u64,
    /// The longest a Kafka fetch is held, whatever the client asks.
    pub fetch_wait_max_ms: u64,
    /// How long a topic create (CreateTopics, auto-create, the admin endpoint) keeps retrying retriable errors.
    pub create_topic_timeout_ms: u64,
    /// Kafka's `group.min.session.timeout.ms`.
    pub group_min_session_timeout_ms: u64,
    /// Kafka's `group.max.session.timeout.ms`.
    pub group_max_session_timeout_ms: u64,
    /// Kafka's `group.initial.rebalance.delay.ms`: the first rebalance of an empty group waits this long for more members.
    pub group_initial_rebalance_delay_ms: u64,
    /// On a graceful stop, requests in flight get this long to finish before their connections are cut.
    pub drain_timeout_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        let raft = RaftTiming::default();
        let log = LogConfig::default();
        let repl = ReplConfig::new(0, 0);
        let kafka = KafkaConfig::new(0, "");
        let group = keel_group::Config::default();
        NodeConfig {
            raft_tick_ms: raft.tick_ms,
            raft_heartbeat_ticks: raft.heartbeat_ticks,
            raft_election_ticks: raft.election_ticks,
            proposal_timeout_ms: 5_000,
            registration_lease_ms: 3_000,
            metadata_compact_after_entries: keel_meta::node::COMPACT_AFTER_ENTRIES,
            metadata_segment_bytes: log.segment_bytes_max,
            log_segment_bytes: repl.log_config.segment_bytes_max,
            min_insync_replicas: repl.min_insync_replicas_default,
            replica_lag_time_max_ms: repl.replica_lag_time_max_ms,
            replica_fetch_max_bytes: repl.fetch_bytes_max,
            replica_fetch_wait_max_ms: repl.fetch_wait_ms_max,
            produce_queue_len: repl.produce_queue_len,
            auto_create_topics: kafka.auto_create_topics,
            num_partitions: kafka.default_partitions,
            default_replication_factor: kafka.default_replication_factor,
            socket_request_max_bytes: kafka.frame_bytes_max,
            fetch_poll_interval_ms: kafka.fetch_poll_interval_ms,
            fetch_wait_max_ms: kafka.fetch_wait_ms_max,
            create_topic_timeout_ms: kafka.create_budget_ms,
            group_min_session_timeout_ms: group.group_min_session_timeout_ms,
            group_max_session_timeout_ms: group.group_max_session_timeout_ms,
            group_initial_rebalance_delay_ms: group.group_initial_rebalance_delay_ms,
            drain_timeout_ms: 10_000,
        }
    }
}

/// Smaller segments would roll on nearly every append.
const SEGMENT_BYTES_MIN: u64 = 4096;

/// A setting that cannot work, with what to write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key} = {value}: {fix}")]
pub struct ConfigError {
    pub key: &'static str,
    pub value: String,
    pub fix: &'static str,
}

impl NodeConfig {
    /// Every TOML key, sorted.
    pub fn keys() -> Vec<String> {
        let table = toml::Table::try_from(NodeConfig::default()).expect("the defaults serialize as a TOML table");
        table.keys().cloned().collect()
    }

    /// The settings as `key = value` TOML lines (what `--print-config` shows).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("node settings serialize as TOML")
    }

    /// Parses a TOML table of settings over the defaults.
    pub fn from_toml_table(table: toml::Table) -> Result<NodeConfig, String> {
        toml::Value::Table(table).try_into().map_err(|error: toml::de::Error| error.to_string().trim_end().to_string())
    }

    /// Refuses settings no node can run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive: [(&'static str, u64); 13] = [
            ("raft_tick_ms", self.raft_tick_ms),
            ("raft_heartbeat_ticks", self.raft_heartbeat_ticks as u64),
            ("proposal_timeout_ms", self.proposal_timeout_ms),
            ("registration_lease_ms", self.registration_lease_ms),
            ("min_insync_replicas", self.min_insync_replicas as u64),
            ("replica_lag_time_max_ms", self.replica_lag_time_max_ms),
            ("produce_queue_len", self.produce_queue_len as u64),
            ("num_partitions", u64::from(self.num_partitions)),
            ("default_replication_factor", u64::from(self.default_replication_factor)),
            ("fetch_poll_interval_ms", self.fetch_poll_interval_ms),
            ("create_topic_timeout_ms", self.create_topic_timeout_ms),
            ("replica_fetch_max_bytes", u64::from(self.replica_fetch_max_bytes)),
            ("socket_request_max_bytes", self.socket_request_max_bytes as u64),
        ];
        if let Some((key, value)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError { key, value: value.to_string(), fix: "must be at least 1" });
        }
        if self.raft_election_ticks <= self.raft_heartbeat_ticks {
            return Err(ConfigError {
                key: "raft_election_ticks",
                value: self.raft_election_ticks.to_string(),
                fix: "must exceed raft_heartbeat_ticks (a follower must hear several heartbeats per election timeout)",
            });
        }
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms {
            return Err(ConfigError {
                key: "group_min_session_timeout_ms",
                value: self.group_min_session_timeout_ms.to_string(),
                fix: "must not exceed group_max_session_timeout_ms",
            });
        }
        for (key, bytes) in [("metadata_segment_bytes", self.metadata_segment_bytes), ("log_segment_bytes", self.log_segment_bytes)] {
            if bytes < SEGMENT_BYTES_MIN {
                return Err(ConfigError { key, value: bytes.to_string(), fix: "segments are at least 4096 bytes" });
            }
        }
        Ok(())
    }

    pub fn raft_timing(&self) -> RaftTiming {
        RaftTiming { tick_ms: self.raft_tick_ms, heartbeat_ticks: self.raft_heartbeat_ticks, election_ticks: self.raft_election_ticks }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_round_trip_through_toml_and_a_partial_table_keeps_the_rest() {
        let defaults = NodeConfig::default();
        let table: toml::Table = defaults.to_toml().parse().expect("valid TOML");
        assert_eq!(NodeConfig::from_toml_table(table), Ok(defaults.clone()));
        let partial: toml::Table = "registration_lease_ms = 1234\n".parse().expect("valid TOML");
        let config = NodeConfig::from_toml_table(partial).expect("a known key");
        assert_eq!(config.registration_lease_ms, 1234);
        assert_eq!(NodeConfig { registration_lease_ms: defaults.registration_lease_ms, ..config }, defaults);
        assert!(defaults.validate().is_ok());
    }

    #[test]
    fn unknown_keys_and_impossible_values_are_refused_with_the_fix() {
        let unknown: toml::Table = "retention_hours = 5\n".parse().expect("valid TOML");
        let error = NodeConfig::from_toml_table(unknown).expect_err("unknown key");
        assert!(error.contains("retention_hours"), "{error}");
        let zero = NodeConfig { produce_queue_len: 0, ..NodeConfig::default() };
        assert_eq!(zero.validate().expect_err("zero").key, "produce_queue_len");
        let ticks = NodeConfig { raft_election_ticks: 2, raft_heartbeat_ticks: 2, ..NodeConfig::default() };
        assert_eq!(ticks.validate().expect_err("ticks").key, "raft_election_ticks");
    }

    #[test]
    fn every_key_is_documented_in_the_example_config() {
        let example = include_str!("../../../broker/keel.example.toml");
        for key in NodeConfig::keys() {
            assert!(example.contains(&format!("{key} =")), "broker/keel.example.toml does not show `{key}`");
        }
    }
}
