//! Real files with real fsync. Blocking calls run on tokio's blocking pool so
//! they never stall the async worker threads.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{check_relative_path, DiskError, DiskErrorKind, DiskOp, DiskResult, LOCK_FILE};

fn map_io(op: DiskOp, path: &str, error: std::io::Error) -> DiskError {
    let kind = match error.kind() {
        ErrorKind::NotFound => DiskErrorKind::NotFound,
        ErrorKind::AlreadyExists => DiskErrorKind::AlreadyExists,
        ErrorKind::StorageFull => DiskErrorKind::NoSpace,
        _ => DiskErrorKind::Io(error.to_string()),
    };
    DiskError::new(op, path, kind)
}

async fn blocking<T, F>(op: DiskOp, path: &str, work: F) -> DiskResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
{
    // Under madsim this runs inline on the simulated executor; simulations use SimDisk.
    #[allow(deprecated)]
    let joined = tokio::task::spawn_blocking(work).await;
    match joined {
        Ok(result) => result.map_err(|error| map_io(op, path, error)),
        Err(join_error) => Err(DiskError::new(op, path, DiskErrorKind::Io(format!("blocking task failed: {join_error}")))),
    }
}

fn sync_directory(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}

/// A directory on the real file system acting as a node's disk.
#[derive(Clone, Debug)]
pub struct RealDisk {
    root: Arc<PathBuf>,
}

impl RealDisk {
    /// The root must exist; everything the disk touches stays below it.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RealDisk { root: Arc::new(root.into()) }
    }

    /// Creates `root` (and its parents) if missing, durably, and uses it.
    pub async fn open_root(root: impl Into<PathBuf>) -> DiskResult<Self> {
        let root: PathBuf = root.into();
        let shown = root.display().to_string();
        let created = root.clone();
        blocking(DiskOp::CreateDirAll, &shown, move || {
            std::fs::create_dir_all(&created)?;
            sync_directory(&created)?;
            if let Some(parent) = created.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_directory(parent)?;
            }
            Ok(())
        })
        .await?;
        Ok(RealDisk::new(root))
    }

    fn resolve(&self, op: DiskOp, path: &str) -> DiskResult<PathBuf> {
        if path.is_empty() {
            return Ok(self.root.as_ref().clone());
        }
        check_relative_path(op, path)?;
        Ok(self.root.join(path))
    }

    pub async fn create_dir_all(&self, dir: &str) -> DiskResult<()> {
        let full = self.resolve(DiskOp::CreateDirAll, dir)?;
        let root = self.root.as_ref().clone();
        blocking(DiskOp::CreateDirAll, dir, move || {
            std::fs::create_dir_all(&full)?;
            // Sync every directory from the new one up to the root so the
            // whole chain of entries is durable when this returns.
            let mut current = full.as_path();
            loop {
                sync_directory(current)?;
                if current == root {
                    break;
                }
                match current.parent() {
                    Some(parent) => current = parent,
                    None => break,
                }
            }
            Ok(())
        })
        .await
    }

    pub async fn create(&self, path: &str) -> DiskResult<RealFile> {
        let full = self.resolve(DiskOp::Create, path)?;
        let file = blocking(DiskOp::Create, path, move || OpenOptions::new().read(true).write(true).create_new(true).open(full)).await?;
        Ok(RealFile { path: Arc::new(path.to_string()), file: Arc::new(file) })
    }

    pub async fn open(&self, path: &str) -> DiskResult<RealFile> {
        let full = self.resolve(DiskOp::Open, path)?;
        let file = blocking(DiskOp::Open, path, move || OpenOptions::new().read(true).write(true).open(full)).await?;
        Ok(RealFile { path: Arc::new(path.to_string()), file: Arc::new(file) })
    }

    pub async fn list(&self, dir: &str) -> DiskResult<Vec<String>> {
        let full = self.resolve(DiskOp::List, dir)?;
        let dir_name = dir.to_string();
        blocking(DiskOp::List, dir, move || {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(full)? {
                let entry = entry?;
                match entry.file_name().into_string() {
                    Ok(name) => names.push(name),
                    Err(raw) => {
                        return Err(std::io::Error::other(format!("non-UTF-8 file name {raw:?} in {dir_name}")));
                    }
                }
            }
            names.sort();
            Ok(names)
        })
        .await
    }

    pub async fn rename(&self, from: &str, to: &str) -> DiskResult<()> {
        let full_from = self.resolve(DiskOp::Rename, from)?;
        let full_to = self.resolve(DiskOp::Rename, to)?;
        blocking(DiskOp::Rename, from, move || std::fs::rename(full_from, full_to)).await
    }

    pub async fn remove(&self, path: &str) -> DiskResult<()> {
        let full = self.resolve(DiskOp::Remove, path)?;
        blocking(DiskOp::Remove, path, move || std::fs::remove_file(full)).await
    }

    pub async fn sync_dir(&self, dir: &str) -> DiskResult<()> {
        let full = self.resolve(DiskOp::SyncDir, dir)?;
        blocking(DiskOp::SyncDir, dir, move || sync_directory(&full)).await
    }

    /// `flock(LOCK_EX | LOCK_NB)` on the root's lock file (created if
    /// missing, never truncated by a refused attempt). The kernel releases
    /// it when the process dies however it dies, so a stale lock cannot
    /// outlive its holder. The holder writes its pid and node id into the
    /// file so a refused opener can name it.
    pub async fn lock_exclusive(&self, node_id: u64) -> DiskResult<RealLock> {
        let full = self.root.join(LOCK_FILE);
        let outcome = blocking(DiskOp::Lock, LOCK_FILE, move || {
            let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&full)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut holder = String::new();
                    std::io::Read::read_to_string(&mut &file, &mut holder)?;
                    return Ok(Err(holder));
                }
                Err(std::fs::TryLockError::Error(error)) => return Err(error),
            }
            file.set_len(0)?;
            file.write_all_at(format!("pid={}\nnode_id={node_id}\n", std::process::id()).as_bytes(), 0)?;
            file.sync_data()?;
            Ok(Ok(file))
        })
        .await?;
        match outcome {
            Ok(file) => Ok(RealLock { _file: file }),
            Err(written) => Err(DiskError::new(DiskOp::Lock, LOCK_FILE, DiskErrorKind::Locked { holder: describe_holder(&written) })),
        }
    }
}

