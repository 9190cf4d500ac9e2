//! Durable storage for the metadata Raft group, on the Disk seam.
//!
//! Layout under the store's directory:
//! - `log/`: a keel-log whose record offset is the Raft index; each record
//!   is a prost-encoded `eraftpb::Entry`.
//! - `hard-state`: two 64-byte slots (term, vote, commit, sequence, CRC32C),
//!   written alternately, one fsync per update: a torn write can only hit the
//!   slot being replaced, and the other still holds the previous state.
//! - `snapshot`: the latest snapshot (cluster id, metadata, state-machine
//!   bytes) behind a magic and a CRC32C, replaced atomically (write
//!   `snapshot.tmp`, fsync, rename, fsync the directory).
//!
//! Every mutating call is durable when it returns, so the Raft driver can send
//! the messages that depend on it. raft-rs reads through `RaftStorageView`, an
//! in-memory mirror updated only after the disk write succeeded.

use std::sync::{Arc, RwLock};

use keel_io::disk::join;
use keel_io::{Disk, DiskError, DiskErrorKind, DiskFile};
use keel_log::{Log, LogConfig, LogError};
use prost::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

const LOG_DIR: &str = "log";
const HARD_STATE_FILE: &str = "hard-state";
const SNAPSHOT_FILE: &str = "snapshot";
const SNAPSHOT_TMP_FILE: &str = "snapshot.tmp";
const HARD_STATE_MAGIC: &[u8; 8] = b"KEELHS01";
const SNAPSHOT_MAGIC: &[u8; 8] = b"KEELSNP1";
const SLOT_BYTES: usize = 64;
/// Re-reads of a small file whose checksum fails before it counts as corrupt.
const READ_RETRIES_MAX: u32 = 8;

#[derive(Clone, PartialEq, prost::Message)]
struct SnapshotFile {
    #[prost(string, tag = "1")]
    cluster_id: String,
    #[prost(message, optional, tag = "2")]
    metadata: Option<SnapshotMetadata>,
    #[prost(bytes = "vec", tag = "3")]
    data: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum RaftStoreError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("{file}: {reason}")]
    Corrupt { file: String, reason: String },
    #[error("{dir} belongs to cluster `{found}`, not `{expected}`; use this cluster's data directory or an empty one")]
    WrongCluster { dir: String, found: String, expected: String },
    #[error("{dir} was written by a cluster with voters {found:?}, but the configured voters are {expected:?}")]
    WrongVoters { dir: String, found: Vec<u64>, expected: Vec<u64> },
    #[error("raft store refused {what}: {reason}")]
    Refused { what: &'static str, reason: String },
    #[error("raft store {dir} is unusable after an earlier failure ({cause}); reopen it to recover from disk")]
    Poisoned { dir: String, cause: String },
}

/// What raft-rs sees; a mirror of what is durable.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RaftDurableState {
    pub hard_state: HardState,
    pub snapshot_metadata: SnapshotMetadata,
    pub snapshot_data: Vec<u8>,
    /// Entries from `snapshot_metadata.index + 1`, consecutive.
    pub entries: Vec<Entry>,
}

impl RaftDurableState {
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_metadata.index
    }

    pub fn last_index(&self) -> u64 {
        self.snapshot_metadata.index + self.entries.len() as u64
    }

    /// The term of `index`, if it is the snapshot's or a held entry's.
    pub fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.snapshot_metadata.index {
            return Some(self.snapshot_metadata.term);
        }
        let offset = index.checked_sub(self.snapshot_metadata.index + 1)?;
        self.entries.get(usize::try_from(offset).ok()?).map(|e| e.term)
    }

    fn check_invariants(&self) {
        for (i, entry) in self.entries.iter().enumerate() {
            assert_eq!(entry.index, self.snapshot_metadata.index + 1 + i as u64, "entries must be consecutive");
        }
        assert!(self.hard_state.commit >= self.snapshot_metadata.index, "commit below the snapshot");
        assert!(self.hard_state.commit <= self.last_index(), "commit beyond the last entry");
    }
}

