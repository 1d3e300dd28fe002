"""Built-in workloads that change mappings: ``jit-arena``, ``realloc-growth``, ``glibc-arena``.

Each drives :meth:`~pylaf.AddressSpace.mprotect` or :meth:`~pylaf.AddressSpace.mremap`
the way a real program does, with the writes that follow:

- ``jit-arena``: a JIT code cache.  Code is emitted into a ``PROT_NONE``
  reservation chunk by chunk: each chunk is opened ``rw``, written, then made
  ``rx``; now and then a few emitted pages are re-opened ``rw``, patched and
  made ``rx`` again.  Exclusive anonymous pages get their write bit back on
  ``mprotect(rw)`` (mm/mprotect.c ``can_change_pte_writable()``,
  docs/kernel-semantics.md §4.3), so a patch costs no fault; what the
  protection changes do cost is VMA edges: a fault chooses its folio order
  from the ``rw`` VMA as it is at that moment (§4.3 arena growth), so the
  chunk edges clamp the orders of the code pages.
- ``realloc-growth``: glibc ``realloc()`` of an mmapped block is
  ``mremap(MREMAP_MAYMOVE)`` (malloc.c ``mremap_chunk()``): a buffer grows by
  ~1.5x and its new tail is written; mappings placed right after the buffer
  block some growths, which then move (``move_page_tables()``: the folios
  keep their size and are not refaulted).
- ``glibc-arena``: a non-main malloc arena (malloc/arena.c): ``new_heap()``
  maps ``2 * HEAP_MAX_SIZE`` ``PROT_NONE``, trims it to one aligned
  ``HEAP_MAX_SIZE`` and opens the first ``ALIGN_UP(size + top_pad)`` bytes
  ``rw``; ``sysmalloc()`` then calls ``grow_heap(h, MINSIZE + nb - old_size)``,
  an ``mprotect(rw)`` of the page-rounded deficit (top_pad is not added
  there); at the end the newest objects are freed and ``heap_trim()`` ->
  ``shrink_heap()`` releases the top with ``MADV_DONTNEED`` (the ``PROT_NONE``
  remap is only used under strict overcommit, ``check_may_shrink_heap()``).

The registry (:mod:`pylaf.experiments.workloads`) adds :data:`MM_BUILTIN`
the first time it is consulted.

>>> from pylaf import open_address_space
>>> from pylaf.experiments.workloads import get_workload
>>> with open_address_space("order-4") as mm:
...     get_workload("jit-arena", scale=0.05).run(mm)
...     any(v.flags & v.flags.EXEC for v in mm.vmas())
True
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from pylaf.experiments.workloads import Workload, scaled_count, scaled_size

if TYPE_CHECKING:  # pragma: no cover
    from pylaf.address_space import AddressSpace

K = 1 << 10
M = 1 << 20

#: malloc/malloc.c MINSIZE on 64-bit (the smallest chunk)
MINSIZE = 32
#: malloc/malloc.c request2size(): header and 16-byte alignment
SIZE_SZ = 8
MALLOC_ALIGN = 16


def _align_up(n: int, a: int) -> int:
    return -(-n // a) * a


def _pages(base: int, first: np.ndarray, page_size: int) -> np.ndarray:
    out: np.ndarray = (first.astype(np.int64) * page_size).astype(np.uint64) + np.uint64(base)
    return out


def _is_free(mm: AddressSpace, addr: int, length: int) -> bool:
    """No VMA of ``mm`` meets ``[addr, addr + length)``, which lies below TASK_SIZE."""
    end = addr + length
    return end <= mm.task_size and all(v.end <= addr or v.start >= end for v in mm.vmas())


@dataclass(frozen=True)
class JitArena(Workload):
    """A JIT code cache in a ``code_reserve`` ``PROT_NONE`` reservation and a
    ``heap`` data mapping.  Each of ``rounds`` rounds emits a seeded random
    amount of code (mean ``code_per_round``) after the previous round's end:
    ``mprotect(rw)`` of the pages it covers (the last, partly filled page of
    the previous round included), write, ``mprotect(rx)``; then it reads
    ``exec_fraction`` of the emitted pages and writes ``heap_per_round`` bytes
    of random heap pages.  Every ``patch_every`` rounds, ``patches`` random
    emitted pages are opened ``rw`` one by one, written and made ``rx``."""

    name: ClassVar[str] = "jit-arena"
    description: ClassVar[str] = ("a JIT code cache: code chunks written rw then flipped to rx in a "
                                  "PROT_NONE reservation, emitted pages re-opened rw to patch, plus "
                                  "a data heap (mprotect)")

    code_reserve: int = 64 * M
    rounds: int = 160
    code_per_round: int = 192 * K
    exec_fraction: float = 0.05
    heap: int = 32 * M
    heap_per_round: int = 256 * K
    patch_every: int = 8
    patches: int = 4

    def run(self, mm: AddressSpace) -> None:
        ps = mm.page_size
        reserve = scaled_size(self.code_reserve, self.scale, max(ps, 2 * M))
        heap = scaled_size(self.heap, self.scale, max(ps, 2 * M))
        rounds = scaled_count(self.rounds, self.scale)
        rng = self._rng()
        # emitted bytes per round: uniform in [mean/4, 7*mean/4), the sum kept inside the reservation
        sizes = rng.integers(self.code_per_round // 4, self.code_per_round * 7 // 4, size=rounds)
        ends = np.minimum(np.cumsum(sizes), reserve)
        code = mm.mmap(reserve, prot="")
        data = mm.mmap(heap)
        heap_pages = max(1, min(heap // ps, self.heap_per_round // ps))
        start = 0
        for i, end in enumerate(int(e) for e in ends):
            if end > start:
                lo, hi = start // ps * ps, _align_up(end, ps)
                mm.mprotect(code + lo, hi - lo, "rw")
                mm.touch_range(code + lo, hi - lo, write=True)
                mm.mprotect(code + lo, hi - lo, "rx")
                start = end
            emitted = _align_up(start, ps) // ps
            nexec = round(emitted * self.exec_fraction)
            if nexec:
                mm.touch(_pages(code, rng.choice(emitted, size=nexec, replace=False), ps))
            mm.touch(_pages(data, rng.choice(heap // ps, size=heap_pages, replace=False), ps),
                     write=True)
            if self.patch_every > 0 and (i + 1) % self.patch_every == 0 and emitted:
                for page in np.sort(rng.choice(emitted, size=min(self.patches, emitted),
                                               replace=False)):
                    at = code + int(page) * ps
                    mm.mprotect(at, ps, "rw")
                    mm.fault(at, write=True)
                    mm.mprotect(at, ps, "rx")


@dataclass(frozen=True)
class ReallocGrowth(Workload):
    """A buffer that starts at ``initial`` bytes and is grown by ``growth``
    (page-rounded) up to ``final`` with ``mremap(MREMAP_MAYMOVE)``, its new
    tail written after each growth.  After a seeded random ``block_fraction``
    of the growths another ``neighbour``-byte mapping is placed right after
    the buffer's end (and written) if that room is free, so the next growth
    cannot extend in place and moves.  Mappings are placed top-down
    (``mm.mmap_base`` down), so a moved buffer lands just below another
    mapping and its later growths move too until it lands in a hole with
    room above (the hole its older copies left)."""

    name: ClassVar[str] = "realloc-growth"
    description: ClassVar[str] = ("a buffer grown ~1.5x at a time by mremap(MREMAP_MAYMOVE) with its "
                                  "new tail written (glibc realloc of a large block); neighbours "
                                  "block some growths, which move")

    initial: int = 128 * K
    final: int = 256 * M
    growth: float = 1.5
    block_fraction: float = 0.3
    neighbour: int = 256 * K

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.growth > 1.0):
            raise ValueError(f"{self.name}: invalid growth {self.growth!r}: must be > 1")
        if not (0.0 <= self.block_fraction <= 1.0):
            raise ValueError(f"{self.name}: invalid block_fraction {self.block_fraction!r}: "
                             "must be in [0, 1]")

    def sizes(self, page_size: int) -> list[int]:
        """The buffer's successive lengths at this page size, the first included."""
        first = _align_up(self.initial, page_size)
        final = max(first, scaled_size(self.final, self.scale, max(page_size, 2 * M)))
        out = [first]
        while out[-1] < final:
            out.append(min(final, _align_up(int(out[-1] * self.growth), page_size)))
        return out

    def run(self, mm: AddressSpace) -> None:
        ps = mm.page_size
        sizes = self.sizes(ps)
        neighbour = _align_up(self.neighbour, ps)
        blocks = self._rng().random(len(sizes)) < self.block_fraction
        addr = mm.mmap(sizes[0])
        mm.touch_range(addr, sizes[0], write=True)
        for (old, new), block in zip(pairwise(sizes), blocks[1:], strict=True):
            if block and _is_free(mm, addr + old, neighbour):
                other = mm.mmap(neighbour, addr=addr + old, fixed=True)
                mm.touch_range(other, neighbour, write=True)
            addr = mm.mremap(addr, old, new, may_move=True)
            mm.touch_range(addr + old, new - old, write=True)


