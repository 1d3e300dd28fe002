// SPDX-License-Identifier: GPL-2.0
/*
 * ops.c - the op-stream executor: a workload or a trace replay compiled into
 * an array of struct laf_op records (laf.h) runs in one call, as a process's
 * system calls and memory accesses run without a return to its tracer.
 *
 * Each record calls the same bodies the single entry points call
 * (__laf_mmap(), __laf_munmap(), __laf_madvise(), __laf_prctl(), the
 * userfaultfd helpers, access_range()), so a stream gives exactly the state
 * and counters of the same calls made one by one.  A failure is the record's
 * own (counted by step and errno in struct laf_ops_result); the stream goes
 * on unless the record asked to stop it (LAF_OPF_STOP).  Every field of
 * every record is untrusted input: no record value can crash the executor.
 * Simplified: one mm (fork and exit are reserved op codes
 * returning LAF_ENOSYS until the core has them).
 */
#include <stdlib.h>

#include "laf_internal.h"

/* Pages LAF_OP_MOVE_PAGES noted: page offsets from the old start, ascending. */
struct page_list {
	uint64_t *off;
	size_t nr, cap;
};

/* The executor's state across the records of one stream. */
struct ops_state {
	struct laf_mm *mm;
	struct laf_ops_result *res;
	struct page_list moved_present;	/* folio pages noted by LAF_OP_MOVE_PAGES */
	struct page_list moved_zero;	/* zero-page pages noted by LAF_OP_MOVE_PAGES */
	uint64_t moved_to;		/* where they go: the LAF_OP_MOVE_PAGES record's arg */
	bool moving;			/* a LAF_OP_MOVE_PAGES is waiting for its LAF_OP_MAP */
	bool failed;			/* the current record had a counted failure */
	bool quiet;			/* the current record's failures are not counted */
};

/**
 * ops_fail - count a failure of @step with code @err for the current record
 *
 * Return: @err (so a caller can `return ops_fail(...)`).  A quiet record's
 * failures are not counted; 0 is not a failure.
 */
static int ops_fail(struct ops_state *s, unsigned int step, int err)
{
	unsigned int col = err < 0 && -err < LAF_OPS_NR_ERRNO ? (unsigned int)-err : 0;

	if (!err || s->quiet)
		return err;
	s->res->errors[step][col]++;
	s->failed = true;
	return err;
}

/* Append @off to @l; false if the host is out of memory. */
static bool page_list_add(struct page_list *l, uint64_t off)
{
	if (l->nr == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 256;
		uint64_t *p = realloc(l->off, cap * sizeof(*p));

		if (!p)
			return false;
		l->off = p;
		l->cap = cap;
	}
	l->off[l->nr++] = off;
	return true;
}

/**
 * ops_populate - pages present without a fault over [@addr, @addr + @len)
 * @zero: zero-page PTEs (UFFDIO_ZEROPAGE) instead of order-0 folios (UFFDIO_COPY)
 *
 * As a process populating a range through userfaultfd: UFFDIO_REGISTER
 * (missing), the fill, UFFDIO_UNREGISTER.  A failed registration skips the
 * fill.  Return: the first error, 0 if none.
 */
static int ops_populate(struct ops_state *s, uint64_t addr, uint64_t len, bool zero)
{
	struct laf_mm *mm = s->mm;
	int err = userfaultfd_register(mm, addr, len, LAF_UFFDIO_REGISTER_MODE_MISSING);

	if (err)
		return ops_fail(s, LAF_OPS_STEP_UFFD_REGISTER, err);
	err = ops_fail(s, LAF_OPS_STEP_UFFD_FILL, mfill_atomic(mm, addr, len, zero, false));
	userfaultfd_unregister(mm, addr, len);
	return err;
}

/**
 * ops_populate_runs - ops_populate() over each run of consecutive pages of @l
 * @base: address of page offset 0
 *
 * Return: the first error, 0 if none (every run is tried).
 */
static int ops_populate_runs(struct ops_state *s, const struct page_list *l, uint64_t base,
			     bool zero)
{
	unsigned int shift = s->mm->page_shift;
	int first = 0;
	size_t i = 0;

	while (i < l->nr) {
		size_t j = i + 1;
		int err;

		while (j < l->nr && l->off[j] == l->off[j - 1] + 1)
			j++;
		err = ops_populate(s, base + (l->off[i] << shift), (uint64_t)(j - i) << shift, zero);
		if (err && !first)
			first = err;
		i = j;
	}
	return first;
}

