/*
 * shm.c - the segment registry (see shm.h).
 *
 *   s = shm_new("/run/user/1000/omnipkg", 4 << 30, err, sizeof err);
 *   shm_create(s, "frame", 64 << 20);     -> <runtime dir>/shm/frame, pages reserved
 *   shm_remove(s, "frame");
 *   shm_free(s);                          -> directory gone (and unmounted)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#include "logx.h"
#include "omnipkg.h"
#include "shm.h"

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif

struct seg {
	char name[SHM_NAME_MAX + 1];
	uint64_t id;
	uint32_t gen;
	off_t size;                /* as accounted */
	ino_t ino;
	int leases;
	uint64_t owner;           /* 0: persistent */
	int doomed;               /* its owner went: removed at its last release */
	char dtype[8];
	char shape[96];
};

struct shm {
	char dir[SHM_DIR_MAX];
	int dfd;                  /* the directory, flock'ed while we live */
	int mounted;              /* our own tmpfs, sized to the quota */
	size_t quota, used;
	struct seg *segs;
	size_t n, cap;
	uint64_t next_id;
	shm_change_cb on_change;
	void *ud;
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
	if (path)
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


/* Our own tmpfs at <rtdir>/shm, sized to the quota; -errno when we may not mount. */
static int shm_try_mount(struct shm *s, const char *rtdir)
{
	char opts[256], parent[4096];
	struct stat st, pst;
	long page = sysconf(_SC_PAGESIZE);
	size_t size = s->quota < (size_t)page ? (size_t)page : s->quota;
	int r;

	if (snprintf(s->dir, sizeof s->dir, "%s/shm", rtdir) >= (int)sizeof s->dir)
		return -ENAMETOOLONG;
	snprintf(parent, sizeof parent, "%s", rtdir);
	if (mkdir(s->dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	/* A mount left by a daemon that was killed: the pid file lock says
	 * that no other daemon serves this runtime dir. */
	if (stat(s->dir, &st) == 0 && stat(parent, &pst) == 0 && st.st_dev != pst.st_dev) {
		logx(LOGX_INFO, "detaching a stale shared memory mount at %s", s->dir);
		umount2(s->dir, MNT_DETACH);
	}
	snprintf(opts, sizeof opts, "size=%zu,nr_inodes=%d,mode=0700,uid=%d,gid=%d", size,
		 SHM_MAX_SEGMENTS + 16, (int)getuid(), (int)getgid());
	if (mount("omnipkg-shm", s->dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts) < 0) {
		r = -errno;
		rmdir(s->dir);
		return r;
	}
	s->mounted = 1;
	if ((r = shm_lock_dir(s)) < 0) {
		umount2(s->dir, MNT_DETACH);
		s->mounted = 0;
		rmdir(s->dir);
	}
	return r;
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
	r = shm_try_mount(s, rtdir);
	if (r < 0) {
		logx(LOGX_INFO, "cannot mount a tmpfs for shared segments (%s): the quota is "
		     "enforced on what passes through the daemon only", strerror(-r));
		s->dir[0] = 0;
		r = shm_try_devshm(s);
	}
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
		shm_wipe(s->dfd, NULL);
		close(s->dfd);
	}
	if (s->mounted)
		umount2(s->dir, MNT_DETACH);
	rmdir(s->dir);
	free(s->segs);
	free(s);
}

const char *shm_dir(const struct shm *s) { return s->dir; }
int shm_enforced(const struct shm *s) { return s->mounted; }
size_t shm_quota(const struct shm *s) { return s->quota; }

int shm_path(const struct shm *s, const char *name, char *buf, size_t n)
{
	if (!shm_name_ok(name))
		return -EINVAL;
	if (snprintf(buf, n, "%s/%s", s->dir, name) >= (int)n)
		return -ENAMETOOLONG;
	return 0;
}

/* ---- the table ---- */

static struct seg *seg_by_name(struct shm *s, const char *name)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->segs[i].name, name) == 0)
			return &s->segs[i];
	return NULL;
}

