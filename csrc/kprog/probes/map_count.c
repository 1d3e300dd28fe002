/* Build: cc -O2 -Wall -o /tmp/map_count csrc/kprog/probes/map_count.c ; run: /tmp/map_count  (which calls fail at vm.max_map_count, and with which errno) */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int map_count(void)
{
	char line[512];
	int n = 0;
	FILE *f = fopen("/proc/self/maps", "r");

	while (fgets(line, sizeof(line), f))
		n++;
	fclose(f);
	return n;
}

int main(void)
{
	long ps = 4096, max = 0, i;
	FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
	char *base, *big;
	int r;

	if (!f || fscanf(f, "%ld", &max) != 1)
		return 1;
	fclose(f);
	/* one reservation; then alternate protections page by page so nothing merges */
	base = mmap(NULL, (size_t)(max + 64) * 2 * ps, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	big = mmap(NULL, 16 * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	for (i = 0;; i++) {
		void *p = mmap(base + i * 2 * ps, ps, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);

		if (p == MAP_FAILED) {
			printf("max_map_count=%ld: mmap(MAP_FIXED) #%ld failed errno=%d (%s) with map_count=%d\n",
			       max, i, errno, strerror(errno), map_count());
			break;
		}
	}
	/* now at the limit: which operations that need one more VMA fail? */
	r = munmap(big + 4 * ps, ps);
	printf("munmap splitting a VMA in the middle: %d errno=%d (%s) map_count=%d\n", r, r ? errno : 0, r ? strerror(errno) : "ok", map_count());
	r = munmap(big, ps);
	printf("munmap of the first page (no net new VMA): %d errno=%d map_count=%d\n", r, r ? errno : 0, map_count());
	r = mprotect(big + 8 * ps, ps, PROT_READ);
	printf("mprotect of one middle page (needs 2 splits): %d errno=%d (%s) map_count=%d\n", r, r ? errno : 0, r ? strerror(errno) : "ok", map_count());
	r = mprotect(big + 15 * ps, ps, PROT_READ);
	printf("mprotect of the last page (1 split): %d errno=%d (%s) map_count=%d\n", r, r ? errno : 0, r ? strerror(errno) : "ok", map_count());
	r = madvise(big + 10 * ps, ps, MADV_NOHUGEPAGE);
	printf("madvise(NOHUGEPAGE) of one middle page: %d errno=%d (%s) map_count=%d\n", r, r ? errno : 0, r ? strerror(errno) : "ok", map_count());
	r = madvise(big + 10 * ps, ps, MADV_DONTNEED);
	printf("madvise(DONTNEED) of one middle page (no split): %d errno=%d map_count=%d\n", r, r ? errno : 0, map_count());
	{
		void *q = mremap(big + 2 * ps, ps, ps, MREMAP_MAYMOVE | MREMAP_FIXED, base + 3 * ps);

		printf("mremap(FIXED) move of one page: %s errno=%d (%s) map_count=%d\n", q == MAP_FAILED ? "failed" : "ok",
		       q == MAP_FAILED ? errno : 0, q == MAP_FAILED ? strerror(errno) : "", map_count());
	}
	return 0;
}
