//! keel-sim: replay one seed exactly, or sweep a range of seeds.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use keel_sim::build_id::{build_id, check_recorded};
use keel_sim::coverage::Coverage;
use keel_sim::log_check::{check_log, LogCheckConfig};
use keel_sim::meta_check::checker;
use keel_sim::raft_store_check::check_raft_store;
use keel_sim::runner::{replay_command, run_seed, sweep, SeedOutcome};
use keel_sim::scenario::Scenario;
use keel_sim::trace::Trace;
use keel_sim::trace_json::TraceHeader;

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
    /// Write the run's trace to this file: JSON lines (a `*.txt` file: text lines, then the hash).
    #[arg(long, requires = "seed")]
    trace: Option<std::path::PathBuf>,
    /// The build id the replayed seed was recorded by: exit 2 if this binary differs.
    #[arg(long, requires = "seed")]
    build: Option<String>,
    /// Run the seed twice and fail unless both traces are byte-identical.
    #[arg(long, requires = "seed")]
    check_determinism: bool,
    /// Seeds run in parallel during a sweep.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    jobs: u64,
}

/// Arguments of `run`: one seed of a scenario.
#[derive(clap::Args)]
struct RunArgs {
    /// The scenario file (TOML), e.g. scenarios/election-storm.toml.
    #[arg(long)]
    scenario: PathBuf,
    /// The seed to run (the same seed replays the same run exactly).
    #[arg(long)]
    seed: u64,
    /// Write the run's trace to this file: JSON lines (a `*.txt` file: text lines, then the hash).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// The build id the seed was recorded by: exit 2 if this binary differs.
    #[arg(long)]
    build: Option<String>,
    /// Run the seed twice and fail unless both traces are byte-identical.
    #[arg(long)]
    check_determinism: bool,
}

/// Arguments of `sweep`: a range of seeds of a scenario, each in a fresh world.
#[derive(clap::Args)]
struct SweepArgs {
    /// The scenario file (TOML), e.g. scenarios/election-storm.toml.
    #[arg(long)]
    scenario: PathBuf,
    /// An inclusive range of seeds, e.g. 1..500.
    #[arg(long, value_parser = parse_seed_range)]
    seeds: RangeInclusive<u64>,
    /// Seeds run in parallel.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    jobs: u64,
}

/// Arguments of `config`: one broker's settings in a scenario.
#[derive(clap::Args)]
struct ConfigArgs {
    /// The scenario file (TOML), e.g. scenarios/election-storm.toml.
    #[arg(long)]
    scenario: PathBuf,
    /// The broker whose settings to print (1 to the scenario's brokers).
    #[arg(long, default_value_t = 1)]
    node: u64,
}

/// Arguments of `timeline`: a JSON trace in, an HTML page out.
#[derive(clap::Args)]
struct TimelineArgs {
    /// The JSON trace a run wrote with `--trace FILE.jsonl`.
    trace: PathBuf,
    /// The HTML file to write.
    #[arg(short, long)]
    output: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run one seed of a scenario (metadata cluster, workload, faults, checkers).
    Run(RunArgs),
    /// Run a range of seeds of a scenario; exit 1 if any fails.
    Sweep(SweepArgs),
    /// Crash-consistency check of the log on SimDisk: one seed (--seed) or a sweep (--seeds A..B).
    LogCheck(CheckArgs),
    /// Crash-consistency check of the metadata Raft store on SimDisk.
    RaftStoreCheck(CheckArgs),
    /// Render a JSON trace (`--trace F.jsonl`) as one self-contained HTML page.
    Timeline(TimelineArgs),
    /// Print a broker's effective node settings in a scenario as TOML:
    /// keel's defaults with the scenario's `[node]` table over them (as `keel start --print-config` prints keel's).
    Config(ConfigArgs),
}

/// One seed's verdict: a summary and the trace, or what failed and the trace
/// if one survived (a panic or a hang leaves none).
type Verdict = Result<(String, Trace, Coverage), (String, Option<Trace>)>;

/// What is being checked: a built-in check or a scenario file.
#[derive(Clone)]
enum CheckKind {
    Log { steps: usize },
    RaftStore { steps: usize },
    Scenario(Arc<Scenario>),
}

impl CheckKind {
    /// The command line that replays `seed` of this check on this binary.
    fn replay(&self, seed: u64) -> String {
        let replay = match self {
            CheckKind::Log { steps } => replay_command("log-check", seed, &format!("--steps {steps}")),
            CheckKind::RaftStore { steps } => replay_command("raft-store-check", seed, &format!("--steps {steps}")),
            CheckKind::Scenario(scenario) => replay_command("run", seed, &format!("--scenario {}", scenario.path.display())),
        };
        format!("{replay} --build {}", build_id())
    }

