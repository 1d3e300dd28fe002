// SPDX-License-Identifier: GPL-2.0
/*
 * mprotect.c - mprotect() (mm/mprotect.c, Linux 6.18): do_mprotect_pkey(),
 * mprotect_fixup(), change_protection() -> change_pmd_range() ->
 * change_pte_range() / change_huge_pmd() (mm/huge_memory.c).
 * Rules in docs/kernel-semantics.md §4 and §6.4; the pure-Python reference
 * (pylaf/reference/mprotect.py) follows the same functions.
 *
 * Modelling choices (every emulated VMA is private anonymous with
 * VM_MAY{READ,WRITE,EXEC}):
 *  - no EACCES (VM_MAY* always set), no mseal (EPERM), no
 *    memory-deny-write-execute, no PROT_GROWS*, no pkeys, no RLIMIT_DATA or
 *    overcommit refusal, no VM_LOCKED populate;
 *  - a private mapping's vm_page_prot is never writable (PAGE_COPY):
 *    pte_modify() clears the write bit of every entry and write permission
 *    only comes back through MM_CP_TRY_CHANGE_WRITABLE
 *    (can_change_pte_writable(): a PageAnonExclusive page);
 *  - PROT_NONE entries are pte_protnone() (LAF_PTE_PROTNONE: present, but the
 *    MMU allows no access); an access there fails access_error() first
 *    (SIGSEGV, counted in faults_sigsegv, memory.c);
 *  - no soft-dirty (CONFIG_MEM_SOFT_DIRTY off, §0), no NUMA hinting
 *    (MM_CP_PROT_NUMA), no swap or migration entries, no TLB flush cost;
 *  - the PTE writes of prot_commit_flush_ptes() are not counted in
 *    set_ptes_calls / ptes_written (those count the fault path's set_ptes()).
 */
#include "laf_internal.h"

#define VM_ACCESS_FLAGS (LAF_VM_READ | LAF_VM_WRITE | LAF_VM_EXEC)
#define PTE_FLAG_MASK ((1ULL << LAF_PTE_PFN_SHIFT) - 1)
/*
 * The bits folio_pte_batch_flags(FPB_RESPECT_SOFT_DIRTY | FPB_RESPECT_WRITE)
 * lets differ inside a batch: young and dirty (and the emulator's TOUCHED).
 */
#define BATCH_IGNORES (LAF_PTE_YOUNG | LAF_PTE_DIRTY | LAF_PTE_TOUCHED)

/**
 * pte_modify - pte_modify(pte, vm_page_prot) of a private anonymous mapping
 *
 * Never writable; pte_protnone() when the VMA allows no access; young,
 * dirty, special, uffd-wp (and TOUCHED, PTE_CONT, the PFN) are kept
 * (_PAGE_CHG_MASK).  Also used for the PMD leaf (pmd_modify()).
 */
static inline pte_t pte_modify(pte_t pte, const struct laf_vma *vma)
{
	pte &= ~(pte_t)(LAF_PTE_WRITE | LAF_PTE_PROTNONE);
	if (!(vma->vm_flags & VM_ACCESS_FLAGS))
		pte |= LAF_PTE_PROTNONE;
	return pte;
}

/*
 * maybe_change_pte_writable() - not pte_protnone(), no soft-dirty tracking
 * (not configured) and not uffd-wp-tracked (userfaultfd_pte_wp(): the bit
 * in a VMA registered for WP).
 */
static inline bool maybe_change_pte_writable(const struct laf_vma *vma, pte_t pte)
{
	if (pte & LAF_PTE_PROTNONE)
		return false;
	return !((pte & LAF_PTE_UFFD_WP) && (vma->vm_flags & LAF_VM_UFFD_WP));
}

/**
 * change_huge_pmd - mm/huge_memory.c change_huge_pmd() on a PMD leaf the
 * range covers whole
 * @try_writable: MM_CP_TRY_CHANGE_WRITABLE
 *
 * pmd_modify() in place; writable again when can_change_pmd_writable():
 * maybe_change_pte_writable(), a normal anon folio (never the huge zero
 * folio) whose head page is PageAnonExclusive.
 */
static void change_huge_pmd(struct laf_mm *mm, const struct laf_vma *vma, pmd_t *pmd,
			    bool try_writable)
{
	pte_t val = pte_modify(pmd->val, vma);

	if (try_writable && maybe_change_pte_writable(vma, val) && !(val & LAF_PTE_SPECIAL) &&
	    (pfn_to_page(mm, pte_pfn(val))->flags & PG_anon_exclusive))
		val |= LAF_PTE_WRITE;
	pmd->val = val;
}

