//! Scenario tests of the coordinator against Kafka's classic-protocol
//! behaviour.

mod common;

use bytes::Bytes;
use common::*;
use keel_error_codes::*;
use keel_group::{Config, Coordinator, GroupState};

const GROUP: &str = "orders";

#[test]
fn two_members_join_elect_one_leader_and_both_get_assignments() {
    let mut h = Harness::new(config_without_delay());
    let join_a = h.join(join_request(GROUP, "", "client-a"));
    // With no initial delay the first join completes at the next tick: a
    // generation of one.
    h.advance(0);
    let reply_a = h.join_reply(join_a);
    assert_eq!(reply_a.error_code, NONE);
    assert_eq!(reply_a.generation_id, 1);
    let a = reply_a.member_id.clone();
    assert_eq!(reply_a.leader_id, a);

    let join_b = h.join(join_request(GROUP, "", "client-b"));
    assert!(!h.is_answered(join_b));
    // A learns of the rebalance from its heartbeat and rejoins.
    assert_eq!(h.heartbeat(GROUP, &a, 1), REBALANCE_IN_PROGRESS);
    let rejoin_a = h.join(join_request(GROUP, &a, "client-a"));
    let leader = h.join_reply(rejoin_a);
    let follower = h.join_reply(join_b);
    let b = follower.member_id.clone();
    assert_eq!(leader.generation_id, 2);
    assert_eq!(follower.generation_id, 2);
    assert_eq!(leader.leader_id, a);
    assert_eq!(follower.leader_id, a);
    assert_eq!(leader.protocol_name.as_deref(), Some("range"));
    let listed: Vec<&str> = leader.members.iter().map(|m| m.member_id.as_str()).collect();
    let mut expected = vec![a.as_str(), b.as_str()];
    expected.sort();
    assert_eq!(listed, expected);
    assert!(leader.members.iter().all(|m| m.metadata == "meta-range"));
    assert!(follower.members.is_empty());

    let sync_b = h.sync(sync_request(GROUP, &b, 2));
    assert!(!h.is_answered(sync_b), "a follower's SyncGroup waits for the leader's");
    assert_eq!(h.coordinator.describe(GROUP).state, GroupState::CompletingRebalance);
    let mut leader_sync = sync_request(GROUP, &a, 2);
    leader_sync.assignments = assignments(&[(&a, "partitions-a"), (&b, "partitions-b")]);
    let sync_a = h.sync(leader_sync);
    assert_eq!(h.sync_reply(sync_a).assignment, Bytes::from("partitions-a"));
    assert_eq!(h.sync_reply(sync_b).assignment, Bytes::from("partitions-b"));
    assert_eq!(h.sync_reply(sync_b).protocol_name.as_deref(), Some("range"));
    let described = h.coordinator.describe(GROUP);
    assert_eq!(described.state, GroupState::Stable);
    assert_eq!(described.members.len(), 2);
    assert_eq!(h.heartbeat(GROUP, &b, 2), NONE);
}

#[test]
fn third_member_joining_stable_group_makes_everyone_rejoin_into_generation_2() {
    let mut h = Harness::new(Config::default());
    let (a, b) = h.stable_pair(GROUP);
    let join_c = h.join(join_request(GROUP, "", "client-c"));
    assert!(!h.is_answered(join_c));
    assert_eq!(h.coordinator.describe(GROUP).state, GroupState::PreparingRebalance);
    assert_eq!(h.heartbeat(GROUP, &a, 1), REBALANCE_IN_PROGRESS);
    assert_eq!(h.heartbeat(GROUP, &b, 1), REBALANCE_IN_PROGRESS);
    // Commits of the old generation are still allowed while preparing.
    assert_eq!(h.commit(GROUP, &a, 1), Ok(()));
    let rejoin_a = h.join(join_request(GROUP, &a, "client-a"));
    assert!(!h.is_answered(rejoin_a), "B has not rejoined yet");
    let rejoin_b = h.join(join_request(GROUP, &b, "client-b"));
    for request_id in [rejoin_a, rejoin_b, join_c] {
        let reply = h.join_reply(request_id);
        assert_eq!(reply.error_code, NONE);
        assert_eq!(reply.generation_id, 2);
        assert_eq!(reply.leader_id, a);
    }
    assert_eq!(h.join_reply(rejoin_a).members.len(), 3);
    assert_eq!(h.coordinator.describe(GROUP).state, GroupState::CompletingRebalance);
    assert_eq!(h.heartbeat(GROUP, &b, 2), NONE);
    assert_eq!(h.heartbeat(GROUP, &b, 1), ILLEGAL_GENERATION);
}

