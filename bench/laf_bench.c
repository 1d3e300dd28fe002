// SPDX-License-Identifier: GPL-2.0
/*
 * laf_bench.c - standalone microbenchmark of the pylaf fault path (no Python).
 *
 * Links the csrc/ core and drives it through the public ABI (laf.h) exactly
 * as the Python batch path does: laf_touch() over an address array, or
 * laf_touch_range().  Style after xxHash tests/bench, zstd benchfn and
 * CRoaring benchmarks/: a table of cases, loops calibrated to a minimum
 * duration, the minimum (and median) over N runs, the answer checked inside
 * the measured loop ([ERROR] and exit 1 on a wrong count), and one JSON line
 * per result with --json.
 *
 * Cases: folio order (LAF_POLICY_FIXED, fixed_order; order PMD_ORDER takes
 * the do_huge_pmd_anonymous_page() path) x access pattern x teardown:
 *
 *   seq      one write per folio, ascending (laf_touch, address array)
 *   random   one write per folio, folios in a random order, random page
 *            inside the folio (laf_touch)
 *   strided  one write per folio, column-major over PMD rows: folio j of
 *            every 2M region, then folio j+1... (laf_touch; = seq at PMD order)
 *   range    one write per folio, ascending (laf_touch_range, no array)
 *   dense    one write per 4K page, ascending (laf_touch_range): the first
 *            page of each folio faults, the others hit; what a program (and
 *            the live-kernel measurement, laf_kprog "write a 0 1G 4K") does
 *   hit      one write per 4K page on memory already mapped: every access
 *            hits a present PTE (laf_touch); ns/access is the MMU cost
 *
 * teardown: "+munmap" cases also time laf_munmap() of the whole range (zap,
 * folio free, page-table free) and report the fault + teardown cost.
 *
 * Every measured iteration uses a fresh laf_mm (created and destroyed outside
 * the clock), so the numbers include the host's first-touch faults on the
 * memmap and the page tables, as a fresh Python AddressSpace would.  --warm
 * reuses one laf_mm instead (munmap + mmap between iterations, untimed).
 *
 * Build: make -C bench        Run: bench/laf_bench [--quick] [--json] ...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "laf.h"

/* compile-time defaults, overridable with -D (xxHash style) */
#ifndef BENCH_SIZE_DEFAULT
#define BENCH_SIZE_DEFAULT (1ULL << 30)     /* 1 GiB of emulated anon memory */
#endif
#ifndef BENCH_SIZE_QUICK
#define BENCH_SIZE_QUICK (16ULL << 20)      /* --quick: 16 MiB */
#endif
#ifndef BENCH_RUNS_DEFAULT
#define BENCH_RUNS_DEFAULT 5
#endif
#ifndef BENCH_MIN_MS_DEFAULT
#define BENCH_MIN_MS_DEFAULT 100            /* each measurement lasts >= this */
#endif
#ifndef BENCH_MAX_LOOPS
#define BENCH_MAX_LOOPS 1000
#endif
#ifndef BENCH_SEED
#define BENCH_SEED 0x9E3779B97F4A7C15ULL
#endif

#define PAGE_SHIFT LAF_PAGE_SHIFT_4K
#define PAGE_SIZE ((uint64_t)1 << PAGE_SHIFT)
#define PMD_ORDER (PAGE_SHIFT - 3)
#define PMD_SIZE (PAGE_SIZE << PMD_ORDER)
#define MAX_RUNS 101

enum pattern { P_SEQ, P_RANDOM, P_STRIDED, P_RANGE, P_DENSE, P_HIT, NR_PATTERNS };

/* The candidate table: every pattern with one driver signature. */
struct bench_pattern {
	const char *name;
	const char *what;
	bool array;       /* laf_touch over an address array (else laf_touch_range) */
	bool per_page;    /* one access per 4K page (else one per folio) */
};

static const struct bench_pattern patterns[NR_PATTERNS] = {
	[P_SEQ]     = { "seq",     "one write per folio, ascending, laf_touch(array)", true, false },
	[P_RANDOM]  = { "random",  "one write per folio, shuffled, laf_touch(array)", true, false },
	[P_STRIDED] = { "strided", "one write per folio, column-major over 2M rows, laf_touch(array)", true, false },
	[P_RANGE]   = { "range",   "one write per folio, ascending, laf_touch_range()", false, false },
	[P_DENSE]   = { "dense",   "one write per 4K page, ascending, laf_touch_range(): faults + hits", false, true },
	[P_HIT]     = { "hit",     "one write per 4K page, all present: hits only, laf_touch(array)", true, true },
};

