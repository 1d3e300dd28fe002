// SPDX-License-Identifier: MIT
/*
 * laf_kprog: run an "access program" against the live kernel's anonymous
 * fault path and report what happened as JSON on stdout.
 *
 * Build:  cc -O2 -o laf_kprog pylaf/live/csrc/laf_kprog.c
 * Run:    laf_kprog < program.txt        (root needed for /proc/kpageflags)
 *
 * Program format: one op per line, '#' starts a comment. Numbers accept
 * 0x hex and K/M/G suffixes (powers of 1024).
 *
 *   mmap ID LEN [align=N] [misalign=N] [hint=ADDR|@ID[+OFF]] [prot=rw|r|none]
 *        [fixed] [noreserve]
 *       align>0: reserve LEN+align+misalign PROT_NONE, map the real VMA with
 *       MAP_FIXED at ALIGN_UP(base, align)+misalign, unmap the slack.
 *   munmap ID OFF LEN
 *   mprotect ID OFF LEN rw|r|rx|none|rwx
 *   mremap ID OLD_LEN NEW_LEN [maymove] [fixed=ADDR|@ID[+OFF]] [dontunmap]
 *          [as=NEWID]
 *       mremap(2) of [ID's start, +OLD_LEN): fixed= is MREMAP_FIXED (with
 *       MREMAP_MAYMOVE), dontunmap MREMAP_DONTUNMAP.  On success the op
 *       reports "addr" (the new address) and mapping ID then names
 *       [addr, +NEW_LEN), so later ops address it at its new place; with
 *       as=NEWID the result is a new mapping NEWID and ID stays where it
 *       was (MREMAP_DONTUNMAP).  A failure is rc -1 with errno, as for
 *       munmap/madvise.
 *   madvise ID OFF LEN hugepage|nohugepage|dontneed|free|cold|pageout|
 *                      collapse|willneed|populate_read|populate_write|
 *                      dontfork|dofork|wipeonfork|keeponfork
 *                      (dontfork: split a VMA without touching its THP
 *                      eligibility)
 *   prctl thp_disable 0|1|except_advised
 *   read ID OFF [LEN [STRIDE]]     touch one byte per STRIDE (default 4096)
 *   write ID OFF [LEN [STRIDE]]    in [OFF, OFF+LEN); STRIDE<0 walks downwards
 *   sleep MS
 *   snapshot NAME [runs=0|1]
 *
 * Processes (fork programs).  The process that reads the program is "main".
 *   [@PROC] OP ...     any op above runs in process PROC (default main);
 *                      every process has its own mapping IDs (a child
 *                      inherits its forker's at fork time)
 *   [@PROC] fork NAME  PROC calls fork(); the child is process NAME
 *   exit NAME          NAME calls _exit(0); the op returns once NAME's mm is
 *                      gone (pidfd readable: exit_mm() has run), and main
 *                      reaps it if it is main's child, so there is no
 *                      separate "wait": the next op never races exit_mmap()
 *   madvise ... wipeonfork|keeponfork
 * Ops run strictly in program order: main executes its own ops and sends
 * every other process its ops over a pipe, one at a time; that process runs
 * the op exactly as main would (its own getrusage(RUSAGE_SELF) around its own
 * touches, counter reads around the op, its own /proc/self/pagemap, smaps and
 * statm for snapshots) and sends the op's or snapshot's JSON back before main
 * goes on.  Children still alive at the end exit after the final snapshot,
 * unreported.  Ops and snapshots of a process other than main carry
 * "proc":NAME.  A program with a fork op also: pins every process to the CPU
 * main started on (an order-0 folio still in another CPU's LRU batch holds a
 * reference, and mm/memory.c wp_can_reuse_anon_folio() would then copy
 * instead of reuse), adds /proc/vmstat pgreuse to the counters, and reports
 * per mapping "excl" (PTEs with pagemap PM_MMAP_EXCLUSIVE, bit 56) and "kpc"
 * (histogram of /proc/kpagecount over the mapped pages of anon folios).
 * Single-process programs are reported exactly as before.
 *
 * Output: {"page_size", "settings", "ops":[...], "snapshots":[...]}.
 *  - every op: counter deltas (per-size mTHP stats + /proc/vmstat thp_*)
 *    read immediately before/after the op (non-zero entries only);
 *  - read/write: minflt/majflt from getrusage(RUSAGE_SELF) taken tightly
 *    around the touch loop only;
 *  - snapshot: counter deltas and minflt summed over the ops since the
 *    previous snapshot (so the snapshot's own /proc reading is never
 *    counted), RSS, per-mapping folio layout from pagemap+kpageflags, and
 *    the process's VMAs overlapping any mapping from /proc/self/smaps.
 * A final snapshot "final" is appended when the program does not end in one.
 *
 * laf_kprog --map-count: the vm.max_map_count probe instead (map_count_probe()).
 *
 * Counters are system-wide: keep the machine quiet while this runs.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <poll.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef PR_SET_THP_DISABLE
#define PR_SET_THP_DISABLE 41
#endif
#ifndef PR_GET_THP_DISABLE
#define PR_GET_THP_DISABLE 42
#endif
#ifndef PR_THP_DISABLE_EXCEPT_ADVISED
#define PR_THP_DISABLE_EXCEPT_ADVISED (1 << 1)
#endif
#ifndef MADV_COLD
#define MADV_COLD 20
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18
#endif
#ifndef MADV_KEEPONFORK
#define MADV_KEEPONFORK 19
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

#define THP_DIR "/sys/kernel/mm/transparent_hugepage"

/* kpageflags bits */
#define KPF_ANON 12
#define KPF_COMPOUND_HEAD 15
#define KPF_COMPOUND_TAIL 16
#define KPF_THP 22
#define KPF_ZERO_PAGE 24

#define PM_PFN_MASK ((1ULL << 55) - 1)
#define PM_MMAP_EXCLUSIVE (1ULL << 56)
#define PM_SWAP (1ULL << 62)
#define PM_PRESENT (1ULL << 63)

static long page_size;

/* the program forks: pgreuse, excl/kpc and CPU pinning (see the top) */
static int multi;
/* the process running this code: "main" or the NAME of its fork op */
static char proc_name[64] = "main";

/* ------------------------------------------------------------------ */
/* output buffer (growable; only written outside measured windows)     */

struct buf {
	char *p;
	size_t len, cap;
};

/* where emit() writes: the header, the ops or the snapshots stream */
static struct buf *out;

/*
 * Output buffers are private MAP_NORESERVE mappings: without VM_ACCOUNT they
 * can never merge with the program's (accounted) test mappings, so the VMA
 * layout under test is not disturbed by laf_kprog's own memory.  In a fork
 * program they are also MADV_NOHUGEPAGE (see thp_off_for_self()).
 */
#define OUTBUF_SIZE (512UL << 20)

static void buf_init(struct buf *b, size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED) {
		fprintf(stderr, "laf_kprog: cannot map output buffer\n");
		exit(2);
	}
	if (multi)
		madvise(p, size, MADV_NOHUGEPAGE);
	b->p = p;
	b->len = 0;
	b->cap = size;
}

static void emit(const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(out->p + out->len, out->cap - out->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= out->cap - out->len) {
		fprintf(stderr, "laf_kprog: output too large\n");
		exit(2);
	}
	out->len += (size_t)n;
}

/* start a new item of a JSON array held in b: emit() goes to b */
static void begin_item(struct buf *b)
{
	out = b;
	if (b->len)
		emit(",");
}

static void emit_str(const char *s)
{
	emit("\"");
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			emit("\\%c", c);
		else if (c < 0x20)
			emit("\\u%04x", c);
		else
			emit("%c", c);
	}
	emit("\"");
}

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "laf_kprog: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(2);
}

/* ------------------------------------------------------------------ */
/* small file helpers                                                  */

static char fbuf[1 << 16];

static ssize_t read_file(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY);
	ssize_t n, tot = 0;

	if (fd < 0)
		return -1;
	while ((size_t)tot < cap - 1) {
		n = read(fd, buf + tot, cap - 1 - tot);
		if (n <= 0)
			break;
		tot += n;
	}
	close(fd);
	buf[tot] = 0;
	return tot;
}

/* ------------------------------------------------------------------ */
/* counters                                                            */

static const char *const stat_names[] = {
	"anon_fault_alloc", "anon_fault_fallback", "anon_fault_fallback_charge",
	"anon_fault_declined", "nr_anon", "split_deferred",
	"nr_anon_partially_mapped", "split", "split_failed",
};
#define NSTAT (sizeof(stat_names) / sizeof(stat_names[0]))
#define MAXSIZES 16
#define MAXVM 96

