// SPDX-License-Identifier: GPL-2.0
/*
 * userfaultfd.c - userfaultfd on anonymous VMAs: the ioctl range check of
 * fs/userfaultfd.c (validate_range()), UFFDIO_REGISTER / UNREGISTER, and the
 * mm/userfaultfd.c operations UFFDIO_COPY / UFFDIO_ZEROPAGE (mfill_atomic())
 * and UFFDIO_WRITEPROTECT (mwriteprotect_range()).
 *
 * Emulated: the registration modes as VM_UFFD_* vm_flags (split and merged
 * like any other vm_flags change, mm/vma.c vma_modify_flags_uffd()), the
 * uffd-wp PTE/PMD bit, pages and zero-page PTEs installed without a fault.
 * Simplified: there is no file descriptor, no event queue and no waiting:
 * a fault handed to userfaultfd returns LAF_ACCESS_USERFAULT and stays
 * unresolved until the caller fills it.  MINOR mode (hugetlb/shmem only) is
 * refused on anonymous VMAs, as the kernel does; UFFDIO_CONTINUE, UFFDIO_MOVE
 * and UFFDIO_POISON are not emulated.
 */
#include "laf_internal.h"

#define VM_UFFD_FLAGS (LAF_VM_UFFD_MISSING | LAF_VM_UFFD_WP | LAF_VM_UFFD_MINOR)

/**
 * dup_userfaultfd - the child's copy of a VMA at fork (fs/userfaultfd.c)
 * @vma: the child's VMA (vm_area_dup() of the parent's)
 *
 * Without UFFD_FEATURE_EVENT_FORK, dup_userfaultfd() calls
 * userfaultfd_reset_ctx() (mm/userfaultfd.c): vm_userfaultfd_ctx becomes
 * NULL_VM_UFFD_CTX and the VM_UFFD_* flags are cleared, so the child is not
 * registered anywhere and userfaultfd_wp(dst_vma) is false.
 * Simplified: there is no context (no file descriptor), so EVENT_FORK, which
 * would give the child a new context, is not emulated.
 */
void dup_userfaultfd(struct laf_vma *vma)
{
	vma->vm_flags &= ~(uint64_t)VM_UFFD_FLAGS;
}

/**
 * validate_range - the range check of every userfaultfd ioctl
 * @mm: the address space
 * @start: first byte of the range
 * @len: length in bytes
 *
 * Dup of fs/userfaultfd.c validate_range() + validate_unaligned_range():
 * @start and @len page-aligned, @len non-zero, mmap_min_addr <= @start <
 * TASK_SIZE, @len <= TASK_SIZE - @start (so @start + @len cannot wrap).
 * Simplified: mmap_min_addr is the fixed default MMAP_MIN_ADDR.
 * Return: 0 or LAF_EINVAL.
 */
static int validate_range(const struct laf_mm *mm, uint64_t start, uint64_t len)
{
	if ((start | len) & (mm->page_size - 1))
		return LAF_EINVAL;
	if (!len || start < MMAP_MIN_ADDR || start >= mm->task_size ||
	    len > mm->task_size - start)
		return LAF_EINVAL;
	return 0;
}

/* Does any VMA intersect [start, end)? */
static bool range_has_vma(struct laf_mm *mm, uint64_t start, uint64_t end)
{
	struct laf_vma *v = find_vma(mm, start);

	return v && v->vm_start < end;
}

/**
 * uffd_set_range - give every VMA in [@start, @end) the uffd modes @set
 * @skip_mask: VMAs whose (vm_flags & @skip_mask) already equals @set are left alone
 *
 * The per-VMA loop of mm/userfaultfd.c userfaultfd_register_range() and
 * userfaultfd_clear_vma(): holes are skipped; each VMA part whose modes
 * change goes through vma_modify_flags_uffd() (split at the range edges,
 * merge afterwards).  Return: 0 or the error of the split (LAF_ENOMEM).
 */
