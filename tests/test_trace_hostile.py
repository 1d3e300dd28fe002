"""Crafted .laftrace files: valid magic and checksums, hostile content.

Each case goes through the API (the exception class, and for a bad event its
index) and through ``pylaf replay`` (exit status 1 or 2, exactly one line on
stderr, no traceback)."""
from __future__ import annotations

import copy
import json
import os
import stat
import threading
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import run_cli

from pylaf.trace import format as F
from pylaf.trace import remap as RM
from pylaf.trace import replay as RP

GiB = 1 << 30
MiB = 1 << 20


def _events(rows: list[tuple[int, ...]]) -> np.ndarray:
    return np.array(rows, dtype=F.EVENT_DTYPE)


#: one process with a heap VMA and one write fault in it
GOOD_PROCESS = {"mm": 0, "pid": 100, "comm": "x", "exe": "/x", "start": "exec", "parent": None,
                "t": 0, "vmas": [[0x400000, 0x500000, 3, F.C_HEAP, "[heap]"]], "faults": 1,
                "anon_faults": 1}
GOOD_EVENTS = _events([(1, 0, F.OP_FAULT, F.C_HEAP, F.F_WRITE, 0x401000, 0, 0)])


def _header(blob: bytes, raw_len: int, n: int) -> dict[str, Any]:
    return {"format": "pylaf-trace", "name": "hostile", "command": ["x"],
            "processes": [copy.deepcopy(GOOD_PROCESS)],
            "arrays": [{"name": "events", "dtype": [list(x) for x in F.EVENT_DTYPE.descr],
                        "shape": [n], "raw_len": raw_len, "len": len(blob),
                        "crc32": zlib.crc32(blob), "offset": 0}],
            "file_size": 0}


def craft(path: Path, mutate: Callable[[dict[str, Any]], Any] | None = None, *,
          events: np.ndarray = GOOD_EVENTS, blob: bytes | None = None,
          raw_len: int | None = None, hbytes: bytes | None = None) -> Path:
    """A trace file with correct magic, header CRC, offsets, file_size and array
    CRC, whose header *mutate* may then break (it gets the header with its
    offsets filled in and returns the header to write, or None for the same)."""
    raw = events.tobytes()
    blob = zlib.compress(raw) if blob is None else blob
    header = _header(blob, len(raw) if raw_len is None else raw_len, len(events))
    base = 0
    for _ in range(8):
        header["arrays"][0]["offset"] = F.PREFIX.size + base
        header["file_size"] = F.PREFIX.size + base + len(blob)
        h = copy.deepcopy(header)
        out = mutate(h) if mutate is not None else None
        data = hbytes if hbytes is not None else json.dumps(h if out is None else out).encode()
        if len(data) == base or hbytes is not None:
            break
        base = len(data)
    prefix = F.PREFIX.pack(F.MAGIC, F.VERSION, 0, len(data), zlib.crc32(data), 0)
    path.write_bytes(prefix + data + blob)
    return path


def expect_api(path: Path, *words: str, index: int | None = None) -> F.TraceFormatError:
    with pytest.raises(F.TraceFormatError) as ei:
        F.load_trace(path)
    for w in words:
        assert w in str(ei.value), str(ei.value)
    assert ei.value.index == index
    return ei.value


