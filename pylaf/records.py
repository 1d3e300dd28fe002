"""The values the AddressSpace API returns and takes: access outcomes, fault
kinds, PTE / VMA / folio flags (the C core's enums), and the frozen result
records (``FaultResult``, ``TouchResult``, ``Vma``, ``Pte``, ``Folio``)."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

import numpy as np

from pylaf._ffi import lib


class Access(enum.IntEnum):
    """Outcome of one emulated access (enum laf_access)."""

    HIT = lib.LAF_ACCESS_HIT
    FAULT = lib.LAF_ACCESS_FAULT
    SIGSEGV = lib.LAF_ACCESS_SIGSEGV
    OOM = lib.LAF_ACCESS_OOM
    SIGBUS = lib.LAF_ACCESS_SIGBUS
    USERFAULT = lib.LAF_ACCESS_USERFAULT


class FaultKind(enum.IntEnum):
    """Which handler resolved a fault (enum laf_fault_kind)."""

    NONE = lib.LAF_FK_NONE
    ANON_READ = lib.LAF_FK_ANON_READ
    ANON_WRITE = lib.LAF_FK_ANON_WRITE
    WP = lib.LAF_FK_WP
    PMD = lib.LAF_FK_PMD
    PMD_ZERO = lib.LAF_FK_PMD_ZERO
    PMD_WP = lib.LAF_FK_PMD_WP


class PteFlags(enum.IntFlag):
    PRESENT = lib.LAF_PTE_PRESENT
    WRITE = lib.LAF_PTE_WRITE
    DIRTY = lib.LAF_PTE_DIRTY
    YOUNG = lib.LAF_PTE_YOUNG
    SPECIAL = lib.LAF_PTE_SPECIAL
    CONT = lib.LAF_PTE_CONT
    UFFD_WP = lib.LAF_PTE_UFFD_WP
    TOUCHED = lib.LAF_PTE_TOUCHED
    HUGE = lib.LAF_PTE_HUGE


class VmFlags(enum.IntFlag):
    READ = lib.LAF_VM_READ
    WRITE = lib.LAF_VM_WRITE
    EXEC = lib.LAF_VM_EXEC
    SHARED = lib.LAF_VM_SHARED
    UFFD_MISSING = lib.LAF_VM_UFFD_MISSING
    UFFD_WP = lib.LAF_VM_UFFD_WP
    UFFD_MINOR = lib.LAF_VM_UFFD_MINOR
    HUGEPAGE = lib.LAF_VM_HUGEPAGE
    NOHUGEPAGE = lib.LAF_VM_NOHUGEPAGE
    WIPEONFORK = lib.LAF_VM_WIPEONFORK
    DONTCOPY = lib.LAF_VM_DONTCOPY


class FolioFlags(enum.IntFlag):
    ANON = lib.LAF_FOLIO_ANON
    LRU = lib.LAF_FOLIO_LRU
    PMD_MAPPED = lib.LAF_FOLIO_PMD_MAPPED
    PARTIALLY_MAPPED = lib.LAF_FOLIO_PARTIALLY_MAPPED
    HUGE_ZERO = lib.LAF_FOLIO_HUGE_ZERO


MADVISE = {
    "MADV_DONTNEED": lib.LAF_MADV_DONTNEED, "dontneed": lib.LAF_MADV_DONTNEED,
    "MADV_HUGEPAGE": lib.LAF_MADV_HUGEPAGE, "hugepage": lib.LAF_MADV_HUGEPAGE,
    "MADV_NOHUGEPAGE": lib.LAF_MADV_NOHUGEPAGE, "nohugepage": lib.LAF_MADV_NOHUGEPAGE,
    "MADV_DONTFORK": lib.LAF_MADV_DONTFORK, "dontfork": lib.LAF_MADV_DONTFORK,
    "MADV_DOFORK": lib.LAF_MADV_DOFORK, "dofork": lib.LAF_MADV_DOFORK,
    "MADV_WIPEONFORK": lib.LAF_MADV_WIPEONFORK, "wipeonfork": lib.LAF_MADV_WIPEONFORK,
    "MADV_KEEPONFORK": lib.LAF_MADV_KEEPONFORK, "keeponfork": lib.LAF_MADV_KEEPONFORK,
}
UFFD_MODES = {"missing": lib.LAF_UFFDIO_REGISTER_MODE_MISSING,
              "wp": lib.LAF_UFFDIO_REGISTER_MODE_WP,
              "minor": lib.LAF_UFFDIO_REGISTER_MODE_MINOR}
PTE_PFN_SHIFT = lib.LAF_PTE_PFN_SHIFT


@dataclass(frozen=True)
class FaultResult:
    access: Access
    kind: FaultKind
    vm_fault: int
    order: int          #: order of the folio now mapping the address, -1: none / zero page
    nr_faults: int      #: handle_mm_fault() calls this access took


@dataclass(frozen=True)
class TouchResult:
    accesses: int
    hits: int
    faulted: int
    sigsegv: int
    oom: int
    sigbus: int
    userfault: int
    first_error: int                 #: index of the first failed access, -1 if none
    results: Optional[np.ndarray] = None   #: per-access Access codes (int8) when asked

    @property
    def ok(self) -> bool:
        return self.first_error < 0


@dataclass(frozen=True)
class Vma:
    start: int
    end: int
    flags: VmFlags
    anon_vma: int

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Pte:
    raw: int

    @property
    def flags(self) -> PteFlags:
        return PteFlags(self.raw & ((1 << PTE_PFN_SHIFT) - 1))

    @property
    def pfn(self) -> int:
        return self.raw >> int(PTE_PFN_SHIFT)

    @property
    def present(self) -> bool:
        return bool(self.raw & lib.LAF_PTE_PRESENT)

    @property
    def zero_page(self) -> bool:
        return bool(self.raw & lib.LAF_PTE_SPECIAL)


@dataclass(frozen=True)
class Folio:
    head_pfn: int
    index: int
    order: int
    refcount: int
    mapcount: int
    flags: FolioFlags

    @property
    def nr_pages(self) -> int:
        return 1 << self.order


__all__ = ["MADVISE", "PTE_PFN_SHIFT", "UFFD_MODES", "Access", "FaultKind", "FaultResult", "Folio",
           "FolioFlags", "Pte", "PteFlags", "TouchResult", "VmFlags", "Vma"]
