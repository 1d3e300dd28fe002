"""pytest-benchmark: the emulated write-fault path seen from Python.

Groups (``--benchmark-group-by=group``):
  api-order<N>       the same faults through single fault() calls, one batch
                     touch() over a numpy address array, touch_range(), and the
                     pure-Python reference model (pylaf.reference)
  scale-<P>pages-<pattern>
                     order 0 vs order 4 at 1M and 16M pages (4 GiB and 64 GiB of
                     emulated memory), touch() with one address per folio
  hit                accesses that hit present PTEs (the MMU cost per access)

Every round gets a fresh AddressSpace from ``setup`` (faults are one-shot),
and every result is checked after timing.  Under ``--benchmark-disable``
(CI) sizes are cut down by the ``scaled`` fixture so the bodies run once,
fast, as correctness tests.  Speed targets are *not* asserted here (noisy
machine): see bench/RESULTS.md.

Run for real:
  pytest bench --benchmark-only --benchmark-group-by=group --benchmark-json=bench.json
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import numpy as np
import pytest

from pylaf import AddressSpace, Config, Policy, TouchResult
from pylaf.reference import Reference

PAGE = 4096
#: largest size (4K pages) a benchmark body uses under --benchmark-disable
DISABLED_MAX_PAGES = 1 << 14

# No bench/conftest.py on purpose: tests/*.py do ``from conftest import ...``
# and pytest loads every conftest.py under the module name ``conftest``, so a
# second one would shadow tests/conftest.py.  The fixtures live here.


@pytest.fixture
def benchmark_disabled(request: pytest.FixtureRequest) -> bool:
    """True under ``--benchmark-disable`` (each body runs once, as a test)."""
    return bool(request.config.getoption("benchmark_disable"))


@pytest.fixture
def scaled(benchmark_disabled: bool) -> Callable[[int], int]:
    """``scaled(pages)``: the 4K pages a benchmark really uses (capped at
    DISABLED_MAX_PAGES under --benchmark-disable, so CI stays fast)."""
    def f(pages: int) -> int:
        return min(pages, DISABLED_MAX_PAGES) if benchmark_disabled else pages
    return f


# ------------------------------------------------------------ helpers
class Fresh:
    """Creates one AddressSpace per benchmark round and closes the previous
    one, so at most one large emulated machine is alive at a time."""

    def __init__(self, order: int, pages: int) -> None:
        self.order = order
        self.pages = pages
        self.size = pages * PAGE
        self.folio = PAGE << order
        self.mm: Optional[AddressSpace] = None
        self.base = 0

    def new(self) -> AddressSpace:
        self.close()
        ram = self.size + self.size // 256 + (32 << 20)
        self.mm = AddressSpace(Config(ram=ram, policy=Policy.fixed(self.order)))
        self.base = self.mm.mmap(self.size)
        return self.mm

    def addrs(self, pattern: str = "seq", per_page: bool = False) -> np.ndarray:
        step = PAGE if per_page else self.folio
        a = self.base + np.arange(0, self.size, step, dtype=np.uint64)
        if pattern == "random":
            np.random.default_rng(1).shuffle(a)
        return a

    def check(self, faults: Optional[int] = None) -> None:
        assert self.mm is not None
        st = self.mm.stats()
        nr = self.size // self.folio
        assert st.mm_anonpages == self.pages
        assert st.per_order["folios_mapped"][self.order] == nr
        if faults is not None:
            assert st.pgfault == faults
        if self.pages <= 1 << 16:
            self.mm.check_invariants()

    def close(self) -> None:
        if self.mm is not None:
            self.mm.close()
            self.mm = None


@pytest.fixture
def fresh() -> Any:
    made: list[Fresh] = []

    def make(order: int, pages: int) -> Fresh:
        f = Fresh(order, pages)
        made.append(f)
        return f
    yield make
    for f in made:
        f.close()


def _group(benchmark: Any, name: str, **info: Any) -> None:
    benchmark.group = name
    benchmark.extra_info.update(info)


# ------------------------------------------------- api: single vs batch
API_PAGES = 1 << 14      # 64 MiB: small enough for one Python call per fault


@pytest.mark.parametrize("order", [0, 4])
def test_single_fault_calls(benchmark: Any, fresh: Any, scaled: Any, order: int) -> None:
    """One AddressSpace.fault() (one cffi call + result object) per fault."""
    f = fresh(order, scaled(API_PAGES))
    _group(benchmark, f"api-order{order}", api="fault()", faults=f.size // f.folio)

    def setup() -> Any:
        f.new()
        return (f.mm, [int(a) for a in f.addrs()]), {}

    def run(mm: AddressSpace, addrs: list[int]) -> int:
        fault = mm.fault
        n = 0
        for a in addrs:
            n += fault(a, True).nr_faults
        return n

    n = benchmark.pedantic(run, setup=setup, rounds=3)
    assert n == f.size // f.folio
    f.check(n)


@pytest.mark.parametrize("order", [0, 4])
def test_batch_touch(benchmark: Any, fresh: Any, scaled: Any, order: int) -> None:
    """One touch() over a numpy uint64 array: one C call for all faults."""
    f = fresh(order, scaled(API_PAGES))
    _group(benchmark, f"api-order{order}", api="touch(array)", faults=f.size // f.folio)

    def setup() -> Any:
        f.new()
        return (f.mm, f.addrs()), {}

    r = benchmark.pedantic(lambda mm, a: mm.touch(a, write=True), setup=setup, rounds=5)
    assert r.ok and r.faulted == f.size // f.folio and r.hits == 0
    f.check(r.faulted)


@pytest.mark.parametrize("order", [0, 4])
def test_touch_range(benchmark: Any, fresh: Any, scaled: Any, order: int) -> None:
    """touch_range(): the addresses are generated in C (no array at all)."""
    f = fresh(order, scaled(API_PAGES))
    _group(benchmark, f"api-order{order}", api="touch_range()", faults=f.size // f.folio)

    def setup() -> Any:
        f.new()
        return (f.mm,), {}

    r = benchmark.pedantic(lambda mm: mm.touch_range(f.base, f.size, f.folio, write=True),
                           setup=setup, rounds=5)
    assert r.ok and r.faulted == f.size // f.folio
    f.check(r.faulted)


@pytest.mark.parametrize("order", [0, 4])
def test_reference_model(benchmark: Any, scaled: Any, order: int) -> None:
    """The same faults in the pure-Python reference implementation."""
    pages = scaled(1 << 12)           # the pure-Python model is ~1000x slower
    size, folio = pages * PAGE, PAGE << order
    nr = size // folio
    _group(benchmark, f"api-order{order}", api="reference (pure Python)", faults=nr)
    state: dict[str, Reference] = {}

    def setup() -> Any:
        mm = Reference(Config(ram=size + (32 << 20), policy=Policy.fixed(order)))
        state["mm"] = mm
        return (mm, mm.mmap(size)), {}

    def run(mm: Reference, base: int) -> TouchResult:
        return mm.touch_range(base, size, folio, write=True)

    r = benchmark.pedantic(run, setup=setup, rounds=1)
    assert r.ok and r.faulted == nr and r.hits == 0
    st = state["mm"].stats()
    assert st.mm_anonpages == pages
    assert st.per_order["folios_mapped"][order] == nr
    assert st.pgfault == nr


# ------------------------------------------------- scale: order 0 vs 4
@pytest.mark.parametrize("pattern", ["seq", "random"])
@pytest.mark.parametrize("pages", [1 << 20, 1 << 24], ids=["1Mpages", "16Mpages"])
@pytest.mark.parametrize("order", [0, 4])
def test_scale(benchmark: Any, fresh: Any, scaled: Any, benchmark_disabled: bool,
               order: int, pages: int, pattern: str) -> None:
    """Order 0 vs order 4 at 1M pages (4 GiB) and 16M pages (64 GiB)."""
    if benchmark_disabled and pages > 1 << 20:
        pytest.skip("16M pages only with benchmarks enabled (the disabled run would repeat 1M)")
    n = scaled(pages)
    f = fresh(order, n)
    _group(benchmark, f"scale-{pages >> 20}Mpages-{pattern}", order=order,
           faults=n * PAGE // f.folio, pages=n)

    def setup() -> Any:
        f.new()
        return (f.mm, f.addrs(pattern)), {}

    rounds = 1 if pages > 1 << 20 else 3
    r = benchmark.pedantic(lambda mm, a: mm.touch(a, write=True), setup=setup, rounds=rounds)
    assert r.ok and r.faulted == n * PAGE // f.folio
    f.check(r.faulted)


# ------------------------------------------------------------- hits
def test_hit(benchmark: Any, fresh: Any, scaled: Any) -> None:
    """touch() of pages already mapped: every access hits a present PTE."""
    f = fresh(0, scaled(1 << 20))
    _group(benchmark, "hit", accesses=f.pages)
    mm = f.new()
    addrs = f.addrs(per_page=True)
    assert mm.touch(addrs, write=True).faulted == f.pages

    r = benchmark.pedantic(lambda: mm.touch(addrs, write=True), rounds=5, iterations=1)
    assert r.ok and r.hits == f.pages and r.faulted == 0
