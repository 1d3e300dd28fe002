"""The PTE-level fault path and zap (mm/memory.c): handle_mm_fault(),
handle_pte_fault(), do_anonymous_page() with alloc_anon_folio()'s mTHP order
walk, do_wp_page(), zap_pte_range(), and the access loop of the CPU
(arch/x86/mm/fault.c do_user_addr_fault(): find_vma, access_error,
handle_mm_fault, retry).
"""
from __future__ import annotations

from typing import Optional

from pylaf.address_space import Access, FaultKind
from pylaf.reference import huge_memory, policy
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
    VM_EXEC,
    VM_FAULT_ERROR,
    VM_FAULT_FALLBACK,
    VM_FAULT_OOM,
    VM_FAULT_RETRY,
    VM_FAULT_SIGBUS,
    VM_FAULT_USERFAULT,
    VM_READ,
    VM_UFFD_FLAGS,
    VM_UFFD_MISSING,
    VM_UFFD_WP,
    VM_WRITE,
)
from pylaf.reference.mm_types import HugePmd, MmStruct, PteTable, RefFolio, RefVma, linear_page_index
from pylaf.reference.pgtable import (
    clear_pte,
    contpte_try_fold,
    contpte_unfold,
    contpte_unfold_partial,
    pmd_alloc,
    pte_alloc,
    set_pte,
)
from pylaf.reference.rmap import (
    anon_vma_prepare,
    discard_folio,
    folio_add_new_anon_rmap,
    folio_put,
    folio_remove_rmap_ptes,
)

#: do_user_addr_fault() retries: the emulator gives up (SIGBUS) after this many
MAX_FAULT_RETRIES = 64


# --------------------------------------------------------------- set_ptes / rmap
def map_folio_ptes(mm: MmStruct, folio: RefFolio, addr: int, bits: int) -> None:
    """set_ptes() of a whole new folio at ``addr`` (contpte blocks where the
    folio covers an aligned block) + rmap/lru/RSS accounting."""
    g = mm.geo
    table = mm.pte_table(addr)
    assert table is not None
    i0 = g.pte_index(addr)
    nr = folio.nr
    cn = g.cont_nr
    blocks = 0
    for k in range(nr):
        raw = ((folio.pfn + k) << PFN_SHIFT) | bits
        b = (i0 + k) & ~(cn - 1) if cn else 0
        if (nr > 1 and cn and b >= i0 and b + cn <= i0 + nr
                and ((folio.pfn + (b - i0)) & (cn - 1)) == 0):
            raw |= PTE_CONT
            blocks += (i0 + k) == b
        table.ptes[i0 + k] = raw
    table.used += nr
    mm.cnt["contpte_blocks"] += blocks
    if nr == 1 and cn:
        contpte_try_fold(mm, table, i0)
    folio.refcount = nr
    folio_add_new_anon_rmap(mm, folio)
    mm.add_anon_rss(nr)


def remove_rmap_ptes(mm: MmStruct, folio: RefFolio, k: int, nr: int) -> None:
    """folio_remove_rmap_ptes() of pages k..k+nr-1 + the references the PTEs
    held (tlb_flush_mmu() -> folios_put_refs()).  A large anon folio left
    partially mapped goes to deferred_split_folio() (__folio_remove_rmap())."""
    mm.cnt["mm_anonpages"] -= nr
    if folio_remove_rmap_ptes(mm, folio, k, nr) and not folio.partially_mapped:
        huge_memory.deferred_split_folio(mm, folio, True)
    folio_put(mm, folio, nr)


# -------------------------------------------------------------------------- zap
def _pte_batch(ptes: list[int], i: int, i1: int, folio: RefFolio) -> int:
    """folio_pte_batch(): consecutive pages of the same folio; young, dirty and
    write are ignored, the uffd-wp bit is not."""
    old = ptes[i]
    pfn = old >> PFN_SHIFT
    fend = folio.pfn + folio.nr
    n = 1
    while (i + n < i1 and pfn + n < fend and ptes[i + n] & PTE_PRESENT
           and not ptes[i + n] & PTE_SPECIAL and (ptes[i + n] >> PFN_SHIFT) == pfn + n
           and (ptes[i + n] & PTE_UFFD_WP) == (old & PTE_UFFD_WP)):
        n += 1
    return n


