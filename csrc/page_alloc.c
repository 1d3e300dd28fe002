// SPDX-License-Identifier: GPL-2.0
/*
 * page_alloc.c - emulated physical memory: memmap, buddy allocator, memcg.
 *
 * Faithful: the buddy rules of mm/page_alloc.c (__rmqueue_smallest(), expand(),
 * __free_one_page()): blocks are naturally aligned 2^order frames, a split
 * returns the lower half and queues the upper halves, a free merges with its
 * buddy while the buddy is a free block of the same order.  So physical
 * alignment and contiguity are real, as arm64 contpte needs.
 *
 * Simplified (documented in README "Fidelity"): one zone, no per-cpu lists,
 * no migratetypes, no watermarks, no compaction or reclaim; a large
 * allocation succeeds iff a free block of that order exists (what
 * GFP_TRANSHUGE_LIGHT, the default defrag=madvise mask, gets).  Order-0
 * allocation and memcg-charge failures run the deferred-split shrinker once
 * and retry, as direct reclaim would.  The memcg charge is pass/fail against
 * memory.max.  Page tables take frames from emulated RAM but are not charged.
 *
 * Free lists link free block heads through struct page (buddy_next/prev);
 * insertion and removal happen at the head of the list.
 *
 * The memmap is initialised lazily, like DEFERRED_STRUCT_PAGE_INIT
 * (mm/mm_init.c deferred_grow_zone()): the MAX_PAGE_ORDER blocks of RAM are
 * counted free at boot but queued one 128 MiB section at a time when the
 * allocator runs dry, so the host pays for what the emulated machine uses,
 * and the PFN sequence is exactly that of an eagerly built free list.
 */
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "laf_internal.h"

static inline void add_to_free_list(struct laf_machine *m, uint32_t pfn, unsigned int order)
{
	struct page *p = machine_page(m, pfn);
	uint32_t head = m->free_head[order];

	p->flags = PG_buddy | (order << PG_ORDER_SHIFT);
	p->buddy_next = head;
	p->buddy_prev = NO_PFN;
	p->index = 0;
	if (head != NO_PFN)
		m->memmap[head].buddy_prev = pfn;
	m->free_head[order] = pfn;
	m->free_count[order]++;
	m->nr_free += 1ULL << order;
}

static inline void del_page_from_free_list(struct laf_machine *m, uint32_t pfn, unsigned int order)
{
	struct page *p = machine_page(m, pfn);

	if (p->buddy_prev != NO_PFN)
		m->memmap[p->buddy_prev].buddy_next = p->buddy_next;
	else
		m->free_head[order] = p->buddy_next;
	if (p->buddy_next != NO_PFN)
		m->memmap[p->buddy_next].buddy_prev = p->buddy_prev;
	p->flags = 0;
	p->buddy_next = 0;
	p->buddy_prev = 0;
	m->free_count[order]--;
	m->nr_free -= 1ULL << order;
}

/**
 * __free_one_page - return a naturally aligned block to the buddy lists
 * @m: the emulated machine
 * @pfn: first frame, aligned to 2^@order
 * @order: block order
 *
 * Dup of mm/page_alloc.c: merge with the buddy (pfn ^ (1 << order)) while it
 * is a free block of the same order, then queue the merged block.
 */
static void __free_one_page(struct laf_machine *m, uint64_t pfn, unsigned int order)
{
	while (order < m->max_page_order) {
		uint64_t buddy = pfn ^ (1ULL << order);
		struct page *bp;

		if (buddy + (1ULL << order) > m->nr_frames)
			break;
		bp = machine_page(m, buddy);
		if (!(bp->flags & PG_buddy) || page_order(bp) != order)
			break;
		del_page_from_free_list(m, (uint32_t)buddy, order);
		pfn &= ~(1ULL << order);
		order++;
	}
	add_to_free_list(m, (uint32_t)pfn, order);
}

void __free_pages_ok(struct laf_machine *m, uint64_t pfn, unsigned int order)
{
	__free_one_page(m, pfn, order);
}