/* Forget the pages a LAF_OP_MOVE_PAGES noted. */
static void ops_move_reset(struct ops_state *s)
{
	s->moved_present.nr = 0;
	s->moved_zero.nr = 0;
	s->moving = false;
}

#define MOVE_CHUNK 512	/* pages read per read_ptes() call */

/**
 * ops_move_pages - LAF_OP_MOVE_PAGES: note the pages of [@addr, @addr + @len)
 * that hold a folio (orders >= 0) and those mapping the zero page, to be
 * re-created at @to
 *
 * Only the parts inside VMAs are read (read_ptes(), MOVE_CHUNK pages at a
 * time).  Return: 0, LAF_EINVAL for a range that wraps or a part read_ptes()
 * refuses (nothing is noted then), LAF_ENOMEM if the host cannot hold the
 * list.
 */
static int ops_move_pages(struct ops_state *s, uint64_t addr, uint64_t len, uint64_t to)
{
	struct laf_mm *mm = s->mm;
	unsigned int shift = mm->page_shift;
	uint64_t end = addr + len, chunk = MOVE_CHUNK;
	uint64_t ptes[MOVE_CHUNK];
	int8_t orders[MOVE_CHUNK];
	struct laf_vma *vma;

	ops_move_reset(s);
	if (end < addr)
		return LAF_EINVAL;
	for (vma = find_vma(mm, addr); vma && vma->vm_start < end; vma = vma_next(vma)) {
		uint64_t lo = vma->vm_start > addr ? vma->vm_start : addr;
		uint64_t hi = vma->vm_end < end ? vma->vm_end : end;

		for (; lo < hi; lo += chunk << shift) {
			uint64_t i, n = (hi - lo) >> shift;

			n = n < chunk ? n : chunk;
			if (read_ptes(mm, lo, n, ptes, orders)) {
				ops_move_reset(s);
				return LAF_EINVAL;
			}
			for (i = 0; i < n; i++) {
				uint64_t off = ((lo - addr) >> shift) + i;
				bool ok = true;

				if (orders[i] >= 0)
					ok = page_list_add(&s->moved_present, off);
				else if (orders[i] <= LAF_ORDER_ZERO)
					ok = page_list_add(&s->moved_zero, off);
				if (!ok) {
					ops_move_reset(s);
					return LAF_ENOMEM;
				}
			}
		}
	}
	s->moving = true;
	s->moved_to = to;
	return 0;
}

/* A VMA next to [@addr, @addr + @len) already has an anon_vma. */
static bool neighbour_has_anon_vma(struct laf_mm *mm, uint64_t addr, uint64_t len)
{
	const struct laf_vma *below = addr ? find_vma(mm, addr - 1) : NULL;
	const struct laf_vma *above = find_vma(mm, addr + len);

	if (below && below->vm_end == addr && below->anon_vma)
		return true;
	return above && above->vm_start == addr + len && above->anon_vma;
}

/**
 * ops_map - LAF_OP_MAP
 *
 * LAF_OPF_REPLACE unmaps the range first; LAF_OPF_MOVED re-creates noted
 * pages after mapping.  A moved VMA with pages keeps its anon_vma, so it
 * merges only with neighbours that have none (mm/vma.c
 * is_mergeable_anon_vma()): it is mapped LAF_MAP_NOMERGE next to one that
 * has.  Return: the first error, 0 if none.
 */
static int ops_map(struct ops_state *s, const struct laf_op *op, uint64_t addr)
{
	struct laf_mm *mm = s->mm;
	bool moved = (op->flags & LAF_OPF_MOVED) && s->moving;
	int flags = (int)(op->arg2 & 0x7fffffff), err = 0;
	uint64_t out = 0;

	if (op->arg > 0x7fffffff || op->arg2 > 0x7fffffff)
		return ops_fail(s, LAF_OP_MAP, LAF_EINVAL);
	if (moved && (s->moved_present.nr || s->moved_zero.nr)) {
		flags &= ~LAF_MAP_NOMERGE;
		if (neighbour_has_anon_vma(mm, addr, op->len))
			flags |= LAF_MAP_NOMERGE;
	}
	if (op->flags & LAF_OPF_REPLACE)
		err = __laf_munmap(mm, addr, op->len);
	if (!err)
		err = __laf_mmap(mm, addr, op->len, (int)op->arg, flags, &out);
	if (!err)
		s->res->last_map_addr = out;
	ops_fail(s, LAF_OP_MAP, err);
	if (moved) {
		int e1 = ops_populate_runs(s, &s->moved_present, s->moved_to, false);
		int e2 = ops_populate_runs(s, &s->moved_zero, s->moved_to, true);

		err = err ? err : e1 ? e1 : e2;
		ops_move_reset(s);
	}
	return err;
}

