/* SPDX-License-Identifier: GPL-2.0 */
/*
 * laf_internal.h - private state of the emulator and the kernel-named helpers
 * shared by the C files.  Nothing here crosses the cffi boundary.
 *
 * Shims are sorted as in tools/testing/vma:
 *   dup    - same logic as the named kernel function (6.18 mm/, see
 *            docs/kernel-semantics.md), kept in sync by hand;
 *   custom - the kernel function, changed for observability (counters);
 *   stub   - the kernel concept is not emulated (documented at the site).
 */
#ifndef PYLAF_LAF_INTERNAL_H
#define PYLAF_LAF_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "laf.h"

#ifdef LAF_DEBUG
#include <assert.h>
#define LAF_BUG_ON(x) assert(!(x))
#else
#define LAF_BUG_ON(x) ((void)0)
#endif

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

typedef uint64_t pte_t;
typedef uint32_t vm_fault_t;

/*
 * The top of the user address space: TASK_SIZE = (1 << 47) - PAGE_SIZE, the
 * x86-64 formula (arch/x86/include/asm/page_64_types.h TASK_SIZE_MAX: the
 * last page below the non-canonical hole is left out) at every page size, so
 * it is page-aligned like arm64's TASK_SIZE (1 << VA_BITS):
 *   4K:  0x7ffffffff000    16K: 0x7fffffffc000    64K: 0x7fffffff0000
 * Every range check may then assume TASK_SIZE is a multiple of PAGE_SIZE.
 */
#define USER_VA_BITS 47
static inline uint64_t task_size_for(unsigned int page_shift)
{
	return (1ULL << USER_VA_BITS) - (1ULL << page_shift);
}
#define MMAP_MIN_ADDR 0x10000ULL            /* vm.mmap_min_addr default */
#define MIN_GAP (128ULL << 20)              /* mmap_base gap below TASK_SIZE */
#define NO_PFN 0xffffffffu

/*
 * struct page - 16 bytes per emulated frame (the kernel spends 64).
 *
 * head page of a folio: flags (PG_*, order, index bits 32..39), refcount,
 *   mapcount and index (folio->index bits 0..31).  mapcount is the page's
 *   own _mapcount (PTE mappings of this page over every mm, stored as a
 *   count, not minus one); for an order-0 folio that is the folio mapcount.
 * tail page: PG_tail (+ PG_anon_exclusive), head = pfn of the head
 *   (compound_head()), mapcount = the page's _mapcount.
 * the first tail pages of a large folio carry the per-folio mapcounts, as
 *   the kernel's struct folio overlays page[1] (include/linux/mm_types.h);
 *   anon large folios have order >= 2, so page[1..3] exist:
 *     page[1].index         _large_mapcount (PTE + PMD mappings, all mms)
 *     page[1].flags >> 16   _nr_pages_mapped without ENTIRELY_MAPPED (pages
 *                           with a PTE mapping anywhere; ENTIRELY_MAPPED is
 *                           _entire_mapcount > 0)
 *     page[2].flags >> 16   _entire_mapcount (PMD mappings)
 *     page[2].index         _mm_id_mapcount[0] | _mm_id_mapcount[1] << 16
 *     page[3].index         _mm_id[0] | _mm_id[1] << 16 | MM_IDS_SHARED_BIT
 *   Counts are stored as counts (the kernel stores them minus one; a free
 *   MM-id slot is id MM_ID_DUMMY with count 0 here).  16 bits suffice: one
 *   mm maps a folio at most once per page (no mremap), and a PMD folio has
 *   at most 8192 pages (64K base pages).
 * free buddy block head: PG_buddy, order, buddy_next / buddy_prev list links.
 *
 * folio->mapping (the anon_vma) is implied: there is no mremap, and fork
 * keeps every address, so index << PAGE_SHIFT is the folio's virtual address
 * in every mm that maps it (rmap walks look there: deferred split).
 */
struct page {
	uint32_t flags;
	union {
		int32_t refcount;
		uint32_t head;
		uint32_t buddy_next;
	};
	union {
		int32_t mapcount;
		uint32_t buddy_prev;
	};
	uint32_t index;
};

