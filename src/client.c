/*
 * client.c - libomnipkg: the client side of the omnipkgd socket (omnipkg.h).
 *
 * A handle is one blocking Unix-socket connection.  Requests are framed by
 * proto.c; replies are read whole (a frame's length is judged from its
 * header before anything is buffered for it) and matched to requests by id.
 * A reply that arrives while omni_call waits for another id is queued and
 * handed out, in arrival order, by later omni_recv calls.  Once the byte
 * stream can no longer be trusted (a bad frame, a lost connection, a write
 * cut short) the handle keeps that error and returns it from then on.
 *
 * When nothing answers and the caller asked for it, omni_connect starts
 * the daemon (`omnipkgd --daemon`, which exits 0 once its socket accepts)
 * and connects again; never from inside a worker (OMNIPKG_DAEMON_CHILD=1).
 *
 * Requests carry code, so the socket is trusted only when nobody else could
 * have put it there: its directory and the socket belong to the caller
 * alone and the peer runs as the caller (client__dial).  Ids are written
 * as exact integers: cJSON prints a double with 15 significant digits,
 * which alters ids above 10^15.
 */
#include "omnipkg.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "bubble.h"
#include "client_shm.h"
#include "config.h"
#include "interp.h"
#include "paths.h"
#include "proto.h"
#include "spec.h"

extern char **environ;

#define CLIENT__RBUF_MIN (64u << 10)
#define CLIENT__HELLO_MS 10000      /* a daemon that accepts but never says hello */
#define CLIENT__START_MS 30000      /* `omnipkgd --daemon` until its socket accepts */
#define CLIENT__REDIAL_MS 2000      /* dialling again after a start */
#define CLIENT__OP_MAX 64
#define CLIENT__MAX_ID ((uint64_t)1 << 53)   /* PROTO_MAX_ID */

struct omni_reply {
	cJSON *obj;        /* owned: the whole reply object */
	char *json;        /* owned: obj printed, made by the first omni_reply_json */
	uint64_t id;
	omni_reply *next;  /* link while queued in a client */
};

struct omni_client {
	int fd;
	int err;                   /* sticky -errno once the stream is unusable */
	uint64_t next_id;          /* ids increase from 1; hello takes 1 */
	char *rbuf;                /* owned: bytes received and not yet parsed */
	size_t rlen, rcap;
	omni_reply *qhead, *qtail; /* owned: replies kept for omni_recv */
};

static void client__seterr(char *err, size_t errlen, const char *fmt, const char *arg)
{
	if (err && errlen)
		snprintf(err, errlen, fmt, arg);
}

