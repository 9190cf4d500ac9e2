//! Scenario files: a simulated metadata cluster, its workload and its timed
//! faults, in TOML. `Scenario::load` turns a file into a validated plan or a
//! `ScenarioError` naming the file, the line and what was expected there.
//!
//! ```toml
//! about = "what this reproduces"
//! duration_ms = 20000          # faults stop here; then everything heals
//! convergence_ms_max = 15000   # after the heal, every live node must agree within this
//!
//! [cluster]
//! brokers = 3
//! racks = ["a", "b", "c"]      # optional, one per broker
//! start_ms = [0, 700, 1900]    # optional, when each broker first starts
//! start_jitter_ms = 500        # optional, plus a seeded 0..jitter per broker
//! disk_latency_us = [50, 400]  # optional, each disk operation takes this long
//!
//! [node]                       # optional: keel's node settings (`NodeConfig`), over keel's defaults
//! proposal_timeout_ms = 3000
//! registration_lease_ms = 2000
//! metadata_segment_bytes = 65536
//!
//! [workload]                   # topic creates sent to brokers by clients
//! creates = 20
//! start_ms = 0
//! gap_ms = [100, 600]          # seeded pause between two creates
//! to = "any"                   # or "followers" / "leader": which broker receives each create
//! partitions = [1, 6]
//! replication_factor = [1, 3]
//! client_timeout_ms = 15000    # a client retries (with backoff, on any broker) this long
//! deletes = 5                  # optional: this many of the topics (a seeded choice) are deleted
//! delete_after_ms = [0, 2000]  # by their client, this long after its create's answer
//!
//! [[fault]]
//! kind = "kill"                # see FaultKind
//! node = "leader"              # a broker id, "leader", "follower" or "random"
//! at_ms = 3000
//! jitter_ms = 500              # optional: seeded 0..jitter added to at_ms
//! every_ms = 4000              # optional: repeat until until_ms
//! until_ms = 16000
//! duration_ms = 1500           # optional: undone after this long
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use keel_node::NodeConfig;
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// A scenario file that cannot be run, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: cannot read the scenario file: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Invalid { path: String, line: usize, message: String },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    about: Option<String>,
    duration_ms: Spanned<u64>,
    convergence_ms_max: Spanned<u64>,
    cluster: Spanned<ClusterSpec>,
    /// Where Raft settings were before `[node]`: refused with what to write instead.
    raft: Option<Spanned<toml::Table>>,
    node: Option<Spanned<NodeTable>>,
    workload: Option<Spanned<WorkloadSpec>>,
    data: Option<Spanned<DataSpec>>,
    group: Option<Spanned<GroupSpec>>,
    #[serde(default)]
    fault: Vec<Spanned<FaultSpec>>,
    /// `faults = "swarm"`: each seed draws its own schedule (`swarm`).
    faults: Option<Spanned<String>>,
    swarm: Option<Spanned<SwarmTable>>,
    /// BUGGIFY fault points in the broker code (`keel_io::buggify`) on.
    #[serde(default)]
    buggify: bool,
    schedule_draws: Option<Spanned<ScheduleDraws>>,
}

/// `[schedule_draws]`: in a schedule written out from a seeded run
/// (`keel-sim shrink`), the draws that run made to lay out its faults.
/// They are made again and their numbers left unused, so the seed's later
/// draws (the world's, the workloads') are the ones the original run had,
/// whichever events the file keeps.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScheduleDraws {
    /// The run was a swarm run: its schedule's stream was forked first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub swarm: bool,
    /// The jitter ranges it drew firing times from, in draw order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jitter_ms: Vec<u64>,
}

impl ScheduleDraws {
    pub fn is_empty(&self) -> bool {
        !self.swarm && self.jitter_ms.is_empty()
    }
}

/// `[swarm]` as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SwarmTable {
    events: Option<[u64; 2]>,
    kinds: Option<Vec<FaultKind>>,
    start_ms: Option<u64>,
}

/// A validated swarm: which fault kinds a seed may turn on, how many
/// events it draws, and from when.
#[derive(Clone, Debug, PartialEq)]
pub struct SwarmSpec {
    pub kinds: Vec<FaultKind>,
    pub events: [u64; 2],
    pub start_ms: u64,
}

/// `[node]` as written: each value with its place in the file, so a
/// refused setting names its line.
type NodeTable = BTreeMap<String, Spanned<toml::Value>>;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub brokers: u64,
    pub racks: Option<Vec<String>>,
    pub start_ms: Option<Vec<u64>>,
    #[serde(default)]
    pub start_jitter_ms: u64,
    /// Every disk operation takes `[min, max]` microseconds (seeded), so an
    /// fsync has a duration a crash can land in.
    pub disk_latency_us: Option<[u64; 2]>,
}

/// Which broker receives a client's create.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CreateTarget {
    Any,
    Followers,
    Leader,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    pub creates: u64,
    #[serde(default)]
    pub start_ms: u64,
    pub gap_ms: [u64; 2],
    pub to: CreateTarget,
    pub partitions: [u32; 2],
    pub replication_factor: [u32; 2],
    pub client_timeout_ms: u64,
    /// How many of the created topics their clients delete again (through
    /// the admin path Kafka's DeleteTopics takes).
    #[serde(default)]
    pub deletes: u64,
    /// How long after its create's answer a client deletes its topic.
    #[serde(default = "default_delete_after_ms")]
    pub delete_after_ms: [u64; 2],
}

fn default_delete_after_ms() -> [u64; 2] {
    [0, 2_000]
}

/// A producer's `acks`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AcksSpec {
    All,
    Leader,
}

/// How a `[data]` workload's clients reach the brokers.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// Straight to the replication driver's handles (no Kafka layer).
    #[default]
    Direct,
    /// Kafka clients on their own simulated host, speaking the Kafka wire
    /// protocol over simulated TCP to each broker's Kafka front.
    Kafka,
}

/// Partition data: one topic, its producers and consumers (format in
/// scenarios/README.md; the brokers' replication settings are `[node]` keys).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    #[serde(default = "DataSpec::default_partitions")]
    pub partitions: u32,
    #[serde(default = "DataSpec::default_replication_factor")]
    pub replication_factor: u32,
    #[serde(default = "DataSpec::default_min_insync_replicas")]
    pub min_insync_replicas: usize,
    /// Producer k uses `acks[k % len]`.
    pub acks: Vec<AcksSpec>,
    pub producers: u64,
    pub batches_per_producer: u64,
    pub records_per_batch: [u64; 2],
    /// Each record's value is this long (padded), so batches have real sizes.
    #[serde(default = "DataSpec::default_record_bytes")]
    pub record_bytes: usize,
    pub gap_ms: [u64; 2],
    #[serde(default)]
    pub consumers: u64,
    #[serde(default)]
    pub start_ms: u64,
    /// How long an acks=all produce waits for the ISR before REQUEST_TIMED_OUT.
    #[serde(default = "DataSpec::default_produce_timeout_ms")]
    pub produce_timeout_ms: u64,
    /// A producer retries one batch (with backoff, on the current leader) this long.
    pub client_timeout_ms: u64,
    /// How the clients reach the brokers.
    #[serde(default)]
    pub client: ClientKind,
    /// Kafka producers are idempotent: InitProducerId, then sequence
    /// numbers per partition (needs client = "kafka" and acks = ["all"]).
    #[serde(default)]
    pub idempotent: bool,
    /// Kafka clients: how long one request waits for its response
    /// (`request.timeout.ms`); then the connection is closed and the
    /// request retried. Default: produce_timeout_ms + 2000.
    pub request_timeout_ms: Option<u64>,
}

impl DataSpec {
    fn default_partitions() -> u32 {
        1
    }
    fn default_replication_factor() -> u32 {
        3
    }
    fn default_min_insync_replicas() -> usize {
        2
    }
    fn default_record_bytes() -> usize {
        100
    }
    fn default_produce_timeout_ms() -> u64 {
        3_000
    }

