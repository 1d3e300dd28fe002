// SPDX-License-Identifier: GPL-2.0
/*
 * vma.c - the VMA lifecycle: the VMA tree, placement, split, merge,
 * mmap/munmap/madvise, prctl, anon_vma_prepare(); the vm_flags change behind
 * userfaultfd registration (userfaultfd.c).
 *
 * The VMA tree gives what the kernel's maple tree gives, in O(log n):
 * find_vma() (the first VMA ending above an address), insert, removal,
 * neighbours and ordered iteration (vma_prev()/vma_next(), for_each_vma()),
 * and top-down placement (unmapped_area_topdown(): the highest gap of a
 * length below mmap_base).  It is the structure of mm/mmap.c before 6.1: an
 * address-ordered list (vm_prev/vm_next) plus a balanced tree keyed by
 * vm_start whose nodes carry the largest gap below any VMA of their subtree
 * (rb_subtree_gap, vma_compute_gap()), here an AVL tree.
 *
 * What matters for folio-fit decisions is emulated as the kernel does it:
 *  - placement: top-down below mmap_base; an anonymous mapping whose length
 *    is a multiple of PMD_SIZE is PMD-aligned (__thp_get_unmapped_area());
 *  - split: madvise, munmap and uffd registration split VMAs at their range
 *    edges; a new edge inside a huge PMD splits the PMD
 *    (vma_adjust_trans_huge());
 *  - merge: adjacent VMAs with equal vm_flags, compatible anon_vmas and
 *    contiguous vm_pgoff merge (at mmap, after madvise/uffd changes, at an
 *    mremap() destination); vm_pgoff is vm_start >> PAGE_SHIFT at mmap and
 *    kept by an mremap() move (mremap.c), so a moved VMA may not merge;
 *  - anon_vma: assigned at the first fault that needs one; reused from an
 *    adjacent VMA that differs only in access flags (find_mergeable_anon_vma);
 *    split VMAs share their anon_vma, so they can merge back;
 *  - vm.max_map_count (struct laf_config.max_map_count): do_mmap() fails
 *    with -ENOMEM when map_count > max_map_count; a split that adds a VMA
 *    fails when map_count >= max_map_count (mm/vma.c split_vma(), the
 *    middle-of-a-VMA munmap of vms_gather_munmap_vmas()); madvise turns
 *    that -ENOMEM into -EAGAIN (mm/madvise.c madvise_vma_behavior()).
 * mprotect (mprotect.c) changes vm_flags through vma_modify_flags(); mremap
 * (mremap.c) resizes and moves VMAs with the helpers exported below.
 * Not emulated: VM_GROWSDOWN stacks and guard gaps,
 * file and shared mappings.
 */
#include <stdio.h>
#include <stdlib.h>

#include "laf_internal.h"

#define VM_ACCESS_FLAGS (LAF_VM_READ | LAF_VM_WRITE | LAF_VM_EXEC)
#define VM_UFFD_FLAGS (LAF_VM_UFFD_MISSING | LAF_VM_UFFD_WP | LAF_VM_UFFD_MINOR)

/* ------------------------------------------------------------------ */
/* the VMA tree                                                        */

/* vma_compute_gap(): the free space between @vma and the VMA below it */
static inline uint64_t vma_compute_gap(const struct laf_vma *vma)
{
	return vma->vm_start - (vma->vm_prev ? vma->vm_prev->vm_end : 0);
}

static inline int vt_height(const struct laf_vma *n)
{
	return n ? n->vm_rb_height : 0;
}

static inline uint64_t vt_subtree_gap(const struct laf_vma *n)
{
	return n ? n->rb_subtree_gap : 0;
}

/* vma_compute_subtree_gap() + the AVL height of @n from its children */
static void vt_recompute(struct laf_vma *n)
{
	uint64_t gap = vma_compute_gap(n), l = vt_subtree_gap(n->vm_rb_left),
		 r = vt_subtree_gap(n->vm_rb_right);
	int hl = vt_height(n->vm_rb_left), hr = vt_height(n->vm_rb_right);

	if (l > gap)
		gap = l;
	if (r > gap)
		gap = r;
	n->rb_subtree_gap = gap;
	n->vm_rb_height = 1 + (hl > hr ? hl : hr);
}

