"""fork, copy-on-write and exit in the reference model, against the live
kernel's numbers (docs/kernel-findings.md §5, rules in
docs/kernel-semantics.md §2-§3).

Each process's faults are its own ``min_flt`` (as the probes measure them with
getrusage in each process); ``pgreuse`` and the per-size gauges are deltas
around the measured step.  "64K" is ``hugepages-64kB=always`` with the rest
at the defaults; "PMD" is global ``madvise``, 2048kB ``inherit``,
``use_zero_page=1`` and MADV_HUGEPAGE on the region.  Regions are 1 MiB (64K)
or 2 MiB (PMD), 2 MiB-aligned.  The C core has no fork yet, so these run on
the reference only; the machine's invariants (refcounts and mapcounts
recounted over every process) are checked after every test.
"""
from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator

import pytest
from conftest import PLACE_BASE, all_mthp, layout, place, upstream

from pylaf import Config, PteFlags
from pylaf.errors import ClosedError, LafMemoryError
from pylaf.reference import Reference, RefMachine

REGION = "1M"
NPAGES = 256


@pytest.fixture
def parent() -> Iterator[Reference]:
    """The 64K settings; the machine is checked when the test ends."""
    p = Reference(Config(ram="64M", policy=upstream({"64K": "always"})))
    yield p
    p.machine.check_invariants()


@pytest.fixture
def pmd_parent() -> Iterator[Reference]:
    p = Reference(Config(ram="64M", policy=upstream(enabled="madvise", use_zero_page=True)))
    yield p
    p.machine.check_invariants()


def delta(ref: Reference, name: str, step: Callable[[], object]) -> int:
    """How much counter ``name`` of ``ref`` moves during ``step``."""
    before = ref.counters()[name]
    step()
    return ref.counters()[name] - before


def measured(ref: Reference, step: Callable[[], object], *names: str) -> dict[str, int]:
    """Deltas of the named counters of ``ref`` (and its machine's 64K gauges) over ``step``."""
    before = ref.counters()
    gauges = ref.machine.stats()
    step()
    after = ref.counters()
    now = ref.machine.stats()
    out = {n: after[n] - before[n] for n in names}
    for g in ("nr_anon", "nr_anon_partially_mapped", "split_deferred", "anon_fault_alloc"):
        out[f"64K:{g}"] = getattr(now, g)["64K"] - getattr(gauges, g)["64K"]
    return out


def filled(p: Reference) -> int:
    """The 64K fill: 16 faults -> 16 x 64K, every page exclusive, mapcount 1."""
    a = place(p, REGION)
    assert p.touch_range(a, REGION, write=True).faulted == 16
    assert layout(p, a, REGION) == "0+1M:64K"
    return a


def write_all(ref: Reference, a: int, length: str = REGION) -> Callable[[], object]:
    return lambda: ref.touch_range(a, length, write=True)


def read_all(ref: Reference, a: int, length: str = REGION) -> Callable[[], object]:
    return lambda: ref.touch_range(a, length)


def folio_counts(ref: Reference, a: int, nr_folios: int, size: int) -> set[tuple[int, int]]:
    """(refcount, mapcount) of each folio of the region."""
    out = set()
    for i in range(nr_folios):
        f = ref.folio(a + i * size)
        assert f is not None
        out.add((f.refcount, f.mapcount))
    return out


# ------------------------------------------------------------------ §5.1
def test_fork_copies_the_page_tables_and_shares_every_folio(parent: Reference) -> None:
    """Right after fork both see 16 x 64K with kpagecount 2; no page is exclusive."""
    a = filled(parent)
    child = parent.fork()
    assert layout(child, a, REGION) == layout(parent, a, REGION) == "0+1M:64K"
    assert folio_counts(child, a, 16, 64 << 10) == {(32, 32)}
    assert child.counters()["mm_anonpages"] == parent.counters()["mm_anonpages"] == NPAGES
    assert child.counters()["nr_ptes"] == 1
    assert not (child.pte(a).flags & PteFlags.WRITE) and not (parent.pte(a).flags & PteFlags.WRITE)
    f = parent.mm.folio_of[parent.folio(a).head_pfn]  # type: ignore[union-attr]
    assert not any(f.anon_exclusive) and f.shared
    assert sorted(f.mm_id) == sorted((parent.mm.mm_id, child.mm.mm_id))
    assert f.mm_id_mapcount == [16, 16]


