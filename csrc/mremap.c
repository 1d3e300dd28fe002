// SPDX-License-Identifier: GPL-2.0
/*
 * mremap.c - mremap() of private anonymous mappings (mm/mremap.c, Linux 6.18,
 * the struct vma_remap_struct code): do_mremap(), check_mremap_params(),
 * check_prep_vma(), mremap_at() (shrink, grow in place, move), mremap_to()
 * (MREMAP_FIXED / MREMAP_DONTUNMAP), remap_move() (a pure FIXED move over
 * several VMAs), move_vma() with copy_vma() (mm/vma.c),
 * move_page_tables(), move_ptes(), move_normal_pmd(), move_normal_pud() and
 * move_huge_pmd() (mm/huge_memory.c).  Rules: docs/kernel-semantics.md §5.
 *
 * Folios keep their size, PFNs, mapcounts, refcounts, PageAnonExclusive and
 * folio->index while their virtual address changes: a moved VMA keeps its
 * vm_pgoff, so rmap finds the pages at vma_address() and a folio may be
 * mapped at a VA that is not aligned to its size.  RSS and the fault
 * counters do not change.
 *
 * Simplified (as pylaf/reference/mremap.py): no UFFD_FEATURE_EVENT_REMAP (a
 * moved VMA drops its userfaultfd registration, its PTEs lose uffd-wp, and
 * page tables are never moved whole while a VMA is registered); no mseal,
 * mlock, hugetlb, VM_DONTEXPAND/VM_PFNMAP, RLIMIT_AS/DATA or overcommit
 * refusal (VM_ACCOUNT is kept as a flag only); no soft-dirty.
 */
#include <stdlib.h>

#include "laf_internal.h"

#define VM_UFFD_FLAGS (LAF_VM_UFFD_MISSING | LAF_VM_UFFD_WP | LAF_VM_UFFD_MINOR)

/* struct vma_remap_struct: the request as it is being carried out */
struct vma_remap_struct {
	uint64_t addr, old_len, new_len, new_addr;
	int flags;
};

static inline bool vrm_implies_new_addr(const struct vma_remap_struct *vrm)
{
	return vrm->flags & (LAF_MREMAP_FIXED | LAF_MREMAP_DONTUNMAP);
}

/* vma_lookup(): the VMA containing @addr, or NULL */
static struct laf_vma *vma_lookup(struct laf_mm *mm, uint64_t addr)
{
	struct laf_vma *v = find_vma(mm, addr);

	return v && v->vm_start <= addr ? v : NULL;
}

/*
 * The vm.max_map_count checks of mremap: check_mremap_params() refuses at
 * map_count + 2 >= max_map_count - 3 (@extra = 2), prep_move_vma() at
 * map_count >= max_map_count - 3 (@extra = 0); int arithmetic as the
 * kernel's (a max_map_count below 3 refuses everything).
 */
static bool map_count_allows(struct laf_mm *mm, int64_t extra)
{
	return (int64_t)mm->map_count + extra < (int64_t)mm->machine->cfg.max_map_count - 3;
}

/**
 * check_mremap_params - the argument rules before any VMA is looked at
 *
 * Unknown flag bits, @addr not page aligned, new_len == 0 or > TASK_SIZE:
 * -EINVAL.  With FIXED or DONTUNMAP: new_addr > TASK_SIZE - new_len, new_addr
 * not aligned, no MAYMOVE, DONTUNMAP with old_len != new_len, or the two
 * ranges overlapping (vrm_overlaps(), unsigned long arithmetic): -EINVAL;
 * the map-count pre-check: -ENOMEM.
 */
