// SPDX-License-Identifier: GPL-2.0
/*
 * pgtable.c - emulated page tables: PMD tables, PTE tables, set_ptes(),
 * free_pgd_range().
 *
 * Layout: pgd[va >> PUD_SHIFT] points at a PMD table of PTRS_PER_PMD entries
 * (allocated on first use, host memory only, counted in nr_pmds); a PMD
 * entry is none, a PTE table (PTRS_PER_PTE entries, backed by one emulated
 * frame, counted in nr_ptes), or a huge leaf with its deposited PTE table.
 * Because PTE tables exist exactly when the kernel would have them, the rule
 * "a PMD THP only if the PMD is none" emerges by itself.
 */
#include <stdlib.h>

#include "laf_internal.h"

/*
 * pmd_alloc(): the PMD entry for @addr, allocating the PMD table on first
 * use.  An address at or above TASK_SIZE has no PGD slot: NULL, as
 * pmd_offset() gives (callers check their ranges first; this is the bound
 * check of the walk itself).
 */
static pmd_t *pmd_table_alloc(struct laf_mm *mm, uint64_t addr)
{
	size_t i;
	struct pmd_table *t;

	if (unlikely(addr >= mm->task_size))
		return NULL;
	i = addr >> mm->pud_shift;
	LAF_BUG_ON(i >= mm->pgd_entries);
	t = mm->pgd[i];

	if (!t) {
		t = calloc(mm->ptrs_per_pte, sizeof(pmd_t));
		if (!t)
			return NULL;
		mm->pgd[i] = t;
		mm->st.nr_pmds++;
	}
	return &t->e[(addr >> mm->pmd_shift) & (mm->ptrs_per_pte - 1)];
}

/**
 * pmd_offset_alloc - the PMD entry for @addr, allocating the PMD table
 * Return: the entry, or NULL if host memory ran out (VM_FAULT_OOM) or
 * @addr >= TASK_SIZE.
 */
pmd_t *pmd_offset_alloc(struct laf_mm *mm, uint64_t addr)
{
	return pmd_table_alloc(mm, addr);
}

/**
 * pmd_offset - the PMD entry for @addr, or NULL if no PMD table exists
 */
pmd_t *pmd_offset(struct laf_mm *mm, uint64_t addr)
{
	struct pmd_table *t;

	if (addr >= mm->task_size)
		return NULL;
	t = mm->pgd[addr >> mm->pud_shift];
	if (!t)
		return NULL;
	return &t->e[(addr >> mm->pmd_shift) & (mm->ptrs_per_pte - 1)];
}

/**
 * __pte_alloc - populate a none PMD with a fresh, empty PTE table
 * Return: 0, or LAF_ENOMEM if no emulated frame (or host memory) is left.
 */
int __pte_alloc(struct laf_mm *mm, pmd_t *pmd)
{
	uint32_t pfn = pte_alloc_one(mm);
	pte_t *ptes;

	if (pfn == NO_PFN)
		return LAF_ENOMEM;
	ptes = calloc(mm->ptrs_per_pte, sizeof(pte_t));
	if (!ptes) {
		pte_free(mm, pfn);
		return LAF_ENOMEM;
	}
	pmd->val = 0;
	pmd->ptes = ptes;
	pmd->table_pfn = pfn;
	mm->st.nr_ptes++;	/* mm_inc_nr_ptes() */
	return 0;
}

/**
 * set_ptes - map @nr consecutive pages of one folio with one call
 * @mm: the address space
 * @addr: virtual address of the first page
 * @ptep: first PTE
 * @pte: entry for the first page; page i gets pfn + i, same bits
 * @nr: number of pages
 *
 * Context: the kernel's contract: all @nr PTEs are none (or, nr == 1, being
 * replaced), belong to one folio, lie in one PTE table and share one prot.
 *
 * Generic: writes @nr entries.  arm64 (dup of contpte_set_ptes()): each
 * contpte block fully covered by the batch whose VA start, VA end and PA
 * are CONT_PTE_SIZE-aligned gets PTE_CONT.  Single-PTE folding
 * (contpte_try_fold()) needs a large folio written one PTE at a time, which
 * no emulated path does; it is not emulated.
 */
/* arm64 contpte_set_ptes(): out of line, so the generic set_ptes() stays a leaf */
static __attribute__((noinline)) void contpte_set_ptes(struct laf_mm *mm, uint64_t addr,
							pte_t *ptep, pte_t pte, unsigned int nr)
{
	unsigned int cont = 1u << mm->cont_pte_order, i;
	uint64_t vpn = addr >> mm->page_shift, pfn = pte_pfn(pte);
	pte_t bits = pte & ((1ULL << LAF_PTE_PFN_SHIFT) - 1);
	unsigned int done = 0;

	while (done < nr) {
		uint64_t v = vpn + done, p = pfn + done;
		unsigned int n = cont - (unsigned int)(v & (cont - 1));
		pte_t b = bits;

		if (n > nr - done)
			n = nr - done;
		if (n == cont && !(p & (cont - 1))) {
			b |= LAF_PTE_CONT;
			mm->st.contpte_blocks++;
		}
		for (i = 0; i < n; i++)
			ptep[done + i] = pfn_pte(p + i, b);
		done += n;
	}
}

