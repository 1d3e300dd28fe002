"""The kernel-vs-emulator validation suite (pylaf.live.check).

* Pure unit tests (layouts, attempt combination, CLI listing) run everywhere.
* The suite with the machine's settings as they are runs when we are root
  and /proc/kpageflags is readable (marked ``kernel``).
* The setting groups, which write sysfs knobs (restored on every exit path),
  run only with ``PYLAF_KERNEL_SETTINGS=1``.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from conftest import run_cli

from pylaf import Policy
from pylaf._ffi import lib
from pylaf.geometry import Geometry
from pylaf.layout import LayoutSummary, labelled, runs_from_ptes
from pylaf.live import check as KC
from pylaf.live import kprog, programs, report, sides, sysfs

WHY = KC.live_check_unavailable()
live = pytest.mark.skipif(WHY is not None, reason=f"live kernel check unavailable: {WHY}")
settings = pytest.mark.skipif(os.environ.get("PYLAF_KERNEL_SETTINGS") != "1",
                              reason="changes THP knobs: set PYLAF_KERNEL_SETTINGS=1")
G4K = Geometry.for_machine(4096)
NONE, ZERO, HZERO = lib.LAF_ORDER_NONE, lib.LAF_ORDER_ZERO, lib.LAF_ORDER_HUGE_ZERO

# ------------------------------------------------------------------ units


def _ptes(pfns: list[int]) -> np.ndarray:
    return np.array([(p << lib.LAF_PTE_PFN_SHIFT) | 1 for p in pfns], dtype=np.uint64)


def _layout(pfns: list[int], orders: list[int]) -> tuple[list[tuple[int, int, str]], LayoutSummary]:
    runs = runs_from_ptes(_ptes(pfns), np.array(orders, dtype=np.int8), G4K)
    return labelled(runs, G4K.page_size), LayoutSummary.of(runs)


def test_layout_whole_and_partial():
    # 16 pages of one 64K folio (pfn 32..47), 2 order-0, a zero page, nothing,
    # then the last 4 pages of a 64K folio (partial)
    pfns = [*range(32, 48), 100, 7, 0, 0, *range(76, 80)]
    orders = [4] * 16 + [0, 0] + [ZERO, NONE] + [4] * 4
    runs, s = _layout(pfns, orders)
    assert runs == [(0, 64 << 10, "64K"), (64 << 10, 8 << 10, "4K"),
                    (72 << 10, 4 << 10, "zero"), (76 << 10, 4 << 10, "none"),
                    (80 << 10, 16 << 10, "64K!partial")]
    assert s.folios_by_order == {4: 1, 0: 2} and s.partial_by_order == {4: 1}
    assert s.zero == 1 and s.pages_by_order == {4: 20, 0: 2}


def test_layout_two_adjacent_folios_are_one_run():
    runs, s = _layout(list(range(64, 80)) + list(range(16, 32)), [4] * 32)
    assert runs == [(0, 128 << 10, "64K")] and s.folios_by_order == {4: 2}


def test_layout_pfn_discontiguous_pages_of_one_order_are_two_folios():
    # pages 0..15 of one 64K folio then pages 0..15 of another that is not the
    # next one in PFN order: two whole folios, still one run
    runs, s = _layout(list(range(16, 32)) + list(range(64, 80)), [4] * 32)
    assert runs == [(0, 128 << 10, "64K")] and s.folios_by_order == {4: 2}
    # the second half of one folio then the first half of the next: two partial pieces
    runs, s = _layout(list(range(24, 40)), [4] * 16)
    assert runs == [(0, 32 << 10, "64K!partial"), (32 << 10, 32 << 10, "64K!partial")]
    assert s.partial_by_order == {4: 2} and s.folios_by_order == {}


def test_layout_huge_zero():
    n = 1 << G4K.pmd_order
    runs, s = _layout(list(range(n, 2 * n)), [HZERO] * n)
    assert runs == [(0, G4K.pmd_size, "hzero")] and s.hzero == n


def test_kprog_runs_parse_into_the_same_runs():
    """laf_kprog's JSON runs (byte offsets) and the emulator's runs label alike."""
    m = {"id": "a", "addr": 0, "len": 72 << 10, "present": 17, "zero": 0, "hzero": 0, "swap": 0,
         "pages_by_order": {"4": 16, "0": 1}, "folios_by_order": {"4": 1, "0": 1},
         "partial_by_order": {},
         "runs": [{"off": 0, "n": 16, "kind": "folio", "order": 4, "whole": True, "folios": 1,
                   "idx": 0, "thp": 1, "anon": 1},
                  {"off": 64 << 10, "n": 1, "kind": "folio", "order": 0, "whole": True,
                   "folios": 1, "idx": 0, "thp": 0, "anon": 1},
                  {"off": 68 << 10, "n": 1, "kind": "none"}]}
    res = kprog.parse_kprog_output({
        "page_size": 4096, "sizes_kb": [64], "settings": {}, "ops": [],
        "snapshots": [{"name": "s", "after_op": 0, "minflt": 0, "majflt": 0, "rss": {},
                       "mappings": [m], "vmas": []}]})
    live = res.snapshot("s").mapping("a")
    emu, _ = _layout([*range(32, 48), 7, 0], [4] * 16 + [0, NONE])
    assert live.layout(4096) == emu
    assert LayoutSummary.of(live.runs).folios_by_order == live.folios_by_order


def _side(op_counters, faults=(1,)) -> sides.SideResult:
    counters, vm = sides.sum_ops(op_counters, [{} for _ in op_counters])
    return sides.SideResult(4096, list(faults), [None] * len(faults), counters, vm, {}, {},
                            list(op_counters), [{} for _ in op_counters])


def test_combine_attempts_min_and_gauge_estimate():
    # true: 16 allocations, 16 folios alive; noise: other processes allocate
    # (both counters up) or free (nr_anon down)
    a = _side([{("anon_fault_alloc", 64): 18, ("nr_anon", 64): 18}])
    b = _side([{("anon_fault_alloc", 64): 16, ("nr_anon", 64): -184}])
    c = _side([{("anon_fault_alloc", 64): 17, ("nr_anon", 64): 17}])
    comb = sides.combine_attempts([a, b, c])
    assert comb.counters["anon_fault_alloc"] == {64: 16}     # event counter: minimum
    assert comb.counters["nr_anon"] == {64: 16}              # gauge: min(alloc) + median(gauge - alloc)


def test_programs_parse_and_use_only_modelled_ops():
    allowed = {"mmap", "munmap", "madvise", "prctl", "read", "write", "snapshot", "sleep"}
    advice = {"hugepage", "nohugepage", "dontneed"}
    remap = {p.name for p in programs.MPROTECT_PROGRAMS + programs.MREMAP_PROGRAMS}
    for p in programs.PROGRAMS:
        # fork programs may also use the ops of the fork API (docs/kernel-findings.md §5),
        # the mprotect/mremap programs mprotect and mremap
        extra = {"fork", "exit", "mprotect"} if p.forks else set()
        extra |= {"mprotect", "mremap"} if p.name in remap else set()
        extra_advice = {"dontfork", "wipeonfork"} if p.forks else set()
        for ln in p.lines():
            _proc, tok = programs.split_proc(ln)
            assert tok[0] in allowed | extra, (p.name, ln)
            if tok[0] == "mmap" and "hint=" not in ln:
                assert "align=2M" in ln, (p.name, ln)        # deterministic placement
            if tok[0] == "madvise":
                assert tok[4] in advice | extra_advice, (p.name, ln)
    assert len({p.name for p in programs.PROGRAMS}) == len(programs.PROGRAMS)


def test_groups_cover_the_brief():
    names = {g.name for g in programs.GROUPS}
    assert {"4K-only", "16K-always", "64K-always", "16K-64K-mixed", "pmd-madvise",
            "nohugepage-prctl", "beside-full-64K"} <= names
    for g in programs.GROUPS:
        for p in g.programs or ():
            assert p in programs.PROGRAMS_BY_NAME


def test_emulator_side_with_a_fake_kernel_run():
    """The emulator side alone, fed a hand-made kernel result (no root)."""
    prog = programs.PROGRAMS_BY_NAME["unaligned_16K"]
    fake = kprog.parse_kprog_output({
        "page_size": 4096, "sizes_kb": [64], "settings": {},
        "ops": [{"i": 0, "line": 1, "op": "mmap", "text": "", "rc": 0, "errno": 0,
                 "addr": 0x7f0000000000 + (16 << 10), "mthp": {}, "vmstat": {}},
                {"i": 1, "line": 2, "op": "write", "text": "", "rc": 0, "errno": 0,
                 "minflt": 5, "mthp": {}, "vmstat": {}}],
        "snapshots": [{"name": "s", "after_op": 1, "minflt": 5, "majflt": 0, "mthp": {},
                       "vmstat": {}, "rss": {}, "mappings": [], "vmas": []}]})
    es = sides.emulator_side(prog, fake, Policy.parse("upstream/enabled=never/thp_anon=16K-64K:always"))
    assert es.op_faults == [None, 5]
    assert es.counters["anon_fault_alloc"] == {16: 2, 32: 1, 64: 2}
    lay = es.snapshots["s"].mappings["a"]
    assert [r[2] for r in lay.runs] == ["16K", "32K", "64K", "16K"]


def test_cli_list(capsys):
    rc, out, _err = run_cli(capsys, "kernel", "check", "--list")
    assert rc == 0
    for p in programs.PROGRAMS:
        assert p.name in out
    assert "beside-full-mixed" in out


def _pretend_capable(monkeypatch, tmp_path):
    """Root, a readable kpageflags and a THP directory, whatever the machine."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "access", lambda path, mode: True)
    monkeypatch.setattr(KC, "THP_DIR", tmp_path)
    monkeypatch.setenv("PYLAF_BUILD_DIR", str(tmp_path / "build"))


