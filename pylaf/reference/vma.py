"""VMAs (mm/vma.c, mm/mmap.c, mm/madvise.c): a sorted list; split, merge and
flag changes; mmap placement (get_unmapped_area, top-down, THP-aligned for
PMD multiples); munmap with free_pgtables(); madvise.

Argument rules, each as the kernel checks it (errno as the C ABI returns it):

* mm/mmap.c do_mmap(): ``len == 0`` -> EINVAL; ``PAGE_ALIGN(len)`` wraps to 0
  -> ENOMEM.  __get_unmapped_area(): ``len > TASK_SIZE`` -> ENOMEM; then (the
  address chosen or, with MAP_FIXED, given) ``addr > TASK_SIZE - len`` ->
  ENOMEM; ``offset_in_page(addr)`` -> EINVAL; security_mmap_addr():
  ``addr < mmap_min_addr`` -> EPERM.  MAP_FIXED_NOREPLACE over a mapping ->
  EEXIST.  A hint (no MAP_FIXED) is only used when it fits, else ignored.
* mm/vma.c do_vmi_munmap(): ``offset_in_page(start) || start > TASK_SIZE ||
  len > TASK_SIZE - start`` -> EINVAL; ``start + PAGE_ALIGN(len) == start``
  (``len == 0``) -> EINVAL; no VMA in the range -> 0.
* mm/madvise.c do_madvise() -> madvise_should_skip() -> is_valid_madvise():
  unknown advice, ``!PAGE_ALIGNED(start)``, ``len && !PAGE_ALIGN(len)`` (the
  length wraps) or ``start + PAGE_ALIGN(len) < start`` (the range wraps) ->
  EINVAL; an empty range -> 0 (nothing done).  A range above TASK_SIZE is not
  rejected: madvise_walk_vmas() finds no VMA there and returns -ENOMEM after
  applying the advice to the mapped part.
* vm.max_map_count (``mm.max_map_count``, the number of VMAs is
  ``len(mm.vma_list)``): do_mmap() ``map_count > max_map_count`` -> ENOMEM
  (after the length checks, before placement); vms_gather_munmap_vmas():
  unmapping the middle of one VMA at ``map_count >= max_map_count`` ->
  ENOMEM; vma_modify() -> split_vma(): each split that a merge does not
  avoid needs ``map_count < max_map_count`` (both splits of a middle range
  checked before the first, as the C core does), ENOMEM, which madvise
  reports as EAGAIN (madvise_vma_behavior()).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Optional

from pylaf.reference.abi import (
    EAGAIN,
    EEXIST,
    EINVAL,
    ENOMEM,
    EPERM,
    MADV_DOFORK,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MADV_KEEPONFORK,
    MADV_NOHUGEPAGE,
    MADV_WIPEONFORK,
    MASK64,
    VM_ACCOUNT,
    VM_DONTCOPY,
    VM_HUGEPAGE,
    VM_NOHUGEPAGE,
    VM_WIPEONFORK,
    VM_WRITE,
    page_align,
)
from pylaf.reference.huge_memory import split_huge_pmd_if_needed
from pylaf.reference.memory import zap_range
from pylaf.reference.mm_types import MmStruct, PteTable, RefVma
from pylaf.reference.pgtable import free_pgtables, free_pte_table

FlagsOf = Callable[[RefVma], int]


# --------------------------------------------------------------- the VMA list
def insert_vma(mm: MmStruct, vma: RefVma) -> None:
    """vma_link(): keep the list sorted by vm_start."""
    i = 0
    while i < len(mm.vma_list) and mm.vma_list[i].start < vma.start:
        i += 1
    mm.vma_list.insert(i, vma)


def anon_compatible(a: RefVma, b: RefVma) -> bool:
    return not a.anon_vma or not b.anon_vma or a.anon_vma == b.anon_vma


def can_merge(a: RefVma, b: RefVma, page_shift: int) -> bool:
    """``a`` immediately below ``b``, same flags (and uffd ctx), compatible
    anon_vma, and ``b``'s vm_pgoff continuing ``a``'s (is_mergeable_vma(),
    can_vma_merge_after(): a moved VMA keeps its pgoff, docs/kernel-semantics.md §5.5)."""
    return (a.end == b.start and a.flags == b.flags and anon_compatible(a, b)
            and a.pgoff + ((a.end - a.start) >> page_shift) == b.pgoff)


def merge_pair(mm: MmStruct, a: RefVma, b: RefVma) -> RefVma:
    """vma_expand() / commit_merge(): ``b`` (right after ``a``) joins ``a``."""
    a.end = b.end
    a.anon_vma = a.anon_vma or b.anon_vma
    mm.vma_list.remove(b)
    return a


def split_vma(mm: MmStruct, vma: RefVma, addr: int) -> RefVma:
    """__split_vma(): [start, addr) stays ``vma``; returns the new upper part."""
    split_huge_pmd_if_needed(mm, addr)
    upper = vma.copy(addr, vma.end, vma.pgoff + ((addr - vma.start) >> mm.geo.page_shift))
    vma.end = addr
    insert_vma(mm, upper)
    return upper


def merge_around(mm: MmStruct, vma: RefVma) -> RefVma:
    """vma_merge_new_range()/vma_merge_existing_range(): merge ``vma`` with
    its neighbours where allowed (both only if prev and next are
    anon_vma-compatible); returns the resulting VMA."""
    idx = mm.vma_index(vma)
    prev = mm.vma_list[idx - 1] if idx > 0 else None
    nxt = mm.vma_list[idx + 1] if idx + 1 < len(mm.vma_list) else None
    shift = mm.geo.page_shift
    left = prev is not None and can_merge(prev, vma, shift)
    right = nxt is not None and can_merge(vma, nxt, shift)
    if left and right and prev is not None and nxt is not None and not anon_compatible(prev, nxt):
        right = False
    if left and prev is not None:
        vma = merge_pair(mm, prev, vma)
    if right and nxt is not None:
        merge_pair(mm, vma, nxt)
    return vma


def vma_set_flags(mm: MmStruct, vma: RefVma, start: int, end: int, flags: int) -> None:
    """vma_modify_flags(): the part [start, end) of ``vma`` gets ``flags``."""
    middle = vma
    if start > middle.start:
        middle = split_vma(mm, middle, start)
    if end < middle.end:
        split_vma(mm, middle, end)
    middle.flags = flags
    merge_around(mm, middle)


def _first_ending_above(mm: MmStruct, addr: int) -> int:
    i = 0
    while i < len(mm.vma_list) and mm.vma_list[i].end <= addr:
        i += 1
    return i


def vma_modify_splits(mm: MmStruct, vma: RefVma, start: int, end: int, flags: int) -> int:
    """How many split_vma() calls vma_modify() makes for [start, end) of ``vma``:
    a range at one edge that merges into the neighbour there needs none
    (vma_merge_existing_range() moves the boundary)."""
    below, above = start > vma.start, end < vma.end
    if below and above:
        return 2
    if not below and not above:
        return 0
    part = vma.copy(start, end, vma.pgoff + (start - vma.start) // mm.geo.page_size)
    part.flags = flags
    idx = mm.vma_index(vma)
    if above:
        prev = mm.vma_list[idx - 1] if idx > 0 else None
        return 0 if prev is not None and can_merge(prev, part, mm.geo.page_shift) else 1
    nxt = mm.vma_list[idx + 1] if idx + 1 < len(mm.vma_list) else None
    return 0 if nxt is not None and can_merge(part, nxt, mm.geo.page_shift) else 1


def modify_flags(mm: MmStruct, start: int, end: int, new_flags_of: FlagsOf,
                 hole_err: int = ENOMEM, split_err: int = EAGAIN) -> int:
    """madvise_walk_vmas()-style flag change over [start, end): split at the
    ends, set flags, merge.  Only VMAs whose flags change are touched
    (madvise_update_vma() returns early otherwise).  A split refused by
    max_map_count returns ``split_err`` at once; holes give ``hole_err``
    (after the mapped parts were changed)."""
    err = 0
    addr = start
    i = _first_ending_above(mm, start)
    while addr < end:
        if i >= len(mm.vma_list) or mm.vma_list[i].start >= end:
            return hole_err
        vma = mm.vma_list[i]
        if vma.start > addr:
            err = hole_err
            addr = vma.start
        nf = new_flags_of(vma)
        cur_end = min(vma.end, end)
        if nf != vma.flags:
            splits = vma_modify_splits(mm, vma, addr, cur_end, nf)
            if splits and len(mm.vma_list) + splits - 1 >= mm.max_map_count:
                return split_err
            vma_set_flags(mm, vma, addr, cur_end, nf)
        addr = cur_end
        i = _first_ending_above(mm, addr)
    return err


# ---------------------------------------------------------------------- mmap
def _gap_topdown(mm: MmStruct, length: int, high: int) -> Optional[int]:
    """unmapped_area_topdown(): the top of the highest gap below ``high``
    (and above mmap_min_addr) that fits ``length``."""
    low = max(mm.geo.page_size, mm.geo.mmap_min_addr)
    top = high
    for v in reversed(mm.vma_list):
        if v.start >= top:
            continue                                  # above the search window
        gap_start = max(v.end, low)
        if top > gap_start and top - gap_start >= length:
            return top - length
        top = v.start
    if top > low and top - low >= length:
        return top - length
    return None


def range_free(mm: MmStruct, start: int, end: int) -> bool:
    return all(v.end <= start or v.start >= end for v in mm.vma_list)


def get_unmapped_area(mm: MmStruct, length: int, hint: int) -> Optional[int]:
    """arch_get_unmapped_area_topdown(): a hint (page-aligned up) that fits;
    else thp_get_unmapped_area_vmflags() for a PMD multiple without hint (pad
    by PMD_SIZE, align); else the highest gap below mmap_base."""
    g = mm.geo
    if hint:
        hint = page_align(hint, g.page_size)
        if (g.task_size - length >= hint and hint >= g.mmap_min_addr
                and range_free(mm, hint, hint + length)):
            return hint
    elif length % g.pmd_size == 0:
        padded = _gap_topdown(mm, length + g.pmd_size, g.mmap_base)
        if padded is not None:
            off_sub = (-padded) & (g.pmd_size - 1)
            return padded + g.pmd_size if off_sub == 0 else padded + off_sub
    return _gap_topdown(mm, length, g.mmap_base)


def do_mmap(mm: MmStruct, length: int, hint: int, fixed: bool, flags: int) -> int:
    """do_mmap() of an anonymous private mapping; returns the address or a
    negative errno (the rules are in the module docstring).  The VMA gets
    ``vm_pgoff = addr >> PAGE_SHIFT``, and VM_ACCOUNT when writable
    (accountable_mapping())."""
    g = mm.geo
    if length == 0:
        return EINVAL
    length_al = page_align(length, g.page_size)
    if length_al == 0 or length_al > g.task_size:
        return ENOMEM
    if len(mm.vma_list) > mm.max_map_count:            # "Too many mappings?"
        return ENOMEM
    if fixed:
        if hint > g.task_size - length_al:
            return ENOMEM
        if hint & (g.page_size - 1):
            return EINVAL
        if hint < g.mmap_min_addr:
            return EPERM
        if not range_free(mm, hint, hint + length_al):
            return EEXIST
        start = hint
    else:
        got = get_unmapped_area(mm, length_al, hint)
        if got is None:
            return ENOMEM
        start = got
    if flags & VM_WRITE:                      # accountable_mapping()
        flags |= VM_ACCOUNT
    vma = RefVma(start, start + length_al, flags, start >> g.page_shift)
    insert_vma(mm, vma)
    merge_around(mm, vma)
    return start


# -------------------------------------------------------------------- munmap
def do_vmi_munmap(mm: MmStruct, start: int, length: int) -> int:
    """do_vmi_munmap(): the argument checks, then do_vmi_align_munmap()."""
    g = mm.geo
    if start & (g.page_size - 1) or start > g.task_size or length > g.task_size - start:
        return EINVAL
    end = start + page_align(length, g.page_size)
    if end == start:
        return EINVAL
    first = next((v for v in mm.vma_list if v.end > start), None)
    if (first is not None and first.start < start and first.end > end
            and len(mm.vma_list) >= mm.max_map_count):
        return ENOMEM                                  # a middle split at the limit
    do_vmi_align_munmap(mm, start, end)
    return 0


def do_vmi_align_munmap(mm: MmStruct, start: int, end: int) -> None:
    """Split the VMAs at both ends, zap what is detached, free_pgtables()
    between the remaining neighbours, drop the VMAs."""
    first = next((v for v in mm.vma_list if v.end > start), None)
    if first is None or first.start >= end:
        return
    if first.start < start:
        split_vma(mm, first, start)
    last = next((v for v in mm.vma_list if v.start < end < v.end), None)
    if last is not None:
        split_vma(mm, last, end)
    detached = [v for v in mm.vma_list if v.start >= start and v.end <= end]
    i0 = mm.vma_index(detached[0])
    i1 = mm.vma_index(detached[-1])
    prev = mm.vma_list[i0 - 1] if i0 > 0 else None
    nxt = mm.vma_list[i1 + 1] if i1 + 1 < len(mm.vma_list) else None
    for v in detached:                           # unmap_vmas()
        zap_range(mm, v.start, v.end)
    free_pgtables(mm, detached, prev.end if prev else 0, nxt.start if nxt else 0)
    for v in detached:
        mm.vma_list.remove(v)


# ------------------------------------------------------------------- madvise
def _set_hugepage(v: RefVma) -> int:
    return (v.flags & ~VM_NOHUGEPAGE) | VM_HUGEPAGE


def _set_nohugepage(v: RefVma) -> int:
    return (v.flags & ~VM_HUGEPAGE) | VM_NOHUGEPAGE


#: madvise_vma_behavior(): the vm_flags change of each flag-setting advice.
#: MADV_DOFORK's VM_IO and MADV_WIPEONFORK's file/shared checks cannot fail on
#: the model's private anonymous VMAs.
FLAG_ADVICE: dict[int, FlagsOf] = {
    MADV_HUGEPAGE: _set_hugepage,
    MADV_NOHUGEPAGE: _set_nohugepage,
    MADV_DONTFORK: lambda v: v.flags | VM_DONTCOPY,
    MADV_DOFORK: lambda v: v.flags & ~VM_DONTCOPY,
    MADV_WIPEONFORK: lambda v: v.flags | VM_WIPEONFORK,
    MADV_KEEPONFORK: lambda v: v.flags & ~VM_WIPEONFORK,
}


def do_madvise(mm: MmStruct, start: int, length: int, advice: int) -> int:
    """do_madvise() for MADV_DONTNEED and the flag advices of FLAG_ADVICE
    (rules in the module docstring)."""
    if advice != MADV_DONTNEED and advice not in FLAG_ADVICE:
        return EINVAL
    if start & (mm.geo.page_size - 1):
        return EINVAL
    ln = page_align(length, mm.geo.page_size)
    if (length and not ln) or start + ln > MASK64:
        return EINVAL
    end = start + ln
    if end == start:
        return 0
    if advice == MADV_DONTNEED:
        return madvise_dontneed(mm, start, end)
    return modify_flags(mm, start, end, FLAG_ADVICE[advice])


def _reclaim_empty_tables(mm: MmStruct, start: int, end: int) -> None:
    """pt_reclaim (6.14+): a PTE table the zap covered whole and left empty is
    freed (after the pages: the tables go by RCU later)."""
    g = mm.geo
    a = (start + g.pmd_size - 1) & ~(g.pmd_size - 1)
    while a + g.pmd_size <= end:
        ent = mm.pmd.get(g.pmd_index(a))
        if isinstance(ent, PteTable) and ent.used == 0:
            free_pte_table(mm, g.pmd_index(a))
        a += g.pmd_size


def madvise_dontneed(mm: MmStruct, start: int, end: int) -> int:
    """madvise_dontneed_single_vma() per VMA; -ENOMEM if [start, end) had holes."""
    err = 0
    addr = start
    for v in list(mm.vma_list):
        if v.end <= addr:
            continue
        if v.start >= end:
            break
        if v.start > addr:
            err = ENOMEM
            addr = v.start
        e = min(v.end, end)
        zap_range(mm, addr, e)
        _reclaim_empty_tables(mm, addr, e)
        addr = e
    return ENOMEM if addr < end else err
