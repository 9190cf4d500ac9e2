//! The metadata state machine and controller policy, without any runtime.

use std::collections::BTreeSet;

use keel_io::NodeRng;
use keel_meta::controller::{
    assign_replicas, plan_create_partitions, plan_create_topic, plan_elect_offline_leaders, plan_fence_broker, rack_alternating_order,
};
use keel_meta::proto::{
    AllocateProducerIds, ChangePartition, ClaimGroupCoordinator, Command, CommitOffsets, CommitStamp, CommittedOffsetRecord, DeleteTopic, GroupMemberRecord,
    GroupProtocolRecord, GroupRecord, MetadataBatch, MetadataSnapshot, RegisterBroker, UnfenceBroker,
};
use keel_meta::{MetadataError, MetadataState};
use rand::{Rng, RngCore};

fn register(broker_id: u64, rack: Option<&str>) -> MetadataBatch {
    register_incarnation(broker_id, rack, 1)
}

fn register_incarnation(broker_id: u64, rack: Option<&str>, incarnation_id: u64) -> MetadataBatch {
    MetadataBatch {
        commands: vec![Command::RegisterBroker(RegisterBroker {
            broker_id,
            host: "127.0.0.1".into(),
            port: 9092 + broker_id as u32,
            rack: rack.map(str::to_string),
            incarnation_id,
        })
        .into()],
    }
}

fn cluster(racks: &[Option<&str>]) -> MetadataState {
    let mut state = MetadataState::new();
    for (i, rack) in racks.iter().enumerate() {
        state.apply_batch(&register(i as u64 + 1, *rack)).expect("register");
    }
    state
}

#[test]
fn create_topic_assigns_live_brokers_and_starts_at_epoch_zero() {
    let mut state = cluster(&[None, None, None]);
    let batch = plan_create_topic(&state, "orders", 6, 3, &[("retention.ms".into(), "1000".into())], 0).expect("plan");
    let version_before = state.metadata_version();
    assert_eq!(state.apply_batch(&batch).expect("apply"), version_before + 1);
    let topic = state.topic("orders").expect("created");
    assert_eq!(topic.partitions.len(), 6);
    assert_eq!(topic.configs.get("retention.ms").map(String::as_str), Some("1000"));
    for partition in &topic.partitions {
        assert_eq!(partition.replicas.len(), 3);
        assert_eq!(partition.isr, partition.replicas);
        assert_eq!(partition.leader, Some(partition.replicas[0]));
        assert_eq!((partition.leader_epoch, partition.partition_epoch), (0, 0));
    }
}

#[test]
fn a_restarted_broker_never_continues_a_leader_epoch_it_held() {
    let mut state = cluster(&[None, None, None]);
    state.apply_batch(&plan_create_topic(&state, "orders", 3, 3, &[], 0).expect("plan")).expect("create");
    let before: Vec<(Option<u64>, u64)> = state.topic("orders").expect("orders").partitions.iter().map(|p| (p.leader, p.leader_epoch)).collect();
    // The same incarnation registering again (a retry) changes no epoch.
    state.apply_batch(&register(1, None)).expect("retried registration");
    let retried: Vec<(Option<u64>, u64)> = state.topic("orders").expect("orders").partitions.iter().map(|p| (p.leader, p.leader_epoch)).collect();
    assert_eq!(retried, before);
    // A new incarnation of broker 1: every partition it leads gets a new leader epoch, others keep theirs.
    state.apply_batch(&register_incarnation(1, None, 2)).expect("registration after a restart");
    for (partition, (leader, epoch)) in state.topic("orders").expect("orders").partitions.iter().zip(before) {
        assert_eq!(partition.leader, leader, "leadership does not move");
        let expected = if leader == Some(1) { epoch + 1 } else { epoch };
        assert_eq!(partition.leader_epoch, expected, "partition led by {leader:?}");
    }
}

