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

/* wait for the call inside to return, then hold the flag (teardown) */
static void machine_lock_wait(struct laf_machine *m)
{
	while (__atomic_exchange_n(&m->busy, 1, __ATOMIC_ACQUIRE))
		sched_yield();
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
 * geometry_init - check @cfg and derive the page-table geometry into @m
 *
 * PMD_SHIFT = PAGE_SHIFT + (PAGE_SHIFT - 3) (one table page of 8-byte
 * entries per level), TASK_SIZE = task_size_for() (page-aligned at every
 * page size), MAX_PAGE_ORDER = max(10, PMD order), the arm64 contpte order
 * (CONFIG_ARM64_CONT_PTE_SHIFT).  A given mmap_base must be page-aligned,
 * above mmap_min_addr and at most TASK_SIZE; RAM at least two PMDs, page
 * multiple, below 2^31 frames; the memcg limit a page multiple.
 * Return: 0, LAF_EINVAL or LAF_ERANGE.
 */
static int geometry_init(struct laf_machine *m, const struct laf_config *cfg)
{
	unsigned int ps = cfg->page_shift, bits;

	if (ps != LAF_PAGE_SHIFT_4K && ps != LAF_PAGE_SHIFT_16K && ps != LAF_PAGE_SHIFT_64K)
		return LAF_EINVAL;
	if (cfg->arch != LAF_ARCH_GENERIC && cfg->arch != LAF_ARCH_ARM64)
		return LAF_EINVAL;
	if (cfg->flags || cfg->max_map_count > INT32_MAX)	/* sysctl: an int >= 0 */
		return LAF_EINVAL;
	m->page_shift = ps;
	m->page_size = 1ULL << ps;
	m->ptrs_per_pte = (unsigned int)(m->page_size / sizeof(pte_t));
	bits = ps - 3;
	m->pmd_shift = ps + bits;
	m->pmd_order = bits;
	m->pmd_size = 1ULL << m->pmd_shift;
	m->pud_shift = m->pmd_shift + bits;
	m->task_size = task_size_for(ps);
	m->max_page_order = m->pmd_order > 10 ? m->pmd_order : 10;
	if (m->max_page_order >= LAF_NR_ORDERS)
		return LAF_EINVAL;
	if (cfg->arch == LAF_ARCH_ARM64) {
		/* CONFIG_ARM64_CONT_PTE_SHIFT: 4 (4K), 7 (16K), 5 (64K) */
		m->cont_pte_order = ps == LAF_PAGE_SHIFT_4K ? 4 : ps == LAF_PAGE_SHIFT_16K ? 7 : 5;
		m->arch_pte_order = (int)m->cont_pte_order;
	} else {
		m->cont_pte_order = 0;
		m->arch_pte_order = LAF_ORDER_NONE;
	}
	if (cfg->mmap_base) {
		if ((cfg->mmap_base & (m->page_size - 1)) || cfg->mmap_base > m->task_size ||
		    cfg->mmap_base <= MMAP_MIN_ADDR)
			return LAF_EINVAL;
		m->mmap_base = cfg->mmap_base;
	} else {
		m->mmap_base = align_down(m->task_size - MIN_GAP, m->page_size);
	}
	if (cfg->ram_bytes < (m->pmd_size << 1) || (cfg->ram_bytes & (m->page_size - 1)))
		return LAF_EINVAL;
	m->nr_frames = cfg->ram_bytes >> ps;
	if (memmap_check_size(m))
		return LAF_ERANGE;
	return mem_cgroup_check_max(m, cfg->memcg_limit_bytes);
}

/**
 * laf_machine_create - boot a new emulated machine with no address space
 *
 * geometry_init(), the memmap and buddy lists (buddy_init()), the stock
 * THP policy (laf_policy_default()), the memcg limit.
 * Return: 0 and *@out, or LAF_EINVAL / LAF_ERANGE / LAF_ENOMEM (*@out NULL).
 */
int laf_machine_create(const struct laf_config *cfg, laf_machine **out)
{
	struct laf_machine *m;
	struct laf_policy pol;
	int err;

	if (!cfg || !out)
		return LAF_EINVAL;
	*out = NULL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return LAF_ENOMEM;
	err = geometry_init(m, cfg);
	if (err) {
		free(m);
		return err;
	}
	m->cfg = *cfg;
	if (memmap_init(m)) {
		free(m);
		return LAF_ENOMEM;
	}
	m->huge_zero_pfn = NO_PFN;
	laf_policy_default(&pol, m->page_shift);
	policy_apply(m, &pol);
	mem_cgroup_init(m, cfg->memcg_limit_bytes);
	*out = m;
	return 0;
}

/* free the machine itself (no mm left on it) */
static void machine_free(struct laf_machine *m)
{
	memmap_free(m);
	free(m->mms);
	free(m->pinned);
	free(m->deferred.pfns);
	free(m);
}

/* exit_mmap() + mm_free() of one mm; the caller holds the machine's flag */
static void mm_teardown(struct laf_mm *mm)
{
	exit_mmap(mm);
	mm_free(mm);
}

/**
 * laf_machine_destroy - exit every mm still on the machine, then free it
 *
 * Waits for a call in another thread to return first (the busy flag).
 */
void laf_machine_destroy(laf_machine *m)
{
	if (!m)
		return;
	machine_lock_wait(m);
	while (m->nr_mms)
		mm_teardown(m->mms[m->nr_mms - 1]);
	machine_free(m);
}

/**
 * laf_machine_put - the owner's reference on @m goes
 *
 * A garbage collector frees a machine and its address spaces in no set
 * order, so the owner's release must not free mms that still have owners of
 * their own: with no mm left the machine is freed now; otherwise it becomes
 * "private" and laf_mm_destroy() of its last mm frees it.  Waits for a call
 * in another thread to return first (the busy flag).
 */
void laf_machine_put(laf_machine *m)
{
	if (!m)
		return;
	machine_lock_wait(m);
	if (!m->nr_mms) {
		machine_free(m);
		return;
	}
	m->private_machine = true;
	machine_exit(m);
}

/**
 * __mm_create_on - mm_alloc() under the machine's flag
 */
static int __mm_create_on(struct laf_machine *m, laf_mm **out)
{
	*out = mm_alloc(m);
	return *out ? 0 : LAF_ENOMEM;
}

/**
 * laf_mm_create_on - a new, empty address space on @machine (guarded)
 * Return: 0 and *@out, or LAF_EINVAL / LAF_EBUSY / LAF_ENOMEM.
 */
int laf_mm_create_on(laf_machine *m, laf_mm **out)
{
	int err;

	if (!out)
		return LAF_EINVAL;
	*out = NULL;
	err = machine_enter(m);
	if (err)
		return err;
	err = __mm_create_on(m, out);
	machine_exit(m);
	return err;
}

/**
 * laf_mm_create - a new emulated process on a private machine
 *
 * laf_machine_create() + laf_mm_create_on(); the machine is freed with its
 * last mm (laf_mm_destroy()).
 * Return: 0 and *@out, or LAF_EINVAL / LAF_ERANGE / LAF_ENOMEM (*@out NULL).
 */
int laf_mm_create(const struct laf_config *cfg, laf_mm **out)
{
	struct laf_machine *m;
	int err;

	if (!cfg || !out)
		return LAF_EINVAL;
	*out = NULL;
	err = laf_machine_create(cfg, &m);
	if (err)
		return err;
	m->private_machine = true;
	*out = mm_alloc(m);
	if (!*out) {
		machine_free(m);
		return LAF_ENOMEM;
	}
	return 0;
}

/**
 * laf_mm_destroy - exit_mmap(): unmap every VMA, free the page tables and
 * the mm; a private machine goes with its last mm
 */
void laf_mm_destroy(laf_mm *mm)
{
	struct laf_machine *m;

	if (!mm)
		return;
	m = mm->machine;
	/*
	 * close() from one thread while another is inside an entry point (the
	 * busy flag is held) must not free the mm under it: wait for that call
	 * to return, then keep the flag while tearing down.
	 */
	machine_lock_wait(m);
	mm_teardown(mm);
	if (m->private_machine && !m->nr_mms) {
		machine_free(m);
		return;
	}
	machine_exit(m);
}

laf_machine *laf_mm_machine(laf_mm *mm)
{
	return mm ? mm->machine : NULL;
}

/**
 * __fork - dup_mmap() into a new mm on the same machine; on failure the
 * partial child is torn down (exit_mmap()) and nothing else changed but
 * the parent's write protection of what was already copied
 */
static int __fork(struct laf_mm *mm, laf_mm **child)
{
	struct laf_mm *c = mm_alloc(mm->machine);
	int err;

	if (!c)
		return LAF_ENOMEM;
	err = dup_mmap(c, mm);
	if (err) {
		mm_teardown(c);
		return err;
	}
	*child = c;
	return 0;
}

/**
 * laf_mm_fork - fork(): a child address space on @mm's machine (guarded)
 * Return: 0 and *@child, LAF_ENOMEM or LAF_EBUSY.
 */
int laf_mm_fork(laf_mm *mm, laf_mm **child)
{
	if (!child)
		return LAF_EINVAL;
	*child = NULL;
	GUARDED(mm, __fork(mm, child));
}

/**
 * laf_geometry_from_config() - the geometry @cfg would give an mm
 *
 * Runs the same checks as laf_machine_create() on a scratch machine, so a
 * caller can learn the page/PMD geometry and whether @cfg is valid without
 * allocating the emulated machine.  Returns 0 or the error
 * laf_machine_create() would give.
 */
int laf_geometry_from_config(const struct laf_config *cfg, struct laf_geometry *g)
{
	struct laf_machine *m;
	int err;

	if (!cfg || !g)
		return LAF_EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return LAF_ENOMEM;
	err = geometry_init(m, cfg);
	if (!err) {
		g->page_size = m->page_size;
		g->page_shift = m->page_shift;
		g->ptrs_per_pte = m->ptrs_per_pte;
		g->pmd_size = m->pmd_size;
		g->pmd_order = m->pmd_order;
		g->max_page_order = m->max_page_order;
		g->task_size = m->task_size;
		g->mmap_base = m->mmap_base;
		g->arch_pte_order = m->arch_pte_order;
		g->cont_pte_order = m->cont_pte_order;
		g->ram_pages = m->nr_frames;
	}
	free(m);
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
	g->ram_pages = mm->machine->nr_frames;
	return 0;
}

/**
 * __set_policy - write the THP knobs (the sysfs stores of mm/huge_memory.c)
 * Return: 0, or the error of policy_validate() (nothing changed).
 */
static int __set_policy(struct laf_mm *mm, const struct laf_policy *pol)
{
	int err = policy_validate(mm->machine, pol);

	if (err)
		return err;
	policy_apply(mm->machine, pol);
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
 * laf_machine_set_policy - validate and apply @pol to @m (guarded)
 */
int laf_machine_set_policy(laf_machine *m, const struct laf_policy *pol)
{
	int err;

	if (!pol)
		return LAF_EINVAL;
	err = machine_enter(m);
	if (err)
		return err;
	err = policy_validate(m, pol);
	if (!err)
		policy_apply(m, pol);
	machine_exit(m);
	return err;
}

/**
 * laf_get_policy - copy the current policy into @pol (guarded)
 */
int laf_get_policy(laf_mm *mm, struct laf_policy *pol)
{
	if (!pol)
		return LAF_EINVAL;
	GUARDED(mm, (*pol = mm->machine->pol, 0));
}

int laf_set_memcg_limit(laf_mm *mm, uint64_t limit_bytes)
{
	GUARDED(mm, mem_cgroup_set_max(mm->machine, limit_bytes));
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
 * laf_mremap - mremap(): __laf_mremap() (mremap.c) checks every argument as
 * mm/mremap.c check_mremap_params() and check_prep_vma() do
 */
int laf_mremap(laf_mm *mm, uint64_t addr, uint64_t old_len, uint64_t new_len, int flags,
	       uint64_t new_addr, uint64_t *out_addr)
{
	uint64_t out = 0;
	int err;

	if (!out_addr)
		return LAF_EINVAL;
	err = mm_enter(mm);
	if (err)
		return err;
	err = __laf_mremap(mm, addr, old_len, new_len, flags, new_addr, &out);
	mm_exit(mm);
	if (!err)
		*out_addr = out;
	return err;
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
 * laf_mprotect - mprotect(): __laf_mprotect() (mprotect.c) checks every
 * argument as mm/mprotect.c do_mprotect_pkey() does
 */
int laf_mprotect(laf_mm *mm, uint64_t addr, uint64_t len, int prot)
{
	GUARDED(mm, __laf_mprotect(mm, addr, len, prot));
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
	GUARDED(mm, phys_fragment(mm->machine, max_free_order));
}

/**
 * laf_phys_unfragment - phys_unfragment() (page_alloc.c) under the busy flag
 */
int laf_phys_unfragment(laf_mm *mm)
{
	GUARDED(mm, phys_unfragment(mm->machine));
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
	struct laf_inject_state *in = &mm->machine->inject;

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
/* the machine-wide gauges, as every mm.stats() and machine.stats() shows them */
static void machine_gauges(struct laf_machine *m, struct laf_stats *st)
{
	memcpy(st->nr_anon, m->gauges.nr_anon, sizeof(st->nr_anon));
	memcpy(st->nr_anon_partially_mapped, m->gauges.nr_anon_partially_mapped,
	       sizeof(st->nr_anon_partially_mapped));
	st->lru_pages = m->gauges.lru_pages;
	st->deferred_split_queue = m->gauges.deferred_split_queue;
	st->ram_pages = m->nr_frames;
	st->free_pages = m->nr_free;
	st->pinned_pages = m->nr_pinned;
	st->memcg_charged = m->memcg_charged;
	st->memcg_limit = m->memcg_limit; /* LAF_MEMCG_UNLIMITED when "max" */
}

/**
 * __get_stats - the mm's event counters and gauges plus the machine's gauges
 */
static int __get_stats(struct laf_mm *mm, struct laf_stats *st)
{
	*st = mm->st;
	machine_gauges(mm->machine, st);
	st->nr_vmas = (int64_t)mm->map_count;
	/* mm_pgtables_bytes(): every PTE table and PMD table is one page */
	st->pgtables_bytes = (uint64_t)(st->nr_ptes + st->nr_pmds) << mm->page_shift;
	return 0;
}

/**
 * __machine_get_stats - every counter summed over the live mms and the
 * exited ones (mm gauges: over the live ones), then the machine's gauges
 */
static int __machine_get_stats(struct laf_machine *m, struct laf_stats *st)
{
	uint64_t *dst = (uint64_t *)st;
	size_t i, k, n = sizeof(*st) / sizeof(uint64_t);
	int64_t vmas = 0;

	*st = m->dead;
	for (k = 0; k < m->nr_mms; k++) {
		const uint64_t *src = (const uint64_t *)&m->mms[k]->st;

		for (i = 0; i < n; i++)
			dst[i] += src[i];
		vmas += (int64_t)m->mms[k]->map_count;
	}
	machine_gauges(m, st);
	st->nr_vmas = vmas;
	/*
	 * mm_pgtables_bytes() over the live mms: the per-mm value is derived in
	 * __get_stats() (mm->st holds 0), so summing mm->st left it 0 here.
	 */
	st->pgtables_bytes = (uint64_t)(st->nr_ptes + st->nr_pmds) << m->page_shift;
	return 0;
}

/**
 * laf_machine_get_stats - __machine_get_stats() under the busy flag
 */
int laf_machine_get_stats(laf_machine *m, struct laf_stats *st)
{
	int err;

	if (!st)
		return LAF_EINVAL;
	err = machine_enter(m);
	if (err)
		return err;
	err = __machine_get_stats(m, st);
	machine_exit(m);
	return err;
}

/**
 * laf_machine_nr_mms - how many address spaces live on @m (guarded)
 */
int laf_machine_nr_mms(laf_machine *m, size_t *nr)
{
	int err;

	if (!nr)
		return LAF_EINVAL;
	err = machine_enter(m);
	if (err)
		return err;
	*nr = m->nr_mms;
	machine_exit(m);
	return 0;
}

/**
 * laf_machine_check_invariants - __laf_check_invariants() (check.c) over
 * every mm of @m, under the busy flag
 */
int laf_machine_check_invariants(laf_machine *m, char *msg, size_t msglen)
{
	int err = machine_enter(m);

	if (err)
		return err;
	err = __laf_check_invariants(m, msg, msglen);
	machine_exit(m);
	return err;
}

int laf_get_memmap_info(laf_mm *mm, struct laf_memmap_info *info)
{
	if (!info)
		return LAF_EINVAL;
	GUARDED(mm, (memmap_get_info(mm->machine, info), 0));
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
	s->mm_anonpages = keep.mm_anonpages;
	s->nr_ptes = keep.nr_ptes;
	s->nr_pmds = keep.nr_pmds;
	s->hiwater_rss = keep.hiwater_rss;
	s->lru_pages = keep.lru_pages;
	s->pages_touched = keep.pages_touched;
	s->zero_pages_touched = keep.zero_pages_touched;
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
		out[i].vm_flags = vma->vm_flags & ~(uint64_t)LAF_VM_ACCOUNT;	/* internal */
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
	GUARDED(mm, __laf_check_invariants(mm->machine, msg, msglen));
}
