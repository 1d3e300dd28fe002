"""The live host's THP knobs and counters (``/sys/kernel/mm/transparent_hugepage``,
``/proc/vmstat``), the machine-wide pylaf THP lock, and the host's policy.

Knob files are those of Documentation/admin-guide/mm/transhuge.rst (mm/huge_memory.c
``hugepage_attr_group`` and the per-size ``hugepages-<size>kB/`` directories of
``thpsize_attr_group``).  Writing them needs root; every change goes through
:func:`thp_settings`, which restores every knob on every exit path.  Counters
are system-wide: keep the machine quiet while measuring.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import re
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from pylaf.errors import HostUnavailable
from pylaf.policy import Policy

THP_DIR = Path("/sys/kernel/mm/transparent_hugepage")
VMSTAT = Path("/proc/vmstat")

#: Global knobs handled by :func:`thp_settings` besides ``enabled``/``defrag``.
#: ``anon_beside_full`` and ``shrink_underused`` are not in mainline 6.18 (see
#: docs/kernel-findings.md); they are read/written only when present.
KNOWN_GLOBAL_KNOBS: tuple[str, ...] = (
    "enabled",
    "defrag",
    "use_zero_page",
    "anon_beside_full",
    "shrink_underused",
)
#: top-level files that are not anon knobs (left alone)
_NOT_ANON_KNOBS = ("shmem_enabled", "hpage_pmd_size")

#: Per-size stats that matter for the anon fault path.
ANON_STATS: tuple[str, ...] = (
    "anon_fault_alloc",
    "anon_fault_fallback",
    "anon_fault_fallback_charge",
    "anon_fault_declined",
    "nr_anon",
    "split_deferred",
    "nr_anon_partially_mapped",
    "split",
    "split_failed",
)

_SIZE_DIR = re.compile(r"^hugepages-(\d+)kB$")

SizeKey = Union[str, int]

# --------------------------------------------------------------------------
# sysfs primitives


def _read(path: Path) -> str:
    return path.read_text().strip()


def _write(path: Path, value: str) -> None:
    # One write() call per value: sysfs stores only the first write.
    with open(path, "w") as f:
        f.write(value)


def parse_choice(text: str) -> str:
    """``"always [madvise] never"`` -> ``"madvise"``; plain values unchanged.

    >>> parse_choice("always [madvise] never"), parse_choice("1")
    ('madvise', '1')
    """
    m = re.search(r"\[([^\]]+)\]", text)
    return m.group(1) if m else text.strip()


def size_kb(label: SizeKey) -> int:
    """Accept ``64``, ``"64"``, ``"64kB"``, ``"64K"``, ``"2M"``, ``"2048kB"``.

    >>> size_kb("2M"), size_kb("64kB"), size_kb(16)
    (2048, 64, 16)
    """
    if isinstance(label, int):
        return label
    m = re.fullmatch(r"(\d+)\s*([kKmM]?)[bB]?", label.strip())
    if not m:
        raise ValueError(f"bad size label {label!r}")
    n = int(m.group(1))
    return n * 1024 if m.group(2) in ("m", "M") else n


def size_knob(kb: int) -> str:
    """The per-size ``enabled`` file, relative to :data:`THP_DIR`."""
    return f"hugepages-{kb}kB/enabled"


def anon_sizes_kb(thp_dir: Path = THP_DIR) -> list[int]:
    """Sizes (kB) that have an anon ``enabled`` file (16kB..2048kB on x86-64)."""
    out: list[int] = []
    if not thp_dir.is_dir():
        return out
    for d in thp_dir.iterdir():
        m = _SIZE_DIR.match(d.name)
        if m and (d / "enabled").exists():
            out.append(int(m.group(1)))
    return sorted(out)


# --------------------------------------------------------------------------
# settings


@dataclass(frozen=True)
class ThpSettings:
    """Snapshot of the THP knobs. Choice knobs hold the selected word."""

    enabled: str
    defrag: str
    use_zero_page: int
    per_size: dict[int, str]                     # kB -> always|inherit|madvise|never
    extra: dict[str, str] = field(default_factory=dict)   # other global knobs, raw

    @property
    def anon_beside_full(self) -> Optional[int]:
        v = self.extra.get("anon_beside_full")
        return int(v) if v is not None else None

    def sysfs_values(self) -> dict[str, str]:
        """``path relative to THP_DIR -> value`` (the selected word of choice
        files), e.g. ``{"enabled": "madvise", "hugepages-64kB/enabled": "always"}``:
        the input of ``Policy.from_sysfs_values`` and of save/restore."""
        d = {"enabled": self.enabled, "defrag": self.defrag,
             "use_zero_page": str(self.use_zero_page)}
        d.update(self.extra)
        for kb, v in self.per_size.items():
            d[size_knob(kb)] = v
        return d

    def raw(self) -> dict[str, str]:
        """:meth:`sysfs_values` (the name callers outside pylaf.live use)."""
        return self.sysfs_values()


def _extra_knobs(thp_dir: Path) -> dict[str, str]:
    extra: dict[str, str] = {}
    for name in KNOWN_GLOBAL_KNOBS[3:]:
        p = thp_dir / name
        if p.exists():
            extra[name] = parse_choice(_read(p))
    # Any other writable plain file at top level we do not know about.
    for p in sorted(thp_dir.iterdir()):
        if (p.is_file() and p.name not in KNOWN_GLOBAL_KNOBS and p.name not in _NOT_ANON_KNOBS
                and os.access(p, os.W_OK)):
            with contextlib.suppress(OSError):
                extra[p.name] = parse_choice(_read(p))
    return extra


def read_thp_settings(thp_dir: Path = THP_DIR) -> ThpSettings:
    """Every anon THP knob of the live host."""
    return ThpSettings(
        enabled=parse_choice(_read(thp_dir / "enabled")),
        defrag=parse_choice(_read(thp_dir / "defrag")),
        use_zero_page=int(_read(thp_dir / "use_zero_page")),
        per_size={kb: parse_choice(_read(thp_dir / size_knob(kb))) for kb in anon_sizes_kb(thp_dir)},
        extra=_extra_knobs(thp_dir),
    )


def _apply_values(values: Mapping[str, str], thp_dir: Path) -> list[str]:
    """Write every value that differs; keep going on errors and return them."""
    errors = []
    for rel, v in values.items():
        try:
            p = thp_dir / rel
            if parse_choice(_read(p)) != str(v):
                _write(p, str(v))
        except OSError as e:
            errors.append(f"{rel}={v}: {e}")
    return errors


# --------------------------------------------------------------------------
# the machine-wide lock


#: Every pylaf process that changes THP knobs (or measures under them) takes
#: this lock, so two of them never interleave: the second would otherwise save
#: the first one's temporary values as "original" and restore those.  The
#: holder writes its pid and command line into the file, so that a waiter can
#: say whom it waits for.
THP_LOCK_PATH = Path(os.environ.get("PYLAF_THP_LOCK", "/tmp/pylaf-thp-settings.lock"))

#: ``$PYLAF_LOCK_TIMEOUT`` (seconds; ``pylaf --lock-timeout``) bounds the wait
#: of a :func:`thp_lock` called without a timeout; unset: wait for ever.
LOCK_TIMEOUT_ENV = "PYLAF_LOCK_TIMEOUT"


class ThpLockTimeout(HostUnavailable, TimeoutError):
    """Waited longer than the timeout for the THP-settings lock."""


class _LockState:
    """Re-entrancy bookkeeping of :func:`thp_lock` within this process."""

    guard = threading.RLock()
    depth = 0


def _own_command_line() -> str:
    """This process's command line, on one line, at most 200 characters."""
    try:
        raw = Path("/proc/self/cmdline").read_bytes()
    except OSError:
        return ""
    words = " ".join(a.decode(errors="replace") for a in raw.split(b"\0") if a).split()
    line = " ".join(words)                   # one line, whatever the arguments hold
    return line if len(line) <= 200 else line[:197] + "..."


