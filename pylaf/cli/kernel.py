"""``pylaf kernel show``, ``pylaf kernel check`` and ``pylaf kernel run``:
the live kernel of this machine (:mod:`pylaf.live`).

``show``   live THP settings, per-size mTHP stats and the vmstat ``thp_*``
           counters of the running kernel.
``check``  the validation suite of :mod:`pylaf.live.check`: every program
           on the live kernel and in the emulator, compared.  By default it
           runs with the machine's settings as they are and changes nothing.
           ``--apply-settings`` (explicit opt-in) also runs the setting
           groups, each applied temporarily through
           :func:`pylaf.live.sysfs.thp_settings`, which restores every knob on
           every exit path (exceptions, Ctrl-C, SIGTERM).  Without
           ``--program`` it also runs the vm.max_map_count probe
           (:mod:`pylaf.live.map_count`).  Exit status: 0 all
           agree, 1 some disagreement, 2 the check cannot run here (one line
           on stderr names the missing capability).
``run``    one access program (laf_kprog's op language) on the live kernel,
           optionally under temporary knob values; prints laf_kprog's JSON.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from pylaf.live.check import GroupResult, live_check_unavailable, run_group
from pylaf.live.kprog import HelperUnavailable, run_kprog_raw
from pylaf.live.map_count import check_map_count
from pylaf.live.programs import (
    DEFAULT_GROUP,
    GROUPS,
    GROUPS_BY_NAME,
    PROGRAMS,
    PROGRAMS_BY_NAME,
    SettingGroup,
)
from pylaf.live.report import format_group, results_as_dict, summary_line
from pylaf.live.sysfs import (
    ANON_STATS,
    THP_DIR,
    ThpSettings,
    read_mthp_stats,
    read_thp_settings,
    read_vmstat_thp,
    thp_settings,
)
from pylaf.render import format_table


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("kernel", help="live-kernel settings, counters and validation",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="kernel_cmd", metavar="{show,check,run}")
    s = sub.add_parser("show", help="print live THP settings, mTHP stats and vmstat thp_*")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--all-stats", action="store_true", help="every per-size stat, zero or not")
    s.set_defaults(func=cmd_show)
    c = sub.add_parser("check", help="run the access programs on the kernel and in the emulator",
                       description="Run the deterministic access programs on the live kernel "
                                   "and in the emulator (VMAs at the kernel's addresses) and "
                                   "compare faults, per-size counters, RSS and folio layouts.")
    c.add_argument("--apply-settings", action="store_true",
                   help="also run the setting groups (4K-only, 16K/64K always, mixed, PMD "
                        "madvise, NOHUGEPAGE/prctl, anon_beside_full=1); every knob is "
                        "restored afterwards")
    c.add_argument("--group", action="append", default=[], metavar="NAME",
                   help="run only these setting groups (implies --apply-settings for groups "
                        "other than 'current'); see --list")
    c.add_argument("--program", action="append", default=[], metavar="NAME",
                   help="run only these programs (and skip the max_map_count probe); see --list")
    c.add_argument("--only", action="append", default=[], metavar="GLOB",
                   help="run only the programs whose name matches (fnmatch), e.g. 'fork_*'")
    c.add_argument("--retries", type=int, default=10,
                   help="extra kernel runs when system-wide counters disagree (default 10)")
    c.add_argument("--json", metavar="FILE", help="also write every result as JSON")
    c.add_argument("--list", action="store_true", help="list programs and setting groups")
    c.add_argument("-v", "--verbose", action="store_true", help="print every note")
    c.set_defaults(func=cmd_check)
    r = sub.add_parser("run", help="run one access program on the live kernel (JSON out)")
    r.add_argument("program", help="program file (laf_kprog op language), - for stdin")
    r.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                   help="e.g. enabled=always, hugepages-64kB/enabled=always, "
                        "anon_beside_full=1 (restored afterwards)")
    r.set_defaults(func=cmd_run)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _fail(cmd: str, why: str) -> int:
    print(f"pylaf kernel {cmd}: {why}", file=sys.stderr)
    return 2


# --------------------------------------------------------------------------
# show


def _print_show(s: ThpSettings, stats: dict[int, dict[str, int]], vm: dict[str, int],
                all_stats: bool) -> None:
    print(f"kernel {platform.release()}  ({THP_DIR})")
    glob = [f"enabled={s.enabled}", f"defrag={s.defrag}", f"use_zero_page={s.use_zero_page}"]
    glob += [f"{k}={v}" for k, v in s.extra.items()]
    print("global: " + "  ".join(glob))
    names = list(ANON_STATS)
    if not all_stats:
        names = [n for n in names if any(stats[kb].get(n, 0) for kb in stats)] or names[:2]
    rows = [[f"{kb}kB", s.per_size.get(kb, "?")] + [str(stats[kb].get(n, "-")) for n in names]
            for kb in sorted(stats)]
    print(format_table(rows, ["size", "enabled", *names]))
    print("vmstat: " + "  ".join(f"{k}={v}" for k, v in vm.items() if v or all_stats))


def cmd_show(args: argparse.Namespace) -> int:
    if not THP_DIR.is_dir():
        return _fail("show", f"{THP_DIR} does not exist (kernel without THP?)")
    s = read_thp_settings()
    stats = read_mthp_stats()
    vm = read_vmstat_thp()
    if args.json:
        json.dump({"settings": s.sysfs_values(), "mthp": {f"{kb}kB": v for kb, v in stats.items()},
                   "vmstat": vm}, sys.stdout, indent=1)
        print()
    else:
        _print_show(s, stats, vm, args.all_stats)
    return 0


# --------------------------------------------------------------------------
# check


def _want_settings(args: argparse.Namespace) -> bool:
    return bool(args.apply_settings or [g for g in args.group if g != "current"])


def _print_list() -> int:
    print("programs:")
    for p in PROGRAMS:
        print(f"  {p.name:26} {p.description}")
    print("setting groups (--apply-settings):")
    print(f"  {'current':26} {DEFAULT_GROUP.description}")
    for g in GROUPS:
        print(f"  {g.name:26} {g.description}")
    return 0


def _argument_error(args: argparse.Namespace) -> Optional[str]:
    for n in args.program:
        if n not in PROGRAMS_BY_NAME:
            return f"unknown program {n!r} (see --list)"
    for g in args.only:
        if not any(fnmatch.fnmatchcase(p.name, g) for p in PROGRAMS):
            return f"no program matches {g!r} (see --list)"
    for n in args.group:
        if n != "current" and n not in GROUPS_BY_NAME:
            return f"unknown setting group {n!r} (see --list)"
    return None


def _groups(args: argparse.Namespace) -> list[SettingGroup]:
    groups: list[SettingGroup] = []
    if not args.group or "current" in args.group:
        groups.append(DEFAULT_GROUP)
    if _want_settings(args):
        groups += [g for g in GROUPS if not args.group or g.name in args.group]
    return groups


def _progress(msg: str) -> None:
    if sys.stderr.isatty():
        print(f"\r\033[K{msg}", end="", file=sys.stderr, flush=True)


def _report_restored(original: ThpSettings, any_results: bool) -> None:
    now = read_thp_settings().sysfs_values()
    before = original.sysfs_values()
    if now == before:
        shown = " ".join(f"{k}={v}" for k, v in before.items()
                         if not k.startswith("hugepages-") or v != "never")
        print(f"THP settings restored and verified: {shown} (other sizes never)",
              file=sys.stdout if any_results else sys.stderr)
    else:
        diff = {k: (now.get(k), v) for k, v in before.items() if now.get(k) != v}
        print(f"WARNING: THP settings differ from the original: {diff}", file=sys.stderr)


def _run_groups(args: argparse.Namespace, groups: Sequence[SettingGroup]) -> list[GroupResult]:
    programs: Optional[list[str]] = args.program or None
    if args.only:
        programs = [p.name for p in PROGRAMS
                    if (p.name in (args.program or [p.name])
                        and any(fnmatch.fnmatchcase(p.name, g) for g in args.only))]
    original = read_thp_settings()
    results: list[GroupResult] = []
    try:
        for g in groups:
            r = run_group(g, programs, retries=args.retries, progress=_progress)
            if sys.stderr.isatty():
                print("\r\033[K", end="", file=sys.stderr)
            results.append(r)
            print(format_group(r, verbose=args.verbose))
            print()
            sys.stdout.flush()
    finally:
        if _want_settings(args):
            _report_restored(original, bool(results))
    return results


def _write_json(path: Path, results: Sequence[GroupResult]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results_as_dict(results), indent=1, default=str))
    tmp.replace(path)


def cmd_check(args: argparse.Namespace) -> int:
    if args.list:
        return _print_list()
    why = live_check_unavailable()
    if why:
        return _fail("check", f"cannot run here: {why}")
    bad = _argument_error(args)
    if bad:
        return _fail("check", bad)
    results = _run_groups(args, _groups(args))
    map_count_ok = True
    if not args.program:
        map_count_ok, text = check_map_count()
        print(text)
    print(summary_line(results))
    if args.json:
        _write_json(Path(args.json), results)
    return 0 if map_count_ok and all(r.ok for r in results) else 1


# --------------------------------------------------------------------------
# run


def cmd_run(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.program == "-" else Path(args.program).read_text()
    knobs = dict(kv.split("=", 1) for kv in args.set)
    try:
        with thp_settings(extra=knobs):
            data = run_kprog_raw(text)
    except HelperUnavailable as exc:
        return _fail("run", " ".join(str(exc).split()))
    json.dump(data, sys.stdout)
    print()
    return 0
