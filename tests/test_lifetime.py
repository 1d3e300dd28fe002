"""AddressSpace lifetime under threads: close() never frees the C mm under a
call that is inside the core (before the guard, closing during touch_range()
was a use-after-free that aborted the interpreter)."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pylaf import AddressSpace, ClosedError, Config, LafBusyError, Policy

M = 1 << 20
ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 30.0


def _wait_until(cond: Callable[[], bool], what: str) -> None:
    """Spin (yielding the GIL) until ``cond()``; fail after DEADLINE_S."""
    end = time.monotonic() + DEADLINE_S
    while not cond():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0)


def test_close_waits_for_the_call_in_flight() -> None:
    mm = AddressSpace(Config(ram="64M"))
    a = mm.mmap("1M")
    closer = threading.Thread(target=mm.close)
    with mm._core() as handle:          # a call is inside the core
        closer.start()
        _wait_until(lambda: mm.closed, "close() to start")
        assert closer.is_alive()        # close() waits for us ...
        assert mm._handle is handle     # ... and has not freed the mm
        with pytest.raises(ClosedError):
            mm.fault(a)                 # new calls are refused at once
    closer.join(DEADLINE_S)
    assert not closer.is_alive()
    assert mm._handle is None
    for call in (lambda: mm.fault(a), lambda: mm.touch_range(a, "1M"), mm.vmas, mm.stats,
                 lambda: mm.mmap("64K"), mm.check_invariants, lambda: mm.set_policy("order-0")):
        with pytest.raises(ClosedError):
            call()
    mm.close()                          # idempotent


def test_close_from_two_threads_at_once() -> None:
    mm = AddressSpace(Config(ram="64M"))
    start = threading.Barrier(3)

    def close() -> None:
        start.wait()
        mm.close()

    ts = [threading.Thread(target=close) for _ in range(2)]
    for t in ts:
        t.start()
    start.wait()
    for t in ts:
        t.join(DEADLINE_S)
    assert not any(t.is_alive() for t in ts) and mm.closed


class _Stress:
    """One round: threads that fault a big range, map and fault single pages,
    and close the space, all started at once."""

    SIZE = 64 * M

    def __init__(self, round_: int) -> None:
        self.round = round_
        self.mm = AddressSpace(Config(ram="256M", policy=Policy.fixed(0)))
        self.big = self.mm.mmap(self.SIZE)
        self.start = threading.Barrier(4)
        self.faulting = threading.Event()
        self.errors: list[BaseException] = []
        self.completed: list[int] = []

    def thread(self, body: Callable[[], None]) -> threading.Thread:
        def run() -> None:
            try:
                self.start.wait()
                body()
            except ClosedError:
                pass
            except BaseException as exc:  # reported by the test, with its type
                self.errors.append(exc)
        return threading.Thread(target=run)

    def fault_big(self) -> None:
        while True:
            self.faulting.set()
            try:
                r = self.mm.touch_range(self.big, self.SIZE, write=True)
            except LafBusyError:
                continue
            self.completed.append(r.accesses)
            with contextlib.suppress(LafBusyError):
                self.mm.madvise(self.big, self.SIZE, "MADV_DONTNEED")

    def map_and_fault(self) -> None:
        while True:
            with contextlib.suppress(LafBusyError):
                a = self.mm.mmap("64K")
                self.mm.fault(a, True)
                self.mm.munmap(a, "64K")

    def close(self) -> None:
        self.faulting.wait(DEADLINE_S)
        # close while a call is inside the core: once vmas() is refused as
        # busy, another thread's call is in flight (round 0 closes at once)
        end = time.monotonic() + DEADLINE_S
        while self.round and time.monotonic() < end:
            try:
                self.mm.vmas()
            except LafBusyError:
                break
        self.mm.close()


@pytest.mark.parametrize("round_", range(8))
def test_close_map_and_fault_from_several_threads(round_: int) -> None:
    """Every call either succeeds, is refused as busy (the C core's one-caller
    guard) or finds the space closed; no thread hangs; the faulting thread's
    touch_range() calls either completed in full or never started."""
    st = _Stress(round_)
    threads = [st.thread(f) for f in (st.fault_big, st.map_and_fault, st.close)]
    for t in threads:
        t.start()
    st.start.wait()
    for t in threads:
        t.join(DEADLINE_S)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not st.errors, st.errors
    assert st.mm.closed
    assert all(n == st.SIZE // st.mm.page_size for n in st.completed)


_COLLECT_CYCLE = """
import gc
from pylaf import AddressSpace, Config, Machine
for i in range(10):
    mm = AddressSpace(Config(ram="64M"))        # a cycle with its in-flight guard
    mm.touch_range(mm.mmap("1M"), "1M", write=True)
    del mm
    gc.collect()                                # machine and mm in one garbage cycle
    mm = AddressSpace(Config(ram="64M"))
    a = mm.mmap("1M")
    mm.touch_range(a, "1M", write=True)
    child = mm.fork()
    del mm
    gc.collect()
    child.touch_range(a, "1M", write=True)
    child.machine.check_invariants()
    del child
    gc.collect()
    m = Machine(Config(ram="64M"))
    space = m.address_space()
    del m
    gc.collect()
    space.touch_range(space.mmap("64K"), "64K", write=True)
print("ok")
"""


def test_garbage_collector_frees_machine_and_spaces_in_any_order() -> None:
    """An AddressSpace dropped without close() sits in a reference cycle with
    its Machine; the collector may free the machine's handle first
    (laf_machine_put(): the last mm frees it).  Before the fix this was a
    use-after-free in laf_mm_destroy() (SIGSEGV), so it runs in a child."""
    r = subprocess.run([sys.executable, "-X", "faulthandler", "-c", _COLLECT_CYCLE],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-2000:])
