/*
 * server.c - client connections on the daemon's Unix socket.
 *
 * A connection may have many requests in flight; each reply carries the
 * request's id and is written as soon as its job is done, in completion
 * order.  A connection that goes away while jobs run is kept (closed)
 * until the last of them reports, so a late reply never touches freed
 * memory and the job itself is not disturbed.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include "bubble.h"
#include "chan.h"
#include "logx.h"
#include "omnipkg.h"
#include "proto.h"
#include "server.h"

#define CONN_WBUF_HIGH (64u << 20)   /* stop reading a client that does not read its replies */

struct conn {
	struct server *srv;
	int fd;
	struct chan ch;
	int inflight;
	int closed;
	int reading;              /* EPOLLIN wanted */
	pid_t pid;
	struct conn *next;
};

struct server {
	struct server_ctx ctx;
	int lfd;
	struct conn *conns;
	int nconns;
	double t_start;
};

struct pending {
	struct conn *c;
	uint64_t id;
};

static void conn_close(struct conn *c);

static void conn_update_events(struct conn *c)
{
	uint32_t ev = 0;

	c->reading = chan_pending(&c->ch) < CONN_WBUF_HIGH;
	if (c->reading)
		ev |= EPOLLIN;
	if (chan_pending(&c->ch))
		ev |= EPOLLOUT;
	loop_mod(c->srv->ctx.loop, c->fd, ev);
}

/* Sends reply (taken) as the answer to id. */
static void conn_reply(struct conn *c, uint64_t id, cJSON *reply)
{
	int r;

	if (c->closed) {
		cJSON_Delete(reply);
		return;
	}
	cJSON_DeleteItemFromObjectCaseSensitive(reply, "v");
	cJSON_DeleteItemFromObjectCaseSensitive(reply, "id");
	cJSON_AddNumberToObject(reply, "v", PROTO_VERSION);
	r = proto_set_id(reply, id);
	if (r == 0)
		r = chan_send(&c->ch, reply);
	cJSON_Delete(reply);
	if (r < 0) {
		conn_close(c);
		return;
	}
	conn_update_events(c);
}

