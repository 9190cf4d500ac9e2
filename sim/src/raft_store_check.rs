//! Crash-consistency check of the metadata Raft store (`keel_meta::raft_store`).
//!
//! One seed drives appends (with conflicting suffixes), hard-state updates,
//! compactions and snapshot installs on SimDisk with crashes between and in
//! the middle of operations and disk faults. After every successful operation
//! the store's view must equal the model exactly (it is durable on return).
//! After a crash the recovered store must equal the state before or after the
//! interrupted operation (for an append: any prefix of the new entries beyond
//! the surviving old ones), never anything else: a lost vote or a lost
//! acknowledged entry breaks Raft's safety.

use keel_io::{Disk, DiskError, NodeRng, SimDisk, SimDiskStats};
use keel_log::LogError;
use keel_meta::raft_store::{RaftDurableState, RaftStore, RaftStoreError};
use raft::eraftpb::{Entry, HardState, Snapshot, SnapshotMetadata};
use rand::{Rng, RngCore};

use crate::check::{random_faults, CheckFailure};
use crate::log_check::random_log_config;
use crate::trace::Trace;

const STORE_DIR: &str = "meta/raft";
const CLUSTER_ID: &str = "raft-store-check";
const VOTERS: [u64; 3] = [1, 2, 3];
const OPEN_ATTEMPTS_MAX: u32 = 20;

/// The durable state in comparable form.
#[derive(Clone, Debug, PartialEq, Eq)]
struct StoreModel {
    snapshot_index: u64,
    snapshot_term: u64,
    snapshot_data: Vec<u8>,
    term: u64,
    vote: u64,
    commit: u64,
    /// (term, data) for indexes snapshot_index + 1 ..
    entries: Vec<(u64, Vec<u8>)>,
}

impl StoreModel {
    fn from_durable(state: &RaftDurableState) -> StoreModel {
        StoreModel {
            snapshot_index: state.snapshot_metadata.index,
            snapshot_term: state.snapshot_metadata.term,
            snapshot_data: state.snapshot_data.clone(),
            term: state.hard_state.term,
            vote: state.hard_state.vote,
            commit: state.hard_state.commit,
            entries: state.entries.iter().map(|e| (e.term, e.data.clone())).collect(),
        }
    }

    fn last_index(&self) -> u64 {
        self.snapshot_index + self.entries.len() as u64
    }

    fn term_of(&self, index: u64) -> u64 {
        if index == self.snapshot_index {
            self.snapshot_term
        } else {
            self.entries[usize::try_from(index - self.snapshot_index - 1).expect("fits")].0
        }
    }

    fn max_term(&self) -> u64 {
        self.entries.iter().map(|(t, _)| *t).chain([self.snapshot_term, self.term]).max().unwrap_or(0)
    }
}

/// A state recovery may land on: exact, except that only a prefix of at
/// least `entries_min` of `model.entries` need be present.
#[derive(Clone, Debug)]
struct Candidate {
    model: StoreModel,
    entries_min: usize,
}

impl Candidate {
    fn exact(model: StoreModel) -> Candidate {
        let entries_min = model.entries.len();
        Candidate { model, entries_min }
    }