static struct laf_vma *vt_rotate_right(struct laf_vma *n)
{
	struct laf_vma *l = n->vm_rb_left;

	n->vm_rb_left = l->vm_rb_right;
	l->vm_rb_right = n;
	vt_recompute(n);
	vt_recompute(l);
	return l;
}

static struct laf_vma *vt_rotate_left(struct laf_vma *n)
{
	struct laf_vma *r = n->vm_rb_right;

	n->vm_rb_right = r->vm_rb_left;
	r->vm_rb_left = n;
	vt_recompute(n);
	vt_recompute(r);
	return r;
}

/* Recompute @n and restore the AVL balance at it; return the subtree's root. */
static struct laf_vma *vt_balance(struct laf_vma *n)
{
	int bf;

	vt_recompute(n);
	bf = vt_height(n->vm_rb_left) - vt_height(n->vm_rb_right);
	if (bf > 1) {
		if (vt_height(n->vm_rb_left->vm_rb_left) < vt_height(n->vm_rb_left->vm_rb_right))
			n->vm_rb_left = vt_rotate_left(n->vm_rb_left);
		return vt_rotate_right(n);
	}
	if (bf < -1) {
		if (vt_height(n->vm_rb_right->vm_rb_right) < vt_height(n->vm_rb_right->vm_rb_left))
			n->vm_rb_right = vt_rotate_right(n->vm_rb_right);
		return vt_rotate_left(n);
	}
	return n;
}

static struct laf_vma *vt_insert(struct laf_vma *root, struct laf_vma *vma)
{
	if (!root)
		return vma;
	if (vma->vm_start < root->vm_start)
		root->vm_rb_left = vt_insert(root->vm_rb_left, vma);
	else
		root->vm_rb_right = vt_insert(root->vm_rb_right, vma);
	return vt_balance(root);
}

/* Detach the leftmost node of @root into *@min; return the new subtree. */
static struct laf_vma *vt_remove_min(struct laf_vma *root, struct laf_vma **min)
{
	if (!root->vm_rb_left) {
		*min = root;
		return root->vm_rb_right;
	}
	root->vm_rb_left = vt_remove_min(root->vm_rb_left, min);
	return vt_balance(root);
}

static struct laf_vma *vt_remove(struct laf_vma *root, struct laf_vma *vma)
{
	struct laf_vma *succ;

	if (!root)
		return NULL;
	if (vma->vm_start < root->vm_start) {
		root->vm_rb_left = vt_remove(root->vm_rb_left, vma);
	} else if (vma->vm_start > root->vm_start) {
		root->vm_rb_right = vt_remove(root->vm_rb_right, vma);
	} else {
		if (!root->vm_rb_right)
			return root->vm_rb_left;
		root->vm_rb_right = vt_remove_min(root->vm_rb_right, &succ);
		succ->vm_rb_left = root->vm_rb_left;
		succ->vm_rb_right = root->vm_rb_right;
		root = succ;
	}
	return vt_balance(root);
}

/* Recompute the augmented gaps on the path from @root to the node at @key. */
static void vt_update_path(struct laf_vma *root, uint64_t key)
{
	if (!root)
		return;
	if (key < root->vm_start)
		vt_update_path(root->vm_rb_left, key);
	else if (key > root->vm_start)
		vt_update_path(root->vm_rb_right, key);
	vt_recompute(root);
}

/*
 * vma_gap_update - @vma's gap changed (the VMA below it grew, shrank or went
 * away): propagate it up the tree.  NULL (nothing above) is a no-op.
 */
static void vma_gap_update(struct laf_mm *mm, struct laf_vma *vma)
{
	if (vma)
		vt_update_path(mm->mm_rb, vma->vm_start);
}

/**
 * vma_link - insert @vma (not overlapping any VMA) after @prev (NULL: first)
 *
 * __vma_link_list() + __vma_link_rb() of the pre-maple-tree kernel: list,
 * tree, map_count; the gap of the VMA above changes, so it is updated.
 */
static void vma_link(struct laf_mm *mm, struct laf_vma *vma, struct laf_vma *prev)
{
	struct laf_vma *next = prev ? prev->vm_next : mm->vma_first;

	vma->vm_prev = prev;
	vma->vm_next = next;
	if (prev)
		prev->vm_next = vma;
	else
		mm->vma_first = vma;
	if (next)
		next->vm_prev = vma;
	else
		mm->vma_last = vma;
	vma->vm_rb_left = vma->vm_rb_right = NULL;
	vt_recompute(vma);
	mm->mm_rb = vt_insert(mm->mm_rb, vma);
	vma_gap_update(mm, next);
	mm->map_count++;
	mm->vmacache = vma;
}

