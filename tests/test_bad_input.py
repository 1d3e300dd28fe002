"""Bad input: every wrong value gets a clear error naming it, nothing crashes,
and the emulated state stays consistent (``check_invariants()`` after each).

The C core re-checks what Python checked: the raw ``pylaf._ffi.lib`` entry
points are called with the same bad values and must return negative codes.
"""
from __future__ import annotations

import re
import threading

import numpy as np
import pytest
from conftest import retry_busy

from pylaf import (
    Access,
    AddressSpace,
    ClosedError,
    Config,
    LafBusyError,
    LafMemoryError,
    LafValueError,
    Policy,
    parse_thp_anon,
)
from pylaf._ffi import ffi, lib
from pylaf.reference import Reference

K, M = 1 << 10, 1 << 20
SIDES = [pytest.param(AddressSpace, id="C"), pytest.param(Reference, id="reference")]


@pytest.fixture(params=SIDES)
def mm(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    with request.param(Config(ram="64M")) as m:
        yield m
        m.check_invariants()


# ------------------------------------------------------------------- mmap
def test_zero_length_mmap(mm) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="length 0"):
        mm.mmap(0)
    with pytest.raises(ValueError, match=r"'-4K'|invalid size"):
        mm.mmap("-4K")


def test_unaligned_fixed_mmap(mm) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LafValueError, match="0x7f0000000001") as ei:
        mm.mmap("64K", addr=0x7F0000000001, fixed=True)
    assert ei.value.errno == lib.LAF_EINVAL
    assert mm.vmas() == []


def test_overlapping_fixed_mmap(mm) -> None:  # type: ignore[no-untyped-def]
    a = mm.mmap("1M")
    with pytest.raises(LafValueError, match=hex(a + 512 * K)) as ei:
        mm.mmap("1M", addr=a + 512 * K, fixed=True)
    assert ei.value.errno == lib.LAF_EEXIST
    assert [(v.start, v.end) for v in mm.vmas()] == [(a, a + M)]


def test_bad_prot_and_fixed_without_addr(mm) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="'rwq'"):
        mm.mmap("4K", prot="rwq")
    with pytest.raises(ValueError, match="fixed=True needs addr"):
        mm.mmap("4K", fixed=True)
    with pytest.raises(ValueError, match="-0x1000"):
        mm.mmap("4K", addr=-4096)


def test_mmap_beyond_task_size(mm) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LafMemoryError, match=r"addr=0x800000000000.*out of memory") as ei:
        mm.mmap("4K", addr=1 << 47, fixed=True)
    assert ei.value.errno == lib.LAF_ENOMEM
    with pytest.raises(LafMemoryError, match="out of memory") as ei:
        mm.mmap(1 << 62)
    assert ei.value.errno == lib.LAF_ENOMEM


def test_munmap_madvise_bad_ranges(mm) -> None:  # type: ignore[no-untyped-def]
    a = mm.mmap("64K")
    with pytest.raises(LafValueError, match=hex(a + 1)):
        mm.munmap(a + 1, "4K")
    with pytest.raises(LafValueError):
        mm.munmap(a, 0)
    with pytest.raises(LafValueError, match=hex(a + 1)):
        mm.madvise(a + 1, "4K", "MADV_DONTNEED")
    with pytest.raises(ValueError, match="MADV_FREE"):
        mm.madvise(a, "4K", "MADV_FREE")
    with pytest.raises(LafValueError):
        mm.madvise(a, "4K", 99)
    # a range with a hole: applied to the mapped part, then ENOMEM
    with pytest.raises(LafMemoryError) as ei:
        mm.madvise(a, "1M", "MADV_HUGEPAGE")
    assert ei.value.errno == lib.LAF_ENOMEM
    assert int(mm.vmas()[0].flags) & lib.LAF_VM_HUGEPAGE


