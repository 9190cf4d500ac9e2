//! The node's clock.
//!
//! One code path for both worlds: time comes from `tokio::time`, which is real
//! time in `keel` and madsim's simulated time under `--cfg madsim`. madsim has a
//! single global clock, so per-node skew (wall-clock offset) and drift (rate
//! error) are modelled here; production never sets them and they stay zero.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parts per million: a drift of 1_000 ppm makes a node's clock run 0.1% fast.
const PPM: i128 = 1_000_000;

/// Monotonic time on one node, as elapsed time since that node's clock began.
/// Values from different nodes are not comparable; that is the point of drift.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Monotonic(Duration);

impl Monotonic {
    pub const ZERO: Monotonic = Monotonic(Duration::ZERO);

    pub fn elapsed(self) -> Duration {
        self.0
    }

    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).expect("monotonic clock beyond u64 milliseconds")
    }

    /// Time from `earlier` to `self`, zero when `earlier` is later.
    pub fn saturating_since(self, earlier: Monotonic) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    pub fn checked_add(self, duration: Duration) -> Option<Monotonic> {
        self.0.checked_add(duration).map(Monotonic)
    }
}

#[derive(Debug)]
struct Adjustment {
    /// Added to the wall clock only: a skewed node disagrees about "what time it is".
    wall_skew_ms: i64,
    /// Rate error of this node's clock in parts per million.
    drift_ppm: i64,
    /// Runtime elapsed time at the last drift change.
    anchor_runtime: Duration,
    /// Node-local elapsed time at the last drift change, so a rate change never
    /// makes local time jump or go backwards.
    anchor_local: Duration,
}

#[derive(Debug)]
struct ClockInner {
    origin: tokio::time::Instant,
    wall_origin_ms: u64,
    adjustment: Mutex<Adjustment>,
}

/// A node's view of time: monotonic `now`, wall-clock `wall_now_ms`, and `sleep`.
///
/// Cheap to clone; clones share skew and drift.
#[derive(Clone, Debug)]
pub struct Clock {
    inner: Arc<ClockInner>,
}

impl Clock {
    /// Starts a clock at the runtime's current time (simulated under madsim).
    pub fn new() -> Self {
        // Under madsim, `SystemTime::now` is the simulated wall clock.
        let wall_origin = SystemTime::now().duration_since(UNIX_EPOCH).expect("wall clock before 1970");
        let wall_origin_ms = u64::try_from(wall_origin.as_millis()).expect("wall clock beyond u64 ms");
        Clock {
            inner: Arc::new(ClockInner {
                origin: tokio::time::Instant::now(),
                wall_origin_ms,
                adjustment: Mutex::new(Adjustment { wall_skew_ms: 0, drift_ppm: 0, anchor_runtime: Duration::ZERO, anchor_local: Duration::ZERO }),
            }),
        }
    }

    fn runtime_elapsed(&self) -> Duration {
        tokio::time::Instant::now().saturating_duration_since(self.inner.origin)
    }

    fn local_elapsed(adjustment: &Adjustment, runtime_elapsed: Duration) -> Duration {
        let since_anchor = runtime_elapsed.saturating_sub(adjustment.anchor_runtime);
        let scaled_ns = since_anchor.as_nanos() as i128 * (PPM + adjustment.drift_ppm as i128) / PPM;
        assert!(scaled_ns >= 0, "drift made time run backwards");
        adjustment.anchor_local + Duration::from_nanos(u64::try_from(scaled_ns).expect("clock overflow"))
    }

    /// Monotonic time on this node. Never decreases, whatever skew and drift do.
    pub fn now(&self) -> Monotonic {
        let runtime_elapsed = self.runtime_elapsed();
        let adjustment = self.inner.adjustment.lock().expect("clock lock poisoned");
        Monotonic(Self::local_elapsed(&adjustment, runtime_elapsed))
    }

    /// Wall-clock time on this node in milliseconds since the Unix epoch
    /// (Kafka timestamps). Derived from monotonic time so it never jumps in
    /// production; in simulation it includes this node's skew.
    pub fn wall_now_ms(&self) -> i64 {
        let runtime_elapsed = self.runtime_elapsed();
        let adjustment = self.inner.adjustment.lock().expect("clock lock poisoned");
        let local_ms = Self::local_elapsed(&adjustment, runtime_elapsed).as_millis() as i64;
        self.inner.wall_origin_ms as i64 + local_ms + adjustment.wall_skew_ms
    }

