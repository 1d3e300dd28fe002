"""VMAs at scale (issue 13 item 5): the VMA tree of csrc/vma.c and
vm.max_map_count, on the C core and the reference model.

The tree must keep the VMA order and placement of the sorted array it
replaced (the differential tests check that against pylaf.reference); here:
many VMAs against a plain Python model, mmap cost that does not grow with the
number of VMAs, and the max_map_count rules of mm/mmap.c do_mmap() (``>``)
and mm/vma.c split_vma() / vms_gather_munmap_vmas() (``>=``), with
madvise's -ENOMEM -> -EAGAIN (mm/madvise.c madvise_vma_behavior()).
"""
from __future__ import annotations

import random
import time
from typing import Union

import pytest

from pylaf import AddressSpace, Config, LafMemoryError, LafValueError
from pylaf._ffi import ffi, lib
from pylaf.reference import Reference

Side = Union[AddressSpace, Reference]
PAGE = 4096


@pytest.fixture(params=[AddressSpace, Reference])
def side(request: pytest.FixtureRequest) -> type:
    return request.param  # type: ignore[no-any-return]


def _open(side: type, max_map_count: int) -> Side:
    return side(Config(ram="64M", max_map_count=max_map_count))  # type: ignore[no-any-return]


def _errno(call: object) -> int:
    with pytest.raises(LafMemoryError) as ei:
        call()  # type: ignore[operator]
    return int(ei.value.errno)


def _fill(mm: Side, n: int) -> list[int]:
    """n one-page VMAs that cannot merge (alternating protections), top-down."""
    return [mm.mmap(PAGE, prot="rw" if i % 2 else "r") for i in range(n)]


# ------------------------------------------------------------ max_map_count
def test_mmap_fails_above_max_map_count(side: type) -> None:
    """do_mmap(): map_count > max_map_count -> ENOMEM, so max + 1 VMAs fit."""
    mm = _open(side, 4)
    _fill(mm, 5)
    assert len(mm.vmas()) == 5
    assert _errno(lambda: mm.mmap(PAGE, prot="r")) == lib.LAF_ENOMEM
    assert _errno(lambda: mm.mmap(PAGE, addr=0x10000000, prot="r", fixed=True)) == lib.LAF_ENOMEM
    assert len(mm.vmas()) == 5
    mm.check_invariants()


def test_max_map_count_zero_allows_one_mapping(side: type) -> None:
    """vm.max_map_count = 0: the first mmap passes (0 > 0 is false), the second fails."""
    mm = _open(side, 0)
    mm.mmap(PAGE)
    assert _errno(lambda: mm.mmap(PAGE, prot="r")) == lib.LAF_ENOMEM


def test_merging_mmap_at_the_limit(side: type) -> None:
    """The check counts VMAs before the mapping: at max + 1 even a mapping
    that would merge is refused; below it, a merge keeps the count."""
    mm = _open(side, 3)
    a = mm.mmap(4 * PAGE)
    mm.munmap(a + PAGE, PAGE)
    mm.mmap(PAGE, addr=a + PAGE, fixed=True)          # refills the hole: merges back
    assert len(mm.vmas()) == 1


def test_munmap_middle_split_at_the_limit(side: type) -> None:
    """vms_gather_munmap_vmas(): the middle of one VMA at map_count >= max ->
    ENOMEM; an edge or a whole VMA is fine."""
    mm = _open(side, 3)
    big = mm.mmap(16 * PAGE)
    _fill(mm, 2)
    assert len(mm.vmas()) == 3
    before = mm.vmas()
    assert _errno(lambda: mm.munmap(big + 4 * PAGE, PAGE)) == lib.LAF_ENOMEM
    assert mm.vmas() == before
    mm.munmap(big, PAGE)                               # first page: no net new VMA
    mm.munmap(big + 15 * PAGE, PAGE)                   # last page
    assert len(mm.vmas()) == 3
    mm.check_invariants()


def test_munmap_middle_below_the_limit_may_reach_it(side: type) -> None:
    mm = _open(side, 3)
    big = mm.mmap(16 * PAGE)
    _fill(mm, 1)
    mm.munmap(big + 4 * PAGE, PAGE)                    # 2 < 3: allowed, now 3
    assert len(mm.vmas()) == 3


