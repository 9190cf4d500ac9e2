//! Glue between raft-rs and Keel's seams: configuration, deterministic
//! election jitter, and raft-rs's slog output routed into `tracing`.
//!
//! raft-rs 0.7 redraws its randomized election timeout from `thread_rng`
//! inside every `reset` (each term, role or leader change). madsim cannot
//! intercept that RNG, so without this module one seed elected different
//! leaders on different runs. `ElectionJitter::apply` is called after every
//! call into a `RawNode` and pins the timeout to a value drawn from the node's
//! seeded RNG.

use raft::{RawNode, StateRole, Storage};
use rand::Rng;

use keel_io::NodeRng;

/// Raft timing in ticks (a tick is `tick_ms` of the node's Clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaftTiming {
    pub tick_ms: u64,
    pub heartbeat_ticks: usize,
    /// Election timeouts are drawn from `[election_ticks, 2 * election_ticks)`.
    pub election_ticks: usize,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming { tick_ms: 50, heartbeat_ticks: 2, election_ticks: 10 }
    }
}

/// raft-rs configuration for one metadata node: pre-vote (a partitioned node
/// rejoining cannot force an election) and check-quorum (a leader cut off
/// from a majority steps down) are always on.
pub fn raft_config(node_id: u64, timing: RaftTiming, applied_index: u64) -> Result<raft::Config, raft::Error> {
    let config = raft::Config {
        id: node_id,
        election_tick: timing.election_ticks,
        heartbeat_tick: timing.heartbeat_ticks,
        applied: applied_index,
        pre_vote: true,
        check_quorum: true,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        ..raft::Config::default()
    };
    config.validate()?;
    Ok(config)
}

/// Pins raft-rs's randomized election timeout to the node RNG.
#[derive(Debug)]
pub struct ElectionJitter {
    rng: NodeRng,
    min_ticks: usize,
    max_ticks: usize,
    /// (term, role, leader) when `timeout_ticks` was drawn.
    drawn_for: Option<(u64, StateRole, u64)>,
    timeout_ticks: usize,
}

impl ElectionJitter {
    /// Draws from the same range raft-rs would: `config`'s min and max election ticks.
    pub fn new(rng: NodeRng, config: &raft::Config) -> Self {
        let (min_ticks, max_ticks) = (config.min_election_tick(), config.max_election_tick());
        assert!(min_ticks < max_ticks, "election timeout range must not be empty");
        ElectionJitter { rng, min_ticks, max_ticks, drawn_for: None, timeout_ticks: min_ticks }
    }

    /// Call after every `RawNode` call (tick, step, propose, campaign, ...).
    /// Draws a new timeout when term, role or leader changed, and always
    /// re-applies the current one, overwriting whatever raft-rs drew.
    pub fn apply<S: Storage>(&mut self, node: &mut RawNode<S>) {
        let raft = &mut node.raft;
        let key = (raft.term, raft.state, raft.leader_id);
        if self.drawn_for != Some(key) {
            self.timeout_ticks = self.rng.gen_range(self.min_ticks..self.max_ticks);
            self.drawn_for = Some(key);
        }
        raft.set_randomized_election_timeout(self.timeout_ticks);
    }

    pub fn timeout_ticks(&self) -> usize {
        self.timeout_ticks
    }
}

/// A slog drain that forwards raft-rs's records to `tracing` at debug level
/// (raft-rs is chatty; its warnings and errors keep their level).
pub struct TracingDrain {
    node_id: u64,
}

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, _values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        let message = record.msg().to_string();
        match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::error!(node_id = self.node_id, "raft: {message}"),
            slog::Level::Warning => tracing::warn!(node_id = self.node_id, "raft: {message}"),
            _ => tracing::debug!(node_id = self.node_id, "raft: {message}"),
        }
        Ok(())
    }
}

/// The logger to hand raft-rs for `node_id`.
pub fn raft_logger(node_id: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain { node_id }, slog::o!())
}