struct options {
	uint64_t size;
	int runs;
	unsigned int min_ms;
	bool orders[LAF_NR_ORDERS];
	bool pats[NR_PATTERNS];
	bool teardown[2];   /* [0] fault only, [1] fault + munmap */
	bool json;
	bool quiet;         /* --json only: no table */
	bool warm;
};

/* One measured case: inputs, expectations and results. */
struct bench_case {
	int order;
	enum pattern pat;
	bool teardown;

	uint64_t nr_folios;       /* folios the run maps */
	uint64_t nr_accesses;     /* accesses per iteration */
	uint64_t exp_faults;      /* accesses expected to fault */
	uint64_t exp_hits;
	uint64_t *addrs;          /* array patterns */

	/* results */
	int loops;
	double ns_iter[MAX_RUNS]; /* per-iteration time, each run */
	struct laf_stats st;      /* of the last iteration, before teardown */
	struct laf_stats st_after;/* after teardown (teardown cases) */
};

static const char *prog = "laf_bench";

/*
 * The measured entry points, called through volatile pointers: an LTO build
 * cannot inline them into the harness (the Python path calls them through
 * cffi, never inlined), and callgrind --toggle-collect=laf_touch still sees
 * them as functions.
 */
static int (*volatile bench_touch)(laf_mm *, const uint64_t *, size_t, const uint8_t *, int,
				   int8_t *, struct laf_touch_summary *) = laf_touch;
static int (*volatile bench_touch_range)(laf_mm *, uint64_t, uint64_t, uint64_t, int,
					 struct laf_touch_summary *) = laf_touch_range;
static int (*volatile bench_munmap)(laf_mm *, uint64_t, uint64_t) = laf_munmap;

/* ------------------------------------------------------------ utilities */

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* splitmix64: deterministic inputs from a fixed seed */
static inline uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

static void die(const char *fmt, const char *arg)
{
	fprintf(stderr, "%s: ", prog);
	fprintf(stderr, fmt, arg);
	fputc('\n', stderr);
	exit(2);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static uint64_t parse_size(const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		die("invalid size '%s'", s);
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	case 't': case 'T': v <<= 40; end++; break;
	default: break;
	}
	if (*end == 'i')
		end++;
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end)
		die("invalid size '%s' (use e.g. 64M, 1G)", s);
	return v;
}

static void parse_orders(const char *s, bool *out)
{
	char *copy = strdup(s), *tok, *save = NULL;

	memset(out, 0, sizeof(bool) * LAF_NR_ORDERS);
	if (!strcmp(s, "all")) {
		out[0] = true;
		for (int o = 2; o <= PMD_ORDER; o++)
			out[o] = true;
		free(copy);
		return;
	}
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *end;
		long lo = strtol(tok, &end, 10), hi = lo;

		if (*end == '-')
			hi = strtol(end + 1, &end, 10);
		if (*end || lo < 0 || hi > PMD_ORDER || lo > hi)
			die("invalid --orders item '%s' (orders 0, 2..9, e.g. 0,2-9)", tok);
		for (long o = lo; o <= hi; o++) {
			if (o == 1)
				continue;	/* no anonymous order-1 folios */
			out[o] = true;
		}
	}
	free(copy);
}

