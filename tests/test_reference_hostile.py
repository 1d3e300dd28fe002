"""Hostile arguments against the C core and the reference model, each judged
by the kernel's errno table (issue 13 item 2).  Each rule names the kernel
function that applies it; pylaf/reference/vma.py and userfaultfd.py and the
C core (csrc/vma.c, csrc/userfaultfd.c) restate them.
"""
from __future__ import annotations

import pytest

from pylaf import Access, AddressSpace, Config, LafMemoryError, LafValueError
from pylaf._ffi import lib
from pylaf.reference import Reference

K = 1 << 10
U64 = (1 << 64) - 1
TASK_SIZE = (1 << 47) - 4096


@pytest.fixture(params=[(side, ps) for side in (AddressSpace, Reference) for ps in (4096, 16384, 65536)],
                ids=lambda p: f"{p[0].__name__}-{p[1] >> 10}K")
def mm(request: pytest.FixtureRequest) -> Reference:
    side, ps = request.param
    return side(Config(ram="64M" if ps != 65536 else "1G", page_size=ps))  # type: ignore[no-any-return]


def _errno(call: object, exc: type = LafValueError) -> int:
    with pytest.raises(exc) as ei:
        call()  # type: ignore[operator]
    return int(ei.value.errno)


def _layout(mm: Reference) -> list[tuple[int, int, int]]:
    return [(v.start, v.end, int(v.flags)) for v in mm.vmas()]


# ------------------------------------------------------------------ munmap
@pytest.mark.parametrize("case", ["unaligned", "zero", "wrap", "above", "len_past_top"])
def test_munmap_rejects_like_do_vmi_munmap(mm: Reference, case: str) -> None:
    """mm/vma.c do_vmi_munmap(): offset_in_page(start) || start > TASK_SIZE ||
    len > TASK_SIZE - start -> EINVAL; start + PAGE_ALIGN(len) == start -> EINVAL."""
    a = mm.mmap(64 * mm.page_size)
    before = _layout(mm)
    start, length = {"unaligned": (a + 1, mm.page_size), "zero": (a, 0),
                     "wrap": (a + mm.page_size, U64), "above": (TASK_SIZE + mm.page_size, mm.page_size),
                     "len_past_top": (a, TASK_SIZE - a + 1)}[case]
    assert _errno(lambda: mm.munmap(start, length)) == lib.LAF_EINVAL
    assert _layout(mm) == before
    mm.check_invariants()


def test_munmap_of_a_hole_is_success(mm: Reference) -> None:
    """do_vmi_munmap(): no VMA in the range -> 0."""
    mm.munmap(1 << 40, mm.page_size)


# ------------------------------------------------------------------ madvise
@pytest.mark.parametrize("start,length", [(0, U64), (0, U64 - 100), (1 << 40, U64 - (1 << 40))])
def test_madvise_wrapping_length_is_einval(mm: Reference, start: int, length: int) -> None:
    """mm/madvise.c is_valid_madvise(): len_in && !PAGE_ALIGN(len_in) (the
    length wraps) or start + len < start -> EINVAL, nothing applied."""
    a = mm.mmap(64 * mm.page_size)
    before = _layout(mm)
    for adv in ("MADV_HUGEPAGE", "MADV_DONTNEED"):
        assert _errno(lambda adv=adv: mm.madvise(start, length, adv)) == lib.LAF_EINVAL
    assert _layout(mm) == before and a


def test_madvise_range_ending_at_2_to_64_is_einval(mm: Reference) -> None:
    """start + PAGE_ALIGN(len) == 2**64 wraps to 0 < start -> EINVAL."""
    start = (1 << 64) - 16 * mm.page_size
    assert _errno(lambda: mm.madvise(start, 16 * mm.page_size, "MADV_HUGEPAGE")) == lib.LAF_EINVAL


def test_madvise_unaligned_and_zero(mm: Reference) -> None:
    """is_valid_madvise(): !PAGE_ALIGNED(start) -> EINVAL; madvise_should_skip():
    an empty range is 0 (even at an unmapped address)."""
    a = mm.mmap(4 * mm.page_size)
    assert _errno(lambda: mm.madvise(a + 8, mm.page_size, "MADV_DONTNEED")) == lib.LAF_EINVAL
    mm.madvise(a, 0, "MADV_HUGEPAGE")
    mm.madvise(1 << 40, 0, "MADV_DONTNEED")
    assert not int(mm.vmas()[0].flags) & lib.LAF_VM_HUGEPAGE


def test_madvise_above_task_size_is_a_hole(mm: Reference) -> None:
    """madvise_walk_vmas(): a range above TASK_SIZE has no VMA -> ENOMEM."""
    assert _errno(lambda: mm.madvise(1 << 48, mm.page_size, "MADV_HUGEPAGE"),
                  LafMemoryError) == lib.LAF_ENOMEM


