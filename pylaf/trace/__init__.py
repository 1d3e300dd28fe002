"""Record real workloads with perf and replay their anonymous faults.

Recording (:func:`record`, ``pylaf record -o TRACE -- CMD ...``) runs

    perf record -e exceptions:page_fault_user -e exceptions:page_fault_kernel \\
                -e syscalls:sys_{enter,exit}_{mmap,munmap,mprotect,madvise,brk,mremap,execve,execveat} \\
                -e sched:sched_process_exec -e sched:sched_process_fork \\
                -- laf_tracee [-R] -o LOG -- CMD ...

``laf_tracee`` (``csrc/kprog/laf_tracee.c``) ptraces the command and its
descendants only at exec/fork events: it snapshots ``/proc/PID/maps`` (and
which anonymous pages exec already populated) at every execve, sets
``ADDR_NO_RANDOMIZE`` (``-R``, like ``setarch -R``) and tells fork from vfork
from thread creation.  ``perf script`` output plus that log are folded into
one compact trace: per process ("mm") its initial layout, then a time-ordered
event array (faults, VMA changes) where every fault is classified by the VMA
it hit: anonymous private memory (heap/brk, stack, .bss, anonymous mmap) or
not (file-backed, shared, vdso, no VMA).  Record with mTHP off (the default
settings) so every first touch of every anonymous page is a fault.

Replay (:func:`replay`, ``pylaf replay TRACE --policy SPEC ...``, and the
workloads of :func:`bundled_workloads`) drives one emulated address space:
each process in turn gets its anonymous VMAs at their recorded addresses
(``fixed=True``), the pages exec had populated (``uffd_copy``: not faults),
then its VMA operations and anonymous faults in order; when it is done its
VMAs are unmapped and the next process starts.  The process with the most
anonymous faults runs last, so the final RSS is that process's at exit.
File-backed and other faults are not replayed; they are counted separately.

Trace file format (little-endian)::

    0   8  magic  b"\\x89PYLAFTR"
    8   2  version (1)
    10  2  flags (0)
    12  4  header length H
    16  4  CRC-32 of the header
    20  4  reserved (0)
    24  H  header: UTF-8 JSON (metadata, processes, array directory)
    ..     arrays: zlib-compressed, each with its offset, length, raw length,
           dtype, shape and CRC-32 (of the compressed bytes) in the header

Load errors (:class:`TraceFormatError`) name the file and the byte position.
"""
from __future__ import annotations

import bisect
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TextIO, Union

import numpy as np

MAGIC = b"\x89PYLAFTR"
VERSION = 1
PREFIX = struct.Struct("<8sHHIII")        # magic, version, flags, hlen, hcrc, reserved
PAGE = 4096
PAGE_SHIFT = 12

# ---------------------------------------------------------------- event codes
OP_FAULT = 1
OP_MAP = 2         # anonymous private mapping created / grown (addr, len, arg=prot)
OP_UNMAP = 3       # any range removed (addr, len)
OP_PROTECT = 4     # mprotect of an anonymous range (addr, len, arg=prot)
OP_MADVISE = 5     # (addr, len, arg=advice)
OP_POPULATE = 6    # pages present without a fault (addr, len); flags bit0: zero pages
OP_MAP_OTHER = 7   # a non-anonymous mapping (file/shared) created: (addr, len, arg=prot)
OP_MOVE = 8        # mremap moves (addr=old, len=old_len, arg=new addr); then UNMAP + MAP(M_MOVED)

OP_NAMES = {OP_FAULT: "fault", OP_MAP: "map", OP_UNMAP: "unmap", OP_PROTECT: "protect",
            OP_MADVISE: "madvise", OP_POPULATE: "populate", OP_MAP_OTHER: "map-other",
            OP_MOVE: "move"}

# fault flags
F_WRITE = 1
F_KERNEL = 2       # page_fault_kernel (kernel-mode access to a user address)
F_PRESENT = 4      # protection fault on a present PTE (COW / write after read)
F_INSTR = 8
# map flags
M_MOVED = 1        # created by mremap moving pages (their content is not replayed)
M_NOMERGE = 2      # brk() creating the heap VMA: never merged with the .bss below start_brk
P_ZERO = 1         # OP_POPULATE: zero-page PTEs (fork COW approximation)

# region classes (the VMA a fault or mapping belongs to)
C_HEAP, C_STACK, C_BSS, C_ANON, C_FILE, C_SHARED, C_SPECIAL, C_BAD = range(8)
CLASS_NAMES = ("heap", "stack", "bss", "anon-mmap", "file", "shared", "special", "no-vma")
ANON_CLASSES = (C_HEAP, C_STACK, C_BSS, C_ANON)

EVENT_DTYPE = np.dtype([("t", "<u8"), ("mm", "<u4"), ("op", "u1"), ("cls", "u1"),
                        ("flags", "<u2"), ("addr", "<u8"), ("len", "<u8"), ("arg", "<u8")])

PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x01, 0x02, 0x10, 0x20
MAP_STACK, MAP_HUGETLB = 0x20000, 0x40000
MADV = {"dontneed": 4, "free": 8, "remove": 9, "hugepage": 14, "nohugepage": 15,
        "dontneed_locked": 24, "collapse": 25, "populate_read": 22, "populate_write": 23}

USER_TOP = 1 << 47


class TraceError(Exception):
    """Recording or replaying a trace failed."""


class TraceFormatError(TraceError, ValueError):
    """A trace file is truncated, corrupted or not a pylaf trace."""

    def __init__(self, path: Union[str, Path], pos: int, msg: str) -> None:
        super().__init__(f"{path}: byte {pos}: {msg}")
        self.path = str(path)
        self.pos = pos


class PerfError(TraceError):
    """perf is missing, refused, or failed."""


# ============================================================== trace object