    fn admits(&self, recovered: &StoreModel) -> bool {
        let m = &self.model;
        let same_snapshot =
            (m.snapshot_index, m.snapshot_term, &m.snapshot_data) == (recovered.snapshot_index, recovered.snapshot_term, &recovered.snapshot_data);
        let same_hard_state = (m.term, m.vote, m.commit.max(m.snapshot_index)) == (recovered.term, recovered.vote, recovered.commit);
        let n = recovered.entries.len();
        same_snapshot && same_hard_state && n >= self.entries_min && n <= m.entries.len() && m.entries[..n] == recovered.entries[..]
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftStoreCheckReport {
    pub seed: u64,
    pub trace_hash: u64,
    pub appends: u64,
    pub compactions: u64,
    pub snapshot_installs: u64,
    pub recoveries: u64,
    pub failed_operations: u64,
    pub disk: SimDiskStats,
}

struct Checker {
    seed: u64,
    rng: NodeRng,
    disk: Disk,
    sim: SimDisk,
    log_config: keel_log::LogConfig,
    trace: Trace,
    step: usize,
    model: StoreModel,
    report: RaftStoreCheckReport,
    armed_power_cut: bool,
}

type Checked<T> = Result<T, CheckFailure>;

fn is_fault(error: &RaftStoreError) -> bool {
    matches!(error, RaftStoreError::Disk(_) | RaftStoreError::Log(LogError::Disk(DiskError { .. })))
}

impl Checker {
    fn fail(&self, message: String) -> CheckFailure {
        CheckFailure { check: "raft-store-check", seed: self.seed, step: self.step, trace: self.trace.failed("raft-store-check", self.step, &message), message }
    }

    fn record(&mut self, line: String) {
        let step = self.step;
        self.trace.record(format!("{step:04} {line}"));
    }

    fn data(&mut self) -> Vec<u8> {
        let mut data = vec![0u8; self.rng.gen_range(0..300)];
        self.rng.fill_bytes(&mut data);
        data
    }

    async fn open(&mut self) -> Checked<RaftStore> {
        for attempt in 1..=OPEN_ATTEMPTS_MAX {
            match RaftStore::open(self.disk.clone(), STORE_DIR, CLUSTER_ID, &VOTERS, self.log_config.clone()).await {
                Ok(store) => {
                    self.report.recoveries += 1;
                    return Ok(store);
                }
                Err(error) if is_fault(&error) => {
                    self.record(format!("open attempt {attempt} failed: {error}"));
                    self.sim.crash();
                }
                Err(error) => return Err(self.fail(format!("open failed: {error}"))),
            }
        }
        Err(self.fail(format!("open failed {OPEN_ATTEMPTS_MAX} times in a row")))
    }

    async fn crash_and_recover(&mut self, store: Option<RaftStore>, candidates: Vec<Candidate>, why: &str) -> Checked<RaftStore> {
        drop(store);
        self.sim.crash();
        self.armed_power_cut = false;
        self.record(format!("crash ({why})"));
        let store = self.open().await?;
        let recovered = StoreModel::from_durable(&store.durable_state());
        match candidates.iter().find(|c| c.admits(&recovered)) {
            Some(_) => {
                self.record(format!(
                    "recovered snapshot={} commit={} last={} term={} vote={}",
                    recovered.snapshot_index,
                    recovered.commit,
                    recovered.last_index(),
                    recovered.term,
                    recovered.vote
                ));
                self.model = recovered;
                Ok(store)
            }
            None => Err(self.fail(format!(
                "recovered state is none of the allowed ones.\nrecovered: {}\nallowed: {}",
                describe(&recovered),
                candidates.iter().map(|c| format!("{} (at least {} entries)", describe(&c.model), c.entries_min)).collect::<Vec<_>>().join(" | ")
            ))),
        }
    }

    fn check_live(&self, store: &RaftStore) -> Checked<()> {
        let live = StoreModel::from_durable(&store.durable_state());
        if live != self.model {
            return Err(self.fail(format!("live store differs from the model: {} vs {}", describe(&live), describe(&self.model))));
        }
        Ok(())
    }

    /// Runs one operation; on a fault the node crashes and recovery must land
    /// on one of `candidates_on_failure`.
    async fn outcome(
        &mut self,
        store: RaftStore,
        what: &str,
        result: Result<(), RaftStoreError>,
        after: StoreModel,
        candidates_on_failure: Vec<Candidate>,
    ) -> Checked<RaftStore> {
        match result {
            Ok(()) => {
                self.record(format!("{what} ok"));
                self.model = after;
                self.check_live(&store)?;
                Ok(store)
            }
            Err(error) if is_fault(&error) => {
                self.report.failed_operations += 1;
                self.record(format!("{what} failed: {error}"));
                self.crash_and_recover(Some(store), candidates_on_failure, "after failed operation").await
            }
            Err(error) => Err(self.fail(format!("{what} failed unexpectedly: {error}"))),
        }
    }

    async fn step(&mut self, mut store: RaftStore) -> Checked<RaftStore> {
        let before = self.model.clone();
        let choice = self.rng.gen_range(0..100);
        match choice {
            0..=39 => store = self.append(store, &before).await?,
            40..=59 => store = self.set_hard_state(store, &before).await?,
            60..=69 if before.commit > before.snapshot_index => store = self.compact(store, &before).await?,
            70..=77 => store = self.install_snapshot(store, &before).await?,
            78..=79 if before.commit > before.snapshot_index => store = self.refuse_append_over_committed(store, &before).await?,
            80..=81 if before.commit > before.snapshot_index => store = self.refuse_contradicting_snapshot(store, &before).await?,
            82..=89 => store = self.crash_between_operations(store, &before).await?,
            _ => self.arm_power_cut(),
        }
        Ok(store)
    }

    async fn append(&mut self, mut store: RaftStore, before: &StoreModel) -> Checked<RaftStore> {
        let first = self.rng.gen_range(before.commit + 1..=before.last_index() + 1);
        let count = self.rng.gen_range(1..=4u64);
        let term = before.term_of(first - 1).max(before.max_term() + self.rng.gen_range(0..=1));
        let mut entries = Vec::new();
        for i in 0..count {
            entries.push(Entry { index: first + i, term, data: self.data(), ..Entry::default() });
        }
        let mut after = before.clone();
        let keep = usize::try_from(first - before.snapshot_index - 1).expect("fits");
        after.entries.truncate(keep);
        after.entries.extend(entries.iter().map(|e| (e.term, e.data.clone())));
        let result = store.append(&entries).await;
        self.report.appends += 1;
        let candidates = vec![Candidate { model: before.clone(), entries_min: keep }, Candidate { model: after.clone(), entries_min: keep }];
        store = self.outcome(store, &format!("append {first}..{} term {term}", first + count), result, after, candidates).await?;
        Ok(store)
    }

    async fn set_hard_state(&mut self, mut store: RaftStore, before: &StoreModel) -> Checked<RaftStore> {
        // Fields are evaluated in the order written: the seed draws term, vote, commit.
        let hard_state = HardState {
            term: before.term + self.rng.gen_range(0..=1),
            vote: self.rng.gen_range(0..=3),
            commit: self.rng.gen_range(before.commit..=before.last_index()),
        };
        let after = StoreModel { term: hard_state.term, vote: hard_state.vote, commit: hard_state.commit, ..before.clone() };
        let result = store.set_hard_state(&hard_state).await;
        let candidates = vec![Candidate::exact(before.clone()), Candidate::exact(after.clone())];
        let what = format!("hard state term {} vote {} commit {}", hard_state.term, hard_state.vote, hard_state.commit);
        store = self.outcome(store, &what, result, after, candidates).await?;
        Ok(store)
    }

    async fn compact(&mut self, mut store: RaftStore, before: &StoreModel) -> Checked<RaftStore> {
        let index = self.rng.gen_range(before.snapshot_index + 1..=before.commit);
        let data = self.data();
        let mut after = before.clone();
        after.entries.drain(..usize::try_from(index - before.snapshot_index).expect("fits"));
        after.snapshot_term = before.term_of(index);
        after.snapshot_index = index;
        after.snapshot_data = data.clone();
        let result = store.compact(index, data).await;
        self.report.compactions += 1;
        let candidates = vec![Candidate::exact(before.clone()), Candidate::exact(after.clone())];
        store = self.outcome(store, &format!("compact to {index}"), result, after, candidates).await?;
        Ok(store)
    }

    async fn install_snapshot(&mut self, mut store: RaftStore, before: &StoreModel) -> Checked<RaftStore> {
        // Raft installs a snapshot that continues the log, or one past the commit index.
        let matching = before.last_index() > before.snapshot_index && self.rng.gen_bool(0.5);
        let index = if matching {
            self.rng.gen_range(before.snapshot_index + 1..=before.last_index())
        } else {
            self.rng.gen_range(before.commit + 1..=before.last_index() + 5)
        };
        let term = if matching { before.term_of(index) } else { before.max_term() + 1 };
        let data = self.data();
        let mut after = before.clone();
        if matching {
            after.entries.drain(..usize::try_from(index - before.snapshot_index).expect("fits"));
        } else {
            after.entries.clear();
        }
        after.snapshot_index = index;
        after.snapshot_term = term;
        after.snapshot_data = data.clone();
        after.commit = before.commit.max(index);
        let mut metadata = SnapshotMetadata { index, term, ..SnapshotMetadata::default() };
        metadata.set_conf_state(raft::eraftpb::ConfState::from((VOTERS.to_vec(), vec![])));
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(metadata);
        snapshot.data = data;
        let result = store.apply_snapshot(&snapshot).await;
        self.report.snapshot_installs += 1;
        let candidates = vec![Candidate::exact(before.clone()), Candidate::exact(after.clone())];
        let what = format!("install snapshot {index} term {term} ({})", if matching { "log continues it" } else { "log reset" });
        store = self.outcome(store, &what, result, after, candidates).await?;
        Ok(store)
    }

    async fn refuse_append_over_committed(&mut self, mut store: RaftStore, before: &StoreModel) -> Checked<RaftStore> {
        // Bad input: overwriting a committed entry is refused, and the store stays usable.
        let entry = Entry { index: before.commit, term: before.max_term(), ..Entry::default() };
        match store.append(&[entry]).await {
            Err(RaftStoreError::Refused { .. }) => self.record(format!("append at committed {} refused", before.commit)),
            Err(error) if is_fault(&error) => unreachable!("refusal happens before any disk access: {error}"),
            other => return Err(self.fail(format!("append over committed index {} was not refused: {other:?}", before.commit))),
        }
        self.check_live(&store)?;
        Ok(store)
    }

    async fn refuse_contradicting_snapshot(&mut self, mut store: RaftStore, before: &StoreModel) -> Checked<RaftStore> {
        // Bad input: a snapshot contradicting committed entries is refused.
        let metadata = SnapshotMetadata { index: before.commit, term: before.max_term() + 1, ..SnapshotMetadata::default() };
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(metadata);
        match store.apply_snapshot(&snapshot).await {
            Err(RaftStoreError::Refused { .. }) => self.record(format!("contradicting snapshot at {} refused", before.commit)),
            other => return Err(self.fail(format!("contradicting snapshot at {} was not refused: {other:?}", before.commit))),
        }
        self.check_live(&store)?;
        Ok(store)
    }

    async fn crash_between_operations(&mut self, mut store: RaftStore, before: &StoreModel) -> Checked<RaftStore> {
        let candidates = vec![Candidate::exact(before.clone())];
        store = self.crash_and_recover(Some(store), candidates, "between operations").await?;
        Ok(store)
    }

    /// Arms a power cut after a random number of disk operations (once at a time).
    fn arm_power_cut(&mut self) {
        if !self.armed_power_cut {
            let ops = self.rng.gen_range(0..30);
            self.sim.freeze_after_ops(ops);
            self.armed_power_cut = true;
            self.record(format!("power cut armed after {ops} disk operations"));
        }
    }
}

fn describe(model: &StoreModel) -> String {
    format!(
        "snapshot {}@{} ({} B) term {} vote {} commit {} entries {:?}",
        model.snapshot_index,
        model.snapshot_term,
        model.snapshot_data.len(),
        model.term,
        model.vote,
        model.commit,
        model.entries.iter().map(|(t, d)| format!("t{t}/{}B", d.len())).collect::<Vec<_>>()
    )
}

/// Runs one seed of the Raft store check.
pub async fn check_raft_store(seed: u64, steps: usize) -> Result<(RaftStoreCheckReport, Trace), CheckFailure> {
    let mut rng = NodeRng::new(seed, 0, 0);
    let log_config = random_log_config(&mut rng);
    let sim = SimDisk::new(rng.fork(1));
    let faults = random_faults(&mut rng);
    let mut checker = Checker {
        seed,
        rng: rng.fork(2),
        disk: Disk::Sim(sim.clone()),
        sim,
        log_config,
        trace: Trace::new(),
        step: 0,
        model: StoreModel { snapshot_index: 0, snapshot_term: 0, snapshot_data: Vec::new(), term: 0, vote: 0, commit: 0, entries: Vec::new() },
        report: RaftStoreCheckReport { seed, ..RaftStoreCheckReport::default() },
        armed_power_cut: false,
    };
    checker.record(format!("seed {seed} faults {faults:?}"));
    let mut store = checker.open().await?;
    checker.check_live(&store)?;
    checker.sim.set_faults(faults);
    for step in 1..=steps {
        checker.step = step;
        store = checker.step(store).await?;
    }
    checker.step = steps + 1;
    let candidates = vec![Candidate::exact(checker.model.clone())];
    let store = checker.crash_and_recover(Some(store), candidates, "final").await?;
    drop(store);
    checker.report.disk = checker.sim.stats();
    let stats = checker.report.disk.clone();
    checker.record(format!("done {stats:?}"));
    checker.report.trace_hash = checker.trace.hash();
    Ok((checker.report, checker.trace))
}
