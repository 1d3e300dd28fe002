"""prctl(PR_SET_THP_DISABLE / PR_GET_THP_DISABLE) and MADV_HUGEPAGE /
MADV_NOHUGEPAGE (docs/kernel-semantics.md §1.9, §1.11; kernel-findings #7a-7c).

prctl(41, 1, 0): MMF_DISABLE_THP_COMPLETELY, GET returns 1;
prctl(41, 1, PR_THP_DISABLE_EXCEPT_ADVISED=2): only VM_HUGEPAGE VMAs, GET 3;
prctl(41, 0, 0): both cleared, GET 0.  Flags only when disabling; unknown
flags are -EINVAL.  MADV_HUGEPAGE clears VM_NOHUGEPAGE and vice versa.
"""
from __future__ import annotations

import pytest
from conftest import K, M, place, upstream

from pylaf import LafMemoryError, LafValueError, VmFlags

PR_SET, PR_GET, EXCEPT = 41, 42, 2
S64 = {"64K": "always"}


def fill(mm, a: int, length: str) -> tuple[int, dict[str, int]]:
    before = mm.stats()
    t = mm.touch_range(a, length, write=True)
    after = mm.stats()
    return t.faulted, {k: v - before.folios_mapped[k]
                       for k, v in after.folios_mapped.items() if v - before.folios_mapped[k]}


def test_prctl_get_values_0_1_3(mm_factory) -> None:
    mm = mm_factory(upstream())
    assert mm.prctl(PR_GET) == 0 == mm.thp_disable
    assert mm.prctl(PR_SET, 1, 0) == 0
    assert mm.prctl(PR_GET) == 1
    mm.prctl(PR_SET, 1, EXCEPT)
    assert mm.prctl(PR_GET) == 3
    mm.prctl(PR_SET, 1, 0)                 # back to completely: except-advised cleared
    assert mm.prctl(PR_GET) == 1
    mm.prctl(PR_SET, 0, 0)
    assert mm.thp_disable == 0


@pytest.mark.parametrize("args", [
    (PR_SET, 0, EXCEPT),   # flags only when disabling
    (PR_SET, 1, 1),        # unknown flag
    (PR_SET, 1, 4),
    (PR_GET, 1, 0),        # GET takes no arguments
    (99, 0, 0),            # not a THP prctl
])
def test_prctl_invalid(mm_factory, args) -> None:
    mm = mm_factory(upstream())
    mm.prctl(PR_SET, 1, EXCEPT)
    with pytest.raises(LafValueError):
        mm.prctl(*args)
    assert mm.thp_disable == 3             # unchanged


def test_prctl_nonzero_arg2_disables(mm_factory) -> None:
    """prctl_set_thp_disable(bool thp_disable, ...): any non-zero arg2."""
    mm = mm_factory(upstream())
    mm.prctl(PR_SET, 2, 0)
    assert mm.thp_disable == 1
    mm.prctl(PR_SET, 7, EXCEPT)
    assert mm.thp_disable == 3


def test_set_thp_disable_rejects_except_without_disable(mm_factory) -> None:
    mm = mm_factory(upstream())
    with pytest.raises(ValueError):
        mm.set_thp_disable(False, except_advised=True)


def test_finding7a_nohugepage_gives_order0(mm_factory) -> None:
    mm = mm_factory(upstream(S64))
    a = place(mm, "256K", align="64K")
    mm.madvise(a, "256K", "nohugepage")
    assert mm.vmas()[0].flags & VmFlags.NOHUGEPAGE
    assert fill(mm, a, "256K") == (64, {"4K": 64})


def test_finding7b_prctl_disable_beats_madv_hugepage(mm_factory) -> None:
    mm = mm_factory(upstream(S64))
    mm.set_thp_disable(True)
    plain = place(mm, "256K", align="64K")
    hinted = place(mm, "256K", align="64K")
    mm.madvise(hinted, "256K", "hugepage")
    assert fill(mm, plain, "256K") == (64, {"4K": 64})
    assert fill(mm, hinted, "256K") == (64, {"4K": 64})


