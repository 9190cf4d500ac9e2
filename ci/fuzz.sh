#!/usr/bin/env bash
# Fuzzes keel-kafka (cargo-fuzz, libFuzzer), per target:
#   request_dispatch  one request frame through the decoding guard,
#                     kafka-protocol's decoder and KafkaFront::handle of a
#                     real single-node broker (metadata + replication on a
#                     scratch dir)
#   produce_records   a produced record set through records::decode_produced
#                     and back out through encode_fetched
#
# The CI mode (default) gives the same verdict for the same commit: it
# replays every input of the committed corpus (crates/kafka/fuzz/corpus/,
# read only), then fuzzes a fixed number of runs from a fixed seed
# (libFuzzer -runs= and -seed=, no time limit), so what it tries does not
# depend on the machine's speed or luck. (request_dispatch drives a real
# broker whose tasks may interleave differently, so its coverage feedback
# can still vary a little; produce_records is fully deterministic.)
#   FUZZ_RUNS=20000      inputs tried per target after the replay
#   FUZZ_SEED=1          libFuzzer's seed
# The CI mode builds the targets unoptimised (`cargo fuzz --dev`): the build
# is most of its time and takes half as long, a fixed number of runs needs
# no speed, and debug assertions check more on each input.
#
# The nightly mode (ci/fuzz-nightly.sh) fuzzes for a time per target from a
# random seed and merges what it finds that adds coverage into the committed
# corpus (commit it, so CI replays it from then on); a crashing input is
# kept under crates/kafka/fuzz/artifacts/ to be fixed and added as well.
#   FUZZ_MODE=nightly FUZZ_SECONDS=3600
#
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
FUZZ_MODE="${FUZZ_MODE:-ci}"
FUZZ_RUNS="${FUZZ_RUNS:-20000}"
FUZZ_SEED="${FUZZ_SEED:-1}"
FUZZ_SECONDS="${FUZZ_SECONDS:-3600}"
case "$FUZZ_MODE" in
    ci) budget=(-runs="$FUZZ_RUNS" -seed="$FUZZ_SEED"); shown="$FUZZ_RUNS runs from seed $FUZZ_SEED"; build=(--sanitizer none --dev) ;;
    nightly) budget=(-max_total_time="$FUZZ_SECONDS"); shown="${FUZZ_SECONDS}s from a random seed"; build=(--sanitizer none) ;;
    *) echo "ci/fuzz.sh: FUZZ_MODE=$FUZZ_MODE; use ci (fixed runs and seed) or nightly (timed, finds merged into the corpus)" >&2; exit 2 ;;
esac
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
echo "== building the fuzz targets (${build[*]})"
cargo fuzz build "${build[@]}"

failed=0
for target in "${targets[@]}"; do
    mkdir -p "$scratch/corpus/$target"
    log="$scratch/$target.log"
    set +e
    if [ "$FUZZ_MODE" = ci ]; then
        echo "== replaying the committed corpus of $target ($fuzz_dir/corpus/$target)"
        TMPDIR="$scratch/tmp" cargo fuzz run "${build[@]}" "$target" "corpus/$target" -- \
            -runs=0 -timeout=30 -rss_limit_mb=4096 > "$log" 2>&1
        status=$?
    else
        status=0
    fi
    if [ "$status" -eq 0 ]; then
        echo "== fuzzing $target: $shown (seeds: $fuzz_dir/corpus/$target)"
        TMPDIR="$scratch/tmp" cargo fuzz run "${build[@]}" "$target" "$scratch/corpus/$target" "corpus/$target" -- \
            "${budget[@]}" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 > "$log" 2>&1
        status=$?
    fi
    set -e
    executions=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    if [ "$status" -eq 0 ]; then
        echo "-- $target: ${executions:-?} executions ($shown), no crash"
        if [ "$FUZZ_MODE" = nightly ]; then
            # Only inputs that add coverage join the committed corpus.
            before=$(ls "corpus/$target" | wc -l)
            cargo fuzz run "${build[@]}" "$target" "corpus/$target" "$scratch/corpus/$target" -- -merge=1 > "$scratch/$target.merge.log" 2>&1
            echo "-- $target: corpus $before -> $(ls "corpus/$target" | wc -l) inputs; commit $fuzz_dir/corpus/$target"
        fi
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
        echo "   replay: (cd $fuzz_dir && cargo fuzz run ${build[*]} $target ${crash#"$PWD/"})"
    else
        echo "   no crashing input was written"
    fi
done
exit "$failed"