#[test]
fn session_expiry_removes_the_member_and_rebalances() {
    let mut h = Harness::new(Config::default());
    let (a, b) = h.stable_pair(GROUP);
    let synced_ms = h.now_ms;
    // A heartbeats, B falls silent.
    for _ in 0..2 {
        h.advance_to(h.now_ms + 4_000);
        assert_eq!(h.heartbeat(GROUP, &a, 1), NONE);
    }
    h.advance_to(synced_ms + SESSION_TIMEOUT_MS - 1);
    assert_eq!(h.coordinator.describe(GROUP).state, GroupState::Stable);
    h.advance_to(synced_ms + SESSION_TIMEOUT_MS);
    let described = h.coordinator.describe(GROUP);
    assert_eq!(described.state, GroupState::PreparingRebalance);
    assert!(described.members.iter().all(|m| m.member_id != b));
    assert_eq!(h.heartbeat(GROUP, &b, 1), UNKNOWN_MEMBER_ID);
    assert_eq!(h.heartbeat(GROUP, &a, 1), REBALANCE_IN_PROGRESS);
    let rejoin_a = h.join(join_request(GROUP, &a, "client-a"));
    let reply = h.join_reply(rejoin_a);
    assert_eq!(reply.generation_id, 2);
    assert_eq!(reply.members.len(), 1);

    // The last member's expiry leaves the group Empty.
    h.advance_to(h.now_ms + SESSION_TIMEOUT_MS);
    let described = h.coordinator.describe(GROUP);
    assert_eq!(described.state, GroupState::Empty);
    assert_eq!(described.generation_id, 3);
    assert_eq!(h.coordinator.next_deadline_ms(), None);
}

#[test]
fn leave_rebalances_and_answers_the_leavers_waiting_join() {
    let mut h = Harness::new(Config::default());
    let (a, b) = h.stable_pair(GROUP);
    let left = h.leave(leave_request(GROUP, &[&a, "nobody"]));
    assert_eq!(left.error_code, NONE);
    assert_eq!(left.members[0].error_code, NONE);
    assert_eq!(left.members[1].error_code, UNKNOWN_MEMBER_ID);
    let described = h.coordinator.describe(GROUP);
    assert_eq!(described.state, GroupState::PreparingRebalance);
    // The leader left: B, the earliest joiner remaining, leads.
    assert_eq!(described.leader_id.as_deref(), Some(b.as_str()));
    let rejoin_b = h.join(join_request(GROUP, &b, "client-b"));
    assert_eq!(h.join_reply(rejoin_b).generation_id, 2);
    assert_eq!(h.join_reply(rejoin_b).leader_id, b);
    assert_eq!(h.join_reply(rejoin_b).members.len(), 1);

    // C leaves while its JoinGroup waits (for B): the join is answered.
    let (join_c, c) = h.join_new(GROUP, "client-c");
    let left = h.leave(leave_request(GROUP, &[&c]));
    assert_eq!(left.members[0].error_code, NONE);
    assert_eq!(h.join_reply(join_c).error_code, UNKNOWN_MEMBER_ID);
    assert_eq!(h.join_reply(join_c).member_id, "");
    let rejoin_b = h.join(join_request(GROUP, &b, "client-b"));
    assert_eq!(h.join_reply(rejoin_b).generation_id, 3);

    // B leaves while D's JoinGroup waits for it: D's join completes at once.
    let (join_d, d) = h.join_new(GROUP, "client-d");
    assert!(!h.is_answered(join_d));
    h.leave(leave_request(GROUP, &[&b]));
    let reply_d = h.join_reply(join_d);
    assert_eq!(reply_d.generation_id, 4);
    assert_eq!(reply_d.leader_id, d);
}

#[test]
fn rebalance_timeout_removes_members_that_do_not_rejoin() {
    let mut h = Harness::new(Config::default());
    let (a, b) = h.stable_pair(GROUP);
    let started_ms = h.now_ms;
    let join_c = h.join(join_request(GROUP, "", "client-c"));
    let rejoin_a = h.join(join_request(GROUP, &a, "client-a"));
    // B stays alive (it heartbeats) but never rejoins.
    while h.now_ms + 5_000 < started_ms + REBALANCE_TIMEOUT_MS {
        h.advance_to(h.now_ms + 5_000);
        assert_eq!(h.heartbeat(GROUP, &b, 1), REBALANCE_IN_PROGRESS);
        assert!(!h.is_answered(rejoin_a));
    }
    h.advance_to(started_ms + REBALANCE_TIMEOUT_MS - 1);
    assert!(!h.is_answered(rejoin_a));
    h.advance_to(started_ms + REBALANCE_TIMEOUT_MS);
    let reply_a = h.join_reply(rejoin_a);
    assert_eq!(reply_a.generation_id, 2);
    let members: Vec<String> = reply_a.members.iter().map(|m| m.member_id.clone()).collect();
    assert!(!members.contains(&b));
    assert_eq!(members.len(), 2);
    assert_eq!(h.join_reply(join_c).generation_id, 2);
    assert_eq!(h.heartbeat(GROUP, &b, 1), UNKNOWN_MEMBER_ID);
}

