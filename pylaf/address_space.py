"""AddressSpace: one emulated process (mm_struct) on an emulated machine.

>>> from pylaf import AddressSpace, Config, Policy
>>> with AddressSpace(Config(policy=Policy.upstream(sizes={"64K": "always"}))) as mm:
...     a = mm.mmap("1M")
...     r = mm.touch_range(a, "1M", write=True)
...     mm.stats().anon_fault_alloc["64K"] > 0
True

``AddressSpace(config)`` is a private :class:`~pylaf.machine.Machine` with one
address space (closing the space closes that machine); ``machine.address_space()``
and :meth:`AddressSpace.fork` put several on one machine (``mm.machine``).

Threads: every method may be called from any thread.  Like a task under
``mmap_lock``, one call at a time per machine runs in the C core: a second
concurrent call on any address space of the same machine raises
:class:`LafBusyError` instead of waiting (the C core's guard).  The batch
calls release the GIL, so address spaces of separate machines run in parallel
on separate threads. Every reader (:meth:`~AddressSpace.vmas`,
:meth:`~AddressSpace.stats`, :meth:`~AddressSpace.pte`,
:meth:`~AddressSpace.folio`, :meth:`~AddressSpace.read_ptes`) takes its answer
in one call into the core, so it is a consistent snapshot of one moment.

Lifetime: every call into the core holds a reference on the C mm (an
in-flight count under a lock).  :meth:`AddressSpace.close` marks the space
closed at once, so that no new call starts, then *waits* for the calls in
flight to return and only then frees the mm (``exit_mmap()``): no thread
ever holds a freed handle.  :meth:`AddressSpace.exit` is the same.  After ``close()`` every method raises :class:`ClosedError`.
``copy.copy``, ``copy.deepcopy`` and ``pickle`` raise ``TypeError``: an
AddressSpace owns its C state.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any, Optional

import numpy as np

from pylaf import arguments as args
from pylaf._ffi import ffi, lib
from pylaf.config import Config
from pylaf.errors import ClosedError, InvariantError, LafValueError, check
from pylaf.geometry import Geometry
from pylaf.lifetime import InFlight
from pylaf.machine import Machine
from pylaf.opstream import OP_DTYPE, OpsResult, result_from_c
from pylaf.policy import Policy
from pylaf.records import (
    MADVISE,
    PTE_PFN_SHIFT,
    UFFD_MODES,
    Access,
    FaultKind,
    FaultResult,
    Folio,
    FolioFlags,
    Pte,
    PteFlags,
    TouchResult,
    Vma,
    VmFlags,
)
from pylaf.sizes import format_size
from pylaf.stats import Stats, stats_from_c

_NOT_COPYABLE = ("an AddressSpace owns its emulated machine and cannot be copied or pickled: "
                 "use AddressSpace.fork() or a new AddressSpace")


class AddressSpace:
    """One emulated process: VMAs, page tables, folios, counters, on emulated RAM.

    Thread rule (see the module docstring): any thread may call any method;
    concurrent calls on one AddressSpace raise :class:`LafBusyError`;
    :meth:`close` waits for calls in flight, then frees; afterwards every
    call raises :class:`ClosedError`.
    """

    def __init__(self, config: Optional[Config] = None, **kwargs: Any) -> None:
        if config is None:
            config = Config(**kwargs)
        elif kwargs:
            raise TypeError("pass either a Config or keyword arguments, not both")
        machine = Machine(config)
        out = ffi.new("laf_mm **")
        with machine._call as m:
            check(lib.laf_mm_create_on(m, out), "laf_mm_create_on")
        self._init_on(machine, out[0], private=True)

    @classmethod
    def _adopt(cls, machine: Machine, raw: Any) -> AddressSpace:
        """Wrap a ``laf_mm *`` the core made on ``machine`` (create_on, fork)."""
        space = cls.__new__(cls)
        space._init_on(machine, raw, private=False)
        return space

    def _init_on(self, machine: Machine, raw: Any, *, private: bool) -> None:
        #: the machine this address space lives on
        self.machine = machine
        self._private = private
        self.config = machine.config
        # laf_mm_destroy() frees the machine too when the machine's owner let
        # go of it first (laf_machine_put(): the collector's order is arbitrary)
        self._handle: Any = ffi.gc(raw, lib.laf_mm_destroy)
        #: held for the whole of close(): a second closer (or the machine's
        #: close()) waits until the mm is really freed
        self._close_lock = threading.Lock()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._inflight = 0
        self._closing = False
        self._in_flight = InFlight(self, "address space")
        #: the machine's page geometry
        self.geometry: Geometry = machine.geometry
        self._vmas_hint = 16        # vmas(): buffer size for the next snapshot
        machine._register(self)

    # --------------------------------------------------------- geometry
    @property
    def page_size(self) -> int:
        return self.geometry.page_size

    @property
    def pmd_size(self) -> int:
        return self.geometry.pmd_size

    @property
    def pmd_order(self) -> int:
        return self.geometry.pmd_order

    @property
    def ptrs_per_pte(self) -> int:
        return self.geometry.ptrs_per_pte

    @property
    def cont_pte_order(self) -> int:
        return self.geometry.cont_pte_order

    @property
    def arch_pte_order(self) -> int:
        return self.geometry.arch_pte_order

    @property
    def mmap_base(self) -> int:
        return self.geometry.mmap_base

    @property
    def task_size(self) -> int:
        return self.geometry.task_size

    # ------------------------------------------------------------ lifetime
    def _core(self) -> InFlight:
        """``with self._in_flight as mm:`` holds a reference on the C mm for one
        call into the core."""
        return self._in_flight

    @property
    def mm(self) -> Any:
        """The raw ``laf_mm *`` for direct ``lib`` calls: not guarded against a
        concurrent :meth:`close`."""
        if self._closing:
            raise ClosedError("address space is closed")
        return self._handle

    @property
    def closed(self) -> bool:
        return self._closing

    def close(self) -> None:
        """exit_mmap() and free the mm (idempotent); a private machine goes too.
        New calls raise ClosedError at once; calls already inside the core run
        to their end before the mm is freed."""
        with self._close_lock:
            with self._lock:
                self._closing = True
                self._idle.wait_for(lambda: self._inflight == 0)
                handle, self._handle = self._handle, None
            if handle is not None:
                ffi.release(handle)
        if self._private and not self.machine.closed:
            self.machine.close()

    def exit(self) -> None:
        """The process exits: ``exit_mmap()`` (folios whose last mapping goes are
        freed, partially unmapped ones queued for deferred split); the address
        space is closed afterwards.  Same as :meth:`close`."""
        self.close()

    def fork(self) -> AddressSpace:
        """fork(): a child address space on the same machine, built as Linux 6.18
        ``dup_mmap()`` / ``copy_page_range()`` do (csrc/fork.c): anonymous
        folios are shared and write-protected in both, ``MADV_DONTFORK``
        ranges are left out, ``MADV_WIPEONFORK`` ones come up empty, and
        userfaultfd registrations are dropped in the child (no
        ``UFFD_FEATURE_EVENT_FORK``: the child's PTEs lose uffd-wp)."""
        out = ffi.new("laf_mm **")
        with self._in_flight as mm:
            check(lib.laf_mm_fork(mm, out), "fork")
        return AddressSpace._adopt(self.machine, out[0])

    def __enter__(self) -> AddressSpace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self.vmas())} VMAs"
        return (f"<AddressSpace {format_size(self.page_size)} pages, {self.config.arch}, "
                f"policy {self.policy.label}, {state}>")

    def __copy__(self) -> AddressSpace:
        raise TypeError(_NOT_COPYABLE)

    def __deepcopy__(self, memo: object) -> AddressSpace:
        raise TypeError(_NOT_COPYABLE)

    def __reduce_ex__(self, protocol: object) -> Any:
        raise TypeError(_NOT_COPYABLE)

    # -------------------------------------------------------------- policy
    @property
    def policy(self) -> Policy:
        """The machine's THP policy (sysfs is machine-wide)."""
        return self.machine.policy

    def set_policy(self, policy: Policy | str) -> None:
        """Switch the machine's THP policy; takes effect at the next fault of
        every address space on it (as sysfs does)."""
        if isinstance(policy, str):
            policy = Policy.parse(policy)
        cpol = ffi.new("struct laf_policy *")
        policy.fill_c(cpol, self.geometry)
        with self._in_flight as mm:
            check(lib.laf_set_policy(mm, cpol), f"set_policy({policy.label})")
        self.machine._policy_changed(policy)

    def set_memcg_limit(self, limit: Optional[int | str]) -> None:
        """memory.max of the mm's memcg (None: unlimited, 0: nothing may be
        charged).  A limit below the current usage raises LafValueError
        (ERANGE): the emulator does not reclaim to get under it."""
        nbytes = lib.LAF_MEMCG_UNLIMITED if limit is None else args.size("limit", limit)
        if limit is not None and nbytes % self.page_size:
            raise LafValueError(f"memcg limit {limit!r} is not a multiple of the page size",
                                lib.LAF_EINVAL)
        with self._in_flight as mm:
            check(lib.laf_set_memcg_limit(mm, nbytes), f"set_memcg_limit({limit!r})")

    # ------------------------------------------------------- address space
    def mmap(self, length: int | str, *, addr: Optional[int] = None, prot: str = "rw",
             fixed: bool = False) -> int:
        """Map private anonymous memory; returns its start address.

        ``addr`` is a hint (or, with ``fixed=True``, the exact place:
        MAP_FIXED_NOREPLACE semantics, overlapping an existing mapping raises).
        ``prot``: letters of ``"rwx"`` (``"rw"``, ``"r"``, ``"rx"`` ...), ``""`` for PROT_NONE.
        """
        nbytes = args.size("length", length)
        if nbytes <= 0:
            raise LafValueError(f"invalid mmap length {length!r}: must be > 0", lib.LAF_EINVAL)
        p = args.prot(prot)
        if fixed and addr is None:
            raise ValueError("fixed=True needs addr")
        where = 0 if addr is None else args.u64("addr", addr)
        out = ffi.new("uint64_t *")
        with self._in_flight as mm:
            check(lib.laf_mmap(mm, where, nbytes, p, lib.LAF_MAP_FIXED if fixed else 0, out),
                  f"mmap(addr={addr if addr is None else hex(where)}, length={length!r}, fixed={fixed})")
        return int(out[0])

    def munmap(self, addr: int, length: int | str) -> None:
        a, n = args.u64("addr", addr), args.size("length", length)
        with self._in_flight as mm:
            check(lib.laf_munmap(mm, a, n), f"munmap({a:#x}, {length!r})")

    def mprotect(self, addr: int, length: int | str, prot: str) -> None:
        """mprotect(): ``prot`` spelled as in :meth:`mmap` (``""`` is PROT_NONE;
        ``"x"`` allowed).  Errors as mm/mprotect.c do_mprotect_pkey(): an
        unaligned ``addr`` is invalid, a range with a hole (or no mapping)
        raises LafMemoryError after the VMAs below the hole were changed."""
        bits = args.prot(prot)
        a, n = args.u64("addr", addr), args.size("length", length)
        with self._in_flight as mm:
            check(lib.laf_mprotect(mm, a, n, bits), f"mprotect({a:#x}, {length!r}, {prot!r})")
    def mremap(self, addr: int, old_len: int | str, new_len: int | str, *, may_move: bool = False,
               new_addr: Optional[int] = None, dontunmap: bool = False) -> int:
        """mremap() of [addr, addr + old_len) to ``new_len``; returns the new
        address.  ``may_move`` is MREMAP_MAYMOVE, ``new_addr`` MREMAP_FIXED
        (needs ``may_move``), ``dontunmap`` MREMAP_DONTUNMAP.  Rules: mm/mremap.c
        do_mremap() (csrc/mremap.c, docs/kernel-semantics.md §5)."""
        a = args.u64("addr", addr)
        old, new = args.size("old_len", old_len), args.size("new_len", new_len)
        flags = ((lib.LAF_MREMAP_MAYMOVE if args.flag("may_move", may_move) else 0)
                 | (lib.LAF_MREMAP_FIXED if new_addr is not None else 0)
                 | (lib.LAF_MREMAP_DONTUNMAP if args.flag("dontunmap", dontunmap) else 0))
        to = 0 if new_addr is None else args.u64("new_addr", new_addr)
        out = ffi.new("uint64_t *")
        with self._in_flight as mm:
            check(lib.laf_mremap(mm, a, old, new, flags, to, out),
                  f"mremap({a:#x}, {old_len!r}, {new_len!r}, new_addr={new_addr})")
        return int(out[0])

    def madvise(self, addr: int, length: int | str, advice: str | int) -> None:
        """MADV_DONTNEED, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_DONTFORK,
        MADV_DOFORK, MADV_WIPEONFORK or MADV_KEEPONFORK over a range.

        Like the kernel, a range with unmapped holes raises after applying the
        advice to the mapped parts.
        """
        if isinstance(advice, str):
            if advice not in MADVISE:
                raise ValueError(f"unknown madvise advice {advice!r} "
                                 f"(expected one of {', '.join(k for k in MADVISE if k.isupper())})")
            adv = MADVISE[advice]
        else:
            adv = args.c_int("advice", advice)
        a, n = args.u64("addr", addr), args.size("length", length)
        with self._in_flight as mm:
            check(lib.laf_madvise(mm, a, n, adv), f"madvise({a:#x}, {length!r}, {advice!r})")

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0) -> int:
        opt = args.c_int("option", option)
        a2, a3 = args.u64("arg2", arg2), args.u64("arg3", arg3)
        out = ffi.new("int64_t *")
        with self._in_flight as mm:
            check(lib.laf_prctl(mm, opt, a2, a3, out), f"prctl({option}, {arg2}, {arg3})")
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
        a, n = args.u64("addr", addr), args.size("length", length)
        with self._in_flight as mm:
            check(lib.laf_uffd_register(mm, a, n, bits), f"uffd_register({a:#x}, {length!r}, {modes})")

    def uffd_unregister(self, addr: int, length: int | str) -> None:
        a, n = args.u64("addr", addr), args.size("length", length)
        with self._in_flight as mm:
            check(lib.laf_uffd_unregister(mm, a, n), f"uffd_unregister({a:#x}, {length!r})")

    def uffd_copy(self, addr: int, length: int | str, wp: bool = False) -> None:
        """UFFDIO_COPY: fill none PTEs with order-0 pages (optionally write-protected)."""
        a, n, w = args.u64("addr", addr), args.size("length", length), args.flag("wp", wp)
        with self._in_flight as mm:
            check(lib.laf_uffd_copy(mm, a, n, int(w)), f"uffd_copy({a:#x}, {length!r})")

    def uffd_zeropage(self, addr: int, length: int | str) -> None:
        a, n = args.u64("addr", addr), args.size("length", length)
        with self._in_flight as mm:
            check(lib.laf_uffd_zeropage(mm, a, n), f"uffd_zeropage({a:#x}, {length!r})")

    def uffd_writeprotect(self, addr: int, length: int | str, wp: bool = True) -> None:
        a, n, w = args.u64("addr", addr), args.size("length", length), args.flag("wp", wp)
        with self._in_flight as mm:
            check(lib.laf_uffd_writeprotect(mm, a, n, int(w)),
                  f"uffd_writeprotect({a:#x}, {length!r}, wp={wp})")

    # ------------------------------------------------------------ accesses
    def fault(self, addr: int, write: bool | np.bool_ = False) -> FaultResult:
        """One access at ``addr``: a hit, or the fault(s) that resolve it."""
        a, w = args.u64("addr", addr), args.flag("write", write)
        r = ffi.new("struct laf_fault_result *")
        with self._in_flight as mm:
            check(lib.laf_fault(mm, a, int(w), r), f"fault({a:#x})")
        return FaultResult(Access(r.access), FaultKind(r.kind), int(r.vm_fault), int(r.order),
                           int(r.nr_faults))

    @staticmethod
    def _summary(s: Any, results: Optional[np.ndarray]) -> TouchResult:
        return TouchResult(int(s.accesses), int(s.hits), int(s.faulted), int(s.sigsegv), int(s.oom),
                           int(s.sigbus), int(s.userfault), int(s.first_error), results)

    def touch(self, addrs: Any, write: bool | np.bool_ | np.ndarray = False, *,
              results: bool = False) -> TouchResult:
        """Batch of accesses in one C call (zero-copy over a numpy uint64 array).

        ``addrs``: a 1-D C-contiguous uint64 array (a misaligned or
        non-native-endian one is copied) or a list of ints.  ``write`` is a
        bool for all accesses or a bool/uint8 array, one entry per access;
        anything else is a TypeError.  Accesses that hit a present entry count
        as hits, not faults.  With ``results=True`` the per-access
        :class:`Access` codes come back.
        """
        arr = args.address_array("addrs", addrs)
        n = arr.shape[0]
        warr = args.write_array(write, n)
        wptr = ffi.from_buffer("uint8_t[]", warr) if warr is not None and n else ffi.NULL
        wflag = 0 if warr is not None else int(bool(write))
        res_arr = np.empty(n, dtype=np.int8) if results else None
        rptr = ffi.from_buffer("int8_t[]", res_arr, require_writable=True) if res_arr is not None and n \
            else ffi.NULL
        aptr = ffi.from_buffer("uint64_t[]", arr) if n else ffi.NULL
        s = ffi.new("struct laf_touch_summary *")
        with self._in_flight as mm:
            check(lib.laf_touch(mm, aptr, n, wptr, wflag, rptr, s), "touch")
        return self._summary(s, res_arr)

    def touch_range(self, start: int, length: int | str, stride: Optional[int | str] = None,
                    write: bool = False) -> TouchResult:
        """Access ``start, start+stride, ...`` below ``start+length`` (stride: one page)."""
        a, n = args.u64("start", start), args.size("length", length)
        st = self.page_size if stride is None else args.size("stride", stride)
        if st <= 0:
            raise LafValueError(f"invalid stride {stride!r}: must be > 0", lib.LAF_EINVAL)
        w = args.flag("write", write)
        s = ffi.new("struct laf_touch_summary *")
        with self._in_flight as mm:
            check(lib.laf_touch_range(mm, a, n, st, int(w), s), f"touch_range({a:#x}, {length!r})")
        return self._summary(s, None)

    def run_ops(self, ops: np.ndarray) -> OpsResult:
        """Execute an op stream (:mod:`pylaf.opstream`) in one C call.

        ``ops``: a 1-D, C-contiguous, 8-byte aligned array of
        :data:`~pylaf.opstream.OP_DTYPE` (TypeError / LafValueError otherwise).
        A record that fails is counted in the result, never raised.
        """
        arr = args.record_array("ops", ops, OP_DTYPE, ffi.alignof("struct laf_op"))
        n = arr.shape[0]
        optr = ffi.from_buffer("struct laf_op[]", arr) if n else ffi.NULL
        res = ffi.new("struct laf_ops_result *")
        with self._in_flight as mm:
            check(lib.laf_run_ops(mm, optr, n, res), "run_ops")
        return result_from_c(res)

    # -------------------------------------------------------------- memory
    def shrink_deferred_split(self) -> int:
        """Run the deferred-split shrinker; returns the number of folios split."""
        out = ffi.new("uint64_t *")
        with self._in_flight as mm:
            check(lib.laf_shrink_deferred_split(mm, out))
        return int(out[0])

    def fragment(self, max_free_order: int) -> None:
        """Pin one frame in every 2^(max_free_order+1) so no larger free block remains."""
        o = args.c_int("max_free_order", max_free_order)
        with self._in_flight as mm:
            check(lib.laf_phys_fragment(mm, o), f"fragment({max_free_order})")

    def unfragment(self) -> None:
        with self._in_flight as mm:
            check(lib.laf_phys_unfragment(mm))

    def _inject(self, kind: int, order: int, count: int, addr: int, what: str) -> None:
        o, c, a = args.c_int("order", order), args.u64("count", count), args.u64("addr", addr)
        with self._in_flight as mm:
            check(lib.laf_inject(mm, kind, o, c, a), what)

    def inject_alloc_fail(self, order: int, count: int = 1) -> None:
        self._inject(lib.LAF_INJECT_ALLOC_FAIL, order, count, 0, f"inject_alloc_fail(order={order})")

    def inject_charge_fail(self, order: int, count: int = 1) -> None:
        self._inject(lib.LAF_INJECT_CHARGE_FAIL, order, count, 0, f"inject_charge_fail(order={order})")

    def inject_race(self, addr: int, count: int = 1) -> None:
        """Between the next write fault's allocation and its PTL recheck, another
        thread write-faults ``addr``."""
        self._inject(lib.LAF_INJECT_RACE, 0, count, addr, f"inject_race({addr!r})")

    def inject_pte_map_fail(self, count: int = 1) -> None:
        self._inject(lib.LAF_INJECT_PTE_MAP_FAIL, 0, count, 0, "inject_pte_map_fail")

    def inject_clear(self) -> None:
        self._inject(lib.LAF_INJECT_CLEAR, 0, 0, 0, "inject_clear")

    # ---------------------------------------------------------- inspection
    def stats(self) -> Stats:
        """This mm's event counters (faults, min_flt, pgreuse, ...) and gauges
        (mm_anonpages, nr_ptes, nr_vmas), with the machine-wide gauges (nr_anon,
        free_pages, memcg_*); see :meth:`Machine.stats` for the sums."""
        cst = ffi.new("struct laf_stats *")
        with self._in_flight as mm:
            check(lib.laf_get_stats(mm, cst))
        return stats_from_c(cst, self.page_size, self.pmd_order)

    def reset_counters(self) -> None:
        """Zero the event counters (gauges such as RSS and nr_anon stay)."""
        with self._in_flight as mm:
            check(lib.laf_reset_counters(mm))

    def vmas(self) -> list[Vma]:
        """A snapshot of the VMAs: one ``laf_get_vmas()`` call, which copies
        the whole list under the core's guard.  The buffer is sized from the
        last snapshot; only if the VMAs outgrew it is the call repeated with a
        bigger one (the answer is always one call's complete list)."""
        nr = ffi.new("size_t *")
        cap = self._vmas_hint
        with self._in_flight as mm:
            while True:
                buf = ffi.new("struct laf_vma_info[]", cap)
                check(lib.laf_get_vmas(mm, buf, cap, nr))
                n = int(nr[0])
                if n <= cap:
                    break
                cap = n + n // 4 + 16
        self._vmas_hint = max(16, n + n // 4)
        return [Vma(int(v.start), int(v.end), VmFlags(int(v.vm_flags)), int(v.anon_vma))
                for v in buf[0:n]]

    def pte(self, addr: int) -> Pte:
        """The entry mapping ``addr`` (a huge PMD is shown per page, with HUGE)."""
        a = args.u64("addr", addr)
        p = ffi.new("uint64_t *")
        with self._in_flight as mm:
            check(lib.laf_lookup(mm, a, p, ffi.NULL), f"pte({a:#x})")
        return Pte(int(p[0]))

    def folio(self, addr: int) -> Optional[Folio]:
        """The folio mapped at ``addr``, or None (nothing mapped, or the small zero page)."""
        a = args.u64("addr", addr)
        fi = ffi.new("struct laf_folio_info *")
        with self._in_flight as mm:
            check(lib.laf_lookup(mm, a, ffi.NULL, fi), f"folio({a:#x})")
        if fi.order < 0:
            return None
        return Folio(int(fi.head_pfn), int(fi.index), int(fi.order), int(fi.refcount),
                     int(fi.mapcount), FolioFlags(int(fi.flags)))

    def read_ptes(self, start: int, npages: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw entries and per-page folio orders (``LAF_ORDER_NONE``, ``LAF_ORDER_ZERO``,
        ``LAF_ORDER_HUGE_ZERO`` where no folio maps the page).  ``npages`` is
        bounded by the pages below TASK_SIZE."""
        a = args.u64("start", start)
        n = args.integer("npages", npages, 0, self.task_size // self.page_size)
        ptes = np.zeros(n, dtype=np.uint64)
        orders = np.zeros(n, dtype=np.int8)
        pp = ffi.from_buffer("uint64_t[]", ptes, require_writable=True)
        op = ffi.from_buffer("int8_t[]", orders, require_writable=True)
        with self._in_flight as mm:
            check(lib.laf_read_ptes(mm, a, n, pp, op), f"read_ptes({a:#x}, {npages})")
        return ptes, orders

    def check_invariants(self) -> None:
        """Cross-check all emulated state of the machine (every address space on
        it); raises InvariantError naming what is wrong."""
        msg = ffi.new("char[512]")
        with self._in_flight as mm:
            rv = lib.laf_check_invariants(mm, msg, 512)
        if rv == lib.LAF_EUCLEAN:
            raise InvariantError(ffi.string(msg).decode(), rv)
        check(rv, "check_invariants")


def open_address_space(policy: Policy | str | None = None, **kw: Any) -> AddressSpace:
    """Shorthand: ``open_address_space("order-4", ram="8G")``."""
    if policy is not None:
        kw["policy"] = Policy.parse(policy) if isinstance(policy, str) else policy
    return AddressSpace(Config(**kw))


__all__: Sequence[str] = (
    "MADVISE",
    "PTE_PFN_SHIFT",
    "UFFD_MODES",
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
