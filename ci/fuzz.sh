#!/usr/bin/env bash
# Fuzzes keel-kafka for a bounded time per target (cargo-fuzz, libFuzzer):
#   request_dispatch  one request frame through the decoding guard,
#                     kafka-protocol's decoder and KafkaFront::handle of a
#                     real single-node broker (metadata + replication on a
#                     scratch dir)
#   produce_records   a produced record set through records::decode_produced
#                     and back out through encode_fetched
# Each starts from its committed seed corpus (crates/kafka/fuzz/corpus/, read
# only; what the run finds goes to a scratch dir removed at exit).
#
#   FUZZ_SECONDS=60      seconds per target
#   FUZZ_TARGETS="..."   which targets (default: both)
#
# Exits non-zero on a crash (panic, abort, out-of-memory, timeout) and prints
# the crashing input and the command that replays it.
#
# Stable toolchain only: cargo-fuzz runs without a sanitizer (`--sanitizer
# none`; AddressSanitizer needs nightly). Coverage instrumentation, libFuzzer
# and Rust's own checks (panics, overflow checks, allocation failures) work.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
read -r -a targets <<< "${FUZZ_TARGETS:-request_dispatch produce_records}"
fuzz_dir=crates/kafka/fuzz

if ! command -v cargo >/dev/null 2>&1; then
    echo "ci/fuzz.sh: cargo not found; install the Rust toolchain and run again" >&2
    exit 2
fi
if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION (crates.io)"
    cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

# Scratch: the fuzz broker's data dir (via TMPDIR) and the corpus each run
# grows; in memory when /dev/shm is there.
scratch=$(mktemp -d /dev/shm/keel-fuzz.XXXXXX 2>/dev/null || mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/tmp"

cd "$fuzz_dir"
echo "== building the fuzz targets (release, no sanitizer)"
cargo fuzz build --sanitizer none

failed=0
for target in "${targets[@]}"; do
    echo "== fuzzing $target for ${FUZZ_SECONDS}s (seeds: $fuzz_dir/corpus/$target)"
    mkdir -p "$scratch/corpus/$target"
    log="$scratch/$target.log"
    set +e
    TMPDIR="$scratch/tmp" cargo fuzz run --sanitizer none "$target" "$scratch/corpus/$target" "corpus/$target" -- \
        -max_total_time="$FUZZ_SECONDS" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 > "$log" 2>&1
    status=$?
    set -e
    executions=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    if [ "$status" -eq 0 ]; then
        echo "-- $target: ${executions:-?} executions in ${FUZZ_SECONDS}s, no crash"
        continue
    fi
    failed=1
    mkdir -p "artifacts/$target"
    cp "$log" "artifacts/$target/fuzz.log"
    grep -vE '^ +(at |[0-9]+: )' "$log" | tail -n 40
    crash=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -1 | sed 's/Test unit written to //')
    echo "-- $target: CRASH after ${executions:-?} executions (exit $status); log: $fuzz_dir/artifacts/$target/fuzz.log"
    if [ -n "$crash" ]; then
        echo "   input:  $fuzz_dir/${crash#"$PWD/"}"
        echo "   replay: (cd $fuzz_dir && cargo fuzz run --sanitizer none $target ${crash#"$PWD/"})"
    else
        echo "   no crashing input was written"
    fi
done
exit "$failed"