/* A failed reply to id with a reason of OMNI_REASONS (omnipkg.h). */
#define conn_error(c, id, err, reason, ...) \
	conn_reply(c, id, proto_reply_error(err, omni_reason_name(OMNI_REASON_##reason), __VA_ARGS__))

static void conn_unref(struct conn *c)
{
	if (--c->inflight == 0 && c->closed)
		free(c);
}

static void job_done(cJSON *reply, void *ud)
{
	struct pending *pd = ud;
	struct conn *c = pd->c;

	conn_reply(c, pd->id, reply);
	free(pd);
	conn_unref(c);
}

/* proto_decode has checked the keys and their types; the values are
 * judged here. */
static const char *arg_str(const cJSON *req, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(req, key);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void op_exec(struct conn *c, uint64_t id, const cJSON *req)
{
	struct pool_req r = { 0 };
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(req, "timeout");
	struct pending *pd;

	r.spec = arg_str(req, "spec");
	r.code = arg_str(req, "code");
	r.python = arg_str(req, "python");
	r.tag = arg_str(req, "tag");
	r.once = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(req, "once"));
	if (cJSON_IsNumber(t)) {
		if (!(t->valuedouble > 0 && t->valuedouble <= 7 * 86400))
			return conn_error(c, id, EINVAL, BADARG, "exec: \"timeout\" must be seconds in (0, 604800]");
		r.timeout = t->valuedouble;
	}
	pd = malloc(sizeof *pd);
	if (!pd)
		return conn_error(c, id, ENOMEM, NOMEM, "out of memory");
	pd->c = c;
	pd->id = id;
	c->inflight++;
	pool_submit(c->srv->ctx.pool, &r, job_done, pd);
}

static cJSON *ok_reply(void)
{
	cJSON *r = cJSON_CreateObject();

	cJSON_AddBoolToObject(r, "ok", 1);
	return r;
}

static void op_hello(struct conn *c, uint64_t id)
{
	cJSON *r = ok_reply();

	cJSON_AddStringToObject(r, "daemon", "omnipkgd");
	cJSON_AddStringToObject(r, "version", OMNI_VERSION);
	cJSON_AddNumberToObject(r, "proto", PROTO_VERSION);
	cJSON_AddNumberToObject(r, "pid", getpid());
	cJSON_AddItemToObject(r, "features", proto_features());
	conn_reply(c, id, r);
}

static void op_status(struct conn *c, uint64_t id)
{
	struct server *s = c->srv;
	cJSON *r = ok_reply();

	cJSON_AddNumberToObject(r, "pid", getpid());
	cJSON_AddStringToObject(r, "version", OMNI_VERSION);
	cJSON_AddNumberToObject(r, "proto", PROTO_VERSION);
	cJSON_AddNumberToObject(r, "uptime", loop_now() - s->t_start);
	cJSON_AddStringToObject(r, "socket", s->ctx.sock_path);
	cJSON_AddStringToObject(r, "home", s->ctx.home);
	cJSON_AddNumberToObject(r, "clients", s->nconns);
	pool_stats_json(s->ctx.pool, r);
	conn_reply(c, id, r);
}

static void op_workers(struct conn *c, uint64_t id)
{
	cJSON *r = ok_reply();

	cJSON_AddItemToObject(r, "workers", pool_workers_json(c->srv->ctx.pool));
	conn_reply(c, id, r);
}

static void op_pythons(struct conn *c, uint64_t id)
{
	static const char *src[] = { "config", "pyenv", "path", "explicit" };
	const struct interp_set *set = c->srv->ctx.py;
	cJSON *r = ok_reply(), *a = cJSON_AddArrayToObject(r, "pythons");

	for (size_t i = 0; i < set->n; i++) {
		const struct interp *it = &set->v[i];
		struct interp best;
		char name[16];
		cJSON *o = cJSON_CreateObject();

		snprintf(name, sizeof name, "%d.%d", it->major, it->minor);
		cJSON_AddStringToObject(o, "name", name);
		cJSON_AddStringToObject(o, "version", it->version);
		cJSON_AddStringToObject(o, "path", it->path);
		cJSON_AddStringToObject(o, "tag", it->tag);
		cJSON_AddStringToObject(o, "source", it->source >= 0 && it->source < 4 ? src[it->source] : "?");
		cJSON_AddBoolToObject(o, "default", (int)i == set->default_idx);
		/* Which entry the short name means, so the user sees the choice. */
		cJSON_AddBoolToObject(o, "short_name_target",
				      interp_resolve(set, name, &best, NULL, 0) == 0 &&
				      strcmp(best.path, it->path) == 0);
		cJSON_AddItemToArray(a, o);
	}
	conn_reply(c, id, r);
}

static int list_one(const char *tag, const char *name, const char *version, const char *path, void *ud)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "tag", tag);
	cJSON_AddStringToObject(o, "name", name);
	cJSON_AddStringToObject(o, "version", version);
	cJSON_AddStringToObject(o, "path", path);
	cJSON_AddItemToArray(ud, o);
	return 0;
}

static void op_list(struct conn *c, uint64_t id)
{
	cJSON *r = ok_reply(), *a = cJSON_AddArrayToObject(r, "bubbles");

	bubble_list(c->srv->ctx.home, list_one, a);
	conn_reply(c, id, r);
}

static void op_shutdown(struct conn *c, uint64_t id)
{
	struct server *s = c->srv;

	logx(LOGX_INFO, "shutdown requested by a client (pid %d)", (int)c->pid);
	conn_reply(c, id, ok_reply());
	if (s->ctx.on_shutdown)
		s->ctx.on_shutdown(s->ctx.ud);
}

static void conn_request(struct conn *c, const char *pl, size_t len)
{
	char err[256];
	cJSON *req = NULL;
	uint64_t id = 0;
	int op = proto_decode(pl, len, &req, &id, err, sizeof err);

	if (op < 0) {
		conn_reply(c, id, proto_reply_error(-op, omni_reason_name(proto_reason(op)), "%s", err));
		return;
	}
	switch (op) {
	case PROTO_OP_HELLO: op_hello(c, id); break;
	case PROTO_OP_EXEC: op_exec(c, id, req); break;
	case PROTO_OP_STATUS: op_status(c, id); break;
	case PROTO_OP_WORKERS: op_workers(c, id); break;
	case PROTO_OP_PYTHONS: op_pythons(c, id); break;
	case PROTO_OP_LIST: op_list(c, id); break;
	case PROTO_OP_SHUTDOWN: op_shutdown(c, id); break;
	default: conn_error(c, id, EOPNOTSUPP, PROTO, "unknown op"); break;
	}
	cJSON_Delete(req);
}

static void conn_close(struct conn *c)
{
	struct server *s = c->srv;
	struct conn **pp;

	if (c->closed)
		return;
	c->closed = 1;
	loop_del(s->ctx.loop, c->fd);
	close(c->fd);
	chan_free(&c->ch);
	for (pp = &s->conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	s->nconns--;
	if (c->inflight == 0)
		free(c);
}

static void conn_io(struct loop *l, int fd, uint32_t ev, void *ud)
{
	struct conn *c = ud;
	const char *pl;
	size_t len;
	long n = 0;
	int r = 0;

	if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
		if (chan_flush(&c->ch) < 0) {
			conn_close(c);
			return;
		}
		conn_update_events(c);
	}
	if (!(ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) || !c->reading)
		return;
	r = chan_fill(&c->ch);
	/* A reply may close the connection (write error): re-check each turn. */
	while (!c->closed && c->reading && (n = chan_frame(&c->ch, &pl, &len)) > 0) {
		c->inflight++;       /* keep c alive across the request */
		conn_request(c, pl, len);
		if (!c->closed)
			chan_drop(&c->ch, n);
		if (--c->inflight == 0 && c->closed) {
			free(c);
			return;
		}
	}
	if (c->closed)
		return;
	if (n < 0) {
		conn_reply(c, 0, proto_reply_error(-n, omni_reason_name(proto_reason(n)),
						   "bad frame: %s; closing the connection",
						   n == -EMSGSIZE ? "larger than the protocol allows" : "empty"));
		chan_flush(&c->ch);
		conn_close(c);
		return;
	}
	if (r < 0)
		conn_close(c);
}

static void server_accept(struct loop *l, int fd, uint32_t ev, void *ud)
{
	struct server *s = ud;

	for (;;) {
		struct ucred cred;
		socklen_t cl = sizeof cred;
		struct conn *c;
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (cfd < 0)
			return;   /* EAGAIN, or a transient error: try on the next event */
		if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0 || cred.uid != getuid()) {
			logx(LOGX_WARN, "refused a client of uid %d", cl ? (int)cred.uid : -1);
			close(cfd);
			continue;
		}
		c = calloc(1, sizeof *c);
		if (!c) {
			close(cfd);
			continue;
		}
		c->srv = s;
		c->fd = cfd;
		c->pid = cred.pid;
		c->reading = 1;
		chan_init(&c->ch, cfd, PROTO_MAX_FRAME);
		if (loop_add(l, cfd, EPOLLIN, conn_io, c) < 0) {
			close(cfd);
			free(c);
			continue;
		}
		c->next = s->conns;
		s->conns = c;
		s->nconns++;
	}
}