/// `pid 1234, node 1` from a lock file's `pid=1234\nnode_id=1\n`.
fn describe_holder(written: &str) -> String {
    let field = |key: &str| written.lines().find_map(|line| line.strip_prefix(key)).map(str::trim).filter(|v| !v.is_empty());
    match (field("pid="), field("node_id=")) {
        (Some(pid), Some(node_id)) => format!("pid {pid}, node {node_id}"),
        (Some(pid), None) => format!("pid {pid}"),
        // The holder locks before it writes its pid: it is starting right now.
        _ => "a process that is starting; its pid is not written yet".to_string(),
    }
}

/// A held `flock`; closing the file (drop, or process death) releases it.
#[derive(Debug)]
pub struct RealLock {
    _file: File,
}

/// An open real file; positional reads and writes, so clones never race on a cursor.
#[derive(Clone, Debug)]
pub struct RealFile {
    path: Arc<String>,
    file: Arc<File>,
}

impl RealFile {
    pub fn path(&self) -> &str {
        &self.path
    }

    /// One pread: up to `len` bytes at `offset`, maybe fewer (the kernel may
    /// return less than asked), and whether it met the end of the file.
    pub async fn pread(&self, offset: u64, len: usize) -> DiskResult<(Vec<u8>, bool)> {
        let file = Arc::clone(&self.file);
        blocking(DiskOp::Read, &self.path, move || {
            let mut buf = vec![0u8; len];
            let read = file.read_at(&mut buf, offset)?;
            buf.truncate(read);
            Ok((buf, read == 0 && len > 0))
        })
        .await
    }

    pub async fn write_at(&self, offset: u64, data: &[u8]) -> DiskResult<()> {
        let file = Arc::clone(&self.file);
        let data = data.to_vec();
        blocking(DiskOp::Write, &self.path, move || file.write_all_at(&data, offset)).await
    }

    pub async fn sync(&self) -> DiskResult<()> {
        let file = Arc::clone(&self.file);
        // fdatasync suffices: the log never relies on mtime, and size changes
        // are covered by fdatasync's metadata rule.
        blocking(DiskOp::Sync, &self.path, move || file.sync_data()).await
    }

    pub async fn len(&self) -> DiskResult<u64> {
        let file = Arc::clone(&self.file);
        blocking(DiskOp::Len, &self.path, move || Ok(file.metadata()?.len())).await
    }

    pub async fn truncate(&self, len: u64) -> DiskResult<()> {
        let file = Arc::clone(&self.file);
        blocking(DiskOp::Truncate, &self.path, move || file.set_len(len)).await
    }
}
