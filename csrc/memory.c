// SPDX-License-Identifier: GPL-2.0
/*
 * memory.c - the anonymous fault path, after mm/memory.c (Linux 6.18).
 *
 *   handle_mm_fault()
 *    └─ __handle_mm_fault()
 *        ├─ pmd_none && PMD order allowed → do_huge_pmd_anonymous_page()
 *        ├─ huge PMD, write, !pmd_write   → wp_huge_pmd() → do_huge_pmd_wp_page()
 *        └─ handle_pte_fault()
 *             ├─ pte none     → do_anonymous_page() → alloc_anon_folio()
 *             └─ write, !pte_write → do_wp_page()
 *
 * plus the teardown side: zap_page_range() → zap_pte_range() with
 * per-folio batching, folio_remove_rmap_ptes() and deferred split.
 *
 * plus the rmap side (folio_add_new_anon_rmap(), folio_remove_rmap_ptes(),
 * the fork duplication helpers) with the 6.18 large-folio mapcounts, and
 * copy-on-write (do_wp_page(): reuse or wp_page_copy()).
 *
 * Not emulated: swap (no swap entries ever exist), file/shared mappings,
 * NUMA, mlock, KSM, GUP pins.
 */
#include <stdlib.h>

#include "laf_internal.h"

/* ---------------------------------------------------------------- rmap */

/**
 * folio_add_large_mapcount - folio_add_return_large_mapcount() (CONFIG_MM_ID)
 * @mm: the mm adding the mappings
 * @head: head page of a large folio
 * @diff: mappings added (> 0)
 *
 * Dup of include/linux/rmap.h: _large_mapcount += diff; the mm's MM-id slot
 * grows, or it takes a free slot (slot 0: "maybe mapped shared" if other
 * mappings existed; slot 1: always shared); a third mm changes only
 * _large_mapcount (both slots are taken, so the bit is already set).
 */
void folio_add_large_mapcount(struct laf_mm *mm, struct page *head, int diff)
{
	int32_t newc = folio_large_mapcount(head) + diff;
	uint32_t id = mm->mm_id;

	folio_set_large_mapcount_raw(head, newc);
	if (folio_mm_id(head, 0) == id) {
		folio_set_mm_id_mapcount(head, 0, folio_mm_id_mapcount(head, 0) + (uint32_t)diff);
	} else if (folio_mm_id(head, 1) == id) {
		folio_set_mm_id_mapcount(head, 1, folio_mm_id_mapcount(head, 1) + (uint32_t)diff);
	} else if (folio_mm_id(head, 0) == MM_ID_DUMMY) {
		folio_set_mm_id(head, 0, id);
		folio_set_mm_id_mapcount(head, 0, (uint32_t)diff);
		if (newc != diff)	/* other mappings already */
			head[3].index |= FOLIO_MM_IDS_SHARED_BIT;
	} else if (folio_mm_id(head, 1) == MM_ID_DUMMY) {
		folio_set_mm_id(head, 1, id);
		folio_set_mm_id_mapcount(head, 1, (uint32_t)diff);
		head[3].index |= FOLIO_MM_IDS_SHARED_BIT;
	}
}

/*
 * folio_sub_large_mapcount - folio_sub_return_large_mapcount(): the slot of
 * @mm shrinks; an emptied slot is freed, and then (or when @mm owned no
 * slot) the shared bit clears if one slot holds every remaining mapping.
 */
static void folio_sub_large_mapcount(struct laf_mm *mm, struct page *head, int diff)
{
	int32_t newc = folio_large_mapcount(head) - diff;
	uint32_t id = mm->mm_id;
	int k;

	folio_set_large_mapcount_raw(head, newc);
	for (k = 0; k < 2; k++) {
		int32_t c;

		if (folio_mm_id(head, k) != id)
			continue;
		c = (int32_t)folio_mm_id_mapcount(head, k) - diff;
		if (c > 0) {
			folio_set_mm_id_mapcount(head, k, (uint32_t)c);
			return;
		}
		folio_set_mm_id_mapcount(head, k, 0);
		folio_set_mm_id(head, k, MM_ID_DUMMY);
		break;
	}
	if ((int32_t)folio_mm_id_mapcount(head, 0) == newc ||
	    (int32_t)folio_mm_id_mapcount(head, 1) == newc)
		head[3].index &= ~FOLIO_MM_IDS_SHARED_BIT;
}

/**
 * folio_add_new_anon_rmap - add the first mapping of a new anon folio
 * @mm: address space
 * @pfn: head pfn
 * @vma: the VMA it is mapped into (its anon_vma is the folio's mapping)
 * @address: virtual address of the head page
 *
 * Dup of mm/rmap.c with RMAP_EXCLUSIVE and CONFIG_PAGE_MAPCOUNT: sets
 * folio->index and the anon flag.  Small folio: _mapcount 1, AnonExclusive.
 * PTE-mapped large folio: every page _mapcount 1 and AnonExclusive,
 * _large_mapcount = _nr_pages_mapped = nr, MM-id slot 0 = @mm with nr.
 * PMD-mapped THP: only the head is AnonExclusive; _entire_mapcount 1,
 * _large_mapcount 1 (slot 0 = @mm with 1), per-page counts 0.
 * nr_anon[order]++ for large folios (mod_mthp_stat ignores order 0).
 */
void folio_add_new_anon_rmap(struct laf_mm *mm, uint64_t pfn, struct laf_vma *vma,
			     uint64_t address)
{
	struct page *head = pfn_to_page(mm, pfn);
	unsigned int order = page_order(head), nr = 1u << order, i;

	(void)vma;
	folio_set_index(head, address >> mm->page_shift);
	head->flags |= PG_anon | PG_anon_exclusive;
	if (!order) {
		head->mapcount = 1;
	} else if (order == mm->pmd_order && (head->flags & PG_pmd_mapped)) {
		head->mapcount = 0;
		folio_set_entire_mapcount(head, 1);
		folio_set_nr_pages_mapped(head, 0);
		folio_set_large_mapcount_raw(head, 1);
		head[2].index = 0;
		head[3].index = 0;
		folio_set_mm_id(head, 0, mm->mm_id);
		folio_set_mm_id_mapcount(head, 0, 1);
	} else {
		/* tails below the PMD order: already done by vma_alloc_folio() */
		head->mapcount = 1;
		for (i = order < mm->pmd_order ? nr : 1; i < nr; i++) {
			head[i].mapcount = 1;
			head[i].flags |= PG_anon_exclusive;
		}
		folio_set_entire_mapcount(head, 0);
		folio_set_nr_pages_mapped(head, nr);
		folio_set_large_mapcount_raw(head, (int32_t)nr);
		head[2].index = 0;
		head[3].index = 0;
		folio_set_mm_id(head, 0, mm->mm_id);
		folio_set_mm_id_mapcount(head, 0, nr);
	}
	if (order > 0)
		mm->machine->gauges.nr_anon[order]++;
	mm->st.per_folio_ops++;
	mm->st.per_page_ops += nr;
}

