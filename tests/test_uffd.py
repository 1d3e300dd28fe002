"""userfaultfd (docs/kernel-semantics.md §1.11):

* userfaultfd_armed(vma) (MISSING or WP registered) forces order 0 on the
  PTE path;
* userfaultfd_missing(vma): read and write faults on none entries are
  handed to userspace, nothing is mapped (the folio is allocated, then
  freed), and the fault is VM_FAULT_RETRY (not counted in pgfault);
* UFFDIO_COPY / UFFDIO_ZEROPAGE fill none PTEs with order-0 pages / zero
  PTEs (not faults);
* UFFDIO_WRITEPROTECT: a write to a uffd-wp PTE goes to userspace; reads
  hit; un-protecting makes it writable again.
"""
from __future__ import annotations

import pytest
from conftest import K, M, all_mthp, layout, place, upstream

from pylaf import Access, FaultKind, LafValueError, PteFlags, VmFlags

MTHP = upstream(all_mthp(pmd="never"))


def test_missing_fault_goes_to_userspace_nothing_mapped(mm_factory) -> None:
    mm = mm_factory(MTHP)
    a = place(mm, "1M")
    mm.uffd_register(a, "1M", "missing")
    free0 = mm.stats().free_pages
    for addr, write in ((a, True), (a + 100 * K, False)):
        r = mm.fault(addr, write=write)
        assert r.access == Access.USERFAULT and r.nr_faults == 1
    s = mm.stats()
    assert s.faults_userfault == 2 and s.pgfault == 0 and s.faults == 2
    assert s.mm_anonpages == 0 and s.memcg_charged == 0
    assert sum(s.anon_fault_alloc.values()) == 0 and sum(s.anon_fault_fallback.values()) == 0
    assert s.free_pages == free0 - 1                 # only the PTE table
    assert layout(mm, a, "1M") == "0+1M:none"


def test_uffd_copy_and_zeropage_fill(mm_factory) -> None:
    mm = mm_factory(MTHP)
    a = place(mm, "1M")
    mm.uffd_register(a, "1M", "missing")
    mm.uffd_copy(a, "64K")
    mm.uffd_zeropage(a + 64 * K, "8K")
    s = mm.stats()
    assert s.mm_anonpages == 16 and s.pgfault == 0 and s.faults == 0
    assert sum(s.anon_fault_alloc.values()) == 0
    assert layout(mm, a, "128K") == "0+64K:4K 64K+8K:zero 72K+56K:none"
    # filled pages are accessible without faults; copied pages are writable
    assert mm.fault(a + 4 * K, write=True).access == Access.HIT
    assert mm.fault(a + 64 * K).access == Access.HIT
    # a write to a filled zero PTE is an ordinary COW (present PTE: not MISSING)
    r = mm.fault(a + 68 * K, write=True)
    assert (r.access, r.kind, r.order) == (Access.FAULT, FaultKind.WP, 0)
    # filling over present pages is -EEXIST; the holes are still MISSING
    with pytest.raises(LafValueError, match=r"\(EEXIST\)"):
        mm.uffd_copy(a, "4K")
    assert mm.fault(a + 72 * K, write=True).access == Access.USERFAULT


def test_armed_missing_is_order0_for_filled_neighbourhood(mm_factory) -> None:
    """After unregistering, large folios are back."""
    mm = mm_factory(MTHP)
    a = place(mm, "1M")
    mm.uffd_register(a, "1M", "missing")
    assert mm.fault(a, write=True).access == Access.USERFAULT
    mm.uffd_unregister(a, "1M")
    assert mm.fault(a, write=True).order == 8


