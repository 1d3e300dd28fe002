"""Page tables: PMD/PTE table allocation and freeing (mm/memory.c __pte_alloc(),
__pmd_alloc(), free_pgtables(), free_pgd_range()), single-PTE set/clear, and the
arm64 contiguous-PTE bit (arch/arm64/mm/contpte.c contpte_try_fold(),
contpte_try_unfold()).

Modelling choices shared with the C core: a PTE table takes one order-0
frame (not charged to the memcg); PMD tables live in host memory and are only
counted (``nr_pmds``).  The PMD level is a flat dict keyed by PMD index.
"""
from __future__ import annotations

from pylaf.reference.abi import (
    FLAG_MASK,
    MASK64,
    ORDER_HUGE_ZERO,
    ORDER_NONE,
    ORDER_ZERO,
    PFN_SHIFT,
    PTE_CONT,
    PTE_DIRTY,
    PTE_HUGE,
    PTE_PRESENT,
    PTE_SPECIAL,
    PTE_TOUCHED,
    PTE_YOUNG,
)
from pylaf.reference.mm_types import HugePmd, MmStruct, PteTable, RefVma


# ------------------------------------------------------------------ allocation
def pmd_alloc(mm: MmStruct, addr: int) -> None:
    """__pmd_alloc(): the PMD table of the PUD range holding ``addr``."""
    pud = addr >> mm.geo.pud_shift
    if pud not in mm.pmd_tables:
        mm.pmd_tables.add(pud)
        mm.cnt["nr_pmds"] += 1


def pte_alloc(mm: MmStruct, idx: int) -> bool:
    """__pte_alloc(): a new PTE table for PMD ``idx``; False on OOM."""
    pfn = mm.phys.alloc_table_frame()
    if pfn is None:
        return False
    mm.pmd[idx] = PteTable(pfn, mm.geo.ptrs_per_pte)
    mm.cnt["nr_ptes"] += 1
    return True


def free_pte_table(mm: MmStruct, idx: int) -> None:
    """free_pte_range(): drop the PTE table of PMD ``idx``."""
    ent = mm.pmd.pop(idx)
    assert isinstance(ent, PteTable)
    mm.phys.free_pages(ent.pfn, 0)
    mm.cnt["nr_ptes"] -= 1


# ----------------------------------------------------------------- free_pgtables
def free_pgtables(mm: MmStruct, detached: list[RefVma], floor: int, ceiling: int) -> None:
    """free_pgtables(): VMAs closer than a PMD share one free_pgd_range() call."""
    i = 0
    while i < len(detached):
        vma = detached[i]
        addr = vma.start
        j = i + 1
        while j < len(detached) and detached[j].start <= vma.end + mm.geo.pmd_size:
            vma = detached[j]
            j += 1
        nxt_start = detached[j].start if j < len(detached) else ceiling
        free_pgd_range(mm, addr, vma.end, floor, nxt_start)
        i = j


def _last(a: int) -> int:
    """``a - 1`` as an unsigned long (the kernel's ``end - 1`` comparisons)."""
    return (a - 1) & MASK64


def free_pgd_range(mm: MmStruct, addr: int, end: int, floor: int, ceiling: int) -> None:
    """free_pgd_range(): clip to [floor, ceiling) at PMD granularity, then one
    free_pmd_range() per PUD range that has a PMD table."""
    g = mm.geo
    pmd_mask = ~(g.pmd_size - 1) & MASK64
    addr &= pmd_mask
    if addr < floor:
        addr += g.pmd_size
        if not addr & MASK64:
            return
    if ceiling:
        ceiling &= pmd_mask
        if not ceiling:
            return
    if _last(end) > _last(ceiling):
        end -= g.pmd_size
    if addr > _last(end):
        return
    a = addr
    while True:
        nxt = (a + g.pud_size) & ~(g.pud_size - 1)
        if _last(nxt) >= _last(end):
            nxt = end
        if (a >> g.pud_shift) in mm.pmd_tables:
            free_pmd_range(mm, a, nxt, floor, ceiling)
        a = nxt
        if a == end:
            break


def free_pmd_range(mm: MmStruct, addr: int, end: int, floor: int, ceiling: int) -> None:
    """free_pmd_range(): free the PTE tables, then the PMD table itself when
    its whole PUD range lies inside [floor, ceiling)."""
    g = mm.geo
    start = addr
    a = addr
    while True:
        nxt = (a + g.pmd_size) & ~(g.pmd_size - 1)
        if _last(nxt) >= _last(end):
            nxt = end
        if isinstance(mm.pmd.get(a >> g.pmd_shift), PteTable):
            free_pte_table(mm, a >> g.pmd_shift)
        a = nxt
        if a == end:
            break
    pud_mask = ~(g.pud_size - 1) & MASK64
    start &= pud_mask
    if start < floor:
        return
    if ceiling:
        ceiling &= pud_mask
        if not ceiling:
            return
    if _last(end) > _last(ceiling):
        return
    mm.pmd_tables.discard(start >> g.pud_shift)
    mm.cnt["nr_pmds"] -= 1