static int nsizes;
static unsigned long size_kb[MAXSIZES];
static char stat_path[MAXSIZES][NSTAT][128];
static int stat_present[MAXSIZES][NSTAT];

static int nvm;
static char vm_names[MAXVM][64];

struct counters {
	long long st[MAXSIZES][NSTAT];
	long long vm[MAXVM];
};

static int cmp_ul(const void *a, const void *b)
{
	unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;

	return x < y ? -1 : x > y;
}

static void discover_counters(void)
{
	DIR *d = opendir(THP_DIR);
	struct dirent *de;
	char path[512];
	char *p, *line;

	if (d) {
		while ((de = readdir(d)) && nsizes < MAXSIZES) {
			unsigned long kb;

			if (sscanf(de->d_name, "hugepages-%lukB", &kb) != 1)
				continue;
			snprintf(path, sizeof(path), THP_DIR "/%s/enabled", de->d_name);
			if (access(path, F_OK))
				continue;       /* no anon attributes (8kB) */
			size_kb[nsizes++] = kb;
		}
		closedir(d);
	}
	qsort(size_kb, nsizes, sizeof(size_kb[0]), cmp_ul);
	for (int i = 0; i < nsizes; i++)
		for (size_t j = 0; j < NSTAT; j++) {
			snprintf(stat_path[i][j], sizeof(stat_path[i][j]),
				 THP_DIR "/hugepages-%lukB/stats/%s", size_kb[i], stat_names[j]);
			stat_present[i][j] = !access(stat_path[i][j], R_OK);
		}

	if (read_file("/proc/vmstat", fbuf, sizeof(fbuf)) < 0)
		return;
	for (line = strtok_r(fbuf, "\n", &p); line && nvm < MAXVM;
	     line = strtok_r(NULL, "\n", &p)) {
		char name[64];

		if (sscanf(line, "%63s", name) != 1)
			continue;
		if (!strncmp(name, "thp_", 4) || !strcmp(name, "nr_anon_transparent_hugepages") ||
		    (multi && !strcmp(name, "pgreuse")))
			strcpy(vm_names[nvm++], name);
	}
}

static void read_counters(struct counters *c)
{
	char buf[64];
	char *p, *line;

	memset(c, 0, sizeof(*c));
	for (int i = 0; i < nsizes; i++)
		for (size_t j = 0; j < NSTAT; j++)
			if (stat_present[i][j] && read_file(stat_path[i][j], buf, sizeof(buf)) > 0)
				c->st[i][j] = strtoll(buf, NULL, 10);
	if (read_file("/proc/vmstat", fbuf, sizeof(fbuf)) < 0)
		return;
	for (line = strtok_r(fbuf, "\n", &p); line; line = strtok_r(NULL, "\n", &p)) {
		char name[64];
		long long v;

		if (line[0] != 't' && line[0] != 'n' && line[0] != 'p')
			continue;
		if (sscanf(line, "%63s %lld", name, &v) != 2)
			continue;
		for (int k = 0; k < nvm; k++)
			if (!strcmp(name, vm_names[k])) {
				c->vm[k] = v;
				break;
			}
	}
}

static void counters_sub_add(struct counters *acc, const struct counters *a,
			     const struct counters *b)
{
	for (int i = 0; i < nsizes; i++)
		for (size_t j = 0; j < NSTAT; j++)
			acc->st[i][j] += a->st[i][j] - b->st[i][j];
	for (int k = 0; k < nvm; k++)
		acc->vm[k] += a->vm[k] - b->vm[k];
}

/* emits "mthp":{"64kB":{...}}, "vmstat":{...}; non-zero entries only */
static void emit_counter_delta(const struct counters *d)
{
	int first_size = 1, first;

	emit("\"mthp\":{");
	for (int i = 0; i < nsizes; i++) {
		first = 1;
		for (size_t j = 0; j < NSTAT; j++) {
			if (!d->st[i][j])
				continue;
			if (first) {
				emit("%s\"%lukB\":{", first_size ? "" : ",", size_kb[i]);
				first_size = 0;
			}
			emit("%s\"%s\":%lld", first ? "" : ",", stat_names[j], d->st[i][j]);
			first = 0;
		}
		if (!first)
			emit("}");
	}
	emit("},\"vmstat\":{");
	first = 1;
	for (int k = 0; k < nvm; k++) {
		if (!d->vm[k])
			continue;
		emit("%s\"%s\":%lld", first ? "" : ",", vm_names[k], d->vm[k]);
		first = 0;
	}
	emit("}");
}

/* ------------------------------------------------------------------ */
/* settings                                                            */

static void emit_setting(const char *name, const char *path, int *first)
{
	char buf[256];
	ssize_t n = read_file(path, buf, sizeof(buf));

	if (n < 0)
		return;
	while (n > 0 && isspace((unsigned char)buf[n - 1]))
		buf[--n] = 0;
	emit("%s", *first ? "" : ",");
	*first = 0;
	emit_str(name);
	emit(":");
	emit_str(buf);
}

static void emit_settings(void)
{
	static const char *const globals[] = {
		"enabled", "defrag", "use_zero_page", "anon_beside_full",
		"shrink_underused", "khugepaged/max_ptes_none",
	};
	char path[256], name[64];
	int first = 1;

	emit("\"settings\":{");
	for (size_t i = 0; i < sizeof(globals) / sizeof(globals[0]); i++) {
		snprintf(path, sizeof(path), THP_DIR "/%s", globals[i]);
		emit_setting(globals[i], path, &first);
	}
	for (int i = 0; i < nsizes; i++) {
		snprintf(path, sizeof(path), THP_DIR "/hugepages-%lukB/enabled", size_kb[i]);
		snprintf(name, sizeof(name), "hugepages-%lukB/enabled", size_kb[i]);
		emit_setting(name, path, &first);
	}
	emit("}");
}

/* ------------------------------------------------------------------ */
/* mappings                                                            */

#define MAXMAP 256

struct mapping {
	char id[64];
	uintptr_t addr;
	size_t len;
};

static struct mapping maps[MAXMAP];
static int nmaps;

static struct mapping *find_map(const char *id)
{
	for (int i = nmaps - 1; i >= 0; i--)
		if (!strcmp(maps[i].id, id))
			return &maps[i];
	return NULL;
}

static int parse_num(const char *s, long long *v)
{
	char *end;
	long long x;

	errno = 0;
	x = strtoll(s, &end, 0);
	if (errno || end == s)
		return -1;
	switch (*end) {
	case 'k': case 'K': x <<= 10; end++; break;
	case 'm': case 'M': x <<= 20; end++; break;
	case 'g': case 'G': x <<= 30; end++; break;
	}
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end)
		return -1;
	*v = x;
	return 0;
}

static long long need_num(const char *s, int lineno)
{
	long long v;

	if (!s || parse_num(s, &v))
		die("line %d: bad number '%s'", lineno, s ? s : "(missing)");
	return v;
}

static int parse_prot(const char *s)
{
	if (!strcmp(s, "rw"))
		return PROT_READ | PROT_WRITE;
	if (!strcmp(s, "rwx"))
		return PROT_READ | PROT_WRITE | PROT_EXEC;
	if (!strcmp(s, "r"))
		return PROT_READ;
	if (!strcmp(s, "rx"))
		return PROT_READ | PROT_EXEC;
	if (!strcmp(s, "none"))
		return PROT_NONE;
	return -1;
}

/* ------------------------------------------------------------------ */
/* touching                                                            */

static sigjmp_buf touch_jmp;
static volatile sig_atomic_t in_touch;
static volatile uintptr_t touch_cur;

static void segv_handler(int sig)
{
	if (in_touch)
		siglongjmp(touch_jmp, sig);
	signal(sig, SIG_DFL);
	raise(sig);
}

static volatile unsigned char sink;

/*
 * Touch one byte per stride. Returns 0, or the signal number that stopped
 * the loop (touch_cur then holds the faulting address).
 */
static int do_touch(uintptr_t start_arg, long long len, long long stride, int write,
		    struct rusage *r0, struct rusage *r1)
{
	volatile uintptr_t start = start_arg;   /* survives siglongjmp */
	int sig;
	long long n = (len + (stride > 0 ? stride : -stride) - 1) /
		      (stride > 0 ? stride : -stride);

