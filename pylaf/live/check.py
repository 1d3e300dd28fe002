"""Validate the emulator against the live kernel, program by program.

Each :class:`CheckProgram` is an access program in laf_kprog's op language
(see the header of ``csrc/kprog/laf_kprog.c``).  :func:`check_program` runs
it twice:

* on the **live kernel** through :func:`pylaf.kernel.run_kprog`;
* in the **emulator**, op by op through the :class:`~pylaf.AddressSpace` API,
  mapping every VMA with ``fixed=True`` at the very address the kernel
  reported, so placement and alignment are identical on both sides.  The
  emulator's policy is :meth:`Policy.from_sysfs_values` of the sysfs values read while the kernel
  settings under test are applied.

and compares, per program: minor faults per touch op (``ru_minflt`` against
``stats.min_flt``), per-size ``anon_fault_alloc`` / ``anon_fault_fallback`` /
``anon_fault_fallback_charge`` / ``anon_fault_declined`` / ``nr_anon`` /
``split_deferred`` / ``nr_anon_partially_mapped``, the PMD vmstat counters,
the RSS of the test mappings, and at every snapshot the folio layout of every
mapping (kernel: pagemap + kpageflags; emulator: ``read_ptes`` orders).

Kernel counters are system-wide.  A disagreement is re-run (``retries``);
``thp_collapse_alloc`` must stay 0 (khugepaged interference), otherwise the
run is discarded and retried too.  Whatever remains is reported, never
hidden.

Setting groups (:data:`GROUPS`) are applied with :func:`pylaf.kernel.thp_settings`,
which restores every knob on every exit path.
"""
from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from pylaf.address_space import AddressSpace
from pylaf.config import Config
from pylaf.errors import LafError
from pylaf.live import host as K
from pylaf.policy import Policy
from pylaf.render import format_table
from pylaf.sizes import format_size, parse_size

PAGE = 4096

# --------------------------------------------------------------------------
# programs


@dataclass(frozen=True)
class CheckProgram:
    name: str
    description: str
    text: str

    def lines(self) -> list[str]:
        out = []
        for raw in self.text.splitlines():
            line = raw.split("#", 1)[0].strip()
            if line:
                out.append(line)
        return out

    def chunked(self, max_accesses: int = 64) -> CheckProgram:
        """The same program with long touch ops split (see :func:`chunk_program`)."""
        return CheckProgram(self.name, self.description,
                            "\n".join(chunk_program(self.lines(), max_accesses)))


def chunk_program(lines: Sequence[str], max_accesses: int = 64) -> list[str]:
    """Split every read/write op into ops of at most *max_accesses* touches,
    visiting the same addresses in the same order.

    Kernel counters are system-wide and every op's counter window can catch
    other processes' events; short windows make it far more likely that, for
    every op, at least one of several runs saw none (:func:`combine_attempts`).
    """
    out: list[str] = []
    for ln in lines:
        tok = ln.split()
        if tok[0] not in ("read", "write") or len(tok) < 4:
            out.append(ln)
            continue
        off, length = _num(tok[2]), _num(tok[3])
        stride = _num(tok[4]) if len(tok) > 4 else PAGE
        st = abs(stride)
        n = (length + st - 1) // st
        if n <= max_accesses:
            out.append(ln)
            continue
        chunks = [(lo, min(n, lo + max_accesses)) for lo in range(0, n, max_accesses)]
        if stride < 0:
            chunks.reverse()
        for lo, hi in chunks:
            out.append(f"{tok[0]} {tok[1]} {off + lo * st} {(hi - lo) * st} {stride}")
    return out


def _p(name: str, description: str, text: str) -> CheckProgram:
    return CheckProgram(name, description, text)


