"""The live host: this machine's kernel.  Nothing else in pylaf reads ``/sys``
or ``/proc`` for THP state.

* :mod:`pylaf.live.sysfs`     THP knobs (read, apply temporarily with
  :func:`thp_settings`, which restores them on every exit path), the
  machine-wide pylaf THP lock, per-size mTHP stats, vmstat, the host's policy;
* :mod:`pylaf.live.kprog`     building and running the ``pylaf/live/csrc`` helpers
  (``laf_kprog`` runs an access program and reports faults, counters, layouts);
* :mod:`pylaf.live.programs`  the access programs and setting groups of the check;
* :mod:`pylaf.live.sides`     what the live kernel and the emulator report for a program;
* :mod:`pylaf.live.check`     the check engine (run both sides, compare, retry on noise);
* :mod:`pylaf.live.report`    its text and JSON output.

"kernel" in this package means the live kernel; the emulated kernel is the
emulator (:class:`pylaf.AddressSpace`).
"""
from __future__ import annotations

from pylaf.live.kprog import (
    HelperUnavailable,
    KprogResult,
    build_dir,
    build_helper,
    build_kprog,
    parse_kprog_output,
    run_kprog,
    run_kprog_raw,
)
from pylaf.live.sysfs import (
    ANON_STATS,
    THP_DIR,
    ThpSettings,
    anon_sizes_kb,
    host_policy,
    read_mthp_stats,
    read_thp_settings,
    read_vmstat_thp,
    thp_lock,
    thp_settings,
)

__all__ = ["ANON_STATS", "THP_DIR", "HelperUnavailable", "KprogResult", "ThpSettings",
           "anon_sizes_kb", "build_dir", "build_helper", "build_kprog", "host_policy",
           "parse_kprog_output", "read_mthp_stats", "read_thp_settings", "read_vmstat_thp",
           "run_kprog", "run_kprog_raw", "thp_lock", "thp_settings"]
