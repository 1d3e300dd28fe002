"""Output options shared by ``pylaf compare``, ``replay`` and ``sweep``:
``--format table|json|csv`` (``--json`` = ``--format json``) on stdout, and
``--output FILE`` (.parquet, .csv or .json by its suffix) for the rows of
the schema in :mod:`pylaf.results`."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pylaf.results import FORMATS, OUTPUT_SUFFIXES, Row, format_rows, write_rows


def output_file_arg(text: str) -> str:
    """argparse type of ``--output``: a file name with a known suffix."""
    if Path(text).suffix not in OUTPUT_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"invalid output file {text!r}: expected a name ending in {', '.join(OUTPUT_SUFFIXES)}")
    return text


def add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="stdout: a table (default), or the result rows as JSON or CSV "
                        "(schema: pylaf.results)")
    p.add_argument("--json", dest="format", action="store_const", const="json",
                   help="same as --format json")
    p.add_argument("--output", "-o", type=output_file_arg, metavar="FILE",
                   help="also write the result rows to FILE: .parquet (needs pyarrow), .csv or .json")


def emit_rows(args: argparse.Namespace, prog: str, rows: Sequence[Row],
              series: Sequence[Row] = (), **meta: Any) -> int:
    """Write ``--output`` (and its ``.series`` companion when there are samples),
    print JSON/CSV when asked; 2 when an optional writer is missing."""
    if args.output:
        try:
            write_rows(rows, args.output, **meta)
            if series:
                out = Path(args.output)
                write_rows(series, out.with_name(f"{out.stem}.series{out.suffix}"), **meta)
        except ImportError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 2
    if args.format in ("json", "csv"):
        text = format_rows(rows, args.format, **meta, **({"series": list(series)} if series else {}))
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


__all__ = ["add_output_args", "emit_rows", "output_file_arg"]
