"""fork and exit (Linux 6.18): dup_mmap() (mm/mmap.c), copy_page_range() with
vma_needs_copy(), copy_pte_range() / copy_present_ptes() (mm/memory.c),
copy_huge_pmd() (mm/huge_memory.c), and exit_mmap() (mm/mmap.c).  Rules in
docs/kernel-semantics.md §2.

Modelling choices (the C core is to make the same ones):

* no GUP, so folio_try_dup_anon_rmap_*() never fails and copy_present_page()
  (the eager copy of a maybe-pinned page) never runs;
* no UFFD_FEATURE_EVENT_FORK: dup_userfaultfd() drops the child's uffd flags,
  so userfaultfd_wp(dst_vma) is false and the child's PTEs and PMDs lose
  uffd-wp; the child's VMAs keep the parent's split (dup_mmap() never
  merges): neighbours left equal are kept apart for good (fork_unmerged());
* every private anonymous VMA is a COW mapping (VM_MAYWRITE is always set);
* the child's copies are made old (pte_mkold()/pmd_mkold()) and the
  emulator's TOUCHED bit, which says "this process accessed the page", is
  cleared with the young bit;
* each child VMA with an anon_vma gets a new one (anon_vma_fork(); the
  reuse of an idle ancestor anon_vma by anon_vma_clone() is not modelled).
"""
from __future__ import annotations

from pylaf.reference.abi import (
    ENOMEM,
    GAUGES,
    PFN_SHIFT,
    PTE_CONT,
    PTE_DIRTY,
    PTE_PRESENT,
    PTE_SPECIAL,
    PTE_TOUCHED,
    PTE_UFFD_WP,
    PTE_WRITE,
    PTE_YOUNG,
    VM_DONTCOPY,
    VM_UFFD_FLAGS,
    VM_UFFD_WP,
    VM_WIPEONFORK,
)
from pylaf.reference.memory import zap_range
from pylaf.reference.mm_types import HugePmd, Machine, MmStruct, PteTable, RefFolio, RefVma
from pylaf.reference.pgtable import contpte_unfold_partial, free_pgtables, pmd_alloc, pte_alloc
from pylaf.reference.rmap import folio_try_dup_anon_rmap_pmd, folio_try_dup_anon_rmap_ptes

#: bits folio_pte_batch_flags(FPB_MERGE_WRITE | FPB_RESPECT_DIRTY) compares
#: besides the PFN: dirty and uffd-wp (write merges, young is ignored)
_BATCH_BITS = PTE_PRESENT | PTE_SPECIAL | PTE_DIRTY | PTE_UFFD_WP


# ------------------------------------------------------------------ dup_mmap
def dup_mmap(parent: MmStruct) -> MmStruct | int:
    """dup_mmap(): a new mm on the parent's machine with a copy of every VMA
    but the VM_DONTCOPY ones; VM_WIPEONFORK VMAs get no anon_vma and no page
    tables; the others get their own anon_vma (when the parent's VMA has
    one) and copy_page_range().  The prctl THP-disable state is inherited
    (MMF_INIT_MASK); userfaultfd registrations are dropped (dup_userfaultfd()
    without UFFD_FEATURE_EVENT_FORK).  Returns the child or -ENOMEM (the
    child torn down)."""
    child = MmStruct(parent.machine)
    child.thp_disable = parent.thp_disable
    for src in parent.vma_list:
        if src.flags & VM_DONTCOPY:
            continue
        dst = src.copy(src.start, src.end)
        dst.flags &= ~VM_UFFD_FLAGS                  # dup_userfaultfd() without EVENT_FORK
        dst.anon_vma = 0
        if not src.flags & VM_WIPEONFORK and src.anon_vma:
            dst.anon_vma = child.next_anon_vma      # anon_vma_fork()
            child.next_anon_vma += 1
        dst.no_merge_prev = src.no_merge_prev or bool(
            child.vma_list and fork_unmerged(child.vma_list[-1], dst))
        child.vma_list.append(dst)
        if not dst.flags & VM_WIPEONFORK and copy_page_range(child, dst, parent, src) < 0:
            exit_mmap(child)
            return ENOMEM
    return child


