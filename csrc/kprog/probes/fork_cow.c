/* Build: cc -O2 -Wall -o /tmp/fork_cow csrc/kprog/probes/fork_cow.c ; run as root: /tmp/fork_cow <scenario> (no args: list) */
/*
 * fork_cow.c - live-kernel probes for fork and copy-on-write of anonymous
 * (large) folios; the findings are in docs/kernel-findings.md, section
 * "fork and COW on this machine", and the rules in docs/kernel-semantics.md.
 *
 * Every scenario maps a naturally aligned region, fills it, forks, and prints
 * key=value lines.  Fault counts are getrusage(RUSAGE_SELF) ru_minflt deltas
 * taken by the process that touches the memory, tightly around its own touch
 * loop (the child measures itself).  Folio layout comes from
 * /proc/self/pagemap + /proc/kpageflags + /proc/kpagecount (root needed).
 * Machine-wide counters (/proc/vmstat pgreuse, thp_*, the per-size stats/)
 * are read right before and after the measured step.  The THP knobs are not
 * touched here: the caller sets them (pylaf.live.host.thp_settings).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define PS 4096UL
#define KPF_COMPOUND_HEAD 15
#define KPF_COMPOUND_TAIL 16
#define KPF_THP 22
#define KPF_ZERO_PAGE 24
#define PM_PRESENT (1ULL << 63)
#define PM_MMAP_EXCLUSIVE (1ULL << 56)
#define PM_PFN_MASK ((1ULL << 55) - 1)

static long minflt(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_minflt;
}

static long read_long(const char *path)
{
	char buf[64] = "";
	long v = -1;
	FILE *f = fopen(path, "r");

	if (f) {
		if (fgets(buf, sizeof(buf), f))
			v = strtol(buf, NULL, 10);
		fclose(f);
	}
	return v;
}

static long vmstat(const char *name)
{
	char key[128];
	long val;
	FILE *f = fopen("/proc/vmstat", "r");

	if (!f)
		return -1;
	while (fscanf(f, "%127s %ld", key, &val) == 2)
		if (!strcmp(key, name)) {
			fclose(f);
			return val;
		}
	fclose(f);
	return -1;
}

static long mstat(const char *size, const char *name)
{
	char path[256];

	snprintf(path, sizeof(path), "/sys/kernel/mm/transparent_hugepage/hugepages-%s/stats/%s",
		 size, name);
	return read_long(path);
}

struct counters {
	long pgreuse, split_pmd, thp_fault_alloc, thp_zero, a64, sd64, pm64, nr64, a2m, sd2m;
};

static void snap(struct counters *c)
{
	c->pgreuse = vmstat("pgreuse");
	c->split_pmd = vmstat("thp_split_pmd");
	c->thp_fault_alloc = vmstat("thp_fault_alloc");
	c->thp_zero = vmstat("thp_zero_page_alloc");
	c->a64 = mstat("64kB", "anon_fault_alloc");
	c->sd64 = mstat("64kB", "split_deferred");
	c->pm64 = mstat("64kB", "nr_anon_partially_mapped");
	c->nr64 = mstat("64kB", "nr_anon");
	c->a2m = mstat("2048kB", "anon_fault_alloc");
	c->sd2m = mstat("2048kB", "split_deferred");
}

static void print_delta(const char *who, const struct counters *a, const struct counters *b)
{
	printf("%s: pgreuse=%ld thp_split_pmd=%ld thp_fault_alloc=%ld thp_zero_page_alloc=%ld "
	       "64K:alloc=%ld,split_deferred=%ld,nr_anon_partially_mapped=%ld,nr_anon=%ld "
	       "2M:alloc=%ld,split_deferred=%ld\n", who,
	       b->pgreuse - a->pgreuse, b->split_pmd - a->split_pmd,
	       b->thp_fault_alloc - a->thp_fault_alloc, b->thp_zero - a->thp_zero,
	       b->a64 - a->a64, b->sd64 - a->sd64, b->pm64 - a->pm64, b->nr64 - a->nr64,
	       b->a2m - a->a2m, b->sd2m - a->sd2m);
}

/*
 * layout() - one line: folio sizes seen (by head page), zero-page PTEs,
 * non-present PTEs, PTEs with PM_MMAP_EXCLUSIVE, and the kpagecount
 * (per-page mapcount with CONFIG_PAGE_MAPCOUNT) histogram 1/2/other.
 */