# ---------------------------------------------------------------------- contpte
def contpte_unfold(mm: MmStruct, table: PteTable, i: int) -> None:
    """contpte_try_unfold(): clear PTE_CONT on the block holding entry ``i``."""
    cn = mm.geo.cont_nr
    if not cn or not table.ptes[i] & PTE_CONT:
        return
    b = i & ~(cn - 1)
    for j in range(b, b + cn):
        table.ptes[j] &= ~PTE_CONT
    mm.cnt["contpte_unfolds"] += 1


def contpte_unfold_partial(mm: MmStruct, table: PteTable, i0: int, i1: int) -> None:
    """Unfold the blocks that [i0, i1) covers only partly (at either end)."""
    cn = mm.geo.cont_nr
    if not cn or i0 >= i1:
        return
    if i0 & (cn - 1):
        contpte_unfold(mm, table, i0)
    if i1 & (cn - 1):
        contpte_unfold(mm, table, i1 - 1)


def _foldable(mm: MmStruct, table: PteTable, b: int, cn: int) -> bool:
    """The cn entries from ``b`` map consecutive pages of one folio, same bits."""
    pte = table.ptes[b + cn - 1]
    first_pfn = (pte >> PFN_SHIFT) - (cn - 1)
    folio = mm.folio_of.get(pte >> PFN_SHIFT)
    if folio is None or folio.pfn > first_pfn or folio.pfn + folio.nr < first_pfn + cn:
        return False
    ign = PTE_YOUNG | PTE_DIRTY | PTE_TOUCHED
    ref = pte & FLAG_MASK & ~ign
    for k in range(cn):
        p = table.ptes[b + k]
        if not p & PTE_PRESENT or (p >> PFN_SHIFT) != first_pfn + k or (p & FLAG_MASK & ~ign) != ref:
            return False
    return True


def contpte_try_fold(mm: MmStruct, table: PteTable, i: int) -> None:
    """contpte_try_fold() after a single-PTE set_ptes() of entry ``i``: only
    when ``i`` is the last entry of its block and maps the last page of an
    aligned block of PFNs."""
    cn = mm.geo.cont_nr
    if not cn:
        return
    pte = table.ptes[i]
    mask = cn - 1
    if (i & mask) != mask or ((pte >> PFN_SHIFT) & mask) != mask:
        return
    if not pte & PTE_PRESENT or pte & (PTE_CONT | PTE_SPECIAL):
        return
    b = i - mask
    if not _foldable(mm, table, b, cn):
        return
    for k in range(cn):
        table.ptes[b + k] |= PTE_CONT
    mm.cnt["contpte_blocks"] += 1


def contpte_set_ptes(mm: MmStruct, table: PteTable, i: int, nr: int) -> None:
    """set_ptes() of ``nr`` entries from ``i`` that are already written: with
    nr == 1, contpte_try_fold(); else contpte_set_ptes() sets PTE_CONT on
    every whole block inside the range whose first PFN is block-aligned
    (and counts it), and clears it elsewhere in the range."""
    cn = mm.geo.cont_nr
    if not cn:
        return
    if nr == 1:
        table.ptes[i] &= ~PTE_CONT
        contpte_try_fold(mm, table, i)
        return
    for j in range(i, i + nr):
        table.ptes[j] &= ~PTE_CONT
    b = (i + cn - 1) & ~(cn - 1)
    while b + cn <= i + nr:
        if not (table.ptes[b] >> PFN_SHIFT) & (cn - 1):
            for j in range(b, b + cn):
                table.ptes[j] |= PTE_CONT
            mm.cnt["contpte_blocks"] += 1
        b += cn


# ------------------------------------------------------------------ single PTEs
def set_pte(mm: MmStruct, table: PteTable, i: int, raw: int) -> None:
    """set_ptes(nr=1): unfold, write, try to fold."""
    contpte_unfold(mm, table, i)
    if not table.ptes[i]:
        table.used += 1
    table.ptes[i] = raw
    contpte_try_fold(mm, table, i)


def clear_pte(table: PteTable, i: int) -> int:
    """ptep_get_and_clear(): the old entry."""
    old = table.ptes[i]
    if old:
        table.ptes[i] = 0
        table.used -= 1
    return old


def lookup(mm: MmStruct, addr: int) -> tuple[int, int]:
    """(raw entry, order code) of the page at ``addr``, as laf_read_ptes() reports it."""
    g = mm.geo
    ent = mm.pmd.get(g.pmd_index(addr))
    if ent is None:
        return 0, ORDER_NONE
    k = g.pte_index(addr)
    if isinstance(ent, HugePmd):
        raw = ((ent.folio.pfn + k) << PFN_SHIFT) | ent.flags | PTE_HUGE
        if ent.touched[k]:
            raw |= PTE_TOUCHED
        return raw, (ORDER_HUGE_ZERO if ent.folio.huge_zero else g.pmd_order)
    raw = ent.ptes[k]
    if not raw:
        return 0, ORDER_NONE
    if raw & PTE_SPECIAL:
        return raw, ORDER_ZERO
    return raw, mm.folio_of[raw >> PFN_SHIFT].order
