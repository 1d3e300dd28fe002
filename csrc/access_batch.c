// SPDX-License-Identifier: GPL-2.0
/*
 * access_batch.c - the emulated CPU running a stream of user loads and
 * stores: each access is looked up in a paging-structure cache first and
 * goes to the page-fault path only when the cached entry does not allow it.
 *
 * Stands in for the hardware path of a user access (the MMU's page-table
 * walk with its TLB / paging-structure caches) and for the exception entry
 * that calls handle_mm_fault(): arch/x86/mm/fault.c do_user_addr_fault(),
 * arch/arm64/mm/fault.c do_page_fault().  That entry (VMA lookup, access
 * check, retries) is laf_access() in memory.c; this file batches it.
 * Simplified: no TLB shootdown, no accessed/dirty-bit updates by hardware
 * (the emulator's LAF_PTE_TOUCHED marks what the workload accessed), one CPU.
 */
#include "laf_internal.h"

/* Count one access outcome in @s; remember the index of the first error. */
static inline void summarize(struct laf_touch_summary *s, int a, size_t i)
{
	switch (a) {
	case LAF_ACCESS_HIT: s->hits++; return;
	case LAF_ACCESS_FAULT: s->faulted++; return;
	case LAF_ACCESS_SIGSEGV: s->sigsegv++; break;
	case LAF_ACCESS_OOM: s->oom++; break;
	case LAF_ACCESS_SIGBUS: s->sigbus++; break;
	default: s->userfault++; break;
	}
	if (s->first_error < 0)
		s->first_error = (int64_t)i;
}

/*
 * The batch loops' paging-structure cache, as an MMU keeps one: the PTE
 * table of the last PMD range an access walked.  An access whose PTE is
 * present, allows it and is already marked TOUCHED (so nothing but the hit
 * counters changes) is served from it.  Every other access goes through
 * laf_access() and then refills the cache for a new PMD range.  Inside a
 * batch no PTE table is freed or moved (only munmap/madvise/destroy free
 * tables, and a table never becomes a huge PMD), so the cached table
 * pointer stays valid; the PTE itself is always read live.
 */
struct mmu_walk_cache {
	uint64_t tag;		/* addr >> pmd_shift, ~0 when empty */
	pte_t *ptes;
	uint64_t hits;		/* served here; added to the counters at the end */
	unsigned int pmd_shift, page_shift, index_mask;	/* geometry, kept in registers */
};

/* An empty cache with the mm's geometry copied in (kept in registers). */
static inline void walk_cache_init(struct laf_mm *mm, struct mmu_walk_cache *c)
{
	c->tag = ~0ULL;
	c->ptes = NULL;
	c->hits = 0;
	c->pmd_shift = mm->pmd_shift;
	c->page_shift = mm->page_shift;
	c->index_mask = mm->ptrs_per_pte - 1;
}

/* PTE bits a cached hit needs */
static inline pte_t walk_cache_need(bool write)
{
	return LAF_PTE_PRESENT | LAF_PTE_TOUCHED | (write ? LAF_PTE_WRITE : 0);
}

/*
 * A hit: @addr is in the cached PMD range and its live PTE has every bit of
 * @need; counted in the cache, not yet in the mm's counters.
 */
static inline bool walk_cache_hit(struct mmu_walk_cache *c, uint64_t addr, pte_t need)
{
	pte_t pte;

	if ((addr >> c->pmd_shift) != c->tag)
		return false;
	pte = c->ptes[(addr >> c->page_shift) & c->index_mask];
	if ((pte & (need | LAF_PTE_PROTNONE)) != need)	/* pte_protnone(): no access */
		return false;
	c->hits++;
	return true;
}

/*
 * After a slow access: cache the PTE table of @addr's PMD range, if it has
 * one (a huge PMD or no table empties the cache).
 */
static inline void walk_cache_fill(struct laf_mm *mm, struct mmu_walk_cache *c, uint64_t addr)
{
	pmd_t *pmd;

	if ((addr >> c->pmd_shift) == c->tag)
		return;
	pmd = pmd_offset(mm, addr);
	if (pmd && !pmd->val && pmd->ptes) {
		c->tag = addr >> c->pmd_shift;
		c->ptes = pmd->ptes;
	} else {
		c->tag = ~0ULL;
	}
}

