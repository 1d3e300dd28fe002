"""A pure-Python reference model of the anonymous page-fault path.

This module re-implements, in plain Python and independently of the C core,
what ``csrc/`` emulates: the Linux anonymous fault path with large folios
(mainline mTHP 6.8..6.18, the 2023 LAF v3 patch and its policy alternatives),
on one emulated machine.  It was written from ``upstream-mthp.md``, the LAF
seed thread, ``docs/kernel-findings.md`` and the ABI in ``csrc/laf.h``, and is
meant to be read beside ``mm/memory.c``: the functions keep the kernel's
names (``handle_mm_fault``, ``do_anonymous_page``, ``alloc_anon_folio``,
``do_huge_pmd_anonymous_page``, ``zap_pte_range``, ``free_pgd_range`` ...).

:class:`Reference` mirrors :class:`pylaf.AddressSpace` (``mmap``, ``munmap``,
``madvise``, ``prctl``, ``uffd_*``, ``fault``, ``touch``, ``touch_range``,
``stats``, ``read_ptes``, ``vmas``, ``pte``, ``folio``, ``fragment`` ...), so
the same driver code runs against both; ``tests/test_differential.py`` does
exactly that and compares every PTE, VMA and counter after every step.

It is also what a user would write without the C core, and about 200x
slower (~9 us per order-0 fault against ~0.04 us).  It calls no C code: it
only reuses pylaf's result types (``Access``, ``FaultResult``, ``Stats``
...) and policy parsing, and numpy for the ``read_ptes``/``touch`` arrays.

Modelling choices shared with the C core (beyond the kernel):

* one mm per machine; RAM is frames ``0..N-1``; frame 0 is the shared zero
  page.  The buddy allocator is deterministic (see :class:`BuddyAllocator`),
  so PFNs are comparable.
* a PTE table takes one order-0 frame (not charged to the memcg); PMD tables
  live in host memory and are only counted (``nr_pmds``).
* an order-0 allocation or charge failure (or a page-table frame failure)
  runs the deferred-split shrinker once and retries once, then OOM.
* memcg: a page-count limit; a charge of ``nr`` pages fails when
  ``charged + nr > limit``.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from pylaf.address_space import (
    Access,
    FaultKind,
    FaultResult,
    Folio,
    FolioFlags,
    Pte,
    TouchResult,
    Vma,
    VmFlags,
)
from pylaf.arguments import address_array
from pylaf.config import Config
from pylaf.errors import ClosedError, InvariantError, LafError, error_for
from pylaf.policy import Policy
from pylaf.sizes import order_of, parse_size
from pylaf.stats import PER_ORDER_FIELDS, SCALAR_FIELDS, Stats

__all__ = ["BuddyAllocator", "Reference"]

# --------------------------------------------------------------------------
# ABI constants (csrc/laf.h); spelled out so this module needs no C build
# --------------------------------------------------------------------------
NR_ORDERS = 16
COSTLY_ORDER = 3

EPERM, ENOENT, ENOMEM, EFAULT, EBUSY, EEXIST, EINVAL = -1, -2, -12, -14, -16, -17, -22
ENOSPC, ERANGE, ENOSYS, EUCLEAN = -28, -34, -38, -117

VM_READ, VM_WRITE, VM_EXEC, VM_SHARED = 0x1, 0x2, 0x4, 0x8
VM_UFFD_MISSING, VM_UFFD_WP, VM_UFFD_MINOR = 0x200, 0x1000, 0x20000
VM_UFFD_FLAGS = VM_UFFD_MISSING | VM_UFFD_WP | VM_UFFD_MINOR
VM_HUGEPAGE, VM_NOHUGEPAGE = 0x20000000, 0x40000000

MADV_DONTNEED, MADV_HUGEPAGE, MADV_NOHUGEPAGE = 4, 14, 15
PR_SET_THP_DISABLE, PR_GET_THP_DISABLE, PR_THP_DISABLE_EXCEPT_ADVISED = 41, 42, 2
UFFD_MODE_MISSING, UFFD_MODE_WP, UFFD_MODE_MINOR = 0x1, 0x2, 0x4

PTE_PRESENT, PTE_WRITE, PTE_DIRTY, PTE_YOUNG = 0x001, 0x002, 0x004, 0x008
PTE_SPECIAL, PTE_CONT, PTE_UFFD_WP, PTE_TOUCHED, PTE_HUGE = 0x010, 0x020, 0x040, 0x080, 0x100
PFN_SHIFT = 12
FLAG_MASK = (1 << PFN_SHIFT) - 1

VM_FAULT_OOM, VM_FAULT_SIGBUS, VM_FAULT_SIGSEGV = 0x1, 0x2, 0x40
VM_FAULT_NOPAGE, VM_FAULT_RETRY, VM_FAULT_FALLBACK = 0x100, 0x400, 0x800
VM_FAULT_USERFAULT = 0x100000
VM_FAULT_ERROR = VM_FAULT_OOM | VM_FAULT_SIGBUS | VM_FAULT_SIGSEGV

ORDER_NONE, ORDER_ZERO, ORDER_HUGE_ZERO = -1, -2, -3
MASK64 = (1 << 64) - 1
TASK_SIZE = (1 << 47) - 4096          # x86-64 TASK_SIZE_MAX (the C core uses it for every arch)
MMAP_GAP = 128 << 20                  # mmap_base = TASK_SIZE - 128M (no randomisation)

POLICY_KINDS = ("upstream", "laf-v3", "huang-a", "huang-b", "huang-sysfs", "fixed")


def _err(code: int, what: str) -> LafError:
    """The exception pylaf.errors.check() raises for a C return code (the one
    code -> exception map lives in pylaf.errors)."""
    return error_for(code, what)


# --------------------------------------------------------------------------
# Physical memory: the buddy allocator
# --------------------------------------------------------------------------
class BuddyAllocator:
    """Free lists per order, MAX order inclusive; frame 0 is never free.

    * init frees ``[1, N)`` ascending, in the largest naturally aligned blocks
      that fit, each pushed at the head of its list;
    * ``alloc(order)`` is ``__rmqueue_smallest``: the lowest non-empty order
      >= ``order``, take the list head, split (``expand``) keeping the low half
      and pushing each upper half at the head of its list, larger first;
    * ``free(pfn, order)`` is ``__free_one_page``: merge with the buddy
      (``pfn ^ (1 << order)``) while it is a free block of the same order
      inside RAM, then push the merged block at the head.

    A list is a dict used as an ordered set: its *last* key is the head.
    """

    def __init__(self, nr_frames: int, max_order: int) -> None:
        self.nr_frames = nr_frames
        self.max_order = max_order
        self.lists: list[dict[int, None]] = [dict() for _ in range(max_order + 1)]
        self.order_of_free: dict[int, int] = {}       # head pfn of a free block -> its order
        self.nr_free = 0
        pfn = 1
        while pfn < nr_frames:
            order = 0
            while (order < max_order and pfn % (2 << order) == 0
                   and pfn + (2 << order) <= nr_frames):
                order += 1
            self._push(pfn, order)
            self.nr_free += 1 << order
            pfn += 1 << order

    def _push(self, pfn: int, order: int) -> None:
        self.lists[order][pfn] = None
        self.order_of_free[pfn] = order

    def _unlink(self, pfn: int, order: int) -> None:
        del self.lists[order][pfn]
        del self.order_of_free[pfn]

    def alloc(self, order: int) -> Optional[int]:
        for cur in range(order, self.max_order + 1):
            lst = self.lists[cur]
            if lst:
                pfn, _ = lst.popitem()                  # the head
                del self.order_of_free[pfn]
                while cur > order:                      # expand(): keep the low half
                    cur -= 1
                    self._push(pfn + (1 << cur), cur)
                self.nr_free -= 1 << order
                return pfn
        return None

    def free(self, pfn: int, order: int) -> None:
        self.nr_free += 1 << order
        while order < self.max_order:
            buddy = pfn ^ (1 << order)
            if buddy >= self.nr_frames or self.order_of_free.get(buddy) != order:
                break
            self._unlink(buddy, order)
            pfn &= ~(1 << order)
            order += 1
        self._push(pfn, order)

    def take(self, target: int) -> bool:
        """Remove one specific free frame (``take_page_off_buddy``); False if in use."""
        for order in range(self.max_order + 1):
            head = target & ~((1 << order) - 1)
            if self.order_of_free.get(head) == order:
                break
        else:
            return False
        self._unlink(head, order)
        pfn = head
        while order > 0:                                # split, keeping the half with target
            order -= 1
            half = 1 << order
            if target >= pfn + half:
                self._push(pfn, order)
                pfn += half
            else:
                self._push(pfn + half, order)
        self.nr_free -= 1
        return True

    def is_free(self, pfn: int) -> bool:
        for order in range(self.max_order + 1):
            if self.order_of_free.get(pfn & ~((1 << order) - 1)) == order:
                return True
        return False


# --------------------------------------------------------------------------
# Folios, page tables, VMAs
# --------------------------------------------------------------------------
class _Folio:
    """An anonymous folio (struct folio), or the huge zero folio."""

    __slots__ = (
        "huge_zero",
        "mapped",
        "nr_mapped",
        "order",
        "partially_mapped",
        "pfn",
        "pmd_mapped",
        "queued",
        "refcount",
        "va",
    )

    def __init__(self, pfn: int, order: int, va: int) -> None:
        self.pfn = pfn
        self.order = order
        self.va = va                          # virtual address of the head page
        self.mapped = bytearray(1 << order)   # which pages a PTE maps
        self.nr_mapped = 0                    # PTE mappings
        self.pmd_mapped = False               # mapped by one PMD
        self.refcount = 0
        self.partially_mapped = False
        self.queued = False                   # on the deferred split queue
        self.huge_zero = False

    @property
    def nr(self) -> int:
        return 1 << self.order

    @property
    def mapcount(self) -> int:
        return self.nr_mapped + (1 if self.pmd_mapped else 0)


class _PteTable:
    """A PTE table: one order-0 frame; ``ptes[i]`` is the raw entry (0 = none)."""

    __slots__ = ("pfn", "ptes", "used")

    def __init__(self, pfn: int, nr: int) -> None:
        self.pfn = pfn
        self.ptes = [0] * nr
        self.used = 0                          # non-none entries


class _HugePmd:
    """A PMD leaf: a THP, or the huge zero folio.  ``table`` is the deposited
    PTE table (pgtable_trans_huge_deposit).  ``flags`` are the entry bits;
    ``touched`` the per-page TOUCHED bits the emulator keeps."""

    __slots__ = ("flags", "folio", "table", "touched")

    def __init__(self, folio: _Folio, flags: int, table: int, nr: int) -> None:
        self.folio = folio
        self.flags = flags
        self.table = table
        self.touched = bytearray(nr)


class _Vma:
    __slots__ = ("anon_vma", "auto_next", "auto_ramp", "end", "flags", "start")

    def __init__(self, start: int, end: int, flags: int) -> None:
        self.start = start
        self.end = end
        self.flags = flags
        self.anon_vma = 0
        self.auto_next = 0
        self.auto_ramp = 0

    def copy(self, start: int, end: int) -> _Vma:
        v = _Vma(start, end, self.flags)
        v.anon_vma = self.anon_vma
        v.auto_next = self.auto_next
        v.auto_ramp = self.auto_ramp
        return v

    def __repr__(self) -> str:
        return f"<vma {self.start:#x}-{self.end:#x} {self.flags:#x} av={self.anon_vma}>"


@dataclass
class _PolicyState:
    """struct laf_policy, resolved for one page size."""

    kind: str
    enabled: str
    use_zero_page: bool
    fixed_order: int
    anon_beside_full: bool
    per_size: dict[int, str]


class _Retry(Exception):
    """Internal: alloc_anon_folio() returned ERR_PTR(-EAGAIN)."""


# --------------------------------------------------------------------------
# The address space
# --------------------------------------------------------------------------
class Reference:
    """Pure-Python peer of :class:`pylaf.AddressSpace` (same API, same results)."""

    def __init__(self, config: Optional[Config] = None, **kwargs: Any) -> None:
        if config is None:
            config = Config(**kwargs)
        elif kwargs:
            raise TypeError("pass either a Config or keyword arguments, not both")
        self.config = config
        ps = int(config.page_size)
        self.page_size = ps
        self.page_shift = ps.bit_length() - 1
        self.ptrs_per_pte = ps // 8
        self.pmd_order = self.page_shift - 3
        self.pmd_size = ps << self.pmd_order
        self.pmd_shift = self.page_shift + self.pmd_order
        self.pud_shift = self.pmd_shift + self.pmd_order
        self.pud_size = 1 << self.pud_shift
        self.task_size = TASK_SIZE
        base = config.mmap_base if config.mmap_base else TASK_SIZE - MMAP_GAP
        self.mmap_base = base & ~(ps - 1)
        self.arm64 = config.arch in ("arm64", "aarch64")
        self.cont_pte_order = {12: 4, 14: 7, 16: 5}[self.page_shift] if self.arm64 else 0
        self.arch_pte_order = self.cont_pte_order if self.arm64 else -1
        self.mmap_min_addr = 65536
        self.ram_pages = int(config.ram) // ps
        self.max_order = max(10, self.pmd_order)
        self.buddy = BuddyAllocator(self.ram_pages, self.max_order)
        self.memcg_limit = int(config.memcg_limit or 0) // ps
        self.memcg_charged = 0
        self.vma_list: list[_Vma] = []
        self.pmd: dict[int, Any] = {}            # PMD index -> _PteTable | _HugePmd
        self.pmd_tables: set[int] = set()        # PUD index with a PMD table
        self.folio_of: dict[int, _Folio] = {}    # pfn -> folio (every page of every anon folio)
        self.deferred: dict[_Folio, None] = {}   # the deferred split queue (FIFO)
        self.huge_zero: Optional[_Folio] = None
        self.thp_disable = 0                     # PR_GET_THP_DISABLE value: 0, 1 or 3
        self.pinned: list[int] = []
        self.next_anon_vma = 1
        self.inject_alloc: dict[int, int] = {}
        self.inject_charge: dict[int, int] = {}
        self.inject_pte_map = 0
        self.race_addrs: list[int] = []
        self.in_race = False
        self.cnt: dict[str, Any] = {}
        for name in PER_ORDER_FIELDS:
            self.cnt[name] = [0] * NR_ORDERS
        for name in SCALAR_FIELDS:
            self.cnt[name] = 0
        self._closed = False
        self._policy_obj = config.policy
        self.pol = self._resolve(config.policy)

    # ------------------------------------------------------------ lifetime
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True

    def _live(self) -> None:
        if self._closed:
            raise ClosedError("address space is closed")

    def __enter__(self) -> Reference:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- policy
    @property
    def policy(self) -> Policy:
        return self._policy_obj

    def _resolve(self, policy: Policy) -> _PolicyState:
        fixed = policy.fixed_order
        if isinstance(fixed, str):
            fixed = order_of(fixed, self.page_size)
        if policy.kind == "fixed" and (fixed is None or not (fixed == 0 or 2 <= fixed <= self.pmd_order)):
            raise ValueError(f"invalid fixed order {fixed}: expected 0 or 2..{self.pmd_order}")
        return _PolicyState(policy.kind, policy.enabled, bool(policy.use_zero_page), int(fixed or 0),
                            bool(policy.anon_beside_full), policy.per_size_states(self.page_size))

    def set_policy(self, policy: Policy | str) -> None:
        self._live()
        if isinstance(policy, str):
            policy = Policy.parse(policy)
        self.pol = self._resolve(policy)
        self._policy_obj = policy

    def set_memcg_limit(self, limit: Optional[int | str]) -> None:
        self._live()
        nbytes = 0 if limit is None else parse_size(limit)
        if nbytes % self.page_size:
            raise ValueError(f"memcg limit {limit!r} is not a multiple of the page size")
        if nbytes and nbytes // self.page_size < self.memcg_charged:
            # memory.max below usage: the kernel reclaims, then OOM-kills;
            # the emulator refuses (-ERANGE; cgroup v1 would say -EBUSY)
            raise _err(ERANGE, f"set_memcg_limit({limit!r})")
        self.memcg_limit = nbytes // self.page_size

    # --- which orders may a fault use (policy.c's questions, from the docs)
    def _thp_disabled(self, vma: _Vma) -> bool:
        """vma_thp_disabled(): VM_NOHUGEPAGE, prctl completely, prctl except-advised."""
        if vma.flags & VM_NOHUGEPAGE:
            return True
        if self.thp_disable == 1:
            return True
        if vma.flags & VM_HUGEPAGE:
            return False
        return self.thp_disable == 3

    def _upstream_allowed(self, vma: _Vma) -> int:
        """thp_vma_allowable_orders(): bitmask of allowed orders 2..PMD_ORDER."""
        hinted = bool(vma.flags & VM_HUGEPAGE)
        glob = self.pol.enabled
        mask = 0
        for o, state in self.pol.per_size.items():
            if (state == "always" or (state == "madvise" and hinted)
                    or (state == "inherit" and (glob == "always" or (glob == "madvise" and hinted)))):
                mask |= 1 << o
        if not mask or self._thp_disabled(vma):
            return 0
        return mask

    def _laf_table(self, vma: _Vma) -> tuple[bool, bool, bool]:
        """LAF-family tables: (THP allowed, LAF allowed, LAF uncapped)."""
        kind, glob = self.pol.kind, self.pol.enabled
        hinted = bool(vma.flags & VM_HUGEPAGE)
        if self._thp_disabled(vma):
            return False, False, False
        eligible = glob == "always" or (glob in ("madvise", "small", "auto") and hinted)
        if kind == "laf-v3":
            return eligible, True, eligible
        if kind == "huang-a":
            if glob == "never":
                return False, False, False
            return eligible, True, eligible
        if kind == "huang-b":
            return eligible, eligible, eligible
        # huang-sysfs
        if glob == "never":
            return False, False, False
        if glob in ("madvise", "always"):
            return eligible, eligible, eligible
        if glob == "small":
            return False, True, hinted
        # auto: hinted THP>LAF>S, unhinted the ramp
        return hinted, True, hinted

    def _pmd_allowed(self, vma: _Vma) -> bool:
        kind = self.pol.kind
        if kind == "upstream":
            return bool(self._upstream_allowed(vma) & (1 << self.pmd_order))
        if kind == "fixed":
            return (self.pol.fixed_order == self.pmd_order and not self._thp_disabled(vma)
                    and not (vma.flags & VM_UFFD_FLAGS))
        return self._laf_table(vma)[0]

    def _unhinted_cap(self) -> int:
        """ANON_FOLIO_MAX_ORDER_UNHINTED: ilog2(max(64K, PAGE_SIZE)) - PAGE_SHIFT."""
        return max(16, self.page_shift) - self.page_shift

    def _laf_prefer(self, uncapped: bool) -> int:
        """anon_folio_order(): max(arch_wants_pte_order(), COSTLY), capped at 64K
        for VMAs that are not THP-eligible (and kept below the PMD order)."""
        order = max(self.arch_pte_order, COSTLY_ORDER)
        if not uncapped:
            order = min(order, self._unhinted_cap())
        return min(order, self.pmd_order - 1)

    def _anon_orders(self, vma: _Vma, addr: int) -> int:
        """Candidate mTHP orders (bitmask over 2..PMD_ORDER-1) before fit/emptiness."""
        kind = self.pol.kind
        below_pmd = (1 << self.pmd_order) - 1
        if kind == "upstream":
            return self._upstream_allowed(vma) & below_pmd & ~3
        if kind == "fixed":
            o = self.pol.fixed_order
            if o < 2 or o >= self.pmd_order or self._thp_disabled(vma):
                return 0
            return 1 << o
        _thp, laf, uncapped = self._laf_table(vma)
        if not laf:
            return 0
        if (self.pol.kind == "huang-sysfs" and self.pol.enabled == "auto"
                and not (vma.flags & VM_HUGEPAGE)):
            # the readahead-style ramp: every order from 2 up to the ramp
            ramp = min(vma.auto_ramp, self._unhinted_cap())
            mask = 0
            for o in range(2, ramp + 1):
                mask |= 1 << o
            return mask & below_pmd
        prefer = self._laf_prefer(uncapped)
        ladder = [prefer, COSTLY_ORDER if prefer > COSTLY_ORDER else 0]
        mask = 0
        for o in ladder:
            if o == 0:
                break
            if 2 <= o < self.pmd_order:
                mask |= 1 << o
        return mask

    def _policy_auto_update(self, vma: _Vma, addr: int, order: int) -> None:
        """huang-sysfs "auto": a write fault at exactly the end of the last folio
        mapped (the stream continues) raises the ramp by 2 orders (at least to
        2, at most the 64K cap); any other write fault lowers it by 2 (0 below 4)."""
        if self.pol.kind != "huang-sysfs" or self.pol.enabled != "auto":
            return
        size = self.page_size << order
        if addr & ~(self.page_size - 1) == vma.auto_next:
            vma.auto_ramp = 2 if vma.auto_ramp < 2 else vma.auto_ramp + 2
            vma.auto_ramp = min(vma.auto_ramp, self._unhinted_cap())
        else:
            vma.auto_ramp = 0 if vma.auto_ramp <= 3 else vma.auto_ramp - 2
        vma.auto_next = (addr & ~(size - 1)) + size

    def _charge_in_loop(self) -> bool:
        return self.pol.kind in ("upstream", "fixed")

    # --------------------------------------------------------------- VMAs
    def _find_vma(self, addr: int) -> Optional[_Vma]:
        for v in self.vma_list:
            if v.start <= addr < v.end:
                return v
            if v.start > addr:
                return None
        return None

    def _vma_index(self, vma: _Vma) -> int:
        for i, v in enumerate(self.vma_list):
            if v is vma:
                return i
        raise KeyError(vma)

    def _insert_vma(self, vma: _Vma) -> None:
        i = 0
        while i < len(self.vma_list) and self.vma_list[i].start < vma.start:
            i += 1
        self.vma_list.insert(i, vma)

    def _anon_compatible(self, a: _Vma, b: _Vma) -> bool:
        return not a.anon_vma or not b.anon_vma or a.anon_vma == b.anon_vma

    def _can_merge(self, a: _Vma, b: _Vma) -> bool:
        """a immediately below b, same flags (and uffd ctx), compatible anon_vma."""
        return a.end == b.start and a.flags == b.flags and self._anon_compatible(a, b)

    def _merge_pair(self, a: _Vma, b: _Vma) -> _Vma:
        a.end = b.end
        a.anon_vma = a.anon_vma or b.anon_vma
        self.vma_list.remove(b)
        return a

    def _split_vma(self, vma: _Vma, addr: int) -> _Vma:
        """__split_vma(): [start, addr) stays ``vma``; returns the new upper part."""
        self._split_huge_pmd_if_needed(vma, addr)
        upper = vma.copy(addr, vma.end)
        vma.end = addr
        self._insert_vma(upper)
        return upper

    def _modify_flags(self, start: int, end: int, new_flags_of) -> int:
        """vma_modify_flags() over [start, end): split at the ends, set flags, merge.

        Only VMAs whose flags change are touched (madvise_update_vma returns
        early otherwise).  Returns -ENOMEM if the range had holes.
        """
        err = 0
        addr = start
        i = 0
        while i < len(self.vma_list) and self.vma_list[i].end <= start:
            i += 1
        while addr < end:
            if i >= len(self.vma_list) or self.vma_list[i].start >= end:
                err = ENOMEM
                break
            vma = self.vma_list[i]
            if vma.start > addr:
                err = ENOMEM
                addr = vma.start
            nf = new_flags_of(vma)
            cur_end = min(vma.end, end)
            if nf != vma.flags:
                self._vma_set_flags(vma, addr, cur_end, nf)
            addr = cur_end
            i = 0
            while i < len(self.vma_list) and self.vma_list[i].end <= addr:
                i += 1
        return err

    def _vma_set_flags(self, vma: _Vma, start: int, end: int, flags: int) -> None:
        """vma_modify(): the part [start, end) of ``vma`` gets ``flags``."""
        middle = vma
        if start > middle.start:
            middle = self._split_vma(middle, start)
        if end < middle.end:
            self._split_vma(middle, end)
        middle.flags = flags
        self._merge_around(middle)

    def _merge_around(self, vma: _Vma) -> _Vma:
        """vma_merge_new_range()/vma_merge_existing_range(): merge ``vma`` with
        its neighbours where allowed (both only if prev and next are
        anon_vma-compatible); returns the resulting VMA."""
        idx = self._vma_index(vma)
        prev = self.vma_list[idx - 1] if idx > 0 else None
        nxt = self.vma_list[idx + 1] if idx + 1 < len(self.vma_list) else None
        left = prev is not None and self._can_merge(prev, vma)
        right = nxt is not None and self._can_merge(vma, nxt)
        if left and right and not self._anon_compatible(prev, nxt):
            right = False
        if left:
            vma = self._merge_pair(prev, vma)
        if right:
            self._merge_pair(vma, nxt)
        return vma

    # ------------------------------------------------------------- mmap
    def _gap_topdown(self, length: int, high: int) -> Optional[int]:
        """unmapped_area_topdown(): the top of the highest gap below ``high``
        (and above mmap_min_addr) that fits ``length``."""
        low = max(self.page_size, self.mmap_min_addr)
        top = high
        for v in reversed(self.vma_list):
            if v.start >= top:
                continue                                  # above the search window
            gap_start = max(v.end, low)
            if top > gap_start and top - gap_start >= length:
                return top - length
            top = v.start
        if top > low and top - low >= length:
            return top - length
        return None

    def _get_unmapped_area(self, length: int, hint: int) -> Optional[int]:
        if hint:
            hint = (hint + self.page_size - 1) & ~(self.page_size - 1)
            if (self.task_size - length >= hint and hint >= self.mmap_min_addr
                    and self._range_free(hint, hint + length)):
                return hint
        elif length % self.pmd_size == 0:
            # thp_get_unmapped_area_vmflags(): pad by PMD_SIZE, align
            padded = self._gap_topdown(length + self.pmd_size, self.mmap_base)
            if padded is not None:
                off_sub = (-padded) & (self.pmd_size - 1)
                return padded + self.pmd_size if off_sub == 0 else padded + off_sub
        return self._gap_topdown(length, self.mmap_base)

    def _range_free(self, start: int, end: int) -> bool:
        return all(v.end <= start or v.start >= end for v in self.vma_list)

    def mmap(self, length: int | str, *, addr: Optional[int] = None, prot: str = "rw",
             fixed: bool = False) -> int:
        self._live()
        nbytes = parse_size(length)
        if nbytes <= 0:
            raise ValueError(f"invalid mmap length {length!r}: must be > 0")
        if set(prot) - set("rw"):
            raise ValueError(f"invalid prot {prot!r}: use a combination of 'r' and 'w'")
        if fixed and addr is None:
            raise ValueError("fixed=True needs addr")
        if addr is not None and (addr < 0 or addr >= 1 << 64):
            raise ValueError(f"invalid mmap address {addr:#x}")
        what = f"mmap(addr={addr if addr is None else hex(addr)}, length={length!r}, fixed={fixed})"
        ps = self.page_size
        length_al = (nbytes + ps - 1) & ~(ps - 1)
        if length_al > self.task_size:
            raise _err(ENOMEM, what)
        hint = addr or 0
        if fixed:
            if hint & (ps - 1):
                raise _err(EINVAL, what)
            if hint > self.task_size - length_al:
                raise _err(ENOMEM, what)
            if hint < self.mmap_min_addr:
                raise _err(EPERM, what)
            if not self._range_free(hint, hint + length_al):
                raise _err(EEXIST, what)
            start = hint
        else:
            got = self._get_unmapped_area(length_al, hint)
            if got is None:
                raise _err(ENOMEM, what)
            start = got
        flags = (VM_READ if "r" in prot else 0) | (VM_WRITE if "w" in prot else 0)
        vma = _Vma(start, start + length_al, flags)
        self._insert_vma(vma)
        self._merge_around(vma)
        return start

    def munmap(self, addr: int, length: int | str) -> None:
        self._live()
        n = parse_size(length)
        what = f"munmap({addr:#x}, {length!r})"
        ps = self.page_size
        if addr & (ps - 1) or addr > self.task_size or n > self.task_size - addr:
            raise _err(EINVAL, what)
        end = addr + ((n + ps - 1) & ~(ps - 1))
        if end == addr:
            raise _err(EINVAL, what)
        self._do_munmap(addr, end)

    def _do_munmap(self, start: int, end: int) -> None:
        first = next((v for v in self.vma_list if v.end > start), None)
        if first is None or first.start >= end:
            return
        if first.start < start:
            self._split_vma(first, start)
        last = None
        for v in self.vma_list:
            if v.start < end < v.end:
                last = v
        if last is not None:
            self._split_vma(last, end)
        detached = [v for v in self.vma_list if v.start >= start and v.end <= end]
        i0 = self._vma_index(detached[0])
        i1 = self._vma_index(detached[-1])
        prev = self.vma_list[i0 - 1] if i0 > 0 else None
        nxt = self.vma_list[i1 + 1] if i1 + 1 < len(self.vma_list) else None
        floor = prev.end if prev else 0
        ceiling = nxt.start if nxt else 0
        for v in detached:                           # unmap_vmas()
            self._zap_range(v, v.start, v.end)
        self._free_pgtables(detached, floor, ceiling)
        for v in detached:
            self.vma_list.remove(v)

    # --- free_pgtables(): mm/memory.c
    def _free_pgtables(self, detached: list[_Vma], floor: int, ceiling: int) -> None:
        i = 0
        while i < len(detached):
            vma = detached[i]
            addr = vma.start
            j = i + 1
            while j < len(detached) and detached[j].start <= vma.end + self.pmd_size:
                vma = detached[j]
                j += 1
            nxt_start = detached[j].start if j < len(detached) else ceiling
            self._free_pgd_range(addr, vma.end, floor, nxt_start)
            i = j

    def _free_pgd_range(self, addr: int, end: int, floor: int, ceiling: int) -> None:
        pmd_mask = ~(self.pmd_size - 1) & MASK64
        addr &= pmd_mask
        if addr < floor:
            addr += self.pmd_size
            if not addr & MASK64:
                return
        if ceiling:
            ceiling &= pmd_mask
            if not ceiling:
                return
        if (end - 1) & MASK64 > (ceiling - 1) & MASK64:
            end -= self.pmd_size
        if addr > (end - 1) & MASK64:
            return
        # free_p4d/pud_range: one free_pmd_range() per PUD range
        a = addr
        while True:
            nxt = ((a + self.pud_size) & ~(self.pud_size - 1))
            if (nxt - 1) & MASK64 >= (end - 1) & MASK64:
                nxt = end
            if (a >> self.pud_shift) in self.pmd_tables:
                self._free_pmd_range(a, nxt, floor, ceiling)
            a = nxt
            if a == end:
                break

    def _free_pmd_range(self, addr: int, end: int, floor: int, ceiling: int) -> None:
        start = addr
        a = addr
        while True:
            nxt = (a + self.pmd_size) & ~(self.pmd_size - 1)
            if (nxt - 1) & MASK64 >= (end - 1) & MASK64:
                nxt = end
            idx = a >> self.pmd_shift
            ent = self.pmd.get(idx)
            if isinstance(ent, _PteTable):
                self._free_table(idx)
            a = nxt
            if a == end:
                break
        pud_mask = ~(self.pud_size - 1) & MASK64
        start &= pud_mask
        if start < floor:
            return
        if ceiling:
            ceiling &= pud_mask
            if not ceiling:
                return
        if (end - 1) & MASK64 > (ceiling - 1) & MASK64:
            return
        self.pmd_tables.discard(start >> self.pud_shift)
        self.cnt["nr_pmds"] -= 1

    # ------------------------------------------------------------ madvise
    def madvise(self, addr: int, length: int | str, advice: str | int) -> None:
        self._live()
        names = {"MADV_DONTNEED": MADV_DONTNEED, "dontneed": MADV_DONTNEED,
                 "MADV_HUGEPAGE": MADV_HUGEPAGE, "hugepage": MADV_HUGEPAGE,
                 "MADV_NOHUGEPAGE": MADV_NOHUGEPAGE, "nohugepage": MADV_NOHUGEPAGE}
        if isinstance(advice, str):
            if advice not in names:
                raise ValueError(f"unknown madvise advice {advice!r} "
                                 f"(expected MADV_DONTNEED, MADV_HUGEPAGE or MADV_NOHUGEPAGE)")
            adv = names[advice]
        else:
            adv = int(advice)
        n = parse_size(length)
        what = f"madvise({addr:#x}, {length!r}, {advice!r})"
        ps = self.page_size
        if adv not in (MADV_DONTNEED, MADV_HUGEPAGE, MADV_NOHUGEPAGE):
            raise _err(EINVAL, what)
        if addr & (ps - 1):
            raise _err(EINVAL, what)
        ln = (n + ps - 1) & ~(ps - 1)
        end = addr + ln
        if end < addr or end > 1 << 64:
            raise _err(EINVAL, what)
        if end == addr:
            return
        if adv == MADV_DONTNEED:
            err = self._madvise_dontneed(addr, end)
        elif adv == MADV_HUGEPAGE:
            err = self._modify_flags(addr, end, lambda v: (v.flags & ~VM_NOHUGEPAGE) | VM_HUGEPAGE)
        else:
            err = self._modify_flags(addr, end, lambda v: (v.flags & ~VM_HUGEPAGE) | VM_NOHUGEPAGE)
        if err:
            raise _err(err, what)

    def _madvise_dontneed(self, start: int, end: int) -> int:
        err = 0
        addr = start
        for v in list(self.vma_list):
            if v.end <= addr:
                continue
            if v.start >= end:
                break
            if v.start > addr:
                err = ENOMEM
                addr = v.start
            e = min(v.end, end)
            self._zap_range(v, addr, e)
            # pt_reclaim (6.14+): a PTE table the zap covered whole and left
            # empty is freed (after the pages: the tables go by RCU later)
            a = (addr + self.pmd_size - 1) & ~(self.pmd_size - 1)
            while a + self.pmd_size <= e:
                ent = self.pmd.get(a >> self.pmd_shift)
                if isinstance(ent, _PteTable) and ent.used == 0:
                    self._free_table(a >> self.pmd_shift)
                a += self.pmd_size
            addr = e
        if addr < end:
            err = ENOMEM
        return err

    # -------------------------------------------------------------- prctl
    def prctl(self, option: int, arg2: int = 0, arg3: int = 0) -> int:
        self._live()
        what = f"prctl({option}, {arg2}, {arg3})"
        if option == PR_SET_THP_DISABLE:
            disable = bool(arg2)
            if (not disable and arg3) or (arg3 & ~PR_THP_DISABLE_EXCEPT_ADVISED):
                raise _err(EINVAL, what)
            if disable:
                self.thp_disable = 3 if arg3 & PR_THP_DISABLE_EXCEPT_ADVISED else 1
            else:
                self.thp_disable = 0
            return 0
        if option == PR_GET_THP_DISABLE:
            if arg2 or arg3:
                raise _err(EINVAL, what)
            return self.thp_disable
        raise _err(EINVAL, what)

    def set_thp_disable(self, disable: bool = True, except_advised: bool = False) -> None:
        if except_advised and not disable:
            raise ValueError("except_advised only applies when disabling")
        self.prctl(PR_SET_THP_DISABLE, int(disable),
                   PR_THP_DISABLE_EXCEPT_ADVISED if except_advised else 0)

    # ---------------------------------------------------------- userfaultfd
    def _validate_uffd_range(self, start: int, length: int) -> bool:
        ps = self.page_size
        if start & (ps - 1) or length & (ps - 1) or not length:
            return False
        if start < self.mmap_min_addr or start >= self.task_size or length > self.task_size - start:
            return False
        return True

    def uffd_register(self, addr: int, length: int | str, mode: str | Iterable[str] = "missing") -> None:
        self._live()
        modes = [mode] if isinstance(mode, str) else list(mode)
        table = {"missing": UFFD_MODE_MISSING, "wp": UFFD_MODE_WP, "minor": UFFD_MODE_MINOR}
        bits = 0
        for m in modes:
            if m not in table:
                raise ValueError(f"unknown userfaultfd mode {m!r} (expected missing, wp or minor)")
            bits |= table[m]
        n = parse_size(length)
        what = f"uffd_register({addr:#x}, {length!r}, {modes})"
        if not bits or bits & ~7 or bits & UFFD_MODE_MINOR:
            raise _err(EINVAL, what)
        if not self._validate_uffd_range(addr, n):
            raise _err(EINVAL, what)
        end = addr + n
        inside = [v for v in self.vma_list if v.end > addr and v.start < end]
        if not inside:
            raise _err(EINVAL, what)
        vmf = (VM_UFFD_MISSING if bits & UFFD_MODE_MISSING else 0) | (VM_UFFD_WP if bits & UFFD_MODE_WP else 0)
        # userfaultfd_register_range(): a VMA that already has these modes is skipped
        self._modify_flags(addr, end, lambda v: v.flags if (v.flags & vmf) == vmf
                           else (v.flags & ~VM_UFFD_FLAGS) | vmf)

    def uffd_unregister(self, addr: int, length: int | str) -> None:
        self._live()
        n = parse_size(length)
        what = f"uffd_unregister({addr:#x}, {length!r})"
        if not self._validate_uffd_range(addr, n):
            raise _err(EINVAL, what)
        end = addr + n
        inside = [v for v in self.vma_list if v.end > addr and v.start < end]
        if not inside:
            raise _err(EINVAL, what)
        for v in inside:
            if v.flags & VM_UFFD_WP:
                self._change_protection(v, max(v.start, addr), min(v.end, end), wp=False)
        self._modify_flags(addr, end, lambda v: v.flags & ~VM_UFFD_FLAGS)

    def _uffd_dst_vma(self, addr: int, n: int, what: str) -> _Vma:
        """uffd_mfill_lock(): the one registered VMA holding the whole range."""
        if not self._validate_uffd_range(addr, n):
            raise _err(EINVAL, what)
        vma = self._find_vma(addr)
        if vma is None:
            raise _err(ENOENT, what)
        self._anon_vma_prepare(vma)            # find_vma_and_prepare_anon()
        if addr + n > vma.end or not vma.flags & VM_UFFD_FLAGS:
            raise _err(ENOENT, what)
        return vma

    def uffd_copy(self, addr: int, length: int | str, wp: bool = False) -> None:
        self._live()
        n = parse_size(length)
        what = f"uffd_copy({addr:#x}, {length!r})"
        vma = self._uffd_dst_vma(addr, n, what)
        if wp and not vma.flags & VM_UFFD_WP:
            raise _err(EINVAL, what)
        err = self._mfill(vma, addr, addr + n, zeropage=False, wp=bool(wp))
        if err:
            raise _err(err, what)

    def uffd_zeropage(self, addr: int, length: int | str) -> None:
        self._live()
        n = parse_size(length)
        what = f"uffd_zeropage({addr:#x}, {length!r})"
        vma = self._uffd_dst_vma(addr, n, what)
        err = self._mfill(vma, addr, addr + n, zeropage=True, wp=False)
        if err:
            raise _err(err, what)

    def _mfill(self, vma: _Vma, start: int, end: int, zeropage: bool, wp: bool) -> int:
        """mfill_atomic(): one page at a time; stops at the first error."""
        ps = self.page_size
        for addr in range(start, end, ps):
            self._pmd_alloc(addr)
            idx = addr >> self.pmd_shift
            ent = self.pmd.get(idx)
            if ent is None:
                if not self._pte_alloc(idx):
                    return ENOMEM
                ent = self.pmd[idx]
            if isinstance(ent, _HugePmd):
                return EEXIST
            pi = (addr >> self.page_shift) & (self.ptrs_per_pte - 1)
            if zeropage:
                if ent.ptes[pi]:
                    return EEXIST
                self._set_pte(ent, pi, addr, PTE_PRESENT | PTE_SPECIAL | PTE_YOUNG)
                continue
            pfn = self._alloc_pages(0, va=addr)
            if pfn is None:
                return ENOMEM
            if not self._try_charge(1, 0):
                self._free_frames(pfn, 0)
                return ENOMEM
            if ent.ptes[pi]:
                self._uncharge(1)
                self._free_frames(pfn, 0)
                return EEXIST
            folio = self._new_folio(pfn, 0, addr)
            bits = PTE_PRESENT | PTE_YOUNG | PTE_DIRTY
            if vma.flags & VM_WRITE and not wp:
                bits |= PTE_WRITE
            if wp:
                bits |= PTE_UFFD_WP
            self._map_folio_ptes(folio, vma, addr, bits)
            self.cnt["folios_mapped"][0] += 1     # the C core counts UFFDIO_COPY pages too
        return 0

    def uffd_writeprotect(self, addr: int, length: int | str, wp: bool = True) -> None:
        self._live()
        n = parse_size(length)
        what = f"uffd_writeprotect({addr:#x}, {length!r}, wp={wp})"
        if not self._validate_uffd_range(addr, n):
            raise _err(EINVAL, what)
        end = addr + n
        err = ENOENT
        for v in [v for v in self.vma_list if v.end > addr and v.start < end]:
            if not v.flags & VM_UFFD_WP:
                err = ENOENT
                break
            self._change_protection(v, max(v.start, addr), min(v.end, end), wp=bool(wp))
            err = 0
        if err:
            raise _err(err, what)

    def _change_protection(self, vma: _Vma, start: int, end: int, wp: bool) -> None:
        """uffd_wp_range() -> change_protection(MM_CP_UFFD_WP[_RESOLVE]).

        arm64: a contpte block that the range (clipped to this VMA, as
        mwriteprotect_range() calls uffd_wp_range() per VMA) covers only in
        part is unfolded first, and not refolded (the batched commit of
        6.17+; older kernels refolded a block whose 16 PTEs ended up equal).
        """
        try_writable = not wp and bool(vma.flags & VM_WRITE)
        addr = start
        while addr < end:
            idx = addr >> self.pmd_shift
            nxt = min((idx + 1) << self.pmd_shift, end)
            ent = self.pmd.get(idx)
            if isinstance(ent, _HugePmd):
                if nxt - addr != self.pmd_size:
                    self._split_huge_pmd(idx)
                    ent = self.pmd.get(idx)
                else:
                    f = ent.flags & ~PTE_WRITE
                    f = (f | PTE_UFFD_WP) if wp else (f & ~PTE_UFFD_WP)
                    if try_writable and not ent.folio.huge_zero:
                        f |= PTE_WRITE
                    ent.flags = f
                    addr = nxt
                    continue
            if isinstance(ent, _PteTable):
                i0 = (addr >> self.page_shift) & (self.ptrs_per_pte - 1)
                i1 = i0 + ((nxt - addr) >> self.page_shift)
                cn = self._cont_nr()
                for i in range(i0, i1):
                    pte = ent.ptes[i]
                    if not pte:
                        continue
                    if pte & PTE_CONT:
                        csz = cn * self.page_size
                        cs = ((idx << self.pmd_shift) + (i << self.page_shift)) & ~(csz - 1)
                        if cs < start or cs + csz > end:
                            self._contpte_unfold(ent, i)
                        pte = ent.ptes[i]
                    pte &= ~PTE_WRITE
                    pte = (pte | PTE_UFFD_WP) if wp else (pte & ~PTE_UFFD_WP)
                    if try_writable and not pte & PTE_SPECIAL:
                        pte |= PTE_WRITE
                    ent.ptes[i] = pte
            addr = nxt

    # ------------------------------------------------------- physical pages
    def _alloc_pages(self, order: int, va: int = 0) -> Optional[int]:
        """Buddy allocation with the fault-injection hook."""
        left = self.inject_alloc.get(order, 0)
        if left:
            self.inject_alloc[order] = left - 1
            return None
        return self.buddy.alloc(order)

    def _free_frames(self, pfn: int, order: int) -> None:
        self.buddy.free(pfn, order)

    def _try_charge(self, nr: int, order: int) -> bool:
        left = self.inject_charge.get(order, 0)
        if left:
            self.inject_charge[order] = left - 1
            self.cnt["memcg_max_events"] += 1
            return False
        if self.memcg_limit and self.memcg_charged + nr > self.memcg_limit:
            self.cnt["memcg_max_events"] += 1
            return False
        self.memcg_charged += nr
        return True

    def _uncharge(self, nr: int) -> None:
        self.memcg_charged -= nr

    # Order-0 allocations and charges may direct-reclaim: emulated by running
    # the deferred-split shrinker once and retrying if it split anything.
    def _alloc_order0(self, va: int) -> Optional[int]:
        pfn = self._alloc_pages(0, va)
        if pfn is None and self._shrink():
            pfn = self._alloc_pages(0, va)
        return pfn

    def _charge_order0(self) -> bool:
        if self._try_charge(1, 0):
            return True
        return bool(self._shrink()) and self._try_charge(1, 0)

    def _folio_prealloc(self, va: int) -> Optional[_Folio]:
        """folio_prealloc(): order 0, zeroed, charged; None means VM_FAULT_OOM."""
        pfn = self._alloc_order0(va)
        if pfn is None:
            return None
        if not self._charge_order0():
            self._free_frames(pfn, 0)
            return None
        return self._new_folio(pfn, 0, va)

    def _new_folio(self, pfn: int, order: int, va: int) -> _Folio:
        f = _Folio(pfn, order, va)
        return f

    def _register_folio(self, f: _Folio) -> None:
        for i in range(f.nr):
            self.folio_of[f.pfn + i] = f
        self.cnt["lru_pages"] += f.nr
        if f.order >= 2:
            self.cnt["nr_anon"][f.order] += 1

    def _free_folio(self, f: _Folio) -> None:
        """The last reference went: uncharge, dequeue, free to the buddy allocator."""
        if f.queued:
            del self.deferred[f]
            f.queued = False
        if f.partially_mapped:
            self.cnt["nr_anon_partially_mapped"][f.order] -= 1
            f.partially_mapped = False
        if f.order >= 2:
            self.cnt["nr_anon"][f.order] -= 1
        for i in range(f.nr):
            del self.folio_of[f.pfn + i]
        self.cnt["lru_pages"] -= f.nr
        self._uncharge(f.nr)
        self._free_frames(f.pfn, f.order)

    # --- page tables
    def _pmd_alloc(self, addr: int) -> None:
        pud = addr >> self.pud_shift
        if pud not in self.pmd_tables:
            self.pmd_tables.add(pud)
            self.cnt["nr_pmds"] += 1

    def _alloc_table_frame(self) -> Optional[int]:
        """pte_alloc_one(): one order-0 frame (no memcg, no fault injection)."""
        pfn = self.buddy.alloc(0)
        if pfn is None and self._shrink():
            pfn = self.buddy.alloc(0)
        return pfn

    def _pte_alloc(self, idx: int) -> bool:
        """__pte_alloc(): a new PTE table for PMD ``idx``; False on OOM."""
        pfn = self._alloc_table_frame()
        if pfn is None:
            return False
        self.pmd[idx] = _PteTable(pfn, self.ptrs_per_pte)
        self.cnt["nr_ptes"] += 1
        return True

    def _free_table(self, idx: int) -> None:
        ent = self.pmd.pop(idx)
        self._free_frames(ent.pfn, 0)
        self.cnt["nr_ptes"] -= 1

    # --- contpte (arm64)
    def _cont_nr(self) -> int:
        return 1 << self.cont_pte_order if self.cont_pte_order else 0

    def _contpte_unfold(self, table: _PteTable, i: int) -> None:
        cn = self._cont_nr()
        if not cn or not table.ptes[i] & PTE_CONT:
            return
        b = i & ~(cn - 1)
        for j in range(b, b + cn):
            table.ptes[j] &= ~PTE_CONT
        self.cnt["contpte_unfolds"] += 1

    def _contpte_unfold_partial(self, table: _PteTable, i0: int, i1: int) -> None:
        """Unfold the blocks that [i0, i1) covers only partly (at either end)."""
        cn = self._cont_nr()
        if not cn or i0 >= i1:
            return
        if i0 & (cn - 1):
            self._contpte_unfold(table, i0)
        if i1 & (cn - 1):
            self._contpte_unfold(table, i1 - 1)

    def _contpte_try_fold(self, table: _PteTable, i: int, addr: int) -> None:
        """contpte_try_fold() after a single-PTE set_ptes() of entry ``i``."""
        cn = self._cont_nr()
        if not cn:
            return
        pte = table.ptes[i]
        mask = cn - 1
        if (i & mask) != mask or ((pte >> PFN_SHIFT) & mask) != mask:
            return
        if not pte & PTE_PRESENT or pte & (PTE_CONT | PTE_SPECIAL):
            return
        b = i - mask
        folio = self.folio_of.get(pte >> PFN_SHIFT)
        if folio is None:
            return
        first_pfn = (pte >> PFN_SHIFT) - mask
        if folio.pfn > first_pfn or folio.pfn + folio.nr < first_pfn + cn:
            return
        ign = PTE_YOUNG | PTE_DIRTY | PTE_TOUCHED
        ref = pte & FLAG_MASK & ~ign
        for k in range(cn):
            p = table.ptes[b + k]
            if not p & PTE_PRESENT or (p >> PFN_SHIFT) != first_pfn + k or (p & FLAG_MASK & ~ign) != ref:
                return
        for k in range(cn):
            table.ptes[b + k] |= PTE_CONT
        self.cnt["contpte_blocks"] += 1

    def _set_pte(self, table: _PteTable, i: int, addr: int, raw: int) -> None:
        """set_ptes(nr=1): unfold, write, try to fold."""
        self._contpte_unfold(table, i)
        if not table.ptes[i]:
            table.used += 1
        table.ptes[i] = raw
        self._contpte_try_fold(table, i, addr)

    def _clear_pte(self, table: _PteTable, i: int) -> int:
        old = table.ptes[i]
        if old:
            table.ptes[i] = 0
            table.used -= 1
        return old

    def _map_folio_ptes(self, folio: _Folio, vma: _Vma, addr: int, bits: int,
                        touched_at: Optional[int] = None) -> None:
        """set_ptes() of a whole new folio at ``addr`` + rmap/lru/RSS accounting."""
        idx = addr >> self.pmd_shift
        table = self.pmd[idx]
        i0 = (addr >> self.page_shift) & (self.ptrs_per_pte - 1)
        nr = folio.nr
        cn = self._cont_nr()
        for k in range(nr):
            raw = ((folio.pfn + k) << PFN_SHIFT) | bits
            if nr > 1 and cn:
                j = i0 + k
                b = j & ~(cn - 1)
                if b >= i0 and b + cn <= i0 + nr and ((folio.pfn + (b - i0)) & (cn - 1)) == 0:
                    raw |= PTE_CONT
            table.ptes[i0 + k] = raw
            folio.mapped[k] = 1
        table.used += nr
        if nr > 1 and cn:
            self.cnt["contpte_blocks"] += sum(1 for b in range(i0, i0 + nr, cn)
                                              if b % cn == 0 and b + cn <= i0 + nr
                                              and ((folio.pfn + b - i0) & (cn - 1)) == 0)
        elif nr == 1 and cn:
            self._contpte_try_fold(table, i0, addr)
        folio.nr_mapped = nr
        folio.refcount = nr
        self._register_folio(folio)
        self.cnt["mm_anonpages"] += nr

    # ------------------------------------------------------------ shrinker
    def _shrink(self) -> int:
        """deferred_split_scan(): split the partially mapped folios on the queue."""
        nr_split = 0
        for f in list(self.deferred):
            if not f.partially_mapped:
                del self.deferred[f]
                f.queued = False
                continue
            self._split_folio(f)
            nr_split += 1
        return nr_split

    def shrink_deferred_split(self) -> int:
        self._live()
        return self._shrink()

    def _split_folio(self, f: _Folio) -> None:
        """split_folio() to order 0; pages no PTE maps are freed."""
        order = f.order
        self.cnt["split"][order] += 1
        if order == self.pmd_order:
            self.cnt["thp_split_page"] += 1
        if f.queued:
            del self.deferred[f]
            f.queued = False
        if f.partially_mapped:
            self.cnt["nr_anon_partially_mapped"][order] -= 1
        if order >= 2:
            self.cnt["nr_anon"][order] -= 1
        # the PTEs mapping the folio: now order-0 folios, not contpte
        table_cache: dict[int, _PteTable] = {}
        for k in range(f.nr):
            pfn = f.pfn + k
            if f.mapped[k]:
                sub = _Folio(pfn, 0, f.va + k * self.page_size)
                sub.mapped[0] = 1
                sub.nr_mapped = 1
                sub.refcount = 1
                self.folio_of[pfn] = sub
                va = f.va + k * self.page_size
                idx = va >> self.pmd_shift
                t = table_cache.get(idx) or self.pmd.get(idx)
                if isinstance(t, _PteTable):
                    table_cache[idx] = t
                    pi = (va >> self.page_shift) & (self.ptrs_per_pte - 1)
                    if t.ptes[pi] & PTE_CONT:
                        self._contpte_unfold(t, pi)
            else:
                del self.folio_of[pfn]
                self.cnt["lru_pages"] -= 1
                self._uncharge(1)
                self._free_frames(pfn, 0)

    def _deferred_split_folio(self, f: _Folio, partially_mapped: bool) -> None:
        if f.order <= 1:
            return
        if partially_mapped and not f.partially_mapped:
            f.partially_mapped = True
            if f.order == self.pmd_order:
                self.cnt["thp_deferred_split_page"] += 1
            self.cnt["split_deferred"][f.order] += 1
            self.cnt["nr_anon_partially_mapped"][f.order] += 1
        if not f.queued:
            f.queued = True
            self.deferred[f] = None

    # --------------------------------------------------------------- zap
    def _remove_rmap_ptes(self, folio: _Folio, k: int, nr: int) -> None:
        """folio_remove_rmap_ptes() of pages k..k+nr-1 + the references the PTEs held.

        A large anon folio left partially mapped goes to deferred_split_folio().
        """
        for j in range(k, k + nr):
            folio.mapped[j] = 0
        folio.nr_mapped -= nr
        folio.refcount -= nr
        self.cnt["mm_anonpages"] -= nr
        if folio.nr_mapped > 0 and folio.order >= 2:
            self._deferred_split_folio(folio, True)
        if folio.refcount == 0:
            self._free_folio(folio)

    def _zap_pte_range(self, table: _PteTable, i0: int, i1: int) -> None:
        """zap_pte_range(): clear [i0, i1), one folio_pte_batch() at a time."""
        ptes = table.ptes
        i = i0
        while i < i1:
            old = ptes[i]
            if not old:
                i += 1
                continue
            if old & PTE_SPECIAL:
                self._clear_pte(table, i)
                if old & PTE_TOUCHED:
                    self.cnt["zero_pages_touched"] -= 1
                i += 1
                continue
            pfn = old >> PFN_SHIFT
            folio = self.folio_of[pfn]
            fend = folio.pfn + folio.nr
            # folio_pte_batch(): consecutive pages of the same folio; young,
            # dirty and write are ignored, the uffd-wp bit is not
            n = 1
            while (i + n < i1 and pfn + n < fend and ptes[i + n] & PTE_PRESENT
                   and not ptes[i + n] & PTE_SPECIAL and (ptes[i + n] >> PFN_SHIFT) == pfn + n
                   and (ptes[i + n] & PTE_UFFD_WP) == (old & PTE_UFFD_WP)):
                n += 1
            for j in range(i, i + n):
                if ptes[j] & PTE_TOUCHED:
                    self.cnt["pages_touched"] -= 1
                self._clear_pte(table, j)
            self._remove_rmap_ptes(folio, pfn - folio.pfn, n)
            i += n

    def _zap_range(self, vma: _Vma, start: int, end: int) -> None:
        """zap_page_range_single() / unmap_vmas() over [start, end) of one VMA."""
        addr = start
        while addr < end:
            idx = addr >> self.pmd_shift
            nxt = min((idx + 1) << self.pmd_shift, end)
            ent = self.pmd.get(idx)
            if isinstance(ent, _HugePmd):
                if nxt - addr != self.pmd_size:
                    self._split_huge_pmd(idx)
                    ent = self.pmd.get(idx)
                else:
                    self._zap_huge_pmd(idx)
                    addr = nxt
                    continue
            if isinstance(ent, _PteTable):
                i0 = (addr >> self.page_shift) & (self.ptrs_per_pte - 1)
                i1 = i0 + ((nxt - addr) >> self.page_shift)
                self._contpte_unfold_partial(ent, i0, i1)
                self._zap_pte_range(ent, i0, i1)
            addr = nxt

    def _zap_huge_pmd(self, idx: int) -> None:
        ent: _HugePmd = self.pmd.pop(idx)
        self._free_frames(ent.table, 0)                  # zap_deposited_table()
        self.cnt["nr_ptes"] -= 1
        f = ent.folio
        ntouched = sum(ent.touched)
        if f.huge_zero:
            self.cnt["zero_pages_touched"] -= ntouched
            return
        self.cnt["pages_touched"] -= ntouched
        self.cnt["mm_anonpages"] -= f.nr
        f.pmd_mapped = False
        f.refcount -= 1
        if f.refcount == 0:
            self._free_folio(f)

    # --- __split_huge_pmd()
    def _split_huge_pmd_if_needed(self, vma: _Vma, addr: int) -> None:
        if addr & (self.pmd_size - 1):
            idx = addr >> self.pmd_shift
            if isinstance(self.pmd.get(idx), _HugePmd):
                self._split_huge_pmd(idx)

    def _split_huge_pmd(self, idx: int) -> None:
        """The PMD becomes the deposited PTE table, filled with the same pages."""
        ent: _HugePmd = self.pmd.pop(idx)
        self.cnt["thp_split_pmd"] += 1
        table = _PteTable(ent.table, self.ptrs_per_pte)
        f = ent.folio
        if f.huge_zero:
            bits = PTE_PRESENT | PTE_SPECIAL | PTE_YOUNG | (ent.flags & PTE_UFFD_WP)
            for k in range(self.ptrs_per_pte):
                table.ptes[k] = bits | (PTE_TOUCHED if ent.touched[k] else 0)
        else:
            bits = ent.flags & (PTE_PRESENT | PTE_WRITE | PTE_DIRTY | PTE_YOUNG | PTE_UFFD_WP)
            for k in range(self.ptrs_per_pte):
                table.ptes[k] = ((f.pfn + k) << PFN_SHIFT) | bits | (PTE_TOUCHED if ent.touched[k] else 0)
                f.mapped[k] = 1
            f.pmd_mapped = False
            f.nr_mapped = f.nr
            f.refcount = f.nr
            cn = self._cont_nr()
            if cn:
                for b in range(0, self.ptrs_per_pte, cn):
                    for k in range(b, b + cn):
                        table.ptes[k] |= PTE_CONT
                    self.cnt["contpte_blocks"] += 1
        table.used = self.ptrs_per_pte
        self.pmd[idx] = table

    # ------------------------------------------------------------- faults
    def _lookup(self, addr: int) -> tuple[int, int]:
        """(raw entry, order) for read_ptes()."""
        idx = addr >> self.pmd_shift
        ent = self.pmd.get(idx)
        if ent is None:
            return 0, ORDER_NONE
        k = (addr >> self.page_shift) & (self.ptrs_per_pte - 1)
        if isinstance(ent, _HugePmd):
            raw = ((ent.folio.pfn + k) << PFN_SHIFT) | ent.flags | PTE_HUGE
            if ent.touched[k]:
                raw |= PTE_TOUCHED
            return raw, (ORDER_HUGE_ZERO if ent.folio.huge_zero else self.pmd_order)
        raw = ent.ptes[k]
        if not raw:
            return 0, ORDER_NONE
        if raw & PTE_SPECIAL:
            return raw, ORDER_ZERO
        return raw, self.folio_of[raw >> PFN_SHIFT].order

    def _access_ok(self, vma: Optional[_Vma], write: bool) -> bool:
        if vma is None:
            return False
        if write:
            return bool(vma.flags & VM_WRITE)
        return bool(vma.flags & (VM_READ | VM_WRITE | VM_EXEC))

    def _try_hit(self, addr: int, write: bool) -> bool:
        idx = addr >> self.pmd_shift
        ent = self.pmd.get(idx)
        if ent is None:
            return False
        k = (addr >> self.page_shift) & (self.ptrs_per_pte - 1)
        if isinstance(ent, _HugePmd):
            if write and not ent.flags & PTE_WRITE:
                return False
            if not ent.touched[k]:
                ent.touched[k] = 1
                self.cnt["zero_pages_touched" if ent.folio.huge_zero else "pages_touched"] += 1
            return True
        raw = ent.ptes[k]
        if not raw & PTE_PRESENT or (write and not raw & PTE_WRITE):
            return False
        if not raw & PTE_TOUCHED:
            ent.ptes[k] = raw | PTE_TOUCHED
            self.cnt["zero_pages_touched" if raw & PTE_SPECIAL else "pages_touched"] += 1
        return True

    def _access(self, addr: int, write: bool) -> tuple[int, int, int, int]:
        """One access as the CPU does it: (access, kind, vm_fault, nr_faults).

        The MMU either allows it (a hit) or the fault path runs
        (do_user_addr_fault: find_vma, access_error, handle_mm_fault) and the
        access is re-executed, until it completes or fails.
        """
        if self._try_hit(addr, write):
            self.cnt["hits"] += 1
            return Access.HIT, FaultKind.NONE, 0, 0
        nr_faults = 0
        kind, ret = FaultKind.NONE, 0
        while True:
            self.cnt["faults"] += 1
            vma = self._find_vma(addr)
            if not self._access_ok(vma, write):
                self.cnt["faults_sigsegv"] += 1
                return Access.SIGSEGV, kind, ret, nr_faults
            ret, kind = self._handle_mm_fault(vma, addr, write)
            nr_faults += 1
            if ret & VM_FAULT_OOM:
                self.cnt["faults_oom"] += 1
                return Access.OOM, kind, ret, nr_faults
            if ret & VM_FAULT_SIGBUS:
                self.cnt["faults_sigbus"] += 1
                return Access.SIGBUS, kind, ret, nr_faults
            if ret & VM_FAULT_USERFAULT:
                return Access.USERFAULT, kind, ret, nr_faults
            if self._try_hit(addr, write):
                return Access.FAULT, kind, ret, nr_faults
            self.cnt["faults_retried"] += 1
            if nr_faults >= 64:
                self.cnt["faults_sigbus"] += 1
                return Access.SIGBUS, kind, ret, nr_faults

    def _handle_mm_fault(self, vma: _Vma, addr: int, write: bool) -> tuple[int, FaultKind]:
        """handle_mm_fault() + mm_account_fault(): a VM_FAULT_RETRY (userfault) is
        not accounted; every other fault counts in pgfault, and in min_flt when
        it succeeded."""
        ret, kind = self._handle_mm_fault_body(vma, addr, write)
        if ret & VM_FAULT_USERFAULT:
            ret |= VM_FAULT_RETRY
            self.cnt["faults_userfault"] += 1
            kind = FaultKind.NONE
        else:
            self.cnt["pgfault"] += 1
            if not ret & VM_FAULT_ERROR:
                self.cnt["min_flt"] += 1
            else:
                kind = FaultKind.NONE       # the kind names what mapped the page
        return ret, kind

    def _handle_mm_fault_body(self, vma: _Vma, addr: int, write: bool) -> tuple[int, FaultKind]:
        self._pmd_alloc(addr)
        idx = addr >> self.pmd_shift
        ent = self.pmd.get(idx)
        if ent is None and self._pmd_allowed(vma):
            ret, kind = self._do_huge_pmd_anonymous_page(vma, addr, write)
            if not ret & VM_FAULT_FALLBACK:
                if not ret:
                    self.cnt["faults_pmd"] += 1
                return ret, kind
        elif isinstance(ent, _HugePmd):
            if write and not ent.flags & PTE_WRITE:
                ret, kind = self._wp_huge_pmd(vma, addr, idx)
                if not ret & VM_FAULT_FALLBACK:
                    if not ret:
                        self.cnt["faults_pmd"] += 1
                    return ret, kind
            else:
                return 0, FaultKind.NONE              # huge_pmd_set_accessed()
        return self._handle_pte_fault(vma, addr, write)

    def _handle_pte_fault(self, vma: _Vma, addr: int, write: bool) -> tuple[int, FaultKind]:
        idx = addr >> self.pmd_shift
        ent = self.pmd.get(idx)
        k = (addr >> self.page_shift) & (self.ptrs_per_pte - 1)
        if ent is None or not ent.ptes[k]:
            return self._do_anonymous_page(vma, addr, write)
        if write and not ent.ptes[k] & PTE_WRITE:
            return self._do_wp_page(vma, addr, ent, k)
        return 0, FaultKind.NONE

    # --- do_anonymous_page()
    def _anon_vma_prepare(self, vma: _Vma) -> None:
        if vma.anon_vma:
            return
        i = self._vma_index(vma)
        for j in (i + 1, i - 1):
            if 0 <= j < len(self.vma_list):
                o = self.vma_list[j]
                a, b = (vma, o) if j > i else (o, vma)
                if (o.anon_vma and a.end == b.start
                        and not ((a.flags ^ b.flags) & ~(VM_READ | VM_WRITE | VM_EXEC))):
                    vma.anon_vma = o.anon_vma
                    return
        vma.anon_vma = self.next_anon_vma
        self.next_anon_vma += 1

    def _do_anonymous_page(self, vma: _Vma, addr: int, write: bool) -> tuple[int, FaultKind]:
        ps = self.page_size
        idx = addr >> self.pmd_shift
        if idx not in self.pmd and not self._pte_alloc(idx):
            return VM_FAULT_OOM, (FaultKind.ANON_WRITE if write else FaultKind.ANON_READ)
        table: _PteTable = self.pmd[idx]
        if not write:
            k = (addr >> self.page_shift) & (self.ptrs_per_pte - 1)
            if table.ptes[k]:                            # vmf_pte_changed()
                return 0, FaultKind.NONE
            if vma.flags & VM_UFFD_MISSING:
                return VM_FAULT_USERFAULT, FaultKind.NONE
            self._set_pte(table, k, addr, PTE_PRESENT | PTE_SPECIAL | PTE_YOUNG)
            self.cnt["zero_page_maps"] += 1
            self.cnt["faults_read"] += 1
            return 0, FaultKind.ANON_READ
        self._anon_vma_prepare(vma)
        try:
            folio = self._alloc_anon_folio(vma, addr)
        except _Retry:
            return 0, FaultKind.NONE
        if folio is None:
            return VM_FAULT_OOM, FaultKind.ANON_WRITE
        nr = folio.nr
        start = addr & ~(nr * ps - 1)
        folio.va = start
        if self.race_addrs and not self.in_race:
            # LAF_INJECT_RACE: another thread write-accesses race_addr between
            # our allocation and the PTL recheck
            race_addr = self.race_addrs.pop(0)
            self.in_race = True
            self._access(race_addr, True)
            self.in_race = False
        i0 = (start >> self.page_shift) & (self.ptrs_per_pte - 1)
        table = self.pmd.get(idx)
        if not isinstance(table, _PteTable) or any(table.ptes[i0:i0 + nr]):
            self._discard_folio(folio)
            return 0, FaultKind.NONE
        if vma.flags & VM_UFFD_MISSING:
            self._discard_folio(folio)
            return VM_FAULT_USERFAULT, FaultKind.ANON_WRITE
        bits = PTE_PRESENT | PTE_YOUNG
        if vma.flags & VM_WRITE:
            bits |= PTE_WRITE | PTE_DIRTY
        self._map_folio_ptes(folio, vma, start, bits)
        if folio.order:
            self.cnt["anon_fault_alloc"][folio.order] += 1
        self.cnt["folios_mapped"][folio.order] += 1
        self.cnt["faults_write"] += 1
        self._policy_auto_update(vma, addr, folio.order)
        return 0, FaultKind.ANON_WRITE

    def _discard_folio(self, folio: _Folio) -> None:
        """folio_put() of a folio that was never mapped."""
        self._uncharge(folio.nr)
        self._free_frames(folio.pfn, folio.order)

    def _pte_range_none(self, table: Optional[_PteTable], addr: int, nr: int) -> bool:
        if table is None:
            return True
        i0 = (addr >> self.page_shift) & (self.ptrs_per_pte - 1)
        return not any(table.ptes[i0:i0 + nr])

    def _neighbour_full(self, vma: _Vma, table: Optional[_PteTable], start: int, order: int) -> bool:
        """anon_beside_full: a same-size neighbour inside the VMA and the PTE table is full."""
        size = self.page_size << order
        for nb in (start - size, start + size):
            if nb < vma.start or nb + size > vma.end:
                continue
            if nb >> self.pmd_shift != start >> self.pmd_shift:
                continue
            if table is None:
                continue
            i0 = (nb >> self.page_shift) & (self.ptrs_per_pte - 1)
            if all(table.ptes[i0:i0 + (1 << order)]):
                return True
        return False

    def _alloc_anon_folio(self, vma: _Vma, addr: int) -> Optional[_Folio]:
        """alloc_anon_folio(): the mTHP order walk, then order 0."""
        ps = self.page_size
        orders = 0
        if not vma.flags & VM_UFFD_FLAGS:                # userfaultfd_armed()
            orders = self._anon_orders(vma, addr)
        # thp_vma_suitable_orders(): drop from the top until one fits
        while orders:
            o = orders.bit_length() - 1
            size = ps << o
            haddr = addr & ~(size - 1)
            if haddr >= vma.start and haddr + size <= vma.end:
                break
            orders &= ~(1 << o)
        if orders:
            if self.inject_pte_map:
                self.inject_pte_map -= 1
                raise _Retry()
            table = self.pmd.get(addr >> self.pmd_shift)
            while orders:
                o = orders.bit_length() - 1
                size = ps << o
                if self._pte_range_none(table, addr & ~(size - 1), 1 << o):
                    break
                orders &= ~(1 << o)
            while orders:
                o = orders.bit_length() - 1
                size = ps << o
                haddr = addr & ~(size - 1)
                if self.pol.anon_beside_full and not self._neighbour_full(vma, table, haddr, o):
                    self.cnt["anon_fault_declined"][o] += 1
                    orders &= ~(1 << o)
                    continue
                pfn = self._alloc_pages(o, haddr)
                if pfn is not None:
                    if not self._charge_in_loop():
                        # LAF v3: charge once after allocating; failure is OOM
                        if self._try_charge(1 << o, o):
                            return _Folio(pfn, o, haddr)
                        self._free_frames(pfn, o)
                        return None
                    if self._try_charge(1 << o, o):
                        return _Folio(pfn, o, haddr)
                    self.cnt["anon_fault_fallback_charge"][o] += 1
                    self._free_frames(pfn, o)
                self.cnt["anon_fault_fallback"][o] += 1
                self.cnt["alloc_retries"] += 1
                orders &= ~(1 << o)
        return self._folio_prealloc(addr)

    # --- do_wp_page()
    def _do_wp_page(self, vma: _Vma, addr: int, table: _PteTable, k: int) -> tuple[int, FaultKind]:
        pte = table.ptes[k]
        if pte & PTE_UFFD_WP and vma.flags & VM_UFFD_WP:
            return VM_FAULT_USERFAULT, FaultKind.NONE
        if pte & PTE_SPECIAL:
            return self._wp_page_copy(vma, addr, table, k)
        # One mm and no fork: every anon page is PageAnonExclusive, and "if we
        # encounter a page that is marked exclusive, we must reuse the page
        # without further checks" (do_wp_page), whatever the folio size.
        # wp_page_reuse(): ptep_set_access_flags() changes the write bit
        self._contpte_unfold(table, k)
        table.ptes[k] |= PTE_WRITE | PTE_DIRTY | PTE_YOUNG
        self.cnt["faults_wp"] += 1
        return 0, FaultKind.WP

    def _wp_page_copy(self, vma: _Vma, addr: int, table: _PteTable, k: int) -> tuple[int, FaultKind]:
        self._anon_vma_prepare(vma)
        new = self._folio_prealloc(addr)
        if new is None:
            return VM_FAULT_OOM, FaultKind.WP
        old = table.ptes[k]
        touched = old & PTE_TOUCHED
        # ptep_clear_flush() + set_pte_at()
        self._contpte_unfold(table, k)
        self._clear_pte(table, k)
        if old & PTE_SPECIAL:
            if touched:
                self.cnt["zero_pages_touched"] -= 1
        else:
            if touched:
                self.cnt["pages_touched"] -= 1
            of = self.folio_of[old >> PFN_SHIFT]
            self._remove_rmap_ptes(of, (old >> PFN_SHIFT) - of.pfn, 1)
        raw = (new.pfn << PFN_SHIFT) | PTE_PRESENT | PTE_YOUNG | PTE_DIRTY | PTE_WRITE
        if touched:
            raw |= PTE_TOUCHED
            self.cnt["pages_touched"] += 1
        table.ptes[k] = raw
        table.used += 1
        new.mapped[0] = 1
        new.nr_mapped = 1
        new.refcount = 1
        self._register_folio(new)
        self.cnt["mm_anonpages"] += 1
        self.cnt["folios_mapped"][0] += 1
        self._contpte_try_fold(table, k, addr)
        self.cnt["faults_wp"] += 1
        return 0, FaultKind.WP

    # --- do_huge_pmd_anonymous_page()
    def _get_huge_zero(self) -> Optional[_Folio]:
        if self.huge_zero is None:
            pfn = self.buddy.alloc(self.pmd_order)
            if pfn is None:
                self.cnt["thp_zero_page_alloc_failed"] += 1
                return None
            f = _Folio(pfn, self.pmd_order, 0)
            f.huge_zero = True
            self.huge_zero = f
            self.cnt["thp_zero_page_alloc"] += 1
        return self.huge_zero

    def _vma_alloc_anon_folio_pmd(self, haddr: int) -> Optional[_Folio]:
        o = self.pmd_order
        pfn = self._alloc_pages(o, haddr)
        if pfn is None:
            self.cnt["thp_fault_fallback"] += 1
            self.cnt["anon_fault_fallback"][o] += 1
            return None
        if not self._try_charge(1 << o, o):
            self._free_frames(pfn, o)
            self.cnt["thp_fault_fallback"] += 1
            self.cnt["thp_fault_fallback_charge"] += 1
            self.cnt["anon_fault_fallback"][o] += 1
            self.cnt["anon_fault_fallback_charge"][o] += 1
            return None
        return _Folio(pfn, o, haddr)

    def _map_anon_folio_pmd(self, vma: _Vma, idx: int, folio: _Folio, table: int,
                            touched: Optional[bytearray] = None) -> None:
        flags = PTE_PRESENT | PTE_DIRTY | PTE_YOUNG
        if vma.flags & VM_WRITE:
            flags |= PTE_WRITE
        ent = _HugePmd(folio, flags, table, self.ptrs_per_pte)
        if touched is not None:
            ent.touched = touched
        self.pmd[idx] = ent
        folio.pmd_mapped = True
        folio.refcount = 1
        self._register_folio(folio)
        self.cnt["mm_anonpages"] += folio.nr
        self.cnt["thp_fault_alloc"] += 1
        self.cnt["anon_fault_alloc"][folio.order] += 1
        self.cnt["folios_mapped"][folio.order] += 1
        # deferred_split_folio(folio, false) queues it for the "underused"
        # shrinker, which never splits it with max_ptes_none=511: not modelled

    def _do_huge_pmd_anonymous_page(self, vma: _Vma, addr: int, write: bool) -> tuple[int, FaultKind]:
        haddr = addr & ~(self.pmd_size - 1)
        idx = addr >> self.pmd_shift
        if haddr < vma.start or haddr + self.pmd_size > vma.end:
            return VM_FAULT_FALLBACK, FaultKind.NONE
        self._anon_vma_prepare(vma)
        if not write and self.pol.use_zero_page:
            table = self._alloc_table_frame()
            if table is None:
                return VM_FAULT_OOM, FaultKind.PMD_ZERO
            zf = self._get_huge_zero()
            if zf is None:
                self._free_frames(table, 0)
                self.cnt["thp_fault_fallback"] += 1
                return VM_FAULT_FALLBACK, FaultKind.NONE
            if vma.flags & VM_UFFD_MISSING:
                self._free_frames(table, 0)
                return VM_FAULT_USERFAULT, FaultKind.PMD_ZERO
            self.pmd[idx] = _HugePmd(zf, PTE_PRESENT | PTE_SPECIAL | PTE_YOUNG, table, self.ptrs_per_pte)
            self.cnt["nr_ptes"] += 1
            self.cnt["huge_zero_pmd_maps"] += 1
            return 0, FaultKind.PMD_ZERO
        folio = self._vma_alloc_anon_folio_pmd(haddr)
        if folio is None:
            return VM_FAULT_FALLBACK, FaultKind.NONE
        table = self._alloc_table_frame()
        if table is None:
            self._discard_folio(folio)
            return VM_FAULT_OOM, FaultKind.PMD
        if vma.flags & VM_UFFD_MISSING:
            self._discard_folio(folio)
            self._free_frames(table, 0)
            return VM_FAULT_USERFAULT, FaultKind.PMD
        self._map_anon_folio_pmd(vma, idx, folio, table)
        self.cnt["nr_ptes"] += 1
        return 0, FaultKind.PMD

    # --- do_huge_pmd_wp_page()
    def _wp_huge_pmd(self, vma: _Vma, addr: int, idx: int) -> tuple[int, FaultKind]:
        ent: _HugePmd = self.pmd[idx]
        if ent.flags & PTE_UFFD_WP and vma.flags & VM_UFFD_WP:
            return VM_FAULT_USERFAULT, FaultKind.PMD_WP
        if ent.folio.huge_zero:
            haddr = addr & ~(self.pmd_size - 1)
            folio = self._vma_alloc_anon_folio_pmd(haddr)
            if folio is not None:
                ntouched = sum(ent.touched)
                self.cnt["zero_pages_touched"] -= ntouched
                self.cnt["pages_touched"] += ntouched
                del self.pmd[idx]
                self._map_anon_folio_pmd(vma, idx, folio, ent.table, ent.touched)
                return 0, FaultKind.PMD_WP
            self._split_huge_pmd(idx)
            return VM_FAULT_FALLBACK, FaultKind.PMD_WP
        # an exclusive anon THP that lost its write bit: reuse
        ent.flags |= PTE_WRITE | PTE_DIRTY | PTE_YOUNG
        return 0, FaultKind.PMD_WP

    # ------------------------------------------------------------ accesses
    def fault(self, addr: int, write: bool = False) -> FaultResult:
        self._live()
        if not 0 <= addr < 1 << 64:
            raise ValueError(f"invalid address {addr:#x}")
        acc, kind, vmf, nrf = self._access(addr, bool(write))
        order = self._order_at(addr) if acc in (Access.HIT, Access.FAULT) else -1
        return FaultResult(Access(acc), FaultKind(kind), int(vmf), order, nrf)

    def _order_at(self, addr: int) -> int:
        raw, order = self._lookup(addr)
        return order if order >= 0 else -1

    def touch(self, addrs: Any, write: bool | np.ndarray = False, *,
              results: bool = False) -> TouchResult:
        self._live()
        arr = address_array("addrs", addrs)
        n = arr.shape[0]
        if isinstance(write, np.ndarray):
            if write.dtype not in (np.bool_, np.uint8):
                raise TypeError(f"write array must have dtype bool or uint8, got {write.dtype}")
            if write.shape != (n,):
                raise ValueError(f"write array has shape {write.shape}, addrs has {n} entries")
            writes = [bool(w) for w in write.tolist()]
        else:
            writes = [bool(write)] * n
        res = np.empty(n, dtype=np.int8) if results else None
        return self._batch(arr.tolist(), writes, res)

    def touch_range(self, start: int, length: int | str, stride: Optional[int | str] = None,
                    write: bool = False) -> TouchResult:
        self._live()
        n = parse_size(length)
        st = self.page_size if stride is None else parse_size(stride)
        if st <= 0:
            raise ValueError(f"invalid stride {stride!r}: must be > 0")
        addrs = list(range(start, start + n, st))
        return self._batch(addrs, [bool(write)] * len(addrs), None)

    def _batch(self, addrs: list[int], writes: list[bool], res: Optional[np.ndarray]) -> TouchResult:
        hits = faulted = sigsegv = oom = sigbus = userfault = 0
        first = -1
        for i, (a, w) in enumerate(zip(addrs, writes)):
            acc = self._access(a, w)[0]
            if res is not None:
                res[i] = int(acc)
            if acc == Access.HIT:
                hits += 1
                continue
            if acc == Access.FAULT:
                faulted += 1
                continue
            if first < 0:
                first = i
            if acc == Access.SIGSEGV:
                sigsegv += 1
            elif acc == Access.OOM:
                oom += 1
            elif acc == Access.SIGBUS:
                sigbus += 1
            elif acc == Access.USERFAULT:
                userfault += 1
        return TouchResult(len(addrs), hits, faulted, sigsegv, oom, sigbus, userfault, first, res)

    # --------------------------------------------------------------- memory
    def fragment(self, max_free_order: int) -> None:
        """Cut every free block above ``max_free_order`` into 2^(k+1)-frame pieces
        and pin the last frame of each piece (long-lived unmovable allocations).

        The other frames of a piece are freed one by one, ascending, so they
        merge back into blocks of order <= k.
        """
        self._live()
        k = int(max_free_order)
        if k < 0 or k >= self.max_order:
            raise _err(EINVAL, f"fragment({max_free_order})")
        step = 2 << k
        for o in range(self.max_order, k, -1):
            while self.buddy.lists[o]:
                pfn = self.buddy.alloc(o)
                for p in range(pfn, pfn + (1 << o), step):
                    last = p + step - 1
                    self.pinned.append(last)
                    for q in range(p, last):
                        self.buddy.free(q, 0)

    def unfragment(self) -> None:
        self._live()
        for pfn in self.pinned:
            self._free_frames(pfn, 0)
        self.pinned = []

    # --- fault injection (emulator hooks, same contract as laf_inject())
    def _check_order(self, order: int, what: str) -> None:
        if not 0 <= order <= self.pmd_order:
            raise _err(EINVAL, what)

    def inject_alloc_fail(self, order: int, count: int = 1) -> None:
        """The next ``count`` folio allocations of ``order`` fail."""
        self._live()
        self._check_order(order, f"inject_alloc_fail(order={order})")
        self.inject_alloc[order] = count

    def inject_charge_fail(self, order: int, count: int = 1) -> None:
        """The next ``count`` memcg charges of ``order`` fail."""
        self._live()
        self._check_order(order, f"inject_charge_fail(order={order})")
        self.inject_charge[order] = count

    def inject_race(self, addr: int, count: int = 1) -> None:
        """Between the next write fault's allocation and its PTL recheck,
        another thread write-accesses ``addr``."""
        self._live()
        if addr >= self.task_size:
            raise _err(EINVAL, f"inject_race({addr:#x})")
        self.race_addrs = [addr] * count

    def inject_pte_map_fail(self, count: int = 1) -> None:
        """The next ``count`` pte_offset_map() in alloc_anon_folio fail (-EAGAIN)."""
        self._live()
        self.inject_pte_map = count

    def inject_clear(self) -> None:
        self._live()
        self.inject_alloc.clear()
        self.inject_charge.clear()
        self.inject_pte_map = 0
        self.race_addrs = []

    # ----------------------------------------------------------- inspection
    def stats(self) -> Stats:
        self._live()
        c = dict(self.cnt)
        c["nr_vmas"] = len(self.vma_list)
        c["ram_pages"] = self.ram_pages
        c["free_pages"] = self.buddy.nr_free
        c["pinned_pages"] = len(self.pinned)
        c["memcg_charged"] = self.memcg_charged
        c["memcg_limit"] = self.memcg_limit
        c["deferred_split_queue"] = len(self.deferred)
        kw: dict[str, Any] = {"page_size": self.page_size, "pmd_order": self.pmd_order}
        per_order: dict[str, np.ndarray] = {}
        for n in PER_ORDER_FIELDS:
            arr = np.array(c[n], dtype=np.int64)
            per_order[n] = arr
            lo = 0 if n == "folios_mapped" else 1
            from pylaf.sizes import format_size
            kw[n] = {format_size(self.page_size << o): int(arr[o]) for o in range(lo, self.pmd_order + 1)
                     if n == "folios_mapped" or o >= 2}
        for n in SCALAR_FIELDS:
            kw[n] = int(c[n])
        kw["per_order"] = per_order
        return Stats(**kw)

    def reset_counters(self) -> None:
        self._live()
        gauges = {"nr_anon", "nr_anon_partially_mapped", "mm_anonpages", "nr_ptes", "nr_pmds",
                  "lru_pages", "pages_touched", "zero_pages_touched"}
        for n in PER_ORDER_FIELDS:
            if n not in gauges:
                self.cnt[n] = [0] * NR_ORDERS
        for n in SCALAR_FIELDS:
            if n not in gauges:
                self.cnt[n] = 0

    def vmas(self) -> list[Vma]:
        self._live()
        return [Vma(v.start, v.end, VmFlags(v.flags), v.anon_vma) for v in self.vma_list]

    def pte(self, addr: int) -> Pte:
        self._live()
        return Pte(self._lookup(addr)[0])

    def folio(self, addr: int) -> Optional[Folio]:
        self._live()
        idx = addr >> self.pmd_shift
        ent = self.pmd.get(idx)
        if ent is None:
            return None
        if isinstance(ent, _HugePmd):
            f = ent.folio
        else:
            raw = ent.ptes[(addr >> self.page_shift) & (self.ptrs_per_pte - 1)]
            if not raw or raw & PTE_SPECIAL:
                return None
            f = self.folio_of[raw >> PFN_SHIFT]
        flags = 0
        if f.huge_zero:
            flags |= FolioFlags.HUGE_ZERO
        else:
            flags |= FolioFlags.ANON | FolioFlags.LRU
        if f.pmd_mapped:
            flags |= FolioFlags.PMD_MAPPED
        if f.partially_mapped:
            flags |= FolioFlags.PARTIALLY_MAPPED
        return Folio(f.pfn, f.va >> self.page_shift, f.order, f.refcount, f.mapcount, FolioFlags(flags))

    def read_ptes(self, start: int, npages: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw entries and per-page folio orders (-1 none, -2 zero page, -3 huge zero)."""
        self._live()
        if npages < 0:
            raise ValueError(f"invalid npages {npages}")
        ptes = np.zeros(npages, dtype=np.uint64)
        orders = np.full(npages, ORDER_NONE, dtype=np.int8)
        base = start & ~(self.page_size - 1)
        i = 0
        while i < npages:
            addr = base + i * self.page_size
            idx = addr >> self.pmd_shift
            k0 = (addr >> self.page_shift) & (self.ptrs_per_pte - 1)
            n = min(npages - i, self.ptrs_per_pte - k0)
            ent = self.pmd.get(idx)
            if isinstance(ent, _PteTable) and ent.used:
                for k in range(k0, k0 + n):
                    raw = ent.ptes[k]
                    if raw:
                        j = i + k - k0
                        ptes[j] = raw
                        orders[j] = (ORDER_ZERO if raw & PTE_SPECIAL
                                     else self.folio_of[raw >> PFN_SHIFT].order)
            elif isinstance(ent, _HugePmd):
                for k in range(k0, k0 + n):
                    ptes[i + k - k0], orders[i + k - k0] = self._lookup(addr + (k - k0) * self.page_size)
            i += n
        return ptes, orders

    def check_invariants(self) -> None:
        """Cross-check the model's own bookkeeping (raises InvariantError)."""
        self._live()
        problems: list[str] = []
        rss = 0
        for idx, ent in self.pmd.items():
            if isinstance(ent, _HugePmd):
                if not ent.folio.huge_zero:
                    rss += ent.folio.nr
            else:
                used = sum(1 for p in ent.ptes if p)
                if used != ent.used:
                    problems.append(f"table {idx:#x}: used {ent.used} != {used}")
                rss += sum(1 for p in ent.ptes if p and not p & PTE_SPECIAL)
        if rss != self.cnt["mm_anonpages"]:
            problems.append(f"mm_anonpages {self.cnt['mm_anonpages']} != mapped {rss}")
        for a, b in zip(self.vma_list, self.vma_list[1:]):
            if a.end > b.start:
                problems.append(f"VMAs overlap: {a} {b}")
        if problems:
            raise InvariantError("; ".join(problems), EUCLEAN)


def open_reference(policy: Policy | str | None = None, **kw: Any) -> Reference:
    """Shorthand mirroring :func:`pylaf.open_address_space`."""
    if policy is not None:
        kw["policy"] = Policy.parse(policy) if isinstance(policy, str) else policy
    return Reference(Config(**kw))
