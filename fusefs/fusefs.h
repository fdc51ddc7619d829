/*
 * fusefs.h - the control filesystem: the daemon's core as files.
 *
 *   $ omnipkgd --mount /omnipkg &
 *   $ echo 'import sys; print(sys.version_info[:2])' > /omnipkg/specs/base/3.11/exec
 *   $ cat /omnipkg/specs/base/3.11/stdout          # waits until the job is done
 *   (3, 11)
 *   $ truncate -s 64M /omnipkg/shm/frame           # a shared segment; mmap it anywhere
 *   $ cat /omnipkg/stats
 *
 * Tree (all of it private to the mounting user):
 *   specs/<spec>/<python>/exec     write code; it runs at close, or for an O_RDWR
 *                                  descriptor at its first read, which returns that
 *                                  job's result JSON (concurrent users never mix)
 *   specs/<spec>/<python>/{stdout,stderr,result,status,error}
 *                                  the context's latest job; reads wait until it is
 *                                  done (poll works); before any job: empty files,
 *                                  result "{}", status "idle"
 *   jobs/<id>/{code,stdout,stderr,result,status,error}    the last 256 jobs
 *   shm/<name>                     symlink to a segment's tmpfs file; created by
 *                                  open(O_CREAT)/truncate/mknod, removed by unlink
 *   pythons/<name>                 symlink to each interpreter ("3.11", "3.11.7")
 *   workers/<pid>/status           one worker, as text
 *   stats                          daemon counters, JSON
 *   ctl                            "shm create NAME SIZE", "shm rm NAME" per line
 *
 * Requests are served from the daemon's event loop and never block it: a
 * read of an unfinished job is answered when the job's reply arrives.
 * Errors reach users as errno: ENOENT unknown spec, interpreter or missing
 * bubble; EINVAL empty code; EFBIG code over FUSEFS_CODE_MAX; EACCES writes
 * to read-only files; EDQUOT segments over the shm quota.
 */
#ifndef OMNI_FUSEFS_H
#define OMNI_FUSEFS_H

#include <stddef.h>
#include <cjson/cJSON.h>
#include "config.h"
#include "interp.h"
#include "loop.h"
#include "pool.h"

#define FUSEFS_CODE_MAX (1u << 20)       /* bytes of code per job */

struct fusefs;

struct fusefs_ctx {                      /* all borrowed; must outlive the mount */
	struct loop *loop;
	struct pool *pool;
	const struct config *cfg;
	const struct interp_set *py;
	const char *home;
	const char *rtdir;
};

/*
 * Mounts at mountpoint (created if missing; a dead daemon's stale mount
 * there is detached first) and serves it from ctx->loop.  Also creates the
 * shared memory dir.  NULL with a reason in err.
 */
struct fusefs *fusefs_mount(const struct fusefs_ctx *ctx, const char *mountpoint,
			    char *err, size_t errlen);
/*
 * Answers every waiting read with EINTR, unmounts, removes the shared
 * memory dir and frees fs (NULL is fine).  Jobs still running in the pool
 * finish unseen, so the pool may be freed before or after.
 */
void fusefs_unmount(struct fusefs *fs);
/* Adds a "fusefs" object of counters to into. */
void fusefs_stats_json(struct fusefs *fs, cJSON *into);

#endif