@pytest.mark.parametrize("missing", ["root", "kpageflags", "compiler"])
def test_missing_capability_exits_2_with_one_line(capsys, monkeypatch, tmp_path, missing):
    _pretend_capable(monkeypatch, tmp_path)
    if missing == "root":
        monkeypatch.setattr(os, "geteuid", lambda: 1000)
    elif missing == "kpageflags":
        monkeypatch.setattr(os, "access", lambda path, mode: path != KC.KPAGEFLAGS)
    else:
        monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    rc, out, err = run_cli(capsys, "kernel", "check")
    assert rc == 2 and out == ""
    assert len(err.splitlines()) == 1, err
    word = {"root": "root", "kpageflags": KC.KPAGEFLAGS, "compiler": "C compiler"}[missing]
    assert "cannot run here" in err and word in err


def test_cli_unknown_program(capsys):
    if WHY is not None:
        pytest.skip(WHY)
    rc, _out, err = run_cli(capsys, "kernel", "check", "--program", "nope")
    assert rc == 2 and "unknown program" in err


# ------------------------------------------------------------- live kernel


@pytest.mark.kernel
@live
def test_kernel_show(capsys):
    rc, out, _err = run_cli(capsys, "kernel", "show")
    assert rc == 0
    assert "anon_fault_alloc" in out and "2048kB" in out
    rc, out, _err = run_cli(capsys, "kernel", "show", "--json")
    assert rc == 0 and '"settings"' in out


