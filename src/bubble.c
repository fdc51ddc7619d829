/*
 * bubble.c - per-version package trees on disk (bubble.h).
 *
 * A bubble is installed into a hidden sibling directory and renamed into
 * place, so a reader never sees a half-installed tree: rename() of a
 * directory within one parent is atomic.
 */
#include "bubble.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "errmsg.h"
#include "paths.h"

static int bubble_dir(const char *home, const char *tag, const char *name, const char *version,
		      char *buf, size_t n)
{
	int len = snprintf(buf, n, "%s/bubbles/%s/%s-%s", home, tag, name, version);

	return len < 0 || (size_t)len >= n ? -ENAMETOOLONG : 0;
}

int bubble_path(const char *home, const char *tag, const struct spec_item *it, char *buf, size_t n)
{
	return bubble_dir(home, tag, it->name, it->version, buf, n);
}

static int bubble_is_dir(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The newest bubble under <home>/bubbles/<tag> that unpinned item it
 * allows: its version into best.  1, 0 for none, or -errno. */
static int bubble_newest(const char *home, const char *tag, const struct spec_item *it,
			 char best[SPEC_VERSION_MAX + 1])
{
	char dir[4096], path[4096];
	size_t nlen = strlen(it->name);
	struct dirent *de;
	int found = 0, c;
	DIR *d;

	if (snprintf(dir, sizeof(dir), "%s/bubbles/%s", home, tag) >= (int)sizeof(dir))
		return -ENAMETOOLONG;
	if (!(d = opendir(dir)))
		return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
	while ((de = readdir(d))) {
		const char *v = de->d_name + nlen + 1;

		/* "<name>-<version>": hidden install dirs start with '.', and
		 * "numpy-financial-1.0" is no version of numpy. */
		if (strncmp(de->d_name, it->name, nlen) != 0 || de->d_name[nlen] != '-' ||
		    !spec_item_allows(it, v))
			continue;
		/* Of two equal versions ("2.0", "2.0.0"), the first name by strcmp. */
		if (found && ((c = spec_version_cmp(v, best)) < 0 || (c == 0 && strcmp(v, best) >= 0)))
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >= (int)sizeof(path) ||
		    !bubble_is_dir(path))
			continue;
		snprintf(best, SPEC_VERSION_MAX + 1, "%s", v);
		found = 1;
	}
	closedir(d);
	return found;
}

int bubble_resolve_spec(const char *home, const struct interp *py, const struct spec *s,
			struct spec *resolved, char paths[][4096], char *err, size_t errlen)
{
	char text[SPEC_MAX_ITEMS * (SPEC_NAME_MAX + SPEC_VERSION_MAX + 3) + 8], why[256];
	size_t o = 0;
	int n = 0, rc;

	strcpy(text, "base");
	for (int i = 0; i < s->n; i++) {
		const struct spec_item *it = &s->items[i];
		char version[SPEC_VERSION_MAX + 1] = "";

		if (it->version[0]) {
			snprintf(version, sizeof(version), "%s", it->version);
		} else if ((rc = bubble_newest(home, py->tag, it, version)) < 0) {
			return errmsg_set(rc, err, errlen, "cannot look for bubbles of %s for python %d.%d (%s): %s",
					   it->name, py->major, py->minor, py->tag, strerror(-rc));
		}
		if (version[0]) {
			if (bubble_dir(home, py->tag, it->name, version, paths[n], 4096) < 0)
				return errmsg_set(-ENAMETOOLONG, err, errlen, "bubble path for %s==%s is too long",
						   it->name, version);
			if (!bubble_is_dir(paths[n]))
				return errmsg_set(-ENOENT, err, errlen,
						   "no bubble %s==%s for python %d.%d (%s): run `omnipkg install %s==%s --python %d.%d`",
						   it->name, version, py->major, py->minor, py->tag,
						   it->name, version, py->major, py->minor);
			n++;
		}
		o += (size_t)snprintf(text + o, sizeof(text) - o, "%s%s%s%s", i ? "," : "", it->name,
				      version[0] ? "==" : "", version);
	}
	/* Parsed again, so each byte taken from a directory name is checked
	 * like any spec's before it becomes a worker key. */
	if (resolved && (rc = spec_parse(text, strlen(text), resolved, why, sizeof(why))) < 0)
		return errmsg_set(rc, err, errlen, "resolved spec %.64s...: %s", text, why);
	return n;
}

int bubble_resolve(const char *home, const struct interp *py, const struct spec *s,
		   char paths[][4096], char *err, size_t errlen)
{
	return bubble_resolve_spec(home, py, s, NULL, paths, err, errlen);
}

static int bubble_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

