"""Page geometry of an emulated machine, as the C core computes it.

Every page-size fact (valid base page sizes, the PMD order and size, the
anonymous THP orders, ``TASK_SIZE``) comes from ``struct laf_geometry``
(``laf_geometry_from_config()`` / ``laf_get_geometry()``); Python restates none
of it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from pylaf._ffi import ffi, lib
from pylaf.errors import check

#: base page size in bytes -> page shift (the C core's ``enum laf_page_shift``)
PAGE_SIZES: dict[int, int] = {1 << s: s for s in (lib.LAF_PAGE_SHIFT_4K, lib.LAF_PAGE_SHIFT_16K,
                                                  lib.LAF_PAGE_SHIFT_64K)}
#: the page size of a machine nobody configured (x86_64's only one)
DEFAULT_PAGE_SIZE: int = 1 << lib.LAF_PAGE_SHIFT_4K
#: architecture names -> ``enum laf_arch``
ARCHES: dict[str, int] = {"x86_64": lib.LAF_ARCH_GENERIC, "generic": lib.LAF_ARCH_GENERIC,
                          "arm64": lib.LAF_ARCH_ARM64, "aarch64": lib.LAF_ARCH_ARM64}


@dataclass(frozen=True)
class Geometry:
    """``struct laf_geometry``: the shape of one emulated machine's page tables.

    >>> g = Geometry.for_machine(4096)
    >>> g.pmd_order, g.pmd_size >> 20, g.anon_orders[:3]
    (9, 2, (2, 3, 4))
    """

    page_size: int
    page_shift: int
    ptrs_per_pte: int
    pmd_size: int
    pmd_order: int
    max_page_order: int
    task_size: int
    mmap_base: int
    arch_pte_order: int
    cont_pte_order: int
    ram_pages: int

    @classmethod
    def from_c(cls, g: object) -> Geometry:
        """Copy a ``struct laf_geometry *`` (cffi) into a value."""
        return cls(**{f: int(getattr(g, f)) for f in cls.__dataclass_fields__})

    @classmethod
    def from_config(cls, ccfg: object) -> Geometry:
        """``laf_geometry_from_config()``: the geometry a ``struct laf_config *``
        would give, or the LafError ``laf_mm_create()`` would raise."""
        geo = ffi.new("struct laf_geometry *")
        check(lib.laf_geometry_from_config(ccfg, geo), "laf_geometry_from_config")
        return cls.from_c(geo)

    @classmethod
    def for_machine(cls, page_size: int, arch: str = "x86_64") -> Geometry:
        """The geometry of a default machine with this page size and arch."""
        return _for_machine(int(page_size), arch)

    @property
    def anon_orders(self) -> tuple[int, ...]:
        """Orders an anonymous THP may have: 2 up to the PMD order (order 1 never)."""
        return tuple(range(2, self.pmd_order + 1))

    def size_of(self, order: int) -> int:
        """Bytes in a folio of ``order``."""
        return self.page_size << order


@functools.cache
def _for_machine(page_size: int, arch: str) -> Geometry:
    if page_size not in PAGE_SIZES:
        raise ValueError(f"invalid page_size {page_size!r}: expected one of "
                         f"{', '.join(str(p >> 10) + 'K' for p in PAGE_SIZES)}")
    if arch not in ARCHES:
        raise ValueError(f"invalid arch {arch!r}: expected one of {', '.join(ARCHES)}")
    cfg = ffi.new("struct laf_config *")
    lib.laf_config_default(cfg)
    cfg.page_shift = PAGE_SIZES[page_size]
    cfg.arch = ARCHES[arch]
    cfg.ram_bytes = 4 << 30  # holds the two PMDs laf_mm_create() needs at every page size
    return Geometry.from_config(cfg)


__all__ = ["ARCHES", "DEFAULT_PAGE_SIZE", "PAGE_SIZES", "Geometry"]
