"""Replay a trace's anonymous faults into the emulator.

:func:`replay` (``pylaf replay TRACE --policy SPEC``, and
:class:`TraceWorkload` for ``pylaf compare``) drives one emulated address
space: each process in turn gets its anonymous VMAs at their recorded
addresses (``fixed=True``), the pages exec had populated (``uffd_copy``: not
faults), then its VMA operations and anonymous faults in order; when it is
done its VMAs are unmapped and the next process starts.  The process with the
most anonymous faults runs last, so the final RSS is that process's at exit.
File-backed and other faults are not replayed; they are counted separately.

This module reads nothing from the live host: the default policy comes from
:meth:`pylaf.Policy.from_sysfs_values` of the settings recorded in the trace
header, only when none is given.

Two engines give the same result: ``engine="compiled"`` (the default) runs
the trace compiled once into an op stream (:mod:`pylaf.trace.compile`) with
one C call; ``engine="python"`` (the reference, and the only one that can
fill a ``fault_log``) makes the same calls one event at a time.  A failure is
counted in :attr:`ReplayReport.errors` as ``"<what>: <laf_strerror text>"``.
"""
from __future__ import annotations

__all__ = ["ReplayReport", "TraceWorkload", "has_forks", "replay", "replay_into"]

import contextlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

import numpy as np

from pylaf._ffi import ffi, lib
from pylaf.address_space import AddressSpace
from pylaf.config import Config
from pylaf.errors import LafError, check, error_for
from pylaf.opstream import STEP_NAMES, OpsResult, error_text
from pylaf.policy import Policy
from pylaf.stats import Stats
from pylaf.trace.compile import MADV_REPLAYED, CompiledTrace, compile_trace, replay_order
from pylaf.trace.format import (
    ANON_CLASSES,
    F_WRITE,
    M_MOVED,
    M_NOMERGE,
    OP_FAULT,
    OP_MADVISE,
    OP_MAP,
    OP_MAP_OTHER,
    OP_MOVE,
    OP_NAMES,
    OP_POPULATE,
    OP_PROTECT,
    OP_UNMAP,
    P_ZERO,
    PAGE,
    PAGE_SHIFT,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    Trace,
    TraceError,
    load_trace,
    page_runs,
)
from pylaf.trace.remap import OP_REMAP, OP_REMAP_TO, R_DONTUNMAP, R_FIXED, R_MAYMOVE

#: ReplayReport.errors keys of the op-stream steps whose key is not "<what>: <text>"
_STEP_KEYS = {lib.LAF_OPS_STEP_UFFD_REGISTER: "populate: range not mapped",
              lib.LAF_OPS_STEP_UFFD_FILL: "populate: already present"}
#: "<what>" of the other steps
_STEP_WHAT = {lib.LAF_OP_MAP: "map", lib.LAF_OP_UNMAP: "unmap", lib.LAF_OP_MADVISE: "madvise",
              lib.LAF_OP_MOVE_PAGES: "move", lib.LAF_OP_PROTECT: "mprotect", lib.LAF_OP_REMAP: "mremap",
              **STEP_NAMES}
Engine = Literal["compiled", "python"]
#: pages read per read_ptes() call when an mremap move is replayed
_MOVE_CHUNK = 1 << 18


@dataclass
class ReplayReport:
    """What a replay did besides the emulator's counters."""

    faults_replayed: int = 0
    faults_not_replayed: dict[str, int] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    sigsegv: int = 0
    processes: int = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def op(self, kind: str) -> None:
        self.ops[kind] = self.ops.get(kind, 0) + 1


def _prot_str(prot: int) -> str:
    """A recorded PROT_* value as the emulator's prot string (every bit kept:
    VM_EXEC and VM_READ decide VMA merging, calc_vm_prot_bits())."""
    return ("r" if prot & PROT_READ else "") + ("w" if prot & PROT_WRITE else "") + \
        ("x" if prot & PROT_EXEC else "")