static struct seg *seg_by_ino(struct shm *s, ino_t ino)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->segs[i].ino == ino)
			return &s->segs[i];
	return NULL;
}

static struct seg *seg_add(struct shm *s, const char *name, ino_t ino, off_t size)
{
	struct seg *g;

	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		struct seg *v = realloc(s->segs, cap * sizeof *v);

		if (!v)
			return NULL;
		s->segs = v;
		s->cap = cap;
	}
	g = &s->segs[s->n++];
	memset(g, 0, sizeof *g);
	snprintf(g->name, sizeof g->name, "%s", name);
	g->id = ++s->next_id;
	g->gen = 1;
	g->ino = ino;
	g->size = size;
	s->used += (size_t)size;
	return g;
}

static void seg_changed(struct shm *s, uint64_t id)
{
	if (s->on_change)
		s->on_change(s->ud, id);
}

static void seg_del(struct shm *s, struct seg *g)
{
	uint64_t id = g->id;

	s->used -= (size_t)g->size;
	*g = s->segs[--s->n];
	seg_changed(s, id);
}

static void seg_info(const struct seg *g, struct shm_info *out)
{
	*out = (struct shm_info){ .name = g->name, .id = g->id, .gen = g->gen, .size = g->size,
				  .leases = g->leases, .owner = g->owner, .dtype = g->dtype,
				  .shape = g->shape };
}

void shm_on_change(struct shm *s, shm_change_cb cb, void *ud)
{
	s->on_change = cb;
	s->ud = ud;
}

/* Reserves [from, to) of fd: the pages exist before anyone maps them. */
static int reserve(int fd, off_t from, off_t to)
{
	int r;

	if (to <= from)
		return 0;
	do
		r = fallocate(fd, 0, from, to - from);
	while (r < 0 && errno == EINTR);
	if (r == 0)
		return 0;
	if (errno != EOPNOTSUPP)
		return errno == ENOSPC ? -EDQUOT : -errno;
	return ftruncate(fd, to) < 0 ? -errno : 0;
}

static int seg_set_size(struct shm *s, struct seg *g, int fd, off_t size)
{
	struct stat st;
	int r;

	if (size < 0)
		return -EINVAL;
	if (size < g->size && g->leases > 0)
		return -EBUSY;   /* a job maps it: shrinking would fault its stores */
	if (fstat(fd, &st) < 0)
		return -errno;
	if (size > g->size && ((size_t)(size - g->size) > s->quota ||
			       s->used + (size_t)(size - g->size) > s->quota))
		return -EDQUOT;
	if (size > st.st_size) {
		if ((r = reserve(fd, st.st_size, size)) < 0) {
			if (ftruncate(fd, st.st_size) < 0)
				logx(LOGX_WARN, "cannot shrink %s back: %s", g->name, strerror(errno));
			return r;
		}
	} else if (size < st.st_size && ftruncate(fd, size) < 0) {
		return -errno;
	}
	s->used = s->used - (size_t)g->size + (size_t)size;
	g->size = size;
	g->gen++;
	seg_changed(s, g->id);
	return 0;
}

int shm_open_file(struct shm *s, const char *name, int flags)
{
	struct stat st;
	struct seg *g;
	int fd;

	if (!shm_name_ok(name))
		return -EINVAL;
	g = seg_by_name(s, name);
	if (!g && (flags & O_CREAT) && s->n >= SHM_MAX_SEGMENTS)
		return -ENOSPC;
	fd = openat(s->dfd, name, (flags & (O_ACCMODE | O_CREAT | O_EXCL | O_TRUNC)) |
		    O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		close(fd);
		return -EIO;
	}
	if (!g && !seg_add(s, name, st.st_ino, st.st_size)) {
		close(fd);
		return -ENOMEM;
	}
	if (g && (flags & O_TRUNC)) {
		s->used -= (size_t)g->size;
		g->size = 0;
		g->gen++;
	}
	return fd;
}

