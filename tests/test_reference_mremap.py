"""mremap() in the reference model (pylaf/reference/mremap.py): the rules of
docs/kernel-semantics.md §5, the errno table of §6.5, and a randomized
mmap/mprotect/mremap/fork/write/exit run checked after every step."""
from __future__ import annotations

import random
from typing import Any

import pytest

from pylaf import Access, Config, LafError, LafMemoryError, LafValueError, Policy
from pylaf.address_space import Folio
from pylaf.reference import Reference
from pylaf.reference.abi import PTE_UFFD_WP, PTE_WRITE

M = 1 << 20
K64 = 64 * 1024
P64K = Policy(kind="upstream", enabled="never", sizes={"64K": "always"})
PMD = Policy(kind="upstream", enabled="always", use_zero_page=True)


def folio(r: Reference, addr: int) -> Folio:
    f = r.folio(addr)
    assert f is not None, f"no folio at {addr:#x}"
    return f


def new(policy: Policy = P64K, **kw: Any) -> Reference:
    return Reference(Config(ram="256M", policy=policy, **kw))


def filled(r: Reference, n: int = M, size: int = 2 * M) -> int:
    a = r.mmap(size)
    r.touch_range(a, n, write=True)
    return a


def test_grow_in_place_then_fresh_faults() -> None:
    """expand_vma(): the room after the VMA is free, the VMA grows, nothing moves."""
    r = new()
    a = filled(r)
    assert r.mremap(a, 2 * M, 4 * M) == a
    assert [(v.start, v.end) for v in r.vmas()] == [(a, a + 4 * M)]
    assert r.touch_range(a + 2 * M, M, write=True).faulted == 16
    r.check_invariants()


def test_grow_in_place_merges_with_the_next_vma() -> None:
    r = new()
    a = r.mmap(M, addr=0x40000000, fixed=True)
    r.mmap(M, addr=a + 2 * M, fixed=True)
    assert len(r.vmas()) == 2
    r.mremap(a, M, 2 * M)
    assert [(v.start, v.end) for v in r.vmas()] == [(a, a + 3 * M)]


def test_grow_without_room_needs_may_move() -> None:
    r = new()
    a = filled(r, K64)
    r.mmap(M, addr=a + 2 * M, fixed=True)
    with pytest.raises(LafMemoryError):
        r.mremap(a, 2 * M, 4 * M)
    b = r.mremap(a, 2 * M, 4 * M, may_move=True)
    assert b != a and b % (2 * M) == 0                 # a PMD multiple is placed aligned
    assert folio(r, b).order == 4 and folio(r, b).index == a >> 12   # index kept
    assert r.fault(b, True).access == Access.HIT
    r.check_invariants()


def test_shrink_through_a_large_folio_defers_the_split() -> None:
    r = new()
    a = filled(r)
    assert r.mremap(a, 2 * M, K64 + 4096) == a
    s = r.stats()
    assert s.split_deferred["64K"] == 1 and s.nr_anon_partially_mapped["64K"] == 1
    assert r.shrink_deferred_split() == 1
    r.check_invariants()


def test_move_to_an_unaligned_fixed_address_and_refault_around_it() -> None:
    """move_ptes(): folios keep size and index at an unaligned VA; faults
    next to them get smaller orders (pte_range_none); zap, fork, COW and
    deferred split work on them."""
    r = new()
    a = filled(r, M)
    dst = a + 64 * M + 3 * 4096
    assert r.mremap(a, 2 * M, 2 * M, may_move=True, new_addr=dst) == dst
    assert folio(r, dst).order == 4 and r.vmas()[0].start == dst
    assert r.touch_range(dst, M, write=True).faulted == 0
    res = r.fault(dst + M, True)                       # right after the moved folios
    assert res.access == Access.FAULT and res.order < 4
    r.touch_range(dst, 2 * M, write=True)
    child = r.fork()
    child.touch_range(dst, M, write=True)
    r.check_invariants()
    child.exit()
    r.munmap(dst + 4096, 4096)
    assert r.shrink_deferred_split() >= 1
    r.check_invariants()


