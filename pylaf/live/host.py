"""Live-kernel side of pylaf: THP settings, counters, and the laf_kprog runner.

Everything here is pure Python (stdlib only). It reads and writes
``/sys/kernel/mm/transparent_hugepage`` and ``/proc/vmstat`` and runs the
standalone C program ``csrc/kprog/laf_kprog.c`` (built on demand into a
cache directory under ``build/``), which executes an "access program" on the
running kernel and reports fault counts, counter deltas and the folio layout
it finds through ``/proc/self/pagemap`` + ``/proc/kpageflags``.

Typical use::

    from pylaf.live.host import thp_settings, run_kprog
    with thp_settings(sizes={"64kB": "always"}):
        res = run_kprog('''
            mmap a 1M align=64K
            write a 0 1M 4K
            snapshot done
        ''')
    print(res.ops[1].minflt, res.snapshots[0].mappings[0].folios_by_order)

Writing sysfs needs root. Counters are system-wide: keep the machine quiet.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

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

_SIZE_RE = re.compile(r"^hugepages-(\d+)kB$")

# --------------------------------------------------------------------------
# sysfs primitives


def _read(path: Path) -> str:
    return path.read_text().strip()


def _write(path: Path, value: str) -> None:
    # One write() call per value: sysfs stores only the first write.
    with open(path, "w") as f:
        f.write(value)


def parse_choice(text: str) -> str:
    """``"always [madvise] never"`` -> ``"madvise"``; plain values unchanged."""
    m = re.search(r"\[([^\]]+)\]", text)
    return m.group(1) if m else text.strip()


def size_label(kb: int) -> str:
    return f"{kb}kB"


def size_kb(label: Union[str, int]) -> int:
    """Accept ``64``, ``"64"``, ``"64kB"``, ``"64K"``, ``"2M"``, ``"2048kB"``."""
    if isinstance(label, int):
        return label
    s = label.strip()
    m = re.fullmatch(r"(\d+)\s*([kKmM]?)[bB]?", s)
    if not m:
        raise ValueError(f"bad size label {label!r}")
    n = int(m.group(1))
    return n * 1024 if m.group(2) in ("m", "M") else n


def anon_sizes_kb(thp_dir: Path = THP_DIR) -> list[int]:
    """Sizes (kB) that have an anon ``enabled`` file (16kB..2048kB on x86-64)."""
    out = []
    if not thp_dir.is_dir():
        return out
    for d in thp_dir.iterdir():
        m = _SIZE_RE.match(d.name)
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

    def raw(self) -> dict[str, str]:
        """Flat ``relative path -> value`` form used for save/restore."""
        d = {"enabled": self.enabled, "defrag": self.defrag,
             "use_zero_page": str(self.use_zero_page)}
        d.update(self.extra)
        for kb, v in self.per_size.items():
            d[f"hugepages-{kb}kB/enabled"] = v
        return d


def read_thp_settings(thp_dir: Path = THP_DIR) -> ThpSettings:
    extra: dict[str, str] = {}
    for name in KNOWN_GLOBAL_KNOBS[3:]:
        p = thp_dir / name
        if p.exists():
            extra[name] = parse_choice(_read(p))
    # Any other writable plain file at top level we do not know about.
    for p in sorted(thp_dir.iterdir()):
        if (p.is_file() and p.name not in KNOWN_GLOBAL_KNOBS
                and p.name not in ("shmem_enabled", "hpage_pmd_size")
                and os.access(p, os.W_OK)):
            with contextlib.suppress(OSError):
                extra[p.name] = parse_choice(_read(p))
    return ThpSettings(
        enabled=parse_choice(_read(thp_dir / "enabled")),
        defrag=parse_choice(_read(thp_dir / "defrag")),
        use_zero_page=int(_read(thp_dir / "use_zero_page")),
        per_size={kb: parse_choice(_read(thp_dir / f"hugepages-{kb}kB" / "enabled"))
                  for kb in anon_sizes_kb(thp_dir)},
        extra=extra,
    )


def _raw_all(thp_dir: Path = THP_DIR) -> dict[str, str]:
    return read_thp_settings(thp_dir).raw()


def _apply_raw(values: Mapping[str, str], thp_dir: Path = THP_DIR) -> list[str]:
    """Write every value; keep going on errors and return them."""
    errors = []
    for rel, v in values.items():
        try:
            p = thp_dir / rel
            if parse_choice(_read(p)) != str(v):
                _write(p, str(v))
        except OSError as e:
            errors.append(f"{rel}={v}: {e}")
    return errors


#: Every pylaf process that changes THP knobs (or measures under them) takes
#: this lock, so two of them never interleave: the second would otherwise save
#: the first one's temporary values as "original" and restore those.
THP_LOCK_PATH = Path(os.environ.get("PYLAF_THP_LOCK", "/tmp/pylaf-thp-settings.lock"))
_lock_guard = threading.RLock()
_lock_depth = 0
_lock_fd: Optional[int] = None


@contextlib.contextmanager
def thp_lock(timeout: Optional[float] = None) -> Iterator[None]:
    """Hold the machine-wide pylaf THP lock (``flock`` on :data:`THP_LOCK_PATH`).

    Re-entrant within a process.  Blocks while another pylaf process holds it
    (``timeout`` seconds at most: then ``TimeoutError``).
    """
    import fcntl
    import time

    global _lock_depth, _lock_fd
    with _lock_guard:
        if _lock_depth:
            _lock_depth += 1
            try:
                yield
            finally:
                _lock_depth -= 1
            return
        fd = os.open(str(THP_LOCK_PATH), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            t0 = time.monotonic()
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if timeout is not None and time.monotonic() - t0 > timeout:
                        raise TimeoutError(f"another pylaf process holds {THP_LOCK_PATH}") from None
                    time.sleep(0.05)
            _lock_fd, _lock_depth = fd, 1
            try:
                yield
            finally:
                _lock_depth = 0
                _lock_fd = None
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


@contextlib.contextmanager
def thp_settings(
    enabled: Optional[str] = None,
    defrag: Optional[str] = None,
    use_zero_page: Optional[int] = None,
    sizes: Optional[Mapping[Union[str, int], str]] = None,
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
    with thp_lock(), _thp_settings_locked(enabled, defrag, use_zero_page, sizes, all_sizes, extra,
                              anon_beside_full, thp_dir) as st:
        yield st


@contextlib.contextmanager
def _thp_settings_locked(
    enabled: Optional[str],
    defrag: Optional[str],
    use_zero_page: Optional[int],
    sizes: Optional[Mapping[Union[str, int], str]],
    all_sizes: Optional[str],
    extra: Optional[Mapping[str, Union[str, int]]],
    anon_beside_full: Optional[int],
    thp_dir: Path,
) -> Iterator[ThpSettings]:
    original = _raw_all(thp_dir)
    wanted: dict[str, str] = {}
    if enabled is not None:
        wanted["enabled"] = enabled
    if defrag is not None:
        wanted["defrag"] = defrag
    if use_zero_page is not None:
        wanted["use_zero_page"] = str(int(use_zero_page))
    if all_sizes is not None:
        for kb in anon_sizes_kb(thp_dir):
            wanted[f"hugepages-{kb}kB/enabled"] = all_sizes
    for k, v in (sizes or {}).items():
        wanted[f"hugepages-{size_kb(k)}kB/enabled"] = v
    for k, v in (extra or {}).items():
        wanted[k] = str(v)
    if anon_beside_full is not None:
        wanted["anon_beside_full"] = str(int(anon_beside_full))
    for rel in wanted:
        if rel not in original:
            raise KeyError(f"unknown THP knob {rel!r}")

    old_term = None
    main = threading.current_thread() is threading.main_thread()
    if main:
        def _term(signum: int, frame: Any) -> None:
            raise SystemExit(128 + signum)
        old_term = signal.signal(signal.SIGTERM, _term)
    try:
        errors = _apply_raw(wanted, thp_dir)
        if errors:
            raise OSError("could not apply THP settings: " + "; ".join(errors))
        yield read_thp_settings(thp_dir)
    finally:
        # Restore even if interrupted again while restoring.
        for _ in range(3):
            try:
                errors = _apply_raw(original, thp_dir)
                break
            except KeyboardInterrupt:
                continue
        if main:
            signal.signal(signal.SIGTERM, old_term)
        now = _raw_all(thp_dir)
        bad = {k: (now.get(k), v) for k, v in original.items() if now.get(k) != v}
        if bad:
            raise RuntimeError(f"THP settings not restored: {bad} {errors}")


# --------------------------------------------------------------------------
# counters


def read_mthp_stats(thp_dir: Path = THP_DIR,
                    names: Iterable[str] = ANON_STATS) -> dict[int, dict[str, int]]:
    """Per-size stats: ``{64: {"anon_fault_alloc": n, ...}, ...}``."""
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


# --------------------------------------------------------------------------
# laf_kprog results


@dataclass(frozen=True)
class Run:
    """A VA run in a mapping. ``kind``: folio|zero|hzero|none|swap.

    For folio/hzero: consecutive pieces of the same ``order``; ``whole`` if
    every piece maps its entire folio (then ``folios`` = number of folios),
    otherwise a single partial piece starting at page ``idx`` of its folio.
    """

    off: int
    n: int
    kind: str
    order: Optional[int] = None
    whole: Optional[bool] = None
    folios: Optional[int] = None
    idx: Optional[int] = None
    thp: Optional[int] = None
    anon: Optional[int] = None


@dataclass(frozen=True)
class MappingLayout:
    id: str
    addr: int
    len: int
    runs: list[Run]
    present: int
    zero: int
    hzero: int
    swap: int
    pages_by_order: dict[int, int]
    folios_by_order: dict[int, int]      # whole folios mapped inside the range
    partial_by_order: dict[int, int]     # partially mapped folio pieces

    def layout(self, page_size: int = 4096) -> list[tuple[int, int, str]]:
        """Compact ``(offset, length_bytes, label)`` list; label e.g. ``"64K"``,
        ``"4K"``, ``"zero"``, ``"hzero"``, ``"none"``, ``"64K-partial"``."""
        out = []
        for r in self.runs:
            if r.kind in ("folio",):
                lab = _order_label(r.order or 0, page_size)
                if not r.whole:
                    lab += "-partial"
            else:
                lab = r.kind
            out.append((r.off, r.n * page_size, lab))
        return out


@dataclass(frozen=True)
class Vma:
    start: int
    end: int
    perms: str
    ids: list[str]
    rss_kb: int = 0
    anonymous_kb: int = 0
    anon_huge_kb: int = 0
    thp_eligible: Optional[int] = None
    vmflags: str = ""


@dataclass(frozen=True)
class CounterDelta:
    mthp: dict[int, dict[str, int]]      # kB -> stat -> delta (non-zero only)
    vmstat: dict[str, int]

    def get(self, size: Union[str, int], stat: str) -> int:
        return self.mthp.get(size_kb(size), {}).get(stat, 0)


@dataclass(frozen=True)
class OpResult:
    i: int
    line: int
    op: str
    text: str
    rc: int
    errno: int
    delta: CounterDelta
    minflt: Optional[int] = None
    majflt: Optional[int] = None
    addr: Optional[int] = None
    signal: Optional[int] = None
    fault_off: Optional[int] = None
    get_thp_disable: Optional[int] = None


@dataclass(frozen=True)
class Snapshot:
    name: str
    after_op: int
    minflt: int
    majflt: int
    delta: CounterDelta                  # summed over ops since previous snapshot
    rss: dict[str, int]
    mappings: list[MappingLayout]
    vmas: list[Vma]

    def mapping(self, id: str) -> MappingLayout:
        for m in reversed(self.mappings):
            if m.id == id:
                return m
        raise KeyError(id)


@dataclass(frozen=True)
class KprogResult:
    page_size: int
    sizes_kb: list[int]
    settings: dict[str, str]
    ops: list[OpResult]
    snapshots: list[Snapshot]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    def snapshot(self, name: str) -> Snapshot:
        for s in self.snapshots:
            if s.name == name:
                return s
        raise KeyError(name)


def _order_label(order: int, page_size: int = 4096) -> str:
    b = page_size << order
    return f"{b >> 20}M" if b >= 1 << 20 else f"{b >> 10}K"


def _delta(d: Mapping[str, Any]) -> CounterDelta:
    return CounterDelta(
        mthp={size_kb(k): dict(v) for k, v in d.get("mthp", {}).items()},
        vmstat=dict(d.get("vmstat", {})),
    )


def _intkeys(d: Mapping[str, int]) -> dict[int, int]:
    return {int(k): v for k, v in d.items()}


def parse_kprog_output(data: Mapping[str, Any]) -> KprogResult:
    ops = [
        OpResult(
            i=o["i"], line=o["line"], op=o["op"], text=o["text"], rc=o["rc"],
            errno=o["errno"], delta=_delta(o), minflt=o.get("minflt"),
            majflt=o.get("majflt"), addr=o.get("addr"), signal=o.get("signal"),
            fault_off=o.get("fault_off"), get_thp_disable=o.get("get_thp_disable"),
        )
        for o in data["ops"]
    ]
    snaps = []
    for s in data["snapshots"]:
        maps = [
            MappingLayout(
                id=m["id"], addr=m["addr"], len=m["len"],
                runs=[Run(**r) for r in m.get("runs", [])],
                present=m["present"], zero=m["zero"], hzero=m["hzero"], swap=m["swap"],
                pages_by_order=_intkeys(m["pages_by_order"]),
                folios_by_order=_intkeys(m["folios_by_order"]),
                partial_by_order=_intkeys(m["partial_by_order"]),
            )
            for m in s["mappings"]
        ]
        vmas = [
            Vma(start=v["start"], end=v["end"], perms=v["perms"], ids=list(v["ids"]),
                rss_kb=v.get("Rss_kb", 0), anonymous_kb=v.get("Anonymous_kb", 0),
                anon_huge_kb=v.get("AnonHugePages_kb", 0),
                thp_eligible=v.get("thp_eligible"), vmflags=v.get("vmflags", ""))
            for v in s["vmas"]
        ]
        snaps.append(Snapshot(name=s["name"], after_op=s["after_op"], minflt=s["minflt"],
                              majflt=s["majflt"], delta=_delta(s), rss=dict(s["rss"]),
                              mappings=maps, vmas=vmas))
    return KprogResult(page_size=data["page_size"], sizes_kb=list(data["sizes_kb"]),
                       settings=dict(data["settings"]), ops=ops, snapshots=snaps,
                       raw=dict(data))


# --------------------------------------------------------------------------
# building and running laf_kprog


def repo_root() -> Path:
    """The checkout this package lives in (``pylaf/..``)."""
    return Path(__file__).resolve().parents[2]


def kprog_source() -> Path:
    env = os.environ.get("PYLAF_KPROG_SRC")
    src = Path(env) if env else repo_root() / "csrc" / "kprog" / "laf_kprog.c"
    if not src.is_file():
        raise FileNotFoundError(f"laf_kprog source not found at {src}")
    return src


def build_dir() -> Path:
    """``$PYLAF_BUILD_DIR`` or ``<repo>/build``."""
    env = os.environ.get("PYLAF_BUILD_DIR")
    return Path(env) if env else repo_root() / "build"


def build_helper(name: str, cc: Optional[str] = None, force: bool = False) -> Path:
    """Compile ``csrc/kprog/<name>.c`` into ``<build>/kprog/<name>-<srchash>`` if needed
    (``laf_kprog``, ``laf_tracee``).  Written to a temp file and renamed."""
    if name == "laf_kprog":
        src = kprog_source()
    else:
        src = repo_root() / "csrc" / "kprog" / f"{name}.c"
        if not src.is_file():
            raise FileNotFoundError(f"{name} source not found at {src}")
    cc = cc or os.environ.get("CC", "cc")
    digest = hashlib.sha256(src.read_bytes() + cc.encode()).hexdigest()[:16]
    outdir = build_dir() / "kprog"
    exe = outdir / f"{name}-{digest}"
    if exe.exists() and not force:
        return exe
    outdir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", dir=outdir)
    os.close(fd)
    try:
        extra = ["-pthread"] if "pthread.h" in src.read_text() else []
        subprocess.run([cc, "-O2", "-o", tmp, str(src)] + extra, check=True,
                       capture_output=True, text=True)
        os.chmod(tmp, 0o755)
        os.replace(tmp, exe)
    except FileNotFoundError as e:
        raise RuntimeError(f"building {name} failed: C compiler {cc!r} not found "
                           f"(install gcc or set $CC)") from e
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"building {name} failed:\n{e.stderr}") from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return exe


def build_kprog(cc: Optional[str] = None, force: bool = False) -> Path:
    """Compile laf_kprog into ``<build>/kprog/laf_kprog-<srchash>`` if needed."""
    return build_helper("laf_kprog", cc, force)


def format_program(program: Union[str, Iterable[str]]) -> str:
    if isinstance(program, str):
        lines = program.splitlines()
    else:
        lines = list(program)
    return "\n".join(line.strip() for line in lines if line.strip()) + "\n"


def run_kprog_raw(program: Union[str, Iterable[str]], timeout: float = 300.0) -> dict[str, Any]:
    exe = build_kprog()
    p = subprocess.run([str(exe)], input=format_program(program), capture_output=True,
                       text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"laf_kprog exited {p.returncode}: {p.stderr.strip()}")
    return json.loads(p.stdout)


def run_kprog(program: Union[str, Iterable[str]], timeout: float = 300.0) -> KprogResult:
    """Build (if needed) and run laf_kprog on *program*; parse its JSON."""
    return parse_kprog_output(run_kprog_raw(program, timeout))


# --------------------------------------------------------------------------
# command line: python -m pylaf.live.host {show|run FILE [--set K=V ...]}


def _main(argv: Optional[list[str]] = None) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m pylaf.live.host")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("show", help="print THP settings, mTHP stats and vmstat thp_*")
    r = sub.add_parser("run", help="run an access program (file or - for stdin)")
    r.add_argument("program")
    r.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                   help="e.g. enabled=always, hugepages-64kB/enabled=always, "
                        "anon_beside_full=1 (restored afterwards)")
    a = ap.parse_args(argv)
    if a.cmd == "show":
        s = read_thp_settings()
        print(json.dumps({"settings": s.raw(), "mthp": read_mthp_stats(),
                          "vmstat": read_vmstat_thp()}, indent=1))
        return 0
    text = sys.stdin.read() if a.program == "-" else Path(a.program).read_text()
    extra = dict(kv.split("=", 1) for kv in a.set)
    with thp_settings(extra=extra):
        data = run_kprog_raw(text)
    json.dump(data, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