/// raft-rs's view of the store (cheap to clone).
#[derive(Clone, Debug)]
pub struct RaftStorageView {
    state: Arc<RwLock<RaftDurableState>>,
}

impl Storage for RaftStorageView {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let state = self.state.read().expect("raft state lock");
        let conf_state = state.snapshot_metadata.conf_state.clone().unwrap_or_default();
        Ok(RaftState::new(state.hard_state.clone(), conf_state))
    }

    fn entries(&self, low: u64, high: u64, max_size: impl Into<Option<u64>>, _context: GetEntriesContext) -> raft::Result<Vec<Entry>> {
        let state = self.state.read().expect("raft state lock");
        let first = state.snapshot_index() + 1;
        if low < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > state.last_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let from = usize::try_from(low - first).expect("fits");
        let to = usize::try_from(high - first).expect("fits");
        let mut entries = state.entries[from..to].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let state = self.state.read().expect("raft state lock");
        if index < state.snapshot_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        state.term_of(index).ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.state.read().expect("raft state lock").snapshot_index() + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.state.read().expect("raft state lock").last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let state = self.state.read().expect("raft state lock");
        if state.snapshot_index() < request_index {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(state.snapshot_metadata.clone());
        snapshot.data = state.snapshot_data.clone();
        Ok(snapshot)
    }
}

pub struct RaftStore {
    disk: Disk,
    dir: String,
    cluster_id: String,
    log_config: LogConfig,
    log: Option<Log>,
    hard_state_file: DiskFile,
    hard_state_sequence: u64,
    state: Arc<RwLock<RaftDurableState>>,
    poisoned: Option<String>,
}

fn encode_hard_state_slot(hard_state: &HardState, sequence: u64) -> Vec<u8> {
    let mut slot = Vec::with_capacity(SLOT_BYTES);
    slot.extend_from_slice(HARD_STATE_MAGIC);
    slot.extend_from_slice(&sequence.to_le_bytes());
    slot.extend_from_slice(&hard_state.term.to_le_bytes());
    slot.extend_from_slice(&hard_state.vote.to_le_bytes());
    slot.extend_from_slice(&hard_state.commit.to_le_bytes());
    let crc = crc32c::crc32c(&slot);
    slot.extend_from_slice(&crc.to_le_bytes());
    slot.resize(SLOT_BYTES, 0);
    slot
}

