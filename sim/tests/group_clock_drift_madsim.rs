//! One clock per node reaches the group coordinator: a broker whose clock
//! runs fast expires a silent member's session sooner in real (simulated
//! world) time, exactly as its own clock says. A single-node cluster booted
//! through keel-node; a consumer joins with a 6 s session timeout and then
//! stays silent. At 5.1 s of world time its next heartbeat is answered
//! UNKNOWN_MEMBER_ID when the node's clock runs 40% fast (7.1 s of node
//! time have passed) and accepted when it does not. Before the coordinator
//! shared the node's clock (it had a clock of its own, never drifted), the
//! drifted case answered 0 as well.
#![cfg(madsim)]

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{ApiKey, GroupId, HeartbeatRequest, JoinGroupRequest, RequestKind, ResponseKind, SyncGroupRequest};
use kafka_protocol::protocol::StrBytes;
use keel_io::{Clock, Disk, NodeRng, SimDisk};
use keel_node::{NodeConfig, Seams};
use keel_sim::host;
use keel_sim::kafka_client::{code, KafkaConnection};
use madsim::runtime::Handle;

const SESSION_TIMEOUT_MS: u64 = 6_000;
/// When the silent member heartbeats again, in world time after its join.
const SILENT_MS: u64 = 5_100;
const TIMEOUT: Duration = Duration::from_secs(5);

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// Joins (twice: the first answer names the member id), syncs as the
/// leader, stays silent for `SILENT_MS` of world time, heartbeats once:
/// that heartbeat's error code.
async fn heartbeat_after_silence(addr: &str) -> i16 {
    let mut connection = KafkaConnection::connect_negotiated(addr, "drift-test", TIMEOUT).await.expect("connect");
    let group = GroupId(text("drifting"));
    let mut member_id = String::new();
    let joined = loop {
        let join = JoinGroupRequest::default()
            .with_group_id(group.clone())
            .with_session_timeout_ms(SESSION_TIMEOUT_MS as i32)
            .with_rebalance_timeout_ms(SESSION_TIMEOUT_MS as i32)
            .with_member_id(text(&member_id))
            .with_protocol_type(text("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default().with_name(text("range")).with_metadata(Bytes::from_static(b"t"))]);
        let Ok(ResponseKind::JoinGroup(joined)) = connection.request(ApiKey::JoinGroup, 5, &RequestKind::JoinGroup(join), TIMEOUT).await else {
            panic!("JoinGroup unanswered");
        };
        member_id = joined.member_id.as_str().to_string();
        if joined.error_code != code::MEMBER_ID_REQUIRED {
            assert_eq!(joined.error_code, code::NONE, "JoinGroup refused");
            break joined;
        }
    };
    let sync = SyncGroupRequest::default()
        .with_group_id(group.clone())
        .with_generation_id(joined.generation_id)
        .with_member_id(text(&member_id))
        .with_assignments(vec![SyncGroupRequestAssignment::default().with_member_id(text(&member_id)).with_assignment(Bytes::new())]);
    let Ok(ResponseKind::SyncGroup(synced)) = connection.request(ApiKey::SyncGroup, 3, &RequestKind::SyncGroup(sync), TIMEOUT).await else {
        panic!("SyncGroup unanswered");
    };
    assert_eq!(synced.error_code, code::NONE, "SyncGroup refused");
    tokio::time::sleep(Duration::from_millis(SILENT_MS)).await;
    let heartbeat = HeartbeatRequest::default().with_group_id(group).with_generation_id(joined.generation_id).with_member_id(text(&member_id));
    let Ok(ResponseKind::Heartbeat(answer)) = connection.request(ApiKey::Heartbeat, 3, &RequestKind::Heartbeat(heartbeat), TIMEOUT).await else {
        panic!("Heartbeat unanswered");
    };
    answer.error_code
}

/// A single-node cluster whose clock drifts `drift_ppm`; the heartbeat's answer.
async fn answer_with_drift(drift_ppm: i64) -> i16 {
    let runtime = Handle::current();
    let seed = runtime.seed();
    let clock = Clock::new();
    clock.set_drift_ppm(drift_ppm);
    let config = NodeConfig { group_initial_rebalance_delay_ms: 0, ..NodeConfig::default() };
    let disk = SimDisk::new(NodeRng::new(seed, 1, 1_000));
    let _broker = runtime
        .create_node()
        .name("broker-1")
        .ip("10.0.5.1".parse().expect("ip"))
        .init(move || {
            let (disk, clock, config) = (disk.clone(), clock.clone(), config.clone());
            async move {
                let seams = Seams::new(Disk::Sim(disk), clock, NodeRng::new(seed, 1, 1));
                let node = host::start_node(host::identity("drift", "10.0.5", 1, 1, None), "10.0.5.1", &config, seams).await.expect("start");
                let _ = node.run_until(std::future::pending()).await;
            }
        })
        .build();
    let client = runtime.create_node().name("client").ip("10.0.6.1".parse().expect("ip")).build();
    // The node is ready (and serves Kafka) once it leads and registered.
    tokio::time::sleep(Duration::from_secs(3)).await;
    client.spawn(async { heartbeat_after_silence("10.0.5.1:9092").await }).await.expect("client task")
}

#[madsim::test]
async fn a_coordinator_whose_clock_runs_fast_expires_a_silent_member_by_its_own_clock() {
    let seed = Handle::current().seed();
    assert_eq!(answer_with_drift(400_000).await, code::UNKNOWN_MEMBER_ID, "7.1 s of node time passed: the session expired (seed {seed})");
}

#[madsim::test]
async fn a_coordinator_on_true_time_keeps_the_member_whose_session_has_not_run_out() {
    let seed = Handle::current().seed();
    assert_eq!(answer_with_drift(0).await, code::NONE, "5.1 s of a 6 s session passed (seed {seed})");
}
