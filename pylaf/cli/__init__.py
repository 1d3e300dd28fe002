"""``pylaf`` command line.

Each subcommand lives in its own module exposing ``register(subparsers)``,
which adds an argparse parser and sets ``func`` to the function that runs it
(``func(args) -> int``).  A missing module is an error, not a missing
subcommand; optional dependencies (matplotlib, perf) are imported by the
subcommand that needs them, when it runs.

Exit status, for every subcommand: 0 success; 1 a real disagreement or
failure (``kernel check`` found a difference, a trace is corrupt); 2 a usage
error or a command that cannot run here (no root, no perf, no C compiler, no
``/proc/kpageflags``, the THP-settings lock not free in time: one line on
stderr names what is missing, see :class:`pylaf.errors.HostUnavailable`);
``pylaf record``: the recorded command's.  141 (128 + SIGPIPE, what a native
tool killed by SIGPIPE reports): the reader of stdout went away
(``pylaf replay X | head``); the rest of the output is dropped quietly.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Optional

from pylaf import __version__
from pylaf.errors import HostUnavailable
from pylaf.live.sysfs import LOCK_TIMEOUT_ENV

#: exit status when stdout's reader closed the pipe (128 + SIGPIPE)
EXIT_BROKEN_PIPE = 141

#: subcommand modules, in --help order
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "pylaf.cli.compare",   # pylaf compare
    "pylaf.cli.bench",     # pylaf bench
    "pylaf.cli.kernel",    # pylaf kernel show|check
    "pylaf.cli.record",    # pylaf record
    "pylaf.cli.replay",    # pylaf replay
    "pylaf.cli.sweep",     # pylaf sweep
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pylaf",
        description="Emulate the Linux anonymous page-fault path with large folios "
                    "(LAF / multi-size THP) and compare fault-path policies.",
    )
    parser.add_argument("--version", action="version", version=f"pylaf {__version__}")
    parser.add_argument("--lock-timeout", type=float, metavar="SECONDS",
                        help="wait at most this long for the THP-settings lock held by another "
                             f"pylaf process, then exit 2 (default ${LOCK_TIMEOUT_ENV} or no limit)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush of what
    is still buffered does not raise BrokenPipeError again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.lock_timeout is not None:
        os.environ[LOCK_TIMEOUT_ENV] = str(args.lock_timeout)
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()          # a closed pipe shows here, not at interpreter exit
        return status
    except HostUnavailable as exc:
        what = str(exc).strip().splitlines()
        print(f"pylaf {args.command}: cannot run here: {what[0] if what else type(exc).__name__}",
              file=sys.stderr)
        return 2
    except BrokenPipeError:
        _drop_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
