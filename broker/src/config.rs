//! `keel start`'s configuration, validated before anything starts: the
//! command line (`StartArgs`), its `KEEL_*` environment variables, and a
//! `--config` TOML file whose keys are the long flags in snake_case
//! (`--data-dir` is `data_dir`). Precedence: flag > `KEEL_*` env > file >
//! built-in default. An unknown key is refused with the list of valid ones.

use std::collections::BTreeMap;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, ValueEnum};
use keel_node::NodeConfig;
use serde::{Deserialize, Serialize};

/// How logs are written (to stderr).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per event (tracing-subscriber's JSON format).
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct StartArgs {
    /// A TOML file of settings; its keys are these long flags in snake_case (example: broker/keel.example.toml). Flags and KEEL_* env win over it.
    #[arg(long, env = "KEEL_CONFIG")]
    pub config: Option<String>,
    /// Print the effective settings (flag > KEEL_* env > --config file > default) as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// This node's id; must appear in --peers.
    #[arg(long, env = "KEEL_NODE_ID", default_value_t = 1)]
    pub node_id: u64,
    /// Every metadata voter as ID=HOST:PORT, this node included.
    #[arg(long, env = "KEEL_PEERS", default_value = "1=127.0.0.1:19091")]
    pub peers: String,
    /// Where this node keeps its data.
    #[arg(long, env = "KEEL_DATA_DIR", default_value = "keel-data")]
    pub data_dir: String,
    /// Names the cluster; a data dir or peer of another cluster is refused.
    #[arg(long, env = "KEEL_CLUSTER_ID", default_value = "keel-local")]
    pub cluster_id: String,
    /// The admin HTTP endpoint (/healthz, /readyz, /metrics, /status, /topics, ...).
    #[arg(long, env = "KEEL_ADMIN_ADDR", default_value = "127.0.0.1:8080")]
    pub admin_addr: String,
    /// The Kafka listener (what clients bootstrap from).
    #[arg(long, env = "KEEL_KAFKA_ADDR", default_value = "127.0.0.1:9092")]
    pub kafka_addr: String,
    /// Host this broker registers for clients (default: the --kafka-addr host).
    #[arg(long, env = "KEEL_ADVERTISED_HOST")]
    pub advertised_host: Option<String>,
    /// Port this broker registers for clients (default: the --kafka-addr port).
    #[arg(long, env = "KEEL_ADVERTISED_PORT")]
    pub advertised_port: Option<u16>,
    /// Rack, for rack-aware replica placement.
    #[arg(long, env = "KEEL_RACK")]
    pub rack: Option<String>,
    /// Log format on stderr (RUST_LOG sets the level; default info).
    #[arg(long, env = "KEEL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Serve broker-to-broker traffic on this inherited listening socket (a supervisor such as `keel dev` bound it) instead of binding this node's --peers entry.
    #[arg(long, env = "KEEL_BROKER_LISTENER_FD")]
    pub broker_listener_fd: Option<i32>,
    #[command(flatten)]
    pub node: NodeFlags,
}