/*
 * mprotect_folio_pte_batch() - how many entries from @i (below @iend) map
 * consecutive pages of @pfn's large folio with the same bits but
 * BATCH_IGNORES (PTE_CONT included in the comparison).  *@head gets the
 * folio (vm_normal_page(); NO_PFN for the zero page, a batch of one).
 */
static unsigned int mprotect_folio_pte_batch(struct laf_mm *mm, const pte_t *ptes,
					     unsigned int i, unsigned int iend, uint64_t *head)
{
	pte_t pte = ptes[i], want = pte & PTE_FLAG_MASK & ~(pte_t)BATCH_IGNORES;
	uint64_t pfn = pte_pfn(pte), fend;
	unsigned int n = 1;

	if (pte_special(pte)) {
		*head = NO_PFN;
		return 1;
	}
	*head = compound_head_pfn(mm, pfn);
	fend = *head + (1ULL << page_order(pfn_to_page(mm, *head)));
	while (i + n < iend && pfn + n < fend && pte_pfn(ptes[i + n]) == pfn + n &&
	       (ptes[i + n] & PTE_FLAG_MASK & ~(pte_t)BATCH_IGNORES) == want)
		n++;
	return n;
}

/*
 * modify_prot_start_ptes() - the first entry with the young and dirty bits
 * of the whole batch (get_and_clear_ptes()); arm64 unfolds the contpte
 * blocks the batch covers in part (contpte_try_unfold_partial()).
 */
static pte_t modify_prot_start_ptes(struct laf_mm *mm, pte_t *ptes, unsigned int i,
				    unsigned int nr)
{
	pte_t pte;
	unsigned int k;

	if (mm->cont_pte_order) {
		unsigned int mask = (1u << mm->cont_pte_order) - 1;

		if (i & mask)
			contpte_unfold_block(mm, ptes, i);
		if ((i + nr) & mask)
			contpte_unfold_block(mm, ptes, i + nr - 1);
	}
	pte = ptes[i];
	for (k = 1; k < nr; k++)
		pte |= ptes[i + k] & (LAF_PTE_YOUNG | LAF_PTE_DIRTY);
	return pte;
}

/*
 * contpte_foldable() - the cont_nr entries from @b map consecutive pages of
 * one folio with the same bits (but young, dirty, TOUCHED).
 */
static bool contpte_foldable(struct laf_mm *mm, const pte_t *ptes, unsigned int b,
			     unsigned int cn)
{
	pte_t last = ptes[b + cn - 1], ref = last & PTE_FLAG_MASK & ~(pte_t)BATCH_IGNORES;
	uint64_t first = pte_pfn(last) - (cn - 1), head = compound_head_pfn(mm, pte_pfn(last));
	unsigned int k;

	if (head > first || head + (1ULL << page_order(pfn_to_page(mm, head))) < first + cn)
		return false;
	for (k = 0; k < cn; k++) {
		pte_t p = ptes[b + k];

		if (!pte_present(p) || pte_pfn(p) != first + k ||
		    (p & PTE_FLAG_MASK & ~(pte_t)BATCH_IGNORES) != ref)
			return false;
	}
	return true;
}

/*
 * contpte_try_fold() - arm64, after a single-entry set_ptes() of @i: fold
 * its block when @i is the block's last entry, maps the last page of an
 * aligned block of PFNs, and the whole block is foldable.
 */
static void contpte_try_fold(struct laf_mm *mm, pte_t *ptes, unsigned int i)
{
	unsigned int cn = 1u << mm->cont_pte_order, mask = cn - 1, k;
	pte_t pte = ptes[i];

	if ((i & mask) != mask || (pte_pfn(pte) & mask) != mask)
		return;
	if (!pte_present(pte) || (pte & (LAF_PTE_CONT | LAF_PTE_SPECIAL)))
		return;
	if (!contpte_foldable(mm, ptes, i - mask, cn))
		return;
	for (k = 0; k < cn; k++)
		ptes[i - mask + k] |= LAF_PTE_CONT;
	mm->st.contpte_blocks++;
}

/*
 * contpte_refold() - arm64 set_ptes() of @nr entries from @i, already
 * written: nr == 1 is contpte_try_fold(); else contpte_set_ptes() sets
 * PTE_CONT on every whole block inside the range whose first PFN is
 * block-aligned (counted) and clears it elsewhere in the range.
 */