def lock_holder(fd: int) -> str:
    """What the holder wrote into the lock file: ``"pid N: COMMAND LINE"``
    (``"an unknown process"`` if it wrote nothing, e.g. an older pylaf)."""
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "an unknown process"


def _write_holder(fd: int) -> None:
    """Record this process as the holder (skipped if the file is read-only to us)."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {_own_command_line()}\n".encode(), 0)


def _clear_holder(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)


def _default_timeout() -> Optional[float]:
    env = os.environ.get(LOCK_TIMEOUT_ENV)
    if not env:
        return None
    try:
        return float(env)
    except ValueError:
        raise ValueError(f"${LOCK_TIMEOUT_ENV}={env!r} is not a number of seconds") from None


def _print_waiting(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _flock_wait(fd: int, timeout: Optional[float], notify: Callable[[str], None]) -> None:
    """Take the lock; on the first refusal tell *notify* who holds it, then poll."""
    t0 = time.monotonic()
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = lock_holder(fd)
            if timeout is not None and time.monotonic() - t0 >= timeout:
                raise ThpLockTimeout(f"timed out after {timeout:g} s waiting for the THP-settings "
                                     f"lock {THP_LOCK_PATH}, held by {holder}") from None
            if not told:
                limit = "" if timeout is None else f" (at most {timeout:g} s)"
                notify(f"pylaf: waiting{limit} for the THP-settings lock {THP_LOCK_PATH}, "
                       f"held by {holder}")
                told = True
            time.sleep(0.05)


def _open_lock_file() -> int:
    try:
        return os.open(str(THP_LOCK_PATH), os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        # created by another user (root, umask 022): flock works on a read-only fd
        return os.open(str(THP_LOCK_PATH), os.O_RDONLY)


@contextlib.contextmanager
def thp_lock(timeout: Optional[float] = None,
             notify: Callable[[str], None] = _print_waiting) -> Iterator[None]:
    """Hold the machine-wide pylaf THP lock (``flock`` on :data:`THP_LOCK_PATH`).

    Re-entrant within a process.  While another pylaf process holds it, calls
    *notify* once (default: a line on stderr) with the holder's pid and command
    line, and keeps waiting: ``timeout`` seconds at most (default
    ``$PYLAF_LOCK_TIMEOUT``, else for ever), then :class:`ThpLockTimeout`.
    """
    with _LockState.guard:
        if _LockState.depth:
            _LockState.depth += 1
            try:
                yield
            finally:
                _LockState.depth -= 1
            return
        fd = _open_lock_file()
        try:
            _flock_wait(fd, _default_timeout() if timeout is None else timeout, notify)
            _write_holder(fd)
            _LockState.depth = 1
            try:
                yield
            finally:
                _LockState.depth = 0
                _clear_holder(fd)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------
# applying settings temporarily


@dataclass(frozen=True)
class SettingsRequest:
    """What :func:`thp_settings` is asked to change (None: leave as is)."""

    enabled: Optional[str] = None
    defrag: Optional[str] = None
    use_zero_page: Optional[int] = None
    sizes: Mapping[SizeKey, str] = field(default_factory=dict)
    all_sizes: Optional[str] = None
    extra: Mapping[str, Union[str, int]] = field(default_factory=dict)
    anon_beside_full: Optional[int] = None

    def sysfs_values(self, sizes_kb: Iterable[int]) -> dict[str, str]:
        """The knob files to write; ``sizes_kb``: the host's anon sizes."""
        wanted: dict[str, str] = {}
        for name, value in (("enabled", self.enabled), ("defrag", self.defrag)):
            if value is not None:
                wanted[name] = value
        if self.use_zero_page is not None:
            wanted["use_zero_page"] = str(int(self.use_zero_page))
        if self.all_sizes is not None:
            wanted.update({size_knob(kb): self.all_sizes for kb in sizes_kb})
        wanted.update({size_knob(size_kb(k)): v for k, v in self.sizes.items()})
        wanted.update({k: str(v) for k, v in self.extra.items()})
        if self.anon_beside_full is not None:
            wanted["anon_beside_full"] = str(int(self.anon_beside_full))
        return wanted


