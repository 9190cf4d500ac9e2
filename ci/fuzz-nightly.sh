#!/usr/bin/env bash
# Long random fuzzing for a nightly job (not CI: its verdict depends on the
# seed and the time). Each target fuzzes for FUZZ_SECONDS (default 3600)
# from a random seed; inputs that add coverage are merged into the committed
# corpus (crates/kafka/fuzz/corpus/; commit them, and CI's ci/fuzz.sh replays
# them on every run), and a crashing input is kept under
# crates/kafka/fuzz/artifacts/ with the command that replays it.
#   FUZZ_SECONDS=3600 FUZZ_TARGETS="request_dispatch" ci/fuzz-nightly.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_MODE=nightly exec ci/fuzz.sh "$@"
