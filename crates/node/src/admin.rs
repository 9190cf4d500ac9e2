//! The admin endpoint: a small HTTP/1.1 server for operators and tests.
//!
//!   GET  /healthz                                  200 while the process serves
//!   GET  /readyz                                   200 when registered, a metadata leader is known and this
//!                                                  node caught up (and it is not draining); else 503 with reasons
//!   GET  /metrics                                  Prometheus text: Raft, partitions, Kafka requests
//!   GET  /status                                   this node's metadata status (JSON)
//!   GET  /topics                                   topics with partitions, leaders, epochs, ISR
//!   GET  /topics?consistency=linearizable          the same, after a Raft ReadIndex (never stale)
//!   POST /topics/NAME?partitions=N&replication_factor=R[&min_insync_replicas=M]
//!                                                  create a topic (any node; forwarded to the leader)
//!   POST /produce/TOPIC/PARTITION?acks=all|1|0[&timeout_ms=T][&leader_epoch=E][&batch_crc=C]
//!                                                  append the body's lines as records (this node must lead)
//!   GET  /records/TOPIC/PARTITION?offset=N[&max_bytes=B][&upto=log_end]
//!                                                  read this node's replica (below its high watermark by default)
//!   GET  /replicas                                 this node's partition replicas: role, epoch, offsets, ISR
//!
//! The produce and read paths are the internal replication API (operators'
//! and tests' probes beside the Kafka listener): errors carry Kafka's error
//! code. One request per
//! connection; requests are bounded in size; bad requests get a 4xx with a
//! JSON error, and the server keeps serving. On stop it stops accepting and
//! hands back its open connections for the caller to drain.

use std::sync::Arc;
use std::time::Duration;

use keel_kafka::front::warn_if_min_insync_above_replication_factor;
use keel_kafka::metrics::KafkaMetrics;
use keel_kafka::server::StopSignal;
use keel_meta::admin_ops::{MetaOpError, TopicCreate};
use keel_meta::driver::MetaHandle;
use keel_meta::driver::MetaStatus;
use keel_meta::MetadataError;
use keel_repl::driver::{Acks, ProduceRequest, ReadLimit, ReplHandle, ReplicaRole, MIN_INSYNC_REPLICAS_CONFIG};
use keel_repl::ReplError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::metrics::{render, NodeMetrics};
use crate::prometheus;

const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// A produce body (the records) may be at most this large.
const BODY_BYTES_MAX: usize = 1024 * 1024;
/// Bytes a read returns at most.
const READ_BYTES_MAX: usize = 1024 * 1024;

/// How long a linearizable read keeps retrying retriable errors (no leader yet, leader change).
const LINEARIZABLE_READ_BUDGET_MS: u64 = 15_000;

const JSON: &str = "application/json";

/// What the admin endpoint serves from.
#[derive(Clone)]
pub struct AdminState {
    pub meta: MetaHandle,
    pub repl: ReplHandle,
    pub cluster_id: String,
    /// The Kafka listener's request metrics.
    pub kafka_metrics: Arc<KafkaMetrics>,
    /// Fired when the node starts draining (it is no longer ready).
    pub draining: StopSignal,
    /// The bound listeners as JSON (what `listeners.json` in the data dir holds).
    pub listeners: String,
    /// How long a create keeps retrying retriable errors (no leader yet, leader change).
    pub create_topic_timeout_ms: u64,
}

/// Serves until `stop` fires; then stops accepting and returns the
/// connections still open (to drain with `keel_kafka::server::drain_tasks`).
pub async fn serve(listener: TcpListener, node: AdminState, stop: StopSignal) -> Vec<JoinHandle<()>> {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.stopped() => return connections,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                connections.retain(|connection| !connection.is_finished());
                connections.push(tokio::spawn(handle_connection(stream, node.clone())));
            }
            Err(error) => tracing::warn!(%error, "admin accept failed"),
        }
    }
}