    /// The header of a JSON trace of `seed` of this check.
    fn trace_header(&self, seed: u64, trace: &Trace) -> TraceHeader {
        let (command, scenario) = match self {
            CheckKind::Log { .. } => ("log-check", None),
            CheckKind::RaftStore { .. } => ("raft-store-check", None),
            CheckKind::Scenario(scenario) => ("run", Some(scenario.path.display().to_string())),
        };
        TraceHeader::new(command, scenario, seed, trace.hash(), self.replay(seed))
    }

    /// One seed in a fresh world.
    fn run(&self, seed: u64) -> Verdict {
        let outcome = match self.clone() {
            CheckKind::Log { steps } => run_seed(seed, SEED_WALL_CLOCK_BUDGET, move || async move {
                check_log(LogCheckConfig { steps, ..LogCheckConfig::sim(seed) }).await.map(|(report, trace)| {
                    let summary = format!(
                        "{} appends, {} recoveries, {} mid-operation power cuts, {} failed operations, disk {:?}",
                        report.appends, report.recoveries, report.mid_operation_crashes, report.failed_operations, report.disk
                    );
                    (summary, trace)
                })
            }),
            CheckKind::RaftStore { steps } => run_seed(seed, SEED_WALL_CLOCK_BUDGET, move || async move {
                check_raft_store(seed, steps).await.map(|(report, trace)| {
                    let summary = format!(
                        "{} appends, {} compactions, {} snapshot installs, {} recoveries, {} failed operations, disk {:?}",
                        report.appends, report.compactions, report.snapshot_installs, report.recoveries, report.failed_operations, report.disk
                    );
                    (summary, trace)
                })
            }),
            CheckKind::Scenario(scenario) => return run_scenario_seed(scenario, seed),
        };
        match outcome {
            SeedOutcome::Finished(Ok((summary, trace))) => Ok((summary, trace, Coverage::default())),
            SeedOutcome::Finished(Err(failure)) => Err((failure.to_string(), Some(failure.trace))),
            other => Err(unfinished(other)),
        }
    }
}

/// A seed that panicked or hung.
fn unfinished<T>(outcome: SeedOutcome<T>) -> (String, Option<Trace>) {
    match outcome {
        SeedOutcome::Finished(_) => unreachable!("only unfinished seeds come here"),
        SeedOutcome::Panicked(message) => (format!("checker `{}` failed: a panic: {message}", checker::NO_PANICS), None),
        SeedOutcome::Hung { wall_clock_budget } => (format!("hung: no result within {wall_clock_budget:?} of wall-clock time"), None),
    }
}

#[cfg(madsim)]
fn run_scenario_seed(scenario: Arc<Scenario>, seed: u64) -> Verdict {
    use keel_sim::run::run_scenario;
    match run_seed(seed, SEED_WALL_CLOCK_BUDGET, move || run_scenario(scenario, seed)) {
        SeedOutcome::Finished(Ok((report, trace))) => Ok((report.to_string(), trace, report.coverage)),
        SeedOutcome::Finished(Err((violation, trace))) => Err((violation.to_string(), Some(trace))),
        other => Err(unfinished(other)),
    }
}

#[cfg(not(madsim))]
fn run_scenario_seed(_scenario: Arc<Scenario>, _seed: u64) -> Verdict {
    unreachable!("scenario commands stop in main without the madsim build")
}

fn parse_seed_range(text: &str) -> Result<RangeInclusive<u64>, String> {
    let (a, b) = text.split_once("..").ok_or_else(|| format!("`{text}` is not a seed range; write FIRST..LAST, e.g. 1..500"))?;
    let first: u64 = a.parse().map_err(|_| format!("`{a}` is not a seed number (expected FIRST..LAST, e.g. 1..500)"))?;
    let last: u64 = b.trim_start_matches('=').parse().map_err(|_| format!("`{b}` is not a seed number (expected FIRST..LAST, e.g. 1..500)"))?;
    if first > last {
        return Err(format!("seed range {first}..{last} is empty; the first seed must not exceed the last"));
    }
    Ok(first..=last)
}

