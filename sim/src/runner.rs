//! Runs one seed in a fresh deterministic world.
//!
//! Each seed gets a fresh OS thread (madsim seeds std HashMap hashing on a
//! thread's first use, so reusing a thread breaks replay) and a wall-clock
//! watchdog: a deadlock inside the simulation stops simulated time, so only a
//! wall clock can report the seed as hung.

use std::future::Future;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::summary::{SeedFailure, SeedStats};

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

/// What `sweep` hands back: every failure, the passing seeds' stats
/// summed, how many seeds ran and how long it took.
#[derive(Debug)]
pub struct SweepOutcome {
    /// Sorted by seed.
    pub failures: Vec<(u64, SeedFailure)>,
    pub passed: SeedStats,
    pub seeds_run: u64,
    pub wall: Duration,
}

/// Runs every seed of `seeds` on `jobs` worker threads (each seed still gets
/// its own fresh thread from `run_seed`), drawing a progress bar on stderr.
/// With a `time_budget`, workers take no new seed once it has passed (seeds
/// already running finish), so a sweep ends within the budget plus one seed.
pub fn sweep<F>(seeds: Vec<u64>, jobs: u64, time_budget: Option<Duration>, run_one: F) -> SweepOutcome
where
    F: Fn(u64) -> Result<SeedStats, SeedFailure> + Send + Sync + 'static,
{
    let started = Instant::now();
    let total = seeds.len() as u64;
    let seeds = Arc::new(seeds);
    let next_index = Arc::new(AtomicU64::new(0));
    let failures: Arc<Mutex<Vec<(u64, SeedFailure)>>> = Arc::new(Mutex::new(Vec::new()));
    let passed: Arc<Mutex<SeedStats>> = Arc::new(Mutex::new(SeedStats::default()));
    let run_one = Arc::new(run_one);
    let progress = Progress::new(total);
    let workers: Vec<_> = (0..jobs.clamp(1, total.max(1)))
        .map(|_| {
            let (seeds, next_index, failures, passed) = (Arc::clone(&seeds), Arc::clone(&next_index), Arc::clone(&failures), Arc::clone(&passed));
            let (run_one, progress) = (Arc::clone(&run_one), progress.clone());
            std::thread::spawn(move || loop {
                if time_budget.is_some_and(|budget| started.elapsed() >= budget) {
                    break;
                }
                let index = next_index.fetch_add(1, Ordering::SeqCst);
                let Some(&seed) = seeds.get(usize::try_from(index).expect("index fits usize")) else {
                    break;
                };
                let failed = match run_one(seed) {
                    Ok(stats) => {
                        lock(&passed).merge(&stats);
                        false
                    }
                    Err(failure) => {
                        lock(&failures).push((seed, failure));
                        true
                    }
                };
                progress.seed_done(failed);
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("sweep worker panicked outside a seed");
    }
    progress.finish();
    let mut failures = std::mem::take(&mut *lock(&failures));
    failures.sort_by_key(|(seed, _)| *seed);
    let passed = std::mem::take(&mut *lock(&passed));
    SweepOutcome { failures, passed, seeds_run: progress.seeds_done(), wall: started.elapsed() }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A worker panics only outside a seed (seeds run under catch_unwind), and
    // then the sweep stops on its join: a poisoned lock's data is still whole.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The sweep's progress on stderr: an indicatif bar with seeds/s and the ETA
/// on a terminal; in CI logs (no terminal), ten plain lines.
#[derive(Clone)]
struct Progress {
    bar: ProgressBar,
    total: u64,
    failed: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
}

impl Progress {
    fn new(total: u64) -> Self {
        let bar = if std::io::stderr().is_terminal() { ProgressBar::new(total) } else { ProgressBar::hidden() };
        let style =
            ProgressStyle::with_template("{bar:30} {pos}/{len} seeds, {msg} [{per_sec}, {elapsed} elapsed, ETA {eta}]").expect("valid progress template");
        bar.set_style(style);
        bar.set_message("0 failed");
        Progress { bar, total, failed: Arc::new(AtomicU64::new(0)), done: Arc::new(AtomicU64::new(0)) }
    }

    fn seed_done(&self, failed: bool) {
        let failed = self.failed.fetch_add(u64::from(failed), Ordering::SeqCst) + u64::from(failed);
        let done = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        self.bar.set_message(format!("{failed} failed"));
        self.bar.inc(1);
        if self.bar.is_hidden() && (done.is_multiple_of((self.total / 10).max(1)) || done == self.total) {
            eprintln!("{done}/{} seeds, {failed} failed", self.total);
        }
    }

    fn seeds_done(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