def test_madvise_split_at_the_limit_is_eagain(side: type) -> None:
    """madvise(NOHUGEPAGE) of a middle page needs split_vma(); at the limit it
    is -ENOMEM, which madvise reports as -EAGAIN.  DONTNEED splits nothing."""
    mm = _open(side, 3)
    big = mm.mmap(16 * PAGE)
    _fill(mm, 2)
    before = mm.vmas()
    assert _errno(lambda: mm.madvise(big + 8 * PAGE, PAGE, "MADV_NOHUGEPAGE")) == lib.LAF_EAGAIN
    assert _errno(lambda: mm.madvise(big + 15 * PAGE, PAGE, "MADV_NOHUGEPAGE")) == lib.LAF_EAGAIN
    assert mm.vmas() == before
    mm.madvise(big + 8 * PAGE, PAGE, "MADV_DONTNEED")
    mm.madvise(big, 16 * PAGE, "MADV_NOHUGEPAGE")      # whole VMA: no split
    mm.check_invariants()


def test_madvise_middle_needs_two_splits(side: type) -> None:
    """Both splits of a middle range are checked (map_count + 1 >= max fails)."""
    mm = _open(side, 3)
    big = mm.mmap(16 * PAGE)
    _fill(mm, 1)
    assert _errno(lambda: mm.madvise(big + 8 * PAGE, PAGE, "MADV_HUGEPAGE")) == lib.LAF_EAGAIN
    mm.madvise(big + 15 * PAGE, PAGE, "MADV_HUGEPAGE")  # one split: 2 < 3
    assert len(mm.vmas()) == 3


def test_madvise_edge_that_merges_needs_no_split(side: type) -> None:
    """vma_modify(): vma_merge_existing_range() first; an edge range that
    merges into its neighbour moves the boundary, no split_vma(), no check."""
    mm = _open(side, 2)
    a = mm.mmap(8 * PAGE)
    mm.madvise(a + 4 * PAGE, 4 * PAGE, "MADV_HUGEPAGE")   # 1 -> 2 VMAs
    assert len(mm.vmas()) == 2
    # at the limit: the last page of the lower VMA joins the upper one
    mm.madvise(a + 3 * PAGE, PAGE, "MADV_HUGEPAGE")
    vm = mm.vmas()
    assert [(v.start - a, v.end - a) for v in vm] == [(0, 3 * PAGE), (3 * PAGE, 8 * PAGE)]
    # but a split that adds a VMA is refused
    assert _errno(lambda: mm.madvise(a + PAGE, PAGE, "MADV_HUGEPAGE")) == lib.LAF_EAGAIN
    mm.check_invariants()


def test_uffd_register_split_at_the_limit(side: type) -> None:
    """userfaultfd_register_range() -> vma_modify_flags_uffd() -> split_vma(): -ENOMEM."""
    mm = _open(side, 2)
    big = mm.mmap(16 * PAGE)
    _fill(mm, 1)
    assert _errno(lambda: mm.uffd_register(big + 15 * PAGE, PAGE)) == lib.LAF_ENOMEM
    mm.uffd_register(big, 16 * PAGE)                    # the whole VMA: no split
    mm.check_invariants()


@pytest.mark.parametrize("bad", [-1, 2**31, True, 1.0, "65530"])
def test_max_map_count_range(bad: object) -> None:
    with pytest.raises(LafValueError, match="max_map_count"):
        Config(max_map_count=bad)  # type: ignore[arg-type]


def test_c_core_rejects_max_map_count_above_int_max() -> None:
    cfg = ffi.new("struct laf_config *")
    lib.laf_config_default(cfg)
    assert cfg.max_map_count == 65530
    cfg.max_map_count = 2**31
    out = ffi.new("laf_mm **")
    assert lib.laf_mm_create(cfg, out) == lib.LAF_EINVAL