/**
 * deferred_grow_zone - initialise the highest deferred section
 * @m: the emulated machine
 *
 * Dup of mm/mm_init.c deferred_grow_zone() (DEFERRED_STRUCT_PAGE_INIT), at
 * section granularity: when the allocator finds no free block, the struct
 * pages of the highest not yet initialised section are set up and its
 * MAX_PAGE_ORDER blocks queued.  Simplified: the struct pages of a deferred
 * frame are the zeroes of the fresh anonymous memmap, so only the block heads
 * are written.
 *
 * The PFN order is that of an eagerly built free list: buddy_init() would
 * have queued these blocks in ascending order, so they sit at the tail of
 * the MAX_PAGE_ORDER list, highest first.  A section is grown only when that
 * list is empty (merges never remove a MAX_PAGE_ORDER block from the middle
 * of it), so queuing the section's blocks ascending at the head puts each
 * block exactly where the eager list had it.  The free counters already
 * count deferred blocks; they are moved, not added.
 * Return: true if a section was initialised.
 */
static __attribute__((noinline, cold)) bool deferred_grow_zone(struct laf_machine *m)
{
	unsigned int max = m->max_page_order;
	uint64_t end = m->deferred_end, start, pfn;

	if (end == m->deferred_start)
		return false;
	LAF_BUG_ON(m->free_head[max] != NO_PFN);
	start = align_down(end - 1, m->section_pages);
	if (start < m->deferred_start)
		start = m->deferred_start;
	m->free_count[max] -= (end - start) >> max;
	m->nr_free -= end - start;
	for (pfn = start; pfn < end; pfn += 1ULL << max)
		add_to_free_list(m, (uint32_t)pfn, max);
	m->deferred_end = start;
	return true;
}

/**
 * __rmqueue - take a free block of exactly @order (__rmqueue_smallest)
 *
 * When no list of order >= @order has a block, grow the zone by one deferred
 * section and retry (the kernel's _deferred_grow_zone() in
 * get_page_from_freelist()).
 * Return: first pfn, or NO_PFN when no free block of order >= @order exists.
 */
uint32_t __rmqueue(struct laf_machine *m, unsigned int order)
{
	uint32_t head = m->free_head[order];
	unsigned int o;

	if (likely(head != NO_PFN)) {	/* exact fit: nothing to expand() */
		del_page_from_free_list(m, head, order);
		return head;
	}
	for (o = order + 1; o <= m->max_page_order; o++) {
		uint32_t pfn = m->free_head[o];

		if (pfn == NO_PFN)
			continue;
		del_page_from_free_list(m, pfn, o);
		/* expand(): keep the low half, queue the high halves */
		while (o > order) {
			o--;
			add_to_free_list(m, pfn + (1u << o), o);
		}
		return pfn;
	}
	if (m->deferred_end != m->deferred_start && deferred_grow_zone(m))
		return __rmqueue(m, order);
	return NO_PFN;
}

/**
 * buddy_init - lay out emulated RAM
 *
 * Frame 0 is reserved as the shared zero page (my_zero_pfn()); every other
 * frame is free, in the largest naturally aligned blocks that fit, queued in
 * ascending pfn order (memblock_free_all()).  The MAX_PAGE_ORDER blocks are a
 * contiguous run; they are deferred (deferred_grow_zone()): counted free, not
 * yet queued.  Only the few smaller blocks at the two ends of RAM are queued
 * now, so creating a machine costs O(1) host memory whatever its RAM size.
 */
