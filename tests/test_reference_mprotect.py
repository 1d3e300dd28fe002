"""mprotect() in the reference model (pylaf/reference/mprotect.py): the live
findings of docs/kernel-findings.md §5.5, the rules of
docs/kernel-semantics.md §4, and the errno table of §6.4."""
from __future__ import annotations

from typing import Any

import pytest

from pylaf import Access, Config, LafError, LafMemoryError, LafValueError, Policy
from pylaf.address_space import Folio
from pylaf.reference import Reference
from pylaf.reference.abi import PTE_PROTNONE, PTE_WRITE, VM_EXEC

M = 1 << 20
P64K = Policy(kind="upstream", enabled="never", sizes={"64K": "always"})
PMD = Policy(kind="upstream", enabled="always", use_zero_page=True)


def folio(r: Reference, addr: int) -> Folio:
    f = r.folio(addr)
    assert f is not None, f"no folio at {addr:#x}"
    return f


def new(policy: Policy = P64K, **kw: Any) -> Reference:
    return Reference(Config(ram="256M", policy=policy, **kw))


def filled(r: Reference, n: int = M) -> int:
    """A 2M-aligned region (a PMD multiple is placed aligned), ``n`` bytes written."""
    a = r.mmap(2 * M)
    r.touch_range(a, n, write=True)
    return a


def test_rw_r_rw_without_fork_takes_no_fault() -> None:
    """findings §5.5 `mprotect`: exclusive anon PTEs become writable again."""
    r = new()
    a = filled(r)
    r.mprotect(a, M, "r")
    assert not r.pte(a).raw & PTE_WRITE
    r.mprotect(a, M, "rw")
    r.reset_counters()
    assert r.touch_range(a, M, write=True).faulted == 0
    assert folio(r, a).order == 4
    r.check_invariants()


def test_rw_r_rw_after_fork_faults_every_page_and_reuses() -> None:
    """findings §5.5 `mprotect-after-fork`: 256 faults, pgreuse=256."""
    r = new()
    a = filled(r)
    r.fork().exit()
    r.mprotect(a, M, "r")
    r.mprotect(a, M, "rw")
    r.reset_counters()
    assert r.touch_range(a, M, write=True).faulted == 256
    assert r.counters()["pgreuse"] == 256
    assert folio(r, a).order == 4
    r.check_invariants()


def test_round_trip_inside_a_large_folio_keeps_folios() -> None:
    """findings §5.5: 4 pages inside one 64K folio, 0 faults, folios intact;
    the VMA splits in three and merges back."""
    r = new()
    a = filled(r)
    r.mprotect(a + 4096, 4 * 4096, "r")
    assert len(r.vmas()) == 3
    assert r.fault(a + 4096, True).access == Access.SIGSEGV
    r.mprotect(a + 4096, 4 * 4096, "rw")
    assert len(r.vmas()) == 1
    r.reset_counters()
    assert r.touch_range(a, M, write=True).faulted == 0
    assert {folio(r, a + i * 4096).order for i in range(256)} == {4}
    r.check_invariants()


def test_partly_shared_folio_splits_the_batch_by_exclusivity() -> None:
    """commit_anon_folio_batch(): after a COW reuse of some pages the folio is
    partly exclusive: only those pages come back writable."""
    r = new()
    a = filled(r, 16 * 4096)
    child = r.fork()
    child.exit()
    r.fault(a, True)                                   # reuse: page 0 exclusive again
    r.mprotect(a, 16 * 4096, "r")
    r.mprotect(a, 16 * 4096, "rw")
    assert r.pte(a).raw & PTE_WRITE
    assert not r.pte(a + 4096).raw & PTE_WRITE
    r.check_invariants()


def test_zero_page_stays_read_only() -> None:
    r = new()
    a = r.mmap(2 * M)
    r.touch_range(a, 64 * 1024)
    r.fault(a + M, True)                               # an anon_vma, so nothing else changes
    r.mprotect(a, 2 * M, "r")
    r.mprotect(a, 2 * M, "rw")
    assert not r.pte(a).raw & PTE_WRITE
    r.reset_counters()
    assert r.fault(a, True).access == Access.FAULT
    r.check_invariants()


def test_prot_none_round_trip() -> None:
    """PROT_NONE: protnone entries, every access SIGSEGV (faults_sigsegv),
    nothing lost; back to rw: writable again, no fault."""
    r = new()
    a = filled(r)
    rss = r.counters()["mm_anonpages"]
    r.mprotect(a, 2 * M, "")
    assert r.pte(a).raw & PTE_PROTNONE
    r.reset_counters()
    assert r.fault(a, False).access == Access.SIGSEGV
    assert r.fault(a + M + 4096, True).access == Access.SIGSEGV
    assert r.counters()["faults_sigsegv"] == 2 and r.counters()["pgfault"] == 0
    r.mprotect(a, 2 * M, "rw")
    assert r.counters()["mm_anonpages"] == rss
    assert r.touch_range(a, M, write=True).faulted == 0
    r.check_invariants()