@dataclass
class Trace:
    """A recorded trace: metadata, processes and the event array.

    ``events`` is a numpy structured array (:data:`EVENT_DTYPE`) in time
    order; ``processes[i]`` describes mm ``i`` (``pid``, ``comm``, ``exe``,
    ``start`` = exec|fork|vfork, ``parent``, ``vmas`` = initial layout as
    ``[start, end, prot, cls, name]``).
    """

    header: dict[str, Any]
    processes: list[dict[str, Any]]
    events: np.ndarray
    path: Optional[str] = None

    @property
    def name(self) -> str:
        return str(self.header.get("name") or (Path(self.path).stem if self.path else "trace"))

    @property
    def description(self) -> str:
        return str(self.header.get("description") or " ".join(self.header.get("command", [])))

    def faults(self, classes: Optional[Iterable[int]] = None) -> np.ndarray:
        ev = self.events[self.events["op"] == OP_FAULT]
        if classes is not None:
            ev = ev[np.isin(ev["cls"], list(classes))]
        return ev

    def fault_counts(self) -> dict[str, int]:
        """Recorded faults by region class (``anon`` = the four anonymous classes)."""
        f = self.faults()
        out = {CLASS_NAMES[c]: int((f["cls"] == c).sum()) for c in range(len(CLASS_NAMES))}
        out["anon"] = int(np.isin(f["cls"], ANON_CLASSES).sum())
        out["total"] = len(f)
        return out

    def summary(self) -> str:
        fc = self.fault_counts()
        cmd = " ".join(self.header.get("command", []))
        lines = [f"trace {self.path or self.name}: {cmd}",
                 f"  recorded {self.header.get('recorded', '?')} on {self.header.get('kernel', '?')}"
                 f", {len(self.processes)} process(es), {len(self.events)} events"
                 f", exit status {self.header.get('exit_status')}",
                 "  faults: " + ", ".join(f"{k}={v}" for k, v in fc.items() if v or k in ("anon", "total"))]
        skipped = self.header.get("skipped", {})
        if any(skipped.values()):
            lines.append("  not replayed: " + ", ".join(f"{k}={v}" for k, v in skipped.items() if v))
        return "\n".join(lines)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_trace(trace: Trace, path: Union[str, Path]) -> Path:
    """Write *trace* atomically (temp file in the same directory, then rename)."""
    path = Path(path)
    arrays = {"events": np.ascontiguousarray(trace.events, dtype=EVENT_DTYPE)}
    blobs = []
    directory = []
    for name, arr in arrays.items():
        raw = arr.tobytes()
        comp = zlib.compress(raw, 9)
        blobs.append(comp)
        directory.append({"name": name, "dtype": arr.dtype.descr, "shape": list(arr.shape),
                          "raw_len": len(raw), "len": len(comp), "crc32": zlib.crc32(comp)})
    header = dict(trace.header)
    header["format"] = "pylaf-trace"
    header["processes"] = trace.processes
    # offsets depend on the header length, which depends on the offsets:
    # iterate until stable (it converges in two rounds)
    offset_base = 0
    for _ in range(5):
        off = PREFIX.size + offset_base
        for d, b in zip(directory, blobs):
            d["offset"] = off
            off += len(b)
        header["arrays"] = directory
        header["file_size"] = off
        hbytes = json.dumps(header, separators=(",", ":"), default=_json_default).encode()
        if len(hbytes) == offset_base:
            break
        offset_base = len(hbytes)
    prefix = PREFIX.pack(MAGIC, VERSION, 0, len(hbytes), zlib.crc32(hbytes), 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(prefix)
            f.write(hbytes)
            for b in blobs:
                f.write(b)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    trace.path = str(path)
    return path


def load_trace(path: Union[str, Path]) -> Trace:
    """Read a trace file; :class:`TraceFormatError` (file + byte position) if bad."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_trace_bytes(data, path)


def parse_trace_bytes(data: bytes, path: Union[str, Path] = "<bytes>") -> Trace:
    n = len(data)
    if n == 0:
        raise TraceFormatError(path, 0, "empty file: not a pylaf trace")
    if n < len(MAGIC) or data[:len(MAGIC)] != MAGIC[:min(n, len(MAGIC))] or n < len(MAGIC):
        if n < len(MAGIC) and data == MAGIC[:n]:
            raise TraceFormatError(path, n, f"truncated: file ends after {n} bytes, inside the "
                                            f"{len(MAGIC)}-byte magic")
        where = next((i for i in range(min(n, len(MAGIC))) if data[i] != MAGIC[i]), 0)
        raise TraceFormatError(path, where, f"not a pylaf trace (bad magic {data[:8]!r}, "
                                            f"expected {MAGIC!r})")
    if n < PREFIX.size:
        raise TraceFormatError(path, n, f"truncated: file ends after {n} bytes, inside the "
                                        f"{PREFIX.size}-byte prefix")
    magic, version, flags, hlen, hcrc, _res = PREFIX.unpack_from(data, 0)
    if version != VERSION:
        raise TraceFormatError(path, 8, f"unsupported trace version {version} "
                                        f"(this pylaf reads version {VERSION})")
    if flags != 0:
        raise TraceFormatError(path, 10, f"unknown flags {flags:#x}")
    hend = PREFIX.size + hlen
    if n < hend:
        raise TraceFormatError(path, n, f"truncated: the header needs bytes {PREFIX.size}.."
                                        f"{hend - 1} but the file ends after {n} bytes")
    hbytes = data[PREFIX.size:hend]
    if zlib.crc32(hbytes) != hcrc:
        raise TraceFormatError(path, PREFIX.size, f"header checksum mismatch (bytes "
                                                  f"{PREFIX.size}..{hend - 1} are corrupted)")
    try:
        header = json.loads(hbytes.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        pos = PREFIX.size + getattr(exc, "pos", getattr(exc, "start", 0))
        raise TraceFormatError(path, pos, f"corrupt header: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != "pylaf-trace":
        raise TraceFormatError(path, PREFIX.size, "header is not a pylaf-trace header")
    size = header.get("file_size")
    if isinstance(size, int) and n < size:
        raise TraceFormatError(path, n, f"truncated: expected {size} bytes, the file ends "
                                        f"after {n} bytes")
    if isinstance(size, int) and n > size:
        raise TraceFormatError(path, size, f"{n - size} unexpected bytes after the end of the "
                                           f"trace (expected {size} bytes)")
    arrays: dict[str, np.ndarray] = {}
    for d in header.get("arrays", []):
        off, ln = int(d["offset"]), int(d["len"])
        if off < hend or off + ln > n:
            raise TraceFormatError(path, min(off, n), f"array {d.get('name')!r} at bytes "
                                                      f"{off}..{off + ln - 1} lies outside the file")
        blob = data[off:off + ln]
        if zlib.crc32(blob) != int(d["crc32"]):
            raise TraceFormatError(path, off, f"checksum mismatch in array {d['name']!r} "
                                              f"(bytes {off}..{off + ln - 1} are corrupted)")
        try:
            raw = zlib.decompress(blob)
            dtype = np.dtype([tuple(x) for x in d["dtype"]])
            arr = np.frombuffer(raw, dtype=dtype).reshape(d["shape"])
        except (zlib.error, ValueError, TypeError) as exc:
            raise TraceFormatError(path, off, f"array {d['name']!r}: {exc}") from None
        if len(raw) != int(d["raw_len"]):
            raise TraceFormatError(path, off, f"array {d['name']!r}: {len(raw)} bytes, "
                                              f"expected {d['raw_len']}")
        arrays[d["name"]] = arr
    if "events" not in arrays:
        raise TraceFormatError(path, PREFIX.size, "no 'events' array in the header")
    ev = arrays["events"]
    if ev.dtype != EVENT_DTYPE:
        try:
            ev = ev.astype(EVENT_DTYPE)
        except (TypeError, ValueError):
            raise TraceFormatError(path, PREFIX.size, f"events have dtype {ev.dtype}, "
                                                      f"expected {EVENT_DTYPE}") from None
    processes = header.pop("processes", [])
    header.pop("arrays", None)
    mms = ev["mm"]
    if len(mms) and int(mms.max()) >= len(processes):
        raise TraceFormatError(path, PREFIX.size, f"events refer to mm {int(mms.max())} but the "
                                                  f"header lists {len(processes)} processes")
    return Trace(header=header, processes=processes, events=ev.copy(), path=str(path))


# ============================================================ perf script text


@dataclass
class RawEvent:
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


def _syscall_args(rest: str) -> dict[str, int]:
    return {k: int(v, 0) for k, v in _KV_COLON.findall(rest)}


def _syscall_ret(rest: str) -> int:
    s = rest.strip().split()[0] if rest.strip() else "0"
    v = int(s, 0)
    if v >= 1 << 63:
        v -= 1 << 64
    return v


def _fault_fields(rest: str) -> tuple[int, int]:
    d = dict(_KV_EQ.findall(rest))
    return int(d["address"], 16), int(d.get("error_code", "0"), 16)


# ============================================================== VMA modelling


@dataclass
class _Vma:
    start: int
    end: int
    prot: int
    cls: int
    name: str = ""
    growsdown: bool = False

    def copy(self, **kw: Any) -> _Vma:
        return dataclasses.replace(self, **kw)


class _VmaMap:
    """Sorted, non-overlapping VMAs of one process (the recorder's model)."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.vmas: list[_Vma] = []

    def copy(self) -> _VmaMap:
        m = _VmaMap()
        m.starts = list(self.starts)
        m.vmas = [v.copy() for v in self.vmas]
        return m

    def find(self, addr: int) -> Optional[_Vma]:
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0 and self.vmas[i].end > addr:
            return self.vmas[i]
        return None

    def next_above(self, addr: int) -> Optional[_Vma]:
        i = bisect.bisect_right(self.starts, addr)
        return self.vmas[i] if i < len(self.vmas) else None

    def prev_below(self, addr: int) -> Optional[_Vma]:
        i = bisect.bisect_right(self.starts, addr) - 1
        while i >= 0:
            if self.vmas[i].end <= addr:
                return self.vmas[i]
            i -= 1
        return None

    def overlapping(self, s: int, e: int) -> list[_Vma]:
        i = max(0, bisect.bisect_right(self.starts, s) - 1)
        out = []
        while i < len(self.vmas) and self.vmas[i].start < e:
            if self.vmas[i].end > s:
                out.append(self.vmas[i])
            i += 1
        return out

    def remove(self, s: int, e: int) -> list[_Vma]:
        """Remove [s, e); return the removed pieces."""
        removed = []
        keep_s, keep_v = [], []
        for v in self.vmas:
            if v.end <= s or v.start >= e:
                keep_s.append(v.start)
                keep_v.append(v)
                continue
            removed.append(v.copy(start=max(v.start, s), end=min(v.end, e)))
            if v.start < s:
                keep_s.append(v.start)
                keep_v.append(v.copy(end=s))
            if v.end > e:
                keep_s.append(e)
                keep_v.append(v.copy(start=e))
        self.starts, self.vmas = keep_s, keep_v
        return removed

    def insert(self, v: _Vma) -> None:
        self.remove(v.start, v.end)
        i = bisect.bisect_left(self.starts, v.start)
        self.starts.insert(i, v.start)
        self.vmas.insert(i, v)

    def update(self, s: int, e: int, **kw: Any) -> list[_Vma]:
        """Change attributes over [s, e) (splitting); return the changed pieces."""
        pieces = self.remove(s, e)
        for p in pieces:
            self.insert(p.copy(**kw))
        return [p.copy(**kw) for p in pieces]


def _prot_of(perms: str) -> int:
    return ((PROT_READ if perms[0] == "r" else 0) | (PROT_WRITE if perms[1] == "w" else 0)
            | (PROT_EXEC if perms[2] == "x" else 0))


def _page_down(a: int) -> int:
    return a & ~(PAGE - 1)


def _page_up(a: int) -> int:
    return (a + PAGE - 1) & ~(PAGE - 1)


# ============================================================== trace builder


@dataclass
class _MM:
    idx: int
    pid: int
    vmas: _VmaMap
    present: set[int] = field(default_factory=set)     # anon pages present (page numbers)
    brk_start: Optional[int] = None
    brk: Optional[int] = None


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
        self.tid_pid: dict[int, int] = {}
        self.pending_sys: dict[int, tuple[str, dict[str, int], int]] = {}
        self.in_exec: dict[int, list[RawEvent]] = {}
        self.rows: list[tuple[int, int, int, int, int, int, int, int]] = []
        self.skipped = {"exec_internal": 0, "untracked": 0, "kernel_address": 0,
                        "unsupported_madvise": 0, "mremap_moved_pages": 0,
                        "mprotect_approximated": 0, "fork_cow_pages": 0}
        self.comms: dict[int, str] = {}
        if self.root is not None:
            self.pid_mm[self.root] = None       # tracked from its first execve on

    # ------------------------------------------------------------ helpers
    def _emit(self, t: int, mm: int, op: int, cls: int, flags: int, addr: int, ln: int,
              arg: int = 0) -> None:
        self.rows.append((t, mm, op, cls, flags, addr, ln, arg))

    def _new_mm(self, pid: int, start: str, parent: Optional[int], t: int,
                vmas: Optional[_VmaMap] = None, exe: str = "") -> _MM:
        mm = _MM(len(self.mms), pid, vmas or _VmaMap())
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
            elif name.startswith("syscalls:sys_enter_"):
                sc = name[len("syscalls:sys_enter_"):]
                if ev.pid not in self.pid_mm:
                    continue
                if sc in ("execve", "execveat"):
                    self.in_exec[ev.tid] = []
                    continue
                self.pending_sys[ev.tid] = (sc, _syscall_args(ev.fields), ev.t)
            elif name.startswith("syscalls:sys_exit_"):
                sc = name[len("syscalls:sys_exit_"):]
                if sc in ("execve", "execveat"):
                    buf = self.in_exec.pop(ev.tid, None)
                    if buf is not None and _syscall_ret(ev.fields) != 0:
                        for b in buf:           # failed exec: they were the old mm's
                            self._fault(b)
                    elif buf is not None:
                        self.skipped["exec_internal"] += len(buf)
                    continue
                ent = self.pending_sys.pop(ev.tid, None)
                if ent is None or ent[0] != sc or ev.pid not in self.pid_mm:
                    continue
                mm = self._mm_of(ev.pid)
                if mm is None:
                    continue
                self._syscall(mm, sc, ent[1], _syscall_ret(ev.fields), ev.t)
            elif name.startswith("exceptions:page_fault"):
                if ev.pid not in self.pid_mm:
                    self.skipped["untracked"] += 1
                    continue
                if ev.tid in self.in_exec:
                    self.in_exec[ev.tid].append(ev)
                    continue
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
        vmas = pmm.vmas.copy()
        mm = self._new_mm(child, "fork", pmm.idx, ev.t, vmas)
        mm.brk_start, mm.brk = pmm.brk_start, pmm.brk
        self.processes[mm.idx]["vmas"] = [[v.start, v.end, v.prot, v.cls, v.name] for v in vmas.vmas]
        self.processes[mm.idx]["exe"] = self.processes[pmm.idx]["exe"]
        # COW: the parent's present anonymous pages are present in the child;
        # a write there is a (COW) fault of order 0: model them as zero pages
        mm.present = set(pmm.present)
        self.skipped["fork_cow_pages"] += len(mm.present)
        for s, n in _ranges(sorted(mm.present)):
            self._emit(ev.t, mm.idx, OP_POPULATE, C_ANON, P_ZERO, s << PAGE_SHIFT, n << PAGE_SHIFT)

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
        self.comms[pid] = ev.comm
        fn = re.search(r"filename=(.*?) pid=", ev.fields)
        exe = fn.group(1) if fn else ""
        vm = _VmaMap()
        mm = self._new_mm(pid, "exec", None, ev.t, vm, exe)
        self.processes[mm.idx]["comm"] = ev.comm
        if rec is None:
            self.processes[mm.idx]["no_layout"] = True
            return
        prev: Optional[_Vma] = None
        for start, end, perms, off, path in rec["maps"]:
            if start >= USER_TOP:
                continue
            prot = _prot_of(perms)
            shared = perms[3] == "s"
            if path == "[stack]":
                cls, grows = C_STACK, True
            elif path == "[heap]":
                cls, grows = C_HEAP, False
            elif path.startswith("[v") or path in ("[vsyscall]",):
                cls, grows = C_SPECIAL, False
            elif not path:
                cls = C_SHARED if shared else (C_BSS if prev is not None and prev.end == start
                                               and prev.cls == C_FILE else C_ANON)
                grows = False
            else:
                cls, grows = (C_SHARED if shared else C_FILE), False
            v = _Vma(start, end, prot, cls, path, grows)
            vm.insert(v)
            prev = v
        self.processes[mm.idx]["vmas"] = [[v.start, v.end, v.prot, v.cls, v.name] for v in vm.vmas]
        for start, end, bitmap in rec.get("present", []):
            bits = bytes.fromhex(bitmap)
            pages = [i for i in range((end - start) >> PAGE_SHIFT) if bits[i >> 3] >> (i & 7) & 1]
            first = start >> PAGE_SHIFT
            for s, n in _ranges([first + p for p in pages]):
                v = vm.find(s << PAGE_SHIFT)
                if v is not None and v.cls in ANON_CLASSES:
                    self._emit(ev.t, mm.idx, OP_POPULATE, v.cls, 0, s << PAGE_SHIFT, n << PAGE_SHIFT)
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

    def _map(self, mm: _MM, t: int, v: _Vma, flags: int = 0) -> None:
        self._unmap(mm, t, v.start, v.end)
        mm.vmas.insert(v)
        if v.cls in ANON_CLASSES:
            self._emit(t, mm.idx, OP_MAP, v.cls, flags, v.start, v.end - v.start, v.prot)
        else:
            self._emit(t, mm.idx, OP_MAP_OTHER, v.cls, flags, v.start, v.end - v.start, v.prot)

    def _syscall(self, mm: _MM, sc: str, a: dict[str, int], ret: int, t: int) -> None:
        if sc == "mmap":
            if -4096 < ret < 0:
                return
            ln = _page_up(a.get("len", 0))
            flags, prot = a.get("flags", 0), a.get("prot", 0)
            if flags & MAP_ANONYMOUS and not flags & MAP_SHARED and not flags & MAP_HUGETLB:
                prev = mm.vmas.prev_below(ret)
                if flags & MAP_STACK:
                    cls = C_STACK
                elif flags & MAP_FIXED and prev is not None and prev.end == ret and prev.cls == C_FILE:
                    cls = C_BSS
                else:
                    cls = C_ANON
            elif flags & MAP_SHARED or flags & MAP_HUGETLB:
                cls = C_SHARED
            else:
                cls = C_FILE
            self._map(mm, t, _Vma(ret, ret + ln, prot, cls))
        elif sc == "munmap":
            if ret == 0:
                s = a.get("addr", 0)
                self._unmap(mm, t, s, s + _page_up(a.get("len", 0)))
        elif sc == "mprotect":
            if ret != 0:
                return
            s = a.get("start", a.get("addr", 0))
            e = s + _page_up(a.get("len", 0))
            prot = a.get("prot", 0)
            for v in mm.vmas.overlapping(s, e):
                if v.cls in ANON_CLASSES and v.prot != prot:
                    lo, hi = max(v.start, s), min(v.end, e)
                    self._emit(t, mm.idx, OP_PROTECT, v.cls, 0, lo, hi - lo, prot)
                    if (v.prot & PROT_WRITE) and not (prot & PROT_WRITE):
                        self.skipped["mprotect_approximated"] += 1
            if mm.vmas.overlapping(s, e):
                mm.vmas.update(s, e, prot=prot)     # mprotect sets one prot on every piece
        elif sc == "madvise":
            if ret != 0:
                return
            s = a.get("start", 0)
            ln = _page_up(a.get("len_in", a.get("len", 0)))
            adv = a.get("behavior", a.get("advice", 0))
            anon = [v for v in mm.vmas.overlapping(s, s + ln) if v.cls in ANON_CLASSES]
            if not anon:
                return
            if adv in (MADV["dontneed"], MADV["dontneed_locked"], MADV["remove"]):
                self._emit(t, mm.idx, OP_MADVISE, anon[0].cls, 0, s, ln, MADV["dontneed"])
                self._forget(mm, s, s + ln)
            elif adv in (MADV["hugepage"], MADV["nohugepage"]):
                self._emit(t, mm.idx, OP_MADVISE, anon[0].cls, 0, s, ln, adv)
            elif adv in (MADV["free"], 3, 10, 11, 12, 13, 16, 17, 18, 19, 20, 21, 100, 101):
                pass        # FREE (no pressure: pages stay), WILLNEED, (DONT)FORK, COLD, ...
            else:
                self.skipped["unsupported_madvise"] += 1
        elif sc == "brk":
            if ret <= 0:
                return
            if mm.brk_start is None:
                mm.brk_start = mm.brk = ret
                return
            old_end, new_end = _page_up(mm.brk or ret), _page_up(ret)
            if new_end > old_end:
                start = max(old_end, _page_up(mm.brk_start))
                # do_brk_flags() only expands a VMA at or above start_brk
                # (vma_prev_limit): the first heap VMA is never merged with
                # the .bss VMA that ends at start_brk
                fl = M_NOMERGE if start == _page_up(mm.brk_start) else 0
                self._map(mm, t, _Vma(start, new_end, PROT_READ | PROT_WRITE, C_HEAP, "[heap]"), fl)
            elif new_end < old_end:
                self._unmap(mm, t, new_end, old_end)
            mm.brk = ret
        elif sc == "mremap":
            if -4096 < ret < 0:
                return
            old, old_len = a.get("addr", 0), _page_up(a.get("old_len", 0))
            new_len = _page_up(a.get("new_len", 0))
            src = mm.vmas.find(old)
            if src is None:
                return
            if ret == old:
                if new_len > old_len:
                    self._map(mm, t, src.copy(start=old + old_len, end=old + new_len))
                elif new_len < old_len:
                    self._unmap(mm, t, old + new_len, old + old_len)
            else:
                moved = [p for p in mm.present if old >> PAGE_SHIFT <= p < (old + old_len) >> PAGE_SHIFT]
                self.skipped["mremap_moved_pages"] += len(moved)
                if src.cls in ANON_CLASSES:
                    # replay carries the emulator's pages over (see replay_into)
                    self._emit(t, mm.idx, OP_MOVE, src.cls, 0, old, min(old_len, new_len), ret)
                flags = a.get("flags", 0)
                if not flags & 4:               # MREMAP_DONTUNMAP keeps the old range
                    self._unmap(mm, t, old, old + old_len)
                self._map(mm, t, src.copy(start=ret, end=ret + new_len), M_MOVED)
                if src.cls in ANON_CLASSES:
                    delta = (ret - old) >> PAGE_SHIFT
                    mm.present.update(p + delta for p in moved if p - (old >> PAGE_SHIFT) <
                                      new_len >> PAGE_SHIFT)

    # ------------------------------------------------------------- faults
    def _fault(self, ev: RawEvent) -> None:
        mm = self._mm_of(ev.pid)
        if mm is None:
            self.skipped["untracked"] += 1
            return
        addr, err = _fault_fields(ev.fields)
        if addr >= USER_TOP:
            self.skipped["kernel_address"] += 1
            return
        write = bool(err & 2)
        flags = (F_WRITE if write else 0) | (F_PRESENT if err & 1 else 0) | \
                (F_INSTR if err & 0x10 else 0) | \
                (F_KERNEL if ev.event.endswith("kernel") else 0)
        v = mm.vmas.find(addr)
        if v is None:
            above = mm.vmas.next_above(addr)
            below = mm.vmas.prev_below(addr)
            if (above is not None and above.growsdown and above.start - addr <= (128 << 20)
                    and (below is None or below.end <= _page_down(addr))):
                # stack expansion (expand_downwards)
                self._map(mm, ev.t, above.copy(start=_page_down(addr), end=above.start))
                v = mm.vmas.find(addr)
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


def _ranges(pages: Sequence[int]) -> Iterator[tuple[int, int]]:
    """Sorted page numbers -> (first, count) runs."""
    it = iter(pages)
    try:
        s = prev = next(it)
    except StopIteration:
        return
    for p in it:
        if p == prev + 1:
            prev = p
            continue
        yield s, prev - s + 1
        s = prev = p
    yield s, prev - s + 1


def build_trace(perf_lines: Iterable[str], tracee_log: Sequence[dict[str, Any]],
                header: Optional[dict[str, Any]] = None) -> Trace:
    """perf script text + laf_tracee log records -> :class:`Trace`."""
    b = TraceBuilder(tracee_log)
    b.feed(parse_perf_script(perf_lines))
    return b.build(header)


def read_tracee_log(path: Union[str, Path]) -> list[dict[str, Any]]:
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


# ================================================================== record

TRACEPOINTS = ("exceptions:page_fault_user", "exceptions:page_fault_kernel",
               "sched:sched_process_exec", "sched:sched_process_fork")
SYSCALLS = ("mmap", "munmap", "mprotect", "madvise", "brk", "mremap", "execve", "execveat")


def perf_events() -> list[str]:
    ev = list(TRACEPOINTS)
    for s in SYSCALLS:
        ev += [f"syscalls:sys_enter_{s}", f"syscalls:sys_exit_{s}"]
    return ev


def perf_binary() -> str:
    exe = os.environ.get("PYLAF_PERF", "perf")
    found = shutil.which(exe)
    if not found:
        raise PerfError(
            f"perf not found ({exe!r} is not on PATH). Install it: Debian/Ubuntu "
            "`apt-get install linux-perf` (or linux-tools-$(uname -r)), Fedora/RHEL "
            "`dnf install perf`; or point $PYLAF_PERF at a perf binary.")
    return found


def explain_perf_failure(stderr: str, rc: int) -> str:
    """Turn perf's complaint into what to install or enable."""
    s = stderr.lower()
    hints = []
    if "perf_event_paranoid" in s or "no permission" in s or "permission denied" in s \
            or "access to performance monitoring" in s or "are you root" in s:
        try:
            par = Path("/proc/sys/kernel/perf_event_paranoid").read_text().strip()
        except OSError:
            par = "?"
        hints.append(f"perf was refused access to the tracepoints (kernel.perf_event_paranoid={par}). "
                     "Run as root, or allow it: `sysctl -w kernel.perf_event_paranoid=-1` "
                     "(tracepoints need -1 or CAP_PERFMON), and make tracefs readable.")
    if "tracefs" in s or "debugfs" in s or "can't access trace events" in s \
            or ("no such file or directory" in s and "tracing" in s):
        hints.append("perf cannot read the tracepoint definitions: mount tracefs "
                     "(`mount -t tracefs nodev /sys/kernel/tracing`) and check that the kernel "
                     "has CONFIG_FTRACE_SYSCALLS (syscalls:*) and the x86 exceptions:* events.")
    if "event syntax error" in s or "unknown tracepoint" in s:
        hints.append("a tracepoint is missing on this kernel (needs exceptions:page_fault_user/"
                     "kernel, syscalls:sys_enter_*/sys_exit_* (CONFIG_FTRACE_SYSCALLS), "
                     "sched:sched_process_exec/fork).")
    tail = stderr.strip().splitlines()[-6:]
    msg = f"perf record failed (exit {rc})"
    if hints:
        msg += ": " + " ".join(hints)
    if tail:
        msg += "\nperf said:\n  " + "\n  ".join(tail)
    return msg


def _thp_state() -> dict[str, str]:
    try:
        from pylaf.live.host import read_thp_settings
        return read_thp_settings().raw()
    except Exception:
        return {}


def _thp_warning(raw: dict[str, str]) -> Optional[str]:
    on = [k.split("/")[0] for k, v in raw.items() if k.startswith("hugepages-") and
          (v == "always" or (v == "inherit" and raw.get("enabled") == "always"))
          and not k.startswith("hugepages-2048kB")]
    if on or raw.get("enabled") == "always":
        return ("warning: large anonymous folios are enabled (" + (", ".join(on) or "enabled=always") +
                "): some first touches will not fault and the trace under-reports; record with "
                "mTHP off (every size never, global madvise/never) or use --thp-off")
    return None


def record(command: Sequence[str], output: Union[str, Path], *, no_aslr: bool = True,
           thp_off: bool = False, keep_perf_data: Optional[Union[str, Path]] = None,
           name: Optional[str] = None, description: Optional[str] = None,
           buffer: str = "64M", log: Optional[TextIO] = None, stdout: Any = None) -> Trace:
    """Record *command* under perf and write the trace to *output*.

    ``thp_off``: apply every-size-never + global never for the recording
    (restored afterwards, also on Ctrl-C).  The trace file is written to a
    temporary name and renamed, so nothing half-written is left behind.
    ``stdout``: where the command's output goes (default: inherited).
    """
    from pylaf.live.host import build_helper

    if not command:
        raise TraceError("no command to record")
    perf = perf_binary()
    tracee = build_helper("laf_tracee")
    out = Path(output)
    tmpdir = Path(tempfile.mkdtemp(prefix="pylaf-record-"))
    data = tmpdir / "perf.data"
    tlog = tmpdir / "tracee.log"
    cmd = [perf, "record", "-q", "-N", "-B", "-m", buffer, "-o", str(data)]
    for e in perf_events():
        cmd += ["-e", e]
    cmd += ["--", str(tracee)] + (["-R"] if no_aslr else []) + ["-o", str(tlog), "--"] + list(command)
    from pylaf.live.host import thp_lock, thp_settings

    # under the pylaf THP lock: no other pylaf process changes knobs meanwhile
    ctx: Any = thp_settings(enabled="never", all_sizes="never") if thp_off else thp_lock()
    try:
        with ctx:
            thp = _thp_state()
            warn = _thp_warning(thp)
            if warn and log is not None:
                print(warn, file=log)
            started = datetime.datetime.now(datetime.timezone.utc)
            p = subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True)
        if not tlog.exists() or tlog.stat().st_size == 0:
            raise PerfError(explain_perf_failure(p.stderr, p.returncode))
        if p.stderr and log is not None:
            log.write(p.stderr)         # the command's own stderr (perf runs with -q)
        if not data.exists() or data.stat().st_size == 0:
            raise PerfError(explain_perf_failure(p.stderr, p.returncode))
        records = read_tracee_log(tlog)
        lost = _perf_lost(perf, data)
        if lost:
            raise PerfError(f"perf lost {lost} events while recording (buffer too small or the "
                            f"machine too busy); retry with a bigger --buffer")
        script = subprocess.run([perf, "script", "-i", str(data), "--ns", "--show-lost-events",
                                 "-F", "comm,pid,tid,time,event,trace"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if script.returncode != 0:
            raise PerfError(f"perf script failed (exit {script.returncode}): {script.stderr.strip()}")
        header = {
            "name": name or out.stem, "description": description or " ".join(command),
            "command": list(command), "cwd": os.getcwd(), "kernel": platform.release(),
            "machine": platform.machine(), "recorded": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "no_aslr": no_aslr, "page_size": PAGE, "thp_settings": thp,
            "perf": _perf_version(perf), "tracepoints": perf_events(),
            "recorder": "pylaf record (perf + laf_tracee)",
        }
        trace = build_trace(script.stdout.splitlines(), records, header)
        if keep_perf_data:
            kd = Path(keep_perf_data)
            kd.mkdir(parents=True, exist_ok=True)
            shutil.copy2(data, kd / "perf.data")
            shutil.copy2(tlog, kd / "tracee.log")
        save_trace(trace, out)
        return trace
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _perf_lost(perf: str, data: Path) -> int:
    p = subprocess.run([perf, "report", "-i", str(data), "--stats"], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
    lost = 0
    for line in p.stdout.splitlines():
        m = re.match(r"\s*LOST(?:_SAMPLES)? events:\s*(\d+)", line)
        if m:
            lost += int(m.group(1))
    return lost


def _perf_version(perf: str) -> str:
    try:
        return subprocess.run([perf, "--version"], stdout=subprocess.PIPE, text=True,
                              stderr=subprocess.DEVNULL).stdout.strip()
    except OSError:
        return "?"


# ================================================================== replay


@dataclass
class ReplayReport:
    """What a replay did besides the emulator's counters."""

    faults_replayed: int = 0
    faults_not_replayed: dict[str, int] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    sigsegv: int = 0
    processes: int = 0


def _prot_str(prot: int) -> str:
    if prot & PROT_WRITE:
        return "rw"
    if prot & (PROT_READ | PROT_EXEC):
        return "r"
    return ""


class TraceWorkload:
    """A recorded trace as a ``pylaf compare`` workload (``name``,
    ``description``, ``run(mm)``)."""

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

    def __repr__(self) -> str:
        return f"<TraceWorkload {self.name}>"

    def run(self, mm: Any) -> None:
        self.report = replay_into(mm, self.trace)


def _order_processes(trace: Trace) -> list[int]:
    """Replay order: by start time, but the process with the most anonymous
    faults last (its VMAs stay mapped, so final RSS is that process's)."""
    procs = sorted(trace.processes, key=lambda p: (p.get("t", 0), p["mm"]))
    if not procs:
        return []
    main = max(procs, key=lambda p: (p.get("anon_faults", 0), -p["mm"]))
    return [p["mm"] for p in procs if p is not main] + [main["mm"]]


def replay_into(mm: Any, trace: Trace, fault_log: Optional[list[tuple[int, int, int]]] = None
                ) -> ReplayReport:
    """Replay the anonymous part of *trace* into the AddressSpace *mm*.

    ``fault_log``: if given, gets ``(mm, addr, write)`` of every replayed
    access that faulted in the emulator (for diagnostics)."""
    from pylaf.errors import LafError

    if mm.page_size != PAGE:
        raise TraceError(f"traces are recorded with 4K pages; cannot replay on a "
                         f"{mm.page_size // 1024}K-page emulator")
    rep = ReplayReport()
    ev = trace.events
    counts = trace.fault_counts()
    rep.faults_not_replayed = {k: counts[k] for k in ("file", "shared", "special", "no-vma") if counts[k]}
    order = _order_processes(trace)
    by_mm = {i: np.flatnonzero(ev["mm"] == i) for i in order}

    def err(kind: str) -> None:
        rep.errors[kind] = rep.errors.get(kind, 0) + 1

    def opc(kind: str) -> None:
        rep.ops[kind] = rep.ops.get(kind, 0) + 1

    for n, mi in enumerate(order):
        rep.processes += 1
        # start from an empty address space (the previous process exited)
        for v in mm.vmas():
            mm.munmap(v.start, v.end - v.start)
        with contextlib.suppress(LafError, ValueError):
            mm.set_thp_disable(False)
        proc = trace.processes[mi]
        if proc.get("start") == "exec" or proc.get("start") == "fork":
            for start, end, prot, cls, _name in proc.get("vmas", []):
                if cls in ANON_CLASSES:
                    _emu_map(mm, start, end - start, prot, err)
        idx = by_mm[mi]
        sub = ev[idx]
        moving: Optional[tuple[int, np.ndarray]] = None
        ops = sub["op"]
        # faults are batched between other ops
        is_fault = (ops == OP_FAULT) & np.isin(sub["cls"], ANON_CLASSES)
        other = np.flatnonzero(ops != OP_FAULT)
        prev = 0
        bounds = list(other) + [len(sub)]
        for b in bounds:
            if b > prev:
                sel = is_fault[prev:b]
                if sel.any():
                    chunk = sub[prev:b][sel]
                    addrs = np.ascontiguousarray(chunk["addr"], dtype=np.uint64)
                    writes = np.ascontiguousarray((chunk["flags"] & F_WRITE) != 0)
                    r = mm.touch(addrs, writes, results=fault_log is not None)
                    rep.faults_replayed += len(addrs)
                    if fault_log is not None and r.results is not None:
                        hit = np.flatnonzero(r.results != 0)
                        fault_log.extend((mi, int(addrs[i]), int(writes[i])) for i in hit)
                    rep.sigsegv += r.sigsegv
            if b >= len(sub):
                break
            e = sub[b]
            op, addr, ln, arg = int(e["op"]), int(e["addr"]), int(e["len"]), int(e["arg"])
            try:
                if op == OP_MAP:
                    nomerge = bool(int(e["flags"]) & M_NOMERGE)
                    if int(e["flags"]) & M_MOVED and moving is not None and (moving[1] != -1).any():
                        # the moved VMA keeps its anon_vma: it merges only with
                        # neighbours that have none (is_mergeable_anon_vma)
                        nomerge = any(v.anon_vma and (v.end == addr or v.start == addr + ln)
                                      for v in mm.vmas())
                    _emu_map(mm, addr, ln, arg, err, nomerge=nomerge)
                    opc("map")
                    if int(e["flags"]) & M_MOVED and moving is not None:
                        _emu_move_in(mm, moving, err)
                        moving = None
                elif op == OP_MOVE:
                    # mremap moving pages: remember what is present at the old
                    # place (in the emulator, under this policy) to put it back
                    # at the new place once it is mapped
                    _p, orders = mm.read_ptes(addr, ln >> PAGE_SHIFT)
                    moving = (arg, orders)
                    opc("mremap move")
                elif op in (OP_UNMAP, OP_MAP_OTHER):
                    mm.munmap(addr, ln)
                    opc("unmap")
                elif op == OP_PROTECT:
                    _emu_protect(mm, addr, ln, arg, err)
                    opc("mprotect")
                elif op == OP_MADVISE:
                    name = {4: "dontneed", 14: "hugepage", 15: "nohugepage"}.get(arg)
                    if name:
                        try:
                            mm.madvise(addr, ln, name)
                        except LafError:
                            err(f"madvise {name} over a hole")
                        opc(f"madvise {name}")
                elif op == OP_POPULATE:
                    _emu_populate(mm, addr, ln, bool(int(e["flags"]) & P_ZERO), err)
                    opc("populate")
            except LafError as exc:
                err(f"{OP_NAMES.get(op, op)}: {type(exc).__name__}")
            prev = b + 1
    return rep


def _emu_map(mm: Any, addr: int, ln: int, prot: int, err: Any, nomerge: bool = False) -> None:
    from pylaf.errors import LafError

    try:
        mm.munmap(addr, ln)
        if nomerge:
            from pylaf._ffi import ffi, lib
            from pylaf.errors import check
            p = _prot_str(prot)
            cprot = (lib.LAF_PROT_READ if "r" in p else 0) | (lib.LAF_PROT_WRITE if "w" in p else 0)
            out = ffi.new("uint64_t *")
            check(lib.laf_mmap(mm.mm, addr, ln, cprot, lib.LAF_MAP_FIXED | lib.LAF_MAP_NOMERGE, out),
                  f"mmap({addr:#x}, {ln}, nomerge)")
        else:
            mm.mmap(ln, addr=addr, prot=_prot_str(prot), fixed=True)
    except LafError as exc:
        err(f"map: {exc}")


def _emu_move_in(mm: Any, moving: tuple[int, np.ndarray], err: Any) -> None:
    """Re-create the pages mremap moved: order-0 pages where the old place had
    a folio page, zero-page PTEs where it had the zero page (not faults)."""
    new, orders = moving
    for want_zero, sel in ((False, orders >= 0), (True, orders <= -2)):
        pages = np.flatnonzero(sel)
        for s, n in _ranges(pages.tolist()):
            _emu_populate(mm, new + (s << PAGE_SHIFT), n << PAGE_SHIFT, want_zero, err)


def _emu_protect(mm: Any, addr: int, ln: int, prot: int, err: Any) -> None:
    """The emulator has no mprotect: re-map the range with the new protection
    (none→rw, the common case of malloc arenas and thread stacks, loses no
    pages; rw→r/none drops the range's pages: counted in the trace header)."""
    _emu_map(mm, addr, ln, prot, err)


def _emu_populate(mm: Any, addr: int, ln: int, zero: bool, err: Any) -> None:
    from pylaf.errors import LafError

    try:
        mm.uffd_register(addr, ln, "missing")
    except LafError:
        err("populate: range not mapped")
        return
    try:
        if zero:
            mm.uffd_zeropage(addr, ln)
        else:
            mm.uffd_copy(addr, ln)
    except LafError:
        err("populate: already present")
    finally:
        mm.uffd_unregister(addr, ln)


def replay(trace: Union[Trace, str, Path], policy: Any = None, *, ram: Union[int, str] = "8G",
           report: Optional[list[ReplayReport]] = None) -> Any:
    """Replay *trace* under *policy* (a :class:`~pylaf.Policy` or spec string,
    default: this machine's live settings); returns the emulator's
    :class:`~pylaf.Stats`."""
    from pylaf.address_space import AddressSpace
    from pylaf.config import Config
    from pylaf.policy import Policy

    tr = trace if isinstance(trace, Trace) else load_trace(trace)
    if policy is None:
        from pylaf.live.host import read_thp_settings  # TODO-at-merge: pylaf.live host_policy()
        pol = Policy.from_sysfs_values(read_thp_settings().raw())
    elif isinstance(policy, str):
        pol = Policy.parse(policy)
    else:
        pol = policy
    with AddressSpace(Config(policy=pol, ram=ram)) as mm:
        rep = replay_into(mm, tr)
        st = mm.stats()
    if report is not None:
        report.append(rep)
    return st


# ================================================================= bundled


def traces_dir() -> Path:
    env = os.environ.get("PYLAF_TRACES_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "traces"


def bundled_workloads() -> list[TraceWorkload]:
    """Workloads for the traces shipped in ``traces/`` (``*.laftrace``)."""
    d = traces_dir()
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.glob("*.laftrace")):
        try:
            tr = load_trace(p)
        except TraceError as exc:
            import warnings
            warnings.warn(f"skipping bundled trace: {exc}", RuntimeWarning, stacklevel=2)
            continue
        out.append(TraceWorkload(tr, name=f"trace-{tr.name}",
                                 description=f"recorded: {tr.description}"))
    return out


__all__ = [
    "ANON_CLASSES",
    "CLASS_NAMES",
    "EVENT_DTYPE",
    "PerfError",
    "ReplayReport",
    "Trace",
    "TraceError",
    "TraceFormatError",
    "TraceWorkload",
    "build_trace",
    "bundled_workloads",
    "load_trace",
    "parse_perf_script",
    "parse_trace_bytes",
    "read_tracee_log",
    "record",
    "replay",
    "replay_into",
    "save_trace",
    "traces_dir",
]
_ = (sys,)


# ======================================================= replay validation


@dataclass
class LiveValidation:
    """Prediction from a 4K trace against the same command run live."""

    setting: str
    policy: str
    predicted_anon: int
    predicted_total: int
    live_anon: int
    live_total: int
    live_file: int
    recorded_file: int
    live_rusage_minflt: Optional[int] = None
    baseline_rusage_minflt: Optional[int] = None
    predicted_folios: dict[str, int] = field(default_factory=dict)

    @property
    def anon_error(self) -> int:
        return self.predicted_anon - self.live_anon

    @property
    def total_error(self) -> int:
        return self.predicted_total - self.live_total


def parse_setting(spec: str) -> dict[str, str]:
    """``"64K"`` / ``"16K-64K"`` / ``"16K,64K:always;2M:never"`` -> sysfs sizes
    (``{"64kB": "always"}``) for :func:`pylaf.kernel.thp_settings`."""
    from pylaf.policy import parse_thp_anon
    from pylaf.sizes import parse_size

    text = spec if ":" in spec else f"{spec}:always"
    return {f"{parse_size(k) // 1024}kB": v for k, v in parse_thp_anon(text).items()}


def _rusage_run(command: Sequence[str], cwd: Optional[str], no_aslr: bool) -> Optional[int]:
    from pylaf.live.host import build_helper

    exe = build_helper("laf_tracee")
    fd, stats = tempfile.mkstemp(prefix="pylaf-rusage-")
    os.close(fd)
    try:
        subprocess.run([str(exe)] + (["-R"] if no_aslr else []) + ["-n", "-s", stats, "--"] +
                       list(command), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(stats) as f:
            d = json.load(f)
        return int(d["minflt"]) + int(d["majflt"])
    except (OSError, ValueError, KeyError):
        return None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stats)


def validate_live(trace: Trace, settings: Sequence[str], *, ram: Union[int, str] = "8G",
                  log: Optional[TextIO] = None) -> list[LiveValidation]:
    """Predict faults for each mTHP *setting* from *trace* (recorded at 4K),
    then run the trace's command live with that setting applied (restored
    afterwards) and measure: a fresh recording under the setting (same
    classification, exact per-process fault counts) and getrusage.

    Needs root; changes sysfs only inside :func:`pylaf.kernel.thp_settings`.
    """
    from pylaf.live.host import read_thp_settings, thp_settings
    from pylaf.policy import Policy

    cmd = list(trace.header.get("command") or [])
    if not cmd:
        raise TraceError(f"{trace.path}: the trace does not record its command")
    cwd = trace.header.get("cwd")
    no_aslr = bool(trace.header.get("no_aslr", True))
    rec = trace.fault_counts()
    other = rec["total"] - rec["anon"]
    base_ru = _rusage_run(cmd, cwd, no_aslr)
    out = []
    for spec in settings:
        sizes = parse_setting(spec)
        with thp_settings(all_sizes="never", sizes={**{"2048kB": "inherit"}, **sizes}):
            pol = Policy.from_sysfs_values(read_thp_settings().raw())
            st = replay(trace, pol, ram=ram)
            tmp = Path(tempfile.mkdtemp(prefix="pylaf-validate-"))
            old_cwd = os.getcwd()
            try:
                if cwd:
                    os.chdir(cwd)
                live = record(cmd, tmp / "live.laftrace", no_aslr=no_aslr,
                              stdout=subprocess.DEVNULL)
            finally:
                os.chdir(old_cwd)
                shutil.rmtree(tmp, ignore_errors=True)
            ru = _rusage_run(cmd, cwd, no_aslr)
        lc = live.fault_counts()
        v = LiveValidation(setting=spec, policy=pol.describe(), predicted_anon=int(st.faults),
                           predicted_total=int(st.faults) + other, live_anon=lc["anon"],
                           live_total=lc["total"], live_file=lc["file"], recorded_file=rec["file"],
                           live_rusage_minflt=ru, baseline_rusage_minflt=base_ru,
                           predicted_folios=st.folio_histogram())
        if log is not None:
            print(f"  {spec}: predicted anon {v.predicted_anon} live {v.live_anon} "
                  f"(error {v.anon_error:+d}); total predicted {v.predicted_total} live "
                  f"{v.live_total} ({v.total_error:+d})", file=log)
        out.append(v)
    return out
