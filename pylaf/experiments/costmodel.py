"""Kernel cost model: what the faults an emulator run counted would cost on
this machine's live kernel.

Calibration runs ``laf_kprog`` (:func:`pylaf.kernel.run_kprog_raw`) on the
live kernel: a mapping of ``size`` bytes is write-faulted one 4K page at a
time (what a program does), then unmapped.  ``laf_kprog`` reports fault
counts (``minflt``) but no times, so the time of the faults is measured by
difference: the wall time of the program *with* the write op minus the same
program *without* it (same mmap, same munmap, same process start and final
snapshot), minimum over ``runs`` interleaved repetitions.  The difference is
the faults **plus the teardown of what they mapped** (the munmap zap and
free): the lifetime cost of a fault.  If ``laf_kprog`` ever reports a
per-op ``ns``, that is used instead.

Calibrated orders:
 * order 0: the global default settings (every mTHP size ``never``): a plain
   mapping takes order-0 faults;
 * PMD order: the same settings plus ``MADV_HUGEPAGE`` on the mapping;
 * orders 2..PMD-1 only with an explicit opt-in (``settings=True``,
   ``pylaf bench --kernel-model --kernel-settings`` or
   ``PYLAF_KERNEL_SETTINGS=1``): each size in turn is set to ``always``
   through :func:`pylaf.kernel.thp_settings`, which restores every knob on
   every exit path.
Each sample is checked: ``minflt`` must equal ``size / folio size``,
otherwise the kernel did not map the order asked for and the sample is
refused.

Model (least squares, rows weighted by 1/time so every order counts in
relative terms)::

    ns_per_fault = fault + page * pages_per_fault + pte * ptes_per_fault

``fault`` is the per-fault cost (exception, VMA lookup, allocation, charge,
rmap, LRU...), ``page`` the per-base-page cost (zeroing, struct page work,
teardown of the page) and ``pte`` the extra cost per PTE written (PMD
faults write none).  With only the two default orders (0 and PMD) the three
terms are not identifiable and the model is ``fault + page * 2^order``.

:meth:`CostModel.predict_stats` applies the model to an emulator run's
counters (``pgfault``, ``bytes_zeroed``, ``ptes_written``).
"""
from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from pylaf.geometry import DEFAULT_PAGE_SIZE, Geometry
from pylaf.live import sysfs as k
from pylaf.live.kprog import build_dir, run_kprog_raw
from pylaf.sizes import format_size, parse_size

#: the live host's page geometry (the calibrated kernel runs x86_64, 4K pages)
HOST_GEOMETRY = Geometry.for_machine(DEFAULT_PAGE_SIZE)
PAGE_SIZE = HOST_GEOMETRY.page_size
PMD_ORDER = HOST_GEOMETRY.pmd_order
TERMS: tuple[str, ...] = ("fault", "page", "pte")
#: env var that opts in to writing sysfs THP knobs during calibration
SETTINGS_ENV = "PYLAF_KERNEL_SETTINGS"


# --------------------------------------------------------------- samples
@dataclass(frozen=True)
class KernelSample:
    """One calibrated order: ``faults`` faults mapping ``pages`` base pages
    (``ptes`` of them through PTEs) took ``ns`` nanoseconds in total."""

    order: int
    size: int
    faults: int
    pages: int
    ptes: int
    ns: float
    method: str = "differential"   #: "differential" (wall time difference) or "op-ns"
    runs: int = 1
    ns_runs: tuple[float, ...] = ()

    @property
    def ns_per_fault(self) -> float:
        return self.ns / self.faults if self.faults else math.nan

    @property
    def ns_per_page(self) -> float:
        return self.ns / self.pages if self.pages else math.nan

    def features(self) -> dict[str, float]:
        """Per-fault features of this sample (the model's regressors)."""
        f = max(self.faults, 1)
        return {"fault": 1.0, "page": self.pages / f, "pte": self.ptes / f}


