//! The replication cores under a seeded model of a 3-broker partition, with no
//! runtime: in-memory logs with a durable prefix, a controller that elects
//! leaders from the ISR (never unclean) and commits ISR changes with a delay,
//! brokers that learn metadata late, crashes that drop unflushed records, and
//! power loss of every broker at once.
//!
//! After every step: every acks=all record acknowledged so far is in the
//! metadata leader's log at its offset (when that broker is up); every two
//! brokers agree on every offset below both their high watermarks. After
//! the faults stop: an acks=all produce succeeds (liveness) and every ISR
//! member holds every acknowledged record.

use std::collections::BTreeMap;

use keel_io::NodeRng;
use keel_repl::{EpochCache, FetchPlan, Follower, FollowerStep, Leader, LeaderConfig, LeaderOutput, LogState, ReplError};
use rand::Rng;

type BrokerId = u64;
const BROKERS: [BrokerId; 3] = [1, 2, 3];

/// One record: the leader epoch that wrote it and a unique value.
type Record = (u32, u64);

enum Role {
    Down,
    Idle,
    Leader(Leader),
    Follower(Follower),
}

struct Broker {
    log: Vec<Record>,
    durable_len: usize,
    role: Role,
}

impl Broker {
    fn log_state(&self) -> LogState {
        let mut epoch_cache = EpochCache::new();
        for (offset, (epoch, _)) in self.log.iter().enumerate() {
            epoch_cache.assign(*epoch, offset as u64);
        }
        LogState {
            log_start_offset: 0,
            log_end_offset: self.log.len() as u64,
            durable_end_offset: self.durable_len as u64,
            high_watermark: self.high_watermark(),
            epoch_cache,
        }
    }

    fn high_watermark(&self) -> u64 {
        match &self.role {
            Role::Leader(leader) => leader.high_watermark(),
            Role::Follower(follower) => follower.high_watermark(),
            Role::Down | Role::Idle => 0,
        }
    }
}

/// The committed partition metadata (the controller's view).
#[derive(Clone, Debug)]
struct Metadata {
    leader: Option<BrokerId>,
    leader_epoch: u32,
    isr: Vec<BrokerId>,
}

struct Model {
    rng: NodeRng,
    now_ms: u64,
    config: LeaderConfig,
    brokers: BTreeMap<BrokerId, Broker>,
    metadata: Metadata,
    /// ISR proposals on their way through the metadata group: (proposer, its epoch, ISR).
    proposals: Vec<(BrokerId, u32, Vec<BrokerId>)>,
    next_value: u64,
    next_produce_id: u64,
    /// Waiting acks=all produces: id -> (offsets and values).
    in_flight: BTreeMap<u64, Vec<(u64, u64)>>,
    /// Acknowledged acks=all records: offset -> value.
    acknowledged: BTreeMap<u64, u64>,
    acks_all_ok: u64,
    refused: u64,
    truncations: u64,
    elections: u64,
}

impl Model {
    fn new(seed: u64) -> Model {
        let mut rng = NodeRng::new(seed, 0, 0);
        let config = LeaderConfig { min_insync_replicas: rng.gen_range(1..=3), replica_lag_time_max_ms: 1_000 };
        let brokers = BROKERS.iter().map(|id| (*id, Broker { log: Vec::new(), durable_len: 0, role: Role::Idle })).collect();
        let metadata = Metadata { leader: Some(1), leader_epoch: 1, isr: BROKERS.to_vec() };
        Model {
            rng,
            now_ms: 0,
            config,
            brokers,
            metadata,
            proposals: Vec::new(),
            next_value: 1,
            next_produce_id: 1,
            in_flight: BTreeMap::new(),
            acknowledged: BTreeMap::new(),
            acks_all_ok: 0,
            refused: 0,
            truncations: 0,
            elections: 0,
        }
    }

    fn handle(&mut self, proposer: BrokerId, outputs: Vec<LeaderOutput>) {
        for output in outputs {
            match output {
                LeaderOutput::ProduceDone { produce_id, result } => {
                    let records = self.in_flight.remove(&produce_id).expect("answered once");
                    match result {
                        Ok(()) => {
                            self.acks_all_ok += 1;
                            for (offset, value) in records {
                                let previous = self.acknowledged.insert(offset, value);
                                assert!(previous.is_none(), "offset {offset} acknowledged twice (values {previous:?} and {value})");
                            }
                        }
                        Err(ReplError::NotEnoughReplicasAfterAppend { .. } | ReplError::RequestTimedOut { .. } | ReplError::NotLeader { .. }) => {}
                        Err(other) => panic!("unexpected produce error {other}"),
                    }
                }
                LeaderOutput::ProposeIsr { isr } => {
                    let epoch = match &self.brokers[&proposer].role {
                        Role::Leader(leader) => leader.leader_epoch(),
                        _ => unreachable!("only leaders propose"),
                    };
                    self.proposals.push((proposer, epoch, isr));
                }
            }
        }
    }

