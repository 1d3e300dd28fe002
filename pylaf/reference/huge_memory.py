"""The PMD level (mm/huge_memory.c): PMD-sized THP faults, the huge zero
folio, write faults on a PMD, zap and split of a PMD mapping, split_folio()
and the deferred-split queue with its shrinker (deferred_split_scan()).
"""
from __future__ import annotations

from typing import Optional

from pylaf.address_space import FaultKind
from pylaf.reference.abi import (
    PFN_SHIFT,
    PTE_CONT,
    PTE_DIRTY,
    PTE_PRESENT,
    PTE_PROTNONE,
    PTE_SPECIAL,
    PTE_TOUCHED,
    PTE_UFFD_WP,
    PTE_WRITE,
    PTE_YOUNG,
    VM_FAULT_FALLBACK,
    VM_FAULT_OOM,
    VM_FAULT_USERFAULT,
    VM_UFFD_MISSING,
    VM_UFFD_WP,
    VM_WRITE,
)
from pylaf.reference.mm_types import (
    HugePmd,
    MmStruct,
    PteTable,
    RefFolio,
    RefVma,
    linear_page_index,
    vma_address,
)
from pylaf.reference.pgtable import contpte_unfold
from pylaf.reference.rmap import (
    anon_vma_prepare,
    discard_folio,
    folio_add_anon_rmap_ptes,
    folio_add_new_anon_rmap,
    folio_put,
    folio_remove_rmap_pmd,
)


# ------------------------------------------------------------------ PMD faults
def get_huge_zero(mm: MmStruct) -> Optional[RefFolio]:
    """mm_get_huge_zero_folio(): allocated on first use, never freed."""
    if mm.huge_zero is None:
        pfn = mm.phys.buddy.alloc(mm.geo.pmd_order)
        if pfn is None:
            mm.cnt["thp_zero_page_alloc_failed"] += 1
            return None
        f = RefFolio(pfn, mm.geo.pmd_order, 0)
        f.huge_zero = True
        mm.huge_zero = f
        mm.cnt["thp_zero_page_alloc"] += 1
    return mm.huge_zero


def _count_pmd_fallback(mm: MmStruct, charge: bool) -> None:
    o = mm.geo.pmd_order
    mm.cnt["thp_fault_fallback"] += 1
    mm.per_order["anon_fault_fallback"][o] += 1
    if charge:
        mm.cnt["thp_fault_fallback_charge"] += 1
        mm.per_order["anon_fault_fallback_charge"][o] += 1


def vma_alloc_anon_folio_pmd(mm: MmStruct, index: int) -> Optional[RefFolio]:
    """vma_alloc_anon_folio_pmd(): allocate and charge (folio->index ``index``);
    a failure counts a fallback."""
    o = mm.geo.pmd_order
    pfn = mm.phys.alloc_pages(o)
    if pfn is None:
        _count_pmd_fallback(mm, charge=False)
        return None
    if not mm.phys.try_charge(1 << o, o):
        mm.phys.free_pages(pfn, o)
        _count_pmd_fallback(mm, charge=True)
        return None
    return RefFolio(pfn, o, index)


def map_anon_folio_pmd(mm: MmStruct, vma: RefVma, idx: int, folio: RefFolio, table: int,
                       touched: Optional[bytearray] = None) -> None:
    """map_anon_folio_pmd(): maybe_pmd_mkwrite(pmd_mkdirty(entry)) + accounting.

    deferred_split_folio(folio, false) queues it for the "underused" shrinker,
    which never splits it with max_ptes_none=511: not modelled.
    """
    flags = PTE_PRESENT | PTE_DIRTY | PTE_YOUNG
    if vma.flags & VM_WRITE:
        flags |= PTE_WRITE
    ent = HugePmd(folio, flags, table, mm.geo.ptrs_per_pte)
    if touched is not None:
        ent.touched = touched
    mm.pmd[idx] = ent
    folio.refcount = 1
    folio_add_new_anon_rmap(mm, folio, pmd=True)
    mm.add_anon_rss(folio.nr)
    mm.cnt["thp_fault_alloc"] += 1
    mm.per_order["anon_fault_alloc"][folio.order] += 1
    mm.per_order["folios_mapped"][folio.order] += 1


def _huge_zero_pmd(mm: MmStruct, vma: RefVma, idx: int) -> tuple[int, FaultKind]:
    """do_huge_pmd_anonymous_page(), read fault with use_zero_page: the huge zero PMD."""
    table = mm.phys.alloc_table_frame()
    if table is None:
        return VM_FAULT_OOM, FaultKind.PMD_ZERO
    zf = get_huge_zero(mm)
    if zf is None:
        mm.phys.free_pages(table, 0)
        mm.cnt["thp_fault_fallback"] += 1
        return VM_FAULT_FALLBACK, FaultKind.NONE
    if vma.flags & VM_UFFD_MISSING:
        mm.phys.free_pages(table, 0)
        return VM_FAULT_USERFAULT, FaultKind.PMD_ZERO
    mm.pmd[idx] = HugePmd(zf, PTE_PRESENT | PTE_SPECIAL | PTE_YOUNG, table, mm.geo.ptrs_per_pte)
    mm.cnt["nr_ptes"] += 1
    mm.cnt["huge_zero_pmd_maps"] += 1
    return 0, FaultKind.PMD_ZERO


