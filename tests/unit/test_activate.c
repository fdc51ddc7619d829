/*
 * test_activate.c - socket activation and readiness (activate.h): the
 * variables are read once and never reach a child, a socket handed over
 * is served only when it is what the daemon would have bound itself, and
 * readiness reaches a datagram socket by path or abstract name.
 */
#include <CUnit/Basic.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "activate.h"

static char tmp[64], sock[128];

static int rm_one(const char *p, const struct stat *st, int fl, struct FTW *ftw)
{
	(void)st, (void)fl, (void)ftw;
	return remove(p);
}

static int suite_init(void)
{
	strcpy(tmp, "/tmp/omni-activate-XXXXXX");
	if (!mkdtemp(tmp))
		return -1;
	snprintf(sock, sizeof sock, "%s/omnipkgd.sock", tmp);
	return 0;
}

static int suite_clean(void)
{
	close(ACTIVATE_FD);
	return nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Sets the variables as a service manager would for this process. */
static void env_for_us(const char *fds, const char *names)
{
	char pid[32];

	snprintf(pid, sizeof pid, "%d", (int)getpid());
	setenv("LISTEN_PID", pid, 1);
	setenv("LISTEN_FDS", fds, 1);
	if (names)
		setenv("LISTEN_FDNAMES", names, 1);
	else
		unsetenv("LISTEN_FDNAMES");
}

static int env_gone(void)
{
	return !getenv("LISTEN_PID") && !getenv("LISTEN_FDS") && !getenv("LISTEN_FDNAMES");
}

/* Puts fd at ACTIVATE_FD, where a service manager passes the socket. */
static void put_fd(int fd)
{
	CU_ASSERT_FATAL(fd >= 0);
	if (fd != ACTIVATE_FD) {
		CU_ASSERT_FATAL(dup2(fd, ACTIVATE_FD) == ACTIVATE_FD);
		close(fd);
	}
}

/* A Unix stream socket bound to path (unlinked first); listening if asked. */
static int unix_stream(const char *path, int listening)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	unlink(path);
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	CU_ASSERT_FATAL(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
	if (listening)
		CU_ASSERT_FATAL(listen(fd, 8) == 0);
	return fd;
}

/* activate_listen with the socket at sock; its return, the reason in err. */
static int take(int *fd, char *name, char *err)
{
	*fd = -1;
	strcpy(name, "?");
	err[0] = 0;
	return activate_listen(sock, fd, name, 64, err, 256);
}

static void test_none_passed(void)
{
	char name[64], err[256];
	int fd;

	unsetenv("LISTEN_FDS");
	setenv("LISTEN_PID", "1", 1);
	CU_ASSERT_EQUAL(take(&fd, name, err), 0);
	CU_ASSERT_EQUAL(fd, -1);
	CU_ASSERT(env_gone());

	env_for_us("0", NULL);
	CU_ASSERT_EQUAL(take(&fd, name, err), 0);
	CU_ASSERT(env_gone());
}

/* Variables meant for another process: not ours to use, and still unset
 * so that no worker takes them for its own either. */
static void test_other_pid(void)
{
	char name[64], err[256];
	int fd;

	put_fd(unix_stream(sock, 1));
	env_for_us("1", "omnipkgd.socket");
	setenv("LISTEN_PID", "1", 1);
	CU_ASSERT_EQUAL(take(&fd, name, err), 0);
	CU_ASSERT_EQUAL(fd, -1);
	CU_ASSERT(env_gone());
	CU_ASSERT_EQUAL(fcntl(ACTIVATE_FD, F_GETFD), 0);   /* left alone */
	close(ACTIVATE_FD);
}

static void test_bad_variables(void)
{
	char name[64], err[256];
	int fd;

	env_for_us("1", NULL);
	setenv("LISTEN_PID", "12x", 1);
	CU_ASSERT_EQUAL(take(&fd, name, err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "LISTEN_PID"));
	CU_ASSERT(env_gone());

	env_for_us("one", NULL);
	CU_ASSERT_EQUAL(take(&fd, name, err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "LISTEN_FDS"));

	env_for_us("2", "a:b");
	CU_ASSERT_EQUAL(take(&fd, name, err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "one socket"));
	CU_ASSERT(env_gone());
}

static void test_bad_descriptors(void)
{
	struct sockaddr_in in = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	char name[64], err[256], other[160], file[160];
	int fd;

	close(ACTIVATE_FD);
	env_for_us("1", NULL);
	CU_ASSERT_EQUAL(take(&fd, name, err), -EBADF);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "not open"));

	snprintf(file, sizeof file, "%s/file", tmp);
	put_fd(open(file, O_RDWR | O_CREAT, 0600));
	env_for_us("1", NULL);
	CU_ASSERT_EQUAL(take(&fd, name, err), -ENOTSOCK);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "not a socket"));
	CU_ASSERT(env_gone());

	fd = socket(AF_INET, SOCK_DGRAM, 0);
	CU_ASSERT(bind(fd, (struct sockaddr *)&in, sizeof in) == 0);
	put_fd(fd);
	env_for_us("1", NULL);
	CU_ASSERT_EQUAL(take(&fd, name, err), -EAFNOSUPPORT);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "not a Unix socket"));

	put_fd(socket(AF_UNIX, SOCK_DGRAM, 0));
	env_for_us("1", NULL);
	CU_ASSERT_EQUAL(take(&fd, name, err), -ESOCKTNOSUPPORT);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "not a stream socket"));

	put_fd(unix_stream(sock, 0));
	env_for_us("1", NULL);
	CU_ASSERT_EQUAL(take(&fd, name, err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "not listening"));

	/* Listening, but where no client of this runtime dir looks. */
	snprintf(other, sizeof other, "%s/other.sock", tmp);
	put_fd(unix_stream(other, 1));
	env_for_us("1", NULL);
	CU_ASSERT_EQUAL(take(&fd, name, err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, other));
	CU_ASSERT_PTR_NOT_NULL(strstr(err, sock));
	unlink(other);

	{
		/* An abstract name is no file: nothing guards it, clients never look there. */
		struct sockaddr_un sa = { .sun_family = AF_UNIX, .sun_path = "\0omni-activate" };

		put_fd(socket(AF_UNIX, SOCK_STREAM, 0));
		CU_ASSERT(bind(ACTIVATE_FD, (struct sockaddr *)&sa,
			       offsetof(struct sockaddr_un, sun_path) + 14) == 0);
		CU_ASSERT(listen(ACTIVATE_FD, 8) == 0);
	}
	env_for_us("1", NULL);
	CU_ASSERT_EQUAL(take(&fd, name, err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "not bound to a path"));
	close(ACTIVATE_FD);
}