#[test]
fn member_id_required_hands_out_an_id_and_admits_the_rejoin() {
    let mut h = Harness::new(config_without_delay());
    let mut request = join_request(GROUP, "", "client-a");
    request.require_known_member_id = true;
    let first = h.join(request.clone());
    let reply = h.join_reply(first);
    assert_eq!(reply.error_code, MEMBER_ID_REQUIRED);
    assert!(reply.member_id.starts_with("client-a-"));
    assert!(h.coordinator.describe(GROUP).members.is_empty());
    request.member_id = reply.member_id.clone();
    let second = h.join(request.clone());
    h.advance(0);
    let joined = h.join_reply(second);
    assert_eq!(joined.error_code, NONE);
    assert_eq!(joined.member_id, reply.member_id);
    assert_eq!(joined.generation_id, 1);
    let mut leader_sync = sync_request(GROUP, &joined.member_id, 1);
    leader_sync.assignments = assignments(&[(&joined.member_id, "a")]);
    assert_eq!(h.sync_now(leader_sync).error_code, NONE);

    // A pending member holds a rebalance open until it joins...
    let mut pending = join_request(GROUP, "", "client-b");
    pending.require_known_member_id = true;
    let b = h.join_now(pending.clone()).member_id;
    let rejoin_a = h.join(request.clone());
    assert!(!h.is_answered(rejoin_a));
    // ... or its id expires after its session timeout.
    h.advance_to(h.now_ms + SESSION_TIMEOUT_MS);
    assert_eq!(h.join_reply(rejoin_a).generation_id, 2);
    pending.member_id = b;
    let late = h.join(pending);
    assert_eq!(h.join_reply(late).error_code, UNKNOWN_MEMBER_ID);
}

#[test]
fn inconsistent_protocols_are_refused() {
    let mut h = Harness::new(config_without_delay());
    let mut no_type = join_request(GROUP, "", "client-x");
    no_type.protocol_type = String::new();
    let refused = h.join(no_type);
    assert_eq!(h.join_reply(refused).error_code, INCONSISTENT_GROUP_PROTOCOL);
    assert_eq!(h.coordinator.describe(GROUP).state, GroupState::Dead, "a refused join creates no group");

    let mut a_request = join_request(GROUP, "", "client-a");
    a_request.protocols = vec![protocol("range"), protocol("roundrobin")];
    let join_a = h.join(a_request);
    h.advance(0);
    let a = h.join_reply(join_a).member_id;

    let mut other_type = join_request(GROUP, "", "client-b");
    other_type.protocol_type = "connect".to_owned();
    assert_eq!(h.join_now(other_type).error_code, INCONSISTENT_GROUP_PROTOCOL);
    let mut disjoint = join_request(GROUP, "", "client-b");
    disjoint.protocols = vec![protocol("sticky")];
    assert_eq!(h.join_now(disjoint).error_code, INCONSISTENT_GROUP_PROTOCOL);
    // A known member may change protocols only to ones the others share.
    let mut b_request = join_request(GROUP, "", "client-b");
    b_request.protocols = vec![protocol("roundrobin")];
    let join_b = h.join(b_request);
    let mut a_narrow = join_request(GROUP, &a, "client-a");
    a_narrow.protocols = vec![protocol("range")];
    assert_eq!(h.join_now(a_narrow).error_code, INCONSISTENT_GROUP_PROTOCOL);
    assert!(!h.is_answered(join_b));

    let mut leader_sync = sync_request(GROUP, &a, 1);
    leader_sync.protocol_name = Some("roundrobin".to_owned());
    assert_eq!(h.sync_now(leader_sync).error_code, INCONSISTENT_GROUP_PROTOCOL);
}

#[test]
fn protocol_is_chosen_by_member_votes_and_ties_go_to_the_leader() {
    let mut h = Harness::new(Config::default());
    let mut a = join_request(GROUP, "", "client-a");
    a.protocols = vec![protocol("range"), protocol("roundrobin")];
    let mut b = join_request(GROUP, "", "client-b");
    b.protocols = vec![protocol("roundrobin"), protocol("range")];
    let join_a = h.join(a.clone());
    let join_b = h.join(b.clone());
    h.advance_to(h.now_ms + 10_000);
    // One vote each: the leader's (A's) preference wins.
    assert_eq!(h.join_reply(join_a).protocol_name.as_deref(), Some("range"));
    assert_eq!(h.join_reply(join_b).protocol_name.as_deref(), Some("range"));
    let leader_reply = h.join_reply(join_a);
    assert!(leader_reply.members.iter().all(|m| m.metadata == "meta-range"));

    // C votes roundrobin too: two to one.
    let mut c = join_request(GROUP, "", "client-c");
    c.protocols = vec![protocol("roundrobin"), protocol("range")];
    let join_c = h.join(c);
    a.member_id = h.join_reply(join_a).member_id;
    b.member_id = h.join_reply(join_b).member_id;
    let rejoin_a = h.join(a);
    let rejoin_b = h.join(b);
    for request_id in [rejoin_a, rejoin_b, join_c] {
        assert_eq!(h.join_reply(request_id).protocol_name.as_deref(), Some("roundrobin"));
    }
}

#[test]
fn session_timeout_outside_the_configured_bounds_is_refused() {
    let config = Config { group_min_session_timeout_ms: 6_000, group_max_session_timeout_ms: 60_000, ..Config::default() };
    let mut h = Harness::new(config);
    for session_timeout_ms in [0, 5_999, 60_001] {
        let mut request = join_request(GROUP, "", "client-a");
        request.session_timeout_ms = session_timeout_ms;
        assert_eq!(h.join_now(request).error_code, INVALID_SESSION_TIMEOUT);
    }
    assert!(h.coordinator.list().is_empty());
    for session_timeout_ms in [6_000, 60_000] {
        let mut request = join_request(GROUP, "", "client-a");
        request.session_timeout_ms = session_timeout_ms;
        let request_id = h.join(request);
        assert!(!h.is_answered(request_id));
    }
    let bad = Config { group_min_session_timeout_ms: 2, group_max_session_timeout_ms: 1, ..Config::default() };
    assert!(Coordinator::new(bad).is_err());
}