static void parse_patterns(const char *s, bool *out)
{
	char *copy = strdup(s), *tok, *save = NULL;

	memset(out, 0, sizeof(bool) * NR_PATTERNS);
	if (!strcmp(s, "all")) {
		for (int p = 0; p < NR_PATTERNS; p++)
			out[p] = true;
		free(copy);
		return;
	}
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int p;

		for (p = 0; p < NR_PATTERNS; p++)
			if (!strcmp(tok, patterns[p].name))
				break;
		if (p == NR_PATTERNS)
			die("unknown pattern '%s' (seq, random, strided, range, dense, hit, all)", tok);
		out[p] = true;
	}
	free(copy);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: %s [--size BYTES] [--runs N] [--orders LIST] [--patterns LIST]\n"
		"          [--teardown no|yes|both] [--min-ms MS] [--warm] [--json] [--quick]\n"
		"\n"
		"Times the emulated anonymous write-fault path (csrc/ core, no Python).\n"
		"  --size BYTES     emulated anon memory faulted per case (default 1G; K/M/G)\n"
		"  --runs N         measurements per case; min and median reported (default %d)\n"
		"  --orders LIST    folio orders, e.g. 0,2,4 or 0,2-9 or all (default all: 0,2..9)\n"
		"  --patterns LIST  seq,random,strided,range,dense,hit or all (default seq,random,strided)\n"
		"  --teardown MODE  no: faults only; yes: faults + munmap; both (default both)\n"
		"  --min-ms MS      calibrate loops so one measurement lasts >= MS (default %d)\n"
		"  --warm           reuse one laf_mm (munmap+mmap between iterations, untimed)\n"
		"  --json           also print one JSON object per case (JSON lines)\n"
		"  --json-only      JSON lines only, no table\n"
		"  --quick          CI mode: --size 16M --runs 2 --min-ms 0 (a correctness run)\n"
		"\nPatterns:\n", prog, BENCH_RUNS_DEFAULT, BENCH_MIN_MS_DEFAULT);
	for (int p = 0; p < NR_PATTERNS; p++)
		fprintf(f, "  %-8s %s\n", patterns[p].name, patterns[p].what);
}

static void parse_args(int argc, char **argv, struct options *o)
{
	bool quick = false, size_set = false, runs_set = false, ms_set = false;

	memset(o, 0, sizeof(*o));
	o->size = BENCH_SIZE_DEFAULT;
	o->runs = BENCH_RUNS_DEFAULT;
	o->min_ms = BENCH_MIN_MS_DEFAULT;
	parse_orders("all", o->orders);
	parse_patterns("seq,random,strided", o->pats);
	o->teardown[0] = o->teardown[1] = true;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = NULL;

#define ARG(name) ((!strcmp(a, name) && i + 1 < argc && (v = argv[++i])) || \
		   (!strncmp(a, name "=", sizeof(name)) && (v = a + sizeof(name))))
		if (ARG("--size")) {
			o->size = parse_size(v);
			size_set = true;
		} else if (ARG("--runs")) {
			o->runs = atoi(v);
			runs_set = true;
			if (o->runs < 1 || o->runs > MAX_RUNS)
				die("--runs must be 1..101, got '%s'", v);
		} else if (ARG("--orders")) {
			parse_orders(v, o->orders);
		} else if (ARG("--patterns")) {
			parse_patterns(v, o->pats);
		} else if (ARG("--teardown")) {
			o->teardown[0] = !strcmp(v, "no") || !strcmp(v, "both");
			o->teardown[1] = !strcmp(v, "yes") || !strcmp(v, "both");
			if (!o->teardown[0] && !o->teardown[1])
				die("--teardown takes no, yes or both, not '%s'", v);
		} else if (ARG("--min-ms")) {
			o->min_ms = (unsigned int)atoi(v);
			ms_set = true;
		} else if (!strcmp(a, "--json")) {
			o->json = true;
		} else if (!strcmp(a, "--json-only")) {
			o->json = o->quiet = true;
		} else if (!strcmp(a, "--quick")) {
			quick = true;
		} else if (!strcmp(a, "--warm")) {
			o->warm = true;
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			exit(0);
		} else {
			usage(stderr);
			die("unknown or incomplete argument '%s'", a);
		}
#undef ARG
	}
	if (quick) {
		if (!size_set)
			o->size = BENCH_SIZE_QUICK;
		if (!runs_set)
			o->runs = 2;
		if (!ms_set)
			o->min_ms = 0;
	}
	if (o->size < 2 * PMD_SIZE || o->size % PMD_SIZE)
		die("--size must be a multiple of 2M and >= 4M, got '%s'", "(see --help)");
}

/* ------------------------------------------------------------ one case */

static void check_rc(int rc, const char *what)
{
	if (rc) {
		fprintf(stderr, "%s: [ERROR] %s: %s\n", prog, what, laf_strerror(rc));
		exit(1);
	}
}

/* Emulated RAM for @size of anon memory: data + page-table frames + slack. */
static uint64_t ram_for(uint64_t size)
{
	uint64_t ram = size + size / 256 + 16 * PMD_SIZE;

	return (ram + PMD_SIZE - 1) & ~(PMD_SIZE - 1);
}

