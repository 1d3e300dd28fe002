"""Text and JSON output of the live check: one table per setting group
(:func:`format_group`), the ``TOTAL`` line, and the JSON of every result.
Cells show one value where the live kernel and the emulator agree and
``live≠emulator`` where they do not.  Tables come from :mod:`pylaf.render`."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from pylaf.live.check import GroupResult, ProgramCheck
from pylaf.live.sides import SideResult
from pylaf.render import format_table
from pylaf.sizes import format_size, parse_size

_HEADER = ["program", "faults", "anon_fault_alloc", "fallback", "declined", "RSS kB",
           "folios (last snapshot)", "status"]


def _add(h: dict[str, int], key: str, n: int) -> None:
    if n:
        h[key] = h.get(key, 0) + n


def histogram(side: SideResult) -> dict[str, int]:
    """Whole folios by size over all mappings at the last snapshot (``64Kp``:
    partial pieces; ``zero``/``hzero``: pages)."""
    if not side.snapshots:
        return {}
    last = list(side.snapshots.values())[-1]
    h: dict[str, int] = {}
    for view in last.mappings.values():
        s = view.summary
        for o, n in s.folios_by_order.items():
            _add(h, format_size(side.page_size << o), n)
        for o, n in s.partial_by_order.items():
            _add(h, format_size(side.page_size << o) + "p", n)
        _add(h, "zero", s.zero)
        _add(h, "hzero", s.hzero)
    return h


def _pair(live: Any, emulator: Any) -> str:
    return f"{live}" if live == emulator else f"{live}≠{emulator}"


def _counter_cell(live: SideResult, emu: SideResult, stat: str) -> str:
    kd, ed = live.counters.get(stat, {}), emu.counters.get(stat, {})
    sizes = sorted(set(kd) | set(ed))
    return " ".join(f"{format_size(kb * 1024)}:{_pair(kd.get(kb, 0), ed.get(kb, 0))}"
                    for kb in sizes) or "-"


def _hist_key(s: str) -> tuple[int, int]:
    if s in ("zero", "hzero"):
        return (1 << 40, 0 if s == "zero" else 1)
    return (parse_size(s.rstrip("p")), s.endswith("p"))


def _hist_cell(live: SideResult, emu: SideResult) -> str:
    kh, eh = histogram(live), histogram(emu)
    return " ".join(f"{s}×{_pair(kh.get(s, 0), eh.get(s, 0))}"
                    for s in sorted(set(kh) | set(eh), key=_hist_key)) or "-"


def _rss_cell(live: SideResult, emu: SideResult) -> str:
    if not live.snapshots:
        return "-"
    name = list(live.snapshots)[-1]
    es = emu.snapshots.get(name)
    return _pair(live.snapshots[name].rss_kb, es.rss_kb if es else None)


def _status(c: ProgramCheck) -> str:
    if c.ok:
        return "ok"
    if c.skipped:
        return "SKIP"
    return "GAUGE-NOISE?" if c.gauge_noise_only else "MISMATCH"


def _row(c: ProgramCheck) -> list[str]:
    live, emu = c.live, c.emulator
    if c.skipped and live is not None and not c.error:
        emu = live          # live numbers only: nothing to compare them with
    if c.error or live is None or emu is None:
        return [c.program, "-", "-", "-", "-", "-", "-", "ERROR"]
    return [c.program, _pair(live.faults, emu.faults),
            _counter_cell(live, emu, "anon_fault_alloc"),
            _counter_cell(live, emu, "anon_fault_fallback"),
            _counter_cell(live, emu, "anon_fault_declined"),
            _rss_cell(live, emu), _hist_cell(live, emu), _status(c)]


def _settings_line(s: Mapping[str, str]) -> str:
    sizes = " ".join(f"{k.split('/')[0].replace('hugepages-', '')}={v}" for k, v in s.items()
                     if k.startswith("hugepages-") and v != "never") or "all sizes never"
    return (f"   enabled={s.get('enabled')} defrag={s.get('defrag')} "
            f"use_zero_page={s.get('use_zero_page')} "
            f"anon_beside_full={s.get('anon_beside_full', 'n/a')}  {sizes}")


def _detail_lines(c: ProgramCheck, verbose: bool) -> list[str]:
    out = [f"   {c.program}: {c.error}"] if c.error else []
    out += [f"   {c.program}: SKIP: {c.skipped} (live side only)"] if c.skipped else []
    out += [f"   {c.program}: {m}" for m in c.mismatches]
    notes = c.notes if verbose or not c.ok else c.notes[-1:]
    out += [f"   {c.program}: note: {n}" for n in notes]
    return out


def _group_summary(checks: Sequence[ProgramCheck]) -> list[str]:
    bad = [c for c in checks if c.failed]
    skipped = [c for c in checks if c.skipped and not c.failed]
    n_ok = sum(c.ok for c in checks)
    out = [f"   {n_ok}/{len(checks) - len(skipped)} programs agree" +
           (f"; disagree: {', '.join(c.program for c in bad)}" if bad else "") +
           (f"; {len(skipped)} skipped ({_skip_reasons(skipped)})" if skipped else "")]
    noisy = [c.program for c in bad if c.gauge_noise_only]
    if noisy:
        out.append(f"   ({', '.join(noisy)}: only the system-wide nr_anon gauges still differ after "
                   f"every retry while faults, per-process folio layouts and all event counters "
                   f"agree: other processes were changing them; re-run to confirm)")
    return out


def format_group(gr: GroupResult, verbose: bool = False) -> str:
    """One setting group: its knobs, a row per program, every disagreement."""
    out = [f"== {gr.group.name}: {gr.group.description}"]
    if gr.skipped:
        out.append(f"   skipped: {gr.skipped}")
        return "\n".join(out)
    out.append(_settings_line(gr.settings))
    out.append(format_table([_row(c) for c in gr.checks], _HEADER))
    for c in gr.checks:
        out += _detail_lines(c, verbose)
    out += _group_summary(gr.checks)
    return "\n".join(out)


def _skip_reasons(checks: Sequence[ProgramCheck]) -> str:
    return ", ".join(sorted({c.skipped for c in checks if c.skipped}))


def summary_line(results: Sequence[GroupResult]) -> str:
    """``TOTAL: n/m program runs agree across k setting group(s)...``; skipped
    runs are counted apart, never as agreement or disagreement."""
    skips = [c for g in results for c in g.checks if c.skipped and not c.failed]
    tot = sum(len(g.checks) for g in results) - len(skips)
    ok = sum(c.ok for g in results for c in g.checks)
    skipped = [g.group.name for g in results if g.skipped]
    noisy = sum(c.gauge_noise_only for g in results for c in g.checks)
    s = f"TOTAL: {ok}/{tot} program runs agree across {len(results) - len(skipped)} setting group(s)"
    if noisy:
        s += f"; {noisy} disagree only on system-wide nr_anon gauges (noise suspected)"
    if skips:
        s += f"; {len(skips)} program runs skipped ({_skip_reasons(skips)})"
    if skipped:
        s += f"; skipped: {', '.join(skipped)}"
    return s


def side_as_dict(s: Optional[SideResult]) -> Optional[dict[str, Any]]:
    if s is None:
        return None
    return {"faults": s.faults, "op_faults": s.op_faults, "op_vmstat": s.op_vmstat,
            "counters": s.counters,
            "vmstat": s.vmstat,
            "snapshots": {n: dataclasses.asdict(v) for n, v in s.snapshots.items()}}


def check_as_dict(c: ProgramCheck) -> dict[str, Any]:
    return {"group": c.group, "program": c.program, "ok": c.ok, "mismatches": c.mismatches,
            "notes": c.notes, "attempts": c.attempts, "error": c.error, "skipped": c.skipped,
            "live": side_as_dict(c.live), "emulator": side_as_dict(c.emulator)}


def results_as_dict(results: Sequence[GroupResult]) -> dict[str, Any]:
    """Every result, JSON-ready (``--json``)."""
    return {"groups": [{"name": g.group.name, "description": g.group.description,
                        "settings": g.settings, "skipped": g.skipped,
                        "checks": [check_as_dict(c) for c in g.checks]} for g in results]}


__all__ = ["check_as_dict", "format_group", "histogram", "results_as_dict", "side_as_dict",
           "summary_line"]
