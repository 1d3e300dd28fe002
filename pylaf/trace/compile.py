"""Compile a trace's replay into one op stream (:mod:`pylaf.opstream`).

:func:`compile_trace` turns what :mod:`pylaf.trace.replay` does event by
event into ``struct laf_op`` records, once per trace (cached on the
:class:`~pylaf.trace.format.Trace`); ``replay_into(..., engine="compiled")``
then runs the whole trace with one ``laf_run_ops()`` call.  The stream is the
Python replay's calls, in its order, so both give the same emulator state:

* per process (:func:`replay_order`): every VMA unmapped
  (``LAF_OP_UNMAP`` with ``LAF_OPF_ALL``; it ends a pending mremap move),
  ``prctl(PR_SET_THP_DISABLE, 0)`` whose failure is ignored
  (``LAF_OPF_QUIET``), the anonymous VMAs of its initial layout mapped
  (exec/fork);
* per event: an anonymous fault is a one-access ``LAF_OP_TOUCH``; a map is
  ``LAF_OP_MAP`` with ``LAF_OPF_REPLACE`` (munmap, then a fixed mmap); an
  mprotect is ``LAF_OP_PROTECT`` (the protection collapsed as for a map,
  :func:`laf_prot`); an unmap or a non-anonymous
  mapping is ``LAF_OP_UNMAP``; madvise (DONTNEED, HUGEPAGE, NOHUGEPAGE),
  populate, an mremap (``LAF_OP_REMAP``; a moving one takes its
  ``OP_REMAP_TO``'s address as MREMAP_FIXED target, the ``OP_REMAP_TO`` itself
  becomes a ``LAF_OP_NOP``), and an old trace's mremap move
  (``LAF_OP_MOVE_PAGES`` then the ``LAF_OP_MAP`` with ``LAF_OPF_MOVED``).  Other
  events are not replayed.

What does not depend on the emulator (the op counts of the report, faults
replayed) is counted here; failures come from the run.
"""
from __future__ import annotations

__all__ = ["CompiledTrace", "compile_trace", "replay_order"]

from collections import Counter
from dataclasses import dataclass

import numpy as np

from pylaf._ffi import lib
from pylaf.opstream import op_array
from pylaf.trace.format import (
    ANON_CLASSES,
    F_WRITE,
    M_MOVED,
    M_NOMERGE,
    MADV,
    OP_FAULT,
    OP_MADVISE,
    OP_MAP,
    OP_MAP_OTHER,
    OP_MOVE,
    OP_POPULATE,
    OP_PROTECT,
    OP_UNMAP,
    P_ZERO,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    Trace,
)
from pylaf.trace.remap import OP_REMAP, OP_REMAP_TO, REMAP_FLAGS

#: the advice replay carries out (the others do not change anonymous memory)
MADV_REPLAYED = {MADV["dontneed"]: "dontneed", MADV["hugepage"]: "hugepage",
                 MADV["nohugepage"]: "nohugepage"}

#: trace event op -> op-stream op
_LAF_OP = {OP_FAULT: lib.LAF_OP_TOUCH, OP_MAP: lib.LAF_OP_MAP, OP_PROTECT: lib.LAF_OP_PROTECT,
           OP_UNMAP: lib.LAF_OP_UNMAP, OP_MAP_OTHER: lib.LAF_OP_UNMAP,
           OP_MADVISE: lib.LAF_OP_MADVISE, OP_POPULATE: lib.LAF_OP_POPULATE,
           OP_MOVE: lib.LAF_OP_MOVE_PAGES, OP_REMAP: lib.LAF_OP_REMAP}
_OP_TABLE = np.array([_LAF_OP.get(o, lib.LAF_OP_NOP) for o in range(256)], dtype=np.uint16)
#: report op names counted whatever happens (unmap and move only on success)
_ALWAYS_COUNTED = {OP_MAP: "map", OP_PROTECT: "mprotect", OP_POPULATE: "populate"}


@dataclass(frozen=True)
class CompiledTrace:
    """A trace's replay as one op stream."""

    ops: np.ndarray                 #: the records (:data:`pylaf.opstream.OP_DTYPE`)
    processes: int                  #: processes replayed
    faults_replayed: int            #: anonymous faults (one access each)
    op_counts: dict[str, int]       #: report op counts that do not depend on the run
    unmaps: int                     #: unmap records (counted in the report when they succeed)
    moves: int                      #: old traces' mremap moves (likewise)
    remaps: int                     #: mremap calls (likewise)
    faults_not_replayed: dict[str, int]  #: recorded faults replay skips, by region class


def replay_order(trace: Trace) -> list[int]:
    """Replay order: by start time, but the process with the most anonymous
    faults last (its VMAs stay mapped, so final RSS is that process's)."""
    procs = sorted(trace.processes, key=lambda p: (p.get("t", 0), p["mm"]))
    if not procs:
        return []
    main = max(procs, key=lambda p: (p.get("anon_faults", 0), -p["mm"]))
    return [p["mm"] for p in procs if p is not main] + [main["mm"]]


def laf_prot(prot: np.ndarray) -> np.ndarray:
    """Trace PROT_* bits -> the emulator's LAF_PROT_* bits, every bit kept
    (as replay's prot strings)."""
    out: np.ndarray = (np.where(prot & PROT_READ, lib.LAF_PROT_READ, 0)
                       | np.where(prot & PROT_WRITE, lib.LAF_PROT_WRITE, 0)
                       | np.where(prot & PROT_EXEC, lib.LAF_PROT_EXEC, 0)).astype(np.uint64)
    return out