    /// How long a Kafka client waits for one response.
    pub fn request_timeout_ms(&self) -> u64 {
        self.request_timeout_ms.unwrap_or(self.produce_timeout_ms + 2_000)
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The broker's process dies (written but unsynced bytes survive, as in
    /// the page cache); `duration_ms` later it restarts.
    Kill,
    /// The broker loses power: the process dies and unsynced bytes are lost.
    Crash,
    /// The broker stops gracefully, as on SIGTERM: it stops accepting,
    /// drains its connections, flushes and exits; `duration_ms` later it
    /// restarts.
    Stop,
    /// A broker that is down starts again.
    Restart,
    /// The broker's process stops being scheduled (a GC pause, SIGSTOP).
    Pause,
    /// No traffic between `groups` (every pair of brokers in different groups).
    Partition,
    /// Traffic `from` -> `to` stops; the other direction still flows.
    OneWay,
    /// All of the broker's traffic, both ways, stops.
    Clog,
    /// Every message takes `min_ms..max_ms`.
    Latency,
    /// Each packet is lost with probability `rate` (TCP retransmits: delays).
    Loss,
    /// The broker's traffic is held back for `delay_ms` at a time: it
    /// receives everything, hundreds of milliseconds late.
    Lag,
    /// Every broker loses power at once; all restart after `duration_ms`.
    PowerLoss,
    /// The broker's clock runs `drift_ppm` fast (or slow) and its wall clock
    /// is `skew_ms` off.
    Clock,
    /// The broker's disk misbehaves: fsync fails with EIO, reads return
    /// flipped bits, a crash tears the last write (each a probability).
    Disk,
    /// Every network fault ends and paused brokers resume.
    Heal,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Crash => "crash",
            FaultKind::Stop => "stop",
            FaultKind::Restart => "restart",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::OneWay => "one_way",
            FaultKind::Clog => "clog",
            FaultKind::Latency => "latency",
            FaultKind::Loss => "loss",
            FaultKind::Lag => "lag",
            FaultKind::PowerLoss => "power_loss",
            FaultKind::Clock => "clock",
            FaultKind::Disk => "disk",
            FaultKind::Heal => "heal",
        }
    }
}

/// A broker named in a fault: by id, or by its role when the fault fires.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum NodeSelector {
    Id(u64),
    Role(String),
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FaultSpec {
    kind: FaultKind,
    at_ms: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    jitter_ms: u64,
    every_ms: Option<u64>,
    until_ms: Option<u64>,
    duration_ms: Option<u64>,
    node: Option<NodeSelector>,
    from: Option<NodeSelector>,
    to: Option<NodeSelector>,
    groups: Option<Vec<Vec<u64>>>,
    min_ms: Option<u64>,
    max_ms: Option<u64>,
    rate: Option<f64>,
    delay_ms: Option<u64>,
    drift_ppm: Option<i64>,
    skew_ms: Option<i64>,
    sync_eio_probability: Option<f64>,
    read_bit_flip_probability: Option<f64>,
    torn_write_probability: Option<f64>,
    write_enospc_probability: Option<f64>,
    latency_us: Option<[u64; 2]>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl FaultSpec {
    /// The table that parses back into `fault` (one firing, no repeat).
    fn of(fault: &Fault) -> FaultSpec {
        let mut spec = FaultSpec {
            kind: fault.kind,
            at_ms: fault.at_ms,
            jitter_ms: fault.jitter_ms,
            every_ms: None,
            until_ms: None,
            duration_ms: fault.duration_ms,
            node: None,
            from: None,
            to: None,
            groups: None,
            min_ms: None,
            max_ms: None,
            rate: None,
            delay_ms: None,
            drift_ppm: None,
            skew_ms: None,
            sync_eio_probability: None,
            read_bit_flip_probability: None,
            torn_write_probability: None,
            write_enospc_probability: None,
            latency_us: None,
        };
        match &fault.action {
            FaultAction::OnBroker(target) => spec.node = Some(target.selector()),
            FaultAction::Partition(groups) => spec.groups = Some(groups.clone()),
            FaultAction::OneWay { from, to } => (spec.from, spec.to) = (Some(from.selector()), Some(to.selector())),
            FaultAction::Latency { min_ms, max_ms } => (spec.min_ms, spec.max_ms) = (Some(*min_ms), Some(*max_ms)),
            FaultAction::Loss { rate } => spec.rate = Some(*rate),
            FaultAction::Lag { node, delay_ms } => (spec.node, spec.delay_ms) = (Some(node.selector()), Some(*delay_ms)),
            FaultAction::Clock { node, drift_ppm, skew_ms } => {
                (spec.node, spec.drift_ppm, spec.skew_ms) = (Some(node.selector()), Some(*drift_ppm), Some(*skew_ms));
            }
            FaultAction::Disk { node, sync_eio_probability, read_bit_flip_probability, torn_write_probability, write_enospc_probability, latency_us } => {
                spec.node = Some(node.selector());
                spec.sync_eio_probability = Some(*sync_eio_probability);
                spec.read_bit_flip_probability = Some(*read_bit_flip_probability);
                spec.torn_write_probability = Some(*torn_write_probability);
                spec.write_enospc_probability = Some(*write_enospc_probability);
                spec.latency_us = *latency_us;
            }
            FaultAction::Everyone => {}
        }
        spec
    }
}

/// Who a fault acts on, resolved when it fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Broker(u64),
    /// The metadata Raft leader.
    Leader,
    /// A metadata Raft follower.
    Follower,
    Random,
    /// The leader of the data topic's partition 0.
    PartitionLeader,
    /// A follower of the data topic's partition 0.
    PartitionFollower,
    /// The host the Kafka clients run on (`one_way` only, with `client = "kafka"`).
    Clients,
}

impl Target {
    /// How a file names this target.
    fn selector(&self) -> NodeSelector {
        let role = match self {
            Target::Broker(id) => return NodeSelector::Id(*id),
            Target::Leader => "leader",
            Target::Follower => "follower",
            Target::Random => "random",
            Target::PartitionLeader => "partition_leader",
            Target::PartitionFollower => "partition_follower",
            Target::Clients => "clients",
        };
        NodeSelector::Role(role.to_string())
    }
}

/// One validated fault; repeats are already expanded into separate faults.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub at_ms: u64,
    pub jitter_ms: u64,
    pub duration_ms: Option<u64>,
    pub action: FaultAction,
    /// The scenario file's line, for the trace.
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum FaultAction {
    OnBroker(Target),
    Partition(Vec<Vec<u64>>),
    OneWay {
        from: Target,
        to: Target,
    },
    Latency {
        min_ms: u64,
        max_ms: u64,
    },
    Loss {
        rate: f64,
    },
    Lag {
        node: Target,
        delay_ms: u64,
    },
    Clock {
        node: Target,
        drift_ppm: i64,
        skew_ms: i64,
    },
    Disk {
        node: Target,
        sync_eio_probability: f64,
        read_bit_flip_probability: f64,
        torn_write_probability: f64,
        write_enospc_probability: f64,
        /// A slow disk: every operation takes this long (`[min, max]` µs).
        latency_us: Option<[u64; 2]>,
    },
    Everyone,
}

/// `[group]` in a scenario file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    pub members: u64,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub commit_interval_ms: u64,
    /// A member lives this long (drawn) before it leaves or crashes; absent: members never churn.
    #[serde(default)]
    pub churn_every_ms: Option<[u64; 2]>,
    /// A member that left or crashed comes back after this long (drawn).
    #[serde(default = "GroupSpec::default_rejoin_after_ms")]
    pub rejoin_after_ms: [u64; 2],
    /// `group-stable-progress`: the longest the group may go without an
    /// acknowledged commit, from its first until the heal (the producers
    /// must keep producing until then). Absent: not checked.
    #[serde(default)]
    pub commit_gap_ms_max: Option<u64>,
}

