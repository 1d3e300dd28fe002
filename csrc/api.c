// SPDX-License-Identifier: GPL-2.0
/*
 * api.c - the public entry points of laf.h: pointer and argument checks (the
 * C core re-checks everything Python checked), the one-thread-at-a-time
 * guard (mm_enter()), dispatch to the kernel-named bodies:
 *   vma.c (mmap, munmap, madvise, prctl), userfaultfd.c (uffd ioctls),
 *   access_batch.c (faults and batches), page_alloc.c (fragmentation),
 *   task_mmu.c (lookup, read_ptes), check.c (invariants).
 * The range checks of a syscall live in the function that mirrors the
 * kernel's (do_vmi_munmap(), is_valid_madvise(), validate_range(), ...), so
 * each has one home; the entry point checks what the kernel's syscall
 * wrapper would (NULL out-pointers here).
 */
#include <stdlib.h>
#include <sys/mman.h>

#include <sched.h>

#include "laf_internal.h"

/**
 * mm_enter - take the mm's busy flag (the emulator's mmap_lock)
 *
 * One thread at a time: a non-blocking flag.  cffi releases the GIL during
 * every call, so a second Python thread really can get here concurrently.
 * Simplified: the kernel's mmap_lock is a sleeping rwsem (readers for
 * faults, a writer for VMA changes); here a second caller gets -EBUSY.
 * Return: 0, LAF_EINVAL for a NULL mm, LAF_EBUSY if another thread is inside.
 */
static inline int mm_enter(struct laf_mm *mm)
{
	if (!mm)
		return LAF_EINVAL;
	if (__atomic_exchange_n(&mm->busy, 1, __ATOMIC_ACQUIRE))
		return LAF_EBUSY;
	return 0;
}

/**
 * mm_exit - release the busy flag taken by mm_enter()
 */
static inline void mm_exit(struct laf_mm *mm)
{
	__atomic_store_n(&mm->busy, 0, __ATOMIC_RELEASE);
}

#define GUARDED(mm, expr)                     \
	do {                                  \
		int __e = mm_enter(mm);       \
		if (__e)                      \
			return __e;           \
		__e = (expr);                 \
		mm_exit(mm);                  \
		return __e;                   \
	} while (0)

/**
 * laf_strerror - a one-line description of a LAF_E* code (never NULL)
 */
const char *laf_strerror(int err)
{
	switch (err) {
	case LAF_OK: return "success";
	case LAF_EPERM: return "operation not permitted (EPERM)";
	case LAF_ENOENT: return "no such mapping or registration (ENOENT)";
	case LAF_EAGAIN: return "resource temporarily unavailable, e.g. vm.max_map_count reached (EAGAIN)";
	case LAF_ENOMEM: return "out of memory or address range not mapped (ENOMEM)";
	case LAF_EFAULT: return "bad address (EFAULT)";
	case LAF_EBUSY: return "address space in use by another thread (EBUSY)";
	case LAF_EEXIST: return "range already mapped (EEXIST)";
	case LAF_EINVAL: return "invalid argument (EINVAL)";
	case LAF_ENOSPC: return "no space (ENOSPC)";
	case LAF_ERANGE: return "value out of range (ERANGE)";
	case LAF_ENOSYS: return "not implemented (ENOSYS)";
	case LAF_EUCLEAN: return "invariant violated (EUCLEAN)";
	default: return "unknown error";
	}
}

/**
 * laf_config_default - 4K pages, generic arch, 1 GiB of RAM, no memcg limit,
 * the default mmap_base (TASK_SIZE - 128M)
 */
void laf_config_default(struct laf_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->page_shift = LAF_PAGE_SHIFT_4K;
	cfg->arch = LAF_ARCH_GENERIC;
	cfg->ram_bytes = 1ULL << 30;
	cfg->memcg_limit_bytes = LAF_MEMCG_UNLIMITED;
	cfg->max_map_count = LAF_DEFAULT_MAX_MAP_COUNT;
}

