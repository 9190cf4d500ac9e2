//! keel-sim: replay one seed exactly, or sweep a range of seeds.

use std::ops::RangeInclusive;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use keel_sim::log_check::{check_log, LogCheckConfig};
use keel_sim::runner::{replay_command, run_seed, sweep, SeedOutcome};

/// A seed that takes longer than this in wall-clock time is reported as hung.
const SEED_WALL_CLOCK_BUDGET: Duration = Duration::from_secs(120);

#[derive(Parser)]
#[command(name = "keel-sim", version, about = "Keel's deterministic simulation testbed")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Crash-consistency check of the log on SimDisk: one seed (--seed) or a sweep (--seeds A..B).
    LogCheck {
        /// Replay exactly this seed.
        #[arg(long, conflicts_with = "seeds")]
        seed: Option<u64>,
        /// Sweep an inclusive range of seeds, e.g. 1..2000.
        #[arg(long, value_parser = parse_seed_range)]
        seeds: Option<RangeInclusive<u64>>,
        /// Operations per seed.
        #[arg(long, default_value_t = 300)]
        steps: usize,
        /// Write the run's trace (one event per line, then its hash) to this file.
        #[arg(long, requires = "seed")]
        trace: Option<std::path::PathBuf>,
        /// Run the seed twice and fail unless both traces are byte-identical.
        #[arg(long, requires = "seed")]
        check_determinism: bool,
        /// Seeds run in parallel during a sweep.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
        jobs: u64,
    },
}

fn parse_seed_range(text: &str) -> Result<RangeInclusive<u64>, String> {
    let (a, b) = text
        .split_once("..")
        .ok_or_else(|| format!("`{text}` is not a seed range; write FIRST..LAST, e.g. 1..500"))?;
    let first: u64 = a.parse().map_err(|_| format!("`{a}` is not a seed number (expected FIRST..LAST, e.g. 1..500)"))?;
    let last: u64 = b
        .trim_start_matches('=')
        .parse()
        .map_err(|_| format!("`{b}` is not a seed number (expected FIRST..LAST, e.g. 1..500)"))?;
    if first > last {
        return Err(format!("seed range {first}..{last} is empty; the first seed must not exceed the last"));
    }
    Ok(first..=last)
}

enum SeedVerdict {
    Passed { trace_hash: u64 },
    Failed { message: String },
}

fn run_log_check_seed(seed: u64, steps: usize) -> SeedVerdict {
    let outcome = run_seed(seed, SEED_WALL_CLOCK_BUDGET, move || check_log(LogCheckConfig { steps, ..LogCheckConfig::sim(seed) }));
    match outcome {
        SeedOutcome::Finished(Ok((report, _trace))) => SeedVerdict::Passed { trace_hash: report.trace_hash },
        SeedOutcome::Finished(Err(failure)) => {
            SeedVerdict::Failed { message: failure.to_string() }
        }
        SeedOutcome::Panicked(message) => SeedVerdict::Failed { message: format!("panicked: {message}") },
        SeedOutcome::Hung { wall_clock_budget } => {
            SeedVerdict::Failed { message: format!("hung: no result within {wall_clock_budget:?} of wall-clock time") }
        }
    }
}

fn log_check_one(seed: u64, steps: usize, trace_path: Option<&std::path::Path>, check_determinism: bool) -> anyhow::Result<ExitCode> {
    let replay = replay_command("log-check", seed, &format!("--steps {steps}"));
    let first = run_seed(seed, SEED_WALL_CLOCK_BUDGET, move || check_log(LogCheckConfig { steps, ..LogCheckConfig::sim(seed) }));
    let (report, trace) = match first {
        SeedOutcome::Finished(Ok(done)) => done,
        SeedOutcome::Finished(Err(failure)) => {
            if let Some(path) = trace_path {
                failure.trace.write_to(path).with_context(|| format!("writing trace {}", path.display()))?;
            }
            println!("FAILED {failure}\nseed: {seed}\nreplay: {replay}");
            return Ok(ExitCode::from(1));
        }
        SeedOutcome::Panicked(message) => {
            println!("FAILED log-check seed {seed} panicked: {message}\nseed: {seed}\nreplay: {replay}");
            return Ok(ExitCode::from(1));
        }
        SeedOutcome::Hung { wall_clock_budget } => {
            println!("FAILED log-check seed {seed} hung ({wall_clock_budget:?} wall clock)\nseed: {seed}\nreplay: {replay}");
            return Ok(ExitCode::from(1));
        }
    };
    if let Some(path) = trace_path {
        trace.write_to(path).with_context(|| format!("writing trace {}", path.display()))?;
    }
    println!(
        "seed {seed}: passed ({} appends, {} recoveries, {} mid-operation power cuts, {} failed operations, disk {:?})",
        report.appends, report.recoveries, report.mid_operation_crashes, report.failed_operations, report.disk
    );
    println!("trace-hash {:016x}", report.trace_hash);
    if check_determinism {
        match run_log_check_seed(seed, steps) {
            SeedVerdict::Passed { trace_hash } if trace_hash == report.trace_hash => {
                println!("determinism: second run has the same trace hash");
            }
            SeedVerdict::Passed { trace_hash } => {
                println!("FAILED determinism: second run trace hash {trace_hash:016x} differs\nseed: {seed}\nreplay: {replay}");
                return Ok(ExitCode::from(1));
            }
            SeedVerdict::Failed { message, .. } => {
                println!("FAILED determinism: second run failed where the first passed: {message}\nseed: {seed}\nreplay: {replay}");
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn log_check_sweep(seeds: RangeInclusive<u64>, steps: usize, jobs: u64) -> ExitCode {
    let total = seeds.end() - seeds.start() + 1;
    let failures = sweep(seeds, jobs, move |seed| match run_log_check_seed(seed, steps) {
        SeedVerdict::Passed { .. } => Ok(()),
        SeedVerdict::Failed { message } => Err(message),
    });
    println!("{} passed, {} failed", total - failures.len() as u64, failures.len());
    for (seed, message) in &failures {
        println!("FAILED seed {seed}: {message}\n  replay: {}", replay_command("log-check", *seed, &format!("--steps {steps}")));
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::LogCheck { seed: Some(seed), trace, check_determinism, steps, .. } => {
            log_check_one(seed, steps, trace.as_deref(), check_determinism)
        }
        Command::LogCheck { seeds: Some(seeds), steps, jobs, .. } => Ok(log_check_sweep(seeds, steps, jobs)),
        Command::LogCheck { .. } => {
            eprintln!("keel-sim log-check: give --seed N to replay one seed or --seeds A..B to sweep");
            Ok(ExitCode::from(2))
        }
    }
}