	/*
	 * Write everything the measured window writes before it opens: after a
	 * fork these pages are write-protected and their COW fault would be
	 * counted (getrusage() copies r0 out after sampling ru_minflt).
	 */
	memset(r0, 0, sizeof(*r0));
	memset(r1, 0, sizeof(*r1));
	touch_cur = 0;
	sink = 0;
	in_touch = 1;
	sig = sigsetjmp(touch_jmp, 1);
	if (sig) {
		getrusage(RUSAGE_SELF, r1);
		in_touch = 0;
		return sig;
	}
	getrusage(RUSAGE_SELF, r0);
	if (stride > 0) {
		for (long long i = 0; i < n; i++) {
			volatile unsigned char *p = (void *)(start + i * stride);

			touch_cur = (uintptr_t)p;
			if (write)
				*p = 1;
			else
				sink += *p;
		}
	} else {
		/* same bytes as the forward walk, visited in reverse */
		for (long long i = n - 1; i >= 0; i--) {
			volatile unsigned char *p = (void *)(start + i * -stride);

			touch_cur = (uintptr_t)p;
			if (write)
				*p = 1;
			else
				sink += *p;
		}
	}
	getrusage(RUSAGE_SELF, r1);
	in_touch = 0;
	return 0;
}

/* ------------------------------------------------------------------ */
/* folio layout via pagemap + kpageflags                               */

static int pagemap_fd = -1, kpf_fd = -1, kpc_fd = -1;

static uint64_t kpf_one(uint64_t pfn)
{
	uint64_t f = 0;

	if (pread(kpf_fd, &f, 8, (off_t)(pfn * 8)) != 8)
		return 0;
	return f;
}

#define KPF_CHUNK 512
static uint64_t kpf_buf[KPF_CHUNK];

/* returns head pfn of the folio containing pfn (flags f) */
static uint64_t folio_head(uint64_t pfn, uint64_t f)
{
	if (!(f & (1ULL << KPF_COMPOUND_TAIL)))
		return pfn;
	while (pfn > 0) {
		uint64_t lo = pfn >= KPF_CHUNK ? pfn - KPF_CHUNK : 0;
		ssize_t n = pread(kpf_fd, kpf_buf, (pfn - lo) * 8, (off_t)(lo * 8));

		if (n <= 0)
			return pfn;
		for (uint64_t p = pfn; p-- > lo;) {
			uint64_t g = kpf_buf[p - lo];

			if (g & (1ULL << KPF_COMPOUND_HEAD))
				return p;
			if (!(g & (1ULL << KPF_COMPOUND_TAIL)))
				return p + 1;   /* inconsistent: best effort */
		}
		pfn = lo;
	}
	return 0;
}

static uint64_t folio_nr(uint64_t head, uint64_t hf)
{
	uint64_t nr = 1, p = head + 1;

	if (!(hf & (1ULL << KPF_COMPOUND_HEAD)))
		return 1;
	for (;;) {
		ssize_t n = pread(kpf_fd, kpf_buf, sizeof(kpf_buf), (off_t)(p * 8));

		if (n <= 0)
			return nr;
		for (ssize_t i = 0; i < n / 8; i++) {
			if (!(kpf_buf[i] & (1ULL << KPF_COMPOUND_TAIL)))
				return nr;
			nr++;
		}
		p += (uint64_t)n / 8;
	}
}

static int ilog2u(uint64_t x)
{
	int o = 0;

	while (x > 1) {
		x >>= 1;
		o++;
	}
	return o;
}

enum pkind { PK_NONE, PK_SWAP, PK_FOLIO, PK_ZERO, PK_HZERO };
static const char *const pkind_name[] = { "none", "swap", "folio", "zero", "hzero" };

struct run {
	uintptr_t off;          /* byte offset in mapping */
	uint64_t n;             /* pages */
	int kind, order, whole; /* whole: every piece covers its entire folio */
	uint64_t folios;        /* folio pieces in run */
	uint64_t idx;           /* index of first page within its folio */
	int thp, anon;
};

#define MAXORD 20
#define MAXKPC 64

/* kpagecount of pages [pfn, pfn+n) into hist (index capped at MAXKPC-1) */
static void kpc_count(uint64_t pfn, uint64_t n, uint64_t *hist)
{
	while (n) {
		uint64_t k = n < KPF_CHUNK ? n : KPF_CHUNK;
		ssize_t got = pread(kpc_fd, kpf_buf, k * 8, (off_t)(pfn * 8));

		if (got <= 0)
			return;
		for (ssize_t i = 0; i < got / 8; i++)
			hist[kpf_buf[i] < MAXKPC ? kpf_buf[i] : MAXKPC - 1]++;
		pfn += (uint64_t)got / 8;
		n -= (uint64_t)got / 8;
	}
}

