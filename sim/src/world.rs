//! The simulated cluster: brokers as madsim hosts, each booting a full node
//! through keel-node (`host`) on its own SimDisk and clock; the fault
//! timeline (faults fire at their times plus seeded jitter and are undone
//! after their `duration_ms`; at the scenario's `duration_ms` everything
//! heals: links, pauses, dead brokers restart); and convergence (every
//! broker ready, registered, at the same applied index with identical state,
//! every partition led; every node `/readyz` ready). Workloads
//! (`workload`) drive clients against it; the runner (`run`) orders the
//! phases.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_io::{Clock, Disk, NodeRng, SimDisk, SimDiskFaults};
use keel_kafka::server::StopSignal;
use keel_meta::driver::{MetaHandle, MetaObserver};
use keel_meta::MetadataState;
use keel_node::{NodeConfig, NodeIdentity, Seams};
use keel_repl::driver::{ReplEvent, ReplObserver};
use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle};
use rand::Rng;

use crate::data_world::DATA_TOPIC;
use crate::host::{identity, start_node};
use crate::kafka_world::KafkaClients;
use crate::meta_check::checker;
use crate::report::RunReport;
use crate::scenario::{ClientKind, Fault, FaultAction, FaultKind, Scenario, Target};
use crate::shared::{ip_of, lock, MetaHandles, ReplHandles, SharedHistory, WorldClock, BROKERS_SUBNET};

pub(crate) const CLUSTER_ID: &str = "sim-cluster";
/// How often convergence is polled, in simulated time.
pub(crate) const POLL_MS: u64 = 20;
/// While a `lag` fault holds a broker's traffic back, it lets it through for this long between holds.
pub(crate) const LAG_OPEN_MS: u64 = 20;
/// A broker that halted on a disk error starts again this long after.
pub(crate) const HALT_RESTART_MS: u64 = 300;
/// A crash or power loss keeps a torn part of the unsynced writes this often.
pub(crate) const TORN_WRITE_ON_CRASH_PROBABILITY: f64 = 0.5;

/// The brokers serving right now and their handles (copied out, so no lock
/// is held across an await).
pub(crate) fn serving(handles: &MetaHandles) -> Vec<(u64, MetaHandle)> {
    lock(handles).iter().map(|(id, handle)| (*id, handle.clone())).collect()
}

/// The Kafka clients' host (`[data] client = "kafka"`), its address, and the
/// id faults name it by (`Target::Clients`; broker ids start at 1).
pub(crate) const CLIENTS_IP: &str = "10.0.2.1";
pub(crate) const CLIENTS_ID: u64 = 0;
/// The readiness probes' host.
pub(crate) const PROBE_IP: &str = "10.0.3.1";

/// A fault's name for a host: a broker, or the Kafka clients' host.
pub(crate) fn host_name(id: u64) -> String {
    if id == CLIENTS_ID {
        "clients".to_string()
    } else {
        format!("n{id}")
    }
}

/// One simulated broker host.
pub(crate) struct Broker {
    pub(crate) id: u64,
    /// Created at the broker's first start.
    pub(crate) host: Option<NodeHandle>,
    pub(crate) disk: SimDisk,
    pub(crate) clock: Clock,
    pub(crate) up: bool,
    pub(crate) paused: bool,
    /// A `disk` fault hit this broker: stopping on a disk error is then
    /// expected (the broker halts, as Kafka does) and it is restarted.
    pub(crate) disk_faulted: Arc<AtomicBool>,
    /// The running node's graceful-stop signal.
    pub(crate) stop: Arc<Mutex<StopSignal>>,
}

/// (at_ms, broker) of halted brokers waiting for their restart.
pub(crate) type RestartsDue = Vec<(u64, u64)>;

/// What the timeline does next.
#[derive(Clone, Debug)]
pub(crate) enum Action {
    Start(u64),
    Fire(usize),
    Undo { fault: usize, brokers: Vec<u64>, links: Vec<(u64, u64)> },
    LagHold { broker: u64, delay_ms: u64, until_ms: u64, generation: u64 },
    LagRelease { broker: u64, delay_ms: u64, until_ms: u64, generation: u64 },
    Heal,
}

