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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from pylaf.address_space import AddressSpace
from pylaf.config import Config
from pylaf.errors import LafError
from pylaf.geometry import Geometry
from pylaf.layout import LayoutSummary, Run, labelled, runs_from_ptes
from pylaf.live.kprog import KprogResult, OpResult
from pylaf.live.programs import CheckProgram, parse_num, parse_options, split_proc
from pylaf.policy import Policy
from pylaf.records import MADVISE
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

#: /proc/vmstat counters compared for fork programs only (laf_kprog reports
#: them only there), over touch ops only: a fork op's window also sees
#: laf_kprog's own pages being reused by whichever process writes them second
FORK_VMSTAT_NAMES: tuple[str, ...] = ("pgreuse",)
_TOUCH_ONLY = frozenset(FORK_VMSTAT_NAMES)

#: Gauges and the event counter that increments them.  ``nr_anon`` goes up
#: only at anon_fault_alloc here (no swap, no mTHP collapse for anon in 6.18)
#: and down when a folio is freed; ``nr_anon_partially_mapped`` goes up only
#: with split_deferred.
GAUGE_SOURCE = {"nr_anon": "anon_fault_alloc", "nr_anon_partially_mapped": "split_deferred"}

#: Counters that only ever go up: noise from other processes can only add.
MONOTONIC = {"anon_fault_alloc", "anon_fault_fallback", "anon_fault_fallback_charge",
             "anon_fault_declined", "split_deferred"}
#: vmstat events (only go up); other vmstat lines are gauges
_VMSTAT_EVENTS = ("thp_fault", "thp_collapse", "thp_split", "thp_deferred", "thp_zero", "pgreuse")

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
    #: per op: errno of a failed munmap/madvise/mmap/mprotect/mremap (0: success)
    op_errno: list[int] = field(default_factory=list)
    #: per op: the address an mremap op returned (None: not an mremap, or failed)
    op_addr: list[Optional[int]] = field(default_factory=list)

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
                      first.snapshots, first.vmas, op_counters, op_vmstat, first.op_errno,
                      first.op_addr)


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


def snapshot_key(proc: str, name: str) -> str:
    """How a snapshot is named in a :class:`SideResult`: ``name`` for main,
    ``proc:name`` for another process of a fork program."""
    return name if proc == "main" else f"{proc}:{name}"


def _op_vmstat(o: OpResult) -> dict[str, int]:
    touch = o.op in ("read", "write")
    return {n: v for n, v in o.delta.vmstat.items() if v and (touch or n not in _TOUCH_ONLY)}


def live_side(res: KprogResult) -> SideResult:
    """A laf_kprog run on the live kernel, as a :class:`SideResult`."""
    op_counters = [_op_counters(o) for o in res.ops]
    op_vmstat = [_op_vmstat(o) for o in res.ops]
    counters, vmstat = sum_ops(op_counters, op_vmstat)
    snaps: dict[str, SnapshotView] = {}
    vmas: dict[str, list[tuple[int, int]]] = {}
    for s in res.snapshots:
        seen = {(v.start, v.end): v for v in s.vmas}
        rss_kb = sum(v.anonymous_kb for v in seen.values())
        key = snapshot_key(s.proc, s.name)
        snaps[key] = SnapshotView(rss_kb, {m.id: MappingView.of(m.runs, res.page_size)
                                           for m in s.mappings})
        vmas[key] = sorted(seen)
    return SideResult(res.page_size, [o.minflt for o in res.ops], [o.signal for o in res.ops],
                      counters, vmstat, snaps, vmas, op_counters, op_vmstat,
                      [o.errno if o.rc else 0 for o in res.ops],
                      [o.addr if o.op == "mremap" and not o.rc else None for o in res.ops])


# --------------------------------------------------------------------------
# the emulator


class Unsupported(Exception):
    """The program uses an op the emulator does not model."""


class EmulatorLacks(Exception):
    """The emulator's API lacks what the program needs (``fork`` before the
    processes of docs/kernel-findings.md §5 land): a SKIP, neither agreement
    nor disagreement."""


NO_MPROTECT = "emulator has no mprotect yet"
NO_MREMAP = "emulator has no mremap yet"
NO_FORK = "emulator has no fork yet"

