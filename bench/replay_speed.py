"""Trace replay speed: the Python replay (``engine="python"``, one call per
event batch) vs the compiled op stream (``engine="compiled"``, one
``laf_run_ops()`` call) on every bundled trace, in the same run.

Per trace and engine: ``--runs`` replays, interleaved (host noise hits both),
each into a fresh AddressSpace (its creation not timed) under the THP
settings recorded in the trace header (as ``pylaf replay`` without
``--policy``).  Timed: the whole ``replay_into()`` call (report included);
for the compiled engine also the ``AddressSpace.run_ops()`` call alone and
the one-off compilation.  Events/s = recorded events / median time.  Both
engines' Stats and ReplayReport are compared.  JSON to stdout (or ``-o``).

    PYTHONPATH=. python3 bench/replay_speed.py --runs 21 -o bench/results/replay_speed.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from pylaf import AddressSpace, Config, Policy
from pylaf.trace.bundled import traces_dir
from pylaf.trace.compile import compile_trace
from pylaf.trace.format import Trace, load_trace
from pylaf.trace.replay import replay_into


def _policy(trace: Trace) -> Policy:
    recorded = trace.header.get("thp_settings")
    return Policy.from_sysfs_values(recorded) if recorded else Policy()


def _once(trace: Trace, engine: str) -> tuple[float, float, Any]:
    """(replay_into seconds, run_ops seconds or 0, (stats, report))."""
    with AddressSpace(Config(policy=_policy(trace), ram="8G")) as mm:
        t0 = time.perf_counter()
        rep = replay_into(mm, trace, engine=engine)  # type: ignore[arg-type]
        wall = time.perf_counter() - t0
        out = (mm.stats().as_dict(), rep)
    core = 0.0
    if engine == "compiled":
        ops = compile_trace(trace).ops
        with AddressSpace(Config(policy=_policy(trace), ram="8G")) as mm:
            t0 = time.perf_counter()
            mm.run_ops(ops)
            core = time.perf_counter() - t0
    return wall, core, out


def bench_trace(path: Path, runs: int) -> dict[str, Any]:
    trace = load_trace(path)
    t0 = time.perf_counter()
    comp = compile_trace(trace)
    compile_s = time.perf_counter() - t0
    py: list[float] = []
    cc: list[float] = []
    core: list[float] = []
    results: dict[str, Any] = {}
    for _ in range(runs):
        w, _c, results["python"] = _once(trace, "python")
        py.append(w)
        w, c, results["compiled"] = _once(trace, "compiled")
        cc.append(w)
        core.append(c)
    n = len(trace.events)
    med = {k: statistics.median(v) for k, v in (("python", py), ("compiled", cc), ("run_ops", core))}
    return {"trace": path.stem, "events": n, "records": len(comp.ops), "compile_ms": compile_s * 1e3,
            "python_ms": [x * 1e3 for x in py], "compiled_ms": [x * 1e3 for x in cc],
            "run_ops_ms": [x * 1e3 for x in core],
            "median_ms": {k: v * 1e3 for k, v in med.items()},
            "events_per_s": {k: n / v for k, v in med.items()},
            "speedup": med["python"] / med["compiled"],
            "identical": results["python"] == results["compiled"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args()
    rows = [bench_trace(p, args.runs) for p in sorted(traces_dir().glob("*.laftrace"))]
    doc = {"bench": "replay_speed", "runs": args.runs, "cpus": os.cpu_count(),
           "python": platform.python_version(), "machine": platform.machine(),
           "target_events_per_s": 10e6, "traces": rows}
    text = json.dumps(doc, indent=1)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)
    for r in rows:
        e = r["events_per_s"]
        print(f"# {r['trace']:16} {r['events']:6} events  python {e['python'] / 1e6:6.2f} M/s  "
              f"compiled {e['compiled'] / 1e6:6.2f} M/s  run_ops {e['run_ops'] / 1e6:6.2f} M/s  "
              f"x{r['speedup']:.1f}  identical={r['identical']}")
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