    /// Broker `id` learns the committed metadata (late, as a real broker does).
    fn sync(&mut self, id: BrokerId) {
        let metadata = self.metadata.clone();
        let now_ms = self.now_ms;
        let broker = self.brokers.get_mut(&id).expect("broker");
        if matches!(broker.role, Role::Down) {
            return;
        }
        let mut outputs = Vec::new();
        match (&mut broker.role, metadata.leader) {
            (Role::Leader(leader), Some(leader_id)) if leader_id == id && leader.leader_epoch() == metadata.leader_epoch => {
                if leader.isr() != metadata.isr.as_slice() {
                    outputs = leader.isr_changed(now_ms, metadata.isr.clone());
                }
            }
            (Role::Follower(follower), Some(leader_id)) if follower.leader_id() == leader_id && follower.leader_epoch() == metadata.leader_epoch => {}
            (_, leader) => {
                let previous = std::mem::replace(&mut broker.role, Role::Idle);
                if let Role::Leader(old) = previous {
                    outputs = old.resign().0;
                }
                broker.role = match leader {
                    Some(leader_id) if leader_id == id => {
                        Role::Leader(Leader::new(now_ms, id, metadata.leader_epoch, BROKERS.to_vec(), metadata.isr.clone(), self.config, broker.log_state()))
                    }
                    Some(leader_id) => Role::Follower(Follower::new(id, leader_id, metadata.leader_epoch, broker.log_state())),
                    None => Role::Idle,
                };
            }
        }
        self.handle(id, outputs);
    }

    fn produce(&mut self) {
        let Some(id) = BROKERS.iter().copied().find(|id| matches!(self.brokers[id].role, Role::Leader(_))) else { return };
        let acks_all = self.rng.gen_bool(0.7);
        let count = self.rng.gen_range(1..=4);
        let now_ms = self.now_ms;
        let broker = self.brokers.get_mut(&id).expect("broker");
        let Role::Leader(leader) = &mut broker.role else { unreachable!() };
        if acks_all && leader.check_acks_all().is_err() {
            self.refused += 1;
            return;
        }
        let base = broker.log.len() as u64;
        let mut records = Vec::new();
        for _ in 0..count {
            broker.log.push((leader.leader_epoch(), self.next_value));
            records.push((base + records.len() as u64, self.next_value));
            self.next_value += 1;
        }
        leader.appended(base, broker.log.len() as u64);
        if acks_all {
            let produce_id = self.next_produce_id;
            self.next_produce_id += 1;
            self.in_flight.insert(produce_id, records);
            let outputs = leader.await_acks_all(now_ms, produce_id, base + count, 2_000);
            self.handle(id, outputs);
        }
    }

    fn flush(&mut self, id: BrokerId) {
        let broker = self.brokers.get_mut(&id).expect("broker");
        broker.durable_len = broker.log.len();
        let durable = broker.durable_len as u64;
        let outputs = match &mut broker.role {
            Role::Leader(leader) => leader.flushed(durable),
            Role::Follower(follower) => {
                follower.flushed(durable);
                Vec::new()
            }
            Role::Down | Role::Idle => Vec::new(),
        };
        self.handle(id, outputs);
    }

