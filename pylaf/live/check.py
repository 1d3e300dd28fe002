"""Validate the emulator against the live kernel, program by program.

:func:`check_program` runs one :class:`~pylaf.live.programs.CheckProgram`
twice: on the **live kernel** through :func:`pylaf.live.kprog.run_kprog`, and
in the **emulator** (:func:`pylaf.live.sides.emulator_side`, VMAs at the live
kernel's addresses) with the host's policy (:func:`pylaf.live.sysfs.host_policy`,
read while the settings under test are applied).  It compares, per program:
minor faults per touch op (``ru_minflt`` against ``stats.min_flt``), per-size
``anon_fault_alloc`` / ``anon_fault_fallback`` / ``anon_fault_fallback_charge``
/ ``anon_fault_declined`` / ``nr_anon`` / ``split_deferred`` /
``nr_anon_partially_mapped``, the PMD vmstat counters, the RSS of the test
mappings, and at every snapshot the folio layout of every mapping and the VMAs.

Kernel counters are system-wide.  A disagreement is re-run (``retries``).
A live run during which a PMD range was collapsed
(:func:`pylaf.live.sysfs.read_collapse_counters` moved between just before
laf_kprog started and just after it exited: khugepaged can collapse a
program's MADV_HUGEPAGE range at any moment, also between two ops, where no
op's counter window sees it) is discarded and run again before it is
compared (docs/kernel-findings.md, the khugepaged entry).  Whatever remains
is reported, never hidden.

:func:`run_group` applies a :class:`~pylaf.live.programs.SettingGroup` with
:func:`pylaf.live.sysfs.thp_settings`, which restores every knob on every exit
path.
"""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional

from pylaf.address_space import AddressSpace
from pylaf.layout import format_labelled
from pylaf.live.kprog import HelperUnavailable, KprogResult, build_kprog, run_kprog
from pylaf.live.programs import PROGRAMS, PROGRAMS_BY_NAME, CheckProgram, SettingGroup
from pylaf.live.sides import (
    FORK_VMSTAT_NAMES,
    STAT_NAMES,
    VMSTAT_NAMES,
    EmulatorLacks,
    MmFactory,
    SideResult,
    Unsupported,
    combine_attempts,
    emulator_side,
    live_side,
)
from pylaf.live.sysfs import (
    THP_DIR,
    host_policy,
    read_collapse_counters,
    read_thp_settings,
    thp_lock,
    thp_settings,
)
from pylaf.policy import Policy

KPAGEFLAGS = "/proc/kpageflags"

#: what a failed laf_kprog run raises (a missing capability is caught before
#: the suite starts, by :func:`live_check_unavailable`)
_LIVE_RUN_ERRORS = (RuntimeError, OSError, subprocess.SubprocessError, ValueError)


@dataclass
class ProgramCheck:
    """One program under one setting group: both sides and every disagreement."""

    group: str
    program: str
    live: Optional[SideResult]
    emulator: Optional[SideResult]
    mismatches: list[str]
    notes: list[str]
    attempts: int = 1
    error: Optional[str] = None
    #: why the emulator side did not run (e.g. "emulator has no fork yet"):
    #: neither agreement nor disagreement; the live side is still reported
    skipped: Optional[str] = None

    @property
    def ok(self) -> bool:
        """Both sides ran and agree."""
        return self.error is None and not self.mismatches and self.skipped is None

    @property
    def failed(self) -> bool:
        """An error or a disagreement (a skip is neither)."""
        return self.error is not None or bool(self.mismatches)

    @property
    def gauge_noise_only(self) -> bool:
        """Only the system-wide gauges (nr_anon, nr_anon_partially_mapped)
        still disagree; faults, layouts, RSS and every event counter agree."""
        return bool(self.mismatches) and self.error is None and all(
            re.search(r"kB (nr_anon|nr_anon_partially_mapped): ", m) for m in self.mismatches)


# --------------------------------------------------------------------------
# comparison


def _fmt_vmas(v: Sequence[tuple[int, int]]) -> str:
    return " ".join(f"{s:#x}-{e:#x}" for s, e in v)