static void emit_layout(struct mapping *m, int want_runs)
{
	uint64_t npages = m->len / page_size;
	size_t pm_size = npages * 8 + 8;
	uint64_t *pm = mmap(NULL, pm_size, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	uint64_t pages_by_order[MAXORD + 1] = { 0 };
	uint64_t folios_by_order[MAXORD + 1] = { 0 };
	uint64_t partial_by_order[MAXORD + 1] = { 0 };
	uint64_t present = 0, zero = 0, hzero = 0, swapped = 0, excl = 0;
	uint64_t kpc_hist[MAXKPC] = { 0 };
	struct run cur = { 0 };
	int have_cur = 0, first_run = 1;
	uint64_t i = 0;

	if (pm == MAP_FAILED)
		die("out of memory");
	if (pread(pagemap_fd, pm, npages * 8, (off_t)(m->addr / page_size * 8)) !=
	    (ssize_t)(npages * 8))
		memset(pm, 0, npages * 8);

	for (uint64_t k = 0; k < npages; k++)
		if ((pm[k] & PM_PRESENT) && (pm[k] & PM_MMAP_EXCLUSIVE))
			excl++;

	emit("{\"id\":");
	emit_str(m->id);
	emit(",\"addr\":%" PRIuPTR ",\"len\":%zu", m->addr, m->len);
	if (want_runs)
		emit(",\"runs\":[");

#define FLUSH_RUN()                                                              \
	do {                                                                     \
		if (have_cur && want_runs) {                                     \
			emit("%s{\"off\":%" PRIuPTR ",\"n\":%" PRIu64            \
			     ",\"kind\":\"%s\"", first_run ? "" : ",", cur.off,  \
			     cur.n, pkind_name[cur.kind]);                       \
			if (cur.kind == PK_FOLIO || cur.kind == PK_HZERO)        \
				emit(",\"order\":%d,\"whole\":%s,\"folios\":%"   \
				     PRIu64 ",\"idx\":%" PRIu64                  \
				     ",\"thp\":%d,\"anon\":%d", cur.order,       \
				     cur.whole ? "true" : "false", cur.folios,   \
				     cur.idx, cur.thp, cur.anon);                \
			emit("}");                                               \
			first_run = 0;                                           \
		}                                                                \
		have_cur = 0;                                                    \
	} while (0)

	while (i < npages) {
		uint64_t e = pm[i];
		struct run piece = { .off = i * page_size, .n = 1, .folios = 1 };

		if (!(e & PM_PRESENT)) {
			piece.kind = (e & PM_SWAP) ? PK_SWAP : PK_NONE;
			if (piece.kind == PK_SWAP)
				swapped++;
			i++;
		} else {
			uint64_t pfn = e & PM_PFN_MASK;
			uint64_t f = kpf_one(pfn);

			present++;
			if ((f & (1ULL << KPF_ZERO_PAGE)) && !(f & ((1ULL << KPF_COMPOUND_HEAD) |
								     (1ULL << KPF_COMPOUND_TAIL)))) {
				piece.kind = PK_ZERO;
				zero++;
				i++;
			} else {
				uint64_t head = folio_head(pfn, f);
				uint64_t hf = head == pfn ? f : kpf_one(head);
				uint64_t nr = folio_nr(head, hf);
				uint64_t j = i + 1;

				piece.kind = (f & (1ULL << KPF_ZERO_PAGE)) ? PK_HZERO : PK_FOLIO;
				piece.order = ilog2u(nr);
				piece.idx = pfn - head;
				piece.thp = !!(hf & (1ULL << KPF_THP));
				piece.anon = !!(hf & (1ULL << KPF_ANON));
				/* extend over VA- and PFN-contiguous pages of this folio */
				while (j < npages && (pm[j] & PM_PRESENT) &&
				       (pm[j] & PM_PFN_MASK) == pfn + (j - i) &&
				       pfn + (j - i) < head + nr)
					j++;
				piece.n = j - i;
				piece.whole = piece.idx == 0 && piece.n == nr;
				if (multi && piece.kind == PK_FOLIO && piece.anon)
					kpc_count(pfn, piece.n, kpc_hist);
				if (piece.kind == PK_HZERO) {
					hzero += piece.n;
				} else {
					pages_by_order[piece.order <= MAXORD ? piece.order : MAXORD] += piece.n;
					if (piece.whole)
						folios_by_order[piece.order <= MAXORD ? piece.order : MAXORD]++;
					else
						partial_by_order[piece.order <= MAXORD ? piece.order : MAXORD]++;
				}
				i = j;
			}
		}
		/* merge into current run? */
		if (have_cur && cur.kind == piece.kind &&
		    ((piece.kind == PK_NONE || piece.kind == PK_SWAP || piece.kind == PK_ZERO) ||
		     (cur.whole && piece.whole && cur.order == piece.order &&
		      cur.thp == piece.thp && cur.anon == piece.anon))) {
			cur.n += piece.n;
			cur.folios += piece.folios;
			continue;
		}
		FLUSH_RUN();
		cur = piece;
		have_cur = 1;
	}
	FLUSH_RUN();
	if (want_runs)
		emit("]");
	emit(",\"present\":%" PRIu64 ",\"zero\":%" PRIu64 ",\"hzero\":%" PRIu64
	     ",\"swap\":%" PRIu64, present, zero, hzero, swapped);
	if (multi) {
		emit(",\"excl\":%" PRIu64 ",\"kpc\":{", excl);
		for (int c = 0, f = 1; c < MAXKPC; c++)
			if (kpc_hist[c]) {
				emit("%s\"%d\":%" PRIu64, f ? "" : ",", c, kpc_hist[c]);
				f = 0;
			}
		emit("}");
	}
	emit(",\"pages_by_order\":{");
	for (int o = 0, f = 1; o <= MAXORD; o++)
		if (pages_by_order[o]) {
			emit("%s\"%d\":%" PRIu64, f ? "" : ",", o, pages_by_order[o]);
			f = 0;
		}
	emit("},\"folios_by_order\":{");
	for (int o = 0, f = 1; o <= MAXORD; o++)
		if (folios_by_order[o]) {
			emit("%s\"%d\":%" PRIu64, f ? "" : ",", o, folios_by_order[o]);
			f = 0;
		}
	emit("},\"partial_by_order\":{");
	for (int o = 0, f = 1; o <= MAXORD; o++)
		if (partial_by_order[o]) {
			emit("%s\"%d\":%" PRIu64, f ? "" : ",", o, partial_by_order[o]);
			f = 0;
		}
	emit("}}");
	munmap(pm, pm_size);
#undef FLUSH_RUN
}

/* VMAs from /proc/self/smaps overlapping any mapping ever created */
static void emit_vmas(void)
{
	static char big[1 << 22];
	ssize_t n = read_file("/proc/self/smaps", big, sizeof(big));
	char *p, *line;
	int in = 0, first = 1;

	emit("\"vmas\":[");
	if (n < 0) {
		emit("]");
		return;
	}
	for (line = strtok_r(big, "\n", &p); line; line = strtok_r(NULL, "\n", &p)) {
		unsigned long s, e, kb;
		char perms[8], key[64];

		if (sscanf(line, "%lx-%lx %7s", &s, &e, perms) == 3 && strchr(line, '-') &&
		    isxdigit((unsigned char)line[0]) && strchr(line, ' ') > strchr(line, '-')) {
			if (in)
				emit("}");
			in = 0;
			for (int i = 0; i < nmaps; i++) {
				if (s < maps[i].addr + maps[i].len && e > maps[i].addr) {
					in = 1;
					break;
				}
			}
			if (!in)
				continue;
			emit("%s{\"start\":%lu,\"end\":%lu,\"perms\":\"%s\",\"ids\":[",
			     first ? "" : ",", s, e, perms);
			first = 0;
			for (int i = 0, f = 1; i < nmaps; i++)
				if (s < maps[i].addr + maps[i].len && e > maps[i].addr) {
					emit("%s", f ? "" : ",");
					emit_str(maps[i].id);
					f = 0;
				}
			emit("]");
			continue;
		}
		if (!in)
			continue;
		if (sscanf(line, "%63[^:]: %lu kB", key, &kb) == 2) {
			if (!strcmp(key, "Rss") || !strcmp(key, "Anonymous") ||
			    !strcmp(key, "AnonHugePages"))
				emit(",\"%s_kb\":%lu", key, kb);
			else if (!strcmp(key, "THPeligible"))
				emit(",\"thp_eligible\":%lu", kb);
		} else if (sscanf(line, "THPeligible: %lu", &kb) == 1) {
			emit(",\"thp_eligible\":%lu", kb);
		} else if (!strncmp(line, "VmFlags:", 8)) {
			char *v = line + 8;

			char *ve;

			while (*v == ' ')
				v++;
			ve = v + strlen(v);
			while (ve > v && ve[-1] == ' ')
				*--ve = 0;
			emit(",\"vmflags\":");
			emit_str(v);
		}
	}
	if (in)
		emit("}");
	emit("]");
}

static void emit_rss(void)
{
	char buf[4096];
	long size = 0, res = 0;
	char *p;

	if (read_file("/proc/self/statm", buf, sizeof(buf)) > 0)
		sscanf(buf, "%ld %ld", &size, &res);
	emit("\"rss\":{\"statm_resident_pages\":%ld", res);
	if (read_file("/proc/self/smaps_rollup", fbuf, sizeof(fbuf)) > 0) {
		static const char *const keys[] = { "Rss", "Anonymous", "AnonHugePages" };

		for (size_t k = 0; k < 3; k++) {
			char pat[32];
			unsigned long kb;

			snprintf(pat, sizeof(pat), "\n%s:", keys[k]);
			p = strstr(fbuf, pat);
			if (p && sscanf(p + strlen(pat), " %lu", &kb) == 1)
				emit(",\"%s_kb\":%lu", keys[k], kb);
		}
	}
	emit("}");
}

/* ------------------------------------------------------------------ */
/* snapshots                                                           */

static struct buf hdr_buf, ops_buf, snaps_buf;

/* per process: counters and faults of its own ops since its last snapshot */
static struct counters snap_acc;
static long long snap_minflt, snap_majflt;
/* main only: snapshots taken, ops since the last one (the "final" rule) */
static int nsnap;
static int ops_since_snapshot;

/* ,"proc":NAME for every process but main (single-process output unchanged) */
static void emit_proc(void)
{
	if (strcmp(proc_name, "main")) {
		emit(",\"proc\":");
		emit_str(proc_name);
	}
}

static void do_snapshot(const char *name, int want_runs, int op_index)
{
	emit("{\"name\":");
	emit_str(name);
	emit_proc();
	emit(",\"after_op\":%d,\"minflt\":%lld,\"majflt\":%lld,", op_index,
	     snap_minflt, snap_majflt);
	emit_counter_delta(&snap_acc);
	emit(",");
	emit_rss();
	emit(",\"mappings\":[");
	for (int i = 0, first = 1; i < nmaps; i++) {
		emit("%s", first ? "" : ",");
		emit_layout(&maps[i], want_runs);
		first = 0;
	}
	emit("],");
	emit_vmas();
	emit("}");
	memset(&snap_acc, 0, sizeof(snap_acc));
	snap_minflt = snap_majflt = 0;
}

static int snapshot_runs(char **tok, int nt)
{
	int runs = 1;

	for (int k = 2; k < nt; k++)
		if (!strncmp(tok[k], "runs=", 5))
			runs = atoi(tok[k] + 5);
	return runs;
}

/* ------------------------------------------------------------------ */
/* processes                                                           */

#define MAXPROC 32

struct proc {
	char name[64];
	pid_t pid;
	int pidfd;      /* readable once the process has exited */
	int forker;     /* index of the process that forked it */
	int alive;
};

/* procs[0] is main; procs[k] talks over cmd_pipe[k] / rep_pipe[k] */
static struct proc procs[MAXPROC];
static int nprocs = 1;
static int cmd_pipe[MAXPROC][2], rep_pipe[MAXPROC][2];
static int main_pidfd = -1;
static pid_t last_fork_pid;

enum { CMD_OP, CMD_SNAP, CMD_EXIT, REP_READY };

struct cmd_hdr {
	int32_t type, opi, lineno, slot;
	uint32_t len;
};

struct rep_hdr {
	int32_t type, pid;
	uint32_t len;
};

static char altstack[256 << 10];

static void write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n) {
		ssize_t k = write(fd, c, n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			die("pipe write: %s", strerror(errno));
		c += k;
		n -= (size_t)k;
	}
}

/*
 * Read n bytes from fd; die when other_pidfd (a process that should be
 * writing, or main) becomes readable first, i.e. that process is gone.
 * exit_code >= 0: _exit(exit_code) instead of dying (a child whose main
 * died leaves quietly).
 */
