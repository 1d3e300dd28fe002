"""The ``.laftrace`` file format: event codes, the :class:`Trace` value, and
reading and writing files.

Layout (little-endian)::

    0   8  magic  b"\\x89PYLAFTR"
    8   2  version (1)
    10  2  flags (0)
    12  4  header length H
    16  4  CRC-32 of the header
    20  4  reserved (0)
    24  H  header: UTF-8 JSON (metadata, processes, array directory)
    ..     arrays: zlib-compressed, each with its offset, length, raw length,
           dtype, shape and CRC-32 (of the compressed bytes) in the header

A trace file is untrusted input.  :func:`read_trace` reads a stream only as
far as the prefix and the header say (never more than :class:`Limits`
allow, so ``/dev/zero`` or an endless FIFO stops at the limit), checks the
header against :data:`HEADER_SCHEMA` (types, ranges; nesting depth first) before using any field, checks each array's ``raw_len`` against the
limit and inflates it incrementally with a cap (``zlib.decompressobj`` with
``max_length``), and checks every event field.  Every problem is a
:class:`TraceFormatError` naming the file and the byte position (and, for a
bad event, its index).
"""
from __future__ import annotations

__all__ = [
    "ANON_CLASSES",
    "CLASS_NAMES",
    "C_ANON",
    "C_BAD",
    "C_BSS",
    "C_FILE",
    "C_HEAP",
    "C_SHARED",
    "C_SPECIAL",
    "C_STACK",
    "DEFAULT_LIMITS",
    "EVENT_DTYPE",
    "F_INSTR",
    "F_KERNEL",
    "F_PRESENT",
    "F_WRITE",
    "HEADER_SCHEMA",
    "MADV",
    "MAGIC",
    "MAX_MOVE_BYTES",
    "M_MOVED",
    "M_NOMERGE",
    "OP_FAULT",
    "OP_MADVISE",
    "OP_MAP",
    "OP_MAP_OTHER",
    "OP_MOVE",
    "OP_NAMES",
    "OP_POPULATE",
    "OP_PROTECT",
    "OP_UNMAP",
    "PAGE",
    "PAGE_SHIFT",
    "PREFIX",
    "PROT_EXEC",
    "PROT_READ",
    "PROT_WRITE",
    "P_ZERO",
    "USER_TOP",
    "VERSION",
    "Limits",
    "Trace",
    "TraceError",
    "TraceFormatError",
    "check_events",
    "load_trace",
    "page_runs",
    "parse_trace_bytes",
    "read_trace",
    "save_trace",
]

import contextlib
import io
import json
import os
import struct
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Optional, Union

import numpy as np

from pylaf._ffi import lib
from pylaf.trace.schema import (
    Checker,
    HeaderSchemaError,
    boolean,
    choice,
    integer,
    json_depth,
    list_of,
    mapping_of,
    optional,
    record,
    text,
    tuple_of,
)

MAGIC = b"\x89PYLAFTR"
VERSION = 1
PREFIX = struct.Struct("<8sHHIII")        # magic, version, flags, hlen, hcrc, reserved
#: traces are recorded on x86_64 with 4K base pages
PAGE_SHIFT: int = lib.LAF_PAGE_SHIFT_4K
PAGE = 1 << PAGE_SHIFT
#: longest mremap move replay carries pages over for (it reads the old range's
#: PTEs: 64 GiB is 16 M pages, well under a second)
MAX_MOVE_BYTES = 1 << 36
#: the recorder's user/kernel split (x86_64 4-level paging, TASK_SIZE_MAX rounded up)
USER_TOP = 1 << 47

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
P_ZERO = 1         # OP_POPULATE: zero-page PTEs

#: flag bits each op may carry
_OP_FLAGS = {OP_FAULT: F_WRITE | F_KERNEL | F_PRESENT | F_INSTR, OP_MAP: M_MOVED | M_NOMERGE,
             OP_MAP_OTHER: M_MOVED | M_NOMERGE, OP_POPULATE: P_ZERO}