fn check_one(kind: &CheckKind, seed: u64, trace_path: Option<&Path>, check_determinism: bool, recorded_build: Option<&str>) -> anyhow::Result<ExitCode> {
    if let Err(message) = recorded_build.map_or(Ok(()), |recorded| check_recorded(seed, recorded, build_id())) {
        eprintln!("keel-sim: {message}");
        return Ok(ExitCode::from(2));
    }
    let replay = kind.replay(seed);
    let (summary, trace, _) = match kind.run(seed) {
        Ok(done) => done,
        Err((message, trace)) => {
            if let (Some(path), Some(trace)) = (trace_path, trace) {
                trace.write_to(path, &kind.trace_header(seed, &trace)).with_context(|| format!("writing trace {}", path.display()))?;
            }
            println!("FAILED {message}\nseed: {seed}\nreplay: {replay}");
            return Ok(ExitCode::from(1));
        }
    };
    if let Some(path) = trace_path {
        trace.write_to(path, &kind.trace_header(seed, &trace)).with_context(|| format!("writing trace {}", path.display()))?;
    }
    println!("seed {seed}: passed ({summary})");
    println!("trace-hash {:016x}", trace.hash());
    if check_determinism {
        match kind.run(seed) {
            Ok((_, second, _)) if second.render() == trace.render() => println!("determinism: second run has the same trace, byte for byte"),
            Ok((_, second, _)) => {
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

fn check_sweep(kind: CheckKind, seeds: RangeInclusive<u64>, jobs: u64) -> ExitCode {
    let total = seeds.end() - seeds.start() + 1;
    let runner = kind.clone();
    let (failures, coverage) = sweep(seeds, jobs, move |seed| runner.run(seed).map(|(_, _, coverage)| coverage).map_err(|(message, _)| message));
    let passed = total - failures.len() as u64;
    println!("{passed} passed, {} failed", failures.len());
    if !coverage.is_empty() {
        println!("{}", coverage.table(passed));
    }
    for (seed, message) in &failures {
        println!("FAILED seed {seed}: {message}\n  replay: {}", kind.replay(*seed));
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn run_check(kind: CheckKind, args: CheckArgs, subcommand: &str) -> anyhow::Result<ExitCode> {
    match (args.seed, args.seeds) {
        (Some(seed), _) => check_one(&kind, seed, args.trace.as_deref(), args.check_determinism, args.build.as_deref()),
        (None, Some(seeds)) => Ok(check_sweep(kind, seeds, args.jobs)),
        (None, None) => {
            eprintln!("keel-sim {subcommand}: give --seed N to replay one seed or --seeds A..B to sweep");
            Ok(ExitCode::from(2))
        }
    }
}

/// Reads a scenario file; bad input is exit 2 with the file and line.
fn read_scenario(path: &Path) -> Result<Scenario, ExitCode> {
    Scenario::load(path).map_err(|error| {
        eprintln!("keel-sim: {error}");
        ExitCode::from(2)
    })
}

/// Loads a scenario for `run`/`sweep`; bad input is exit 2 with the file and line.
fn load_scenario(path: &Path) -> Result<CheckKind, ExitCode> {
    let scenario = read_scenario(path)?;
    if !cfg!(madsim) {
        eprintln!("keel-sim: {} is valid, but scenarios run only in the simulation build (--cfg madsim); run it with ci/sim.sh", path.display());
        return Err(ExitCode::from(2));
    }
    Ok(CheckKind::Scenario(Arc::new(scenario)))
}

/// `config`: the settings the scenario's broker boots with. Every broker of
/// a scenario has the same ones; `--node` is checked against the cluster.
fn print_config(args: &ConfigArgs) -> ExitCode {
    let scenario = match read_scenario(&args.scenario) {
        Ok(scenario) => scenario,
        Err(code) => return code,
    };
    let brokers = scenario.cluster.brokers;
    if !(1..=brokers).contains(&args.node) {
        eprintln!("keel-sim: --node {}: {} has brokers 1 to {brokers}", args.node, args.scenario.display());
        return ExitCode::from(2);
    }
    print!("{}", scenario.node.to_toml());
    ExitCode::SUCCESS
}

/// `timeline`: bad input (unreadable, not a keel-sim JSON trace) is exit 2 with the file and line.
fn render_timeline(args: &TimelineArgs) -> ExitCode {
    match keel_sim::timeline::render_file(&args.trace, &args.output) {
        Ok(summary) => {
            println!("{}: {summary}", args.output.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("keel-sim: {error}");
            ExitCode::from(2)
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
        Command::Run(args) => match load_scenario(&args.scenario) {
            Ok(kind) => check_one(&kind, args.seed, args.trace.as_deref(), args.check_determinism, args.build.as_deref()),
            Err(code) => Ok(code),
        },
        Command::Sweep(args) => match load_scenario(&args.scenario) {
            Ok(kind) => Ok(check_sweep(kind, args.seeds, args.jobs)),
            Err(code) => Ok(code),
        },
        Command::LogCheck(args) => run_check(CheckKind::Log { steps: args.steps }, args, "log-check"),
        Command::RaftStoreCheck(args) => run_check(CheckKind::RaftStore { steps: args.steps }, args, "raft-store-check"),
        Command::Timeline(args) => Ok(render_timeline(&args)),
        Command::Config(args) => Ok(print_config(&args)),
    }
}
