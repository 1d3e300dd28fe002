"""Every row of thp-decision-vectors.csv (docs/kernel-semantics.md §1.9), for the 64K
order and for the PMD order.

A row gives the global ``enabled`` knob, the per-size knob, the VMA hint and
the prctl state, and whether the order is allowed at fault time.  Setup per
the CSV's scenario: a 2 MiB-aligned 2 MiB VMA, one write fault.

* 64K order: per-size 64K = the row's value, every other size (the PMD size
  included) never.  Allowed → one 64K folio (anon_fault_alloc[64K] = 1),
  else one 4K page and no mTHP counter.
* PMD order: per-size 2M = the row's value, every other size never.
  Allowed → a PMD-mapped THP (thp_fault_alloc = 1), else a 4K page and the
  PMD path is not even attempted (thp_fault_fallback = 0).
"""
from __future__ import annotations

import pytest
from conftest import K, M, apply_hint_and_prctl, load_decision_vectors, place, upstream

from pylaf import Access, FaultKind, FolioFlags

ROWS = load_decision_vectors()
IDS = ["-".join(r[k] for k in ("global_enabled", "per_size_enabled", "vma_hint", "prctl"))
       for r in ROWS]


def sysfs_ok(glob: str, per: str, hinted: bool) -> bool:
    """docs/kernel-semantics.md §1.9, transcribed from thp_vma_allowable_orders()."""
    return (per == "always" or (per == "madvise" and hinted)
            or (per == "inherit" and (glob == "always" or (glob == "madvise" and hinted))))


def allowed(row: dict[str, str]) -> bool:
    hinted = row["vma_hint"] == "MADV_HUGEPAGE"
    nohuge = row["vma_hint"] == "MADV_NOHUGEPAGE"
    return (sysfs_ok(row["global_enabled"], row["per_size_enabled"], hinted) and not nohuge
            and row["prctl"] != "disable"
            and (hinted or row["prctl"] != "disable_except_advised"))


def test_vector_file_is_complete_and_consistent() -> None:
    """108 = 3 global x 4 per-size x 3 hints x 3 prctl, each once, each
    matching the rule of §2 (so the data file was not truncated or edited)."""
    assert len(ROWS) == 108
    keys = {tuple(r[k] for k in ("global_enabled", "per_size_enabled", "vma_hint", "prctl"))
            for r in ROWS}
    assert len(keys) == 108
    for r in ROWS:
        assert r["order_allowed"] in ("yes", "no")
        assert (r["order_allowed"] == "yes") == allowed(r), r
    assert sum(r["order_allowed"] == "yes" for r in ROWS) == 20


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_vector_64k(mm_factory, row: dict[str, str]) -> None:
    mm = mm_factory(upstream({"64K": row["per_size_enabled"], "2M": "never"},
                             enabled=row["global_enabled"]))
    a = place(mm, "2M")
    apply_hint_and_prctl(mm, a, 2 * M, row["vma_hint"], row["prctl"])
    addr = a + 5 * 64 * K + 12 * K          # inside the 6th 64K block
    r = mm.fault(addr, write=True)
    assert r.access == Access.FAULT and r.kind == FaultKind.ANON_WRITE
    s = mm.stats()
    folio = mm.folio(addr)
    assert folio is not None
    if row["order_allowed"] == "yes":
        assert r.order == 4
        assert folio.order == 4 and folio.index * 4096 == a + 5 * 64 * K
        assert s.anon_fault_alloc["64K"] == 1 and s.nr_anon["64K"] == 1
        assert s.mm_anonpages == 16
    else:
        assert r.order == 0 and folio.order == 0
        assert sum(s.anon_fault_alloc.values()) == 0
        assert s.mm_anonpages == 1
    # a disallowed order is filtered before allocation: never a fallback
    assert sum(s.anon_fault_fallback.values()) == 0
    assert s.thp_fault_alloc == s.thp_fault_fallback == 0


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_vector_pmd(mm_factory, row: dict[str, str]) -> None:
    mm = mm_factory(upstream({"2M": row["per_size_enabled"]}, enabled=row["global_enabled"]))
    a = place(mm, "2M")
    apply_hint_and_prctl(mm, a, 2 * M, row["vma_hint"], row["prctl"])
    r = mm.fault(a + 300 * K, write=True)
    assert r.access == Access.FAULT
    s = mm.stats()
    folio = mm.folio(a + 300 * K)
    assert folio is not None
    if row["order_allowed"] == "yes":
        assert r.kind == FaultKind.PMD and r.order == 9
        assert folio.order == 9 and folio.flags & FolioFlags.PMD_MAPPED
        assert (s.thp_fault_alloc, s.anon_fault_alloc["2M"], s.nr_anon["2M"]) == (1, 1, 1)
        assert s.mm_anonpages == 512
    else:
        assert r.kind == FaultKind.ANON_WRITE and r.order == 0
        assert s.thp_fault_alloc == 0 and s.mm_anonpages == 1
    assert s.thp_fault_fallback == 0
    assert sum(s.anon_fault_fallback.values()) == 0