#[test]
fn stale_generations_and_unknown_members_are_refused_on_heartbeat_sync_and_commit() {
    let mut h = Harness::new(Config::default());
    let (a, _b) = h.stable_pair(GROUP);
    assert_eq!(h.heartbeat(GROUP, &a, 0), ILLEGAL_GENERATION);
    assert_eq!(h.heartbeat(GROUP, &a, 2), ILLEGAL_GENERATION);
    assert_eq!(h.heartbeat(GROUP, "ghost", 1), UNKNOWN_MEMBER_ID);
    assert_eq!(h.heartbeat("no-such-group", &a, 1), UNKNOWN_MEMBER_ID);
    assert_eq!(h.heartbeat("", &a, 1), INVALID_GROUP_ID);
    assert_eq!(h.sync_now(sync_request(GROUP, &a, 0)).error_code, ILLEGAL_GENERATION);
    assert_eq!(h.sync_now(sync_request(GROUP, "ghost", 1)).error_code, UNKNOWN_MEMBER_ID);
    assert_eq!(h.sync_now(sync_request("no-such-group", &a, 1)).error_code, UNKNOWN_MEMBER_ID);
    let late_sync = h.sync(sync_request(GROUP, &a, 1));
    assert_eq!(h.sync_reply(late_sync).assignment, Bytes::from("a"), "Stable answers with the stored assignment");

    assert_eq!(h.commit(GROUP, &a, 1), Ok(()));
    assert_eq!(h.commit(GROUP, &a, 0), Err(ILLEGAL_GENERATION));
    assert_eq!(h.commit(GROUP, "ghost", 1), Err(UNKNOWN_MEMBER_ID));
    // Only members may commit while the group has any.
    assert_eq!(h.commit(GROUP, "", -1), Err(UNKNOWN_MEMBER_ID));
    assert_eq!(h.commit(GROUP, &a, -1), Err(ILLEGAL_GENERATION));
    assert_eq!(h.commit("no-such-group", &a, 3), Err(ILLEGAL_GENERATION));
    // A simple consumer commits to a group no one joined: it is created Empty.
    assert_eq!(h.commit("simple", "", -1), Ok(()));
    assert_eq!(h.coordinator.describe("simple").state, GroupState::Empty);
    assert_eq!(h.commit("simple", "", -1), Ok(()));

    // Between the JoinGroup answer and the assignment a commit must wait.
    let rejoin_a = h.join(join_request(GROUP, &a, "client-a"));
    let _ = rejoin_a;
    assert_eq!(h.commit(GROUP, &a, 1), Ok(()));
    let b = h.coordinator.describe(GROUP).members.iter().find(|m| m.member_id != a).unwrap().member_id.clone();
    let _rejoin_b = h.join(join_request(GROUP, &b, "client-b"));
    assert_eq!(h.coordinator.describe(GROUP).state, GroupState::CompletingRebalance);
    assert_eq!(h.commit(GROUP, &a, 2), Err(REBALANCE_IN_PROGRESS));
    assert_eq!(h.commit(GROUP, &a, 1), Err(ILLEGAL_GENERATION));
}

#[test]
fn initial_rebalance_delay_waits_for_more_members() {
    let mut h = Harness::new(Config::default());
    let start_ms = h.now_ms;
    let join_a = h.join(join_request(GROUP, "", "client-a"));
    assert_eq!(h.coordinator.next_deadline_ms(), Some(start_ms + 3_000));
    h.advance_to(start_ms + 1_000);
    let join_b = h.join(join_request(GROUP, "", "client-b"));
    // Everyone known has joined, but the delay never ends early.
    assert!(!h.is_answered(join_a));
    h.advance_to(start_ms + 3_000);
    // B arrived during the delay: it is stretched once more.
    assert!(!h.is_answered(join_a));
    assert_eq!(h.coordinator.next_deadline_ms(), Some(start_ms + 6_000));
    h.advance_to(start_ms + 5_999);
    assert!(!h.is_answered(join_b));
    h.advance_to(start_ms + 6_000);
    assert_eq!(h.join_reply(join_a).generation_id, 1);
    assert_eq!(h.join_reply(join_b).generation_id, 1);
    assert_eq!(h.join_reply(join_a).members.len(), 2);

    // Newcomers keep stretching it, but never past the rebalance timeout.
    let mut h = Harness::new(Config::default());
    let start_ms = h.now_ms;
    let mut joins = Vec::new();
    for client in 0..10 {
        if client > 0 {
            h.advance_to(h.now_ms + 1_000);
        }
        let mut request = join_request(GROUP, "", &format!("client-{client}"));
        request.rebalance_timeout_ms = 10_000;
        joins.push(h.join(request));
    }
    h.advance_to(start_ms + 9_999);
    assert!(joins.iter().all(|r| !h.is_answered(*r)));
    h.advance_to(start_ms + 10_000);
    assert!(joins.iter().all(|r| h.join_reply(*r).generation_id == 1));
    assert_eq!(h.join_reply(joins[0]).members.len(), 10);

    // With no delay configured the first join completes at the next tick.
    let mut h = Harness::new(config_without_delay());
    let join_a = h.join(join_request(GROUP, "", "client-a"));
    assert_eq!(h.coordinator.next_deadline_ms(), Some(h.now_ms));
    h.advance(0);
    assert_eq!(h.join_reply(join_a).generation_id, 1);
}

