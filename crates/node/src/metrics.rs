//! `GET /metrics`: this node's metadata Raft status, its partition replicas
//! and its Kafka listener's request metrics, as Prometheus text.

use keel_kafka::metrics::{error_name, KafkaMetricsSnapshot};
use keel_meta::driver::MetaStatus;
use keel_meta::MetadataState;
use keel_repl::driver::{ReplicaRole, ReplicaStatus};

use crate::prometheus::{Exposition, Kind};

/// What one page is made of (gathered by the admin endpoint).
pub struct NodeMetrics<'a> {
    pub cluster_id: &'a str,
    pub ready: bool,
    pub meta: &'a MetaStatus,
    /// This node's replicas, or None if the replication loop did not answer.
    pub replicas: Option<&'a [ReplicaStatus]>,
    /// The applied metadata: a follower's ISR size comes from it.
    pub metadata: &'a MetadataState,
    pub kafka: &'a KafkaMetricsSnapshot,
}

pub fn render(node: &NodeMetrics<'_>) -> String {
    let mut page = Exposition::new();
    let node_id = node.meta.node_id.to_string();
    page.family("keel_node_info", Kind::Gauge, "Always 1; labels name this node, its cluster and the keel version.");
    page.sample("keel_node_info", &[("node_id", &node_id), ("cluster_id", node.cluster_id), ("version", env!("CARGO_PKG_VERSION"))], 1u64);
    page.family("keel_node_ready", Kind::Gauge, "1 when GET /readyz answers 200: registered, a metadata leader known, caught up, not draining.");
    page.sample("keel_node_ready", &[], node.ready);
    page.family("keel_node_registered", Kind::Gauge, "1 when this node is registered in the metadata with its current incarnation and not fenced.");
    page.sample("keel_node_registered", &[], node.meta.registered);

    let meta = node.meta;
    page.family("keel_raft_term", Kind::Gauge, "Current term of the metadata Raft group, as this node sees it.");
    page.sample("keel_raft_term", &[], meta.term);
    page.family("keel_raft_commit_index", Kind::Gauge, "Highest metadata Raft log index this node knows committed.");
    page.sample("keel_raft_commit_index", &[], meta.commit_index);
    page.family("keel_raft_applied_index", Kind::Gauge, "Highest metadata Raft log index this node applied.");
    page.sample("keel_raft_applied_index", &[], meta.applied_index);
    page.family("keel_raft_leader_id", Kind::Gauge, "Node id of the metadata Raft leader this node knows; 0 when none is known.");
    page.sample("keel_raft_leader_id", &[], meta.leader_id.unwrap_or(0));
    page.family("keel_raft_is_leader", Kind::Gauge, "1 when this node is the metadata Raft leader (the controller).");
    page.sample("keel_raft_is_leader", &[], meta.is_leader);
    page.family("keel_metadata_version", Kind::Gauge, "Metadata version this node applied (one per applied command).");
    page.sample("keel_metadata_version", &[], meta.metadata_version);

    page.family("keel_replication_status_ok", Kind::Gauge, "1 when the replication loop answered for this page (the keel_partition_* series are present).");
    page.sample("keel_replication_status_ok", &[], node.replicas.is_some());
    let replicas = node.replicas.unwrap_or(&[]);
    let labels: Vec<(String, String)> = replicas.iter().map(|r| (r.topic.clone(), r.partition.to_string())).collect();
    let gauge = |page: &mut Exposition, name: &str, help: &str, value: &dyn Fn(&ReplicaStatus) -> Option<u64>| {
        page.family(name, Kind::Gauge, help);
        for (replica, (topic, partition)) in replicas.iter().zip(&labels) {
            if let Some(value) = value(replica) {
                page.sample(name, &[("topic", topic), ("partition", partition)], value);
            }
        }
    };
    gauge(&mut page, "keel_partition_high_watermark", "High watermark of this node's replica: consumers read below it.", &|r| Some(r.high_watermark));
    gauge(&mut page, "keel_partition_log_end_offset", "Offset the next record appended to this node's replica gets.", &|r| Some(r.log_end_offset));
    gauge(&mut page, "keel_partition_log_start_offset", "First offset still in this node's replica.", &|r| Some(r.log_start_offset));
    gauge(
        &mut page,
        "keel_partition_isr_size",
        "In-sync replicas: as the leader acts on them on the leader, from the applied metadata elsewhere.",
        &|r| match r.role {
            ReplicaRole::Leader => Some(r.isr.len() as u64),
            _ => node.metadata.partition(&r.topic, r.partition).map(|p| p.isr.len() as u64),
        },
    );
    gauge(&mut page, "keel_partition_is_leader", "1 when this node leads the partition.", &|r| Some(u64::from(r.role == ReplicaRole::Leader)));
    gauge(&mut page, "keel_partition_leader_epoch", "Leader epoch this node's replica acts in (absent while idle).", &|r| r.leader_epoch.map(u64::from));

    let kafka = node.kafka;
    let api_labels: Vec<(String, String)> = kafka.apis.iter().map(|a| (a.api_name.clone(), a.api_key.to_string())).collect();
    page.family("keel_kafka_requests_total", Kind::Counter, "Kafka requests answered (or closed on), by API.");
    for (api, (name, key)) in kafka.apis.iter().zip(&api_labels) {
        page.sample("keel_kafka_requests_total", &[("api", name), ("api_key", key)], api.requests);
    }
    page.family(
        "keel_kafka_request_errors_total",
        Kind::Counter,
        "Kafka requests answered with a request-level error code (unsupported version, too large, undecodable), by API and code.",
    );
    for (api, (name, key)) in kafka.apis.iter().zip(&api_labels) {
        for (code, count) in &api.errors {
            let (code_text, error) = (code.to_string(), error_name(*code));
            page.sample("keel_kafka_request_errors_total", &[("api", name), ("api_key", key), ("error_code", &code_text), ("error", &error)], *count);
        }
    }
    page.family(
        "keel_kafka_produce_refusals_total",
        Kind::Counter,
        "Partitions of produce requests refused, by topic, partition and Kafka error code (partitions the metadata does not have: topic=\"\", partition=\"-1\").",
    );
    for refusal in &kafka.produce_refusals {
        let (partition, code_text, error) = (refusal.partition.to_string(), refusal.error_code.to_string(), error_name(refusal.error_code));
        let labels = [("topic", refusal.topic.as_str()), ("partition", &partition), ("error_code", &code_text), ("error", &error)];
        page.sample("keel_kafka_produce_refusals_total", &labels, refusal.refusals);
    }
    page.family("keel_kafka_request_duration_seconds", Kind::Histogram, "Kafka request latency, from the whole request read to the response written, by API.");
    for (api, (name, key)) in kafka.apis.iter().zip(&api_labels) {
        for (le, count) in &api.latency_buckets {
            let le = le.to_string();
            page.sample("keel_kafka_request_duration_seconds_bucket", &[("api", name), ("api_key", key), ("le", &le)], *count);
        }
        page.sample("keel_kafka_request_duration_seconds_bucket", &[("api", name), ("api_key", key), ("le", "+Inf")], api.requests);
        page.sample("keel_kafka_request_duration_seconds_sum", &[("api", name), ("api_key", key)], api.latency_seconds_sum);
        page.sample("keel_kafka_request_duration_seconds_count", &[("api", name), ("api_key", key)], api.requests);
    }
    page.family("keel_kafka_requests_in_flight", Kind::Gauge, "Kafka requests read and not yet answered.");
    page.sample("keel_kafka_requests_in_flight", &[], kafka.requests_in_flight);
    page.family("keel_kafka_connections_open", Kind::Gauge, "Kafka client connections open now.");
    page.sample("keel_kafka_connections_open", &[], kafka.connections_open);
    page.family("keel_kafka_connections_accepted_total", Kind::Counter, "Kafka client connections accepted.");
    page.sample("keel_kafka_connections_accepted_total", &[], kafka.connections_accepted);
    page.family("keel_kafka_connections_closed_by_broker_total", Kind::Counter, "Kafka connections the broker closed because the stream could not go on.");
    page.sample("keel_kafka_connections_closed_by_broker_total", &[], kafka.connections_closed_by_broker);
    page.finish()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use keel_error_codes::{NOT_ENOUGH_REPLICAS, UNSUPPORTED_VERSION};
    use keel_kafka::metrics::KafkaMetrics;

    use super::*;

    #[test]
    fn every_sample_follows_its_help_and_type_lines() {
        let metrics = Arc::new(KafkaMetrics::new());
        metrics.record_request(0, Duration::from_millis(3), None);
        metrics.record_request(1, Duration::from_millis(3), Some(UNSUPPORTED_VERSION));
        metrics.record_produce_outcome("orders", 2, true, Some((NOT_ENOUGH_REPLICAS, "NOT_ENOUGH_REPLICAS: the ISR has 1 members, min.insync.replicas is 2")));
        let meta = MetaStatus {
            node_id: 2,
            term: 4,
            is_leader: false,
            leader_id: Some(1),
            commit_index: 10,
            applied_index: 9,
            metadata_version: 7,
            ready: false,
            registered: true,
        };
        let replicas = vec![ReplicaStatus {
            topic: "or\"ders".into(),
            partition: 0,
            role: ReplicaRole::Leader,
            leader_epoch: Some(3),
            log_start_offset: 0,
            log_end_offset: 12,
            durable_end_offset: 12,
            high_watermark: 11,
            isr: vec![1, 2],
        }];
        let page = render(&NodeMetrics {
            cluster_id: "c",
            ready: false,
            meta: &meta,
            replicas: Some(&replicas),
            metadata: &MetadataState::default(),
            kafka: &metrics.snapshot(),
        });
        assert!(page.contains("keel_partition_high_watermark{topic=\"or\\\"ders\",partition=\"0\"} 11\n"), "{page}");
        assert!(page.contains("keel_partition_isr_size{topic=\"or\\\"ders\",partition=\"0\"} 2\n"), "{page}");
        assert!(page.contains("keel_raft_leader_id 1\n"));
        assert!(
            page.contains(&format!(
                "keel_kafka_request_errors_total{{api=\"Fetch\",api_key=\"1\",error_code=\"{UNSUPPORTED_VERSION}\",error=\"UnsupportedVersion\"}} 1\n"
            )),
            "{page}"
        );
        assert!(page.contains("keel_kafka_request_duration_seconds_bucket{api=\"Produce\",api_key=\"0\",le=\"0.005\"} 1\n"), "{page}");
        assert!(
            page.contains(&format!(
                "keel_kafka_produce_refusals_total{{topic=\"orders\",partition=\"2\",error_code=\"{NOT_ENOUGH_REPLICAS}\",error=\"NotEnoughReplicas\"}} 1\n"
            )),
            "{page}"
        );
        let mut declared = std::collections::BTreeSet::new();
        for line in page.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().expect("name").to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().expect("name");
                let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).filter(|f| declared.contains(*f)).unwrap_or(name);
                assert!(declared.contains(family), "{name} before its # TYPE line");
            }
        }
    }
}
