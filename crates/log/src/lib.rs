//! A segmented, checksummed, append-only log over the Disk seam.
//!
//! Used for partition data and for the metadata Raft log. Contract:
//! - `append` assigns consecutive offsets; a record is durable once a `flush`
//!   (or an automatic flush by the `FlushPolicy`) that covers it returned Ok;
//! - durable records survive any crash, intact;
//! - after `truncate(offset)` returned Ok, no record at or above `offset`
//!   from before the truncate is ever returned again, even after a crash;
//! - a record whose checksum fails is never returned: reads retry (read faults
//!   are often transient) and then fail with `LogError::Corrupt`;
//! - after any disk error the log is poisoned: every call fails until the log
//!   is reopened, which recovers from what is on disk.

mod format;
mod log;

pub use crate::log::{FlushPolicy, Log, LogConfig, LogError, Record};
pub use format::{FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