#[test]
fn failover_clear_answers_every_waiting_request_not_coordinator() {
    let mut h = Harness::new(Config::default());
    let (a, b) = h.stable_pair(GROUP);
    let join_c = h.join(join_request(GROUP, "", "client-c"));
    let rejoin_a = h.join(join_request(GROUP, &a, "client-a"));
    let rejoin_b = h.join(join_request(GROUP, &b, "client-b"));
    let c = h.join_reply(join_c).member_id;
    let sync_c = h.sync(sync_request(GROUP, &c, 2));
    let sync_b = h.sync(sync_request(GROUP, &b, 2));
    let other = h.join(join_request("other", "", "client-d"));
    assert!(h.is_answered(rejoin_a) && h.is_answered(rejoin_b));
    assert!(!h.is_answered(sync_c) && !h.is_answered(sync_b) && !h.is_answered(other));

    let out = h.coordinator.clear();
    assert_eq!(out.len(), 3);
    for output in out {
        let keel_group::Output::Reply { request_id, response } = output else {
            panic!("clear stores nothing: {output:?}");
        };
        assert_eq!(response.error_code(), NOT_COORDINATOR);
        assert!(h.replies.insert(request_id, response).is_none());
    }
    assert!(h.coordinator.list().is_empty());
    assert_eq!(h.coordinator.describe(GROUP).state, GroupState::Dead);
    assert_eq!(h.coordinator.next_deadline_ms(), None);
    assert_eq!(h.heartbeat(GROUP, &a, 2), UNKNOWN_MEMBER_ID);
    // Ids are never handed out twice, even after a clear.
    let fresh = h.join(join_request(GROUP, "", "client-c"));
    h.advance_to(h.now_ms + 10_000);
    assert_ne!(h.join_reply(fresh).member_id, c);
}

#[test]
fn members_that_never_sync_are_removed_at_the_sync_deadline() {
    let mut h = Harness::new(Config::default());
    let (_, a) = h.join_new(GROUP, "client-a");
    let (join_b, b) = h.join_new(GROUP, "client-b");
    // Initial delay 3 s, stretched once for B.
    h.advance_to(h.now_ms + 6_000);
    assert_eq!(h.join_reply(join_b).generation_id, 1);
    let joined_ms = h.now_ms;
    let mut leader_sync = sync_request(GROUP, &a, 1);
    leader_sync.assignments = assignments(&[(&a, "a"), (&b, "b")]);
    assert_eq!(h.sync_now(leader_sync).error_code, NONE);
    assert_eq!(h.coordinator.describe(GROUP).state, GroupState::Stable);
    // B keeps heartbeating but never asks for its assignment.
    while h.now_ms + 4_000 < joined_ms + REBALANCE_TIMEOUT_MS {
        h.advance_to(h.now_ms + 4_000);
        assert_eq!(h.heartbeat(GROUP, &a, 1), NONE);
        assert_eq!(h.heartbeat(GROUP, &b, 1), NONE);
    }
    h.advance_to(joined_ms + REBALANCE_TIMEOUT_MS - 1);
    assert_eq!(h.coordinator.describe(GROUP).state, GroupState::Stable);
    h.advance_to(joined_ms + REBALANCE_TIMEOUT_MS);
    let described = h.coordinator.describe(GROUP);
    assert_eq!(described.state, GroupState::PreparingRebalance);
    assert!(described.members.iter().all(|m| m.member_id != b));
    assert_eq!(h.heartbeat(GROUP, &b, 1), UNKNOWN_MEMBER_ID);
}

#[test]
fn a_newer_join_or_sync_of_the_same_member_supersedes_the_waiting_one() {
    let mut h = Harness::new(Config::default());
    let (a, b) = h.stable_pair(GROUP);
    let first = h.join(join_request(GROUP, &a, "client-a"));
    let second = h.join(join_request(GROUP, &a, "client-a"));
    assert_eq!(h.join_reply(first).error_code, REBALANCE_IN_PROGRESS);
    assert_eq!(h.join_reply(first).member_id, a);
    assert!(!h.is_answered(second));
    let rejoin_b = h.join(join_request(GROUP, &b, "client-b"));
    assert_eq!(h.join_reply(second).generation_id, 2);
    assert_eq!(h.join_reply(rejoin_b).generation_id, 2);

    let first_sync = h.sync(sync_request(GROUP, &b, 2));
    let second_sync = h.sync(sync_request(GROUP, &b, 2));
    assert_eq!(h.sync_reply(first_sync).error_code, REBALANCE_IN_PROGRESS);
    assert!(!h.is_answered(second_sync));
    let mut leader_sync = sync_request(GROUP, &a, 2);
    leader_sync.assignments = assignments(&[(&b, "b2")]);
    let sync_a = h.sync(leader_sync);
    assert_eq!(h.sync_reply(second_sync).assignment, Bytes::from("b2"));
    // The leader left itself out: it gets an empty assignment.
    assert_eq!(h.sync_reply(sync_a).error_code, NONE);
    assert!(h.sync_reply(sync_a).assignment.is_empty());
}