/* Clients refuse a socket file that is not their own user's. */
static void test_foreign_owner(void)
{
	char name[64], err[256];
	int fd;

	if (geteuid() != 0)
		return;   /* only root can give a file away */
	put_fd(unix_stream(sock, 1));
	CU_ASSERT_FATAL(chown(sock, 65534, 65534) == 0);
	env_for_us("1", NULL);
	CU_ASSERT_EQUAL(take(&fd, name, err), -EPERM);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "uid 65534"));
	close(ACTIVATE_FD);
}

/* A socket set listening by another uid: its clients' SO_PEERCRED names
 * that uid, which they refuse, whatever the file's owner.  The daemon
 * (uid 65534, a child) says so rather than serve them. */
static void test_foreign_listener(void)
{
	char name[64], err[256];
	int fd, status;
	pid_t pid;

	if (geteuid() != 0)
		return;
	put_fd(unix_stream(sock, 1));
	CU_ASSERT_FATAL(chown(sock, 65534, 65534) == 0 && chmod(tmp, 0755) == 0);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		int r = -1;

		if (setgid(65534) == 0 && setuid(65534) == 0) {
			env_for_us("1", NULL);
			r = take(&fd, name, err);
		}
		_exit(r == -EPERM && strstr(err, "set listening by uid 0") ? 0 : 1);
	}
	CU_ASSERT(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	chmod(tmp, 0700);
	close(ACTIVATE_FD);
}

