//! A broker host of a simulated world: where node `id` listens and how it
//! boots, through keel-node (`Node::start`) exactly as `keel start` does.
//! The world (`world`) and the madsim cluster tests boot every node here.

use std::collections::BTreeMap;

use keel_node::{Listeners, Node, NodeConfig, NodeError, NodeIdentity, Seams};

pub use crate::kafka_client::KAFKA_PORT;

/// Every broker's broker-to-broker listener (metadata Raft and replication).
pub const BROKER_PORT: u16 = 9093;
/// Every broker's admin HTTP endpoint (`/readyz`, `/metrics`, ...).
pub const ADMIN_PORT: u16 = 8080;

/// Who node `id` of a cluster is: the voters are `{subnet}.{id}` for ids
/// 1..=`brokers`, each broker's address on the simulated network.
pub fn identity(cluster_id: &str, subnet: &str, id: u64, brokers: u64, rack: Option<String>) -> NodeIdentity {
    NodeIdentity {
        node_id: id,
        cluster_id: cluster_id.into(),
        voters: (1..=brokers).map(|voter| (voter, format!("{subnet}.{voter}:{BROKER_PORT}"))).collect::<BTreeMap<_, _>>(),
        advertised_host: format!("{subnet}.{id}"),
        advertised_port: KAFKA_PORT,
        rack,
    }
}

/// Binds node's three listeners on `ip` (the current simulated host's
/// address) and starts the node.
pub async fn start_node(identity: NodeIdentity, ip: &str, config: &NodeConfig, seams: Seams) -> Result<Node, NodeError> {
    let listeners = Listeners::bind(&format!("{ip}:{KAFKA_PORT}"), &format!("{ip}:{ADMIN_PORT}"), &format!("{ip}:{BROKER_PORT}")).await?;
    Node::start(identity, config, seams, listeners, None).await
}

/// How long a `/readyz` probe waits for its answer.
const READYZ_TIMEOUT_MS: u64 = 2_000;

/// `GET /readyz` of the node at `ip`, over the (simulated) network, as an
/// orchestrator's readiness probe asks it: the HTTP status and the body.
pub async fn readyz(ip: &str) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = format!("{ip}:{ADMIN_PORT}");
    let exchange = async {
        let mut stream = tokio::time::timeout(std::time::Duration::from_millis(500), tokio::net::TcpStream::connect(&addr))
            .await
            .map_err(|_| format!("connect {addr}: timed out"))?
            .map_err(|error| format!("connect {addr}: {error}"))?;
        stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: keel\r\nConnection: close\r\n\r\n").await.map_err(|error| format!("send to {addr}: {error}"))?;
        // The simulated stream buffers writes until flushed.
        stream.flush().await.map_err(|error| format!("send to {addr}: {error}"))?;
        // Read up to the end of the body its Content-Length announces (the
        // simulated TCP does not report the server's close as an EOF).
        let mut response = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&response).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head.lines().filter_map(|line| line.split_once(':')).find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"));
                let length = length.and_then(|(_, value)| value.trim().parse::<usize>().ok()).unwrap_or(0);
                if body.len() >= length {
                    return Ok::<_, String>(text);
                }
            }
            let read = stream.read(&mut chunk).await.map_err(|error| format!("read from {addr}: {error}"))?;
            if read == 0 {
                return Ok(text);
            }
            response.extend_from_slice(&chunk[..read]);
        }
    };
    let response = tokio::time::timeout(std::time::Duration::from_millis(READYZ_TIMEOUT_MS), exchange)
        .await
        .map_err(|_| format!("no answer from {addr} within {READYZ_TIMEOUT_MS} ms"))??;
    let status =
        response.split_whitespace().nth(1).and_then(|code| code.parse::<u16>().ok()).ok_or_else(|| format!("{addr} answered no HTTP status: {response:?}"))?;
    let body = response.split_once("\r\n\r\n").map_or(String::new(), |(_, body)| body.to_string());
    Ok((status, body))
}
