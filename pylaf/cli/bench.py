"""``pylaf bench``: the emulator's fault-path cost by folio order, from Python.

For every order (policy ``fixed``, ``fixed_order`` = order; the PMD order
takes the PMD path) a fresh AddressSpace write-faults ``--size`` of memory
through the batch API (``touch`` over a numpy address array, one address per
folio, or ``touch_range``), then unmaps it.  The best of ``--runs`` runs is
reported: ns per fault, ns per 4K page, faults per GiB, the emulator's
per-page / per-folio operation counts per fault, and the speed-up of every
order against order 0 (time per GiB).  ``--kernel-model`` adds what the live
kernel would take for the same faults (:mod:`pylaf.experiments.costmodel`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np

from pylaf.sizes import format_size, parse_size

GIB = 1 << 30

EPILOG = """\
examples:
  pylaf bench                              orders 0,2..9 on 1G, table + bench.png
  pylaf bench --size 4G --orders 0,4,9 --runs 5
  pylaf bench --pattern random --output random.png
  pylaf bench --json > bench.jsonl         one JSON object per order
  pylaf bench --kernel-model               + live-kernel prediction (cached in build/)
  pylaf bench --scale 64G --orders 0       64 GiB at order 0: time and peak RSS
  PYLAF_KERNEL_SETTINGS=1 pylaf bench --kernel-model --recalibrate
                                           calibrate every mTHP order (writes sysfs,
                                           restored afterwards; root)
