#!/usr/bin/env bash
# The whole test suite: README's test command, and exactly what CI runs.
# Builds and tests the normal build (target/) and the `--cfg madsim` build
# (target/sim, its own dir so switching never rebuilds everything).
set -euo pipefail
cd "$(dirname "$0")/.."

# Install what the suite needs: the Rust toolchain (this machine kind has it)
# and protoc, which raft-rs's prost codec runs at build time. Later layers add
# their packages here (kcat and the Python Kafka clients).
if ! command -v cargo >/dev/null 2>&1; then
    echo "ci/test.sh: cargo not found; install the Rust toolchain (https://rustup.rs) and run again" >&2
    exit 2
fi
if ! command -v protoc >/dev/null 2>&1; then
    echo "== installing protobuf-compiler (protoc) for raft-rs's prost codec"
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler
    else
        echo "ci/test.sh: protoc not found and not root; run: sudo apt-get install -y protobuf-compiler" >&2
        exit 2
    fi
fi

started=$(date +%s)

echo "== normal build: unit, crash-consistency and tidy tests"
cargo test --workspace --locked

echo "== simulation build (--cfg madsim, target/sim): the same seeded checks under madsim"
# madsim tests run seeds 1..=20 (a failure prints MADSIM_TEST_SEED=N to replay it).
MADSIM_TEST_SEED=1 MADSIM_TEST_NUM=20 RUSTFLAGS="${RUSTFLAGS:-} --cfg madsim" \
    cargo test --locked --target-dir target/sim -p keel-io -p keel-log -p keel-meta -p keel-net -p keel-repl -p keel-sim

echo "== the metadata cluster under madsim, seeds 21..1020 (leader kill, fencing, restart, convergence)"
MADSIM_TEST_SEED=21 MADSIM_TEST_NUM=1000 RUSTFLAGS="${RUSTFLAGS:-} --cfg madsim" \
    cargo test --locked --target-dir target/sim -p keel-sim --test meta_cluster_madsim

echo "== determinism: the metadata cluster run twice on seed 42 must match event for event"
MADSIM_TEST_SEED=42 MADSIM_TEST_CHECK_DETERMINISM=1 RUSTFLAGS="${RUSTFLAGS:-} --cfg madsim" \
    cargo test --locked --target-dir target/sim -p keel-sim --test meta_cluster_madsim

echo "== scenario sweeps: seeds 1..500 of every scenario (ci/sim.sh: release build with --cfg madsim)"
for scenario in scenarios/*.toml; do
    scenario_started=$(date +%s)
    echo "-- $scenario"
    ci/sim.sh sweep --scenario "$scenario" --seeds 1..500 --jobs 2
    echo "-- $scenario: $(( $(date +%s) - scenario_started ))s"
done
ci/sim.sh run --scenario scenarios/election-storm.toml --seed 42 --check-determinism
ci/sim.sh run --scenario scenarios/partition-heal-truncation.toml --seed 42 --check-determinism

echo "== ci/test.sh finished in $(( $(date +%s) - started ))s"
