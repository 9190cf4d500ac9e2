//! keel-kafka: the Kafka protocol front of a broker.
//!
//! `codec` cuts a byte stream into frames; `front` decodes one request with
//! the `kafka-protocol` crate, serves it from the broker's metadata and
//! replication drivers, and encodes the response; `records` converts Kafka
//! record batches to and from the partition log; `server` runs connections
//! (and drains them on stop); `metrics` counts requests, latencies and errors
//! per API.
//! All I/O is tokio's (madsim's under `--cfg madsim`), so the simulator can
//! run the same front over simulated TCP.

pub mod admin_apis;
pub mod apis;
pub mod codec;
pub mod front;
pub mod group_apis;
pub mod group_driver;
pub mod guard;
pub mod metrics;
pub mod records;
pub mod server;

pub use front::{KafkaConfig, KafkaFront, Reply};
