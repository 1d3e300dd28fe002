#!/usr/bin/env python3
"""Plot bench/laf_bench JSON lines: ns per fault and ns per 4K page by order.

    bench/laf_bench --json-only > run.jsonl
    python3 bench/plot.py run.jsonl [more.jsonl ...] -o laf_bench.png

Every (pattern, teardown, warm) combination becomes one line.  Lines that
are not laf_bench JSON objects (the table, if --json was used) are skipped.
Needs matplotlib.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path


def load(paths: list[str]) -> list[dict]:
    rows = []
    for p in paths:
        for line in Path(p).read_text().splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            d = json.loads(line)
            if d.get("bench") == "laf_bench":
                rows.append(d)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("-o", "--output", default="laf_bench.png")
    a = ap.parse_args(argv)
    rows = load(a.files)
    if not rows:
        print("plot.py: no laf_bench JSON lines found", file=sys.stderr)
        return 1
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot.py: needs matplotlib (pip install matplotlib)", file=sys.stderr)
        return 1
    series: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["pattern"] == "hit":
            continue
        key = f"{r['pattern']}{'+munmap' if r['teardown'] else ''}{' (warm)' if r.get('warm') else ''}"
        series[key].append(r)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, rs in sorted(series.items()):
        rs.sort(key=lambda r: r["order"])
        orders = [r["order"] for r in rs]
        a1.plot(orders, [r["ns_per_fault_min"] for r in rs], "o-", label=key)
        a2.plot(orders, [r["ns_per_page_min"] for r in rs], "o-", label=key)
    a1.set_ylabel("ns per fault (min of runs)")
    a2.set_ylabel("ns per 4K page (min of runs)")
    for ax in (a1, a2):
        ax.set_yscale("log")
        ax.set_xlabel("folio order")
        ax.grid(True, which="both", alpha=0.3)
    a2.legend(fontsize=7)
    size = rows[0]["size_bytes"] >> 20
    fig.suptitle(f"laf_bench: {size} MiB per case, 4K pages")
    fig.tight_layout()
    fig.savefig(a.output, dpi=110)
    print(f"wrote {a.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
