"""Built-in workloads: small, deterministic programs that drive an AddressSpace.

Each workload is a frozen dataclass whose fields are its parameters (with
defaults sized for ``pylaf compare``) plus ``scale`` (a factor applied to its
sizes and counts) and ``seed`` (for the ones that draw random numbers).
``run(mm)`` drives one :class:`~pylaf.AddressSpace`: those that are a fixed
address stream (seq-fill, random-sparse, stride-64k, read-then-write,
madvise-hugepage) as one op stream (:meth:`Workload.op_stream`, one C call;
``run_python`` is the same calls one by one, the reference), the others
through the batch API (never a Python loop per access).

The set is drawn from what mTHP users worry about, as the 2023 LAF series and
its reviews measured it: sequential fills (the best case), sparse random
writers and the 64K stride (bloat, up to 16x with 64K folios),
write-after-read (zero page then order-0 COW), a malloc-like heap with
``MADV_DONTNEED`` churn (partial unmaps, deferred split), mappings whose size
is not a multiple of 64K (VMA edges clamp the order), and a ``MADV_HUGEPAGE``
region (the PMD path).

Plug-ins: :func:`register_workload` adds a workload (a :class:`Workload`
subclass, an instance, or anything with ``name``, ``description`` and
``run(mm)``).  The recorded traces of :func:`pylaf.trace.bundled.bundled_workloads`
join the registry (and the default set) the first time it is consulted.

>>> from pylaf import open_address_space
>>> from pylaf.experiments.workloads import get_workload
>>> with open_address_space("order-4") as mm:
...     get_workload("stride-64k", scale=0.01).run(mm)
...     round(mm.stats().bloat_ratio)
16
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Optional, Protocol, Union

import numpy as np

from pylaf._ffi import lib
from pylaf.errors import error_for
from pylaf.experiments import streams
from pylaf.sizes import format_size, parse_size
from pylaf.trace.bundled import bundled_workloads

if TYPE_CHECKING:  # pragma: no cover
    from pylaf.address_space import AddressSpace

K = 1 << 10
M = 1 << 20


# --------------------------------------------------------------- helpers
def scaled_size(nbytes: int | str, scale: float, align: int, minimum: Optional[int] = None) -> int:
    """``nbytes * scale`` rounded to a multiple of ``align`` (at least ``minimum``)."""
    n = parse_size(nbytes) * scale
    out = round(n / align) * align
    return max(out, align if minimum is None else minimum)


def scaled_count(n: int, scale: float, minimum: int = 1) -> int:
    """``n * scale`` rounded (at least ``minimum``)."""
    return max(minimum, round(n * scale))


def _page_addrs(base: int, starts: np.ndarray, lengths: np.ndarray, page_size: int) -> np.ndarray:
    """One address per base page covered by each byte range ``[start, start+len)``
    (offsets relative to ``base``), concatenated in range order, as uint64."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    keep = lengths > 0
    starts, lengths = starts[keep], lengths[keep]
    if starts.size == 0:
        return np.empty(0, dtype=np.uint64)
    first = starts // page_size
    last = (starts + lengths - 1) // page_size
    counts = last - first + 1
    total = int(counts.sum())
    offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    pages = np.repeat(first, counts) + offsets
    # the first access of each range is at its real start address (an object
    # header), the others at page starts
    addrs = pages * page_size
    heads = np.cumsum(counts) - counts
    addrs[heads] = starts
    out: np.ndarray = addrs.astype(np.uint64) + np.uint64(base)
    return out


