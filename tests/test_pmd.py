"""The PMD path (docs/kernel-semantics.md §1.5, §1.6; kernel-findings #5):

* attempted only when the PMD entry is none (no PTE table yet) and the PMD
  order is allowed;
* VMA not covering the aligned 2M → VM_FAULT_FALLBACK, no counter;
* read + use_zero_page → huge zero PMD (deposited table, no RSS);
* allocation failure → thp_fault_fallback + anon_fault_fallback[PMD], then
  the PTE path (mTHP orders, then 0); charge failure also counts the _charge
  variants;
* write to a huge zero PMD → a THP (thp_fault_alloc), or, if that fails,
  thp_split_pmd + zero PTEs + an order-0 COW.
"""
from __future__ import annotations

import pytest
from conftest import K, M, layout, place, upstream

from pylaf import Access, FaultKind, FolioFlags, Policy, PteFlags

S64 = {"64K": "always"}


def hinted_2m(mm, length="2M") -> int:
    a = place(mm, length)
    mm.madvise(a, length, "hugepage")
    return a


def test_finding5a_write_gets_pmd_thp(mm_factory) -> None:
    mm = mm_factory(upstream())                       # global madvise, 2M inherit
    a = hinted_2m(mm)
    r = mm.fault(a + 4 * K, write=True)
    assert (r.kind, r.order, r.nr_faults) == (FaultKind.PMD, 9, 1)
    s = mm.stats()
    assert (s.thp_fault_alloc, s.anon_fault_alloc["2M"], s.nr_anon["2M"]) == (1, 1, 1)
    assert s.mm_anonpages == 512 and s.pgfault == 1
    assert s.nr_ptes == 1                             # the deposited table
    f = mm.folio(a + 1 * M)
    assert f is not None and f.order == 9 and f.index * 4096 == a
    assert (f.refcount, f.mapcount) == (1, 1)
    assert f.flags & FolioFlags.PMD_MAPPED and f.flags & FolioFlags.ANON
    pte = mm.pte(a + 1 * M)
    assert pte.flags & PteFlags.HUGE and pte.flags & PteFlags.WRITE
    # every other access in the 2M is a hit
    t = mm.touch_range(a, "2M", write=True)
    assert t.hits == 512 and t.faulted == 0


def test_finding5d_no_hint_no_thp(mm_factory) -> None:
    mm = mm_factory(upstream())
    a = place(mm, "2M")
    assert mm.fault(a + 4 * K, write=True).order == 0
    assert mm.stats().thp_fault_fallback == 0


def test_finding5b_huge_zero_pmd_then_write(mm_factory) -> None:
    mm = mm_factory(upstream())
    a = hinted_2m(mm)
    r = mm.fault(a + 4 * K)
    assert (r.kind, r.order) == (FaultKind.PMD_ZERO, -1)
    s = mm.stats()
    assert s.thp_zero_page_alloc == 1              # allocated lazily, on first use
    assert s.mm_anonpages == 0 and s.thp_fault_alloc == 0 and s.huge_zero_pmd_maps == 1
    assert s.nr_ptes == 1 and s.memcg_charged == 0
    assert layout(mm, a, "2M") == "0+2M:hzero"
    f = mm.folio(a)
    assert f is not None and f.flags & FolioFlags.HUGE_ZERO
    # reads anywhere in the 2M are hits
    assert mm.touch_range(a, "2M").hits == 512
    # write: zero PMD → THP, no split
    r = mm.fault(a + 4 * K, write=True)
    assert (r.kind, r.order, r.nr_faults) == (FaultKind.PMD_WP, 9, 1)
    s = mm.stats()
    assert (s.thp_fault_alloc, s.anon_fault_alloc["2M"], s.thp_split_pmd) == (1, 1, 0)
    assert s.mm_anonpages == 512 and s.nr_ptes == 1
    assert layout(mm, a, "2M") == "0+2M:2M"