#[test]
fn racing_creates_of_one_topic_apply_once_and_a_failing_batch_changes_nothing() {
    let mut state = cluster(&[None, None, None]);
    let first = plan_create_topic(&state, "t", 1, 3, &[], 0).expect("plan");
    let second = plan_create_topic(&state, "t", 2, 1, &[], 1).expect("planned on the same old state");
    state.apply_batch(&first).expect("first wins");
    let before = state.clone();
    assert_eq!(state.apply_batch(&second), Err(MetadataError::TopicAlreadyExists("t".into())));
    assert_eq!(state, before, "a rejected batch must not change anything, not even the version");
    let mut both = MetadataBatch { commands: vec![] };
    both.commands.push(register(9, None).commands[0].clone());
    both.commands.push(first.commands[0].clone());
    assert!(state.apply_batch(&both).is_err());
    assert_eq!(state, before, "atomic: the registration in the failed batch did not happen");
}

#[test]
fn bad_requests_are_errors() {
    let state = cluster(&[None, None]);
    assert!(matches!(plan_create_topic(&state, "", 1, 1, &[], 0), Err(MetadataError::InvalidTopicName { .. })));
    assert!(matches!(plan_create_topic(&state, "a/b", 1, 1, &[], 0), Err(MetadataError::InvalidTopicName { .. })));
    assert!(matches!(plan_create_topic(&state, "..", 1, 1, &[], 0), Err(MetadataError::InvalidTopicName { .. })));
    assert!(matches!(plan_create_topic(&state, &"x".repeat(250), 1, 1, &[], 0), Err(MetadataError::InvalidTopicName { .. })));
    assert_eq!(plan_create_topic(&state, "t", 1, 3, &[], 0), Err(MetadataError::InvalidReplicationFactor { requested: 3, live_brokers: 2 }));
    assert_eq!(plan_create_topic(&state, "t", 0, 1, &[], 0), Err(MetadataError::InvalidPartitionCount(0)));
    assert_eq!(plan_create_topic(&state, "t", 10_001, 1, &[], 0), Err(MetadataError::InvalidPartitionCount(10_001)));
    let mut duplicate_endpoint = state.clone();
    let mut clash = register(7, None);
    if let Some(Command::RegisterBroker(r)) = clash.commands[0].command.as_mut() {
        r.port = 9093; // broker 1's port
    }
    assert!(matches!(duplicate_endpoint.apply_batch(&clash), Err(MetadataError::InvalidRegistration { .. })));
    assert_eq!(duplicate_endpoint.apply_batch(&MetadataBatch { commands: vec![] }), Err(MetadataError::EmptyBatch));
}

#[test]
fn partition_changes_are_guarded_by_epoch_and_isr() {
    let mut state = cluster(&[None, None, None]);
    state.apply_batch(&plan_create_topic(&state, "t", 1, 3, &[], 0).expect("plan")).expect("create");
    let change = |expected, leader, isr: &[u64]| MetadataBatch {
        commands: vec![Command::ChangePartition(ChangePartition {
            topic: "t".into(),
            partition: 0,
            expected_partition_epoch: expected,
            leader,
            isr: isr.to_vec(),
        })
        .into()],
    };
    // ISR shrink keeping the leader: partition epoch moves, leader epoch does not.
    state.apply_batch(&change(0, Some(1), &[1, 2])).expect("shrink");
    let p = state.partition("t", 0).expect("partition").clone();
    assert_eq!((p.leader_epoch, p.partition_epoch, p.isr.clone()), (0, 1, vec![1, 2]));
    // A decision made at the old epoch is refused.
    assert!(matches!(state.apply_batch(&change(0, Some(2), &[2])), Err(MetadataError::StalePartitionEpoch { actual: 1, .. })));
    // Leader outside the ISR: no unclean election.
    assert!(matches!(state.apply_batch(&change(1, Some(3), &[1, 2])), Err(MetadataError::InvalidPartitionChange { .. })));
    assert!(matches!(state.apply_batch(&change(1, Some(1), &[])), Err(MetadataError::InvalidPartitionChange { .. })));
    assert!(matches!(state.apply_batch(&change(1, Some(1), &[1, 9])), Err(MetadataError::InvalidPartitionChange { .. })));
    // Leader change bumps both epochs.
    state.apply_batch(&change(1, Some(2), &[1, 2])).expect("move leader");
    let p = state.partition("t", 0).expect("partition");
    assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (Some(2), 1, 2));
}