def _compare_ops(ops: Sequence[str], k: SideResult, e: SideResult) -> list[str]:
    out: list[str] = []
    for i, (kf, ef) in enumerate(zip(k.op_faults, e.op_faults, strict=True)):
        if kf is not None and kf != ef:
            out.append(f"op {i} `{ops[i]}`: faults kernel={kf} emulator={ef}")
    for i, (ks, es) in enumerate(zip(k.op_signal, e.op_signal, strict=True)):
        if bool(ks) != bool(es):
            out.append(f"op {i} `{ops[i]}`: signal kernel={ks} emulator={es}")
    for i, (kerr, eerr) in enumerate(zip(k.op_errno, e.op_errno, strict=True)):
        if kerr != eerr:
            out.append(f"op {i} `{ops[i]}`: errno kernel={kerr} emulator={eerr}")
    for i, (ka, ea) in enumerate(zip(k.op_addr, e.op_addr, strict=False)):
        if ka != ea:
            out.append(f"op {i} `{ops[i]}`: address kernel={ka and hex(ka)} emulator={ea and hex(ea)}")
    return out


def _compare_counters(k: SideResult, e: SideResult, forks: bool = False) -> list[str]:
    out: list[str] = []
    for n in STAT_NAMES:
        kd, ed = k.counters.get(n, {}), e.counters.get(n, {})
        for kb in sorted(set(kd) | set(ed)):
            if kd.get(kb, 0) != ed.get(kb, 0):
                out.append(f"{kb}kB {n}: kernel={kd.get(kb, 0)} emulator={ed.get(kb, 0)}")
    for n in VMSTAT_NAMES + (FORK_VMSTAT_NAMES if forks else ()):
        if k.vmstat.get(n, 0) != e.vmstat.get(n, 0):
            out.append(f"vmstat {n}: kernel={k.vmstat.get(n, 0)} emulator={e.vmstat.get(n, 0)}")
    return out


def _compare_snapshot(sname: str, k: SideResult, e: SideResult) -> list[str]:
    ks, es = k.snapshots[sname], e.snapshots.get(sname)
    if es is None:
        return [f"snapshot {sname}: missing on the emulator side"]
    out: list[str] = []
    if ks.rss_kb != es.rss_kb:
        out.append(f"snapshot {sname}: RSS kernel={ks.rss_kb}kB emulator={es.rss_kb}kB")
    for mid, kl in ks.mappings.items():
        el = es.mappings.get(mid)
        if el is None:
            out.append(f"snapshot {sname} mapping {mid}: missing on the emulator side")
        elif kl.runs != el.runs:
            out.append(f"snapshot {sname} mapping {mid}: layout kernel={format_labelled(kl.runs)} "
                       f"emulator={format_labelled(el.runs)}")
    kv, ev = k.vmas.get(sname), e.vmas.get(sname)
    if kv is not None and ev is not None and kv != ev:
        out.append(f"snapshot {sname}: VMAs kernel={_fmt_vmas(kv)} emulator={_fmt_vmas(ev)}")
    return out


def compare_sides(program: CheckProgram, live: SideResult, emulator: SideResult) -> list[str]:
    """Every disagreement, as human-readable lines (``kernel=`` is the live kernel)."""
    out = _compare_ops(program.ops(), live, emulator) + _compare_counters(live, emulator,
                                                                          program.forks)
    for sname in live.snapshots:
        out += _compare_snapshot(sname, live, emulator)
    return out


