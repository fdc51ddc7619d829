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
#include "core.h"

#define FUSEFS_CODE_MAX (1u << 20)       /* bytes of code per job */

struct fusefs;

/*
 * Mounts at mountpoint (created if missing; a dead daemon's stale mount
 * there is detached first; a live mount there is refused: -EBUSY) and
 * serves it from the core's loop.  core is borrowed and must outlive the
 * mount.  NULL with a reason in err.
 */
struct fusefs *fusefs_mount(struct core *core, const char *mountpoint,
			    char *err, size_t errlen);
/*
 * Answers every waiting read with EINTR, unmounts and frees fs (NULL is
 * fine).  The core may be freed before (its jobs have answered their
 * readers then) or after (jobs still running finish unseen).
 */
void fusefs_unmount(struct fusefs *fs);
/* Adds a "fusefs" object of counters to into. */
void fusefs_stats_json(struct fusefs *fs, cJSON *into);

#endif
