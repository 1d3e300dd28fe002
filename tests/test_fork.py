"""fork, copy-on-write and exit through the Python API (issue 9).

Expected numbers are this machine's kernel (docs/kernel-findings.md §5, 6.18
with CONFIG_MM_ID and CONFIG_PAGE_MAPCOUNT), measured per process: a
process's faults are its own ``min_flt``.  "64K" is hugepages-64kB=always
with the rest at the defaults; "PMD" is global madvise, 2048kB inherit and
MADV_HUGEPAGE on the region.
"""
from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator

import pytest

from pylaf import AddressSpace, ClosedError, Config, LafBusyError, Machine, Policy, VmFlags
from pylaf.errors import LafError, LafMemoryError

POLICY_64K = Policy.upstream(sizes={"64K": "always"})
BASE = 0x100000000000
POLICY_PMD = Policy.upstream(enabled="madvise", sizes={"2M": "inherit"})


@pytest.fixture
def machine() -> Iterator[Machine]:
    with Machine(Config(ram="64M", policy=POLICY_64K)) as m:
        yield m


def faults(space: AddressSpace, start: int, length: str, write: bool) -> int:
    """The min_flt one pass over ``length`` costs ``space`` (getrusage-style)."""
    before = space.stats().min_flt
    space.touch_range(start, length, write=write)
    return space.stats().min_flt - before


def layout(space: AddressSpace, start: int, npages: int) -> list[int]:
    """Folio order per page (negative: none / zero page)."""
    return [int(o) for o in space.read_ptes(start, npages)[1]]


def filled(machine: Machine) -> tuple[AddressSpace, int]:
    """A parent with 1 MiB at a 2M-aligned address filled as 16 x 64K folios."""
    parent = machine.address_space()
    a = parent.mmap("1M", addr=BASE, fixed=True)
    assert faults(parent, a, "1M", True) == 16
    return parent, a


def test_child_writes_copies_then_parent_reuses(machine: Machine) -> None:
    parent, a = filled(machine)
    child = parent.fork()
    assert layout(child, a, 256) == [4] * 256
    f = child.folio(a)
    assert f is not None and f.mapcount == 32 and f.refcount == 32
    assert faults(child, a, "1M", True) == 256
    st = child.stats()
    assert (st.pgreuse, st.faults_wp_copy, st.anon_fault_alloc["64K"]) == (0, 256, 0)
    assert st.split_deferred["64K"] == 0
    assert layout(child, a, 256) == [0] * 256
    child.exit()
    assert child.closed and machine.mms == [parent]
    assert faults(parent, a, "1M", True) == 256
    assert parent.stats().pgreuse == 256
    assert layout(parent, a, 256) == [4] * 256
    machine.check_invariants()


@pytest.mark.parametrize("child_reads", [True, False], ids=["child-read", "child-none"])
def test_child_reads_or_nothing_then_parent_reuses(machine: Machine, child_reads: bool) -> None:
    parent, a = filled(machine)
    child = parent.fork()
    if child_reads:
        assert faults(child, a, "1M", False) == 0
    child.exit()
    assert faults(parent, a, "1M", True) == 256
    assert parent.stats().pgreuse == 256
    assert layout(parent, a, 256) == [4] * 256


def test_parent_copies_while_child_alive_then_child_reuses(machine: Machine) -> None:
    parent, a = filled(machine)
    child = parent.fork()
    assert faults(parent, a, "1M", True) == 256
    assert (parent.stats().pgreuse, parent.stats().faults_wp_copy) == (0, 256)
    assert layout(parent, a, 256) == [0] * 256
    assert faults(parent, a, "1M", True) == 0
    assert faults(child, a, "1M", True) == 256          # child-after-parent
    assert child.stats().pgreuse == 256
    assert layout(child, a, 256) == [4] * 256
    machine.check_invariants()


@pytest.mark.parametrize(("keep", "reuse", "block"), [(1, 0, [0] * 16), (2, 32, [4, 4] + [0] * 14)],
                         ids=["last-page", "two-pages"])
def test_partially_unmapped_folios_across_fork(machine: Machine, keep: int, reuse: int,
                                               block: list[int]) -> None:
    parent, a = filled(machine)
    for f in range(16):
        parent.madvise(a + f * 65536 + keep * 4096, (16 - keep) * 4096, "MADV_DONTNEED")
    before = parent.stats()
    parent.fork().exit()
    assert faults(parent, a, "1M", True) == 256
    after = parent.stats()
    assert after.pgreuse - before.pgreuse == reuse
    assert layout(parent, a, 256) == block * 16
    if keep == 1:       # the single mapped page was copied and its folio freed
        assert after.nr_anon["64K"] - before.nr_anon["64K"] == -16
        assert after.nr_anon_partially_mapped["64K"] - before.nr_anon_partially_mapped["64K"] == -16


