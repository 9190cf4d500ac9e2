//! Crash-consistency check of `keel-log` against an in-memory model.
//!
//! One seed drives a random mix of appends, flushes, reads, truncates,
//! segment removals, crashes (between and in the middle of operations) and
//! disk faults. After every recovery the log must hold exactly a prefix of
//! what the model says was written, at least up to what was durable, with no
//! record from before a completed truncate and no record that fails its
//! checksum. The same generator runs against real files (no crash injection)
//! so both Disk backends obey one contract.

use std::path::PathBuf;

use keel_io::{Disk, DiskError, NodeRng, RealDisk, SimDisk, SimDiskFaults, SimDiskStats};
use keel_log::{FlushPolicy, Log, LogConfig, LogError, Record};
use rand::Rng;

use crate::check::{random_faults, CheckFailure};
use crate::trace::Trace;

const LOG_DIR: &str = "partitions/check-0";
/// Attempts to reopen after a crash before giving up: each attempt can meet
/// an injected fault, but not forever.
const OPEN_ATTEMPTS_MAX: u32 = 20;

#[derive(Clone, Debug)]
pub enum Backend {
    /// SimDisk with seeded faults and crashes.
    Sim,
    /// Real files under `root`; "crash" becomes close-and-reopen.
    Real { root: PathBuf },
}

#[derive(Clone, Debug)]
pub struct LogCheckConfig {
    pub seed: u64,
    pub steps: usize,
    pub backend: Backend,
}

impl LogCheckConfig {
    pub fn sim(seed: u64) -> Self {
        LogCheckConfig { seed, steps: 300, backend: Backend::Sim }
    }
}

/// What a passing run did, so sweeps can prove the faults actually fired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogCheckReport {
    pub seed: u64,
    pub trace_hash: u64,
    pub appends: u64,
    pub recoveries: u64,
    pub mid_operation_crashes: u64,
    pub truncates: u64,
    pub failed_operations: u64,
    pub disk: SimDiskStats,
}

/// What the log must contain.
#[derive(Debug)]
struct Model {
    start_offset: u64,
    /// Payloads at offsets `start_offset..`; after a failed operation it may
    /// also hold records that are allowed, not required, to exist.
    payloads: Vec<Vec<u8>>,
    /// Every offset below this must survive any crash.
    durable_end: u64,
    /// After a failed segment removal the start may have moved up to here.
    start_offset_max: u64,
    /// After a failed destroy, the log may also have become empty at this new base.
    reset_to: Option<u64>,
}

impl Model {
    fn end(&self) -> u64 {
        self.start_offset + self.payloads.len() as u64
    }

    fn payload(&self, offset: u64) -> &[u8] {
        &self.payloads[usize::try_from(offset - self.start_offset).expect("offset in model")]
    }
}

struct Checker {
    config: LogCheckConfig,
    rng: NodeRng,
    disk: Disk,
    sim_disk: Option<SimDisk>,
    log_config: LogConfig,
    trace: Trace,
    step: usize,
    model: Model,
    serial: u64,
    report: LogCheckReport,
    armed_mid_operation_crash: bool,
}

type Checked<T> = Result<T, CheckFailure>;

fn is_ok_kind(error: &LogError) -> bool {
    matches!(error, LogError::Disk(DiskError { .. }))
}

impl Checker {
    fn fail(&self, message: String) -> CheckFailure {
        CheckFailure { check: "log-check", seed: self.config.seed, step: self.step, trace: self.trace.failed("log-check", self.step, &message), message }
    }

    fn record(&mut self, line: String) {
        let step = self.step;
        self.trace.record(format!("{step:04} {line}"));
    }

    fn next_payload(&mut self) -> Vec<u8> {
        self.serial += 1;
        let mut payload = format!("seed={} n={};", self.config.seed, self.serial).into_bytes();
        let extra = match self.rng.gen_range(0..100) {
            0..=59 => self.rng.gen_range(0..200),
            60..=94 => self.rng.gen_range(200..3_000),
            _ => self.rng.gen_range(3_000..20_000),
        };
        let start = payload.len();
        payload.resize(start + extra, 0);
        // Mostly random bytes, sometimes zeros: zero runs must not look like records.
        if self.rng.gen_bool(0.8) {
            self.rng.fill(&mut payload[start..]);
        }
        payload
    }