/**
 * folio_add_anon_rmap_ptes - PTE-map @nr pages of an existing anon folio
 * @head: head pfn; @pfn: first page; @exclusive: RMAP_EXCLUSIVE
 *
 * __folio_add_rmap() (PTE level) + __folio_add_anon_rmap(): each page's
 * _mapcount++ (a page going from unmapped to mapped raises
 * _nr_pages_mapped), folio_add_large_mapcount(), AnonExclusive per page
 * when @exclusive.  Used by __split_huge_pmd().
 */
void folio_add_anon_rmap_ptes(struct laf_mm *mm, uint64_t head, uint64_t pfn, unsigned int nr,
			      bool exclusive)
{
	struct page *hp = pfn_to_page(mm, head), *p = pfn_to_page(mm, pfn);
	unsigned int i, first = 0;

	if (!page_order(hp)) {
		hp->mapcount++;
		if (exclusive)
			hp->flags |= PG_anon_exclusive;
		return;
	}
	for (i = 0; i < nr; i++) {
		first += p[i].mapcount++ == 0;
		if (exclusive)
			p[i].flags |= PG_anon_exclusive;
	}
	folio_set_nr_pages_mapped(hp, folio_nr_pages_mapped(hp) + first);
	folio_add_large_mapcount(mm, hp, (int)nr);
}

/* the large-folio part of folio_remove_rmap_ptes(), out of line */
static __attribute__((noinline)) void folio_remove_rmap_ptes_large(struct laf_mm *mm, uint64_t head,
								   uint64_t pfn, unsigned int nr)
{
	struct page *hp = pfn_to_page(mm, head), *p = pfn_to_page(mm, pfn);
	unsigned int i, last = 0, left;

	if ((int32_t)nr == folio_large_mapcount(hp)) {
		/*
		 * The last mappings go, so the caller's folio_put_refs() frees
		 * the folio (refcount == mapcount here): the per-page
		 * _mapcount stores are skipped (the next prep_compound_tail()
		 * rewrites them); the folio fields are cleared as the
		 * kernel's would end.
		 */
		LAF_BUG_ON(hp->refcount != (int32_t)nr);
		folio_set_large_mapcount_raw(hp, 0);
		folio_set_nr_pages_mapped(hp, 0);
		hp[2].index = 0;
		hp[3].index = 0;
		return;
	}
	folio_sub_large_mapcount(mm, hp, (int)nr);
	for (i = 0; i < nr; i++)
		last += --p[i].mapcount == 0;
	if (!last)
		return;
	left = folio_nr_pages_mapped(hp) - last;
	folio_set_nr_pages_mapped(hp, left);
	if (!folio_entire_mapcount(hp) && left && (hp->flags & PG_anon))
		deferred_split_folio(mm, head, true);
}

/**
 * folio_remove_rmap_ptes - remove @nr PTE mappings of pages of one folio
 * @head: head pfn; @pfn: first page
 *
 * Dup of __folio_remove_rmap() (PTE level, CONFIG_PAGE_MAPCOUNT): a small
 * folio's _mapcount--.  Large: folio_sub_large_mapcount(), each page's
 * _mapcount--; pages whose last mapping went leave _nr_pages_mapped; the
 * folio is partially mapped when some did, no PMD maps it, and pages remain
 * mapped: then deferred_split_folio().  The caller drops the references.
 */
void folio_remove_rmap_ptes(struct laf_mm *mm, uint64_t head, uint64_t pfn, unsigned int nr)
{
	struct page *hp = pfn_to_page(mm, head);

	mm->st.per_folio_ops++;
	if (likely(!page_order(hp)))
		hp->mapcount -= (int32_t)nr;
	else
		folio_remove_rmap_ptes_large(mm, head, pfn, nr);
}

/**
 * folio_remove_rmap_pmd - remove one PMD mapping of a PMD-sized folio
 *
 * __folio_remove_rmap() (PMD level): _large_mapcount and _entire_mapcount
 * drop; when the last entire mapping goes, the folio is partially mapped if
 * some but not all of its pages stay PTE-mapped (deferred split).
 */
void folio_remove_rmap_pmd(struct laf_mm *mm, uint64_t head)
{
	struct page *hp = pfn_to_page(mm, head);
	uint32_t entire = folio_entire_mapcount(hp) - 1, mapped;

	folio_sub_large_mapcount(mm, hp, 1);
	folio_set_entire_mapcount(hp, entire);
	if (entire)
		return;
	hp->flags &= ~PG_pmd_mapped;
	mapped = folio_nr_pages_mapped(hp);
	if (mapped && mapped < (1u << page_order(hp)) && (hp->flags & PG_anon))
		deferred_split_folio(mm, head, true);
}

/**
 * folio_try_dup_anon_rmap_ptes - share @nr PTE-mapped pages with a child
 * @dst: the child mm
 *
 * __folio_try_dup_anon_rmap() (PTE level): no GUP pins are emulated, so it
 * never fails.  Clears PageAnonExclusive on every page, each page's
 * _mapcount++ and folio_add_large_mapcount(@dst, nr) (the child takes an
 * MM-id slot: the folio becomes "maybe mapped shared"); a small folio's
 * _mapcount++.  The caller takes the references.
 */
