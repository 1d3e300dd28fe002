// SPDX-License-Identifier: MIT
/*
 * laf_tracee: run a command (and every descendant) under ptrace only to
 * capture what perf's syscall tracepoints cannot see: the address space each
 * execve() creates (binary, interpreter, .bss, [stack], vdso) and the kind
 * of every fork (fork / vfork / thread).  Used by `pylaf record`, which runs
 *
 *     perf record -e exceptions:page_fault_user ... -- laf_tracee -o LOG -- CMD...
 *
 * Build:  cc -O2 -o laf_tracee pylaf/live/csrc/laf_tracee.c
 * Usage:  laf_tracee [-R] [-n] [-o LOG] [-s STATS] -- CMD [ARGS...]
 *   -R    personality(ADDR_NO_RANDOMIZE) before exec, like `setarch -R`
 *         (inherited by every descendant)
 *   -n    no ptrace at all: just run CMD (used to measure it on the live
 *         kernel without the tracer's stops)
 *   -s    write {"minflt":N,"majflt":N,"status":S} to STATS at the end:
 *         getrusage(RUSAGE_CHILDREN), i.e. the faults of CMD and of every
 *         descendant that was waited for (the few faults the forked child
 *         takes before its execve included)
 *
 * The tracees stop only at PTRACE_EVENT_{EXEC,FORK,VFORK,CLONE} (and at
 * signal delivery, which is re-injected); no syscall stops.  LOG gets one
 * JSON object per line:
 *
 *   {"ev":"start","pid":P,"no_aslr":0|1,"page_size":4096}
 *   {"ev":"exec","pid":P,"n":K,"t":NS,"maps":[[start,end,"rw-p",off,"path"],...],
 *    "present":[[start,end,"hexbitmap"],...]}
 *       K counts the execs of pid P (matches the K-th sched_process_exec of
 *       P in the perf data); "present" gives, for every private anonymous
 *       VMA (no path, [heap], [stack]), which pages are already present
 *       (populated by the kernel during exec, e.g. argv/envp/auxv on the
 *       stack: those faults never reach the exception tracepoints).
 *       Bitmap: page i of the VMA is bit (i % 8) of byte (i / 8), hex.
 *   {"ev":"fork","kind":"fork|vfork|clone","thread":0|1,"parent":P,"child":C,"t":NS}
 *   {"ev":"end","status":S,"t":NS}   S: exit status of CMD (128+sig if killed)
 *
 * Exit status: that of CMD; 127 if CMD was not found, 126 if it could not be
 * executed (exec_failure_status()) or on tracer errors.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static FILE *logf;
static long page_size;

static unsigned long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000000000ULL + (unsigned long long)ts.tv_nsec;
}

static void json_str(const char *s)
{
	fputc('"', logf);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(logf, "\\%c", c);
		else if (c < 0x20)
			fprintf(logf, "\\u%04x", c);
		else
			fputc(c, logf);
	}
	fputc('"', logf);
}

/* ------------------------------------------------------------------ */
/* pid bookkeeping                                                     */

#define MAXPIDS 65536

struct tracee {
	pid_t pid;
	int started;    /* initial SIGSTOP consumed */
	int execs;
};

static struct tracee tracees[MAXPIDS];
static int ntracees;

static struct tracee *find_tracee(pid_t pid, int create)
{
	int free_slot = -1;

	for (int i = 0; i < ntracees; i++) {
		if (tracees[i].pid == pid)
			return &tracees[i];
		if (tracees[i].pid == 0 && free_slot < 0)
			free_slot = i;
	}
	if (!create)
		return NULL;
	if (free_slot < 0) {
		if (ntracees >= MAXPIDS)
			return NULL;
		free_slot = ntracees++;
	}
	memset(&tracees[free_slot], 0, sizeof(tracees[free_slot]));
	tracees[free_slot].pid = pid;
	return &tracees[free_slot];
}

static pid_t tgid_of(pid_t pid)
{
	char path[64], buf[4096];
	FILE *f;
	pid_t tgid = -1;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(buf, sizeof(buf), f))
		if (sscanf(buf, "Tgid: %d", &tgid) == 1)
			break;
	fclose(f);
	return tgid;
}

/* ------------------------------------------------------------------ */
/* exec snapshot                                                       */

struct vma {
	unsigned long start, end, off;
	char perms[8];
	char path[512];
};

static int anon_private(const struct vma *v)
{
	if (v->perms[3] != 'p')
		return 0;
	return !v->path[0] || !strcmp(v->path, "[heap]") || !strcmp(v->path, "[stack]");
}

