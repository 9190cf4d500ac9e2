//! What a sweep reports: each seed's verdict folded into one summary (seeds
//! run and failed, a table per checker, the coverage table, simulated-time
//! produce latencies, throughput and time compression), printed for a
//! person or written as JSON for the machines that gather shards.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;

use crate::coverage::Coverage;
use crate::scenario::{ClientKind, Scenario};

/// Latencies above this (one simulated hour) are clamped into the top bucket.
const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Three significant digits: about 0.1% error per recorded value.
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// Simulated-time produce latency, from a batch's first send to its
/// acknowledgement (retries included), per acks setting.
#[derive(Clone, Debug)]
pub struct ProduceLatency {
    pub acks_all_us: Histogram<u64>,
    pub acks_leader_us: Histogram<u64>,
}

impl Default for ProduceLatency {
    fn default() -> Self {
        let histogram = || Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS).expect("valid histogram bounds");
        ProduceLatency { acks_all_us: histogram(), acks_leader_us: histogram() }
    }
}

impl ProduceLatency {
    pub fn record(&mut self, acks_all: bool, latency_us: u64) {
        let histogram = if acks_all { &mut self.acks_all_us } else { &mut self.acks_leader_us };
        histogram.saturating_record(latency_us.clamp(1, LATENCY_US_MAX));
    }

    pub fn merge(&mut self, other: &ProduceLatency) {
        self.acks_all_us.add(&other.acks_all_us).expect("histograms of the same bounds add");
        self.acks_leader_us.add(&other.acks_leader_us).expect("histograms of the same bounds add");
    }
}

/// What one passing seed adds to a sweep.
#[derive(Clone, Debug, Default)]
pub struct SeedStats {
    pub coverage: Coverage,
    /// Simulated time the seed ran, to the brokers' stop.
    pub simulated_ms: u64,
    /// Produced batches acknowledged (any acks setting).
    pub batches_acknowledged: u64,
    pub latency: ProduceLatency,
}

impl SeedStats {
    pub fn merge(&mut self, other: &SeedStats) {
        self.coverage.merge(&other.coverage);
        self.simulated_ms += other.simulated_ms;
        self.batches_acknowledged += other.batches_acknowledged;
        self.latency.merge(&other.latency);
    }
}

/// Why a seed failed: the checker that fired (or `hung`) and its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedFailure {
    pub checker: String,
    pub message: String,
}

/// The name a seed that never finished is reported under.
pub const HUNG: &str = "hung";

impl SeedFailure {
    /// A seed that panicked (`no-panics`) or hung; `None` for one that finished.
    pub fn of_unfinished<T>(outcome: &crate::runner::SeedOutcome<T>) -> Option<SeedFailure> {
        use crate::meta_check::checker::NO_PANICS;
        use crate::runner::SeedOutcome;
        match outcome {
            SeedOutcome::Finished(_) => None,
            SeedOutcome::Panicked(message) => {
                Some(SeedFailure { checker: NO_PANICS.to_string(), message: format!("checker `{NO_PANICS}` failed: a panic: {message}") })
            }
            SeedOutcome::Hung { wall_clock_budget } => {
                Some(SeedFailure { checker: HUNG.to_string(), message: format!("hung: no result within {wall_clock_budget:?} of wall-clock time") })
            }
        }
    }
}

/// The checkers that judge every seed of `scenario`, in the order
/// scenarios/README.md lists them.
pub fn checkers_of(scenario: &Scenario) -> Vec<&'static str> {
    use crate::data_check::checker as data;
    use crate::group_check::checker as group;
    use crate::meta_check::checker as meta;
    let mut checkers = vec![
        meta::ONE_LEADER_PER_TERM,
        meta::APPLIED_IN_ORDER,
        meta::IDENTICAL_APPLIED_LOGS,
        meta::NO_COMMITTED_COMMAND_LOST,
        meta::CONVERGENCE,
        meta::LIVENESS,
        meta::ACKED_CREATES_VISIBLE,
        meta::NO_PHANTOM_TOPICS,
    ];
    if scenario.workload.as_ref().is_some_and(|workload| workload.deletes > 0) {
        checkers.extend([meta::ACKED_DELETES_GONE, meta::NO_PHANTOM_DELETES, meta::DELETED_TOPIC_LOGS_REMOVED]);
    }
    checkers.extend([meta::NO_PANICS, meta::READY_AFTER_CONVERGENCE]);
    if let Some(data_spec) = &scenario.data {
        checkers.extend([
            data::LOST_WRITE,
            data::INCONSISTENT_OFFSETS,
            data::NON_MONOTONIC_READ,
            data::READ_ABOVE_HIGH_WATERMARK,
            data::REPLICA_DIVERGENCE,
            data::ONE_LEADER_PER_EPOCH,
            data::DATA_CONVERGENCE,
            data::DATA_LIVENESS,
        ]);
        if data_spec.client == ClientKind::Kafka && data_spec.idempotent {
            checkers.extend([data::NO_DUPLICATES, data::IDEMPOTENT_SEQUENCE]);
        }
    }
    if let Some(group_spec) = &scenario.group {
        checkers.extend([group::GROUP_COMMITS_DURABLE, group::GROUP_SINGLE_OWNER, group::GROUP_PROGRESS]);
        if group_spec.commit_gap_ms_max.is_some() {
            checkers.push(group::GROUP_STABLE_PROGRESS);
        }
    }
    checkers
}