/// `keel start`'s flags for the node's settings (`keel_node::NodeConfig`,
/// whose defaults `--print-config` shows): unset flags leave the file's value
/// or the default.
#[derive(Args, Debug, Clone, Default)]
pub struct NodeFlags {
    /// Raft tick of the metadata group, in milliseconds.
    #[arg(long, env = "KEEL_RAFT_TICK_MS")]
    pub raft_tick_ms: Option<u64>,
    /// A metadata leader heartbeats every this many ticks.
    #[arg(long, env = "KEEL_RAFT_HEARTBEAT_TICKS")]
    pub raft_heartbeat_ticks: Option<usize>,
    /// Metadata election timeouts are drawn from [N, 2N) ticks.
    #[arg(long, env = "KEEL_RAFT_ELECTION_TICKS")]
    pub raft_election_ticks: Option<usize>,
    /// A metadata proposal not applied within this long fails (retriable).
    #[arg(long, env = "KEEL_PROPOSAL_TIMEOUT_MS")]
    pub proposal_timeout_ms: Option<u64>,
    /// Milliseconds of silence after which the controller fences a broker.
    #[arg(long, env = "KEEL_REGISTRATION_LEASE_MS")]
    pub registration_lease_ms: Option<u64>,
    /// The metadata Raft log is snapshotted and compacted after this many applied entries.
    #[arg(long, env = "KEEL_METADATA_COMPACT_AFTER_ENTRIES")]
    pub metadata_compact_after_entries: Option<u64>,
    /// Segment size of the metadata Raft log.
    #[arg(long, env = "KEEL_METADATA_SEGMENT_BYTES")]
    pub metadata_segment_bytes: Option<u64>,
    /// Kafka's log.segment.bytes: segment size of partition logs.
    #[arg(long, env = "KEEL_LOG_SEGMENT_BYTES")]
    pub log_segment_bytes: Option<u64>,
    /// ISR size acks=all needs for topics that do not set min.insync.replicas.
    #[arg(long, env = "KEEL_MIN_INSYNC_REPLICAS")]
    pub min_insync_replicas: Option<usize>,
    /// A follower not caught up for this long leaves the ISR (Kafka's replica.lag.time.max.ms).
    #[arg(long, env = "KEEL_REPLICA_LAG_TIME_MAX_MS")]
    pub replica_lag_time_max_ms: Option<u64>,
    /// Kafka's replica.fetch.max.bytes: bytes a follower asks for per fetch.
    #[arg(long, env = "KEEL_REPLICA_FETCH_MAX_BYTES")]
    pub replica_fetch_max_bytes: Option<u32>,
    /// A partition leader holds a follower's fetch with nothing new for at most this long.
    #[arg(long, env = "KEEL_REPLICA_FETCH_WAIT_MAX_MS")]
    pub replica_fetch_wait_max_ms: Option<u64>,
    /// Produce and read requests queued for the replication loop; a full queue answers busy.
    #[arg(long, env = "KEEL_PRODUCE_QUEUE_LEN")]
    pub produce_queue_len: Option<usize>,
    /// Kafka's auto.create.topics.enable: a Metadata request for an unknown topic creates it.
    #[arg(long, env = "KEEL_AUTO_CREATE_TOPICS", action = clap::ArgAction::Set)]
    pub auto_create_topics: Option<bool>,
    /// Kafka's num.partitions: partitions of an auto-created topic.
    #[arg(long, env = "KEEL_NUM_PARTITIONS")]
    pub num_partitions: Option<u32>,
    /// Kafka's default.replication.factor: replicas of an auto-created topic.
    #[arg(long, env = "KEEL_DEFAULT_REPLICATION_FACTOR")]
    pub default_replication_factor: Option<u32>,
    /// Kafka's socket.request.max.bytes: larger request frames are refused.
    #[arg(long, env = "KEEL_SOCKET_REQUEST_MAX_BYTES")]
    pub socket_request_max_bytes: Option<usize>,
    /// How often a parked Kafka fetch looks for new records.
    #[arg(long, env = "KEEL_FETCH_POLL_INTERVAL_MS")]
    pub fetch_poll_interval_ms: Option<u64>,
    /// The longest a Kafka fetch is held, whatever the client asks.
    #[arg(long, env = "KEEL_FETCH_WAIT_MAX_MS")]
    pub fetch_wait_max_ms: Option<u64>,
    /// How long a topic create (CreateTopics, auto-create, the admin endpoint) keeps retrying retriable errors.
    #[arg(long, env = "KEEL_CREATE_TOPIC_TIMEOUT_MS")]
    pub create_topic_timeout_ms: Option<u64>,
    /// Kafka's group.min.session.timeout.ms.
    #[arg(long, env = "KEEL_GROUP_MIN_SESSION_TIMEOUT_MS")]
    pub group_min_session_timeout_ms: Option<u64>,
    /// Kafka's group.max.session.timeout.ms.
    #[arg(long, env = "KEEL_GROUP_MAX_SESSION_TIMEOUT_MS")]
    pub group_max_session_timeout_ms: Option<u64>,
    /// Kafka's group.initial.rebalance.delay.ms: the first rebalance of an empty consumer group waits this long for more members.
    #[arg(long, env = "KEEL_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// On SIGTERM, requests in flight get this long to finish before their connections are cut.
    #[arg(long, env = "KEEL_DRAIN_TIMEOUT_MS")]
    pub drain_timeout_ms: Option<u64>,
}