static void buddy_init(struct laf_machine *m)
{
	unsigned int max = m->max_page_order, o;
	uint64_t pfn;

	for (o = 0; o < LAF_NR_ORDERS; o++) {
		m->free_head[o] = NO_PFN;
		m->free_count[o] = 0;
	}
	m->nr_free = 0;
	m->deferred_start = m->deferred_end = 0;
	m->memmap[0].flags = PG_reserved;
	m->zero_pfn = 0;
	pfn = 1;
	while (pfn < m->nr_frames) {
		o = max;
		while (o && ((pfn & ((1ULL << o) - 1)) || pfn + (1ULL << o) > m->nr_frames))
			o--;
		if (o == max) {
			/* full blocks are one run: [first, last] */
			if (m->deferred_start == m->deferred_end)
				m->deferred_start = m->deferred_end = pfn;
			LAF_BUG_ON(m->deferred_end != pfn);
			m->deferred_end = pfn + (1ULL << max);
			m->free_count[max]++;
			m->nr_free += 1ULL << max;
		} else {
			add_to_free_list(m, (uint32_t)pfn, o);
		}
		pfn += 1ULL << o;
	}
}

/* PAGES_PER_SECTION: 128 MiB sections (SECTION_SIZE_BITS 27, x86-64 and
 * arm64), never smaller than a MAX_PAGE_ORDER block */
#define SECTION_SIZE_BITS 27
/* host bytes an emulated frame costs when in use: its struct page and its PTE */
#define HOST_BYTES_PER_FRAME (sizeof(struct page) + sizeof(pte_t))
/* pfns are 32-bit in struct page and the free lists, NO_PFN excluded */
#define MAX_FRAMES ((1ULL << 31) - 1)

/*
 * The most frames this host can back when every one is in use: physical
 * memory (MemTotal, sysconf(_SC_PHYS_PAGES)) over HOST_BYTES_PER_FRAME, and
 * at most MAX_FRAMES.  If the host does not say, only MAX_FRAMES applies.
 */
static uint64_t max_ram_frames(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
	uint64_t frames;

	if (pages <= 0 || psz <= 0)
		return MAX_FRAMES;
	frames = (uint64_t)pages * (uint64_t)psz / HOST_BYTES_PER_FRAME;
	return frames < MAX_FRAMES ? frames : MAX_FRAMES;
}

uint64_t laf_max_ram_bytes(uint32_t page_shift)
{
	if (page_shift != LAF_PAGE_SHIFT_4K && page_shift != LAF_PAGE_SHIFT_16K &&
	    page_shift != LAF_PAGE_SHIFT_64K)
		return 0;
	return max_ram_frames() << page_shift;
}

/**
 * memmap_check_size - can the host back this RAM when all of it is in use?
 *
 * The memmap is built lazily, so a machine of any size is cheap to create;
 * but every allocated frame costs HOST_BYTES_PER_FRAME of host memory, and a
 * machine the host could not back at full use would fail at random later
 * (the host OOM killer), not with an error.  So RAM is capped at
 * laf_max_ram_bytes().
 * Return: 0 or LAF_ERANGE.
 */
int memmap_check_size(const struct laf_machine *m)
{
	return m->nr_frames > max_ram_frames() ? LAF_ERANGE : 0;
}

/**
 * memmap_init - map the memmap and lay out the buddy allocator
 *
 * The memmap is anonymous NORESERVE memory: a struct page costs host memory
 * only once written, and buddy_init() writes only the ends of RAM; the rest
 * is initialised a section at a time by deferred_grow_zone().
 * Return: 0 or LAF_ENOMEM.
 */
int memmap_init(struct laf_machine *m)
{
	unsigned int sbits = SECTION_SIZE_BITS - m->page_shift;

	m->memmap_bytes = m->nr_frames * sizeof(struct page);
	m->memmap = mmap(NULL, m->memmap_bytes, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m->memmap == MAP_FAILED) {
		m->memmap = NULL;
		return LAF_ENOMEM;
	}
	m->section_pages = 1ULL << (sbits > m->max_page_order ? sbits : m->max_page_order);
	buddy_init(m);
	return 0;
}

void memmap_free(struct laf_machine *m)
{
	if (m->memmap)
		munmap(m->memmap, m->memmap_bytes);
	m->memmap = NULL;
}

/**
 * memmap_get_info - how much of the memmap deferred init has set up
 *
 * A section counts as initialised when any of its frames is outside the
 * deferred run (the eagerly queued ends of RAM, or a grown section); the last
 * section may be short.
 */
