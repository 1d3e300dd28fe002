"""mremap() (mm/mremap.c, Linux 6.18, the ``struct vma_remap_struct`` code):
do_mremap(), check_mremap_params(), check_prep_vma(), mremap_at() (shrink,
grow in place, move), mremap_to() (MREMAP_FIXED / MREMAP_DONTUNMAP),
remap_move() (a pure FIXED move over several VMAs), move_vma() with
copy_vma() (mm/vma.c), move_page_tables(), move_ptes(), move_normal_pmd(),
move_normal_pud() and move_huge_pmd() (mm/huge_memory.c).  Rules in
docs/kernel-semantics.md §5 and §6.5.

Argument rules (check_mremap_params(), lengths PAGE_ALIGNed first): ``addr``
not page aligned, ``new_len == 0`` or ``new_len > TASK_SIZE`` -> EINVAL;
with FIXED or DONTUNMAP: ``new_addr > TASK_SIZE - new_len``, ``new_addr``
not aligned, no MAYMOVE, DONTUNMAP with ``old_len != new_len``, or the
ranges overlapping -> EINVAL.  Then check_prep_vma(): no VMA at ``addr`` ->
EFAULT; for a grow or a move, ``old_len == 0`` -> EINVAL and ``old_len``
(``new_len`` for a shrink) past the VMA's end -> EFAULT.

Modelling choices: no UFFD_FEATURE_EVENT_REMAP (a moved VMA drops its
userfaultfd registration, its PTEs lose uffd-wp, and its page tables are
never moved whole); no mseal, mlock, hugetlb, VM_DONTEXPAND/VM_PFNMAP,
RLIMIT_AS/DATA, overcommit refusal; soft-dirty is not configured.  The
vm.max_map_count checks are in :func:`map_count_allows`.
"""
from __future__ import annotations

from dataclasses import dataclass

from pylaf.reference.abi import (
    EFAULT,
    EINVAL,
    ENOMEM,
    EPERM,
    MASK64,
    PFN_SHIFT,
    PTE_CONT,
    PTE_DIRTY,
    PTE_PRESENT,
    PTE_SPECIAL,
    PTE_TOUCHED,
    PTE_UFFD_WP,
    PTE_YOUNG,
    VM_ACCOUNT,
    VM_UFFD_FLAGS,
    page_align,
)
from pylaf.reference.huge_memory import split_huge_pmd
from pylaf.reference.mm_types import HugePmd, MmStruct, PteTable, RefVma
from pylaf.reference.pgtable import contpte_set_ptes, contpte_unfold_partial, pmd_alloc, pte_alloc
from pylaf.reference.vma import (
    can_merge,
    do_vmi_munmap,
    get_unmapped_area,
    insert_vma,
    merge_around,
    merge_pair,
    range_free,
)


@dataclass
class Remap:
    """struct vma_remap_struct: the request as it is being carried out."""

    addr: int
    old_len: int
    new_len: int
    may_move: bool
    fixed: bool
    dontunmap: bool
    new_addr: int

    @property
    def implies_new_addr(self) -> bool:
        """vrm_implies_new_addr(): FIXED or DONTUNMAP."""
        return self.fixed or self.dontunmap


def map_count_allows(mm: MmStruct, extra: int) -> bool:
    """vm.max_map_count (``mm.max_map_count``): check_mremap_params() refuses
    (-ENOMEM) at ``map_count + 2 >= max_map_count - 3`` (``extra`` = 2) and
    prep_move_vma() at ``map_count >= max_map_count - 3`` (``extra`` = 0);
    int arithmetic, so a max_map_count below 3 refuses every move."""
    return len(mm.vma_list) + extra < mm.max_map_count - 3


# ---------------------------------------------------------------- the syscall
def do_mremap(mm: MmStruct, rq: Remap) -> int:
    """do_mremap(): the new address or a negative errno."""
    g = mm.geo
    rq.old_len = page_align(rq.old_len, g.page_size)
    rq.new_len = page_align(rq.new_len, g.page_size)
    err = check_mremap_params(mm, rq)
    if err:
        return err
    if rq.fixed and rq.old_len == rq.new_len:         # vrm_move_only()
        return remap_move(mm, rq)
    vma = mm.find_vma(rq.addr)
    err = check_prep_vma(mm, rq, vma)
    if err or vma is None:
        return err or EFAULT
    return mremap_to(mm, rq) if rq.implies_new_addr else mremap_at(mm, rq, vma)