/// A sweep's verdicts, folded.
#[derive(Debug)]
pub struct SweepSummary {
    /// The scenario file or built-in check swept.
    pub subject: String,
    pub seeds_first: u64,
    pub seeds_last: u64,
    /// `(index, count)` of `--shard`.
    pub shard: Option<(u64, u64)>,
    /// The seeds this sweep (this shard) was to run.
    pub seeds_planned: u64,
    pub seeds_run: u64,
    /// Sorted by seed.
    pub failures: Vec<(u64, SeedFailure)>,
    /// Over the passing seeds.
    pub passed: SeedStats,
    pub wall: Duration,
    /// Set when `--time-budget` ran out before every planned seed ran.
    pub time_budget: Option<Duration>,
    /// Every checker that judged each seed; empty for the built-in checks.
    pub checkers: Vec<&'static str>,
    /// Replay command of each failing seed.
    pub replays: BTreeMap<u64, String>,
}

impl SweepSummary {
    pub fn seeds_passed(&self) -> u64 {
        self.seeds_run - self.failures.len() as u64
    }

    pub fn budget_ran_out(&self) -> bool {
        self.seeds_run < self.seeds_planned
    }

    fn seeds_per_minute(&self) -> f64 {
        self.seeds_run as f64 * 60.0 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Simulated seconds per wall second, over the passing seeds.
    fn time_compression(&self) -> f64 {
        self.passed.simulated_ms as f64 / 1000.0 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Checker -> (seeds it failed, first failing seed), every judging
    /// checker listed, then any other that fired (a hang).
    fn by_checker(&self) -> Vec<(String, u64, Option<u64>)> {
        let mut rows: Vec<(String, u64, Option<u64>)> = self.checkers.iter().map(|name| (name.to_string(), 0, None)).collect();
        for (seed, failure) in &self.failures {
            let row = match rows.iter().position(|(name, _, _)| *name == failure.checker) {
                Some(index) => &mut rows[index],
                None => {
                    rows.push((failure.checker.clone(), 0, None));
                    rows.last_mut().expect("just pushed")
                }
            };
            row.1 += 1;
            row.2 = Some(row.2.map_or(*seed, |first: u64| first.min(*seed)));
        }
        rows
    }

    /// The summary for a person: counts, the checker table, latency and
    /// throughput, the coverage table, then each failure with its replay line.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let shard = self.shard.map_or(String::new(), |(index, count)| format!(" (shard {index}/{count})"));
        let _ = writeln!(text, "{} passed, {} failed{shard}", self.seeds_passed(), self.failures.len());
        if self.budget_ran_out() {
            let budget = self.time_budget.map_or(String::new(), |budget| format!(" of {}", humantime(budget)));
            let _ = writeln!(text, "time budget{budget} ran out: {} of {} seeds run, the rest not judged", self.seeds_run, self.seeds_planned);
        }
        let _ = writeln!(
            text,
            "{:.0} seeds/min, {:.1} s wall, {:.0} simulated s per wall s",
            self.seeds_per_minute(),
            self.wall.as_secs_f64(),
            self.time_compression()
        );
        let rows = self.by_checker();
        if !rows.is_empty() {
            let _ = writeln!(text, "checkers over {} seeds:", self.seeds_run);
            for (name, failed, first) in rows {
                let verdict = match first {
                    Some(first) => format!("FAILED {failed} (first seed {first})"),
                    None => "held".to_string(),
                };
                let _ = writeln!(text, "  {name:<36} {verdict}");
            }
        }
        for (label, histogram) in [("acks=all", &self.passed.latency.acks_all_us), ("acks=1", &self.passed.latency.acks_leader_us)] {
            if histogram.is_empty() {
                continue;
            }
            let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
            let _ = writeln!(
                text,
                "produce latency {label} (simulated ms, first send to ack): p50 {:.1}, p99 {:.1}, p99.9 {:.1}, max {:.1} over {} batches",
                ms(0.5),
                ms(0.99),
                ms(0.999),
                histogram.max() as f64 / 1000.0,
                histogram.len()
            );
        }
        if self.passed.simulated_ms > 0 && self.passed.batches_acknowledged > 0 {
            let per_second = self.passed.batches_acknowledged as f64 * 1000.0 / self.passed.simulated_ms as f64;
            let _ = writeln!(text, "throughput: {per_second:.1} batches acknowledged per simulated second");
        }
        if !self.passed.coverage.is_empty() {
            let _ = writeln!(text, "{}", self.passed.coverage.table(self.seeds_passed()));
        }
        for (seed, failure) in &self.failures {
            let replay = self.replays.get(seed).map_or(String::new(), |replay| format!("\n  replay: {replay}"));
            let _ = writeln!(text, "FAILED seed {seed}: {}{replay}", failure.message);
        }
        text
    }

    /// The summary as one JSON object (`--json`), for CI and shard gathering.
    pub fn to_json(&self) -> serde_json::Value {
        let latency = |histogram: &Histogram<u64>| {
            if histogram.is_empty() {
                return serde_json::Value::Null;
            }
            json!({
                "batches": histogram.len(),
                "p50_us": histogram.value_at_quantile(0.5),
                "p99_us": histogram.value_at_quantile(0.99),
                "p999_us": histogram.value_at_quantile(0.999),
                "max_us": histogram.max(),
            })
        };
        let coverage: serde_json::Map<String, serde_json::Value> =
            self.passed.coverage.rows().into_iter().map(|(event, count)| (event.to_string(), json!(count))).collect();
        let checkers: Vec<serde_json::Value> = self
            .by_checker()
            .into_iter()
            .map(|(name, failed, first)| json!({ "checker": name, "seeds_failed": failed, "first_failing_seed": first }))
            .collect();
        let failures: Vec<serde_json::Value> = self
            .failures
            .iter()
            .map(|(seed, failure)| json!({ "seed": seed, "checker": failure.checker, "message": failure.message, "replay": self.replays.get(seed) }))
            .collect();
        json!({
            "subject": self.subject,
            "seeds": { "first": self.seeds_first, "last": self.seeds_last },
            "shard": self.shard.map(|(index, count)| json!({ "index": index, "count": count })),
            "seeds_planned": self.seeds_planned,
            "seeds_run": self.seeds_run,
            "seeds_passed": self.seeds_passed(),
            "seeds_failed": self.failures.len(),
            "time_budget_ran_out": self.budget_ran_out(),
            "wall_s": self.wall.as_secs_f64(),
            "seeds_per_minute": self.seeds_per_minute(),
            "simulated_s": self.passed.simulated_ms as f64 / 1000.0,
            "simulated_s_per_wall_s": self.time_compression(),
            "batches_acknowledged": self.passed.batches_acknowledged,
            "produce_latency": {
                "acks_all": latency(&self.passed.latency.acks_all_us),
                "acks_leader": latency(&self.passed.latency.acks_leader_us),
            },
            "checkers": checkers,
            "coverage": coverage,
            "failures": failures,
        })
    }
}

/// `90s`, `10m`, `1h30m` (what `--time-budget` takes).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let wrong = || format!("`{text}` is not a duration; write a number with a unit, e.g. 90s, 10m or 1h30m");
    let mut total_s: u64 = 0;
    let mut digits = String::new();
    for character in text.trim().chars() {
        if character.is_ascii_digit() {
            digits.push(character);
            continue;
        }
        let unit_s = match character {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(wrong()),
        };
        let count: u64 = digits.parse().map_err(|_| wrong())?;
        total_s = count.checked_mul(unit_s).and_then(|part| total_s.checked_add(part)).ok_or_else(wrong)?;
        digits.clear();
    }
    if !digits.is_empty() || total_s == 0 {
        return Err(wrong());
    }
    Ok(Duration::from_secs(total_s))
}

