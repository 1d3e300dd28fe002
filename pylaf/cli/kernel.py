"""``pylaf kernel show`` and ``pylaf kernel check``.

``show``   live THP settings, per-size mTHP stats and the vmstat ``thp_*``
           counters of the running kernel.
``check``  the validation suite of :mod:`pylaf.live.check`: every program
           on the live kernel and in the emulator, compared.  By default it
           runs with the machine's settings as they are and changes nothing.
           ``--apply-settings`` (explicit opt-in) also runs the setting
           groups, each applied temporarily through
           :func:`pylaf.kernel.thp_settings`, which restores every knob on
           every exit path (exceptions, Ctrl-C, SIGTERM).  Exit status: 0 all
           agree, 1 some disagreement, 2 the check cannot run here.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("kernel", help="live-kernel settings, counters and validation",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="kernel_cmd", metavar="{show,check}")
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
                   help="run only these programs; see --list")
    c.add_argument("--retries", type=int, default=10,
                   help="extra kernel runs when system-wide counters disagree (default 10)")
    c.add_argument("--json", metavar="FILE", help="also write every result as JSON")
    c.add_argument("--list", action="store_true", help="list programs and setting groups")
    c.add_argument("-v", "--verbose", action="store_true", help="print every note")
    c.set_defaults(func=cmd_check)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


# --------------------------------------------------------------------------


def cmd_show(args: argparse.Namespace) -> int:
    from pylaf.live import host as K
    from pylaf.render import format_table

    if not K.THP_DIR.is_dir():
        print(f"pylaf kernel show: {K.THP_DIR} does not exist (kernel without THP?)", file=sys.stderr)
        return 2
    s = K.read_thp_settings()
    stats = K.read_mthp_stats()
    vm = K.read_vmstat_thp()
    if args.json:
        json.dump({"settings": s.raw(), "mthp": {f"{kb}kB": v for kb, v in stats.items()},
                   "vmstat": vm}, sys.stdout, indent=1)
        print()
        return 0
    import platform

    print(f"kernel {platform.release()}  ({K.THP_DIR})")
    glob = [f"enabled={s.enabled}", f"defrag={s.defrag}", f"use_zero_page={s.use_zero_page}"]
    glob += [f"{k}={v}" for k, v in s.extra.items()]
    print("global: " + "  ".join(glob))
    names = list(K.ANON_STATS)
    if not args.all_stats:
        names = [n for n in names if any(stats[kb].get(n, 0) for kb in stats)] or names[:2]
    rows = []
    for kb in sorted(stats):
        rows.append([f"{kb}kB", s.per_size.get(kb, "?")] +
                    [str(stats[kb].get(n, "-")) for n in names])
    print(format_table(rows, ["size", "enabled"] + names))
    print("vmstat: " + "  ".join(f"{k}={v}" for k, v in vm.items() if v or args.all_stats))
    return 0


def _want_settings(args: argparse.Namespace) -> bool:
    return bool(args.apply_settings or [g for g in args.group if g != "current"])


def cmd_check(args: argparse.Namespace) -> int:
    from pylaf.live import check as KC
    from pylaf.live import host as K

    if args.list:
        print("programs:")
        for p in KC.PROGRAMS:
            print(f"  {p.name:26} {p.description}")
        print("setting groups (--apply-settings):")
        print(f"  {'current':26} {KC.DEFAULT_GROUP.description}")
        for g in KC.GROUPS:
            print(f"  {g.name:26} {g.description}")
        return 0
    why = KC.kernel_check_available()
    if why:
        print(f"pylaf kernel check: cannot run here: {why}", file=sys.stderr)
        return 2
    for n in args.program:
        if n not in KC.PROGRAMS_BY_NAME:
            print(f"pylaf kernel check: unknown program {n!r} (see --list)", file=sys.stderr)
            return 2
    for n in args.group:
        if n != "current" and n not in KC.GROUPS_BY_NAME:
            print(f"pylaf kernel check: unknown setting group {n!r} (see --list)", file=sys.stderr)
            return 2
    groups: list[KC.SettingGroup] = []
    if not args.group or "current" in args.group:
        groups.append(KC.DEFAULT_GROUP)
    if _want_settings(args):
        groups += [g for g in KC.GROUPS if not args.group or g.name in args.group]
    programs: Optional[list[str]] = args.program or None

    original = K.read_thp_settings()
    results: list[KC.GroupResult] = []

    def progress(msg: str) -> None:
        if sys.stderr.isatty():
            print(f"\r\033[K{msg}", end="", file=sys.stderr, flush=True)

    try:
        for g in groups:
            r = KC.run_group(g, programs, retries=args.retries, progress=progress)
            if sys.stderr.isatty():
                print("\r\033[K", end="", file=sys.stderr)
            results.append(r)
            print(KC.format_group(r, verbose=args.verbose))
            print()
            sys.stdout.flush()
    finally:
        if _want_settings(args):
            now = K.read_thp_settings().raw()
            if now == original.raw():
                print("THP settings restored and verified: " +
                      " ".join(f"{k}={v}" for k, v in original.raw().items()
                               if not k.startswith("hugepages-") or v != "never") +
                      " (other sizes never)", file=sys.stderr if not results else sys.stdout)
            else:
                diff = {k: (now.get(k), v) for k, v in original.raw().items() if now.get(k) != v}
                print(f"WARNING: THP settings differ from the original: {diff}", file=sys.stderr)
    print(KC.summary_line(results))
    if args.json:
        path = Path(args.json)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(KC.results_as_dict(results), indent=1, default=str))
        tmp.replace(path)
    return 0 if all(r.ok for r in results) else 1