static void contpte_refold(struct laf_mm *mm, pte_t *ptes, unsigned int i, unsigned int nr)
{
	unsigned int cn = 1u << mm->cont_pte_order, b, k;

	if (nr == 1) {
		ptes[i] &= ~(pte_t)LAF_PTE_CONT;
		contpte_try_fold(mm, ptes, i);
		return;
	}
	for (k = i; k < i + nr; k++)
		ptes[k] &= ~(pte_t)LAF_PTE_CONT;
	for (b = (i + cn - 1) & ~(cn - 1); b + cn <= i + nr; b += cn) {
		if (pte_pfn(ptes[b]) & (cn - 1))
			continue;
		for (k = b; k < b + cn; k++)
			ptes[k] |= LAF_PTE_CONT;
		mm->st.contpte_blocks++;
	}
}

/*
 * prot_commit_flush_ptes() -> modify_prot_commit_ptes() = set_ptes():
 * @ptent (pte_mkwrite() when @set_write) with advancing PFNs over @nr
 * entries from @i; each page keeps its own TOUCHED bit; arm64 refolds.
 */
static void prot_commit_flush_ptes(struct laf_mm *mm, pte_t *ptes, unsigned int i,
				   unsigned int nr, pte_t ptent, bool set_write)
{
	pte_t bits = (ptent & PTE_FLAG_MASK & ~(pte_t)LAF_PTE_TOUCHED) |
		     (set_write ? LAF_PTE_WRITE : 0);
	uint64_t pfn = pte_pfn(ptent);
	unsigned int k;

	for (k = 0; k < nr; k++)
		ptes[i + k] = pfn_pte(pfn + k, bits) | (ptes[i + k] & LAF_PTE_TOUCHED);
	if (mm->cont_pte_order)
		contpte_refold(mm, ptes, i, nr);
}

/*
 * commit_anon_folio_batch() - sub-batches of equal PageAnonExclusive
 * (page_anon_exclusive_sub_batch()); can_change_pte_writable() makes the
 * exclusive ones writable, the others (shared since fork) stay
 * write-protected, so their next write is a do_wp_page() fault.
 */
static void commit_anon_folio_batch(struct laf_mm *mm, pte_t *ptes, unsigned int i,
				    unsigned int nr, pte_t ptent)
{
	uint64_t pfn = pte_pfn(ptent);
	unsigned int k = 0;

	while (k < nr) {
		bool excl = pfn_to_page(mm, pfn + k)->flags & PG_anon_exclusive;
		unsigned int n = 1;

		while (k + n < nr &&
		       !!(pfn_to_page(mm, pfn + k + n)->flags & PG_anon_exclusive) == excl)
			n++;
		prot_commit_flush_ptes(mm, ptes, i + k, n,
				       ptent + ((pte_t)k << LAF_PTE_PFN_SHIFT), excl);
		k += n;
	}
}

/**
 * change_pte_range - mm/mprotect.c change_pte_range() over entries
 * [@i, @iend) of one PTE table
 * @try_writable: MM_CP_TRY_CHANGE_WRITABLE (the VMA is VM_WRITE)
 *
 * Batch by batch (mprotect_folio_pte_batch()): modify_prot_start_ptes(),
 * pte_modify(); with MM_CP_TRY_CHANGE_WRITABLE and an entry left read-only,
 * set_write_prot_commit_flush_ptes(): a batch of a normal anon folio (not
 * the zero page) that maybe_change_pte_writable() allows goes page by page
 * on PageAnonExclusive; everything else is prot_commit_flush_ptes()
 * read-only.  None entries are skipped (no table is allocated).
 */
static void change_pte_range(struct laf_mm *mm, const struct laf_vma *vma, pte_t *ptes,
			     unsigned int i, unsigned int iend, bool try_writable)
{
	while (i < iend) {
		uint64_t head;
		unsigned int nr;
		pte_t ptent;

		if (pte_none(ptes[i])) {
			i++;
			continue;
		}
		nr = mprotect_folio_pte_batch(mm, ptes, i, iend, &head);
		ptent = pte_modify(modify_prot_start_ptes(mm, ptes, i, nr), vma);
		if (try_writable && !pte_write(ptent) && head != NO_PFN &&
		    maybe_change_pte_writable(vma, ptent))
			commit_anon_folio_batch(mm, ptes, i, nr, ptent);
		else
			prot_commit_flush_ptes(mm, ptes, i, nr, ptent, false);
		i += nr;
	}
}

/**
 * change_protection - mm/mprotect.c change_protection() -> change_pmd_range()
 * over [@start, @end) of @vma (its flags already the new ones)
 *
 * Per PMD: a PMD leaf the range covers whole goes to change_huge_pmd(), one
 * covered in part is split (__split_huge_pmd()) and falls through to
 * change_pte_range(); no table: nothing to do.
 */