# region classes (the VMA a fault or mapping belongs to)
C_HEAP, C_STACK, C_BSS, C_ANON, C_FILE, C_SHARED, C_SPECIAL, C_BAD = range(8)
CLASS_NAMES = ("heap", "stack", "bss", "anon-mmap", "file", "shared", "special", "no-vma")
ANON_CLASSES = (C_HEAP, C_STACK, C_BSS, C_ANON)

EVENT_DTYPE = np.dtype([("t", "<u8"), ("mm", "<u4"), ("op", "u1"), ("cls", "u1"),
                        ("flags", "<u2"), ("addr", "<u8"), ("len", "<u8"), ("arg", "<u8")])

PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
#: madvise() advice numbers (include/uapi/asm-generic/mman-common.h); OP_MADVISE's arg
MADV = {"dontneed": 4, "free": 8, "remove": 9, "hugepage": 14, "nohugepage": 15,
        "dontneed_locked": 24, "collapse": 25, "populate_read": 22, "populate_write": 23}

_U32, _U64 = (1 << 32) - 1, (1 << 64) - 1
_COUNTS = mapping_of(integer(0, _U64))
#: ``[start, end, prot, cls, name]`` of an initial VMA
_VMA = tuple_of(integer(0, USER_TOP), integer(0, USER_TOP), integer(0, 7),
                integer(0, len(CLASS_NAMES) - 1), text())
_PROCESS = record({
    "mm": integer(0, _U32), "pid": integer(-1, _U32), "comm": text(), "exe": text(),
    "start": choice("exec", "fork", "vfork"), "parent": optional(integer(0, _U32)),
    "t": integer(0, _U64), "vmas": list_of(_VMA), "faults": integer(0, _U64),
    "anon_faults": integer(0, _U64), "no_layout": boolean(), "forked": boolean(),
    "exit": integer(0, _U64)}, required=frozenset({"mm"}))
_ARRAY = record({
    "name": choice("events"), "dtype": list_of(tuple_of(text(16), text(16)), 1, 16),
    "shape": list_of(integer(0, _U64), 1, 1), "raw_len": integer(0, _U64),
    "len": integer(0, _U64), "crc32": integer(0, _U32), "offset": integer(0, _U64),
}, required=frozenset({"name", "dtype", "shape", "raw_len", "len", "crc32", "offset"}))
#: what the reader accepts in a header (unknown keys are kept, never used)
HEADER_SCHEMA: Checker = record({
    "format": choice("pylaf-trace"), "file_size": integer(0, _U64),
    "arrays": list_of(_ARRAY, 1, 1), "processes": list_of(_PROCESS),
    "name": text(), "description": text(), "command": list_of(text()), "cwd": text(),
    "kernel": text(), "machine": text(), "recorded": text(), "recorder": text(), "perf": text(),
    "no_aslr": boolean(), "page_size": choice(PAGE), "exit_status": optional(integer(-_U32, _U32)),
    "skipped": _COUNTS, "fault_counts": _COUNTS, "thp_settings": mapping_of(text()),
    "tracepoints": list_of(text()),
}, required=frozenset({"format", "file_size", "arrays"}))


class TraceError(Exception):
    """Recording or replaying a trace failed."""


class TraceFormatError(TraceError, ValueError):
    """A trace file is truncated, corrupted, not a pylaf trace, or holds a
    field out of range (``index``: the bad event's index, if one is)."""

    def __init__(self, path: Union[str, Path], pos: int, msg: str,
                 index: Optional[int] = None) -> None:
        super().__init__(f"{path}: byte {pos}: {msg}")
        self.path = str(path)
        self.pos = pos
        self.index = index