static laf_mm *make_mm(const struct options *o, int order)
{
	struct laf_config cfg;
	struct laf_policy pol;
	laf_mm *mm;

	laf_config_default(&cfg);
	cfg.ram_bytes = ram_for(o->size);
	check_rc(laf_mm_create(&cfg, &mm), "laf_mm_create");
	laf_policy_default(&pol, PAGE_SHIFT);
	pol.kind = LAF_POLICY_FIXED;
	pol.fixed_order = order;
	check_rc(laf_set_policy(mm, &pol), "laf_set_policy");
	return mm;
}

static uint64_t map_range(laf_mm *mm, const struct options *o, uint64_t hint, bool fixed)
{
	uint64_t base;

	check_rc(laf_mmap(mm, hint, o->size, LAF_PROT_READ | LAF_PROT_WRITE,
			  fixed ? LAF_MAP_FIXED : 0, &base), "laf_mmap");
	if (base & (PMD_SIZE - 1)) {
		fprintf(stderr, "%s: [ERROR] mapping not PMD-aligned: %#" PRIx64 "\n", prog, base);
		exit(1);
	}
	return base;
}

/* Offsets (from the mapping start) for the array patterns. */
static void build_addrs(struct bench_case *c, const struct options *o)
{
	uint64_t fsize = PAGE_SIZE << c->order, n = o->size / fsize, i;
	uint64_t seed = BENCH_SEED;

	c->nr_folios = n;
	switch (c->pat) {
	case P_SEQ:
	case P_RANGE:
		c->nr_accesses = n;
		c->exp_faults = n;
		c->exp_hits = 0;
		break;
	case P_RANDOM:
	case P_STRIDED:
		c->nr_accesses = n;
		c->exp_faults = n;
		c->exp_hits = 0;
		break;
	case P_DENSE:
	case P_HIT:
		c->nr_accesses = o->size / PAGE_SIZE;
		c->exp_faults = c->pat == P_HIT ? 0 : n;
		c->exp_hits = c->nr_accesses - c->exp_faults;
		break;
	default:
		break;
	}
	if (!patterns[c->pat].array)
		return;
	c->addrs = malloc(c->nr_accesses * sizeof(uint64_t));
	if (!c->addrs)
		die("out of memory for %s addresses", patterns[c->pat].name);
	switch (c->pat) {
	case P_SEQ:
		for (i = 0; i < n; i++)
			c->addrs[i] = i * fsize;
		break;
	case P_RANDOM:
		for (i = 0; i < n; i++)
			c->addrs[i] = i * fsize;
		for (i = n - 1; i > 0; i--) {	/* Fisher-Yates */
			uint64_t j = splitmix64(&seed) % (i + 1), t = c->addrs[i];

			c->addrs[i] = c->addrs[j];
			c->addrs[j] = t;
		}
		for (i = 0; i < n; i++)
			c->addrs[i] += (splitmix64(&seed) & ((1ULL << c->order) - 1)) << PAGE_SHIFT;
		break;
	case P_STRIDED: {
		uint64_t per_pmd = PMD_SIZE / fsize, rows = o->size / PMD_SIZE, j, r, k = 0;

		for (j = 0; j < per_pmd; j++)
			for (r = 0; r < rows; r++)
				c->addrs[k++] = r * PMD_SIZE + j * fsize;
		break;
	}
	case P_HIT:
		for (i = 0; i < c->nr_accesses; i++)
			c->addrs[i] = i * PAGE_SIZE;
		break;
	default:
		break;
	}
}

static void rebase(uint64_t *addrs, uint64_t n, int64_t delta)
{
	for (uint64_t i = 0; i < n; i++)
		addrs[i] += (uint64_t)delta;
}

#define CHECK(cond, ...)                                                         \
	do {                                                                     \
		if (!(cond)) {                                                   \
			fprintf(stderr, "%s: [ERROR] order %d %s%s: ", prog,     \
				c->order, patterns[c->pat].name,                 \
				c->teardown ? "+munmap" : "");                   \
			fprintf(stderr, __VA_ARGS__);                            \
			fputc('\n', stderr);                                     \
			exit(1);                                                 \
		}                                                                \
	} while (0)