    /// Sleeps for `duration` of this node's time (longer or shorter in runtime
    /// time when the clock drifts).
    pub async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(self.runtime_duration(duration)).await;
    }

    /// Sleeps until this node's monotonic clock reads at least `deadline`.
    pub async fn sleep_until(&self, deadline: Monotonic) {
        let remaining = deadline.saturating_since(self.now());
        if !remaining.is_zero() {
            self.sleep(remaining).await;
        }
    }

    /// Converts a node-local duration to runtime time under the current drift.
    fn runtime_duration(&self, local: Duration) -> Duration {
        let drift_ppm = self.inner.adjustment.lock().expect("clock lock poisoned").drift_ppm;
        let runtime_ns = local.as_nanos() as i128 * PPM / (PPM + drift_ppm as i128);
        Duration::from_nanos(u64::try_from(runtime_ns.max(0)).expect("sleep overflow"))
    }

    /// Simulation only: offsets this node's wall clock by `wall_skew_ms`.
    pub fn set_wall_skew_ms(&self, wall_skew_ms: i64) {
        self.inner.adjustment.lock().expect("clock lock poisoned").wall_skew_ms = wall_skew_ms;
    }

    /// Simulation only: makes this node's clock run fast (positive) or slow
    /// (negative) by `drift_ppm`. Bounded to +-50% so time still moves forward.
    pub fn set_drift_ppm(&self, drift_ppm: i64) {
        assert!(drift_ppm > -500_000, "drift below -50% is not a clock");
        assert!(drift_ppm < 500_000, "drift above +50% is not a clock");
        let runtime_elapsed = self.runtime_elapsed();
        let mut adjustment = self.inner.adjustment.lock().expect("clock lock poisoned");
        let local_now = Self::local_elapsed(&adjustment, runtime_elapsed);
        adjustment.anchor_runtime = runtime_elapsed;
        adjustment.anchor_local = local_now;
        adjustment.drift_ppm = drift_ppm;
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    fn paused_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("runtime")
    }

    #[test]
    fn drift_scales_elapsed_time_and_never_goes_backwards() {
        paused_runtime().block_on(async {
            let clock = Clock::new();
            tokio::time::sleep(Duration::from_secs(10)).await;
            assert_eq!(clock.now().elapsed(), Duration::from_secs(10));
            clock.set_drift_ppm(100_000);
            let before = clock.now();
            tokio::time::sleep(Duration::from_secs(10)).await;
            assert_eq!(clock.now().saturating_since(before), Duration::from_secs(11));
            clock.set_drift_ppm(-100_000);
            let before_slow = clock.now();
            assert!(before_slow >= before);
            tokio::time::sleep(Duration::from_secs(10)).await;
            assert_eq!(clock.now().saturating_since(before_slow), Duration::from_secs(9));
        });
    }

    #[test]
    fn sleep_is_measured_in_node_time() {
        paused_runtime().block_on(async {
            let clock = Clock::new();
            clock.set_drift_ppm(250_000);
            let start = clock.now();
            clock.sleep(Duration::from_secs(5)).await;
            let slept = clock.now().saturating_since(start);
            assert!(slept >= Duration::from_millis(4_999), "slept {slept:?}");
            assert!(slept <= Duration::from_millis(5_001), "slept {slept:?}");
        });
    }

    #[test]
    fn wall_skew_moves_wall_clock_but_not_monotonic_time() {
        paused_runtime().block_on(async {
            let clock = Clock::new();
            let wall_before = clock.wall_now_ms();
            let mono_before = clock.now();
            clock.set_wall_skew_ms(-30_000);
            assert_eq!(clock.wall_now_ms(), wall_before - 30_000);
            assert_eq!(clock.now(), mono_before);
        });
    }
}

#[cfg(all(test, madsim))]
mod sim_tests {
    use super::*;

    #[tokio::test]
    async fn simulated_time_drives_the_clock_with_drift_and_skew() {
        let clock = Clock::new();
        let wall_start = clock.wall_now_ms();
        clock.set_drift_ppm(-200_000);
        clock.set_wall_skew_ms(5_000);
        tokio::time::sleep(Duration::from_secs(3_600)).await;
        // madsim adds sub-millisecond steps between polls: compare to the millisecond.
        let elapsed_ms = clock.now().as_millis();
        assert!(elapsed_ms >= 2_880_000, "elapsed {elapsed_ms} ms");
        assert!(elapsed_ms <= 2_880_001, "elapsed {elapsed_ms} ms");
        let wall_advance_ms = clock.wall_now_ms() - wall_start;
        assert!(wall_advance_ms >= 2_885_000, "wall advanced {wall_advance_ms} ms");
        assert!(wall_advance_ms <= 2_885_001, "wall advanced {wall_advance_ms} ms");
    }
}
