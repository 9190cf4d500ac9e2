//! One seeded run of a scenario, as phases in order: the world (`world`)
//! and its timeline; the workloads (`workload`) started; the fault timeline
//! up to the heal; metadata convergence, then each workload's probe after
//! the heal; each workload's convergence, then its report and final checks;
//! the final metadata and readiness checks; the brokers stopped.

use std::sync::{Arc, Mutex};

use crate::coverage::Coverage;
use crate::meta_check::{History, Violation};
use crate::report::RunReport;
use crate::scenario::{Scenario, BUGGIFY_ACTIVATION_PROBABILITY, BUGGIFY_FIRE_PROBABILITY};
use crate::shared::{lock, SharedHistory};
use crate::trace::Trace;
use crate::workload::data::DataRun;
use crate::workload::group::GroupWorkload;
use crate::workload::topics::TopicWorkload;
use crate::workload::Workload;
use crate::world::{await_metadata_convergence, final_checks, World};

/// Runs `scenario` under `seed` in the current madsim world. Returns the
/// report and the trace, or the first violation and the trace up to the end.
pub async fn run_scenario(scenario: Arc<Scenario>, seed: u64) -> Result<(RunReport, Trace), (Violation, Trace)> {
    // The schedule (in swarm mode this seed's own faults) is laid out before anything else runs.
    let schedule = crate::schedule::lay_out(&scenario, seed);
    let mut rng = schedule.rng;
    let scenario = match &scenario.swarm {
        Some(_) => Arc::new(Scenario { faults: schedule.faults, ..Scenario::clone(&scenario) }),
        None => scenario,
    };
    if let Some(buggify_rng) = schedule.buggify_rng {
        keel_io::buggify::enable(buggify_rng, BUGGIFY_ACTIVATION_PROBABILITY, BUGGIFY_FIRE_PROBABILITY);
    }
    let history: SharedHistory = Arc::new(Mutex::new(History::new()));
    let mut world = World::new(Arc::clone(&scenario), seed, schedule.world_rng, Arc::clone(&history));
    let kafka_clients = world.kafka_clients();
    world.note(format_args!("scenario {} seed {seed}", scenario.path.display()));
    world.schedule_starts_faults_and_heal(&schedule.start_at_ms, &schedule.fire_at_ms);
    // Started in this order: their seeded streams are forked in it.
    let mut workloads: Vec<Box<dyn Workload>> = vec![Box::new(TopicWorkload::start(&world, &mut rng))];
    if let Some(mut data) = DataRun::start(&world, kafka_clients, &mut rng) {
        let group = GroupWorkload::start(&world, &mut data, &mut rng);
        workloads.push(Box::new(data));
        if let Some(group) = group {
            workloads.push(Box::new(group));
        }
    }
    world.run_timeline_to_heal().await;
    let healed_ms = world.clock.now_ms();
    let mut report = RunReport { faults_fired: world.faults_fired, ..RunReport::default() };
    if await_metadata_convergence(&mut world, healed_ms, scenario.convergence_ms_max, "after the heal").await {
        for workload in &mut workloads {
            workload.probe_after_heal(&mut world, healed_ms, &mut rng).await;
        }
    }
    for workload in &mut workloads {
        workload.converge(&mut world, &mut report, &mut rng).await;
    }
    for workload in &mut workloads {
        workload.report(&mut world, &mut report).await;
    }
    final_checks(&mut world, &mut report).await;
    // Stop the brokers so nothing runs past the verdict.
    let ids: Vec<u64> = world.brokers.keys().copied().collect();
    for id in ids {
        world.stop_broker(id, false);
    }
    report.simulated_ms = world.clock.now_ms();
    let mut history = std::mem::take(&mut *lock(&history));
    report.elections = history.elections;
    report.entries_applied = history.entries_applied;
    report.coverage = coverage(&world, &report, std::mem::take(&mut history.coverage));
    if scenario.buggify {
        let buggify_fired = keel_io::buggify::disable();
        for site in keel_io::buggify::SITES {
            report.coverage.add(site, buggify_fired.get(site).copied().unwrap_or(0));
        }
    }
    match history.violation().cloned() {
        Some(violation) => Err((violation, history.into_trace())),
        None => Ok((report, history.into_trace())),
    }
}

/// What this seed reached: the history's counts, the report's, and the disks'.
fn coverage(world: &World, report: &RunReport, mut seen: Coverage) -> Coverage {
    use crate::coverage::*;
    seen.add(FAULTS_FIRED, report.faults_fired);
    seen.add(METADATA_ELECTIONS, report.elections);
    seen.add(CREATES_FOUND_AFTER_RETRY, report.creates_found_after_retry);
    seen.add(DELETES_DONE, report.deletes_acknowledged);
    seen.add(DISK_HALTS, world.halts);
    if let Some(data) = &report.data {
        seen.add(PRODUCE_ERRORS_ANSWERED, data.produce_errors.values().sum());
    }
    if let Some(group) = &report.group {
        seen.add(GROUP_REBALANCES, group.generations_formed);
        seen.add(GROUP_GENERATIONS, group.generations_synced);
    }
    for broker in world.brokers.values() {
        let stats = broker.disk.stats();
        seen.add(FSYNC_FAILURES_HANDLED, stats.sync_eio);
        seen.add(WRITE_ENOSPC, stats.write_enospc);
        seen.add(TORN_WRITES_AT_CRASH, stats.torn_crashes);
        seen.add(READ_BIT_FLIPS, stats.read_bit_flips);
    }
    seen
}
