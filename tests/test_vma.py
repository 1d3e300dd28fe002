"""VMA lifecycle: placement (docs/kernel-semantics.md §1.10, kernel-findings #6),
split and merge, and folio-fit decisions against the VMA bounds after a
split (thp_vma_suitable_orders uses vm_start/vm_end)."""
from __future__ import annotations

import pytest
from conftest import K, M, layout, place, upstream

from pylaf import LafError, VmFlags

S64 = {"64K": "always"}


def spans(mm, base: int) -> list[tuple[int, int]]:
    return [(v.start - base, v.end - base) for v in mm.vmas()]


# -------------------------------------------------------------- placement
@pytest.mark.parametrize("length", ["2M", "4M", "6M"])
def test_pmd_multiple_lengths_are_pmd_aligned(mm_factory, length) -> None:
    mm = mm_factory(upstream(), ram="64M")
    mm.mmap("1M")                         # disturb the top-down cursor
    for _ in range(2):
        assert mm.mmap(length) % (2 * M) == 0


def test_other_lengths_get_ordinary_topdown_placement(mm_factory) -> None:
    """1M and 2052K are not padded: each lands right below the previous one."""
    mm = mm_factory(upstream())
    x = mm.mmap("1M")
    y = mm.mmap("1M")
    z = mm.mmap("2052K")
    assert y == x - 1 * M and z == y - 2052 * K
    assert x + 1 * M == mm.mmap_base


def test_finding6b_adjacent_mmaps_merge(mm_factory) -> None:
    mm = mm_factory(upstream())
    x = mm.mmap("1M")
    y = mm.mmap("1M")
    assert y == x - 1 * M
    assert spans(mm, y) == [(0, 2 * M)]
    mm.fault(x, write=True)
    mm.fault(y, write=True)
    assert spans(mm, y) == [(0, 2 * M)]


def test_different_prot_does_not_merge(mm_factory) -> None:
    mm = mm_factory(upstream())
    a = place(mm, "1M")
    mm.mmap("1M", addr=a + 1 * M, fixed=True, prot="r")
    assert spans(mm, a) == [(0, 1 * M), (1 * M, 2 * M)]


def test_hint_is_respected_for_pmd_multiple_length(mm_factory) -> None:
    """'mm: respect mmap hint address when aligning for THP' (6.13): with a
    hint, no THP padding, so a 2M hole at the hint is used even when the
    next 2M is mapped."""
    mm = mm_factory(upstream())
    a = place(mm, "2M")
    mm.munmap(a, "2M")
    mm.mmap("2M", addr=a + 2 * M, fixed=True)           # right after the hole
    assert mm.mmap("2M", addr=a) == a
    assert spans(mm, a) == [(0, 4 * M)]


def test_hint_used_when_free_else_topdown(mm_factory) -> None:
    mm = mm_factory(upstream())
    a = place(mm, "1M")
    b = mm.mmap("1M", addr=a + 4 * M)
    assert b == a + 4 * M
    c = mm.mmap("1M", addr=a + 512 * K)                 # overlaps a: hint ignored
    assert c != a + 512 * K and c + 1 * M <= mm.mmap_base


def test_mmap_fixed_noreplace_and_errors(mm_factory) -> None:
    mm = mm_factory(upstream())
    a = place(mm, "1M")
    with pytest.raises(LafError):
        mm.mmap("64K", addr=a + 64 * K, fixed=True)     # EEXIST
    with pytest.raises(LafError):
        mm.mmap("64K", addr=a + 1, fixed=True)          # unaligned
    with pytest.raises(LafError):
        mm.mmap("64K", addr=0x1000, fixed=True)         # below mmap_min_addr
    with pytest.raises(ValueError):
        mm.mmap(0)
    with pytest.raises(ValueError):
        mm.mmap("1M", prot="q")
    assert spans(mm, a) == [(0, 1 * M)]


def test_length_rounded_up_to_pages(mm_factory) -> None:
    mm = mm_factory(upstream())
    a = place(mm, 5000)
    assert spans(mm, a) == [(0, 8 * K)]


# ------------------------------------------------------------ split/merge
def test_madvise_splits_and_merges_back(mm_factory) -> None:
    mm = mm_factory(upstream())
    a = place(mm, "1M")
    mm.fault(a, write=True)
    mm.madvise(a + 64 * K, "64K", "nohugepage")
    assert spans(mm, a) == [(0, 64 * K), (64 * K, 128 * K), (128 * K, 1 * M)]
    assert mm.vmas()[1].flags & VmFlags.NOHUGEPAGE
    mm.madvise(a + 64 * K, "64K", "hugepage")
    assert spans(mm, a) == [(0, 64 * K), (64 * K, 128 * K), (128 * K, 1 * M)]
    mm.madvise(a, "1M", "hugepage")
    assert spans(mm, a) == [(0, 1 * M)]


