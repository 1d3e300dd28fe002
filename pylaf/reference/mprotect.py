"""mprotect() (mm/mprotect.c, Linux 6.18): do_mprotect_pkey(),
mprotect_fixup(), change_protection() -> change_pmd_range() ->
change_pte_range() / change_huge_pmd() (mm/huge_memory.c).  Rules in
docs/kernel-semantics.md §4 and §6.4.

Argument rules (do_mprotect_pkey(), in order): ``start`` not page aligned
-> EINVAL; ``len == 0`` -> 0; ``start + PAGE_ALIGN(len)`` wrapping (or
PAGE_ALIGN wrapping to 0) -> ENOMEM; no VMA at ``start`` -> ENOMEM; a hole
in the range -> ENOMEM after the VMAs before it were changed.  The prot
string is checked before (ValueError), as :meth:`Reference.mmap` does.

Modelling choices:

* every VMA is private anonymous with VM_MAY{READ,WRITE,EXEC}: no EACCES;
  no mseal (EPERM), no memory-deny-write-execute, no PROT_GROWS*, no pkeys,
  no RLIMIT_DATA, no overcommit refusal, no VM_LOCKED populate;
* a private mapping's vm_page_prot is never writable (PAGE_COPY), so
  pte_modify() clears the write bit of every PTE, and VM_WRITE only comes
  back through the write upgrade (MM_CP_TRY_CHANGE_WRITABLE);
* PROT_NONE entries are pte_protnone() (``PTE_PROTNONE``, present but
  inaccessible to the MMU); an access there fails access_error() first
  (SIGSEGV, counted in ``faults_sigsegv``);
* no soft-dirty (CONFIG_MEM_SOFT_DIRTY is off on the machine, §0), no NUMA
  hinting (MM_CP_PROT_NUMA).
"""
from __future__ import annotations

from typing import Optional

from pylaf.reference.abi import (
    EINVAL,
    ENOMEM,
    MASK64,
    PFN_SHIFT,
    PTE_DIRTY,
    PTE_PROTNONE,
    PTE_SPECIAL,
    PTE_TOUCHED,
    PTE_UFFD_WP,
    PTE_WRITE,
    PTE_YOUNG,
    VM_ACCESS_FLAGS,
    VM_ACCOUNT,
    VM_EXEC,
    VM_READ,
    VM_UFFD_WP,
    VM_WRITE,
    page_align,
)
from pylaf.reference.huge_memory import split_huge_pmd
from pylaf.reference.mm_types import HugePmd, MmStruct, PteTable, RefFolio, RefVma
from pylaf.reference.pgtable import contpte_set_ptes, contpte_unfold_partial
from pylaf.reference.vma import vma_modify_splits, vma_set_flags

#: PTE bits folio_pte_batch_flags(FPB_RESPECT_SOFT_DIRTY | FPB_RESPECT_WRITE)
#: lets differ inside a batch: young and dirty (and the emulator's TOUCHED,
#: and PTE_CONT, which the model's batchers all ignore)
BATCH_IGNORES = PTE_YOUNG | PTE_DIRTY | PTE_TOUCHED
_CONT_AND_PFN = ~((1 << PFN_SHIFT) - 1)


def calc_vm_prot_bits(prot: str) -> int:
    """calc_vm_prot_bits(): ``"rw"``, ``"r"``, ``""`` (PROT_NONE), ``"rx"``, ``"rwx"``
    ... -> VM_READ/VM_WRITE/VM_EXEC.  ValueError for another letter."""
    if set(prot) - set("rwx"):
        raise ValueError(f"invalid prot {prot!r}: use a combination of 'r', 'w' and 'x'")
    return ((VM_READ if "r" in prot else 0) | (VM_WRITE if "w" in prot else 0)
            | (VM_EXEC if "x" in prot else 0))


# ---------------------------------------------------------------- the syscall
def do_mprotect_pkey(mm: MmStruct, start: int, length: int, prot_bits: int) -> int:
    """do_mprotect_pkey() (pkey -1): 0 or a negative errno; rules in the
    module docstring.  Each VMA gets ``calc_vm_prot_bits(prot) | (vm_flags &
    ~VM_ACCESS_FLAGS)`` through mprotect_fixup(); nothing is rolled back."""
    g = mm.geo
    if start & (g.page_size - 1):
        return EINVAL
    if not length:
        return 0
    end = start + page_align(length, g.page_size)
    if end <= start or end > MASK64:
        return ENOMEM
    vma = mm.find_vma(start)
    if vma is None:
        return ENOMEM
    addr = start
    while addr < end:
        vma = mm.find_vma(addr)
        if vma is None:                               # a hole: vma->vm_start != tmp
            return ENOMEM
        newflags = prot_bits | (vma.flags & ~VM_ACCESS_FLAGS)
        cur_end = min(vma.end, end)
        err = mprotect_fixup(mm, vma, addr, cur_end, newflags)
        if err:
            return err
        addr = cur_end
    return 0


