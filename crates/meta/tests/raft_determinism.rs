//! raft-rs in a box: three RawNodes over a seeded, lossy, reordering
//! in-memory network, no runtime. Shows that with `ElectionJitter` a seed
//! fixes the whole election history (raft-rs alone draws from thread_rng),
//! and that Raft's safety holds under the noise.

use std::collections::BTreeMap;

use keel_io::NodeRng;
use keel_meta::raft_node::{raft_config, raft_logger, ElectionJitter, RaftTiming};
use raft::eraftpb::{Entry, EntryType, Message};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};
use rand::seq::SliceRandom;
use rand::Rng;

const NODES: [u64; 3] = [1, 2, 3];

struct Node {
    raw: RawNode<MemStorage>,
    jitter: ElectionJitter,
    applied: Vec<(u64, Vec<u8>)>,
}

struct Cluster {
    nodes: BTreeMap<u64, Node>,
    in_flight: Vec<Message>,
    network: NodeRng,
    /// One line per node per tick: the observable history.
    trace: Vec<String>,
    /// term -> leader, to check at most one leader per term.
    leaders_by_term: BTreeMap<u64, u64>,
}

impl Cluster {
    fn new(seed: u64) -> Cluster {
        let mut nodes = BTreeMap::new();
        for id in NODES {
            let storage = MemStorage::new_with_conf_state((NODES.to_vec(), vec![]));
            let config = raft_config(id, RaftTiming::default(), 0).expect("valid config");
            let raw = RawNode::new(&config, storage, &raft_logger(id)).expect("raw node");
            let jitter = ElectionJitter::new(NodeRng::new(seed, id, 0), &config);
            nodes.insert(id, Node { raw, jitter, applied: Vec::new() });
        }
        Cluster { nodes, in_flight: Vec::new(), network: NodeRng::new(seed, 0, 99), trace: Vec::new(), leaders_by_term: BTreeMap::new() }
    }

    fn process_ready(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("node");
        node.jitter.apply(&mut node.raw);
        if !node.raw.has_ready() {
            return;
        }
        let mut ready = node.raw.ready();
        self.in_flight.extend(ready.take_messages());
        let store = node.raw.raft.raft_log.store.clone();
        store.wl().append(ready.entries()).expect("append");
        if let Some(hard_state) = ready.hs() {
            store.wl().set_hardstate(hard_state.clone());
        }
        self.in_flight.extend(ready.take_persisted_messages());
        let committed = ready.take_committed_entries();
        let mut light = node.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            store.wl().mut_hard_state().set_commit(commit);
        }
        self.in_flight.extend(light.take_messages());
        for entry in committed.into_iter().chain(light.take_committed_entries()) {
            apply(&mut node.applied, entry);
        }
        node.raw.advance_apply();
        node.jitter.apply(&mut node.raw);
    }

    fn run(&mut self, ticks: u64) {
        for tick in 0..ticks {
            for id in NODES {
                let node = self.nodes.get_mut(&id).expect("node");
                node.raw.tick();
                node.jitter.apply(&mut node.raw);
            }
            // The leader proposes now and then, so there is a log to agree on.
            if tick % 7 == 0 {
                let leader = NODES.iter().copied().find(|id| self.nodes[id].raw.raft.state == StateRole::Leader);
                if let Some(leader) = leader {
                    let node = self.nodes.get_mut(&leader).expect("node");
                    let _ = node.raw.propose(vec![], format!("tick-{tick}").into_bytes());
                }
            }
            // Deliver in a seeded order, dropping 10%: elections must survive loss.
            let mut batch = std::mem::take(&mut self.in_flight);
            batch.shuffle(&mut self.network);
            for message in batch {
                if self.network.gen_bool(0.1) {
                    continue;
                }
                let node = self.nodes.get_mut(&message.to).expect("addressed node");
                let _ = node.raw.step(message);
                node.jitter.apply(&mut node.raw);
            }
            for id in NODES {
                self.process_ready(id);
            }
            for id in NODES {
                let raft = &self.nodes[&id].raw.raft;
                if raft.state == StateRole::Leader {
                    let previous = self.leaders_by_term.insert(raft.term, id);
                    assert!(previous.is_none() || previous == Some(id), "two leaders in term {}", raft.term);
                }
                self.trace.push(format!(
                    "{tick} n{id} term={} role={:?} leader={} commit={} timeout={}",
                    raft.term,
                    raft.state,
                    raft.leader_id,
                    raft.raft_log.committed,
                    self.nodes[&id].jitter.timeout_ticks()
                ));
            }
        }
    }
}

fn apply(applied: &mut Vec<(u64, Vec<u8>)>, entry: Entry) {
    if entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty() {
        applied.push((entry.index, entry.data.to_vec()));
    }
}

fn run(seed: u64) -> Cluster {
    let mut cluster = Cluster::new(seed);
    cluster.run(400);
    cluster
}

#[test]
fn one_seed_fixes_the_whole_election_history() {
    for seed in [1, 42, 1234] {
        let first = run(seed);
        let second = run(seed);
        assert_eq!(first.trace, second.trace, "seed {seed}: two runs diverged");
    }
}

#[test]
fn seeds_change_the_jitter_and_so_the_history() {
    let first_leaders: std::collections::BTreeSet<u64> =
        (1..=30).map(|seed| *run(seed).leaders_by_term.values().next().expect("a leader was elected")).collect();
    assert!(first_leaders.len() > 1, "every seed elected the same first leader: the jitter is not seeded");
    assert_ne!(run(1).trace, run(2).trace);
}

#[test]
fn elections_and_commits_stay_safe_under_loss_and_reordering() {
    for seed in 1..=40 {
        let cluster = run(seed);
        assert!(!cluster.leaders_by_term.is_empty(), "seed {seed}: no leader in 400 ticks");
        let logs: Vec<&Vec<(u64, Vec<u8>)>> = cluster.nodes.values().map(|n| &n.applied).collect();
        let longest = logs.iter().max_by_key(|l| l.len()).expect("nodes");
        assert!(!longest.is_empty(), "seed {seed}: nothing committed");
        for log in &logs {
            assert_eq!(&longest[..log.len()], log.as_slice(), "seed {seed}: applied logs diverge");
        }
    }
}
