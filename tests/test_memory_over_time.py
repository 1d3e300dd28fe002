"""Peak RSS (VmHWM, ``hiwater_rss``) and page-table bytes (VmPTE,
``pgtables_bytes``), on the C core and on the reference model."""
from __future__ import annotations

import pytest

from pylaf import AddressSpace, Config, Policy
from pylaf.reference import Reference

SIDES = [pytest.param(AddressSpace, id="C"), pytest.param(Reference, id="reference")]


@pytest.mark.parametrize("side", SIDES)
def test_hiwater_keeps_the_peak_after_unmap(side: type) -> None:
    cfg = Config(ram="64M", policy=Policy.parse("order-4"))
    with side(cfg) as mm:
        a = mm.mmap(1 << 20)
        mm.touch_range(a, 1 << 20, write=True)
        peak = mm.stats().mm_anonpages
        assert peak == 256
        mm.madvise(a, 512 << 10, "MADV_DONTNEED")
        st = mm.stats()
        assert st.mm_anonpages == 128
        assert st.hiwater_rss == 256
        assert st.peak_rss_bytes == 1 << 20
        mm.reset_counters()              # a gauge: kept, like VmHWM
        assert mm.stats().hiwater_rss == 256
        mm.touch_range(a, 512 << 10, write=True)
        b = mm.mmap(256 << 10)
        mm.touch_range(b, 256 << 10, write=True)
        assert mm.stats().hiwater_rss == 256 + 64


@pytest.mark.parametrize("side", SIDES)
def test_pgtables_bytes_counts_pte_and_pmd_tables(side: type) -> None:
    cfg = Config(ram="64M", page_size="16K", policy=Policy.parse("order-0"))
    with side(cfg) as mm:
        assert mm.stats().pgtables_bytes == 0
        a = mm.mmap(64 << 20)
        for off in (0, 32 << 20):       # two PTE tables (a 16K PTE table maps 32M)
            mm.touch_range(a + off, 16 << 10, write=True)
        st = mm.stats()
        assert st.nr_ptes == 2
        assert st.nr_pmds >= 1
        assert st.pgtables_bytes == (st.nr_ptes + st.nr_pmds) * (16 << 10)
