"""This machine's non-mainline ``anon_beside_full`` knob
(docs/kernel-findings.md §1), emulated as Policy(anon_beside_full=True).

Rule: after the VMA-fit and pte_range_none filters, an mTHP order o (< PMD)
is used only if its same-size aligned left or right neighbour is "full":
inside the same VMA, inside the same PMD range, every PTE non-none (zero-page
PTEs count).  Otherwise anon_fault_declined[o]++ (once per order per fault)
and the next lower order is tried; no allocation, no anon_fault_fallback.
PMD faults and read faults are unaffected.

Every expected number below is the kernel's, from the experiments table
(E*, B*) of kernel-findings §1.3.
"""
from __future__ import annotations

import pytest
from conftest import K, M, all_mthp, layout, place, upstream

from pylaf import FaultKind, Policy

S64 = {"64K": "always"}
S16_64 = {"16K": "always", "64K": "always"}


def abf(mm_factory, sizes=S64, enabled="madvise", on=True):
    return mm_factory(upstream(sizes, enabled=enabled, anon_beside_full=on), ram="256M")


def nz(d):
    return {k: v for k, v in d.items() if v}


def fill(mm, a, length, *, write=True):
    mm.touch_range(a, length, write=write)


def test_first_seen_1m_fill(mm_factory) -> None:
    mm = abf(mm_factory)
    a = place(mm, "1M", align="64K")
    fill(mm, a, "1M")
    s = mm.stats()
    assert s.min_flt == 31
    assert nz(s.anon_fault_alloc) == {"64K": 15} and nz(s.anon_fault_declined) == {"64K": 1}
    assert layout(mm, a, "1M") == "0+64K:4K 64K+960K:64K"
    assert nz(s.anon_fault_fallback) == {}


def test_first_seen_with_0_is_mainline(mm_factory) -> None:
    mm = abf(mm_factory, on=False)
    a = place(mm, "1M", align="64K")
    fill(mm, a, "1M")
    s = mm.stats()
    assert s.min_flt == 16 and nz(s.anon_fault_alloc) == {"64K": 16}
    assert nz(s.anon_fault_declined) == {}


def test_16k_and_64k(mm_factory) -> None:
    mm = abf(mm_factory, S16_64)
    a = place(mm, "1M", align="64K")
    fill(mm, a, "1M")
    s = mm.stats()
    assert s.min_flt == 22
    assert nz(s.anon_fault_alloc) == {"16K": 3, "64K": 15}
    assert nz(s.anon_fault_declined) == {"16K": 1, "64K": 1}
    assert layout(mm, a, "1M") == "0+16K:4K 16K+48K:16K 64K+960K:64K"


def test_E1_descending_across_pmd_boundary(mm_factory) -> None:
    mm = abf(mm_factory)
    a = place(mm, "1M", misalign=2 * M - 256 * K)     # a + 256K is a 2M boundary
    for off in range(1 * M - 4 * K, -1, -4 * K):
        mm.fault(a + off, write=True)
    s = mm.stats()
    assert s.min_flt == 46
    assert nz(s.anon_fault_alloc) == {"64K": 14} and nz(s.anon_fault_declined) == {"64K": 2}
    assert layout(mm, a, "1M") == "0+192K:64K 192K+64K:4K 256K+704K:64K 960K+64K:4K"


def test_E2_isolated_write(mm_factory) -> None:
    mm = abf(mm_factory)
    a = place(mm, "1M", align="64K")
    r = mm.fault(a + 512 * K, write=True)
    assert r.order == 0
    s = mm.stats()
    assert s.min_flt == 1 and nz(s.anon_fault_declined) == {"64K": 1}
    assert nz(s.anon_fault_fallback) == {} and nz(s.anon_fault_alloc) == {}


@pytest.mark.parametrize("name,prefill,write,alloc,declined", [
    ("E3-left", (448, 64, True), 512, 1, 0),
    ("E4-right", (576, 64, True), 512, 1, 0),
    ("E5-15of16", (448, 60, True), 512, 0, 1),
    ("E6-zero-ptes", (448, 64, False), 512, 1, 0),
])
def test_E3_to_E6_neighbour_full(mm_factory, name, prefill, write, alloc, declined) -> None:
    mm = abf(mm_factory)
    a = place(mm, "1M", align="64K")
    off, length, w = prefill
    fill(mm, a + off * K, length * K, write=w)
    mm.reset_counters()
    mm.fault(a + write * K, write=True)
    s = mm.stats()
    assert s.anon_fault_alloc["64K"] == alloc and s.anon_fault_declined["64K"] == declined


