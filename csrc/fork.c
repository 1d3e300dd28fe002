// SPDX-License-Identifier: GPL-2.0
/*
 * fork.c - more address spaces on one machine: mm_alloc(), fork's
 * dup_mmap() / copy_page_range() (mm/mmap.c, mm/memory.c, 6.18) and
 * exit_mmap().
 *
 *   dup_mmap()
 *    └─ per parent VMA: VM_DONTCOPY → skipped; vm_area_dup(); anon_vma_fork();
 *       VM_WIPEONFORK → no anon_vma, no page tables; else copy_page_range()
 *        └─ vma_needs_copy()? (src anon_vma) per PMD:
 *            ├─ huge PMD  → copy_huge_pmd() (huge_memory.c)
 *            └─ PTE table → copy_pte_range() → copy_present_ptes()
 *                 (folio_pte_batch(), folio_try_dup_anon_rmap_ptes(),
 *                  write-protect in parent and child, zero-page PTEs as is)
 *
 * Simplified: no GUP pins, so folio_try_dup_anon_rmap_*() never fails and
 * no page is copied at fork; anon_vma_fork() gives every child VMA that
 * had an anon_vma a new one (no anon_vma reuse); an mm with userfaultfd
 * registrations cannot fork (LAF_ENOSYS: dup_userfaultfd() would drop them
 * and leave VMAs the emulator's merge invariant does not expect); memcg
 * and VM_ACCOUNT charging of the child are not emulated (one memcg).
 */
#include <stdlib.h>

#include "laf_internal.h"

/* mm_alloc_id - the lowest free MM id (the kernel's mm_id IDA) */
static uint32_t mm_alloc_id(struct laf_machine *m)
{
	uint32_t id;
	size_t k;

	for (id = MM_ID_DUMMY + 1; id <= MM_ID_MAX; id++) {
		for (k = 0; k < m->nr_mms; k++)
			if (m->mms[k]->mm_id == id)
				break;
		if (k == m->nr_mms)
			return id;
	}
	return MM_ID_DUMMY;
}

/**
 * mm_alloc - a new, empty address space on machine @m (mm_init())
 *
 * Copies the arch constants, takes the default mmap_base, an empty PGD,
 * an MM id, and joins the machine's list of mms.
 * Return: the mm, or NULL (host memory, or no free MM id).
 */
struct laf_mm *mm_alloc(struct laf_machine *m)
{
	struct laf_mm *mm;
	uint32_t id = mm_alloc_id(m);

	if (id == MM_ID_DUMMY)
		return NULL;
	if (m->nr_mms == m->cap_mms) {
		size_t ncap = m->cap_mms ? m->cap_mms * 2 : 4;
		struct laf_mm **n = realloc(m->mms, ncap * sizeof(*n));

		if (!n)
			return NULL;
		m->mms = n;
		m->cap_mms = ncap;
	}
	mm = calloc(1, sizeof(*mm));
	if (!mm)
		return NULL;
	mm->machine = m;
	mm->mm_id = id;
	mm->page_shift = m->page_shift;
	mm->page_size = m->page_size;
	mm->ptrs_per_pte = m->ptrs_per_pte;
	mm->pmd_shift = m->pmd_shift;
	mm->pmd_order = m->pmd_order;
	mm->pmd_size = m->pmd_size;
	mm->pud_shift = m->pud_shift;
	mm->task_size = m->task_size;
	mm->max_page_order = m->max_page_order;
	mm->arch_pte_order = m->arch_pte_order;
	mm->cont_pte_order = m->cont_pte_order;
	mm->mmap_base = m->mmap_base;
	mm->pgd_entries = (size_t)((mm->task_size + (1ULL << mm->pud_shift) - 1) >> mm->pud_shift);
	mm->pgd = calloc(mm->pgd_entries, sizeof(*mm->pgd));
	if (!mm->pgd) {
		free(mm);
		return NULL;
	}
	m->mms[m->nr_mms++] = mm;
	return mm;
}

/*
 * Event counters add up in the machine when an mm goes; its gauges are zero
 * after exit_mmap() and are not carried.  VmHWM (hiwater_rss) is a property
 * of the live mm, like RSS: it goes with the mm.
 */
static void account_dead_mm(struct laf_machine *m, struct laf_mm *mm)
{
	uint64_t *dst = (uint64_t *)&m->dead;
	const uint64_t *src = (const uint64_t *)&mm->st;
	size_t i;

	_Static_assert(sizeof(struct laf_stats) % sizeof(uint64_t) == 0, "laf_stats is 64-bit words");
	mm->st.mm_anonpages = mm->st.nr_ptes = mm->st.nr_pmds = 0;
	mm->st.pages_touched = mm->st.zero_pages_touched = 0;
	mm->st.hiwater_rss = 0;
	for (i = 0; i < sizeof(struct laf_stats) / sizeof(uint64_t); i++)
		dst[i] += src[i];
}

/**
 * mm_free - leave the machine and free an mm that exit_mmap() emptied
 */