static void change_protection(struct laf_mm *mm, struct laf_vma *vma, uint64_t start,
			      uint64_t end, bool try_writable)
{
	uint64_t addr = start;

	while (addr < end) {
		uint64_t next = align_down(addr, mm->pmd_size) + mm->pmd_size;
		pmd_t *pmd = pmd_offset(mm, addr);

		if (next > end || !next)
			next = end;
		if (pmd && pmd_trans_huge(pmd)) {
			if (next - addr == mm->pmd_size) {
				change_huge_pmd(mm, vma, pmd, try_writable);
				addr = next;
				continue;
			}
			__split_huge_pmd(mm, vma, pmd, addr);
		}
		if (pmd && pmd->ptes && !pmd_trans_huge(pmd))
			change_pte_range(mm, vma, pmd->ptes, pte_index(mm, addr),
					 pte_index(mm, addr) + (unsigned int)((next - addr) >> mm->page_shift),
					 try_writable);
		addr = next;
	}
}

/**
 * mprotect_fixup - mm/mprotect.c mprotect_fixup() of [@start, @end) inside @vma
 *
 * Nothing when the flags do not change; VM_ACCOUNT is gained by becoming
 * writable (unless already accounted or writable) and lost by becoming
 * read-only without an anon_vma; vma_modify_flags() splits (refused by
 * max_map_count: -ENOMEM) and merges; change_protection() with
 * MM_CP_TRY_CHANGE_WRITABLE when VM_WRITE
 * (vma_wants_manual_pte_write_upgrade() of a private mapping).
 * Return: 0 or LAF_ENOMEM.
 */
static int mprotect_fixup(struct laf_mm *mm, struct laf_vma *vma, uint64_t start,
			  uint64_t end, uint64_t newflags)
{
	uint64_t oldflags = vma->vm_flags;
	int err;

	if (newflags == oldflags)
		return 0;
	if (newflags & LAF_VM_WRITE) {
		if (!(oldflags & (LAF_VM_ACCOUNT | LAF_VM_WRITE)))
			newflags |= LAF_VM_ACCOUNT;
	} else if ((oldflags & LAF_VM_ACCOUNT) && !vma->anon_vma) {
		newflags &= ~(uint64_t)LAF_VM_ACCOUNT;
	}
	vma = vma_modify_flags(mm, vma, start, end, newflags, &err);
	if (!vma)
		return err;
	change_protection(mm, vma, start, end, newflags & LAF_VM_WRITE);
	return 0;
}

/**
 * __laf_mprotect - mm/mprotect.c do_mprotect_pkey() with pkey -1
 * @prot: LAF_PROT_READ / WRITE / EXEC bits
 *
 * Argument rules in the kernel's order: @start not page aligned -> EINVAL;
 * @len == 0 -> 0; start + PAGE_ALIGN(len) wrapping (or PAGE_ALIGN wrapping
 * to 0) -> ENOMEM; unknown @prot bits (arch_validate_prot()) -> EINVAL; no
 * VMA at @start -> ENOMEM.  Each VMA of the range gets calc_vm_prot_bits()
 * | (vm_flags & ~VM_ACCESS_FLAGS) through mprotect_fixup(); a hole stops
 * the walk with ENOMEM after the VMAs below it were changed (no rollback).
 * Return: 0 or a negative LAF_E*.
 */
int __laf_mprotect(struct laf_mm *mm, uint64_t start, uint64_t len, int prot)
{
	uint64_t end, addr, vmprot;
	struct laf_vma *vma;

	if (start & (mm->page_size - 1))
		return LAF_EINVAL;
	if (!len)
		return 0;
	end = start + align_up(len, mm->page_size);
	if (end <= start)
		return LAF_ENOMEM;
	if (prot & ~(LAF_PROT_READ | LAF_PROT_WRITE | LAF_PROT_EXEC))
		return LAF_EINVAL;
	vmprot = (prot & LAF_PROT_READ ? LAF_VM_READ : 0) |
		 (prot & LAF_PROT_WRITE ? LAF_VM_WRITE : 0) |
		 (prot & LAF_PROT_EXEC ? LAF_VM_EXEC : 0);
	for (addr = start; addr < end;) {
		uint64_t cur_end;
		int err;

		vma = find_vma(mm, addr);
		if (!vma || vma->vm_start > addr)	/* a hole: vma->vm_start != tmp */
			return LAF_ENOMEM;
		cur_end = vma->vm_end < end ? vma->vm_end : end;
		err = mprotect_fixup(mm, vma, addr, cur_end,
				     vmprot | (vma->vm_flags & ~(uint64_t)VM_ACCESS_FLAGS));
		if (err)
			return err;
		addr = cur_end;
	}
	return 0;
}
