/*
 * shm.h - the registry of shared segments behind <mount>/shm.
 *
 *   $ truncate -s 64M /omnipkg/shm/frame      # create: a file in the private dir
 *   $ readlink /omnipkg/shm/frame
 *   /dev/shm/omnipkg-1000-Xa91Qz/frame
 *   $ rm /omnipkg/shm/frame                   # remove
 *
 * A segment is a plain file in a private directory (mode 0700) on tmpfs:
 * /dev/shm/omnipkg-<uid>-XXXXXX, else <runtime dir>/shm.  Mapping it maps
 * tmpfs pages directly; nothing passes through the daemon.  The directory
 * is held with flock() for the daemon's life, so the next daemon can tell
 * a dead one's leftovers (unlocked) from a live one's and remove them.
 *
 * The quota counts apparent sizes (a sparse 1 GiB file counts 1 GiB) and is
 * enforced on what passes through the registry; a process that truncates the
 * backing file directly is not stopped.
 *
 * Errors: -errno (-EINVAL bad name, -EDQUOT over quota).
 */
#ifndef OMNI_SHM_H
#define OMNI_SHM_H

#include <stddef.h>
#include <sys/types.h>

#define SHM_NAME_MAX 128
#define SHM_MAX_SEGMENTS 4096

struct shm;

/* Creates the private directory.  NULL with a reason in err. */
struct shm *shm_new(const char *rtdir, size_t quota, char *err, size_t errlen);
/* Removes every segment and the directory. */
void shm_free(struct shm *s);

const char *shm_dir(const struct shm *s);        /* borrowed, lives as s */
/* [A-Za-z0-9._-]{1,128}, not "." or "..": 1 if valid. */
int shm_name_ok(const char *name);
/* The backing path of name into buf; -EINVAL bad name, -ENAMETOOLONG. */
int shm_path(const struct shm *s, const char *name, char *buf, size_t n);
/* Opens (flags as open(2); O_CREAT makes it 0600) the backing file; fd or -errno. */
int shm_open_file(struct shm *s, const char *name, int flags);
/* ftruncate within the quota; 0 or -errno. */
int shm_resize(struct shm *s, int fd, off_t size);
/* May fd's file grow to end bytes?  0 or -EDQUOT. */
int shm_may_grow(struct shm *s, int fd, off_t end);
/* Creates (or resizes) a segment of size bytes; 0 or -errno. */
int shm_create(struct shm *s, const char *name, off_t size);
int shm_remove(struct shm *s, const char *name);
/* Bytes held (apparent) and segment count, from the directory. */
size_t shm_usage(struct shm *s, size_t *count);
/* Calls cb for every segment name until it returns nonzero. */
int shm_list(struct shm *s, int (*cb)(const char *name, void *ud), void *ud);

#endif
