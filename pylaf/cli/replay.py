"""``pylaf replay TRACE [--policy SPEC ...] [--json] [--info] [--validate-live SIZES ...]``

Replays a trace's anonymous faults through the emulator under each policy
and prints the ``pylaf compare`` table plus the faults that were not
replayed (file-backed, shared, vdso, no VMA), so that "predicted total" =
replayed anonymous faults + the recorded non-anonymous ones.  A trace file is
untrusted input: any problem with it, or with the replay, is one line on
stderr and exit status 1 (the trace) or 2 (the arguments), never a traceback.
"""
from __future__ import annotations

__all__ = ["DEFAULT_REPLAY_POLICIES", "cmd_replay", "register"]

import argparse
import json
import os
import sys
from typing import Any

from pylaf.errors import HostUnavailable, LafError
from pylaf.experiments.compare import CompareResult, compare
from pylaf.live.kprog import build_helper
from pylaf.live.sysfs import read_thp_settings
from pylaf.render import compare_table, console, format_table, print_table
from pylaf.trace.format import Trace, TraceError, load_trace
from pylaf.trace.record import record_unavailable
from pylaf.trace.replay import ReplayReport, TraceWorkload
from pylaf.trace.validate import LiveValidation, validate_live

DEFAULT_REPLAY_POLICIES = (
    "order-0",
    "kernel",
    "upstream/enabled=madvise/16K=always",
    "upstream/enabled=madvise/64K=always",
    "upstream/enabled=madvise/thp_anon=16K-64K:always;2M:inherit",
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "replay", help="replay a recorded trace's anonymous faults under THP policies",
        description="Replay the anonymous private memory faults of a trace through the "
                    "emulator under one or more policies (default: order-0, this machine's "
                    "live settings, 16K and 64K always).")
    p.add_argument("trace", help="trace file (from pylaf record)")
    p.add_argument("--policy", "-p", action="append", metavar="SPEC",
                   help="policy spec, repeatable (see pylaf compare --help)")
    p.add_argument("--ram", default="8G", help="emulated RAM (default 8G)")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.add_argument("--info", action="store_true", help="only describe the trace")
    p.add_argument("--validate-live", action="append", metavar="SIZES", default=[],
                   help="re-run the trace's command on the live kernel with these mTHP sizes "
                        "'always' (e.g. 64K, 16K, 16K-64K; every other size never, 2M inherit) "
                        "and compare with the prediction; needs root, THP knobs are restored "
                        "afterwards (repeatable)")
    p.set_defaults(func=cmd_replay)


def _error(msg: object, status: int) -> int:
    """One line on stderr (a message's own newlines folded), then *status*."""
    print("pylaf replay: error: " + " ".join(str(msg).split()), file=sys.stderr)
    return status


def _print_info(tr: Trace) -> None:
    print(tr.summary())
    for p in tr.processes:
        parent = f", parent mm {p['parent']}" if p.get("parent") is not None else ""
        print(f"  mm {p['mm']}: pid {p.get('pid')} {p.get('comm', '')} ({p.get('start')}{parent})"
              f" faults={p.get('faults', 0)} anon={p.get('anon_faults', 0)} {p.get('exe', '')}")


def cmd_replay(args: argparse.Namespace) -> int:
    try:
        tr = load_trace(args.trace)
    except TraceError as exc:
        return _error(exc, 1)
    if args.info:
        _print_info(tr)
        return 0
    if args.validate_live:
        return _validate(tr, args)
    policies = args.policy or list(DEFAULT_REPLAY_POLICIES)
    wl = TraceWorkload(tr)
    try:
        results = compare([wl], policies, ram=args.ram)
    except TraceError as exc:
        return _error(exc, 1)
    except (LafError, ValueError) as exc:
        return _error(exc, 2)
    _print_results(tr, results, wl.report, args.json)
    return 0


