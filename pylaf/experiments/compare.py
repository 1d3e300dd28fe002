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

The runs (cells) are independent: ``jobs=N`` runs them in a local process
pool, ``executor=`` on any :class:`concurrent.futures.Executor` (a Dask
``Client.get_executor()``); the rows are the same as a serial run's, timing
aside.  One run is :func:`pylaf.experiments.run.run_one` (timing is
described there).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any, Optional, Union

import numpy as np

from pylaf.address_space import AddressSpace
from pylaf.config import Config
from pylaf.experiments.parallel import run_cells
from pylaf.experiments.run import (
    Cell,
    CompareResult,
    WorkloadArg,
    resolve_workload,
    run_one,
    unsupported_reason,
)
from pylaf.experiments.workloads import default_workload_names
from pylaf.geometry import DEFAULT_PAGE_SIZE
from pylaf.live.sysfs import host_policy
from pylaf.policy import DEFAULT_COMPARE, KERNEL_SPEC, Policy
from pylaf.sizes import format_size, parse_size

#: the policy whose fault count "saved" is measured against
BASELINE = "order-0"

PolicyLike = Union[str, Policy]


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


def _usable_policies(pols: list[Policy], config: Config, skip_invalid: bool,
                     skipped: Optional[list[tuple[str, str]]]) -> list[Policy]:
    usable: list[Policy] = []
    for p in pols:
        try:
            p.resolve(config.geometry)
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
    return usable


def _usable_workloads(specs: list[WorkloadArg], scale: float, page_size: int,
                      skipped: Optional[list[tuple[str, str]]]) -> list[WorkloadArg]:
    """The workloads that can run with ``page_size`` pages; the others are
    recorded in ``skipped`` as ``(name, reason)``."""
    out: list[WorkloadArg] = []
    for spec in specs:
        w = resolve_workload(spec, scale)
        why = unsupported_reason(w, page_size)
        if why is None:
            out.append(spec)
        elif skipped is not None:
            skipped.append((str(w.name), why))
    return out


def _fill_saved(rows: list[CompareResult], base: CompareResult) -> None:
    for r in rows:
        if base.error is None and r.error is None and not r.faults_oom and not base.faults_oom:
            r.faults_saved = base.faults - r.faults
            r.faults_saved_pct = (100.0 * r.faults_saved / base.faults) if base.faults else 0.0


def compare(workloads: Optional[Iterable[WorkloadArg]] = None,
            policies: Optional[Iterable[PolicyLike]] = None, *,
            page_size: int | str = DEFAULT_PAGE_SIZE, arch: str = "x86_64", ram: int | str = "4G",
            memcg_limit: Optional[int | str] = None, scale: float = 1.0,
            baseline: PolicyLike = BASELINE, skip_invalid: bool = False,
            skipped: Optional[list[tuple[str, str]]] = None,
            skipped_workloads: Optional[list[tuple[str, str]]] = None,
            sample_every: Optional[int] = None, jobs: int = 1,
            executor: Optional[Executor] = None, progress: bool = False,
            tags: Optional[Mapping[str, Any]] = None) -> list[CompareResult]:
    """Run each workload under each policy; one result per pair, workload-major.

    ``workloads``: names (see :func:`pylaf.workloads.available_workloads`),
    ``.laftrace`` paths or workload objects; default: the default set.
    ``policies``: spec strings or :class:`Policy` objects; default
    :data:`pylaf.policy.DEFAULT_COMPARE`.  ``skip_invalid``: drop policies
    that cannot run with this page size (recording ``(label, reason)`` in
    ``skipped``) instead of raising ValueError.  A workload that cannot run
    with this page size (a 4K trace on 16K pages) is always left out, and
    recorded in ``skipped_workloads``.  ``sample_every``: record a series
    every N faults in each result (``series``, ``peak_bloat_*``).  ``jobs``,
    ``executor``, ``progress``: see :func:`pylaf.experiments.parallel.run_cells`.
    ``tags``: copied into every result.  A row with OOM faults (or whose
    baseline had some) has no ``faults_saved``.
    """
    if not (0 < scale < float("inf")):
        raise ValueError(f"invalid scale {scale!r}: must be a positive number")
    if sample_every is not None and sample_every <= 0:
        raise ValueError(f"invalid sample_every {sample_every!r}: must be > 0 faults")
    pols = _resolve_policies(policies)
    specs = list(default_workload_names() if workloads is None else workloads)
    if not specs:
        raise ValueError("no workloads to run")
    base_pol = parse_policy(baseline)
    config = make_config(base_pol, page_size=page_size, arch=arch, ram=ram,
                         memcg_limit=memcg_limit)
    usable = _usable_policies(pols, config, skip_invalid, skipped)
    wls = _usable_workloads(specs, scale, int(config.page_size), skipped_workloads)
    base_idx = next((i for i, p in enumerate(usable) if _same_policy(p, base_pol)), None)
    run_pols = usable if base_idx is not None else [*usable, base_pol]
    tag_items = tuple(sorted((tags or {}).items()))
    cells = [Cell(w, p, config, scale, sample_every, tag_items) for w in wls for p in run_pols]

    _warm_up()
    done = run_cells(cells, jobs=jobs, executor=executor, progress=progress)
    results: list[CompareResult] = []
    n = len(run_pols)
    for i in range(len(wls)):
        rows = done[i * n:(i + 1) * n]
        base = rows[base_idx if base_idx is not None else n - 1]
        rows = rows if base_idx is not None else rows[:-1]
        if base_idx is not None:
            rows[base_idx].is_baseline = True
        _fill_saved(rows, base)
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
