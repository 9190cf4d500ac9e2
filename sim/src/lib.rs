//! keel-sim: the deterministic simulation testbed.
//!
//! Built normally, seeded checks run on a paused tokio clock; built with
//! `--cfg madsim` (`ci/sim.sh`, target dir `target/sim`), they run inside a
//! madsim world. Either way one seed is one exact replay: every failure prints
//! its seed and the command that replays it.

pub mod build_id;
pub mod check;
pub mod coverage;
pub mod data_check;
#[cfg(madsim)]
pub mod data_world;
pub mod group_check;
#[cfg(madsim)]
pub mod group_world;
pub mod host;
pub mod kafka_client;
#[cfg(madsim)]
pub mod kafka_world;
pub mod log_check;
pub mod meta_check;
pub mod raft_store_check;
pub mod regressions;
#[cfg(madsim)]
pub mod report;
#[cfg(madsim)]
pub mod run;
pub mod runner;
pub mod scenario;
pub mod schedule;
#[cfg(madsim)]
pub mod shared;
pub mod shrink;
pub mod summary;
pub mod swarm;
pub mod timeline;
pub mod trace;
pub mod trace_json;
#[cfg(madsim)]
pub(crate) mod workload;
#[cfg(madsim)]
pub(crate) mod world;
