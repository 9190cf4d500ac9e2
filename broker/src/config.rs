//! `keel start`'s configuration, validated before anything starts: the
//! command line (`StartArgs`), its `KEEL_*` environment variables, and a
//! `--config` TOML file whose keys are the long flags in snake_case
//! (`--data-dir` is `data_dir`). Precedence: flag > `KEEL_*` env > file >
//! built-in default. An unknown key is refused with the list of valid ones.

use std::collections::BTreeMap;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, ValueEnum};
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
    /// Kafka's auto.create.topics.enable: a Metadata request for an unknown topic creates it.
    #[arg(long, env = "KEEL_AUTO_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_create_topics: bool,
    /// Kafka's num.partitions: partitions of an auto-created topic.
    #[arg(long, env = "KEEL_NUM_PARTITIONS", default_value_t = 1)]
    pub num_partitions: u32,
    /// Kafka's default.replication.factor: replicas of an auto-created topic.
    #[arg(long, env = "KEEL_DEFAULT_REPLICATION_FACTOR", default_value_t = 1)]
    pub default_replication_factor: u32,
    /// Kafka's socket.request.max.bytes: larger request frames are refused.
    #[arg(long, env = "KEEL_SOCKET_REQUEST_MAX_BYTES", default_value_t = keel_kafka::codec::FRAME_BYTES_MAX_DEFAULT)]
    pub socket_request_max_bytes: usize,
    /// Rack, for rack-aware replica placement.
    #[arg(long, env = "KEEL_RACK")]
    pub rack: Option<String>,
    /// Milliseconds of silence after which the controller fences a broker.
    #[arg(long, env = "KEEL_REGISTRATION_LEASE_MS", default_value_t = 3_000)]
    pub registration_lease_ms: u64,
    /// ISR size acks=all needs for topics that do not set min.insync.replicas.
    #[arg(long, env = "KEEL_MIN_INSYNC_REPLICAS", default_value_t = 1)]
    pub min_insync_replicas: usize,
    /// A follower not caught up for this long leaves the ISR (Kafka's replica.lag.time.max.ms).
    #[arg(long, env = "KEEL_REPLICA_LAG_TIME_MAX_MS", default_value_t = 10_000)]
    pub replica_lag_time_max_ms: u64,
    /// Kafka's group.initial.rebalance.delay.ms: the first rebalance of an empty consumer group waits this long for more members.
    #[arg(long, env = "KEEL_GROUP_INITIAL_REBALANCE_DELAY_MS", default_value_t = 3_000)]
    pub group_initial_rebalance_delay_ms: u64,
    /// On SIGTERM, requests in flight get this long to finish before their connections are cut.
    #[arg(long, env = "KEEL_DRAIN_TIMEOUT_MS", default_value_t = 10_000)]
    pub drain_timeout_ms: u64,
    /// Log format on stderr (RUST_LOG sets the level; default info).
    #[arg(long, env = "KEEL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Serve broker-to-broker traffic on this inherited listening socket (a supervisor such as `keel dev` bound it) instead of binding this node's --peers entry.
    #[arg(long, env = "KEEL_BROKER_LISTENER_FD")]
    pub broker_listener_fd: Option<i32>,
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
    pub auto_create_topics: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_partitions: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_replication_factor: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_request_max_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_lease_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_insync_replicas: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica_lag_time_max_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// The keys a `--config` file may set, in `FileConfig`'s order.
pub const FILE_KEYS: &[&str] = &[
    "node_id",
    "peers",
    "data_dir",
    "cluster_id",
    "admin_addr",
    "kafka_addr",
    "advertised_host",
    "advertised_port",
    "auto_create_topics",
    "num_partitions",
    "default_replication_factor",
    "socket_request_max_bytes",
    "rack",
    "registration_lease_ms",
    "min_insync_replicas",
    "replica_lag_time_max_ms",
    "group_initial_rebalance_delay_ms",
    "drain_timeout_ms",
    "log_format",
];

/// Parses a `--config` file's text; `shown` names the file in messages.
pub fn parse_config_file(shown: &str, text: &str) -> Result<FileConfig, String> {
    let table: toml::Table = text.parse().map_err(|error| format!("{shown} is not valid TOML: {error}"))?;
    for (key, value) in &table {
        if value.is_table() {
            return Err(format!("{shown}: `{key}` is a table; the file is flat `key = value` lines (valid keys: {})", FILE_KEYS.join(", ")));
        }
        if !FILE_KEYS.contains(&key.as_str()) {
            let snake = key.replace('-', "_");
            let hint = if FILE_KEYS.contains(&snake.as_str()) { format!(" (keys are snake_case: write `{snake}`)") } else { String::new() };
            return Err(format!("{shown}: unknown key `{key}`{hint}; valid keys: {}", FILE_KEYS.join(", ")));
        }
    }
    toml::from_str(text).map_err(|error| format!("{shown}: {}", error.to_string().trim_end()))
}

/// Reads a `--config` file from the host, before the node and its Disk
/// exist (read-only: a config file the broker may not write is fine).
pub fn read_config_file(path: &str) -> Result<String, String> {
    let cannot = |error: std::io::Error| format!("cannot read --config {path}: {error} (give the path of a readable TOML file; example: broker/keel.example.toml)");
    let len = std::fs::metadata(path).map_err(cannot)?.len();
    if len > CONFIG_FILE_BYTES_MAX as u64 {
        return Err(format!("--config {path} is {len} bytes; a config file is at most {CONFIG_FILE_BYTES_MAX}"));
    }
    let bytes = std::fs::read(path).map_err(cannot)?;
    String::from_utf8(bytes).map_err(|_| format!("--config {path} is not UTF-8 text"))
}