# --------------------------------------------------------------- accesses
def test_access_outside_every_vma_is_sigsegv(mm) -> None:  # type: ignore[no-untyped-def]
    a = mm.mmap("64K")
    for addr in (0, 4096, a - 1, a + 64 * K, (1 << 47) - 1, 1 << 47, (1 << 64) - 1):
        for write in (False, True):
            r = mm.fault(addr, write)
            assert r.access == Access.SIGSEGV, hex(addr)
    t = mm.touch(np.array([0, a, 1 << 63, a + 64 * K], dtype=np.uint64), True, results=True)
    assert t.sigsegv == 3 and t.first_error == 0
    assert list(t.results) == [Access.SIGSEGV, Access.FAULT, Access.SIGSEGV, Access.SIGSEGV]
    assert mm.touch_range(a - 8 * K, "16K").sigsegv == 2
    with pytest.raises(ValueError, match="invalid address"):
        mm.fault(-1)
    with pytest.raises(ValueError, match="invalid address"):
        mm.fault(1 << 64)


def test_write_to_read_only_vma(mm) -> None:  # type: ignore[no-untyped-def]
    a = mm.mmap("64K", prot="r")
    assert mm.fault(a, False).access == Access.FAULT           # zero page
    assert mm.fault(a, True).access == Access.SIGSEGV
    assert mm.fault(a + 8 * K, True).access == Access.SIGSEGV
    n = mm.mmap("64K", prot="")
    assert mm.fault(n, False).access == Access.SIGSEGV
    s = mm.stats()
    assert s.mm_anonpages == 0 and s.faults_sigsegv == 3


def test_uffd_bad_values(mm) -> None:  # type: ignore[no-untyped-def]
    a = mm.mmap("64K")
    with pytest.raises(ValueError, match="'sometimes'"):
        mm.uffd_register(a, "64K", "sometimes")
    with pytest.raises(LafValueError):
        mm.uffd_register(a, "64K", "minor")                   # anon: hugetlb/shmem only
    with pytest.raises(LafValueError, match=hex(a + 1)):
        mm.uffd_register(a + 1, "64K", "missing")
    with pytest.raises(LafValueError):
        mm.uffd_copy(a, "4K")                                 # not registered: ENOENT
    with pytest.raises(LafValueError):
        mm.uffd_writeprotect(a, "4K", True)                   # not WP-registered
    mm.uffd_register(a, "64K", "missing")
    with pytest.raises(LafValueError):
        mm.uffd_copy(a, "4K", wp=True)                        # WP copy needs WP mode
    mm.uffd_zeropage(a, "4K")
    with pytest.raises(LafValueError) as ei:
        mm.uffd_zeropage(a, "4K")                             # already filled
    assert ei.value.errno == lib.LAF_EEXIST


def test_prctl_bad_values(mm) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LafValueError, match=r"prctl\(99"):
        mm.prctl(99)
    with pytest.raises(LafValueError):
        mm.prctl(41, 0, 2)                                    # flags only when disabling
    with pytest.raises(LafValueError):
        mm.prctl(41, 1, 4)                                    # unknown flag
    with pytest.raises(LafValueError):
        mm.prctl(42, 1)
    assert mm.prctl(42) == 0


def test_memcg_and_fragment_bad_values(mm) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="4097"):
        mm.set_memcg_limit(4097)
    with pytest.raises(LafValueError, match=r"fragment\(-1\)"):
        mm.fragment(-1)
    with pytest.raises(LafValueError, match=r"fragment\(99\)"):
        mm.fragment(99)
    with pytest.raises(ValueError, match="stride"):
        mm.touch_range(0, "4K", stride=0)
    with pytest.raises(ValueError, match="npages"):
        mm.read_ptes(0, -1)


# --------------------------------------------------------------- policies
def test_order1_and_out_of_range_sizes() -> None:
    with pytest.raises(ValueError, match="order 1"):
        Policy.fixed(1)
    with pytest.raises(ValueError, match="8K"):
        Policy.upstream(thp_anon="8K:always")
    with pytest.raises(ValueError, match="4M"):
        Policy.upstream(thp_anon="16K-4M:always")
    with pytest.raises(ValueError, match="8K"):
        AddressSpace(Config(ram="64M", policy=Policy.upstream(sizes={"8K": "always"})))
    with pytest.raises(ValueError, match="99"):
        AddressSpace(Config(ram="64M", policy=Policy.fixed(99)))
    with pytest.raises(ValueError, match="12K"):
        AddressSpace(Config(ram="64M", policy=Policy.fixed("12K")))


