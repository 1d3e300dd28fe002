"""perf script parsing and :class:`TraceBuilder`: ``perf script`` text plus
the ``laf_tracee`` log folded into a :class:`~pylaf.trace.format.Trace`.

The builder keeps a model of each traced process's VMAs (``/proc/PID/maps``
at every execve, then the mmap-family syscalls as they return) and classifies
every fault by the VMA it hit, as ``mm/memory.c`` ``handle_mm_fault()`` would
find it: anonymous private memory (heap/brk, stack, .bss, anonymous mmap) or
not (file-backed, shared, vdso, no VMA).  A fault just below a ``[stack]``
VMA grows it (``mm/mmap.c`` ``expand_downwards()``).
"""
from __future__ import annotations

__all__ = [
    "PerfError",
    "RawEvent",
    "TraceBuilder",
    "build_trace",
    "fault_fields",
    "parse_perf_script",
    "read_tracee_log",
    "syscall_args",
    "syscall_ret",
]

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional, Union

import numpy as np

from pylaf.trace.format import (
    ANON_CLASSES,
    C_ANON,
    C_BAD,
    C_BSS,
    C_FILE,
    C_HEAP,
    C_SHARED,
    C_SPECIAL,
    C_STACK,
    EVENT_DTYPE,
    F_INSTR,
    F_KERNEL,
    F_PRESENT,
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
    PAGE,
    PAGE_SHIFT,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    USER_TOP,
    Trace,
    TraceError,
    page_runs,
)
from pylaf.trace.vmamap import RecordedVma, VmaMap, page_down, page_up, prot_of

# mmap() flags (include/uapi/linux/mman.h, asm-generic/mman-common.h)
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x01, 0x02, 0x10, 0x20
MAP_STACK, MAP_HUGETLB = 0x20000, 0x40000
MREMAP_DONTUNMAP = 4
#: advice that leaves anonymous pages in place without memory pressure:
#: FREE, WILLNEED, (DONT)FORK, (DONT)DUMP, (UN)MERGEABLE, COLD, PAGEOUT, ...
_MADV_NO_EFFECT = frozenset({MADV["free"], 3, 10, 11, 12, 13, 16, 17, 18, 19, 20, 21, 100, 101})
_MADV_DROP = frozenset({MADV["dontneed"], MADV["dontneed_locked"], MADV["remove"]})
#: how far below a [stack] VMA a fault still grows it (the recorder's guess
#: at RLIMIT_STACK headroom, see expand_downwards())
_STACK_GAP = 128 << 20


class PerfError(TraceError):
    """perf is missing, refused, or failed."""


@dataclass
class RawEvent:
    """One ``perf script`` sample line."""

    comm: str
    pid: int
    tid: int
    t: int          # ns
    event: str
    fields: str


_LINE = re.compile(r"^\s*(?P<comm>.*?)\s+(?P<pid>-?\d+)/(?P<tid>-?\d+)\s+(?:\[(?P<cpu>\d+)\]\s+)?"
                   r"(?P<sec>\d+)\.(?P<frac>\d+):\s+(?P<event>[\w-]+:[\w-]+):\s?(?P<rest>.*)$")


def parse_perf_script(lines: Iterable[str]) -> Iterator[RawEvent]:
    """Parse ``perf script -F comm,pid,tid,time,event,trace --ns`` lines.

    Lines that are not samples (headers, warnings) are skipped; ``LOST``
    records raise :class:`PerfError` (a trace with lost events is not exact).
    """
    for line in lines:
        if not line.strip():
            continue
        m = _LINE.match(line.rstrip("\n"))
        if not m:
            if "PERF_RECORD_LOST" in line or re.search(r"\bLOST\b.*events?", line):
                raise PerfError(f"perf lost events while recording: {line.strip()}")
            continue
        frac = m.group("frac")
        t = int(m.group("sec")) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])
        yield RawEvent(m.group("comm"), int(m.group("pid")), int(m.group("tid")), t,
                       m.group("event"), m.group("rest"))


_KV_COLON = re.compile(r"(\w+):\s*(0x[0-9a-fA-F]+|-?\d+)")
_KV_EQ = re.compile(r"(\w+)=(\S+)")


def syscall_args(rest: str) -> dict[str, int]:
    """``name: value`` arguments of a ``syscalls:sys_enter_*`` sample."""
    return {k: int(v, 0) for k, v in _KV_COLON.findall(rest)}