def zap_pte_range(mm: MmStruct, table: PteTable, i0: int, i1: int) -> None:
    """zap_pte_range(): clear [i0, i1), one folio_pte_batch() at a time."""
    ptes = table.ptes
    i = i0
    while i < i1:
        old = ptes[i]
        if not old:
            i += 1
            continue
        if old & PTE_SPECIAL:
            clear_pte(table, i)
            if old & PTE_TOUCHED:
                mm.cnt["zero_pages_touched"] -= 1
            i += 1
            continue
        pfn = old >> PFN_SHIFT
        folio = mm.folio_of[pfn]
        n = _pte_batch(ptes, i, i1, folio)
        for j in range(i, i + n):
            if ptes[j] & PTE_TOUCHED:
                mm.cnt["pages_touched"] -= 1
            clear_pte(table, j)
        remove_rmap_ptes(mm, folio, pfn - folio.pfn, n)
        i += n


def zap_range(mm: MmStruct, start: int, end: int) -> None:
    """zap_page_range_single() / unmap_vmas() over [start, end) of one VMA."""
    g = mm.geo
    addr = start
    while addr < end:
        idx = g.pmd_index(addr)
        nxt = min((idx + 1) << g.pmd_shift, end)
        ent = mm.pmd.get(idx)
        if isinstance(ent, HugePmd):
            if nxt - addr == g.pmd_size:
                huge_memory.zap_huge_pmd(mm, idx)
                addr = nxt
                continue
            huge_memory.split_huge_pmd(mm, idx)
            ent = mm.pmd.get(idx)
        if isinstance(ent, PteTable):
            i0 = g.pte_index(addr)
            i1 = i0 + ((nxt - addr) >> g.page_shift)
            contpte_unfold_partial(mm, ent, i0, i1)
            zap_pte_range(mm, ent, i0, i1)
        addr = nxt


# ------------------------------------------------------------------ the access
def access_ok(vma: Optional[RefVma], write: bool) -> bool:
    """access_error() inverted: a write needs VM_WRITE, a read any access bit."""
    if vma is None:
        return False
    if write:
        return bool(vma.flags & VM_WRITE)
    return bool(vma.flags & (VM_READ | VM_WRITE | VM_EXEC))


def _mark_touched(mm: MmStruct, zero: bool) -> None:
    mm.cnt["zero_pages_touched" if zero else "pages_touched"] += 1


def try_hit(mm: MmStruct, addr: int, write: bool) -> bool:
    """The MMU: a present entry that allows the access completes it (and the
    emulator marks the page TOUCHED).  A pte_protnone() entry allows nothing."""
    g = mm.geo
    ent = mm.pmd.get(g.pmd_index(addr))
    if ent is None:
        return False
    k = g.pte_index(addr)
    if isinstance(ent, HugePmd):
        if ent.flags & PTE_PROTNONE or (write and not ent.flags & PTE_WRITE):
            return False
        if not ent.touched[k]:
            ent.touched[k] = 1
            _mark_touched(mm, ent.folio.huge_zero)
        return True
    raw = ent.ptes[k]
    if not raw & PTE_PRESENT or raw & PTE_PROTNONE or (write and not raw & PTE_WRITE):
        return False
    if not raw & PTE_TOUCHED:
        ent.ptes[k] = raw | PTE_TOUCHED
        _mark_touched(mm, bool(raw & PTE_SPECIAL))
    return True


def _fault_failed(mm: MmStruct, ret: int) -> Optional[Access]:
    """The access outcome a handle_mm_fault() return ends the access with."""
    if ret & VM_FAULT_OOM:
        mm.cnt["faults_oom"] += 1
        return Access.OOM
    if ret & VM_FAULT_SIGBUS:
        mm.cnt["faults_sigbus"] += 1
        return Access.SIGBUS
    if ret & VM_FAULT_USERFAULT:
        return Access.USERFAULT
    return None


