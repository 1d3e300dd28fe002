"""ASan probe: map, touch, read, fill and unmap the top of the address space at 16K and 64K.

Run against an extension built with the sanitizers (0 reports expected)::

    PYLAF_SANITIZE=1 python3 build.py
    PYTHONPATH=. LD_PRELOAD="$(cc -print-file-name=libasan.so) $(cc -print-file-name=libubsan.so)" \
        ASAN_OPTIONS=detect_leaks=0 python3 fuzz/probe_top_of_address_space.py

(PYTHONPATH=. so that this tree's pylaf is imported, not an installed one.)

The same operations at every page size are the C unit test
test_top_of_address_space (csrc/test_laf.c, `make ctest-asan`).
"""
from __future__ import annotations

from pylaf._ffi import ffi, lib

CASES = ((lib.LAF_PAGE_SHIFT_16K, 256 << 20), (lib.LAF_PAGE_SHIFT_64K, 1 << 30))


def probe(shift: int, ram: int) -> list[int]:
    """Return the codes of each call near TASK_SIZE for one page size."""
    cfg = ffi.new("struct laf_config *")
    lib.laf_config_default(cfg)
    cfg.page_shift = shift
    cfg.ram_bytes = ram
    cfg.arch = lib.LAF_ARCH_ARM64
    mmp = ffi.new("laf_mm **")
    if lib.laf_mm_create(cfg, mmp):
        raise SystemExit(f"laf_mm_create(page_shift={shift}) failed")
    mm = mmp[0]
    g = ffi.new("struct laf_geometry *")
    lib.laf_get_geometry(mm, g)
    ps, top = g.page_size, g.task_size
    out = ffi.new("uint64_t *")
    s = ffi.new("struct laf_touch_summary *")
    rw = lib.LAF_PROT_READ | lib.LAF_PROT_WRITE
    rc = [lib.laf_mmap(mm, top - 4 * ps, 4 * ps, rw, lib.LAF_MAP_FIXED, out),
          lib.laf_touch_range(mm, top - 4 * ps, 8 * ps, ps, 1, s),
          lib.laf_read_ptes(mm, top - 4 * ps, 4, ffi.new("uint64_t[4]"), ffi.new("int8_t[4]")),
          lib.laf_madvise(mm, top - 4 * ps, 4 * ps, lib.LAF_MADV_DONTNEED),
          lib.laf_uffd_register(mm, top - ps, ps, lib.LAF_UFFDIO_REGISTER_MODE_MISSING),
          lib.laf_uffd_copy(mm, top - ps, ps, 0),
          lib.laf_touch_range(mm, 0, 2**64 - 1, 2**63, 0, s),
          lib.laf_munmap(mm, top - 3 * ps, 2**64 - 1),
          lib.laf_munmap(mm, top - 4 * ps, 4 * ps),
          lib.laf_check_invariants(mm, ffi.NULL, 0)]
    lib.laf_mm_destroy(mm)
    print(f"{ps >> 10}K task_size={top:#x} codes={rc}")
    return rc


def main() -> None:
    """Probe every case; exit 1 if a code differs from the expected one."""
    want = [0, 0, 0, 0, 0, 0, 0, lib.LAF_EINVAL, 0, 0]
    bad = [shift for shift, ram in CASES if probe(shift, ram) != want]
    if bad:
        raise SystemExit(f"unexpected codes at page shifts {bad}")


if __name__ == "__main__":
    main()
