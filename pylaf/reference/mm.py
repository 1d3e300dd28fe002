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
from pylaf.reference import check, huge_memory, memory, mprotect, mremap, userfaultfd, vma
from pylaf.reference import policy as thp_policy
from pylaf.reference.abi import (
    COW_COUNTERS,
    EINVAL,
    ERANGE,
    EUCLEAN,
    GAUGES,
    MADV_DOFORK,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MADV_KEEPONFORK,
    MADV_NOHUGEPAGE,
    MADV_WIPEONFORK,
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
    VM_ACCOUNT,
    as_address_array,
    check_u64,
    error_for,
)
from pylaf.reference.fork import dup_mmap, exit_mmap
from pylaf.reference.mm_types import HugePmd, Machine, MmStruct, PageGeometry, PteTable
from pylaf.reference.page_alloc import PhysMem
from pylaf.reference.pgtable import lookup
from pylaf.sizes import format_size, parse_size
from pylaf.stats import Stats  # the result type only: its field lists are not used here

ADVICE = {"MADV_DONTNEED": MADV_DONTNEED, "dontneed": MADV_DONTNEED,
          "MADV_HUGEPAGE": MADV_HUGEPAGE, "hugepage": MADV_HUGEPAGE,
          "MADV_NOHUGEPAGE": MADV_NOHUGEPAGE, "nohugepage": MADV_NOHUGEPAGE,
          "MADV_DONTFORK": MADV_DONTFORK, "dontfork": MADV_DONTFORK,
          "MADV_DOFORK": MADV_DOFORK, "dofork": MADV_DOFORK,
          "MADV_WIPEONFORK": MADV_WIPEONFORK, "wipeonfork": MADV_WIPEONFORK,
          "MADV_KEEPONFORK": MADV_KEEPONFORK, "keeponfork": MADV_KEEPONFORK}
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


class RefMachine:
    """One emulated machine (RAM, buddy, memcg, THP knobs, zero pages,
    machine-wide counters, deferred-split queue) holding any number of
    address spaces: :meth:`address_space` makes an empty one,
    :meth:`Reference.fork` a copy.  The pure-Python peer of the coming
    ``pylaf.Machine``."""

    def __init__(self, config: Optional[Config] = None, **kwargs: Any) -> None:
        if config is None:
            config = Config(**kwargs)
        elif kwargs:
            raise TypeError("pass either a Config or keyword arguments, not both")
        self.config = config
        geo = PageGeometry.derive(parse_size(config.page_size), str(config.arch), config.mmap_base)
        self.geo = geo
        self.ram_pages = parse_size(config.ram) // geo.page_size
        phys = PhysMem(self.ram_pages, geo.max_order, memcg_pages(config.memcg_limit, geo.page_size), {})
        self.model = Machine(geo, phys, thp_policy.resolve_policy(config.policy, geo))
        self.model.max_map_count = config.max_map_count
        phys.shrinkers.append(self._shrink_deferred_split)
        self.policy = config.policy
        self._spaces: list[Reference] = []

    def _shrink_deferred_split(self) -> int:
        assert self.model.current is not None, "reclaim outside any address space"
        return huge_memory.deferred_split_scan(self.model.current)

    def address_space(self) -> Reference:
        """A new, empty address space on this machine (an exec'd process)."""
        return Reference.on_machine(self, MmStruct(self.model))

    def adopt(self, ref: Reference) -> None:
        self._spaces.append(ref)

    @property
    def mms(self) -> list[Reference]:
        """The live address spaces, oldest first."""
        return [r for r in self._spaces if not r.closed]

    def counters(self) -> dict[str, int]:
        """Every scalar counter (COW counters included) over the machine: events
        summed over every mm that ever lived, gauges over the live ones."""
        m = self.model
        out = {n: 0 if n in GAUGES else v for n, v in m.retired_cnt.items()}
        for mm in m.mms:
            for n, v in mm.cnt.items():
                out[n] = out.get(n, 0) + v
        out.update(machine_state(m))
        out["nr_vmas"] = sum(len(mm.vma_list) for mm in m.mms)
        out["pgtables_bytes"] = (out.get("nr_ptes", 0) + out.get("nr_pmds", 0)) * self.geo.page_size
        return out

    def stats(self) -> Any:
        """Machine-wide :class:`pylaf.Stats` (see :meth:`counters`)."""
        m = self.model
        per_order = {n: list(a) for n, a in m.retired_per_order.items()}
        for mm in m.mms:
            for n, arr in mm.per_order.items():
                if n not in m.gauges:
                    per_order[n] = [a + b for a, b in zip(per_order[n], arr, strict=True)]
        per_order.update(m.gauges)
        return build_stats(self.counters(), per_order, self.geo)

    def check_invariants(self) -> None:
        """Recount refcounts and mapcounts over every address space (raises InvariantError)."""
        problems = check.find_problems(self.model)
        if problems:
            raise InvariantError("; ".join(problems), EUCLEAN)