static int check_mremap_params(struct laf_mm *mm, const struct vma_remap_struct *vrm)
{
	uint64_t end_old = vrm->addr + vrm->old_len, end_new = vrm->new_addr + vrm->new_len;

	if (vrm->flags & ~(LAF_MREMAP_MAYMOVE | LAF_MREMAP_FIXED | LAF_MREMAP_DONTUNMAP))
		return LAF_EINVAL;
	if ((vrm->addr & (mm->page_size - 1)) || !vrm->new_len || vrm->new_len > mm->task_size)
		return LAF_EINVAL;
	if (!vrm_implies_new_addr(vrm))
		return 0;
	if (vrm->new_addr > mm->task_size - vrm->new_len || (vrm->new_addr & (mm->page_size - 1)))
		return LAF_EINVAL;
	if (!(vrm->flags & LAF_MREMAP_MAYMOVE))
		return LAF_EINVAL;
	if ((vrm->flags & LAF_MREMAP_DONTUNMAP) && vrm->old_len != vrm->new_len)
		return LAF_EINVAL;
	if (end_old > vrm->new_addr && end_new > vrm->addr)	/* vrm_overlaps() */
		return LAF_EINVAL;
	return map_count_allows(mm, 2) ? 0 : LAF_ENOMEM;
}

/**
 * check_prep_vma - the VMA at @addr: a shrink or same-size call without a
 * new address needs only that; a grow or a move needs the range inside it
 *
 * No VMA at addr: -EFAULT; old_len == 0 (duplicating a private mapping):
 * -EINVAL; min(old_len, new_len) past the VMA's end: -EFAULT; a pgoff that
 * would wrap: -EINVAL.  Sets new_addr = addr when no new address is implied.
 */
static int check_prep_vma(struct laf_mm *mm, struct vma_remap_struct *vrm, struct laf_vma *vma)
{
	uint64_t pgoff, len;

	if (!vma)
		return LAF_EFAULT;
	if (!vrm_implies_new_addr(vrm))
		vrm->new_addr = vrm->addr;
	if (vrm->new_len <= vrm->old_len && !vrm_implies_new_addr(vrm))
		return 0;
	if (!vrm->old_len)
		return LAF_EINVAL;
	len = vrm->old_len < vrm->new_len ? vrm->old_len : vrm->new_len;
	if (len > vma->vm_end - vrm->addr)
		return LAF_EFAULT;
	pgoff = linear_page_index(mm, vma, vrm->addr);
	if (vrm->new_len > vrm->old_len && pgoff + (vrm->new_len >> mm->page_shift) < pgoff)
		return LAF_EINVAL;
	return 0;
}

/* ------------------------------------------------------------------ */
/* move_page_tables                                                    */

/*
 * arm64 contpte_try_fold() after a one-entry set_ptes() of @i in @ptes:
 * only when @i is the last entry of its block, maps the last page of a
 * block-aligned run of PFNs inside one folio and every entry of the block
 * has the same bits (young, dirty and the touched bit aside).
 */
static void contpte_try_fold(struct laf_mm *mm, pte_t *ptes, unsigned int i)
{
	unsigned int cn = 1u << mm->cont_pte_order, mask = cn - 1, b, k;
	const pte_t ign = LAF_PTE_YOUNG | LAF_PTE_DIRTY | LAF_PTE_TOUCHED;
	const pte_t flag_mask = (1ULL << LAF_PTE_PFN_SHIFT) - 1;
	pte_t pte = ptes[i], ref = pte & flag_mask & ~ign;
	uint64_t first, head;

	if ((i & mask) != mask || (pte_pfn(pte) & mask) != mask)
		return;
	if (!pte_present(pte) || (pte & (LAF_PTE_CONT | LAF_PTE_SPECIAL)))
		return;
	b = i - mask;
	first = pte_pfn(pte) - mask;
	head = compound_head_pfn(mm, pte_pfn(pte));
	if (head > first || head + (1ULL << page_order(pfn_to_page(mm, head))) < first + cn)
		return;
	for (k = 0; k < cn; k++) {
		pte_t p = ptes[b + k];

		if (!pte_present(p) || pte_pfn(p) != first + k || (p & flag_mask & ~ign) != ref)
			return;
	}
	for (k = 0; k < cn; k++)
		ptes[b + k] |= LAF_PTE_CONT;
	mm->st.contpte_blocks++;
}

/*
 * The arm64 contpte side of set_ptes() for @nr entries from @j already
 * written: one entry tries to fold; a batch gets PTE_CONT on every whole
 * block inside it whose first PFN is block-aligned (contpte_set_ptes()).
 */