struct server *server_new(const struct server_ctx *ctx, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct server *s;
	mode_t old;

	if (strlen(ctx->sock_path) >= sizeof sa.sun_path) {
		snprintf(err, errlen, "socket path too long: %s", ctx->sock_path);
		return NULL;
	}
	s = calloc(1, sizeof *s);
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->ctx = *ctx;
	s->t_start = loop_now();
	strcpy(sa.sun_path, ctx->sock_path);
	s->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	old = umask(077);
	if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
	    listen(s->lfd, 128) < 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", ctx->sock_path, strerror(errno));
		umask(old);
		if (s->lfd >= 0)
			close(s->lfd);
		free(s);
		return NULL;
	}
	umask(old);
	chmod(ctx->sock_path, 0600);
	loop_add(ctx->loop, s->lfd, EPOLLIN, server_accept, s);
	return s;
}

void server_stop_listening(struct server *s)
{
	if (s && s->lfd >= 0) {
		loop_del(s->ctx.loop, s->lfd);
		close(s->lfd);
		s->lfd = -1;
		unlink(s->ctx.sock_path);
	}
}

void server_drain(struct server *s, double seconds)
{
	double until = loop_now() + seconds;

	while (loop_now() < until) {
		struct pollfd pfd[256];
		int n = 0;

		for (struct conn *c = s->conns; c && n < 256; c = c->next)
			if (chan_pending(&c->ch) && chan_flush(&c->ch) == 1)
				pfd[n++] = (struct pollfd){ .fd = c->fd, .events = POLLOUT };
		if (n == 0)
			return;
		poll(pfd, n, 50);
	}
}

void server_free(struct server *s)
{
	if (!s)
		return;
	server_stop_listening(s);
	while (s->conns) {
		struct conn *c = s->conns;

		c->inflight = 0;   /* the pool is gone: nothing will report */
		conn_close(c);
	}
	free(s);
}

int server_clients(const struct server *s) { return s->nconns; }
