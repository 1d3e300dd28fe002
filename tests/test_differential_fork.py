"""Differential testing across fork: the C core against the reference, several processes.

A hypothesis ``RuleBasedStateMachine`` drives a :class:`pylaf.Machine` (the C
core) and a :class:`pylaf.reference.RefMachine` (the pure-Python model) with
the same random operations on several live processes: mmap (odd sizes, PMD
multiples, fixed), munmap, mprotect, madvise (DONTNEED, HUGEPAGE, NOHUGEPAGE, DONTFORK,
DOFORK, WIPEONFORK, KEEPONFORK), reads and writes (single faults and strided
ranges) in any live process, fork of any live process and exit of any
process but the last.  The machine (page size, architecture, THP policy) is
drawn at the start.  After every step it compares, for every live process
pair (C mm i against reference mm i), the outcome, every VMA, every PTE (raw
bits and folio order), the folio metadata and the per-mm counters
(``diffops.compare``), then the machine-wide counters, and runs
``check_invariants()`` on both machines (refcounts and mapcounts recounted
over every process).  The rules both sides implement: docs/kernel-semantics.md
§2-3, docs/kernel-findings.md §5 and §7 (Linux 6.18 kernel/fork.c dup_mmap(),
mm/memory.c copy_page_range(), do_wp_page(), mm/mmap.c exit_mmap()).

Profiles (``HYPOTHESIS_PROFILE``, conftest.py): ``ci`` (default, derandomized,
fast), ``dev``, ``long``.  ``PYLAF_FORK_EXAMPLES`` / ``PYLAF_FORK_STEPS``
override the example count and steps per example; ``PYLAF_FORK_STEPLOG`` names
a file each example appends its step count to (progress of long runs).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from diffdraw import draw_addr, draw_range
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pylaf import AddressSpace, Config, LafError, Machine, Policy
from pylaf.reference import Reference, RefMachine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fuzz"))
import diffops  # type: ignore[import-not-found]  # fuzz/ is on sys.path, not a package

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
_EXAMPLES = {"ci": 6, "dev": 150, "long": 4000}
_STEPS = {"ci": 20, "dev": 50, "long": 100}
EXAMPLES = int(os.environ.get("PYLAF_FORK_EXAMPLES", _EXAMPLES.get(PROFILE, 6)))
STEPS = int(os.environ.get("PYLAF_FORK_STEPS", _STEPS.get(PROFILE, 20)))
STEPLOG = os.environ.get("PYLAF_FORK_STEPLOG")
#: print every operation to stderr (replaying a failure)
TRACE = bool(os.environ.get("PYLAF_FORK_TRACE"))

#: at most this many live processes (each step compares all of them)
MAX_PROCS = 4
ADVICE = ("MADV_DONTNEED", "MADV_HUGEPAGE", "MADV_NOHUGEPAGE", "MADV_DONTFORK", "MADV_DOFORK",
          "MADV_WIPEONFORK", "MADV_KEEPONFORK")


# ----------------------------------------------------------------- strategies
def start_policies(page_size: int) -> st.SearchStrategy[Policy]:
    """The policies of docs/kernel-findings.md §5 and neighbours: 64K always,
    several sizes, PMD only (with MADV_HUGEPAGE), order 0, fixed orders."""
    pmd_order = page_size.bit_length() - 1 - 3
    s64 = str(max(64 << 10, page_size << 2))
    several = st.dictionaries(st.sampled_from([str(page_size << o) for o in range(2, pmd_order + 1)]),
                              st.sampled_from(("always", "inherit", "madvise", "never")),
                              min_size=2, max_size=4)
    zero = st.booleans()
    return st.one_of(
        st.builds(Policy, kind=st.just("upstream"), enabled=st.just("madvise"),
                  sizes=st.just({s64: "always"}), use_zero_page=zero),
        st.builds(Policy, kind=st.just("upstream"), enabled=st.sampled_from(("never", "madvise", "always")),
                  sizes=several, use_zero_page=zero),
        st.builds(Policy, kind=st.just("upstream"), enabled=st.just("madvise"), use_zero_page=zero),
        st.builds(Policy, kind=st.just("upstream"), enabled=st.just("never"), use_zero_page=zero),
        st.builds(Policy, kind=st.just("fixed"), enabled=st.just("always"),
                  fixed_order=st.sampled_from([0, *range(2, pmd_order + 1)]), use_zero_page=zero))


@st.composite
def machine_specs(draw: st.DrawFn) -> diffops.MachineSpec:
    ps = draw(st.sampled_from((4096, 4096, 4096, 16384, 65536)))
    arch = draw(st.sampled_from(("x86_64", "arm64")))
    ram = draw(st.sampled_from((4, 8, 16))) if ps != 65536 else draw(st.sampled_from((3, 4)))
    memcg = draw(st.sampled_from((0, 0, 0, 0, 300, 1500)))
    return diffops.MachineSpec(ps, arch, ram, memcg, draw(start_policies(ps)))


# ------------------------------------------------------------------ comparison
def outcome(fn: Any) -> Any:
    """``fn()``'s comparable outcome: ``("ok", value)`` or ``("error", class, errno)``."""
    try:
        return ("ok", fn())
    except LafError as exc:
        return ("error", type(exc).__name__, exc.errno)