/// Why this node is not ready (empty when it is): what `/readyz` says.
pub fn not_ready_reasons(status: &MetaStatus, draining: bool) -> Vec<String> {
    let mut reasons = Vec::new();
    if draining {
        reasons.push("draining: the node is shutting down".to_string());
    }
    if status.leader_id.is_none() {
        reasons.push("no metadata Raft leader is known".to_string());
    } else if !status.ready {
        reasons.push(format!("catching up: metadata applied to index {} of {} committed", status.applied_index, status.commit_index));
    }
    if !status.registered {
        reasons.push("not registered in the metadata (registration pending, or fenced)".to_string());
    }
    reasons
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn error_body(message: &str) -> String {
    format!("{{\"error\":{}}}", json_string(message))
}

async fn respond(stream: &mut TcpStream, code: u16, body: &str) {
    respond_as(stream, code, JSON, body).await
}

async fn respond_as(stream: &mut TcpStream, code: u16, content_type: &str, body: &str) {
    let reason = match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let response = format!("HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    // Flushed before the close: a buffered stream (the simulated one) would
    // otherwise never send it.
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}

async fn read_more(stream: &mut TcpStream, request: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 16 * 1024];
    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
        Ok(Ok(0)) | Err(_) | Ok(Err(_)) => false,
        Ok(Ok(n)) => {
            request.extend_from_slice(&buf[..n]);
            true
        }
    }
}

async fn handle_connection(mut stream: TcpStream, node: AdminState) {
    let mut request = Vec::new();
    let head_end = loop {
        if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if request.len() > REQUEST_BYTES_MAX {
            return respond(&mut stream, 413, &error_body("request head larger than 8 KiB")).await;
        }
        if !read_more(&mut stream, &mut request).await {
            return;
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).to_string();
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let content_length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value.trim().parse::<usize>());
    let body_len = match content_length {
        None => 0,
        Some(Ok(len)) if len <= BODY_BYTES_MAX => len,
        Some(Ok(_)) => return respond(&mut stream, 413, &error_body("request body larger than 1 MiB")).await,
        Some(Err(_)) => return respond(&mut stream, 400, &error_body("Content-Length is not a number")).await,
    };
    let body_start = head_end + 4;
    while request.len() < body_start + body_len {
        if !read_more(&mut stream, &mut request).await {
            return;
        }
    }
    let body = &request[body_start..body_start + body_len];
    if (method, path) == ("GET", "/metrics") {
        return respond_as(&mut stream, 200, prometheus::CONTENT_TYPE, &metrics_page(&node).await).await;
    }
    let (code, response) = route(method, path, query, body, &node).await;
    respond(&mut stream, code, &response).await;
}

async fn metrics_page(node: &AdminState) -> String {
    let status = node.meta.status();
    let ready = not_ready_reasons(&status, node.draining.is_stopped()).is_empty();
    let replicas = node.repl.status().await.ok();
    let metadata = node.meta.feed().current();
    let kafka = node.kafka_metrics.snapshot();
    render(&NodeMetrics { cluster_id: &node.cluster_id, ready, meta: &status, replicas: replicas.as_deref(), metadata: &metadata, kafka: &kafka })
}

fn readyz(node: &AdminState) -> (u16, String) {
    let reasons = not_ready_reasons(&node.meta.status(), node.draining.is_stopped());
    if reasons.is_empty() {
        return (200, "{\"ready\":true}".to_string());
    }
    let reasons: Vec<String> = reasons.iter().map(|r| json_string(r)).collect();
    (503, format!("{{\"ready\":false,\"reasons\":[{}],\"status\":{}}}", reasons.join(","), status_json(&node.meta)))
}

