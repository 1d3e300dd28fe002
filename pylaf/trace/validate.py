"""``pylaf replay --validate-live``: a trace's prediction against the same
command run on the live kernel.

For each mTHP setting, :func:`validate_live` replays the trace (recorded at
4K with mTHP off) under the policy the setting gives, then applies the
setting through :func:`pylaf.live.sysfs.thp_settings` (restored afterwards),
records the command again ``live_runs`` times and measures each run's
faults with the same classification, plus ``getrusage`` minor faults once.

Two questions are kept apart, because a program need not do the same thing
twice:

* **prediction vs live**: the prediction against the median of the live
  runs, with the runs' range.  A multi-threaded program (a JIT's background
  compiler and GC threads, glibc arenas raced by threads) can differ between
  runs by more than the tolerance; then a prediction inside the live range
  is "within the live spread", not a disagreement.
* **model check**: each live run's own recording replayed under the same
  setting.  The faults a run took at this setting are in its trace, so a
  faithful emulator gives back exactly the run's count whatever the program
  did.  A difference here is the emulator's (or two threads faulting on one
  folio at the same moment: both take the fault in the kernel, where a
  trace replays them one after the other).

Needs root.
"""
from __future__ import annotations

__all__ = ["TOLERANCE", "LiveRun", "LiveValidation", "parse_setting", "validate_live"]

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, TextIO, Union

from pylaf.live.kprog import build_helper
from pylaf.live.sysfs import host_policy, thp_settings
from pylaf.policy import Policy, parse_thp_anon
from pylaf.sizes import parse_size
from pylaf.trace.format import Trace, TraceError
from pylaf.trace.record import record
from pylaf.trace.replay import replay

#: a prediction agrees with the live kernel when it is within this fraction of the live median
TOLERANCE = 0.01
#: most live runs per setting (each is a full run of the traced command)
MAX_LIVE_RUNS = 100


@dataclass
class LiveRun:
    """One live run of the command at a setting."""

    anon: int
    total: int
    file: int
    #: this run's own recording replayed under the setting's policy
    replayed_anon: int

    @property
    def model_error(self) -> int:
        """Replay of this run's trace minus its live count (0: the emulator reproduces it)."""
        return self.replayed_anon - self.anon


@dataclass
class LiveValidation:
    """Prediction from a 4K trace against the same command run live."""

    setting: str
    policy: str
    predicted_anon: int
    predicted_total: int
    recorded_file: int
    runs: list[LiveRun]
    live_rusage_minflt: Optional[int] = None
    baseline_rusage_minflt: Optional[int] = None
    predicted_folios: dict[str, int] = field(default_factory=dict)

    @property
    def live_anon(self) -> int:
        """Median (lower) of the live runs' anonymous faults."""
        return int(statistics.median_low(r.anon for r in self.runs))

    @property
    def live_total(self) -> int:
        return int(statistics.median_low(r.total for r in self.runs))

    @property
    def live_file(self) -> int:
        return int(statistics.median_low(r.file for r in self.runs))

    @property
    def live_min(self) -> int:
        return min(r.anon for r in self.runs)

    @property
    def live_max(self) -> int:
        return max(r.anon for r in self.runs)

    @property
    def anon_error(self) -> int:
        return self.predicted_anon - self.live_anon

    @property
    def anon_error_pct(self) -> float:
        return 100.0 * self.anon_error / max(self.live_anon, 1)

    @property
    def total_error(self) -> int:
        return self.predicted_total - self.live_total

    @property
    def live_spread_pct(self) -> float:
        """(max - min) of the live runs over their median, in percent."""
        return 100.0 * (self.live_max - self.live_min) / max(self.live_anon, 1)

    @property
    def model_exact(self) -> bool:
        return all(r.model_error == 0 for r in self.runs)

    @property
    def verdict(self) -> str:
        """``agrees`` (within :data:`TOLERANCE` of the live median),
        ``within live spread`` (outside it, but inside the live runs'
        range), or ``differs``."""
        if abs(self.anon_error) <= TOLERANCE * self.live_anon:
            return "agrees"
        if self.live_min <= self.predicted_anon <= self.live_max:
            return "within live spread"
        return "differs"

    def as_dict(self) -> dict[str, Any]:
        """Fields and derived figures, for JSON."""
        d = asdict(self)
        for k in ("live_anon", "live_total", "live_file", "live_min", "live_max", "anon_error",
                  "anon_error_pct", "total_error", "live_spread_pct", "model_exact", "verdict"):
            d[k] = getattr(self, k)
        for r, rd in zip(self.runs, d["runs"], strict=True):
            rd["model_error"] = r.model_error
        return d