pub(crate) struct World {
    pub(crate) scenario: Arc<Scenario>,
    pub(crate) seed: u64,
    pub(crate) runtime: Handle,
    pub(crate) clock: WorldClock,
    pub(crate) brokers: BTreeMap<u64, Broker>,
    pub(crate) handles: MetaHandles,
    pub(crate) repl: ReplHandles,
    /// Brokers that stopped on a disk error, to be restarted (a supervisor's job).
    pub(crate) halted: Arc<Mutex<Vec<u64>>>,
    /// Every disk's faults outside `disk` faults (the scenario's latency).
    pub(crate) base_disk_faults: SimDiskFaults,
    /// (at_ms, broker): halted brokers waiting for their restart.
    pub(crate) restarts_due: Vec<(u64, u64)>,
    pub(crate) halts: u64,
    pub(crate) history: SharedHistory,
    pub(crate) rng: NodeRng,
    /// (at_ms, sequence) -> action; the sequence keeps same-time actions in order.
    pub(crate) timeline: BTreeMap<(u64, u64), Action>,
    pub(crate) sequence: u64,
    /// Bumped by every heal so lag cycles started before it stop.
    pub(crate) lag_generation: u64,
    pub(crate) faults_fired: u64,
    /// The Kafka clients' host, with `[data] client = "kafka"`.
    pub(crate) client_host: Option<NodeHandle>,
    /// Where readiness probes come from (never faulted).
    pub(crate) probe_host: NodeHandle,
}

impl World {
    pub(crate) fn schedule(&mut self, at_ms: u64, action: Action) {
        self.sequence += 1;
        self.timeline.insert((at_ms, self.sequence), action);
    }

    pub(crate) fn note(&self, line: impl std::fmt::Display) {
        lock(&self.history).note(self.clock.now_us(), line);
    }

    /// Who broker `id` is on the simulated network.
    pub(crate) fn identity(&self, id: u64) -> NodeIdentity {
        let rack = self.scenario.cluster.racks.as_ref().map(|racks| racks[(id - 1) as usize].clone());
        identity(CLUSTER_ID, BROKERS_SUBNET, id, self.scenario.cluster.brokers, rack)
    }

    /// Creates the broker's host; its init boots a node through keel-node
    /// (as `keel start` does) on every (re)start.
    pub(crate) fn start_broker(&mut self, id: u64) {
        let broker = self.brokers.get_mut(&id).expect("known broker");
        if broker.up {
            return;
        }
        broker.up = true;
        if let Some(host) = &broker.host {
            // The old process is gone by now (killed, or exited after its
            // drain): its sockets are released before the new one binds
            // (madsim's restart alone keeps them).
            self.runtime.kill(host.id());
            self.runtime.restart(host.id());
            self.note(format_args!("n{id} restart"));
            return;
        }
        let boot = NodeBoot {
            id,
            seed: self.seed,
            disk: broker.disk.clone(),
            clock: broker.clock.clone(),
            stop: Arc::clone(&broker.stop),
            disk_faulted: Arc::clone(&broker.disk_faulted),
            identity: self.identity(id),
            config: self.scenario.node.clone(),
            handles: Arc::clone(&self.handles),
            repl: Arc::clone(&self.repl),
            halted: Arc::clone(&self.halted),
            history: Arc::clone(&self.history),
            world_clock: self.clock.clone(),
        };
        let incarnations = Arc::new(AtomicU64::new(0));
        let host = self
            .runtime
            .create_node()
            .name(format!("broker-{id}"))
            .ip(ip_of(id).parse().expect("broker ip"))
            .init(move || boot.clone().run(incarnations.fetch_add(1, Ordering::SeqCst) + 1))
            .build();
        self.note(format_args!("n{id} start"));
        self.brokers.get_mut(&id).expect("known broker").host = Some(host);
    }

    pub(crate) fn stop_broker(&mut self, id: u64, power_loss: bool) {
        let broker = self.brokers.get_mut(&id).expect("known broker");
        if !broker.up {
            return;
        }
        broker.up = false;
        broker.paused = false;
        let host = broker.host.as_ref().expect("an up broker has a host").id();
        self.runtime.kill(host);
        lock(&self.handles).remove(&id);
        lock(&self.repl).remove(&id);
        if power_loss {
            broker.disk.set_faults(SimDiskFaults { torn_write_on_crash_probability: TORN_WRITE_ON_CRASH_PROBABILITY, ..self.base_disk_faults.clone() });
            broker.disk.crash();
        }
    }

    /// The graceful stop a SIGTERM starts: the node drains and exits on its
    /// own (its host stays, idle, until the broker starts again).
    pub(crate) fn drain_broker(&mut self, id: u64) {
        let broker = self.brokers.get_mut(&id).expect("known broker");
        if !broker.up {
            return;
        }
        if broker.paused {
            self.runtime.resume(broker.host.as_ref().expect("a paused broker has a host").id());
            broker.paused = false;
        }
        broker.up = false;
        lock(&broker.stop).stop();
    }

    pub(crate) fn resume_broker(&mut self, id: u64) {
        if self.brokers[&id].paused {
            self.runtime.resume(self.host_of(id).expect("a paused broker has a host"));
            self.brokers.get_mut(&id).expect("known broker").paused = false;
        }
    }

