"""Upstream mTHP order selection and fallback (docs/kernel-semantics.md §1.3):

    A   = allowed orders (sysfs, hint, prctl), empty if uffd armed
    A'  = drop from the top while the aligned range does not fit the VMA   (no counter)
    A'' = drop from the top while the aligned range is not pte_none        (no counter)
    for o in A'' descending:
        alloc fails   -> anon_fault_fallback[o]++
        charge fails  -> anon_fault_fallback_charge[o]++, anon_fault_fallback[o]++
    order 0; its failure is VM_FAULT_OOM (no mTHP counter)

and the measured layouts of docs/kernel-findings.md §2 (this machine's kernel).
"""
from __future__ import annotations

import pytest
from conftest import K, M, all_mthp, layout, place, upstream

from pylaf import Access, FaultKind, Policy

S64 = {"64K": "always"}
S16_64 = {"16K": "always", "64K": "always"}


def nonzero(d: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in d.items() if v}


# ------------------------------------------------- kernel-findings §2, measured
def test_finding1_aligned_1m_fill(mm_factory) -> None:
    """#1: 64K always, 1M at a 64K boundary: 16 faults, 16 x 64K."""
    mm = mm_factory(upstream(S64))
    a = place(mm, "1M", align="64K")
    t = mm.touch_range(a, "1M", write=True)
    s = mm.stats()
    assert (t.faulted, t.hits) == (16, 240)
    assert s.pgfault == 16
    assert nonzero(s.anon_fault_alloc) == {"64K": 16} and nonzero(s.nr_anon) == {"64K": 16}
    assert layout(mm, a, "1M") == "0+1M:64K"


def test_finding2_misaligned_edges_get_4k(mm_factory) -> None:
    """#2: both ends 8K past a 64K boundary: 14 + 15 + 2 = 31 faults, 15 x 64K.
    VMA-fit drops count nothing."""
    mm = mm_factory(upstream(S64))
    a = place(mm, "1M", align="64K", misalign="8K")
    mm.touch_range(a, "1M", write=True)
    s = mm.stats()
    assert s.pgfault == 31
    assert nonzero(s.anon_fault_alloc) == {"64K": 15}
    assert nonzero(s.anon_fault_fallback) == {}
    assert layout(mm, a, "1M") == "0+56K:4K 56K+960K:64K 1016K+8K:4K"


def test_finding3_zero_pte_and_4k_block_64k(mm_factory) -> None:
    """#3: read 0, write 0 (COW of the zero page: order 0), write 8K (64K
    range not empty: order 0, no counter), write 64K (64K folio)."""
    mm = mm_factory(upstream(S64))
    a = place(mm, "128K", align="64K")
    r = mm.fault(a)
    assert (r.kind, r.order) == (FaultKind.ANON_READ, -1)
    assert mm.stats().mm_anonpages == 0 and nonzero(mm.stats().anon_fault_alloc) == {}
    r = mm.fault(a, write=True)
    assert (r.kind, r.order) == (FaultKind.WP, 0)
    r = mm.fault(a + 8 * K, write=True)
    assert (r.kind, r.order) == (FaultKind.ANON_WRITE, 0)
    r = mm.fault(a + 64 * K, write=True)
    assert r.order == 4
    s = mm.stats()
    assert s.pgfault == 4 and s.faults_wp == 1
    assert nonzero(s.anon_fault_alloc) == {"64K": 1}
    assert nonzero(s.anon_fault_fallback) == {}
    assert layout(mm, a, "128K") == "0+4K:4K 4K+4K:none 8K+4K:4K 12K+52K:none 64K+64K:64K"


def test_finding4a_16k_where_64k_does_not_fit(mm_factory) -> None:
    """#4a: 16K+64K, 192K at 16K past a 64K boundary: 6 faults."""
    mm = mm_factory(upstream(S16_64))
    a = place(mm, "192K", align="64K", misalign="16K")
    mm.touch_range(a, "192K", write=True)
    s = mm.stats()
    assert s.pgfault == 6
    assert nonzero(s.anon_fault_alloc) == {"16K": 4, "64K": 2}
    assert nonzero(s.anon_fault_fallback) == {}
    assert layout(mm, a, "192K") == "0+48K:16K 48K+128K:64K 176K+16K:16K"