def sample_features(order: int, pmd_order: int = PMD_ORDER) -> dict[str, float]:
    """Per-fault features of a fault mapping one folio of ``order``."""
    nr = float(1 << order)
    return {"fault": 1.0, "page": nr, "pte": 0.0 if order >= pmd_order else nr}


# ----------------------------------------------------------------- model
@dataclass(frozen=True)
class CostModel:
    """Fitted coefficients (ns) and the samples they came from."""

    coef: Mapping[str, float]
    samples: tuple[KernelSample, ...] = ()
    machine: str = ""
    kernel: str = ""
    created: float = field(default_factory=time.time)

    def predict_features(self, features: Mapping[str, float]) -> float:
        """ns for the given feature totals (or per-fault features)."""
        return float(sum(self.coef.get(k, 0.0) * float(v) for k, v in features.items()))

    def predict_order(self, order: int, pmd_order: int = PMD_ORDER) -> float:
        """Predicted ns for one fault mapping a folio of ``order``."""
        return self.predict_features(sample_features(order, pmd_order))

    def predict_stats(self, stats: Any) -> float:
        """Predicted kernel ns for the faults counted in ``stats`` (a
        :class:`pylaf.Stats`, a delta dict from ``Stats - Stats``, or a
        mapping with ``min_flt``/``pgfault``, ``bytes_zeroed``, ``ptes_written``)."""
        return self.predict_features(features_from_stats(stats))

    def residuals(self) -> list[dict[str, float]]:
        """Per calibrated order: measured vs predicted ns per fault."""
        out = []
        for s in self.samples:
            pred = self.predict_features(s.features())
            out.append({"order": s.order, "measured_ns": s.ns_per_fault, "predicted_ns": pred,
                        "error": (pred - s.ns_per_fault) / s.ns_per_fault})
        return out

    def to_json(self) -> str:
        d = asdict(self)
        d["coef"] = dict(self.coef)
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> CostModel:
        d = json.loads(text)
        samples = tuple(KernelSample(**{**s, "ns_runs": tuple(s.get("ns_runs", ()))})
                        for s in d.get("samples", ()))
        return cls(coef=dict(d["coef"]), samples=samples, machine=d.get("machine", ""),
                   kernel=d.get("kernel", ""), created=d.get("created", 0.0))

    def describe(self) -> str:
        terms = " + ".join(f"{self.coef[k]:.1f} ns x {k}" for k in TERMS if k in self.coef)
        return f"kernel ns = {terms}"


def features_from_stats(stats: Any) -> dict[str, float]:
    """Model features from emulator counters: faults accounted like
    ru_minflt (``min_flt``, else ``pgfault``), base pages zeroed (``bytes_zeroed / page_size``)
    and PTEs written (``ptes_written``)."""
    def get(key: str, default: Any = 0) -> Any:
        return stats.get(key, default) if isinstance(stats, Mapping) else getattr(stats, key, default)

    page_size = int(get("page_size", PAGE_SIZE) or PAGE_SIZE)
    faults = get("min_flt", None)           # getrusage ru_minflt, like laf_kprog's minflt
    if faults is None:
        faults = get("pgfault")
    return {"fault": float(faults),
            "page": float(get("bytes_zeroed")) / page_size,
            "pte": float(get("ptes_written"))}


def identifiable_terms(rows: Sequence[Mapping[str, float]],
                       terms: Sequence[str] = TERMS) -> list[str]:
    """The terms the rows can determine: drop ``pte`` first, then ``page``,
    until the design matrix has full column rank (and no more columns than
    rows)."""
    want = list(terms)
    while want:
        x = np.array([[r.get(t, 0.0) for t in want] for r in rows], dtype=float)
        if len(rows) >= len(want) and np.linalg.matrix_rank(x) == len(want):
            return want
        for drop in ("pte", "page", "fault"):
            if drop in want:
                want.remove(drop)
                break
    return want