impl NodeFlags {
    /// The flags (and `KEEL_*` variables) given, over `config`.
    pub fn apply(&self, mut config: NodeConfig) -> NodeConfig {
        if let Some(value) = self.raft_tick_ms {
            config.raft_tick_ms = value;
        }
        if let Some(value) = self.raft_heartbeat_ticks {
            config.raft_heartbeat_ticks = value;
        }
        if let Some(value) = self.raft_election_ticks {
            config.raft_election_ticks = value;
        }
        if let Some(value) = self.proposal_timeout_ms {
            config.proposal_timeout_ms = value;
        }
        if let Some(value) = self.registration_lease_ms {
            config.registration_lease_ms = value;
        }
        if let Some(value) = self.metadata_compact_after_entries {
            config.metadata_compact_after_entries = value;
        }
        if let Some(value) = self.metadata_segment_bytes {
            config.metadata_segment_bytes = value;
        }
        if let Some(value) = self.log_segment_bytes {
            config.log_segment_bytes = value;
        }
        if let Some(value) = self.min_insync_replicas {
            config.min_insync_replicas = value;
        }
        if let Some(value) = self.replica_lag_time_max_ms {
            config.replica_lag_time_max_ms = value;
        }
        if let Some(value) = self.replica_fetch_max_bytes {
            config.replica_fetch_max_bytes = value;
        }
        if let Some(value) = self.replica_fetch_wait_max_ms {
            config.replica_fetch_wait_max_ms = value;
        }
        if let Some(value) = self.produce_queue_len {
            config.produce_queue_len = value;
        }
        if let Some(value) = self.auto_create_topics {
            config.auto_create_topics = value;
        }
        if let Some(value) = self.num_partitions {
            config.num_partitions = value;
        }
        if let Some(value) = self.default_replication_factor {
            config.default_replication_factor = value;
        }
        if let Some(value) = self.socket_request_max_bytes {
            config.socket_request_max_bytes = value;
        }
        if let Some(value) = self.fetch_poll_interval_ms {
            config.fetch_poll_interval_ms = value;
        }
        if let Some(value) = self.fetch_wait_max_ms {
            config.fetch_wait_max_ms = value;
        }
        if let Some(value) = self.create_topic_timeout_ms {
            config.create_topic_timeout_ms = value;
        }
        if let Some(value) = self.group_min_session_timeout_ms {
            config.group_min_session_timeout_ms = value;
        }
        if let Some(value) = self.group_max_session_timeout_ms {
            config.group_max_session_timeout_ms = value;
        }
        if let Some(value) = self.group_initial_rebalance_delay_ms {
            config.group_initial_rebalance_delay_ms = value;
        }
        if let Some(value) = self.drain_timeout_ms {
            config.drain_timeout_ms = value;
        }
        config
    }
}

/// A `--config` file: every key optional, unknown keys refused. The field
/// names are `StartArgs`' (so the keys are the long flags in snake_case).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// The keys of a `--config` file that are `keel start`'s own (the others
/// are `keel_node::NodeConfig`'s), in `FileConfig`'s order.
pub const BINARY_KEYS: &[&str] =
    &["node_id", "peers", "data_dir", "cluster_id", "admin_addr", "kafka_addr", "advertised_host", "advertised_port", "rack", "log_format"];

/// Every key a `--config` file may set: `keel start`'s own, then the node's.
pub fn file_keys() -> Vec<String> {
    BINARY_KEYS.iter().map(|key| key.to_string()).chain(NodeConfig::keys()).collect()
}