void folio_try_dup_anon_rmap_ptes(struct laf_mm *dst, uint64_t head, uint64_t pfn, unsigned int nr)
{
	struct page *hp = pfn_to_page(dst, head), *p = pfn_to_page(dst, pfn);
	unsigned int i;

	if (!page_order(hp)) {
		hp->flags &= ~PG_anon_exclusive;
		hp->mapcount++;
		return;
	}
	for (i = 0; i < nr; i++) {
		p[i].flags &= ~PG_anon_exclusive;
		p[i].mapcount++;
	}
	folio_add_large_mapcount(dst, hp, (int)nr);
	dst->st.per_page_ops += nr;
}

/**
 * folio_try_dup_anon_rmap_pmd - share a PMD-mapped THP with a child
 *
 * __folio_try_dup_anon_rmap() (PMD level): clears PageAnonExclusive on the
 * head, _entire_mapcount++, folio_add_large_mapcount(@dst, 1).
 */
void folio_try_dup_anon_rmap_pmd(struct laf_mm *dst, uint64_t head)
{
	struct page *hp = pfn_to_page(dst, head);

	hp->flags &= ~PG_anon_exclusive;
	folio_set_entire_mapcount(hp, folio_entire_mapcount(hp) + 1);
	folio_add_large_mapcount(dst, hp, 1);
}

/* folio_add_lru_vma() */
static inline void folio_add_lru_vma(struct laf_mm *mm, uint64_t pfn)
{
	struct page *head = pfn_to_page(mm, pfn);

	head->flags |= PG_lru;
	mm->machine->gauges.lru_pages += 1L << page_order(head);
	mm->st.per_folio_ops++;
}

int folio_size_order(struct laf_mm *mm, uint64_t pfn)
{
	return (int)page_order(pfn_to_page(mm, compound_head_pfn(mm, pfn)));
}

/**
 * deferred_split_folio - queue a large anon folio for the deferred split
 * @partially_mapped: true when called because part of it was unmapped
 *
 * Dup of mm/huge_memory.c: order <= 1 never queues; the first partial unmap
 * sets the partially-mapped flag and counts split_deferred and
 * nr_anon_partially_mapped (and thp_deferred_split_page for PMD-mappable
 * folios).  PMD THPs queued at fault time for the "underused" shrinker are
 * not emulated: thp_underused() is false with the default max_ptes_none.
 */
void deferred_split_folio(struct laf_mm *mm, uint64_t pfn, bool partially_mapped)
{
	struct page *head = pfn_to_page(mm, pfn);
	unsigned int order = page_order(head);

	if (order <= 1 || !partially_mapped)
		return;
	if (!(head->flags & PG_partially_mapped)) {
		head->flags |= PG_partially_mapped;
		mm->st.split_deferred[order]++;
		mm->machine->gauges.nr_anon_partially_mapped[order]++;
		if (order >= mm->pmd_order)
			mm->st.thp_deferred_split_page++;
	}
	if (!(head->flags & PG_deferred_queued)) {
		struct deferred_split *q = &mm->machine->deferred;

		if (q->nr == q->cap) {
			size_t ncap = q->cap ? q->cap * 2 : 64;
			uint32_t *n = realloc(q->pfns, ncap * sizeof(*n));

			if (!n)
				return;	/* stays flagged; only the shrinker misses it */
			q->pfns = n;
			q->cap = ncap;
		}
		q->pfns[q->nr++] = (uint32_t)pfn;
		head->flags |= PG_deferred_queued;
		mm->machine->gauges.deferred_split_queue++;
	}
}

/* ------------------------------------------------------------ helpers */

static inline bool pte_range_none(const pte_t *pte, unsigned int nr)
{
	unsigned int i;

	if (nr < 4) {
		for (i = 0; i < nr; i++)
			if (!pte_none(pte[i]))
				return false;
		return true;
	}
	/* nr is a folio size (a power of two): OR 4 PTEs per step, stop at the first hit */
	for (i = 0; i < nr; i += 4)
		if (pte[i] | pte[i + 1] | pte[i + 2] | pte[i + 3])
			return false;
	return true;
}

static inline pte_t *pte_offset_map(struct laf_mm *mm, pmd_t *pmd, uint64_t addr)
{
	if (!pmd->ptes || pmd_trans_huge(pmd))
		return NULL;
	return &pmd->ptes[pte_index(mm, addr)];
}

/**
 * thp_vma_suitable_order - does the naturally aligned folio of @order around
 * @addr fit inside @vma?  (anon VMAs: no pgoff check)
 */
static inline bool thp_vma_suitable_order(struct laf_mm *mm, struct laf_vma *vma,
					  uint64_t addr, int order)
{
	uint64_t size = mm->page_size << order;
	uint64_t haddr = align_down(addr, size);

	return haddr >= vma->vm_start && haddr + size <= vma->vm_end;
}

/**
 * thp_vma_suitable_orders - drop orders from the top until one fits; that
 * one and every lower order are returned unchecked (they fit too).
 */
static inline unsigned long thp_vma_suitable_orders(struct laf_mm *mm, struct laf_vma *vma,
						    uint64_t addr, unsigned long orders)
{
	int order;

	if (!orders)
		return 0;
	order = highest_order(orders);
	while (orders) {
		if (thp_vma_suitable_order(mm, vma, addr, order))
			break;
		order = next_order(&orders, order);
	}
	return orders;
}

static inline vm_fault_t handle_userfault(struct laf_mm *mm)
{
	mm->st.faults_userfault++;
	return LAF_VM_FAULT_RETRY | LAF_VM_FAULT_USERFAULT;
}

/* user_alloc_needs_zeroing() is true (no init_on_alloc): folio_zero_user() */
static inline void folio_zero_user(struct laf_mm *mm, unsigned int order)
{
	mm->st.bytes_zeroed += mm->page_size << order;
	mm->st.per_page_ops += 1u << order;
}

/*
 * Emulates another thread faulting @addr between our lockless scan and the
 * PTL recheck (LAF_INJECT_RACE).  Runs a full write access at @addr.
 */
static int laf_access_one(struct laf_mm *mm, uint64_t addr, bool write, int *kind,
			  uint32_t *vmf_out, uint32_t *nr_faults);