#[test]
fn follower_rejoin_in_stable_is_answered_at_once_but_leader_rejoin_rebalances() {
    let mut h = Harness::new(Config::default());
    let (a, b) = h.stable_pair(GROUP);
    let rejoin_b = h.join(join_request(GROUP, &b, "client-b"));
    let reply = h.join_reply(rejoin_b);
    assert_eq!(reply.generation_id, 1);
    assert_eq!(reply.leader_id, a);
    assert_eq!(h.coordinator.describe(GROUP).state, GroupState::Stable);
    let mut changed = join_request(GROUP, &b, "client-b");
    changed.protocols = vec![protocol("range"), protocol("sticky")];
    let changed_b = h.join(changed);
    assert!(!h.is_answered(changed_b), "changed metadata rebalances");
    let rejoin_a = h.join(join_request(GROUP, &a, "client-a"));
    assert_eq!(h.join_reply(rejoin_a).generation_id, 2);

    let sync_b = h.sync(sync_request(GROUP, &b, 2));
    // A rejoining leader during CompletingRebalance gets the same answer again.
    let again_a = h.join(join_request(GROUP, &a, "client-a"));
    assert_eq!(h.join_reply(again_a).generation_id, 2);
    assert_eq!(h.join_reply(again_a).members.len(), 2);
    // A member with new metadata sends the waiting followers back to JoinGroup.
    let mut changed_a = join_request(GROUP, &a, "client-a");
    changed_a.protocols = vec![protocol("range"), protocol("roundrobin")];
    let changed_a = h.join(changed_a);
    assert_eq!(h.sync_reply(sync_b).error_code, REBALANCE_IN_PROGRESS);
    assert!(!h.is_answered(changed_a));
}

#[test]
fn remove_group_succeeds_only_for_an_empty_group() {
    let mut h = Harness::new(Config::default());
    assert_eq!(h.coordinator.remove_group(GROUP), Err(GROUP_ID_NOT_FOUND));
    let (a, b) = h.stable_pair(GROUP);
    assert_eq!(h.coordinator.remove_group(GROUP), Err(NON_EMPTY_GROUP));
    h.leave(leave_request(GROUP, &[&a, &b]));
    assert_eq!(h.coordinator.describe(GROUP).state, GroupState::Empty);
    assert_eq!(h.coordinator.remove_group(GROUP), Ok(()));
    assert_eq!(h.coordinator.describe(GROUP).state, GroupState::Dead);
    assert!(h.coordinator.list().is_empty());
}

#[test]
fn static_membership_is_refused_with_unsupported_version() {
    let mut h = Harness::new(Config::default());
    let mut request = join_request(GROUP, "", "client-a");
    request.group_instance_id = Some("instance-1".to_owned());
    assert_eq!(h.join_now(request).error_code, UNSUPPORTED_VERSION);
    let (a, _) = h.stable_pair(GROUP);
    let mut sync = sync_request(GROUP, &a, 1);
    sync.group_instance_id = Some("instance-1".to_owned());
    assert_eq!(h.sync_now(sync).error_code, UNSUPPORTED_VERSION);
    let mut leave = leave_request(GROUP, &[&a]);
    leave.members[0].group_instance_id = Some("instance-1".to_owned());
    assert_eq!(h.leave(leave).members[0].error_code, UNSUPPORTED_VERSION);
    assert_eq!(h.coordinator.validate_commit(h.now_ms, GROUP, &a, Some("instance-1"), 1), Err(UNSUPPORTED_VERSION));
    assert_eq!(h.coordinator.describe(GROUP).state, GroupState::Stable);
}

#[test]
fn new_member_whose_join_waits_too_long_is_dropped() {
    let config = Config { new_member_join_timeout_ms: 20_000, ..Config::default() };
    let mut h = Harness::new(config);
    let (a, b) = h.stable_pair(GROUP);
    let mut slow = join_request(GROUP, "", "client-c");
    slow.rebalance_timeout_ms = 100_000;
    let started_ms = h.now_ms;
    let join_c = h.join(slow);
    // A rejoins; B stays alive but does not rejoin, so the phase lasts
    // until C's new-member timeout drops C.
    let rejoin_a = h.join(join_request(GROUP, &a, "client-a"));
    for _ in 0..4 {
        h.advance_to(h.now_ms + 4_999);
        assert_eq!(h.heartbeat(GROUP, &b, 1), REBALANCE_IN_PROGRESS);
    }
    assert!(!h.is_answered(join_c));
    h.advance_to(started_ms + 20_000);
    assert_eq!(h.join_reply(join_c).error_code, UNKNOWN_MEMBER_ID);
    assert!(!h.is_answered(rejoin_a));
    // B falls silent: its expiry ends the phase with A alone.
    h.advance_to(h.now_ms + SESSION_TIMEOUT_MS);
    assert_eq!(h.join_reply(rejoin_a).members.len(), 1);
}