#: The deterministic suite.  Every program maps its own VMAs with
#: ``align=2M [misalign=N]`` (a PROT_NONE reservation + MAP_FIXED) so their
#: placement relative to every folio size up to the PMD is the same in every
#: run, and nothing else of the process can merge with them.  Only ops the emulator models are used (mmap/munmap, madvise
#: hugepage/nohugepage/dontneed, prctl thp_disable, read/write).
PROGRAMS: tuple[CheckProgram, ...] = (
    _p("seq_fill_1M", "1M VMA, 64K-aligned, written page by page ascending", """
        mmap a 1M align=2M
        write a 0 1M 4K
        snapshot s
    """),
    _p("seq_fill_desc", "same VMA written page by page descending", """
        mmap a 1M align=2M
        write a 0 1M -4K
        snapshot s
    """),
    _p("seq_fill_4M_pmd", "4M VMA, 2M-aligned, written ascending (crosses a PMD boundary)", """
        mmap a 4M align=2M
        write a 0 4M 4K
        snapshot s
    """),
    _p("unaligned_8K", "1M VMA starting and ending 8K past a 64K boundary", """
        mmap a 1M align=2M misalign=8K
        write a 0 1M 4K
        snapshot s
    """),
    _p("unaligned_16K", "192K VMA starting 16K past a 64K boundary", """
        mmap a 192K align=2M misalign=2M
        write a 0 192K 4K
        snapshot s
    """),
    _p("edge_fallback_mixed", "100K VMA at +4K: sizes that fit only away from the edges", """
        mmap a 100K align=2M misalign=4K
        write a 0 100K 4K
        mmap b 72K align=2M misalign=28K
        write b 0 72K -4K
        snapshot s
    """),
    _p("small_vmas", "VMAs of 64K, 48K, 8K and 12K (folio larger than the VMA)", """
        mmap a 64K align=2M
        mmap b 48K align=2M misalign=2M
        mmap c 8K align=2M
        mmap d 12K align=2M misalign=4K
        write a 0 64K 4K
        write b 0 48K 4K
        write c 0 8K 4K
        write d 0 12K 4K
        snapshot s
    """),
    _p("zero_read_then_write", "read (zero page) then writes around it", """
        mmap a 128K align=2M
        read a 0
        write a 0
        write a 8K
        write a 64K
        snapshot s1
        read a 16K 48K 4K
        write a 16K 48K 4K
        write a 64K 64K 4K
        snapshot s2
    """),
    _p("read_all_then_write_all", "512K read page by page, then written page by page", """
        mmap a 512K align=2M
        read a 0 512K 4K
        write a 0 512K 4K
        snapshot s
    """),
    _p("sparse_writes", "isolated writes in an 8M 2M-aligned VMA, then a dense 1M and a read 512K", """
        mmap a 8M align=2M
        write a 0
        write a 100K
        write a 700K
        write a 1500K
        write a 2052K
        write a 3000K
        write a 4096K
        write a 4100K
        write a 6000K
        write a 8188K
        write a 5M 1M 4K
        read a 7M 512K 4K
        snapshot s
    """),
    _p("strided_writes", "writes with a 20K stride, then fill the holes", """
        mmap a 640K align=2M misalign=12K
        write a 0 640K 20K
        snapshot s1
        write a 0 640K 4K
        snapshot s2
    """),
    _p("dontneed_partial", "DONTNEED part of folios, a whole 64K block, then refault", """
        mmap a 256K align=2M
        write a 0 256K 4K
        madvise a 0 32K dontneed
        madvise a 128K 64K dontneed
        snapshot s1
        write a 128K 64K 4K
        write a 0 32K 4K
        snapshot s2
        munmap a 0 128K
        snapshot s3
    """),
    _p("dontneed_whole_pmd", "2M of order-0 pages, DONTNEED 2M in one call (frees the PTE table), then hugepage write", """
        mmap a 2M align=2M
        madvise a 0 2M nohugepage
        write a 0 2M 4K
        madvise a 0 2M dontneed
        madvise a 0 2M hugepage
        write a 0
        snapshot s
    """),
    _p("dontneed_two_calls", "as dontneed_whole_pmd but DONTNEED in two 1M calls (table kept)", """
        mmap a 2M align=2M
        madvise a 0 2M nohugepage
        write a 0 2M 4K
        madvise a 0 1M dontneed
        madvise a 1M 1M dontneed
        madvise a 0 2M hugepage
        write a 0
        write a 1M 64K 4K
        snapshot s
    """),
    _p("pmd_madvise", "MADV_HUGEPAGE 4M: write, huge-zero read, write to the huge zero PMD", """
        mmap a 4M align=2M
        madvise a 0 4M hugepage
        write a 4K
        read a 2M
        read a 2052K
        write a 2056K
        snapshot s
    """),
    _p("pmd_madvise_unaligned", "MADV_HUGEPAGE 3M VMA starting 1M past a 2M boundary, filled", """
        mmap a 3M align=2M misalign=1M
        madvise a 0 3M hugepage
        write a 0 3M 4K
        snapshot s
    """),
    _p("pmd_after_small", "MADV_HUGEPAGE after a read fault created the PTE table", """
        mmap a 2M align=2M
        read a 1M
        madvise a 0 2M hugepage
        write a 0 256K 4K
        snapshot s
    """),
    _p("nohugepage_half", "MADV_NOHUGEPAGE on the first half of a 256K VMA", """
        mmap a 256K align=2M
        madvise a 0 128K nohugepage
        write a 0 256K 4K
        snapshot s
    """),
    _p("prctl_disable", "prctl(PR_SET_THP_DISABLE, 1): plain and MADV_HUGEPAGE VMAs", """
        prctl thp_disable 1
        mmap a 256K align=2M
        mmap b 256K align=2M
        madvise b 0 256K hugepage
        write a 0 256K 4K
        write b 0 256K 4K
        snapshot s
    """),
    _p("prctl_except_advised", "PR_THP_DISABLE_EXCEPT_ADVISED, then reset to 0", """
        prctl thp_disable except_advised
        mmap a 256K align=2M
        mmap b 256K align=2M
        madvise b 0 256K hugepage
        mmap c 2M align=2M
        madvise c 0 2M hugepage
        mmap d 2M align=2M
        write a 0 256K 4K
        write b 0 256K 4K
        write c 0
        write d 0
        prctl thp_disable 0
        mmap e 256K align=2M
        write e 0 256K 4K
        snapshot s
    """),
    _p("merge_adjacent", "two 1M mmaps that merge into one 2M-aligned VMA, then hugepage + write", """
        mmap x 1M align=2M
        mmap y 1M hint=@x+1M fixed
        madvise x 0 2M hugepage
        write y 0
        write x 0 1M 4K
        snapshot s
    """),
    _p("munmap_middle", "write 1M, unmap 64K in the middle (splits folios), write again", """
        mmap a 1M align=2M
        write a 0 1M 4K
        munmap a 32K 64K
        snapshot s1
        write a 0 32K 4K
        write a 96K 928K 4K
        snapshot s2
    """),
    _p("pmd_split_dontneed", "PMD THPs split by a partial DONTNEED, a partial munmap, then refaults", """
        mmap a 4M align=2M
        madvise a 0 4M hugepage
        write a 0
        write a 2M
        madvise a 64K 64K dontneed
        munmap a 3M 1M
        snapshot s1
        write a 64K 64K 4K
        write a 2M 1M 4K
        snapshot s2
    """),
    _p("pmd_split_vma", "MADV_NOHUGEPAGE on the middle of a PMD THP (VMA split splits the PMD)", """
        mmap a 2M align=2M
        madvise a 0 2M hugepage
        write a 0
        madvise a 512K 512K nohugepage
        write a 256K 1M 4K
        snapshot s
    """),
    _p("hzero_then_writes", "huge zero PMD read over 2M, then page-by-page writes; partial DONTNEED of a huge zero PMD", """
        mmap a 4M align=2M
        madvise a 0 4M hugepage
        read a 0 2M 4K
        write a 0 2M 4K
        read a 2M
        madvise a 2M 64K dontneed
        write a 2M 128K 4K
        snapshot s
    """),
    _p("prot_read_only", "a read-only VMA: reads map the zero page, a write is SIGSEGV", """
        mmap a 128K align=2M prot=r
        read a 0 128K 4K
        write a 64K
        mmap b 64K align=2M misalign=64K
        write b 0 64K 4K
        snapshot s
    """),
    _p("madvise_over_hole", "DONTNEED and HUGEPAGE over two VMAs with a hole between them (ENOMEM)", """
        mmap a 256K align=2M
        mmap b 128K hint=@a+384K fixed
        write a 0 256K 4K
        write b 0 128K 4K
        madvise a 0 512K dontneed
        madvise a 0 512K hugepage
        write a 0 64K 4K
        write b 64K 64K 4K
        snapshot s
    """),
    _p("beside_full_probe", "fill a 64K block, then isolated writes left/right of it (anon_beside_full)", """
        mmap a 1M align=2M
        write a 448K 64K 4K
        write a 512K
        write a 384K
        write a 640K
        read a 704K 64K 4K
        write a 768K
        snapshot s
    """),
)