def fit(samples: Iterable[KernelSample], terms: Sequence[str] = TERMS,
        nonneg: bool = True) -> dict[str, float]:
    """Least-squares coefficients for ns/fault = sum(coef[t] * feature[t]).

    Rows are weighted by 1/measured so the fit minimises relative error.
    Terms the samples cannot identify are dropped (see
    :func:`identifiable_terms`).  With ``nonneg``, a negative coefficient
    is dropped and the fit redone without it (costs are never negative).
    """
    samples = [s for s in samples if s.faults > 0 and s.ns > 0]
    if not samples:
        raise ValueError("no usable samples to fit")
    rows = [s.features() for s in samples]
    y = np.array([s.ns_per_fault for s in samples], dtype=float)
    use = identifiable_terms(rows, terms)
    while True:
        x = np.array([[r[t] for t in use] for r in rows], dtype=float)
        w = 1.0 / y
        sol, *_ = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)
        coef = {t: float(c) for t, c in zip(use, sol, strict=True)}
        neg = [t for t, c in coef.items() if c < 0 and t != "fault"]
        if not nonneg or not neg or len(use) == 1:
            return coef
        use.remove(neg[0])


def fit_model(samples: Iterable[KernelSample], terms: Sequence[str] = TERMS) -> CostModel:
    samples = tuple(samples)
    return CostModel(coef=fit(samples, terms), samples=samples, machine=machine_name(),
                     kernel=platform.release())


def leave_one_out(samples: Sequence[KernelSample],
                  terms: Sequence[str] = TERMS) -> list[dict[str, float]]:
    """Cross-validation: predict each sample from a model fitted on the others."""
    out = []
    for i, s in enumerate(samples):
        rest = [t for j, t in enumerate(samples) if j != i]
        if len(rest) < 2:
            continue
        coef = fit(rest, terms)
        pred = sum(coef.get(k, 0.0) * v for k, v in s.features().items())
        out.append({"order": s.order, "measured_ns": s.ns_per_fault, "predicted_ns": pred,
                    "error": (pred - s.ns_per_fault) / s.ns_per_fault})
    return out


# ----------------------------------------------------------- calibration
def machine_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def kernel_program(order: int, size: int, write: bool = True, pmd_order: int = PMD_ORDER) -> str:
    """The laf_kprog program of one calibration run."""
    lines = [f"mmap a {size} align=2M"]
    if order >= pmd_order:
        lines.append(f"madvise a 0 {size} hugepage")
    if write:
        lines.append(f"write a 0 {size} 4K")
    lines += [f"munmap a 0 {size}", "snapshot end runs=0"]
    return "\n".join(lines) + "\n"


