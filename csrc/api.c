// SPDX-License-Identifier: GPL-2.0
/*
 * api.c - the public entry points of laf.h: argument checks (C re-checks
 * everything Python checked), the one-thread-at-a-time guard, batches.
 */
#include <stdlib.h>
#include <sys/mman.h>

#include <sched.h>

#include "laf_internal.h"

/*
 * One thread at a time: a non-blocking flag.  cffi releases the GIL during
 * every call, so a second Python thread really can get here concurrently.
 */
static inline int mm_enter(struct laf_mm *mm)
{
	if (!mm)
		return LAF_EINVAL;
	if (__atomic_exchange_n(&mm->busy, 1, __ATOMIC_ACQUIRE))
		return LAF_EBUSY;
	return 0;
}

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

const char *laf_strerror(int err)
{
	switch (err) {
	case LAF_OK: return "success";
	case LAF_EPERM: return "operation not permitted (EPERM)";
	case LAF_ENOENT: return "no such mapping or registration (ENOENT)";
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

void laf_config_default(struct laf_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->page_shift = 12;
	cfg->arch = LAF_ARCH_GENERIC;
	cfg->ram_bytes = 1ULL << 30;
	cfg->memcg_limit_bytes = LAF_MEMCG_UNLIMITED;
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
	if (page_shift >= 12 && page_shift - 3 < LAF_NR_ORDERS)
		pol->per_size[page_shift - 3] = LAF_THP_INHERIT;
}

static int geometry_init(struct laf_mm *mm, const struct laf_config *cfg)
{
	unsigned int ps = cfg->page_shift, bits;

	if (ps != LAF_PAGE_SHIFT_4K && ps != LAF_PAGE_SHIFT_16K && ps != LAF_PAGE_SHIFT_64K)
		return LAF_EINVAL;
	if (cfg->arch != LAF_ARCH_GENERIC && cfg->arch != LAF_ARCH_ARM64)
		return LAF_EINVAL;
	if (cfg->flags || cfg->reserved)
		return LAF_EINVAL;
	mm->page_shift = ps;
	mm->page_size = 1ULL << ps;
	mm->ptrs_per_pte = (unsigned int)(mm->page_size / sizeof(pte_t));
	bits = ps - 3;
	mm->pmd_shift = ps + bits;
	mm->pmd_order = bits;
	mm->pmd_size = 1ULL << mm->pmd_shift;
	mm->pud_shift = mm->pmd_shift + bits;
	mm->task_size = TASK_SIZE_47;
	mm->pgd_entries = (size_t)((mm->task_size + (1ULL << mm->pud_shift) - 1) >> mm->pud_shift);
	mm->max_page_order = mm->pmd_order > 10 ? mm->pmd_order : 10;
	if (mm->max_page_order >= LAF_NR_ORDERS)
		return LAF_EINVAL;
	if (cfg->arch == LAF_ARCH_ARM64) {
		/* CONFIG_ARM64_CONT_PTE_SHIFT: 4 (4K), 7 (16K), 5 (64K) */
		mm->cont_pte_order = ps == 12 ? 4 : ps == 14 ? 7 : 5;
		mm->arch_pte_order = (int)mm->cont_pte_order;
	} else {
		mm->cont_pte_order = 0;
		mm->arch_pte_order = -1;
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

/* exit_mmap(): unmap every VMA, free the page tables, then the machine */
void laf_mm_destroy(laf_mm *mm)
{
	size_t i;

	if (!mm)
		return;
	/*
	 * close() from one thread while another is inside an entry point (the
	 * busy flag is held) must not free the mm under it: wait for that call
	 * to return, then keep the flag so nothing else enters.
	 */
	while (__atomic_exchange_n(&mm->busy, 1, __ATOMIC_ACQUIRE))
		sched_yield();
	for (i = 0; i < mm->nr_vmas; i++)
		zap_page_range(mm, &mm->vmas[i], mm->vmas[i].vm_start, mm->vmas[i].vm_end);
	free_all_pgtables(mm);
	memmap_free(mm);
	free(mm->pgd);
	free(mm->vmas);
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

static int __set_policy(struct laf_mm *mm, const struct laf_policy *pol)
{
	int err = policy_validate(mm, pol);

	if (err)
		return err;
	policy_apply(mm, pol);
	return 0;
}

int laf_set_policy(laf_mm *mm, const struct laf_policy *pol)
{
	if (!pol)
		return LAF_EINVAL;
	GUARDED(mm, __set_policy(mm, pol));
}

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

int laf_mmap(laf_mm *mm, uint64_t addr, uint64_t len, int prot, int flags, uint64_t *out)
{
	if (!out)
		return LAF_EINVAL;
	GUARDED(mm, __laf_mmap(mm, addr, len, prot, flags, out));
}

int laf_munmap(laf_mm *mm, uint64_t addr, uint64_t len)
{
	GUARDED(mm, __laf_munmap(mm, addr, len));
}

int laf_madvise(laf_mm *mm, uint64_t addr, uint64_t len, int advice)
{
	GUARDED(mm, __laf_madvise(mm, addr, len, advice));
}

int laf_prctl(laf_mm *mm, int option, uint64_t arg2, uint64_t arg3, int64_t *out)
{
	if (!out)
		return LAF_EINVAL;
	GUARDED(mm, __laf_prctl(mm, option, arg2, arg3, out));
}

int laf_uffd_register(laf_mm *mm, uint64_t addr, uint64_t len, int mode)
{
	GUARDED(mm, __laf_uffd_register(mm, addr, len, mode));
}

static int writeprotect(struct laf_mm *mm, uint64_t start, uint64_t len, bool wp);

/*
 * userfaultfd_unregister() -> userfaultfd_clear_vma(): a WP-registered part
 * first gets uffd_wp_range(..., false) (uffd-wp bits cleared, exclusive anon
 * pages writable again), then loses its VM_UFFD_* flags.
 */
static int uffd_unregister(struct laf_mm *mm, uint64_t start, uint64_t len)
{
	uint64_t end = start + len, addr = start;
	struct laf_vma *v;

	/* fs/userfaultfd.c validate_range(): also start >= mmap_min_addr */
	if ((start | len) & (mm->page_size - 1) || !len || end < start || end > mm->task_size ||
	    start < MMAP_MIN_ADDR)
		return LAF_EINVAL;
	while (addr < end && (v = find_vma(mm, addr)) && v->vm_start < end) {
		uint64_t s = v->vm_start > addr ? v->vm_start : addr;
		uint64_t e = v->vm_end < end ? v->vm_end : end;

		if (v->vm_flags & LAF_VM_UFFD_WP)
			writeprotect(mm, s, e - s, false);
		addr = e;
	}
	return __laf_uffd_unregister(mm, start, len);
}

int laf_uffd_unregister(laf_mm *mm, uint64_t addr, uint64_t len)
{
	GUARDED(mm, uffd_unregister(mm, addr, len));
}

/*
 * UFFDIO_COPY / UFFDIO_ZEROPAGE (mfill_atomic()): install order-0 pages or
 * zero-page PTEs into none PTEs of a MISSING-registered range.  Not faults:
 * no fault counter moves.  A present PTE or huge PMD is -EEXIST (pages
 * already filled stay filled).
 */
static int mfill(struct laf_mm *mm, uint64_t start, uint64_t len, bool zeropage, bool wp)
{
	uint64_t addr, end = start + len;

	struct laf_vma *vma;

	/* fs/userfaultfd.c validate_range(): also start >= mmap_min_addr */
	if ((start | len) & (mm->page_size - 1) || !len || end < start || end > mm->task_size ||
	    start < MMAP_MIN_ADDR)
		return LAF_EINVAL;
	/*
	 * uffd_mfill_lock(): the VMA holding @start gets its anon_vma first
	 * (find_vma_and_prepare_anon()), then the whole range must lie in that
	 * one VMA and the VMA must be registered (any mode): else -ENOENT.  A
	 * WP copy needs VM_UFFD_WP (-EINVAL).
	 */
	vma = find_vma(mm, start);
	if (!vma || start < vma->vm_start)
		return LAF_ENOENT;
	vmf_anon_prepare(mm, vma);
	if (end > vma->vm_end ||
	    !(vma->vm_flags & (LAF_VM_UFFD_MISSING | LAF_VM_UFFD_WP | LAF_VM_UFFD_MINOR)))
		return LAF_ENOENT;
	if (wp && !(vma->vm_flags & LAF_VM_UFFD_WP))
		return LAF_EINVAL;
	for (addr = start; addr < end; addr += mm->page_size) {
		pmd_t *pmd;
		pte_t *pte, entry;
		uint32_t pfn;

		pmd = pmd_offset_alloc(mm, addr);
		if (!pmd)
			return LAF_ENOMEM;
		if (pmd_trans_huge(pmd))
			return LAF_EEXIST;
		if (pmd_none(pmd) && __pte_alloc(mm, pmd))
			return LAF_ENOMEM;
		pte = &pmd->ptes[pte_index(mm, addr)];
		if (zeropage) {
			if (!pte_none(*pte))
				return LAF_EEXIST;
			entry = pfn_pte(mm->zero_pfn, LAF_PTE_PRESENT | LAF_PTE_SPECIAL | LAF_PTE_YOUNG);
			set_ptes(mm, addr, pte, entry, 1);
			mm->st.zero_page_maps++;
			continue;
		}
		pfn = vma_alloc_folio(mm, 0);
		if (pfn == NO_PFN)
			return LAF_ENOMEM;
		if (mem_cgroup_charge(mm, pfn, 0)) {
			folio_put(mm, pfn);
			return LAF_ENOMEM;
		}
		/*
		 * mfill_atomic_pte_copy(): the folio is allocated and charged
		 * first; mfill_atomic_install_pte() then finds the PTE taken.
		 */
		if (!pte_none(*pte)) {
			folio_put(mm, pfn);
			return LAF_EEXIST;
		}
		folio_add_new_anon_rmap(mm, pfn, vma, addr);
		pfn_to_page(mm, pfn)->flags |= PG_lru;
		mm->st.lru_pages++;
		mm->st.mm_anonpages++;
		update_hiwater_rss(mm);
		entry = pfn_pte(pfn, LAF_PTE_PRESENT | LAF_PTE_YOUNG | LAF_PTE_DIRTY);
		if (wp)
			entry |= LAF_PTE_UFFD_WP;
		else if (vma->vm_flags & LAF_VM_WRITE)
			entry |= LAF_PTE_WRITE;
		set_ptes(mm, addr, pte, entry, 1);
		mm->st.folios_mapped[0]++;
	}
	return 0;
}

int laf_uffd_copy(laf_mm *mm, uint64_t addr, uint64_t len, int wp)
{
	GUARDED(mm, mfill(mm, addr, len, false, wp != 0));
}

int laf_uffd_zeropage(laf_mm *mm, uint64_t addr, uint64_t len)
{
	GUARDED(mm, mfill(mm, addr, len, true, false));
}

/* UFFDIO_WRITEPROTECT: set or clear uffd-wp on present PTEs / huge PMDs */
static int writeprotect(struct laf_mm *mm, uint64_t start, uint64_t len, bool wp)
{
	uint64_t addr, end = start + len;

	/* fs/userfaultfd.c validate_range(): also start >= mmap_min_addr */
	if ((start | len) & (mm->page_size - 1) || !len || end < start || end > mm->task_size ||
	    start < MMAP_MIN_ADDR)
		return LAF_EINVAL;
	bool found = false;

	for (addr = start; addr < end; addr += mm->page_size) {
		struct laf_vma *vma = find_vma(mm, addr);
		pmd_t *pmd;
		pte_t *pte;

		/* mwriteprotect_range(): holes are skipped, a non-WP VMA is -ENOENT */
		if (!vma || vma->vm_start >= end)
			break;
		if (addr < vma->vm_start)
			addr = vma->vm_start;
		if (!(vma->vm_flags & LAF_VM_UFFD_WP))
			return LAF_ENOENT;
		found = true;
		pmd = pmd_offset(mm, addr);
		if (!pmd || pmd_none(pmd))
			continue;
		if (pmd_trans_huge(pmd)) {
			uint64_t haddr = align_down(addr, mm->pmd_size);

			/* change_pmd_range(): a huge PMD the range covers only in part is split */
			if (haddr < start || haddr + mm->pmd_size > end)
				__split_huge_pmd(mm, vma, pmd, addr);
		}
		if (pmd_trans_huge(pmd)) {
			if (wp)
				pmd->val = (pmd->val | LAF_PTE_UFFD_WP) & ~(uint64_t)LAF_PTE_WRITE;
			else if (!(pmd->val & LAF_PTE_SPECIAL)) {
				pmd->val &= ~(uint64_t)LAF_PTE_UFFD_WP;
				if (vma->vm_flags & LAF_VM_WRITE)
					pmd->val |= LAF_PTE_WRITE;
			} else {
				pmd->val &= ~(uint64_t)LAF_PTE_UFFD_WP;
			}
			continue;
		}
		pte = &pmd->ptes[pte_index(mm, addr)];
		if (!pte_present(*pte))
			continue;
		if (mm->cont_pte_order && (*pte & LAF_PTE_CONT)) {
			/*
			 * arm64: a contpte block needs one pgprot; a block the
			 * range covers only in part is unfolded first
			 * (contpte_try_unfold_partial()).  The range is the
			 * part inside this VMA: mwriteprotect_range() calls
			 * uffd_wp_range() per VMA, and may stop at the next
			 * VMA (-ENOENT) with a straddling block half done.
			 */
			uint64_t csz = mm->page_size << mm->cont_pte_order;
			uint64_t cs = align_down(addr, csz);
			uint64_t vs = start > vma->vm_start ? start : vma->vm_start;
			uint64_t ve = end < vma->vm_end ? end : vma->vm_end;

			if (cs < vs || cs + csz > ve) {
				pte_t *first = &pmd->ptes[pte_index(mm, cs)];
				unsigned int k;

				for (k = 0; k < (1u << mm->cont_pte_order); k++)
					first[k] &= ~(pte_t)LAF_PTE_CONT;
				mm->st.contpte_unfolds++;
			}
		}
		if (wp) {
			*pte = (*pte | LAF_PTE_UFFD_WP) & ~(pte_t)LAF_PTE_WRITE;
		} else {
			*pte &= ~(pte_t)LAF_PTE_UFFD_WP;
			if (!pte_special(*pte) && (vma->vm_flags & LAF_VM_WRITE))
				*pte |= LAF_PTE_WRITE;
		}
	}
	return found ? 0 : LAF_ENOENT;
}

int laf_uffd_writeprotect(laf_mm *mm, uint64_t addr, uint64_t len, int wp)
{
	GUARDED(mm, writeprotect(mm, addr, len, wp != 0));
}

static int __fault(struct laf_mm *mm, uint64_t addr, int write, struct laf_fault_result *res)
{
	laf_access(mm, addr, write != 0, res);
	if (res->access == LAF_ACCESS_HIT || res->access == LAF_ACCESS_FAULT) {
		uint64_t pte;
		struct laf_folio_info fi;

		if (__laf_lookup(mm, addr, &pte, &fi) == 0 && !(pte & LAF_PTE_SPECIAL))
			res->order = fi.order;
	}
	return 0;
}

int laf_fault(laf_mm *mm, uint64_t addr, int write, struct laf_fault_result *res)
{
	if (!res)
		return LAF_EINVAL;
	GUARDED(mm, __fault(mm, addr, write, res));
}

static inline void summarize(struct laf_touch_summary *s, int a, size_t i)
{
	switch (a) {
	case LAF_ACCESS_HIT: s->hits++; return;
	case LAF_ACCESS_FAULT: s->faulted++; return;
	case LAF_ACCESS_SIGSEGV: s->sigsegv++; break;
	case LAF_ACCESS_OOM: s->oom++; break;
	case LAF_ACCESS_SIGBUS: s->sigbus++; break;
	default: s->userfault++; break;
	}
	if (s->first_error < 0)
		s->first_error = (int64_t)i;
}

/*
 * The batch loops' paging-structure cache, as an MMU keeps one: the PTE
 * table of the last PMD range an access walked.  An access whose PTE is
 * present, allows it and is already marked TOUCHED (so nothing but the hit
 * counters changes) is served from it.  Every other access goes through
 * laf_access() and then refills the cache for a new PMD range.  Inside a
 * batch no PTE table is freed or moved (only munmap/madvise/destroy free
 * tables, and a table never becomes a huge PMD), so the cached table
 * pointer stays valid; the PTE itself is always read live.
 */
struct mmu_walk_cache {
	uint64_t tag;		/* addr >> pmd_shift, ~0 when empty */
	pte_t *ptes;
	uint64_t hits;		/* served here; added to the counters at the end */
	unsigned int pmd_shift, page_shift, index_mask;	/* geometry, kept in registers */
};

static inline void walk_cache_init(struct laf_mm *mm, struct mmu_walk_cache *c)
{
	c->tag = ~0ULL;
	c->ptes = NULL;
	c->hits = 0;
	c->pmd_shift = mm->pmd_shift;
	c->page_shift = mm->page_shift;
	c->index_mask = mm->ptrs_per_pte - 1;
}

/* PTE bits a cached hit needs */
static inline pte_t walk_cache_need(bool write)
{
	return LAF_PTE_PRESENT | LAF_PTE_TOUCHED | (write ? LAF_PTE_WRITE : 0);
}

static inline bool walk_cache_hit(struct mmu_walk_cache *c, uint64_t addr, pte_t need)
{
	pte_t pte;

	if ((addr >> c->pmd_shift) != c->tag)
		return false;
	pte = c->ptes[(addr >> c->page_shift) & c->index_mask];
	if ((pte & need) != need)
		return false;
	c->hits++;
	return true;
}

static inline void walk_cache_fill(struct laf_mm *mm, struct mmu_walk_cache *c, uint64_t addr)
{
	pmd_t *pmd;

	if ((addr >> c->pmd_shift) == c->tag)
		return;
	pmd = pmd_offset(mm, addr);
	if (pmd && !pmd->val && pmd->ptes) {
		c->tag = addr >> c->pmd_shift;
		c->ptes = pmd->ptes;
	} else {
		c->tag = ~0ULL;
	}
}

/* The hits the cache served: mm->st.hits and the summary's, once per batch. */
static inline void walk_cache_flush(struct laf_mm *mm, struct mmu_walk_cache *c,
				    struct laf_touch_summary *s)
{
	mm->st.hits += c->hits;
	s->hits += c->hits;
	c->hits = 0;
}

static int __touch(struct laf_mm *mm, const uint64_t *addrs, size_t n, const uint8_t *writes,
		   int write, int8_t *results, struct laf_touch_summary *s)
{
	struct mmu_walk_cache wc;
	size_t i;

	memset(s, 0, sizeof(*s));
	s->first_error = -1;
	s->accesses = n;
	walk_cache_init(mm, &wc);
	if (!writes && !results) {	/* the common batch: one access kind, summary only */
		pte_t need = walk_cache_need(write != 0);

		for (i = 0; i < n; i++) {
			uint64_t addr = addrs[i];

			if (walk_cache_hit(&wc, addr, need))
				continue;
			summarize(s, laf_access(mm, addr, write != 0, NULL), i);
			walk_cache_fill(mm, &wc, addr);
		}
		walk_cache_flush(mm, &wc, s);
		return 0;
	}
	for (i = 0; i < n; i++) {
		bool w = writes ? writes[i] != 0 : write != 0;
		uint64_t addr = addrs[i];
		int a;

		if (walk_cache_hit(&wc, addr, walk_cache_need(w))) {
			if (results)
				results[i] = LAF_ACCESS_HIT;
			continue;
		}
		a = laf_access(mm, addr, w, NULL);
		walk_cache_fill(mm, &wc, addr);
		if (results)
			results[i] = (int8_t)a;
		summarize(s, a, i);
	}
	walk_cache_flush(mm, &wc, s);
	return 0;
}

int laf_touch(laf_mm *mm, const uint64_t *addrs, size_t n, const uint8_t *writes,
	      int write, int8_t *results, struct laf_touch_summary *sum)
{
	if (!sum || (n && !addrs))
		return LAF_EINVAL;
	GUARDED(mm, __touch(mm, addrs, n, writes, write, results, sum));
}

static int __touch_range(struct laf_mm *mm, uint64_t start, uint64_t len, uint64_t stride,
			 int write, struct laf_touch_summary *s)
{
	struct mmu_walk_cache wc;
	uint64_t off;
	size_t i = 0;

	memset(s, 0, sizeof(*s));
	s->first_error = -1;
	walk_cache_init(mm, &wc);
	for (off = 0; off < len; off += stride, i++) {
		uint64_t addr = start + off;
		int a;

		if (walk_cache_hit(&wc, addr, walk_cache_need(write != 0)))
			continue;
		a = laf_access(mm, addr, write != 0, NULL);
		walk_cache_fill(mm, &wc, addr);
		summarize(s, a, i);
	}
	walk_cache_flush(mm, &wc, s);
	s->accesses = i;
	return 0;
}

int laf_touch_range(laf_mm *mm, uint64_t start, uint64_t len, uint64_t stride, int write,
		    struct laf_touch_summary *sum)
{
	if (!sum || !stride || start + len < start)
		return LAF_EINVAL;
	GUARDED(mm, __touch_range(mm, start, len, stride, write, sum));
}

static int __shrink(struct laf_mm *mm, uint64_t *nr)
{
	uint64_t n = deferred_split_scan(mm);

	if (nr)
		*nr = n;
	return 0;
}

int laf_shrink_deferred_split(laf_mm *mm, uint64_t *nr_split)
{
	GUARDED(mm, __shrink(mm, nr_split));
}

static int pin_frame(struct laf_mm *mm, uint32_t pfn)
{
	if (mm->nr_pinned == mm->cap_pinned) {
		size_t ncap = mm->cap_pinned ? mm->cap_pinned * 2 : 256;
		uint32_t *n = realloc(mm->pinned, ncap * sizeof(*n));

		if (!n)
			return LAF_ENOMEM;
		mm->pinned = n;
		mm->cap_pinned = ncap;
	}
	mm->pinned[mm->nr_pinned++] = pfn;
	mm->memmap[pfn].flags = PG_pinned;
	return 0;
}

/*
 * Fragment free memory so that no free block above @max_free_order remains:
 * every free block larger than that is cut into 2^(max_free_order+1)-frame
 * pieces and the last frame of each piece is pinned (one frame in
 * 2^(max+1)), as long-lived unmovable allocations would.
 */
static int __fragment(struct laf_mm *mm, int max_free_order)
{
	unsigned int o, piece;

	if (max_free_order < 0 || max_free_order >= (int)mm->max_page_order)
		return LAF_EINVAL;
	piece = (unsigned int)max_free_order + 1;
	for (o = mm->max_page_order; o > (unsigned int)max_free_order; o--) {
		while (!free_area_empty(mm, o)) {
			uint32_t pfn = __rmqueue(mm, o);
			uint64_t p, nr = 1ULL << o, step = 1ULL << piece;

			for (p = pfn; p < pfn + nr; p += step) {
				uint64_t last = p + step - 1, q;
				int err = pin_frame(mm, (uint32_t)last);

				if (err) {
					for (q = p; q < pfn + nr; q++)
						__free_pages_ok(mm, q, 0);
					return err;
				}
				for (q = p; q < last; q++) {
					mm->memmap[q].flags = 0;
					__free_pages_ok(mm, q, 0);
				}
			}
		}
	}
	return 0;
}

int laf_phys_fragment(laf_mm *mm, int max_free_order)
{
	GUARDED(mm, __fragment(mm, max_free_order));
}

static int __unfragment(struct laf_mm *mm)
{
	size_t i;

	for (i = 0; i < mm->nr_pinned; i++) {
		mm->memmap[mm->pinned[i]].flags = 0;
		__free_pages_ok(mm, mm->pinned[i], 0);
	}
	mm->nr_pinned = 0;
	return 0;
}

int laf_phys_unfragment(laf_mm *mm)
{
	GUARDED(mm, __unfragment(mm));
}

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

int laf_inject(laf_mm *mm, int kind, int order, uint64_t count, uint64_t addr)
{
	GUARDED(mm, __inject(mm, kind, order, count, addr));
}

static int __get_stats(struct laf_mm *mm, struct laf_stats *st)
{
	*st = mm->st;
	st->ram_pages = mm->nr_frames;
	st->free_pages = mm->nr_free;
	st->pinned_pages = mm->nr_pinned;
	st->memcg_charged = mm->memcg_charged;
	st->memcg_limit = mm->memcg_limit; /* LAF_MEMCG_UNLIMITED when "max" */
	st->nr_vmas = (int64_t)mm->nr_vmas;
	/* mm_pgtables_bytes(): every PTE table and PMD table is one page */
	st->pgtables_bytes = (uint64_t)(st->nr_ptes + st->nr_pmds) << mm->page_shift;
	return 0;
}

int laf_get_memmap_info(laf_mm *mm, struct laf_memmap_info *info)
{
	if (!info)
		return LAF_EINVAL;
	GUARDED(mm, (memmap_get_info(mm, info), 0));
}

int laf_get_stats(laf_mm *mm, struct laf_stats *st)
{
	if (!st)
		return LAF_EINVAL;
	GUARDED(mm, __get_stats(mm, st));
}

/* Zero the event counters; gauges (nr_anon, RSS, tables...) are kept. */
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
	s->hiwater_rss = keep.hiwater_rss;
	s->lru_pages = keep.lru_pages;
	s->pages_touched = keep.pages_touched;
	s->zero_pages_touched = keep.zero_pages_touched;
	s->deferred_split_queue = keep.deferred_split_queue;
	return 0;
}

int laf_reset_counters(laf_mm *mm)
{
	GUARDED(mm, __reset(mm));
}

static int __get_vmas(struct laf_mm *mm, struct laf_vma_info *out, size_t cap, size_t *nr)
{
	size_t i;

	*nr = mm->nr_vmas;
	for (i = 0; i < mm->nr_vmas && i < cap; i++) {
		out[i].start = mm->vmas[i].vm_start;
		out[i].end = mm->vmas[i].vm_end;
		out[i].vm_flags = mm->vmas[i].vm_flags;
		out[i].anon_vma = mm->vmas[i].anon_vma;
	}
	return 0;
}

int laf_get_vmas(laf_mm *mm, struct laf_vma_info *out, size_t cap, size_t *nr)
{
	if (!nr || (cap && !out))
		return LAF_EINVAL;
	GUARDED(mm, __get_vmas(mm, out, cap, nr));
}

/* The entry mapping @addr as a PTE value (a huge PMD is shown per page). */
static pte_t entry_at(struct laf_mm *mm, uint64_t addr)
{
	pmd_t *pmd = pmd_offset(mm, addr);
	unsigned int idx;

	if (!pmd || pmd_none(pmd))
		return 0;
	idx = pte_index(mm, addr);
	if (pmd_trans_huge(pmd)) {
		pte_t v = pmd->val, pfn = pte_pfn(v);

		return pfn_pte(pfn + idx, v & ((1ULL << LAF_PTE_PFN_SHIFT) - 1)) |
		       (pmd->ptes[idx] & LAF_PTE_TOUCHED);
	}
	return pmd->ptes ? pmd->ptes[idx] : 0;
}

static void fill_folio_info(struct laf_mm *mm, uint64_t head, struct laf_folio_info *fi)
{
	struct page *p = pfn_to_page(mm, head);

	fi->head_pfn = head;
	fi->index = folio_index(p);
	fi->order = (int32_t)page_order(p);
	fi->refcount = p->refcount;
	fi->mapcount = p->mapcount;
	fi->flags = ((p->flags & PG_anon) ? LAF_FOLIO_ANON : 0) |
		    ((p->flags & PG_lru) ? LAF_FOLIO_LRU : 0) |
		    ((p->flags & PG_pmd_mapped) ? LAF_FOLIO_PMD_MAPPED : 0) |
		    ((p->flags & PG_partially_mapped) ? LAF_FOLIO_PARTIALLY_MAPPED : 0) |
		    ((p->flags & PG_huge_zero) ? LAF_FOLIO_HUGE_ZERO : 0);
}

int __laf_lookup(struct laf_mm *mm, uint64_t addr, uint64_t *pte, struct laf_folio_info *fi)
{
	pte_t e;

	if (addr >= mm->task_size)
		return LAF_EINVAL;
	e = entry_at(mm, addr);
	if (pte)
		*pte = e;
	if (fi) {
		memset(fi, 0, sizeof(*fi));
		fi->order = -1;
		if (pte_present(e) && !(pte_special(e) && !(e & LAF_PTE_HUGE)))
			fill_folio_info(mm, compound_head_pfn(mm, pte_pfn(e)), fi);
	}
	return 0;
}

int laf_lookup(laf_mm *mm, uint64_t addr, uint64_t *pte, struct laf_folio_info *folio)
{
	GUARDED(mm, __laf_lookup(mm, addr, pte, folio));
}

/*
 * Raw entries for @npages pages from @start; @orders (optional) gets the
 * folio order per page: -1 none, -2 small zero page, -3 huge zero page.
 */
static int __read_ptes(struct laf_mm *mm, uint64_t start, size_t npages, uint64_t *ptes,
		       int8_t *orders)
{
	size_t i;

	if ((start & (mm->page_size - 1)) || start >= mm->task_size ||
	    npages > (mm->task_size - start) >> mm->page_shift)
		return LAF_EINVAL;
	for (i = 0; i < npages; i++) {
		uint64_t addr = start + (i << mm->page_shift);
		pte_t e = entry_at(mm, addr);

		if (ptes)
			ptes[i] = e;
		if (orders) {
			if (!pte_present(e))
				orders[i] = LAF_ORDER_NONE;
			else if (pte_special(e))
				orders[i] = (e & LAF_PTE_HUGE) ? LAF_ORDER_HUGE_ZERO : LAF_ORDER_ZERO;
			else
				orders[i] = (int8_t)folio_size_order(mm, pte_pfn(e));
		}
	}
	return 0;
}

int laf_read_ptes(laf_mm *mm, uint64_t start, size_t npages, uint64_t *ptes, int8_t *orders)
{
	GUARDED(mm, __read_ptes(mm, start, npages, ptes, orders));
}

int laf_check_invariants(laf_mm *mm, char *msg, size_t msglen)
{
	GUARDED(mm, __laf_check_invariants(mm, msg, msglen));
}