#define PG_head              0x0001
#define PG_tail              0x0002
#define PG_buddy             0x0004
#define PG_lru               0x0008
#define PG_anon              0x0010
#define PG_pmd_mapped        0x0020
#define PG_partially_mapped  0x0040
#define PG_pgtable           0x0080
#define PG_reserved          0x0100
#define PG_huge_zero         0x0200
#define PG_pinned            0x0400
#define PG_deferred_queued   0x0800
#define PG_memcg             0x1000  /* folio is charged to the memcg */
#define PG_anon_exclusive    0x2000  /* PageAnonExclusive(), per page */
#define PG_large_rmap_shift  16      /* page[1], page[2]: 16-bit folio counts */
#define PG_ORDER_SHIFT 24
#define PG_INDEX_HI_SHIFT 16
#define PG_INDEX_HI_MASK (0xffu << PG_INDEX_HI_SHIFT)

static inline unsigned int page_order(const struct page *p)
{
	return p->flags >> PG_ORDER_SHIFT;
}

static inline void set_page_order(struct page *p, unsigned int order)
{
	p->flags = (p->flags & ~(0xffu << PG_ORDER_SHIFT)) | (order << PG_ORDER_SHIFT);
}

static inline uint64_t folio_index(const struct page *p)
{
	return ((uint64_t)((p->flags & PG_INDEX_HI_MASK) >> PG_INDEX_HI_SHIFT) << 32) | p->index;
}

static inline void folio_set_index(struct page *p, uint64_t index)
{
	p->index = (uint32_t)index;
	p->flags = (p->flags & ~PG_INDEX_HI_MASK) |
		   ((uint32_t)((index >> 32) & 0xff) << PG_INDEX_HI_SHIFT);
}

/* A PMD entry: none, a PTE table, or a huge leaf with its deposited table. */
typedef struct {
	uint64_t val;      /* leaf: pte-style bits + LAF_PTE_HUGE; table: 0 */
	pte_t *ptes;       /* PTE table (or deposited table of a leaf) */
	uint32_t table_pfn;/* emulated frame backing that table */
	uint32_t pad;
} pmd_t;

struct pmd_table {
	pmd_t e[1];        /* ptrs_per_pmd entries */
};

struct laf_vma {
	uint64_t vm_start;
	uint64_t vm_end;
	uint64_t vm_flags;
	uint64_t anon_vma;     /* 0: not prepared (anon_vma_prepare not run yet) */
	/* LAF_THP_AUTO heuristic state (policy.c) */
	uint64_t auto_next;
	int32_t auto_order;
	int32_t no_merge_prev; /* LAF_MAP_NOMERGE: never merged with the VMA just below it */
	/*
	 * The VMA tree (vma.c): address order as a list (the vm_prev/vm_next of
	 * kernels before the maple tree) and an AVL tree keyed by vm_start,
	 * augmented with the largest gap below a VMA in each subtree (the
	 * rb_subtree_gap of the pre-6.1 mm/mmap.c) for unmapped_area_topdown().
	 * vm_start never changes while a VMA is in the tree.
	 */
	struct laf_vma *vm_prev, *vm_next;
	struct laf_vma *vm_rb_left, *vm_rb_right;
	uint64_t rb_subtree_gap;
	int32_t vm_rb_height;
	int32_t pad;
};

struct deferred_split {
	uint32_t *pfns;
	size_t nr, cap;
};

struct laf_inject_state {
	uint64_t alloc_fail[LAF_NR_ORDERS];
	uint64_t charge_fail[LAF_NR_ORDERS];
	uint64_t pte_map_fail;
	uint64_t race_count;
	uint64_t race_addr;
	bool in_race;
};

/*
 * struct laf_geometry_consts - the arch constants (PAGE_SHIFT, PMD_SHIFT,
 * TASK_SIZE, ...) the kernel has at compile time.  The machine owns them
 * (set from its config); each mm carries a copy for its fast paths.
 */
