"""Teardown: munmap / MADV_DONTNEED, rmap counts, partial unmap and the
deferred split (docs/kernel-semantics.md §1.7; kernel-findings #8).

* after an mTHP fault: refcount == mapcount == nr (one per PTE);
  a PMD THP: refcount 1, mapcount 1;
* the first partial unmap of a large anon folio queues it for deferred split:
  split_deferred[o]++ and nr_anon_partially_mapped[o]++ (vmstat
  thp_deferred_split_page only for PMD-sized folios); the folio stays
  allocated until the shrinker splits it (split[o]++), which frees the
  unmapped pages;
* unmapping a whole folio frees it: nr_anon[o]--.
"""
from __future__ import annotations

import pytest
from conftest import K, M, layout, place, upstream

from pylaf import AddressSpace, ClosedError, Config, FolioFlags, Policy

S64 = {"64K": "always"}


def test_harness_tracks_every_address_space(_invariants_at_teardown, mm_factory) -> None:
    """The autouse fixture sees AddressSpaces however they are created."""
    a = mm_factory(upstream())
    b = AddressSpace(Config(ram="64M"))
    with AddressSpace(ram="64M") as c:
        c.mmap("1M")
    assert [x for x in _invariants_at_teardown if x in (a, b, c)] == [a, b, c]
    assert c.closed


def test_refcount_mapcount_after_faults(mm_factory) -> None:
    mm = mm_factory(upstream({"64K": "always", "2M": "always"}))
    a = place(mm, "1M")
    mm.fault(a, write=True)
    f = mm.folio(a + 20 * K)
    assert f is not None and (f.order, f.refcount, f.mapcount) == (4, 16, 16)
    assert f.flags & FolioFlags.ANON and f.flags & FolioFlags.LRU
    assert f.index * 4096 == a and f.head_pfn % 16 == 0       # VA and PA aligned
    b = place(mm, "2M")
    mm.fault(b, write=True)
    f = mm.folio(b + 1 * M)
    assert f is not None and (f.order, f.refcount, f.mapcount) == (9, 1, 1)
    assert f.head_pfn % 512 == 0


def test_finding8_partial_dontneed_then_munmap(mm_factory) -> None:
    mm = mm_factory(upstream(S64))
    a = place(mm, "128K", align="64K")
    mm.touch_range(a, "128K", write=True)
    before = mm.stats()
    mm.madvise(a, "32K", "dontneed")
    s = mm.stats()
    assert s.split_deferred["64K"] == 1 and s.nr_anon_partially_mapped["64K"] == 1
    assert s.thp_deferred_split_page == before.thp_deferred_split_page   # PMD-only
    assert s.nr_anon["64K"] == 2
    assert s.free_pages == before.free_pages                  # nothing freed yet
    assert s.mm_anonpages == 24
    assert layout(mm, a, "128K") == "0+32K:none 32K+32K:64K!partial 64K+64K:64K"
    f = mm.folio(a + 32 * K)
    assert f is not None and (f.refcount, f.mapcount) == (8, 8)
    assert f.flags & FolioFlags.PARTIALLY_MAPPED
    mm.munmap(a, "128K")
    s = mm.stats()
    assert s.nr_anon["64K"] == 0 and s.nr_anon_partially_mapped["64K"] == 0
    assert s.split_deferred["64K"] == 1 and sum(s.split.values()) == 0
    assert s.free_pages == before.free_pages + 32 + 1         # both folios + the table


def test_dontneed_whole_folio_frees_it_only(mm_factory) -> None:
    mm = mm_factory(upstream(S64))
    a = place(mm, "128K", align="64K")
    mm.touch_range(a, "128K", write=True)
    before = mm.stats()
    mm.madvise(a + 64 * K, "64K", "dontneed")
    s = mm.stats()
    assert s.nr_anon["64K"] == 1 and s.split_deferred["64K"] == 0
    assert s.nr_anon_partially_mapped["64K"] == 0
    assert s.free_pages == before.free_pages + 16 and s.mm_anonpages == 16
    assert s.memcg_charged == 16 and s.lru_pages == 16


