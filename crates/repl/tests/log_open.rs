//! A restarted broker opens its partition logs without stalling the
//! replicas already open: one broker (its own metadata Raft group of one
//! voter, on a SimDisk) with a large log in partition 0 and a small one in
//! partition 1 restarts on a slow disk, and a produce to partition 1 is
//! acknowledged while partition 0's log is still being opened. No timing
//! assertion: the order of the two events is what is checked (the slow log
//! needs hundreds of slow disk reads, the small one a few).
//! Normal build only: it listens on 127.0.0.1.
#![cfg(not(madsim))]

use std::time::Duration;

use keel_io::{Clock, Disk, NodeRng, SimDisk, SimDiskFaults};
use keel_meta::admin_ops::TopicCreate;
use keel_meta::driver::{start as start_meta, MetaDriverConfig, MetaHandle};
use keel_net::{Endpoint, NetConfig, NodeTransport};
use keel_repl::driver::{Acks, ProduceRequest, ReplConfig, ReplHandle};
use keel_repl::ReplError;

const TOPIC: &str = "opening";
const SEED: u64 = 12;

struct Broker {
    meta: MetaHandle,
    repl: ReplHandle,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    drivers: Vec<tokio::task::AbortHandle>,
}

impl Broker {
    /// Stops the drivers as a process exit would; returns once they are
    /// gone (and with them the disk lock the node held).
    async fn stop(self) {
        for driver in &self.drivers {
            driver.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn start_broker(disk: &SimDisk, incarnation: u64) -> Broker {
    let voters = [(1, "127.0.0.1:0".to_string())].into_iter().collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the broker listener");
    let mut rng = NodeRng::new(SEED, 1, incarnation);
    let NodeTransport { endpoint, raft_frames, repl_frames } =
        Endpoint::for_node(NetConfig::new("log-open-test", 1), listener, Clock::new(), rng.fork(2), &voters).expect("serve the listener");
    let config = MetaDriverConfig {
        cluster_id: "log-open-test".into(),
        node_id: 1,
        voters,
        data_dir: "meta".into(),
        timing: Default::default(),
        proposal_timeout_ms: 10_000,
        log_config: Default::default(),
        advertised_host: "127.0.0.1".into(),
        advertised_port: 9092,
        rack: None,
        incarnation_id: incarnation,
        registration_lease_ms: 60_000,
        compact_after_entries: keel_meta::node::COMPACT_AFTER_ENTRIES,
        observer: None,
    };
    let (meta, meta_task) =
        start_meta(Disk::Sim(disk.clone()), Clock::new(), rng, config, std::sync::Arc::clone(&endpoint), raft_frames).await.expect("start the metadata node");
    let mut repl_config = ReplConfig::new(1, incarnation);
    // Small reads: opening the large log takes many (slow) disk reads.
    repl_config.log_config.read_chunk_bytes = 1024;
    let (repl, repl_task) = keel_repl::driver::start(Disk::Sim(disk.clone()), Clock::new(), meta.clone(), endpoint, repl_frames, repl_config);
    let drivers = vec![meta_task.abort_handle(), repl_task.abort_handle()];
    let tasks = vec![
        tokio::spawn(async move {
            let _ = meta_task.await;
        }),
        tokio::spawn(async move {
            let _ = repl_task.await;
        }),
    ];
    Broker { meta, repl, tasks, drivers }
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
        let status = broker.meta.status();
        if status.registered && status.is_leader {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let create = TopicCreate { name: TOPIC.into(), partitions: 2, replication_factor: 1, configs: Vec::new(), validate_only: false };
    broker.meta.create_topic(&create, 30_000).await.expect("create the topic");
    // Partition 0 (opened first when opens are sequential): about 800 KiB.
    for batch in 0..200 {
        let records = (0..4).map(|record| format!("{batch}-{record}-{}", "x".repeat(1000)).into_bytes()).collect();
        produce(&broker.repl, 0, records).await;
    }
    produce(&broker.repl, 1, vec![b"small".to_vec()]).await;
    broker.stop().await;

    // The restart: every disk operation now takes 2 ms.
    disk.set_faults(SimDiskFaults { latency_us: Some((2_000, 2_000)), ..SimDiskFaults::default() });
    let broker = start_broker(&disk, 2).await;
    produce(&broker.repl, 1, vec![b"after the restart".to_vec()]).await;
    let large = broker.repl.replica_status(TOPIC, 0).await;
    assert!(
        matches!(large, Err(ReplError::UnknownTopicOrPartition { .. })),
        "partition 0's log was open before partition 1 served a produce (opens stall the loop): {large:?}"
    );
    // And the large log does open.
    for _ in 0..60_000 {
        if broker.repl.replica_status(TOPIC, 0).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let opened = broker.repl.replica_status(TOPIC, 0).await.expect("partition 0 opens");
    assert_eq!(opened.log_end_offset, 800, "every record of the large log is there");
    broker.stop().await;
}