#[test]
fn describe_and_list_report_kafka_views() {
    let mut h = Harness::new(Config::default());
    let (a, b) = h.stable_pair(GROUP);
    let described = h.coordinator.describe(GROUP);
    assert_eq!(described.protocol_type, "consumer");
    assert_eq!(described.protocol_name, "range");
    let by_id = |id: &str| described.members.iter().find(|m| m.member_id == id).cloned().unwrap();
    assert_eq!(by_id(&a).assignment, Bytes::from("a"));
    assert_eq!(by_id(&b).assignment, Bytes::from("b"));
    assert_eq!(by_id(&a).metadata, Bytes::from("meta-range"));
    assert_eq!(by_id(&a).client_id, "client-a");
    let listed = h.coordinator.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, GroupState::Stable);
    assert_eq!(listed[0].state.as_str(), "Stable");
    // Outside Stable, Kafka hides protocol, metadata and assignments.
    h.join(join_request(GROUP, &a, "client-a"));
    let described = h.coordinator.describe(GROUP);
    assert_eq!(described.protocol_name, "");
    assert!(described.members.iter().all(|m| m.assignment.is_empty() && m.metadata.is_empty()));
}

/// A coordinator that takes over `h`'s groups from their last stores.
fn take_over(h: &Harness, group_ids: &[&str]) -> Harness {
    let config = Config { member_id_epoch: h.coordinator.config().member_id_epoch + 1, ..h.coordinator.config().clone() };
    let mut next = Harness::new(config);
    next.now_ms = h.now_ms;
    let stored = group_ids.iter().filter_map(|g| h.last_store(g)).collect();
    next.coordinator.load(next.now_ms, stored).expect("stored groups load");
    next.coordinator.check_invariants();
    next
}

#[test]
fn a_stable_group_carries_on_under_a_new_coordinator_without_a_rebalance() {
    let mut h = Harness::new(Config::default());
    let (a, b) = h.stable_pair(GROUP);
    let stored = h.last_store(GROUP).expect("the generation was stored");
    assert_eq!(stored.generation_id, 1);
    assert_eq!(stored.leader_id.as_deref(), Some(a.as_str()));
    let member_ids: Vec<&str> = stored.members.iter().map(|m| m.member_id.as_str()).collect();
    assert_eq!(member_ids, vec![a.as_str(), b.as_str()], "join order, leader first");

    // The old coordinator's sessions are nearly over when the new one loads.
    h.advance(SESSION_TIMEOUT_MS - 1);
    let mut next = take_over(&h, &[GROUP]);
    let described = next.coordinator.describe(GROUP);
    assert_eq!(described.state, GroupState::Stable);
    assert_eq!(described.generation_id, 1);
    assert_eq!(described.leader_id.as_deref(), Some(a.as_str()));
    let assigned: Vec<(&str, &[u8])> = described.members.iter().map(|m| (m.member_id.as_str(), m.assignment.as_ref())).collect();
    assert_eq!(assigned, vec![(a.as_str(), &b"a"[..]), (b.as_str(), &b"b"[..])]);

    // Each member gets a full session on the new coordinator.
    next.advance(SESSION_TIMEOUT_MS - 1);
    assert_eq!(next.heartbeat(GROUP, &a, 1), NONE);
    assert_eq!(next.heartbeat(GROUP, &b, 1), NONE);
    assert_eq!(next.commit(GROUP, &a, 1), Ok(()));
    assert_eq!(next.commit(GROUP, &b, 1), Ok(()));
    // A follower that lost its SyncGroup answer gets its stored assignment.
    assert_eq!(next.sync_now(sync_request(GROUP, &b, 1)).assignment, "b");
    assert_eq!(next.coordinator.describe(GROUP).state, GroupState::Stable);
    assert!(next.stores.is_empty(), "nothing changed, nothing to store");

    // Only B keeps heartbeating: A's session (renewed by its commit) runs out
    // and the group rebalances without it, counting on from generation 1.
    next.advance(SESSION_TIMEOUT_MS / 2);
    assert_eq!(next.heartbeat(GROUP, &b, 1), NONE);
    next.advance(SESSION_TIMEOUT_MS / 2 + 1);
    assert_eq!(next.heartbeat(GROUP, &b, 1), REBALANCE_IN_PROGRESS);
    let rejoin_b = next.join(join_request(GROUP, &b, "client-b"));
    let joined = next.join_reply(rejoin_b);
    assert_eq!(joined.generation_id, 2);
    assert_eq!(joined.leader_id, b);
}

#[test]
fn a_sync_is_answered_only_once_its_generation_is_stored() {
    let mut h = Harness::new(config_without_delay());
    h.hold_stores = true;
    let (join_a, a) = h.join_new(GROUP, "client-a");
    h.advance(0);
    assert_eq!(h.join_reply(join_a).generation_id, 1);
    let mut leader_sync = sync_request(GROUP, &a, 1);
    leader_sync.assignments = assignments(&[(&a, "a")]);
    let sync_a = h.sync(leader_sync.clone());
    assert!(!h.is_answered(sync_a), "the assignment waits for its store");
    assert_eq!(h.held_stores.len(), 1);
    assert_eq!(h.coordinator.describe(GROUP).state, GroupState::CompletingRebalance);
    assert_eq!(h.heartbeat(GROUP, &a, 1), NONE);
    assert_eq!(h.commit(GROUP, &a, 1), Err(REBALANCE_IN_PROGRESS));
    // A repeated SyncGroup of the leader neither stores again nor overtakes.
    let again = h.sync(leader_sync);
    assert!(h.is_answered(sync_a) && !h.is_answered(again));
    assert_eq!(h.sync_reply(sync_a).error_code, REBALANCE_IN_PROGRESS);
    assert_eq!(h.held_stores.len(), 1);

    h.complete_store();
    let synced = h.sync_reply(again);
    assert_eq!(synced.error_code, NONE);
    assert_eq!(synced.assignment, "a");
    assert_eq!(h.coordinator.describe(GROUP).state, GroupState::Stable);
    assert_eq!(h.commit(GROUP, &a, 1), Ok(()));
}

