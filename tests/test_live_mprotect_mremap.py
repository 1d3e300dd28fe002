"""The mprotect and mremap programs of the live check (pylaf.live.programs
MPROTECT_PROGRAMS / MREMAP_PROGRAMS) with the reference model as the
emulator side (pylaf.reference.Reference has mm.mprotect() and mm.mremap();
pylaf.AddressSpace gets them from the C core, until then they are a SKIP).

* Without root: the emulator side of the mremap op (the mapping follows its
  new address) against what the live kernel showed for
  ``mremap_move_unaligned`` at 64K-always (docs/kernel-findings.md "mprotect
  and mremap"), fed a hand-made kernel run.
* Root and /proc/kpageflags: every program live against the reference with
  the machine's settings; with ``PYLAF_KERNEL_SETTINGS=1`` at every group.
"""
from __future__ import annotations

import os
import re
import warnings
from typing import Any, cast

import pytest

from pylaf import Policy
from pylaf.live import check as KC
from pylaf.live import kprog, programs, report, sides, sysfs
from pylaf.reference import Reference

WHY = KC.live_check_unavailable()
live = pytest.mark.skipif(WHY is not None, reason=f"live kernel check unavailable: {WHY}")
settings = pytest.mark.skipif(os.environ.get("PYLAF_KERNEL_SETTINGS") != "1",
                              reason="changes THP knobs: set PYLAF_KERNEL_SETTINGS=1")
NAMES = [p.name for p in programs.MPROTECT_PROGRAMS + programs.MREMAP_PROGRAMS]
POLICY_64K = Policy.parse("upstream/enabled=madvise/thp_anon=64K:always")
#: a disagreement of a system-wide counter (pylaf.live.check's counter lines)
COUNTER = re.compile(r"^(\d+kB \w+|vmstat \w+): kernel=")
#: the reference model mirrors AddressSpace's API (pylaf/reference/mm.py), not its type
REF = cast(sides.MmFactory, Reference)
A, D = 0x7F0000000000, 0x7F0000400000          # 2M-aligned, as laf_kprog's align=2M places them


def _fake_run(program: programs.CheckProgram, addrs: dict[int, int]) -> kprog.KprogResult:
    """A kernel run of *program* where op i returned ``addrs[i]`` (mmap, mremap)."""
    ops: list[dict[str, Any]] = []
    for i, ln in enumerate(program.ops()):
        op = ln.split()[0]
        o: dict[str, Any] = {"i": i, "line": i + 1, "op": op, "text": ln, "rc": 0, "errno": 0,
                             "mthp": {}, "vmstat": {}}
        if i in addrs:
            o["addr"] = addrs[i]
        if op in ("read", "write"):
            o["minflt"] = 0
        ops.append(o)
    return kprog.parse_kprog_output({"page_size": 4096, "sizes_kb": [64], "settings": {},
                                     "ops": ops, "snapshots": []})


def test_emulator_can_run_names_the_missing_call() -> None:
    class NoRemap:
        def mprotect(self) -> None: ...

    class Neither:
        pass

    remap = programs.PROGRAMS_BY_NAME["mremap_grow_in_place"]
    prot = programs.PROGRAMS_BY_NAME["mprotect_write_ro_rw"]
    assert sides.emulator_can_run(remap, NoRemap) == sides.NO_MREMAP
    assert sides.emulator_can_run(prot, NoRemap) is None
    assert sides.emulator_can_run(prot, Neither) == sides.NO_MPROTECT
    assert sides.emulator_can_run(remap, Reference) is None


def test_mremap_move_unaligned_folio_keeps_its_order_and_neighbours_fall_back() -> None:
    """A 64K folio moved to a VA 68K into a reservation stays one 64K folio at
    a VA that is not 64K-aligned; the faults next to it find their naturally
    aligned 64K range not pte_none and map 4K pages, up to the next aligned
    range that is free (live kernel 6.18.44, 64K-always)."""
    prog = programs.PROGRAMS_BY_NAME["mremap_move_unaligned"].chunked()
    ops = prog.ops()
    move = ops.index("mremap a 1M 1M fixed=@d+68K")
    at = {ops.index("mmap a 1M align=2M"): A, ops.index("mmap d 4M align=2M prot=none"): D,
          move: D + (68 << 10)}
    es = sides.emulator_side(prog, _fake_run(prog, at), POLICY_64K, mm_factory=REF)
    assert es.op_addr[move] == D + (68 << 10)
    # the live kernel's faults per touch op and layouts (docs/kernel-findings.md)
    assert [f for f in es.op_faults if f is not None] == [1, 1, 17, 19, 4, 4]
    K = 1024
    assert es.snapshots["moved"].mappings["a"].runs == [
        (0, 64 * K, "64K"), (64 * K, 128 * K, "none"), (192 * K, 64 * K, "64K"),
        (256 * K, 768 * K, "none")]
    assert es.snapshots["s"].mappings["a"].runs == [
        (0, 64 * K, "64K"), (64 * K, 60 * K, "4K"), (124 * K, 64 * K, "64K"), (188 * K, 4 * K, "4K"),
        (192 * K, 64 * K, "64K"), (256 * K, 60 * K, "4K"), (316 * K, 704 * K, "64K"),
        (1020 * K, 4 * K, "4K")]
    assert es.vmas["s"] == [(D, D + (68 << 10)), (D + (68 << 10), D + (1092 << 10)),
                            (D + (1092 << 10), D + (4 << 20))]


@pytest.mark.kernel
@live
def test_mprotect_mremap_programs_agree_with_the_reference() -> None:
    res = KC.run_group(programs.DEFAULT_GROUP, NAMES, mm_factory=REF)
    assert len(res.checks) == len(NAMES)
    bad = {c.program: c.error or c.mismatches for c in res.checks if c.failed and not c.gauge_noise_only}
    assert not bad, report.format_group(res)
    assert all(c.skipped is None for c in res.checks)


@pytest.mark.kernel
@live
@settings
@pytest.mark.timeout(1800)     # 11 groups x 20 programs, retried on a busy machine
def test_mprotect_mremap_programs_agree_with_the_reference_at_every_group() -> None:
    before = sysfs.read_thp_settings().sysfs_values()
    failures, noisy = {}, {}
    for g in programs.GROUPS:
        res = KC.run_group(g, NAMES, mm_factory=REF)
        assert sysfs.read_thp_settings().sysfs_values() == before, f"knobs not restored after {g.name}"
        for c in res.checks:
            facts = [m for m in c.mismatches if not COUNTER.search(m)]
            if c.error or facts:
                failures[(g.name, c.program)] = c.error or facts
            elif c.mismatches:
                noisy[(g.name, c.program)] = c.mismatches
    assert not failures
    if noisy:
        # system-wide counters only (faults, layouts, VMAs, errnos agree): other
        # processes' allocations on a busy machine; the current-settings test
        # above compares the counters strictly
        warnings.warn(f"counter noise not resolved by retries: {noisy}", stacklevel=2)
