"""Counters of an address space (``struct laf_stats``), with the kernel's names.

:class:`Stats` declares every counter of ``struct laf_stats`` (csrc/laf.h) as
a typed field; ``tests/test_stats_drift.py`` fails when the C struct gains a
counter without a field here (or the other way round).  Per-order counters
become ``{size: value}`` dicts keyed like the sysfs directories (``"64K"``);
the raw arrays (index = folio order) are in ``per_order``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from pylaf._ffi import ffi
from pylaf.sizes import format_size


@dataclass(frozen=True, kw_only=True, repr=False)
class Stats:
    """One snapshot of ``struct laf_stats``."""

    page_size: int
    pmd_order: int

    # hugepages-<N>kB/stats/ (and the emulator's folios_mapped histogram)
    anon_fault_alloc: dict[str, int]
    anon_fault_fallback: dict[str, int]
    anon_fault_fallback_charge: dict[str, int]
    anon_fault_declined: dict[str, int]
    split: dict[str, int]
    split_deferred: dict[str, int]
    nr_anon: dict[str, int]
    nr_anon_partially_mapped: dict[str, int]
    folios_mapped: dict[str, int]

    #: vmstat PGFAULT: every completed fault, errors included
    pgfault: int
    #: task min_flt (getrusage ru_minflt): successful faults
    min_flt: int
    thp_fault_alloc: int
    thp_fault_fallback: int
    thp_fault_fallback_charge: int
    thp_zero_page_alloc: int
    thp_zero_page_alloc_failed: int
    thp_split_pmd: int
    thp_split_page: int
    thp_deferred_split_page: int
    #: vmstat PGREUSE: a write fault reused the page in place (mm/memory.c wp_page_reuse())
    pgreuse: int
    #: MM_ANONPAGES (RSS anon), in base pages
    mm_anonpages: int
    #: PTE tables, deposited ones included
    nr_ptes: int
    #: PMD tables
    nr_pmds: int
    nr_vmas: int
    ram_pages: int
    free_pages: int
    #: frames held by laf_phys_fragment()
    pinned_pages: int
    memcg_charged: int
    #: 0 = unlimited
    memcg_limit: int
    #: charges refused
    memcg_max_events: int
    lru_pages: int
    #: exception entries (perf page-faults)
    faults: int
    #: do_anonymous_page, read
    faults_read: int
    #: do_anonymous_page, write
    faults_write: int
    #: do_wp_page
    faults_wp: int
    #: wp_page_copy(): COW copies, the zero page included
    faults_wp_copy: int
    #: handled at PMD level (THP, huge zero, huge wp)
    faults_pmd: int
    #: returned without mapping (race/-EAGAIN): re-faulted
    faults_retried: int
    #: handed to userfaultfd
    faults_userfault: int
    faults_oom: int
    faults_sigsegv: int
    faults_sigbus: int
    #: accesses satisfied by a present entry
    hits: int
    set_ptes_calls: int
    ptes_written: int
    ptes_cleared: int
    per_page_ops: int
    per_folio_ops: int
    #: small zero-page PTEs installed
    zero_page_maps: int
    huge_zero_pmd_maps: int
    #: contpte blocks mapped with PTE_CONT
    contpte_blocks: int
    contpte_unfolds: int
    bytes_zeroed: int
    #: alloc_anon_folio attempts after a failed order
    alloc_retries: int
    #: resident anon pages the workload accessed
    pages_touched: int
    #: zero-page (small or huge) pages the workload read
    zero_pages_touched: int
    deferred_split_queue: int
    #: VmHWM: the exact maximum MM_ANONPAGES reached, in base pages
    hiwater_rss: int
    #: VmPTE (mm_pgtables_bytes()): PTE tables + PMD tables, one page each
    pgtables_bytes: int

    #: raw per-order arrays of the per-size counters (index = folio order)
    per_order: dict[str, np.ndarray]

    def by_order(self, name: str) -> np.ndarray:
        """The raw per-order array of a counter (index = folio order)."""
        return self.per_order[name]

    @property
    def rss_bytes(self) -> int:
        return self.mm_anonpages * self.page_size

    @property
    def peak_rss_bytes(self) -> int:
        """VmHWM in bytes: the largest RSS the address space reached."""
        return self.hiwater_rss * self.page_size

    @property
    def bloat_pages(self) -> int:
        """Resident anon pages the workload never accessed."""
        return self.mm_anonpages - self.pages_touched

    @property
    def bloat_ratio(self) -> float:
        t = self.pages_touched
        return (self.mm_anonpages / t) if t else 0.0

    def folio_histogram(self) -> dict[str, int]:
        """Folios mapped by faults, by size (order 0 included)."""
        arr = self.per_order["folios_mapped"]
        return {format_size(self.page_size << o): int(v) for o, v in enumerate(arr) if v}

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "per_order"}

    def __sub__(self, other: Stats) -> dict[str, Any]:
        """Event deltas (self - other) for scalar and per-size counters."""
        out: dict[str, Any] = {}
        for n in SCALAR_FIELDS:
            out[n] = getattr(self, n) - getattr(other, n)
        for n in PER_ORDER_FIELDS:
            a, b = getattr(self, n), getattr(other, n)
            out[n] = {k: a.get(k, 0) - b.get(k, 0) for k in set(a) | set(b) if a.get(k, 0) != b.get(k, 0)}
        return out

    def __repr__(self) -> str:
        nz = {n: getattr(self, n) for n in SCALAR_FIELDS if getattr(self, n)}
        po = {n: {k: v for k, v in getattr(self, n).items() if v} for n in PER_ORDER_FIELDS}
        return f"Stats({nz}, { {n: v for n, v in po.items() if v} })"


_MACHINE_FIELDS = ("page_size", "pmd_order", "per_order")
#: per-size counters (``dict[str, int]`` fields), in struct order
PER_ORDER_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(Stats) if f.name not in _MACHINE_FIELDS and f.type != "int")
#: scalar counters, in struct order
SCALAR_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(Stats) if f.name not in _MACHINE_FIELDS and f.type == "int")


def stats_from_c(cst: Any, page_size: int, pmd_order: int) -> Stats:
    """Copy a ``struct laf_stats *`` (cffi) into a :class:`Stats`."""
    per_order: dict[str, np.ndarray] = {}
    kw: dict[str, Any] = {"page_size": page_size, "pmd_order": pmd_order}
    for n in PER_ORDER_FIELDS:
        src = getattr(cst, n)
        arr = np.frombuffer(ffi.buffer(src), dtype=np.int64 if ffi.typeof(src).item.cname == "int64_t"
                            else np.uint64).astype(np.int64)
        per_order[n] = arr
        lo = 0 if n == "folios_mapped" else 2
        kw[n] = {format_size(page_size << o): int(arr[o]) for o in range(lo, pmd_order + 1)}
    for n in SCALAR_FIELDS:
        kw[n] = int(getattr(cst, n))
    kw["per_order"] = per_order
    return Stats(**kw)


__all__ = ["PER_ORDER_FIELDS", "SCALAR_FIELDS", "Stats", "stats_from_c"]