static void move_set_cont(struct laf_mm *mm, pte_t *ptes, unsigned int j, unsigned int nr)
{
	unsigned int cn = 1u << mm->cont_pte_order, b, k;

	if (nr == 1) {
		contpte_try_fold(mm, ptes, j);
		return;
	}
	for (b = (j + cn - 1) & ~(cn - 1); b + cn <= j + nr; b += cn) {
		if (pte_pfn(ptes[b]) & (cn - 1))
			continue;
		for (k = 0; k < cn; k++)
			ptes[b + k] |= LAF_PTE_CONT;
		mm->st.contpte_blocks++;
	}
}

/*
 * mremap_folio_pte_batch(): 1 unless pte_batch_hint() > 1 (arm64: a contpte
 * entry; x86 never batches), then folio_pte_batch_flags(FPB_RESPECT_WRITE)
 * over a large folio: consecutive PFNs, same bits but young and dirty.
 */
static unsigned int mremap_folio_pte_batch(struct laf_mm *mm, const pte_t *ptes, unsigned int i,
					   unsigned int i1)
{
	const pte_t ign = LAF_PTE_YOUNG | LAF_PTE_DIRTY | LAF_PTE_TOUCHED |
			  ~((1ULL << LAF_PTE_PFN_SHIFT) - 1);
	pte_t pte = ptes[i];
	uint64_t pfn = pte_pfn(pte), head, fend;
	unsigned int n = 1;

	if (i1 - i == 1 || !(pte & LAF_PTE_CONT) || pte_special(pte))
		return 1;
	head = compound_head_pfn(mm, pfn);
	if (!page_order(pfn_to_page(mm, head)))
		return 1;
	fend = head + (1ULL << page_order(pfn_to_page(mm, head)));
	while (i + n < i1 && pfn + n < fend && pte_pfn(ptes[i + n]) == pfn + n &&
	       (ptes[i + n] & ~ign) == (pte & ~ign))
		n++;
	return n;
}

/**
 * move_ptes - move the entries of [@old_addr, + @extent) to @new_addr
 *
 * Each batch: get_and_clear_ptes() (young and dirty gathered over the
 * batch; arm64 unfolds the contpte blocks it covers in part), move_pte()
 * (the identity), uffd-wp cleared (no UFFD_FEATURE_EVENT_REMAP), then
 * set_ptes() at the destination (arm64: contpte only where the destination
 * block and the PFNs are aligned).  Folios, mapcounts, refcounts,
 * PageAnonExclusive, RSS and the counters do not change.
 */
static void move_ptes(struct laf_mm *mm, struct laf_vma *old, pmd_t *src_pmd, pmd_t *dst_pmd,
		      uint64_t old_addr, uint64_t new_addr, uint64_t extent)
{
	pte_t *src = src_pmd->ptes, *dst = dst_pmd->ptes;
	unsigned int i = pte_index(mm, old_addr), j = pte_index(mm, new_addr);
	unsigned int i1 = i + (unsigned int)(extent >> mm->page_shift), cn, nr, k;
	bool clear_wp = userfaultfd_armed(old);
	pte_t merged;

	cn = mm->cont_pte_order ? 1u << mm->cont_pte_order : 0;
	while (i < i1) {
		if (pte_none(src[i])) {
			i++;
			j++;
			continue;
		}
		nr = mremap_folio_pte_batch(mm, src, i, i1);
		if (cn) {	/* contpte_try_unfold_partial() */
			if (i & (cn - 1))
				contpte_unfold_block(mm, src, i);
			if ((i + nr) & (cn - 1))
				contpte_unfold_block(mm, src, i + nr - 1);
		}
		merged = 0;
		for (k = 0; k < nr; k++)
			merged |= src[i + k] & (LAF_PTE_YOUNG | LAF_PTE_DIRTY);
		for (k = 0; k < nr; k++) {
			pte_t pte = (src[i + k] | merged) & ~(pte_t)LAF_PTE_CONT;

			if (clear_wp)
				pte &= ~(pte_t)LAF_PTE_UFFD_WP;
			src[i + k] = 0;
			dst[j + k] = pte;
		}
		if (cn)
			move_set_cont(mm, dst, j, nr);
		i += nr;
		j += nr;
	}
}

