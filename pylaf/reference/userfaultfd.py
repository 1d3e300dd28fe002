"""userfaultfd (fs/userfaultfd.c ioctls, mm/userfaultfd.c mfill_atomic(),
mwriteprotect_range()) and change_protection() for uffd-wp (mm/mprotect.c).

Argument rule, for every ioctl: fs/userfaultfd.c validate_range() ->
validate_unaligned_range(): start not page aligned, len not page aligned,
``len == 0``, ``start < mmap_min_addr``, ``start >= TASK_SIZE``,
``len > TASK_SIZE - start`` or ``start + len`` wrapping -> EINVAL.
"""
from __future__ import annotations

from pylaf.reference.abi import (
    EEXIST,
    EINVAL,
    ENOENT,
    ENOMEM,
    MASK64,
    PTE_CONT,
    PTE_DIRTY,
    PTE_PRESENT,
    PTE_SPECIAL,
    PTE_UFFD_WP,
    PTE_WRITE,
    PTE_YOUNG,
    UFFD_MODE_MINOR,
    UFFD_MODE_MISSING,
    UFFD_MODE_WP,
    VM_UFFD_FLAGS,
    VM_UFFD_MISSING,
    VM_UFFD_WP,
    VM_WRITE,
)
from pylaf.reference.huge_memory import split_huge_pmd
from pylaf.reference.memory import map_folio_ptes
from pylaf.reference.mm_types import HugePmd, MmStruct, PteTable, RefFolio, RefVma, linear_page_index
from pylaf.reference.pgtable import contpte_unfold, pmd_alloc, pte_alloc, set_pte
from pylaf.reference.rmap import anon_vma_prepare
from pylaf.reference.vma import modify_flags


def validate_range(mm: MmStruct, start: int, length: int) -> int:
    """validate_range(): 0 or -EINVAL (the rule is in the module docstring)."""
    g = mm.geo
    if start & (g.page_size - 1) or length & (g.page_size - 1) or not length:
        return EINVAL
    if start < g.mmap_min_addr or start >= g.task_size or length > g.task_size - start:
        return EINVAL
    if start + length > MASK64:
        return EINVAL
    return 0


def _vmas_in(mm: MmStruct, start: int, end: int) -> list[RefVma]:
    return [v for v in mm.vma_list if v.end > start and v.start < end]


def userfaultfd_register(mm: MmStruct, start: int, length: int, mode: int) -> int:
    """userfaultfd_register(): MINOR is not supported for anon memory; the
    range must hold a VMA; a VMA already registered with these modes is skipped
    (userfaultfd_register_range())."""
    if not mode or mode & ~7 or mode & UFFD_MODE_MINOR:
        return EINVAL
    err = validate_range(mm, start, length)
    if err:
        return err
    end = start + length
    if not _vmas_in(mm, start, end):
        return EINVAL
    vmf = (VM_UFFD_MISSING if mode & UFFD_MODE_MISSING else 0) | (VM_UFFD_WP if mode & UFFD_MODE_WP else 0)
    # holes are skipped; a split refused by max_map_count is -ENOMEM
    return modify_flags(mm, start, end, lambda v: v.flags if (v.flags & vmf) == vmf
                        else (v.flags & ~VM_UFFD_FLAGS) | vmf, hole_err=0, split_err=ENOMEM)


def userfaultfd_unregister(mm: MmStruct, start: int, length: int) -> int:
    """userfaultfd_unregister(): resolve uffd-wp markers, clear the uffd flags."""
    err = validate_range(mm, start, length)
    if err:
        return err
    end = start + length
    inside = _vmas_in(mm, start, end)
    if not inside:
        return EINVAL
    for v in inside:
        if v.flags & VM_UFFD_WP:
            uffd_wp_range(mm, v, max(v.start, start), min(v.end, end), wp=False)
    return modify_flags(mm, start, end, lambda v: v.flags & ~VM_UFFD_FLAGS,
                        hole_err=0, split_err=ENOMEM)


def mfill_dst_vma(mm: MmStruct, start: int, length: int) -> RefVma | int:
    """uffd_mfill_lock(): the one registered VMA holding the whole range (it
    gets its anon_vma first, find_vma_and_prepare_anon()); else -ENOENT."""
    err = validate_range(mm, start, length)
    if err:
        return err
    vma = mm.find_vma(start)
    if vma is None:
        return ENOENT
    anon_vma_prepare(mm, vma)
    if start + length > vma.end or not vma.flags & VM_UFFD_FLAGS:
        return ENOENT
    return vma


def _mfill_table(mm: MmStruct, addr: int) -> PteTable | int:
    """mm_alloc_pmd() + pte_alloc(): the PTE table for ``addr``; -EEXIST on a PMD leaf."""
    pmd_alloc(mm, addr)
    idx = mm.geo.pmd_index(addr)
    ent = mm.pmd.get(idx)
    if ent is None:
        if not pte_alloc(mm, idx):
            return ENOMEM
        ent = mm.pmd[idx]
    if isinstance(ent, HugePmd):
        return EEXIST
    return ent


