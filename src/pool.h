/*
 * pool.h - the worker pool and router.
 *
 * A worker is one Python process serving one key (canonical spec,
 * interpreter path, tag).  Jobs for a busy worker wait in its queue.  New
 * workers fork from a warm zygote of their interpreter (config "zygote"),
 * else exec a fresh interpreter.  A worker that crashes or times out fails
 * only its own in-flight job; jobs still queued on it move to a new worker.
 *
 *   state      event               action
 *   spawning   "ready"             -> idle, run the queue
 *   idle       job                 -> busy
 *   busy       "done"              reply, -> idle (an ephemeral one retires)
 *   busy       timeout             kill the process group, fail the job "timeout"
 *   any        EOF / exit / signal fail the job with the exit code or signal,
 *                                  requeue the rest (fail them if it never got ready)
 *   idle       idle_timeout        retire
 */
#ifndef OMNI_POOL_H
#define OMNI_POOL_H

#include <cjson/cJSON.h>
#include "config.h"
#include "interp.h"
#include "loop.h"

struct pool;

/* Receives the reply of a job and owns it.  Called exactly once per
 * pool_submit, possibly before pool_submit returns. */
typedef void (*pool_done_cb)(cJSON *reply, void *ud);

struct pool_req {
	const char *spec;      /* required */
	const char *python;    /* NULL: default interpreter */
	const char *code;      /* required */
	const char *tag;       /* NULL: "" */
	double timeout;        /* <= 0: config job_timeout */
	int once;
};

/* All pointers are borrowed and must outlive the pool. */
struct pool *pool_new(struct loop *l, const struct config *cfg, const struct interp_set *py,
		      const char *home, const char *worker_py);
/* Fails every pending job with reason "shutdown", kills and reaps workers. */
void pool_free(struct pool *p);

void pool_submit(struct pool *p, const struct pool_req *r, pool_done_cb cb, void *ud);
/* Starts the configured pre-warmed workers; problems are logged. */
void pool_prewarm(struct pool *p);
/* Reaps children; call on SIGCHLD. */
void pool_reap(struct pool *p);

cJSON *pool_workers_json(struct pool *p);            /* caller deletes */
void pool_stats_json(struct pool *p, cJSON *into);   /* adds counters */

#endif
