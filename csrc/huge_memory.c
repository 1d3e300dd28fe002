// SPDX-License-Identifier: GPL-2.0
/*
 * huge_memory.c - the PMD path and splitting, after mm/huge_memory.c (6.18).
 *
 * do_huge_pmd_anonymous_page(): huge zero PMD on read faults (use_zero_page),
 * a PMD-order THP on write faults, fallback to the PTE path otherwise.
 * do_huge_pmd_wp_page(): write to a huge zero PMD tries a THP, else splits
 * the PMD into zero-page PTEs and falls back (order-0 copy).
 * __split_huge_pmd(), zap_huge_pmd(), and the deferred-split shrinker.
 */
#include <stdlib.h>

#include "laf_internal.h"

static inline bool thp_pmd_fits(struct laf_mm *mm, struct laf_vma *vma, uint64_t haddr)
{
	return haddr >= vma->vm_start && haddr + mm->pmd_size <= vma->vm_end;
}

/*
 * mm_get_huge_zero_folio(): the huge zero folio is allocated from emulated
 * RAM (not charged) on first use and held by the machine until it is
 * destroyed (the kernel frees it from a shrinker once no mm holds it:
 * simplified).  thp_zero_page_alloc counts that allocation.
 */
static uint32_t mm_get_huge_zero_folio(struct laf_mm *mm)
{
	struct laf_machine *m = mm->machine;
	uint32_t pfn;

	if (m->huge_zero_pfn != NO_PFN)
		return m->huge_zero_pfn;
	pfn = __rmqueue(m, mm->pmd_order);
	if (pfn == NO_PFN) {
		mm->st.thp_zero_page_alloc_failed++;
		return NO_PFN;
	}
	m->memmap[pfn].flags = PG_head | PG_huge_zero | (mm->pmd_order << PG_ORDER_SHIFT);
	m->memmap[pfn].refcount = 1;
	m->memmap[pfn].mapcount = 0;
	{
		unsigned int i, nr = 1u << mm->pmd_order;

		for (i = 1; i < nr; i++) {
			m->memmap[pfn + i].flags = PG_tail;
			m->memmap[pfn + i].head = pfn;
		}
	}
	m->huge_zero_pfn = pfn;
	mm->st.thp_zero_page_alloc++;
	return pfn;
}

/* pgtable_trans_huge_deposit(): keep a PTE table for a later split */
static int deposit_pgtable(struct laf_mm *mm, pmd_t *pmd, uint32_t table_pfn)
{
	pte_t *ptes = calloc(mm->ptrs_per_pte, sizeof(pte_t));

	if (!ptes)
		return LAF_ENOMEM;
	pmd->ptes = ptes;
	pmd->table_pfn = table_pfn;
	mm->st.nr_ptes++;	/* mm_inc_nr_ptes() */
	return 0;
}

/**
 * vma_alloc_anon_folio_pmd - allocate and charge a PMD-order folio
 * Counts THP_FAULT_FALLBACK (+ _CHARGE) and the PMD mTHP fallback stats
 * on failure.  Return: head pfn or NO_PFN.
 */
static uint32_t vma_alloc_anon_folio_pmd(struct laf_mm *mm)
{
	unsigned int order = mm->pmd_order;
	uint32_t pfn = vma_alloc_folio(mm, order);

	if (pfn == NO_PFN) {
		mm->st.thp_fault_fallback++;
		mm->st.anon_fault_fallback[order]++;
		return NO_PFN;
	}
	if (mem_cgroup_charge(mm, pfn, order)) {
		folio_put(mm, pfn);
		mm->st.thp_fault_fallback++;
		mm->st.thp_fault_fallback_charge++;
		mm->st.anon_fault_fallback[order]++;
		mm->st.anon_fault_fallback_charge[order]++;
		return NO_PFN;
	}
	mm->st.bytes_zeroed += mm->pmd_size;	/* folio_zero_user() */
	mm->st.per_page_ops += 1u << order;
	return pfn;
}