/// A parsed `--config` file: `keel start`'s own settings and the node's.
#[derive(Debug, Default)]
pub struct ParsedFile {
    pub start: FileConfig,
    pub node: NodeConfig,
}

/// Parses a `--config` file's text over the node defaults; `shown` names
/// the file in messages.
pub fn parse_config_file(shown: &str, text: &str) -> Result<ParsedFile, String> {
    let table: toml::Table = text.parse().map_err(|error| format!("{shown} is not valid TOML: {error}"))?;
    let valid = file_keys();
    let (mut start, mut node) = (toml::Table::new(), toml::Table::new());
    for (key, value) in table {
        if value.is_table() {
            return Err(format!("{shown}: `{key}` is a table; the file is flat `key = value` lines (valid keys: {})", valid.join(", ")));
        }
        if BINARY_KEYS.contains(&key.as_str()) {
            start.insert(key, value);
        } else if valid.contains(&key) {
            node.insert(key, value);
        } else {
            let snake = key.replace('-', "_");
            let hint = if valid.contains(&snake) { format!(" (keys are snake_case: write `{snake}`)") } else { String::new() };
            return Err(format!("{shown}: unknown key `{key}`{hint}; valid keys: {}", valid.join(", ")));
        }
    }
    let start = toml::Value::Table(start).try_into().map_err(|error: toml::de::Error| format!("{shown}: {}", error.to_string().trim_end()))?;
    let node = NodeConfig::from_toml_table(node).map_err(|error| format!("{shown}: {error}"))?;
    Ok(ParsedFile { start, node })
}

/// Reads a `--config` file from the host, before the node and its Disk
/// exist (read-only: a config file the broker may not write is fine).
pub fn read_config_file(path: &str) -> Result<String, String> {
    let cannot =
        |error: std::io::Error| format!("cannot read --config {path}: {error} (give the path of a readable TOML file; example: broker/keel.example.toml)");
    let len = std::fs::metadata(path).map_err(cannot)?.len();
    if len > CONFIG_FILE_BYTES_MAX as u64 {
        return Err(format!("--config {path} is {len} bytes; a config file is at most {CONFIG_FILE_BYTES_MAX}"));
    }
    let bytes = std::fs::read(path).map_err(cannot)?;
    String::from_utf8(bytes).map_err(|_| format!("--config {path} is not UTF-8 text"))
}

const CONFIG_FILE_BYTES_MAX: usize = 1024 * 1024;

/// Fills every setting not given as a flag or `KEEL_*` variable from the
/// file (`matches` are `start`'s, to tell where each value came from), and
/// the node's settings: flag > env > file > default.
pub fn apply_file(mut args: StartArgs, matches: &ArgMatches, file: FileConfig) -> StartArgs {
    let given = |id: &str| matches!(matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable));
    macro_rules! from_file {
        ($($field:ident),* $(,)?) => {
            $(
                if let Some(value) = file.$field {
                    if !given(stringify!($field)) {
                        args.$field = value.into();
                    }
                }
            )*
        };
    }
    from_file!(node_id, peers, data_dir, cluster_id, admin_addr, kafka_addr, advertised_host, advertised_port, rack, log_format);
    args
}

/// The effective settings, as a config file would set them: `keel start`'s
/// own, then the node's (`keel_node::NodeConfig`, the keys a simulator
/// scenario's `[node]` table sets too).
pub fn effective_toml(args: &StartArgs, node: &NodeConfig) -> String {
    let settings = FileConfig {
        node_id: Some(args.node_id),
        peers: Some(args.peers.clone()),
        data_dir: Some(args.data_dir.clone()),
        cluster_id: Some(args.cluster_id.clone()),
        admin_addr: Some(args.admin_addr.clone()),
        kafka_addr: Some(args.kafka_addr.clone()),
        advertised_host: args.advertised_host.clone(),
        advertised_port: args.advertised_port,
        rack: args.rack.clone(),
        log_format: Some(args.log_format),
    };
    format!("{}{}", toml::to_string(&settings).expect("settings serialize as TOML"), node.to_toml())
}

