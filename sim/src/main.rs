//! keel-sim: replay one seed exactly, or sweep a range of seeds.

use std::ops::RangeInclusive;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use keel_sim::check::CheckFailure;
use keel_sim::log_check::{check_log, LogCheckConfig};
use keel_sim::raft_store_check::check_raft_store;
use keel_sim::runner::{replay_command, run_seed, sweep, SeedOutcome};
use keel_sim::trace::Trace;

/// A seed that takes longer than this in wall-clock time is reported as hung.
const SEED_WALL_CLOCK_BUDGET: Duration = Duration::from_secs(120);

#[derive(Parser)]
#[command(name = "keel-sim", version, about = "Keel's deterministic simulation testbed")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Arguments shared by every seeded check.
#[derive(clap::Args)]
struct CheckArgs {
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
}

#[derive(Subcommand)]
enum Command {
    /// Crash-consistency check of the log on SimDisk: one seed (--seed) or a sweep (--seeds A..B).
    LogCheck(CheckArgs),
    /// Crash-consistency check of the metadata Raft store on SimDisk.
    RaftStoreCheck(CheckArgs),
}

#[derive(Clone, Copy)]
enum CheckKind {
    Log,
    RaftStore,
}

impl CheckKind {
    fn subcommand(self) -> &'static str {
        match self {
            CheckKind::Log => "log-check",
            CheckKind::RaftStore => "raft-store-check",
        }
    }

    /// One seed in a fresh world: a one-line summary and the trace, or the failure.
    fn run(self, seed: u64, steps: usize) -> SeedOutcome<Result<(String, Trace), CheckFailure>> {
        match self {
            CheckKind::Log => run_seed(seed, SEED_WALL_CLOCK_BUDGET, move || async move {
                check_log(LogCheckConfig { steps, ..LogCheckConfig::sim(seed) }).await.map(|(report, trace)| {
                    let summary = format!(
                        "{} appends, {} recoveries, {} mid-operation power cuts, {} failed operations, disk {:?}",
                        report.appends, report.recoveries, report.mid_operation_crashes, report.failed_operations, report.disk
                    );
                    (summary, trace)
                })
            }),
            CheckKind::RaftStore => run_seed(seed, SEED_WALL_CLOCK_BUDGET, move || async move {
                check_raft_store(seed, steps).await.map(|(report, trace)| {
                    let summary = format!(
                        "{} appends, {} compactions, {} snapshot installs, {} recoveries, {} failed operations, disk {:?}",
                        report.appends, report.compactions, report.snapshot_installs, report.recoveries, report.failed_operations, report.disk
                    );
                    (summary, trace)
                })
            }),
        }
    }
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

/// A seed's verdict; on failure, the message and the trace if one survived.
fn verdict(outcome: SeedOutcome<Result<(String, Trace), CheckFailure>>) -> Result<(String, Trace), (String, Option<Trace>)> {
    match outcome {
        SeedOutcome::Finished(Ok(done)) => Ok(done),
        SeedOutcome::Finished(Err(failure)) => Err((failure.to_string(), Some(failure.trace))),
        SeedOutcome::Panicked(message) => Err((format!("panicked: {message}"), None)),
        SeedOutcome::Hung { wall_clock_budget } => Err((format!("hung: no result within {wall_clock_budget:?} of wall-clock time"), None)),
    }
}

fn check_one(kind: CheckKind, seed: u64, steps: usize, trace_path: Option<&std::path::Path>, check_determinism: bool) -> anyhow::Result<ExitCode> {
    let replay = replay_command(kind.subcommand(), seed, &format!("--steps {steps}"));
    let (summary, trace) = match verdict(kind.run(seed, steps)) {
        Ok(done) => done,
        Err((message, trace)) => {
            if let (Some(path), Some(trace)) = (trace_path, trace) {
                trace.write_to(path).with_context(|| format!("writing trace {}", path.display()))?;
            }
            println!("FAILED {message}\nseed: {seed}\nreplay: {replay}");
            return Ok(ExitCode::from(1));
        }
    };
    if let Some(path) = trace_path {
        trace.write_to(path).with_context(|| format!("writing trace {}", path.display()))?;
    }
    println!("seed {seed}: passed ({summary})");
    println!("trace-hash {:016x}", trace.hash());
    if check_determinism {
        match verdict(kind.run(seed, steps)) {
            Ok((_, second)) if second.hash() == trace.hash() => println!("determinism: second run has the same trace hash"),
            Ok((_, second)) => {
                println!("FAILED determinism: second run trace hash {:016x} differs\nseed: {seed}\nreplay: {replay}", second.hash());
                return Ok(ExitCode::from(1));
            }
            Err((message, _)) => {
                println!("FAILED determinism: second run failed where the first passed: {message}\nseed: {seed}\nreplay: {replay}");
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check_sweep(kind: CheckKind, seeds: RangeInclusive<u64>, steps: usize, jobs: u64) -> ExitCode {
    let total = seeds.end() - seeds.start() + 1;
    let failures = sweep(seeds, jobs, move |seed| verdict(kind.run(seed, steps)).map(|_| ()).map_err(|(message, _)| message));
    println!("{} passed, {} failed", total - failures.len() as u64, failures.len());
    for (seed, message) in &failures {
        println!("FAILED seed {seed}: {message}\n  replay: {}", replay_command(kind.subcommand(), *seed, &format!("--steps {steps}")));
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn run_check(kind: CheckKind, args: CheckArgs) -> anyhow::Result<ExitCode> {
    match (args.seed, args.seeds) {
        (Some(seed), _) => check_one(kind, seed, args.steps, args.trace.as_deref(), args.check_determinism),
        (None, Some(seeds)) => Ok(check_sweep(kind, seeds, args.steps, args.jobs)),
        (None, None) => {
            eprintln!("keel-sim {}: give --seed N to replay one seed or --seeds A..B to sweep", kind.subcommand());
            Ok(ExitCode::from(2))
        }
    }
}

fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::LogCheck(args) => run_check(CheckKind::Log, args),
        Command::RaftStoreCheck(args) => run_check(CheckKind::RaftStore, args),
    }
}