/**
 * ops_unmap - LAF_OP_UNMAP; with LAF_OPF_ALL every VMA in address order
 * (unmapping one never changes the others), and the noted pages are dropped
 */
static int ops_unmap(struct ops_state *s, const struct laf_op *op, uint64_t addr)
{
	struct laf_mm *mm = s->mm;
	int err;

	if (!(op->flags & LAF_OPF_ALL))
		return ops_fail(s, LAF_OP_UNMAP, __laf_munmap(mm, addr, op->len));
	ops_move_reset(s);
	while (mm->vma_first) {
		err = __laf_munmap(mm, mm->vma_first->vm_start,
				   mm->vma_first->vm_end - mm->vma_first->vm_start);
		if (err)
			return ops_fail(s, LAF_OP_UNMAP, err);
	}
	return 0;
}

/* Add a batch summary @b to the stream's totals (@i: the record index). */
static void touch_add(struct laf_touch_summary *t, const struct laf_touch_summary *b, size_t i)
{
	t->accesses += b->accesses;
	t->hits += b->hits;
	t->faulted += b->faulted;
	t->sigsegv += b->sigsegv;
	t->oom += b->oom;
	t->sigbus += b->sigbus;
	t->userfault += b->userfault;
	if (b->first_error >= 0 && t->first_error < 0)
		t->first_error = (int64_t)i;
}

/**
 * ops_touch - LAF_OP_TOUCH: access_range() over the record's run
 *
 * A zero stride or a run that wraps past 2^64 is LAF_EINVAL (the checks of
 * laf_touch_range()).  A run of one access (a replayed fault) goes straight
 * to laf_access(), as access_range() would with its walk cache still empty.
 * Access outcomes (SIGSEGV, OOM...) are counted in the touch summary, not as
 * record failures.
 */
static int ops_touch(struct ops_state *s, const struct laf_op *op, uint64_t addr, size_t i)
{
	struct laf_touch_summary b;

	if (!op->arg || addr + op->len < addr)
		return ops_fail(s, LAF_OP_TOUCH, LAF_EINVAL);
	if (op->len && op->len <= op->arg) {
		struct laf_touch_summary *t = &s->res->touch;
		int a = laf_access(s->mm, addr, op->flags & LAF_OPF_WRITE, NULL);

		t->accesses++;
		switch (a) {
		case LAF_ACCESS_HIT: t->hits++; return 0;
		case LAF_ACCESS_FAULT: t->faulted++; return 0;
		case LAF_ACCESS_SIGSEGV: t->sigsegv++; break;
		case LAF_ACCESS_OOM: t->oom++; break;
		case LAF_ACCESS_SIGBUS: t->sigbus++; break;
		default: t->userfault++; break;
		}
		if (t->first_error < 0)
			t->first_error = (int64_t)i;
		return 0;
	}
	access_range(s->mm, addr, op->len, op->arg, op->flags & LAF_OPF_WRITE, &b);
	touch_add(&s->res->touch, &b, i);
	return 0;
}

/* LAF_OP_PRCTL: __laf_prctl() with an int option */
static int ops_prctl(struct ops_state *s, const struct laf_op *op)
{
	int64_t out;

	if (op->arg > 0x7fffffff)
		return ops_fail(s, LAF_OP_PRCTL, LAF_EINVAL);
	return ops_fail(s, LAF_OP_PRCTL, __laf_prctl(s->mm, (int)op->arg, op->addr, op->len, &out));
}

/* LAF_OP_MADVISE: __laf_madvise() with an int advice */
static int ops_madvise(struct ops_state *s, const struct laf_op *op, uint64_t addr)
{
	if (op->arg > 0x7fffffff)
		return ops_fail(s, LAF_OP_MADVISE, LAF_EINVAL);
	return ops_fail(s, LAF_OP_MADVISE, __laf_madvise(s->mm, addr, op->len, (int)op->arg));
}

/* LAF_OP_PROTECT: __laf_mprotect() (mprotect.c) with int LAF_PROT_* bits */
static int ops_protect(struct ops_state *s, const struct laf_op *op, uint64_t addr)
{
	if (op->arg > 0x7fffffff)
		return ops_fail(s, LAF_OP_PROTECT, LAF_EINVAL);
	return ops_fail(s, LAF_OP_PROTECT, __laf_mprotect(s->mm, addr, op->len, (int)op->arg));
}

