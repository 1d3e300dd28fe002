#!/usr/bin/env bash
# make asan: the _laf extension built with ASan + UBSan, then under the ASan
# runtime: a chosen pytest subset (hostile and bad input, threads and
# lifetime, snapshots, the VMA tree, the differential ci profile), the
# differential fuzz corpus replayed, random differential runs
# (fuzz/run_random.py: the fuzzer's operation vocabulary, hostile arguments
# and small max_map_count machines included) and the trace-loader fuzz target.
# Any sanitizer report aborts the process (UBSAN halt_on_error, ASAN
# abort_on_error), so "0 findings" means every step exited 0.
#   bash fuzz/asan.sh [FUZZ_SECONDS]     (default 20 per fuzz step)
# With the ASan runtime preloaded, atheris's coverage feedback is lost (libasan
# provides the coverage symbols), so the differential target's new inputs
# come from run_random.py's seeded random sequences instead; grow a corpus
# without ASan (fuzz/long_run.sh) and replay it here with ASAN_CORPUS=DIR.
# The sanitized build lives in build/asan/src, a copy of this tree's files
# (tracked and untracked-but-not-ignored), so the tree's own extension is
# left as it is.  Leak checking is off (CPython keeps memory until exit).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SECS=${1:-20}
DEST="$ROOT/build/asan/src"
TESTS="tests/test_api_hardening.py tests/test_bad_input.py tests/test_reference_hostile.py
       tests/test_trace_hostile.py tests/test_threads.py tests/test_lifetime.py
       tests/test_snapshots.py tests/test_vma_tree.py tests/test_differential.py
       tests/test_fork.py tests/test_differential_fork.py"

rm -rf "$DEST"
mkdir -p "$DEST"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard) |
    (cd "$ROOT" && xargs -0 cp --parents -t "$DEST" 2>/dev/null || true)
cd "$DEST"
PYLAF_SANITIZE=1 python3 build.py

ASAN_LIB=$(cc -print-file-name=libasan.so)
UBSAN_LIB=$(cc -print-file-name=libubsan.so)
run() {
    LD_PRELOAD="$ASAN_LIB $UBSAN_LIB" \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    PYTHONPATH="$DEST" HYPOTHESIS_PROFILE=ci "$@"
}
start=$(date +%s)
# shellcheck disable=SC2086
run python3 -m pytest -q -p no:cacheprovider --benchmark-disable $TESTS
python3 -c "import atheris" 2>/dev/null || { echo "asan: atheris missing, fuzz skipped"; exit 0; }
work=$(mktemp -d)
for dir in fuzz/corpus ${ASAN_CORPUS:-}; do
    if ! run python3 fuzz/fuzz_diff.py -runs=0 "$dir" > "$work/replay.log" 2>&1; then
        tail -40 "$work/replay.log"; echo "asan: fuzz_diff replay of $dir FINDING"; exit 1
    fi
    echo "asan: fuzz_diff replayed $dir ($(find "$dir" -type f | wc -l) inputs), 0 findings"
done
run python3 fuzz/run_random.py --seeds 1000000:2000000 --steps 300 --stop-after 1 \
    --max-seconds "$SECS" | tail -1
if ! run python3 fuzz/fuzz_trace.py -max_total_time="$SECS" -max_len=2048 -print_final_stats=1 \
        -artifact_prefix="$work/" "$work" fuzz/corpus-trace > "$work/trace.log" 2>&1; then
    tail -40 "$work/trace.log"; echo "asan: fuzz_trace FINDING, input in $work"; exit 1
fi
echo "asan: fuzz_trace $(grep -o 'number_of_executed_units: *[0-9]*' "$work/trace.log" | tail -1) in ${SECS} s, 0 findings"
echo "asan: ok ($(( $(date +%s) - start )) s under the sanitizers)"