@dataclass(frozen=True)
class GlibcArena(Workload):
    """A non-main glibc malloc arena: one ``heap_max`` heap (HEAP_MAX_SIZE,
    reserved ``PROT_NONE`` and aligned as ``new_heap()`` does) filled with
    ``objects`` seeded allocations (log-uniform in ``[min_object,
    max_object]``), each written when allocated; the heap grows by
    ``grow_heap()`` steps (``mprotect(rw)`` of the page-rounded deficit) and
    stops growing when full.  Then the newest ``free_fraction`` of the
    objects is freed and ``heap_trim()`` releases the top above ``top_pad``
    with ``MADV_DONTNEED``."""

    name: ClassVar[str] = "glibc-arena"
    description: ClassVar[str] = ("a non-main glibc malloc arena: a 64M PROT_NONE heap grown by "
                                  "mprotect(rw) of each allocation's page-rounded deficit, objects "
                                  "written, then the top trimmed by MADV_DONTNEED")

    heap_max: int = 64 * M
    objects: int = 12000
    min_object: int = 16
    max_object: int = 96 * K
    top_pad: int = 128 * K
    trim_threshold: int = 128 * K
    free_fraction: float = 0.25

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0 < self.min_object <= self.max_object):
            raise ValueError(f"{self.name}: invalid object sizes {self.min_object!r}.."
                             f"{self.max_object!r}")
        if not (0.0 <= self.free_fraction <= 1.0):
            raise ValueError(f"{self.name}: invalid free_fraction {self.free_fraction!r}: "
                             "must be in [0, 1]")

    def _reserve(self, mm: AddressSpace, heap_max: int) -> int:
        """new_heap(): map twice the size PROT_NONE, keep the aligned half."""
        p1 = mm.mmap(2 * heap_max, prot="")
        p2 = _align_up(p1, heap_max)
        if p2 > p1:
            mm.munmap(p1, p2 - p1)
        mm.munmap(p2 + heap_max, heap_max - (p2 - p1))
        return p2

    def run(self, mm: AddressSpace) -> None:
        ps = mm.page_size
        heap_max = scaled_size(self.heap_max, self.scale, max(ps, 2 * M))
        n = scaled_count(self.objects, self.scale)
        rng = self._rng()
        requests = np.exp(rng.uniform(np.log(self.min_object), np.log(self.max_object), size=n))
        # request2size(): chunk = request + header, 16-aligned, at least MINSIZE
        chunks = np.maximum(MINSIZE, (requests.astype(np.int64) + SIZE_SZ + MALLOC_ALIGN - 1)
                            // MALLOC_ALIGN * MALLOC_ALIGN)
        # heap_info and struct malloc_state (~2.2K on 64-bit) start the heap
        header = _align_up(64 + 2200, MALLOC_ALIGN)
        starts = header + np.concatenate(([0], np.cumsum(chunks)[:-1]))
        ends = starts + chunks
        fits = ends + MINSIZE <= heap_max
        starts, ends = starts[fits], ends[fits]
        heap = self._reserve(mm, heap_max)
        size = min(heap_max, _align_up(header + self.top_pad, ps))
        mm.mprotect(heap, size, "rw")
        # heap size after each allocation: grow_heap(MINSIZE + nb - old_top) rounds up to a page
        need = np.maximum.accumulate((ends + MINSIZE + ps - 1) // ps * ps)
        bounds = np.concatenate(([0], np.flatnonzero(np.diff(need)) + 1, [len(ends)]))
        mm.touch_range(heap, header, write=True)
        for lo, hi in pairwise(bounds):
            if need[lo] > size:
                mm.mprotect(heap + size, int(need[lo]) - size, "rw")
                size = int(need[lo])
            self._write(mm, heap, starts[lo:hi], ends[lo:hi], ps)
        kept = int(len(starts) * (1 - self.free_fraction))
        self._trim(mm, heap, size, int(starts[kept]) if kept < len(starts) else size)

    @staticmethod
    def _write(mm: AddressSpace, heap: int, starts: np.ndarray, ends: np.ndarray, ps: int) -> None:
        if len(starts) == 0:
            return
        first, last = int(starts[0]) // ps, (int(ends[-1]) - 1) // ps
        mm.touch(_pages(heap, np.arange(first, last + 1), ps), write=True)

    def _trim(self, mm: AddressSpace, heap: int, size: int, top: int) -> None:
        """heap_trim() + shrink_heap() after the objects from ``top`` on were freed."""
        top_size = size - top
        if top_size < self.trim_threshold:
            return
        extra = (top_size - MINSIZE - 1 - self.top_pad) // mm.page_size * mm.page_size
        if extra > 0:
            mm.madvise(heap + size - extra, extra, "MADV_DONTNEED")


MM_BUILTIN: tuple[type[Workload], ...] = (JitArena, ReallocGrowth, GlibcArena)

__all__ = ["MM_BUILTIN", "GlibcArena", "JitArena", "ReallocGrowth"]