/**
 * vma_unlink_free - remove @vma from the list and the tree, then free it
 *
 * __vma_unlink_list() + vma_rb_erase() + vm_area_free().  The find_vma()
 * cache forgets it (vmacache_invalidate()).
 */
static void vma_unlink_free(struct laf_mm *mm, struct laf_vma *vma)
{
	struct laf_vma *prev = vma->vm_prev, *next = vma->vm_next;

	mm->mm_rb = vt_remove(mm->mm_rb, vma);
	if (prev)
		prev->vm_next = next;
	else
		mm->vma_first = next;
	if (next)
		next->vm_prev = prev;
	else
		mm->vma_last = prev;
	vma_gap_update(mm, next);
	mm->map_count--;
	if (mm->vmacache == vma)
		mm->vmacache = NULL;
	free(vma);
}

/*
 * vma_set_end - @vma now ends at @end (a split or a merge): the VMA above
 * sees a new gap.
 */
void vma_set_end(struct laf_mm *mm, struct laf_vma *vma, uint64_t end)
{
	vma->vm_end = end;
	vma_gap_update(mm, vma->vm_next);
}

/* The first VMA with vm_start >= @addr, or NULL. */
static struct laf_vma *vma_at_or_above(struct laf_mm *mm, uint64_t addr)
{
	struct laf_vma *n = mm->mm_rb, *found = NULL;

	while (n) {
		if (n->vm_start >= addr) {
			found = n;
			n = n->vm_rb_left;
		} else {
			n = n->vm_rb_right;
		}
	}
	return found;
}

/**
 * find_vma - the first VMA with vm_end > @addr, or NULL
 *
 * O(log n) in the tree.  A one-entry cache (like the per-thread vmacache of
 * old) serves streams of faults in one VMA.
 */
struct laf_vma *find_vma(struct laf_mm *mm, uint64_t addr)
{
	struct laf_vma *n = mm->vmacache, *found = NULL;

	if (n && addr < n->vm_end && (!n->vm_prev || addr >= n->vm_prev->vm_end))
		return n;
	for (n = mm->mm_rb; n;) {
		if (n->vm_end > addr) {
			found = n;
			n = n->vm_rb_left;
		} else {
			n = n->vm_rb_right;
		}
	}
	if (found)
		mm->vmacache = found;
	return found;
}

/* find_vma_prev(): find_vma() and the VMA below @addr's VMA (the last one if none) */
static struct laf_vma *find_vma_prev(struct laf_mm *mm, uint64_t addr, struct laf_vma **pprev)
{
	struct laf_vma *vma = find_vma(mm, addr);

	*pprev = vma ? vma->vm_prev : mm->vma_last;
	return vma;
}

/**
 * exit_mmap_vmas - free every VMA (exit_mmap()'s remove_vma() loop)
 *
 * The caller has zapped the pages and page tables already.
 */
void exit_mmap_vmas(struct laf_mm *mm)
{
	struct laf_vma *vma = mm->vma_first, *next;

	for (; vma; vma = next) {
		next = vma->vm_next;
		free(vma);
	}
	mm->mm_rb = mm->vma_first = mm->vma_last = mm->vmacache = NULL;
	mm->map_count = 0;
}

