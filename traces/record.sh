#!/bin/sh
# Re-record the bundled traces (see README.md).  Run as root from the
# repository root, with the machine's default THP settings (mTHP never).
# Each command's output goes to /dev/null; ASLR is off (pylaf record default).
set -e
cd "$(dirname "$0")/.."
W=$(python3 -c 'from pylaf.live.kprog import build_helper; print(build_helper("laf_workload"))')

python3 -m pylaf record -o pylaf/data/traces/python-numeric.laftrace --name python-numeric \
    --description "python3 start-up, import json+math, sqrt of 300k ints into a list" -- \
    env PYTHONHASHSEED=0 /usr/bin/python3 -c \
    'import json, math; xs = [math.sqrt(i) for i in range(300000)]; print(json.dumps(sum(xs)))' >/dev/null

python3 -m pylaf record -o pylaf/data/traces/sqlite-insert.laftrace --name sqlite-insert \
    --description "python3 sqlite3 :memory: bulk insert of 200k rows + an aggregate" -- \
    env PYTHONHASHSEED=0 /usr/bin/python3 -c \
    'import sqlite3; c = sqlite3.connect(":memory:"); c.execute("create table t(a integer primary key, b text, c real)"); c.executemany("insert into t values(?,?,?)", ((i, "row%08d" % i, i * 0.5) for i in range(200000))); c.commit(); print(c.execute("select count(*), sum(c) from t").fetchone())' >/dev/null

python3 -m pylaf record -o pylaf/data/traces/gcc-small.laftrace --name gcc-small \
    --description "gcc -O2 -g -c of a 150-line C file (gcc, cc1, as)" -- \
    gcc -O2 -g -c traces/src/small.c -o /tmp/pylaf-small.o >/dev/null

python3 -m pylaf record -o pylaf/data/traces/git-log.laftrace --name git-log \
    --description "git log --stat -n 20 of a fixed commit of this repository" -- \
    git --no-pager log --stat -n 20 f047e47 >/dev/null

python3 -m pylaf record -o pylaf/data/traces/c-workload.laftrace --name c-workload \
    --description "pylaf/live/csrc/laf_workload.c: brk heap, mmap chunks, realloc/mremap, strided calloc, read-then-write, qsort, a thread" -- \
    "$W" >/dev/null

# fork without exec: the child writes every page of a 32 MiB bytearray and
# exits, then the parent writes every page (replayed as a real emulated fork)
python3 -m pylaf record -o pylaf/data/traces/python-fork-cow.laftrace --name python-fork-cow -- \
    python3 -c '
import os
b = bytearray(32 << 20)
for i in range(0, len(b), 4096): b[i] = 1
pid = os.fork()
if pid == 0:
    for i in range(0, len(b), 4096): b[i] = 2
    os._exit(0)
os.waitpid(pid, 0)
for i in range(0, len(b), 4096): b[i] = 3
'

python3 -m pylaf record -o pylaf/data/traces/node-jit.laftrace --name node-jit \
    --description "node --predictable (V8 single-threaded, seeded): 2M objects pushed into an array" \
    -- node --predictable --random-seed=1 -e 'let a=[]; for(let i=0;i<2e6;i++) a.push({i, s: "x"+i}); console.log(a.length)' >/dev/null
