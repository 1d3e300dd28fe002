// SPDX-License-Identifier: MIT
/*
 * laf_workload: a small deterministic program for record/replay validation
 * (docs/kernel-validation.md).  It exercises the usual anonymous-memory
 * paths of a C program through glibc malloc: brk heap growth with small
 * objects, mmap'd large chunks (> M_MMAP_THRESHOLD) freed with munmap,
 * realloc growth (mremap), calloc + strided writes (sparse touch),
 * read-then-write, qsort, and one worker thread (its stack and its malloc
 * arena: a 64M PROT_NONE reservation grown with mprotect).
 *
 * Build:  cc -O2 -pthread -o laf_workload pylaf/live/csrc/laf_workload.c
 * Run:    laf_workload [SCALE]     (default 1)
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct node {
	struct node *next;
	uint64_t v[5];
};

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static uint32_t rng = 12345;

static uint32_t next_rand(void)
{
	rng = rng * 1103515245u + 12345u;
	return rng >> 8;
}

static void *worker(void *arg)
{
	size_t n = (size_t)arg;
	uint64_t sum = 0;
	char **bufs = malloc(n * sizeof(*bufs));

	for (size_t i = 0; i < n; i++) {
		bufs[i] = malloc(1000 + (i % 7) * 300);
		memset(bufs[i], (int)i, 1000);
	}
	for (size_t i = 0; i < n; i += 2)
		free(bufs[i]);
	for (size_t i = 1; i < n; i += 2)
		sum += (unsigned char)bufs[i][10];
	return (void *)(uintptr_t)sum;
}

int main(int argc, char **argv)
{
	int scale = argc > 1 ? atoi(argv[1]) : 1;
	struct node *head = NULL;
	uint64_t sum = 0;
	pthread_t th;
	void *ret;

	if (scale < 1)
		scale = 1;

	/* 1. small objects on the brk heap */
	for (int i = 0; i < 20000 * scale; i++) {
		struct node *n = malloc(sizeof(*n));

		n->next = head;
		n->v[0] = (uint64_t)i;
		head = n;
	}
	for (struct node *n = head; n; n = n->next)
		sum += n->v[0];

	/* 2. large chunks: mmap'd by malloc, half of them freed (munmap) */
	{
		char *big[8];

		for (int i = 0; i < 8; i++) {
			size_t sz = (size_t)(300 + 50 * i) << 10;

			big[i] = malloc(sz);
			memset(big[i], i, sz);
		}
		for (int i = 0; i < 8; i += 2)
			free(big[i]);
		for (int i = 1; i < 8; i += 2)
			sum += (unsigned char)big[i][4096];
	}

	/* 3. realloc growth: 256K .. 8M (mremap) */
	{
		size_t sz = 256 << 10;
		char *p = malloc(sz);

		memset(p, 1, sz);
		while (sz < (size_t)(8 << 20) * scale) {
			p = realloc(p, sz * 2);
			memset(p + sz, 2, sz);
			sz *= 2;
		}
		sum += (unsigned char)p[sz - 1];
		free(p);
	}

	/* 4. calloc + strided writes: one write every 20K in 16M */
	{
		size_t sz = (size_t)16 << 20;
		char *a = calloc(1, sz);

		for (size_t off = 0; off < sz; off += 20 << 10)
			a[off] = 1;
		sum += (unsigned char)a[20 << 10];
		free(a);
	}

	/* 5. read everything, then write everything (zero page, then COW) */
	{
		size_t sz = (size_t)1 << 20;
		volatile char *r = calloc(1, sz);

		for (size_t off = 0; off < sz; off += 4096)
			sum += (unsigned char)r[off];
		for (size_t off = 0; off < sz; off += 4096)
			r[off] = 3;
		free((void *)r);
	}

	/* 6. qsort of random integers */
	{
		size_t n = 200000 * (size_t)scale;
		uint32_t *v = malloc(n * sizeof(*v));

		for (size_t i = 0; i < n; i++)
			v[i] = next_rand();
		qsort(v, n, sizeof(*v), cmp_u32);
		sum += v[n / 2];
		free(v);
	}

	/* 7. a worker thread with its own arena */
	pthread_create(&th, NULL, worker, (void *)(uintptr_t)(5000 * scale));
	pthread_join(th, &ret);
	sum += (uint64_t)(uintptr_t)ret;

	printf("%llu\n", (unsigned long long)sum);
	return 0;
}
