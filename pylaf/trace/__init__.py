"""Record real workloads with perf and replay their anonymous faults.

The package, by concern (imports only go down this list's arrows)::

    format    the .laftrace file: event codes, Trace, read/write, checks
              (schema: the header schema checker; vmamap: the recorder's VMAs)
    perf      perf script parsing, TraceBuilder           -> format, vmamap
    compile   a trace's replay as one op stream            -> format
    replay    replay into the emulator, TraceWorkload      -> format, compile
    bundled   pylaf/data/traces/*.laftrace as workloads    -> format, replay
    record    pylaf record: perf + laf_tracee              -> format, perf, pylaf.live
    validate  --validate-live against the live kernel      -> record, replay, pylaf.live

Only :mod:`~pylaf.trace.record` and :mod:`~pylaf.trace.validate` touch the
live host (:mod:`pylaf.live`); this ``__init__`` re-exports the rest, so
``import pylaf.trace`` (or ``pylaf.trace.replay``) never imports
:mod:`pylaf.live`.  Import ``record``/``validate`` from their modules, and
the ``replay()`` function from :mod:`pylaf.trace.replay` (re-exported here it
would hide that submodule).

Recording (``pylaf record -o TRACE -- CMD ...``) folds ``perf script``
output and the ``laf_tracee`` log into one compact trace: per process ("mm")
its initial layout, then a time-ordered event array (faults, VMA changes)
where every fault is classified by the VMA it hit.  Record with mTHP off
(the default settings) so every first touch of every anonymous page is a
fault.  Replay (``pylaf replay TRACE --policy SPEC``) drives one emulated
address space; see :mod:`pylaf.trace.replay`.  The file format and how an
untrusted file is checked are described in :mod:`pylaf.trace.format`.
"""
from __future__ import annotations

__all__ = [
    "ANON_CLASSES",
    "CLASS_NAMES",
    "EVENT_DTYPE",
    "PerfError",
    "ReplayReport",
    "Trace",
    "TraceBuilder",
    "TraceError",
    "TraceFormatError",
    "TraceWorkload",
    "build_trace",
    "bundled_workloads",
    "load_trace",
    "parse_perf_script",
    "parse_trace_bytes",
    "read_trace",
    "read_tracee_log",
    "replay_into",
    "save_trace",
    "traces_dir",
]

from pylaf.trace.bundled import bundled_workloads, traces_dir
from pylaf.trace.format import (
    ANON_CLASSES,
    CLASS_NAMES,
    EVENT_DTYPE,
    Trace,
    TraceError,
    TraceFormatError,
    load_trace,
    parse_trace_bytes,
    read_trace,
    save_trace,
)
from pylaf.trace.perf import PerfError, TraceBuilder, build_trace, parse_perf_script, read_tracee_log
from pylaf.trace.replay import ReplayReport, TraceWorkload, replay_into
