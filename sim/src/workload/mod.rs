//! A scenario's client workloads, behind one trait. Each is started before
//! the fault timeline (its clients run through the faults); after the heal
//! the runner takes every workload through the same phases, each phase for
//! all workloads in the order they were started:
//!
//! 1. `probe_after_heal`: once the metadata converged, a probe that the
//!    workload's operations complete again (liveness);
//! 2. `converge`: its clients' last answers, and the cluster converged on
//!    what they did;
//! 3. `report`: the final state checked against what its clients were
//!    told, and what they did counted into the report.
//!
//! A workload records what its clients were told in the shared history,
//! where the checkers read it; the world (`world`) knows nothing of them.

pub mod data;
pub mod group;
pub mod topics;

use std::future::Future;
use std::pin::Pin;

use keel_io::NodeRng;

use crate::report::RunReport;
use crate::world::World;

/// One phase of one workload.
pub type Phase<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// The phases the runner takes every workload through after the heal.
pub trait Workload {
    /// After the heal, once the metadata converged (`healed_ms`: when the
    /// heal was). Nothing by default: a workload whose probe needs its
    /// clients finished probes in `converge`.
    fn probe_after_heal<'a>(&'a mut self, _world: &'a mut World, _healed_ms: u64, _rng: &'a mut NodeRng) -> Phase<'a> {
        Box::pin(async {})
    }
    /// The clients' last answers, and the cluster converged on what they did.
    fn converge<'a>(&'a mut self, world: &'a mut World, report: &'a mut RunReport, rng: &'a mut NodeRng) -> Phase<'a>;
    /// The final state against what the clients were told; counts into
    /// `report`. Nothing by default: a workload whose checks ran in
    /// `converge` has nothing left.
    fn report<'a>(&'a mut self, _world: &'a mut World, _report: &'a mut RunReport) -> Phase<'a> {
        Box::pin(async {})
    }
}