fn humantime(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match (seconds / 3600, seconds % 3600 / 60, seconds % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// `--shard I/N`: shard I (0-based, as a Kubernetes Indexed Job's
/// completion index or a CI matrix index) of N.
pub fn parse_shard(text: &str) -> Result<(u64, u64), String> {
    let wrong = || format!("`{text}` is not a shard; write INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 0/8");
    let (index, count) = text.split_once('/').ok_or_else(wrong)?;
    let (index, count): (u64, u64) = (index.trim().parse().map_err(|_| wrong())?, count.trim().parse().map_err(|_| wrong())?);
    if count == 0 || index >= count {
        return Err(wrong());
    }
    Ok((index, count))
}

/// The seeds of `first..=last` that shard `index` of `count` runs: every
/// `count`-th, so shards of a range whose cost drifts with the seed stay even.
pub fn shard_seeds(first: u64, last: u64, shard: Option<(u64, u64)>) -> Vec<u64> {
    let (index, count) = shard.unwrap_or((0, 1));
    (first..=last).filter(|seed| (seed - first) % count == index).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_a_range_into_disjoint_parts_that_cover_it() {
        let count = 3;
        let mut all: Vec<u64> = (0..count).flat_map(|index| shard_seeds(10, 20, Some((index, count)))).collect();
        all.sort_unstable();
        assert_eq!(all, (10..=20).collect::<Vec<_>>());
        assert_eq!(shard_seeds(10, 20, Some((1, 3))), vec![11, 14, 17, 20]);
        assert_eq!(shard_seeds(5, 7, None), vec![5, 6, 7]);
    }

    #[test]
    fn bad_shards_and_durations_are_refused_with_the_form_to_write() {
        assert_eq!(parse_shard("2/8"), Ok((2, 8)));
        assert!(parse_shard("8/8").unwrap_err().contains("INDEX/COUNT"));
        assert!(parse_shard("1/0").is_err());
        assert!(parse_shard("x").is_err());
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("10").unwrap_err().contains("e.g. 90s"));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5d").is_err());
    }

    fn summary(failures: Vec<(u64, SeedFailure)>) -> SweepSummary {
        let mut passed = SeedStats { simulated_ms: 60_000, batches_acknowledged: 30, ..SeedStats::default() };
        passed.latency.record(true, 2_000);
        passed.latency.record(true, 40_000);
        passed.latency.record(false, 500);
        SweepSummary {
            subject: "scenarios/swarm.toml".into(),
            seeds_first: 1,
            seeds_last: 4,
            shard: None,
            seeds_planned: 4,
            seeds_run: 3,
            failures,
            passed,
            wall: Duration::from_secs(6),
            time_budget: Some(Duration::from_secs(60)),
            checkers: vec!["lost-write", "convergence"],
            replays: BTreeMap::from([(2, "ci/sim.sh run --seed 2".to_string())]),
        }
    }

    #[test]
    fn a_summary_tables_each_checker_and_reports_latency_throughput_and_an_unfinished_budget() {
        let failure = SeedFailure { checker: "lost-write".into(), message: "checker `lost-write` failed".into() };
        let summary = summary(vec![(2, failure)]);
        let text = summary.render();
        assert!(text.contains("2 passed, 1 failed"), "{text}");
        assert!(text.contains("3 of 4 seeds run"), "{text}");
        assert!(text.lines().any(|line| line.contains("lost-write") && line.contains("FAILED 1 (first seed 2)")), "{text}");
        assert!(text.lines().any(|line| line.contains("convergence") && line.ends_with("held")), "{text}");
        assert!(text.contains("produce latency acks=all"), "{text}");
        assert!(text.contains("replay: ci/sim.sh run --seed 2"), "{text}");
        let json = summary.to_json();
        assert_eq!(json["seeds_failed"], 1);
        assert_eq!(json["time_budget_ran_out"], true);
        assert_eq!(json["failures"][0]["checker"], "lost-write");
        assert_eq!(json["produce_latency"]["acks_all"]["batches"], 2);
        assert!(json["produce_latency"]["acks_all"]["max_us"].as_u64().expect("a number") >= 40_000);
        assert_eq!(json["checkers"][1]["seeds_failed"], 0);
    }

    #[test]
    fn a_checker_outside_the_list_that_fires_gets_a_row_of_its_own() {
        let hung = SeedFailure { checker: HUNG.into(), message: "hung".into() };
        let rows = summary(vec![(3, hung)]).by_checker();
        assert_eq!(rows.last(), Some(&(HUNG.to_string(), 1, Some(3))));
        assert_eq!(rows.len(), 3);
    }
}
