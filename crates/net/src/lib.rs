//! Broker-to-broker transport.
//!
//! Frames (`frame`) over `tokio::net` TCP, which madsim simulates under
//! `--cfg madsim`, so the production transport is the simulated one. An
//! `Endpoint` (`endpoint`) listens for peers, connects to them with backoff,
//! and refuses connections from other clusters or unknown node ids.

pub mod endpoint;
pub mod frame;

pub use endpoint::{Endpoint, Inbound, NetConfig, SendError};
pub use frame::{read_frame, write_frame, FrameError};
