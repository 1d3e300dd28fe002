"""``pylaf replay TRACE... [--policy SPEC ...] [--format F] [--output FILE] [--plot FILE] [--info]
[--validate-live SIZES ...]``

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
from typing import Any, Optional

from pylaf.cli.output import add_output_args, emit_rows
from pylaf.cli.plots import PlotUnavailable, plot_series, require_pyplot
from pylaf.errors import HostUnavailable, LafError
from pylaf.experiments.compare import CompareResult, compare
from pylaf.live.kprog import build_helper
from pylaf.live.sysfs import read_thp_settings
from pylaf.render import compare_table, console, format_table, legend, policy_names, print_table
from pylaf.results import Row, rows_of, series_rows
from pylaf.trace.format import Trace, TraceError, load_trace
from pylaf.trace.record import record_unavailable
from pylaf.trace.replay import ReplayReport, TraceWorkload
from pylaf.trace.validate import MAX_LIVE_RUNS, TOLERANCE, LiveValidation, validate_live

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
    p.add_argument("trace", nargs="+", help="trace file(s) (from pylaf record)")
    p.add_argument("--policy", "-p", action="append", metavar="SPEC",
                   help="policy spec, repeatable (see pylaf compare --help)")
    p.add_argument("--ram", default="8G", help="emulated RAM (default 8G)")
    add_output_args(p)
    p.add_argument("--sample-every", type=int, metavar="N",
                   help="sample RSS and folios every N faults (default with --plot: 256)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw RSS and partially mapped folios over the faults (needs matplotlib)")
    p.add_argument("--info", action="store_true", help="only describe the trace")
    p.add_argument("--validate-live", action="append", metavar="SIZES", default=[],
                   help="re-run the trace's command on the live kernel with these mTHP sizes "
                        "'always' (e.g. 64K, 16K, 16K-64K; every other size never, 2M inherit) "
                        "and compare with the prediction; needs root, THP knobs are restored "
                        "afterwards (repeatable)")
    p.add_argument("--live-runs", type=int, default=3, metavar="N",
                   help="with --validate-live: live runs per setting (default 3, at most "
                        f"{MAX_LIVE_RUNS}); the prediction is compared with their median and "
                        "range, and each run's own recording is replayed as the model check")
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


def _load_all(paths: list[str]) -> list[Trace]:
    return [load_trace(p) for p in paths]


def cmd_replay(args: argparse.Namespace) -> int:
    try:
        traces = _load_all(args.trace)
    except TraceError as exc:
        return _error(exc, 1)
    if args.info:
        for tr in traces:
            _print_info(tr)
        return 0
    if args.validate_live:
        return _validate_args(traces, args)
    every = args.sample_every or (256 if args.plot else None)
    if every is not None and every < 1:
        return _error(f"invalid --sample-every {every}: must be >= 1", 2)
    if args.plot:
        try:
            require_pyplot()
        except PlotUnavailable as exc:
            return _error(exc, 2)
    policies = args.policy or list(DEFAULT_REPLAY_POLICIES)
    wls = [TraceWorkload(tr) for tr in traces]
    try:
        results = compare(wls, policies, ram=args.ram, sample_every=every)
    except TraceError as exc:
        return _error(exc, 1)
    except (LafError, ValueError) as exc:
        return _error(exc, 2)
    status = _emit(args, traces, wls, results)
    if status == 0 and args.plot:
        plot_series(results, args.plot, "replay of " + ", ".join(tr.name for tr in traces))
        print(f"wrote {args.plot}", file=sys.stderr)
    return status


def _replay_rows(traces: list[Trace], results: list[CompareResult]) -> list[Row]:
    """Schema rows, plus the trace's recorded faults and the predicted total."""
    other = {}
    for tr in traces:
        counts = tr.fault_counts()
        other[tr.name] = (counts, counts["total"] - counts["anon"])
    rows = rows_of(results, "replay")
    for row in rows:
        counts, n_other = other[row["workload"]]
        row["recorded_faults"] = counts["total"]
        row["recorded_anon_faults"] = counts["anon"]
        row["predicted_total_faults"] = row["faults"] + n_other
    return rows