def _replayed(sub: np.ndarray) -> np.ndarray:
    """The events of one process replay acts on."""
    op = sub["op"]
    keep: np.ndarray = (((op == OP_FAULT) & np.isin(sub["cls"], ANON_CLASSES))
            | np.isin(op, [OP_MAP, OP_PROTECT, OP_UNMAP, OP_MAP_OTHER, OP_POPULATE, OP_MOVE,
                           OP_REMAP, OP_REMAP_TO])
            | ((op == OP_MADVISE) & np.isin(sub["arg"], list(MADV_REPLAYED))))
    return keep


def _event_records(ev: np.ndarray) -> np.ndarray:
    """One record per replayed event (see the module docstring)."""
    out = op_array(len(ev))
    op, flags = ev["op"], ev["flags"].astype(np.uint64)
    out["op"] = _OP_TABLE[op]
    out["addr"] = ev["addr"]
    out["len"] = ev["len"]
    out["arg"] = ev["arg"]
    fault, mapping, protect = op == OP_FAULT, op == OP_MAP, op == OP_PROTECT
    out["len"][fault] = 1
    out["arg"][fault] = 1
    f = np.zeros(len(ev), dtype=np.uint16)
    f[fault & ((flags & F_WRITE) != 0)] |= lib.LAF_OPF_WRITE
    f[mapping] |= lib.LAF_OPF_REPLACE
    f[(op == OP_MAP) & ((flags & M_MOVED) != 0)] |= lib.LAF_OPF_MOVED
    f[(op == OP_POPULATE) & ((flags & P_ZERO) != 0)] |= lib.LAF_OPF_ZERO
    out["flags"] = f
    out["arg"][mapping] = laf_prot(ev["arg"][mapping])
    out["arg"][protect] = laf_prot(ev["arg"][protect])       # mprotect (issue 10)
    nomerge = (op == OP_MAP) & ((flags & M_NOMERGE) != 0)
    out["arg2"][mapping] = lib.LAF_MAP_FIXED
    out["arg2"][nomerge] = lib.LAF_MAP_FIXED | lib.LAF_MAP_NOMERGE
    remap = op == OP_REMAP
    out["flags"][remap] = (flags[remap] & REMAP_FLAGS) << lib.LAF_OPF_MREMAP_SHIFT
    to = np.flatnonzero(op == OP_REMAP_TO)          # right after its OP_REMAP (check_events())
    out["arg2"][to - 1] = ev["addr"][to]
    return out


def _process_start(proc: dict[str, object]) -> np.ndarray:
    """An exiting predecessor's teardown, then the process's initial anonymous VMAs."""
    vmas = [(s, e - s, p) for s, e, p, cls, _n in proc.get("vmas", [])  # type: ignore[attr-defined]
            if cls in ANON_CLASSES] if proc.get("start") in ("exec", "fork") else []
    out = op_array(2 + len(vmas))
    out[0] = (lib.LAF_OP_UNMAP, lib.LAF_OPF_ALL | lib.LAF_OPF_STOP, 0, 0, 0, 0, 0)
    out[1] = (lib.LAF_OP_PRCTL, lib.LAF_OPF_QUIET, 0, 0, 0, lib.LAF_PR_SET_THP_DISABLE, 0)
    if vmas:
        v = np.array(vmas, dtype=np.uint64).reshape(-1, 3)
        out["op"][2:] = lib.LAF_OP_MAP
        out["flags"][2:] = lib.LAF_OPF_REPLACE
        out["addr"][2:], out["len"][2:] = v[:, 0], v[:, 1]
        out["arg"][2:] = laf_prot(v[:, 2])
        out["arg2"][2:] = lib.LAF_MAP_FIXED
    return out


def _compile(trace: Trace) -> CompiledTrace:
    ev = trace.events
    parts: list[np.ndarray] = []
    counts: Counter[str] = Counter()
    faults = unmaps = moves = remaps = 0
    order = replay_order(trace)
    for mi in order:
        sub = ev[ev["mm"] == mi]
        sub = sub[_replayed(sub)]
        parts += [_process_start(trace.processes[mi]), _event_records(sub)]
        op = sub["op"]
        faults += int(np.count_nonzero(op == OP_FAULT))
        unmaps += int(np.count_nonzero((op == OP_UNMAP) | (op == OP_MAP_OTHER)))
        moves += int(np.count_nonzero(op == OP_MOVE))
        remaps += int(np.count_nonzero(op == OP_REMAP))
        for code, name in _ALWAYS_COUNTED.items():
            counts[name] += int(np.count_nonzero(op == code))
        for adv, name in MADV_REPLAYED.items():
            counts[f"madvise {name}"] += int(np.count_nonzero((op == OP_MADVISE) & (sub["arg"] == adv)))
    ops = np.concatenate(parts) if parts else op_array(0)
    recorded = trace.fault_counts()
    skipped = {k: recorded[k] for k in ("file", "shared", "special", "no-vma") if recorded[k]}
    return CompiledTrace(ops, len(order), faults, {k: v for k, v in counts.items() if v},
                         unmaps, moves, remaps, skipped)


def compile_trace(trace: Trace) -> CompiledTrace:
    """The replay of *trace* as one op stream, compiled once per events array."""
    cached = trace.op_stream_cache
    if cached is not None and cached[0] is trace.events:
        out: CompiledTrace = cached[1]
        return out
    comp = _compile(trace)
    trace.op_stream_cache = (trace.events, comp)
    return comp
