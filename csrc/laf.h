/* SPDX-License-Identifier: GPL-2.0 */
/*
 * laf.h - the whole public ABI of the pylaf emulator core.
 *
 * pylaf emulates the Linux anonymous page-fault path with large folios
 * (LARGE_ANON_FOLIO / multi-size THP), as mainline 6.8..6.18 does it and as
 * the 2023 LAF v3 patch and its policy alternatives proposed it.  The core
 * (the csrc/ C files) keeps the kernel's function names: handle_mm_fault(),
 * do_anonymous_page(), alloc_anon_folio(), pte_range_none(), set_ptes(), ...
 * Everything Python or the C microbench may touch is declared in the region
 * between the CFFI markers below; build.py feeds exactly that region to
 * cffi's cdef(), so there is no second copy of any struct.
 *
 * Conventions:
 *  - Every entry point returns an int: LAF_OK (0) or a negative errno-style
 *    code from enum laf_err (same meaning as the kernel's -EINVAL, -ENOMEM...).
 *    laf_strerror() names it.
 *  - Fault outcomes use a vm_fault_t-like bitmask (LAF_VM_FAULT_*), with the
 *    kernel's bit values, plus a per-access outcome code (LAF_ACCESS_*).
 *  - One laf_machine is one emulated machine: RAM and the buddy allocator,
 *    one memory cgroup, the THP knobs and policy, the zero pages, the
 *    deferred-split queue, the machine-wide counters.  One laf_mm is one
 *    address space (mm_struct) on a machine; laf_mm_fork() makes another
 *    on the same machine.  laf_mm_create() makes a private machine with one
 *    mm (freed with its last mm).
 *  - One thread at a time per machine: every entry point takes the
 *    machine's non-blocking busy flag (faults in two mms of one machine
 *    share the allocator) and returns LAF_EBUSY if another thread holds it.
 */
#ifndef PYLAF_LAF_H
#define PYLAF_LAF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* --- BEGIN CFFI CDEF --- */

/* The opaque emulated address space (one mm_struct). */
typedef struct laf_mm laf_mm;
/* The opaque emulated machine (RAM, memcg, THP knobs) its address spaces share. */
typedef struct laf_machine laf_machine;

/* Per-order arrays are indexed by folio order 0..LAF_NR_ORDERS-1. */
#define LAF_NR_ORDERS 16
/* PAGE_ALLOC_COSTLY_ORDER, used by the LAF v3 fallback ladder. */
#define LAF_COSTLY_ORDER 3

/* enum laf_err - return codes of every entry point (negative errno values). */
enum laf_err {
	LAF_OK = 0,
	LAF_EPERM = -1,
	LAF_ENOENT = -2,
	LAF_EAGAIN = -11,   /* madvise: a split refused (max_map_count) */
	LAF_ENOMEM = -12,
	LAF_EFAULT = -14,
	LAF_EBUSY = -16,
	LAF_EEXIST = -17,
	LAF_EINVAL = -22,
	LAF_ENOSPC = -28,
	LAF_ERANGE = -34,
	LAF_ENOSYS = -38,
	LAF_EUCLEAN = -117, /* check_invariants() found corrupt state */
};

/* Base page sizes: CONFIG_ARM64_{4K,16K,64K}_PAGES (x86-64 has 4K only). */
enum laf_page_shift {
	LAF_PAGE_SHIFT_4K = 12,
	LAF_PAGE_SHIFT_16K = 14,
	LAF_PAGE_SHIFT_64K = 16,
};

/* Architectures: generic (x86-64 like) and arm64 (contpte, arch_wants_pte_order). */
enum laf_arch {
	LAF_ARCH_GENERIC = 0,
	LAF_ARCH_ARM64 = 1,
};

/*
 * THP "enabled" values.  Global knob: never/madvise/always, plus Huang Ying's
 * proposed small/auto (policy LAF_POLICY_HUANG_SYSFS only).  Per-size knob
 * (hugepages-<N>kB/enabled): never/always/madvise/inherit.
 */
enum laf_thp_mode {
	LAF_THP_NEVER = 0,
	LAF_THP_ALWAYS = 1,
	LAF_THP_MADVISE = 2,
	LAF_THP_INHERIT = 3,
	LAF_THP_SMALL = 4,
	LAF_THP_AUTO = 5,
};

/* /sys/kernel/mm/transparent_hugepage/defrag values (recorded; see policy.c). */
enum laf_defrag {
	LAF_DEFRAG_ALWAYS = 0,
	LAF_DEFRAG_DEFER = 1,
	LAF_DEFRAG_DEFER_MADVISE = 2,
	LAF_DEFRAG_MADVISE = 3,
	LAF_DEFRAG_NEVER = 4,
};