static void maybe_inject_race(struct laf_mm *mm)
{
	struct laf_inject_state *in = &mm->machine->inject;
	int kind;
	uint32_t v, n;

	if (likely(!in->race_count) || in->in_race)
		return;
	in->race_count--;
	in->in_race = true;
	laf_access_one(mm, in->race_addr, true, &kind, &v, &n);
	in->in_race = false;
}

/**
 * folio_prealloc - order-0 zeroed folio, charged with GFP_KERNEL
 * @charge: also charge it (false: the caller charges, LAF v3 style)
 *
 * Order-0 allocation and charge may direct-reclaim: emulated by running the
 * deferred-split shrinker once and retrying.
 * Return: pfn, or NO_PFN (→ VM_FAULT_OOM).  No mTHP counter: order 0.
 */
static uint32_t folio_prealloc(struct laf_mm *mm, bool need_zero, bool charge)
{
	uint32_t pfn = vma_alloc_folio(mm, 0);

	if (pfn == NO_PFN && deferred_split_scan(mm))
		pfn = vma_alloc_folio(mm, 0);
	if (pfn == NO_PFN)
		return NO_PFN;
	if (charge && mem_cgroup_charge(mm, pfn, 0)) {
		if (!deferred_split_scan(mm) || mem_cgroup_charge(mm, pfn, 0)) {
			folio_put(mm, pfn);
			return NO_PFN;
		}
	}
	if (need_zero)
		folio_zero_user(mm, 0);
	return pfn;
}

/**
 * anon_beside_full - the anon_beside_full=1 gate of this machine's kernel
 * @pte: PTE table of the faulting PMD (its first entry)
 *
 * Not in mainline: found on 6.18.44-fc by experiment (docs/kernel-findings.md).
 * An mTHP order that already fits the VMA and has an empty range is used
 * only if the same-size aligned block on its left or right is "full": inside
 * the same VMA and the same PTE table, every PTE present (zero-page PTEs
 * count).  Otherwise anon_fault_declined[order]++ and the next lower order
 * is tried (no allocation, no anon_fault_fallback).  PMD faults and read
 * faults are not affected.
 */
static bool anon_beside_full(struct laf_mm *mm, struct laf_vma *vma, const pte_t *pte,
			     uint64_t address, int order)
{
	uint64_t size = mm->page_size << order, b = align_down(address, size);
	uint64_t pmd_start = align_down(address, mm->pmd_size), pmd_end = pmd_start + mm->pmd_size;
	uint64_t cand[2] = { b - size, b + size };
	int k;

	for (k = 0; k < 2; k++) {
		uint64_t s = cand[k];
		unsigned int i, nr = 1u << order, idx;

		if (k == 0 && b < size)
			continue;
		if (s < vma->vm_start || s + size > vma->vm_end || s < pmd_start || s + size > pmd_end)
			continue;
		idx = pte_index(mm, s);
		for (i = 0; i < nr; i++)
			if (!pte_present(pte[idx + i]))
				break;
		if (i == nr)
			return true;
	}
	return false;
}

#define ALLOC_EAGAIN 1
#define ALLOC_OOM 2

/**
 * alloc_anon_folio - choose, allocate and charge the folio for a write fault
 * @vmf: the fault
 * @pfnp: out: head pfn of the new folio
 * @charge: policy_charge_in_alloc_loop(): charge each order in the loop
 *
 * Dup of mm/memory.c (6.18), policy-parameterised:
 *  1. uffd armed (MISSING/WP/MINOR) → order 0;
 *  2. orders = policy_anon_orders() (upstream: thp_vma_allowable_orders(...,
 *     BIT(PMD_ORDER) - 1); LAF v3: {prefer, COSTLY}), then
 *     thp_vma_suitable_orders() (VMA fit);
 *  3. pte_offset_map() may fail → -EAGAIN (fault retried);
 *  4. drop orders from the top until the aligned PTE range is pte_none();
 *  5. for each remaining order, highest first: allocation failure counts
 *     anon_fault_fallback; a charge failure counts anon_fault_fallback_charge
 *     and anon_fault_fallback (upstream) - then the next order;
 *  6. fallback: folio_prealloc() at order 0; its failure is VM_FAULT_OOM.
 * Orders dropped in 2 or 4 count nothing.  LAF v3 policies charge after
 * the allocation in do_anonymous_page() instead (failure → OOM).
 *
 * Return: 0 with *pfnp set, ALLOC_EAGAIN, or ALLOC_OOM.
 */
static int alloc_anon_folio(struct vm_fault *vmf, uint32_t *pfnp, bool charge)
{
	struct laf_mm *mm = vmf->mm;
	struct laf_vma *vma = vmf->vma;
	unsigned long orders;
	int order;
	pte_t *pte;
	uint32_t pfn;

	if (unlikely(userfaultfd_armed(vma)))
		goto fallback;
	orders = policy_anon_orders(mm, vma, vmf->address);
	orders = thp_vma_suitable_orders(mm, vma, vmf->address, orders);
	if (!orders)
		goto fallback;

	if (unlikely(mm->machine->inject.pte_map_fail)) {
		mm->machine->inject.pte_map_fail--;
		return ALLOC_EAGAIN;
	}
	pte = pte_offset_map(mm, vmf->pmd, align_down(vmf->address, mm->pmd_size));
	if (!pte)
		return ALLOC_EAGAIN;

	order = highest_order(orders);
	while (orders) {
		uint64_t addr = align_down(vmf->address, mm->page_size << order);

		if (pte_range_none(pte + pte_index(mm, addr), 1u << order))
			break;
		order = next_order(&orders, order);
	}
	if (!orders)
		goto fallback;

	while (orders) {
		if (unlikely(mm->machine->pol.anon_beside_full) &&
		    !anon_beside_full(mm, vma, pte, vmf->address, order)) {
			mm->st.anon_fault_declined[order]++;
			order = next_order(&orders, order);
			continue;
		}
		pfn = vma_alloc_folio(mm, (unsigned int)order);
		if (pfn != NO_PFN) {
			if (charge && mem_cgroup_charge(mm, pfn, (unsigned int)order)) {
				mm->st.anon_fault_fallback_charge[order]++;
				folio_put(mm, pfn);
				goto next;
			}
			folio_zero_user(mm, (unsigned int)order);
			*pfnp = pfn;
			return 0;
		}
next:
		mm->st.anon_fault_fallback[order]++;
		mm->st.alloc_retries++;
		order = next_order(&orders, order);
	}
fallback:
	pfn = folio_prealloc(mm, true, charge);
	if (pfn == NO_PFN)
		return ALLOC_OOM;
	*pfnp = pfn;
	return 0;
}