    /// Restarts brokers that halted on a disk error, as a supervisor
    /// (systemd) would: the dead process is reaped at once and started
    /// again `HALT_RESTART_MS` later.
    pub(crate) fn restart_halted(&mut self) {
        let now_ms = self.clock.now_ms();
        let halted: Vec<u64> = std::mem::take(&mut *lock(&self.halted));
        for id in halted {
            if let (true, Some(host)) = (self.brokers[&id].up, self.host_of(id)) {
                self.halts += 1;
                self.runtime.kill(host);
                self.restarts_due.push((now_ms + HALT_RESTART_MS, id));
            }
        }
        let (due, later): (RestartsDue, RestartsDue) = self.restarts_due.drain(..).partition(|(at_ms, _)| *at_ms <= now_ms);
        self.restarts_due = later;
        for (_, id) in due {
            if let (true, Some(host)) = (self.brokers[&id].up, self.host_of(id)) {
                self.runtime.restart(host);
                self.note(format_args!("n{id} restarted after halting on a disk error"));
            }
        }
    }

    /// Sleeps until `at_ms`, restarting halted brokers along the way.
    pub(crate) async fn sleep_until_ms(&mut self, at_ms: u64) {
        while self.clock.now_ms() < at_ms {
            let wake_ms = at_ms.min(self.clock.now_ms() + POLL_MS);
            self.clock.sleep_until_ms(wake_ms).await;
            self.restart_halted();
        }
    }

    pub(crate) fn host_of(&self, id: u64) -> Option<madsim::task::NodeId> {
        if id == CLIENTS_ID {
            return self.client_host.as_ref().map(|host| host.id());
        }
        self.brokers[&id].host.as_ref().map(|host| host.id())
    }

    /// The broker that currently leads (the highest term among up brokers).
    pub(crate) fn leader(&self) -> Option<u64> {
        let handles = lock(&self.handles);
        handles.values().map(|h| h.status()).filter(|s| s.is_leader).max_by_key(|s| s.term).map(|s| s.node_id)
    }

    pub(crate) fn resolve(&mut self, target: &Target) -> Option<u64> {
        let up: Vec<u64> = self.brokers.values().filter(|b| b.up).map(|b| b.id).collect();
        match target {
            Target::Broker(id) => Some(*id),
            Target::Leader => self.leader(),
            Target::Follower => {
                let leader = self.leader();
                let followers: Vec<u64> = up.into_iter().filter(|id| Some(*id) != leader).collect();
                (!followers.is_empty()).then(|| followers[self.rng.gen_range(0..followers.len())])
            }
            Target::Random => {
                let all: Vec<u64> = self.brokers.keys().copied().collect();
                Some(all[self.rng.gen_range(0..all.len())])
            }
            Target::PartitionLeader | Target::PartitionFollower => {
                let handles = serving(&self.handles);
                let (_, handle) = handles.first()?;
                let state = handle.feed().current();
                let partition = state.partition(DATA_TOPIC, 0)?;
                if *target == Target::PartitionLeader {
                    return partition.leader;
                }
                let followers: Vec<u64> = partition.replicas.iter().copied().filter(|id| Some(*id) != partition.leader && up.contains(id)).collect();
                (!followers.is_empty()).then(|| followers[self.rng.gen_range(0..followers.len())])
            }
            Target::Clients => self.client_host.is_some().then_some(CLIENTS_ID),
        }
    }

    pub(crate) fn clog_link(&self, from: u64, to: u64) {
        if let (Some(a), Some(b)) = (self.host_of(from), self.host_of(to)) {
            NetSim::current().clog_link(a, b);
        }
    }

    pub(crate) fn unclog_link(&self, from: u64, to: u64) {
        if let (Some(a), Some(b)) = (self.host_of(from), self.host_of(to)) {
            NetSim::current().unclog_link(a, b);
        }
    }