static void client__errf(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void client__errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static int64_t client__now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until deadline for poll(); deadline < 0 means forever. */
static int client__left_ms(int64_t deadline)
{
	int64_t left;

	if (deadline < 0)
		return -1;
	left = deadline - client__now_ms();
	if (left <= 0)
		return 0;
	return left > INT_MAX ? INT_MAX : (int)left;
}

static void client__sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Remembers the first fatal error of the stream; returns rc. */
static int client__fail(omni_client *c, int rc)
{
	if (!c->err)
		c->err = rc;
	return rc;
}

/* ---- replies ---------------------------------------------------------- */

static void client__reply_destroy(omni_reply *r)
{
	if (!r)
		return;
	cJSON_Delete(r->obj);
	cJSON_free(r->json);
	free(r);
}

/* Strict reply check: an object of our version with an integral id. */
static int client__reply_parse(const char *payload, size_t plen, omni_reply **out)
{
	const char *end = NULL;
	cJSON *obj, *v, *id;
	omni_reply *r;

	obj = cJSON_ParseWithLengthOpts(payload, plen, &end, 0);
	if (!obj)
		return -EBADMSG;
	for (; end && end < payload + plen; end++)
		if (*end != ' ' && *end != '\t' && *end != '\r' && *end != '\n')
			goto bad;
	if (!cJSON_IsObject(obj))
		goto bad;
	v = cJSON_GetObjectItemCaseSensitive(obj, "v");
	if (!cJSON_IsNumber(v))
		goto bad;
	if (v->valuedouble != PROTO_VERSION) {
		cJSON_Delete(obj);
		return -EPROTONOSUPPORT;
	}
	id = cJSON_GetObjectItemCaseSensitive(obj, "id");
	/* id 0 answers a request whose id could not be read; every integer up
	 * to 2^53 is exact in a double, so reading through one loses nothing */
	if (!cJSON_IsNumber(id) || !(id->valuedouble >= 0) || id->valuedouble > PROTO_MAX_ID ||
	    (double)(uint64_t)id->valuedouble != id->valuedouble)
		goto bad;
	if (!(r = calloc(1, sizeof *r))) {
		cJSON_Delete(obj);
		return -ENOMEM;
	}
	r->obj = obj;
	r->id = (uint64_t)id->valuedouble;
	*out = r;
	return 0;
bad:
	cJSON_Delete(obj);
	return -EBADMSG;
}

static void client__queue_push(omni_client *c, omni_reply *r)
{
	r->next = NULL;
	if (c->qtail)
		c->qtail->next = r;
	else
		c->qhead = r;
	c->qtail = r;
}

static omni_reply *client__queue_pop(omni_client *c)
{
	omni_reply *r = c->qhead;

	if (r) {
		c->qhead = r->next;
		if (!c->qhead)
			c->qtail = NULL;
		r->next = NULL;
	}
	return r;
}

/* ---- socket I/O ------------------------------------------------------- */

static int client__write_all(omni_client *c, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t k = send(c->fd, p, n, MSG_NOSIGNAL);

		if (k < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				struct pollfd pfd = { .fd = c->fd, .events = POLLOUT };

				if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
					return client__fail(c, -errno);
				continue;
			}
			return client__fail(c, errno == EPIPE ? -ECONNRESET : -errno);
		}
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Sends the first bytes of a frame with nfds descriptors attached
 * (SCM_RIGHTS, on the frame's first byte: proto.h); how many went. */
static ssize_t client__send_fds(omni_client *c, const char *p, size_t n, const int *fds,
				size_t nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * OMNI_EXEC_MAX_FDS)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = (void *)p, .iov_len = n };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			     .msg_controllen = CMSG_SPACE(sizeof(int) * nfds) };
	struct cmsghdr *cm;
	ssize_t k;

	memset(&u, 0, sizeof u);
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
	memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	for (;;) {
		struct pollfd pfd = { .fd = c->fd, .events = POLLOUT };

		k = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
		if (k >= 0)
			return k;
		if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
			return client__fail(c, errno == EPIPE ? -ECONNRESET : -errno);
		if (errno != EINTR && poll(&pfd, 1, -1) < 0 && errno != EINTR)
			return client__fail(c, -errno);
	}
}

/* Frames msg (borrowed) and sends it whole, with nfds descriptors. */
static int client__send_msg(omni_client *c, const cJSON *msg, const int *fds, size_t nfds)
{
	size_t len = 0, sent = 0;
	char *frame;
	ssize_t k;
	int rc;

	/* proto_encode says NULL for both; the size limit is the likely one */
	if (!(frame = proto_encode(msg, &len)))
		return -EMSGSIZE;
	if (nfds) {
		if ((k = client__send_fds(c, frame, len, fds, nfds)) < 0) {
			free(frame);
			return (int)k;
		}
		sent = (size_t)k;
	}
	rc = client__write_all(c, frame + sent, len - sent);
	free(frame);
	return rc;
}

/* Reads more bytes into rbuf, waiting until deadline. */
static int client__fill(omni_client *c, int64_t deadline)
{
	struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
	ssize_t k;
	int n;

	/* Doubling: proto_frame_parse has judged the frame's length (<=
	 * PROTO_MAX_FRAME) before we are asked for more of it. */
	if (c->rcap - c->rlen < 4096) {
		size_t cap = c->rcap ? c->rcap : CLIENT__RBUF_MIN;
		char *nb;

		while (cap - c->rlen < 4096)
			cap *= 2;
		if (!(nb = realloc(c->rbuf, cap)))
			return -ENOMEM;
		c->rbuf = nb;
		c->rcap = cap;
	}
	for (;;) {
		n = poll(&pfd, 1, client__left_ms(deadline));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return client__fail(c, -errno);
		}
		if (n == 0)
			return -ETIMEDOUT;
		k = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
		if (k < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
				continue;
			return client__fail(c, errno == EPIPE ? -ECONNRESET : -errno);
		}
		if (k == 0)   /* the daemon went away, between frames or inside one */
			return client__fail(c, -ECONNRESET);
		c->rlen += (size_t)k;
		return 0;
	}
}