@pytest.mark.parametrize(("spec", "message"), [
    ("bogus", "unknown policy 'bogus'"),
    ("upstream/enabled=sometimes", "invalid enabled='sometimes'"),
    ("upstream/64K=maybe", "invalid hugepages-64K/enabled value 'maybe'"),
    ("upstream/colour=blue", "unknown option 'colour'"),
    ("laf-v3/enabled=small", "invalid enabled='small' for policy 'laf-v3'"),
    ("upstream/defrag=eager", "invalid defrag='eager'"),
    ("upstream/use_zero_page=2", "use_zero_page must be 0 or 1"),
    ("upstream/anon_beside_full=yes", "anon_beside_full must be 0 or 1"),
    ("", "empty policy spec"),
    ("upstream/enabled", "option 'enabled' is not key=value"),
])
def test_unknown_policy_or_sysfs_value(spec: str, message: str) -> None:
    """Each bad spec is refused with a message naming the offending part."""
    with pytest.raises(ValueError, match=re.escape(message)):
        Policy.parse(spec)


@pytest.mark.parametrize("text", ["16K-64K", "16K:alwayz", "64K-16K:always", "", "abc:always",
                                  "16K,,32K:always", "12K:always", "16K:", ":always", "16K-:always"])
def test_malformed_thp_anon(text: str) -> None:
    with pytest.raises(ValueError, match=r"thp_anon|empty"):
        parse_thp_anon(text)


def test_bad_config() -> None:
    for kw, bad in (({"page_size": "8K"}, "8K"), ({"arch": "sparc"}, "sparc"),
                    ({"ram": "1M"}, "1M"), ({"memcg_limit": 4097}, "4097"),
                    ({"ram": "4097"}, "4097")):
        with pytest.raises(ValueError, match=bad):
            Config(**kw)


# --------------------------------------------------------- memory exhausted
@pytest.mark.parametrize("cls", SIDES)
def test_ram_exhausted_is_oom_and_state_intact(cls: type) -> None:
    with cls(Config(ram="4M", policy=Policy.parse("order-0"))) as mm:
        a = mm.mmap("8M")
        t = mm.touch_range(a, "8M", write=True)
        assert t.oom > 0 and t.faulted > 0
        mm.check_invariants()
        s = mm.stats()
        assert s.free_pages == 0
        assert s.mm_anonpages + s.nr_ptes + s.pinned_pages == s.ram_pages - 1
        r = mm.fault(a + 8 * M - 4096, True)
        assert r.access == Access.OOM
        mm.munmap(a, "4M")                                     # memory comes back
        mm.check_invariants()
        assert mm.fault(a + 8 * M - 4096, True).access == Access.FAULT


@pytest.mark.parametrize("cls", SIDES)
def test_page_table_frames_exhausted(cls: type) -> None:
    """With every frame in use, a read fault in a new PMD range needs a PTE
    table and gets VM_FAULT_OOM; nothing half-built is left behind."""
    with cls(Config(ram="4M", policy=Policy.parse("order-0"))) as mm:
        a = mm.mmap("2M")
        mm.touch_range(a, "2M", write=True)
        b = mm.mmap("16M")
        mm.touch_range(b, "2M", write=True)                    # eats the rest
        assert mm.stats().free_pages == 0
        before = mm.stats()
        far = b + 8 * M
        r = mm.fault(far, False)
        assert r.access == Access.OOM
        _, o = mm.read_ptes(far, 1)
        assert int(o[0]) == lib.LAF_ORDER_NONE
        after = mm.stats()
        assert after.nr_ptes == before.nr_ptes and after.mm_anonpages == before.mm_anonpages
        mm.check_invariants()