/* The answer: the summary of the batch and the counters it must leave. */
static inline void check_summary(const struct bench_case *c, const struct laf_touch_summary *s)
{
	CHECK(s->accesses == c->nr_accesses && s->faulted == c->exp_faults &&
	      s->hits == c->exp_hits && s->first_error == -1,
	      "summary accesses=%" PRIu64 " faulted=%" PRIu64 " hits=%" PRIu64
	      " first_error=%" PRId64 ", expected %" PRIu64 "/%" PRIu64 "/%" PRIu64 "/-1",
	      s->accesses, s->faulted, s->hits, s->first_error,
	      c->nr_accesses, c->exp_faults, c->exp_hits);
}

static void check_stats(const struct bench_case *c, const struct options *o,
			const struct laf_stats *st, const struct laf_stats *after)
{
	uint64_t pages = o->size / PAGE_SIZE;

	CHECK(st->mm_anonpages == (int64_t)pages, "mm_anonpages=%" PRId64 ", expected %" PRIu64,
	      st->mm_anonpages, pages);
	CHECK(st->folios_mapped[c->order] == c->nr_folios,
	      "folios_mapped[%d]=%" PRIu64 ", expected %" PRIu64, c->order,
	      st->folios_mapped[c->order], c->nr_folios);
	CHECK(c->order == 0 || st->anon_fault_alloc[c->order] == c->nr_folios,
	      "anon_fault_alloc[%d]=%" PRIu64 ", expected %" PRIu64, c->order,
	      st->anon_fault_alloc[c->order], c->nr_folios);
	CHECK(st->faults_oom == 0 && st->faults_sigsegv == 0 && st->faults_sigbus == 0 &&
	      st->faults_retried == 0, "unexpected oom/sigsegv/sigbus/retry");
	if (c->teardown) {
		CHECK(after->mm_anonpages == 0 && after->lru_pages == 0 && after->nr_ptes == 0,
		      "after munmap: mm_anonpages=%" PRId64 " lru=%" PRId64 " nr_ptes=%" PRId64,
		      after->mm_anonpages, after->lru_pages, after->nr_ptes);
		CHECK(after->free_pages == after->ram_pages - 1 - (c->order == PMD_ORDER ? 0 : 0),
		      "after munmap: %" PRIu64 " of %" PRIu64 " frames free (leak)",
		      after->free_pages, after->ram_pages);
	}
}

/*
 * One iteration: fresh state (untimed), the timed batch (+ munmap), the
 * checks.  Returns the nanoseconds inside the clock.
 */
static uint64_t run_once(struct bench_case *c, const struct options *o, laf_mm **warm_mm,
			 uint64_t *warm_base)
{
	struct laf_touch_summary sum;
	laf_mm *mm;
	uint64_t base, t0, t1, t2, elapsed;
	int rc;

	if (o->warm && *warm_mm) {
		mm = *warm_mm;
		base = map_range(mm, o, *warm_base, true);
	} else {
		mm = make_mm(o, c->order);
		base = map_range(mm, o, 0, false);
		if (c->addrs)
			rebase(c->addrs, c->nr_accesses, (int64_t)(base - *warm_base));
		*warm_base = base;
		if (o->warm)
			*warm_mm = mm;
	}
	if (c->pat == P_HIT) {	/* populate first, untimed */
		rc = laf_touch_range(mm, base, o->size, PAGE_SIZE << c->order, 1, &sum);
		check_rc(rc, "laf_touch_range (populate)");
		check_rc(laf_reset_counters(mm), "laf_reset_counters");
	}

	t0 = now_ns();
	if (patterns[c->pat].array)
		rc = bench_touch(mm, c->addrs, c->nr_accesses, NULL, 1, NULL, &sum);
	else
		rc = bench_touch_range(mm, base, o->size,
				       c->pat == P_DENSE ? PAGE_SIZE : PAGE_SIZE << c->order, 1, &sum);
	check_summary(c, &sum);		/* the answer, inside the clock */
	t1 = now_ns();
	elapsed = t1 - t0;
	if (c->teardown) {
		check_rc(laf_get_stats(mm, &c->st), "laf_get_stats");	/* untimed */
		t2 = now_ns();
		rc |= bench_munmap(mm, base, o->size);
		elapsed += now_ns() - t2;
	}
	check_rc(rc, "laf_touch / laf_munmap");

	if (c->teardown) {
		check_rc(laf_get_stats(mm, &c->st_after), "laf_get_stats");
	} else {
		check_rc(laf_get_stats(mm, &c->st), "laf_get_stats");
	}
	if (c->pat != P_HIT)
		check_stats(c, o, &c->st, &c->st_after);
	else
		CHECK(c->st.hits == c->nr_accesses && c->st.faults == 0,
		      "hits=%" PRIu64 " faults=%" PRIu64, c->st.hits, c->st.faults);
	{
		char msg[256];

		rc = laf_check_invariants(mm, msg, sizeof(msg));
		CHECK(rc == 0, "check_invariants: %s", msg);
	}
	if (o->warm) {
		if (!c->teardown)
			check_rc(laf_munmap(mm, base, o->size), "laf_munmap");
		check_rc(laf_reset_counters(mm), "laf_reset_counters");
	} else {
		laf_mm_destroy(mm);
	}
	return elapsed;
}

