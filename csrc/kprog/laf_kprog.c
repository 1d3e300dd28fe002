// SPDX-License-Identifier: MIT
/*
 * laf_kprog: run an "access program" against the live kernel's anonymous
 * fault path and report what happened as JSON on stdout.
 *
 * Build:  cc -O2 -o laf_kprog csrc/kprog/laf_kprog.c
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
 *   mprotect ID OFF LEN rw|r|none|rwx
 *   madvise ID OFF LEN hugepage|nohugepage|dontneed|free|cold|pageout|
 *                      collapse|willneed|populate_read|populate_write|
 *                      dontfork|dofork   (dontfork: split a VMA without
 *                      touching its THP eligibility)
 *   prctl thp_disable 0|1|except_advised
 *   read ID OFF [LEN [STRIDE]]     touch one byte per STRIDE (default 4096)
 *   write ID OFF [LEN [STRIDE]]    in [OFF, OFF+LEN); STRIDE<0 walks downwards
 *   sleep MS
 *   snapshot NAME [runs=0|1]
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
#include <sys/resource.h>
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

#define THP_DIR "/sys/kernel/mm/transparent_hugepage"

/* kpageflags bits */
#define KPF_ANON 12
#define KPF_COMPOUND_HEAD 15
#define KPF_COMPOUND_TAIL 16
#define KPF_THP 22
#define KPF_ZERO_PAGE 24

#define PM_PFN_MASK ((1ULL << 55) - 1)
#define PM_SWAP (1ULL << 62)
#define PM_PRESENT (1ULL << 63)

static long page_size;

/* ------------------------------------------------------------------ */
/* output buffer (growable; only written outside measured windows)     */

static char *out;
static size_t out_len, out_cap;

/*
 * Output buffers are private MAP_NORESERVE mappings: without VM_ACCOUNT they
 * can never merge with the program's (accounted) test mappings, so the VMA
 * layout under test is not disturbed by laf_kprog's own memory.
 */
#define OUTBUF_SIZE (512UL << 20)

static char *outbuf_alloc(void)
{
	void *p = mmap(NULL, OUTBUF_SIZE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED) {
		fprintf(stderr, "laf_kprog: cannot map output buffer\n");
		exit(2);
	}
	return p;
}

