"""The live host's program runners: building and running the C helpers of
``pylaf/live/csrc/`` (package data, so a wheel carries them too).

``laf_kprog`` (``pylaf/live/csrc/laf_kprog.c``) executes an *access program* (its
op language is described at the top of that file) on the running kernel and
prints JSON: per op the minor faults and the system-wide counter deltas, and
at every snapshot the folio layout of every mapping, read from
``/proc/self/pagemap`` + ``/proc/kpageflags`` (``emit_layout()``; its runs
follow the rules of :mod:`pylaf.layout` and are parsed into
:class:`pylaf.layout.Run`).  The other helpers (``laf_tracee``,
``laf_workload``) are built by :func:`build_helper` for :mod:`pylaf.trace`.
Every helper is compiled on first use into the user's cache directory
(:func:`build_dir`), under a name that carries the hash of its source and of
the compiler: editable and normal installs take the same path.

Typical use::

    from pylaf.live import run_kprog, thp_settings
    with thp_settings(sizes={"64kB": "always"}):
        res = run_kprog('''
            mmap a 1M align=64K
            write a 0 1M 4K
            snapshot done
        ''')
    print(res.ops[1].minflt, res.snapshots[0].mappings[0].folios_by_order)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from pylaf.errors import HostUnavailable
from pylaf.layout import Run, labelled
from pylaf.live.sysfs import SizeKey, size_kb

# --------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class MappingLayout:
    """One mapping of a snapshot: its runs and the counts laf_kprog reported."""

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
    #: fork programs only: PTEs with pagemap PM_MMAP_EXCLUSIVE (bit 56), and
    #: the histogram of /proc/kpagecount over the mapped pages of anon folios
    excl: Optional[int] = None
    kpc: dict[int, int] = field(default_factory=dict)

    def layout(self, page_size: int) -> list[tuple[int, int, str]]:
        """``(offset, length_bytes, label)`` per run (see :meth:`pylaf.layout.Run.label`)."""
        return labelled(self.runs, page_size)


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

    def get(self, size: SizeKey, stat: str) -> int:
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
    proc: str = "main"                   # the process that ran the op (fork programs)


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
    proc: str = "main"                   # whose address space (fork programs)

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

    def snapshot(self, name: str, proc: str = "main") -> Snapshot:
        for s in self.snapshots:
            if s.name == name and s.proc == proc:
                return s
        raise KeyError(name)


def _delta(d: Mapping[str, Any]) -> CounterDelta:
    return CounterDelta(
        mthp={size_kb(k): dict(v) for k, v in d.get("mthp", {}).items()},
        vmstat=dict(d.get("vmstat", {})),
    )


def _intkeys(d: Mapping[str, int]) -> dict[int, int]:
    return {int(k): v for k, v in d.items()}


def _flag(v: Optional[int]) -> Optional[bool]:
    return None if v is None else bool(v)


def _run(r: Mapping[str, Any], page_size: int) -> Run:
    """One run of laf_kprog's JSON (``off`` in bytes, ``n`` in pages)."""
    return Run(page=r["off"] // page_size, pages=r["n"], kind=r["kind"], order=r.get("order"),
               whole=r.get("whole"), folios=r.get("folios", 0), idx=r.get("idx"),
               thp=_flag(r.get("thp")), anon=_flag(r.get("anon")))


def _mapping(m: Mapping[str, Any], page_size: int) -> MappingLayout:
    return MappingLayout(
        id=m["id"], addr=m["addr"], len=m["len"],
        runs=[_run(r, page_size) for r in m.get("runs", [])],
        present=m["present"], zero=m["zero"], hzero=m["hzero"], swap=m["swap"],
        pages_by_order=_intkeys(m["pages_by_order"]),
        folios_by_order=_intkeys(m["folios_by_order"]),
        partial_by_order=_intkeys(m["partial_by_order"]),
        excl=m.get("excl"), kpc=_intkeys(m.get("kpc", {})),
    )


def _vma(v: Mapping[str, Any]) -> Vma:
    return Vma(start=v["start"], end=v["end"], perms=v["perms"], ids=list(v["ids"]),
               rss_kb=v.get("Rss_kb", 0), anonymous_kb=v.get("Anonymous_kb", 0),
               anon_huge_kb=v.get("AnonHugePages_kb", 0),
               thp_eligible=v.get("thp_eligible"), vmflags=v.get("vmflags", ""))


def _op(o: Mapping[str, Any]) -> OpResult:
    return OpResult(i=o["i"], line=o["line"], op=o["op"], text=o["text"], rc=o["rc"],
                    errno=o["errno"], delta=_delta(o), minflt=o.get("minflt"),
                    majflt=o.get("majflt"), addr=o.get("addr"), signal=o.get("signal"),
                    fault_off=o.get("fault_off"), get_thp_disable=o.get("get_thp_disable"),
                    proc=o.get("proc", "main"))


def _snapshot(s: Mapping[str, Any], page_size: int) -> Snapshot:
    return Snapshot(name=s["name"], after_op=s["after_op"], minflt=s["minflt"],
                    majflt=s["majflt"], delta=_delta(s), rss=dict(s["rss"]),
                    mappings=[_mapping(m, page_size) for m in s["mappings"]],
                    vmas=[_vma(v) for v in s["vmas"]], proc=s.get("proc", "main"))