impl GroupSpec {
    fn default_rejoin_after_ms() -> [u64; 2] {
        [200, 1000]
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.members == 0 {
            return Err("[group] members must be at least 1".into());
        }
        if self.heartbeat_interval_ms == 0 || self.heartbeat_interval_ms >= self.session_timeout_ms {
            return Err("[group] heartbeat_interval_ms must be positive and below session_timeout_ms".into());
        }
        if self.commit_interval_ms == 0 {
            return Err("[group] commit_interval_ms must be positive".into());
        }
        if let Some([low, high]) = self.churn_every_ms {
            if low == 0 || low > high {
                return Err("[group] churn_every_ms must be [low, high] with 0 < low <= high".into());
            }
        }
        if self.rejoin_after_ms[0] > self.rejoin_after_ms[1] {
            return Err("[group] rejoin_after_ms must be [low, high] with low <= high".into());
        }
        if self.commit_gap_ms_max.is_some_and(|gap_ms| gap_ms <= self.commit_interval_ms) {
            return Err("[group] commit_gap_ms_max must exceed commit_interval_ms".into());
        }
        Ok(())
    }
}

/// A validated scenario, ready to run under any seed.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub path: PathBuf,
    pub about: String,
    pub duration_ms: u64,
    pub convergence_ms_max: u64,
    pub cluster: ClusterSpec,
    /// Every broker's settings: keel's defaults (`NodeConfig::default()`)
    /// with the scenario's `[node]` table over them.
    pub node: NodeConfig,
    pub workload: Option<WorkloadSpec>,
    pub data: Option<DataSpec>,
    /// A consumer group over the data topic (needs `[data] client = "kafka"`).
    pub group: Option<GroupSpec>,
    /// In firing order (by `at_ms`, then file order). Empty in swarm mode,
    /// where each seed draws its own (`crate::swarm::draw`).
    pub faults: Vec<Fault>,
    pub swarm: Option<SwarmSpec>,
    /// BUGGIFY fault points on (`keel_io::buggify`): each site activated
    /// per seed with `BUGGIFY_ACTIVATION_PROBABILITY`, then firing with
    /// `BUGGIFY_FIRE_PROBABILITY` each time it is reached.
    pub buggify: bool,
    /// Empty unless the file is a written-out schedule (`ScheduleDraws`).
    pub schedule_draws: ScheduleDraws,
}

/// With `buggify = true`, the share of sites a seed turns on.
pub const BUGGIFY_ACTIVATION_PROBABILITY: f64 = 0.25;
/// How often a site a seed turned on fires when reached.
pub const BUGGIFY_FIRE_PROBABILITY: f64 = 0.1;

const BROKERS_MAX: u64 = 9;
/// A disk fault's slowest operation: one simulated second.
const DISK_LATENCY_US_MAX: u64 = 1_000_000;
const ROLES: &str = "\"leader\", \"follower\", \"random\", \"partition_leader\" or \"partition_follower\" (and \"clients\" in one_way)";
/// Repeating faults expand into at most this many firings each.
const REPEATS_MAX: u64 = 1_000;

/// Node settings that scenario files stated in other tables before every
/// node setting became a `[node]` key (as in `keel start --config`):
/// (old table, old key, `[node]` key). An old file gets told what to write.
const MOVED_TO_NODE: [(&str, &str, &str); 10] = [
    ("raft", "tick_ms", "raft_tick_ms"),
    ("raft", "heartbeat_ticks", "raft_heartbeat_ticks"),
    ("raft", "election_ticks", "raft_election_ticks"),
    ("raft", "proposal_timeout_ms", "proposal_timeout_ms"),
    ("raft", "registration_lease_ms", "registration_lease_ms"),
    ("raft", "compact_after_entries", "metadata_compact_after_entries"),
    ("data", "replica_lag_time_max_ms", "replica_lag_time_max_ms"),
    ("data", "produce_queue_len", "produce_queue_len"),
    ("data", "replica_fetch_bytes_max", "replica_fetch_max_bytes"),
    ("group", "initial_rebalance_delay_ms", "group_initial_rebalance_delay_ms"),
];

/// The `[node]` key an old `[table] key` moved to.
fn moved_to_node(table: &str, key: &str) -> Option<&'static str> {
    MOVED_TO_NODE.iter().find(|(old_table, old_key, _)| *old_table == table && *old_key == key).map(|(_, _, node_key)| *node_key)
}

struct Validator<'a> {
    path: &'a str,
    text: &'a str,
}

/// The 1-based line of byte `offset` of `text` (a TOML error's span).
pub(crate) fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// What every fault is checked against.
struct FaultContext {
    brokers: u64,
    duration_ms: u64,
    has_data: bool,
    has_kafka_clients: bool,
}