def test_zero_pages_across_fork(machine: Machine) -> None:
    parent = machine.address_space()
    lo = parent.mmap("64K", addr=BASE - 65536, prot="", fixed=True)
    a = parent.mmap("1M", addr=lo + 65536, fixed=True)
    parent.mmap("64K", addr=a + (1 << 20), prot="", fixed=True)
    assert faults(parent, a, "1M", False) == 256
    child = parent.fork()                       # no anon_vma: vma_needs_copy() is false
    assert faults(child, a, "1M", False) == 256
    child.exit()
    parent.touch_range(a, "4K", write=True)     # now the VMA has an anon_vma
    child = parent.fork()
    assert faults(child, a, "1M", False) == 0   # the zero PTEs were copied
    child.exit()
    before = parent.stats()
    assert faults(parent, a, "1M", True) == 256
    assert parent.stats().pgreuse - before.pgreuse == 1
    assert parent.stats().faults_wp_copy - before.faults_wp_copy == 255


def pmd_parent(machine: Machine, write: bool) -> tuple[AddressSpace, int]:
    parent = machine.address_space()
    a = parent.mmap("2M")
    parent.madvise(a, "2M", "MADV_HUGEPAGE")
    assert faults(parent, a, "2M", write) == 1
    return parent, a


def test_pmd_thp_across_fork() -> None:
    with Machine(Config(ram="64M", policy=POLICY_PMD)) as machine:
        parent, a = pmd_parent(machine, True)           # pmd-alive
        child = parent.fork()
        before = parent.stats()
        assert faults(parent, a, "2M", True) == 512
        assert parent.stats().thp_split_pmd - before.thp_split_pmd == 1
        assert parent.stats().pgreuse == before.pgreuse
        assert layout(parent, a, 512) == [0] * 512
        assert layout(child, a, 512) == [9] * 512
        child.exit()
        parent.exit()
        parent, a = pmd_parent(machine, True)           # pmd-exit
        parent.fork().exit()
        assert faults(parent, a, "2M", True) == 1
        assert parent.stats().thp_split_pmd == 0
        child = parent.fork()                           # pmd-child-write
        assert faults(child, a, "2M", True) == 512
        assert child.stats().thp_split_pmd == 1
        child.exit()
        assert faults(parent, a, "2M", True) == 1
        assert layout(parent, a, 512) == [9] * 512
        machine.check_invariants()


def test_huge_zero_pmd_across_fork() -> None:
    with Machine(Config(ram="64M", policy=POLICY_PMD)) as machine:
        parent, a = pmd_parent(machine, False)
        child = parent.fork()
        assert faults(child, a, "2M", False) == 0       # hzero
        assert faults(child, a, "2M", True) == 1        # hzero-child-write
        assert child.stats().thp_fault_alloc == 1
        assert layout(child, a, 512) == [9] * 512
        assert faults(parent, a, "2M", True) == 1
        assert parent.stats().thp_fault_alloc == 1
        assert machine.stats().thp_fault_alloc == 2


def test_dontfork_and_wipeonfork(machine: Machine) -> None:
    parent, a = filled(machine)
    parent.madvise(a, "1M", "MADV_DONTFORK")
    assert parent.vmas()[0].flags & VmFlags.DONTCOPY
    child = parent.fork()
    assert child.vmas() == []
    assert child.fault(a).access.name == "SIGSEGV"
    child.exit()
    assert faults(parent, a, "1M", True) == 0           # never write-protected
    parent.madvise(a, "1M", "MADV_DOFORK")
    parent.madvise(a, "1M", "MADV_WIPEONFORK")
    child = parent.fork()
    (v,) = child.vmas()
    assert v.flags & VmFlags.WIPEONFORK and v.anon_vma == 0
    assert faults(child, a, "1M", False) == 256
    assert layout(child, a, 256) == [-2] * 256           # zero page
    child.exit()
    assert faults(parent, a, "1M", True) == 0
    parent.madvise(a, "1M", "MADV_KEEPONFORK")
    assert not parent.vmas()[0].flags & VmFlags.WIPEONFORK


def test_machine_stats_sum_the_mms(machine: Machine) -> None:
    parent, a = filled(machine)
    child = parent.fork()
    child.touch_range(a, "512K", write=True)
    ps, cs, ms = parent.stats(), child.stats(), machine.stats()
    assert ms.min_flt == ps.min_flt + cs.min_flt
    assert ms.mm_anonpages == ps.mm_anonpages + cs.mm_anonpages == 256 + 256
    assert ms.nr_anon == ps.nr_anon == cs.nr_anon               # machine-wide gauge
    assert ms.free_pages == ps.free_pages
    child.exit()
    ms2 = machine.stats()
    assert ms2.faults_wp_copy == 128                    # an exited mm's events stay
    assert ms2.mm_anonpages == 256
    assert ms2.hiwater_rss == parent.stats().hiwater_rss   # VmHWM goes with its mm


def test_exit_frees_what_only_the_child_mapped(machine: Machine) -> None:
    parent, a = filled(machine)
    child = parent.fork()
    parent.munmap(a, "1M")
    assert machine.stats().nr_anon["64K"] == 16          # the child still maps them
    free = machine.stats().free_pages
    child.exit()
    assert machine.stats().nr_anon["64K"] == 0
    assert machine.stats().free_pages >= free + 256
    machine.check_invariants()