@contextlib.contextmanager
def thp_settings(
    enabled: Optional[str] = None,
    defrag: Optional[str] = None,
    use_zero_page: Optional[int] = None,
    sizes: Optional[Mapping[SizeKey, str]] = None,
    all_sizes: Optional[str] = None,
    extra: Optional[Mapping[str, Union[str, int]]] = None,
    anon_beside_full: Optional[int] = None,
    thp_dir: Path = THP_DIR,
) -> Iterator[ThpSettings]:
    """Apply THP settings for the duration of a ``with`` block.

    ``sizes`` maps a size (``"64kB"``, ``64``, ``"2M"``) to a mode;
    ``all_sizes`` first sets every anon size (``sizes`` then overrides).
    The original value of *every* knob (global ones, every per-size
    ``enabled``, and the extra global knobs) is saved first and written back
    on every exit path: normal exit, exceptions, KeyboardInterrupt, and
    SIGTERM (converted to SystemExit while the block runs in the main thread).
    Yields the settings as read back after applying them.  The whole block
    runs under :func:`thp_lock`, so concurrent pylaf processes take turns.
    """
    request = SettingsRequest(enabled, defrag, use_zero_page, sizes or {}, all_sizes, extra or {},
                              anon_beside_full)
    with thp_lock(), _applied(request, thp_dir) as st:
        yield st