def test_wp_armed_forces_order0(mm_factory) -> None:
    mm = mm_factory(MTHP)
    a = place(mm, "1M")
    mm.uffd_register(a, "1M", "wp")
    r = mm.fault(a + 64 * K, write=True)
    assert (r.access, r.kind, r.order) == (Access.FAULT, FaultKind.ANON_WRITE, 0)
    t = mm.touch_range(a, "1M", write=True)
    s = mm.stats()
    assert t.faulted == 255 and s.folios_mapped["4K"] == 256
    assert sum(s.anon_fault_alloc.values()) == 0
    assert sum(s.anon_fault_fallback.values()) == 0     # filtered, not failed


def test_writeprotect_then_unprotect(mm_factory) -> None:
    mm = mm_factory(MTHP)
    a = place(mm, "1M")
    mm.uffd_register(a, "1M", "wp")
    mm.touch_range(a, "64K", write=True)
    mm.uffd_writeprotect(a, "16K")
    pte = mm.pte(a)
    assert pte.flags & PteFlags.UFFD_WP and not pte.flags & PteFlags.WRITE
    assert mm.pte(a + 16 * K).flags & PteFlags.WRITE
    r = mm.fault(a + 4 * K, write=True)
    assert r.access == Access.USERFAULT
    assert mm.fault(a + 4 * K).access == Access.HIT
    assert mm.fault(a + 16 * K, write=True).access == Access.HIT
    s = mm.stats()
    assert s.faults_userfault == 1 and s.faults_wp == 0
    mm.uffd_writeprotect(a, "16K", wp=False)
    pte = mm.pte(a)
    assert not pte.flags & PteFlags.UFFD_WP and pte.flags & PteFlags.WRITE
    assert mm.fault(a + 4 * K, write=True).access == Access.HIT


def test_uffd_copy_wp(mm_factory) -> None:
    mm = mm_factory(MTHP)
    a = place(mm, "64K")
    mm.uffd_register(a, "64K", ["missing", "wp"])
    mm.uffd_copy(a, "8K", wp=True)
    assert mm.fault(a, write=True).access == Access.USERFAULT
    assert mm.fault(a).access == Access.HIT
    mm.uffd_writeprotect(a, "8K", wp=False)
    assert mm.fault(a, write=True).access == Access.HIT


def test_writeprotect_part_of_pmd_thp_splits_it(mm_factory) -> None:
    """change_pmd_range(): a huge PMD covered only in part is split first;
    only the requested range becomes uffd-wp."""
    mm = mm_factory(upstream(enabled="always"))
    a = place(mm, "2M")
    mm.uffd_register(a, "2M", "wp")
    assert mm.fault(a, write=True).order == 9          # WP-only: PMD path still runs
    mm.uffd_writeprotect(a, "64K")
    s = mm.stats()
    assert s.thp_split_pmd == 1 and s.mm_anonpages == 512
    assert mm.fault(a, write=True).access == Access.USERFAULT
    assert mm.fault(a + 64 * K, write=True).access == Access.HIT
    f = mm.folio(a + 1 * M)
    assert f is not None and f.order == 9 and f.mapcount == 512


def test_writeprotect_whole_pmd_thp_keeps_it(mm_factory) -> None:
    mm = mm_factory(upstream(enabled="always"))
    a = place(mm, "2M")
    mm.uffd_register(a, "2M", "wp")
    mm.fault(a, write=True)
    mm.uffd_writeprotect(a, "2M")
    assert mm.stats().thp_split_pmd == 0
    assert mm.pte(a + 1 * M).flags & PteFlags.UFFD_WP
    assert mm.fault(a + 1 * M, write=True).access == Access.USERFAULT
    mm.uffd_writeprotect(a, "2M", wp=False)
    assert mm.fault(a + 1 * M, write=True).access == Access.HIT