static void snapshot_exec(pid_t pid, int n)
{
	char path[64], line[4096];
	FILE *f;
	struct vma *v = NULL;
	size_t nv = 0, cap = 0;
	int pm;

	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	f = fopen(path, "r");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		struct vma x;
		int consumed = 0;
		char *p;

		memset(&x, 0, sizeof(x));
		if (sscanf(line, "%lx-%lx %7s %lx %*s %*s%n", &x.start, &x.end, x.perms, &x.off,
			   &consumed) < 4)
			continue;
		p = line + consumed;
		while (*p == ' ')
			p++;
		p[strcspn(p, "\n")] = 0;
		snprintf(x.path, sizeof(x.path), "%s", p);
		if (nv == cap) {
			cap = cap ? cap * 2 : 64;
			v = realloc(v, cap * sizeof(*v));
			if (!v)
				exit(126);
		}
		v[nv++] = x;
	}
	fclose(f);

	fprintf(logf, "{\"ev\":\"exec\",\"pid\":%d,\"n\":%d,\"t\":%llu,\"maps\":[", pid, n, now_ns());
	for (size_t i = 0; i < nv; i++) {
		fprintf(logf, "%s[%lu,%lu,", i ? "," : "", v[i].start, v[i].end);
		json_str(v[i].perms);
		fprintf(logf, ",%lu,", v[i].off);
		json_str(v[i].path);
		fputc(']', logf);
	}
	fputs("],\"present\":[", logf);
	snprintf(path, sizeof(path), "/proc/%d/pagemap", pid);
	pm = open(path, O_RDONLY);
	for (size_t i = 0, first = 1; pm >= 0 && i < nv; i++) {
		unsigned long npages = (v[i].end - v[i].start) / (unsigned long)page_size;
		uint64_t *e;

		if (!anon_private(&v[i]) || npages > (1UL << 22))
			continue;
		e = calloc(npages ? npages : 1, sizeof(*e));
		if (!e)
			exit(126);
		if (pread(pm, e, npages * 8, (off_t)(v[i].start / (unsigned long)page_size * 8)) !=
		    (ssize_t)(npages * 8)) {
			free(e);
			continue;
		}
		fprintf(logf, "%s[%lu,%lu,\"", first ? "" : ",", v[i].start, v[i].end);
		first = 0;
		for (unsigned long b = 0; b < (npages + 7) / 8; b++) {
			unsigned int byte = 0;

			for (unsigned int k = 0; k < 8 && b * 8 + k < npages; k++)
				if (e[b * 8 + k] & (1ULL << 63))
					byte |= 1u << k;
			fprintf(logf, "%02x", byte);
		}
		fputs("\"]", logf);
		free(e);
	}
	if (pm >= 0)
		close(pm);
	fputs("]}\n", logf);
	fflush(logf);
	free(v);
}

/* ------------------------------------------------------------------ */

static void usage(void)
{
	fprintf(stderr, "usage: laf_tracee [-R] [-n] [-o LOG] [-s STATS] -- CMD [ARGS...]\n");
	exit(126);
}

#include <sys/resource.h>

static void write_stats(const char *path, int st)
{
	struct rusage ru;
	FILE *f;

	if (!path)
		return;
	getrusage(RUSAGE_CHILDREN, &ru);
	f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, "laf_tracee: %s: %s\n", path, strerror(errno));
		return;
	}
	fprintf(f, "{\"minflt\":%ld,\"majflt\":%ld,\"status\":%d}\n", ru.ru_minflt, ru.ru_majflt, st);
	fclose(f);
}

/**
 * exec_failure_status() - exit status of a child whose execvp() failed
 * @err: execvp()'s errno
 *
 * As POSIX shells report it: 127 when the command was not found (ENOENT,
 * ENOTDIR), 126 when it was found but could not be executed (EACCES,
 * ENOEXEC, ...).  pylaf record tells "could not start" from a command that
 * ran by the missing exec event, and passes this status on.
 */
static int exec_failure_status(int err)
{
	return err == ENOENT || err == ENOTDIR ? 127 : 126;
}