def test_huge_zero_folio_is_shared_and_allocated_once(mm_factory) -> None:
    mm = mm_factory(upstream(enabled="always"))
    a = place(mm, "4M")
    b = place(mm, "2M")
    for addr in (a, a + 2 * M, b):
        assert mm.fault(addr).kind == FaultKind.PMD_ZERO
    s = mm.stats()
    assert s.thp_zero_page_alloc == 1 and s.huge_zero_pmd_maps == 3 and s.nr_ptes == 3
    assert mm.pte(a).pfn == mm.pte(b).pfn
    hz = mm.folio(a)
    assert hz is not None and hz.mapcount == 3


def test_finding5c_no_zero_page_means_thp_on_read(mm_factory) -> None:
    mm = mm_factory(upstream(use_zero_page=False))
    a = hinted_2m(mm)
    r = mm.fault(a + 4 * K)
    assert (r.kind, r.order) == (FaultKind.PMD, 9)
    assert mm.stats().thp_fault_alloc == 1 and mm.stats().thp_zero_page_alloc == 0


def test_huge_zero_folio_unavailable_falls_back_to_small_zero(mm_factory) -> None:
    """§1.6: huge zero folio unavailable on a read: thp_fault_fallback++ and
    the PTE path maps the small zero page."""
    mm = mm_factory(upstream(enabled="always"))
    a = place(mm, "2M")
    mm.fragment(8)                                  # no free 2M block
    r = mm.fault(a)
    assert r.kind == FaultKind.ANON_READ
    s = mm.stats()
    assert s.thp_zero_page_alloc_failed == 1 and s.thp_fault_fallback == 1
    assert s.thp_zero_page_alloc == 0
    assert sum(s.anon_fault_fallback.values()) == 0
    assert layout(mm, a, "8K") == "0+4K:zero 4K+4K:none"


def test_write_to_huge_zero_pmd_with_pmd_alloc_failing(mm_factory) -> None:
    """do_huge_zero_wp_pmd fails → __split_huge_pmd (thp_split_pmd, 512 zero
    PTEs in the deposited table) → do_wp_page copies an order-0 page."""
    mm = mm_factory(upstream(S64))
    a = hinted_2m(mm)
    mm.fault(a)
    mm.inject_alloc_fail(9)
    r = mm.fault(a + 8 * K, write=True)
    assert (r.kind, r.order, r.nr_faults) == (FaultKind.WP, 0, 1)
    s = mm.stats()
    assert s.thp_split_pmd == 1
    assert s.thp_fault_fallback == 1 and s.anon_fault_fallback["2M"] == 1
    assert s.thp_fault_alloc == 0 and s.faults_wp == 1 and s.pgfault == 2
    assert s.mm_anonpages == 1
    assert s.nr_ptes == 1                            # the deposited table became the PTE table
    assert layout(mm, a, "2M") == "0+8K:zero 8K+4K:4K 12K+2036K:zero"
    assert mm.folio(a) is None and mm.pte(a).zero_page
    # the 64K range now holds zero PTEs: writes there are order-0 COWs
    assert mm.fault(a + 64 * K, write=True).order == 0


def test_write_to_huge_zero_pmd_with_charge_failing(mm_factory) -> None:
    mm = mm_factory(upstream())
    a = hinted_2m(mm)
    mm.fault(a)
    mm.inject_charge_fail(9)
    assert mm.fault(a, write=True).order == 0
    s = mm.stats()
    assert (s.thp_fault_fallback, s.thp_fault_fallback_charge) == (1, 1)
    assert (s.anon_fault_fallback["2M"], s.anon_fault_fallback_charge["2M"]) == (1, 1)
    assert s.thp_split_pmd == 1


def test_pmd_alloc_failure_then_mthp(mm_factory) -> None:
    mm = mm_factory(upstream(S64, enabled="always"))
    a = place(mm, "2M")
    mm.inject_alloc_fail(9)
    r = mm.fault(a + 100 * K, write=True)
    assert (r.kind, r.order) == (FaultKind.ANON_WRITE, 4)
    s = mm.stats()
    assert (s.thp_fault_fallback, s.thp_fault_fallback_charge) == (1, 0)
    assert s.anon_fault_fallback["2M"] == 1 and s.anon_fault_fallback_charge["2M"] == 0
    assert s.anon_fault_alloc["64K"] == 1 and s.thp_fault_alloc == 0
    # the fallback created a PTE table: no more PMD attempts in this 2M
    mm.fault(a + 1 * M, write=True)
    assert mm.stats().thp_fault_fallback == 1 and mm.stats().thp_fault_alloc == 0


