"""The model's objects (include/linux/mm_types.h): folios, page tables, VMAs,
the resolved policy, the page geometry, and ``MmStruct`` holding one process.

The geometry is derived here from the base page size and arch, as the
kernel's headers derive it (PAGE_SHIFT, PTRS_PER_PTE, PMD_SHIFT ...), not read
from the C core.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from pylaf.reference.abi import (
    ARM64_ARCHES,
    CONT_PTE_ORDER,
    MIN_MAX_ORDER,
    MMAP_GAP,
    MMAP_MIN_ADDR,
    NR_ORDERS,
    PAGE_SHIFTS,
    PER_ORDER_COUNTERS,
    SCALAR_COUNTERS,
    USER_VA_TOP,
)
from pylaf.reference.page_alloc import PhysMem


@dataclass(frozen=True)
class PageGeometry:
    """Page-table shape of one machine (4-level tables of 8-byte entries).

    >>> g = PageGeometry.derive(4096, "x86_64", None)
    >>> g.pmd_order, g.pmd_size >> 20, g.pud_size >> 30, g.cont_pte_order
    (9, 2, 1, 0)
    """

    page_size: int
    page_shift: int
    ptrs_per_pte: int
    pmd_order: int
    pmd_shift: int
    pmd_size: int
    pud_shift: int
    pud_size: int
    max_order: int
    cont_pte_order: int          # arm64 contpte block order; 0 without contpte
    arch_pte_order: int          # arch_wants_pte_order(); -1 when the arch has none
    task_size: int
    mmap_base: int
    mmap_min_addr: int

    @classmethod
    def derive(cls, page_size: int, arch: str, mmap_base: Optional[int]) -> PageGeometry:
        shift = page_size.bit_length() - 1
        if page_size <= 0 or 1 << shift != page_size or shift not in PAGE_SHIFTS:
            raise ValueError(f"invalid page_size {page_size!r}: expected 4K, 16K or 64K")
        ptrs = page_size // 8                         # one table fills one page
        pmd_order = ptrs.bit_length() - 1
        pmd_shift = shift + pmd_order
        pud_shift = pmd_shift + pmd_order
        arm64 = arch in ARM64_ARCHES
        cont = CONT_PTE_ORDER[shift] if arm64 else 0
        task_size = USER_VA_TOP - page_size
        base = mmap_base if mmap_base else task_size - MMAP_GAP
        return cls(page_size=page_size, page_shift=shift, ptrs_per_pte=ptrs, pmd_order=pmd_order,
                   pmd_shift=pmd_shift, pmd_size=1 << pmd_shift, pud_shift=pud_shift,
                   pud_size=1 << pud_shift, max_order=max(MIN_MAX_ORDER, pmd_order),
                   cont_pte_order=cont, arch_pte_order=cont if arm64 else -1, task_size=task_size,
                   mmap_base=base & ~(page_size - 1), mmap_min_addr=MMAP_MIN_ADDR)

    @property
    def cont_nr(self) -> int:
        """CONT_PTES: PTEs in a contpte block (0 without contpte)."""
        return 1 << self.cont_pte_order if self.cont_pte_order else 0

    def pmd_index(self, addr: int) -> int:
        """Key of the PMD entry covering ``addr`` (the model's flat pmd table)."""
        return addr >> self.pmd_shift

    def pte_index(self, addr: int) -> int:
        return (addr >> self.page_shift) & (self.ptrs_per_pte - 1)


class RefFolio:
    """An anonymous folio (struct folio), or the huge zero folio."""

    __slots__ = ("huge_zero", "mapped", "nr_mapped", "order", "partially_mapped", "pfn",
                 "pmd_mapped", "queued", "refcount", "va")

    def __init__(self, pfn: int, order: int, va: int) -> None:
        self.pfn = pfn
        self.order = order
        self.va = va                          # virtual address of the head page
        self.mapped = bytearray(1 << order)   # which pages a PTE maps
        self.nr_mapped = 0                    # PTE mappings
        self.pmd_mapped = False               # mapped by one PMD
        self.refcount = 0
        self.partially_mapped = False
        self.queued = False                   # on the deferred split queue
        self.huge_zero = False

    @property
    def nr(self) -> int:
        return 1 << self.order

    @property
    def mapcount(self) -> int:
        return self.nr_mapped + (1 if self.pmd_mapped else 0)


class PteTable:
    """A PTE table: one order-0 frame; ``ptes[i]`` is the raw entry (0 = none)."""

    __slots__ = ("pfn", "ptes", "used")

    def __init__(self, pfn: int, nr: int) -> None:
        self.pfn = pfn
        self.ptes = [0] * nr
        self.used = 0                          # non-none entries


class HugePmd:
    """A PMD leaf: a THP, or the huge zero folio.  ``table`` is the deposited
    PTE table (pgtable_trans_huge_deposit).  ``flags`` are the entry bits;
    ``touched`` the per-page TOUCHED bits the emulator keeps."""

    __slots__ = ("flags", "folio", "table", "touched")

    def __init__(self, folio: RefFolio, flags: int, table: int, nr: int) -> None:
        self.folio = folio
        self.flags = flags
        self.table = table
        self.touched = bytearray(nr)


PmdEntry = Union[PteTable, HugePmd]


class RefVma:
    """struct vm_area_struct: [start, end), vm_flags, anon_vma (an id), and the
    huang-sysfs "auto" ramp state."""

    __slots__ = ("anon_vma", "auto_next", "auto_ramp", "end", "flags", "start")

    def __init__(self, start: int, end: int, flags: int) -> None:
        self.start = start
        self.end = end
        self.flags = flags
        self.anon_vma = 0
        self.auto_next = 0
        self.auto_ramp = 0

    def copy(self, start: int, end: int) -> RefVma:
        v = RefVma(start, end, self.flags)
        v.anon_vma = self.anon_vma
        v.auto_next = self.auto_next
        v.auto_ramp = self.auto_ramp
        return v

    def __repr__(self) -> str:
        return f"<vma {self.start:#x}-{self.end:#x} {self.flags:#x} av={self.anon_vma}>"


@dataclass
class PolicyState:
    """struct laf_policy, resolved for one page size by the model itself."""

    kind: str
    enabled: str
    use_zero_page: bool
    fixed_order: int
    anon_beside_full: bool
    per_size: dict[int, str]


@dataclass
class MmStruct:
    """One process on one machine: everything the model keeps."""

    geo: PageGeometry
    phys: PhysMem
    pol: PolicyState
    cnt: dict[str, int]
    per_order: dict[str, list[int]]
    vma_list: list[RefVma] = field(default_factory=list)
    pmd: dict[int, PmdEntry] = field(default_factory=dict)    # PMD index -> entry
    pmd_tables: set[int] = field(default_factory=set)          # PUD index with a PMD table
    folio_of: dict[int, RefFolio] = field(default_factory=dict)  # pfn -> folio, every page
    deferred: dict[RefFolio, None] = field(default_factory=dict)  # deferred split queue (FIFO)
    huge_zero: Optional[RefFolio] = None
    thp_disable: int = 0                     # PR_GET_THP_DISABLE value: 0, 1 or 3
    next_anon_vma: int = 1
    max_map_count: int = 65530              # vm.max_map_count (Config.max_map_count)
    inject_pte_map: int = 0
    race_addrs: list[int] = field(default_factory=list)
    in_race: bool = False

    @staticmethod
    def new_counters() -> tuple[dict[str, int], dict[str, list[int]]]:
        return ({n: 0 for n in SCALAR_COUNTERS}, {n: [0] * NR_ORDERS for n in PER_ORDER_COUNTERS})

    def find_vma(self, addr: int) -> Optional[RefVma]:
        """The VMA containing ``addr`` (not the kernel's "first ending above")."""
        for v in self.vma_list:
            if v.start <= addr < v.end:
                return v
            if v.start > addr:
                return None
        return None

    def vma_index(self, vma: RefVma) -> int:
        for i, v in enumerate(self.vma_list):
            if v is vma:
                return i
        raise KeyError(vma)

    def pte_table(self, addr: int) -> Optional[PteTable]:
        ent = self.pmd.get(self.geo.pmd_index(addr))
        return ent if isinstance(ent, PteTable) else None
