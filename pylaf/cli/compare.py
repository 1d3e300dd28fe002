"""``pylaf compare``: run workloads under THP policies and print one table."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from typing import Any, NoReturn

from rich.table import Table

from pylaf import render
from pylaf.cli.output import add_output_args, emit_rows
from pylaf.errors import LafError
from pylaf.experiments.compare import compare, config_dict
from pylaf.experiments.parallel import executor_for
from pylaf.experiments.run import TRACE_SUFFIX
from pylaf.experiments.workloads import available_workloads, workload_info
from pylaf.geometry import ARCHES, DEFAULT_PAGE_SIZE, PAGE_SIZES
from pylaf.policy import DEFAULT_COMPARE
from pylaf.results import rows_of, series_rows
from pylaf.sizes import format_size, parse_size

DESCRIPTION = """\
Run built-in workloads under several THP policies, each on a fresh emulated
address space, and compare faults, RSS, bloat and fault-path work against the
order-0 (no large folios) run of the same workload.

Columns: faults = exception entries (perf page-faults); saved = faults saved
against the order-0 run (absolute and %); RSS = MM_ANONPAGES at the end;
bloat = RSS minus the pages the workload touched, and RSS/touched; per-page
and per-folio ops = fault-path work done once per base page / once per folio;
PTEs written; emulator ns/fault = the emulator's wall time of the run divided
by its faults (not the kernel's time).  RSS peak = VmHWM (exact); bloat at
peak needs --sample-every.  Long policy specs are shown as P1, P2... with a
legend under the table; columns that do not fit the terminal ($COLUMNS) are
left out of the table (--format json|csv and --output have them all).
"""

EPILOG = """\
policy specs (--policy, repeatable):
  order-N, order-<size>      fixed order: every write fault tries exactly that
                             order, then order 0 (order-0 = no large folios)
  upstream[/enabled=MODE][/<size>=STATE...][/thp_anon=SPEC]
                             mainline mTHP: global enabled (never|madvise|always)
                             and per-size hugepages-<size>kB/enabled
                             (always|inherit|madvise|never); thp_anon= takes the
                             boot parameter syntax, e.g. 16K-64K:always;2M:inherit
  laf-v3|huang-a|huang-b[/enabled=MODE]
                             the 2023 LAF patch and Huang Ying's alternatives
  huang-sysfs/enabled=never|madvise|always|small|auto
  kernel                     this machine's live sysfs settings
  options for any kind: /defrag=..., /use_zero_page=0|1, /anon_beside_full=0|1

sizes (--ram, --memcg-limit): bytes or K, M, G, T suffixes (4G, 512M).

examples:
  pylaf compare                                 default workloads x default policies
  pylaf compare --list                          what those are
  pylaf compare --workload stride-64k --policy order-0 --policy order-4
  pylaf compare --policy 'upstream/enabled=always/thp_anon=16K-64K:always'
  pylaf compare --workload heap-churn --memcg-limit 64M --scale 0.5
  pylaf compare --page-size 16K --arch arm64 --policy order-0 --policy order-2
  pylaf compare --workload seq-fill --json | python3 -m json.tool
  pylaf compare --workload traces/git-log.laftrace --format csv
  pylaf compare --jobs 2 --output results.parquet
  pylaf compare --executor dask --scheduler tcp://127.0.0.1:8786
"""


class UsageError(Exception):
    """Bad command-line input: reported on one line, exit status 2."""


def _one_line_error(self: argparse.ArgumentParser, message: str) -> NoReturn:
    self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _size_arg(text: str) -> int:
    try:
        n = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: must be > 0")
    return n


def _memcg_arg(text: str) -> int:
    """memory.max: a size, where 0 is allowed (nothing may be charged)."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _page_size_arg(text: str) -> int:
    n = _size_arg(text)
    if n not in PAGE_SIZES:
        raise argparse.ArgumentTypeError(f"invalid page size {text!r}: expected one of "
                                         f"{', '.join(format_size(p) for p in PAGE_SIZES)}")
    return n


def _arch_arg(text: str) -> str:
    """An architecture name of :data:`pylaf.geometry.ARCHES` (``x86-64`` too),
    as its first (canonical) spelling there."""
    name = text.lower().replace("-", "_")
    if name not in ARCHES:
        raise argparse.ArgumentTypeError(
            f"invalid arch {text!r}: expected one of {', '.join(ARCHES)}")
    return next(n for n, v in ARCHES.items() if v == ARCHES[name])


def _scale_arg(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid scale {text!r}: expected a number") from None
    if not (0 < v <= 1000):
        raise argparse.ArgumentTypeError(f"invalid scale {text!r}: must be in (0, 1000]")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: must be >= 1")
    return v


def _tag_arg(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"invalid tag {text!r}: expected KEY=VALUE")
    return key, value


def register(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "compare", help="run workloads under THP policies and compare faults, RSS and bloat",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", "-w", action="append", metavar="NAME",
                   help="workload to run (repeatable; default: every default workload, "
                        "see --list)")
    p.add_argument("--policy", "-p", action="append", metavar="SPEC",
                   help="THP policy spec (repeatable; default: order-0, order-4 and the "
                        "other policies of pylaf.policy.DEFAULT_COMPARE, see --list)")
    p.add_argument("--page-size", type=_page_size_arg, default=DEFAULT_PAGE_SIZE,
                   metavar="|".join(format_size(size) for size in PAGE_SIZES),
                   help=f"base page size of the emulated kernel (default: {format_size(DEFAULT_PAGE_SIZE)})")
    p.add_argument("--arch", type=_arch_arg, default="x86_64", metavar="x86_64|arm64",
                   help="architecture: arm64 adds contpte (PTE_CONT) and "
                        "arch_wants_pte_order() (default: x86_64)")
    p.add_argument("--ram", type=_size_arg, default=4 << 30, metavar="SIZE",
                   help="emulated RAM (default: 4G)")
    p.add_argument("--memcg-limit", type=_memcg_arg, default=None, metavar="SIZE",
                   help="memory.max of the process's memory cgroup (default: unlimited); "
                        "charge failures fall back to smaller orders, then OOM")
    p.add_argument("--scale", type=_scale_arg, default=1.0, metavar="F",
                   help="multiply every workload's sizes and counts by F (default: 1.0; "
                        "0.05 for a quick run)")
    add_output_args(p)
    p.add_argument("--sample-every", type=_positive_int, metavar="N",
                   help="sample RSS and folios every N faults (series in --format json and "
                        "--output FILE.series.*; bloat at the peak in the table)")
    p.add_argument("--jobs", "-j", type=_positive_int, default=1, metavar="N",
                   help="run the cells in a local pool of N processes (default 1: serial)")
    p.add_argument("--executor", choices=("process", "dask"), default="process",
                   help="process (local, --jobs) or dask (a Dask cluster at --scheduler)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler address for --executor dask")
    p.add_argument("--tag", action="append", type=_tag_arg, default=[], metavar="KEY=VALUE",
                   help="a tag copied into every result row as tag_KEY (repeatable)")
    p.add_argument("--list", action="store_true",
                   help="list the workloads (with their parameters) and the default "
                        "policies, then exit")
    p.error = types.MethodType(_one_line_error, p)  # type: ignore[method-assign, unused-ignore]
    p.set_defaults(func=run)
    return p


def _list(args: argparse.Namespace, console: Any) -> int:
    infos = [workload_info(n) for n in available_workloads()]
    if args.format != "table":
        print(json.dumps({"workloads": infos, "default_policies": list(DEFAULT_COMPARE)},
                         indent=2))
        return 0
    wt = Table(title="workloads (--workload NAME)", title_justify="left")
    wt.add_column("name", no_wrap=True)
    wt.add_column("default", justify="center")
    wt.add_column("description")
    wt.add_column("parameters at --scale 1")
    for info in infos:
        wt.add_row(info["name"], "yes" if info["default"] else "", info["description"],
                   info["params_text"])
    console.print(wt)
    pt = Table(title="default policies (--policy SPEC)", title_justify="left")
    pt.add_column("spec")
    for spec in DEFAULT_COMPARE:
        pt.add_row(spec)
    console.print(pt)
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry point of ``pylaf compare`` (``func`` of the subparser)."""
    try:
        return _run(args)
    except BrokenPipeError:
        # `pylaf compare | head`: stop quietly; keep the interpreter's final
        # flush of stdout from raising again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _check_workloads(names: list[str]) -> None:
    known = available_workloads()
    for w in names:
        if w.endswith(TRACE_SUFFIX):
            if not os.path.isfile(w):
                raise UsageError(f"trace file {w!r} not found")
        elif w not in known:
            raise UsageError(f"unknown workload {w!r} (available: {', '.join(known)}, "
                             f"or a {TRACE_SUFFIX} file)")


def _run(args: argparse.Namespace) -> int:
    if args.list:
        return _list(args, render.console(pipe_width=140))
    skipped: list[tuple[str, str]] = []
    skipped_wl: list[tuple[str, str]] = []
    try:
        _check_workloads(args.workload or [])
        t0 = time.perf_counter()
        with executor_for(args.executor, args.scheduler) as executor:
            results = compare(args.workload, args.policy, page_size=args.page_size, arch=args.arch,
                              ram=args.ram, memcg_limit=args.memcg_limit, scale=args.scale,
                              skip_invalid=args.policy is None, skipped=skipped,
                              skipped_workloads=skipped_wl, sample_every=args.sample_every,
                              jobs=args.jobs, executor=executor,
                              progress=sys.stderr.isatty(), tags=dict(args.tag))
        wall = time.perf_counter() - t0
    except (UsageError, ValueError, ImportError) as exc:   # bad input (LafValueError included)
        print(f"pylaf compare: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except (LafError, MemoryError, OSError) as exc:        # the emulator (or the host) gave up
        print(f"pylaf compare: failed: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    for label, why in skipped:
        print(f"pylaf compare: skipped policy {label!r}: {why}", file=sys.stderr)
    for name, why in skipped_wl:
        print(f"pylaf compare: skipped workload {name!r}: {why}", file=sys.stderr)
    cfg = config_dict(page_size=args.page_size, arch=args.arch, ram=args.ram,
                      memcg_limit=args.memcg_limit, scale=args.scale)
    status = emit_rows(args, "pylaf compare", rows_of(results), series_rows(results), config=cfg,
                       wall_seconds=round(wall, 3),
                       skipped_policies=[{"policy": p, "reason": r} for p, r in skipped],
                       skipped_workloads=[{"workload": w, "reason": r} for w, r in skipped_wl])
    if args.format != "table" or status:
        return status
    caption = (f"{format_size(args.page_size)} pages, {args.arch}, RAM {format_size(args.ram)}, "
               f"memcg limit {format_size(args.memcg_limit) if args.memcg_limit is not None else 'none'}, "
               f"scale {args.scale:g}; {len(results)} runs in {wall:.1f}s")
    _print_table(results, caption)
    return 0


def _print_table(results: list[Any], caption: str) -> None:
    console = render.console()
    names = render.policy_names([r.policy for r in results])
    render.print_table(console, render.compare_table(results, "pylaf compare", caption,
                                                     width=console.width, names=names))
    if render.legend(names):
        console.print("policies:\n" + render.legend(names), highlight=False, soft_wrap=True)