def fork_unmerged(prev: RefVma, vma: RefVma) -> bool:
    """Must the child's ``vma`` stay apart from ``prev``, the child VMA just
    below it?  Only where dup_userfaultfd() left them with equal flags: two
    with anon_vmas have different ones (anon_vma_fork()); one with and one
    without never merge (mm/vma.c is_mergeable_anon_vma() refuses a
    vma_is_fork_child() side); two without could be merged by a later
    vma_modify() in the kernel but are kept apart here too (the modelling
    choice the C core makes, csrc/fork.c fork_unmerged())."""
    return (prev.end == vma.start and prev.flags == vma.flags
            and (not prev.anon_vma or not vma.anon_vma))


def vma_needs_copy(dst: RefVma, src: RefVma) -> bool:
    """vma_needs_copy(): uffd-wp in the child, or an anon_vma in the parent;
    else the child refaults (zero-page reads included)."""
    return bool(dst.flags & VM_UFFD_WP) or bool(src.anon_vma)


def copy_page_range(dst_mm: MmStruct, dst: RefVma, src_mm: MmStruct, src: RefVma) -> int:
    """copy_page_range(): walk the parent's PMD entries over the VMA; the
    child gets a PMD table per PUD range the parent has one in, a PTE table
    for every parent PTE table, and copy_huge_pmd() for PMD leaves."""
    if not vma_needs_copy(dst, src):
        return 0
    g = src_mm.geo
    addr = src.start
    while addr < src.end:
        nxt = min(((addr >> g.pmd_shift) + 1) << g.pmd_shift, src.end)
        if (addr >> g.pud_shift) in src_mm.pmd_tables:
            pmd_alloc(dst_mm, addr)                  # copy_pmd_range(): pmd_alloc()
            ent = src_mm.pmd.get(g.pmd_index(addr))
            if isinstance(ent, HugePmd):
                err = copy_huge_pmd(dst_mm, src_mm, g.pmd_index(addr))
            elif isinstance(ent, PteTable):
                err = copy_pte_range(dst_mm, src_mm, ent, addr, nxt)
            else:
                err = 0
            if err < 0:
                return err
        addr = nxt
    return 0


# ------------------------------------------------------------------ PTE level
def folio_pte_batch(ptes: list[int], i: int, i1: int, folio: RefFolio) -> int:
    """folio_pte_batch_flags(FPB_MERGE_WRITE | FPB_RESPECT_DIRTY): the PTEs
    from ``i`` (before ``i1``) mapping consecutive pages of ``folio`` with the
    same dirty and uffd-wp bits."""
    first = ptes[i]
    pfn = first >> PFN_SHIFT
    fend = folio.pfn + folio.nr
    n = 1
    while (i + n < i1 and pfn + n < fend and (ptes[i + n] >> PFN_SHIFT) == pfn + n
           and (ptes[i + n] & _BATCH_BITS) == (first & _BATCH_BITS)):
        n += 1
    return n


def copy_pte_range(dst_mm: MmStruct, src_mm: MmStruct, src_table: PteTable, addr: int, end: int) -> int:
    """copy_pte_range(): pte_alloc() the child's table (even when nothing in
    [addr, end) is present), then copy_present_ptes() batch by batch."""
    g = src_mm.geo
    idx = g.pmd_index(addr)
    if idx not in dst_mm.pmd and not pte_alloc(dst_mm, idx):
        return ENOMEM
    dst_table = dst_mm.pmd[idx]
    assert isinstance(dst_table, PteTable)
    i = g.pte_index(addr)
    i1 = i + ((end - addr) >> g.page_shift)
    while i < i1:
        if not src_table.ptes[i]:
            i += 1
            continue
        i += copy_present_ptes(dst_mm, src_mm, dst_table, src_table, i, i1)
    return 0


def copy_present_ptes(dst_mm: MmStruct, src_mm: MmStruct, dst: PteTable, src: PteTable,
                      i: int, i1: int) -> int:
    """copy_present_ptes(): the zero page is copied as is (not a normal page:
    no reference, no mapcount, no RSS); a large folio in one
    folio_pte_batch(), a small one alone: folio_ref_add(nr) +
    folio_try_dup_anon_rmap_ptes() + the child's RSS, then __copy_present_ptes().
    Returns the number of PTEs copied."""
    pte = src.ptes[i]
    if pte & PTE_SPECIAL:
        __copy_present_ptes(dst_mm, src_mm, dst, src, i, 1)
        return 1
    pfn = pte >> PFN_SHIFT
    folio = src_mm.folio_of[pfn]
    nr = folio_pte_batch(src.ptes, i, i1, folio) if folio.large else 1
    folio.refcount += nr
    folio_try_dup_anon_rmap_ptes(dst_mm, folio, pfn - folio.pfn, nr)
    dst_mm.add_anon_rss(nr)
    __copy_present_ptes(dst_mm, src_mm, dst, src, i, nr)
    return nr


