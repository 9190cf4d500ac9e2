//! `keel-sim shrink`: a failing seed made small. The seed's run is written
//! out as an explicit schedule (`schedule::explicit`: every fault it fired,
//! at its firing time, and the workload sizes), which fails as the seed
//! did; delta debugging (`ddmin`) then removes fault events while the same
//! checker still fails under the same seed, and simplification halves the
//! fault durations and the workload counts while it still fails. Every
//! candidate is run from its file text (`Scenario::to_toml`, then parsed),
//! so the file written is the schedule that was tested; the file is then
//! run twice more to show it fails the same way each time.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::runner::replay_command;
use crate::scenario::Scenario;

/// One run of a candidate: the checker that failed (none: it passed), what
/// it said, and its trace's hash when a trace survived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub checker: Option<String>,
    pub detail: String,
    pub trace_hash: Option<u64>,
}

/// What a batch of candidates showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The first candidate (in order) that still fails.
    Fails(usize),
    /// Every candidate passed (or failed otherwise).
    Passes,
    /// The run budget ran out before a failing candidate was found.
    Spent,
}

/// Delta debugging (Zeller's ddmin) over `len` items: the smallest subset
/// (as sorted indices) found that still fails. `probe` tests candidate
/// subsets in the order given. When it finishes without spending the
/// budget, removing any one item of the result makes it pass (1-minimal).
pub fn ddmin(len: usize, mut probe: impl FnMut(&[Vec<usize>]) -> Probe) -> Vec<usize> {
    let mut current: Vec<usize> = (0..len).collect();
    if current.is_empty() {
        return current;
    }
    // A failure that needs none of the items is the commonest shrink of all.
    match probe(&[Vec::new()]) {
        Probe::Fails(_) => return Vec::new(),
        Probe::Spent => return current,
        Probe::Passes => {}
    }
    let mut granularity = 2;
    while current.len() >= 2 {
        let chunks = split(&current, granularity);
        match probe(&chunks) {
            Probe::Fails(index) => {
                current = chunks[index].clone();
                granularity = 2;
                continue;
            }
            Probe::Spent => break,
            Probe::Passes => {}
        }
        // With two chunks each complement is the other chunk, tried already.
        if granularity > 2 {
            let complements: Vec<Vec<usize>> = chunks.iter().map(|chunk| current.iter().copied().filter(|item| !chunk.contains(item)).collect()).collect();
            match probe(&complements) {
                Probe::Fails(index) => {
                    current = complements[index].clone();
                    granularity = (granularity - 1).max(2);
                    continue;
                }
                Probe::Spent => break,
                Probe::Passes => {}
            }
        }
        if granularity >= current.len() {
            break;
        }
        granularity = (granularity * 2).min(current.len());
    }
    current
}

/// `items` in `parts` contiguous chunks of near-equal size.
fn split(items: &[usize], parts: usize) -> Vec<Vec<usize>> {
    assert!(parts >= 1, "split into at least one part");
    assert!(parts <= items.len(), "no empty chunk");
    (0..parts).map(|part| items[part * items.len() / parts..(part + 1) * items.len() / parts].to_vec()).collect()
}

/// Runs one scenario under one seed (the simulation build's runner, or a
/// test's stand-in).
pub type RunOnce = dyn Fn(Arc<Scenario>, u64) -> Outcome + Send + Sync;

/// What `shrink` is asked to do.
pub struct ShrinkRequest<'a> {
    pub scenario: &'a Scenario,
    pub seed: u64,
    pub out: PathBuf,
    pub runs_max: usize,
    pub jobs: usize,
}

/// How a shrink ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ShrinkEnd {
    /// Shrunk, written and shown to fail the same way twice.
    Shrunk,
    /// The seed passes: nothing to shrink.
    SeedPasses,
    /// The explicit schedule or the shrunk file did not fail as the seed did.
    NotReproduced,
}