@dataclass(frozen=True)
class Limits:
    """How much of an untrusted trace the reader accepts."""

    max_file_bytes: int = 256 << 20
    max_header_bytes: int = 16 << 20
    #: inflated size of one array (events are 40 bytes: 6.7 M events)
    max_raw_bytes: int = 256 << 20
    max_header_depth: int = 8


DEFAULT_LIMITS = Limits()


# ============================================================== trace object


@dataclass
class Trace:
    """A recorded trace: metadata, processes and the event array.

    ``events`` is a numpy structured array (:data:`EVENT_DTYPE`) in time
    order; ``processes[i]`` describes mm ``i`` (``pid``, ``comm``, ``exe``,
    ``start`` = exec|fork|vfork, ``parent``, ``vmas`` = initial layout as
    ``[start, end, prot, cls, name]``, ``forked``: replay forks the parent at ``t``, ``exit``).
    """

    header: dict[str, Any]
    processes: list[dict[str, Any]]
    events: np.ndarray
    path: Optional[str] = None
    #: the op stream :func:`pylaf.trace.compile.compile_trace` made of this
    #: trace, with the ``events`` array it was made from (recompiled if that
    #: array is replaced); not part of the trace's value
    op_stream_cache: Optional[tuple[np.ndarray, Any]] = field(default=None, repr=False,
                                                              compare=False)

    @property
    def name(self) -> str:
        return str(self.header.get("name") or (Path(self.path).stem if self.path else "trace"))

    @property
    def description(self) -> str:
        return str(self.header.get("description") or " ".join(self.header.get("command", [])))

    def faults(self, classes: Optional[Iterable[int]] = None) -> np.ndarray:
        ev: np.ndarray = self.events[self.events["op"] == OP_FAULT]
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
        # an older recorder's "mprotect_approximated": OP_PROTECT is replayed natively now (issue 10)
        skipped = {k: v for k, v in self.header.get("skipped", {}).items() if k != "mprotect_approximated"}
        shown = [f"{k}={v}" for k, v in skipped.items() if v]
        return "\n".join(lines + (["  not replayed: " + ", ".join(shown)] if shown else []))


def page_runs(pages: Sequence[int]) -> Iterator[tuple[int, int]]:
    """Sorted page numbers -> (first, count) runs (the ranges of OP_POPULATE).

    >>> list(page_runs([1, 2, 3, 7, 9, 10]))
    [(1, 3), (7, 1), (9, 2)]
    """
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


# ================================================================== writing


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _encode_header(trace: Trace, blobs: list[bytes], directory: list[dict[str, Any]]) -> bytes:
    header = dict(trace.header)
    header["format"] = "pylaf-trace"
    header["processes"] = trace.processes
    # offsets depend on the header length, which depends on the offsets:
    # iterate until stable (it converges in two rounds)
    offset_base = 0
    hbytes = b""
    for _ in range(5):
        off = PREFIX.size + offset_base
        for d, b in zip(directory, blobs, strict=True):
            d["offset"] = off
            off += len(b)
        header["arrays"] = directory
        header["file_size"] = off
        hbytes = json.dumps(header, separators=(",", ":"), default=_json_default).encode()
        if len(hbytes) == offset_base:
            break
        offset_base = len(hbytes)
    return hbytes


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
    hbytes = _encode_header(trace, blobs, directory)
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


# ================================================================== reading