def test_exit_partially_unmapped_queues_deferred_split(machine: Machine) -> None:
    parent, a = filled(machine)
    child = parent.fork()
    parent.madvise(a, "32K", "MADV_DONTNEED")             # half of the first folio
    assert parent.stats().split_deferred["64K"] == 0      # the child still maps it all
    child.exit()
    st = machine.stats()
    assert st.nr_anon_partially_mapped["64K"] == 1 and st.split_deferred["64K"] == 1
    assert parent.shrink_deferred_split() == 1
    machine.check_invariants()


def test_closing_the_machine_closes_its_mms() -> None:
    m = Machine(Config(ram="64M"))
    a = m.address_space()
    b = a.fork()
    assert m.mms == [a, b] and a.machine is m and b.machine is m
    m.close()
    assert a.closed and b.closed and m.closed
    with pytest.raises(ClosedError):
        a.stats()
    with pytest.raises(ClosedError):
        m.stats()


def test_private_machine_goes_with_its_address_space() -> None:
    mm = AddressSpace(Config(ram="64M"))
    child = mm.fork()
    assert child.machine is mm.machine
    mm.close()
    assert mm.machine.closed and child.closed


def test_fork_with_userfaultfd_is_not_emulated(machine: Machine) -> None:
    parent, a = filled(machine)
    parent.uffd_register(a, "1M", "wp")
    with pytest.raises(LafError):
        parent.fork()
    machine.check_invariants()


@pytest.mark.parametrize(("page_size", "arch"), [("4K", "generic"), ("4K", "arm64"), ("16K", "arm64"),
                                                 ("64K", "arm64")])
def test_random_fork_write_exit_keeps_invariants(page_size: str, arch: str) -> None:
    """Random writes, reads, DONTNEED, munmap, forks and exits over a few mms:
    the machine-wide recount (mapcounts across mms) holds after every step."""
    rng = random.Random(f"{page_size}{arch}")
    pol = Policy.upstream(enabled="always", sizes={s: "always" for s in ("16K", "64K", "128K")
                                                   if s != page_size and page_size != "64K"})
    with Machine(Config(ram="2G" if page_size == "64K" else "256M", page_size=page_size, arch=arch,
                        policy=pol)) as machine:
        root = machine.address_space()
        ps = root.page_size
        span = 64 * ps
        a = root.mmap(4 * span)
        spaces = [root]
        for _ in range(300):
            sp = rng.choice(spaces)
            op = rng.random()
            off = rng.randrange(0, 4 * span, ps)
            n = rng.randrange(1, 48) * ps
            n = min(n, 4 * span - off)
            if op < 0.45:
                sp.touch_range(a + off, n, write=True)
            elif op < 0.6:
                sp.touch_range(a + off, n, write=False)
            elif op < 0.7:
                with contextlib.suppress(LafMemoryError):   # ENOMEM: a hole munmap left
                    sp.madvise(a + off, n, "MADV_DONTNEED")
            elif op < 0.75:
                sp.munmap(a + off, n)
            elif op < 0.87 and len(spaces) < 5:
                spaces.append(sp.fork())
            elif op < 0.95 and len(spaces) > 1:
                spaces.remove(sp)
                sp.exit()
            else:
                sp.shrink_deferred_split()
            machine.check_invariants()
        for sp in spaces:
            sp.exit()
        st = machine.stats()
        assert sum(st.nr_anon.values()) == 0 and st.lru_pages == 0 and st.memcg_charged == 0


def test_machine_close_waits_for_a_call_in_flight_on_a_child() -> None:
    m = Machine(Config(ram="64M"))
    parent = m.address_space()
    child = parent.fork()
    closer = threading.Thread(target=m.close)
    with child._core() as handle:       # a call is inside the core on the child
        closer.start()
        deadline = time.monotonic() + 30
        while not parent.closed and time.monotonic() < deadline:
            time.sleep(0)
        assert parent.closed            # the machine closes its mms one by one ...
        assert closer.is_alive()        # ... and waits for the child's call
        assert child._handle is handle
    closer.join(30)
    assert not closer.is_alive() and child.closed and m.closed


def test_two_mms_of_one_machine_share_the_busy_flag() -> None:
    """One call at a time per machine: a call on the parent while the child's
    batch is inside the core is refused (LafBusyError), never run alongside."""
    with Machine(Config(ram="1G")) as m:
        parent = m.address_space()
        a = parent.mmap("512M", addr=BASE, fixed=True)
        child = parent.fork()
        done = threading.Event()
        refused = 0

        def worker() -> None:
            try:
                for _ in range(4):
                    child.touch_range(a, "256M", write=True)
                    child.madvise(a, "256M", "MADV_DONTNEED")
            finally:
                done.set()

        t = threading.Thread(target=worker)
        t.start()
        try:
            while not done.is_set():
                try:
                    parent.stats()
                except LafBusyError:
                    refused += 1
        finally:
            t.join()
        assert refused > 0
        m.check_invariants()