def test_pmd_charge_failure_then_mthp(mm_factory) -> None:
    mm = mm_factory(upstream(S64, enabled="always"))
    a = place(mm, "2M")
    mm.inject_charge_fail(9)
    assert mm.fault(a, write=True).order == 4
    s = mm.stats()
    assert (s.thp_fault_fallback, s.thp_fault_fallback_charge) == (1, 1)
    assert (s.anon_fault_fallback["2M"], s.anon_fault_fallback_charge["2M"]) == (1, 1)
    assert s.anon_fault_alloc["64K"] == 1


def test_pmd_charge_failure_real_memcg(mm_factory) -> None:
    mm = mm_factory(upstream(S64, enabled="always"), memcg_limit="1M")
    a = place(mm, "2M")
    assert mm.fault(a, write=True).order == 4
    s = mm.stats()
    assert (s.thp_fault_fallback, s.thp_fault_fallback_charge) == (1, 1)
    assert s.memcg_charged == 16


def test_pmd_failure_to_order0_when_no_mthp_enabled(mm_factory) -> None:
    mm = mm_factory(upstream(enabled="always"))
    a = place(mm, "2M")
    mm.inject_alloc_fail(9)
    assert mm.fault(a, write=True).order == 0
    assert mm.stats().thp_fault_fallback == 1


def test_pte_table_blocks_pmd_path(mm_factory) -> None:
    """A read fault created a PTE table while the VMA was NOHUGEPAGE; after
    MADV_HUGEPAGE the PMD entry is not none, so no PMD THP is attempted."""
    mm = mm_factory(upstream())
    a = place(mm, "2M")
    mm.madvise(a, "2M", "nohugepage")
    mm.fault(a + 1 * M)
    mm.madvise(a, "2M", "hugepage")
    r = mm.fault(a, write=True)
    assert (r.kind, r.order) == (FaultKind.ANON_WRITE, 0)
    s = mm.stats()
    assert s.thp_fault_alloc == 0 and s.thp_fault_fallback == 0
    assert s.anon_fault_fallback["2M"] == 0
    # the other PMD of a 4M VMA is unaffected
    b = place(mm, "4M")
    mm.madvise(b, "4M", "hugepage")
    mm.fault(b + 3 * M, write=True)
    assert mm.fault(b + 3 * M).order == 9


def test_vma_not_covering_aligned_2m_falls_back_silently(mm_factory) -> None:
    mm = mm_factory(upstream(S64, enabled="always"))
    a = place(mm, "1M")                               # PMD-aligned start, 1M long
    assert mm.fault(a, write=True).order == 4
    b = place(mm, "2M", align="2M", misalign="64K")   # straddles two PMDs
    assert mm.fault(b, write=True).order == 4
    assert mm.fault(b + 2 * M - 64 * K - 4 * K, write=True).order == 4
    s = mm.stats()
    assert s.thp_fault_alloc == 0 and s.thp_fault_fallback == 0
    assert s.anon_fault_fallback["2M"] == 0


def test_pmd_allowed_read_fault_in_small_vma_uses_small_zero_page(mm_factory) -> None:
    mm = mm_factory(upstream(enabled="always"))
    a = place(mm, "1M")
    assert mm.fault(a).kind == FaultKind.ANON_READ
    assert mm.stats().thp_zero_page_alloc == 0


def test_pmd_thp_partial_munmap_and_deferred_split(mm_factory) -> None:
    mm = mm_factory(upstream(enabled="always"))
    a = place(mm, "2M")
    mm.fault(a, write=True)
    mm.munmap(a + 1 * M, "1M")
    s = mm.stats()
    assert s.thp_split_pmd == 1
    assert s.split_deferred["2M"] == 1 and s.thp_deferred_split_page == 1
    assert s.nr_anon_partially_mapped["2M"] == 1 and s.nr_anon["2M"] == 1
    assert s.mm_anonpages == 256
    f = mm.folio(a)
    assert f is not None and f.order == 9 and (f.refcount, f.mapcount) == (256, 256)
    assert f.flags & FolioFlags.PARTIALLY_MAPPED and not f.flags & FolioFlags.PMD_MAPPED
    free0 = s.free_pages
    assert mm.shrink_deferred_split() == 1
    s = mm.stats()
    assert s.split["2M"] == 1 and s.thp_split_page == 1
    assert s.nr_anon["2M"] == 0 and s.nr_anon_partially_mapped["2M"] == 0
    assert s.free_pages == free0 + 256 and s.mm_anonpages == 256
    f = mm.folio(a + 100 * K)
    assert f is not None and f.order == 0


