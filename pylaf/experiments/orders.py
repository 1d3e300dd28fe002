"""The fault path's cost by folio order: the sweep behind ``pylaf bench``.

For every order (policy ``fixed``, ``fixed_order`` = order; the PMD order
takes the PMD path) a fresh AddressSpace write-faults ``size`` bytes through
the batch API (``touch`` over a numpy address array, one address per folio,
or ``touch_range``), then unmaps it.  The best of ``runs`` runs is kept: ns
per fault, ns per base page, faults per GiB, the emulator's per-page /
per-folio operation counts per fault, and the speed-up of every order against
the first (time per GiB).  A cost model (:mod:`pylaf.experiments.costmodel`)
adds what the live kernel would take for the same faults.

:func:`scale_child` faults one large size at one order and reports the peak
RSS; :func:`scale_run` runs it in a fresh process.
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Protocol

import numpy as np

from pylaf.address_space import AddressSpace
from pylaf.config import Config
from pylaf.geometry import DEFAULT_PAGE_SIZE, Geometry
from pylaf.policy import Policy
from pylaf.sizes import format_size, parse_size

GIB = 1 << 30
PATTERNS = ("seq", "random", "range")


class OrderCostModel(Protocol):
    """What the sweep needs of a kernel cost model."""

    def predict_order(self, order: int) -> float: ...


@dataclass
class OrderResult:
    order: int
    folio: str
    size: int
    faults: int
    pages: int
    runs: int
    fault_ns: float          #: best run: time of the faulting batch
    fault_ns_median: float
    teardown_ns: float       #: best run: munmap of everything
    ns_per_fault: float
    ns_per_page: float
    ns_per_fault_teardown: float   #: faults + teardown, per fault
    faults_per_gib: float
    per_page_ops_per_fault: float
    per_folio_ops_per_fault: float
    speedup_vs_order0: float = 1.0   #: first order's time per GiB / this order's
    kernel_ns_per_fault: Optional[float] = None   #: cost model prediction (incl. teardown)
    kernel_speedup: Optional[float] = None         #: kernel time / emulator time (with teardown)


def parse_orders(text: str, geometry: Optional[Geometry] = None) -> list[int]:
    """``"0,2-4,9"`` or ``"all"`` (0, then the anonymous THP orders of
    ``geometry``, default: the default machine) -> sorted orders; order 1 is
    skipped.  ValueError on anything else."""
    geo = geometry or Geometry.for_machine(DEFAULT_PAGE_SIZE)
    valid = {0, *geo.anon_orders}
    if text == "all":
        return sorted(valid)
    out: set[int] = set()
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        lo, _, hi = item.partition("-")
        if not (lo.isascii() and lo.isdigit() and (not hi or (hi.isascii() and hi.isdigit()))):
            raise ValueError(f"invalid order {item!r} (use e.g. 0,2-{geo.pmd_order} or all)")
        a, b = int(lo), int(hi or lo)
        if a > b or b > geo.pmd_order:
            raise ValueError(f"invalid order range {item!r}: orders are 0, 2..{geo.pmd_order}")
        out.update(o for o in range(a, b + 1) if o in valid)
    if not out:
        raise ValueError("no orders given")
    return sorted(out)


def addresses(base: int, size: int, folio: int, pattern: str, seed: int = 42) -> np.ndarray:
    """One address per folio: ascending (seq) or shuffled (random)."""
    addrs = base + np.arange(0, size, folio, dtype=np.uint64)
    if pattern == "random":
        np.random.default_rng(seed).shuffle(addrs)
    return np.ascontiguousarray(addrs)


def _ram_for(size: int) -> int:
    """Emulated RAM for faulting ``size`` bytes: the data, page tables, slack."""
    return size + size // 256 + (32 << 20)


@dataclass
class _Run:
    fault_ns: int
    teardown_ns: int
    per_page_ops: int
    per_folio_ops: int


def _one_run(order: int, size: int, pattern: str, page_size: int) -> _Run:
    folio = page_size << order
    faults = size // folio
    with AddressSpace(Config(ram=_ram_for(size), page_size=page_size,
                             policy=Policy.fixed(order))) as mm:
        base = mm.mmap(size)
        arr = addresses(base, size, folio, pattern) if pattern != "range" else None
        t0 = time.perf_counter_ns()
        r = mm.touch_range(base, size, folio, write=True) if arr is None else mm.touch(arr, write=True)
        t1 = time.perf_counter_ns()
        if r.faulted != faults or not r.ok:
            raise RuntimeError(f"order {order}: {r.faulted} faults (expected {faults}), "
                               f"first error at {r.first_error}")
        st = mm.stats()
        t2 = time.perf_counter_ns()
        mm.munmap(base, size)
        t3 = time.perf_counter_ns()
    if st.mm_anonpages != size // page_size:
        raise RuntimeError(f"order {order}: RSS {st.mm_anonpages} pages, expected {size // page_size}")
    return _Run(t1 - t0, t3 - t2, st.per_page_ops, st.per_folio_ops)


def run_order(order: int, size: int, runs: int = 3, pattern: str = "seq",
              page_size: int = DEFAULT_PAGE_SIZE) -> OrderResult:
    """Fault ``size`` bytes at ``order`` ``runs`` times (fresh AddressSpace each)."""
    if runs < 1:
        raise ValueError(f"invalid runs {runs}: must be >= 1")
    if pattern not in PATTERNS:
        raise ValueError(f"invalid pattern {pattern!r}: expected one of {', '.join(PATTERNS)}")
    all_runs = [_one_run(order, size, pattern, page_size) for _ in range(runs)]
    best = min(all_runs, key=lambda r: r.fault_ns)
    folio = page_size << order
    faults, pages = size // folio, size // page_size
    return OrderResult(
        order=order, folio=format_size(folio), size=size, faults=faults, pages=pages, runs=runs,
        fault_ns=float(best.fault_ns), fault_ns_median=float(np.median([r.fault_ns for r in all_runs])),
        teardown_ns=float(best.teardown_ns), ns_per_fault=best.fault_ns / faults,
        ns_per_page=best.fault_ns / pages,
        ns_per_fault_teardown=(best.fault_ns + best.teardown_ns) / faults,
        faults_per_gib=faults * GIB / size,
        per_page_ops_per_fault=best.per_page_ops / faults,
        per_folio_ops_per_fault=best.per_folio_ops / faults,
    )


def sweep(orders: Sequence[int], size: int, runs: int = 3, pattern: str = "seq",
          model: Optional[OrderCostModel] = None,
          progress: Optional[Callable[[str], object]] = None,
          page_size: int = DEFAULT_PAGE_SIZE) -> list[OrderResult]:
    """Run every order; fill speed-ups (vs the first order) and the kernel
    prediction when a cost ``model`` is given."""
    if not orders:
        raise ValueError("no orders given")
    res = []
    for o in orders:
        if progress:
            progress(f"order {o} ({format_size(page_size << o)})")
        res.append(run_order(o, size, runs, pattern, page_size))
    ref = res[0]
    for r in res:
        r.speedup_vs_order0 = (ref.fault_ns / ref.size) / (r.fault_ns / r.size)
        if model is not None:
            r.kernel_ns_per_fault = model.predict_order(r.order)
            r.kernel_speedup = r.kernel_ns_per_fault / r.ns_per_fault_teardown
    return res


# ------------------------------------------------------------ scale
def scale_child(size: int, order: int = 0, page_size: int = DEFAULT_PAGE_SIZE) -> dict[str, Any]:
    """Fault ``size`` bytes at ``order`` with touch_range(), unmap, close; the
    times and this process's peak RSS.  Run it in a fresh process
    (:func:`scale_run`) so ru_maxrss is this run's."""
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    mm = AddressSpace(Config(ram=_ram_for(size), page_size=page_size, policy=Policy.fixed(order)))
    base = mm.mmap(size)
    t1 = time.perf_counter()
    r = mm.touch_range(base, size, page_size << order, write=True)
    t2 = time.perf_counter()
    st = mm.stats()
    mm.munmap(base, size)
    t3 = time.perf_counter()
    mm.close()
    t4 = time.perf_counter()
    pages = size // page_size
    ok = r.ok and r.faulted == size // (page_size << order) and st.mm_anonpages == pages
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"bench": "pylaf-scale", "size": size, "order": order, "page_size": page_size,
            "pages": pages, "faults": r.faulted, "ok": ok, "create_s": t1 - t0,
            "fault_s": t2 - t1, "munmap_s": t3 - t2, "close_s": t4 - t3, "total_s": t4 - t0,
            "ns_per_fault": (t2 - t1) * 1e9 / max(r.faulted, 1),
            "peak_rss": peak, "rss_before": rss0,
            "peak_rss_per_page": peak / pages, "emulator_rss_per_page": (peak - rss0) / pages}


def scale_run(size: int | str, order: int = 0) -> dict[str, Any]:
    """:func:`scale_child` in a fresh Python process (peak RSS measured there)."""
    nbytes = parse_size(size)
    code = ("import json; from pylaf.experiments.orders import scale_child; "
            f"print(json.dumps(scale_child({nbytes}, {int(order)})))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    out: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return out


__all__ = ["GIB", "PATTERNS", "OrderCostModel", "OrderResult", "addresses", "parse_orders",
           "run_order", "scale_child", "scale_run", "sweep"]
