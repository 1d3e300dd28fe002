"""Differential testing: the C emulator against the pure-Python reference.

A hypothesis ``RuleBasedStateMachine`` drives :class:`pylaf.AddressSpace` (the
C core) and :class:`pylaf.reference.Reference` (written independently from
the kernel documents) with the same random operations: mmap of odd sizes,
alignments and fixed addresses, munmap, mprotect, madvise HUGEPAGE/NOHUGEPAGE/DONTNEED,
prctl, userfaultfd register/unregister/copy/zeropage/writeprotect, read and
write accesses (single, batches, strided ranges), memcg limit changes,
allocation pressure (small RAM, ``fragment(k)``, injected allocation and
charge failures), policy switches, on machines with a random page size,
architecture and policy.  After every step it compares the outcome, every
VMA, every PTE of every VMA (raw bits and per-page folio orders), the folio
metadata and every kernel-named counter, then runs ``check_invariants()``.

Profiles (``HYPOTHESIS_PROFILE``, registered in conftest.py):

* ``ci`` (default): a few hundred steps, derandomized, < 60 s;
* ``dev``: a few thousand steps;
* ``long``: hundreds of thousands of steps (see docs/reliability.md).

``PYLAF_DIFF_EXAMPLES`` / ``PYLAF_DIFF_STEPS`` override the example count and
steps per example.  The plain seeded driver (``fuzz/run_random.py``) runs the
same comparison without hypothesis, for very long soaks.

The regression tests at the end pin each disagreement that turned out to be
a C-core bug (the kernel, not the reference, was the judge).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from diffdraw import draw_addr, draw_range
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pylaf import Access, AddressSpace, Config, LafMemoryError, LafValueError, Policy
from pylaf._ffi import lib
from pylaf.reference import Reference

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fuzz"))
import diffops

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
_EXAMPLES = {"ci": 12, "dev": 150, "long": 4000}
_STEPS = {"ci": 30, "dev": 40, "long": 100}
EXAMPLES = int(os.environ.get("PYLAF_DIFF_EXAMPLES", _EXAMPLES.get(PROFILE, 12)))
STEPS = int(os.environ.get("PYLAF_DIFF_STEPS", _STEPS.get(PROFILE, 30)))

K, M = 1 << 10, 1 << 20
#: append each example's step count to this file (progress of long runs)
STEPLOG = os.environ.get("PYLAF_DIFF_STEPLOG")
#: print every operation to stderr (replaying a failure found by a long run)
TRACE = bool(os.environ.get("PYLAF_DIFF_TRACE"))


# ----------------------------------------------------------------- strategies
def policies(page_size: int) -> st.SearchStrategy[Policy]:
    pmd_order = page_size.bit_length() - 1 - 3
    sizes = st.dictionaries(st.sampled_from([str(page_size << o) for o in range(2, pmd_order + 1)]),
                            st.sampled_from(("always", "inherit", "madvise", "never")), max_size=4)
    glob = st.sampled_from(("never", "madvise", "always"))
    upstream = st.builds(Policy, kind=st.just("upstream"), enabled=glob, sizes=sizes,
                         sizes_exclusive=st.booleans(), use_zero_page=st.booleans(),
                         anon_beside_full=st.booleans())
    fixed = st.builds(Policy, kind=st.just("fixed"), enabled=st.just("always"),
                      fixed_order=st.sampled_from([0, *range(2, pmd_order + 1)]),
                      use_zero_page=st.booleans(), anon_beside_full=st.booleans())
    laf = st.builds(Policy, kind=st.sampled_from(("laf-v3", "huang-a", "huang-b")), enabled=glob,
                    use_zero_page=st.booleans())
    huang = st.builds(Policy, kind=st.just("huang-sysfs"),
                      enabled=st.sampled_from(("never", "madvise", "always", "small", "auto")),
                      use_zero_page=st.booleans())
    return st.one_of(upstream, upstream, fixed, laf, huang)


@st.composite
def machine_specs(draw: st.DrawFn) -> diffops.MachineSpec:
    ps = draw(st.sampled_from((4096, 4096, 4096, 16384, 65536)))
    arch = draw(st.sampled_from(("x86_64", "arm64")))
    ram = draw(st.sampled_from((2, 3, 4, 8, 16))) if ps != 65536 else draw(st.sampled_from((2, 3, 4)))
    memcg = draw(st.sampled_from((0, 0, 0, 64, 300, 1500)))
    mmc = draw(st.sampled_from((65530, 65530, 65530, 0, 1, 2, 3, 5, 8)))
    return diffops.MachineSpec(ps, arch, ram, memcg, draw(policies(ps)), mmc)


# ------------------------------------------------------------- state machine
class DiffMachine(RuleBasedStateMachine):
    """Same operations on C and on the reference; everything compared after each."""

    c: AddressSpace
    r: Reference

    @initialize(spec=machine_specs())
    def start(self, spec: diffops.MachineSpec) -> None:
        self.spec = spec
        self.c = AddressSpace(spec.config())
        self.r = Reference(spec.config())
        self.ps = spec.page_size
        if TRACE:
            print(f"SPEC {spec!r}", file=sys.stderr)
        self.pmd = self.ps * (self.ps // 8)
        self.nsteps = 0

    def teardown(self) -> None:
        if hasattr(self, "c"):
            self.c.check_invariants()
            self.c.close()
            if STEPLOG:
                with open(STEPLOG, "a") as f:
                    f.write(f"{self.nsteps}\n")

    # --- helpers
    def run(self, *op: object) -> object:
        if TRACE:
            print(f"OP {op!r}", file=sys.stderr)
        oc = diffops.apply(self.c, op)
        orr = diffops.apply(self.r, op)
        assert oc == orr, f"{op!r}: outcome C={oc!r} R={orr!r}"
        self.nsteps += 1
        return oc

    def _range(self, data: st.DataObject) -> tuple[int, int]:
        return draw_range(data, self.c.vmas(), self.ps, self.pmd)

    def _addr(self, data: st.DataObject) -> int:
        return draw_addr(data, self.c.vmas(), self.ps)

    # --- rules
    @rule(data=st.data())
    def mmap(self, data: st.DataObject) -> None:
        ps, pmd = self.ps, self.pmd
        npg = data.draw(st.sampled_from((1, 3, 16, 17, 100, pmd // ps, pmd // ps, 2 * pmd // ps,
                                         4 * pmd // ps))
                        | st.integers(1, 3 * pmd // ps), label="npages")
        extra = data.draw(st.sampled_from((0, 0, 0, 1, ps - 1)), label="odd")
        prot = data.draw(st.sampled_from(("rw", "rw", "rw", "r", "w", "")), label="prot")
        how = data.draw(st.sampled_from(("top-down", "top-down", "hint", "fixed")), label="how")
        length = npg * ps + extra
        if how == "top-down":
            self.run("mmap", length, None, prot, False)
            return
        vmas = self.c.vmas()
        base = vmas[0].start if vmas else self.c.mmap_base
        addr = (base - data.draw(st.integers(0, 64), label="pmds") * pmd
                + data.draw(st.sampled_from((0, ps, 16 * ps, pmd // 2)), label="off"))
        if data.draw(st.integers(0, 19), label="misalign") == 0:
            addr += data.draw(st.integers(1, ps - 1), label="sub")
        self.run("mmap", length, max(addr, 0), prot, how == "fixed")

    @precondition(lambda self: self.c.vmas())
    @rule(data=st.data())
    def munmap(self, data: st.DataObject) -> None:
        self.run("munmap", *self._range(data))

    @rule(data=st.data(), write=st.booleans())
    def mremap(self, data: st.DataObject, write: bool) -> None:
        """A random mremap() (diffops.mremap_op()), then accesses around
        where the range went (folios moved to unaligned addresses refault
        next to them)."""
        rnd = data.draw(st.randoms(use_true_random=False), label="mremap_rnd")
        op = diffops.mremap_op(rnd, self.c.vmas(), self.ps, self.c.mmap_base)
        got = self.run(*op)
        if isinstance(got, int) and not isinstance(got, bool):
            stride = data.draw(st.sampled_from((self.ps, 3 * self.ps, 16 * self.ps)), label="stride")
            span = min(int(op[3]), 4 * self.pmd) + 8 * self.ps
            self.run("touch_range", max(got - 4 * self.ps, 0), span, stride, write)

    @rule(data=st.data(), advice=st.sampled_from(("MADV_DONTNEED", "MADV_HUGEPAGE", "MADV_NOHUGEPAGE")))
    def madvise(self, data: st.DataObject, advice: str) -> None:
        self.run("madvise", *self._range(data), advice)

    @rule(data=st.data(), prot=st.sampled_from(diffops.MPROTECT_PROTS))
    def mprotect(self, data: st.DataObject, prot: str) -> None:
        self.run("mprotect", *self._range(data), prot)

    @rule(op=st.sampled_from(((41, 1, 0), (41, 1, 2), (41, 0, 0), (41, 2, 2), (42, 0, 0),
                              (41, 0, 2), (41, 1, 1), (42, 1, 0), (7, 0, 0))))
    def prctl(self, op: tuple[int, int, int]) -> None:
        self.run("prctl", *op)

    @rule(data=st.data(), mode=st.sampled_from(("missing", "wp", ("missing", "wp"))))
    def uffd_register(self, data: st.DataObject, mode: object) -> None:
        self.run("uffd_register", *self._range(data), mode)

    @rule(data=st.data())
    def hostile(self, data: st.DataObject) -> None:
        """Hostile arguments (issue 13): wrap-around lengths, addresses at and
        above TASK_SIZE, huge strides; both sides must agree."""
        addrs, lens, strides = diffops.hostile_values(self.ps)
        a = data.draw(st.sampled_from(addrs), label="hostile_addr")
        ln = data.draw(st.sampled_from(lens), label="hostile_len")
        a2 = data.draw(st.sampled_from(addrs), label="hostile_addr2")
        ps_len = self.ps
        op = data.draw(st.sampled_from((
            ("mmap", ln, None, "rw", False), ("mmap", min(ln, 64 * self.ps), a, "rw", True),
            ("munmap", a, ln), ("mprotect", a, ln, "r"), ("madvise", a, ln, "MADV_HUGEPAGE"), ("madvise", a, ln, "MADV_DONTNEED"),
            ("uffd_register", a, ln, "missing"), ("uffd_unregister", a, ln),
            ("touch_range", a, ln,
             diffops.bounded_stride(ln, data.draw(st.sampled_from(strides), label="stride")), True),
            ("fault", a, True), ("mremap", a, ln, ps_len, True, None, False),
            ("mremap", a, ps_len, ln, True, None, False),
            ("mremap", a, ln, ln, True, a2, data.draw(st.booleans(), label="dontunmap")))),
            label="hostile_op")
        self.run(*op)

    @rule(data=st.data())
    def uffd_unregister(self, data: st.DataObject) -> None:
        self.run("uffd_unregister", *self._range(data))

    @rule(data=st.data(), wp=st.booleans())
    def uffd_copy(self, data: st.DataObject, wp: bool) -> None:
        self.run("uffd_copy", *self._range(data), wp)

    @rule(data=st.data())
    def uffd_zeropage(self, data: st.DataObject) -> None:
        self.run("uffd_zeropage", *self._range(data))

    @rule(data=st.data(), wp=st.booleans())
    def uffd_writeprotect(self, data: st.DataObject, wp: bool) -> None:
        self.run("uffd_writeprotect", *self._range(data), wp)

    @rule(data=st.data(), write=st.booleans())
    def fault(self, data: st.DataObject, write: bool) -> None:
        self.run("fault", self._addr(data), write)

    @rule(data=st.data(), write=st.booleans())
    def touch_range(self, data: st.DataObject, write: bool) -> None:
        a, ln = self._range(data)
        stride = data.draw(st.sampled_from((self.ps, self.ps, 2 * self.ps, 16 * self.ps,
                                            3 * self.ps + 8)), label="stride")
        self.run("touch_range", a, min(ln, 4 * self.pmd), stride, write)

    @rule(data=st.data())
    def touch(self, data: st.DataObject) -> None:
        n = data.draw(st.integers(1, 24), label="n")
        addrs = [self._addr(data) for _ in range(n)]
        writes = data.draw(st.lists(st.booleans(), min_size=n, max_size=n), label="writes")
        self.run("touch", addrs, writes)

    @rule(pages=st.none() | st.integers(1, 4096))
    def memcg(self, pages: object) -> None:
        self.run("memcg", None if pages is None else int(pages) * self.ps)

    @rule(k=st.integers(0, 12))
    def fragment(self, k: int) -> None:
        self.run("fragment", k)

    @rule()
    def unfragment(self) -> None:
        self.run("unfragment")

    @rule()
    def shrink(self) -> None:
        self.run("shrink")

    @rule()
    def reset_counters(self) -> None:
        self.run("reset")

    @rule(data=st.data())
    def policy(self, data: st.DataObject) -> None:
        self.run("policy", data.draw(policies(self.ps), label="policy"))

    @rule(order=st.integers(0, 13), count=st.integers(1, 3), charge=st.booleans())
    def inject(self, order: int, count: int, charge: bool) -> None:
        order = min(order, self.c.pmd_order)
        self.run("inject_charge" if charge else "inject_alloc", order, count)

    # --- after every step
    @invariant()
    def same_state(self) -> None:
        if not hasattr(self, "c"):
            return
        self.c.check_invariants()
        self.r.check_invariants()
        diffops.compare(self.c, self.r, f"after {self.nsteps} steps")


TestDifferential = DiffMachine.TestCase
TestDifferential.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
    derandomize=PROFILE == "ci", print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large, HealthCheck.large_base_example])


# ------------------------------------------------------------- seeded driver
@pytest.mark.parametrize("seed", range(4))
def test_random_seeds(seed: int) -> None:
    """The plain random driver (fuzz/run_random.py) on a few fixed seeds."""
    diffops.run_random(seed, 120)


# ---------------------------------------------------------------- regressions
# Each test pins a disagreement where the C core was wrong; the kernel source
# named in the docstring is the evidence.  All of them also pass on Reference.
SIDES = [pytest.param(AddressSpace, id="C"), pytest.param(Reference, id="reference")]


@pytest.mark.parametrize("cls", SIDES)
def test_munmap_frees_pmd_table(cls: type) -> None:
    """mm/memory.c free_pmd_range(): the PMD table goes when no VMA can use its
    PUD range (mm_dec_nr_pmds); the C core kept it (nr_pmds never fell)."""
    with cls(Config(ram="64M")) as mm:
        a = mm.mmap("1M")
        b = mm.mmap("1M", addr=a - (1 << 30), fixed=True)   # another PUD range
        mm.fault(a, True)
        mm.fault(b, True)
        assert mm.stats().nr_pmds == 2
        mm.munmap(a, "1M")
        assert mm.stats().nr_pmds == 1
        mm.munmap(b, "1M")
        s = mm.stats()
        assert (s.nr_pmds, s.nr_ptes) == (0, 0)


@pytest.mark.parametrize("cls", SIDES)
def test_uffd_register_unregister_skip_holes(cls: type) -> None:
    """fs/userfaultfd.c: register/unregister iterate the VMAs of the range;
    holes are skipped, -EINVAL only when no VMA intersects (C: EINVAL)."""
    with cls(Config(ram="64M")) as mm:
        a = mm.mmap("64K")
        b = mm.mmap("64K", addr=a + 128 * K, fixed=True)
        mm.uffd_register(a, 192 * K, "missing")
        flags = [int(v.flags) & 0x200 for v in mm.vmas()]
        assert flags == [0x200, 0x200]
        assert mm.fault(b, False).access == Access.USERFAULT
        mm.uffd_unregister(a, 192 * K)
        assert all(not int(v.flags) & 0x1200 for v in mm.vmas())
        with pytest.raises(LafValueError):
            mm.uffd_register(a + 64 * K, 64 * K, "missing")     # only the hole


@pytest.mark.parametrize("cls", SIDES)
def test_uffd_register_keeps_existing_modes(cls: type) -> None:
    """userfaultfd_register_range(): a VMA already registered with (at least)
    the requested modes is skipped; C replaced MISSING|WP by MISSING."""
    with cls(Config(ram="64M")) as mm:
        a = mm.mmap("64K")
        mm.uffd_register(a, "64K", ("missing", "wp"))
        mm.uffd_register(a, "64K", "missing")
        assert int(mm.vmas()[0].flags) & 0x1200 == 0x1200


@pytest.mark.parametrize("cls", SIDES)
def test_uffd_unregister_clears_wp_bits(cls: type) -> None:
    """userfaultfd_clear_vma() -> uffd_wp_range(..., false): unregistering a
    WP range clears the uffd-wp bits and makes exclusive pages writable."""
    with cls(Config(ram="64M")) as mm:
        a = mm.mmap("64K")
        mm.fault(a, True)
        mm.uffd_register(a, "64K", "wp")
        mm.uffd_writeprotect(a, "64K", True)
        assert mm.pte(a).raw & 0x40 and not mm.pte(a).raw & 0x2
        mm.uffd_unregister(a, "64K")
        raw = mm.pte(a).raw
        assert not raw & 0x40 and raw & 0x2
        assert mm.fault(a, True).access == Access.HIT


@pytest.mark.parametrize("cls", SIDES)
def test_uffd_writeprotect_skips_holes(cls: type) -> None:
    """mwriteprotect_range(): for_each_vma_range skips holes (C: ENOENT)."""
    with cls(Config(ram="64M")) as mm:
        a = mm.mmap("64K")
        mm.mmap("64K", addr=a + 128 * K, fixed=True)
        mm.uffd_register(a, 192 * K, "wp")
        mm.fault(a + 128 * K, True)
        mm.uffd_writeprotect(a, 192 * K, True)
        assert mm.pte(a + 128 * K).raw & 0x40


@pytest.mark.parametrize("cls", SIDES)
def test_uffd_copy_semantics(cls: type) -> None:
    """uffd_mfill_lock(): the range must lie in ONE registered VMA (any mode,
    WP-only included), else -ENOENT; the VMA gets its anon_vma first."""
    with cls(Config(ram="64M")) as mm:
        a = mm.mmap("64K")
        mm.uffd_register(a, "64K", "wp")
        mm.uffd_copy(a, "4K")                                 # WP-only: allowed
        assert mm.pte(a).present
        b = mm.mmap("64K", addr=a + 64 * K, fixed=True, prot="r")
        with pytest.raises(LafValueError):
            mm.uffd_zeropage(b, "4K")                         # not registered: ENOENT
        assert mm.vmas()[-1].anon_vma                         # ... but anon_vma prepared


@pytest.mark.parametrize("cls", SIDES)
def test_madvise_beyond_task_size_is_a_hole(cls: type) -> None:
    """is_valid_madvise() only rejects wrap-around; a range past TASK_SIZE is
    applied to the mapped part and reports -ENOMEM (C: EINVAL, not applied)."""
    with cls(Config(ram="64M")) as mm:
        a = mm.mmap("64K")
        with pytest.raises(LafMemoryError) as ei:
            mm.madvise(a, (1 << 48), "MADV_HUGEPAGE")
        assert ei.value.errno == lib.LAF_ENOMEM
        assert int(mm.vmas()[0].flags) & 0x20000000


@pytest.mark.parametrize("cls", SIDES)
def test_prctl_thp_disable_any_nonzero(cls: type) -> None:
    """kernel/sys.c prctl_set_thp_disable(bool thp_disable, ...): arg2 = 2
    disables like 1 (C: EINVAL)."""
    with cls(Config(ram="64M")) as mm:
        mm.prctl(41, 2, 0)
        assert mm.prctl(42) == 1
        mm.prctl(41, 5, 2)
        assert mm.prctl(42) == 3


@pytest.mark.parametrize("cls", SIDES)
def test_pmd_thp_is_dirty_in_read_only_vma(cls: type) -> None:
    """map_anon_folio_pmd(): maybe_pmd_mkwrite(pmd_mkdirty(entry)): the THP
    PMD is dirty even when the VMA is read-only (use_zero_page=0 read)."""
    pol = Policy(kind="upstream", enabled="always", use_zero_page=False)
    with cls(Config(ram="64M", policy=pol)) as mm:
        a = mm.mmap("4M", prot="r")
        a2 = (a + (2 * M - 1)) & ~(2 * M - 1)
        r = mm.fault(a2, False)
        assert r.order == 9
        raw = mm.pte(a2).raw
        assert raw & 0x4 and not raw & 0x2


@pytest.mark.parametrize("cls", SIDES)
def test_laf_order0_charge_runs_shrinker(cls: type) -> None:
    """LAF v3 charges after allocating; at order 0 that is the same GFP_KERNEL
    charge as folio_prealloc(), so the emulated reclaim (deferred-split
    shrinker) must run before OOM, as it does for upstream (C: OOM at once)."""
    pol = Policy(kind="laf-v3", enabled="always")
    with cls(Config(ram="64M", policy=pol)) as mm:
        a = mm.mmap("1M", addr=0x7f0000000000, fixed=True)
        mm.touch_range(a, "64K", write=True)                  # 32K folios (prefer = COSTLY)
        assert mm.folio(a).order == 3
        mm.madvise(a + 4 * K, "4K", "MADV_DONTNEED")          # partially mapped
        mm.set_memcg_limit(mm.stats().memcg_charged * mm.page_size)
        mm.madvise(a, "1M", "MADV_NOHUGEPAGE")                # order 0 from now on
        r = mm.fault(a + 512 * K, True)
        assert r.access == Access.FAULT
        assert sum(mm.stats().split.values()) == 1


@pytest.mark.parametrize("cls", SIDES)
def test_uffd_ranges_below_mmap_min_addr(cls: type) -> None:
    """fs/userfaultfd.c validate_range(): start < mmap_min_addr is -EINVAL for
    every uffd ioctl (C: -ENOENT from the VMA lookup)."""
    with cls(Config(ram="64M")) as mm:
        for call in (lambda: mm.uffd_register(0, "4K"), lambda: mm.uffd_unregister(0, "4K"),
                     lambda: mm.uffd_copy(0, "4K"), lambda: mm.uffd_zeropage(4096, "4K"),
                     lambda: mm.uffd_writeprotect(0, "4K", False)):
            with pytest.raises(LafValueError) as ei:
                call()
            assert ei.value.errno == -22


@pytest.mark.parametrize("cls", SIDES)
def test_uffd_copy_allocates_before_finding_pte_taken(cls: type) -> None:
    """mfill_atomic_pte_copy() allocates and charges the folio before
    mfill_atomic_install_pte() finds the PTE present: with the memcg full,
    copying onto a mapped page is -ENOMEM, not -EEXIST (C: EEXIST)."""
    with cls(Config(ram="64M")) as mm:
        a = mm.mmap("64K")
        mm.uffd_register(a, "64K", "missing")
        mm.uffd_copy(a, "4K")
        mm.set_memcg_limit(mm.stats().memcg_charged * mm.page_size)
        with pytest.raises(LafMemoryError) as ei:
            mm.uffd_copy(a, "4K")
        assert ei.value.errno == lib.LAF_ENOMEM
        mm.set_memcg_limit(None)
        with pytest.raises(LafValueError) as ei2:
            mm.uffd_copy(a, "4K")
        assert ei2.value.errno == -17


# ----------------------------------------------------------- directed scenarios
# Hand-written sequences for paths random operations reach rarely (PMD THP
# split/zap/uffd-wp, huge-zero write fallback, wp reuse, contpte), compared
# step by step like the state machine.
_A = 0x7F0000000000            # PMD-aligned for every page size


def _scenarios(ps: int) -> dict[str, list[tuple]]:
    pmd = ps * (ps // 8)
    return {
        "thp-partial-munmap-dontneed-shrink": [
            ("mmap", 4 * pmd, _A, "rw", True), ("madvise", _A, 4 * pmd, "MADV_HUGEPAGE"),
            ("touch_range", _A, 2 * pmd, ps, True), ("munmap", _A + 3 * ps, ps),
            ("madvise", _A + pmd + 5 * ps, 20 * ps, "MADV_DONTNEED"), ("shrink",),
            ("touch_range", _A, 2 * pmd, ps, True), ("munmap", _A, 4 * pmd)],
        "thp-uffd-wp-whole-and-partial": [
            ("mmap", 2 * pmd, _A, "rw", True), ("madvise", _A, 2 * pmd, "MADV_HUGEPAGE"),
            ("fault", _A, True), ("fault", _A + pmd, True),
            ("uffd_register", _A, 2 * pmd, "wp"), ("uffd_writeprotect", _A, pmd, True),
            ("fault", _A + 8, True), ("uffd_writeprotect", _A + pmd + 16 * ps, 16 * ps, True),
            ("fault", _A + pmd + 17 * ps, True), ("fault", _A + pmd + 40 * ps, True),
            ("uffd_writeprotect", _A, 2 * pmd, False), ("fault", _A + 8, True),
            ("uffd_register", _A, 2 * pmd, "missing"),          # drops WP, keeps bits
            ("uffd_writeprotect", _A, pmd, True), ("uffd_unregister", _A, 2 * pmd),
            ("touch_range", _A, 2 * pmd, ps, True)],
        "huge-zero-write-fallback": [
            ("mmap", 2 * pmd, _A, "rw", True), ("madvise", _A, 2 * pmd, "MADV_HUGEPAGE"),
            ("touch_range", _A, pmd, 7 * ps, False), ("inject_alloc", ps.bit_length() - 4, 1),
            ("fault", _A + 3 * ps, True), ("fault", _A + pmd + ps, False),
            ("fault", _A + pmd + ps, True), ("madvise", _A, 2 * pmd, "MADV_DONTNEED"),
            ("fault", _A, False), ("munmap", _A + ps, ps)],
        "wp-reuse-of-large-folio": [
            ("policy", Policy(kind="fixed", fixed_order=4 if ps == 4096 else 2, enabled="always")),
            ("mmap", 64 * ps, _A, "rw", True), ("touch_range", _A, 64 * ps, ps, True),
            ("uffd_register", _A, 64 * ps, "wp"), ("uffd_writeprotect", _A, 64 * ps, True),
            ("uffd_register", _A, 64 * ps, "missing"),
            ("fault", _A + 5 * ps, True), ("fault", _A + 6 * ps, True),
            ("madvise", _A + 16 * ps, 15 * ps, "MADV_DONTNEED"), ("fault", _A + 31 * ps, True),
            ("shrink",), ("touch_range", _A, 64 * ps, ps, True)],
        "pmd-charge-and-alloc-fallback": [
            ("policy", Policy(kind="upstream", enabled="always",
                              sizes={str(ps << 2): "always", str(ps << 4): "always"})),
            ("memcg", 300 * ps), ("mmap", 4 * pmd, _A, "rw", True),
            ("touch_range", _A, 4 * pmd, 16 * ps, True), ("memcg", None), ("fragment", 3),
            ("mmap", 2 * pmd, _A + 8 * pmd, "rw", True), ("touch_range", _A + 8 * pmd, pmd, 32 * ps, True),
            ("unfragment",), ("fault", _A + 9 * pmd, True), ("munmap", _A, 16 * pmd)],
        "vma-split-merge-inside-thp": [
            ("mmap", 2 * pmd, _A, "rw", True), ("madvise", _A, 2 * pmd, "MADV_HUGEPAGE"),
            ("fault", _A, True), ("fault", _A + pmd, False),
            ("madvise", _A + 10 * ps, 3 * ps, "MADV_NOHUGEPAGE"),
            ("madvise", _A + pmd + 10 * ps, 3 * ps, "MADV_NOHUGEPAGE"),
            ("madvise", _A, 2 * pmd, "MADV_HUGEPAGE"), ("uffd_register", _A + 4 * ps, ps, "missing"),
            ("uffd_unregister", _A, 2 * pmd), ("mmap", pmd, _A + 2 * pmd, "rw", True),
            ("touch_range", _A, 3 * pmd, 64 * ps, True), ("munmap", _A + ps, 2 * pmd)],
    }


@pytest.mark.parametrize("name", sorted(_scenarios(4096)))
@pytest.mark.parametrize("page_size,arch", [(4096, "x86_64"), (4096, "arm64"), (16384, "arm64"),
                                            (65536, "x86_64")])
def test_directed_scenarios(name: str, page_size: int, arch: str) -> None:
    spec = diffops.MachineSpec(page_size, arch, 16 if page_size != 65536 else 6, 0,
                               Policy(kind="upstream", enabled="madvise",
                                      sizes={str(page_size << 4): "always"}))
    c, r = AddressSpace(spec.config()), Reference(spec.config())
    try:
        for i, op in enumerate(_scenarios(page_size)[name]):
            oc, orr = diffops.apply(c, op), diffops.apply(r, op)
            assert oc == orr, f"step {i} {op!r}: C={oc!r} R={orr!r}"
            c.check_invariants()
            diffops.compare(c, r, f"{name} step {i} {diffops.short(op)}")
    finally:
        c.close()


@pytest.mark.parametrize("cls", SIDES)
def test_wp_reuse_unfolds_contpte_block(cls: type) -> None:
    """arm64 contpte_ptep_set_access_flags(): when wp_page_reuse() changes the
    write bit of one PTE of a contpte block, the block is unfolded first (C:
    left PTE_CONT on a block with mixed permissions; its own invariant check
    flagged it)."""
    pol = Policy(kind="fixed", fixed_order=4, enabled="always")
    with cls(Config(ram="64M", arch="arm64", policy=pol)) as mm:
        a = mm.mmap("64K", addr=_A, fixed=True)
        mm.touch_range(a, "64K", write=True)
        assert mm.pte(a).raw & 0x20                              # PTE_CONT
        mm.uffd_register(a, "64K", "wp")
        mm.uffd_writeprotect(a, "64K", True)
        mm.uffd_register(a, "64K", "missing")                  # drops WP, keeps the bits
        assert mm.fault(a + 5 * 4096, True).access == Access.FAULT
        assert not any(int(p) & 0x20 for p in mm.read_ptes(a, 16)[0])
        mm.check_invariants()


@pytest.mark.parametrize("cls", SIDES)
def test_zap_batch_breaks_at_uffd_wp_bit(cls: type) -> None:
    """zap_present_ptes() -> folio_pte_batch(): young/dirty/write are ignored
    but the uffd-wp bit is compared, so a folio whose PTEs differ in uffd-wp is
    unmapped in two batches and is partially mapped in between
    (split_deferred++).  C batched across the bit."""
    pol = Policy(kind="fixed", fixed_order=4, enabled="always")
    with cls(Config(ram="64M", policy=pol)) as mm:
        a = mm.mmap("64K", addr=_A, fixed=True)
        mm.touch_range(a, "64K", write=True)
        mm.uffd_register(a, "64K", "wp")
        mm.uffd_writeprotect(a + 8 * 4096, "32K", True)
        mm.munmap(a, "64K")
        s = mm.stats()
        assert s.split_deferred["64K"] == 1
        assert s.nr_anon["64K"] == 0 and s.nr_anon_partially_mapped["64K"] == 0


@pytest.mark.parametrize("cls", SIDES)
def test_fixed_pmd_order_honours_uffd(cls: type) -> None:
    """csrc/policy.c header: for the fixed policy, "VM_NOHUGEPAGE, prctl and
    uffd still force order 0" - the PMD order too.  C took the PMD path in a
    uffd-registered VMA (a THP in a WP range; an anon_vma on a MISSING read).
    Found by atheris (fuzz/corpus/regress-fixed-pmd-uffd)."""
    with cls(Config(ram="64M", policy=Policy.fixed(9))) as mm:
        a = mm.mmap("4M", addr=_A, fixed=True)
        mm.uffd_register(a, "2M", "wp")
        assert mm.fault(a, True).order == 0
        assert mm.fault(a + 2 * M, True).order == 9              # not registered
        mm.uffd_register(a + 2 * M, "2M", "missing")
        mm.madvise(a + 2 * M, "2M", "MADV_DONTNEED")
        assert mm.fault(a + 2 * M, False).access == Access.USERFAULT


@pytest.mark.parametrize("cls", SIDES)
def test_writeprotect_unfolds_block_straddling_vmas(cls: type) -> None:
    """mwriteprotect_range() runs uffd_wp_range() per VMA and stops (-ENOENT)
    at a VMA not registered for WP; a contpte block straddling the boundary
    is therefore only partly write-protected and must be unfolded (arm64
    contpte_try_unfold_partial()).  C judged "partial" against the whole
    request and left PTE_CONT on a block with mixed permissions (its own
    check_invariants() caught it in a long differential run)."""
    pol = Policy(kind="fixed", fixed_order=4, enabled="always")
    with cls(Config(ram="64M", arch="arm64", policy=pol)) as mm:
        a = mm.mmap("64K", addr=_A, fixed=True)
        mm.touch_range(a, "64K", write=True)
        mm.uffd_register(a, "32K", "wp")                       # splits the VMA
        assert all(int(p) & 0x20 for p in mm.read_ptes(a, 16)[0])
        with pytest.raises(LafValueError) as ei:
            mm.uffd_writeprotect(a, "64K", True)
        assert ei.value.errno == -2
        ptes = mm.read_ptes(a, 16)[0]
        assert not any(int(p) & 0x20 for p in ptes)
        assert all(int(p) & 0x40 for p in ptes[:8]) and not any(int(p) & 0x40 for p in ptes[8:])
        mm.check_invariants()


@pytest.mark.parametrize("cls", SIDES)
def test_dontunmap_source_stays_unmerged(cls: type) -> None:
    """Two adjacent VMAs kept apart only by different anon_vmas: a
    MREMAP_DONTUNMAP move of the lower one leaves it without an anon_vma
    (dontunmap_complete()); its next write takes the neighbour's
    (find_mergeable_anon_vma()) and the two stay apart, since faults never
    merge VMAs.  C's check_invariants() called that "should have merged"
    (seeded differential run 1038); the kernel keeps that state."""
    with cls(Config(ram="64M")) as mm:
        a = mm.mmap("64K", addr=_A, fixed=True)
        mm.madvise(a + 4 * K, "60K", "MADV_NOHUGEPAGE")
        mm.fault(a, True)
        mm.fault(a + 4 * K, True)                                # another anon_vma
        mm.madvise(a, "4K", "MADV_NOHUGEPAGE")                   # same flags, no merge
        got = mm.mremap(a, "4K", "4K", may_move=True, dontunmap=True)
        assert got != a
        mm.fault(a, True)
        vmas = [v for v in mm.vmas() if v.start < a + 64 * K and v.end > a]
        assert [(v.start, v.end) for v in vmas] == [(a, a + 4 * K), (a + 4 * K, a + 64 * K)]
        assert vmas[0].anon_vma == vmas[1].anon_vma != 0
        mm.check_invariants()


@pytest.mark.parametrize("cls", SIDES)
def test_mremap_move_keeps_folios_at_unaligned_address(cls: type) -> None:
    """move_ptes() keeps each folio's size: a 64K folio moved by 4K is mapped
    at an address that is not 64K-aligned, keeps folio->index, and a write
    next to it gets order 0 (its aligned block is not pte_none())."""
    pol = Policy(kind="fixed", fixed_order=4, enabled="always")
    with cls(Config(ram="64M", policy=pol)) as mm:
        a = mm.mmap("64K", addr=_A, fixed=True)
        mm.touch_range(a, "64K", write=True)
        to = mm.mremap(a, "64K", "128K", may_move=True, new_addr=a + 4 * M + 4 * K)
        assert to == a + 4 * M + 4 * K
        f = mm.folio(to)
        assert f.order == 4 and f.index == a >> 12
        assert mm.fault(to + 64 * K, True).order == 0
        assert mm.fault(to + 124 * K, True).order == 0        # the block runs past the VMA
        mm.check_invariants()
