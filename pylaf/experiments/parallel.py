"""Run many :class:`~pylaf.experiments.run.Cell` s: serially, in a local
process pool, or on any :class:`concurrent.futures.Executor` (a Dask
cluster's ``Client.get_executor()`` included), optionally with a rich
progress bar on stderr.  Results come back in the cells' order whatever the
executor, so a parallel run gives the same rows as a serial one (timing
fields aside)."""
from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pylaf.experiments.run import Cell, CompareResult, run_cell

Advance = Callable[[], None]


@contextmanager
def _progress(total: int, enabled: bool, label: str) -> Iterator[Advance]:
    if not enabled:
        yield lambda: None
        return
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=Console(file=sys.stderr), transient=True)
    with bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)


def _run_on(executor: Executor, cells: Sequence[Cell], advance: Advance) -> list[CompareResult]:
    futures: dict[Future[CompareResult], int] = {executor.submit(run_cell, c): i
                                                 for i, c in enumerate(cells)}
    out: list[Optional[CompareResult]] = [None] * len(cells)
    for fut in as_completed(futures):
        out[futures[fut]] = fut.result()
        advance()
    return [r for r in out if r is not None]


@contextmanager
def local_pool(jobs: int) -> Iterator[Optional[Executor]]:
    """A pool of ``jobs`` forked worker processes (workloads registered in
    this process are known there), or None for ``jobs`` <= 1 (run here)."""
    if jobs <= 1:
        yield None
        return
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        yield pool


def run_cells(cells: Sequence[Cell], *, jobs: int = 1, executor: Optional[Executor] = None,
              progress: bool = False, label: str = "runs") -> list[CompareResult]:
    """Run ``cells``; one result per cell, in order.

    ``executor``: any Executor (not shut down here); otherwise ``jobs`` > 1
    starts a local process pool of that many workers (forked: workloads
    registered in this process are known there), ``jobs`` = 1 runs here.
    """
    if jobs < 1:
        raise ValueError(f"invalid jobs {jobs!r}: must be >= 1")
    with _progress(len(cells), progress, label) as advance:
        if executor is not None:
            return _run_on(executor, cells, advance)
        with local_pool(jobs if len(cells) > 1 else 1) as pool:
            if pool is not None:
                return _run_on(pool, cells, advance)
        out = []
        for c in cells:
            out.append(run_cell(c))
            advance()
        return out




@contextmanager
def executor_for(kind: str, scheduler: Optional[str] = None) -> Iterator[Optional[Executor]]:
    """The executor ``pylaf compare --executor KIND`` runs on: None for
    ``process`` (a local pool of ``--jobs`` workers, or serial), a Dask
    ``Client(scheduler).get_executor()`` for ``dask`` (closed afterwards)."""
    if kind == "process":
        yield None
        return
    if kind != "dask":
        raise ValueError(f"unknown executor {kind!r}: expected process or dask")
    if not scheduler:
        raise ValueError("--executor dask needs --scheduler ADDRESS (e.g. tcp://host:8786)")
    try:  # dask is optional (pylaf[dask]), imported only for --executor dask
        from dask.distributed import Client
    except ImportError:
        raise ImportError("--executor dask needs dask.distributed: pip install 'pylaf[dask]'") from None
    client = Client(scheduler)  # type: ignore[no-untyped-call]
    try:
        yield client.get_executor()  # type: ignore[no-untyped-call]
    finally:
        client.close()  # type: ignore[no-untyped-call]


__all__ = ["executor_for", "local_pool", "run_cells"]
