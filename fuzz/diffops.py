"""Shared differential machinery: run one operation on the C emulator
(:class:`pylaf.AddressSpace`) and on the pure-Python reference
(:class:`pylaf.reference.Reference`), then compare everything observable.

Used by ``tests/test_differential.py`` (hypothesis state machine) and by
``fuzz/fuzz_diff.py`` (atheris).  An *operation* is a tuple
``(name, *args)``; :func:`apply` runs it on one side and returns a
comparable outcome (a value, or ``("error", ExceptionClass, errno)``).
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from pylaf import AddressSpace, Config, LafError, Policy
from pylaf.reference import Reference
from pylaf.stats import PER_ORDER_FIELDS, SCALAR_FIELDS

#: emulator work counters (per_page_ops, ...): implementation details, not compared
WORK_COUNTERS = frozenset({
    "per_page_ops", "per_folio_ops", "set_ptes_calls", "ptes_written", "ptes_cleared",
    "bytes_zeroed", "alloc_retries", "contpte_blocks", "contpte_unfolds",
    "zero_page_maps", "huge_zero_pmd_maps",
})
COMPARED_SCALARS = tuple(n for n in SCALAR_FIELDS if n not in WORK_COUNTERS)

PAGE_SIZES = (4096, 16384, 65536)
ARCHES = ("x86_64", "arm64")


class Mismatch(AssertionError):
    """The C emulator and the reference disagree."""


# ----------------------------------------------------------------------------
# machines
# ----------------------------------------------------------------------------
def policy_from_choice(kind: str, page_size: int, rnd: random.Random) -> Policy:
    pmd_order = page_size.bit_length() - 1 - 3
    glob = rnd.choice(("never", "madvise", "always"))
    if kind == "upstream":
        sizes = {}
        for o in range(2, pmd_order + 1):
            r = rnd.random()
            if r < 0.45:
                sizes[str(page_size << o)] = rnd.choice(("always", "inherit", "madvise", "never"))
        return Policy(kind="upstream", enabled=glob, sizes=sizes, sizes_exclusive=rnd.random() < 0.3,
                      use_zero_page=rnd.random() < 0.8, anon_beside_full=rnd.random() < 0.25)
    if kind == "fixed":
        order = rnd.choice([0, *range(2, pmd_order + 1)])
        return Policy(kind="fixed", fixed_order=order, enabled="always",
                      use_zero_page=rnd.random() < 0.8, anon_beside_full=rnd.random() < 0.2)
    if kind == "huang-sysfs":
        glob = rnd.choice(("never", "madvise", "always", "small", "auto"))
    return Policy(kind=kind, enabled=glob, use_zero_page=rnd.random() < 0.8,
                  anon_beside_full=rnd.random() < 0.2)


@dataclass
class MachineSpec:
    page_size: int
    arch: str
    ram_pmds: int          # RAM in PMD units (small: allocation pressure)
    memcg_pages: int       # 0: unlimited
    policy: Policy
    max_map_count: int = 65530   # small values: vm.max_map_count pressure

    def config(self) -> Config:
        pmd = self.page_size * (self.page_size // 8)
        lim = self.memcg_pages * self.page_size if self.memcg_pages else None
        return Config(page_size=self.page_size, arch=self.arch, ram=self.ram_pmds * pmd,
                      memcg_limit=lim, policy=self.policy, max_map_count=self.max_map_count)


def random_spec(rnd: random.Random) -> MachineSpec:
    ps = rnd.choices(PAGE_SIZES, weights=(8, 2, 1))[0]
    arch = rnd.choice(ARCHES)
    kind = rnd.choice(("upstream", "upstream", "upstream", "fixed", "laf-v3", "huang-a",
                       "huang-b", "huang-sysfs"))
    ram = rnd.choice((2, 3, 4, 6, 8, 16, 16)) if ps != 65536 else rnd.choice((2, 3, 4))
    memcg = 0 if rnd.random() < 0.6 else rnd.randrange(8, 4096)
    mmc = 65530 if rnd.random() < 0.8 else rnd.randrange(0, 12)
    return MachineSpec(ps, arch, ram, memcg, policy_from_choice(kind, ps, rnd), mmc)


U64_MAX = (1 << 64) - 1
#: mprotect() protections the random drivers use (issue 10); "w" and "x"
#: alone are legal too (VM_WRITE without VM_READ, VM_EXEC only)
MPROTECT_PROTS = ("rw", "rw", "r", "r", "", "", "rx", "rwx", "w", "x")


def hostile_values(page_size: int) -> tuple[list[int], list[int], list[int]]:
    """Addresses, lengths and strides a hostile caller tries: at and above
    TASK_SIZE, lengths that wrap after PAGE_ALIGN() or when added to an
    address, huge strides (issue 13: every one must get the kernel's errno,
    or a bounded result, on both sides)."""
    task = (1 << 47) - page_size
    addrs = [0, page_size, task - page_size, task, task + page_size, 1 << 47, 1 << 63,
             U64_MAX - page_size + 1, U64_MAX & ~7]
    lens = [1, page_size, U64_MAX, U64_MAX - page_size + 2, U64_MAX - page_size + 1,
            1 << 63, task, task + 1, task + page_size]
    strides = [page_size, 1 << 47, 1 << 62, 1 << 63, U64_MAX, U64_MAX - page_size + 1]
    return addrs, lens, strides


def bounded_stride(length: int, stride: int, max_accesses: int = 64) -> int:
    """``stride``, raised so that a touch_range over ``length`` makes at most
    ``max_accesses`` accesses (a huge range at a small stride is a legitimate
    but endless loop, on the kernel too)."""
    return max(stride, -(-length // max_accesses))


def hostile_op(rnd: random.Random, page_size: int) -> tuple[object, ...]:
    """One operation with hostile arguments (see :func:`hostile_values`)."""
    addrs, lens, strides = hostile_values(page_size)
    a, ln = rnd.choice(addrs), rnd.choice(lens)
    k = rnd.randrange(0, 10)
    if k == 9:                                   # mprotect (issue 10)
        return ("mprotect", a, ln, rnd.choice(MPROTECT_PROTS))
    if k == 0:
        return ("mmap", ln, None, "rw", False)
    if k == 1:
        return ("mmap", min(ln, 64 * page_size), a, "rw", rnd.random() < 0.5)
    if k == 2:
        return ("munmap", a, ln)
    if k == 3:
        return ("madvise", a, ln, rnd.choice(("MADV_DONTNEED", "MADV_HUGEPAGE", "MADV_NOHUGEPAGE")))
    if k == 4:
        return ("uffd_register", a, ln, "missing")
    if k == 5:
        return (rnd.choice(("uffd_unregister", "uffd_zeropage")), a, ln)
    if k == 6:
        return ("touch_range", a, ln, bounded_stride(ln, rnd.choice(strides)), rnd.random() < 0.5)
    if k == 7:
        return ("fault", a, rnd.random() < 0.5)
    return ("touch", [rnd.choice(addrs) for _ in range(4)], [True, False, True, False])


# ----------------------------------------------------------------------------
# one side
# ----------------------------------------------------------------------------
def apply(side: Any, op: tuple) -> Any:
    """Run ``op`` on ``side`` (AddressSpace or Reference); return a comparable outcome."""
    name, *args = op
    try:
        if name == "mmap":
            length, addr, prot, fixed = args
            return side.mmap(length, addr=addr, prot=prot, fixed=fixed)
        if name == "munmap":
            side.munmap(*args)
            return None
        if name == "madvise":
            side.madvise(*args)
            return None
        # ---- mprotect (issue 10) ----
        if name == "mprotect":
            side.mprotect(*args)
            return None
        # ---- end mprotect ----
        if name == "prctl":
            return side.prctl(*args)
        if name == "uffd_register":
            side.uffd_register(*args)
            return None
        if name == "uffd_unregister":
            side.uffd_unregister(*args)
            return None
        if name == "uffd_copy":
            side.uffd_copy(*args)
            return None
        if name == "uffd_zeropage":
            side.uffd_zeropage(*args)
            return None
        if name == "uffd_writeprotect":
            side.uffd_writeprotect(*args)
            return None
        if name == "fault":
            return side.fault(*args)
        if name == "touch_range":
            start, length, stride, write = args
            return side.touch_range(start, length, stride, write=write)
        if name == "touch":
            addrs, writes = args
            r = side.touch(np.asarray(addrs, dtype=np.uint64), np.asarray(writes, dtype=np.bool_),
                           results=True)
            return (r.accesses, r.hits, r.faulted, r.sigsegv, r.oom, r.sigbus, r.userfault,
                    r.first_error, tuple(r.results.tolist()))
        if name == "memcg":
            side.set_memcg_limit(*args)
            return None
        if name == "fragment":
            side.fragment(*args)
            return None
        if name == "unfragment":
            side.unfragment()
            return None
        if name == "shrink":
            return side.shrink_deferred_split()
        if name == "reset":
            side.reset_counters()
            return None
        if name == "policy":
            side.set_policy(*args)
            return None
        if name == "inject_alloc":
            side.inject_alloc_fail(*args)
            return None
        if name == "inject_charge":
            side.inject_charge_fail(*args)
            return None
        if name == "inject_race":
            side.inject_race(*args)
            return None
        if name == "inject_pte_map":
            side.inject_pte_map_fail(*args)
            return None
        raise ValueError(f"unknown op {name}")
    except LafError as exc:
        return ("error", type(exc).__name__, exc.errno)
    except ValueError:
        return ("error", "ValueError", 0)


# ----------------------------------------------------------------------------
# comparison
# ----------------------------------------------------------------------------
def _anon_vma_partition(vmas: list) -> list:
    ids: dict[int, int] = {}
    out = []
    for v in vmas:
        if not v.anon_vma:
            out.append(0)
        else:
            out.append(ids.setdefault(v.anon_vma, len(ids) + 1))
    return out


def compare(c: AddressSpace, r: Reference, what: str = "", folios: bool = True) -> None:
    """Compare VMAs, every PTE of every VMA, per-page orders and counters."""
    cv, rv = c.vmas(), r.vmas()
    ck = [(v.start, v.end, int(v.flags)) for v in cv]
    rk = [(v.start, v.end, int(v.flags)) for v in rv]
    if ck != rk:
        raise Mismatch(f"{what}: VMAs differ\n C: {_fmt_vmas(ck)}\n R: {_fmt_vmas(rk)}")
    if _anon_vma_partition(cv) != _anon_vma_partition(rv):
        raise Mismatch(f"{what}: anon_vma differ C={_anon_vma_partition(cv)} R={_anon_vma_partition(rv)}")
    ps = c.page_size
    for v in cv:
        n = (v.end - v.start) // ps
        cp, co = c.read_ptes(v.start, n)
        rp, ro = r.read_ptes(v.start, n)
        if not (np.array_equal(cp, rp) and np.array_equal(co, ro)):
            bad = np.nonzero((cp != rp) | (co != ro))[0]
            lines = []
            for i in bad[:8]:
                lines.append(f"  {v.start + int(i) * ps:#x}: C={int(cp[i]):#x}/{int(co[i])} "
                             f"R={int(rp[i]):#x}/{int(ro[i])}")
            raise Mismatch(f"{what}: {len(bad)} PTEs differ in VMA {v.start:#x}-{v.end:#x}\n"
                           + "\n".join(lines))
        if folios and n:
            # folio metadata at the head page of each distinct folio (bounded)
            seen = 0
            for i in range(n):
                if co[i] < 0:
                    continue
                if (i and co[i] == co[i - 1] and co[i] > 0
                        and (int(cp[i]) >> 12) == (int(cp[i - 1]) >> 12) + 1):
                    continue                      # same folio as the previous page
                a = v.start + i * ps
                cf, rf = c.folio(a), r.folio(a)
                if cf != rf:
                    raise Mismatch(f"{what}: folio at {a:#x} differs\n C: {cf}\n R: {rf}")
                seen += 1
                if seen > 64:
                    break
    cs, rs = c.stats(), r.stats()
    diffs = []
    for n in COMPARED_SCALARS:
        if getattr(cs, n) != getattr(rs, n):
            diffs.append(f"{n}: C={getattr(cs, n)} R={getattr(rs, n)}")
    for n in PER_ORDER_FIELDS:
        a, b = cs.per_order[n], rs.per_order[n]
        if not np.array_equal(a, b):
            diffs.append(f"{n}: C={a.tolist()} R={b.tolist()}")
    if diffs:
        raise Mismatch(f"{what}: counters differ\n  " + "\n  ".join(diffs))


def _fmt_vmas(vs: list) -> str:
    return " ".join(f"[{s:#x}-{e:#x} {f:#x}]" for s, e, f in vs)


# ----------------------------------------------------------------------------
# random operations (for the plain random driver and the fuzzer)
# ----------------------------------------------------------------------------
def random_op(rnd: random.Random, c: AddressSpace, spec: MachineSpec) -> tuple:
    ps = spec.page_size
    pmd = ps * (ps // 8)
    vmas = c.vmas()

    def pick_range() -> tuple[int, int]:
        if vmas and rnd.random() < 0.9:
            v = rnd.choice(vmas)
            npg = (v.end - v.start) // ps
            if rnd.random() < 0.3:                        # the whole VMA, or its PMD-aligned part
                a = (v.start + pmd - 1) & ~(pmd - 1)
                if rnd.random() < 0.5 and a + pmd <= v.end:
                    return a, ((v.end - a) // pmd) * pmd
                return v.start, v.end - v.start
            off = rnd.randrange(-2, npg + 2)
            ln = rnd.choice((1, 2, 3, 16, npg, rnd.randrange(1, npg + 4), pmd // ps))
            return v.start + off * ps, max(ln, 1) * ps
        return rnd.randrange(0, 1 << 47) & ~(ps - 1), rnd.randrange(1, 64) * ps

    def pick_addr() -> int:
        if vmas and rnd.random() < 0.93:
            v = rnd.choice(vmas)
            return rnd.randrange(v.start - ps, v.end + ps) & ~7
        return rnd.randrange(0, 1 << 48)

    r = rnd.random()
    if r < 0.03:
        return hostile_op(rnd, ps)
    if r < 0.12 or not vmas:
        npg = rnd.choice((1, 3, 16, 17, 64, 100, pmd // ps, pmd // ps, 2 * pmd // ps,
                          2 * pmd // ps, 4 * pmd // ps, rnd.randrange(1, 3 * pmd // ps)))
        length = npg * ps + (rnd.randrange(1, ps) if rnd.random() < 0.1 else 0)
        prot = rnd.choice(("rw", "rw", "rw", "r", "w", ""))
        mode = rnd.random()
        if mode < 0.6:
            return ("mmap", length, None, prot, False)
        base = vmas[0].start if vmas else c.mmap_base
        addr = base - rnd.randrange(0, 64) * pmd + rnd.choice((0, 0, ps, 16 * ps, rnd.randrange(0, pmd) & ~(ps - 1)))
        if rnd.random() < 0.05:
            addr += rnd.randrange(1, ps)
        return ("mmap", length, addr, prot, mode < 0.85)
    if r < 0.18:
        a, ln = pick_range()
        return ("munmap", a, ln)
    if r < 0.30:
        a, ln = pick_range()
        return ("madvise", a, ln, rnd.choice(("MADV_DONTNEED", "MADV_HUGEPAGE", "MADV_NOHUGEPAGE")))
    if r < 0.32:
        choice = rnd.random()
        if choice < 0.4:
            return ("prctl", 41, 1, rnd.choice((0, 2)))
        if choice < 0.8:
            return ("prctl", 41, 0, 0)
        return ("prctl", rnd.choice((41, 42)), rnd.randrange(0, 3), rnd.randrange(0, 4))
    if r < 0.40:
        a, ln = pick_range()
        k = rnd.random()
        if k < 0.3:
            return ("uffd_register", a, ln, rnd.choice(("missing", "wp", ("missing", "wp"))))
        if k < 0.45:
            return ("uffd_unregister", a, ln)
        if k < 0.65:
            return ("uffd_copy", a, ln, rnd.random() < 0.3)
        if k < 0.8:
            return ("uffd_zeropage", a, ln)
        return ("uffd_writeprotect", a, ln, rnd.random() < 0.6)
    if r < 0.47:                                 # mprotect (issue 10)
        a, ln = pick_range()
        return ("mprotect", a, ln, rnd.choice(MPROTECT_PROTS))
    if r < 0.55:
        return ("fault", pick_addr(), rnd.random() < 0.6)
    if r < 0.78:
        a, ln = pick_range()
        stride = rnd.choice((ps, ps, 2 * ps, 16 * ps, ps * 3 + 8))
        return ("touch_range", a, min(ln, 4 * pmd), stride, rnd.random() < 0.6)
    if r < 0.84:
        n = rnd.randrange(1, 40)
        return ("touch", [pick_addr() for _ in range(n)], [rnd.random() < 0.5 for _ in range(n)])
    if r < 0.87:
        return ("memcg", None if rnd.random() < 0.3 else rnd.randrange(1, 4096) * ps)
    if r < 0.90:
        return ("fragment", rnd.randrange(0, 12)) if rnd.random() < 0.7 else ("unfragment",)
    if r < 0.925:
        return ("shrink",)
    if r < 0.93:
        return ("reset",)
    if r < 0.96:
        kind = rnd.choice(("upstream", "fixed", "laf-v3", "huang-a", "huang-b", "huang-sysfs"))
        return ("policy", policy_from_choice(kind, ps, rnd))
    if r < 0.975:
        return ("inject_alloc", rnd.randrange(0, ps.bit_length() - 4), rnd.randrange(1, 4))
    if r < 0.99:
        return ("inject_charge", rnd.randrange(0, ps.bit_length() - 4), rnd.randrange(1, 4))
    if r < 0.995:
        return ("inject_race", pick_addr(), rnd.randrange(1, 3))
    return ("inject_pte_map", rnd.randrange(1, 3))


def same_outcome(a: Any, b: Any) -> bool:
    return a == b


def run_random(seed: int, steps: int, spec: Optional[MachineSpec] = None,
               log: Optional[Callable[[str], None]] = None) -> int:
    """One random machine, ``steps`` random operations, compared after each."""
    rnd = random.Random(seed)
    spec = spec or random_spec(rnd)
    c = AddressSpace(spec.config())
    r = Reference(spec.config())
    trail: list[tuple] = []
    try:
        compare(c, r, "init")
        for step in range(steps):
            op = random_op(rnd, c, spec)
            trail.append(op)
            oc = apply(c, op)
            orr = apply(r, op)
            if not same_outcome(oc, orr):
                raise Mismatch(f"step {step} {op!r}: outcome C={oc!r} R={orr!r}")
            c.check_invariants()
            compare(c, r, f"step {step} {_short(op)}")
    except AssertionError as exc:
        raise Mismatch(f"seed={seed} spec={spec}\nlast ops:\n  "
                       + "\n  ".join(_short(o) for o in trail[-12:]) + f"\n{exc}") from None
    finally:
        c.close()
        r.close()
    return steps


def _short(op: tuple) -> str:
    parts = []
    for a in op:
        if isinstance(a, int) and not isinstance(a, bool) and a > 4096:
            parts.append(hex(a))
        elif isinstance(a, list) and len(a) > 6:
            parts.append(f"[{len(a)} items]")
        else:
            parts.append(repr(a))
    return "(" + ", ".join(parts) + ")"


def replay(seed: int, upto: int, spec: Optional[MachineSpec] = None):
    """Rebuild both sides after ``upto`` operations of ``run_random(seed)``
    (for debugging a mismatch): returns (c, r, spec, ops, next_op)."""
    rnd = random.Random(seed)
    spec = spec or random_spec(rnd)
    c = AddressSpace(spec.config())
    r = Reference(spec.config())
    ops = []
    for _ in range(upto):
        op = random_op(rnd, c, spec)
        ops.append(op)
        apply(c, op)
        apply(r, op)
    return c, r, spec, ops, random_op(rnd, c, spec)