def test_E7_neighbours_never_cross_a_pmd_boundary(mm_factory) -> None:
    mm = abf(mm_factory)
    a = place(mm, "4M")
    fill(mm, a + 2 * M - 64 * K, "64K")
    mm.reset_counters()
    assert mm.fault(a + 2 * M, write=True).order == 0
    assert mm.stats().anon_fault_declined["64K"] == 1


def test_E7b(mm_factory) -> None:
    mm = abf(mm_factory)
    a = place(mm, "4M")
    fill(mm, a + 2 * M, "64K")
    mm.reset_counters()
    assert mm.fault(a + 2 * M - 64 * K, write=True).order == 0      # across: declined
    assert mm.fault(a + 2 * M + 64 * K, write=True).order == 4      # same side
    s = mm.stats()
    assert (s.anon_fault_declined["64K"], s.anon_fault_alloc["64K"]) == (1, 1)


def test_E8_vma_of_one_block(mm_factory) -> None:
    mm = abf(mm_factory)
    a = place(mm, "64K", align="64K")
    fill(mm, a, "64K")
    s = mm.stats()
    assert s.min_flt == 16 and s.anon_fault_declined["64K"] == 1
    assert layout(mm, a, "64K") == "0+64K:4K"


def test_E9b_full_neighbour_in_other_vma_does_not_count(mm_factory) -> None:
    """The kernel split the VMA with MADV_DONTFORK; here MADV_HUGEPAGE on the
    first half splits it (64K=always ignores the hint, so only the bounds
    change).  E9c: without the split the same write gets 64K."""
    for split, alloc, declined in ((True, 0, 1), (False, 1, 0)):
        mm = mm_factory(upstream(S64, enabled="never", anon_beside_full=True))
        a = place(mm, "1M", align="64K")
        if split:
            mm.madvise(a, "512K", "hugepage")
            assert len(mm.vmas()) == 2
        fill(mm, a + 448 * K, "64K")
        mm.reset_counters()
        mm.fault(a + 512 * K, write=True)
        s = mm.stats()
        assert (s.anon_fault_alloc["64K"], s.anon_fault_declined["64K"]) == (alloc, declined)


def test_B2_misaligned_with_pmd_boundary(mm_factory) -> None:
    mm = abf(mm_factory)
    a = place(mm, "1M", misalign=2 * M - 248 * K)     # 8K past 64K; +248K is a 2M boundary
    fill(mm, a, "1M")
    s = mm.stats()
    assert s.min_flt == 61
    assert nz(s.anon_fault_alloc) == {"64K": 13} and nz(s.anon_fault_declined) == {"64K": 2}
    assert layout(mm, a, "1M") == \
        "0+120K:4K 120K+128K:64K 248K+64K:4K 312K+704K:64K 1016K+8K:4K"


def test_E11_each_order_tests_its_own_neighbours(mm_factory) -> None:
    mm = abf(mm_factory, S16_64)
    a = place(mm, "1M", align="64K")
    fill(mm, a + 496 * K, "16K")
    mm.reset_counters()
    assert mm.fault(a + 512 * K, write=True).order == 2
    s = mm.stats()
    assert nz(s.anon_fault_declined) == {"64K": 1} and nz(s.anon_fault_alloc) == {"16K": 1}


@pytest.mark.parametrize("on,declined,alloc", [(True, 3, 0), (False, 0, 3)])
def test_B4b(mm_factory, on, declined, alloc) -> None:
    mm = abf(mm_factory, S16_64, on=on)
    a = place(mm, "64K", align="64K")
    mm.fault(a)
    for off in (16, 32, 48):
        mm.fault(a + off * K, write=True)
    mm.fault(a + 4 * K, write=True)
    s = mm.stats()
    assert s.anon_fault_declined["16K"] == declined and s.anon_fault_alloc["16K"] == alloc
    assert s.anon_fault_declined["64K"] == 0          # range not empty: not counted


def test_E12_madv_hugepage_gives_no_exemption(mm_factory) -> None:
    mm = abf(mm_factory)
    a = place(mm, "1M", align="64K")
    mm.madvise(a, "1M", "hugepage")
    assert mm.fault(a + 512 * K, write=True).order == 0
    assert mm.stats().anon_fault_declined["64K"] == 1


def test_E13_pmd_order_unaffected(mm_factory) -> None:
    mm = abf(mm_factory)
    a = place(mm, "4M")
    mm.madvise(a, "4M", "hugepage")
    r = mm.fault(a + 512 * K, write=True)
    assert (r.kind, r.order) == (FaultKind.PMD, 9)
    s = mm.stats()
    assert s.thp_fault_alloc == 1 and s.anon_fault_alloc["2M"] == 1
    assert nz(s.anon_fault_declined) == {}
    assert layout(mm, a, "2M") == "0+2M:2M"