/// `--peers 1=127.0.0.1:19091,2=127.0.0.1:19092,...`: every voter, this node included.
pub fn parse_peers(text: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut peers = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) =
            item.split_once('=').ok_or_else(|| format!("peer `{item}` is not ID=HOST:PORT (example: --peers 1=127.0.0.1:19091,2=127.0.0.1:19092)"))?;
        let id: u64 = id.trim().parse().map_err(|_| format!("peer id `{id}` is not a number (example: 1=127.0.0.1:19091)"))?;
        let addr = addr.trim();
        if parse_listen_addr(addr).is_err() {
            return Err(format!("peer {id} address `{addr}` is not HOST:PORT (port 0, any free port, only for this node's own entry)"));
        }
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(format!("node id {id} appears twice in --peers; every node needs its own id"));
        }
    }
    if peers.is_empty() {
        return Err("--peers is empty; list every voter as ID=HOST:PORT".into());
    }
    let mut addresses: Vec<&String> = peers.values().collect();
    addresses.sort();
    if let Some(pair) = addresses.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("address {} is given to two nodes in --peers", pair[0]));
    }
    Ok(peers)
}

/// Only this node's own `--peers` entry may say port 0 (listen on any free
/// port): the others are addresses to dial.
pub fn check_peer_ports(peers: &BTreeMap<u64, String>, node_id: u64) -> Result<(), String> {
    match peers.iter().find(|(id, addr)| **id != node_id && parse_host_port(addr).is_err()) {
        Some((id, addr)) => Err(format!("peer {id} address `{addr}` has port 0; only this node's own entry may (to listen on any free port)")),
        None => Ok(()),
    }
}

/// `HOST:PORT` to listen on: a port from 0 (any free port) to 65535.
pub fn parse_listen_addr(text: &str) -> Result<(String, u16), String> {
    match text.trim().rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => match port.parse::<u16>() {
            Ok(port) => Ok((host.to_string(), port)),
            _ => Err(format!("`{text}` is not HOST:PORT with a port from 0 (any free port) to 65535 (example: 127.0.0.1:9092)")),
        },
        _ => Err(format!("`{text}` is not HOST:PORT (example: 127.0.0.1:9092)")),
    }
}