#[test]
fn a_failed_store_sends_the_members_back_to_join_and_a_later_store_wins() {
    let mut h = Harness::new(config_without_delay());
    h.hold_stores = true;
    let (join_a, a) = h.join_new(GROUP, "client-a");
    h.advance(0);
    assert_eq!(h.join_reply(join_a).generation_id, 1);
    let mut leader_sync = sync_request(GROUP, &a, 1);
    leader_sync.assignments = assignments(&[(&a, "a")]);
    let sync_a = h.sync(leader_sync);
    let failed = h.fail_store(COORDINATOR_NOT_AVAILABLE);
    assert_eq!(h.sync_reply(sync_a).error_code, COORDINATOR_NOT_AVAILABLE);
    assert_eq!(h.coordinator.describe(GROUP).state, GroupState::PreparingRebalance);

    let rejoin_a = h.join(join_request(GROUP, &a, "client-a"));
    assert_eq!(h.join_reply(rejoin_a).generation_id, 2);
    let mut leader_sync = sync_request(GROUP, &a, 2);
    leader_sync.assignments = assignments(&[(&a, "a2")]);
    let sync_a = h.sync(leader_sync);
    let stored = h.complete_store();
    assert!(stored > failed, "later stores carry larger ids");
    assert_eq!(h.sync_reply(sync_a).assignment, "a2");
    // The failed store's outcome is reported again (e.g. it committed after
    // all): the Stable generation does not move.
    let out = h.coordinator.stored(h.now_ms, failed);
    assert!(out.is_empty());
    assert_eq!(h.coordinator.describe(GROUP).generation_id, 2);
}

#[test]
fn a_group_that_empties_is_stored_empty_and_loads_empty_with_its_generation() {
    let mut h = Harness::new(Config::default());
    let (a, b) = h.stable_pair(GROUP);
    let left = h.leave(leave_request(GROUP, &[&a, &b]));
    assert!(left.members.iter().all(|m| m.error_code == NONE));
    let stored = h.last_store(GROUP).expect("stored");
    assert!(stored.members.is_empty());
    assert_eq!(stored.leader_id, None);
    assert_eq!(stored.generation_id, 2);

    let mut next = take_over(&h, &[GROUP]);
    assert_eq!(next.coordinator.describe(GROUP).state, GroupState::Empty);
    assert_eq!(next.heartbeat(GROUP, &a, 1), UNKNOWN_MEMBER_ID);
    let join = next.join(join_request(GROUP, "", "client-c"));
    next.advance_to(next.now_ms + 6_000);
    assert_eq!(next.join_reply(join).generation_id, 3);
}

#[test]
fn a_rebalance_in_progress_at_the_failover_resumes_from_the_stored_generation() {
    let mut h = Harness::new(Config::default());
    let (a, b) = h.stable_pair(GROUP);
    // C joins: generation 2 is being formed when the coordinator moves.
    let join_c = h.join(join_request(GROUP, "", "client-c"));
    let rejoin_a = h.join(join_request(GROUP, &a, "client-a"));
    assert!(!h.is_answered(join_c) && !h.is_answered(rejoin_a));
    let mut next = take_over(&h, &[GROUP]);
    assert_eq!(next.coordinator.describe(GROUP).generation_id, 1);
    // B never heard of the rebalance: it carries on in generation 1.
    assert_eq!(next.heartbeat(GROUP, &b, 1), NONE);
    // A rejoins (it is the leader: that starts a rebalance) and C, whose id
    // the new coordinator never saw, starts over.
    let rejoin_a = next.join(join_request(GROUP, &a, "client-a"));
    assert!(!next.is_answered(rejoin_a));
    assert_eq!(next.heartbeat(GROUP, &b, 1), REBALANCE_IN_PROGRESS);
    let rejoin_b = next.join(join_request(GROUP, &b, "client-b"));
    assert_eq!(next.join_reply(rejoin_a).generation_id, 2);
    assert_eq!(next.join_reply(rejoin_b).generation_id, 2);
}

#[test]
fn a_stored_group_that_breaks_an_invariant_is_refused() {
    let mut h = Harness::new(Config::default());
    h.stable_pair(GROUP);
    let mut stored = h.last_store(GROUP).expect("stored");
    stored.members.swap(0, 1);
    let mut next = Coordinator::new(Config::default()).expect("valid config");
    let refused = next.load(0, vec![stored.clone()]).unwrap_err();
    assert!(refused.reason.contains("leader"), "{refused}");
    stored.members.swap(0, 1);
    stored.protocol_name = Some("sticky".to_owned());
    let refused = next.load(0, vec![stored.clone()]).unwrap_err();
    assert!(refused.reason.contains("protocol"), "{refused}");
    stored.protocol_name = Some("range".to_owned());
    let refused = next.load(0, vec![stored.clone(), stored.clone()]).unwrap_err();
    assert!(refused.reason.contains("twice"), "{refused}");
    assert!(next.list().is_empty(), "nothing loads when anything is refused");
    next.load(0, vec![stored]).expect("a valid group loads");
}