void mm_free(struct laf_mm *mm)
{
	struct laf_machine *m = mm->machine;
	size_t k;

	for (k = 0; k < m->nr_mms; k++)
		if (m->mms[k] == mm) {
			m->mms[k] = m->mms[--m->nr_mms];
			break;
		}
	account_dead_mm(m, mm);
	exit_mmap_vmas(mm);
	free(mm->pgd);
	free(mm);
}

/**
 * exit_mmap - tear an address space down (mm/mmap.c)
 *
 * unmap_vmas(): the zap of every VMA (zap_page_range(): rmap removal per
 * folio batch, folios freed at their last reference, partially unmapped
 * large folios queued for deferred split), then free_pgtables() of
 * everything, deposited tables included.  The VMAs are freed by mm_free().
 */
void exit_mmap(struct laf_mm *mm)
{
	struct laf_vma *vma;

	for_each_vma(mm, vma)
		zap_page_range(mm, vma, vma->vm_start, vma->vm_end);
	free_all_pgtables(mm);
}

/*
 * The child's copy of a present PTE (__copy_present_ptes()): write-protected
 * (COW mapping), old, without uffd-wp (the child VMA has none), without the
 * emulator's touched bit and without PTE_CONT (set_ptes() refolds).
 */
static inline pte_t child_pte(pte_t pte)
{
	return pte & ~(pte_t)(LAF_PTE_WRITE | LAF_PTE_YOUNG | LAF_PTE_UFFD_WP |
			      LAF_PTE_TOUCHED | LAF_PTE_CONT);
}

/*
 * folio_pte_batch() with FPB_MERGE_WRITE | FPB_RESPECT_DIRTY: how many
 * PTEs from @i on map consecutive pages of the folio ending at @fend,
 * with the same dirty and uffd-wp bits (write and young are ignored);
 * *@writable gets whether any of them was writable.
 */
static unsigned int folio_pte_batch(const pte_t *ptes, unsigned int i, unsigned int iend,
				    uint64_t fend, bool *writable)
{
	pte_t pte = ptes[i];
	uint64_t pfn = pte_pfn(pte);
	unsigned int n;

	*writable = pte_write(pte);
	for (n = 1; i + n < iend && pfn + n < fend; n++) {
		pte_t next = ptes[i + n];

		if (!pte_present(next) || pte_special(next) || pte_pfn(next) != pfn + n ||
		    ((next ^ pte) & (LAF_PTE_DIRTY | LAF_PTE_UFFD_WP)))
			break;
		*writable |= pte_write(next);
	}
	return n;
}

/*
 * wrprotect_ptes() on the parent; arm64 contpte_wrprotect_ptes() unfolds a
 * block the batch covers only in part first.
 */
static void wrprotect_ptes(struct laf_mm *mm, pte_t *ptes, unsigned int i, unsigned int nr)
{
	unsigned int k;

	if (mm->cont_pte_order) {
		unsigned int cmask = (1u << mm->cont_pte_order) - 1;

		if (i & cmask)
			contpte_unfold_block(mm, ptes, i);
		if ((i + nr) & cmask)
			contpte_unfold_block(mm, ptes, i + nr - 1);
	}
	for (k = 0; k < nr; k++)
		ptes[i + k] &= ~(pte_t)LAF_PTE_WRITE;
	mm->st.per_page_ops += nr;
}

/**
 * copy_present_ptes - copy a batch of present PTEs into the child
 * @dst: child; @src: parent
 * @dptes, @sptes: the two PTE tables; @i: index; @iend: end of the range
 * @addr: virtual address of PTE @i
 *
 * Dup of mm/memory.c (6.18): the zero page (not vm_normal_page()) is copied
 * alone, with no reference, mapcount or RSS.  A large folio is copied by
 * folio_pte_batch(); then folio_ref_add(nr), folio_try_dup_anon_rmap_ptes(),
 * MM_ANONPAGES += nr in the child; writable entries are write-protected in
 * the parent and the child gets one set_ptes() of nr read-only, old entries.
 * Return: the number of PTEs copied.
 */
static unsigned int copy_present_ptes(struct laf_mm *dst, struct laf_mm *src, pte_t *dptes,
				      pte_t *sptes, unsigned int i, unsigned int iend, uint64_t addr)
{
	pte_t pte = sptes[i];
	uint64_t pfn, head;
	struct page *hp;
	unsigned int nr = 1;
	bool writable = pte_write(pte);

	if (pte_special(pte)) {
		dptes[i] = child_pte(pte);
		dst->st.ptes_written++;
		dst->st.per_page_ops++;
		return 1;
	}
	pfn = pte_pfn(pte);
	head = compound_head_pfn(src, pfn);
	hp = pfn_to_page(src, head);
	if (page_order(hp))
		nr = folio_pte_batch(sptes, i, iend, head + (1ULL << page_order(hp)), &writable);
	hp->refcount += (int32_t)nr;				/* folio_ref_add() */
	folio_try_dup_anon_rmap_ptes(dst, head, pfn, nr);
	dst->st.mm_anonpages += nr;
	update_hiwater_rss(dst);
	if (writable)
		wrprotect_ptes(src, sptes, i, nr);
	set_ptes(dst, addr, &dptes[i], child_pte(pte), nr);
	return nr;
}