def check_mremap_params(mm: MmStruct, rq: Remap) -> int:
    """check_mremap_params(): the rules in the module docstring."""
    g = mm.geo
    if rq.addr & (g.page_size - 1) or not rq.new_len or rq.new_len > g.task_size:
        return EINVAL
    if not rq.implies_new_addr:
        return 0
    if rq.new_addr > g.task_size - rq.new_len or rq.new_addr & (g.page_size - 1):
        return EINVAL
    if not rq.may_move or (rq.dontunmap and rq.old_len != rq.new_len):
        return EINVAL
    end_old, end_new = (rq.addr + rq.old_len) & MASK64, (rq.new_addr + rq.new_len) & MASK64
    if end_old > rq.new_addr and end_new > rq.addr:     # vrm_overlaps(), unsigned long sums
        return EINVAL
    return 0 if map_count_allows(mm, 2) else ENOMEM


def check_prep_vma(mm: MmStruct, rq: Remap, vma: RefVma | None) -> int:
    """check_prep_vma(): a shrink or a same-size call without a new address
    needs only the VMA at ``addr``; a grow or a move needs the range inside it."""
    if vma is None:
        return EFAULT
    if not rq.implies_new_addr:
        rq.new_addr = rq.addr
    if rq.new_len <= rq.old_len and not rq.implies_new_addr:      # !vrm_will_map_new()
        return 0
    if not rq.old_len:
        return EINVAL                                  # duplicating a private mapping
    if min(rq.old_len, rq.new_len) > vma.end - rq.addr:
        return EFAULT
    pgoff = vma.pgoff + ((rq.addr - vma.start) >> mm.geo.page_shift)
    if rq.new_len > rq.old_len and pgoff + (rq.new_len >> mm.geo.page_shift) > MASK64:
        return EINVAL
    return 0


def mremap_at(mm: MmStruct, rq: Remap, vma: RefVma) -> int:
    """mremap_at(): same size -> ``addr``; shrink -> shrink_vma(); grow ->
    expand_vma()."""
    if rq.new_len == rq.old_len:
        return rq.addr
    if rq.new_len < rq.old_len:
        err = shrink_vma(mm, rq)
        return err if err else rq.addr
    return expand_vma(mm, rq, vma)


def shrink_vma(mm: MmStruct, rq: Remap) -> int:
    """shrink_vma(): do_vmi_munmap() of [addr + new_len, addr + old_len) (it
    may cross into the following VMAs; a large folio cut in two is partially
    mapped and queued for deferred split, a PMD straddling the cut is split)."""
    return do_vmi_munmap(mm, rq.addr + rq.new_len, rq.old_len - rq.new_len)


def vma_expandable(mm: MmStruct, vma: RefVma, delta: int) -> bool:
    """vma_expandable(): [vm_end, vm_end + delta) holds no VMA and the grown
    VMA still fits below TASK_SIZE (get_unmapped_area(MAP_FIXED))."""
    end = vma.end + delta
    return end <= mm.geo.task_size and range_free(mm, vma.end, end)


def expand_vma(mm: MmStruct, rq: Remap, vma: RefVma) -> int:
    """expand_vma(): in place when [addr, addr + old_len) ends at vm_end and
    vma_expandable(); else -ENOMEM without MAYMOVE; else a new place with
    get_unmapped_area() without a hint (PMD-aligned for a multiple of the
    PMD size, §1.10) and move_vma()."""
    delta = rq.new_len - rq.old_len
    if vma.end - rq.addr == rq.old_len and vma_expandable(mm, vma, delta):
        vma_merge_extend(mm, vma, delta)
        return rq.addr
    if not rq.may_move:
        return ENOMEM
    dst = get_unmapped_area(mm, rq.new_len, 0)
    if dst is None:
        return ENOMEM
    rq.new_addr = dst
    return move_vma(mm, rq, vma)


def vma_merge_extend(mm: MmStruct, vma: RefVma, delta: int) -> None:
    """vma_merge_extend() -> vma_merge_new_range(): ``vma`` grows by ``delta``
    (the extension always merges with it) and absorbs the next VMA when it
    is now adjacent and compatible (flags, anon_vma, pgoff continuity)."""
    vma.end += delta
    i = mm.vma_index(vma)
    if i + 1 < len(mm.vma_list):
        nxt = mm.vma_list[i + 1]
        if can_merge(vma, nxt, mm.geo.page_shift):
            merge_pair(mm, vma, nxt)


