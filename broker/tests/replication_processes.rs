//! Partition replication across three real `keel` processes on 127.0.0.1:
//! acks=all produces through the admin path, the partition leader is
//! SIGKILLed, and every acknowledged record is readable from the new leader
//! at the offset it was acknowledged at. Bad produces (unknown partition, a
//! follower, a stale leader epoch, a corrupt batch checksum) get Kafka's
//! error code, append nothing, and the broker keeps serving.

#[path = "support/admin_client.rs"]
mod admin_client;
#[path = "support/cluster.rs"]
mod cluster;
use admin_client::{http, http_with_body, json_field};
use cluster::{partition_leader, wait_for, Node};

use std::collections::BTreeMap;

use keel_error_codes::{CORRUPT_MESSAGE, FENCED_LEADER_EPOCH, NOT_LEADER_OR_FOLLOWER, UNKNOWN_LEADER_EPOCH, UNKNOWN_TOPIC_OR_PARTITION};

/// The Kafka error code of an admin endpoint refusal.
fn error_code_of(body: &str) -> Option<i16> {
    json_field(body, "error_code")?.parse().ok()
}

/// The `"value"`s of a /records answer, by offset.
fn records_of(body: &str) -> BTreeMap<u64, String> {
    body.split("{\"offset\":")
        .skip(1)
        .filter_map(|record| {
            let offset = record.split(',').next()?.parse().ok()?;
            let value = record.split("\"value\":\"").nth(1)?.split('"').next()?.to_string();
            Some((offset, value))
        })
        .collect()
}

fn log_end(node: &Node, topic: &str) -> Option<u64> {
    let (_, body) = http(node.admin_port, "GET", &format!("/records/{topic}/0?offset=0&max_bytes=1&upto=log_end"))?;
    json_field(&body, "log_end_offset")?.parse().ok()
}

#[test]
fn acks_all_records_survive_a_sigkilled_partition_leader() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut nodes = cluster::start_settled(dir.path(), 3, &["--replica-lag-time-max-ms", "2000"]);
    let (code, body) = http(nodes[0].admin_port, "POST", "/topics/orders?partitions=1&replication_factor=3&min_insync_replicas=2").expect("create");
    assert_eq!(code, 201, "{body}");
    let mut placement = None;
    wait_for("the partition has a leader", || {
        placement = partition_leader(&nodes[0], "orders");
        placement.is_some()
    });
    let (leader, epoch) = placement.expect("placement");
    let leader_port = nodes[leader as usize - 1].admin_port;
    let follower = nodes.iter().find(|n| n.id != leader).expect("a follower");

    let mut acknowledged: BTreeMap<u64, String> = BTreeMap::new();
    for batch in 0..20 {
        let values: Vec<String> = (0..10).map(|r| format!("batch-{batch}-record-{r}")).collect();
        let mut answer = None;
        wait_for(&format!("batch {batch} acknowledged with acks=all"), || {
            answer = http_with_body(leader_port, "POST", "/produce/orders/0?acks=all&timeout_ms=5000", &values.join("\n"));
            answer.as_ref().is_some_and(|(code, _)| *code == 200)
        });
        let (_, body) = answer.expect("answered");
        let base: u64 = json_field(&body, "base_offset").expect("base_offset").parse().expect("number");
        for (i, value) in values.into_iter().enumerate() {
            acknowledged.insert(base + i as u64, value);
        }
    }

    // Bad input: the right Kafka error code, nothing appended, still serving.
    let end_before = log_end(&nodes[leader as usize - 1], "orders").expect("log end");
    let (code, body) = http_with_body(leader_port, "POST", "/produce/orders/7?acks=all", "x").expect("answer");
    assert_eq!((code, error_code_of(&body)), (404, Some(UNKNOWN_TOPIC_OR_PARTITION)), "unknown partition: {body}");
    let (code, body) = http_with_body(follower.admin_port, "POST", "/produce/orders/0?acks=all", "x").expect("answer");
    assert_eq!((code, error_code_of(&body)), (503, Some(NOT_LEADER_OR_FOLLOWER)), "a follower: {body}");
    let (code, body) = http_with_body(leader_port, "POST", &format!("/produce/orders/0?acks=all&leader_epoch={}", epoch + 1), "x").expect("answer");
    assert_eq!(error_code_of(&body), Some(UNKNOWN_LEADER_EPOCH), "a future leader epoch ({code}): {body}");
    let (code, body) = http_with_body(leader_port, "POST", "/produce/orders/0?acks=all&batch_crc=12345", "x\ny").expect("answer");
    assert_eq!((code, error_code_of(&body)), (400, Some(CORRUPT_MESSAGE)), "a corrupt batch checksum: {body}");
    assert_eq!(log_end(&nodes[leader as usize - 1], "orders"), Some(end_before), "refused produces appended nothing");

    nodes[leader as usize - 1].kill();
    let survivor = nodes.iter().find(|n| n.id != leader).expect("survivor");
    let mut new_placement = None;
    wait_for("a new partition leader among the survivors", || {
        new_placement = partition_leader(survivor, "orders").filter(|(l, _)| *l != leader);
        new_placement.is_some()
    });
    let (new_leader, new_epoch) = new_placement.expect("new leader");
    assert!(new_epoch > epoch, "a new leader epoch: {new_epoch} after {epoch}");
    let new_leader_port = nodes[new_leader as usize - 1].admin_port;
    let total = acknowledged.len();
    let mut read = BTreeMap::new();
    wait_for("every acknowledged record readable from the new leader", || {
        read = http(new_leader_port, "GET", "/records/orders/0?offset=0").map(|(_, body)| records_of(&body)).unwrap_or_default();
        read.len() >= total
    });
    for (offset, value) in &acknowledged {
        assert_eq!(read.get(offset), Some(value), "acknowledged record at offset {offset}");
    }

    // The old epoch is fenced on the new leader; new acks=all produces succeed.
    let (_, body) = http_with_body(new_leader_port, "POST", &format!("/produce/orders/0?acks=all&leader_epoch={epoch}"), "stale").expect("answer");
    assert_eq!(error_code_of(&body), Some(FENCED_LEADER_EPOCH), "a stale leader epoch: {body}");
    wait_for("acks=all after the kill", || {
        http_with_body(new_leader_port, "POST", "/produce/orders/0?acks=all", "after-kill").is_some_and(|(code, _)| code == 200)
    });

    // The killed broker comes back and catches up to the same log.
    nodes[leader as usize - 1].start();
    let new_leader_node = &nodes[new_leader as usize - 1];
    let restarted = &nodes[leader as usize - 1];
    wait_for("the restarted broker holds the new leader's log", || {
        let end = log_end(new_leader_node, "orders");
        end.is_some() && log_end(restarted, "orders") == end
    });
    let (_, body) = http(restarted.admin_port, "GET", "/records/orders/0?offset=0&upto=log_end").expect("read");
    let replica = records_of(&body);
    for (offset, value) in &acknowledged {
        assert_eq!(replica.get(offset), Some(value), "restarted replica at offset {offset}");
    }
}
