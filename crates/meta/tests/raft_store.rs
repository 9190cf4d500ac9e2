//! RaftStore bad input: a data directory from another cluster or another set
//! of voters is refused with a message naming both; raft-rs reads what was
//! written.

use keel_io::{Disk, NodeRng, SimDisk};
use keel_log::LogConfig;
use keel_meta::raft_store::{RaftStore, RaftStoreError};
use raft::eraftpb::{Entry, HardState};
use raft::Storage;

fn disk() -> Disk {
    Disk::Sim(SimDisk::new(NodeRng::new(1, 0, 0)))
}

#[tokio::test]
async fn data_dir_of_another_cluster_is_refused() {
    let disk = disk();
    drop(RaftStore::open(disk.clone(), "raft", "cluster-a", &[1, 2, 3], LogConfig::default()).await.expect("create"));
    let error = RaftStore::open(disk.clone(), "raft", "cluster-b", &[1, 2, 3], LogConfig::default()).await.err().expect("refused");
    assert!(matches!(error, RaftStoreError::WrongCluster { .. }), "{error}");
    assert!(error.to_string().contains("cluster-a") && error.to_string().contains("cluster-b"), "{error}");
    let error = RaftStore::open(disk, "raft", "cluster-a", &[1, 2, 4], LogConfig::default()).await.err().expect("refused");
    assert!(matches!(error, RaftStoreError::WrongVoters { .. }), "{error}");
}

#[tokio::test]
async fn raft_reads_back_what_was_made_durable() {
    let disk = disk();
    let mut store = RaftStore::open(disk.clone(), "raft", "c", &[1, 2, 3], LogConfig::default()).await.expect("create");
    let entries: Vec<Entry> = (1..=5).map(|index| Entry { index, term: 1, data: format!("e{index}").into_bytes(), ..Entry::default() }).collect();
    store.append(&entries).await.expect("append");
    let hard_state = HardState { term: 1, vote: 2, commit: 3 };
    store.set_hard_state(&hard_state).await.expect("hard state");
    drop(store);
    let store = RaftStore::open(disk, "raft", "c", &[3, 2, 1], LogConfig::default()).await.expect("reopen");
    let view = store.storage();
    let initial = view.initial_state().expect("state");
    assert_eq!(initial.hard_state, hard_state);
    assert_eq!(initial.conf_state.voters, vec![1, 2, 3]);
    assert_eq!((view.first_index().expect("first"), view.last_index().expect("last")), (1, 5));
    let read = view.entries(2, 5, None, raft::GetEntriesContext::empty(false)).expect("entries");
    assert_eq!(read, entries[1..4].to_vec());
    assert_eq!(view.term(5).expect("term"), 1);
}