static void layout(const char *who, char *p, size_t len)
{
	size_t n = len / PS, i, folios[12] = {0};
	size_t none = 0, zero = 0, excl = 0, mc1 = 0, mc2 = 0, mcx = 0, mid = 0;
	int pm = open("/proc/self/pagemap", O_RDONLY);
	int kf = open("/proc/kpageflags", O_RDONLY);
	int kc = open("/proc/kpagecount", O_RDONLY);

	for (i = 0; i < n; i++) {
		uint64_t e = 0, fl = 0, cnt = 0, pfn;

		pread(pm, &e, 8, (off_t)(((uintptr_t)p / PS + i) * 8));
		if (!(e & PM_PRESENT)) {
			none++;
			continue;
		}
		if (e & PM_MMAP_EXCLUSIVE)
			excl++;
		pfn = e & PM_PFN_MASK;
		pread(kf, &fl, 8, (off_t)(pfn * 8));
		pread(kc, &cnt, 8, (off_t)(pfn * 8));
		if (fl & (1ULL << KPF_ZERO_PAGE)) {
			zero++;
			continue;
		}
		if (cnt == 1)
			mc1++;
		else if (cnt == 2)
			mc2++;
		else
			mcx++;
		if (fl & (1ULL << KPF_COMPOUND_TAIL)) {
			if (i == 0)
				mid++; /* region starts inside a folio */
			continue;
		}
		if (fl & (1ULL << KPF_COMPOUND_HEAD)) {
			/* count tails that follow in pfn order */
			size_t k = 1;
			uint64_t f2 = 0;

			while (pread(kf, &f2, 8, (off_t)((pfn + k) * 8)) == 8 &&
			       (f2 & (1ULL << KPF_COMPOUND_TAIL)) && !(f2 & (1ULL << KPF_COMPOUND_HEAD)) && k < 4096)
				k++;
			folios[__builtin_ctzl(k)]++;
		} else {
			folios[0]++;
		}
	}
	printf("%s: layout", who);
	for (i = 0; i < 12; i++)
		if (folios[i])
			printf(" %zuK-folios=%zu", (PS << i) / 1024, folios[i]);
	printf(" zero-ptes=%zu none=%zu exclusive-ptes=%zu kpagecount{1=%zu,2=%zu,other=%zu}%s\n",
	       zero, none, excl, mc1, mc2, mcx, mid ? " (starts mid-folio)" : "");
	close(pm);
	close(kf);
	close(kc);
}

static long touch(char *p, size_t len, int write)
{
	volatile char *v = p;
	long m0 = minflt();
	size_t off;

	for (off = 0; off < len; off += PS) {
		if (write)
			v[off] = (char)(off >> 12 | 1);
		else
			(void)v[off];
	}
	return minflt() - m0;
}

