/*
 * interp.c - finding Python interpreters and choosing one (interp.h).
 *
 * Discovery runs interpreters to learn their versions, which costs tens of
 * milliseconds each, so names that already carry a full version (pyenv's
 * version directories) are trusted and a real path seen once is never
 * probed again.
 */
#include "errmsg.h"
#include "interp.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <poll.h>
#include <unistd.h>

#define INTERP_PROBE_TIMEOUT_MS 10000
#define INTERP_MIN_MAJOR 3 /* the worker runtime is Python 3 */

int interp_parse_version(const char *s, int *major, int *minor, int *micro)
{
	int part[3] = { 0, 0, -1 }, n = 0;

	if (!s || !*s)
		return -EINVAL;
	for (;;) {
		int v = 0, digits = 0;

		while (*s >= '0' && *s <= '9') {
			if (++digits > 4)
				return -EINVAL;
			v = v * 10 + (*s++ - '0');
		}
		if (!digits || n == 3)
			return -EINVAL;
		part[n++] = v;
		if (*s == '\0')
			break;
		if (*s++ != '.')
			return -EINVAL;
	}
	if (n < 2)
		return -EINVAL;
	if (major)
		*major = part[0];
	if (minor)
		*minor = part[1];
	if (micro)
		*micro = part[2];
	return n;
}

int interp_parse_name(const char *s, int *major, int *minor, int *micro)
{
	int ma = 3, mi = -1, mc = -1, parts = 1;
	size_t n;

	if (!s)
		return -EINVAL;
	if (strcmp(s, "python3") == 0) {
		/* the newest 3.x: parts stays 1 */
	} else if (strncmp(s, "python", 6) == 0) {
		if ((parts = interp_parse_version(s + 6, &ma, &mi, &mc)) != 2)
			return -EINVAL;
	} else if (strncmp(s, "py", 2) == 0) {
		/* pyXY: a one-digit major, then a minor of one or two digits */
		s += 2;
		n = strspn(s, "0123456789");
		if (s[n] || n < 2 || n > 3 || s[0] == '0' || (n == 3 && s[1] == '0'))
			return -EINVAL;
		ma = s[0] - '0';
		mi = atoi(s + 1);
		parts = 2;
	} else if ((parts = interp_parse_version(s, &ma, &mi, &mc)) < 0) {
		return -EINVAL;
	}
	if (major)
		*major = ma;
	if (minor)
		*minor = mi;
	if (micro)
		*micro = mc;
	return parts;
}

static void interp_fill(struct interp *it, const char *path, int major, int minor, int micro,
			int source)
{
	memset(it, 0, sizeof(*it));
	it->major = major;
	it->minor = minor;
	it->micro = micro;
	snprintf(it->version, sizeof(it->version), "%d.%d.%d", major, minor, micro);
	snprintf(it->tag, sizeof(it->tag), "cp%d%d", major, minor);
	snprintf(it->path, sizeof(it->path), "%s", path);
	it->source = source;
}

/* pyenv shims are shell scripts that re-dispatch on every start; only a
 * real binary can be exec'd cheaply and forked from as a zygote. */
static int interp_is_elf(const char *path)
{
	char real[PATH_MAX], magic[4];
	ssize_t got;
	int fd;

	if (!realpath(path, real))
		return 0;
	fd = open(real, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	got = read(fd, magic, sizeof(magic));
	close(fd);
	return got == 4 && memcmp(magic, "\x7f" "ELF", 4) == 0 && access(real, X_OK) == 0;
}

static long interp_ms_left(const struct timespec *deadline)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (deadline->tv_sec - now.tv_sec) * 1000 + (deadline->tv_nsec - now.tv_nsec) / 1000000;
}

