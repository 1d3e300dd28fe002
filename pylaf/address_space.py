"""AddressSpace: one emulated process (mm_struct) on its own emulated machine.

>>> from pylaf import AddressSpace, Config, Policy
>>> with AddressSpace(Config(policy=Policy.upstream(sizes={"64K": "always"}))) as mm:
...     a = mm.mmap("1M")
...     r = mm.touch_range(a, "1M", write=True)
...     mm.stats().anon_fault_alloc["64K"] > 0
True

Thread safety: one AddressSpace must not be used by two threads at once.  The
C core enforces it (a second concurrent call raises :class:`LafBusyError`
instead of corrupting state); the batch calls release the GIL, so separate
AddressSpaces run in parallel on separate threads.
"""
from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from pylaf._ffi import ffi, lib
from pylaf.config import Config
from pylaf.errors import ClosedError, InvariantError, check
from pylaf.policy import Policy
from pylaf.sizes import format_size, parse_size
from pylaf.stats import Stats, stats_from_c


class Access(enum.IntEnum):
    """Outcome of one emulated access (enum laf_access)."""

    HIT = lib.LAF_ACCESS_HIT
    FAULT = lib.LAF_ACCESS_FAULT
    SIGSEGV = lib.LAF_ACCESS_SIGSEGV
    OOM = lib.LAF_ACCESS_OOM
    SIGBUS = lib.LAF_ACCESS_SIGBUS
    USERFAULT = lib.LAF_ACCESS_USERFAULT


class FaultKind(enum.IntEnum):
    """Which handler resolved a fault (enum laf_fault_kind)."""

    NONE = lib.LAF_FK_NONE
    ANON_READ = lib.LAF_FK_ANON_READ
    ANON_WRITE = lib.LAF_FK_ANON_WRITE
    WP = lib.LAF_FK_WP
    PMD = lib.LAF_FK_PMD
    PMD_ZERO = lib.LAF_FK_PMD_ZERO
    PMD_WP = lib.LAF_FK_PMD_WP


class PteFlags(enum.IntFlag):
    PRESENT = lib.LAF_PTE_PRESENT
    WRITE = lib.LAF_PTE_WRITE
    DIRTY = lib.LAF_PTE_DIRTY
    YOUNG = lib.LAF_PTE_YOUNG
    SPECIAL = lib.LAF_PTE_SPECIAL
    CONT = lib.LAF_PTE_CONT
    UFFD_WP = lib.LAF_PTE_UFFD_WP
    TOUCHED = lib.LAF_PTE_TOUCHED
    HUGE = lib.LAF_PTE_HUGE


class VmFlags(enum.IntFlag):
    READ = lib.LAF_VM_READ
    WRITE = lib.LAF_VM_WRITE
    EXEC = lib.LAF_VM_EXEC
    SHARED = lib.LAF_VM_SHARED
    UFFD_MISSING = lib.LAF_VM_UFFD_MISSING
    UFFD_WP = lib.LAF_VM_UFFD_WP
    UFFD_MINOR = lib.LAF_VM_UFFD_MINOR
    HUGEPAGE = lib.LAF_VM_HUGEPAGE
    NOHUGEPAGE = lib.LAF_VM_NOHUGEPAGE


class FolioFlags(enum.IntFlag):
    ANON = lib.LAF_FOLIO_ANON
    LRU = lib.LAF_FOLIO_LRU
    PMD_MAPPED = lib.LAF_FOLIO_PMD_MAPPED
    PARTIALLY_MAPPED = lib.LAF_FOLIO_PARTIALLY_MAPPED
    HUGE_ZERO = lib.LAF_FOLIO_HUGE_ZERO


MADVISE = {
    "MADV_DONTNEED": lib.LAF_MADV_DONTNEED, "dontneed": lib.LAF_MADV_DONTNEED,
    "MADV_HUGEPAGE": lib.LAF_MADV_HUGEPAGE, "hugepage": lib.LAF_MADV_HUGEPAGE,
    "MADV_NOHUGEPAGE": lib.LAF_MADV_NOHUGEPAGE, "nohugepage": lib.LAF_MADV_NOHUGEPAGE,
}
UFFD_MODES = {"missing": lib.LAF_UFFDIO_REGISTER_MODE_MISSING,
              "wp": lib.LAF_UFFDIO_REGISTER_MODE_WP,
              "minor": lib.LAF_UFFDIO_REGISTER_MODE_MINOR}
PTE_PFN_SHIFT = lib.LAF_PTE_PFN_SHIFT