/* map_anon_folio_pmd(): rmap, LRU, set_pmd_at, counters */
static void map_anon_folio_pmd(struct laf_mm *mm, uint32_t pfn, pmd_t *pmd,
			       struct laf_vma *vma, uint64_t haddr)
{
	struct page *head = pfn_to_page(mm, pfn);
	unsigned int nr = 1u << mm->pmd_order;

	head->flags |= PG_pmd_mapped | PG_lru;
	folio_add_new_anon_rmap(mm, pfn, vma, haddr);
	mm->machine->gauges.lru_pages += nr;	/* folio_add_lru_vma() */
	mm->st.per_folio_ops++;
	/* maybe_pmd_mkwrite(pmd_mkdirty(entry)): dirty even in a read-only VMA */
	pmd->val = pfn_pte(pfn, LAF_PTE_PRESENT | LAF_PTE_HUGE | LAF_PTE_YOUNG | LAF_PTE_DIRTY |
			   ((vma->vm_flags & LAF_VM_WRITE) ? LAF_PTE_WRITE : 0));
	mm->st.mm_anonpages += nr;
	update_hiwater_rss(mm);
	mm->st.thp_fault_alloc++;
	mm->st.anon_fault_alloc[mm->pmd_order]++;
	mm->st.folios_mapped[mm->pmd_order]++;
	mm->st.per_folio_ops += 3;	/* set_pmd_at, update_mmu_cache_pmd, counters */
}

/**
 * do_huge_pmd_anonymous_page - fault on a none PMD where the PMD order is allowed
 *
 * Return: VM_FAULT_FALLBACK (no counter) when the PMD-aligned range does not
 * fit the VMA or the THP cannot be allocated/charged (counted); otherwise the
 * fault is handled here.
 */
vm_fault_t do_huge_pmd_anonymous_page(struct vm_fault *vmf)
{
	struct laf_mm *mm = vmf->mm;
	struct laf_vma *vma = vmf->vma;
	uint64_t haddr = align_down(vmf->address, mm->pmd_size);
	uint32_t pfn, table;

	if (!thp_pmd_fits(mm, vma, haddr))
		return LAF_VM_FAULT_FALLBACK;
	vmf_anon_prepare(mm, vma);

	if (!(vmf->flags & FAULT_FLAG_WRITE) && mm->machine->pol.use_zero_page) {
		table = pte_alloc_one(mm);
		if (table == NO_PFN)
			return LAF_VM_FAULT_OOM;
		pfn = mm_get_huge_zero_folio(mm);
		if (pfn == NO_PFN) {
			pte_free(mm, table);
			mm->st.thp_fault_fallback++;
			return LAF_VM_FAULT_FALLBACK;
		}
		if (userfaultfd_missing(vma)) {
			pte_free(mm, table);
			mm->st.faults_userfault++;
			return LAF_VM_FAULT_RETRY | LAF_VM_FAULT_USERFAULT;
		}
		if (deposit_pgtable(mm, vmf->pmd, table)) {
			pte_free(mm, table);
			return LAF_VM_FAULT_OOM;
		}
		/* set_huge_zero_folio() */
		vmf->pmd->val = pfn_pte(pfn, LAF_PTE_PRESENT | LAF_PTE_HUGE | LAF_PTE_SPECIAL |
					LAF_PTE_YOUNG);
		pfn_to_page(mm, pfn)->refcount++;
		pfn_to_page(mm, pfn)->mapcount++;
		mm->st.huge_zero_pmd_maps++;
		mm->st.faults_pmd++;
		vmf->kind = LAF_FK_PMD_ZERO;
		return 0;
	}

	/* __do_huge_pmd_anonymous_page() */
	pfn = vma_alloc_anon_folio_pmd(mm);
	if (pfn == NO_PFN)
		return LAF_VM_FAULT_FALLBACK;
	table = pte_alloc_one(mm);
	if (table == NO_PFN) {
		folio_put(mm, pfn);
		return LAF_VM_FAULT_OOM;
	}
	if (userfaultfd_missing(vma)) {
		folio_put(mm, pfn);
		pte_free(mm, table);
		mm->st.faults_userfault++;
		return LAF_VM_FAULT_RETRY | LAF_VM_FAULT_USERFAULT;
	}
	if (deposit_pgtable(mm, vmf->pmd, table)) {
		folio_put(mm, pfn);
		pte_free(mm, table);
		return LAF_VM_FAULT_OOM;
	}
	map_anon_folio_pmd(mm, pfn, vmf->pmd, vma, haddr);
	mm->st.faults_pmd++;
	vmf->kind = LAF_FK_PMD;
	return 0;
}

