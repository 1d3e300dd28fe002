"""TEMPORARY re-exports (issue 8): the old ``pylaf.live.host`` names for the
callers outside pylaf/live that still import them (pylaf/trace,
pylaf/cli/trace.py, pylaf/experiments/costmodel.py, pylaf/policy.py
``Policy.from_sysfs``).  At merge, point those imports at :mod:`pylaf.live`
(or :mod:`pylaf.live.sysfs` / :mod:`pylaf.live.kprog`) and delete this module."""
from __future__ import annotations

from pylaf.live.kprog import build_dir, build_helper, run_kprog, run_kprog_raw
from pylaf.live.sysfs import (
    THP_DIR,
    anon_sizes_kb,
    read_mthp_stats,
    read_thp_settings,
    read_vmstat_thp,
    thp_lock,
    thp_settings,
)

__all__ = ["THP_DIR", "anon_sizes_kb", "build_dir", "build_helper", "read_mthp_stats",
           "read_thp_settings", "read_vmstat_thp", "run_kprog", "run_kprog_raw", "thp_lock",
           "thp_settings"]