/* Reads the next reply off the socket (not the queue). */
static int client__read_reply(omni_client *c, int64_t deadline, omni_reply **out)
{
	const char *payload = NULL;
	size_t plen = 0;
	long n;
	int rc;

	if (c->err)
		return c->err;
	for (;;) {
		n = proto_frame_parse(c->rbuf, c->rlen, &payload, &plen);
		if (n < 0)
			return client__fail(c, (int)n);
		if (n > 0)
			break;
		if ((rc = client__fill(c, deadline)) < 0)
			return rc;
	}
	rc = client__reply_parse(payload, plen, out);
	memmove(c->rbuf, c->rbuf + n, c->rlen - (size_t)n);
	c->rlen -= (size_t)n;
	if (c->rcap > 4 * CLIENT__RBUF_MIN && c->rlen < CLIENT__RBUF_MIN) {
		/* give back what one big reply needed */
		char *nb = realloc(c->rbuf, CLIENT__RBUF_MIN);

		if (nb) {
			c->rbuf = nb;
			c->rcap = CLIENT__RBUF_MIN;
		}
	}
	return rc < 0 && rc != -ENOMEM ? client__fail(c, rc) : rc;
}

/* Waits for the reply to id; others read meanwhile are queued. */
static int client__wait_id(omni_client *c, uint64_t id, int64_t deadline, omni_reply **out)
{
	omni_reply *r;
	int rc;

	for (;;) {
		if ((rc = client__read_reply(c, deadline, &r)) < 0)
			return rc;
		if (r->id == id) {
			*out = r;
			return 0;
		}
		client__queue_push(c, r);
	}
}

/* Adds v, id and op to msg (borrowed) and sends it, with nfds descriptors. */
static int client__send_op(omni_client *c, cJSON *msg, const char *op, const int *fds,
			   size_t nfds, uint64_t *id_out)
{
	char idtext[24];
	uint64_t id;
	int rc;

	if (c->err)
		return c->err;
	if (c->next_id > CLIENT__MAX_ID)
		return -EOVERFLOW;
	id = c->next_id;
	snprintf(idtext, sizeof idtext, "%llu", (unsigned long long)id);
	cJSON_DeleteItemFromObjectCaseSensitive(msg, "v");
	cJSON_DeleteItemFromObjectCaseSensitive(msg, "id");
	cJSON_DeleteItemFromObjectCaseSensitive(msg, "op");
	if (!cJSON_AddNumberToObject(msg, "v", PROTO_VERSION) ||
	    !cJSON_AddRawToObject(msg, "id", idtext) ||
	    !cJSON_AddStringToObject(msg, "op", op))
		return -ENOMEM;
	if ((rc = client__send_msg(c, msg, fds, nfds)) < 0)
		return rc;
	c->next_id++;
	if (id_out)
		*id_out = id;
	return 0;
}

static int client__call(omni_client *c, const char *op, const char *args_json,
			int64_t deadline, omni_reply **out)
{
	uint64_t id;
	int rc;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if ((rc = omni_send(c, op, args_json, &id)) < 0)
		return rc;
	return client__wait_id(c, id, deadline, out);
}

/* ---- connecting and starting the daemon ------------------------------- */

static int client__in_worker(void)
{
	const char *v = getenv("OMNIPKG_DAEMON_CHILD");

	return v && strcmp(v, "1") == 0;
}

#define CLIENT__FIX "; remove it, or choose a directory of your own with $OMNIPKG_RUNTIME_DIR"

/* The directory part of a socket path, without trailing slashes (one of
 * which would make lstat follow a symlink). */
static int client__dirname(const char *sock, char *dir, size_t n)
{
	const char *slash = strrchr(sock, '/');
	size_t len;

	if (!slash)
		return snprintf(dir, n, ".") < (int)n ? 0 : -ENAMETOOLONG;
	len = (size_t)(slash - sock);
	while (len > 0 && sock[len - 1] == '/')
		len--;
	if (len == 0)
		len = 1;   /* the root */
	if (len >= n)
		return -ENAMETOOLONG;
	memcpy(dir, sock, len);
	dir[len] = '\0';
	return 0;
}

