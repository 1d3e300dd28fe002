"""One cell of a comparison: one workload run under one policy on a fresh
AddressSpace, and the numbers it gives (:class:`CompareResult`).

A :class:`Cell` is picklable (a workload name, a ``.laftrace`` path or a
picklable workload object; a :class:`~pylaf.Policy`; a
:class:`~pylaf.Config`), so :func:`run_cell` can run in another process or
on a Dask worker (:mod:`pylaf.experiments.parallel`).

Timing: ``elapsed_ns`` is ``time.perf_counter_ns()`` around ``workload.run(mm)``
(mmap, touches, madvise: the C core plus the Python that drives it; not the
AddressSpace creation), and ``emulator_ns_per_fault`` is that divided by
``faults``: emulator time, not what the kernel would take.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from pylaf.address_space import AddressSpace
from pylaf.config import Config
from pylaf.errors import LafError
from pylaf.experiments.sampling import SampledAddressSpace, peak_of
from pylaf.experiments.workloads import Workload, WorkloadLike, get_workload
from pylaf.policy import Policy
from pylaf.stats import PER_ORDER_FIELDS, SCALAR_FIELDS, Stats
from pylaf.trace.format import TraceError
from pylaf.trace.replay import TraceWorkload

WorkloadArg = Union[str, WorkloadLike]

#: suffix of a trace file given where a workload name is expected
TRACE_SUFFIX = ".laftrace"


@dataclass
class CompareResult:
    """Numbers of one workload run under one policy.

    Counters keep the kernel's names (see README, "Counters").  Per-size
    dicts are keyed by folio size (``"64K"``) and list every size of the
    machine, zeros included.  ``counters`` holds every scalar counter of
    :class:`~pylaf.Stats` at the end of the run.
    """

    workload: str
    policy: str
    page_size: int
    arch: str
    ram: int = 0
    #: memory.max in bytes, None: unlimited
    memcg_limit: Optional[int] = None
    scale: float = 1.0
    #: exception entries (perf page-faults): ``Stats.faults``
    faults: int = 0
    #: /proc/vmstat pgfault (ru_minflt-like accounting)
    pgfault: int = 0
    #: faults of the baseline run minus faults of this one (negative: more faults)
    faults_saved: Optional[int] = None
    #: ``faults_saved`` as a percentage of the baseline's faults
    faults_saved_pct: Optional[float] = None
    #: MM_ANONPAGES at the end of the run, in base pages
    rss_pages: int = 0
    rss_bytes: int = 0
    #: VmHWM: the largest RSS of the run (exact), in bytes
    peak_rss_bytes: int = 0
    #: VmPTE: PTE + PMD tables at the end of the run, in bytes
    pgtables_bytes: int = 0
    #: resident anon pages the workload actually accessed
    pages_touched: int = 0
    #: zero-page (small or huge) pages the workload read
    zero_pages_touched: int = 0
    #: RSS - touched at the end, in pages and bytes; ratio = RSS / touched (1.0: no bloat)
    bloat_pages: int = 0
    bloat_bytes: int = 0
    bloat_ratio: float = 0.0
    #: bloat at the sample of the largest RSS (None unless sampled: ``sample_every``)
    peak_bloat_bytes: Optional[int] = None
    peak_bloat_ratio: Optional[float] = None
    per_page_ops: int = 0
    per_folio_ops: int = 0
    ptes_written: int = 0
    set_ptes_calls: int = 0
    hits: int = 0
    faults_read: int = 0
    faults_write: int = 0
    faults_wp: int = 0
    faults_pmd: int = 0
    faults_oom: int = 0
    faults_sigsegv: int = 0
    faults_sigbus: int = 0
    zero_page_maps: int = 0
    huge_zero_pmd_maps: int = 0
    contpte_blocks: int = 0
    thp_fault_alloc: int = 0
    thp_fault_fallback: int = 0
    memcg_max_events: int = 0
    split_deferred_total: int = 0
    #: folios mapped by faults, by size (order 0 included, zeros included)
    folio_histogram: dict[str, int] = field(default_factory=dict)
    anon_fault_alloc: dict[str, int] = field(default_factory=dict)
    anon_fault_fallback: dict[str, int] = field(default_factory=dict)
    anon_fault_fallback_charge: dict[str, int] = field(default_factory=dict)
    anon_fault_declined: dict[str, int] = field(default_factory=dict)
    split_deferred: dict[str, int] = field(default_factory=dict)
    #: every scalar counter of Stats, and every per-size counter (zero-filled)
    counters: dict[str, Any] = field(default_factory=dict)
    #: the workload's parameters (scaled), when it has any
    params: dict[str, Any] = field(default_factory=dict)
    #: user tags, copied into every row
    tags: dict[str, Any] = field(default_factory=dict)
    #: samples every N faults (see pylaf.experiments.sampling), None unless asked
    series: Optional[list[dict[str, int]]] = None
    elapsed_ns: int = 0
    #: emulator wall time per fault (not kernel time)
    emulator_ns_per_fault: Optional[float] = None
    #: set when the run raised (the other fields then hold what was counted)
    error: Optional[str] = None

    #: this row is the baseline run itself
    is_baseline: bool = False

    @property
    def ns_per_fault(self) -> Optional[float]:
        """Old name of :attr:`emulator_ns_per_fault`."""
        return self.emulator_ns_per_fault

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (plain ints, floats, strings, dicts)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Cell:
    """What one run needs; picklable, so it can run in another process."""

    workload: WorkloadArg
    policy: Policy
    config: Config
    scale: float = 1.0
    sample_every: Optional[int] = None
    tags: tuple[tuple[str, Any], ...] = ()


@functools.lru_cache(maxsize=64)
def _named_workload(spec: str, scale: float) -> WorkloadLike:
    if spec.endswith(TRACE_SUFFIX):
        return TraceWorkload(Path(spec))
    return get_workload(spec, scale)


def resolve_workload(spec: WorkloadArg, scale: float = 1.0) -> WorkloadLike:
    """A workload from a registry name, a ``.laftrace`` path or an object
    (scaled when it can be).  Trace files load once per process."""
    if isinstance(spec, str):
        return _named_workload(spec, scale)
    scaled = getattr(spec, "scaled", None)
    return scaled(scale) if scaled is not None and scale != 1.0 else spec


def workload_params(w: WorkloadLike) -> dict[str, Any]:
    """The parameters of a built-in workload (tuples as lists), else {}."""
    if not isinstance(w, Workload):
        return {}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in w.params().items()}


def unsupported_reason(w: WorkloadLike, page_size: int) -> Optional[str]:
    """Why ``w`` cannot run with ``page_size`` pages (a workload may list the
    page sizes it supports in ``page_sizes``, as recorded traces do), else None."""
    sizes = getattr(w, "page_sizes", None)
    if sizes is None or page_size in sizes:
        return None
    return f"it runs with {', '.join(f'{s >> 10}K' for s in sizes)} pages only, not {page_size >> 10}K"


def _fill_counters(res: CompareResult, st: Stats) -> None:
    res.faults, res.pgfault = st.faults, st.pgfault
    res.rss_pages, res.rss_bytes = st.mm_anonpages, st.rss_bytes
    res.peak_rss_bytes, res.pgtables_bytes = st.peak_rss_bytes, st.pgtables_bytes
    res.pages_touched, res.zero_pages_touched = st.pages_touched, st.zero_pages_touched
    res.bloat_pages = st.bloat_pages
    res.bloat_bytes = st.bloat_pages * st.page_size
    res.bloat_ratio = float(st.bloat_ratio)
    for name in ("per_page_ops", "per_folio_ops", "ptes_written", "set_ptes_calls", "hits",
                 "faults_read", "faults_write", "faults_wp", "faults_pmd", "faults_oom",
                 "faults_sigsegv", "faults_sigbus", "zero_page_maps", "huge_zero_pmd_maps",
                 "contpte_blocks", "thp_fault_alloc", "thp_fault_fallback", "memcg_max_events"):
        setattr(res, name, int(getattr(st, name)))
    res.folio_histogram = dict(st.folios_mapped)
    for name in ("anon_fault_alloc", "anon_fault_fallback", "anon_fault_fallback_charge",
                 "anon_fault_declined", "split_deferred"):
        setattr(res, name, dict(getattr(st, name)))
    res.split_deferred_total = sum(res.split_deferred.values())
    res.counters = {n: int(getattr(st, n)) for n in SCALAR_FIELDS}
    res.counters.update({n: dict(getattr(st, n)) for n in PER_ORDER_FIELDS})


def _fill_series(res: CompareResult, series: list[dict[str, int]]) -> None:
    res.series = series
    peak = peak_of(series)
    if peak is not None:
        res.peak_bloat_bytes = peak["bloat_bytes"]
        touched = peak["pages_touched"] * res.page_size
        res.peak_bloat_ratio = peak["rss_bytes"] / touched if touched else 0.0


def run_one(workload: WorkloadLike, policy: Policy, config: Config, *,
            sample_every: Optional[int] = None) -> CompareResult:
    """Run ``workload`` on a fresh AddressSpace with ``policy``; collect the
    numbers (and a series sampled every ``sample_every`` faults if given)."""
    cfg = dataclasses.replace(config, policy=policy)
    res = CompareResult(workload=str(workload.name), policy=policy.label,
                        page_size=int(config.page_size), arch=config.arch, ram=int(config.ram),
                        memcg_limit=None if config.memcg_limit is None else int(config.memcg_limit),
                        params=workload_params(workload))
    mm = AddressSpace(cfg) if sample_every is None else SampledAddressSpace(cfg, sample_every)
    with mm:
        if isinstance(mm, SampledAddressSpace):
            mm.sample(force=True)
        t0 = time.perf_counter_ns()
        try:
            workload.run(mm)
        except (LafError, ValueError, MemoryError, TraceError) as exc:
            res.error = f"{type(exc).__name__}: {exc}"
        res.elapsed_ns = time.perf_counter_ns() - t0
        # multi-process workloads (children via mm.fork()) count every process
        st = mm.machine.stats() if getattr(workload, "whole_machine", False) else mm.stats()
        if isinstance(mm, SampledAddressSpace):
            mm.sample(force=True)
            _fill_series(res, mm.series)
    _fill_counters(res, st)
    res.emulator_ns_per_fault = (res.elapsed_ns / res.faults) if res.faults else None
    return res


def run_cell(cell: Cell) -> CompareResult:
    """Run one :class:`Cell` (a top-level function: process pools pickle it)."""
    res = run_one(resolve_workload(cell.workload, cell.scale), cell.policy, cell.config,
                  sample_every=cell.sample_every)
    res.scale = cell.scale
    res.tags = dict(cell.tags)
    return res


__all__ = ["TRACE_SUFFIX", "Cell", "CompareResult", "WorkloadArg", "resolve_workload", "run_cell",
           "run_one", "unsupported_reason", "workload_params"]