def _fmt_param(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) and value >= 4 * K and value % K == 0:
        return format_size(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(_fmt_param(v) for v in value)
    return str(value)


# ------------------------------------------------------------- the base
class WorkloadLike(Protocol):
    """What the registry and ``pylaf compare`` need from a workload."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    def run(self, mm: AddressSpace) -> None: ...


@dataclass(frozen=True)
class Workload:
    """Base of the built-in workloads.

    Subclasses set the class attributes ``name`` and ``description`` and add
    their parameters as dataclass fields with defaults.  ``scale`` multiplies
    every size and count (rounded to sensible units, never below one unit);
    ``seed`` seeds ``numpy.random.default_rng`` so every run is identical.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    scale: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (0 < self.scale < float("inf")):
            raise ValueError(f"{self.name}: invalid scale {self.scale!r}: "
                             "must be a positive number")

    def op_stream(self, page_size: int, pmd_size: int) -> Optional[np.ndarray]:
        """The workload as one op stream (:mod:`pylaf.opstream`) for these sizes, or None
        if it needs more of what the emulator returns than its one mapping's address."""
        return None

    def run(self, mm: AddressSpace) -> None:
        """Run on *mm*: the op stream when there is one, else :meth:`run_python`."""
        ops = self.op_stream(mm.page_size, mm.pmd_size)
        if ops is None:
            return self.run_python(mm)
        res = mm.run_ops(ops)
        if res.stopped:
            raise error_for(res.first_errno, f"{self.name}: op {res.first_error}")

    def run_python(self, mm: AddressSpace) -> None:
        """The reference: the workload's calls one by one."""
        raise NotImplementedError

    def scaled(self, scale: float) -> Workload:
        """The same workload with another scale factor."""
        return dataclasses.replace(self, scale=scale)

    def params(self) -> dict[str, Any]:
        """Parameters (fields) and their values, ``scale`` and ``seed`` included."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def describe_params(self) -> str:
        """``size=256M stride=64K`` (without scale and seed)."""
        return " ".join(f"{k}={_fmt_param(v)}" for k, v in self.params().items()
                        if k not in ("scale", "seed"))

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)


# ------------------------------------------------------ built-in workloads
@dataclass(frozen=True)
class SeqFill(Workload):
    """Sequential write of one large region: the best case for large folios."""

    name: ClassVar[str] = "seq-fill"
    description: ClassVar[str] = ("sequential write of one large mapping, every page "
                                  "(best case: faults drop as 1/folio pages)")

    size: int = 256 * M

    def op_stream(self, page_size: int, pmd_size: int) -> np.ndarray:
        n = scaled_size(self.size, self.scale, max(page_size, 2 * M))
        return streams.stream(streams.map_anon(n), streams.touch_run(0, n, page_size, True))

    def run_python(self, mm: AddressSpace) -> None:
        n = scaled_size(self.size, self.scale, max(mm.page_size, 2 * M))
        a = mm.mmap(n)
        mm.touch_range(a, n, write=True)


@dataclass(frozen=True)
class RandomSparse(Workload):
    """Random writes over a big mapping, touching a small fraction of it."""

    name: ClassVar[str] = "random-sparse"
    description: ClassVar[str] = ("random writes over a big mapping touching ~density of its "
                                  "pages (bloat: every write may allocate a whole folio)")

    size: int = 1 << 30
    density: float = 0.01

    def _offsets(self, page_size: int) -> tuple[int, np.ndarray]:
        n = scaled_size(self.size, self.scale, max(page_size, 2 * M))
        nr = max(1, round(n // page_size * self.density))
        return n, self._rng().integers(0, n, size=nr, dtype=np.uint64)

    def op_stream(self, page_size: int, pmd_size: int) -> np.ndarray:
        n, offs = self._offsets(page_size)
        return streams.stream(streams.map_anon(n), streams.touch_each(offs, True))

    def run_python(self, mm: AddressSpace) -> None:
        n, offs = self._offsets(mm.page_size)
        a = mm.mmap(n)
        mm.touch(offs + np.uint64(a), write=True)


@dataclass(frozen=True)
class Stride64K(Workload):
    """One write every 64K: Ryan Roberts' worst case (16x memory with 64K folios)."""

    name: ClassVar[str] = "stride-64k"
    description: ClassVar[str] = ("one write every 64K of a large mapping: the bloat worst case "
                                  "(16x RSS with 64K or larger folios)")

    size: int = 256 * M
    stride: int = 64 * K

    def op_stream(self, page_size: int, pmd_size: int) -> np.ndarray:
        n = scaled_size(self.size, self.scale, max(page_size, 2 * M))
        return streams.stream(streams.map_anon(n),
                              streams.touch_run(0, n, max(self.stride, page_size), True))

    def run_python(self, mm: AddressSpace) -> None:
        n = scaled_size(self.size, self.scale, max(mm.page_size, 2 * M))
        a = mm.mmap(n)
        mm.touch_range(a, n, stride=max(self.stride, mm.page_size), write=True)


@dataclass(frozen=True)
class ReadThenWrite(Workload):
    """Read a region, then write it: zero-page PTEs, then write-protect faults."""

    name: ClassVar[str] = "read-then-write"
    description: ClassVar[str] = ("read a region (zero page) then write it (do_wp_page: "
                                  "order-0 COW of each zero page, huge zero PMD -> THP)")

    size: int = 64 * M

    def op_stream(self, page_size: int, pmd_size: int) -> np.ndarray:
        n = scaled_size(self.size, self.scale, max(page_size, 2 * M))
        return streams.stream(streams.map_anon(n), streams.touch_run(0, n, page_size, False),
                              streams.touch_run(0, n, page_size, True))

    def run_python(self, mm: AddressSpace) -> None:
        n = scaled_size(self.size, self.scale, max(mm.page_size, 2 * M))
        a = mm.mmap(n)
        mm.touch_range(a, n, write=False)
        mm.touch_range(a, n, write=True)


@dataclass(frozen=True)
class HeapChurn(Workload):
    """A malloc-like heap: arenas, object churn, MADV_DONTNEED purges, reuse.

    Every round, in every arena (one VMA each, like glibc's per-thread heaps):

    1. *free*: runs of neighbouring objects die together (run lengths are
       geometric with mean ``run_len``), until about ``free_fraction`` of the
       live objects are freed;
    2. *purge*: every free extent (freed neighbours coalesced) that now holds
       at least ``purge_min`` of whole pages is given back with
       ``MADV_DONTNEED``, as jemalloc/tcmalloc purge dirty pages and glibc's
       ``malloc_trim`` does (partial unmaps of large folios: deferred split);
    3. *allocate*: ``alloc_per_round`` bytes of new objects (log-normal sizes,
       16 bytes to 64K); ``reuse`` of them take freed slots first (size-class
       free lists: a purged slot re-faults), the rest extend the arena's
       top; every new object is written in full.

    Objects of ``mmap_threshold`` and more get their own mapping (odd sizes,
    ``large_per_round`` per round); about half of the live ones are unmapped
    each round.  The arenas are ``arena_size`` each, mapped up front.
    """

    name: ClassVar[str] = "heap-churn"
    description: ClassVar[str] = ("malloc-like heap: arenas with object alloc/free churn, "
                                  "MADV_DONTNEED purges and reuse, plus mmap'd large chunks")

    arenas: int = 4
    arena_size: int = 32 * M
    rounds: int = 8
    alloc_per_round: int = 3 * M
    free_fraction: float = 0.4
    run_len: int = 16
    reuse: float = 0.5
    purge_min: int = 64 * K
    mmap_threshold: int = 128 * K
    large_per_round: int = 2

    def run(self, mm: AddressSpace) -> None:
        rng = self._rng()
        ps = mm.page_size
        arena_size = scaled_size(self.arena_size, self.scale, max(ps, 64 * K))
        budget = scaled_size(self.alloc_per_round, self.scale, 4 * K)
        large_n = scaled_count(self.large_per_round, self.scale)
        purge_min = max(self.purge_min, ps)
        heaps = [_Arena(mm.mmap(arena_size), arena_size) for _ in range(self.arenas)]
        large: list[tuple[int, int]] = []
        for _ in range(self.rounds):
            for heap in heaps:
                newly = heap.free(rng, self.free_fraction, self.run_len)
                for start, length in heap.purge_extents(newly, ps, purge_min):
                    mm.madvise(start, length, "MADV_DONTNEED")
                addrs = heap.allocate(rng, budget, self.reuse, ps)
                if addrs.size:
                    mm.touch(addrs, write=True)
            # large chunks: unmap about half of the live ones, map new ones
            if large:
                dead = rng.random(len(large)) < 0.5
                for (addr, length), d in zip(large, dead, strict=True):
                    if d:
                        mm.munmap(addr, length)
                large = [c for c, d in zip(large, dead, strict=True) if not d]
            sizes = rng.integers(self.mmap_threshold // (4 * K), (4 * M) // (4 * K) + 1,
                                 size=large_n) * (4 * K) + 4 * K
            for nbytes in sizes.tolist():
                addr = mm.mmap(nbytes)
                mm.touch_range(addr, nbytes, write=True)
                large.append((addr, nbytes))


class _Arena:
    """Object bookkeeping of one HeapChurn arena (numpy arrays, no per-object loops)."""

    def __init__(self, base: int, size: int) -> None:
        self.base = base
        self.size = size
        self.top = 0                                   # bytes handed out so far
        self.start = np.empty(0, dtype=np.int64)       # object offsets, ascending
        self.length = np.empty(0, dtype=np.int64)
        self.live = np.empty(0, dtype=bool)

    def free(self, rng: np.random.Generator, fraction: float, run_len: int) -> np.ndarray:
        """Free runs of objects; returns the mask of objects freed now."""
        n = self.live.size
        nlive = int(self.live.sum())
        if n == 0 or nlive == 0 or fraction <= 0:
            return np.zeros(n, dtype=bool)
        nruns = max(1, round(nlive * fraction / max(run_len, 1)))
        starts = rng.integers(0, n, size=nruns)
        ends = np.minimum(starts + rng.geometric(1.0 / max(run_len, 1), size=nruns), n)
        diff = np.zeros(n + 1, dtype=np.int64)
        np.add.at(diff, starts, 1)
        np.add.at(diff, ends, -1)
        hit = np.cumsum(diff[:n]) > 0
        newly = hit & self.live
        self.live &= ~hit
        return newly

    def purge_extents(self, newly: np.ndarray, ps: int, purge_min: int) -> list[tuple[int, int]]:
        """Page-aligned interiors of coalesced free extents that contain an object
        freed now and are at least ``purge_min`` long: ``[(addr, length)]``."""
        if not newly.any():
            return []
        free = (~self.live).astype(np.int8)
        edges = np.diff(np.concatenate(([0], free, [0])))
        run_lo = np.flatnonzero(edges == 1)             # first free object of each extent
        run_hi = np.flatnonzero(edges == -1)            # one past its last
        csum = np.concatenate(([0], np.cumsum(newly)))
        has_new = (csum[run_hi] - csum[run_lo]) > 0
        lo = self.start[run_lo]
        hi = self.start[run_hi - 1] + self.length[run_hi - 1]
        lo_a = -(-lo // ps) * ps
        hi_a = (hi // ps) * ps
        ok = has_new & (hi_a - lo_a >= purge_min)
        return [(self.base + int(a), int(b - a)) for a, b in zip(lo_a[ok], hi_a[ok], strict=True)]

    def allocate(self, rng: np.random.Generator, budget: int, reuse: float, ps: int) -> np.ndarray:
        """Allocate about ``budget`` bytes; returns the addresses to write."""
        # reuse freed slots first (size-class free lists), in random order
        free_idx = np.flatnonzero(~self.live)
        reused = np.empty(0, dtype=np.int64)
        room = self.size - self.top
        want_reuse = budget * reuse if room >= budget * (1 - reuse) else budget - room
        if free_idx.size and want_reuse > 0:
            order = rng.permutation(free_idx)
            take = np.searchsorted(np.cumsum(self.length[order]), want_reuse) + 1
            reused = np.sort(order[:take])
            self.live[reused] = True
        new_bytes = min(room, budget - int(self.length[reused].sum()))
        if new_bytes > 0:
            # log-normal object sizes (median ~400 bytes), 16 bytes to 64K, 16-aligned
            est = max(8, int(new_bytes // 600) + 8)
            sizes = np.clip(rng.lognormal(6.0, 1.6, size=est), 16, 64 * K).astype(np.int64)
            sizes = (sizes + 15) & ~15
            cum = np.cumsum(sizes)
            k = int(np.searchsorted(cum, new_bytes, side="right"))
            sizes = sizes[:max(k, 1)]
            if int(sizes.sum()) > room:
                sizes = sizes[np.cumsum(sizes) <= room]
        else:
            sizes = np.empty(0, dtype=np.int64)
        idx = reused
        if sizes.size:
            starts = self.top + np.concatenate(([0], np.cumsum(sizes)[:-1]))
            self.top += int(sizes.sum())
            new_idx = np.arange(self.live.size, self.live.size + sizes.size)
            self.start = np.concatenate((self.start, starts.astype(np.int64)))
            self.length = np.concatenate((self.length, sizes))
            self.live = np.concatenate((self.live, np.ones(sizes.size, dtype=bool)))
            idx = np.concatenate((reused, new_idx))
        return _page_addrs(self.base, self.start[idx], self.length[idx], ps)


@dataclass(frozen=True)
class OddSizes(Workload):
    """Many mappings whose size is not a multiple of 64K, each written in full."""

    name: ClassVar[str] = "odd-sizes"
    description: ClassVar[str] = ("many mappings of sizes that are not multiples of 64K "
                                  "(100K, 200K, 1M+12K ...), each written in full: VMA edges "
                                  "clamp the folio order")

    count: int = 256
    sizes: tuple[int, ...] = (100 * K, 200 * K, M + 12 * K, 36 * K, 68 * K, 132 * K,
                              516 * K, 2 * M + 4 * K, 300 * K, 4 * M - 4 * K)
    guard: bool = True

    def run(self, mm: AddressSpace) -> None:
        n = scaled_count(self.count, self.scale)
        ps = mm.page_size
        lengths = self._rng().choice(np.asarray(self.sizes, dtype=np.int64), size=n)
        starts = np.empty(n, dtype=np.int64)
        for i, length in enumerate(lengths.tolist()):
            # a PROT_NONE guard page keeps the next mapping from merging with
            # this one (as thread stacks and guarded allocators do)
            if self.guard:
                mm.mmap(ps, prot="")
            starts[i] = mm.mmap(length)
        # one batch over every page of every mapping, in mapping order
        mm.touch(_page_addrs(0, starts, lengths, ps), write=True)


@dataclass(frozen=True)
class MadviseHugepage(Workload):
    """A PMD-multiple region madvised MADV_HUGEPAGE, then written in full."""

    name: ClassVar[str] = "madvise-hugepage"
    description: ClassVar[str] = ("a 2M-multiple (PMD-multiple) region madvised MADV_HUGEPAGE "
                                  "then written in full, like a JVM heap")

    size: int = 64 * M

    def op_stream(self, page_size: int, pmd_size: int) -> np.ndarray:
        n = scaled_size(self.size, self.scale, pmd_size)
        return streams.stream(streams.map_anon(n), streams.madvise(0, n, lib.LAF_MADV_HUGEPAGE),
                              streams.touch_run(0, n, page_size, True))

    def run_python(self, mm: AddressSpace) -> None:
        n = scaled_size(self.size, self.scale, mm.pmd_size)
        a = mm.mmap(n)
        mm.madvise(a, n, "MADV_HUGEPAGE")
        mm.touch_range(a, n, write=True)


BUILTIN: tuple[type[Workload], ...] = (SeqFill, RandomSparse, Stride64K, ReadThenWrite,
                                       HeapChurn, OddSizes, MadviseHugepage)


# ------------------------------------------------------------- registry
Factory = Callable[[float], WorkloadLike]
_REGISTRY: dict[str, tuple[Factory, WorkloadLike]] = {}
_DEFAULTS: list[str] = []
_plugins_loaded = False


def _factory_for(obj: Any) -> tuple[Factory, WorkloadLike]:
    if isinstance(obj, type):
        if not issubclass(obj, Workload):
            raise TypeError(f"{obj!r} is not a Workload subclass")
        cls: type[Workload] = obj
        return (lambda scale: cls(scale=scale)), cls()
    for attr in ("name", "description", "run"):
        if not hasattr(obj, attr):
            raise TypeError(f"{obj!r} is not a workload: it has no {attr!r}")
    if hasattr(obj, "scaled"):
        return (lambda scale: obj if scale == 1.0 else obj.scaled(scale)), obj
    return (lambda scale: obj), obj


def register_workload(workload: Union[type[Workload], WorkloadLike], *, default: bool = True,
                      replace: bool = False) -> None:
    """Add a workload to the registry.

    ``workload`` is a :class:`Workload` subclass, an instance of one, or any
    object with ``name``, ``description`` and ``run(mm)`` (a recorded trace,
    say); an object with a ``scaled(scale)`` method is scaled by
    ``--scale``, others run as they are.  ``default``: run it when
    ``pylaf compare`` is given no ``--workload``.  Registering a name twice
    raises ``ValueError`` unless ``replace=True``.
    """
    factory, proto = _factory_for(workload)
    name = str(proto.name)
    if not name:
        raise ValueError(f"workload {workload!r} has an empty name")
    if name in _REGISTRY and not replace:
        raise ValueError(f"workload {name!r} is already registered")
    _REGISTRY[name] = (factory, proto)
    if default and name not in _DEFAULTS:
        _DEFAULTS.append(name)
    if not default and name in _DEFAULTS:
        _DEFAULTS.remove(name)


def unregister_workload(name: str) -> None:
    """Remove a workload (KeyError if unknown)."""
    del _REGISTRY[name]
    if name in _DEFAULTS:
        _DEFAULTS.remove(name)


def _load_plugins() -> None:
    """Add the multi-process workloads of :mod:`pylaf.experiments.fork_workloads`,
    the mprotect/mremap ones of :mod:`pylaf.experiments.mm_workloads` and the
    recorded traces of :func:`pylaf.trace.bundled.bundled_workloads` once (the import goes experiments -> trace; pylaf.trace never imports
    pylaf.experiments)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    # function-local: fork_workloads and mm_workloads subclass Workload (a real import cycle)
    from pylaf.experiments.fork_workloads import FORK_BUILTIN
    from pylaf.experiments.mm_workloads import MM_BUILTIN
    for cls in FORK_BUILTIN + MM_BUILTIN:
        if cls.name not in _REGISTRY:
            register_workload(cls)
    for w in bundled_workloads():
        if w.name not in _REGISTRY:
            register_workload(w)


def available_workloads() -> list[str]:
    """Every registered workload name (built-ins first)."""
    _load_plugins()
    return list(_REGISTRY)


def default_workload_names() -> list[str]:
    """The names ``pylaf compare`` runs when given no ``--workload``."""
    _load_plugins()
    return list(_DEFAULTS)


def get_workload(name: str, scale: float = 1.0) -> WorkloadLike:
    """A workload by name, scaled by ``scale``."""
    _load_plugins()
    if not (scale > 0) or scale == float("inf"):
        raise ValueError(f"invalid scale {scale!r}: must be a positive number")
    try:
        factory, _ = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r} (available: "
                         f"{', '.join(_REGISTRY)})") from None
    return factory(scale)


def default_workloads(scale: float = 1.0) -> list[WorkloadLike]:
    """The default set, scaled."""
    return [get_workload(n, scale) for n in default_workload_names()]


def workload_info(name: str) -> dict[str, Any]:
    """``{"name", "description", "params", "params_text", "default"}`` of a
    registered workload, unscaled (``params`` holds raw values: sizes in bytes)."""
    _load_plugins()
    if name not in _REGISTRY:
        raise ValueError(f"unknown workload {name!r}")
    proto = _REGISTRY[name][1]
    params = proto.params() if isinstance(proto, Workload) else {}
    return {"name": name, "description": str(proto.description),
            "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
            "params_text": " ".join(f"{k}={_fmt_param(v)}" for k, v in params.items()
                                    if k != "scale"),
            "default": name in _DEFAULTS}


for _cls in BUILTIN:
    register_workload(_cls)
del _cls

__all__ = ["BUILTIN", "HeapChurn", "MadviseHugepage", "OddSizes", "RandomSparse", "ReadThenWrite",
           "SeqFill", "Stride64K", "Workload", "WorkloadLike", "available_workloads",
           "default_workload_names", "default_workloads", "get_workload", "register_workload",
           "scaled_count", "scaled_size", "unregister_workload", "workload_info"]