/* Whether the directory of sock is the caller's alone: 0; -ECONNREFUSED
 * when it does not exist (nothing can be listening); -EPERM, with why in
 * err, when someone else could have placed or replaced the socket. */
static int client__trust_dir(const char *sock, char *err, size_t errlen)
{
	uid_t me = geteuid();
	char dir[PATH_MAX];
	struct stat st;
	int rc;

	if ((rc = client__dirname(sock, dir, sizeof dir)) < 0)
		return rc;
	if (lstat(dir, &st) < 0)
		return errno == ENOENT ? -ECONNREFUSED : -errno;
	if (S_ISLNK(st.st_mode)) {
		client__errf(err, errlen, "refusing the socket %s: its directory %s is a symlink "
			     "(owned by uid %lu)" CLIENT__FIX, sock, dir, (unsigned long)st.st_uid);
		return -EPERM;
	}
	if (!S_ISDIR(st.st_mode) || st.st_uid != me || (st.st_mode & 077)) {
		client__errf(err, errlen, "refusing the socket %s: its directory %s is %s owned by "
			     "uid %lu with mode %04o, not a directory of uid %lu with mode 0700"
			     CLIENT__FIX, sock, dir, S_ISDIR(st.st_mode) ? "a directory" : "a file",
			     (unsigned long)st.st_uid, (unsigned)(st.st_mode & 07777),
			     (unsigned long)me);
		return -EPERM;
	}
	return 0;
}

/* The socket file itself, in a directory already trusted. */
static int client__trust_sock(const char *sock, char *err, size_t errlen)
{
	uid_t me = geteuid();
	struct stat st;

	if (lstat(sock, &st) < 0)
		return errno == ENOENT ? -ECONNREFUSED : -errno;
	if (!S_ISSOCK(st.st_mode) || st.st_uid != me) {
		client__errf(err, errlen, "refusing %s: it is %s owned by uid %lu, not a socket of "
			     "uid %lu" CLIENT__FIX, sock, S_ISSOCK(st.st_mode) ? "a socket" : "a file",
			     (unsigned long)st.st_uid, (unsigned long)me);
		return -EPERM;
	}
	return 0;
}

/* The process that accepted fd runs as the caller. */
static int client__trust_peer(int fd, const char *sock, char *err, size_t errlen)
{
	struct ucred cred;
	socklen_t len = sizeof cred;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -errno;
	if (cred.uid != geteuid()) {
		client__errf(err, errlen, "refusing %s: the process listening there (pid %ld) runs "
			     "as uid %lu, not as uid %lu; stop it, or choose a directory of your own "
			     "with $OMNIPKG_RUNTIME_DIR", sock, (long)cred.pid,
			     (unsigned long)cred.uid, (unsigned long)geteuid());
		return -EPERM;
	}
	return 0;
}

/* Connects to path once it is trusted (see omni_connect); nothing is sent.
 * A missing directory or socket file and a dead socket all give
 * -ECONNREFUSED. */
static int client__dial(const char *path, int *fd_out, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, rc;

	if (strlen(path) >= sizeof sa.sun_path)
		return -ENAMETOOLONG;
	if ((rc = client__trust_dir(path, err, errlen)) < 0 ||
	    (rc = client__trust_sock(path, err, errlen)) < 0)
		return rc;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		rc = -errno;
		close(fd);
		return rc == -ENOENT ? -ECONNREFUSED : rc;
	}
	if ((rc = client__trust_peer(fd, path, err, errlen)) < 0) {
		close(fd);
		return rc;
	}
	*fd_out = fd;
	return 0;
}