static void run_case(struct bench_case *c, const struct options *o)
{
	laf_mm *warm_mm = NULL;
	uint64_t warm_base = 0, t;
	int r, l;

	build_addrs(c, o);
	/* calibration: one warm-up iteration sizes the loop */
	t = run_once(c, o, &warm_mm, &warm_base);
	c->loops = 1;
	if (t < (uint64_t)o->min_ms * 1000000ULL) {
		uint64_t need = (uint64_t)o->min_ms * 1000000ULL / (t ? t : 1) + 1;

		c->loops = need > BENCH_MAX_LOOPS ? BENCH_MAX_LOOPS : (int)need;
	}
	for (r = 0; r < o->runs; r++) {
		uint64_t total = 0;

		for (l = 0; l < c->loops; l++)
			total += run_once(c, o, &warm_mm, &warm_base);
		c->ns_iter[r] = (double)total / c->loops;
	}
	if (warm_mm)
		laf_mm_destroy(warm_mm);
	free(c->addrs);
	c->addrs = NULL;
}

/* ------------------------------------------------------------ output */

static const char *size_str(uint64_t bytes, char *buf, size_t n)
{
	if (bytes >= (1ULL << 30) && !(bytes & ((1ULL << 30) - 1)))
		snprintf(buf, n, "%" PRIu64 "G", bytes >> 30);
	else if (bytes >= (1ULL << 20) && !(bytes & ((1ULL << 20) - 1)))
		snprintf(buf, n, "%" PRIu64 "M", bytes >> 20);
	else
		snprintf(buf, n, "%" PRIu64 "K", bytes >> 10);
	return buf;
}

struct figures {
	double min_iter, med_iter;     /* ns per iteration */
	double ns_fault_min, ns_fault_med;
	double ns_page_min, ns_page_med;
	double ns_access_min;
	double faults_per_s;
	double page_ops_per_fault, folio_ops_per_fault;
	uint64_t faults, pages;
};

static void figures_of(struct bench_case *c, const struct options *o, struct figures *f)
{
	double sorted[MAX_RUNS];
	/* the unit of work: a fault, or an access for the hit pattern */
	uint64_t units = c->pat == P_HIT ? c->nr_accesses : c->exp_faults;
	const struct laf_stats *st = c->teardown ? &c->st_after : &c->st;
	uint64_t page_ops = c->st.per_page_ops, folio_ops = c->st.per_folio_ops;

	memcpy(sorted, c->ns_iter, sizeof(double) * (size_t)o->runs);
	qsort(sorted, (size_t)o->runs, sizeof(double), cmp_double);
	f->min_iter = sorted[0];
	f->med_iter = sorted[o->runs / 2];
	f->faults = c->exp_faults;
	f->pages = o->size / PAGE_SIZE;
	f->ns_fault_min = f->min_iter / (double)units;
	f->ns_fault_med = f->med_iter / (double)units;
	f->ns_page_min = f->min_iter / (double)f->pages;
	f->ns_page_med = f->med_iter / (double)f->pages;
	f->ns_access_min = f->min_iter / (double)c->nr_accesses;
	f->faults_per_s = 1e9 / f->ns_fault_min;
	if (c->teardown) {	/* ops of the whole lifetime: faults + zap + free */
		page_ops += st->per_page_ops;
		folio_ops += st->per_folio_ops;
	}
	f->page_ops_per_fault = units ? (double)page_ops / (double)units : 0;
	f->folio_ops_per_fault = units ? (double)folio_ops / (double)units : 0;
}

