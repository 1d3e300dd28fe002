// SPDX-License-Identifier: GPL-2.0
/*
 * check.c - check_invariants(): the whole emulated state, cross-checked.
 *
 *  - VMAs sorted, non-overlapping, page aligned, no mergeable neighbours
 *    left unmerged, no uffd flags with NOHUGEPAGE/HUGEPAGE conflict;
 *  - every present non-special PTE lies in a VMA and maps a frame of a live
 *    anon folio at the right offset (folio->index + offset == vpn);
 *  - over every mm of the machine: each folio's mapcounts (per-page
 *    _mapcount, _large_mapcount, _entire_mapcount, _nr_pages_mapped, the
 *    two MM-id slots) and refcount equal the PTEs/PMDs mapping it, each page
 *    is mapped at most once per mm, a folio mapped by two mms is "maybe
 *    mapped shared", an AnonExclusive page has one mapping at most, and the
 *    partially-mapped flag agrees;
 *  - folios are naturally aligned in VA (PTE-mapped, as mapped at fault) and PA;
 *  - special PTEs map the zero page; huge zero PMDs the huge zero folio;
 *  - per mm: MM_ANONPAGES == resident anon pages; nr_ptes == PTE tables +
 *    deposits; the touched gauges;
 *  - buddy free lists, allocated frames and the deferred (not yet
 *    initialised) sections partition RAM exactly;
 *  - the gauges (nr_anon, nr_anon_partially_mapped, LRU, memcg, touched,
 *    deferred-split queue) equal what a recount finds;
 *  - arm64: every PTE_CONT block is whole, aligned and physically contiguous.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "laf_internal.h"

struct ctx {
	struct laf_machine *m;
	struct laf_mm *mm;  /* the mm being walked */
	uint16_t mm_idx;    /* its index + 1 */
	char *msg;
	size_t msglen;
	uint16_t *maps;     /* PTE mappings per frame, every mm */
	uint16_t *seen;     /* last mm (index + 1) mapping the frame */
	uint32_t *fmaps;    /* mappings (PTE + PMD) per folio head */
	uint32_t *emaps;    /* PMD mappings per folio head */
	uint32_t *slot[2];  /* mappings per folio head by the mm in MM-id slot 0 / 1 */
	uint32_t *owner;    /* first mm id mapping the folio; bit 31: a second one did */
	int64_t anon_pages, touched, zero_touched, tables, all_tables;
};

/* account one mapping (PTE or PMD) of folio @head by the mm being walked */
static void count_folio_map(struct ctx *c, uint64_t head, bool pmd)
{
	struct page *hp = machine_page(c->m, head);
	uint32_t id = c->mm->mm_id;
	int k;

	c->fmaps[head]++;
	if (pmd)
		c->emaps[head]++;
	if (!c->owner[head])
		c->owner[head] = id;
	else if ((c->owner[head] & MM_ID_MAX) != id)
		c->owner[head] |= 0x80000000u;
	if (!page_order(hp))
		return;
	for (k = 0; k < 2; k++)
		if (folio_mm_id(hp, k) == id)
			c->slot[k][head]++;
}

static int fail(struct ctx *c, const char *fmt, ...)
{
	va_list ap;

	if (c->msg && c->msglen) {
		va_start(ap, fmt);
		vsnprintf(c->msg, c->msglen, fmt, ap);
		va_end(ap);
	}
	return LAF_EUCLEAN;
}

#define CHECK(c, cond, ...) do { if (!(cond)) return fail(c, __VA_ARGS__); } while (0)

static int check_vmas(struct ctx *c)
{
	struct laf_mm *mm = c->mm;
	struct laf_vma *v, *p;
	size_t i = 0;
	int err = validate_mm(mm, c->msg, c->msglen);

	if (err)
		return err;
	for_each_vma(mm, v) {
		CHECK(c, v->vm_start < v->vm_end, "vma %zu empty [%#llx,%#llx)", i,
		      (unsigned long long)v->vm_start, (unsigned long long)v->vm_end);
		CHECK(c, !((v->vm_start | v->vm_end) & (mm->page_size - 1)), "vma %zu unaligned", i);
		CHECK(c, v->vm_end <= mm->task_size, "vma %zu beyond TASK_SIZE", i);
		CHECK(c, !((v->vm_flags & LAF_VM_HUGEPAGE) && (v->vm_flags & LAF_VM_NOHUGEPAGE)),
		      "vma %zu has both VM_HUGEPAGE and VM_NOHUGEPAGE", i);
		p = vma_prev(v);
		if (p) {
			CHECK(c, p->vm_end <= v->vm_start, "vmas %zu and %zu overlap", i - 1, i);
			CHECK(c, !(p->vm_end == v->vm_start && p->vm_flags == v->vm_flags &&
				   !v->no_merge_prev &&
				   (!p->anon_vma || !v->anon_vma || p->anon_vma == v->anon_vma)),
			      "vmas %zu and %zu [%#llx) should have merged", i - 1, i,
			      (unsigned long long)v->vm_start);
		}
		i++;
	}
	return 0;
}

