"""Races and retries (docs/kernel-semantics.md §1.2, §1.3):

After allocating, do_anonymous_page() rechecks the PTEs under the PTL
(vmf_pte_changed for one page, pte_range_none for a large folio).  If
another thread populated any of them: the folio is released, no counter is
touched, the fault returns 0 and the access re-faults if it still misses.
pte_offset_map() failing in alloc_anon_folio() is ERR_PTR(-EAGAIN): the
fault returns 0 and is retried.  Both returns are accounted in pgfault
(mm_account_fault counts every fault that is not an error or a retry).
"""
from __future__ import annotations

from conftest import K, layout, place, upstream

from pylaf import Access, FaultKind

S64 = {"64K": "always"}


def test_race_same_page_folio_freed_no_counter(mm_factory) -> None:
    """The racer maps the 64K block first; our 64K folio is freed and the
    re-executed access hits the racer's folio (no second fault)."""
    mm = mm_factory(upstream(S64))
    a = place(mm, "1M")
    free0 = mm.stats().free_pages
    mm.inject_race(a)
    r = mm.fault(a, write=True)
    assert (r.access, r.nr_faults, r.kind, r.order) == (Access.FAULT, 1, FaultKind.NONE, 4)
    s = mm.stats()
    assert s.pgfault == 2 and s.faults == 2                  # ours + the racer's
    assert s.faults_retried == 0
    assert s.anon_fault_alloc["64K"] == 1                    # the racer's only
    assert sum(s.anon_fault_fallback.values()) == 0
    assert s.folios_mapped["64K"] == 1 and s.mm_anonpages == 16
    assert s.free_pages == free0 - 1 - 16                    # table + one 64K folio
    assert layout(mm, a, "64K") == "0+64K:64K"


def test_race_other_page_refaults(mm_factory) -> None:
    """The racer writes +48K and (memory.max = 17 pages) can only get an
    order-0 page there.  Our 64K folio sees a non-none PTE at the recheck:
    freed, fault returns 0, the access misses again and re-faults; the
    second fault finds the 64K range occupied and maps order 0."""
    mm = mm_factory(upstream(S64), memcg_limit="68K")
    a = place(mm, "1M")
    mm.inject_race(a + 48 * K)
    r = mm.fault(a, write=True)
    assert (r.access, r.nr_faults, r.kind, r.order) == (Access.FAULT, 2, FaultKind.ANON_WRITE, 0)
    s = mm.stats()
    assert s.faults_retried == 1
    assert s.pgfault == 3 and s.faults == 3                  # ours twice + the racer's
    assert s.anon_fault_alloc["64K"] == 0
    # the only 64K fallback is the racer's charge failure
    assert s.anon_fault_fallback_charge["64K"] == 1 and s.anon_fault_fallback["64K"] == 1
    assert s.memcg_charged == 2 and s.mm_anonpages == 2
    assert layout(mm, a, "64K") == "0+4K:4K 4K+44K:none 48K+4K:4K 52K+12K:none"


def test_race_outside_our_range_changes_nothing(mm_factory) -> None:
    mm = mm_factory(upstream(S64))
    a = place(mm, "1M")
    mm.inject_race(a + 512 * K)
    r = mm.fault(a, write=True)
    assert (r.nr_faults, r.order, r.kind) == (1, 4, FaultKind.ANON_WRITE)
    s = mm.stats()
    assert s.pgfault == 2 and s.faults_retried == 0 and s.anon_fault_alloc["64K"] == 2


def test_race_order0_page(mm_factory) -> None:
    """nr == 1: vmf_pte_changed()."""
    mm = mm_factory(upstream())
    a = place(mm, "1M")
    mm.inject_race(a)
    r = mm.fault(a, write=True)
    assert (r.nr_faults, r.order) == (1, 0)
    s = mm.stats()
    assert s.pgfault == 2 and s.folios_mapped["4K"] == 1 and s.mm_anonpages == 1
    assert s.memcg_charged == 1


def test_pte_map_fail_eagain_refaults(mm_factory) -> None:
    mm = mm_factory(upstream(S64))
    a = place(mm, "1M")
    mm.inject_pte_map_fail()
    r = mm.fault(a, write=True)
    assert (r.access, r.nr_faults, r.order) == (Access.FAULT, 2, 4)
    s = mm.stats()
    assert s.faults_retried == 1 and s.pgfault == 2 and s.faults == 2
    assert s.anon_fault_alloc["64K"] == 1 and sum(s.anon_fault_fallback.values()) == 0
    assert s.folios_mapped["64K"] == 1


def test_pte_map_fail_several_times(mm_factory) -> None:
    mm = mm_factory(upstream(S64))
    a = place(mm, "1M")
    mm.inject_pte_map_fail(3)
    r = mm.fault(a, write=True)
    assert (r.nr_faults, r.order) == (4, 4)
    assert mm.stats().faults_retried == 3 and mm.stats().pgfault == 4


def test_pte_map_fail_not_reached_without_mthp_candidates(mm_factory) -> None:
    """pte_offset_map() in alloc_anon_folio() runs only when some mTHP order
    survived the VMA fit: order-0-only faults never see -EAGAIN."""
    mm = mm_factory(upstream())
    a = place(mm, "1M")
    mm.inject_pte_map_fail()
    assert mm.fault(a, write=True).nr_faults == 1
    mm.inject_clear()


def test_inject_clear_disarms_everything(mm_factory) -> None:
    mm = mm_factory(upstream(S64))
    a = place(mm, "1M")
    mm.inject_alloc_fail(4, count=5)
    mm.inject_charge_fail(0, count=5)
    mm.inject_race(a)
    mm.inject_pte_map_fail(5)
    mm.inject_clear()
    r = mm.fault(a, write=True)
    assert (r.nr_faults, r.order) == (1, 4) and mm.stats().pgfault == 1