static int client__executable(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

static int client__join(char *buf, size_t n, const char *dir, size_t dlen, const char *name)
{
	int k = snprintf(buf, n, "%.*s/%s", (int)dlen, dir, name);

	return k >= 0 && (size_t)k < n;
}

/* The daemon binary; see omni_daemon_start in omnipkg.h for the order. */
static int client__find_daemon(char *buf, size_t n)
{
	const char *env = getenv("OMNIPKGD");
	char self[PATH_MAX];
	ssize_t k;

	if (env && *env) {
		if (strlen(env) >= n)
			return -ENAMETOOLONG;
		memcpy(buf, env, strlen(env) + 1);
		return 0;
	}
	k = readlink("/proc/self/exe", self, sizeof self - 1);
	if (k > 0) {
		char *slash;

		self[k] = '\0';
		if ((slash = strrchr(self, '/')) &&
		    client__join(buf, n, self, (size_t)(slash - self), "omnipkgd") &&
		    client__executable(buf))
			return 0;
	}
#ifdef OMNI_BUILD_BINDIR
	if (client__join(buf, n, OMNI_BUILD_BINDIR, strlen(OMNI_BUILD_BINDIR), "omnipkgd") &&
	    client__executable(buf))
		return 0;
#endif
#ifdef OMNI_BINDIR
	if (client__join(buf, n, OMNI_BINDIR, strlen(OMNI_BINDIR), "omnipkgd") &&
	    client__executable(buf))
		return 0;
#endif
	for (const char *p = getenv("PATH"); p && *p;) {
		const char *e = strchr(p, ':');
		size_t len = e ? (size_t)(e - p) : strlen(p);

		if (len && client__join(buf, n, p, len, "omnipkgd") && client__executable(buf))
			return 0;
		p = e ? e + 1 : NULL;
	}
	return -ENOENT;
}

/* Runs `bin --daemon` and waits, bounded, for it to exit. */
static int client__run_daemon(const char *bin, char *err, size_t errlen)
{
	char *argv[] = { (char *)bin, "--daemon", NULL };
	int64_t deadline = client__now_ms() + CLIENT__START_MS;
	int devnull, status = 0, rc = 0;
	sigset_t none;
	pid_t pid, w;

	sigemptyset(&none);
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	pid = fork();
	if (pid == 0) {
		/* the daemon's own errors still reach stderr */
		if (devnull >= 0) {
			dup2(devnull, STDIN_FILENO);
			dup2(devnull, STDOUT_FILENO);
		}
		sigprocmask(SIG_SETMASK, &none, NULL);
		execve(bin, argv, environ);
		_exit(127);
	}
	if (devnull >= 0)
		close(devnull);
	if (pid < 0) {
		rc = -errno;
		client__seterr(err, errlen, "cannot fork to start %s", bin);
		return rc;
	}
	while ((w = waitpid(pid, &status, WNOHANG)) == 0 || (w < 0 && errno == EINTR)) {
		if (client__now_ms() >= deadline) {
			kill(pid, SIGTERM);
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			client__seterr(err, errlen, "%s --daemon did not get ready in time", bin);
			return -ETIMEDOUT;
		}
		client__sleep_ms(10);
	}
	if (w < 0)   /* SIGCHLD ignored by the caller: the status is lost */
		return 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
		client__seterr(err, errlen, "cannot execute %s", bin);
	else if (WIFEXITED(status))
		client__seterr(err, errlen, "%s --daemon failed (see its messages above)", bin);
	else
		client__seterr(err, errlen, "%s --daemon was killed by a signal", bin);
	return -EIO;
}

/* Starts the daemon for socket_path (NULL: default) and hands back the
 * first connection to it in *fd_out (caller closes). */
static int client__start(const char *socket_path, char *err, size_t errlen, int *fd_out)
{
	char bin[PATH_MAX], def[PATH_MAX];
	int64_t deadline;
	int rc;

	client__seterr(err, errlen, "%s", "");
	if (client__in_worker()) {
		client__seterr(err, errlen, "%s", "not starting omnipkgd from inside a worker");
		return -EPERM;
	}
	if ((rc = omni_default_socket(def, sizeof def)) < 0) {
		client__seterr(err, errlen, "%s", "cannot work out the default socket path");
		return rc;
	}
	/* the daemon listens where paths.h says, nowhere else */
	if (socket_path && strcmp(socket_path, def) != 0) {
		client__seterr(err, errlen, "omnipkgd listens on %s only (choose its directory "
			       "with $OMNIPKG_RUNTIME_DIR)", def);
		return -EINVAL;
	}
	socket_path = def;
	/* never start a daemon into, or dial through, a directory not ours */
	if ((rc = client__trust_dir(socket_path, err, errlen)) < 0 && rc != -ECONNREFUSED)
		return rc;
	if ((rc = client__find_daemon(bin, sizeof bin)) < 0) {
		client__seterr(err, errlen, "%s",
			       "omnipkgd not found: set $OMNIPKGD or put omnipkgd on PATH");
		return rc;
	}
	rc = client__run_daemon(bin, err, errlen);
	/* a daemon started beside ours at the same moment also counts */
	deadline = client__now_ms() + CLIENT__REDIAL_MS;
	for (;;) {
		int d = client__dial(socket_path, fd_out, err, errlen);

		if (d == 0) {
			client__seterr(err, errlen, "%s", "");
			return 0;
		}
		if (d == -EPERM)
			return d;
		if (rc < 0)
			return rc;
		if (client__now_ms() >= deadline) {
			client__seterr(err, errlen, "%s --daemon succeeded but its socket does not answer",
				       bin);
			return d;
		}
		client__sleep_ms(20);
	}
}

int omni_daemon_start(const char *socket_path, char *err, size_t errlen)
{
	int fd = -1, rc = client__start(socket_path, err, errlen, &fd);

	if (rc == 0)
		close(fd);
	return rc;
}

static int client__hello(omni_client *c)
{
	omni_reply *r = NULL;
	cJSON *proto;
	int rc;

	rc = client__call(c, "hello", NULL, client__now_ms() + CLIENT__HELLO_MS, &r);
	if (rc < 0)
		return rc;
	proto = cJSON_GetObjectItemCaseSensitive(r->obj, "proto");
	if (omni_reply_ok(r) && cJSON_IsNumber(proto) && proto->valuedouble == PROTO_VERSION)
		rc = 0;
	else if (!omni_reply_ok(r) && omni_reply_num(r, "errno") > 0 &&
		 omni_reply_num(r, "errno") != EPROTONOSUPPORT)
		rc = -(int)omni_reply_num(r, "errno");
	else
		rc = -EPROTONOSUPPORT;
	omni_reply_free(r);
	return rc;
}

int omni_default_socket(char *buf, size_t n)
{
	if (!buf || !n)
		return -EINVAL;
	return paths_socket(buf, n);
}

int omni_connect_err(omni_client **out, const char *socket_path, int flags,
		     char *err, size_t errlen)
{
	char def[PATH_MAX];
	omni_client *c;
	int fd = -1, rc;

	client__seterr(err, errlen, "%s", "");
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!socket_path) {
		if ((rc = omni_default_socket(def, sizeof def)) < 0)
			return rc;
		socket_path = def;
	}
	rc = client__dial(socket_path, &fd, err, errlen);
	if (rc == -ECONNREFUSED && (flags & OMNI_CONNECT_AUTOSTART) && !client__in_worker()) {
		rc = client__start(socket_path, err, errlen, &fd);
		if (rc == -EPERM)
			return rc;
		/* why the start failed is for `omnipkg daemon start` to tell */
		if (rc < 0) {
			client__seterr(err, errlen, "%s", "");
			return -ECONNREFUSED;
		}
	}
	if (rc < 0)
		return rc;
	if (!(c = calloc(1, sizeof *c))) {
		close(fd);
		return -ENOMEM;
	}
	c->fd = fd;
	c->next_id = 1;
	if ((rc = client__hello(c)) < 0) {
		omni_close(c);
		return rc;
	}
	*out = c;
	return 0;
}