    async fn open(&mut self) -> Checked<Log> {
        for attempt in 1..=OPEN_ATTEMPTS_MAX {
            match Log::open(self.disk.clone(), LOG_DIR, self.log_config.clone()).await {
                Ok(log) => {
                    self.report.recoveries += 1;
                    self.record(format!("open ok start={} end={}", log.start_offset(), log.next_offset()));
                    return Ok(log);
                }
                Err(error) if is_ok_kind(&error) && self.sim_disk.is_some() => {
                    // A fault during recovery: the node crashes again and retries.
                    self.record(format!("open attempt {attempt} failed: {error}"));
                    self.sim_disk.as_ref().expect("sim").crash();
                }
                Err(error) => return Err(self.fail(format!("open failed: {error}"))),
            }
        }
        Err(self.fail(format!("open failed {OPEN_ATTEMPTS_MAX} times in a row")))
    }

    /// Reads every record and checks it against the model, then makes the
    /// model exact again: what was recovered is now all there is, all durable.
    async fn verify_recovered(&mut self, log: &Log) -> Checked<()> {
        let start = log.start_offset();
        let end = log.next_offset();
        if let Some(base) = self.model.reset_to.take() {
            if start == base && end == base {
                // The destroy completed before the crash: a new, empty log.
                self.model = Model { start_offset: base, payloads: Vec::new(), durable_end: base, start_offset_max: base, reset_to: None };
                self.record(format!("verified destroyed log restarted empty at {base}"));
                return Ok(());
            }
        }
        if start < self.model.start_offset || start > self.model.start_offset_max {
            return Err(self.fail(format!("recovered start offset {start}, expected {}..={}", self.model.start_offset, self.model.start_offset_max)));
        }
        if end < self.model.durable_end {
            return Err(self.fail(format!("lost durable records: recovered end {end} but offsets below {} were durable", self.model.durable_end)));
        }
        if end > self.model.end() {
            return Err(
                self.fail(format!("recovered end {end} beyond anything written (model end {}): truncated or foreign records reappeared", self.model.end()))
            );
        }
        let records = self.read_all(log, start, end).await?;
        for record in &records {
            if record.payload != self.model.payload(record.offset) {
                return Err(self.fail(format!("offset {} holds a record that was never written there", record.offset)));
            }
        }
        let keep_from = usize::try_from(start - self.model.start_offset).expect("fits");
        let keep_to = usize::try_from(end - self.model.start_offset).expect("fits");
        self.model.payloads = self.model.payloads[keep_from..keep_to].to_vec();
        self.model.start_offset = start;
        self.model.start_offset_max = start;
        self.model.durable_end = end;
        self.record(format!("verified {} records [{start}, {end})", records.len()));
        Ok(())
    }

    async fn read_all(&mut self, log: &Log, start: u64, end: u64) -> Checked<Vec<Record>> {
        let mut records = Vec::new();
        let mut next = start;
        while next < end {
            let bytes_max = self.rng.gen_range(1..64 * 1024);
            match log.read_from(next, bytes_max).await {
                Ok(batch) => {
                    if batch.is_empty() {
                        return Err(self.fail(format!("read_from({next}) returned nothing below end {end}")));
                    }
                    for (i, record) in batch.iter().enumerate() {
                        if record.offset != next + i as u64 {
                            return Err(self.fail(format!("read_from({next}) skipped: got offset {}", record.offset)));
                        }
                    }
                    next += batch.len() as u64;
                    records.extend(batch);
                }
                Err(error) => return Err(self.fail(format!("reading durable offset {next} failed: {error}"))),
            }
        }
        Ok(records)
    }

    /// A crash (sim) or clean close (real), then recovery and verification.
    async fn crash_and_recover(&mut self, log: Option<Log>, why: &str) -> Checked<Log> {
        drop(log);
        if let Some(sim) = &self.sim_disk {
            sim.crash();
        }
        self.armed_mid_operation_crash = false;
        self.record(format!("crash ({why})"));
        let log = self.open().await?;
        self.verify_recovered(&log).await?;
        Ok(log)
    }

    /// After an operation failed: what it might have done is now allowed, then the node crashes.
    async fn after_failure(&mut self, log: Option<Log>, op: &str, error: LogError) -> Checked<Log> {
        if !is_ok_kind(&error) || self.sim_disk.is_none() {
            return Err(self.fail(format!("{op} failed unexpectedly: {error}")));
        }
        self.report.failed_operations += 1;
        self.record(format!("{op} failed: {error}"));
        self.crash_and_recover(log, "after failed operation").await
    }

    fn after_success(&mut self, log: &Log) -> Checked<()> {
        if log.next_offset() != self.model.end() {
            return Err(self.fail(format!("log end {} but model end {}", log.next_offset(), self.model.end())));
        }
        // The log's claim of durability is what the crash test holds it to.
        self.model.durable_end = self.model.durable_end.max(log.flushed_offset());
        Ok(())
    }