impl Validator<'_> {
    fn line_of(&self, offset: usize) -> usize {
        line_at(self.text, offset)
    }

    fn error(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> ScenarioError {
        ScenarioError::Invalid { path: self.path.to_string(), line: self.line_of(span.start), message: message.into() }
    }

    /// A file that is not TOML or not the scenario format; a node setting
    /// left in `[data]` or `[group]` is told which `[node]` key to write.
    fn format_error(&self, error: &toml::de::Error) -> ScenarioError {
        let line = error.span().map(|span| self.line_of(span.start)).unwrap_or(1);
        let message = error.message().trim_end();
        let unknown = message.strip_prefix("unknown field `").and_then(|rest| rest.split_once('`')).map(|(key, _)| key);
        let moved = unknown.and_then(|key| ["data", "group"].iter().find_map(|table| Some((*table, key, moved_to_node(table, key)?))));
        let message = match moved {
            Some((table, key, node_key)) => {
                format!("`{key}` in [{table}] is a node setting now: write `{node_key} = ...` in the [node] table instead (see scenarios/README.md)")
            }
            None => format!("{message}; expected the scenario format documented in scenarios/README.md"),
        };
        ScenarioError::Invalid { path: self.path.to_string(), line, message }
    }

    /// `[raft]` held only node settings; it is refused with the `[node]` lines to write instead.
    fn moved_raft(&self, raft: &Spanned<toml::Table>) -> ScenarioError {
        let lines: Vec<String> = raft
            .get_ref()
            .iter()
            .map(|(key, value)| match moved_to_node("raft", key) {
                Some(node_key) => format!("`{node_key} = {value}`"),
                None => format!("(`{key}` has no [node] equivalent)"),
            })
            .collect();
        let message = if lines.is_empty() {
            "[raft] is gone: Raft settings are [node] keys now (raft_tick_ms, raft_heartbeat_ticks, raft_election_ticks, ...); remove the empty table"
                .to_string()
        } else {
            format!("[raft] is gone: its settings are node settings now; write {} in the [node] table instead", lines.join(", "))
        };
        self.error(raft.span(), message)
    }

    fn cluster(&self, spanned: Spanned<ClusterSpec>) -> Result<ClusterSpec, ScenarioError> {
        let cluster_span = spanned.span();
        let cluster = spanned.into_inner();
        if !(1..=BROKERS_MAX).contains(&cluster.brokers) {
            return Err(self.error(cluster_span, format!("[cluster] brokers = {}: expected 1 to {BROKERS_MAX} brokers", cluster.brokers)));
        }
        let brokers = cluster.brokers;
        if let Some(racks) = &cluster.racks {
            if racks.len() as u64 != brokers {
                return Err(self.error(cluster_span, format!("[cluster] racks has {} entries: expected one rack per broker ({brokers})", racks.len())));
            }
        }
        if let Some(start_ms) = &cluster.start_ms {
            if start_ms.len() as u64 != brokers {
                return Err(
                    self.error(cluster_span, format!("[cluster] start_ms has {} entries: expected one start time per broker ({brokers})", start_ms.len()))
                );
            }
        }
        if let Some([latency_min, latency_max]) = cluster.disk_latency_us {
            if latency_min > latency_max || latency_max > 1_000_000 {
                return Err(self.error(cluster_span, "[cluster] disk_latency_us = [min, max]: expected min <= max <= 1000000"));
            }
        }
        Ok(cluster)
    }

    /// `[node]` over `NodeConfig::default()`, the defaults `keel start` has:
    /// a mistake is reported at the line of the key that causes it.
    fn node(&self, node: Option<Spanned<NodeTable>>) -> Result<NodeConfig, ScenarioError> {
        let Some(spanned) = node else {
            return Ok(NodeConfig::default());
        };
        let table_span = spanned.span();
        let entries = spanned.into_inner();
        let plain = |entries: &mut dyn Iterator<Item = (&String, &Spanned<toml::Value>)>| -> toml::Table {
            entries.map(|(key, value)| (key.clone(), value.get_ref().clone())).collect()
        };
        let config = NodeConfig::from_toml_table(plain(&mut entries.iter())).map_err(|message| {
            // The first key (in file order) that is refused on its own is the one to point at.
            let culprit = entries
                .iter()
                .filter(|entry| NodeConfig::from_toml_table(plain(&mut std::iter::once(*entry))).is_err())
                .map(|(_, value)| value.span())
                .min_by_key(|span| span.start);
            let message = format!("[node] {message}; expected the keys of keel's NodeConfig (`keel-sim config` prints them)");
            self.error(culprit.unwrap_or(table_span.clone()), message)
        })?;
        config.validate().map_err(|error| {
            let span = entries.get(error.key).map_or(table_span, |value| value.span());
            self.error(span, format!("[node] {error}"))
        })?;
        Ok(config)
    }

    fn workload(&self, spanned: Spanned<WorkloadSpec>, brokers: u64) -> Result<WorkloadSpec, ScenarioError> {
        let span = spanned.span();
        let workload = spanned.into_inner();
        let [gap_min, gap_max] = workload.gap_ms;
        let [partitions_min, partitions_max] = workload.partitions;
        let [rf_min, rf_max] = workload.replication_factor;
        if gap_min > gap_max || partitions_min > partitions_max || rf_min > rf_max {
            return Err(self.error(span, "[workload] gap_ms, partitions and replication_factor are [min, max] with min <= max"));
        }
        if partitions_min == 0 || partitions_max > keel_meta::controller::PARTITION_COUNT_MAX {
            return Err(self.error(span, format!("[workload] partitions: expected 1 to {} partitions", keel_meta::controller::PARTITION_COUNT_MAX)));
        }
        if rf_min == 0 || u64::from(rf_max) > brokers {
            return Err(self.error(span, format!("[workload] replication_factor: expected 1 to {brokers} (the number of brokers)")));
        }
        if workload.client_timeout_ms == 0 {
            return Err(self.error(span, "[workload] client_timeout_ms must be positive"));
        }
        if workload.deletes > workload.creates {
            return Err(self.error(span, format!("[workload] deletes: at most the {} created topics can be deleted", workload.creates)));
        }
        let [after_min, after_max] = workload.delete_after_ms;
        if after_min > after_max {
            return Err(self.error(span, "[workload] delete_after_ms is [min, max] with min <= max"));
        }
        Ok(workload)
    }

    fn data(&self, spanned: Spanned<DataSpec>, brokers: u64) -> Result<DataSpec, ScenarioError> {
        let span = spanned.span();
        let data = spanned.into_inner();
        let [records_min, records_max] = data.records_per_batch;
        let [gap_min, gap_max] = data.gap_ms;
        if records_min == 0 || records_min > records_max || gap_min > gap_max {
            return Err(self.error(span, "[data] records_per_batch and gap_ms are [min, max] with min <= max (and at least one record)"));
        }
        if data.partitions == 0 || data.partitions > 64 {
            return Err(self.error(span, format!("[data] partitions = {}: expected 1 to 64", data.partitions)));
        }
        if data.replication_factor == 0 || u64::from(data.replication_factor) > brokers {
            return Err(self.error(span, format!("[data] replication_factor = {}: expected 1 to {brokers} (the number of brokers)", data.replication_factor)));
        }
        if data.min_insync_replicas == 0 || data.min_insync_replicas > data.replication_factor as usize {
            return Err(self.error(span, format!("[data] min_insync_replicas = {}: expected 1 to replication_factor", data.min_insync_replicas)));
        }
        if data.acks.is_empty() || data.producers == 0 {
            return Err(self.error(span, "[data] needs at least one producer and one acks setting, e.g. acks = [\"all\"]"));
        }
        if data.record_bytes < 32 || data.client_timeout_ms == 0 || data.produce_timeout_ms == 0 {
            return Err(self.error(span, "[data] record_bytes >= 32; client_timeout_ms and produce_timeout_ms positive"));
        }
        if data.client != ClientKind::Kafka && (data.idempotent || data.request_timeout_ms.is_some()) {
            return Err(self.error(span, "[data] idempotent and request_timeout_ms are Kafka client settings: they need client = \"kafka\""));
        }
        if data.idempotent && data.acks.iter().any(|acks| *acks != AcksSpec::All) {
            return Err(self.error(span, "[data] idempotent = true needs acks = [\"all\"] (Kafka's idempotent producer requires acks=all)"));
        }
        if data.request_timeout_ms == Some(0) {
            return Err(self.error(span, "[data] request_timeout_ms must be positive"));
        }
        Ok(data)
    }

    fn group(&self, spanned: Spanned<GroupSpec>, has_kafka_clients: bool) -> Result<GroupSpec, ScenarioError> {
        let span = spanned.span();
        let group = spanned.into_inner();
        if !has_kafka_clients {
            return Err(self.error(span, "[group] consumes the data topic over Kafka: it needs [data] with client = \"kafka\""));
        }
        group.validate().map_err(|message| self.error(span, message))?;
        Ok(group)
    }

    /// `faults = "swarm"` and its `[swarm]` table, checked against the
    /// cluster; `None` for a scenario that lists its faults.
    fn swarm(
        &self,
        mode: Option<Spanned<String>>,
        table: Option<Spanned<SwarmTable>>,
        has_fault_tables: bool,
        context: &FaultContext,
    ) -> Result<Option<SwarmSpec>, ScenarioError> {
        let Some(mode) = mode else {
            return match table {
                Some(table) => Err(self.error(table.span(), "[swarm] applies with faults = \"swarm\" at the top of the file")),
                None => Ok(None),
            };
        };
        if mode.get_ref() != "swarm" {
            return Err(
                self.error(mode.span(), format!("faults = {:?}: the only value is \"swarm\" (or leave it out and list [[fault]] tables)", mode.get_ref()))
            );
        }
        if has_fault_tables {
            return Err(self.error(mode.span(), "faults = \"swarm\" draws every seed's faults: remove the [[fault]] tables, or this line"));
        }
        let span = table.as_ref().map_or(mode.span(), |table| table.span());
        let table = table.map(Spanned::into_inner).unwrap_or(SwarmTable { events: None, kinds: None, start_ms: None });
        let splits = |kind: &FaultKind| matches!(kind, FaultKind::Partition | FaultKind::OneWay);
        let kinds = match table.kinds {
            Some(kinds) => kinds,
            None => crate::swarm::SWARM_KINDS.iter().copied().filter(|kind| context.brokers >= 2 || !splits(kind)).collect(),
        };
        if kinds.is_empty() {
            return Err(self.error(span, "[swarm] kinds is empty: name at least one fault kind"));
        }
        if let Some(kind) = kinds.iter().find(|kind| matches!(kind, FaultKind::Restart | FaultKind::Heal)) {
            return Err(self
                .error(span, format!("[swarm] kinds: {} is not drawn (a heal follows every schedule, and downed brokers restart on their own)", kind.name())));
        }
        if context.brokers < 2 && kinds.iter().any(splits) {
            return Err(self.error(span, "[swarm] kinds: partition and one_way need at least 2 brokers"));
        }
        let events = table.events.unwrap_or([4, 16]);
        if events[0] == 0 || events[0] > events[1] || events[1] > 200 {
            return Err(self.error(span, format!("[swarm] events = {events:?}: expected [min, max] with 1 <= min <= max <= 200")));
        }
        let start_ms = table.start_ms.unwrap_or(0);
        if start_ms >= context.duration_ms {
            return Err(self.error(span, format!("[swarm] start_ms = {start_ms}: faults must start before duration_ms ({})", context.duration_ms)));
        }
        Ok(Some(SwarmSpec { kinds, events, start_ms }))
    }

    /// `[schedule_draws]`: only for listed faults (a swarm run makes its own
    /// draws), and only draws a run makes (a zero jitter draws nothing).
    fn schedule_draws(&self, table: Option<Spanned<ScheduleDraws>>, swarm: bool) -> Result<ScheduleDraws, ScenarioError> {
        let Some(table) = table else {
            return Ok(ScheduleDraws::default());
        };
        if swarm {
            return Err(self.error(table.span(), "[schedule_draws] belongs to a written-out schedule: it does not apply with faults = \"swarm\""));
        }
        if table.get_ref().jitter_ms.contains(&0) {
            return Err(self.error(table.span(), "[schedule_draws] jitter_ms: expected positive ranges (a zero jitter draws nothing)"));
        }
        Ok(table.into_inner())
    }

    /// One `[[fault]]` table, expanded into its firings.
    fn fault(&self, number: usize, spanned: Spanned<FaultSpec>, context: &FaultContext) -> Result<Vec<Fault>, ScenarioError> {
        let span = spanned.span();
        let spec = spanned.into_inner();
        let line = self.line_of(span.start);
        let what = format!("[[fault]] #{} ({})", number + 1, spec.kind.name());
        let check = FaultCheck { v: self, span, what, spec: &spec, context };
        check.fields_apply()?;
        let action = check.action()?;
        let firings = check.firings()?;
        Ok(firings
            .into_iter()
            .map(|at_ms| Fault { kind: spec.kind, at_ms, jitter_ms: spec.jitter_ms, duration_ms: spec.duration_ms, action: action.clone(), line })
            .collect())
    }
}

