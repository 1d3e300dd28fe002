"""``pylaf sweep CONFIG.toml``: workloads x policies x page sizes x arches x
memcg limits from one TOML file (format: :mod:`pylaf.experiments.sweep`,
example: ``examples/sweep.toml``).  Writes the result rows (schema
:mod:`pylaf.results`) to the file's ``output`` (or ``--output``), the
summary plot (faults saved vs peak bloat per policy) to ``plot`` (or
``--plot``), and prints a summary per policy."""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from pylaf import render
from pylaf.cli.output import output_file_arg
from pylaf.cli.plots import PlotUnavailable, plot_sweep_summary, require_pyplot
from pylaf.errors import LafError
from pylaf.experiments.parallel import executor_for
from pylaf.experiments.run import CompareResult
from pylaf.experiments.sweep import SweepConfig, load_sweep, run_sweep, summary_points
from pylaf.results import format_rows, rows_of, write_rows


def register(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "sweep", help="run a TOML-described sweep: workloads x policies x page sizes x arches "
                      "x memcg limits", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="sweep description (TOML, see examples/sweep.toml)")
    p.add_argument("--output", "-o", type=output_file_arg, metavar="FILE",
                   help="result rows: .parquet (pyarrow), .csv or .json (default: the file's output)")
    p.add_argument("--plot", metavar="FILE.png", help="summary plot (default: the file's plot)")
    p.add_argument("--jobs", "-j", type=int, metavar="N", help="local worker processes")
    p.add_argument("--executor", choices=("process", "dask"), default="process")
    p.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler for --executor dask")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="stdout: a summary per policy (default), or every row as JSON or CSV")
    p.set_defaults(func=cmd_sweep)
    return p


def _error(msg: object, status: int) -> int:
    print("pylaf sweep: error: " + " ".join(str(msg).split()), file=sys.stderr)
    return status


def _summary(results: list[CompareResult], title: str) -> Table:
    t = Table(title=title, title_justify="left")
    for name in ("policy", "runs", "median saved", "max peak bloat", "runs with OOM"):
        t.add_column(name, justify="left" if name == "policy" else "right")
    points = summary_points(results)
    for pol in dict.fromkeys(r.policy for r in results):
        mine = [p for p in points if p["policy"] == pol]
        runs = [r for r in results if r.policy == pol]
        t.add_row(pol, str(len(runs)),
                  f"{statistics.median(p['faults_saved_pct'] for p in mine):.1f}%" if mine else "-",
                  f"{max(p['peak_bloat_ratio'] for p in mine):.2f}x" if mine else "-",
                  str(sum(1 for r in runs if r.faults_oom)))
    return t


def _settings(args: argparse.Namespace) -> SweepConfig:
    cfg = load_sweep(args.config)
    changes: dict[str, Any] = {}
    if args.output:
        changes["output"] = Path(args.output)
    if args.plot:
        changes["plot"] = Path(args.plot)
    if args.jobs:
        changes["jobs"] = args.jobs
    return dataclasses.replace(cfg, **changes)


def cmd_sweep(args: argparse.Namespace) -> int:
    try:
        cfg = _settings(args)
        if cfg.plot:
            require_pyplot()
        t0 = time.perf_counter()
        with executor_for(args.executor, args.scheduler) as executor:
            res = run_sweep(cfg, executor=executor, progress=sys.stderr.isatty())
        wall = time.perf_counter() - t0
        rows = rows_of(res.results)
        if cfg.output:
            write_rows(rows, cfg.output, config=str(args.config))
    except (OSError, ValueError, ImportError, PlotUnavailable) as exc:
        return _error(exc, 2)
    except (LafError, MemoryError) as exc:
        return _error(exc, 1)
    for machine, name, why in res.skipped:
        print(f"pylaf sweep: {machine}: skipped {name!r}: {why}", file=sys.stderr)
    if cfg.plot:
        plot_sweep_summary(summary_points(res.results), str(cfg.plot),
                           f"pylaf sweep {Path(args.config).name}: {len(rows)} runs")
    if args.format != "table":
        sys.stdout.write(format_rows(rows, args.format).rstrip("\n") + "\n")
        return 0
    render.print_table(render.console(), _summary(
        res.results, f"pylaf sweep {args.config}: {len(rows)} runs on {len(cfg.machines)} "
                     f"machines in {wall:.1f}s"))
    for what, path in (("rows", cfg.output), ("plot", cfg.plot)):
        if path:
            print(f"wrote {what}: {path}")
    return 0
