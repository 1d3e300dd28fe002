// SPDX-License-Identifier: GPL-2.0
/*
 * test_laf.c - unit tests of the emulator core through the public laf.h ABI,
 * in the style of the kernel's tools/testing/vma harness: each test is a
 * static bool test_xxx(void); ASSERT_*() print file:line:func(): expr and
 * return false; the runner calls every test, runs laf_check_invariants() on
 * every address space the test created, destroys them, and ends with the
 * line "N passed, N failed".  `make ctest` and `make ctest-asan` (ASan +
 * UBSan, leak detection) build and run it.
 *
 * Expected values come from the kernel's semantics (docs/kernel-semantics.md,
 * the LAF v3 patch as csrc/policy.c describes it) and this machine's measurements
 * (docs/kernel-findings.md), not from the emulator's output.
 *
 * PTE pictures (one character per base page, as pte_picture() draws them):
 *   .  none          z  small zero page     Z  huge zero PMD
 *   p  order-0 page  F  page of a large folio (PTE-mapped)
 *   C  large folio page with PTE_CONT (arm64)   H  PMD-mapped THP
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

#include "laf.h"

#define K (1ULL << 10)
#define M (1ULL << 20)
#define BASE 0x100000000000ULL  /* fixed mappings live here, far below mmap_base */

/* ------------------------------------------------------------- harness */