@pytest.mark.kernel
@live
def test_suite_with_current_settings():
    """Every program agrees with the kernel under the machine's settings."""
    with sysfs.thp_lock():             # re-entrant: run_group() holds it too
        before = sysfs.read_thp_settings().sysfs_values()
        res = KC.run_group(programs.DEFAULT_GROUP)
        assert sysfs.read_thp_settings().sysfs_values() == before        # nothing was written
    bad = {c.program: c.error or c.mismatches for c in res.checks if c.failed}
    assert not bad, report.format_group(res)
    # without fork in the emulator, fork programs are skipped, never compared
    for c in res.checks:
        assert c.ok or c.skipped == sides.emulator_can_run(programs.PROGRAMS_BY_NAME[c.program]), c
    # sanity: the faults really come from the kernel (1M written: at most 256)
    seq = next(c for c in res.checks if c.program == "seq_fill_1M")
    assert seq.live is not None and 0 < seq.live.faults <= 256


@pytest.mark.kernel
@live
def test_cli_check_default(capsys):
    rc, out, err = run_cli(capsys, "kernel", "check", "--program", "seq_fill_1M",
                           "--program", "zero_read_then_write")
    assert rc == 0, out + err
    assert "2/2 programs agree" in out


# ------------------------------------------------------- changing settings


@pytest.mark.kernel
@live
@settings
def test_all_setting_groups_agree_and_restore():
    before = sysfs.read_thp_settings().sysfs_values()
    failures, noisy = {}, {}
    for g in programs.GROUPS:
        res = KC.run_group(g)
        assert sysfs.read_thp_settings().sysfs_values() == before, f"knobs not restored after {g.name}"
        if res.skipped:
            continue
        for c in res.checks:
            if c.gauge_noise_only:
                noisy[(g.name, c.program)] = c.mismatches
            elif c.failed:
                failures[(g.name, c.program)] = c.error or c.mismatches
    assert not failures
    if noisy:       # system-wide gauges moved by other processes on a busy machine
        warnings.warn(f"nr_anon gauge noise not resolved by retries: {noisy}", stacklevel=2)