    pub(crate) fn fire(&mut self, index: usize) {
        let fault: Fault = self.scenario.faults[index].clone();
        let now_ms = self.clock.now_ms();
        let undo_at = fault.duration_ms.map(|d| now_ms + d);
        let mut undo_brokers = Vec::new();
        let mut undo_links = Vec::new();
        let described = match &fault.action {
            FaultAction::OnBroker(target) => self.fire_on_broker(&fault, target, &mut undo_brokers),
            FaultAction::Partition(groups) => {
                undo_links = partition_links(groups);
                undo_links.iter().for_each(|(a, b)| self.clog_link(*a, *b));
                format!("partition {groups:?}")
            }
            FaultAction::OneWay { from, to } => match (self.resolve(from), self.resolve(to)) {
                (Some(a), Some(b)) if a != b => {
                    self.clog_link(a, b);
                    undo_links.push((a, b));
                    format!("one-way cut {} -> {}", host_name(a), host_name(b))
                }
                _ => "one-way cut: endpoints resolve to one broker, skipped".to_string(),
            },
            FaultAction::Latency { min_ms, max_ms } => {
                let range = Duration::from_millis(*min_ms)..Duration::from_millis(*max_ms + 1);
                NetSim::current().update_config(|config| config.send_latency = range);
                format!("latency {min_ms}..={max_ms} ms")
            }
            FaultAction::Loss { rate } => {
                let rate = *rate;
                NetSim::current().update_config(|config| config.packet_loss_rate = rate);
                format!("loss rate {rate}")
            }
            FaultAction::Lag { node, delay_ms } => match self.resolve(node) {
                Some(id) => {
                    let until_ms = undo_at.unwrap_or(self.scenario.duration_ms);
                    let generation = self.lag_generation;
                    self.schedule(now_ms, Action::LagHold { broker: id, delay_ms: *delay_ms, until_ms, generation });
                    format!("lag n{id} by {delay_ms} ms until {until_ms} ms")
                }
                None => "lag: no such broker now, skipped".to_string(),
            },
            FaultAction::Clock { node, drift_ppm, skew_ms } => match self.resolve(node) {
                Some(id) => {
                    let clock = &self.brokers[&id].clock;
                    clock.set_drift_ppm(*drift_ppm);
                    clock.set_wall_skew_ms(*skew_ms);
                    format!("clock n{id} drift {drift_ppm} ppm, skew {skew_ms} ms")
                }
                None => "clock: no such broker now, skipped".to_string(),
            },
            FaultAction::Disk { .. } => self.fire_disk(&fault.action, &mut undo_brokers),
            FaultAction::Everyone => match fault.kind {
                FaultKind::PowerLoss => {
                    let up: Vec<u64> = self.brokers.values().filter(|b| b.up).map(|b| b.id).collect();
                    for id in &up {
                        self.stop_broker(*id, true);
                    }
                    undo_brokers = up;
                    "power loss of every broker".to_string()
                }
                _ => {
                    self.heal();
                    "heal".to_string()
                }
            },
        };
        self.faults_fired += 1;
        match fault.line {
            0 => self.note(format_args!("fault (swarm) {described}")),
            line => self.note(format_args!("fault (line {line}) {described}")),
        }
        if let Some(undo_at) = undo_at {
            if !undo_brokers.is_empty() || !undo_links.is_empty() || matches!(fault.action, FaultAction::Latency { .. } | FaultAction::Loss { .. }) {
                self.schedule(undo_at, Action::Undo { fault: index, brokers: undo_brokers, links: undo_links });
            }
        }
    }

    /// A fault on one broker (kill, crash, graceful stop, restart, pause,
    /// clog): what it did, for the trace; brokers to undo it on later go to
    /// `undo_brokers`.
    pub(crate) fn fire_on_broker(&mut self, fault: &Fault, target: &Target, undo_brokers: &mut Vec<u64>) -> String {
        match self.resolve(target) {
            None => format!("{:?} on {target:?}: no such broker now, skipped", fault.kind),
            Some(id) => {
                let host = self.host_of(id);
                let up = self.brokers[&id].up;
                match fault.kind {
                    FaultKind::Kill | FaultKind::Crash if up => {
                        self.stop_broker(id, fault.kind == FaultKind::Crash);
                        undo_brokers.push(id);
                    }
                    FaultKind::Stop if up => {
                        self.drain_broker(id);
                        undo_brokers.push(id);
                    }
                    FaultKind::Restart if !up => self.start_broker(id),
                    FaultKind::Pause if up && !self.brokers[&id].paused => {
                        self.runtime.pause(host.expect("up broker has a host"));
                        self.brokers.get_mut(&id).expect("broker").paused = true;
                        undo_brokers.push(id);
                    }
                    FaultKind::Clog => {
                        if let Some(host) = host {
                            NetSim::current().clog_node(host);
                            undo_brokers.push(id);
                        }
                    }
                    _ => {}
                }
                format!(
                    "{:?} n{id}{}",
                    fault.kind,
                    if undo_brokers.is_empty() && fault.kind != FaultKind::Restart { " (no effect in its current state)" } else { "" }
                )
            }
        }
    }