/// `HOST:PORT` with a port from 1 to 65535.
pub fn parse_host_port(text: &str) -> Result<(String, u16), String> {
    match text.trim().rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => match port.parse::<u16>() {
            Ok(port) if port > 0 => Ok((host.to_string(), port)),
            _ => Err(format!("`{text}` is not HOST:PORT with a port from 1 to 65535 (example: 127.0.0.1:9092)")),
        },
        _ => Err(format!("`{text}` is not HOST:PORT (example: 127.0.0.1:9092)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_file_parses_and_sets_every_key_to_its_default() {
        let example = include_str!("../keel.example.toml");
        let parsed = parse_config_file("keel.example.toml", example).expect("the example parses");
        assert_eq!(parsed.node, NodeConfig::default(), "the example spells out the node defaults");
        let listed: toml::Table = example.parse().expect("valid TOML");
        let mut keys: Vec<&str> = listed.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let every = file_keys();
        let mut expected: Vec<&str> = every.iter().map(String::as_str).filter(|k| !matches!(*k, "advertised_host" | "advertised_port" | "rack")).collect();
        expected.sort_unstable();
        assert_eq!(keys, expected, "the example shows every key (the optional three commented out)");
    }

    #[test]
    fn binary_keys_are_exactly_the_fields_of_the_file_config_and_none_is_a_node_setting() {
        let every = FileConfig {
            node_id: Some(1),
            peers: Some(String::new()),
            data_dir: Some(String::new()),
            cluster_id: Some(String::new()),
            admin_addr: Some(String::new()),
            kafka_addr: Some(String::new()),
            advertised_host: Some(String::new()),
            advertised_port: Some(1),
            rack: Some(String::new()),
            log_format: Some(LogFormat::Json),
        };
        let table: toml::Table = toml::to_string(&every).expect("serializes").parse().expect("parses back");
        let mut binary_keys = BINARY_KEYS.to_vec();
        binary_keys.sort_unstable();
        assert_eq!(table.keys().map(String::as_str).collect::<Vec<_>>(), binary_keys, "(a TOML table lists its keys sorted)");
        let node_keys = NodeConfig::keys();
        assert!(BINARY_KEYS.iter().all(|key| !node_keys.contains(&key.to_string())), "{node_keys:?}");
    }

    #[test]
    fn a_flag_beats_the_file_which_beats_the_node_default() {
        let parsed = parse_config_file("k.toml", "num_partitions = 4\nregistration_lease_ms = 900\n").expect("valid");
        let flags = NodeFlags { num_partitions: Some(6), ..NodeFlags::default() };
        let config = flags.apply(parsed.node);
        assert_eq!(config.num_partitions, 6);
        assert_eq!(config.registration_lease_ms, 900);
        assert_eq!(config.drain_timeout_ms, NodeConfig::default().drain_timeout_ms);
    }

    #[test]
    fn unknown_kebab_case_and_mistyped_keys_are_refused_with_the_fix() {
        let unknown = parse_config_file(
            "k.toml",
            "node_id = 2
retention = 5
",
        )
        .expect_err("unknown key");
        assert!(unknown.contains("unknown key `retention`") && unknown.contains("valid keys: node_id, peers"), "{unknown}");
        let kebab = parse_config_file("k.toml", "data-dir = \"x\"\n").expect_err("kebab");
        assert!(kebab.contains("write `data_dir`"), "{kebab}");
        let mistyped = parse_config_file("k.toml", "node_id = \"two\"\n").expect_err("type");
        assert!(mistyped.contains("k.toml") && mistyped.contains("node_id"), "{mistyped}");
        let table = parse_config_file("k.toml", "[broker]\nnode_id = 1\n").expect_err("table");
        assert!(table.contains("flat"), "{table}");
        let format = parse_config_file("k.toml", "log_format = \"json\"\n").expect("valid");
        assert_eq!(format.start.log_format, Some(LogFormat::Json));
        let node_mistyped = parse_config_file("k.toml", "num_partitions = \"four\"\n").expect_err("type");
        assert!(node_mistyped.contains("k.toml") && node_mistyped.contains("num_partitions"), "{node_mistyped}");
    }

    #[test]
    fn peers_parse_and_bad_peers_say_how_to_fix_them() {
        let peers = parse_peers("1=127.0.0.1:19091, 2=127.0.0.1:19092").expect("valid");
        assert_eq!(peers.get(&2).map(String::as_str), Some("127.0.0.1:19092"));
        assert!(parse_peers("1=a:1,1=b:2").expect_err("dup").contains("appears twice"));
        assert!(parse_peers("1=a:1,2=a:1").expect_err("dup addr").contains("two nodes"));
        assert!(parse_peers("x=a:1").expect_err("id").contains("not a number"));
        assert!(parse_peers("1=nohost").expect_err("addr").contains("HOST:PORT"));
        let own_port_zero = parse_peers("1=a:0,2=b:7").expect("port 0 listens on any free port");
        assert!(check_peer_ports(&own_port_zero, 1).is_ok());
        assert!(check_peer_ports(&own_port_zero, 2).expect_err("peer 1 cannot be dialled at port 0").contains("peer 1"));
        assert!(parse_peers("1=a:70000").expect_err("port").contains("HOST:PORT"));
        assert!(parse_peers("").expect_err("empty").contains("empty"));
        assert_eq!(parse_host_port("127.0.0.1:9092"), Ok(("127.0.0.1".to_string(), 9092)));
        assert!(parse_host_port("9092").expect_err("no host").contains("HOST:PORT"));
        assert!(parse_host_port("h:70000").expect_err("port").contains("65535"));
    }
}
