"""``pylaf replay --validate-live``: a trace's prediction against the same
command run on the live kernel.

For each mTHP setting, :func:`validate_live` replays the trace (recorded at
4K with mTHP off) under the policy the setting gives, then applies the
setting through :func:`pylaf.live.sysfs.thp_settings` (restored afterwards),
records the command again and measures its faults with the same
classification, plus ``getrusage`` minor faults.  Needs root.
"""
from __future__ import annotations

__all__ = ["LiveValidation", "parse_setting", "validate_live"]

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, TextIO, Union

from pylaf.live.kprog import build_helper
from pylaf.live.sysfs import host_policy, thp_settings
from pylaf.policy import parse_thp_anon
from pylaf.sizes import parse_size
from pylaf.trace.format import Trace, TraceError
from pylaf.trace.record import record
from pylaf.trace.replay import replay


@dataclass
class LiveValidation:
    """Prediction from a 4K trace against the same command run live."""

    setting: str
    policy: str
    predicted_anon: int
    predicted_total: int
    live_anon: int
    live_total: int
    live_file: int
    recorded_file: int
    live_rusage_minflt: Optional[int] = None
    baseline_rusage_minflt: Optional[int] = None
    predicted_folios: dict[str, int] = field(default_factory=dict)

    @property
    def anon_error(self) -> int:
        return self.predicted_anon - self.live_anon

    @property
    def total_error(self) -> int:
        return self.predicted_total - self.live_total


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


def validate_live(trace: Trace, settings: Sequence[str], *, ram: Union[int, str] = "8G",
                  log: Optional[TextIO] = None) -> list[LiveValidation]:
    """Predict faults for each mTHP *setting* from *trace* (recorded at 4K),
    then run the trace's command live with that setting applied (restored
    afterwards) and measure: a fresh recording under the setting (same
    classification, exact per-process fault counts) and getrusage.

    Needs root; changes sysfs only inside :func:`pylaf.live.sysfs.thp_settings`.
    """
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
            live = _record_live(cmd, cwd, no_aslr)
            ru = _rusage_run(cmd, cwd, no_aslr)
        lc = live.fault_counts()
        v = LiveValidation(setting=spec, policy=pol.describe(), predicted_anon=int(st.faults),
                           predicted_total=int(st.faults) + other, live_anon=lc["anon"],
                           live_total=lc["total"], live_file=lc["file"], recorded_file=rec["file"],
                           live_rusage_minflt=ru, baseline_rusage_minflt=base_ru,
                           predicted_folios=st.folio_histogram())
        if log is not None:
            print(f"  {spec}: predicted anon {v.predicted_anon} live {v.live_anon} "
                  f"(error {v.anon_error:+d}); total predicted {v.predicted_total} live "
                  f"{v.live_total} ({v.total_error:+d})", file=log)
        out.append(v)
    return out