    /// Disk faults on one broker (fsync EIO, read bit flips, torn writes,
    /// ENOSPC on writes, a slow disk).
    pub(crate) fn fire_disk(&mut self, action: &FaultAction, undo_brokers: &mut Vec<u64>) -> String {
        let FaultAction::Disk { node, sync_eio_probability, read_bit_flip_probability, torn_write_probability, write_enospc_probability, latency_us } = action
        else {
            unreachable!("fire_disk is called for disk faults only");
        };
        let Some(id) = self.resolve(node) else {
            return "disk: no such broker now, skipped".to_string();
        };
        let broker = &self.brokers[&id];
        broker.disk_faulted.store(true, Ordering::SeqCst);
        let base = self.base_disk_faults.clone();
        broker.disk.set_faults(SimDiskFaults {
            sync_eio_probability: *sync_eio_probability,
            read_bit_flip_probability: *read_bit_flip_probability,
            torn_write_on_crash_probability: *torn_write_probability,
            write_enospc_probability: *write_enospc_probability,
            latency_us: latency_us.map(|[min, max]| (min, max)).or(base.latency_us),
        });
        undo_brokers.push(id);
        let enospc = if *write_enospc_probability > 0.0 { format!(", ENOSPC {write_enospc_probability}") } else { String::new() };
        let slow = latency_us.map_or(String::new(), |[min, max]| format!(", slow disk {min}..{max} us"));
        format!("disk faults on n{id}: fsync EIO {sync_eio_probability}, read bit flips {read_bit_flip_probability}, torn writes {torn_write_probability}{enospc}{slow}")
    }

    pub(crate) fn undo(&mut self, index: usize, brokers: Vec<u64>, links: Vec<(u64, u64)>) {
        let fault = self.scenario.faults[index].clone();
        for id in &brokers {
            match fault.kind {
                FaultKind::Kill | FaultKind::Crash | FaultKind::Stop | FaultKind::PowerLoss => self.start_broker(*id),
                FaultKind::Pause => self.resume_broker(*id),
                FaultKind::Clog => {
                    if let Some(host) = self.host_of(*id) {
                        NetSim::current().unclog_node(host);
                    }
                }
                FaultKind::Disk => self.brokers[id].disk.set_faults(self.base_disk_faults.clone()),
                _ => {}
            }
        }
        for (a, b) in &links {
            self.unclog_link(*a, *b);
        }
        match fault.action {
            FaultAction::Latency { .. } => {
                let default = madsim::net::Config::default().send_latency;
                NetSim::current().update_config(|config| config.send_latency = default);
            }
            FaultAction::Loss { .. } => NetSim::current().update_config(|config| config.packet_loss_rate = 0.0),
            _ => {}
        }
        self.note(format_args!("undo (line {}) {:?} {brokers:?} {links:?}", fault.line, fault.kind));
    }

    /// Ends every fault: links, latency, loss, pauses, lags; dead brokers start.
    pub(crate) fn heal(&mut self) {
        self.lag_generation += 1;
        let net = NetSim::current();
        let ids: Vec<u64> = self.brokers.keys().copied().collect();
        for a in &ids {
            if let Some(host) = self.host_of(*a) {
                net.unclog_node(host);
            }
            for b in &ids {
                self.unclog_link(*a, *b);
            }
            if self.client_host.is_some() {
                self.unclog_link(*a, CLIENTS_ID);
                self.unclog_link(CLIENTS_ID, *a);
            }
        }
        let default = madsim::net::Config::default();
        net.update_config(|config| {
            config.send_latency = default.send_latency.clone();
            config.packet_loss_rate = 0.0;
        });
        for id in &ids {
            self.brokers[id].disk.set_faults(self.base_disk_faults.clone());
            self.resume_broker(*id);
            if !self.brokers[id].up {
                self.start_broker(*id);
            }
        }
        self.restart_halted();
    }

    pub(crate) fn act(&mut self, action: Action) {
        match action {
            Action::Start(id) => self.start_broker(id),
            Action::Fire(index) => self.fire(index),
            Action::Undo { fault, brokers, links } => self.undo(fault, brokers, links),
            Action::LagHold { broker, delay_ms, until_ms, generation } => {
                if generation == self.lag_generation && self.clock.now_ms() < until_ms {
                    if let Some(host) = self.host_of(broker) {
                        NetSim::current().clog_node(host);
                    }
                    let release_at = (self.clock.now_ms() + delay_ms).min(until_ms);
                    self.schedule(release_at, Action::LagRelease { broker, delay_ms, until_ms, generation });
                }
            }
            Action::LagRelease { broker, delay_ms, until_ms, generation } => {
                if generation == self.lag_generation {
                    if let Some(host) = self.host_of(broker) {
                        NetSim::current().unclog_node(host);
                    }
                    self.schedule(self.clock.now_ms() + LAG_OPEN_MS, Action::LagHold { broker, delay_ms, until_ms, generation });
                }
            }
            Action::Heal => {
                self.heal();
                self.note("heal: every fault ends");
            }
        }
    }
}

/// Both directions of every link between brokers in different groups.
pub(crate) fn partition_links(groups: &[Vec<u64>]) -> Vec<(u64, u64)> {
    let mut links = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        for other in groups.iter().skip(g + 1) {
            for a in group {
                for b in other {
                    links.extend([(*a, *b), (*b, *a)]);
                }
            }
        }
    }
    links
}

