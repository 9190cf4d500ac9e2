//! A broker host of a simulated world: where node `id` listens and how it
//! boots, through keel-node (`Node::start`) exactly as `keel start` does.
//! The world (`meta_world`) and the madsim cluster tests boot every node here.

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
