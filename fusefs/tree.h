/*
 * tree.h - the names of the control filesystem: what each path is, its
 * attributes and its directory listings (see fusefs.h for the tree).
 *
 *   tree_lookup(t, K_SPECS, "NumPy==1.26.4")   -> node "numpy==1.26.4" (a spec dir)
 *   tree_lookup(t, <that>, "3.11")             -> node (spec, python path), or -ENOENT
 *                                                 when no bubble serves that interpreter
 *   tree_attr(t, ino, &st)                     -> mode, size (finished output: real size)
 *
 * Fixed nodes (the root and its children) have ino == kind; the rest live
 * in the node table.  All of it runs on the loop thread.
 */
#ifndef OMNI_TREE_H
#define OMNI_TREE_H

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 34
#endif
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <time.h>
#include "fusefs.h"
#include "fsjob.h"
#include "node.h"
#include "shm.h"

#define TREE_ENTRY_STABLE 1.0     /* seconds a name that cannot change meaning is cached */
#define TREE_MAX_DIRENTS 8192

enum tree_kind {
	K_ROOT = FUSE_ROOT_ID, K_SPECS, K_JOBS, K_SHMDIR, K_PYDIR, K_WORKERS, K_STATS, K_CTL,
	K_NFIXED,
	K_SPEC = 16, K_CTX, K_CTXFILE, K_JOB, K_JOBFILE, K_SHMLINK, K_SHMFILE, K_PYLINK,
	K_WORKER, K_WSTATUS,
};

struct tree {                     /* the pieces names resolve against; all borrowed */
	struct core *core;
	struct node_table *nodes;
	struct fsjobs *jobs;
	struct shm *shm;
	time_t t_wall;            /* file times */
	char *(*stats)(void *ud); /* the stats file's content (malloc'd) */
	void *ud;
};

struct tree_dent {
	char *name;
	mode_t type;
};

struct tree_dir {
	struct tree_dent *ents;
	size_t n;
};

/* The kind of ino and its node (NULL for fixed ones); 0 when unknown. */
int tree_kind(struct tree *t, fuse_ino_t ino, struct node **np);
/* 0 or -errno (-ENOENT: gone, such as a job that left the ring). */
int tree_attr(struct tree *t, fuse_ino_t ino, struct stat *st);
/*
 * Resolves name under parent into *ino, counting one lookup on it (the
 * caller forgets it again if the reply fails), and the entry timeout.
 * 0 or -errno.
 */
int tree_lookup(struct tree *t, fuse_ino_t parent, const char *name, fuse_ino_t *ino,
		double *timeout);
/* Lists directory ino ("." and ".." first) into d; 0 or -errno. */
int tree_list(struct tree *t, fuse_ino_t ino, struct tree_dir *d);
void tree_dir_free(struct tree_dir *d);

/* The job a context or job file shows now (borrowed); NULL: none. */
struct fsjob *tree_job(struct tree *t, const struct node *n);
/* Generated contents, malloc'd; NULL when gone or out of memory. */
char *tree_ctl_text(struct tree *t);
char *tree_worker_text(struct tree *t, uint64_t pid);

#endif