/**
 * ops_remap - LAF_OP_REMAP: __laf_mremap(); the new address becomes the
 * stream's last-map address.  Pages a LAF_OP_MOVE_PAGES noted (old traces)
 * are forgotten: a real move carries its pages.
 */
static int ops_remap(struct ops_state *s, const struct laf_op *op, uint64_t addr)
{
	int flags = (op->flags >> LAF_OPF_MREMAP_SHIFT) & 7;
	uint64_t out = 0;
	int err;

	ops_move_reset(s);
	err = __laf_mremap(s->mm, addr, op->len, op->arg, flags, op->arg2, &out);
	if (!err)
		s->res->last_map_addr = out;
	return ops_fail(s, LAF_OP_REMAP, err);
}

/**
 * ops_one - execute record @i
 *
 * Return: the record's first error (already counted unless quiet), 0 if none.
 */
static int ops_one(struct ops_state *s, const struct laf_op *op, size_t i)
{
	uint64_t addr = op->addr;

	if (op->mm != 0)
		return ops_fail(s, LAF_OPS_STEP_RECORD, LAF_EINVAL);
	if (op->flags & LAF_OPF_RELATIVE) {
		addr += s->res->last_map_addr;
		if (addr < op->addr)
			return ops_fail(s, LAF_OPS_STEP_RECORD, LAF_EINVAL);
	}
	switch (op->op) {
	case LAF_OP_NOP:
		return 0;
	case LAF_OP_MAP:
		return ops_map(s, op, addr);
	case LAF_OP_UNMAP:
		return ops_unmap(s, op, addr);
	case LAF_OP_MADVISE:
		return ops_madvise(s, op, addr);
	case LAF_OP_TOUCH:
		return ops_touch(s, op, addr, i);
	case LAF_OP_PRCTL:
		return ops_prctl(s, op);
	case LAF_OP_POPULATE:
		if (addr + op->len < addr)
			return ops_fail(s, LAF_OPS_STEP_RECORD, LAF_EINVAL);
		return ops_populate(s, addr, op->len, op->flags & LAF_OPF_ZERO);
	case LAF_OP_MOVE_PAGES:
		return ops_fail(s, LAF_OP_MOVE_PAGES, ops_move_pages(s, addr, op->len, op->arg));
	case LAF_OP_PROTECT:
		return ops_protect(s, op, addr);
	case LAF_OP_REMAP:
		return ops_remap(s, op, addr);
	case LAF_OP_FORK:
	case LAF_OP_EXIT:
		return ops_fail(s, LAF_OPS_STEP_RECORD, LAF_ENOSYS);
	default:
		return ops_fail(s, LAF_OPS_STEP_RECORD, LAF_EINVAL);
	}
}

/**
 * run_ops - the records of @ops in order, each counted in @res
 *
 * Context: the busy flag is held.  Return: 0 (failures are per record).
 */
static int run_ops(struct laf_mm *mm, const struct laf_op *ops, size_t n,
		   struct laf_ops_result *res)
{
	struct ops_state s = { .mm = mm, .res = res };
	size_t i;

	for (i = 0; i < n; i++) {
		int err;

		s.failed = false;
		s.quiet = ops[i].flags & LAF_OPF_QUIET;
		err = ops_one(&s, &ops[i], i);
		res->done++;
		if (!s.failed)
			continue;
		res->failed++;
		if (res->first_error < 0) {
			res->first_error = (int64_t)i;
			res->first_errno = err;
		}
		if (ops[i].flags & LAF_OPF_STOP) {
			res->stopped = 1;
			break;
		}
	}
	free(s.moved_present.off);
	free(s.moved_zero.off);
	return 0;
}

/**
 * laf_run_ops - execute an op stream (struct laf_op records, laf.h) on @mm
 *
 * One busy-flag section for the whole stream; @res is reset first.
 * Return: LAF_OK, LAF_EINVAL (NULL @res, or NULL @ops with @n > 0),
 * LAF_EBUSY.
 */
int laf_run_ops(laf_mm *mm, const struct laf_op *ops, size_t n, struct laf_ops_result *res)
{
	int err;

	if (!res || (n && !ops))
		return LAF_EINVAL;
	memset(res, 0, sizeof(*res));
	res->first_error = -1;
	res->touch.first_error = -1;
	err = mm_enter(mm);
	if (err)
		return err;
	err = run_ops(mm, ops, n, res);
	mm_exit(mm);
	return err;
}