def test_pmd_thp_moves_whole_only_when_both_addresses_are_aligned() -> None:
    r = new(PMD)
    a = filled(r, 4096)
    b = r.mremap(a, 2 * M, 2 * M, may_move=True, new_addr=a + 8 * M)
    assert folio(r, b).order == 9 and r.counters()["thp_split_pmd"] == 0
    c = r.mremap(b, 2 * M, 2 * M, may_move=True, new_addr=b + 8 * M + 4096)
    assert r.counters()["thp_split_pmd"] == 1
    assert folio(r, c).order == 9                       # PTE-mapped now
    r.check_invariants()


def test_moved_vma_keeps_pgoff_and_does_not_merge_with_unrelated_neighbours() -> None:
    """§5.5: written (anon_vma): pgoff kept; a fresh neighbour does not merge."""
    r = new()
    a = filled(r, K64, size=M)
    dst = 0x50000000
    r.mremap(a, M, M, may_move=True, new_addr=dst)
    r.mmap(M, addr=dst + M, fixed=True)
    assert len(r.vmas()) == 2
    r2 = new()                                         # never written: pgoff reset, merges
    b = r2.mmap(M)
    r2.mremap(b, M, M, may_move=True, new_addr=dst)
    r2.mmap(M, addr=dst + M, fixed=True)
    assert len(r2.vmas()) == 1


def test_realloc_grown_in_steps_stays_one_vma() -> None:
    r = new()
    a = r.mmap(M)
    size = M
    for _ in range(4):
        r.touch_range(a, size, write=True)
        a = r.mremap(a, size, 2 * size, may_move=True)
        size *= 2
        assert len(r.vmas()) == 1
        r.check_invariants()


def test_dontunmap_keeps_the_old_vma_empty() -> None:
    r = new()
    a = filled(r, M)
    b = r.mremap(a, 2 * M, 2 * M, may_move=True, dontunmap=True)
    assert b != a and len(r.vmas()) == 2
    old = next(v for v in r.vmas() if v.start == a)
    assert old.anon_vma == 0
    assert r.fault(a, False).access == Access.FAULT    # fresh zero-page read
    assert folio(r, b).order == 4
    r.check_invariants()


def test_uffd_registration_and_wp_bits_dropped_by_a_move() -> None:
    r = new()
    a = filled(r, K64, size=M)
    r.uffd_register(a, M, ["wp"])
    r.uffd_writeprotect(a, K64)
    b = r.mremap(a, M, M, may_move=True, new_addr=0x60000000)
    assert not int(r.vmas()[0].flags) & 0x1200
    assert not r.pte(b).raw & PTE_UFFD_WP
    assert r.fault(b, True).access == Access.FAULT      # a write fault, reuse


def test_multi_vma_fixed_move_keeps_the_gaps() -> None:
    r = new()
    a = r.mmap(M, addr=0x40000000, fixed=True)
    r.mmap(M, addr=a + 2 * M, fixed=True)
    r.touch_range(a, M, write=True)
    assert r.mremap(a, 3 * M, 3 * M, may_move=True, new_addr=0x80000000) == 0x80000000
    assert [(v.start, v.end) for v in r.vmas()] == [(0x80000000, 0x80100000), (0x80200000, 0x80300000)]
    r.check_invariants()


def test_arm64_unaligned_move_has_no_contpte() -> None:
    r = new(arch="arm64")
    a = filled(r, K64)
    assert r.pte(a).raw & 0x20
    b = r.mremap(a, 2 * M, 2 * M, may_move=True, new_addr=0x60000000 + 4096)
    assert not r.pte(b).raw & 0x20 and r.pte(b).raw & PTE_WRITE
    r.check_invariants()


