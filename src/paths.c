/*
 * paths.c - the runtime directory, socket and home locations (paths.h).
 *
 * The runtime directory guards the socket, so it is checked for ownership
 * and mode every time it is made, not trusted because it exists.
 */
#include "paths.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int paths_put(char *buf, size_t n, const char *a, const char *b)
{
	int len = snprintf(buf, n, "%s%s", a, b);

	if (len < 0)
		return -EINVAL;
	if ((size_t)len >= n)
		return -ENAMETOOLONG;
	return 0;
}

/* An environment value counts only when set, non-empty and absolute. */
static const char *paths_env_abs(const char *name)
{
	const char *v = getenv(name);

	return v && v[0] == '/' ? v : NULL;
}

int paths_runtime_dir(char *buf, size_t n)
{
	const char *v = getenv("OMNIPKG_RUNTIME_DIR");
	char tmp[64];

	if (v && v[0]) {
		if (v[0] != '/')
			return -EINVAL;
		return paths_put(buf, n, v, "");
	}
	if ((v = paths_env_abs("XDG_RUNTIME_DIR")))
		return paths_put(buf, n, v, "/omnipkg");
	snprintf(tmp, sizeof(tmp), "/tmp/omnipkg-%lu", (unsigned long)getuid());
	return paths_put(buf, n, tmp, "");
}

int paths_runtime_dir_make(char *buf, size_t n)
{
	struct stat st;
	char *slash;
	int rc;

	if ((rc = paths_runtime_dir(buf, n)) < 0)
		return rc;
	slash = strrchr(buf, '/');
	if (slash && slash != buf) {
		*slash = '\0';
		rc = paths_mkdir_p(buf, 0700);
		*slash = '/';
		if (rc < 0)
			return rc;
	}
	if (mkdir(buf, 0700) == 0) {
		/* umask may have taken bits we rely on; set exactly 0700. */
		if (chmod(buf, 0700) < 0)
			return -errno;
	} else if (errno != EEXIST) {
		return -errno;
	}
	/* lstat: a symlink planted by someone else must not redirect us. */
	if (lstat(buf, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 077))
		return -EPERM;
	return 0;
}

int paths_socket(char *buf, size_t n)
{
	static const char name[] = "/omnipkgd.sock";
	struct sockaddr_un sun;
	size_t len;
	int rc;

	if ((rc = paths_runtime_dir(buf, n)) < 0)
		return rc;
	len = strlen(buf);
	/* A socket path must fit sun_path, far shorter than PATH_MAX. */
	if (len + sizeof(name) > sizeof(sun.sun_path) || len + sizeof(name) > n)
		return -ENAMETOOLONG;
	memcpy(buf + len, name, sizeof(name));
	return 0;
}

int paths_home(char *buf, size_t n)
{
	const char *v = getenv("OMNIPKG_HOME");
	struct passwd *pw;

	if (v && v[0]) {
		if (v[0] != '/')
			return -EINVAL;
		return paths_put(buf, n, v, "");
	}
	if ((v = paths_env_abs("XDG_DATA_HOME")))
		return paths_put(buf, n, v, "/omnipkg");
	if (!(v = paths_env_abs("HOME"))) {
		pw = getpwuid(getuid());
		if (!pw || !pw->pw_dir || pw->pw_dir[0] != '/')
			return -ENOENT;
		v = pw->pw_dir;
	}
	return paths_put(buf, n, v, "/.local/share/omnipkg");
}

static int paths_mkdir_one(const char *p, unsigned mode)
{
	struct stat st;

	if (mkdir(p, (mode_t)mode) == 0)
		return 0;
	if (errno != EEXIST)
		return -errno;
	if (stat(p, &st) < 0)
		return -errno;
	return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int paths_mkdir_p(const char *path, unsigned mode)
{
	char p[4096];
	size_t len;
	int rc;

	if (!path || !path[0])
		return -EINVAL;
	len = strlen(path);
	if (len >= sizeof(p))
		return -ENAMETOOLONG;
	memcpy(p, path, len + 1);
	while (len > 1 && p[len - 1] == '/')
		p[--len] = '\0';
	for (char *s = p + 1; *s; s++) {
		if (*s != '/' || s[-1] == '/')
			continue;
		*s = '\0';
		rc = paths_mkdir_one(p, mode);
		*s = '/';
		if (rc < 0)
			return rc;
	}
	return paths_mkdir_one(p, mode);
}
