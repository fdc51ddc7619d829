/*
 * activate.c - socket activation and readiness notification (activate.h).
 *
 * A socket handed over is checked as strictly as the daemon checks its
 * own: a service manager that passed the wrong descriptor gets a clear
 * error at start-up, not a daemon that hangs in accept() or serves a
 * socket no client will trust.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include "activate.h"
#include "errmsg.h"

/* A copy of the variable (n bytes, truncated), then unset; NULL if unset. */
static const char *activate_env(const char *var, char *buf, size_t n)
{
	const char *v = getenv(var);

	if (!v)
		return NULL;
	snprintf(buf, n, "%s", v);
	unsetenv(var);
	return buf;
}

/* A decimal number from 0 to max, nothing else; -1 when it is not one. */
static long activate_num(const char *s, long max)
{
	long v = 0;

	if (!*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > (max - (*s - '0')) / 10)
			return -1;
		v = v * 10 + (*s - '0');
	}
	return v;
}

static int activate_sockopt(int fd, int opt)
{
	socklen_t len = sizeof(int);
	int v;

	return getsockopt(fd, SOL_SOCKET, opt, &v, &len) < 0 ? -errno : v;
}

/* What the daemon would have bound itself: a listening Unix stream
 * socket at path, a file the clients accept as their user's. */
static int activate_check(int fd, const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	socklen_t len = sizeof sa;
	struct ucred cred;
	struct stat st;
	int v;

	if (fcntl(fd, F_GETFD) < 0)
		return errmsg_set(-EBADF, err, errlen, "LISTEN_FDS=1 but fd %d is not open", fd);
	if ((v = activate_sockopt(fd, SO_DOMAIN)) == -ENOTSOCK)
		return errmsg_set(-ENOTSOCK, err, errlen, "fd %d (LISTEN_FDS) is not a socket", fd);
	if (v < 0)
		return errmsg_set(v, err, errlen, "fd %d (LISTEN_FDS): %s", fd, strerror(-v));
	if (v != AF_UNIX)
		return errmsg_set(-EAFNOSUPPORT, err, errlen,
				  "fd %d (LISTEN_FDS) is not a Unix socket (family %d)", fd, v);
	if ((v = activate_sockopt(fd, SO_TYPE)) != SOCK_STREAM)
		return errmsg_set(-ESOCKTNOSUPPORT, err, errlen,
				  "fd %d (LISTEN_FDS) is not a stream socket (type %d)", fd, v);
	if (activate_sockopt(fd, SO_ACCEPTCONN) != 1)
		return errmsg_set(-EINVAL, err, errlen, "fd %d (LISTEN_FDS) is not listening", fd);
	memset(&sa, 0, sizeof sa);
	if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		return errmsg_set(-errno, err, errlen, "fd %d (LISTEN_FDS): %s", fd, strerror(errno));
	if (len <= offsetof(struct sockaddr_un, sun_path) || sa.sun_path[0] == 0)
		return errmsg_set(-EINVAL, err, errlen,
				  "fd %d (LISTEN_FDS) is not bound to a path; clients look for %s",
				  fd, path);
	sa.sun_path[sizeof sa.sun_path - 1] = 0;
	if (strcmp(sa.sun_path, path) != 0)
		return errmsg_set(-EINVAL, err, errlen,
				  "fd %d (LISTEN_FDS) listens on %s, but this runtime dir's socket is "
				  "%s (set OMNIPKG_RUNTIME_DIR to the first one's directory)",
				  fd, sa.sun_path, path);
	len = sizeof cred;
	if (lstat(path, &st) < 0)
		return errmsg_set(-errno, err, errlen, "%s: %s", path, strerror(errno));
	if (!S_ISSOCK(st.st_mode) || st.st_uid != getuid())
		return errmsg_set(-EPERM, err, errlen,
				  "%s is %s of uid %lu, not a socket of uid %lu: clients would refuse it",
				  path, S_ISSOCK(st.st_mode) ? "a socket" : "a file",
				  (unsigned long)st.st_uid, (unsigned long)getuid());
	/* A client's SO_PEERCRED names whoever called listen(), not us, and
	 * clients want their own uid there. */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return errmsg_set(-errno, err, errlen, "fd %d (LISTEN_FDS): %s", fd, strerror(errno));
	if (cred.uid != getuid())
		return errmsg_set(-EPERM, err, errlen,
				  "fd %d (LISTEN_FDS) was set listening by uid %lu (pid %ld), and "
				  "clients of uid %lu refuse a listener of another uid: run omnipkgd "
				  "as the user that makes its socket", fd, (unsigned long)cred.uid,
				  (long)cred.pid, (unsigned long)getuid());
	return 0;
}