fn decode_hard_state_slot(slot: &[u8]) -> Option<(u64, HardState)> {
    if slot.len() < 44 || &slot[0..8] != HARD_STATE_MAGIC {
        return None;
    }
    let u64_at = |at: usize| u64::from_le_bytes(slot[at..at + 8].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(slot[40..44].try_into().expect("4 bytes"));
    if crc != crc32c::crc32c(&slot[0..40]) {
        return None;
    }
    let hard_state = HardState { term: u64_at(16), vote: u64_at(24), commit: u64_at(32) };
    Some((u64_at(8), hard_state))
}

fn encode_snapshot_file(file: &SnapshotFile) -> Vec<u8> {
    let body = file.encode_to_vec();
    let mut bytes = Vec::with_capacity(16 + body.len());
    bytes.extend_from_slice(SNAPSHOT_MAGIC);
    bytes.extend_from_slice(&u32::try_from(body.len()).expect("snapshot below 4 GiB").to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    bytes
}

fn decode_snapshot_file(bytes: &[u8]) -> Result<SnapshotFile, String> {
    if bytes.len() < 16 || &bytes[0..8] != SNAPSHOT_MAGIC {
        return Err("no KEELSNP1 magic: not a keel snapshot".into());
    }
    let len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    let body = bytes.get(16..16 + len).ok_or("snapshot shorter than its header says")?;
    if crc32c::crc32c(body) != crc {
        return Err("snapshot checksum mismatch".into());
    }
    SnapshotFile::decode(body).map_err(|e| format!("snapshot does not decode: {e}"))
}

/// Reads a whole small file, re-reading while `valid` rejects it (read faults
/// are often transient); returns the last read either way.
async fn read_whole(file: &DiskFile, valid: impl Fn(&[u8]) -> bool) -> Result<Vec<u8>, DiskError> {
    let len = usize::try_from(file.len().await?).expect("file fits memory");
    let mut bytes = file.read_at(0, len).await?;
    for _ in 0..READ_RETRIES_MAX {
        if valid(&bytes) {
            break;
        }
        bytes = file.read_at(0, len).await?;
    }
    Ok(bytes)
}

fn sorted(mut voters: Vec<u64>) -> Vec<u64> {
    voters.sort_unstable();
    voters
}

impl RaftStore {
    /// Opens (or creates) the store for `cluster_id` with `voters`. Refuses a
    /// directory written for another cluster or another set of voters.
    pub async fn open(disk: Disk, dir: &str, cluster_id: &str, voters: &[u64], log_config: LogConfig) -> Result<RaftStore, RaftStoreError> {
        disk.create_dir_all(dir).await?;
        let names = disk.list(dir).await?;
        if names.iter().any(|n| n == SNAPSHOT_TMP_FILE) {
            // An interrupted snapshot replacement; the old snapshot is intact.
            disk.remove(&join(dir, SNAPSHOT_TMP_FILE)).await?;
        }
        let snapshot = if names.iter().any(|n| n == SNAPSHOT_FILE) {
            let path = join(dir, SNAPSHOT_FILE);
            let file = disk.open(&path).await?;
            let bytes = read_whole(&file, |b| decode_snapshot_file(b).is_ok()).await?;
            let snapshot = decode_snapshot_file(&bytes).map_err(|reason| RaftStoreError::Corrupt { file: path, reason })?;
            if snapshot.cluster_id != cluster_id {
                return Err(RaftStoreError::WrongCluster { dir: dir.into(), found: snapshot.cluster_id, expected: cluster_id.into() });
            }
            let found = sorted(snapshot.metadata.as_ref().and_then(|m| m.conf_state.as_ref()).map(|c| c.voters.clone()).unwrap_or_default());
            if found != sorted(voters.to_vec()) {
                return Err(RaftStoreError::WrongVoters { dir: dir.into(), found, expected: sorted(voters.to_vec()) });
            }
            snapshot
        } else {
            let mut metadata = SnapshotMetadata::default();
            metadata.set_conf_state(ConfState::from((sorted(voters.to_vec()), vec![])));
            let snapshot = SnapshotFile { cluster_id: cluster_id.into(), metadata: Some(metadata), data: Vec::new() };
            write_snapshot_file(&disk, dir, &snapshot).await?;
            snapshot
        };
        let metadata = snapshot.metadata.clone().unwrap_or_default();
        let (hard_state_file, hard_state_sequence, mut hard_state) = open_hard_state(&disk, dir).await?;
        hard_state.commit = hard_state.commit.max(metadata.index);
        let mut store = RaftStore {
            disk,
            dir: dir.into(),
            cluster_id: cluster_id.into(),
            log_config,
            log: None,
            hard_state_file,
            hard_state_sequence,
            state: Arc::new(RwLock::new(RaftDurableState::default())),
            poisoned: None,
        };
        let entries = store.open_log(&metadata).await?;
        let state = RaftDurableState { hard_state, snapshot_metadata: metadata, snapshot_data: snapshot.data, entries };
        if state.hard_state.commit > state.last_index() {
            return Err(RaftStoreError::Corrupt {
                file: join(dir, HARD_STATE_FILE),
                reason: format!("commit index {} beyond the last log index {}", state.hard_state.commit, state.last_index()),
            });
        }
        state.check_invariants();
        *store.state.write().expect("raft state lock") = state;
        Ok(store)
    }

    /// Opens the entry log and returns the entries after the snapshot. A log
    /// that does not continue the snapshot (a snapshot was installed and the
    /// crash came before the old log was reset) is reset now.
    async fn open_log(&mut self, metadata: &SnapshotMetadata) -> Result<Vec<Entry>, RaftStoreError> {
        let log_dir = join(&self.dir, LOG_DIR);
        let first = metadata.index + 1;
        let mut log = self.open_entry_log(first).await?;
        let mut continues = log.start_offset() <= first && log.next_offset() >= first;
        if continues && log.start_offset() <= metadata.index && metadata.index > 0 {
            let at_snapshot = read_entry(&log, &log_dir, metadata.index).await?;
            continues = at_snapshot.term == metadata.term;
        }
        if !continues {
            log.destroy().await?;
            log = self.open_entry_log(first).await?;
        }
        let mut entries = Vec::new();
        let mut next = first.max(log.start_offset());
        while next < log.next_offset() {
            for record in log.read_from(next, 1024 * 1024).await? {
                let entry = Entry::decode(record.payload.as_slice())
                    .map_err(|e| RaftStoreError::Corrupt { file: log_dir.clone(), reason: format!("record {} is not a raft entry: {e}", record.offset) })?;
                if entry.index != record.offset {
                    return Err(RaftStoreError::Corrupt {
                        file: log_dir.clone(),
                        reason: format!("record {} holds raft index {}", record.offset, entry.index),
                    });
                }
                entries.push(entry);
                next = record.offset + 1;
            }
        }
        self.log = Some(log);
        Ok(entries)
    }

    /// The entry log; an empty one (new, or just destroyed) starts at `first`.
    async fn open_entry_log(&self, first: u64) -> Result<Log, RaftStoreError> {
        let config = LogConfig { initial_offset: first, ..self.log_config.clone() };
        Ok(Log::open(self.disk.clone(), &join(&self.dir, LOG_DIR), config).await?)
    }

    /// raft-rs's handle on the store.
    pub fn storage(&self) -> RaftStorageView {
        RaftStorageView { state: Arc::clone(&self.state) }
    }

    /// A copy of the durable state (tests, checkers, snapshots for peers).
    pub fn durable_state(&self) -> RaftDurableState {
        self.state.read().expect("raft state lock").clone()
    }

    fn check_usable(&self) -> Result<(), RaftStoreError> {
        match &self.poisoned {
            Some(cause) => Err(RaftStoreError::Poisoned { dir: self.dir.clone(), cause: cause.clone() }),
            None => Ok(()),
        }
    }

    fn poison_on_error<T>(&mut self, result: Result<T, RaftStoreError>) -> Result<T, RaftStoreError> {
        if let Err(error) = &result {
            if self.poisoned.is_none() && !matches!(error, RaftStoreError::Refused { .. }) {
                self.poisoned = Some(error.to_string());
            }
        }
        result
    }

    /// Appends `entries` (consecutive indexes), first replacing any conflicting
    /// suffix. Durable (one fsync) when it returns.
    pub async fn append(&mut self, entries: &[Entry]) -> Result<(), RaftStoreError> {
        self.check_usable()?;
        if entries.is_empty() {
            return Ok(());
        }
        let current = self.durable_state();
        let first = entries[0].index;
        let refuse = |reason: String| Err(RaftStoreError::Refused { what: "append", reason });
        if entries.iter().enumerate().any(|(i, e)| e.index != first + i as u64) {
            return refuse("entry indexes are not consecutive".into());
        }
        if first <= current.hard_state.commit {
            return refuse(format!("index {first} would overwrite committed index {}", current.hard_state.commit));
        }
        if first > current.last_index() + 1 {
            return refuse(format!("index {first} leaves a gap after last index {}", current.last_index()));
        }
        let result = self.append_unchecked(entries, &current).await;
        self.poison_on_error(result)
    }

    async fn append_unchecked(&mut self, entries: &[Entry], current: &RaftDurableState) -> Result<(), RaftStoreError> {
        let first = entries[0].index;
        let log = self.log.as_mut().expect("log open");
        if first <= current.last_index() {
            log.truncate(first).await?;
        }
        let payloads: Vec<Vec<u8>> = entries.iter().map(|e| e.encode_to_vec()).collect();
        let slices: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let range = log.append_batch(&slices).await?;
        assert_eq!(range.start, first, "log offset must equal raft index");
        log.flush().await?;
        let mut state = self.state.write().expect("raft state lock");
        let keep = usize::try_from(first - state.snapshot_index() - 1).expect("fits");
        state.entries.truncate(keep);
        state.entries.extend_from_slice(entries);
        state.check_invariants();
        Ok(())
    }

    /// Persists term, vote and commit. Durable when it returns.
    pub async fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), RaftStoreError> {
        self.check_usable()?;
        let current = self.durable_state();
        if hard_state.commit > current.last_index() || hard_state.commit < current.snapshot_index() {
            return Err(RaftStoreError::Refused {
                what: "set_hard_state",
                reason: format!("commit {} outside [{}, {}]", hard_state.commit, current.snapshot_index(), current.last_index()),
            });
        }
        let result = self.write_hard_state(hard_state).await;
        self.poison_on_error(result)
    }

    async fn write_hard_state(&mut self, hard_state: &HardState) -> Result<(), RaftStoreError> {
        let sequence = self.hard_state_sequence + 1;
        let slot_offset = (sequence % 2) * SLOT_BYTES as u64;
        self.hard_state_file.write_at(slot_offset, &encode_hard_state_slot(hard_state, sequence)).await?;
        self.hard_state_file.sync().await?;
        self.hard_state_sequence = sequence;
        self.state.write().expect("raft state lock").hard_state = hard_state.clone();
        Ok(())
    }

    /// Makes a snapshot of the applied state at `index` (at most the commit
    /// index) and drops the log before it. Durable when it returns.
    pub async fn compact(&mut self, index: u64, state_machine_bytes: Vec<u8>) -> Result<(), RaftStoreError> {
        self.check_usable()?;
        let current = self.durable_state();
        if index <= current.snapshot_index() || index > current.hard_state.commit {
            return Err(RaftStoreError::Refused {
                what: "compact",
                reason: format!("index {index} outside ({}, commit {}]", current.snapshot_index(), current.hard_state.commit),
            });
        }
        let mut metadata = current.snapshot_metadata.clone();
        metadata.index = index;
        metadata.term = current.term_of(index).expect("committed entry is held");
        let result = self.install(metadata, state_machine_bytes, true).await;
        self.poison_on_error(result)
    }

    /// Installs a snapshot received from the leader. Entries after it are kept
    /// only if the log holds the snapshot's last entry with the same term.
    pub async fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), RaftStoreError> {
        self.check_usable()?;
        let current = self.durable_state();
        let metadata = snapshot.get_metadata().clone();
        if metadata.index <= current.snapshot_index() {
            return Err(RaftStoreError::Refused {
                what: "apply_snapshot",
                reason: format!("snapshot index {} is not newer than {}", metadata.index, current.snapshot_index()),
            });
        }
        let keeps_log = current.term_of(metadata.index) == Some(metadata.term);
        if metadata.index <= current.hard_state.commit && !keeps_log {
            // Committed entries are final: a snapshot that contradicts them is
            // a safety bug elsewhere, never something to install.
            return Err(RaftStoreError::Refused {
                what: "apply_snapshot",
                reason: format!("snapshot {}@term {} contradicts committed entries (commit {})", metadata.index, metadata.term, current.hard_state.commit),
            });
        }
        let result = self.install(metadata, snapshot.data.clone(), keeps_log).await;
        self.poison_on_error(result)
    }

    async fn install(&mut self, metadata: SnapshotMetadata, data: Vec<u8>, keeps_log: bool) -> Result<(), RaftStoreError> {
        let file = SnapshotFile { cluster_id: self.cluster_id.clone(), metadata: Some(metadata.clone()), data: data.clone() };
        // The snapshot is durable before the log changes: a crash in between
        // is repaired by `open_log`, which resets a log that does not continue it.
        write_snapshot_file(&self.disk, &self.dir, &file).await?;
        let first = metadata.index + 1;
        if keeps_log {
            self.log.as_mut().expect("log open").remove_segments_before(first).await?;
        } else {
            let log = self.log.take().expect("log open");
            log.destroy().await?;
            self.log = Some(self.open_entry_log(first).await?);
        }
        let current = self.durable_state();
        let mut hard_state = current.hard_state.clone();
        hard_state.commit = hard_state.commit.max(metadata.index);
        let entries = if keeps_log { current.entries.iter().filter(|e| e.index > metadata.index).cloned().collect() } else { Vec::new() };
        {
            let mut state = self.state.write().expect("raft state lock");
            state.snapshot_metadata = metadata;
            state.snapshot_data = data;
            state.entries = entries;
            state.hard_state.commit = hard_state.commit;
        }
        if hard_state != current.hard_state {
            self.write_hard_state(&hard_state).await?;
        }
        self.state.read().expect("raft state lock").check_invariants();
        Ok(())
    }
}

