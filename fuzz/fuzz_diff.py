#!/usr/bin/env python3
"""atheris fuzz target: operation sequences on the C emulator and the reference.

Each input is decoded (FuzzedDataProvider) into a machine (page size, arch,
RAM, memcg limit, policy) and a sequence of operations (the vocabulary of
``fuzz/diffops.py``: mmap/munmap/madvise/prctl/uffd_*/accesses/memcg/
fragment/shrink/policy switches/fault injection), each run in one of up to
``diffops.MAX_PROCS`` live processes, plus fork of a live process and exit
of one (never the last; ``diffops.random_proc_op``).  After every operation:

* the machine-wide invariant check must pass on the C side (refcounts and
  mapcounts recounted over every process) and the reference's own check on
  the Python side;
* outcomes, and for every process its VMAs, every PTE and all kernel-named
  counters, and the machine-wide counters of the C emulator must equal the
  pure-Python reference's.

Any difference raises, and atheris saves the input as ``crash-*``.
Coverage guidance comes from instrumenting ``pylaf`` (the reference model's
branches mirror the C core's).  The C core itself runs uninstrumented; build
it with ``PYLAF_SANITIZE=1 python3 build.py`` to fuzz under ASan/UBSan
(then LD_PRELOAD the ASan runtime, see fuzz/README.md).

Usage::

    python3 fuzz/fuzz_diff.py -max_total_time=45 fuzz/corpus     # CI smoke
    python3 fuzz/fuzz_diff.py -max_total_time=1800 -print_final_stats=1 fuzz/corpus
    python3 fuzz/fuzz_diff.py crash-<hash>                          # replay one input
"""
from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["pylaf", "diffops"]):
    import diffops

MAX_OPS = int(os.environ.get("PYLAF_FUZZ_MAX_OPS", "40"))


class FdpRandom:
    """The subset of random.Random that diffops uses, fed by the fuzzer's bytes."""

    def __init__(self, fdp: atheris.FuzzedDataProvider) -> None:
        self.fdp = fdp

    def random(self) -> float:
        return self.fdp.ConsumeProbability()

    def randrange(self, a: int, b: int | None = None) -> int:
        if b is None:
            a, b = 0, a
        if b <= a:
            raise ValueError("empty range")
        return self.fdp.ConsumeIntInRange(a, b - 1)

    def choice(self, seq):  # type: ignore[no-untyped-def]
        return seq[self.fdp.ConsumeIntInRange(0, len(seq) - 1)]

    def choices(self, seq, weights=None, k=1):  # type: ignore[no-untyped-def]
        if weights is None:
            return [self.choice(seq) for _ in range(k)]
        total = sum(weights)
        out = []
        for _ in range(k):
            x = self.fdp.ConsumeIntInRange(0, total - 1)
            for item, w in zip(seq, weights, strict=True):
                if x < w:
                    out.append(item)
                    break
                x -= w
        return out


STATS = {"ops": 0, "inputs": 0, "forks": 0, "exits": 0}


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    rnd = FdpRandom(fdp)
    spec = diffops.random_spec(rnd)  # type: ignore[arg-type]
    procs = diffops.Processes.start(spec)
    trail = []
    try:
        for _ in range(MAX_OPS):
            if fdp.remaining_bytes() == 0:
                break
            op = diffops.random_proc_op(rnd, procs)  # type: ignore[arg-type]
            trail.append(op)
            procs.step(op)
            procs.check(f"op {len(trail)}", folios=False)
            STATS["ops"] += 1
    except AssertionError as exc:
        raise diffops.Mismatch(f"spec={spec}\nops:\n  " + "\n  ".join(map(diffops.short, trail))
                               + f"\n{exc}") from None
    finally:
        procs.close()
    STATS["inputs"] += 1
    STATS["forks"] += procs.forks
    STATS["exits"] += procs.exits


def _report() -> None:
    print(f"fuzz_diff: {STATS['inputs']} inputs, {STATS['ops']} operations compared "
          f"({STATS['forks']} forks, {STATS['exits']} exits)",
          file=sys.stderr, flush=True)


def main() -> None:
    atexit.register(_report)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