/**
 * laf_policy_default - the stock 6.18 defaults as this machine boots them
 * @page_shift: base page shift; the PMD order is page_shift - 3
 *
 * upstream policy, enabled=madvise (CONFIG_TRANSPARENT_HUGEPAGE_MADVISE),
 * defrag=madvise, use_zero_page=1, PMD size "inherit", every other size
 * "never" (hugepage_init_sysfs()).
 */
void laf_policy_default(struct laf_policy *pol, uint32_t page_shift)
{
	memset(pol, 0, sizeof(*pol));
	pol->kind = LAF_POLICY_UPSTREAM;
	pol->enabled = LAF_THP_MADVISE;
	pol->defrag = LAF_DEFRAG_MADVISE;
	pol->use_zero_page = 1;
	if (page_shift >= LAF_PAGE_SHIFT_4K && page_shift - 3 < LAF_NR_ORDERS)
		pol->per_size[page_shift - 3] = LAF_THP_INHERIT;
}

/**
 * geometry_init - check @cfg and derive the page-table geometry into @mm
 *
 * PMD_SHIFT = PAGE_SHIFT + (PAGE_SHIFT - 3) (one table page of 8-byte
 * entries per level), TASK_SIZE = task_size_for() (page-aligned at every
 * page size), MAX_PAGE_ORDER = max(10, PMD order), the arm64 contpte order
 * (CONFIG_ARM64_CONT_PTE_SHIFT).  A given mmap_base must be page-aligned,
 * above mmap_min_addr and at most TASK_SIZE; RAM at least two PMDs, page
 * multiple, below 2^31 frames; the memcg limit a page multiple.
 * Return: 0, LAF_EINVAL or LAF_ERANGE.
 */
static int geometry_init(struct laf_mm *mm, const struct laf_config *cfg)
{
	unsigned int ps = cfg->page_shift, bits;

	if (ps != LAF_PAGE_SHIFT_4K && ps != LAF_PAGE_SHIFT_16K && ps != LAF_PAGE_SHIFT_64K)
		return LAF_EINVAL;
	if (cfg->arch != LAF_ARCH_GENERIC && cfg->arch != LAF_ARCH_ARM64)
		return LAF_EINVAL;
	if (cfg->flags || cfg->max_map_count > INT32_MAX)	/* sysctl: an int >= 0 */
		return LAF_EINVAL;
	mm->page_shift = ps;
	mm->page_size = 1ULL << ps;
	mm->ptrs_per_pte = (unsigned int)(mm->page_size / sizeof(pte_t));
	bits = ps - 3;
	mm->pmd_shift = ps + bits;
	mm->pmd_order = bits;
	mm->pmd_size = 1ULL << mm->pmd_shift;
	mm->pud_shift = mm->pmd_shift + bits;
	mm->task_size = task_size_for(ps);
	mm->pgd_entries = (size_t)((mm->task_size + (1ULL << mm->pud_shift) - 1) >> mm->pud_shift);
	mm->max_page_order = mm->pmd_order > 10 ? mm->pmd_order : 10;
	if (mm->max_page_order >= LAF_NR_ORDERS)
		return LAF_EINVAL;
	if (cfg->arch == LAF_ARCH_ARM64) {
		/* CONFIG_ARM64_CONT_PTE_SHIFT: 4 (4K), 7 (16K), 5 (64K) */
		mm->cont_pte_order = ps == LAF_PAGE_SHIFT_4K ? 4 : ps == LAF_PAGE_SHIFT_16K ? 7 : 5;
		mm->arch_pte_order = (int)mm->cont_pte_order;
	} else {
		mm->cont_pte_order = 0;
		mm->arch_pte_order = LAF_ORDER_NONE;
	}
	if (cfg->mmap_base) {
		if ((cfg->mmap_base & (mm->page_size - 1)) || cfg->mmap_base > mm->task_size ||
		    cfg->mmap_base <= MMAP_MIN_ADDR)
			return LAF_EINVAL;
		mm->mmap_base = cfg->mmap_base;
	} else {
		mm->mmap_base = align_down(mm->task_size - MIN_GAP, mm->page_size);
	}
	if (cfg->ram_bytes < (mm->pmd_size << 1) || (cfg->ram_bytes & (mm->page_size - 1)))
		return LAF_EINVAL;
	mm->nr_frames = cfg->ram_bytes >> ps;
	if (memmap_check_size(mm))
		return LAF_ERANGE;
	return mem_cgroup_check_max(mm, cfg->memcg_limit_bytes);
}