/* Touched bits of a deposited table move from "zero" to "anon" accounting. */
static void retally_touched(struct laf_mm *mm, pmd_t *pmd, bool zero_to_anon)
{
	unsigned int i, n = 0;

	for (i = 0; i < mm->ptrs_per_pte; i++)
		n += !!(pmd->ptes[i] & LAF_PTE_TOUCHED);
	if (zero_to_anon) {
		mm->st.zero_pages_touched -= n;
		mm->st.pages_touched += n;
	}
}

/**
 * do_huge_pmd_wp_page - write fault on a present, read-only huge PMD
 *
 * uffd-wp → userfaultfd.  Huge zero PMD: do_huge_zero_wp_pmd() allocates a
 * THP (same counters as a fault); on failure the PMD is split into zero-page
 * PTEs and VM_FAULT_FALLBACK sends the fault to the PTE level, which copies
 * an order-0 page.  An anon THP is reused if its head is PageAnonExclusive
 * or its only reference is this mapping; otherwise (shared after fork) the
 * PMD is split and the PTE level copies.
 */
vm_fault_t do_huge_pmd_wp_page(struct vm_fault *vmf)
{
	struct laf_mm *mm = vmf->mm;
	struct laf_vma *vma = vmf->vma;
	pmd_t *pmd = vmf->pmd;
	uint64_t haddr = align_down(vmf->address, mm->pmd_size);

	if ((pmd->val & LAF_PTE_UFFD_WP) && (vma->vm_flags & LAF_VM_UFFD_WP)) {
		mm->st.faults_userfault++;
		return LAF_VM_FAULT_RETRY | LAF_VM_FAULT_USERFAULT;
	}
	if (pmd->val & LAF_PTE_SPECIAL) {
		uint32_t pfn;

		vmf_anon_prepare(mm, vma);
		pfn = vma_alloc_anon_folio_pmd(mm);
		if (pfn != NO_PFN) {
			uint32_t zpfn = (uint32_t)pte_pfn(pmd->val);

			pfn_to_page(mm, zpfn)->refcount--;	/* mm_put_huge_zero_folio() */
			pfn_to_page(mm, zpfn)->mapcount--;
			retally_touched(mm, pmd, true);
			map_anon_folio_pmd(mm, pfn, pmd, vma, haddr);
			mm->st.faults_pmd++;
			vmf->kind = LAF_FK_PMD_WP;
			return 0;
		}
		__split_huge_pmd(mm, vma, pmd, vmf->address);
		return LAF_VM_FAULT_FALLBACK;
	}
	{
		struct page *head = pfn_to_page(mm, pte_pfn(pmd->val));

		/*
		 * PageAnonExclusive head: reuse.  Else reuse only with the one
		 * reference of this PMD mapping (folio_move_anon_rmap() and
		 * SetPageAnonExclusive()); a THP still mapped elsewhere (after
		 * fork) is split and the fault falls back to the PTE level,
		 * where do_wp_page() copies the page.
		 */
		if (!(head->flags & PG_anon_exclusive)) {
			if (head->refcount != 1) {
				__split_huge_pmd(mm, vma, pmd, vmf->address);
				return LAF_VM_FAULT_FALLBACK;
			}
			head->flags |= PG_anon_exclusive;
		}
	}
	pmd->val |= LAF_PTE_YOUNG | LAF_PTE_DIRTY |
		    ((vma->vm_flags & LAF_VM_WRITE) ? LAF_PTE_WRITE : 0);
	mm->st.faults_pmd++;
	vmf->kind = LAF_FK_PMD_WP;
	return 0;
}