#define LAF_GEOMETRY_FIELDS                                                  \
	unsigned int page_shift;                                             \
	uint64_t page_size;                                                  \
	unsigned int ptrs_per_pte;      /* also ptrs_per_pmd */              \
	unsigned int pmd_shift;                                              \
	unsigned int pmd_order;                                              \
	uint64_t pmd_size;                                                   \
	unsigned int pud_shift;                                              \
	uint64_t task_size;                                                  \
	unsigned int max_page_order;                                         \
	int arch_pte_order;                                                  \
	unsigned int cont_pte_order;

/*
 * MM ids (include/linux/mm_types.h, CONFIG_MM_ID): 15 bits here (the kernel
 * keeps 31 but notes PID_MAX_LIMIT allows 15); 0 is MM_ID_DUMMY.
 */
#define MM_ID_DUMMY 0
#define MM_ID_MAX 0x7fffu
#define FOLIO_MM_IDS_SHARED_BIT 0x80000000u

/*
 * struct laf_machine - the emulated machine: RAM (memmap + buddy), the
 * memcg, the THP knobs and policy, the zero page and huge zero folio, the
 * deferred-split queue, the machine-wide gauges, fault injection, the lock,
 * and the address spaces living on it.
 */
struct laf_machine {
	struct laf_config cfg;
	struct laf_policy pol;
	/* huge_anon_orders_{always,madvise,inherit}: the per-size knobs as the
	 * kernel keeps them, bitmasks of orders (set by policy_apply()) */
	unsigned long huge_anon_orders_always;
	unsigned long huge_anon_orders_madvise;
	unsigned long huge_anon_orders_inherit;

	LAF_GEOMETRY_FIELDS
	uint64_t mmap_base;             /* the default for new mms */

	/* physical memory: memmap + buddy free lists */
	struct page *memmap;
	size_t memmap_bytes;
	uint64_t nr_frames;
	uint32_t free_head[LAF_NR_ORDERS];
	uint64_t free_count[LAF_NR_ORDERS];  /* deferred blocks included */
	uint64_t nr_free;                    /* deferred frames included */
	/*
	 * Deferred struct-page init (page_alloc.c deferred_grow_zone()): the
	 * MAX_PAGE_ORDER blocks in [deferred_start, deferred_end) are free but
	 * not initialised; they are the tail of the MAX_PAGE_ORDER free list,
	 * highest block first, and get queued a section at a time.
	 */
	uint64_t deferred_start;
	uint64_t deferred_end;
	uint64_t section_pages;              /* PAGES_PER_SECTION */
	uint32_t zero_pfn;
	uint32_t huge_zero_pfn;
	uint32_t *pinned;
	size_t nr_pinned, cap_pinned;

	/* memcg */
	uint64_t memcg_limit;   /* pages; LAF_MEMCG_UNLIMITED: no memory.max */
	uint64_t memcg_charged;

	struct deferred_split deferred;
	struct laf_inject_state inject;
	/*
	 * gauges of the whole machine (nr_anon, nr_anon_partially_mapped,
	 * lru_pages, deferred_split_queue) live in @gauges; @dead sums the
	 * event counters of every mm that has exited.
	 */
	struct laf_stats gauges;
	struct laf_stats dead;

	/* the live address spaces */
	struct laf_mm **mms;
	size_t nr_mms, cap_mms;
	uint32_t next_mm_id;
	bool private_machine;    /* laf_mm_create() or laf_machine_put(): goes with its last mm */

	volatile int busy;
};

/*
 * struct laf_mm - one address space (mm_struct): VMAs, page tables, RSS,
 * fault counts, prctl state, per-mm event counters; @machine owns the rest.
 */
struct laf_mm {
	struct laf_machine *machine;
	uint32_t mm_id;

	LAF_GEOMETRY_FIELDS
	uint64_t mmap_base;

	/* page tables: pgd[va >> pud_shift] -> PMD table */
	struct pmd_table **pgd;
	size_t pgd_entries;

	/* VMAs: non-overlapping, in the VMA tree of vma.c (the maple tree's contract) */
	struct laf_vma *mm_rb;               /* root of the tree */
	struct laf_vma *vma_first, *vma_last;
	size_t map_count;                    /* mm->map_count */
	struct laf_vma *vmacache;            /* the last VMA find_vma() returned */
	uint64_t next_anon_vma;