void set_ptes(struct laf_mm *mm, uint64_t addr, pte_t *ptep, pte_t pte, unsigned int nr)
{
	uint64_t pfn_step = 1ULL << LAF_PTE_PFN_SHIFT;
	unsigned int i;

	LAF_BUG_ON(nr == 0 || pte_index(mm, addr) + nr > mm->ptrs_per_pte);
	mm->st.set_ptes_calls++;
	mm->st.ptes_written += nr;
	mm->st.per_page_ops += nr;
	mm->st.per_folio_ops++;

	if (nr == 1) {
		*ptep = pte;
		return;
	}
	if (unlikely(mm->cont_pte_order)) {
		contpte_set_ptes(mm, addr, ptep, pte, nr);
		return;
	}
	for (i = 0; i + 4 <= nr; i += 4, pte += 4 * pfn_step) {
		ptep[i] = pte;
		ptep[i + 1] = pte + pfn_step;
		ptep[i + 2] = pte + 2 * pfn_step;
		ptep[i + 3] = pte + 3 * pfn_step;
	}
	for (; i < nr; i++, pte += pfn_step)
		ptep[i] = pte;
}

static void free_pte_range(struct laf_mm *mm, pmd_t *pmd)
{
	unsigned int i;

	if (pmd_none(pmd))
		return;
	LAF_BUG_ON(pmd_trans_huge(pmd));
	for (i = 0; i < mm->ptrs_per_pte; i++)
		LAF_BUG_ON(!pte_none(pmd->ptes[i]));
	free(pmd->ptes);
	pte_free(mm, pmd->table_pfn);
	pmd->ptes = NULL;
	pmd->val = 0;
	pmd->table_pfn = 0;
	mm->st.nr_ptes--;	/* mm_dec_nr_ptes() */
}

/**
 * free_pgd_range - free the PTE tables of an unmapped range
 * @addr: start of the unmapped range
 * @end: end of the unmapped range
 * @floor: end of the previous VMA (0 if none)
 * @ceiling: start of the next VMA (0 if none: top of the address space)
 *
 * Dup of the PMD-level arithmetic of mm/memory.c free_pgd_range(): a PTE
 * table is freed only if no remaining VMA can use it.  PMD tables are kept
 * (host memory only).
 */
void free_pgd_range(struct laf_mm *mm, uint64_t addr, uint64_t end,
		    uint64_t floor, uint64_t ceiling)
{
	uint64_t pmd_mask = ~(mm->pmd_size - 1);

	addr &= pmd_mask;
	if (addr < floor) {
		addr += mm->pmd_size;
		if (!addr)
			return;
	}
	if (ceiling) {
		ceiling &= pmd_mask;
		if (!ceiling)
			return;
	}
	if (end - 1 > ceiling - 1)
		end -= mm->pmd_size;
	if (addr > end - 1)
		return;
	/* free_pud_range(): one free_pmd_range() per PUD range */
	while (addr < end) {
		uint64_t pud_size = 1ULL << mm->pud_shift;
		uint64_t start = addr & ~(pud_size - 1);
		uint64_t next = start + pud_size;
		uint64_t pceil = ceiling & ~(pud_size - 1);
		size_t gi = addr >> mm->pud_shift;

		if (!next || next - 1 >= end - 1)
			next = end;
		for (; addr < next; addr += mm->pmd_size) {
			pmd_t *pmd = pmd_offset(mm, addr);

			if (pmd)
				free_pte_range(mm, pmd);
			if (addr + mm->pmd_size < addr)
				return;
		}
		addr = next;
		/*
		 * free_pmd_range() tail: the PMD table goes too when no VMA can
		 * use its PUD range (mm_dec_nr_pmds()).
		 */
		if (start < floor || (ceiling && !pceil) || next - 1 > pceil - 1)
			continue;
		if (gi < mm->pgd_entries && mm->pgd[gi]) {
			unsigned int j;

			for (j = 0; j < mm->ptrs_per_pte; j++)
				if (!pmd_none(&mm->pgd[gi]->e[j]))
					break;
			if (j < mm->ptrs_per_pte)
				continue;	/* cannot happen: the kernel's floor/ceiling guarantee it */
			free(mm->pgd[gi]);
			mm->pgd[gi] = NULL;
			mm->st.nr_pmds--;
		}
	}
}

/* Teardown of the whole mm: every table and its frame. */
void free_all_pgtables(struct laf_mm *mm)
{
	size_t i;
	unsigned int j;

	if (!mm->pgd)
		return;
	for (i = 0; i < mm->pgd_entries; i++) {
		struct pmd_table *t = mm->pgd[i];

		if (!t)
			continue;
		for (j = 0; j < mm->ptrs_per_pte; j++) {
			pmd_t *pmd = &t->e[j];

			if (pmd->ptes) {
				free(pmd->ptes);
				pte_free(mm, pmd->table_pfn);
				mm->st.nr_ptes--;
			}
		}
		free(t);
		mm->st.nr_pmds--;
		mm->pgd[i] = NULL;
	}
}