void memmap_get_info(const struct laf_machine *m, struct laf_memmap_info *info)
{
	uint64_t sp = m->section_pages, de = m->deferred_end;
	uint64_t first = align_up(m->deferred_start, sp) / sp;
	uint64_t last = (de == m->nr_frames ? align_up(de, sp) : de) / sp;

	info->section_pages = sp;
	info->nr_sections = (m->nr_frames + sp - 1) / sp;
	info->sections_initialised = info->nr_sections - (last > first ? last - first : 0);
	info->deferred_pages = m->deferred_end - m->deferred_start;
	info->memmap_bytes = m->memmap_bytes;
	info->max_ram_bytes = laf_max_ram_bytes(m->page_shift);
}

/**
 * vma_alloc_folio - allocate a folio of @order (no memcg charge)
 *
 * Emulates vma_alloc_folio() + prep_compound_page(): the head gets refcount 1
 * and mapcount 0, each tail points at the head (below the PMD order a tail
 * also gets the per-page rmap state folio_add_new_anon_rmap() would give).  LAF_INJECT_ALLOC_FAIL makes
 * the next allocations of an order fail.
 * Return: head pfn or NO_PFN.
 */
uint32_t vma_alloc_folio(struct laf_mm *mm, unsigned int order)
{
	struct laf_machine *m = mm->machine;
	uint32_t pfn;
	struct page *head;
	unsigned int i, nr = 1u << order;

	if (unlikely(m->inject.alloc_fail[order])) {
		m->inject.alloc_fail[order]--;
		return NO_PFN;
	}
	pfn = __rmqueue(m, order);
	if (pfn == NO_PFN)
		return NO_PFN;
	head = machine_page(m, pfn);
	head->flags = PG_head | (order << PG_ORDER_SHIFT);
	head->refcount = 1;
	head->mapcount = 0;
	head->index = 0;
	if (nr > 1) {
		/*
		 * prep_compound_tail(): one 16-byte store per tail page.  Below
		 * the PMD order the folio can only be PTE-mapped as a whole by
		 * folio_add_new_anon_rmap(), so the same store also sets what
		 * that does per page (AnonExclusive, _mapcount 1): the fault
		 * path touches each struct page once.
		 */
		typedef uint32_t page_vec __attribute__((vector_size(sizeof(struct page))));
		const page_vec tail = order < mm->pmd_order ?
				      (page_vec){ PG_tail | PG_anon_exclusive, pfn, 1, 0 } :
				      (page_vec){ PG_tail, pfn, 0, 0 };

		_Static_assert(sizeof(struct page) == 16, "struct page is 4 x 32 bits");
		for (i = 1; i < nr; i++)
			__builtin_memcpy(&head[i], &tail, sizeof(tail));
	}
	mm->st.per_folio_ops++;
	mm->st.per_page_ops += nr - 1;
	return pfn;
}

static void memcg_uncharge(struct laf_machine *m, struct page *head, unsigned int nr)
{
	if (head->flags & PG_memcg) {
		m->memcg_charged -= nr;
		head->flags &= ~PG_memcg;
	}
}

/**
 * free_folio - the last reference is gone: undo every per-folio state
 *
 * Emulates __folio_put() -> free_unref_folios(): leaves the LRU, undoes the
 * large-rmappable state (deferred-split queue, nr_anon_partially_mapped),
 * nr_anon, the memcg charge, then frees the frames to the buddy allocator.
 */