def __copy_present_ptes(dst_mm: MmStruct, src_mm: MmStruct, dst: PteTable, src: PteTable,
                        i: int, nr: int) -> None:
    """__copy_present_ptes(): a COW mapping with a writable PTE in the batch
    (FPB_MERGE_WRITE) is write-protected in the parent (wrprotect_ptes(),
    which on arm64 unfolds only contpte blocks the batch covers in part) and
    in the child; the child's entries are old, lose uffd-wp, and are
    written with one set_ptes() (contpte blocks where a whole aligned block
    of one folio is covered)."""
    write = any(src.ptes[j] & PTE_WRITE for j in range(i, i + nr))
    if write:
        contpte_unfold_partial(src_mm, src, i, i + nr)
        for j in range(i, i + nr):
            src.ptes[j] &= ~PTE_WRITE
    keep = ~(PTE_WRITE | PTE_YOUNG | PTE_UFFD_WP | PTE_TOUCHED | PTE_CONT)
    for j in range(i, i + nr):
        if not dst.ptes[j]:
            dst.used += 1
        dst.ptes[j] = src.ptes[j] & keep
    _set_ptes_cont(dst_mm, dst, i, nr)


def _set_ptes_cont(mm: MmStruct, table: PteTable, i: int, nr: int) -> None:
    """contpte_set_ptes() for a batch of one folio: PTE_CONT on every whole
    contpte block inside [i, i + nr) whose first PFN is block-aligned (a
    batch of one is only folded by contpte_try_fold(), as set_pte() does)."""
    cn = mm.geo.cont_nr
    if not cn or nr < cn:
        return
    b = (i + cn - 1) & ~(cn - 1)
    while b + cn <= i + nr:
        if not (table.ptes[b] >> PFN_SHIFT) & (cn - 1):
            for j in range(b, b + cn):
                table.ptes[j] |= PTE_CONT
            mm.cnt["contpte_blocks"] += 1
        b += cn


# ------------------------------------------------------------------ PMD level
def copy_huge_pmd(dst_mm: MmStruct, src_mm: MmStruct, idx: int) -> int:
    """copy_huge_pmd(): a PTE table is preallocated for the child's deposit
    (pte_alloc_one(); -ENOMEM fails the fork); the huge zero PMD is copied
    as is; an anon THP gets folio_get() + folio_try_dup_anon_rmap_pmd() and
    the child's RSS.  Both PMDs end write-protected, the child's old."""
    src = src_mm.pmd[idx]
    assert isinstance(src, HugePmd)
    table = dst_mm.phys.alloc_table_frame()
    if table is None:
        return ENOMEM
    f = src.folio
    if not f.huge_zero:
        f.refcount += 1
        folio_try_dup_anon_rmap_pmd(dst_mm, f)
        dst_mm.add_anon_rss(f.nr)
    dst_mm.cnt["nr_ptes"] += 1                  # mm_inc_nr_ptes() for the deposit
    src.flags &= ~PTE_WRITE                      # pmdp_set_wrprotect()
    flags = src.flags & ~(PTE_WRITE | PTE_YOUNG | PTE_UFFD_WP)
    dst_mm.pmd[idx] = HugePmd(f, flags, table, dst_mm.geo.ptrs_per_pte)
    return 0


# ---------------------------------------------------------------------- exit
def exit_mmap(mm: MmStruct) -> None:
    """exit_mmap(): unmap_vmas() over every VMA (the zap of §1.7: folios whose
    last mapping goes are freed, large ones left partially mapped are queued
    for deferred split), free_pgtables() over the whole address space,
    remove_vma(); the mm leaves the machine, its event counters kept in the
    machine's total."""
    for v in mm.vma_list:
        zap_range(mm, v.start, v.end)
    free_pgtables(mm, list(mm.vma_list), 0, 0)
    mm.vma_list = []
    retire(mm.machine, mm)


def retire(machine: Machine, mm: MmStruct) -> None:
    """The mm is gone: its events join the machine's total of exited mms."""
    for name, value in mm.cnt.items():
        if name not in GAUGES:
            machine.retired_cnt[name] += value
    for name, arr in mm.per_order.items():
        if name not in machine.gauges:
            for o, v in enumerate(arr):
                machine.retired_per_order[name][o] += v
    machine.mms.remove(mm)