static void test_taken(void)
{
	char name[64], err[256];
	int fd;

	put_fd(unix_stream(sock, 1));
	env_for_us("1", "omnipkgd.socket");
	CU_ASSERT_EQUAL(take(&fd, name, err), 1);
	CU_ASSERT_EQUAL(fd, ACTIVATE_FD);
	CU_ASSERT_STRING_EQUAL(name, "omnipkgd.socket");
	CU_ASSERT(env_gone());
	CU_ASSERT(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	CU_ASSERT(fcntl(fd, F_GETFL) & O_NONBLOCK);
	/* Taken once: the variables are gone, so a second look finds none. */
	CU_ASSERT_EQUAL(take(&fd, name, err), 0);
	close(ACTIVATE_FD);

	put_fd(unix_stream(sock, 1));
	env_for_us("1", NULL);
	CU_ASSERT_EQUAL(take(&fd, name, err), 1);
	CU_ASSERT_STRING_EQUAL(name, "");
	close(ACTIVATE_FD);
}

/* A datagram socket bound to path ("@name": abstract); its fd. */
static int dgram(const char *addr)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t len = offsetof(struct sockaddr_un, sun_path) + strlen(addr);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	memcpy(sa.sun_path, addr, strlen(addr));
	if (addr[0] == '@')
		sa.sun_path[0] = 0;
	else
		len++;
	CU_ASSERT_FATAL(fd >= 0 && bind(fd, (struct sockaddr *)&sa, len) == 0);
	return fd;
}

static void expect_datagram(int fd, const char *want)
{
	char buf[64];
	ssize_t n = recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT);

	CU_ASSERT_FATAL(n >= 0);
	buf[n] = 0;
	CU_ASSERT_STRING_EQUAL(buf, want);
}

static void test_notify(void)
{
	char addr[128], path[128], abstract[64], err[256], big[200];
	int fd;

	unsetenv("NOTIFY_SOCKET");
	CU_ASSERT_EQUAL(activate_notify_take(addr, sizeof addr, err, sizeof err), 0);
	CU_ASSERT_STRING_EQUAL(addr, "");
	CU_ASSERT_EQUAL(activate_notify(addr, "READY=1"), 0);   /* nobody asked: nothing */

	snprintf(path, sizeof path, "%s/notify", tmp);
	fd = dgram(path);
	setenv("NOTIFY_SOCKET", path, 1);
	CU_ASSERT_EQUAL(activate_notify_take(addr, sizeof addr, err, sizeof err), 0);
	CU_ASSERT_STRING_EQUAL(addr, path);
	CU_ASSERT_PTR_NULL(getenv("NOTIFY_SOCKET"));
	CU_ASSERT_EQUAL(activate_notify(addr, "READY=1"), 0);
	expect_datagram(fd, "READY=1");
	close(fd);

	snprintf(abstract, sizeof abstract, "@omni-activate-%d", (int)getpid());
	fd = dgram(abstract);
	setenv("NOTIFY_SOCKET", abstract, 1);
	CU_ASSERT_EQUAL(activate_notify_take(addr, sizeof addr, err, sizeof err), 0);
	CU_ASSERT_EQUAL(activate_notify(addr, "STOPPING=1"), 0);
	expect_datagram(fd, "STOPPING=1");
	close(fd);
	/* Nobody listens there any more. */
	CU_ASSERT(activate_notify(addr, "READY=1") < 0);

	setenv("NOTIFY_SOCKET", "vsock:2:9", 1);
	CU_ASSERT_EQUAL(activate_notify_take(addr, sizeof addr, err, sizeof err), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "vsock:2:9"));
	CU_ASSERT_STRING_EQUAL(addr, "");
	CU_ASSERT_PTR_NULL(getenv("NOTIFY_SOCKET"));

	memset(big, 'x', sizeof big - 1);
	big[0] = '/';
	big[sizeof big - 1] = 0;
	setenv("NOTIFY_SOCKET", big, 1);
	CU_ASSERT_EQUAL(activate_notify_take(addr, sizeof addr, err, sizeof err), -ENAMETOOLONG);
	CU_ASSERT_STRING_EQUAL(addr, "");
}

int main(void)
{
	CU_pSuite s;
	unsigned fails;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	s = CU_add_suite("activate", suite_init, suite_clean);
	CU_add_test(s, "nothing passed", test_none_passed);
	CU_add_test(s, "variables of another process", test_other_pid);
	CU_add_test(s, "bad variables", test_bad_variables);
	CU_add_test(s, "bad descriptors", test_bad_descriptors);
	CU_add_test(s, "socket of another user", test_foreign_owner);
	CU_add_test(s, "listener of another user", test_foreign_listener);
	CU_add_test(s, "socket taken", test_taken);
	CU_add_test(s, "readiness", test_notify);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return fails ? 1 : 0;
}
