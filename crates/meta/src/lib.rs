//! Cluster metadata for Keel: which brokers exist, which topics and
//! partitions, who leads each partition in which leader epoch, and the ISR.
//!
//! Sans-io: `MetadataState::apply` takes a committed batch and returns what
//! happened; the Raft driver (`driver`) feeds it committed entries in log
//! order on every node, so every node computes the same state. Controller
//! policy (`controller`) is pure functions the Raft leader uses to *decide*
//! what to propose; decisions travel in the log, so followers never recompute
//! them and apply stays deterministic.

pub mod admin_ops;
pub mod controller;
pub mod driver;
pub mod group_ops;
pub mod node;
pub mod proto;
pub mod raft_node;
pub mod raft_store;
pub mod state;

pub use state::{MetadataError, MetadataState};

/// A broker's id, as configured (`--node-id`).
pub type BrokerId = u64;
