"""arm64 contpte (docs/kernel-semantics.md §1.12): set_ptes(nr > 1) gives PTE_CONT to
every CONT_PTES block it covers whole with VA start, VA end and PA aligned.
With 4K pages CONT_PTES = 16 (64K): mTHP of order >= 4 is contpte-mapped at
fault time, 16K/32K folios never are.  A zap that covers a block only in
part unfolds that block (contpte_try_unfold_partial); blocks fully inside
the range are cleared without unfolding.

Pictures: one character per PTE, ``.`` none, ``p`` present, ``C`` present
with PTE_CONT, ``z`` zero page.
"""
from __future__ import annotations

import pytest
from conftest import K, M, all_mthp, place, pte_picture, upstream


def arm(mm_factory, sizes, **kw):
    return mm_factory(upstream(sizes), arch="arm64", **kw)


def test_64k_folio_is_one_cont_block(mm_factory) -> None:
    mm = arm(mm_factory, {"64K": "always"})
    a = place(mm, "1M")
    mm.fault(a + 20 * K, write=True)
    # PTE 0..31: CCCCCCCCCCCCCCCC................
    assert pte_picture(mm, a, 32) == "C" * 16 + "." * 16
    assert mm.stats().contpte_blocks == 1


def test_128k_and_1m_folios(mm_factory) -> None:
    mm = arm(mm_factory, {"128K": "always", "1M": "always"})
    a = place(mm, "2M")
    b = place(mm, "128K", align="128K")
    mm.fault(a, write=True)                       # 1M: 16 blocks
    mm.fault(b, write=True)                       # 128K: 2 blocks
    assert pte_picture(mm, a, 256) == "C" * 256
    assert pte_picture(mm, b, 32) == "C" * 32
    assert mm.stats().contpte_blocks == 18


@pytest.mark.parametrize("size", ["16K", "32K"])
def test_small_mthp_never_cont(mm_factory, size) -> None:
    mm = arm(mm_factory, {size: "always"})
    a = place(mm, "1M")
    mm.touch_range(a, "128K", write=True)
    # PTE 0..31: pppppppppppppppppppppppppppppppp (16K/32K folios, no CONT)
    assert pte_picture(mm, a, 32) == "p" * 32
    assert mm.stats().contpte_blocks == 0


def test_order0_and_generic_arch_never_cont(mm_factory) -> None:
    mm = arm(mm_factory, {})
    a = place(mm, "1M")
    mm.touch_range(a, "64K", write=True)
    assert pte_picture(mm, a, 16) == "p" * 16
    gen = mm_factory(upstream({"64K": "always"}))
    b = place(gen, "1M")
    gen.fault(b, write=True)
    assert pte_picture(gen, b, 16) == "p" * 16
    assert gen.stats().contpte_blocks == 0


def test_partial_dontneed_unfolds_only_that_block(mm_factory) -> None:
    mm = arm(mm_factory, {"64K": "always"})
    a = place(mm, "1M")
    mm.touch_range(a, "128K", write=True)
    # PTE 0..31: CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC
    mm.madvise(a + 8 * K, "4K", "dontneed")
    # PTE 0..31: pp.pppppppppppppCCCCCCCCCCCCCCCC
    assert pte_picture(mm, a, 32) == "pp.ppppppppppppp" + "C" * 16
    assert mm.stats().contpte_unfolds == 1


def test_dontneed_straddling_two_blocks_unfolds_both(mm_factory) -> None:
    mm = arm(mm_factory, {"64K": "always"})
    a = place(mm, "1M")
    mm.touch_range(a, "192K", write=True)
    mm.madvise(a + 56 * K, "16K", "dontneed")
    # PTE 0..47: pppppppppppppp....pppppppppppppCCCCCCCCCCCCCCCC
    assert pte_picture(mm, a, 48) == "p" * 14 + "...." + "p" * 14 + "C" * 16
    assert mm.stats().contpte_unfolds == 2


def test_dontneed_whole_aligned_block_no_unfold(mm_factory) -> None:
    mm = arm(mm_factory, {"128K": "always"})
    a = place(mm, "1M")
    mm.fault(a, write=True)
    mm.madvise(a + 64 * K, "64K", "dontneed")
    # PTE 0..31: CCCCCCCCCCCCCCCC................  (the folio is partially mapped)
    assert pte_picture(mm, a, 32) == "C" * 16 + "." * 16
    s = mm.stats()
    assert s.contpte_unfolds == 0 and s.split_deferred["128K"] == 1