def test_finding4b_16k_where_64k_range_is_blocked(mm_factory) -> None:
    """#4b: the zero PTE at 0 blocks 64K; 16K is used where its range is empty."""
    mm = mm_factory(upstream(S16_64))
    a = place(mm, "64K", align="64K")
    mm.fault(a)
    for off in (16 * K, 32 * K, 48 * K):
        assert mm.fault(a + off, write=True).order == 2
    assert mm.fault(a + 4 * K, write=True).order == 0
    s = mm.stats()
    assert nonzero(s.anon_fault_alloc) == {"16K": 3}
    assert layout(mm, a, "64K") == "0+4K:zero 4K+4K:4K 8K+8K:none 16K+48K:16K"


# ------------------------------------------------------- VMA fit, pte_none
def test_vma_fit_takes_highest_fitting_order_no_counter(mm_factory) -> None:
    """thp_vma_suitable_orders(): the highest order whose aligned range lies
    in the VMA; nothing is counted for the orders dropped."""
    mm = mm_factory(upstream(all_mthp(pmd="never")))
    a = place(mm, "1M", align="1M")
    assert mm.fault(a + 100 * K, write=True).order == 8             # 1M: the whole VMA
    b = place(mm, "960K", align="1M")
    assert mm.fault(b + 100 * K, write=True).order == 7             # [0, 512K)
    assert mm.fault(b + 900 * K, write=True).order == 4             # [896K, 960K)
    c = place(mm, "96K", align="1M", misalign="32K")                 # [32K, 128K) of a 1M block
    assert mm.fault(c + 40 * K, write=True).order == 4              # [64K, 128K)
    assert mm.fault(c + 8 * K, write=True).order == 3               # [32K, 64K)
    s = mm.stats()
    assert nonzero(s.anon_fault_alloc) == {"1M": 1, "512K": 1, "64K": 2, "32K": 1}
    assert nonzero(s.anon_fault_fallback) == {} and nonzero(s.anon_fault_fallback_charge) == {}
    assert s.alloc_retries == 0


def test_pte_range_none_drop_no_counter(mm_factory) -> None:
    """Any non-none PTE (a 4K page or a zero-page PTE) in the aligned range
    removes that order and all higher ones, silently."""
    mm = mm_factory(upstream(all_mthp(pmd="never")))
    a = place(mm, "1M", align="1M")
    mm.fault(a + 200 * K)                       # zero PTE in [192K, 256K)
    # 1M, 512K, 256K ranges hold it; 128K range [128K,256K) too; 64K [128K,192K) is empty
    assert mm.fault(a + 130 * K, write=True).order == 4
    # the 64K block holding the zero PTE: 32K [192K,224K) holds it too; 16K [208K,224K) empty
    assert mm.fault(a + 210 * K, write=True).order == 2
    s = mm.stats()
    assert nonzero(s.anon_fault_alloc) == {"64K": 1, "16K": 1}
    assert nonzero(s.anon_fault_fallback) == {}


# ---------------------------------------------------------- alloc failures
def test_alloc_failure_falls_to_next_enabled_order(mm_factory) -> None:
    mm = mm_factory(upstream(S16_64))
    a = place(mm, "1M")
    mm.inject_alloc_fail(4)
    r = mm.fault(a, write=True)
    assert r.order == 2
    s = mm.stats()
    assert nonzero(s.anon_fault_fallback) == {"64K": 1}
    assert nonzero(s.anon_fault_fallback_charge) == {}
    assert nonzero(s.anon_fault_alloc) == {"16K": 1}
    assert s.pgfault == 1 and s.faults_retried == 0