#define ASSERT_TRUE(_expr)                                                      \
	do {                                                                    \
		if (!(_expr)) {                                                 \
			fprintf(stderr, "%s:%d:%s(): %s\n", __FILE__, __LINE__, \
				__func__, #_expr);                              \
			return false;                                           \
		}                                                               \
	} while (0)

#define ASSERT_FALSE(_expr) ASSERT_TRUE(!(_expr))

#define ASSERT_EQ(_a, _b)                                                       \
	do {                                                                    \
		long long __a = (long long)(_a), __b = (long long)(_b);         \
		if (__a != __b) {                                               \
			fprintf(stderr, "%s:%d:%s(): %s == %s (%lld != %lld)\n",  \
				__FILE__, __LINE__, __func__, #_a, #_b, __a, __b); \
			return false;                                           \
		}                                                               \
	} while (0)

#define ASSERT_NE(_a, _b) ASSERT_TRUE((_a) != (_b))
#define ASSERT_OK(_expr) ASSERT_EQ((_expr), LAF_OK)

#define ASSERT_STREQ(_a, _b)                                                    \
	do {                                                                    \
		const char *__a = (_a), *__b = (_b);                            \
		if (strcmp(__a, __b)) {                                         \
			fprintf(stderr, "%s:%d:%s(): %s == %s\n  got  \"%s\"\n  want \"%s\"\n", \
				__FILE__, __LINE__, __func__, #_a, #_b, __a, __b); \
			return false;                                           \
		}                                                               \
	} while (0)

/* Every mm a test creates; the runner checks and destroys them after it. */
#define MAX_MMS 8
static laf_mm *live[MAX_MMS];
static int nr_live;

static laf_mm *mm_new(uint32_t page_shift, uint32_t arch, uint64_t ram, uint64_t memcg)
{
	struct laf_config cfg;
	laf_mm *mm = NULL;

	laf_config_default(&cfg);
	cfg.page_shift = page_shift;
	cfg.arch = arch;
	cfg.ram_bytes = ram;
	cfg.memcg_limit_bytes = memcg;
	if (laf_mm_create(&cfg, &mm) || !mm || nr_live == MAX_MMS) {
		laf_mm_destroy(mm);
		return NULL;
	}
	live[nr_live++] = mm;
	return mm;
}

/* a 4K x86-64 mm with 64M of RAM */
static laf_mm *mm_small(void)
{
	return mm_new(LAF_PAGE_SHIFT_4K, LAF_ARCH_GENERIC, 64 * M, LAF_MEMCG_UNLIMITED);
}

/* upstream policy: global @enabled, the listed orders "always" */
static int set_upstream(laf_mm *mm, int enabled, unsigned long always_orders, int pmd_state)
{
	struct laf_policy pol;
	struct laf_geometry g;
	int o;

	laf_get_geometry(mm, &g);
	laf_policy_default(&pol, g.page_shift);
	pol.enabled = enabled;
	for (o = 2; o < (int)g.pmd_order; o++)
		if (always_orders & (1UL << o))
			pol.per_size[o] = LAF_THP_ALWAYS;
	pol.per_size[g.pmd_order] = pmd_state;
	return laf_set_policy(mm, &pol);
}

static int set_kind(laf_mm *mm, int kind, int enabled)
{
	struct laf_policy pol;
	struct laf_geometry g;

	laf_get_geometry(mm, &g);
	laf_policy_default(&pol, g.page_shift);
	pol.kind = kind;
	pol.enabled = enabled;
	return laf_set_policy(mm, &pol);
}

static uint64_t map_fixed(laf_mm *mm, uint64_t addr, uint64_t len)
{
	uint64_t out = 0;

	if (laf_mmap(mm, addr, len, LAF_PROT_READ | LAF_PROT_WRITE, LAF_MAP_FIXED, &out))
		return 0;
	return out;
}

static struct laf_fault_result fault(laf_mm *mm, uint64_t addr, int write)
{
	struct laf_fault_result r;

	memset(&r, 0xff, sizeof(r));
	if (laf_fault(mm, addr, write, &r))
		r.access = -1;
	return r;
}

static struct laf_stats stats(laf_mm *mm)
{
	struct laf_stats s;

	memset(&s, 0, sizeof(s));
	laf_get_stats(mm, &s);
	return s;
}

static int touch(laf_mm *mm, uint64_t start, uint64_t len, int write)
{
	struct laf_touch_summary sum;

	if (laf_touch_range(mm, start, len, 4 * K, write, &sum))
		return -1;
	return (int)sum.faulted;
}

/* One character per page, see the header comment. */
static const char *pte_picture(laf_mm *mm, uint64_t start, size_t n)
{
	static char buf[4096];
	uint64_t ptes[4096];
	int8_t orders[4096];
	size_t i;

	if (n >= sizeof(buf) || laf_read_ptes(mm, start, n, ptes, orders))
		return "<error>";
	for (i = 0; i < n; i++) {
		char c;

		if (orders[i] == LAF_ORDER_NONE)
			c = '.';
		else if (orders[i] == LAF_ORDER_ZERO)
			c = 'z';
		else if (orders[i] == LAF_ORDER_HUGE_ZERO)
			c = 'Z';
		else if (ptes[i] & LAF_PTE_HUGE)
			c = 'H';
		else if (ptes[i] & LAF_PTE_CONT)
			c = 'C';
		else
			c = orders[i] ? 'F' : 'p';
		buf[i] = c;
	}
	buf[n] = 0;
	return buf;
}

static int folio_order_at(laf_mm *mm, uint64_t addr)
{
	struct laf_folio_info fi;

	if (laf_lookup(mm, addr, NULL, &fi))
		return -100;
	return fi.order;
}

/* ---------------------------------------------------------------- tests */

static bool test_geometry(void)
{
	static const struct { uint32_t shift; uint64_t ram, pmd; uint32_t order, ptrs; } g[] = {
		{ LAF_PAGE_SHIFT_4K, 64 * M, 2 * M, 9, 512 },
		{ LAF_PAGE_SHIFT_16K, 256 * M, 32 * M, 11, 2048 },
		{ LAF_PAGE_SHIFT_64K, 1024 * M, 512 * M, 13, 8192 },
	};
	size_t i;

	for (i = 0; i < sizeof(g) / sizeof(g[0]); i++) {
		laf_mm *mm = mm_new(g[i].shift, LAF_ARCH_ARM64, g[i].ram, LAF_MEMCG_UNLIMITED);
		struct laf_geometry geo;

		ASSERT_TRUE(mm);
		ASSERT_OK(laf_get_geometry(mm, &geo));
		ASSERT_EQ(geo.page_size, 1ULL << g[i].shift);
		ASSERT_EQ(geo.pmd_size, g[i].pmd);
		ASSERT_EQ(geo.pmd_order, g[i].order);
		ASSERT_EQ(geo.ptrs_per_pte, g[i].ptrs);
		ASSERT_EQ(geo.ram_pages, g[i].ram >> g[i].shift);
	}
	return true;
}

static bool test_arch_pte_orders(void)
{
	/* arch_wants_pte_order(): LAF_ORDER_NONE generic; the contpte order on arm64 */
	static const struct { uint32_t shift, arch; int32_t arch_order; uint32_t cont; } g[] = {
		{ LAF_PAGE_SHIFT_4K, LAF_ARCH_GENERIC, LAF_ORDER_NONE, 0 }, { LAF_PAGE_SHIFT_4K, LAF_ARCH_ARM64, 4, 4 },
		{ LAF_PAGE_SHIFT_16K, LAF_ARCH_ARM64, 7, 7 },    { LAF_PAGE_SHIFT_64K, LAF_ARCH_ARM64, 5, 5 },
	};
	size_t i;

	for (i = 0; i < sizeof(g) / sizeof(g[0]); i++) {
		laf_mm *mm = mm_new(g[i].shift, g[i].arch, 1024 * M, LAF_MEMCG_UNLIMITED);
		struct laf_geometry geo;

		ASSERT_TRUE(mm);
		ASSERT_OK(laf_get_geometry(mm, &geo));
		ASSERT_EQ(geo.arch_pte_order, g[i].arch_order);
		ASSERT_EQ(geo.cont_pte_order, g[i].cont);
	}
	return true;
}

static bool test_create_rejects_bad_config(void)
{
	struct laf_config cfg;
	laf_mm *mm = (laf_mm *)0x1;

	laf_config_default(&cfg);
	cfg.page_shift = 13;
	ASSERT_EQ(laf_mm_create(&cfg, &mm), LAF_EINVAL);
	ASSERT_TRUE(mm == NULL);
	laf_config_default(&cfg);
	cfg.arch = 9;
	ASSERT_EQ(laf_mm_create(&cfg, &mm), LAF_EINVAL);
	laf_config_default(&cfg);
	cfg.ram_bytes = 2 * M;                 /* less than two PMDs */
	ASSERT_EQ(laf_mm_create(&cfg, &mm), LAF_EINVAL);
	laf_config_default(&cfg);
	cfg.flags = 1;
	ASSERT_EQ(laf_mm_create(&cfg, &mm), LAF_EINVAL);
	ASSERT_EQ(laf_mm_create(NULL, &mm), LAF_EINVAL);
	laf_mm_destroy(NULL);
	ASSERT_TRUE(strlen(laf_strerror(LAF_EINVAL)) > 0);
	return true;
}

static bool test_policy_default_and_validation(void)
{
	laf_mm *mm = mm_small();
	struct laf_policy pol, got;
	int o;

	ASSERT_TRUE(mm);
	/* stock 6.18: enabled=madvise, use_zero_page=1, PMD inherit, others never */
	ASSERT_OK(laf_get_policy(mm, &got));
	ASSERT_EQ(got.kind, LAF_POLICY_UPSTREAM);
	ASSERT_EQ(got.enabled, LAF_THP_MADVISE);
	ASSERT_EQ(got.use_zero_page, 1);
	for (o = 0; o < LAF_NR_ORDERS; o++)
		ASSERT_EQ(got.per_size[o], o == 9 ? LAF_THP_INHERIT : LAF_THP_NEVER);

	laf_policy_default(&pol, LAF_PAGE_SHIFT_4K);
	pol.per_size[1] = LAF_THP_ALWAYS;             /* order 1: no anon enabled file */
	ASSERT_EQ(laf_set_policy(mm, &pol), LAF_EINVAL);
	laf_policy_default(&pol, LAF_PAGE_SHIFT_4K);
	pol.per_size[10] = LAF_THP_ALWAYS;            /* above the PMD order */
	ASSERT_EQ(laf_set_policy(mm, &pol), LAF_EINVAL);
	laf_policy_default(&pol, LAF_PAGE_SHIFT_4K);
	pol.enabled = LAF_THP_SMALL;                  /* Huang's values: huang-sysfs only */
	ASSERT_EQ(laf_set_policy(mm, &pol), LAF_EINVAL);
	pol.kind = LAF_POLICY_HUANG_SYSFS;
	ASSERT_OK(laf_set_policy(mm, &pol));
	laf_policy_default(&pol, LAF_PAGE_SHIFT_4K);
	pol.kind = LAF_POLICY_FIXED;
	pol.fixed_order = 1;
	ASSERT_EQ(laf_set_policy(mm, &pol), LAF_EINVAL);
	pol.fixed_order = 10;
	ASSERT_EQ(laf_set_policy(mm, &pol), LAF_EINVAL);
	laf_policy_default(&pol, LAF_PAGE_SHIFT_4K);
	pol.anon_beside_full = 2;
	ASSERT_EQ(laf_set_policy(mm, &pol), LAF_EINVAL);
	/* a rejected policy leaves the old one in place */
	ASSERT_OK(laf_get_policy(mm, &got));
	ASSERT_EQ(got.kind, LAF_POLICY_HUANG_SYSFS);
	return true;
}

/*
 * Read fault: the shared zero page, no RSS, never a large folio.
 *   PTE 0..15: ..z.............
 * Write after read: an order-0 COW (do_wp_page), not an mTHP.
 *   PTE 0..15: ..p.............
 */
static bool test_read_zero_page_then_cow(void)
{
	laf_mm *mm = mm_small();
	uint64_t a;
	struct laf_fault_result r;
	struct laf_stats s;

	ASSERT_TRUE(mm);
	ASSERT_OK(set_upstream(mm, LAF_THP_MADVISE, 1UL << 4, LAF_THP_NEVER));
	a = map_fixed(mm, BASE, 1 * M);
	ASSERT_TRUE(a);
	r = fault(mm, a + 8 * K, 0);
	ASSERT_EQ(r.access, LAF_ACCESS_FAULT);
	ASSERT_EQ(r.kind, LAF_FK_ANON_READ);
	ASSERT_EQ(r.order, LAF_ORDER_NONE);
	ASSERT_STREQ(pte_picture(mm, a, 16), "..z.............");
	s = stats(mm);
	ASSERT_EQ(s.mm_anonpages, 0);
	ASSERT_EQ(s.anon_fault_alloc[4], 0);
	ASSERT_EQ(s.nr_ptes, 1);
	r = fault(mm, a + 8 * K, 1);
	ASSERT_EQ(r.kind, LAF_FK_WP);
	ASSERT_EQ(r.order, 0);
	ASSERT_STREQ(pte_picture(mm, a, 16), "..p.............");
	s = stats(mm);
	ASSERT_EQ(s.mm_anonpages, 1);
	ASSERT_EQ(s.faults_wp, 1);
	ASSERT_EQ(s.anon_fault_alloc[4], 0);
	return true;
}

/*
 * 64K always, write at +20K of an aligned VMA: one 64K folio.
 *   PTE 0..31: FFFFFFFFFFFFFFFF................
 * refcount == mapcount == 16 (folio_ref_add(nr - 1), large mapcount nr).
 */
static bool test_write_maps_64k_folio(void)
{
	laf_mm *mm = mm_small();
	struct laf_folio_info fi;
	uint64_t a, pte;
	struct laf_fault_result r;
	struct laf_stats s;

	ASSERT_TRUE(mm);
	ASSERT_OK(set_upstream(mm, LAF_THP_MADVISE, 1UL << 4, LAF_THP_NEVER));
	a = map_fixed(mm, BASE, 1 * M);
	r = fault(mm, a + 20 * K, 1);
	ASSERT_EQ(r.access, LAF_ACCESS_FAULT);
	ASSERT_EQ(r.kind, LAF_FK_ANON_WRITE);
	ASSERT_EQ(r.order, 4);
	ASSERT_EQ(r.nr_faults, 1);
	ASSERT_STREQ(pte_picture(mm, a, 32), "FFFFFFFFFFFFFFFF................");
	ASSERT_OK(laf_lookup(mm, a + 60 * K, &pte, &fi));
	ASSERT_EQ(fi.order, 4);
	ASSERT_EQ(fi.refcount, 16);
	ASSERT_EQ(fi.mapcount, 16);
	ASSERT_EQ(fi.index << LAF_PAGE_SHIFT_4K, a);
	ASSERT_EQ(fi.head_pfn % 16, 0);
	ASSERT_EQ(fi.head_pfn + 15, pte >> LAF_PTE_PFN_SHIFT);
	ASSERT_TRUE(fi.flags & LAF_FOLIO_ANON);
	ASSERT_TRUE(pte & LAF_PTE_WRITE);
	s = stats(mm);
	ASSERT_EQ(s.anon_fault_alloc[4], 1);
	ASSERT_EQ(s.nr_anon[4], 1);
	ASSERT_EQ(s.mm_anonpages, 16);
	ASSERT_EQ(s.memcg_charged, 16);
	/* the rest of the folio is accessible without faults */
	r = fault(mm, a + 4 * K, 1);
	ASSERT_EQ(r.access, LAF_ACCESS_HIT);
	return true;
}

/*
 * kernel-findings #2: 1M, both ends 8K past a 64K boundary.
 *   31 faults, 15 x 64K, the edges order 0; VMA-fit drops count nothing.
 */
static bool test_misaligned_vma_edges(void)
{
	laf_mm *mm = mm_small();
	uint64_t a;
	struct laf_stats s;
	int8_t orders[256];
	int i;

	ASSERT_TRUE(mm);
	ASSERT_OK(set_upstream(mm, LAF_THP_MADVISE, 1UL << 4, LAF_THP_NEVER));
	a = map_fixed(mm, BASE + 8 * K, 1 * M);
	ASSERT_EQ(touch(mm, a, 1 * M, 1), 31);
	s = stats(mm);
	ASSERT_EQ(s.pgfault, 31);
	ASSERT_EQ(s.anon_fault_alloc[4], 15);
	ASSERT_EQ(s.anon_fault_fallback[4], 0);
	ASSERT_OK(laf_read_ptes(mm, a, 256, NULL, orders));
	for (i = 0; i < 256; i++)
		ASSERT_EQ(orders[i], (i < 14 || i >= 254) ? 0 : 4);
	return true;
}

/*
 * A zero-page PTE blocks every mTHP range holding it (pte_range_none):
 *   PTE 0..15: ..z.............   then a write at 0:
 *   PTE 0..15: p.z.............   (order 0, no counter)
 * With 16K also enabled, the write at +32K gets a 16K folio:
 *   PTE 0..15: p.z.....FFFF....
 */
static bool test_zero_pte_blocks_mthp(void)
{
	laf_mm *mm = mm_small();
	uint64_t a;
	struct laf_stats s;

	ASSERT_TRUE(mm);
	ASSERT_OK(set_upstream(mm, LAF_THP_NEVER, (1UL << 4) | (1UL << 2), LAF_THP_NEVER));
	a = map_fixed(mm, BASE, 1 * M);
	fault(mm, a + 8 * K, 0);
	ASSERT_EQ(fault(mm, a, 1).order, 0);
	ASSERT_STREQ(pte_picture(mm, a, 16), "p.z.............");
	ASSERT_EQ(fault(mm, a + 32 * K, 1).order, 2);
	ASSERT_STREQ(pte_picture(mm, a, 16), "p.z.....FFFF....");
	s = stats(mm);
	ASSERT_EQ(s.anon_fault_alloc[2], 1);
	ASSERT_EQ(s.anon_fault_alloc[4], 0);
	ASSERT_EQ(s.anon_fault_fallback[4], 0);
	ASSERT_EQ(s.anon_fault_fallback[2], 0);
	return true;
}

/*
 * kernel-findings #4a: 16K+64K, 192K VMA 16K past a 64K boundary:
 *   0+48K:16K 48K+128K:64K 176K+16K:16K, 6 faults.
 */
static bool test_vma_fit_16k_and_64k(void)
{
	laf_mm *mm = mm_small();
	uint64_t a;
	struct laf_stats s;

	ASSERT_TRUE(mm);
	ASSERT_OK(set_upstream(mm, LAF_THP_MADVISE, (1UL << 4) | (1UL << 2), LAF_THP_NEVER));
	a = map_fixed(mm, BASE + 16 * K, 192 * K);
	ASSERT_EQ(touch(mm, a, 192 * K, 1), 6);
	s = stats(mm);
	ASSERT_EQ(s.anon_fault_alloc[2], 4);
	ASSERT_EQ(s.anon_fault_alloc[4], 2);
	ASSERT_EQ(folio_order_at(mm, a), 2);
	ASSERT_EQ(folio_order_at(mm, a + 48 * K), 4);
	ASSERT_EQ(folio_order_at(mm, a + 176 * K), 2);
	return true;
}

/* Allocation failure: anon_fault_fallback[o]++, next lower enabled order. */
static bool test_alloc_failure_fallback(void)
{
	laf_mm *mm = mm_small();
	uint64_t a;
	struct laf_stats s;

	ASSERT_TRUE(mm);
	ASSERT_OK(set_upstream(mm, LAF_THP_MADVISE, (1UL << 4) | (1UL << 2), LAF_THP_NEVER));
	a = map_fixed(mm, BASE, 1 * M);
	ASSERT_OK(laf_inject(mm, LAF_INJECT_ALLOC_FAIL, 4, 1, 0));
	ASSERT_EQ(fault(mm, a, 1).order, 2);
	s = stats(mm);
	ASSERT_EQ(s.anon_fault_fallback[4], 1);
	ASSERT_EQ(s.anon_fault_fallback_charge[4], 0);
	ASSERT_EQ(s.anon_fault_alloc[2], 1);
	/* both fail: order 0, both counted */
	ASSERT_OK(laf_inject(mm, LAF_INJECT_ALLOC_FAIL, 4, 1, 0));
	ASSERT_OK(laf_inject(mm, LAF_INJECT_ALLOC_FAIL, 2, 1, 0));
	ASSERT_EQ(fault(mm, a + 64 * K, 1).order, 0);
	s = stats(mm);
	ASSERT_EQ(s.anon_fault_fallback[4], 2);
	ASSERT_EQ(s.anon_fault_fallback[2], 1);
	ASSERT_EQ(laf_inject(mm, LAF_INJECT_ALLOC_FAIL, 10, 1, 0), LAF_EINVAL);
	return true;
}

/* Charge failure (injected and real memory.max): _charge + fallback counters. */
static bool test_charge_failure_fallback(void)
{
	laf_mm *mm = mm_small();
	laf_mm *lim = mm_new(LAF_PAGE_SHIFT_4K, LAF_ARCH_GENERIC, 64 * M, 40 * K);
	uint64_t a, b;
	struct laf_stats s;

	ASSERT_TRUE(mm && lim);
	ASSERT_OK(set_upstream(mm, LAF_THP_MADVISE, (1UL << 4) | (1UL << 2), LAF_THP_NEVER));
	ASSERT_OK(set_upstream(lim, LAF_THP_MADVISE, (1UL << 4) | (1UL << 2), LAF_THP_NEVER));
	a = map_fixed(mm, BASE, 1 * M);
	ASSERT_OK(laf_inject(mm, LAF_INJECT_CHARGE_FAIL, 4, 1, 0));
	ASSERT_EQ(fault(mm, a, 1).order, 2);
	s = stats(mm);
	ASSERT_EQ(s.anon_fault_fallback_charge[4], 1);
	ASSERT_EQ(s.anon_fault_fallback[4], 1);
	ASSERT_EQ(s.memcg_charged, 4);

	b = map_fixed(lim, BASE, 1 * M);
	ASSERT_EQ(fault(lim, b, 1).order, 2);            /* 64K > 40K: 16K */
	s = stats(lim);
	ASSERT_EQ(s.anon_fault_fallback_charge[4], 1);
	ASSERT_EQ(s.anon_fault_fallback[4], 1);
	ASSERT_EQ(s.memcg_max_events, 1);
	return true;
}

/*
 * memory.max exhausted: the 64K charge fails (counted), the order-0 charge
 * fails: VM_FAULT_OOM, nothing changes but the counters.
 */
static bool test_memcg_oom_state_intact(void)
{
	laf_mm *mm = mm_new(LAF_PAGE_SHIFT_4K, LAF_ARCH_GENERIC, 64 * M, 64 * K);
	uint64_t a;
	struct laf_stats before, s;
	struct laf_fault_result r;

	ASSERT_TRUE(mm);
	ASSERT_OK(set_upstream(mm, LAF_THP_MADVISE, 1UL << 4, LAF_THP_NEVER));
	a = map_fixed(mm, BASE, 1 * M);
	ASSERT_EQ(fault(mm, a, 1).order, 4);
	before = stats(mm);
	r = fault(mm, a + 64 * K, 1);
	ASSERT_EQ(r.access, LAF_ACCESS_OOM);
	ASSERT_TRUE(r.vm_fault & LAF_VM_FAULT_OOM);
	s = stats(mm);
	ASSERT_EQ(s.faults_oom, 1);
	ASSERT_EQ(s.min_flt, before.min_flt);
	ASSERT_EQ(s.mm_anonpages, 16);
	ASSERT_EQ(s.free_pages, before.free_pages);
	ASSERT_EQ(s.memcg_charged, 16);
	ASSERT_EQ(s.anon_fault_fallback_charge[4], 1);
	ASSERT_STREQ(pte_picture(mm, a + 64 * K, 4), "....");
	ASSERT_EQ(laf_set_memcg_limit(mm, 32 * K), LAF_ERANGE);  /* below usage */
	ASSERT_EQ(laf_set_memcg_limit(mm, 0), LAF_ERANGE);       /* memory.max = 0 too */
	ASSERT_OK(laf_set_memcg_limit(mm, LAF_MEMCG_UNLIMITED));
	ASSERT_EQ(fault(mm, a + 64 * K, 1).order, 4);
	return true;
}

/* LAF v3: charge after allocation in do_anonymous_page(); failure is OOM. */
static bool test_laf_v3_charge_failure_is_oom(void)
{
	laf_mm *mm = mm_new(LAF_PAGE_SHIFT_4K, LAF_ARCH_GENERIC, 64 * M, 16 * K);
	uint64_t a;
	struct laf_stats s;

	ASSERT_TRUE(mm);
	ASSERT_OK(set_kind(mm, LAF_POLICY_LAF_V3, LAF_THP_NEVER));
	a = map_fixed(mm, BASE, 1 * M);
	ASSERT_EQ(fault(mm, a, 1).access, LAF_ACCESS_OOM);
	s = stats(mm);
	ASSERT_EQ(s.memcg_charged, 0);
	ASSERT_EQ(s.anon_fault_fallback_charge[3], 0);
	ASSERT_OK(laf_set_memcg_limit(mm, 32 * K));
	ASSERT_EQ(fault(mm, a, 1).order, 3);
	return true;
}

/*
 * LAF v3 ladder {prefer, COSTLY or 0, 0}: generic prefer = max(-1, 3) = 3;
 * arm64 prefer = max(4, 3) = 4, then 3; order 2 is never in the ladder.
 */
static bool test_laf_v3_ladder(void)
{
	laf_mm *gen = mm_small();
	laf_mm *arm = mm_new(LAF_PAGE_SHIFT_4K, LAF_ARCH_ARM64, 64 * M, LAF_MEMCG_UNLIMITED);
	uint64_t a, b, c;

	ASSERT_TRUE(gen && arm);
	ASSERT_OK(set_kind(gen, LAF_POLICY_LAF_V3, LAF_THP_NEVER));
	ASSERT_OK(set_kind(arm, LAF_POLICY_LAF_V3, LAF_THP_NEVER));
	a = map_fixed(gen, BASE, 1 * M);
	ASSERT_EQ(fault(gen, a, 1).order, 3);
	ASSERT_OK(laf_inject(gen, LAF_INJECT_ALLOC_FAIL, 3, 1, 0));
	ASSERT_EQ(fault(gen, a + 64 * K, 1).order, 0);
	b = map_fixed(arm, BASE, 1 * M);
	ASSERT_EQ(fault(arm, b, 1).order, 4);
	ASSERT_OK(laf_inject(arm, LAF_INJECT_ALLOC_FAIL, 4, 1, 0));
	ASSERT_EQ(fault(arm, b + 64 * K, 1).order, 3);
	/* a 16K VMA: neither 64K nor 32K fits, and there is no order 2 */
	c = map_fixed(arm, BASE + 64 * M, 16 * K);
	ASSERT_EQ(fault(arm, c, 1).order, 0);
	return true;
}

/* mm.fragment(k): no free block above order k, every higher order fails. */
static bool test_fragmentation(void)
{
	laf_mm *mm = mm_small();
	uint64_t a;
	struct laf_stats s;
	int o;

	ASSERT_TRUE(mm);
	ASSERT_OK(set_upstream(mm, LAF_THP_ALWAYS, 0x1fcUL, LAF_THP_ALWAYS)); /* orders 2..8 */
	a = map_fixed(mm, BASE, 2 * M);
	ASSERT_OK(laf_phys_fragment(mm, 3));
	ASSERT_EQ(fault(mm, a, 1).order, 3);
	s = stats(mm);
	ASSERT_EQ(s.thp_fault_fallback, 1);
	for (o = 4; o <= 9; o++)
		ASSERT_EQ(s.anon_fault_fallback[o], 1);
	ASSERT_EQ(s.anon_fault_fallback[3], 0);
	ASSERT_TRUE(s.pinned_pages > 0);
	ASSERT_OK(laf_phys_unfragment(mm));
	s = stats(mm);
	ASSERT_EQ(s.pinned_pages, 0);
	ASSERT_EQ(laf_phys_fragment(mm, -1), LAF_EINVAL);
	return true;
}

/*
 * PMD path (kernel-findings #5a): global madvise + MADV_HUGEPAGE, write:
 *   one PMD-mapped THP, refcount 1, mapcount 1, deposited table.
 *   PTE 0..7: HHHHHHHH
 */
static bool test_pmd_thp(void)
{
	laf_mm *mm = mm_small();
	struct laf_folio_info fi;
	uint64_t a;
	struct laf_fault_result r;
	struct laf_stats s;

	ASSERT_TRUE(mm);
	a = map_fixed(mm, BASE, 2 * M);
	ASSERT_OK(laf_madvise(mm, a, 2 * M, LAF_MADV_HUGEPAGE));
	r = fault(mm, a + 4 * K, 1);
	ASSERT_EQ(r.kind, LAF_FK_PMD);
	ASSERT_EQ(r.order, 9);
	ASSERT_STREQ(pte_picture(mm, a, 8), "HHHHHHHH");
	ASSERT_OK(laf_lookup(mm, a + 1 * M, NULL, &fi));
	ASSERT_EQ(fi.refcount, 1);
	ASSERT_EQ(fi.mapcount, 1);
	ASSERT_TRUE(fi.flags & LAF_FOLIO_PMD_MAPPED);
	s = stats(mm);
	ASSERT_EQ(s.thp_fault_alloc, 1);
	ASSERT_EQ(s.anon_fault_alloc[9], 1);
	ASSERT_EQ(s.mm_anonpages, 512);
	ASSERT_EQ(s.nr_ptes, 1);
	/* without MADV_HUGEPAGE (global madvise): order 0 */
	a = map_fixed(mm, BASE + 8 * M, 2 * M);
	ASSERT_EQ(fault(mm, a, 1).order, 0);
	return true;
}

/*
 * Huge zero PMD on a read, then a write: the zero PMD becomes a THP
 * (do_huge_zero_wp_pmd), no split.
 *   PTE 0..3: ZZZZ  ->  HHHH
 */
static bool test_huge_zero_pmd_then_thp(void)
{
	laf_mm *mm = mm_small();
	uint64_t a;
	struct laf_fault_result r;
	struct laf_stats s;

	ASSERT_TRUE(mm);
	a = map_fixed(mm, BASE, 2 * M);
	ASSERT_OK(laf_madvise(mm, a, 2 * M, LAF_MADV_HUGEPAGE));
	r = fault(mm, a + 4 * K, 0);
	ASSERT_EQ(r.kind, LAF_FK_PMD_ZERO);
	ASSERT_STREQ(pte_picture(mm, a, 4), "ZZZZ");
	s = stats(mm);
	ASSERT_EQ(s.thp_zero_page_alloc, 1);
	ASSERT_EQ(s.mm_anonpages, 0);
	ASSERT_EQ(s.nr_ptes, 1);
	r = fault(mm, a + 4 * K, 1);
	ASSERT_EQ(r.kind, LAF_FK_PMD_WP);
	ASSERT_EQ(r.order, 9);
	ASSERT_STREQ(pte_picture(mm, a, 4), "HHHH");
	s = stats(mm);
	ASSERT_EQ(s.thp_fault_alloc, 1);
	ASSERT_EQ(s.thp_split_pmd, 0);
	ASSERT_EQ(s.mm_anonpages, 512);
	return true;
}

/*
 * Write to a huge zero PMD when the THP cannot be allocated:
 * thp_split_pmd, 512 zero PTEs, an order-0 COW at the address.
 *   PTE 0..7: zzpzzzzz
 */
static bool test_huge_zero_pmd_write_fallback(void)
{
	laf_mm *mm = mm_small();
	uint64_t a;
	struct laf_fault_result r;
	struct laf_stats s;

	ASSERT_TRUE(mm);
	a = map_fixed(mm, BASE, 2 * M);
	ASSERT_OK(laf_madvise(mm, a, 2 * M, LAF_MADV_HUGEPAGE));
	fault(mm, a, 0);
	ASSERT_OK(laf_inject(mm, LAF_INJECT_ALLOC_FAIL, 9, 1, 0));
	r = fault(mm, a + 8 * K, 1);
	ASSERT_EQ(r.kind, LAF_FK_WP);
	ASSERT_EQ(r.order, 0);
	ASSERT_EQ(r.nr_faults, 1);
	ASSERT_STREQ(pte_picture(mm, a, 8), "zzpzzzzz");
	s = stats(mm);
	ASSERT_EQ(s.thp_split_pmd, 1);
	ASSERT_EQ(s.thp_fault_fallback, 1);
	ASSERT_EQ(s.anon_fault_fallback[9], 1);
	ASSERT_EQ(s.mm_anonpages, 1);
	ASSERT_EQ(s.nr_ptes, 1);
	return true;
}

/*
 * PMD allocation failure: thp_fault_fallback + anon_fault_fallback[PMD],
 * then the PTE path gives a 64K folio.  A VMA that does not cover the
 * aligned 2M falls back without any counter.
 */
static bool test_pmd_fallback_to_mthp(void)
{
	laf_mm *mm = mm_small();
	uint64_t a, b;
	struct laf_stats s;

	ASSERT_TRUE(mm);
	ASSERT_OK(set_upstream(mm, LAF_THP_ALWAYS, 1UL << 4, LAF_THP_INHERIT));
	a = map_fixed(mm, BASE, 2 * M);
	ASSERT_OK(laf_inject(mm, LAF_INJECT_ALLOC_FAIL, 9, 1, 0));
	ASSERT_EQ(fault(mm, a, 1).order, 4);
	s = stats(mm);
	ASSERT_EQ(s.thp_fault_fallback, 1);
	ASSERT_EQ(s.anon_fault_fallback[9], 1);
	ASSERT_EQ(s.anon_fault_alloc[4], 1);
	b = map_fixed(mm, BASE + 16 * M, 1 * M);
	ASSERT_EQ(fault(mm, b, 1).order, 4);
	s = stats(mm);
	ASSERT_EQ(s.thp_fault_fallback, 1);
	ASSERT_EQ(s.anon_fault_alloc[4], 2);
	return true;
}

/*
 * A PTE table blocks the PMD path; MADV_DONTNEED of the whole 2M frees it
 * (pt_reclaim, kernel-findings check 9) and the PMD path works again; a
 * partial DONTNEED keeps the table.
 */
static bool test_dontneed_reclaims_pte_table(void)
{
	laf_mm *mm = mm_small();
	uint64_t a;
	struct laf_stats s;

	ASSERT_TRUE(mm);
	a = map_fixed(mm, BASE, 2 * M);
	ASSERT_OK(laf_madvise(mm, a, 2 * M, LAF_MADV_NOHUGEPAGE));
	ASSERT_EQ(touch(mm, a, 2 * M, 1), 512);
	ASSERT_OK(laf_madvise(mm, a, 2 * M, LAF_MADV_HUGEPAGE));
	ASSERT_OK(laf_madvise(mm, a, 1 * M, LAF_MADV_DONTNEED));
	ASSERT_OK(laf_madvise(mm, a + 1 * M, 1 * M, LAF_MADV_DONTNEED));
	s = stats(mm);
	ASSERT_EQ(s.mm_anonpages, 0);
	ASSERT_EQ(s.nr_ptes, 1);                        /* two calls: kept */
	ASSERT_EQ(fault(mm, a, 1).order, 0);
	ASSERT_OK(laf_madvise(mm, a, 2 * M, LAF_MADV_DONTNEED));
	s = stats(mm);
	ASSERT_EQ(s.nr_ptes, 0);                        /* one whole-PMD call: freed */
	ASSERT_EQ(fault(mm, a, 1).order, 9);
	return true;
}

/*
 * Partial unmap of a 64K folio (kernel-findings #8) and the shrinker:
 *   PTE 0..31: FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF
 *   DONTNEED [0, 32K):
 *   PTE 0..31: ........FFFFFFFFFFFFFFFFFFFFFFFF  split_deferred, partially mapped
 *   shrink:
 *   PTE 0..31: ........ppppppppFFFFFFFFFFFFFFFF  split, 8 pages freed
 */
static bool test_partial_unmap_deferred_split(void)
{
	laf_mm *mm = mm_small();
	struct laf_folio_info fi;
	uint64_t a, nr;
	struct laf_stats before, s;

	ASSERT_TRUE(mm);
	ASSERT_OK(set_upstream(mm, LAF_THP_MADVISE, 1UL << 4, LAF_THP_NEVER));
	a = map_fixed(mm, BASE, 128 * K);
	ASSERT_EQ(touch(mm, a, 128 * K, 1), 2);
	ASSERT_STREQ(pte_picture(mm, a, 32), "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF");
	before = stats(mm);
	ASSERT_OK(laf_madvise(mm, a, 32 * K, LAF_MADV_DONTNEED));
	ASSERT_STREQ(pte_picture(mm, a, 32), "........FFFFFFFFFFFFFFFFFFFFFFFF");
	s = stats(mm);
	ASSERT_EQ(s.split_deferred[4], 1);
	ASSERT_EQ(s.nr_anon_partially_mapped[4], 1);
	ASSERT_EQ(s.thp_deferred_split_page, 0);        /* PMD-sized folios only */
	ASSERT_EQ(s.free_pages, before.free_pages);
	ASSERT_OK(laf_lookup(mm, a + 32 * K, NULL, &fi));
	ASSERT_EQ(fi.refcount, 8);
	ASSERT_EQ(fi.mapcount, 8);
	ASSERT_TRUE(fi.flags & LAF_FOLIO_PARTIALLY_MAPPED);
	ASSERT_OK(laf_shrink_deferred_split(mm, &nr));
	ASSERT_EQ(nr, 1);
	ASSERT_STREQ(pte_picture(mm, a, 32), "........ppppppppFFFFFFFFFFFFFFFF");
	s = stats(mm);
	ASSERT_EQ(s.split[4], 1);
	ASSERT_EQ(s.free_pages, before.free_pages + 8);
	ASSERT_EQ(s.nr_anon[4], 1);
	ASSERT_EQ(s.nr_anon_partially_mapped[4], 0);
	ASSERT_EQ(s.mm_anonpages, 24);
	return true;
}

/* munmap of everything: every frame but the zero page is free again. */
static bool test_munmap_frees_everything(void)
{
	laf_mm *mm = mm_small();
	uint64_t a, b;
	struct laf_stats s;

	ASSERT_TRUE(mm);
	ASSERT_OK(set_upstream(mm, LAF_THP_ALWAYS, (1UL << 2) | (1UL << 4), LAF_THP_INHERIT));
	a = map_fixed(mm, BASE, 4 * M);
	b = map_fixed(mm, BASE + 16 * M + 8 * K, 1 * M);
	ASSERT_TRUE(touch(mm, a, 4 * M, 1) > 0);
	ASSERT_TRUE(touch(mm, b, 1 * M, 1) > 0);
	ASSERT_OK(laf_madvise(mm, b, 100 * K, LAF_MADV_DONTNEED));
	ASSERT_OK(laf_munmap(mm, a + 1 * M, 2 * M));     /* splits a PMD THP */
	ASSERT_OK(laf_munmap(mm, BASE, 32 * M));
	s = stats(mm);
	ASSERT_EQ(s.mm_anonpages, 0);
	ASSERT_EQ(s.nr_ptes, 0);
	ASSERT_EQ(s.nr_vmas, 0);
	ASSERT_EQ(s.memcg_charged, 0);
	ASSERT_EQ(s.lru_pages, 0);
	ASSERT_EQ(s.free_pages, s.ram_pages - 1);
	ASSERT_EQ(s.nr_anon[4], 0);
	ASSERT_EQ(s.nr_anon[9], 0);
	return true;
}

/*
 * userfaultfd MISSING: the write goes to userspace, nothing is mapped and
 * it is not accounted (VM_FAULT_RETRY); UFFDIO_COPY / ZEROPAGE fill.
 *   PTE 0..7: ........  ->  pp..zz..
 */
static bool test_uffd_missing(void)
{
	laf_mm *mm = mm_small();
	uint64_t a;
	struct laf_fault_result r;
	struct laf_stats s;

	ASSERT_TRUE(mm);
	ASSERT_OK(set_upstream(mm, LAF_THP_MADVISE, 1UL << 4, LAF_THP_NEVER));
	a = map_fixed(mm, BASE, 1 * M);
	ASSERT_OK(laf_uffd_register(mm, a, 1 * M, LAF_UFFDIO_REGISTER_MODE_MISSING));
	r = fault(mm, a, 1);
	ASSERT_EQ(r.access, LAF_ACCESS_USERFAULT);
	ASSERT_STREQ(pte_picture(mm, a, 8), "........");
	s = stats(mm);
	ASSERT_EQ(s.pgfault, 0);
	ASSERT_EQ(s.faults_userfault, 1);
	ASSERT_EQ(s.mm_anonpages, 0);
	ASSERT_OK(laf_uffd_copy(mm, a, 8 * K, 0));
	ASSERT_OK(laf_uffd_zeropage(mm, a + 16 * K, 8 * K));
	ASSERT_STREQ(pte_picture(mm, a, 8), "pp..zz..");
	ASSERT_EQ(laf_uffd_copy(mm, a, 4 * K, 0), LAF_EEXIST);
	ASSERT_EQ(fault(mm, a, 1).access, LAF_ACCESS_HIT);
	ASSERT_EQ(fault(mm, a + 8 * K, 0).access, LAF_ACCESS_USERFAULT);
	ASSERT_EQ(laf_uffd_register(mm, a, 1 * M, LAF_UFFDIO_REGISTER_MODE_MINOR), LAF_EINVAL);
	return true;
}

/* uffd WP: armed → order 0; a write to a protected PTE → userspace. */
static bool test_uffd_wp(void)
{
	laf_mm *mm = mm_small();
	uint64_t a, pte;
	struct laf_fault_result r;

	ASSERT_TRUE(mm);
	ASSERT_OK(set_upstream(mm, LAF_THP_MADVISE, 1UL << 4, LAF_THP_NEVER));
	a = map_fixed(mm, BASE, 1 * M);
	ASSERT_OK(laf_uffd_register(mm, a, 1 * M, LAF_UFFDIO_REGISTER_MODE_WP));
	ASSERT_EQ(fault(mm, a, 1).order, 0);
	ASSERT_OK(laf_uffd_writeprotect(mm, a, 4 * K, 1));
	ASSERT_OK(laf_lookup(mm, a, &pte, NULL));
	ASSERT_TRUE(pte & LAF_PTE_UFFD_WP);
	ASSERT_FALSE(pte & LAF_PTE_WRITE);
	r = fault(mm, a, 1);
	ASSERT_EQ(r.access, LAF_ACCESS_USERFAULT);
	ASSERT_EQ(fault(mm, a, 0).access, LAF_ACCESS_HIT);
	ASSERT_OK(laf_uffd_writeprotect(mm, a, 4 * K, 0));
	ASSERT_EQ(fault(mm, a, 1).access, LAF_ACCESS_HIT);
	ASSERT_OK(laf_uffd_unregister(mm, a, 1 * M));
	ASSERT_EQ(fault(mm, a + 64 * K, 1).order, 4);
	return true;
}

/* prctl(PR_SET_THP_DISABLE): GET returns 0, 1, 3; bad arguments -EINVAL. */
static bool test_prctl(void)
{
	laf_mm *mm = mm_small();
	int64_t v = -1;
	uint64_t a, b;

	ASSERT_TRUE(mm);
	ASSERT_OK(set_upstream(mm, LAF_THP_MADVISE, 1UL << 4, LAF_THP_INHERIT));
	ASSERT_OK(laf_prctl(mm, LAF_PR_GET_THP_DISABLE, 0, 0, &v));
	ASSERT_EQ(v, 0);
	ASSERT_OK(laf_prctl(mm, LAF_PR_SET_THP_DISABLE, 1, 0, &v));
	ASSERT_OK(laf_prctl(mm, LAF_PR_GET_THP_DISABLE, 0, 0, &v));
	ASSERT_EQ(v, 1);
	a = map_fixed(mm, BASE, 2 * M);
	b = map_fixed(mm, BASE + 8 * M, 2 * M);
	ASSERT_OK(laf_madvise(mm, b, 2 * M, LAF_MADV_HUGEPAGE));
	ASSERT_EQ(fault(mm, a, 1).order, 0);
	ASSERT_EQ(fault(mm, b, 1).order, 0);
	ASSERT_OK(laf_prctl(mm, LAF_PR_SET_THP_DISABLE, 1, LAF_PR_THP_DISABLE_EXCEPT_ADVISED, &v));
	ASSERT_OK(laf_prctl(mm, LAF_PR_GET_THP_DISABLE, 0, 0, &v));
	ASSERT_EQ(v, 3);
	ASSERT_EQ(fault(mm, a + 1 * M, 1).order, 0);
	ASSERT_EQ(fault(mm, b + 1 * M, 1).order, 4);     /* PTE table exists: 64K */
	ASSERT_EQ(laf_prctl(mm, LAF_PR_SET_THP_DISABLE, 0, LAF_PR_THP_DISABLE_EXCEPT_ADVISED, &v),
		  LAF_EINVAL);
	ASSERT_EQ(laf_prctl(mm, LAF_PR_SET_THP_DISABLE, 1, 1, &v), LAF_EINVAL);
	ASSERT_OK(laf_prctl(mm, LAF_PR_GET_THP_DISABLE, 0, 0, &v));
	ASSERT_EQ(v, 3);
	ASSERT_OK(laf_prctl(mm, LAF_PR_SET_THP_DISABLE, 0, 0, &v));
	ASSERT_OK(laf_prctl(mm, LAF_PR_GET_THP_DISABLE, 0, 0, &v));
	ASSERT_EQ(v, 0);
	return true;
}

/* MADV_HUGEPAGE/NOHUGEPAGE split a VMA; equal flags merge it back. */
static bool test_madvise_split_merge(void)
{
	laf_mm *mm = mm_small();
	struct laf_vma_info v[4];
	size_t nr;
	uint64_t a;

	ASSERT_TRUE(mm);
	a = map_fixed(mm, BASE, 1 * M);
	ASSERT_EQ(fault(mm, a, 1).order, 0);            /* anon_vma for the whole VMA */
	ASSERT_OK(laf_madvise(mm, a + 64 * K, 64 * K, LAF_MADV_NOHUGEPAGE));
	ASSERT_OK(laf_get_vmas(mm, v, 4, &nr));
	ASSERT_EQ(nr, 3);
	ASSERT_EQ(v[1].start, a + 64 * K);
	ASSERT_EQ(v[1].end, a + 128 * K);
	ASSERT_TRUE(v[1].vm_flags & LAF_VM_NOHUGEPAGE);
	ASSERT_EQ(v[0].anon_vma, v[2].anon_vma);
	ASSERT_OK(laf_madvise(mm, a, 1 * M, LAF_MADV_HUGEPAGE));
	ASSERT_OK(laf_get_vmas(mm, v, 4, &nr));
	ASSERT_EQ(nr, 1);
	ASSERT_TRUE(v[0].vm_flags & LAF_VM_HUGEPAGE);
	ASSERT_FALSE(v[0].vm_flags & LAF_VM_NOHUGEPAGE);
	/* a hole in the range: applied to the mapped part, then -ENOMEM */
	ASSERT_EQ(laf_madvise(mm, a, 2 * M, LAF_MADV_NOHUGEPAGE), LAF_ENOMEM);
	ASSERT_OK(laf_get_vmas(mm, v, 4, &nr));
	ASSERT_TRUE(v[0].vm_flags & LAF_VM_NOHUGEPAGE);
	return true;
}

/*
 * Placement: a PMD-multiple length without a hint is PMD-aligned; other
 * lengths are placed top-down right below the previous mapping; adjacent
 * anonymous mappings merge (kernel-findings #6).
 */
static bool test_mmap_placement(void)
{
	laf_mm *mm = mm_small();
	struct laf_geometry g;
	uint64_t x, y, z;
	size_t nr;

	ASSERT_TRUE(mm);
	ASSERT_OK(laf_get_geometry(mm, &g));
	ASSERT_OK(laf_mmap(mm, 0, 1 * M, LAF_PROT_READ | LAF_PROT_WRITE, 0, &x));
	ASSERT_OK(laf_mmap(mm, 0, 1 * M, LAF_PROT_READ | LAF_PROT_WRITE, 0, &y));
	ASSERT_EQ(x + 1 * M, g.mmap_base);
	ASSERT_EQ(y, x - 1 * M);
	ASSERT_OK(laf_get_vmas(mm, NULL, 0, &nr));
	ASSERT_EQ(nr, 1);
	ASSERT_OK(laf_mmap(mm, 0, 4 * M, LAF_PROT_READ | LAF_PROT_WRITE, 0, &z));
	ASSERT_EQ(z % (2 * M), 0);
	ASSERT_EQ(laf_mmap(mm, y, 4 * K, LAF_PROT_READ, LAF_MAP_FIXED, &z), LAF_EEXIST);
	return true;
}

/*
 * Races: another thread maps part of our range between the allocation and
 * the PTL recheck → our folio is freed, nothing counted, re-fault.
 * -EAGAIN from pte_offset_map() → re-fault.
 */
static bool test_race_and_eagain(void)
{
	laf_mm *mm = mm_small();
	uint64_t a, free0;
	struct laf_fault_result r;
	struct laf_stats s;

	ASSERT_TRUE(mm);
	ASSERT_OK(set_upstream(mm, LAF_THP_MADVISE, 1UL << 4, LAF_THP_NEVER));
	a = map_fixed(mm, BASE, 1 * M);
	free0 = stats(mm).free_pages;
	ASSERT_OK(laf_inject(mm, LAF_INJECT_RACE, 0, 1, a + 4 * K));
	r = fault(mm, a, 1);
	ASSERT_EQ(r.access, LAF_ACCESS_FAULT);
	ASSERT_EQ(r.nr_faults, 1);                      /* the racer's folio covers a */
	s = stats(mm);
	ASSERT_EQ(s.pgfault, 2);
	ASSERT_EQ(s.anon_fault_alloc[4], 1);
	ASSERT_EQ(s.free_pages, free0 - 1 - 16);        /* our folio went back */
	ASSERT_OK(laf_inject(mm, LAF_INJECT_PTE_MAP_FAIL, 0, 2, 0));
	r = fault(mm, a + 64 * K, 1);
	ASSERT_EQ(r.nr_faults, 3);
	ASSERT_EQ(r.order, 4);
	s = stats(mm);
	ASSERT_EQ(s.faults_retried, 2);
	ASSERT_EQ(s.pgfault, 5);
	return true;
}

/*
 * arm64 contpte: a 64K folio is one PTE_CONT block; a 16K folio is not;
 * a partial DONTNEED unfolds only the block it cuts.
 *   PTE 0..31: CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC
 *   DONTNEED [8K, 12K):
 *   PTE 0..31: FF.FFFFFFFFFFFFFCCCCCCCCCCCCCCCC
 */
static bool test_contpte(void)
{
	laf_mm *mm = mm_new(LAF_PAGE_SHIFT_4K, LAF_ARCH_ARM64, 64 * M, LAF_MEMCG_UNLIMITED);
	laf_mm *m16 = mm_new(LAF_PAGE_SHIFT_4K, LAF_ARCH_ARM64, 64 * M, LAF_MEMCG_UNLIMITED);
	uint64_t a, b;
	struct laf_stats s;

	ASSERT_TRUE(mm && m16);
	ASSERT_OK(set_upstream(mm, LAF_THP_MADVISE, 1UL << 4, LAF_THP_NEVER));
	ASSERT_OK(set_upstream(m16, LAF_THP_MADVISE, 1UL << 2, LAF_THP_NEVER));
	a = map_fixed(mm, BASE, 1 * M);
	ASSERT_EQ(touch(mm, a, 128 * K, 1), 2);
	ASSERT_STREQ(pte_picture(mm, a, 32), "CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC");
	ASSERT_EQ(stats(mm).contpte_blocks, 2);
	ASSERT_OK(laf_madvise(mm, a + 8 * K, 4 * K, LAF_MADV_DONTNEED));
	ASSERT_STREQ(pte_picture(mm, a, 32), "FF.FFFFFFFFFFFFFCCCCCCCCCCCCCCCC");
	s = stats(mm);
	ASSERT_EQ(s.contpte_unfolds, 1);
	b = map_fixed(m16, BASE, 1 * M);
	ASSERT_EQ(touch(m16, b, 64 * K, 1), 4);
	ASSERT_STREQ(pte_picture(m16, b, 16), "FFFFFFFFFFFFFFFF");
	ASSERT_EQ(stats(m16).contpte_blocks, 0);
	return true;
}

/*
 * anon_beside_full=1 (kernel-findings §1.3 "first seen"): 64K always,
 * a 1M fill: the first block has no full neighbour (declined, 16 x 4K),
 * then every block's left neighbour is full.  31 faults.
 *   PTE 0..31: ppppppppppppppppFFFFFFFFFFFFFFFF
 */
static bool test_anon_beside_full(void)
{
	laf_mm *mm = mm_small();
	struct laf_policy pol;
	uint64_t a;
	struct laf_stats s;

	ASSERT_TRUE(mm);
	ASSERT_OK(set_upstream(mm, LAF_THP_MADVISE, 1UL << 4, LAF_THP_NEVER));
	ASSERT_OK(laf_get_policy(mm, &pol));
	pol.anon_beside_full = 1;
	ASSERT_OK(laf_set_policy(mm, &pol));
	a = map_fixed(mm, BASE, 1 * M);
	ASSERT_EQ(touch(mm, a, 1 * M, 1), 31);
	ASSERT_STREQ(pte_picture(mm, a, 32), "ppppppppppppppppFFFFFFFFFFFFFFFF");
	s = stats(mm);
	ASSERT_EQ(s.anon_fault_declined[4], 1);
	ASSERT_EQ(s.anon_fault_alloc[4], 15);
	ASSERT_EQ(s.anon_fault_fallback[4], 0);
	return true;
}

/* Orders reported by laf_read_ptes: LAF_ORDER_NONE, LAF_ORDER_ZERO, LAF_ORDER_HUGE_ZERO. */
static bool test_read_ptes_codes(void)
{
	laf_mm *mm = mm_small();
	int8_t o[4];
	uint64_t a, b;

	ASSERT_TRUE(mm);
	ASSERT_OK(set_upstream(mm, LAF_THP_ALWAYS, 0, LAF_THP_INHERIT));
	a = map_fixed(mm, BASE, 2 * M);
	b = map_fixed(mm, BASE + 8 * M + 64 * K, 64 * K);
	fault(mm, a, 0);
	fault(mm, b + 4 * K, 0);
	fault(mm, b + 8 * K, 1);
	ASSERT_OK(laf_read_ptes(mm, a, 1, NULL, o));
	ASSERT_EQ(o[0], LAF_ORDER_HUGE_ZERO);
	ASSERT_OK(laf_read_ptes(mm, b, 4, NULL, o));
	ASSERT_EQ(o[0], LAF_ORDER_NONE);
	ASSERT_EQ(o[1], LAF_ORDER_ZERO);
	ASSERT_EQ(o[2], 0);
	ASSERT_EQ(o[3], LAF_ORDER_NONE);
	ASSERT_EQ(laf_read_ptes(mm, a + 1, 1, NULL, o), LAF_EINVAL);
	return true;
}

/* Counters add up after write-only fills; reset keeps the gauges. */
static bool test_counters_add_up(void)
{
	laf_mm *mm = mm_small();
	uint64_t a, pages = 0;
	struct laf_stats s;
	int o;

	ASSERT_TRUE(mm);
	ASSERT_OK(set_upstream(mm, LAF_THP_ALWAYS, 0x1fcUL, LAF_THP_INHERIT));
	a = map_fixed(mm, BASE + 24 * K, 4 * M);
	ASSERT_TRUE(touch(mm, a, 4 * M, 1) > 0);
	s = stats(mm);
	for (o = 0; o < LAF_NR_ORDERS; o++)
		pages += s.folios_mapped[o] << o;
	ASSERT_EQ(pages, 1024);
	ASSERT_EQ(s.mm_anonpages, 1024);
	ASSERT_EQ(s.pgfault, s.faults);
	ASSERT_EQ(s.memcg_charged, s.lru_pages);
	ASSERT_EQ(s.free_pages + s.nr_ptes + s.memcg_charged + 1, s.ram_pages);
	ASSERT_OK(laf_reset_counters(mm));
	s = stats(mm);
	ASSERT_EQ(s.pgfault, 0);
	ASSERT_EQ(s.folios_mapped[0], 0);
	ASSERT_EQ(s.mm_anonpages, 1024);
	ASSERT_TRUE(s.nr_anon[9] + s.nr_anon[8] > 0);
	return true;
}

/* 16K and 64K base pages: PMD THPs of 32M and 512M, mTHP of order 2. */
static bool test_large_base_pages(void)
{
	laf_mm *m16 = mm_new(LAF_PAGE_SHIFT_16K, LAF_ARCH_GENERIC, 256 * M, LAF_MEMCG_UNLIMITED);
	laf_mm *m64 = mm_new(LAF_PAGE_SHIFT_64K, LAF_ARCH_GENERIC, 1024 * M, LAF_MEMCG_UNLIMITED);
	uint64_t a, b;
	struct laf_stats s;

	ASSERT_TRUE(m16 && m64);
	ASSERT_OK(set_upstream(m16, LAF_THP_ALWAYS, 1UL << 2, LAF_THP_INHERIT));
	ASSERT_OK(set_upstream(m64, LAF_THP_ALWAYS, 1UL << 2, LAF_THP_INHERIT));
	a = map_fixed(m16, BASE, 64 * M);
	ASSERT_EQ(fault(m16, a, 1).order, 11);
	ASSERT_EQ(fault(m16, a + 32 * M + 100 * K, 0).kind, LAF_FK_PMD_ZERO);
	b = map_fixed(m64, BASE, 2 * M);                /* far below the 512M PMD */
	ASSERT_EQ(fault(m64, b + 300 * K, 1).order, 2); /* 256K */
	s = stats(m64);
	ASSERT_EQ(s.anon_fault_alloc[2], 1);
	ASSERT_EQ(s.mm_anonpages, 4);
	ASSERT_EQ(stats(m16).mm_anonpages, 2048);
	return true;
}

/* Accesses outside any VMA or against its protection are SIGSEGV. */
static bool test_sigsegv(void)
{
	laf_mm *mm = mm_small();
	uint64_t a;
	struct laf_stats s;

	ASSERT_TRUE(mm);
	ASSERT_OK(laf_mmap(mm, BASE, 64 * K, LAF_PROT_READ, LAF_MAP_FIXED, &a));
	ASSERT_EQ(fault(mm, a, 1).access, LAF_ACCESS_SIGSEGV);
	ASSERT_EQ(fault(mm, a + 64 * K, 0).access, LAF_ACCESS_SIGSEGV);
	ASSERT_EQ(fault(mm, a, 0).access, LAF_ACCESS_FAULT);
	s = stats(mm);
	ASSERT_EQ(s.faults_sigsegv, 2);
	ASSERT_EQ(s.pgfault, 1);
	ASSERT_EQ(s.faults, 3);
	return true;
}

/* -------------------------------------------- arguments at the boundaries */

static size_t nr_vmas(laf_mm *mm)
{
	size_t nr = 0;

	if (laf_get_vmas(mm, NULL, 0, &nr))
		return (size_t)-1;
	return nr;
}

/*
 * munmap(): mm/vma.c do_vmi_munmap() rejects start > TASK_SIZE and
 * len > TASK_SIZE - start with -EINVAL before PAGE_ALIGN(len) is taken, so
 * a length that wraps when page-aligned never reaches the VMA tree (it used
 * to leave an unmerged split behind: "should have merged").
 */
static bool test_munmap_len_wraps(void)
{
	laf_mm *mm = mm_small();
	struct laf_geometry g;
	uint64_t a;

	ASSERT_TRUE(mm);
	ASSERT_OK(laf_get_geometry(mm, &g));
	a = map_fixed(mm, BASE, 64 * K);
	ASSERT_EQ(laf_munmap(mm, a + 4 * K, UINT64_MAX), LAF_EINVAL);
	ASSERT_EQ(laf_munmap(mm, a + 4 * K, UINT64_MAX - 4 * K + 2), LAF_EINVAL);
	ASSERT_EQ(laf_munmap(mm, a, g.task_size - a + 1), LAF_EINVAL);
	ASSERT_EQ(laf_munmap(mm, g.task_size, 4 * K), LAF_EINVAL);
	ASSERT_EQ(laf_munmap(mm, UINT64_MAX & ~(4 * K - 1), 4 * K), LAF_EINVAL);
	ASSERT_EQ(laf_munmap(mm, a, 0), LAF_EINVAL);
	ASSERT_EQ(nr_vmas(mm), 1);
	ASSERT_EQ(touch(mm, a, 64 * K, 1), 16);
	/* up to TASK_SIZE exactly is valid: everything above a + 4K goes */
	ASSERT_OK(laf_munmap(mm, a + 4 * K, g.task_size - a - 4 * K));
	ASSERT_EQ(nr_vmas(mm), 1);
	ASSERT_EQ(stats(mm).mm_anonpages, 1);
	return true;
}

/*
 * touch_range(): the offset never wraps; the batch stops at the last
 * offset below @len (2^63 + 2^63 used to wrap to 0 and loop forever).
 */
static bool test_touch_range_stride_wraps(void)
{
	laf_mm *mm = mm_small();
	struct laf_touch_summary s;
	uint64_t a;

	ASSERT_TRUE(mm);
	ASSERT_OK(laf_touch_range(mm, 0, UINT64_MAX, 1ULL << 63, 0, &s));
	ASSERT_EQ(s.accesses, 2);		/* 0 and 2^63, both outside every VMA */
	ASSERT_EQ(s.sigsegv, 2);
	ASSERT_OK(laf_touch_range(mm, 0, UINT64_MAX, UINT64_MAX, 0, &s));
	ASSERT_EQ(s.accesses, 1);
	ASSERT_OK(laf_touch_range(mm, 1ULL << 62, (1ULL << 63) + 1, 1ULL << 62, 0, &s));
	ASSERT_EQ(s.accesses, 3);		/* 2^62, 2^63, 3 * 2^62 */
	a = map_fixed(mm, BASE, 64 * K);
	ASSERT_OK(laf_touch_range(mm, a, 64 * K, 48 * K, 1, &s));
	ASSERT_EQ(s.accesses, 2);
	ASSERT_EQ(s.faulted, 2);
	ASSERT_EQ(laf_touch_range(mm, 8 * K, UINT64_MAX, 4 * K, 0, &s), LAF_EINVAL);
	ASSERT_EQ(laf_touch_range(mm, a, 4 * K, 0, 0, &s), LAF_EINVAL);
	return true;
}

/*
 * madvise(): mm/madvise.c is_valid_madvise(): PAGE_ALIGN(len) rounding a
 * non-zero length to 0, or start + len wrapping, is -EINVAL; a range that
 * runs past TASK_SIZE without wrapping is a hole (-ENOMEM, after the mapped
 * part was advised, madvise_walk_vmas()).
 */
static bool test_madvise_len_wraps(void)
{
	laf_mm *mm = mm_small();
	struct laf_vma_info vi;
	size_t nr;
	uint64_t a;

	ASSERT_TRUE(mm);
	a = map_fixed(mm, BASE, 64 * K);
	ASSERT_EQ(laf_madvise(mm, 0, UINT64_MAX, LAF_MADV_HUGEPAGE), LAF_EINVAL);
	ASSERT_EQ(laf_madvise(mm, 0, UINT64_MAX, LAF_MADV_DONTNEED), LAF_EINVAL);
	ASSERT_EQ(laf_madvise(mm, a, 0 - a, LAF_MADV_HUGEPAGE), LAF_EINVAL);
	ASSERT_EQ(laf_madvise(mm, a, 0 - a - 4 * K + 1, LAF_MADV_HUGEPAGE), LAF_EINVAL);
	ASSERT_EQ(laf_madvise(mm, a, 0, LAF_MADV_HUGEPAGE), LAF_OK);
	ASSERT_OK(laf_get_vmas(mm, &vi, 1, &nr));
	ASSERT_EQ(vi.vm_flags & LAF_VM_HUGEPAGE, 0);
	ASSERT_EQ(laf_madvise(mm, a, 0 - a - 4 * K, LAF_MADV_HUGEPAGE), LAF_ENOMEM);
	ASSERT_OK(laf_get_vmas(mm, &vi, 1, &nr));
	ASSERT_EQ(nr, 1);
	ASSERT_EQ(vi.vm_flags & LAF_VM_HUGEPAGE, LAF_VM_HUGEPAGE);
	return true;
}

/*
 * mmap(): mm/mmap.c do_mmap(): PAGE_ALIGN(len) == 0 is -ENOMEM;
 * __get_unmapped_area(): len > TASK_SIZE and, for MAP_FIXED,
 * addr > TASK_SIZE - len are -ENOMEM, then a misaligned addr -EINVAL, then
 * security_mmap_addr() (below mmap_min_addr) -EPERM.  A hint that wraps when page-aligned
 * is no hint (generic_get_unmapped_area_topdown() checks it against
 * mmap_min_addr and falls back to the top-down search).
 */
static bool test_mmap_len_wraps(void)
{
	laf_mm *mm = mm_small();
	struct laf_geometry g;
	uint64_t out = 0;
	const int rw = LAF_PROT_READ | LAF_PROT_WRITE;

	ASSERT_TRUE(mm);
	ASSERT_OK(laf_get_geometry(mm, &g));
	ASSERT_EQ(laf_mmap(mm, 0, UINT64_MAX, rw, 0, &out), LAF_ENOMEM);
	ASSERT_EQ(laf_mmap(mm, 0, UINT64_MAX - 4 * K + 2, rw, 0, &out), LAF_ENOMEM);
	ASSERT_EQ(laf_mmap(mm, 0, g.task_size + 1, rw, 0, &out), LAF_ENOMEM);
	ASSERT_EQ(laf_mmap(mm, BASE, UINT64_MAX, rw, LAF_MAP_FIXED, &out), LAF_ENOMEM);
	ASSERT_EQ(laf_mmap(mm, g.task_size - 4 * K, 8 * K, rw, LAF_MAP_FIXED, &out), LAF_ENOMEM);
	ASSERT_EQ(laf_mmap(mm, g.task_size, 4 * K, rw, LAF_MAP_FIXED, &out), LAF_ENOMEM);
	/* the range check comes before the alignment and mmap_min_addr checks */
	ASSERT_EQ(laf_mmap(mm, g.task_size - 100, 4 * K, rw, LAF_MAP_FIXED, &out), LAF_ENOMEM);
	ASSERT_EQ(laf_mmap(mm, 4 * K, g.task_size, rw, LAF_MAP_FIXED, &out), LAF_ENOMEM);
	ASSERT_EQ(laf_mmap(mm, BASE + 100, 4 * K, rw, LAF_MAP_FIXED, &out), LAF_EINVAL);
	ASSERT_EQ(laf_mmap(mm, 4 * K, 4 * K, rw, LAF_MAP_FIXED, &out), LAF_EPERM);
	ASSERT_EQ(nr_vmas(mm), 0);
	ASSERT_OK(laf_mmap(mm, UINT64_MAX - 100, 4 * K, rw, 0, &out));
	ASSERT_EQ(out, g.mmap_base - 4 * K);
	return true;
}

/*
 * Every uffd ioctl checks its range with fs/userfaultfd.c validate_range():
 * start and len page-aligned, len != 0, mmap_min_addr <= start < TASK_SIZE,
 * len <= TASK_SIZE - start; -EINVAL otherwise.
 */
static bool test_uffd_validate_range(void)
{
	laf_mm *mm = mm_small();
	struct laf_geometry g;
	const uint64_t bad[][2] = {
		{ BASE, 0 },			/* len == 0 */
		{ BASE + 1, 4 * K },		/* start misaligned */
		{ BASE, 4 * K + 1 },		/* len misaligned */
		{ 0, 4 * K },			/* below mmap_min_addr */
		{ BASE, UINT64_MAX & ~(4 * K - 1) },	/* start + len wraps */
		{ BASE, 0 - BASE },		/* start + len == 2^64 */
		{ 1ULL << 47, 4 * K },		/* start >= TASK_SIZE */
		{ BASE, (1ULL << 47) - BASE },	/* len > TASK_SIZE - start */
	};
	size_t i;
	uint64_t a;

	ASSERT_TRUE(mm);
	ASSERT_OK(laf_get_geometry(mm, &g));
	a = map_fixed(mm, BASE, 64 * K);
	ASSERT_OK(laf_uffd_register(mm, a, 64 * K, LAF_UFFDIO_REGISTER_MODE_MISSING |
						   LAF_UFFDIO_REGISTER_MODE_WP));
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t s = bad[i][0], l = bad[i][1];

		ASSERT_EQ(laf_uffd_register(mm, s, l, LAF_UFFDIO_REGISTER_MODE_MISSING), LAF_EINVAL);
		ASSERT_EQ(laf_uffd_unregister(mm, s, l), LAF_EINVAL);
		ASSERT_EQ(laf_uffd_copy(mm, s, l, 0), LAF_EINVAL);
		ASSERT_EQ(laf_uffd_zeropage(mm, s, l), LAF_EINVAL);
		ASSERT_EQ(laf_uffd_writeprotect(mm, s, l, 1), LAF_EINVAL);
	}
	ASSERT_EQ(stats(mm).mm_anonpages, 0);
	ASSERT_OK(laf_uffd_unregister(mm, a, 64 * K));
	return true;
}

/*
 * The top of the address space at every page size: TASK_SIZE is
 * (1 << 47) - PAGE_SIZE, page-aligned, and the last page below it can be
 * mapped, faulted, filled by UFFDIO_COPY, read back and unmapped (an ASan
 * probe of the last PMD table and PTE table: `make ctest-asan`).
 */
static bool test_top_of_address_space(void)
{
	static const uint32_t shifts[] = { LAF_PAGE_SHIFT_4K, LAF_PAGE_SHIFT_16K,
					   LAF_PAGE_SHIFT_64K };
	const int rw = LAF_PROT_READ | LAF_PROT_WRITE;
	size_t i;

	for (i = 0; i < 3; i++) {
		laf_mm *mm = mm_new(shifts[i], LAF_ARCH_ARM64, 1024 * M, LAF_MEMCG_UNLIMITED);
		struct laf_geometry g;
		struct laf_touch_summary s;
		struct laf_fault_result r;
		uint64_t top, ps, out = 0, pte = 0;
		int8_t order = 0;

		ASSERT_TRUE(mm);
		ASSERT_OK(laf_get_geometry(mm, &g));
		ps = g.page_size;
		ASSERT_EQ(g.task_size, (1ULL << 47) - ps);
		ASSERT_EQ(g.task_size % ps, 0);
		top = g.task_size - ps;
		ASSERT_OK(set_upstream(mm, LAF_THP_ALWAYS, ~0UL, LAF_THP_INHERIT));
		ASSERT_EQ(laf_mmap(mm, top, 2 * ps, rw, LAF_MAP_FIXED, &out), LAF_ENOMEM);
		ASSERT_OK(laf_mmap(mm, top - ps, 2 * ps, rw, LAF_MAP_FIXED, &out));
		ASSERT_EQ(out, top - ps);
		ASSERT_OK(laf_fault(mm, top, 1, &r));
		ASSERT_EQ(r.access, LAF_ACCESS_FAULT);
		ASSERT_OK(laf_touch_range(mm, top - ps, 4 * ps, ps, 0, &s));
		ASSERT_EQ(s.accesses, 4);
		ASSERT_EQ(s.hits + s.faulted, 2);
		ASSERT_EQ(s.sigsegv, 2);		/* TASK_SIZE and above */
		ASSERT_OK(laf_read_ptes(mm, top, 1, &pte, &order));
		ASSERT_EQ(order, 0);
		ASSERT_EQ(laf_read_ptes(mm, top, 2, &pte, NULL), LAF_EINVAL);
		ASSERT_EQ(laf_lookup(mm, g.task_size, &pte, NULL), LAF_EINVAL);
		ASSERT_OK(laf_madvise(mm, top - ps, 2 * ps, LAF_MADV_DONTNEED));
		ASSERT_OK(laf_uffd_register(mm, top, ps, LAF_UFFDIO_REGISTER_MODE_MISSING));
		ASSERT_OK(laf_uffd_copy(mm, top, ps, 0));
		ASSERT_EQ(laf_uffd_zeropage(mm, top, ps), LAF_EEXIST);
		ASSERT_OK(laf_uffd_unregister(mm, top, ps));
		ASSERT_EQ(laf_munmap(mm, top, 2 * ps), LAF_EINVAL);
		ASSERT_OK(laf_munmap(mm, top - ps, 2 * ps));
		ASSERT_EQ(nr_vmas(mm), 0);
		ASSERT_EQ(stats(mm).mm_anonpages, 0);
	}
	return true;
}

/* ---------------------------------------------------------------- runner */

static uint64_t head_pfn_at(laf_mm *mm, uint64_t addr)
{
	struct laf_folio_info fi;

	if (laf_lookup(mm, addr, NULL, &fi))
		return ~0ULL;
	return fi.head_pfn;
}

static struct laf_memmap_info memmap_info(laf_mm *mm)
{
	struct laf_memmap_info mi;

	memset(&mi, 0xff, sizeof(mi));
	laf_get_memmap_info(mm, &mi);
	return mi;
}

/*
 * Deferred struct-page init: 1G of 4K pages is 8 sections of 32 blocks of
 * 4M.  Only the small blocks below the first 4M are queued at creation; the
 * 4M blocks are free (counted) but set up a section at a time, highest
 * first, exactly in the PFN order an eager free list hands them out.
 */
static bool test_deferred_memmap(void)
{
	laf_mm *mm = mm_new(LAF_PAGE_SHIFT_4K, LAF_ARCH_GENERIC, 1024 * M, LAF_MEMCG_UNLIMITED);
	const uint64_t frames = 1024 * M / (4 * K);
	struct laf_memmap_info mi;
	uint64_t a, off, faults = 0;

	ASSERT_TRUE(mm);
	mi = memmap_info(mm);
	ASSERT_EQ(mi.section_pages, 32768);
	ASSERT_EQ(mi.nr_sections, 8);
	ASSERT_EQ(mi.sections_initialised, 1);          /* the one holding pfns 1..1023 */
	ASSERT_EQ(mi.deferred_pages, frames - 1024);
	ASSERT_EQ(mi.memmap_bytes, frames * 16);
	ASSERT_EQ(stats(mm).free_pages, frames - 1);    /* deferred frames count as free */
	ASSERT_OK(set_upstream(mm, LAF_THP_ALWAYS, 0, LAF_THP_INHERIT));
	a = map_fixed(mm, BASE, 1024 * M);
	/* PMD THPs: the order-9 block at 512 first, then the top 4M block's halves */
	ASSERT_EQ(fault(mm, a, 1).order, 9);
	ASSERT_EQ(head_pfn_at(mm, a), 512);
	ASSERT_EQ(memmap_info(mm).sections_initialised, 1);
	ASSERT_EQ(fault(mm, a + 2 * M, 1).order, 9);
	ASSERT_EQ(head_pfn_at(mm, a + 2 * M), frames - 1024);
	ASSERT_EQ(fault(mm, a + 4 * M, 1).order, 9);
	ASSERT_EQ(head_pfn_at(mm, a + 4 * M), frames - 512);
	ASSERT_EQ(fault(mm, a + 6 * M, 1).order, 9);
	ASSERT_EQ(head_pfn_at(mm, a + 6 * M), frames - 2048);
	mi = memmap_info(mm);
	ASSERT_EQ(mi.sections_initialised, 2);
	ASSERT_EQ(mi.deferred_pages, frames - 1024 - 32768);
	/* a section (64 PMDs) is grown only when its 32 blocks are used up */
	for (off = 8 * M; off <= 128 * M; off += 2 * M)
		ASSERT_EQ(fault(mm, a + off, 1).order, 9);
	ASSERT_EQ(memmap_info(mm).sections_initialised, 2);
	ASSERT_EQ(head_pfn_at(mm, a + 128 * M), frames - 32768 + 512);
	ASSERT_EQ(fault(mm, a + 130 * M, 1).order, 9);
	ASSERT_EQ(head_pfn_at(mm, a + 130 * M), frames - 32768 - 1024);
	ASSERT_EQ(memmap_info(mm).sections_initialised, 3);
	ASSERT_OK(laf_check_invariants(mm, NULL, 0));
	/* use up RAM: every section gets initialised, nothing is lost */
	for (off = 132 * M; off < 1024 * M; off += 2 * M)
		faults += fault(mm, a + off, 1).access == LAF_ACCESS_FAULT;
	ASSERT_TRUE(faults > 300);
	mi = memmap_info(mm);
	ASSERT_EQ(mi.deferred_pages, 0);
	ASSERT_EQ(mi.sections_initialised, 8);
	ASSERT_OK(laf_check_invariants(mm, NULL, 0));
	ASSERT_OK(laf_munmap(mm, a, 1024 * M));
	ASSERT_EQ(stats(mm).free_pages, frames - 1);

	/* 200M: a short last section, all deferred at first */
	mm = mm_new(LAF_PAGE_SHIFT_4K, LAF_ARCH_GENERIC, 200 * M, LAF_MEMCG_UNLIMITED);
	ASSERT_TRUE(mm);
	mi = memmap_info(mm);
	ASSERT_EQ(mi.nr_sections, 2);
	ASSERT_EQ(mi.sections_initialised, 1);
	ASSERT_EQ(mi.deferred_pages, 200 * M / (4 * K) - 1024);
	return true;
}

/* laf_phys_fragment() reaches the deferred sections too (it pins in every one). */
static bool test_deferred_memmap_fragment(void)
{
	laf_mm *mm = mm_new(LAF_PAGE_SHIFT_16K, LAF_ARCH_GENERIC, 1024 * M, LAF_MEMCG_UNLIMITED);
	const uint64_t frames = 1024 * M / (16 * K);
	struct laf_memmap_info mi;
	struct laf_stats s;

	ASSERT_TRUE(mm);
	mi = memmap_info(mm);
	ASSERT_EQ(mi.section_pages, 8192);              /* 128M: four 32M blocks */
	ASSERT_EQ(mi.sections_initialised, 1);
	ASSERT_OK(laf_phys_fragment(mm, 3));
	mi = memmap_info(mm);
	ASSERT_EQ(mi.deferred_pages, 0);
	ASSERT_EQ(mi.sections_initialised, mi.nr_sections);
	s = stats(mm);
	ASSERT_EQ(s.pinned_pages, (frames - 16) / 16);  /* one frame in 16 above pfn 16 */
	ASSERT_EQ(s.free_pages + s.pinned_pages, frames - 1);
	ASSERT_OK(laf_check_invariants(mm, NULL, 0));
	ASSERT_OK(laf_phys_unfragment(mm));
	ASSERT_EQ(stats(mm).free_pages, frames - 1);
	return true;
}

/* A huge machine costs nothing until used; RAM the host cannot back is refused. */
static bool test_ram_limit_and_lazy_create(void)
{
	uint64_t max = laf_max_ram_bytes(12), ram = max < (1ULL << 40) ? max & ~(4 * M - 1) : 1ULL << 40;
	struct laf_config cfg;
	struct laf_geometry g;
	laf_mm *mm = NULL;

	ASSERT_TRUE(max >= 1024 * M);
	ASSERT_TRUE(max <= ((1ULL << 31) - 1) << 12);
	ASSERT_EQ(laf_max_ram_bytes(13), 0);
	ASSERT_EQ(laf_max_ram_bytes(16), (max >> 12) << 16);
	laf_config_default(&cfg);
	cfg.ram_bytes = max + 4 * K;
	ASSERT_EQ(laf_geometry_from_config(&cfg, &g), LAF_ERANGE);
	ASSERT_EQ(laf_mm_create(&cfg, &mm), LAF_ERANGE);
	ASSERT_TRUE(mm == NULL);
	mm = mm_new(LAF_PAGE_SHIFT_4K, LAF_ARCH_GENERIC, ram, LAF_MEMCG_UNLIMITED);
	ASSERT_TRUE(mm);
	ASSERT_EQ(memmap_info(mm).sections_initialised, 1);
	ASSERT_EQ(memmap_info(mm).max_ram_bytes, max);
	ASSERT_EQ(touch(mm, map_fixed(mm, BASE, 16 * M), 16 * M, 1), 4096);
	ASSERT_EQ(memmap_info(mm).sections_initialised, 2);
	ASSERT_EQ(stats(mm).free_pages, ram / (4 * K) - 1 - 4096 - stats(mm).nr_ptes);
	return true;
}

/* memory.max = 0 lets nothing be charged; LAF_MEMCG_UNLIMITED is "max". */
static bool test_memcg_zero_limit(void)
{
	laf_mm *mm = mm_new(LAF_PAGE_SHIFT_4K, LAF_ARCH_GENERIC, 64 * M, 0);
	struct laf_config cfg;
	struct laf_stats s;
	uint64_t a;

	laf_config_default(&cfg);
	ASSERT_EQ(cfg.memcg_limit_bytes, LAF_MEMCG_UNLIMITED);
	ASSERT_TRUE(mm);
	a = map_fixed(mm, BASE, 1 * M);
	ASSERT_EQ(fault(mm, a, 0).access, LAF_ACCESS_FAULT);  /* zero page: not charged */
	ASSERT_EQ(fault(mm, a + 64 * K, 1).access, LAF_ACCESS_OOM);
	s = stats(mm);
	ASSERT_EQ(s.memcg_charged, 0);
	ASSERT_EQ(s.memcg_max_events, 1);
	ASSERT_EQ(s.faults_oom, 1);
	ASSERT_EQ(laf_set_memcg_limit(mm, 4097), LAF_EINVAL);
	ASSERT_OK(laf_set_memcg_limit(mm, LAF_MEMCG_UNLIMITED));
	ASSERT_EQ(fault(mm, a + 64 * K, 1).order, 0);
	ASSERT_EQ(laf_set_memcg_limit(mm, 0), LAF_ERANGE);     /* below usage */
	ASSERT_OK(laf_set_memcg_limit(mm, 4 * K));
	ASSERT_EQ(fault(mm, a + 128 * K, 1).access, LAF_ACCESS_OOM);
	ASSERT_OK(laf_munmap(mm, a, 1 * M));
	ASSERT_OK(laf_set_memcg_limit(mm, 0));
	ASSERT_EQ(stats(mm).memcg_charged, 0);
	return true;
}

/* ------------------------------------------------- fork and COW (issue 9) */

/*
 * Expected values: docs/kernel-findings.md §5 (6.18.44-fc, 4K pages, measured
 * per process with getrusage() around its own accesses: min_flt here).
 * "64K" = hugepages-64kB=always, the rest default; "PMD" = global madvise,
 * 2048kB inherit, MADV_HUGEPAGE on the 2M region.
 */

/* fork @mm; the child joins the live list (checked and destroyed after the test) */
static laf_mm *fork_of(laf_mm *mm)
{
	laf_mm *child = NULL;

	if (nr_live == MAX_MMS || laf_mm_fork(mm, &child) || !child)
		return NULL;
	live[nr_live++] = child;
	return child;
}

/* exit_mmap() of @mm before the test ends; the machine must stay consistent */
static bool exit_mm(laf_mm *mm, laf_mm *survivor)
{
	char msg[512];
	int i;

	for (i = 0; i < nr_live; i++)
		if (live[i] == mm) {
			live[i] = live[--nr_live];
			break;
		}
	laf_mm_destroy(mm);
	if (laf_check_invariants(survivor, msg, sizeof(msg))) {
		fprintf(stderr, "after exit: %s\n", msg);
		return false;
	}
	return true;
}

static uint64_t min_flt(laf_mm *mm)
{
	return stats(mm).min_flt;
}

/* mm with 64K mTHP always; 1 MiB at BASE filled with 16 x 64K folios */
static laf_mm *fork_setup_64k(void)
{
	laf_mm *mm = mm_small();

	if (!mm || set_upstream(mm, LAF_THP_MADVISE, 1UL << 4, LAF_THP_INHERIT) ||
	    map_fixed(mm, BASE, 1 * M) != BASE || touch(mm, BASE, 1 * M, 1) != 16)
		return NULL;
	return mm;
}

static char pic64k[257], pic4k[257];

static void init_pictures(void)
{
	memset(pic64k, 'F', 256);
	memset(pic4k, 'p', 256);
}

static bool test_fork_cow_child_write(void)
{
	laf_mm *mm = fork_setup_64k(), *child;
	struct laf_folio_info fi;
	struct laf_stats s0;
	uint64_t f;

	init_pictures();
	ASSERT_TRUE(mm);
	child = fork_of(mm);
	ASSERT_TRUE(child);
	/* page tables copied, mapcounts doubled, both sides write-protected */
	ASSERT_STREQ(pte_picture(child, BASE, 256), pic64k);
	ASSERT_OK(laf_lookup(child, BASE, NULL, &fi));
	ASSERT_EQ(fi.order, 4);
	ASSERT_EQ(fi.mapcount, 32);
	ASSERT_EQ(fi.refcount, 32);
	ASSERT_EQ(stats(child).mm_anonpages, 256);
	f = min_flt(child);
	s0 = stats(child);
	ASSERT_EQ(touch(child, BASE, 1 * M, 1), 256);
	ASSERT_EQ(min_flt(child) - f, 256);
	ASSERT_EQ(stats(child).pgreuse - s0.pgreuse, 0);
	ASSERT_EQ(stats(child).faults_wp_copy - s0.faults_wp_copy, 256);
	ASSERT_EQ(stats(child).anon_fault_alloc[4] - s0.anon_fault_alloc[4], 0);
	ASSERT_EQ(stats(child).split_deferred[4] - s0.split_deferred[4], 0);
	ASSERT_STREQ(pte_picture(child, BASE, 256), pic4k);
	ASSERT_TRUE(exit_mm(child, mm));
	f = min_flt(mm);
	s0 = stats(mm);
	ASSERT_EQ(touch(mm, BASE, 1 * M, 1), 256);
	ASSERT_EQ(min_flt(mm) - f, 256);
	ASSERT_EQ(stats(mm).pgreuse - s0.pgreuse, 256);
	ASSERT_EQ(stats(mm).faults_wp_copy - s0.faults_wp_copy, 0);
	ASSERT_STREQ(pte_picture(mm, BASE, 256), pic64k);
	ASSERT_EQ(stats(mm).nr_anon[4], 16);
	return true;
}

static bool test_fork_cow_child_read_or_none(void)
{
	int read;

	init_pictures();
	for (read = 0; read < 2; read++) {
		laf_mm *mm = fork_setup_64k(), *child;
		uint64_t f, r;

		ASSERT_TRUE(mm);
		child = fork_of(mm);
		ASSERT_TRUE(child);
		if (read) {
			f = min_flt(child);
			ASSERT_EQ(touch(child, BASE, 1 * M, 0), 0);
			ASSERT_EQ(min_flt(child) - f, 0);
		}
		ASSERT_TRUE(exit_mm(child, mm));
		f = min_flt(mm);
		r = stats(mm).pgreuse;
		ASSERT_EQ(touch(mm, BASE, 1 * M, 1), 256);
		ASSERT_EQ(min_flt(mm) - f, 256);
		ASSERT_EQ(stats(mm).pgreuse - r, 256);
		ASSERT_STREQ(pte_picture(mm, BASE, 256), pic64k);
	}
	return true;
}

static bool test_fork_cow_child_alive(void)
{
	laf_mm *mm = fork_setup_64k(), *child;
	struct laf_stats s0;
	uint64_t f;

	init_pictures();
	ASSERT_TRUE(mm);
	child = fork_of(mm);
	ASSERT_TRUE(child);
	f = min_flt(mm);
	s0 = stats(mm);
	ASSERT_EQ(touch(mm, BASE, 1 * M, 1), 256);
	ASSERT_EQ(min_flt(mm) - f, 256);
	ASSERT_EQ(stats(mm).pgreuse - s0.pgreuse, 0);
	ASSERT_EQ(stats(mm).faults_wp_copy - s0.faults_wp_copy, 256);
	ASSERT_EQ(stats(mm).split_deferred[4] - s0.split_deferred[4], 0);
	ASSERT_STREQ(pte_picture(mm, BASE, 256), pic4k);
	ASSERT_EQ(touch(mm, BASE, 1 * M, 1), 0);
	ASSERT_STREQ(pte_picture(child, BASE, 256), pic64k);
	/* child-after-parent: the 64K folios are the child's alone now: all reuse */
	f = min_flt(child);
	s0 = stats(child);
	ASSERT_EQ(touch(child, BASE, 1 * M, 1), 256);
	ASSERT_EQ(min_flt(child) - f, 256);
	ASSERT_EQ(stats(child).pgreuse - s0.pgreuse, 256);
	ASSERT_STREQ(pte_picture(child, BASE, 256), pic64k);
	ASSERT_EQ(touch(mm, BASE, 1 * M, 1), 0);
	return true;
}

/* last-page / two-pages: MADV_DONTNEED all but @keep pages of each 64K folio */
static bool fork_kept_pages(unsigned int keep, uint64_t want_reuse, const char *block)
{
	laf_mm *mm = fork_setup_64k(), *child;
	struct laf_stats s0;
	char want[257];
	uint64_t f, a;
	unsigned int i;

	ASSERT_TRUE(mm);
	for (a = BASE; a < BASE + 1 * M; a += 64 * K)
		ASSERT_OK(laf_madvise(mm, a + keep * 4 * K, (16 - keep) * 4 * K, LAF_MADV_DONTNEED));
	child = fork_of(mm);
	ASSERT_TRUE(child);
	ASSERT_TRUE(exit_mm(child, mm));
	f = min_flt(mm);
	s0 = stats(mm);
	ASSERT_EQ(touch(mm, BASE, 1 * M, 1), 256);
	ASSERT_EQ(min_flt(mm) - f, 256);
	ASSERT_EQ(stats(mm).pgreuse - s0.pgreuse, want_reuse);
	for (i = 0; i < 16; i++)
		memcpy(want + 16 * i, block, 16);
	want[256] = 0;
	ASSERT_STREQ(pte_picture(mm, BASE, 256), want);
	if (keep == 1) {
		ASSERT_EQ(stats(mm).nr_anon[4] - s0.nr_anon[4], -16);
		ASSERT_EQ(stats(mm).nr_anon_partially_mapped[4] - s0.nr_anon_partially_mapped[4], -16);
	}
	return true;
}

static bool test_fork_cow_last_page(void)
{
	return fork_kept_pages(1, 0, "pppppppppppppppp");
}

static bool test_fork_cow_two_pages(void)
{
	return fork_kept_pages(2, 32, "FFpppppppppppppp");
}

static bool test_fork_zero_pages(void)
{
	laf_mm *mm = mm_small(), *child;
	uint64_t out, f;
	struct laf_stats s0;
	char zero[257];

	ASSERT_TRUE(mm);
	ASSERT_OK(set_upstream(mm, LAF_THP_MADVISE, 1UL << 4, LAF_THP_INHERIT));
	/* zero_fork guard: PROT_NONE neighbours, read-only touched: no anon_vma */
	ASSERT_OK(laf_mmap(mm, BASE - 64 * K, 64 * K, LAF_PROT_NONE, LAF_MAP_FIXED, &out));
	ASSERT_OK(laf_mmap(mm, BASE + 1 * M, 64 * K, LAF_PROT_NONE, LAF_MAP_FIXED, &out));
	ASSERT_EQ(map_fixed(mm, BASE, 1 * M), BASE);
	ASSERT_EQ(touch(mm, BASE, 1 * M, 0), 256);
	child = fork_of(mm);
	ASSERT_TRUE(child);
	ASSERT_STREQ(pte_picture(child, BASE, 4), "....");	/* vma_needs_copy() false */
	f = min_flt(child);
	ASSERT_EQ(touch(child, BASE, 1 * M, 0), 256);
	ASSERT_EQ(min_flt(child) - f, 256);
	ASSERT_TRUE(exit_mm(child, mm));
	/* zero-anon: one written page gives the VMA an anon_vma: zero PTEs copied */
	ASSERT_EQ(touch(mm, BASE, 4 * K, 1), 1);
	child = fork_of(mm);
	ASSERT_TRUE(child);
	memset(zero, 'z', 256);
	zero[0] = 'p';
	zero[256] = 0;
	ASSERT_STREQ(pte_picture(child, BASE, 256), zero);
	f = min_flt(child);
	ASSERT_EQ(touch(child, BASE, 1 * M, 0), 0);
	ASSERT_EQ(min_flt(child) - f, 0);
	ASSERT_TRUE(exit_mm(child, mm));
	f = min_flt(mm);
	s0 = stats(mm);
	ASSERT_EQ(touch(mm, BASE, 1 * M, 1), 256);
	ASSERT_EQ(min_flt(mm) - f, 256);
	ASSERT_EQ(stats(mm).pgreuse - s0.pgreuse, 1);
	ASSERT_EQ(stats(mm).faults_wp_copy - s0.faults_wp_copy, 255);
	return true;
}

/* PMD settings: 2M at BASE, MADV_HUGEPAGE, filled with one PMD THP */
static laf_mm *fork_setup_pmd(int write)
{
	laf_mm *mm = mm_small();

	if (!mm || set_upstream(mm, LAF_THP_MADVISE, 0, LAF_THP_INHERIT) ||
	    map_fixed(mm, BASE, 2 * M) != BASE ||
	    laf_madvise(mm, BASE, 2 * M, LAF_MADV_HUGEPAGE) || touch(mm, BASE, 2 * M, write) != 1)
		return NULL;
	return mm;
}

static bool test_fork_pmd(void)
{
	laf_mm *mm, *child;
	struct laf_stats s0;
	uint64_t f;
	char h[513], p[513];

	memset(h, 'H', 512);
	memset(p, 'p', 512);
	h[512] = p[512] = 0;
	/* pmd-alive: 1 split + 512 copies in 512 faults; the child keeps the THP */
	mm = fork_setup_pmd(1);
	ASSERT_TRUE(mm);
	child = fork_of(mm);
	ASSERT_TRUE(child);
	ASSERT_STREQ(pte_picture(child, BASE, 512), h);
	f = min_flt(mm);
	s0 = stats(mm);
	ASSERT_EQ(touch(mm, BASE, 2 * M, 1), 512);
	ASSERT_EQ(min_flt(mm) - f, 512);
	ASSERT_EQ(stats(mm).thp_split_pmd - s0.thp_split_pmd, 1);
	ASSERT_EQ(stats(mm).pgreuse - s0.pgreuse, 0);
	ASSERT_STREQ(pte_picture(mm, BASE, 512), p);
	ASSERT_STREQ(pte_picture(child, BASE, 512), h);
	ASSERT_TRUE(exit_mm(child, mm));

	/* pmd-exit: the child exits, the parent's write reuses the PMD: 1 fault */
	mm = fork_setup_pmd(1);
	ASSERT_TRUE(mm);
	child = fork_of(mm);
	ASSERT_TRUE(child);
	ASSERT_TRUE(exit_mm(child, mm));
	f = min_flt(mm);
	s0 = stats(mm);
	ASSERT_EQ(touch(mm, BASE, 2 * M, 1), 1);
	ASSERT_EQ(min_flt(mm) - f, 1);
	ASSERT_EQ(stats(mm).thp_split_pmd - s0.thp_split_pmd, 0);
	ASSERT_STREQ(pte_picture(mm, BASE, 512), h);

	/* pmd-child-write: the child splits and copies; the parent then reuses */
	child = fork_of(mm);
	ASSERT_TRUE(child);
	f = min_flt(child);
	s0 = stats(child);
	ASSERT_EQ(touch(child, BASE, 2 * M, 1), 512);
	ASSERT_EQ(min_flt(child) - f, 512);
	ASSERT_EQ(stats(child).thp_split_pmd - s0.thp_split_pmd, 1);
	ASSERT_STREQ(pte_picture(child, BASE, 512), p);
	ASSERT_TRUE(exit_mm(child, mm));
	f = min_flt(mm);
	ASSERT_EQ(touch(mm, BASE, 2 * M, 1), 1);
	ASSERT_EQ(min_flt(mm) - f, 1);
	ASSERT_STREQ(pte_picture(mm, BASE, 512), h);
	return true;
}

static bool test_fork_huge_zero_pmd(void)
{
	laf_mm *mm = fork_setup_pmd(0), *child;
	struct laf_stats s0;
	uint64_t f;
	char z[513], h[513];

	memset(z, 'Z', 512);
	memset(h, 'H', 512);
	z[512] = h[512] = 0;
	ASSERT_TRUE(mm);
	ASSERT_STREQ(pte_picture(mm, BASE, 512), z);
	child = fork_of(mm);
	ASSERT_TRUE(child);
	f = min_flt(child);
	ASSERT_EQ(touch(child, BASE, 2 * M, 0), 0);	/* hzero: the zero PMD was copied */
	ASSERT_EQ(min_flt(child) - f, 0);
	/* hzero-child-write: the child gets its own THP, the parent keeps the zero PMD */
	s0 = stats(child);
	ASSERT_EQ(touch(child, BASE, 2 * M, 1), 1);
	ASSERT_EQ(stats(child).thp_fault_alloc - s0.thp_fault_alloc, 1);
	ASSERT_EQ(stats(child).anon_fault_alloc[9] - s0.anon_fault_alloc[9], 1);
	ASSERT_STREQ(pte_picture(child, BASE, 512), h);
	ASSERT_STREQ(pte_picture(mm, BASE, 512), z);
	s0 = stats(mm);
	f = min_flt(mm);
	ASSERT_EQ(touch(mm, BASE, 2 * M, 1), 1);
	ASSERT_EQ(min_flt(mm) - f, 1);
	ASSERT_EQ(stats(mm).thp_fault_alloc - s0.thp_fault_alloc, 1);
	return true;
}

static bool test_fork_dontfork_wipeonfork(void)
{
	laf_mm *mm = fork_setup_64k(), *child;
	struct laf_vma_info v[4];
	char zero[257];
	size_t n;
	uint64_t f;

	init_pictures();
	ASSERT_TRUE(mm);
	/* dontfork: a hole in the child; the parent's PTEs stay writable */
	ASSERT_OK(laf_madvise(mm, BASE, 1 * M, LAF_MADV_DONTFORK));
	child = fork_of(mm);
	ASSERT_TRUE(child);
	ASSERT_OK(laf_get_vmas(child, v, 4, &n));
	ASSERT_EQ(n, 0);
	ASSERT_EQ(fault(child, BASE, 0).access, LAF_ACCESS_SIGSEGV);
	ASSERT_TRUE(exit_mm(child, mm));
	ASSERT_EQ(touch(mm, BASE, 1 * M, 1), 0);
	ASSERT_OK(laf_madvise(mm, BASE, 1 * M, LAF_MADV_DOFORK));
	ASSERT_OK(laf_get_vmas(mm, v, 4, &n));
	ASSERT_EQ(n, 1);
	ASSERT_EQ(v[0].vm_flags & LAF_VM_DONTCOPY, 0);
	/* wipeonfork: the child refaults zero-filled memory: 256 read faults */
	ASSERT_OK(laf_madvise(mm, BASE, 1 * M, LAF_MADV_WIPEONFORK));
	child = fork_of(mm);
	ASSERT_TRUE(child);
	ASSERT_OK(laf_get_vmas(child, v, 4, &n));
	ASSERT_EQ(n, 1);
	ASSERT_EQ(v[0].anon_vma, 0);
	ASSERT_TRUE(v[0].vm_flags & LAF_VM_WIPEONFORK);
	f = min_flt(child);
	ASSERT_EQ(touch(child, BASE, 1 * M, 0), 256);
	ASSERT_EQ(min_flt(child) - f, 256);
	memset(zero, 'z', 256);
	zero[256] = 0;
	ASSERT_STREQ(pte_picture(child, BASE, 256), zero);
	ASSERT_TRUE(exit_mm(child, mm));
	ASSERT_EQ(touch(mm, BASE, 1 * M, 1), 0);
	ASSERT_STREQ(pte_picture(mm, BASE, 256), pic64k);
	ASSERT_OK(laf_madvise(mm, BASE, 1 * M, LAF_MADV_KEEPONFORK));
	return true;
}

/*
 * userfaultfd across fork, without UFFD_FEATURE_EVENT_FORK: dup_userfaultfd()
 * drops the child's registration (VM_UFFD_* cleared), the child's PTEs lose
 * uffd-wp (copy_present_ptes(): !userfaultfd_wp(dst_vma)), the child's VMAs
 * keep the parent's split (no merge at fork) and the parent is unchanged.
 */
static bool test_fork_userfaultfd(void)
{
	laf_mm *mm = fork_setup_64k(), *child;
	struct laf_vma_info pv[8], cv[8];
	size_t pn, cn, k;
	uint64_t pte, c = BASE + 4 * M;
	char msg[512];

	ASSERT_TRUE(mm);
	/* wp on the first 128K (VMA split), the first 64K folio protected */
	ASSERT_OK(laf_uffd_register(mm, BASE, 128 * K, LAF_UFFDIO_REGISTER_MODE_WP));
	ASSERT_OK(laf_uffd_writeprotect(mm, BASE, 64 * K, 1));
	/* missing mode in the middle of a never-faulted mapping: 3 VMAs, no anon_vma */
	ASSERT_EQ(map_fixed(mm, c, 256 * K), c);
	ASSERT_OK(laf_uffd_register(mm, c + 64 * K, 64 * K, LAF_UFFDIO_REGISTER_MODE_MISSING));
	ASSERT_OK(laf_get_vmas(mm, pv, 8, &pn));
	ASSERT_EQ(pn, 5);
	child = fork_of(mm);
	ASSERT_TRUE(child);
	ASSERT_OK(laf_get_vmas(child, cv, 8, &cn));
	ASSERT_EQ(cn, pn);
	for (k = 0; k < cn; k++) {
		ASSERT_EQ(cv[k].start, pv[k].start);
		ASSERT_EQ(cv[k].end, pv[k].end);
		ASSERT_EQ(cv[k].vm_flags, pv[k].vm_flags & ~(uint64_t)(LAF_VM_UFFD_MISSING |
									LAF_VM_UFFD_WP));
	}
	ASSERT_TRUE(pv[0].vm_flags & LAF_VM_UFFD_WP);
	ASSERT_TRUE(pv[3].vm_flags & LAF_VM_UFFD_MISSING);
	/* the child's copy has no uffd-wp bit: a write is an ordinary COW */
	ASSERT_OK(laf_lookup(child, BASE, &pte, NULL));
	ASSERT_FALSE(pte & (LAF_PTE_UFFD_WP | LAF_PTE_WRITE));
	ASSERT_OK(laf_lookup(mm, BASE, &pte, NULL));
	ASSERT_TRUE(pte & LAF_PTE_UFFD_WP);
	ASSERT_EQ(fault(child, BASE, 1).access, LAF_ACCESS_FAULT);
	ASSERT_EQ(stats(child).faults_wp_copy, 1);
	ASSERT_EQ(fault(mm, BASE, 1).access, LAF_ACCESS_USERFAULT);
	/* missing: the child faults normally, at 64K (not armed any more) */
	ASSERT_EQ(fault(child, c + 64 * K, 1).order, 4);
	ASSERT_EQ(fault(mm, c + 64 * K, 1).access, LAF_ACCESS_USERFAULT);
	/* the child's split stays: a fault elsewhere does not merge it */
	ASSERT_EQ(fault(child, c, 1).order, 4);
	ASSERT_OK(laf_get_vmas(child, cv, 8, &cn));
	ASSERT_EQ(cn, 5);
	ASSERT_OK(laf_check_invariants(child, msg, sizeof(msg)));
	ASSERT_TRUE(exit_mm(child, mm));
	ASSERT_EQ(fault(mm, BASE, 1).access, LAF_ACCESS_USERFAULT);
	return true;
}

static bool test_fork_machine_stats(void)
{
	struct laf_config cfg;
	laf_machine *m = NULL;
	laf_mm *a = NULL, *b = NULL;
	struct laf_stats ms, sa, sb;
	size_t nr;
	uint64_t out;
	char msg[256];

	laf_config_default(&cfg);
	cfg.ram_bytes = 64 * M;
	ASSERT_OK(laf_machine_create(&cfg, &m));
	ASSERT_OK(laf_mm_create_on(m, &a));
	ASSERT_TRUE(laf_mm_machine(a) == m);
	ASSERT_OK(laf_mmap(a, BASE, 256 * K, LAF_PROT_READ | LAF_PROT_WRITE, LAF_MAP_FIXED, &out));
	ASSERT_EQ(touch(a, BASE, 256 * K, 1), 64);
	ASSERT_OK(laf_mm_fork(a, &b));
	ASSERT_OK(laf_machine_nr_mms(m, &nr));
	ASSERT_EQ(nr, 2);
	ASSERT_EQ(touch(b, BASE, 128 * K, 1), 32);	/* 32 COW copies in the child */
	ASSERT_OK(laf_machine_check_invariants(m, msg, sizeof(msg)));
	ASSERT_OK(laf_get_stats(a, &sa));
	ASSERT_OK(laf_get_stats(b, &sb));
	ASSERT_OK(laf_machine_get_stats(m, &ms));
	ASSERT_EQ(ms.min_flt, sa.min_flt + sb.min_flt);
	ASSERT_EQ(ms.faults_wp_copy, 32);
	ASSERT_EQ(ms.mm_anonpages, 128);
	ASSERT_EQ(ms.free_pages, sa.free_pages);
	laf_mm_destroy(b);		/* its events stay in the machine's sums */
	ASSERT_OK(laf_machine_get_stats(m, &ms));
	ASSERT_EQ(ms.faults_wp_copy, 32);
	ASSERT_EQ(ms.mm_anonpages, 64);
	ASSERT_OK(laf_machine_check_invariants(m, msg, sizeof(msg)));
	laf_machine_destroy(m);		/* exits a too */
	return true;
}

/*
 * laf_machine_put(): the owner's release while mms remain (a garbage
 * collector's order) leaves them usable; the last mm frees the machine
 * (ASan: no use after free, no leak).
 */
static bool test_machine_put_before_its_mms(void)
{
	struct laf_config cfg;
	laf_machine *m = NULL, *empty = NULL;
	laf_mm *a = NULL, *b = NULL;
	uint64_t out;
	char msg[256];

	laf_config_default(&cfg);
	cfg.ram_bytes = 64 * M;
	ASSERT_OK(laf_machine_create(&cfg, &empty));
	laf_machine_put(empty);			/* no mm: freed at once */
	ASSERT_OK(laf_machine_create(&cfg, &m));
	ASSERT_OK(laf_mm_create_on(m, &a));
	ASSERT_OK(laf_mmap(a, BASE, 256 * K, LAF_PROT_READ | LAF_PROT_WRITE, LAF_MAP_FIXED, &out));
	ASSERT_EQ(touch(a, BASE, 256 * K, 1), 64);
	ASSERT_OK(laf_mm_fork(a, &b));
	laf_machine_put(m);
	laf_mm_destroy(a);
	ASSERT_EQ(touch(b, BASE, 256 * K, 1), 64);	/* the last owner: reused in place */
	ASSERT_OK(laf_check_invariants(b, msg, sizeof(msg)));
	laf_mm_destroy(b);			/* frees the machine */
	return true;
}

/* ------------------------------------------------------ op streams (ops.c) */

static struct laf_op op_rec(int op, int flags, uint64_t addr, uint64_t len, uint64_t arg,
			    uint64_t arg2)
{
	struct laf_op o;

	memset(&o, 0, sizeof(o));
	o.op = (uint16_t)op;
	o.flags = (uint16_t)flags;
	o.addr = addr;
	o.len = len;
	o.arg = arg;
	o.arg2 = arg2;
	return o;
}

/*
 * A stream gives the state and counters of the same calls made one by one:
 * mmap with no hint, a strided write run relative to it, MADV_DONTNEED of
 * half, the run again, a one-access read, munmap of a quarter.
 */
static bool test_run_ops_same_as_calls(void)
{
	laf_mm *a = mm_small(), *b = mm_small();
	int rw = LAF_PROT_READ | LAF_PROT_WRITE;
	struct laf_ops_result res;
	struct laf_touch_summary s1, s2;
	struct laf_stats sa, sb;
	struct laf_op ops[7];
	uint64_t base;

	ASSERT_TRUE(a && b);
	ASSERT_OK(set_upstream(a, LAF_THP_ALWAYS, 1UL << 4, LAF_THP_NEVER));
	ASSERT_OK(set_upstream(b, LAF_THP_ALWAYS, 1UL << 4, LAF_THP_NEVER));
	ops[0] = op_rec(LAF_OP_MAP, 0, 0, 1 * M, rw, 0);
	ops[1] = op_rec(LAF_OP_TOUCH, LAF_OPF_WRITE | LAF_OPF_RELATIVE, 0, 1 * M, 4 * K, 0);
	ops[2] = op_rec(LAF_OP_MADVISE, LAF_OPF_RELATIVE, 0, 512 * K, LAF_MADV_DONTNEED, 0);
	ops[3] = op_rec(LAF_OP_TOUCH, LAF_OPF_WRITE | LAF_OPF_RELATIVE, 0, 1 * M, 4 * K, 0);
	ops[4] = op_rec(LAF_OP_TOUCH, LAF_OPF_RELATIVE, 600 * K + 8, 1, 1, 0);
	ops[5] = op_rec(LAF_OP_UNMAP, LAF_OPF_RELATIVE, 768 * K, 256 * K, 0, 0);
	/* an offset that wraps past 2^64 from the mapping: refused, nothing done */
	ops[6] = op_rec(LAF_OP_TOUCH, LAF_OPF_RELATIVE, UINT64_MAX, 1, 1, 0);
	ASSERT_OK(laf_run_ops(a, ops, 7, &res));
	ASSERT_EQ(res.done, 7);
	ASSERT_EQ(res.failed, 1);
	ASSERT_EQ(res.first_error, 6);
	ASSERT_EQ(res.errors[LAF_OPS_STEP_RECORD][-LAF_EINVAL], 1);
	ASSERT_EQ(res.touch.accesses, 256 + 256 + 1);
	ASSERT_EQ(res.touch.hits + res.touch.faulted, res.touch.accesses);

	ASSERT_OK(laf_mmap(b, 0, 1 * M, rw, 0, &base));
	ASSERT_EQ(base, res.last_map_addr);
	ASSERT_OK(laf_touch_range(b, base, 1 * M, 4 * K, 1, &s1));
	ASSERT_OK(laf_madvise(b, base, 512 * K, LAF_MADV_DONTNEED));
	ASSERT_OK(laf_touch_range(b, base, 1 * M, 4 * K, 1, &s2));
	ASSERT_EQ(fault(b, base + 600 * K + 8, 0).access, LAF_ACCESS_HIT);
	ASSERT_EQ(res.touch.faulted, s1.faulted + s2.faulted);
	ASSERT_TRUE(s1.faulted < 256);	/* 64K folios: fewer faults than pages */
	ASSERT_OK(laf_munmap(b, base + 768 * K, 256 * K));
	sa = stats(a);
	sb = stats(b);
	ASSERT_TRUE(memcmp(&sa, &sb, sizeof(sa)) == 0);
	return true;
}

/*
 * Every field of a record is untrusted: an unknown op, an mm index other
 * than 0, a run or range that wraps past 2^64, a zero stride, an int field
 * out of range, the reserved ops (LAF_ENOSYS) and an mprotect of nothing
 * (LAF_ENOMEM) are per-record failures,
 * counted by step and errno; the stream goes on, and a failing LAF_OPF_STOP
 * record ends it.
 */
static bool test_run_ops_bad_records(void)
{
	laf_mm *mm = mm_small();
	struct laf_ops_result res;
	struct laf_op ops[16];
	size_t n = 0;

	ASSERT_TRUE(mm);
	ops[n++] = op_rec(999, 0, 0, 0, 0, 0);
	ops[n] = op_rec(LAF_OP_MAP, 0, BASE, 64 * K, LAF_PROT_READ, LAF_MAP_FIXED);
	ops[n++].mm = 1;
	ops[n] = op_rec(LAF_OP_TOUCH, 0, BASE, 4 * K, 4 * K, 0);
	ops[n++].mm = UINT32_MAX;
	ops[n++] = op_rec(LAF_OP_TOUCH, LAF_OPF_WRITE, UINT64_MAX - 8, 4 * K, 4 * K, 0);
	ops[n++] = op_rec(LAF_OP_TOUCH, 0, BASE, 4 * K, 0, 0);
	ops[n++] = op_rec(LAF_OP_MAP, 0, BASE, 64 * K, 1ULL << 40, LAF_MAP_FIXED);
	ops[n++] = op_rec(LAF_OP_MAP, 0, BASE, UINT64_MAX, LAF_PROT_READ, LAF_MAP_FIXED);
	ops[n++] = op_rec(LAF_OP_POPULATE, 0, UINT64_MAX - 4 * K + 1, 8 * K, 0, 0);
	ops[n++] = op_rec(LAF_OP_MADVISE, 0, 0, UINT64_MAX, LAF_MADV_DONTNEED, 0);
	ops[n++] = op_rec(LAF_OP_MOVE_PAGES, 0, UINT64_MAX - 4 * K + 1, 8 * K, 0, 0);
	ops[n++] = op_rec(LAF_OP_PROTECT, 0, BASE, 4 * K, LAF_PROT_READ, 0);
	ops[n++] = op_rec(LAF_OP_REMAP, 0, BASE, 4 * K, 0, 0);
	ops[n++] = op_rec(LAF_OP_FORK, 0, 0, 0, 0, 0);
	ops[n++] = op_rec(LAF_OP_EXIT, 0, 0, 0, 0, 0);
	ops[n++] = op_rec(LAF_OP_TOUCH, LAF_OPF_RELATIVE, UINT64_MAX - 1, 1, 1, 0);
	ASSERT_EQ(n, 15);
	ASSERT_OK(laf_run_ops(mm, ops, n, &res));
	ASSERT_EQ(res.done, n);
	ASSERT_EQ(res.failed, n - 1);	/* the RELATIVE touch: last_map_addr is 0, a SIGSEGV */
	ASSERT_EQ(res.first_error, 0);
	ASSERT_EQ(res.first_errno, LAF_EINVAL);
	ASSERT_EQ(res.errors[LAF_OPS_STEP_RECORD][-LAF_EINVAL], 4); /* op, 2 mm, populate */
	ASSERT_EQ(res.errors[LAF_OP_MOVE_PAGES][-LAF_EINVAL], 1);
	ASSERT_EQ(res.errors[LAF_OPS_STEP_RECORD][-LAF_ENOSYS], 2);
	ASSERT_EQ(res.errors[LAF_OP_REMAP][-LAF_EINVAL], 1);	/* new_len 0 */
	ASSERT_EQ(res.errors[LAF_OP_PROTECT][-LAF_ENOMEM], 1);	/* no VMA there */
	ASSERT_EQ(res.errors[LAF_OP_TOUCH][-LAF_EINVAL], 2);
	ASSERT_EQ(res.errors[LAF_OP_MAP][-LAF_EINVAL], 1);
	ASSERT_EQ(res.errors[LAF_OP_MAP][-LAF_ENOMEM], 1);
	ASSERT_EQ(res.errors[LAF_OP_MADVISE][-LAF_EINVAL], 1);
	ASSERT_EQ(res.touch.accesses, 1);
	ASSERT_EQ(res.touch.sigsegv, 1);
	ASSERT_EQ(res.touch.first_error, 14);
	ASSERT_EQ(stats(mm).nr_vmas, 0);

	/* LAF_OPF_QUIET: not counted; LAF_OPF_STOP: the stream ends there */
	ops[0] = op_rec(LAF_OP_UNMAP, LAF_OPF_QUIET, 1, 4 * K, 0, 0);
	ops[1] = op_rec(LAF_OP_MAP, LAF_OPF_STOP, BASE, 64 * K, LAF_PROT_READ | LAF_PROT_WRITE,
			LAF_MAP_FIXED);
	ops[2] = op_rec(LAF_OP_MAP, LAF_OPF_STOP, BASE, 64 * K, LAF_PROT_READ, LAF_MAP_FIXED);
	ops[3] = op_rec(LAF_OP_TOUCH, LAF_OPF_WRITE, BASE, 64 * K, 4 * K, 0);
	ASSERT_OK(laf_run_ops(mm, ops, 4, &res));
	ASSERT_EQ(res.done, 3);
	ASSERT_EQ(res.failed, 1);
	ASSERT_EQ(res.first_error, 2);
	ASSERT_EQ(res.first_errno, LAF_EEXIST);
	ASSERT_EQ(res.stopped, 1);
	ASSERT_EQ(res.errors[LAF_OP_UNMAP][-LAF_EINVAL], 0);
	ASSERT_EQ(res.touch.accesses, 0);

	ASSERT_EQ(laf_run_ops(mm, ops, 1, NULL), LAF_EINVAL);
	ASSERT_EQ(laf_run_ops(mm, NULL, 1, &res), LAF_EINVAL);
	ASSERT_OK(laf_run_ops(mm, NULL, 0, &res));
	ASSERT_EQ(res.done, 0);
	return true;
}

/*
 * LAF_OP_MOVE_PAGES then LAF_OP_MAP with LAF_OPF_MOVED: folio pages come
 * back as order-0 pages and zero-page pages as zero-page PTEs at the
 * target, populated (no faults); LAF_OP_UNMAP with LAF_OPF_ALL empties
 * the address space.
 */
static bool test_run_ops_move_pages(void)
{
	laf_mm *mm = mm_small();
	int rw = LAF_PROT_READ | LAF_PROT_WRITE;
	uint64_t to = BASE + 16 * M, faults, ptes[16];
	struct laf_ops_result res;
	struct laf_op ops[8];
	int8_t orders[16];

	ASSERT_TRUE(mm);
	ops[0] = op_rec(LAF_OP_MAP, 0, BASE, 64 * K, rw, LAF_MAP_FIXED);
	ops[1] = op_rec(LAF_OP_TOUCH, LAF_OPF_WRITE, BASE + 4 * K, 8 * K, 4 * K, 0);
	ops[2] = op_rec(LAF_OP_TOUCH, 0, BASE + 40 * K, 1, 1, 0);
	ops[3] = op_rec(LAF_OP_MOVE_PAGES, 0, BASE, 64 * K, to, 0);
	ops[4] = op_rec(LAF_OP_UNMAP, 0, BASE, 64 * K, 0, 0);
	ops[5] = op_rec(LAF_OP_MAP, LAF_OPF_MOVED | LAF_OPF_REPLACE, to, 64 * K, rw, LAF_MAP_FIXED);
	ASSERT_OK(laf_run_ops(mm, ops, 6, &res));
	ASSERT_EQ(res.failed, 0);
	faults = stats(mm).faults;
	ASSERT_EQ(faults, 3);
	ASSERT_OK(laf_read_ptes(mm, to, 16, ptes, orders));
	ASSERT_EQ(orders[0], LAF_ORDER_NONE);
	ASSERT_EQ(orders[1], 0);
	ASSERT_EQ(orders[2], 0);
	ASSERT_EQ(orders[3], LAF_ORDER_NONE);
	ASSERT_EQ(orders[10], LAF_ORDER_ZERO);
	ASSERT_EQ(stats(mm).mm_anonpages, 2);
	ops[0] = op_rec(LAF_OP_UNMAP, LAF_OPF_ALL, 0, 0, 0, 0);
	ASSERT_OK(laf_run_ops(mm, ops, 1, &res));
	ASSERT_EQ(res.failed, 0);
	ASSERT_EQ(stats(mm).nr_vmas, 0);
	ASSERT_EQ(stats(mm).mm_anonpages, 0);
	return true;
}

/* ------------------------------------------------------------ mremap */

/*
 * mremap() argument rules (mm/mremap.c check_mremap_params(),
 * check_prep_vma()): EINVAL, EFAULT, ENOMEM; nothing changes on an error.
 */
static bool test_mremap_errors(void)
{
	laf_mm *mm = mm_small();
	uint64_t a, b, out = 0;

	ASSERT_TRUE(mm);
	a = map_fixed(mm, BASE, 64 * K);
	b = map_fixed(mm, BASE + 64 * K, 64 * K);
	ASSERT_TRUE(a && b);
	ASSERT_EQ(laf_mremap(mm, a + 1, 4 * K, 8 * K, 0, 0, &out), LAF_EINVAL);
	ASSERT_EQ(laf_mremap(mm, a, 4 * K, 0, 0, 0, &out), LAF_EINVAL);
	ASSERT_EQ(laf_mremap(mm, a, 4 * K, 4 * K, 0x8, 0, &out), LAF_EINVAL);
	ASSERT_EQ(laf_mremap(mm, a, 4 * K, 4 * K, LAF_MREMAP_FIXED, BASE + M, &out), LAF_EINVAL);
	ASSERT_EQ(laf_mremap(mm, a, 4 * K, 8 * K, LAF_MREMAP_MAYMOVE | LAF_MREMAP_DONTUNMAP,
			     BASE + M, &out), LAF_EINVAL);
	ASSERT_EQ(laf_mremap(mm, a, 8 * K, 8 * K, LAF_MREMAP_MAYMOVE | LAF_MREMAP_FIXED, a + 4 * K,
			     &out), LAF_EINVAL);	/* overlap */
	ASSERT_EQ(laf_mremap(mm, BASE + M, 4 * K, 8 * K, LAF_MREMAP_MAYMOVE, 0, &out), LAF_EFAULT);
	ASSERT_EQ(laf_mremap(mm, a, 0, 8 * K, LAF_MREMAP_MAYMOVE, 0, &out), LAF_EINVAL);
	ASSERT_EQ(laf_mremap(mm, a, 256 * K, 512 * K, LAF_MREMAP_MAYMOVE, 0, &out), LAF_EFAULT);
	/* grow blocked by b, no MAYMOVE */
	ASSERT_EQ(laf_mremap(mm, a, 64 * K, 128 * K, 0, 0, &out), LAF_ENOMEM);
	ASSERT_EQ(laf_mremap(mm, a, 64 * K, 64 * K, 0, 0, NULL), LAF_EINVAL);
	ASSERT_EQ(nr_vmas(mm), 1);	/* a and b merged at mmap */
	/* same size: the address back, nothing done */
	ASSERT_OK(laf_mremap(mm, a, 64 * K, 64 * K, 0, 0, &out));
	ASSERT_EQ(out, a);
	return true;
}

/*
 * A move to an address that is not aligned to the folios' size: folios keep
 * their order, PFNs and folio->index; RSS and fault counts do not change; a
 * fault next to them allocates what fits around them (alloc_anon_folio()
 * looks at naturally aligned blocks, so order 0 beside a moved 64K folio).
 *   before: FFFFFFFFFFFFFFFF at BASE (one 64K folio)
 *   after:  .FFFFFFFFFFFFFFFF at to - 4K, then a grow in place and a fault.
 */
static bool test_mremap_move_unaligned(void)
{
	laf_mm *mm = mm_small();
	uint64_t a, to = BASE + 16 * M + 4 * K, out = 0, pfn0, faults;
	struct laf_folio_info fi, fi2;
	struct laf_stats s;

	ASSERT_TRUE(mm);
	ASSERT_OK(set_upstream(mm, LAF_THP_NEVER, 1UL << 4, LAF_THP_NEVER));
	a = map_fixed(mm, BASE, 64 * K);
	ASSERT_EQ(touch(mm, a, 64 * K, 1), 1);
	ASSERT_OK(laf_lookup(mm, a, NULL, &fi));
	ASSERT_EQ(fi.order, 4);
	pfn0 = fi.head_pfn;
	s = stats(mm);
	faults = s.faults;
	ASSERT_OK(laf_mremap(mm, a, 64 * K, 64 * K, LAF_MREMAP_MAYMOVE | LAF_MREMAP_FIXED, to, &out));
	ASSERT_EQ(out, to);
	ASSERT_EQ(nr_vmas(mm), 1);
	ASSERT_OK(laf_lookup(mm, to + 60 * K, NULL, &fi2));
	ASSERT_EQ(fi2.order, 4);
	ASSERT_EQ(fi2.head_pfn, pfn0);
	ASSERT_EQ(fi2.index, BASE >> 12);	/* the VMA kept its vm_pgoff */
	ASSERT_EQ(stats(mm).mm_anonpages, 16);
	ASSERT_EQ(stats(mm).faults, faults);
	ASSERT_EQ(touch(mm, to, 64 * K, 1), 0);	/* all there, writable */
	/* grow in place, then fault right after the moved folio */
	ASSERT_OK(laf_mremap(mm, to, 64 * K, 256 * K, 0, 0, &out));
	ASSERT_EQ(out, to);
	ASSERT_EQ(fault(mm, to + 64 * K, 1).access, LAF_ACCESS_FAULT);
	ASSERT_EQ(folio_order_at(mm, to + 64 * K), 0);
	/* the next aligned 64K block is free: order 4 again */
	ASSERT_EQ(fault(mm, to + 124 * K, 1).access, LAF_ACCESS_FAULT);
	ASSERT_EQ(folio_order_at(mm, to + 124 * K), 4);
	/* shrink through the moved folio: partially mapped, deferred split */
	ASSERT_OK(laf_mremap(mm, to, 256 * K, 32 * K, 0, 0, &out));
	s = stats(mm);
	ASSERT_EQ(s.mm_anonpages, 8);
	ASSERT_EQ(s.nr_anon_partially_mapped[4], 1);
	ASSERT_EQ(s.deferred_split_queue, 1);
	ASSERT_EQ(laf_shrink_deferred_split(mm, NULL), 0);
	ASSERT_EQ(stats(mm).nr_anon[4], 0);
	ASSERT_EQ(stats(mm).mm_anonpages, 8);
	return true;
}

/*
 * PMD THPs: a move between PMD-aligned addresses keeps the huge PMD
 * (move_huge_pmd()); a move by less than a PMD splits it into PTEs of the
 * same order-9 folio (the folio is not split).
 */
static bool test_mremap_pmd(void)
{
	laf_mm *mm = mm_small();
	uint64_t a, to = BASE + 64 * M, out = 0;
	struct laf_stats s;

	ASSERT_TRUE(mm);
	ASSERT_OK(set_upstream(mm, LAF_THP_ALWAYS, 0, LAF_THP_INHERIT));
	a = map_fixed(mm, BASE, 2 * M);
	ASSERT_EQ(touch(mm, a, 2 * M, 1), 1);
	ASSERT_STREQ(pte_picture(mm, a, 4), "HHHH");
	ASSERT_OK(laf_mremap(mm, a, 2 * M, 2 * M, LAF_MREMAP_MAYMOVE | LAF_MREMAP_FIXED, to, &out));
	ASSERT_STREQ(pte_picture(mm, to, 4), "HHHH");
	s = stats(mm);
	ASSERT_EQ(s.thp_split_pmd, 0);
	ASSERT_EQ(s.mm_anonpages, 512);
	ASSERT_OK(laf_mremap(mm, to, 2 * M, 2 * M, LAF_MREMAP_MAYMOVE | LAF_MREMAP_FIXED,
			     to + 4 * M + 8 * K, &out));
	ASSERT_EQ(stats(mm).thp_split_pmd, 1);
	ASSERT_STREQ(pte_picture(mm, out, 4), "FFFF");
	ASSERT_EQ(folio_order_at(mm, out + 2 * M - 4 * K), 9);
	ASSERT_EQ(stats(mm).mm_anonpages, 512);
	/* a write into the moved, PTE-mapped THP reuses it (exclusive) */
	ASSERT_EQ(touch(mm, out, 2 * M, 1), 0);
	return true;
}

/*
 * MREMAP_DONTUNMAP: the pages move, the source VMA stays (empty) and,
 * wholly moved, loses its anon_vma (dontunmap_complete()); a fault there is
 * a fresh zero-fill.
 */
static bool test_mremap_dontunmap(void)
{
	laf_mm *mm = mm_small();
	uint64_t a, to = BASE + 16 * M, out = 0;
	struct laf_vma_info v[4];
	size_t n = 0;

	ASSERT_TRUE(mm);
	a = map_fixed(mm, BASE, 16 * K);
	ASSERT_EQ(touch(mm, a, 16 * K, 1), 4);
	ASSERT_OK(laf_mremap(mm, a, 16 * K, 16 * K,
			     LAF_MREMAP_MAYMOVE | LAF_MREMAP_FIXED | LAF_MREMAP_DONTUNMAP, to, &out));
	ASSERT_OK(laf_get_vmas(mm, v, 4, &n));
	ASSERT_EQ(n, 2);
	ASSERT_EQ(v[0].start, a);
	ASSERT_EQ(v[0].anon_vma, 0);
	ASSERT_TRUE(v[1].anon_vma != 0);
	ASSERT_STREQ(pte_picture(mm, a, 4), "....");
	ASSERT_STREQ(pte_picture(mm, to, 4), "pppp");
	ASSERT_EQ(touch(mm, a, 4 * K, 1), 1);
	ASSERT_EQ(stats(mm).mm_anonpages, 5);
	return true;
}

/* LAF_OP_REMAP in an op stream: the same state as the calls one by one */
static bool test_run_ops_remap(void)
{
	laf_mm *mm = mm_small();
	int rw = LAF_PROT_READ | LAF_PROT_WRITE;
	uint64_t to = BASE + 16 * M + 4 * K;
	struct laf_ops_result res;
	struct laf_op ops[4];

	ASSERT_TRUE(mm);
	ASSERT_OK(set_upstream(mm, LAF_THP_NEVER, 1UL << 4, LAF_THP_NEVER));
	ops[0] = op_rec(LAF_OP_MAP, 0, BASE, 64 * K, rw, LAF_MAP_FIXED);
	ops[1] = op_rec(LAF_OP_TOUCH, LAF_OPF_WRITE, BASE, 64 * K, 4 * K, 0);
	ops[2] = op_rec(LAF_OP_REMAP, (LAF_MREMAP_MAYMOVE | LAF_MREMAP_FIXED) << LAF_OPF_MREMAP_SHIFT,
			BASE, 64 * K, 128 * K, to);
	ops[3] = op_rec(LAF_OP_TOUCH, LAF_OPF_WRITE | LAF_OPF_RELATIVE, 64 * K, 64 * K, 4 * K, 0);
	ASSERT_OK(laf_run_ops(mm, ops, 4, &res));
	ASSERT_EQ(res.failed, 0);
	ASSERT_EQ(res.last_map_addr, to);
	ASSERT_EQ(folio_order_at(mm, to), 4);
	ASSERT_EQ(stats(mm).mm_anonpages, 32);
	ops[0] = op_rec(LAF_OP_REMAP, 0, BASE, 4 * K, 8 * K, 0);	/* nothing there now */
	ASSERT_OK(laf_run_ops(mm, ops, 1, &res));
	ASSERT_EQ(res.errors[LAF_OP_REMAP][14], 1);
	return true;
}

typedef bool (*test_fn)(void);

/* ------------------------------------------------ VMA tree, max_map_count */

/*
 * The VMA tree (vma.c) at scale: 20,000 one-page VMAs that cannot merge,
 * random unmaps and refills; laf_check_invariants() runs validate_mm() (list,
 * tree order, AVL balance, rb_subtree_gap, map_count).
 */
static bool test_vma_tree_many(void)
{
	laf_mm *mm = mm_small();
	uint64_t *addrs, a, x = 88172645463325252ULL;
	int i;

	ASSERT_TRUE(mm);
	addrs = calloc(20000, sizeof(*addrs));
	ASSERT_TRUE(addrs);
	for (i = 0; i < 20000; i++) {
		if (laf_mmap(mm, 0, 4096, i % 2 ? LAF_PROT_READ | LAF_PROT_WRITE : LAF_PROT_READ, 0,
			     &addrs[i])) {
			free(addrs);
			ASSERT_TRUE(0);
		}
	}
	for (i = 0; i < 4000; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		a = addrs[x % 20000];
		if (laf_munmap(mm, a, 4096) || laf_mmap(mm, a, 4096, LAF_PROT_READ, LAF_MAP_FIXED, &a)) {
			free(addrs);
			ASSERT_TRUE(0);
		}
		if (i % 1000 == 0 && laf_check_invariants(mm, NULL, 0)) {
			free(addrs);
			ASSERT_TRUE(0);
		}
	}
	free(addrs);
	ASSERT_OK(laf_check_invariants(mm, NULL, 0));
	return true;
}

/*
 * vm.max_map_count: do_mmap() refuses at map_count > max (so max + 1 VMAs
 * fit); munmap of the middle of a VMA and a madvise split refuse at
 * map_count >= max (-ENOMEM, madvise -EAGAIN).
 */
static bool test_max_map_count(void)
{
	struct laf_config cfg;
	laf_mm *mm = NULL;
	uint64_t big, a;

	laf_config_default(&cfg);
	ASSERT_EQ(cfg.max_map_count, LAF_DEFAULT_MAX_MAP_COUNT);
	cfg.ram_bytes = 64 * M;
	cfg.max_map_count = 2;
	ASSERT_OK(laf_mm_create(&cfg, &mm));
	live[nr_live++] = mm;
	ASSERT_OK(laf_mmap(mm, 0, 16 * 4096, LAF_PROT_READ | LAF_PROT_WRITE, 0, &big));
	ASSERT_OK(laf_mmap(mm, 0, 4096, LAF_PROT_READ, 0, &a));
	ASSERT_EQ(nr_vmas(mm), 2);
	ASSERT_EQ(laf_munmap(mm, big + 4 * 4096, 4096), LAF_ENOMEM);
	ASSERT_EQ(laf_madvise(mm, big + 4 * 4096, 4096, LAF_MADV_HUGEPAGE), LAF_EAGAIN);
	ASSERT_EQ(laf_uffd_register(mm, big + 15 * 4096, 4096, LAF_UFFDIO_REGISTER_MODE_MISSING),
		  LAF_ENOMEM);
	ASSERT_OK(laf_madvise(mm, big + 4 * 4096, 4096, LAF_MADV_DONTNEED));
	ASSERT_OK(laf_mmap(mm, 0, 4096, 0, 0, &a));	/* 2 > 2 is false: a third VMA */
	ASSERT_EQ(nr_vmas(mm), 3);
	ASSERT_EQ(laf_mmap(mm, 0, 4096, LAF_PROT_READ, 0, &a), LAF_ENOMEM);
	ASSERT_OK(laf_munmap(mm, big, 4096));		/* an edge: no new VMA */
	cfg.max_map_count = 0x80000000u;
	ASSERT_EQ(laf_mm_create(&cfg, &mm), LAF_EINVAL);
	return true;
}


/* the raw PTE (or PMD leaf) at @addr, 0 if none */
static uint64_t pte_at(laf_mm *mm, uint64_t addr)
{
	uint64_t pte = 0;
	int8_t order;

	if (laf_read_ptes(mm, addr, 1, &pte, &order))
		return ~0ULL;
	return pte;
}

/*
 * mm/mprotect.c do_mprotect_pkey(): unaligned start -EINVAL, len 0 is 0,
 * a wrapping range -ENOMEM, unknown prot bits -EINVAL (after the range
 * checks), no VMA at start -ENOMEM, a hole -ENOMEM after the VMAs below it
 * were changed (no rollback).
 */
static bool test_mprotect_args(void)
{
	laf_mm *mm = mm_small();
	struct laf_vma_info v[4];
	size_t n;

	ASSERT_TRUE(mm);
	ASSERT_EQ(map_fixed(mm, BASE, 64 * K), BASE);
	ASSERT_EQ(map_fixed(mm, BASE + 128 * K, 64 * K), BASE + 128 * K);
	ASSERT_EQ(laf_mprotect(mm, BASE + 1, 4 * K, LAF_PROT_READ), LAF_EINVAL);
	ASSERT_EQ(laf_mprotect(mm, BASE + 1, 0, 0x40), LAF_EINVAL);	/* alignment first */
	ASSERT_OK(laf_mprotect(mm, BASE, 0, 0x40));			/* len 0: nothing checked */
	ASSERT_EQ(laf_mprotect(mm, BASE, UINT64_MAX, 0x40), LAF_ENOMEM);	/* wraps before prot */
	ASSERT_EQ(laf_mprotect(mm, BASE, 4 * K, 0x40), LAF_EINVAL);
	ASSERT_EQ(laf_mprotect(mm, BASE - 4 * K, 8 * K, LAF_PROT_READ), LAF_ENOMEM);
	ASSERT_EQ(laf_mprotect(mm, BASE + 64 * K, 4 * K, LAF_PROT_READ), LAF_ENOMEM);
	ASSERT_EQ(laf_mprotect(mm, BASE, 192 * K, LAF_PROT_READ), LAF_ENOMEM);	/* the hole */
	ASSERT_OK(laf_get_vmas(mm, v, 4, &n));
	ASSERT_EQ(n, 2);
	ASSERT_EQ(v[0].vm_flags, LAF_VM_READ);	/* changed before the hole; VM_ACCOUNT not shown */
	ASSERT_EQ(v[1].vm_flags, LAF_VM_READ | LAF_VM_WRITE);	/* after it: untouched */
	ASSERT_OK(laf_mprotect(mm, BASE + 128 * K, 1, LAF_PROT_READ | LAF_PROT_EXEC));
	ASSERT_OK(laf_get_vmas(mm, v, 4, &n));
	ASSERT_EQ(n, 3);
	ASSERT_EQ(v[1].vm_flags, LAF_VM_READ | LAF_VM_EXEC);
	return true;
}

/*
 * mprotect_fixup() -> vma_modify_flags(): the middle of a VMA splits it in
 * three; the same protection back merges them again (VM_ACCOUNT kept, as
 * the VMA has an anon_vma).  A read-only mapping that never had an
 * anon_vma loses VM_ACCOUNT, so it does not merge with one that kept it.
 */
static bool test_mprotect_split_merge(void)
{
	laf_mm *mm = mm_small();
	struct laf_vma_info v[4];
	size_t n;
	uint64_t b;

	ASSERT_TRUE(mm);
	ASSERT_EQ(map_fixed(mm, BASE, 64 * K), BASE);
	ASSERT_EQ(fault(mm, BASE, 1).access, LAF_ACCESS_FAULT);	/* anon_vma */
	ASSERT_OK(laf_mprotect(mm, BASE + 16 * K, 16 * K, LAF_PROT_READ));
	ASSERT_EQ(nr_vmas(mm), 3);
	ASSERT_OK(laf_mprotect(mm, BASE + 16 * K, 16 * K, LAF_PROT_READ | LAF_PROT_WRITE));
	ASSERT_EQ(nr_vmas(mm), 1);
	/* [BASE, +64K) read-only keeps VM_ACCOUNT (anon_vma); a fresh "r" mapping above has none */
	ASSERT_OK(laf_mprotect(mm, BASE, 64 * K, LAF_PROT_READ));
	ASSERT_OK(laf_mmap(mm, BASE + 64 * K, 64 * K, LAF_PROT_READ, LAF_MAP_FIXED, &b));
	ASSERT_EQ(nr_vmas(mm), 2);
	ASSERT_OK(laf_get_vmas(mm, v, 4, &n));
	ASSERT_EQ(v[0].vm_flags, v[1].vm_flags);	/* equal as reported: VM_ACCOUNT is internal */
	/* writable then read-only again without an anon_vma: VM_ACCOUNT dropped, merges */
	ASSERT_OK(laf_mprotect(mm, BASE + 64 * K, 64 * K, LAF_PROT_READ | LAF_PROT_WRITE));
	ASSERT_OK(laf_mprotect(mm, BASE + 64 * K, 64 * K, LAF_PROT_READ));
	ASSERT_EQ(nr_vmas(mm), 2);
	ASSERT_OK(laf_mprotect(mm, BASE, 128 * K, LAF_PROT_READ | LAF_PROT_WRITE));
	ASSERT_EQ(nr_vmas(mm), 1);
	return true;
}

/*
 * PROT_NONE: pte_protnone() entries; any access is a SIGSEGV before
 * handle_mm_fault() (counted in faults_sigsegv, not in pgfault).  With write
 * permission back, MM_CP_TRY_CHANGE_WRITABLE makes the exclusive pages
 * writable again: the next write is a hit.  A zero-page PTE stays read-only.
 */
static bool test_mprotect_protnone(void)
{
	laf_mm *mm = mm_small();
	struct laf_stats s0, s1;
	uint64_t pte;

	ASSERT_TRUE(mm);
	ASSERT_EQ(map_fixed(mm, BASE, 64 * K), BASE);
	ASSERT_EQ(touch(mm, BASE, 32 * K, 1), 8);
	ASSERT_EQ(fault(mm, BASE + 32 * K, 0).access, LAF_ACCESS_FAULT);	/* zero page */
	ASSERT_OK(laf_mprotect(mm, BASE, 64 * K, LAF_PROT_NONE));
	pte = pte_at(mm, BASE);
	ASSERT_TRUE(pte & LAF_PTE_PRESENT);
	ASSERT_TRUE(pte & LAF_PTE_PROTNONE);
	ASSERT_FALSE(pte & LAF_PTE_WRITE);
	s0 = stats(mm);
	ASSERT_EQ(fault(mm, BASE, 0).access, LAF_ACCESS_SIGSEGV);
	ASSERT_EQ(fault(mm, BASE + 48 * K, 1).access, LAF_ACCESS_SIGSEGV);
	s1 = stats(mm);
	ASSERT_EQ(s1.faults_sigsegv - s0.faults_sigsegv, 2);
	ASSERT_EQ(s1.pgfault, s0.pgfault);
	ASSERT_OK(laf_check_invariants(mm, NULL, 0));
	ASSERT_OK(laf_mprotect(mm, BASE, 64 * K, LAF_PROT_READ));
	ASSERT_EQ(fault(mm, BASE, 0).access, LAF_ACCESS_HIT);
	ASSERT_EQ(fault(mm, BASE, 1).access, LAF_ACCESS_SIGSEGV);
	ASSERT_OK(laf_mprotect(mm, BASE, 64 * K, LAF_PROT_READ | LAF_PROT_WRITE));
	pte = pte_at(mm, BASE);
	ASSERT_TRUE(pte & LAF_PTE_WRITE);
	ASSERT_FALSE(pte & LAF_PTE_PROTNONE);
	ASSERT_FALSE(pte_at(mm, BASE + 32 * K) & LAF_PTE_WRITE);	/* the zero page */
	s0 = stats(mm);
	ASSERT_EQ(fault(mm, BASE + 4 * K, 1).access, LAF_ACCESS_HIT);
	ASSERT_EQ(fault(mm, BASE + 32 * K, 1).access, LAF_ACCESS_FAULT);	/* wp copy of the zero page */
	s1 = stats(mm);
	ASSERT_EQ(s1.faults_wp - s0.faults_wp, 1);
	return true;
}

/*
 * After fork the pages are shared (not PageAnonExclusive): read-only and
 * back to read-write leaves them write-protected (can_change_pte_writable()
 * fails), so the next write is a do_wp_page() copy; in the child too.
 */
static bool test_mprotect_after_fork(void)
{
	laf_mm *mm = mm_small(), *child;
	struct laf_stats s0, s1;

	ASSERT_TRUE(mm);
	ASSERT_EQ(map_fixed(mm, BASE, 64 * K), BASE);
	ASSERT_EQ(touch(mm, BASE, 64 * K, 1), 16);
	child = fork_of(mm);
	ASSERT_TRUE(child);
	ASSERT_OK(laf_mprotect(mm, BASE, 64 * K, LAF_PROT_READ));
	ASSERT_OK(laf_mprotect(mm, BASE, 64 * K, LAF_PROT_READ | LAF_PROT_WRITE));
	ASSERT_FALSE(pte_at(mm, BASE) & LAF_PTE_WRITE);
	s0 = stats(mm);
	ASSERT_EQ(fault(mm, BASE, 1).access, LAF_ACCESS_FAULT);
	s1 = stats(mm);
	ASSERT_EQ(s1.faults_wp_copy - s0.faults_wp_copy, 1);
	/* the page just copied is exclusive: read-only and back makes it writable */
	ASSERT_OK(laf_mprotect(mm, BASE, 8 * K, LAF_PROT_READ));
	ASSERT_OK(laf_mprotect(mm, BASE, 8 * K, LAF_PROT_READ | LAF_PROT_WRITE));
	ASSERT_TRUE(pte_at(mm, BASE) & LAF_PTE_WRITE);
	ASSERT_FALSE(pte_at(mm, BASE + 4 * K) & LAF_PTE_WRITE);
	ASSERT_OK(laf_check_invariants(child, NULL, 0));
	return true;
}

/*
 * A PMD the range covers whole: change_huge_pmd() in place (no split), the
 * write bit back through can_change_pmd_writable(); a range inside the PMD
 * splits it at the VMA split (vma_adjust_trans_huge()).
 */
static bool test_mprotect_pmd(void)
{
	laf_mm *mm = mm_small();
	uint64_t a = 0;

	ASSERT_TRUE(mm);
	ASSERT_OK(set_upstream(mm, LAF_THP_ALWAYS, 0, LAF_THP_INHERIT));
	ASSERT_OK(laf_mmap(mm, 0, 4 * M, LAF_PROT_READ | LAF_PROT_WRITE, 0, &a));
	ASSERT_EQ(fault(mm, a, 1).access, LAF_ACCESS_FAULT);
	ASSERT_TRUE(pte_at(mm, a) & LAF_PTE_HUGE);
	ASSERT_OK(laf_mprotect(mm, a, 2 * M, LAF_PROT_READ));
	ASSERT_TRUE(pte_at(mm, a) & LAF_PTE_HUGE);
	ASSERT_FALSE(pte_at(mm, a) & LAF_PTE_WRITE);
	ASSERT_EQ(fault(mm, a + 4 * K, 1).access, LAF_ACCESS_SIGSEGV);
	ASSERT_OK(laf_mprotect(mm, a, 2 * M, LAF_PROT_NONE));
	ASSERT_TRUE(pte_at(mm, a) & LAF_PTE_PROTNONE);
	ASSERT_OK(laf_check_invariants(mm, NULL, 0));
	ASSERT_OK(laf_mprotect(mm, a, 2 * M, LAF_PROT_READ | LAF_PROT_WRITE));
	ASSERT_TRUE(pte_at(mm, a) & LAF_PTE_WRITE);
	ASSERT_EQ(fault(mm, a + 4 * K, 1).access, LAF_ACCESS_HIT);
	ASSERT_EQ(stats(mm).thp_split_pmd, 0);
	ASSERT_OK(laf_mprotect(mm, a + 64 * K, 64 * K, LAF_PROT_NONE));
	ASSERT_EQ(stats(mm).thp_split_pmd, 1);
	ASSERT_TRUE(pte_at(mm, a + 64 * K) & LAF_PTE_PROTNONE);
	ASSERT_TRUE(pte_at(mm, a) & LAF_PTE_WRITE);
	ASSERT_FALSE(pte_at(mm, a) & LAF_PTE_PROTNONE);
	ASSERT_EQ(fault(mm, a + 64 * K, 0).access, LAF_ACCESS_SIGSEGV);
	ASSERT_OK(laf_check_invariants(mm, NULL, 0));
	return true;
}

/*
 * arm64: a range that covers a contpte block in part unfolds it
 * (modify_prot_start_ptes()); a batch over the whole folio refolds it
 * (prot_commit_flush_ptes() -> contpte_set_ptes()).
 */
static bool test_mprotect_contpte(void)
{
	laf_mm *mm = mm_new(LAF_PAGE_SHIFT_4K, LAF_ARCH_ARM64, 64 * M, LAF_MEMCG_UNLIMITED);
	struct laf_stats s0;

	ASSERT_TRUE(mm);
	ASSERT_OK(set_upstream(mm, LAF_THP_NEVER, 1UL << 4, LAF_THP_NEVER));
	ASSERT_EQ(map_fixed(mm, BASE, 128 * K), BASE);
	ASSERT_EQ(fault(mm, BASE, 1).access, LAF_ACCESS_FAULT);
	ASSERT_STREQ(pte_picture(mm, BASE, 16), "CCCCCCCCCCCCCCCC");
	s0 = stats(mm);
	ASSERT_OK(laf_mprotect(mm, BASE, 128 * K, LAF_PROT_READ));
	ASSERT_STREQ(pte_picture(mm, BASE, 16), "CCCCCCCCCCCCCCCC");
	ASSERT_EQ(stats(mm).contpte_unfolds, s0.contpte_unfolds);
	ASSERT_OK(laf_mprotect(mm, BASE + 8 * K, 8 * K, LAF_PROT_NONE));
	ASSERT_EQ(stats(mm).contpte_unfolds, s0.contpte_unfolds + 1);
	ASSERT_STREQ(pte_picture(mm, BASE, 16), "FFFFFFFFFFFFFFFF");
	ASSERT_OK(laf_check_invariants(mm, NULL, 0));
	/* three VMAs, three change_protection() calls: no batch covers the block */
	ASSERT_OK(laf_mprotect(mm, BASE, 128 * K, LAF_PROT_READ | LAF_PROT_WRITE));
	ASSERT_STREQ(pte_picture(mm, BASE, 16), "FFFFFFFFFFFFFFFF");
	ASSERT_TRUE(pte_at(mm, BASE + 8 * K) & LAF_PTE_WRITE);
	/* one VMA again: the whole folio is one batch, contpte_set_ptes() refolds */
	ASSERT_OK(laf_mprotect(mm, BASE, 128 * K, LAF_PROT_READ));
	ASSERT_STREQ(pte_picture(mm, BASE, 16), "CCCCCCCCCCCCCCCC");
	ASSERT_OK(laf_check_invariants(mm, NULL, 0));
	return true;
}

/* vm.max_map_count: a split that would pass it is -ENOMEM (split_vma()) */
static bool test_mprotect_max_map_count(void)
{
	struct laf_config cfg;
	laf_mm *mm = NULL;

	laf_config_default(&cfg);
	cfg.ram_bytes = 64 * M;
	cfg.max_map_count = 2;
	ASSERT_OK(laf_mm_create(&cfg, &mm));
	live[nr_live++] = mm;
	ASSERT_EQ(map_fixed(mm, BASE, 64 * K), BASE);
	ASSERT_EQ(laf_mprotect(mm, BASE + 16 * K, 16 * K, LAF_PROT_READ), LAF_ENOMEM);
	ASSERT_EQ(nr_vmas(mm), 1);
	ASSERT_OK(laf_mprotect(mm, BASE, 16 * K, LAF_PROT_READ));	/* one split: 1 < 2 */
	ASSERT_EQ(nr_vmas(mm), 2);
	ASSERT_EQ(laf_mprotect(mm, BASE + 32 * K, 16 * K, LAF_PROT_READ), LAF_ENOMEM);
	ASSERT_OK(laf_mprotect(mm, BASE + 16 * K, 16 * K, LAF_PROT_READ));	/* merges into prev */
	ASSERT_EQ(nr_vmas(mm), 2);
	return true;
}

#define T(name) { #name, test_##name }
static const struct { const char *name; test_fn fn; } tests[] = {
	T(geometry),
	T(vma_tree_many),
	T(max_map_count),
	T(mprotect_args),
	T(mprotect_split_merge),
	T(mprotect_protnone),
	T(mprotect_after_fork),
	T(mprotect_pmd),
	T(mprotect_contpte),
	T(mprotect_max_map_count),
	T(arch_pte_orders),
	T(create_rejects_bad_config),
	T(policy_default_and_validation),
	T(read_zero_page_then_cow),
	T(write_maps_64k_folio),
	T(misaligned_vma_edges),
	T(zero_pte_blocks_mthp),
	T(vma_fit_16k_and_64k),
	T(alloc_failure_fallback),
	T(charge_failure_fallback),
	T(memcg_oom_state_intact),
	T(laf_v3_charge_failure_is_oom),
	T(laf_v3_ladder),
	T(fragmentation),
	T(pmd_thp),
	T(huge_zero_pmd_then_thp),
	T(huge_zero_pmd_write_fallback),
	T(pmd_fallback_to_mthp),
	T(dontneed_reclaims_pte_table),
	T(partial_unmap_deferred_split),
	T(munmap_frees_everything),
	T(uffd_missing),
	T(uffd_wp),
	T(prctl),
	T(madvise_split_merge),
	T(mmap_placement),
	T(race_and_eagain),
	T(contpte),
	T(anon_beside_full),
	T(read_ptes_codes),
	T(counters_add_up),
	T(large_base_pages),
	T(sigsegv),
	T(deferred_memmap),
	T(deferred_memmap_fragment),
	T(ram_limit_and_lazy_create),
	T(memcg_zero_limit),
	T(munmap_len_wraps),
	T(touch_range_stride_wraps),
	T(madvise_len_wraps),
	T(mmap_len_wraps),
	T(uffd_validate_range),
	T(top_of_address_space),
	T(fork_cow_child_write),
	T(fork_cow_child_read_or_none),
	T(fork_cow_child_alive),
	T(fork_cow_last_page),
	T(fork_cow_two_pages),
	T(fork_zero_pages),
	T(fork_pmd),
	T(fork_huge_zero_pmd),
	T(fork_dontfork_wipeonfork),
	T(fork_machine_stats),
	T(machine_put_before_its_mms),
	T(fork_userfaultfd),
	T(run_ops_same_as_calls),
	T(run_ops_bad_records),
	T(run_ops_move_pages),
	T(mremap_errors),
	T(mremap_move_unaligned),
	T(mremap_pmd),
	T(mremap_dontunmap),
	T(run_ops_remap),
};

/* After each test: every mm it created must pass laf_check_invariants(). */
static bool check_and_destroy_live(const char *name)
{
	bool ok = true;
	int i;

	for (i = 0; i < nr_live; i++) {
		char msg[512];
		int err = laf_check_invariants(live[i], msg, sizeof(msg));

		if (err) {
			fprintf(stderr, "%s: laf_check_invariants(mm #%d): %s (%s)\n", name, i,
				laf_strerror(err), msg);
			ok = false;
		}
		laf_mm_destroy(live[i]);
		live[i] = NULL;
	}
	nr_live = 0;
	return ok;
}

/* A test that hangs (a loop that never ends) fails instead of blocking the run. */
#define TEST_TIMEOUT_S 20
static const char *running;

static void on_timeout(int sig)
{
	static const char msg[] = "TIMEOUT: a test ran longer than 20 s: ";

	(void)sig;
	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0 ||
	    write(STDERR_FILENO, running, strlen(running)) < 0 ||
	    write(STDERR_FILENO, "\n", 1) < 0)
		_exit(2);
	_exit(EXIT_FAILURE);
}

int main(int argc, char **argv)
{
	size_t i, n = sizeof(tests) / sizeof(tests[0]);
	int passed = 0, failed = 0;

	for (i = 0; i < n; i++) {
		bool ok;

		if (argc > 1 && !strstr(tests[i].name, argv[1]))
			continue;
		running = tests[i].name;
		signal(SIGALRM, on_timeout);
		alarm(TEST_TIMEOUT_S);
		ok = tests[i].fn();
		alarm(0);
		ok = check_and_destroy_live(tests[i].name) && ok;
		if (ok) {
			passed++;
		} else {
			failed++;
			fprintf(stderr, "Test %s FAILED\n", tests[i].name);
		}
	}
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