    /// One fetch round trip of follower `id` (it flushes first).
    fn fetch(&mut self, id: BrokerId) {
        let request = match &self.brokers[&id].role {
            Role::Follower(_) => {
                self.flush(id);
                let Role::Follower(follower) = &self.brokers[&id].role else { unreachable!() };
                follower.fetch_request()
            }
            _ => return,
        };
        let leader_id = match &self.brokers[&id].role {
            Role::Follower(follower) => follower.leader_id(),
            _ => unreachable!(),
        };
        let now_ms = self.now_ms;
        let leader_broker = self.brokers.get_mut(&leader_id).expect("broker");
        let Role::Leader(leader) = &mut leader_broker.role else { return };
        let (plan, outputs) = match leader.fetch(now_ms, request) {
            Ok(answer) => answer,
            Err(ReplError::FencedLeaderEpoch { .. } | ReplError::UnknownLeaderEpoch { .. }) => return,
            Err(other) => panic!("fetch refused: {other}"),
        };
        let read: Vec<Record> = match plan {
            FetchPlan::Read { from, to, .. } => leader_broker.log[from as usize..to as usize].to_vec(),
            FetchPlan::Diverging { .. } => Vec::new(),
        };
        self.handle(leader_id, outputs);
        let broker = self.brokers.get_mut(&id).expect("broker");
        let Role::Follower(follower) = &mut broker.role else { unreachable!() };
        match plan {
            FetchPlan::Diverging { epoch, end_offset } => {
                if let FollowerStep::Truncate { end_offset } = follower.diverging(epoch, end_offset) {
                    self.truncations += 1;
                    broker.log.truncate(end_offset as usize);
                    broker.durable_len = broker.durable_len.min(broker.log.len());
                }
            }
            FetchPlan::Read { from, high_watermark, .. } => {
                let mut runs: Vec<(u32, u64)> = Vec::new();
                for (index, (epoch, _)) in read.iter().enumerate() {
                    let end = from + index as u64 + 1;
                    match runs.last_mut() {
                        Some((last_epoch, last_end)) if *last_epoch == *epoch => *last_end = end,
                        _ => runs.push((*epoch, end)),
                    }
                }
                broker.log.extend_from_slice(&read);
                if runs.is_empty() {
                    follower.leader_high_watermark(high_watermark);
                } else {
                    follower.appended(from, &runs, high_watermark);
                }
            }
        }
    }

    fn tick(&mut self) {
        self.now_ms += self.rng.gen_range(10..=400);
        for id in BROKERS {
            let now_ms = self.now_ms;
            let outputs = match &mut self.brokers.get_mut(&id).expect("broker").role {
                Role::Leader(leader) => leader.tick(now_ms),
                _ => Vec::new(),
            };
            self.handle(id, outputs);
        }
    }

    /// The metadata group commits one pending ISR proposal, or refuses it if
    /// its proposer no longer leads that epoch (the partition epoch check).
    fn commit_proposal(&mut self) {
        if self.proposals.is_empty() {
            return;
        }
        let (proposer, epoch, isr) = self.proposals.remove(0);
        if self.metadata.leader == Some(proposer) && self.metadata.leader_epoch == epoch {
            self.metadata.isr = isr;
        } else if let Role::Leader(leader) = &mut self.brokers.get_mut(&proposer).expect("broker").role {
            // Refused: the proposer hears back with the ISR as it stands.
            let current = if leader.leader_epoch() == self.metadata.leader_epoch { self.metadata.isr.clone() } else { leader.isr().to_vec() };
            let outputs = leader.isr_changed(self.now_ms, current);
            self.handle(proposer, outputs);
        }
    }

    /// Process death: unflushed records are lost (the model's disk keeps
    /// only the durable prefix) and waits are never answered.
    fn crash(&mut self, id: BrokerId) {
        let broker = self.brokers.get_mut(&id).expect("broker");
        if let Role::Leader(leader) = std::mem::replace(&mut broker.role, Role::Down) {
            for output in leader.resign().0 {
                if let LeaderOutput::ProduceDone { produce_id, .. } = output {
                    self.in_flight.remove(&produce_id);
                }
            }
        }
        broker.log.truncate(broker.durable_len);
    }

    fn restart(&mut self, id: BrokerId) {
        let broker = self.brokers.get_mut(&id).expect("broker");
        if matches!(broker.role, Role::Down) {
            broker.role = Role::Idle;
            // Its re-registration (a new incarnation) moves partitions it
            // leads to a new leader epoch (keel-meta's RegisterBroker rule).
            if self.metadata.leader == Some(id) {
                self.metadata.leader_epoch += 1;
            }
            self.sync(id);
        }
    }

    /// The controller: a dead leader (or none) is replaced by a live ISR
    /// member with a new leader epoch; the dead one leaves the ISR unless it
    /// is the last member. Never an unclean election.
    fn controller(&mut self) {
        let alive = |model: &Model, id: BrokerId| !matches!(model.brokers[&id].role, Role::Down);
        let leader_alive = self.metadata.leader.is_some_and(|id| alive(self, id));
        if leader_alive {
            return;
        }
        if let Some(dead) = self.metadata.leader {
            if self.metadata.isr.len() > 1 {
                self.metadata.isr.retain(|id| *id != dead);
            }
        }
        let candidate = self.metadata.isr.iter().copied().find(|id| alive(self, *id));
        if candidate != self.metadata.leader || candidate.is_some() {
            self.metadata.leader = candidate;
            self.metadata.leader_epoch += 1;
            self.elections += 1;
        }
    }

