"""Counters of an address space (``struct laf_stats``), with the kernel's names.

The dataclass is generated from the C struct, so the field list lives in one
place (csrc/laf.h).  Per-order counters become ``{size: value}`` dicts keyed
like the sysfs directories (``"64K"``); the raw arrays are in ``per_order``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from pylaf._ffi import ffi
from pylaf.sizes import format_size

_FIELDS = ffi.typeof("struct laf_stats").fields
PER_ORDER_FIELDS: tuple[str, ...] = tuple(n for n, f in _FIELDS if f.type.kind == "array")
SCALAR_FIELDS: tuple[str, ...] = tuple(n for n, f in _FIELDS if f.type.kind != "array")


class _StatsBase:
    page_size: int
    pmd_order: int
    per_order: dict[str, np.ndarray]

    def by_order(self, name: str) -> np.ndarray:
        """The raw per-order array of a counter (index = folio order)."""
        return self.per_order[name]

    @property
    def rss_bytes(self) -> int:
        return int(self.mm_anonpages) * self.page_size  # type: ignore[attr-defined]

    @property
    def bloat_pages(self) -> int:
        """Resident anon pages the workload never accessed."""
        return int(self.mm_anonpages) - int(self.pages_touched)  # type: ignore[attr-defined]

    @property
    def bloat_ratio(self) -> float:
        t = int(self.pages_touched)  # type: ignore[attr-defined]
        return (int(self.mm_anonpages) / t) if t else 0.0  # type: ignore[attr-defined]

    def folio_histogram(self) -> dict[str, int]:
        """Folios mapped by faults, by size (order 0 included)."""
        arr = self.per_order["folios_mapped"]
        return {format_size(self.page_size << o): int(v) for o, v in enumerate(arr) if v}

    def as_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        d.pop("per_order", None)
        return d

    def __sub__(self, other: Stats) -> dict[str, Any]:
        """Event deltas (self - other) for scalar and per-size counters."""
        out: dict[str, Any] = {}
        for n in SCALAR_FIELDS:
            out[n] = getattr(self, n) - getattr(other, n)
        for n in PER_ORDER_FIELDS:
            a, b = getattr(self, n), getattr(other, n)
            out[n] = {k: a.get(k, 0) - b.get(k, 0) for k in set(a) | set(b) if a.get(k, 0) != b.get(k, 0)}
        return out


Stats = dataclasses.make_dataclass(
    "Stats",
    [("page_size", int), ("pmd_order", int)]
    + [(n, dict) for n in PER_ORDER_FIELDS]
    + [(n, int) for n in SCALAR_FIELDS]
    + [("per_order", dict)],
    bases=(_StatsBase,),
    frozen=True,
    repr=False,
)
Stats.__doc__ = __doc__


def stats_from_c(cst: Any, page_size: int, pmd_order: int) -> Stats:
    per_order: dict[str, np.ndarray] = {}
    kw: dict[str, Any] = {"page_size": page_size, "pmd_order": pmd_order}
    for n in PER_ORDER_FIELDS:
        arr = np.frombuffer(ffi.buffer(getattr(cst, n)), dtype=np.int64 if n.startswith("nr_") else np.uint64).copy()
        arr = arr.astype(np.int64)
        per_order[n] = arr
        lo = 0 if n == "folios_mapped" else 1
        kw[n] = {format_size(page_size << o): int(arr[o]) for o in range(lo, pmd_order + 1)
                 if n == "folios_mapped" or o >= 2}
    for n in SCALAR_FIELDS:
        kw[n] = int(getattr(cst, n))
    kw["per_order"] = per_order
    return Stats(**kw)


def _repr(self: Any) -> str:
    nz = {n: getattr(self, n) for n in SCALAR_FIELDS if getattr(self, n)}
    po = {n: {k: v for k, v in getattr(self, n).items() if v} for n in PER_ORDER_FIELDS}
    po = {n: v for n, v in po.items() if v}
    return f"Stats({nz}, {po})"


Stats.__repr__ = _repr  # type: ignore[method-assign]
