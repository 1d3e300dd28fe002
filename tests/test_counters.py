"""Counters add up, and the Stats dataclass.

Identities that follow from the kernel's accounting (docs/kernel-semantics.md §1.4, §1.7,
§6.3, §6.5) and hold after any sequence of operations:

* every anon folio is charged to the memcg and on the LRU:
  memcg_charged == lru_pages;
* RAM is partitioned: free + pinned + page tables (deposited ones included)
  + charged anon pages + the zero page + the huge zero folio (once
  allocated) == RAM;
* faults (exception entries) == pgfault + SIGSEGV (no VMA / access error,
  handle_mm_fault not called) + userfaults (VM_FAULT_RETRY, not accounted);
  pgfault == min_flt + failed faults (OOM);
* after write-only faults (no unmap, no COW): sum of folios_mapped pages ==
  MM_ANONPAGES, and pgfault == faults == the faulted accesses.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import K, M, all_mthp, place, upstream
from hypothesis import example, given
from hypothesis import strategies as st

from pylaf import AddressSpace, Config, LafValueError, Policy, Stats
from pylaf.sizes import parse_size

POLICIES = [
    upstream(),
    upstream({"64K": "always"}),
    upstream(all_mthp(pmd="always"), enabled="always"),
    upstream({"16K": "always", "64K": "always"}, anon_beside_full=True),
    Policy(kind="laf-v3", enabled="madvise"),
    Policy(kind="huang-sysfs", enabled="auto"),
    Policy.fixed(4),
]


def check_identities(mm: AddressSpace) -> None:
    s = mm.stats()
    assert s.memcg_charged == s.lru_pages
    huge_zero = (1 << mm.pmd_order) if s.thp_zero_page_alloc else 0
    assert (s.free_pages + s.pinned_pages + s.nr_ptes + s.memcg_charged + 1 + huge_zero
            == s.ram_pages)
    assert s.faults == s.pgfault + s.faults_sigsegv + s.faults_userfault
    assert s.pgfault == s.min_flt + s.faults_oom + s.faults_sigbus
    assert s.mm_anonpages <= s.memcg_charged
    assert all(v >= 0 for v in s.nr_anon.values())
    assert all(s.nr_anon_partially_mapped[k] <= s.nr_anon[k] for k in s.nr_anon)


@pytest.mark.parametrize("pol", POLICIES, ids=lambda p: p.label)
def test_write_only_fill_counters(mm_factory, pol) -> None:
    mm = mm_factory(pol)
    a = place(mm, "4M", misalign="24K")
    mm.madvise(a, "2M", "hugepage")
    t = mm.touch_range(a, "4M", write=True)
    s = mm.stats()
    mapped = sum(n << o for o, n in enumerate(s.by_order("folios_mapped")))
    assert mapped == s.mm_anonpages == 1024
    assert t.faulted == s.pgfault == s.min_flt == s.faults
    assert t.faulted + t.hits == t.accesses == 1024
    assert s.pages_touched == 1024 and s.bloat_pages == 0
    assert s.faults_write + s.faults_pmd == s.pgfault
    assert sum(s.anon_fault_alloc.values()) == sum(v for k, v in s.folios_mapped.items()
                                                   if k not in ("4K", "8K"))
    assert s.nr_anon == {k: v for k, v in s.anon_fault_alloc.items()}
    check_identities(mm)


def test_sparse_writes_bloat(mm_factory) -> None:
    mm = mm_factory(upstream({"64K": "always"}))
    a = place(mm, "1M", align="64K")
    mm.touch(np.array([a + i * 64 * K for i in range(16)], dtype=np.uint64), write=True)
    s = mm.stats()
    assert s.pages_touched == 16 and s.mm_anonpages == 256
    assert s.bloat_pages == 240 and s.bloat_ratio == 16.0
    assert s.rss_bytes == 1 * M
    assert s.folio_histogram() == {"64K": 16}


def test_stats_per_size_keys_and_arrays(mm_factory) -> None:
    mm = mm_factory(upstream({"64K": "always"}))
    a = place(mm, "1M")
    mm.fault(a, write=True)
    s = mm.stats()
    keys = ["16K", "32K", "64K", "128K", "256K", "512K", "1M", "2M"]
    for name in ("anon_fault_alloc", "anon_fault_fallback", "anon_fault_fallback_charge",
                 "anon_fault_declined", "split", "split_deferred", "nr_anon",
                 "nr_anon_partially_mapped"):
        assert list(getattr(s, name)) == keys, name
        arr = s.by_order(name)
        assert arr.shape == (16,) and arr[0] == 0 and arr[1] == 0
    assert list(s.folios_mapped) == ["4K", "8K", *keys]
    assert s.anon_fault_alloc["64K"] == 1 == int(s.by_order("anon_fault_alloc")[4])
    assert s.folios_mapped["64K"] == 1
    assert s.page_size == 4096 and s.pmd_order == 9
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.pgfault = 3  # type: ignore[misc]
    d = s.as_dict()
    assert d["pgfault"] == s.pgfault and d["anon_fault_alloc"]["64K"] == 1
    assert "per_order" not in d
    assert set(d) == {f.name for f in dataclasses.fields(Stats)} - {"per_order"}
    assert all(d[n] == getattr(s, n) for n in d)
    assert d["mm_anonpages"] == 16 and d["folios_mapped"] == {"4K": 0, "8K": 0, **dict.fromkeys(keys, 0),
                                                            "64K": 1}


def test_stats_delta_and_reset(mm_factory) -> None:
    mm = mm_factory(upstream({"64K": "always"}))
    a = place(mm, "1M")
    s0 = mm.stats()
    mm.touch_range(a, "256K", write=True)
    s1 = mm.stats()
    d = s1 - s0
    assert d["pgfault"] == 4 and d["anon_fault_alloc"] == {"64K": 4}
    assert d["mm_anonpages"] == 64 and "split" in d and d["split"] == {}
    mm.reset_counters()
    s2 = mm.stats()
    # events zeroed; gauges kept
    assert s2.pgfault == 0 and s2.anon_fault_alloc["64K"] == 0 and s2.faults == 0
    assert s2.folios_mapped["64K"] == 0
    assert s2.nr_anon["64K"] == 4 and s2.mm_anonpages == 64 and s2.nr_ptes == 1
    assert s2.lru_pages == 64 and s2.memcg_charged == 64 and s2.pages_touched == 64
    assert s2.free_pages == s1.free_pages and s2.nr_vmas == 1
    mm.munmap(a, "1M")
    s3 = mm.stats()
    assert s3.nr_anon["64K"] == 0 and s3.mm_anonpages == 0


def test_touch_results_array(mm_factory) -> None:
    from pylaf import Access
    mm = mm_factory(upstream())
    a = place(mm, "64K", prot="r")
    addrs = np.array([a, a, a + 4 * K, a + 1 * M], dtype=np.uint64)
    writes = np.array([0, 0, 1, 0], dtype=np.uint8)
    t = mm.touch(addrs, writes, results=True)
    assert list(t.results) == [Access.FAULT, Access.HIT, Access.SIGSEGV, Access.SIGSEGV]
    assert (t.faulted, t.hits, t.sigsegv, t.first_error) == (1, 1, 2, 2)
    assert not t.ok
    s = mm.stats()
    assert s.faults == 3 and s.pgfault == 1 and s.faults_sigsegv == 2 and s.hits == 1


# --------------------------------------------------------------- property
OPS = st.lists(st.one_of(
    st.tuples(st.just("touch"), st.integers(0, 1023), st.integers(1, 64), st.booleans()),
    st.tuples(st.just("dontneed"), st.integers(0, 1023), st.integers(1, 300)),
    st.tuples(st.just("munmap"), st.integers(0, 1023), st.integers(1, 300)),
    st.tuples(st.just("remap"),),
    st.tuples(st.just("madvise"), st.integers(0, 1023), st.integers(1, 300), st.booleans()),
    st.tuples(st.just("shrink"),),
    st.tuples(st.just("fragment"), st.integers(0, 9)),
    st.tuples(st.just("inject"), st.sampled_from([0, 2, 3, 4, 9]), st.booleans()),
    st.tuples(st.just("memcg"), st.sampled_from([None, "1M", "3M"])),
    st.tuples(st.just("uffd"), st.sampled_from(["missing", "wp", "both", "off"]),
              st.integers(0, 1023), st.integers(1, 300)),
    st.tuples(st.just("ufill"), st.sampled_from(["copy", "copy-wp", "zero", "wp", "unwp"]),
              st.integers(0, 1023), st.integers(1, 32)),
    st.tuples(st.just("race"), st.integers(0, 1023), st.integers(0, 1023)),
    st.tuples(st.just("eagain"), st.integers(0, 1023)),
    st.tuples(st.just("policy"), st.integers(0, 6)),
), min_size=1, max_size=25)


BASE = 0x2000_0000_0000


def _pages(page: int, n: int, clip: bool = False) -> tuple[int, int]:
    """(start, length) of ``n`` 4K pages from page ``page`` of the 4M window."""
    return BASE + page * 4 * K, (min(n, 1024 - page) if clip else n) * 4 * K


def _op_touch(mm: AddressSpace, op: tuple[Any, ...]) -> None:
    _, page, n, write = op
    mm.touch_range(*_pages(page, n), write=write)


def _op_range(mm: AddressSpace, op: tuple[Any, ...]) -> None:
    start, length = _pages(op[1], op[2])
    try:
        if op[0] == "dontneed":
            mm.madvise(start, length, "dontneed")
        elif op[0] == "munmap":
            mm.munmap(start, length)
        else:
            mm.madvise(start, length, "hugepage" if op[3] else "nohugepage")
    except MemoryError:
        pass                       # range with holes: ENOMEM, like the kernel


def _op_remap(mm: AddressSpace, op: tuple[Any, ...]) -> None:
    mm.munmap(BASE, "4M")
    mm.mmap("4M", addr=BASE, fixed=True)


def _op_fragment(mm: AddressSpace, op: tuple[Any, ...]) -> None:
    mm.unfragment()
    mm.fragment(op[1])


def _op_memcg(mm: AddressSpace, op: tuple[Any, ...]) -> None:
    limit = op[1]
    if limit is not None and parse_size(limit) < mm.stats().memcg_charged * mm.page_size:
        with pytest.raises(LafValueError, match=r"out of range \(ERANGE\)"):
            mm.set_memcg_limit(limit)  # below usage: refused (the emulator does not reclaim)
    else:
        mm.set_memcg_limit(limit)


def _op_uffd(mm: AddressSpace, op: tuple[Any, ...]) -> None:
    _, mode, page, n = op
    start, length = _pages(page, n, clip=True)
    try:
        if mode == "off":
            mm.uffd_unregister(start, length)
        else:
            mm.uffd_register(start, length, ["missing", "wp"] if mode == "both" else mode)
    except ValueError:
        pass                       # not fully mapped: EINVAL


def _op_ufill(mm: AddressSpace, op: tuple[Any, ...]) -> None:
    _, what, page, n = op
    start, length = _pages(page, n, clip=True)
    try:
        if what.startswith("copy"):
            mm.uffd_copy(start, length, wp=what == "copy-wp")
        elif what == "zero":
            mm.uffd_zeropage(start, length)
        else:
            mm.uffd_writeprotect(start, length, wp=what == "wp")
    except (ValueError, MemoryError):
        pass                       # not registered / EEXIST / ENOMEM


def _op_race(mm: AddressSpace, op: tuple[Any, ...]) -> None:
    mm.inject_race(BASE + op[2] * 4 * K)
    mm.fault(BASE + op[1] * 4 * K, write=True)
    mm.inject_clear()


def _op_eagain(mm: AddressSpace, op: tuple[Any, ...]) -> None:
    mm.inject_pte_map_fail()
    mm.fault(BASE + op[1] * 4 * K, write=True)
    mm.inject_clear()


OP_HANDLERS: dict[str, Callable[[AddressSpace, tuple[Any, ...]], None]] = {
    "touch": _op_touch,
    "dontneed": _op_range,
    "munmap": _op_range,
    "madvise": _op_range,
    "remap": _op_remap,
    "shrink": lambda mm, op: mm.shrink_deferred_split(),
    "fragment": _op_fragment,
    "inject": lambda mm, op: (mm.inject_alloc_fail if op[2] else mm.inject_charge_fail)(op[1]),
    "memcg": _op_memcg,
    "uffd": _op_uffd,
    "ufill": _op_ufill,
    "race": _op_race,
    "eagain": _op_eagain,
    "policy": lambda mm, op: mm.set_policy(POLICIES[op[1]]),
}


@given(pol=st.sampled_from(POLICIES), arch=st.sampled_from(["x86_64", "arm64"]), ops=OPS)
# always run: 1.25M charged, then memory.max 1M below it (refused) and 3M (accepted)
@example(pol=POLICIES[0], arch="x86_64",
         ops=[*(("touch", p, 64, True) for p in range(0, 320, 64)), ("memcg", "1M"), ("memcg", "3M")])
def test_random_ops_keep_identities(pol, arch, ops) -> None:
    mm = AddressSpace(Config(ram="32M", arch=arch, policy=pol))
    try:
        mm.mmap("4M", addr=BASE, fixed=True)
        for op in ops:
            OP_HANDLERS[op[0]](mm, op)
            check_identities(mm)
            mm.check_invariants()
    finally:
        mm.close()