def _mfill_copy_page(mm: MmStruct, vma: RefVma, table: PteTable, addr: int, wp: bool) -> int:
    """mfill_atomic_pte_copy(): allocate and charge, then install the PTE
    (mfill_atomic_install_pte() finds it present: -EEXIST)."""
    pfn = mm.phys.alloc_pages(0)
    if pfn is None:
        return ENOMEM
    if not mm.phys.try_charge(1, 0):
        mm.phys.free_pages(pfn, 0)
        return ENOMEM
    if table.ptes[mm.geo.pte_index(addr)]:
        mm.phys.uncharge(1)
        mm.phys.free_pages(pfn, 0)
        return EEXIST
    bits = PTE_PRESENT | PTE_YOUNG | PTE_DIRTY
    if vma.flags & VM_WRITE and not wp:
        bits |= PTE_WRITE
    if wp:
        bits |= PTE_UFFD_WP
    map_folio_ptes(mm, RefFolio(pfn, 0, linear_page_index(mm.geo, vma, addr)), addr, bits)
    mm.per_order["folios_mapped"][0] += 1     # the C core counts UFFDIO_COPY pages too
    return 0


def mfill_atomic(mm: MmStruct, vma: RefVma, start: int, end: int, zeropage: bool, wp: bool) -> int:
    """mfill_atomic(): one page at a time; stops at the first error."""
    for addr in range(start, end, mm.geo.page_size):
        table = _mfill_table(mm, addr)
        if isinstance(table, int):
            return table
        if zeropage:
            pi = mm.geo.pte_index(addr)
            if table.ptes[pi]:
                return EEXIST
            set_pte(mm, table, pi, PTE_PRESENT | PTE_SPECIAL | PTE_YOUNG)
            continue
        err = _mfill_copy_page(mm, vma, table, addr, wp)
        if err:
            return err
    return 0


def uffdio_copy(mm: MmStruct, start: int, length: int, wp: bool) -> int:
    vma = mfill_dst_vma(mm, start, length)
    if isinstance(vma, int):
        return vma
    if wp and not vma.flags & VM_UFFD_WP:
        return EINVAL
    return mfill_atomic(mm, vma, start, start + length, zeropage=False, wp=wp)


def uffdio_zeropage(mm: MmStruct, start: int, length: int) -> int:
    vma = mfill_dst_vma(mm, start, length)
    if isinstance(vma, int):
        return vma
    return mfill_atomic(mm, vma, start, start + length, zeropage=True, wp=False)


def mwriteprotect_range(mm: MmStruct, start: int, length: int, wp: bool) -> int:
    """mwriteprotect_range(): uffd_wp_range() per VMA (holes skipped); a VMA
    not registered for WP stops it with -ENOENT; no VMA at all is -ENOENT."""
    err = validate_range(mm, start, length)
    if err:
        return err
    end = start + length
    err = ENOENT
    for v in _vmas_in(mm, start, end):
        if not v.flags & VM_UFFD_WP:
            return ENOENT
        uffd_wp_range(mm, v, max(v.start, start), min(v.end, end), wp=wp)
        err = 0
    return err


def _wp_pte(pte: int, wp: bool, try_writable: bool) -> int:
    pte &= ~PTE_WRITE
    pte = (pte | PTE_UFFD_WP) if wp else (pte & ~PTE_UFFD_WP)
    if try_writable and not pte & PTE_SPECIAL:
        pte |= PTE_WRITE
    return pte


def _wp_pte_range(mm: MmStruct, table: PteTable, addr: int, nxt: int, rng: tuple[int, int],
                  wp: bool, try_writable: bool) -> None:
    g = mm.geo
    i0 = g.pte_index(addr)
    i1 = i0 + ((nxt - addr) >> g.page_shift)
    csz = g.cont_nr * g.page_size
    base = addr - (i0 << g.page_shift)
    for i in range(i0, i1):
        if not table.ptes[i]:
            continue
        if table.ptes[i] & PTE_CONT:
            cs = (base + (i << g.page_shift)) & ~(csz - 1)
            if cs < rng[0] or cs + csz > rng[1]:
                contpte_unfold(mm, table, i)
        table.ptes[i] = _wp_pte(table.ptes[i], wp, try_writable)


def uffd_wp_range(mm: MmStruct, vma: RefVma, start: int, end: int, wp: bool) -> None:
    """uffd_wp_range() -> change_protection(MM_CP_UFFD_WP[_RESOLVE]).

    arm64: a contpte block that the range (clipped to this VMA, as
    mwriteprotect_range() calls uffd_wp_range() per VMA) covers only in
    part is unfolded first, and not refolded (the batched commit of
    6.17+; older kernels refolded a block whose 16 PTEs ended up equal).
    """
    g = mm.geo
    try_writable = not wp and bool(vma.flags & VM_WRITE)
    addr = start
    while addr < end:
        idx = g.pmd_index(addr)
        nxt = min((idx + 1) << g.pmd_shift, end)
        ent = mm.pmd.get(idx)
        if isinstance(ent, HugePmd) and nxt - addr == g.pmd_size:
            f = (ent.flags & ~PTE_WRITE) | PTE_UFFD_WP if wp else ent.flags & ~(PTE_WRITE | PTE_UFFD_WP)
            if try_writable and not ent.folio.huge_zero:
                f |= PTE_WRITE
            ent.flags = f
        else:
            if isinstance(ent, HugePmd):
                split_huge_pmd(mm, idx)
                ent = mm.pmd.get(idx)
            if isinstance(ent, PteTable):
                _wp_pte_range(mm, ent, addr, nxt, (start, end), wp, try_writable)
        addr = nxt
