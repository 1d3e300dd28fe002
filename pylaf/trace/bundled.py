"""The traces shipped in ``pylaf/data/traces/`` (package data; how each was
recorded: ``traces/README.md`` in the source tree) as ``pylaf compare``
workloads.

:mod:`pylaf.experiments.workloads` imports :func:`bundled_workloads` (the
import goes experiments -> trace, never back: nothing in
:mod:`pylaf.trace` imports :mod:`pylaf.experiments`).
"""
from __future__ import annotations

__all__ = ["bundled_workloads", "traces_dir"]

import os
import warnings
from pathlib import Path

from pylaf.trace.format import TraceError, load_trace
from pylaf.trace.replay import TraceWorkload


def traces_dir() -> Path:
    """``$PYLAF_TRACES_DIR``, or the package's ``data/traces/``."""
    env = os.environ.get("PYLAF_TRACES_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "data" / "traces"


def bundled_workloads() -> list[TraceWorkload]:
    """Workloads for the bundled traces (``*.laftrace`` in :func:`traces_dir`); a
    file that does not load is skipped with a warning naming it."""
    d = traces_dir()
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.glob("*.laftrace")):
        try:
            tr = load_trace(p)
        except TraceError as exc:
            warnings.warn(f"skipping bundled trace: {exc}", RuntimeWarning, stacklevel=2)
            continue
        out.append(TraceWorkload(tr, name=f"trace-{tr.name}",
                                 description=f"recorded: {tr.description}"))
    return out