int shm_resize(struct shm *s, int fd, off_t size)
{
	struct stat st;
	struct seg *g;

	if (fstat(fd, &st) < 0)
		return -errno;
	g = seg_by_ino(s, st.st_ino);
	if (!g)
		return -ENOENT;
	return seg_set_size(s, g, fd, size);
}

int shm_grow(struct shm *s, int fd, off_t end)
{
	struct stat st;
	struct seg *g;

	if (end < 0 || fstat(fd, &st) < 0)
		return -EINVAL;
	g = seg_by_ino(s, st.st_ino);
	if (!g)
		return -ENOENT;
	if (end <= g->size && end <= st.st_size)
		return 0;
	return seg_set_size(s, g, fd, end > g->size ? end : g->size);
}

int shm_create(struct shm *s, const char *name, off_t size)
{
	int existed = seg_by_name(s, name) != NULL, fd, r;

	if (size < 0)
		return -EINVAL;
	if (!existed && ((size_t)size > s->quota || s->used + (size_t)size > s->quota))
		return -EDQUOT;
	fd = shm_open_file(s, name, O_RDWR | O_CREAT | (existed ? 0 : O_EXCL));
	if (fd < 0)
		return fd;
	r = shm_resize(s, fd, size);
	close(fd);
	if (r < 0 && !existed)
		shm_remove(s, name);   /* a refused create leaves nothing behind */
	return r;
}

int shm_remove(struct shm *s, const char *name)
{
	struct seg *g;

	if (!shm_name_ok(name))
		return -EINVAL;
	g = seg_by_name(s, name);
	if (g && g->leases > 0)
		return -EBUSY;
	if (unlinkat(s->dfd, name, 0) < 0 && (!g || errno != ENOENT))
		return -errno;
	if (g)
		seg_del(s, g);
	return 0;
}

int shm_lease(struct shm *s, const char *name, struct shm_info *out)
{
	struct seg *g = shm_name_ok(name) ? seg_by_name(s, name) : NULL;

	if (!g)
		return -ENOENT;
	g->leases++;
	seg_info(g, out);
	return 0;
}

void shm_release(struct shm *s, uint64_t id)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->segs[i].id == id && s->segs[i].leases > 0) {
			struct seg *g = &s->segs[i];

			if (--g->leases == 0 && g->doomed && unlinkat(s->dfd, g->name, 0) == 0)
				seg_del(s, g);
			return;
		}
}

int shm_create_owned(struct shm *s, const char *name, off_t size, uint64_t owner,
		     struct shm_info *out)
{
	char auto_name[32];
	struct seg *g;
	int r;

	if (!name) {
		snprintf(auto_name, sizeof auto_name, "s%llu", (unsigned long long)s->next_id + 1);
		name = auto_name;
	}
	if (!shm_name_ok(name))
		return -EINVAL;
	if (seg_by_name(s, name))
		return -EEXIST;
	if ((r = shm_create(s, name, size)) < 0)
		return r;
	g = seg_by_name(s, name);
	g->owner = owner;
	seg_info(g, out);
	return 0;
}

int shm_set_meta(struct shm *s, const char *name, const char *dtype, const char *shape)
{
	struct seg *g = shm_name_ok(name) ? seg_by_name(s, name) : NULL;

	if (!g)
		return -ENOENT;
	if (dtype)
		snprintf(g->dtype, sizeof g->dtype, "%s", dtype);
	if (shape)
		snprintf(g->shape, sizeof g->shape, "%s", shape);
	return 0;
}