/// Runs candidates against the budget, `jobs` at a time.
struct Prober<'a> {
    run: &'a RunOnce,
    seed: u64,
    checker: String,
    path: PathBuf,
    runs: usize,
    runs_max: usize,
    jobs: usize,
}

impl Prober<'_> {
    /// The candidate as its file reads back.
    fn reread(&self, candidate: &Scenario) -> Scenario {
        Scenario::parse(&self.path, &candidate.to_toml()).unwrap_or_else(|error| panic!("a shrink candidate does not parse back: {error}"))
    }

    fn first_failing(&mut self, candidates: &[Scenario]) -> Probe {
        let mut tested = 0;
        while tested < candidates.len() {
            let batch = self.jobs.min(candidates.len() - tested).min(self.runs_max - self.runs);
            if batch == 0 {
                return Probe::Spent;
            }
            let scenarios: Vec<Arc<Scenario>> = candidates[tested..tested + batch].iter().map(|candidate| Arc::new(self.reread(candidate))).collect();
            let (run, seed) = (self.run, self.seed);
            let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
                let handles: Vec<_> = scenarios.iter().map(|scenario| scope.spawn(move || run(Arc::clone(scenario), seed))).collect();
                handles.into_iter().map(|handle| handle.join().expect("a shrink run thread panicked outside its seed")).collect()
            });
            self.runs += batch;
            if let Some(index) = outcomes.iter().position(|outcome| outcome.checker.as_deref() == Some(self.checker.as_str())) {
                return Probe::Fails(tested + index);
            }
            tested += batch;
        }
        Probe::Passes
    }

    /// Halves one count of `current` while the result still fails.
    fn halve_while_failing(&mut self, current: &mut Scenario, what: &str, mut smaller: impl FnMut(&Scenario) -> Option<Scenario>) {
        while let Some(candidate) = smaller(current) {
            match self.first_failing(std::slice::from_ref(&candidate)) {
                Probe::Fails(_) => {
                    *current = candidate;
                    println!("run {}: {what}, still fails: {}", self.runs, sizes(current));
                }
                Probe::Passes | Probe::Spent => return,
            }
        }
    }
}

/// Half of `value`, not below `floor`; `None` at the floor.
fn half(value: u64, floor: u64) -> Option<u64> {
    (value > floor).then(|| (value / 2).max(floor))
}

/// The sizes shrinking reduces, for progress lines and the summary.
pub fn sizes(scenario: &Scenario) -> String {
    format!("{} fault events, workload {}", scenario.faults.len(), workload_sizes(scenario))
}

/// The workload's counts, e.g. `creates 12, deletes 6, producers 4 x 40 batches, consumers 2`.
pub fn workload_sizes(scenario: &Scenario) -> String {
    let mut parts = Vec::new();
    if let Some(workload) = &scenario.workload {
        parts.push(format!("creates {}, deletes {}", workload.creates, workload.deletes));
    }
    if let Some(data) = &scenario.data {
        parts.push(format!("producers {} x {} batches, consumers {}", data.producers, data.batches_per_producer, data.consumers));
    }
    if let Some(group) = &scenario.group {
        parts.push(format!("group members {}", group.members));
    }
    if parts.is_empty() {
        "(none)".to_string()
    } else {
        parts.join(", ")
    }
}

/// Where the shrunk file goes by default: the `regressions/` folder beside
/// the scenario (where the regression corpus keeps the files its entries
/// name; sweeps of the scenario folder do not pick it up), as
/// `<stem>-seed<N>-shrunk.toml`.
pub fn default_out(scenario: &Path, seed: u64) -> PathBuf {
    let stem = scenario.file_stem().map_or_else(|| "scenario".into(), |stem| stem.to_string_lossy().into_owned());
    scenario.parent().unwrap_or(Path::new("")).join("regressions").join(format!("{stem}-seed{seed}-shrunk.toml"))
}