/* Reaps pid by the deadline, killing it if it is still running then. */
static int interp_reap(pid_t pid, const struct timespec *deadline)
{
	const struct timespec nap = { 0, 5 * 1000 * 1000 };
	int st;

	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid)
			return st;
		if (r < 0 && errno != EINTR)
			return -errno;
		if (interp_ms_left(deadline) <= 0) {
			kill(pid, SIGKILL);
			while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
				;
			return -ETIMEDOUT;
		}
		nanosleep(&nap, NULL);
	}
}

int interp_probe_start(const char *path, pid_t *pid_out, int *fd_out)
{
	char *const argv[] = { (char *)path, "-E", "-s", "-c",
			       "import sys; print('%d.%d.%d' % sys.version_info[:3])", NULL };
	int fds[2], e;
	pid_t pid;

	if (!path || path[0] != '/')
		return -EINVAL;
	if (access(path, X_OK) < 0)
		return -errno;
	if (pipe2(fds, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		e = -errno;
		close(fds[0]);
		close(fds[1]);
		return e;
	}
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		if (null < 0 || dup2(null, 0) < 0 || dup2(null, 2) < 0 || dup2(fds[1], 1) < 0)
			_exit(127);
		close_range(3, ~0U, 0);
		execv(path, argv);
		_exit(127);
	}
	close(fds[1]);
	*pid_out = pid;
	*fd_out = fds[0];
	return 0;
}

int interp_probe_parse(const char *path, char *buf, int status, struct interp *out)
{
	int major, minor, micro;

	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return -ENOEXEC;
	buf[strcspn(buf, "\r\n")] = '\0';
	if (interp_parse_version(buf, &major, &minor, &micro) != 3)
		return -ENOEXEC;
	interp_fill(out, path, major, minor, micro, INTERP_EXPLICIT);
	return 0;
}

