/*
 * fsjob.h - jobs submitted through the control filesystem, the latest job of
 * each (spec, interpreter) context, and reads waiting for a job to finish.
 *
 *   $ echo 'print(6*7)' > /omnipkg/specs/base/3.11/exec    # fsjobs_submit
 *   $ cat /omnipkg/specs/base/3.11/stdout                  # fsjobs_latest; waits
 *   42
 *   $ ls /omnipkg/jobs                                     # the last 256
 *   1
 *
 * A job is reference counted: the ring of recent jobs, its context (as the
 * latest), open files bound to it, and the pool while it runs each hold
 * one.  A read of an unfinished job's output is kept (its fuse_req_t) and
 * answered when the job's reply arrives, or with EINTR when the reader is
 * interrupted or the registry is freed.  All of it runs on the loop thread.
 */
#ifndef OMNI_FSJOB_H
#define OMNI_FSJOB_H

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 34
#endif
#include <fuse_lowlevel.h>
#include <stddef.h>
#include <stdint.h>
#include "core.h"

#define JOBS_RING 256              /* recent jobs listed under /jobs */
#define JOBS_MAX_CONTEXTS 1024     /* (spec, python) pairs remembered */
#define JOBS_MAX_WAITERS 65536     /* deferred reads in all */
#define JOB_MAX_POLL 64            /* poll handles kept per job */

enum job_file { JF_EXEC, JF_CODE, JF_STDOUT, JF_STDERR, JF_RESULT, JF_STATUS, JF_ERROR, JF_N };
enum job_state { JOB_RUNNING, JOB_DONE, JOB_FAILED };

struct fsjobs;

struct fsjob {
	uint64_t id;
	int refs;
	int state;                     /* enum job_state */
	char *spec, *py;               /* canonical spec, interpreter path */
	char *text[JF_N];              /* rendered when finished (code: at once) */
	size_t len[JF_N];
	struct fsjobs *js;               /* NULL once the registry is gone */
	struct fuse_pollhandle *ph[JOB_MAX_POLL];
	int nph;
	struct fsjob *next, *prev;       /* the registry's list of live jobs */
};

/* keep_bytes: soft bound on the output the ring keeps (older jobs drop off). */
struct fsjobs *fsjobs_new(struct core *core, size_t keep_bytes);
/* Answers every deferred read with EINTR; running jobs finish unseen. */
void fsjobs_free(struct fsjobs *js);

/*
 * Submits code (len bytes, no NUL) on (spec, py) and makes it the context's
 * latest job.  Returns the job with one reference for the caller, or NULL
 * (out of memory).  The job may already be finished on return.
 */
struct fsjob *fsjobs_submit(struct fsjobs *js, const char *spec, const char *py,
			const char *code, size_t len);
struct fsjob *fsjobs_get(struct fsjobs *js, uint64_t id);                      /* borrowed */
struct fsjob *fsjobs_latest(struct fsjobs *js, const char *spec, const char *py);  /* borrowed */
/* Calls cb for each job of the ring, oldest first, until it returns nonzero. */
int fsjobs_each(struct fsjobs *js, int (*cb)(struct fsjob *j, void *ud), void *ud);

void fsjob_ref(struct fsjob *j);
void fsjob_unref(struct fsjob *j);
int fsjob_finished(const struct fsjob *j);
/*
 * The content of one file of j (borrowed).  j NULL means "no job yet":
 * result "{}\n", status "idle\n", the rest empty.  Output files of an
 * unfinished job are empty too (see fsjob_finished).
 */
const char *fsjob_text(const struct fsjob *j, int file, size_t *len);

/* Keeps req (a read of file at pos, size bytes) until j finishes.  0 or -errno. */
int fsjobs_defer_read(struct fsjobs *js, struct fsjob *j, fuse_req_t req, int file, size_t pos,
		    size_t size);
/* Keeps ph to be notified when j finishes (takes ownership). */
void fsjobs_add_poll(struct fsjob *j, struct fuse_pollhandle *ph);
/* Answers reads whose reader was interrupted; call after processing requests. */
void fsjobs_sweep(struct fsjobs *js);

void fsjobs_stats_json(struct fsjobs *js, cJSON *into);

#endif
