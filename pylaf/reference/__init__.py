"""A pure-Python reference model of the anonymous page-fault path.

This package re-implements, in plain Python and independently of the C core,
what ``csrc/`` emulates: the Linux anonymous fault path with large folios
(mainline mTHP 6.8..6.18, the 2023 LAF v3 patch and its policy alternatives),
on one emulated machine with any number of address spaces (fork, COW, exit).
It is written from the kernel's behaviour (docs/kernel-semantics.md, ``mm/``) and the ABI in ``csrc/laf.h``, not from
``csrc/*.c``, and is meant to be read beside ``mm/``: the modules mirror the
C core's files and the functions keep the kernel's names.

==================  ========================================================
``abi``             ABI numbers (``laf.h``), counter names, errno -> exception
``page_alloc``      deterministic buddy allocator, memcg, reclaim, injection
``mm_types``        folios, page tables, VMAs, geometry, ``MmStruct``
``policy``          policy resolution, thp_vma_allowable_orders(), prctl
``pgtable``         PMD/PTE tables, set_ptes, contpte, free_pgtables()
``rmap``            anon_vma_prepare(), mapcounts and MM ids, folio add/free
``memory``          fault path, do_anonymous_page(), alloc_anon_folio(),
                    do_wp_page(), zap
``huge_memory``     PMD path, huge zero folio, split, deferred-split shrinker
``vma``             placement, split/merge, mmap/munmap/madvise
``fork``            dup_mmap(), copy_page_range(), copy_huge_pmd(), exit_mmap()
``userfaultfd``     register/copy/zeropage/writeprotect, uffd-wp
``mprotect``        do_mprotect_pkey(), mprotect_fixup(), change_protection()
``mremap``          do_mremap(): shrink, grow in place, move_vma(), move_page_tables()
``check``           the model's own invariants, mapcounts recounted over every mm
``mm``              :class:`RefMachine` and :class:`Reference`, the public API
                    mirroring pylaf.AddressSpace
==================  ========================================================

Import graph (lower rows import only rows above them): abi; page_alloc;
mm_types; policy, pgtable, rmap; huge_memory; memory; vma; userfaultfd,
mprotect, mremap; fork; check; mm.

It is also what a user would write without the C core, and about 200x
slower (~9 us per order-0 fault against ~0.04 us).  It calls no C code.
"""
from __future__ import annotations

from pylaf.reference.mm import Reference, RefMachine, open_reference
from pylaf.reference.page_alloc import BuddyAllocator

__all__ = ["BuddyAllocator", "RefMachine", "Reference", "open_reference"]
