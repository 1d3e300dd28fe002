"""Regenerate the tables of bench/RESULTS.md from the raw outputs in bench/results/.

Every table in RESULTS.md sits between two markers::

    <!-- BEGIN generated: NAME (bench/make_results.py, do not edit) -->
    ...
    <!-- END generated: NAME -->

and is rewritten from the raw files; the prose around the markers is written
by hand.  RESULTS.md ("Raw outputs") gives the command that produced each
raw file.

    python3 bench/make_results.py                    rewrite bench/RESULTS.md
    python3 bench/make_results.py --check            exit 1 if it is out of date
    python3 bench/make_results.py --record-machine   print machine.json for this host

This script reads the raw files only (it does not import pylaf), so it
regenerates the same tables on any machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"
PAGE = 4096
MARKER = re.compile(
    r"(<!-- BEGIN generated: (?P<name>[\w-]+) \(bench/make_results.py, do not edit\) -->\n)"
    r".*?"
    r"(<!-- END generated: (?P=name) -->)", re.S)

Row = Sequence[Any]


# ------------------------------------------------------------ raw files
def load_jsonl(name: str) -> list[dict[str, Any]]:
    text = (RESULTS_DIR / name).read_text()
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def load_json(name: str) -> Any:
    return json.loads((RESULTS_DIR / name).read_text())


class Results:
    """The raw outputs, loaded once."""

    def __init__(self) -> None:
        self.machine: dict[str, Any] = load_json("machine.json")
        self.c = {"warm": load_jsonl("laf_bench_warm.jsonl"), "fresh": load_jsonl("laf_bench_fresh.jsonl")}
        self.pytest: dict[str, Any] = load_json("pytest_bench.json")
        self.pylaf = load_jsonl("pylaf_bench.jsonl")
        self.scale = load_jsonl("scale64G.jsonl")
        self.kernel: dict[str, Any] = load_json("costmodel.json")
        self.callgrind = (RESULTS_DIR / "callgrind.txt").read_text()
        self.replay: dict[str, Any] = load_json("replay_speed.json")

    def c_case(self, mode: str, order: int, pattern: str, teardown: bool = False) -> dict[str, Any]:
        for r in self.c[mode]:
            if (r["order"], r["pattern"], r["teardown"]) == (order, pattern, teardown):
                return r
        raise KeyError(f"laf_bench_{mode}.jsonl has no order {order} {pattern} teardown={teardown}")

    def bench(self, name: str) -> dict[str, Any]:
        """One pytest-benchmark case by test name, e.g. ``test_batch_touch[0]``."""
        for b in self.pytest["benchmarks"]:
            if b["name"] == name:
                return dict(b)
        raise KeyError(f"pytest_bench.json has no benchmark {name}")

    def bench_ns(self, name: str) -> float:
        """ns per fault (or per access) of a pytest-benchmark case: min over rounds."""
        b = self.bench(name)
        n = b["extra_info"].get("faults") or b["extra_info"]["accesses"]
        return float(b["stats"]["min"]) * 1e9 / int(n)

    def pylaf_order(self, order: int) -> dict[str, Any]:
        for r in self.pylaf:
            if r["order"] == order:
                return r
        raise KeyError(f"pylaf_bench.jsonl has no order {order}")

    def kernel_samples(self) -> list[dict[str, Any]]:
        return sorted(self.kernel["samples"], key=lambda s: s["order"])

    def instructions(self) -> dict[str, float]:
        """callgrind.txt: ``order N: X instructions per fault`` and ``hit: X ...``."""
        out = {}
        for m in re.finditer(r"^(order \d+|hit): ([\d.]+) instructions", self.callgrind, re.M):
            out[m.group(1)] = float(m.group(2))
        return out


# ------------------------------------------------------------ formatting
def folio(order: int) -> str:
    size = PAGE << order
    return f"{size >> 20}M" if size >= 1 << 20 else f"{size >> 10}K"


def num(x: float, digits: int = 1) -> str:
    return f"{x:,.{digits}f}"


def table(head: Sequence[str], rows: Iterable[Row]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def kernel_ns_per_fault(sample: Mapping[str, Any]) -> float:
    return float(sample["ns"]) / int(sample["faults"])


def kernel_predicted(coef: Mapping[str, float], sample: Mapping[str, Any]) -> float:
    """The cost model's per-fault prediction for a calibration sample
    (pylaf.experiments.costmodel.CostModel.residuals(), restated on the raw file)."""
    f = max(sample["faults"], 1)
    features = {"fault": 1.0, "page": sample["pages"] / f, "pte": sample["ptes"] / f}
    return float(sum(coef.get(k, 0.0) * v for k, v in features.items()))


# ------------------------------------------------------------ tables
MACHINE_LABELS = {
    "cpu": "CPU (model name in /proc/cpuinfo)", "nproc": "nproc", "kernel": "kernel",
    "thp": "THP (transparent_hugepage/enabled)", "compiler": "compiler", "python": "Python",
    "packages": "packages", "load_average": "load average (1 min) when recorded", "date": "date",
}


def t_machine(r: Results) -> str:
    m = r.machine
    return "\n".join(f"* {label}: {m[k]:.2f}" if isinstance(m[k], float) else f"* {label}: {m[k]}"
                     for k, label in MACHINE_LABELS.items() if k in m)


def t_summary(r: Results) -> str:
    w0, f0 = r.c_case("warm", 0, "seq"), r.c_case("fresh", 0, "seq")
    w4, f4 = r.c_case("warm", 4, "seq"), r.c_case("fresh", 4, "seq")
    hit = r.c_case("warm", 0, "hit")
    p0, p4 = r.pylaf_order(0), r.pylaf_order(4)
    ratio0 = p0["ns_per_fault"] / f0["ns_per_fault_min"]
    ratio4 = p4["ns_per_fault"] / f4["ns_per_fault_min"]
    totals = [s["total_s"] for s in r.scale]
    rss = max(s["peak_rss_per_page"] for s in r.scale)
    ref = {o: r.bench_ns(f"test_reference_model[{o}]") / r.bench_ns(f"test_batch_touch[{o}]") for o in (0, 4)}
    kern = {s["order"]: kernel_ns_per_fault(s) / 1000 for s in r.kernel_samples()}

    def status(ok: bool) -> str:
        return "met" if ok else "missed"

    rows = [
        ("C core, order-0 sequential write faults, 1 GiB: ≤ 20 ns/fault",
         f"{num(w0['ns_per_fault_min'])} ns warm, {num(f0['ns_per_fault_min'])} ns fresh",
         status(w0["ns_per_fault_min"] <= 20)),
        ("C core, order-4 (64K) faults: ≤ 30 ns/fault",
         f"{num(w4['ns_per_fault_min'])} ns warm ({num(w4['ns_per_page_min'])} ns/4K), "
         f"{num(f4['ns_per_fault_min'])} ns fresh", status(w4["ns_per_fault_min"] <= 30)),
        ("Python batch path (`pylaf bench`, 1 GiB, fresh) within 1.25× of the C microbench (fresh)",
         f"order 0: {num(p0['ns_per_fault'])} vs {num(f0['ns_per_fault_min'])} ns ({ratio0:.2f}×; C warm "
         f"{num(w0['ns_per_fault_min'])}); order 4: {num(p4['ns_per_fault'])} vs {num(f4['ns_per_fault_min'])} ns "
         f"({ratio4:.2f}×; C warm {num(w4['ns_per_fault_min'])})",
         python_vs_c_status(ratio0, ratio4)),
        ("hit (access to a present PTE) ≤ 3 ns",
         f"C {hit['ns_per_access_min']:.2f} ns; Python `touch` {r.bench_ns('test_hit'):.2f} ns",
         status(max(hit["ns_per_access_min"], r.bench_ns("test_hit")) <= 3)),
        ("64 GiB (16.7M pages) at order 0, faulted and torn down from Python < 2 s",
         f"{min(totals):.2f}–{max(totals):.2f} s",
         f"{status(max(totals) < 2)} ({sum(t < 2 for t in totals)} of {len(totals)} runs under 2 s)"),
        ("peak RSS ≤ 32 B per resident 4K page", f"{rss:.2f} B/page", status(rss <= 32)),
        ("speed-up vs the pure-Python reference (`pylaf.reference`)",
         f"order 0: {ref[0]:.0f}×; order 4: {ref[4]:.0f}×", "reported"),
        ("live kernel (fault + munmap of what it mapped)",
         f"order 0 {kern[0]:.2f} µs, 64K {kern[4]:.2f} µs, 2M {kern[9]:.0f} µs per fault"
         if 4 in kern else f"order 0 {kern[0]:.2f} µs, 2M {kern[9]:.0f} µs per fault", "reported"),
    ]
    return table(["target", "measured", "status"], rows)


def python_vs_c_status(*ratios: float) -> str:
    """Python's batch path is the same C loop plus one cffi call per batch, so a
    ratio well below 1 means the C run was disturbed, not that Python is faster."""
    if min(ratios) < 0.8:
        return "inconclusive (the C fresh run was slowed by host load; see section 1)"
    return "met" if max(ratios) <= 1.25 else "missed"


def t_c_key(r: Results) -> str:
    rows = []
    for order in (0, 4, 9):
        for teardown in (False, True):
            w, f = r.c_case("warm", order, "seq", teardown), r.c_case("fresh", order, "seq", teardown)
            label = f"order {order} seq{'+munmap' if teardown else ''}, per fault"
            rows.append((label, f"{num(w['ns_per_fault_min'])} (median {num(w['ns_per_fault_median'])})",
                         f"{num(f['ns_per_fault_min'])} (median {num(f['ns_per_fault_median'])})"))
    w, f = r.c_case("warm", 0, "hit"), r.c_case("fresh", 0, "hit")
    rows.append(("hit, per access", f"{w['ns_per_access_min']:.2f}", f"{f['ns_per_access_min']:.2f}"))
    return table(["case (1 GiB, min of runs)", "warm ns", "fresh ns"], rows)


def c_sweep(r: Results, mode: str) -> str:
    orders = sorted({c["order"] for c in r.c[mode] if c["pattern"] == "seq"})
    rows = []
    for o in orders:
        seq, seq_t = r.c_case(mode, o, "seq"), r.c_case(mode, o, "seq", True)
        rows.append((o, folio(o), num(seq["ns_per_fault_min"]), f"{seq['ns_per_page_min']:.2f}",
                     num(seq_t["ns_per_fault_min"]), num(r.c_case(mode, o, "random")["ns_per_fault_min"]),
                     num(r.c_case(mode, o, "strided")["ns_per_fault_min"]),
                     num(r.c_case(mode, o, "range")["ns_per_fault_min"]),
                     f"{r.c_case(mode, o, 'dense')['ns_per_access_min']:.2f}",
                     f"{seq['per_page_ops_per_fault']:.0f}", f"{seq['per_folio_ops_per_fault']:.0f}"))
    return table(["order", "folio", "seq ns/fault", "ns/4K", "seq+munmap ns/fault", "random ns/fault",
                  "strided ns/fault", "range ns/fault", "dense ns/access", "page-ops/fault",
                  "folio-ops/fault"], rows)


def t_python(r: Results) -> str:
    rows: list[Row] = []
    for order in (0, 4):
        touch = r.bench_ns(f"test_batch_touch[{order}]")
        ref = r.bench_ns(f"test_reference_model[{order}]")
        rows += [(f"api-order{order} (64 MiB)", "`fault()` one call per fault",
                  num(r.bench_ns(f"test_single_fault_calls[{order}]"), 0)),
                 ("", "`touch(array)`", num(touch)),
                 ("", "`touch_range()`", num(r.bench_ns(f"test_touch_range[{order}]"))),
                 ("", "pure-Python reference `touch_range()` (16 MiB)", f"{num(ref, 0)} ({ref / touch:.0f}× `touch`)")]
    for pages in ("1M", "16M"):
        for pattern in ("seq", "random"):
            ns = [r.bench_ns(f"test_scale[{o}-{pages}pages-{pattern}]") for o in (0, 4)]
            rows.append((f"scale {pages} pages ({'4' if pages == '1M' else '64'} GiB), {pattern}",
                         "order 0 / order 4", f"{num(ns[0])} / {num(ns[1])}"))
    rows.append(("hit", "`touch` of 1M present pages", f"{r.bench_ns('test_hit'):.2f}"))
    return table(["group", "case", "ns per fault (or per access), min of rounds"], rows)


def t_scale(r: Results) -> str:
    rows = [(i, f"{s['create_s']:.3f} s", f"{s['fault_s']:.3f} s ({num(s['ns_per_fault'])} ns/fault)",
             f"{s['munmap_s']:.3f} s", f"{s['close_s']:.3f} s", f"{s['total_s']:.3f} s",
             f"{s['peak_rss'] / 2**20:.1f} MiB", f"{s['peak_rss_per_page']:.2f} B",
             f"{s['emulator_rss_per_page']:.2f} B", "yes" if s["ok"] else "**NO**")
            for i, s in enumerate(r.scale, 1)]
    return table(["run", "create", f"faults ({r.scale[0]['faults']:,})", "munmap", "close", "total",
                  "peak RSS", "per 4K page", "above interpreter", "counts ok"], rows)


def t_pylaf_bench(r: Results) -> str:
    rows = []
    for p in sorted(r.pylaf, key=lambda p: p["order"]):
        kern = p.get("kernel_ns_per_fault")
        rows.append((p["order"], p["folio"], f"{p['faults']:,}", num(p["ns_per_fault"]),
                     f"{p['ns_per_page']:.2f}", num(p["ns_per_fault_teardown"]),
                     f"{p['speedup_vs_order0']:.2f}×",
                     "-" if kern is None else f"{kern / 1000:.2f}",
                     "-" if kern is None else f"{p['kernel_speedup']:.0f}×"))
    return table(["order", "folio", "faults", "ns/fault", "ns/4K", "+munmap ns/fault", "speed-up vs 4K",
                  "kernel µs/fault (model)", "emulator vs kernel"], rows)


def t_kernel(r: Results) -> str:
    coef = r.kernel["coef"]
    rows = []
    for s in r.kernel_samples():
        ns = kernel_ns_per_fault(s)
        fit = (kernel_predicted(coef, s) - ns) / ns
        runs = [t / s["faults"] for t in s.get("ns_runs", ())]
        spread = f"{min(runs) / 1000:.2f}–{max(runs) / 1000:.2f}" if runs else "-"
        rows.append((s["order"], folio(s["order"]), f"{s['size'] >> 20} MiB", f"{ns / 1000:.2f}",
                     spread, num(float(s["ns"]) / s["pages"], 0), f"{fit:+.1%}"))
    terms = " + ".join(f"{coef[k]:.0f} × {k}s" for k in ("fault", "page", "pte") if k in coef)
    model = f"\n\nModel (least squares weighted by 1/time): **kernel ns = {terms}** (pages zeroed, PTEs written)."
    return table(["order", "folio", "size", "kernel µs/fault", "runs µs/fault", "ns per 4K page",
                  "model fit"], rows) + model


def t_callgrind(r: Results) -> str:
    ins = r.instructions()
    rows = [(f"order-{k.split()[1]} fault (`laf_touch` inclusive, per fault)", num(v))
            for k, v in ins.items() if k.startswith("order")]
    if "hit" in ins:
        rows.append(("hit, per access", num(ins["hit"])))
    return table(["path (256 MiB)", "instructions"], rows)


def t_replay_speed(r: Results) -> str:
    """bench/replay_speed.py: medians, events/s = recorded events / median."""
    def cell(t: Mapping[str, Any], k: str) -> str:
        return f"{t['median_ms'][k]:.3f} ms = {t['events_per_s'][k] / 1e6:.2f} M ev/s"
    rows = [(t["trace"], f"{t['events']:,}", f"{t['records']:,}", cell(t, "python"),
             f"**{cell(t, 'compiled')}**", cell(t, "run_ops"), f"{t['speedup']:.0f}x",
             str(t["identical"]).lower()) for t in r.replay["traces"]]
    return table(["trace", "events", "records", "Python engine (median)", "compiled (median)",
                  "run_ops alone", "speed-up", "identical"], rows)


TABLES: dict[str, Callable[[Results], str]] = {
    "machine": t_machine,
    "summary": t_summary,
    "c-key": t_c_key,
    "c-sweep-warm": lambda r: c_sweep(r, "warm"),
    "c-sweep-fresh": lambda r: c_sweep(r, "fresh"),
    "python": t_python,
    "scale": t_scale,
    "pylaf-bench": t_pylaf_bench,
    "kernel": t_kernel,
    "callgrind": t_callgrind,
    "replay-speed": t_replay_speed,
}


def render(text: str, results: Results) -> str:
    """RESULTS.md with every generated block rewritten; unknown or missing blocks are errors."""
    seen: list[str] = []

    def sub(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in TABLES:
            raise SystemExit(f"make_results: RESULTS.md has an unknown generated block {name!r}")
        seen.append(name)
        return m.group(1) + TABLES[name](results) + "\n" + m.group(3)

    out = MARKER.sub(sub, text)
    missing = sorted(set(TABLES) - set(seen))
    if missing:
        raise SystemExit(f"make_results: RESULTS.md lacks the generated blocks {missing}")
    return out


# ------------------------------------------------------------ machine
def _first_line(cmd: Sequence[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.splitlines()[0]
    except (OSError, IndexError):
        return "unknown"


def record_machine() -> dict[str, Any]:
    """The facts RESULTS.md reports about the host (no paths, no host name)."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    packages = []
    for mod in ("numpy", "cffi", "pytest_benchmark"):
        try:
            packages.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            continue
    return {"cpu": cpu, "nproc": os.cpu_count(), "kernel": platform.release(),
            "thp": f"enabled={thp.read_text().strip()}" if thp.exists() else "unknown",
            "compiler": _first_line(["cc", "--version"]), "python": platform.python_version(),
            "packages": ", ".join(packages), "load_average": os.getloadavg()[0],
            "date": _first_line(["date", "-u", "+%Y-%m-%d"])}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="exit 1 if RESULTS.md is not up to date")
    p.add_argument("--record-machine", action="store_true", help="print machine.json for this host")
    args = p.parse_args(argv)
    if args.record_machine:
        print(json.dumps(record_machine(), indent=1))
        return 0
    text = RESULTS_MD.read_text()
    new = render(text, Results())
    if args.check:
        if new != text:
            print("bench/RESULTS.md is out of date: run python3 bench/make_results.py", file=sys.stderr)
            return 1
        return 0
    RESULTS_MD.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
