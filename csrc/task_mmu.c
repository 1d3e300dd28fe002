// SPDX-License-Identifier: GPL-2.0
/*
 * task_mmu.c - reading the page tables from outside: the entry and the folio
 * at an address (laf_lookup()), raw entries of a range (laf_read_ptes()).
 *
 * Stands in for fs/proc/task_mmu.c pagemap_read() (/proc/PID/pagemap: one
 * entry per page, a PMD leaf reported per base page, pagemap_pmd_range())
 * joined with fs/proc/page.c kpageflags (the folio's flags, order and
 * counts).  Simplified: the emulator's own PTE encoding is returned, not the
 * pagemap bit layout; no locks (the caller holds the mm's busy flag).
 */
#include "laf_internal.h"

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

/* The folio state kpageflags and /proc/kpagecount would show, from its head page. */
static void fill_folio_info(struct laf_mm *mm, uint64_t head, struct laf_folio_info *fi)
{
	struct page *p = pfn_to_page(mm, head);

	fi->head_pfn = head;
	fi->index = folio_index(p);
	fi->order = (int32_t)page_order(p);
	fi->refcount = p->refcount;
	fi->mapcount = (p->flags & PG_huge_zero) ? p->mapcount : folio_mapcount(p);
	fi->flags = ((p->flags & PG_anon) ? LAF_FOLIO_ANON : 0) |
		    ((p->flags & PG_lru) ? LAF_FOLIO_LRU : 0) |
		    ((p->flags & PG_pmd_mapped) ? LAF_FOLIO_PMD_MAPPED : 0) |
		    ((p->flags & PG_partially_mapped) ? LAF_FOLIO_PARTIALLY_MAPPED : 0) |
		    ((p->flags & PG_huge_zero) ? LAF_FOLIO_HUGE_ZERO : 0);
}

/**
 * __laf_lookup - the entry mapping @addr and its folio
 * @pte: (optional) the entry, a huge PMD shown per page
 * @fi: (optional) the folio's state; order LAF_ORDER_NONE when nothing or the
 *      small zero page maps @addr
 * Return: 0, or LAF_EINVAL for @addr >= TASK_SIZE.
 */
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
		fi->order = LAF_ORDER_NONE;
		if (pte_present(e) && !(pte_special(e) && !(e & LAF_PTE_HUGE)))
			fill_folio_info(mm, compound_head_pfn(mm, pte_pfn(e)), fi);
	}
	return 0;
}

/**
 * read_ptes - raw entries for @npages pages from @start
 * @ptes: (optional) the entry per page, a huge PMD shown per page
 * @orders: (optional) the folio order per page, or LAF_ORDER_NONE /
 *          LAF_ORDER_ZERO / LAF_ORDER_HUGE_ZERO
 *
 * pagemap_read()'s range check: @start page-aligned and below TASK_SIZE,
 * the range ends at or below TASK_SIZE (checked without overflow).
 * Return: 0 or LAF_EINVAL.
 */
int read_ptes(struct laf_mm *mm, uint64_t start, size_t npages, uint64_t *ptes,
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
