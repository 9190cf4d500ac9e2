//! What the simulated world's parts share, a leaf below them all (so the
//! world, its workloads and its checkers import it and never each other
//! in a cycle): the world's clock, the brokers' addresses, the handles the
//! workloads reach brokers through, and the history the checkers read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_io::Clock;
use keel_meta::driver::MetaHandle;

use crate::meta_check::History;

/// Broker `id` is at `{BROKERS_SUBNET}.{id}`.
pub const BROKERS_SUBNET: &str = "10.0.1";

pub type MetaHandles = Arc<Mutex<BTreeMap<u64, MetaHandle>>>;
pub type ReplHandles = Arc<Mutex<BTreeMap<u64, keel_repl::driver::ReplHandle>>>;
pub type SharedHistory = Arc<Mutex<History>>;

/// Simulated time since the world began, for the trace and the checkers.
#[derive(Clone)]
pub struct WorldClock(pub Clock);

impl WorldClock {
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.0.now().elapsed().as_micros()).expect("simulated time fits u64 microseconds")
    }

    pub fn now_ms(&self) -> u64 {
        self.0.now().as_millis()
    }

    pub async fn sleep_until_ms(&self, at_ms: u64) {
        let now_ms = self.now_ms();
        if at_ms > now_ms {
            self.0.sleep(Duration::from_millis(at_ms - now_ms)).await;
        }
    }
}

pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().expect("simulation state lock poisoned")
}

/// Broker `id`'s address on the simulated network.
pub fn ip_of(id: u64) -> String {
    format!("{BROKERS_SUBNET}.{id}")
}
