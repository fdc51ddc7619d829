/*
 * shm.h - the registry of shared segments: the one place segments are
 * created, sized, leased and removed.  The FUSE shm/ directory, the socket
 * protocol and the C API are views of it.
 *
 *   $ truncate -s 64M /omnipkg/shm/frame      # create through the mount
 *   $ readlink /omnipkg/shm/frame
 *   /run/user/1000/omnipkg/shm/frame
 *   $ rm /omnipkg/shm/frame                   # remove
 *
 * A segment is a plain file in a private directory (mode 0700) on tmpfs.
 * Mapping it maps tmpfs pages directly; nothing passes through the daemon.
 *
 * Where the daemon may mount (root, or CAP_SYS_ADMIN), the directory is a
 * tmpfs of its own, sized to the quota, at <runtime dir>/shm: the kernel
 * enforces the quota, also on a truncate(1) that follows the shm/ symlink.
 * Elsewhere it is /dev/shm/omnipkg-<uid>-XXXXXX (or <runtime dir>/shm) and
 * only what passes through the registry is bounded: shm_enforced() says
 * which.  Sizes are accounted in memory.  The registry reserves the pages
 * of every segment it creates or grows (fallocate), so running out of
 * quota is an error at create or resize time, never a SIGBUS in a process
 * that stores through a mapping later.
 *
 * Each segment has an id (never reused) and a generation (bumped on every
 * resize); a job that uses a segment leases it, and a leased segment
 * cannot be removed or shrunk (-EBUSY).
 *
 * Errors: -errno (-EINVAL bad name, -EDQUOT over quota, -ENOSPC too many
 * segments, -EBUSY leased, -ENOENT unknown).
 */
#ifndef OMNI_SHM_H
#define OMNI_SHM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SHM_NAME_MAX 128
#define SHM_DIR_MAX 4096
#define SHM_PATH_MAX (SHM_DIR_MAX + SHM_NAME_MAX + 2)   /* fits every shm_path */
#define SHM_MAX_SEGMENTS 4096

struct shm;

struct shm_info {
	const char *name;          /* borrowed, valid until the registry changes */
	uint64_t id;
	uint32_t gen;
	off_t size;
	int leases;
	uint64_t owner;            /* the client it belongs to; 0: persistent */
	const char *dtype, *shape; /* what it holds, when told ("" otherwise) */
};

/* Called when a segment goes (removed) or changes size (gen bumped), so
 * that mappings of it can be dropped. */
typedef void (*shm_change_cb)(void *ud, uint64_t id);

/* Creates the private directory (a sized tmpfs where possible; a stale
 * one of a dead daemon at the same place is detached first).  NULL with a
 * reason in err. */
struct shm *shm_new(const char *rtdir, size_t quota, char *err, size_t errlen);
/* Removes every segment and the directory (and unmounts it). */
void shm_free(struct shm *s);
void shm_on_change(struct shm *s, shm_change_cb cb, void *ud);

const char *shm_dir(const struct shm *s);        /* borrowed, lives as s */
int shm_enforced(const struct shm *s);           /* 1: the kernel bounds the quota */
size_t shm_quota(const struct shm *s);
/* [A-Za-z0-9._-]{1,128}, not "." or "..": 1 if valid. */
int shm_name_ok(const char *name);
/* The backing path of name into buf; -EINVAL bad name, -ENAMETOOLONG. */
int shm_path(const struct shm *s, const char *name, char *buf, size_t n);

/* Opens (flags as open(2)) the backing file of a segment; with O_CREAT a
 * missing segment is registered, empty.  fd or -errno. */
int shm_open_file(struct shm *s, const char *name, int flags);
/* Sets the size of fd's segment within the quota, reserving new pages.
 * 0 or -errno; a refused growth leaves the size as it was. */
int shm_resize(struct shm *s, int fd, off_t size);
/* Grows fd's segment to at least end bytes (shm_resize when larger). */
int shm_grow(struct shm *s, int fd, off_t end);
/* Creates a segment of size bytes, or resizes the existing one; nothing
 * is left behind when refused.  0 or -errno. */
int shm_create(struct shm *s, const char *name, off_t size);
int shm_remove(struct shm *s, const char *name);

/*
 * Creates a segment of size bytes for owner (0: persistent), named name or,
 * when name is NULL, by the registry.  Pages reserved; nothing is left
 * when refused (-EEXIST, -EDQUOT, -ENOSPC...).  *out describes it.
 */
int shm_create_owned(struct shm *s, const char *name, off_t size, uint64_t owner,
		     struct shm_info *out);
/* Records what name holds (either may be NULL), for listings.  0 or -ENOENT. */
int shm_set_meta(struct shm *s, const char *name, const char *dtype, const char *shape);
/* Registers a file someone else made in the directory (a worker's result)
 * for owner, within the quota (else it is removed: -EDQUOT).  0 or -errno. */
int shm_adopt(struct shm *s, const char *name, uint64_t owner, struct shm_info *out);
/* owner went away: its segments go now, or when their last lease ends. */
void shm_drop_owner(struct shm *s, uint64_t owner);

/* Takes a lease on name for a job: *out describes it.  0 or -errno. */
int shm_lease(struct shm *s, const char *name, struct shm_info *out);
/* Gives back a lease taken on segment id (a no-op if it is gone). */
void shm_release(struct shm *s, uint64_t id);
/* Describes name; 0 or -ENOENT. */
int shm_stat(struct shm *s, const char *name, struct shm_info *out);

/* Bytes held (as accounted) and segment count. */
size_t shm_usage(const struct shm *s, size_t *count);
/* Calls cb for every segment until it returns nonzero.  Files put into the
 * directory behind the registry's back are adopted first. */
int shm_list(struct shm *s, int (*cb)(const struct shm_info *seg, void *ud), void *ud);

/*
 * Process pid died (start: its start time, field 22 of /proc/<pid>/stat,
 * or 0 when unknown): every control block (omnipkg.h) it held mid-write
 * is recovered now (marked torn, next even seq published), so that no
 * waiter has to find out for itself.  A block held by a live process of
 * the same pid number is left alone.  s may be NULL (nothing to do).
 * Returns how many were recovered; costs a pread of each segment's header.
 */
int shm_recover_writer(struct shm *s, pid_t pid, uint64_t start);

#endif
