// SPDX-License-Identifier: GPL-2.0
/*
 * vma.c - the VMA lifecycle: placement, split, merge, mmap/munmap/madvise,
 * prctl, anon_vma_prepare(); the vm_flags change behind userfaultfd
 * registration (userfaultfd.c).
 *
 * VMAs live in a sorted array (the maple tree's contract: find_vma() returns
 * the first VMA ending above an address).  What matters for folio-fit
 * decisions is emulated as the kernel does it:
 *  - placement: top-down below mmap_base; an anonymous mapping whose length
 *    is a multiple of PMD_SIZE is PMD-aligned (__thp_get_unmapped_area());
 *  - split: madvise, munmap and uffd registration split VMAs at their range
 *    edges; a new edge inside a huge PMD splits the PMD
 *    (vma_adjust_trans_huge());
 *  - merge: adjacent VMAs with equal vm_flags and compatible anon_vmas merge
 *    (at mmap, and after madvise/uffd changes); anon VMAs have
 *    vm_pgoff == vm_start >> PAGE_SHIFT, so pgoff contiguity always holds;
 *  - anon_vma: assigned at the first fault that needs one; reused from an
 *    adjacent VMA that differs only in access flags (find_mergeable_anon_vma);
 *    split VMAs share their anon_vma, so they can merge back.
 * Not emulated: VM_GROWSDOWN stacks and guard gaps, mremap, mprotect,
 * file and shared mappings.
 */
#include <stdlib.h>

#include "laf_internal.h"

#define VM_ACCESS_FLAGS (LAF_VM_READ | LAF_VM_WRITE | LAF_VM_EXEC)
#define VM_UFFD_FLAGS (LAF_VM_UFFD_MISSING | LAF_VM_UFFD_WP | LAF_VM_UFFD_MINOR)