@pytest.mark.parametrize("call,exc,errno", [
    (lambda r, a: r.mremap(a + 1, M, M), LafValueError, -22),
    (lambda r, a: r.mremap(a, M, 0), LafValueError, -22),
    (lambda r, a: r.mremap(a, M, 1 << 47), LafValueError, -22),
    (lambda r, a: r.mremap(a, M, M, new_addr=0x60000000), LafValueError, -22),          # no MAYMOVE
    (lambda r, a: r.mremap(a, M, M, may_move=True, new_addr=a + 4096), LafValueError, -22),  # overlap
    (lambda r, a: r.mremap(a, M, 2 * M, may_move=True, dontunmap=True), LafValueError, -22),
    (lambda r, a: r.mremap(a, M, M, may_move=True, new_addr=0x60000001), LafValueError, -22),
    (lambda r, a: r.mremap(0x10000000, M, 2 * M), LafError, -14),                        # no VMA
    (lambda r, a: r.mremap(a, 4 * M, 8 * M, may_move=True), LafError, -14),              # past the VMA
    (lambda r, a: r.mremap(a, 0, M, may_move=True), LafValueError, -22),                 # duplicate
])
def test_errno_table(call: object, exc: type, errno: int) -> None:
    r = new()
    a = r.mmap(2 * M)
    with pytest.raises(exc) as ei:
        call(r, a)  # type: ignore[operator]
    assert isinstance(ei.value, LafError) and ei.value.errno == errno


def test_shrink_may_cross_vmas_and_same_size_is_a_no_op() -> None:
    r = new()
    a = r.mmap(M, addr=0x40000000, fixed=True)
    r.mmap(M, addr=a + M + K64, fixed=True)
    assert r.mremap(a, 4 * M, K64) == a                # old_len need not fit a shrink
    assert [(v.start, v.end) for v in r.vmas()] == [(a, a + K64)]
    assert r.mremap(a, 8 * M, 8 * M) == a


def _random_step(rnd: random.Random, procs: list[Reference]) -> None:
    r = rnd.choice(procs)
    vmas = r.vmas()
    ps = 4096
    op = rnd.randrange(9)
    if op == 0 or not vmas:
        r.mmap(rnd.choice([K64, M, 2 * M, 3 * ps]), prot=rnd.choice(["rw", "r", ""]))
        return
    v = rnd.choice(vmas)
    a = v.start + rnd.randrange(0, (v.end - v.start) // ps) * ps
    n = rnd.randrange(1, 64) * ps
    try:
        if op <= 2:
            r.touch_range(a, n, write=rnd.random() < 0.7)
        elif op == 3:
            r.mprotect(a, n, rnd.choice(["rw", "r", "", "rx"]))
        elif op == 4:
            fixed = rnd.random() < 0.5
            tgt = (v.end + rnd.randrange(1, 64) * K64 + rnd.choice([0, ps, 3 * ps])) if fixed else None
            r.mremap(a, min(n, v.end - a), rnd.randrange(1, 96) * ps, may_move=True, new_addr=tgt)
        elif op == 5:
            r.mremap(a, v.end - a, v.end - a + rnd.randrange(1, 32) * ps)
        elif op == 6 and len(procs) < 4:
            procs.append(r.fork())
        elif op == 7 and len(procs) > 1:
            procs.remove(r)
            r.exit()
        else:
            r.madvise(a, n, rnd.choice(["dontneed", "hugepage"]))
            r.shrink_deferred_split()
    except LafError as e:
        assert e.errno in (-12, -14, -22, -1)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("arch,policy", [("x86_64", P64K), ("arm64", P64K), ("x86_64", PMD)])
def test_randomized_sequences_keep_the_invariants(seed: int, arch: str, policy: Policy) -> None:
    rnd = random.Random(seed)
    procs = [new(policy, arch=arch)]
    for _ in range(120):
        _random_step(rnd, procs)
        procs[0].machine.check_invariants()
