//! The Disk seam: the file operations a log needs, with one contract and two
//! backends.
//!
//! Paths are relative to the disk's root and use `/` separators. The contract
//! both backends obey (and `keel-log`'s tests check against both):
//! - a write is durable only once `DiskFile::sync` on that file returned Ok;
//! - a create, rename or remove is durable only once `Disk::sync_dir` on the
//!   parent directory returned Ok;
//! - after a failed `sync` the file's unsynced writes may be gone (Linux
//!   "fsyncgate" semantics), so callers must treat the file as unknown and
//!   recover from disk;
//! - `create_dir_all` is durable when it returns.

mod real;
mod sim;

pub use real::RealDisk;
pub use real::{RealFile, RealLock};
pub use sim::{SimDisk, SimDiskFaults, SimDiskStats, SimFile, SimLock, SECTOR_BYTES};

/// The file in a disk's root that `Disk::lock_exclusive` locks (and in
/// which a real holder writes its pid and node id, for the refusal message).
pub const LOCK_FILE: &str = "keel.lock";

use std::fmt;

/// Which operation failed, for error messages that name what was attempted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskOp {
    CreateDirAll,
    Create,
    Open,
    List,
    Rename,
    Remove,
    SyncDir,
    Read,
    Write,
    Sync,
    Len,
    Truncate,
    Lock,
}

