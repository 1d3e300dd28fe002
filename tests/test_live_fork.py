"""Fork programs of the live check (pylaf.live): laf_kprog's processes and
the emulator side of a fork program.

The emulator side is written against the fork API (``mm.fork()`` ->
child address space, ``mm.exit()``, ``mm.machine.stats()``).  Until
:class:`pylaf.AddressSpace` has it, fork programs are a SKIP; here a small
fake address space (order-0 pages, copy-on-write, nothing else) stands in for
it so the comparison itself is tested without a live kernel.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np
import pytest

from pylaf import Policy
from pylaf._ffi import lib
from pylaf.live import check as KC
from pylaf.live import kprog, programs, report, sides

WHY = KC.live_check_unavailable()
live = pytest.mark.skipif(WHY is not None, reason=f"live kernel check unavailable: {WHY}")
PS = 4096
BASE = 0x7F0000000000
POLICY = Policy.parse("upstream/enabled=never")

# ------------------------------------------------------------ the fake mm


@dataclass
class _Machine:
    """Machine-wide state of the fake: page mapcounts and event counters."""

    mapcount: dict[int, int] = field(default_factory=dict)
    next_pfn: int = 1000
    events: dict[str, int] = field(default_factory=dict)

    def alloc(self) -> int:
        self.next_pfn += 1
        self.mapcount[self.next_pfn] = 1
        return self.next_pfn

    def stats(self) -> SimpleNamespace:
        return _stats(self.events, 0)


def _stats(events: dict[str, int], anon_pages: int) -> SimpleNamespace:
    st: dict[str, Any] = {n: {} for n in sides.STAT_NAMES}
    st.update({n: 0 for n in sides.VMSTAT_NAMES})
    st.update(min_flt=events.get("min_flt", 0), pgreuse=events.get("pgreuse", 0),
              mm_anonpages=anon_pages)
    return SimpleNamespace(**st)


ZERO = -1


class FakeMM:
    """Order-0 anonymous memory with fork and COW (mm/memory.c do_wp_page():
    reuse when this mm maps the page alone, else copy); reads of a missing
    page map the zero page.  Just enough API for pylaf.live.sides."""

    page_size = PS
    config = SimpleNamespace(arch="x86_64")

    def __init__(self, config: object = None, machine: Optional[_Machine] = None) -> None:
        self.machine = machine or _Machine()
        self.pages: dict[int, list[int]] = {}         # vpn -> [pfn, writable]
        self.ranges: list[tuple[int, int]] = []
        self.events: dict[str, int] = {}
        self.exited = False

    def __enter__(self) -> FakeMM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.exited = True

    def _count(self, name: str) -> None:
        for d in (self.events, self.machine.events):
            d[name] = d.get(name, 0) + 1

    def mmap(self, length: int, *, addr: int, prot: str, fixed: bool) -> None:
        self.ranges.append((addr, addr + length))

    def munmap(self, addr: int, length: int) -> None:
        self.ranges = [r for r in self.ranges if not (r[0] >= addr and r[1] <= addr + length)]

    def _fault(self, vpn: int, write: bool) -> None:
        pte = self.pages.get(vpn)
        if pte is None:
            self.pages[vpn] = [self.machine.alloc(), 1] if write else [ZERO, 0]
        elif pte[0] == ZERO:
            pte[:] = [self.machine.alloc(), 1]
        elif self.machine.mapcount[pte[0]] == 1:
            pte[1] = 1
            self._count("pgreuse")
        else:
            self.machine.mapcount[pte[0]] -= 1
            pte[:] = [self.machine.alloc(), 1]
        self._count("min_flt")

    def touch(self, addrs: np.ndarray, write: bool) -> SimpleNamespace:
        for a in addrs:
            vpn = int(a) // PS
            pte = self.pages.get(vpn)
            if pte is None or (write and not pte[1]):
                self._fault(vpn, write)
        return SimpleNamespace(ok=True)

    def stats(self) -> SimpleNamespace:
        return _stats(self.events, sum(p[0] != ZERO for p in self.pages.values()))

    def read_ptes(self, start: int, npages: int) -> tuple[np.ndarray, np.ndarray]:
        ptes = np.zeros(npages, dtype=np.uint64)
        orders = np.full(npages, lib.LAF_ORDER_NONE, dtype=np.int8)
        for i in range(npages):
            pte = self.pages.get(start // PS + i)
            if pte is not None:
                zero = pte[0] == ZERO
                ptes[i] = ((1 if zero else pte[0]) << lib.LAF_PTE_PFN_SHIFT) | 1
                orders[i] = lib.LAF_ORDER_ZERO if zero else 0
        return ptes, orders

    def vmas(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(start=s, end=e) for s, e in self.ranges]

    def fork(self) -> FakeMM:
        child = FakeMM(machine=self.machine)
        child.ranges = list(self.ranges)
        for vpn, pte in self.pages.items():
            pte[1] = 0
            child.pages[vpn] = [pte[0], 0]
            if pte[0] != ZERO:
                self.machine.mapcount[pte[0]] += 1
        return child

    def exit(self) -> None:
        for pfn, _w in self.pages.values():
            if pfn != ZERO:
                self.machine.mapcount[pfn] -= 1
        self.pages.clear()
        self.exited = True


# ---------------------------------------------------- a fork program, faked

PROG = programs.CheckProgram("fork_mini", "fill 64K, fork, child writes half, exits; parent writes", """
    mmap a 64K align=2M
    write a 0 64K 4K
    fork c
    @c write a 0 32K 4K
    @c snapshot s
    exit c
    write a 0 64K 4K
    snapshot s
