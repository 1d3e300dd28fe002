"""PTE tables: when they exist decides whether the PMD path can run.

* a read or write fault on the PTE path allocates the table (pte_alloc());
* MADV_DONTNEED frees an emptied PTE table when one zap call covers the
  whole 2M PMD range (CONFIG_PT_RECLAIM, mainline x86_64 >= 6.14; measured
  on this machine: docs/kernel-findings.md check 9 and its variants); a
  partial zap, or one split over several calls, keeps it;
* munmap frees the tables no remaining VMA can use (free_pgd_range).
"""
from __future__ import annotations

import pytest
from conftest import K, M, place, upstream

from pylaf import FaultKind


def filled_2m(mm, length: str = "2M", *, write: bool = True) -> int:
    """Check 9 setup: global madvise, NOHUGEPAGE, fill with 4K pages."""
    a = place(mm, length)
    mm.madvise(a, length, "nohugepage")
    mm.touch_range(a, length, write=write)
    mm.madvise(a, length, "hugepage")
    return a


def test_check9_dontneed_whole_pmd_frees_table_and_pmd_thp_works(mm_factory) -> None:
    mm = mm_factory(upstream())
    a = filled_2m(mm)
    s = mm.stats()
    assert s.nr_ptes == 1 and s.mm_anonpages == 512 and s.folios_mapped["4K"] == 512
    mm.madvise(a, "2M", "dontneed")
    s = mm.stats()
    assert s.nr_ptes == 0 and s.mm_anonpages == 0
    assert s.free_pages == s.ram_pages - 1           # only the zero page is in use
    r = mm.fault(a, write=True)
    assert (r.kind, r.order) == (FaultKind.PMD, 9)
    assert mm.stats().thp_fault_alloc == 1


@pytest.mark.parametrize("zaps,pmd_thp", [
    ([(0, 1 * M)], False),                        # half
    ([(0, 1 * M), (1 * M, 1 * M)], False),        # whole, but in two calls
    ([(4 * K, 2 * M)], False),                    # PMD 0 not covered from its start
    ([(0, 4 * M)], True),                         # both PMDs, one call
    ([(0, 2 * M)], True),
])
def test_check9_variants(mm_factory, zaps, pmd_thp) -> None:
    mm = mm_factory(upstream())
    a = filled_2m(mm, "4M")
    for off, length in zaps:
        mm.madvise(a + off, length, "dontneed")
    r = mm.fault(a, write=True)
    assert r.order == (9 if pmd_thp else 0)
    assert mm.stats().thp_fault_fallback == 0


def test_dontneed_of_zero_pte_table_frees_it(mm_factory) -> None:
    """Variant: 2M of zero-page PTEs (reads), then DONTNEED 2M → PMD THP."""
    mm = mm_factory(upstream())
    a = filled_2m(mm, write=False)
    assert mm.stats().zero_page_maps == 512
    mm.madvise(a, "2M", "dontneed")
    assert mm.stats().nr_ptes == 0
    assert mm.fault(a, write=True).order == 9


def test_dontneed_whole_pmd_with_64k_enabled_gets_pmd_not_64k(mm_factory) -> None:
    mm = mm_factory(upstream({"64K": "always"}))
    a = filled_2m(mm)
    mm.madvise(a, "2M", "dontneed")
    assert mm.fault(a, write=True).order == 9


def test_dontneed_partial_keeps_table_even_when_empty(mm_factory) -> None:
    mm = mm_factory(upstream())
    a = place(mm, "2M")
    mm.madvise(a, "2M", "nohugepage")
    mm.fault(a + 8 * K, write=True)                   # one page, one table
    mm.madvise(a, "1M", "dontneed")                   # empties the table, partial zap
    s = mm.stats()
    assert s.mm_anonpages == 0 and s.nr_ptes == 1
    mm.madvise(a, "2M", "hugepage")
    assert mm.fault(a + 1 * M, write=True).order == 0


def test_munmap_frees_tables_and_remap_gets_pmd_thp(mm_factory) -> None:
    mm = mm_factory(upstream())
    a = filled_2m(mm)
    mm.munmap(a, "2M")
    s = mm.stats()
    assert s.nr_ptes == 0 and s.mm_anonpages == 0 and s.nr_vmas == 0
    assert s.free_pages == s.ram_pages - 1 and s.memcg_charged == 0 and s.lru_pages == 0
    b = mm.mmap("2M", addr=a, fixed=True)
    assert b == a
    mm.madvise(b, "2M", "hugepage")
    assert mm.fault(b, write=True).order == 9


def test_munmap_keeps_table_shared_with_remaining_vma(mm_factory) -> None:
    """Two VMAs in one 2M PMD range (different prot: no merge).  Unmapping
    one keeps the table the other still uses; unmapping both frees it."""
    mm = mm_factory(upstream())
    a = place(mm, "1M")
    b = mm.mmap("1M", addr=a + 1 * M, fixed=True, prot="r")
    assert len(mm.vmas()) == 2
    mm.fault(a, write=True)
    mm.fault(b)
    assert mm.stats().nr_ptes == 1
    mm.munmap(a, "1M")
    assert mm.stats().nr_ptes == 1
    assert mm.pte(b).zero_page
    mm.munmap(b, "1M")
    assert mm.stats().nr_ptes == 0


def test_table_per_pmd_range(mm_factory) -> None:
    mm = mm_factory(upstream())
    a = place(mm, "8M")
    for i in range(4):
        mm.fault(a + i * 2 * M + 12 * K)
    assert mm.stats().nr_ptes == 4
    mm.munmap(a + 2 * M, "4M")            # the middle two PMD ranges
    assert mm.stats().nr_ptes == 2
    mm.munmap(a, "8M")
    assert mm.stats().nr_ptes == 0