/**
 * laf_mm_create - a new emulated process and machine (mm_init() + boot)
 *
 * geometry_init(), an empty PGD, the memmap and buddy lists (buddy_init()),
 * the stock THP policy (laf_policy_default()), the memcg limit.
 * Return: 0 and *@out, or LAF_EINVAL / LAF_ERANGE / LAF_ENOMEM (*@out NULL).
 */
int laf_mm_create(const struct laf_config *cfg, laf_mm **out)
{
	struct laf_mm *mm;
	int err;

	if (!cfg || !out)
		return LAF_EINVAL;
	*out = NULL;
	mm = calloc(1, sizeof(*mm));
	if (!mm)
		return LAF_ENOMEM;
	err = geometry_init(mm, cfg);
	if (err) {
		free(mm);
		return err;
	}
	mm->cfg = *cfg;
	mm->pgd = calloc(mm->pgd_entries, sizeof(*mm->pgd));
	if (!mm->pgd || memmap_init(mm)) {
		free(mm->pgd);
		free(mm);
		return LAF_ENOMEM;
	}
	mm->huge_zero_pfn = NO_PFN;
	{
		struct laf_policy pol;

		laf_policy_default(&pol, mm->page_shift);
		policy_apply(mm, &pol);
	}
	mem_cgroup_init(mm, cfg->memcg_limit_bytes);
	*out = mm;
	return 0;
}

/**
 * laf_mm_destroy - exit_mmap(): unmap every VMA, free the page tables, then the machine
 */
void laf_mm_destroy(laf_mm *mm)
{
	struct laf_vma *vma;

	if (!mm)
		return;
	/*
	 * close() from one thread while another is inside an entry point (the
	 * busy flag is held) must not free the mm under it: wait for that call
	 * to return, then keep the flag so nothing else enters.
	 */
	while (__atomic_exchange_n(&mm->busy, 1, __ATOMIC_ACQUIRE))
		sched_yield();
	for_each_vma(mm, vma)
		zap_page_range(mm, vma, vma->vm_start, vma->vm_end);
	free_all_pgtables(mm);
	exit_mmap_vmas(mm);
	memmap_free(mm);
	free(mm->pgd);
	free(mm->pinned);
	free(mm->deferred.pfns);
	free(mm);
}

/**
 * laf_geometry_from_config() - the geometry @cfg would give an mm
 *
 * Runs the same checks as laf_mm_create() on a scratch mm, so a caller can
 * learn the page/PMD geometry and whether @cfg is valid without allocating
 * the emulated machine.  Returns 0 or the error laf_mm_create() would give.
 */
int laf_geometry_from_config(const struct laf_config *cfg, struct laf_geometry *g)
{
	struct laf_mm *mm;
	int err;

	if (!cfg || !g)
		return LAF_EINVAL;
	mm = calloc(1, sizeof(*mm));
	if (!mm)
		return LAF_ENOMEM;
	err = geometry_init(mm, cfg);
	if (!err)
		err = laf_get_geometry(mm, g);
	free(mm);
	return err;
}

/**
 * laf_get_geometry - the page/PMD geometry, TASK_SIZE and RAM size of @mm
 * Return: 0 or LAF_EINVAL.  Takes no lock: the geometry never changes.
 */
int laf_get_geometry(laf_mm *mm, struct laf_geometry *g)
{
	if (!mm || !g)
		return LAF_EINVAL;
	g->page_size = mm->page_size;
	g->page_shift = mm->page_shift;
	g->ptrs_per_pte = mm->ptrs_per_pte;
	g->pmd_size = mm->pmd_size;
	g->pmd_order = mm->pmd_order;
	g->max_page_order = mm->max_page_order;
	g->task_size = mm->task_size;
	g->mmap_base = mm->mmap_base;
	g->arch_pte_order = mm->arch_pte_order;
	g->cont_pte_order = mm->cont_pte_order;
	g->ram_pages = mm->nr_frames;
	return 0;
}