/* validate_mm_rb(): AVL shape, key order and augmented gaps of @n's subtree */
static int validate_subtree(const struct laf_vma *n, const struct laf_vma *lo,
			    const struct laf_vma *hi, size_t *count, char *msg, size_t msglen)
{
	uint64_t gap;
	int hl, hr, err;

	if (!n)
		return 0;
	if ((lo && n->vm_start <= lo->vm_start) || (hi && n->vm_start >= hi->vm_start)) {
		snprintf(msg, msglen, "vma tree out of order at %#llx", (unsigned long long)n->vm_start);
		return LAF_EUCLEAN;
	}
	if ((err = validate_subtree(n->vm_rb_left, lo, n, count, msg, msglen)) ||
	    (err = validate_subtree(n->vm_rb_right, n, hi, count, msg, msglen)))
		return err;
	(*count)++;
	hl = vt_height(n->vm_rb_left);
	hr = vt_height(n->vm_rb_right);
	gap = vma_compute_gap(n);
	if (vt_subtree_gap(n->vm_rb_left) > gap)
		gap = vt_subtree_gap(n->vm_rb_left);
	if (vt_subtree_gap(n->vm_rb_right) > gap)
		gap = vt_subtree_gap(n->vm_rb_right);
	if (n->vm_rb_height != 1 + (hl > hr ? hl : hr) || hl - hr > 1 || hr - hl > 1 ||
	    n->rb_subtree_gap != gap) {
		snprintf(msg, msglen, "vma tree node %#llx: height %d (%d/%d), gap %#llx (want %#llx)",
			 (unsigned long long)n->vm_start, n->vm_rb_height, hl, hr,
			 (unsigned long long)n->rb_subtree_gap, (unsigned long long)gap);
		return LAF_EUCLEAN;
	}
	return 0;
}

/**
 * validate_mm - the VMA tree agrees with the list and map_count (mm/vma.c validate_mm())
 *
 * Checks the list links both ways, the tree's order, AVL balance and
 * augmented gaps, and that list, tree and map_count count the same VMAs.
 * Return: 0, or LAF_EUCLEAN with a message in @msg.
 */
