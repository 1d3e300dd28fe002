"""Built-in workloads with several processes: ``fork-server`` and ``zygote``.

Both start in the address space they are given, fork children on the same
machine (:meth:`~pylaf.AddressSpace.fork`) and let every child exit before
they return.  They set ``whole_machine = True``: :func:`pylaf.experiments.run.run_one`
then counts them with ``mm.machine.stats()`` (faults, RSS, bloat and per-size
counters summed over every process that lived on the machine), not with the
parent's own ``mm.stats()``.

What fork does to large folios (docs/kernel-semantics.md, mm/memory.c):
``copy_present_ptes()`` shares every anonymous folio with the child and
write-protects it in both, so the first write to a shared page in either
process is a ``do_wp_page()`` fault; ``wp_page_copy()`` copies just that base
page into a new order-0 folio, whatever the order of the folio it leaves.
Writes after fork therefore fault once per page at every mTHP size, and a
large folio COWed in part stays allocated whole (partially mapped, queued for
deferred split once only one process still maps part of it).

The registry (:mod:`pylaf.experiments.workloads`) adds :data:`FORK_BUILTIN`
the first time it is consulted.

>>> from pylaf import open_address_space
>>> from pylaf.experiments.workloads import get_workload
>>> with open_address_space("order-4") as mm:
...     get_workload("zygote", scale=0.05).run(mm)
...     mm.machine.stats().faults > mm.stats().faults
True
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from pylaf.experiments.workloads import Workload, scaled_count, scaled_size

if TYPE_CHECKING:  # pragma: no cover
    from pylaf.address_space import AddressSpace

K = 1 << 10
M = 1 << 20


def _sample_pages(rng: np.random.Generator, first: int, npages: int, fraction: float) -> np.ndarray:
    """``round(npages * fraction)`` distinct page numbers of ``[first, first+npages)``, sorted."""
    k = min(npages, max(0, round(npages * fraction)))
    out: np.ndarray = np.sort(rng.choice(npages, size=k, replace=False)).astype(np.int64) + first
    return out


def _addrs(base: int, pages: np.ndarray, page_size: int) -> np.ndarray:
    out: np.ndarray = (pages * page_size).astype(np.uint64) + np.uint64(base)
    return out


def _check_fraction(name: str, value: float) -> None:
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{name}: invalid write_fraction {value!r}: must be in [0, 1]")


@dataclass(frozen=True)
class ForkServer(Workload):
    """A Redis ``BGSAVE``: the parent's written heap is snapshotted by a forked
    child that reads all of it, slice by slice, while the parent keeps
    writing a seeded random ``write_fraction`` of the heap (parent writes the
    pages of slice i, child reads slice i, ...); the child exits at the end."""

    name: ClassVar[str] = "fork-server"
    description: ClassVar[str] = ("a parent with a large written heap forks a snapshot child that "
                                  "reads all of it while the parent writes part of it (Redis "
                                  "BGSAVE); every process counted")
    whole_machine: ClassVar[bool] = True

    heap: int = 256 * M
    slice: int = 8 * M
    write_fraction: float = 0.25

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_fraction(self.name, self.write_fraction)

    def run(self, mm: AddressSpace) -> None:
        ps = mm.page_size
        heap = scaled_size(self.heap, self.scale, max(ps, 2 * M))
        step = min(heap, scaled_size(self.slice, self.scale, max(ps, 64 * K)))
        base = mm.mmap(heap)
        mm.touch_range(base, heap, write=True)
        writes = _sample_pages(self._rng(), 0, heap // ps, self.write_fraction)
        bounds = np.searchsorted(writes, np.arange(0, heap + step, step) // ps)
        child = mm.fork()
        try:
            for i, off in enumerate(range(0, heap, step)):
                mm.touch(_addrs(base, writes[bounds[i]:bounds[i + 1]], ps), write=True)
                child.touch_range(base + off, min(step, heap - off), write=False)
        finally:
            child.exit()


@dataclass(frozen=True)
class Zygote(Workload):
    """Android's zygote: a preloaded, written heap, then ``children`` forked
    children, all alive together; child i writes a seeded random
    ``write_fraction`` of part i of the preloaded heap (the parts do not
    overlap) and ``child_alloc`` bytes of its own new mapping; then every
    child exits."""

    name: ClassVar[str] = "zygote"
    description: ClassVar[str] = ("a preloaded heap, then many forked children, each writing its "
                                  "own part of it and a new mapping, then exiting (Android "
                                  "zygote); every process counted")
    whole_machine: ClassVar[bool] = True

    preload: int = 64 * M
    children: int = 16
    write_fraction: float = 0.5
    child_alloc: int = 4 * M

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_fraction(self.name, self.write_fraction)
        if self.children < 1:
            raise ValueError(f"{self.name}: invalid children {self.children!r}: must be >= 1")

    def run(self, mm: AddressSpace) -> None:
        ps = mm.page_size
        preload = scaled_size(self.preload, self.scale, max(ps, 2 * M))
        nchildren = min(scaled_count(self.children, self.scale), preload // ps)
        alloc = scaled_size(self.child_alloc, self.scale, ps)
        part = preload // ps // nchildren
        base = mm.mmap(preload)
        mm.touch_range(base, preload, write=True)
        rng = self._rng()
        kids: list[AddressSpace] = []
        try:
            for i in range(nchildren):
                child = mm.fork()
                kids.append(child)
                child.touch(_addrs(base, _sample_pages(rng, i * part, part, self.write_fraction), ps),
                            write=True)
                own = child.mmap(alloc)
                child.touch_range(own, alloc, write=True)
        finally:
            for child in kids:
                child.exit()


FORK_BUILTIN: tuple[type[Workload], ...] = (ForkServer, Zygote)

__all__ = ["FORK_BUILTIN", "ForkServer", "Zygote"]
