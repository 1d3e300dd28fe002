"""The two sides of the live check: what the live kernel and the emulator
report for one access program, in one shape (:class:`SideResult`).

* :func:`live_side`: from a laf_kprog run on the live kernel
  (:class:`pylaf.live.kprog.KprogResult`);
* :func:`emulator_side`: the same program, op by op, through the
  :class:`~pylaf.AddressSpace` API, every VMA mapped with ``fixed=True`` at
  the very address the live kernel reported, so placement and alignment are
  identical on both sides;
* :func:`combine_attempts`: the live kernel's own share of system-wide
  counters, estimated over several runs.

Folio layouts of both sides come from :mod:`pylaf.layout` (the emulator's
``read_ptes`` through :func:`pylaf.layout.runs_from_ptes`; the live kernel's
runs as laf_kprog's ``emit_layout()`` built them).
"""
from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from pylaf.address_space import AddressSpace
from pylaf.config import Config
from pylaf.errors import LafError
from pylaf.geometry import Geometry
from pylaf.layout import LayoutSummary, Run, labelled, runs_from_ptes
from pylaf.live.kprog import KprogResult, OpResult
from pylaf.live.programs import CheckProgram, parse_num, parse_options
from pylaf.policy import Policy
from pylaf.sizes import parse_size

#: per-size counters compared (mm/huge_memory.c ``mthp_stats`` / sysfs ``hugepages-*/stats``)
STAT_NAMES: tuple[str, ...] = (
    "anon_fault_alloc", "anon_fault_fallback", "anon_fault_fallback_charge",
    "anon_fault_declined", "nr_anon", "split_deferred", "nr_anon_partially_mapped",
)
#: /proc/vmstat counters compared (include/linux/vm_event_item.h)
VMSTAT_NAMES: tuple[str, ...] = (
    "thp_fault_alloc", "thp_fault_fallback", "thp_fault_fallback_charge", "thp_split_pmd",
    "thp_deferred_split_page",
)

#: Gauges and the event counter that increments them.  ``nr_anon`` goes up
#: only at anon_fault_alloc here (no swap, no mTHP collapse for anon in 6.18)
#: and down when a folio is freed; ``nr_anon_partially_mapped`` goes up only
#: with split_deferred.
GAUGE_SOURCE = {"nr_anon": "anon_fault_alloc", "nr_anon_partially_mapped": "split_deferred"}

#: Counters that only ever go up: noise from other processes can only add.
MONOTONIC = {"anon_fault_alloc", "anon_fault_fallback", "anon_fault_fallback_charge",
             "anon_fault_declined", "split_deferred"}
#: vmstat events (only go up); other vmstat lines are gauges
_VMSTAT_EVENTS = ("thp_fault", "thp_collapse", "thp_split", "thp_deferred", "thp_zero")

OpCounters = dict[tuple[str, int], int]          # (stat, kB) -> delta


@dataclass(frozen=True)
class MappingView:
    """One mapping at one snapshot: labelled runs and their counts."""

    runs: list[tuple[int, int, str]]             # (offset, length, label), bytes
    summary: LayoutSummary

    @classmethod
    def of(cls, runs: Sequence[Run], page_size: int) -> MappingView:
        return cls(labelled(runs, page_size), LayoutSummary.of(runs))


@dataclass(frozen=True)
class SnapshotView:
    rss_kb: int
    mappings: dict[str, MappingView]


@dataclass
class SideResult:
    """What one side (live kernel or emulator) reported for one program."""

    page_size: int
    op_faults: list[Optional[int]]                 # per op (None: not a touch op)
    op_signal: list[Optional[int]]
    counters: dict[str, dict[int, int]]            # stat -> {kB: delta}, summed over ops
    vmstat: dict[str, int]
    snapshots: dict[str, SnapshotView]
    vmas: dict[str, list[tuple[int, int]]] = field(default_factory=dict)   # snapshot -> VMAs
    #: per op: {(stat, kB): delta} and {vmstat: delta} (live side only)
    op_counters: list[OpCounters] = field(default_factory=list)
    op_vmstat: list[dict[str, int]] = field(default_factory=list)
    #: per op: errno of a failed munmap/madvise/mmap (0: success)
    op_errno: list[int] = field(default_factory=list)

    @property
    def faults(self) -> int:
        return sum(f for f in self.op_faults if f)