def test_finding7c_except_advised(mm_factory) -> None:
    mm = mm_factory(upstream(S64))                 # global madvise, 2M inherit
    mm.set_thp_disable(True, except_advised=True)
    assert mm.thp_disable == 3
    a = place(mm, "256K", align="64K")
    b = place(mm, "256K", align="64K")
    mm.madvise(b, "256K", "hugepage")
    c = place(mm, "2M")
    mm.madvise(c, "2M", "hugepage")
    d = place(mm, "2M")
    assert fill(mm, a, "256K") == (64, {"4K": 64})
    assert fill(mm, b, "256K") == (4, {"64K": 4})
    assert mm.fault(c, write=True).order == 9
    assert mm.fault(d, write=True).order == 0
    mm.set_thp_disable(False)
    assert mm.thp_disable == 0
    e = place(mm, "256K", align="64K")
    assert fill(mm, e, "256K") == (4, {"64K": 4})


def test_prctl_applies_to_existing_vmas_at_next_fault(mm_factory) -> None:
    mm = mm_factory(upstream(S64))
    a = place(mm, "1M")
    assert mm.fault(a, write=True).order == 4
    mm.set_thp_disable(True)
    assert mm.fault(a + 64 * K, write=True).order == 0
    mm.set_thp_disable(False)
    assert mm.fault(a + 128 * K, write=True).order == 4


def test_madvise_hugepage_nohugepage_mutually_exclusive(mm_factory) -> None:
    mm = mm_factory(upstream())
    a = place(mm, "1M")
    mm.madvise(a, "1M", "hugepage")
    f = mm.vmas()[0].flags
    assert f & VmFlags.HUGEPAGE and not f & VmFlags.NOHUGEPAGE
    mm.madvise(a, "1M", "nohugepage")
    f = mm.vmas()[0].flags
    assert f & VmFlags.NOHUGEPAGE and not f & VmFlags.HUGEPAGE
    mm.madvise(a, "1M", "MADV_HUGEPAGE")
    f = mm.vmas()[0].flags
    assert f & VmFlags.HUGEPAGE and not f & VmFlags.NOHUGEPAGE
    assert f & VmFlags.READ and f & VmFlags.WRITE


def test_nohugepage_beats_per_size_always_and_global_always(mm_factory) -> None:
    mm = mm_factory(upstream({"64K": "always", "2M": "always"}, enabled="always"))
    a = place(mm, "2M")
    mm.madvise(a, "2M", "nohugepage")
    assert mm.fault(a, write=True).order == 0
    mm.madvise(a, "2M", "hugepage")
    assert mm.fault(a + 64 * K, write=True).order == 4   # PTE table exists now: 64K


def test_madvise_over_a_hole_applies_then_fails(mm_factory) -> None:
    mm = mm_factory(upstream())
    a = place(mm, "1M")
    b = mm.mmap("1M", addr=a + 2 * M, fixed=True)
    with pytest.raises(LafMemoryError):
        mm.madvise(a, "3M", "hugepage")
    v = mm.vmas()
    assert len(v) == 2 and all(x.flags & VmFlags.HUGEPAGE for x in v)
    assert v[1].start == b


def test_madvise_invalid(mm_factory) -> None:
    mm = mm_factory(upstream())
    a = place(mm, "1M")
    with pytest.raises(LafValueError):
        mm.madvise(a + 1, "4K", "hugepage")            # unaligned start
    with pytest.raises(ValueError, match="MADV_FREE"):
        mm.madvise(a, "4K", "MADV_FREE")                # not emulated
    with pytest.raises(LafValueError, match=r"12345\): invalid argument \(EINVAL\)"):
        mm.madvise(a, "4K", 12345)
    mm.madvise(a, 0, "hugepage")                        # len 0: no-op
    assert not mm.vmas()[0].flags & VmFlags.HUGEPAGE