static void emit(const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(out + out_len, out_cap - out_len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= out_cap - out_len) {
		fprintf(stderr, "laf_kprog: output too large\n");
		exit(2);
	}
	out_len += (size_t)n;
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
		if (!strncmp(name, "thp_", 4) || !strcmp(name, "nr_anon_transparent_hugepages"))
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

		if (line[0] != 't' && line[0] != 'n')
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

static int pagemap_fd = -1, kpf_fd = -1;

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

static void emit_layout(struct mapping *m, int want_runs)
{
	uint64_t npages = m->len / page_size;
	size_t pm_size = npages * 8 + 8;
	uint64_t *pm = mmap(NULL, pm_size, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	uint64_t pages_by_order[MAXORD + 1] = { 0 };
	uint64_t folios_by_order[MAXORD + 1] = { 0 };
	uint64_t partial_by_order[MAXORD + 1] = { 0 };
	uint64_t present = 0, zero = 0, hzero = 0, swapped = 0;
	struct run cur = { 0 };
	int have_cur = 0, first_run = 1;
	uint64_t i = 0;

	if (pm == MAP_FAILED)
		die("out of memory");
	if (pread(pagemap_fd, pm, npages * 8, (off_t)(m->addr / page_size * 8)) !=
	    (ssize_t)(npages * 8))
		memset(pm, 0, npages * 8);

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
/* main loop                                                           */

static struct counters snap_acc;
static long long snap_minflt, snap_majflt;
static int nsnap;
static int ops_since_snapshot;

static void do_snapshot(const char *name, int want_runs, int op_index)
{
	emit("%s{\"name\":", nsnap ? "," : "");
	emit_str(name);
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
	nsnap++;
	ops_since_snapshot = 0;
}

#define MAXTOK 16

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
	fwrite(out, 1, out_len, stdout);
	return 0;
}

int main(int argc, char **argv)
{
	static char line[4096], orig[4096];
	char *tok[MAXTOK];
	int lineno = 0, opi = 0;
	struct counters c0, c1;
	struct sigaction sa;
	char *ops_json = NULL, *snaps_json = NULL;
	size_t ops_len = 0, snaps_len = 0;
	char *hdr_json;
	size_t hdr_len;
	size_t ops_cap = 0, snaps_cap = 0;

	page_size = sysconf(_SC_PAGESIZE);
	out_cap = OUTBUF_SIZE;
	out = outbuf_alloc();
	if (argc > 1 && !strcmp(argv[1], "--map-count"))
		return map_count_probe();
	discover_counters();
	emit("{\"page_size\":%ld,\"sizes_kb\":[", page_size);
	for (int i = 0; i < nsizes; i++)
		emit("%s%lu", i ? "," : "", size_kb[i]);
	emit("],");
	emit_settings();
	emit(",\"get_thp_disable_start\":%d", prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0));
	hdr_json = out;
	hdr_len = out_len;
	out_len = 0;
	out = outbuf_alloc();

	/*
	 * Deliver SIGSEGV/SIGBUS on a pre-touched alternate stack: otherwise the
	 * signal frame can land on a not yet touched page of the main stack and
	 * its fault (an mTHP with large folios enabled) is counted in the op's
	 * window.
	 */
	{
		static char altstack[256 << 10];
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
	if (pagemap_fd < 0 || kpf_fd < 0)
		fprintf(stderr, "laf_kprog: warning: cannot open pagemap/kpageflags "
			"(need root); folio layout will be empty\n");

	/* two output streams: swap the global buffer between them */
	ops_cap = out_cap;
	ops_json = out;
	snaps_cap = OUTBUF_SIZE;
	snaps_json = outbuf_alloc();

#define USE_OPS()   do { out = ops_json; out_len = ops_len; out_cap = ops_cap; } while (0)
#define SAVE_OPS()  do { ops_json = out; ops_len = out_len; ops_cap = out_cap; } while (0)
#define USE_SNAP()  do { out = snaps_json; out_len = snaps_len; out_cap = snaps_cap; } while (0)
#define SAVE_SNAP() do { snaps_json = out; snaps_len = out_len; snaps_cap = out_cap; } while (0)


	while (fgets(line, sizeof(line), stdin)) {
		int nt = 0;
		char *s, *sp;
		struct rusage r0, r1;
		int touched = 0, sig = 0;
		long rc = 0;
		int err = 0;
		char extra[512] = "";

		lineno++;
		if ((s = strchr(line, '#')))
			*s = 0;
		s = line + strlen(line);
		while (s > line && isspace((unsigned char)s[-1]))
			*--s = 0;
		for (s = line; isspace((unsigned char)*s); s++)
			;
		if (!*s)
			continue;
		snprintf(orig, sizeof(orig), "%s", s);
		for (char *t = strtok_r(s, " \t", &sp); t && nt < MAXTOK; t = strtok_r(NULL, " \t", &sp))
			tok[nt++] = t;
		for (int k = nt; k < MAXTOK; k++)
			tok[k] = NULL;

		if (!strcmp(tok[0], "snapshot")) {
			int runs = 1;

			for (int k = 2; k < nt; k++)
				if (!strncmp(tok[k], "runs=", 5))
					runs = atoi(tok[k] + 5);
			USE_SNAP();
			do_snapshot(nt > 1 ? tok[1] : "snapshot", runs, opi - 1);
			SAVE_SNAP();
			continue;
		}

		read_counters(&c0);

		if (!strcmp(tok[0], "mmap")) {
			struct mapping *m;
			long long len = need_num(tok[2], lineno), align = 0, misalign = 0;
			uintptr_t hint = 0;
			int prot = PROT_READ | PROT_WRITE, flags = MAP_PRIVATE | MAP_ANONYMOUS;
			void *p;

			if (nt < 3)
				die("line %d: mmap ID LEN ...", lineno);
			if (nmaps >= MAXMAP)
				die("too many mappings");
			for (int k = 3; k < nt; k++) {
				if (!strncmp(tok[k], "align=", 6)) {
					align = need_num(tok[k] + 6, lineno);
				} else if (!strncmp(tok[k], "misalign=", 9)) {
					misalign = need_num(tok[k] + 9, lineno);
				} else if (!strncmp(tok[k], "hint=", 5)) {
					char *h = tok[k] + 5;

					if (*h == '@') {
						char idbuf[64], *plus;
						long long off = 0;
						struct mapping *hm;

						snprintf(idbuf, sizeof(idbuf), "%s", h + 1);
						plus = strchr(idbuf, '+');
						if (plus) {
							*plus = 0;
							off = need_num(plus + 1, lineno);
						}
						hm = find_map(idbuf);
						if (!hm)
							die("line %d: unknown mapping %s", lineno, idbuf);
						hint = hm->addr + off;
					} else {
						hint = (uintptr_t)need_num(h, lineno);
					}
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
					err = errno;
				} else {
					base = (uintptr_t)p;
					a = ((base + align - 1) & ~((uintptr_t)align - 1)) + misalign;
					p = mmap((void *)a, len, prot, flags | MAP_FIXED, -1, 0);
					if (p == MAP_FAILED)
						err = errno;
					if (a > base)
						munmap((void *)base, a - base);
					if (base + rlen > a + len)
						munmap((void *)(a + len), base + rlen - (a + len));
				}
			} else {
				p = mmap((void *)hint, len, prot, flags, -1, 0);
				if (p == MAP_FAILED)
					err = errno;
			}
			rc = err ? -1 : 0;
			if (!err) {
				m = &maps[nmaps++];
				snprintf(m->id, sizeof(m->id), "%s", tok[1]);
				m->addr = (uintptr_t)p;
				m->len = len;
				snprintf(extra, sizeof(extra), ",\"addr\":%" PRIuPTR
					 ",\"addr_hex\":\"0x%" PRIxPTR "\",\"len\":%lld",
					 m->addr, m->addr, len);
			}
		} else if (!strcmp(tok[0], "munmap") || !strcmp(tok[0], "madvise") ||
			   !strcmp(tok[0], "mprotect")) {
			struct mapping *m = find_map(tok[1] ? tok[1] : "");
			long long off, len;
			void *a;

			if (!m || nt < 4)
				die("line %d: %s ID OFF LEN ... (unknown id?)", lineno, tok[0]);
			off = need_num(tok[2], lineno);
			len = need_num(tok[3], lineno);
			a = (void *)(m->addr + off);
			if (!strcmp(tok[0], "munmap")) {
				rc = munmap(a, len);
			} else if (!strcmp(tok[0], "mprotect")) {
				int prot = nt > 4 ? parse_prot(tok[4]) : -1;

				if (prot < 0)
					die("line %d: mprotect ID OFF LEN rw|r|none", lineno);
				rc = mprotect(a, len, prot);
			} else {
				static const struct { const char *n; int v; } adv[] = {
					{ "hugepage", MADV_HUGEPAGE }, { "nohugepage", MADV_NOHUGEPAGE },
					{ "dontneed", MADV_DONTNEED }, { "free", MADV_FREE },
					{ "cold", MADV_COLD }, { "pageout", MADV_PAGEOUT },
					{ "collapse", MADV_COLLAPSE }, { "willneed", MADV_WILLNEED },
					{ "populate_read", MADV_POPULATE_READ },
					{ "populate_write", MADV_POPULATE_WRITE },
					{ "dontfork", MADV_DONTFORK }, { "dofork", MADV_DOFORK },
				};
				int advice = -1;

				for (size_t k = 0; k < sizeof(adv) / sizeof(adv[0]); k++)
					if (nt > 4 && !strcmp(tok[4], adv[k].n))
						advice = adv[k].v;
				if (advice < 0)
					die("line %d: unknown madvise advice", lineno);
				rc = madvise(a, len, advice);
			}
			if (rc)
				err = errno;
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
			snprintf(extra, sizeof(extra), ",\"get_thp_disable\":%d",
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
			sig = do_touch(m->addr + off, len, stride, tok[0][0] == 'w', &r0, &r1);
			if (sig)
				snprintf(extra, sizeof(extra), ",\"signal\":%d,\"fault_off\":%lld",
					 sig, (long long)(touch_cur - m->addr));
		} else if (!strcmp(tok[0], "sleep")) {
			long long ms = need_num(tok[1], lineno);
			struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

			nanosleep(&ts, NULL);
		} else {
			die("line %d: unknown op '%s'", lineno, tok[0]);
		}

		read_counters(&c1);

		{
			struct counters d;

			memset(&d, 0, sizeof(d));
			counters_sub_add(&d, &c1, &c0);
			counters_sub_add(&snap_acc, &c1, &c0);
			USE_OPS();
			emit("%s{\"i\":%d,\"line\":%d,\"op\":\"%s\",\"text\":", opi ? "," : "",
			     opi, lineno, tok[0]);
			emit_str(orig);
			emit(",\"rc\":%ld,\"errno\":%d", rc, err);
			if (err)
				emit(",\"strerror\":\"%s\"", strerror(err));
			if (touched) {
				long long mi = r1.ru_minflt - r0.ru_minflt;
				long long ma = r1.ru_majflt - r0.ru_majflt;

				emit(",\"minflt\":%lld,\"majflt\":%lld", mi, ma);
				snap_minflt += mi;
				snap_majflt += ma;
			}
			emit("%s,", extra);
			emit_counter_delta(&d);
			emit("}");
			SAVE_OPS();
		}
		opi++;
		ops_since_snapshot++;
	}

	if (nsnap == 0 || ops_since_snapshot) {
		USE_SNAP();
		do_snapshot("final", 1, opi - 1);
		SAVE_SNAP();
	}

	/* assemble */
	fwrite(hdr_json, 1, hdr_len, stdout);
	printf(",\"get_thp_disable_end\":%d,\"ops\":[", prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0));
	fwrite(ops_json, 1, ops_len, stdout);
	fputs("],\"snapshots\":[", stdout);
	fwrite(snaps_json, 1, snaps_len, stdout);
	fputs("]}\n", stdout);
	return 0;
}
