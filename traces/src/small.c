/* A small C file compiled by the gcc trace (traces/README.md). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct entry {
	char *key;
	long value;
	struct entry *next;
};

struct table {
	struct entry **buckets;
	size_t nbuckets, count;
};

static uint64_t hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h;
}

static struct table *table_new(size_t n)
{
	struct table *t = calloc(1, sizeof(*t));

	t->buckets = calloc(n, sizeof(*t->buckets));
	t->nbuckets = n;
	return t;
}

static void table_grow(struct table *t)
{
	size_t n = t->nbuckets * 2;
	struct entry **b = calloc(n, sizeof(*b));

	for (size_t i = 0; i < t->nbuckets; i++) {
		struct entry *e = t->buckets[i], *next;

		for (; e; e = next) {
			next = e->next;
			e->next = b[hash(e->key) % n];
			b[hash(e->key) % n] = e;
		}
	}
	free(t->buckets);
	t->buckets = b;
	t->nbuckets = n;
}

static void table_put(struct table *t, const char *key, long value)
{
	uint64_t h = hash(key) % t->nbuckets;
	struct entry *e;

	for (e = t->buckets[h]; e; e = e->next)
		if (!strcmp(e->key, key)) {
			e->value = value;
			return;
		}
	e = malloc(sizeof(*e));
	e->key = strdup(key);
	e->value = value;
	e->next = t->buckets[h];
	t->buckets[h] = e;
	if (++t->count > t->nbuckets * 3 / 4)
		table_grow(t);
}

static long table_get(const struct table *t, const char *key, long dflt)
{
	for (struct entry *e = t->buckets[hash(key) % t->nbuckets]; e; e = e->next)
		if (!strcmp(e->key, key))
			return e->value;
	return dflt;
}

static void print_json(const struct table *t, FILE *out)
{
	int first = 1;

	fputc('{', out);
	for (size_t i = 0; i < t->nbuckets; i++)
		for (struct entry *e = t->buckets[i]; e; e = e->next) {
			fprintf(out, "%s\"%s\":%ld", first ? "" : ",", e->key, e->value);
			first = 0;
		}
	fputs("}\n", out);
}

static int cmp_long(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;

	return (x > y) - (x < y);
}

static double mean(const long *v, size_t n)
{
	double s = 0;

	for (size_t i = 0; i < n; i++)
		s += (double)v[i];
	return n ? s / (double)n : 0.0;
}

int main(int argc, char **argv)
{
	struct table *t = table_new(16);
	char key[32];
	long *vals;
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000;

	vals = malloc(n * sizeof(*vals));
	for (size_t i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "k%zu", i % 97);
		table_put(t, key, table_get(t, key, 0) + (long)i);
		vals[i] = (long)((i * 2654435761u) % 1000);
	}
	qsort(vals, n, sizeof(*vals), cmp_long);
	printf("median %ld mean %.2f\n", vals[n / 2], mean(vals, n));
	print_json(t, stdout);
	free(vals);
	return 0;
}