int omni_connect(omni_client **out, const char *socket_path, int flags)
{
	return omni_connect_err(out, socket_path, flags, NULL, 0);
}

/* Tests of the id range start near its end; not part of omnipkg.h. */
void client_next_id_set(omni_client *c, uint64_t id);
void client_next_id_set(omni_client *c, uint64_t id)
{
	c->next_id = id;
}

void omni_close(omni_client *c)
{
	omni_reply *r;

	if (!c)
		return;
	while ((r = client__queue_pop(c)))
		client__reply_destroy(r);
	if (c->fd >= 0)
		close(c->fd);
	free(c->rbuf);
	free(c);
}

int omni_fd(const omni_client *c)
{
	return c ? c->fd : -EINVAL;
}

/* ---- requests --------------------------------------------------------- */

int omni_send(omni_client *c, const char *op, const char *args_json, uint64_t *id_out)
{
	cJSON *msg;
	int rc;

	if (!c || !op || !*op || strlen(op) > CLIENT__OP_MAX)
		return -EINVAL;
	if (args_json) {
		msg = cJSON_Parse(args_json);
		if (!msg)
			return -EINVAL;
		if (!cJSON_IsObject(msg)) {
			cJSON_Delete(msg);
			return -EINVAL;
		}
	} else if (!(msg = cJSON_CreateObject())) {
		return -ENOMEM;
	}
	rc = client__send_op(c, msg, op, NULL, 0, id_out);
	cJSON_Delete(msg);
	return rc;
}