def test_munmap_splits(mm_factory) -> None:
    mm = mm_factory(upstream())
    a = place(mm, "1M")
    mm.munmap(a + 128 * K, "64K")
    assert spans(mm, a) == [(0, 128 * K), (192 * K, 1 * M)]
    mm.munmap(a, "64K")
    assert spans(mm, a) == [(64 * K, 128 * K), (192 * K, 1 * M)]
    mm.munmap(a - 1 * M, "4M")                          # covers everything
    assert mm.vmas() == []
    mm.munmap(a, "1M")                                  # nothing mapped: fine


def test_folio_fit_uses_bounds_after_madvise_split(mm_factory) -> None:
    """64K=always ignores the hint, so the split changes only the bounds."""
    mm = mm_factory(upstream({"16K": "always", "64K": "always"}, enabled="never"))
    a = place(mm, "128K", align="64K")
    assert mm.fault(a + 64 * K, write=True).order == 4  # before the split: anon_vma
    mm.madvise(a, "8K", "hugepage")                     # VMAs [0,8K) [8K,128K)
    assert spans(mm, a) == [(0, 8 * K), (8 * K, 128 * K)]
    assert mm.fault(a + 16 * K, write=True).order == 2  # 64K [0,64K) crosses vm_start
    assert mm.fault(a + 8 * K, write=True).order == 0   # 16K [0,16K) crosses it too
    assert mm.fault(a + 4 * K, write=True).order == 0   # [0,8K) holds no 16K block
    # the halves share the anon_vma: equal flags again → merged
    mm.madvise(a + 8 * K, "120K", "hugepage")
    assert spans(mm, a) == [(0, 128 * K)]
    assert layout(mm, a, "128K") == "0+4K:none 4K+8K:4K 12K+4K:none 16K+16K:16K 32K+32K:none 64K+64K:64K"
    # after the merge the [0,64K) range still holds pages: only order 0/16K fit
    assert mm.fault(a + 32 * K, write=True).order == 2


def test_folio_fit_uses_bounds_after_munmap_split(mm_factory) -> None:
    mm = mm_factory(upstream(S64))
    a = place(mm, "128K", align="64K")
    mm.munmap(a, "8K")
    assert mm.fault(a + 8 * K, write=True).order == 0
    assert mm.fault(a + 64 * K, write=True).order == 4


def test_vma_boundary_inside_pmd_thp_splits_the_pmd(mm_factory) -> None:
    """vma_adjust_trans_huge(): the PMD mapping is split, the folio stays
    whole and fully mapped (by 512 PTEs), RSS unchanged."""
    mm = mm_factory(upstream(enabled="always"))
    a = place(mm, "2M")
    mm.fault(a, write=True)
    mm.madvise(a + 1 * M, "1M", "nohugepage")
    s = mm.stats()
    assert s.thp_split_pmd == 1 and s.split_deferred["2M"] == 0
    assert s.mm_anonpages == 512 and s.nr_anon["2M"] == 1
    f = mm.folio(a + 1 * M)
    assert f is not None and f.order == 9 and (f.mapcount, f.refcount) == (512, 512)
    assert layout(mm, a, "2M") == "0+2M:2M"


def test_madvise_on_pmd_boundary_does_not_split_pmd(mm_factory) -> None:
    mm = mm_factory(upstream(enabled="always"))
    a = place(mm, "4M")
    mm.fault(a, write=True)
    mm.fault(a + 2 * M, write=True)
    mm.madvise(a + 2 * M, "2M", "nohugepage")
    assert mm.stats().thp_split_pmd == 0
    assert len(mm.vmas()) == 2


def test_anon_vma_assigned_at_first_fault_and_shared_by_split(mm_factory) -> None:
    mm = mm_factory(upstream())
    a = place(mm, "1M")
    assert mm.vmas()[0].anon_vma == 0
    mm.fault(a)                           # a read fault needs no anon_vma
    assert mm.vmas()[0].anon_vma == 0
    mm.fault(a, write=True)
    av = mm.vmas()[0].anon_vma
    assert av != 0
    mm.madvise(a + 512 * K, "512K", "hugepage")
    assert [v.anon_vma for v in mm.vmas()] == [av, av]


def test_adjacent_mapping_joins_vma_with_anon_vma(mm_factory) -> None:
    mm = mm_factory(upstream())
    a = place(mm, "1M")
    mm.fault(a, write=True)
    mm.mmap("1M", addr=a + 1 * M, fixed=True)
    assert spans(mm, a) == [(0, 2 * M)]


def test_plain_1m_mmap_is_not_64k_aligned_and_gets_4k_edges(mm_factory) -> None:
    """An ordinary 1M mmap ends at mmap_base (page aligned only): the pages
    outside the 64K blocks that fit are order 0."""
    mm = mm_factory(upstream(S64))
    a = mm.mmap("1M")
    head = (-a) % (64 * K)
    tail = (a + 1 * M) % (64 * K)
    assert head and tail                  # the default mmap_base is not 64K aligned
    mm.touch_range(a, "1M", write=True)
    s = mm.stats()
    assert s.folios_mapped["4K"] == (head + tail) // (4 * K)
    assert s.folios_mapped["64K"] == (1 * M - head - tail) // (64 * K)