@dataclass(frozen=True)
class FaultResult:
    access: Access
    kind: FaultKind
    vm_fault: int
    order: int          #: order of the folio now mapping the address, -1: none / zero page
    nr_faults: int      #: handle_mm_fault() calls this access took


@dataclass(frozen=True)
class TouchResult:
    accesses: int
    hits: int
    faulted: int
    sigsegv: int
    oom: int
    sigbus: int
    userfault: int
    first_error: int                 #: index of the first failed access, -1 if none
    results: Optional[np.ndarray] = None   #: per-access Access codes (int8) when asked

    @property
    def ok(self) -> bool:
        return self.first_error < 0


@dataclass(frozen=True)
class Vma:
    start: int
    end: int
    flags: VmFlags
    anon_vma: int

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Pte:
    raw: int

    @property
    def flags(self) -> PteFlags:
        return PteFlags(self.raw & ((1 << PTE_PFN_SHIFT) - 1))

    @property
    def pfn(self) -> int:
        return self.raw >> PTE_PFN_SHIFT

    @property
    def present(self) -> bool:
        return bool(self.raw & lib.LAF_PTE_PRESENT)

    @property
    def zero_page(self) -> bool:
        return bool(self.raw & lib.LAF_PTE_SPECIAL)


@dataclass(frozen=True)
class Folio:
    head_pfn: int
    index: int
    order: int
    refcount: int
    mapcount: int
    flags: FolioFlags

    @property
    def nr_pages(self) -> int:
        return 1 << self.order


def _as_u64_array(name: str, arr: Any) -> np.ndarray:
    """Check an address array: numpy uint64, 1-D, C-contiguous (cffi checks none of dtype)."""
    if not isinstance(arr, np.ndarray):
        if isinstance(arr, (str, bytes)):
            raise TypeError(f"{name} must be an array of addresses, not {type(arr).__name__}")
        arr = np.asarray(list(arr) if not hasattr(arr, "__len__") else arr, dtype=np.uint64)
    if arr.dtype != np.uint64:
        raise TypeError(f"{name} must have dtype uint64, got {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (got a strided view; use np.ascontiguousarray)")
    return arr


