"""Run workloads under policies and collect comparable numbers.

:func:`compare` runs every workload under every policy, each run on a fresh
:class:`~pylaf.AddressSpace` (same page size, architecture, RAM and memcg
limit), and returns one :class:`CompareResult` per (workload, policy), in
workload-major order.  "Faults saved" is measured against the order-0 run of
the same workload (``baseline``); when the baseline is not among the policies
it is run anyway, and left out of the results.

>>> from pylaf.experiments.compare import compare
>>> rows = compare(["seq-fill"], ["order-0", "order-4"], scale=0.05)
>>> [(r.policy, r.faults, r.faults_saved_pct) for r in rows]
[('order-0', 3072, 0.0), ('order-4', 192, 93.75)]

Timing: ``elapsed_ns`` is ``time.perf_counter_ns()`` around ``workload.run(mm)``
(mmap, touches, madvise: the C core plus the Python that drives it; not the
AddressSpace creation), and ``ns_per_fault`` is that divided by ``faults``.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

from pylaf.address_space import AddressSpace
from pylaf.config import Config
from pylaf.errors import LafError
from pylaf.experiments.workloads import WorkloadLike, default_workload_names, get_workload
from pylaf.geometry import DEFAULT_PAGE_SIZE
from pylaf.live.sysfs import host_policy
from pylaf.policy import DEFAULT_COMPARE, KERNEL_SPEC, Policy
from pylaf.sizes import format_size, parse_size

#: the policy whose fault count "saved" is measured against
BASELINE = "order-0"

PolicyLike = Union[str, Policy]
WorkloadArg = Union[str, WorkloadLike]


@dataclass
class CompareResult:
    """Numbers of one workload run under one policy.

    Counters keep the kernel's names (see README, "Counters").  Per-size
    dicts are keyed by folio size (``"64K"``) and list non-zero sizes only.
    """

    workload: str
    policy: str
    page_size: int
    arch: str
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
    #: resident anon pages the workload actually accessed
    pages_touched: int = 0
    #: zero-page (small or huge) pages the workload read
    zero_pages_touched: int = 0
    #: RSS - touched, in pages and bytes; ratio = RSS / touched (1.0: no bloat)
    bloat_pages: int = 0
    bloat_bytes: int = 0
    bloat_ratio: float = 0.0
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
    #: folios mapped by faults, by size (order 0 included)
    folio_histogram: dict[str, int] = field(default_factory=dict)
    anon_fault_alloc: dict[str, int] = field(default_factory=dict)
    anon_fault_fallback: dict[str, int] = field(default_factory=dict)
    anon_fault_fallback_charge: dict[str, int] = field(default_factory=dict)
    anon_fault_declined: dict[str, int] = field(default_factory=dict)
    split_deferred: dict[str, int] = field(default_factory=dict)
    elapsed_ns: int = 0
    ns_per_fault: Optional[float] = None
    #: set when the run raised (the other fields then hold what was counted)
    error: Optional[str] = None

    #: this row is the baseline run itself
    is_baseline: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (plain ints, floats, strings, dicts)."""
        return dataclasses.asdict(self)


def _nonzero(d: dict[str, int]) -> dict[str, int]:
    return {k: int(v) for k, v in d.items() if v}


def parse_policy(spec: PolicyLike) -> Policy:
    """A policy spec (or Policy); ``kernel`` reads this machine's live sysfs
    settings through the live host (:mod:`pylaf.live`)."""
    if isinstance(spec, Policy):
        return spec
    return host_policy() if spec.strip() == KERNEL_SPEC else Policy.parse(spec)


def _resolve_policies(policies: Optional[Iterable[PolicyLike]]) -> list[Policy]:
    specs = list(DEFAULT_COMPARE if policies is None else policies)
    if not specs:
        raise ValueError("no policies to compare")
    return [parse_policy(p) for p in specs]


def _resolve_workloads(workloads: Optional[Iterable[WorkloadArg]],
                       scale: float) -> list[WorkloadLike]:
    names = list(default_workload_names() if workloads is None else workloads)
    if not names:
        raise ValueError("no workloads to run")
    out: list[WorkloadLike] = []
    for w in names:
        if isinstance(w, str):
            out.append(get_workload(w, scale))
        else:
            scaled = getattr(w, "scaled", None)
            out.append(scaled(scale) if scaled is not None and scale != 1.0 else w)
    return out


def _same_policy(a: Policy, b: Policy) -> bool:
    return dataclasses.replace(a, name=None) == dataclasses.replace(b, name=None)


def make_config(policy: Policy, *, page_size: int | str = DEFAULT_PAGE_SIZE, arch: str = "x86_64",
                ram: int | str = "4G", memcg_limit: Optional[int | str] = None) -> Config:
    return Config(page_size=page_size, arch=arch, ram=ram, memcg_limit=memcg_limit, policy=policy)




_warmed = False


def _warm_up() -> None:
    """Pay one-time costs (numpy.random's lazy set-up, first C calls) before
    anything is timed, so the first run's ns/fault is not inflated."""
    global _warmed
    if _warmed:
        return
    _warmed = True
    np.random.default_rng(0).integers(0, 1 << 20, size=16, dtype=np.uint64)
    with AddressSpace(Config(ram=8 << 20)) as mm:
        a = mm.mmap(64 << 10)
        mm.touch(np.arange(a, a + (64 << 10), mm.page_size, dtype=np.uint64), write=True)
        mm.madvise(a, 64 << 10, "MADV_DONTNEED")
        mm.stats()


