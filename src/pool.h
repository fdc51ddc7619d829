/*
 * pool.h - the registry of workers: finds or starts the worker of a key,
 * keeps max_workers (evicting the least recently used idle one), retires
 * idle workers after idle_timeout, reaps every child, and counts.  A
 * pinned worker is never retired for either; an evicted one is, whatever
 * its pin.
 *
 * Jobs enter through pool_submit (the core calls it), are resolved by the
 * router, and queue on their worker (worker.h has the state machine).
 * Evict and idle_config requests enter the same way (job.h, enum
 * job_kind) and are answered once resolved.
 */
#ifndef OMNI_POOL_H
#define OMNI_POOL_H

#include <stdint.h>
#include <sys/types.h>
#include "config.h"
#include "interp.h"
#include "job.h"
#include "loop.h"
#include "worker.h"

struct pool;

/* All pointers are borrowed and must outlive the pool.  cgroup_base: the
 * daemon's cgroup (one group per worker below it), or NULL.  shm: the
 * segment registry jobs lease from, or NULL (then no job may name one). */
struct pool *pool_new(struct loop *l, const struct config *cfg, const struct interp_set *py,
		      const char *home, const char *entry, const char *cgroup_base,
		      struct shm *shm);
/* Fails every pending job with reason "shutdown", kills and reaps workers
 * and everything they started. */
void pool_free(struct pool *p);

/* Runs r; cb gets the reply exactly once, possibly before this returns.
 * The segments r names are leased until the job ends (a missing one fails
 * it at once, reason "nosegment").  Returns the job's id (0 when it could
 * not even be created).
 * r->kind JOB_KIND_EVICT stops the workers of the key (spec canonicalised
 * and python and tag resolved as exec's): {"ok": true, "evicted":
 * [pid...]}, [] when none (a python that does not resolve matches none).
 * JOB_KIND_IDLE records r->idle_count for r->python's interpreter
 * (spawner_keep) and answers as pool_idle_config.  Neither counts as a
 * job. */
uint64_t pool_submit(struct pool *p, const struct job_req *r, job_done_cb cb, void *ud);
/* Fails job id with reason "cancelled" (killing its worker if it runs).
 * 0, or -ENOENT when no queued or running job has that id. */
int pool_cancel(struct pool *p, uint64_t id);
/* Segment id went or changed size: workers that mapped it drop it. */
void pool_segment_gone(struct pool *p, uint64_t id);
/* {"ok": true, "config": {python path: count}}: the interpreters kept
 * warm (spawner_keep); caller deletes. */
cJSON *pool_idle_config(struct pool *p);
/* Starts the configured pre-warmed workers; problems are logged. */
void pool_prewarm(struct pool *p);
/* Reaps children; call on SIGCHLD. */
void pool_reap(struct pool *p);

struct pool_worker_info {
	const char *spec, *python, *version, *tag, *state, *started_by;
	pid_t pid;
	unsigned long long jobs;
	int queued, once, pinned;
	double idle_s, start_ms;
	double max_memory_mb;        /* 0: no limit */
	double last_used;            /* UNIX time: its last job ended, or it started */
};
/* Calls cb for each live worker (borrowed strings) until it returns nonzero. */
int pool_each_worker(struct pool *p, int (*cb)(const struct pool_worker_info *w, void *ud), void *ud);
/* The zygotes likewise (see spawner.h). */
int pool_each_zygote(struct pool *p, int (*cb)(const struct spawner_zygote_info *z, void *ud), void *ud);
/* The interpreters kept warm likewise (spawner_each_kept). */
int pool_each_kept(struct pool *p, int (*cb)(const struct spawner_kept_info *k, void *ud), void *ud);

struct pool_stats {
	struct pool_counters c;
	int workers;
	int cgroups;                 /* 1: one cgroup per worker; 0: /proc fallback */
	int memory_cgroup;           /* 1: memory limits in the worker's cgroup; 0: RLIMIT_AS */
	unsigned probed, probe_failed, probing;
};
void pool_stats(struct pool *p, struct pool_stats *out);

#endif