/* Best effort: a leftover temp dir is hidden and never listed as a bubble. */
static void bubble_rm_tree(const char *path)
{
	nftw(path, bubble_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Runs pip for one item into tmp; returns the wait status or -errno. */
static int bubble_pip(const struct interp *py, const struct spec_item *it, const char *tmp, int quiet)
{
	char req[SPEC_NAME_MAX + SPEC_VERSION_MAX + 3];
	char *argv[10];
	int n = 0, st;
	pid_t pid;

	snprintf(req, sizeof(req), "%s==%s", it->name, it->version);
	argv[n++] = (char *)py->path;
	argv[n++] = "-m";
	argv[n++] = "pip";
	argv[n++] = "install";
	argv[n++] = "--target";
	argv[n++] = (char *)tmp;
	argv[n++] = "--disable-pip-version-check";
	if (quiet)
		argv[n++] = "--quiet";
	argv[n++] = req;
	argv[n] = NULL;

	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		if (quiet) {
			int null = open("/dev/null", O_WRONLY);

			if (null < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
				_exit(127);
		}
		close_range(3, ~0U, 0);
		execv(py->path, argv);
		_exit(127);
	}
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return st;
}

static int bubble_install_one(const char *home, const struct interp *py, const struct spec_item *it,
			      int quiet, char *err, size_t errlen)
{
	char final[4096], tmp[4096], *slash;
	int st, len;

	if (bubble_path(home, py->tag, it, final, sizeof(final)) < 0)
		return errmsg_set(-ENAMETOOLONG, err, errlen, "bubble path for %s==%s is too long",
				   it->name, it->version);
	if (bubble_is_dir(final))
		return 0;
	slash = strrchr(final, '/');
	*slash = '\0';
	len = snprintf(tmp, sizeof(tmp), "%s/.%s-%s.tmp-%ld", final, it->name, it->version,
		       (long)getpid());
	st = paths_mkdir_p(final, 0755);
	*slash = '/';
	if (st < 0)
		return errmsg_set(st, err, errlen, "cannot create %.*s: %s", (int)(slash - final),
				   final, strerror(-st));
	if (len < 0 || (size_t)len >= sizeof(tmp))
		return errmsg_set(-ENAMETOOLONG, err, errlen, "bubble path for %s==%s is too long",
				   it->name, it->version);
	bubble_rm_tree(tmp);

	st = bubble_pip(py, it, tmp, quiet);
	if (st < 0) {
		bubble_rm_tree(tmp);
		return errmsg_set(st, err, errlen, "cannot run %s -m pip: %s", py->path, strerror(-st));
	}
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		bubble_rm_tree(tmp);
		if (WIFSIGNALED(st))
			return errmsg_set(-EIO, err, errlen, "pip install %s==%s for python %s (%s) killed by signal %d",
					   it->name, it->version, py->version, py->tag, WTERMSIG(st));
		return errmsg_set(-EIO, err, errlen, "pip install %s==%s for python %s (%s) failed with exit status %d",
				   it->name, it->version, py->version, py->tag, WEXITSTATUS(st));
	}
	if (!bubble_is_dir(tmp))
		return errmsg_set(-EIO, err, errlen, "pip install %s==%s left no %s", it->name,
				   it->version, tmp);
	if (rename(tmp, final) < 0) {
		int e = errno;

		bubble_rm_tree(tmp);
		/* Another installer won the race: its bubble is just as good. */
		if ((e == EEXIST || e == ENOTEMPTY) && bubble_is_dir(final))
			return 0;
		return errmsg_set(-e, err, errlen, "cannot move bubble into %s: %s", final, strerror(e));
	}
	return 0;
}

int bubble_install(const char *home, const struct interp *py, const struct spec *s,
		   int quiet, char *err, size_t errlen)
{
	for (int i = 0; i < s->n; i++) {
		char item[SPEC_MAX_LEN];

		if (s->items[i].version[0])
			continue;
		spec_item_str(&s->items[i], item, sizeof(item));
		return errmsg_set(-EINVAL, err, errlen,
				   "install needs exact pins: '%s' is not 'name==version'", item);
	}
	/* An exec failure in the child would only show as exit status 127. */
	if (s->n && access(py->path, X_OK) < 0)
		return errmsg_set(-errno, err, errlen, "cannot run python %s: %s", py->path,
				   strerror(errno));
	for (int i = 0; i < s->n; i++) {
		int rc = bubble_install_one(home, py, &s->items[i], quiet, err, errlen);

		if (rc < 0)
			return rc;
	}
	return 0;
}

static int bubble_visible(const struct dirent *de)
{
	return de->d_name[0] != '.';
}

static int bubble_list_tag(const char *tagdir, const char *tag, bubble_cb cb, void *ud)
{
	struct dirent **names = NULL;
	char path[4096], name[256];
	int n, rc = 0;

	n = scandir(tagdir, &names, bubble_visible, alphasort);
	if (n < 0)
		return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
	for (int i = 0; i < n; i++) {
		const char *dash = strrchr(names[i]->d_name, '-');

		if (rc == 0 && dash && dash != names[i]->d_name && dash[1] &&
		    snprintf(path, sizeof(path), "%s/%s", tagdir, names[i]->d_name) < (int)sizeof(path) &&
		    bubble_is_dir(path)) {
			snprintf(name, sizeof(name), "%.*s", (int)(dash - names[i]->d_name),
				 names[i]->d_name);
			rc = cb(tag, name, dash + 1, path, ud);
		}
		free(names[i]);
	}
	free(names);
	return rc;
}

int bubble_list(const char *home, bubble_cb cb, void *ud)
{
	struct dirent **tags = NULL;
	char root[4096], dir[4096];
	int n, rc = 0;

	if (snprintf(root, sizeof(root), "%s/bubbles", home) >= (int)sizeof(root))
		return -ENAMETOOLONG;
	n = scandir(root, &tags, bubble_visible, alphasort);
	if (n < 0)
		return errno == ENOENT ? 0 : -errno;
	for (int i = 0; i < n; i++) {
		if (rc == 0 && snprintf(dir, sizeof(dir), "%s/%s", root, tags[i]->d_name) < (int)sizeof(dir) &&
		    bubble_is_dir(dir))
			rc = bubble_list_tag(dir, tags[i]->d_name, cb, ud);
		free(tags[i]);
	}
	free(tags);
	return rc;
}