/**
 * do_anonymous_page - first touch of a none PTE in a private anon VMA
 *
 * Read fault: maps the shared zero page (special, read-only, no RSS); never
 * a large folio.  Write fault: alloc_anon_folio(), then under the PTL
 * recheck the range (vmf_pte_changed() for nr == 1, pte_range_none()
 * otherwise; on a race the folio is freed, nothing is counted and the fault
 * is retried), then folio_ref_add(nr - 1), add_mm_counter(MM_ANONPAGES, nr),
 * count_mthp_stat(ANON_FAULT_ALLOC), folio_add_new_anon_rmap(),
 * folio_add_lru_vma(), one set_ptes(nr), update_mmu_cache_range().
 */
static vm_fault_t do_anonymous_page(struct vm_fault *vmf)
{
	struct laf_mm *mm = vmf->mm;
	struct laf_vma *vma = vmf->vma;
	unsigned int order, nr;
	uint64_t addr;
	uint32_t pfn;
	pte_t entry, *pte;
	bool charge;
	int ret;

	if (vma->vm_flags & LAF_VM_SHARED)
		return LAF_VM_FAULT_SIGBUS;
	/* pte_alloc(): read faults create the PTE table too */
	if (pmd_none(vmf->pmd) && __pte_alloc(mm, vmf->pmd))
		return LAF_VM_FAULT_OOM;

	if (!(vmf->flags & FAULT_FLAG_WRITE)) {
		pte = &vmf->pmd->ptes[pte_index(mm, vmf->address)];
		if (!pte_none(*pte))	/* vmf_pte_changed() */
			return 0;
		if (userfaultfd_missing(vma))
			return handle_userfault(mm);
		entry = pfn_pte(mm->machine->zero_pfn, LAF_PTE_PRESENT | LAF_PTE_SPECIAL | LAF_PTE_YOUNG);
		set_ptes(mm, align_down(vmf->address, mm->page_size), pte, entry, 1);
		mm->st.per_folio_ops++;	/* update_mmu_cache_range() */
		mm->st.zero_page_maps++;
		mm->st.faults_read++;
		vmf->kind = LAF_FK_ANON_READ;
		return 0;
	}

	if (unlikely(!vma->anon_vma))
		vmf_anon_prepare(mm, vma);
	charge = policy_charge_in_alloc_loop(mm);	/* @charge: upstream; else LAF v3 */
	ret = alloc_anon_folio(vmf, &pfn, charge);
	if (ret == ALLOC_EAGAIN)
		return 0;
	if (ret == ALLOC_OOM)
		return LAF_VM_FAULT_OOM;

	order = page_order(pfn_to_page(mm, pfn));
	nr = 1u << order;
	addr = align_down(vmf->address, mm->page_size << order);
	entry = pfn_pte(pfn, LAF_PTE_PRESENT | LAF_PTE_YOUNG);
	if (vma->vm_flags & LAF_VM_WRITE)
		entry |= LAF_PTE_WRITE | LAF_PTE_DIRTY;

	/*
	 * LAF v3: charge after allocation, failure is OOM (no fallback).  The
	 * order-0 charge is the same GFP_KERNEL charge as folio_prealloc()'s:
	 * its reclaim is emulated the same way (shrinker once, then retry).
	 */
	if (!charge && mem_cgroup_charge(mm, pfn, order) &&
	    (order || !deferred_split_scan(mm) || mem_cgroup_charge(mm, pfn, 0))) {
		folio_put(mm, pfn);
		return LAF_VM_FAULT_OOM;
	}

	maybe_inject_race(mm);
	pte = &vmf->pmd->ptes[pte_index(mm, addr)];
	if ((nr == 1 && !pte_none(*pte)) || (nr > 1 && !pte_range_none(pte, nr))) {
		/* update_mmu_tlb_range(); release: */
		folio_put(mm, pfn);
		return 0;
	}
	if (userfaultfd_missing(vma)) {
		folio_put(mm, pfn);
		return handle_userfault(mm);
	}

	pfn_to_page(mm, pfn)->refcount += (int32_t)nr - 1;	/* folio_ref_add() */
	mm->st.per_folio_ops++;
	mm->st.mm_anonpages += nr;				/* add_mm_counter() */
	update_hiwater_rss(mm);
	mm->st.per_folio_ops++;
	if (order > 0)
		mm->st.anon_fault_alloc[order]++;		/* count_mthp_stat() */
	folio_add_new_anon_rmap(mm, pfn, vma, addr);
	folio_add_lru_vma(mm, pfn);
	set_ptes(mm, addr, pte, entry, nr);
	mm->st.per_folio_ops++;				/* update_mmu_cache_range() */
	mm->st.folios_mapped[order]++;
	mm->st.faults_write++;
	vmf->kind = LAF_FK_ANON_WRITE;
	policy_auto_update(mm, vma, vmf->address, order);
	return 0;
}

/**
 * wp_can_reuse_anon_folio - may a write reuse this non-exclusive anon folio?
 * @head: head pfn of the folio
 *
 * Dup of mm/memory.c (6.18).  Large (__wp_can_reuse_large_anon_folio(),
 * CONFIG_MM_ID): no if at most one mapping is left (the last page is
 * copied and the folio freed), no if "maybe mapped shared", no unless every
 * reference is a mapping (_large_mapcount == refcount).  Small: reuse only
 * with the one reference of its one mapping (no KSM, swap cache or
 * per-CPU LRU batches here; folio_move_anon_rmap() has nothing to move).
 */
static bool wp_can_reuse_anon_folio(struct laf_mm *mm, uint64_t head)
{
	struct page *hp = pfn_to_page(mm, head);

	if (page_order(hp)) {
		if (folio_large_mapcount(hp) <= 1)
			return false;
		if (folio_maybe_shared_bit(hp))
			return false;
		return folio_large_mapcount(hp) == hp->refcount;
	}
	return hp->refcount == 1;
}