static bool in_vma(struct laf_mm *mm, uint64_t addr)
{
	struct laf_vma *v = find_vma(mm, addr);

	return v && addr >= v->vm_start;
}

static int check_folio_head(struct ctx *c, uint64_t pfn, uint64_t vpn, uint64_t *headp)
{
	struct laf_mm *mm = c->mm;
	uint64_t head;
	struct page *hp;
	unsigned int order;

	CHECK(c, pfn < c->m->nr_frames, "pfn %#llx beyond RAM", (unsigned long long)pfn);
	head = compound_head_pfn(mm, pfn);
	hp = pfn_to_page(mm, head);
	CHECK(c, hp->flags & PG_head, "pfn %#llx: head %#llx is not a folio head",
	      (unsigned long long)pfn, (unsigned long long)head);
	CHECK(c, hp->flags & PG_anon, "folio %#llx mapped but not anon", (unsigned long long)head);
	order = page_order(hp);
	CHECK(c, pfn - head < (1ULL << order), "pfn %#llx outside its folio", (unsigned long long)pfn);
	CHECK(c, !(head & ((1ULL << order) - 1)), "folio %#llx not PA-aligned to order %u",
	      (unsigned long long)head, order);
	CHECK(c, folio_index(hp) + (pfn - head) == vpn,
	      "folio %#llx: index %#llx + %llu != vpn %#llx", (unsigned long long)head,
	      (unsigned long long)folio_index(hp), (unsigned long long)(pfn - head),
	      (unsigned long long)vpn);
	*headp = head;
	return 0;
}

static int check_ptes(struct ctx *c, pmd_t *pmd, uint64_t base)
{
	struct laf_mm *mm = c->mm;
	unsigned int i, cont = mm->cont_pte_order ? 1u << mm->cont_pte_order : 0;

	for (i = 0; i < mm->ptrs_per_pte; i++) {
		pte_t pte = pmd->ptes[i];
		uint64_t addr = base + ((uint64_t)i << mm->page_shift), head;
		int err;

		if (pte_none(pte))
			continue;
		CHECK(c, pte_present(pte), "non-present PTE %#llx at %#llx (no swap emulated)",
		      (unsigned long long)pte, (unsigned long long)addr);
		CHECK(c, in_vma(mm, addr), "PTE at %#llx outside every VMA", (unsigned long long)addr);
		if (pte & LAF_PTE_TOUCHED) {
			if (pte_special(pte))
				c->zero_touched++;
			else
				c->touched++;
		}
		if (pte_special(pte)) {
			CHECK(c, pte_pfn(pte) == c->m->zero_pfn, "special PTE at %#llx not the zero page",
			      (unsigned long long)addr);
			CHECK(c, !pte_write(pte), "writable zero-page PTE at %#llx",
			      (unsigned long long)addr);
			continue;
		}
		err = check_folio_head(c, pte_pfn(pte), addr >> mm->page_shift, &head);
		if (err)
			return err;
		CHECK(c, c->seen[pte_pfn(pte)] != c->mm_idx, "pfn %#llx mapped twice in mm %u",
		      (unsigned long long)pte_pfn(pte), mm->mm_id);
		c->seen[pte_pfn(pte)] = c->mm_idx;
		c->maps[pte_pfn(pte)]++;
		count_folio_map(c, head, false);
		c->anon_pages++;
		if (cont && (pte & LAF_PTE_CONT)) {
			unsigned int s = i & ~(cont - 1), k;
			uint64_t p0 = pte_pfn(pmd->ptes[s]);

			CHECK(c, !(p0 & (cont - 1)), "contpte block at %#llx: PA not aligned",
			      (unsigned long long)addr);
			for (k = 0; k < cont; k++) {
				const pte_t prot = LAF_PTE_WRITE | LAF_PTE_UFFD_WP | LAF_PTE_SPECIAL;

				CHECK(c, (pmd->ptes[s + k] & LAF_PTE_CONT) &&
					 pte_pfn(pmd->ptes[s + k]) == p0 + k,
				      "contpte block at %#llx broken at entry %u",
				      (unsigned long long)addr, k);
				/* one pgprot per block (access/dirty bits may differ) */
				CHECK(c, (pmd->ptes[s + k] & prot) == (pmd->ptes[s] & prot),
				      "contpte block at %#llx: entry %u has another pgprot",
				      (unsigned long long)addr, k);
			}
		}
	}
	return 0;
}