def _raise_system_exit(signum: int, frame: Optional[types.FrameType]) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old: Union[Callable[[int, Optional[types.FrameType]], object], int, None]
    old = signal.signal(signal.SIGTERM, _raise_system_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _restore(original: Mapping[str, str], thp_dir: Path) -> None:
    errors: list[str] = []
    # Restore even if interrupted again while restoring.
    for _ in range(3):
        try:
            errors = _apply_values(original, thp_dir)
            break
        except KeyboardInterrupt:
            continue
    now = read_thp_settings(thp_dir).sysfs_values()
    bad = {k: (now.get(k), v) for k, v in original.items() if now.get(k) != v}
    if bad:
        raise RuntimeError(f"THP settings not restored: {bad} {errors}")


@contextlib.contextmanager
def _applied(request: SettingsRequest, thp_dir: Path) -> Iterator[ThpSettings]:
    original = read_thp_settings(thp_dir).sysfs_values()
    wanted = request.sysfs_values(anon_sizes_kb(thp_dir))
    unknown = [rel for rel in wanted if rel not in original]
    if unknown:
        raise KeyError(f"unknown THP knob {unknown[0]!r}")
    with _sigterm_as_exit():
        try:
            errors = _apply_values(wanted, thp_dir)
            if errors:
                raise OSError("could not apply THP settings: " + "; ".join(errors))
            yield read_thp_settings(thp_dir)
        finally:
            _restore(original, thp_dir)


# --------------------------------------------------------------------------
# counters


def read_mthp_stats(thp_dir: Path = THP_DIR,
                    names: Iterable[str] = ANON_STATS) -> dict[int, dict[str, int]]:
    """Per-size stats: ``{64: {"anon_fault_alloc": n, ...}, ...}``."""
    names = tuple(names)
    out: dict[int, dict[str, int]] = {}
    for kb in anon_sizes_kb(thp_dir):
        d = thp_dir / f"hugepages-{kb}kB" / "stats"
        out[kb] = {n: int(_read(d / n)) for n in names if (d / n).exists()}
    return out


def read_vmstat_thp(path: Path = VMSTAT) -> dict[str, int]:
    """``thp_*`` lines of /proc/vmstat plus ``nr_anon_transparent_hugepages``."""
    out = {}
    for line in path.read_text().splitlines():
        k, _, v = line.partition(" ")
        if k.startswith("thp_") or k == "nr_anon_transparent_hugepages":
            out[k] = int(v)
    return out


#: Counters that move whenever a PMD range is collapsed (mm/khugepaged.c):
#: ``thp_collapse_alloc`` / ``thp_collapse_alloc_failed`` are counted in
#: alloc_charge_folio(), before collapse_huge_page() installs the PMD, so a
#: collapse that changed a process's page tables is counted while that
#: process is still alive; ``khugepaged/pages_collapsed`` is counted after
#: the collapse, in khugepaged_scan_mm_slot().  MADV_COLLAPSE counts the
#: vmstat events too.
COLLAPSE_VMSTAT: tuple[str, ...] = ("thp_collapse_alloc", "thp_collapse_alloc_failed")
COLLAPSE_KHUGEPAGED: tuple[str, ...] = ("pages_collapsed",)


def read_collapse_counters(thp_dir: Path = THP_DIR, vmstat: Path = VMSTAT) -> dict[str, int]:
    """:data:`COLLAPSE_VMSTAT` from /proc/vmstat and :data:`COLLAPSE_KHUGEPAGED`
    from ``khugepaged/`` (keyed ``khugepaged/<name>``), present ones only."""
    vm = read_vmstat_thp(vmstat)
    out = {n: vm[n] for n in COLLAPSE_VMSTAT if n in vm}
    for n in COLLAPSE_KHUGEPAGED:
        path = thp_dir / "khugepaged" / n
        if path.exists():
            out[f"khugepaged/{n}"] = int(_read(path))
    return out


# --------------------------------------------------------------------------
# the host's policy


def host_policy(thp_dir: Path = THP_DIR) -> Policy:
    """The live host's THP settings as an emulator policy named ``kernel``."""
    policy = Policy.from_sysfs_values(read_thp_settings(thp_dir).sysfs_values())
    return dataclasses.replace(policy, name="kernel")


__all__ = [
    "ANON_STATS",
    "COLLAPSE_KHUGEPAGED",
    "COLLAPSE_VMSTAT",
    "KNOWN_GLOBAL_KNOBS",
    "LOCK_TIMEOUT_ENV",
    "THP_DIR",
    "THP_LOCK_PATH",
    "VMSTAT",
    "SettingsRequest",
    "ThpLockTimeout",
    "ThpSettings",
    "anon_sizes_kb",
    "host_policy",
    "lock_holder",
    "parse_choice",
    "read_collapse_counters",
    "read_mthp_stats",
    "read_thp_settings",
    "read_vmstat_thp",
    "size_kb",
    "size_knob",
    "thp_lock",
    "thp_settings",
]
