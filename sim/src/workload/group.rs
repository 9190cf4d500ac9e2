//! The consumer-group workload (`[group]`): members that speak the group
//! protocol over the Kafka wire from the clients' host, consuming the data
//! topic once it exists; after the data converged, the group must consume
//! and commit everything, and its final committed offsets are checked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_io::NodeRng;
use madsim::runtime::NodeHandle;

use crate::kafka_world::KafkaClients;
use crate::report::RunReport;
use crate::scenario::GroupSpec;
use crate::shared::{lock, SharedHistory, WorldClock};
use crate::workload::data::DataRun;
use crate::workload::{Phase, Workload};
use crate::world::World;

/// The group's members under way.
pub struct GroupWorkload {
    group: GroupSpec,
    kafka: KafkaClients,
    host: NodeHandle,
    /// The members' tasks, once the data topic exists; until `converge`.
    members: Option<tokio::task::JoinHandle<Vec<tokio::task::JoinHandle<()>>>>,
    stop: Arc<AtomicBool>,
}

impl GroupWorkload {
    /// With `[group]`: the members join once `data` created its topic.
    pub fn start(world: &World, data: &mut DataRun, rng: &mut NodeRng) -> Option<GroupWorkload> {
        let group = world.scenario.group.clone()?;
        let (kafka, topic_created) = data.for_group()?;
        let host = world.client_host.clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (spec, members_kafka, members_stop, heal_at_ms) = (group.clone(), kafka.clone(), Arc::clone(&stop), world.scenario.duration_ms);
        let mut rng = rng.fork(9);
        let members = host.spawn(async move {
            if topic_created.await.is_err() {
                return Vec::new();
            }
            (0..spec.members)
                .map(|k| {
                    let member =
                        crate::group_world::member(members_kafka.clone(), spec.clone(), k, heal_at_ms, Arc::clone(&members_stop), rng.fork(20_000 + k));
                    tokio::spawn(member)
                })
                .collect()
        });
        Some(GroupWorkload { group, kafka, host, members: Some(members), stop })
    }
}

impl Workload for GroupWorkload {
    /// After the data converged (the data workload converges first): the
    /// group's progress (its probe), then its final committed offsets.
    fn converge<'a>(&'a mut self, world: &'a mut World, report: &'a mut RunReport, rng: &'a mut NodeRng) -> Phase<'a> {
        Box::pin(async move {
            let members = self.members.take().expect("converged once").await.expect("group members task");
            let (heal_at_ms, bound_ms) = (world.scenario.duration_ms, world.scenario.convergence_ms_max);
            let group_rng = rng.fork(6);
            let finish = FinishGroup { clock: &world.clock, history: &world.history, group: &self.group, kafka: &self.kafka, host: &self.host };
            report.group = Some(finish.run(&self.stop, members, heal_at_ms, bound_ms, group_rng).await);
        })
    }
}

/// What finishing the group needs of the world.
struct FinishGroup<'a> {
    clock: &'a WorldClock,
    history: &'a SharedHistory,
    group: &'a GroupSpec,
    kafka: &'a KafkaClients,
    host: &'a NodeHandle,
}

/// After the data converged: the group consumes and commits every
/// committed record within `bound_ms`, its members stop (leaving the
/// group), and its final committed offsets are checked.
impl FinishGroup<'_> {
    async fn run(
        &self,
        group_stop: &Arc<AtomicBool>,
        members: Vec<tokio::task::JoinHandle<()>>,
        heal_at_ms: u64,
        bound_ms: u64,
        mut rng: NodeRng,
    ) -> crate::group_check::GroupStats {
        let FinishGroup { clock, history, group, kafka, host } = *self;
        {
            let mut history = lock(history);
            if let Some((from_ms, to_ms)) = history.group.longest_commit_gap(heal_at_ms) {
                history.group.stats.longest_commit_gap_ms = to_ms - from_ms;
            }
            if let Some(gap_ms_max) = group.commit_gap_ms_max {
                let verdict = history.group.check_commit_gap(heal_at_ms, gap_ms_max);
                history.data_verdict(clock.now_us(), verdict);
            }
        }
        let since_ms = clock.now_ms();
        let committed = lock(history).data.committed_offsets();
        let mut caught_up = false;
        while lock(history).violation().is_none() && clock.now_ms() < since_ms + bound_ms {
            // Consumed everything, and the group's committed offsets (as the
            // coordinator answers them now) are past every committed record.
            if lock(history).group.caught_up(&committed) {
                let (kafka, group, deadline_ms) = (kafka.clone(), group.clone(), clock.now_ms() + 2_000);
                let probe_rng = rng.fork(clock.now_ms());
                let offsets =
                    host.spawn(async move { crate::group_world::final_committed(kafka, group, deadline_ms, probe_rng).await }).await.expect("offsets task");
                if offsets.is_some_and(|offsets| crate::group_check::commits_cover(&committed, &offsets)) {
                    caught_up = true;
                    break;
                }
            }
            clock.0.sleep(Duration::from_millis(200)).await;
        }
        if !caught_up && lock(history).violation().is_none() {
            let message = format!("the group did not consume and commit every committed record within {bound_ms} ms of the data converging");
            lock(history).violate(clock.now_us(), crate::group_check::checker::GROUP_PROGRESS, message);
        }
        group_stop.store(true, Ordering::SeqCst);
        for member in members {
            member.await.expect("group member task");
        }
        if lock(history).violation().is_none() {
            let (kafka, group, deadline_ms) = (kafka.clone(), group.clone(), clock.now_ms() + bound_ms);
            let finals =
                host.spawn(async move { crate::group_world::final_committed(kafka, group, deadline_ms, rng).await }).await.expect("final offsets task");
            let mut history = lock(history);
            let now_us = clock.now_us();
            match finals {
                Some(finals) => {
                    let verdict = history.group.check_final(&committed, &finals);
                    history.data_verdict(now_us, verdict);
                }
                None => {
                    let message = format!("the group's committed offsets could not be read within {bound_ms} ms");
                    history.violate(now_us, crate::group_check::checker::GROUP_PROGRESS, message);
                }
            }
        }
        lock(history).group.stats.clone()
    }
}
