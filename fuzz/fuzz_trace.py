#!/usr/bin/env python3
"""atheris fuzz target: the ``.laftrace`` loader and replay on untrusted files.

Each input is split into a header and an event array, and the target builds a
file from them whose magic, header CRC and array CRC are right (random bytes
would almost never get past the checksums): ``flags, header_len (2 bytes BE),
header bytes, event bytes``.  Flag bits: 1 = if the header is a JSON object,
fill in a consistent array directory and ``file_size`` (so the events are
reached); 2 = store the event bytes as they are instead of deflating them;
4 = truncate the file by the next byte's value.

The file is loaded with :func:`pylaf.trace.format.parse_trace_bytes`; if it
loads, its summary is printed to nowhere and it is replayed into a small
emulator.  The only exception allowed out of either is
:class:`~pylaf.trace.format.TraceError`; anything else (KeyError, TypeError,
RecursionError, MemoryError, a LafError from replay, ...) is a finding and
atheris saves the input as ``crash-*``.

Usage::

    python3 fuzz/fuzz_trace.py -max_total_time=120 fuzz/corpus-trace   # a couple of minutes
    python3 fuzz/fuzz_trace.py crash-<hash>                             # replay one input
    python3 fuzz/fuzz_trace.py --make-seeds fuzz/corpus-trace           # rewrite the seeds
"""
from __future__ import annotations

import atexit
import json
import sys
import zlib
from pathlib import Path
from typing import Any

import atheris

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))           # this tree's pylaf, not an installed one

with atheris.instrument_imports(include=["pylaf.trace"]):
    import numpy as np

    from pylaf import AddressSpace, Config, Policy
    from pylaf.trace import format as F
    from pylaf.trace.replay import replay_into

MAX_EVENTS = 256
STATS = {"inputs": 0, "loaded": 0, "replayed": 0}
_POLICY = Policy.parse("upstream/enabled=never/64K=always")


def _fill_directory(header: dict[str, Any], blob: bytes, raw_len: int) -> bytes:
    """*header* with its array directory and file_size made consistent."""
    base = 0
    data = b""
    for _ in range(6):
        h = dict(header)
        arrays = h.get("arrays")
        d = dict(arrays[0]) if isinstance(arrays, list) and arrays and isinstance(arrays[0], dict) \
            else {}
        d.update(name=d.get("name", "events"),
                 dtype=d.get("dtype", [list(x) for x in F.EVENT_DTYPE.descr]),
                 shape=d.get("shape", [raw_len // F.EVENT_DTYPE.itemsize]),
                 raw_len=d.get("raw_len", raw_len), len=len(blob), crc32=zlib.crc32(blob),
                 offset=F.PREFIX.size + base)
        h["arrays"] = [d]
        h["file_size"] = F.PREFIX.size + base + len(blob)
        data = json.dumps(h).encode()
        if len(data) == base:
            break
        base = len(data)
    return data


def build_file(data: bytes) -> bytes:
    """The trace file an input stands for (see the module docstring)."""
    if len(data) < 3:
        return data
    flags, hlen = data[0], int.from_bytes(data[1:3], "big")
    hraw, events = data[3:3 + hlen], data[3 + hlen:3 + hlen + MAX_EVENTS * F.EVENT_DTYPE.itemsize]
    blob = events if flags & 2 else zlib.compress(events)
    hbytes = hraw
    if flags & 1:
        try:
            header = json.loads(hraw)
        except (ValueError, RecursionError):
            header = None
        if isinstance(header, dict):
            hbytes = _fill_directory(header, blob, len(events))
    out = F.PREFIX.pack(F.MAGIC, F.VERSION, 0, len(hbytes), zlib.crc32(hbytes), 0) + hbytes + blob
    if flags & 4 and len(events):
        out = out[:max(0, len(out) - events[0])]
    return out


def TestOneInput(data: bytes) -> None:
    STATS["inputs"] += 1
    try:
        tr = F.parse_trace_bytes(build_file(data), "<fuzz>")
    except F.TraceError:
        return
    STATS["loaded"] += 1
    tr.summary()
    try:
        with AddressSpace(Config(policy=_POLICY, ram="32M")) as mm:
            replay_into(mm, tr)
            mm.check_invariants()
    except F.TraceError:
        return
    STATS["replayed"] += 1


def make_seeds(out: Path) -> None:
    """Seeds from the bundled git-log trace (its header, its first events)."""
    tr = F.load_trace(ROOT / "pylaf" / "data" / "traces" / "git-log.laftrace")
    out.mkdir(parents=True, exist_ok=True)
    procs = tr.processes[:1]
    keep = tr.events[tr.events["mm"] == 0][:MAX_EVENTS]
    for name, nev in (("seed-small", 8), ("seed-full", MAX_EVENTS)):
        ev = np.ascontiguousarray(keep[:nev])
        header = {k: v for k, v in tr.header.items() if k in ("name", "command", "exit_status")}
        header.update(format="pylaf-trace", processes=procs)
        hbytes = json.dumps(header).encode()
        (out / name).write_bytes(bytes([1]) + len(hbytes).to_bytes(2, "big") + hbytes + ev.tobytes())


def _report() -> None:
    print(f"fuzz_trace: {STATS['inputs']} inputs, {STATS['loaded']} loaded, "
          f"{STATS['replayed']} replayed", file=sys.stderr, flush=True)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--make-seeds":
        make_seeds(Path(sys.argv[2]))
        return
    atexit.register(_report)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