# ------------------------------------------------------------------ numpy
def test_numpy_arrays_wrong_dtype_layout_length() -> None:
    with AddressSpace(Config(ram="64M")) as mm:
        a = mm.mmap("64K")
        good = np.array([a, a + 4096], dtype=np.uint64)
        with pytest.raises(TypeError, match="int64"):
            mm.touch(np.array([a], dtype=np.int64))
        with pytest.raises(TypeError, match="float64"):
            mm.touch(np.array([float(a)]))
        with pytest.raises(ValueError, match="C-contiguous"):
            mm.touch(np.arange(a, a + 64 * K, 4096, dtype=np.uint64)[::2])
        with pytest.raises(ValueError, match="1-D"):
            mm.touch(good.reshape(1, 2))
        with pytest.raises(TypeError, match="str"):
            mm.touch("0x1000")
        with pytest.raises(ValueError, match="shape"):
            mm.touch(good, np.array([True], dtype=np.bool_))
        with pytest.raises(TypeError, match="int32"):
            mm.touch(good, np.array([1, 0], dtype=np.int32))
        with pytest.raises(ValueError, match="C-contiguous"):
            mm.touch(good, np.array([1, 0, 1, 0], dtype=np.uint8)[::2])
        ro = good.copy()
        ro.setflags(write=False)
        assert mm.touch(ro, True).faulted == 2                 # read-only input is fine
        # outputs (touch results, read_ptes) are buffers pylaf allocates; the
        # binding asks cffi for writable ones, which refuses a read-only array
        out = np.zeros(2, dtype=np.uint64)
        out.setflags(write=False)
        with pytest.raises(ValueError, match="read-only"):
            ffi.from_buffer("uint64_t[]", out, require_writable=True)
        assert mm.touch(np.array([], dtype=np.uint64)).accesses == 0
        mm.check_invariants()


# ---------------------------------------------------------- use after close
def test_use_after_close() -> None:
    mm = AddressSpace(Config(ram="64M"))
    a = mm.mmap("64K")
    mm.close()
    mm.close()                                                 # idempotent
    assert mm.closed
    calls = [lambda: mm.mmap("4K"), lambda: mm.munmap(a, "4K"), lambda: mm.fault(a),
             lambda: mm.touch_range(a, "4K"), lambda: mm.stats(), lambda: mm.vmas(),
             lambda: mm.read_ptes(a, 1), lambda: mm.check_invariants(),
             lambda: mm.madvise(a, "4K", "MADV_DONTNEED"), lambda: mm.prctl(42),
             lambda: mm.set_policy("order-0"), lambda: mm.set_memcg_limit(None),
             lambda: mm.fragment(3), lambda: mm.pte(a), lambda: mm.folio(a),
             lambda: mm.touch(np.array([a], dtype=np.uint64)), lambda: mm.shrink_deferred_split()]
    for call in calls:
        with pytest.raises(ClosedError, match="closed"):
            call()
    r = Reference(Config(ram="64M"))
    r.close()
    with pytest.raises(ClosedError):
        r.mmap("4K")


# ---------------------------------------------------------------- threads
def test_two_threads_one_address_space_busy() -> None:
    """A second thread entering a busy AddressSpace gets LafBusyError at once;
    nothing is corrupted (see tests/test_threads.py for the full story)."""
    with AddressSpace(Config(ram="512M", policy=Policy.parse("order-0"))) as mm:
        a = mm.mmap("256M")
        busy = 0
        for _attempt in range(10):                 # a loaded machine may need a retry
            started, done = threading.Event(), threading.Event()

            def worker(started: threading.Event, done: threading.Event) -> None:
                started.set()
                try:
                    for _ in range(4):
                        retry_busy(mm.touch_range, a, "256M", write=True)
                        retry_busy(mm.madvise, a, "256M", "MADV_DONTNEED")
                finally:
                    done.set()

            t = threading.Thread(target=worker, args=(started, done))
            t.start()
            started.wait()
            try:
                while not done.is_set():
                    try:
                        mm.stats()
                    except LafBusyError as exc:
                        assert exc.errno == lib.LAF_EBUSY
                        busy += 1
            finally:
                t.join()
            if busy:
                break
        assert busy > 0
        mm.check_invariants()
        assert mm.stats().mm_anonpages == 0