@pytest.mark.kernel
@live
@settings
def test_settings_restored_when_a_program_raises(monkeypatch):
    before = sysfs.read_thp_settings().sysfs_values()
    calls = []

    def boom(*a, **kw):
        calls.append(sysfs.read_thp_settings().per_size[64])
        raise KeyboardInterrupt

    monkeypatch.setattr(KC, "check_program", boom)
    with pytest.raises(KeyboardInterrupt):
        KC.run_group(programs.GROUPS_BY_NAME["64K-always"])
    assert calls == ["always"]                               # the group was applied ...
    assert sysfs.read_thp_settings().sysfs_values() == before             # ... and restored


@pytest.mark.kernel
@live
@settings
def test_cli_apply_settings_one_group(capsys):
    before = sysfs.read_thp_settings().sysfs_values()
    rc, out, err = run_cli(capsys, "kernel", "check", "--group", "64K-always",
                           "--program", "unaligned_8K")
    assert sysfs.read_thp_settings().sysfs_values() == before
    assert rc == 0, out + err
    assert "restored and verified" in out + err


# ------------------------------------------------- khugepaged interference

_PTE_PROG = programs.CheckProgram("one_write", "one write into a 2M VMA", """
    mmap a 2M align=2M
    write a 0
    snapshot s
""")
_ADDR = 0x7f0000000000
_RUNS_4K = [{"off": 0, "n": 1, "kind": "folio", "order": 0, "whole": True, "folios": 1, "idx": 0,
             "thp": 0, "anon": 1},
            {"off": 4096, "n": 511, "kind": "none"}]
_RUN_2M = {"off": 0, "n": 512, "kind": "folio", "order": 9, "whole": True, "folios": 1, "idx": 0,
           "thp": 1, "anon": 1}


def _kernel_run(runs: list[dict[str, object]], anon_kb: int) -> kprog.KprogResult:
    """laf_kprog's result for _PTE_PROG with the mapping's runs *runs*; the
    per-op counter deltas are empty, as when a collapse falls between ops."""
    mapping = {"id": "a", "addr": _ADDR, "len": 2 << 20, "present": 1, "zero": 0, "hzero": 0,
               "swap": 0, "pages_by_order": {}, "folios_by_order": {}, "partial_by_order": {},
               "runs": runs}
    vma = {"start": _ADDR, "end": _ADDR + (2 << 20), "perms": "rw-p", "ids": ["a"],
           "Anonymous_kb": anon_kb}
    return kprog.parse_kprog_output({
        "page_size": 4096, "sizes_kb": [64], "settings": {},
        "ops": [{"i": 0, "line": 1, "op": "mmap", "text": "", "rc": 0, "errno": 0, "addr": _ADDR,
                 "mthp": {}, "vmstat": {}},
                {"i": 1, "line": 2, "op": "write", "text": "", "rc": 0, "errno": 0, "minflt": 1,
                 "mthp": {}, "vmstat": {}}],
        "snapshots": [{"name": "s", "after_op": 1, "minflt": 1, "majflt": 0, "mthp": {},
                       "vmstat": {}, "rss": {}, "mappings": [mapping], "vmas": [vma]}]})


class _FakeHost:
    """laf_kprog runs in order; a run listed in *collapsing* bumps the
    synthetic collapse counters while it runs (khugepaged collapsed the range)."""

    def __init__(self, runs: list[kprog.KprogResult], collapsing: set[int]) -> None:
        self.runs, self.collapsing = runs, collapsing
        self.counters = {"thp_collapse_alloc": 7, "khugepaged/pages_collapsed": 7}
        self.calls = 0

    def run(self, text: str) -> kprog.KprogResult:
        res = self.runs[self.calls]
        if self.calls in self.collapsing:
            self.counters = {n: v + 1 for n, v in self.counters.items()}
        self.calls += 1
        return res

    def read_counters(self) -> dict[str, int]:
        return dict(self.counters)


_POLICY_4K = Policy.parse("upstream/enabled=never")


def test_collapse_during_a_run_is_discarded_and_rerun() -> None:
    """khugepaged collapsed the range between two ops of run 1 (a PMD THP, no
    counter delta in any op): that run is not compared; run 2 agrees."""
    host = _FakeHost([_kernel_run([_RUN_2M], 2048), _kernel_run(_RUNS_4K, 4)], collapsing={0})
    c = KC.check_program(_PTE_PROG, policy=_POLICY_4K, runner=host.run,
                         collapse_counters=host.read_counters)
    assert c.ok, c.mismatches
    assert host.calls == 2 and c.attempts == 2
    assert any("run 1 discarded" in n and "thp_collapse_alloc +1" in n for n in c.notes), c.notes