int shm_adopt(struct shm *s, const char *name, uint64_t owner, struct shm_info *out)
{
	struct stat st;
	struct seg *g;

	if (!shm_name_ok(name))
		return -EINVAL;
	if (seg_by_name(s, name))
		return -EEXIST;
	if (fstatat(s->dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_uid != getuid())
		return -EPERM;
	if (s->n >= SHM_MAX_SEGMENTS || (size_t)st.st_size > s->quota ||
	    s->used + (size_t)st.st_size > s->quota) {
		unlinkat(s->dfd, name, 0);
		return s->n >= SHM_MAX_SEGMENTS ? -ENOSPC : -EDQUOT;
	}
	g = seg_add(s, name, st.st_ino, st.st_size);
	if (!g)
		return -ENOMEM;
	g->owner = owner;
	seg_info(g, out);
	return 0;
}

void shm_drop_owner(struct shm *s, uint64_t owner)
{
	if (!owner)
		return;
	for (size_t i = 0; i < s->n;) {
		struct seg *g = &s->segs[i];

		if (g->owner != owner) {
			i++;
		} else if (g->leases > 0) {
			g->doomed = 1;
			i++;
		} else {
			unlinkat(s->dfd, g->name, 0);
			seg_del(s, g);   /* the last one moved here: look at i again */
		}
	}
}

int shm_stat(struct shm *s, const char *name, struct shm_info *out)
{
	struct seg *g = shm_name_ok(name) ? seg_by_name(s, name) : NULL;

	if (!g)
		return -ENOENT;
	seg_info(g, out);
	return 0;
}

size_t shm_usage(const struct shm *s, size_t *count)
{
	if (count)
		*count = s->n;
	return s->used;
}

/* Brings the table in line with the directory: files made behind our back
 * are adopted, segments whose file went are dropped. */
static void shm_sync(struct shm *s)
{
	DIR *d = shm_opendir(s->dfd);
	struct dirent *e;

	for (size_t i = 0; i < s->n;)
		if (faccessat(s->dfd, s->segs[i].name, F_OK, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT)
			seg_del(s, &s->segs[i]);
		else
			i++;
	while (d && (e = readdir(d))) {
		struct stat st;

		if (!shm_name_ok(e->d_name) || seg_by_name(s, e->d_name) || s->n >= SHM_MAX_SEGMENTS)
			continue;
		if (fstatat(s->dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
			seg_add(s, e->d_name, st.st_ino, st.st_size);
	}
	if (d)
		closedir(d);
}

int shm_list(struct shm *s, int (*cb)(const struct shm_info *seg, void *ud), void *ud)
{
	int r = 0;

	shm_sync(s);
	for (size_t i = 0; i < s->n && r == 0; i++) {
		struct shm_info info;

		seg_info(&s->segs[i], &info);
		r = cb(&info, ud);
	}
	return r;
}

/* Recovers the control block in g's file if pid holds it; 1 if it did. */
static int seg_recover(struct shm *s, const struct seg *g, pid_t pid, uint64_t start)
{
	omni_ctl_header h;
	void *p;
	int fd, r = 0;

	if (g->size < OMNI_CTL_HEADER_SIZE)
		return 0;
	fd = openat(s->dfd, g->name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return 0;
	/* a look at the header first: most segments are not control blocks */
	if (pread(fd, &h, sizeof h, 0) == (ssize_t)sizeof h && h.magic == OMNI_CTL_MAGIC &&
	    (h.seq & 1) && (h.seq >> OMNI_CTL_PID_SHIFT) == (uint64_t)pid) {
		p = mmap(NULL, OMNI_CTL_HEADER_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p != MAP_FAILED) {
			r = omni_ctl_recover(p, OMNI_CTL_HEADER_SIZE, (int)pid, start) == 1;
			munmap(p, OMNI_CTL_HEADER_SIZE);
		}
	}
	close(fd);
	return r;
}

int shm_recover_writer(struct shm *s, pid_t pid, uint64_t start)
{
	int n = 0;

	if (!s || pid <= 0)
		return 0;
	for (size_t i = 0; i < s->n; i++)
		if (seg_recover(s, &s->segs[i], pid, start)) {
			logx(LOGX_WARN, "control block %s: writer %d died mid-write; "
			     "recovered, its record marked torn", s->segs[i].name, (int)pid);
			n++;
		}
	return n;
}