static int check_pgtables(struct ctx *c)
{
	struct laf_mm *mm = c->mm;
	size_t g;
	unsigned int j;

	for (g = 0; g < mm->pgd_entries; g++) {
		struct pmd_table *t = mm->pgd[g];

		if (!t)
			continue;
		for (j = 0; j < mm->ptrs_per_pte; j++) {
			pmd_t *pmd = &t->e[j];
			uint64_t base = ((uint64_t)g << mm->pud_shift) | ((uint64_t)j << mm->pmd_shift);
			int err;

			if (pmd_none(pmd))
				continue;
			CHECK(c, pmd->ptes, "PMD at %#llx without a table", (unsigned long long)base);
			CHECK(c, c->m->memmap[pmd->table_pfn].flags & PG_pgtable,
			      "PMD at %#llx: table frame not a page table", (unsigned long long)base);
			c->tables++;
			if (pmd_trans_huge(pmd)) {
				uint64_t pfn = pte_pfn(pmd->val), head;
				unsigned int k;

				CHECK(c, in_vma(mm, base) && in_vma(mm, base + mm->pmd_size - 1),
				      "huge PMD at %#llx not inside a VMA", (unsigned long long)base);
				for (k = 0; k < mm->ptrs_per_pte; k++) {
					CHECK(c, !(pmd->ptes[k] & ~(pte_t)LAF_PTE_TOUCHED),
					      "deposited table at %#llx not empty", (unsigned long long)base);
					if (pmd->ptes[k] & LAF_PTE_TOUCHED) {
						if (pmd->val & LAF_PTE_SPECIAL)
							c->zero_touched++;
						else
							c->touched++;
					}
				}
				if (pmd->val & LAF_PTE_SPECIAL) {
					CHECK(c, pfn == c->m->huge_zero_pfn, "huge zero PMD at %#llx: wrong pfn",
					      (unsigned long long)base);
					c->fmaps[pfn]++;
					continue;
				}
				err = check_folio_head(c, pfn, base >> mm->page_shift, &head);
				if (err)
					return err;
				CHECK(c, head == pfn && page_order(pfn_to_page(mm, pfn)) == mm->pmd_order,
				      "huge PMD at %#llx does not map a whole PMD folio",
				      (unsigned long long)base);
				CHECK(c, c->m->memmap[pfn].flags & PG_pmd_mapped,
				      "PMD-mapped folio %#llx lacks PG_pmd_mapped", (unsigned long long)pfn);
				count_folio_map(c, pfn, true);
				c->anon_pages += 1LL << mm->pmd_order;
				continue;
			}
			err = check_ptes(c, pmd, base);
			if (err)
				return err;
		}
	}
	return 0;
}

/*
 * The 6.18 rmap state of an anon folio against the recount: per-page
 * _mapcount, AnonExclusive (one mapping at most), and for large folios
 * _entire_mapcount, _nr_pages_mapped, the MM-id slots and the shared bit
 * (set whenever two mms map the folio; it may stay set after, by history).
 */