/**
 * __set_policy - write the THP knobs (the sysfs stores of mm/huge_memory.c)
 * Return: 0, or the error of policy_validate() (nothing changed).
 */
static int __set_policy(struct laf_mm *mm, const struct laf_policy *pol)
{
	int err = policy_validate(mm, pol);

	if (err)
		return err;
	policy_apply(mm, pol);
	return 0;
}

/**
 * laf_set_policy - validate and apply @pol (guarded)
 */
int laf_set_policy(laf_mm *mm, const struct laf_policy *pol)
{
	if (!pol)
		return LAF_EINVAL;
	GUARDED(mm, __set_policy(mm, pol));
}

/**
 * laf_get_policy - copy the current policy into @pol (guarded)
 */
int laf_get_policy(laf_mm *mm, struct laf_policy *pol)
{
	if (!pol)
		return LAF_EINVAL;
	GUARDED(mm, (*pol = mm->pol, 0));
}

int laf_set_memcg_limit(laf_mm *mm, uint64_t limit_bytes)
{
	GUARDED(mm, mem_cgroup_set_max(mm, limit_bytes));
}

/**
 * laf_mmap - mmap(MAP_PRIVATE | MAP_ANONYMOUS): __laf_mmap() (vma.c) checks
 * @len and @addr as mm/mmap.c do_mmap() and __get_unmapped_area() do
 */
int laf_mmap(laf_mm *mm, uint64_t addr, uint64_t len, int prot, int flags, uint64_t *out)
{
	if (!out)
		return LAF_EINVAL;
	GUARDED(mm, __laf_mmap(mm, addr, len, prot, flags, out));
}

/**
 * laf_munmap - munmap(): __laf_munmap() (vma.c) checks the range as
 * mm/vma.c do_vmi_munmap() does, before any page alignment
 */
int laf_munmap(laf_mm *mm, uint64_t addr, uint64_t len)
{
	GUARDED(mm, __laf_munmap(mm, addr, len));
}

/**
 * laf_madvise - madvise(): __laf_madvise() (vma.c) checks the range as
 * mm/madvise.c is_valid_madvise() does
 */
int laf_madvise(laf_mm *mm, uint64_t addr, uint64_t len, int advice)
{
	GUARDED(mm, __laf_madvise(mm, addr, len, advice));
}

/**
 * laf_prctl - PR_SET_THP_DISABLE / PR_GET_THP_DISABLE (__laf_prctl(), vma.c)
 */
int laf_prctl(laf_mm *mm, int option, uint64_t arg2, uint64_t arg3, int64_t *out)
{
	if (!out)
		return LAF_EINVAL;
	GUARDED(mm, __laf_prctl(mm, option, arg2, arg3, out));
}

/**
 * laf_uffd_register - UFFDIO_REGISTER (userfaultfd.c; validate_range() there)
 */
int laf_uffd_register(laf_mm *mm, uint64_t addr, uint64_t len, int mode)
{
	GUARDED(mm, userfaultfd_register(mm, addr, len, mode));
}

/**
 * laf_uffd_unregister - UFFDIO_UNREGISTER (userfaultfd.c)
 */
int laf_uffd_unregister(laf_mm *mm, uint64_t addr, uint64_t len)
{
	GUARDED(mm, userfaultfd_unregister(mm, addr, len));
}

/**
 * laf_uffd_copy - UFFDIO_COPY, with UFFDIO_COPY_MODE_WP if @wp (mfill_atomic())
 */
int laf_uffd_copy(laf_mm *mm, uint64_t addr, uint64_t len, int wp)
{
	GUARDED(mm, mfill_atomic(mm, addr, len, false, wp != 0));
}

/**
 * laf_uffd_zeropage - UFFDIO_ZEROPAGE (mfill_atomic())
 */
int laf_uffd_zeropage(laf_mm *mm, uint64_t addr, uint64_t len)
{
	GUARDED(mm, mfill_atomic(mm, addr, len, true, false));
}

/**
 * laf_uffd_writeprotect - UFFDIO_WRITEPROTECT (mwriteprotect_range())
 */
