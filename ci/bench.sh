#!/usr/bin/env bash
# Benchmarks (never tests: timing belongs here, not in assertions).
#   ci/bench.sh log   log append throughput with group commit on real files,
#                     next to the raw `dd oflag=dsync` bandwidth of the same disk.
# Environment: KEEL_BENCH_DIR (default target/bench-tmp), KEEL_BENCH_MB (default 256).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: ci/bench.sh log|meta|repl" >&2
    echo "  log   log appends/s and MB/s (1 KiB and 64 KiB records, group commit) vs dd oflag=dsync" >&2
    echo "  meta  topic-create round trip on a 3-process cluster, 100 concurrent creates, simulation seeds/min" >&2
    echo "  repl  acks=all and acks=1 produce throughput and latency on a 3-process cluster, vs dd oflag=dsync" >&2
}

# Absolute: cargo runs each bench in its own package directory.
bench_dir=$(realpath -m "${KEEL_BENCH_DIR:-target/bench-tmp}")
mkdir -p "$bench_dir"
bench_mb=${KEEL_BENCH_MB:-256}

raw_dsync_mb_per_s() {
    mkdir -p "$bench_dir"
    local out
    out=$(dd if=/dev/zero of="$bench_dir/dd-dsync.bin" bs=1M count="$bench_mb" oflag=dsync 2>&1 | tail -n 1)
    rm -f "$bench_dir/dd-dsync.bin"
    # "268435456 bytes (268 MB, 256 MiB) copied, 1.04 s, 257 MB/s": compute from bytes and seconds.
    echo "$out" | awk -F', ' '{ split($1, b, " "); split($(NF-1), s, " "); printf "%.1f\n", b[1] / s[1] / 1e6 }'
}

case "${1:-}" in
    log)
        echo "== raw disk: dd bs=1M count=$bench_mb oflag=dsync in $bench_dir"
        raw=$(raw_dsync_mb_per_s)
        echo "raw sequential fsync'd write bandwidth: $raw MB/s"
        echo "== keel-log append, real files, group commit"
        results=$(KEEL_BENCH_DIR="$bench_dir" KEEL_BENCH_MB="$bench_mb" cargo bench --quiet --locked -p keel-log --bench append)
        echo "$results" | grep -v '^RESULT'
        echo "== against raw disk (target: within 2x of raw, i.e. log/raw >= 0.50, log >= $(awk -v r="$raw" 'BEGIN{printf "%.1f", r/2}') MB/s)"
        echo "$results" | grep '^RESULT' | while read -r _ name record group mbps; do
            mb=${mbps#mb_per_s=}
            awk -v r="$raw" -v m="$mb" -v rec="${record#record_bytes=}" -v g="${group#group_commit_bytes=}" \
                'BEGIN { ratio = m / r; printf "%6dB records, %5dKiB group commit: %8.1f MB/s, log/raw %.2f  %s\n", rec, g/1024, m, ratio, (ratio >= 0.5 ? "within 2x" : "MISSES the 2x target") }'
        done
        ;;
    meta)
        echo "== metadata on a real 3-process loopback cluster (keel start, admin endpoint)"
        KEEL_BENCH_DIR="$bench_dir" cargo bench --quiet --locked -p keel --bench meta
        echo "== simulation speed: scenarios/election-storm.toml (5 brokers, 15 s simulated + heal) under madsim"
        seeds=${KEEL_BENCH_SEEDS:-1000}
        RUSTFLAGS="${RUSTFLAGS:-} --cfg madsim" cargo build --quiet --release --locked --target-dir target/sim -p keel-sim
        for jobs in 1 2; do
            started=$(date +%s.%N)
            target/sim/release/keel-sim sweep --scenario scenarios/election-storm.toml --seeds "1..$seeds" --jobs "$jobs" 2>/dev/null | grep ' passed, ' || true
            ended=$(date +%s.%N)
            awk -v n="$seeds" -v j="$jobs" -v a="$started" -v b="$ended" \
                'BEGIN { printf "election-storm: %d seeds in %.1f s with %d job(s): %.0f seeds/min\n", n, b - a, j, n / (b - a) * 60 }'
        done
        ;;
    repl)
        echo "== raw disk: dd bs=1M count=$bench_mb oflag=dsync in $bench_dir"
        echo "raw sequential fsync'd write bandwidth: $(raw_dsync_mb_per_s) MB/s"
        echo "== produce on a real 3-process loopback cluster (keel start, admin produce path)"
        KEEL_BENCH_DIR="$bench_dir" cargo bench --quiet --locked -p keel --bench repl
        ;;
    *)
        usage
        exit 2
        ;;
esac