# --------------------------------------------------------------------- mmap
def test_mmap_zero_length_is_einval(mm: Reference) -> None:
    """mm/mmap.c do_mmap(): !len -> EINVAL."""
    assert _errno(lambda: mm.mmap(0)) == lib.LAF_EINVAL


@pytest.mark.parametrize("length", [TASK_SIZE + 4096, U64, U64 - 100, 1 << 63])
def test_mmap_too_long_is_enomem(mm: Reference, length: int) -> None:
    """do_mmap(): PAGE_ALIGN(len) == 0 -> ENOMEM; __get_unmapped_area():
    len > TASK_SIZE -> ENOMEM (fixed or not)."""
    assert _errno(lambda: mm.mmap(length), LafMemoryError) == lib.LAF_ENOMEM
    assert _errno(lambda: mm.mmap(length, addr=1 << 30, fixed=True), LafMemoryError) == lib.LAF_ENOMEM
    assert mm.vmas() == []


def test_mmap_fixed_order_of_checks(mm: Reference) -> None:
    """__get_unmapped_area(): addr > TASK_SIZE - len -> ENOMEM before
    offset_in_page(addr) -> EINVAL; security_mmap_addr(): below
    mmap_min_addr -> EPERM."""
    ps = mm.page_size
    assert _errno(lambda: mm.mmap(ps, addr=TASK_SIZE + 1, fixed=True), LafMemoryError) == lib.LAF_ENOMEM
    assert _errno(lambda: mm.mmap(ps, addr=TASK_SIZE - ps + 1, fixed=True), LafMemoryError) == lib.LAF_ENOMEM
    assert _errno(lambda: mm.mmap(ps, addr=(1 << 30) + 1, fixed=True)) == lib.LAF_EINVAL
    assert _errno(lambda: mm.mmap(ps, addr=0, fixed=True)) == lib.LAF_EPERM
    top = mm.geo.task_size if hasattr(mm, "geo") else mm.geometry.task_size
    assert mm.mmap(ps, addr=top - ps, fixed=True) == top - ps


def test_mmap_hint_above_task_size_is_ignored(mm: Reference) -> None:
    """A hint that does not fit (even one whose PAGE_ALIGN wraps) is ignored."""
    for hint in (TASK_SIZE, U64):
        a = mm.mmap(mm.page_size, addr=hint)
        assert a + mm.page_size <= TASK_SIZE


@pytest.mark.parametrize("bad", [-1, 1 << 64, 1 << 70])
def test_out_of_range_integers_name_the_argument(mm: Reference, bad: int) -> None:
    """Values that do not fit the ABI's uint64_t: LafValueError naming the argument."""
    with pytest.raises(LafValueError, match="length"):
        mm.munmap(1 << 30, bad if bad > 0 else 1 << 64)
    with pytest.raises(LafValueError, match="addr"):
        mm.madvise(bad, 4096, "MADV_DONTNEED")
    with pytest.raises(LafValueError, match="address"):
        mm.fault(bad)
    with pytest.raises(LafValueError, match="addr"):
        mm.uffd_register(bad, 4096)


# --------------------------------------------------------------- userfaultfd
@pytest.mark.parametrize("case", ["unaligned_start", "unaligned_len", "zero", "below_min", "at_top",
                                  "past_top", "wrap"])
def test_uffd_validate_range(mm: Reference, case: str) -> None:
    """fs/userfaultfd.c validate_range() -> validate_unaligned_range(): every
    bad range is EINVAL, for every ioctl."""
    ps = mm.page_size
    a = mm.mmap(16 * ps)
    start, length = {"unaligned_start": (a + 1, ps), "unaligned_len": (a, ps + 1), "zero": (a, 0),
                     "below_min": (0, ps), "at_top": (TASK_SIZE, ps),
                     "past_top": (TASK_SIZE - ps, 2 * ps), "wrap": (a, (U64 + 1) - ps)}[case]
    calls = (lambda: mm.uffd_register(start, length), lambda: mm.uffd_unregister(start, length),
             lambda: mm.uffd_copy(start, length), lambda: mm.uffd_zeropage(start, length),
             lambda: mm.uffd_writeprotect(start, length, True))
    for call in calls:
        assert _errno(call) == lib.LAF_EINVAL


# -------------------------------------------------------------------- memcg
def test_memcg_limit_zero_charges_nothing() -> None:
    """memory.max = 0: every charge fails (the write fault is OOM, a read maps
    the zero page); None is unlimited."""
    with Reference(Config(ram="64M", memcg_limit=0)) as mm:
        a = mm.mmap("64K")
        assert mm.fault(a, False).access == Access.FAULT          # the zero page: no charge
        assert mm.fault(a, True).access == Access.OOM
        s = mm.stats()
        assert s.memcg_charged == 0 and s.memcg_max_events >= 1
        mm.set_memcg_limit(None)
        assert mm.fault(a, True).access == Access.FAULT
        assert _errno(lambda: mm.set_memcg_limit(0)) == lib.LAF_ERANGE
        mm.check_invariants()