def test_child_write(parent: Reference) -> None:
    """child-write: child 256 copies (order 0, no mTHP counter), exits; the
    parent's 256 writes all reuse, the folios stay 16 x 64K."""
    a = filled(parent)
    child = parent.fork()
    c = measured(child, write_all(child, a), "min_flt", "pgreuse")
    assert c == {"min_flt": NPAGES, "pgreuse": 0, "64K:nr_anon": 0, "64K:nr_anon_partially_mapped": 0,
                 "64K:split_deferred": 0, "64K:anon_fault_alloc": 0}
    assert layout(child, a, REGION) == "0+1M:4K"
    assert folio_counts(parent, a, 16, 64 << 10) == {(16, 16)}     # kpagecount back to 1
    child.exit()
    p = measured(parent, write_all(parent, a), "min_flt", "pgreuse")
    assert (p["min_flt"], p["pgreuse"], p["64K:split_deferred"]) == (NPAGES, NPAGES, 0)
    assert layout(parent, a, REGION) == "0+1M:64K"


@pytest.mark.parametrize("scenario", ["child-read", "child-none"])
def test_child_read_or_nothing(parent: Reference, scenario: str) -> None:
    """child-read: 0 child faults; child-none: the child exits at once.  The
    parent then writes all with 256 faults, all reuse."""
    a = filled(parent)
    child = parent.fork()
    if scenario == "child-read":
        assert delta(child, "min_flt", read_all(child, a)) == 0
    child.exit()
    p = measured(parent, write_all(parent, a), "min_flt", "pgreuse")
    assert (p["min_flt"], p["pgreuse"]) == (NPAGES, NPAGES)
    assert layout(parent, a, REGION) == "0+1M:64K"


def test_child_alive(parent: Reference) -> None:
    """child-alive: with the child still mapping every folio the parent's 256
    writes are copies (maybe mapped shared); later writes take no fault."""
    a = filled(parent)
    child = parent.fork()
    p = measured(parent, write_all(parent, a), "min_flt", "pgreuse")
    assert (p["min_flt"], p["pgreuse"], p["64K:split_deferred"]) == (NPAGES, 0, 0)
    assert layout(parent, a, REGION) == "0+1M:4K"
    assert delta(parent, "min_flt", write_all(parent, a)) == 0
    assert layout(child, a, REGION) == "0+1M:64K"


def test_child_after_parent(parent: Reference) -> None:
    """child-after-parent: the parent copies all 256 pages; the folios are then
    the child's alone, so its 256 writes all reuse and it keeps 16 x 64K."""
    a = filled(parent)
    child = parent.fork()
    assert delta(parent, "min_flt", write_all(parent, a)) == NPAGES
    c = measured(child, write_all(child, a), "min_flt", "pgreuse")
    assert (c["min_flt"], c["pgreuse"]) == (NPAGES, NPAGES)
    assert layout(child, a, REGION) == "0+1M:64K"
    assert delta(parent, "min_flt", write_all(parent, a)) == 0
    assert folio_counts(child, a, 16, 64 << 10) == {(16, 16)}


@pytest.mark.parametrize("kept,reuse,layout_after,nr_anon", [
    (1, 0, "0+1M:4K", -16),                      # last-page: a lone page is copied, the folio freed
    (2, 32, None, 0),                            # two-pages: both reused, the folios stay
])
def test_pages_left_after_dontneed(parent: Reference, kept: int, reuse: int,
                                   layout_after: str | None, nr_anon: int) -> None:
    """last-page / two-pages: MADV_DONTNEED all but ``kept`` pages of each 64K
    folio, fork, the child exits, the parent writes all (256 faults: the kept
    pages plus the refills).  __wp_can_reuse_large_anon_folio() refuses a folio
    with folio_large_mapcount() <= 1."""
    a = filled(parent)
    for i in range(16):
        base = a + i * (64 << 10)
        parent.madvise(base + kept * 4096, (16 - kept) * 4096, "MADV_DONTNEED")
    parent.fork().exit()
    p = measured(parent, write_all(parent, a), "min_flt", "pgreuse")
    assert (p["min_flt"], p["pgreuse"], p["64K:nr_anon"]) == (NPAGES, reuse, nr_anon)
    assert p["64K:nr_anon_partially_mapped"] == nr_anon
    if layout_after is not None:
        assert layout(parent, a, REGION) == layout_after
    else:
        orders = parent.read_ptes(a, NPAGES)[1].reshape(16, 16)
        assert (orders[:, :kept] == 4).all() and (orders[:, kept:] == 0).all()


