//! Three `MetaNode`s on SimDisks over an in-memory network that drops and
//! reorders messages, with crashes (unsynced bytes lost) and restarts.
//! Checks Raft's guarantees as seen by the metadata layer: at most one leader
//! per term, one entry per index on every node (across restarts), every
//! acknowledged proposal applied everywhere, and identical metadata after the
//! faults stop. Normal build only: the madsim build runs the real driver in
//! `sim/tests/meta_cluster_madsim.rs`, and `MADSIM_TEST_NUM` would repeat
//! this 40-seed loop for every madsim seed.
#![cfg(not(madsim))]

use std::collections::BTreeMap;

use keel_io::{Disk, NodeRng, SimDisk};
use keel_log::LogConfig;
use keel_meta::controller::plan_create_topic;
use keel_meta::node::MetaNode;
use keel_meta::proto::{Command, MetadataBatch, RegisterBroker};
use keel_meta::raft_node::RaftTiming;
use raft::eraftpb::Message;
use rand::seq::SliceRandom;
use rand::Rng;

const VOTERS: [u64; 3] = [1, 2, 3];
const CLUSTER_ID: &str = "meta-cluster-test";

struct Cluster {
    seed: u64,
    disks: BTreeMap<u64, SimDisk>,
    nodes: BTreeMap<u64, Option<MetaNode>>,
    incarnations: BTreeMap<u64, u64>,
    down_until_tick: BTreeMap<u64, u64>,
    in_flight: Vec<Message>,
    rng: NodeRng,
    /// index -> (term, data): what any node applied there. Must never disagree.
    applied_at: BTreeMap<u64, (u64, Vec<u8>)>,
    leaders_by_term: BTreeMap<u64, u64>,
    /// Acknowledged proposals: (index, data) they were applied as.
    acknowledged: Vec<(u64, Vec<u8>)>,
    proposals: BTreeMap<(u64, u64), Vec<u8>>,
    next_proposal_id: u64,
}

impl Cluster {
    async fn new(seed: u64) -> Cluster {
        let mut cluster = Cluster {
            seed,
            disks: BTreeMap::new(),
            nodes: BTreeMap::new(),
            incarnations: BTreeMap::new(),
            down_until_tick: BTreeMap::new(),
            in_flight: Vec::new(),
            rng: NodeRng::new(seed, 0, 7),
            applied_at: BTreeMap::new(),
            leaders_by_term: BTreeMap::new(),
            acknowledged: Vec::new(),
            proposals: BTreeMap::new(),
            next_proposal_id: 1,
        };
        for id in VOTERS {
            cluster.disks.insert(id, SimDisk::new(NodeRng::new(seed, id, 1_000)));
            cluster.incarnations.insert(id, 0);
            cluster.start(id).await;
        }
        cluster
    }

    async fn start(&mut self, id: u64) {
        let incarnation = self.incarnations[&id];
        let log_config = LogConfig { segment_bytes_max: 4096, ..LogConfig::default() };
        let node = MetaNode::open(
            Disk::Sim(self.disks[&id].clone()),
            "meta",
            CLUSTER_ID,
            id,
            &VOTERS,
            RaftTiming::default(),
            NodeRng::new(self.seed, id, incarnation),
            log_config,
        )
        .await
        .unwrap_or_else(|e| panic!("seed {}: node {id} failed to open: {e}", self.seed));
        self.nodes.insert(id, Some(node));
    }

    async fn crash(&mut self, id: u64, tick: u64) {
        self.nodes.insert(id, None);
        self.disks[&id].crash();
        *self.incarnations.get_mut(&id).expect("node") += 1;
        self.down_until_tick.insert(id, tick + self.rng.gen_range(5..60));
    }

    fn propose(&mut self, tick: u64) {
        let live: Vec<u64> = self.nodes.iter().filter(|(_, n)| n.is_some()).map(|(id, _)| *id).collect();
        let Some(&id) = live.choose(&mut self.rng) else { return };
        let node = self.nodes.get_mut(&id).expect("node").as_mut().expect("live");
        let batch = if self.rng.gen_bool(0.4) || node.state().brokers().count() == 0 {
            let broker_id = self.rng.gen_range(1..=5u64);
            MetadataBatch {
                commands: vec![Command::RegisterBroker(RegisterBroker {
                    broker_id,
                    host: "127.0.0.1".into(),
                    port: 9000 + broker_id as u32,
                    rack: None,
                    incarnation_id: tick,
                })
                .into()],
            }
        } else {
            match plan_create_topic(node.state(), &format!("t{tick}"), 2, 1, &[], tick as usize) {
                Ok(batch) => batch,
                Err(_) => return,
            }
        };
        let proposal_id = self.next_proposal_id;
        self.next_proposal_id += 1;
        if node.propose(proposal_id, &batch).is_ok() {
            self.proposals.insert((id, proposal_id), batch.encode_to_bytes());
        }
    }

