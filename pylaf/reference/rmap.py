"""Reverse mapping and folio life (mm/rmap.c, include/linux/rmap.h as of
6.18 with CONFIG_PAGE_MAPCOUNT=y and CONFIG_MM_ID=y): anon_vma_prepare(), the
mapcount bookkeeping of folio_add_new_anon_rmap(), folio_add_anon_rmap_ptes(),
folio_try_dup_anon_rmap_*() (fork), __folio_remove_rmap() with its
"partially mapped" verdict, the MM-id slots of
folio_add_return_large_mapcount() / folio_sub_return_large_mapcount(), and
folio_put() -> free to the buddy allocator.

The model has no GUP: folio_needs_cow_for_dma() is always false, so
folio_try_dup_anon_rmap_*() never fails (the kernel copies a maybe-pinned
exclusive page at fork instead).
"""
from __future__ import annotations

from pylaf.reference.abi import VM_EXEC, VM_READ, VM_WRITE
from pylaf.reference.mm_types import MmStruct, RefFolio, RefVma

#: the vm_flags anon_vma_compatible() (mm/vma.c) lets differ: VM_ACCESS_FLAGS
#: (and VM_SOFTDIRTY, not modelled).  VM_ACCOUNT is compared, so a read-only
#: mapping next to a writable one does not share its anon_vma.
ANON_VMA_COMPATIBLE_IGNORES = VM_READ | VM_WRITE | VM_EXEC


def anon_vma_prepare(mm: MmStruct, vma: RefVma) -> None:
    """anon_vma_prepare() -> find_mergeable_anon_vma(): reuse the anon_vma of an
    adjacent VMA whose flags differ at most in VM_READ/WRITE/EXEC and whose
    vm_pgoff continues (anon_vma_compatible()), next first."""
    if vma.anon_vma:
        return
    i = mm.vma_index(vma)
    shift = mm.geo.page_shift
    for j in (i + 1, i - 1):
        if 0 <= j < len(mm.vma_list):
            o = mm.vma_list[j]
            a, b = (vma, o) if j > i else (o, vma)
            if (o.anon_vma and a.end == b.start
                    and b.pgoff == a.pgoff + ((b.start - a.start) >> shift)
                    and not ((a.flags ^ b.flags) & ~ANON_VMA_COMPATIBLE_IGNORES)):
                vma.anon_vma = o.anon_vma
                return
    vma.anon_vma = mm.next_anon_vma
    mm.next_anon_vma += 1


# ----------------------------------------------------------- the MM-id slots
def folio_add_large_mapcount(f: RefFolio, diff: int, mm: MmStruct) -> None:
    """folio_add_return_large_mapcount(): ``diff`` more mappings by ``mm``.
    Its own slot grows; else it takes a free slot (slot 0: shared if other
    mappings existed; slot 1: shared); else (a third mm) only shared."""
    f.large_mapcount += diff
    for i in (0, 1):
        if f.mm_id[i] == mm.mm_id:
            f.mm_id_mapcount[i] += diff
            return
    if f.mm_id[0] == 0:
        f.mm_id[0], f.mm_id_mapcount[0] = mm.mm_id, diff
        if f.large_mapcount != diff:
            f.shared = True
    elif f.mm_id[1] == 0:
        f.mm_id[1], f.mm_id_mapcount[1] = mm.mm_id, diff
        f.shared = True
    else:
        f.shared = True


def folio_sub_large_mapcount(f: RefFolio, diff: int, mm: MmStruct) -> None:
    """folio_sub_return_large_mapcount(): ``mm`` drops ``diff`` mappings.  A
    slot that goes negative is freed (its count reset); the shared bit
    clears when one slot holds every remaining mapping (or none is left)."""
    f.large_mapcount -= diff
    for i in (0, 1):
        if f.mm_id[i] == mm.mm_id:
            f.mm_id_mapcount[i] -= diff
            if f.mm_id_mapcount[i] > 0:
                return
            f.mm_id[i], f.mm_id_mapcount[i] = 0, 0
            break
    # the kernel compares the stored (minus one) values: a free slot holds -1,
    # which equals an unmapped folio's -1
    stored = [c - 1 if f.mm_id[i] else -1 for i, c in enumerate(f.mm_id_mapcount)]
    if f.large_mapcount - 1 in stored:
        f.shared = False