PROGRAMS_BY_NAME: dict[str, CheckProgram] = {p.name: p for p in PROGRAMS}

# --------------------------------------------------------------------------
# setting groups


@dataclass(frozen=True)
class SettingGroup:
    name: str
    description: str
    #: keyword arguments for :func:`pylaf.kernel.thp_settings`; None: leave as is
    settings: Optional[Mapping[str, Any]]
    programs: Optional[tuple[str, ...]] = None     # None: the whole suite


DEFAULT_GROUP = SettingGroup("current", "the machine's settings as found", None)

#: The groups ``--apply-settings`` runs.  ``all_sizes="never"`` first so that
#: sizes not mentioned are off whatever the machine had.
GROUPS: tuple[SettingGroup, ...] = (
    SettingGroup("4K-only", "global never, every size never",
                 dict(enabled="never", all_sizes="never", anon_beside_full=0)),
    SettingGroup("16K-always", "16K always, global madvise, 2M inherit",
                 dict(enabled="madvise", all_sizes="never", sizes={"16kB": "always", "2048kB": "inherit"},
                      anon_beside_full=0)),
    SettingGroup("64K-always", "64K always, global madvise, 2M inherit",
                 dict(enabled="madvise", all_sizes="never", sizes={"64kB": "always", "2048kB": "inherit"},
                      anon_beside_full=0)),
    SettingGroup("16K-64K-mixed", "16K, 32K, 64K always; 128K madvise; global madvise; 2M inherit",
                 dict(enabled="madvise", all_sizes="never",
                      sizes={"16kB": "always", "32kB": "always", "64kB": "always",
                             "128kB": "madvise", "2048kB": "inherit"},
                      anon_beside_full=0)),
    SettingGroup("all-sizes-always", "global always, every size 16K..2M inherit",
                 dict(enabled="always", all_sizes="inherit", anon_beside_full=0)),
    SettingGroup("pmd-madvise", "global madvise, 2M inherit, 64K madvise (MADV_HUGEPAGE regions)",
                 dict(enabled="madvise", all_sizes="never", sizes={"64kB": "madvise", "2048kB": "inherit"},
                      anon_beside_full=0)),
    SettingGroup("pmd-madvise-nozero", "as pmd-madvise with use_zero_page=0",
                 dict(enabled="madvise", use_zero_page=0, all_sizes="never",
                      sizes={"64kB": "madvise", "2048kB": "inherit"}, anon_beside_full=0)),
    SettingGroup("nohugepage-prctl", "64K always + global always (NOHUGEPAGE / prctl programs)",
                 dict(enabled="always", all_sizes="never", sizes={"64kB": "always", "2048kB": "inherit"},
                      anon_beside_full=0),
                 programs=("nohugepage_half", "prctl_disable", "prctl_except_advised",
                           "merge_adjacent", "pmd_madvise")),
    SettingGroup("beside-full-64K", "anon_beside_full=1, 64K always",
                 dict(enabled="madvise", all_sizes="never", sizes={"64kB": "always", "2048kB": "inherit"},
                      anon_beside_full=1)),
    SettingGroup("beside-full-mixed", "anon_beside_full=1, 16K..1M always, 2M inherit, global madvise",
                 dict(enabled="madvise", all_sizes="always", sizes={"2048kB": "inherit"},
                      anon_beside_full=1)),
)

GROUPS_BY_NAME: dict[str, SettingGroup] = {g.name: g for g in GROUPS}


def _group_applicable(group: SettingGroup) -> Optional[str]:
    """None if the group can run here, else why not."""
    if group.settings is None:
        return None
    cur = K.read_thp_settings()
    s = group.settings
    if "anon_beside_full" in s and cur.anon_beside_full is None:
        if int(s["anon_beside_full"]):
            return "this kernel has no anon_beside_full knob"
    return None


def _group_kwargs(group: SettingGroup) -> dict[str, Any]:
    kw = dict(group.settings or {})
    if "anon_beside_full" in kw and K.read_thp_settings().anon_beside_full is None:
        kw.pop("anon_beside_full")
    return kw


# --------------------------------------------------------------------------
# emulator side


STAT_NAMES: tuple[str, ...] = (
    "anon_fault_alloc", "anon_fault_fallback", "anon_fault_fallback_charge",
    "anon_fault_declined", "nr_anon", "split_deferred", "nr_anon_partially_mapped",
)
VMSTAT_NAMES: tuple[str, ...] = (
    "thp_fault_alloc", "thp_fault_fallback", "thp_fault_fallback_charge", "thp_split_pmd",
    "thp_deferred_split_page",
)
#: vmstat counters that mean "someone else touched THP state": must stay 0.
INTERFERENCE = ("thp_collapse_alloc", "thp_collapse_alloc_failed")


