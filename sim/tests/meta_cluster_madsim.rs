//! The metadata Raft group as the deployed node runs it (brokers booted
//! through keel-node over madsim TCP, SimDisk per host), with the leader killed (its
//! unsynced bytes lost) and restarted. The startup and auto-create races
//! in miniature: no blocking waits, creates accepted on a
//! follower, a new leader after a kill, everyone converging after a restart.
#![cfg(madsim)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_io::{Clock, Disk, NodeRng, SimDisk};
use keel_meta::controller::plan_create_topic;
use keel_meta::driver::{MetaHandle, ProposalError};
use keel_meta::proto::MetadataBatch;
use keel_meta::MetadataError;
use keel_node::{NodeConfig, Seams};
use keel_sim::host;
use madsim::net::NetSim;
use madsim::runtime::Handle;

type Handles = Arc<Mutex<BTreeMap<u64, MetaHandle>>>;

fn handle_of(handles: &Handles, id: u64) -> Option<MetaHandle> {
    handles.lock().expect("handles").get(&id).cloned()
}

/// Proposes until applied, retrying retriable errors like a client would.
/// `done` says the change is already visible (nothing to propose); `plan`
/// may fail while this node has not yet applied what it needs (for example
/// the other brokers' registrations), which is retried too.
/// `TopicAlreadyExists` after a retry means an earlier attempt committed.
/// Returns whether an attempt was acknowledged (not merely found applied).
async fn propose_until_applied(
    handle: &MetaHandle,
    done: impl Fn(&keel_meta::MetadataState) -> bool,
    plan: impl Fn(&keel_meta::MetadataState) -> Result<MetadataBatch, MetadataError>,
) -> bool {
    let mut retried = false;
    let mut last_error = None;
    for _ in 0..200 {
        let state = handle.read_state().await.expect("node running");
        if done(&state) {
            return false;
        }
        let batch = match plan(&state) {
            Ok(batch) => batch,
            Err(error) => {
                last_error = Some(error.to_string());
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match handle.propose(batch).await {
            Ok(_) => return true,
            Err(ProposalError::Refused(MetadataError::TopicAlreadyExists(_))) if retried => return false,
            Err(error) if error.is_retriable() => {
                retried = true;
                last_error = Some(error.to_string());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("proposal refused: {error}"),
        }
    }
    panic!("proposal not applied after 200 attempts; last error: {last_error:?}");
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

/// Three broker nodes booted through keel-node (as `keel start` does), each
/// on its own simulated host and SimDisk; a restarted host comes back with a
/// new incarnation and its disk as it was.
fn boot_cluster(runtime: &Handle, seed: u64) -> (Handles, BTreeMap<u64, SimDisk>, BTreeMap<u64, madsim::runtime::NodeHandle>) {
    let handles: Handles = Arc::new(Mutex::new(BTreeMap::new()));
    let mut disks = BTreeMap::new();
    let mut hosts = BTreeMap::new();
    let config = NodeConfig { proposal_timeout_ms: 3_000, registration_lease_ms: 2_000, metadata_segment_bytes: 64 * 1024, ..NodeConfig::default() };
    for id in 1..=3u64 {
        let disk = SimDisk::new(NodeRng::new(seed, id, 1_000));
        disks.insert(id, disk.clone());
        let (handles, config) = (Arc::clone(&handles), config.clone());
        let incarnation = Arc::new(AtomicU64::new(0));
        let host = runtime
            .create_node()
            .name(format!("broker-{id}"))
            .ip(format!("10.0.1.{id}").parse().expect("ip"))
            .init(move || {
                let (disk, handles, config) = (disk.clone(), Arc::clone(&handles), config.clone());
                let rng = NodeRng::new(seed, id, incarnation.fetch_add(1, Ordering::SeqCst));
                async move {
                    let identity = host::identity("sim-cluster", "10.0.1", id, 3, None);
                    let seams = Seams::new(Disk::Sim(disk), Clock::new(), rng);
                    let node = host::start_node(identity, &format!("10.0.1.{id}"), &config, seams).await.expect("start never waits for a leader");
                    handles.lock().expect("handles").insert(id, node.meta().clone());
                    let _ = node.run_until(std::future::pending()).await;
                }
            })
            .build();
        hosts.insert(id, host);
    }
    (handles, disks, hosts)
}

#[madsim::test]
async fn metadata_group_elects_registers_fences_a_dead_leader_and_converges_after_restart() {
    let runtime = Handle::current();
    let seed = runtime.seed();
    let (handles, disks, hosts) = boot_cluster(&runtime, seed);

    // Every broker registers itself (retried until committed), with no help.
    let all_registered = || (1..=3).all(|id| handle_of(&handles, id).is_some_and(|h| h.status().ready && h.status().registered));
    wait_until("a leader elected and every broker registered", all_registered).await;
    let leader = (1..=3).find(|id| handle_of(&handles, *id).is_some_and(|h| h.status().is_leader)).expect("a leader");
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let via_follower = handle_of(&handles, follower).expect("follower handle");
    let acknowledged = propose_until_applied(&via_follower, |s| s.topic("orders").is_some(), |s| plan_create_topic(s, "orders", 6, 3, &[], 0)).await;
    assert!(acknowledged, "a create made on a follower was not acknowledged (seed {seed})");

    // Linearizable reads: a node cut off from the leader may serve stale
    // data from a plain read, but a ReadIndex read never does.
    let isolated = (1..=3).find(|id| *id != leader && *id != follower).expect("a third node");
    let on_isolated = handle_of(&handles, isolated).expect("isolated handle");
    NetSim::current().clog_node(hosts[&isolated].id());
    let acknowledged =
        propose_until_applied(&via_follower, |s| s.topic("while-isolated").is_some(), |s| plan_create_topic(s, "while-isolated", 1, 2, &[], 0)).await;
    assert!(acknowledged, "create while a node is isolated was not acknowledged (seed {seed})");
    let stale = on_isolated.read_state().await.expect("running");
    assert!(stale.topic("while-isolated").is_none(), "the isolated node applied a write it cannot have received (seed {seed})");
    match on_isolated.read_linearizable().await {
        Err(error) => assert!(error.is_retriable(), "isolated linearizable read failed for good: {error} (seed {seed})"),
        Ok(state) => assert!(state.topic("while-isolated").is_some(), "linearizable read returned stale metadata (seed {seed})"),
    }
    NetSim::current().unclog_node(hosts[&isolated].id());
    let mut fresh = None;
    for _ in 0..100 {
        match on_isolated.read_linearizable().await {
            Ok(state) => {
                fresh = Some(state);
                break;
            }
            Err(error) if error.is_retriable() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(error) => panic!("linearizable read refused: {error} (seed {seed})"),
        }
    }
    let fresh = fresh.expect("linearizable read served after healing");
    assert!(fresh.topic("while-isolated").is_some(), "linearizable read after healing misses an acknowledged create (seed {seed})");
    // The isolation may have cost the node its registration lease: let it re-register.
    wait_until("every broker registered again after the isolation", all_registered).await;

    let before_kill = via_follower.read_state().await.expect("running");

    runtime.kill(hosts[&leader].id());
    disks[&leader].crash();
    handles.lock().expect("handles").remove(&leader);
    let survivor = handle_of(&handles, follower).expect("survivor");

    // The new leader's controller fences the silent broker once its lease
    // expires and moves its partition leaderships within the ISR.
    for _ in 0..600 {
        let state = survivor.read_state().await.expect("running");
        if state.broker(leader).is_some_and(|b| b.fenced) && state.metadata_version() > before_kill.metadata_version() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fenced_state = survivor.read_state().await.expect("running");
    assert!(fenced_state.broker(leader).is_some_and(|b| b.fenced), "killed broker {leader} never fenced (seed {seed})");
    let orders = fenced_state.topic("orders").expect("orders");
    for (index, partition) in orders.partitions.iter().enumerate() {
        let leader_now = partition.leader.expect("an ISR member is live, so the partition has a leader");
        assert_ne!(leader_now, leader, "orders-{index} still led by fenced broker {leader} (seed {seed})");
        assert!(partition.isr.contains(&leader_now), "orders-{index} led from outside its ISR (seed {seed})");
        assert!(!partition.isr.contains(&leader), "fenced broker {leader} still in the ISR of orders-{index} (seed {seed})");
        let before = &before_kill.topic("orders").expect("orders").partitions[index];
        if before.leader == Some(leader) {
            assert!(partition.leader_epoch > before.leader_epoch, "orders-{index} moved without a new leader epoch (seed {seed})");
        }
    }

    let mut acknowledged_after_kill = false;
    for attempt in 0..3 {
        let name = format!("after-kill-{attempt}");
        acknowledged_after_kill |= propose_until_applied(&survivor, |s| s.topic(&name).is_some(), |s| plan_create_topic(s, &name, 1, 2, &[], 1)).await;
    }
    assert!(acknowledged_after_kill, "no create was acknowledged after the leader was killed (seed {seed})");

    runtime.restart(hosts[&leader].id());
    let converged = || {
        let statuses: Vec<_> = (1..=3).filter_map(|id| handle_of(&handles, id)).map(|h| h.status()).collect();
        statuses.len() == 3 && statuses.iter().all(|s| s.ready && s.registered && s.applied_index == statuses[0].applied_index)
    };
    wait_until("all three nodes converged after the restart", converged).await;
    let mut snapshots = Vec::new();
    for id in 1..=3 {
        let state = handle_of(&handles, id).expect("handle").read_state().await.expect("running");
        assert!(state.topic("orders").is_some(), "node {id} lacks `orders` (seed {seed})");
        for attempt in 0..3 {
            assert!(state.topic(&format!("after-kill-{attempt}")).is_some(), "node {id} lacks `after-kill-{attempt}` (seed {seed})");
        }
        snapshots.push(state.snapshot().encode_to_bytes());
    }
    assert!(snapshots.windows(2).all(|w| w[0] == w[1]), "metadata diverged after convergence (seed {seed})");
}

/// A topic deleted and at once created again through another broker (whose
/// applied metadata may not show the delete yet) is created, and a topic
/// created and at once deleted through another broker is deleted: refusals
/// are decided on committed metadata, never on a lagging broker's view.
#[madsim::test]
async fn delete_then_create_through_a_lagging_broker_is_decided_on_committed_metadata() {
    let runtime = Handle::current();
    let seed = runtime.seed();
    let (handles, _disks, _hosts) = boot_cluster(&runtime, seed);
    let all_registered = || (1..=3).all(|id| handle_of(&handles, id).is_some_and(|h| h.status().ready && h.status().registered));
    wait_until("a leader elected and every broker registered", all_registered).await;
    let leader = (1..=3).find(|id| handle_of(&handles, *id).is_some_and(|h| h.status().is_leader)).expect("a leader");
    let on_leader = handle_of(&handles, leader).expect("leader handle");
    let budget_ms = 30_000;
    let create = |name: &str| keel_meta::admin_ops::TopicCreate {
        name: name.to_string(),
        partitions: 2,
        replication_factor: 3,
        configs: Vec::new(),
        validate_only: false,
    };
    for round in 0..6u64 {
        // Alternate which follower serves the second step.
        let follower = (1..=3).filter(|id| *id != leader).nth((round % 2) as usize).expect("two followers");
        let on_follower = handle_of(&handles, follower).expect("follower handle");
        let name = format!("recreated-{round}");
        on_leader.create_topic(&create(&name), budget_ms).await.unwrap_or_else(|error| panic!("create {name} on the leader: {error} (seed {seed})"));
        // The follower has it once the leader's next message arrives; wait
        // for that, so the delete below is planned there with the topic.
        wait_until("the follower applied the create", || on_follower.status().applied_index >= on_leader.status().applied_index).await;
        on_leader.delete_topic(&name, budget_ms).await.unwrap_or_else(|error| panic!("delete {name} on the leader: {error} (seed {seed})"));
        on_follower
            .create_topic(&create(&name), budget_ms)
            .await
            .unwrap_or_else(|error| panic!("{name} deleted (acknowledged) and created again on broker {follower}: {error} (seed {seed})"));
        let again = format!("deleted-at-once-{round}");
        on_leader.create_topic(&create(&again), budget_ms).await.unwrap_or_else(|error| panic!("create {again} on the leader: {error} (seed {seed})"));
        on_follower
            .delete_topic(&again, budget_ms)
            .await
            .unwrap_or_else(|error| panic!("{again} created (acknowledged) and deleted on broker {follower}: {error} (seed {seed})"));
        let state = on_leader.read_linearizable().await.expect("leader serves linearizable reads");
        assert!(state.topic(&name).is_some(), "{name} missing after it was created again (seed {seed})");
        assert!(state.topic(&again).is_none(), "{again} present after it was deleted (seed {seed})");
    }
}
