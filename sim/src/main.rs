//! keel-sim: replay one seed exactly, or sweep a range of seeds.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use keel_sim::build_id::{build_id, check_recorded};
use keel_sim::log_check::{check_log, LogCheckConfig};
use keel_sim::raft_store_check::check_raft_store;
use keel_sim::runner::{replay_command, run_seed, sweep, SeedOutcome};
use keel_sim::scenario::Scenario;
use keel_sim::summary::{checkers_of, parse_duration, parse_shard, shard_seeds, SeedFailure, SeedStats, SweepSummary};
use keel_sim::trace::Trace;
use keel_sim::trace_json::TraceHeader;

// A simulated run allocates for every message, timer and trace line; glibc's
// malloc was a sixth of a sweep's profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    #[command(flatten)]
    sweep: SweepOptions,
}

/// How a sweep runs and reports.
#[derive(clap::Args)]
struct SweepOptions {
    /// Seeds run in parallel.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    jobs: u64,
    /// Run only shard INDEX of COUNT (0 <= INDEX < COUNT): every COUNT-th seed
    /// of the range, so COUNT machines (a CI matrix, a Kubernetes Indexed Job) split it.
    #[arg(long, value_parser = parse_shard, value_name = "INDEX/COUNT")]
    shard: Option<(u64, u64)>,
    /// Take no new seed after this much wall-clock time (e.g. 90s, 10m, 1h):
    /// the summary says how many seeds ran.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    time_budget: Option<Duration>,
    /// Also write the summary as JSON to this file (`-` for standard output).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Append each failing seed to this regression corpus (replayed by `keel-sim regressions`);
    /// scenario sweeps only.
    #[arg(long, value_name = "FILE")]
    corpus: Option<PathBuf>,
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
    #[command(flatten)]
    sweep: SweepOptions,
}

/// Arguments of `regressions`: replay the regression corpus.
#[derive(clap::Args)]
struct RegressionsArgs {
    /// The corpus file (TOML, one `[[regression]]` table per seed).
    #[arg(long, default_value = keel_sim::regressions::DEFAULT_CORPUS)]
    corpus: PathBuf,
    /// Seeds run in parallel.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    jobs: u64,
}

/// Arguments of `shrink`: one failing seed of a scenario, made small.
#[derive(clap::Args)]
struct ShrinkArgs {
    /// The scenario file (TOML) the seed fails in.
    #[arg(long)]
    scenario: PathBuf,
    /// The failing seed.
    #[arg(long)]
    seed: u64,
    /// Where to write the shrunk scenario (default: `regressions/<stem>-seed<N>-shrunk.toml` beside the scenario).
    #[arg(short = 'o', long)]
    out: Option<PathBuf>,
    /// At most this many runs of the seed while shrinking.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(2..=100_000))]
    runs_max: u64,
    /// Candidate schedules run in parallel.
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
    /// Replay every seed of the regression corpus (seeds that once failed); exit 1 if any fails.
    Regressions(RegressionsArgs),
    /// Crash-consistency check of the log on SimDisk: one seed (--seed) or a sweep (--seeds A..B).
    LogCheck(CheckArgs),
    /// Crash-consistency check of the metadata Raft store on SimDisk.
    RaftStoreCheck(CheckArgs),
    /// Shrink a failing seed: write its fault schedule and workload out as a
    /// scenario, remove and simplify events while the same checker fails,
    /// and show the result fails alike twice. Exit 0 when shrunk, 1 when
    /// the failure did not reproduce, 2 on bad input or a seed that passes.
    Shrink(ShrinkArgs),
    /// Render a JSON trace (`--trace F.jsonl`) as one self-contained HTML page.
    Timeline(TimelineArgs),
    /// Print a broker's effective node settings in a scenario as TOML:
    /// keel's defaults with the scenario's `[node]` table over them (as `keel start --print-config` prints keel's).
    Config(ConfigArgs),
}

/// One seed's verdict: a summary, the trace and what the seed adds to a
/// sweep, or what failed and the trace if one survived (a panic or a hang
/// leaves none).
type Verdict = Result<(String, Trace, SeedStats), (SeedFailure, Option<Trace>)>;

/// What is being checked: a built-in check or a scenario file.
#[derive(Clone)]
enum CheckKind {
    Log { steps: usize },
    RaftStore { steps: usize },
    Scenario(Arc<Scenario>),
}