def remap_move(mm: MmStruct, rq: Remap) -> int:
    """remap_move(): a FIXED move of the same size moves every VMA in
    [addr, addr + old_len), each to the same offset from ``new_addr`` (the
    gaps kept); a gap at the start, or no VMA, is -EFAULT; a
    userfaultfd-armed VMA cannot be part of a multi-VMA move (-EFAULT)."""
    start, end = rq.addr, rq.addr + rq.old_len
    pieces = [(max(v.start, start), min(v.end, end), v.flags, v.end) for v in mm.vma_list
              if v.end > start and v.start < end]
    if not pieces or pieces[0][0] > start:
        return EFAULT
    target, last_end, res = rq.new_addr, 0, EFAULT
    for n, (a, e, flags, vm_end) in enumerate(pieces):
        offset = a - last_end if n else 0
        last_end = e
        if flags & VM_UFFD_FLAGS and (n or vm_end < end):        # !vma_multi_allowed()
            return EFAULT
        sub = Remap(a, e - a, e - a, True, True, rq.dontunmap, target + offset)
        vma = mm.find_vma(a)
        err = check_prep_vma(mm, sub, vma)
        got = err if err else mremap_to(mm, sub)
        if got < 0:
            return got
        if not n:
            res = got
        target = got + (e - a)
    return res


def mremap_to(mm: MmStruct, rq: Remap) -> int:
    """mremap_to(): FIXED unmaps the destination first (as MAP_FIXED does),
    a shrink then unmaps the source's tail, the destination is FIXED's
    address or found with get_unmapped_area(hint) (DONTUNMAP alone), then
    move_vma()."""
    g = mm.geo
    if rq.fixed:
        err = do_vmi_munmap(mm, rq.new_addr, rq.new_len)
        if err:
            return err
    if rq.new_len < rq.old_len:
        err = shrink_vma(mm, rq)
        if err:
            return err
        rq.old_len = rq.new_len
    vma = mm.find_vma(rq.addr)
    if vma is None:
        return EFAULT
    if rq.fixed:
        if rq.new_addr < g.mmap_min_addr:              # security_mmap_addr()
            return EPERM
    else:
        dst = get_unmapped_area(mm, rq.new_len, rq.new_addr)
        if dst is None:
            return ENOMEM
        rq.new_addr = dst
    return move_vma(mm, rq, vma)


# -------------------------------------------------------------------- move_vma
def move_vma(mm: MmStruct, rq: Remap, vma: RefVma) -> int:
    """move_vma(): copy_vma() makes (or merges into) the destination VMA,
    move_page_tables() moves the entries; if it could not move everything
    (no memory for a page table) what moved goes back and the destination is
    unmapped instead (-ENOMEM).  Then unmap_source_vma(), or with DONTUNMAP
    dontunmap_complete()."""
    if not map_count_allows(mm, 0):
        return ENOMEM
    new_vma, vma = copy_vma(mm, vma, rq)
    moved = move_page_tables(mm, vma, new_vma, rq.addr, rq.new_addr, rq.old_len)
    if moved < rq.old_len:
        move_page_tables(mm, new_vma, vma, rq.new_addr, rq.addr, moved)
        unmap_source_vma(mm, rq.new_addr, rq.new_len, False)
        return ENOMEM
    new_vma.flags &= ~VM_UFFD_FLAGS                    # mremap_userfaultfd_prep(): userfaultfd_reset_ctx()
    if rq.dontunmap:
        if new_vma is not vma and (vma.start, vma.end) == (rq.addr, rq.addr + rq.old_len):
            vma.anon_vma = 0                           # dontunmap_complete(): unlink_anon_vmas()
    else:
        unmap_source_vma(mm, rq.addr, rq.old_len, True)
    return rq.new_addr


def copy_vma(mm: MmStruct, vma: RefVma, rq: Remap) -> tuple[RefVma, RefVma]:
    """copy_vma(): the destination [new_addr, new_addr + new_len) with the
    source's flags and anon_vma (anon_vma_clone()) and pgoff (vm_pgoff +
    offset; reset to ``new_addr >> PAGE_SHIFT`` when the source was never
    written: no anon_vma), merged with the neighbours there when they are
    compatible (vma_merge_copied_range()).  Returns (new VMA, source VMA):
    the source may have been merged into the new one."""
    shift = mm.geo.page_shift
    pgoff = vma.pgoff + ((rq.addr - vma.start) >> shift)
    if not vma.anon_vma:
        pgoff = rq.new_addr >> shift
    new = vma.copy(rq.new_addr, rq.new_addr + rq.new_len, pgoff)
    new.auto_next = new.auto_ramp = 0
    insert_vma(mm, new)
    merged = merge_around(mm, new)
    source = mm.find_vma(rq.addr)
    assert source is not None
    return merged, source


