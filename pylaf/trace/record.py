"""``pylaf record``: run a command under ``perf record`` and the
``laf_tracee`` helper, and write its trace.

    perf record -e exceptions:page_fault_user -e exceptions:page_fault_kernel \\
                -e syscalls:sys_{enter,exit}_{mmap,munmap,mprotect,madvise,brk,mremap,execve,execveat} \\
                -e sched:sched_process_exec -e sched:sched_process_fork -e sched:sched_process_exit \\
                -- laf_tracee [-R] -o LOG -- CMD ...

``laf_tracee`` (``pylaf/live/csrc/laf_tracee.c``, built by
:func:`pylaf.live.kprog.build_helper`) ptraces the command and its
descendants only at exec/fork events: it snapshots ``/proc/PID/maps`` (and
which anonymous pages exec already populated) at every execve, sets
``ADDR_NO_RANDOMIZE`` (``-R``, like ``setarch -R``) and tells fork from vfork
from thread creation.  Recording holds the pylaf THP lock
(:func:`pylaf.live.sysfs.thp_lock`), or with ``thp_off`` sets every size to
never through :func:`pylaf.live.sysfs.thp_settings` (restored afterwards).
"""
from __future__ import annotations

__all__ = [
    "SYSCALLS",
    "TRACEPOINTS",
    "CommandNotStarted",
    "PerfUnavailable",
    "explain_perf_failure",
    "perf_binary",
    "perf_events",
    "record",
    "record_unavailable",
]

import datetime
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, TextIO, Union

from pylaf.errors import HostUnavailable
from pylaf.live.kprog import build_helper
from pylaf.live.sysfs import read_thp_settings, thp_lock, thp_settings
from pylaf.trace.format import PAGE, Trace, TraceError, save_trace
from pylaf.trace.perf import PerfError, build_trace, read_tracee_log

TRACEPOINTS = ("exceptions:page_fault_user", "exceptions:page_fault_kernel",
               "sched:sched_process_exec", "sched:sched_process_fork", "sched:sched_process_exit")
SYSCALLS = ("mmap", "munmap", "mprotect", "madvise", "brk", "mremap", "execve", "execveat")


PERF_PARANOID = Path("/proc/sys/kernel/perf_event_paranoid")


class PerfUnavailable(PerfError, HostUnavailable):
    """perf is missing or may not trace here (permissions, tracefs, missing
    tracepoints): a missing capability, ``pylaf record`` exits 2."""


class CommandNotStarted(TraceError):
    """The command to record could not be executed (laf_tracee's execvp failed):
    no trace is written.  ``status`` is 127 (not found) or 126 (not executable),
    as a shell would report."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _perf_paranoid() -> Optional[int]:
    try:
        return int(PERF_PARANOID.read_text().strip())
    except (OSError, ValueError):
        return None


def record_unavailable(thp_off: bool = False) -> Optional[str]:
    """None if ``pylaf record`` can run here, else what is missing, in one line
    (perf on PATH; root, or ``kernel.perf_event_paranoid=-1`` for tracepoints;
    root for ``thp_off``, which writes sysfs).  A C compiler for laf_tracee is
    checked when it is built (:class:`pylaf.live.kprog.HelperUnavailable`)."""
    try:
        perf_binary()
    except PerfUnavailable as exc:
        return str(exc)
    if os.geteuid() == 0:
        return None
    if thp_off:
        return "--thp-off needs root (it writes /sys/kernel/mm/transparent_hugepage)"
    par = _perf_paranoid()
    if par is not None and par > -1:
        return (f"recording tracepoints needs root or kernel.perf_event_paranoid=-1 (it is {par}; "
                f"`sysctl -w kernel.perf_event_paranoid=-1`)")
    return None


def perf_events() -> list[str]:
    ev = list(TRACEPOINTS)
    for s in SYSCALLS:
        ev += [f"syscalls:sys_enter_{s}", f"syscalls:sys_exit_{s}"]
    return ev


def perf_binary() -> str:
    exe = os.environ.get("PYLAF_PERF", "perf")
    found = shutil.which(exe)
    if not found:
        raise PerfUnavailable(
            f"perf not found ({exe!r} is not on PATH). Install it: Debian/Ubuntu "
            "`apt-get install linux-perf` (or linux-tools-$(uname -r)), Fedora/RHEL "
            "`dnf install perf`; or point $PYLAF_PERF at a perf binary.")
    return found


def perf_failure(stderr: str, rc: int) -> PerfError:
    """perf's complaint as an exception: :class:`PerfUnavailable` when it names
    a missing capability (permission, tracefs, a tracepoint), else
    :class:`PerfError`; the message is :func:`explain_perf_failure`'s."""
    cls = PerfUnavailable if _perf_hints(stderr) else PerfError
    return cls(explain_perf_failure(stderr, rc))


