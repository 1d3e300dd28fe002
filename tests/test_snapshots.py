"""Readers return consistent snapshots under concurrent changes (issue 13 item 1).

Each reader of AddressSpace takes its answer in one call into the C core
(under the core's guard), so a snapshot is one moment's state, never a mix:
vmas() (one laf_get_vmas() call when its buffer is big enough), stats(),
read_ptes(), folio().  Other threads' calls meanwhile either run or are
refused with LafBusyError; every thread ends within a deadline.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from pylaf import AddressSpace, ClosedError, Config, LafBusyError, Policy
from pylaf import address_space as address_space_module
from pylaf._ffi import lib

PAGE = 4096
RUN_S = 0.6
DEADLINE_S = 20.0


class _CountingLib:
    """``lib`` with a call counter on laf_get_vmas()."""

    def __init__(self) -> None:
        self.get_vmas_calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(lib, name)

    def laf_get_vmas(self, *a: Any) -> int:
        self.get_vmas_calls += 1
        return int(lib.laf_get_vmas(*a))


def test_vmas_is_one_call_into_the_core(monkeypatch: pytest.MonkeyPatch) -> None:
    """The list is copied by one laf_get_vmas() call (not a count call and
    then a fill call, between which another thread could change the VMAs)."""
    counting = _CountingLib()
    monkeypatch.setattr(address_space_module, "lib", counting)
    mm = AddressSpace(Config(ram="64M"))
    mm.mmap(PAGE)
    assert len(mm.vmas()) == 1
    assert counting.get_vmas_calls == 1
    for i in range(100):
        mm.mmap(PAGE, prot="r" if i % 2 == 0 else "rw")
    counting.get_vmas_calls = 0
    assert len(mm.vmas()) == 101            # outgrew the buffer: one retry
    assert counting.get_vmas_calls == 2
    counting.get_vmas_calls = 0
    assert len(mm.vmas()) == 101            # sized from the last snapshot
    assert counting.get_vmas_calls == 1


def _run_threads(workers: list[Callable[[threading.Event], None]]) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []

    def wrap(fn: Callable[[threading.Event], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn(stop)
            except BaseException as exc:      # reported to the test below
                errors.append(exc)
                stop.set()
        return run

    threads = [threading.Thread(target=wrap(f), daemon=True) for f in workers]
    for t in threads:
        t.start()
    stop.wait(RUN_S)
    stop.set()
    for t in threads:
        t.join(DEADLINE_S)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


def test_vmas_and_stats_are_never_torn() -> None:
    """One thread splits a VMA in three and merges it back (uffd register /
    unregister of its middle page); readers only ever see one VMA or three,
    each list sorted and consistent, and stats().nr_vmas is 1 or 3."""
    mm = AddressSpace(Config(ram="64M"))
    big = mm.mmap(64 * PAGE)
    one = [(big, big + 64 * PAGE)]
    three = [(big, big + 32 * PAGE), (big + 32 * PAGE, big + 33 * PAGE), (big + 33 * PAGE, big + 64 * PAGE)]
    seen = {1: 0, 3: 0}

    def mutate(stop: threading.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(LafBusyError):
                mm.uffd_register(big + 32 * PAGE, PAGE)
            with contextlib.suppress(LafBusyError):
                mm.uffd_unregister(big + 32 * PAGE, PAGE)

    def read(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                got = [(v.start, v.end) for v in mm.vmas()]
                nr = mm.stats().nr_vmas
            except LafBusyError:
                continue
            assert got in (one, three), got
            assert nr in (1, 3), nr
            seen[len(got)] += 1

    _run_threads([mutate, read, read])
    assert seen[1] + seen[3] > 0
    mm.check_invariants()


def test_read_ptes_and_folio_see_a_folio_whole_or_not_at_all() -> None:
    """64K folios: one thread faults a 64K range in (one touch_range() call)
    and zaps it (one madvise call); read_ptes() shows all 16 PTEs present or
    none, and folio() an order-4 folio or nothing."""
    mm = AddressSpace(Config(ram="64M", policy=Policy.parse("order-4")))
    a = mm.mmap("2M")
    a64 = (a + 0xFFFF) & ~0xFFFF

    def churn(stop: threading.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(LafBusyError):
                mm.touch_range(a64, "64K", write=True)
            with contextlib.suppress(LafBusyError):
                mm.madvise(a64, "64K", "MADV_DONTNEED")

    def read(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                ptes, _orders = mm.read_ptes(a64, 16)
                f = mm.folio(a64 + 5 * PAGE)
            except LafBusyError:
                continue
            present = int(np.count_nonzero(ptes & lib.LAF_PTE_PRESENT))
            assert present in (0, 16), present
            assert f is None or f.order == 4, f

    _run_threads([churn, read, read])
    mm.check_invariants()


def test_readers_during_close_end_in_closed_or_a_snapshot() -> None:
    """Readers racing close(): each call returns a snapshot, or raises
    LafBusyError / ClosedError; nothing hangs, nothing else is raised."""
    mm = AddressSpace(Config(ram="64M"))
    for i in range(200):
        mm.mmap(PAGE, prot="r" if i % 2 == 0 else "rw")
    done = threading.Event()

    def read(stop: threading.Event) -> None:
        while not stop.is_set() and not done.is_set():
            try:
                assert len(mm.vmas()) == 200
                assert mm.stats().nr_vmas == 200
            except LafBusyError:
                continue
            except ClosedError:
                return

    def close(stop: threading.Event) -> None:
        time.sleep(RUN_S / 3)
        mm.close()
        done.set()

    _run_threads([read, read, read, close])
    assert mm.closed
