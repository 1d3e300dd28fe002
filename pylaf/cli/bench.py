"""``pylaf bench``: the emulator's fault-path cost by folio order, from Python.

For every order (policy ``fixed``, ``fixed_order`` = order; the PMD order
takes the PMD path) a fresh AddressSpace write-faults ``--size`` of memory
through the batch API (``touch`` over a numpy address array, one address per
folio, or ``touch_range``), then unmaps it.  The best of ``--runs`` runs is
reported: emulator ns per fault and per base page, faults per GiB, the
emulator's per-page / per-folio operation counts per fault, and the speed-up
of every order against order 0 (time per GiB).  The table needs nothing
optional; a plot is drawn only when asked (``--plot FILE`` or ``--output
FILE.png``) and needs matplotlib.  ``--kernel-model`` adds what the live
kernel would take for the same faults (:mod:`pylaf.experiments.costmodel`).
The sweep itself is :mod:`pylaf.experiments.orders`; this module parses and
prints.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from rich.table import Table

from pylaf import render
from pylaf.cli.plots import PlotUnavailable, require_pyplot
from pylaf.experiments import costmodel
from pylaf.experiments.orders import PATTERNS, OrderResult, parse_orders, scale_run, sweep
from pylaf.geometry import DEFAULT_PAGE_SIZE, Geometry
from pylaf.results import FORMATS, OUTPUT_SUFFIXES, bench_row, format_rows, write_rows
from pylaf.sizes import format_size, parse_size

EPILOG = """\
examples:
  pylaf bench                              orders 0,2..PMD on 1G, table
  pylaf bench --size 4G --orders 0,4,9 --runs 5 --plot bench.png
  pylaf bench --pattern random --output random.png
  pylaf bench --format csv > bench.csv     one row per order (schema: pylaf.results)
  pylaf bench --output bench.parquet
  pylaf bench --kernel-model               + live-kernel prediction (cached in build/)
  pylaf bench --scale 64G --orders 0       64 GiB at order 0: time and peak RSS
  PYLAF_KERNEL_SETTINGS=1 pylaf bench --kernel-model --recalibrate
                                           calibrate every mTHP order (writes sysfs,
                                           restored afterwards; root)
