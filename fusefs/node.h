/*
 * node.h - the inode table of the control filesystem.
 *
 *   lookup("specs", "base")  ->  node 1042 (kind K_SPEC, nlookup 1)
 *   lookup("specs", "base")  ->  node 1042 again (nlookup 2)
 *   forget(1042, 2)          ->  freed; 1042 is never handed out again
 *
 * The kernel names files by inode number and says when it forgets one, so
 * a node lives from the first lookup that returns it until its lookup
 * count falls back to zero.  Numbers come from a 64-bit counter and are
 * never reused, so a stale number can only miss, never alias.  The fixed
 * top-level nodes (root and its children) are not in the table.
 */
#ifndef OMNI_NODE_H
#define OMNI_NODE_H

#include <stddef.h>
#include <stdint.h>

#define NODE_FIRST_DYNAMIC 64     /* inode numbers below are fixed nodes */

struct node {
	uint64_t ino;
	uint64_t parent;
	uint64_t nlookup;
	int kind;                 /* the file system's own kinds */
	int file;                 /* which file of a job, for job file kinds */
	uint64_t num;             /* job id, worker pid */
	char *name;               /* as looked up (owned) */
	char *spec;               /* canonical spec, or NULL (owned) */
	char *py;                 /* interpreter path, or NULL (owned) */
	struct node *next_ino, *next_name;
};

struct node_table;

struct node_table *node_table_new(size_t max_nodes);
void node_table_free(struct node_table *t);

/* Borrowed, valid until the node is forgotten; NULL if unknown. */
struct node *node_get(struct node_table *t, uint64_t ino);
/* The live node named name under parent of this kind, or NULL. */
struct node *node_find(struct node_table *t, uint64_t parent, const char *name, int kind);
/*
 * Finds or makes the node (parent, name, kind); a new one gets a fresh
 * number and copies of spec and py (either may be NULL).  Counts one
 * lookup either way.  NULL when out of memory or over max_nodes.
 */
struct node *node_ref(struct node_table *t, uint64_t parent, const char *name, int kind,
		      const char *spec, const char *py);
/* Drops n lookups; frees the node at zero.  Unknown numbers are ignored. */
void node_forget(struct node_table *t, uint64_t ino, uint64_t n);
size_t node_count(const struct node_table *t);

#endif
