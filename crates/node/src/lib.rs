//! keel-node: the one composition root of a broker node. `keel start`, the
//! simulator (`keel-sim`), the fuzz harness and the tests boot every node
//! through it, so the simulator's verdict is a verdict on the node that
//! operators deploy.

pub mod config;

pub use config::{ConfigError, NodeConfig, NodeIdentity};
