/*
 * runtime.c - installs the embedded worker runtime (runtime.h) into a
 * private directory under the runtime dir, and removes it.  Every file is
 * written the same way, the compiled omnipkg_atomic.abi3.so among them.
 *
 * The daemon holds the runtime dir's lock while it installs, so no other
 * daemon writes here; a worker of a daemon that died may still be reading,
 * which is why each file is replaced by rename and never rewritten in place.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "errmsg.h"
#include "runtime.h"

#define RUNTIME_DIR "worker"
#define RUNTIME_ENTRY "worker.py"

/* A directory of ours, 0700, whether it was there or not. */
static int runtime_mkdir(const char *dir, char *err, size_t errlen)
{
	struct stat st;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return errmsg_set(-errno, err, errlen, "mkdir %s: %s", dir, strerror(errno));
	if (lstat(dir, &st) < 0)
		return errmsg_set(-errno, err, errlen, "%s: %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid())
		return errmsg_set(-ENOTDIR, err, errlen, "%s is not a directory of ours", dir);
	if ((st.st_mode & 07777) != 0700 && chmod(dir, 0700) < 0)
		return errmsg_set(-errno, err, errlen, "chmod %s: %s", dir, strerror(errno));
	return 0;
}

static int runtime_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

static void runtime_rm_tree(const char *path)
{
	nftw(path, runtime_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int runtime_write(const char *path, const struct runtime_file *f, char *err, size_t errlen)
{
	char tmp[PATH_MAX];
	size_t off = 0;
	int fd, e = 0;

	if (snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid()) >= (int)sizeof tmp)
		return errmsg_set(-ENAMETOOLONG, err, errlen, "%s: path too long", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return errmsg_set(-errno, err, errlen, "%s: %s", tmp, strerror(errno));
	while (!e && off < f->len) {
		ssize_t w = write(fd, f->data + off, f->len - off);

		if (w > 0)
			off += (size_t)w;
		else if (w == 0 || errno != EINTR)
			e = w < 0 ? errno : EIO;
	}
	if (close(fd) < 0 && !e)
		e = errno;
	if (!e && rename(tmp, path) < 0)
		e = errno;
	if (e) {
		unlink(tmp);
		return errmsg_set(-e, err, errlen, "cannot write %s: %s", path, strerror(e));
	}
	return 0;
}

/* The directories on a file's relative path, under root. */
static int runtime_dirs(const char *root, const char *rel, char *err, size_t errlen)
{
	char dir[PATH_MAX];
	const char *s;
	int r;

	for (s = strchr(rel, '/'); s; s = strchr(s + 1, '/')) {
		if (snprintf(dir, sizeof dir, "%s/%.*s", root, (int)(s - rel), rel) >= (int)sizeof dir)
			return errmsg_set(-ENAMETOOLONG, err, errlen, "%s/%s: path too long", root, rel);
		if ((r = runtime_mkdir(dir, err, errlen)) < 0)
			return r;
	}
	return 0;
}

int runtime_install(const char *rtdir, char *entry, size_t n, char *err, size_t errlen)
{
	char root[PATH_MAX], path[PATH_MAX];
	const struct runtime_file *f;
	int r;

	if (snprintf(root, sizeof root, "%s/" RUNTIME_DIR, rtdir) >= (int)sizeof root)
		return errmsg_set(-ENAMETOOLONG, err, errlen, "%s: path too long", rtdir);
	if ((r = runtime_mkdir(root, err, errlen)) < 0)
		return r;
	for (f = runtime_files; f->path; f++) {
		if ((r = runtime_dirs(root, f->path, err, errlen)) < 0)
			return r;
		if (snprintf(path, sizeof path, "%s/%s", root, f->path) >= (int)sizeof path)
			return errmsg_set(-ENAMETOOLONG, err, errlen, "%s/%s: path too long",
					  root, f->path);
		if ((r = runtime_write(path, f, err, errlen)) < 0)
			return r;
		/* Python trusts a cached module while the source's size and mtime
		 * in seconds match, which a new source can share: drop the cache. */
		*strrchr(path, '/') = 0;
		if (strlen(path) + sizeof "/__pycache__" <= sizeof path) {
			strcat(path, "/__pycache__");
			runtime_rm_tree(path);
		}
	}
	if (snprintf(entry, n, "%s/" RUNTIME_ENTRY, root) >= (int)n)
		return errmsg_set(-ENAMETOOLONG, err, errlen, "%s: path too long", root);
	return 0;
}

void runtime_remove(const char *rtdir)
{
	char root[PATH_MAX];

	if (snprintf(root, sizeof root, "%s/" RUNTIME_DIR, rtdir) < (int)sizeof root)
		runtime_rm_tree(root);
}
