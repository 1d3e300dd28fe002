"""Rendering of results, in one place for every command: rich tables of
compare/replay results, plain fixed-width text tables, and the console that
both print to."""
from __future__ import annotations

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


class _PipeConsole(Console):
    """A rich Console that lets a closed pipe propagate as BrokenPipeError, so
    that :func:`pylaf.cli.main` ends every command the same way (rich's own
    handler exits 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def console(file: Any = None, pipe_width: int = 250) -> Any:
    out = file or sys.stdout
    # a pipe or a file gets the table at its natural width (up to pipe_width),
    # not squeezed into rich's default of 80 columns
    width = None if getattr(out, "isatty", lambda: False)() else pipe_width
    return _PipeConsole(file=out, width=width, highlight=False)


#: (header, cell formatter) of the numeric columns; headers are two lines
#: so the table stays narrow enough for a terminal
COLUMNS: tuple[tuple[str, Callable[[Any], str]], ...] = (
    ("faults", lambda r: _fmt_int(r.faults)),
    ("saved vs\norder-0", _fmt_saved),
    ("RSS", lambda r: _fmt_bytes(r.rss_bytes)),
    ("bloat\n(RSS/touched)", _fmt_bloat),
    ("per-page\nops", lambda r: _fmt_int(r.per_page_ops)),
    ("per-folio\nops", lambda r: _fmt_int(r.per_folio_ops)),
    ("PTEs\nwritten", lambda r: _fmt_int(r.ptes_written)),
    ("ns/fault", lambda r: "-" if r.ns_per_fault is None else f"{r.ns_per_fault:,.0f}"),
)


def compare_table(results: Sequence[Any], title: str, caption: str = "") -> Any:
    """One rich Table: a row per (workload, policy), a section per workload."""
    cells = [[fmt(r) for _, fmt in COLUMNS] for r in results]
    problems = [_problems(r) for r in results]
    table = Table(title=title, caption=caption or None, caption_justify="left")
    table.add_column("workload", no_wrap=True,
                     min_width=max([len("workload")] + [len(r.workload) for r in results]))
    table.add_column("policy", overflow="fold", min_width=min(
        24, max([len("policy")] + [len(r.policy) for r in results])))
    for i, (header, _) in enumerate(COLUMNS):
        # numbers are never truncated: the column is at least as wide as its cells
        width = max([len(line) for line in header.split("\n")] + [len(c[i]) for c in cells])
        table.add_column(header, justify="right", no_wrap=True, min_width=width)
    if any(problems):
        table.add_column("errors", style="red", overflow="fold", min_width=12)
    prev = None
    for r, row, prob in zip(results, cells, problems, strict=True):
        if prev is not None and r.workload != prev:
            table.add_section()
        extra = [prob] if any(problems) else []
        table.add_row(r.workload if r.workload != prev else "", r.policy, *row, *extra)
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



__all__ = ["COLUMNS", "compare_table", "console", "format_table", "print_table"]