def do_huge_pmd_anonymous_page(mm: MmStruct, vma: RefVma, addr: int,
                               write: bool) -> tuple[int, FaultKind]:
    """do_huge_pmd_anonymous_page(): the PMD must fit the VMA; a read maps the
    huge zero folio (use_zero_page), a write a new THP, else VM_FAULT_FALLBACK."""
    g = mm.geo
    haddr = addr & ~(g.pmd_size - 1)
    idx = g.pmd_index(addr)
    if haddr < vma.start or haddr + g.pmd_size > vma.end:
        return VM_FAULT_FALLBACK, FaultKind.NONE
    anon_vma_prepare(mm, vma)
    if not write and mm.pol.use_zero_page:
        return _huge_zero_pmd(mm, vma, idx)
    folio = vma_alloc_anon_folio_pmd(mm, linear_page_index(g, vma, haddr))
    if folio is None:
        return VM_FAULT_FALLBACK, FaultKind.NONE
    table = mm.phys.alloc_table_frame()
    if table is None:
        discard_folio(mm, folio)
        return VM_FAULT_OOM, FaultKind.PMD
    if vma.flags & VM_UFFD_MISSING:
        discard_folio(mm, folio)
        mm.phys.free_pages(table, 0)
        return VM_FAULT_USERFAULT, FaultKind.PMD
    map_anon_folio_pmd(mm, vma, idx, folio, table)
    mm.cnt["nr_ptes"] += 1
    return 0, FaultKind.PMD


def do_huge_pmd_wp_page(mm: MmStruct, vma: RefVma, addr: int, idx: int) -> tuple[int, FaultKind]:
    """do_huge_pmd_wp_page(): uffd-wp hands over; the huge zero folio is
    replaced by a new THP (or split, falling back to PTEs); an anon THP is
    reused when its head is PageAnonExclusive or its only reference is this
    PMD (folio_ref_count() == 1), else the PMD is split (__split_huge_pmd())
    and the fault falls back to the PTE level (do_wp_page() in the same fault)."""
    ent = mm.pmd[idx]
    assert isinstance(ent, HugePmd)
    if ent.flags & PTE_UFFD_WP and vma.flags & VM_UFFD_WP:
        return VM_FAULT_USERFAULT, FaultKind.PMD_WP
    if ent.folio.huge_zero:
        folio = vma_alloc_anon_folio_pmd(mm, linear_page_index(mm.geo, vma, addr & ~(mm.geo.pmd_size - 1)))
        if folio is not None:
            ntouched = sum(ent.touched)
            mm.cnt["zero_pages_touched"] -= ntouched
            mm.cnt["pages_touched"] += ntouched
            del mm.pmd[idx]
            map_anon_folio_pmd(mm, vma, idx, folio, ent.table, ent.touched)
            return 0, FaultKind.PMD_WP
        split_huge_pmd(mm, idx)
        return VM_FAULT_FALLBACK, FaultKind.PMD_WP
    folio = ent.folio
    if not folio.anon_exclusive[0]:
        if folio.refcount != 1:                 # another mapping or reference
            split_huge_pmd(mm, idx)
            return VM_FAULT_FALLBACK, FaultKind.PMD_WP
        folio.anon_exclusive[0] = 1             # folio_move_anon_rmap() + SetPageAnonExclusive()
    ent.flags |= PTE_WRITE | PTE_DIRTY | PTE_YOUNG
    return 0, FaultKind.PMD_WP


# ------------------------------------------------------------- zap and split
def zap_huge_pmd(mm: MmStruct, idx: int) -> None:
    """zap_huge_pmd(): clear the PMD, free the deposited table, drop the reference."""
    ent = mm.pmd.pop(idx)
    assert isinstance(ent, HugePmd)
    mm.phys.free_pages(ent.table, 0)                     # zap_deposited_table()
    mm.cnt["nr_ptes"] -= 1
    f = ent.folio
    ntouched = sum(ent.touched)
    if f.huge_zero:
        mm.cnt["zero_pages_touched"] -= ntouched
        return
    mm.cnt["pages_touched"] -= ntouched
    mm.cnt["mm_anonpages"] -= f.nr
    if folio_remove_rmap_pmd(mm, f) and not f.partially_mapped:
        deferred_split_folio(mm, f, True)
    folio_put(mm, f)


def split_huge_pmd_if_needed(mm: MmStruct, addr: int) -> None:
    """split_huge_pmd_if_needed(): a VMA boundary at ``addr`` inside a PMD mapping."""
    if addr & (mm.geo.pmd_size - 1):
        idx = mm.geo.pmd_index(addr)
        if isinstance(mm.pmd.get(idx), HugePmd):
            split_huge_pmd(mm, idx)