int laf_uffd_writeprotect(laf_mm *mm, uint64_t addr, uint64_t len, int wp)
{
	GUARDED(mm, mwriteprotect_range(mm, addr, len, wp != 0));
}

/**
 * laf_fault - one access with its full outcome (access_one()); any @addr is
 * valid input (at or above TASK_SIZE it is a SIGSEGV)
 */
int laf_fault(laf_mm *mm, uint64_t addr, int write, struct laf_fault_result *res)
{
	if (!res)
		return LAF_EINVAL;
	GUARDED(mm, access_one(mm, addr, write != 0, res));
}

/**
 * laf_touch - @n accesses at @addrs (access_batch()); @addrs may be NULL only
 * when @n is 0
 */
int laf_touch(laf_mm *mm, const uint64_t *addrs, size_t n, const uint8_t *writes,
	      int write, int8_t *results, struct laf_touch_summary *sum)
{
	if (!sum || (n && !addrs))
		return LAF_EINVAL;
	GUARDED(mm, access_batch(mm, addrs, n, writes, write != 0, results, sum));
}

/**
 * laf_touch_range - accesses at @start + k * @stride below @start + @len
 *
 * @stride 0 or a range that wraps past 2^64 is LAF_EINVAL; the offsets
 * themselves never wrap (access_range()).
 */
int laf_touch_range(laf_mm *mm, uint64_t start, uint64_t len, uint64_t stride, int write,
		    struct laf_touch_summary *sum)
{
	if (!sum || !stride || start + len < start)
		return LAF_EINVAL;
	GUARDED(mm, access_range(mm, start, len, stride, write != 0, sum));
}

/**
 * __shrink - run the deferred-split shrinker once (deferred_split_scan())
 * @nr: (optional) folios split
 */
static int __shrink(struct laf_mm *mm, uint64_t *nr)
{
	uint64_t n = deferred_split_scan(mm);

	if (nr)
		*nr = n;
	return 0;
}

/**
 * laf_shrink_deferred_split - __shrink() under the busy flag
 */
int laf_shrink_deferred_split(laf_mm *mm, uint64_t *nr_split)
{
	GUARDED(mm, __shrink(mm, nr_split));
}

/**
 * laf_phys_fragment - phys_fragment() (page_alloc.c) under the busy flag
 */
int laf_phys_fragment(laf_mm *mm, int max_free_order)
{
	GUARDED(mm, phys_fragment(mm, max_free_order));
}

/**
 * laf_phys_unfragment - phys_unfragment() (page_alloc.c) under the busy flag
 */
int laf_phys_unfragment(laf_mm *mm)
{
	GUARDED(mm, phys_unfragment(mm));
}

/**
 * __inject - arm a fault-injection hook (the emulator's fail_page_alloc)
 *
 * @order must be a valid folio order (0..PMD order) for the allocation and
 * charge hooks, @addr below TASK_SIZE for the race hook.
 * Return: 0 or LAF_EINVAL.
 */
static int __inject(struct laf_mm *mm, int kind, int order, uint64_t count, uint64_t addr)
{
	struct laf_inject_state *in = &mm->inject;

	switch (kind) {
	case LAF_INJECT_ALLOC_FAIL:
	case LAF_INJECT_CHARGE_FAIL:
		if (order < 0 || order > (int)mm->pmd_order)
			return LAF_EINVAL;
		if (kind == LAF_INJECT_ALLOC_FAIL)
			in->alloc_fail[order] = count;
		else
			in->charge_fail[order] = count;
		return 0;
	case LAF_INJECT_RACE:
		if (addr >= mm->task_size)
			return LAF_EINVAL;
		in->race_count = count;
		in->race_addr = addr;
		return 0;
	case LAF_INJECT_PTE_MAP_FAIL:
		in->pte_map_fail = count;
		return 0;
	case LAF_INJECT_CLEAR:
		memset(in, 0, sizeof(*in));
		return 0;
	default:
		return LAF_EINVAL;
	}
}

/**
 * laf_inject - __inject() under the busy flag
 */
int laf_inject(laf_mm *mm, int kind, int order, uint64_t count, uint64_t addr)
{
	GUARDED(mm, __inject(mm, kind, order, count, addr));
}