"""

#: the machine the sweep runs on
GEOMETRY = Geometry.for_machine(DEFAULT_PAGE_SIZE)


def orders_arg(text: str) -> list[int]:
    """argparse type of ``--orders``."""
    try:
        return parse_orders(text, GEOMETRY)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def print_table(res: Sequence[OrderResult], title: str, kernel: bool = False) -> None:
    t = Table(title=title, title_justify="left")
    ref = res[0]
    cols = ["order", "folio", "faults", "emulator\nns/fault",
            f"emulator\nns/{format_size(GEOMETRY.page_size)}", "+munmap ns/fault", "faults/GiB", "page-ops/fault", "folio-ops/fault",
            f"speed-up vs {ref.folio}"]
    if kernel:
        cols += ["kernel us/fault", "emulator vs kernel"]
    for name in cols:
        t.add_column(name, justify="right")
    for r in res:
        row = [str(r.order), r.folio, f"{r.faults:,}", f"{r.ns_per_fault:,.1f}",
               f"{r.ns_per_page:.2f}", f"{r.ns_per_fault_teardown:,.1f}",
               f"{r.faults_per_gib:,.0f}", f"{r.per_page_ops_per_fault:.1f}",
               f"{r.per_folio_ops_per_fault:.1f}", f"{r.speedup_vs_order0:.2f}x"]
        if kernel:
            row += [f"{(r.kernel_ns_per_fault or 0) / 1000:,.2f}",
                    f"{r.kernel_speedup or 0:,.0f}x faster"]
        t.add_row(*row)
    render.print_table(render.console(pipe_width=200), t)


#: suffixes of --output that mean a plot (the others are data: pylaf.results)
PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def plot(res: Sequence[OrderResult], path: str, title: str) -> None:
    """Emulator time per base page by folio order (faults, faults + munmap,
    and the live kernel model when there is one); PlotUnavailable without
    matplotlib."""
    plt = require_pyplot()
    orders = [r.order for r in res]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(orders, [r.ns_per_page for r in res], "o-", label="faults")
    ax.plot(orders, [r.ns_per_fault_teardown * r.faults / r.pages for r in res], "s--",
            label="faults + munmap")
    if res[0].kernel_ns_per_fault is not None:
        ax.plot(orders, [(r.kernel_ns_per_fault or 0) * r.faults / r.pages for r in res], "^:",
                label="live kernel (model, + munmap)")
    ax.set_yscale("log")
    ax.set_ylabel("emulator ns per base page")
    ax.set_xticks(orders)
    ax.set_xticklabels([f"{r.order}\n{r.folio}" for r in res])
    ax.set_xlabel("folio order / size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------ command
def _scale_cmd(args: argparse.Namespace) -> int:
    res = scale_run(args.scale, args.orders[0])
    if args.format != "table":
        print(json.dumps(res))
        return 0 if res["ok"] else 1
    page = format_size(res["page_size"])
    print(f"pylaf bench --scale: {format_size(res['size'])} ({res['pages']:,} pages) at order "
          f"{res['order']}: fault {res['fault_s']:.3f} s ({res['ns_per_fault']:.1f} ns/fault), "
          f"munmap {res['munmap_s']:.3f} s, total {res['total_s']:.3f} s; peak RSS "
          f"{res['peak_rss'] / 2**20:.0f} MiB = {res['peak_rss_per_page']:.1f} B per {page} page "
          f"({res['emulator_rss_per_page']:.1f} B/page above the interpreter's "
          f"{res['rss_before'] / 2**20:.0f} MiB){'' if res['ok'] else '  [ERROR: wrong counts]'}")
    return 0 if res["ok"] else 1


def _usage_error(args: argparse.Namespace) -> Optional[str]:
    size = parse_size(args.size)
    if size < 2 * GEOMETRY.pmd_size or size % GEOMETRY.pmd_size:
        return (f"--size must be a multiple of {format_size(GEOMETRY.pmd_size)} and >= "
                f"{format_size(2 * GEOMETRY.pmd_size)}, got {args.size!r}")
    if args.runs < 1:
        return "--runs must be >= 1"
    if args.output and Path(args.output).suffix not in PLOT_SUFFIXES + OUTPUT_SUFFIXES:
        return (f"--output {args.output!r}: expected a plot ({', '.join(PLOT_SUFFIXES)}) or data "
                f"({', '.join(OUTPUT_SUFFIXES)}) file")
    return None


def _plot_path(args: argparse.Namespace) -> Optional[str]:
    if args.plot:
        return str(args.plot)
    if args.output and Path(args.output).suffix in PLOT_SUFFIXES:
        return str(args.output)
    return None


def _load_model(args: argparse.Namespace) -> costmodel.CostModel:
    settings = True if args.kernel_settings else None
    return costmodel.load_or_calibrate(recalibrate=args.recalibrate, settings=settings,
                                       progress=lambda s: print(s, file=sys.stderr))


def _print_results(args: argparse.Namespace, res: Sequence[OrderResult], title: str,
                   model: Optional[costmodel.CostModel]) -> None:
    if args.format != "table":
        rows = [bench_row(r, pattern=args.pattern, page_size=GEOMETRY.page_size) for r in res]
        text = format_rows(rows, args.format)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    print_table(res, title, kernel=model is not None)
    if model is not None:
        print(f"kernel model: {model.describe()}  ({len(model.samples)} calibrated orders; "
              f"times include the munmap teardown)")


def _write_outputs(args: argparse.Namespace, res: Sequence[OrderResult], title: str) -> None:
    """--output FILE.csv|.json|.parquet and the plot; ImportError /
    PlotUnavailable when an optional writer is missing."""
    if args.output and Path(args.output).suffix in OUTPUT_SUFFIXES:
        write_rows([bench_row(r, pattern=args.pattern, page_size=GEOMETRY.page_size) for r in res],
                   args.output)
    path = _plot_path(args)
    if path:
        plot(res, path, title)
        print(f"wrote {path}", file=sys.stderr)


def cmd(args: argparse.Namespace) -> int:
    if args.scale:
        return _scale_cmd(args)
    problem = _usage_error(args)
    if problem:
        print(f"pylaf bench: error: {problem}", file=sys.stderr)
        return 2
    if _plot_path(args):
        try:  # before the sweep: a missing matplotlib costs nothing
            require_pyplot()
        except PlotUnavailable as exc:
            print(f"pylaf bench: error: {exc}", file=sys.stderr)
            return 2
    size = parse_size(args.size)
    model = None
    if args.kernel_model:
        try:
            model = _load_model(args)
        except (OSError, RuntimeError) as exc:
            print(f"pylaf bench: error: kernel cost model: {exc}", file=sys.stderr)
            return 1
    progress = None if args.format != "table" else (lambda s: print(f"  {s}...", file=sys.stderr))
    res = sweep(args.orders, size, args.runs, args.pattern, model, progress, GEOMETRY.page_size)
    title = (f"pylaf bench: {format_size(size)} write-faulted per order, pattern {args.pattern}, "
             f"best of {args.runs}")
    _print_results(args, res, title, model)
    try:
        _write_outputs(args, res, title)
    except (ImportError, PlotUnavailable) as exc:
        print(f"pylaf bench: error: {exc}", file=sys.stderr)
        return 2
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "bench", help="time the emulated fault path by folio order (order 0 vs order N)",
        description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="1G", help="memory write-faulted per order (default 1G)")
    p.add_argument("--orders", type=orders_arg, default=orders_arg("all"),
                   help=f"orders to run: 0,2-{GEOMETRY.pmd_order} or all "
                        f"(default all: 0, 2..{GEOMETRY.pmd_order})")
    p.add_argument("--runs", type=int, default=3, help="runs per order; the best is kept (default 3)")
    p.add_argument("--pattern", choices=PATTERNS, default="seq",
                   help="seq/random: touch() with one address per folio; range: touch_range()")
    p.add_argument("--output", "-o", metavar="FILE",
                   help="FILE.png|.svg|.pdf: the plot (needs matplotlib); FILE.csv|.json|.parquet: "
                        "the rows (schema: pylaf.results; .parquet needs pyarrow)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="plot emulator ns per base page by order (needs matplotlib)")
    p.add_argument("--no-plot", action="store_true",
                   help="(kept for old scripts: no plot is drawn unless asked)")
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="stdout: the table (default), or the rows as JSON or CSV")
    p.add_argument("--json", dest="format", action="store_const", const="json",
                   help="same as --format json")
    p.add_argument("--kernel-model", action="store_true",
                   help="add the live kernel's predicted time (pylaf.experiments.costmodel; cached in build/)")
    p.add_argument("--kernel-settings", action="store_true",
                   help="with --kernel-model: calibrate every mTHP order by writing sysfs knobs "
                        "(same as PYLAF_KERNEL_SETTINGS=1; restored afterwards)")
    p.add_argument("--recalibrate", action="store_true", help="ignore the cached kernel model")
    p.add_argument("--scale", metavar="SIZE",
                   help="instead of the sweep: fault SIZE (e.g. 64G) at the first --orders order "
                        "with touch_range(), unmap it, and report the time and the peak RSS of a "
                        "fresh process")
    p.set_defaults(func=cmd)
    return p
