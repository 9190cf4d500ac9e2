//! A seed's schedule: when each broker starts and each fault fires, laid
//! out from the seed before the run begins, and the same run's schedule
//! written out as explicit faults (what `keel-sim shrink` starts from).
//!
//! The draws are made in one fixed order on the run's main stream: the
//! swarm's stream is forked (swarm mode), the world's stream is forked,
//! each broker's start jitter, each fault's firing jitter, the draws a
//! written-out schedule repeats (`[schedule_draws]`), then the BUGGIFY
//! points' stream is forked (`buggify = true`). The workloads fork
//! their streams after that, so an explicit schedule that repeats the
//! draws of the run it came from gives those workloads the same numbers.

use keel_io::NodeRng;
use rand::Rng;

use crate::scenario::{Fault, Scenario, ScheduleDraws};

/// The swarm's stream, forked from the main one.
const SWARM_STREAM: u64 = 12;
/// The world's stream (target choices when faults fire), forked from the main one.
const WORLD_STREAM: u64 = 1;
/// The BUGGIFY points' stream (`buggify = true` only), forked last.
const BUGGIFY_STREAM: u64 = 13;

/// One seed's laid-out schedule.
pub struct Schedule {
    /// The faults the run fires: the file's, or in swarm mode this seed's draw.
    pub faults: Vec<Fault>,
    /// When broker `id` first starts, at index `id - 1`.
    pub start_at_ms: Vec<u64>,
    /// When `faults[i]` fires: its `at_ms` plus its drawn jitter.
    pub fire_at_ms: Vec<u64>,
    /// The world's own stream.
    pub world_rng: NodeRng,
    /// The BUGGIFY points' stream, with `buggify = true`. Forked only then,
    /// so the streams of a scenario without them are as before.
    pub buggify_rng: Option<NodeRng>,
    /// The main stream after the schedule, for the workloads.
    pub rng: NodeRng,
}

/// Lays out `scenario`'s schedule under `seed`.
pub fn lay_out(scenario: &Scenario, seed: u64) -> Schedule {
    let mut rng = NodeRng::new(seed, 0, 0);
    let faults = match &scenario.swarm {
        Some(swarm) => crate::swarm::draw(scenario, swarm, &mut rng.fork(SWARM_STREAM)),
        None => {
            if scenario.schedule_draws.swarm {
                rng.fork(SWARM_STREAM);
            }
            scenario.faults.clone()
        }
    };
    let world_rng = rng.fork(WORLD_STREAM);
    let start_at_ms = (1..=scenario.cluster.brokers)
        .map(|id| {
            let base = scenario.cluster.start_ms.as_ref().map_or(0, |start| start[(id - 1) as usize]);
            base + jitter(&mut rng, scenario.cluster.start_jitter_ms)
        })
        .collect();
    let fire_at_ms = faults.iter().map(|fault| fault.at_ms + jitter(&mut rng, fault.jitter_ms)).collect();
    for jitter_ms in &scenario.schedule_draws.jitter_ms {
        jitter(&mut rng, *jitter_ms);
    }
    let buggify_rng = scenario.buggify.then(|| rng.fork(BUGGIFY_STREAM));
    Schedule { faults, start_at_ms, fire_at_ms, world_rng, buggify_rng, rng }
}

/// A seeded `0..=jitter_ms`; no draw for a zero jitter.
fn jitter(rng: &mut NodeRng, jitter_ms: u64) -> u64 {
    if jitter_ms > 0 {
        rng.gen_range(0..=jitter_ms)
    } else {
        0
    }
}