def load_trace(path: Union[str, Path], limits: Limits = DEFAULT_LIMITS) -> Trace:
    """Read a trace file; :class:`TraceFormatError` (file + byte position) if bad,
    :class:`TraceError` if it cannot be read at all."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return read_trace(f, path, limits)
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from None


def parse_trace_bytes(data: bytes, path: Union[str, Path] = "<bytes>",
                      limits: Limits = DEFAULT_LIMITS) -> Trace:
    """:func:`read_trace` of an in-memory file."""
    return read_trace(io.BytesIO(data), path, limits)


def _read_exact(f: BinaryIO, n: int) -> bytes:
    """Up to *n* bytes (fewer only at end of file)."""
    parts = []
    while n > 0:
        b = f.read(n)
        if not b:
            break
        parts.append(b)
        n -= len(b)
    return b"".join(parts)


def _check_prefix(data: bytes, path: Union[str, Path]) -> tuple[int, int]:
    """Magic, version and flags of the 24-byte prefix; returns (hlen, hcrc)."""
    n = len(data)
    if n == 0:
        raise TraceFormatError(path, 0, "empty file: not a pylaf trace")
    m = min(n, len(MAGIC))
    if data[:m] != MAGIC[:m]:
        where = next(i for i in range(m) if data[i] != MAGIC[i])
        raise TraceFormatError(path, where, f"not a pylaf trace (bad magic {data[:8]!r}, "
                                            f"expected {MAGIC!r})")
    if n < len(MAGIC):
        raise TraceFormatError(path, n, f"truncated: file ends after {n} bytes, inside the "
                                        f"{len(MAGIC)}-byte magic")
    if n < PREFIX.size:
        raise TraceFormatError(path, n, f"truncated: file ends after {n} bytes, inside the "
                                        f"{PREFIX.size}-byte prefix")
    _magic, version, flags, hlen, hcrc, _res = PREFIX.unpack_from(data, 0)
    if version != VERSION:
        raise TraceFormatError(path, 8, f"unsupported trace version {version} "
                                        f"(this pylaf reads version {VERSION})")
    if flags != 0:
        raise TraceFormatError(path, 10, f"unknown flags {flags:#x}")
    return int(hlen), int(hcrc)


def _check_layout(header: dict[str, Any], hend: int, limits: Limits) -> None:
    """What the schema cannot say: sizes against the limits, the array's
    place in the file and its dtype, process numbering, VMA ranges."""
    size = header["file_size"]
    if size > limits.max_file_bytes:
        raise HeaderSchemaError(f"file_size {size} exceeds the limit of {limits.max_file_bytes} bytes")
    if size < hend:
        raise HeaderSchemaError(f"file_size {size} ends inside the header (which ends at {hend})")
    d = header["arrays"][0]
    if [list(x) for x in d["dtype"]] != [list(x) for x in EVENT_DTYPE.descr]:
        raise HeaderSchemaError(f"arrays[0].dtype is {d['dtype']!r:.200}, expected {EVENT_DTYPE.descr}")
    if d["raw_len"] > limits.max_raw_bytes:
        raise HeaderSchemaError(f"arrays[0].raw_len {d['raw_len']} exceeds the limit of "
                                f"{limits.max_raw_bytes} bytes")
    if d["raw_len"] != d["shape"][0] * EVENT_DTYPE.itemsize:
        raise HeaderSchemaError(f"arrays[0].raw_len {d['raw_len']} does not match its shape "
                                f"{d['shape']} of {EVENT_DTYPE.itemsize}-byte events")
    if d["offset"] < hend or d["offset"] + d["len"] > size:
        raise HeaderSchemaError(f"array 'events' at bytes {d['offset']}..{d['offset'] + d['len'] - 1} "
                                f"lies outside the file's data (bytes {hend}..{size - 1})")
    procs = header.get("processes", [])
    for i, p in enumerate(procs):
        _check_process(i, p, len(procs))


def _check_process(i: int, p: dict[str, Any], nprocs: int) -> None:
    if p["mm"] != i:
        raise HeaderSchemaError(f"processes[{i}].mm is {p['mm']}, expected {i}")
    if p.get("parent") is not None and p["parent"] >= nprocs:
        raise HeaderSchemaError(f"processes[{i}].parent {p['parent']} is not a listed process")
    for j, (start, end, *_rest) in enumerate(p.get("vmas", [])):
        if start >= end or (start | end) & (PAGE - 1):
            raise HeaderSchemaError(f"processes[{i}].vmas[{j}]: [{start:#x}, {end:#x}) is not a "
                                    f"page-aligned, non-empty range")


def _read_header(f: BinaryIO, path: Union[str, Path], limits: Limits) -> tuple[dict[str, Any], int]:
    """The header, checked against :data:`HEADER_SCHEMA`, and where it ends."""
    hlen, hcrc = _check_prefix(_read_exact(f, PREFIX.size), path)
    if hlen > limits.max_header_bytes:
        raise TraceFormatError(path, 12, f"header length {hlen} exceeds the limit of "
                                         f"{limits.max_header_bytes} bytes")
    hbytes = _read_exact(f, hlen)
    hend = PREFIX.size + hlen
    if len(hbytes) < hlen:
        n = PREFIX.size + len(hbytes)
        raise TraceFormatError(path, n, f"truncated: the header needs bytes {PREFIX.size}.."
                                        f"{hend - 1} but the file ends after {n} bytes")
    if zlib.crc32(hbytes) != hcrc:
        raise TraceFormatError(path, PREFIX.size, f"header checksum mismatch (bytes "
                                                  f"{PREFIX.size}..{hend - 1} are corrupted)")
    try:
        text = hbytes.decode()
    except UnicodeDecodeError as exc:
        raise TraceFormatError(path, PREFIX.size + exc.start, f"corrupt header: {exc}") from None
    depth = json_depth(text)
    if depth > limits.max_header_depth:
        raise TraceFormatError(path, PREFIX.size, f"header nested {depth} deep (limit "
                                                  f"{limits.max_header_depth})")
    try:
        header = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceFormatError(path, PREFIX.size + exc.pos, f"corrupt header: {exc}") from None
    except ValueError as exc:       # e.g. an integer with too many digits
        raise TraceFormatError(path, PREFIX.size, f"corrupt header: {exc}") from None
    try:
        HEADER_SCHEMA(header, "")
        _check_layout(header, hend, limits)
    except HeaderSchemaError as exc:
        raise TraceFormatError(path, PREFIX.size, f"bad header: {exc}") from None
    return header, hend


def _inflate(blob: bytes, raw_len: int, path: Union[str, Path], off: int, name: str) -> bytes:
    """Decompress *blob*, never producing more than ``raw_len + 1`` bytes."""
    d = zlib.decompressobj()
    parts: list[bytes] = []
    produced = 0
    data = blob
    try:
        while produced <= raw_len:
            out = d.decompress(data, raw_len + 1 - produced)
            parts.append(out)
            produced += len(out)
            data = d.unconsumed_tail
            if d.eof or (not out and not data):
                break
    except zlib.error as exc:
        raise TraceFormatError(path, off, f"array {name!r}: {exc}") from None
    if produced > raw_len:
        raise TraceFormatError(path, off, f"array {name!r} inflates past its raw_len of "
                                          f"{raw_len} bytes")
    if not d.eof:
        raise TraceFormatError(path, off, f"array {name!r}: the compressed stream is incomplete")
    if d.unused_data:
        raise TraceFormatError(path, off, f"array {name!r}: {len(d.unused_data)} bytes after the "
                                          f"end of the compressed stream")
    raw = b"".join(parts)
    if len(raw) != raw_len:
        raise TraceFormatError(path, off, f"array {name!r}: {len(raw)} bytes, expected {raw_len}")
    return raw


def _read_events(body: bytes, hend: int, d: dict[str, Any], path: Union[str, Path]) -> np.ndarray:
    off, ln, name = d["offset"], d["len"], d["name"]
    blob = body[off - hend:off - hend + ln]
    if zlib.crc32(blob) != d["crc32"]:
        raise TraceFormatError(path, off, f"checksum mismatch in array {name!r} "
                                          f"(bytes {off}..{off + ln - 1} are corrupted)")
    raw = _inflate(blob, d["raw_len"], path, off, name)
    events: np.ndarray = np.frombuffer(raw, dtype=EVENT_DTYPE).copy()
    return events


def read_trace(f: BinaryIO, path: Union[str, Path] = "<stream>",
               limits: Limits = DEFAULT_LIMITS) -> Trace:
    """Read one trace from the binary stream *f*, reading no more than the
    header's ``file_size`` + 1 bytes (and never more than ``limits`` allow)."""
    header, hend = _read_header(f, path, limits)
    size = header["file_size"]
    body = _read_exact(f, size - hend + 1)
    n = hend + len(body)
    if n < size:
        raise TraceFormatError(path, n, f"truncated: expected {size} bytes, the file ends "
                                        f"after {n} bytes")
    if n > size:
        raise TraceFormatError(path, size, f"unexpected bytes after the end of the trace "
                                           f"(expected {size} bytes)")
    directory = header.pop("arrays")
    events = _read_events(body, hend, directory[0], path)
    processes = header.pop("processes", [])
    check_events(events, len(processes), path, directory[0]["offset"])
    return Trace(header=header, processes=processes, events=events, path=str(path))


