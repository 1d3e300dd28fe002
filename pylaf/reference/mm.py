"""The reference model's public face: :class:`Reference`, the pure-Python
peer of :class:`pylaf.AddressSpace` (same methods, same results), the way
``csrc/api.c`` is the C core's.  It parses and checks arguments, calls the
kernel-named functions of the other modules and turns their negative errno
into the exception ``pylaf.errors.check()`` would raise.

Inputs may be a :class:`pylaf.Config` / :class:`pylaf.Policy` (API parity), but
only their raw fields are read: the page geometry, the policy resolution and
the counter list are the model's own.  Results use pylaf's result types
(``FaultResult``, ``Stats`` ...) so that they compare with ``==``.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
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
from pylaf.config import Config
from pylaf.errors import ClosedError, InvariantError
from pylaf.policy import Policy
from pylaf.reference import check, huge_memory, memory, userfaultfd, vma
from pylaf.reference import policy as thp_policy
from pylaf.reference.abi import (
    EINVAL,
    ERANGE,
    EUCLEAN,
    GAUGES,
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MADV_NOHUGEPAGE,
    MASK64,
    MEMCG_UNLIMITED,
    NR_ORDERS,
    ORDER_NONE,
    ORDER_ZERO,
    PER_ORDER_COUNTERS,
    PFN_SHIFT,
    PR_GET_THP_DISABLE,
    PR_SET_THP_DISABLE,
    PR_THP_DISABLE_EXCEPT_ADVISED,
    PTE_SPECIAL,
    SCALAR_COUNTERS,
    STATE_COUNTERS,
    UFFD_MODE_MINOR,
    UFFD_MODE_MISSING,
    UFFD_MODE_WP,
    VM_READ,
    VM_WRITE,
    check_u64,
    error_for,
)
from pylaf.reference.mm_types import HugePmd, MmStruct, PageGeometry, PteTable
from pylaf.reference.page_alloc import PhysMem
from pylaf.reference.pgtable import lookup
from pylaf.sizes import format_size, parse_size
from pylaf.stats import Stats  # the result type only: its field lists are not used here

ADVICE = {"MADV_DONTNEED": MADV_DONTNEED, "dontneed": MADV_DONTNEED,
          "MADV_HUGEPAGE": MADV_HUGEPAGE, "hugepage": MADV_HUGEPAGE,
          "MADV_NOHUGEPAGE": MADV_NOHUGEPAGE, "nohugepage": MADV_NOHUGEPAGE}
UFFD_MODES = {"missing": UFFD_MODE_MISSING, "wp": UFFD_MODE_WP, "minor": UFFD_MODE_MINOR}


def _check(rv: int, what: str) -> int:
    if rv < 0:
        raise error_for(rv, what)
    return rv


def memcg_pages(limit: Optional[int | str], page_size: int) -> Optional[int]:
    """memory.max in pages: ``None`` is unlimited, ``0`` allows no charge."""
    if limit is None:
        return None
    nbytes = parse_size(limit)
    if nbytes % page_size:
        raise ValueError(f"memcg limit {limit!r} is not a multiple of the page size")
    return nbytes // page_size


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


class Reference:
    """Pure-Python peer of :class:`pylaf.AddressSpace` (same API, same results)."""

    def __init__(self, config: Optional[Config] = None, **kwargs: Any) -> None:
        if config is None:
            config = Config(**kwargs)
        elif kwargs:
            raise TypeError("pass either a Config or keyword arguments, not both")
        self.config = config
        geo = PageGeometry.derive(parse_size(config.page_size), str(config.arch), config.mmap_base)
        self.geo = geo
        self.page_size = geo.page_size
        self.pmd_size = geo.pmd_size
        self.pmd_order = geo.pmd_order
        self.ptrs_per_pte = geo.ptrs_per_pte
        self.cont_pte_order = geo.cont_pte_order
        self.arch_pte_order = geo.arch_pte_order
        self.mmap_base = geo.mmap_base
        self.task_size = geo.task_size
        ram_pages = parse_size(config.ram) // geo.page_size
        cnt, per_order = MmStruct.new_counters()
        phys = PhysMem(ram_pages, geo.max_order, memcg_pages(config.memcg_limit, geo.page_size), cnt)
        self.mm = MmStruct(geo, phys, thp_policy.resolve_policy(config.policy, geo), cnt, per_order)
        self.mm.max_map_count = config.max_map_count
        phys.shrinkers.append(lambda: huge_memory.deferred_split_scan(self.mm))
        self.ram_pages = ram_pages
        self._policy = config.policy
        self._closed = False

    # ------------------------------------------------------------ lifetime
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True

    def _live(self) -> MmStruct:
        if self._closed:
            raise ClosedError("address space is closed")
        return self.mm

    def __enter__(self) -> Reference:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self.mm.vma_list)} VMAs"
        return (f"<Reference {format_size(self.page_size)} pages, {self.config.arch}, "
                f"policy {self._policy.label}, {state}>")

    # -------------------------------------------------------------- policy
    @property
    def policy(self) -> Policy:
        return self._policy

    def set_policy(self, policy: Policy | str) -> None:
        mm = self._live()
        if isinstance(policy, str):
            policy = Policy.parse(policy)
        mm.pol = thp_policy.resolve_policy(policy, self.geo)
        self._policy = policy

    def set_memcg_limit(self, limit: Optional[int | str]) -> None:
        """memory.max (None: unlimited; 0: nothing can be charged).  Below the
        current usage: -ERANGE (the kernel would reclaim, then OOM-kill)."""
        mm = self._live()
        pages = memcg_pages(limit, self.page_size)
        if pages is not None and pages < mm.phys.memcg_charged:
            raise error_for(ERANGE, f"set_memcg_limit({limit!r})")
        mm.phys.memcg_limit = pages

    # --------------------------------------------------------------- VMAs
    def mmap(self, length: int | str, *, addr: Optional[int] = None, prot: str = "rw",
             fixed: bool = False) -> int:
        """mmap(MAP_PRIVATE|MAP_ANONYMOUS[|MAP_FIXED_NOREPLACE]); rules in
        :mod:`pylaf.reference.vma`."""
        mm = self._live()
        nbytes = parse_size(length)
        what = f"mmap(length {length!r}, addr={addr if addr is None else hex(addr)}, fixed={fixed})"
        if set(prot) - set("rw"):
            raise ValueError(f"invalid prot {prot!r}: use a combination of 'r' and 'w'")
        if fixed and addr is None:
            raise ValueError("fixed=True needs addr")
        check_u64("length", nbytes, what)
        hint = check_u64("addr", addr or 0, what)
        flags = (VM_READ if "r" in prot else 0) | (VM_WRITE if "w" in prot else 0)
        return _check(vma.do_mmap(mm, nbytes, hint, fixed, flags), what)

    def munmap(self, addr: int, length: int | str) -> None:
        mm = self._live()
        n = parse_size(length)
        what = f"munmap({addr:#x}, {length!r})"
        _check(vma.do_vmi_munmap(mm, check_u64("addr", addr, what), check_u64("length", n, what)), what)

    def madvise(self, addr: int, length: int | str, advice: str | int) -> None:
        mm = self._live()
        if isinstance(advice, str):
            if advice not in ADVICE:
                raise ValueError(f"unknown madvise advice {advice!r} "
                                 f"(expected MADV_DONTNEED, MADV_HUGEPAGE or MADV_NOHUGEPAGE)")
            adv = ADVICE[advice]
        else:
            adv = int(advice)
        n = parse_size(length)
        what = f"madvise({addr:#x}, {length!r}, {advice!r})"
        _check(vma.do_madvise(mm, check_u64("addr", addr, what), check_u64("length", n, what), adv), what)

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0) -> int:
        return thp_policy.prctl(self._live(), option, arg2, arg3)

    def set_thp_disable(self, disable: bool = True, except_advised: bool = False) -> None:
        if except_advised and not disable:
            raise ValueError("except_advised only applies when disabling")
        self.prctl(PR_SET_THP_DISABLE, int(disable),
                   PR_THP_DISABLE_EXCEPT_ADVISED if except_advised else 0)

    @property
    def thp_disable(self) -> int:
        """PR_GET_THP_DISABLE: 0, 1 (completely) or 3 (except advised)."""
        return self.prctl(PR_GET_THP_DISABLE)

    # ---------------------------------------------------------- userfaultfd
    def _uffd_args(self, addr: int, length: int | str, what: str) -> tuple[MmStruct, int, int]:
        mm = self._live()
        return mm, check_u64("addr", addr, what), check_u64("length", parse_size(length), what)

    def uffd_register(self, addr: int, length: int | str, mode: str | Iterable[str] = "missing") -> None:
        modes = [mode] if isinstance(mode, str) else list(mode)
        bits = 0
        for m in modes:
            if m not in UFFD_MODES:
                raise ValueError(f"unknown userfaultfd mode {m!r} (expected missing, wp or minor)")
            bits |= UFFD_MODES[m]
        what = f"uffd_register({addr:#x}, {length!r}, {modes})"
        mm, a, n = self._uffd_args(addr, length, what)
        _check(userfaultfd.userfaultfd_register(mm, a, n, bits), what)

    def uffd_unregister(self, addr: int, length: int | str) -> None:
        what = f"uffd_unregister({addr:#x}, {length!r})"
        _check(userfaultfd.userfaultfd_unregister(*self._uffd_args(addr, length, what)), what)

    def uffd_copy(self, addr: int, length: int | str, wp: bool = False) -> None:
        what = f"uffd_copy({addr:#x}, {length!r})"
        _check(userfaultfd.uffdio_copy(*self._uffd_args(addr, length, what), bool(wp)), what)

    def uffd_zeropage(self, addr: int, length: int | str) -> None:
        what = f"uffd_zeropage({addr:#x}, {length!r})"
        _check(userfaultfd.uffdio_zeropage(*self._uffd_args(addr, length, what)), what)

    def uffd_writeprotect(self, addr: int, length: int | str, wp: bool = True) -> None:
        what = f"uffd_writeprotect({addr:#x}, {length!r}, wp={wp})"
        _check(userfaultfd.mwriteprotect_range(*self._uffd_args(addr, length, what), bool(wp)), what)

    # ------------------------------------------------------------ accesses
    def fault(self, addr: int, write: bool = False) -> FaultResult:
        mm = self._live()
        check_u64("address", addr, f"fault({addr:#x})")
        acc, kind, vmf, nrf = memory.access(mm, addr, bool(write))
        order = -1
        if acc in (Access.HIT, Access.FAULT):
            order = max(lookup(mm, addr)[1], -1)
        return FaultResult(Access(acc), FaultKind(kind), int(vmf), order, nrf)

    def touch(self, addrs: Any, write: bool | np.ndarray = False, *,
              results: bool = False) -> TouchResult:
        mm = self._live()
        arr = as_address_array("addrs", addrs)
        n = arr.shape[0]
        if isinstance(write, np.ndarray):
            if write.dtype not in (np.bool_, np.uint8):
                raise TypeError(f"write array must have dtype bool or uint8, got {write.dtype}")
            if write.shape != (n,):
                raise ValueError(f"write array has shape {write.shape}, addrs has {n} entries")
            writes = [bool(w) for w in write.tolist()]
        elif isinstance(write, (bool, np.bool_)):
            writes = [bool(write)] * n
        else:
            raise TypeError(f"write must be a bool or a bool/uint8 array, not {type(write).__name__}")
        res = np.empty(n, dtype=np.int8) if results else None
        return self._batch(mm, zip(arr.tolist(), writes, strict=True), n, res)

    def touch_range(self, start: int, length: int | str, stride: Optional[int | str] = None,
                    write: bool = False) -> TouchResult:
        mm = self._live()
        what = f"touch_range({start:#x}, {length!r}, {stride!r})"
        n = check_u64("length", parse_size(length), what)
        st = self.page_size if stride is None else check_u64("stride", parse_size(stride), what)
        check_u64("start", start, what)
        if st <= 0:
            raise ValueError(f"invalid stride {stride!r}: must be > 0")
        if start + n > MASK64:                  # laf_touch_range(): the range wraps past 2^64
            raise error_for(EINVAL, what)
        addrs = range(start, start + n, st)
        return self._batch(mm, ((a, bool(write)) for a in addrs), len(addrs), None)

    @staticmethod
    def _batch(mm: MmStruct, accesses: Iterator[tuple[int, bool]], n: int,
               res: Optional[np.ndarray]) -> TouchResult:
        tally = dict.fromkeys(Access, 0)
        first = -1
        for i, (a, w) in enumerate(accesses):
            acc = memory.access(mm, a, w)[0]
            if res is not None:
                res[i] = int(acc)
            tally[acc] += 1
            if first < 0 and acc not in (Access.HIT, Access.FAULT):
                first = i
        return TouchResult(n, tally[Access.HIT], tally[Access.FAULT], tally[Access.SIGSEGV],
                           tally[Access.OOM], tally[Access.SIGBUS], tally[Access.USERFAULT], first, res)

    # --------------------------------------------------------------- memory
    def shrink_deferred_split(self) -> int:
        return huge_memory.deferred_split_scan(self._live())

    def fragment(self, max_free_order: int) -> None:
        """See :meth:`PhysMem.fragment`."""
        mm = self._live()
        k = int(max_free_order)
        if k < 0 or k >= self.geo.max_order:
            raise error_for(EINVAL, f"fragment({max_free_order})")
        mm.phys.fragment(k)

    def unfragment(self) -> None:
        self._live().phys.unfragment()

    # --- fault injection (emulator hooks, same contract as laf_inject())
    def _check_order(self, order: int, what: str) -> MmStruct:
        mm = self._live()
        if not 0 <= order <= self.pmd_order:
            raise error_for(EINVAL, what)
        return mm

    def inject_alloc_fail(self, order: int, count: int = 1) -> None:
        """The next ``count`` folio allocations of ``order`` fail."""
        self._check_order(order, f"inject_alloc_fail(order={order})").phys.inject_alloc[order] = count

    def inject_charge_fail(self, order: int, count: int = 1) -> None:
        """The next ``count`` memcg charges of ``order`` fail."""
        self._check_order(order, f"inject_charge_fail(order={order})").phys.inject_charge[order] = count

    def inject_race(self, addr: int, count: int = 1) -> None:
        """Between the next write fault's allocation and its PTL recheck,
        another thread write-accesses ``addr``."""
        mm = self._live()
        if addr >= self.task_size:
            raise error_for(EINVAL, f"inject_race({addr:#x})")
        mm.race_addrs = [addr] * count

    def inject_pte_map_fail(self, count: int = 1) -> None:
        """The next ``count`` pte_offset_map() in alloc_anon_folio fail (-EAGAIN)."""
        self._live().inject_pte_map = count

    def inject_clear(self) -> None:
        mm = self._live()
        mm.phys.inject_alloc.clear()
        mm.phys.inject_charge.clear()
        mm.inject_pte_map = 0
        mm.race_addrs = []

    # ----------------------------------------------------------- inspection
    def _state_counters(self, mm: MmStruct) -> dict[str, int]:
        lim = mm.phys.memcg_limit
        return {"nr_vmas": len(mm.vma_list), "ram_pages": self.ram_pages,
                "free_pages": mm.phys.buddy.nr_free, "pinned_pages": len(mm.phys.pinned),
                "memcg_charged": mm.phys.memcg_charged,
                # memory.max = "max" reads as the all-ones sentinel (the model's own
                # constant; tests/test_reference_drift.py checks it against laf.h)
                "memcg_limit": MEMCG_UNLIMITED if lim is None else lim,
                "deferred_split_queue": len(mm.deferred)}

    def stats(self) -> Any:
        """All counters, as a :class:`pylaf.Stats` built from the model's own names."""
        mm = self._live()
        scalars = {**mm.cnt, **self._state_counters(mm)}
        kw: dict[str, Any] = {"page_size": self.page_size, "pmd_order": self.pmd_order}
        per_order: dict[str, np.ndarray] = {}
        for name in PER_ORDER_COUNTERS:
            arr = np.array(mm.per_order[name], dtype=np.int64)
            per_order[name] = arr
            lo = 0 if name == "folios_mapped" else 2
            kw[name] = {format_size(self.page_size << o): int(arr[o]) for o in range(lo, self.pmd_order + 1)}
        for name in SCALAR_COUNTERS:
            kw[name] = int(scalars[name])
        kw["per_order"] = per_order
        return Stats(**kw)

    def reset_counters(self) -> None:
        mm = self._live()
        for name in PER_ORDER_COUNTERS:
            if name not in GAUGES:
                mm.per_order[name] = [0] * NR_ORDERS
        for name in SCALAR_COUNTERS:
            if name not in GAUGES and name not in STATE_COUNTERS:
                mm.cnt[name] = 0

    def vmas(self) -> list[Vma]:
        return [Vma(v.start, v.end, VmFlags(v.flags), v.anon_vma) for v in self._live().vma_list]

    def pte(self, addr: int) -> Pte:
        return Pte(lookup(self._live(), addr)[0])

    def folio(self, addr: int) -> Optional[Folio]:
        mm = self._live()
        ent = mm.pmd.get(self.geo.pmd_index(addr))
        if ent is None:
            return None
        if isinstance(ent, HugePmd):
            f = ent.folio
        else:
            raw = ent.ptes[self.geo.pte_index(addr)]
            if not raw or raw & PTE_SPECIAL:
                return None
            f = mm.folio_of[raw >> PFN_SHIFT]
        flags = FolioFlags.HUGE_ZERO if f.huge_zero else FolioFlags.ANON | FolioFlags.LRU
        if f.pmd_mapped:
            flags |= FolioFlags.PMD_MAPPED
        if f.partially_mapped:
            flags |= FolioFlags.PARTIALLY_MAPPED
        return Folio(f.pfn, f.va >> self.geo.page_shift, f.order, f.refcount, f.mapcount, FolioFlags(flags))

    def read_ptes(self, start: int, npages: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw entries and per-page folio orders (ORDER_NONE/ZERO/HUGE_ZERO codes)."""
        mm = self._live()
        if npages < 0:
            raise ValueError(f"invalid npages {npages}")
        g = self.geo
        ptes = np.zeros(npages, dtype=np.uint64)
        orders = np.full(npages, ORDER_NONE, dtype=np.int8)
        base = start & ~(g.page_size - 1)
        i = 0
        while i < npages:
            addr = base + i * g.page_size
            k0 = g.pte_index(addr)
            n = min(npages - i, g.ptrs_per_pte - k0)
            ent = mm.pmd.get(g.pmd_index(addr))
            if isinstance(ent, PteTable) and ent.used:
                for k in range(k0, k0 + n):
                    raw = ent.ptes[k]
                    if raw:
                        ptes[i + k - k0] = raw
                        orders[i + k - k0] = (ORDER_ZERO if raw & PTE_SPECIAL
                                              else mm.folio_of[raw >> PFN_SHIFT].order)
            elif isinstance(ent, HugePmd):
                for k in range(k0, k0 + n):
                    ptes[i + k - k0], orders[i + k - k0] = lookup(mm, addr + (k - k0) * g.page_size)
            i += n
        return ptes, orders

    def check_invariants(self) -> None:
        """Cross-check the model's own bookkeeping (raises InvariantError)."""
        problems = check.find_problems(self._live())
        if problems:
            raise InvariantError("; ".join(problems), EUCLEAN)


def open_reference(policy: Policy | str | None = None, **kw: Any) -> Reference:
    """Shorthand mirroring :func:`pylaf.open_address_space`."""
    if policy is not None:
        kw["policy"] = Policy.parse(policy) if isinstance(policy, str) else policy
    return Reference(Config(**kw))


__all__ = ["Reference", "open_reference"]