void free_folio(struct laf_mm *mm, uint64_t pfn)
{
	struct laf_machine *m = mm->machine;
	struct page *head = machine_page(m, pfn);
	unsigned int order = page_order(head), i, nr = 1u << order;

	LAF_BUG_ON(!(head->flags & PG_head));
	if (head->flags & PG_lru)
		m->gauges.lru_pages -= nr;
	if (head->flags & PG_anon) {
		if (order > 0)
			m->gauges.nr_anon[order]--;
		if (head->flags & PG_partially_mapped)
			m->gauges.nr_anon_partially_mapped[order]--;
		if (head->flags & PG_deferred_queued)
			m->gauges.deferred_split_queue--;
	}
	memcg_uncharge(m, head, nr);
	/*
	 * tails: flags and head; their _mapcount and the folio fields of
	 * page[1..3] are rewritten by the next prep_compound_tail() or
	 * split (a free frame's other fields are never read)
	 */
	for (i = 1; i < nr; i++) {
		head[i].flags = 0;
		head[i].head = 0;
	}
	head->flags = 0;
	head->refcount = 0;
	head->mapcount = 0;
	head->index = 0;
	mm->st.per_folio_ops++;
	__free_one_page(m, pfn, order);
}

/**
 * folio_put_refs - drop @refs references; free the folio at zero
 */
void folio_put_refs(struct laf_mm *mm, uint64_t pfn, int refs)
{
	struct page *head = pfn_to_page(mm, pfn);

	head->refcount -= refs;
	LAF_BUG_ON(head->refcount < 0);
	if (head->refcount == 0)
		free_folio(mm, pfn);
}

/**
 * mem_cgroup_charge - charge a new folio to the mm's memory cgroup
 * Return: 0, or -ENOMEM when memory.max would be exceeded (memcg_max_events).
 */
int mem_cgroup_charge(struct laf_mm *mm, uint64_t pfn, unsigned int order)
{
	struct laf_machine *m = mm->machine;
	uint64_t nr = 1ULL << order;
	struct page *head = machine_page(m, pfn);

	mm->st.per_folio_ops++;
	if (unlikely(m->inject.charge_fail[order])) {
		m->inject.charge_fail[order]--;
		mm->st.memcg_max_events++;
		return LAF_ENOMEM;
	}
	if (m->memcg_charged + nr > m->memcg_limit) {	/* LAF_MEMCG_UNLIMITED: never */
		mm->st.memcg_max_events++;
		return LAF_ENOMEM;
	}
	m->memcg_charged += nr;
	head->flags |= PG_memcg;
	return 0;
}

/**
 * mem_cgroup_check_max - is @limit_bytes a valid memory.max?
 * Return: 0, or LAF_EINVAL unless LAF_MEMCG_UNLIMITED or page-aligned.
 */
int mem_cgroup_check_max(const struct laf_machine *m, uint64_t limit_bytes)
{
	if (limit_bytes != LAF_MEMCG_UNLIMITED && (limit_bytes & (m->page_size - 1)))
		return LAF_EINVAL;
	return 0;
}

static uint64_t memcg_limit_pages(const struct laf_machine *m, uint64_t limit_bytes)
{
	return limit_bytes == LAF_MEMCG_UNLIMITED ? LAF_MEMCG_UNLIMITED
						  : limit_bytes >> m->page_shift;
}

/* mem_cgroup_init - memory.max at creation (already checked by mem_cgroup_check_max()) */
void mem_cgroup_init(struct laf_machine *m, uint64_t limit_bytes)
{
	m->memcg_limit = memcg_limit_pages(m, limit_bytes);
}

/**
 * mem_cgroup_set_max - write memory.max (mm/memcontrol.c memory_max_write())
 * @limit_bytes: LAF_MEMCG_UNLIMITED ("max"), or a page-aligned byte count;
 *	0 lets nothing be charged
 *
 * Below current usage cgroup v2 reclaims, then OOM-kills; cgroup v1 refuses
 * with -EBUSY.  The emulator refuses with -ERANGE (LAF_EBUSY means "another
 * thread is inside" here) and does not reclaim.
 * Return: 0, LAF_EINVAL (unaligned) or LAF_ERANGE (below usage).
 */
int mem_cgroup_set_max(struct laf_machine *m, uint64_t limit_bytes)
{
	uint64_t pages = memcg_limit_pages(m, limit_bytes);

	if (mem_cgroup_check_max(m, limit_bytes))
		return LAF_EINVAL;
	if (pages < m->memcg_charged)
		return LAF_ERANGE;
	m->memcg_limit = pages;
	return 0;
}