/* get_extent(): up to the next @size boundary of both addresses and @end */
static uint64_t get_extent(uint64_t addr, uint64_t new_addr, uint64_t end, uint64_t size)
{
	uint64_t a = size - (addr & (size - 1)), b = size - (new_addr & (size - 1));

	if (b < a)
		a = b;
	return end - addr < a ? end - addr : a;
}

/*
 * try_realign_addr(PMD_MASK) / can_realign_addr(): both addresses round
 * down to their PMD boundary when they have the same offset in a PMD, the
 * range reaches the next boundary, each is its VMA's start, and nothing is
 * mapped between the rounded address and the VMA's start.
 */
static void try_realign_addr(struct laf_mm *mm, struct laf_vma *old, struct laf_vma *new,
			     uint64_t *old_addr, uint64_t *new_addr, uint64_t len)
{
	uint64_t size = mm->pmd_size, off = *old_addr & (size - 1);

	if (len < size - off || !off || off != (*new_addr & (size - 1)))
		return;
	if (old->vm_start != *old_addr || !range_free(mm, *old_addr - off, off) ||
	    new->vm_start != *new_addr || !range_free(mm, *new_addr - off, off))
		return;
	*old_addr -= off;
	*new_addr -= off;
}

/*
 * One PMD step of move_page_tables(): a huge PMD moves whole
 * (move_huge_pmd(), uffd-wp cleared when a table move is not allowed) or is
 * split; a whole PTE table moves when allowed (move_normal_pmd()); else
 * move_ptes() into the destination table.  Return: false when a
 * destination table cannot be allocated.
 */
static bool move_pmd_extent(struct laf_mm *mm, struct laf_vma *old, uint64_t old_addr,
			    uint64_t new_addr, uint64_t extent, bool no_table_move)
{
	pmd_t *src = pmd_offset(mm, old_addr), *dst;
	bool whole;

	if (!src || pmd_none(src))	/* get_old_pmd() */
		return true;
	dst = pmd_offset_alloc(mm, new_addr);	/* alloc_new_pmd() */
	if (!dst)
		return false;
	whole = extent == mm->pmd_size && pmd_none(dst);
	if (pmd_trans_huge(src)) {
		if (whole) {	/* move_huge_pmd() */
			*dst = *src;
			memset(src, 0, sizeof(*src));
			if (no_table_move)
				dst->val &= ~(uint64_t)LAF_PTE_UFFD_WP;	/* clear_uffd_wp_pmd() */
			return true;
		}
		__split_huge_pmd(mm, old, src, old_addr);
	} else if (whole && !no_table_move) {	/* move_normal_pmd() */
		*dst = *src;
		memset(src, 0, sizeof(*src));
		return true;
	}
	if (pmd_none(dst) && __pte_alloc(mm, dst))
		return false;
	move_ptes(mm, old, src, dst, old_addr, new_addr, extent);
	return true;
}

/**
 * move_page_tables - move the entries of [@old_addr, + @len) to @new_addr
 *
 * Extent by extent: whole PMD tables (move_normal_pud()) when a whole PUD
 * range moves to an empty one, else PMD steps (move_pmd_extent()).
 * Return: the bytes moved from the original @old_addr (less than @len when a
 * page table could not be allocated).
 */
static uint64_t move_page_tables(struct laf_mm *mm, struct laf_vma *old, struct laf_vma *new,
				 uint64_t old_addr, uint64_t new_addr, uint64_t len)
{
	uint64_t end = old_addr + len, orig = old_addr, pud_size = 1ULL << mm->pud_shift, extent;
	bool no_table_move;

	if (!len)
		return 0;
	try_realign_addr(mm, old, new, &old_addr, &new_addr, len);
	no_table_move = userfaultfd_armed(old) || userfaultfd_armed(new);
	while (old_addr < end) {
		size_t oi = old_addr >> mm->pud_shift, ni = new_addr >> mm->pud_shift;

		extent = get_extent(old_addr, new_addr, end, pud_size);
		if (!mm->pgd[oi]) {
			old_addr += extent;
			new_addr += extent;
			continue;
		}
		if (extent == pud_size && !no_table_move && !mm->pgd[ni]) {	/* move_normal_pud() */
			mm->pgd[ni] = mm->pgd[oi];
			mm->pgd[oi] = NULL;
			old_addr += extent;
			new_addr += extent;
			continue;
		}
		extent = get_extent(old_addr, new_addr, end, mm->pmd_size);
		if (!move_pmd_extent(mm, old, old_addr, new_addr, extent, no_table_move))
			return old_addr > orig ? old_addr - orig : 0;
		old_addr += extent;
		new_addr += extent;
	}
	return len;
}

