"""Plots of the commands (matplotlib is optional: ``pip install 'pylaf[plot]'``).

:func:`require_pyplot` imports it when a plot is asked for and raises
:class:`PlotUnavailable` with a one-line message when it is missing; the
commands print that message and exit 2."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MIB = float(1 << 20)


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or PlotUnavailable."""
    try:  # optional dependency (pylaf[plot]), imported only when a plot is asked for
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable("writing a plot needs matplotlib: pip install 'pylaf[plot]' "
                              "(or pip install matplotlib)") from None
    return plt


def _partial(sample: dict[str, int]) -> int:
    return sum(v for k, v in sample.items() if k.startswith("nr_anon_partially_mapped_"))


def plot_series(results: Sequence[Any], path: str, title: str) -> None:
    """RSS and partially mapped folios against faults, one line per policy,
    one row of panels per workload (results need ``series``)."""
    plt = require_pyplot()
    workloads = list(dict.fromkeys(r.workload for r in results))
    fig, axes = plt.subplots(len(workloads), 2, figsize=(11, 3.6 * len(workloads)), squeeze=False)
    for row, wl in zip(axes, workloads, strict=True):
        for r in (r for r in results if r.workload == wl and r.series):
            faults = [s["faults"] for s in r.series]
            row[0].plot(faults, [s["rss_bytes"] / MIB for s in r.series], label=r.policy)
            row[1].plot(faults, [_partial(s) for s in r.series], label=r.policy)
        row[0].set_title(f"{wl}: RSS")
        row[0].set_ylabel("MiB")
        row[1].set_title(f"{wl}: partially mapped large folios")
        for ax in row:
            ax.set_xlabel("faults")
            ax.grid(True, alpha=0.3)
        row[0].legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep_summary(points: Sequence[dict[str, Any]], path: str, title: str) -> None:
    """Faults saved (%) against peak bloat (ratio), one marker series per
    policy; ``points``: dicts with ``policy``, ``faults_saved_pct``,
    ``peak_bloat_ratio``."""
    plt = require_pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for pol in dict.fromkeys(p["policy"] for p in points):
        mine = [p for p in points if p["policy"] == pol]
        ax.scatter([p["peak_bloat_ratio"] for p in mine], [p["faults_saved_pct"] for p in mine],
                   label=pol, alpha=0.75)
    ax.set_xscale("log")
    ax.set_xlabel("peak bloat (RSS / touched at the RSS peak)")
    ax.set_ylabel("faults saved vs order-0 (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["PlotUnavailable", "plot_series", "plot_sweep_summary", "require_pyplot"]
