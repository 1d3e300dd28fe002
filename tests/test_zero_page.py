"""Read faults and the zero page (docs/kernel-semantics.md §1.2 read fault, §1.5):
a read of a none PTE maps the shared zero page (special, read-only, no RSS,
never a large folio); a later write COWs it into an order-0 page
(do_wp_page → wp_page_copy → folio_prealloc(order 0)), and the zero PTE
blocks every mTHP range that contains it (pte_range_none)."""
from __future__ import annotations

from conftest import K, M, all_mthp, layout, place, upstream

from pylaf import Access, FaultKind, PteFlags


def test_read_maps_zero_page_not_a_folio(mm_factory) -> None:
    mm = mm_factory(upstream(all_mthp(pmd="never")))
    a = place(mm, "1M")
    r = mm.fault(a + 8 * K)
    assert (r.access, r.kind, r.order) == (Access.FAULT, FaultKind.ANON_READ, -1)
    pte = mm.pte(a + 8 * K)
    assert pte.present and pte.zero_page and pte.pfn == 0
    assert not pte.flags & PteFlags.WRITE
    assert mm.folio(a + 8 * K) is None
    s = mm.stats()
    assert s.mm_anonpages == 0 and s.zero_page_maps == 1 and s.faults_read == 1
    assert sum(s.anon_fault_alloc.values()) == 0 and s.memcg_charged == 0
    assert s.nr_ptes == 1                  # pte_alloc() runs for read faults too
    assert layout(mm, a, "64K") == "0+8K:none 8K+4K:zero 12K+52K:none"
    # a second read is a hit
    assert mm.fault(a + 8 * K).access == Access.HIT
    assert mm.stats().zero_pages_touched == 1


def test_write_after_read_is_order0_copy(mm_factory) -> None:
    mm = mm_factory(upstream({"64K": "always"}))
    a = place(mm, "1M")
    mm.fault(a)
    r = mm.fault(a, write=True)
    assert (r.kind, r.order, r.nr_faults) == (FaultKind.WP, 0, 1)
    s = mm.stats()
    assert s.faults_wp == 1 and s.faults_write == 0
    assert s.mm_anonpages == 1 and s.folios_mapped["4K"] == 1
    assert sum(s.anon_fault_alloc.values()) == 0
    pte = mm.pte(a)
    assert pte.present and not pte.zero_page and pte.flags & PteFlags.WRITE
    f = mm.folio(a)
    assert f is not None and (f.order, f.refcount, f.mapcount) == (0, 1, 1)
    assert s.zero_pages_touched == 0 and s.pages_touched == 1


def test_zero_pte_blocks_64k_folio(mm_factory) -> None:
    """PTE 0..15: ..z............. → a write anywhere in the block is order 0"""
    mm = mm_factory(upstream({"64K": "always"}))
    a = place(mm, "1M")
    mm.fault(a + 8 * K)
    for off in (0, 4 * K, 60 * K):
        assert mm.fault(a + off, write=True).order == 0
    # the next block is untouched
    assert mm.fault(a + 64 * K, write=True).order == 4
    s = mm.stats()
    assert sum(s.anon_fault_fallback.values()) == 0
    assert layout(mm, a, "128K") == "0+8K:4K 8K+4K:zero 12K+48K:none 60K+4K:4K 64K+64K:64K"


def test_reads_never_produce_large_folios(mm_factory) -> None:
    mm = mm_factory(upstream(all_mthp(pmd="never")))
    a = place(mm, "2M")
    t = mm.touch_range(a, "2M")
    s = mm.stats()
    assert t.faulted == 512 and s.faults_read == 512
    assert s.mm_anonpages == 0 and s.zero_page_maps == 512
    assert layout(mm, a, "2M") == "0+2M:zero"
    # then writing everything: 512 order-0 COWs
    t = mm.touch_range(a, "2M", write=True)
    s = mm.stats()
    assert t.faulted == 512 and s.faults_wp == 512 and s.folios_mapped["4K"] == 512
    assert sum(s.anon_fault_alloc.values()) == 0
    assert layout(mm, a, "2M") == "0+2M:4K"


def test_write_to_readonly_vma_is_sigsegv_and_read_is_zero(mm_factory) -> None:
    mm = mm_factory(upstream({"64K": "always"}))
    a = place(mm, "1M", prot="r")
    assert mm.fault(a).kind == FaultKind.ANON_READ
    r = mm.fault(a + 64 * K, write=True)
    assert r.access == Access.SIGSEGV
    assert mm.stats().faults_sigsegv == 1 and mm.stats().mm_anonpages == 0
    b = place(mm, "64K", prot="")
    assert mm.fault(b).access == Access.SIGSEGV


def test_unmapped_address_is_sigsegv(mm_factory) -> None:
    mm = mm_factory(upstream())
    a = place(mm, "64K")
    assert mm.fault(a + 64 * K, write=True).access == Access.SIGSEGV
    assert mm.fault(a - 4 * K).access == Access.SIGSEGV
    s = mm.stats()
    assert s.faults_sigsegv == 2 and s.pgfault == 0 and s.nr_ptes == 0


def test_huge_zero_pmd_on_read_and_small_zero_when_pmd_not_allowed(mm_factory) -> None:
    mm = mm_factory(upstream(enabled="always"))
    a = place(mm, "2M")
    assert mm.fault(a + M).kind == FaultKind.PMD_ZERO
    assert layout(mm, a, "2M") == "0+2M:hzero"
    b = place(mm, "1M")                   # cannot hold a PMD: small zero page
    assert mm.fault(b).kind == FaultKind.ANON_READ
    assert mm.stats().mm_anonpages == 0