static int uffd_set_range(struct laf_mm *mm, uint64_t start, uint64_t end,
			  uint64_t skip_mask, uint64_t set)
{
	uint64_t addr;

	for (addr = start; addr < end;) {
		struct laf_vma *v = find_vma(mm, addr);
		uint64_t s, e;
		int err;

		if (!v || v->vm_start >= end)
			break;
		s = v->vm_start > addr ? v->vm_start : addr;
		e = v->vm_end < end ? v->vm_end : end;
		if ((v->vm_flags & skip_mask) != set &&
		    (err = vma_modify_flags_uffd(mm, s, e, set)))
			return err;
		addr = e;
	}
	return 0;
}

/**
 * userfaultfd_register - UFFDIO_REGISTER on [@start, @start + @len)
 * @mode: LAF_UFFDIO_REGISTER_MODE_* bits
 *
 * fs/userfaultfd.c userfaultfd_register(): validate_range(); an unknown or
 * empty @mode, or MINOR on an anonymous VMA, is -EINVAL; -EINVAL too when no
 * VMA intersects the range (holes are skipped).  Then
 * userfaultfd_register_range(): a VMA already registered with these modes
 * is skipped, every other one gets exactly these modes.
 * Simplified: no uffd context, so no -EBUSY for a VMA registered by another
 * userfaultfd.  Return: 0 or a negative LAF_E*.
 */
int userfaultfd_register(struct laf_mm *mm, uint64_t start, uint64_t len, int mode)
{
	uint64_t set = 0, end = start + len;
	int err = validate_range(mm, start, len);

	if (err)
		return err;
	if (!mode || (mode & ~(LAF_UFFDIO_REGISTER_MODE_MISSING | LAF_UFFDIO_REGISTER_MODE_WP |
			       LAF_UFFDIO_REGISTER_MODE_MINOR)))
		return LAF_EINVAL;
	if (mode & LAF_UFFDIO_REGISTER_MODE_MINOR)	/* anon VMAs: hugetlb/shmem only */
		return LAF_EINVAL;
	if (!range_has_vma(mm, start, end))
		return LAF_EINVAL;
	if (mode & LAF_UFFDIO_REGISTER_MODE_MISSING)
		set |= LAF_VM_UFFD_MISSING;
	if (mode & LAF_UFFDIO_REGISTER_MODE_WP)
		set |= LAF_VM_UFFD_WP;
	return uffd_set_range(mm, start, end, set, set);
}

/**
 * userfaultfd_unregister - UFFDIO_UNREGISTER on [@start, @start + @len)
 *
 * fs/userfaultfd.c userfaultfd_unregister() -> userfaultfd_clear_vma(): a
 * WP-registered part first gets uffd_wp_range(..., false) (uffd-wp bits
 * cleared, exclusive anon pages writable again), then every registered VMA
 * in the range loses all its VM_UFFD_* modes.  validate_range() first;
 * -EINVAL when no VMA intersects the range.  Return: 0 or a negative LAF_E*.
 */
int userfaultfd_unregister(struct laf_mm *mm, uint64_t start, uint64_t len)
{
	uint64_t end = start + len, addr = start;
	struct laf_vma *v;
	int err = validate_range(mm, start, len);

	if (err)
		return err;
	if (!range_has_vma(mm, start, end))
		return LAF_EINVAL;
	while (addr < end && (v = find_vma(mm, addr)) && v->vm_start < end) {
		uint64_t s = v->vm_start > addr ? v->vm_start : addr;
		uint64_t e = v->vm_end < end ? v->vm_end : end;

		if (v->vm_flags & LAF_VM_UFFD_WP)
			mwriteprotect_range(mm, s, e - s, false);
		addr = e;
	}
	return uffd_set_range(mm, start, end, VM_UFFD_FLAGS, 0);
}

/**
 * mfill_atomic - UFFDIO_COPY (@zeropage false) / UFFDIO_ZEROPAGE (@zeropage true)
 * @wp: UFFDIO_COPY_MODE_WP: the new PTEs carry uffd-wp and no write bit
 *
 * mm/userfaultfd.c mfill_atomic(): install order-0 pages or zero-page PTEs
 * into none PTEs of a registered range.  These are not faults: no fault
 * counter moves.  uffd_mfill_lock(): the VMA holding @start gets its
 * anon_vma first (find_vma_and_prepare_anon()), then the whole range must
 * lie in that one VMA and the VMA must be registered (any mode), else
 * -ENOENT; a WP copy needs VM_UFFD_WP (-EINVAL).  A present PTE or a huge
 * PMD is -EEXIST; pages already filled stay filled.
 * Simplified: the copied page's contents are not emulated (a copy is a fresh
 * zeroed frame), and the return is an error code, not a byte count.
 * Return: 0 or a negative LAF_E*.
 */
