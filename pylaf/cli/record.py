"""``pylaf record -o TRACE [--aslr] [--thp-off] [--name N] [--description D] -- CMD [ARGS...]``

Runs CMD under ``perf record`` (page-fault and mmap-family tracepoints, see
:mod:`pylaf.trace.record`) with ASLR off and writes a compact trace.

Exit status: CMD's own (128 + signal if it was killed), so ``pylaf record --
false`` exits 1; the trace of a command that ran is kept whatever its status
(its faults happened).  A command that could not be started
(``-- no_such_cmd``) leaves no trace and exits 127 (126: found but not
executable), as a shell does.  2: the recording cannot run here (perf
missing or refused, not root, no C compiler) or a usage error, one line on
stderr; 1: any other recording failure.
"""
from __future__ import annotations

__all__ = ["cmd_record", "register"]

import argparse
import sys
from typing import Any

from pylaf.errors import HostUnavailable
from pylaf.trace.format import TraceError
from pylaf.trace.record import SYSCALLS, TRACEPOINTS, CommandNotStarted, record

#: what perf records, from the lists pylaf.trace.record passes to perf
EVENTS_TEXT = (", ".join(TRACEPOINTS) + ", syscalls:sys_enter/exit_{" + ",".join(SYSCALLS) + "}")


def register(subparsers: Any) -> None:
    r = subparsers.add_parser(
        "record", help="record a command's page faults and mmap activity with perf",
        description=f"Run CMD under perf record ({EVENTS_TEXT}) with ASLR off, and write a "
                    "compact trace: sched_process_fork of a child without CLONE_VM starts a "
                    "child address space (a thread or a vfork child shares its parent's), "
                    "sched_process_exec replaces one, and sched_process_exit of a process's "
                    "last thread (group_dead) ends it, so forking programs replay as several "
                    "processes. Record with mTHP off (the machine default) so every first "
                    "touch faults. Exit status: CMD's (the trace is kept); 127 and no trace "
                    "if CMD could not be started; 2 if recording cannot run here.",
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


def cmd_record(args: argparse.Namespace) -> int:
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
    except HostUnavailable as exc:
        print(f"pylaf record: cannot run here: {_first_line(exc)}", file=sys.stderr)
        return 2
    except CommandNotStarted as exc:
        print(f"pylaf record: error: {exc}", file=sys.stderr)
        return exc.status
    except TraceError as exc:
        print(f"pylaf record: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pylaf record: interrupted; no trace written", file=sys.stderr)
        return 130
    print(tr.summary())
    st = tr.header.get("exit_status")
    if isinstance(st, int) and st != 0:
        print(f"pylaf record: note: the command exited with status {st} (trace kept; "
              f"pylaf record exits with it)", file=sys.stderr)
        return st if 0 < st <= 255 else 1
    return 0


def _first_line(exc: BaseException) -> str:
    """The first line of *exc*'s message (the missing capability; details follow it)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
