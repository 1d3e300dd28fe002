"""The host pays for what the emulated machine uses, and memory.max = 0.

* The memmap and the buddy free lists are built a 128 MiB section at a time
  (csrc/page_alloc.c deferred_grow_zone(), the kernel's
  DEFERRED_STRUCT_PAGE_INIT): a 1T machine with 16 MiB touched has two
  sections initialised.  The PFN sequence is the eager free list's: the C core
  and the pure-Python reference model (which builds its free lists eagerly)
  give the same PFNs on machines of several sections.
* RAM the host could not back at full use is refused (``laf_max_ram_bytes()``).
* ``memcg_limit=None`` is unlimited; ``0`` is the kernel's memory.max = 0.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from pylaf import Access, AddressSpace, Config, LafValueError, Policy
from pylaf._ffi import ffi, lib
from pylaf.errors import check
from pylaf.reference import Reference
from pylaf.sizes import format_size, parse_size

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fuzz"))
import diffops  # type: ignore[import-not-found]  # fuzz/ is put on sys.path above

M = 1 << 20
FIELDS = tuple(name for name, _ in ffi.typeof("struct laf_memmap_info").fields)


def memmap_info(mm: AddressSpace) -> dict[str, int]:
    """``laf_get_memmap_info()`` as a dict."""
    info = ffi.new("struct laf_memmap_info *")
    check(lib.laf_get_memmap_info(mm.mm, info))
    return {name: int(getattr(info, name)) for name in FIELDS}


def largest_ram(page_shift: int, cap: int) -> int:
    """``cap``, or the host's limit rounded down to 4M if that is smaller."""
    return min(cap, int(lib.laf_max_ram_bytes(page_shift)) & ~(4 * M - 1))


def test_1t_machine_with_16m_touched_initialises_two_sections() -> None:
    ram = largest_ram(12, 1 << 40)
    with AddressSpace(Config(ram=ram)) as mm:
        fresh = memmap_info(mm)
        assert fresh["nr_sections"] == ram // (128 * M)
        assert fresh["sections_initialised"] == 1
        st: Any = mm.stats()
        assert st.free_pages == ram // 4096 - 1           # deferred frames are free
        a = mm.mmap("16M")
        assert mm.touch_range(a, "16M", write=True).faulted == 4096
        info = memmap_info(mm)
        s: Any = mm.stats()    # Stats is generated from struct laf_stats: Any to mypy
        # the section with pfns 1..1023 and the top one, where 4M blocks come from
        assert info["sections_initialised"] == 2
        assert info["deferred_pages"] == ram // 4096 - 1024 - info["section_pages"]
        assert info["sections_initialised"] * info["section_pages"] * 16 <= 1 * M
        assert s.free_pages == s.ram_pages - 1 - 4096 - s.nr_ptes
        mm.check_invariants()


OPS_PER_MACHINE = [(4096, "512M"), (16384, "1G"), (65536, "2G")]


def _ops(page_size: int, ram: int) -> list[tuple[Any, ...]]:
    """Use up RAM by PMD THPs (every section grows), free a third, refill with
    base pages, fragment (reaches every block), refill, unfragment."""
    pmd = page_size * (page_size // 8)
    base = 0x100000000000
    span = ram - 2 * pmd
    return [
        ("mmap", span, base, "rw", True),
        ("touch_range", base, span // 2, pmd, True),
        ("munmap", base + pmd, pmd),
        ("munmap", base + 4 * pmd, 2 * pmd),
        ("touch_range", base + span // 2, span // 2, pmd, True),
        ("madvise", base + pmd, 6 * pmd, "MADV_NOHUGEPAGE"),
        ("mmap", pmd, base + pmd, "rw", True),
        ("touch_range", base + pmd, pmd, 64 * page_size, True),
        ("munmap", base, span),
        ("fragment", 3),
        ("mmap", 4 * pmd, base, "rw", True),
        ("touch_range", base, 4 * pmd, 16 * page_size, True),
        ("unfragment",),
        ("touch_range", base + pmd // 2, pmd, 8 * page_size, True),
        ("munmap", base, 4 * pmd),
    ]


@pytest.mark.parametrize(("page_size", "ram"), OPS_PER_MACHINE)
def test_pfns_match_the_eager_reference_across_sections(page_size: int, ram: str) -> None:
    cfg = Config(page_size=page_size, ram=ram, policy=Policy.upstream(enabled="always"))
    c, r = AddressSpace(cfg), Reference(cfg)
    try:
        assert memmap_info(c)["nr_sections"] >= 4
        diffops.compare(c, r, "init")
        for i, op in enumerate(_ops(page_size, parse_size(ram))):
            oc, orr = diffops.apply(c, op), diffops.apply(r, op)
            assert diffops.same_outcome(oc, orr), f"step {i} {op}: C={oc!r} R={orr!r}"
            c.check_invariants()
            diffops.compare(c, r, f"step {i} {op[0]}")
            if i == 1:      # half of RAM in PMD THPs: some sections still deferred
                assert memmap_info(c)["deferred_pages"] > 0
        info = memmap_info(c)
        assert info["deferred_pages"] == 0
        assert info["sections_initialised"] == info["nr_sections"]
        st: Any = c.stats()
        assert st.free_pages == st.ram_pages - 1
    finally:
        c.close()
        r.close()


def test_ram_the_host_cannot_back_is_refused() -> None:
    limit = int(lib.laf_max_ram_bytes(12))
    assert limit >= 1 << 30
    with pytest.raises(LafValueError, match=r"invalid ram .*above " + format_size(limit)) as ei:
        Config(ram=limit + 4096)
    assert ei.value.errno == lib.LAF_ERANGE
    # the C core refuses too, whoever fills the config
    ccfg = ffi.new("struct laf_config *")
    lib.laf_config_default(ccfg)
    ccfg.ram_bytes = limit + 4096
    out = ffi.new("laf_mm **")
    assert lib.laf_mm_create(ccfg, out) == lib.LAF_ERANGE
    assert lib.laf_max_ram_bytes(16) == (limit >> 12) << 16
    # the limit itself is accepted, and costs nothing until used
    with AddressSpace(Config(ram=limit)) as mm:
        assert memmap_info(mm)["sections_initialised"] <= 2
        assert memmap_info(mm)["max_ram_bytes"] == limit


def test_memcg_limit_none_is_unlimited_and_zero_charges_nothing() -> None:
    ccfg = ffi.new("struct laf_config *")
    Config().fill_c(ccfg)
    assert ccfg.memcg_limit_bytes == lib.LAF_MEMCG_UNLIMITED
    Config(memcg_limit=0).fill_c(ccfg)
    assert ccfg.memcg_limit_bytes == 0
    with AddressSpace(Config(ram="64M", memcg_limit=0)) as mm:
        a = mm.mmap("1M")
        assert mm.fault(a, write=False).access == Access.FAULT    # zero page: not charged
        assert mm.fault(a + 4096, write=True).access == Access.OOM
        s: Any = mm.stats()
        assert (s.memcg_charged, s.memcg_max_events, s.faults_oom) == (0, 1, 1)
        mm.set_memcg_limit(None)
        assert mm.fault(a + 4096, write=True).access == Access.FAULT
        with pytest.raises(LafValueError) as ei:
            mm.set_memcg_limit(0)                                 # below usage
        assert ei.value.errno == lib.LAF_ERANGE
        mm.munmap(a, "1M")
        mm.set_memcg_limit(0)
        assert mm.fault(a, write=True).access == Access.SIGSEGV
        b = mm.mmap("64K")
        assert mm.fault(b, write=True).access == Access.OOM
        mm.check_invariants()