/// What a broker host needs to boot its node, on every (re)start.
#[derive(Clone)]
pub(crate) struct NodeBoot {
    id: u64,
    seed: u64,
    disk: SimDisk,
    clock: Clock,
    /// Fired by a graceful stop (the drain a SIGTERM starts); a fresh signal per start.
    stop: Arc<Mutex<StopSignal>>,
    disk_faulted: Arc<AtomicBool>,
    identity: NodeIdentity,
    config: NodeConfig,
    handles: MetaHandles,
    repl: ReplHandles,
    halted: Arc<Mutex<Vec<u64>>>,
    history: SharedHistory,
    world_clock: WorldClock,
}

impl NodeBoot {
    /// One start of the node, until it stops (killed with its host, halted
    /// on an error, or drained).
    pub(crate) async fn run(self, incarnation: u64) {
        let id = self.id;
        let stop = StopSignal::new();
        *lock(&self.stop) = stop.clone();
        let mut seams = Seams::new(Disk::Sim(self.disk.clone()), self.clock.clone(), NodeRng::new(self.seed, id, incarnation));
        seams.meta_observer = Some(meta_observer(&self.history, &self.world_clock));
        seams.repl_observer = Some(repl_observer(&self.history, &self.world_clock));
        let node = match start_node(self.identity.clone(), &ip_of(id), &self.config, seams).await {
            Ok(node) => node,
            Err(error) => return self.stopped(format!("node {id} could not start (incarnation {incarnation}): {error}"), false),
        };
        lock(&self.handles).insert(id, node.meta().clone());
        lock(&self.repl).insert(id, node.repl().clone());
        let served = node.run_until(stop.stopped()).await;
        // Gone from the clients' view before the drain, as a stopping broker
        // is; the drain then waits for no handle of the world's.
        lock(&self.handles).remove(&id);
        lock(&self.repl).remove(&id);
        let ended = match served {
            Ok(node) => node.drain().await,
            Err(error) => Err(error),
        };
        match ended {
            Ok(report) => {
                let line = format!("n{id} drained in {} ms ({} Kafka requests cut off) and stopped", report.drain_ms, report.kafka_requests_aborted);
                let mut history = lock(&self.history);
                history.note(self.world_clock.now_us(), line);
                history.coverage.add(crate::coverage::GRACEFUL_DRAINS, 1);
            }
            Err(error) => self.stopped(format!("node {id} stopped: {error}"), error.is_panic()),
        }
    }

    /// A node stopped on its own. After an injected disk fault, stopping on
    /// an error is the broker halting as it should (it is restarted);
    /// anything else, and any panic, is a violation.
    pub(crate) fn stopped(&self, message: String, panicked: bool) {
        if !panicked && self.disk_faulted.load(Ordering::SeqCst) {
            lock(&self.history).note(self.world_clock.now_us(), format_args!("n{} halts: {message}", self.id));
            lock(&self.halted).push(self.id);
        } else {
            lock(&self.history).violate(self.world_clock.now_us(), checker::NO_PANICS, message);
        }
    }
}

/// The metadata driver's events go to the trace and the metadata checkers.
pub(crate) fn meta_observer(history: &SharedHistory, clock: &WorldClock) -> MetaObserver {
    let (history, clock) = (Arc::clone(history), clock.clone());
    MetaObserver::new(move |event| lock(&history).observe(clock.now_us(), event))
}

/// The replication driver's events go to the trace and the
/// one-leader-per-epoch checker.
pub(crate) fn repl_observer(history: &SharedHistory, clock: &WorldClock) -> ReplObserver {
    let (history, clock) = (Arc::clone(history), clock.clone());
    ReplObserver::new(move |event| {
        let mut history = lock(&history);
        let at_us = clock.now_us();
        match event {
            ReplEvent::BecameLeader { node_id, topic, partition, leader_epoch, log_end_offset } => {
                history.coverage.add(crate::coverage::PARTITION_LEADER_CHANGES, 1);
                history.note(at_us, format_args!("n{node_id} leads {topic}-{partition} epoch {leader_epoch} at log end {log_end_offset}"));
                let verdict = history.data.became_leader(*node_id, topic, *partition, *leader_epoch);
                history.data_verdict(at_us, verdict);
            }
            ReplEvent::BecameFollower { node_id, topic, partition, leader_id, leader_epoch, log_end_offset } => {
                history.note(at_us, format_args!("n{node_id} follows n{leader_id} for {topic}-{partition} epoch {leader_epoch} from log end {log_end_offset}"));
            }
            ReplEvent::Truncated { node_id, topic, partition, end_offset } => {
                history.coverage.add(crate::coverage::EPOCH_TRUNCATIONS, 1);
                history.note(at_us, format_args!("n{node_id} truncates {topic}-{partition} to {end_offset}"));
            }
            ReplEvent::IsrChanged { node_id, topic, partition, leader_epoch, isr_before, isr } => {
                if isr_before.iter().any(|id| !isr.contains(id)) {
                    history.coverage.add(crate::coverage::ISR_SHRINKS, 1);
                }
                if isr.iter().any(|id| !isr_before.contains(id)) {
                    history.coverage.add(crate::coverage::ISR_EXPANDS, 1);
                }
                history.note(at_us, format_args!("n{node_id} leads {topic}-{partition} epoch {leader_epoch} with ISR {isr:?} (was {isr_before:?})"));
            }
            ReplEvent::TornTailRecovered { node_id, topic, partition, log_end_offset } => {
                history.coverage.add(crate::coverage::TORN_TAIL_RECOVERIES, 1);
                history.note(at_us, format_args!("n{node_id} cut a torn tail off {topic}-{partition}; its log ends at {log_end_offset}"));
            }
        }
    })
}