def machine_state(m: Machine) -> dict[str, int]:
    """The counters read from the machine's state (STATE_COUNTERS but nr_vmas, and lru_pages)."""
    lim = m.phys.memcg_limit
    return {"ram_pages": m.phys.buddy.nr_frames, "free_pages": m.phys.buddy.nr_free,
            "pinned_pages": len(m.phys.pinned), "memcg_charged": m.phys.memcg_charged,
            # memory.max = "max" reads as the all-ones sentinel (the model's own
            # constant; tests/test_reference_drift.py checks it against laf.h)
            "memcg_limit": MEMCG_UNLIMITED if lim is None else lim,
            "deferred_split_queue": len(m.deferred), "lru_pages": m.lru_pages}


def build_stats(scalars: dict[str, int], per_order_lists: dict[str, list[int]], geo: PageGeometry) -> Any:
    """A :class:`pylaf.Stats` from the model's own counter names."""
    kw: dict[str, Any] = {"page_size": geo.page_size, "pmd_order": geo.pmd_order}
    per_order: dict[str, np.ndarray] = {}
    for name in PER_ORDER_COUNTERS:
        arr = np.array(per_order_lists[name], dtype=np.int64)
        per_order[name] = arr
        lo = 0 if name == "folios_mapped" else 2
        kw[name] = {format_size(geo.page_size << o): int(arr[o]) for o in range(lo, geo.pmd_order + 1)}
    for name in SCALAR_COUNTERS:
        kw[name] = int(scalars[name])
    kw["per_order"] = per_order
    return Stats(**kw)


