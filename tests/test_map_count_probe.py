"""The vm.max_map_count probe of ``pylaf kernel check`` (pylaf/live/map_count.py).

The emulator side is deterministic and runs everywhere; the live side runs
where ``pylaf kernel check`` can (root, a C compiler).
"""
from __future__ import annotations

import pytest

from pylaf.live import check as KC
from pylaf.live.map_count import STEPS, MapCountResult, compare, emulator_probe, live_probe

WHY = KC.live_check_unavailable()


@pytest.mark.parametrize("start", [6, 7])
def test_emulator_probe_at_a_small_limit(start: int) -> None:
    """max_map_count 40: the MAP_FIXED fill stops at map_count >= 40 (ENOMEM),
    having reached 40 or 41 by the parity of the start; then the 5.6 table."""
    r = emulator_probe(40, start)
    first = start + 1                   # the mapping at the reservation's start adds one
    assert r.mapped == 1 + (40 - first + 1) // 2
    reached = first + 2 * (r.mapped - 1)
    assert reached in (40, 41)
    assert r.steps == {
        "mmap_fixed": (12, reached),
        "munmap_middle": (12, reached),
        "munmap_edge": (0, reached),
        "madvise_nohugepage_middle": (11, reached),
        "madvise_dontneed_middle": (0, reached),
        "mmap_new": (12, reached) if reached > 40 else (0, reached + 1),
    }


def test_compare_names_every_difference() -> None:
    a = emulator_probe(30, 6)
    steps = dict(a.steps)
    steps["munmap_edge"] = (12, steps["munmap_edge"][1])
    b = MapCountResult(a.max_map_count, a.start, a.mapped + 1, steps)
    diff = compare(a, b)
    assert len(diff) == 2 and "MAP_FIXED" in diff[0] and "munmap_edge" in diff[1]
    assert compare(a, a) == []
    assert set(a.steps) == set(STEPS)


@pytest.mark.skipif(WHY is not None, reason=f"live kernel check unavailable: {WHY}")
def test_live_kernel_and_emulator_agree() -> None:
    """laf_kprog --map-count on this kernel: the fill fails with ENOMEM at
    vm.max_map_count, and the emulator, started with as many VMAs, agrees on
    every step."""
    live, page_size = live_probe()
    assert live.steps["mmap_fixed"][0] == 12
    assert live.steps["mmap_fixed"][1] in (live.max_map_count, live.max_map_count + 1)
    assert compare(live, emulator_probe(live.max_map_count, live.start, page_size)) == []