int validate_mm(struct laf_mm *mm, char *msg, size_t msglen)
{
	const struct laf_vma *v, *prev = NULL;
	size_t n = 0, in_tree = 0;
	int err;

	for (v = mm->vma_first; v; prev = v, v = v->vm_next) {
		if (v->vm_prev != prev || ++n > mm->map_count) {
			snprintf(msg, msglen, "vma list broken at %#llx", (unsigned long long)v->vm_start);
			return LAF_EUCLEAN;
		}
	}
	if (prev != mm->vma_last || n != mm->map_count) {
		snprintf(msg, msglen, "vma list: %zu VMAs, map_count %zu", n, mm->map_count);
		return LAF_EUCLEAN;
	}
	if ((err = validate_subtree(mm->mm_rb, NULL, NULL, &in_tree, msg, msglen)))
		return err;
	if (in_tree != n) {
		snprintf(msg, msglen, "vma tree holds %zu VMAs, the list %zu", in_tree, n);
		return LAF_EUCLEAN;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* anon_vma, split, merge                                              */

/* anon_vma_compatible() (mm/rmap.c): adjacent, flags equal but access bits, vm_pgoff continues */
static bool anon_vma_compatible(const struct laf_mm *mm, const struct laf_vma *a,
				const struct laf_vma *b)
{
	return a->vm_end == b->vm_start &&
	       !((a->vm_flags ^ b->vm_flags) & ~(uint64_t)VM_ACCESS_FLAGS) &&
	       b->vm_pgoff == a->vm_pgoff + ((b->vm_start - a->vm_start) >> mm->page_shift);
}

/**
 * vmf_anon_prepare - anon_vma_prepare(): give @vma an anon_vma
 *
 * find_mergeable_anon_vma(): reuse the anon_vma of an adjacent VMA that is
 * compatible (adjacent, same flags but for access bits, vm_pgoff
 * continuing); else a new one.
 * Return: 0.
 */
int vmf_anon_prepare(struct laf_mm *mm, struct laf_vma *vma)
{
	struct laf_vma *next = vma_next(vma), *prev = vma_prev(vma);

	if (likely(vma->anon_vma))
		return 0;
	if (next && next->anon_vma && anon_vma_compatible(mm, vma, next))
		vma->anon_vma = next->anon_vma;
	else if (prev && prev->anon_vma && anon_vma_compatible(mm, prev, vma))
		vma->anon_vma = prev->anon_vma;
	else
		vma->anon_vma = ++mm->next_anon_vma;
	return 0;
}

/**
 * __split_vma - split @vma at @addr (vm_start < addr < vm_end)
 *
 * Both halves keep flags and anon_vma; @vma keeps [vm_start, addr), a new
 * VMA gets [addr, vm_end) (new_below == 0).  No max_map_count check: the
 * callers make it where the kernel does (split_vma(), vms_gather_munmap_vmas()).
 * Return: the upper half, or NULL (host out of memory; no change).
 */
struct laf_vma *__split_vma(struct laf_mm *mm, struct laf_vma *vma, uint64_t addr)
{
	struct laf_vma *nv = malloc(sizeof(*nv));

	if (!nv)
		return NULL;
	split_huge_pmd_address(mm, vma, addr);
	*nv = *vma;
	nv->vm_start = addr;
	nv->vm_pgoff = vma->vm_pgoff + ((addr - vma->vm_start) >> mm->page_shift);
	nv->no_merge_prev = 0;
	vma->vm_end = addr;
	vma_link(mm, nv, vma);
	return nv;
}

static bool is_mergeable_anon_vma(uint64_t a, uint64_t b)
{
	return !a || !b || a == b;
}

/*
 * vma_can_merge - @a (just below @b) and @b may merge: same vm_flags,
 * compatible anon_vmas and @b's vm_pgoff continuing @a's
 * (is_mergeable_vma(), can_vma_merge_after(): a moved VMA keeps its pgoff,
 * docs/kernel-semantics.md §5.5).
 */
bool vma_can_merge(const struct laf_vma *a, const struct laf_vma *b, unsigned int page_shift)
{
	return a->vm_end == b->vm_start && a->vm_flags == b->vm_flags && !b->no_merge_prev &&
	       is_mergeable_anon_vma(a->anon_vma, b->anon_vma) &&
	       a->vm_pgoff + ((a->vm_end - a->vm_start) >> page_shift) == b->vm_pgoff;
}

#define can_merge(a, b) vma_can_merge((a), (b), mm->page_shift)

/**
 * vma_merge_around - merge @vma with its neighbours where allowed
 *
 * vma_merge_new_range() / vma_merge_existing_range(): with both neighbours,
 * prev and next must be anon_vma-compatible too, else only prev merges.
 * A merged-away VMA is freed.  Return: the VMA that now covers @vma's range.
 */
struct laf_vma *vma_merge_around(struct laf_mm *mm, struct laf_vma *vma)
{
	struct laf_vma *prev = vma_prev(vma), *next = vma_next(vma);

	if (next && can_merge(vma, next)) {
		/* with both neighbours: prev and next must be compatible too */
		if (!(prev && can_merge(prev, vma) &&
		      !is_mergeable_anon_vma(prev->anon_vma, next->anon_vma))) {
			if (!vma->anon_vma)
				vma->anon_vma = next->anon_vma;
			vma_set_end(mm, vma, next->vm_end);
			vma_unlink_free(mm, next);
		}
	}
	if (prev && can_merge(prev, vma)) {
		if (!prev->anon_vma)
			prev->anon_vma = vma->anon_vma;
		vma_set_end(mm, prev, vma->vm_end);
		vma_unlink_free(mm, vma);
		vma = prev;
	}
	mm->vmacache = vma;
	return vma;
}

/*
 * vma_modify_splits - how many split_vma() calls vma_modify() makes to give
 * [@start, @end) of @vma the flags @nflags
 *
 * mm/vma.c vma_modify(): vma_merge_existing_range() first; a range at one
 * edge of @vma that merges into the neighbour on that side needs no split
 * (the boundary moves); otherwise one split per edge inside @vma.
 */
static int vma_modify_splits(struct laf_mm *mm, const struct laf_vma *vma, uint64_t start,
			     uint64_t end, uint64_t nflags)
{
	bool below = start > vma->vm_start, above = end < vma->vm_end;
	struct laf_vma part = *vma;

	if (below && above)
		return 2;
	if (!below && !above)
		return 0;
	part.vm_start = start;
	part.vm_pgoff = vma->vm_pgoff + ((start - vma->vm_start) >> mm->page_shift);
	part.vm_end = end;
	part.vm_flags = nflags;
	if (above)	/* [vm_start, end): into prev? */
		return !(vma->vm_prev && can_merge(vma->vm_prev, &part));
	part.no_merge_prev = 0;
	return !(vma->vm_next && can_merge(&part, vma->vm_next));
}

/* ------------------------------------------------------------------ */
/* placement                                                           */

bool range_free(struct laf_mm *mm, uint64_t addr, uint64_t len)
{
	struct laf_vma *v = find_vma(mm, addr);

	return !v || v->vm_start >= addr + len;
}

/*
 * The rightmost VMA of @n's subtree with vm_start < @high whose gap below
 * is >= @len, or NULL.  O(log n): a subtree wholly below @high with a large
 * enough rb_subtree_gap always holds an answer, so only the path along @high
 * branches.
 */
static struct laf_vma *gap_search_below(struct laf_vma *n, uint64_t high, uint64_t len)
{
	while (n && n->rb_subtree_gap >= len) {
		struct laf_vma *r;

		if (n->vm_start >= high) {
			n = n->vm_rb_left;
			continue;
		}
		r = gap_search_below(n->vm_rb_right, high, len);
		if (r)
			return r;
		if (vma_compute_gap(n) >= len)
			return n;
		n = n->vm_rb_left;
	}
	return NULL;
}

/**
 * unmapped_area_topdown - the highest gap of @len in [mmap_min_addr, mmap_base)
 *
 * mm/mmap.c unmapped_area_topdown() without alignment or guard gaps: first
 * the gap that ends at mmap_base (below the first VMA at or above it), then
 * the highest VMA below mmap_base with a gap of @len beneath it, found
 * through rb_subtree_gap.  Return: the start of the area (gap end - @len),
 * or 0 if none fits.
 */
static uint64_t unmapped_area_topdown(struct laf_mm *mm, uint64_t len)
{
	uint64_t high = mm->mmap_base, low = MMAP_MIN_ADDR, gap_start;
	struct laf_vma *above, *below, *v;

	if (len > high - low)
		return 0;
	above = vma_at_or_above(mm, high);
	below = above ? vma_prev(above) : mm->vma_last;
	gap_start = below && below->vm_end > low ? below->vm_end : low;
	if (high > gap_start && high - gap_start >= len)
		return high - len;
	v = gap_search_below(mm->mm_rb, high, len);
	if (v && v->vm_start >= low && v->vm_start - low >= len)
		return v->vm_start - len;
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
uint64_t get_unmapped_area(struct laf_mm *mm, uint64_t hint, uint64_t len)
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

/* ------------------------------------------------------------------ */
/* mmap, munmap, madvise                                               */

int __laf_mmap(struct laf_mm *mm, uint64_t addr, uint64_t len, int prot, int flags,
	       uint64_t *out)
{
	struct laf_vma *v, *prev;

	if (!len || (prot & ~(LAF_PROT_READ | LAF_PROT_WRITE | LAF_PROT_EXEC)) ||
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
	/* do_mmap(): "Too many mappings?" before __get_unmapped_area() */
	if (mm->map_count > mm->machine->cfg.max_map_count)
		return LAF_ENOMEM;
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
	v = calloc(1, sizeof(*v));
	if (!v)
		return LAF_ENOMEM;
	v->vm_start = addr;
	v->vm_end = addr + len;
	v->vm_pgoff = addr >> mm->page_shift;
	v->vm_flags = (prot & LAF_PROT_READ ? LAF_VM_READ : 0) |	/* calc_vm_prot_bits() */
		      (prot & LAF_PROT_WRITE ? LAF_VM_WRITE : 0) |
		      (prot & LAF_PROT_EXEC ? LAF_VM_EXEC : 0);
	if (v->vm_flags & LAF_VM_WRITE)		/* accountable_mapping() */
		v->vm_flags |= LAF_VM_ACCOUNT;
	if (flags & LAF_MAP_NOMERGE) {
		v->no_merge_prev = 1;
		v->anon_vma = ++mm->next_anon_vma;
	}
	find_vma_prev(mm, addr, &prev);
	vma_link(mm, v, prev);
	if (!(flags & LAF_MAP_NOMERGE))
		vma_merge_around(mm, v);
	*out = addr;
	return 0;
}

/*
 * Split VMAs so that [start, end) is covered by whole VMAs.  Return: the
 * first VMA inside, or NULL (none inside, or LAF_ENOMEM via *err).
 */
static struct laf_vma *split_range(struct laf_mm *mm, uint64_t start, uint64_t end, int *err)
{
	struct laf_vma *first = find_vma(mm, start), *last;

	*err = 0;
	if (!first || first->vm_start >= end)
		return NULL;
	if (first->vm_start < start) {
		first = __split_vma(mm, first, start);
		if (!first)
			goto nomem;
	}
	last = find_vma(mm, end - 1);
	if (last && last->vm_start < end && last->vm_end > end && !__split_vma(mm, last, end))
		goto nomem;
	return first;
nomem:
	*err = LAF_ENOMEM;
	return NULL;
}

int __laf_munmap(struct laf_mm *mm, uint64_t start, uint64_t len)
{
	uint64_t end, floor, ceiling, gstart = 0, gend = 0;
	struct laf_vma *first, *v, *after;
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
	/*
	 * vms_gather_munmap_vmas(): unmapping the middle of one VMA adds one;
	 * refused at max_map_count ("let map_count go just above its limit
	 * temporarily" only for the other splits).
	 */
	first = find_vma(mm, start);
	if (first && first->vm_start < start && first->vm_end > end &&
	    mm->map_count >= mm->machine->cfg.max_map_count)
		return LAF_ENOMEM;
	first = split_range(mm, start, end, &err);
	if (err)
		return err;
	if (!first)
		return 0;
	floor = vma_prev(first) ? vma_prev(first)->vm_end : 0;
	for (v = first; v && v->vm_start < end; v = vma_next(v))
		zap_page_range(mm, v, v->vm_start, v->vm_end);
	after = v;
	ceiling = after ? after->vm_start : 0;
	/* free_pgtables(): gather removed VMAs less than PMD_SIZE apart */
	for (v = first; v != after; v = vma_next(v)) {
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
	while (first != after) {
		v = vma_next(first);
		vma_unlink_free(mm, first);
		first = v;
	}
	return 0;
}

/**
 * vma_modify_flags - give [@start, @end) of @vma (inside it) the flags @newflags
 *
 * mm/vma.c vma_modify_flags() -> vma_modify(): split at the range edges
 * that a merge does not absorb, set the flags, merge with the neighbours.
 * Each split needs map_count < max_map_count (split_vma()).
 * Simplified: when both edges need a split, both are checked before the
 * first (the kernel may leave the first split done when the second fails).
 * Return: the VMA that now covers [@start, @end), or NULL with *@err =
 * LAF_ENOMEM (max_map_count, or the host out of memory) and nothing changed
 * (but a host allocation failure after the first split).
 */
struct laf_vma *vma_modify_flags(struct laf_mm *mm, struct laf_vma *vma, uint64_t start,
				 uint64_t end, uint64_t newflags, int *err)
{
	int splits = vma_modify_splits(mm, vma, start, end, newflags);

	*err = LAF_ENOMEM;
	if (splits && mm->map_count + (size_t)splits - 1 >= mm->machine->cfg.max_map_count)
		return NULL;
	if (vma->vm_start < start && !(vma = __split_vma(mm, vma, start)))
		return NULL;
	if (vma->vm_end > end && !__split_vma(mm, vma, end))
		return NULL;
	*err = 0;
	vma->vm_flags = newflags;
	return vma_merge_around(mm, vma);
}

/*
 * Apply new vm_flags (old & ~clear | set) to every VMA in [start, end):
 * split at the edges only where the flags change, then merge.  A split that
 * max_map_count refuses (split_vma(): map_count >= max_map_count), or a host
 * allocation failure, returns @nomem_err; holes give @hole_err after the
 * mapped parts were updated.  Each VMA goes through vma_modify_flags().
 */
static int modify_flags_range(struct laf_mm *mm, uint64_t start, uint64_t end,
			      uint64_t clear, uint64_t set, int hole_err, int nomem_err)
{
	uint64_t addr = start;
	int hole = 0, err;

	while (addr < end) {
		struct laf_vma *v = find_vma(mm, addr);
		uint64_t nflags, vend;

		if (!v || v->vm_start >= end) {
			hole = 1;
			break;
		}
		if (v->vm_start > addr) {
			hole = 1;
			addr = v->vm_start;
		}
		vend = v->vm_end < end ? v->vm_end : end;
		nflags = (v->vm_flags & ~clear) | set;
		if (nflags != v->vm_flags && !vma_modify_flags(mm, v, addr, vend, nflags, &err))
			return nomem_err;
		addr = vend;
	}
	return hole ? hole_err : 0;
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
	struct laf_vma *v;
	uint64_t addr = start;
	int hole = 0;

	for (v = find_vma(mm, start); v && v->vm_start < end; v = vma_next(v)) {
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
	/*
	 * madvise_vma_behavior(): a vm_flags change that cannot split (-ENOMEM,
	 * max_map_count included) is -EAGAIN; holes stay -ENOMEM
	 * (madvise_walk_vmas()).
	 */
	switch (advice) {
	case LAF_MADV_DONTNEED:
		return madvise_dontneed(mm, start, end);
	case LAF_MADV_HUGEPAGE:	/* hugepage_madvise() */
		return modify_flags_range(mm, start, end, LAF_VM_NOHUGEPAGE, LAF_VM_HUGEPAGE,
					  LAF_ENOMEM, LAF_EAGAIN);
	/*
	 * madvise_vma_behavior(): VM_DONTCOPY / VM_WIPEONFORK set or cleared
	 * (every emulated VMA is private anon, so WIPEONFORK is allowed)
	 */
	case LAF_MADV_DONTFORK:
		return modify_flags_range(mm, start, end, 0, LAF_VM_DONTCOPY,
					  LAF_ENOMEM, LAF_EAGAIN);
	case LAF_MADV_DOFORK:
		return modify_flags_range(mm, start, end, LAF_VM_DONTCOPY, 0, LAF_ENOMEM, LAF_EAGAIN);
	case LAF_MADV_WIPEONFORK:
		return modify_flags_range(mm, start, end, 0, LAF_VM_WIPEONFORK,
					  LAF_ENOMEM, LAF_EAGAIN);
	case LAF_MADV_KEEPONFORK:
		return modify_flags_range(mm, start, end, LAF_VM_WIPEONFORK, 0, LAF_ENOMEM, LAF_EAGAIN);
	default:
		return modify_flags_range(mm, start, end, LAF_VM_HUGEPAGE, LAF_VM_NOHUGEPAGE,
					  LAF_ENOMEM, LAF_EAGAIN);
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
	struct laf_vma *nv = malloc(sizeof(*nv)), *above;

	if (!nv)
		return LAF_ENOMEM;
	*nv = *vma;
	above = find_vma(mm, vma->vm_start);
	vma_link(mm, nv, above ? above->vm_prev : mm->vma_last);
	return 0;
}

/**
 * vma_modify_flags_uffd - set the uffd modes of the VMAs in [@start, @end)
 * @set: the new VM_UFFD_* bits (0 clears them)
 *
 * mm/vma.c vma_modify_flags_uffd(): as every vm_flags change, split at the
 * range edges where the flags change, then merge with the neighbours; a
 * split refused by max_map_count is -ENOMEM (split_vma()).  The caller
 * (userfaultfd.c) walks the VMAs itself, so a hole here is -EINVAL.
 * Return: 0 or a negative LAF_E*.
 */
int vma_modify_flags_uffd(struct laf_mm *mm, uint64_t start, uint64_t end, uint64_t set)
{
	return modify_flags_range(mm, start, end, VM_UFFD_FLAGS, set, LAF_EINVAL, LAF_ENOMEM);
}

/**
 * vma_merge_next - @vma grew: absorb the next VMA if now adjacent and mergeable
 *
 * The tail of vma_merge_extend() -> vma_merge_new_range() (mm/vma.c): the
 * extension itself always belongs to @vma; the VMA above joins it when
 * vma_can_merge() allows.
 */
void vma_merge_next(struct laf_mm *mm, struct laf_vma *vma)
{
	struct laf_vma *next = vma_next(vma);

	if (next && can_merge(vma, next)) {
		if (!vma->anon_vma)
			vma->anon_vma = next->anon_vma;
		vma_set_end(mm, vma, next->vm_end);
		vma_unlink_free(mm, next);
	}
	mm->vmacache = vma;
}

/**
 * vma_insert_copy - link a copy of @vma (not overlapping any VMA), no merge
 *
 * vm_area_dup() + vma_link() for copy_vma() (mremap.c), which merges
 * afterwards with vma_merge_around().  Return: the new VMA, or NULL (host
 * out of memory).
 */
struct laf_vma *vma_insert_copy(struct laf_mm *mm, const struct laf_vma *vma)
{
	struct laf_vma *nv = malloc(sizeof(*nv)), *above;

	if (!nv)
		return NULL;
	*nv = *vma;
	above = find_vma(mm, vma->vm_start);
	vma_link(mm, nv, above ? above->vm_prev : mm->vma_last);
	return nv;
}