static void read_all(int fd, void *p, size_t n, int other_pidfd, const char *who,
		     int exit_code)
{
	char *c = p;

	while (n) {
		struct pollfd pf[2] = { { fd, POLLIN, 0 }, { other_pidfd, POLLIN, 0 } };
		int k = poll(pf, other_pidfd >= 0 ? 2 : 1, 600 * 1000);
		ssize_t got;

		if (k < 0 && errno == EINTR)
			continue;
		if (!(pf[0].revents & POLLIN)) {
			if (exit_code >= 0)
				_exit(exit_code);
			die(k == 0 ? "no reply from process %s" : "process %s died", who);
		}
		got = read(fd, c, n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			die("pipe read from %s: %s", who, got ? strerror(errno) : "EOF");
		c += got;
		n -= (size_t)got;
	}
}

static int pidfd_open(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

#define MAXTOK 16

/*
 * Strip the comment and blanks of line, copy what is left to orig and split
 * it into tok[]; a leading "@PROC" goes to *proc (NULL: none).  Returns the
 * number of tokens (0: blank line).
 */
static int split_line(char *line, char *orig, size_t orig_len, char **tok, char **proc,
		      int lineno)
{
	char *s, *sp;
	int nt = 0;

	*proc = NULL;
	if ((s = strchr(line, '#')))
		*s = 0;
	s = line + strlen(line);
	while (s > line && isspace((unsigned char)s[-1]))
		*--s = 0;
	for (s = line; isspace((unsigned char)*s); s++)
		;
	if (!*s)
		return 0;
	snprintf(orig, orig_len, "%s", s);
	for (char *t = strtok_r(s, " \t", &sp); t && nt < MAXTOK; t = strtok_r(NULL, " \t", &sp)) {
		if (!nt && !*proc && t[0] == '@')
			*proc = t + 1;
		else
			tok[nt++] = t;
	}
	for (int k = nt; k < MAXTOK; k++)
		tok[k] = NULL;
	if (*proc && (!nt || !**proc))
		die("line %d: @PROC needs a process name and an op", lineno);
	return nt;
}

static void run_op(char **tok, int nt, const char *orig, int lineno, int opi, int slot);

/*
 * The child side of a fork op: become process name, talking over pipe pair
 * slot; report ready, then run the ops main sends until told to exit.
 */
static void __attribute__((noreturn)) child_main(const char *name, int slot)
{
	static char line[4096], orig[4096];
	char *tok[MAXTOK], *proc;
	struct rep_hdr ready = { REP_READY, 0, 0 };

	snprintf(proc_name, sizeof(proc_name), "%s", name);
	close(pagemap_fd);
	pagemap_fd = open("/proc/self/pagemap", O_RDONLY);
	/* write-fault the alternate signal stack now, not inside a window */
	memset(altstack, 1, sizeof(altstack));
	memset(&snap_acc, 0, sizeof(snap_acc));
	snap_minflt = snap_majflt = 0;
	write_all(rep_pipe[slot][1], &ready, sizeof(ready));
	for (;;) {
		struct cmd_hdr h;
		struct rep_hdr r = { 0, 0, 0 };
		int nt;

		read_all(cmd_pipe[slot][0], &h, sizeof(h), main_pidfd, "main", 3);
		if (h.type == CMD_EXIT)
			_exit(0);
		if (h.len >= sizeof(line))
			_exit(3);
		read_all(cmd_pipe[slot][0], line, h.len, main_pidfd, "main", 3);
		line[h.len] = 0;
		nt = split_line(line, orig, sizeof(orig), tok, &proc, h.lineno);
		ops_buf.len = 0;
		out = &ops_buf;
		last_fork_pid = 0;
		if (h.type == CMD_SNAP)
			do_snapshot(nt > 1 ? tok[1] : "snapshot", snapshot_runs(tok, nt), h.opi - 1);
		else
			run_op(tok, nt, orig, h.lineno, h.opi, h.slot);
		r.type = h.type;
		r.pid = last_fork_pid;
		r.len = (uint32_t)ops_buf.len;
		write_all(rep_pipe[slot][1], &r, sizeof(r));
		write_all(rep_pipe[slot][1], ops_buf.p, ops_buf.len);
	}
}

/* the fork op: returns the child's pid (or -1); the child never returns */
static pid_t fork_op(const char *name, int slot)
{
	struct rep_hdr ready;
	pid_t pid;

	if (!multi || slot <= 0)
		die("fork outside a fork program");
	pid = fork();
	if (pid == 0)
		child_main(name, slot);
	if (pid > 0) {
		/* the op ends when the child is set up (its own faults included) */
		int pfd = pidfd_open(pid);

		read_all(rep_pipe[slot][0], &ready, sizeof(ready), pfd, name, -1);
		close(pfd);
	}
	return pid;
}

static void send_cmd(int idx, int type, int opi, int lineno, int slot, const char *text)
{
	struct cmd_hdr h = { type, opi, lineno, slot, (uint32_t)strlen(text) };

	write_all(cmd_pipe[idx][1], &h, sizeof(h));
	write_all(cmd_pipe[idx][1], text, h.len);
}

/* the reply of process idx to its last command, as the next item of into */
static void recv_reply(int idx, struct buf *into)
{
	struct proc *p = &procs[idx];
	struct rep_hdr r;

	read_all(rep_pipe[idx][0], &r, sizeof(r), p->pidfd, p->name, -1);
	begin_item(into);
	if (r.len >= into->cap - into->len)
		die("output too large");
	read_all(rep_pipe[idx][0], into->p + into->len, r.len, p->pidfd, p->name, -1);
	into->len += r.len;
	last_fork_pid = r.pid;
}

static int find_proc(const char *name, int lineno)
{
	for (int i = nprocs - 1; i >= 0; i--)
		if (procs[i].alive && !strcmp(procs[i].name, name))
			return i;
	die("line %d: no live process '%s'", lineno, name);
	return -1;
}

/* process idx calls _exit(0); returns once its mm is gone */
static void exit_proc(int idx)
{
	struct proc *p = &procs[idx];
	struct cmd_hdr h = { CMD_EXIT, 0, 0, 0, 0 };
	struct pollfd pf = { p->pidfd, POLLIN, 0 };

	write_all(cmd_pipe[idx][1], &h, sizeof(h));
	while (poll(&pf, 1, 600 * 1000) != 1)
		if (errno != EINTR)
			die("process %s does not exit", p->name);
	if (p->forker == 0)
		waitpid(p->pid, NULL, 0);
	close(p->pidfd);
	p->alive = 0;
}

/*
 * Give laf_kprog's own memory order-0 folios only, so that a fork program's
 * counters (split_deferred, nr_anon, ... at exit) see only its mappings: the
 * process was exec'ed with PR_SET_THP_DISABLE (so everything faulted so far
 * is order 0); mark every private anonymous VMA MADV_NOHUGEPAGE, fault the
 * stack a child will use, then restore the prctl state found at start.
 */
static void thp_off_for_self(int thp_disable_start)
{
	static char maps_txt[1 << 16];
	char *p, *line;

	if (read_file("/proc/self/maps", maps_txt, sizeof(maps_txt)) > 0) {
		for (line = strtok_r(maps_txt, "\n", &p); line; line = strtok_r(NULL, "\n", &p)) {
			unsigned long s, e;
			char perms[8], path[256] = "";

			if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %255s", &s, &e, perms, path) < 3)
				continue;
			if (perms[1] == 'w' && perms[3] == 'p' && (!path[0] || path[0] == '['))
				madvise((void *)s, e - s, MADV_NOHUGEPAGE);
		}
	}
	{
		volatile char stack[512 << 10];

		for (size_t i = 0; i < sizeof(stack); i += 4096)
			stack[i] = 0;
	}
	if (thp_disable_start & 2)
		prctl(PR_SET_THP_DISABLE, 1, PR_THP_DISABLE_EXCEPT_ADVISED, 0, 0);
	else
		prctl(PR_SET_THP_DISABLE, thp_disable_start ? 1 : 0, 0, 0, 0);
}

#define REEXEC_ENV "LAF_KPROG_THP_DISABLE_START"

/* run again from the start with THP disabled, the program on a memfd */
static void reexec_without_thp(char **argv, const char *prog, size_t prog_len)
{
	char val[16];
	int fd = memfd_create("laf_kprog_program", 0);

	if (fd < 0)
		die("memfd_create: %s", strerror(errno));
	write_all(fd, prog, prog_len);
	lseek(fd, 0, SEEK_SET);
	dup2(fd, 0);
	close(fd);
	snprintf(val, sizeof(val), "%d", prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0));
	setenv(REEXEC_ENV, val, 1);
	prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
	execv("/proc/self/exe", argv);
	die("re-exec: %s", strerror(errno));
}

/* pipes for every process, every process on main's CPU, main's pidfd */
static void setup_processes(void)
{
	cpu_set_t set;
	int cpu = sched_getcpu();

	for (int i = 1; i < MAXPROC; i++)
		if (pipe(cmd_pipe[i]) || pipe(rep_pipe[i]))
			die("pipe: %s", strerror(errno));
	CPU_ZERO(&set);
	CPU_SET(cpu >= 0 ? cpu : 0, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		fprintf(stderr, "laf_kprog: warning: sched_setaffinity: %s\n", strerror(errno));
	main_pidfd = pidfd_open(getpid());
	snprintf(procs[0].name, sizeof(procs[0].name), "main");
	procs[0].pid = getpid();
	procs[0].pidfd = -1;
	procs[0].alive = 1;
}

/* ------------------------------------------------------------------ */
/* ops                                                                 */

static void run_madvise_like(char **tok, int nt, int lineno, long *rc, int *err)
{
	struct mapping *m = find_map(tok[1] ? tok[1] : "");
	long long off, len;
	void *a;

	if (!m || nt < 4)
		die("line %d: %s ID OFF LEN ... (unknown id?)", lineno, tok[0]);
	off = need_num(tok[2], lineno);
	len = need_num(tok[3], lineno);
	a = (void *)(m->addr + off);
	if (!strcmp(tok[0], "munmap")) {
		*rc = munmap(a, len);
	} else if (!strcmp(tok[0], "mprotect")) {
		int prot = nt > 4 ? parse_prot(tok[4]) : -1;

		if (prot < 0)
			die("line %d: mprotect ID OFF LEN rw|r|rx|none|rwx", lineno);
		*rc = mprotect(a, len, prot);
	} else {
		static const struct { const char *n; int v; } adv[] = {
			{ "hugepage", MADV_HUGEPAGE }, { "nohugepage", MADV_NOHUGEPAGE },
			{ "dontneed", MADV_DONTNEED }, { "free", MADV_FREE },
			{ "cold", MADV_COLD }, { "pageout", MADV_PAGEOUT },
			{ "collapse", MADV_COLLAPSE }, { "willneed", MADV_WILLNEED },
			{ "populate_read", MADV_POPULATE_READ },
			{ "populate_write", MADV_POPULATE_WRITE },
			{ "dontfork", MADV_DONTFORK }, { "dofork", MADV_DOFORK },
			{ "wipeonfork", MADV_WIPEONFORK }, { "keeponfork", MADV_KEEPONFORK },
		};
		int advice = -1;

		for (size_t k = 0; k < sizeof(adv) / sizeof(adv[0]); k++)
			if (nt > 4 && !strcmp(tok[4], adv[k].n))
				advice = adv[k].v;
		if (advice < 0)
			die("line %d: unknown madvise advice", lineno);
		*rc = madvise(a, len, advice);
	}
	if (*rc)
		*err = errno;
}

/* ADDR, or @ID[+OFF]: the address OFF bytes into mapping ID */
static uintptr_t parse_addr_ref(const char *h, int lineno)
{
	char idbuf[64], *plus;
	long long off = 0;
	struct mapping *hm;

	if (*h != '@')
		return (uintptr_t)need_num(h, lineno);
	snprintf(idbuf, sizeof(idbuf), "%s", h + 1);
	plus = strchr(idbuf, '+');
	if (plus) {
		*plus = 0;
		off = need_num(plus + 1, lineno);
	}
	hm = find_map(idbuf);
	if (!hm)
		die("line %d: unknown mapping %s", lineno, idbuf);
	return hm->addr + off;
}

/*
 * mremap ID OLD_LEN NEW_LEN [maymove] [fixed=..] [dontunmap] [as=NEWID]
 * (see the top): the new address in extra; ID (or NEWID) names the result.
 */
static void run_mremap(char **tok, int nt, int lineno, long *rc, int *err, char *extra,
		       size_t extra_len)
{
	struct mapping *m = find_map(nt > 1 ? tok[1] : "");
	const char *as = NULL;
	long long old_len, new_len;
	uintptr_t fixed = 0;
	int flags = 0;
	void *p;

	if (!m || nt < 4)
		die("line %d: mremap ID OLD_LEN NEW_LEN ... (unknown id?)", lineno);
	old_len = need_num(tok[2], lineno);
	new_len = need_num(tok[3], lineno);
	for (int k = 4; k < nt; k++) {
		if (!strcmp(tok[k], "maymove")) {
			flags |= MREMAP_MAYMOVE;
		} else if (!strncmp(tok[k], "fixed=", 6)) {
			flags |= MREMAP_FIXED | MREMAP_MAYMOVE;
			fixed = parse_addr_ref(tok[k] + 6, lineno);
		} else if (!strcmp(tok[k], "dontunmap")) {
			flags |= MREMAP_DONTUNMAP;
		} else if (!strncmp(tok[k], "as=", 3)) {
			as = tok[k] + 3;
		} else {
			die("line %d: unknown mremap option %s", lineno, tok[k]);
		}
	}
	p = mremap((void *)m->addr, old_len, new_len, flags, (void *)fixed);
	if (p == MAP_FAILED) {
		*rc = -1;
		*err = errno;
		return;
	}
	*rc = 0;
	if (as) {
		if (nmaps >= MAXMAP)
			die("too many mappings");
		m = &maps[nmaps++];
		snprintf(m->id, sizeof(m->id), "%s", as);
	}
	m->addr = (uintptr_t)p;
	m->len = new_len;
	snprintf(extra, extra_len, ",\"addr\":%" PRIuPTR ",\"addr_hex\":\"0x%" PRIxPTR
		 "\",\"len\":%lld", m->addr, m->addr, new_len);
}

static void run_mmap(char **tok, int nt, int lineno, long *rc, int *err, char *extra,
		     size_t extra_len)
{
	struct mapping *m;
	long long len, align = 0, misalign = 0;
	uintptr_t hint = 0;
	int prot = PROT_READ | PROT_WRITE, flags = MAP_PRIVATE | MAP_ANONYMOUS;
	void *p;

	if (nt < 3)
		die("line %d: mmap ID LEN ...", lineno);
	len = need_num(tok[2], lineno);
	if (nmaps >= MAXMAP)
		die("too many mappings");
	for (int k = 3; k < nt; k++) {
		if (!strncmp(tok[k], "align=", 6)) {
			align = need_num(tok[k] + 6, lineno);
		} else if (!strncmp(tok[k], "misalign=", 9)) {
			misalign = need_num(tok[k] + 9, lineno);
		} else if (!strncmp(tok[k], "hint=", 5)) {
			hint = parse_addr_ref(tok[k] + 5, lineno);
		} else if (!strncmp(tok[k], "prot=", 5)) {
			prot = parse_prot(tok[k] + 5);
			if (prot < 0)
				die("line %d: bad prot", lineno);
		} else if (!strcmp(tok[k], "fixed")) {
			flags |= MAP_FIXED;
		} else if (!strcmp(tok[k], "noreserve")) {
			flags |= MAP_NORESERVE;
		} else {
			die("line %d: unknown mmap option %s", lineno, tok[k]);
		}
	}
	if (align > 0) {
		size_t rlen = len + align + misalign;
		uintptr_t base, a;

		p = mmap((void *)hint, rlen, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED) {
			*err = errno;
		} else {
			base = (uintptr_t)p;
			a = ((base + align - 1) & ~((uintptr_t)align - 1)) + misalign;
			p = mmap((void *)a, len, prot, flags | MAP_FIXED, -1, 0);
			if (p == MAP_FAILED)
				*err = errno;
			if (a > base)
				munmap((void *)base, a - base);
			if (base + rlen > a + len)
				munmap((void *)(a + len), base + rlen - (a + len));
		}
	} else {
		p = mmap((void *)hint, len, prot, flags, -1, 0);
		if (p == MAP_FAILED)
			*err = errno;
	}
	*rc = *err ? -1 : 0;
	if (!*err) {
		m = &maps[nmaps++];
		snprintf(m->id, sizeof(m->id), "%s", tok[1]);
		m->addr = (uintptr_t)p;
		m->len = len;
		snprintf(extra, extra_len, ",\"addr\":%" PRIuPTR
			 ",\"addr_hex\":\"0x%" PRIxPTR "\",\"len\":%lld",
			 m->addr, m->addr, len);
	}
}

static void emit_op(int opi, int lineno, const char *op, const char *orig, long rc, int err)
{
	emit("{\"i\":%d,\"line\":%d,\"op\":\"%s\",\"text\":", opi, lineno, op);
	emit_str(orig);
	emit_proc();
	emit(",\"rc\":%ld,\"errno\":%d", rc, err);
	if (err)
		emit(",\"strerror\":\"%s\"", strerror(err));
}

/* read and write back one byte per page of [p, p+n) */
static void touch_rw(volatile void *p, size_t n)
{
	volatile char *c = p;

	for (size_t i = 0; i < n; i += 4096)
		c[i] = c[i];
	if (n)
		c[n - 1] = c[n - 1];
}

static void __attribute__((noinline)) touch_stack_below(void)
{
	volatile char pad[64 << 10];

	for (size_t i = 0; i < sizeof(pad); i += 4096)
		pad[i] = 0;
}

/*
 * Fork programs: write-fault, before an op's counter window opens, every page
 * of laf_kprog's own that the op writes, so the window's pgreuse (and the
 * touch window's ru_minflt) sees only the program's mappings.  After a fork
 * these pages are write-protected in both processes, and whichever writes one
 * second reuses it (mm/memory.c wp_can_reuse_anon_folio()).
 */
static void quiesce_writes(void *frame, size_t frame_len)
{
	memset(frame, 0, frame_len);
	touch_stack_below();
	touch_rw(fbuf, sizeof(fbuf));
	touch_rw(maps, sizeof(maps));
	touch_rw(procs, sizeof(procs));
	touch_rw(&touch_cur, sizeof(touch_cur));
	touch_rw(&sink, sizeof(sink));
	touch_rw(&in_touch, sizeof(in_touch));
	touch_rw(&touch_jmp, sizeof(touch_jmp));
}

/*
 * Run one op in this process and emit its JSON object into out: counter
 * deltas around the op, minflt/majflt around a touch loop.  slot: the pipe
 * pair of the process a fork op creates.
 */
static void run_op(char **tok, int nt, const char *orig, int lineno, int opi, int slot)
{
	struct {
		struct counters c0, c1, d;
		struct rusage r0, r1;
		char extra[512];
	} w;
	struct counters *c0 = &w.c0, *c1 = &w.c1, *d = &w.d;
	struct rusage *r0 = &w.r0, *r1 = &w.r1;
	char *extra = w.extra;
	int touched = 0, sig = 0, err = 0;
	long rc = 0;
	struct buf *dest = out;

	if (multi)
		quiesce_writes(&w, sizeof(w));
	extra[0] = 0;
	read_counters(c0);
	if (!strcmp(tok[0], "mmap")) {
		run_mmap(tok, nt, lineno, &rc, &err, extra, sizeof(w.extra));
	} else if (!strcmp(tok[0], "munmap") || !strcmp(tok[0], "madvise") ||
		   !strcmp(tok[0], "mprotect")) {
		run_madvise_like(tok, nt, lineno, &rc, &err);
	} else if (!strcmp(tok[0], "mremap")) {
		run_mremap(tok, nt, lineno, &rc, &err, extra, sizeof(w.extra));
	} else if (!strcmp(tok[0], "prctl")) {
		unsigned long flags = 0, dis;

		if (nt < 3 || strcmp(tok[1], "thp_disable"))
			die("line %d: prctl thp_disable 0|1|except_advised", lineno);
		if (!strcmp(tok[2], "except_advised")) {
			dis = 1;
			flags = PR_THP_DISABLE_EXCEPT_ADVISED;
		} else {
			dis = strtoul(tok[2], NULL, 0);
		}
		rc = prctl(PR_SET_THP_DISABLE, dis, flags, 0, 0);
		if (rc)
			err = errno;
		snprintf(extra, sizeof(w.extra), ",\"get_thp_disable\":%d",
			 prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0));
	} else if (!strcmp(tok[0], "read") || !strcmp(tok[0], "write")) {
		struct mapping *m = find_map(tok[1] ? tok[1] : "");
		long long off, len = 1, stride = page_size;

		if (!m || nt < 3)
			die("line %d: %s ID OFF [LEN [STRIDE]] (unknown id?)", lineno, tok[0]);
		off = need_num(tok[2], lineno);
		if (nt > 3)
			len = need_num(tok[3], lineno);
		if (nt > 4)
			stride = need_num(tok[4], lineno);
		if (!stride)
			die("line %d: zero stride", lineno);
		touched = 1;
		sig = do_touch(m->addr + off, len, stride, tok[0][0] == 'w', r0, r1);
		if (sig)
			snprintf(extra, sizeof(w.extra), ",\"signal\":%d,\"fault_off\":%lld",
				 sig, (long long)(touch_cur - m->addr));
	} else if (!strcmp(tok[0], "sleep")) {
		long long ms = need_num(tok[1], lineno);
		struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

		nanosleep(&ts, NULL);
	} else if (!strcmp(tok[0], "fork")) {
		pid_t pid;

		if (nt < 2)
			die("line %d: fork NAME", lineno);
		pid = fork_op(tok[1], slot);
		last_fork_pid = pid;
		if (pid < 0) {
			rc = -1;
			err = errno;
		}
		snprintf(extra, sizeof(w.extra), ",\"pid\":%d", (int)pid);
	} else {
		die("line %d: unknown op '%s'", lineno, tok[0]);
	}
	read_counters(c1);

	memset(d, 0, sizeof(*d));
	counters_sub_add(d, c1, c0);
	counters_sub_add(&snap_acc, c1, c0);
	out = dest;
	emit_op(opi, lineno, tok[0], orig, rc, err);
	if (touched) {
		long long mi = r1->ru_minflt - r0->ru_minflt;
		long long ma = r1->ru_majflt - r0->ru_majflt;

		emit(",\"minflt\":%lld,\"majflt\":%lld", mi, ma);
		snap_minflt += mi;
		snap_majflt += ma;
	}
	emit("%s,", extra);
	emit_counter_delta(d);
	emit("}");
}

/* exit NAME, run by main: NAME exits; the op's counters span its exit_mmap() */
static void run_exit(int idx, const char *orig, int lineno, int opi)
{
	struct {
		struct counters c0, c1, d;
	} w;
	char name[64];

	quiesce_writes(&w, sizeof(w));
	read_counters(&w.c0);
	exit_proc(idx);
	read_counters(&w.c1);
	counters_sub_add(&w.d, &w.c1, &w.c0);
	counters_sub_add(&snap_acc, &w.c1, &w.c0);
	begin_item(&ops_buf);
	emit("{\"i\":%d,\"line\":%d,\"op\":\"exit\",\"text\":", opi, lineno);
	emit_str(orig);
	/* the op belongs to the process that exits */
	snprintf(name, sizeof(name), "%s", proc_name);
	snprintf(proc_name, sizeof(proc_name), "%s", procs[idx].name);
	emit_proc();
	snprintf(proc_name, sizeof(proc_name), "%s", name);
	emit(",\"rc\":0,\"errno\":0,");
	emit_counter_delta(&w.d);
	emit("}");
}

/* one op line of the program, run by main in the process it names */
static void dispatch(int target, char **tok, int nt, const char *orig, int lineno, int *opi)
{
	int slot = 0;

	if (!strcmp(tok[0], "snapshot")) {
		if (target == 0) {
			begin_item(&snaps_buf);
			do_snapshot(nt > 1 ? tok[1] : "snapshot", snapshot_runs(tok, nt), *opi - 1);
		} else {
			send_cmd(target, CMD_SNAP, *opi, lineno, 0, orig);
			recv_reply(target, &snaps_buf);
		}
		nsnap++;
		ops_since_snapshot = 0;
		return;
	}
	if (!strcmp(tok[0], "exit")) {
		if (target != 0 || nt < 2)
			die("line %d: exit NAME (run by main)", lineno);
		target = find_proc(tok[1], lineno);
		if (target == 0)
			die("line %d: main cannot exit", lineno);
		run_exit(target, orig, lineno, *opi);
	} else {
		if (!strcmp(tok[0], "fork")) {
			if (nt < 2 || nprocs >= MAXPROC)
				die("line %d: fork NAME (at most %d processes)", lineno, MAXPROC - 1);
			for (int i = 0; i < nprocs; i++)
				if (procs[i].alive && !strcmp(procs[i].name, tok[1]))
					die("line %d: process %s exists", lineno, tok[1]);
			slot = nprocs;
		}
		last_fork_pid = 0;
		if (target == 0) {
			begin_item(&ops_buf);
			run_op(tok, nt, orig, lineno, *opi, slot);
		} else {
			send_cmd(target, CMD_OP, *opi, lineno, slot, orig);
			recv_reply(target, &ops_buf);
		}
		if (slot) {
			struct proc *p = &procs[nprocs++];

			snprintf(p->name, sizeof(p->name), "%s", tok[1]);
			p->pid = last_fork_pid;
			p->forker = target;
			p->alive = last_fork_pid > 0;
			p->pidfd = p->alive ? pidfd_open(p->pid) : -1;
			if (p->alive && p->pidfd < 0)
				die("pidfd_open: %s", strerror(errno));
		}
	}
	(*opi)++;
	ops_since_snapshot++;
}

/* ------------------------------------------------------------------ */
/* main                                                                */

/* stdin, whole, into a buffer that is not part of any test mapping */
static char *read_program(size_t *len)
{
	static struct buf prog;
	ssize_t n;

	buf_init(&prog, 64UL << 20);
	while ((n = read(0, prog.p + prog.len, prog.cap - 1 - prog.len)) > 0)
		prog.len += (size_t)n;
	if (n < 0)
		die("reading the program: %s", strerror(errno));
	prog.p[prog.len] = 0;
	*len = prog.len;
	return prog.p;
}

/* the next line of the program (NUL-terminated in place), NULL at the end */
static char *next_line(char **cursor)
{
	char *s = *cursor, *nl;

	if (!*s)
		return NULL;
	nl = strchr(s, '\n');
	if (nl) {
		*nl = 0;
		*cursor = nl + 1;
	} else {
		*cursor = s + strlen(s);
	}
	return s;
}

static int program_forks(const char *prog)
{
	static char copy[4096], orig[4096];
	char *tok[MAXTOK], *proc;
	const char *s = prog;
	int lineno = 0;

	while (*s) {
		size_t n = strcspn(s, "\n");

		lineno++;
		snprintf(copy, sizeof(copy), "%.*s", (int)n, s);
		if (split_line(copy, orig, sizeof(orig), tok, &proc, lineno) &&
		    !strcmp(tok[0], "fork"))
			return 1;
		s += n + (s[n] == '\n');
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* laf_kprog --map-count                                               */

/* mm->map_count: the lines of /proc/self/maps but the gate area [vsyscall] */
static long proc_map_count(void)
{
	char line[512];
	long n = 0;
	FILE *f = fopen("/proc/self/maps", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strstr(line, "[vsyscall]"))
			n++;
	fclose(f);
	return n;
}

static void emit_step(const char *name, int r)
{
	emit(",\"%s\":{\"errno\":%d,\"map_count\":%ld}", name, r ? errno : 0, proc_map_count());
}

/*
 * map_count_probe - where vm.max_map_count stops mappings and splits
 *
 * A PROT_NONE reservation, then one-page MAP_FIXED PROT_READ mappings on
 * every other page of it, until one fails: each mapping splits the
 * reservation in its middle (mm/vma.c vms_gather_munmap_vmas(): refused at
 * map_count >= max_map_count); the first one sits at the reservation's start
 * and adds one VMA, each later one two.  Then, at the limit, the operations
 * of docs/kernel-findings.md 5.6 on a 16-page read-write mapping made before
 * the fill, and a new one-page mmap (do_mmap(): refused at map_count >
 * max_map_count).  Output: one JSON object (page_size, max_map_count,
 * existing = map_count before the probe's mappings, start = after the
 * 16-page mapping and the reservation, mapped = MAP_FIXED mappings made, and
 * errno + map_count after the failing mmap and each follow-up).
 */
static int map_count_probe(void)
{
	long max = 0, existing, i, ps = page_size;
	char *base, *big;
	FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
	int r;

	if (!f || fscanf(f, "%ld", &max) != 1) {
		fprintf(stderr, "laf_kprog: cannot read /proc/sys/vm/max_map_count\n");
		return 2;
	}
	fclose(f);
	existing = proc_map_count();
	big = mmap(NULL, 16 * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	base = mmap(NULL, (size_t)(max + 64) * 2 * ps, PROT_NONE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (big == MAP_FAILED || base == MAP_FAILED) {
		fprintf(stderr, "laf_kprog: cannot map the probe's reservation\n");
		return 2;
	}
	emit("{\"page_size\":%ld,\"max_map_count\":%ld,\"existing\":%ld,\"start\":%ld", ps, max,
	     existing, proc_map_count());
	for (i = 0;; i++) {
		void *p = mmap(base + i * 2 * ps, ps, PROT_READ,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);

		if (p == MAP_FAILED)
			break;
	}
	emit(",\"mapped\":%ld", i);
	emit_step("mmap_fixed", -1);
	r = munmap(big + 4 * ps, ps);
	emit_step("munmap_middle", r);
	r = munmap(big, ps);
	emit_step("munmap_edge", r);
	r = madvise(big + 10 * ps, ps, MADV_NOHUGEPAGE);
	emit_step("madvise_nohugepage_middle", r);
	r = madvise(big + 10 * ps, ps, MADV_DONTNEED);
	emit_step("madvise_dontneed_middle", r);
	r = mmap(NULL, ps, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED ? -1 : 0;
	emit_step("mmap_new", r);
	emit("}\n");
	fwrite(hdr_buf.p, 1, hdr_buf.len, stdout);
	return 0;
}

int main(int argc, char **argv)
{
	static char line[4096], orig[4096];
	char *tok[MAXTOK], *proc, *prog, *cursor, *l;
	int lineno = 0, opi = 0, thp_disable_start = 0;
	struct sigaction sa;
	size_t prog_len;
	const char *reexec = getenv(REEXEC_ENV);

	page_size = sysconf(_SC_PAGESIZE);
	if (argc > 1 && !strcmp(argv[1], "--map-count")) {
		buf_init(&hdr_buf, OUTBUF_SIZE);
		out = &hdr_buf;
		return map_count_probe();
	}
	prog = read_program(&prog_len);
	multi = program_forks(prog);
	if (multi && !reexec)
		reexec_without_thp(argv, prog, prog_len);
	if (multi) {
		thp_disable_start = atoi(reexec);
		unsetenv(REEXEC_ENV);
		madvise(prog, 64UL << 20, MADV_NOHUGEPAGE);
	}
	buf_init(&hdr_buf, OUTBUF_SIZE);
	out = &hdr_buf;
	discover_counters();
	if (multi)
		thp_off_for_self(thp_disable_start);
	emit("{\"page_size\":%ld,\"sizes_kb\":[", page_size);
	for (int i = 0; i < nsizes; i++)
		emit("%s%lu", i ? "," : "", size_kb[i]);
	emit("],");
	emit_settings();
	emit(",\"get_thp_disable_start\":%d", prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0));
	buf_init(&ops_buf, OUTBUF_SIZE);
	buf_init(&snaps_buf, OUTBUF_SIZE);

	/*
	 * Deliver SIGSEGV/SIGBUS on a pre-touched alternate stack: otherwise the
	 * signal frame can land on a not yet touched page of the main stack and
	 * its fault (an mTHP with large folios enabled) is counted in the op's
	 * window.
	 */
	{
		stack_t ss = { .ss_sp = altstack, .ss_size = sizeof(altstack) };

		memset(altstack, 1, sizeof(altstack));
		if (sigaltstack(&ss, NULL))
			fprintf(stderr, "laf_kprog: warning: sigaltstack: %s\n", strerror(errno));
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = segv_handler;
	sa.sa_flags = SA_NODEFER | SA_ONSTACK;
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);

	pagemap_fd = open("/proc/self/pagemap", O_RDONLY);
	kpf_fd = open("/proc/kpageflags", O_RDONLY);
	if (multi)
		kpc_fd = open("/proc/kpagecount", O_RDONLY);
	if (pagemap_fd < 0 || kpf_fd < 0)
		fprintf(stderr, "laf_kprog: warning: cannot open pagemap/kpageflags "
			"(need root); folio layout will be empty\n");
	if (multi)
		setup_processes();

	cursor = prog;
	while ((l = next_line(&cursor))) {
		int nt, target = 0;

		lineno++;
		snprintf(line, sizeof(line), "%s", l);
		nt = split_line(line, orig, sizeof(orig), tok, &proc, lineno);
		if (!nt)
			continue;
		if (proc) {
			if (!multi)
				die("line %d: @%s in a program without fork", lineno, proc);
			target = find_proc(proc, lineno);
		}
		dispatch(target, tok, nt, orig, lineno, &opi);
	}

	if (nsnap == 0 || ops_since_snapshot) {
		begin_item(&snaps_buf);
		do_snapshot("final", 1, opi - 1);
	}
	for (int i = nprocs - 1; i > 0; i--)
		if (procs[i].alive)
			exit_proc(i);

	/* assemble */
	fwrite(hdr_buf.p, 1, hdr_buf.len, stdout);
	printf(",\"get_thp_disable_end\":%d,\"ops\":[", prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0));
	fwrite(ops_buf.p, 1, ops_buf.len, stdout);
	fputs("],\"snapshots\":[", stdout);
	fwrite(snaps_buf.p, 1, snaps_buf.len, stdout);
	fputs("]}\n", stdout);
	return 0;
}