	/* prctl(PR_SET_THP_DISABLE): MMF_DISABLE_THP_MASK, inherited on fork */
	bool mmf_disable_thp_completely;
	bool mmf_disable_thp_except_advised;

	/* event counters this mm caused + its gauges (mm_anonpages, nr_ptes,
	 * nr_pmds, pages_touched, zero_pages_touched) */
	struct laf_stats st;
};

struct vm_fault {
	struct laf_mm *mm;
	struct laf_vma *vma;
	uint64_t address;
	unsigned int flags;
	pmd_t *pmd;
	pte_t *pte;
	pte_t orig_pte;
	int kind;
};

#define FAULT_FLAG_WRITE 0x01

/* ---- pte helpers (dup of the generic pgtable helpers) ---- */
static inline bool pte_none(pte_t pte) { return pte == 0; }
static inline bool pte_present(pte_t pte) { return pte & LAF_PTE_PRESENT; }
static inline bool pte_write(pte_t pte) { return pte & LAF_PTE_WRITE; }
static inline bool pte_special(pte_t pte) { return pte & LAF_PTE_SPECIAL; }
static inline uint64_t pte_pfn(pte_t pte) { return pte >> LAF_PTE_PFN_SHIFT; }
static inline pte_t pfn_pte(uint64_t pfn, pte_t prot) { return (pfn << LAF_PTE_PFN_SHIFT) | prot; }

static inline bool pmd_none(const pmd_t *pmd) { return !pmd->val && !pmd->ptes; }
static inline bool pmd_trans_huge(const pmd_t *pmd) { return pmd->val & LAF_PTE_HUGE; }

static inline unsigned int pte_index(const struct laf_mm *mm, uint64_t addr)
{
	return (addr >> mm->page_shift) & (mm->ptrs_per_pte - 1);
}

static inline uint64_t align_down(uint64_t x, uint64_t a) { return x & ~(a - 1); }
static inline uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) & ~(a - 1); }

/* highest_order(), next_order() - dup of include/linux/huge_mm.h */
static inline int highest_order(unsigned long orders)
{
	return 63 - __builtin_clzl(orders);
}

static inline int next_order(unsigned long *orders, int prev)
{
	*orders &= ~(1UL << prev);
	return *orders ? highest_order(*orders) : 0;
}

/* free_area_empty(): no free block of @order, deferred blocks included */
static inline bool free_area_empty(const struct laf_machine *m, unsigned int order)
{
	return m->free_head[order] == NO_PFN &&
	       (order != m->max_page_order || m->deferred_start == m->deferred_end);
}

static inline struct page *machine_page(struct laf_machine *m, uint64_t pfn)
{
	return &m->memmap[pfn];
}

static inline struct page *pfn_to_page(struct laf_mm *mm, uint64_t pfn)
{
	return &mm->machine->memmap[pfn];
}

/* compound_head() */
static inline uint64_t compound_head_pfn(struct laf_mm *mm, uint64_t pfn)
{
	struct page *p = &mm->machine->memmap[pfn];
	return (p->flags & PG_tail) ? p->head : pfn;
}

/* ---- large-folio mapcounts (the struct folio fields in page[1..3]) ---- */
static inline int32_t folio_large_mapcount(const struct page *head)
{
	return (int32_t)head[1].index;
}

static inline void folio_set_large_mapcount_raw(struct page *head, int32_t v)
{
	head[1].index = (uint32_t)v;
}

static inline uint32_t folio_hi16(const struct page *p)
{
	return p->flags >> PG_large_rmap_shift;
}

static inline void folio_set_hi16(struct page *p, uint32_t v)
{
	p->flags = (p->flags & 0xffffu) | (v << PG_large_rmap_shift);
}

/* _nr_pages_mapped & FOLIO_PAGES_MAPPED: pages with a PTE mapping anywhere */
static inline uint32_t folio_nr_pages_mapped(const struct page *head) { return folio_hi16(&head[1]); }
static inline void folio_set_nr_pages_mapped(struct page *head, uint32_t v) { folio_set_hi16(&head[1], v); }
static inline uint32_t folio_entire_mapcount(const struct page *head) { return folio_hi16(&head[2]); }
static inline void folio_set_entire_mapcount(struct page *head, uint32_t v) { folio_set_hi16(&head[2], v); }

