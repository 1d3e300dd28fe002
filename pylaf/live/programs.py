"""The live check's access programs and setting groups.

Each :class:`CheckProgram` is an access program in laf_kprog's op language
(see the header of ``pylaf/live/csrc/laf_kprog.c``); :data:`PROGRAMS` is the
deterministic suite :mod:`pylaf.live.check` runs on the live kernel and in the
emulator.  :data:`GROUPS` are the THP settings ``pylaf kernel check
--apply-settings`` runs them under (applied with
:func:`pylaf.live.sysfs.thp_settings`, which restores every knob).

Longer than 600 lines because the table is long on purpose: one
program per behaviour of mm/memory.c do_anonymous_page() / alloc_anon_folio()
and mm/huge_memory.c do_huge_pmd_anonymous_page() that the live host can show,
and :data:`FORK_PROGRAMS`, one per fork/COW behaviour (mm/memory.c
do_wp_page(), mm/mmap.c dup_mmap(), mm/huge_memory.c copy_huge_pmd()),
:data:`MPROTECT_PROGRAMS` and :data:`MREMAP_PROGRAMS`, one per mprotect /
mremap behaviour (mm/mprotect.c, mm/mremap.c).
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


def split_proc(line: str) -> tuple[str, list[str]]:
    """The process an op line runs in and its tokens (fork programs).

    >>> split_proc("@c write a 0 1M"), split_proc("fork c")
    (('c', ['write', 'a', '0', '1M']), ('main', ['fork', 'c']))
    """
    tok = line.split()
    if tok and tok[0].startswith("@"):
        return tok[0][1:], tok[1:]
    return "main", tok


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
        return [ln for ln in self.lines() if split_proc(ln)[1][0] != "snapshot"]

    @property
    def forks(self) -> bool:
        """The program has processes (a ``fork`` op)."""
        return any(split_proc(ln)[1][0] == "fork" for ln in self.lines())

    def chunked(self, max_accesses: int = 64) -> CheckProgram:
        """The same program with long touch ops split (see :func:`chunk_program`)."""
        return CheckProgram(self.name, self.description,
                            "\n".join(chunk_program(self.lines(), max_accesses)))


def _chunk_touch(prefix: str, tok: Sequence[str], max_accesses: int, page_size: int) -> list[str]:
    off, length = parse_num(tok[2]), parse_num(tok[3])
    stride = parse_num(tok[4]) if len(tok) > 4 else page_size
    st = abs(stride)
    n = (length + st - 1) // st
    if n <= max_accesses:
        return [prefix + " ".join(tok)]
    chunks = [(lo, min(n, lo + max_accesses)) for lo in range(0, n, max_accesses)]
    if stride < 0:
        chunks.reverse()
    return [f"{prefix}{tok[0]} {tok[1]} {off + lo * st} {(hi - lo) * st} {stride}"
            for lo, hi in chunks]


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
        proc, tok = split_proc(ln)
        if tok[0] in ("read", "write") and len(tok) >= 4:
            prefix = "" if proc == "main" else f"@{proc} "
            out.extend(_chunk_touch(prefix, tok, max_accesses, ps))
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



def _dontneed_all_but(keep: int, length: int = 1 << 20, block: int = 64 << 10) -> str:
    """``madvise dontneed`` of every 64K block of mapping ``a`` but its first
    *keep* 4K pages, one op per block."""
    return "\n".join(f"madvise a {b + keep * 4096} {block - keep * 4096} dontneed"
                      for b in range(0, length, block))


#: Processes: fork, copy-on-write, exit (docs/kernel-findings.md §5 and §7).
#: ``fork c`` makes process ``c``; ``@c OP`` runs OP in it; ``exit c``
#: returns once c's exit_mmap() has run.  Each process measures its own faults.
#: Regions are 1M (256 pages: 64K-folio scenarios) or 2M with MADV_HUGEPAGE
#: (PMD scenarios); they run under every setting group, where the folio sizes
#: differ but both sides must still agree.
FORK_PROGRAMS: tuple[CheckProgram, ...] = (
    _p("fork_child_write", "fill, fork; the child writes all and exits; the parent writes all", """
        mmap a 1M align=2M
        write a 0 1M 4K
        fork c
        snapshot forked
        @c snapshot forked
        @c write a 0 1M 4K
        @c snapshot written
        exit c
        write a 0 1M 4K
        snapshot s
    """),
    _p("fork_child_read", "fill, fork; the child reads all and exits; the parent writes all", """
        mmap a 1M align=2M
        write a 0 1M 4K
        fork c
        @c read a 0 1M 4K
        @c snapshot read
        exit c
        write a 0 1M 4K
        snapshot s
    """),
    _p("fork_child_none", "fill, fork; the child exits at once; the parent writes all", """
        mmap a 1M align=2M
        write a 0 1M 4K
        fork c
        exit c
        write a 0 1M 4K
        snapshot s
    """),
    _p("fork_child_alive", "fill, fork; the parent writes all while the child lives, twice", """
        mmap a 1M align=2M
        write a 0 1M 4K
        fork c
        write a 0 1M 4K
        snapshot alive
        @c snapshot alive
        write a 0 1M 4K
        exit c
        write a 0 1M 4K
        snapshot s
    """),
    _p("fork_child_after_parent", "fill, fork; the parent writes all, then the child writes all", """
        mmap a 1M align=2M
        write a 0 1M 4K
        fork c
        write a 0 1M 4K
        @c write a 0 1M 4K
        @c snapshot written
        exit c
        snapshot s
    """),
    _p("fork_both_write", "fill, fork; child and parent write interleaved halves, then all", """
        mmap a 1M align=2M
        write a 0 1M 4K
        fork c
        @c write a 0 512K 4K
        write a 256K 512K 4K
        @c write a 512K 512K 4K
        write a 0 1M 4K
        @c snapshot both
        snapshot both
        exit c
        write a 0 1M 4K
        snapshot s
    """),
    _p("fork_two_children", "fill, fork two children; one writes, one reads; exits in turn", """
        mmap a 1M align=2M
        write a 0 1M 4K
        fork c
        fork d
        @c write a 0 512K 4K
        @d read a 0 1M 4K
        exit c
        write a 0 1M 4K
        @d write a 0 1M 4K
        exit d
        write a 0 1M 4K
        snapshot s
    """),
    _p("fork_pmd_alive", "MADV_HUGEPAGE 2M, one write, fork; the parent writes all while the child lives", """
        mmap a 2M align=2M
        madvise a 0 2M hugepage
        write a 0
        fork c
        write a 0 2M 4K
        snapshot alive
        @c snapshot alive
        exit c
        snapshot s
    """),
    _p("fork_pmd_exit", "MADV_HUGEPAGE 2M, one write, fork, child exits; the parent writes all", """
        mmap a 2M align=2M
        madvise a 0 2M hugepage
        write a 0
        fork c
        exit c
        write a 0 2M 4K
        snapshot s
    """),
    _p("fork_pmd_child_write", "MADV_HUGEPAGE 2M filled; the child writes all and exits; then the parent", """
        mmap a 2M align=2M
        madvise a 0 2M hugepage
        write a 0 2M 4K
        fork c
        @c write a 0 2M 4K
        @c snapshot written
        exit c
        write a 0 2M 4K
        snapshot s
    """),
    _p("fork_hzero", "MADV_HUGEPAGE 2M read (huge zero PMD), fork; the child reads, then writes", """
        mmap a 2M align=2M
        madvise a 0 2M hugepage
        read a 0 2M 4K
        fork c
        @c read a 0 2M 4K
        @c write a 0
        @c snapshot written
        exit c
        write a 0
        snapshot s
    """),
    _p("fork_zero_no_anon_vma", "1M read only (zero PTEs, no anon_vma), fork; the child reads all", """
        mmap a 1M align=2M
        read a 0 1M 4K
        fork c
        @c read a 0 1M 4K
        @c snapshot read
        exit c
        write a 0 1M 4K
        snapshot s
    """),
    _p("fork_zero_anon_vma", "one write (anon_vma) + 255 zero PTEs, fork; the child reads all", """
        mmap a 1M align=2M
        write a 1020K
        read a 0 1020K 4K
        fork c
        @c read a 0 1M 4K
        exit c
        write a 0 1M 4K
        snapshot s
    """),
    _p("fork_dontneed_last_page", "fill, DONTNEED all but the first page of every 64K, fork, exit; parent writes all",
       "mmap a 1M align=2M\nwrite a 0 1M 4K\n" + _dontneed_all_but(1) + """
        fork c
        exit c
        write a 0 1M 4K
        snapshot s
    """),
    _p("fork_dontneed_two_pages", "as fork_dontneed_last_page, keeping the first two pages of every 64K",
       "mmap a 1M align=2M\nwrite a 0 1M 4K\n" + _dontneed_all_but(2) + """
        fork c
        exit c
        write a 0 1M 4K
        snapshot s
    """),
    _p("fork_dontfork", "fill, MADV_DONTFORK, fork: a hole in the child; the parent's PTEs stay writable", """
        mmap a 1M align=2M
        write a 0 1M 4K
        madvise a 0 1M dontfork
        fork c
        @c read a 0
        @c snapshot child
        exit c
        write a 0 1M 4K
        snapshot s
    """),
    _p("fork_wipeonfork", "fill, MADV_WIPEONFORK, fork: the child starts empty; the parent is unaffected", """
        mmap a 1M align=2M
        write a 0 1M 4K
        madvise a 0 1M wipeonfork
        fork c
        @c read a 0 1M 4K
        @c write a 0 512K 4K
        @c snapshot child
        exit c
        write a 0 1M 4K
        snapshot s
    """),
    _p("fork_mprotect", "fill, fork, child exits; mprotect r then rw; the parent writes all", """
        mmap a 1M align=2M
        write a 0 1M 4K
        fork c
        exit c
        mprotect a 0 1M r
        mprotect a 0 1M rw
        write a 0 1M 4K
        snapshot s
    """),
)


def _arena_steps(step: int = 132 << 10, steps: int = 12) -> str:
    """glibc-style arena growth (malloc/arena.c new_heap()/grow_heap()): every
    step makes the next *step* bytes of the PROT_NONE reservation ``h``
    read-write and writes them."""
    return "\n".join(f"mprotect h {i * step} {step} rw\nwrite h {i * step} {step} 4K"
                      for i in range(steps))


#: mprotect (Linux 6.18 mm/mprotect.c do_mprotect_pkey() -> mprotect_fixup()
#: -> change_protection()); findings in docs/kernel-findings.md "mprotect and
#: mremap".  Expectations are for private anonymous memory; the folio sizes
#: follow the setting group.
MPROTECT_PROGRAMS: tuple[CheckProgram, ...] = (
    _p("mprotect_arena_growth",
       "64M PROT_NONE reservation made rw 132K at a time and written (glibc arena): "
       "every mprotect merges into the rw VMA below (vma_modify_flags()); a folio size "
       "fits only where its naturally aligned range lies inside the VMA at fault time "
       "and is still pte_none, so the pieces past each 132K end fall back",
       "mmap h 64M align=2M prot=none noreserve\n" + _arena_steps() + "\nsnapshot s\n"),
    _p("mprotect_ro_then_rw",
       "PROT_READ VMA: reads map the zero page; mprotect rw; writes: every zero-page PTE "
       "faults (do_wp_page() -> wp_page_copy(), order 0), the never-read half gets "
       "large folios",
       """
        mmap a 1M align=2M prot=r
        read a 0 512K 4K
        mprotect a 0 1M rw
        write a 0 1M 4K
        snapshot s
    """),
    _p("mprotect_write_ro_rw",
       "write all, mprotect r (a write is SIGSEGV, reads do not fault), mprotect rw, "
       "write all: no fault, change_pte_range() with MM_CP_TRY_CHANGE_WRITABLE makes "
       "exclusive anon PTEs writable again (can_change_pte_writable())",
       """
        mmap a 1M align=2M
        write a 0 1M 4K
        mprotect a 0 1M r
        read a 0 1M 4K
        write a 512K
        snapshot ro
        mprotect a 0 1M rw
        write a 0 1M 4K
        snapshot s
    """),
    _p("mprotect_rx_flip",
       "JIT-style: write 256K, mprotect rx, read, mprotect rw, write again, twice; "
       "no fault after the first fill (exclusive anon PTEs made writable again)",
       """
        mmap a 256K align=2M
        write a 0 256K 4K
        mprotect a 0 256K rx
        read a 0 256K 4K
        mprotect a 0 256K rw
        write a 0 256K 4K
        mprotect a 0 128K rx
        read a 0 128K 4K
        mprotect a 0 128K rw
        write a 64K 128K 4K
        snapshot s
    """),
    _p("mprotect_fork_child_alive",
       "fill, fork; mprotect r then rw while the child lives: the PTEs are not "
       "AnonExclusive, so they stay write-protected and every write faults (copy); "
       "after the child's exit the parent's later writes reuse",
       """
        mmap a 1M align=2M
        write a 0 1M 4K
        fork c
        mprotect a 0 1M r
        mprotect a 0 1M rw
        write a 0 512K 4K
        exit c
        mprotect a 0 1M r
        mprotect a 0 1M rw
        write a 0 1M 4K
        snapshot s
    """),
    _p("mprotect_none_roundtrip",
       "written VMA made PROT_NONE (read and write are SIGSEGV), back to rw: no fault "
       "(protnone PTEs keep their page; the write upgrade applies); a never-touched "
       "PROT_NONE VMA: SIGSEGV, then rw and written (large folios as for a fresh VMA)",
       """
        mmap a 1M align=2M
        write a 0 1M 4K
        mprotect a 0 1M none
        read a 0
        write a 64K
        snapshot none
        mprotect a 0 1M rw
        read a 0 1M 4K
        write a 0 1M 4K
        mmap b 256K align=2M prot=none
        read b 4K
        write b 8K
        mprotect b 0 256K rw
        write b 0 256K 4K
        snapshot s
    """),
    _p("mprotect_split_folio",
       "protection change in the middle of 64K folios (r on [96K,160K)): the VMA splits "
       "inside two folios, which stay whole (PTE-mapped folios are not split); writes "
       "on the rw sides do not fault, on the r part SIGSEGV; back to rw the VMAs merge",
       """
        mmap a 256K align=2M
        write a 0 256K 4K
        mprotect a 96K 64K r
        snapshot split
        write a 64K 32K 4K
        write a 160K 32K 4K
        write a 96K
        read a 96K 64K 4K
        mprotect a 96K 64K rw
        write a 0 256K 4K
        snapshot s
    """),
    _p("mprotect_pmd_roundtrip",
       "MADV_HUGEPAGE: a PMD THP made r (change_huge_pmd(), no split; a write is "
       "SIGSEGV), none, rw: writes do not fault (can_change_pmd_writable()); a huge "
       "zero PMD made r and rw: the first write still faults",
       """
        mmap a 2M align=2M
        madvise a 0 2M hugepage
        write a 0
        mprotect a 0 2M r
        read a 0 2M 4K
        write a 4K
        mprotect a 0 2M none
        mprotect a 0 2M rw
        write a 0 2M 4K
        mmap z 2M align=2M
        madvise z 0 2M hugepage
        read z 0
        mprotect z 0 2M r
        mprotect z 0 2M rw
        read z 0 2M 4K
        write z 8K
        snapshot s
    """),
    _p("mprotect_errors",
       "mprotect over a hole is ENOMEM after the VMA before the hole was changed "
       "(do_mprotect_pkey() walks VMA by VMA), an unaligned start EINVAL",
       """
        mmap a 256K align=2M
        mmap b 128K hint=@a+384K fixed
        write a 0 256K 4K
        write b 0 128K 4K
        mprotect a 0 512K r
        write a 0
        write b 0
        mprotect a 2K 4K r
        mprotect a 0 512K rw
        mprotect a 0 256K rw
        write a 0 256K 4K
        snapshot s
    """),
    _p("mprotect_split_pmd",
       "MADV_HUGEPAGE 2M THP, mprotect r on 64K in the middle: the PMD is split "
       "(__split_huge_pmd() from vma_adjust_trans_huge()), the folio stays whole and "
       "PTE-mapped; back to rw: writes do not fault",
       """
        mmap a 2M align=2M
        madvise a 0 2M hugepage
        write a 0
        mprotect a 1M 64K r
        snapshot split
        read a 1M 64K 4K
        mprotect a 1M 64K rw
        write a 0 2M 4K
        snapshot s
    """),
)

#: mremap (Linux 6.18 mm/mremap.c do_mremap() -> shrink: do_vmi_munmap() of
#: the tail; grow in place: vma_expand(); move: move_vma() -> copy_vma() +
#: move_page_tables()); ``fixed=@d+OFF`` lands inside a PROT_NONE reservation
#: ``d`` (MREMAP_FIXED unmaps what is there).
MREMAP_PROGRAMS: tuple[CheckProgram, ...] = (
    _p("mremap_grow_in_place",
       "1M VMA with 1M free after it, written, grown to 2M in place (vma_expand()); "
       "the new half faults like a fresh VMA part",
       """
        mmap a 2M align=2M
        munmap a 1M 1M
        write a 0 1M 4K
        mremap a 1M 2M
        write a 1M 1M 4K
        snapshot s
    """),
    _p("mremap_grow_blocked",
       "1M VMA with a VMA right after it: grow without MAYMOVE is ENOMEM, with MAYMOVE "
       "the VMA moves (folios keep their size), the new part faults at the new place",
       """
        mmap a 1M align=2M
        mmap b 64K hint=@a+1M fixed
        write a 0 1M 4K
        mremap a 1M 2M
        mremap a 1M 2M maymove
        snapshot moved
        write a 0 2M 4K
        snapshot s
    """),
    _p("mremap_shrink_through_folio",
       "shrink cutting through a 64K folio and through a PMD THP: the tail is zapped, "
       "the cut folios stay partially mapped (deferred split; the PMD is split)",
       """
        mmap a 1M align=2M
        write a 0 1M 4K
        mremap a 1M 600K
        mmap p 2M align=2M
        madvise p 0 2M hugepage
        write p 0
        mremap p 2M 1M
        snapshot s
    """),
    _p("mremap_move_unaligned",
       "one 64K folio and a page written, VMA moved to a 4K-aligned address 68K into "
       "a reservation (move_ptes(): the folio keeps its order at a VA that is not "
       "naturally aligned), then every page written: the faults next to it fit only "
       "where a naturally aligned range is still pte_none",
       """
        mmap a 1M align=2M
        write a 0 64K 4K
        write a 192K
        mmap d 4M align=2M prot=none
        mremap a 1M 1M fixed=@d+68K
        snapshot moved
        write a 0 1M 4K
        snapshot s
    """),
    _p("mremap_pmd_move",
       "MADV_HUGEPAGE PMD THP moved 2M-aligned (move_huge_pmd(): the PMD is kept, no "
       "fault), then moved to a 64K-aligned address (the PMD is split, the folio stays "
       "whole, PTE-mapped); writes do not fault",
       """
        mmap a 2M align=2M
        madvise a 0 2M hugepage
        write a 0
        mmap d 8M align=2M prot=none
        mremap a 2M 2M fixed=@d+2M
        write a 0 2M 4K
        snapshot aligned
        mremap a 2M 2M fixed=@d+4160K
        write a 0 2M 4K
        snapshot s
    """),
    _p("mremap_zero_read",
       "zero-page-only read mapping (no anon_vma) moved: the zero PTEs move, reads do "
       "not fault again, writes copy the zero page (order 0); the same for a huge zero "
       "PMD under MADV_HUGEPAGE",
       """
        mmap a 1M align=2M
        read a 0 1M 4K
        mmap d 4M align=2M prot=none
        mremap a 1M 1M fixed=@d+64K
        read a 0 1M 4K
        write a 0 64K 4K
        mmap h 2M align=2M
        madvise h 0 2M hugepage
        read h 0
        mremap h 2M 2M fixed=@d+2M
        read h 0 2M 4K
        write h 4K
        snapshot s
    """),
    _p("mremap_shrink_regrow",
       "shrink through a 64K folio, then grow back in place: the pages the shrink "
       "zapped fault again next to the partially mapped folio",
       """
        mmap a 1M align=2M
        write a 0 1M 4K
        mremap a 1M 600K
        mremap a 600K 1M
        write a 512K 512K 4K
        snapshot s
    """),
    _p("mremap_errors",
       "mremap errors: new_len 0 is EINVAL, growing an old range that crosses the end "
       "of its VMA EFAULT (check_prep_vma()), while the same range at the same size is "
       "a no-op that succeeds (MREMAP_NO_RESIZE returns before that check); a FIXED "
       "destination overlapping the source and DONTUNMAP with a size change EINVAL",
       """
        mmap a 256K align=2M
        mmap b 256K hint=@a+256K fixed
        madvise b 0 256K nohugepage
        write a 0 256K 4K
        mremap a 256K 0
        mremap a 512K 768K maymove
        mremap a 512K 512K maymove
        mremap a 256K 256K fixed=@a+64K
        mremap a 256K 512K maymove dontunmap
        write a 0 512K 4K
        snapshot s
    """),
    _p("mremap_multi_vma_move",
       "MREMAP_FIXED move of a range over three VMAs (two adjacent with different "
       "flags, one after a 128K gap): remap_move() moves each, keeping the gaps; "
       "folios keep their size at the new 64K-misaligned place",
       """
        mmap a 256K align=2M
        mmap b 256K hint=@a+256K fixed
        mmap c 128K hint=@a+640K fixed
        madvise b 0 256K nohugepage
        write a 0 256K 4K
        write b 0 256K 4K
        write c 64K
        mmap d 4M align=2M prot=none
        mremap a 768K 768K fixed=@d+36K
        snapshot moved
        write a 0 512K 4K
        write a 512K
        write a 640K 128K 4K
        snapshot s
    """),
    _p("mremap_dontunmap",
       "MREMAP_DONTUNMAP of a written 1M: the pages move to the new VMA b (no fault), "
       "the old VMA stays mapped and empty (reads map the zero page, writes fault)",
       """
        mmap a 1M align=2M
        write a 0 1M 4K
        mmap d 2M align=2M prot=none
        mremap a 1M 1M fixed=@d+0 dontunmap as=b
        write b 0 1M 4K
        read a 0 64K 4K
        write a 64K 64K 4K
        snapshot s
    """),
)

PROGRAMS = PROGRAMS + FORK_PROGRAMS + MPROTECT_PROGRAMS + MREMAP_PROGRAMS
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
                           "merge_adjacent", "pmd_madvise", *(p.name for p in FORK_PROGRAMS))),
    SettingGroup("beside-full-64K", "anon_beside_full=1, 64K always",
                 dict(enabled="madvise", all_sizes="never", sizes={"64kB": "always", "2048kB": "inherit"},
                      anon_beside_full=1)),
    SettingGroup("beside-full-mixed", "anon_beside_full=1, 16K..1M always, 2M inherit, global madvise",
                 dict(enabled="madvise", all_sizes="always", sizes={"2048kB": "inherit"},
                      anon_beside_full=1)),
)

GROUPS_BY_NAME: dict[str, SettingGroup] = {g.name: g for g in GROUPS}


__all__ = ["DEFAULT_GROUP", "FORK_PROGRAMS", "GROUPS", "GROUPS_BY_NAME", "MPROTECT_PROGRAMS",
           "MREMAP_PROGRAMS", "PROGRAMS", "PROGRAMS_BY_NAME",
           "CheckProgram", "SettingGroup", "chunk_program", "parse_num", "parse_options", "split_proc"]