int mfill_atomic(struct laf_mm *mm, uint64_t start, uint64_t len, bool zeropage, bool wp)
{
	uint64_t addr, end = start + len;
	struct laf_vma *vma;
	int err = validate_range(mm, start, len);

	if (err)
		return err;
	vma = find_vma(mm, start);
	if (!vma || start < vma->vm_start)
		return LAF_ENOENT;
	vmf_anon_prepare(mm, vma);
	if (end > vma->vm_end || !userfaultfd_armed(vma))
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
		if (zeropage) {	/* mfill_atomic_pte_zeropage() */
			if (!pte_none(*pte))
				return LAF_EEXIST;
			entry = pfn_pte(mm->machine->zero_pfn, LAF_PTE_PRESENT | LAF_PTE_SPECIAL | LAF_PTE_YOUNG);
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
		mm->machine->gauges.lru_pages++;
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

/*
 * arm64: a contpte block needs one pgprot; a block the range covers only in
 * part is unfolded first (contpte_try_unfold_partial()).  The range is the
 * part inside this VMA: mwriteprotect_range() calls uffd_wp_range() per VMA
 * and may stop at the next VMA (-ENOENT) with a straddling block half done.
 */
static void uffd_wp_unfold_partial(struct laf_mm *mm, struct laf_vma *vma, pmd_t *pmd,
				   uint64_t addr, uint64_t start, uint64_t end)
{
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

/* change_huge_pmd() with MM_CP_UFFD_WP / MM_CP_UFFD_WP_RESOLVE */
static void uffd_wp_huge_pmd(struct laf_vma *vma, pmd_t *pmd, bool wp)
{
	if (wp)
		pmd->val = (pmd->val | LAF_PTE_UFFD_WP) & ~(uint64_t)LAF_PTE_WRITE;
	else if (!(pmd->val & LAF_PTE_SPECIAL)) {
		pmd->val &= ~(uint64_t)LAF_PTE_UFFD_WP;
		if (vma->vm_flags & LAF_VM_WRITE)
			pmd->val |= LAF_PTE_WRITE;
	} else {
		pmd->val &= ~(uint64_t)LAF_PTE_UFFD_WP;
	}
}

/**
 * mwriteprotect_range - UFFDIO_WRITEPROTECT: set (@wp) or clear uffd-wp
 *
 * mm/userfaultfd.c mwriteprotect_range() -> uffd_wp_range() ->
 * change_protection(): present PTEs and huge PMDs in the range get uffd-wp
 * and lose the write bit, or lose uffd-wp and get the write bit back where
 * the VMA allows writing (the zero page never).  Holes are skipped; a VMA
 * not registered for WP is -ENOENT (the VMAs before it stay done); a range
 * without any VMA is -ENOENT.  change_pmd_range(): a huge PMD the range
 * covers only in part is split first.  validate_range() first.
 * Simplified: "resolving" does not look at the page's exclusivity (every
 * emulated anon page is exclusive: no fork).  Return: 0 or a negative LAF_E*.
 */
int mwriteprotect_range(struct laf_mm *mm, uint64_t start, uint64_t len, bool wp)
{
	uint64_t addr, end = start + len;
	bool found = false;
	int err = validate_range(mm, start, len);

	if (err)
		return err;
	for (addr = start; addr < end; addr += mm->page_size) {
		struct laf_vma *vma = find_vma(mm, addr);
		pmd_t *pmd;
		pte_t *pte;

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

			if (haddr < start || haddr + mm->pmd_size > end)
				__split_huge_pmd(mm, vma, pmd, addr);
		}
		if (pmd_trans_huge(pmd)) {
			uffd_wp_huge_pmd(vma, pmd, wp);
			continue;
		}
		pte = &pmd->ptes[pte_index(mm, addr)];
		if (!pte_present(*pte))
			continue;
		if (mm->cont_pte_order && (*pte & LAF_PTE_CONT))
			uffd_wp_unfold_partial(mm, vma, pmd, addr, start, end);
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