/// The checks of one `[[fault]]`; errors name the fault and its line.
struct FaultCheck<'a> {
    v: &'a Validator<'a>,
    span: std::ops::Range<usize>,
    what: String,
    spec: &'a FaultSpec,
    context: &'a FaultContext,
}

impl FaultCheck<'_> {
    fn err(&self, message: String) -> ScenarioError {
        self.v.error(self.span.clone(), format!("{}: {message}", self.what))
    }

    fn target(&self, field: &str, selector: &Option<NodeSelector>) -> Result<Target, ScenarioError> {
        let FaultContext { brokers, has_data, has_kafka_clients, .. } = *self.context;
        match selector {
            None => Err(self.err(format!("`{field}` is required: a broker id 1..={brokers}, {ROLES}"))),
            Some(NodeSelector::Id(id)) if (1..=brokers).contains(id) => Ok(Target::Broker(*id)),
            Some(NodeSelector::Id(id)) => Err(self.err(format!("`{field}` = {id}: expected a broker id 1..={brokers}"))),
            Some(NodeSelector::Role(role)) => match role.as_str() {
                "leader" => Ok(Target::Leader),
                "follower" => Ok(Target::Follower),
                "random" => Ok(Target::Random),
                "partition_leader" if has_data => Ok(Target::PartitionLeader),
                "partition_follower" if has_data => Ok(Target::PartitionFollower),
                "partition_leader" | "partition_follower" => Err(self.err(format!("`{field}` = \"{role}\" needs a [data] section"))),
                "clients" if has_kafka_clients && self.spec.kind == FaultKind::OneWay => Ok(Target::Clients),
                "clients" => Err(self.err(format!("`{field}` = \"clients\" applies to one_way faults with [data] client = \"kafka\" only"))),
                other => Err(self.err(format!("`{field}` = \"{other}\": expected a broker id, {ROLES}"))),
            },
        }
    }

    /// Fields that mean nothing for this kind are mistakes, not decoration.
    fn fields_apply(&self) -> Result<(), ScenarioError> {
        let spec = self.spec;
        let used: BTreeSet<&str> = match spec.kind {
            FaultKind::Kill | FaultKind::Crash | FaultKind::Stop | FaultKind::Pause | FaultKind::Clog | FaultKind::Restart => ["node"].into(),
            FaultKind::Partition => ["groups"].into(),
            FaultKind::OneWay => ["from", "to"].into(),
            FaultKind::Latency => ["min_ms", "max_ms"].into(),
            FaultKind::Loss => ["rate"].into(),
            FaultKind::Lag => ["node", "delay_ms"].into(),
            FaultKind::Clock => ["node", "drift_ppm", "skew_ms"].into(),
            FaultKind::Disk => {
                ["node", "sync_eio_probability", "read_bit_flip_probability", "torn_write_probability", "write_enospc_probability", "latency_us"].into()
            }
            FaultKind::PowerLoss | FaultKind::Heal => BTreeSet::new(),
        };
        let present = [
            ("node", spec.node.is_some()),
            ("from", spec.from.is_some()),
            ("to", spec.to.is_some()),
            ("groups", spec.groups.is_some()),
            ("min_ms", spec.min_ms.is_some()),
            ("max_ms", spec.max_ms.is_some()),
            ("rate", spec.rate.is_some()),
            ("delay_ms", spec.delay_ms.is_some()),
            ("drift_ppm", spec.drift_ppm.is_some()),
            ("skew_ms", spec.skew_ms.is_some()),
            ("sync_eio_probability", spec.sync_eio_probability.is_some()),
            ("read_bit_flip_probability", spec.read_bit_flip_probability.is_some()),
            ("torn_write_probability", spec.torn_write_probability.is_some()),
            ("write_enospc_probability", spec.write_enospc_probability.is_some()),
            ("latency_us", spec.latency_us.is_some()),
        ];
        if let Some((field, _)) = present.iter().find(|(field, is_set)| *is_set && !used.contains(field)) {
            let expected = if used.is_empty() { "no target fields".to_string() } else { used.iter().copied().collect::<Vec<_>>().join(", ") };
            return Err(self.err(format!("`{field}` does not apply to this kind (it takes {expected})")));
        }
        Ok(())
    }

    fn action(&self) -> Result<FaultAction, ScenarioError> {
        let spec = self.spec;
        Ok(match spec.kind {
            FaultKind::Kill | FaultKind::Crash | FaultKind::Stop | FaultKind::Pause | FaultKind::Clog | FaultKind::Restart => {
                FaultAction::OnBroker(self.target("node", &spec.node)?)
            }
            FaultKind::Partition => self.partition()?,
            FaultKind::OneWay => {
                let (from, to) = (self.target("from", &spec.from)?, self.target("to", &spec.to)?);
                if from == to && !matches!(from, Target::Random) {
                    return Err(self.err("`from` and `to` name the same broker".into()));
                }
                FaultAction::OneWay { from, to }
            }
            FaultKind::Latency => {
                let (Some(min_ms), Some(max_ms)) = (spec.min_ms, spec.max_ms) else {
                    return Err(self.err("`min_ms` and `max_ms` are required".into()));
                };
                if min_ms > max_ms || max_ms > 60_000 {
                    return Err(self.err(format!("min_ms = {min_ms}, max_ms = {max_ms}: expected min_ms <= max_ms <= 60000")));
                }
                FaultAction::Latency { min_ms, max_ms }
            }
            FaultKind::Loss => {
                let rate = spec.rate.ok_or_else(|| self.err("`rate` is required: a probability in [0, 1)".into()))?;
                if !(0.0..1.0).contains(&rate) {
                    return Err(self.err(format!("rate = {rate}: expected a probability in [0, 1)")));
                }
                FaultAction::Loss { rate }
            }
            FaultKind::Lag => {
                let delay_ms = spec.delay_ms.ok_or_else(|| self.err("`delay_ms` is required".into()))?;
                if delay_ms == 0 || delay_ms > 60_000 {
                    return Err(self.err(format!("delay_ms = {delay_ms}: expected 1 to 60000")));
                }
                FaultAction::Lag { node: self.target("node", &spec.node)?, delay_ms }
            }
            FaultKind::Clock => {
                let drift_ppm = spec.drift_ppm.unwrap_or(0);
                if drift_ppm <= -500_000 || drift_ppm >= 500_000 {
                    return Err(self.err(format!("drift_ppm = {drift_ppm}: expected -499999 to 499999 (at most 50% fast or slow)")));
                }
                FaultAction::Clock { node: self.target("node", &spec.node)?, drift_ppm, skew_ms: spec.skew_ms.unwrap_or(0) }
            }
            FaultKind::Disk => self.disk()?,
            FaultKind::PowerLoss | FaultKind::Heal => FaultAction::Everyone,
        })
    }

    fn partition(&self) -> Result<FaultAction, ScenarioError> {
        let brokers = self.context.brokers;
        let groups = self.spec.groups.clone().ok_or_else(|| self.err("`groups` is required, e.g. groups = [[1], [2, 3]]".into()))?;
        let mut seen = BTreeSet::new();
        for id in groups.iter().flatten() {
            if !(1..=brokers).contains(id) {
                return Err(self.err(format!("`groups` names broker {id}: expected ids 1..={brokers}")));
            }
            if !seen.insert(*id) {
                return Err(self.err(format!("`groups` names broker {id} twice: each broker is in at most one group")));
            }
        }
        if groups.iter().filter(|g| !g.is_empty()).count() < 2 {
            return Err(self.err("`groups` needs at least two non-empty groups to cut apart".into()));
        }
        Ok(FaultAction::Partition(groups))
    }

    fn disk(&self) -> Result<FaultAction, ScenarioError> {
        let spec = self.spec;
        let probability = |field: &str, value: Option<f64>| -> Result<f64, ScenarioError> {
            let value = value.unwrap_or(0.0);
            if (0.0..=1.0).contains(&value) {
                Ok(value)
            } else {
                Err(self.err(format!("{field} = {value}: expected a probability in [0, 1]")))
            }
        };
        Ok(FaultAction::Disk {
            node: self.target("node", &spec.node)?,
            sync_eio_probability: probability("sync_eio_probability", spec.sync_eio_probability)?,
            read_bit_flip_probability: probability("read_bit_flip_probability", spec.read_bit_flip_probability)?,
            torn_write_probability: probability("torn_write_probability", spec.torn_write_probability)?,
            write_enospc_probability: probability("write_enospc_probability", spec.write_enospc_probability)?,
            latency_us: match spec.latency_us {
                Some([min, max]) if min > max || max > DISK_LATENCY_US_MAX => {
                    return Err(
                        self.err(format!("latency_us = [{min}, {max}]: expected [min, max] with min <= max <= {DISK_LATENCY_US_MAX} (µs per disk operation)"))
                    )
                }
                other => other,
            },
        })
    }

    /// When the fault fires: its duration must fit the kind, every firing
    /// (with jitter) comes before the heal, repeats are bounded.
    fn firings(&self) -> Result<Vec<u64>, ScenarioError> {
        let (spec, duration_ms) = (self.spec, self.context.duration_ms);
        if matches!(spec.kind, FaultKind::Restart | FaultKind::Heal | FaultKind::Clock) && spec.duration_ms.is_some() {
            return Err(self.err("`duration_ms` does not apply: this fault is not undone".into()));
        }
        if matches!(spec.kind, FaultKind::Kill | FaultKind::Crash | FaultKind::Stop | FaultKind::Pause | FaultKind::PowerLoss) && spec.duration_ms == Some(0) {
            return Err(self.err("duration_ms = 0: leave it out to keep the broker down until the heal".into()));
        }
        let last_ms = spec.until_ms.unwrap_or(spec.at_ms);
        if spec.at_ms + spec.jitter_ms >= duration_ms || last_ms + spec.jitter_ms >= duration_ms {
            return Err(self.err(format!(
                "fires at {}..{} ms (with jitter): expected before duration_ms = {duration_ms}, when every fault heals",
                spec.at_ms,
                last_ms + spec.jitter_ms
            )));
        }
        match (spec.every_ms, spec.until_ms) {
            (None, None) => Ok(vec![spec.at_ms]),
            (Some(every_ms), Some(until_ms)) if every_ms > 0 && until_ms >= spec.at_ms => {
                let count = (until_ms - spec.at_ms) / every_ms + 1;
                if count > REPEATS_MAX {
                    return Err(self.err(format!("repeats {count} times: expected at most {REPEATS_MAX}")));
                }
                Ok((0..count).map(|k| spec.at_ms + k * every_ms).collect())
            }
            _ => Err(self.err("a repeating fault needs every_ms > 0 and until_ms >= at_ms, together".into())),
        }
    }
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let shown = path.display().to_string();
        let text = std::str::from_utf8(&read_file(path).map_err(|error| ScenarioError::Read { path: shown.clone(), error })?)
            .map_err(|_| ScenarioError::Invalid { path: shown.clone(), line: 1, message: "not UTF-8 text; a scenario is a TOML file".into() })?
            .to_string();
        Scenario::parse(path, &text)
    }

    /// Validates scenario text; `path` only names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
        let shown = path.display().to_string();
        let v = Validator { path: &shown, text };
        let file: ScenarioFile = toml::from_str(text).map_err(|error| v.format_error(&error))?;
        let cluster = v.cluster(file.cluster)?;
        let brokers = cluster.brokers;
        if let Some(raft) = &file.raft {
            return Err(v.moved_raft(raft));
        }
        let node = v.node(file.node)?;
        let duration_ms = *file.duration_ms.get_ref();
        if duration_ms == 0 {
            return Err(v.error(file.duration_ms.span(), "duration_ms = 0: expected how long faults run, in simulated ms"));
        }
        let convergence_ms_max = *file.convergence_ms_max.get_ref();
        if convergence_ms_max == 0 {
            return Err(v.error(file.convergence_ms_max.span(), "convergence_ms_max = 0: expected a positive bound in ms"));
        }
        let workload = file.workload.map(|spanned| v.workload(spanned, brokers)).transpose()?;
        let data = file.data.map(|spanned| v.data(spanned, brokers)).transpose()?;
        let has_kafka_clients = data.as_ref().is_some_and(|data| data.client == ClientKind::Kafka);
        let group = file.group.map(|spanned| v.group(spanned, has_kafka_clients)).transpose()?;
        let context = FaultContext { brokers, duration_ms, has_data: data.is_some(), has_kafka_clients };
        let mut faults = Vec::new();
        for (number, spanned) in file.fault.into_iter().enumerate() {
            faults.extend(v.fault(number, spanned, &context)?);
        }
        faults.sort_by_key(|fault| fault.at_ms);
        let swarm = v.swarm(file.faults, file.swarm, !faults.is_empty(), &context)?;
        let schedule_draws = v.schedule_draws(file.schedule_draws, swarm.is_some())?;
        Ok(Scenario {
            path: path.to_path_buf(),
            about: file.about.unwrap_or_default(),
            duration_ms,
            convergence_ms_max,
            cluster,
            node,
            workload,
            data,
            group,
            faults,
            swarm,
            buggify: file.buggify,
            schedule_draws,
        })
    }
}

