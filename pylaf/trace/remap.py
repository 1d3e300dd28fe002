"""mremap() in traces: the OP_REMAP / OP_REMAP_TO events, their rules, and
what the recorder does for them.

A successful mremap() of an anonymous range is recorded as one ``OP_REMAP``
(``addr`` = old address, ``len`` = old length, ``arg`` = new length, flags
``R_*``) that replay hands to the emulator's mremap() (csrc/mremap.c,
mm/mremap.c), so moved folios keep their size and position in the VMA.  A
call that moved the range carries ``R_MAYMOVE | R_FIXED`` (and
``R_DONTUNMAP`` if given) and is followed, in the same process, by one
``OP_REMAP_TO`` (``addr`` = the address the kernel chose, ``len`` = new
length): replay moves to exactly that address, whatever the emulator's own
placement would pick.

Traces recorded before these events describe a move as ``OP_MOVE`` followed
by an unmap and a map with ``M_MOVED`` (pylaf.trace.format); they are still
read and replayed that way (pages re-created as order-0 pages, counted as
``mremap_moved_pages`` in their header).
"""
from __future__ import annotations

__all__ = ["OP_REMAP", "OP_REMAP_TO", "REMAP_FLAGS", "REMAP_NAMES", "R_DONTUNMAP", "R_FIXED", "R_MAYMOVE",
           "record_remap", "remap_problems"]

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pylaf.trace.vmamap import RecordedVma, VmaMap

OP_REMAP = 9       # (addr=old, len=old_len, arg=new_len), flags R_*
OP_REMAP_TO = 10   # (addr=new address, len=new_len) of the moving OP_REMAP just before it
#: OP_REMAP flags: the kernel's MREMAP_* values, as replay passes them
R_MAYMOVE, R_FIXED, R_DONTUNMAP = 1, 2, 4
REMAP_FLAGS = R_MAYMOVE | R_FIXED | R_DONTUNMAP
#: the event names (pylaf.trace.format.OP_NAMES)
REMAP_NAMES = {OP_REMAP: "remap", OP_REMAP_TO: "remap-to"}


def remap_problems(ev: np.ndarray, page: int, user_top: int) -> Iterator[tuple[np.ndarray, str]]:
    """(mask of bad events, what is wrong) for the remap rules (check_events())."""
    op, arg = ev["op"], ev["arg"]
    remap = op == OP_REMAP
    yield remap & ((arg == 0) | (arg > user_top) | ((arg & (page - 1)) != 0)), \
        "remap to a length of {arg:#x}"
    fixed = remap & ((ev["flags"] & R_FIXED) != 0)
    nxt = np.append(op[1:], 0)
    yield fixed & (nxt != OP_REMAP_TO), "a moving remap not followed by its remap-to event"
    prev_fixed = np.insert(fixed[:-1], 0, False) if len(op) else fixed
    same_mm = np.insert(ev["mm"][1:] == ev["mm"][:-1], 0, False) if len(op) else fixed
    yield (op == OP_REMAP_TO) & ~(prev_fixed & same_mm), "a remap-to event without its moving remap"


def _forget(present: set[int], s: int, e: int, shift: int) -> None:
    ps, pe = s >> shift, e >> shift
    if pe - ps > len(present):
        present.difference_update([p for p in present if ps <= p < pe])
    else:
        present.difference_update(range(ps, pe))


def record_remap(vmas: VmaMap, present: set[int], src: RecordedVma, lens: tuple[int, int, int, int],
                 dontunmap: bool, shift: int) -> list[tuple[int, int, int, int, int]]:
    """What an anonymous mremap() did, for the recorder: its events
    ``(op, flags, addr, len, arg)``, with the recorder's VMA map *vmas* and
    present pages *present* updated as the kernel changed them (a move drops
    what was at the target, as MREMAP_FIXED does, and carries the present
    pages over).  *lens*: old address, old length, new length, the result."""
    old, old_len, new_len, new = lens
    if new == old:
        if new_len > old_len:
            vmas.remove(old + old_len, old + new_len)
            vmas.insert(src.copy(start=old + old_len, end=old + new_len))
        elif new_len < old_len:
            vmas.remove(old + new_len, old + old_len)
            _forget(present, old + new_len, old + old_len, shift)
        return [(OP_REMAP, 0, old, old_len, new_len)]
    flags = R_MAYMOVE | R_FIXED | (R_DONTUNMAP if dontunmap else 0)
    lo, hi = old >> shift, (old + old_len) >> shift
    moved = [p for p in present if lo <= p < hi and p - lo < new_len >> shift]
    vmas.remove(new, new + new_len)
    _forget(present, new, new + new_len, shift)
    if not dontunmap:
        vmas.remove(old, old + old_len)
    _forget(present, old, old + old_len, shift)
    vmas.insert(src.copy(start=new, end=new + new_len))
    present.update(p + ((new - old) >> shift) for p in moved)
    return [(OP_REMAP, flags, old, old_len, new_len), (OP_REMAP_TO, 0, new, new_len, 0)]