int interp_probe(const char *path, struct interp *out)
{
	struct timespec deadline;
	char buf[64];
	size_t got = 0;
	int fd, st, timed_out = 0;
	pid_t pid;

	if ((st = interp_probe_start(path, &pid, &fd)) < 0)
		return st;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += INTERP_PROBE_TIMEOUT_MS / 1000;
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		long left = interp_ms_left(&deadline);
		ssize_t r;

		if (left <= 0) {
			timed_out = 1;
			break;
		}
		r = poll(&pfd, 1, (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			timed_out = r == 0;
			break;
		}
		r = read(fd, buf + got, sizeof(buf) - 1 - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
		if (got == sizeof(buf) - 1)
			break;
	}
	close(fd);
	if (timed_out)
		kill(pid, SIGKILL);
	st = interp_reap(pid, &deadline);
	if (timed_out || st == -ETIMEDOUT)
		return -ETIMEDOUT;
	if (st < 0)
		return st;
	buf[got] = '\0';
	return interp_probe_parse(path, buf, st, out);
}

int interp_is_venv(const char *path)
{
	char dir[PATH_MAX], cfg[PATH_MAX + 16], *slash;
	struct stat st;

	if (path[0] != '/' || snprintf(dir, sizeof(dir), "%s", path) >= (int)sizeof(dir))
		return 0;
	/* <dir>/pyvenv.cfg, then its parent's: taken lexically from the path
	 * as given, the way CPython looks for it at start-up. */
	for (int up = 0; up < 2; up++) {
		if (!(slash = strrchr(dir, '/')))
			return 0;
		*slash = '\0';
		snprintf(cfg, sizeof(cfg), "%s/pyvenv.cfg", dir);
		if (stat(cfg, &st) == 0 && S_ISREG(st.st_mode))
			return 1;
	}
	return 0;
}

/* Index of the entry that is not a venv's python and whose real path is real, or -1. */
static int interp_find_real(const struct interp_set *set, const char *real)
{
	char r[PATH_MAX];

	for (size_t i = 0; i < set->n; i++)
		if (!interp_is_venv(set->v[i].path) && realpath(set->v[i].path, r) && strcmp(r, real) == 0)
			return (int)i;
	return -1;
}

/* Index of the entry that is the same interpreter as path (whose real path
 * is real), or -1: a venv's python is only ever the entry of its own path. */
static int interp_find_same(const struct interp_set *set, const char *path, const char *real)
{
	if (!interp_is_venv(path))
		return interp_find_real(set, real);
	for (size_t i = 0; i < set->n; i++)
		if (strcmp(set->v[i].path, path) == 0)
			return (int)i;
	return -1;
}

/* Like interp_add, but returns the index of the entry (new or already there). */
static int interp_add_idx(struct interp_set *set, const struct interp *it)
{
	char real[PATH_MAX];
	int idx;

	if (!realpath(it->path, real))
		return -errno;
	if ((idx = interp_find_same(set, it->path, real)) >= 0)
		return idx;
	if (set->n == set->cap) {
		size_t cap = set->cap ? set->cap * 2 : 8;
		struct interp *v = realloc(set->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		set->v = v;
		set->cap = cap;
	}
	set->v[set->n] = *it;
	return (int)set->n++;
}

int interp_add(struct interp_set *set, const struct interp *it)
{
	int rc = interp_add_idx(set, it);

	return rc < 0 ? rc : 0;
}

/* Probes path unless its real path is known; returns its index or -errno. */
static int interp_add_probed(struct interp_set *set, const char *path, int source)
{
	char real[PATH_MAX];
	struct interp it;
	int rc;

	if (!realpath(path, real))
		return -errno;
	if ((rc = interp_find_same(set, path, real)) >= 0)
		return rc;
	if ((rc = interp_probe(path, &it)) < 0)
		return rc;
	if (it.major < INTERP_MIN_MAJOR)
		return -ENOTSUP;
	it.source = source;
	return interp_add_idx(set, &it);
}

static int interp_cmp_newest(const void *a, const void *b)
{
	const struct interp *x = a, *y = b;

	if (x->major != y->major)
		return y->major - x->major;
	if (x->minor != y->minor)
		return y->minor - x->minor;
	return y->micro - x->micro;
}

static void interp_scan_pyenv(struct interp_set *set, const char *root)
{
	struct interp_set found = { 0 };
	char dir[PATH_MAX], path[PATH_MAX];
	struct dirent *de;
	DIR *d;

	if (snprintf(dir, sizeof(dir), "%s/versions", root) >= (int)sizeof(dir) ||
	    !(d = opendir(dir)))
		return;
	while ((de = readdir(d))) {
		int major, minor, micro;
		struct interp it;

		if (de->d_name[0] == '.')
			continue;
		if (snprintf(path, sizeof(path), "%s/%s/bin/python", dir, de->d_name) >= (int)sizeof(path) ||
		    !interp_is_elf(path))
			continue;
		if (interp_parse_version(de->d_name, &major, &minor, &micro) == 3)
			interp_fill(&it, path, major, minor, micro, INTERP_PYENV);
		else if (interp_probe(path, &it) < 0)
			continue;
		it.source = INTERP_PYENV;
		if (it.major >= INTERP_MIN_MAJOR)
			interp_add(&found, &it);
	}
	closedir(d);
	/* readdir order is arbitrary; newest first keeps listings stable. */
	if (found.n)
		qsort(found.v, found.n, sizeof(found.v[0]), interp_cmp_newest);
	for (size_t i = 0; i < found.n; i++)
		interp_add(set, &found.v[i]);
	interp_set_free(&found);
}

/* "python3" or "python3.N": the names under which PATH holds interpreters. */
static int interp_path_name(const char *name)
{
	if (strncmp(name, "python3", 7) != 0)
		return 0;
	if (name[7] == '\0')
		return 1;
	if (name[7] != '.' || !name[8])
		return 0;
	for (const char *p = name + 8; *p; p++)
		if (*p < '0' || *p > '9')
			return 0;
	return 1;
}

static int interp_name_cmp(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int interp_dirent_python(const struct dirent *de)
{
	return interp_path_name(de->d_name) && strcmp(de->d_name, "python3") != 0;
}

/* Adds PATH's interpreters; returns the index of the first python3, or -1. */
static int interp_scan_path(struct interp_set *set, const char *path_env)
{
	char dir[PATH_MAX], path[PATH_MAX];
	const char *s = path_env;
	int first = -1;

	while (*s) {
		size_t len = strcspn(s, ":");
		struct dirent **names = NULL;
		int n, idx;

		if (len == 0 || s[0] != '/' || len >= sizeof(dir))
			goto next;
		memcpy(dir, s, len);
		dir[len] = '\0';
		if (snprintf(path, sizeof(path), "%s/python3", dir) < (int)sizeof(path) &&
		    interp_is_elf(path)) {
			idx = interp_add_probed(set, path, INTERP_PATH);
			if (idx >= 0 && first < 0)
				first = idx;
		}
		n = scandir(dir, &names, interp_dirent_python, interp_name_cmp);
		for (int i = 0; i < n; i++) {
			if (snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name) < (int)sizeof(path) &&
			    interp_is_elf(path))
				interp_add_probed(set, path, INTERP_PATH);
			free(names[i]);
		}
		free(names);
next:
		s += len;
		if (*s == ':')
			s++;
	}
	return first;
}

int interp_discover(struct interp_set *set, const char *const *config_paths, size_t nconfig,
		    const char *pyenv_root, const char *path_env, const char *default_name)
{
	int first_path = -1, newest = -1;

	set->default_idx = -1;
	for (size_t i = 0; config_paths && i < nconfig; i++)
		if (config_paths[i] && config_paths[i][0] == '/')
			interp_add_probed(set, config_paths[i], INTERP_CONFIG);
	if (pyenv_root && pyenv_root[0])
		interp_scan_pyenv(set, pyenv_root);
	if (path_env)
		first_path = interp_scan_path(set, path_env);

	if (default_name && default_name[0]) {
		struct interp it;
		char real[PATH_MAX];
		int rc = interp_resolve(set, default_name, &it, NULL, 0);

		if (rc == 0 && realpath(it.path, real)) {
			rc = interp_find_same(set, it.path, real);
			if (rc < 0)
				rc = interp_add_idx(set, &it);
			set->default_idx = rc < 0 ? -1 : rc;
		}
		return (int)set->n;
	}
	if (first_path >= 0) {
		set->default_idx = first_path;
		return (int)set->n;
	}
	for (size_t i = 0; i < set->n; i++)
		if (newest < 0 || interp_cmp_newest(&set->v[i], &set->v[newest]) < 0)
			newest = (int)i;
	set->default_idx = newest;
	return (int)set->n;
}

/* "3.9.1, 3.11.7" (ascending, no repeats) for error messages. */
static void interp_available(const struct interp_set *set, char *buf, size_t n)
{
	struct interp prev = { .major = -1 };
	size_t o = 0;

	buf[0] = '\0';
	for (;;) {
		const struct interp *best = NULL;

		for (size_t i = 0; i < set->n; i++) {
			const struct interp *c = &set->v[i];

			if (prev.major >= 0 && interp_cmp_newest(c, &prev) >= 0)
				continue;
			if (!best || interp_cmp_newest(c, best) > 0)
				best = c;
		}
		if (!best)
			break;
		o += (size_t)snprintf(buf + o, o < n ? n - o : 0, "%s%s", o ? ", " : "", best->version);
		if (o >= n)
			break;
		prev = *best;
	}
	if (!set->n)
		snprintf(buf, n, "none");
}

static int interp_resolve_path(const struct interp_set *set, const char *want, struct interp *out,
			       char *err, size_t errlen, int may_probe)
{
	char real[PATH_MAX];
	int rc;

	for (size_t i = 0; i < set->n; i++)
		if (strcmp(set->v[i].path, want) == 0) {
			*out = set->v[i];
			return 0;
		}
	if (!realpath(want, real))
		return errmsg_set(-ENOENT, err, errlen, "python %s: %s", want, strerror(errno));
	if ((rc = interp_find_real(set, real)) >= 0) {
		*out = set->v[rc];
		/* A venv's python: a known interpreter in an environment of its own. */
		if (interp_is_venv(want)) {
			snprintf(out->path, sizeof(out->path), "%s", want);
			out->source = INTERP_EXPLICIT;
		}
		return 0;
	}
	if (!may_probe)
		return -EAGAIN;
	rc = interp_probe(want, out);
	if (rc < 0)
		return errmsg_set(rc == -ENOENT ? -ENOENT : -EINVAL, err, errlen,
				   "python %s: not a working Python interpreter (%s)", want,
				   strerror(-rc));
	if (out->major < INTERP_MIN_MAJOR)
		return errmsg_set(-EINVAL, err, errlen, "python %s is %s; Python 3 is required",
				   want, out->version);
	return 0;
}

static int interp_find(const struct interp_set *set, const char *want, struct interp *out,
		       char *err, size_t errlen, int may_probe)
{
	const struct interp *best = NULL;
	char avail[512];
	int major, minor, micro, parts;

	if (!want || !want[0]) {
		if (set->n == 0)
			return errmsg_set(-ENOENT, err, errlen, "no Python interpreter found");
		if (set->default_idx < 0 || (size_t)set->default_idx >= set->n) {
			interp_available(set, avail, sizeof(avail));
			return errmsg_set(-ENOENT, err, errlen,
					   "the configured default python was not found; name one (available: %s)",
					   avail);
		}
		*out = set->v[set->default_idx];
		return 0;
	}
	if (want[0] == '/')
		return interp_resolve_path(set, want, out, err, errlen, may_probe);

	parts = interp_parse_name(want, &major, &minor, &micro);
	if (parts < 0) {
		interp_available(set, avail, sizeof(avail));
		return errmsg_set(-EINVAL, err, errlen,
				   "bad python '%.64s': give 3.11, 3.11.7, py311, python3.11, python3 "
				   "or an absolute path (available: %s)", want, avail);
	}
	if (parts == 1)   /* the newest minor of that major, then as "X.Y" */
		for (size_t i = 0; i < set->n; i++)
			if (set->v[i].major == major && set->v[i].minor > minor)
				minor = set->v[i].minor;
	for (size_t i = 0; i < set->n; i++) {
		const struct interp *c = &set->v[i];

		if (c->major != major || c->minor != minor || (parts == 3 && c->micro != micro))
			continue;
		if (!best || c->source < best->source ||
		    (c->source == best->source && c->micro > best->micro))
			best = c;
	}
	if (!best) {
		interp_available(set, avail, sizeof(avail));
		return errmsg_set(-ENOENT, err, errlen, "python %s not found (available: %s)",
				   want, avail);
	}
	*out = *best;
	return 0;
}

void interp_set_free(struct interp_set *set)
{
	free(set->v);
	set->v = NULL;
	set->n = set->cap = 0;
	set->default_idx = -1;
}

int interp_resolve(const struct interp_set *set, const char *want, struct interp *out,
		   char *err, size_t errlen)
{
	return interp_find(set, want, out, err, errlen, 1);
}

int interp_lookup(const struct interp_set *set, const char *want, struct interp *out,
		  char *err, size_t errlen)
{
	return interp_find(set, want, out, err, errlen, 0);
}

int interp_check_probed(const struct interp *it, char *err, size_t errlen)
{
	if (it->major < INTERP_MIN_MAJOR)
		return errmsg_set(-EINVAL, err, errlen, "python %s is %s; Python 3 is required",
				   it->path, it->version);
	return 0;
}

int interp_is_short_target(const struct interp_set *set, size_t i)
{
	struct interp best;
	char name[16];

	if (i >= set->n)
		return 0;
	snprintf(name, sizeof name, "%d.%d", set->v[i].major, set->v[i].minor);
	return interp_lookup(set, name, &best, NULL, 0) == 0 && strcmp(best.path, set->v[i].path) == 0;
}
