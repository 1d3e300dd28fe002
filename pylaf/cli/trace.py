"""``pylaf record`` and ``pylaf replay``.

    pylaf record -o TRACE [--aslr] [--thp-off] [--name N] [--description D] -- CMD [ARGS...]
    pylaf replay TRACE [--policy SPEC ...] [--json] [--info]

``record`` runs CMD under ``perf record`` (page-fault and mmap-family
tracepoints, see :mod:`pylaf.trace`) with ASLR off and writes a compact
trace.  ``replay`` replays its anonymous faults through the emulator under
each policy and prints the ``pylaf compare`` table plus the faults that were
not replayed (file-backed, shared, vdso, no VMA), so that "predicted total"
= replayed anonymous faults + the recorded non-anonymous ones.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pylaf.render import compare_table, console, format_table, print_table


def register(subparsers: Any) -> None:
    r = subparsers.add_parser(
        "record", help="record a command's page faults and mmap activity with perf",
        description="Run CMD under perf record (exceptions:page_fault_user/kernel, "
                    "syscalls:sys_enter/exit_{mmap,munmap,mprotect,madvise,brk,mremap,execve}, "
                    "sched:sched_process_exec/fork) with ASLR off, and write a compact "
                    "trace. Record with mTHP off (the machine default) so every first "
                    "touch faults.",
        usage="pylaf record -o TRACE [options] -- CMD [ARGS...]")
    r.add_argument("-o", "--output", required=True, metavar="TRACE", help="trace file to write")
    r.add_argument("--aslr", action="store_true",
                   help="keep address-space randomisation (default: off, like setarch -R)")
    r.add_argument("--thp-off", action="store_true",
                   help="set every THP size to never (and global never) while recording; "
                        "restored afterwards")
    r.add_argument("--name", help="workload name stored in the trace (default: file stem)")
    r.add_argument("--description", help="description stored in the trace (default: the command)")
    r.add_argument("--buffer", default="64M", help="perf ring-buffer size per CPU (default 64M)")
    r.add_argument("--keep-perf-data", metavar="DIR", help="also keep perf.data and the tracee log")
    r.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    r.set_defaults(func=cmd_record)

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


DEFAULT_REPLAY_POLICIES = (
    "order-0",
    "kernel",
    "upstream/enabled=madvise/16K=always",
    "upstream/enabled=madvise/64K=always",
    "upstream/enabled=madvise/thp_anon=16K-64K:always;2M:inherit",
)


def cmd_record(args: argparse.Namespace) -> int:
    from pylaf.trace import TraceError, record

    cmd = list(args.command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        print("pylaf record: error: no command given (usage: pylaf record -o TRACE -- CMD ...)",
              file=sys.stderr)
        return 2
    try:
        tr = record(cmd, args.output, no_aslr=not args.aslr, thp_off=args.thp_off,
                    keep_perf_data=args.keep_perf_data, name=args.name,
                    description=args.description, buffer=args.buffer, log=sys.stderr)
    except TraceError as exc:
        print(f"pylaf record: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pylaf record: interrupted; no trace written", file=sys.stderr)
        return 130
    print(tr.summary())
    st = tr.header.get("exit_status")
    if st not in (0, None):
        print(f"pylaf record: note: the command exited with status {st}", file=sys.stderr)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from pylaf.trace import TraceError, TraceWorkload, load_trace

    try:
        tr = load_trace(args.trace)
    except TraceError as exc:
        print(f"pylaf replay: error: {exc}", file=sys.stderr)
        return 1
    if args.info:
        print(tr.summary())
        for p in tr.processes:
            print(f"  mm {p['mm']}: pid {p['pid']} {p.get('comm', '')} ({p.get('start')}"
                  f"{', parent mm %s' % p['parent'] if p.get('parent') is not None else ''})"
                  f" faults={p.get('faults', 0)} anon={p.get('anon_faults', 0)} {p.get('exe', '')}")
        return 0
    if args.validate_live:
        return _validate(tr, args)
    policies = args.policy or list(DEFAULT_REPLAY_POLICIES)
    wl = TraceWorkload(tr)
    counts = tr.fault_counts()
    other = counts["total"] - counts["anon"]
    try:
        from pylaf.experiments.compare import compare
        results = compare([wl], policies, ram=args.ram)
    except (ValueError, TraceError) as exc:
        print(f"pylaf replay: error: {exc}", file=sys.stderr)
        return 2
    rep = wl.report
    rows = []
    for r in results:
        rows.append({"policy": r.policy, "anon_faults": r.faults,
                     "predicted_total_faults": r.faults + other,
                     "rss_bytes": r.rss_bytes, "bloat_ratio": r.bloat_ratio,
                     "anon_fault_alloc": r.anon_fault_alloc,
                     "anon_fault_fallback": r.anon_fault_fallback,
                     "folio_histogram": r.folio_histogram, "error": r.error})
    if args.json:
        json.dump({"trace": tr.path, "header": {k: v for k, v in tr.header.items()},
                   "recorded_faults": counts, "results": rows,
                   "replay": rep.__dict__ if rep else None}, sys.stdout, indent=1, default=str)
        print()
        return 0
    print(tr.summary())
    print_table(console(), compare_table(results, title=f"replay of {tr.name}"))
    print()
    print(f"recorded: {counts['total']} faults = {counts['anon']} anonymous (replayed) + "
          f"{other} other (file {counts['file']}, shared {counts['shared']}, special "
          f"{counts['special']}, no VMA {counts['no-vma']}: not replayed, assumed unchanged)")
    print(format_table([[x["policy"], str(x["anon_faults"]), str(x["predicted_total_faults"]),
                         " ".join(f"{k}:{v}" for k, v in x["folio_histogram"].items())]
                        for x in rows],
                       ["policy", "anon faults", "predicted total", "folios mapped"]))
    if rep is not None and (rep.errors or rep.sigsegv):
        print(f"replay problems: sigsegv={rep.sigsegv} " +
              " ".join(f"{k}={v}" for k, v in rep.errors.items()))
    return 0


def _validate(tr: Any, args: argparse.Namespace) -> int:
    import os

    from pylaf.live.host import read_thp_settings
    from pylaf.render import format_table
    from pylaf.trace import TraceError, validate_live

    if os.geteuid() != 0:
        print("pylaf replay: error: --validate-live needs root (it sets THP knobs and records)",
              file=sys.stderr)
        return 2
    original = read_thp_settings().raw()
    print(tr.summary())
    try:
        rows = validate_live(tr, args.validate_live, ram=args.ram)
    except TraceError as exc:
        print(f"pylaf replay: error: {exc}", file=sys.stderr)
        return 1
    finally:
        ok = read_thp_settings().raw() == original
        print("THP settings restored and verified" if ok else
              "WARNING: THP settings differ from before the validation", file=sys.stderr)
    if args.json:
        json.dump([r.__dict__ for r in rows], sys.stdout, indent=1)
        print()
        return 0
    rec = tr.fault_counts()
    print(f"recorded at 4K: anon {rec['anon']}, total {rec['total']} (file {rec['file']})")
    table = []
    for r in rows:
        table.append([r.setting, str(r.predicted_anon), str(r.live_anon), f"{r.anon_error:+d}",
                      str(r.predicted_total), str(r.live_total), f"{r.total_error:+d}",
                      f"{r.live_file} (rec {r.recorded_file})",
                      "-" if r.live_rusage_minflt is None else str(r.live_rusage_minflt)])
    print(format_table(table, ["setting", "pred anon", "live anon", "err", "pred total",
                               "live total", "err", "live file faults", "live rusage minflt"]))
    if rows and rows[0].baseline_rusage_minflt is not None:
        print(f"(rusage minflt at the recording settings: {rows[0].baseline_rusage_minflt}; it also "
              f"counts the forked child's faults before execve and GUP faults, which the "
              f"exception tracepoints do not see)")
    return 0
