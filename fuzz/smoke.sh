#!/usr/bin/env bash
# CI smoke run of the differential fuzz target (< 60 s).
#   bash fuzz/smoke.sh [SECONDS]      (default 40)
# Installs atheris from PyPI if it is missing; a finding exits non-zero and
# leaves the input in $WORK/artifacts (replay: python3 fuzz/fuzz_diff.py FILE).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
SECS=${1:-40}
python3 -c "import atheris" 2>/dev/null || python3 -m pip install -q atheris
WORK=$(mktemp -d)
mkdir -p "$WORK/corpus" "$WORK/artifacts"
python3 "$HERE/fuzz_diff.py" -max_total_time="$SECS" -max_len=2048 -len_control=50 \
    -print_final_stats=1 -artifact_prefix="$WORK/artifacts/" "$WORK/corpus" "$HERE/corpus" \
    > "$WORK/log" 2>&1 || { tail -60 "$WORK/log"; echo "fuzz smoke: FINDING, inputs in $WORK/artifacts"; exit 1; }
grep -E "^(stat::number_of_executed_units|fuzz_diff:)" "$WORK/log" || true
echo "fuzz smoke: ok"