/**
 * wp_page_reuse - make the one faulting PTE writable (pgreuse)
 *
 * maybe_mkwrite(pte_mkdirty(pte_mkyoung())): only this PTE, whatever the
 * folio size.  arm64: ptep_set_access_flags() changes the write bit, so
 * contpte_ptep_set_access_flags() unfolds the block first.
 */
static vm_fault_t wp_page_reuse(struct vm_fault *vmf)
{
	struct laf_mm *mm = vmf->mm;
	pte_t old = *vmf->pte;
	uint64_t addr = align_down(vmf->address, mm->page_size);

	if (mm->cont_pte_order && (old & LAF_PTE_CONT)) {
		unsigned int cont = 1u << mm->cont_pte_order, k;
		pte_t *first = vmf->pte - (pte_index(mm, addr) & (cont - 1));

		for (k = 0; k < cont; k++)
			first[k] &= ~(pte_t)LAF_PTE_CONT;
		mm->st.contpte_unfolds++;
		old &= ~(pte_t)LAF_PTE_CONT;
	}
	*vmf->pte = old | LAF_PTE_YOUNG | LAF_PTE_DIRTY |
		    ((vmf->vma->vm_flags & LAF_VM_WRITE) ? LAF_PTE_WRITE : 0);
	mm->st.pgreuse++;
	mm->st.faults_wp++;
	vmf->kind = LAF_FK_WP;
	return 0;
}

/**
 * wp_page_copy - give the faulting page a private order-0 copy
 * @old_head: head pfn of the old folio, NO_PFN for the zero page
 *
 * Dup of mm/memory.c: vmf_anon_prepare(); folio_prealloc() an order-0
 * folio (zeroed for the zero page, else one page copied) whatever the old
 * folio's size; under the PTL, if the PTE is unchanged: the zero page's
 * replacement counts MM_ANONPAGES + 1 (an anon copy replaces an anon page:
 * no change); ptep_clear_flush() (arm64 unfolds a contpte block first),
 * folio_add_new_anon_rmap(), folio_add_lru_vma(), one PTE, then
 * folio_remove_rmap_pte() on the old page (deferred split as
 * __folio_remove_rmap() decides) and the old mapping's reference dropped.
 * Counts faults_wp and faults_wp_copy.
 */
static vm_fault_t wp_page_copy(struct vm_fault *vmf, uint64_t old_head)
{
	struct laf_mm *mm = vmf->mm;
	struct laf_vma *vma = vmf->vma;
	pte_t old = *vmf->pte, entry;
	uint64_t addr = align_down(vmf->address, mm->page_size);
	bool zero = old_head == NO_PFN;
	uint32_t pfn;

	vmf_anon_prepare(mm, vma);
	pfn = folio_prealloc(mm, zero, true);
	if (pfn == NO_PFN)
		return LAF_VM_FAULT_OOM;
	if (!zero)
		mm->st.per_page_ops++;	/* __wp_page_copy_user(): one page */
	if (*vmf->pte != old) {		/* vmf_pte_changed(): raced */
		folio_put(mm, pfn);
		return 0;
	}
	entry = pfn_pte(pfn, LAF_PTE_PRESENT | LAF_PTE_YOUNG | LAF_PTE_DIRTY |
			((vma->vm_flags & LAF_VM_WRITE) ? LAF_PTE_WRITE : 0));
	if (mm->cont_pte_order && (old & LAF_PTE_CONT))
		contpte_unfold_block(mm, vmf->pmd->ptes, pte_index(mm, addr));
	/* ptep_clear_flush() of the old entry */
	if (old & LAF_PTE_TOUCHED) {
		if (zero)
			mm->st.zero_pages_touched--;
		else
			mm->st.pages_touched--;
	}
	*vmf->pte = 0;
	mm->st.ptes_cleared++;
	if (zero) {
		mm->st.mm_anonpages++;		/* inc_mm_counter() */
		update_hiwater_rss(mm);
	}
	folio_add_new_anon_rmap(mm, pfn, vma, addr);
	folio_add_lru_vma(mm, pfn);
	set_ptes(mm, addr, vmf->pte, entry, 1);
	if (!zero) {
		folio_remove_rmap_ptes(mm, old_head, pte_pfn(old), 1);
		folio_put(mm, old_head);
	}
	mm->st.folios_mapped[0]++;
	mm->st.faults_wp++;
	mm->st.faults_wp_copy++;
	vmf->kind = LAF_FK_WP;
	return 0;
}

/**
 * do_wp_page - write to a present, write-protected PTE
 *
 * Dup of mm/memory.c (6.18), private anon mappings: uffd-wp protected →
 * handed to userfaultfd.  An anon page that is PageAnonExclusive, or whose
 * folio wp_can_reuse_anon_folio() allows, becomes exclusive and is reused
 * in place (wp_page_reuse(): one PTE).  Otherwise, and for the zero page,
 * wp_page_copy().
 */
static vm_fault_t do_wp_page(struct vm_fault *vmf)
{
	struct laf_mm *mm = vmf->mm;
	pte_t old = *vmf->pte;
	uint64_t pfn, head;
	struct page *page;

	if ((old & LAF_PTE_UFFD_WP) && (vmf->vma->vm_flags & LAF_VM_UFFD_WP))
		return handle_userfault(mm);
	if (pte_special(old))
		return wp_page_copy(vmf, NO_PFN);
	pfn = pte_pfn(old);
	head = compound_head_pfn(mm, pfn);
	page = pfn_to_page(mm, pfn);
	if ((pfn_to_page(mm, head)->flags & PG_anon) &&
	    ((page->flags & PG_anon_exclusive) || wp_can_reuse_anon_folio(mm, head))) {
		page->flags |= PG_anon_exclusive;
		return wp_page_reuse(vmf);
	}
	return wp_page_copy(vmf, head);
}