/* Order-selection policies. */
enum laf_policy_kind {
	LAF_POLICY_UPSTREAM = 0,    /* mainline mTHP, 6.8..6.18 */
	LAF_POLICY_LAF_V3 = 1,      /* LAF v3 patch as posted (Ryan Roberts' table) */
	LAF_POLICY_HUANG_A = 2,     /* Huang Ying's first alternative table */
	LAF_POLICY_HUANG_B = 3,     /* Huang Ying's second alternative table */
	LAF_POLICY_HUANG_SYSFS = 4, /* never/madvise/always/small/auto sysfs values */
	LAF_POLICY_FIXED = 5,       /* every write fault tries exactly fixed_order, then 0 */
};

/* Emulated vm_flags (kernel bit values). */
#define LAF_VM_READ          0x00000001
#define LAF_VM_WRITE         0x00000002
#define LAF_VM_EXEC          0x00000004
#define LAF_VM_SHARED        0x00000008
#define LAF_VM_UFFD_MISSING  0x00000200
#define LAF_VM_UFFD_WP       0x00001000
#define LAF_VM_UFFD_MINOR    0x00020000
#define LAF_VM_WIPEONFORK    0x02000000
#define LAF_VM_HUGEPAGE      0x20000000
#define LAF_VM_NOHUGEPAGE    0x40000000
/* VM_DONTCOPY: the kernel's 0x00020000 is LAF_VM_UFFD_MINOR in this ABI */
#define LAF_VM_DONTCOPY      0x100000000
/*
 * VM_ACCOUNT (the kernel's value): the commit charge of a private writable
 * mapping, set by mmap() of a writable mapping and by mprotect() making one
 * writable (mm/mprotect.c mprotect_fixup()).  Internal: it only decides VMA
 * merges; laf_get_vmas() does not report it.
 */
#define LAF_VM_ACCOUNT       0x00100000