static int check_folio_rmap(struct ctx *c, uint64_t pfn, struct page *p)
{
	unsigned int order = page_order(p), nr = 1u << order, i, mapped = 0;
	int k;

	for (i = 0; i < nr; i++) {
		struct page *q = p + i;

		CHECK(c, q->mapcount == (order ? c->maps[pfn + i] : (int32_t)c->fmaps[pfn]),
		      "page %#llx: _mapcount %d, %u PTEs map it", (unsigned long long)(pfn + i),
		      q->mapcount, c->maps[pfn + i]);
		CHECK(c, !(q->flags & PG_anon_exclusive) || c->maps[pfn + i] + c->emaps[pfn] <= 1,
		      "page %#llx AnonExclusive but mapped %u times", (unsigned long long)(pfn + i),
		      c->maps[pfn + i] + c->emaps[pfn]);
		mapped += c->maps[pfn + i] > 0;
	}
	if ((c->owner[pfn] & 0x80000000u) && order)
		CHECK(c, folio_maybe_shared_bit(p), "folio %#llx mapped by two mms, not maybe-shared",
		      (unsigned long long)pfn);
	if (!order)
		return 0;
	CHECK(c, folio_entire_mapcount(p) == c->emaps[pfn], "folio %#llx: _entire_mapcount %u, %u PMDs",
	      (unsigned long long)pfn, folio_entire_mapcount(p), c->emaps[pfn]);
	CHECK(c, !(p->flags & PG_pmd_mapped) == !c->emaps[pfn],
	      "folio %#llx: PG_pmd_mapped disagrees with %u PMD mappings", (unsigned long long)pfn,
	      c->emaps[pfn]);
	CHECK(c, folio_nr_pages_mapped(p) == mapped, "folio %#llx: _nr_pages_mapped %u, recount %u",
	      (unsigned long long)pfn, folio_nr_pages_mapped(p), mapped);
	for (k = 0; k < 2; k++)
		CHECK(c, folio_mm_id_mapcount(p, k) == (folio_mm_id(p, k) ? c->slot[k][pfn] : 0),
		      "folio %#llx: MM-id slot %d (mm %u) holds %u, recount %u",
		      (unsigned long long)pfn, k, folio_mm_id(p, k), folio_mm_id_mapcount(p, k),
		      c->slot[k][pfn]);
	return 0;
}