/**
 * __split_huge_pmd - turn a huge PMD into a PTE table mapping the same pages
 *
 * thp_split_pmd++.  The deposited table is withdrawn and filled: 512 (PTRS)
 * zero-page PTEs for a huge zero PMD (__split_huge_zero_page_pmd()), or the
 * THP's pages (refcount += nr - 1, nr PTE mappings added - each page
 * AnonExclusive if the head was - then the PMD mapping removed).
 * Touched bits stay in place; uffd-wp and pte_protnone() carry over.  The folio itself is not split.
 */
void __split_huge_pmd(struct laf_mm *mm, struct laf_vma *vma, pmd_t *pmd, uint64_t address)
{
	uint64_t haddr = align_down(address, mm->pmd_size);
	unsigned int i, nr = mm->ptrs_per_pte;
	pte_t *ptes = pmd->ptes, keep_wp = pmd->val & (LAF_PTE_UFFD_WP | LAF_PTE_PROTNONE);
	uint64_t pfn = pte_pfn(pmd->val);

	(void)vma;
	if (!pmd_trans_huge(pmd))
		return;
	mm->st.thp_split_pmd++;
	if (pmd->val & LAF_PTE_SPECIAL) {
		for (i = 0; i < nr; i++)
			ptes[i] = pfn_pte(mm->machine->zero_pfn, LAF_PTE_PRESENT | LAF_PTE_SPECIAL |
					  LAF_PTE_YOUNG) | keep_wp | (ptes[i] & LAF_PTE_TOUCHED);
		mm->st.ptes_written += nr;
		mm->st.per_page_ops += nr;
		mm->st.zero_page_maps += nr;
		pfn_to_page(mm, pfn)->refcount--;
		pfn_to_page(mm, pfn)->mapcount--;
		pmd->val = 0;
		return;
	} else {
		struct page *head = pfn_to_page(mm, pfn);
		pte_t bits = (pmd->val & (LAF_PTE_WRITE | LAF_PTE_DIRTY | LAF_PTE_YOUNG |
					  LAF_PTE_UFFD_WP | LAF_PTE_PROTNONE)) | LAF_PTE_PRESENT;
		pte_t touched[1];
		pte_t *save = malloc(nr * sizeof(pte_t));

		(void)touched;
		/* folio_ref_add(), folio_add_anon_rmap_ptes(), folio_remove_rmap_pmd() */
		head->refcount += (int32_t)nr - 1;
		folio_add_anon_rmap_ptes(mm, pfn, pfn, nr, head->flags & PG_anon_exclusive);
		folio_remove_rmap_pmd(mm, pfn);
		if (save)
			for (i = 0; i < nr; i++)
				save[i] = ptes[i] & LAF_PTE_TOUCHED;
		set_ptes(mm, haddr, ptes, pfn_pte(pfn, bits), nr);
		if (save) {
			for (i = 0; i < nr; i++)
				ptes[i] |= save[i];
			free(save);
		}
		pmd->val = 0;
	}
}

/* vma_adjust_trans_huge(): a new VMA boundary inside a huge PMD splits it */
void split_huge_pmd_address(struct laf_mm *mm, struct laf_vma *vma, uint64_t address)
{
	pmd_t *pmd;

	if (!(address & (mm->pmd_size - 1)))
		return;
	pmd = pmd_offset(mm, address);
	if (pmd && pmd_trans_huge(pmd))
		__split_huge_pmd(mm, vma, pmd, address);
}