int activate_listen(const char *path, int *fd, char *name, size_t namelen, char *err,
		    size_t errlen)
{
	char pidbuf[32], fdsbuf[32], names[256];
	const char *spid = activate_env("LISTEN_PID", pidbuf, sizeof pidbuf);
	const char *sfds = activate_env("LISTEN_FDS", fdsbuf, sizeof fdsbuf);
	const char *snames = activate_env("LISTEN_FDNAMES", names, sizeof names);
	long pid, n;
	int r, fl;

	if (!spid || !sfds)
		return 0;
	if ((pid = activate_num(spid, 1L << 30)) <= 0)
		return errmsg_set(-EINVAL, err, errlen, "LISTEN_PID=%s is not a process id", spid);
	if (pid != (long)getpid())
		return 0;
	if ((n = activate_num(sfds, 1L << 20)) < 0)
		return errmsg_set(-EINVAL, err, errlen, "LISTEN_FDS=%s is not a number", sfds);
	if (n == 0)
		return 0;
	if (n != 1)
		return errmsg_set(-EINVAL, err, errlen,
				  "LISTEN_FDS=%ld: omnipkgd serves one socket, its runtime dir's", n);
	if ((r = activate_check(ACTIVATE_FD, path, err, errlen)) < 0)
		return r;
	fl = fcntl(ACTIVATE_FD, F_GETFL);
	if (fcntl(ACTIVATE_FD, F_SETFD, FD_CLOEXEC) < 0 || fl < 0 ||
	    fcntl(ACTIVATE_FD, F_SETFL, fl | O_NONBLOCK) < 0)
		return errmsg_set(-errno, err, errlen, "fd %d (LISTEN_FDS): %s", ACTIVATE_FD,
				  strerror(errno));
	snprintf(name, namelen, "%.*s", (int)strcspn(snames ? snames : "", ":"),
		 snames ? snames : "");
	*fd = ACTIVATE_FD;
	return 1;
}

int activate_notify_take(char *addr, size_t n, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	char buf[sizeof sa.sun_path + 64];
	const char *v = activate_env("NOTIFY_SOCKET", buf, sizeof buf);

	if (n)
		addr[0] = 0;
	if (!v)
		return 0;
	if (v[0] != '/' && v[0] != '@')
		return errmsg_set(-EINVAL, err, errlen,
				  "NOTIFY_SOCKET=%s is neither a path nor an @name", v);
	if (strlen(v) >= sizeof sa.sun_path || strlen(v) >= n)
		return errmsg_set(-ENAMETOOLONG, err, errlen, "NOTIFY_SOCKET=%.64s...: too long", v);
	memcpy(addr, v, strlen(v) + 1);
	return 0;
}

int activate_notify(const char *addr, const char *state)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len = strlen(addr);
	socklen_t salen;
	int fd, r = 0;

	if (len == 0)
		return 0;
	if (len >= sizeof sa.sun_path)
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, addr, len);
	/* An abstract name has no NUL at its end: its length says where it ends. */
	salen = offsetof(struct sockaddr_un, sun_path) + len + (addr[0] != '@');
	if (addr[0] == '@')
		sa.sun_path[0] = 0;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen) < 0)
		r = -errno;
	close(fd);
	return r;
}