def _emit(args: argparse.Namespace, traces: list[Trace], wls: list[TraceWorkload],
          results: list[CompareResult]) -> int:
    meta = {"traces": [{"path": tr.path, "header": dict(tr.header),
                        "recorded_faults": tr.fault_counts()} for tr in traces],
            "replay": [wl.report.__dict__ if wl.report else None for wl in wls]}
    status = emit_rows(args, "pylaf replay", _replay_rows(traces, results), series_rows(results),
                       **json.loads(json.dumps(meta, default=str)))
    if status or args.format != "table":
        return status
    for tr, wl in zip(traces, wls, strict=True):
        _print_results(tr, [r for r in results if r.workload == wl.name], wl.report)
    return 0


def _print_results(tr: Trace, results: list[CompareResult], rep: Optional[ReplayReport]) -> None:
    counts = tr.fault_counts()
    other = counts["total"] - counts["anon"]
    print(tr.summary())
    con = console()
    names = policy_names([r.policy for r in results])
    print_table(con, compare_table(results, title=f"replay of {tr.name}", width=con.width,
                                   names=names))
    if legend(names):
        print("policies:\n" + legend(names))
    print()
    print(f"recorded: {counts['total']} faults = {counts['anon']} anonymous (replayed) + "
          f"{other} other (file {counts['file']}, shared {counts['shared']}, special "
          f"{counts['special']}, no VMA {counts['no-vma']}: not replayed, assumed unchanged)")
    print(format_table([[names[r.policy], str(r.faults), str(r.faults + other),
                         " ".join(f"{k}:{v}" for k, v in r.folio_histogram.items() if v)]
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


def _validate_args(traces: list[Trace], args: argparse.Namespace) -> int:
    if len(traces) != 1:
        return _error("--validate-live takes one trace", 2)
    if not 1 <= args.live_runs <= MAX_LIVE_RUNS:
        return _error(f"invalid --live-runs {args.live_runs}: must be 1..{MAX_LIVE_RUNS}", 2)
    return _validate(traces[0], args)


def _validate(tr: Trace, args: argparse.Namespace) -> int:
    why = _validate_unavailable()
    if why:
        return _cannot_run(why)
    original = read_thp_settings().raw()
    print(tr.summary())
    try:
        rows = validate_live(tr, args.validate_live, ram=args.ram, live_runs=args.live_runs)
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
    if args.format == "json":
        json.dump([r.as_dict() for r in rows], sys.stdout, indent=1)
        print()
        return 0
    _print_validation(tr, rows)
    return 0


def _model_check(r: LiveValidation) -> str:
    if r.model_exact:
        return "exact"
    return "/".join(f"{run.model_error:+d}" for run in r.runs)


def _print_validation(tr: Trace, rows: list[LiveValidation]) -> None:
    rec = tr.fault_counts()
    print(f"recorded at 4K: anon {rec['anon']}, total {rec['total']} (file {rec['file']})")
    table = [[r.setting, str(r.predicted_anon), str(r.live_anon), f"{r.live_min}..{r.live_max}",
              f"{r.anon_error:+d}", f"{r.anon_error_pct:+.2f}%", r.verdict, _model_check(r),
              str(r.predicted_total), str(r.live_total), f"{r.total_error:+d}",
              f"{r.live_file} (rec {r.recorded_file})",
              "-" if r.live_rusage_minflt is None else str(r.live_rusage_minflt)] for r in rows]
    print(format_table(table, ["setting", "pred anon", "live anon", "live range", "err", "err %",
                               "verdict", "model check", "pred total", "live total", "err",
                               "live file faults", "live rusage minflt"]))
    n = len(rows[0].runs) if rows else 0
    print(f"(live = median of {n} run(s); verdict: agrees = within {TOLERANCE:.0%} of it, within "
          f"live spread = outside that but inside the runs' range; model check = each live "
          f"run's own recording replayed at its setting minus its live count, exact when the "
          f"emulator gives back every run)")
    if rows and rows[0].baseline_rusage_minflt is not None:
        print(f"(rusage minflt at the recording settings: {rows[0].baseline_rusage_minflt}; it also "
              f"counts the forked child's faults before execve and GUP faults, which the "
              f"exception tracepoints do not see)")