def access(mm: MmStruct, addr: int, write: bool) -> tuple[Access, FaultKind, int, int]:
    """One access as the CPU does it: (access, kind, vm_fault, nr_faults).

    The MMU either allows it (a hit) or the fault path runs
    (do_user_addr_fault: find_vma, access_error, handle_mm_fault) and the
    access is re-executed, until it completes or fails.
    """
    if try_hit(mm, addr, write):
        mm.cnt["hits"] += 1
        return Access.HIT, FaultKind.NONE, 0, 0
    nr_faults = 0
    kind, ret = FaultKind.NONE, 0
    while True:
        mm.cnt["faults"] += 1
        vma = mm.find_vma(addr)
        if vma is None or not access_ok(vma, write):
            mm.cnt["faults_sigsegv"] += 1
            return Access.SIGSEGV, kind, ret, nr_faults
        ret, kind = handle_mm_fault(mm, vma, addr, write)
        nr_faults += 1
        failed = _fault_failed(mm, ret)
        if failed is not None:
            return failed, kind, ret, nr_faults
        if try_hit(mm, addr, write):
            return Access.FAULT, kind, ret, nr_faults
        mm.cnt["faults_retried"] += 1
        if nr_faults >= MAX_FAULT_RETRIES:
            mm.cnt["faults_sigbus"] += 1
            return Access.SIGBUS, kind, ret, nr_faults


# ------------------------------------------------------------- handle_mm_fault
def handle_mm_fault(mm: MmStruct, vma: RefVma, addr: int, write: bool) -> tuple[int, FaultKind]:
    """handle_mm_fault() + mm_account_fault(): a VM_FAULT_RETRY (userfault) is
    not accounted; every other fault counts in pgfault, and in min_flt when
    it succeeded."""
    ret, kind = __handle_mm_fault(mm, vma, addr, write)
    if ret & VM_FAULT_USERFAULT:
        ret |= VM_FAULT_RETRY
        mm.cnt["faults_userfault"] += 1
        kind = FaultKind.NONE
    else:
        mm.cnt["pgfault"] += 1
        if not ret & VM_FAULT_ERROR:
            mm.cnt["min_flt"] += 1
        else:
            kind = FaultKind.NONE       # the kind names what mapped the page
    return ret, kind


def __handle_mm_fault(mm: MmStruct, vma: RefVma, addr: int, write: bool) -> tuple[int, FaultKind]:
    """__handle_mm_fault(): the PMD level first (create_huge_pmd, wp_huge_pmd),
    then handle_pte_fault() on VM_FAULT_FALLBACK."""
    pmd_alloc(mm, addr)
    idx = mm.geo.pmd_index(addr)
    ent = mm.pmd.get(idx)
    ret, kind = VM_FAULT_FALLBACK, FaultKind.NONE
    if ent is None and policy.pmd_allowed(mm, vma):
        ret, kind = huge_memory.do_huge_pmd_anonymous_page(mm, vma, addr, write)
    elif isinstance(ent, HugePmd):
        if not (write and not ent.flags & PTE_WRITE):
            return 0, FaultKind.NONE              # huge_pmd_set_accessed()
        ret, kind = huge_memory.do_huge_pmd_wp_page(mm, vma, addr, idx)
    if not ret & VM_FAULT_FALLBACK:
        if not ret:
            mm.cnt["faults_pmd"] += 1
        return ret, kind
    return handle_pte_fault(mm, vma, addr, write)


def handle_pte_fault(mm: MmStruct, vma: RefVma, addr: int, write: bool) -> tuple[int, FaultKind]:
    """handle_pte_fault(): none -> do_anonymous_page(); write to a read-only
    PTE -> do_wp_page(); else the access is spurious."""
    table = mm.pte_table(addr)
    k = mm.geo.pte_index(addr)
    if table is None or not table.ptes[k]:
        return do_anonymous_page(mm, vma, addr, write)
    if write and not table.ptes[k] & PTE_WRITE:
        return do_wp_page(mm, vma, addr, table, k)
    return 0, FaultKind.NONE