def test_probe_pattern_fails_at_the_limit(side: type) -> None:
    """The live probe's pattern (csrc/kprog/probes/map_count.c): one-page
    MAP_FIXED mappings every other page of a PROT_NONE reservation.  The
    emulator's MAP_FIXED does not replace, so each step is munmap + mmap, the
    two checks the kernel's MAP_FIXED makes (do_mmap() and the middle split
    of vms_gather_munmap_vmas())."""
    mm = _open(side, 20)
    base = mm.mmap(64 * PAGE, prot="")
    made = 0
    for i in range(32):
        at = base + 2 * i * PAGE
        try:
            mm.munmap(at, PAGE)
            mm.mmap(PAGE, addr=at, prot="r", fixed=True)
        except LafMemoryError as exc:
            assert exc.errno == lib.LAF_ENOMEM
            break
        made += 1
    # reservation split every other page: 1 + 2 * made VMAs (the first one at
    # the reservation's start adds one); fails when map_count reaches 20
    assert len(mm.vmas()) == 20
    assert made == 10
    mm.check_invariants()


# -------------------------------------------------------------- the tree
def test_many_vmas_against_a_model() -> None:
    """20,000 VMAs, random unmaps, merges and re-maps: the VMA list equals a
    plain model, and check_invariants() (validate_mm(): list, tree, AVL
    balance, rb_subtree_gap) passes throughout."""
    rng = random.Random(13)
    mm = AddressSpace(Config(ram="64M"))
    addrs = _fill(mm, 20000)
    model = {a: ("rw" if i % 2 else "r") for i, a in enumerate(addrs)}
    for step in range(3000):
        a = rng.choice(addrs)
        if a in model:
            mm.munmap(a, PAGE)
            del model[a]
        else:
            got = mm.mmap(PAGE, addr=a, prot="r" if rng.random() < 0.5 else "rw", fixed=True)
            assert got == a
            model[a] = "?"
        if step % 1000 == 0:
            mm.check_invariants()
    mm.check_invariants()
    covered = sorted(model)
    pages = sorted(p for v in mm.vmas() for p in range(v.start, v.end, PAGE))
    assert pages == covered


def _placement_run(s: Side, plan: list[tuple[int, int]], lens: list[int]) -> tuple[list[int], list[tuple[int, int, int]]]:
    _fill(s, 600)
    vm = s.vmas()
    for i, n in plan:
        v = vm[i]
        s.munmap(v.start, min(n * PAGE, v.end - v.start))
    placed = [s.mmap(ln, prot="rw" if k % 3 else "r") for k, ln in enumerate(lens)]
    s.check_invariants()
    return placed, [(v.start, v.end, int(v.flags)) for v in s.vmas()]


def test_topdown_placement_matches_reference_with_gaps() -> None:
    """Top-down placement through rb_subtree_gap finds the same gap as the
    reference's linear scan: holes of many sizes, lengths of many sizes."""
    rng = random.Random(5)
    plan = [(rng.randrange(600), rng.randrange(1, 9)) for _ in range(150)]
    lens = [rng.choice([1, 2, 3, 5, 8, 13, 512, 513]) * PAGE for _ in range(200)]
    c_side = _placement_run(AddressSpace(Config(ram="64M")), plan, lens)
    ref_side = _placement_run(Reference(Config(ram="64M")), plan, lens)
    assert c_side == ref_side


def _mmap_cost_ns(mm: AddressSpace, reps: int = 400) -> float:
    """Best per-call time of one-page mmaps that land top-down below every
    VMA (the linear-scan worst case), each unmapped again."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter_ns()
        got = [mm.mmap(PAGE, prot="") for _ in range(reps)]
        best = min(best, (time.perf_counter_ns() - t0) / reps)
        for a in got:
            mm.munmap(a, PAGE)
    return best


def test_mmap_cost_does_not_grow_with_vmas() -> None:
    """mmap at 30,000 VMAs within 3x of mmap at 1,000 (the sorted array's
    linear placement scan was ~30x: 3-4 s for 40,000 mappings)."""
    small = AddressSpace(Config(ram="64M"))
    _fill(small, 1000)
    big = AddressSpace(Config(ram="64M"))
    _fill(big, 30000)
    ratio = _mmap_cost_ns(big) / _mmap_cost_ns(small)
    assert ratio < 3.0, ratio
