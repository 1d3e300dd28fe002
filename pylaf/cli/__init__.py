"""``pylaf`` command line.

Each subcommand lives in its own module exposing ``register(subparsers)``,
which adds an argparse parser and sets ``func`` to the function that runs it
(``func(args) -> int``).  A missing module is an error, not a missing
subcommand; optional dependencies (matplotlib, perf) are imported by the
subcommand that needs them, when it runs.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Optional

from pylaf import __version__

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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