# ------------------------------------------------------------ do_anonymous_page
class AllocRetry(Exception):
    """alloc_anon_folio() returned ERR_PTR(-EAGAIN) (pte_offset_map() failed)."""


def _zero_page_fault(mm: MmStruct, vma: RefVma, addr: int, table: PteTable) -> tuple[int, FaultKind]:
    """do_anonymous_page(), read: map the shared zero page."""
    k = mm.geo.pte_index(addr)
    if table.ptes[k]:                            # vmf_pte_changed()
        return 0, FaultKind.NONE
    if vma.flags & VM_UFFD_MISSING:
        return VM_FAULT_USERFAULT, FaultKind.NONE
    set_pte(mm, table, k, PTE_PRESENT | PTE_SPECIAL | PTE_YOUNG)
    mm.cnt["zero_page_maps"] += 1
    mm.cnt["faults_read"] += 1
    return 0, FaultKind.ANON_READ


def _run_injected_race(mm: MmStruct) -> None:
    """LAF_INJECT_RACE: another thread write-accesses race_addr between our
    allocation and the PTL recheck."""
    if mm.race_addrs and not mm.in_race:
        race_addr = mm.race_addrs.pop(0)
        mm.in_race = True
        access(mm, race_addr, True)
        mm.in_race = False


def do_anonymous_page(mm: MmStruct, vma: RefVma, addr: int, write: bool) -> tuple[int, FaultKind]:
    """do_anonymous_page(): zero page on read; on write alloc_anon_folio(),
    recheck the PTEs under the lock, set_ptes() the whole folio."""
    g = mm.geo
    idx = g.pmd_index(addr)
    if idx not in mm.pmd and not pte_alloc(mm, idx):
        return VM_FAULT_OOM, (FaultKind.ANON_WRITE if write else FaultKind.ANON_READ)
    table = mm.pte_table(addr)
    assert table is not None
    if not write:
        return _zero_page_fault(mm, vma, addr, table)
    anon_vma_prepare(mm, vma)
    try:
        folio = alloc_anon_folio(mm, vma, addr)
    except AllocRetry:
        return 0, FaultKind.NONE
    if folio is None:
        return VM_FAULT_OOM, FaultKind.ANON_WRITE
    nr = folio.nr
    start = addr & ~(nr * g.page_size - 1)        # aligned in VA, whatever the VMA's pgoff
    folio.index = linear_page_index(g, vma, start)
    _run_injected_race(mm)
    i0 = g.pte_index(start)
    table = mm.pte_table(addr)
    if table is None or any(table.ptes[i0:i0 + nr]):
        discard_folio(mm, folio)
        return 0, FaultKind.NONE
    if vma.flags & VM_UFFD_MISSING:
        discard_folio(mm, folio)
        return VM_FAULT_USERFAULT, FaultKind.ANON_WRITE
    bits = PTE_PRESENT | PTE_YOUNG
    if vma.flags & VM_WRITE:
        bits |= PTE_WRITE | PTE_DIRTY
    map_folio_ptes(mm, folio, start, bits)
    if folio.order:
        mm.per_order["anon_fault_alloc"][folio.order] += 1
    mm.per_order["folios_mapped"][folio.order] += 1
    mm.cnt["faults_write"] += 1
    policy.policy_auto_update(mm, vma, addr, folio.order)
    return 0, FaultKind.ANON_WRITE


def folio_prealloc(mm: MmStruct, index: int) -> Optional[RefFolio]:
    """folio_prealloc(): order 0, zeroed, charged, with folio->index ``index``;
    None means VM_FAULT_OOM."""
    pfn = mm.phys.alloc_order0()
    if pfn is None:
        return None
    if not mm.phys.charge_order0():
        mm.phys.free_pages(pfn, 0)
        return None
    return RefFolio(pfn, 0, index)