/// Why the cluster has not converged yet, or `None` once it has.
pub(crate) async fn not_converged(handles: MetaHandles, brokers: usize) -> Option<String> {
    let handles = serving(&handles);
    if handles.len() != brokers {
        let up: Vec<u64> = handles.iter().map(|(id, _)| *id).collect();
        return Some(format!("only brokers {up:?} are serving"));
    }
    let mut first: Option<(u64, u64, MetadataState)> = None;
    for (id, handle) in &handles {
        let status = handle.status();
        if !status.ready || !status.registered {
            return Some(format!("broker {id} ready={} registered={} ({status:?})", status.ready, status.registered));
        }
        let Ok(state) = handle.read_state().await else {
            return Some(format!("broker {id} stopped"));
        };
        for topic in state.topics() {
            if let Some(index) = topic.partitions.iter().position(|p| p.leader.is_none()) {
                return Some(format!("broker {id}: {}-{index} has no leader", topic.name));
            }
        }
        match &first {
            None => first = Some((*id, status.applied_index, state)),
            Some((other, applied_index, other_state)) => {
                if *applied_index != status.applied_index || *other_state != state {
                    return Some(format!(
                        "brokers {other} and {id} differ: applied {applied_index} vs {}, metadata version {} vs {}",
                        status.applied_index,
                        other_state.metadata_version(),
                        state.metadata_version()
                    ));
                }
            }
        }
    }
    None
}

/// Every node answers `/readyz` with 200 over the simulated network (asked
/// from the probe host), within `bound_ms`: what an orchestrator would wait
/// for before sending traffic.
pub(crate) async fn check_every_node_ready(world: &mut World, bound_ms: u64) {
    let since_ms = world.clock.now_ms();
    let ids: Vec<u64> = world.brokers.keys().copied().collect();
    let probe = world.probe_host.clone();
    let not_ready = move || {
        let (ids, probe) = (ids.clone(), probe.clone());
        async move {
            let answers = probe.spawn(async move {
                let mut answers = Vec::new();
                for id in ids {
                    answers.push((id, crate::host::readyz(&ip_of(id)).await));
                }
                answers
            });
            let answers = answers.await.expect("readyz probe task");
            answers.into_iter().find_map(|(id, answer)| match answer {
                Ok((200, _)) => None,
                Ok((status, body)) => Some(format!("n{id} /readyz answered {status}: {body}")),
                Err(error) => Some(format!("n{id} /readyz: {error}")),
            })
        }
    };
    await_convergence(world, since_ms, bound_ms, checker::READY_AFTER_CONVERGENCE, "every node ready", not_ready).await;
}

/// Polls until converged; a violation if not within `bound_ms` of `since_ms`.
/// The metadata's convergence (`not_converged` over every broker).
pub(crate) async fn await_metadata_convergence(world: &mut World, since_ms: u64, bound_ms: u64, what: &str) -> bool {
    let (handles, brokers) = (Arc::clone(&world.handles), world.brokers.len());
    await_convergence(world, since_ms, bound_ms, checker::CONVERGENCE, what, || not_converged(Arc::clone(&handles), brokers)).await
}

/// Polls `not_converged` (restarting halted brokers in between) until it
/// says `None`; a `checker` violation if that takes longer than `bound_ms`
/// from `since_ms`.
pub(crate) async fn await_convergence<F: std::future::Future<Output = Option<String>>>(
    world: &mut World,
    since_ms: u64,
    bound_ms: u64,
    checker: &'static str,
    what: &str,
    mut not_converged: impl FnMut() -> F,
) -> bool {
    loop {
        world.restart_halted();
        let reason = match not_converged().await {
            None => {
                world.note(format_args!("converged ({what})"));
                return true;
            }
            Some(reason) => reason,
        };
        if world.clock.now_ms() > since_ms + bound_ms {
            let message = format!("{what}: not converged within {bound_ms} ms: {reason}");
            lock(&world.history).violate(world.clock.now_us(), checker, message);
            return false;
        }
        world.clock.0.sleep(Duration::from_millis(POLL_MS)).await;
    }
}