def test_pmd_thp_dontneed_whole_frees_folio_and_deposit(mm_factory) -> None:
    mm = mm_factory(upstream(enabled="always"))
    a = place(mm, "2M")
    free0 = mm.stats().free_pages
    mm.fault(a, write=True)
    assert mm.stats().free_pages == free0 - 513
    mm.madvise(a, "2M", "dontneed")
    s = mm.stats()
    assert s.free_pages == free0 and s.nr_ptes == 0 and s.mm_anonpages == 0
    assert s.nr_anon["2M"] == 0 and s.split_deferred["2M"] == 0 and s.thp_split_pmd == 0
    # the PMD is none again: the next write gets a THP again
    assert mm.fault(a, write=True).order == 9


def test_pmd_thp_dontneed_part_splits_pmd(mm_factory) -> None:
    mm = mm_factory(upstream(enabled="always"))
    a = place(mm, "2M")
    mm.fault(a, write=True)
    mm.madvise(a + 4 * K, "4K", "dontneed")
    s = mm.stats()
    assert s.thp_split_pmd == 1 and s.split_deferred["2M"] == 1
    assert s.mm_anonpages == 511
    assert layout(mm, a, "12K") == "0+4K:2M!partial 4K+4K:none 8K+4K:2M!partial"


@pytest.mark.parametrize("page_size,ram,key", [("16K", "256M", "32M"), ("64K", "2G", "512M")])
def test_pmd_thp_other_page_sizes(mm_factory, page_size, ram, key) -> None:
    mm = mm_factory(upstream(enabled="always"), page_size=page_size, ram=ram)
    a = mm.mmap(mm.pmd_size)
    assert a % mm.pmd_size == 0
    r = mm.fault(a + 5 * mm.page_size, write=True)
    assert (r.kind, r.order) == (FaultKind.PMD, mm.pmd_order)
    s = mm.stats()
    assert s.anon_fault_alloc[key] == 1 and s.mm_anonpages == mm.ptrs_per_pte
    mm.munmap(a, mm.pmd_size)
    assert mm.stats().mm_anonpages == 0


def test_uffd_missing_pmd_write_hands_to_userspace_nothing_mapped(mm_factory) -> None:
    mm = mm_factory(upstream(enabled="always"))
    a = place(mm, "2M")
    mm.uffd_register(a, "2M", "missing")
    free0 = mm.stats().free_pages
    for write in (True, False):
        r = mm.fault(a, write=write)
        assert r.access == Access.USERFAULT
    s = mm.stats()
    assert s.thp_fault_alloc == 0 and s.mm_anonpages == 0 and s.nr_ptes == 0
    assert s.faults_userfault == 2 and s.pgfault == 0
    # the huge zero folio was allocated before the uffd check (global, not RSS)
    assert s.free_pages in (free0, free0 - 512)
    assert layout(mm, a, "2M") == "0+2M:none"


def test_uffd_wp_only_still_gets_pmd_thp(mm_factory) -> None:
    """§6.8: the PMD path has no userfaultfd_armed() check."""
    mm = mm_factory(upstream({"64K": "always"}, enabled="always"))
    a = place(mm, "2M")
    mm.uffd_register(a, "2M", "wp")
    assert mm.fault(a, write=True).order == 9


def test_policy_change_takes_effect_at_next_fault(mm_factory) -> None:
    mm = mm_factory(upstream())
    a = place(mm, "4M")
    assert mm.fault(a, write=True).order == 0
    mm.set_policy(Policy.upstream(enabled="always"))
    assert mm.fault(a + 2 * M, write=True).order == 9
    mm.set_policy("upstream/enabled=never")
    b = place(mm, "2M")
    assert mm.fault(b, write=True).order == 0