def run_one(workload: WorkloadLike, policy: Policy, config: Config) -> CompareResult:
    """Run ``workload`` on a fresh AddressSpace with ``policy``; collect the numbers."""
    label = policy.label
    res = CompareResult(workload=str(workload.name), policy=label,
                        page_size=int(config.page_size), arch=config.arch)
    with AddressSpace(dataclasses.replace(config, policy=policy)) as mm:
        t0 = time.perf_counter_ns()
        try:
            workload.run(mm)
        except (LafError, ValueError, MemoryError) as exc:
            res.error = f"{type(exc).__name__}: {exc}"
        res.elapsed_ns = time.perf_counter_ns() - t0
        st = mm.stats()
    res.faults = st.faults
    res.pgfault = st.pgfault
    res.rss_pages = st.mm_anonpages
    res.rss_bytes = st.rss_bytes
    res.pages_touched = st.pages_touched
    res.zero_pages_touched = st.zero_pages_touched
    res.bloat_pages = st.bloat_pages
    res.bloat_bytes = st.bloat_pages * st.page_size
    res.bloat_ratio = float(st.bloat_ratio)
    for name in ("per_page_ops", "per_folio_ops", "ptes_written", "set_ptes_calls", "hits",
                 "faults_read", "faults_write", "faults_wp", "faults_pmd", "faults_oom",
                 "faults_sigsegv", "faults_sigbus", "zero_page_maps", "huge_zero_pmd_maps",
                 "contpte_blocks", "thp_fault_alloc", "thp_fault_fallback", "memcg_max_events"):
        setattr(res, name, int(getattr(st, name)))
    res.folio_histogram = st.folio_histogram()
    for name in ("anon_fault_alloc", "anon_fault_fallback", "anon_fault_fallback_charge",
                 "anon_fault_declined", "split_deferred"):
        setattr(res, name, _nonzero(getattr(st, name)))
    res.split_deferred_total = sum(res.split_deferred.values())
    res.ns_per_fault = (res.elapsed_ns / res.faults) if res.faults else None
    return res


def compare(workloads: Optional[Iterable[WorkloadArg]] = None,
            policies: Optional[Iterable[PolicyLike]] = None, *,
            page_size: int | str = DEFAULT_PAGE_SIZE, arch: str = "x86_64", ram: int | str = "4G",
            memcg_limit: Optional[int | str] = None, scale: float = 1.0,
            baseline: PolicyLike = BASELINE, skip_invalid: bool = False,
            skipped: Optional[list[tuple[str, str]]] = None) -> list[CompareResult]:
    """Run each workload under each policy; one result per pair, workload-major.

    ``workloads``: names (see :func:`pylaf.workloads.available_workloads`) or
    workload objects; default: the default set.  ``policies``: spec strings
    or :class:`Policy` objects; default :data:`pylaf.policy.DEFAULT_COMPARE`.
    ``skip_invalid``: drop policies that cannot run with this page size
    (recording ``(label, reason)`` in ``skipped``) instead of raising
    ValueError.
    """
    if not (0 < scale < float("inf")):
        raise ValueError(f"invalid scale {scale!r}: must be a positive number")
    pols = _resolve_policies(policies)
    wls = _resolve_workloads(workloads, scale)
    base_pol = parse_policy(baseline)
    config = make_config(base_pol, page_size=page_size, arch=arch, ram=ram,
                         memcg_limit=memcg_limit)
    usable: list[Policy] = []
    geometry = config.geometry
    for p in pols:
        try:
            p.resolve(geometry)
        except ValueError as exc:
            if not skip_invalid:
                raise ValueError(f"policy {p.label!r} cannot run with "
                                 f"{format_size(int(config.page_size))} pages: {exc}") from None
            if skipped is not None:
                skipped.append((p.label, str(exc)))
            continue
        usable.append(p)
    if not usable:
        raise ValueError("none of the policies can run with "
                         f"{format_size(int(config.page_size))} pages")
    base_idx = next((i for i, p in enumerate(usable) if _same_policy(p, base_pol)), None)

    _warm_up()
    results: list[CompareResult] = []
    for w in wls:
        rows = [run_one(w, p, config) for p in usable]
        base = rows[base_idx] if base_idx is not None else run_one(w, base_pol, config)
        if base_idx is not None:
            rows[base_idx].is_baseline = True
        for r in rows:
            if base.error is None and r.error is None:
                r.faults_saved = base.faults - r.faults
                r.faults_saved_pct = (100.0 * r.faults_saved / base.faults) if base.faults else 0.0
        results.extend(rows)
    return results


def config_dict(*, page_size: int | str = DEFAULT_PAGE_SIZE, arch: str = "x86_64", ram: int | str = "4G",
                memcg_limit: Optional[int | str] = None, scale: float = 1.0) -> dict[str, Any]:
    """The run's machine configuration, for JSON output."""
    return {"page_size": parse_size(page_size), "arch": arch, "ram": parse_size(ram),
            "memcg_limit": None if memcg_limit is None else parse_size(memcg_limit),
            "scale": scale, "baseline": BASELINE}


__all__: Sequence[str] = (
    "BASELINE",
    "CompareResult",
    "compare",
    "config_dict",
    "make_config",
    "parse_policy",
    "run_one",
)