static inline uint32_t folio_mm_id(const struct page *head, int idx)
{
	return (head[3].index >> (16 * idx)) & MM_ID_MAX;
}

static inline void folio_set_mm_id(struct page *head, int idx, uint32_t id)
{
	head[3].index = (head[3].index & ~(MM_ID_MAX << (16 * idx))) | (id << (16 * idx));
}

static inline uint32_t folio_mm_id_mapcount(const struct page *head, int idx)
{
	return (head[2].index >> (16 * idx)) & 0xffffu;
}

static inline void folio_set_mm_id_mapcount(struct page *head, int idx, uint32_t v)
{
	head[2].index = (head[2].index & ~(0xffffu << (16 * idx))) | (v << (16 * idx));
}

static inline bool folio_maybe_shared_bit(const struct page *head)
{
	return head[3].index & FOLIO_MM_IDS_SHARED_BIT;
}

/* folio_mapcount(): the large mapcount, or the one page's _mapcount */
static inline int32_t folio_mapcount(const struct page *head)
{
	return page_order(head) ? folio_large_mapcount(head) : head->mapcount;
}

static inline bool userfaultfd_armed(const struct laf_vma *vma)
{
	return vma->vm_flags & (LAF_VM_UFFD_MISSING | LAF_VM_UFFD_WP | LAF_VM_UFFD_MINOR);
}

static inline bool userfaultfd_missing(const struct laf_vma *vma)
{
	return vma->vm_flags & LAF_VM_UFFD_MISSING;
}

/* ---- page_alloc.c ---- */
int memmap_check_size(const struct laf_machine *m);
int memmap_init(struct laf_machine *m);
void memmap_free(struct laf_machine *m);
void memmap_get_info(const struct laf_machine *m, struct laf_memmap_info *info);
int mem_cgroup_check_max(const struct laf_machine *m, uint64_t limit_bytes);
void mem_cgroup_init(struct laf_machine *m, uint64_t limit_bytes);
int mem_cgroup_set_max(struct laf_machine *m, uint64_t limit_bytes);
uint32_t __rmqueue(struct laf_machine *m, unsigned int order);
void __free_pages_ok(struct laf_machine *m, uint64_t pfn, unsigned int order);
uint32_t vma_alloc_folio(struct laf_mm *mm, unsigned int order);
void free_folio(struct laf_mm *mm, uint64_t pfn);
int mem_cgroup_charge(struct laf_mm *mm, uint64_t pfn, unsigned int order);
uint32_t pte_alloc_one(struct laf_mm *mm);
void pte_free(struct laf_mm *mm, uint32_t pfn);
void folio_put_refs(struct laf_mm *mm, uint64_t pfn, int refs);
static inline void folio_put(struct laf_mm *mm, uint64_t pfn) { folio_put_refs(mm, pfn, 1); }
int phys_fragment(struct laf_machine *m, int max_free_order);
int phys_unfragment(struct laf_machine *m);

/**
 * update_hiwater_rss() - include/linux/mm.h: raise the RSS high-water mark.
 * @mm: the address space, after MM_ANONPAGES grew.
 *
 * Simplified: the kernel updates hiwater_rss lazily (before a zap, at exit),
 * so VmHWM can miss a peak between two updates; the emulator calls this after
 * every MM_ANONPAGES increase and keeps the exact maximum.
 */
static inline void update_hiwater_rss(struct laf_mm *mm)
{
	if (mm->st.mm_anonpages > mm->st.hiwater_rss)
		mm->st.hiwater_rss = mm->st.mm_anonpages;
}

/* ---- pgtable.c ---- */
pmd_t *pmd_offset_alloc(struct laf_mm *mm, uint64_t addr);
pmd_t *pmd_offset(struct laf_mm *mm, uint64_t addr);
int __pte_alloc(struct laf_mm *mm, pmd_t *pmd);
void set_ptes(struct laf_mm *mm, uint64_t addr, pte_t *ptep, pte_t pte, unsigned int nr);
void free_pgd_range(struct laf_mm *mm, uint64_t addr, uint64_t end, uint64_t floor, uint64_t ceiling);
void free_all_pgtables(struct laf_mm *mm);