impl fmt::Display for DiskOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            DiskOp::CreateDirAll => "create_dir_all",
            DiskOp::Create => "create",
            DiskOp::Open => "open",
            DiskOp::List => "list",
            DiskOp::Rename => "rename",
            DiskOp::Remove => "remove",
            DiskOp::SyncDir => "sync_dir",
            DiskOp::Read => "read",
            DiskOp::Write => "write",
            DiskOp::Sync => "sync",
            DiskOp::Len => "len",
            DiskOp::Truncate => "truncate",
            DiskOp::Lock => "lock",
        };
        f.write_str(name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskErrorKind {
    NotFound,
    AlreadyExists,
    /// ENOSPC: nothing was written.
    NoSpace,
    /// EIO or another OS error; after a failed sync, unsynced data may be lost.
    Io(String),
    /// The path is absolute, empty, or escapes the disk root.
    InvalidPath,
    /// The handle was opened before a simulated crash; the process that held it is gone.
    StaleHandle,
    /// Another live process holds the disk's exclusive lock; `holder` says
    /// which (`pid 1234, node 1`), as far as it is known.
    Locked {
        holder: String,
    },
}

impl fmt::Display for DiskErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskErrorKind::NotFound => f.write_str("not found"),
            DiskErrorKind::AlreadyExists => f.write_str("already exists"),
            DiskErrorKind::NoSpace => f.write_str("no space left on device"),
            DiskErrorKind::Io(detail) => write!(f, "I/O error: {detail}"),
            DiskErrorKind::InvalidPath => f.write_str("invalid path (must be relative, without `..`)"),
            DiskErrorKind::StaleHandle => f.write_str("stale handle from before a crash"),
            DiskErrorKind::Locked { holder } => write!(f, "held by another running process ({holder})"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{op} {path}: {kind}")]
pub struct DiskError {
    pub op: DiskOp,
    pub path: String,
    pub kind: DiskErrorKind,
}

impl DiskError {
    pub fn new(op: DiskOp, path: &str, kind: DiskErrorKind) -> Self {
        DiskError { op, path: path.to_string(), kind }
    }
}

pub type DiskResult<T> = Result<T, DiskError>;

/// Rejects absolute paths and `..`, so nothing escapes the disk root.
pub(crate) fn check_relative_path(op: DiskOp, path: &str) -> DiskResult<()> {
    let invalid = path.is_empty() || path.starts_with('/') || path.split('/').any(|part| part.is_empty() || part == "." || part == "..");
    if invalid {
        return Err(DiskError::new(op, path, DiskErrorKind::InvalidPath));
    }
    Ok(())
}

/// The parent directory of a relative path (`""` for the root).
pub fn parent_dir(path: &str) -> &str {
    path.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("")
}

/// `dir/name`, or `name` when `dir` is the root.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// A node's disk. Cheap to clone; clones share the same files.
#[derive(Clone, Debug)]
pub enum Disk {
    Real(RealDisk),
    Sim(SimDisk),
}

impl Disk {
    /// Takes the disk's exclusive lock for node `node_id`, or fails with
    /// `DiskErrorKind::Locked` naming the holder. Nothing else on the disk
    /// is created or changed by a refused attempt. The lock is held until
    /// the returned guard is dropped or the process holding it dies (a real
    /// `flock`, released by the kernel; on a SimDisk, a crash releases it).
    pub async fn lock_exclusive(&self, node_id: u64) -> DiskResult<DiskLock> {
        match self {
            Disk::Real(disk) => disk.lock_exclusive(node_id).await.map(|lock| DiskLock { _held: DiskLockHeld::Real { _guard: lock } }),
            Disk::Sim(disk) => disk.lock_exclusive(node_id).map(|lock| DiskLock { _held: DiskLockHeld::Sim { _guard: lock } }),
        }
    }

    pub async fn create_dir_all(&self, dir: &str) -> DiskResult<()> {
        match self {
            Disk::Real(disk) => disk.create_dir_all(dir).await,
            Disk::Sim(disk) => disk.create_dir_all(dir).await,
        }
    }

    /// Creates a new empty file; fails with `AlreadyExists` if it exists.
    pub async fn create(&self, path: &str) -> DiskResult<DiskFile> {
        match self {
            Disk::Real(disk) => disk.create(path).await.map(DiskFile::Real),
            Disk::Sim(disk) => disk.create(path).await.map(DiskFile::Sim),
        }
    }

    /// Opens an existing file for reading and writing.
    pub async fn open(&self, path: &str) -> DiskResult<DiskFile> {
        match self {
            Disk::Real(disk) => disk.open(path).await.map(DiskFile::Real),
            Disk::Sim(disk) => disk.open(path).await.map(DiskFile::Sim),
        }
    }

    /// Names of the files in `dir`, sorted.
    pub async fn list(&self, dir: &str) -> DiskResult<Vec<String>> {
        match self {
            Disk::Real(disk) => disk.list(dir).await,
            Disk::Sim(disk) => disk.list(dir).await,
        }
    }

    /// Replaces `to` if it exists.
    pub async fn rename(&self, from: &str, to: &str) -> DiskResult<()> {
        match self {
            Disk::Real(disk) => disk.rename(from, to).await,
            Disk::Sim(disk) => disk.rename(from, to).await,
        }
    }

    pub async fn remove(&self, path: &str) -> DiskResult<()> {
        match self {
            Disk::Real(disk) => disk.remove(path).await,
            Disk::Sim(disk) => disk.remove(path).await,
        }
    }

    /// Makes the creates, renames and removes in `dir` durable.
    pub async fn sync_dir(&self, dir: &str) -> DiskResult<()> {
        match self {
            Disk::Real(disk) => disk.sync_dir(dir).await,
            Disk::Sim(disk) => disk.sync_dir(dir).await,
        }
    }
}

/// A held `Disk::lock_exclusive`; dropping it releases the lock.
#[derive(Debug)]
pub struct DiskLock {
    _held: DiskLockHeld,
}

#[derive(Debug)]
enum DiskLockHeld {
    Real { _guard: RealLock },
    Sim { _guard: SimLock },
}

/// An open file. Cheap to clone; clones share the handle.
#[derive(Clone, Debug)]
pub enum DiskFile {
    Real(RealFile),
    Sim(SimFile),
}

impl DiskFile {
    pub fn path(&self) -> &str {
        match self {
            DiskFile::Real(file) => file.path(),
            DiskFile::Sim(file) => file.path(),
        }
    }

    /// Reads `len` bytes at `offset`, fewer only at the end of the file.
    /// A pread may return less than asked before the end; this reads on.
    pub async fn read_at(&self, offset: u64, len: usize) -> DiskResult<Vec<u8>> {
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() < len {
            let at = offset + bytes.len() as u64;
            let (more, end_of_file) = match self {
                DiskFile::Real(file) => file.pread(at, len - bytes.len()).await?,
                DiskFile::Sim(file) => file.pread(at, len - bytes.len()).await?,
            };
            assert!(more.len() <= len - bytes.len(), "a pread returns at most what was asked");
            assert!(!more.is_empty() || end_of_file, "a pread returns nothing only at the end of the file");
            bytes.extend_from_slice(&more);
            if end_of_file {
                break;
            }
        }
        Ok(bytes)
    }

    /// Writes all of `data` at `offset`, extending the file with zeros if needed.
    pub async fn write_at(&self, offset: u64, data: &[u8]) -> DiskResult<()> {
        match self {
            DiskFile::Real(file) => file.write_at(offset, data).await,
            DiskFile::Sim(file) => file.write_at(offset, data).await,
        }
    }

    /// fsync: makes every completed write and truncate of this file durable.
    pub async fn sync(&self) -> DiskResult<()> {
        match self {
            DiskFile::Real(file) => file.sync().await,
            DiskFile::Sim(file) => {
                file.sync().await?;
                // The completion reaches the caller late (a busy disk queue,
                // a slow journal commit): whatever waits on it waits longer.
                if crate::buggify!("disk: fsync completion delayed") {
                    tokio::time::sleep(std::time::Duration::from_millis(file.delay_draw_ms(1..=200))).await;
                }
                Ok(())
            }
        }
    }

    pub async fn len(&self) -> DiskResult<u64> {
        match self {
            DiskFile::Real(file) => file.len().await,
            DiskFile::Sim(file) => file.len().await,
        }
    }

    /// Sets the file length; durable only after `sync`.
    pub async fn truncate(&self, len: u64) -> DiskResult<()> {
        match self {
            DiskFile::Real(file) => file.truncate(len).await,
            DiskFile::Sim(file) => file.truncate(len).await,
        }
    }
}
