/*
 * job.h - one request to run code: everything it asked for, owned by the
 * job, and the one place its reply is built and delivered.
 *
 * A job is created by the core (core_submit), waits in a worker's queue,
 * runs, and ends exactly once in job_finish, which calls the submitter's
 * callback and frees it.  Because the job owns every argument, a requeue
 * after its worker crashed never drops one.
 *
 * Requests that name a worker key without running code (evict,
 * idle_config) are jobs of another kind: they are resolved by the router
 * exactly as an exec is (and wait with it while an interpreter is
 * probed), then answered by the pool without a worker.
 */
#ifndef OMNI_JOB_H
#define OMNI_JOB_H

#include <stdint.h>
#include <cjson/cJSON.h>

#define JOB_MAX_LEASES 128  /* segments one job may hold: its arrays and more */
#define JOB_MAX_FDS 8       /* descriptors one job may carry (CHAN_MAX_FDS) */

struct array_desc;
struct shm;
struct worker;

/* Receives the reply of a job and owns it.  Called exactly once per job,
 * possibly before core_submit returns. */
typedef void (*job_done_cb)(cJSON *reply, void *ud);

enum job_kind {
	JOB_KIND_EXEC = 0,     /* run code on the key's worker */
	JOB_KIND_EVICT,        /* stop the workers of the key */
	JOB_KIND_IDLE,         /* record idle_count for the key's interpreter */
};

struct job_req {               /* borrowed by job_new, which copies it */
	int kind;              /* enum job_kind */
	const char *spec;      /* required for exec and evict (evict: the
	                          workers' spec; the router sees "base") */
	const char *python;    /* NULL: default interpreter */
	const char *code;      /* required for exec */
	const char *tag;       /* NULL: "" */
	double timeout;        /* <= 0: config job_timeout */
	int once;
	const char *const *segments;   /* names of shared segments the job uses */
	int nsegments;
	const struct array_desc *arrays;   /* views bound for the code (arrays.h) */
	int narrays;
	const cJSON *bind;             /* {name: JSON value}, or NULL */
	uint64_t owner;                /* the client: its segments, and new ones */
	int pin;                       /* pin the worker that serves it */
	double max_memory_mb;          /* > 0: limit its worker's memory */
	int idle_count;                /* JOB_KIND_IDLE: the count to record */
	const int *fds;                /* descriptors for the worker, given to
	                                  the job: job_new takes them (and
	                                  closes them if it fails); at most
	                                  JOB_MAX_FDS */
	int nfds;
	const cJSON *fds_desc;         /* [{for, kind}]: what each one is, for the
	                                  worker; NULL when nfds is 0 */
};

struct job {
	uint64_t id;
	int kind;                           /* enum job_kind */
	char *spec, *python, *code, *tag;   /* owned; python NULL for the default */
	char *target;                       /* evict: the canonical spec to stop */
	double timeout;                     /* resolved: > 0 */
	int once, pin, idle_count;
	double max_memory_mb;
	double t_submit, t_start;
	struct shm *shm;                    /* where its leases are; NULL: none */
	uint64_t leases[JOB_MAX_LEASES];    /* segment ids, released in job_finish */
	int nleases;
	cJSON *arrays;                      /* for the worker: views with paths; or NULL */
	cJSON *bind;                        /* owned copy, or NULL */
	int fds[JOB_MAX_FDS];               /* owned: closed by job_free */
	int nfds;
	cJSON *fds_desc;                    /* owned copy, or NULL */
	uint64_t owner;
	job_done_cb cb;
	void *ud;
	struct job *next;                   /* in a worker's queue or a wait list */
};

/* A copy of r (its segments are not leased here: see job_lease), owning
 * r's descriptors from now on; NULL when out of memory (the descriptors
 * closed then). */
struct job *job_new(uint64_t id, const struct job_req *r, double timeout, job_done_cb cb, void *ud);
/* The request as a job_req view (borrowed from j; without its
 * descriptors, which only j owns). */
struct job_req job_as_req(const struct job *j);

/*
 * Ends j, the one place every job ends: releases its leases, adds (to an
 * exec's reply) what is known of the worker w (may be NULL), timings and,
 * when missing, stdout/stderr, then hands reply (taken) to the callback
 * and frees j.  Returns whether the reply was a success.
 */
int job_finish(struct job *j, cJSON *reply, const struct worker *w);

/*
 * Leases each of r's segments and the segments of its arrays in shm for
 * the job's life, checking each view against its segment (it must exist,
 * be the client's or persistent, and hold every byte the view reaches),
 * and builds the arrays the worker is sent.  0, or -ENOENT (no such
 * segment, or another client's) or -EINVAL (a view that does not fit)
 * with a reason in err; nothing is held then.
 */
int job_lease(struct job *j, struct shm *shm, const struct job_req *r, char *err, size_t errlen);

/* Does j lease segment id? */
int job_has_segment(const struct job *j, uint64_t id);

/* Gives back every lease j holds (job_finish and job_free do it). */
void job_release(struct job *j);

/* Frees a job that never ran and will not be answered (NULL is fine). */
void job_free(struct job *j);

#endif