/// Shrinks `request.seed` of `request.scenario`, printing progress, and
/// writes the shrunk schedule to `request.out`.
pub fn shrink(request: &ShrinkRequest<'_>, run: &RunOnce) -> anyhow::Result<ShrinkEnd> {
    let ShrinkRequest { scenario, seed, .. } = *request;
    let source = scenario.path.display().to_string();
    let original = run(Arc::new(scenario.clone()), seed);
    let Some(checker) = original.checker.clone() else {
        println!("seed {seed} of {source} passes: nothing to shrink");
        return Ok(ShrinkEnd::SeedPasses);
    };
    println!("seed {seed} of {source} fails checker `{checker}`: {}", original.detail);
    let mut prober =
        Prober { run, seed, checker: checker.clone(), path: request.out.clone(), runs: 1, runs_max: request.runs_max.max(2), jobs: request.jobs.max(1) };
    let explicit = prober.reread(&crate::schedule::explicit(scenario, seed));
    let before = sizes(&explicit);
    let replayed = run(Arc::new(explicit.clone()), seed);
    prober.runs += 1;
    if replayed.checker.as_deref() != Some(checker.as_str()) {
        println!("FAILED the seed's explicit schedule ({before}) does not fail `{checker}` under seed {seed}: {}", replayed.detail);
        return Ok(ShrinkEnd::NotReproduced);
    }
    let same = if replayed.detail == original.detail { "the same violation" } else { "the same checker, another violation" };
    println!("explicit schedule: {before}; fails with {same}");

    let kept = ddmin(explicit.faults.len(), |subsets| {
        let candidates: Vec<Scenario> = subsets.iter().map(|subset| with_faults(&explicit, subset)).collect();
        let probe = prober.first_failing(&candidates);
        if let Probe::Fails(index) = probe {
            println!("run {}: {} of {} fault events still fail", prober.runs, subsets[index].len(), explicit.faults.len());
        }
        probe
    });
    let mut current = with_faults(&explicit, &kept);
    for index in 0..current.faults.len() {
        let what = format!("fault event {} ({}) duration halved", index + 1, current.faults[index].kind.name());
        prober.halve_while_failing(&mut current, &what, |scenario| {
            let mut smaller = scenario.clone();
            let fault = &mut smaller.faults[index];
            fault.duration_ms = Some(half(fault.duration_ms?, 10)?);
            Some(smaller)
        });
    }
    simplify_workload(&mut prober, &mut current);

    let after = sizes(&current);
    let workload = format!("workload {} -> {}", workload_sizes(&explicit), workload_sizes(&current));
    let summary = format!("shrunk: {} fault events -> {}, {workload}, runs {}", explicit.faults.len(), current.faults.len(), prober.runs);
    let header = format!(
        "# Shrunk by `keel-sim shrink` from {source}, seed {seed}: checker `{checker}` fails.\n\
         # Before: {before}.\n\
         # After:  {after} ({} runs).\n\
         # Run it under the same seed: the faults fire at these times and [schedule_draws]\n\
         # repeats the original run's layout draws, so the rest of the run is the seed's.\n",
        prober.runs
    );
    let out = &request.out;
    let current = Scenario { about: format!("seed {seed} of {source} shrunk: fails `{checker}`"), ..current };
    if let Some(folder) = out.parent().filter(|folder| !folder.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder).map_err(|error| anyhow::anyhow!("making {}: {error}", folder.display()))?;
    }
    std::fs::write(out, format!("{header}{}", current.to_toml())).map_err(|error| anyhow::anyhow!("writing {}: {error}", out.display()))?;
    println!("{summary}");
    println!("wrote {}", out.display());
    println!("replay: {}", replay_command("run", seed, &format!("--scenario {}", out.display())));

    let written = Arc::new(Scenario::load(out).map_err(|error| anyhow::anyhow!("the shrunk file does not load: {error}"))?);
    let (first, second) = (run(Arc::clone(&written), seed), run(written, seed));
    let deterministic = first.checker.as_deref() == Some(checker.as_str()) && first == second && first.trace_hash.is_some();
    if !deterministic {
        println!("FAILED the shrunk file did not fail `{checker}` twice alike: {first:?} then {second:?}");
        return Ok(ShrinkEnd::NotReproduced);
    }
    let hash = first.trace_hash.expect("checked above");
    println!("deterministic: {} fails `{checker}` on both of two more runs, trace hash {hash:016x} both times", out.display());
    Ok(ShrinkEnd::Shrunk)
}