    async fn step(&mut self, mut log: Log) -> Checked<Log> {
        let choice = self.rng.gen_range(0..100);
        match choice {
            0..=39 => log = self.append(log).await?,
            40..=49 => log = self.append_batch(log).await?,
            50..=61 => log = self.flush(log).await?,
            62..=73 => log = self.read(log).await?,
            74..=79 => log = self.truncate(log).await?,
            80..=82 => log = self.remove_segments_before(log).await?,
            83..=87 => log = self.crash_and_recover(Some(log), "between operations").await?,
            88..=89 => log = self.destroy_and_restart(log).await?,
            _ => log = self.arm_power_cut(log).await?,
        }
        Ok(log)
    }

    async fn append(&mut self, mut log: Log) -> Checked<Log> {
        let payload = self.next_payload();
        match log.append(&payload).await {
            Ok(offset) => {
                self.record(format!("append len={} -> {offset}", payload.len()));
                self.model.payloads.push(payload);
                self.report.appends += 1;
                self.after_success(&log)?;
            }
            Err(error) => {
                self.model.payloads.push(payload);
                log = self.after_failure(Some(log), "append", error).await?;
            }
        }
        Ok(log)
    }

    async fn append_batch(&mut self, mut log: Log) -> Checked<Log> {
        let count = self.rng.gen_range(1..20);
        let payloads: Vec<Vec<u8>> = (0..count).map(|_| self.next_payload()).collect();
        let slices: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        match log.append_batch(&slices).await {
            Ok(range) => {
                self.record(format!("append_batch n={count} -> {range:?}"));
                self.model.payloads.extend(payloads);
                self.report.appends += count;
                self.after_success(&log)?;
            }
            Err(error) => {
                self.model.payloads.extend(payloads);
                log = self.after_failure(Some(log), "append_batch", error).await?;
            }
        }
        Ok(log)
    }

    async fn flush(&mut self, mut log: Log) -> Checked<Log> {
        match log.flush().await {
            Ok(flushed) => {
                self.record(format!("flush -> {flushed}"));
                if flushed != self.model.end() {
                    return Err(self.fail(format!("flush returned {flushed}, log end is {}", self.model.end())));
                }
                self.after_success(&log)?;
            }
            Err(error) => log = self.after_failure(Some(log), "flush", error).await?,
        };
        Ok(log)
    }

    async fn read(&mut self, mut log: Log) -> Checked<Log> {
        let is_sim = self.sim_disk.is_some();
        let (start, end) = (self.model.start_offset, self.model.end());
        let offset = self.rng.gen_range(start..=end);
        match log.read(offset).await {
            Ok(record) => {
                let expected = (offset < end).then(|| self.model.payload(offset).to_vec());
                if record.as_ref().map(|r| &r.payload) != expected.as_ref() {
                    return Err(self.fail(format!("read({offset}) returned a record that differs from the model")));
                }
                self.record(format!("read {offset} -> {}", if expected.is_some() { "record" } else { "end" }));
            }
            Err(LogError::Disk(error)) if is_sim => {
                log = self.after_failure(Some(log), "read", LogError::Disk(error)).await?;
            }
            Err(error) => return Err(self.fail(format!("read({offset}) failed: {error}"))),
        }
        Ok(log)
    }

    async fn truncate(&mut self, mut log: Log) -> Checked<Log> {
        let (start, end) = (self.model.start_offset, self.model.end());
        let offset = self.rng.gen_range(start..=end);
        match log.truncate(offset).await {
            Ok(()) => {
                self.record(format!("truncate {offset}"));
                self.model.payloads.truncate(usize::try_from(offset - start).expect("fits"));
                self.model.durable_end = self.model.durable_end.min(offset);
                self.report.truncates += 1;
                self.after_success(&log)?;
            }
            Err(error) => {
                // Part of the truncate may have happened, but durable
                // records below the target must survive.
                self.model.durable_end = self.model.durable_end.min(offset);
                log = self.after_failure(Some(log), "truncate", error).await?;
            }
        }
        Ok(log)
    }

    async fn remove_segments_before(&mut self, mut log: Log) -> Checked<Log> {
        let (start, end) = (self.model.start_offset, self.model.end());
        let offset = self.rng.gen_range(start..=end);
        match log.remove_segments_before(offset).await {
            Ok(new_start) => {
                self.record(format!("remove_segments_before {offset} -> start {new_start}"));
                if new_start < start || new_start > offset.max(start) {
                    return Err(self.fail(format!("remove_segments_before({offset}) moved start to {new_start}")));
                }
                self.model.payloads.drain(..usize::try_from(new_start - start).expect("fits"));
                self.model.start_offset = new_start;
                self.model.start_offset_max = new_start;
                self.after_success(&log)?;
            }
            Err(error) => {
                self.model.start_offset_max = offset.max(start);
                log = self.after_failure(Some(log), "remove_segments_before", error).await?;
            }
        }
        Ok(log)
    }