class AddressSpace:
    """One emulated process: VMAs, page tables, folios, counters, on emulated RAM."""

    def __init__(self, config: Optional[Config] = None, **kwargs: Any) -> None:
        if config is None:
            config = Config(**kwargs)
        elif kwargs:
            raise TypeError("pass either a Config or keyword arguments, not both")
        self.config = config
        ccfg = ffi.new("struct laf_config *")
        config.fill_c(ccfg)
        out = ffi.new("laf_mm **")
        check(lib.laf_mm_create(ccfg, out), "laf_mm_create")
        self._mm = ffi.gc(out[0], lib.laf_mm_destroy, size=int(config.ram) // 64)
        geo = ffi.new("struct laf_geometry *")
        check(lib.laf_get_geometry(self._mm, geo))
        self.page_size: int = int(geo.page_size)
        self.pmd_size: int = int(geo.pmd_size)
        self.pmd_order: int = int(geo.pmd_order)
        self.ptrs_per_pte: int = int(geo.ptrs_per_pte)
        self.cont_pte_order: int = int(geo.cont_pte_order)
        self.arch_pte_order: int = int(geo.arch_pte_order)
        self.mmap_base: int = int(geo.mmap_base)
        self.task_size: int = int(geo.task_size)
        self._stats = ffi.new("struct laf_stats *")
        self._sum = ffi.new("struct laf_touch_summary *")
        self._res = ffi.new("struct laf_fault_result *")
        self._policy = config.policy
        self.set_policy(config.policy)

    # ------------------------------------------------------------ lifetime
    @property
    def mm(self) -> Any:
        if self._mm is None:
            raise ClosedError("address space is closed")
        return self._mm

    @property
    def closed(self) -> bool:
        return self._mm is None

    def close(self) -> None:
        """Free everything now (idempotent)."""
        if self._mm is not None:
            mm, self._mm = self._mm, None
            ffi.release(mm)

    def __enter__(self) -> AddressSpace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self.vmas())} VMAs"
        return (f"<AddressSpace {format_size(self.page_size)} pages, {self.config.arch}, "
                f"policy {self._policy.label}, {state}>")

    # -------------------------------------------------------------- policy
    @property
    def policy(self) -> Policy:
        return self._policy

    def set_policy(self, policy: Policy | str) -> None:
        """Switch the THP policy; takes effect at the next fault (as sysfs does)."""
        if isinstance(policy, str):
            policy = Policy.parse(policy)
        cpol = ffi.new("struct laf_policy *")
        policy.fill_c(cpol, self.page_size)
        check(lib.laf_set_policy(self.mm, cpol), f"set_policy({policy.label})")
        self._policy = policy

    def set_memcg_limit(self, limit: Optional[int | str]) -> None:
        """memory.max of the mm's memcg (None: unlimited, 0: nothing may be
        charged).  A limit below the current usage raises LafValueError
        (ERANGE): the emulator does not reclaim to get under it."""
        nbytes = lib.LAF_MEMCG_UNLIMITED if limit is None else parse_size(limit)
        if limit is not None and nbytes % self.page_size:
            raise ValueError(f"memcg limit {limit!r} is not a multiple of the page size")
        check(lib.laf_set_memcg_limit(self.mm, nbytes), f"set_memcg_limit({limit!r})")

    # ------------------------------------------------------- address space
    def mmap(self, length: int | str, *, addr: Optional[int] = None, prot: str = "rw",
             fixed: bool = False) -> int:
        """Map private anonymous memory; returns its start address.

        ``addr`` is a hint (or, with ``fixed=True``, the exact place:
        MAP_FIXED_NOREPLACE semantics, overlapping an existing mapping raises).
        ``prot``: any of ``"r"``, ``"w"``, ``"rw"``, ``""`` (PROT_NONE).
        """
        nbytes = parse_size(length)
        if nbytes <= 0:
            raise ValueError(f"invalid mmap length {length!r}: must be > 0")
        if set(prot) - set("rw"):
            raise ValueError(f"invalid prot {prot!r}: use a combination of 'r' and 'w'")
        p = (lib.LAF_PROT_READ if "r" in prot else 0) | (lib.LAF_PROT_WRITE if "w" in prot else 0)
        if fixed and addr is None:
            raise ValueError("fixed=True needs addr")
        if addr is not None and (addr < 0 or addr >= 1 << 64):
            raise ValueError(f"invalid mmap address {addr:#x}")
        out = ffi.new("uint64_t *")
        check(lib.laf_mmap(self.mm, addr or 0, nbytes, p, lib.LAF_MAP_FIXED if fixed else 0, out),
              f"mmap(addr={addr if addr is None else hex(addr)}, length={length!r}, fixed={fixed})")
        return int(out[0])

    def munmap(self, addr: int, length: int | str) -> None:
        n = parse_size(length)
        check(lib.laf_munmap(self.mm, addr, n), f"munmap({addr:#x}, {length!r})")

    def madvise(self, addr: int, length: int | str, advice: str | int) -> None:
        """MADV_DONTNEED, MADV_HUGEPAGE or MADV_NOHUGEPAGE over a range.

        Like the kernel, a range with unmapped holes raises after applying the
        advice to the mapped parts.
        """
        if isinstance(advice, str):
            if advice not in MADVISE:
                raise ValueError(f"unknown madvise advice {advice!r} "
                                 f"(expected MADV_DONTNEED, MADV_HUGEPAGE or MADV_NOHUGEPAGE)")
            adv = MADVISE[advice]
        else:
            adv = int(advice)
        n = parse_size(length)
        check(lib.laf_madvise(self.mm, addr, n, adv), f"madvise({addr:#x}, {length!r}, {advice!r})")

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0) -> int:
        out = ffi.new("int64_t *")
        check(lib.laf_prctl(self.mm, option, arg2, arg3, out), f"prctl({option}, {arg2}, {arg3})")
        return int(out[0])

    def set_thp_disable(self, disable: bool = True, except_advised: bool = False) -> None:
        """prctl(PR_SET_THP_DISABLE, disable, except_advised ? PR_THP_DISABLE_EXCEPT_ADVISED : 0)."""
        if except_advised and not disable:
            raise ValueError("except_advised only applies when disabling")
        self.prctl(lib.LAF_PR_SET_THP_DISABLE, int(disable),
                   lib.LAF_PR_THP_DISABLE_EXCEPT_ADVISED if except_advised else 0)

    @property
    def thp_disable(self) -> int:
        """PR_GET_THP_DISABLE: 0, 1 (completely) or 3 (except advised)."""
        return self.prctl(lib.LAF_PR_GET_THP_DISABLE)

    def uffd_register(self, addr: int, length: int | str, mode: str | Iterable[str] = "missing") -> None:
        modes = [mode] if isinstance(mode, str) else list(mode)
        bits = 0
        for m in modes:
            if m not in UFFD_MODES:
                raise ValueError(f"unknown userfaultfd mode {m!r} (expected missing, wp or minor)")
            bits |= UFFD_MODES[m]
        check(lib.laf_uffd_register(self.mm, addr, parse_size(length), bits),
              f"uffd_register({addr:#x}, {length!r}, {modes})")

    def uffd_unregister(self, addr: int, length: int | str) -> None:
        check(lib.laf_uffd_unregister(self.mm, addr, parse_size(length)),
              f"uffd_unregister({addr:#x}, {length!r})")

    def uffd_copy(self, addr: int, length: int | str, wp: bool = False) -> None:
        """UFFDIO_COPY: fill none PTEs with order-0 pages (optionally write-protected)."""
        check(lib.laf_uffd_copy(self.mm, addr, parse_size(length), int(wp)),
              f"uffd_copy({addr:#x}, {length!r})")

    def uffd_zeropage(self, addr: int, length: int | str) -> None:
        check(lib.laf_uffd_zeropage(self.mm, addr, parse_size(length)),
              f"uffd_zeropage({addr:#x}, {length!r})")

    def uffd_writeprotect(self, addr: int, length: int | str, wp: bool = True) -> None:
        check(lib.laf_uffd_writeprotect(self.mm, addr, parse_size(length), int(wp)),
              f"uffd_writeprotect({addr:#x}, {length!r}, wp={wp})")

    # ------------------------------------------------------------ accesses
    def fault(self, addr: int, write: bool = False) -> FaultResult:
        """One access at ``addr``: a hit, or the fault(s) that resolve it."""
        if not 0 <= addr < 1 << 64:
            raise ValueError(f"invalid address {addr:#x}")
        r = self._res
        check(lib.laf_fault(self.mm, addr, int(bool(write)), r), f"fault({addr:#x})")
        return FaultResult(Access(r.access), FaultKind(r.kind), int(r.vm_fault), int(r.order),
                           int(r.nr_faults))

    def _summary(self, results: Optional[np.ndarray]) -> TouchResult:
        s = self._sum
        return TouchResult(int(s.accesses), int(s.hits), int(s.faulted), int(s.sigsegv), int(s.oom),
                           int(s.sigbus), int(s.userfault), int(s.first_error), results)

    def touch(self, addrs: Any, write: bool | np.ndarray = False, *,
              results: bool = False) -> TouchResult:
        """Batch of accesses in one C call (zero-copy over a numpy uint64 array).

        ``write`` is a bool for all accesses or a bool/uint8 array, one per
        access.  Accesses that hit a present entry count as hits, not faults.
        With ``results=True`` the per-access :class:`Access` codes come back.
        """
        arr = _as_u64_array("addrs", addrs)
        n = arr.shape[0]
        wptr: Any = ffi.NULL
        if isinstance(write, np.ndarray):
            if write.dtype not in (np.bool_, np.uint8):
                raise TypeError(f"write array must have dtype bool or uint8, got {write.dtype}")
            if write.shape != (n,):
                raise ValueError(f"write array has shape {write.shape}, addrs has {n} entries")
            if not write.flags.c_contiguous:
                raise ValueError("write array must be C-contiguous")
            wptr = ffi.from_buffer("uint8_t[]", write)
            wflag = 0
        else:
            wflag = int(bool(write))
        res_arr = np.empty(n, dtype=np.int8) if results else None
        rptr = ffi.from_buffer("int8_t[]", res_arr, require_writable=True) if res_arr is not None else ffi.NULL
        aptr = ffi.from_buffer("uint64_t[]", arr) if n else ffi.NULL
        check(lib.laf_touch(self.mm, aptr, n, wptr, wflag, rptr, self._sum), "touch")
        return self._summary(res_arr)

    def touch_range(self, start: int, length: int | str, stride: Optional[int | str] = None,
                    write: bool = False) -> TouchResult:
        """Access ``start, start+stride, ...`` below ``start+length`` (stride: one page)."""
        n = parse_size(length)
        st = self.page_size if stride is None else parse_size(stride)
        if st <= 0:
            raise ValueError(f"invalid stride {stride!r}: must be > 0")
        check(lib.laf_touch_range(self.mm, start, n, st, int(bool(write)), self._sum),
              f"touch_range({start:#x}, {length!r})")
        return self._summary(None)

    # -------------------------------------------------------------- memory
    def shrink_deferred_split(self) -> int:
        """Run the deferred-split shrinker; returns the number of folios split."""
        out = ffi.new("uint64_t *")
        check(lib.laf_shrink_deferred_split(self.mm, out))
        return int(out[0])

    def fragment(self, max_free_order: int) -> None:
        """Pin one frame in every 2^(max_free_order+1) so no larger free block remains."""
        check(lib.laf_phys_fragment(self.mm, max_free_order), f"fragment({max_free_order})")

    def unfragment(self) -> None:
        check(lib.laf_phys_unfragment(self.mm))

    def inject_alloc_fail(self, order: int, count: int = 1) -> None:
        check(lib.laf_inject(self.mm, lib.LAF_INJECT_ALLOC_FAIL, order, count, 0),
              f"inject_alloc_fail(order={order})")

    def inject_charge_fail(self, order: int, count: int = 1) -> None:
        check(lib.laf_inject(self.mm, lib.LAF_INJECT_CHARGE_FAIL, order, count, 0),
              f"inject_charge_fail(order={order})")

    def inject_race(self, addr: int, count: int = 1) -> None:
        """Between the next write fault's allocation and its PTL recheck, another
        thread write-faults ``addr``."""
        check(lib.laf_inject(self.mm, lib.LAF_INJECT_RACE, 0, count, addr), f"inject_race({addr:#x})")

    def inject_pte_map_fail(self, count: int = 1) -> None:
        check(lib.laf_inject(self.mm, lib.LAF_INJECT_PTE_MAP_FAIL, 0, count, 0))

    def inject_clear(self) -> None:
        check(lib.laf_inject(self.mm, lib.LAF_INJECT_CLEAR, 0, 0, 0))

    # ---------------------------------------------------------- inspection
    def stats(self) -> Stats:
        check(lib.laf_get_stats(self.mm, self._stats))
        return stats_from_c(self._stats, self.page_size, self.pmd_order)

    def reset_counters(self) -> None:
        """Zero the event counters (gauges such as RSS and nr_anon stay)."""
        check(lib.laf_reset_counters(self.mm))

    def vmas(self) -> list[Vma]:
        nr = ffi.new("size_t *")
        check(lib.laf_get_vmas(self.mm, ffi.NULL, 0, nr))
        buf = ffi.new("struct laf_vma_info[]", max(int(nr[0]), 1))
        check(lib.laf_get_vmas(self.mm, buf, int(nr[0]), nr))
        return [Vma(int(v.start), int(v.end), VmFlags(int(v.vm_flags)), int(v.anon_vma))
                for v in buf[0:int(nr[0])]]

    def pte(self, addr: int) -> Pte:
        """The entry mapping ``addr`` (a huge PMD is shown per page, with HUGE)."""
        p = ffi.new("uint64_t *")
        check(lib.laf_lookup(self.mm, addr, p, ffi.NULL), f"pte({addr:#x})")
        return Pte(int(p[0]))

    def folio(self, addr: int) -> Optional[Folio]:
        """The folio mapped at ``addr``, or None (nothing mapped, or the small zero page)."""
        fi = ffi.new("struct laf_folio_info *")
        check(lib.laf_lookup(self.mm, addr, ffi.NULL, fi), f"folio({addr:#x})")
        if fi.order < 0:
            return None
        return Folio(int(fi.head_pfn), int(fi.index), int(fi.order), int(fi.refcount),
                     int(fi.mapcount), FolioFlags(int(fi.flags)))

    def read_ptes(self, start: int, npages: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw entries and per-page folio orders (-1 none, -2 zero page, -3 huge zero)."""
        if npages < 0:
            raise ValueError(f"invalid npages {npages}")
        ptes = np.zeros(npages, dtype=np.uint64)
        orders = np.zeros(npages, dtype=np.int8)
        check(lib.laf_read_ptes(self.mm, start, npages,
                                ffi.from_buffer("uint64_t[]", ptes, require_writable=True),
                                ffi.from_buffer("int8_t[]", orders, require_writable=True)),
              f"read_ptes({start:#x}, {npages})")
        return ptes, orders

    def check_invariants(self) -> None:
        """Cross-check all emulated state; raises InvariantError naming what is wrong."""
        msg = ffi.new("char[512]")
        rv = lib.laf_check_invariants(self.mm, msg, 512)
        if rv == lib.LAF_EUCLEAN:
            raise InvariantError(ffi.string(msg).decode(), rv)
        check(rv, "check_invariants")


def open_address_space(policy: Policy | str | None = None, **kw: Any) -> AddressSpace:
    """Shorthand: ``open_address_space("order-4", ram="8G")``."""
    if policy is not None:
        kw["policy"] = Policy.parse(policy) if isinstance(policy, str) else policy
    return AddressSpace(Config(**kw))


__all__: Sequence[str] = (
    "Access",
    "AddressSpace",
    "FaultKind",
    "FaultResult",
    "Folio",
    "FolioFlags",
    "Pte",
    "PteFlags",
    "TouchResult",
    "VmFlags",
    "Vma",
    "open_address_space",
)