def syscall_ret(rest: str) -> int:
    """The (signed) return value of a ``syscalls:sys_exit_*`` sample."""
    s = rest.strip().split()[0] if rest.strip() else "0"
    v = int(s, 0)
    if v >= 1 << 63:
        v -= 1 << 64
    return v


def fault_fields(rest: str) -> tuple[int, int]:
    """``(address, error_code)`` of an ``exceptions:page_fault_*`` sample."""
    d = dict(_KV_EQ.findall(rest))
    return int(d["address"], 16), int(d.get("error_code", "0"), 16)


# ============================================================== trace builder


@dataclass
class _MM:
    idx: int
    pid: int
    vmas: VmaMap
    present: set[int] = field(default_factory=set)     # anon pages present (page numbers)
    brk_start: Optional[int] = None
    brk: Optional[int] = None


_SyscallHandler = Callable[["TraceBuilder", _MM, dict[str, int], int, int], None]


def _classify_map(path: str, perms: str, prev: Optional[RecordedVma]) -> tuple[int, bool]:
    """Region class and grows-down of one ``/proc/PID/maps`` line."""
    shared = perms[3] == "s"
    if path == "[stack]":
        return C_STACK, True
    if path == "[heap]":
        return C_HEAP, False
    if path.startswith("[v"):
        return C_SPECIAL, False
    if path:
        return (C_SHARED if shared else C_FILE), False
    if shared:
        return C_SHARED, False
    # an anonymous VMA right after a file mapping (prev: the VMA ending
    # where this one starts) is that file's .bss
    return (C_BSS if prev is not None and prev.cls == C_FILE else C_ANON), False


def _mmap_class(vmas: VmaMap, flags: int, addr: int) -> int:
    """Region class of the VMA an mmap() call created at *addr*."""
    if flags & MAP_SHARED or flags & MAP_HUGETLB:
        return C_SHARED
    if not flags & MAP_ANONYMOUS:
        return C_FILE
    if flags & MAP_STACK:
        return C_STACK
    prev = vmas.prev_below(addr)
    if flags & MAP_FIXED and prev is not None and prev.end == addr and prev.cls == C_FILE:
        return C_BSS
    return C_ANON


