"""Threads: the rule is one thread per AddressSpace at a time.

* Every C entry point takes a non-blocking busy flag on its laf_mm; a second
  thread that enters while another is inside gets ``LafBusyError`` (EBUSY)
  at once, and the first call completes untouched (no corruption).
* cffi releases the GIL around every C call, so batch calls (``touch``,
  ``touch_range``) on *separate* AddressSpaces run in parallel, and other
  Python threads keep running meanwhile.
"""
from __future__ import annotations

import threading
import time

import conftest
import numpy as np
import pytest
from conftest import retry_busy

from pylaf import AddressSpace, ClosedError, Config, LafBusyError, LafValueError, Policy, TouchResult

M = 1 << 20


def _space() -> AddressSpace:
    return AddressSpace(Config(ram="1G", policy=Policy.parse("order-0")))


def _churn(mm: AddressSpace, a: int, length: int, rounds: int, retry: bool = False) -> None:
    call = retry_busy if retry else (lambda fn, *args, **kw: fn(*args, **kw))
    for _ in range(rounds):
        call(mm.touch_range, a, length, write=True)
        call(mm.madvise, a, length, "MADV_DONTNEED")


def test_batch_call_releases_the_gil() -> None:
    """While one thread is inside a long touch_range, another Python thread
    keeps running (it could not if the GIL were held for the C call)."""
    with _space() as mm:
        a = mm.mmap("512M")
        inside = threading.Event()
        counted = 0

        def worker() -> None:
            inside.set()
            mm.touch_range(a, "512M", write=True)
            inside.clear()

        t = threading.Thread(target=worker)
        t.start()
        inside.wait()
        while t.is_alive():
            if inside.is_set():
                counted += 1
        t.join()
        assert counted > 1000, f"only {counted} iterations ran while C was busy"
        assert mm.stats().mm_anonpages == 512 * M // 4096
        mm.check_invariants()


def test_two_address_spaces_overlap_in_time() -> None:
    """Two AddressSpaces, two threads: their batch calls overlap in time."""
    spaces = [_space(), _space()]
    bases = [mm.mmap("256M") for mm in spaces]
    spans: list[tuple[float, float]] = [(0.0, 0.0), (0.0, 0.0)]
    start = threading.Barrier(2)

    def run(i: int) -> None:
        start.wait()
        t0 = time.perf_counter()
        _churn(spaces[i], bases[i], 256 * M, 3)
        spans[i] = (t0, time.perf_counter())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (s0, e0), (s1, e1) = spans
    overlap = min(e0, e1) - max(s0, s1)
    assert overlap > 0.5 * min(e0 - s0, e1 - s1), spans
    for mm in spaces:
        mm.check_invariants()
        assert mm.stats().mm_anonpages == 0
        mm.close()


def test_one_address_space_two_threads_is_refused_not_corrupted() -> None:
    """A second thread entering a busy AddressSpace gets LafBusyError at once;
    the running calls complete, and the final state equals a one-thread run."""
    with _space() as mm, _space() as ref:
        a = mm.mmap("256M")
        b = ref.mmap("256M")
        assert a == b
        started, done = threading.Event(), threading.Event()
        refused = {"stats": 0, "fault": 0, "vmas": 0}
        errnos = set()

        def worker() -> None:
            started.set()
            try:
                _churn(mm, a, 256 * M, 6, retry=True)
                retry_busy(mm.touch_range, a, "128M", write=True)
            finally:
                done.set()

        t = threading.Thread(target=worker)
        t.start()
        started.wait()
        try:
            while not done.is_set():
                for name, call in (("stats", mm.stats), ("vmas", mm.vmas),
                                   ("fault", lambda: mm.fault(a + 200 * M, False))):
                    try:
                        call()
                    except LafBusyError as exc:
                        refused[name] += 1
                        errnos.add(exc.errno)
        finally:
            t.join()
        assert sum(refused.values()) > 0, refused
        assert errnos <= {-16}
        mm.check_invariants()
        # the same calls on one thread: the main thread's successful reads
        # (zero-page faults at +200M) are the only difference
        _churn(ref, b, 256 * M, 6)
        ref.touch_range(b, "128M", write=True)
        n = 128 * M // 4096
        p1, o1 = mm.read_ptes(a, n)
        p2, o2 = ref.read_ptes(b, n)
        assert np.array_equal(o1, o2)
        flags = np.uint64(0xFFF)                  # PFNs differ: the reads took table frames
        assert np.array_equal(p1 & flags, p2 & flags)
        s1, s2 = mm.stats(), ref.stats()
        assert (s1.mm_anonpages, s1.memcg_charged) == (s2.mm_anonpages, s2.memcg_charged)
        assert s2.free_pages - s1.free_pages == s1.nr_ptes - s2.nr_ptes


def test_close_while_another_thread_is_inside() -> None:
    """close() from one thread while another is inside a batch call must not
    free the mm under it (it used to crash the interpreter): close waits for
    the call to return; later calls raise ClosedError."""
    mm = _space()
    a = mm.mmap("1G")
    inside, closed = threading.Event(), threading.Event()
    outcome: list[object] = []

    def worker() -> None:
        inside.set()
        outcome.append(mm.touch_range(a, "1G", write=True))
        closed.wait(timeout=60)
        try:
            outcome.append(mm.stats())
        except ClosedError as exc:     # the expected outcome: asserted below
            outcome.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    inside.wait()
    time.sleep(0.002)
    mm.close()
    closed.set()
    t.join()
    assert len(outcome) == 2, outcome
    assert isinstance(outcome[0], TouchResult) and outcome[0].accesses == (1 << 30) // 4096
    assert outcome[0].faulted + outcome[0].oom == outcome[0].accesses   # 1G of RAM: the tail OOMs
    assert isinstance(outcome[1], ClosedError), outcome[1]
    with pytest.raises(ClosedError, match="closed"):
        mm.stats()


def test_busy_flag_is_released_after_errors() -> None:
    """An entry point that fails (bad value) must release the busy flag."""
    with _space() as mm:
        for _ in range(3):
            with pytest.raises(LafValueError, match=r"munmap\(0x1, 4096\): invalid argument"):
                mm.munmap(1, 4096)
        mm.mmap("4K")
        err: list[BaseException] = []

        def other() -> None:
            try:
                mm.stats()
            except BaseException as exc:  # pragma: no cover - the failure case
                err.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert not err


def test_retry_busy_gives_up_instead_of_spinning(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call that stays busy (a leaked busy flag) must fail the test with a
    clear message, after a bounded number of attempts, not hang until the
    pytest timeout."""
    calls = 0

    def always_busy() -> None:
        nonlocal calls
        calls += 1
        raise LafBusyError("stats: device or resource busy (EBUSY)", -16)

    monkeypatch.setattr(conftest, "RETRY_BUSY_ATTEMPTS", 50)
    with pytest.raises(pytest.fail.Exception, match=r"always_busy.*after 50 attempts"):
        retry_busy(always_busy)
    assert calls == 50
    monkeypatch.setattr(conftest, "RETRY_BUSY_ATTEMPTS", 10**9)
    monkeypatch.setattr(conftest, "RETRY_BUSY_SECONDS", 0.05)
    t0 = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="still refused with LafBusyError"):
        retry_busy(always_busy)
    assert time.monotonic() - t0 < 5
    assert retry_busy(lambda x: x + 1, 41) == 42
