"""Sweeps: workloads x policies x page sizes x arches x memcg limits.

A sweep is described by a TOML file (see ``examples/sweep.toml``)::

    [sweep]
    workloads = ["seq-fill", "heap-churn"]       # names or .laftrace paths (default: the default set)
    policies = ["order-0", "order-4"]            # default: pylaf.policy.DEFAULT_COMPARE
    page_sizes = ["4K", "16K"]                   # default: ["4K"]
    arches = ["x86_64", "arm64"]                 # default: ["x86_64"]
    memcg_limits = ["none", "64M"]               # "none": unlimited (default: ["none"])
    ram = "4G"
    scale = 0.1
    sample_every = 1024                          # faults between samples (peak bloat); 0: off
    output = "sweep.parquet"                     # .parquet, .csv or .json (relative to the file)
    plot = "sweep.png"                           # faults saved vs peak bloat per policy
    [tags]                                       # copied into every row as tag_<key>
    experiment = "example"

:func:`run_sweep` runs one :func:`~pylaf.experiments.compare.compare` per
machine (page size x arch x memcg limit) on one shared executor, so every
cell of the whole sweep can run in parallel; policies that cannot run with a
page size, and workloads that cannot (4K traces), are skipped and listed.
"""
from __future__ import annotations

import sys
from concurrent.futures import Executor
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any, Optional

from pylaf.experiments.compare import compare
from pylaf.experiments.parallel import local_pool
from pylaf.experiments.run import CompareResult
from pylaf.sizes import format_size, parse_size

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10: the tomli backport (a dependency there)
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

#: keys of the [sweep] table
KEYS = frozenset({"workloads", "policies", "page_sizes", "arches", "memcg_limits", "ram", "scale",
                  "sample_every", "output", "plot", "jobs"})
DEFAULT_SAMPLE_EVERY = 1024


@dataclass(frozen=True)
class SweepConfig:
    """A parsed sweep description (paths resolved against the file's folder)."""

    workloads: Optional[tuple[str, ...]] = None
    policies: Optional[tuple[str, ...]] = None
    page_sizes: tuple[int, ...] = (4096,)
    arches: tuple[str, ...] = ("x86_64",)
    memcg_limits: tuple[Optional[int], ...] = (None,)
    ram: int = 4 << 30
    scale: float = 1.0
    sample_every: Optional[int] = DEFAULT_SAMPLE_EVERY
    output: Optional[Path] = None
    plot: Optional[Path] = None
    jobs: int = 1
    tags: dict[str, Any] = field(default_factory=dict)

    @property
    def machines(self) -> list[tuple[int, str, Optional[int]]]:
        """Every (page size, arch, memcg limit), in that nesting order."""
        return list(product(self.page_sizes, self.arches, self.memcg_limits))


def _str_list(doc: dict[str, Any], key: str) -> Optional[tuple[str, ...]]:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"sweep: {key} must be a non-empty list of strings")
    return tuple(value)


def _memcg(value: Any) -> Optional[int]:
    if isinstance(value, str) and value.strip().lower() in ("none", "max", "unlimited"):
        return None
    return parse_size(value)


def _path(base: Path, value: Any, key: str) -> Optional[Path]:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"sweep: {key} must be a file name")
    return base / value


def _resolve_workload_paths(names: Optional[tuple[str, ...]], base: Path) -> Optional[tuple[str, ...]]:
    if names is None:
        return None
    return tuple(str(base / n) if n.endswith(".laftrace") else n for n in names)


def parse_sweep(doc: dict[str, Any], base: Path = Path(".")) -> SweepConfig:
    """A :class:`SweepConfig` from a parsed TOML document; ValueError naming
    the problem on anything unexpected."""
    sweep = doc.get("sweep")
    if not isinstance(sweep, dict):
        raise ValueError("sweep: the file has no [sweep] table")
    unknown = set(sweep) - KEYS
    if unknown:
        raise ValueError(f"sweep: unknown key(s) {', '.join(sorted(unknown))} "
                         f"(expected: {', '.join(sorted(KEYS))})")
    tags = doc.get("tags", {})
    if not isinstance(tags, dict):
        raise ValueError("sweep: [tags] must be a table")
    every = sweep.get("sample_every", DEFAULT_SAMPLE_EVERY)
    if not isinstance(every, int) or every < 0:
        raise ValueError("sweep: sample_every must be a number of faults >= 0")
    jobs = sweep.get("jobs", 1)
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError("sweep: jobs must be >= 1")
    return SweepConfig(
        workloads=_resolve_workload_paths(_str_list(sweep, "workloads"), base),
        policies=_str_list(sweep, "policies"),
        page_sizes=tuple(parse_size(p) for p in _str_list(sweep, "page_sizes") or ("4K",)),
        arches=_str_list(sweep, "arches") or ("x86_64",),
        memcg_limits=tuple(_memcg(m) for m in sweep.get("memcg_limits", ["none"])),
        ram=parse_size(sweep.get("ram", "4G")), scale=float(sweep.get("scale", 1.0)),
        sample_every=every or None, output=_path(base, sweep.get("output"), "output"),
        plot=_path(base, sweep.get("plot"), "plot"), jobs=jobs, tags=dict(tags))


def load_sweep(path: str | Path) -> SweepConfig:
    """Read and parse a sweep TOML file (OSError, ValueError)."""
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{p}: {exc}") from None
    return parse_sweep(doc, p.parent)


@dataclass
class SweepResult:
    results: list[CompareResult]
    #: (machine, policy or workload, reason) of everything left out
    skipped: list[tuple[str, str, str]]


def run_sweep(cfg: SweepConfig, *, executor: Optional[Executor] = None,
              jobs: Optional[int] = None, progress: bool = False) -> SweepResult:
    """Run every machine of ``cfg``; ``executor`` (or a local pool of
    ``jobs`` processes, default ``cfg.jobs``) is shared by all of them."""
    out = SweepResult([], [])
    with local_pool((jobs or cfg.jobs) if executor is None else 1) as pool:
        for page_size, arch, memcg in cfg.machines:
            machine = (f"{format_size(page_size)}/{arch}/memcg="
                       f"{'none' if memcg is None else format_size(memcg)}")
            skipped: list[tuple[str, str]] = []
            skipped_wl: list[tuple[str, str]] = []
            out.results.extend(compare(
                cfg.workloads, cfg.policies, page_size=page_size, arch=arch, ram=cfg.ram,
                memcg_limit=memcg, scale=cfg.scale, skip_invalid=True, skipped=skipped,
                skipped_workloads=skipped_wl, sample_every=cfg.sample_every,
                executor=executor or pool, progress=progress, tags=cfg.tags))
            out.skipped.extend((machine, name, why) for name, why in skipped + skipped_wl)
    return out


def summary_points(results: list[CompareResult]) -> list[dict[str, Any]]:
    """The points of the summary plot: every non-baseline run that has a
    fault saving, with its peak bloat (end bloat when not sampled)."""
    return [{"policy": r.policy, "workload": r.workload, "faults_saved_pct": r.faults_saved_pct,
             "peak_bloat_ratio": r.peak_bloat_ratio if r.peak_bloat_ratio is not None
             else r.bloat_ratio}
            for r in results if not r.is_baseline and r.faults_saved_pct is not None
            and r.pages_touched > 0]


__all__ = ["SweepConfig", "SweepResult", "load_sweep", "parse_sweep", "run_sweep", "summary_points"]