""")
# the fake's (and the kernel's) per-op faults and pgreuse: the child copies
# 8 pages; after it exits the parent maps every page alone and reuses all 16
FAULTS = [None, 16, None, 8, None, 16]
PGREUSE = [0, 0, 0, 0, 0, 16]


def _mapping(npages: int, present: int) -> dict[str, Any]:
    runs = [{"off": 0, "n": present, "kind": "folio", "order": 0, "whole": True,
             "folios": present, "idx": 0, "thp": 0, "anon": 1}]
    if present < npages:
        runs.append({"off": present * PS, "n": npages - present, "kind": "none"})
    return {"id": "a", "addr": BASE, "len": npages * PS, "present": present, "zero": 0,
            "hzero": 0, "swap": 0, "pages_by_order": {"0": present},
            "folios_by_order": {"0": present}, "partial_by_order": {}, "runs": runs,
            "excl": present, "kpc": {"1": present}}


def _kernel_result(faults: list[Optional[int]], pgreuse: list[int],
                   fork_op_pgreuse: int = 5) -> kprog.KprogResult:
    """laf_kprog's JSON for PROG as the live kernel would report it."""
    texts = PROG.ops()
    ops = []
    for i, (t, f, r) in enumerate(zip(texts, faults, pgreuse, strict=True)):
        proc, tok = programs.split_proc(t)
        if tok[0] == "exit":
            proc = tok[1]
        o: dict[str, Any] = {"i": i, "line": i + 1, "op": tok[0], "text": t, "rc": 0, "errno": 0,
                             "mthp": {}, "vmstat": {"pgreuse": r} if r else {}}
        if proc != "main":
            o["proc"] = proc
        if f is not None:
            o["minflt"] = f
        if tok[0] == "mmap":
            o["addr"] = BASE
        if tok[0] == "fork":       # laf_kprog's own pages: never compared
            o["vmstat"] = {"pgreuse": fork_op_pgreuse}
        ops.append(o)
    vma = {"start": BASE, "end": BASE + (64 << 10), "perms": "rw-p", "ids": ["a"],
           "Anonymous_kb": 64}
    snaps = [{"name": "s", "proc": "c", "after_op": 3, "minflt": 8, "majflt": 0, "mthp": {},
              "vmstat": {}, "rss": {}, "mappings": [_mapping(16, 16)], "vmas": [vma]},
             {"name": "s", "after_op": 5, "minflt": 32, "majflt": 0, "mthp": {}, "vmstat": {},
              "rss": {}, "mappings": [_mapping(16, 16)], "vmas": [vma]}]
    return kprog.parse_kprog_output({"page_size": PS, "sizes_kb": [64], "settings": {},
                                     "ops": ops, "snapshots": snaps})


def _check(kres: kprog.KprogResult, factory: Any = FakeMM) -> KC.ProgramCheck:
    return KC.check_program(PROG, policy=POLICY, retries=0, runner=lambda text: kres,
                            collapse_counters=dict, mm_factory=factory)


# ------------------------------------------------------------------- tests


def test_split_proc_and_chunking_keep_the_process() -> None:
    assert programs.split_proc("@c write a 0 1M") == ("c", ["write", "a", "0", "1M"])
    lines = programs.chunk_program(["@c write a 0 512K 4K", "write a 0 8K"], 64, page_size=PS)
    assert lines == ["@c write a 0 262144 4096", "@c write a 262144 262144 4096", "write a 0 8K"]
    assert PROG.forks and not programs.PROGRAMS_BY_NAME["seq_fill_1M"].forks
    assert PROG.ops()[3] == "@c write a 0 32K 4K" and len(PROG.ops()) == 6


