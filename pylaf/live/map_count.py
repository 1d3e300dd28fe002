"""The vm.max_map_count probe of ``pylaf kernel check``: live kernel vs emulator.

``laf_kprog --map-count`` (csrc/kprog/laf_kprog.c map_count_probe()) fills a
PROT_NONE reservation with one-page MAP_FIXED mappings on every other page
until the kernel refuses one, then tries the operations of
docs/kernel-findings.md 5.6 at the limit.  :func:`emulator_probe` replays the
same steps on an :class:`~pylaf.AddressSpace` with the live
``max_map_count`` and the live number of VMAs at the start (filler VMAs
stand for the process's own mappings), so the two outcomes must be equal:

* the failing MAP_FIXED mapping: ENOMEM at map_count >= max_map_count (the
  middle split of mm/vma.c vms_gather_munmap_vmas()); the emulator's
  MAP_FIXED does not replace, so each step is munmap + mmap, the same two
  checks;
* munmap of a middle page: ENOMEM; of an edge page: 0;
* madvise(MADV_NOHUGEPAGE) of a middle page: EAGAIN (split_vma() -ENOMEM,
  rewritten by madvise_vma_behavior()); MADV_DONTNEED: 0;
* a new one-page mmap: ENOMEM (do_mmap(): map_count > max_map_count).
"""
from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pylaf.address_space import AddressSpace
from pylaf.config import Config
from pylaf.errors import LafError
from pylaf.live.kprog import build_kprog

#: the follow-up operations, in the order laf_kprog runs them
STEPS = ("mmap_fixed", "munmap_middle", "munmap_edge", "madvise_nohugepage_middle",
         "madvise_dontneed_middle", "mmap_new")


@dataclass(frozen=True)
class MapCountResult:
    """One side's outcome: ``steps`` maps a step to (errno, map_count after it)."""

    max_map_count: int
    start: int
    mapped: int
    steps: dict[str, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MapCountResult:
        return cls(int(data["max_map_count"]), int(data["start"]), int(data["mapped"]),
                   {s: (int(data[s]["errno"]), int(data[s]["map_count"])) for s in STEPS})


def live_probe(timeout: float = 120.0) -> tuple[MapCountResult, int]:
    """Run ``laf_kprog --map-count``; its result and the host's page size."""
    exe = build_kprog()
    p = subprocess.run([str(exe), "--map-count"], capture_output=True, text=True,
                       timeout=timeout, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"laf_kprog --map-count exited {p.returncode}: {p.stderr.strip()}")
    data = json.loads(p.stdout)
    return MapCountResult.from_json(data), int(data["page_size"])


def _errno(call: Callable[[], object]) -> int:
    try:
        call()
    except LafError as exc:
        return -exc.errno
    return 0


def emulator_probe(max_map_count: int, start: int, page_size: int = 4096) -> MapCountResult:
    """The probe's steps on the emulator, starting with ``start`` VMAs (``start
    - 2`` fillers, the 16-page read-write mapping and the reservation)."""
    ps = page_size
    with AddressSpace(Config(ram="64M", page_size=ps, max_map_count=max_map_count)) as mm:
        for i in range(start - 2):                      # cannot merge: r, none, r, ...
            mm.mmap(ps, prot="" if i % 2 else "r")
        big = mm.mmap(16 * ps, prot="rw")
        base = mm.mmap((max_map_count + 64) * 2 * ps, prot="")

        def count() -> int:
            return mm.stats().nr_vmas

        def fixed(at: int) -> Callable[[], object]:
            def step() -> None:
                mm.munmap(at, ps)                       # MAP_FIXED replaces: unmap first
                mm.mmap(ps, addr=at, prot="r", fixed=True)
            return step

        mapped = 0
        while not (err := _errno(fixed(base + 2 * mapped * ps))):
            mapped += 1
        steps = {"mmap_fixed": (err, count())}
        ops: dict[str, Callable[[], object]] = {
            "munmap_middle": lambda: mm.munmap(big + 4 * ps, ps),
            "munmap_edge": lambda: mm.munmap(big, ps),
            "madvise_nohugepage_middle": lambda: mm.madvise(big + 10 * ps, ps, "MADV_NOHUGEPAGE"),
            "madvise_dontneed_middle": lambda: mm.madvise(big + 10 * ps, ps, "MADV_DONTNEED"),
            "mmap_new": lambda: mm.mmap(ps, prot="r"),
        }
        for name, op in ops.items():
            steps[name] = (_errno(op), count())
        return MapCountResult(max_map_count, start, mapped, steps)


def compare(live: MapCountResult, emu: MapCountResult) -> list[str]:
    """Every difference between the two sides, one line each."""
    out = []
    if live.mapped != emu.mapped:
        out.append(f"MAP_FIXED mappings made: kernel {live.mapped}, emulator {emu.mapped}")
    for s in STEPS:
        if live.steps[s] != emu.steps[s]:
            out.append(f"{s}: kernel errno {live.steps[s][0]} map_count {live.steps[s][1]}, "
                       f"emulator errno {emu.steps[s][0]} map_count {emu.steps[s][1]}")
    return out


def format_result(live: MapCountResult, mismatches: list[str]) -> str:
    """The report's lines for the probe."""
    fail = live.steps["mmap_fixed"]
    head = (f"map_count: vm.max_map_count={live.max_map_count}: MAP_FIXED mapping "
            f"#{live.mapped + 1} fails with errno {fail[0]} at map_count {fail[1]}; "
            + ", ".join(f"{s} errno {live.steps[s][0]}" for s in STEPS[1:]))
    if not mismatches:
        return f"ok   {head} (emulator agrees)"
    return "\n".join([f"FAIL {head}", *(f"     {m}" for m in mismatches)])


def check_map_count() -> tuple[bool, str]:
    """Run both sides; (agree, report text)."""
    live, page_size = live_probe()
    emu = emulator_probe(live.max_map_count, live.start, page_size)
    mismatches = compare(live, emu)
    return not mismatches, format_result(live, mismatches)


__all__ = ["STEPS", "MapCountResult", "check_map_count", "compare", "emulator_probe",
           "format_result", "live_probe"]