def test_arena_growth_from_a_prot_none_reservation() -> None:
    """glibc's new_heap()/grow_heap(): mmap PROT_NONE, mprotect rw in steps;
    the writable part is one VMA that grows (VM_ACCOUNT gained each time)."""
    r = new()
    a = r.mmap(8 * M, prot="")
    for step in range(1, 5):
        r.mprotect(a, step * 128 * 1024, "rw")
        r.touch_range(a, step * 128 * 1024, write=True)
        assert len(r.vmas()) == 2
        assert r.vmas()[0].end == a + step * 128 * 1024
    assert r.touch_range(a + 512 * 1024, 4096).sigsegv == 1
    r.check_invariants()


def test_read_only_vma_read_hits_write_segv() -> None:
    r = new()
    a = filled(r)
    r.mprotect(a, M, "r")
    r.reset_counters()
    assert r.touch_range(a, M).hits == 256
    assert r.fault(a, True).access == Access.SIGSEGV


def test_exec_is_a_flag_that_only_splits_and_merges() -> None:
    """VM_EXEC: rw -> rwx splits the VMA, reads and writes still work,
    rwx -> rw merges back (JIT code pages)."""
    r = new()
    a = filled(r)
    r.mprotect(a, 64 * 1024, "rx")
    assert len(r.vmas()) == 2 and int(r.vmas()[0].flags) & VM_EXEC
    assert r.fault(a, False).access == Access.HIT
    r.mprotect(a, 64 * 1024, "rwx")
    assert r.fault(a, True).access == Access.HIT       # exclusive: writable at once
    r.mprotect(a, 64 * 1024, "rw")
    assert len(r.vmas()) == 1
    r.check_invariants()


def test_pmd_thp_whole_and_partial() -> None:
    """change_huge_pmd(): a whole PMD stays a THP and comes back writable;
    a partial range splits the PMD first (__split_huge_pmd())."""
    r = new(PMD)
    a = filled(r, 4096)
    assert folio(r, a).order == 9
    r.mprotect(a, 2 * M, "r")
    r.mprotect(a, 2 * M, "rw")
    assert r.fault(a + 4096, True).access == Access.HIT
    assert r.counters()["thp_split_pmd"] == 0
    r.mprotect(a, 64 * 1024, "r")
    assert r.counters()["thp_split_pmd"] == 1
    r.mprotect(a, 64 * 1024, "rw")
    assert r.fault(a, True).access == Access.HIT
    r.check_invariants()


def test_huge_zero_pmd_never_becomes_writable() -> None:
    r = new(PMD)
    a = r.mmap(2 * M)
    r.fault(a, False)
    r.mprotect(a, 2 * M, "r")
    r.mprotect(a, 2 * M, "rw")
    assert not r.pte(a).raw & PTE_WRITE
    assert r.fault(a, True).access == Access.FAULT


def test_uffd_wp_bit_kept_and_blocks_the_upgrade() -> None:
    r = new()
    a = filled(r, 64 * 1024)
    r.uffd_register(a, 2 * M, ["wp"])
    r.uffd_writeprotect(a, 64 * 1024)
    r.mprotect(a, 64 * 1024, "r")
    r.mprotect(a, 64 * 1024, "rw")
    assert r.fault(a, True).access == Access.USERFAULT
    r.uffd_writeprotect(a, 64 * 1024, wp=False)
    assert r.fault(a, True).access == Access.HIT


def test_arm64_contpte_refolds_after_a_round_trip() -> None:
    r = new(arch="arm64")
    a = filled(r, 64 * 1024)
    blocks = r.counters()["contpte_blocks"]
    r.mprotect(a, 64 * 1024, "r")
    r.mprotect(a + 4096, 4096, "rw")                   # splits the VMA: the block unfolds
    r.mprotect(a, 64 * 1024, "rw")
    assert r.counters()["contpte_blocks"] > blocks
    r.check_invariants()


@pytest.mark.parametrize("args,exc,errno", [
    ((1, 4096, "r"), LafValueError, -22),                         # start not aligned
    ((None, (1 << 64) - 4096, "r"), LafMemoryError, -12),        # end wraps
    ((0x10000, 4096, "r"), LafMemoryError, -12),                 # no VMA
    ((None, 4 * M, "r"), LafMemoryError, -12),                   # range past the VMA
])
def test_errno_table(args: tuple[Any, ...], exc: type, errno: int) -> None:
    r = new()
    a = r.mmap(2 * M)
    addr = a if args[0] is None else args[0]
    with pytest.raises(exc) as ei:
        r.mprotect(addr, args[1], args[2])
    assert isinstance(ei.value, LafError) and ei.value.errno == errno


def test_zero_length_is_success_and_hole_keeps_partial_effect() -> None:
    r = new()
    a = r.mmap(2 * M)
    r.mprotect(a, 0, "r")
    b = r.mmap(M, addr=a + 3 * M, fixed=True)
    with pytest.raises(LafMemoryError):
        r.mprotect(a, b + M - a, "r")
    assert not int(r.vmas()[0].flags) & 2 and int(r.vmas()[-1].flags) & 2
    with pytest.raises(ValueError):
        r.mprotect(a, 4096, "rq")
