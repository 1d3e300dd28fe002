"""Every cell of the LAF-era policy tables (policy.c header comment, after
the 2023 LAF discussion (see csrc/policy.c): Ryan Roberts' LAF v3 table and Huang Ying's two
alternatives and long-term sysfs values).

Notation: S = order 0, LAF = the seed's anon_folio_order() ladder, THP = the
PMD path.  A cell "THP>LAF>S" is checked in three steps on a fresh 4M
(PMD-aligned) VMA, 4K pages, generic arch (so LAF = order 3, the
PAGE_ALLOC_COSTLY_ORDER, since arch_wants_pte_order() is -1):

1. a write at the first 2M boundary maps the first element (order 9 / 3 / 0);
2. a write at the second 2M boundary, with the first element's allocation
   failing, maps the second element;
3. a write in another 32K block of that second PMD, with order 3 failing,
   maps order 0.
"""
from __future__ import annotations

import itertools

import pytest
from conftest import K, M, place

from pylaf import FaultKind, Policy

# (table, sysfs) -> {hint: cell}; the prctl=disable column is S everywhere.
LAF_V3 = {
    "never":   {"none": "LAF>S", "MADV_HUGEPAGE": "LAF>S", "MADV_NOHUGEPAGE": "S"},
    "madvise": {"none": "LAF>S", "MADV_HUGEPAGE": "THP>LAF>S", "MADV_NOHUGEPAGE": "S"},
    "always":  {"none": "THP>LAF>S", "MADV_HUGEPAGE": "THP>LAF>S", "MADV_NOHUGEPAGE": "S"},
}
HUANG_A = {
    "never":   {"none": "S", "MADV_HUGEPAGE": "S", "MADV_NOHUGEPAGE": "S"},
    "madvise": {"none": "LAF>S", "MADV_HUGEPAGE": "THP>LAF>S", "MADV_NOHUGEPAGE": "S"},
    "always":  {"none": "THP>LAF>S", "MADV_HUGEPAGE": "THP>LAF>S", "MADV_NOHUGEPAGE": "S"},
}
HUANG_B = {
    "never":   {"none": "S", "MADV_HUGEPAGE": "S", "MADV_NOHUGEPAGE": "S"},
    "madvise": {"none": "S", "MADV_HUGEPAGE": "THP>LAF>S", "MADV_NOHUGEPAGE": "S"},
    "always":  {"none": "THP>LAF>S", "MADV_HUGEPAGE": "THP>LAF>S", "MADV_NOHUGEPAGE": "S"},
}
# Huang Ying's long-term global values.  "auto" unhinted is the readahead-
# style ramp (tested separately): an isolated first write is S.
HUANG_SYSFS = {
    "never":   {"none": "S", "MADV_HUGEPAGE": "S", "MADV_NOHUGEPAGE": "S"},
    "madvise": {"none": "S", "MADV_HUGEPAGE": "THP>LAF>S", "MADV_NOHUGEPAGE": "S"},
    "always":  {"none": "THP>LAF>S", "MADV_HUGEPAGE": "THP>LAF>S", "MADV_NOHUGEPAGE": "S"},
    "small":   {"none": "LAF>S", "MADV_HUGEPAGE": "LAF>S", "MADV_NOHUGEPAGE": "S"},
    "auto":    {"none": "S", "MADV_HUGEPAGE": "THP>LAF>S", "MADV_NOHUGEPAGE": "S"},
}
TABLES = {"laf-v3": LAF_V3, "huang-a": HUANG_A, "huang-b": HUANG_B, "huang-sysfs": HUANG_SYSFS}

CELLS = [(kind, sysfs, hint, prctl)
         for kind, table in TABLES.items()
         for sysfs, row in table.items()
         for hint, prctl in itertools.product(row, ("enabled", "disabled"))]

ORDER = {"THP": 9, "LAF": 3, "S": 0}


def expected(kind: str, sysfs: str, hint: str, prctl: str) -> str:
    if prctl == "disabled":
        return "S"          # prctl=dis column of every table
    return TABLES[kind][sysfs][hint]


def _fault(mm, addr: int) -> int:
    r = mm.fault(addr, write=True)
    assert r.order >= 0
    return r.order


@pytest.mark.parametrize("kind,sysfs,hint,prctl", CELLS,
                         ids=["-".join(c) for c in CELLS])