def collapse_increase(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """Collapse counters (:func:`pylaf.live.sysfs.read_collapse_counters`) that
    moved between *before* and *after*: non-empty means khugepaged (or
    MADV_COLLAPSE) collapsed some PMD range in between."""
    return {n: v - before.get(n, 0) for n, v in after.items() if v != before.get(n, 0)}


def _is_exact_part(m: str) -> bool:
    """Mismatch lines about per-process facts (not system-wide counters)."""
    return m.startswith(("op ", "snapshot "))


# --------------------------------------------------------------------------
# one program


@dataclass
class _Attempts:
    """The runs of one program so far (see :func:`check_program`)."""

    program: CheckProgram
    group: str
    policy: Policy
    mm_factory: MmFactory = AddressSpace
    emulator: Optional[SideResult] = None
    runs: list[SideResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    first_noise: str = ""

    def done(self, live: Optional[SideResult], attempt: int, mismatches: Sequence[str] = (),
             error: Optional[str] = None, skipped: Optional[str] = None) -> ProgramCheck:
        return ProgramCheck(self.group, self.program.name, live, self.emulator, list(mismatches),
                            self.notes, attempt, error, skipped)

    def discard_collapsed(self, attempt: int, increase: Mapping[str, int]) -> None:
        """Live run *attempt* saw a collapse (*increase*): it is not compared."""
        moved = ", ".join(f"{n} +{v}" for n, v in sorted(increase.items()))
        self.notes.append(f"run {attempt} discarded: a PMD range was collapsed while it ran "
                          f"({moved}; khugepaged)")

    def run(self, attempt: int, kres: KprogResult) -> Optional[ProgramCheck]:
        """Take one live run into account; the result if this settles it."""
        ls = live_side(kres)
        first = not self.runs
        if self.emulator is None:
            try:
                self.emulator = emulator_side(self.program, kres, self.policy,
                                              mm_factory=self.mm_factory)
            except Unsupported as exc:
                return self.done(ls, attempt, error=f"emulator does not model: {exc}")
            except EmulatorLacks as exc:
                return self.done(ls, attempt, skipped=str(exc))
        if not first and not self.same_as_first(ls, kres):
            self.notes.append(f"run {attempt} discarded: its faults or layout differ from the "
                              f"first compared run")
            return None
        self.runs.append(ls)
        combined = ls if first else combine_attempts(self.runs)
        self.mismatches = compare_sides(self.program, combined, self.emulator)
        if first and any(_is_exact_part(m) for m in self.mismatches):
            # per-process facts disagree: not noise, no point in retrying
            return self.done(ls, attempt, self.mismatches)
        if not self.mismatches:
            if not first:
                self.notes.append(f"counters agree after combining {len(self.runs)} runs (per-op "
                                  f"minimum of event counters; the first run saw system-wide "
                                  f"noise: {self.first_noise})")
            return self.done(combined, attempt)
        if first:
            m = self.mismatches
            self.first_noise = "; ".join(m[:3]) + (" ..." if len(m) > 3 else "")
        return None

    def same_as_first(self, ls: SideResult, kres: KprogResult) -> bool:
        """A later run may be combined with the first when the emulator, run
        at *this* run's addresses, agrees with it on every per-process fact
        and gives the same counters as at the first run's: mremap without
        ``fixed=`` goes where the kernel's get_unmapped_area() put it, which
        moves between runs, so op addresses are compared with this run's own
        emulator side, not with the first run's."""
        assert self.emulator is not None
        emu = emulator_side(self.program, kres, self.policy, mm_factory=self.mm_factory)
        if emu.counters != self.emulator.counters or emu.vmstat != self.emulator.vmstat:
            return False
        return not [m for m in compare_sides(self.program, ls, emu)
                    if _is_exact_part(m) and "VMAs" not in m]

    def give_up(self, attempts: int) -> ProgramCheck:
        if not self.runs:
            return self.done(None, attempts, error=f"a PMD range was collapsed during every one "
                                                   f"of {attempts} live runs: nothing to compare")
        self.notes.append(f"still disagreeing after {len(self.runs)} compared runs")
        return self.done(combine_attempts(self.runs), attempts, self.mismatches)


def check_program(program: CheckProgram, group: str = "current", retries: int = 10,
                  policy: Optional[Policy] = None,
                  runner: Callable[[str], KprogResult] = run_kprog,
                  collapse_counters: Callable[[], Mapping[str, int]] = read_collapse_counters,
                  mm_factory: MmFactory = AddressSpace) -> ProgramCheck:
    """Run *program* on the live kernel and in the emulator; compare.

    A live run during which *collapse_counters* moved (khugepaged collapsed a
    PMD range, maybe this program's) is discarded before any comparison and
    the program is run again.  *mm_factory* makes the emulated address space
    (tests pass a fake).  Faults, layouts, RSS and VMAs are per-process
    and must agree on the first compared run.  Kernel THP counters are
    system-wide: when they disagree the program is run again (up to *retries*
    more runs in all) and the per-op estimate of
    :func:`pylaf.live.sides.combine_attempts` is compared instead; the notes
    say so.
    """
    program = program.chunked()
    state = _Attempts(program, group, policy or host_policy(), mm_factory)
    text = "\n".join(program.lines())
    for attempt in range(1, retries + 2):
        before = collapse_counters()
        try:
            kres = runner(text)
        except _LIVE_RUN_ERRORS as exc:
            return state.done(state.runs[0] if state.runs else None, attempt,
                              error=f"live kernel run failed: {exc}")
        increase = collapse_increase(before, collapse_counters())
        if increase:
            state.discard_collapsed(attempt, increase)
        else:
            result = state.run(attempt, kres)
            if result is not None:
                return result
        # noise from other processes comes in bursts: back off
        time.sleep(min(2.0, 0.1 * 2 ** (attempt - 1)))
    return state.give_up(retries + 1)


# --------------------------------------------------------------------------
# a setting group


@dataclass
class GroupResult:
    group: SettingGroup
    settings: dict[str, str]
    checks: list[ProgramCheck]
    skipped: Optional[str] = None

    @property
    def ok(self) -> bool:
        """No program disagrees or failed (skips allowed)."""
        return not any(c.failed for c in self.checks)


def run_group(group: SettingGroup, programs: Optional[Iterable[str]] = None,
              retries: int = 10, progress: Optional[Callable[[str], None]] = None,
              mm_factory: MmFactory = AddressSpace) -> GroupResult:
    """Run the suite (or *programs*) under *group*'s settings (restored afterwards);
    *mm_factory*: the emulator side's address space (e.g. :class:`pylaf.reference.Reference`).

    The whole run holds :func:`thp_lock` (re-entrant), and the host's settings
    are read under it: another pylaf process applying a group of its own
    cannot be mistaken for this machine's settings, nor change them mid-run."""
    with thp_lock():
        current = read_thp_settings()
        why = group.unavailable(current)
        if why:
            return GroupResult(group, {}, [], skipped=why)
        names = list(programs) if programs is not None else [p.name for p in PROGRAMS]
        if group.programs is not None:
            names = [n for n in names if n in group.programs]
        ctx = (thp_settings(**group.thp_settings_kwargs(current)) if group.settings is not None
               else contextlib.nullcontext())
        checks = []
        with ctx:
            settings = read_thp_settings().sysfs_values()
            policy = host_policy()
            for n in names:
                if progress:
                    progress(f"{group.name}: {n}")
                checks.append(check_program(PROGRAMS_BY_NAME[n], group.name, retries, policy,
                                            mm_factory=mm_factory))
    return GroupResult(group, settings, checks)


def live_check_unavailable() -> Optional[str]:
    """None if the live check can run here, else the missing capability, in one line."""
    if os.geteuid() != 0:
        return "needs root (reads /proc/kpageflags, writes sysfs)"
    if not os.access(KPAGEFLAGS, os.R_OK):
        return f"{KPAGEFLAGS} is not readable"
    if not THP_DIR.is_dir():
        return f"{THP_DIR} missing (kernel without THP)"
    try:
        build_kprog()
    except HelperUnavailable as exc:
        return _one_line(str(exc))
    return None


def _one_line(message: str) -> str:
    """The first line of *message* and, for a compiler's output, its first error."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    errors = [ln for ln in lines[1:] if "error" in ln]
    return " ".join(lines[:1] + errors[:1])


__all__ = ["GroupResult", "ProgramCheck", "check_program", "collapse_increase", "compare_sides",
           "live_check_unavailable", "run_group"]
