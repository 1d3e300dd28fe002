"""Base page sizes 4K / 16K / 64K: geometry (PMD = PAGE_SIZE * PAGE_SIZE/8:
2M / 32M / 512M), the anonymous mTHP sizes (orders 2..PMD_ORDER-1), the
per-size stats keys, and the fault path at each size."""
from __future__ import annotations

import pytest
from conftest import K, M, layout, place, upstream

from pylaf import Config, FaultKind, Policy
from pylaf.sizes import format_size

GEOM = [
    # page size, ram, pmd size, pmd order, ptrs per table
    ("4K", "64M", 2 * M, 9, 512),
    ("16K", "256M", 32 * M, 11, 2048),
    ("64K", "2G", 512 * M, 13, 8192),
]


@pytest.mark.parametrize("ps,ram,pmd,pmd_order,ptrs", GEOM)
def test_geometry(mm_factory, ps, ram, pmd, pmd_order, ptrs) -> None:
    mm = mm_factory(upstream(), page_size=ps, ram=ram)
    assert mm.pmd_size == pmd and mm.pmd_order == pmd_order and mm.ptrs_per_pte == ptrs
    assert mm.page_size << pmd_order == pmd


@pytest.mark.parametrize("ps,ram,pmd,pmd_order,ptrs", GEOM)
def test_stats_keys_per_page_size(mm_factory, ps, ram, pmd, pmd_order, ptrs) -> None:
    mm = mm_factory(upstream(), page_size=ps, ram=ram)
    s = mm.stats()
    page = mm.page_size
    anon = [format_size(page << o) for o in range(2, pmd_order + 1)]
    assert list(s.anon_fault_alloc) == anon
    assert list(s.anon_fault_fallback_charge) == anon and list(s.nr_anon) == anon
    assert list(s.folios_mapped) == [format_size(page << o) for o in range(0, pmd_order + 1)]
    assert anon[-1] == format_size(pmd)


@pytest.mark.parametrize("ps,ram,pmd,pmd_order,ptrs", GEOM)
def test_pmd_thp_and_zero_pmd(mm_factory, ps, ram, pmd, pmd_order, ptrs) -> None:
    mm = mm_factory(upstream(enabled="always"), page_size=ps, ram=ram)
    a = mm.mmap(2 * pmd)
    assert a % pmd == 0
    r = mm.fault(a + 3 * mm.page_size)
    assert r.kind == FaultKind.PMD_ZERO
    r = mm.fault(a + pmd + 3 * mm.page_size, write=True)
    assert (r.kind, r.order) == (FaultKind.PMD, pmd_order)
    s = mm.stats()
    assert s.anon_fault_alloc[format_size(pmd)] == 1 and s.mm_anonpages == ptrs
    assert s.thp_zero_page_alloc == 1 and s.nr_ptes == 2
    # write to the huge zero PMD: a THP
    r = mm.fault(a, write=True)
    assert (r.kind, r.order) == (FaultKind.PMD_WP, pmd_order)
    mm.munmap(a, 2 * pmd)
    assert mm.stats().mm_anonpages == 0 and mm.stats().nr_ptes == 0


@pytest.mark.parametrize("ps,ram,size,order", [
    ("16K", "256M", "64K", 2),
    ("16K", "256M", "2M", 7),
    ("64K", "2G", "256K", 2),
    ("64K", "2G", "2M", 5),
])
def test_mthp_sizes_at_larger_pages(mm_factory, ps, ram, size, order) -> None:
    mm = mm_factory(upstream({size: "always"}), page_size=ps, ram=ram)
    a = place(mm, "8M", align="8M")
    addr = a + 5 * mm.page_size
    r = mm.fault(addr, write=True)
    assert r.order == order
    s = mm.stats()
    assert s.anon_fault_alloc[size] == 1 and s.mm_anonpages == 1 << order
    f = mm.folio(addr)
    folio_bytes = mm.page_size << order
    assert f is not None and f.index * mm.page_size == addr // folio_bytes * folio_bytes


def test_16k_pages_fill_and_edges(mm_factory) -> None:
    """16K pages, 64K (order 2) always: a 1M VMA 16K past a 64K boundary."""
    mm = mm_factory(upstream({"64K": "always"}), page_size="16K", ram="256M")
    a = place(mm, "1M", align="64K", misalign="16K")
    t = mm.touch_range(a, "1M", write=True)
    assert layout(mm, a, "1M") == "0+48K:16K 48K+960K:64K 1008K+16K:16K"
    assert t.faulted == 3 + 15 + 1
    assert mm.stats().anon_fault_alloc["64K"] == 15


def test_64k_pages_zero_page_and_cow(mm_factory) -> None:
    mm = mm_factory(upstream({"256K": "always"}), page_size="64K", ram="2G")
    a = place(mm, "1M", align="1M")
    mm.fault(a)
    assert layout(mm, a, "256K") == "0+64K:zero 64K+192K:none"
    assert mm.fault(a, write=True).order == 0
    assert mm.fault(a + 256 * K, write=True).order == 2
    s = mm.stats()
    assert s.faults_wp == 1 and s.mm_anonpages == 1 + 4


def test_thp_anon_and_sizes_at_16k(mm_factory) -> None:
    pol = Policy.upstream(thp_anon="64K-256K:always")
    assert pol.per_size_states(16384)[11] == "never"      # thp_anon given: PMD never
    mm = mm_factory(pol, page_size="16K", ram="256M")
    a = mm.mmap(32 * M)
    assert a % (32 * M) == 0
    assert mm.fault(a, write=True).order == 4              # 256K
    assert mm.stats().thp_fault_alloc == 0


def test_ram_must_hold_two_pmds() -> None:
    with pytest.raises(ValueError):
        Config(page_size="64K", ram="512M")
    Config(page_size="64K", ram="1G")
    with pytest.raises(ValueError):
        Config(page_size="8K")
