//! BUGGIFY fault points (after FoundationDB's): places in broker code that,
//! in a simulated run, sometimes take a legal but unusual path (a short
//! read, a tiny fetch, a late fsync completion, a timeout that fires at
//! once, an answer dropped so the request is retried), so the code around
//! them is exercised by every sweep instead of only when the network or the
//! disk happen to line up.
//!
//! The `keel_io::buggify!` macro, given a site's name, is `false` outside the simulation build: the
//! condition is a constant there, so the site's code is compiled out of
//! `keel`. Under `--cfg madsim` a world turns the points on with [`enable`]
//! (scenario `buggify = true`, and swarm mode by default); each site is then
//! activated for the whole run with `activation_probability` when first
//! reached, and an activated site fires with `fire_probability` each time.
//! Draws come from a generator seeded by the run (a fork of its seeded
//! RNG), so a run replays exactly. The state is per thread: a world runs on
//! one thread of its own (`keel_sim::runner::run_seed`).
//!
//! Every site must be a path the real system can take (a pread may return
//! fewer bytes, a fetch may carry one batch, a fsync may complete late, a
//! timer may fire early relative to the work, a message may be lost): a
//! site that makes something impossible happen would make checkers fail on
//! a correct broker.

/// `true` when the BUGGIFY point `site` fires in this run; `false` (a
/// constant) outside the simulation build.
#[macro_export]
macro_rules! buggify {
    ($site:literal) => {
        $crate::buggify::fires($site)
    };
}

/// Every site in the broker code, as the simulator's coverage table lists
/// them (a tidy test keeps this list and the `buggify!` uses the same).
pub const SITES: [&str; 6] = [
    "disk: short read",
    "disk: fsync completion delayed",
    "repl: tiny follower fetch",
    "repl: follower loses a fetch answer",
    "repl: acks=all wait times out at once",
    "meta: proposal times out at once",
];

#[cfg(madsim)]
mod enabled {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use rand::Rng as _;

    use crate::NodeRng;

    struct Points {
        rng: NodeRng,
        activation_probability: f64,
        fire_probability: f64,
        /// Site -> activated in this run, decided when first reached.
        activated: BTreeMap<&'static str, bool>,
        /// Site -> times it fired.
        fired: BTreeMap<&'static str, u64>,
    }

    thread_local! {
        static POINTS: RefCell<Option<Points>> = const { RefCell::new(None) };
    }

    /// Turns the points on for this thread's run.
    pub fn enable(rng: NodeRng, activation_probability: f64, fire_probability: f64) {
        assert!((0.0..=1.0).contains(&activation_probability), "activation probability {activation_probability}");
        assert!((0.0..=1.0).contains(&fire_probability), "fire probability {fire_probability}");
        let points = Points { rng, activation_probability, fire_probability, activated: BTreeMap::new(), fired: BTreeMap::new() };
        POINTS.with(|cell| *cell.borrow_mut() = Some(points));
    }

    /// Turns them off again and returns how often each site fired.
    pub fn disable() -> BTreeMap<&'static str, u64> {
        POINTS.with(|cell| cell.borrow_mut().take()).map(|points| points.fired).unwrap_or_default()
    }

    pub fn fires(site: &'static str) -> bool {
        POINTS.with(|cell| {
            let mut cell = cell.borrow_mut();
            let Some(points) = cell.as_mut() else { return false };
            let activation_probability = points.activation_probability;
            let activated = match points.activated.get(site) {
                Some(activated) => *activated,
                None => {
                    let activated = points.rng.gen_bool(activation_probability);
                    points.activated.insert(site, activated);
                    activated
                }
            };
            let fire_probability = points.fire_probability;
            let fired = activated && points.rng.gen_bool(fire_probability);
            if fired {
                *points.fired.entry(site).or_default() += 1;
            }
            fired
        })
    }
}

#[cfg(madsim)]
pub use enabled::{disable, enable, fires};

/// Outside the simulation build no point ever fires.
#[cfg(not(madsim))]
#[inline(always)]
pub const fn fires(_site: &'static str) -> bool {
    false
}

#[cfg(all(test, madsim))]
mod tests {
    use super::*;
    use crate::NodeRng;

    fn fired_sites(seed: u64) -> (Vec<bool>, std::collections::BTreeMap<&'static str, u64>) {
        enable(NodeRng::new(seed, 0, 0), 0.5, 0.5);
        let pattern = (0..200).map(|i| if i % 2 == 0 { buggify!("test: even") } else { buggify!("test: odd") }).collect();
        (pattern, disable())
    }

    #[test]
    fn points_replay_from_their_seed_and_stay_off_until_enabled() {
        assert!(!buggify!("test: even"), "off until a world enables the points");
        assert_eq!(fired_sites(7), fired_sites(7));
        assert!(!buggify!("test: even"), "off again after disable");
    }

    #[test]
    fn an_inactive_site_never_fires_and_an_active_one_fires_sometimes() {
        let mut seen_inactive = false;
        let mut seen_active = false;
        for seed in 0..32 {
            let (_, fired) = fired_sites(seed);
            for site in ["test: even", "test: odd"] {
                match fired.get(site) {
                    None => seen_inactive = true,
                    Some(count) => {
                        // Fires with probability 0.5 over 100 evaluations: never all, never none.
                        assert!(*count > 0 && *count < 100, "{site} fired {count} of 100");
                        seen_active = true;
                    }
                }
            }
        }
        assert!(seen_inactive && seen_active);
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    #[test]
    fn outside_the_simulation_build_no_point_fires() {
        assert!(!buggify!("test: any site"));
    }
}