# ------------------------------------------------------------------- adding
def folio_add_new_anon_rmap(mm: MmStruct, f: RefFolio, pmd: bool = False) -> None:
    """folio_add_new_anon_rmap(RMAP_EXCLUSIVE) + folio_add_lru_vma(): the first
    mapping(s) of a new folio, every page (the head for a PMD) exclusive;
    the folio is known by PFN, on the LRU, and counted in nr_anon."""
    if pmd:
        f.entire_mapcount = 1
        f.large_mapcount = 1
        f.mm_id[0], f.mm_id_mapcount[0] = mm.mm_id, 1
        f.anon_exclusive[0] = 1
    else:
        f.page_mapcount = [1] * f.nr
        f.anon_exclusive = bytearray(b"\x01" * f.nr)
        if f.large:
            f.large_mapcount = f.nr
            f.nr_pages_mapped = f.nr
            f.mm_id[0], f.mm_id_mapcount[0] = mm.mm_id, f.nr
    for i in range(f.nr):
        mm.folio_of[f.pfn + i] = f
    mm.machine.lru_pages += f.nr
    if f.order >= 2:
        mm.per_order["nr_anon"][f.order] += 1


def folio_add_anon_rmap_ptes(mm: MmStruct, f: RefFolio, k: int, nr: int, exclusive: bool) -> None:
    """folio_add_anon_rmap_ptes() of pages k..k+nr-1 (__split_huge_pmd_locked())."""
    for j in range(k, k + nr):
        if f.page_mapcount[j] == 0:
            f.nr_pages_mapped += 1
        f.page_mapcount[j] += 1
        if exclusive:
            f.anon_exclusive[j] = 1
    if f.large:
        folio_add_large_mapcount(f, nr, mm)


def folio_try_dup_anon_rmap_ptes(child: MmStruct, f: RefFolio, k: int, nr: int) -> None:
    """folio_try_dup_anon_rmap_ptes() (fork): clear PageAnonExclusive, one more
    mapping of each page (``_nr_pages_mapped`` is unchanged: every page was
    mapped already), the child's MM-id slot."""
    for j in range(k, k + nr):
        f.anon_exclusive[j] = 0
        f.page_mapcount[j] += 1
    if f.large:
        folio_add_large_mapcount(f, nr, child)


def folio_try_dup_anon_rmap_pmd(child: MmStruct, f: RefFolio) -> None:
    """folio_try_dup_anon_rmap_pmd() (fork): the head stops being exclusive,
    one more entire mapping."""
    f.anon_exclusive[0] = 0
    f.entire_mapcount += 1
    folio_add_large_mapcount(f, 1, child)


# ------------------------------------------------------------------ removing
def folio_remove_rmap_ptes(mm: MmStruct, f: RefFolio, k: int, nr: int) -> bool:
    """__folio_remove_rmap(PTE) of pages k..k+nr-1; True when the folio is
    now partially mapped: some page lost its last mapping (over every mm)
    and ``_nr_pages_mapped`` stays above 0 with no entire mapping."""
    if not f.large:
        f.page_mapcount[k] -= 1
        return False
    folio_sub_large_mapcount(f, nr, mm)
    last = 0
    for j in range(k, k + nr):
        f.page_mapcount[j] -= 1
        if f.page_mapcount[j] == 0:
            last += 1
    f.nr_pages_mapped -= last
    return bool(last) and not f.entire_mapcount and f.nr_pages_mapped > 0


def folio_remove_rmap_pmd(mm: MmStruct, f: RefFolio) -> bool:
    """__folio_remove_rmap(PMD); True when the last entire mapping went while
    some, not all, pages stay PTE-mapped (``nr && nr < nr_pmdmapped``)."""
    folio_sub_large_mapcount(f, 1, mm)
    f.entire_mapcount -= 1
    if f.entire_mapcount:
        return False
    unmapped = f.nr - f.nr_pages_mapped
    return 0 < unmapped < f.nr


# ---------------------------------------------------------------- folio life
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
    mm.machine.lru_pages -= f.nr
    mm.phys.uncharge(f.nr)
    mm.phys.free_pages(f.pfn, f.order)


def folio_put(mm: MmStruct, f: RefFolio, nr: int = 1) -> None:
    """folio_put_refs(): drop ``nr`` references; the last one frees the folio."""
    f.refcount -= nr
    if f.refcount == 0:
        free_folio(mm, f)


def discard_folio(mm: MmStruct, folio: RefFolio) -> None:
    """folio_put() of a folio that was charged but never mapped."""
    mm.phys.uncharge(folio.nr)
    mm.phys.free_pages(folio.pfn, folio.order)
