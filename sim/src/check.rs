//! What every seeded check shares: its failure report and its disk fault mix.

use keel_io::{NodeRng, SimDiskFaults};
use rand::Rng;

use crate::trace::Trace;

/// The first violation a seed found, with the trace up to it.
#[derive(Debug)]
pub struct CheckFailure {
    /// The keel-sim subcommand that replays it (`log-check`, `raft-store-check`).
    pub check: &'static str,
    pub seed: u64,
    pub step: usize,
    pub message: String,
    pub trace: Trace,
}

impl std::fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} seed {} step {}: {}", self.check, self.seed, self.step, self.message)
    }
}

/// The seeds a test sweep runs: all of `seeds` in an optimised build, the
/// first fifth in a debug one. The test command runs every sweep in both
/// builds (the `--cfg madsim` build is optimised), so the whole range is
/// still checked once per run, and the debug build, many times slower,
/// still runs each seed's debug assertions over a fifth of it.
pub fn test_sweep_seeds(seeds: std::ops::RangeInclusive<u64>) -> std::ops::RangeInclusive<u64> {
    if cfg!(debug_assertions) {
        let (first, last) = (*seeds.start(), *seeds.end());
        first..=first + (last.saturating_sub(first) + 1) / 5 - 1
    } else {
        seeds
    }
}

/// A seed's disk fault mix: each fault is on for some seeds, so sweeps cover
/// every fault alone and in combination.
pub fn random_faults(rng: &mut NodeRng) -> SimDiskFaults {
    SimDiskFaults {
        torn_write_on_crash_probability: if rng.gen_bool(0.6) { 0.7 } else { 0.0 },
        sync_eio_probability: if rng.gen_bool(0.25) { 0.03 } else { 0.0 },
        write_enospc_probability: if rng.gen_bool(0.25) { 0.02 } else { 0.0 },
        read_bit_flip_probability: if rng.gen_bool(0.5) { 0.05 } else { 0.0 },
        latency_us: if rng.gen_bool(0.5) { Some((0, 2_000)) } else { None },
    }
}

/// Runs one seed of a check in a fresh world and returns its report; any
/// failure panics with the seed, the replay command and the trace's tail
/// (the form a `cargo test` failure should take).
pub fn expect_seed_passes<R, Fut, F>(check: &str, seed: u64, steps: usize, make: F) -> R
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(R, Trace), CheckFailure>> + 'static,
    R: Send + 'static,
{
    use crate::runner::{replay_command, run_seed, SeedOutcome};
    let replay = replay_command(check, seed, &format!("--steps {steps}"));
    match run_seed(seed, std::time::Duration::from_secs(120), make) {
        SeedOutcome::Finished(Ok((report, _))) => report,
        SeedOutcome::Finished(Err(failure)) => {
            let lines = failure.trace.lines();
            let tail = lines[lines.len().saturating_sub(12)..].join("\n");
            panic!("{failure}\nseed: {seed}\nreplay: {replay}\nlast trace lines:\n{tail}")
        }
        SeedOutcome::Panicked(message) => panic!("{check} seed {seed} panicked: {message}\nseed: {seed}\nreplay: {replay}"),
        SeedOutcome::Hung { wall_clock_budget } => {
            panic!("{check} seed {seed} hung for {wall_clock_budget:?}\nseed: {seed}\nreplay: {replay}")
        }
    }
}
