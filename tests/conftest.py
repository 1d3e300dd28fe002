"""Shared test machinery for pylaf.

* Every :class:`pylaf.AddressSpace` created while a test runs is remembered;
  at teardown ``check_invariants()`` runs on each one that is still open (and
  on ``with`` blocks that exit normally), so a test that leaves corrupt
  emulator state fails even if its own asserts passed.  Mark a test
  ``@pytest.mark.no_invariants`` to opt out.
* Hypothesis profiles: ``ci`` (default, fast and derandomized), ``dev`` and
  ``long`` (many examples, no deadline), chosen with ``HYPOTHESIS_PROFILE``.
* ``@pytest.mark.kernel`` marks tests that need the live kernel (sysfs THP
  knobs, /proc); run them with ``pytest -m kernel``, skip with
  ``-m "not kernel"``.
* Helpers (import them with ``from conftest import ...``): size constants,
  :func:`place` (a VMA at a chosen alignment with gaps around it),
  :func:`layout` (the folio layout in the notation of
  docs/kernel-findings.md, e.g. ``"0+56K:4K 56K+960K:64K"``), :func:`upstream`.
"""
from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from pylaf import AddressSpace, Config, LafBusyError, Policy
from pylaf.geometry import Geometry
from pylaf.layout import format_runs, runs_from_ptes
from pylaf.sizes import format_size, parse_size