/* ---- memory.c ---- */
vm_fault_t handle_mm_fault(struct laf_mm *mm, struct laf_vma *vma, uint64_t address, unsigned int flags, int *kind);
void zap_page_range(struct laf_mm *mm, struct laf_vma *vma, uint64_t start, uint64_t end);
void folio_add_new_anon_rmap(struct laf_mm *mm, uint64_t pfn, struct laf_vma *vma, uint64_t address);
void folio_add_anon_rmap_ptes(struct laf_mm *mm, uint64_t head, uint64_t pfn, unsigned int nr,
			      bool exclusive);
void folio_remove_rmap_ptes(struct laf_mm *mm, uint64_t head, uint64_t pfn, unsigned int nr);
void folio_remove_rmap_pmd(struct laf_mm *mm, uint64_t head);
void folio_try_dup_anon_rmap_ptes(struct laf_mm *dst, uint64_t head, uint64_t pfn, unsigned int nr);
void folio_try_dup_anon_rmap_pmd(struct laf_mm *dst, uint64_t head);
void folio_add_large_mapcount(struct laf_mm *mm, struct page *head, int diff);
void zap_pte_range(struct laf_mm *mm, pmd_t *pmd, uint64_t addr, uint64_t end);
void contpte_unfold_block(struct laf_mm *mm, pte_t *ptes, unsigned int idx);
void deferred_split_folio(struct laf_mm *mm, uint64_t pfn, bool partially_mapped);
int folio_size_order(struct laf_mm *mm, uint64_t pfn);

/* ---- huge_memory.c ---- */
vm_fault_t do_huge_pmd_anonymous_page(struct vm_fault *vmf);
vm_fault_t do_huge_pmd_wp_page(struct vm_fault *vmf);
void __split_huge_pmd(struct laf_mm *mm, struct laf_vma *vma, pmd_t *pmd, uint64_t address);
void split_huge_pmd_address(struct laf_mm *mm, struct laf_vma *vma, uint64_t address);
void zap_huge_pmd(struct laf_mm *mm, pmd_t *pmd);
uint64_t deferred_split_scan(struct laf_mm *mm);
int copy_huge_pmd(struct laf_mm *dst, struct laf_mm *src, pmd_t *dst_pmd, pmd_t *src_pmd,
		  uint64_t addr, struct laf_vma *dst_vma, struct laf_vma *src_vma);

/* ---- policy.c ---- */
int policy_validate(const struct laf_machine *m, const struct laf_policy *pol);
void policy_apply(struct laf_machine *m, const struct laf_policy *pol);
bool policy_pmd_allowed(struct laf_mm *mm, struct laf_vma *vma);
unsigned long policy_anon_orders(struct laf_mm *mm, struct laf_vma *vma, uint64_t address);
bool policy_charge_in_alloc_loop(const struct laf_mm *mm);
void policy_auto_update(struct laf_mm *mm, struct laf_vma *vma, uint64_t addr, unsigned int order);

/* ---- vma.c ---- */
struct laf_vma *find_vma(struct laf_mm *mm, uint64_t addr);
void exit_mmap_vmas(struct laf_mm *mm);
int validate_mm(struct laf_mm *mm, char *msg, size_t msglen);

/* vma_next()/vma_prev() - neighbours in address order (NULL at the ends) */
static inline struct laf_vma *vma_next(const struct laf_vma *vma) { return vma->vm_next; }
static inline struct laf_vma *vma_prev(const struct laf_vma *vma) { return vma->vm_prev; }

/* for_each_vma() - every VMA in address order; @vma must not be freed in the body */
#define for_each_vma(mm, vma) for ((vma) = (mm)->vma_first; (vma); (vma) = vma_next(vma))
int vmf_anon_prepare(struct laf_mm *mm, struct laf_vma *vma);
int vma_modify_flags_uffd(struct laf_mm *mm, uint64_t start, uint64_t end, uint64_t set);
int insert_vm_struct(struct laf_mm *mm, const struct laf_vma *vma);
struct laf_vma *vma_modify_flags(struct laf_mm *mm, struct laf_vma *vma, uint64_t start,
				 uint64_t end, uint64_t newflags, int *err);