class Reference:
    """Pure-Python peer of :class:`pylaf.AddressSpace` (same API, same results):
    one address space.  ``Reference(config)`` is a private machine with one
    address space; :meth:`fork` and :meth:`RefMachine.address_space` make more."""

    def __init__(self, config: Optional[Config] = None, **kwargs: Any) -> None:
        machine = RefMachine(config, **kwargs)
        self._setup(machine, MmStruct(machine.model))

    @classmethod
    def on_machine(cls, machine: RefMachine, mm: MmStruct) -> Reference:
        """The address space ``mm`` of ``machine`` (fork(), address_space())."""
        ref = cls.__new__(cls)
        ref._setup(machine, mm)
        return ref

    def _setup(self, machine: RefMachine, mm: MmStruct) -> None:
        self.config = machine.config
        geo = machine.geo
        self.geo = geo
        self.page_size = geo.page_size
        self.pmd_size = geo.pmd_size
        self.pmd_order = geo.pmd_order
        self.ptrs_per_pte = geo.ptrs_per_pte
        self.cont_pte_order = geo.cont_pte_order
        self.arch_pte_order = geo.arch_pte_order
        self.mmap_base = geo.mmap_base
        self.task_size = geo.task_size
        self.mm = mm
        self.ram_pages = machine.ram_pages
        self._machine = machine
        self._closed = False
        machine.adopt(self)

    # ------------------------------------------------------------ lifetime
    @property
    def machine(self) -> RefMachine:
        return self._machine

    @property
    def closed(self) -> bool:
        return self._closed

    def fork(self) -> Reference:
        """fork(): a child address space on the same machine (dup_mmap(),
        rules in :mod:`pylaf.reference.fork`)."""
        child = dup_mmap(self._live())
        if isinstance(child, int):
            raise error_for(child, "fork()")
        return Reference.on_machine(self._machine, child)

    def exit(self) -> None:
        """exit_mmap(): tear the address space down; it is closed afterwards."""
        exit_mmap(self._live())
        self._closed = True

    def close(self) -> None:
        """Same as :meth:`exit`; closing twice is allowed."""
        if not self._closed:
            self.exit()

    def _live(self) -> MmStruct:
        if self._closed:
            raise ClosedError("address space is closed")
        self.mm.machine.enter(self.mm)
        return self.mm

    def __enter__(self) -> Reference:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self.mm.vma_list)} VMAs"
        return (f"<Reference {format_size(self.page_size)} pages, {self.config.arch}, "
                f"policy {self.policy.label}, {state}>")

    # -------------------------------------------------------------- policy
    @property
    def policy(self) -> Policy:
        """The machine's THP policy (sysfs knobs are machine-wide)."""
        return self._machine.policy

    def set_policy(self, policy: Policy | str) -> None:
        mm = self._live()
        if isinstance(policy, str):
            policy = Policy.parse(policy)
        mm.pol = thp_policy.resolve_policy(policy, self.geo)
        self._machine.policy = policy

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
        flags = mprotect.calc_vm_prot_bits(prot)
        if fixed and addr is None:
            raise ValueError("fixed=True needs addr")
        check_u64("length", nbytes, what)
        hint = check_u64("addr", addr or 0, what)
        return _check(vma.do_mmap(mm, nbytes, hint, fixed, flags), what)

    def munmap(self, addr: int, length: int | str) -> None:
        mm = self._live()
        n = parse_size(length)
        what = f"munmap({addr:#x}, {length!r})"
        _check(vma.do_vmi_munmap(mm, check_u64("addr", addr, what), check_u64("length", n, what)), what)

    def mprotect(self, addr: int, length: int | str, prot: str) -> None:
        """mprotect(); ``prot`` as in :meth:`mmap` (``""`` is PROT_NONE, ``"x"`` allowed)."""
        mm, bits, what = self._live(), mprotect.calc_vm_prot_bits(prot), f"mprotect({addr:#x}, {length!r})"
        n, a = check_u64("length", parse_size(length), what), check_u64("addr", addr, what)
        _check(mprotect.do_mprotect_pkey(mm, a, n, bits), what)

    def mremap(self, addr: int, old_len: int | str, new_len: int | str, *, may_move: bool = False,
               new_addr: Optional[int] = None, dontunmap: bool = False) -> int:
        """mremap(); ``new_addr`` is MREMAP_FIXED (needs ``may_move``), ``dontunmap`` MREMAP_DONTUNMAP."""
        mm, what = self._live(), f"mremap({addr:#x}, {old_len!r}, {new_len!r}, new_addr={new_addr})"
        old, new = (check_u64(n, parse_size(v), what) for n, v in (("old_len", old_len), ("new_len", new_len)))
        rq = mremap.Remap(check_u64("addr", addr, what), old, new, bool(may_move), new_addr is not None,
                          bool(dontunmap), check_u64("new_addr", new_addr or 0, what))
        return _check(mremap.do_mremap(mm, rq), what)

    def madvise(self, addr: int, length: int | str, advice: str | int) -> None:
        mm = self._live()
        if isinstance(advice, str):
            if advice not in ADVICE:
                raise ValueError(f"unknown madvise advice {advice!r} "
                                 f"(expected MADV_DONTNEED, MADV_HUGEPAGE or MADV_NOHUGEPAGE, "
                                 f"or MADV_DONTFORK/DOFORK/WIPEONFORK/KEEPONFORK)")
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
    def counters(self) -> dict[str, int]:
        """Every scalar counter of this address space, the COW counters
        (``pgreuse``, ``faults_wp_copy``) included: the events it caused, its
        gauges, and the machine's gauges."""
        mm = self._live()
        # mm_pgtables_bytes(): every PTE table and PMD table is one page
        return {**mm.cnt, **machine_state(mm.machine), "nr_vmas": len(mm.vma_list),
                "pgtables_bytes": (mm.cnt["nr_ptes"] + mm.cnt["nr_pmds"]) * self.page_size}

    def stats(self) -> Any:
        """All counters, as a :class:`pylaf.Stats` built from the model's own names."""
        return build_stats(self.counters(), self.mm.per_order, self.geo)

    def reset_counters(self) -> None:
        mm = self._live()
        for name in PER_ORDER_COUNTERS:
            if name not in GAUGES:
                mm.per_order[name] = [0] * NR_ORDERS
        for name in SCALAR_COUNTERS + COW_COUNTERS:
            if name not in GAUGES and name not in STATE_COUNTERS:
                mm.cnt[name] = 0

    def vmas(self) -> list[Vma]:
        """The VMAs, without the model's VM_ACCOUNT (laf.h has no such flag)."""
        return [Vma(v.start, v.end, VmFlags(v.flags & ~VM_ACCOUNT), v.anon_vma)
                for v in self._live().vma_list]

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
        return Folio(f.pfn, f.index, f.order, f.refcount, f.mapcount, FolioFlags(flags))

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
        """Cross-check the model's own bookkeeping over the whole machine
        (raises InvariantError)."""
        self._live()
        self._machine.check_invariants()


def open_reference(policy: Policy | str | None = None, **kw: Any) -> Reference:
    """Shorthand mirroring :func:`pylaf.open_address_space`."""
    if policy is not None:
        kw["policy"] = Policy.parse(policy) if isinstance(policy, str) else policy
    return Reference(Config(**kw))


__all__ = ["RefMachine", "Reference", "open_reference"]
