//! The admin endpoint: a small HTTP/1.1 server for operators and tests.
//!
//!   GET  /status                                   this node's metadata status (JSON)
//!   GET  /topics                                   topics with partitions, leaders, epochs, ISR
//!   GET  /topics?consistency=linearizable          the same, after a Raft ReadIndex (never stale)
//!   POST /topics/NAME?partitions=N&replication_factor=R   create a topic (any node; forwarded to the leader)
//!
//! One request per connection; requests are bounded in size; bad requests get
//! a 4xx with a JSON error, and the server keeps serving.

use std::time::Duration;

use keel_meta::controller::plan_create_topic;
use keel_meta::driver::{MetaHandle, ProposalError};
use keel_meta::MetadataError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// How long a create keeps retrying retriable errors (no leader yet, leader change).
const CREATE_RETRY_BUDGET_MS: u64 = 15_000;

pub async fn serve(listener: TcpListener, meta: MetaHandle) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle_connection(stream, meta.clone()));
            }
            Err(error) => tracing::warn!(%error, "admin accept failed"),
        }
    }
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
    let reason = match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn handle_connection(mut stream: TcpStream, meta: MetaHandle) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    let head_end = loop {
        if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if request.len() > REQUEST_BYTES_MAX {
            return respond(&mut stream, 413, &error_body("request head larger than 8 KiB")).await;
        }
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => return,
            Ok(Ok(n)) => request.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => return,
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).to_string();
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (code, body) = route(method, path, query, &meta).await;
    respond(&mut stream, code, &body).await;
}

async fn route(method: &str, path: &str, query: &str, meta: &MetaHandle) -> (u16, String) {
    match (method, path) {
        ("GET", "/status") => (200, status_json(meta)),
        ("GET", "/topics") if query.split('&').any(|kv| kv == "consistency=linearizable") => linearizable_topics(meta).await,
        ("GET", "/topics") => match meta.read_state().await {
            Ok(state) => (200, topics_json(&state)),
            Err(error) => (503, error_body(&error.to_string())),
        },
        ("POST", p) if p.starts_with("/topics/") => create_topic(&p["/topics/".len()..], query, meta).await,
        (_, "/status") | (_, "/topics") => (405, error_body("method not allowed here")),
        _ => (404, error_body("unknown path; try GET /status, GET /topics, POST /topics/NAME?partitions=N&replication_factor=R")),
    }
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
    for _ in 0..(CREATE_RETRY_BUDGET_MS / 100) {
        match meta.read_linearizable().await {
            Ok(state) => return (200, topics_json(&state)),
            Err(error) if error.is_retriable() => {
                last_error = error.to_string();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return (503, error_body(&error.to_string())),
        }
    }
    (503, error_body(&format!("no linearizable read within {CREATE_RETRY_BUDGET_MS} ms: {last_error}")))
}

fn query_u32(query: &str, key: &str, default: u32) -> Result<u32, String> {
    match query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == key) {
        Some((_, value)) => value.parse().map_err(|_| format!("{key}={value} is not a whole number")),
        None => Ok(default),
    }
}

fn created(metadata_version: u64) -> (u16, String) {
    (201, format!("{{\"metadata_version\":{metadata_version}}}"))
}

/// The answer to a create the metadata refused, at planning or at apply time.
/// After a retry, "already exists" means an earlier attempt that timed out
/// committed after all.
fn refused_create(error: MetadataError, retried: bool, metadata_version: u64) -> (u16, String) {
    match error {
        MetadataError::TopicAlreadyExists(_) if retried => created(metadata_version),
        MetadataError::TopicAlreadyExists(_) => (409, error_body(&error.to_string())),
        _ => (400, error_body(&error.to_string())),
    }
}

async fn create_topic(name: &str, query: &str, meta: &MetaHandle) -> (u16, String) {
    let partitions = match query_u32(query, "partitions", 1) {
        Ok(n) => n,
        Err(message) => return (400, error_body(&message)),
    };
    let replication_factor = match query_u32(query, "replication_factor", 1) {
        Ok(n) => n,
        Err(message) => return (400, error_body(&message)),
    };
    // A create that arrives while this node is starting waits for it to know
    // a leader and be registered, instead of failing on half-built metadata
    // (incident 004: creates during startup failed after 5 s).
    let mut waiter = meta.clone();
    let started = tokio::time::timeout(Duration::from_millis(CREATE_RETRY_BUDGET_MS), waiter.wait_for(|s| s.ready && s.registered)).await;
    if !matches!(started, Ok(Ok(_))) {
        return (503, error_body(&format!("node still starting after {CREATE_RETRY_BUDGET_MS} ms (no metadata leader or not registered); retry")));
    }
    let mut retried = false;
    let attempts = CREATE_RETRY_BUDGET_MS / 100;
    for attempt in 0..attempts {
        let state = match meta.read_state().await {
            Ok(state) => state,
            Err(error) => return (503, error_body(&error.to_string())),
        };
        let batch = match plan_create_topic(&state, name, partitions, replication_factor, &[], attempt as usize) {
            Ok(batch) => batch,
            Err(error) => return refused_create(error, retried, state.metadata_version()),
        };
        match meta.propose(batch).await {
            Ok(version) => return created(version),
            Err(ProposalError::Refused(error)) => return refused_create(error, retried, state.metadata_version()),
            Err(error) if error.is_retriable() => {
                retried = true;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return (503, error_body(&error.to_string())),
        }
    }
    (503, error_body(&format!("not created within {CREATE_RETRY_BUDGET_MS} ms: no stable metadata leader; retry")))
}
