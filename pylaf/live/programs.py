"""The live check's access programs and setting groups.

Each :class:`CheckProgram` is an access program in laf_kprog's op language
(see the header of ``pylaf/live/csrc/laf_kprog.c``); :data:`PROGRAMS` is the
deterministic suite :mod:`pylaf.live.check` runs on the live kernel and in the
emulator.  :data:`GROUPS` are the THP settings ``pylaf kernel check
--apply-settings`` runs them under (applied with
:func:`pylaf.live.sysfs.thp_settings`, which restores every knob).

The table is long on purpose: one program per behaviour of mm/memory.c
do_anonymous_page() / alloc_anon_folio() and mm/huge_memory.c
do_huge_pmd_anonymous_page() that the live host can show.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from pylaf.live.kprog import host_page_size
from pylaf.live.sysfs import ThpSettings
from pylaf.sizes import parse_size

# --------------------------------------------------------------------------
# the op language


def parse_num(text: str) -> int:
    """A number of the op language: ``4K``, ``0x1000``, ``-4K``.

    >>> parse_num("-4K"), parse_num("0x10"), parse_num("2M")
    (-4096, 16, 2097152)
    """
    s = text.strip()
    neg = s.startswith("-")
    if neg:
        s = s[1:]
    v = int(s, 0) if s.lower().startswith("0x") else parse_size(s)
    return -v if neg else v


def parse_options(tokens: Sequence[str]) -> dict[str, str]:
    """``["align=2M", "fixed"]`` -> ``{"align": "2M", "fixed": "1"}``."""
    out = {}
    for t in tokens:
        k, eq, v = t.partition("=")
        out[k] = v if eq else "1"
    return out


@dataclass(frozen=True)
class CheckProgram:
    name: str
    description: str
    text: str

    def lines(self) -> list[str]:
        """The ops, comments and blank lines dropped."""
        out = []
        for raw in self.text.splitlines():
            line = raw.split("#", 1)[0].strip()
            if line:
                out.append(line)
        return out

    def ops(self) -> list[str]:
        """The ops that laf_kprog reports on (every line but ``snapshot``)."""
        return [ln for ln in self.lines() if ln.split()[0] != "snapshot"]

    def chunked(self, max_accesses: int = 64) -> CheckProgram:
        """The same program with long touch ops split (see :func:`chunk_program`)."""
        return CheckProgram(self.name, self.description,
                            "\n".join(chunk_program(self.lines(), max_accesses)))


def _chunk_touch(tok: Sequence[str], max_accesses: int, page_size: int) -> list[str]:
    off, length = parse_num(tok[2]), parse_num(tok[3])
    stride = parse_num(tok[4]) if len(tok) > 4 else page_size
    st = abs(stride)
    n = (length + st - 1) // st
    if n <= max_accesses:
        return [" ".join(tok)]
    chunks = [(lo, min(n, lo + max_accesses)) for lo in range(0, n, max_accesses)]
    if stride < 0:
        chunks.reverse()
    return [f"{tok[0]} {tok[1]} {off + lo * st} {(hi - lo) * st} {stride}" for lo, hi in chunks]


def chunk_program(lines: Sequence[str], max_accesses: int = 64,
                  page_size: Optional[int] = None) -> list[str]:
    """Split every read/write op into ops of at most *max_accesses* touches,
    visiting the same addresses in the same order.  ``page_size``: the default
    stride (laf_kprog's: the live host's page size).

    Kernel counters are system-wide and every op's counter window can catch
    other processes' events; short windows make it far more likely that, for
    every op, at least one of several runs saw none
    (:func:`pylaf.live.sides.combine_attempts`).
    """
    ps = page_size or host_page_size()
    out: list[str] = []
    for ln in lines:
        tok = ln.split()
        if tok[0] in ("read", "write") and len(tok) >= 4:
            out.extend(_chunk_touch(tok, max_accesses, ps))
        else:
            out.append(ln)
    return out


def _p(name: str, description: str, text: str) -> CheckProgram:
    return CheckProgram(name, description, text)


# --------------------------------------------------------------------------
# programs


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
    #: keyword arguments for :func:`pylaf.live.sysfs.thp_settings`; None: leave as is
    settings: Optional[Mapping[str, Any]]
    programs: Optional[tuple[str, ...]] = None     # None: the whole suite

    def unavailable(self, current: ThpSettings) -> Optional[str]:
        """None if the group can run on a host with *current* knobs, else why not."""
        s = self.settings or {}
        if int(s.get("anon_beside_full", 0)) and current.anon_beside_full is None:
            return "this kernel has no anon_beside_full knob"
        return None

    def thp_settings_kwargs(self, current: ThpSettings) -> dict[str, Any]:
        """:attr:`settings` without the knobs this host lacks (anon_beside_full=0
        is the behaviour of a kernel without the knob)."""
        kw = dict(self.settings or {})
        if current.anon_beside_full is None:
            kw.pop("anon_beside_full", None)
        return kw


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


__all__ = ["DEFAULT_GROUP", "GROUPS", "GROUPS_BY_NAME", "PROGRAMS", "PROGRAMS_BY_NAME", "CheckProgram",
           "SettingGroup", "chunk_program", "parse_num", "parse_options"]