# --------------------------------------------------------------- hypothesis
settings.register_profile(
    "ci", max_examples=20, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile(
    "dev", max_examples=200, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile(
    "long", max_examples=5000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# ------------------------------------------------------------- constants
K = 1 << 10
M = 1 << 20
G = 1 << 30
DATA = Path(__file__).resolve().parent / "data"


# ------------------------------------------------- invariants at teardown
@pytest.fixture(autouse=True)
def _invariants_at_teardown(request: pytest.FixtureRequest,
                            monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run check_invariants() on every AddressSpace the test created."""
    created: list[AddressSpace] = []
    orig_init = AddressSpace.__init__
    orig_exit = AddressSpace.__exit__
    enabled = request.node.get_closest_marker("no_invariants") is None

    def init(self: AddressSpace, *args: Any, **kwargs: Any) -> None:
        orig_init(self, *args, **kwargs)
        created.append(self)

    def exit_(self: AddressSpace, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if enabled and exc_type is None and not self.closed:
                self.check_invariants()
        finally:
            orig_exit(self, exc_type, exc, tb)

    monkeypatch.setattr(AddressSpace, "__init__", init)
    monkeypatch.setattr(AddressSpace, "__exit__", exit_)
    yield created
    failures = []
    for i, mm in enumerate(created):
        if mm.closed or not enabled:
            continue
        try:
            mm.check_invariants()
        except Exception as exc:
            failures.append(f"AddressSpace #{i} ({mm!r}): {type(exc).__name__}: {exc}")
    for mm in created:
        mm.close()
    if failures:
        pytest.fail("check_invariants() at teardown:\n  " + "\n  ".join(failures))


@pytest.fixture
def mm_factory() -> Callable[..., AddressSpace]:
    """``mm_factory(policy, ram="64M", **config)``: a small AddressSpace.

    ``policy`` is a :class:`Policy` or a spec string.  Invariants are checked
    at teardown by the autouse fixture.
    """
    def make(policy: Policy | str | None = None, *, ram: int | str = "64M",
             **kw: Any) -> AddressSpace:
        if isinstance(policy, str):
            policy = Policy.parse(policy)
        return AddressSpace(Config(ram=ram, policy=policy or Policy(), **kw))
    return make


# ---------------------------------------------------------------- helpers
def upstream(sizes: Optional[dict[str, str]] = None, enabled: str = "madvise",
             **kw: Any) -> Policy:
    """Policy.upstream with the kernel's defaults for unlisted sizes (PMD inherit)."""
    return Policy.upstream(enabled=enabled, sizes=sizes or {}, **kw)


def all_mthp(state: str = "always", page_size: int = 4096, pmd: Optional[str] = None
             ) -> dict[str, str]:
    """Every anonymous mTHP size (orders 2..PMD-1) set to ``state``; PMD size to ``pmd``."""
    pmd_order = (page_size // 8).bit_length() - 1
    d = {format_size(page_size << o): state for o in range(2, pmd_order)}
    if pmd is not None:
        d[format_size(page_size << pmd_order)] = pmd
    return d


#: Far from mmap_base, so test placements never meet the top-down allocator.
PLACE_BASE = 0x1000_0000_0000


def place(mm: AddressSpace, length: int | str, *, align: int | str | None = None,
          misalign: int | str = 0, prot: str = "rw") -> int:
    """Map ``length`` at an address ``misalign`` bytes past an ``align``
    boundary (default: the PMD size), with at least two PMDs of unmapped gap
    on both sides (MAP_FIXED_NOREPLACE).  Returns the start address."""
    n = parse_size(length)
    al = mm.pmd_size if align is None else parse_size(align)
    al = max(al, mm.page_size)
    cursor = getattr(mm, "_test_place_cursor", PLACE_BASE)
    gap = 2 * mm.pmd_size
    start = -(-(cursor + gap) // al) * al + parse_size(misalign)
    addr = mm.mmap(n, addr=start, fixed=True, prot=prot)
    assert addr == start
    mm._test_place_cursor = start + n + gap  # type: ignore[attr-defined]
    return addr


def orders(mm: AddressSpace, start: int, length: int | str) -> np.ndarray:
    """Per-page folio order (-1 none, -2 small zero page, -3 huge zero page)."""
    return mm.read_ptes(start, parse_size(length) // mm.page_size)[1]


def layout(mm: AddressSpace, start: int, length: int | str) -> str:
    """Runs of equal folio size, as ``offset+length:kind`` (kernel-findings notation):
    :func:`pylaf.layout.format_runs` of the range's ``read_ptes``.

    Kinds: the folio size (``4K``, ``64K``, ``2M``), ``zero``, ``hzero``,
    ``none``.  Adjacent whole folios of one size form one run; a folio that
    is only partly mapped in the window gets a run of its own, tagged
    ``!partial``.
    """
    ptes, ords = mm.read_ptes(start, parse_size(length) // mm.page_size)
    geometry = Geometry.for_machine(mm.page_size, mm.config.arch)
    return format_runs(runs_from_ptes(ptes, ords, geometry), mm.page_size)


def pte_picture(mm: AddressSpace, start: int, npages: int) -> str:
    """One character per PTE: ``.`` none, ``z`` zero page, ``p`` present,
    ``C`` present with PTE_CONT, ``H`` huge PMD."""
    from pylaf import PteFlags
    ptes, _ = mm.read_ptes(start, npages)
    s = []
    for raw in ptes:
        raw = int(raw)
        if not raw & PteFlags.PRESENT:
            s.append(".")
        elif raw & PteFlags.HUGE:
            s.append("H")
        elif raw & PteFlags.SPECIAL:
            s.append("z")
        elif raw & PteFlags.CONT:
            s.append("C")
        else:
            s.append("p")
    return "".join(s)


def load_decision_vectors() -> list[dict[str, str]]:
    """Rows of tests/data/thp-decision-vectors.csv (docs/kernel-semantics.md §1.9)."""
    with open(DATA / "thp-decision-vectors.csv", newline="") as f:
        return list(csv.DictReader(f))


def apply_hint_and_prctl(mm: AddressSpace, addr: int, length: int, hint: str,
                         prctl: str) -> None:
    """Apply a vector's VMA hint (none / MADV_HUGEPAGE / MADV_NOHUGEPAGE) and
    prctl state (none / disable / disable_except_advised)."""
    if hint != "none":
        mm.madvise(addr, length, hint)
    if prctl == "disable":
        mm.set_thp_disable(True)
    elif prctl == "disable_except_advised":
        mm.set_thp_disable(True, except_advised=True)
    else:
        assert prctl == "none", prctl


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``pylaf`` main(argv) -> (exit status, stdout, stderr), argparse exits included."""
    from pylaf.cli import main

    try:
        rc = main(list(argv))
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


#: retry_busy() gives up after this many refusals or this many seconds, whichever
#: comes first: a busy flag that is never released must fail the test, not hang it.
RETRY_BUSY_ATTEMPTS = 1_000_000
RETRY_BUSY_SECONDS = 30.0


def retry_busy(fn, *args, **kw):  # type: ignore[no-untyped-def]
    """Call fn until it is not refused with LafBusyError: in the thread tests the
    other thread may be the one inside the address space at that moment.  Fails
    the test (pytest.fail) after RETRY_BUSY_ATTEMPTS refusals or
    RETRY_BUSY_SECONDS, e.g. when a call leaks the busy flag."""
    start = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        try:
            return fn(*args, **kw)
        except LafBusyError as exc:
            last = exc
        if attempts >= RETRY_BUSY_ATTEMPTS or time.monotonic() - start > RETRY_BUSY_SECONDS:
            break
        time.sleep(0)                  # let the thread that holds the address space run
    pytest.fail(f"retry_busy: {getattr(fn, '__qualname__', fn)!s} still refused with LafBusyError "
                f"after {attempts} attempts in {time.monotonic() - start:.1f} s (limits: "
                f"{RETRY_BUSY_ATTEMPTS} attempts, {RETRY_BUSY_SECONDS:g} s); last error: {last}. "
                f"Was the busy flag released?", pytrace=False)