# ------------------------------------------------------------- state machine
class ForkDiffMachine(RuleBasedStateMachine):
    """Same operations on C and reference processes; everything compared after each."""

    @initialize(spec=machine_specs())
    def start(self, spec: diffops.MachineSpec) -> None:
        self.spec = spec
        self.cm = Machine(spec.config())
        self.rm = RefMachine(spec.config())
        self.cs: list[AddressSpace] = [self.cm.address_space()]
        self.rs: list[Reference] = [self.rm.address_space()]
        self.ps = spec.page_size
        self.pmd = self.ps * (self.ps // 8)
        self.nsteps = 0
        if TRACE:
            print(f"SPEC {spec!r}", file=sys.stderr)

    def teardown(self) -> None:
        if hasattr(self, "cm"):
            self.cm.close()
            if STEPLOG:
                with open(STEPLOG, "a") as f:
                    f.write(f"{self.nsteps}\n")

    # --- helpers
    def run(self, i: int, *op: object) -> object:
        if TRACE:
            print(f"OP mm{i} {op!r}", file=sys.stderr)
        oc = diffops.apply(self.cs[i], op)
        orr = diffops.apply(self.rs[i], op)
        assert oc == orr, f"mm{i} {op!r}: outcome C={oc!r} R={orr!r}"
        self.nsteps += 1
        return oc

    def _proc(self, data: st.DataObject) -> int:
        return data.draw(st.integers(0, len(self.cs) - 1), label="mm")

    def _range(self, data: st.DataObject, i: int) -> tuple[int, int]:
        return draw_range(data, self.cs[i].vmas(), self.ps, self.pmd, whole_below=3, pmd_part_below=5)

    def _addr(self, data: st.DataObject, i: int) -> int:
        return draw_addr(data, self.cs[i].vmas(), self.ps)

    # --- rules
    @rule(data=st.data())
    def mmap(self, data: st.DataObject) -> None:
        i, ps, pmd = self._proc(data), self.ps, self.pmd
        npg = data.draw(st.sampled_from((1, 3, 16, 17, 100, pmd // ps, pmd // ps, 2 * pmd // ps))
                        | st.integers(1, 3 * pmd // ps), label="npages")
        extra = data.draw(st.sampled_from((0, 0, 0, 1, ps - 1)), label="odd")
        prot = data.draw(st.sampled_from(("rw", "rw", "rw", "rw", "r")), label="prot")
        how = data.draw(st.sampled_from(("top-down", "top-down", "hint", "fixed")), label="how")
        length = npg * ps + extra
        if how == "top-down":
            self.run(i, "mmap", length, None, prot, False)
            return
        vmas = self.cs[i].vmas()
        base = vmas[0].start if vmas else self.cs[i].mmap_base
        addr = (base - data.draw(st.integers(0, 16), label="pmds") * pmd
                + data.draw(st.sampled_from((0, ps, 16 * ps, pmd // 2)), label="off"))
        self.run(i, "mmap", length, max(addr, 0), prot, how == "fixed")

    @rule(data=st.data())
    def munmap(self, data: st.DataObject) -> None:
        i = self._proc(data)
        self.run(i, "munmap", *self._range(data, i))

    @rule(data=st.data(), write=st.booleans())
    def mremap(self, data: st.DataObject, write: bool) -> None:
        """A random mremap() in one process (diffops.mremap_op()), then
        accesses around where the range went: COW of folios shared with
        another process at their new, possibly unaligned, address."""
        i = self._proc(data)
        rnd = data.draw(st.randoms(use_true_random=False), label="mremap_rnd")
        op = diffops.mremap_op(rnd, self.cs[i].vmas(), self.ps, self.cs[i].mmap_base)
        got = self.run(i, *op)
        if isinstance(got, int) and not isinstance(got, bool):
            stride = data.draw(st.sampled_from((self.ps, 3 * self.ps, 16 * self.ps)), label="stride")
            span = min(int(op[3]), 4 * self.pmd) + 8 * self.ps
            self.run(i, "touch_range", max(got - 4 * self.ps, 0), span, stride, write)

    @rule(data=st.data(), advice=st.sampled_from(ADVICE))
    def madvise(self, data: st.DataObject, advice: str) -> None:
        i = self._proc(data)
        self.run(i, "madvise", *self._range(data, i), advice)

    @rule(data=st.data(), prot=st.sampled_from(diffops.MPROTECT_PROTS))
    def mprotect(self, data: st.DataObject, prot: str) -> None:
        i = self._proc(data)
        self.run(i, "mprotect", *self._range(data, i), prot)

    @rule(data=st.data(), write=st.booleans())
    def fault(self, data: st.DataObject, write: bool) -> None:
        i = self._proc(data)
        self.run(i, "fault", self._addr(data, i), write)

    @rule(data=st.data(), write=st.booleans())
    def touch_range(self, data: st.DataObject, write: bool) -> None:
        i = self._proc(data)
        a, ln = self._range(data, i)
        stride = data.draw(st.sampled_from((self.ps, self.ps, 2 * self.ps, 16 * self.ps,
                                            3 * self.ps + 8)), label="stride")
        self.run(i, "touch_range", a, min(ln, 4 * self.pmd), stride, write)

    @precondition(lambda self: len(self.cs) < MAX_PROCS)
    @rule(data=st.data())
    def fork(self, data: st.DataObject) -> None:
        i = self._proc(data)
        if TRACE:
            print(f"OP mm{i} fork", file=sys.stderr)
        oc, orr = outcome(self.cs[i].fork), outcome(self.rs[i].fork)
        assert oc[0] == orr[0] and (oc[0] == "ok" or oc == orr), f"mm{i} fork: C={oc!r} R={orr!r}"
        if oc[0] == "ok":
            self.cs.append(oc[1])
            self.rs.append(orr[1])
        self.nsteps += 1

    @precondition(lambda self: len(self.cs) > 1)
    @rule(data=st.data())
    def exit(self, data: st.DataObject) -> None:
        i = self._proc(data)
        if TRACE:
            print(f"OP mm{i} exit", file=sys.stderr)
        self.cs.pop(i).exit()
        self.rs.pop(i).exit()
        self.nsteps += 1

    @rule()
    def shrink(self) -> None:
        self.run(0, "shrink")

    # --- after every step
    @invariant()
    def same_state(self) -> None:
        if not hasattr(self, "cm"):
            return
        self.cm.check_invariants()
        self.rm.check_invariants()
        assert len(self.cm.mms) == len(self.rm.mms) == len(self.cs)
        for i, (c, r) in enumerate(zip(self.cs, self.rs, strict=True)):
            diffops.compare(c, r, f"mm{i} after {self.nsteps} steps")
        diffops.compare_machines(self.cm, self.rm, f"after {self.nsteps} steps")


TestForkDifferential = ForkDiffMachine.TestCase
TestForkDifferential.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
    derandomize=PROFILE == "ci", print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large, HealthCheck.large_base_example])



# ---------------------------------------------------------------- regressions
# Each pins a disagreement the state machine found; the docstring names the judge.
def _pair(cfg: Config) -> tuple[Machine, RefMachine]:
    return Machine(cfg), RefMachine(cfg)


def test_dontfork_flag_is_laf_vm_dontcopy() -> None:
    """MADV_DONTFORK sets VM_DONTCOPY (mm/madvise.c madvise_update_vma()); the
    ABI value is laf.h LAF_VM_DONTCOPY.  The reference used a stand-in bit
    (0x40000), so vmas() differed from the C core's."""
    cm, rm = _pair(Config(ram="8M"))
    try:
        for mm in (cm.address_space(), rm.address_space()):
            a = mm.mmap(4096)
            mm.madvise(a, 4096, "MADV_DONTFORK")
            assert int(mm.vmas()[0].flags) == 0x3 | 0x100000000
            mm.madvise(a, 4096, "MADV_DOFORK")
            assert int(mm.vmas()[0].flags) == 0x3
    finally:
        cm.close()


def test_machine_stats_count_page_tables() -> None:
    """machine.stats().pgtables_bytes is mm_pgtables_bytes() summed over the
    live mms, as each mm.stats() reports it.  C left it 0 (the per-mm value is
    derived when read, so summing the stored counters missed it)."""
    cm, rm = _pair(Config(ram="8M"))
    try:
        for m, mm in ((cm, cm.address_space()), (rm, rm.address_space())):
            a = mm.mmap(4096)
            mm.fault(a, True)
            child = mm.fork()
            assert mm.stats().pgtables_bytes == child.stats().pgtables_bytes == 2 * 4096
            assert m.stats().pgtables_bytes == 4 * 4096
    finally:
        cm.close()