def split_huge_pmd(mm: MmStruct, idx: int) -> None:
    """__split_huge_pmd_locked(): the PMD becomes the deposited PTE table,
    filled with the same pages (contpte blocks on arm64): folio_ref_add(nr - 1),
    folio_add_anon_rmap_ptes() (exclusive if the head was), then
    folio_remove_rmap_pmd()."""
    ent = mm.pmd.pop(idx)
    assert isinstance(ent, HugePmd)
    g = mm.geo
    mm.cnt["thp_split_pmd"] += 1
    table = PteTable(ent.table, g.ptrs_per_pte)
    f = ent.folio
    if f.huge_zero:
        bits = PTE_PRESENT | PTE_SPECIAL | PTE_YOUNG | (ent.flags & (PTE_UFFD_WP | PTE_PROTNONE))
        for k in range(g.ptrs_per_pte):
            table.ptes[k] = bits | (PTE_TOUCHED if ent.touched[k] else 0)
    else:
        bits = ent.flags & (PTE_PRESENT | PTE_WRITE | PTE_DIRTY | PTE_YOUNG | PTE_UFFD_WP | PTE_PROTNONE)
        for k in range(g.ptrs_per_pte):
            table.ptes[k] = ((f.pfn + k) << PFN_SHIFT) | bits | (PTE_TOUCHED if ent.touched[k] else 0)
        f.refcount += f.nr - 1
        folio_add_anon_rmap_ptes(mm, f, 0, f.nr, bool(f.anon_exclusive[0]))
        if folio_remove_rmap_pmd(mm, f) and not f.partially_mapped:
            deferred_split_folio(mm, f, True)
        cn = g.cont_nr
        if cn:
            for b in range(0, g.ptrs_per_pte, cn):
                for k in range(b, b + cn):
                    table.ptes[k] |= PTE_CONT
                mm.cnt["contpte_blocks"] += 1
    table.used = g.ptrs_per_pte
    mm.pmd[idx] = table


def _split_off_page(mm: MmStruct, f: RefFolio, k: int) -> None:
    """split_folio() of page ``k``: freed if no PTE maps it, else an order-0
    folio with the page's mapcount (one reference per mapping) and
    PageAnonExclusive; every PTE mapping it loses the contpte bit (remap_page()
    after the split), found by the rmap walk (rmap_walk_anon():
    vma_address() of the page's index in every VMA that may map it: after
    mremap() the address is not ``index << PAGE_SHIFT``)."""
    g = mm.geo
    pfn = f.pfn + k
    if not f.page_mapcount[k]:
        del mm.folio_of[pfn]
        mm.machine.lru_pages -= 1
        mm.phys.uncharge(1)
        mm.phys.free_pages(pfn, 0)
        return
    sub = RefFolio(pfn, 0, f.index + k)
    sub.page_mapcount[0] = sub.refcount = f.page_mapcount[k]
    sub.anon_exclusive[0] = f.anon_exclusive[k]
    mm.folio_of[pfn] = sub
    for other in mm.machine.mms:
        for vma in other.vma_list:
            va = vma_address(g, vma, sub.index)
            table = None if va is None else other.pte_table(va)
            if va is None or table is None:
                continue
            raw = table.ptes[g.pte_index(va)]
            if raw & PTE_CONT and raw >> PFN_SHIFT == pfn:
                contpte_unfold(other, table, g.pte_index(va))


def split_folio(mm: MmStruct, f: RefFolio) -> None:
    """split_folio() to order 0 (the folio is only PTE-mapped, in any number
    of mms: it is on the queue only when partially mapped); pages no PTE
    maps are freed; the PTEs that map the folio are no longer contpte."""
    order = f.order
    mm.per_order["split"][order] += 1
    if order == mm.geo.pmd_order:
        mm.cnt["thp_split_page"] += 1
    if f.queued:
        del mm.deferred[f]
        f.queued = False
    if f.partially_mapped:
        mm.per_order["nr_anon_partially_mapped"][order] -= 1
    if order >= 2:
        mm.per_order["nr_anon"][order] -= 1
    for k in range(f.nr):
        _split_off_page(mm, f, k)


def deferred_split_folio(mm: MmStruct, f: RefFolio, partially_mapped: bool) -> None:
    """deferred_split_folio(): queue a large folio (and mark it partially mapped)."""
    if f.order <= 1:
        return
    if partially_mapped and not f.partially_mapped:
        f.partially_mapped = True
        if f.order == mm.geo.pmd_order:
            mm.cnt["thp_deferred_split_page"] += 1
        mm.per_order["split_deferred"][f.order] += 1
        mm.per_order["nr_anon_partially_mapped"][f.order] += 1
    if not f.queued:
        f.queued = True
        mm.deferred[f] = None


def deferred_split_scan(mm: MmStruct) -> int:
    """deferred_split_scan(): split the partially mapped folios on the queue,
    drop the others from it; returns the number split."""
    nr_split = 0
    for f in list(mm.deferred):
        if not f.partially_mapped:
            del mm.deferred[f]
            f.queued = False
            continue
        split_folio(mm, f)
        nr_split += 1
    return nr_split