/// `scenario` as `seed` runs it, with its schedule explicit: every fault
/// the seed fires, in firing order, at its firing time and without jitter,
/// and the layout's draws recorded in `[schedule_draws]`. Under `seed`
/// it runs as the original does.
pub fn explicit(scenario: &Scenario, seed: u64) -> Scenario {
    let schedule = lay_out(scenario, seed);
    let mut order: Vec<usize> = (0..schedule.faults.len()).collect();
    // The timeline fires same-time faults in index order; a stable sort keeps it.
    order.sort_by_key(|index| schedule.fire_at_ms[*index]);
    let faults = order.iter().map(|index| Fault { at_ms: schedule.fire_at_ms[*index], jitter_ms: 0, ..schedule.faults[*index].clone() }).collect();
    let jitter_ms =
        schedule.faults.iter().map(|fault| fault.jitter_ms).filter(|jitter_ms| *jitter_ms > 0).chain(scenario.schedule_draws.jitter_ms.iter().copied());
    let schedule_draws = ScheduleDraws { swarm: scenario.swarm.is_some() || scenario.schedule_draws.swarm, jitter_ms: jitter_ms.collect() };
    Scenario { faults, swarm: None, schedule_draws, ..scenario.clone() }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::scenario::{FaultAction, FaultKind, Target};

    const JITTERED: &str = "duration_ms = 20000\nconvergence_ms_max = 5000\n[cluster]\nbrokers = 3\nstart_jitter_ms = 300\n\
        [[fault]]\nkind = \"kill\"\nnode = \"leader\"\nat_ms = 1000\njitter_ms = 900\nevery_ms = 3000\nuntil_ms = 7000\nduration_ms = 800\n\
        [[fault]]\nkind = \"loss\"\nrate = 0.125\nat_ms = 2000\nduration_ms = 500\n";

    const SWARM: &str = "duration_ms = 20000\nconvergence_ms_max = 5000\nfaults = \"swarm\"\n[cluster]\nbrokers = 3\n\
        [swarm]\nevents = [8, 16]\n[data]\nacks = [\"all\"]\nproducers = 2\nbatches_per_producer = 3\nrecords_per_batch = [1, 4]\n\
        gap_ms = [10, 50]\nclient_timeout_ms = 1000\n";

    fn parse(text: &str) -> Scenario {
        Scenario::parse(Path::new("s.toml"), text).unwrap_or_else(|error| panic!("{error}"))
    }

    /// The stream the workloads get after the layout, as a few numbers.
    fn workload_draws(mut schedule: Schedule) -> (Vec<u64>, Vec<u64>) {
        let main = (0..4).map(|_| schedule.rng.gen()).collect();
        let world = (0..4).map(|_| schedule.world_rng.gen()).collect();
        (main, world)
    }

    #[test]
    fn a_jittered_schedule_written_out_fires_at_the_same_times_and_leaves_the_later_draws_alone() {
        let scenario = parse(JITTERED);
        for seed in 1..20 {
            let original = lay_out(&scenario, seed);
            let explicit = explicit(&scenario, seed);
            assert!(explicit.faults.iter().all(|fault| fault.jitter_ms == 0), "seed {seed}: jitter left in the explicit schedule");
            assert_eq!(explicit.schedule_draws.jitter_ms, vec![900, 900, 900], "seed {seed}: one draw per jittered firing");
            let replayed = lay_out(&explicit, seed);
            let mut fired: Vec<(u64, FaultKind)> = original.faults.iter().zip(&original.fire_at_ms).map(|(fault, at)| (*at, fault.kind)).collect();
            fired.sort_by_key(|(at, _)| *at);
            let refired: Vec<(u64, FaultKind)> = replayed.faults.iter().zip(&replayed.fire_at_ms).map(|(fault, at)| (*at, fault.kind)).collect();
            assert_eq!(refired, fired, "seed {seed}: firing times");
            assert_eq!(replayed.start_at_ms, original.start_at_ms, "seed {seed}: broker starts");
            assert_eq!(workload_draws(replayed), workload_draws(original), "seed {seed}: the streams after the schedule");
        }
    }

    #[test]
    fn a_swarm_seeds_schedule_written_out_is_its_draw_and_leaves_the_later_draws_alone() {
        let scenario = parse(SWARM);
        for seed in 1..20 {
            let original = lay_out(&scenario, seed);
            let explicit = explicit(&scenario, seed);
            assert!(explicit.swarm.is_none() && explicit.schedule_draws.swarm, "seed {seed}: written out as listed faults");
            assert_eq!(explicit.faults, original.faults, "seed {seed}: a swarm draw has no jitter, so the same faults");
            let replayed = lay_out(&explicit, seed);
            assert_eq!(replayed.fire_at_ms, original.fire_at_ms, "seed {seed}: firing times");
            assert_eq!(workload_draws(replayed), workload_draws(original), "seed {seed}: the streams after the schedule");
            // Without the recorded fork the rest of the run would differ.
            let unrecorded = Scenario { schedule_draws: ScheduleDraws::default(), ..explicit.clone() };
            assert_ne!(workload_draws(lay_out(&unrecorded, seed)), workload_draws(lay_out(&scenario, seed)), "seed {seed}");
        }
    }

    #[test]
    fn dropping_faults_from_an_explicit_schedule_leaves_the_others_times_and_the_later_draws_alone() {
        let scenario = explicit(&parse(SWARM), 5);
        let kept: Vec<Fault> = scenario.faults.iter().step_by(2).cloned().collect();
        let fewer = Scenario { faults: kept.clone(), ..scenario.clone() };
        let schedule = lay_out(&fewer, 5);
        assert_eq!(schedule.fire_at_ms, kept.iter().map(|fault| fault.at_ms).collect::<Vec<_>>());
        assert_eq!(workload_draws(schedule), workload_draws(lay_out(&scenario, 5)));
    }

    #[test]
    fn an_explicit_schedule_serializes_and_parses_back_to_the_same_plan() {
        for (text, seed) in [(SWARM, 3), (SWARM, 11), (JITTERED, 4)] {
            let scenario = explicit(&parse(text), seed);
            let written = scenario.to_toml();
            let read = parse(&written);
            let unlined = |faults: &[Fault]| faults.iter().map(|fault| Fault { line: 0, ..fault.clone() }).collect::<Vec<_>>();
            assert_eq!(unlined(&read.faults), unlined(&scenario.faults), "faults of\n{written}");
            assert_eq!(read.schedule_draws, scenario.schedule_draws, "{written}");
            assert_eq!((read.duration_ms, read.convergence_ms_max), (scenario.duration_ms, scenario.convergence_ms_max));
            assert_eq!(read.cluster, scenario.cluster);
            assert_eq!(read.node, scenario.node);
            assert_eq!((&read.workload, &read.data, &read.group), (&scenario.workload, &scenario.data, &scenario.group));
            assert!(read.swarm.is_none());
            assert_eq!(read.to_toml(), written, "serializing again changes nothing");
        }
    }

    #[test]
    fn every_shipped_scenario_and_its_explicit_schedule_serialize_and_parse_back_to_the_same_plan() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut names: Vec<_> = std::fs::read_dir(&dir).expect("scenarios dir").map(|entry| entry.expect("entry").path()).collect();
        names.retain(|path| path.extension().is_some_and(|extension| extension == "toml"));
        assert!(names.len() >= 6, "found {} scenarios", names.len());
        for path in names {
            let original = Scenario::load(&path).unwrap_or_else(|error| panic!("{error}"));
            for scenario in [original.clone(), explicit(&original, 9)] {
                let written = scenario.to_toml();
                let read = Scenario::parse(&path, &written).unwrap_or_else(|error| panic!("{error}\n{written}"));
                let unlined = |faults: &[Fault]| faults.iter().map(|fault| Fault { line: 0, ..fault.clone() }).collect::<Vec<_>>();
                let shown = path.display();
                assert_eq!(unlined(&read.faults), unlined(&scenario.faults), "{shown}");
                assert_eq!(
                    (&read.cluster, &read.node, &read.swarm, &read.schedule_draws),
                    (&scenario.cluster, &scenario.node, &scenario.swarm, &scenario.schedule_draws),
                    "{shown}"
                );
                assert_eq!((&read.workload, &read.data, &read.group), (&scenario.workload, &scenario.data, &scenario.group), "{shown}");
                assert_eq!(
                    (read.duration_ms, read.convergence_ms_max, &read.about),
                    (scenario.duration_ms, scenario.convergence_ms_max, &scenario.about),
                    "{shown}"
                );
            }
        }
    }

    #[test]
    fn every_fault_action_and_target_round_trips() {
        let fault = |kind, action, duration_ms| Fault { kind, at_ms: 100, jitter_ms: 0, duration_ms, action, line: 0 };
        let faults = vec![
            fault(FaultKind::Kill, FaultAction::OnBroker(Target::Broker(2)), Some(10)),
            fault(FaultKind::Pause, FaultAction::OnBroker(Target::PartitionFollower), Some(10)),
            fault(FaultKind::Partition, FaultAction::Partition(vec![vec![1], vec![2, 3]]), Some(10)),
            fault(FaultKind::OneWay, FaultAction::OneWay { from: Target::PartitionLeader, to: Target::Clients }, None),
            fault(FaultKind::Latency, FaultAction::Latency { min_ms: 3, max_ms: 170 }, Some(10)),
            fault(FaultKind::Loss, FaultAction::Loss { rate: 0.123_456_789_012_345_67 }, Some(10)),
            fault(FaultKind::Lag, FaultAction::Lag { node: Target::Random, delay_ms: 250 }, Some(10)),
            fault(FaultKind::Clock, FaultAction::Clock { node: Target::Follower, drift_ppm: -150_000, skew_ms: 1_999 }, None),
            fault(
                FaultKind::Disk,
                FaultAction::Disk {
                    node: Target::Leader,
                    sync_eio_probability: 0.031,
                    read_bit_flip_probability: 0.0,
                    torn_write_probability: 0.97,
                    write_enospc_probability: 0.004,
                    latency_us: Some([150, 9_000]),
                },
                Some(10),
            ),
            fault(FaultKind::PowerLoss, FaultAction::Everyone, Some(10)),
            fault(FaultKind::Heal, FaultAction::Everyone, None),
        ];
        let kafka = "[data]\nacks = [\"all\"]\nproducers = 1\nbatches_per_producer = 1\nrecords_per_batch = [1, 1]\ngap_ms = [1, 1]\n\
            client_timeout_ms = 100\nclient = \"kafka\"\n";
        let scenario = Scenario { faults: faults.clone(), ..parse(&format!("duration_ms = 1000\nconvergence_ms_max = 5000\n[cluster]\nbrokers = 3\n{kafka}")) };
        let read = parse(&scenario.to_toml());
        assert_eq!(read.faults.iter().map(|fault| Fault { line: 0, ..fault.clone() }).collect::<Vec<_>>(), faults, "{}", scenario.to_toml());
    }
}