impl World {
    /// The brokers (not started yet), each with its SimDisk and clock.
    pub(crate) fn new(scenario: Arc<Scenario>, seed: u64, rng: NodeRng, history: SharedHistory) -> World {
        let base_disk_faults = SimDiskFaults { latency_us: scenario.cluster.disk_latency_us.map(|[min, max]| (min, max)), ..SimDiskFaults::default() };
        let brokers = (1..=scenario.cluster.brokers)
            .map(|id| {
                let disk = SimDisk::new(NodeRng::new(seed, id, 1_000_000));
                disk.set_faults(base_disk_faults.clone());
                let broker = Broker {
                    id,
                    host: None,
                    disk,
                    clock: Clock::new(),
                    up: false,
                    paused: false,
                    disk_faulted: Arc::new(AtomicBool::new(false)),
                    stop: Arc::new(Mutex::new(StopSignal::new())),
                };
                (id, broker)
            })
            .collect();
        let runtime = Handle::current();
        let probe_host = runtime.create_node().name("probe").ip(PROBE_IP.parse().expect("probe ip")).build();
        World {
            scenario,
            seed,
            runtime,
            clock: WorldClock(Clock::new()),
            brokers,
            handles: Arc::new(Mutex::new(BTreeMap::new())),
            repl: Arc::new(Mutex::new(BTreeMap::new())),
            halted: Arc::new(Mutex::new(Vec::new())),
            restarts_due: Vec::new(),
            base_disk_faults,
            halts: 0,
            history,
            rng,
            timeline: BTreeMap::new(),
            sequence: 0,
            lag_generation: 0,
            faults_fired: 0,
            client_host: None,
            probe_host,
        }
    }

    /// With `[data] client = "kafka"`: the Kafka clients, on their own host.
    pub(crate) fn kafka_clients(&mut self) -> Option<KafkaClients> {
        let scenario = Arc::clone(&self.scenario);
        let clients = scenario.data.clone().filter(|spec| spec.client == ClientKind::Kafka).map(|spec| KafkaClients {
            spec,
            history: Arc::clone(&self.history),
            clock: self.clock.clone(),
            brokers: (1..=scenario.cluster.brokers).collect(),
        });
        if clients.is_some() {
            self.client_host = Some(self.runtime.create_node().name("kafka-clients").ip(CLIENTS_IP.parse().expect("clients ip")).build());
        }
        clients
    }

    /// Broker starts and fault firings at their laid-out times (`schedule`), then the heal.
    pub(crate) fn schedule_starts_faults_and_heal(&mut self, start_at_ms: &[u64], fire_at_ms: &[u64]) {
        assert_eq!(start_at_ms.len() as u64, self.scenario.cluster.brokers, "one start time per broker");
        assert_eq!(fire_at_ms.len(), self.scenario.faults.len(), "one firing time per fault");
        for (id, at_ms) in (1..).zip(start_at_ms) {
            self.schedule(*at_ms, Action::Start(id));
        }
        for (index, at_ms) in fire_at_ms.iter().enumerate() {
            self.schedule(*at_ms, Action::Fire(index));
        }
        self.schedule(self.scenario.duration_ms, Action::Heal);
    }

    /// The fault timeline, up to and including the heal.
    pub(crate) async fn run_timeline_to_heal(&mut self) {
        while let Some(((at_ms, _), action)) = self.timeline.pop_first() {
            self.sleep_until_ms(at_ms).await;
            let heal = matches!(action, Action::Heal);
            self.act(action);
            if heal {
                break;
            }
        }
    }
}

/// Clients may have committed more after the first convergence: settle
/// again, then every node's final metadata and its readiness.
pub(crate) async fn final_checks(world: &mut World, report: &mut RunReport) {
    let (history, clock, bound_ms) = (Arc::clone(&world.history), world.clock.clone(), world.scenario.convergence_ms_max);
    let settled_ms = world.clock.now_ms();
    let clean_so_far = lock(&history).violation().is_none();
    if clean_so_far && await_metadata_convergence(world, settled_ms, bound_ms, "after every client finished").await {
        let mut finals = BTreeMap::new();
        let handles = serving(&world.handles);
        lock(&history).final_reads_begin();
        for (id, handle) in handles {
            if let Ok(state) = handle.read_state().await {
                finals.insert(id, (handle.status().applied_index, state));
            }
        }
        report.final_applied_index = finals.values().map(|(index, _)| *index).max().unwrap_or(0);
        lock(&history).check_final(clock.now_us(), &finals, &crate::meta_check::FINAL_CHECKS);
        check_every_node_ready(world, bound_ms).await;
    }
}