int omni_exec_send(omni_client *c, const omni_exec_opts *o, uint64_t *id_out)
{
	cJSON *msg;
	int rc = -ENOMEM;

	if (!c || !o || !o->spec || !o->code)
		return -EINVAL;
	if (!(msg = cJSON_CreateObject()))
		return -ENOMEM;
	if (!cJSON_AddStringToObject(msg, "spec", o->spec) ||
	    !cJSON_AddStringToObject(msg, "code", o->code))
		goto out;
	if (o->python && *o->python && !cJSON_AddStringToObject(msg, "python", o->python))
		goto out;
	if (o->timeout > 0 && !cJSON_AddNumberToObject(msg, "timeout", o->timeout))
		goto out;
	if (o->tag && *o->tag && !cJSON_AddStringToObject(msg, "tag", o->tag))
		goto out;
	if (o->once && !cJSON_AddTrueToObject(msg, "once"))
		goto out;
	if (o->pin && !cJSON_AddTrueToObject(msg, "pin"))
		goto out;
	if (o->max_memory_mb > 0 && !cJSON_AddNumberToObject(msg, "max_memory_mb", o->max_memory_mb))
		goto out;
	if ((o->narrays || o->bind_json) && (rc = client_shm_exec_args(msg, o)) < 0)
		goto out;
	if (o->nfds && (rc = client_fds_exec_args(msg, o)) < 0)
		goto out;
	rc = client__send_op(c, msg, "exec", o->fds, o->nfds, id_out);
out:
	cJSON_Delete(msg);
	return rc;
}

int omni_exec(omni_client *c, const omni_exec_opts *o, omni_reply **out)
{
	uint64_t id;
	int rc;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if ((rc = omni_exec_send(c, o, &id)) < 0)
		return rc;
	return client__wait_id(c, id, -1, out);
}

int omni_recv(omni_client *c, omni_reply **out, int timeout_ms)
{
	if (!c || !out)
		return -EINVAL;
	*out = client__queue_pop(c);
	if (*out)
		return 0;
	return client__read_reply(c, timeout_ms < 0 ? -1 : client__now_ms() + timeout_ms, out);
}

int omni_call(omni_client *c, const char *op, const char *args_json, omni_reply **out)
{
	return client__call(c, op, args_json, -1, out);
}

int omni_status(omni_client *c, omni_reply **out)
{
	return omni_call(c, "status", NULL, out);
}

int client_call_msg(omni_client *c, cJSON *msg, const char *op, omni_reply **out)
{
	uint64_t id;
	int rc;

	*out = NULL;
	if ((rc = client__send_op(c, msg, op, NULL, 0, &id)) < 0)
		return rc;
	return client__wait_id(c, id, -1, out);
}

const cJSON *client_reply_obj(const omni_reply *r)
{
	return r ? r->obj : NULL;
}

/* ---- reply accessors -------------------------------------------------- */

uint64_t omni_reply_id(const omni_reply *r)
{
	return r ? r->id : 0;
}

int omni_reply_ok(const omni_reply *r)
{
	return r && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r->obj, "ok"));
}

const char *omni_reply_str(const omni_reply *r, const char *key)
{
	const cJSON *v;

	if (!r || !key)
		return "";
	v = cJSON_GetObjectItemCaseSensitive(r->obj, key);
	return cJSON_IsString(v) && v->valuestring ? v->valuestring : "";
}

