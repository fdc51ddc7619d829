/*
 * shm.c - shared segments: files in a private tmpfs directory (see shm.h).
 *
 *   s = shm_new("/run/user/1000/omnipkg", 4 << 30, err, sizeof err);
 *   shm_create(s, "frame", 64 << 20);     -> /dev/shm/omnipkg-1000-Xa91Qz/frame
 *   shm_remove(s, "frame");
 *   shm_free(s);                          -> directory gone
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#include "logx.h"
#include "shm.h"

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif

struct shm {
	char dir[4096];
	int dfd;                  /* the directory, flock'ed while we live */
	size_t quota;
};

int shm_name_ok(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > SHM_NAME_MAX || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return 0;
	for (const char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-'))
			return 0;
	return 1;
}

/* A stream over the directory dfd refers to, from its start (the
 * descriptor's offset is shared with every dup). */
static DIR *shm_opendir(int dfd)
{
	int fd = dup(dfd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;

	if (!d) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	rewinddir(d);
	return d;
}

/* Empties and removes the directory dfd refers to (named path). */
static void shm_wipe(int dfd, const char *path)
{
	DIR *d = shm_opendir(dfd);
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			unlinkat(dfd, e->d_name, 0);
	closedir(d);
	rmdir(path);
}

/* A dead daemon leaves its directory unlocked: remove those of our uid. */
static void shm_sweep_stale(const char *base, const char *prefix)
{
	DIR *d = opendir(base);
	struct dirent *e;
	char path[4096];

	if (!d)
		return;
	while ((e = readdir(d))) {
		int fd;

		if (strncmp(e->d_name, prefix, strlen(prefix)) != 0 ||
		    snprintf(path, sizeof path, "%s/%s", base, e->d_name) >= (int)sizeof path)
			continue;
		fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			struct stat st;

			if (fstat(fd, &st) == 0 && st.st_uid == getuid()) {
				logx(LOGX_INFO, "removing stale shared memory dir %s", path);
				shm_wipe(fd, path);
			}
		}
		close(fd);
	}
	closedir(d);
}

static int shm_lock_dir(struct shm *s)
{
	s->dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (s->dfd < 0)
		return -errno;
	if (flock(s->dfd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;

		close(s->dfd);
		s->dfd = -1;
		return e == EWOULDBLOCK ? -EBUSY : -e;
	}
	return 0;
}

static int shm_try_devshm(struct shm *s)
{
	struct statfs sf;
	char prefix[64];

	if (statfs("/dev/shm", &sf) < 0 || sf.f_type != TMPFS_MAGIC || access("/dev/shm", W_OK) < 0)
		return -ENOTSUP;
	snprintf(prefix, sizeof prefix, "omnipkg-%d-", (int)getuid());
	shm_sweep_stale("/dev/shm", prefix);
	snprintf(s->dir, sizeof s->dir, "/dev/shm/%sXXXXXX", prefix);
	if (!mkdtemp(s->dir))
		return -errno;
	return shm_lock_dir(s);
}

static int shm_try_rtdir(struct shm *s, const char *rtdir)
{
	int r;

	if (snprintf(s->dir, sizeof s->dir, "%s/shm", rtdir) >= (int)sizeof s->dir)
		return -ENAMETOOLONG;
	if (mkdir(s->dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	if ((r = shm_lock_dir(s)) < 0)
		return r;
	/* Our runtime dir is ours alone: what is in it is a dead daemon's. */
	{
		DIR *d = shm_opendir(s->dfd);
		struct dirent *e;

		while (d && (e = readdir(d)))
			if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
				unlinkat(s->dfd, e->d_name, 0);
		if (d)
			closedir(d);
	}
	return 0;
}

struct shm *shm_new(const char *rtdir, size_t quota, char *err, size_t errlen)
{
	struct shm *s = calloc(1, sizeof *s);
	int r;

	if (!s) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->dfd = -1;
	s->quota = quota;
	r = shm_try_devshm(s);
	if (r < 0) {
		if (s->dir[0] && r != -ENOTSUP && s->dfd < 0)
			rmdir(s->dir);
		logx(LOGX_INFO, "/dev/shm unusable (%s): shared segments go to %s/shm",
		     strerror(-r), rtdir);
		r = shm_try_rtdir(s, rtdir);
	}
	if (r < 0) {
		snprintf(err, errlen, "cannot create a shared memory dir (%s): %s", s->dir, strerror(-r));
		free(s);
		return NULL;
	}
	return s;
}

void shm_free(struct shm *s)
{
	if (!s)
		return;
	if (s->dfd >= 0) {
		shm_wipe(s->dfd, s->dir);
		close(s->dfd);
	}
	free(s);
}

const char *shm_dir(const struct shm *s)
{
	return s->dir;
}

int shm_path(const struct shm *s, const char *name, char *buf, size_t n)
{
	if (!shm_name_ok(name))
		return -EINVAL;
	if (snprintf(buf, n, "%s/%s", s->dir, name) >= (int)n)
		return -ENAMETOOLONG;
	return 0;
}

size_t shm_usage(struct shm *s, size_t *count)
{
	DIR *d = shm_opendir(s->dfd);
	struct dirent *e;
	size_t total = 0, n = 0;

	if (!d) {
		if (count)
			*count = 0;
		return 0;
	}
	while ((e = readdir(d))) {
		struct stat st;

		if (shm_name_ok(e->d_name) &&
		    fstatat(s->dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode)) {
			total += (size_t)st.st_size;
			n++;
		}
	}
	closedir(d);
	if (count)
		*count = n;
	return total;
}

int shm_list(struct shm *s, int (*cb)(const char *name, void *ud), void *ud)
{
	DIR *d = shm_opendir(s->dfd);
	struct dirent *e;
	int r = 0;

	if (!d)
		return -errno;
	while (r == 0 && (e = readdir(d)))
		if (shm_name_ok(e->d_name))
			r = cb(e->d_name, ud);
	closedir(d);
	return r;
}

int shm_open_file(struct shm *s, const char *name, int flags)
{
	size_t count;
	int fd;

	if (!shm_name_ok(name))
		return -EINVAL;
	if (flags & O_CREAT) {
		shm_usage(s, &count);
		if (count >= SHM_MAX_SEGMENTS && faccessat(s->dfd, name, F_OK, 0) < 0)
			return -ENOSPC;
	}
	fd = openat(s->dfd, name, (flags & (O_ACCMODE | O_CREAT | O_EXCL | O_TRUNC)) |
		    O_NOFOLLOW | O_CLOEXEC, 0600);
	return fd < 0 ? -errno : fd;
}

int shm_may_grow(struct shm *s, int fd, off_t end)
{
	struct stat st;
	size_t used;

	if (end < 0 || fstat(fd, &st) < 0)
		return -EINVAL;
	if (end <= st.st_size)
		return 0;
	used = shm_usage(s, NULL);
	if ((size_t)(end - st.st_size) > s->quota || used + (size_t)(end - st.st_size) > s->quota)
		return -EDQUOT;
	return 0;
}

int shm_resize(struct shm *s, int fd, off_t size)
{
	int r = shm_may_grow(s, fd, size);

	if (r < 0)
		return r;
	return ftruncate(fd, size) < 0 ? -errno : 0;
}

int shm_create(struct shm *s, const char *name, off_t size)
{
	int fd = shm_open_file(s, name, O_RDWR | O_CREAT), r;

	if (fd < 0)
		return fd;
	r = shm_resize(s, fd, size);
	close(fd);
	return r;
}

int shm_remove(struct shm *s, const char *name)
{
	if (!shm_name_ok(name))
		return -EINVAL;
	return unlinkat(s->dfd, name, 0) < 0 ? -errno : 0;
}