#[test]
fn replicas_spread_across_racks_and_leadership_rotates() {
    let brokers: Vec<(u64, Option<String>)> =
        [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")].iter().map(|(id, r)| (*id, Some(r.to_string()))).collect();
    assert_eq!(rack_alternating_order(&brokers), vec![1, 3, 5, 2, 4, 6]);
    let rack_of = |id: u64| brokers.iter().find(|(b, _)| *b == id).and_then(|(_, r)| r.clone()).expect("rack");
    let assignment = assign_replicas(&brokers, 60, 3, 7).expect("assign");
    let mut leader_counts = std::collections::BTreeMap::new();
    for replicas in &assignment {
        let racks: BTreeSet<String> = replicas.iter().map(|id| rack_of(*id)).collect();
        assert_eq!(racks.len(), 3, "replicas {replicas:?} share a rack");
        assert_eq!(replicas.iter().collect::<BTreeSet<_>>().len(), 3);
        *leader_counts.entry(replicas[0]).or_insert(0) += 1;
    }
    assert_eq!(leader_counts.len(), 6);
    assert!(leader_counts.values().all(|count| *count == 10), "{leader_counts:?}");
}

#[test]
fn fencing_moves_leadership_within_the_isr_and_never_outside_it() {
    let mut state = cluster(&[None, None, None]);
    state.apply_batch(&plan_create_topic(&state, "t", 3, 3, &[], 0).expect("plan")).expect("create");
    state.apply_batch(&plan_create_topic(&state, "single", 1, 1, &[], 0).expect("plan")).expect("create");
    let single_leader = state.partition("single", 0).expect("p").leader.expect("led");
    state.apply_batch(&plan_fence_broker(&state, single_leader).expect("plan")).expect("fence");
    assert!(!state.is_live(single_leader));
    let single = state.partition("single", 0).expect("p");
    assert_eq!(single.leader, None, "the only replica is fenced: offline, not unclean");
    assert_eq!(single.isr, vec![single_leader], "last ISR member stays so the partition can recover");
    for index in 0..3 {
        let p = state.partition("t", index).expect("p");
        assert!(!p.isr.contains(&single_leader));
        let leader = p.leader.expect("another ISR member leads");
        assert_ne!(leader, single_leader);
        assert!(p.isr.contains(&leader));
    }
    assert_eq!(plan_fence_broker(&state, 99), Err(MetadataError::UnknownBroker(99)));
}

/// Random controller decisions applied on two independent replicas of the
/// state machine: identical snapshot bytes at every step, invariants always.
#[test]
fn seeded_random_histories_apply_identically_on_two_replicas() {
    let mut offline_elections = 0;
    for seed in 1..=300u64 {
        let mut rng = NodeRng::new(seed, 0, 0);
        let mut primary = MetadataState::new();
        let mut replica = MetadataState::new();
        for step in 0..120 {
            let broker = rng.gen_range(1..=5u64);
            let batch = match rng.gen_range(0..10) {
                0..=2 => Ok(register(broker, Some(["a", "b"][rng.gen_range(0..2)]))),
                3..=5 => plan_create_topic(
                    &primary,
                    &format!("topic-{}", rng.gen_range(0..20)),
                    rng.gen_range(1..8),
                    rng.gen_range(1..4),
                    &[],
                    rng.gen_range(0..100),
                ),
                6..=7 => plan_fence_broker(&primary, broker),
                8 => Ok(MetadataBatch { commands: vec![Command::UnfenceBroker(UnfenceBroker { broker_id: broker }).into()] }),
                _ => Ok(MetadataBatch {
                    commands: vec![Command::DeleteTopic(keel_meta::proto::DeleteTopic { name: format!("topic-{}", rng.gen_range(0..20)), topic_id: 0 }).into()],
                }),
            };
            let Ok(batch) = batch else { continue };
            let fenced_broker = batch.commands.iter().find_map(|c| match &c.command {
                Some(Command::FenceBroker(f)) => Some(f.broker_id),
                _ => None,
            });
            // The batch crosses the wire as bytes, like a Raft entry.
            let decoded = MetadataBatch::decode_from(&batch.encode_to_bytes()).expect("round trip");
            let a = primary.apply_batch(&batch);
            let b = replica.apply_batch(&decoded);
            assert_eq!(a, b, "seed {seed} step {step}: replicas disagree on the outcome");
            let snapshot = primary.snapshot().encode_to_bytes();
            assert_eq!(snapshot, replica.snapshot().encode_to_bytes(), "seed {seed} step {step}: replicas diverged");
            let restored = MetadataState::from_snapshot(&MetadataSnapshot::decode_from(&snapshot).expect("decode")).expect("own snapshot is valid");
            assert_eq!(restored, primary, "seed {seed} step {step}: snapshot round trip");
            if let (Ok(_), Some(fenced)) = (&a, fenced_broker) {
                for topic in primary.topics() {
                    for partition in &topic.partitions {
                        assert_ne!(partition.leader, Some(fenced), "seed {seed} step {step}: a fenced broker still leads");
                    }
                }
            }
            // Controller duty: offline partitions get a leader back once an ISR member is live.
            if let Some(elect) = plan_elect_offline_leaders(&primary) {
                primary.apply_batch(&elect).expect("election planned on current state applies");
                replica.apply_batch(&elect).expect("and applies on the replica too");
                offline_elections += 1;
            }
            for topic in primary.topics() {
                for partition in &topic.partitions {
                    let electable = partition.isr.iter().any(|id| primary.is_live(*id));
                    if electable {
                        assert!(partition.leader.is_some(), "seed {seed} step {step}: electable partition left offline");
                    }
                }
            }
        }
    }
    assert!(offline_elections > 0, "no history ever took a partition offline and back");
}

/// Entries and snapshots are input: garbage must be an error or a refused
/// batch, never a panic or a broken state.
#[test]
fn random_bytes_never_panic_the_decoder_or_the_state_machine() {
    let mut state = cluster(&[None, None, None]);
    state.apply_batch(&plan_create_topic(&state, "t", 2, 3, &[], 0).expect("plan")).expect("create");
    let mut rng = NodeRng::new(77, 0, 0);
    for _ in 0..20_000 {
        let mut bytes = vec![0u8; rng.gen_range(0..64)];
        rng.fill_bytes(&mut bytes);
        if let Ok(batch) = MetadataBatch::decode_from(&bytes) {
            let _ = state.apply_batch(&batch);
        }
        if let Ok(snapshot) = MetadataSnapshot::decode_from(&bytes) {
            if let Ok(restored) = MetadataState::from_snapshot(&snapshot) {
                restored.check_invariants();
            }
        }
    }
}

fn one_command(command: Command) -> MetadataBatch {
    MetadataBatch { commands: vec![command.into()] }
}

fn round_trip(state: &MetadataState) -> MetadataState {
    let bytes = state.snapshot().encode_to_bytes();
    MetadataState::from_snapshot(&MetadataSnapshot::decode_from(&bytes).expect("decodes")).expect("valid")
}

#[test]
fn producer_id_blocks_never_overlap_and_a_stale_block_is_refused() {
    let mut state = cluster(&[None, None]);
    let block = |broker_id, expected_next_producer_id| {
        one_command(Command::AllocateProducerIds(AllocateProducerIds { broker_id, expected_next_producer_id, count: 1000 }))
    };
    state.apply_batch(&block(1, 0)).expect("first block");
    assert_eq!(state.next_producer_id(), 1000);
    assert_eq!(state.apply_batch(&block(2, 0)), Err(MetadataError::StaleProducerIdBlock { expected: 0, actual: 1000 }));
    state.apply_batch(&block(2, 1000)).expect("second block");
    assert_eq!(round_trip(&state).next_producer_id(), 2000);
    assert!(matches!(state.apply_batch(&block(9, 2000)), Err(MetadataError::UnknownBroker(9))));
}

#[test]
fn committed_offsets_survive_a_snapshot_and_leave_with_their_topic() {
    let mut state = cluster(&[None]);
    state.apply_batch(&plan_create_topic(&state, "orders", 2, 1, &[], 0).expect("plan")).expect("create");
    let offset = |partition, offset| CommittedOffsetRecord { topic: "orders".into(), partition, offset, leader_epoch: -1, metadata: "m".into(), stamp: None };
    let stamped = |sequence, offsets| {
        let stamp = Some(CommitStamp { coordinator_term: 2, sequence });
        one_command(Command::CommitOffsets(CommitOffsets { group: "g".into(), offsets, stamp }))
    };
    let commit = |offsets| stamped(10, offsets);
    state.apply_batch(&stamped(9, vec![offset(0, 5), offset(1, 7)])).expect("commit");
    state.apply_batch(&stamped(11, vec![offset(0, 6)])).expect("commit again");
    // An earlier commit applied late (a retried proposal) changes nothing it is older than.
    state.apply_batch(&stamped(10, vec![offset(0, 1), offset(1, 8)])).expect("a late commit");
    let restored = round_trip(&state);
    let offsets = restored.group_offsets("g").expect("group has offsets");
    assert_eq!(offsets[&("orders".to_string(), 0)].offset, 6);
    assert_eq!(offsets[&("orders".to_string(), 1)].offset, 8);
    assert!(matches!(state.apply_batch(&commit(vec![offset(2, 1)])), Err(MetadataError::UnknownPartition { .. })));
    state.apply_batch(&one_command(Command::DeleteTopic(DeleteTopic { name: "orders".into(), topic_id: 0 }))).expect("delete");
    assert!(state.group_offsets("g").is_none());
}

#[test]
fn a_held_up_create_or_delete_planned_before_a_delete_is_refused_as_stale() {
    let mut state = cluster(&[None]);
    let create_t = plan_create_topic(&state, "t", 1, 1, &[], 0).expect("plan");
    state.apply_batch(&create_t).expect("create");
    let first_id = state.topic("t").expect("exists").topic_id;
    // Planned now, applied only after the delete below (held up in the network).
    let held_up_create = plan_create_topic(&state, "u", 1, 1, &[], 0).expect("plan");
    state.apply_batch(&one_command(Command::DeleteTopic(DeleteTopic { name: "t".into(), topic_id: first_id }))).expect("delete");
    assert!(matches!(state.apply_batch(&create_t), Err(MetadataError::StaleTopicPlan { .. })), "the deleted topic came back");
    assert!(matches!(state.apply_batch(&held_up_create), Err(error) if error.is_stale_plan()));
    // Survives a snapshot: every node refuses the same entries.
    let mut restored = round_trip(&state);
    assert!(matches!(restored.apply_batch(&create_t), Err(MetadataError::StaleTopicPlan { .. })));
    state.apply_batch(&plan_create_topic(&state, "t", 1, 1, &[], 0).expect("plan")).expect("a create planned after the delete");
    let stale_delete = one_command(Command::DeleteTopic(DeleteTopic { name: "t".into(), topic_id: first_id }));
    assert!(matches!(state.apply_batch(&stale_delete), Err(MetadataError::StaleTopicPlan { .. })), "a delete of the first `t` removed the second");
    assert!(state.topic("t").is_some());
}

#[test]
fn a_recreated_topic_gets_a_new_topic_id() {
    let mut state = cluster(&[None]);
    state.apply_batch(&plan_create_topic(&state, "t", 1, 1, &[], 0).expect("plan")).expect("create");
    let first_id = state.topic("t").expect("exists").topic_id;
    state.apply_batch(&one_command(Command::DeleteTopic(DeleteTopic { name: "t".into(), topic_id: 0 }))).expect("delete");
    state.apply_batch(&plan_create_topic(&state, "t", 1, 1, &[], 0).expect("plan")).expect("create again");
    assert_ne!(state.topic("t").expect("exists").topic_id, first_id);
    assert_eq!(round_trip(&state).topic("t").expect("restored").topic_id, state.topic("t").expect("exists").topic_id);
}

#[test]
fn partitions_grow_and_never_shrink() {
    let mut state = cluster(&[None, None, None]);
    state.apply_batch(&plan_create_topic(&state, "t", 2, 2, &[], 0).expect("plan")).expect("create");
    state.apply_batch(&plan_create_partitions(&state, "t", 5, 0).expect("plan")).expect("grow");
    let topic = state.topic("t").expect("exists");
    assert_eq!(topic.partitions.len(), 5);
    assert!(topic.partitions.iter().all(|p| p.replicas.len() == 2));
    assert!(matches!(plan_create_partitions(&state, "t", 5, 0), Err(MetadataError::InvalidPartitionGrowth { current: 5, requested: 5, .. })));
    assert!(matches!(plan_create_partitions(&state, "t", 3, 0), Err(MetadataError::InvalidPartitionGrowth { .. })));
    assert!(matches!(plan_create_partitions(&state, "nope", 3, 0), Err(MetadataError::UnknownTopic(_))));
}

fn claim(coordinator_term: u64) -> MetadataBatch {
    one_command(Command::ClaimGroupCoordinator(ClaimGroupCoordinator { coordinator_term }))
}

/// A Stable generation of group `g` with members `a` (the leader) and `b`.
fn stored_group(generation_id: i32, coordinator_term: u64, sequence: u64) -> GroupRecord {
    let member = |member_id: &str| GroupMemberRecord {
        member_id: member_id.into(),
        client_id: "client".into(),
        client_host: "/10.0.2.1".into(),
        session_timeout_ms: 2000,
        rebalance_timeout_ms: 3000,
        protocols: vec![GroupProtocolRecord { name: "range".into(), metadata: b"orders".to_vec() }],
        assignment: format!("{member_id}@{generation_id}").into_bytes(),
    };
    GroupRecord {
        group: "g".into(),
        generation_id,
        protocol_type: Some("consumer".into()),
        protocol_name: Some("range".into()),
        leader_id: Some("a".into()),
        members: vec![member("a"), member("b")],
        stamp: Some(CommitStamp { coordinator_term, sequence }),
    }
}

fn store(record: GroupRecord) -> MetadataBatch {
    one_command(Command::StoreGroup(record))
}

#[test]
fn stored_groups_survive_a_snapshot_and_only_the_claiming_coordinator_stores() {
    let mut state = cluster(&[None]);
    // No coordinator claimed the groups yet: nobody stores.
    assert!(matches!(state.apply_batch(&store(stored_group(1, 3, 0))), Err(MetadataError::GroupCoordinatorTerm { term: 3, claimed_term: 0 })));
    state.apply_batch(&claim(3)).expect("claim");
    state.apply_batch(&store(stored_group(1, 3, 0))).expect("store generation 1");
    state.apply_batch(&store(stored_group(2, 3, 4))).expect("store generation 2");
    // The same store again (a retried proposal) applies; an older one does not.
    state.apply_batch(&store(stored_group(2, 3, 4))).expect("the same store retried");
    assert!(matches!(state.apply_batch(&store(stored_group(1, 3, 0))), Err(MetadataError::StaleGroupStore { .. })));

    let restored = round_trip(&state);
    assert_eq!(restored, state);
    assert_eq!(restored.group_coordinator_term(), 3);
    let groups: Vec<&GroupRecord> = restored.groups().collect();
    assert_eq!(groups, vec![&stored_group(2, 3, 4)]);

    // A new coordinator claims the groups: the old one's late store is refused,
    // and so is a claim of an earlier term (its claim forwarded late).
    state.apply_batch(&claim(5)).expect("new claim");
    state.apply_batch(&claim(5)).expect("the same claim retried");
    assert!(matches!(state.apply_batch(&store(stored_group(3, 3, 9))), Err(MetadataError::GroupCoordinatorTerm { term: 3, claimed_term: 5 })));
    assert!(matches!(state.apply_batch(&claim(4)), Err(MetadataError::GroupCoordinatorTerm { term: 4, claimed_term: 5 })));
    assert_eq!(state.groups().next().map(|g| g.generation_id), Some(2));
    // The new coordinator's first store is newer than anything of the old one.
    state.apply_batch(&store(stored_group(3, 5, 0))).expect("store of the new coordinator");
    assert_eq!(round_trip(&state).groups().next().map(|g| g.generation_id), Some(3));

    // A group that emptied is stored without members; deleting the group's
    // topic leaves the membership alone (assignments are opaque to Keel).
    let emptied = GroupRecord {
        protocol_name: None,
        leader_id: None,
        members: Vec::new(),
        generation_id: 4,
        stamp: Some(CommitStamp { coordinator_term: 5, sequence: 1 }),
        ..stored_group(4, 5, 1)
    };
    state.apply_batch(&store(emptied.clone())).expect("store the emptied group");
    assert_eq!(round_trip(&state).groups().next(), Some(&emptied));
}

#[test]
fn a_stored_group_that_breaks_a_rule_is_refused_in_a_command_and_in_a_snapshot() {
    let mut state = cluster(&[None]);
    state.apply_batch(&claim(1)).expect("claim");
    let broken: Vec<(&str, GroupRecord)> = vec![
        ("leader", GroupRecord { leader_id: Some("b".into()), ..stored_group(1, 1, 0) }),
        ("empty group id", GroupRecord { group: String::new(), ..stored_group(1, 1, 0) }),
        ("twice", GroupRecord { members: [stored_group(1, 1, 0).members, stored_group(1, 1, 0).members].concat(), ..stored_group(1, 1, 0) }),
        ("stamp", GroupRecord { stamp: None, ..stored_group(1, 1, 0) }),
        ("protocol", GroupRecord { protocol_name: None, ..stored_group(1, 1, 0) }),
        ("negative", GroupRecord { generation_id: -1, ..stored_group(1, 1, 0) }),
    ];
    for (reason, record) in broken {
        let refused = state.apply_batch(&store(record.clone())).unwrap_err();
        assert!(refused.to_string().contains(reason), "{refused}");
        let mut snapshot = state.snapshot();
        snapshot.groups.push(record);
        assert!(matches!(MetadataState::from_snapshot(&snapshot), Err(MetadataError::InvalidSnapshot(_))));
    }
    assert_eq!(state.groups().count(), 0);
    // A snapshot naming a store of a term that never claimed the groups is refused.
    let mut snapshot = state.snapshot();
    snapshot.groups.push(stored_group(1, 2, 0));
    assert!(matches!(MetadataState::from_snapshot(&snapshot), Err(MetadataError::InvalidSnapshot(_))));
    // And one that lists a group twice.
    let mut snapshot = state.snapshot();
    snapshot.groups = vec![stored_group(1, 1, 0), stored_group(1, 1, 0)];
    assert!(matches!(MetadataState::from_snapshot(&snapshot), Err(MetadataError::InvalidSnapshot(_))));
}