# ------------------------------------------------------------------ §5.2
def test_zero_pages_without_anon_vma_are_not_copied(parent: Reference) -> None:
    """zero_fork guard: a read-only-touched VMA has no anon_vma, so
    vma_needs_copy() is false and the child refaults every page."""
    a = place(parent, REGION)
    assert delta(parent, "min_flt", read_all(parent, a)) == NPAGES
    assert parent.vmas()[0].anon_vma == 0
    child = parent.fork()
    assert child.counters()["nr_ptes"] == 0
    assert delta(child, "min_flt", read_all(child, a)) == NPAGES
    assert layout(child, a, REGION) == "0+1M:zero"


def test_zero_pages_with_anon_vma_are_copied(parent: Reference) -> None:
    """zero-anon: 255 zero PTEs and one written page (a zero-page COW, order
    0) in a VMA with an anon_vma: the child reads with 0 faults; after it
    exits the parent's 256 writes are 1 reuse and 255 zero-page copies."""
    a = place(parent, REGION)
    parent.touch_range(a, REGION)
    parent.fault(a, write=True)
    child = parent.fork()
    assert delta(child, "min_flt", read_all(child, a)) == 0
    child.exit()
    p = measured(parent, write_all(parent, a), "min_flt", "pgreuse", "faults_wp_copy")
    assert (p["min_flt"], p["pgreuse"], p["faults_wp_copy"]) == (NPAGES, 1, NPAGES - 1)
    assert layout(parent, a, REGION) == "0+1M:4K"


def test_zero_pages_merged_with_an_anon_neighbour_are_copied(parent: Reference) -> None:
    """zero_fork without guard pages: the read-only range is part of a VMA
    that has an anon_vma through its written neighbour; the child reads 0 faults."""
    a = place(parent, "2M")
    parent.touch_range(a + (1 << 20), REGION, write=True)
    parent.touch_range(a, REGION)
    child = parent.fork()
    assert delta(child, "min_flt", read_all(child, a)) == 0


# ------------------------------------------------------------------ §5.3
def pmd_filled(p: Reference) -> int:
    a = place(p, "2M")
    p.madvise(a, "2M", "MADV_HUGEPAGE")
    assert p.touch_range(a, "2M", write=True).faulted == 1
    assert layout(p, a, "2M") == "0+2M:2M"
    return a


def test_pmd_alive(pmd_parent: Reference) -> None:
    """pmd-alive: the parent's first write splits its PMD and copies the page
    in the same fault; 512 faults, thp_split_pmd 1; the child keeps the PMD."""
    a = pmd_filled(pmd_parent)
    child = pmd_parent.fork()
    p = measured(pmd_parent, write_all(pmd_parent, a, "2M"), "min_flt", "pgreuse", "thp_split_pmd")
    assert (p["min_flt"], p["pgreuse"], p["thp_split_pmd"]) == (512, 0, 1)
    assert layout(pmd_parent, a, "2M") == "0+2M:4K"
    assert layout(child, a, "2M") == "0+2M:2M"


def test_pmd_exit(pmd_parent: Reference) -> None:
    """pmd-exit: after the child exits the PMD is reused: 1 fault, no split."""
    a = pmd_filled(pmd_parent)
    pmd_parent.fork().exit()
    p = measured(pmd_parent, write_all(pmd_parent, a, "2M"), "min_flt", "thp_split_pmd")
    assert (p["min_flt"], p["thp_split_pmd"]) == (1, 0)
    assert layout(pmd_parent, a, "2M") == "0+2M:2M"


def test_pmd_child_write(pmd_parent: Reference) -> None:
    """pmd-child-write: the child splits and copies (512 faults); after it
    exits the parent reuses its PMD with 1 fault."""
    a = pmd_filled(pmd_parent)
    child = pmd_parent.fork()
    c = measured(child, write_all(child, a, "2M"), "min_flt", "thp_split_pmd")
    assert (c["min_flt"], c["thp_split_pmd"]) == (512, 1)
    assert layout(child, a, "2M") == "0+2M:4K"
    child.exit()
    assert delta(pmd_parent, "min_flt", write_all(pmd_parent, a, "2M")) == 1
    assert layout(pmd_parent, a, "2M") == "0+2M:2M"