def _print_results(tr: Trace, results: list[CompareResult], rep: ReplayReport | None,
                   as_json: bool) -> None:
    counts = tr.fault_counts()
    other = counts["total"] - counts["anon"]
    rows = [{"policy": r.policy, "anon_faults": r.faults, "predicted_total_faults": r.faults + other,
             "rss_bytes": r.rss_bytes, "bloat_ratio": r.bloat_ratio,
             "anon_fault_alloc": r.anon_fault_alloc, "anon_fault_fallback": r.anon_fault_fallback,
             "folio_histogram": r.folio_histogram, "error": r.error} for r in results]
    if as_json:
        json.dump({"trace": tr.path, "header": dict(tr.header), "recorded_faults": counts,
                   "results": rows, "replay": rep.__dict__ if rep else None},
                  sys.stdout, indent=1, default=str)
        print()
        return
    print(tr.summary())
    print_table(console(), compare_table(results, title=f"replay of {tr.name}"))
    print()
    print(f"recorded: {counts['total']} faults = {counts['anon']} anonymous (replayed) + "
          f"{other} other (file {counts['file']}, shared {counts['shared']}, special "
          f"{counts['special']}, no VMA {counts['no-vma']}: not replayed, assumed unchanged)")
    print(format_table([[r.policy, str(r.faults), str(r.faults + other),
                         " ".join(f"{k}:{v}" for k, v in r.folio_histogram.items())]
                        for r in results],
                       ["policy", "anon faults", "predicted total", "folios mapped"]))
    if rep is not None and (rep.errors or rep.sigsegv):
        print(f"replay problems: sigsegv={rep.sigsegv} " +
              " ".join(f"{k}={v}" for k, v in rep.errors.items()))


def _cannot_run(msg: object) -> int:
    """A missing capability: one line on stderr, exit 2."""
    print("pylaf replay: cannot run here: " + " ".join(str(msg).split()), file=sys.stderr)
    return 2


def _validate_unavailable() -> str | None:
    """What --validate-live lacks here (root, perf, a C compiler for laf_tracee), or None."""
    if os.geteuid() != 0:
        return "--validate-live needs root (it sets THP knobs and records)"
    why = record_unavailable()
    if why:
        return why.splitlines()[0]
    try:
        build_helper("laf_tracee")
    except HostUnavailable as exc:
        return str(exc).strip().splitlines()[0]
    return None


def _validate(tr: Trace, args: argparse.Namespace) -> int:
    why = _validate_unavailable()
    if why:
        return _cannot_run(why)
    original = read_thp_settings().raw()
    print(tr.summary())
    try:
        rows = validate_live(tr, args.validate_live, ram=args.ram)
    except HostUnavailable as exc:
        return _cannot_run(str(exc).strip().splitlines()[0])
    except TraceError as exc:
        return _error(exc, 1)
    except (LafError, ValueError) as exc:
        return _error(exc, 2)
    finally:
        ok = read_thp_settings().raw() == original
        print("THP settings restored and verified" if ok else
              "WARNING: THP settings differ from before the validation", file=sys.stderr)
    if args.json:
        json.dump([r.__dict__ for r in rows], sys.stdout, indent=1)
        print()
        return 0
    _print_validation(tr, rows)
    return 0


def _print_validation(tr: Trace, rows: list[LiveValidation]) -> None:
    rec = tr.fault_counts()
    print(f"recorded at 4K: anon {rec['anon']}, total {rec['total']} (file {rec['file']})")
    table = [[r.setting, str(r.predicted_anon), str(r.live_anon), f"{r.anon_error:+d}",
              str(r.predicted_total), str(r.live_total), f"{r.total_error:+d}",
              f"{r.live_file} (rec {r.recorded_file})",
              "-" if r.live_rusage_minflt is None else str(r.live_rusage_minflt)] for r in rows]
    print(format_table(table, ["setting", "pred anon", "live anon", "err", "pred total",
                               "live total", "err", "live file faults", "live rusage minflt"]))
    if rows and rows[0].baseline_rusage_minflt is not None:
        print(f"(rusage minflt at the recording settings: {rows[0].baseline_rusage_minflt}; it also "
              f"counts the forked child's faults before execve and GUP faults, which the "
              f"exception tracepoints do not see)")
