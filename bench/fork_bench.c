// SPDX-License-Identifier: GPL-2.0
/*
 * fork_bench.c - the emulator's fork() + exit of an address space with
 * 1 GiB resident in 64K folios (issue 9).
 *
 * One machine (2 GiB of emulated RAM, 4K pages, hugepages-64kB=always, the
 * rest default), one parent mm with 1 GiB mapped and written (16384 x 64K
 * folios), then per iteration: laf_mm_fork() (dup_mmap(): copy_pte_range()
 * with folio_pte_batch(), folio_try_dup_anon_rmap_ptes(), write protection
 * of both sides) and laf_mm_destroy() of the child (exit_mmap()).
 * Prints the fork, exit and fork+exit times (min and median of --iters).
 *
 *   make -C bench fork && bench/fork_bench [--iters N] [--size-mib M]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "laf.h"

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	int iters = 20, i;
	uint64_t size = 1ULL << 30, addr = 0x100000000000ULL, out;
	struct laf_config cfg;
	struct laf_policy pol;
	struct laf_touch_summary sum;
	struct laf_stats st;
	laf_machine *m;
	laf_mm *parent;
	double *tf, *te, *tt;
	char msg[256];

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--iters") && i + 1 < argc)
			iters = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--size-mib") && i + 1 < argc)
			size = strtoull(argv[++i], NULL, 0) << 20;
		else {
			fprintf(stderr, "usage: %s [--iters N] [--size-mib M]\n", argv[0]);
			return 2;
		}
	}
	laf_config_default(&cfg);
	cfg.ram_bytes = 2 * size + (256ULL << 20);
	if (laf_machine_create(&cfg, &m) || laf_mm_create_on(m, &parent))
		return 1;
	laf_policy_default(&pol, cfg.page_shift);
	pol.per_size[4] = LAF_THP_ALWAYS;
	if (laf_machine_set_policy(m, &pol) ||
	    laf_mmap(parent, addr, size, LAF_PROT_READ | LAF_PROT_WRITE, LAF_MAP_FIXED, &out) ||
	    laf_touch_range(parent, addr, size, 4096, 1, &sum))
		return 1;
	laf_get_stats(parent, &st);
	if (st.anon_fault_alloc[4] != size >> 16) {
		fprintf(stderr, "fill: %llu 64K folios, want %llu\n",
			(unsigned long long)st.anon_fault_alloc[4], (unsigned long long)(size >> 16));
		return 1;
	}
	tf = calloc(iters, sizeof(double));
	te = calloc(iters, sizeof(double));
	tt = calloc(iters, sizeof(double));
	for (i = 0; i < iters; i++) {
		laf_mm *child;
		double t0 = now_ns(), t1, t2;

		if (laf_mm_fork(parent, &child))
			return 1;
		t1 = now_ns();
		laf_mm_destroy(child);
		t2 = now_ns();
		tf[i] = t1 - t0;
		te[i] = t2 - t1;
		tt[i] = t2 - t0;
	}
	if (laf_machine_check_invariants(m, msg, sizeof(msg))) {
		fprintf(stderr, "invariants: %s\n", msg);
		return 1;
	}
	qsort(tf, iters, sizeof(double), cmp);
	qsort(te, iters, sizeof(double), cmp);
	qsort(tt, iters, sizeof(double), cmp);
	printf("emulator fork+exit, %llu MiB resident in 64K folios, %d iterations\n",
	       (unsigned long long)(size >> 20), iters);
	printf("  fork       min %10.0f ns  median %10.0f ns\n", tf[0], tf[iters / 2]);
	printf("  exit       min %10.0f ns  median %10.0f ns\n", te[0], te[iters / 2]);
	printf("  fork+exit  min %10.0f ns  median %10.0f ns\n", tt[0], tt[iters / 2]);
	laf_machine_destroy(m);
	free(tf);
	free(te);
	free(tt);
	return 0;
}
