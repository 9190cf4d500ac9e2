//! Broker-to-broker transport.
//!
//! Frames (`frame`) over `tokio::net` TCP, which madsim simulates under
//! `--cfg madsim`, so the production transport is the simulated one. An
//! `Endpoint` (`endpoint`) listens for peers, connects to them with backoff,
//! refuses connections from other clusters or unknown node ids, and hands
//! each inbound frame to the queue registered for its kind.

pub mod endpoint;
pub mod frame;

pub use endpoint::{Endpoint, Inbound, KindStats, NetConfig, NetStats, NodeTransport, SendError};
pub use frame::{read_frame, write_frame, FrameError, FRAME_KIND_RAFT, FRAME_KIND_REPL_FETCH, FRAME_KIND_REPL_FETCH_RESPONSE};
