/*
 * node.c - the inode table (see node.h): two chained hash tables over the
 * same nodes, one by number and one by (parent, name, kind).
 *
 *   t = node_table_new(100000);
 *   n = node_ref(t, K_SPECS, "base", K_SPEC, "base", NULL);  -> n->ino 64
 *   node_forget(t, 64, 1);                                 -> gone
 */
#include <stdlib.h>
#include <string.h>
#include "node.h"

#define NODE_BUCKETS 4096u    /* a power of two */

struct node_table {
	struct node *by_ino[NODE_BUCKETS];
	struct node *by_name[NODE_BUCKETS];
	uint64_t next_ino;
	size_t n, max;
};

static unsigned hash_ino(uint64_t ino)
{
	return (unsigned)((ino * 0x9E3779B97F4A7C15ull) >> 40) & (NODE_BUCKETS - 1);
}

static unsigned hash_name(uint64_t parent, const char *name, int kind)
{
	uint64_t h = 1469598103934665603ull ^ parent ^ ((uint64_t)kind << 56);

	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 1099511628211ull;
	return (unsigned)(h ^ (h >> 32)) & (NODE_BUCKETS - 1);
}

struct node_table *node_table_new(size_t max_nodes)
{
	struct node_table *t = calloc(1, sizeof *t);

	if (t) {
		t->next_ino = NODE_FIRST_DYNAMIC;
		t->max = max_nodes;
	}
	return t;
}

static void node_free(struct node *n)
{
	free(n->name);
	free(n->spec);
	free(n->py);
	free(n);
}

void node_table_free(struct node_table *t)
{
	if (!t)
		return;
	for (unsigned i = 0; i < NODE_BUCKETS; i++)
		while (t->by_ino[i]) {
			struct node *n = t->by_ino[i];

			t->by_ino[i] = n->next_ino;
			node_free(n);
		}
	free(t);
}

struct node *node_get(struct node_table *t, uint64_t ino)
{
	for (struct node *n = t->by_ino[hash_ino(ino)]; n; n = n->next_ino)
		if (n->ino == ino)
			return n;
	return NULL;
}

struct node *node_find(struct node_table *t, uint64_t parent, const char *name, int kind)
{
	for (struct node *n = t->by_name[hash_name(parent, name, kind)]; n; n = n->next_name)
		if (n->parent == parent && n->kind == kind && strcmp(n->name, name) == 0)
			return n;
	return NULL;
}

static char *dup_or_null(const char *s, int *fail)
{
	char *d;

	if (!s)
		return NULL;
	d = strdup(s);
	if (!d)
		*fail = 1;
	return d;
}

struct node *node_ref(struct node_table *t, uint64_t parent, const char *name, int kind,
		      const char *spec, const char *py)
{
	struct node *n = node_find(t, parent, name, kind);
	int fail = 0;
	unsigned hi, hn;

	if (n) {
		n->nlookup++;
		return n;
	}
	if (t->n >= t->max || !(n = calloc(1, sizeof *n)))
		return NULL;
	n->name = dup_or_null(name, &fail);
	n->spec = dup_or_null(spec, &fail);
	n->py = dup_or_null(py, &fail);
	if (fail) {
		node_free(n);
		return NULL;
	}
	n->ino = t->next_ino++;
	n->parent = parent;
	n->kind = kind;
	n->nlookup = 1;
	hi = hash_ino(n->ino);
	hn = hash_name(parent, name, kind);
	n->next_ino = t->by_ino[hi];
	t->by_ino[hi] = n;
	n->next_name = t->by_name[hn];
	t->by_name[hn] = n;
	t->n++;
	return n;
}

void node_forget(struct node_table *t, uint64_t ino, uint64_t count)
{
	struct node **pp, *n = node_get(t, ino);

	if (!n)
		return;
	if (n->nlookup > count) {
		n->nlookup -= count;
		return;
	}
	for (pp = &t->by_ino[hash_ino(ino)]; *pp; pp = &(*pp)->next_ino)
		if (*pp == n) {
			*pp = n->next_ino;
			break;
		}
	for (pp = &t->by_name[hash_name(n->parent, n->name, n->kind)]; *pp; pp = &(*pp)->next_name)
		if (*pp == n) {
			*pp = n->next_name;
			break;
		}
	t->n--;
	node_free(n);
}

size_t node_count(const struct node_table *t)
{
	return t->n;
}