# ------------------------------------------------------ C re-checks (raw lib)
@pytest.fixture
def raw():  # type: ignore[no-untyped-def]
    with AddressSpace(Config(ram="64M")) as mm:
        yield mm
        mm.check_invariants()


def _pol(**kw: int):  # type: ignore[no-untyped-def]
    p = ffi.new("struct laf_policy *")
    lib.laf_policy_default(p, 12)
    for k, v in kw.items():
        if k == "per_size":
            p.per_size[v] = 9
        else:
            setattr(p, k, v)
    return p


def test_raw_entry_points_recheck(raw) -> None:  # type: ignore[no-untyped-def]
    m = raw.mm
    out = ffi.new("uint64_t *")
    o64 = ffi.new("int64_t *")
    res = ffi.new("struct laf_fault_result *")
    summ = ffi.new("struct laf_touch_summary *")
    nr = ffi.new("size_t *")
    bad = {
        "mmap unaligned fixed": lib.laf_mmap(m, 0x7F0000000001, 4096, 3, lib.LAF_MAP_FIXED, out),
        "mmap length 0": lib.laf_mmap(m, 0, 0, 3, 0, out),
        "mmap NULL out": lib.laf_mmap(m, 0, 4096, 3, 0, ffi.NULL),
        "mmap bad prot": lib.laf_mmap(m, 0, 4096, 0xFF, 0, out),
        "mmap bad flags": lib.laf_mmap(m, 0, 4096, 3, 0x80, out),
        "mmap huge": lib.laf_mmap(m, 0, 1 << 63, 3, 0, out),
        "mmap fixed past TASK_SIZE": lib.laf_mmap(m, 1 << 47, 4096, 3, lib.LAF_MAP_FIXED, out),
        "munmap unaligned": lib.laf_munmap(m, 0x10001, 4096),
        "munmap length 0": lib.laf_munmap(m, 0x10000, 0),
        "madvise advice": lib.laf_madvise(m, 0x10000, 4096, 99),
        "madvise unaligned": lib.laf_madvise(m, 0x10001, 4096, lib.LAF_MADV_HUGEPAGE),
        "prctl option": lib.laf_prctl(m, 99, 0, 0, o64),
        "prctl NULL out": lib.laf_prctl(m, lib.LAF_PR_GET_THP_DISABLE, 0, 0, ffi.NULL),
        "prctl flags": lib.laf_prctl(m, lib.LAF_PR_SET_THP_DISABLE, 1, 4, o64),
        "uffd mode 0": lib.laf_uffd_register(m, 0x10000, 4096, 0),
        "uffd mode 8": lib.laf_uffd_register(m, 0x10000, 4096, 8),
        "uffd minor": lib.laf_uffd_register(m, 0x10000, 4096, lib.LAF_UFFDIO_REGISTER_MODE_MINOR),
        "uffd copy unaligned": lib.laf_uffd_copy(m, 0x10001, 4096, 0),
        "uffd wp length 0": lib.laf_uffd_writeprotect(m, 0x10000, 0, 1),
        "fault NULL result": lib.laf_fault(m, 0x10000, 0, ffi.NULL),
        "touch NULL addrs": lib.laf_touch(m, ffi.NULL, 5, ffi.NULL, 0, ffi.NULL, summ),
        "touch NULL summary": lib.laf_touch(m, ffi.NULL, 0, ffi.NULL, 0, ffi.NULL, ffi.NULL),
        "touch_range stride 0": lib.laf_touch_range(m, 0x10000, 4096, 0, 0, summ),
        "touch_range wraps": lib.laf_touch_range(m, (1 << 64) - 4096, 1 << 20, 4096, 0, summ),
        "fragment -1": lib.laf_phys_fragment(m, -1),
        "fragment 99": lib.laf_phys_fragment(m, 99),
        "inject kind": lib.laf_inject(m, 99, 0, 1, 0),
        "inject order 99": lib.laf_inject(m, lib.LAF_INJECT_ALLOC_FAIL, 99, 1, 0),
        "inject order -1": lib.laf_inject(m, lib.LAF_INJECT_ALLOC_FAIL, -1, 1, 0),
        "get_stats NULL": lib.laf_get_stats(m, ffi.NULL),
        "get_vmas NULL nr": lib.laf_get_vmas(m, ffi.NULL, 0, ffi.NULL),
        "get_vmas NULL out": lib.laf_get_vmas(m, ffi.NULL, 5, nr),
        "read_ptes too many": lib.laf_read_ptes(m, 0x10000, 1 << 40, ffi.new("uint64_t[4]"), ffi.NULL),
        "memcg unaligned": lib.laf_set_memcg_limit(m, 4097),
        "geometry NULL": lib.laf_get_geometry(m, ffi.NULL),
        "policy NULL": lib.laf_set_policy(m, ffi.NULL),
        "get_policy NULL": lib.laf_get_policy(m, ffi.NULL),
        "policy kind": lib.laf_set_policy(m, _pol(kind=99)),
        "policy enabled": lib.laf_set_policy(m, _pol(enabled=99)),
        "upstream enabled=small": lib.laf_set_policy(m, _pol(enabled=lib.LAF_THP_SMALL)),
        "policy defrag": lib.laf_set_policy(m, _pol(defrag=9)),
        "policy use_zero_page": lib.laf_set_policy(m, _pol(use_zero_page=2)),
        "policy anon_beside_full": lib.laf_set_policy(m, _pol(anon_beside_full=7)),
        "fixed order 1": lib.laf_set_policy(m, _pol(kind=lib.LAF_POLICY_FIXED, fixed_order=1)),
        "fixed order 10": lib.laf_set_policy(m, _pol(kind=lib.LAF_POLICY_FIXED, fixed_order=10)),
        "fixed order -1": lib.laf_set_policy(m, _pol(kind=lib.LAF_POLICY_FIXED, fixed_order=-1)),
        "per_size value": lib.laf_set_policy(m, _pol(per_size=4)),
        "per_size order 1": lib.laf_set_policy(m, _pol(per_size=1)),
        "NULL mm stats": lib.laf_get_stats(ffi.NULL, ffi.new("struct laf_stats *")),
        "NULL mm mmap": lib.laf_mmap(ffi.NULL, 0, 4096, 3, 0, out),
        "NULL mm fault": lib.laf_fault(ffi.NULL, 0, 0, res),
    }
    ok = {k: v for k, v in bad.items() if v >= 0}
    assert not ok, f"C accepted bad values: {ok}"
    assert lib.laf_fault(m, (1 << 64) - 1, 1, res) == 0 and res.access == lib.LAF_ACCESS_SIGSEGV
    lib.laf_mm_destroy(ffi.NULL)
    assert ffi.string(lib.laf_strerror(12345))


