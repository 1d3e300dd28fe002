"""Hostile input through the Python API (issue 13, Python side): every case
here misbehaved before the API checked its arguments."""
from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from pylaf import AddressSpace, Config, LafError, LafValueError, Policy, parse_size
from pylaf.arguments import address_array
from pylaf.geometry import PAGE_SIZES

K = 1 << 10
M = 1 << 20


@pytest.fixture
def mm() -> Any:
    with AddressSpace(Config(ram="64M")) as space:
        yield space


# ------------------------------------------------------------------ write=
def test_write_list_is_not_one_truthy_bool(mm: AddressSpace) -> None:
    a = mm.mmap("64K")
    addrs = np.arange(a, a + 64 * K, 4 * K, dtype=np.uint64)
    with pytest.raises(TypeError, match="write"):
        mm.touch(addrs, write=[False] * 16)  # type: ignore[arg-type]
    assert mm.stats().faults == 0           # nothing ran


@pytest.mark.parametrize("bad", [1, 0, "yes", None, (True,), np.array([1, 0] * 8, dtype=np.int64)])
def test_write_takes_bool_or_bool_uint8_array_only(mm: AddressSpace, bad: Any) -> None:
    a = mm.mmap("64K")
    addrs = np.arange(a, a + 64 * K, 4 * K, dtype=np.uint64)
    with pytest.raises(TypeError, match="write"):
        mm.touch(addrs, write=bad)


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8])
def test_write_array_counts_one_entry_per_access(mm: AddressSpace, dtype: Any) -> None:
    a = mm.mmap("64K")
    addrs = np.arange(a, a + 64 * K, 4 * K, dtype=np.uint64)
    w = np.zeros(16, dtype=dtype)
    w[3] = 1
    mm.touch(addrs, write=w)
    st = mm.stats()
    assert (st.faults_write, st.faults_read) == (1, 15)
    mm.touch(addrs[:1], write=np.True_)     # a numpy bool is a bool
    with pytest.raises(LafValueError, match="shape"):
        mm.touch(addrs, write=w[:4])


def test_fault_and_touch_range_write_is_a_bool(mm: AddressSpace) -> None:
    a = mm.mmap("64K")
    with pytest.raises(TypeError, match="write"):
        mm.fault(a, [True])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="write"):
        mm.touch_range(a, "64K", write="no")  # type: ignore[arg-type]


# ------------------------------------------------------------ numpy input
def _misaligned(values: np.ndarray) -> np.ndarray:
    raw = np.zeros(values.nbytes + 8, dtype=np.uint8)
    view = raw[1:1 + values.nbytes].view(np.uint64)
    view[:] = values
    assert not view.flags.aligned
    return view


@pytest.mark.parametrize("make", [_misaligned, lambda v: v.astype(">u8")],
                         ids=["misaligned", "big-endian"])
def test_misaligned_and_foreign_endian_arrays_are_converted(make: Callable[[np.ndarray], np.ndarray]) -> None:
    with AddressSpace(Config(ram="64M")) as a_mm, AddressSpace(Config(ram="64M")) as b_mm:
        a = a_mm.mmap("64K")
        assert b_mm.mmap("64K") == a
        good = np.arange(a, a + 64 * K, 4 * K, dtype=np.uint64)
        bad = make(good)
        ra = a_mm.touch(good, write=True, results=True)
        rb = b_mm.touch(bad, write=True, results=True)
        assert rb.faulted == ra.faulted == 16 and rb.ok
        assert ra.results is not None and rb.results is not None
        assert list(rb.results) == list(ra.results)
        assert (b_mm.stats() - a_mm.stats())["faults"] == 0


@pytest.mark.parametrize("arr", [np.arange(4, dtype=np.float64), np.arange(4, dtype=np.int64),
                                 np.arange(4, dtype=np.uint32), np.array(["a"]),
                                 np.arange(4, dtype=np.uint16).view(np.uint64)[:0]])
def test_wrong_dtype_is_a_type_error_naming_addrs(mm: AddressSpace, arr: np.ndarray) -> None:
    if arr.dtype == np.uint64:
        assert mm.touch(arr).accesses == 0         # an empty uint64 view is fine
        return
    with pytest.raises(TypeError, match=rf"addrs must have dtype uint64, got {arr.dtype}"):
        mm.touch(arr)