impl CheckKind {
    /// The subcommand that runs one seed of this check.
    fn subcommand(&self) -> &'static str {
        match self {
            CheckKind::Log { .. } => "log-check",
            CheckKind::RaftStore { .. } => "raft-store-check",
            CheckKind::Scenario(_) => "run",
        }
    }

    /// The command line that replays `seed` of this check on this binary.
    fn replay(&self, seed: u64) -> String {
        let arguments = match self {
            CheckKind::Log { steps } | CheckKind::RaftStore { steps } => format!("--steps {steps}"),
            CheckKind::Scenario(scenario) => format!("--scenario {}", scenario.path.display()),
        };
        format!("{} --build {}", replay_command(self.subcommand(), seed, &arguments), build_id())
    }

    /// The header of a JSON trace of `seed` of this check.
    fn trace_header(&self, seed: u64, trace: &Trace) -> TraceHeader {
        let scenario = match self {
            CheckKind::Scenario(scenario) => Some(scenario.path.display().to_string()),
            CheckKind::Log { .. } | CheckKind::RaftStore { .. } => None,
        };
        TraceHeader::new(self.subcommand(), scenario, seed, trace.hash(), self.replay(seed))
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
            SeedOutcome::Finished(Ok((summary, trace))) => Ok((summary, trace, SeedStats::default())),
            SeedOutcome::Finished(Err(failure)) => {
                let failure_of = SeedFailure { checker: failure.check.to_string(), message: failure.to_string() };
                Err((failure_of, Some(failure.trace)))
            }
            other => Err(unfinished(&other)),
        }
    }
}

/// A seed that panicked or hung: no trace survives.
fn unfinished<T>(outcome: &SeedOutcome<T>) -> (SeedFailure, Option<Trace>) {
    (SeedFailure::of_unfinished(outcome).expect("only unfinished seeds come here"), None)
}

