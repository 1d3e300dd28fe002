"""The model's own consistency checks (the peer of csrc/check.c, written
separately): per mm, table fill counts, RSS against the mapped pages and
VMA order; over the machine, every folio's refcount and mapcounts recounted
from the page tables of every mm (docs/kernel-semantics.md §3.5), every
mapping where rmap would look for it (vma_address() of folio->index), the LRU
and per-size gauges, and memcg usage against its limit."""
from __future__ import annotations

from collections import defaultdict
from typing import Optional

from pylaf.reference.abi import PFN_SHIFT, PTE_SPECIAL
from pylaf.reference.mm_types import HugePmd, Machine, MmStruct, RefFolio, vma_address


class Recount:
    """Mappings seen in the page tables: per folio, per page PTE mappings,
    PMD mappings, and mappings per mm id."""

    def __init__(self) -> None:
        self.pte: dict[RefFolio, list[int]] = {}
        self.pmd: dict[RefFolio, int] = defaultdict(int)
        self.by_mm: dict[RefFolio, dict[int, int]] = defaultdict(lambda: defaultdict(int))

    def add_pte(self, f: RefFolio, k: int, mm: MmStruct) -> None:
        self.pte.setdefault(f, [0] * f.nr)[k] += 1
        self.by_mm[f][mm.mm_id] += 1

    def add_pmd(self, f: RefFolio, mm: MmStruct) -> None:
        self.pmd[f] += 1
        self.by_mm[f][mm.mm_id] += 1


def _rmap_problem(mm: MmStruct, va: int, f: RefFolio, k: int) -> Optional[str]:
    """rmap must find page ``k`` of ``f`` where it is mapped: inside a VMA,
    at vma_address() of its index (the folio's VA need not be aligned to
    its size after mremap(), docs/kernel-semantics.md §5.4)."""
    vma = mm.find_vma(va)
    if vma is None:
        return f"mm {mm.mm_id}: page {k} of folio pfn {f.pfn:#x} mapped at {va:#x} outside any VMA"
    if vma_address(mm.geo, vma, f.index + k) != va:
        return (f"mm {mm.mm_id}: page {k} of folio pfn {f.pfn:#x} (index {f.index:#x}) mapped at "
                f"{va:#x}, but rmap finds it at {vma_address(mm.geo, vma, f.index + k)} in {vma}")
    return None


def _mm_problems(mm: MmStruct, seen: Recount) -> list[str]:
    problems: list[str] = []
    rss = 0
    g = mm.geo
    for idx, ent in mm.pmd.items():
        if isinstance(ent, HugePmd):
            if not ent.folio.huge_zero:
                rss += ent.folio.nr
                seen.add_pmd(ent.folio, mm)
                bad = _rmap_problem(mm, idx << g.pmd_shift, ent.folio, 0)
                problems += [bad] if bad else []
            continue
        used = sum(1 for p in ent.ptes if p)
        if used != ent.used:
            problems.append(f"mm {mm.mm_id} table {idx:#x}: used {ent.used} != {used}")
        for i, p in enumerate(ent.ptes):
            if p and not p & PTE_SPECIAL:
                rss += 1
                f = mm.folio_of[p >> PFN_SHIFT]
                seen.add_pte(f, (p >> PFN_SHIFT) - f.pfn, mm)
                bad = _rmap_problem(mm, (idx << g.pmd_shift) + (i << g.page_shift), f, (p >> PFN_SHIFT) - f.pfn)
                problems += [bad] if bad else []
    if rss != mm.cnt["mm_anonpages"]:
        problems.append(f"mm {mm.mm_id}: mm_anonpages {mm.cnt['mm_anonpages']} != mapped {rss}")
    for a, b in zip(mm.vma_list, mm.vma_list[1:], strict=False):
        if a.start >= a.end or a.end > b.start:
            problems.append(f"mm {mm.mm_id}: VMAs out of order or overlapping: {a} {b}")
    return problems


def _slot_problems(f: RefFolio, by_mm: dict[int, int]) -> list[str]:
    """Each MM-id slot counts at most its mm's mappings (fewer when some were
    added while no slot was free: folio_sub_return_large_mapcount() lets the
    slot underflow and frees it); the shared bit is set whenever the mappings
    are spread over more than one mm or some mapping is not in its mm's slot."""
    problems: list[str] = []
    in_slot = {}
    for i in (0, 1):
        if f.mm_id[i]:
            in_slot[f.mm_id[i]] = f.mm_id_mapcount[i]
            if not 0 < f.mm_id_mapcount[i] <= by_mm.get(f.mm_id[i], 0):
                problems.append(f"mm_id[{i}]={f.mm_id[i]} mapcount {f.mm_id_mapcount[i]} "
                                f"not in 1..{by_mm.get(f.mm_id[i], 0)}")
    owners = [m for m, n in by_mm.items() if n]
    unaccounted = any(in_slot.get(m, 0) < by_mm[m] for m in owners)
    if (len(owners) > 1 or unaccounted) and not f.shared:
        problems.append(f"mapped by mms {sorted(owners)} (slots {f.mm_id} {f.mm_id_mapcount}) "
                        f"but not maybe-mapped-shared")
    return problems


def _folio_problems(f: RefFolio, seen: Recount) -> list[str]:
    pte = seen.pte.get(f, [0] * f.nr)
    pmd = seen.pmd.get(f, 0)
    problems: list[str] = []
    if pte != f.page_mapcount:
        problems.append("per-page _mapcount differs from the PTEs")
    if f.large:
        if f.entire_mapcount != pmd:
            problems.append(f"entire_mapcount {f.entire_mapcount} != {pmd} PMDs")
        if f.large_mapcount != sum(pte) + pmd:
            problems.append(f"large_mapcount {f.large_mapcount} != {sum(pte) + pmd}")
        if f.nr_pages_mapped != sum(1 for n in pte if n):
            problems.append(f"nr_pages_mapped {f.nr_pages_mapped} wrong")
        problems += _slot_problems(f, seen.by_mm.get(f, {}))
    if f.refcount != sum(pte) + pmd:
        problems.append(f"refcount {f.refcount} != {sum(pte) + pmd} mappings")
    if f.partially_mapped and not f.queued:
        problems.append("partially mapped but not on the deferred split queue")
    return [f"folio pfn {f.pfn:#x} order {f.order}: {p}" for p in problems]


def find_problems(machine: Machine) -> list[str]:
    """Everything wrong with the model's bookkeeping (empty when consistent)."""
    seen = Recount()
    problems: list[str] = []
    for mm in machine.mms:
        problems += _mm_problems(mm, seen)
    folios = {id(f): f for f in machine.folio_of.values()}.values()
    nr_anon = [0] * len(machine.gauges["nr_anon"])
    for f in folios:
        problems += _folio_problems(f, seen)
        if f.order >= 2:
            nr_anon[f.order] += 1
    if nr_anon != machine.gauges["nr_anon"]:
        problems.append(f"nr_anon {machine.gauges['nr_anon']} != {nr_anon}")
    lru = sum(f.nr for f in folios)
    if lru != machine.lru_pages:
        problems.append(f"lru_pages {machine.lru_pages} != {lru}")
    lim = machine.phys.memcg_limit
    if lim is not None and machine.phys.memcg_charged > lim:
        problems.append(f"memcg charged {machine.phys.memcg_charged} > limit {lim}")
    return problems