def parse_setting(spec: str) -> dict[str, str]:
    """``"64K"`` / ``"16K-64K"`` / ``"16K,64K:always;2M:never"`` -> sysfs sizes
    (``{"64kB": "always"}``) for :func:`pylaf.live.sysfs.thp_settings`.

    >>> parse_setting("16K-64K")
    {'16kB': 'always', '32kB': 'always', '64kB': 'always'}
    """
    text = spec if ":" in spec else f"{spec}:always"
    return {f"{parse_size(k) // 1024}kB": v for k, v in parse_thp_anon(text).items()}


def _rusage_run(command: Sequence[str], cwd: Optional[str], no_aslr: bool) -> Optional[int]:
    exe = build_helper("laf_tracee")
    fd, stats = tempfile.mkstemp(prefix="pylaf-rusage-")
    os.close(fd)
    try:
        subprocess.run([str(exe)] + (["-R"] if no_aslr else []) + ["-n", "-s", stats, "--"] +
                       list(command), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(stats) as f:
            d = json.load(f)
        return int(d["minflt"]) + int(d["majflt"])
    except (OSError, ValueError, KeyError):
        return None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stats)


def _record_live(cmd: list[str], cwd: Optional[str], no_aslr: bool) -> Trace:
    """Record *cmd* again (in *cwd*) under the settings now in force."""
    tmp = Path(tempfile.mkdtemp(prefix="pylaf-validate-"))
    old_cwd = os.getcwd()
    try:
        if cwd:
            os.chdir(cwd)
        return record(cmd, tmp / "live.laftrace", no_aslr=no_aslr, stdout=subprocess.DEVNULL)
    finally:
        os.chdir(old_cwd)
        shutil.rmtree(tmp, ignore_errors=True)


def _live_run(cmd: list[str], cwd: Optional[str], no_aslr: bool, pol: Policy,
              ram: Union[int, str]) -> LiveRun:
    live = _record_live(cmd, cwd, no_aslr)
    lc = live.fault_counts()
    return LiveRun(anon=lc["anon"], total=lc["total"], file=lc["file"],
                   replayed_anon=int(replay(live, pol, ram=ram).faults))


def _check_runs(live_runs: object) -> int:
    if isinstance(live_runs, bool) or not isinstance(live_runs, int) or \
            not 1 <= live_runs <= MAX_LIVE_RUNS:
        raise ValueError(f"invalid live_runs {live_runs!r}: must be an integer in 1..{MAX_LIVE_RUNS}")
    return live_runs


def validate_live(trace: Trace, settings: Sequence[str], *, ram: Union[int, str] = "8G",
                  live_runs: int = 3, log: Optional[TextIO] = None) -> list[LiveValidation]:
    """Predict faults for each mTHP *setting* from *trace* (recorded at 4K),
    then run the trace's command *live_runs* times with that setting applied
    (restored afterwards) and measure each run: a fresh recording under the
    setting (same classification, exact per-process fault counts), which is
    also replayed under the setting as the model check; and getrusage once.

    Needs root; changes sysfs only inside :func:`pylaf.live.sysfs.thp_settings`.
    """
    n = _check_runs(live_runs)
    cmd = list(trace.header.get("command") or [])
    if not cmd:
        raise TraceError(f"{trace.path}: the trace does not record its command")
    cwd = trace.header.get("cwd")
    no_aslr = bool(trace.header.get("no_aslr", True))
    rec = trace.fault_counts()
    other = rec["total"] - rec["anon"]
    base_ru = _rusage_run(cmd, cwd, no_aslr)
    out = []
    for spec in settings:
        sizes: dict[str | int, str] = {"2048kB": "inherit"}
        sizes.update(parse_setting(spec))
        with thp_settings(all_sizes="never", sizes=sizes):
            pol = host_policy()
            st = replay(trace, pol, ram=ram)
            runs = [_live_run(cmd, cwd, no_aslr, pol, ram) for _ in range(n)]
            ru = _rusage_run(cmd, cwd, no_aslr)
        v = LiveValidation(setting=spec, policy=pol.describe(), predicted_anon=int(st.faults),
                           predicted_total=int(st.faults) + other, recorded_file=rec["file"],
                           runs=runs, live_rusage_minflt=ru, baseline_rusage_minflt=base_ru,
                           predicted_folios=st.folio_histogram())
        if log is not None:
            print(f"  {spec}: predicted anon {v.predicted_anon} live {v.live_anon} "
                  f"[{v.live_min}..{v.live_max}] (error {v.anon_error:+d}, {v.verdict}); model "
                  f"check {[r.model_error for r in runs]}", file=log)
        out.append(v)
    return out