def test_a_real_disagreement_without_collapse_is_still_reported() -> None:
    host = _FakeHost([_kernel_run([_RUN_2M], 2048), _kernel_run(_RUNS_4K, 4)], collapsing=set())
    c = KC.check_program(_PTE_PROG, policy=_POLICY_4K, runner=host.run,
                         collapse_counters=host.read_counters)
    assert not c.ok and host.calls == 1
    assert any("layout kernel=0+2M:2M emulator=0+4K:4K 4K+2044K:none" in m for m in c.mismatches), c.mismatches


def test_collapse_in_every_run_is_an_error_not_a_disagreement() -> None:
    host = _FakeHost([_kernel_run([_RUN_2M], 2048)] * 3, collapsing={0, 1, 2})
    c = KC.check_program(_PTE_PROG, retries=2, policy=_POLICY_4K, runner=host.run,
                         collapse_counters=host.read_counters)
    assert not c.ok and c.mismatches == [] and c.live is None
    assert c.error is not None and "collapsed during every one of 3 live runs" in c.error


_MOVE_PROG = programs.CheckProgram("one_move", "a write, then mremap moves the VMA", """
    mmap a 2M align=2M
    write a 0
    mremap a 2M 2M maymove
    snapshot s
""")


def _moved_run(new_addr: int, noise: dict[str, dict[str, int]], minflt: int = 1) -> kprog.KprogResult:
    """laf_kprog's result for _MOVE_PROG: the kernel moved the VMA to
    *new_addr*; *noise*: another process's counter deltas during the write."""
    mapping = {"id": "a", "addr": new_addr, "len": 2 << 20, "present": 1, "zero": 0, "hzero": 0,
               "swap": 0, "pages_by_order": {}, "folios_by_order": {}, "partial_by_order": {},
               "runs": _RUNS_4K}
    vma = {"start": new_addr, "end": new_addr + (2 << 20), "perms": "rw-p", "ids": ["a"],
           "Anonymous_kb": 4}
    return kprog.parse_kprog_output({
        "page_size": 4096, "sizes_kb": [16, 64], "settings": {},
        "ops": [{"i": 0, "line": 1, "op": "mmap", "text": "", "rc": 0, "errno": 0, "addr": _ADDR,
                 "mthp": {}, "vmstat": {}},
                {"i": 1, "line": 2, "op": "write", "text": "", "rc": 0, "errno": 0, "minflt": minflt,
                 "mthp": noise, "vmstat": {}},
                {"i": 2, "line": 3, "op": "mremap", "text": "", "rc": 0, "errno": 0, "addr": new_addr,
                 "mthp": {}, "vmstat": {}}],
        "snapshots": [{"name": "s", "after_op": 2, "minflt": 1, "majflt": 0, "mthp": {},
                       "vmstat": {}, "rss": {}, "mappings": [mapping], "vmas": [vma]}]})


def test_noise_retry_combines_runs_whose_mremap_went_elsewhere() -> None:
    """Run 1 sees another process's 16K allocation; run 2 is clean, but the
    kernel's get_unmapped_area() put the moved VMA at another address.  Run 2
    is compared with the emulator at its own addresses, and combined."""
    runs = [_moved_run(_ADDR + (64 << 20), {"16": {"anon_fault_alloc": 1}}),
            _moved_run(_ADDR + (96 << 20), {})]
    host = _FakeHost(runs, collapsing=set())
    c = KC.check_program(_MOVE_PROG, retries=1, policy=_POLICY_4K, runner=host.run,
                         collapse_counters=host.read_counters)
    assert c.ok, (c.mismatches, c.notes)
    assert host.calls == 2 and any("after combining 2 runs" in n for n in c.notes), c.notes


def test_noise_retry_still_discards_a_run_that_did_something_else() -> None:
    """Run 2 faulted twice on the same op: it is not combined with run 1."""
    other = _moved_run(_ADDR + (96 << 20), {}, minflt=2)
    host = _FakeHost([_moved_run(_ADDR + (64 << 20), {"16": {"anon_fault_alloc": 1}}), other],
                     collapsing=set())
    c = KC.check_program(_MOVE_PROG, retries=1, policy=_POLICY_4K, runner=host.run,
                         collapse_counters=host.read_counters)
    assert not c.ok and any("run 2 discarded" in n for n in c.notes), c.notes


def test_collapse_increase() -> None:
    assert KC.collapse_increase({"thp_collapse_alloc": 3, "khugepaged/pages_collapsed": 3},
                                {"thp_collapse_alloc": 4, "khugepaged/pages_collapsed": 3}) \
        == {"thp_collapse_alloc": 1}
    assert KC.collapse_increase({"thp_collapse_alloc": 3}, {"thp_collapse_alloc": 3}) == {}