/**
 * zap_huge_pmd - unmap a whole huge PMD; free its deposited table
 */
void zap_huge_pmd(struct laf_mm *mm, pmd_t *pmd)
{
	uint64_t pfn = pte_pfn(pmd->val);
	unsigned int i, nr = mm->ptrs_per_pte;
	bool zero = pmd->val & LAF_PTE_SPECIAL;

	for (i = 0; i < nr; i++)
		if (pmd->ptes[i] & LAF_PTE_TOUCHED) {
			if (zero)
				mm->st.zero_pages_touched--;
			else
				mm->st.pages_touched--;
		}
	free(pmd->ptes);
	pte_free(mm, pmd->table_pfn);
	mm->st.nr_ptes--;
	pmd->ptes = NULL;
	pmd->table_pfn = 0;
	pmd->val = 0;
	if (zero) {
		pfn_to_page(mm, pfn)->refcount--;
		pfn_to_page(mm, pfn)->mapcount--;
		return;
	}
	mm->st.mm_anonpages -= nr;
	folio_remove_rmap_pmd(mm, pfn);
	mm->st.per_folio_ops++;
	folio_put(mm, pfn);
}

/* Find the PTE mapping page @pfn at virtual @addr, or NULL. */
static pte_t *pte_for(struct laf_mm *mm, uint64_t addr)
{
	pmd_t *pmd = pmd_offset(mm, addr);

	if (!pmd || !pmd->ptes || pmd_trans_huge(pmd))
		return NULL;
	return &pmd->ptes[pte_index(mm, addr)];
}

/*
 * split_folio() of a PTE-mapped, partially mapped anon folio to order 0:
 * the rmap walk visits every mm of the machine (fork keeps addresses, so
 * the page at index + i is mapped at that address or not at all).  Mapped
 * pages become order-0 folios (refcount = mapcount = the PTEs mapping them,
 * AnonExclusive kept, own index), unmapped ones are freed.  Counts
 * split[order] (thp_split_page for PMD-mappable folios) in @mm, the caller.
 * PTE_CONT is cleared: the kernel remaps the pages one by one through
 * migration entries.
 */
static void split_anon_folio(struct laf_mm *mm, uint64_t head_pfn)
{
	struct laf_machine *m = mm->machine;
	struct page *head = pfn_to_page(mm, head_pfn);
	unsigned int order = page_order(head), nr = 1u << order, i;
	uint64_t index = folio_index(head);
	bool charged = head->flags & PG_memcg, lru = head->flags & PG_lru;

	mm->st.split[order]++;
	if (order >= mm->pmd_order)
		mm->st.thp_split_page++;
	m->gauges.nr_anon[order]--;
	if (head->flags & PG_partially_mapped)
		m->gauges.nr_anon_partially_mapped[order]--;
	if (lru)
		m->gauges.lru_pages -= nr;
	if (charged)
		m->memcg_charged -= nr;

	for (i = 0; i < nr; i++) {
		uint64_t pfn = head_pfn + i;
		uint64_t va = (index + i) << mm->page_shift;
		struct page *p = pfn_to_page(mm, pfn);
		uint32_t excl = p->flags & PG_anon_exclusive;
		int32_t maps = 0;
		size_t k;

		for (k = 0; k < m->nr_mms; k++) {
			pte_t *ptep = pte_for(m->mms[k], va);

			if (ptep && pte_present(*ptep) && !pte_special(*ptep) && pte_pfn(*ptep) == pfn) {
				*ptep &= ~(pte_t)LAF_PTE_CONT;
				maps++;
			}
		}
		if (maps) {
			p->flags = PG_head | PG_anon | excl | (lru ? PG_lru : 0) |
				   (charged ? PG_memcg : 0);
			p->refcount = maps;
			p->mapcount = maps;
			folio_set_index(p, index + i);
			if (lru)
				m->gauges.lru_pages++;
			if (charged)
				m->memcg_charged++;
		} else {
			p->flags = 0;
			p->refcount = 0;
			p->mapcount = 0;
			p->index = 0;
			__free_pages_ok(m, pfn, 0);
		}
	}
}