    async fn destroy_and_restart(&mut self, mut log: Log) -> Checked<Log> {
        let new_base = self.model.end() + self.rng.gen_range(0..1_000);
        self.log_config.initial_offset = new_base;
        match log.destroy().await {
            Ok(()) => {
                self.record(format!("destroy, restart at {new_base}"));
                self.model.reset_to = Some(new_base);
                log = self.open().await?;
                self.verify_recovered(&log).await?;
                if log.start_offset() != new_base || log.next_offset() != new_base {
                    return Err(self.fail(format!("log after destroy is not empty at {new_base}")));
                }
            }
            Err(error) => {
                // Part of the log may be gone (a contiguous prefix stays) or all of it.
                self.model.reset_to = Some(new_base);
                self.model.durable_end = self.model.start_offset;
                log = self.after_failure(None, "destroy", error).await?;
            }
        }
        Ok(log)
    }

    async fn arm_power_cut(&mut self, mut log: Log) -> Checked<Log> {
        if let Some(sim) = &self.sim_disk {
            if !self.armed_mid_operation_crash {
                let ops = self.rng.gen_range(0..40);
                sim.freeze_after_ops(ops);
                self.armed_mid_operation_crash = true;
                self.report.mid_operation_crashes += 1;
                self.record(format!("power cut armed after {ops} disk operations"));
            }
        } else {
            log = self.crash_and_recover(Some(log), "clean reopen").await?;
        }
        Ok(log)
    }
}

pub(crate) fn random_log_config(rng: &mut NodeRng) -> LogConfig {
    let flush_policy = match rng.gen_range(0..3) {
        0 => FlushPolicy::Manual,
        1 => FlushPolicy::EveryAppend,
        _ => FlushPolicy::Threshold { unflushed_bytes_max: rng.gen_range(1..64 * 1024), unflushed_records_max: rng.gen_range(1..50) },
    };
    LogConfig {
        segment_bytes_max: rng.gen_range(256..32 * 1024),
        index_interval_bytes: rng.gen_range(1..4096),
        record_bytes_max: 64 * 1024,
        write_buffer_bytes_max: rng.gen_range(0..16 * 1024),
        // Bit flips are transient: enough re-reads make a false alarm vanishingly rare.
        read_retries_max: 12,
        read_chunk_bytes: rng.gen_range(16..8 * 1024),
        flush_policy,
        initial_offset: if rng.gen_bool(0.5) { 0 } else { rng.gen_range(1..1_000_000) },
    }
}

/// Runs one seed. `Ok` carries the trace hash; `Err` the first violation.
pub async fn check_log(config: LogCheckConfig) -> Result<(LogCheckReport, Trace), CheckFailure> {
    let mut rng = NodeRng::new(config.seed, 0, 0);
    let log_config = random_log_config(&mut rng);
    let (disk, sim_disk) = match &config.backend {
        Backend::Sim => {
            let sim = SimDisk::new(rng.fork(1));
            (Disk::Sim(sim.clone()), Some(sim))
        }
        Backend::Real { root } => (Disk::Real(RealDisk::new(root.clone())), None),
    };
    let faults = if sim_disk.is_some() { random_faults(&mut rng) } else { SimDiskFaults::default() };
    let initial_offset = log_config.initial_offset;
    let mut checker = Checker {
        config: config.clone(),
        rng: rng.fork(2),
        disk,
        sim_disk,
        log_config,
        trace: Trace::new(),
        step: 0,
        model: Model { start_offset: initial_offset, payloads: Vec::new(), durable_end: initial_offset, start_offset_max: initial_offset, reset_to: None },
        serial: 0,
        report: LogCheckReport { seed: config.seed, ..LogCheckReport::default() },
        armed_mid_operation_crash: false,
    };
    checker.record(format!("seed {} backend {:?} config {:?}", config.seed, config.backend, checker.log_config));
    checker.record(format!("faults {faults:?}"));
    let mut log = checker.open().await?;
    checker.verify_recovered(&log).await?;
    // Faults start after the first open so every seed exercises the log, not just its creation.
    if let Some(sim) = &checker.sim_disk {
        sim.set_faults(faults);
    }
    for step in 1..=config.steps {
        checker.step = step;
        log = checker.step(log).await?;
    }
    checker.step = config.steps + 1;
    // A final power loss: whatever the run did, durable data must come back.
    let log = checker.crash_and_recover(Some(log), "final").await?;
    drop(log);
    if let Some(sim) = &checker.sim_disk {
        checker.report.disk = sim.stats();
    }
    let disk_stats = checker.report.disk.clone();
    checker.record(format!("done {disk_stats:?}"));
    checker.report.trace_hash = checker.trace.hash();
    Ok((checker.report, checker.trace))
}