def test_reads_unaffected(mm_factory) -> None:
    mm = abf(mm_factory)
    a = place(mm, "1M", align="64K")
    fill(mm, a, "1M", write=False)
    s = mm.stats()
    assert nz(s.anon_fault_declined) == {} and s.zero_page_maps == 256


@pytest.mark.parametrize("on", [True, False])
def test_E15_all_sizes_sparse_and_ramp(mm_factory, on) -> None:
    mm = abf(mm_factory, all_mthp(pmd="never"), on=on)
    a = place(mm, "8M")
    for off in (0, 100 * K, 700 * K, 1500 * K, 2052 * K, 3000 * K, 4096 * K, 4100 * K,
                6000 * K, 8188 * K):
        mm.fault(a + off, write=True)
    if on:
        # isolated writes: order 0, one decline for every order that survived
        assert mm.stats().folios_mapped["4K"] == 10
    mm.reset_counters()
    fill(mm, a + 5 * M, "1M")
    s = mm.stats()
    if on:
        assert s.min_flt == 17
        # ramps 4K -> 16K -> 32K -> 64K -> 128K -> 256K
        assert nz(s.anon_fault_alloc) == {"16K": 2, "32K": 2, "64K": 2, "128K": 2, "256K": 2}
    else:
        # the write at 6000K already mapped the 1M folio [5M, 6M)
        assert s.min_flt == 0 and nz(s.anon_fault_alloc) == {}
    mm.reset_counters()
    fill(mm, a + 7 * M, "512K", write=False)
    if not on:
        assert mm.stats().min_flt == 0             # inside the 8188K write's 1M folio


def test_E15_declined_totals(mm_factory) -> None:
    mm = abf(mm_factory, all_mthp(pmd="never"))
    a = place(mm, "8M")
    for off in (0, 100 * K, 700 * K, 1500 * K, 2052 * K, 3000 * K, 4096 * K, 4100 * K,
                6000 * K, 8188 * K):
        mm.fault(a + off, write=True)
    fill(mm, a + 5 * M, "1M")
    fill(mm, a + 7 * M, "512K", write=False)
    assert nz(mm.stats().anon_fault_declined) == {
        "16K": 10, "32K": 10, "64K": 10, "128K": 9, "256K": 9, "512K": 9, "1M": 6}


def test_E15_with_0_six_1m_folios(mm_factory) -> None:
    mm = abf(mm_factory, all_mthp(pmd="never"), on=False)
    a = place(mm, "8M")
    t = 0
    for off in (0, 100 * K, 700 * K, 1500 * K, 2052 * K, 3000 * K, 4096 * K, 4100 * K,
                6000 * K, 8188 * K):
        t += mm.fault(a + off, write=True).nr_faults
    s = mm.stats()
    assert t == 6 and nz(s.anon_fault_alloc) == {"1M": 6}
    assert nz(s.anon_fault_declined) == {}


def test_declined_skips_allocation_entirely(mm_factory) -> None:
    """A decline is not an allocation attempt: an injected 64K allocation
    failure stays armed through declines and fires at the first fault that
    passes the gate."""
    mm = abf(mm_factory)
    a = place(mm, "1M", align="64K")
    mm.inject_alloc_fail(4)
    assert mm.fault(a + 512 * K, write=True).order == 0      # declined
    fill(mm, a + 128 * K, "64K")                             # declined once, then order 0
    s = mm.stats()
    assert s.anon_fault_declined["64K"] == 2 and s.anon_fault_fallback["64K"] == 0
    assert mm.fault(a + 192 * K, write=True).order == 0      # left full: alloc fails
    s = mm.stats()
    assert s.anon_fault_declined["64K"] == 2 and s.anon_fault_fallback["64K"] == 1
    assert mm.fault(a + 256 * K, write=True).order == 0      # [192K,256K) not full
    fill(mm, a + 196 * K, "60K")
    assert mm.fault(a + 256 * K + 4 * K, write=True).order == 0  # range holds a page now
    assert mm.fault(a + 320 * K, write=True).order == 0          # [256K,320K) not full


def test_policy_spec_and_default(mm_factory) -> None:
    assert Policy().anon_beside_full is False
    p = Policy.parse("upstream/64K=always/anon_beside_full=1")
    assert p.anon_beside_full is True
    with pytest.raises(ValueError):
        Policy.parse("upstream/anon_beside_full=2")
