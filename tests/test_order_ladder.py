"""The LAF v3 order ladder (the 2023 LAF v3 patch, as csrc/policy.c describes it):

    anon_folio_order() = max(arch_wants_pte_order(), PAGE_ALLOC_COSTLY_ORDER)
    capped at ANON_FOLIO_MAX_ORDER_UNHINTED = ilog2(max(64K, PAGE_SIZE)) -
    PAGE_SHIFT when the VMA is not THP-eligible (hugepage_vma_check with
    sysfs enforced); ladder {prefer, prefer > COSTLY ? COSTLY : 0, 0}.

arch_wants_pte_order(): -1 on generic (so order 3 = COSTLY), the contpte
order on arm64 (4 with 4K pages = 64K, 7 with 16K pages = 2M, 5 with 64K
pages = 2M).  The cap is order 4 (64K) with 4K pages, order 2 (64K) with
16K pages and order 0 with 64K pages (max(64K, PAGE_SIZE) == PAGE_SIZE).
"""
from __future__ import annotations

import pytest
from conftest import K, M, place

from pylaf import Policy

UNHINTED = Policy(kind="laf-v3", enabled="never")   # never THP-eligible: capped
ELIGIBLE = Policy(kind="laf-v3", enabled="always")  # eligible: uncapped (and PMD path)


def write_order(mm, addr: int) -> int:
    r = mm.fault(addr, write=True)
    assert r.order >= 0
    return r.order


@pytest.mark.parametrize("arch,page_size,ram,arch_order,cont_order", [
    ("x86_64", "4K", "64M", -1, 0),
    ("arm64", "4K", "64M", 4, 4),
    ("x86_64", "16K", "256M", -1, 0),
    ("arm64", "16K", "256M", 7, 7),
    ("x86_64", "64K", "2G", -1, 0),
    ("arm64", "64K", "2G", 5, 5),
])
def test_geometry_arch_orders(mm_factory, arch, page_size, ram, arch_order, cont_order) -> None:
    mm = mm_factory(UNHINTED, arch=arch, page_size=page_size, ram=ram)
    assert mm.arch_pte_order == arch_order
    assert mm.cont_pte_order == cont_order


# (arch, page size, ram, eligible?) -> the preferred order of the ladder
@pytest.mark.parametrize("arch,page_size,ram,eligible,prefer", [
    ("x86_64", "4K", "64M", False, 3),    # max(-1, 3) = 3 (32K) <= cap 4
    ("x86_64", "4K", "64M", True, 3),
    ("arm64", "4K", "64M", False, 4),     # max(4, 3) = 4 (64K) == cap
    ("arm64", "4K", "64M", True, 4),
    ("x86_64", "16K", "256M", False, 2),  # 3 capped to order 2 (64K)
    ("x86_64", "16K", "256M", True, 3),   # 128K
    ("arm64", "16K", "256M", False, 2),   # 7 capped to 2
    ("arm64", "16K", "256M", True, 7),    # 2M (contpte block)
    ("x86_64", "64K", "2G", False, 0),    # cap is order 0: S
    ("x86_64", "64K", "2G", True, 3),     # 512K
    ("arm64", "64K", "2G", False, 0),
    ("arm64", "64K", "2G", True, 5),      # 2M
])
def test_anon_folio_order(mm_factory, arch, page_size, ram, eligible, prefer) -> None:
    mm = mm_factory(ELIGIBLE if eligible else UNHINTED, arch=arch, page_size=page_size, ram=ram)
    # a VMA that cannot hold a PMD (so "eligible" does not take the PMD path)
    # but is big enough for every ladder size; aligned to the ladder's size
    size = mm.page_size << 8          # 1M, 4M, 16M: below the PMD size
    a = place(mm, size, align=size)
    assert write_order(mm, a + 3 * mm.page_size) == prefer
    assert mm.stats().thp_fault_alloc == 0


