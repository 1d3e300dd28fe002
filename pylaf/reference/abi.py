"""The emulator's ABI numbers (``csrc/laf.h``), written out by hand.

The reference model restates these on purpose, so that it needs no C build and
shares no code with the C core; ``tests/test_reference_drift.py`` checks every
one of them against ``lib`` and ``struct laf_stats``.

Also here: the exception a C return code becomes (the contract of
``pylaf.errors.check()``), and the argument checks every entry point shares.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from pylaf.errors import LafBusyError, LafError, LafMemoryError, LafValueError

# --- page geometry: enum laf_page_shift, LAF_NR_ORDERS
PAGE_SHIFT_4K, PAGE_SHIFT_16K, PAGE_SHIFT_64K = 12, 14, 16
PAGE_SHIFTS = (PAGE_SHIFT_4K, PAGE_SHIFT_16K, PAGE_SHIFT_64K)
#: arm64 CONT_PTE_SHIFT - PAGE_SHIFT per base page size (arch/arm64/include/asm/pgtable-hwdef.h)
CONT_PTE_ORDER = {PAGE_SHIFT_4K: 4, PAGE_SHIFT_16K: 7, PAGE_SHIFT_64K: 5}
ARM64_ARCHES = ("arm64", "aarch64")
NR_ORDERS = 16
PAGE_ALLOC_COSTLY_ORDER = 3
MIN_MAX_ORDER = 10                      # MAX_PAGE_ORDER is at least 10, at least the PMD order

# --- address space layout: 47-bit user VA; TASK_SIZE = USER_VA_TOP - PAGE_SIZE, page-aligned at every
# page size (x86-64 TASK_SIZE_MAX at 4K; arm64 keeps TASK_SIZE page-aligned the same way)
USER_VA_TOP = 1 << 47
MMAP_GAP = 128 << 20                    # mmap_base = TASK_SIZE - 128M (no randomisation)
MMAP_MIN_ADDR = 65536                   # vm.mmap_min_addr
MASK64 = (1 << 64) - 1                  # unsigned long / size_t

# --- errno (negative, as the C core returns them)
EPERM, ENOENT, ENOMEM, EFAULT, EBUSY, EEXIST, EINVAL = -1, -2, -12, -14, -16, -17, -22
EAGAIN = -11
ENOSPC, ERANGE, ENOSYS, EUCLEAN = -28, -34, -38, -117

# --- vm_flags
VM_READ, VM_WRITE, VM_EXEC, VM_SHARED = 0x1, 0x2, 0x4, 0x8
VM_UFFD_MISSING, VM_UFFD_WP, VM_UFFD_MINOR = 0x200, 0x1000, 0x20000
VM_UFFD_FLAGS = VM_UFFD_MISSING | VM_UFFD_WP | VM_UFFD_MINOR
VM_HUGEPAGE, VM_NOHUGEPAGE = 0x20000000, 0x40000000
#: MADV_DONTFORK / MADV_WIPEONFORK.  VM_WIPEONFORK is Linux's value; Linux's
#: VM_DONTCOPY (0x20000) is taken by LAF_VM_UFFD_MINOR in laf.h, which names
#: LAF_VM_DONTCOPY 0x100000000 (the model's old stand-in 0x40000 made vmas()
#: differ from the C core's; tests/test_reference_drift.py checks it).
VM_DONTCOPY, VM_WIPEONFORK = 0x100000000, 0x02000000
#: VM_ACCOUNT (Linux's value; not in laf.h): the commit charge of a writable
#: private mapping (mm/mmap.c accountable_mapping(), mm/mprotect.c
#: mprotect_fixup()).  It only matters for VMA merges, and Reference.vmas()
#: does not report it.
VM_ACCOUNT = 0x00100000
VM_ACCESS_FLAGS = VM_READ | VM_WRITE | VM_EXEC

# --- syscall arguments
MADV_DONTNEED, MADV_HUGEPAGE, MADV_NOHUGEPAGE = 4, 14, 15
#: the Linux values; laf.h will name them LAF_MADV_DONTFORK ... (issue 9)
MADV_DONTFORK, MADV_DOFORK, MADV_WIPEONFORK, MADV_KEEPONFORK = 10, 11, 18, 19
PR_SET_THP_DISABLE, PR_GET_THP_DISABLE, PR_THP_DISABLE_EXCEPT_ADVISED = 41, 42, 2
UFFD_MODE_MISSING, UFFD_MODE_WP, UFFD_MODE_MINOR = 0x1, 0x2, 0x4

# --- PTE bits (LAF_PTE_*), the PFN at LAF_PTE_PFN_SHIFT whatever the page size
PTE_PRESENT, PTE_WRITE, PTE_DIRTY, PTE_YOUNG = 0x001, 0x002, 0x004, 0x008
PTE_SPECIAL, PTE_CONT, PTE_UFFD_WP, PTE_TOUCHED, PTE_HUGE = 0x010, 0x020, 0x040, 0x080, 0x100
#: pte_protnone() (x86 _PAGE_PROTNONE): a present entry the MMU does not
#: allow any access through (a PROT_NONE VMA).  Proposed LAF_PTE_PROTNONE:
#: not in laf.h yet (issue 10).
PTE_PROTNONE = 0x200
PFN_SHIFT = 12
FLAG_MASK = (1 << PFN_SHIFT) - 1

# --- vm_fault_t
VM_FAULT_OOM, VM_FAULT_SIGBUS, VM_FAULT_SIGSEGV = 0x1, 0x2, 0x40
VM_FAULT_NOPAGE, VM_FAULT_RETRY, VM_FAULT_FALLBACK = 0x100, 0x400, 0x800
VM_FAULT_USERFAULT = 0x100000
VM_FAULT_ERROR = VM_FAULT_OOM | VM_FAULT_SIGBUS | VM_FAULT_SIGSEGV

# --- laf_read_ptes() order codes
ORDER_NONE, ORDER_ZERO, ORDER_HUGE_ZERO = -1, -2, -3

#: memory.max = "max" as struct laf_stats reports it (all ones)
MEMCG_UNLIMITED = (1 << 64) - 1

# --- struct laf_stats, in its order
PER_ORDER_COUNTERS = (
    "anon_fault_alloc", "anon_fault_fallback", "anon_fault_fallback_charge", "anon_fault_declined",
    "split", "split_deferred", "nr_anon", "nr_anon_partially_mapped", "folios_mapped",
)
SCALAR_COUNTERS = (
    "pgfault", "min_flt", "thp_fault_alloc", "thp_fault_fallback", "thp_fault_fallback_charge",
    "thp_zero_page_alloc", "thp_zero_page_alloc_failed", "thp_split_pmd", "thp_split_page",
    "thp_deferred_split_page", "pgreuse",
    "mm_anonpages", "nr_ptes", "nr_pmds", "nr_vmas",
    "ram_pages", "free_pages", "pinned_pages", "memcg_charged", "memcg_limit", "memcg_max_events",
    "lru_pages",
    "faults", "faults_read", "faults_write", "faults_wp", "faults_wp_copy", "faults_pmd", "faults_retried",
    "faults_userfault", "faults_oom", "faults_sigsegv", "faults_sigbus", "hits",
    "set_ptes_calls", "ptes_written", "ptes_cleared", "per_page_ops", "per_folio_ops",
    "zero_page_maps", "huge_zero_pmd_maps", "contpte_blocks", "contpte_unfolds", "bytes_zeroed",
    "alloc_retries", "pages_touched", "zero_pages_touched", "deferred_split_queue",
    "hiwater_rss", "pgtables_bytes",
)
#: counters the model keeps that struct laf_stats does not have yet (issue 9):
#: vmstat ``pgreuse`` (wp_page_reuse()) and ``faults_wp_copy`` (wp_page_copy()
#: completions, zero page included).  Read them with ``Reference.counters()``.
COW_COUNTERS = ("pgreuse", "faults_wp_copy")
#: per-order gauges that belong to the machine, not to one mm
MACHINE_PER_ORDER_GAUGES = ("nr_anon", "nr_anon_partially_mapped")
#: scalar gauges of the machine (the others are per mm: RSS, tables, TOUCHED pages)
MACHINE_GAUGES = frozenset({"lru_pages"})
#: counters that describe state, not events: laf_reset_counters() keeps them
GAUGES = frozenset({"nr_anon", "nr_anon_partially_mapped", "mm_anonpages", "nr_ptes", "nr_pmds",
                    "lru_pages", "pages_touched", "zero_pages_touched", "hiwater_rss"})
#: counters the model reads from its state when asked (stats()), never counts
STATE_COUNTERS = frozenset({"nr_vmas", "ram_pages", "free_pages", "pinned_pages", "memcg_charged",
                            "memcg_limit", "deferred_split_queue", "pgtables_bytes"})

_ERRNO_TEXT = {EINVAL: "invalid argument", ENOMEM: "out of memory", EEXIST: "already exists",
               ENOENT: "no such entry", EPERM: "operation not permitted", EBUSY: "busy",
               ERANGE: "out of range", ENOSPC: "no space", EAGAIN: "try again (max_map_count)"}


def error_for(code: int, what: str) -> LafError:
    """The exception ``pylaf.errors.check()`` raises for C return code ``code``."""
    text = f"{what}: {_ERRNO_TEXT.get(code, code)}"
    if code in (ENOMEM, ENOSPC, EAGAIN):
        return LafMemoryError(text, code)
    if code == EBUSY:
        return LafBusyError(text, code)
    if code in (EINVAL, ERANGE, EPERM, ENOENT, EEXIST):
        return LafValueError(text, code)
    return LafError(text, code)


def check_u64(name: str, value: int, what: str) -> int:
    """An address or length must fit the C ABI's ``uint64_t`` (LafValueError
    naming it, ERANGE as pylaf.arguments.integer() raises it)."""
    if not 0 <= value <= MASK64:
        raise LafValueError(f"{what}: invalid {name} {value:#x}: not a 64-bit unsigned value", ERANGE)
    return value


def page_align(length: int, page_size: int) -> int:
    """PAGE_ALIGN() on a 64-bit ``size_t``: wraps to 0 past the top."""
    return (length + page_size - 1) & ~(page_size - 1) & MASK64


def as_address_array(name: str, arr: Any) -> np.ndarray:
    """An address batch as ``laf_touch()`` takes it: numpy uint64, 1-D,
    C-contiguous; other sequences are converted, other dtypes rejected."""
    if not isinstance(arr, np.ndarray):
        if isinstance(arr, (str, bytes)):
            raise TypeError(f"{name} must be an array of addresses, not {type(arr).__name__}")
        arr = np.asarray(arr if hasattr(arr, "__len__") else list(arr), dtype=np.uint64)
    assert isinstance(arr, np.ndarray)
    if arr.dtype != np.uint64:
        raise TypeError(f"{name} must have dtype uint64, got {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (got a strided view; use np.ascontiguousarray)")
    return arr