/* ------------------------------------------------------------------ */
/* move_vma                                                            */

/*
 * unmap_source_vma(): do_vmi_munmap() of the range, its errors ignored.
 * @accountable: VM_ACCOUNT is cleared for the munmap (the charge moved with
 * the pages) and given back to what is left of the VMA on either side.
 */
static void unmap_source_vma(struct laf_mm *mm, uint64_t addr, uint64_t len, bool accountable)
{
	struct laf_vma *vma = vma_lookup(mm, addr), *side;
	uint64_t start, end;

	if (!vma)
		return;
	start = vma->vm_start;
	end = vma->vm_end;
	accountable = accountable && (vma->vm_flags & LAF_VM_ACCOUNT);
	if (accountable)
		vma->vm_flags &= ~(uint64_t)LAF_VM_ACCOUNT;
	(void)__laf_munmap(mm, addr, len);
	if (!accountable)
		return;
	if (start < addr && (side = vma_lookup(mm, addr - 1)))
		side->vm_flags |= LAF_VM_ACCOUNT;
	if (end > addr + len && (side = vma_lookup(mm, addr + len)))
		side->vm_flags |= LAF_VM_ACCOUNT;
}

/**
 * copy_vma - the destination VMA [new_addr, + new_len), merged where possible
 *
 * mm/vma.c copy_vma(): the source's flags and anon_vma (anon_vma_clone())
 * and vm_pgoff (+ offset; reset to new_addr >> PAGE_SHIFT when the source
 * was never written: no anon_vma), then vma_merge_copied_range() with the
 * neighbours.  @*vmap (the source) is looked up again: it may have merged
 * into the new VMA.  Return: the new (or merged) VMA, NULL if host memory
 * ran out.
 */
static struct laf_vma *copy_vma(struct laf_mm *mm, struct laf_vma **vmap,
				const struct vma_remap_struct *vrm)
{
	struct laf_vma tmpl = **vmap, *nv;

	tmpl.vm_pgoff = linear_page_index(mm, *vmap, vrm->addr);
	if (!tmpl.anon_vma)
		tmpl.vm_pgoff = vrm->new_addr >> mm->page_shift;
	tmpl.vm_start = vrm->new_addr;
	tmpl.vm_end = vrm->new_addr + vrm->new_len;
	tmpl.auto_next = 0;
	tmpl.auto_order = 0;
	tmpl.no_merge_prev = 0;
	nv = vma_insert_copy(mm, &tmpl);
	if (!nv)
		return NULL;
	nv = vma_merge_around(mm, nv);
	*vmap = vma_lookup(mm, vrm->addr);
	return nv;
}

/**
 * move_vma - move [addr, + old_len) to new_addr
 *
 * prep_move_vma()'s map-count check (-ENOMEM), copy_vma(),
 * move_page_tables(); if not everything moved (no memory for a page
 * table) what moved goes back and the destination is unmapped (-ENOMEM).
 * Then the new VMA drops its userfaultfd registration
 * (userfaultfd_reset_ctx()) and the source is unmapped, or with DONTUNMAP
 * keeps its VMA and loses its anon_vma when wholly moved
 * (dontunmap_complete(): unlink_anon_vmas()).
 */