/* The hits the cache served: mm->st.hits and the summary's, once per batch. */
static inline void walk_cache_flush(struct laf_mm *mm, struct mmu_walk_cache *c,
				    struct laf_touch_summary *s)
{
	mm->st.hits += c->hits;
	s->hits += c->hits;
	c->hits = 0;
}

/**
 * access_one - one access at @addr, with the full outcome in @res
 * @write: a store (else a load)
 *
 * laf_access() with a result; @res->order is the order of the folio that
 * maps @addr afterwards (LAF_ORDER_NONE when none or the zero page).
 * No walk cache: every call walks the tables.  Return: 0.
 */
int access_one(struct laf_mm *mm, uint64_t addr, bool write, struct laf_fault_result *res)
{
	laf_access(mm, addr, write, res);
	if (res->access == LAF_ACCESS_HIT || res->access == LAF_ACCESS_FAULT) {
		uint64_t pte;
		struct laf_folio_info fi;

		if (__laf_lookup(mm, addr, &pte, &fi) == 0 && !(pte & LAF_PTE_SPECIAL))
			res->order = fi.order;
	}
	return 0;
}

/**
 * access_batch - @n accesses at @addrs[i], counted in @s
 * @writes: per-access store flags (NULL: every access is @write)
 * @results: per-access LAF_ACCESS_* outcome (NULL: summary only)
 *
 * Each access is served by the walk cache or goes through laf_access().
 * The common batch (one access kind, summary only) has its own loop.
 * Every address is valid input: one at or above TASK_SIZE is a SIGSEGV
 * (no VMA), as for a real CPU.  Return: 0.
 */
int access_batch(struct laf_mm *mm, const uint64_t *addrs, size_t n, const uint8_t *writes,
		 bool write, int8_t *results, struct laf_touch_summary *s)
{
	struct mmu_walk_cache wc;
	size_t i;

	memset(s, 0, sizeof(*s));
	s->first_error = -1;
	s->accesses = n;
	walk_cache_init(mm, &wc);
	if (!writes && !results) {
		pte_t need = walk_cache_need(write);

		for (i = 0; i < n; i++) {
			uint64_t addr = addrs[i];

			if (walk_cache_hit(&wc, addr, need))
				continue;
			summarize(s, laf_access(mm, addr, write, NULL), i);
			walk_cache_fill(mm, &wc, addr);
		}
		walk_cache_flush(mm, &wc, s);
		return 0;
	}
	for (i = 0; i < n; i++) {
		bool w = writes ? writes[i] != 0 : write;
		uint64_t addr = addrs[i];
		int a;

		if (walk_cache_hit(&wc, addr, walk_cache_need(w))) {
			if (results)
				results[i] = LAF_ACCESS_HIT;
			continue;
		}
		a = laf_access(mm, addr, w, NULL);
		walk_cache_fill(mm, &wc, addr);
		if (results)
			results[i] = (int8_t)a;
		summarize(s, a, i);
	}
	walk_cache_flush(mm, &wc, s);
	return 0;
}

/**
 * access_range - accesses at @start + k * @stride for every offset below @len
 * @write: stores (else loads)
 *
 * Context: the caller checked @stride != 0 and @start + @len does not wrap.
 * The offset never wraps either: the loop ends when the next offset would
 * pass @len or 2^64 (a stride of 2^63 over a 2^64 - 1 range is two
 * accesses, not an endless loop).  Return: 0.
 */
int access_range(struct laf_mm *mm, uint64_t start, uint64_t len, uint64_t stride,
		 bool write, struct laf_touch_summary *s)
{
	struct mmu_walk_cache wc;
	pte_t need = walk_cache_need(write);
	uint64_t off = 0;
	size_t i = 0;

	memset(s, 0, sizeof(*s));
	s->first_error = -1;
	walk_cache_init(mm, &wc);
	while (off < len) {
		uint64_t addr = start + off;

		if (!walk_cache_hit(&wc, addr, need)) {
			summarize(s, laf_access(mm, addr, write, NULL), i);
			walk_cache_fill(mm, &wc, addr);
		}
		i++;
		if (stride > len - off)
			break;	/* off + stride >= len, or would wrap */
		off += stride;
	}
	walk_cache_flush(mm, &wc, s);
	s->accesses = i;
	return 0;
}
