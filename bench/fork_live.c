// SPDX-License-Identifier: GPL-2.0
/*
 * fork_live.c - the live kernel's fork() + child _exit() + waitpid() of a
 * process with 1 GiB resident, for bench/fork_bench to be compared with.
 *
 * mmaps 1 GiB (2 MiB-aligned), writes every 4K page, reads
 * /proc/self/smaps_rollup AnonHugePages and the 64K folio count from
 * hugepages-64kB/stats/anon_fault_alloc deltas, then times --iters
 * fork() + _exit(0) in the child + waitpid() in the parent.  Run it through
 * bench/fork_live.py, which sets hugepages-64kB=always with
 * pylaf.live.sysfs.thp_settings() (restored afterwards).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

static long long read_ll(const char *path)
{
	FILE *f = fopen(path, "r");
	long long v = -1;

	if (f) {
		if (fscanf(f, "%lld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

#define STAT64 "/sys/kernel/mm/transparent_hugepage/hugepages-64kB/stats/anon_fault_alloc"

int main(int argc, char **argv)
{
	size_t size = 1UL << 30, i;
	int iters = 20, k;
	char *raw, *p;
	long long a0, a1;
	double *t;

	for (k = 1; k < argc; k++) {
		if (!strcmp(argv[k], "--iters") && k + 1 < argc)
			iters = atoi(argv[++k]);
		else if (!strcmp(argv[k], "--size-mib") && k + 1 < argc)
			size = strtoull(argv[++k], NULL, 0) << 20;
	}
	raw = mmap(NULL, size + (2UL << 20), PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (raw == MAP_FAILED)
		return 1;
	p = (char *)(((uintptr_t)raw + (2UL << 20) - 1) & ~((2UL << 20) - 1));
	a0 = read_ll(STAT64);
	for (i = 0; i < size; i += 4096)
		p[i] = 1;
	a1 = read_ll(STAT64);
	t = calloc(iters, sizeof(double));
	for (k = 0; k < iters; k++) {
		double t0 = now_ns();
		pid_t pid = fork();

		if (pid < 0)
			return 1;
		if (!pid)
			_exit(0);
		waitpid(pid, NULL, 0);
		t[k] = now_ns() - t0;
	}
	qsort(t, iters, sizeof(double), cmp);
	printf("live fork+_exit+waitpid, %zu MiB written, 64K anon_fault_alloc +%lld, %d iterations\n",
	       size >> 20, a1 - a0, iters);
	printf("  fork+exit  min %10.0f ns  median %10.0f ns\n", t[0], t[iters / 2]);
	return 0;
}