def _pte_range_none(mm: MmStruct, table: Optional[PteTable], addr: int, nr: int) -> bool:
    if table is None:
        return True
    i0 = mm.geo.pte_index(addr)
    return not any(table.ptes[i0:i0 + nr])


def _neighbour_full(mm: MmStruct, vma: RefVma, table: Optional[PteTable], start: int, order: int) -> bool:
    """anon_beside_full: a same-size neighbour inside the VMA and the PTE table is full."""
    g = mm.geo
    size = g.page_size << order
    if table is None:
        return False
    for nb in (start - size, start + size):
        if nb < vma.start or nb + size > vma.end or g.pmd_index(nb) != g.pmd_index(start):
            continue
        i0 = g.pte_index(nb)
        if all(table.ptes[i0:i0 + (1 << order)]):
            return True
    return False


def _top(orders: int) -> int:
    return orders.bit_length() - 1


def _suitable_orders(mm: MmStruct, vma: RefVma, addr: int, orders: int) -> int:
    """thp_vma_suitable_orders() then the pte_range_none() walk: drop orders
    from the top until the folio fits the VMA, then until its PTEs are none."""
    ps = mm.geo.page_size
    while orders:
        size = ps << _top(orders)
        haddr = addr & ~(size - 1)
        if haddr >= vma.start and haddr + size <= vma.end:
            break
        orders &= ~(1 << _top(orders))
    if not orders:
        return 0
    if mm.inject_pte_map:
        mm.inject_pte_map -= 1
        raise AllocRetry()
    table = mm.pte_table(addr)
    while orders and not _pte_range_none(mm, table, addr & ~((ps << _top(orders)) - 1), 1 << _top(orders)):
        orders &= ~(1 << _top(orders))
    return orders


def _try_order(mm: MmStruct, o: int, haddr: int) -> tuple[Optional[RefFolio], bool]:
    """One order of the walk: (folio, stop).  stop without a folio is OOM (LAF v3)."""
    pfn = mm.phys.alloc_pages(o)
    if pfn is not None:
        if mm.phys.try_charge(1 << o, o):
            return RefFolio(pfn, o, haddr >> mm.geo.page_shift), True
        mm.phys.free_pages(pfn, o)
        if not policy.charge_in_loop(mm):
            return None, True                    # LAF v3: charge once after allocating
        mm.per_order["anon_fault_fallback_charge"][o] += 1
    mm.per_order["anon_fault_fallback"][o] += 1
    mm.cnt["alloc_retries"] += 1
    return None, False


def alloc_anon_folio(mm: MmStruct, vma: RefVma, addr: int) -> Optional[RefFolio]:
    """alloc_anon_folio(): the mTHP order walk (largest first, falling back on
    allocation or charge failure), then order 0."""
    orders = 0
    if not vma.flags & VM_UFFD_FLAGS:                # userfaultfd_armed()
        orders = _suitable_orders(mm, vma, addr, policy.anon_orders(mm, vma))
    table = mm.pte_table(addr)
    while orders:
        o = _top(orders)
        orders &= ~(1 << o)
        haddr = addr & ~((mm.geo.page_size << o) - 1)
        if mm.pol.anon_beside_full and not _neighbour_full(mm, vma, table, haddr, o):
            mm.per_order["anon_fault_declined"][o] += 1
            continue
        folio, stop = _try_order(mm, o, haddr)
        if stop:
            return folio
    return folio_prealloc(mm, addr >> mm.geo.page_shift)