def _write_op(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    for op in raw["ops"]:
        if op["op"] == "write":
            found: Mapping[str, Any] = op
            return found
    raise RuntimeError("laf_kprog output has no write op")


def measure_order(order: int, size: int | str = "256M", runs: int = 5,
                  runner: Optional[Callable[[str], Mapping[str, Any]]] = None,
                  clock: Callable[[], float] = time.perf_counter) -> KernelSample:
    """Time ``size`` of write faults at ``order`` on the live kernel (the THP
    settings that make the kernel use ``order`` must already be in force)."""
    if runner is None:
        runner = run_kprog_raw
    nbytes = parse_size(size)
    nr = 1 << order
    want_faults = nbytes // (PAGE_SIZE * nr)
    with_w: list[float] = []
    without: list[float] = []
    op_ns: list[float] = []
    faults = 0
    runner(kernel_program(order, nbytes, True))     # warm-up: host memory, page cache
    for _ in range(runs):
        for write in (True, False):
            t0 = clock()
            raw = runner(kernel_program(order, nbytes, write))
            dt = (clock() - t0) * 1e9
            if write:
                op = _write_op(raw)
                faults = int(op.get("minflt") or 0)
                if faults != want_faults:
                    raise RuntimeError(
                        f"order {order}: the kernel took {faults} faults for {format_size(nbytes)}, "
                        f"expected {want_faults} ({format_size(PAGE_SIZE << order)} folios): the "
                        f"THP settings do not give this order")
                with_w.append(dt)
                if op.get("ns") is not None:
                    op_ns.append(float(op["ns"]))
            else:
                without.append(dt)
    pages = nbytes // PAGE_SIZE
    ptes = 0 if order >= PMD_ORDER else pages
    if op_ns:
        return KernelSample(order, nbytes, faults, pages, ptes, min(op_ns), "op-ns", runs,
                            tuple(op_ns))
    diffs = tuple(w - min(without) for w in with_w)
    ns = min(with_w) - min(without)
    if ns <= 0:
        raise RuntimeError(f"order {order}: no measurable difference (noise); use a larger size")
    return KernelSample(order, nbytes, faults, pages, ptes, ns, "differential", runs, diffs)


def settings_opted_in(flag: Optional[bool] = None) -> bool:
    if flag is not None:
        return flag
    return os.environ.get(SETTINGS_ENV, "") not in ("", "0", "no", "false")


def calibrate(size: int | str = "256M", runs: int = 5, orders: Optional[Sequence[int]] = None,
              settings: Optional[bool] = None, progress: Optional[Callable[[str], None]] = None,
              pmd_size: int | str = "512M") -> CostModel:
    """Measure the live kernel and fit the model (see the module docstring).

    ``orders``: which orders to calibrate (default: 0 and PMD, plus 2..PMD-1
    when ``settings`` is opted in).  Orders 2..PMD-1 need ``settings``.
    ``pmd_size``: PMD faults are few, so they get a larger mapping.
    """
    opted = settings_opted_in(settings)
    if orders is None:
        orders = [0, PMD_ORDER] + (list(range(2, PMD_ORDER)) if opted else [])
    cur = k.read_thp_settings()
    samples = []
    for order in sorted(orders):
        say = progress or (lambda s: None)
        sz = pmd_size if order >= PMD_ORDER else size
        if order in (0, PMD_ORDER) and not opted:
            # no sysfs write: check the current settings give the order asked for
            say(f"kernel: order {order} ({format_size(PAGE_SIZE << order)}) under the current settings")
            samples.append(measure_order(order, sz, runs))
            continue
        if not opted:
            raise PermissionError(f"calibrating order {order} writes sysfs THP knobs: pass "
                                  f"settings=True or set {SETTINGS_ENV}=1")
        kb = (PAGE_SIZE << order) // 1024
        pmd_kb = (PAGE_SIZE << PMD_ORDER) // 1024
        sizes: dict[Any, str] = {s: "never" for s in k.anon_sizes_kb()}
        sizes[pmd_kb] = "inherit"           # PMD only with MADV_HUGEPAGE (global madvise)
        if 2 <= order < PMD_ORDER:
            sizes[kb] = "always"
        kw: dict[str, Any] = {"enabled": "madvise", "sizes": sizes}
        if cur.anon_beside_full is not None:
            kw["anon_beside_full"] = 0
        say(f"kernel: order {order} ({format_size(PAGE_SIZE << order)}), settings {sizes}")
        with k.thp_settings(**kw):
            samples.append(measure_order(order, sz, runs))
    return fit_model(samples)


# ------------------------------------------------------------- caching
def default_cache() -> Path:
    return build_dir() / "costmodel.json"


def load_or_calibrate(path: Optional[Path] = None, recalibrate: bool = False,
                      **kw: Any) -> CostModel:
    """The cached model for this kernel, or a fresh calibration (then cached)."""
    path = path or default_cache()
    if path.exists() and not recalibrate:
        m = CostModel.from_json(path.read_text())
        if m.kernel == platform.release() and m.machine == machine_name():
            return m
    m = calibrate(**kw)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(m.to_json())
    return m


__all__ = [
    "TERMS",
    "CostModel",
    "KernelSample",
    "calibrate",
    "features_from_stats",
    "fit",
    "fit_model",
    "identifiable_terms",
    "kernel_program",
    "leave_one_out",
    "load_or_calibrate",
    "measure_order",
    "sample_features",
]
