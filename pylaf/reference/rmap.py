"""Folio life and reverse mapping bookkeeping (mm/rmap.c anon_vma_prepare(),
folio_add_new_anon_rmap(); mm/swap.c folios_put() -> free to the buddy).

One mm and no fork: an anon_vma is only an id, shared with a neighbour the
way find_mergeable_anon_vma() allows.
"""
from __future__ import annotations

from pylaf.reference.abi import VM_EXEC, VM_READ, VM_WRITE
from pylaf.reference.mm_types import MmStruct, RefFolio, RefVma


def anon_vma_prepare(mm: MmStruct, vma: RefVma) -> None:
    """anon_vma_prepare() -> find_mergeable_anon_vma(): reuse the anon_vma of an
    adjacent VMA whose flags differ at most in VM_READ/WRITE/EXEC (next first)."""
    if vma.anon_vma:
        return
    i = mm.vma_index(vma)
    for j in (i + 1, i - 1):
        if 0 <= j < len(mm.vma_list):
            o = mm.vma_list[j]
            a, b = (vma, o) if j > i else (o, vma)
            if (o.anon_vma and a.end == b.start
                    and not ((a.flags ^ b.flags) & ~(VM_READ | VM_WRITE | VM_EXEC))):
                vma.anon_vma = o.anon_vma
                return
    vma.anon_vma = mm.next_anon_vma
    mm.next_anon_vma += 1


def folio_add_new_anon(mm: MmStruct, f: RefFolio) -> None:
    """folio_add_new_anon_rmap() + folio_add_lru_vma(): the folio's pages are
    known by PFN, on the LRU, and counted in nr_anon (orders >= 2)."""
    for i in range(f.nr):
        mm.folio_of[f.pfn + i] = f
    mm.cnt["lru_pages"] += f.nr
    if f.order >= 2:
        mm.per_order["nr_anon"][f.order] += 1


def free_folio(mm: MmStruct, f: RefFolio) -> None:
    """The last reference went: dequeue, uncharge, free to the buddy allocator."""
    if f.queued:
        del mm.deferred[f]
        f.queued = False
    if f.partially_mapped:
        mm.per_order["nr_anon_partially_mapped"][f.order] -= 1
        f.partially_mapped = False
    if f.order >= 2:
        mm.per_order["nr_anon"][f.order] -= 1
    for i in range(f.nr):
        del mm.folio_of[f.pfn + i]
    mm.cnt["lru_pages"] -= f.nr
    mm.phys.uncharge(f.nr)
    mm.phys.free_pages(f.pfn, f.order)


def discard_folio(mm: MmStruct, folio: RefFolio) -> None:
    """folio_put() of a folio that was charged but never mapped."""
    mm.phys.uncharge(folio.nr)
    mm.phys.free_pages(folio.pfn, folio.order)