def expect_cli(capsys: pytest.CaptureFixture[str], path: Path | str, *words: str) -> str:
    rc, out, err = run_cli(capsys, "replay", str(path), "--policy", "order-0")
    assert rc in (1, 2), (rc, out, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pylaf replay: error: ") and "Traceback" not in err
    for w in words:
        assert w in err, err
    return err


def test_craft_makes_a_good_file(tmp_path: Path) -> None:
    """The crafting helper itself writes a trace that loads and replays."""
    p = craft(tmp_path / "good.laftrace")
    tr = F.load_trace(p)
    assert tr.fault_counts()["heap"] == 1
    assert RP.replay(tr, "order-0", ram="64M").faults == 1


# --------------------------------------- header: what used to raise KeyError etc.

def _pop(d: dict[str, Any], key: str) -> None:
    del d[key]


HEADER_CASES: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    # KeyError: header["arrays"] / d["offset"] / p["mm"]
    "no-arrays": (lambda h: _pop(h, "arrays"), "missing arrays"),
    "array-without-offset": (lambda h: _pop(h["arrays"][0], "offset"), "missing offset"),
    "process-without-mm": (lambda h: _pop(h["processes"][0], "mm"), "missing mm"),
    # TypeError / AttributeError: wrong types where the reader indexes or calls .get
    "header-is-a-list": (lambda h: [h], "expected an object, got an array"),
    "processes-is-a-string": (lambda h: h.update(processes="abc"), "processes: expected an array"),
    "process-is-an-int": (lambda h: h.update(processes=[7]), "processes[0]: expected an object"),
    "file-size-is-a-string": (lambda h: h.update(file_size="12"), "file_size: expected an integer"),
    "offset-is-a-float": (lambda h: h["arrays"][0].update(offset=1.5), "offset: expected an integer"),
    "crc-is-null": (lambda h: h["arrays"][0].update(crc32=None), "crc32: expected an integer"),
    "skipped-is-a-list": (lambda h: h.update(skipped=[1, 2]), "skipped: expected an object"),
    "command-holds-a-dict": (lambda h: h.update(command=[{"a": 1}]), "command[0]: expected a string"),
    "exit-status-is-bool": (lambda h: h.update(exit_status=True), "exit_status: expected an integer"),
    "vma-too-short": (lambda h: h["processes"][0].update(vmas=[[1, 2]]), "2 items, expected 5"),
    # ranges and consistency
    "vma-unaligned": (lambda h: h["processes"][0].update(vmas=[[0x400001, 0x500000, 3, 0, ""]]),
                      "not a page-aligned"),
    "vma-above-user-space": (lambda h: h["processes"][0].update(vmas=[[0, 1 << 60, 3, 0, ""]]),
                             "out of range"),
    "mm-numbering": (lambda h: h["processes"][0].update(mm=5), "mm is 5, expected 0"),
    "parent-unknown": (lambda h: h["processes"][0].update(parent=9), "parent 9"),
    "start-unknown": (lambda h: h["processes"][0].update(start="spawn"), "'spawn' is not one of"),
    "wrong-dtype": (lambda h: h["arrays"][0].update(dtype=[["t", "<f8"]]), "dtype"),
    "two-arrays": (lambda h: h.update(arrays=h["arrays"] * 2), "2 items, expected 1..1"),
    "unknown-array": (lambda h: h["arrays"][0].update(name="other"), "is not one of 'events'"),
    "raw-len-disagrees-with-shape": (lambda h: h["arrays"][0].update(shape=[3]), "does not match"),
    "array-outside-file": (lambda h: h["arrays"][0].update(offset=3), "lies outside"),
    "page-size-16k": (lambda h: h.update(page_size=16384), "page_size"),
}