def _perf_hints(stderr: str) -> list[str]:
    """What to install or enable, for each capability perf's *stderr* says is missing."""
    s = stderr.lower()
    hints = []
    if "perf_event_paranoid" in s or "no permission" in s or "permission denied" in s \
            or "access to performance monitoring" in s or "are you root" in s:
        par = _perf_paranoid()
        hints.append(f"perf was refused access to the tracepoints (kernel.perf_event_paranoid="
                     f"{'?' if par is None else par}). Run as root, or allow it: `sysctl -w "
                     "kernel.perf_event_paranoid=-1` (tracepoints need -1 or CAP_PERFMON), and "
                     "make tracefs readable.")
    if "tracefs" in s or "debugfs" in s or "can't access trace events" in s \
            or ("no such file or directory" in s and "tracing" in s):
        hints.append("perf cannot read the tracepoint definitions: mount tracefs "
                     "(`mount -t tracefs nodev /sys/kernel/tracing`) and check that the kernel "
                     "has CONFIG_FTRACE_SYSCALLS (syscalls:*) and the x86 exceptions:* events.")
    if "event syntax error" in s or "unknown tracepoint" in s:
        hints.append("a tracepoint is missing on this kernel (needs exceptions:page_fault_user/"
                     "kernel, syscalls:sys_enter_*/sys_exit_* (CONFIG_FTRACE_SYSCALLS), "
                     "sched:sched_process_exec/fork/exit).")
    return hints


def explain_perf_failure(stderr: str, rc: int) -> str:
    """Turn perf's complaint into what to install or enable (first line), then
    perf's last lines."""
    hints = _perf_hints(stderr)
    tail = stderr.strip().splitlines()[-6:]
    msg = f"perf record failed (exit {rc})"
    if hints:
        msg += ": " + " ".join(hints)
    if tail:
        msg += "\nperf said:\n  " + "\n  ".join(tail)
    return msg


def _thp_state() -> dict[str, str]:
    """The host's THP knobs as recorded in the header ({} if sysfs has none)."""
    try:
        return read_thp_settings().raw()
    except (OSError, ValueError):
        return {}


def _thp_warning(raw: dict[str, str]) -> Optional[str]:
    on = [k.split("/")[0] for k, v in raw.items() if k.startswith("hugepages-") and
          (v == "always" or (v == "inherit" and raw.get("enabled") == "always"))
          and not k.startswith("hugepages-2048kB")]
    if on or raw.get("enabled") == "always":
        return ("warning: large anonymous folios are enabled (" + (", ".join(on) or "enabled=always") +
                "): some first touches will not fault and the trace under-reports; record with "
                "mTHP off (every size never, global madvise/never) or use --thp-off")
    return None