class TraceWorkload:
    """A recorded trace as a ``pylaf compare`` workload (``name``,
    ``description``, ``run(mm)``)."""

    #: traces are recorded with 4K pages: ``pylaf compare`` skips them on others
    page_sizes: tuple[int, ...] = (PAGE,)

    def __init__(self, trace: Union[Trace, str, Path], name: Optional[str] = None,
                 description: Optional[str] = None) -> None:
        self._trace = trace if isinstance(trace, Trace) else None
        self._path = None if isinstance(trace, Trace) else Path(trace)
        if self._trace is None and (name is None or description is None):
            self._load()
        t = self._trace
        self.name = name or (t.name if t is not None else Path(str(self._path)).stem)
        self.description = description or (f"recorded trace: {t.description}" if t is not None
                                           else f"recorded trace {self._path}")
        self.report: Optional[ReplayReport] = None

    def _load(self) -> Trace:
        if self._trace is None:
            assert self._path is not None
            self._trace = load_trace(self._path)
        return self._trace

    @property
    def trace(self) -> Trace:
        return self._load()

    @property
    def whole_machine(self) -> bool:
        """A trace with forks runs in several address spaces: results count the machine."""
        return has_forks(self.trace)

    def __repr__(self) -> str:
        return f"<TraceWorkload {self.name}>"

    def run(self, mm: AddressSpace) -> None:
        self.report = replay_into(mm, self.trace)


@dataclass
class _Moving:
    """Pages an mremap move found at the old place (page offsets), to be put
    back at ``new`` once the new VMA is mapped."""

    new: int
    present: list[int]
    zero: list[int]


