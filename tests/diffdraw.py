"""Hypothesis draws shared by the differential state machines
(tests/test_differential.py, tests/test_differential_fork.py): an address
range or an address, mostly in or around an existing VMA."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st


def draw_range(data: st.DataObject, vmas: Sequence[Any], ps: int, pmd: int,
               whole_below: int = 2, pmd_part_below: int = 4) -> tuple[int, int]:
    """A (start, length) range: the whole of a VMA (``whole_below`` in 10),
    its PMD-aligned part (up to ``pmd_part_below`` in 10), a window around it
    that may stick out, or (1 in 10) anywhere in the 47-bit space."""
    if vmas and data.draw(st.integers(0, 9), label="in_vma") < 9:
        v = data.draw(st.sampled_from(vmas), label="vma")
        npg = (v.end - v.start) // ps
        whole = data.draw(st.integers(0, 9), label="whole")
        if whole < whole_below:                           # the whole VMA
            return v.start, v.end - v.start
        a = (v.start + pmd - 1) & ~(pmd - 1)
        if whole < pmd_part_below and a + pmd <= v.end:  # its PMD-aligned part
            return a, ((v.end - a) // pmd) * pmd
        off = data.draw(st.integers(-2, npg + 1), label="off")
        ln = data.draw(st.sampled_from((1, 2, 3, 16, 17, npg, pmd // ps))
                       | st.integers(1, npg + 3), label="len")
        return v.start + off * ps, max(ln, 1) * ps
    a = data.draw(st.integers(0, (1 << 47) // ps), label="page") * ps
    return a, data.draw(st.integers(1, 64), label="npages") * ps


def draw_addr(data: st.DataObject, vmas: Sequence[Any], ps: int) -> int:
    """An address: 15 in 16 within a page of a VMA, else anywhere below 2^48."""
    if vmas and data.draw(st.integers(0, 15), label="in_vma") < 15:
        v = data.draw(st.sampled_from(vmas), label="vma")
        return data.draw(st.integers(v.start - ps, v.end + ps - 1), label="addr")
    return data.draw(st.integers(0, (1 << 48) - 1), label="addr")
