#!/usr/bin/env bash
# One shard of a large seed sweep, as CI matrix jobs and Kubernetes pods run it:
#   ci/sim-shard.sh INDEX COUNT SEEDS OUT_DIR [SCENARIO ...]
# e.g. ci/sim-shard.sh 3 16 1..100000 out scenarios/swarm.toml
# For each scenario (default: every scenarios/*.toml) it sweeps shard
# INDEX/COUNT of SEEDS (0 <= INDEX < COUNT) and writes into OUT_DIR:
#   <scenario>.json          the sweep summary (keel-sim sweep --json)
#   regressions.toml         the failing seeds, in the corpus format
#   <scenario>-seed<N>.jsonl each failing seed's trace (replayed with --trace)
# Optional: KEEL_SIM_JOBS (default: the machine's cores), KEEL_SIM_TIME_BUDGET
# (per scenario, e.g. 20m), KEEL_SIM_PROFILE (default sim-sweep: the LTO
# build, slower to build, faster to sweep). Exit status 1 if any seed
# failed, 2 on bad input.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 4 ]; then
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
index=$1 count=$2 seeds=$3 out=$4
shift 4
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(scenarios/*.toml)
jobs=${KEEL_SIM_JOBS:-$(nproc)}
export KEEL_SIM_PROFILE=${KEEL_SIM_PROFILE:-sim-sweep}
budget=()
[ -z "${KEEL_SIM_TIME_BUDGET:-}" ] || budget=(--time-budget "$KEEL_SIM_TIME_BUDGET")
mkdir -p "$out"
failed=0
for scenario in "${scenarios[@]}"; do
    stem=$(basename "$scenario" .toml)
    echo "== $scenario: shard $index/$count of seeds $seeds"
    status=0
    ci/sim.sh sweep --scenario "$scenario" --seeds "$seeds" --shard "$index/$count" --jobs "$jobs" "${budget[@]}" \
        --json "$out/$stem.json" --corpus "$out/regressions.toml" || status=$?
    case $status in
        0) ;;
        1)
            failed=1
            for seed in $(python3 -c 'import json, sys; print(" ".join(str(f["seed"]) for f in json.load(open(sys.argv[1]))["failures"]))' "$out/$stem.json"); do
                ci/sim.sh run --scenario "$scenario" --seed "$seed" --trace "$out/$stem-seed$seed.jsonl" || true
            done
            ;;
        *) exit "$status" ;;
    esac
done
exit $failed
