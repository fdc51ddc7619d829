/*
 * cgroup.h - one control group (cgroup v2) per worker, so that everything
 * a job starts, daemons that called setsid() included, can be found and
 * killed when the job ends.
 *
 *   cgroup_init(base, sizeof base)        // <cgroup2 mount><our cgroup>/omnipkgd.<pid>
 *   cgroup_make(base, "w12", path, n)     // one per worker
 *   cgroup_add(path, pid)                 // the worker, once it is ready
 *   fd = cgroup_open_procs(path)          // kept open: read after every job
 *   cgroup_kill_others(fd, pid)           // after each job: all but the worker
 *   cgroup_kill(path); cgroup_remove(path)
 *
 * Memory limits need the memory controller in the worker's group: the
 * daemon enables it for its own groups when its parent hands it down
 * (cgroup_enable_memory); a group without it has no memory.max.
 *
 * Where no writable cgroup2 hierarchy exists, cgroup_init fails and the
 * pool falls back to killing the worker's descendants and the orphans
 * re-parented to the daemon (proc_*).  Errors: -errno.
 */
#ifndef OMNI_CGROUP_H
#define OMNI_CGROUP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Creates the daemon's own group below its current one; 0 or -errno. */
int cgroup_init(char *base, size_t n);
int cgroup_make(const char *base, const char *name, char *path, size_t n);
int cgroup_add(const char *path, pid_t pid);
/* The group's cgroup.procs, opened for cgroup_kill_others; fd or -errno. */
int cgroup_open_procs(const char *path);
/* Kills (SIGKILL) every process listed by procs_fd but keep; the number
 * killed or -errno.  One pread of a small file: cheap enough per job. */
int cgroup_kill_others(int procs_fd, pid_t keep);
/* Kills every process of the group; 0 or -errno. */
int cgroup_kill(const char *path);
/* Removes the (empty) group: 0, -EBUSY while processes remain, or -errno. */
int cgroup_remove(const char *path);
/* Turns the memory controller on for the groups below base, where
 * base's parent hands it down.  0, or -ENOTSUP (not available) or -errno. */
int cgroup_enable_memory(const char *base);
/* Limits the group's memory to bytes (memory.max) and keeps it out of
 * swap (memory.swap.max 0, when the file exists).  0, -ENOENT when the
 * group has no memory controller, or -errno. */
int cgroup_set_memory_max(const char *path, uint64_t bytes);
/* How many processes of the group the kernel killed for going over its
 * memory.max (memory.events "oom_kill"); -errno when unknown. */
long long cgroup_oom_kills(const char *path);
/* Kills and removes path and every group below it (bounded wait). */
void cgroup_destroy(const char *path);
/* Kills and removes groups left by daemons that are gone (omnipkgd.<pid>
 * next to base whose pid is dead). */
void cgroup_sweep_stale(const char *base);

/* Fallback without cgroups: SIGKILLs every descendant of pid (not pid
 * itself); the number killed. */
int proc_kill_descendants(pid_t pid);
/* Calls cb for each child of the calling process; stops at nonzero. */
int proc_each_child(int (*cb)(pid_t pid, void *ud), void *ud);

#endif