double omni_reply_num(const omni_reply *r, const char *key)
{
	const cJSON *v;

	if (!r || !key)
		return 0;
	v = cJSON_GetObjectItemCaseSensitive(r->obj, key);
	if (cJSON_IsNumber(v))
		return v->valuedouble;
	return cJSON_IsTrue(v) ? 1 : 0;
}

const char *omni_reply_json(const omni_reply *r)
{
	omni_reply *m = (omni_reply *)r;   /* the cache is not part of the value */

	char idtext[24];
	cJSON *raw, *num;

	if (!r)
		return "";
	if (m->json)
		return m->json;
	/* the id printed exactly, in its place; then a number again */
	snprintf(idtext, sizeof idtext, "%llu", (unsigned long long)m->id);
	if (!(raw = cJSON_CreateRaw(idtext)))
		return "";
	if (!cJSON_ReplaceItemInObjectCaseSensitive(m->obj, "id", raw)) {
		cJSON_Delete(raw);
		return "";
	}
	m->json = cJSON_PrintUnformatted(m->obj);
	if ((num = cJSON_CreateNumber((double)m->id)))
		cJSON_ReplaceItemInObjectCaseSensitive(m->obj, "id", num);
	return m->json ? m->json : "";
}

void omni_reply_free(omni_reply *r)
{
	client__reply_destroy(r);
}

/* ---- install, errors, version ----------------------------------------- */

int omni_install(const char *spec, const char *python, int quiet, char *err, size_t errlen)
{
	char local[512], home[PATH_MAX];
	struct interp_set set = { 0 };
	struct config *cfg = NULL;
	struct spec *s = NULL;
	struct interp py;
	int rc;

	if (!err || !errlen) {
		err = local;
		errlen = sizeof local;
	}
	err[0] = '\0';
	if (!spec) {
		client__seterr(err, errlen, "%s", "no spec given");
		return -EINVAL;
	}
	/* both are large (config: PATH_MAX per interpreter and prewarm entry) */
	cfg = calloc(1, sizeof *cfg);
	s = calloc(1, sizeof *s);
	if (!cfg || !s) {
		rc = -ENOMEM;
		client__seterr(err, errlen, "%s", "out of memory");
		goto out;
	}
	if ((rc = spec_parse(spec, strlen(spec), s, err, errlen)) < 0)
		goto out;
	config_defaults(cfg);
	if ((rc = config_load(cfg, NULL, err, errlen)) < 0)
		goto out;
	if ((rc = config_discover_pythons(cfg, &set)) < 0) {
		client__seterr(err, errlen, "cannot discover Python interpreters: %s",
			       strerror(-rc));
		goto out;
	}
	if ((rc = interp_resolve(&set, python, &py, err, errlen)) < 0)
		goto out;
	if ((rc = paths_home(home, sizeof home)) < 0) {
		client__seterr(err, errlen, "cannot work out the omnipkg home: %s", strerror(-rc));
		goto out;
	}
	rc = bubble_install(home, &py, s, quiet, err, errlen);
out:
	interp_set_free(&set);
	free(s);
	free(cfg);
	return rc;
}

const char *omni_strerror(int err)
{
	switch (err) {
	case 0:
		return "success";
	case -EPROTONOSUPPORT:
		return "daemon speaks another protocol version";
	case -ECONNREFUSED:
		return "omnipkgd is not running (start it with `omnipkg daemon start`)";
	case -ECONNRESET:
		return "omnipkgd closed the connection";
	case -EMSGSIZE:
		return "message over the protocol's frame size limit (16 MiB)";
	case -EBADMSG:
		return "malformed message on the omnipkgd socket";
	case -ETIMEDOUT:
		return "timed out";
	case -EPERM:
		return "refusing the omnipkgd socket: it, its directory or the daemon behind it "
		       "is not the caller's own";
	case -EOVERFLOW:
		return "request ids of this connection are used up (2^53)";
	case -EDQUOT:
		return "over the shared-memory quota";
	case -EBUSY:
		return "a job is using that shared segment";
	}
	return strerror(err < 0 ? -err : err);
}

const char *omni_version(void)
{
	return OMNI_VERSION;
}