#: laf_kprog's prot spellings -> the emulator's (as :meth:`AddressSpace.mmap` spells them)
_PROTS = {"rw": "rw", "r": "r", "rx": "rx", "rwx": "rwx", "none": ""}
_ADVICE = ("hugepage", "nohugepage", "dontneed")
_FORK_ADVICE = ("dontfork", "dofork", "wipeonfork", "keeponfork")


def _scalar(st: object, name: str) -> int:
    """A scalar counter of :class:`pylaf.stats.Stats`."""
    return int(getattr(st, name))


def _per_size_kb(st: object, name: str) -> dict[int, int]:
    """A per-size counter of :class:`pylaf.stats.Stats` (keys ``"64K"``) by kB."""
    per_size: Mapping[str, int] = getattr(st, name)
    return {parse_size(k) // 1024: int(v) for k, v in per_size.items() if v}


def emulator_can_run(program: CheckProgram, mm_type: type = AddressSpace) -> Optional[str]:
    """None, or why the emulator cannot run *program* yet (a SKIP)."""
    if program.forks and not (hasattr(mm_type, "fork") and hasattr(mm_type, "exit")):
        return NO_FORK
    ops = {ln.split()[1] if ln.startswith("@") else ln.split()[0] for ln in program.lines()}
    if "mprotect" in ops and not hasattr(mm_type, "mprotect"):
        return NO_MPROTECT
    if "mremap" in ops and not hasattr(mm_type, "mremap"):
        return NO_MREMAP
    return None


@dataclass
class _Proc:
    """One emulated process: its address space and its mappings by id."""

    mm: AddressSpace
    maps: dict[str, tuple[int, int]] = field(default_factory=dict)   # id -> (addr, length)


class _EmulatorRun:
    """One program replayed through the emulator's API, op by op, in the
    process each op names (``@PROC``; fork programs: ``mm.fork()`` and
    ``mm.exit()`` of docs/kernel-findings.md §5)."""

    def __init__(self, mm: AddressSpace) -> None:
        self.main = mm
        self.procs: dict[str, _Proc] = {"main": _Proc(mm)}
        self.geometry = Geometry.for_machine(mm.page_size, mm.config.arch)
        self.op_faults: list[Optional[int]] = []
        self.op_signal: list[Optional[int]] = []
        self.op_errno: list[int] = []
        self.op_addr: list[Optional[int]] = []
        self.main_forks = False                          # a fork program: machine-wide stats
        self.pgreuse = 0                                 # over touch ops
        self.snaps: dict[str, SnapshotView] = {}
        self.vmas: dict[str, list[tuple[int, int]]] = {}

    def op(self, line: str, kop: OpResult) -> None:
        """Run one op line (``kop``: what the live kernel did for it)."""
        pname, tok = split_proc(line)
        proc = self.procs[pname]
        faults: Optional[int] = None
        sig: Optional[int] = None
        errno = 0
        new_addr: Optional[int] = None
        op = tok[0]
        if op == "mmap":
            self.mmap(proc, tok, kop)
        elif op == "mremap":
            errno, new_addr = self.mremap(proc, tok, kop)
        elif op in ("munmap", "madvise", "mprotect"):
            errno = self.munmap_madvise(proc, tok)
        elif op == "prctl":
            self.prctl(proc.mm, tok[2])
        elif op in ("read", "write"):
            faults, sig = self.touch(proc, tok)
        elif op == "fork":
            self.procs[tok[1]] = _Proc(_fork(proc.mm), dict(proc.maps))
        elif op == "exit":
            _exit(self.procs.pop(tok[1]).mm)
        elif op != "sleep":
            raise Unsupported(op)
        self.op_faults.append(faults)
        self.op_signal.append(sig)
        self.op_errno.append(errno)
        self.op_addr.append(new_addr)

    def mmap(self, proc: _Proc, tok: Sequence[str], kop: OpResult) -> None:
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
        proc.mm.munmap(addr, length)
        proc.mm.mmap(length, addr=addr, prot=prot, fixed=True)
        proc.maps[tok[1]] = (addr, length)

    def munmap_madvise(self, proc: _Proc, tok: Sequence[str]) -> int:
        """The op's errno (0: success), as the live kernel reports it."""
        start = proc.maps[tok[1]][0] + parse_num(tok[2])
        length = parse_num(tok[3])
        if tok[0] == "madvise" and tok[4] not in _ADVICE + _FORK_ADVICE:
            raise Unsupported(f"madvise {tok[4]}")
        if tok[0] == "madvise" and tok[4] in _FORK_ADVICE and f"MADV_{tok[4].upper()}" not in MADVISE:
            raise EmulatorLacks(f"emulator has no MADV_{tok[4].upper()} yet")
        mprotect = getattr(proc.mm, "mprotect", None)
        if tok[0] == "mprotect" and mprotect is None:
            raise EmulatorLacks(NO_MPROTECT)
        try:
            if tok[0] == "munmap":
                proc.mm.munmap(start, length)
            elif mprotect is not None and tok[0] == "mprotect":
                mprotect(start, length, _PROTS[tok[4]])
            elif tok[4] in _FORK_ADVICE:
                proc.mm.madvise(start, length, f"MADV_{tok[4].upper()}")
            else:
                proc.mm.madvise(start, length, tok[4])
        except LafError as exc:
            return -exc.errno
        return 0

    def mremap(self, proc: _Proc, tok: Sequence[str], kop: OpResult) -> tuple[int, Optional[int]]:
        """``mremap ID OLD NEW [maymove] [fixed=..] [dontunmap] [as=NEWID]``
        (laf_kprog's op): ``mm.mremap()``; its errno and the new address.

        A MAYMOVE move without ``fixed=`` goes where the live kernel's
        get_unmapped_area() put it (``kop.addr``, passed as ``new_addr``): the
        emulator does not know the rest of laf_kprog's address space, and
        mm/mremap.c moves the same way once the destination is chosen
        (move_vma())."""
        remap = getattr(proc.mm, "mremap", None)
        if remap is None:
            raise EmulatorLacks(NO_MREMAP)
        addr = proc.maps[tok[1]][0]
        old_len, new_len = parse_num(tok[2]), parse_num(tok[3])
        opts = parse_options(tok[4:])
        fixed = opts.get("fixed")
        new_addr = self.address_ref(proc, fixed) if fixed is not None else None
        may_move = "maymove" in opts or fixed is not None
        if may_move and new_addr is None and kop.rc == 0 and kop.addr is not None and kop.addr != addr:
            new_addr = int(kop.addr)
        try:
            result = int(remap(addr, old_len, new_len, may_move=may_move, new_addr=new_addr,
                               dontunmap="dontunmap" in opts))
        except LafError as exc:
            return -exc.errno, None
        proc.maps[opts.get("as", tok[1])] = (result, new_len)
        return 0, result

    @staticmethod
    def address_ref(proc: _Proc, ref: str) -> int:
        """laf_kprog's ``ADDR`` or ``@ID[+OFF]``."""
        if not ref.startswith("@"):
            return parse_num(ref)
        mid, _, off = ref[1:].partition("+")
        return proc.maps[mid][0] + (parse_num(off) if off else 0)

    @staticmethod
    def prctl(mm: AddressSpace, value: str) -> None:
        if value == "except_advised":
            mm.set_thp_disable(True, except_advised=True)
        else:
            mm.set_thp_disable(bool(int(value, 0)))

    def touch(self, proc: _Proc, tok: Sequence[str]) -> tuple[int, Optional[int]]:
        """Minor faults of a read/write op in *proc* and its signal (SIGSEGV or None)."""
        mm = proc.mm
        base = proc.maps[tok[1]][0]
        off = parse_num(tok[2])
        length = parse_num(tok[3]) if len(tok) > 3 else 1
        stride = parse_num(tok[4]) if len(tok) > 4 else mm.page_size
        st = abs(stride)
        n = (length + st - 1) // st
        addrs = base + off + np.arange(n, dtype=np.uint64) * np.uint64(st)
        if stride < 0:
            addrs = addrs[::-1]
        before = mm.stats()
        r = mm.touch(np.ascontiguousarray(addrs, dtype=np.uint64), write=(tok[0] == "write"))
        after = mm.stats()
        if self.main_forks:
            self.pgreuse += _scalar(after, "pgreuse") - _scalar(before, "pgreuse")
        faults = _scalar(after, "min_flt") - _scalar(before, "min_flt")
        return faults, (None if r.ok else int(signal.SIGSEGV))

    def snapshot(self, line: str) -> None:
        pname, tok = split_proc(line)
        proc = self.procs[pname]
        mm = proc.mm
        name = snapshot_key(pname, tok[1] if len(tok) > 1 else "snapshot")
        views = {}
        for mid, (addr, length) in proc.maps.items():
            ptes, orders = mm.read_ptes(addr, length // mm.page_size)
            views[mid] = MappingView.of(runs_from_ptes(ptes, orders, self.geometry), mm.page_size)
        rss_kb = _scalar(mm.stats(), "mm_anonpages") * mm.page_size // 1024
        self.snaps[name] = SnapshotView(rss_kb, views)
        self.vmas[name] = sorted((v.start, v.end) for v in mm.vmas()
                                 if any(v.start < a + ln and v.end > a for a, ln in proc.maps.values()))

    def result(self) -> SideResult:
        # per-size stats and vmstat are machine-wide: every process's share
        st = _machine(self.main).stats() if self.main_forks else self.main.stats()
        counters = {n: _per_size_kb(st, n) for n in STAT_NAMES}
        vmstat = {n: _scalar(st, n) for n in VMSTAT_NAMES if _scalar(st, n)}
        if self.main_forks and self.pgreuse:
            vmstat["pgreuse"] = self.pgreuse
        return SideResult(self.main.page_size, self.op_faults, self.op_signal, counters, vmstat,
                          self.snaps, self.vmas, op_errno=self.op_errno, op_addr=self.op_addr)


def _machine(mm: AddressSpace) -> Any:
    """``mm.machine`` (the emulated machine the address space lives on)."""
    machine = getattr(mm, "machine", None)
    if machine is None:
        raise EmulatorLacks(NO_FORK)
    return machine


def _fork(mm: AddressSpace) -> AddressSpace:
    """``mm.fork()`` (Linux 6.18 dup_mmap()), or a SKIP before the API has it."""
    fork = getattr(mm, "fork", None)
    if fork is None:
        raise EmulatorLacks(NO_FORK)
    child: AddressSpace = fork()
    return child


def _exit(mm: AddressSpace) -> None:
    """``mm.exit()`` (exit_mmap())."""
    exit_ = getattr(mm, "exit", None)
    if exit_ is None:
        raise EmulatorLacks(NO_FORK)
    exit_()


MmFactory = Callable[[Config], AddressSpace]


def emulator_side(program: CheckProgram, kres: KprogResult, policy: Policy,
                  ram: str = "2G", mm_factory: MmFactory = AddressSpace) -> SideResult:
    """Run *program* in the emulator with the VMAs at the live kernel's addresses.

    Fork programs need ``fork()``/``exit()`` on the address space (and a
    ``machine`` with machine-wide ``stats()``); without them this raises
    :class:`EmulatorLacks` before running anything.
    """
    lines = program.lines()
    if len(program.ops()) != len(kres.ops):
        raise RuntimeError(f"{program.name}: {len(program.ops())} ops but the live kernel ran "
                           f"{len(kres.ops)}")
    kops = iter(kres.ops)
    with mm_factory(Config(page_size=kres.page_size, policy=policy, ram=ram)) as mm:
        why = emulator_can_run(program, type(mm))
        if why:
            raise EmulatorLacks(why)
        run = _EmulatorRun(mm)
        run.main_forks = program.forks
        for ln in lines:
            if split_proc(ln)[1][0] == "snapshot":
                run.snapshot(ln)
            else:
                run.op(ln, next(kops))
        if "final" in {s.name for s in kres.snapshots} and "final" not in run.snaps:
            run.snapshot("snapshot final")
        result = run.result()
        for child in list(run.procs)[1:]:
            _exit(run.procs.pop(child).mm)
        return result


__all__ = ["FORK_VMSTAT_NAMES", "NO_FORK", "NO_MPROTECT", "NO_MREMAP", "STAT_NAMES", "VMSTAT_NAMES", "EmulatorLacks", "MappingView",
           "MmFactory",
           "SideResult", "SnapshotView", "Unsupported", "combine_attempts", "emulator_can_run",
           "emulator_side", "live_side", "snapshot_key", "sum_ops"]
