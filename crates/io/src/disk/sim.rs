//! SimDisk: an in-memory disk per simulated node, harsher than a real one.
//!
//! Each file keeps its durable bytes (as of its last successful sync) and its
//! current bytes plus the list of operations since that sync. Each directory
//! keeps its durable entries (as of its last `sync_dir`). A crash (process
//! kill or power loss) drops every unsynced byte and every unsynced directory
//! entry change; with `torn_write_on_crash_probability` it may first keep a
//! prefix of the unsynced operations, the last one torn at a 4 KiB sector
//! boundary. All randomness comes from the seed given at construction, so a
//! run replays exactly. Every fault is off unless a scenario turns it on.
//!
//! Modelled after TigerBeetle's `src/testing/storage.zig` and turmoil's fs.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;

use super::{check_relative_path, join, parent_dir, DiskError, DiskErrorKind, DiskOp, DiskResult};
use crate::rng::NodeRng;

/// Torn writes tear at this granularity, like a disk's atomic write unit.
pub const SECTOR_BYTES: u64 = 4096;

/// Fault switches for one SimDisk. `Default` turns everything off.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimDiskFaults {
    /// Chance that a crash keeps part of the unsynced writes, the last one torn.
    pub torn_write_on_crash_probability: f64,
    /// Chance that a file sync fails with EIO; the file's unsynced data is then gone.
    pub sync_eio_probability: f64,
    /// Chance that a write fails with ENOSPC; nothing is written.
    pub write_enospc_probability: f64,
    /// Chance that a read returns one flipped bit (the stored bytes stay intact).
    pub read_bit_flip_probability: f64,
    /// Per-operation latency range in microseconds, `(min, max)` inclusive.
    pub latency_us: Option<(u64, u64)>,
}

#[derive(Clone, Debug)]
enum PendingOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen { len: u64 },
}

#[derive(Clone, Debug, Default)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<PendingOp>,
}

fn apply_write(content: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let offset = usize::try_from(offset).expect("offset fits memory");
    let end = offset + data.len();
    if content.len() < end {
        content.resize(end, 0);
    }
    content[offset..end].copy_from_slice(data);
}

fn apply_set_len(content: &mut Vec<u8>, len: u64) {
    content.resize(usize::try_from(len).expect("length fits memory"), 0);
}

#[derive(Debug)]
struct SimDiskState {
    rng: NodeRng,
    faults: SimDiskFaults,
    /// Bumped by every crash; handles from an older incarnation are stale.
    incarnation: u64,
    inodes: BTreeMap<u64, Inode>,
    inode_next: u64,
    /// Directories that exist (created durably by `create_dir_all`).
    dirs: BTreeSet<String>,
    /// Live namespace: path -> inode.
    live: BTreeMap<String, u64>,
    /// Per directory, the entries as of its last `sync_dir`.
    durable_entries: BTreeMap<String, BTreeMap<String, u64>>,
    /// When set, the disk stops answering after this many more operations, as
    /// if the node lost power in the middle of whatever it was doing.
    ops_until_freeze: Option<u64>,
    frozen: bool,
    stats: SimDiskStats,
    /// The exclusive lock's holder: (token of its guard, node id).
    lock_holder: Option<(u64, u64)>,
    lock_token_next: u64,
}

/// What happened on a SimDisk, for traces and for checking that faults fired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimDiskStats {
    pub ops: u64,
    pub crashes: u64,
    pub torn_crashes: u64,
    pub sync_eio: u64,
    pub write_enospc: u64,
    pub read_bit_flips: u64,
}

/// A seeded in-memory disk. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct SimDisk {
    state: Arc<Mutex<SimDiskState>>,
}

/// Compact: file contents would drown any failure message.
impl std::fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.state.try_lock() {
            Ok(state) => {
                f.debug_struct("SimDisk").field("files", &state.live.len()).field("incarnation", &state.incarnation).field("frozen", &state.frozen).finish()
            }
            Err(_) => f.write_str("SimDisk { <locked> }"),
        }
    }
}

