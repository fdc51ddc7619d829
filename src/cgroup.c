/*
 * cgroup.c - per-worker control groups, and the /proc fallback (see cgroup.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cgroup.h"

/* The cgroup2 mount point, from /proc/self/mountinfo. */
static int cgroup_mount(char *buf, size_t n)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096];
	int r = -ENOENT;

	if (!f)
		return -errno;
	while (fgets(line, sizeof line, f)) {
		char *sep = strstr(line, " - ");
		char mnt[PATH_MAX], fstype[64];

		if (!sep || sscanf(sep + 3, "%63s", fstype) != 1 || strcmp(fstype, "cgroup2") != 0)
			continue;
		if (sscanf(line, "%*s %*s %*s %*s %4095s", mnt) != 1 || strlen(mnt) >= n)
			continue;
		snprintf(buf, n, "%s", mnt);
		r = 0;
		break;
	}
	fclose(f);
	return r;
}

/* Our own cgroup2 path ("0::/a/b"), from /proc/self/cgroup. */
static int cgroup_self(char *buf, size_t n)
{
	FILE *f = fopen("/proc/self/cgroup", "re");
	char line[4096];
	int r = -ENOENT;

	if (!f)
		return -errno;
	while (fgets(line, sizeof line, f)) {
		if (strncmp(line, "0::", 3) != 0)
			continue;
		line[strcspn(line, "\n")] = 0;
		if (strlen(line + 3) < n) {
			snprintf(buf, n, "%s", strcmp(line + 3, "/") == 0 ? "" : line + 3);
			r = 0;
		}
		break;
	}
	fclose(f);
	return r;
}

static int write_file(const char *dir, const char *file, const char *text)
{
	char path[PATH_MAX + 32];
	int fd, r = 0;

	snprintf(path, sizeof path, "%s/%s", dir, file);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, text, strlen(text)) < 0)
		r = -errno;
	close(fd);
	return r;
}

int cgroup_init(char *base, size_t n)
{
	char mnt[PATH_MAX], self[PATH_MAX];
	int r;

	if ((r = cgroup_mount(mnt, sizeof mnt)) < 0 || (r = cgroup_self(self, sizeof self)) < 0)
		return r;
	if ((size_t)snprintf(base, n, "%s%s/omnipkgd.%d", mnt, self, (int)getpid()) >= n)
		return -ENAMETOOLONG;
	cgroup_sweep_stale(base);
	if (mkdir(base, 0700) < 0 && errno != EEXIST)
		return -errno;
	/* A group we cannot move processes into is no use: try with ourselves
	 * in a probe group, then move back. */
	{
		char probe[PATH_MAX + 16], pid[16], parent[2 * PATH_MAX];

		snprintf(probe, sizeof probe, "%s/probe", base);
		snprintf(parent, sizeof parent, "%s%s", mnt, self);
		snprintf(pid, sizeof pid, "%d", (int)getpid());
		if (mkdir(probe, 0700) < 0 && errno != EEXIST)
			r = -errno;
		else if ((r = write_file(probe, "cgroup.procs", pid)) == 0)
			r = write_file(parent, "cgroup.procs", pid);
		rmdir(probe);
		if (r < 0) {
			rmdir(base);
			return r;
		}
	}
	return 0;
}

/* Reads the small file dir/file into buf (NUL-terminated); bytes or -errno. */
static ssize_t read_file(const char *dir, const char *file, char *buf, size_t n)
{
	char path[PATH_MAX + 32];
	ssize_t got;
	int fd;

	snprintf(path, sizeof path, "%s/%s", dir, file);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	got = read(fd, buf, n - 1);
	if (got < 0)
		got = -errno;
	close(fd);
	buf[got > 0 ? got : 0] = 0;
	return got;
}

