/*
 * worker.h - one worker process and its state machine.
 *
 * A worker is one Python process serving one key (canonical spec,
 * interpreter path, tag).  Jobs for a busy worker wait in its queue.  A
 * worker that crashes or times out fails only its own in-flight job; jobs
 * still queued on it go back to the pool (wenv.requeue), which places them
 * on a new worker.
 *
 *   state      event                    action
 *   starting   "ready"                  -> idle (joins its cgroup), run the queue
 *   starting   no "ready" in 30 s,      fail the queue "spawn"
 *              or the spawn failed
 *   idle       job                      -> busy
 *   busy       "done"                   reply, kill what the job left running,
 *                                       -> idle (a "once" worker retires)
 *   busy       timeout / cancel         kill the worker and all it started,
 *                                       fail the job, requeue the rest
 *   any        EOF / exit / signal      fail the job with the exit code or
 *                                       signal, requeue the rest (fail them
 *                                       if it never got ready)
 *   dead       no exit status in 2 s    kill it (SIGKILL), settle
 *   idle       retire (idle, LRU, once) -> dead; freed when reaped
 *   idle,      evict                    retire; its queue goes back to the
 *   starting                            pool
 *   busy       evict                    marked: retired when its job is done,
 *                                       its queue (later jobs too) goes back
 *
 * A job with max_memory_mb limits its worker's memory before it runs (the
 * worker's cgroup where it has the memory controller, else RLIMIT_AS).  A
 * worker killed for going over it in its cgroup, or a job that failed
 * with MemoryError on a limited worker, fails the job with reason
 * "memory".
 *
 * All of it runs on the loop thread.
 */
#ifndef OMNI_WORKER_H
#define OMNI_WORKER_H

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>
#include <cjson/cJSON.h>
#include "chan.h"
#include "config.h"
#include "interp.h"
#include "job.h"
#include "loop.h"
#include "spawner.h"
#include "spec.h"

enum worker_state { W_SPAWNING, W_IDLE, W_BUSY, W_DEAD };

struct pool_counters {
	uint64_t jobs_total, jobs_failed, spawned, crashes, timeouts, cancelled, leftovers_killed;
};

/* What a worker needs of its pool; all borrowed, outlives its workers. */
struct wenv {
	struct loop *loop;
	const struct config *cfg;
	struct spawner *spawner;
	struct pool_counters *cnt;
	const char *cgroup_base;      /* "" when cgroups are not used */
	struct shm *shm;              /* segments: jobs' arrays and results; or NULL */
	/* Places a job again (its worker died with it queued). */
	void (*requeue)(void *ud, struct job *j);
	/* The worker is about to be freed: forget it. */
	void (*gone)(void *ud, struct worker *w);
	void *ud;
};

struct worker {
	const struct wenv *env;
	uint64_t serial;
	char spec[SPEC_MAX_LEN];
	char tag[128];
	struct interp py;
	cJSON *paths;             /* bubble dirs, spec order */
	int once;
	int state;                /* enum worker_state */
	int ever_ready;
	int fd;                   /* our end of the channel */
	struct chan ch;
	pid_t pid;
	int via_zygote;
	struct spawner_wait *zwait; /* waiting for a zygote */
	char cgroup[PATH_MAX];    /* "" when none */
	int cg_procs;             /* its cgroup.procs, open once the worker joined; -1 */
	uint64_t *mapped;         /* ids of the segments it has mapped */
	int nmapped, capmapped;
	struct job *cur, *qhead, *qtail;
	int qlen;
	struct loop_timer *tmo;   /* spawn or job timeout, or death grace once dead */
	uint64_t jobs, first_job;
	double t_spawn, start_ms, last_used;
	int pinned;               /* never retired for idleness or LRU */
	int evicting;             /* busy when evicted: retire once the job ends */
	double max_memory_mb;     /* the limit set on it, 0: none */
	int mem_cgroup;           /* the limit is its cgroup's memory.max (else RLIMIT_AS) */
	long long oom_base;       /* its cgroup's oom_kill count before its first limit */
	int reaped, status;
	struct worker *next;      /* the pool's list */
};

/* Starts a worker for the key; NULL with errno set.  paths: n bubble dirs. */
struct worker *worker_new(const struct wenv *env, uint64_t serial, const char *spec,
			  const struct interp *py, const char *tag, char paths[][4096], int n,
			  int once);
/* Queues j (taken) and runs it when the worker is free. */
void worker_enqueue(struct worker *w, struct job *j);
/* Stops an idle worker: it exits on EOF; freed when reaped. */
void worker_retire(struct worker *w);
/* Stops w for an evict: an idle or starting one now, a busy one once its
 * job is done (that job is not failed); the jobs queued on it go back to
 * the pool then.  Returns its pid (0 when not known yet).  w may be freed. */
pid_t worker_evict(struct worker *w);
/* Fails job id with reason "cancelled" if w holds it: 1 done, 0 not here. */
int worker_cancel(struct worker *w, uint64_t id);
/* Its exit status arrived (the pool reaps). */
void worker_reaped(struct worker *w, int status);
/* Daemon stop: fails the job and the queue with "shutdown", kills it and
 * all it started. */
void worker_shutdown(struct worker *w);
/* Segment id went or changed size: a worker that mapped it drops it. */
void worker_segment_gone(struct worker *w, uint64_t id);
/* Frees w at once (after worker_shutdown; its exit is given up on). */
void worker_free(struct worker *w);

const char *worker_state_name(int state);

#endif