#[cfg(madsim)]
fn run_scenario_seed(scenario: Arc<Scenario>, seed: u64) -> Verdict {
    use keel_sim::run::run_scenario;
    match run_seed(seed, SEED_WALL_CLOCK_BUDGET, move || run_scenario(scenario, seed)) {
        SeedOutcome::Finished(Ok((report, trace))) => Ok((report.to_string(), trace, report.seed_stats())),
        SeedOutcome::Finished(Err((violation, trace))) => {
            Err((SeedFailure { checker: violation.checker.to_string(), message: violation.to_string() }, Some(trace)))
        }
        other => Err(unfinished(&other)),
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
        Err((failure, trace)) => {
            if let (Some(path), Some(trace)) = (trace_path, trace) {
                trace.write_to(path, &kind.trace_header(seed, &trace)).with_context(|| format!("writing trace {}", path.display()))?;
            }
            println!("FAILED {}\nseed: {seed}\nreplay: {replay}", failure.message);
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
            Err((failure, _)) => {
                println!("FAILED determinism: second run failed where the first passed: {}\nseed: {seed}\nreplay: {replay}", failure.message);
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check_sweep(kind: CheckKind, seeds: RangeInclusive<u64>, options: &SweepOptions) -> anyhow::Result<ExitCode> {
    let (subject, checkers) = match &kind {
        CheckKind::Scenario(scenario) => (scenario.path.display().to_string(), checkers_of(scenario)),
        CheckKind::Log { .. } | CheckKind::RaftStore { .. } => (kind.subcommand().to_string(), Vec::new()),
    };
    let planned = shard_seeds(*seeds.start(), *seeds.end(), options.shard);
    let runner = kind.clone();
    let outcome =
        sweep(planned.clone(), options.jobs, options.time_budget, move |seed| runner.run(seed).map(|(_, _, stats)| stats).map_err(|(failure, _)| failure));
    let replays = outcome.failures.iter().map(|(seed, _)| (*seed, kind.replay(*seed))).collect();
    let summary = SweepSummary {
        subject,
        seeds_first: *seeds.start(),
        seeds_last: *seeds.end(),
        shard: options.shard,
        seeds_planned: planned.len() as u64,
        seeds_run: outcome.seeds_run,
        failures: outcome.failures,
        passed: outcome.passed,
        wall: outcome.wall,
        time_budget: options.time_budget,
        checkers,
        replays,
    };
    print!("{}", summary.render());
    if let Some(path) = &options.json {
        let json = serde_json::to_string_pretty(&summary.to_json()).context("rendering the sweep summary as JSON")?;
        if path.as_os_str() == "-" {
            println!("{json}");
        } else {
            std::fs::write(path, json + "\n").with_context(|| format!("writing the JSON summary {}", path.display()))?;
        }
    }
    if let (Some(corpus), CheckKind::Scenario(scenario)) = (&options.corpus, &kind) {
        for (seed, failure) in &summary.failures {
            keel_sim::regressions::append(corpus, &scenario.path, *seed, &failure.checker)
                .with_context(|| format!("appending seed {seed} to {}", corpus.display()))?;
        }
        if !summary.failures.is_empty() {
            println!("appended {} failing seeds to {}", summary.failures.len(), corpus.display());
        }
    }
    Ok(if summary.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn run_check(kind: CheckKind, args: CheckArgs, subcommand: &str) -> anyhow::Result<ExitCode> {
    match (args.seed, args.seeds) {
        (Some(seed), _) => check_one(&kind, seed, args.trace.as_deref(), args.check_determinism, args.build.as_deref()),
        (None, Some(seeds)) => check_sweep(kind, seeds, &args.sweep),
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

/// `regressions`: every kept seed, each against its own scenario; bad
/// input (a malformed corpus, a scenario file that is gone) is exit 2.
fn replay_regressions(args: &RegressionsArgs) -> anyhow::Result<ExitCode> {
    let regressions = match keel_sim::regressions::load(&args.corpus) {
        Ok(regressions) => regressions,
        Err(error) => {
            eprintln!("keel-sim: {error}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut kinds = Vec::with_capacity(regressions.len());
    for regression in &regressions {
        match load_scenario(&regression.scenario) {
            Ok(kind) => kinds.push(kind),
            Err(code) => {
                eprintln!("keel-sim: {}: seed {} names that scenario", args.corpus.display(), regression.seed);
                return Ok(code);
            }
        }
    }
    let kinds = Arc::new(kinds);
    let seeds = regressions.iter().map(|regression| regression.seed).collect::<Vec<_>>();
    let indexes = (0..regressions.len() as u64).collect();
    let (runner, seeds_of) = (Arc::clone(&kinds), seeds.clone());
    let outcome = sweep(indexes, args.jobs, None, move |index| {
        let index = usize::try_from(index).expect("index fits usize");
        runner[index].run(seeds_of[index]).map(|(_, _, stats)| stats).map_err(|(failure, _)| failure)
    });
    println!("regression corpus {}: {} seeds replayed, {} failed", args.corpus.display(), regressions.len(), outcome.failures.len());
    for (index, failure) in &outcome.failures {
        let index = usize::try_from(*index).expect("index fits usize");
        let (regression, seed) = (&regressions[index], seeds[index]);
        println!(
            "FAILED {} seed {seed} (kept for `{}`): {}\n  replay: {}",
            regression.scenario.display(),
            regression.checker,
            failure.message,
            kinds[index].replay(seed)
        );
    }
    Ok(if outcome.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
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

/// Logs on stderr: as `RUST_LOG` says, or else errors only and no spans.
/// madsim opens a span for every node and task; keeping them (only to name
/// the node of an error line) cost a twentieth of a sweep.
fn init_logging() {
    use tracing_subscriber::prelude::*;
    match tracing_subscriber::EnvFilter::try_from_default_env() {
        Ok(filter) => tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init(),
        Err(_) => {
            let errors_only = tracing_subscriber::filter::filter_fn(|metadata| metadata.is_event() && *metadata.level() <= tracing::Level::ERROR);
            tracing_subscriber::registry().with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(errors_only)).init();
        }
    }
}

fn main() -> anyhow::Result<ExitCode> {
    init_logging();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => match load_scenario(&args.scenario) {
            Ok(kind) => check_one(&kind, args.seed, args.trace.as_deref(), args.check_determinism, args.build.as_deref()),
            Err(code) => Ok(code),
        },
        Command::Sweep(args) => match load_scenario(&args.scenario) {
            Ok(kind) => check_sweep(kind, args.seeds, &args.sweep),
            Err(code) => Ok(code),
        },
        Command::Regressions(args) => replay_regressions(&args),
        Command::LogCheck(args) => run_check(CheckKind::Log { steps: args.steps }, args, "log-check"),
        Command::RaftStoreCheck(args) => run_check(CheckKind::RaftStore { steps: args.steps }, args, "raft-store-check"),
        Command::Timeline(args) => Ok(render_timeline(&args)),
        Command::Config(args) => Ok(print_config(&args)),
        Command::Shrink(args) => match load_scenario(&args.scenario) {
            Ok(CheckKind::Scenario(scenario)) => shrink(&scenario, args),
            Ok(_) => unreachable!("load_scenario gives a scenario"),
            Err(code) => Ok(code),
        },
    }
}

#[cfg(madsim)]
fn shrink(scenario: &Scenario, args: ShrinkArgs) -> anyhow::Result<ExitCode> {
    use keel_sim::shrink::{default_out, run_in_sim, shrink, ShrinkEnd, ShrinkRequest};
    let out = args.out.unwrap_or_else(|| default_out(&args.scenario, args.seed));
    let request = ShrinkRequest { scenario, seed: args.seed, out, runs_max: args.runs_max as usize, jobs: args.jobs as usize };
    Ok(match shrink(&request, &run_in_sim(SEED_WALL_CLOCK_BUDGET))? {
        ShrinkEnd::Shrunk => ExitCode::SUCCESS,
        ShrinkEnd::NotReproduced => ExitCode::from(1),
        ShrinkEnd::SeedPasses => ExitCode::from(2),
    })
}

#[cfg(not(madsim))]
fn shrink(_scenario: &Scenario, _args: ShrinkArgs) -> anyhow::Result<ExitCode> {
    unreachable!("scenario commands stop in main without the madsim build")
}