const CONFIG_FILE_BYTES_MAX: usize = 1024 * 1024;

/// Fills every setting not given as a flag or `KEEL_*` variable from the
/// file (`matches` are `start`'s, to tell where each value came from).
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
    from_file!(
        node_id,
        peers,
        data_dir,
        cluster_id,
        admin_addr,
        kafka_addr,
        advertised_host,
        advertised_port,
        auto_create_topics,
        num_partitions,
        default_replication_factor,
        socket_request_max_bytes,
        rack,
        registration_lease_ms,
        min_insync_replicas,
        replica_lag_time_max_ms,
        group_initial_rebalance_delay_ms,
        drain_timeout_ms,
        log_format,
    );
    args
}

/// The effective settings, as a config file would set them.
pub fn effective_toml(args: &StartArgs) -> String {
    let settings = FileConfig {
        node_id: Some(args.node_id),
        peers: Some(args.peers.clone()),
        data_dir: Some(args.data_dir.clone()),
        cluster_id: Some(args.cluster_id.clone()),
        admin_addr: Some(args.admin_addr.clone()),
        kafka_addr: Some(args.kafka_addr.clone()),
        advertised_host: args.advertised_host.clone(),
        advertised_port: args.advertised_port,
        auto_create_topics: Some(args.auto_create_topics),
        num_partitions: Some(args.num_partitions),
        default_replication_factor: Some(args.default_replication_factor),
        socket_request_max_bytes: Some(args.socket_request_max_bytes),
        rack: args.rack.clone(),
        registration_lease_ms: Some(args.registration_lease_ms),
        min_insync_replicas: Some(args.min_insync_replicas),
        replica_lag_time_max_ms: Some(args.replica_lag_time_max_ms),
        group_initial_rebalance_delay_ms: Some(args.group_initial_rebalance_delay_ms),
        drain_timeout_ms: Some(args.drain_timeout_ms),
        log_format: Some(args.log_format),
    };
    toml::to_string(&settings).expect("settings serialize as TOML")
}

/// `--peers 1=127.0.0.1:19091,2=127.0.0.1:19092,...`: every voter, this node included.
pub fn parse_peers(text: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut peers = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| format!("peer `{item}` is not ID=HOST:PORT (example: --peers 1=127.0.0.1:19091,2=127.0.0.1:19092)"))?;
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
    fn the_example_config_file_parses_and_sets_every_key() {
        let example = parse_config_file("keel.example.toml", include_str!("../keel.example.toml")).expect("the example parses");
        let listed: toml::Table = toml::to_string(&example).expect("serializes").parse().expect("parses back");
        let mut keys: Vec<&str> = listed.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut expected: Vec<&str> = FILE_KEYS.iter().copied().filter(|k| !matches!(*k, "advertised_host" | "advertised_port" | "rack")).collect();
        expected.sort_unstable();
        assert_eq!(keys, expected, "the example shows every key (the optional three commented out)");
    }

    #[test]
    fn file_keys_are_exactly_the_fields_of_the_file_config() {
        let every = FileConfig {
            node_id: Some(1),
            peers: Some(String::new()),
            data_dir: Some(String::new()),
            cluster_id: Some(String::new()),
            admin_addr: Some(String::new()),
            kafka_addr: Some(String::new()),
            advertised_host: Some(String::new()),
            advertised_port: Some(1),
            auto_create_topics: Some(true),
            num_partitions: Some(1),
            default_replication_factor: Some(1),
            socket_request_max_bytes: Some(1),
            rack: Some(String::new()),
            registration_lease_ms: Some(1),
            min_insync_replicas: Some(1),
            replica_lag_time_max_ms: Some(1),
            group_initial_rebalance_delay_ms: Some(1),
            drain_timeout_ms: Some(1),
            log_format: Some(LogFormat::Json),
        };
        let table: toml::Table = toml::to_string(&every).expect("serializes").parse().expect("parses back");
        assert_eq!(table.keys().map(String::as_str).collect::<Vec<_>>().len(), FILE_KEYS.len());
        assert!(table.keys().all(|key| FILE_KEYS.contains(&key.as_str())), "{table:?}");
    }

    #[test]
    fn unknown_kebab_case_and_mistyped_keys_are_refused_with_the_fix() {
        let unknown = parse_config_file("k.toml", "node_id = 2
retention = 5
").expect_err("unknown key");
        assert!(unknown.contains("unknown key `retention`") && unknown.contains("valid keys: node_id, peers"), "{unknown}");
        let kebab = parse_config_file("k.toml", "data-dir = \"x\"\n").expect_err("kebab");
        assert!(kebab.contains("write `data_dir`"), "{kebab}");
        let mistyped = parse_config_file("k.toml", "node_id = \"two\"\n").expect_err("type");
        assert!(mistyped.contains("k.toml") && mistyped.contains("node_id"), "{mistyped}");
        let table = parse_config_file("k.toml", "[broker]\nnode_id = 1\n").expect_err("table");
        assert!(table.contains("flat"), "{table}");
        let format = parse_config_file("k.toml", "log_format = \"json\"\n").expect("valid");
        assert_eq!(format.log_format, Some(LogFormat::Json));
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