def test_raw_mm_create_rechecks() -> None:
    o = ffi.new("laf_mm **")
    for field, val in (("page_shift", 13), ("arch", 5), ("ram_bytes", 0), ("ram_bytes", 4097),
                       ("memcg_limit_bytes", 4097), ("flags", 1), ("mmap_base", 12345),
                       ("ram_bytes", 1 << 62)):
        cfg = ffi.new("struct laf_config *")
        lib.laf_config_default(cfg)
        setattr(cfg, field, val)
        rv = lib.laf_mm_create(cfg, o)
        if rv == 0:
            lib.laf_mm_destroy(o[0])
        assert rv < 0, (field, val)
    cfg = ffi.new("struct laf_config *")
    lib.laf_config_default(cfg)
    assert lib.laf_mm_create(ffi.NULL, o) < 0
    assert lib.laf_mm_create(cfg, ffi.NULL) < 0


def test_mmap_prot_keeps_exec_and_write_only(mm) -> None:  # type: ignore[no-untyped-def]
    """calc_vm_prot_bits(): every PROT_* bit becomes its VM_* flag, so an
    executable mapping never merges with a readable one (replay of JITs)."""
    a = mm.mmap("64K", prot="rx")
    b = mm.mmap("64K", addr=a - 65536, prot="r", fixed=True)
    flags = {v.start: int(v.flags) for v in mm.vmas()}
    assert flags[a] == 5 and flags[b] == 1                # READ|EXEC, READ: two VMAs