static int check_frames(struct ctx *c)
{
	struct laf_machine *mm = c->m;
	uint64_t pfn, free_frames = 0, tables = 0;
	int64_t nr_anon[LAF_NR_ORDERS] = {0}, partial[LAF_NR_ORDERS] = {0};
	int64_t lru = 0, charged = 0, queued = 0, pinned = 0;
	unsigned int o, max = mm->max_page_order;

	/*
	 * deferred struct-page init: [deferred_start, deferred_end) is a run of
	 * whole MAX_PAGE_ORDER blocks, free but not initialised, counted in
	 * free_count[] and nr_free; its struct pages are not read here
	 */
	CHECK(c, mm->deferred_start <= mm->deferred_end && mm->deferred_end <= mm->nr_frames &&
		 !((mm->deferred_start | mm->deferred_end) & ((1ULL << max) - 1)),
	      "deferred range [%#llx, %#llx) misaligned or past RAM",
	      (unsigned long long)mm->deferred_start, (unsigned long long)mm->deferred_end);
	/* free lists: well-formed and exactly the PG_buddy heads */
	for (o = 0; o <= max; o++) {
		uint32_t p = mm->free_head[o], prev = NO_PFN;
		uint64_t n = o == max ? (mm->deferred_end - mm->deferred_start) >> max : 0;

		while (p != NO_PFN) {
			struct page *pg = machine_page(mm, p);

			CHECK(c, p < mm->nr_frames, "free list %u: pfn %u beyond RAM", o, p);
			CHECK(c, p < mm->deferred_start || p >= mm->deferred_end,
			      "free list %u: pfn %u is in the deferred range", o, p);
			CHECK(c, (pg->flags & PG_buddy) && page_order(pg) == o,
			      "free list %u: pfn %u not a buddy of that order", o, p);
			CHECK(c, !(p & ((1u << o) - 1)) && p + (1ULL << o) <= mm->nr_frames,
			      "free block %u/%u misaligned or past RAM", p, o);
			CHECK(c, pg->buddy_prev == prev, "free list %u: broken prev link at %u", o, p);
			prev = p;
			p = pg->buddy_next;
			CHECK(c, ++n <= mm->free_count[o], "free list %u longer than its count", o);
		}
		CHECK(c, n == mm->free_count[o],
		      "free list %u: %llu blocks (deferred included), count says %llu", o,
		      (unsigned long long)n, (unsigned long long)mm->free_count[o]);
	}
	for (pfn = 0; pfn < mm->nr_frames;) {
		struct page *p = machine_page(mm, pfn);

		if (pfn == mm->deferred_start && mm->deferred_end > pfn) {
			free_frames += mm->deferred_end - pfn;
			pfn = mm->deferred_end;
			continue;
		}
		if (p->flags & PG_buddy) {
			uint64_t k, nr = 1ULL << page_order(p);

			for (k = 1; k < nr; k++)
				CHECK(c, mm->memmap[pfn + k].flags == 0,
				      "frame %#llx inside free block %#llx is in use",
				      (unsigned long long)(pfn + k), (unsigned long long)pfn);
			free_frames += nr;
			pfn += nr;
			continue;
		}
		if (p->flags & PG_pgtable) {
			tables++;
			pfn++;
			continue;
		}
		if (p->flags & (PG_reserved | PG_pinned)) {
			pinned += !!(p->flags & PG_pinned);
			pfn++;
			continue;
		}
		if (p->flags & PG_head) {
			unsigned int order = page_order(p);
			uint64_t k, nr = 1ULL << order;
			int32_t maps = (int32_t)c->fmaps[pfn];

			CHECK(c, pfn + nr <= mm->nr_frames, "folio %#llx past RAM", (unsigned long long)pfn);
			for (k = 1; k < nr; k++)
				CHECK(c, (mm->memmap[pfn + k].flags & PG_tail) &&
					 mm->memmap[pfn + k].head == pfn,
				      "folio %#llx: bad tail %llu", (unsigned long long)pfn,
				      (unsigned long long)k);
			if (p->flags & PG_huge_zero) {
				CHECK(c, pfn == mm->huge_zero_pfn, "stray huge zero folio %#llx",
				      (unsigned long long)pfn);
				CHECK(c, p->mapcount == maps && p->refcount == maps + 1,
				      "huge zero folio: mapcount %d refcount %d, %d PMDs map it",
				      p->mapcount, p->refcount, maps);
				pfn += nr;
				continue;
			}
			CHECK(c, p->flags & PG_anon, "folio %#llx allocated but not anon (leak)",
			      (unsigned long long)pfn);
			CHECK(c, maps > 0, "anon folio %#llx mapped nowhere (leak)", (unsigned long long)pfn);
			CHECK(c, folio_mapcount(p) == maps, "folio %#llx: mapcount %d, %d mappings found",
			      (unsigned long long)pfn, folio_mapcount(p), maps);
			CHECK(c, p->refcount == maps, "folio %#llx: refcount %d, %d mappings found",
			      (unsigned long long)pfn, p->refcount, maps);
			{
				int err = check_folio_rmap(c, pfn, p);

				if (err)
					return err;
			}
			if (!(p->flags & PG_pmd_mapped))
				CHECK(c, !(folio_index(p) & (nr - 1)),
				      "folio %#llx not VA-aligned", (unsigned long long)pfn);
			if (p->flags & PG_partially_mapped)
				CHECK(c, order > 1 && folio_nr_pages_mapped(p) < nr && !c->emaps[pfn],
				      "folio %#llx flagged partially mapped but fully mapped",
				      (unsigned long long)pfn);
			else if (order > 1 && !c->emaps[pfn])
				CHECK(c, folio_nr_pages_mapped(p) == nr,
				      "folio %#llx partially mapped (%u/%llu) but not flagged",
				      (unsigned long long)pfn, folio_nr_pages_mapped(p),
				      (unsigned long long)nr);
			if (order > 0)
				nr_anon[order]++;
			if (p->flags & PG_partially_mapped)
				partial[order]++;
			if (p->flags & PG_lru)
				lru += (int64_t)nr;
			if (p->flags & PG_memcg)
				charged += (int64_t)nr;
			if (p->flags & PG_deferred_queued)
				queued++;
			pfn += nr;
			continue;
		}
		CHECK(c, p->flags == 0, "frame %#llx in an unknown state %#x", (unsigned long long)pfn,
		      p->flags);
		return fail(c, "frame %#llx is neither free nor allocated (lost)",
			    (unsigned long long)pfn);
	}
	CHECK(c, free_frames == mm->nr_free, "free frames %llu, nr_free %llu",
	      (unsigned long long)free_frames, (unsigned long long)mm->nr_free);
	CHECK(c, (int64_t)tables == c->all_tables, "page-table frames %llu, tables %lld",
	      (unsigned long long)tables, (long long)c->all_tables);
	CHECK(c, (uint64_t)pinned == mm->nr_pinned, "pinned frames %lld, list %zu",
	      (long long)pinned, mm->nr_pinned);
	for (o = 0; o < LAF_NR_ORDERS; o++) {
		CHECK(c, nr_anon[o] == mm->gauges.nr_anon[o], "nr_anon[%u] = %lld, recount %lld", o,
		      (long long)mm->gauges.nr_anon[o], (long long)nr_anon[o]);
		CHECK(c, partial[o] == mm->gauges.nr_anon_partially_mapped[o],
		      "nr_anon_partially_mapped[%u] = %lld, recount %lld", o,
		      (long long)mm->gauges.nr_anon_partially_mapped[o], (long long)partial[o]);
	}
	CHECK(c, lru == mm->gauges.lru_pages, "lru_pages %lld, recount %lld",
	      (long long)mm->gauges.lru_pages, (long long)lru);
	CHECK(c, (uint64_t)charged == mm->memcg_charged, "memcg charged %llu, recount %lld",
	      (unsigned long long)mm->memcg_charged, (long long)charged);
	CHECK(c, mm->memcg_charged <= mm->memcg_limit,
	      "memcg charged %llu above limit %llu", (unsigned long long)mm->memcg_charged,
	      (unsigned long long)mm->memcg_limit);
	CHECK(c, (uint64_t)queued == mm->gauges.deferred_split_queue, "deferred queue %llu, recount %lld",
	      (unsigned long long)mm->gauges.deferred_split_queue, (long long)queued);
	return 0;
}