def unmap_source_vma(mm: MmStruct, addr: int, length: int, accountable: bool) -> None:
    """unmap_source_vma(): VM_ACCOUNT is cleared for the munmap (the charge
    moved with the pages) and given back to what is left of the VMA on
    either side; do_vmi_munmap() of the range (its errors are ignored)."""
    vma = mm.find_vma(addr)
    if vma is None:
        return
    start, end = vma.start, vma.end
    accountable = accountable and bool(vma.flags & VM_ACCOUNT)
    if accountable:
        vma.flags &= ~VM_ACCOUNT
    do_vmi_munmap(mm, addr, length)
    if not accountable:
        return
    for side in ((mm.find_vma(addr - 1) if start < addr else None),
                 (mm.find_vma(addr + length) if end > addr + length else None)):
        if side is not None:
            side.flags |= VM_ACCOUNT


# ------------------------------------------------------------ move_page_tables
def _uffd_blocks_table_move(*vmas: RefVma) -> bool:
    """!uffd_supports_page_table_move(): a VMA with a userfaultfd context but
    no UFFD_FEATURE_EVENT_REMAP (every registered VMA in the model)."""
    return any(v.flags & VM_UFFD_FLAGS for v in vmas)


def try_realign_addr(mm: MmStruct, old: RefVma, new: RefVma, old_addr: int, new_addr: int,
                     length: int) -> tuple[int, int]:
    """try_realign_addr(PMD_MASK) / can_realign_addr(): both addresses round
    down to their PMD boundary when they have the same offset in a PMD, the
    range reaches the next boundary, each is its VMA's start, and nothing is
    mapped between the rounded address and the VMA's start."""
    size = mm.geo.pmd_size
    off = old_addr & (size - 1)
    if length < size - off or not off or off != new_addr & (size - 1):
        return old_addr, new_addr
    for vma, a in ((old, old_addr), (new, new_addr)):
        if vma.start != a or not range_free(mm, a - off, a):
            return old_addr, new_addr
    return old_addr - off, new_addr - off


def _extent(addr: int, new_addr: int, end: int, size: int) -> int:
    """get_extent(): up to the next boundary of both addresses and the end."""
    return min(size - (addr & (size - 1)), size - (new_addr & (size - 1)), end - addr)


def move_page_tables(mm: MmStruct, old: RefVma, new: RefVma, old_addr: int, new_addr: int,
                     length: int) -> int:
    """move_page_tables(): extent by extent, whole PMD tables
    (move_normal_pud()), whole PMD leaves (move_huge_pmd()) or whole PTE
    tables (move_normal_pmd()) when the extent is a whole entry at both
    addresses and the destination is empty; else a PMD leaf is split and
    move_ptes() moves the entries.  Returns the bytes moved (from the
    original ``old_addr``)."""
    g = mm.geo
    end = old_addr + length
    orig = old_addr
    if not length:
        return 0
    old_addr, new_addr = try_realign_addr(mm, old, new, old_addr, new_addr, length)
    no_table_move = _uffd_blocks_table_move(old, new)
    while old_addr < end:
        extent = _extent(old_addr, new_addr, end, g.pud_size)
        if (old_addr >> g.pud_shift) not in mm.pmd_tables:
            old_addr, new_addr = old_addr + extent, new_addr + extent
            continue
        if (extent == g.pud_size and not no_table_move
                and (new_addr >> g.pud_shift) not in mm.pmd_tables):
            move_normal_pud(mm, old_addr, new_addr)
            old_addr, new_addr = old_addr + extent, new_addr + extent
            continue
        extent = _extent(old_addr, new_addr, end, g.pmd_size)
        if not move_pmd_extent(mm, old, old_addr, new_addr, extent, no_table_move):
            break
        old_addr, new_addr = old_addr + extent, new_addr + extent
    return max(old_addr - orig, 0) if old_addr < end else length