/* Does the space-separated list hold word? */
static int has_word(const char *list, const char *word)
{
	size_t n = strlen(word);

	for (const char *p = list; (p = strstr(p, word)); p += n)
		if ((p == list || p[-1] == ' ') && (p[n] == 0 || p[n] == ' ' || p[n] == '\n'))
			return 1;
	return 0;
}

int cgroup_enable_memory(const char *base)
{
	char buf[512];
	ssize_t r;

	/* Only what the parent hands down: its own subtree_control is not
	 * ours to change. */
	if ((r = read_file(base, "cgroup.controllers", buf, sizeof buf)) < 0)
		return (int)r;
	if (!has_word(buf, "memory"))
		return -ENOTSUP;
	if ((r = read_file(base, "cgroup.subtree_control", buf, sizeof buf)) < 0)
		return (int)r;
	if (has_word(buf, "memory"))
		return 0;
	return write_file(base, "cgroup.subtree_control", "+memory");
}

int cgroup_set_memory_max(const char *path, uint64_t bytes)
{
	char num[32];
	int r;

	snprintf(num, sizeof num, "%llu", (unsigned long long)bytes);
	if ((r = write_file(path, "memory.max", num)) < 0)
		return r;
	/* Without this the limit would only push the worker into swap. */
	r = write_file(path, "memory.swap.max", "0");
	return r == -ENOENT ? 0 : r;
}