/// The explicit schedule with only the faults at `indices`.
fn with_faults(explicit: &Scenario, indices: &[usize]) -> Scenario {
    Scenario { faults: indices.iter().map(|index| explicit.faults[*index].clone()).collect(), ..explicit.clone() }
}

/// Drops whole workloads, then halves their counts, while it still fails.
fn simplify_workload(prober: &mut Prober<'_>, current: &mut Scenario) {
    // The group consumes the data topic: it goes with the data workload.
    prober.halve_while_failing(current, "data workload removed", |s| s.data.is_some().then(|| Scenario { data: None, group: None, ..s.clone() }));
    prober.halve_while_failing(current, "topic workload removed", |s| s.workload.is_some().then(|| Scenario { workload: None, ..s.clone() }));
    type Knob = (&'static str, fn(&mut Scenario) -> Option<()>);
    let knobs: [Knob; 6] = [
        ("creates halved", |s| {
            let workload = s.workload.as_mut()?;
            workload.creates = half(workload.creates, 0)?;
            workload.deletes = workload.deletes.min(workload.creates);
            Some(())
        }),
        ("deletes halved", |s| {
            let workload = s.workload.as_mut()?;
            workload.deletes = half(workload.deletes, 0)?;
            Some(())
        }),
        ("producers halved", |s| {
            let data = s.data.as_mut()?;
            data.producers = half(data.producers, 1)?;
            Some(())
        }),
        ("batches per producer halved", |s| {
            let data = s.data.as_mut()?;
            data.batches_per_producer = half(data.batches_per_producer, 1)?;
            Some(())
        }),
        ("consumers halved", |s| {
            let data = s.data.as_mut()?;
            data.consumers = half(data.consumers, 0)?;
            Some(())
        }),
        ("group members halved", |s| {
            let group = s.group.as_mut()?;
            group.members = half(group.members, 1)?;
            Some(())
        }),
    ];
    for (what, knob) in knobs {
        prober.halve_while_failing(current, what, |s| {
            let mut smaller = s.clone();
            knob(&mut smaller).map(|()| smaller)
        });
    }
}

/// The simulation build's runner: one seed of `scenario` on a fresh
/// thread, its checker (a panic is `no-panics`, a hang `hung`).
#[cfg(madsim)]
pub fn run_in_sim(wall_clock_budget: std::time::Duration) -> impl Fn(Arc<Scenario>, u64) -> Outcome + Send + Sync {
    use crate::runner::{run_seed, SeedOutcome};
    use crate::summary::SeedFailure;
    move |scenario, seed| match run_seed(seed, wall_clock_budget, move || crate::run::run_scenario(scenario, seed)) {
        SeedOutcome::Finished(Ok((_, trace))) => Outcome { checker: None, detail: "passed".into(), trace_hash: Some(trace.hash()) },
        SeedOutcome::Finished(Err((violation, trace))) => {
            Outcome { checker: Some(violation.checker.to_string()), detail: violation.to_string(), trace_hash: Some(trace.hash()) }
        }
        unfinished => {
            let failure = SeedFailure::of_unfinished(&unfinished).expect("the finished seeds are matched above");
            Outcome { checker: Some(failure.checker), detail: failure.message, trace_hash: None }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// A probe over a synthetic predicate that counts its runs and stops at `runs_max`.
    fn probing<'a>(fails: impl Fn(&[usize]) -> bool + 'a, runs: &'a mut usize, runs_max: usize) -> impl FnMut(&[Vec<usize>]) -> Probe + 'a {
        move |candidates| {
            for (index, candidate) in candidates.iter().enumerate() {
                if *runs == runs_max {
                    return Probe::Spent;
                }
                *runs += 1;
                if fails(candidate) {
                    return Probe::Fails(index);
                }
            }
            Probe::Passes
        }
    }

    fn contains_all(needed: &'static [usize]) -> impl Fn(&[usize]) -> bool {
        move |subset| needed.iter().all(|item| subset.contains(item))
    }

    #[test]
    fn ddmin_finds_the_two_events_a_failure_needs_among_forty() {
        let mut runs = 0;
        let found = ddmin(40, probing(contains_all(&[3, 29]), &mut runs, 10_000));
        assert_eq!(found, vec![3, 29]);
        assert!(runs < 100, "{runs} runs for two needed events of forty");
    }

    #[test]
    fn ddmin_results_are_one_minimal_for_failures_that_need_any_of_several_combinations() {
        // Fails when it holds {a, b} for some listed pair, or any three of 30..36.
        let pairs: [(usize, usize); 3] = [(2, 17), (5, 9), (11, 23)];
        let fails = move |subset: &[usize]| {
            let set: BTreeSet<usize> = subset.iter().copied().collect();
            pairs.iter().any(|(a, b)| set.contains(a) && set.contains(b)) || set.range(30..36).count() >= 3
        };
        for len in [3, 7, 24, 36, 50] {
            let mut runs = 0;
            let found = ddmin(len, probing(fails, &mut runs, 100_000));
            let all: Vec<usize> = (0..len).collect();
            if !fails(&all) {
                continue;
            }
            assert!(fails(&found), "len {len}: {found:?} does not fail");
            for removed in 0..found.len() {
                let mut smaller = found.clone();
                smaller.remove(removed);
                assert!(!fails(&smaller), "len {len}: {found:?} is not 1-minimal: {smaller:?} fails too");
            }
        }
    }

    #[test]
    fn ddmin_returns_no_events_when_the_failure_needs_none() {
        let mut runs = 0;
        assert_eq!(ddmin(12, probing(|_| true, &mut runs, 100)), Vec::<usize>::new());
        assert_eq!(runs, 1, "the empty schedule is tried first");
    }

    #[test]
    fn ddmin_stops_at_its_run_budget_with_a_schedule_that_still_fails() {
        let fails = contains_all(&[1, 18, 33, 60]);
        for runs_max in [0, 1, 3, 7, 20] {
            let mut runs = 0;
            let found = ddmin(64, probing(&fails, &mut runs, runs_max));
            assert!(runs <= runs_max, "{runs} runs with a budget of {runs_max}");
            assert!(fails(&found), "budget {runs_max}: {found:?} no longer fails");
        }
        let mut runs = 0;
        assert_eq!(ddmin(64, probing(&fails, &mut runs, 1_000)), vec![1, 18, 33, 60], "with room it gets to the four");
    }

    #[test]
    fn split_covers_every_item_once_in_order() {
        let items: Vec<usize> = (10..17).collect();
        for parts in 1..=items.len() {
            let chunks = split(&items, parts);
            assert_eq!(chunks.len(), parts);
            assert!(chunks.iter().all(|chunk| !chunk.is_empty()));
            assert_eq!(chunks.concat(), items);
        }
    }

    #[test]
    fn the_default_output_sits_next_to_the_scenario() {
        assert_eq!(default_out(Path::new("scenarios/swarm.toml"), 7), PathBuf::from("scenarios/regressions/swarm-seed7-shrunk.toml"));
    }

    #[test]
    fn halving_stops_at_its_floor() {
        assert_eq!(half(40, 1), Some(20));
        assert_eq!(half(3, 1), Some(1));
        assert_eq!(half(1, 1), None);
        assert_eq!(half(1, 0), Some(0));
        assert_eq!(half(0, 0), None);
    }
}