def _event_problems(ev: np.ndarray, nprocs: int) -> Iterator[tuple[np.ndarray, str]]:
    """(mask of bad events, what is wrong) for each rule an event must keep."""
    op, addr, ln, arg, flags = ev["op"], ev["addr"], ev["len"], ev["arg"], ev["flags"]
    yield ~np.isin(op, list(OP_NAMES)), "unknown op code {op}"
    yield ev["cls"] >= len(CLASS_NAMES), "unknown region class {cls}"
    yield ev["mm"] >= nprocs, f"mm {{mm}} is not one of the {nprocs} listed processes"
    allowed = np.zeros(256, dtype=np.uint16)
    for code, bits in _OP_FLAGS.items():
        allowed[code] = bits
    yield (flags & ~allowed[op]) != 0, "flags {flags:#x} not valid for this op"
    yield addr >= USER_TOP, "address {addr:#x} is above the user address space"
    fault = op == OP_FAULT
    yield fault & (ln != 0), "a fault with length {len}"
    ranged = ~fault
    yield ranged & (((addr | ln) & (PAGE - 1)) != 0), "range {addr:#x}+{len:#x} is not page-aligned"
    room = np.uint64(USER_TOP) - np.minimum(addr, np.uint64(USER_TOP))
    yield ranged & ((ln == 0) | (ln > room)), "range {addr:#x}+{len:#x} leaves the user address space"
    protected = np.isin(op, (OP_MAP, OP_PROTECT, OP_MAP_OTHER))
    yield protected & (arg > PROT_READ | PROT_WRITE | PROT_EXEC), "protection {arg:#x} out of range"
    move = op == OP_MOVE
    yield move & (ln > MAX_MOVE_BYTES), f"a move of {{len:#x}} bytes (limit {MAX_MOVE_BYTES:#x})"
    to_room = np.uint64(USER_TOP) - np.minimum(arg, np.uint64(USER_TOP))
    yield move & (((arg & (PAGE - 1)) != 0) | (ln > to_room)), \
        "move target {arg:#x}+{len:#x} is not a page-aligned user range"


def check_events(ev: np.ndarray, nprocs: int, path: Union[str, Path] = "<trace>",
                 pos: int = 0) -> None:
    """Every field of every event in range, or :class:`TraceFormatError`
    naming the first bad event's index (*pos*: the array's byte offset)."""
    first: Optional[tuple[int, str]] = None
    for mask, what in _event_problems(ev, nprocs):
        bad = np.flatnonzero(mask)
        if len(bad) and (first is None or bad[0] < first[0]):
            first = (int(bad[0]), what)
    if first is not None:
        i, what = first
        e = ev[i]
        fields = {k: int(e[k]) for k in EVENT_DTYPE.names or ()}
        raise TraceFormatError(path, pos, f"event {i}: " + what.format(**fields), index=i)