    /// No faults: every broker learns the metadata, flushes and fetches once,
    /// and one pending ISR change commits.
    fn quiet_round(&mut self) {
        for id in BROKERS {
            self.sync(id);
            self.flush(id);
            self.fetch(id);
        }
        self.commit_proposal();
    }

    fn check(&self, step: usize, seed: u64) {
        if let Some(leader) = self.metadata.leader {
            let broker = &self.brokers[&leader];
            if !matches!(broker.role, Role::Down) {
                for (offset, value) in &self.acknowledged {
                    let found = broker.log.get(*offset as usize).map(|(_, v)| *v);
                    assert_eq!(
                        found,
                        Some(*value),
                        "seed {seed} step {step}: acknowledged record {value} at offset {offset} missing from leader {leader}'s log (lost write)"
                    );
                }
            }
        }
        for a in BROKERS {
            for b in BROKERS {
                let (x, y) = (&self.brokers[&a], &self.brokers[&b]);
                if a >= b || matches!(x.role, Role::Down) || matches!(y.role, Role::Down) {
                    continue;
                }
                let below = x.high_watermark().min(y.high_watermark()) as usize;
                assert_eq!(
                    x.log[..below],
                    y.log[..below],
                    "seed {seed} step {step}: brokers {a} and {b} disagree below the high watermark {below} (inconsistent offsets)"
                );
            }
        }
    }
}

fn run_seed(seed: u64, steps: usize) -> Model {
    let mut model = Model::new(seed);
    for id in BROKERS {
        model.sync(id);
    }
    for step in 0..steps {
        let choice = model.rng.gen_range(0..100);
        let id = BROKERS[model.rng.gen_range(0..3)];
        match choice {
            0..=24 => model.produce(),
            25..=34 => model.flush(id),
            35..=59 => model.fetch(id),
            60..=67 => model.tick(),
            68..=74 => model.sync(id),
            75..=81 => model.commit_proposal(),
            82..=85 => model.crash(id),
            86..=89 => model.restart(id),
            90..=94 => model.controller(),
            95 => {
                // Power loss of every broker at once.
                for id in BROKERS {
                    model.crash(id);
                }
            }
            _ => model.tick(),
        }
        model.check(step, seed);
    }
    // The faults stop: everyone up, metadata settles, followers catch up.
    for id in BROKERS {
        model.restart(id);
    }
    model.controller();
    for round in 0..200 {
        model.quiet_round();
        if round % 10 == 0 {
            model.tick();
        }
        model.check(steps + round, seed);
    }
    model
}

#[test]
fn seeded_histories_lose_no_acknowledged_record_and_replicas_agree_below_the_high_watermark() {
    let mut totals = (0u64, 0u64, 0u64, 0u64);
    for seed in 1..=2_000 {
        let mut model = run_seed(seed, 400);
        // Liveness: with every broker up and caught up, acks=all succeeds.
        let before = model.acks_all_ok;
        let mut succeeded = false;
        for _ in 0..50 {
            let waiting = model.in_flight.len();
            model.produce();
            for _ in 0..5 {
                model.quiet_round();
            }
            if model.acks_all_ok > before && model.in_flight.len() <= waiting {
                succeeded = true;
                break;
            }
        }
        assert!(succeeded, "seed {seed}: no acks=all produce succeeded after the faults stopped (min ISR {})", model.config.min_insync_replicas);
        // Every ISR member holds every acknowledged record.
        for id in model.metadata.isr.clone() {
            let log = &model.brokers[&id].log;
            for (offset, value) in &model.acknowledged {
                assert_eq!(log.get(*offset as usize).map(|(_, v)| *v), Some(*value), "seed {seed}: ISR member {id} lacks acknowledged offset {offset}");
            }
        }
        totals.0 += model.acks_all_ok;
        totals.1 += model.truncations;
        totals.2 += model.elections;
        totals.3 += model.refused;
    }
    // The sweep must exercise what it claims to.
    println!("acks=all ok {}, truncations {}, elections {}, refusals {}", totals.0, totals.1, totals.2, totals.3);
    assert!(totals.0 > 5_000, "acks=all acknowledgements: {}", totals.0);
    assert!(totals.1 > 100, "divergence truncations: {}", totals.1);
    assert!(totals.2 > 1_000, "leader elections: {}", totals.2);
    assert!(totals.3 > 100, "NOT_ENOUGH_REPLICAS refusals: {}", totals.3);
}