impl SimDisk {
    pub fn new(rng: NodeRng) -> Self {
        let mut dirs = BTreeSet::new();
        dirs.insert(String::new());
        SimDisk {
            state: Arc::new(Mutex::new(SimDiskState {
                rng,
                faults: SimDiskFaults::default(),
                incarnation: 0,
                inodes: BTreeMap::new(),
                inode_next: 1,
                dirs,
                live: BTreeMap::new(),
                durable_entries: BTreeMap::new(),
                ops_until_freeze: None,
                frozen: false,
                stats: SimDiskStats::default(),
                lock_holder: None,
                lock_token_next: 1,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimDiskState> {
        self.state.lock().expect("SimDisk lock poisoned")
    }

    pub fn set_faults(&self, faults: SimDiskFaults) {
        self.lock().faults = faults;
    }

    pub fn stats(&self) -> SimDiskStats {
        self.lock().stats.clone()
    }

    /// After `ops` more operations the disk fails every call, as if power was
    /// cut mid-operation; `crash` then applies the power loss and thaws it.
    pub fn freeze_after_ops(&self, ops: u64) {
        self.lock().ops_until_freeze = Some(ops);
    }

    pub fn is_frozen(&self) -> bool {
        self.lock().frozen
    }

    /// Power loss or process kill: every unsynced write and directory change is
    /// dropped (or, with torn writes on, partly kept), and all open handles go stale.
    pub fn crash(&self) {
        let mut state = self.lock();
        let state = &mut *state;
        state.stats.crashes += 1;
        state.incarnation += 1;
        state.frozen = false;
        state.ops_until_freeze = None;
        // Every process using the disk died with the power: so did the lock's holder.
        state.lock_holder = None;
        let torn_probability = state.faults.torn_write_on_crash_probability;
        for inode in state.inodes.values_mut() {
            let mut content = inode.durable.clone();
            if !inode.pending.is_empty() && torn_probability > 0.0 && state.rng.gen_bool(torn_probability) {
                state.stats.torn_crashes += 1;
                // Keep ops[..kept] whole and tear ops[kept] (a write) at a sector boundary.
                let kept = state.rng.gen_range(0..inode.pending.len());
                for op in &inode.pending[..kept] {
                    match op {
                        PendingOp::Write { offset, data } => apply_write(&mut content, *offset, data),
                        PendingOp::SetLen { len } => apply_set_len(&mut content, *len),
                    }
                }
                if let PendingOp::Write { offset, data } = &inode.pending[kept] {
                    let write_end = offset + data.len() as u64;
                    let first_boundary = (offset / SECTOR_BYTES + 1) * SECTOR_BYTES;
                    let boundaries: Vec<u64> = (0..).map(|i| first_boundary + i * SECTOR_BYTES).take_while(|b| *b < write_end).collect();
                    if !boundaries.is_empty() {
                        let cut = boundaries[state.rng.gen_range(0..boundaries.len())];
                        let kept_bytes = usize::try_from(cut - offset).expect("tear fits memory");
                        apply_write(&mut content, *offset, &data[..kept_bytes]);
                        // Some file systems extend the size before the data lands: zeros follow.
                        if state.rng.gen_bool(0.5) {
                            let len = (content.len() as u64).max(write_end);
                            apply_set_len(&mut content, len);
                        }
                    }
                }
            }
            inode.durable = content.clone();
            inode.current = content;
            inode.pending.clear();
        }
        let mut live = BTreeMap::new();
        for (dir, entries) in &state.durable_entries {
            for (name, inode) in entries {
                live.insert(join(dir, name), *inode);
            }
        }
        state.live = live;
        let referenced: BTreeSet<u64> = state.live.values().copied().collect();
        state.inodes.retain(|id, _| referenced.contains(id));
    }

    /// The in-memory counterpart of `flock`: one holder at a time; a second
    /// node on this disk is refused. Released when the guard is dropped
    /// (madsim drops a killed node's tasks, as process death closes the
    /// fd) or by `crash`. Not a disk operation: it neither counts toward
    /// `freeze_after_ops` nor draws from the RNG, so schedules replay as before.
    pub fn lock_exclusive(&self, node_id: u64) -> DiskResult<SimLock> {
        let mut state = self.lock();
        if let Some((_, holder_node_id)) = state.lock_holder {
            return Err(DiskError::new(DiskOp::Lock, super::LOCK_FILE, DiskErrorKind::Locked { holder: format!("node {holder_node_id}") }));
        }
        let token = state.lock_token_next;
        state.lock_token_next += 1;
        state.lock_holder = Some((token, node_id));
        Ok(SimLock { disk: self.clone(), token })
    }

    /// The node holding the exclusive lock, if any.
    pub fn lock_holder(&self) -> Option<u64> {
        self.lock().lock_holder.map(|(_, node_id)| node_id)
    }

    /// Counts an operation, applies the freeze countdown, and returns the
    /// latency to sleep (outside the lock).
    fn begin(&self, op: DiskOp, path: &str) -> DiskResult<Duration> {
        let mut state = self.lock();
        if state.frozen {
            return Err(DiskError::new(op, path, DiskErrorKind::Io("disk lost power".into())));
        }
        if let Some(remaining) = state.ops_until_freeze {
            if remaining == 0 {
                state.frozen = true;
                state.ops_until_freeze = None;
                return Err(DiskError::new(op, path, DiskErrorKind::Io("disk lost power".into())));
            }
            state.ops_until_freeze = Some(remaining - 1);
        }
        state.stats.ops += 1;
        let latency = match state.faults.latency_us {
            Some((min, max)) => Duration::from_micros(state.rng.gen_range(min..=max)),
            None => Duration::ZERO,
        };
        Ok(latency)
    }

    async fn enter(&self, op: DiskOp, path: &str) -> DiskResult<()> {
        let latency = self.begin(op, path)?;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        Ok(())
    }

    fn check_dir(state: &SimDiskState, op: DiskOp, dir: &str) -> DiskResult<()> {
        if state.dirs.contains(dir) {
            Ok(())
        } else {
            Err(DiskError::new(op, dir, DiskErrorKind::NotFound))
        }
    }

    pub async fn create_dir_all(&self, dir: &str) -> DiskResult<()> {
        check_relative_path(DiskOp::CreateDirAll, dir)?;
        self.enter(DiskOp::CreateDirAll, dir).await?;
        let mut state = self.lock();
        let mut prefix = String::new();
        for part in dir.split('/') {
            prefix = join(&prefix, part);
            if state.live.contains_key(&prefix) {
                return Err(DiskError::new(DiskOp::CreateDirAll, dir, DiskErrorKind::AlreadyExists));
            }
            state.dirs.insert(prefix.clone());
        }
        Ok(())
    }

    pub async fn create(&self, path: &str) -> DiskResult<SimFile> {
        check_relative_path(DiskOp::Create, path)?;
        self.enter(DiskOp::Create, path).await?;
        let mut state = self.lock();
        Self::check_dir(&state, DiskOp::Create, parent_dir(path))?;
        if state.live.contains_key(path) || state.dirs.contains(path) {
            return Err(DiskError::new(DiskOp::Create, path, DiskErrorKind::AlreadyExists));
        }
        let inode = state.inode_next;
        state.inode_next += 1;
        state.inodes.insert(inode, Inode::default());
        state.live.insert(path.to_string(), inode);
        Ok(SimFile { disk: self.clone(), path: Arc::new(path.to_string()), inode, incarnation: state.incarnation })
    }

    pub async fn open(&self, path: &str) -> DiskResult<SimFile> {
        check_relative_path(DiskOp::Open, path)?;
        self.enter(DiskOp::Open, path).await?;
        let state = self.lock();
        match state.live.get(path) {
            Some(inode) => Ok(SimFile { disk: self.clone(), path: Arc::new(path.to_string()), inode: *inode, incarnation: state.incarnation }),
            None => Err(DiskError::new(DiskOp::Open, path, DiskErrorKind::NotFound)),
        }
    }

    pub async fn list(&self, dir: &str) -> DiskResult<Vec<String>> {
        if !dir.is_empty() {
            check_relative_path(DiskOp::List, dir)?;
        }
        self.enter(DiskOp::List, dir).await?;
        let state = self.lock();
        Self::check_dir(&state, DiskOp::List, dir)?;
        let start = dir_range_start(dir);
        let files = state.live.range::<str, _>((Bound::Included(start.as_str()), Bound::Unbounded)).map(|(path, _)| path);
        let mut names: Vec<String> = in_dir(files, &start, dir).map(|path| entry_name(path).to_string()).collect();
        let dirs = state.dirs.range::<str, _>((Bound::Included(start.as_str()), Bound::Unbounded));
        names.extend(in_dir(dirs, &start, dir).filter(|d| !d.is_empty()).map(|d| entry_name(d).to_string()));
        names.sort();
        Ok(names)
    }

    pub async fn rename(&self, from: &str, to: &str) -> DiskResult<()> {
        check_relative_path(DiskOp::Rename, from)?;
        check_relative_path(DiskOp::Rename, to)?;
        self.enter(DiskOp::Rename, from).await?;
        let mut state = self.lock();
        Self::check_dir(&state, DiskOp::Rename, parent_dir(to))?;
        let inode = state.live.remove(from).ok_or_else(|| DiskError::new(DiskOp::Rename, from, DiskErrorKind::NotFound))?;
        state.live.insert(to.to_string(), inode);
        Ok(())
    }

    pub async fn remove(&self, path: &str) -> DiskResult<()> {
        check_relative_path(DiskOp::Remove, path)?;
        self.enter(DiskOp::Remove, path).await?;
        let mut state = self.lock();
        match state.live.remove(path) {
            Some(_) => Ok(()),
            None => Err(DiskError::new(DiskOp::Remove, path, DiskErrorKind::NotFound)),
        }
    }

    pub async fn sync_dir(&self, dir: &str) -> DiskResult<()> {
        if !dir.is_empty() {
            check_relative_path(DiskOp::SyncDir, dir)?;
        }
        self.enter(DiskOp::SyncDir, dir).await?;
        let mut state = self.lock();
        Self::check_dir(&state, DiskOp::SyncDir, dir)?;
        let start = dir_range_start(dir);
        let files = state.live.range::<str, _>((Bound::Included(start.as_str()), Bound::Unbounded)).map(|(path, _)| path);
        let entries: BTreeMap<String, u64> = in_dir(files, &start, dir).map(|path| (entry_name(path).to_string(), state.live[path])).collect();
        state.durable_entries.insert(dir.to_string(), entries);
        Ok(())
    }

    /// Every live file and its current length, for tests and traces.
    pub fn files(&self) -> Vec<(String, u64)> {
        let state = self.lock();
        state.live.iter().map(|(path, inode)| (path.clone(), state.inodes[inode].current.len() as u64)).collect()
    }

    /// Fault injection for bad-input tests: overwrite bytes durably, as if a
    /// foreign program had written them.
    pub fn corrupt_durably(&self, path: &str, offset: u64, data: &[u8]) -> bool {
        let mut state = self.lock();
        let Some(inode) = state.live.get(path).copied() else { return false };
        let inode = state.inodes.get_mut(&inode).expect("live inode");
        apply_write(&mut inode.durable, offset, data);
        apply_write(&mut inode.current, offset, data);
        true
    }
}

/// A held `SimDisk::lock_exclusive`. A guard from before a crash releases
/// nothing: its lock already went with the crash (and may be someone else's now).
pub struct SimLock {
    disk: SimDisk,
    token: u64,
}

impl std::fmt::Debug for SimLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimLock").field("token", &self.token).finish()
    }
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut state = self.disk.lock();
        if state.lock_holder.is_some_and(|(token, _)| token == self.token) {
            state.lock_holder = None;
        }
    }
}

/// An open SimDisk file.
#[derive(Clone, Debug)]
pub struct SimFile {
    disk: SimDisk,
    path: Arc<String>,
    inode: u64,
    incarnation: u64,
}

impl SimFile {
    pub fn path(&self) -> &str {
        &self.path
    }

    /// A delay drawn from the disk's seeded generator (for BUGGIFY points).
    pub(crate) fn delay_draw_ms(&self, range: std::ops::RangeInclusive<u64>) -> u64 {
        self.disk.lock().rng.gen_range(range)
    }

    /// Runs `f` on this file's inode, failing if the handle predates a crash.
    fn with_inode<T>(&self, op: DiskOp, f: impl FnOnce(&mut Inode, &mut NodeRng, &SimDiskFaults, &mut SimDiskStats) -> DiskResult<T>) -> DiskResult<T> {
        let mut state = self.disk.lock();
        let state = &mut *state;
        if state.incarnation != self.incarnation {
            return Err(DiskError::new(op, &self.path, DiskErrorKind::StaleHandle));
        }
        // A removed-but-open file still exists until the crash reclaims it.
        let inode = state.inodes.get_mut(&self.inode).expect("open handle keeps its inode until a crash");
        f(inode, &mut state.rng, &state.faults, &mut state.stats)
    }

    /// One pread: up to `len` bytes at `offset` and whether it met the end
    /// of the file. Short before the end only at a BUGGIFY point, as a real
    /// pread may be.
    pub async fn pread(&self, offset: u64, len: usize) -> DiskResult<(Vec<u8>, bool)> {
        self.disk.enter(DiskOp::Read, &self.path).await?;
        self.with_inode(DiskOp::Read, |inode, rng, faults, stats| {
            let start = usize::try_from(offset).expect("offset fits memory").min(inode.current.len());
            let end = start.saturating_add(len).min(inode.current.len());
            let mut data = inode.current[start..end].to_vec();
            let mut end_of_file = end == inode.current.len() && data.len() < len;
            if data.len() > 1 && crate::buggify!("disk: short read") {
                data.truncate(rng.gen_range(1..data.len()));
                end_of_file = false;
            }
            if !data.is_empty() && faults.read_bit_flip_probability > 0.0 && rng.gen_bool(faults.read_bit_flip_probability) {
                let bit = rng.gen_range(0..data.len() * 8);
                data[bit / 8] ^= 1 << (bit % 8);
                stats.read_bit_flips += 1;
            }
            Ok((data, end_of_file))
        })
    }

    pub async fn write_at(&self, offset: u64, data: &[u8]) -> DiskResult<()> {
        self.disk.enter(DiskOp::Write, &self.path).await?;
        let path = Arc::clone(&self.path);
        self.with_inode(DiskOp::Write, |inode, rng, faults, stats| {
            if faults.write_enospc_probability > 0.0 && rng.gen_bool(faults.write_enospc_probability) {
                stats.write_enospc += 1;
                return Err(DiskError::new(DiskOp::Write, &path, DiskErrorKind::NoSpace));
            }
            apply_write(&mut inode.current, offset, data);
            inode.pending.push(PendingOp::Write { offset, data: data.to_vec() });
            Ok(())
        })
    }

    pub async fn sync(&self) -> DiskResult<()> {
        self.disk.enter(DiskOp::Sync, &self.path).await?;
        let path = Arc::clone(&self.path);
        self.with_inode(DiskOp::Sync, |inode, rng, faults, stats| {
            if faults.sync_eio_probability > 0.0 && rng.gen_bool(faults.sync_eio_probability) {
                // fsyncgate: the kernel dropped the dirty pages; they are gone.
                stats.sync_eio += 1;
                inode.current = inode.durable.clone();
                inode.pending.clear();
                return Err(DiskError::new(DiskOp::Sync, &path, DiskErrorKind::Io("EIO on fsync".into())));
            }
            // The ops since the last sync, replayed onto the durable bytes:
            // copying the whole file instead made every fsync of a growing
            // log cost its full length.
            for op in inode.pending.drain(..) {
                match op {
                    PendingOp::Write { offset, data } => apply_write(&mut inode.durable, offset, &data),
                    PendingOp::SetLen { len } => apply_set_len(&mut inode.durable, len),
                }
            }
            assert_eq!(inode.durable.len(), inode.current.len(), "after a sync the durable bytes are the current ones");
            Ok(())
        })
    }

    pub async fn len(&self) -> DiskResult<u64> {
        self.disk.enter(DiskOp::Len, &self.path).await?;
        self.with_inode(DiskOp::Len, |inode, _, _, _| Ok(inode.current.len() as u64))
    }

    pub async fn truncate(&self, len: u64) -> DiskResult<()> {
        self.disk.enter(DiskOp::Truncate, &self.path).await?;
        self.with_inode(DiskOp::Truncate, |inode, _, _, _| {
            apply_set_len(&mut inode.current, len);
            inode.pending.push(PendingOp::SetLen { len });
            Ok(())
        })
    }
}

/// Where the paths inside `dir` begin in sorted order. A data dir holds
/// thousands of files and every log open lists its own directory, so the
/// disk reads that range instead of every path.
fn dir_range_start(dir: &str) -> String {
    if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    }
}

/// The paths directly in `dir`, from sorted `paths` that begin at `start`
/// (`dir_range_start`).
fn in_dir<'a>(paths: impl Iterator<Item = &'a String>, start: &'a str, dir: &'a str) -> impl Iterator<Item = &'a String> {
    paths.take_while(move |path| path.starts_with(start)).filter(move |path| parent_dir(path) == dir)
}

fn entry_name(path: &str) -> &str {
    path.rsplit('/').next().expect("non-empty path")
}
