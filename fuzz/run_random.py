#!/usr/bin/env python3
"""Seeded random differential soak (no hypothesis, no atheris).

    python3 fuzz/run_random.py --seeds 0:500 --steps 400 [--stop-after 1]

Each seed builds a random machine (page size, arch, RAM, memcg, policy) and
runs ``--steps`` random operations on the C emulator and the pure-Python
reference, comparing everything after each (fuzz/diffops.py).  Prints every
mismatch with the last operations and a replay hint; exits 1 if any.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diffops


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0:100", help="START:END (end exclusive)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--stop-after", type=int, default=0, help="stop after N mismatches (0: never)")
    ap.add_argument("--max-seconds", type=float, default=0,
                    help="stop starting new seeds after this many seconds (0: run every seed)")
    args = ap.parse_args()
    lo, hi = (int(x) for x in args.seeds.split(":"))
    t0 = time.time()
    steps = fails = 0
    for seed in range(lo, hi):
        if args.max_seconds and time.time() - t0 > args.max_seconds:
            hi = seed
            break
        try:
            steps += diffops.run_random(seed, args.steps)
        except diffops.Mismatch as exc:
            fails += 1
            print(f"=== MISMATCH seed {seed} (replay: diffops.replay({seed}, STEP))\n{exc}\n", flush=True)
            if args.stop_after and fails >= args.stop_after:
                break
    dt = time.time() - t0
    print(f"run_random: seeds {lo}:{hi}, {steps} steps compared, {fails} mismatches, {dt:.0f} s")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