/**
 * pte_alloc_one - allocate the frame backing a page table
 * Return: pfn or NO_PFN (the fault then returns VM_FAULT_OOM).
 */
uint32_t pte_alloc_one(struct laf_mm *mm)
{
	struct laf_machine *m = mm->machine;
	uint32_t pfn = __rmqueue(m, 0);

	if (pfn == NO_PFN) {
		/* direct reclaim: the deferred-split shrinker may free frames */
		if (deferred_split_scan(mm))
			pfn = __rmqueue(m, 0);
		if (pfn == NO_PFN)
			return NO_PFN;
	}
	m->memmap[pfn].flags = PG_pgtable;
	m->memmap[pfn].refcount = 1;
	return pfn;
}

void pte_free(struct laf_mm *mm, uint32_t pfn)
{
	struct laf_machine *m = mm->machine;
	struct page *p = machine_page(m, pfn);

	LAF_BUG_ON(!(p->flags & PG_pgtable));
	p->flags = 0;
	p->refcount = 0;
	__free_one_page(m, pfn, 0);
}

/*
 * Physical fragmentation (laf_phys_fragment()): frames pinned so that large
 * free blocks are gone, and freed again.
 */

/* Hold frame @pfn (an unmovable allocation that never goes away). */
static int pin_frame(struct laf_machine *m, uint32_t pfn)
{
	if (m->nr_pinned == m->cap_pinned) {
		size_t ncap = m->cap_pinned ? m->cap_pinned * 2 : 256;
		uint32_t *n = realloc(m->pinned, ncap * sizeof(*n));

		if (!n)
			return LAF_ENOMEM;
		m->pinned = n;
		m->cap_pinned = ncap;
	}
	m->pinned[m->nr_pinned++] = pfn;
	m->memmap[pfn].flags = PG_pinned;
	return 0;
}

/**
 * phys_fragment - leave no free block above @max_free_order
 *
 * Every free block larger than that is cut into 2^(@max_free_order + 1)-frame
 * pieces and the last frame of each piece is pinned (one frame in
 * 2^(max + 1)), as long-lived unmovable allocations scattered over memory
 * would.  The emulator's stand-in for a fragmented machine: no kernel
 * function does this; compaction (which could undo it) is not emulated.
 * Return: 0, LAF_EINVAL (order out of [0, MAX_PAGE_ORDER)) or LAF_ENOMEM.
 */
int phys_fragment(struct laf_machine *m, int max_free_order)
{
	unsigned int o, piece;

	if (max_free_order < 0 || max_free_order >= (int)m->max_page_order)
		return LAF_EINVAL;
	piece = (unsigned int)max_free_order + 1;
	for (o = m->max_page_order; o > (unsigned int)max_free_order; o--) {
		while (!free_area_empty(m, o)) {
			uint32_t pfn = __rmqueue(m, o);
			uint64_t p, nr = 1ULL << o, step = 1ULL << piece;

			for (p = pfn; p < pfn + nr; p += step) {
				uint64_t last = p + step - 1, q;
				int err = pin_frame(m, (uint32_t)last);

				if (err) {
					for (q = p; q < pfn + nr; q++)
						__free_pages_ok(m, q, 0);
					return err;
				}
				for (q = p; q < last; q++) {
					m->memmap[q].flags = 0;
					__free_pages_ok(m, q, 0);
				}
			}
		}
	}
	return 0;
}

/**
 * phys_unfragment - free every frame phys_fragment() pinned
 * The buddy merges them back (__free_one_page()).  Return: 0.
 */
int phys_unfragment(struct laf_machine *m)
{
	size_t i;

	for (i = 0; i < m->nr_pinned; i++) {
		m->memmap[m->pinned[i]].flags = 0;
		__free_pages_ok(m, m->pinned[i], 0);
	}
	m->nr_pinned = 0;
	return 0;
}