@dataclass
class SideResult:
    """What one side (kernel or emulator) reported for one program."""

    op_faults: list[Optional[int]]                 # per op (None: not a touch op)
    op_signal: list[Optional[int]]
    counters: dict[str, dict[int, int]]            # stat -> {kB: delta}, summed over ops
    vmstat: dict[str, int]
    snapshots: dict[str, dict[str, Any]]           # name -> {"rss_kb", "mappings": {id: layout}}
    vmas: dict[str, list[tuple[int, int]]] = field(default_factory=dict)   # snapshot -> VMAs
    #: per op: {(stat, kB): delta} and {vmstat: delta} (kernel side only)
    op_counters: list[dict[tuple[str, int], int]] = field(default_factory=list)
    op_vmstat: list[dict[str, int]] = field(default_factory=list)
    #: per op: errno of a failed munmap/madvise/mmap (0: success)
    op_errno: list[int] = field(default_factory=list)

    @property
    def faults(self) -> int:
        return sum(f for f in self.op_faults if f)


#: Gauges and the event counter that increments them.  ``nr_anon`` goes up
#: only at anon_fault_alloc here (no swap, no mTHP collapse for anon in 6.18)
#: and down when a folio is freed; ``nr_anon_partially_mapped`` goes up only
#: with split_deferred.
GAUGE_SOURCE = {"nr_anon": "anon_fault_alloc", "nr_anon_partially_mapped": "split_deferred"}

#: Counters that only ever go up: noise from other processes can only add.
MONOTONIC = {"anon_fault_alloc", "anon_fault_fallback", "anon_fault_fallback_charge",
             "anon_fault_declined", "split_deferred"}