def split_allowed(mm: MmStruct, vma: RefVma, start: int, end: int, newflags: int) -> bool:
    """The vm.max_map_count hook of vma_modify_flags(): each split_vma()
    refuses with -ENOMEM at ``map_count >= max_map_count`` (§6.6); an edge a
    merge absorbs needs no split; both splits of a middle range are checked
    before the first, as madvise's flag changes do (vma.modify_flags())."""
    splits = vma_modify_splits(mm, vma, start, end, newflags)
    return not splits or len(mm.vma_list) + splits - 1 < mm.max_map_count


def mprotect_fixup(mm: MmStruct, vma: RefVma, start: int, end: int, newflags: int) -> int:
    """mprotect_fixup(): nothing when the flags do not change; VM_ACCOUNT is
    gained by becoming writable (unless already accounted or writable) and
    lost by becoming read-only without an anon_vma; vma_modify_flags()
    splits and merges; change_protection() with MM_CP_TRY_CHANGE_WRITABLE
    when VM_WRITE (vma_wants_manual_pte_write_upgrade())."""
    oldflags = vma.flags
    if newflags == oldflags:
        return 0
    if newflags & VM_WRITE:
        if not oldflags & (VM_ACCOUNT | VM_WRITE):
            newflags |= VM_ACCOUNT
    elif oldflags & VM_ACCOUNT and not vma.anon_vma:
        newflags &= ~VM_ACCOUNT
    if not split_allowed(mm, vma, start, end, newflags):
        return ENOMEM
    vma_set_flags(mm, vma, start, end, newflags)
    target = mm.find_vma(start)
    assert target is not None and target.flags == newflags
    change_protection(mm, target, start, end, bool(newflags & VM_WRITE))
    return 0


# ------------------------------------------------------------ change_protection
def pte_modify(pte: int, vma: RefVma) -> int:
    """pte_modify(pte, vm_page_prot) of a private mapping: never writable;
    pte_protnone() without any access flag; young, dirty, special, uffd-wp
    (and TOUCHED, PTE_CONT) kept (_PAGE_CHG_MASK)."""
    pte &= ~(PTE_WRITE | PTE_PROTNONE)
    if not vma.flags & VM_ACCESS_FLAGS:
        pte |= PTE_PROTNONE
    return pte


def maybe_change_pte_writable(vma: RefVma, pte: int) -> bool:
    """maybe_change_pte_writable(): not pte_protnone(), no soft-dirty
    tracking (not configured), and not uffd-wp-tracked
    (userfaultfd_pte_wp(): the bit in a VMA registered for WP)."""
    if pte & PTE_PROTNONE:
        return False
    return not (pte & PTE_UFFD_WP and vma.flags & VM_UFFD_WP)


def change_protection(mm: MmStruct, vma: RefVma, start: int, end: int, try_writable: bool) -> None:
    """change_protection() -> change_pmd_range(): per PMD, a PMD leaf the
    range covers whole goes to change_huge_pmd(), one covered in part is
    split (__split_huge_pmd()) and falls through to change_pte_range(); no
    table: nothing to do."""
    g = mm.geo
    addr = start
    while addr < end:
        idx = g.pmd_index(addr)
        nxt = min((idx + 1) << g.pmd_shift, end)
        ent = mm.pmd.get(idx)
        if isinstance(ent, HugePmd):
            if nxt - addr == g.pmd_size:
                change_huge_pmd(ent, vma, try_writable)
                addr = nxt
                continue
            split_huge_pmd(mm, idx)
            ent = mm.pmd.get(idx)
        if isinstance(ent, PteTable):
            i0 = g.pte_index(addr)
            change_pte_range(mm, vma, ent, i0, i0 + ((nxt - addr) >> g.page_shift), try_writable)
        addr = nxt


def change_huge_pmd(ent: HugePmd, vma: RefVma, try_writable: bool) -> None:
    """change_huge_pmd(): pmd_modify() in place; writable again when
    can_change_pmd_writable(): not protnone, not uffd-wp-tracked, a normal
    anon page (never the huge zero folio) with PageAnonExclusive on the head."""
    flags = pte_modify(ent.flags, vma)
    f = ent.folio
    if (try_writable and maybe_change_pte_writable(vma, flags) and not f.huge_zero
            and f.anon_exclusive[0]):
        flags |= PTE_WRITE
    ent.flags = flags


