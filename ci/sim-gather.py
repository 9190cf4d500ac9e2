#!/usr/bin/env python3
"""Gathers the JSON summaries of a sharded sweep (ci/sim-shard.sh output,
one folder per shard, found recursively under DIR) into one summary per
scenario: seeds run and failed, failures with their replay lines, coverage
summed. Exit status 1 if any seed failed, 2 if DIR holds no summary.
Usage: ci/sim-gather.py DIR"""
import collections
import json
import pathlib
import sys

if len(sys.argv) != 2:
    print(__doc__, file=sys.stderr)
    sys.exit(2)
summaries = sorted(pathlib.Path(sys.argv[1]).rglob("*.json"))
by_subject = collections.defaultdict(list)
for path in summaries:
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        print(f"{path}: not a keel-sim sweep summary: {error}", file=sys.stderr)
        sys.exit(2)
    if "subject" in summary:
        by_subject[summary["subject"]].append(summary)
if not by_subject:
    print(f"{sys.argv[1]}: no keel-sim sweep summaries (*.json) under it", file=sys.stderr)
    sys.exit(2)
failed_any = False
for subject, shards in sorted(by_subject.items()):
    run = sum(s["seeds_run"] for s in shards)
    planned = sum(s["seeds_planned"] for s in shards)
    failures = [f for s in shards for f in s["failures"]]
    coverage = collections.Counter()
    for s in shards:
        coverage.update(s["coverage"])
    print(f"{subject}: {run} of {planned} seeds run over {len(shards)} shards, {len(failures)} failed")
    for event, count in coverage.items():
        mark = "  <- never reached" if count == 0 else ""
        print(f"  {event:<36} {count:>12}{mark}")
    for failure in sorted(failures, key=lambda f: f["seed"]):
        failed_any = True
        print(f"  FAILED seed {failure['seed']} ({failure['checker']}): {failure['replay']}")
sys.exit(1 if failed_any else 0)