def test_fork_programs_run_in_every_group() -> None:
    fork_names = {p.name for p in programs.FORK_PROGRAMS}
    assert len(fork_names) >= 15
    for g in programs.GROUPS:
        assert g.programs is None or fork_names <= set(g.programs), g.name
    for p in programs.FORK_PROGRAMS:
        assert p.forks
        procs = {programs.split_proc(ln)[0] for ln in p.lines()} - {"main"}
        forked = {programs.split_proc(ln)[1][1] for ln in p.lines()
                  if programs.split_proc(ln)[1][0] == "fork"}
        exited = {programs.split_proc(ln)[1][1] for ln in p.lines()
                  if programs.split_proc(ln)[1][0] == "exit"}
        assert procs <= forked and forked == exited, p.name       # every child exits


def test_live_side_keys_snapshots_by_process_and_drops_fork_op_pgreuse() -> None:
    ls = sides.live_side(_kernel_result(FAULTS, PGREUSE))
    assert set(ls.snapshots) == {"c:s", "s"}
    assert ls.snapshots["c:s"].rss_kb == 64 and ls.snapshots["s"].rss_kb == 64
    assert ls.vmstat == {"pgreuse": 16}                  # the fork op's 5 are not counted
    assert ls.op_faults == FAULTS


def test_fork_program_agrees_with_a_fake_fork_api() -> None:
    c = _check(_kernel_result(FAULTS, PGREUSE))
    assert c.ok and c.skipped is None, (c.mismatches, c.error)
    assert c.emulator is not None
    assert c.emulator.op_faults == FAULTS
    assert c.emulator.vmstat == {"pgreuse": 16}
    assert [v.mappings["a"].summary.folios_by_order for v in c.emulator.snapshots.values()] == [{0: 16}, {0: 16}]


def test_fork_program_disagreements_name_the_process_op() -> None:
    c = _check(_kernel_result([None, 16, None, 7, None, 16], [0, 0, 0, 0, 0, 15]))
    assert c.failed and not c.ok
    assert "op 3 `@c write a 0 32K 4K`: faults kernel=7 emulator=8" in c.mismatches
    # per-process facts disagree on the first run: no retries, reported at once
    c = _check(_kernel_result(FAULTS, [0, 0, 0, 0, 0, 15]))
    assert c.mismatches == ["vmstat pgreuse: kernel=15 emulator=16"]


def test_fork_program_is_a_skip_without_fork_in_the_emulator() -> None:
    class NoFork(FakeMM):
        fork = None         # type: ignore[assignment]
        exit = None         # type: ignore[assignment]

    kres = _kernel_result(FAULTS, PGREUSE)
    assert sides.emulator_can_run(PROG) is None      # pylaf.AddressSpace has fork
    for c in [_check(kres, NoFork)]:
        assert c.skipped == sides.NO_FORK
        assert not c.ok and not c.failed and c.mismatches == [] and c.error is None
        assert c.live is not None and c.live.op_faults == FAULTS     # the live side is kept
    gr = KC.GroupResult(programs.DEFAULT_GROUP, {}, [c, _check(kres)])
    assert gr.ok
    text = report.format_group(gr)
    assert "SKIP" in text and "1/1 programs agree; 1 skipped (emulator has no fork yet)" in text
    assert report.summary_line([gr]) == ("TOTAL: 1/1 program runs agree across 1 setting group(s); "
                                         "1 program runs skipped (emulator has no fork yet)")


# ------------------------------------------------------------ live kernel


@pytest.mark.kernel
@live
def test_laf_kprog_processes_on_the_live_kernel() -> None:
    """Whatever the folio sizes: the child's COW writes fault once per page in
    the child, and after it exits the parent reuses every page."""
    res = kprog.run_kprog("""
        mmap a 256K align=2M
        madvise a 0 256K nohugepage
        write a 0 256K 4K
        fork c
        @c write a 0 128K 4K
        @c snapshot s
        exit c
        write a 0 256K 4K
        snapshot s
    """)
    ops = res.ops
    assert [o.proc for o in ops] == ["main"] * 4 + ["c", "c", "main"]
    assert ops[4].minflt == 32 and ops[6].minflt == 64
    assert ops[6].delta.vmstat.get("pgreuse", 0) >= 64
    child, parent = res.snapshot("s", "c").mapping("a"), res.snapshot("s").mapping("a")
    assert child.excl == 32 and child.kpc == {1: 32, 2: 32}    # its copies + still shared
    assert parent.excl == 64 and parent.kpc == {1: 64}


@pytest.mark.kernel
@live
def test_laf_kprog_single_process_output_has_no_process_fields() -> None:
    raw = kprog.run_kprog_raw("mmap a 64K align=2M\nwrite a 0 64K 4K\nsnapshot s\n")
    assert all("proc" not in o for o in raw["ops"])
    assert "excl" not in raw["snapshots"][0]["mappings"][0]
    assert "pgreuse" not in str(raw["ops"])
