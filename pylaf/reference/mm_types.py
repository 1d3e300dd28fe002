"""The model's objects (include/linux/mm_types.h): folios, page tables, VMAs,
the resolved policy, the page geometry, the ``Machine`` every process shares
and ``MmStruct`` holding one process.

The geometry is derived here from the base page size and arch, as the
kernel's headers derive it (PAGE_SHIFT, PTRS_PER_PTE, PMD_SHIFT ...), not read
from the C core.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from pylaf.reference.abi import (
    ARM64_ARCHES,
    CONT_PTE_ORDER,
    COW_COUNTERS,
    MACHINE_PER_ORDER_GAUGES,
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
    """An anonymous folio (struct folio), or the huge zero folio, with the
    mapcounts 6.18 keeps (include/linux/mm_types.h; CONFIG_PAGE_MAPCOUNT=y,
    CONFIG_MM_ID=y), stored as counts (the kernel stores them minus one):

    * ``page_mapcount[k]``: PTE mappings of page ``k`` over every mm (``_mapcount``);
    * ``large_mapcount``: every mapping, PTE and PMD, over every mm (large folios);
    * ``entire_mapcount``: PMD mappings (``_entire_mapcount``);
    * ``nr_pages_mapped``: pages with a PTE mapping (``_nr_pages_mapped`` without
      ENTIRELY_MAPPED, which is ``entire_mapcount > 0``);
    * ``mm_id`` / ``mm_id_mapcount``: the two MM-id slots (0 = MM_ID_DUMMY, free)
      and their mappings; ``shared``: FOLIO_MM_IDS_SHARED_BIT ("maybe mapped shared");
    * ``anon_exclusive[k]``: PageAnonExclusive of page ``k`` (the head for a PMD).

    ``index`` is folio->index, the linear page index of the head
    (linear_page_index(): ``vm_pgoff`` + page offset in the VMA).  It is
    fixed at allocation; mremap() moves the mapping, not the index, so the
    head's virtual address is found through the VMA (:func:`vma_address`).
    """

    __slots__ = ("anon_exclusive", "entire_mapcount", "huge_zero", "index", "large_mapcount", "mm_id",
                 "mm_id_mapcount", "nr_pages_mapped", "order", "page_mapcount", "partially_mapped",
                 "pfn", "queued", "refcount", "shared")

    def __init__(self, pfn: int, order: int, index: int) -> None:
        self.pfn = pfn
        self.order = order
        self.index = index                    # folio->index (linear page index of the head)
        self.page_mapcount = [0] * (1 << order)
        self.large_mapcount = 0
        self.entire_mapcount = 0
        self.nr_pages_mapped = 0
        self.mm_id = [0, 0]
        self.mm_id_mapcount = [0, 0]
        self.shared = False
        self.anon_exclusive = bytearray(1 << order)
        self.refcount = 0
        self.partially_mapped = False
        self.queued = False                   # on the deferred split queue
        self.huge_zero = False

    @property
    def nr(self) -> int:
        return 1 << self.order

    @property
    def large(self) -> bool:
        return self.order > 0

    @property
    def pmd_mapped(self) -> bool:
        return self.entire_mapcount > 0

    @property
    def mapcount(self) -> int:
        """folio_mapcount(): folio_large_mapcount() for a large folio, else _mapcount + 1."""
        return self.large_mapcount if self.large else self.page_mapcount[0]


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
    """struct vm_area_struct: [start, end), vm_flags, vm_pgoff (in pages:
    ``start >> PAGE_SHIFT`` for a fresh anonymous mapping, do_mmap(); kept by
    a move, copy_vma()), anon_vma (an id), and the huang-sysfs "auto" ramp
    state."""

    __slots__ = ("anon_vma", "auto_next", "auto_ramp", "end", "flags", "pgoff", "start")

    def __init__(self, start: int, end: int, flags: int, pgoff: int) -> None:
        self.start = start
        self.end = end
        self.flags = flags
        self.pgoff = pgoff
        self.anon_vma = 0
        self.auto_next = 0
        self.auto_ramp = 0

    def copy(self, start: int, end: int, pgoff: Optional[int] = None) -> RefVma:
        """vm_area_dup() + vma_set_range(): the same VMA over [start, end)
        (``pgoff`` defaults to this VMA's, right when ``start`` is its start)."""
        v = RefVma(start, end, self.flags, self.pgoff if pgoff is None else pgoff)
        v.anon_vma = self.anon_vma
        v.auto_next = self.auto_next
        v.auto_ramp = self.auto_ramp
        return v

    def __repr__(self) -> str:
        return f"<vma {self.start:#x}-{self.end:#x} {self.flags:#x} pgoff={self.pgoff:#x} av={self.anon_vma}>"


def linear_page_index(geo: PageGeometry, vma: RefVma, addr: int) -> int:
    """linear_page_index(): the page index of ``addr`` in ``vma``."""
    return vma.pgoff + ((addr - vma.start) >> geo.page_shift)


def vma_address(geo: PageGeometry, vma: RefVma, index: int) -> Optional[int]:
    """vma_address(): where page ``index`` is mapped in ``vma``, or None
    when ``vma`` does not cover that index."""
    if index < vma.pgoff:
        return None
    addr = vma.start + ((index - vma.pgoff) << geo.page_shift)
    return addr if addr < vma.end else None


@dataclass
class PolicyState:
    """struct laf_policy, resolved for one page size by the model itself."""

    kind: str
    enabled: str
    use_zero_page: bool
    fixed_order: int
    anon_beside_full: bool
    per_size: dict[int, str]


class Machine:
    """The emulated machine (what every mm shares): RAM and the buddy
    allocator with the memcg (``phys``), the THP knobs (``pol``), the page
    geometry, the folios by PFN, the zero and huge zero folios, the
    deferred-split queue, the machine-wide gauges (LRU pages, per-size
    ``nr_anon`` / ``nr_anon_partially_mapped``), the live mms and the event
    counters of the mms that exited.  ``current`` is the mm the running
    operation belongs to (the kernel's ``current->mm``): events counted
    below an mm-less call (reclaim, memcg) go to it.
    """

    def __init__(self, geo: PageGeometry, phys: PhysMem, pol: PolicyState) -> None:
        self.geo = geo
        self.phys = phys
        self.pol = pol
        self.folio_of: dict[int, RefFolio] = {}          # pfn -> folio, every page
        self.deferred: dict[RefFolio, None] = {}         # deferred split queue (FIFO)
        self.huge_zero: Optional[RefFolio] = None
        self.next_anon_vma = 1
        self.next_mm_id = 1                              # MM_ID_MIN
        self.mms: list[MmStruct] = []
        self.lru_pages = 0
        self.gauges: dict[str, list[int]] = {n: [0] * NR_ORDERS for n in MACHINE_PER_ORDER_GAUGES}
        self.retired_cnt, self.retired_per_order = new_counters()
        self.current: Optional[MmStruct] = None
        self.max_map_count = 65530                       # vm.max_map_count (Config.max_map_count)

    def enter(self, mm: MmStruct) -> None:
        """``mm`` becomes current: the memcg's events are counted on it."""
        self.current = mm
        self.phys.cnt = mm.cnt


def new_counters() -> tuple[dict[str, int], dict[str, list[int]]]:
    """Zeroed scalar (with the COW counters) and per-order counters."""
    return ({n: 0 for n in SCALAR_COUNTERS + COW_COUNTERS},
            {n: [0] * NR_ORDERS for n in PER_ORDER_COUNTERS})


class MmStruct:
    """One address space (struct mm_struct) on a machine: VMAs, page tables,
    its event counters and RSS, prctl state, its MM id.  The machine's
    parts are reached through it (``mm.phys``, ``mm.pol``, ``mm.folio_of`` ...),
    and its ``per_order`` dict holds the machine's per-size gauge lists."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.mm_id = machine.next_mm_id
        machine.next_mm_id += 1
        self.cnt, self.per_order = new_counters()
        self.per_order.update(machine.gauges)            # nr_anon ... are machine-wide
        self.vma_list: list[RefVma] = []
        self.pmd: dict[int, PmdEntry] = {}               # PMD index -> entry
        self.pmd_tables: set[int] = set()                # PUD index with a PMD table
        self.thp_disable = 0                             # PR_GET_THP_DISABLE value: 0, 1 or 3
        self.inject_pte_map = 0
        self.race_addrs: list[int] = []
        self.in_race = False
        machine.mms.append(self)

    # --- the machine's parts, reached through the mm as the kernel code does
    @property
    def geo(self) -> PageGeometry:
        return self.machine.geo

    @property
    def max_map_count(self) -> int:
        """vm.max_map_count: a sysctl, so the machine's."""
        return self.machine.max_map_count

    @property
    def phys(self) -> PhysMem:
        return self.machine.phys

    @property
    def pol(self) -> PolicyState:
        return self.machine.pol

    @pol.setter
    def pol(self, pol: PolicyState) -> None:
        self.machine.pol = pol

    @property
    def folio_of(self) -> dict[int, RefFolio]:
        return self.machine.folio_of

    @property
    def deferred(self) -> dict[RefFolio, None]:
        return self.machine.deferred

    @property
    def huge_zero(self) -> Optional[RefFolio]:
        return self.machine.huge_zero

    @huge_zero.setter
    def huge_zero(self, folio: Optional[RefFolio]) -> None:
        self.machine.huge_zero = folio

    @property
    def next_anon_vma(self) -> int:
        return self.machine.next_anon_vma

    @next_anon_vma.setter
    def next_anon_vma(self, value: int) -> None:
        self.machine.next_anon_vma = value

    def add_anon_rss(self, nr: int) -> None:
        """add_mm_counter(MM_ANONPAGES, nr) then update_hiwater_rss() (include/linux/mm.h),
        kept exact: the high-water mark follows every increase."""
        self.cnt["mm_anonpages"] += nr
        if self.cnt["mm_anonpages"] > self.cnt["hiwater_rss"]:
            self.cnt["hiwater_rss"] = self.cnt["mm_anonpages"]

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