def test_register_splits_vma_and_unregister_merges(mm_factory) -> None:
    mm = mm_factory(MTHP)
    a = place(mm, "4M")
    mm.fault(a + 3 * M, write=True)                  # anon_vma_prepare() on the whole VMA
    mm.uffd_register(a + 64 * K, "64K", "missing")
    v = mm.vmas()
    assert [(x.start - a, x.end - a) for x in v] == [(0, 64 * K), (64 * K, 128 * K),
                                                     (128 * K, 4 * M)]
    assert v[1].flags & VmFlags.UFFD_MISSING and not v[0].flags & VmFlags.UFFD_MISSING
    assert len({x.anon_vma for x in v}) == 1          # split VMAs share the anon_vma
    # folio fit uses the split bounds
    assert mm.fault(a + 4 * K, write=True).order == 4          # [0, 64K): the whole VMA
    assert mm.fault(a + 200 * K, write=True).order == 5        # [128K, 256K)
    assert mm.fault(a + 64 * K, write=True).access == Access.USERFAULT
    mm.uffd_unregister(a + 64 * K, "64K")
    v = mm.vmas()
    assert [(x.start - a, x.end - a) for x in v] == [(0, 4 * M)]
    assert mm.fault(a + 64 * K, write=True).order == 4         # [64K, 128K): the hole
    assert mm.fault(a + 600 * K, write=True).order == 7        # [512K, 1M)


def test_parts_with_different_anon_vmas_do_not_merge_back(mm_factory) -> None:
    """Faults in the parts while their flags differ give them different
    anon_vmas (find_mergeable_anon_vma needs compatible flags), and VMAs with
    different anon_vmas never merge (is_mergeable_anon_vma)."""
    mm = mm_factory(MTHP)
    a = place(mm, "1M")
    mm.uffd_register(a + 512 * K, "512K", "wp")
    mm.fault(a, write=True)
    mm.fault(a + 512 * K, write=True)
    v = mm.vmas()
    assert len(v) == 2 and v[0].anon_vma != v[1].anon_vma
    mm.uffd_unregister(a + 512 * K, "512K")
    assert len(mm.vmas()) == 2


def test_register_errors(mm_factory) -> None:
    mm = mm_factory(MTHP)
    a = place(mm, "1M")
    with pytest.raises(LafValueError, match=r"\(EINVAL\)"):
        mm.uffd_register(a, "1M", "minor")            # anon VMAs: MINOR not supported
    with pytest.raises(LafValueError, match=r"\(EINVAL\)"):
        mm.uffd_register(a + 2 * M, "1M", "missing")  # no VMA at all in the range
    with pytest.raises(ValueError, match="unknown userfaultfd mode 'bogus'"):
        mm.uffd_register(a, "1M", "bogus")
    with pytest.raises(LafValueError, match=r"\(ENOENT\)"):
        mm.uffd_copy(a, "4K")                         # not registered
    assert len(mm.vmas()) == 1 and not mm.vmas()[0].flags & VmFlags.UFFD_MISSING


def test_register_skips_holes(mm_factory) -> None:
    """userfaultfd_register() walks the VMAs in the range; a hole is not an
    error as long as some VMA is there."""
    mm = mm_factory(MTHP)
    a = place(mm, "1M")
    mm.uffd_register(a - 1 * M, "3M", "missing")
    v = mm.vmas()
    assert len(v) == 1 and v[0].flags & VmFlags.UFFD_MISSING
    assert mm.fault(a, write=True).access == Access.USERFAULT


def test_missing_armed_never_tries_a_large_order(mm_factory) -> None:
    """userfaultfd_armed() → alloc_anon_folio() goes straight to order 0: an
    injected 64K allocation failure is still armed after the MISSING fault
    and fires only once the range is unregistered."""
    mm = mm_factory(upstream({"64K": "always"}))
    a = place(mm, "1M")
    mm.uffd_register(a, "1M", "missing")
    mm.inject_alloc_fail(4)
    assert mm.fault(a, write=True).access == Access.USERFAULT
    assert mm.stats().anon_fault_fallback["64K"] == 0
    mm.uffd_unregister(a, "1M")
    assert mm.fault(a, write=True).order == 0
    assert mm.stats().anon_fault_fallback["64K"] == 1