def test_address_lists_are_checked_per_entry(mm: AddressSpace) -> None:
    a = mm.mmap("64K")
    assert mm.touch([a, a + 4 * K], write=True).faulted == 2
    with pytest.raises(LafValueError, match=r"addrs\[1\]"):
        mm.touch([a, -1])
    with pytest.raises(LafValueError, match=r"addrs\[0\]"):
        mm.touch([1 << 64])
    with pytest.raises(TypeError, match=r"addrs\[0\]"):
        mm.touch([1.5])


# ------------------------------------------------- integers out of range
OUT_OF_RANGE = [-1, 1 << 64, 1 << 70]

#: (method, argument name, call with the bad value in that argument)
CALLS: list[tuple[str, Callable[[AddressSpace, int], object]]] = [
    ("length", lambda m, v: m.mmap(v)),
    ("addr", lambda m, v: m.mmap("64K", addr=v)),
    ("addr", lambda m, v: m.munmap(v, "64K")),
    ("length", lambda m, v: m.munmap(0x10000, v)),
    ("addr", lambda m, v: m.madvise(v, "64K", "MADV_DONTNEED")),
    ("length", lambda m, v: m.madvise(0x10000, v, "MADV_DONTNEED")),
    ("addr", lambda m, v: m.uffd_register(v, "64K")),
    ("length", lambda m, v: m.uffd_register(0x10000, v)),
    ("addr", lambda m, v: m.uffd_unregister(v, "64K")),
    ("addr", lambda m, v: m.uffd_copy(v, "64K")),
    ("length", lambda m, v: m.uffd_zeropage(0x10000, v)),
    ("length", lambda m, v: m.uffd_writeprotect(0x10000, v)),
    ("addr", lambda m, v: m.fault(v)),
    ("start", lambda m, v: m.touch_range(v, "64K")),
    ("length", lambda m, v: m.touch_range(0x10000, v)),
    ("stride", lambda m, v: m.touch_range(0x10000, "64K", v)),
    ("addr", lambda m, v: m.pte(v)),
    ("addr", lambda m, v: m.folio(v)),
    ("start", lambda m, v: m.read_ptes(v, 1)),
    ("npages", lambda m, v: m.read_ptes(0x10000, v)),
    ("addr", lambda m, v: m.inject_race(v)),
    ("count", lambda m, v: m.inject_alloc_fail(4, v)),
    ("arg2", lambda m, v: m.prctl(0, v)),
    ("limit", lambda m, v: m.set_memcg_limit(v)),
]


@pytest.mark.parametrize("value", OUT_OF_RANGE, ids=["-1", "2**64", "2**70"])
@pytest.mark.parametrize(("name", "call"), CALLS, ids=[f"{i}-{n}" for i, (n, _) in enumerate(CALLS)])
def test_out_of_range_integers_raise_laf_value_error_naming_the_argument(
        mm: AddressSpace, name: str, call: Callable[[AddressSpace, int], object], value: int) -> None:
    if name == "limit" and value < 0:
        value = 1 << 64        # a negative size is parse_size()'s ValueError, tested below
    with pytest.raises(LafValueError, match=rf"\b{name}\b") as ei:
        call(mm, value)
    assert isinstance(ei.value, LafError) and isinstance(ei.value, ValueError)
    mm.check_invariants()


def test_mmap_2_70_is_catchable_as_laf_error(mm: AddressSpace) -> None:
    try:
        mm.mmap(2**70)
    except LafError as exc:
        assert "length" in str(exc)
    else:
        pytest.fail("mmap(2**70) succeeded")


def test_sizes_in_strings_are_range_checked_too(mm: AddressSpace) -> None:
    with pytest.raises(LafValueError, match="length"):
        mm.mmap("99999999999T")
    with pytest.raises(LafValueError, match="length"):
        mm.mmap("12 parsecs")