def record(command: Sequence[str], output: Union[str, Path], *, no_aslr: bool = True,
           thp_off: bool = False, keep_perf_data: Optional[Union[str, Path]] = None,
           name: Optional[str] = None, description: Optional[str] = None,
           buffer: str = "64M", log: Optional[TextIO] = None, stdout: Any = None) -> Trace:
    """Record *command* under perf and write the trace to *output*.

    ``thp_off``: apply every-size-never + global never for the recording
    (restored afterwards, also on Ctrl-C).  The trace file is written to a
    temporary name and renamed, so nothing half-written is left behind.
    ``stdout``: where the command's output goes (default: inherited).
    """
    if not command:
        raise TraceError("no command to record")
    why = record_unavailable(thp_off)
    if why:
        raise PerfUnavailable(why)
    perf = perf_binary()
    tracee = build_helper("laf_tracee")
    out = Path(output)
    tmpdir = Path(tempfile.mkdtemp(prefix="pylaf-record-"))
    data = tmpdir / "perf.data"
    tlog = tmpdir / "tracee.log"
    cmd = [perf, "record", "-q", "-N", "-B", "-m", buffer, "-o", str(data)]
    for e in perf_events():
        cmd += ["-e", e]
    cmd += ["--", str(tracee)] + (["-R"] if no_aslr else []) + ["-o", str(tlog), "--"] + list(command)
    # under the pylaf THP lock: no other pylaf process changes knobs meanwhile
    ctx: Any = thp_settings(enabled="never", all_sizes="never") if thp_off else thp_lock()
    try:
        with ctx:
            thp = _thp_state()
            warn = _thp_warning(thp)
            if warn and log is not None:
                print(warn, file=log)
            started = datetime.datetime.now(datetime.timezone.utc)
            p = subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True)
        if not tlog.exists() or tlog.stat().st_size == 0:
            raise perf_failure(p.stderr, p.returncode)
        records = read_tracee_log(tlog)
        _check_started(records, p.stderr)
        if p.stderr and log is not None:
            log.write(p.stderr)         # the command's own stderr (perf runs with -q)
        if not data.exists() or data.stat().st_size == 0:
            raise perf_failure(p.stderr, p.returncode)
        lost = _perf_lost(perf, data)
        if lost:
            raise PerfError(f"perf lost {lost} events while recording (buffer too small or the "
                            f"machine too busy); retry with a bigger --buffer")
        script = subprocess.run([perf, "script", "-i", str(data), "--ns", "--show-lost-events",
                                 "-F", "comm,pid,tid,time,event,trace"],
                                capture_output=True, text=True)
        if script.returncode != 0:
            raise PerfError(f"perf script failed (exit {script.returncode}): {script.stderr.strip()}")
        header = {
            "name": name or out.stem, "description": description or " ".join(command),
            "command": list(command), "cwd": os.getcwd(), "kernel": platform.release(),
            "machine": platform.machine(), "recorded": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "no_aslr": no_aslr, "page_size": PAGE, "thp_settings": thp,
            "perf": _perf_version(perf), "tracepoints": perf_events(),
            "recorder": "pylaf record (perf + laf_tracee)",
        }
        trace = build_trace(script.stdout.splitlines(), records, header)
        if keep_perf_data:
            kd = Path(keep_perf_data)
            kd.mkdir(parents=True, exist_ok=True)
            shutil.copy2(data, kd / "perf.data")
            shutil.copy2(tlog, kd / "tracee.log")
        save_trace(trace, out)
        return trace
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _check_started(records: Sequence[dict[str, Any]], stderr: str) -> None:
    """Raise :class:`CommandNotStarted` if the command's execve never succeeded
    (laf_tracee logs no exec of its root process and exits 126/127)."""
    root = next((r.get("pid") for r in records if r.get("ev") == "start"), None)
    if root is None or any(r.get("ev") == "exec" and r.get("pid") == root for r in records):
        return
    status = next((r.get("status") for r in records if r.get("ev") == "end"), None)
    said = [ln.split(": ", 1)[1] for ln in stderr.splitlines() if ln.startswith("laf_tracee: ")]
    why = said[-1] if said else "execve failed"
    raise CommandNotStarted(f"cannot run {why}; no trace written",
                            status if status in (126, 127) else 127)


def _perf_lost(perf: str, data: Path) -> int:
    p = subprocess.run([perf, "report", "-i", str(data), "--stats"], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
    lost = 0
    for line in p.stdout.splitlines():
        m = re.match(r"\s*LOST(?:_SAMPLES)? events:\s*(\d+)", line)
        if m:
            lost += int(m.group(1))
    return lost


def _perf_version(perf: str) -> str:
    try:
        return subprocess.run([perf, "--version"], stdout=subprocess.PIPE, text=True,
                              stderr=subprocess.DEVNULL).stdout.strip()
    except OSError:
        return "?"