class TraceBuilder:
    """Fold perf script events + the laf_tracee log into a :class:`Trace`."""

    def __init__(self, tracee_log: Sequence[dict[str, Any]], page_size: int = PAGE) -> None:
        if page_size != PAGE:
            raise TraceError(f"only 4K pages are supported (this machine has {page_size})")
        self.execs: dict[tuple[int, int], dict[str, Any]] = {}
        self.forks: dict[int, list[dict[str, Any]]] = {}
        self.root: Optional[int] = None
        self.exit_status: Optional[int] = None
        for rec in tracee_log:
            ev = rec.get("ev")
            if ev == "start":
                self.root = int(rec["pid"])
            elif ev == "exec":
                self.execs[(int(rec["pid"]), int(rec["n"]))] = rec
            elif ev == "fork":
                self.forks.setdefault(int(rec["child"]), []).append(rec)
            elif ev == "end":
                self.exit_status = rec.get("status")
        self.exec_n: dict[int, int] = {}
        self.mms: list[_MM] = []
        self.processes: list[dict[str, Any]] = []
        self.pid_mm: dict[int, Optional[int]] = {}     # tgid -> mm index (None: tracked, no mm yet)
        self.pending_sys: dict[int, tuple[str, dict[str, int], int]] = {}
        self.in_exec: dict[int, list[RawEvent]] = {}
        self.rows: list[tuple[int, int, int, int, int, int, int, int]] = []
        self.skipped = {"exec_internal": 0, "untracked": 0, "kernel_address": 0,
                        "unsupported_madvise": 0, "mremap_moved_pages": 0}
        self.comms: dict[int, str] = {}
        if self.root is not None:
            self.pid_mm[self.root] = None       # tracked from its first execve on

    # ------------------------------------------------------------ helpers
    def _emit(self, t: int, mm: int, op: int, cls: int, flags: int, addr: int, ln: int,
              arg: int = 0) -> None:
        self.rows.append((t, mm, op, cls, flags, addr, ln, arg))

    def _new_mm(self, pid: int, start: str, parent: Optional[int], t: int,
                vmas: Optional[VmaMap] = None, exe: str = "") -> _MM:
        mm = _MM(len(self.mms), pid, vmas or VmaMap())
        self.mms.append(mm)
        self.processes.append({"mm": mm.idx, "pid": pid, "comm": self.comms.get(pid, ""),
                               "exe": exe, "start": start, "parent": parent, "t": t, "vmas": []})
        self.pid_mm[pid] = mm.idx
        return mm

    def _mm_of(self, pid: int) -> Optional[_MM]:
        i = self.pid_mm.get(pid)
        return self.mms[i] if i is not None else None

    # ---------------------------------------------------------- main loop
    def feed(self, events: Iterable[RawEvent]) -> None:
        for ev in events:
            self.comms.setdefault(ev.pid, ev.comm)
            name = ev.event
            if name == "sched:sched_process_fork":
                self._fork(ev)
            elif name == "sched:sched_process_exec":
                self._exec(ev)
            elif name == "sched:sched_process_exit":
                self._exit(ev)
            elif name.startswith("syscalls:sys_enter_"):
                self._sys_enter(ev, name[len("syscalls:sys_enter_"):])
            elif name.startswith("syscalls:sys_exit_"):
                self._sys_exit(ev, name[len("syscalls:sys_exit_"):])
            elif name.startswith("exceptions:page_fault"):
                self._fault_event(ev)

    def _sys_enter(self, ev: RawEvent, sc: str) -> None:
        if ev.pid not in self.pid_mm:
            return
        if sc in ("execve", "execveat"):
            self.in_exec[ev.tid] = []
            return
        self.pending_sys[ev.tid] = (sc, syscall_args(ev.fields), ev.t)

    def _sys_exit(self, ev: RawEvent, sc: str) -> None:
        if sc in ("execve", "execveat"):
            buf = self.in_exec.pop(ev.tid, None)
            if buf is not None and syscall_ret(ev.fields) != 0:
                for b in buf:           # failed exec: they were the old mm's
                    self._fault(b)
            elif buf is not None:
                self.skipped["exec_internal"] += len(buf)
            return
        ent = self.pending_sys.pop(ev.tid, None)
        if ent is None or ent[0] != sc or ev.pid not in self.pid_mm:
            return
        mm = self._mm_of(ev.pid)
        if mm is None:
            return
        self._syscall(mm, sc, ent[1], syscall_ret(ev.fields), ev.t)

    def _fault_event(self, ev: RawEvent) -> None:
        if ev.pid not in self.pid_mm:
            self.skipped["untracked"] += 1
        elif ev.tid in self.in_exec:
            self.in_exec[ev.tid].append(ev)
        else:
            self._fault(ev)

    # --------------------------------------------------------- processes
    def _fork(self, ev: RawEvent) -> None:
        m = re.search(r"child_pid=(\d+)", ev.fields)
        if not m:
            return
        child = int(m.group(1))
        parent_tgid = ev.pid
        recs = self.forks.get(child, [])
        rec = recs.pop(0) if recs else None
        if rec is not None and rec.get("thread"):
            return                           # a thread: events carry the tgid
        if parent_tgid not in self.pid_mm:
            if child == self.root:
                self.pid_mm[child] = None    # tracked from its exec on
            return
        kind = rec["kind"] if rec is not None else "fork"
        pmm = self._mm_of(parent_tgid)
        if kind == "vfork" or pmm is None:
            # shares the parent's mm until it execs (or: parent has no mm yet)
            self.pid_mm[child] = pmm.idx if pmm is not None else None
            return
        self._fork_mm(child, pmm, ev.t)

    def _fork_mm(self, child: int, pmm: _MM, t: int) -> None:
        """A fork without CLONE_VM: replay forks the parent at ``t`` (dup_mmap())."""
        vmas = pmm.vmas.copy()
        mm = self._new_mm(child, "fork", pmm.idx, t, vmas)
        mm.brk_start, mm.brk = pmm.brk_start, pmm.brk
        self.processes[mm.idx]["vmas"] = [[v.start, v.end, v.prot, v.cls, v.name] for v in vmas.vmas]
        self.processes[mm.idx]["exe"] = self.processes[pmm.idx]["exe"]
        self.processes[mm.idx]["forked"] = True
        mm.present = set(pmm.present)

    def _end_mm(self, pid: int, t: int) -> None:
        """The mm *pid* owns (not a vfork parent's it borrows) ends at ``t``."""
        mm = self._mm_of(pid)
        if mm is not None and mm.pid == pid and "exit" not in self.processes[mm.idx]:
            self.processes[mm.idx]["exit"] = t

    def _exit(self, ev: RawEvent) -> None:
        """sched_process_exit, group_dead: the mm goes (kernel/exit.c do_exit())."""
        if "group_dead=true" in ev.fields and ev.pid in self.pid_mm:
            self._end_mm(ev.pid, ev.t)

    def _exec(self, ev: RawEvent) -> None:
        d = dict(_KV_EQ.findall(ev.fields))
        pid = int(d.get("pid", ev.pid))
        old = int(d.get("old_pid", pid))
        buf = self.in_exec.pop(old, None)
        if buf is None:
            buf = self.in_exec.pop(pid, None)
        if pid not in self.pid_mm and old not in self.pid_mm:
            return
        if buf:
            self.skipped["exec_internal"] += len(buf)
        n = self.exec_n.get(pid, 0)
        self.exec_n[pid] = n + 1
        rec = self.execs.get((pid, n))
        self._end_mm(pid, ev.t)       # exec_mmap() drops the old mm
        self.comms[pid] = ev.comm
        fn = re.search(r"filename=(.*?) pid=", ev.fields)
        mm = self._new_mm(pid, "exec", None, ev.t, VmaMap(), fn.group(1) if fn else "")
        self.processes[mm.idx]["comm"] = ev.comm
        if rec is None:
            self.processes[mm.idx]["no_layout"] = True
            return
        self._exec_layout(mm, rec["maps"])
        self._exec_present(mm, ev.t, rec.get("present", []))

    def _exec_layout(self, mm: _MM, maps: Iterable[Sequence[Any]]) -> None:
        """The VMAs /proc/PID/maps showed right after execve."""
        prev: Optional[RecordedVma] = None
        for start, end, perms, _off, path in maps:
            if start >= USER_TOP:
                continue
            cls, grows = _classify_map(path, perms, prev if prev is not None and prev.end == start
                                       else None)
            v = RecordedVma(start, end, prot_of(perms), cls, path, grows)
            mm.vmas.insert(v)
            prev = v
        self.processes[mm.idx]["vmas"] = [[v.start, v.end, v.prot, v.cls, v.name]
                                          for v in mm.vmas.vmas]

    def _exec_present(self, mm: _MM, t: int, present: Iterable[Sequence[Any]]) -> None:
        """Anonymous pages exec already populated (not faults): OP_POPULATE."""
        for start, end, bitmap in present:
            bits = bytes.fromhex(bitmap)
            pages = [i for i in range((end - start) >> PAGE_SHIFT) if bits[i >> 3] >> (i & 7) & 1]
            first = start >> PAGE_SHIFT
            for s, n in page_runs([first + p for p in pages]):
                v = mm.vmas.find(s << PAGE_SHIFT)
                if v is not None and v.cls in ANON_CLASSES:
                    self._emit(t, mm.idx, OP_POPULATE, v.cls, 0, s << PAGE_SHIFT, n << PAGE_SHIFT)
                    mm.present.update(range(s, s + n))

    # ----------------------------------------------------------- syscalls
    def _unmap(self, mm: _MM, t: int, s: int, e: int) -> None:
        if e <= s:
            return
        removed = mm.vmas.remove(s, e)
        if removed:
            self._emit(t, mm.idx, OP_UNMAP, C_ANON, 0, s, e - s)
            self._forget(mm, s, e)

    def _forget(self, mm: _MM, s: int, e: int) -> None:
        ps, pe = s >> PAGE_SHIFT, e >> PAGE_SHIFT
        if pe - ps > len(mm.present):
            mm.present = {p for p in mm.present if not ps <= p < pe}
        else:
            for p in range(ps, pe):
                mm.present.discard(p)

    def _map(self, mm: _MM, t: int, v: RecordedVma, flags: int = 0) -> None:
        self._unmap(mm, t, v.start, v.end)
        mm.vmas.insert(v)
        if v.cls in ANON_CLASSES:
            self._emit(t, mm.idx, OP_MAP, v.cls, flags, v.start, v.end - v.start, v.prot)
        else:
            self._emit(t, mm.idx, OP_MAP_OTHER, v.cls, flags, v.start, v.end - v.start, v.prot)

    def _syscall(self, mm: _MM, sc: str, a: dict[str, int], ret: int, t: int) -> None:
        handler = self.SYSCALL_HANDLERS.get(sc)
        if handler is not None:
            handler(self, mm, a, ret, t)

    def _sys_mmap(self, mm: _MM, a: dict[str, int], ret: int, t: int) -> None:
        if -4096 < ret < 0:
            return
        ln = page_up(a.get("len", 0))
        cls = _mmap_class(mm.vmas, a.get("flags", 0), ret)
        self._map(mm, t, RecordedVma(ret, ret + ln, a.get("prot", 0), cls))

    def _sys_munmap(self, mm: _MM, a: dict[str, int], ret: int, t: int) -> None:
        if ret == 0:
            s = a.get("addr", 0)
            self._unmap(mm, t, s, s + page_up(a.get("len", 0)))

    def _sys_mprotect(self, mm: _MM, a: dict[str, int], ret: int, t: int) -> None:
        if ret != 0:
            return
        s = a.get("start", a.get("addr", 0))
        e = s + page_up(a.get("len", 0))
        prot = a.get("prot", 0)
        for v in mm.vmas.overlapping(s, e):
            if v.cls in ANON_CLASSES and v.prot != prot:
                lo, hi = max(v.start, s), min(v.end, e)
                self._emit(t, mm.idx, OP_PROTECT, v.cls, 0, lo, hi - lo, prot)  # replayed natively
        if mm.vmas.overlapping(s, e):
            mm.vmas.update(s, e, prot=prot)     # mprotect sets one prot on every piece

    def _sys_madvise(self, mm: _MM, a: dict[str, int], ret: int, t: int) -> None:
        if ret != 0:
            return
        s = a.get("start", 0)
        ln = page_up(a.get("len_in", a.get("len", 0)))
        adv = a.get("behavior", a.get("advice", 0))
        anon = [v for v in mm.vmas.overlapping(s, s + ln) if v.cls in ANON_CLASSES]
        if not anon:
            return
        if adv in _MADV_DROP:
            self._emit(t, mm.idx, OP_MADVISE, anon[0].cls, 0, s, ln, MADV["dontneed"])
            self._forget(mm, s, s + ln)
        elif adv in (MADV["hugepage"], MADV["nohugepage"]):
            self._emit(t, mm.idx, OP_MADVISE, anon[0].cls, 0, s, ln, adv)
        elif adv not in _MADV_NO_EFFECT:
            self.skipped["unsupported_madvise"] += 1

    def _sys_brk(self, mm: _MM, a: dict[str, int], ret: int, t: int) -> None:
        if ret <= 0:
            return
        if mm.brk_start is None:
            mm.brk_start = mm.brk = ret
            return
        old_end, new_end = page_up(mm.brk or ret), page_up(ret)
        if new_end > old_end:
            start = max(old_end, page_up(mm.brk_start))
            # do_brk_flags() only expands a VMA at or above start_brk
            # (vma_prev_limit): the first heap VMA is never merged with
            # the .bss VMA that ends at start_brk
            fl = M_NOMERGE if start == page_up(mm.brk_start) else 0
            self._map(mm, t, RecordedVma(start, new_end, PROT_READ | PROT_WRITE, C_HEAP, "[heap]"), fl)
        elif new_end < old_end:
            self._unmap(mm, t, new_end, old_end)
        mm.brk = ret

    def _sys_mremap(self, mm: _MM, a: dict[str, int], ret: int, t: int) -> None:
        if -4096 < ret < 0:
            return
        old, old_len = a.get("addr", 0), page_up(a.get("old_len", 0))
        new_len = page_up(a.get("new_len", 0))
        src = mm.vmas.find(old)
        if src is None:
            return
        if ret != old:
            self._mremap_move(mm, t, src, (old, old_len, new_len, ret), a.get("flags", 0))
        elif new_len > old_len:
            self._map(mm, t, src.copy(start=old + old_len, end=old + new_len))
        elif new_len < old_len:
            self._unmap(mm, t, old + new_len, old + old_len)

    def _mremap_move(self, mm: _MM, t: int, src: RecordedVma, lens: tuple[int, int, int, int],
                     flags: int) -> None:
        """mremap() that moved the mapping (mm/mremap.c move_vma())."""
        old, old_len, new_len, new = lens
        moved = [p for p in mm.present if old >> PAGE_SHIFT <= p < (old + old_len) >> PAGE_SHIFT]
        self.skipped["mremap_moved_pages"] += len(moved)
        if src.cls in ANON_CLASSES:
            # replay carries the emulator's pages over (see replay_into)
            self._emit(t, mm.idx, OP_MOVE, src.cls, 0, old, min(old_len, new_len), new)
        if not flags & MREMAP_DONTUNMAP:        # MREMAP_DONTUNMAP keeps the old range
            self._unmap(mm, t, old, old + old_len)
        self._map(mm, t, src.copy(start=new, end=new + new_len), M_MOVED)
        if src.cls in ANON_CLASSES:
            delta = (new - old) >> PAGE_SHIFT
            mm.present.update(p + delta for p in moved if p - (old >> PAGE_SHIFT) <
                              new_len >> PAGE_SHIFT)

    SYSCALL_HANDLERS: ClassVar[dict[str, _SyscallHandler]] = {
        "mmap": _sys_mmap, "munmap": _sys_munmap, "mprotect": _sys_mprotect,
        "madvise": _sys_madvise, "brk": _sys_brk, "mremap": _sys_mremap,
    }

    # ------------------------------------------------------------- faults
    def _expand_stack(self, mm: _MM, t: int, addr: int) -> Optional[RecordedVma]:
        """A fault below a grows-down VMA, within reach and not over another
        VMA, grows it (expand_downwards()); the VMA now holding *addr*."""
        above = mm.vmas.next_above(addr)
        below = mm.vmas.prev_below(addr)
        if (above is not None and above.growsdown and above.start - addr <= _STACK_GAP
                and (below is None or below.end <= page_down(addr))):
            self._map(mm, t, above.copy(start=page_down(addr), end=above.start))
            return mm.vmas.find(addr)
        return None

    def _fault(self, ev: RawEvent) -> None:
        mm = self._mm_of(ev.pid)
        if mm is None:
            self.skipped["untracked"] += 1
            return
        addr, err = fault_fields(ev.fields)
        if addr >= USER_TOP:
            self.skipped["kernel_address"] += 1
            return
        write = bool(err & 2)
        flags = ((F_WRITE if write else 0) | (F_PRESENT if err & 1 else 0)
                 | (F_INSTR if err & 0x10 else 0) | (F_KERNEL if ev.event.endswith("kernel") else 0))
        v = mm.vmas.find(addr) or self._expand_stack(mm, ev.t, addr)
        if v is None:
            cls = C_BAD
        elif v.cls in ANON_CLASSES:
            ok = (v.prot & PROT_WRITE) if write else (v.prot & (PROT_READ | PROT_EXEC))
            cls = v.cls if ok else C_BAD
        else:
            cls = v.cls
        self._emit(ev.t, mm.idx, OP_FAULT, cls, flags, addr, 0)
        if cls in ANON_CLASSES:
            mm.present.add(addr >> PAGE_SHIFT)

    # -------------------------------------------------------------- result
    def build(self, header: Optional[dict[str, Any]] = None) -> Trace:
        rows = self.rows
        ev = np.array(rows, dtype=EVENT_DTYPE) if rows else np.zeros(0, dtype=EVENT_DTYPE)
        if len(ev):
            order = np.argsort(ev["t"], kind="stable")
            ev = ev[order]
        h = dict(header or {})
        h.setdefault("exit_status", self.exit_status)
        h["skipped"] = dict(self.skipped)
        tr = Trace(header=h, processes=self.processes, events=ev)
        counts = tr.fault_counts()
        for p in self.processes:
            sel = (ev["mm"] == p["mm"]) & (ev["op"] == OP_FAULT)
            p["faults"] = int(sel.sum())
            p["anon_faults"] = int((sel & np.isin(ev["cls"], ANON_CLASSES)).sum())
        h["fault_counts"] = counts
        return tr


def build_trace(perf_lines: Iterable[str], tracee_log: Sequence[dict[str, Any]],
                header: Optional[dict[str, Any]] = None) -> Trace:
    """perf script text + laf_tracee log records -> :class:`Trace`."""
    b = TraceBuilder(tracee_log)
    b.feed(parse_perf_script(perf_lines))
    return b.build(header)


def read_tracee_log(path: Union[str, Path]) -> list[dict[str, Any]]:
    """The JSON-lines log ``laf_tracee -o LOG`` wrote."""
    out = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise TraceError(f"{path}:{i}: bad laf_tracee record: {exc}") from None
    return out
