"""Configuration of an emulated machine + process (``struct laf_config``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from pylaf._ffi import ffi, lib
from pylaf.errors import LafError, LafValueError
from pylaf.geometry import ARCHES, DEFAULT_PAGE_SIZE, PAGE_SIZES, Geometry
from pylaf.policy import Policy
from pylaf.sizes import format_size, parse_size

#: vm.max_map_count's default (``LAF_DEFAULT_MAX_MAP_COUNT``)
DEFAULT_MAX_MAP_COUNT: int = lib.LAF_DEFAULT_MAX_MAP_COUNT
#: the sysctl is an int: proc_dointvec_minmax() from 0 to INT_MAX
MAX_MAP_COUNT_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class Config:
    """An emulated machine: base page size, architecture, RAM, memcg limit, policy.

    Sizes accept bytes or the kernel's spelling (``"4K"``, ``"64K"``, ``"8G"``).
    ``memcg_limit`` is the memcg's memory.max: ``None`` is unlimited ("max"),
    ``0`` lets nothing be charged (every anonymous write fault is OOM).
    ``ram`` is capped by what the host could back at full use
    (``lib.laf_max_ram_bytes()``); the memmap itself is built lazily.
    ``max_map_count`` is vm.max_map_count (0 to 2**31 - 1, default 65530): mmap
    fails with ENOMEM above it, a split that adds a VMA at it (madvise: EAGAIN).
    ``arch="arm64"`` enables contpte (PTE_CONT) and ``arch_wants_pte_order()``.
    The machine's page geometry is :attr:`geometry` (computed by the C core).
    A frozen value: comparable, hashable, picklable.
    """

    page_size: int | str = DEFAULT_PAGE_SIZE
    arch: str = "x86_64"
    ram: int | str = "4G"
    memcg_limit: Optional[int | str] = None
    policy: Policy = field(default_factory=Policy)
    mmap_base: Optional[int] = None
    max_map_count: int = DEFAULT_MAX_MAP_COUNT

    def __post_init__(self) -> None:
        ps = parse_size(self.page_size)
        if ps not in PAGE_SIZES:
            raise ValueError(f"invalid page_size {self.page_size!r}: expected one of "
                             f"{', '.join(format_size(p) for p in PAGE_SIZES)}")
        object.__setattr__(self, "page_size", ps)
        if self.arch not in ARCHES:
            raise ValueError(f"invalid arch {self.arch!r}: expected one of {', '.join(ARCHES)}")
        ram_text = self.ram
        ram = parse_size(self.ram)
        max_ram = int(lib.laf_max_ram_bytes(PAGE_SIZES[ps]))
        if ram > max_ram:
            raise LafValueError(f"invalid ram {self.ram!r}: above {format_size(max_ram)}, the most "
                                f"this host can back at {format_size(ps)} pages (24 bytes of host "
                                f"memory per page in use)", lib.LAF_ERANGE)
        object.__setattr__(self, "ram", ram)
        if self.memcg_limit is not None:
            lim = parse_size(self.memcg_limit)
            if lim % ps:
                raise ValueError(f"invalid memcg_limit {self.memcg_limit!r}: not a multiple of "
                                 f"the {format_size(ps)} page")
            object.__setattr__(self, "memcg_limit", lim)
        mmc: object = self.max_map_count
        if isinstance(mmc, bool) or not isinstance(mmc, int) or not 0 <= mmc <= MAX_MAP_COUNT_LIMIT:
            raise LafValueError(f"invalid max_map_count {mmc!r}: expected an int in "
                                f"[0, {MAX_MAP_COUNT_LIMIT}] (the vm.max_map_count sysctl)",
                                lib.LAF_ERANGE)
        policy: object = self.policy      # a spec string is accepted too
        if not isinstance(policy, Policy):
            object.__setattr__(self, "policy", Policy.parse(str(policy)))
        self._check_machine(ram_text)

    def _check_machine(self, ram_text: object) -> None:
        """Let laf_geometry_from_config() judge RAM and mmap_base (it runs
        laf_mm_create()'s checks); name what is wrong."""
        for name in ("ram", "mmap_base"):
            value = getattr(self, name)
            if value is not None and not 0 <= int(value) < 1 << 64:
                raise ValueError(f"invalid {name} {value!r}: out of range")
        ccfg = ffi.new("struct laf_config *")
        self.fill_c(ccfg)
        ccfg.mmap_base = 0
        try:
            Geometry.from_config(ccfg)
        except LafError as exc:
            pmd = Geometry.for_machine(int(self.page_size), self.arch).pmd_size
            raise ValueError(f"invalid ram {ram_text!r}: needs a multiple of the page size and at "
                             f"least two PMDs ({format_size(2 * pmd)}), below the C core's limit "
                             f"({exc})") from None
        try:
            self.geometry  # noqa: B018
        except LafError as exc:
            raise ValueError(f"invalid mmap_base {self.mmap_base!r}: needs a page-aligned address "
                             f"above mmap_min_addr and below TASK_SIZE ({exc})") from None

    @property
    def page_shift(self) -> int:
        return PAGE_SIZES[int(self.page_size)]

    @property
    def geometry(self) -> Geometry:
        """This machine's page geometry (``laf_geometry_from_config()``)."""
        ccfg = ffi.new("struct laf_config *")
        self.fill_c(ccfg)
        return Geometry.from_config(ccfg)

    def fill_c(self, ccfg: object) -> None:
        ccfg.page_shift = self.page_shift  # type: ignore[attr-defined]
        ccfg.arch = ARCHES[self.arch]  # type: ignore[attr-defined]
        ccfg.ram_bytes = int(self.ram)  # type: ignore[attr-defined]
        ccfg.memcg_limit_bytes = (lib.LAF_MEMCG_UNLIMITED  # type: ignore[attr-defined]
                                  if self.memcg_limit is None else int(self.memcg_limit))
        ccfg.mmap_base = int(self.mmap_base or 0)  # type: ignore[attr-defined]
        ccfg.max_map_count = self.max_map_count  # type: ignore[attr-defined]
