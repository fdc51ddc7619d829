/*
 * core.h - the daemon's core: the one door that every front (the socket
 * server, the control filesystem) goes through to run jobs, cancel them,
 * read counters and reach the shared segments.
 *
 *   core = core_new(&ctx, err, sizeof err);
 *   id = core_submit(core, &(struct job_req){ .spec = "base", .code = "print(1)" }, done, ud);
 *   core_cancel(core, id);
 *   status = core_status_json(core);        // what `omnipkg status` and /stats show
 *
 * Everything runs on the loop thread.  Fronts hold no job bookkeeping of
 * their own beyond what they show (the filesystem keeps finished results
 * for its files).
 */
#ifndef OMNI_CORE_H
#define OMNI_CORE_H

#include <stdint.h>
#include <cjson/cJSON.h>
#include "config.h"
#include "interp.h"
#include "job.h"
#include "loop.h"
#include "pool.h"
#include "shm.h"

struct core;

struct core_ctx {                 /* all borrowed; must outlive the core */
	struct loop *loop;
	const struct config *cfg;
	const struct interp_set *py;
	const char *home;
	const char *rtdir;
	const char *entry;        /* the worker runtime's entry script */
};

/* Creates the segment registry, the daemon's cgroup (where possible) and
 * the pool.  NULL with a reason in err. */
struct core *core_new(const struct core_ctx *ctx, char *err, size_t errlen);
/* Fails what runs ("shutdown"), stops every worker and everything they
 * started, removes every segment.  NULL is fine. */
void core_free(struct core *c);

/* Runs r; cb receives the reply exactly once (possibly before this
 * returns).  Returns the job id (0 when out of memory: cb already ran).
 * r->kind JOB_KIND_EVICT and JOB_KIND_IDLE are the evict and idle_config ops
 * (pool.h): answered the same way, but not counted as jobs. */
uint64_t core_submit(struct core *c, const struct job_req *r, job_done_cb cb, void *ud);
/* 0, or -ENOENT when no queued or running job has that id. */
int core_cancel(struct core *c, uint64_t id);
/* A client (owner, as given in job_req.owner) went: its segments go now,
 * or when the last job that leases them ends. */
void core_client_gone(struct core *c, uint64_t owner);
void core_prewarm(struct core *c);
void core_reap(struct core *c);   /* on SIGCHLD */

/* Counters and state, for every front alike; caller deletes. */
cJSON *core_status_json(struct core *c);
/* The idle_config reply without a change: {"ok": true, "config": {python
 * path: count}}; caller deletes. */
cJSON *core_idle_config(struct core *c);
/* [{spec, python, version, tag, pid, state, jobs, queued, rss_kb, idle_s,
 *   start_ms, started_by, once, pinned, max_memory_mb, last_used}];
 * caller deletes. */
cJSON *core_workers_json(struct core *c);
/* Calls cb for each live worker (see pool.h) until it returns nonzero;
 * returns that value. */
int core_each_worker(struct core *c, int (*cb)(const struct pool_worker_info *w, void *ud),
		     void *ud);
/* One worker as above, or NULL; caller deletes. */
cJSON *core_worker_json(struct core *c, pid_t pid);
/* [{name, version, path, tag, source, default, short_name_target}]; caller deletes. */
cJSON *core_pythons_json(struct core *c);

struct shm *core_shm(struct core *c);
struct loop *core_loop(struct core *c);
const struct config *core_config(struct core *c);
const struct interp_set *core_pythons(struct core *c);
const char *core_home(struct core *c);
const char *core_rtdir(struct core *c);

#endif
