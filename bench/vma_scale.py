"""mmap cost at many VMAs, and the vm.max_map_count limit (issue 13 item 5).

For each VMA count (default 1,000 and 60,000): an AddressSpace filled with
one-page VMAs that cannot merge (alternating protections, placed top-down,
so they are packed below mmap_base without a gap: the worst case for a
linear placement scan), then ``--reps`` one-page mmaps that land below all of
them, each unmapped again afterwards.  Reported per mmap: the best of
``--runs`` runs, through ``lib.laf_mmap`` directly (C core + cffi call) and
through ``AddressSpace.mmap`` (argument checks, in-flight guard).  Then the
limit: with the default ``max_map_count`` (65,530) one-page mmaps until one
fails (do_mmap(): map_count > max_map_count, so the mapping that would make
VMA 65,532 fails), and the probe pattern of ``pylaf kernel check``
(pylaf/live/map_count.py: a reservation filled every other page with MAP_FIXED
mappings, refused at map_count >= 65,530 by the middle split).

    PYTHONPATH=. python3 bench/vma_scale.py [--counts 1000,60000] [--reps 2000] [--runs 5] [-o FILE]

Exit status 1 if the mmap cost at the largest count is above ``--max-ratio``
(default 2) times the cost at the smallest.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from typing import Any

import pylaf
from pylaf import AddressSpace, Config, LafMemoryError
from pylaf._ffi import ffi, lib
from pylaf.live.map_count import emulator_probe

PAGE = 4096


def fill(mm: AddressSpace, n: int) -> None:
    """n one-page VMAs that cannot merge, packed top-down."""
    for i in range(n):
        mm.mmap(PAGE, prot="rw" if i % 2 else "r")


def mmap_cost(mm: AddressSpace, reps: int, runs: int) -> dict[str, float]:
    """Best ns per one-page mmap over ``runs`` runs of ``reps`` calls."""
    out = ffi.new("uint64_t *")
    raw = mm.mm
    best_c = best_py = float("inf")
    for _ in range(runs):
        got = []
        t0 = time.perf_counter_ns()
        for _ in range(reps):
            lib.laf_mmap(raw, 0, PAGE, 0, 0, out)
            got.append(int(out[0]))
        best_c = min(best_c, (time.perf_counter_ns() - t0) / reps)
        for a in got:
            mm.munmap(a, PAGE)
        t0 = time.perf_counter_ns()
        got = [mm.mmap(PAGE, prot="") for _ in range(reps)]
        best_py = min(best_py, (time.perf_counter_ns() - t0) / reps)
        for a in got:
            mm.munmap(a, PAGE)
    return {"laf_mmap_ns": round(best_c, 1), "AddressSpace_mmap_ns": round(best_py, 1)}


def plain_limit() -> dict[str, Any]:
    """One-page mmaps with the default max_map_count until one fails."""
    mm = AddressSpace(Config(ram="64M"))
    n = 0
    t0 = time.perf_counter()
    try:
        while True:
            mm.mmap(PAGE, prot="rw" if n % 2 else "r")
            n += 1
    except LafMemoryError as exc:
        errno = -exc.errno
    return {"max_map_count": mm.config.max_map_count, "mapped": n, "failing_mapping": n + 1,
            "errno": errno, "map_count": mm.stats().nr_vmas,
            "seconds": round(time.perf_counter() - t0, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", default="1000,60000", help="VMA counts (comma-separated)")
    ap.add_argument("--reps", type=int, default=2000, help="mmaps per run (default 2000)")
    ap.add_argument("--runs", type=int, default=5, help="runs per count, best kept (default 5)")
    ap.add_argument("--max-ratio", type=float, default=2.0, help="largest acceptable cost ratio")
    ap.add_argument("-o", "--output", help="write the results as JSON")
    args = ap.parse_args(argv)
    print(f"pylaf from {pylaf.__file__}")
    counts = [int(c) for c in args.counts.split(",")]
    rows = []
    for n in counts:
        mm = AddressSpace(Config(ram="64M"))
        t0 = time.perf_counter()
        fill(mm, n)
        fill_s = time.perf_counter() - t0
        cost = mmap_cost(mm, args.reps, args.runs)
        rows.append({"vmas": n, "fill_seconds": round(fill_s, 3), **cost})
        print(f"{n:>7} VMAs: fill {fill_s:.2f} s, laf_mmap {cost['laf_mmap_ns']:.0f} ns, "
              f"AddressSpace.mmap {cost['AddressSpace_mmap_ns']:.0f} ns")
        mm.close()
    ratio = rows[-1]["laf_mmap_ns"] / rows[0]["laf_mmap_ns"]
    ratio_py = rows[-1]["AddressSpace_mmap_ns"] / rows[0]["AddressSpace_mmap_ns"]
    print(f"ratio {counts[-1]}/{counts[0]}: laf_mmap {ratio:.2f}x, AddressSpace.mmap {ratio_py:.2f}x")
    limit = plain_limit()
    print(f"max_map_count {limit['max_map_count']}: mmap #{limit['failing_mapping']} fails with "
          f"errno {limit['errno']} at map_count {limit['map_count']} ({limit['seconds']} s)")
    probe = emulator_probe(lib.LAF_DEFAULT_MAX_MAP_COUNT, 26)
    print(f"probe pattern (start 26 VMAs): MAP_FIXED #{probe.mapped + 1} fails with errno "
          f"{probe.steps['mmap_fixed'][0]} at map_count {probe.steps['mmap_fixed'][1]}")
    result = {"command": " ".join(["bench/vma_scale.py", *(argv or sys.argv[1:])]),
              "machine": platform.node(), "python": platform.python_version(),
              "reps": args.reps, "runs": args.runs, "rows": rows,
              "ratio_laf_mmap": round(ratio, 3), "ratio_AddressSpace_mmap": round(ratio_py, 3),
              "plain_limit": limit,
              "probe_pattern": {"start": probe.start, "mapped": probe.mapped,
                                "steps": {k: list(v) for k, v in probe.steps.items()}}}
    if args.output:
        with open(args.output, "w", encoding="ascii") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
    return 0 if ratio <= args.max_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
