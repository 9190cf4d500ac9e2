//! The seams between Keel's logic and the world it runs in.
//!
//! Everything that would make a run irreproducible (time, disk, randomness)
//! passes through this crate, so the same broker code runs on real tokio in
//! `keel` and inside a seeded madsim world in `keel-sim`. Tasks, timers and TCP
//! come from `tokio` (madsim-tokio), which madsim replaces under `--cfg madsim`.
//!
//! Architecture Invariant: this is the only crate of broker logic allowed to
//! touch `std::time::{Instant, SystemTime}::now`, `std::fs`, `std::net`,
//! `std::thread` or OS entropy. The tidy test (`crates/tidy`) enforces it.

pub mod buggify;
pub mod clock;
pub mod disk;
pub mod rng;

pub use clock::Clock;
pub use disk::{Disk, DiskError, DiskErrorKind, DiskFile, DiskLock, DiskOp, DiskResult, RealDisk, SimDisk, SimDiskFaults, SimDiskStats};
pub use rng::NodeRng;