/* ---- userfaultfd.c ---- */
int userfaultfd_register(struct laf_mm *mm, uint64_t start, uint64_t len, int mode);
int userfaultfd_unregister(struct laf_mm *mm, uint64_t start, uint64_t len);
int mfill_atomic(struct laf_mm *mm, uint64_t start, uint64_t len, bool zeropage, bool wp);
int mwriteprotect_range(struct laf_mm *mm, uint64_t start, uint64_t len, bool wp);

/* ---- access_batch.c ---- */
int access_one(struct laf_mm *mm, uint64_t addr, bool write, struct laf_fault_result *res);
int access_batch(struct laf_mm *mm, const uint64_t *addrs, size_t n, const uint8_t *writes,
		 bool write, int8_t *results, struct laf_touch_summary *s);
int access_range(struct laf_mm *mm, uint64_t start, uint64_t len, uint64_t stride,
		 bool write, struct laf_touch_summary *s);

/* ---- task_mmu.c ---- */
int __laf_lookup(struct laf_mm *mm, uint64_t addr, uint64_t *pte, struct laf_folio_info *fi);
int read_ptes(struct laf_mm *mm, uint64_t start, size_t npages, uint64_t *ptes, int8_t *orders);

/* ---- fork.c ---- */
int dup_mmap(struct laf_mm *mm, struct laf_mm *oldmm);
void exit_mmap(struct laf_mm *mm);
struct laf_mm *mm_alloc(struct laf_machine *m);
void mm_free(struct laf_mm *mm);

/* ---- the one-thread guard of the entry points (api.c, ops.c) ---- */
/**
 * machine_enter - take the machine's busy flag (the emulator's mmap_lock,
 * zone lock and PTL in one)
 *
 * One thread at a time per machine: a non-blocking flag; an entry point on
 * an mm takes the flag of its machine (mm_enter()).  cffi releases the GIL during
 * every call, so a second Python thread really can get here concurrently.
 * Simplified: the kernel's mmap_lock is a sleeping rwsem (readers for
 * faults, a writer for VMA changes); here a second caller gets -EBUSY.
 * Return: 0, LAF_EINVAL for a NULL mm, LAF_EBUSY if another thread is inside.
 */
static inline int machine_enter(struct laf_machine *m)
{
	if (!m)
		return LAF_EINVAL;
	if (__atomic_exchange_n(&m->busy, 1, __ATOMIC_ACQUIRE))
		return LAF_EBUSY;
	return 0;
}

static inline void machine_exit(struct laf_machine *m)
{
	__atomic_store_n(&m->busy, 0, __ATOMIC_RELEASE);
}

static inline int mm_enter(struct laf_mm *mm)
{
	if (!mm)
		return LAF_EINVAL;
	return machine_enter(mm->machine);
}

/**
 * mm_exit - release the busy flag taken by mm_enter() (the machine's)
 */
static inline void mm_exit(struct laf_mm *mm)
{
	machine_exit(mm->machine);
}


/* ---- bodies of the public entry points (api.c wraps them in the busy guard) ---- */
int __laf_mmap(struct laf_mm *mm, uint64_t addr, uint64_t len, int prot, int flags, uint64_t *out);
int __laf_munmap(struct laf_mm *mm, uint64_t start, uint64_t len);
int __laf_madvise(struct laf_mm *mm, uint64_t start, uint64_t len, int advice);
int __laf_mprotect(struct laf_mm *mm, uint64_t start, uint64_t len, int prot);	/* mprotect.c */
int __laf_prctl(struct laf_mm *mm, int option, uint64_t arg2, uint64_t arg3, int64_t *out);
int __laf_check_invariants(struct laf_machine *m, char *msg, size_t msglen);
int laf_access(struct laf_mm *mm, uint64_t addr, bool write, struct laf_fault_result *res);

#endif /* PYLAF_LAF_INTERNAL_H */
