//! Partition replication with Kafka's semantics, as sans-io cores.
//!
//! `Leader` and `Follower` take `(now_ms, input)` and return decisions; the
//! driver (`driver`) owns the partition's `keel-log` log, the transport
//! and the metadata proposals. Both sides keep a leader-epoch cache
//! (`EpochCache`): which leader epoch wrote which offsets, so a follower
//! that followed a deposed leader finds where its log diverges from the new
//! leader's (Kafka's OffsetForLeaderEpoch, KIP-101/KIP-279/KIP-320) and
//! truncates exactly there.
//!
//! Durability is part of the high watermark here: a follower's fetch offset
//! claims that everything below it is on its disk (it fsyncs before it
//! fetches again), and the leader counts only its own flushed end. So the
//! high watermark is the minimum durable end over the ISR, acks=all completes
//! when the high watermark passes the batch, and a power loss of every node
//! loses nothing below the high watermark.

pub mod driver;
pub mod epoch_cache;
pub mod error;
pub mod follower;
pub mod leader;
pub mod producers;
pub mod stored;
pub mod wire;

pub use epoch_cache::{EpochCache, EpochEntry};
pub use error::ReplError;
pub use follower::{Follower, FollowerStep};
pub use leader::{FetchPlan, FetchRequest, Leader, LeaderConfig, LeaderOutput, LogState};
pub use producers::{Admission, ProducerStamp, ProducerStates, RecordStamp};

/// A broker id, as in the metadata.
pub type BrokerId = u64;
