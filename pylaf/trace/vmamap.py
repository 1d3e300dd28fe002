"""The recorder's model of one traced process's VMAs: sorted, non-overlapping
ranges, split and merged as mmap/munmap/mprotect/mremap return (a list and
bisect stand in for the kernel's maple tree, see ``mm/vma.c``)."""
from __future__ import annotations

__all__ = ["RecordedVma", "VmaMap", "page_down", "page_up", "prot_of"]

import bisect
import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from pylaf.trace.format import PAGE, PROT_EXEC, PROT_READ, PROT_WRITE


@dataclass
class RecordedVma:
    """One VMA as the recorder sees it (``cls``: region class)."""

    start: int
    end: int
    prot: int
    cls: int
    name: str = ""
    growsdown: bool = False

    def copy(self, **kw: Any) -> RecordedVma:
        return dataclasses.replace(self, **kw)


class VmaMap:
    """Sorted, non-overlapping VMAs of one process (the recorder's model)."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.vmas: list[RecordedVma] = []

    def copy(self) -> VmaMap:
        m = VmaMap()
        m.starts = list(self.starts)
        m.vmas = [v.copy() for v in self.vmas]
        return m

    def find(self, addr: int) -> Optional[RecordedVma]:
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0 and self.vmas[i].end > addr:
            return self.vmas[i]
        return None

    def next_above(self, addr: int) -> Optional[RecordedVma]:
        i = bisect.bisect_right(self.starts, addr)
        return self.vmas[i] if i < len(self.vmas) else None

    def prev_below(self, addr: int) -> Optional[RecordedVma]:
        i = bisect.bisect_right(self.starts, addr) - 1
        while i >= 0:
            if self.vmas[i].end <= addr:
                return self.vmas[i]
            i -= 1
        return None

    def overlapping(self, s: int, e: int) -> list[RecordedVma]:
        i = max(0, bisect.bisect_right(self.starts, s) - 1)
        out = []
        while i < len(self.vmas) and self.vmas[i].start < e:
            if self.vmas[i].end > s:
                out.append(self.vmas[i])
            i += 1
        return out

    def remove(self, s: int, e: int) -> list[RecordedVma]:
        """Remove [s, e); return the removed pieces."""
        removed = []
        keep_s, keep_v = [], []
        for v in self.vmas:
            if v.end <= s or v.start >= e:
                keep_s.append(v.start)
                keep_v.append(v)
                continue
            removed.append(v.copy(start=max(v.start, s), end=min(v.end, e)))
            if v.start < s:
                keep_s.append(v.start)
                keep_v.append(v.copy(end=s))
            if v.end > e:
                keep_s.append(e)
                keep_v.append(v.copy(start=e))
        self.starts, self.vmas = keep_s, keep_v
        return removed

    def insert(self, v: RecordedVma) -> None:
        self.remove(v.start, v.end)
        i = bisect.bisect_left(self.starts, v.start)
        self.starts.insert(i, v.start)
        self.vmas.insert(i, v)

    def update(self, s: int, e: int, **kw: Any) -> list[RecordedVma]:
        """Change attributes over [s, e) (splitting); return the changed pieces."""
        pieces = self.remove(s, e)
        for p in pieces:
            self.insert(p.copy(**kw))
        return [p.copy(**kw) for p in pieces]


def prot_of(perms: str) -> int:
    """``"rw-p"`` (a /proc/PID/maps permission field) -> PROT_* bits."""
    return ((PROT_READ if perms[0] == "r" else 0) | (PROT_WRITE if perms[1] == "w" else 0)
            | (PROT_EXEC if perms[2] == "x" else 0))


def page_down(a: int) -> int:
    return a & ~(PAGE - 1)


def page_up(a: int) -> int:
    return (a + PAGE - 1) & ~(PAGE - 1)