impl Scenario {
    /// The scenario as a file that `Scenario::parse` reads back into the
    /// same plan: `[node]` as the keys that differ from keel's defaults,
    /// each fault firing as a `[[fault]]` table of its own (repeats
    /// expanded), in firing order.
    pub fn to_toml(&self) -> String {
        let mut top = toml::Table::new();
        if !self.about.is_empty() {
            top.insert("about".into(), self.about.clone().into());
        }
        top.insert("duration_ms".into(), toml_value(&self.duration_ms));
        top.insert("convergence_ms_max".into(), toml_value(&self.convergence_ms_max));
        if self.swarm.is_some() {
            top.insert("faults".into(), "swarm".into());
        }
        if self.buggify {
            top.insert("buggify".into(), true.into());
        }
        let mut out = toml_text(&top);
        section(&mut out, "[cluster]", &self.cluster);
        let defaults = toml_value(&NodeConfig::default());
        if let (toml::Value::Table(node), toml::Value::Table(defaults)) = (toml_value(&self.node), defaults) {
            let changed: toml::Table = node.into_iter().filter(|(key, value)| defaults.get(key) != Some(value)).collect();
            if !changed.is_empty() {
                section(&mut out, "[node]", &changed);
            }
        }
        if let Some(swarm) = &self.swarm {
            section(&mut out, "[swarm]", &SwarmTable { events: Some(swarm.events), kinds: Some(swarm.kinds.clone()), start_ms: Some(swarm.start_ms) });
        }
        if let Some(workload) = &self.workload {
            section(&mut out, "[workload]", workload);
        }
        if let Some(data) = &self.data {
            section(&mut out, "[data]", data);
        }
        if let Some(group) = &self.group {
            section(&mut out, "[group]", group);
        }
        if !self.schedule_draws.is_empty() {
            section(&mut out, "[schedule_draws]", &self.schedule_draws);
        }
        for fault in &self.faults {
            section(&mut out, "[[fault]]", &FaultSpec::of(fault));
        }
        out
    }
}