# ---------------------------------------------------------------- sizes
@pytest.mark.parametrize("text", ["٤K", "４K", "1\u00a0K", "６4", "2\u2003M", "64K\x00"])
def test_parse_size_takes_ascii_digits_only(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


def test_parse_size_still_takes_the_kernel_spellings() -> None:
    assert [parse_size(t) for t in ("4096", " 64K ", "64kB", "2M\n", "1G")] == [4096, 64 * K, 64 * K,
                                                                               2 * M, 1 << 30]


# --------------------------------------------------------- policy specs
@pytest.mark.parametrize(("spec", "named"), [
    ("upstream/enabled=always/enabled=never", "'enabled' given twice"),
    ("upstream/defrag=never/defrag=never", "'defrag' given twice"),
    ("upstream/64K=always/64K=never", "'64K' given twice"),
    ("upstream/64K=always/64kB=always", "'64kB' given twice"),
    ("upstream/thp_anon=64K:always/thp_anon=2M:never", "'thp_anon' given twice"),
    ("upstream/use_zero_page=0/use_zero_page=1", "'use_zero_page' given twice"),
    ("upstream/colour=blue", "unknown option 'colour'"),
    ("upstream/enabled", "'enabled' is not key=value"),
    ("upstream/thp_anon=16K-64K:always/32K=never", "'32K' contradicts thp_anon"),
    ("order-4/enabled=never", "'enabled' contradicts a fixed-order policy"),
    ("order-4/64K=always", "'64K' contradicts a fixed-order policy"),
    ("order-4/thp_anon=64K:always", "'thp_anon' contradicts a fixed-order policy"),
    ("upstream/use_zero_page=2", "use_zero_page must be 0 or 1"),
])
def test_policy_spec_errors_name_the_key(spec: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Policy.parse(spec)


def test_policy_sizes_given_twice_in_another_spelling() -> None:
    with pytest.raises(ValueError, match="given twice"):
        Policy.upstream(sizes={"64K": "always", "65536": "never"})


def test_fixed_policy_options_that_apply_still_parse() -> None:
    p = Policy.parse("order-4/defrag=never/use_zero_page=0")
    assert (p.kind, p.fixed_order, p.defrag, p.use_zero_page) == ("fixed", 4, "never", False)


# ------------------------------------------------------ copy and pickle
@pytest.mark.parametrize("op", [copy.copy, copy.deepcopy, pickle.dumps,
                                lambda m: pickle.dumps(m, protocol=0)],
                         ids=["copy", "deepcopy", "pickle", "pickle-0"])
def test_address_space_cannot_be_copied(mm: AddressSpace, op: Callable[[Any], object]) -> None:
    mm.mmap("64K")
    with pytest.raises(TypeError, match=r"use AddressSpace\.fork\(\) or a new AddressSpace"):
        op(mm)
    assert len(mm.vmas()) == 1      # still usable


@pytest.mark.parametrize("policy", [
    Policy(),
    Policy.parse("upstream/enabled=always/thp_anon=16K-64K:always;2M:inherit"),
    Policy.upstream(sizes={"64K": "always", "2M": "never"}, use_zero_page=False),
    Policy.fixed("64K"),
    Policy.from_sysfs_values({"enabled": "madvise", "hugepages-64kB/enabled": "always"}),
])
def test_policy_and_config_pickle_round_trip(policy: Policy) -> None:
    back = pickle.loads(pickle.dumps(policy))
    assert back == policy and hash(back) == hash(policy) and dict(back.sizes) == dict(policy.sizes)
    cfg = Config(page_size="16K", arch="arm64", ram="256M", memcg_limit="64M", policy=policy)
    cback = pickle.loads(pickle.dumps(cfg))
    assert cback == cfg
    assert copy.deepcopy(cfg) == cfg
    assert cback.geometry == cfg.geometry


def test_every_page_size_round_trips() -> None:
    for ps in PAGE_SIZES:
        cfg = Config(page_size=ps, ram="1G")
        assert pickle.loads(pickle.dumps(cfg)).geometry.page_size == ps


def test_address_array_hands_c_an_aligned_native_array() -> None:
    values = np.arange(0x10000, 0x20000, 0x1000, dtype=np.uint64)
    for bad in (_misaligned(values), values.astype(">u8")):
        out = address_array("addrs", bad)
        assert out.flags.aligned and out.flags.c_contiguous and out.dtype.isnative
        assert out.dtype == np.uint64 and list(out) == list(values)
    assert address_array("addrs", values) is values          # no copy when nothing is wrong
