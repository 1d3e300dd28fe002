"""Host memory of a big emulated machine: does the cost follow what is touched?

Creates an AddressSpace with ``--ram`` of emulated RAM (default 1T, 4K pages,
or the largest this host accepts if that is less),
writes ``--touch`` bytes (default 16 MiB) of anonymous memory, and reports how
much the host process's resident set grew (``VmRSS`` from /proc/self/status,
and the ``ru_maxrss`` high-water mark).  The memmap and the buddy free lists
are built lazily, by memory section (csrc/page_alloc.c deferred_grow_zone()),
so the growth should be a few MiB, not the 1 GiB a fully written memmap of 1T
would cost.  Exit status 1 if the growth exceeds ``--limit`` (default 64 MiB).

    PYTHONPATH=. python3 bench/ram_lazy.py [--ram 1T] [--touch 16M] [--page-size 4K] [--limit 64M]

(``PYTHONPATH=.`` from the repository root, so that this tree's ``pylaf`` is
measured; the script prints which one it imported.)
"""
from __future__ import annotations

import argparse
import resource
import sys
from typing import Any

import pylaf
from pylaf import AddressSpace, Config
from pylaf._ffi import lib
from pylaf.geometry import PAGE_SIZES
from pylaf.sizes import format_size, parse_size


def vm_rss_bytes() -> int:
    """The process's current resident set (``VmRSS`` in /proc/self/status)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line in /proc/self/status")


def max_rss_bytes() -> int:
    """The process's resident high-water mark (``ru_maxrss``, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ram", default="1T",
                    help="emulated RAM (default 1T; capped at what this host accepts, 'max' for that)")
    ap.add_argument("--touch", default="16M", help="anonymous memory written (default 16M)")
    ap.add_argument("--page-size", default="4K", help="base page size (default 4K)")
    ap.add_argument("--limit", default="64M", help="largest acceptable RSS growth (default 64M)")
    args = ap.parse_args(argv)
    touch = parse_size(args.touch)
    page_size = parse_size(args.page_size)
    max_ram = int(lib.laf_max_ram_bytes(PAGE_SIZES[page_size])) & ~(page_size - 1)
    ram = max_ram if args.ram == "max" else parse_size(args.ram)
    if ram > max_ram:
        print(f"ram {args.ram} is above this host's limit: using {format_size(max_ram)}")
        ram = max_ram

    rss0, max0 = vm_rss_bytes(), max_rss_bytes()
    with AddressSpace(Config(ram=ram, page_size=page_size)) as mm:
        rss_created = vm_rss_bytes()
        addr = mm.mmap(touch)
        r = mm.touch_range(addr, touch, write=True)
        assert r.ok and r.faulted > 0, r
        rss_touched, max1 = vm_rss_bytes(), max_rss_bytes()
        st: Any = mm.stats()    # Stats is generated from struct laf_stats: Any to mypy
        free = st.free_pages * mm.page_size
    growth = rss_touched - rss0
    print(f"pylaf: {pylaf.__file__}")
    print(f"ram {format_size(ram)} (host limit {format_size(max_ram)}), page size {args.page_size}, "
          f"touched {format_size(touch)}, MemFree-like free {format_size(free)}")
    print(f"VmRSS growth after create: {(rss_created - rss0) / 2**20:.1f} MiB")
    print(f"VmRSS growth after touch:  {growth / 2**20:.1f} MiB")
    print(f"ru_maxrss growth:          {(max1 - max0) / 2**20:.1f} MiB")
    limit = parse_size(args.limit)
    if growth > limit:
        print(f"FAIL: growth above {format_size(limit)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