def test_policy_table_cell(mm_factory, kind: str, sysfs: str, hint: str, prctl: str) -> None:
    chain = expected(kind, sysfs, hint, prctl).split(">")
    mm = mm_factory(Policy(kind=kind, enabled=sysfs))
    a = place(mm, "4M")
    if hint != "none":
        mm.madvise(a, "4M", hint)
    if prctl == "disabled":
        mm.set_thp_disable(True)

    # step 1: nothing fails
    r = mm.fault(a, write=True)
    assert r.order == ORDER[chain[0]], f"step 1 of {chain}"
    if chain[0] == "THP":
        assert r.kind == FaultKind.PMD
        assert mm.stats().thp_fault_alloc == 1
    else:
        assert r.kind == FaultKind.ANON_WRITE
        assert mm.stats().thp_fault_alloc == 0 and mm.stats().thp_fault_fallback == 0

    if len(chain) == 1:
        # S: a second, isolated write elsewhere is order 0 too
        assert _fault(mm, a + 2 * M + 96 * K) == 0
        return
    # step 2: the preferred size cannot be allocated
    mm.inject_alloc_fail(ORDER[chain[0]])
    assert _fault(mm, a + 2 * M) == ORDER[chain[1]], f"step 2 of {chain}"
    if chain[0] == "THP":
        assert mm.stats().thp_fault_fallback == 1
    if len(chain) == 3:
        # step 3: PTE table now exists in the second PMD; LAF fails too
        mm.inject_alloc_fail(ORDER[chain[1]])
        assert _fault(mm, a + 2 * M + 64 * K) == 0, f"step 3 of {chain}"
    mm.inject_clear()


@pytest.mark.parametrize("kind", list(TABLES))
def test_prctl_except_advised_in_laf_tables(mm_factory, kind: str) -> None:
    """PR_THP_DISABLE_EXCEPT_ADVISED post-dates the seed; policy.c applies it
    as upstream does: disabled unless VM_HUGEPAGE."""
    mm = mm_factory(Policy(kind=kind, enabled="always"))
    plain = place(mm, "4M")
    hinted = place(mm, "4M")
    mm.madvise(hinted, "4M", "hugepage")
    mm.set_thp_disable(True, except_advised=True)
    assert mm.thp_disable == 3
    assert _fault(mm, plain) == 0
    assert _fault(mm, hinted) == 9


def _ramp_expect(seq: list[int], vma_start: int, vma_len: int, cap: int = 4) -> list[int]:
    """The 'auto' heuristic as the policy.c header documents it, applied to
    a write sequence in an empty, 64K-aligned VMA (4K pages): candidates are
    orders 2..ramp (highest fitting with an empty range wins); a write at
    exactly the end of the previous folio raises the ramp by 2 (to >= 2, up
    to the 64K cap), any other write lowers it by 2 (to 0)."""
    mapped: set[int] = set()
    ramp, nxt, out = 0, 0, []
    for addr in seq:
        page = addr // 4096
        if page in mapped:
            out.append(None)
            continue
        order = 0
        for o in range(min(ramp, cap), 1, -1):
            base = (addr // (4096 << o)) * (4096 << o)
            pages = range(base // 4096, base // 4096 + (1 << o))
            if base >= vma_start and base + (4096 << o) <= vma_start + vma_len and \
                    not mapped.intersection(pages):
                order = o
                break
        base = (addr // (4096 << order)) * (4096 << order)
        mapped.update(range(base // 4096, base // 4096 + (1 << order)))
        out.append(order)
        if (addr // 4096) * 4096 == nxt:
            ramp = 2 if ramp < 2 else min(ramp + 2, cap)
        else:
            ramp = 0 if ramp <= 3 else ramp - 2
        nxt = base + (4096 << order)
    return out


def test_huang_sysfs_auto_ramp_sequential(mm_factory) -> None:
    mm = mm_factory(Policy(kind="huang-sysfs", enabled="auto"))
    a = place(mm, "1M", align="64K")
    seq = [a + i * 4 * K for i in range(256)]
    got = []
    for addr in seq:
        r = mm.fault(addr, write=True)
        got.append(None if r.nr_faults == 0 else r.order)
    want = _ramp_expect(seq, a, 1 * M)
    assert got == want
    # the stream reaches the 64K cap and stays there
    assert mm.stats().folios_mapped["64K"] >= 12
    assert mm.stats().folios_mapped["128K"] == 0


def test_huang_sysfs_auto_sparse_writes_stay_small(mm_factory) -> None:
    mm = mm_factory(Policy(kind="huang-sysfs", enabled="auto"))
    a = place(mm, "4M", align="64K")
    for i in range(64):
        mm.fault(a + i * 64 * K + 20 * K, write=True)   # one write per 64K block
    s = mm.stats()
    assert s.folios_mapped["4K"] == 64 and s.mm_anonpages == 64


def test_huang_sysfs_auto_hinted_is_thp(mm_factory) -> None:
    mm = mm_factory(Policy(kind="huang-sysfs", enabled="auto"))
    a = place(mm, "2M")
    mm.madvise(a, "2M", "hugepage")
    assert _fault(mm, a + 12 * K) == 9