def test_alloc_failure_every_order_then_order0(mm_factory) -> None:
    mm = mm_factory(upstream(S16_64))
    a = place(mm, "1M")
    mm.inject_alloc_fail(4)
    mm.inject_alloc_fail(2)
    assert mm.fault(a, write=True).order == 0
    s = mm.stats()
    assert nonzero(s.anon_fault_fallback) == {"64K": 1, "16K": 1}
    assert nonzero(s.anon_fault_alloc) == {}
    assert s.folios_mapped["4K"] == 1


def test_injected_charge_failure(mm_factory) -> None:
    """Charge failure: fallback_charge[o] and fallback[o], then the next
    lower order (upstream charges inside the allocation loop)."""
    mm = mm_factory(upstream(S16_64))
    a = place(mm, "1M")
    mm.inject_charge_fail(4)
    assert mm.fault(a, write=True).order == 2
    s = mm.stats()
    assert nonzero(s.anon_fault_fallback_charge) == {"64K": 1}
    assert nonzero(s.anon_fault_fallback) == {"64K": 1}
    assert s.memcg_charged == 4 and s.memcg_max_events == 1
    # the refused 64K folio went back to the buddy allocator
    assert s.free_pages == s.ram_pages - 1 - 1 - 4   # zero page, PTE table, 16K folio


@pytest.mark.parametrize("limit,want_order,charge_fallbacks", [
    ("1M", 4, {}),
    ("40K", 2, {"64K": 1}),                 # 64K > 40K: 16K fits
    ("12K", 0, {"64K": 1, "16K": 1}),       # only order 0 fits
])
def test_real_memcg_limit(mm_factory, limit, want_order, charge_fallbacks) -> None:
    mm = mm_factory(upstream(S16_64), memcg_limit=limit)
    a = place(mm, "1M")
    assert mm.fault(a, write=True).order == want_order
    s = mm.stats()
    assert nonzero(s.anon_fault_fallback_charge) == charge_fallbacks
    assert nonzero(s.anon_fault_fallback) == charge_fallbacks
    assert s.memcg_charged == 1 << want_order


def test_memcg_exhausted_is_oom_with_state_intact(mm_factory) -> None:
    mm = mm_factory(upstream(S64), memcg_limit="64K")
    a = place(mm, "1M")
    assert mm.fault(a, write=True).order == 4
    before = mm.stats()
    lay = layout(mm, a, "1M")
    r = mm.fault(a + 64 * K, write=True)
    assert r.access == Access.OOM
    s = mm.stats()
    # 64K charge fails (counted), order 0 charge fails: OOM, not counted
    assert nonzero(s.anon_fault_fallback_charge) == {"64K": 1}
    assert nonzero(s.anon_fault_fallback) == {"64K": 1}
    assert s.faults_oom == 1
    assert s.min_flt == before.min_flt            # errors are not in ru_minflt
    assert s.pgfault == before.pgfault + 1        # but vmstat PGFAULT counts them
    assert s.mm_anonpages == before.mm_anonpages == 16
    assert s.free_pages == before.free_pages and s.memcg_charged == 16
    assert s.nr_ptes == before.nr_ptes
    assert layout(mm, a, "1M") == lay
    # raising memory.max lets the same access through
    mm.set_memcg_limit("128K")
    assert mm.fault(a + 64 * K, write=True).order == 4


def test_order0_alloc_failure_is_oom(mm_factory) -> None:
    mm = mm_factory(upstream(S64))
    a = place(mm, "1M")
    mm.inject_alloc_fail(4)
    mm.inject_alloc_fail(0)
    before = mm.stats()
    r = mm.fault(a, write=True)
    assert (r.access, r.vm_fault & 1) == (Access.OOM, 1)
    s = mm.stats()
    assert nonzero(s.anon_fault_fallback) == {"64K": 1}     # order 0 never counted
    assert s.mm_anonpages == 0 and s.min_flt == 0 and s.pgfault == 1 and s.faults_oom == 1
    assert s.memcg_charged == 0
    # pte_alloc() ran before the allocation: the table stays, as in the kernel
    assert s.nr_ptes == 1 and s.free_pages == before.free_pages - 1
    assert layout(mm, a, "64K") == "0+64K:none"
    # injections are one-shot: the retry succeeds
    assert mm.fault(a, write=True).order == 4