/* the per-mm walk: VMAs, page tables, and the mm's own gauges */
static int check_mm(struct ctx *c)
{
	struct laf_mm *mm = c->mm;
	int err;

	c->anon_pages = c->touched = c->zero_touched = c->tables = 0;
	err = check_vmas(c);
	if (!err)
		err = check_pgtables(c);
	if (err)
		return err;
	c->all_tables += c->tables;
	CHECK(c, c->anon_pages == mm->st.mm_anonpages, "mm %u: MM_ANONPAGES %lld, resident anon pages %lld",
	      mm->mm_id, (long long)mm->st.mm_anonpages, (long long)c->anon_pages);
	CHECK(c, c->tables == mm->st.nr_ptes, "mm %u: nr_ptes %lld, tables found %lld", mm->mm_id,
	      (long long)mm->st.nr_ptes, (long long)c->tables);
	CHECK(c, c->touched == mm->st.pages_touched, "mm %u: pages_touched %lld, recount %lld",
	      mm->mm_id, (long long)mm->st.pages_touched, (long long)c->touched);
	CHECK(c, c->zero_touched == mm->st.zero_pages_touched,
	      "mm %u: zero_pages_touched %lld, recount %lld", mm->mm_id,
	      (long long)mm->st.zero_pages_touched, (long long)c->zero_touched);
	return 0;
}

int __laf_check_invariants(struct laf_machine *m, char *msg, size_t msglen)
{
	struct ctx c = { .m = m, .msg = msg, .msglen = msglen };
	uint64_t n = m->nr_frames;
	size_t k;
	int err = 0;

	if (msg && msglen)
		msg[0] = 0;
	c.maps = calloc(n, sizeof(*c.maps));
	c.seen = calloc(n, sizeof(*c.seen));
	c.fmaps = calloc(n, sizeof(*c.fmaps));
	c.emaps = calloc(n, sizeof(*c.emaps));
	c.slot[0] = calloc(n, sizeof(uint32_t));
	c.slot[1] = calloc(n, sizeof(uint32_t));
	c.owner = calloc(n, sizeof(*c.owner));
	if (!c.maps || !c.seen || !c.fmaps || !c.emaps || !c.slot[0] || !c.slot[1] || !c.owner)
		err = LAF_ENOMEM;
	for (k = 0; !err && k < m->nr_mms; k++) {
		c.mm = m->mms[k];
		c.mm_idx = (uint16_t)(k + 1);
		err = check_mm(&c);
	}
	if (!err)
		err = check_frames(&c);
	free(c.maps);
	free(c.seen);
	free(c.fmaps);
	free(c.emaps);
	free(c.slot[0]);
	free(c.slot[1]);
	free(c.owner);
	return err;
}
