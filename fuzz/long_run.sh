#!/usr/bin/env bash
# Long fuzz run: restart fuzz_diff.py after each finding (keeping the corpus)
# until TOTAL seconds have passed; sum the executions of all segments.
#   fuzz/long_run.sh [TOTAL_SECONDS] [WORKDIR]
set -u
TOTAL=${1:-1800}
WORK=${2:-/tmp/pylaf-fuzz}
HERE="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$WORK/corpus" "$WORK/artifacts"
end=$(( $(date +%s) + TOTAL ))
execs=0; segments=0
while [ "$(date +%s)" -lt "$end" ]; do
    left=$(( end - $(date +%s) ))
    log="$WORK/segment-$segments.log"
    python3 "$HERE/fuzz_diff.py" -max_total_time="$left" -max_len=2048 -len_control=50 \
        -print_final_stats=1 -artifact_prefix="$WORK/artifacts/" "$WORK/corpus" "$HERE/corpus" \
        > "$log" 2>&1
    n=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    [ -z "$n" ] && n=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
    execs=$(( execs + ${n:-0} )); segments=$(( segments + 1 ))
    echo "segment $segments: ${n:-0} executions; $(ls "$WORK/artifacts" | wc -l) artifacts" | tee -a "$WORK/summary.txt"
done
echo "total: $execs executions in $segments segments, $(ls "$WORK/artifacts" | wc -l) artifacts" | tee -a "$WORK/summary.txt"