@pytest.mark.parametrize("case", sorted(HEADER_CASES))
def test_hostile_header(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    mutate, words = HEADER_CASES[case]
    p = craft(tmp_path / f"{case}.laftrace", mutate)
    expect_api(p, "bad header", words)
    expect_cli(capsys, p, "bad header", words)


def test_deeply_nested_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """200,000 nested arrays: refused before json.loads could recurse."""
    deep = "[" * 200_000 + "]" * 200_000
    p = craft(tmp_path / "deep.laftrace", hbytes=('{"format":"pylaf-trace","x":' + deep + "}").encode())
    expect_api(p, "nested 200001 deep")
    expect_cli(capsys, p, "nested")


def test_nesting_inside_strings_is_not_depth(tmp_path: Path) -> None:
    p = craft(tmp_path / "s.laftrace", lambda h: h.update(description="[" * 1000 + '\\"{'))
    assert F.load_trace(p).description.startswith("[[[")


def test_huge_integer_in_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An integer with 10,000 digits (int() refuses it: ValueError, not a crash)."""
    p = craft(tmp_path / "digits.laftrace",
              hbytes=b'{"format":"pylaf-trace","file_size":' + b"9" * 10_000 + b"}")
    expect_api(p, "corrupt header")
    expect_cli(capsys, p, "corrupt header")


def test_header_length_over_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The prefix claims a 4 GiB header: refused before reading it."""
    p = tmp_path / "hlen.laftrace"
    p.write_bytes(F.PREFIX.pack(F.MAGIC, F.VERSION, 0, (1 << 32) - 1, 0, 0) + b"{}")
    expect_api(p, "header length 4294967295 exceeds")
    expect_cli(capsys, p, "exceeds")


def test_file_size_over_limit(tmp_path: Path) -> None:
    p = craft(tmp_path / "fs.laftrace")
    with pytest.raises(F.TraceFormatError, match=r"file_size .* exceeds the limit of 100 bytes"):
        F.load_trace(p, F.Limits(max_file_bytes=100))


# ------------------------------------------------------- compression bombs

@pytest.fixture(scope="module")
def bomb() -> bytes:
    """1 GiB of zeros deflated (about 1 MiB), made without holding 1 GiB."""
    c = zlib.compressobj(9)
    chunk = bytes(MiB)
    parts = [c.compress(chunk) for _ in range(1024)]
    parts.append(c.flush())
    return b"".join(parts)


def _peak_while(fn: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_bomb_with_honest_raw_len(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  bomb: bytes) -> None:
    """The header says 1 GiB raw: refused from the header, nothing inflated."""
    assert len(bomb) < 2 * MiB
    n = GiB // F.EVENT_DTYPE.itemsize
    p = craft(tmp_path / "bomb1.laftrace", events=np.zeros(1, F.EVENT_DTYPE), blob=bomb,
              raw_len=n * F.EVENT_DTYPE.itemsize,
              mutate=lambda h: h["arrays"][0].update(shape=[n]))
    assert p.stat().st_size < 2 * MiB
    peak = _peak_while(lambda: expect_api(p, "raw_len", "exceeds the limit"))
    assert peak < 8 * MiB, peak
    expect_cli(capsys, p, "exceeds the limit")


def test_bomb_with_lying_raw_len(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 bomb: bytes) -> None:
    """The header says one event (40 bytes); the stream inflates to 1 GiB: the
    decompressor stops at 41 bytes."""
    p = craft(tmp_path / "bomb2.laftrace", events=np.zeros(1, F.EVENT_DTYPE), blob=bomb)
    peak = _peak_while(lambda: expect_api(p, "inflates past its raw_len of 40 bytes"))
    assert peak < 8 * MiB, peak
    expect_cli(capsys, p, "inflates past")


def test_compressed_stream_incomplete(tmp_path: Path) -> None:
    blob = zlib.compress(GOOD_EVENTS.tobytes())[:-6]
    expect_api(craft(tmp_path / "short.laftrace", blob=blob), "incomplete")


# ------------------------------------------------------------- bad events

EVENT_CASES: dict[str, tuple[tuple[int, ...], str]] = {
    "op-code": ((2, 0, 99, 0, 0, 0x400000, 0x1000, 0), "unknown op code 99"),
    "mm-index": ((2, 7, F.OP_FAULT, 0, 0, 0x400000, 0, 0), "mm 7 is not one of the 1"),
    "class": ((2, 0, F.OP_FAULT, 200, 0, 0x400000, 0, 0), "unknown region class 200"),
    "kernel-address": ((2, 0, F.OP_FAULT, 0, 0, 0xffff888000000000, 0, 0), "above the user"),
    "wrapping-range": ((2, 0, F.OP_UNMAP, 3, 0, 0x7fff00000000, (1 << 64) - 4096, 0), "leaves"),
    "zero-length-map": ((2, 0, F.OP_MAP, 3, 0, 0x600000, 0, 3), "leaves"),
    "unaligned-map": ((2, 0, F.OP_MAP, 3, 0, 0x600010, 0x1000, 3), "not page-aligned"),
    "prot": ((2, 0, F.OP_PROTECT, 3, 0, 0x600000, 0x1000, 1 << 40), "protection"),
    "flags": ((2, 0, F.OP_UNMAP, 3, 0x8000, 0x600000, 0x1000, 0), "flags 0x8000"),
    "move-target": ((2, 0, F.OP_MOVE, 3, 0, 0x600000, 0x1000, (1 << 64) - 4096), "move target"),
    "huge-move": ((2, 0, F.OP_MOVE, 3, 0, 0x1000, 1 << 46, 1 << 46), "a move of"),
    "fault-length": ((2, 0, F.OP_FAULT, 0, 0, 0x401000, 5, 0), "a fault with length 5"),
    "remap-length": ((2, 0, RM.OP_REMAP, 3, 0, 0x600000, 0x1000, 0x1001), "remap to a length"),
    "remap-no-target": ((2, 0, RM.OP_REMAP, 3, RM.R_MAYMOVE | RM.R_FIXED, 0x600000, 0x1000, 0x1000),
                        "not followed by its remap-to"),
    "remap-to-alone": ((2, 0, RM.OP_REMAP_TO, 3, 0, 0x600000, 0x1000, 0), "without its moving remap"),
    "remap-flags": ((2, 0, RM.OP_REMAP, 3, 8, 0x600000, 0x1000, 0x1000), "flags 0x8"),
}


@pytest.mark.parametrize("case", sorted(EVENT_CASES))
def test_hostile_event(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    row, words = EVENT_CASES[case]
    ev = _events([(1, 0, F.OP_FAULT, F.C_HEAP, 0, 0x401000, 0, 0)] * 3 + [row])
    p = craft(tmp_path / f"{case}.laftrace", events=ev)
    e = expect_api(p, "event 3:", words, index=3)
    assert e.pos > F.PREFIX.size
    expect_cli(capsys, p, "event 3:")


def test_events_checked_for_in_memory_traces_too() -> None:
    ev = _events([(1, 0, 42, 0, 0, 0, 0, 0)])
    with pytest.raises(F.TraceFormatError, match="event 0: unknown op code 42") as ei:
        F.check_events(ev, 1)
    assert ei.value.index == 0


# ------------------------------------------------ truncation and endless input

@pytest.mark.parametrize("keep", [10, 30, -1, -20])
def test_truncated(tmp_path: Path, capsys: pytest.CaptureFixture[str], keep: int) -> None:
    data = craft(tmp_path / "full.laftrace").read_bytes()
    p = tmp_path / "cut.laftrace"
    p.write_bytes(data[:keep])
    expect_api(p, "truncated")
    expect_cli(capsys, p, "truncated")


def test_dev_zero(capsys: pytest.CaptureFixture[str]) -> None:
    expect_api(Path("/dev/zero"), "not a pylaf trace")
    expect_cli(capsys, "/dev/zero", "not a pylaf trace")


def test_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(F.TraceError, match="cannot read"):
        F.load_trace(tmp_path)
    rc, _out, err = run_cli(capsys, "replay", str(tmp_path))
    assert rc == 1 and len(err.splitlines()) == 1


def test_endless_fifo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A FIFO that sends a valid trace and then never stops: reading ends one
    byte after file_size, and the writer sees the reader go away."""
    data = craft(tmp_path / "good.laftrace").read_bytes()
    fifo = tmp_path / "fifo.laftrace"
    os.mkfifo(fifo)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    sent = [0]

    def writer() -> None:
        with open(fifo, "wb", buffering=0) as f:
            try:
                f.write(data)
                while sent[0] < 256 * MiB:
                    sent[0] += f.write(bytes(64 * 1024))
            except BrokenPipeError:
                pass

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    expect_api(fifo, "unexpected bytes after the end")
    t.join(timeout=10)
    assert not t.is_alive()
    assert sent[0] < 256 * MiB


def test_valid_fields_that_fail_in_the_emulator_are_counted(tmp_path: Path) -> None:
    """In-range events the emulator refuses (a mapping at the very top of the
    user address space, a populate over a hole) are replay errors, not crashes."""
    ev = _events([(1, 0, F.OP_MAP, 3, 0, F.USER_TOP - 0x1000, 0x1000, 3),
                  (2, 0, F.OP_FAULT, 3, F.F_WRITE, F.USER_TOP - 8, 0, 0),
                  (3, 0, F.OP_POPULATE, 3, 0, 0x10000000, 0x1000, 0),
                  (4, 0, F.OP_MOVE, 3, 0, 0x400000, 0x100000, 0x20000000),
                  (5, 0, F.OP_MAP, 3, F.M_MOVED, 0x20000000, 0x100000, 3)])
    p = craft(tmp_path / "edge.laftrace", events=ev)
    reports: list[RP.ReplayReport] = []
    RP.replay(p, "order-0", ram="64M", report=reports)
    assert reports[0].errors.get("populate: range not mapped") == 1