async fn route(method: &str, path: &str, query: &str, body: &[u8], node: &AdminState) -> (u16, String) {
    let meta = &node.meta;
    match (method, path) {
        ("GET", "/healthz") => (200, "{\"status\":\"serving\"}".to_string()),
        ("GET", "/readyz") => readyz(node),
        ("GET", "/status") => (200, with_listeners(status_json(meta), &node.listeners)),
        ("GET", "/topics") if query.split('&').any(|kv| kv == "consistency=linearizable") => linearizable_topics(meta).await,
        ("GET", "/topics") => match meta.read_state().await {
            Ok(state) => (200, topics_json(&state)),
            Err(error) => (503, error_body(&error.to_string())),
        },
        ("POST", p) if p.starts_with("/topics/") => create_topic(&p["/topics/".len()..], query, node).await,
        ("POST", p) if p.starts_with("/produce/") => produce(&p["/produce/".len()..], query, body, &node.repl).await,
        ("GET", p) if p.starts_with("/records/") => read_records(&p["/records/".len()..], query, &node.repl).await,
        ("GET", "/replicas") => replicas(&node.repl).await,
        (_, "/status" | "/topics" | "/replicas" | "/healthz" | "/readyz" | "/metrics") => (405, error_body("method not allowed here")),
        _ => (
            404,
            error_body(
                "unknown path; try GET /healthz, GET /readyz, GET /metrics, GET /status, GET /topics, POST /topics/NAME, POST /produce/TOPIC/PARTITION, GET /records/TOPIC/PARTITION, GET /replicas",
            ),
        ),
    }
}

/// `TOPIC/PARTITION` from a path.
fn topic_partition(path: &str) -> Result<(&str, u32), String> {
    let (topic, partition) = path.rsplit_once('/').ok_or_else(|| format!("`{path}`: expected TOPIC/PARTITION"))?;
    let partition = partition.parse().map_err(|_| format!("partition `{partition}` is not a whole number"))?;
    Ok((topic, partition))
}

fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v)
}

fn query_number<T: std::str::FromStr>(query: &str, key: &str, default: T) -> Result<T, String> {
    match query_value(query, key) {
        Some(value) => value.parse().map_err(|_| format!("{key}={value} is not a whole number")),
        None => Ok(default),
    }
}

/// A refused produce or read: Kafka's code and message; retriable ones are 503.
fn repl_error(error: &ReplError) -> (u16, String) {
    let code = match error {
        ReplError::UnknownTopicOrPartition { .. } => 404,
        error if error.is_retriable() => 503,
        _ => 400,
    };
    (code, format!("{{\"error_code\":{},\"error\":{}}}", error.kafka_code(), json_string(&error.to_string())))
}

async fn produce(path: &str, query: &str, body: &[u8], repl: &ReplHandle) -> (u16, String) {
    let parsed = (|| -> Result<ProduceRequest, String> {
        let (topic, partition) = topic_partition(path)?;
        let acks = match query_value(query, "acks").unwrap_or("all") {
            "all" | "-1" => Acks::All,
            other => Acks::from_kafka(other.parse().map_err(|_| format!("acks={other}: expected all, -1, 1 or 0"))?).map_err(|e| e.to_string())?,
        };
        let timeout_ms = query_number(query, "timeout_ms", 5_000)?;
        let text = std::str::from_utf8(body).map_err(|_| "the body must be UTF-8 text, one record per line".to_string())?;
        let records: Vec<Vec<u8>> = text.lines().map(|line| line.as_bytes().to_vec()).collect();
        let mut request = ProduceRequest::new(topic, partition, acks, records, timeout_ms);
        if let Some(epoch) = query_value(query, "leader_epoch") {
            request.leader_epoch = Some(epoch.parse().map_err(|_| format!("leader_epoch={epoch} is not a whole number"))?);
        }
        if let Some(crc) = query_value(query, "batch_crc") {
            request.batch_crc = crc.parse().map_err(|_| format!("batch_crc={crc} is not a whole number"))?;
        }
        Ok(request)
    })();
    let request = match parsed {
        Ok(request) => request,
        Err(message) => return (400, error_body(&message)),
    };
    let count = request.records.len();
    match repl.produce(request).await {
        Ok(produced) => (200, format!("{{\"base_offset\":{},\"records\":{count},\"leader_epoch\":{}}}", produced.base_offset, produced.leader_epoch)),
        Err(error) => repl_error(&error),
    }
}