/**
 * copy_pte_range - copy the PTEs of [@addr, @end) (one PTE table)
 *
 * The child gets a PTE table (pte_alloc_map_lock(); failure is -ENOMEM),
 * none entries stay none, present ones go through copy_present_ptes().
 * Return: 0 or LAF_ENOMEM.
 */
static int copy_pte_range(struct laf_mm *dst, struct laf_mm *src, pmd_t *dst_pmd,
			  pmd_t *src_pmd, uint64_t addr, uint64_t end)
{
	unsigned int i = pte_index(src, addr);
	unsigned int iend = i + (unsigned int)((end - addr) >> src->page_shift);

	if (pmd_none(dst_pmd) && __pte_alloc(dst, dst_pmd))
		return LAF_ENOMEM;
	while (i < iend) {
		if (pte_none(src_pmd->ptes[i])) {
			i++;
			continue;
		}
		i += copy_present_ptes(dst, src, dst_pmd->ptes, src_pmd->ptes, i, iend,
				       align_down(addr, src->pmd_size) +
				       ((uint64_t)i << src->page_shift));
	}
	return 0;
}

/*
 * vma_needs_copy(): copy the page tables only if the parent VMA has an
 * anon_vma (uffd-wp on the child is impossible here, no PFNMAP); else the
 * child refaults - a VMA that was only read (zero-page PTEs) among them.
 */
static bool vma_needs_copy(const struct laf_vma *dst_vma, const struct laf_vma *src_vma)
{
	(void)dst_vma;
	return src_vma->anon_vma != 0;
}

/**
 * copy_page_range - copy the page tables of @src_vma into @dst
 *
 * Per PMD (copy_pmd_range()): none → nothing, huge → copy_huge_pmd(),
 * else copy_pte_range().  A huge PMD always lies inside one VMA here
 * (VMA edges split it), so copy_huge_pmd() never has to split.
 * Return: 0 or LAF_ENOMEM.
 */
static int copy_page_range(struct laf_mm *dst, struct laf_vma *dst_vma, struct laf_mm *src,
			   struct laf_vma *src_vma)
{
	uint64_t addr = src_vma->vm_start, end = src_vma->vm_end;

	if (!vma_needs_copy(dst_vma, src_vma))
		return 0;
	while (addr < end) {
		uint64_t next = align_down(addr, src->pmd_size) + src->pmd_size;
		pmd_t *src_pmd, *dst_pmd;
		int err;

		if (next > end || next < addr)
			next = end;
		src_pmd = pmd_offset(src, addr);
		if (!src_pmd || pmd_none(src_pmd)) {
			addr = next;
			continue;
		}
		dst_pmd = pmd_offset_alloc(dst, addr);
		if (!dst_pmd)
			return LAF_ENOMEM;
		if (pmd_trans_huge(src_pmd))
			err = copy_huge_pmd(dst, src, dst_pmd, src_pmd, addr, dst_vma, src_vma);
		else
			err = copy_pte_range(dst, src, dst_pmd, src_pmd, addr, next);
		if (err)
			return err;
		addr = next;
	}
	return 0;
}

/**
 * dup_mmap - build the child @mm from the parent @oldmm
 *
 * Dup of mm/mmap.c (6.18): MMF_DISABLE_THP_* are inherited
 * (mmf_init_legacy_flags()).  Per parent VMA, in address order:
 * VM_DONTCOPY is skipped (a hole in the child); vm_area_dup() keeps the
 * range and flags; VM_WIPEONFORK gets no anon_vma and no page tables (the
 * child refaults zero-filled memory); otherwise anon_vma_fork() gives the
 * child VMA an anon_vma of its own if the parent's had one, and
 * copy_page_range() copies the page tables.  No merging happens.
 * Return: 0, LAF_ENOSYS (uffd registrations) or LAF_ENOMEM (the caller
 * tears the partial child down with exit_mmap()).
 */
int dup_mmap(struct laf_mm *mm, struct laf_mm *oldmm)
{
	struct laf_vma *src;

	for_each_vma(oldmm, src)
		if (userfaultfd_armed(src))
			return LAF_ENOSYS;
	mm->mmf_disable_thp_completely = oldmm->mmf_disable_thp_completely;
	mm->mmf_disable_thp_except_advised = oldmm->mmf_disable_thp_except_advised;
	mm->mmap_base = oldmm->mmap_base;
	for_each_vma(oldmm, src) {
		struct laf_vma v = *src, *dst;
		int err;

		if (src->vm_flags & LAF_VM_DONTCOPY)
			continue;
		v.anon_vma = 0;
		if (src->anon_vma && !(src->vm_flags & LAF_VM_WIPEONFORK))
			v.anon_vma = ++mm->next_anon_vma;	/* anon_vma_fork() */
		err = insert_vm_struct(mm, &v);
		if (err)
			return err;
		if (src->vm_flags & LAF_VM_WIPEONFORK)
			continue;
		dst = find_vma(mm, v.vm_start);
		err = copy_page_range(mm, dst, oldmm, src);
		if (err)
			return err;
	}
	return 0;
}