def test_huge_zero_pmd_is_copied(pmd_parent: Reference) -> None:
    """hzero: the child reads the copied huge zero PMD with 0 faults; the
    parent's later write gets a THP (1 fault, thp_fault_alloc 1)."""
    a = place(pmd_parent, "2M")
    pmd_parent.madvise(a, "2M", "MADV_HUGEPAGE")
    pmd_parent.touch_range(a, "2M")
    child = pmd_parent.fork()
    assert delta(child, "min_flt", read_all(child, a, "2M")) == 0
    assert layout(child, a, "2M") == "0+2M:hzero"
    p = measured(pmd_parent, write_all(pmd_parent, a, "2M"), "min_flt", "thp_fault_alloc")
    assert (p["min_flt"], p["thp_fault_alloc"]) == (1, 1)


def test_huge_zero_pmd_child_write(pmd_parent: Reference) -> None:
    """hzero-child-write: the child's write gets its own THP; the parent's
    zero PMD is untouched and its write gets another THP."""
    a = place(pmd_parent, "2M")
    pmd_parent.madvise(a, "2M", "MADV_HUGEPAGE")
    pmd_parent.touch_range(a, "2M")
    child = pmd_parent.fork()
    c = measured(child, lambda: child.fault(a, write=True), "min_flt", "thp_fault_alloc")
    assert (c["min_flt"], c["thp_fault_alloc"]) == (1, 1)
    assert layout(child, a, "2M") == "0+2M:2M"
    assert layout(pmd_parent, a, "2M") == "0+2M:hzero"
    assert delta(pmd_parent, "min_flt", lambda: pmd_parent.fault(a, write=True)) == 1
    assert layout(pmd_parent, a, "2M") == "0+2M:2M"


# ------------------------------------------------------------------ §5.4
def test_dontfork_leaves_a_hole(parent: Reference) -> None:
    """dontfork: the range is not in the child (madvise there: ENOMEM); the
    parent's PTEs were never write-protected."""
    a = filled(parent)
    parent.madvise(a, REGION, "MADV_DONTFORK")
    child = parent.fork()
    assert child.vmas() == []
    with pytest.raises(LafMemoryError):
        child.madvise(a, REGION, "MADV_HUGEPAGE")
    child.exit()
    assert delta(parent, "min_flt", write_all(parent, a)) == 0


def test_wipeonfork_gives_the_child_a_clean_slate(parent: Reference) -> None:
    """wipeonfork: no anon_vma and no page tables in the child: 256 read
    faults, all zero pages; the parent is unaffected."""
    a = filled(parent)
    parent.madvise(a, REGION, "MADV_WIPEONFORK")
    child = parent.fork()
    assert child.vmas()[0].anon_vma == 0 and child.counters()["nr_ptes"] == 0
    assert delta(child, "min_flt", read_all(child, a)) == NPAGES
    assert layout(child, a, REGION) == "0+1M:zero"
    child.exit()
    assert delta(parent, "min_flt", write_all(parent, a)) == 0


def test_dofork_and_keeponfork_undo_the_advice(parent: Reference) -> None:
    a = filled(parent)
    parent.madvise(a, REGION, "MADV_DONTFORK")
    parent.madvise(a, REGION, "MADV_DOFORK")
    parent.madvise(a, REGION, "MADV_WIPEONFORK")
    parent.madvise(a, REGION, "MADV_KEEPONFORK")
    child = parent.fork()
    assert delta(child, "min_flt", read_all(child, a)) == 0
    assert layout(child, a, REGION) == "0+1M:64K"


# ------------------------------------------------- the machine and its mms
def test_exit_gives_every_page_back() -> None:
    m = RefMachine(Config(ram="64M", policy=upstream({"64K": "always"}, enabled="madvise")))
    free0 = m.stats().free_pages
    p = m.address_space()
    a = place(p, "4M")
    p.madvise(a, "2M", "MADV_HUGEPAGE")
    p.touch_range(a, "4M", write=True)
    children = [p.fork() for _ in range(3)]
    children[0].touch_range(a, "4M", write=True)
    children[1].touch_range(a + (2 << 20), "1M", write=True)
    p.madvise(a + (3 << 20), "64K", "MADV_DONTNEED")
    m.check_invariants()
    assert len(m.mms) == 4
    for c in children:
        c.exit()
        m.check_invariants()
    p.close()
    assert m.mms == [] and m.stats().free_pages == free0
    with pytest.raises(ClosedError):
        p.fork()


