"""Rendering of results, in one place for every command: rich tables of
compare/replay results, plain fixed-width text tables, and the console that
both print to."""
from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Sequence
from typing import Any, Optional

from rich.console import Console
from rich.table import Table


def format_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [len(h) for h in header]
    for r in rows:
        for i, cell in enumerate(r):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip())
    return "\n".join(lines)



def _fmt_int(v: Optional[int]) -> str:
    return "-" if v is None else f"{v:,}"


def _fmt_saved(r: Any) -> str:
    if r.is_baseline:
        return "baseline"
    if r.faults_saved is None:
        return "-"
    return f"{r.faults_saved:,} ({r.faults_saved_pct:.1f}%)"


def _fmt_bytes(n: int) -> str:
    for unit, mult in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if abs(n) >= mult:
            return f"{n / mult:.1f}{unit}"
    return f"{n}B"


def _fmt_bloat(r: Any) -> str:
    if not r.pages_touched:
        return "-"
    return f"{_fmt_bytes(r.bloat_bytes)} ({r.bloat_ratio:.2f}x)"


def _problems(r: Any) -> str:
    parts = []
    if r.error:
        parts.append(r.error)
    if r.faults_oom:
        parts.append(f"OOM x{r.faults_oom:,}")
    if r.faults_sigsegv:
        parts.append(f"SIGSEGV x{r.faults_sigsegv:,}")
    if r.faults_sigbus:
        parts.append(f"SIGBUS x{r.faults_sigbus:,}")
    return ", ".join(parts)

def terminal_width(file: Any = None, pipe_width: int = 250) -> int:
    """The width to render for: ``$COLUMNS`` if set, else the terminal's
    width, else (a pipe or a file) ``pipe_width``."""
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    out = file or sys.stdout
    if getattr(out, "isatty", lambda: False)():
        return shutil.get_terminal_size((100, 24)).columns
    return pipe_width


class _PipeConsole(Console):
    """A rich Console that lets a closed pipe propagate as BrokenPipeError, so
    that :func:`pylaf.cli.main` ends every command the same way (rich's own
    handler exits 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def console(file: Any = None, pipe_width: int = 250) -> Any:
    """A rich Console of :func:`terminal_width` columns (a pipe or a file gets
    the table at its natural width, up to ``pipe_width``)."""
    out = file or sys.stdout
    return _PipeConsole(file=out, width=terminal_width(out, pipe_width), highlight=False)


def _fmt_peak_bloat(r: Any) -> str:
    if r.peak_bloat_ratio is None:
        return "-"
    return f"{_fmt_bytes(r.peak_bloat_bytes or 0)} ({r.peak_bloat_ratio:.2f}x)"


def _fmt_ns(r: Any) -> str:
    return "-" if r.emulator_ns_per_fault is None else f"{r.emulator_ns_per_fault:,.0f}"


#: (header, cell formatter) of the numeric columns, most important first:
#: columns are dropped from the end until the table fits the width
COLUMNS: tuple[tuple[str, Callable[[Any], str]], ...] = (
    ("faults", lambda r: _fmt_int(r.faults)),
    ("saved vs\norder-0", _fmt_saved),
    ("RSS\nend", lambda r: _fmt_bytes(r.rss_bytes)),
    ("RSS\npeak", lambda r: _fmt_bytes(r.peak_rss_bytes)),
    ("bloat at end\n(RSS/touched)", _fmt_bloat),
    ("emulator\nns/fault", _fmt_ns),
    ("bloat at\npeak", _fmt_peak_bloat),
    ("page\ntables", lambda r: _fmt_bytes(r.pgtables_bytes)),
    ("per-folio\nops", lambda r: _fmt_int(r.per_folio_ops)),
    ("per-page\nops", lambda r: _fmt_int(r.per_page_ops)),
    ("PTEs\nwritten", lambda r: _fmt_int(r.ptes_written)),
)


def policy_names(labels: Sequence[str], limit: int = 14) -> dict[str, str]:
    """Display names of policy labels: the labels themselves when they are
    all short, else ``P1``, ``P2``... in first-seen order (see :func:`legend`)."""
    uniq = list(dict.fromkeys(labels))
    if all(len(lb) <= limit for lb in uniq):
        return {lb: lb for lb in uniq}
    return {lb: f"P{i}" for i, lb in enumerate(uniq, 1)}


def legend(names: dict[str, str]) -> str:
    """``  P1 = order-0`` lines for the short names that differ from their label."""
    return "\n".join(f"  {short} = {label}" for label, short in names.items() if short != label)


def _table_width(widths: Sequence[int]) -> int:
    # cells + 2 padding + 1 border each, + 1 border
    return sum(w + 3 for w in widths) + 1


def compare_table(results: Sequence[Any], title: str, caption: str = "",
                  width: Optional[int] = None, names: Optional[dict[str, str]] = None) -> Any:
    """One rich Table: a row per (workload, policy), a section per workload.

    ``names``: policy display names (default :func:`policy_names`).  With
    ``width``, the least important numeric columns are left out until the
    table fits (workload, policy, faults and saved always stay).
    """
    names = names or policy_names([r.policy for r in results])
    problems = [_problems(r) for r in results]
    wl_width = max([len("workload")] + [len(r.workload) for r in results])
    pol_width = max([len("policy")] + [len(names[r.policy]) for r in results])
    cols = []
    for header, fmt in COLUMNS:
        cells = [fmt(r) for r in results]
        cols.append((header, cells, max([len(x) for x in header.split("\n")] + [len(c) for c in cells])))
    fixed = [wl_width, pol_width] + ([12] if any(problems) else [])
    while width is not None and len(cols) > 2 and _table_width(fixed + [c[2] for c in cols]) > width:
        cols.pop()
    table = Table(title=title, caption=caption or None, caption_justify="left")
    table.add_column("workload", no_wrap=True, min_width=wl_width)
    table.add_column("policy", no_wrap=True, min_width=pol_width)
    for header, _, w in cols:
        # numbers are never truncated: the column is at least as wide as its cells
        table.add_column(header, justify="right", no_wrap=True, min_width=w)
    if any(problems):
        table.add_column("errors", style="red", overflow="fold", min_width=12)
    prev = None
    for i, (r, prob) in enumerate(zip(results, problems, strict=True)):
        if prev is not None and r.workload != prev:
            table.add_section()
        extra = [prob] if any(problems) else []
        table.add_row(r.workload if r.workload != prev else "", names[r.policy],
                      *[c[1][i] for c in cols], *extra)
        prev = r.workload
    return table


def print_table(console: Any, table: Any) -> None:
    """Print ``table``, widening the console if it is narrower than the
    table's minimum (a too-narrow terminal wraps lines rather than losing
    columns)."""
    cols = table.columns
    # every column has a min_width: cells + 2 padding + 1 border each, + 1 border
    need = sum((c.min_width or 1) + 3 for c in cols) + 1
    if need > console.width:
        console.width = need
    console.print(table)


__all__ = ["COLUMNS", "compare_table", "console", "format_table", "legend", "policy_names", "print_table",
           "terminal_width"]
