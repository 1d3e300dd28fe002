"""Process-pool sweep vs serial: the default ``pylaf compare`` set (every
default workload x every default policy, scale 1) run serially and with
``jobs=2``; best of ``--runs`` wall times each, and a check that both give the
same rows (timing fields aside).  Writes JSON to stdout (or ``-o FILE``).

    python3 bench/sweep_pool.py --runs 3 -o bench/results/sweep_pool.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from pylaf.experiments.compare import compare
from pylaf.results import rows_of

TIMING = ("elapsed_ns", "emulator_ns_per_fault")


def _timed(jobs: int, scale: float) -> tuple[float, list[dict[str, Any]]]:
    t0 = time.perf_counter()
    res = compare(None, None, scale=scale, skip_invalid=True, jobs=jobs)
    wall = time.perf_counter() - t0
    return wall, [{k: v for k, v in r.items() if k not in TIMING} for r in rows_of(res)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args()
    serial, pooled = [], []
    rows_serial: list[dict[str, Any]] = []
    rows_pooled: list[dict[str, Any]] = []
    for _ in range(args.runs):                      # interleaved: host noise hits both
        w, rows_serial = _timed(1, args.scale)
        serial.append(w)
        w, rows_pooled = _timed(args.jobs, args.scale)
        pooled.append(w)
    doc = {"bench": "sweep_pool", "jobs": args.jobs, "scale": args.scale, "runs": args.runs,
           "cells": len(rows_serial), "cpus": os.cpu_count(),
           "affinity": len(os.sched_getaffinity(0)), "python": platform.python_version(),
           "serial_s": serial, "pooled_s": pooled, "serial_best_s": min(serial),
           "pooled_best_s": min(pooled), "speedup_best": min(serial) / min(pooled),
           "identical_rows": rows_serial == rows_pooled}
    text = json.dumps(doc, indent=1)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)
    return 0 if doc["identical_rows"] else 1


if __name__ == "__main__":
    sys.exit(main())