static int move_vma(struct laf_mm *mm, struct vma_remap_struct *vrm, struct laf_vma *vma,
		    uint64_t *out)
{
	struct laf_vma *nv;
	uint64_t moved;

	if (!map_count_allows(mm, 0))
		return LAF_ENOMEM;
	nv = copy_vma(mm, &vma, vrm);
	if (!nv || !vma)
		return LAF_ENOMEM;
	moved = move_page_tables(mm, vma, nv, vrm->addr, vrm->new_addr, vrm->old_len);
	if (moved < vrm->old_len) {
		move_page_tables(mm, nv, vma, vrm->new_addr, vrm->addr, moved);
		unmap_source_vma(mm, vrm->new_addr, vrm->new_len, false);
		return LAF_ENOMEM;
	}
	nv->vm_flags &= ~(uint64_t)VM_UFFD_FLAGS;
	if (vrm->flags & LAF_MREMAP_DONTUNMAP) {
		if (nv != vma && vma->vm_start == vrm->addr &&
		    vma->vm_end == vrm->addr + vrm->old_len)
			vma->anon_vma = 0;
	} else {
		unmap_source_vma(mm, vrm->addr, vrm->old_len, true);
	}
	*out = vrm->new_addr;
	return 0;
}

/* ------------------------------------------------------------------ */
/* the syscall                                                         */

/*
 * shrink_vma(): do_vmi_munmap() of [addr + new_len, addr + old_len) (it
 * may cross into the following VMAs; a large folio cut in two is partially
 * mapped and queued for deferred split, a PMD straddling the cut is split).
 */
static int shrink_vma(struct laf_mm *mm, const struct vma_remap_struct *vrm)
{
	return __laf_munmap(mm, vrm->addr + vrm->new_len, vrm->old_len - vrm->new_len);
}

/*
 * expand_vma(): in place when [addr, + old_len) ends at vm_end and
 * vma_expandable() ([vm_end, + delta) free, below TASK_SIZE), with
 * vma_merge_extend() absorbing the next VMA when it now merges; else
 * -ENOMEM without MAYMOVE; else a new place from get_unmapped_area()
 * without a hint (PMD-aligned for a multiple of the PMD size) and move_vma().
 */
static int expand_vma(struct laf_mm *mm, struct vma_remap_struct *vrm, struct laf_vma *vma,
		      uint64_t *out)
{
	uint64_t delta = vrm->new_len - vrm->old_len, dst;

	if (vma->vm_end - vrm->addr == vrm->old_len && vma->vm_end + delta <= mm->task_size &&
	    range_free(mm, vma->vm_end, delta)) {
		vma_set_end(mm, vma, vma->vm_end + delta);
		vma_merge_next(mm, vma);
		*out = vrm->addr;
		return 0;
	}
	if (!(vrm->flags & LAF_MREMAP_MAYMOVE))
		return LAF_ENOMEM;
	dst = get_unmapped_area(mm, 0, vrm->new_len);
	if (!dst)
		return LAF_ENOMEM;
	vrm->new_addr = dst;
	return move_vma(mm, vrm, vma, out);
}

/*
 * mremap_to(): FIXED unmaps the destination first (as MAP_FIXED does), a
 * shrink then unmaps the source's tail, the destination is FIXED's address
 * (below mmap_min_addr: -EPERM) or found with get_unmapped_area(hint)
 * (DONTUNMAP alone), then move_vma().
 */
static int mremap_to(struct laf_mm *mm, struct vma_remap_struct *vrm, uint64_t *out)
{
	struct laf_vma *vma;
	int err;

	if (vrm->flags & LAF_MREMAP_FIXED) {
		err = __laf_munmap(mm, vrm->new_addr, vrm->new_len);
		if (err)
			return err;
	}
	if (vrm->new_len < vrm->old_len) {
		err = shrink_vma(mm, vrm);
		if (err)
			return err;
		vrm->old_len = vrm->new_len;
	}
	vma = vma_lookup(mm, vrm->addr);
	if (!vma)
		return LAF_EFAULT;
	if (vrm->flags & LAF_MREMAP_FIXED) {
		if (vrm->new_addr < MMAP_MIN_ADDR)	/* security_mmap_addr() */
			return LAF_EPERM;
	} else {
		uint64_t dst = get_unmapped_area(mm, vrm->new_addr, vrm->new_len);

		if (!dst)
			return LAF_ENOMEM;
		vrm->new_addr = dst;
	}
	return move_vma(mm, vrm, vma, out);
}

/* one VMA's part of a remap_move() */
struct remap_piece {
	uint64_t start, end, vm_end, vm_flags;
};