@pytest.mark.parametrize("arch,eligible,fails,want", [
    # generic 4K: ladder {3, 0}
    ("x86_64", False, [], 3),
    ("x86_64", False, [3], 0),
    # arm64 4K: ladder {4, 3, 0}; order 2 is never tried
    ("arm64", False, [], 4),
    ("arm64", False, [4], 3),
    ("arm64", False, [4, 3], 0),
])
def test_ladder_alloc_fallback(mm_factory, arch, eligible, fails, want) -> None:
    mm = mm_factory(ELIGIBLE if eligible else UNHINTED, arch=arch)
    a = place(mm, "1M")
    for o in fails:
        mm.inject_alloc_fail(o)
    assert write_order(mm, a) == want


@pytest.mark.parametrize("arch,vma_len,want", [
    ("arm64", "64K", 4),
    ("arm64", "32K", 3),    # 64K does not fit the VMA: COSTLY
    ("arm64", "48K", 3),
    ("arm64", "16K", 0),    # neither 64K nor 32K fits; the ladder has no order 2
    ("x86_64", "32K", 3),
    ("x86_64", "16K", 0),
    ("x86_64", "24K", 0),
])
def test_ladder_vma_fit(mm_factory, arch, vma_len, want) -> None:
    mm = mm_factory(UNHINTED, arch=arch)
    a = place(mm, vma_len, align="64K")
    assert write_order(mm, a) == want


def test_ladder_pte_range_none(mm_factory) -> None:
    """arm64: a zero-page PTE at +48K blocks the 64K range, not [0, 32K)."""
    mm = mm_factory(UNHINTED, arch="arm64")
    a = place(mm, "1M")
    mm.fault(a + 48 * K)                      # read: zero page
    # PTE 0..15: ............z...
    assert write_order(mm, a) == 3
    # PTE 0..15: pppppppp....z...  the other half: its 32K range holds the zero PTE
    assert write_order(mm, a + 32 * K) == 0


def test_ladder_on_16k_pages_hinted(mm_factory) -> None:
    """16K pages, sysfs madvise: the MADV_HUGEPAGE VMA is eligible and
    uncapped (order 3 = 128K); the plain one is capped at 64K (order 2)."""
    mm = mm_factory(Policy(kind="laf-v3", enabled="madvise"), page_size="16K", ram="256M")
    plain = place(mm, "4M", align="4M")
    hinted = place(mm, "4M", align="4M")
    mm.madvise(hinted, "4M", "hugepage")
    assert write_order(mm, plain) == 2
    assert write_order(mm, hinted) == 3
    mm.inject_alloc_fail(3)
    assert write_order(mm, hinted + 1 * M) == 0   # {3, 0}: no order 2 in the ladder


def test_laf_v3_never_uses_order_above_ladder_for_big_vmas(mm_factory) -> None:
    """sysfs never: no PMD path, whatever the VMA size or alignment."""
    mm = mm_factory(UNHINTED)
    a = place(mm, "8M")
    mm.madvise(a, "8M", "hugepage")
    for off in range(0, 8 * M, 2 * M):
        assert write_order(mm, a + off) == 3
    assert mm.stats().thp_fault_alloc == 0 and mm.stats().thp_fault_fallback == 0


def test_fixed_policy(mm_factory) -> None:
    """order-N: exactly N, then 0 (no intermediate orders)."""
    mm = mm_factory(Policy.fixed(4))
    a = place(mm, "1M")
    assert write_order(mm, a) == 4
    mm.inject_alloc_fail(4)
    assert write_order(mm, a + 64 * K) == 0
    b = place(mm, "32K", align="64K")
    assert write_order(mm, b) == 0              # 64K does not fit: straight to 0
    mm.set_policy(Policy.fixed(9))
    c = place(mm, "2M")
    assert write_order(mm, c) == 9
    mm.set_policy(Policy.fixed("16K"))
    d = place(mm, "64K", align="64K")
    assert write_order(mm, d + 20 * K) == 2
