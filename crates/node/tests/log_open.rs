//! A restarted broker opens its partition logs without stalling the
//! replicas already open: one broker (its own metadata Raft group of one
//! voter, on a SimDisk) with a large log in partition 0 and a small one in
//! partition 1, booted through keel-node, restarts on a slow disk, and a produce to partition 1 is
//! acknowledged while partition 0's log is still being opened. No timing
//! assertion: the order of the two events is what is checked (the slow log
//! needs hundreds of slow disk reads, the small one a few).
//! Normal build only: it listens on 127.0.0.1.
#![cfg(not(madsim))]

use std::time::Duration;

use keel_io::{Clock, Disk, NodeRng, SimDisk, SimDiskFaults};
use keel_meta::admin_ops::TopicCreate;
use keel_meta::driver::MetaHandle;
use keel_node::{Listeners, Node, NodeConfig, NodeIdentity, Seams};
use keel_repl::driver::{Acks, ProduceRequest, ReplHandle};
use keel_repl::ReplError;

const TOPIC: &str = "opening";
const SEED: u64 = 12;
/// Batches of `LARGE_BATCH_RECORDS` 1 KiB records in the large partition.
const LARGE_BATCHES: u64 = 500;
const LARGE_BATCH_RECORDS: u64 = 16;

struct Broker {
    node: Node,
}

impl Broker {
    /// Stops the node as a process exit would (no drain); returns once its
    /// tasks are gone, and with them the disk lock the node held.
    async fn stop(self) {
        self.node.abort().await;
    }

    fn meta(&self) -> &MetaHandle {
        self.node.meta()
    }

    fn repl(&self) -> &ReplHandle {
        self.node.repl()
    }
}

/// One broker, its own metadata Raft group of one voter, booted through
/// keel-node on `disk`.
async fn start_broker(disk: &SimDisk, incarnation: u64) -> Broker {
    let identity = NodeIdentity::alone("log-open-test", "127.0.0.1");
    let config = NodeConfig { proposal_timeout_ms: 10_000, registration_lease_ms: 60_000, ..NodeConfig::default() };
    let listeners = Listeners::bind("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0").await.expect("bind");
    let seams = Seams::new(Disk::Sim(disk.clone()), Clock::new(), NodeRng::new(SEED, 1, incarnation));
    let node = Node::start(identity, &config, seams, listeners, None).await.expect("start the node");
    Broker { node }
}

/// Produces with acks=all until acknowledged (the replica may not lead yet).
async fn produce(repl: &ReplHandle, partition: u32, records: Vec<Vec<u8>>) {
    for _ in 0..6000 {
        match repl.produce(ProduceRequest::new(TOPIC, partition, Acks::All, records.clone(), 10_000)).await {
            Ok(_) => return,
            Err(ReplError::NotLeader { .. } | ReplError::UnknownTopicOrPartition { .. } | ReplError::NotEnoughReplicas { .. }) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(error) => panic!("produce to {TOPIC}-{partition} refused: {error}"),
        }
    }
    panic!("produce to {TOPIC}-{partition} never acknowledged");
}

#[tokio::test]
async fn a_produce_to_an_open_partition_is_acknowledged_while_a_large_log_is_still_opening() {
    let disk = SimDisk::new(NodeRng::new(SEED, 1, 1_000));
    let broker = start_broker(&disk, 1).await;
    for _ in 0..6000 {
        let status = broker.meta().status();
        if status.registered && status.is_leader {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let create = TopicCreate { name: TOPIC.into(), partitions: 2, replication_factor: 1, configs: Vec::new(), validate_only: false };
    broker.meta().create_topic(&create, 30_000).await.expect("create the topic");
    // Partition 0 (opened first when opens are sequential): about 8 MiB,
    // some 130 reads of the log's 64 KiB chunks to open.
    for batch in 0..LARGE_BATCHES {
        let records = (0..LARGE_BATCH_RECORDS).map(|record| format!("{batch}-{record}-{}", "x".repeat(1000)).into_bytes()).collect();
        produce(broker.repl(), 0, records).await;
    }
    produce(broker.repl(), 1, vec![b"small".to_vec()]).await;
    broker.stop().await;

    // The restart: every disk operation now takes 2 ms.
    disk.set_faults(SimDiskFaults { latency_us: Some((2_000, 2_000)), ..SimDiskFaults::default() });
    let broker = start_broker(&disk, 2).await;
    produce(broker.repl(), 1, vec![b"after the restart".to_vec()]).await;
    let large = broker.repl().replica_status(TOPIC, 0).await;
    assert!(
        matches!(large, Err(ReplError::UnknownTopicOrPartition { .. })),
        "partition 0's log was open before partition 1 served a produce (opens stall the loop): {large:?}"
    );
    // And the large log does open.
    for _ in 0..60_000 {
        if broker.repl().replica_status(TOPIC, 0).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let opened = broker.repl().replica_status(TOPIC, 0).await.expect("partition 0 opens");
    assert_eq!(opened.log_end_offset, LARGE_BATCHES * LARGE_BATCH_RECORDS, "every record of the large log is there");
    broker.stop().await;
}