fn toml_value<T: Serialize>(value: &T) -> toml::Value {
    toml::Value::try_from(value).expect("scenario values serialize as TOML")
}

fn toml_text<T: Serialize>(value: &T) -> String {
    toml::to_string(value).expect("scenario tables serialize as TOML")
}

/// `header` and the table's `key = value` lines, after a blank line.
fn section<T: Serialize>(out: &mut String, header: &str, table: &T) {
    out.push('\n');
    out.push_str(header);
    out.push('\n');
    out.push_str(&toml_text(table));
}

/// The simulator reads scenario files from the host (not a node's Disk).
fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    std::fs::read(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "duration_ms = 1000\nconvergence_ms_max = 5000\n[cluster]\nbrokers = 3\n";

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(Path::new("s.toml"), text)
    }

    fn error_of(text: &str) -> (usize, String) {
        match parse(text) {
            Err(ScenarioError::Invalid { line, message, .. }) => (line, message),
            other => panic!("expected an invalid-scenario error, got {other:?}"),
        }
    }

    #[test]
    fn a_disk_fault_takes_enospc_and_a_slow_disk_and_refuses_impossible_ones_by_line_and_field() {
        let disk = |fields: &str| format!("{MINIMAL}[[fault]]\nkind = \"disk\"\nnode = 2\nat_ms = 100\n{fields}\n");
        let scenario = parse(&disk("write_enospc_probability = 0.01\nlatency_us = [100, 5000]")).expect("valid");
        match &scenario.faults[0].action {
            FaultAction::Disk { write_enospc_probability, latency_us, sync_eio_probability, .. } => {
                assert_eq!(*write_enospc_probability, 0.01);
                assert_eq!(*latency_us, Some([100, 5000]));
                assert_eq!(*sync_eio_probability, 0.0);
            }
            other => panic!("expected a disk fault, got {other:?}"),
        }
        let (line, message) = error_of(&disk("latency_us = [5000, 100]"));
        assert_eq!(line, 5, "the fault's table: {message}");
        assert!(message.contains("latency_us"), "{message}");
        let (_, message) = error_of(&disk("write_enospc_probability = 1.5"));
        assert!(message.contains("write_enospc_probability = 1.5"), "{message}");
        let (_, message) = error_of(&format!("{MINIMAL}[[fault]]\nkind = \"kill\"\nnode = 2\nat_ms = 100\nlatency_us = [1, 2]\n"));
        assert!(message.contains("`latency_us` does not apply"), "{message}");
    }

    #[test]
    fn a_minimal_scenario_gets_keels_node_defaults_and_no_faults() {
        let scenario = parse(MINIMAL).expect("valid");
        assert_eq!(scenario.cluster.brokers, 3);
        assert_eq!(scenario.node, NodeConfig::default());
        assert!(scenario.faults.is_empty());
        assert!(scenario.workload.is_none());
    }

    #[test]
    fn repeating_faults_expand_and_sort_by_time() {
        let text = format!(
            "{MINIMAL}[[fault]]\nkind = \"pause\"\nnode = 2\nat_ms = 500\nduration_ms = 10\n\n[[fault]]\nkind = \"kill\"\nnode = \"leader\"\nat_ms = 100\nevery_ms = 200\nuntil_ms = 500\nduration_ms = 50\n"
        );
        let scenario = parse(&text).expect("valid");
        let times: Vec<(u64, FaultKind)> = scenario.faults.iter().map(|f| (f.at_ms, f.kind)).collect();
        assert_eq!(times, vec![(100, FaultKind::Kill), (300, FaultKind::Kill), (500, FaultKind::Pause), (500, FaultKind::Kill)]);
        assert_eq!(scenario.faults[0].action, FaultAction::OnBroker(Target::Leader));
        assert_eq!(scenario.faults[0].line, 11);
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let (line, message) = error_of("duration_ms = 1000\nconvergence_ms_max = \n[cluster]\nbrokers = 3\n");
        assert_eq!(line, 2, "{message}");
    }

    #[test]
    fn an_unknown_field_names_its_line_and_the_field() {
        let (line, message) = error_of(&format!("{MINIMAL}brokerz = 4\n"));
        assert_eq!(line, 5, "{message}");
        assert!(message.contains("brokerz"), "{message}");
    }

    #[test]
    fn a_missing_section_is_named() {
        let (_, message) = error_of("duration_ms = 1000\nconvergence_ms_max = 5000\n");
        assert!(message.contains("cluster"), "{message}");
    }

    #[test]
    fn a_fault_on_a_broker_that_does_not_exist_names_the_fault_line() {
        let (line, message) = error_of(&format!("{MINIMAL}\n[[fault]]\nkind = \"kill\"\nnode = 7\nat_ms = 10\n"));
        assert_eq!(line, 6, "{message}");
        assert!(message.contains("expected a broker id 1..=3"), "{message}");
    }

    #[test]
    fn an_unknown_fault_kind_is_refused_with_the_kinds_expected() {
        let (line, message) = error_of(&format!("{MINIMAL}[[fault]]\nkind = \"meteor\"\nat_ms = 10\n"));
        assert_eq!(line, 6, "{message}");
        assert!(message.contains("kill"), "{message}");
    }

    #[test]
    fn fields_that_do_not_apply_to_a_fault_kind_are_refused() {
        let (_, message) = error_of(&format!("{MINIMAL}[[fault]]\nkind = \"kill\"\nnode = 1\nrate = 0.5\nat_ms = 10\n"));
        assert!(message.contains("`rate` does not apply"), "{message}");
    }

    #[test]
    fn faults_after_the_heal_and_bad_partitions_are_refused() {
        let (_, message) = error_of(&format!("{MINIMAL}[[fault]]\nkind = \"clog\"\nnode = 1\nat_ms = 1000\n"));
        assert!(message.contains("before duration_ms"), "{message}");
        let (_, message) = error_of(&format!("{MINIMAL}[[fault]]\nkind = \"partition\"\ngroups = [[1, 2], [2, 3]]\nat_ms = 10\n"));
        assert!(message.contains("twice"), "{message}");
        let (_, message) = error_of(&format!("{MINIMAL}[[fault]]\nkind = \"partition\"\ngroups = [[1, 2, 3]]\nat_ms = 10\n"));
        assert!(message.contains("two non-empty groups"), "{message}");
    }

    const DATA: &str =
        "[data]\nacks = [\"all\"]\nproducers = 1\nbatches_per_producer = 1\nrecords_per_batch = [1, 1]\ngap_ms = [1, 1]\nclient_timeout_ms = 100\n";

    #[test]
    fn kafka_clients_and_idempotence_are_data_settings() {
        let scenario = parse(&format!("{MINIMAL}{DATA}client = \"kafka\"\nidempotent = true\n")).expect("valid");
        let data = scenario.data.expect("data");
        assert_eq!(data.client, ClientKind::Kafka);
        assert!(data.idempotent);
        assert_eq!(data.request_timeout_ms(), data.produce_timeout_ms + 2_000);
        assert_eq!(parse(&format!("{MINIMAL}{DATA}")).expect("valid").data.expect("data").client, ClientKind::Direct);
        let (_, message) = error_of(&format!("{MINIMAL}{DATA}idempotent = true\n"));
        assert!(message.contains("client = \"kafka\""), "{message}");
        let leader_acks = format!("{MINIMAL}{}client = \"kafka\"\nidempotent = true\n", DATA.replace("[\"all\"]", "[\"all\", \"leader\"]"));
        let (_, message) = error_of(&leader_acks);
        assert!(message.contains("acks"), "{message}");
    }

    #[test]
    fn the_clients_host_is_a_one_way_endpoint_of_kafka_scenarios_only() {
        let one_way = "[[fault]]\nkind = \"one_way\"\nfrom = \"partition_leader\"\nto = \"clients\"\nat_ms = 10\n";
        let scenario = parse(&format!("{MINIMAL}{DATA}client = \"kafka\"\n{one_way}")).expect("valid");
        assert_eq!(scenario.faults[0].action, FaultAction::OneWay { from: Target::PartitionLeader, to: Target::Clients });
        let (_, message) = error_of(&format!("{MINIMAL}{DATA}{one_way}"));
        assert!(message.contains("clients"), "{message}");
        let clog = "[[fault]]\nkind = \"clog\"\nnode = \"clients\"\nat_ms = 10\n";
        let (_, message) = error_of(&format!("{MINIMAL}{DATA}client = \"kafka\"\n{clog}"));
        assert!(message.contains("one_way"), "{message}");
    }

    #[test]
    fn swarm_mode_is_checked_and_draws_a_schedule_per_seed() {
        let swarm_top = "duration_ms = 10000\nconvergence_ms_max = 5000\nfaults = \"swarm\"\n[cluster]\nbrokers = 3\n";
        let scenario = parse(swarm_top).expect("valid");
        let spec = scenario.swarm.clone().expect("swarm");
        assert!(scenario.faults.is_empty());
        assert_eq!(spec.kinds.len(), crate::swarm::SWARM_KINDS.len());
        let draw = |seed| crate::swarm::draw(&scenario, &spec, &mut keel_io::NodeRng::new(seed, 0, 12));
        let (first, again, other) = (draw(1), draw(1), draw(2));
        assert_eq!(first, again, "one seed, one schedule");
        assert_ne!(first, other, "seeds 1 and 2 drew the same schedule");
        assert!(first.iter().all(|fault| fault.at_ms < scenario.duration_ms && !matches!(fault.kind, FaultKind::Heal | FaultKind::Restart)));
        let (_, message) = error_of("duration_ms = 1000\nconvergence_ms_max = 5000\nfaults = \"random\"\n[cluster]\nbrokers = 3\n");
        assert!(message.contains("the only value is \"swarm\""), "{message}");
        let (_, message) = error_of(&format!("{swarm_top}[[fault]]\nkind = \"heal\"\nat_ms = 10\n"));
        assert!(message.contains("remove the [[fault]] tables"), "{message}");
        let (_, message) = error_of(&format!("{MINIMAL}[swarm]\nevents = [1, 2]\n"));
        assert!(message.contains("faults = \"swarm\""), "{message}");
        let (_, message) = error_of(&format!("{swarm_top}[swarm]\nevents = [5, 2]\n"));
        assert!(message.contains("events"), "{message}");
        let (_, message) = error_of(&format!("{swarm_top}[swarm]\nkinds = [\"heal\"]\n"));
        assert!(message.contains("heal is not drawn"), "{message}");
        let one_broker = "duration_ms = 10000\nconvergence_ms_max = 5000\nfaults = \"swarm\"\n[cluster]\nbrokers = 1\n";
        let (_, message) = error_of(&format!("{one_broker}[swarm]\nkinds = [\"partition\"]\n"));
        assert!(message.contains("at least 2 brokers"), "{message}");
    }

    #[test]
    fn cluster_and_workload_bounds_are_checked() {
        let (_, message) = error_of("duration_ms = 1000\nconvergence_ms_max = 5000\n[cluster]\nbrokers = 3\nracks = [\"a\"]\n");
        assert!(message.contains("one rack per broker"), "{message}");
        let text = format!(
            "{MINIMAL}[workload]\ncreates = 1\ngap_ms = [1, 2]\nto = \"any\"\npartitions = [1, 2]\nreplication_factor = [1, 4]\nclient_timeout_ms = 10\n"
        );
        let (_, message) = error_of(&text);
        assert!(message.contains("replication_factor"), "{message}");
        let text = format!(
            "{MINIMAL}[workload]\ncreates = 1\ngap_ms = [1, 2]\nto = \"any\"\npartitions = [1, 2]\nreplication_factor = [1, 3]\nclient_timeout_ms = 10\ndeletes = 2\n"
        );
        let (_, message) = error_of(&text);
        assert!(message.contains("deletes: at most the 1 created"), "{message}");
    }

    #[test]
    fn the_node_table_sets_keels_node_config_over_its_defaults() {
        let scenario = parse(&format!("{MINIMAL}[node]\nregistration_lease_ms = 2000\nauto_create_topics = false\n")).expect("valid");
        let expected = NodeConfig { registration_lease_ms: 2_000, auto_create_topics: false, ..NodeConfig::default() };
        assert_eq!(scenario.node, expected);
    }

    #[test]
    fn a_refused_node_setting_names_its_line_and_key() {
        let (line, message) = error_of(&format!("{MINIMAL}[node]\nproposal_timeout_ms = 3000\nretention_hours = 5\n"));
        assert_eq!(line, 7, "{message}");
        assert!(message.contains("retention_hours"), "{message}");
        let (line, message) = error_of(&format!("{MINIMAL}[node]\nproposal_timeout_ms = \"soon\"\n"));
        assert_eq!(line, 6, "{message}");
        assert!(message.contains("[node]"), "{message}");
        let (line, message) = error_of(&format!("{MINIMAL}[node]\nauto_create_topics = true\nproduce_queue_len = 0\n"));
        assert_eq!(line, 7, "{message}");
        assert!(message.contains("produce_queue_len = 0: must be at least 1"), "{message}");
    }

    #[test]
    fn node_settings_in_their_old_tables_are_refused_with_the_node_key_to_write() {
        let (line, message) = error_of(&format!("{MINIMAL}[raft]\ntick_ms = 20\ncompact_after_entries = 8\n"));
        assert_eq!(line, 5, "{message}");
        assert!(message.contains("`raft_tick_ms = 20`"), "{message}");
        assert!(message.contains("`metadata_compact_after_entries = 8`"), "{message}");
        let (line, message) = error_of(&format!("{MINIMAL}{DATA}replica_fetch_bytes_max = 1500\n"));
        assert_eq!(line, 12, "{message}");
        assert!(message.contains("`replica_fetch_max_bytes = ...` in the [node] table"), "{message}");
        let group = "[group]\nmembers = 1\nsession_timeout_ms = 1000\nrebalance_timeout_ms = 1000\nheartbeat_interval_ms = 100\ncommit_interval_ms = 100\ninitial_rebalance_delay_ms = 3000\n";
        let (_, message) = error_of(&format!("{MINIMAL}{DATA}client = \"kafka\"\n{group}"));
        assert!(message.contains("`group_initial_rebalance_delay_ms = ...`"), "{message}");
    }
}