/* mmap prot / flags */
#define LAF_PROT_NONE   0x0
#define LAF_PROT_READ   0x1
#define LAF_PROT_WRITE  0x2
#define LAF_PROT_EXEC   0x4   /* mprotect() only: VM_EXEC (laf_mmap() takes READ/WRITE) */
#define LAF_MAP_FIXED   0x1   /* place exactly at addr; overlap is -EEXIST (MAP_FIXED_NOREPLACE) */
#define LAF_MAP_NOMERGE 0x2   /* a VMA the kernel keeps unmerged: no merge at creation, its own
                                 anon_vma, never merged with the VMA just below it (brk():
                                 do_brk_flags() only expands VMAs at or above start_brk, so the
                                 heap never merges with .bss; mremap(): the moved VMA keeps its
                                 source's anon_vma) */

/* mremap flags (the kernel's values) */
#define LAF_MREMAP_MAYMOVE   0x1
#define LAF_MREMAP_FIXED     0x2
#define LAF_MREMAP_DONTUNMAP 0x4

/* madvise advice (Linux values) */
#define LAF_MADV_DONTNEED    4
#define LAF_MADV_DONTFORK    10
#define LAF_MADV_DOFORK      11
#define LAF_MADV_HUGEPAGE    14
#define LAF_MADV_NOHUGEPAGE  15
#define LAF_MADV_WIPEONFORK  18
#define LAF_MADV_KEEPONFORK  19

/* prctl(PR_SET_THP_DISABLE) */
#define LAF_PR_SET_THP_DISABLE          41
#define LAF_PR_GET_THP_DISABLE          42
#define LAF_PR_THP_DISABLE_EXCEPT_ADVISED 2

/* userfaultfd registration modes and ioctls */
#define LAF_UFFDIO_REGISTER_MODE_MISSING 0x1
#define LAF_UFFDIO_REGISTER_MODE_WP      0x2
#define LAF_UFFDIO_REGISTER_MODE_MINOR   0x4

/*
 * PTE encoding (also used for the emulated view of a PMD entry).  The pfn is
 * stored at bit LAF_PTE_PFN_SHIFT whatever the page size.
 */
#define LAF_PTE_PRESENT  0x001
#define LAF_PTE_WRITE    0x002
#define LAF_PTE_DIRTY    0x004
#define LAF_PTE_YOUNG    0x008
#define LAF_PTE_SPECIAL  0x010   /* pte_special: the zero page */
#define LAF_PTE_CONT     0x020   /* arm64 PTE_CONT */
#define LAF_PTE_UFFD_WP  0x040
#define LAF_PTE_TOUCHED  0x080   /* emulator only: the workload accessed this page */
#define LAF_PTE_HUGE     0x100   /* PMD leaf (only in laf_read_ptes output) */
#define LAF_PTE_PROTNONE 0x200   /* pte_protnone(): present, no access allowed (PROT_NONE VMA) */

/* laf_read_ptes() per-page orders: >= 0 is the folio order; these are not folios */
#define LAF_ORDER_NONE      -1   /* pte_none / not present */
#define LAF_ORDER_ZERO      -2   /* the shared zero page (pte_special) */
#define LAF_ORDER_HUGE_ZERO -3   /* inside a huge zero PMD */
#define LAF_PTE_PFN_SHIFT 12

/* vm_fault_t bits (kernel values) */
#define LAF_VM_FAULT_OOM       0x000001
#define LAF_VM_FAULT_SIGBUS    0x000002
#define LAF_VM_FAULT_SIGSEGV   0x000040
#define LAF_VM_FAULT_NOPAGE    0x000100
#define LAF_VM_FAULT_RETRY     0x000400
#define LAF_VM_FAULT_FALLBACK  0x000800
#define LAF_VM_FAULT_USERFAULT 0x100000 /* emulator: handed to userfaultfd */

/* Outcome of one emulated memory access. */
enum laf_access {
	LAF_ACCESS_HIT = 0,      /* the PTE/PMD already allowed the access: no fault */
	LAF_ACCESS_FAULT = 1,    /* one or more faults, then the access completed */
	LAF_ACCESS_SIGSEGV = 2,  /* no VMA, or the VMA forbids the access */
	LAF_ACCESS_OOM = 3,      /* VM_FAULT_OOM: nothing could be allocated */
	LAF_ACCESS_SIGBUS = 4,
	LAF_ACCESS_USERFAULT = 5,/* handed to userfaultfd (MISSING or WP); not resolved */
};

/* What handled a fault (struct laf_fault_result.kind). */
enum laf_fault_kind {
	LAF_FK_NONE = 0,
	LAF_FK_ANON_READ = 1,    /* do_anonymous_page read: zero-page PTE */
	LAF_FK_ANON_WRITE = 2,   /* do_anonymous_page write: new folio */
	LAF_FK_WP = 3,           /* do_wp_page: write after read / wp */
	LAF_FK_PMD = 4,          /* do_huge_pmd_anonymous_page: THP */
	LAF_FK_PMD_ZERO = 5,     /* huge zero PMD */
	LAF_FK_PMD_WP = 6,       /* do_huge_pmd_wp_page (write to huge zero PMD) */
};

/* Fault-injection hooks (laf_inject). */
enum laf_inject_kind {
	LAF_INJECT_ALLOC_FAIL = 1,   /* next `count` buddy allocations of `order` fail */
	LAF_INJECT_CHARGE_FAIL = 2,  /* next `count` memcg charges of `order` fail */
	LAF_INJECT_RACE = 3,         /* between alloc and the PTL recheck, another thread write-faults `addr` */
	LAF_INJECT_PTE_MAP_FAIL = 4, /* next `count` pte_offset_map() in alloc_anon_folio fail (-EAGAIN) */
	LAF_INJECT_CLEAR = 5,        /* disarm everything */
};

/*
 * memory.max = "max": no memcg limit (laf_config.memcg_limit_bytes,
 * laf_set_memcg_limit()).  A limit of 0 is the kernel's memory.max = 0:
 * every charge fails.
 */
#define LAF_MEMCG_UNLIMITED 0xffffffffffffffffULL
/* vm.max_map_count's default (include/linux/mm.h DEFAULT_MAX_MAP_COUNT) */
#define LAF_DEFAULT_MAX_MAP_COUNT 65530

struct laf_config {
	uint32_t page_shift;        /* 12 (4K), 14 (16K) or 16 (64K) */
	uint32_t arch;              /* enum laf_arch */
	uint64_t ram_bytes;         /* emulated RAM */
	uint64_t memcg_limit_bytes; /* memory.max of the mm's memcg; LAF_MEMCG_UNLIMITED = "max",
				     * 0 = nothing may be charged */
	uint64_t mmap_base;         /* top of the mmap area; 0 = TASK_SIZE - 128M */
	uint32_t flags;             /* reserved, must be 0 */
	uint32_t max_map_count;     /* vm.max_map_count (LAF_DEFAULT_MAX_MAP_COUNT); at most INT32_MAX */
};

struct laf_policy {
	int32_t kind;               /* enum laf_policy_kind */
	int32_t enabled;            /* global knob: enum laf_thp_mode */
	int32_t defrag;             /* enum laf_defrag */
	int32_t use_zero_page;      /* transparent_hugepage/use_zero_page */
	int32_t fixed_order;        /* LAF_POLICY_FIXED: 0, 2..PMD_ORDER */
	int32_t anon_beside_full;   /* this machine's kernel: mTHP only beside a full block (0/1) */
	int32_t per_size[LAF_NR_ORDERS]; /* upstream: hugepages-<N>kB/enabled by order */
};

/*
 * struct laf_stats - every counter.  Kernel names where the kernel has one.
 *
 * laf_get_stats(mm): the event counters that mm caused (faults*, pgfault,
 * min_flt, anon_fault_*, pgreuse, ...) and its gauges (mm_anonpages,
 * nr_ptes, nr_pmds, nr_vmas, pages_touched, zero_pages_touched), with the
 * machine-wide gauges (nr_anon, nr_anon_partially_mapped, lru_pages,
 * deferred_split_queue, ram/free/pinned pages, memcg_*).
 * laf_machine_get_stats(): the event counters summed over every mm that
 * lived on the machine, the mm gauges over the live ones, the same
 * machine-wide gauges.  With one mm, both are the same.
 *
 * Per-order (hugepages-<N>kB/stats/): anon_fault_alloc, anon_fault_fallback,
 * anon_fault_fallback_charge, split, split_deferred, nr_anon,
 * nr_anon_partially_mapped, and anon_fault_declined (the anon_beside_full
 * knob of the 6.18.44-fc kernel, see docs/kernel-findings.md).  Like count_mthp_stat(), index 0 stays 0.
 * folios_mapped[] is the emulator's own histogram of folios mapped by faults
 * and by UFFDIO_COPY (order 0 included).
 *
 * Work accounting (emulator's own):
 *  per_folio_ops: operations done once per folio whatever its size: buddy
 *    allocation, memcg charge, folio_ref_add, add_mm_counter,
 *    folio_add_new_anon_rmap, folio_add_lru_vma, one set_ptes() call,
 *    update_mmu_cache_range, rmap removal of a PTE batch, folio free.
 *  per_page_ops: operations done once per base page: zeroing a page,
 *    writing or clearing one PTE, per-page rmap state (AnonExclusive,
 *    _mapcount), compound tail initialisation.
 */
struct laf_stats {
	uint64_t anon_fault_alloc[LAF_NR_ORDERS];
	uint64_t anon_fault_fallback[LAF_NR_ORDERS];
	uint64_t anon_fault_fallback_charge[LAF_NR_ORDERS];
	uint64_t anon_fault_declined[LAF_NR_ORDERS];
	uint64_t split[LAF_NR_ORDERS];
	uint64_t split_deferred[LAF_NR_ORDERS];
	int64_t nr_anon[LAF_NR_ORDERS];
	int64_t nr_anon_partially_mapped[LAF_NR_ORDERS];
	uint64_t folios_mapped[LAF_NR_ORDERS];

	/* /proc/vmstat */
	uint64_t pgfault;            /* vmstat PGFAULT: every completed fault, errors included */
	uint64_t min_flt;            /* task min_flt (getrusage ru_minflt): successful faults */
	uint64_t thp_fault_alloc;
	uint64_t thp_fault_fallback;
	uint64_t thp_fault_fallback_charge;
	uint64_t thp_zero_page_alloc;
	uint64_t thp_zero_page_alloc_failed;
	uint64_t thp_split_pmd;
	uint64_t thp_split_page;
	uint64_t thp_deferred_split_page;
	uint64_t pgreuse;            /* vmstat PGREUSE: a write fault reused the page in place */

	/* mm counters */
	int64_t mm_anonpages;        /* MM_ANONPAGES (RSS anon), in base pages */
	int64_t nr_ptes;             /* PTE tables, deposited ones included */
	int64_t nr_pmds;             /* PMD tables */
	int64_t nr_vmas;

	/* physical memory and memcg, in base pages */
	uint64_t ram_pages;
	uint64_t free_pages;
	uint64_t pinned_pages;       /* frames held by laf_phys_fragment() */
	uint64_t memcg_charged;
	uint64_t memcg_limit;        /* memory.max in pages; LAF_MEMCG_UNLIMITED when "max" */
	uint64_t memcg_max_events;   /* charges refused */
	int64_t lru_pages;

	/* fault work */
	uint64_t faults;             /* exception entries (perf page-faults) */
	uint64_t faults_read;        /* do_anonymous_page, read */
	uint64_t faults_write;       /* do_anonymous_page, write */
	uint64_t faults_wp;          /* do_wp_page */
	uint64_t faults_wp_copy;     /* wp_page_copy(): COW copies, the zero page included */
	uint64_t faults_pmd;         /* handled at PMD level (THP, huge zero, huge wp) */
	uint64_t faults_retried;     /* returned without mapping (race/-EAGAIN): re-faulted */
	uint64_t faults_userfault;   /* handed to userfaultfd */
	uint64_t faults_oom;
	uint64_t faults_sigsegv;
	uint64_t faults_sigbus;
	uint64_t hits;               /* accesses satisfied by a present entry */

	uint64_t set_ptes_calls;
	uint64_t ptes_written;
	uint64_t ptes_cleared;
	uint64_t per_page_ops;
	uint64_t per_folio_ops;
	uint64_t zero_page_maps;     /* small zero-page PTEs installed */
	uint64_t huge_zero_pmd_maps;
	uint64_t contpte_blocks;     /* contpte blocks mapped with PTE_CONT */
	uint64_t contpte_unfolds;
	uint64_t bytes_zeroed;
	uint64_t alloc_retries;      /* alloc_anon_folio attempts after a failed order */

	int64_t pages_touched;       /* resident anon pages the workload accessed */
	int64_t zero_pages_touched;  /* zero-page (small or huge) pages the workload read */
	uint64_t deferred_split_queue;

	/* memory over time */
	int64_t hiwater_rss;         /* VmHWM (get_mm_hiwater_rss()): exact maximum of MM_ANONPAGES, in base pages */
	uint64_t pgtables_bytes;     /* VmPTE (mm_pgtables_bytes()): (nr_ptes + nr_pmds) tables of one page each */
};

/* Per-access outcome of laf_fault(). */
struct laf_fault_result {
	int32_t access;     /* enum laf_access */
	int32_t kind;       /* enum laf_fault_kind of the last fault handled */
	uint32_t vm_fault;  /* LAF_VM_FAULT_* of the last handle_mm_fault() */
	int32_t order;      /* order of the folio now mapping addr, -1 if none/zero page */
	uint32_t nr_faults; /* handle_mm_fault() calls made for this access */
	uint32_t reserved;
};

/* Summary of a batch (laf_touch / laf_touch_range). */
struct laf_touch_summary {
	uint64_t accesses;
	uint64_t hits;
	uint64_t faulted;    /* accesses that needed at least one fault */
	uint64_t sigsegv;
	uint64_t oom;
	uint64_t sigbus;
	uint64_t userfault;
	int64_t first_error; /* index of the first non-hit/non-fault access, -1 if none */
};

struct laf_vma_info {
	uint64_t start;
	uint64_t end;
	uint64_t vm_flags;
	uint64_t anon_vma;  /* 0 = none yet */
};

struct laf_folio_info {
	uint64_t head_pfn;
	uint64_t index;       /* folio->index: linear page index of the head */
	int32_t order;
	int32_t refcount;
	int32_t mapcount;     /* large mapcount: PTE mappings + PMD mappings */
	uint32_t flags;       /* LAF_FOLIO_* */
};

#define LAF_FOLIO_ANON              0x01
#define LAF_FOLIO_LRU               0x02
#define LAF_FOLIO_PMD_MAPPED        0x04
#define LAF_FOLIO_PARTIALLY_MAPPED  0x08
#define LAF_FOLIO_HUGE_ZERO         0x10

/* Geometry of an mm, derived from its config. */
struct laf_geometry {
	uint64_t page_size;
	uint32_t page_shift;
	uint32_t ptrs_per_pte;
	uint64_t pmd_size;
	uint32_t pmd_order;
	uint32_t max_page_order;   /* buddy MAX_PAGE_ORDER */
	uint64_t task_size;        /* TASK_SIZE = (1 << 47) - page_size, page-aligned:
	                              0x7ffffffff000 (4K), 0x7fffffffc000 (16K), 0x7fffffff0000 (64K) */
	uint64_t mmap_base;
	int32_t arch_pte_order;    /* arch_wants_pte_order(): -1 generic */
	uint32_t cont_pte_order;   /* arm64 CONT_PTES order, 0 if none */
	uint64_t ram_pages;
};

/*
 * struct laf_memmap_info - how much of the memmap is initialised.
 *
 * The memmap and the buddy free lists are built lazily, one memory section at
 * a time (mm/mm_init.c deferred_grow_zone() under DEFERRED_STRUCT_PAGE_INIT):
 * a section's MAX_PAGE_ORDER blocks are queued only when the allocator runs
 * out of free blocks, so host memory follows what is allocated.
 */
struct laf_memmap_info {
	uint64_t section_pages;     /* frames per memory section (PAGES_PER_SECTION) */
	uint64_t nr_sections;       /* sections spanning the emulated RAM */
	uint64_t sections_initialised; /* sections whose struct pages are (at least partly) set up */
	uint64_t deferred_pages;    /* free frames not initialised yet (counted in free_pages) */
	uint64_t memmap_bytes;      /* the memmap when every frame is in use: ram_pages * 16 */
	uint64_t max_ram_bytes;     /* laf_max_ram_bytes() at this page size */
};

const char *laf_strerror(int err);
void laf_config_default(struct laf_config *cfg);
void laf_policy_default(struct laf_policy *pol, uint32_t page_shift);

int laf_mm_create(const struct laf_config *cfg, laf_mm **out);
/* exit_mmap() and free; a private machine (laf_mm_create()) goes with its last mm */
void laf_mm_destroy(laf_mm *mm);

/* machines and fork */
int laf_machine_create(const struct laf_config *cfg, laf_machine **out);
/* destroys every mm still on the machine (exit_mmap()), then the machine */
void laf_machine_destroy(laf_machine *machine);
/*
 * the owner lets go of the machine: freed now if no mm is left on it, else
 * with its last mm (laf_mm_destroy()); the mms stay valid until destroyed
 */
void laf_machine_put(laf_machine *machine);
int laf_mm_create_on(laf_machine *machine, laf_mm **out);
/* the THP knobs of the machine (laf_set_policy() on any of its mms does the same) */
int laf_machine_set_policy(laf_machine *machine, const struct laf_policy *pol);
/* the machine of @mm (NULL for NULL) */
laf_machine *laf_mm_machine(laf_mm *mm);
/* fork(): dup_mmap() of @mm into a new mm on the same machine */
int laf_mm_fork(laf_mm *mm, laf_mm **child);
/* event counters summed over every mm that lived on the machine + the gauges */
int laf_machine_get_stats(laf_machine *machine, struct laf_stats *st);
int laf_machine_check_invariants(laf_machine *machine, char *msg, size_t msglen);
/* the number of live mms on the machine */
int laf_machine_nr_mms(laf_machine *machine, size_t *nr);
int laf_get_geometry(laf_mm *mm, struct laf_geometry *geo);
/* The geometry a config would give, without creating an mm (same checks as laf_mm_create). */
int laf_geometry_from_config(const struct laf_config *cfg, struct laf_geometry *geo);

int laf_set_policy(laf_mm *mm, const struct laf_policy *pol);
int laf_get_policy(laf_mm *mm, struct laf_policy *pol);
int laf_set_memcg_limit(laf_mm *mm, uint64_t limit_bytes);

/* address-space operations */
int laf_mmap(laf_mm *mm, uint64_t addr, uint64_t len, int prot, int flags, uint64_t *out_addr);
int laf_munmap(laf_mm *mm, uint64_t addr, uint64_t len);
/* mremap(): LAF_MREMAP_* @flags; *@out_addr = the new address (errors as do_mremap()) */
int laf_mremap(laf_mm *mm, uint64_t addr, uint64_t old_len, uint64_t new_len, int flags,
	       uint64_t new_addr, uint64_t *out_addr);
int laf_madvise(laf_mm *mm, uint64_t addr, uint64_t len, int advice);
/* mprotect(): LAF_PROT_* bits; errors as mm/mprotect.c do_mprotect_pkey() */
int laf_mprotect(laf_mm *mm, uint64_t addr, uint64_t len, int prot);
int laf_prctl(laf_mm *mm, int option, uint64_t arg2, uint64_t arg3, int64_t *out);
int laf_uffd_register(laf_mm *mm, uint64_t addr, uint64_t len, int mode);
int laf_uffd_unregister(laf_mm *mm, uint64_t addr, uint64_t len);
int laf_uffd_copy(laf_mm *mm, uint64_t addr, uint64_t len, int wp);
int laf_uffd_zeropage(laf_mm *mm, uint64_t addr, uint64_t len);
int laf_uffd_writeprotect(laf_mm *mm, uint64_t addr, uint64_t len, int wp);

/* accesses */
int laf_fault(laf_mm *mm, uint64_t addr, int write, struct laf_fault_result *res);
int laf_touch(laf_mm *mm, const uint64_t *addrs, size_t n, const uint8_t *writes,
	      int write, int8_t *results, struct laf_touch_summary *sum);
int laf_touch_range(laf_mm *mm, uint64_t start, uint64_t len, uint64_t stride,
		    int write, struct laf_touch_summary *sum);

/* memory pressure and test hooks */
int laf_shrink_deferred_split(laf_mm *mm, uint64_t *nr_split);
int laf_phys_fragment(laf_mm *mm, int max_free_order);
int laf_phys_unfragment(laf_mm *mm);
int laf_inject(laf_mm *mm, int kind, int order, uint64_t count, uint64_t addr);

/* inspection */
int laf_get_stats(laf_mm *mm, struct laf_stats *st);
int laf_reset_counters(laf_mm *mm);
int laf_get_vmas(laf_mm *mm, struct laf_vma_info *out, size_t cap, size_t *nr);
int laf_lookup(laf_mm *mm, uint64_t addr, uint64_t *pte, struct laf_folio_info *folio);
int laf_read_ptes(laf_mm *mm, uint64_t start, size_t npages, uint64_t *ptes, int8_t *orders);
int laf_check_invariants(laf_mm *mm, char *msg, size_t msglen);
int laf_get_memmap_info(laf_mm *mm, struct laf_memmap_info *info);
/*
 * The largest ram_bytes laf_mm_create() accepts for @page_shift (0 if the
 * shift is invalid): the host must be able to back the memmap and the PTEs of
 * every frame in use (24 bytes a frame) within its physical memory (MemTotal),
 * and a pfn must fit in 31 bits.
 */
uint64_t laf_max_ram_bytes(uint32_t page_shift);

/*
 * The op stream (laf_run_ops(), csrc/ops.c): a whole workload or trace replay
 * as an array of fixed-size records executed by one call, under the busy
 * flag, without returning to the caller between records.
 *
 * Record fields by op (addr/len in bytes; unused fields must be 0):
 *  LAF_OP_NOP       nothing.
 *  LAF_OP_MAP       mmap(addr, len, prot = arg, LAF_MAP_* flags = arg2).
 *                   LAF_OPF_REPLACE: munmap(addr, len) first (a MAP_FIXED
 *                   mapping replacing what was there).  LAF_OPF_MOVED: after
 *                   mapping, re-create the pages the last LAF_OP_MOVE_PAGES
 *                   noted (see there).
 *  LAF_OP_UNMAP     munmap(addr, len).  LAF_OPF_ALL: every VMA, one munmap
 *                   per VMA in address order (a process's exit; addr/len 0);
 *                   it also drops pages noted by LAF_OP_MOVE_PAGES.
 *  LAF_OP_MADVISE   madvise(addr, len, advice = arg).
 *  LAF_OP_TOUCH     accesses at addr, addr + arg, ... below addr + len
 *                   (arg = stride, non-zero; len = 1 is one access);
 *                   LAF_OPF_WRITE: stores, else loads.
 *  LAF_OP_PRCTL     prctl(option = arg, arg2 = addr, arg3 = len).
 *  LAF_OP_POPULATE  pages present without a fault (UFFDIO_REGISTER missing,
 *                   UFFDIO_COPY or, with LAF_OPF_ZERO, UFFDIO_ZEROPAGE,
 *                   then UFFDIO_UNREGISTER) over [addr, addr + len).
 *  LAF_OP_MOVE_PAGES note which pages of [addr, addr + len) hold a folio and
 *                   which the zero page, for the next LAF_OP_MAP with
 *                   LAF_OPF_MOVED, which re-creates them as LAF_OP_POPULATE
 *                   runs (folio pages first) at its own addr (trace replay's
 *                   stand-in for mremap() moving pages).
 *  LAF_OP_PROTECT   mprotect(addr, len, prot = arg) (LAF_PROT_* bits).
 *  LAF_OP_REMAP     mremap(addr, old_len = len, new_len = arg, flags =
 *                   (op flags >> LAF_OPF_MREMAP_SHIFT) & 7, new_addr = arg2);
 *                   the result becomes the stream's last-map address (as
 *                   a LAF_OP_MAP's), so later records can be RELATIVE to it.
 *  LAF_OP_FORK, LAF_OP_EXIT
 *                   fork(), exit(): reserved, LAF_ENOSYS
 *                   until the core has them.
 * mm: the address space a record acts on; 0 is laf_run_ops()'s @mm (the
 * only one until fork exists), any other index is a per-record LAF_EINVAL.
 * LAF_OPF_RELATIVE: addr is an offset from the address the last successful
 * LAF_OP_MAP of the stream returned (a workload mapping with no hint).
 */
enum laf_op_code {
	LAF_OP_NOP = 0,
	LAF_OP_MAP = 1,
	LAF_OP_UNMAP = 2,
	LAF_OP_MADVISE = 3,
	LAF_OP_TOUCH = 4,
	LAF_OP_PRCTL = 5,
	LAF_OP_POPULATE = 6,
	LAF_OP_MOVE_PAGES = 7,
	LAF_OP_PROTECT = 8,
	LAF_OP_REMAP = 9,
	LAF_OP_FORK = 10,
	LAF_OP_EXIT = 11,
	LAF_OP_NR = 12,
};

/* struct laf_op.flags */
#define LAF_OPF_WRITE    0x0001  /* LAF_OP_TOUCH: stores */
#define LAF_OPF_ZERO     0x0002  /* LAF_OP_POPULATE: zero-page PTEs */
#define LAF_OPF_REPLACE  0x0004  /* LAF_OP_MAP: munmap the range first */
#define LAF_OPF_MOVED    0x0008  /* LAF_OP_MAP: re-create the pages LAF_OP_MOVE_PAGES noted */
#define LAF_OPF_ALL      0x0010  /* LAF_OP_UNMAP: every VMA */
#define LAF_OPF_RELATIVE 0x0020  /* addr is relative to the last LAF_OP_MAP's address */
#define LAF_OPF_QUIET    0x0040  /* a failure of this record is not counted */
#define LAF_OPF_STOP     0x0080  /* stop the stream if this record fails */
/* LAF_OP_REMAP: LAF_MREMAP_* flags << LAF_OPF_MREMAP_SHIFT (bits 0x1000-0x4000) */
#define LAF_OPF_MREMAP_SHIFT 12

struct laf_op {
	uint16_t op;       /* enum laf_op_code */
	uint16_t flags;    /* LAF_OPF_* */
	uint32_t mm;       /* address-space index: 0 = laf_run_ops()'s mm */
	uint64_t addr;
	uint64_t len;
	uint64_t arg;      /* prot, advice, stride, prctl option, ... (per op) */
	uint64_t arg2;     /* LAF_OP_MAP: LAF_MAP_* flags */
};

/*
 * Rows of struct laf_ops_result.errors: the step that failed.  A step is the
 * record's op (its code is the row), except: LAF_OPS_STEP_RECORD (row 0) is
 * a record refused as a whole (unknown op, mm index, bad fields, reserved op)
 * and a populate (a LAF_OP_POPULATE record or a LAF_OPF_MOVED re-creation)
 * fails either in its registration or in its fill.
 */
#define LAF_OPS_STEP_RECORD        0
#define LAF_OPS_STEP_UFFD_REGISTER 12   /* LAF_OP_NR */
#define LAF_OPS_STEP_UFFD_FILL     13
#define LAF_OPS_NR_STEPS           14
/* Columns: -errno (LAF_EUCLEAN = -117 is the largest) */
#define LAF_OPS_NR_ERRNO           128

struct laf_ops_result {
	uint64_t done;          /* records executed (failed ones included) */
	uint64_t failed;        /* records with at least one counted failure */
	int64_t first_error;    /* index of the first failing record, -1 if none */
	int32_t first_errno;    /* its (negative) code, 0 if none */
	int32_t stopped;        /* 1: a LAF_OPF_STOP record failed and ended the stream */
	uint64_t last_map_addr; /* address of the last successful LAF_OP_MAP */
	struct laf_touch_summary touch; /* every LAF_OP_TOUCH access (first_error: record index) */
	uint64_t errors[LAF_OPS_NR_STEPS][LAF_OPS_NR_ERRNO]; /* failures by step and -errno */
};

/*
 * Execute @n records of @ops in order on @mm (one busy-flag section).
 * Return: LAF_OK after the stream ran (per-record failures are in @res, never
 * the return value), LAF_EINVAL for a NULL @res or @ops with @n > 0,
 * LAF_EBUSY if another thread holds @mm.
 */
int laf_run_ops(laf_mm *mm, const struct laf_op *ops, size_t n, struct laf_ops_result *res);

/* --- END CFFI CDEF --- */

#ifdef __cplusplus
}
#endif
#endif /* PYLAF_LAF_H */