def test_split_deferred_counts_first_partial_unmap_only(mm_factory) -> None:
    mm = mm_factory(upstream(S64))
    a = place(mm, "64K", align="64K")
    mm.fault(a, write=True)
    mm.madvise(a, "4K", "dontneed")
    mm.madvise(a + 8 * K, "4K", "dontneed")
    mm.munmap(a + 60 * K, "4K")
    s = mm.stats()
    assert s.split_deferred["64K"] == 1 and s.nr_anon_partially_mapped["64K"] == 1
    f = mm.folio(a + 4 * K)
    assert f is not None and (f.refcount, f.mapcount) == (13, 13)


def test_shrink_deferred_split(mm_factory) -> None:
    mm = mm_factory(upstream(S64))
    a = place(mm, "128K", align="64K")
    mm.touch_range(a, "128K", write=True)
    mm.madvise(a, "32K", "dontneed")
    before = mm.stats()
    assert mm.shrink_deferred_split() == 1
    s = mm.stats()
    assert s.split["64K"] == 1 and s.thp_split_page == 0
    assert s.free_pages == before.free_pages + 8               # the 8 unmapped pages
    assert s.nr_anon["64K"] == 1 and s.nr_anon_partially_mapped["64K"] == 0
    assert s.mm_anonpages == before.mm_anonpages == 24
    assert s.memcg_charged == 24 and s.lru_pages == 24
    assert layout(mm, a, "128K") == "0+32K:none 32K+32K:4K 64K+64K:64K"
    f = mm.folio(a + 40 * K)
    assert f is not None and (f.order, f.refcount, f.mapcount) == (0, 1, 1)
    assert f.index * 4096 == a + 40 * K
    assert mm.shrink_deferred_split() == 0                     # queue empty now


def test_shrink_skips_folios_freed_since_queued(mm_factory) -> None:
    mm = mm_factory(upstream(S64))
    a = place(mm, "64K", align="64K")
    mm.fault(a, write=True)
    mm.madvise(a, "4K", "dontneed")
    mm.munmap(a, "64K")
    assert mm.stats().deferred_split_queue == 0
    assert mm.shrink_deferred_split() == 0
    assert sum(mm.stats().split.values()) == 0


def test_order0_allocation_failure_runs_the_shrinker(mm_factory) -> None:
    """Direct reclaim stand-in: when order 0 cannot be allocated, the
    deferred-split shrinker runs once and the allocation is retried."""
    mm = mm_factory(upstream(S64))
    a = place(mm, "64K", align="64K")
    mm.fault(a, write=True)
    mm.madvise(a, "32K", "dontneed")
    b = place(mm, "1M")
    mm.inject_alloc_fail(4)
    mm.inject_alloc_fail(0)
    r = mm.fault(b, write=True)
    assert r.order == 0
    assert mm.stats().split["64K"] == 1


def test_munmap_everything_frees_everything(mm_factory) -> None:
    mm = mm_factory(upstream({"16K": "always", "64K": "always", "2M": "always"}))
    a = place(mm, "4M")
    b = place(mm, "1M", misalign="8K")
    mm.touch_range(a, "4M", write=True)
    mm.touch_range(b, "1M", "12K", write=True)
    mm.madvise(b, "100K", "dontneed")
    mm.fault(b + 200 * K)
    assert mm.stats().mm_anonpages > 0
    mm.munmap(a, "4M")
    mm.munmap(b, "1M")
    s = mm.stats()
    assert s.mm_anonpages == 0 and s.nr_ptes == 0 and s.lru_pages == 0
    assert s.memcg_charged == 0 and s.nr_vmas == 0
    assert all(v == 0 for v in s.nr_anon.values())
    assert all(v == 0 for v in s.nr_anon_partially_mapped.values())
    assert s.deferred_split_queue == 0
    assert s.free_pages == s.ram_pages - 1          # the zero page stays reserved


def test_close_is_idempotent_and_final(mm_factory) -> None:
    mm = mm_factory(upstream(S64))
    a = place(mm, "1M")
    mm.touch_range(a, "1M", write=True)
    mm.close()
    mm.close()
    assert mm.closed
    with pytest.raises(ClosedError):
        mm.stats()
    with pytest.raises(ClosedError):
        mm.fault(a)


def test_context_manager_checks_and_closes() -> None:
    with AddressSpace(Config(ram="64M", policy=Policy.upstream(sizes=S64))) as mm:
        a = mm.mmap("1M")
        mm.touch_range(a, "1M", write=True)
    assert mm.closed