# ------------------------------------------------------------------- do_wp_page
def do_wp_page(mm: MmStruct, vma: RefVma, addr: int, table: PteTable, k: int) -> tuple[int, FaultKind]:
    """do_wp_page(): uffd-wp hands over; the zero page is copied; an anon
    page is reused when PageAnonExclusive ("we must reuse the page without
    further checks") or wp_can_reuse_anon_folio() allows it (then
    SetPageAnonExclusive on that page), else copied (wp_page_copy())."""
    pte = table.ptes[k]
    if pte & PTE_UFFD_WP and vma.flags & VM_UFFD_WP:
        return VM_FAULT_USERFAULT, FaultKind.NONE
    if pte & PTE_SPECIAL:
        return wp_page_copy(mm, vma, addr, table, k)
    pfn = pte >> PFN_SHIFT
    folio = mm.folio_of[pfn]
    page = pfn - folio.pfn
    if not (folio.anon_exclusive[page] or wp_can_reuse_anon_folio(mm, folio, vma)):
        return wp_page_copy(mm, vma, addr, table, k)
    folio.anon_exclusive[page] = 1
    wp_page_reuse(mm, table, k)
    return 0, FaultKind.WP


def wp_can_reuse_anon_folio(mm: MmStruct, folio: RefFolio, vma: RefVma) -> bool:
    """wp_can_reuse_anon_folio(): a small folio is reused when its only
    reference is this mapping (folio_ref_count() == 1; folio_move_anon_rmap()
    moves it to ``vma``'s anon_vma, which the model does not track).  A large
    one goes to __wp_can_reuse_large_anon_folio()."""
    if folio.large:
        return wp_can_reuse_large_anon_folio(folio)
    return folio.refcount == 1


def wp_can_reuse_large_anon_folio(folio: RefFolio) -> bool:
    """__wp_can_reuse_large_anon_folio() (CONFIG_MM_ID): not when at most one
    page is mapped ("just free up a large folio if only a single page is
    mapped"), not when maybe mapped shared, not when some reference is not a
    mapping (folio_large_mapcount() != folio_ref_count())."""
    if folio.large_mapcount <= 1 or folio.shared:
        return False
    return folio.large_mapcount == folio.refcount


def wp_page_reuse(mm: MmStruct, table: PteTable, k: int) -> None:
    """wp_page_reuse(): ptep_set_access_flags() makes this one PTE young,
    dirty and writable (unfolding a contpte block first); count_vm_event(PGREUSE)."""
    contpte_unfold(mm, table, k)
    table.ptes[k] |= PTE_WRITE | PTE_DIRTY | PTE_YOUNG
    mm.cnt["pgreuse"] += 1
    mm.cnt["faults_wp"] += 1


def wp_page_copy(mm: MmStruct, vma: RefVma, addr: int, table: PteTable, k: int) -> tuple[int, FaultKind]:
    """wp_page_copy(): a new order-0 folio (zeroed for the zero page, else a
    copy of the one page) replaces the old page (ptep_clear_flush() +
    set_pte_at()); the old page loses this mapping (folio_remove_rmap_pte())
    and the reference it held.  RSS grows only when the old page was the zero page."""
    anon_vma_prepare(mm, vma)
    new = folio_prealloc(mm, linear_page_index(mm.geo, vma, addr))
    if new is None:
        return VM_FAULT_OOM, FaultKind.WP
    old = table.ptes[k]
    touched = old & PTE_TOUCHED
    contpte_unfold(mm, table, k)
    clear_pte(table, k)
    if old & PTE_SPECIAL:
        if touched:
            mm.cnt["zero_pages_touched"] -= 1
    else:
        if touched:
            mm.cnt["pages_touched"] -= 1
        of = mm.folio_of[old >> PFN_SHIFT]
        remove_rmap_ptes(mm, of, (old >> PFN_SHIFT) - of.pfn, 1)
    raw = (new.pfn << PFN_SHIFT) | PTE_PRESENT | PTE_YOUNG | PTE_DIRTY | PTE_WRITE
    if touched:
        raw |= PTE_TOUCHED
        mm.cnt["pages_touched"] += 1
    table.ptes[k] = raw
    table.used += 1
    new.refcount = 1
    folio_add_new_anon_rmap(mm, new)
    mm.add_anon_rss(1)
    mm.per_order["folios_mapped"][0] += 1
    contpte_try_fold(mm, table, k)
    mm.cnt["faults_wp"] += 1
    mm.cnt["faults_wp_copy"] += 1
    return 0, FaultKind.WP