async fn read_records(path: &str, query: &str, repl: &ReplHandle) -> (u16, String) {
    let parsed = (|| -> Result<(&str, u32, u64, usize, ReadLimit), String> {
        let (topic, partition) = topic_partition(path)?;
        let offset = query_number(query, "offset", 0)?;
        let bytes_max = query_number(query, "max_bytes", READ_BYTES_MAX)?.min(READ_BYTES_MAX);
        let limit = match query_value(query, "upto") {
            None | Some("high_watermark") => ReadLimit::HighWatermark,
            Some("log_end") => ReadLimit::LogEnd,
            Some(other) => return Err(format!("upto={other}: expected high_watermark or log_end")),
        };
        Ok((topic, partition, offset, bytes_max, limit))
    })();
    let (topic, partition, offset, bytes_max, limit) = match parsed {
        Ok(parsed) => parsed,
        Err(message) => return (400, error_body(&message)),
    };
    match repl.read(topic, partition, offset, bytes_max, limit).await {
        Ok(read) => {
            let records: Vec<String> = read
                .records
                .iter()
                .map(|r| {
                    format!("{{\"offset\":{},\"leader_epoch\":{},\"value\":{}}}", r.offset, r.leader_epoch, json_string(&String::from_utf8_lossy(&r.value)))
                })
                .collect();
            (200, format!("{{\"high_watermark\":{},\"log_end_offset\":{},\"records\":[{}]}}", read.high_watermark, read.log_end_offset, records.join(",")))
        }
        Err(error) => repl_error(&error),
    }
}

async fn replicas(repl: &ReplHandle) -> (u16, String) {
    match repl.status().await {
        Ok(statuses) => {
            let replicas: Vec<String> = statuses
                .iter()
                .map(|s| {
                    let role = match s.role {
                        ReplicaRole::Leader => "\"leader\"".to_string(),
                        ReplicaRole::Follower { leader_id } => format!("\"follower of {leader_id}\""),
                        ReplicaRole::Idle => "\"idle\"".to_string(),
                    };
                    let isr = s.isr.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
                    format!(
                        "{{\"topic\":{},\"partition\":{},\"role\":{role},\"leader_epoch\":{},\"log_end_offset\":{},\"high_watermark\":{},\"isr\":[{isr}]}}",
                        json_string(&s.topic),
                        s.partition,
                        s.leader_epoch.map(|e| e.to_string()).unwrap_or_else(|| "null".into()),
                        s.log_end_offset,
                        s.high_watermark
                    )
                })
                .collect();
            (200, format!("{{\"replicas\":[{}]}}", replicas.join(",")))
        }
        Err(error) => repl_error(&error),
    }
}

/// `/status` with the bound listeners (useful after binding port 0) added.
fn with_listeners(status: String, listeners: &str) -> String {
    let fields = status.strip_suffix('}').expect("status is a JSON object");
    format!("{fields},\"listeners\":{listeners}}}")
}

fn status_json(meta: &MetaHandle) -> String {
    let s = meta.status();
    format!(
        "{{\"node_id\":{},\"term\":{},\"is_leader\":{},\"leader_id\":{},\"commit_index\":{},\"applied_index\":{},\"metadata_version\":{},\"ready\":{},\"registered\":{}}}",
        s.node_id,
        s.term,
        s.is_leader,
        s.leader_id.map(|id| id.to_string()).unwrap_or_else(|| "null".into()),
        s.commit_index,
        s.applied_index,
        s.metadata_version,
        s.ready,
        s.registered
    )
}