static vm_fault_t handle_pte_fault(struct vm_fault *vmf)
{
	struct laf_mm *mm = vmf->mm;
	pte_t *pte = pte_offset_map(mm, vmf->pmd, vmf->address);

	if (!pte || pte_none(*pte))
		return do_anonymous_page(vmf);	/* do_pte_missing() */
	vmf->pte = pte;
	vmf->orig_pte = *pte;
	if ((vmf->flags & FAULT_FLAG_WRITE) && !pte_write(*pte))
		return do_wp_page(vmf);
	/* spurious / access-flag fault: pte_mkyoung (+ dirty on write) */
	*pte |= LAF_PTE_YOUNG | ((vmf->flags & FAULT_FLAG_WRITE) ? LAF_PTE_DIRTY : 0);
	return 0;
}

static vm_fault_t __handle_mm_fault(struct vm_fault *vmf)
{
	struct laf_mm *mm = vmf->mm;
	vm_fault_t ret;

	vmf->pmd = pmd_offset_alloc(mm, vmf->address);
	if (!vmf->pmd)
		return LAF_VM_FAULT_OOM;

	if (pmd_none(vmf->pmd) && policy_pmd_allowed(mm, vmf->vma)) {
		ret = do_huge_pmd_anonymous_page(vmf);
		if (!(ret & LAF_VM_FAULT_FALLBACK))
			return ret;
	} else if (pmd_trans_huge(vmf->pmd)) {
		if ((vmf->flags & FAULT_FLAG_WRITE) && !(vmf->pmd->val & LAF_PTE_WRITE)) {
			ret = do_huge_pmd_wp_page(vmf);	/* wp_huge_pmd() */
			if (!(ret & LAF_VM_FAULT_FALLBACK))
				return ret;
		} else {
			vmf->pmd->val |= LAF_PTE_YOUNG;	/* huge_pmd_set_accessed() */
			return 0;
		}
	}
	return handle_pte_fault(vmf);
}

/**
 * handle_mm_fault - entry point for one fault in @vma at @address
 * @kind: out: enum laf_fault_kind of what handled it
 *
 * mm_account_fault(): VM_FAULT_RETRY (userfaultfd) is not counted; every
 * other fault counts in pgfault (vmstat PGFAULT, errors included) and, when
 * it succeeded, in min_flt (getrusage ru_minflt, perf page-faults-min).
 */
vm_fault_t handle_mm_fault(struct laf_mm *mm, struct laf_vma *vma, uint64_t address,
			   unsigned int flags, int *kind)
{
	struct vm_fault vmf = {
		.mm = mm, .vma = vma, .address = address, .flags = flags,
		.kind = LAF_FK_NONE,
	};
	vm_fault_t ret = __handle_mm_fault(&vmf);

	if (!(ret & LAF_VM_FAULT_RETRY)) {
		mm->st.pgfault++;
		if (!(ret & (LAF_VM_FAULT_OOM | LAF_VM_FAULT_SIGBUS | LAF_VM_FAULT_SIGSEGV)))
			mm->st.min_flt++;
	}
	*kind = vmf.kind;
	return ret;
}

/* ------------------------------------------------------------- access */

/*
 * The MMU: does the present entry already allow this access?  Marks the page
 * touched (emulator-only bit) on success.
 */
static inline bool mmu_access(struct laf_mm *mm, uint64_t addr, bool write)
{
	struct pmd_table *t;
	pmd_t *pmd;
	pte_t *ptep, pte;

	if (unlikely(addr >= mm->task_size))
		return false;
	t = mm->pgd[addr >> mm->pud_shift];
	if (!t)
		return false;
	pmd = &t->e[(addr >> mm->pmd_shift) & (mm->ptrs_per_pte - 1)];
	if (unlikely(pmd->val)) {	/* huge leaf: touched bits live in the deposited table */
		if ((pmd->val & LAF_PTE_PROTNONE) || (write && !(pmd->val & LAF_PTE_WRITE)))
			return false;
		ptep = &pmd->ptes[pte_index(mm, addr)];
		if (!(*ptep & LAF_PTE_TOUCHED)) {
			*ptep |= LAF_PTE_TOUCHED;
			if (pmd->val & LAF_PTE_SPECIAL)
				mm->st.zero_pages_touched++;
			else
				mm->st.pages_touched++;
		}
		return true;
	}
	if (!pmd->ptes)
		return false;
	ptep = &pmd->ptes[pte_index(mm, addr)];
	pte = *ptep;
	if (!(pte & LAF_PTE_PRESENT) || (pte & LAF_PTE_PROTNONE) ||
	    (write && !(pte & LAF_PTE_WRITE)))
		return false;
	if (!(pte & LAF_PTE_TOUCHED)) {
		*ptep = pte | LAF_PTE_TOUCHED;
		if (pte & LAF_PTE_SPECIAL)
			mm->st.zero_pages_touched++;
		else
			mm->st.pages_touched++;
	}
	return true;
}

#define LAF_MAX_FAULTS_PER_ACCESS 64

/*
 * The MMU missed: take the fault (do_user_addr_fault: find_vma,
 * access_error, handle_mm_fault) and re-execute, until the access completes
 * or fails.  Kept out of line so the hit path below needs no stack frame.
 */
static __attribute__((noinline))
int laf_access_fault(struct laf_mm *mm, uint64_t addr, bool write, int *kind,
		     uint32_t *vmf_out, uint32_t *nr_faults)
{
	unsigned int n = 0;

	*kind = LAF_FK_NONE;
	*vmf_out = 0;
	*nr_faults = 0;
	for (;;) {
		struct laf_vma *vma;
		vm_fault_t ret;

		mm->st.faults++;
		vma = find_vma(mm, addr);
		if (!vma || addr < vma->vm_start ||
		    (write && !(vma->vm_flags & LAF_VM_WRITE)) ||
		    (!write && !(vma->vm_flags & (LAF_VM_READ | LAF_VM_WRITE | LAF_VM_EXEC)))) {
			mm->st.faults_sigsegv++;
			return LAF_ACCESS_SIGSEGV;
		}
		ret = handle_mm_fault(mm, vma, addr, write ? FAULT_FLAG_WRITE : 0, kind);
		*vmf_out = ret;
		*nr_faults = ++n;
		if (ret & LAF_VM_FAULT_OOM) {
			mm->st.faults_oom++;
			return LAF_ACCESS_OOM;
		}
		if (ret & LAF_VM_FAULT_SIGBUS) {
			mm->st.faults_sigbus++;
			return LAF_ACCESS_SIGBUS;
		}
		if (ret & LAF_VM_FAULT_USERFAULT)
			return LAF_ACCESS_USERFAULT;
		if (mmu_access(mm, addr, write))
			return LAF_ACCESS_FAULT;
		mm->st.faults_retried++;
		if (n >= LAF_MAX_FAULTS_PER_ACCESS) {
			mm->st.faults_sigbus++;
			return LAF_ACCESS_SIGBUS;
		}
	}
}

