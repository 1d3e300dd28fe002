"""``pylaf`` command line.

Each subcommand lives in its own module exposing ``register(subparsers)``,
which adds an argparse parser and sets ``func`` to the function that runs it
(``func(args) -> int``).  Modules are imported lazily so a missing optional
dependency (matplotlib, perf) only affects its own subcommand.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

#: subcommand modules, in --help order
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "pylaf.compare_cmd",   # pylaf compare
    "pylaf.bench_cmd",     # pylaf bench
    "pylaf.kernel_cmd",    # pylaf kernel show|check
    "pylaf.trace_cmd",     # pylaf record / pylaf replay
)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="pylaf",
        description="Emulate the Linux anonymous page-fault path with large folios "
                    "(LAF / multi-size THP) and compare fault-path policies.",
    )
    parser.add_argument("--version", action="version", version=f"pylaf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # subcommand not present in this tree
            raise
        mod.register(sub)
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