    async fn run(&mut self, ticks: std::ops::Range<u64>, faults: bool, proposing: bool) {
        for tick in ticks {
            if faults && self.rng.gen_bool(0.01) {
                let id = *VOTERS.choose(&mut self.rng).expect("voter");
                if self.nodes[&id].is_some() {
                    self.crash(id, tick).await;
                }
            }
            for id in VOTERS {
                if self.nodes[&id].is_none() && self.down_until_tick.get(&id).is_some_and(|t| tick >= *t) {
                    self.start(id).await;
                }
            }
            for node in self.nodes.values_mut().flatten() {
                node.tick();
            }
            if proposing && tick % 3 == 0 {
                self.propose(tick);
            }
            let mut batch = std::mem::take(&mut self.in_flight);
            batch.shuffle(&mut self.rng);
            for message in batch {
                if faults && self.rng.gen_bool(0.05) {
                    continue;
                }
                if let Some(Some(node)) = self.nodes.get_mut(&message.to) {
                    node.step(message);
                }
            }
            for id in VOTERS {
                let Some(node) = self.nodes.get_mut(&id).expect("node").as_mut() else { continue };
                let output = node.process_ready().await.unwrap_or_else(|e| panic!("seed {}: node {id}: {e}", self.seed));
                self.in_flight.extend(output.messages);
                for entry in output.applied {
                    let seen = self.applied_at.entry(entry.index).or_insert((entry.term, entry.data.clone()));
                    assert_eq!(*seen, (entry.term, entry.data), "seed {}: two different entries applied at index {}", self.seed, entry.index);
                }
                for completion in output.completions {
                    if let Some(data) = self.proposals.remove(&(id, completion.proposal_id)) {
                        self.acknowledged.push((completion.index, data));
                    }
                }
                if node.is_leader() {
                    let previous = self.leaders_by_term.insert(node.term(), id);
                    assert!(previous.is_none() || previous == Some(id), "seed {}: two leaders in term {}", self.seed, node.term());
                }
            }
        }
    }
}

#[tokio::test]
async fn metadata_raft_is_safe_under_crashes_loss_and_reordering_and_converges() {
    for seed in 1..=40u64 {
        let mut cluster = Cluster::new(seed).await;
        cluster.run(0..1_500, true, true).await;
        // Heal: restart everyone, no more faults, and let the cluster converge.
        for id in VOTERS {
            if cluster.nodes[&id].is_none() {
                cluster.start(id).await;
            }
        }
        cluster.run(1_500..1_900, false, true).await;
        // Quiet: no new proposals, so every node can learn the last commit.
        cluster.run(1_900..2_100, false, false).await;
        assert!(!cluster.acknowledged.is_empty(), "seed {seed}: no proposal was ever acknowledged");
        for (index, data) in &cluster.acknowledged {
            assert_eq!(cluster.applied_at.get(index).map(|(_, d)| d), Some(data), "seed {seed}: acknowledged entry {index} lost");
        }
        let nodes: Vec<&MetaNode> = cluster.nodes.values().map(|n| n.as_ref().expect("healed")).collect();
        let applied: Vec<u64> = nodes.iter().map(|n| n.applied_index()).collect();
        assert!(applied.windows(2).all(|w| w[0] == w[1]), "seed {seed}: applied indexes differ after healing: {applied:?}");
        let snapshots: Vec<Vec<u8>> = nodes.iter().map(|n| n.state().snapshot().encode_to_bytes()).collect();
        assert!(snapshots.windows(2).all(|w| w[0] == w[1]), "seed {seed}: metadata diverged after healing");
        assert!(nodes.iter().all(|n| n.is_ready()), "seed {seed}: a node is not ready after healing");
        assert!(nodes[0].state().metadata_version() > 0, "seed {seed}: nothing applied");
    }
}
