"""The mprotect/mremap workloads (jit-arena, realloc-growth, glibc-arena):
they run clean, are deterministic, are registered, and each leaves a mark
that only its mprotect or mremap calls can make (VMA flags and layout,
moved buffers not refaulted, arena growth that clamps folio orders)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pylaf import AddressSpace, Config, Policy
from pylaf.experiments.mm_workloads import MM_BUILTIN, GlibcArena, JitArena, ReallocGrowth
from pylaf.experiments.workloads import (
    available_workloads,
    get_workload,
    scaled_count,
    scaled_size,
)
from pylaf.records import VmFlags
from pylaf.stats import Stats

SCALE = 0.25
NAMES = [cls.name for cls in MM_BUILTIN]
ACCESS = VmFlags.READ | VmFlags.WRITE | VmFlags.EXEC


def run(name: str, policy: str, scale: float = SCALE) -> tuple[Stats, list[Any]]:
    with AddressSpace(Config(policy=Policy.parse(policy))) as mm:
        get_workload(name, scale).run(mm)
        mm.check_invariants()
        return mm.stats(), mm.vmas()


def test_registered() -> None:
    for name in NAMES:
        assert name in available_workloads()


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name: str) -> None:
    (a, va), (b, vb) = run(name, "order-4"), run(name, "order-4")
    assert va == vb
    for field in ("faults", "mm_anonpages", "pages_touched", "nr_vmas", "faults_sigsegv"):
        assert getattr(a, field) == getattr(b, field), field
    assert np.array_equal(a.by_order("anon_fault_alloc"), b.by_order("anon_fault_alloc"))
    assert a.faults > 0 and a.faults_sigsegv == 0


def test_jit_arena_code_is_rx_inside_a_prot_none_reservation() -> None:
    st, vmas = run("jit-arena", "order-4")
    reserve = scaled_size(JitArena.code_reserve, SCALE, 2 << 20)
    code = [v for v in vmas if v.flags & VmFlags.EXEC]
    none = [v for v in vmas if not v.flags & ACCESS]
    # the emitted code is one rx VMA (each patch's rw window merged back),
    # directly followed by the rest of the PROT_NONE reservation
    assert len(code) == 1 and len(none) == 1
    assert code[0].flags & ACCESS == VmFlags.READ | VmFlags.EXEC
    assert code[0].end == none[0].start and code[0].length + none[0].length == reserve
    assert st.faults_sigsegv == 0


def test_jit_arena_patches_cost_no_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-opening exclusive anon code pages rw gives the write bit back
    (can_change_pte_writable()): the patch writes are hits, not faults."""
    patched: list[tuple[int, int, int]] = []
    fault = AddressSpace.fault

    def spy(self: AddressSpace, addr: int, write: bool = False) -> Any:
        before = self.stats().faults
        out = fault(self, addr, write)
        patched.append((addr, self.stats().faults - before, self.pte(addr).raw))
        return out

    monkeypatch.setattr(AddressSpace, "fault", spy)
    st, _ = run("jit-arena", "order-4")
    assert patched and all(cost == 0 for _, cost, _ in patched)
    assert st.faults_wp == 0 and st.pgreuse == 0 and st.faults_sigsegv == 0


def test_jit_arena_chunk_edges_clamp_code_folios() -> None:
    """Each chunk is written while it alone is rw, so a 64K block that
    straddles a chunk's end cannot take a 64K folio and falls back to 4K
    pages; a region written in full while rw (no per-chunk mprotect) would
    hold 64K folios only, but for the last block."""
    with AddressSpace(Config(policy=Policy.parse("order-4"))) as mm:
        get_workload("jit-arena", SCALE).run(mm)
        code = next(v for v in mm.vmas() if v.flags & VmFlags.EXEC)
        orders = []
        for addr in range(code.start, code.end, mm.page_size):
            folio = mm.folio(addr)
            assert folio is not None
            orders.append(folio.order)
    small, large = orders.count(0), orders.count(4)
    assert small + large == len(orders) and large > 0
    # about one fallen-back block per chunk end
    assert small > 4 * scaled_count(JitArena.rounds, SCALE)
    assert mm.closed


def test_realloc_growth_moves_some_growths_and_never_refaults(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int, int]] = []
    mremap = AddressSpace.mremap

    def spy(self: AddressSpace, addr: int, old_len: Any, new_len: Any, **kw: Any) -> int:
        out = mremap(self, addr, old_len, new_len, **kw)
        calls.append((addr, out, int(new_len)))
        return out

    monkeypatch.setattr(AddressSpace, "mremap", spy)
    st, vmas = run("realloc-growth", "order-0")
    sizes = ReallocGrowth(scale=SCALE).sizes(st.page_size)
    moved = sum(a != b for a, b, _ in calls)
    assert len(calls) == len(sizes) - 1 and 0 < moved < len(calls)
    final = calls[-1][1]
    assert any(v.start == final and v.length == sizes[-1] for v in vmas)
    # a moved buffer keeps its pages: every page faulted once, all still mapped
    assert st.faults == st.pages_touched == st.mm_anonpages


def test_realloc_growth_moved_folios_keep_their_size() -> None:
    st, _ = run("realloc-growth", "order-4")
    alloc = int(st.by_order("anon_fault_alloc")[4])
    assert alloc > 0 and st.folios_mapped["64K"] == alloc        # none split by a move
    assert sum(st.split.values()) == 0 and st.faults < st.mm_anonpages // 8


def test_glibc_arena_grows_a_prot_none_heap_page_by_page() -> None:
    st, vmas = run("glibc-arena", "order-4")
    heap_max = scaled_size(GlibcArena.heap_max, SCALE, 2 << 20)
    rw = [v for v in vmas if v.flags & ACCESS == VmFlags.READ | VmFlags.WRITE]
    none = [v for v in vmas if not v.flags & ACCESS]
    assert len(vmas) == 2 and len(rw) == 1 and len(none) == 1
    assert rw[0].start % heap_max == 0                      # new_heap() alignment
    assert rw[0].length + none[0].length == heap_max and rw[0].end == none[0].start
    # grow_heap() steps of the page-rounded deficit: the rw VMA ends right
    # after the page being written, so most faults cannot take a 64K folio
    alloc = int(st.by_order("anon_fault_alloc")[4])
    assert st.faults - alloc > 4 * alloc
    # shrink_heap(): the freed top was dropped with MADV_DONTNEED
    assert st.mm_anonpages < st.faults
    assert st.faults_sigsegv == 0