def test_order0_charge_failure_is_oom(mm_factory) -> None:
    mm = mm_factory(upstream(S64))
    a = place(mm, "1M")
    mm.inject_charge_fail(4)
    mm.inject_charge_fail(0)
    assert mm.fault(a, write=True).access == Access.OOM
    s = mm.stats()
    assert nonzero(s.anon_fault_fallback_charge) == {"64K": 1}
    assert s.mm_anonpages == 0 and s.memcg_charged == 0


# --------------------------------------------------------------- LAF v3 charge
def test_laf_v3_memcg_failure_is_oom_without_fallback(mm_factory) -> None:
    """Seed semantics: mem_cgroup_charge() once, after alloc_anon_folio(), in
    do_anonymous_page(); failure → oom_free_page.  No smaller order is tried
    although order 0 would fit under memory.max."""
    mm = mm_factory(Policy(kind="laf-v3", enabled="never"), memcg_limit="16K")
    a = place(mm, "1M")
    free0 = mm.stats().free_pages
    r = mm.fault(a, write=True)
    assert r.access == Access.OOM
    s = mm.stats()
    assert nonzero(s.anon_fault_fallback_charge) == {}
    assert s.memcg_charged == 0 and s.mm_anonpages == 0
    assert s.free_pages == free0 - 1              # only the PTE table
    mm.set_memcg_limit("32K")
    assert mm.fault(a, write=True).order == 3


def test_laf_v3_injected_charge_failure_is_oom(mm_factory) -> None:
    mm = mm_factory(Policy(kind="laf-v3", enabled="never"))
    a = place(mm, "1M")
    mm.inject_charge_fail(3)
    assert mm.fault(a, write=True).access == Access.OOM
    assert mm.fault(a, write=True).order == 3


# ------------------------------------------------------------ fragmentation
@pytest.mark.parametrize("k,want", [(0, 0), (1, 0), (2, 2), (3, 3), (5, 5), (8, 8)])
def test_fragmentation_orders_above_k_fail(mm_factory, k, want) -> None:
    """mm.fragment(k): no free block above order k.  Every enabled order
    above k is tried and counted as an allocation fallback; the PMD THP
    attempt fails first (thp_fault_fallback)."""
    mm = mm_factory(upstream(all_mthp(pmd="always")))
    a = place(mm, "2M")
    mm.fragment(k)
    r = mm.fault(a, write=True)
    assert r.order == want
    s = mm.stats()
    assert s.thp_fault_fallback == 1 and s.thp_fault_fallback_charge == 0
    failed = {f"{4 << o}K" if (4 << o) < 1024 else f"{(4 << o) // 1024}M": 1
              for o in range(max(want, 1) + 1, 10)}
    assert nonzero(s.anon_fault_fallback) == failed
    assert nonzero(s.anon_fault_fallback_charge) == {}
    assert s.pinned_pages > 0
    mm.unfragment()
    assert mm.stats().pinned_pages == 0
    b = place(mm, "2M")
    assert mm.fault(b, write=True).order == 9


def test_alloc_retries_and_faults_add_up(mm_factory) -> None:
    mm = mm_factory(upstream(all_mthp(pmd="never")))
    a = place(mm, "2M")
    mm.fragment(2)
    t = mm.touch_range(a, "2M", write=True)
    s = mm.stats()
    # every fault tries 1M..32K (where they fit and are empty) before 16K
    assert t.faulted == s.pgfault == 2 * M // (16 * K)
    assert s.folios_mapped["16K"] == 128
    assert sum(s.anon_fault_fallback.values()) == s.alloc_retries