class _Replayer:
    """Replays the events of one process after another into *mm*."""

    def __init__(self, mm: AddressSpace, rep: ReplayReport,
                 fault_log: Optional[list[tuple[int, int, int]]]) -> None:
        self.mm = mm
        self.rep = rep
        self.fault_log = fault_log
        self.moving: Optional[_Moving] = None
        self.remap: Optional[np.void] = None   # a moving OP_REMAP waiting for its OP_REMAP_TO
        self.ops: dict[int, Callable[[np.void], None]] = {
            OP_MAP: self._op_map, OP_MOVE: self._op_move, OP_UNMAP: self._op_unmap,
            OP_MAP_OTHER: self._op_unmap, OP_PROTECT: self._op_protect,
            OP_MADVISE: self._op_madvise, OP_POPULATE: self._op_populate,
            OP_REMAP: self._op_remap, OP_REMAP_TO: self._op_remap_to,
        }

    def process(self, mi: int, proc: dict[str, object], sub: np.ndarray) -> None:
        self.start(proc)
        self.run(mi, sub)

    def start(self, proc: dict[str, object]) -> None:
        """The process starts in ``self.mm``: emptied (the previous process
        exited), its initial anonymous VMAs mapped."""
        mm = self.mm
        for v in mm.vmas():
            mm.munmap(v.start, v.end - v.start)
        with contextlib.suppress(LafError, ValueError):
            mm.set_thp_disable(False)
        if proc.get("start") in ("exec", "fork"):
            for start, end, prot, cls, _name in proc.get("vmas", []):  # type: ignore[attr-defined]
                if cls in ANON_CLASSES:
                    self.map(start, end - start, prot)
        self.moving = None
        self.remap = None

    def run(self, mi: int, sub: np.ndarray) -> None:
        """Events *sub* of process *mi*, in ``self.mm``."""
        ops = sub["op"]
        # faults are batched between other ops
        is_fault = (ops == OP_FAULT) & np.isin(sub["cls"], ANON_CLASSES)
        prev = 0
        for b in [*np.flatnonzero(ops != OP_FAULT).tolist(), len(sub)]:
            sel = is_fault[prev:b]
            if sel.any():
                self.faults(mi, sub[prev:b][sel])
            if b < len(sub):
                self.event(sub[b])
            prev = b + 1

    def faults(self, mi: int, chunk: np.ndarray) -> None:
        addrs = np.ascontiguousarray(chunk["addr"], dtype=np.uint64)
        writes = np.ascontiguousarray((chunk["flags"] & F_WRITE) != 0)
        r = self.mm.touch(addrs, writes, results=self.fault_log is not None)
        self.rep.faults_replayed += len(addrs)
        if self.fault_log is not None and r.results is not None:
            hit = np.flatnonzero(r.results != 0)
            self.fault_log.extend((mi, int(addrs[i]), int(writes[i])) for i in hit)
        self.rep.sigsegv += r.sigsegv

    def event(self, e: np.void) -> None:
        op = int(e["op"])
        handler = self.ops.get(op)
        if handler is None:
            return
        try:
            handler(e)
        except LafError as exc:
            self.rep.error(f"{OP_NAMES.get(op, op)}: {error_text(exc.errno)}")

    # ------------------------------------------------------------ events
    def _op_map(self, e: np.void) -> None:
        addr, ln, flags = int(e["addr"]), int(e["len"]), int(e["flags"])
        nomerge = bool(flags & M_NOMERGE)
        moving = self.moving if flags & M_MOVED else None
        if moving is not None and (moving.present or moving.zero):
            # the moved VMA keeps its anon_vma: it merges only with
            # neighbours that have none (is_mergeable_anon_vma)
            nomerge = any(v.anon_vma and (v.end == addr or v.start == addr + ln)
                          for v in self.mm.vmas())
        self.map(addr, ln, int(e["arg"]), nomerge=nomerge)
        self.rep.op("map")
        if moving is not None:
            self._move_in(moving)
            self.moving = None

    def _op_move(self, e: np.void) -> None:
        # mremap moving pages: remember what is present at the old place (in
        # the emulator, under this policy) to put it back at the new place
        # once it is mapped
        addr, ln = int(e["addr"]), int(e["len"])
        present: list[int] = []
        zero: list[int] = []
        for first, orders in self._read_orders(addr, addr + ln):
            present.extend((first + np.flatnonzero(orders >= 0)).tolist())
            zero.extend((first + np.flatnonzero(orders <= lib.LAF_ORDER_ZERO)).tolist())
        self.moving = _Moving(int(e["arg"]), present, zero)
        self.rep.op("mremap move")

    def _read_orders(self, start: int, end: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first page offset from *start*, folio orders) over the mapped
        parts of [start, end), a bounded number of pages at a time."""
        for v in self.mm.vmas():
            lo, hi = max(v.start, start), min(v.end, end)
            for a in range(lo, hi, _MOVE_CHUNK << PAGE_SHIFT):
                n = min(_MOVE_CHUNK, (hi - a) >> PAGE_SHIFT)
                _ptes, orders = self.mm.read_ptes(a, n)
                yield (a - start) >> PAGE_SHIFT, orders

    def _op_remap(self, e: np.void) -> None:
        # a moving mremap waits for its target (the OP_REMAP_TO right after it)
        if int(e["flags"]) & R_FIXED:
            self.remap = e
            return
        self._mremap(e, None)

    def _op_remap_to(self, e: np.void) -> None:
        if self.remap is not None:
            self._mremap(self.remap, int(e["addr"]))
        self.remap = None

    def _mremap(self, e: np.void, to: Optional[int]) -> None:
        flags = int(e["flags"])
        self.moving = None          # as LAF_OP_REMAP: a real move carries its pages
        try:
            self.mm.mremap(int(e["addr"]), int(e["len"]), int(e["arg"]), may_move=bool(flags & R_MAYMOVE),
                           new_addr=to, dontunmap=bool(flags & R_DONTUNMAP))
        except LafError as exc:
            self.rep.error(f"mremap: {error_text(exc.errno)}")
            return
        self.rep.op("mremap")

    def _op_unmap(self, e: np.void) -> None:
        try:
            self.mm.munmap(int(e["addr"]), int(e["len"]))
        except LafError as exc:
            self.rep.error(f"unmap: {error_text(exc.errno)}")
            return
        self.rep.op("unmap")

    def _op_protect(self, e: np.void) -> None:
        # mprotect() natively, with the recorded protection (_prot_str())
        try:
            self.mm.mprotect(int(e["addr"]), int(e["len"]), _prot_str(int(e["arg"])))
        except LafError as exc:
            self.rep.error(f"mprotect: {error_text(exc.errno)}")
        self.rep.op("mprotect")

    def _op_madvise(self, e: np.void) -> None:
        name = MADV_REPLAYED.get(int(e["arg"]))
        if name is None:
            return
        try:
            self.mm.madvise(int(e["addr"]), int(e["len"]), name)
        except LafError as exc:
            self.rep.error(f"madvise: {error_text(exc.errno)}")
        self.rep.op(f"madvise {name}")

    def _op_populate(self, e: np.void) -> None:
        self.populate(int(e["addr"]), int(e["len"]), bool(int(e["flags"]) & P_ZERO))
        self.rep.op("populate")

    # ----------------------------------------------------------- helpers
    def map(self, addr: int, ln: int, prot: int, nomerge: bool = False) -> None:
        mm = self.mm
        try:
            mm.munmap(addr, ln)
            if nomerge:
                p = _prot_str(prot)
                cprot = (lib.LAF_PROT_READ if "r" in p else 0) | (lib.LAF_PROT_WRITE if "w" in p else 0)
                out = ffi.new("uint64_t *")
                check(lib.laf_mmap(mm.mm, addr, ln, cprot, lib.LAF_MAP_FIXED | lib.LAF_MAP_NOMERGE,
                                   out), f"mmap({addr:#x}, {ln}, nomerge)")
            else:
                mm.mmap(ln, addr=addr, prot=_prot_str(prot), fixed=True)
        except LafError as exc:
            self.rep.error(f"map: {error_text(exc.errno)}")

    def _move_in(self, moving: _Moving) -> None:
        """Re-create the pages mremap moved: order-0 pages where the old place
        had a folio page, zero-page PTEs where it had the zero page (not faults)."""
        for want_zero, pages in ((False, moving.present), (True, moving.zero)):
            for s, n in page_runs(pages):
                self.populate(moving.new + (s << PAGE_SHIFT), n << PAGE_SHIFT, want_zero)

    def populate(self, addr: int, ln: int, zero: bool) -> None:
        mm = self.mm
        try:
            mm.uffd_register(addr, ln, "missing")
        except LafError:
            self.rep.error("populate: range not mapped")
            return
        try:
            if zero:
                mm.uffd_zeropage(addr, ln)
            else:
                mm.uffd_copy(addr, ln)
        except LafError:
            self.rep.error("populate: already present")
        finally:
            mm.uffd_unregister(addr, ln)


def has_forks(trace: Trace) -> bool:
    """Whether *trace* has a fork without exec that replay forks for real
    (a ``forked`` process whose parent is in the trace)."""
    n = len(trace.processes)
    return any(p.get("forked") and p.get("parent") is not None and 0 <= p["parent"] < n
               for p in trace.processes)


class _MachineReplayer:
    """Replays a trace with real forks: one address space per process on
    *mm*'s machine, all events in time order (the trace's ``t``).

    A process starts at its ``t``: a ``forked`` one as ``fork()`` of its
    parent's address space as it is then (kernel/fork.c dup_mmap()), any
    other as a new address space with its initial anonymous VMAs.  It exits
    (``exit_mmap()``) at its recorded ``exit`` (group exit, or the exec that
    replaced its mm), else at the end of the trace.  The first process that
    is not a fork runs in *mm* itself and is not exited, so the final RSS is
    its RSS at exit, as in the sequential replay."""

    def __init__(self, mm: AddressSpace, trace: Trace, rep: ReplayReport,
                 fault_log: Optional[list[tuple[int, int, int]]]) -> None:
        self.mm = mm
        self.trace = trace
        self.rep = rep
        self.replayer = _Replayer(mm, rep, fault_log)
        self.spaces: dict[int, AddressSpace] = {}
        self.moving: dict[int, Optional[_Moving]] = {}
        self.root: Optional[int] = None

    def _marks(self) -> list[tuple[int, int, int, int]]:
        """``(event position, t, kind, mm)``: kind 0 starts the process
        before the events at or after its ``t``, kind 1 exits it after the
        events at or before its ``exit``."""
        t = self.trace.events["t"]
        marks = []
        for p in self.trace.processes:
            start = int(p.get("t", 0))
            marks.append((int(np.searchsorted(t, start, side="left")), start, 0, int(p["mm"])))
            if p.get("exit") is not None:
                end = int(p["exit"])
                marks.append((int(np.searchsorted(t, end, side="right")), end, 1, int(p["mm"])))
        return sorted(marks)

    def replay(self) -> None:
        ev = self.trace.events
        pos = 0
        for at, _t, kind, mi in self._marks():
            self._events(ev[pos:at])
            pos = max(pos, at)
            if kind == 0:
                self._start(mi)
            else:
                self._exit(mi)
        self._events(ev[pos:])
        for mi in list(self.spaces):
            self._exit(mi)

    def _start(self, mi: int) -> None:
        proc = self.trace.processes[mi]
        parent = self.spaces.get(proc["parent"]) if proc.get("forked") else None
        self.rep.processes += 1
        if parent is not None:
            self.spaces[mi] = parent.fork()
            self.moving[mi] = None
            return
        if self.root is None:
            self.root, space = mi, self.mm
        else:
            space = self.mm.machine.address_space()
        self.spaces[mi] = self.replayer.mm = space
        self.replayer.start(proc)
        self.moving[mi] = None

    def _exit(self, mi: int) -> None:
        space = self.spaces.pop(mi, None)
        if space is not None and mi != self.root:
            space.exit()

    def _events(self, ev: np.ndarray) -> None:
        """Runs of consecutive events of one process, each in its address space."""
        if not len(ev):
            return
        cuts = [0, *(np.flatnonzero(np.diff(ev["mm"])) + 1).tolist(), len(ev)]
        for lo, hi in itertools.pairwise(cuts):
            mi = int(ev["mm"][lo])
            space = self.spaces.get(mi)
            if space is None:
                self.rep.faults_not_replayed["outside the process's life"] = (
                    self.rep.faults_not_replayed.get("outside the process's life", 0)
                    + int(np.count_nonzero(ev["op"][lo:hi] == OP_FAULT)))
                continue
            r = self.replayer
            r.mm, r.moving = space, self.moving.get(mi)
            r.run(mi, ev[lo:hi])
            self.moving[mi] = r.moving


def _step_key(step: int, errno: int) -> str:
    """The ReplayReport.errors key of a failed op-stream step."""
    key = _STEP_KEYS.get(step)
    if key is not None:
        return key
    return f"{_STEP_WHAT.get(step, f'step {step}')}: {error_text(errno)}"


def _compiled_report(rep: ReplayReport, comp: CompiledTrace, res: OpsResult) -> None:
    rep.faults_not_replayed = dict(comp.faults_not_replayed)
    rep.processes = comp.processes
    rep.faults_replayed = comp.faults_replayed
    rep.sigsegv = res.touch.sigsegv
    for (step, errno), n in sorted(res.errors.items()):
        key = _step_key(step, errno)
        rep.errors[key] = rep.errors.get(key, 0) + n
    failed = {step: sum(n for (s, _e), n in res.errors.items() if s == step)
              for step in (lib.LAF_OP_UNMAP, lib.LAF_OP_MOVE_PAGES, lib.LAF_OP_REMAP)}
    counts = dict(comp.op_counts)
    counts["unmap"] = comp.unmaps - failed[lib.LAF_OP_UNMAP]
    counts["mremap move"] = comp.moves - failed[lib.LAF_OP_MOVE_PAGES]
    counts["mremap"] = comp.remaps - failed[lib.LAF_OP_REMAP]
    rep.ops = {k: v for k, v in counts.items() if v}


def replay_into(mm: AddressSpace, trace: Trace,
                fault_log: Optional[list[tuple[int, int, int]]] = None,
                engine: Optional[Engine] = None) -> ReplayReport:
    """Replay the anonymous part of *trace* into the AddressSpace *mm*.

    ``fault_log``: if given, gets ``(mm, addr, write)`` of every replayed
    access that faulted in the emulator (for diagnostics; Python engine only).
    ``engine``: ``"compiled"`` (the default without a fault log) or
    ``"python"``; both give the same state, counters and report."""
    if mm.page_size != PAGE:
        raise TraceError(f"traces are recorded with 4K pages; cannot replay on a "
                         f"{mm.page_size // 1024}K-page emulator")
    if engine is None:
        engine = "python" if fault_log is not None else "compiled"
    if engine not in ("compiled", "python"):
        raise ValueError(f"unknown replay engine {engine!r} (expected 'compiled' or 'python')")
    if engine == "compiled" and fault_log is not None:
        raise ValueError("a fault_log needs engine='python'")
    rep = ReplayReport()
    forks = has_forks(trace)
    if engine == "compiled" and not forks:
        comp = compile_trace(trace)
        res = mm.run_ops(comp.ops)
        if res.stopped:     # a process's teardown failed: the Python engine raises there
            raise error_for(res.first_errno, "munmap (process exit)")
        _compiled_report(rep, comp, res)
        return rep
    counts = trace.fault_counts()
    rep.faults_not_replayed = {k: counts[k] for k in ("file", "shared", "special", "no-vma") if counts[k]}
    if forks:
        _MachineReplayer(mm, trace, rep, fault_log).replay()
        return rep
    ev = trace.events
    replayer = _Replayer(mm, rep, fault_log)
    for mi in replay_order(trace):
        rep.processes += 1
        replayer.process(mi, trace.processes[mi], ev[np.flatnonzero(ev["mm"] == mi)])
    return rep


def replay(trace: Union[Trace, str, Path], policy: Union[Policy, str, None] = None, *,
           ram: Union[int, str] = "8G", report: Optional[list[ReplayReport]] = None,
           engine: Engine = "compiled") -> Stats:
    """Replay *trace* under *policy* (a :class:`~pylaf.Policy` or spec string,
    default: the THP settings the trace was recorded with, from its header);
    returns the emulator's :class:`~pylaf.Stats`."""
    tr = trace if isinstance(trace, Trace) else load_trace(trace)
    if policy is None:
        recorded = tr.header.get("thp_settings")
        pol = Policy.from_sysfs_values(recorded) if recorded else Policy()
    elif isinstance(policy, str):
        pol = Policy.parse(policy)
    else:
        pol = policy
    with AddressSpace(Config(policy=pol, ram=ram)) as mm:
        rep = replay_into(mm, tr, engine=engine)
        st = mm.machine.stats() if has_forks(tr) else mm.stats()
    if report is not None:
        report.append(rep)
    return st