/* -n: no tracing, just run the command */
static int run_plain(char **cmd, const char *stats)
{
	int status, st;
	pid_t pid = fork();

	if (pid < 0) {
		perror("laf_tracee: fork");
		return 126;
	}
	if (pid == 0) {
		signal(SIGINT, SIG_DFL);
		signal(SIGQUIT, SIG_DFL);
		execvp(cmd[0], cmd);
		fprintf(stderr, "laf_tracee: %s: %s\n", cmd[0], strerror(errno));
		_exit(exec_failure_status(errno));
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return 126;
	st = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	write_stats(stats, st);
	return st;
}

int main(int argc, char **argv)
{
	const char *logpath = NULL, *statspath = NULL;
	int no_aslr = 0, plain = 0, i, status, root_status = 0, root_done = 0;
	pid_t root;
	long opts = PTRACE_O_TRACEEXEC | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK |
		    PTRACE_O_TRACECLONE | PTRACE_O_EXITKILL;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-R"))
			no_aslr = 1;
		else if (!strcmp(argv[i], "-n"))
			plain = 1;
		else if (!strcmp(argv[i], "-o") && i + 1 < argc)
			logpath = argv[++i];
		else if (!strcmp(argv[i], "-s") && i + 1 < argc)
			statspath = argv[++i];
		else if (!strcmp(argv[i], "--")) {
			i++;
			break;
		} else
			usage();
	}
	if ((!logpath && !plain) || i >= argc)
		usage();
	page_size = sysconf(_SC_PAGESIZE);
	if (no_aslr && personality(0xffffffff) >= 0 &&
	    personality((unsigned long)personality(0xffffffff) | ADDR_NO_RANDOMIZE) < 0) {
		fprintf(stderr, "laf_tracee: personality(ADDR_NO_RANDOMIZE): %s\n", strerror(errno));
		return 126;
	}
	/* Ctrl-C goes to the whole process group: let the tracees handle it. */
	signal(SIGINT, SIG_IGN);
	signal(SIGQUIT, SIG_IGN);
	if (plain)
		return run_plain(&argv[i], statspath);
	logf = fopen(logpath, "w");
	if (!logf) {
		fprintf(stderr, "laf_tracee: %s: %s\n", logpath, strerror(errno));
		return 126;
	}

	root = fork();
	if (root < 0) {
		perror("laf_tracee: fork");
		return 126;
	}
	if (root == 0) {
		signal(SIGINT, SIG_DFL);
		signal(SIGQUIT, SIG_DFL);
		if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) < 0) {
			perror("laf_tracee: PTRACE_TRACEME");
			_exit(126);
		}
		raise(SIGSTOP);
		execvp(argv[i], &argv[i]);
		fprintf(stderr, "laf_tracee: %s: %s\n", argv[i], strerror(errno));
		_exit(exec_failure_status(errno));
	}
	if (waitpid(root, &status, 0) < 0 || !WIFSTOPPED(status)) {
		fprintf(stderr, "laf_tracee: child did not stop\n");
		return 126;
	}
	if (ptrace(PTRACE_SETOPTIONS, root, NULL, (void *)opts) < 0) {
		perror("laf_tracee: PTRACE_SETOPTIONS");
		kill(root, SIGKILL);
		return 126;
	}
	fprintf(logf, "{\"ev\":\"start\",\"pid\":%d,\"no_aslr\":%d,\"page_size\":%ld}\n", root, no_aslr,
		page_size);
	fflush(logf);
	find_tracee(root, 1)->started = 1;
	ptrace(PTRACE_CONT, root, NULL, NULL);

	for (;;) {
		pid_t pid = waitpid(-1, &status, __WALL);
		struct tracee *t;
		int sig, event;

		if (pid < 0) {
			if (errno == EINTR)
				continue;
			break;          /* ECHILD: everyone is gone */
		}
		if (WIFEXITED(status) || WIFSIGNALED(status)) {
			if (pid == root) {
				root_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
				root_done = 1;
			}
			t = find_tracee(pid, 0);
			if (t)
				t->pid = 0;
			continue;
		}
		if (!WIFSTOPPED(status))
			continue;
		sig = WSTOPSIG(status);
		event = (unsigned int)status >> 16;
		t = find_tracee(pid, 1);
		if (!t) {
			ptrace(PTRACE_CONT, pid, NULL, NULL);
			continue;
		}
		if (event == PTRACE_EVENT_EXEC) {
			snapshot_exec(pid, t->execs++);
			t->started = 1;
			ptrace(PTRACE_CONT, pid, NULL, NULL);
			continue;
		}
		if (event == PTRACE_EVENT_FORK || event == PTRACE_EVENT_VFORK ||
		    event == PTRACE_EVENT_CLONE) {
			unsigned long child = 0;
			int thread = 0;

			ptrace(PTRACE_GETEVENTMSG, pid, NULL, &child);
			if (event == PTRACE_EVENT_CLONE) {
				pid_t a = tgid_of(pid), b = tgid_of((pid_t)child);

				thread = a > 0 && a == b;
			}
			fprintf(logf, "{\"ev\":\"fork\",\"kind\":\"%s\",\"thread\":%d,\"parent\":%d,"
				"\"child\":%lu,\"t\":%llu}\n",
				event == PTRACE_EVENT_FORK ? "fork" :
				event == PTRACE_EVENT_VFORK ? "vfork" : "clone",
				thread, pid, child, now_ns());
			fflush(logf);
			ptrace(PTRACE_CONT, pid, NULL, NULL);
			continue;
		}
		if (event) {            /* other events: just continue */
			ptrace(PTRACE_CONT, pid, NULL, NULL);
			continue;
		}
		if (!t->started && sig == SIGSTOP) {
			/* the initial stop of an auto-attached child */
			t->started = 1;
			ptrace(PTRACE_CONT, pid, NULL, NULL);
			continue;
		}
		t->started = 1;
		/* signal-delivery stop: re-inject */
		ptrace(PTRACE_CONT, pid, NULL, (void *)(long)sig);
	}
	fprintf(logf, "{\"ev\":\"end\",\"status\":%d,\"t\":%llu}\n", root_done ? root_status : -1,
		now_ns());
	fclose(logf);
	write_stats(statspath, root_done ? root_status : -1);
	return root_done ? root_status : 126;
}