def parse_kprog_output(data: Mapping[str, Any]) -> KprogResult:
    """laf_kprog's JSON as typed values."""
    page_size = data["page_size"]
    return KprogResult(page_size=page_size, sizes_kb=list(data["sizes_kb"]),
                       settings=dict(data["settings"]), ops=[_op(o) for o in data["ops"]],
                       snapshots=[_snapshot(s, page_size) for s in data["snapshots"]],
                       raw=dict(data))


# --------------------------------------------------------------------------
# building the helpers


class HelperUnavailable(HostUnavailable, RuntimeError):
    """A ``pylaf/live/csrc`` helper cannot be built here (no source, no C
    compiler, compile error, no writable cache): a missing capability of the
    host, not a finding."""


#: the helpers' C sources, shipped inside the package
HELPER_SOURCES = Path(__file__).resolve().parent / "csrc"


def build_dir() -> Path:
    """Where helpers are compiled (and :mod:`pylaf.experiments.costmodel`
    caches its measurements): ``$PYLAF_BUILD_DIR``, else
    ``$XDG_CACHE_HOME/pylaf``, else ``~/.cache/pylaf``."""
    env = os.environ.get("PYLAF_BUILD_DIR")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache) if cache else Path.home() / ".cache") / "pylaf"


def helper_source(name: str) -> Path:
    """``pylaf/live/csrc/<name>.c`` (``$PYLAF_KPROG_SRC`` overrides laf_kprog's)."""
    env = os.environ.get("PYLAF_KPROG_SRC") if name == "laf_kprog" else None
    src = Path(env) if env else HELPER_SOURCES / f"{name}.c"
    if not src.is_file():
        raise HelperUnavailable(f"{name} source not found at {src}")
    return src


def _compile(name: str, cc: str, src: Path, exe: Path) -> None:
    """``cc -O2`` *src* into *exe* through a temporary file and a rename."""
    try:
        exe.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{exe.name}-", dir=exe.parent)
    except OSError as e:
        raise HelperUnavailable(f"building {name} failed: cannot write to {exe.parent} "
                                f"({e.strerror}; set $PYLAF_BUILD_DIR)") from e
    os.close(fd)
    try:
        extra = ["-pthread"] if "pthread.h" in src.read_text() else []
        subprocess.run([cc, "-O2", "-o", tmp, str(src), *extra], check=True,
                       capture_output=True, text=True)
        os.chmod(tmp, 0o755)
        os.replace(tmp, exe)
    except FileNotFoundError as e:
        raise HelperUnavailable(f"building {name} failed: C compiler {cc!r} not found "
                                f"(install gcc or set $CC)") from e
    except subprocess.CalledProcessError as e:
        raise HelperUnavailable(f"building {name} failed:\n{e.stderr}") from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def build_helper(name: str, cc: Optional[str] = None, force: bool = False) -> Path:
    """Compile ``pylaf/live/csrc/<name>.c`` into ``<build>/kprog/<name>-<hash>``
    (hash of the source and the compiler's name) if needed (``laf_kprog``, ``laf_tracee``, ``laf_workload``)."""
    src = helper_source(name)
    cc = cc or os.environ.get("CC", "cc")
    digest = hashlib.sha256(src.read_bytes() + cc.encode()).hexdigest()[:16]
    exe = build_dir() / "kprog" / f"{name}-{digest}"
    if force or not exe.exists():
        _compile(name, cc, src, exe)
    return exe


def build_kprog(cc: Optional[str] = None, force: bool = False) -> Path:
    """Compile laf_kprog into ``<build>/kprog/laf_kprog-<srchash>`` if needed."""
    return build_helper("laf_kprog", cc, force)


# --------------------------------------------------------------------------
# running laf_kprog


ProgramText = Union[str, Iterable[str]]


def host_page_size() -> int:
    """The live host's base page size: laf_kprog's default touch stride."""
    return os.sysconf("SC_PAGE_SIZE")


def format_program(program: ProgramText) -> str:
    """One op per line, stripped, blank lines dropped."""
    lines = program.splitlines() if isinstance(program, str) else list(program)
    return "\n".join(line.strip() for line in lines if line.strip()) + "\n"


def run_kprog_raw(program: ProgramText, timeout: float = 300.0) -> dict[str, Any]:
    """Build (if needed) and run laf_kprog on *program*; its JSON as a dict."""
    exe = build_kprog()
    p = subprocess.run([str(exe)], input=format_program(program), capture_output=True,
                       text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"laf_kprog exited {p.returncode}: {p.stderr.strip()}")
    out: dict[str, Any] = json.loads(p.stdout)
    return out


def run_kprog(program: ProgramText, timeout: float = 300.0) -> KprogResult:
    """Build (if needed) and run laf_kprog on *program*; parse its JSON."""
    return parse_kprog_output(run_kprog_raw(program, timeout))


__all__ = [
    "HELPER_SOURCES",
    "CounterDelta",
    "HelperUnavailable",
    "KprogResult",
    "MappingLayout",
    "OpResult",
    "Snapshot",
    "Vma",
    "build_dir",
    "build_helper",
    "build_kprog",
    "format_program",
    "helper_source",
    "host_page_size",
    "parse_kprog_output",
    "run_kprog",
    "run_kprog_raw",
]
