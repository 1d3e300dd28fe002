"""The model's own consistency checks (the peer of csrc/check.c, written
separately): table fill counts, RSS against the mapped pages, memcg usage
against its limit, VMA order and overlap."""
from __future__ import annotations

from pylaf.reference.abi import PTE_SPECIAL
from pylaf.reference.mm_types import HugePmd, MmStruct


def _rss_problems(mm: MmStruct) -> list[str]:
    problems: list[str] = []
    rss = 0
    for idx, ent in mm.pmd.items():
        if isinstance(ent, HugePmd):
            if not ent.folio.huge_zero:
                rss += ent.folio.nr
            continue
        used = sum(1 for p in ent.ptes if p)
        if used != ent.used:
            problems.append(f"table {idx:#x}: used {ent.used} != {used}")
        rss += sum(1 for p in ent.ptes if p and not p & PTE_SPECIAL)
    if rss != mm.cnt["mm_anonpages"]:
        problems.append(f"mm_anonpages {mm.cnt['mm_anonpages']} != mapped {rss}")
    return problems


def find_problems(mm: MmStruct) -> list[str]:
    """Everything wrong with the model's bookkeeping (empty when consistent)."""
    problems = _rss_problems(mm)
    for a, b in zip(mm.vma_list, mm.vma_list[1:], strict=False):
        if a.start >= a.end or a.end > b.start:
            problems.append(f"VMAs out of order or overlapping: {a} {b}")
    lim = mm.phys.memcg_limit
    if lim is not None and mm.phys.memcg_charged > lim:
        problems.append(f"memcg charged {mm.phys.memcg_charged} > limit {lim}")
    return problems