def test_shrinker_split_clears_cont(mm_factory) -> None:
    mm = arm(mm_factory, {"128K": "always"})
    a = place(mm, "1M")
    mm.fault(a, write=True)
    mm.madvise(a + 64 * K, "64K", "dontneed")
    assert mm.shrink_deferred_split() == 1
    assert pte_picture(mm, a, 32) == "p" * 16 + "." * 16


def test_cont_on_misaligned_vma_folios(mm_factory) -> None:
    """Folios are naturally aligned in VA and PA whatever the VMA start, so
    every 64K folio of a misaligned VMA is contpte-mapped; the edges are 4K."""
    mm = arm(mm_factory, {"64K": "always"})
    a = place(mm, "256K", align="64K", misalign="8K")
    mm.touch_range(a, "256K", write=True)
    pic = pte_picture(mm, a, 64)
    assert pic == "p" * 14 + "C" * 48 + "pp"


def test_16k_pages_cont_block_is_2m(mm_factory) -> None:
    """16K pages: CONT_PTES = 128 (2M); a 64K folio (order 2) gets no CONT, a
    2M folio (order 7) is one block."""
    mm = mm_factory(upstream({"64K": "always", "2M": "always"}), arch="arm64",
                    page_size="16K", ram="256M")
    assert mm.cont_pte_order == 7
    a = place(mm, "8M", align="8M")
    mm.fault(a, write=True)
    assert pte_picture(mm, a, 128) == "C" * 128
    mm.madvise(a, "2M", "dontneed")
    mm.fault(a + 1 * M, write=True)               # the 2M range is empty again
    assert mm.stats().contpte_blocks == 2
    b = place(mm, "64K", align="64K")
    mm.fault(b, write=True)
    assert pte_picture(mm, b, 4) == "pppp"


def test_64k_pages_cont_block_is_2m(mm_factory) -> None:
    mm = mm_factory(upstream({"2M": "always", "256K": "always"}), arch="arm64",
                    page_size="64K", ram="2G")
    assert mm.cont_pte_order == 5
    a = place(mm, "8M", align="8M")
    mm.fault(a, write=True)
    assert pte_picture(mm, a, 32) == "C" * 32
    b = place(mm, "256K", align="256K")
    mm.fault(b, write=True)
    assert pte_picture(mm, b, 4) == "pppp"


def test_pmd_thp_is_not_pte_mapped(mm_factory) -> None:
    mm = arm(mm_factory, all_mthp(pmd="always"))
    a = place(mm, "2M")
    mm.fault(a, write=True)
    assert pte_picture(mm, a, 16) == "H" * 16
    assert mm.stats().contpte_blocks == 0


def test_uffd_writeprotect_part_of_block_unfolds_it(mm_factory) -> None:
    """A contpte block must have one pgprot: write-protecting part of it
    unfolds it first; protecting whole blocks keeps PTE_CONT."""
    mm = arm(mm_factory, {"64K": "always"})
    a = place(mm, "1M")
    mm.uffd_register(a, "1M", "wp")
    mm.uffd_unregister(a, "1M")                  # armed VMAs get order 0 only
    mm.touch_range(a, "128K", write=True)
    mm.uffd_register(a, "1M", "wp")
    mm.uffd_writeprotect(a + 4 * K, "4K")
    # PTE 0..31: ppppppppppppppppCCCCCCCCCCCCCCCC
    assert pte_picture(mm, a, 32) == "p" * 16 + "C" * 16
    assert mm.stats().contpte_unfolds == 1
    mm.uffd_writeprotect(a + 64 * K, "64K")
    assert pte_picture(mm, a, 32) == "p" * 16 + "C" * 16
    assert mm.stats().contpte_unfolds == 1
    from pylaf import Access
    assert mm.fault(a + 4 * K, write=True).access == Access.USERFAULT
    assert mm.fault(a + 8 * K, write=True).access == Access.HIT
    assert mm.fault(a + 100 * K, write=True).access == Access.USERFAULT