/* aligned_map() - an anonymous private RW mapping of len, aligned to align, with gaps around. */
static char *aligned_map(size_t len, size_t align)
{
	size_t big = len + 2 * align;
	char *raw = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uintptr_t a;

	if (raw == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	a = ((uintptr_t)raw + align) & ~(uintptr_t)(align - 1);
	munmap(raw, a - (uintptr_t)raw);
	munmap((char *)a + len, (uintptr_t)raw + big - a - len);
	return (char *)a;
}

struct sync {
	int to_child[2], to_parent[2];
};

static void wait_for(int fd)
{
	char c;

	if (read(fd, &c, 1) != 1)
		exit(3);
}

static void kick(int fd)
{
	if (write(fd, "x", 1) != 1)
		exit(3);
}

/*
 * Scenario roles.  child_action: 'w' write all, 'r' read all, 'n' nothing,
 * 'W' wait for the parent, then write all.
 */
static void run_fork(const char *name, char *p, size_t len, char child_action,
		     int parent_writes_while_child_alive)
{
	struct counters a, b;
	struct sync s;
	pid_t pid;
	long f;

	if (pipe(s.to_child) || pipe(s.to_parent))
		exit(2);
	layout("parent-before-fork", p, len);
	snap(&a);
	pid = fork();
	if (pid == 0) {
		struct counters ca, cb;

		if (child_action == 'W')
			wait_for(s.to_child[0]);
		layout("child-start", p, len);
		snap(&ca);
		f = child_action == 'n' ? 0 : touch(p, len, child_action != 'r');
		snap(&cb);
		printf("child: action=%c minflt=%ld\n", child_action, f);
		print_delta("child-counters", &ca, &cb);
		layout("child-after", p, len);
		fflush(stdout);
		if (child_action == 'W')
			kick(s.to_parent[1]);
		else
			wait_for(s.to_child[0]); /* stay alive until told */
		_exit(0);
	}
	snap(&b);
	print_delta("fork-counters", &a, &b);
	if (parent_writes_while_child_alive) {
		snap(&a);
		f = touch(p, len, 1);
		snap(&b);
		printf("parent-while-child-alive: minflt=%ld\n", f);
		print_delta("parent-counters", &a, &b);
		layout("parent-after-write", p, len);
		fflush(stdout);
		if (child_action == 'W') {
			kick(s.to_child[1]);
			wait_for(s.to_parent[0]);
		} else {
			kick(s.to_child[1]);
		}
	} else {
		if (child_action == 'W')
			kick(s.to_child[1]), wait_for(s.to_parent[0]);
		kick(s.to_child[1]);
	}
	waitpid(pid, NULL, 0);
	layout("parent-after-child-exit", p, len);
	snap(&a);
	f = touch(p, len, 1);
	snap(&b);
	printf("parent-after-child-exit: write minflt=%ld\n", f);
	print_delta("parent-counters", &a, &b);
	layout("parent-final", p, len);
	printf("scenario %s done\n", name);
}

int main(int argc, char **argv)
{
	const char *sc = argc > 1 ? argv[1] : "";
	size_t len = 1UL << 20, pmd = 2UL << 20;
	char *p;
	long f;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(sc, "child-write") || !strcmp(sc, "child-read") || !strcmp(sc, "child-none") ||
	    !strcmp(sc, "child-alive") || !strcmp(sc, "child-after-parent")) {
		p = aligned_map(len, pmd);
		f = touch(p, len, 1);
		printf("fill: minflt=%ld\n", f);
		if (!strcmp(sc, "child-write"))
			run_fork(sc, p, len, 'w', 0);
		else if (!strcmp(sc, "child-read"))
			run_fork(sc, p, len, 'r', 0);
		else if (!strcmp(sc, "child-none"))
			run_fork(sc, p, len, 'n', 0);
		else if (!strcmp(sc, "child-alive"))
			run_fork(sc, p, len, 'n', 1);
		else
			run_fork(sc, p, len, 'W', 1);
	} else if (!strcmp(sc, "last-page")) {
		/* keep one page of each 64K block, fork, child exits, parent writes */
		size_t off;

		p = aligned_map(len, pmd);
		printf("fill: minflt=%ld\n", touch(p, len, 1));
		for (off = 0; off < len; off += 64 * 1024)
			madvise(p + off + PS, 15 * PS, MADV_DONTNEED);
		run_fork(sc, p, len, 'n', 0);
	} else if (!strcmp(sc, "two-pages")) {
		size_t off;

		p = aligned_map(len, pmd);
		printf("fill: minflt=%ld\n", touch(p, len, 1));
		for (off = 0; off < len; off += 64 * 1024)
			madvise(p + off + 2 * PS, 14 * PS, MADV_DONTNEED);
		run_fork(sc, p, len, 'n', 0);
	} else if (!strcmp(sc, "pmd-alive") || !strcmp(sc, "pmd-exit") || !strcmp(sc, "pmd-child-write")) {
		p = aligned_map(pmd, pmd);
		madvise(p, pmd, MADV_HUGEPAGE);
		printf("fill: minflt=%ld\n", touch(p, PS, 1));
		if (!strcmp(sc, "pmd-alive"))
			run_fork(sc, p, pmd, 'n', 1);
		else if (!strcmp(sc, "pmd-exit"))
			run_fork(sc, p, pmd, 'n', 0);
		else
			run_fork(sc, p, pmd, 'w', 0);
	} else if (!strcmp(sc, "hzero")) {
		p = aligned_map(pmd, pmd);
		madvise(p, pmd, MADV_HUGEPAGE);
		printf("fill(read): minflt=%ld\n", touch(p, pmd, 0));
		run_fork(sc, p, pmd, 'r', 0);
	} else if (!strcmp(sc, "hzero-child-write")) {
		p = aligned_map(pmd, pmd);
		madvise(p, pmd, MADV_HUGEPAGE);
		printf("fill(read): minflt=%ld\n", touch(p, pmd, 0));
		run_fork(sc, p, pmd, 'w', 0);
	} else if (!strcmp(sc, "zero-only") || !strcmp(sc, "zero-anon")) {
		/* read-only touched: zero PTEs, and (zero-only) no anon_vma */
		p = aligned_map(len, pmd);
		printf("fill(read): minflt=%ld\n", touch(p, len, 0));
		if (!strcmp(sc, "zero-anon"))
			printf("one write (creates the anon_vma): minflt=%ld\n", touch(p + len - PS, PS, 1));
		run_fork(sc, p, len, 'r', 0);
	} else if (!strcmp(sc, "dontfork") || !strcmp(sc, "wipeonfork")) {
		pid_t pid;

		p = aligned_map(len, pmd);
		printf("fill: minflt=%ld\n", touch(p, len, 1));
		madvise(p, len, !strcmp(sc, "dontfork") ? MADV_DONTFORK : MADV_WIPEONFORK);
		pid = fork();
		if (pid == 0) {
			int r = madvise(p, len, MADV_NORMAL);

			printf("child: madvise(MADV_NORMAL) on the range = %d errno=%d (%s)\n", r,
			       r ? errno : 0, r ? strerror(errno) : "mapped");
			if (!r) {
				layout("child-start", p, len);
				f = touch(p, len, 0);
				printf("child: read minflt=%ld first-byte=%d\n", f, p[0]);
				layout("child-after", p, len);
			}
			_exit(0);
		}
		waitpid(pid, NULL, 0);
		f = touch(p, len, 1);
		printf("parent-after-child-exit: write minflt=%ld\n", f);
	} else if (!strcmp(sc, "mprotect") || !strcmp(sc, "mprotect-after-fork")) {
		struct counters a, b;

		p = aligned_map(len, pmd);
		printf("fill: minflt=%ld\n", touch(p, len, 1));
		if (!strcmp(sc, "mprotect-after-fork")) {
			pid_t pid = fork();

			if (pid == 0)
				_exit(0);
			waitpid(pid, NULL, 0);
		}
		mprotect(p, len, PROT_READ);
		mprotect(p, len, PROT_READ | PROT_WRITE);
		layout("after-rw-r-rw", p, len);
		snap(&a);
		f = touch(p, len, 1);
		snap(&b);
		printf("write after mprotect r->rw: minflt=%ld\n", f);
		print_delta("counters", &a, &b);
		/* middle of a folio */
		mprotect(p + 8 * PS, 4 * PS, PROT_READ);
		mprotect(p + 8 * PS, 4 * PS, PROT_READ | PROT_WRITE);
		f = touch(p, 64 * 1024, 1);
		printf("write after mid-folio r->rw: minflt=%ld\n", f);
		layout("after-mid-folio", p, len);
	} else {
		fprintf(stderr, "scenarios: child-write child-read child-none child-alive child-after-parent "
				"last-page two-pages pmd-alive pmd-exit pmd-child-write hzero hzero-child-write "
				"zero-only zero-anon dontfork wipeonfork mprotect mprotect-after-fork\n");
		return 2;
	}
	return 0;
}
