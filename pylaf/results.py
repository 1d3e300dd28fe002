"""One flat, versioned row schema for every result pylaf writes.

``pylaf compare``, ``pylaf replay``, ``pylaf sweep`` and ``pylaf bench`` all
emit rows of :data:`SCHEMA_VERSION`: plain dicts of scalars (no nesting),
so that a list of rows is a table (CSV, Parquet, a pandas DataFrame).

A compare/replay row (``kind`` = ``"compare"`` or ``"replay"``) holds:

- ``schema_version``, ``kind``, the run's identity (``workload``, ``policy``,
  ``page_size``, ``arch``, ``ram``, ``memcg_limit``, ``scale``,
  ``is_baseline``, ``error``);
- every scalar counter of :class:`pylaf.Stats` under its own name (but
  ``memcg_limit``, an identity column in bytes), and every
  per-size counter as one column per size, zeros kept:
  ``anon_fault_alloc_64K``, ``nr_anon_2M``, ``folios_mapped_4K`` ...;
- the derived numbers: ``faults_saved``, ``faults_saved_pct``, ``rss_bytes``,
  ``peak_rss_bytes``, ``pgtables_bytes``, ``bloat_bytes``, ``bloat_ratio``,
  ``peak_bloat_bytes``, ``peak_bloat_ratio``, ``elapsed_ns`` and
  ``emulator_ns_per_fault`` (emulator wall time, not kernel time);
- the workload's parameters as ``param_<name>`` and user tags as
  ``tag_<name>``.

A bench row (``kind`` = ``"bench"``) holds the fields of
:class:`pylaf.experiments.orders.OrderResult` (times are emulator time).
Time series (``CompareResult.series``) are rows of their own
(:func:`series_rows`), keyed by workload and policy.

Bump :data:`SCHEMA_VERSION` whenever a column is renamed or removed or
changes meaning; adding a column does not need a bump.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

#: the columns that identify a run, first in every compare/replay row
ID_COLUMNS = ("schema_version", "kind", "workload", "policy", "page_size", "arch", "ram",
              "memcg_limit", "scale", "is_baseline", "error")
#: derived columns of a compare/replay row, after the counters
DERIVED_COLUMNS = ("faults_saved", "faults_saved_pct", "rss_bytes", "peak_rss_bytes",
                   "pgtables_bytes", "bloat_bytes", "bloat_ratio", "peak_bloat_bytes",
                   "peak_bloat_ratio", "elapsed_ns", "emulator_ns_per_fault")
#: the output formats of --format / --output
FORMATS = ("table", "json", "csv")
OUTPUT_SUFFIXES = (".parquet", ".csv", ".json")

Row = dict[str, Any]


def result_row(r: Any, kind: str = "compare") -> Row:
    """The flat row of one :class:`~pylaf.experiments.run.CompareResult`."""
    row: Row = {"schema_version": SCHEMA_VERSION, "kind": kind}
    for name in ID_COLUMNS[2:]:
        row[name] = getattr(r, name)
    for name, value in r.counters.items():
        if name in row:          # memcg_limit: the identity column (bytes, None = unlimited)
            continue
        if isinstance(value, dict):
            for size, v in value.items():
                row[f"{name}_{size}"] = int(v)
        else:
            row[name] = value
    for name in DERIVED_COLUMNS:
        row[name] = getattr(r, name)
    for name, value in r.params.items():
        row[f"param_{name}"] = ",".join(map(str, value)) if isinstance(value, list) else value
    for name, value in r.tags.items():
        row[f"tag_{name}"] = value
    return row


def bench_row(r: Any, **extra: Any) -> Row:
    """The flat row of one :class:`~pylaf.experiments.orders.OrderResult`
    (``extra``: the sweep's settings, e.g. ``pattern``, ``page_size``)."""
    fields = dict(vars(r))
    fields["emulator_ns_per_fault"] = fields.pop("ns_per_fault")
    fields["emulator_ns_per_page"] = fields.pop("ns_per_page")
    return {"schema_version": SCHEMA_VERSION, "kind": "bench", **extra, **fields}


def rows_of(results: Iterable[Any], kind: str = "compare") -> list[Row]:
    """Rows of results, or rows as they are (dicts pass through)."""
    return [r if isinstance(r, dict) else result_row(r, kind) for r in results]


def series_rows(results: Iterable[Any]) -> list[Row]:
    """One row per sample of every result that has a series (long format)."""
    out: list[Row] = []
    for r in results:
        for i, s in enumerate(r.series or ()):
            out.append({"schema_version": SCHEMA_VERSION, "kind": "series", "workload": r.workload,
                        "policy": r.policy, "page_size": r.page_size, "arch": r.arch,
                        "memcg_limit": r.memcg_limit, "sample": i, **s})
    return out


def _columns(rows: Sequence[Row]) -> list[str]:
    """Every column of ``rows``, in first-seen order."""
    cols: dict[str, None] = {}
    for r in rows:
        cols.update(dict.fromkeys(r))
    return list(cols)


def _zero_filled(rows: Sequence[Row]) -> list[Row]:
    """Rows with the same columns; a per-size counter a row lacks (another
    page size's sizes) is 0, any other missing column None."""
    cols = _columns(rows)
    sized = {c for c in cols if c[-1:] in "KMG" and c[-2:-1].isdigit()}
    return [{c: r.get(c, 0 if c in sized else None) for c in cols} for r in rows]


def results_to_frame(results: Iterable[Any], kind: str = "compare") -> Any:
    """A pandas DataFrame of results (or rows): one row each, the columns
    of the schema.  Needs pandas (``pip install 'pylaf[data]'``)."""
    try:  # pandas is an optional dependency (pylaf[data]), imported when a frame is asked for
        import pandas as pd
    except ImportError:
        raise ImportError("pylaf.results_to_frame needs pandas: pip install 'pylaf[data]' "
                          "(or pip install pandas)") from None
    return pd.DataFrame(_zero_filled(rows_of(results, kind)))


def format_rows(rows: Sequence[Row], fmt: str, **meta: Any) -> str:
    """``rows`` as JSON (``{"schema_version", meta..., "rows"}``) or CSV text."""
    if fmt == "json":
        return json.dumps({"schema_version": SCHEMA_VERSION, **meta, "rows": list(rows)},
                          indent=1, default=str)
    if fmt == "csv":
        buf = io.StringIO()
        filled = _zero_filled(rows)
        w = csv.DictWriter(buf, fieldnames=_columns(filled), lineterminator="\n")
        w.writeheader()
        w.writerows(filled)
        return buf.getvalue()
    raise ValueError(f"unknown format {fmt!r}: expected json or csv")


def write_rows(rows: Sequence[Row], path: str | Path, **meta: Any) -> None:
    """Write ``rows`` to ``path`` by its suffix: ``.csv``, ``.json`` or
    ``.parquet`` (needs pyarrow: ``pip install 'pylaf[data]'``)."""
    p = Path(path)
    if p.suffix == ".parquet":
        try:  # pyarrow is optional (pylaf[data]), imported when Parquet is asked for
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError("writing Parquet needs pyarrow: pip install 'pylaf[data]' "
                              "(or pip install pyarrow); use .csv or .json instead") from None
        pq.write_table(pa.Table.from_pylist(_zero_filled(rows)), p)
    elif p.suffix in (".csv", ".json"):
        p.write_text(format_rows(rows, p.suffix[1:], **meta))
    else:
        raise ValueError(f"unknown output type {p.name!r}: expected "
                         f"{', '.join(OUTPUT_SUFFIXES)}")


def read_rows(path: str | Path) -> list[Row]:
    """Rows back from a file :func:`write_rows` wrote (Parquet needs pyarrow)."""
    p = Path(path)
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq  # optional (pylaf[data]), imported when Parquet is read
        rows: list[Row] = pq.read_table(p).to_pylist()
        return rows
    if p.suffix == ".json":
        doc = json.loads(p.read_text())
        return list(doc["rows"])
    with p.open(newline="") as f:
        return list(csv.DictReader(f))


__all__ = ["DERIVED_COLUMNS", "FORMATS", "ID_COLUMNS", "OUTPUT_SUFFIXES", "SCHEMA_VERSION", "Row",
           "bench_row", "format_rows", "read_rows", "result_row", "results_to_frame", "rows_of",
           "series_rows", "write_rows"]