def _batch(mm: MmStruct, ptes: list[int], i: int, i1: int) -> tuple[Optional[RefFolio], int]:
    """vm_normal_page() (None for the zero page) and
    mprotect_folio_pte_batch(): a large folio's PTEs from ``i`` mapping
    consecutive pages with the same bits but BATCH_IGNORES."""
    pte = ptes[i]
    if pte & PTE_SPECIAL:
        return None, 1
    pfn = pte >> PFN_SHIFT
    folio = mm.folio_of[pfn]
    if not folio.large:
        return folio, 1
    want = pte & ~BATCH_IGNORES & ~_CONT_AND_PFN
    n = 1
    while (i + n < i1 and pfn + n < folio.pfn + folio.nr and ptes[i + n] >> PFN_SHIFT == pfn + n
           and ptes[i + n] & ~BATCH_IGNORES & ~_CONT_AND_PFN == want):
        n += 1
    return folio, n


def modify_prot_start_ptes(mm: MmStruct, table: PteTable, i: int, nr: int) -> int:
    """modify_prot_start_ptes(): the first entry with the young and dirty bits
    of the whole batch (get_and_clear_ptes(); arm64 unfolds the contpte blocks
    the batch covers in part)."""
    contpte_unfold_partial(mm, table, i, i + nr)
    pte = table.ptes[i]
    for j in range(i + 1, i + nr):
        pte |= table.ptes[j] & (PTE_YOUNG | PTE_DIRTY)
    return pte


def prot_commit_flush_ptes(mm: MmStruct, table: PteTable, i: int, nr: int, ptent: int,
                           set_write: bool) -> None:
    """prot_commit_flush_ptes() -> modify_prot_commit_ptes() = set_ptes():
    ``ptent`` (pte_mkwrite() when ``set_write``) with advancing PFNs; each
    page keeps its own TOUCHED bit; arm64 refolds whole aligned blocks."""
    bits = (ptent & ~_CONT_AND_PFN & ~PTE_TOUCHED) | (PTE_WRITE if set_write else 0)
    pfn = ptent >> PFN_SHIFT
    for k in range(nr):
        table.ptes[i + k] = ((pfn + k) << PFN_SHIFT) | bits | (table.ptes[i + k] & PTE_TOUCHED)
    contpte_set_ptes(mm, table, i, nr)


def commit_anon_folio_batch(mm: MmStruct, folio: RefFolio, table: PteTable, i: int, nr: int,
                            ptent: int) -> None:
    """commit_anon_folio_batch(): sub-batches of equal PageAnonExclusive
    (page_anon_exclusive_sub_batch()); the exclusive ones become writable."""
    first = (ptent >> PFN_SHIFT) - folio.pfn
    k = 0
    while k < nr:
        excl = folio.anon_exclusive[first + k]
        n = 1
        while k + n < nr and folio.anon_exclusive[first + k + n] == excl:
            n += 1
        prot_commit_flush_ptes(mm, table, i + k, n, ptent + (k << PFN_SHIFT), bool(excl))
        k += n


def change_pte_range(mm: MmStruct, vma: RefVma, table: PteTable, i0: int, i1: int,
                     try_writable: bool) -> None:
    """change_pte_range(): batch by batch, modify_prot_start_ptes(),
    pte_modify(); with MM_CP_TRY_CHANGE_WRITABLE and a PTE left read-only,
    set_write_prot_commit_flush_ptes(): a private batch may become writable
    only if maybe_change_pte_writable() and its folio is anon (the zero page
    is not a normal page: it stays read-only), page by page on
    PageAnonExclusive (a page shared by fork stays write-protected: its
    next write is a do_wp_page() fault)."""
    ptes = table.ptes
    i = i0
    while i < i1:
        if not ptes[i]:
            i += 1
            continue
        folio, nr = _batch(mm, ptes, i, i1)
        ptent = pte_modify(modify_prot_start_ptes(mm, table, i, nr), vma)
        if (try_writable and not ptent & PTE_WRITE and folio is not None
                and maybe_change_pte_writable(vma, ptent)):
            commit_anon_folio_batch(mm, folio, table, i, nr, ptent)
        else:
            prot_commit_flush_ptes(mm, table, i, nr, ptent, False)
        i += nr
