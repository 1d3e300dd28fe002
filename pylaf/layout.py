"""Folio layout of a range of pages, as runs like ``0+56K:4K 56K+960K:64K``.

The one folio-run builder of pylaf.  It is pure: it takes per-page folio
orders (``read_ptes`` order codes, ``lib.LAF_ORDER_NONE/ZERO/HUGE_ZERO`` for the
pages that map no folio of their own) and page frame numbers, and returns
:class:`Run` values.  The emulator side of the live check and the tests build
their layouts here; the live kernel's layout is built by ``emit_layout()`` in
``pylaf/live/csrc/laf_kprog.c`` (from ``/proc/self/pagemap`` and
``/proc/kpageflags``) with the same rules, and :mod:`pylaf.live.kprog` parses
its runs into the same :class:`Run` type, so both sides print and compare
alike.

Rules (laf_kprog ``emit_layout()``):

* a *piece* is a maximal stretch of pages that are VA- and PFN-contiguous
  inside one folio; it is *whole* if it starts at the folio's first page and
  covers the whole folio (mm/rmap.c: a folio is fully mapped when every page
  is, folio_test_partially_mapped() otherwise);
* pages that map nothing (``none``), the shared zero page (``zero``) or are
  swapped out (``swap``, live host only) merge into one run of their kind;
* adjacent whole pieces of one kind and order merge into one run; a partial
  piece is a run of its own, labelled ``<size>!partial``.

Labels: the folio size (``4K``, ``64K``, ``2M``), ``zero``, ``hzero`` (pages of
the huge zero folio, mm/huge_memory.c mm_get_huge_zero_folio()), ``none``,
``swap``.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Optional

from pylaf._ffi import lib
from pylaf.geometry import Geometry
from pylaf.sizes import format_size

#: run kinds
NONE, SWAP, FOLIO, ZERO, HUGE_ZERO = "none", "swap", "folio", "zero", "hzero"

#: ``read_ptes`` order codes of pages that map no folio of their own -> kind
ORDER_CODE_KIND: dict[int, str] = {lib.LAF_ORDER_NONE: NONE, lib.LAF_ORDER_ZERO: ZERO,
                                   lib.LAF_ORDER_HUGE_ZERO: HUGE_ZERO}

#: kinds whose adjacent pages always merge, whatever folio they belong to
_MERGE_ALWAYS = (NONE, SWAP, ZERO)


@dataclass(frozen=True)
class Run:
    """Pages ``page .. page + pages - 1`` of the range, of one ``kind``.

    For ``folio`` and ``hzero`` runs: ``order`` of the folio, ``whole`` if
    every piece maps its entire folio (then ``folios`` pieces were merged),
    else one partial piece starting at page ``idx`` of its folio.  ``thp`` and
    ``anon`` are the kpageflags of the folio head (live host only).
    """

    page: int
    pages: int
    kind: str
    order: Optional[int] = None
    whole: Optional[bool] = None
    folios: int = 0
    idx: Optional[int] = None
    thp: Optional[bool] = None
    anon: Optional[bool] = None

    def label(self, page_size: int) -> str:
        """``"64K"``, ``"64K!partial"``, ``"zero"``, ``"hzero"``, ``"none"``, ``"swap"``."""
        if self.kind != FOLIO or self.order is None:
            return self.kind
        return format_size(page_size << self.order) + ("" if self.whole else "!partial")

    def joins(self, piece: Run) -> bool:
        """``piece`` continues this run (laf_kprog emit_layout()'s merge rule)."""
        if piece.kind != self.kind:
            return False
        if self.kind in _MERGE_ALWAYS:
            return True
        return bool(self.whole and piece.whole and self.order == piece.order
                    and self.thp == piece.thp and self.anon == piece.anon)


def _folio_piece(i: int, orders: Sequence[int], pfns: Sequence[int], order: int,
                 kind: str) -> Run:
    """The piece of the folio mapped at page ``i``: VA- and PFN-contiguous pages
    of one folio (order ``order``), of ``kind`` folio or hzero."""
    code = orders[i]
    nr = 1 << order
    pfn = pfns[i]
    head = pfn & ~(nr - 1)
    j = i + 1
    while (j < len(orders) and orders[j] == code and pfns[j] == pfn + (j - i)
           and pfns[j] < head + nr):
        j += 1
    whole = pfn == head and j - i == nr
    return Run(i, j - i, kind, order, whole, 1, pfn - head)


def _pieces(orders: Sequence[int], pfns: Sequence[int], geometry: Geometry) -> Iterable[Run]:
    i, n = 0, len(orders)
    while i < n:
        code = orders[i]
        kind = ORDER_CODE_KIND.get(code, FOLIO)
        if kind == FOLIO:
            piece = _folio_piece(i, orders, pfns, code, FOLIO)
        elif kind == HUGE_ZERO:
            piece = _folio_piece(i, orders, pfns, geometry.pmd_order, HUGE_ZERO)
        else:
            piece = Run(i, 1, kind)
        yield piece
        i += piece.pages


def merge_pieces(pieces: Iterable[Run]) -> list[Run]:
    """Adjacent pieces merged into runs (see the module docstring)."""
    runs: list[Run] = []
    for piece in pieces:
        if runs and runs[-1].joins(piece):
            last = runs[-1]
            runs[-1] = replace(last, pages=last.pages + piece.pages,
                               folios=last.folios + piece.folios)
        else:
            runs.append(piece)
    return runs


def build_runs(orders: Iterable[int], pfns: Iterable[int], geometry: Geometry) -> list[Run]:
    """Runs of a range from per-page ``read_ptes`` order codes and PFNs.

    >>> from pylaf.geometry import Geometry
    >>> g = Geometry.for_machine(4096)
    >>> runs = build_runs([4] * 16 + [0, lib.LAF_ORDER_NONE], list(range(32, 48)) + [7, 0], g)
    >>> format_runs(runs, g.page_size)
    '0+64K:64K 64K+4K:4K 68K+4K:none'
    """
    return merge_pieces(_pieces([int(o) for o in orders], [int(p) for p in pfns], geometry))


def pfns_of(ptes: Iterable[int]) -> list[int]:
    """Page frame numbers of raw ``read_ptes`` entries (bit ``LAF_PTE_PFN_SHIFT`` up)."""
    return [int(p) >> lib.LAF_PTE_PFN_SHIFT for p in ptes]


def runs_from_ptes(ptes: Iterable[int], orders: Iterable[int], geometry: Geometry) -> list[Run]:
    """:func:`build_runs` of ``AddressSpace.read_ptes()`` output."""
    return build_runs(orders, pfns_of(ptes), geometry)


def labelled(runs: Iterable[Run], page_size: int) -> list[tuple[int, int, str]]:
    """``(offset_bytes, length_bytes, label)`` per run."""
    return [(r.page * page_size, r.pages * page_size, r.label(page_size)) for r in runs]


def format_runs(runs: Iterable[Run], page_size: int) -> str:
    """``"0+56K:4K 56K+960K:64K"`` (offset+length:label, sizes in K/M/G)."""
    return format_labelled(labelled(runs, page_size))


def format_labelled(runs: Iterable[tuple[int, int, str]]) -> str:
    """:func:`format_runs` of :func:`labelled` tuples."""
    return " ".join(f"{format_size(off) if off else '0'}+{format_size(n)}:{lab}"
                    for off, n, lab in runs)


@dataclass(frozen=True)
class LayoutSummary:
    """Counts over the runs of one range."""

    pages_by_order: dict[int, int]       # folio pages mapped, by folio order
    folios_by_order: dict[int, int]      # whole folios mapped inside the range
    partial_by_order: dict[int, int]     # partially mapped folio pieces
    zero: int                            # small zero-page PTEs
    hzero: int                           # pages of the huge zero folio

    @classmethod
    def of(cls, runs: Iterable[Run]) -> LayoutSummary:
        pages: dict[int, int] = {}
        folios: dict[int, int] = {}
        partial: dict[int, int] = {}
        zero = hzero = 0
        for r in runs:
            if r.kind == ZERO:
                zero += r.pages
            elif r.kind == HUGE_ZERO:
                hzero += r.pages
            elif r.kind == FOLIO and r.order is not None:
                pages[r.order] = pages.get(r.order, 0) + r.pages
                into = folios if r.whole else partial
                into[r.order] = into.get(r.order, 0) + r.folios
        return cls(pages, folios, partial, zero, hzero)


__all__ = ["FOLIO", "HUGE_ZERO", "NONE", "ORDER_CODE_KIND", "SWAP", "ZERO", "LayoutSummary", "Run",
           "build_runs", "format_labelled", "format_runs", "labelled", "merge_pieces", "pfns_of",
           "runs_from_ptes"]
