//! Two nodes pointed at one disk (a copy-pasted data dir): the second is
//! refused before it reads or writes anything, and the first keeps serving.
//! Without the disk lock both became Raft voters on one store, both wrote,
//! and the store no longer opened. Process death releases the lock (a
//! killed node restarts on its own disk), as the kernel releases a flock.
#![cfg(madsim)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_io::{Clock, Disk, DiskErrorKind, NodeRng, SimDisk};
use keel_log::LogConfig;
use keel_meta::controller::plan_create_topic;
use keel_meta::driver::{start, MetaDriverConfig, MetaDriverError, MetaHandle};
use keel_meta::raft_node::RaftTiming;
use keel_net::{Endpoint, NetConfig};
use madsim::runtime::Handle;

type Handles = Arc<Mutex<BTreeMap<u64, MetaHandle>>>;
/// What each refused start said, by the node id that tried.
type Refusals = Arc<Mutex<Vec<(u64, MetaDriverError)>>>;

fn voters() -> BTreeMap<u64, String> {
    (1..=3).map(|id| (id, format!("10.0.2.{id}:9093"))).collect()
}

fn config(id: u64, incarnation_id: u64) -> MetaDriverConfig {
    MetaDriverConfig {
        cluster_id: "shared-disk".into(),
        node_id: id,
        voters: voters(),
        data_dir: "meta".into(),
        timing: RaftTiming::default(),
        proposal_timeout_ms: 3_000,
        log_config: LogConfig::default(),
        advertised_host: format!("10.0.2.{id}"),
        advertised_port: 9092,
        rack: None,
        incarnation_id,
        registration_lease_ms: 2_000,
        compact_after_entries: keel_meta::node::COMPACT_AFTER_ENTRIES,
        observer: None,
    }
}

/// A host that runs node `id` on `disk` on every (re)start.
fn host(runtime: &Handle, id: u64, ip: &str, disk: SimDisk, handles: &Handles, refusals: &Refusals) -> madsim::runtime::NodeHandle {
    let (handles, refusals) = (Arc::clone(handles), Arc::clone(refusals));
    let incarnations = Arc::new(AtomicU64::new(0));
    let seed = runtime.seed();
    let listen_addr = format!("{ip}:9093");
    runtime
        .create_node()
        .name(format!("node-{id}-at-{ip}"))
        .ip(ip.parse().expect("ip"))
        .init(move || {
            let (disk, handles, refusals, listen_addr) = (disk.clone(), Arc::clone(&handles), Arc::clone(&refusals), listen_addr.clone());
            let incarnation = incarnations.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                let ops_before = disk.stats().ops;
                let (config, mut rng) = (config(id, incarnation), NodeRng::new(seed, id, incarnation));
                let listener = tokio::net::TcpListener::bind(listen_addr.as_str()).await.expect("bind");
                let transport =
                    Endpoint::for_node(NetConfig::new(&config.cluster_id, id), listener, Clock::new(), rng.fork(2), &config.voters).expect("endpoint");
                match start(Disk::Sim(disk.clone()), Clock::new(), rng, config, transport.endpoint, transport.raft_frames).await {
                    Ok((meta, task)) => {
                        handles.lock().expect("handles").insert(id, meta);
                        let _ = task.await;
                    }
                    Err(error) => {
                        // The refusal came before any operation on the disk.
                        assert_eq!(disk.stats().ops, ops_before, "a refused start touched the disk (seed {seed})");
                        refusals.lock().expect("refusals").push((id, error));
                    }
                }
            }
        })
        .build()
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..600 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not reached within 60 simulated seconds (seed {})", Handle::current().seed());
}

fn serving(handles: &Handles, id: u64) -> bool {
    handles.lock().expect("handles").get(&id).is_some_and(|h| h.status().ready && h.status().registered)
}

#[madsim::test]
async fn a_second_node_on_a_held_disk_is_refused_and_the_holder_keeps_serving() {
    let runtime = Handle::current();
    let seed = runtime.seed();
    let handles: Handles = Arc::new(Mutex::new(BTreeMap::new()));
    let refusals: Refusals = Arc::new(Mutex::new(Vec::new()));
    let disks: BTreeMap<u64, SimDisk> = (1..=3).map(|id| (id, SimDisk::new(NodeRng::new(seed, id, 1_000)))).collect();
    let mut hosts = BTreeMap::new();
    for id in 1..=3u64 {
        hosts.insert(id, host(&runtime, id, &format!("10.0.2.{id}"), disks[&id].clone(), &handles, &refusals));
    }
    wait_until("every node registered and ready", || (1..=3).all(|id| serving(&handles, id))).await;

    // Node 3's configuration copied with node 2's data dir, on another host.
    let _intruder = host(&runtime, 3, "10.0.2.33", disks[&2].clone(), &handles, &refusals);
    wait_until("the second opener of node 2's disk gave up", || !refusals.lock().expect("refusals").is_empty()).await;
    {
        let refusals = refusals.lock().expect("refusals");
        assert_eq!(refusals.len(), 1, "(seed {seed})");
        let (id, error) = &refusals[0];
        assert_eq!(*id, 3, "(seed {seed})");
        let MetaDriverError::Locked(disk_error) = error else { panic!("refused for the lock, got {error} (seed {seed})") };
        assert_eq!(disk_error.kind, DiskErrorKind::Locked { holder: "node 2".into() }, "(seed {seed})");
    }
    assert_eq!(disks[&2].lock_holder(), Some(2), "the holder keeps its lock (seed {seed})");

    // The holder keeps serving: a change proposed through it commits.
    let via_holder = handles.lock().expect("handles").get(&2).cloned().expect("node 2 handle");
    let mut committed = false;
    for _ in 0..100 {
        let state = via_holder.read_state().await.expect("node 2 running");
        if state.topic("after-refusal").is_some() {
            committed = true;
            break;
        }
        if let Ok(batch) = plan_create_topic(&state, "after-refusal", 1, 3, &[], 0) {
            let _ = via_holder.propose(batch).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(committed, "node 2 stopped serving after the refused opener (seed {seed})");
    wait_until("node 2 still registered and ready", || serving(&handles, 2)).await;

    // Process death releases the lock: node 2 killed (no power loss) restarts on its disk.
    runtime.kill(hosts[&2].id());
    handles.lock().expect("handles").remove(&2);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(disks[&2].lock_holder(), None, "a killed node's lock is released (seed {seed})");
    runtime.restart(hosts[&2].id());
    wait_until("node 2 serving again after its restart", || serving(&handles, 2)).await;
    assert_eq!(refusals.lock().expect("refusals").len(), 1, "the restart was not refused (seed {seed})");
}