/*
 * remap_move(): a FIXED move of the same size moves every VMA in
 * [addr, + old_len), each to the same offset from new_addr (the gaps
 * kept); a gap at the start, or no VMA, is -EFAULT; a userfaultfd-armed VMA
 * cannot be part of a multi-VMA move (!vma_multi_allowed(): -EFAULT).
 */
static int remap_move(struct laf_mm *mm, const struct vma_remap_struct *vrm, uint64_t *out)
{
	uint64_t start = vrm->addr, end = vrm->addr + vrm->old_len, target = vrm->new_addr;
	uint64_t last_end = 0, res = 0;
	struct remap_piece *pieces;
	struct laf_vma *v;
	size_t n = 0, cap = 0, k;
	int err = 0;

	for (v = find_vma(mm, start); v && v->vm_start < end; v = vma_next(v))
		cap++;
	if (!cap)
		return LAF_EFAULT;
	pieces = malloc(cap * sizeof(*pieces));
	if (!pieces)
		return LAF_ENOMEM;
	for (v = find_vma(mm, start); v && v->vm_start < end; v = vma_next(v))
		pieces[n++] = (struct remap_piece){ v->vm_start > start ? v->vm_start : start,
						    v->vm_end < end ? v->vm_end : end,
						    v->vm_end, v->vm_flags };
	if (!n || pieces[0].start > start)
		err = LAF_EFAULT;
	for (k = 0; k < n && !err; k++) {
		struct remap_piece *p = &pieces[k];
		uint64_t offset = k ? p->start - last_end : 0, got = 0;
		struct vma_remap_struct sub = { p->start, p->end - p->start, p->end - p->start,
						target + offset, vrm->flags };

		last_end = p->end;
		if ((p->vm_flags & VM_UFFD_FLAGS) && (k || p->vm_end < end)) {
			err = LAF_EFAULT;
			break;
		}
		err = check_prep_vma(mm, &sub, vma_lookup(mm, p->start));
		if (!err)
			err = mremap_to(mm, &sub, &got);
		if (err)
			break;
		if (!k)
			res = got;
		target = got + (p->end - p->start);
	}
	free(pieces);
	if (!err)
		*out = res;
	return err;
}

/**
 * __laf_mremap - do_mremap() on a private anonymous mapping
 * @flags: LAF_MREMAP_MAYMOVE / FIXED / DONTUNMAP (the kernel's values)
 * @out: the new address on success
 *
 * Lengths are PAGE_ALIGNed first (wrapping as an unsigned long does);
 * check_mremap_params(); a same-size FIXED call is remap_move(); else
 * check_prep_vma() on the VMA at @addr, then mremap_to() (FIXED or
 * DONTUNMAP) or mremap_at(): same size -> @addr, shrink -> shrink_vma(),
 * grow -> expand_vma().
 * Return: 0 or a negative LAF_E* (EINVAL, EFAULT, ENOMEM, EPERM).
 */
int __laf_mremap(struct laf_mm *mm, uint64_t addr, uint64_t old_len, uint64_t new_len, int flags,
		 uint64_t new_addr, uint64_t *out)
{
	struct vma_remap_struct vrm = { addr, align_up(old_len, mm->page_size),
					align_up(new_len, mm->page_size), new_addr, flags };
	struct laf_vma *vma;
	int err;

	err = check_mremap_params(mm, &vrm);
	if (err)
		return err;
	if ((flags & LAF_MREMAP_FIXED) && vrm.old_len == vrm.new_len)	/* vrm_move_only() */
		return remap_move(mm, &vrm, out);
	vma = vma_lookup(mm, addr);
	err = check_prep_vma(mm, &vrm, vma);
	if (err)
		return err;
	if (vrm_implies_new_addr(&vrm))
		return mremap_to(mm, &vrm, out);
	if (vrm.new_len == vrm.old_len) {
		*out = addr;
		return 0;
	}
	if (vrm.new_len < vrm.old_len) {
		err = shrink_vma(mm, &vrm);
		if (!err)
			*out = addr;
		return err;
	}
	return expand_vma(mm, &vrm, vma, out);
}