/**
 * __get_stats - the counters plus the gauges kept outside struct laf_stats
 */
static int __get_stats(struct laf_mm *mm, struct laf_stats *st)
{
	*st = mm->st;
	st->ram_pages = mm->nr_frames;
	st->free_pages = mm->nr_free;
	st->pinned_pages = mm->nr_pinned;
	st->memcg_charged = mm->memcg_charged;
	st->memcg_limit = mm->memcg_limit; /* LAF_MEMCG_UNLIMITED when "max" */
	st->nr_vmas = (int64_t)mm->map_count;
	return 0;
}

int laf_get_memmap_info(laf_mm *mm, struct laf_memmap_info *info)
{
	if (!info)
		return LAF_EINVAL;
	GUARDED(mm, (memmap_get_info(mm, info), 0));
}

/**
 * laf_get_stats - __get_stats() under the busy flag (a consistent snapshot)
 */
int laf_get_stats(laf_mm *mm, struct laf_stats *st)
{
	if (!st)
		return LAF_EINVAL;
	GUARDED(mm, __get_stats(mm, st));
}

/**
 * __reset - zero the event counters; gauges (nr_anon, RSS, tables...) are kept
 */
static int __reset(struct laf_mm *mm)
{
	struct laf_stats keep = mm->st;
	struct laf_stats *s = &mm->st;

	memset(s, 0, sizeof(*s));
	memcpy(s->nr_anon, keep.nr_anon, sizeof(s->nr_anon));
	memcpy(s->nr_anon_partially_mapped, keep.nr_anon_partially_mapped,
	       sizeof(s->nr_anon_partially_mapped));
	s->mm_anonpages = keep.mm_anonpages;
	s->nr_ptes = keep.nr_ptes;
	s->nr_pmds = keep.nr_pmds;
	s->lru_pages = keep.lru_pages;
	s->pages_touched = keep.pages_touched;
	s->zero_pages_touched = keep.zero_pages_touched;
	s->deferred_split_queue = keep.deferred_split_queue;
	return 0;
}

/**
 * laf_reset_counters - __reset() under the busy flag
 */
int laf_reset_counters(laf_mm *mm)
{
	GUARDED(mm, __reset(mm));
}

/**
 * __get_vmas - copy up to @cap VMAs into @out; *@nr gets the total count
 */
static int __get_vmas(struct laf_mm *mm, struct laf_vma_info *out, size_t cap, size_t *nr)
{
	struct laf_vma *vma;
	size_t i = 0;

	*nr = mm->map_count;
	for_each_vma(mm, vma) {
		if (i == cap)
			break;
		out[i].start = vma->vm_start;
		out[i].end = vma->vm_end;
		out[i].vm_flags = vma->vm_flags;
		out[i].anon_vma = vma->anon_vma;
		i++;
	}
	return 0;
}

/**
 * laf_get_vmas - __get_vmas() under the busy flag; @out may be NULL if @cap is 0
 */
int laf_get_vmas(laf_mm *mm, struct laf_vma_info *out, size_t cap, size_t *nr)
{
	if (!nr || (cap && !out))
		return LAF_EINVAL;
	GUARDED(mm, __get_vmas(mm, out, cap, nr));
}

/**
 * laf_lookup - __laf_lookup() (task_mmu.c) under the busy flag
 */
int laf_lookup(laf_mm *mm, uint64_t addr, uint64_t *pte, struct laf_folio_info *folio)
{
	GUARDED(mm, __laf_lookup(mm, addr, pte, folio));
}

/**
 * laf_read_ptes - read_ptes() (task_mmu.c) under the busy flag
 */
int laf_read_ptes(laf_mm *mm, uint64_t start, size_t npages, uint64_t *ptes, int8_t *orders)
{
	GUARDED(mm, read_ptes(mm, start, npages, ptes, orders));
}

/**
 * laf_check_invariants - __laf_check_invariants() (check.c) under the busy flag
 */
int laf_check_invariants(laf_mm *mm, char *msg, size_t msglen)
{
	GUARDED(mm, __laf_check_invariants(mm, msg, msglen));
}
