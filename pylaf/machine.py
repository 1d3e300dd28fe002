"""Machine: one emulated machine whose address spaces share RAM, memcg and THP knobs.

>>> from pylaf import Config, Machine, Policy
>>> with Machine(Config(policy=Policy.upstream(sizes={"64K": "always"}))) as machine:
...     parent = machine.address_space()
...     a = parent.mmap("1M")
...     _ = parent.touch_range(a, "1M", write=True)
...     child = parent.fork()
...     _ = child.touch_range(a, "1M", write=True)   # 256 COW copies
...     child.stats().faults_wp_copy, machine.stats().faults_wp_copy
(256, 256)

The split follows the kernel (csrc/laf.h): the buddy allocator, the memcg,
the THP sysfs knobs and policy, the zero pages, the deferred-split queue and
the machine-wide gauges (per-size ``nr_anon``, free pages, ...) belong to
the machine; VMAs, page tables, RSS (``mm_anonpages``), ``min_flt`` and the
prctl state to each address space.  ``machine.stats()`` sums the event
counters of every address space that ever lived on the machine.

Threads: one call at a time per machine runs in the C core (the faults of two
address spaces share the allocator); a concurrent call on any address space
of the same machine raises :class:`LafBusyError`.

Lifetime: :meth:`Machine.close` closes every address space still on the
machine (each waits for its calls in flight), then waits for the machine's own
calls, then frees it.  Every address space holds a reference on its machine,
so a machine is never freed under one.
"""
from __future__ import annotations

import atexit
import itertools
import threading
import weakref
from typing import TYPE_CHECKING, Any, Optional

from pylaf._ffi import ffi, lib
from pylaf.config import Config
from pylaf.errors import InvariantError, check
from pylaf.geometry import Geometry
from pylaf.lifetime import InFlight
from pylaf.policy import Policy
from pylaf.sizes import format_size
from pylaf.stats import Stats, stats_from_c

if TYPE_CHECKING:  # the import cycle is only for annotations
    from pylaf.address_space import AddressSpace


#: machines not yet closed; closed (their address spaces first) at interpreter
#: exit, before module teardown could free a machine before its mms
_LIVE: weakref.WeakSet[Machine] = weakref.WeakSet()


@atexit.register
def _close_live_machines() -> None:
    for machine in list(_LIVE):
        machine.close()


class Machine:
    """One emulated machine (``laf_machine``): RAM, memcg, THP policy, zero pages."""

    def __init__(self, config: Optional[Config] = None, **kwargs: Any) -> None:
        if config is None:
            config = Config(**kwargs)
        elif kwargs:
            raise TypeError("pass either a Config or keyword arguments, not both")
        self.config = config
        ccfg = ffi.new("struct laf_config *")
        config.fill_c(ccfg)
        out = ffi.new("laf_machine **")
        check(lib.laf_machine_create(ccfg, out), "laf_machine_create")
        # laf_machine_put(), not laf_machine_destroy(): the garbage collector may
        # free this handle before the handles of address spaces on it
        self._handle: Any = ffi.gc(out[0], lib.laf_machine_put, size=int(config.ram) // 64)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._inflight = 0
        self._closing = False
        self._call = InFlight(self, "machine")
        # weak: an address space nobody holds any more is freed
        self._mms: weakref.WeakValueDictionary[int, AddressSpace] = weakref.WeakValueDictionary()
        _LIVE.add(self)
        self._ids = itertools.count()
        geo = ffi.new("struct laf_geometry *")
        check(lib.laf_geometry_from_config(ccfg, geo))
        #: the page geometry of every address space on this machine
        self.geometry: Geometry = Geometry.from_c(geo)
        self._policy = config.policy
        self.set_policy(config.policy)

    # ---------------------------------------------------------- address spaces
    def address_space(self) -> AddressSpace:
        """A new, empty address space (``laf_mm_create_on()``)."""
        from pylaf.address_space import AddressSpace  # cycle: AddressSpace builds its Machine
        out = ffi.new("laf_mm **")
        with self._call as m:
            check(lib.laf_mm_create_on(m, out), "laf_mm_create_on")
        return AddressSpace._adopt(self, out[0])

    @property
    def mms(self) -> list[AddressSpace]:
        """The address spaces open on this machine."""
        with self._lock:
            return [s for s in self._mms.values() if not s.closed]

    def _register(self, space: AddressSpace) -> None:
        with self._lock:
            self._mms[next(self._ids)] = space

    # ------------------------------------------------------------------ policy
    @property
    def policy(self) -> Policy:
        return self._policy

    def set_policy(self, policy: Policy | str) -> None:
        """The THP knobs of the whole machine (sysfs); the next fault of every
        address space sees them."""
        if isinstance(policy, str):
            policy = Policy.parse(policy)
        cpol = ffi.new("struct laf_policy *")
        policy.fill_c(cpol, self.geometry)
        with self._call as m:
            check(lib.laf_machine_set_policy(m, cpol), f"set_policy({policy.label})")
        self._policy = policy

    def _policy_changed(self, policy: Policy) -> None:
        self._policy = policy

    # ------------------------------------------------------------- inspection
    def stats(self) -> Stats:
        """Event counters summed over every address space that lived on the
        machine, RSS and page tables over the live ones, and the machine's gauges."""
        cst = ffi.new("struct laf_stats *")
        with self._call as m:
            check(lib.laf_machine_get_stats(m, cst))
        return stats_from_c(cst, self.geometry.page_size, self.geometry.pmd_order)

    def check_invariants(self) -> None:
        """Cross-check the whole machine, every address space included
        (refcounts and mapcounts recounted over all of them)."""
        msg = ffi.new("char[512]")
        with self._call as m:
            rv = lib.laf_machine_check_invariants(m, msg, 512)
        if rv == lib.LAF_EUCLEAN:
            raise InvariantError(ffi.string(msg).decode(), rv)
        check(rv, "check_invariants")

    # ---------------------------------------------------------------- lifetime
    @property
    def closed(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Close every address space on the machine, then free it (idempotent).
        Spaces another thread is closing are waited for (their close lock)."""
        with self._lock:
            if self._closing:
                return
            self._closing = True          # new calls: ClosedError from now on
            spaces = list(self._mms.values())
        for space in spaces:
            space.close()
        with self._lock:
            self._closing = True
            self._idle.wait_for(lambda: self._inflight == 0)
            handle, self._handle = self._handle, None
        if handle is not None:
            ffi.release(handle)

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self.mms)} address spaces"
        return f"<Machine {format_size(int(self.config.ram))} RAM, policy {self._policy.label}, {state}>"

    def __copy__(self) -> Machine:
        raise TypeError("a Machine owns its emulated state and cannot be copied or pickled")

    def __deepcopy__(self, memo: object) -> Machine:
        raise TypeError("a Machine owns its emulated state and cannot be copied or pickled")

    def __reduce_ex__(self, protocol: object) -> Any:
        raise TypeError("a Machine owns its emulated state and cannot be copied or pickled")


__all__ = ["Machine"]
