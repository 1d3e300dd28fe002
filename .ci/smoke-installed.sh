#!/usr/bin/env bash
# Smoke test of pylaf as a user gets it: build the sdist and the wheel, install
# each into a fresh virtual environment and run the commands from outside the
# source tree (nothing of the checkout on sys.path, helpers compiled from the
# installed package data into a fresh cache).
#
#   .ci/smoke-installed.sh [REPO]        (default: this script's checkout)
#
# Every check prints what it runs and ok/FAILED; checks that need what this
# machine lacks (root, /proc/kpageflags, perf, a C compiler) print "skip:" and
# check the exit-2 message instead.  The last line is "N passed, M failed";
# the exit status is 1 if anything failed.
#
# Needs network access to the package index (pip installs build, setuptools,
# cffi, numpy and rich into the venvs) and python3-venv.
set -uo pipefail

REPO=$(cd "${1:-$(dirname "$0")/..}" && pwd)
PY=${PYTHON:-python3}
WORK=$(mktemp -d /tmp/pylaf-smoke.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/pyproject.toml")
TRACES=$(cd "$REPO/pylaf/data/traces" && ls ./*.laftrace | sed 's#^\./##; s#\.laftrace$##')
passed=0
failed=0

# check DESCRIPTION CMD...: run CMD (a shell snippet) in $WORK, outside the source tree
check() {
    local desc=$1
    shift
    echo "check: $desc"
    echo "  \$ $*"
    if (cd "$WORK" && bash -c "$*") >"$WORK/out" 2>&1; then
        tail -n 4 "$WORK/out" | cut -c1-160 | sed 's/^/    /'
        echo "  ok"
        passed=$((passed + 1))
    else
        echo "  FAILED; output:"
        tail -n 25 "$WORK/out" | sed 's/^/    /'
        failed=$((failed + 1))
    fi
}

# run argv with stdout on a pipe whose reader is already gone; ok if it exits
# 141 (128 + SIGPIPE, pylaf's choice) and says nothing on stderr
export CLOSED_PIPE='
import os, subprocess, sys
r, w = os.pipe()
os.close(r)
p = subprocess.run(sys.argv[1:], stdout=w, stderr=subprocess.PIPE, text=True)
print(f"exit {p.returncode}, stderr {p.stderr!r}")
sys.exit(0 if p.returncode == 141 and not p.stderr else 1)
'

can_root_kernel() { [ "$(id -u)" = 0 ] && [ -r /proc/kpageflags ] && [ -d /sys/kernel/mm/transparent_hugepage ]; }
can_record() { [ "$(id -u)" = 0 ] && command -v perf >/dev/null && command -v "${CC:-cc}" >/dev/null; }

echo "== building sdist and wheel of $REPO (pylaf $VERSION) in $WORK"
# from $WORK: in the checkout, `python -m build` would run its build.py
check "build the sdist and the wheel (python -m build)" \
    "$PY -m venv '$WORK/build-env' && '$WORK/build-env/bin/pip' install -q build &&
     '$WORK/build-env/bin/python' -m build --outdir '$WORK/dist' '$REPO'"
check "the wheel carries the traces, the helper sources and the license" \
    "$PY -m zipfile -l dist/pylaf-*.whl > wheel.txt &&
     for t in $(echo $TRACES); do grep -q \"pylaf/data/traces/\$t.laftrace\" wheel.txt || exit 1; done &&
     grep -q pylaf/live/csrc/laf_kprog.c wheel.txt && grep -q pylaf/live/csrc/laf_tracee.c wheel.txt &&
     grep -q pylaf/live/csrc/laf_workload.c wheel.txt && grep -q 'dist-info/licenses/LICENSE' wheel.txt &&
     ! grep -q 'pylaf/_laf.c ' wheel.txt"
check "the sdist carries the C core, the builder, docs and tests" \
    "tar tzf dist/pylaf-$VERSION.tar.gz > sdist.txt &&
     for f in csrc/laf.h csrc/laf_internal.h csrc/memory.c build.py setup.py README.md LICENSE CHANGELOG.md \
              MANIFEST.in pylaf/live/csrc/laf_kprog.c pylaf/data/traces/git-log.laftrace tests/conftest.py \
              traces/fixtures/sh-true.tracee.log; do grep -qx \"pylaf-$VERSION/\$f\" sdist.txt || { echo missing \$f; exit 1; }; done"

for kind in wheel sdist; do
    if [ "$kind" = wheel ]; then artefact=$(ls "$WORK"/dist/pylaf-*.whl 2>/dev/null); else artefact="$WORK/dist/pylaf-$VERSION.tar.gz"; fi
    venv="$WORK/venv-$kind"
    bin="$venv/bin"
    # a fresh helper cache per install: the C helpers come from the installed package data
    run="env XDG_CACHE_HOME='$WORK/cache-$kind' PYLAF_BUILD_DIR= PYTHONPATH="
    echo "== $kind: $(basename "${artefact:-missing}")"
    check "$kind: install into a fresh venv" \
        "$PY -m venv '$venv' && '$bin/pip' install -q '$artefact'"
    check "$kind: pylaf is imported from the venv, not the checkout" \
        "$run '$bin/python' -c 'import pylaf, sys; print(pylaf.__file__); assert pylaf.__file__.startswith(sys.prefix)'"
    check "$kind: pylaf --version is $VERSION (package metadata)" \
        "test \"\$($run '$bin/pylaf' --version)\" = 'pylaf $VERSION'"
    check "$kind: pylaf compare --scale 0.02 lists every bundled trace workload" \
        "$run '$bin/pylaf' compare --scale 0.02 > compare.txt &&
         for t in $(echo $TRACES); do grep -q \"trace-\$t\" compare.txt || { echo missing trace-\$t; exit 1; }; done"
    for cmd in "kernel check --list" "replay $REPO/pylaf/data/traces/git-log.laftrace"; do
        check "$kind: a closed pipe ends quietly (pylaf $cmd | head, the reader gone first: status 141, no stderr)" \
            "$run '$bin/python' -c \"\$CLOSED_PIPE\" '$bin/pylaf' $cmd"
    done
    if can_root_kernel; then
        check "$kind: pylaf kernel check agrees with the live kernel (helpers built from package data)" \
            "$run '$bin/pylaf' kernel check > check.txt; rc=\$?; tail -1 check.txt; test \$rc = 0 &&
             grep -q 'program runs agree' check.txt && ls '$WORK/cache-$kind/pylaf/kprog/' | grep -q '^laf_kprog-'"
    else
        echo "skip: $kind: pylaf kernel check needs root, /proc/kpageflags and THP sysfs"
        check "$kind: pylaf kernel check says in one line why it cannot run (exit 2)" \
            "$run '$bin/pylaf' kernel check > out.txt 2> err.txt; rc=\$?; cat err.txt;
             test \$rc = 2 && test \$(wc -l < err.txt) = 1 && grep -q 'cannot run here' err.txt"
    fi
    if can_record; then
        check "$kind: pylaf record + replay of a tiny program (1 MiB touched: >= 256 anon faults at order-0, fewer at order-4)" \
            "printf '#include <stdlib.h>\\nint main(void){volatile char *p=malloc(1<<20);for(int i=0;i<(1<<20);i+=4096)p[i]=1;return p[4096]-1;}\\n' > tiny.c &&
             ${CC:-cc} -O1 -o tiny tiny.c &&
             $run '$bin/pylaf' record -o tiny.laftrace -- ./tiny && test -s tiny.laftrace &&
             $run '$bin/pylaf' replay tiny.laftrace --policy order-0 --policy order-4 > replay.txt && tail -4 replay.txt &&
             awk '\$1 == \"order-0\" { o0 = \$2 } \$1 == \"order-4\" { o4 = \$2 } END { exit !(o0 >= 256 && o4 < o0) }' replay.txt"
        check "$kind: pylaf record of a command that cannot start: exit 127, no trace" \
            "$run '$bin/pylaf' record -o nope.laftrace -- ./no-such-command; rc=\$?; test \$rc = 127 && test ! -e nope.laftrace"
    else
        echo "skip: $kind: pylaf record/replay need root, perf and a C compiler"
    fi
done

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
