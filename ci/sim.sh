#!/usr/bin/env bash
# Builds keel-sim with `--cfg madsim` into target/sim, then runs it with the
# given arguments, e.g.:
#   ci/sim.sh log-check --seeds 1..2000 --jobs 2
#   ci/sim.sh log-check --seed 42 --trace trace-42.txt --check-determinism
#   ci/sim.sh sweep --scenario scenarios/election-storm.toml --seeds 1..500 --jobs 2
#   ci/sim.sh run --scenario scenarios/election-storm.toml --seed 42 --trace trace-42.txt --check-determinism
#   ci/sim.sh run --scenario scenarios/swarm.toml --seed 7 --trace trace-7.jsonl && ci/sim.sh timeline trace-7.jsonl -o run.html
set -euo pipefail
cd "$(dirname "$0")/.."
# KEEL_SIM_PROFILE=sim-sweep builds with whole-program optimisation (about
# 1.2 to 1.6 times the seeds per minute as measured here, five minutes more to build): for long sweeps.
profile=${KEEL_SIM_PROFILE:-release}
RUSTFLAGS="${RUSTFLAGS:-} --cfg madsim" cargo build --quiet --profile "$profile" --locked --target-dir target/sim -p keel-sim
exec "target/sim/$profile/keel-sim" "$@"