def move_pmd_extent(mm: MmStruct, old: RefVma, old_addr: int, new_addr: int, extent: int,
                    no_table_move: bool) -> bool:
    """One PMD step of move_page_tables(); False when a destination PTE
    table cannot be allocated."""
    g = mm.geo
    oi, ni = g.pmd_index(old_addr), g.pmd_index(new_addr)
    ent = mm.pmd.get(oi)
    if ent is None:                                   # get_old_pmd(): pmd_none
        return True
    pmd_alloc(mm, new_addr)                           # alloc_new_pmd()
    whole = extent == g.pmd_size and ni not in mm.pmd
    if isinstance(ent, HugePmd):
        if whole:                                     # move_huge_pmd()
            mm.pmd[ni] = mm.pmd.pop(oi)
            if no_table_move:
                ent.flags &= ~PTE_UFFD_WP             # clear_uffd_wp_pmd()
            return True
        split_huge_pmd(mm, oi)
    elif whole and not no_table_move:                 # move_normal_pmd()
        mm.pmd[ni] = mm.pmd.pop(oi)
        return True
    if ni not in mm.pmd and not pte_alloc(mm, ni):
        return False
    move_ptes(mm, old, old_addr, new_addr, extent)
    return True


def move_normal_pud(mm: MmStruct, old_addr: int, new_addr: int) -> None:
    """move_normal_pud(): the whole PMD table (every PMD entry of the PUD
    range) moves to the empty destination PUD."""
    g = mm.geo
    shift = g.pud_shift - g.pmd_shift
    op, np_ = old_addr >> g.pud_shift, new_addr >> g.pud_shift
    for idx in [i for i in mm.pmd if i >> shift == op]:
        mm.pmd[(np_ << shift) | (idx & ((1 << shift) - 1))] = mm.pmd.pop(idx)
    mm.pmd_tables.discard(op)
    mm.pmd_tables.add(np_)


def mremap_folio_pte_batch(mm: MmStruct, ptes: list[int], i: int, i1: int) -> int:
    """mremap_folio_pte_batch(): 1 unless pte_batch_hint() > 1 (arm64: a
    contpte entry; x86 never batches), then folio_pte_batch_flags(FPB_RESPECT_WRITE)
    over a large folio: same bits but young, dirty (and TOUCHED)."""
    pte = ptes[i]
    if i1 - i == 1 or not pte & PTE_CONT or pte & PTE_SPECIAL:
        return 1
    pfn = pte >> PFN_SHIFT
    folio = mm.folio_of[pfn]
    if not folio.large:
        return 1
    ign = PTE_YOUNG | PTE_DIRTY | PTE_TOUCHED | ~((1 << PFN_SHIFT) - 1)
    n = 1
    while (i + n < i1 and pfn + n < folio.pfn + folio.nr and ptes[i + n] >> PFN_SHIFT == pfn + n
           and (ptes[i + n] & ~ign) == (pte & ~ign)):
        n += 1
    return n


def move_ptes(mm: MmStruct, old: RefVma, old_addr: int, new_addr: int, extent: int) -> None:
    """move_ptes(): each batch is get_and_clear_ptes() (young and dirty
    gathered over the batch; arm64 unfolds the blocks it covers in part),
    move_pte() (the identity), uffd-wp cleared without EVENT_REMAP, then
    set_ptes() at the destination (arm64: contpte only where the
    destination block and PFNs are aligned).  Folios, mapcounts, refcounts,
    PageAnonExclusive, RSS and the counters do not change."""
    g = mm.geo
    src = mm.pmd[g.pmd_index(old_addr)]
    dst = mm.pmd[g.pmd_index(new_addr)]
    assert isinstance(src, PteTable) and isinstance(dst, PteTable)
    i, i1 = g.pte_index(old_addr), g.pte_index(old_addr) + (extent >> g.page_shift)
    j = g.pte_index(new_addr)
    clear_wp = bool(old.flags & VM_UFFD_FLAGS)
    while i < i1:
        if not src.ptes[i]:
            i, j = i + 1, j + 1
            continue
        nr = mremap_folio_pte_batch(mm, src.ptes, i, i1) if src.ptes[i] & PTE_PRESENT else 1
        contpte_unfold_partial(mm, src, i, i + nr)
        merged = 0
        for k in range(nr):
            merged |= src.ptes[i + k] & (PTE_YOUNG | PTE_DIRTY)
        for k in range(nr):
            pte = (src.ptes[i + k] | merged) & ~PTE_CONT
            if clear_wp:
                pte &= ~PTE_UFFD_WP
            src.ptes[i + k] = 0
            dst.ptes[j + k] = pte
        src.used -= nr
        dst.used += nr
        contpte_set_ptes(mm, dst, j, nr)
        i, j = i + nr, j + nr


__all__ = ["Remap", "do_mremap"]