/**
 * deferred_split_scan - the deferred-split shrinker
 *
 * Splits every queued folio that is still partially mapped (freeing its
 * unmapped pages).  Run by laf_shrink_deferred_split() and, as direct
 * reclaim would, when an order-0 allocation or charge fails.  The queue is
 * the machine's; counters go to @mm, the mm that ran it.
 * Return: number of folios split.
 */
uint64_t deferred_split_scan(struct laf_mm *mm)
{
	struct laf_machine *m = mm->machine;
	struct deferred_split *q = &m->deferred;
	uint64_t done = 0;
	size_t i;

	for (i = 0; i < q->nr; i++) {
		uint32_t pfn = q->pfns[i];
		struct page *head = pfn_to_page(mm, pfn);

		if (!(head->flags & PG_head) || !(head->flags & PG_deferred_queued))
			continue;	/* freed (and maybe reused) since queued */
		head->flags &= ~PG_deferred_queued;
		m->gauges.deferred_split_queue--;
		if (head->flags & PG_partially_mapped) {
			split_anon_folio(mm, pfn);
			done++;
		}
	}
	q->nr = 0;
	return done;
}

/**
 * copy_huge_pmd - fork: share a huge PMD with the child
 * @dst: child mm; @src: parent mm
 * @dst_pmd: the child's (none) PMD entry; @src_pmd: the parent's huge PMD
 *
 * Dup of mm/huge_memory.c (6.18), anon VMAs: a PTE table is preallocated
 * and deposited for the child (mm_inc_nr_ptes(); failure is -ENOMEM).
 * Huge zero PMD: mm_get_huge_zero_folio(dst) (one more reference and
 * mapping of the machine's huge zero folio).  Anon THP: folio_get() and
 * folio_try_dup_anon_rmap_pmd() (never fails: no GUP pins), RSS += nr in
 * the child, pmdp_set_wrprotect() on the parent.  The child's entry is
 * write-protected, old, and loses uffd-wp (the child VMA has no uffd).
 * Return: 0 or LAF_ENOMEM.
 */
int copy_huge_pmd(struct laf_mm *dst, struct laf_mm *src, pmd_t *dst_pmd, pmd_t *src_pmd,
		  uint64_t addr, struct laf_vma *dst_vma, struct laf_vma *src_vma)
{
	uint32_t table = pte_alloc_one(dst);
	uint64_t pfn = pte_pfn(src_pmd->val);
	struct page *head = pfn_to_page(src, pfn);

	(void)addr;
	(void)dst_vma;
	(void)src_vma;
	if (table == NO_PFN)
		return LAF_ENOMEM;
	if (deposit_pgtable(dst, dst_pmd, table)) {
		pte_free(dst, table);
		return LAF_ENOMEM;
	}
	if (src_pmd->val & LAF_PTE_SPECIAL) {
		head->refcount++;
		head->mapcount++;
	} else {
		head->refcount++;			/* folio_get() */
		folio_try_dup_anon_rmap_pmd(dst, pfn);
		dst->st.mm_anonpages += 1LL << dst->pmd_order;
		update_hiwater_rss(dst);
		src_pmd->val &= ~(pte_t)LAF_PTE_WRITE;	/* pmdp_set_wrprotect() */
	}
	dst_pmd->val = src_pmd->val & ~(pte_t)(LAF_PTE_WRITE | LAF_PTE_YOUNG | LAF_PTE_UFFD_WP);
	dst->st.per_folio_ops++;
	return 0;
}
