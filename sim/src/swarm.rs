//! Swarm mode (`faults = "swarm"`): instead of a fixed list, each seed
//! draws its own fault schedule. It turns every fault kind of the swarm on
//! or off (each with even odds, at least one on), then draws a number of
//! events in `[swarm] events`, each of an enabled kind, at a random time
//! before the heal, on random targets, with random durations and
//! parameters. The heal, convergence and every checker follow as in any
//! scenario, so liveness is judged after every schedule. Seeds that share
//! a scenario thus explore different mixes (partitions with power loss,
//! clock drift with disk faults, ...) that no hand-written file lists.

use keel_io::NodeRng;
use rand::seq::SliceRandom;
use rand::Rng;

use crate::scenario::{Fault, FaultAction, FaultKind, Scenario, SwarmSpec, Target};

/// The fault kinds a swarm draws from when `[swarm] kinds` is not given.
pub const SWARM_KINDS: [FaultKind; 13] = [
    FaultKind::Kill,
    FaultKind::Crash,
    FaultKind::Stop,
    FaultKind::Pause,
    FaultKind::Partition,
    FaultKind::OneWay,
    FaultKind::Clog,
    FaultKind::Latency,
    FaultKind::Loss,
    FaultKind::Lag,
    FaultKind::PowerLoss,
    FaultKind::Clock,
    FaultKind::Disk,
];

/// This seed's schedule, in firing order.
pub fn draw(scenario: &Scenario, swarm: &SwarmSpec, rng: &mut NodeRng) -> Vec<Fault> {
    let mut enabled: Vec<FaultKind> = swarm.kinds.iter().copied().filter(|_| rng.gen_bool(0.5)).collect();
    if enabled.is_empty() {
        enabled.push(*swarm.kinds.choose(rng).expect("a swarm has at least one kind"));
    }
    let events = rng.gen_range(swarm.events[0]..=swarm.events[1]);
    let mut faults: Vec<Fault> = (0..events)
        .map(|_| {
            let kind = *enabled.choose(rng).expect("at least one kind is on");
            let at_ms = rng.gen_range(swarm.start_ms..scenario.duration_ms);
            let duration_ms = duration_of(kind, rng);
            let action = action_of(kind, scenario, rng);
            // Line 0: drawn, not written in the file.
            Fault { kind, at_ms, jitter_ms: 0, duration_ms, action, line: 0 }
        })
        .collect();
    faults.sort_by_key(|fault| fault.at_ms);
    faults
}

/// How long the fault lasts before it is undone (the heal undoes what is
/// still on); `None` for the kinds that are not undone.
fn duration_of(kind: FaultKind, rng: &mut NodeRng) -> Option<u64> {
    match kind {
        FaultKind::Clock | FaultKind::Restart | FaultKind::Heal => None,
        FaultKind::Pause => Some(rng.gen_range(100..=3_000)),
        FaultKind::PowerLoss => Some(rng.gen_range(200..=2_000)),
        _ => Some(rng.gen_range(200..=4_000)),
    }
}

fn action_of(kind: FaultKind, scenario: &Scenario, rng: &mut NodeRng) -> FaultAction {
    match kind {
        FaultKind::Kill | FaultKind::Crash | FaultKind::Stop | FaultKind::Pause | FaultKind::Clog | FaultKind::Restart => {
            FaultAction::OnBroker(target(scenario, rng))
        }
        FaultKind::Partition => FaultAction::Partition(split(scenario.cluster.brokers, rng)),
        FaultKind::OneWay => {
            let from = target(scenario, rng);
            let to = loop {
                let to = target(scenario, rng);
                if to != from || to == Target::Random {
                    break to;
                }
            };
            FaultAction::OneWay { from, to }
        }
        FaultKind::Latency => {
            let min_ms = rng.gen_range(0..=20);
            FaultAction::Latency { min_ms, max_ms: min_ms + rng.gen_range(0..=200) }
        }
        FaultKind::Loss => FaultAction::Loss { rate: rng.gen_range(0.01..0.2) },
        FaultKind::Lag => FaultAction::Lag { node: target(scenario, rng), delay_ms: rng.gen_range(50..=500) },
        FaultKind::Clock => {
            FaultAction::Clock { node: target(scenario, rng), drift_ppm: rng.gen_range(-200_000..=200_000), skew_ms: rng.gen_range(-2_000..=2_000) }
        }
        FaultKind::Disk => {
            let node = target(scenario, rng);
            let mut probability = |on: f64, range: std::ops::Range<f64>| if rng.gen_bool(on) { rng.gen_range(range) } else { 0.0 };
            let sync_eio_probability = probability(0.5, 0.01..0.05);
            let read_bit_flip_probability = probability(0.5, 0.001..0.01);
            let torn_write_probability = probability(0.7, 0.3..1.0);
            let write_enospc_probability = probability(0.3, 0.001..0.02);
            let latency_us = rng.gen_bool(0.3).then(|| {
                let min = rng.gen_range(100..=2_000);
                [min, min + rng.gen_range(0..=50_000)]
            });
            FaultAction::Disk { node, sync_eio_probability, read_bit_flip_probability, torn_write_probability, write_enospc_probability, latency_us }
        }
        FaultKind::PowerLoss | FaultKind::Heal => FaultAction::Everyone,
    }
}

/// A broker by role or id, each as likely; with a data topic, its
/// partition's leader or a follower too.
fn target(scenario: &Scenario, rng: &mut NodeRng) -> Target {
    let with_data = scenario.data.is_some();
    match rng.gen_range(0..if with_data { 6 } else { 4 }) {
        0 => Target::Leader,
        1 => Target::Follower,
        2 => Target::Random,
        3 if with_data => Target::PartitionLeader,
        4 if with_data => Target::PartitionFollower,
        _ => Target::Broker(rng.gen_range(1..=scenario.cluster.brokers)),
    }
}

/// The brokers in two non-empty groups.
fn split(brokers: u64, rng: &mut NodeRng) -> Vec<Vec<u64>> {
    let mut ids: Vec<u64> = (1..=brokers).collect();
    ids.shuffle(rng);
    let cut = rng.gen_range(1..ids.len());
    let (mut left, mut right) = (ids[..cut].to_vec(), ids[cut..].to_vec());
    left.sort_unstable();
    right.sort_unstable();
    vec![left, right]
}