def test_third_mm_keeps_the_shared_bit(parent: Reference) -> None:
    """A third mm gets no MM-id slot: the folio stays maybe-mapped-shared
    after one of the others leaves, so the parent still copies."""
    a = filled(parent)
    c1, c2 = parent.fork(), parent.fork()
    f = parent.mm.folio_of[parent.folio(a).head_pfn]  # type: ignore[union-attr]
    assert c2.mm.mm_id not in f.mm_id and f.shared
    c1.exit()
    assert f.shared and f.large_mapcount == 32
    p = measured(parent, lambda: parent.fault(a, write=True), "pgreuse", "faults_wp_copy")
    assert (p["pgreuse"], p["faults_wp_copy"]) == (0, 1)
    c2.exit()


def test_child_exit_queues_a_folio_it_leaves_partially_mapped(parent: Reference) -> None:
    """The parent copied page 0 of a folio, so page 0 is the child's alone;
    the child's exit unmaps it: _nr_pages_mapped drops, the folio is
    partially mapped and queued (__folio_remove_rmap())."""
    a = filled(parent)
    child = parent.fork()
    parent.fault(a, write=True)
    before = parent.machine.stats()
    child.exit()
    after = parent.machine.stats()
    assert after.split_deferred["64K"] - before.split_deferred["64K"] == 1
    assert after.nr_anon_partially_mapped["64K"] - before.nr_anon_partially_mapped["64K"] == 1
    assert parent.shrink_deferred_split() == 1
    assert layout(parent, a, "64K") == "0+64K:4K"


def test_one_mm_machine_stats_equal_the_address_space_stats() -> None:
    """mm.stats() of the only address space equals machine.stats(); the
    shorthand Reference and RefMachine().address_space() agree PFN for PFN."""
    cfg = Config(ram="64M", policy=upstream({"64K": "always", "16K": "always"}))
    r, m = Reference(cfg), RefMachine(cfg)
    s = m.address_space()
    for mm in (r, s):
        a = place(mm, "3M")
        mm.touch_range(a, "3M", stride="12K", write=True)
        mm.madvise(a + (64 << 10), "100K", "MADV_DONTNEED")
        mm.touch_range(a, "3M")
    assert r.stats().as_dict() == r.machine.stats().as_dict() == s.stats().as_dict() == m.stats().as_dict()
    assert (r.read_ptes(a, 768)[0] == s.read_ptes(a, 768)[0]).all()
    assert r.counters() == s.counters()


def _random_step(rnd: random.Random, r: Reference, nlive: int, a: int, span: int) -> None:
    ps = r.page_size
    off = rnd.randrange(0, span, ps)
    n = min(rnd.randrange(1, 64) * ps, span - off)
    op = rnd.random()
    if op < 0.4:
        r.touch_range(a + off, n, write=rnd.random() < 0.7)
    elif op < 0.5 and nlive < 6:
        r.fork()
    elif op < 0.58 and nlive > 1:
        r.exit()
    elif op < 0.66:
        r.madvise(a + off, n, "MADV_DONTNEED")
    elif op < 0.7:
        r.shrink_deferred_split()
    elif op < 0.76:
        r.madvise(a + off, n, rnd.choice(["MADV_DONTFORK", "MADV_DOFORK", "MADV_WIPEONFORK",
                                          "MADV_KEEPONFORK", "MADV_HUGEPAGE"]))


@pytest.mark.parametrize("page_size,arch", [(4096, "x86_64"), (4096, "arm64"), (16384, "arm64")])
@pytest.mark.parametrize("seed", range(2))
def test_random_processes_keep_the_mapcounts(seed: int, page_size: int, arch: str) -> None:
    """Writes, reads, fork, exit, DONTNEED, deferred split and the fork advices
    in up to six processes (PMD THPs and every mTHP size, contpte on arm64):
    the recount over every process holds after each step, and once all
    have exited every page is free again but the huge zero folio."""
    rnd = random.Random(seed)
    sizes = all_mthp("always", page_size, pmd="inherit")
    m = RefMachine(Config(ram="256M", page_size=page_size, arch=arch,
                          policy=upstream(sizes, enabled="madvise", use_zero_page=True)))
    p = m.address_space()
    span = 4 * p.pmd_size
    a = p.mmap(span, addr=PLACE_BASE, fixed=True)
    p.madvise(a, 2 * p.pmd_size, "MADV_HUGEPAGE")
    free0 = m.stats().free_pages
    for _ in range(150):
        live = m.mms
        with contextlib.suppress(LafMemoryError):   # madvise over a DONTFORK hole: ENOMEM
            _random_step(rnd, rnd.choice(live), len(live), a, span)
        m.check_invariants()
    for r in m.mms:
        r.exit()
    huge_zero = 1 << p.pmd_order if m.model.huge_zero is not None else 0
    assert m.stats().free_pages + huge_zero == free0