fn topics_json(state: &keel_meta::MetadataState) -> String {
    let topics: Vec<String> = state
        .topics()
        .map(|topic| {
            let partitions: Vec<String> = topic
                .partitions
                .iter()
                .enumerate()
                .map(|(index, p)| {
                    let list = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
                    format!(
                        "{{\"partition\":{index},\"leader\":{},\"leader_epoch\":{},\"replicas\":[{}],\"isr\":[{}]}}",
                        p.leader.map(|id| id.to_string()).unwrap_or_else(|| "null".into()),
                        p.leader_epoch,
                        list(&p.replicas),
                        list(&p.isr)
                    )
                })
                .collect();
            format!("{{\"name\":{},\"partitions\":[{}]}}", json_string(&topic.name), partitions.join(","))
        })
        .collect();
    format!("{{\"metadata_version\":{},\"topics\":[{}]}}", state.metadata_version(), topics.join(","))
}

/// Topics as of a Raft ReadIndex: includes every change acknowledged before
/// the request, even on a lagging follower.
async fn linearizable_topics(meta: &MetaHandle) -> (u16, String) {
    let mut last_error = String::new();
    for _ in 0..(LINEARIZABLE_READ_BUDGET_MS / 100) {
        match meta.read_linearizable().await {
            Ok(state) => return (200, topics_json(&state)),
            Err(error) if error.is_retriable() => {
                last_error = error.to_string();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return (503, error_body(&error.to_string())),
        }
    }
    (503, error_body(&format!("no linearizable read within {LINEARIZABLE_READ_BUDGET_MS} ms: {last_error}")))
}

fn created(metadata_version: u64) -> (u16, String) {
    (201, format!("{{\"metadata_version\":{metadata_version}}}"))
}

async fn create_topic(name: &str, query: &str, node: &AdminState) -> (u16, String) {
    let partitions = match query_number(query, "partitions", 1) {
        Ok(n) => n,
        Err(message) => return (400, error_body(&message)),
    };
    let replication_factor = match query_number(query, "replication_factor", 1) {
        Ok(n) => n,
        Err(message) => return (400, error_body(&message)),
    };
    let mut configs = Vec::new();
    if let Some(value) = query_value(query, "min_insync_replicas") {
        match value.parse::<u32>() {
            Ok(min) if (1..=replication_factor).contains(&min) => configs.push((MIN_INSYNC_REPLICAS_CONFIG.to_string(), min.to_string())),
            _ => return (400, error_body(&format!("min_insync_replicas={value}: expected 1 to the replication factor ({replication_factor})"))),
        }
    }
    let create = TopicCreate { name: name.to_string(), partitions, replication_factor, configs, validate_only: false };
    match node.meta.create_topic(&create, node.create_topic_timeout_ms).await {
        Ok(version) => {
            warn_if_min_insync_above_replication_factor(&create, node.repl.min_insync_replicas_default());
            created(version)
        }
        Err(MetaOpError::Refused(error @ MetadataError::TopicAlreadyExists(_))) => (409, error_body(&error.to_string())),
        Err(MetaOpError::Refused(error)) => (400, error_body(&error.to_string())),
        Err(error) => (503, error_body(&error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_a_leader_the_applied_commit_and_registration_and_no_drain() {
        let ready = MetaStatus {
            node_id: 1,
            term: 2,
            is_leader: false,
            leader_id: Some(2),
            commit_index: 9,
            applied_index: 9,
            metadata_version: 4,
            ready: true,
            registered: true,
        };
        assert!(not_ready_reasons(&ready, false).is_empty());
        assert_eq!(not_ready_reasons(&ready, true), vec!["draining: the node is shutting down".to_string()]);
        let behind = MetaStatus { applied_index: 7, ready: false, ..ready.clone() };
        assert_eq!(not_ready_reasons(&behind, false), vec!["catching up: metadata applied to index 7 of 9 committed".to_string()]);
        let alone = MetaStatus { leader_id: None, ready: false, registered: false, ..ready };
        let reasons = not_ready_reasons(&alone, false);
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].contains("no metadata Raft leader") && reasons[1].contains("not registered"));
    }
}
