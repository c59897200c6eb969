#!/usr/bin/env bash
# The forgetting experiment (docs/forgetting.md): train on SQL, continue on JSON extraction
# (a) plain, (b) with 5% SQL replay, (c) with 5% self replay; evaluate each on both tasks and on
# the general probes. Usage: benchmarks/forgetting.sh [OUT_DIR]   (default runs/forgetting)
# TUNEWISE="python -m tunewise.cli" by default; on a shared CPU, OMP_NUM_THREADS=1 helps a lot.
set -euo pipefail
OUT=${1:-runs/forgetting}
TW=${TUNEWISE:-python -m tunewise.cli}
mkdir -p "$OUT"

$TW train examples/sql/config.yaml output_dir="$OUT/sql" train.epochs=1
$TW eval --run "$OUT/sql" --data examples/sql/test.jsonl --metric sql_exec --json "$OUT/sql/eval.json"

$TW train examples/json/config.yaml --from "$OUT/sql" output_dir="$OUT/json-plain"
$TW train examples/json/config.yaml --from "$OUT/sql" output_dir="$OUT/json-sql-replay" \
    data.replay.source=examples/sql/train.jsonl data.replay.fraction=0.05
$TW train examples/json/config.yaml --from "$OUT/sql" output_dir="$OUT/json-self-replay" \
    data.replay.source=self data.replay.fraction=0.05
for run in json-plain json-sql-replay json-self-replay; do
    # after --from, eval also re-scores the earlier task (SQL test) with the parent's adapter and this one
    $TW eval --run "$OUT/$run" --data examples/json/test.jsonl --metric json_fields \
        --json "$OUT/$run/eval.json" --html "$OUT/$run/report.html"
done