static void print_header(const struct options *o)
{
	char b[32];

	printf("laf_bench: %s of emulated anon memory, 4K pages, min/median of %d runs%s\n",
	       size_str(o->size, b, sizeof(b)), o->runs, o->warm ? ", warm laf_mm" : ", fresh laf_mm per iteration");
	printf("%-5s %-6s %-16s %10s %6s %10s %10s %9s %9s %11s %8s %8s\n",
	       "order", "folio", "case", "faults", "loops", "ns/fault", "(median)", "ns/4K", "ns/access",
	       "faults/s", "pg-ops/f", "fo-ops/f");
}

static void print_row(struct bench_case *c, const struct options *o, const struct figures *f)
{
	char b[32], name[32];

	snprintf(name, sizeof(name), "%s%s", patterns[c->pat].name, c->teardown ? "+munmap" : "");
	printf("%-5d %-6s %-16s %10" PRIu64 " %6d %10.2f %10.2f %9.3f %9.3f %11.4g %8.2f %8.2f\n",
	       c->order, size_str(PAGE_SIZE << c->order, b, sizeof(b)), name,
	       c->pat == P_HIT ? c->nr_accesses : f->faults, c->loops,
	       f->ns_fault_min, f->ns_fault_med, f->ns_page_min, f->ns_access_min,
	       f->faults_per_s, f->page_ops_per_fault, f->folio_ops_per_fault);
	fflush(stdout);
}

static void print_json(struct bench_case *c, const struct options *o, const struct figures *f)
{
	printf("{\"bench\":\"laf_bench\",\"order\":%d,\"folio_bytes\":%" PRIu64
	       ",\"pattern\":\"%s\",\"teardown\":%s,\"warm\":%s,\"size_bytes\":%" PRIu64
	       ",\"pages\":%" PRIu64 ",\"faults\":%" PRIu64 ",\"accesses\":%" PRIu64
	       ",\"hits\":%" PRIu64 ",\"runs\":%d,\"loops\":%d"
	       ",\"ns_per_iter_min\":%.1f,\"ns_per_iter_median\":%.1f"
	       ",\"ns_per_fault_min\":%.3f,\"ns_per_fault_median\":%.3f"
	       ",\"ns_per_page_min\":%.4f,\"ns_per_page_median\":%.4f"
	       ",\"ns_per_access_min\":%.4f,\"faults_per_s\":%.1f"
	       ",\"per_page_ops_per_fault\":%.3f,\"per_folio_ops_per_fault\":%.3f"
	       ",\"set_ptes_calls\":%" PRIu64 ",\"ptes_written\":%" PRIu64
	       ",\"bytes_zeroed\":%" PRIu64 ",\"nr_ptes\":%" PRId64 ",\"ok\":true}\n",
	       c->order, PAGE_SIZE << c->order, patterns[c->pat].name,
	       c->teardown ? "true" : "false", o->warm ? "true" : "false", o->size,
	       f->pages, c->exp_faults, c->nr_accesses, c->exp_hits, o->runs, c->loops,
	       f->min_iter, f->med_iter, f->ns_fault_min, f->ns_fault_med,
	       f->ns_page_min, f->ns_page_med, f->ns_access_min, f->faults_per_s,
	       f->page_ops_per_fault, f->folio_ops_per_fault,
	       c->st.set_ptes_calls, c->st.ptes_written, c->st.bytes_zeroed, c->st.nr_ptes);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	struct options o;
	int order, p, t, ncases = 0;

	parse_args(argc, argv, &o);
	if (!o.quiet)
		print_header(&o);
	for (p = 0; p < NR_PATTERNS; p++) {
		if (!o.pats[p])
			continue;
		for (t = 0; t < 2; t++) {
			if (!o.teardown[t] || (p == P_HIT && t))
				continue;
			for (order = 0; order <= PMD_ORDER; order++) {
				struct bench_case *c;
				struct figures f;

				if (!o.orders[order] || (p == P_HIT && order != 0))
					continue;
				c = calloc(1, sizeof(*c));
				if (!c)
					die("%s", "out of memory");
				c->order = order;
				c->pat = (enum pattern)p;
				c->teardown = t;
				run_case(c, &o);
				figures_of(c, &o, &f);
				if (!o.quiet)
					print_row(c, &o, &f);
				if (o.json)
					print_json(c, &o, &f);
				free(c);
				ncases++;
			}
		}
	}
	if (!o.quiet)
		printf("%d cases, all checks passed\n", ncases);
	return 0;
}