/* One access as the CPU does it: try the MMU; on a miss, fault and retry. */
static int laf_access_one(struct laf_mm *mm, uint64_t addr, bool write, int *kind,
			  uint32_t *vmf_out, uint32_t *nr_faults)
{
	if (likely(mmu_access(mm, addr, write))) {
		mm->st.hits++;
		*kind = LAF_FK_NONE;
		*vmf_out = 0;
		*nr_faults = 0;
		return LAF_ACCESS_HIT;
	}
	return laf_access_fault(mm, addr, write, kind, vmf_out, nr_faults);
}

int laf_access(struct laf_mm *mm, uint64_t addr, bool write, struct laf_fault_result *res)
{
	int kind;
	uint32_t v, n;
	int a;

	if (likely(!res)) {	/* batches: the hit needs no result, no stack frame */
		if (likely(mmu_access(mm, addr, write))) {
			mm->st.hits++;
			return LAF_ACCESS_HIT;
		}
		return laf_access_fault(mm, addr, write, &kind, &v, &n);
	}
	a = laf_access_one(mm, addr, write, &kind, &v, &n);
	if (res) {
		res->access = a;
		res->kind = kind;
		res->vm_fault = v;
		res->nr_faults = n;
		res->reserved = 0;
		res->order = LAF_ORDER_NONE;
	}
	return a;
}

/* --------------------------------------------------------------- zap */

static inline void account_touched_clear(struct laf_mm *mm, pte_t pte)
{
	if (pte & LAF_PTE_TOUCHED) {
		if (pte & LAF_PTE_SPECIAL)
			mm->st.zero_pages_touched--;
		else
			mm->st.pages_touched--;
	}
}

/* arm64 contpte_try_unfold_partial(): repaint a partially covered block */
void contpte_unfold_block(struct laf_mm *mm, pte_t *ptes, unsigned int idx)
{
	unsigned int cont = 1u << mm->cont_pte_order, start = idx & ~(cont - 1), i;

	if (!(ptes[idx] & LAF_PTE_CONT))
		return;
	for (i = start; i < start + cont; i++)
		ptes[i] &= ~(pte_t)LAF_PTE_CONT;
	mm->st.contpte_unfolds++;
}

/**
 * zap_pte_range - unmap [@addr, @end) within one PTE table
 *
 * Per folio batch (folio_pte_batch()): clear the PTEs, MM_ANONPAGES -= nr,
 * folio_remove_rmap_ptes() (a large anon folio left partially mapped goes
 * to deferred_split_folio()), then folio_put_refs() frees it at zero.
 */
void zap_pte_range(struct laf_mm *mm, pmd_t *pmd, uint64_t addr, uint64_t end)
{
	pte_t *ptes = pmd->ptes;
	unsigned int i = pte_index(mm, addr);
	unsigned int iend = i + (unsigned int)((end - addr) >> mm->page_shift);

	if (mm->cont_pte_order) {
		unsigned int cmask = (1u << mm->cont_pte_order) - 1;

		if (i & cmask)
			contpte_unfold_block(mm, ptes, i);
		if ((iend & cmask) && iend > 0)
			contpte_unfold_block(mm, ptes, iend - 1);
	}
	while (i < iend) {
		pte_t pte = ptes[i];
		uint64_t pfn, head, fend;
		struct page *hp;
		unsigned int n, touched;

		if (pte_none(pte)) {
			i++;
			continue;
		}
		if (pte_special(pte)) {
			account_touched_clear(mm, pte);
			ptes[i++] = 0;
			mm->st.ptes_cleared++;
			mm->st.per_page_ops++;
			continue;
		}
		pfn = pte_pfn(pte);
		head = compound_head_pfn(mm, pfn);
		hp = pfn_to_page(mm, head);
		fend = head + (1ULL << page_order(hp));
		/* folio_pte_batch(): consecutive pages of this folio, cleared as found */
		touched = !!(pte & LAF_PTE_TOUCHED);
		ptes[i] = 0;
		for (n = 1; i + n < iend && pfn + n < fend; n++) {
			pte_t next = ptes[i + n];

			/* young/dirty/write are ignored; uffd-wp must match */
			if (!pte_present(next) || pte_special(next) || pte_pfn(next) != pfn + n ||
			    ((next ^ pte) & LAF_PTE_UFFD_WP))
				break;
			touched += !!(next & LAF_PTE_TOUCHED);
			ptes[i + n] = 0;
		}
		mm->st.pages_touched -= touched;
		mm->st.ptes_cleared += n;
		mm->st.per_page_ops += 2 * n;	/* PTE clear + per-page mapcount */
		mm->st.mm_anonpages -= n;
		folio_remove_rmap_ptes(mm, head, pfn, n);
		folio_put_refs(mm, head, (int)n);
		i += n;
	}
}

/**
 * zap_page_range - unmap_page_range() of [@start, @end) inside @vma
 *
 * A huge PMD fully covered is zapped whole (zap_huge_pmd()); a partially
 * covered one is split first (__split_huge_pmd()).  Page tables stay.
 */
void zap_page_range(struct laf_mm *mm, struct laf_vma *vma, uint64_t start, uint64_t end)
{
	uint64_t addr = start;

	while (addr < end) {
		uint64_t next = align_down(addr, mm->pmd_size) + mm->pmd_size;
		pmd_t *pmd;

		if (next > end || next < addr)
			next = end;
		pmd = pmd_offset(mm, addr);
		if (pmd && !pmd_none(pmd)) {
			if (pmd_trans_huge(pmd)) {
				if (next - addr == mm->pmd_size) {
					zap_huge_pmd(mm, pmd);
					addr = next;
					continue;
				}
				__split_huge_pmd(mm, vma, pmd, addr);
			}
			zap_pte_range(mm, pmd, addr, next);
		}
		addr = next;
	}
}
