"""Memory over time: an AddressSpace that samples its counters every N faults.

:class:`SampledAddressSpace` is an :class:`~pylaf.AddressSpace` whose batch
calls (:meth:`touch`, :meth:`touch_range`) are cut into chunks of at most
``every`` accesses; after each chunk, when the fault count has passed the
next multiple of ``every``, one sample is appended to :attr:`series`.  An
access takes at least zero and usually one fault, so a sample lands within one
chunk of every N-th fault: the series is a sampling, not an exact trace (the
exact peak RSS is ``Stats.hiwater_rss``, kept by the C core).

A sample is a flat dict (one tidy row per point): ``faults``, ``rss_bytes``,
``pages_touched``, ``bloat_bytes``, ``pgtables_bytes``, then
``nr_anon_<size>`` and ``nr_anon_partially_mapped_<size>`` for every mTHP
size (zero-filled), like ``/sys/kernel/mm/transparent_hugepage/
hugepages-<size>kB/stats/nr_anon``.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from pylaf import arguments as args
from pylaf.address_space import AddressSpace
from pylaf.config import Config
from pylaf.records import TouchResult
from pylaf.stats import Stats

#: per-size gauges a sample carries
SAMPLED_PER_SIZE = ("nr_anon", "nr_anon_partially_mapped")


def sample_of(st: Stats) -> dict[str, int]:
    """One point of the series: the gauges of ``st`` as a flat dict."""
    out = {"faults": st.faults, "rss_bytes": st.rss_bytes, "pages_touched": st.pages_touched,
           "bloat_bytes": st.bloat_pages * st.page_size, "pgtables_bytes": st.pgtables_bytes}
    for name in SAMPLED_PER_SIZE:
        for size, value in getattr(st, name).items():
            out[f"{name}_{size}"] = int(value)
    return out


def peak_of(series: list[dict[str, int]]) -> Optional[dict[str, int]]:
    """The sample of the largest RSS (the first of equals), None if empty."""
    return max(series, key=lambda s: s["rss_bytes"]) if series else None


def _merge(parts: list[TouchResult], results: bool) -> TouchResult:
    """One TouchResult for consecutive chunks (first_error re-based)."""
    first, offset = -1, 0
    for p in parts:
        if first < 0 and p.first_error >= 0:
            first = offset + p.first_error
        offset += p.accesses
    codes = None
    if results:
        codes = np.concatenate([p.results for p in parts if p.results is not None]) if parts \
            else np.empty(0, dtype=np.int8)
    total = {f: sum(getattr(p, f) for p in parts)
             for f in ("accesses", "hits", "faulted", "sigsegv", "oom", "sigbus", "userfault")}
    return TouchResult(**total, first_error=first, results=codes)


class SampledAddressSpace(AddressSpace):
    """An AddressSpace that samples its gauges every ``every`` faults."""

    def __init__(self, config: Config, every: int) -> None:
        if every <= 0:
            raise ValueError(f"invalid sample interval {every!r}: must be > 0 faults")
        super().__init__(config)
        self.every = every
        #: the samples, in fault order (see :func:`sample_of`)
        self.series: list[dict[str, int]] = []
        self._next = 0

    def sample(self, force: bool = False) -> None:
        """Append a sample if the fault count reached the next mark (or ``force``)."""
        st = self.stats()
        if force or st.faults >= self._next:
            if not (self.series and self.series[-1]["faults"] == st.faults and force):
                self.series.append(sample_of(st))
            self._next = (st.faults // self.every + 1) * self.every

    def touch(self, addrs: Any, write: Any = False, *, results: bool = False) -> TouchResult:
        arr = args.address_array("addrs", addrs)
        n = arr.shape[0]
        if n <= self.every:
            out = super().touch(arr, write, results=results)
            self.sample()
            return out
        warr = args.write_array(write, n)
        parts = []
        for lo in range(0, n, self.every):
            w = warr[lo:lo + self.every] if warr is not None else write
            parts.append(super().touch(arr[lo:lo + self.every], w, results=results))
            self.sample()
        return _merge(parts, results)

    def touch_range(self, start: int, length: int | str, stride: Optional[int | str] = None,
                    write: bool = False) -> TouchResult:
        a, n = args.u64("start", start), args.size("length", length)
        st = self.page_size if stride is None else args.size("stride", stride)
        chunk = st * self.every
        if st <= 0 or n <= chunk:
            out = super().touch_range(a, n, stride, write)
            self.sample()
            return out
        parts = []
        for lo in range(0, n, chunk):
            parts.append(super().touch_range(a + lo, min(chunk, n - lo), st, write))
            self.sample()
        return _merge(parts, False)


__all__ = ["SAMPLED_PER_SIZE", "SampledAddressSpace", "peak_of", "sample_of"]
