//! Runs one seed in a fresh deterministic world.
//!
//! Each seed gets a fresh OS thread (madsim seeds std HashMap hashing on a
//! thread's first use, so reusing a thread breaks replay) and a wall-clock
//! watchdog: a deadlock inside the simulation stops simulated time, so only a
//! wall clock can report the seed as hung.

use std::future::Future;
use std::io::{IsTerminal as _, Write as _};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::coverage::Coverage;

/// How one seed ended, apart from its own result.
#[derive(Debug)]
pub enum SeedOutcome<T> {
    Finished(T),
    Panicked(String),
    /// No result within the wall-clock budget; the thread is abandoned.
    Hung {
        wall_clock_budget: Duration,
    },
}

/// Runs `make()` for `seed` on a fresh OS thread, inside madsim under
/// `--cfg madsim` and on a paused current-thread tokio runtime otherwise.
pub fn run_seed<F, Fut, T>(seed: u64, wall_clock_budget: Duration, make: F) -> SeedOutcome<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let (sender, receiver) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(format!("seed-{seed}"))
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| block_on_seeded(seed, make)));
            let _ = sender.send(result);
        })
        .expect("spawn seed thread");
    let started = Instant::now();
    match receiver.recv_timeout(wall_clock_budget) {
        Ok(Ok(value)) => {
            let _ = thread.join();
            SeedOutcome::Finished(value)
        }
        Ok(Err(panic)) => {
            let _ = thread.join();
            SeedOutcome::Panicked(panic_message(&panic))
        }
        Err(_) => {
            tracing::error!(seed, waited_ms = started.elapsed().as_millis() as u64, "seed hung; abandoning its thread");
            SeedOutcome::Hung { wall_clock_budget }
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

#[cfg(madsim)]
fn block_on_seeded<F, Fut, T>(seed: u64, make: F) -> T
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    let runtime = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    runtime.block_on(make())
}

#[cfg(not(madsim))]
fn block_on_seeded<F, Fut, T>(_seed: u64, make: F) -> T
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    // Paused time advances only when every task waits, so timers are exact
    // and the run depends on nothing but its inputs.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("build paused tokio runtime");
    runtime.block_on(make())
}

/// The command that rebuilds this binary's world and replays `seed` of a
/// `keel-sim` subcommand.
pub fn replay_command(subcommand: &str, seed: u64, extra: &str) -> String {
    let launcher = if cfg!(madsim) { "ci/sim.sh" } else { "cargo run --release -p keel-sim --" };
    let extra = if extra.is_empty() { String::new() } else { format!(" {extra}") };
    format!("{launcher} {subcommand} --seed {seed}{extra} --trace trace-{seed}.jsonl")
}

/// Runs every seed in `seeds` on `jobs` worker threads (each seed still gets
/// its own fresh thread from `run_seed`), drawing a progress bar on stderr.
/// Returns the failing seeds with their messages, sorted by seed, and the
/// passing seeds' coverage summed.
pub fn sweep<F>(seeds: RangeInclusive<u64>, jobs: u64, run_one: F) -> (Vec<(u64, String)>, Coverage)
where
    F: Fn(u64) -> Result<Coverage, String> + Send + Sync + 'static,
{
    let total = seeds.end() - seeds.start() + 1;
    let last = *seeds.end();
    let next_seed = Arc::new(AtomicU64::new(*seeds.start()));
    let done = Arc::new(AtomicU64::new(0));
    let failures: Arc<Mutex<Vec<(u64, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let coverage: Arc<Mutex<Coverage>> = Arc::new(Mutex::new(Coverage::default()));
    let run_one = Arc::new(run_one);
    let interactive = std::io::stderr().is_terminal();
    let workers: Vec<_> = (0..jobs.clamp(1, total))
        .map(|_| {
            let (next_seed, done, failures, run_one) = (Arc::clone(&next_seed), Arc::clone(&done), Arc::clone(&failures), Arc::clone(&run_one));
            let coverage = Arc::clone(&coverage);
            std::thread::spawn(move || loop {
                let seed = next_seed.fetch_add(1, Ordering::SeqCst);
                if seed > last {
                    break;
                }
                match run_one(seed) {
                    Ok(seen) => coverage.lock().expect("coverage lock").merge(&seen),
                    Err(message) => failures.lock().expect("failures lock").push((seed, message)),
                }
                let finished = done.fetch_add(1, Ordering::SeqCst) + 1;
                // A redrawn bar on a terminal; in CI logs, ten plain lines.
                let every = if interactive { (total / 50).max(1) } else { (total / 10).max(1) };
                if finished % every == 0 || finished == total {
                    let failed = failures.lock().expect("failures lock").len();
                    let bar = "#".repeat(usize::try_from(finished * 30 / total).expect("fits"));
                    let line = format!("[{bar:<30}] {finished}/{total} seeds, {failed} failed");
                    if interactive {
                        eprint!("\r{line}");
                    } else {
                        eprintln!("{line}");
                    }
                    let _ = std::io::stderr().flush();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("sweep worker panicked outside a seed");
    }
    if interactive {
        eprintln!();
    }
    let mut failures = failures.lock().expect("failures lock").clone();
    failures.sort();
    let coverage = coverage.lock().expect("coverage lock").clone();
    (failures, coverage)
}