"""


@dataclass
class OrderResult:
    order: int
    folio: str
    size: int
    faults: int
    pages: int
    runs: int
    fault_ns: float          #: best run: time of the faulting batch
    fault_ns_median: float
    teardown_ns: float       #: best run: munmap of everything
    ns_per_fault: float
    ns_per_page: float
    ns_per_fault_teardown: float   #: faults + teardown, per fault
    faults_per_gib: float
    per_page_ops_per_fault: float
    per_folio_ops_per_fault: float
    speedup_vs_order0: float = 1.0   #: order-0 time per GiB / this order's
    kernel_ns_per_fault: Optional[float] = None   #: cost model prediction (incl. teardown)
    kernel_speedup: Optional[float] = None         #: kernel time / emulator time (with teardown)


def parse_orders(text: str, pmd_order: int = 9) -> list[int]:
    """``"0,2-4,9"`` or ``"all"`` (0, 2..PMD) -> sorted orders; order 1 is skipped."""
    if text == "all":
        return [0] + list(range(2, pmd_order + 1))
    out: set[int] = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        lo, _, hi = item.partition("-")
        try:
            a, b = int(lo), int(hi) if hi else int(lo)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid order {item!r} (use e.g. 0,2-9 or all)") from None
        if a < 0 or b > pmd_order or a > b:
            raise argparse.ArgumentTypeError(f"invalid order range {item!r}: orders are 0, 2..{pmd_order}")
        out.update(o for o in range(a, b + 1) if o != 1)
    if not out:
        raise argparse.ArgumentTypeError("no orders given")
    return sorted(out)


def addresses(base: int, size: int, folio: int, pattern: str, seed: int = 42) -> np.ndarray:
    """One address per folio: ascending (seq) or shuffled (random)."""
    addrs = base + np.arange(0, size, folio, dtype=np.uint64)
    if pattern == "random":
        np.random.default_rng(seed).shuffle(addrs)
    return np.ascontiguousarray(addrs)


def run_order(order: int, size: int, runs: int = 3, pattern: str = "seq",
              page_size: int = 4096) -> OrderResult:
    """Fault ``size`` bytes at ``order`` ``runs`` times (fresh AddressSpace each)."""
    from pylaf import AddressSpace, Config, Policy

    folio = page_size << order
    ram = size + size // 256 + (32 << 20)
    best: Optional[tuple[float, float]] = None
    times = []
    stats = None
    faults = size // folio
    for _ in range(runs):
        mm = AddressSpace(Config(ram=ram, page_size=page_size, policy=Policy.fixed(order)))
        try:
            base = mm.mmap(size)
            arr = addresses(base, size, folio, pattern) if pattern != "range" else None
            t0 = time.perf_counter_ns()
            if arr is None:
                r = mm.touch_range(base, size, folio, write=True)
            else:
                r = mm.touch(arr, write=True)
            t1 = time.perf_counter_ns()
            if r.faulted != faults or not r.ok:
                raise RuntimeError(f"order {order}: {r.faulted} faults (expected {faults}), "
                                   f"first error at {r.first_error}")
            st = mm.stats()
            t2 = time.perf_counter_ns()
            mm.munmap(base, size)
            t3 = time.perf_counter_ns()
            if st.mm_anonpages != size // page_size:
                raise RuntimeError(f"order {order}: RSS {st.mm_anonpages} pages, expected {size // page_size}")
            times.append(t1 - t0)
            if best is None or t1 - t0 < best[0]:
                best = (float(t1 - t0), float(t3 - t2))
                stats = st
        finally:
            mm.close()
    assert best is not None and stats is not None
    pages = size // page_size
    fault_ns, teardown_ns = best
    return OrderResult(
        order=order, folio=format_size(folio), size=size, faults=faults, pages=pages, runs=runs,
        fault_ns=fault_ns, fault_ns_median=float(np.median(times)), teardown_ns=teardown_ns,
        ns_per_fault=fault_ns / faults, ns_per_page=fault_ns / pages,
        ns_per_fault_teardown=(fault_ns + teardown_ns) / faults,
        faults_per_gib=faults * GIB / size,
        per_page_ops_per_fault=stats.per_page_ops / faults,
        per_folio_ops_per_fault=stats.per_folio_ops / faults,
    )


def sweep(orders: Sequence[int], size: int, runs: int = 3, pattern: str = "seq",
          model: Any = None, progress: Any = None) -> list[OrderResult]:
    """Run every order; fill speed-ups (vs order 0 or the lowest order) and the
    kernel prediction when a cost ``model`` is given."""
    res = []
    for o in orders:
        if progress:
            progress(f"order {o} ({format_size(4096 << o)})")
        res.append(run_order(o, size, runs, pattern))
    ref = res[0]
    for r in res:
        r.speedup_vs_order0 = (ref.fault_ns / ref.size) / (r.fault_ns / r.size)
        if model is not None:
            r.kernel_ns_per_fault = model.predict_order(r.order)
            r.kernel_speedup = r.kernel_ns_per_fault / r.ns_per_fault_teardown
    return res


# ------------------------------------------------------------ scale
def scale_child(size: int, order: int = 0) -> dict[str, Any]:
    """Fault ``size`` bytes at ``order`` with touch_range(), unmap, close; the
    times and this process's peak RSS.  Run it in a fresh process
    (:func:`scale_run`) so ru_maxrss is this run's."""
    import resource

    from pylaf import AddressSpace, Config, Policy

    page = 4096
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    mm = AddressSpace(Config(ram=size + size // 256 + (32 << 20), policy=Policy.fixed(order)))
    base = mm.mmap(size)
    t1 = time.perf_counter()
    r = mm.touch_range(base, size, page << order, write=True)
    t2 = time.perf_counter()
    st = mm.stats()
    mm.munmap(base, size)
    t3 = time.perf_counter()
    mm.close()
    t4 = time.perf_counter()
    ok = r.ok and r.faulted == size // (page << order) and st.mm_anonpages == size // page
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    pages = size // page
    return {"bench": "pylaf-scale", "size": size, "order": order, "pages": pages,
            "faults": r.faulted, "ok": ok, "create_s": t1 - t0, "fault_s": t2 - t1,
            "munmap_s": t3 - t2, "close_s": t4 - t3, "total_s": t4 - t0,
            "ns_per_fault": (t2 - t1) * 1e9 / max(r.faulted, 1),
            "peak_rss": peak, "rss_before": rss0,
            "peak_rss_per_page": peak / pages, "emulator_rss_per_page": (peak - rss0) / pages}


def scale_run(size: int | str, order: int = 0) -> dict[str, Any]:
    """:func:`scale_child` in a fresh Python process (peak RSS measured there)."""
    import subprocess
    nbytes = parse_size(size)
    code = ("import json, sys; from pylaf.cli.bench import scale_child; "
            f"print(json.dumps(scale_child({nbytes}, {int(order)})))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------ output
def print_table(res: Sequence[OrderResult], title: str, kernel: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    ref = res[0]
    cols = [("order", "right"), ("folio", "right"), ("faults", "right"), ("ns/fault", "right"),
            ("ns/4K", "right"), ("+munmap ns/fault", "right"), ("faults/GiB", "right"),
            ("page-ops/fault", "right"), ("folio-ops/fault", "right"),
            (f"speed-up vs {ref.folio}", "right")]
    if kernel:
        cols += [("kernel us/fault", "right"), ("emulator vs kernel", "right")]
    for name, just in cols:
        t.add_column(name, justify=just)  # type: ignore[arg-type]
    for r in res:
        row = [str(r.order), r.folio, f"{r.faults:,}", f"{r.ns_per_fault:,.1f}",
               f"{r.ns_per_page:.2f}", f"{r.ns_per_fault_teardown:,.1f}",
               f"{r.faults_per_gib:,.0f}", f"{r.per_page_ops_per_fault:.1f}",
               f"{r.per_folio_ops_per_fault:.1f}", f"{r.speedup_vs_order0:.2f}x"]
        if kernel:
            row += [f"{(r.kernel_ns_per_fault or 0) / 1000:,.2f}",
                    f"{r.kernel_speedup or 0:,.0f}x faster"]
        t.add_row(*row)
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    console.print(t)


def plot(res: Sequence[OrderResult], path: str, title: str) -> None:
    """Two panels: ns per 4K page, and faults per GiB, by folio order."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("pylaf bench: writing a plot needs matplotlib "
                         "(pip install 'pylaf[plot]' or pip install matplotlib), "
                         "or pass --no-plot") from None
    orders = [r.order for r in res]
    labels = [f"{r.order}\n{r.folio}" for r in res]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    a1.plot(orders, [r.ns_per_page for r in res], "o-", label="faults")
    a1.plot(orders, [r.ns_per_fault_teardown * r.faults / r.pages for r in res], "s--",
            label="faults + munmap")
    if res[0].kernel_ns_per_fault is not None:
        a1.plot(orders, [(r.kernel_ns_per_fault or 0) * r.faults / r.pages for r in res], "^:",
                label="live kernel (model, + munmap)")
    a1.set_yscale("log")
    a1.set_ylabel("ns per 4K page")
    a1.set_title("time per 4K page")
    a2.bar(orders, [r.faults_per_gib for r in res], color="tab:orange")
    a2.set_yscale("log")
    a2.set_ylabel("faults per GiB")
    a2.set_title("faults per GiB")
    for a in (a1, a2):
        a.set_xticks(orders)
        a.set_xticklabels(labels)
        a.set_xlabel("folio order / size")
        a.grid(True, which="both", alpha=0.3)
    a1.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------ command
def cmd(args: argparse.Namespace) -> int:
    if args.scale:
        res = scale_run(args.scale, args.orders[0])
        if args.json:
            print(json.dumps(res))
        else:
            print(f"pylaf bench --scale: {format_size(res['size'])} ({res['pages']:,} pages) at order "
                  f"{res['order']}: fault {res['fault_s']:.3f} s ({res['ns_per_fault']:.1f} ns/fault), "
                  f"munmap {res['munmap_s']:.3f} s, total {res['total_s']:.3f} s; peak RSS "
                  f"{res['peak_rss'] / 2**20:.0f} MiB = {res['peak_rss_per_page']:.1f} B per 4K page "
                  f"({res['emulator_rss_per_page']:.1f} B/page above the interpreter's "
                  f"{res['rss_before'] / 2**20:.0f} MiB){'' if res['ok'] else '  [ERROR: wrong counts]'}")
        return 0 if res["ok"] else 1
    size = parse_size(args.size)
    if size < (4 << 20) or size % (2 << 20):
        print(f"pylaf bench: error: --size must be a multiple of 2M and >= 4M, got {args.size!r}",
              file=sys.stderr)
        return 2
    if args.runs < 1:
        print("pylaf bench: error: --runs must be >= 1", file=sys.stderr)
        return 2
    model = None
    if args.kernel_model:
        from pylaf.experiments import costmodel
        settings = True if args.kernel_settings else None
        try:
            model = costmodel.load_or_calibrate(recalibrate=args.recalibrate, settings=settings,
                                                progress=lambda s: print(s, file=sys.stderr))
        except (OSError, RuntimeError, PermissionError) as exc:
            print(f"pylaf bench: error: kernel cost model: {exc}", file=sys.stderr)
            return 1
    progress = None if args.json else (lambda s: print(f"  {s}...", file=sys.stderr))
    res = sweep(args.orders, size, args.runs, args.pattern, model, progress)
    title = (f"pylaf bench: {format_size(size)} write-faulted per order, pattern {args.pattern}, "
             f"best of {args.runs}")
    if args.json:
        for r in res:
            print(json.dumps({"bench": "pylaf-bench", "pattern": args.pattern, **asdict(r)}))
    else:
        print_table(res, title, kernel=model is not None)
        if model is not None:
            print(f"kernel model: {model.describe()}  ({len(model.samples)} calibrated orders; "
                  f"times include the munmap teardown)")
    if args.output and not args.no_plot:
        plot(res, args.output, title)
        if not args.json:
            print(f"wrote {args.output}")
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench", help="time the emulated fault path by folio order (order 0 vs order N)",
        description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="1G", help="memory write-faulted per order (default 1G)")
    p.add_argument("--orders", type=parse_orders, default=parse_orders("all"),
                   help="orders to run: 0,2-9 or all (default all: 0, 2..9)")
    p.add_argument("--runs", type=int, default=3, help="runs per order; the best is kept (default 3)")
    p.add_argument("--pattern", choices=("seq", "random", "range"), default="seq",
                   help="seq/random: touch() with one address per folio; range: touch_range()")
    p.add_argument("--output", "-o", default="bench.png", metavar="FILE.png",
                   help="plot of ns per 4K page and faults per GiB (default bench.png)")
    p.add_argument("--no-plot", action="store_true", help="do not write the plot")
    p.add_argument("--json", action="store_true", help="JSON lines instead of the table")
    p.add_argument("--kernel-model", action="store_true",
                   help="add the live kernel's predicted time (pylaf.experiments.costmodel; cached in build/)")
    p.add_argument("--kernel-settings", action="store_true",
                   help="with --kernel-model: calibrate every mTHP order by writing sysfs knobs "
                        "(same as PYLAF_KERNEL_SETTINGS=1; restored afterwards)")
    p.add_argument("--recalibrate", action="store_true", help="ignore the cached kernel model")
    p.add_argument("--scale", metavar="SIZE",
                   help="instead of the sweep: fault SIZE (e.g. 64G) at the first --orders order "
                        "with touch_range(), unmap it, and report the time and the peak RSS of a "
                        "fresh process")
    p.set_defaults(func=cmd)
    return p