/* index of the first VMA with vm_end > addr (nr_vmas if none) */
static size_t vma_index(struct laf_mm *mm, uint64_t addr)
{
	size_t lo = 0, hi = mm->nr_vmas;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (mm->vmas[mid].vm_end > addr)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

/**
 * find_vma - the first VMA with vm_end > @addr, or NULL
 * A one-entry cache (like the per-thread vmacache of old) serves streams.
 */
struct laf_vma *find_vma(struct laf_mm *mm, uint64_t addr)
{
	size_t i = mm->vma_cache;

	if (i < mm->nr_vmas) {
		struct laf_vma *v = &mm->vmas[i];

		if (addr < v->vm_end && (i == 0 || addr >= mm->vmas[i - 1].vm_end))
			return v;
	}
	i = vma_index(mm, addr);
	if (i == mm->nr_vmas)
		return NULL;
	mm->vma_cache = i;
	return &mm->vmas[i];
}

static bool anon_vma_compatible(const struct laf_vma *a, const struct laf_vma *b)
{
	return a->vm_end == b->vm_start &&
	       !((a->vm_flags ^ b->vm_flags) & ~(uint64_t)VM_ACCESS_FLAGS);
}

/**
 * vmf_anon_prepare - anon_vma_prepare(): give @vma an anon_vma
 *
 * find_mergeable_anon_vma(): reuse the anon_vma of an adjacent VMA that is
 * compatible (adjacent, same flags but for access bits); else a new one.
 * Return: 0.
 */
int vmf_anon_prepare(struct laf_mm *mm, struct laf_vma *vma)
{
	size_t i;

	if (likely(vma->anon_vma))
		return 0;
	i = (size_t)(vma - mm->vmas);
	if (i + 1 < mm->nr_vmas && mm->vmas[i + 1].anon_vma &&
	    anon_vma_compatible(vma, &mm->vmas[i + 1]))
		vma->anon_vma = mm->vmas[i + 1].anon_vma;
	else if (i > 0 && mm->vmas[i - 1].anon_vma && anon_vma_compatible(&mm->vmas[i - 1], vma))
		vma->anon_vma = mm->vmas[i - 1].anon_vma;
	else
		vma->anon_vma = ++mm->next_anon_vma;
	return 0;
}

static int vma_reserve(struct laf_mm *mm, size_t extra)
{
	if (mm->nr_vmas + extra > mm->cap_vmas) {
		size_t ncap = mm->cap_vmas ? mm->cap_vmas * 2 : 16;
		struct laf_vma *n;

		while (ncap < mm->nr_vmas + extra)
			ncap *= 2;
		n = realloc(mm->vmas, ncap * sizeof(*n));
		if (!n)
			return LAF_ENOMEM;
		mm->vmas = n;
		mm->cap_vmas = ncap;
	}
	return 0;
}

static void vma_insert_at(struct laf_mm *mm, size_t i, const struct laf_vma *v)
{
	memmove(&mm->vmas[i + 1], &mm->vmas[i], (mm->nr_vmas - i) * sizeof(*v));
	mm->vmas[i] = *v;
	mm->nr_vmas++;
	mm->vma_cache = i;
}

static void vma_remove_at(struct laf_mm *mm, size_t i)
{
	memmove(&mm->vmas[i], &mm->vmas[i + 1], (mm->nr_vmas - i - 1) * sizeof(mm->vmas[0]));
	mm->nr_vmas--;
	mm->vma_cache = 0;
}

/**
 * split_vma - split VMA @i at @addr (vm_start < addr < vm_end)
 * Both halves keep flags and anon_vma.  Return: 0 or LAF_ENOMEM (no change).
 */
static int split_vma(struct laf_mm *mm, size_t i, uint64_t addr)
{
	struct laf_vma nv;

	if (vma_reserve(mm, 1))
		return LAF_ENOMEM;
	split_huge_pmd_address(mm, &mm->vmas[i], addr);
	nv = mm->vmas[i];
	nv.vm_start = addr;
	nv.no_merge_prev = 0;
	mm->vmas[i].vm_end = addr;
	vma_insert_at(mm, i + 1, &nv);
	return 0;
}

static bool is_mergeable_anon_vma(uint64_t a, uint64_t b)
{
	return !a || !b || a == b;
}

static bool can_merge(const struct laf_vma *a, const struct laf_vma *b)
{
	return a->vm_end == b->vm_start && a->vm_flags == b->vm_flags && !b->no_merge_prev &&
	       is_mergeable_anon_vma(a->anon_vma, b->anon_vma);
}

/* Merge VMA @i with its neighbours where allowed; return its new index. */
static size_t vma_merge_around(struct laf_mm *mm, size_t i)
{
	if (i + 1 < mm->nr_vmas && can_merge(&mm->vmas[i], &mm->vmas[i + 1])) {
		/* with both neighbours: prev and next must be compatible too */
		if (!(i > 0 && can_merge(&mm->vmas[i - 1], &mm->vmas[i]) &&
		      !is_mergeable_anon_vma(mm->vmas[i - 1].anon_vma, mm->vmas[i + 1].anon_vma))) {
			if (!mm->vmas[i].anon_vma)
				mm->vmas[i].anon_vma = mm->vmas[i + 1].anon_vma;
			mm->vmas[i].vm_end = mm->vmas[i + 1].vm_end;
			vma_remove_at(mm, i + 1);
		}
	}
	if (i > 0 && can_merge(&mm->vmas[i - 1], &mm->vmas[i])) {
		if (!mm->vmas[i - 1].anon_vma)
			mm->vmas[i - 1].anon_vma = mm->vmas[i].anon_vma;
		mm->vmas[i - 1].vm_end = mm->vmas[i].vm_end;
		vma_remove_at(mm, i);
		i--;
	}
	mm->vma_cache = i;
	return i;
}

static bool range_free(struct laf_mm *mm, uint64_t addr, uint64_t len)
{
	size_t i = vma_index(mm, addr);

	return i == mm->nr_vmas || mm->vmas[i].vm_start >= addr + len;
}

/* unmapped_area_topdown(): the highest gap of @len in [mmap_min_addr, mmap_base) */
static uint64_t unmapped_area_topdown(struct laf_mm *mm, uint64_t len)
{
	uint64_t high = mm->mmap_base, low = MMAP_MIN_ADDR;
	size_t i = vma_index(mm, high), k;

	if (len > high - low)
		return 0;
	for (k = i + 1; k-- > 0;) {
		uint64_t gap_end = high, gap_start = low;

		if (k < mm->nr_vmas && mm->vmas[k].vm_start < high)
			gap_end = mm->vmas[k].vm_start;
		if (k > 0 && mm->vmas[k - 1].vm_end > low)
			gap_start = mm->vmas[k - 1].vm_end;
		if (gap_end > gap_start && gap_end - gap_start >= len)
			return gap_end - len;
	}
	return 0;
}

static uint64_t get_unmapped_area_plain(struct laf_mm *mm, uint64_t hint, uint64_t len)
{
	if (hint) {
		hint = align_up(hint, mm->page_size);
		if (hint >= MMAP_MIN_ADDR && hint <= mm->task_size - len && range_free(mm, hint, len))
			return hint;
	}
	return unmapped_area_topdown(mm, len);
}

/*
 * __get_unmapped_area() for a private anonymous mapping: a length that is a
 * multiple of PMD_SIZE and no address hint goes through
 * __thp_get_unmapped_area() (pad by PMD_SIZE, then align; top-down takes the
 * upper aligned slot).  With a hint the placement is the ordinary one
 * ("mm: respect mmap hint address when aligning for THP", 6.13: `!addr`).
 */
static uint64_t get_unmapped_area(struct laf_mm *mm, uint64_t hint, uint64_t len)
{
	if (!hint && !(len & (mm->pmd_size - 1))) {
		uint64_t size = mm->pmd_size, len_pad = len + size, ret, off_sub;

		if (len_pad >= len) {
			ret = get_unmapped_area_plain(mm, 0, len_pad);
			if (ret) {
				off_sub = (0 - ret) & (size - 1);
				if (!off_sub)
					return ret + size;
				return ret + off_sub;
			}
		}
	}
	return get_unmapped_area_plain(mm, hint, len);
}

int __laf_mmap(struct laf_mm *mm, uint64_t addr, uint64_t len, int prot, int flags,
	       uint64_t *out)
{
	struct laf_vma v;
	size_t i;

	if (!len || (prot & ~(LAF_PROT_READ | LAF_PROT_WRITE)) ||
	    (flags & ~(LAF_MAP_FIXED | LAF_MAP_NOMERGE)))
		return LAF_EINVAL;
	/*
	 * mm/mmap.c do_mmap(): PAGE_ALIGN(len) == 0 (a length within a page of
	 * 2^64 wraps) is -ENOMEM; __get_unmapped_area(): len > TASK_SIZE is
	 * -ENOMEM.  TASK_SIZE is page-aligned, so one test covers both and
	 * the aligned length cannot wrap.
	 */
	if (len > mm->task_size)
		return LAF_ENOMEM;
	len = align_up(len, mm->page_size);
	if (flags & LAF_MAP_FIXED) {
		/*
		 * __get_unmapped_area() on the address MAP_FIXED returns as is:
		 * addr > TASK_SIZE - len is -ENOMEM, then offset_in_page(addr)
		 * -EINVAL, then security_mmap_addr() (below mmap_min_addr) -EPERM.
		 */
		if (addr > mm->task_size - len)
			return LAF_ENOMEM;
		if (addr & (mm->page_size - 1))
			return LAF_EINVAL;
		if (addr < MMAP_MIN_ADDR)
			return LAF_EPERM;
		if (!range_free(mm, addr, len))
			return LAF_EEXIST;
	} else {
		addr = get_unmapped_area(mm, addr, len);
		if (!addr)
			return LAF_ENOMEM;
	}
	if (vma_reserve(mm, 1))
		return LAF_ENOMEM;
	memset(&v, 0, sizeof(v));
	v.vm_start = addr;
	v.vm_end = addr + len;
	v.vm_flags = (prot & LAF_PROT_READ ? LAF_VM_READ : 0) |
		     (prot & LAF_PROT_WRITE ? LAF_VM_WRITE : 0);
	if (flags & LAF_MAP_NOMERGE) {
		v.no_merge_prev = 1;
		v.anon_vma = ++mm->next_anon_vma;
	}
	i = vma_index(mm, addr);
	vma_insert_at(mm, i, &v);
	if (!(flags & LAF_MAP_NOMERGE))
		vma_merge_around(mm, i);
	*out = addr;
	return 0;
}

/*
 * Split VMAs so that [start, end) is covered by whole VMAs.  Return: index of
 * the first VMA inside, or nr_vmas; LAF_ENOMEM via *err.
 */
static size_t split_range(struct laf_mm *mm, uint64_t start, uint64_t end, int *err)
{
	size_t i = vma_index(mm, start);

	*err = 0;
	if (i < mm->nr_vmas && mm->vmas[i].vm_start < start && mm->vmas[i].vm_end > start) {
		if ((*err = split_vma(mm, i, start)))
			return mm->nr_vmas;
		i++;
	}
	{
		size_t j = vma_index(mm, end - 1);

		if (j < mm->nr_vmas && mm->vmas[j].vm_start < end && mm->vmas[j].vm_end > end)
			if ((*err = split_vma(mm, j, end)))
				return mm->nr_vmas;
	}
	return i;
}

int __laf_munmap(struct laf_mm *mm, uint64_t start, uint64_t len)
{
	uint64_t end, floor, ceiling, gstart = 0, gend = 0;
	size_t i, first;
	int err;
	bool have = false;

	/*
	 * mm/vma.c do_vmi_munmap(): start and len are checked against
	 * TASK_SIZE before PAGE_ALIGN(len), so the aligned length cannot wrap
	 * (TASK_SIZE is page-aligned); an empty range is -EINVAL too.
	 */
	if ((start & (mm->page_size - 1)) || start > mm->task_size || len > mm->task_size - start)
		return LAF_EINVAL;
	end = start + align_up(len, mm->page_size);
	if (end == start)
		return LAF_EINVAL;
	first = split_range(mm, start, end, &err);
	if (err)
		return err;
	if (first == mm->nr_vmas || mm->vmas[first].vm_start >= end)
		return 0;
	floor = first > 0 ? mm->vmas[first - 1].vm_end : 0;
	for (i = first; i < mm->nr_vmas && mm->vmas[i].vm_start < end; i++)
		zap_page_range(mm, &mm->vmas[i], mm->vmas[i].vm_start, mm->vmas[i].vm_end);
	ceiling = i < mm->nr_vmas ? mm->vmas[i].vm_start : 0;
	/* free_pgtables(): gather removed VMAs less than PMD_SIZE apart */
	for (size_t k = first; k < i; k++) {
		struct laf_vma *v = &mm->vmas[k];

		if (have && v->vm_start <= gend + mm->pmd_size) {
			gend = v->vm_end;
			continue;
		}
		if (have)
			free_pgd_range(mm, gstart, gend, floor, v->vm_start);
		gstart = v->vm_start;
		gend = v->vm_end;
		have = true;
	}
	if (have)
		free_pgd_range(mm, gstart, gend, floor, ceiling);
	memmove(&mm->vmas[first], &mm->vmas[i], (mm->nr_vmas - i) * sizeof(mm->vmas[0]));
	mm->nr_vmas -= i - first;
	mm->vma_cache = 0;
	return 0;
}

/*
 * Apply new vm_flags (old & ~clear | set) to every VMA in [start, end):
 * split at the edges only where the flags change, then merge.  Holes give
 * -ENOMEM (after the mapped parts were updated) unless @holes_einval.
 */
static int modify_flags_range(struct laf_mm *mm, uint64_t start, uint64_t end,
			      uint64_t clear, uint64_t set, bool holes_einval)
{
	uint64_t addr = start;
	int hole = 0;

	while (addr < end) {
		size_t i = vma_index(mm, addr);
		struct laf_vma *v;
		uint64_t nflags, vend;
		int err;

		if (i == mm->nr_vmas || mm->vmas[i].vm_start >= end) {
			hole = 1;
			break;
		}
		v = &mm->vmas[i];
		if (v->vm_start > addr)
			hole = 1;
		if (v->vm_start > addr)
			addr = v->vm_start;
		vend = v->vm_end < end ? v->vm_end : end;
		nflags = (v->vm_flags & ~clear) | set;
		if (nflags != v->vm_flags) {
			if (v->vm_start < addr) {
				if ((err = split_vma(mm, i, addr)))
					return err;
				i++;
			}
			if (mm->vmas[i].vm_end > vend)
				if ((err = split_vma(mm, i, vend)))
					return err;
			mm->vmas[i].vm_flags = nflags;
			vma_merge_around(mm, i);
		}
		addr = vend;
	}
	if (hole)
		return holes_einval ? LAF_EINVAL : LAF_ENOMEM;
	return 0;
}

/*
 * MADV_DONTNEED page-table reclaim (mm/pt_reclaim.c, 6.14+): a zap that
 * covers a whole PTE table and leaves it empty frees it, so a later fault
 * there sees pmd_none again (checked on this machine's kernel:
 * docs/kernel-findings.md).
 */
static void try_reclaim_pt(struct laf_mm *mm, uint64_t addr)
{
	pmd_t *pmd = pmd_offset(mm, addr);
	unsigned int k;

	if (!pmd || !pmd->ptes || pmd_trans_huge(pmd))
		return;
	for (k = 0; k < mm->ptrs_per_pte; k++)
		if (!pte_none(pmd->ptes[k]))
			return;
	free(pmd->ptes);
	pte_free(mm, pmd->table_pfn);
	pmd->ptes = NULL;
	pmd->table_pfn = 0;
	mm->st.nr_ptes--;
}

static int madvise_dontneed(struct laf_mm *mm, uint64_t start, uint64_t end)
{
	size_t i = vma_index(mm, start);
	uint64_t addr = start;
	int hole = 0;

	for (; i < mm->nr_vmas && mm->vmas[i].vm_start < end; i++) {
		struct laf_vma *v = &mm->vmas[i];
		uint64_t s = v->vm_start > start ? v->vm_start : start;
		uint64_t e = v->vm_end < end ? v->vm_end : end;
		uint64_t a;

		if (v->vm_start > addr)
			hole = 1;
		zap_page_range(mm, v, s, e);
		/* reclaim per PMD chunk that the zap covered whole */
		for (a = align_up(s, mm->pmd_size); a + mm->pmd_size <= e && a >= s;
		     a += mm->pmd_size)
			try_reclaim_pt(mm, a);
		addr = e;
	}
	if (addr < end)
		hole = 1;
	return hole ? LAF_ENOMEM : 0;
}

int __laf_madvise(struct laf_mm *mm, uint64_t start, uint64_t len, int advice)
{
	uint64_t end, alen;

	if (start & (mm->page_size - 1))
		return LAF_EINVAL;
	if (advice != LAF_MADV_DONTNEED && advice != LAF_MADV_HUGEPAGE &&
	    advice != LAF_MADV_NOHUGEPAGE && advice != LAF_MADV_DONTFORK &&
	    advice != LAF_MADV_DOFORK && advice != LAF_MADV_WIPEONFORK &&
	    advice != LAF_MADV_KEEPONFORK)
		return LAF_EINVAL;
	/*
	 * mm/madvise.c is_valid_madvise(): a non-zero len that PAGE_ALIGN()
	 * rounds to 0, or start + len wrapping, is -EINVAL; nothing else about
	 * the range is: past TASK_SIZE is a hole (-ENOMEM, madvise_walk_vmas()).
	 */
	alen = align_up(len, mm->page_size);
	if (len && !alen)
		return LAF_EINVAL;
	end = start + alen;
	if (end < start)
		return LAF_EINVAL;
	if (end == start)
		return 0;
	switch (advice) {
	case LAF_MADV_DONTNEED:
		return madvise_dontneed(mm, start, end);
	case LAF_MADV_HUGEPAGE:	/* hugepage_madvise() */
		return modify_flags_range(mm, start, end, LAF_VM_NOHUGEPAGE, LAF_VM_HUGEPAGE, false);
	/*
	 * madvise_vma_behavior(): VM_DONTCOPY / VM_WIPEONFORK set or cleared
	 * (every emulated VMA is private anon, so WIPEONFORK is allowed)
	 */
	case LAF_MADV_DONTFORK:
		return modify_flags_range(mm, start, end, 0, LAF_VM_DONTCOPY, false);
	case LAF_MADV_DOFORK:
		return modify_flags_range(mm, start, end, LAF_VM_DONTCOPY, 0, false);
	case LAF_MADV_WIPEONFORK:
		return modify_flags_range(mm, start, end, 0, LAF_VM_WIPEONFORK, false);
	case LAF_MADV_KEEPONFORK:
		return modify_flags_range(mm, start, end, LAF_VM_WIPEONFORK, 0, false);
	default:
		return modify_flags_range(mm, start, end, LAF_VM_HUGEPAGE, LAF_VM_NOHUGEPAGE, false);
	}
}

int __laf_prctl(struct laf_mm *mm, int option, uint64_t arg2, uint64_t arg3, int64_t *out)
{
	*out = 0;
	if (option == LAF_PR_GET_THP_DISABLE) {
		if (arg2 || arg3)
			return LAF_EINVAL;
		*out = mm->mmf_disable_thp_completely ? 1 :
		       mm->mmf_disable_thp_except_advised ? 3 : 0;
		return 0;
	}
	if (option != LAF_PR_SET_THP_DISABLE)
		return LAF_EINVAL;
	/*
	 * prctl_set_thp_disable(bool thp_disable, flags): any non-zero arg2
	 * disables; flags only when disabling, only EXCEPT_ADVISED is known.
	 */
	if ((!arg2 && arg3) || (arg3 & ~(uint64_t)LAF_PR_THP_DISABLE_EXCEPT_ADVISED))
		return LAF_EINVAL;
	if (arg2) {
		mm->mmf_disable_thp_except_advised = arg3 & LAF_PR_THP_DISABLE_EXCEPT_ADVISED;
		mm->mmf_disable_thp_completely = !mm->mmf_disable_thp_except_advised;
	} else {
		mm->mmf_disable_thp_completely = false;
		mm->mmf_disable_thp_except_advised = false;
	}
	return 0;
}

/**
 * insert_vm_struct - add a copy of @vma to @mm, no merge (mm/vma.c)
 *
 * dup_mmap() stores the child's VMAs one by one, in address order, exactly
 * as the parent has them (the kernel duplicates the maple tree): no
 * merging, whatever the neighbours.  @vma must not overlap a VMA of @mm.
 * Return: 0 or LAF_ENOMEM.
 */
int insert_vm_struct(struct laf_mm *mm, const struct laf_vma *vma)
{
	if (vma_reserve(mm, 1))
		return LAF_ENOMEM;
	vma_insert_at(mm, vma_index(mm, vma->vm_start), vma);
	return 0;
}

/**
 * vma_modify_flags_uffd - set the uffd modes of the VMAs in [@start, @end)
 * @set: the new VM_UFFD_* bits (0 clears them)
 *
 * mm/vma.c vma_modify_flags_uffd(): as every vm_flags change, split at the
 * range edges where the flags change, then merge with the neighbours.  The
 * caller (userfaultfd.c) walks the VMAs itself, so a hole here is -EINVAL.
 * Return: 0 or a negative LAF_E*.
 */
int vma_modify_flags_uffd(struct laf_mm *mm, uint64_t start, uint64_t end, uint64_t set)
{
	return modify_flags_range(mm, start, end, VM_UFFD_FLAGS, set, true);
}