def _median(values: Sequence[int]) -> int:
    v = sorted(values)
    return v[(len(v) - 1) // 2]


def _combine_counters(per_attempt: Sequence[OpCounters]) -> OpCounters:
    """One op's counters over several runs (see :func:`combine_attempts`)."""
    d: OpCounters = {}
    for key in set().union(*per_attempt):
        vals = [a.get(key, 0) for a in per_attempt]
        if key[0] in MONOTONIC:
            d[key] = min(vals)
        elif key[0] in GAUGE_SOURCE:
            # gauge = its event counter - what was freed: other processes'
            # allocations move both (cancelled by the difference), their
            # frees and the non-atomic reads of the two files move the
            # difference either way (median)
            src = (GAUGE_SOURCE[key[0]], key[1])
            ev = [a.get(src, 0) for a in per_attempt]
            d[key] = min(ev) + _median([v - e for v, e in zip(vals, ev, strict=True)])
        else:
            d[key] = _median(vals)
    return {k: v for k, v in d.items() if v}


def _combine_vmstat(per_attempt: Sequence[Mapping[str, int]]) -> dict[str, int]:
    d: dict[str, int] = {}
    for key in set().union(*per_attempt):
        vals = [a.get(key, 0) for a in per_attempt]
        d[key] = min(vals) if key.startswith(_VMSTAT_EVENTS) else _median(vals)
    return {k: v for k, v in d.items() if v}


def combine_attempts(attempts: Sequence[SideResult]) -> SideResult:
    """Per-op estimate of the live kernel's own counter deltas over several runs.

    Kernel counters are system-wide.  Every run of a program does exactly the
    same thing relative to 64K/2M boundaries, so its own contribution to each
    op's delta is the same in every run; other processes can only *add* to
    event counters.  Event counters: per-op minimum.  Gauges (nr_anon,
    nr_anon_partially_mapped, whose noise goes both ways): the minimum of
    their source event counter plus the median of (gauge - source): other
    processes' allocations move both and cancel out in the difference.
    vmstat: per-op minimum (events) or median.  Faults, layouts and
    VMAs are per-process and come from the first run.
    """
    first = attempts[0]
    nops = len(first.op_counters)
    op_counters = [_combine_counters([a.op_counters[i] for a in attempts]) for i in range(nops)]
    op_vmstat = [_combine_vmstat([a.op_vmstat[i] for a in attempts]) for i in range(nops)]
    counters, vmstat = sum_ops(op_counters, op_vmstat)
    return SideResult(first.page_size, first.op_faults, first.op_signal, counters, vmstat,
                      first.snapshots, first.vmas, op_counters, op_vmstat, first.op_errno)


def sum_ops(op_counters: Sequence[Mapping[tuple[str, int], int]],
            op_vmstat: Sequence[Mapping[str, int]]) -> tuple[dict[str, dict[int, int]], dict[str, int]]:
    """Per-op deltas summed over the program (zeros dropped)."""
    counters: dict[str, dict[int, int]] = {n: {} for n in STAT_NAMES}
    vmstat: dict[str, int] = {}
    for d in op_counters:
        for (n, kb), v in d.items():
            if n in counters:
                counters[n][kb] = counters[n].get(kb, 0) + v
    for vd in op_vmstat:
        for n, v in vd.items():
            vmstat[n] = vmstat.get(n, 0) + v
    return ({k: {kb: v for kb, v in d.items() if v} for k, d in counters.items()},
            {k: v for k, v in vmstat.items() if v})


# --------------------------------------------------------------------------
# the live kernel


def _op_counters(o: OpResult) -> OpCounters:
    return {(n, kb): v for kb, stats in o.delta.mthp.items() for n, v in stats.items()
            if n in STAT_NAMES and v}


def live_side(res: KprogResult) -> SideResult:
    """A laf_kprog run on the live kernel, as a :class:`SideResult`."""
    op_counters = [_op_counters(o) for o in res.ops]
    op_vmstat = [{n: v for n, v in o.delta.vmstat.items() if v} for o in res.ops]
    counters, vmstat = sum_ops(op_counters, op_vmstat)
    snaps: dict[str, SnapshotView] = {}
    vmas: dict[str, list[tuple[int, int]]] = {}
    for s in res.snapshots:
        seen = {(v.start, v.end): v for v in s.vmas}
        rss_kb = sum(v.anonymous_kb for v in seen.values())
        snaps[s.name] = SnapshotView(rss_kb, {m.id: MappingView.of(m.runs, res.page_size)
                                              for m in s.mappings})
        vmas[s.name] = sorted(seen)
    return SideResult(res.page_size, [o.minflt for o in res.ops], [o.signal for o in res.ops],
                      counters, vmstat, snaps, vmas, op_counters, op_vmstat,
                      [o.errno if o.rc else 0 for o in res.ops])


# --------------------------------------------------------------------------
# the emulator


class Unsupported(Exception):
    """The program uses an op the emulator does not model."""


_PROTS = {"rw": "rw", "r": "r", "none": ""}
_ADVICE = ("hugepage", "nohugepage", "dontneed")


def _scalar(st: object, name: str) -> int:
    """A scalar counter of :class:`pylaf.stats.Stats`."""
    return int(getattr(st, name))


def _per_size_kb(st: object, name: str) -> dict[int, int]:
    """A per-size counter of :class:`pylaf.stats.Stats` (keys ``"64K"``) by kB."""
    per_size: Mapping[str, int] = getattr(st, name)
    return {parse_size(k) // 1024: int(v) for k, v in per_size.items() if v}


class _EmulatorRun:
    """One program replayed in an AddressSpace, op by op."""

    def __init__(self, mm: AddressSpace) -> None:
        self.mm = mm
        self.geometry = Geometry.for_machine(mm.page_size, mm.config.arch)
        self.maps: dict[str, tuple[int, int]] = {}      # id -> (addr, length), in mmap order
        self.op_faults: list[Optional[int]] = []
        self.op_signal: list[Optional[int]] = []
        self.op_errno: list[int] = []
        self.snaps: dict[str, SnapshotView] = {}
        self.vmas: dict[str, list[tuple[int, int]]] = {}

    def op(self, tok: Sequence[str], kop: OpResult) -> None:
        """Run one op (``kop``: what the live kernel did for it)."""
        faults: Optional[int] = None
        sig: Optional[int] = None
        errno = 0
        op = tok[0]
        if op == "mmap":
            self.mmap(tok, kop)
        elif op in ("munmap", "madvise"):
            errno = self.munmap_madvise(tok)
        elif op == "prctl":
            self.prctl(tok[2])
        elif op in ("read", "write"):
            faults, sig = self.touch(tok)
        elif op != "sleep":
            raise Unsupported(op)
        self.op_faults.append(faults)
        self.op_signal.append(sig)
        self.op_errno.append(errno)

    def mmap(self, tok: Sequence[str], kop: OpResult) -> None:
        if kop.rc != 0 or kop.addr is None:
            return
        length = parse_num(tok[2])
        prot_opt = parse_options(tok[3:]).get("prot", "rw")
        prot = _PROTS.get(prot_opt)
        if prot is None:
            raise Unsupported(f"mmap prot={prot_opt}")
        addr = int(kop.addr)
        # MAP_FIXED replaces whatever was there (laf_kprog's "fixed"); the
        # emulator's fixed is MAP_FIXED_NOREPLACE, so unmap first.
        self.mm.munmap(addr, length)
        self.mm.mmap(length, addr=addr, prot=prot, fixed=True)
        self.maps[tok[1]] = (addr, length)

    def munmap_madvise(self, tok: Sequence[str]) -> int:
        """The op's errno (0: success), as the live kernel reports it."""
        start = self.maps[tok[1]][0] + parse_num(tok[2])
        length = parse_num(tok[3])
        if tok[0] == "madvise" and tok[4] not in _ADVICE:
            raise Unsupported(f"madvise {tok[4]}")
        try:
            if tok[0] == "munmap":
                self.mm.munmap(start, length)
            else:
                self.mm.madvise(start, length, tok[4])
        except LafError as exc:
            return -exc.errno
        return 0

    def prctl(self, value: str) -> None:
        if value == "except_advised":
            self.mm.set_thp_disable(True, except_advised=True)
        else:
            self.mm.set_thp_disable(bool(int(value, 0)))

    def touch(self, tok: Sequence[str]) -> tuple[int, Optional[int]]:
        """Minor faults of a read/write op and its signal (SIGSEGV or None)."""
        base = self.maps[tok[1]][0]
        off = parse_num(tok[2])
        length = parse_num(tok[3]) if len(tok) > 3 else 1
        stride = parse_num(tok[4]) if len(tok) > 4 else self.mm.page_size
        st = abs(stride)
        n = (length + st - 1) // st
        addrs = base + off + np.arange(n, dtype=np.uint64) * np.uint64(st)
        if stride < 0:
            addrs = addrs[::-1]
        before = _scalar(self.mm.stats(), "min_flt")
        r = self.mm.touch(np.ascontiguousarray(addrs, dtype=np.uint64), write=(tok[0] == "write"))
        faults = _scalar(self.mm.stats(), "min_flt") - before
        return faults, (None if r.ok else int(signal.SIGSEGV))

    def snapshot(self, name: str) -> None:
        mm = self.mm
        views = {}
        for mid, (addr, length) in self.maps.items():
            ptes, orders = mm.read_ptes(addr, length // mm.page_size)
            views[mid] = MappingView.of(runs_from_ptes(ptes, orders, self.geometry), mm.page_size)
        rss_kb = _scalar(mm.stats(), "mm_anonpages") * mm.page_size // 1024
        self.snaps[name] = SnapshotView(rss_kb, views)
        self.vmas[name] = sorted((v.start, v.end) for v in mm.vmas()
                                 if any(v.start < a + ln and v.end > a for a, ln in self.maps.values()))

    def result(self) -> SideResult:
        st = self.mm.stats()
        counters = {n: _per_size_kb(st, n) for n in STAT_NAMES}
        vmstat = {n: _scalar(st, n) for n in VMSTAT_NAMES if _scalar(st, n)}
        return SideResult(self.mm.page_size, self.op_faults, self.op_signal, counters, vmstat,
                          self.snaps, self.vmas, op_errno=self.op_errno)


def emulator_side(program: CheckProgram, kres: KprogResult, policy: Policy,
                  ram: str = "2G") -> SideResult:
    """Run *program* in the emulator with the VMAs at the live kernel's addresses."""
    lines = program.lines()
    if len(program.ops()) != len(kres.ops):
        raise RuntimeError(f"{program.name}: {len(program.ops())} ops but the live kernel ran "
                           f"{len(kres.ops)}")
    kops = iter(kres.ops)
    with AddressSpace(Config(page_size=kres.page_size, policy=policy, ram=ram)) as mm:
        run = _EmulatorRun(mm)
        for ln in lines:
            tok = ln.split()
            if tok[0] == "snapshot":
                run.snapshot(tok[1] if len(tok) > 1 else "snapshot")
            else:
                run.op(tok, next(kops))
        if "final" in {s.name for s in kres.snapshots} and "final" not in run.snaps:
            run.snapshot("final")
        return run.result()


__all__ = ["STAT_NAMES", "VMSTAT_NAMES", "MappingView", "SideResult", "SnapshotView",
           "Unsupported", "combine_attempts", "emulator_side", "live_side", "sum_ops"]