async fn read_entry(log: &Log, log_dir: &str, index: u64) -> Result<Entry, RaftStoreError> {
    let record = log.read(index).await?.ok_or_else(|| RaftStoreError::Corrupt { file: log_dir.into(), reason: format!("entry {index} missing") })?;
    Entry::decode(record.payload.as_slice())
        .map_err(|e| RaftStoreError::Corrupt { file: log_dir.into(), reason: format!("entry {index} does not decode: {e}") })
}

async fn write_snapshot_file(disk: &Disk, dir: &str, snapshot: &SnapshotFile) -> Result<(), RaftStoreError> {
    let tmp = join(dir, SNAPSHOT_TMP_FILE);
    let file = match disk.create(&tmp).await {
        Err(DiskError { kind: DiskErrorKind::AlreadyExists, .. }) => {
            disk.remove(&tmp).await?;
            disk.create(&tmp).await?
        }
        other => other?,
    };
    file.write_at(0, &encode_snapshot_file(snapshot)).await?;
    file.sync().await?;
    disk.rename(&tmp, &join(dir, SNAPSHOT_FILE)).await?;
    disk.sync_dir(dir).await?;
    Ok(())
}

/// Opens or creates the hard-state file; returns it with the newest valid slot.
async fn open_hard_state(disk: &Disk, dir: &str) -> Result<(DiskFile, u64, HardState), RaftStoreError> {
    let path = join(dir, HARD_STATE_FILE);
    let file = match disk.open(&path).await {
        Ok(file) => file,
        Err(DiskError { kind: DiskErrorKind::NotFound, .. }) => {
            let file = disk.create(&path).await?;
            file.sync().await?;
            disk.sync_dir(dir).await?;
            return Ok((file, 0, HardState::default()));
        }
        Err(error) => return Err(error.into()),
    };
    // A slot that passes its CRC is genuine, so the newest valid slot seen in
    // any read wins: a bit flipped in transit must not roll back a vote.
    let len = usize::try_from(file.len().await?).expect("hard-state file fits memory");
    let mut newest: Option<(u64, HardState)> = None;
    let mut saw_all_zero = false;
    for _ in 0..=READ_RETRIES_MAX {
        let bytes = file.read_at(0, len).await?;
        saw_all_zero |= bytes.iter().all(|b| *b == 0);
        let mut all_written_valid = true;
        for slot in bytes.chunks(SLOT_BYTES).take(2) {
            match decode_hard_state_slot(slot) {
                Some((sequence, hard_state)) => {
                    if newest.as_ref().is_none_or(|(best, _)| sequence > *best) {
                        newest = Some((sequence, hard_state));
                    }
                }
                None => all_written_valid &= slot.iter().all(|b| *b == 0),
            }
        }
        if all_written_valid {
            break;
        }
    }
    match newest {
        Some((sequence, hard_state)) => Ok((file, sequence, hard_state)),
        None if saw_all_zero => Ok((file, 0, HardState::default())),
        None => Err(RaftStoreError::Corrupt { file: path, reason: "no valid hard-state slot".into() }),
    }
}