def _median(values: Sequence[int]) -> int:
    v = sorted(values)
    return v[(len(v) - 1) // 2]


def combine_attempts(attempts: Sequence[SideResult]) -> SideResult:
    """Per-op estimate of the kernel's own counter deltas over several runs.

    Kernel counters are system-wide.  Every run of a program does exactly the
    same thing relative to 64K/2M boundaries, so its own contribution to each
    op's delta is the same in every run; other processes can only *add* to
    event counters.  Event counters: per-op minimum.  Gauges (nr_anon,
    nr_anon_partially_mapped, whose noise goes both ways): the minimum of
    their source event counter plus the median of (gauge - source): other
    processes' allocations move both and cancel out in the difference.
    vmstat: per-op minimum (events) or median.  Faults, layouts and
    VMAs are per-process and come from the first run.
    """
    first = attempts[0]
    nops = len(first.op_counters)
    op_counters: list[dict[tuple[str, int], int]] = []
    op_vmstat: list[dict[str, int]] = []
    for i in range(nops):
        keys = set().union(*(a.op_counters[i].keys() for a in attempts))
        d = {}
        for key in keys:
            vals = [a.op_counters[i].get(key, 0) for a in attempts]
            if key[0] in MONOTONIC:
                d[key] = min(vals)
            elif key[0] in GAUGE_SOURCE:
                # gauge = its event counter - what was freed: other processes'
                # allocations move both (cancelled by the difference), their
                # frees and the non-atomic reads of the two files move the
                # difference either way (median)
                src = (GAUGE_SOURCE[key[0]], key[1])
                ev = [a.op_counters[i].get(src, 0) for a in attempts]
                d[key] = min(ev) + _median([v - e for v, e in zip(vals, ev)])
            else:
                d[key] = _median(vals)
        op_counters.append({k: v for k, v in d.items() if v})
        vkeys = set().union(*(a.op_vmstat[i].keys() for a in attempts))
        vd = {}
        for key in vkeys:
            vals = [a.op_vmstat[i].get(key, 0) for a in attempts]
            vd[key] = min(vals) if key.startswith(("thp_fault", "thp_collapse", "thp_split",
                                                    "thp_deferred", "thp_zero")) else _median(vals)
        op_vmstat.append({k: v for k, v in vd.items() if v})
    counters, vmstat = _sum_ops(op_counters, op_vmstat)
    return SideResult(first.op_faults, first.op_signal, counters, vmstat, first.snapshots,
                      first.vmas, op_counters, op_vmstat, first.op_errno)


def _sum_ops(op_counters: Sequence[Mapping[tuple[str, int], int]],
             op_vmstat: Sequence[Mapping[str, int]]) -> tuple[dict[str, dict[int, int]], dict[str, int]]:
    counters: dict[str, dict[int, int]] = {n: {} for n in STAT_NAMES}
    vmstat: dict[str, int] = {}
    for d in op_counters:
        for (n, kb), v in d.items():
            if n in counters:
                counters[n][kb] = counters[n].get(kb, 0) + v
    for d in op_vmstat:
        for n, v in d.items():
            vmstat[n] = vmstat.get(n, 0) + v
    return ({k: {kb: v for kb, v in d.items() if v} for k, d in counters.items()},
            {k: v for k, v in vmstat.items() if v})


def _parse_kv(tokens: Sequence[str]) -> dict[str, str]:
    out = {}
    for t in tokens:
        k, eq, v = t.partition("=")
        out[k] = v if eq else "1"
    return out


def _num(s: str) -> int:
    s = s.strip()
    neg = s.startswith("-")
    if neg:
        s = s[1:]
    v = int(s, 0) if s.lower().startswith("0x") else parse_size(s)
    return -v if neg else v


def layout_from_orders(ptes: np.ndarray, orders: np.ndarray, page_size: int = PAGE) -> dict[str, Any]:
    """Folio layout of a range from ``read_ptes`` output, in laf_kprog's terms.

    Returns ``{"runs": [(off, len, label)], "folios": {order: n whole},
    "partial": {order: n pieces}, "pages": {order: n}, "zero": n, "hzero": n}``.
    """
    n = len(orders)
    runs: list[list[Any]] = []
    folios: dict[int, int] = {}
    partial: dict[int, int] = {}
    pages: dict[int, int] = {}
    zero = hzero = 0
    pfns = (ptes >> np.uint64(12)).astype(np.int64)
    i = 0
    while i < n:
        o = int(orders[i])
        if o == -1:
            kind, j, whole, order = "none", i + 1, None, None
        elif o == -2:
            kind, j, whole, order = "zero", i + 1, None, None
            zero += 1
        else:
            nr = 1 << (9 if o == -3 else o)
            pfn = int(pfns[i])
            head = pfn & ~(nr - 1)
            j = i + 1
            while j < n and int(orders[j]) == o and int(pfns[j]) == pfn + (j - i) and pfn + (j - i) < head + nr:
                j += 1
            order = 9 if o == -3 else o
            whole = (pfn == head and j - i == nr)
            if o == -3:
                kind = "hzero"
                hzero += j - i
            else:
                kind = "folio"
                pages[order] = pages.get(order, 0) + (j - i)
                if whole:
                    folios[order] = folios.get(order, 0) + 1
                else:
                    partial[order] = partial.get(order, 0) + 1
        piece = [i, j - i, kind, order, whole]
        if runs and runs[-1][2] == kind and (
                kind in ("none", "zero") or
                (runs[-1][4] and whole and runs[-1][3] == order)):
            runs[-1][1] += j - i
        else:
            runs.append(piece)
        i = j
    labelled = []
    for off, cnt, kind, order, whole in runs:
        if kind in ("folio",):
            lab = format_size(page_size << order)
            if not whole:
                lab += "-partial"
        else:
            lab = kind
        labelled.append((off * page_size, cnt * page_size, lab))
    return {"runs": labelled, "folios": folios, "partial": partial, "pages": pages,
            "zero": zero, "hzero": hzero}


def _kernel_layout(m: K.MappingLayout) -> dict[str, Any]:
    # kprog's "kind" for a partially mapped huge zero PMD piece is hzero; keep
    # the label without order like the emulator side does.
    runs = [(off, ln, "hzero" if lab.startswith("hzero") else lab) for off, ln, lab in m.layout()]
    return {"runs": runs, "folios": dict(m.folios_by_order), "partial": dict(m.partial_by_order),
            "pages": dict(m.pages_by_order), "zero": m.zero, "hzero": m.hzero}


def kernel_side(res: K.KprogResult) -> SideResult:
    op_faults = [o.minflt for o in res.ops]
    op_signal = [o.signal for o in res.ops]
    op_counters = [{(n, kb): v for kb, stats in o.delta.mthp.items() for n, v in stats.items()
                    if n in STAT_NAMES and v} for o in res.ops]
    op_vmstat = [{n: v for n, v in o.delta.vmstat.items() if v} for o in res.ops]
    counters, vmstat = _sum_ops(op_counters, op_vmstat)
    snaps: dict[str, dict[str, Any]] = {}
    vmas: dict[str, list[tuple[int, int]]] = {}
    for s in res.snapshots:
        seen = {}
        for v in s.vmas:
            seen[(v.start, v.end)] = v
        rss_kb = sum(v.anonymous_kb for v in seen.values())
        maps = {}
        for m in s.mappings:
            maps[m.id] = _kernel_layout(m)
        snaps[s.name] = {"rss_kb": rss_kb, "mappings": maps}
        vmas[s.name] = sorted(seen)
    side = SideResult(op_faults, op_signal, counters, vmstat, snaps, vmas, op_counters, op_vmstat)
    side.op_errno = [o.errno if o.rc else 0 for o in res.ops]
    return side


class Unsupported(Exception):
    """The program uses an op the emulator does not model."""


def emulator_side(program: CheckProgram, kres: K.KprogResult, policy: Policy,
                  ram: str = "2G") -> SideResult:
    """Run *program* in the emulator with the VMAs at the kernel's addresses."""
    lines = program.lines()
    ops = [ln for ln in lines if not ln.split()[0] == "snapshot"]
    if len(ops) != len(kres.ops):
        raise RuntimeError(f"{program.name}: {len(ops)} ops but the kernel ran {len(kres.ops)}")
    maps: dict[str, tuple[int, int]] = {}
    order: list[str] = []
    op_faults: list[Optional[int]] = []
    op_signal: list[Optional[int]] = []
    op_rc: dict[int, int] = {}
    snaps: dict[str, dict[str, Any]] = {}
    vmas: dict[str, list[tuple[int, int]]] = {}
    kops = iter(kres.ops)
    with AddressSpace(Config(policy=policy, ram=ram)) as mm:
        ps = mm.page_size
        for ln in lines:
            tok = ln.split()
            op = tok[0]
            if op == "snapshot":
                name = tok[1] if len(tok) > 1 else "snapshot"
                snaps[name] = _emu_snapshot(mm, maps, order)
                vmas[name] = _emu_vmas(mm, maps)
                continue
            kop = next(kops)
            faults: Optional[int] = None
            sig: Optional[int] = None
            if op == "mmap":
                if kop.rc != 0 or kop.addr is None:
                    op_faults.append(None)
                    op_signal.append(None)
                    continue
                length = _num(tok[2])
                opts = _parse_kv(tok[3:])
                prot = {"rw": "rw", "r": "r", "none": ""}.get(opts.get("prot", "rw"))
                if prot is None:
                    raise Unsupported(f"mmap prot={opts.get('prot')}")
                addr = int(kop.addr)
                # MAP_FIXED replaces whatever was there (the kernel side's
                # "fixed"); the emulator's fixed is NOREPLACE, so unmap first.
                mm.munmap(addr, length)
                mm.mmap(length, addr=addr, prot=prot, fixed=True)
                maps[tok[1]] = (addr, length)
                if tok[1] not in order:
                    order.append(tok[1])
            elif op in ("munmap", "madvise"):
                base = maps[tok[1]][0]
                off, length = _num(tok[2]), _num(tok[3])
                try:
                    if op == "munmap":
                        mm.munmap(base + off, length)
                    else:
                        adv = tok[4]
                        if adv not in ("hugepage", "nohugepage", "dontneed"):
                            raise Unsupported(f"madvise {adv}")
                        mm.madvise(base + off, length, adv)
                except LafError as exc:
                    op_rc[len(op_faults)] = exc.errno
            elif op == "prctl":
                v = tok[2]
                if v == "except_advised":
                    mm.set_thp_disable(True, except_advised=True)
                else:
                    mm.set_thp_disable(bool(int(v, 0)))
            elif op in ("read", "write"):
                base = maps[tok[1]][0]
                off = _num(tok[2])
                length = _num(tok[3]) if len(tok) > 3 else 1
                stride = _num(tok[4]) if len(tok) > 4 else ps
                st = abs(stride)
                n = (length + st - 1) // st
                addrs = base + off + np.arange(n, dtype=np.uint64) * np.uint64(st)
                if stride < 0:
                    addrs = addrs[::-1].copy()
                before = mm.stats().min_flt
                r = mm.touch(np.ascontiguousarray(addrs, dtype=np.uint64), write=(op == "write"))
                faults = mm.stats().min_flt - before
                if not r.ok:
                    sig = 11
            elif op == "sleep":
                pass
            else:
                raise Unsupported(op)
            op_faults.append(faults)
            op_signal.append(sig)
        st = mm.stats()
        counters: dict[str, dict[int, int]] = {}
        for n in STAT_NAMES:
            d = getattr(st, n)
            counters[n] = {parse_size(k) // 1024: int(v) for k, v in d.items() if v}
        vmstat = {n: int(getattr(st, n)) for n in VMSTAT_NAMES if getattr(st, n)}
        if "final" in {s.name for s in kres.snapshots} and "final" not in snaps:
            snaps["final"] = _emu_snapshot(mm, maps, order)
            vmas["final"] = _emu_vmas(mm, maps)
    side = SideResult(op_faults, op_signal, counters, vmstat, snaps, vmas)
    side.op_errno = [-op_rc[i] if i in op_rc else 0 for i in range(len(op_faults))]
    return side


def _emu_snapshot(mm: AddressSpace, maps: Mapping[str, tuple[int, int]],
                  order: Sequence[str]) -> dict[str, Any]:
    out = {}
    for mid in order:
        addr, length = maps[mid]
        ptes, orders = mm.read_ptes(addr, length // mm.page_size)
        out[mid] = layout_from_orders(ptes, orders, mm.page_size)
    return {"rss_kb": mm.stats().mm_anonpages * mm.page_size // 1024, "mappings": out}


def _emu_vmas(mm: AddressSpace, maps: Mapping[str, tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for v in mm.vmas():
        if any(v.start < a + ln and v.end > a for a, ln in maps.values()):
            out.append((v.start, v.end))
    return sorted(out)


# --------------------------------------------------------------------------
# comparison


@dataclass
class ProgramCheck:
    group: str
    program: str
    kernel: Optional[SideResult]
    emulator: Optional[SideResult]
    mismatches: list[str]
    notes: list[str]
    attempts: int = 1
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.mismatches

    @property
    def gauge_noise_only(self) -> bool:
        """Only the system-wide gauges (nr_anon, nr_anon_partially_mapped)
        still disagree; faults, layouts, RSS and every event counter agree."""
        return bool(self.mismatches) and self.error is None and all(
            re.search(r"kB (nr_anon|nr_anon_partially_mapped): ", m) for m in self.mismatches)

    def as_dict(self) -> dict[str, Any]:
        def side(s: Optional[SideResult]) -> Optional[dict[str, Any]]:
            if s is None:
                return None
            return {"faults": s.faults, "op_faults": s.op_faults, "counters": s.counters,
                    "vmstat": s.vmstat, "snapshots": s.snapshots}
        return {"group": self.group, "program": self.program, "ok": self.ok,
                "mismatches": self.mismatches, "notes": self.notes, "attempts": self.attempts,
                "error": self.error, "kernel": side(self.kernel), "emulator": side(self.emulator)}


def compare_sides(program: CheckProgram, k: SideResult, e: SideResult) -> list[str]:
    """Every disagreement, as human-readable lines."""
    out: list[str] = []
    ops = [ln for ln in program.lines() if ln.split()[0] != "snapshot"]
    for i, (kf, ef) in enumerate(zip(k.op_faults, e.op_faults)):
        if kf is not None and kf != ef:
            out.append(f"op {i} `{ops[i]}`: faults kernel={kf} emulator={ef}")
    for i, (ks, es) in enumerate(zip(k.op_signal, e.op_signal)):
        if bool(ks) != bool(es):
            out.append(f"op {i} `{ops[i]}`: signal kernel={ks} emulator={es}")
    for i, (kerr, eerr) in enumerate(zip(k.op_errno, e.op_errno)):
        if kerr != eerr:
            out.append(f"op {i} `{ops[i]}`: errno kernel={kerr} emulator={eerr}")
    for n in STAT_NAMES:
        kd, ed = k.counters.get(n, {}), e.counters.get(n, {})
        for kb in sorted(set(kd) | set(ed)):
            if kd.get(kb, 0) != ed.get(kb, 0):
                out.append(f"{kb}kB {n}: kernel={kd.get(kb, 0)} emulator={ed.get(kb, 0)}")
    for n in VMSTAT_NAMES:
        if k.vmstat.get(n, 0) != e.vmstat.get(n, 0):
            out.append(f"vmstat {n}: kernel={k.vmstat.get(n, 0)} emulator={e.vmstat.get(n, 0)}")
    for sname, ks in k.snapshots.items():
        es = e.snapshots.get(sname)
        if es is None:
            out.append(f"snapshot {sname}: missing on the emulator side")
            continue
        if ks["rss_kb"] != es["rss_kb"]:
            out.append(f"snapshot {sname}: RSS kernel={ks['rss_kb']}kB emulator={es['rss_kb']}kB")
        for mid, kl in ks["mappings"].items():
            el = es["mappings"].get(mid)
            if el is None:
                out.append(f"snapshot {sname} mapping {mid}: missing on the emulator side")
                continue
            if kl["runs"] != el["runs"]:
                out.append(f"snapshot {sname} mapping {mid}: layout kernel={fmt_runs(kl['runs'])} "
                           f"emulator={fmt_runs(el['runs'])}")
        kv, ev = k.vmas.get(sname), e.vmas.get(sname)
        if kv is not None and ev is not None and kv != ev:
            out.append(f"snapshot {sname}: VMAs kernel={_fmt_vmas(kv)} emulator={_fmt_vmas(ev)}")
    return out


def _fmt_vmas(v: Sequence[tuple[int, int]]) -> str:
    return " ".join(f"{s:#x}-{e:#x}" for s, e in v)


def fmt_runs(runs: Sequence[tuple[int, int, str]]) -> str:
    return " ".join(f"{format_size(o) if o else '0'}+{format_size(n)}:{lab}" for o, n, lab in runs)


def histogram(side: SideResult) -> dict[str, int]:
    """Whole folios by size over all mappings at the last snapshot (+ partial pieces, zero)."""
    if not side.snapshots:
        return {}
    last = list(side.snapshots.values())[-1]
    h: dict[str, int] = {}
    for lay in last["mappings"].values():
        for o, n in lay["folios"].items():
            key = format_size(PAGE << int(o))
            h[key] = h.get(key, 0) + n
        for o, n in lay["partial"].items():
            key = format_size(PAGE << int(o)) + "p"
            h[key] = h.get(key, 0) + n
        if lay["zero"]:
            h["zero"] = h.get("zero", 0) + lay["zero"]
        if lay["hzero"]:
            h["hzero"] = h.get("hzero", 0) + lay["hzero"]
    return h


def _interference(k: SideResult) -> list[str]:
    return [f"{n}={k.vmstat[n]}" for n in INTERFERENCE if k.vmstat.get(n)]


def _is_exact_part(m: str) -> bool:
    """Mismatch lines about per-process facts (not system-wide counters)."""
    return m.startswith(("op ", "snapshot "))


def check_program(program: CheckProgram, group: str = "current", retries: int = 10,
                  policy: Optional[Policy] = None,
                  runner: Callable[[str], K.KprogResult] = K.run_kprog) -> ProgramCheck:
    """Run *program* on the kernel and in the emulator; compare.

    Faults, layouts, RSS and VMAs are per-process and must agree on the first
    run.  Kernel THP counters are system-wide: when they disagree the program
    is run again (up to *retries* more times) and the per-op estimate of
    :func:`combine_attempts` is compared instead; the notes say so.
    ``thp_collapse_alloc`` must stay 0 (khugepaged interference).
    """
    pol = policy or Policy.from_sysfs_values(K.read_thp_settings().raw())
    program = program.chunked()
    text = "\n".join(program.lines())
    notes: list[str] = []
    attempts: list[SideResult] = []
    es: Optional[SideResult] = None
    mism: list[str] = []
    first_noise = ""
    for attempt in range(1, retries + 2):
        try:
            kres = runner(text)
        except Exception as exc:
            return ProgramCheck(group, program.name, attempts[0] if attempts else None, es, [],
                                notes, attempt, f"kernel run failed: {exc}")
        ks = kernel_side(kres)
        if es is None:
            try:
                es = emulator_side(program, kres, pol)
            except Unsupported as exc:
                return ProgramCheck(group, program.name, ks, None, [], notes, attempt,
                                    f"emulator does not model: {exc}")
        if attempt > 1 and [m for m in compare_sides(program, ks, es) if _is_exact_part(m)
                            and "VMAs" not in m]:
            notes.append(f"run {attempt} discarded: its faults or layout differ from run 1")
            continue
        attempts.append(ks)
        kc = ks if attempt == 1 else combine_attempts(attempts)
        mism = compare_sides(program, kc, es)
        inter = _interference(kc)
        if inter:
            mism = mism + [f"khugepaged interference: {', '.join(inter)}"]
        if attempt == 1:
            exact = [m for m in mism if _is_exact_part(m)]
            if exact:
                # per-process facts disagree: not noise, no point in retrying
                return ProgramCheck(group, program.name, ks, es, mism, notes, attempt)
        if not mism:
            if attempt > 1:
                notes.append(f"counters agree after combining {len(attempts)} runs (per-op minimum "
                             f"of event counters; the first run saw system-wide noise: "
                             f"{first_noise})")
            return ProgramCheck(group, program.name, kc, es, [], notes, attempt)
        if attempt == 1:
            first_noise = "; ".join(mism[:3]) + (" ..." if len(mism) > 3 else "")
        # noise from other processes comes in bursts: back off
        time.sleep(min(2.0, 0.1 * 2 ** (attempt - 1)))
    return ProgramCheck(group, program.name, combine_attempts(attempts), es, mism,
                        notes + [f"still disagreeing after {len(attempts)} runs"], len(attempts))


@dataclass
class GroupResult:
    group: SettingGroup
    settings: dict[str, str]
    checks: list[ProgramCheck]
    skipped: Optional[str] = None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def run_group(group: SettingGroup, programs: Optional[Iterable[str]] = None,
              retries: int = 10, progress: Optional[Callable[[str], None]] = None) -> GroupResult:
    """Run the suite (or *programs*) under *group*'s settings (restored afterwards)."""
    why = _group_applicable(group)
    if why:
        return GroupResult(group, {}, [], skipped=why)
    names = list(programs) if programs is not None else [p.name for p in PROGRAMS]
    if group.programs is not None:
        names = [n for n in names if n in group.programs]
    # the lock also keeps other pylaf processes from changing knobs while the
    # machine's current settings are being measured
    ctx = K.thp_settings(**_group_kwargs(group)) if group.settings is not None else K.thp_lock()
    checks = []
    with ctx:
        settings = K.read_thp_settings().raw()
        pol = Policy.from_sysfs_values(K.read_thp_settings().raw())
        for n in names:
            if progress:
                progress(f"{group.name}: {n}")
            checks.append(check_program(PROGRAMS_BY_NAME[n], group.name, retries, pol))
    return GroupResult(group, settings, checks)


def kernel_check_available() -> Optional[str]:
    """None if the live check can run here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root (reads /proc/kpageflags, writes sysfs)"
    if not os.access("/proc/kpageflags", os.R_OK):
        return "/proc/kpageflags is not readable"
    if not K.THP_DIR.is_dir():
        return f"{K.THP_DIR} missing (kernel without THP)"
    return None


# --------------------------------------------------------------------------
# text output


def _kv(d: Mapping[int, int]) -> str:
    return ",".join(f"{format_size(kb * 1024)}:{v}" for kb, v in sorted(d.items()) if v) or "-"


def _pair(k: Any, e: Any) -> str:
    return f"{k}" if k == e else f"{k}≠{e}"


def _counter_cell(c: ProgramCheck, stat: str) -> str:
    assert c.kernel is not None and c.emulator is not None
    kd, ed = c.kernel.counters.get(stat, {}), c.emulator.counters.get(stat, {})
    sizes = sorted(set(kd) | set(ed))
    if not sizes:
        return "-"
    return " ".join(f"{format_size(kb * 1024)}:{_pair(kd.get(kb, 0), ed.get(kb, 0))}" for kb in sizes)


def _hist_cell(c: ProgramCheck) -> str:
    assert c.kernel is not None and c.emulator is not None
    kh, eh = histogram(c.kernel), histogram(c.emulator)

    def key(s: str) -> tuple[int, int]:
        if s in ("zero", "hzero"):
            return (1 << 40, 0 if s == "zero" else 1)
        return (parse_size(s.rstrip("p")), s.endswith("p"))
    return " ".join(f"{s}×{_pair(kh.get(s, 0), eh.get(s, 0))}" for s in sorted(set(kh) | set(eh), key=key)) or "-"


def _rss_cell(c: ProgramCheck) -> str:
    assert c.kernel is not None and c.emulator is not None
    if not c.kernel.snapshots:
        return "-"
    name = list(c.kernel.snapshots)[-1]
    return _pair(c.kernel.snapshots[name]["rss_kb"], c.emulator.snapshots.get(name, {}).get("rss_kb"))


def format_group(gr: GroupResult, verbose: bool = False) -> str:
    out = [f"== {gr.group.name}: {gr.group.description}"]
    if gr.skipped:
        out.append(f"   skipped: {gr.skipped}")
        return "\n".join(out)
    s = gr.settings
    sizes = " ".join(f"{k.split('/')[0].replace('hugepages-', '')}={v}" for k, v in s.items()
                     if k.startswith("hugepages-") and v != "never") or "all sizes never"
    out.append(f"   enabled={s.get('enabled')} defrag={s.get('defrag')} use_zero_page={s.get('use_zero_page')}"
               f" anon_beside_full={s.get('anon_beside_full', 'n/a')}  {sizes}")
    rows = []
    for c in gr.checks:
        if c.error or c.kernel is None or c.emulator is None:
            rows.append([c.program, "-", "-", "-", "-", "-", "-", "ERROR"])
            continue
        rows.append([
            c.program,
            _pair(c.kernel.faults, c.emulator.faults),
            _counter_cell(c, "anon_fault_alloc"),
            _counter_cell(c, "anon_fault_fallback"),
            _counter_cell(c, "anon_fault_declined"),
            _rss_cell(c),
            _hist_cell(c),
            "ok" if c.ok else ("GAUGE-NOISE?" if c.gauge_noise_only else "MISMATCH"),
        ])
    out.append(format_table(rows, ["program", "faults", "anon_fault_alloc", "fallback",
                                   "declined", "RSS kB", "folios (last snapshot)", "status"]))
    bad = [c for c in gr.checks if not c.ok]
    for c in gr.checks:
        if c.error:
            out.append(f"   {c.program}: {c.error}")
        for m in c.mismatches:
            out.append(f"   {c.program}: {m}")
        if verbose or not c.ok:
            for n in c.notes:
                out.append(f"   {c.program}: note: {n}")
        elif c.notes:
            out.append(f"   {c.program}: note: {c.notes[-1]}")
    n_ok = sum(c.ok for c in gr.checks)
    noisy = [c.program for c in bad if c.gauge_noise_only]
    out.append(f"   {n_ok}/{len(gr.checks)} programs agree" + ("" if not bad else
               f"; disagree: {', '.join(c.program for c in bad)}"))
    if noisy:
        out.append(f"   ({', '.join(noisy)}: only the system-wide nr_anon gauges still differ after "
                   f"every retry while faults, per-process folio layouts and all event counters "
                   f"agree: other processes were changing them; re-run to confirm)")
    return "\n".join(out)


def summary_line(results: Sequence[GroupResult]) -> str:
    tot = sum(len(g.checks) for g in results)
    ok = sum(c.ok for g in results for c in g.checks)
    skipped = [g.group.name for g in results if g.skipped]
    noisy = sum(c.gauge_noise_only for g in results for c in g.checks)
    s = f"TOTAL: {ok}/{tot} program runs agree across {len(results) - len(skipped)} setting group(s)"
    if noisy:
        s += f"; {noisy} disagree only on system-wide nr_anon gauges (noise suspected)"
    if skipped:
        s += f"; skipped: {', '.join(skipped)}"
    return s


def results_as_dict(results: Sequence[GroupResult]) -> dict[str, Any]:
    return {"groups": [{"name": g.group.name, "description": g.group.description,
                        "settings": g.settings, "skipped": g.skipped,
                        "checks": [c.as_dict() for c in g.checks]} for g in results]}


def expected_original_ok(original: K.ThpSettings) -> bool:
    return K.read_thp_settings().raw() == original.raw()


__all__ = [
    "DEFAULT_GROUP",
    "GROUPS",
    "GROUPS_BY_NAME",
    "PROGRAMS",
    "PROGRAMS_BY_NAME",
    "CheckProgram",
    "GroupResult",
    "ProgramCheck",
    "SettingGroup",
    "SideResult",
    "Unsupported",
    "check_program",
    "compare_sides",
    "emulator_side",
    "format_group",
    "kernel_check_available",
    "kernel_side",
    "layout_from_orders",
    "results_as_dict",
    "run_group",
    "summary_line",
]
_ = dataclasses  # re-exported helpers use dataclasses at import time