long long cgroup_oom_kills(const char *path)
{
	char buf[1024], *p;
	ssize_t r = read_file(path, "memory.events", buf, sizeof buf);

	if (r < 0)
		return r;
	for (p = buf; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (strncmp(p, "oom_kill ", 9) == 0)
			return strtoll(p + 9, NULL, 10);
	return -ENOENT;
}

int cgroup_make(const char *base, const char *name, char *path, size_t n)
{
	if ((size_t)snprintf(path, n, "%s/%s", base, name) >= n)
		return -ENAMETOOLONG;
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int cgroup_add(const char *path, pid_t pid)
{
	char buf[16];

	snprintf(buf, sizeof buf, "%d", (int)pid);
	return write_file(path, "cgroup.procs", buf);
}

int cgroup_open_procs(const char *path)
{
	char file[PATH_MAX + 16];
	int fd;

	snprintf(file, sizeof file, "%s/cgroup.procs", path);
	fd = open(file, O_RDONLY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int cgroup_kill_others(int procs_fd, pid_t keep)
{
	char stack[1024], *buf = stack, *more;
	size_t cap = sizeof stack, len = 0;
	ssize_t got;
	int n = 0;

	for (;;) {
		got = pread(procs_fd, buf + len, cap - 1 - len, (off_t)len);
		if (got < 0) {
			n = -errno;
			goto out;
		}
		len += (size_t)got;
		if (got == 0 || len < cap - 1)
			break;
		more = malloc(cap * 2);   /* a job left many processes behind */
		if (!more)
			break;
		memcpy(more, buf, len);
		if (buf != stack)
			free(buf);
		buf = more;
		cap *= 2;
	}
	buf[len] = 0;
	for (char *p = buf, *end; *p; p = end) {
		long pid = strtol(p, &end, 10);

		if (end == p)
			break;
		if (pid > 0 && pid != keep && kill((pid_t)pid, SIGKILL) == 0)
			n++;
	}
out:
	if (buf != stack)
		free(buf);
	return n;
}

int cgroup_kill(const char *path)
{
	int r = write_file(path, "cgroup.kill", "1");

	/* Kernels before 5.14 have no cgroup.kill. */
	if (r == -ENOENT) {
		int fd = cgroup_open_procs(path);

		if (fd < 0)
			return fd;
		r = cgroup_kill_others(fd, 0);
		close(fd);
	}
	return r < 0 ? r : 0;
}

int cgroup_remove(const char *path)
{
	if (rmdir(path) == 0 || errno == ENOENT)
		return 0;
	return errno == EBUSY ? -EBUSY : -errno;
}

/* Kills and removes every group below dir, depth first. */
void cgroup_destroy(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (d) {
		while ((e = readdir(d))) {
			char sub[PATH_MAX];

			if (e->d_type != DT_DIR || e->d_name[0] == '.')
				continue;
			if ((size_t)snprintf(sub, sizeof sub, "%s/%s", dir, e->d_name) < sizeof sub)
				cgroup_destroy(sub);
		}
		closedir(d);
	}
	cgroup_kill(dir);
	for (int i = 0; i < 100 && rmdir(dir) < 0 && errno == EBUSY; i++)
		usleep(10000);
}

void cgroup_sweep_stale(const char *base)
{
	char parent[PATH_MAX];
	const char *slash = strrchr(base, '/');
	DIR *d;
	struct dirent *e;

	if (!slash || (size_t)(slash - base) >= sizeof parent)
		return;
	memcpy(parent, base, (size_t)(slash - base));
	parent[slash - base] = 0;
	if (!(d = opendir(parent)))
		return;
	while ((e = readdir(d))) {
		char dir[PATH_MAX + 300], proc[64];
		int pid;

		if (sscanf(e->d_name, "omnipkgd.%d", &pid) != 1 || pid == getpid())
			continue;
		snprintf(proc, sizeof proc, "/proc/%d", pid);
		if (access(proc, F_OK) == 0)
			continue;   /* another live daemon's */
		snprintf(dir, sizeof dir, "%s/%s", parent, e->d_name);
		cgroup_destroy(dir);
	}
	closedir(d);
}

/* ---- fallback: the process tree from /proc ---- */

static pid_t proc_ppid(pid_t pid)
{
	char path[64], buf[512], *p;
	int fd, ppid = -1;
	ssize_t n;

	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	p = strrchr(buf, ')');   /* the command name may hold anything */
	if (!p || sscanf(p + 1, " %*c %d", &ppid) != 1)
		return -1;
	return ppid;
}

struct ptab {
	pid_t *pid, *ppid;
	size_t n, cap;
};

static int ptab_load(struct ptab *t)
{
	DIR *d = opendir("/proc");
	struct dirent *e;

	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		char *end;
		long pid = strtol(e->d_name, &end, 10);

		if (*end || pid <= 0)
			continue;
		if (t->n == t->cap) {
			size_t cap = t->cap ? t->cap * 2 : 256;
			pid_t *a = realloc(t->pid, cap * sizeof *a), *b;

			if (!a)
				break;
			t->pid = a;
			b = realloc(t->ppid, cap * sizeof *b);
			if (!b)
				break;
			t->ppid = b;
			t->cap = cap;
		}
		t->pid[t->n] = (pid_t)pid;
		t->ppid[t->n] = proc_ppid((pid_t)pid);
		t->n++;
	}
	closedir(d);
	return 0;
}

static int ptab_kill_below(const struct ptab *t, pid_t pid, int depth)
{
	int n = 0;

	if (depth > 64)
		return 0;
	for (size_t i = 0; i < t->n; i++)
		if (t->ppid[i] == pid) {
			n += ptab_kill_below(t, t->pid[i], depth + 1);
			n += kill(t->pid[i], SIGKILL) == 0;
		}
	return n;
}

int proc_kill_descendants(pid_t pid)
{
	struct ptab t = { 0 };
	int n;

	ptab_load(&t);
	n = ptab_kill_below(&t, pid, 0);
	free(t.pid);
	free(t.ppid);
	return n;
}

int proc_each_child(int (*cb)(pid_t pid, void *ud), void *ud)
{
	struct ptab t = { 0 };
	pid_t self = getpid();
	int r = 0;

	ptab_load(&t);
	for (size_t i = 0; i < t.n && r == 0; i++)
		if (t.ppid[i] == self)
			r = cb(t.pid[i], ud);
	free(t.pid);
	free(t.ppid);
	return r;
}
