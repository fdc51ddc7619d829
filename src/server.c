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
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include "arrays.h"
#include "bubble.h"
#include "chan.h"
#include "logx.h"
#include "omnipkg.h"
#include "proto.h"
#include "server.h"

/*
 * Memory bounds.  A request is buffered whole before it is decoded and a
 * reply is queued whole, so buffers are what a hostile or stuck client can
 * grow; these keep the daemon's memory bounded whatever clients do.
 *
 * One connection's read buffer holds at most one frame (chan.c).  Beyond
 * that, SERVER_RBUF_MAX bounds the request bytes buffered by all of them:
 * over it, the connection holding the largest partial request is refused
 * ("toolarge") and closed.  Pausing reads instead could stall every sender
 * of a large request at once, none able to finish.
 *
 * A connection is not read while its unwritten replies exceed
 * CONN_WBUF_MAX or CONN_MAX_JOBS of its jobs run, so replies not yet made
 * are bounded too; while all connections' unwritten replies exceed
 * SERVER_WBUF_MAX, those holding more than an equal share are not read.
 * Unread requests wait in the socket, which pushes back on the sender.
 */
#define SERVER_RBUF_MAX (64u << 20)
#define CONN_WBUF_MAX (32u << 20)
#define CONN_MAX_JOBS 16
#define SERVER_WBUF_MAX (128u << 20)
#define SERVER_MAX_CLIENTS 1024       /* max_clients when the context leaves it 0 */
#define SERVER_LOG_EVERY 1.0          /* seconds between two "refused" log lines */

struct conn {
	struct server *srv;
	int fd;
	struct chan ch;
	int inflight;             /* references: jobs running, and a request being handled */
	int jobs;                 /* jobs running */
	int closed;
	int reading;              /* EPOLLIN wanted */
	size_t racct, wacct;      /* what this connection adds to rbuf_total, wbuf_total */
	struct loop_timer *resume;
	pid_t pid;
	struct pending *pend;     /* its running jobs, for cancel */
	uint64_t owner;           /* its segments' owner id in the registry */
	struct conn *next;
};

struct server {
	struct server_ctx ctx;
	int lfd;
	int inherited;            /* lfd is ctx->listen_fd: the path is not ours to unlink */
	int spare;                /* /dev/null, given up to shed a connection when out of fds */
	struct loop_timer *accept_timer;
	struct conn *conns;
	int nconns;
	size_t rbuf_total, wbuf_total;
	unsigned long refused;    /* since the last log line */
	uint64_t next_owner;
	double refused_logged;
};

struct pending {
	struct conn *c;
	uint64_t id;              /* the request's */
	uint64_t job;             /* the core's; 0 until core_submit returns */
	struct pending *next, *prev;
};

static void conn_close(struct conn *c);
static void conn_io(struct loop *l, int fd, uint32_t ev, void *ud);
static void conn_sync(struct conn *c);

static int conn_may_read(const struct conn *c)
{
	const struct server *s = c->srv;
	size_t w = chan_pending(&c->ch);

	if (w >= CONN_WBUF_MAX || c->jobs >= CONN_MAX_JOBS)
		return 0;
	return s->wbuf_total < SERVER_WBUF_MAX || w < SERVER_WBUF_MAX / (size_t)s->nconns;
}

static void server_wake(struct server *s)
{
	for (struct conn *c = s->conns; c; c = c->next)
		conn_sync(c);
}

/* Brings the daemon-wide totals up to date with this connection's buffers. */
static void conn_account(struct conn *c)
{
	struct server *s = c->srv;
	size_t r = c->closed ? 0 : c->ch.rlen, w = c->closed ? 0 : chan_pending(&c->ch);
	int was_over = s->wbuf_total >= SERVER_WBUF_MAX;

	s->rbuf_total = s->rbuf_total - c->racct + r;
	s->wbuf_total = s->wbuf_total - c->wacct + w;
	c->racct = r;
	c->wacct = w;
	/* Connections paused for the total wait for no event of their own. */
	if (was_over && s->wbuf_total < SERVER_WBUF_MAX)
		server_wake(s);
}

static void conn_resume(struct loop *l, void *ud)
{
	struct conn *c = ud;

	c->resume = NULL;
	conn_io(l, c->fd, EPOLLIN, c);
}

/* Settles accounts and the events wanted after any change to c. */
static void conn_sync(struct conn *c)
{
	uint32_t ev = 0;
	int was;

	if (c->closed)
		return;
	chan_trim(&c->ch);
	conn_account(c);
	was = c->reading;
	c->reading = conn_may_read(c);
	if (c->reading)
		ev |= EPOLLIN;
	if (chan_pending(&c->ch))
		ev |= EPOLLOUT;
	loop_mod(c->srv->ctx.loop, c->fd, ev);
	/* Requests read before a pause sit in the buffer, not the socket: no
	 * event would come for them. */
	if (c->reading && !was && c->ch.rlen && !c->resume)
		c->resume = loop_timer_add(c->srv->ctx.loop, 0, conn_resume, c);
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
	conn_sync(c);
}

/* A failed reply to id with a reason of OMNI_REASONS (omnipkg.h). */
#define conn_error(c, id, err, reason, ...) \
	conn_reply(c, id, proto_reply_error(err, OMNI_REASON_##reason, __VA_ARGS__))

static void conn_unref(struct conn *c)
{
	if (--c->inflight == 0 && c->closed)
		free(c);
}

static void job_done(cJSON *reply, void *ud)
{
	struct pending *pd = ud;
	struct conn *c = pd->c;

	c->jobs--;
	if (pd->prev)
		pd->prev->next = pd->next;
	else
		c->pend = pd->next;
	if (pd->next)
		pd->next->prev = pd->prev;
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

/* bind: an object of Python identifiers. */
static int bind_ok(const cJSON *b, char *err, size_t errlen)
{
	const cJSON *k;

	cJSON_ArrayForEach(k, b) {
		if (!arrays_ident_ok(k->string, 128)) {
			snprintf(err, errlen, "exec: bind: \"%.64s\" is not a Python identifier", k->string);
			return -EINVAL;
		}
	}
	return 0;
}

/*
 * "fds": one entry per descriptor that came with the request, in order,
 * {"for": the bind global it belongs to, "kind": "cuda", "dev": n,
 * "ino": n (the file as the client saw it)}.  Each descriptor must be that
 * file (fstat), and a kind of file a CUDA handle can be: a device, a
 * memory file, or an anonymous inode.  *out: [{for, kind}] for the
 * worker, the caller's to delete.
 */
static int fds_check(const cJSON *desc, const cJSON *bind, const int *fds, int nfds,
		     cJSON **out, char *err, size_t errlen)
{
	static const char *const keys[] = { "for", "kind", "dev", "ino" };
	int given = cJSON_IsArray(desc) ? cJSON_GetArraySize(desc) : 0;
	const cJSON *d;
	int i = 0;

	*out = NULL;
	if (given != nfds) {
		snprintf(err, errlen, "exec: the request names %d descriptor(s) in \"fds\" and "
			 "carries %d", given, nfds);
		return -EINVAL;
	}
	if (!nfds)
		return 0;
	*out = cJSON_CreateArray();
	cJSON_ArrayForEach(d, desc) {
		const cJSON *f = cJSON_GetObjectItemCaseSensitive(d, "for");
		const cJSON *kind = cJSON_GetObjectItemCaseSensitive(d, "kind");
		const cJSON *k;
		double v[2];
		struct stat st;
		unsigned t;
		cJSON *o;

		if (!cJSON_IsObject(d) || cJSON_GetArraySize(d) != 4)
			goto shape;
		for (int j = 0; j < 4; j++)
			if (!cJSON_GetObjectItemCaseSensitive(d, keys[j]))
				goto shape;
		for (int j = 0; j < 2; j++) {
			k = cJSON_GetObjectItemCaseSensitive(d, keys[2 + j]);
			if (!cJSON_IsNumber(k) || k->valuedouble < 0 ||
			    k->valuedouble > PROTO_MAX_ID || k->valuedouble != (double)(uint64_t)k->valuedouble)
				goto shape;
			v[j] = k->valuedouble;
		}
		if (!cJSON_IsString(kind) || strcmp(kind->valuestring, "cuda")) {
			snprintf(err, errlen, "exec: fds[%d]: kind must be \"cuda\"", i);
			goto fail;
		}
		if (!cJSON_IsString(f) || !cJSON_GetObjectItemCaseSensitive(bind, f->valuestring)) {
			snprintf(err, errlen, "exec: fds[%d]: \"for\" must name a global of \"bind\"", i);
			goto fail;
		}
		cJSON_ArrayForEach(o, *out)
			if (!strcmp(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "for")),
				    f->valuestring)) {
				snprintf(err, errlen, "exec: fds[%d]: a second descriptor for \"%.64s\"", i,
					 f->valuestring);
				goto fail;
			}
		if (fstat(fds[i], &st) < 0 || (double)st.st_dev != v[0] || (double)st.st_ino != v[1]) {
			snprintf(err, errlen, "exec: fds[%d] (for \"%.64s\") is not the file the request "
				 "describes (dev %.0f, ino %.0f)", i, f->valuestring, v[0], v[1]);
			goto fail;
		}
		t = st.st_mode & S_IFMT;
		if (t != S_IFREG && t != S_IFCHR && t != 0) {
			snprintf(err, errlen, "exec: fds[%d] (for \"%.64s\") is a %s, not a CUDA memory "
				 "handle", i, f->valuestring, t == S_IFSOCK ? "socket" : t == S_IFDIR ?
				 "directory" : t == S_IFIFO ? "pipe" : "block device");
			goto fail;
		}
		o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "for", f->valuestring);
		cJSON_AddStringToObject(o, "kind", "cuda");
		cJSON_AddItemToArray(*out, o);
		i++;
	}
	return 0;
shape:
	snprintf(err, errlen, "exec: fds[%d] must be {\"for\": name, \"kind\": \"cuda\", "
		 "\"dev\": integer, \"ino\": integer}", i);
fail:
	cJSON_Delete(*out);
	*out = NULL;
	return -EINVAL;
}

/* Hands r (and its descriptors) to the core; the reply goes to id when it
 * comes. */
static void conn_submit(struct conn *c, uint64_t id, struct job_req *r)
{
	struct pending *pd;
	uint64_t job;

	r->owner = c->owner;
	pd = malloc(sizeof *pd);
	if (!pd) {
		chan_close_fds(r->fds, r->nfds);
		return conn_error(c, id, ENOMEM, NOMEM, "out of memory");
	}
	*pd = (struct pending){ .c = c, .id = id, .next = c->pend };
	if (c->pend)
		c->pend->prev = pd;
	c->pend = pd;
	c->inflight++;
	c->jobs++;
	job = core_submit(c->srv->ctx.core, r, job_done, pd);
	/* The reply may have come already (pd is gone then). */
	for (pd = c->pend; pd; pd = pd->next)
		if (pd->id == id && pd->job == 0) {
			pd->job = job;
			break;
		}
}

/* Takes fds: the job gets them, or they are closed before the refusal
 * goes (so that no reply comes while the daemon still holds them). */
static void op_exec(struct conn *c, uint64_t id, const cJSON *req, int *fds, int nfds)
{
	static struct array_desc arrays[ARRAYS_MAX];   /* the loop is single-threaded */
	struct job_req r = { .kind = JOB_KIND_EXEC };
	const cJSON *b = cJSON_GetObjectItemCaseSensitive(req, "bind");
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(req, "timeout");
	const cJSON *mem = cJSON_GetObjectItemCaseSensitive(req, "max_memory_mb");
	cJSON *fdd = NULL;
	char err[512];
	int n;

	r.spec = arg_str(req, "spec");
	r.code = arg_str(req, "code");
	r.python = arg_str(req, "python");
	r.tag = arg_str(req, "tag");
	r.once = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(req, "once"));
	r.pin = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(req, "pin"));
	/* Numbers are in their ranges: proto_decode checked them. */
	if (cJSON_IsNumber(t))
		r.timeout = t->valuedouble;
	if (cJSON_IsNumber(mem))
		r.max_memory_mb = mem->valuedouble;
	n = arrays_parse(cJSON_GetObjectItemCaseSensitive(req, "arrays"), arrays, ARRAYS_MAX, err,
			 sizeof err);
	if (n < 0) {
		chan_close_fds(fds, nfds);
		return conn_error(c, id, EINVAL, BADARG, "exec: %s", err);
	}
	r.arrays = arrays;
	r.narrays = n;
	if (cJSON_IsObject(b)) {
		if (bind_ok(b, err, sizeof err) < 0) {
			chan_close_fds(fds, nfds);
			return conn_error(c, id, EINVAL, BADARG, "%s", err);
		}
		r.bind = b;
	}
	if (fds_check(cJSON_GetObjectItemCaseSensitive(req, "fds"), b, fds, nfds, &fdd, err,
		      sizeof err) < 0) {
		chan_close_fds(fds, nfds);
		return conn_error(c, id, EINVAL, BADARG, "%s", err);
	}
	r.fds = fds;
	r.nfds = nfds;
	r.fds_desc = fdd;
	conn_submit(c, id, &r);
	cJSON_Delete(fdd);
}

static void op_evict(struct conn *c, uint64_t id, const cJSON *req)
{
	struct job_req r = { .kind = JOB_KIND_EVICT, .spec = arg_str(req, "spec"),
			     .python = arg_str(req, "python"), .tag = arg_str(req, "tag") };

	conn_submit(c, id, &r);
}

static void op_idle_config(struct conn *c, uint64_t id, const cJSON *req)
{
	const cJSON *n = cJSON_GetObjectItemCaseSensitive(req, "count");
	struct job_req r = { .kind = JOB_KIND_IDLE, .python = arg_str(req, "python") };

	/* proto_decode made count an integer in range, given beside python. */
	if (!cJSON_IsNumber(n))
		return conn_reply(c, id, core_idle_config(c->srv->ctx.core));
	r.idle_count = (int)n->valuedouble;
	conn_submit(c, id, &r);
}

static cJSON *segment_json(const struct shm_info *g, const struct shm *shm, uint64_t me)
{
	cJSON *o = cJSON_CreateObject();
	char path[SHM_PATH_MAX];

	shm_path(shm, g->name, path, sizeof path);
	cJSON_AddStringToObject(o, "name", g->name);
	cJSON_AddNumberToObject(o, "id", (double)g->id);
	cJSON_AddNumberToObject(o, "gen", g->gen);
	cJSON_AddNumberToObject(o, "size", (double)g->size);
	cJSON_AddNumberToObject(o, "leases", g->leases);
	cJSON_AddBoolToObject(o, "persist", g->owner == 0);
	cJSON_AddBoolToObject(o, "mine", g->owner == me);
	cJSON_AddStringToObject(o, "path", path);
	if (g->dtype && *g->dtype)
		cJSON_AddStringToObject(o, "dtype", g->dtype);
	if (g->shape && *g->shape)
		cJSON_AddItemToObject(o, "shape", cJSON_Parse(g->shape));
	return o;
}

static void op_shm_create(struct conn *c, uint64_t id, const cJSON *req)
{
	struct shm *shm = core_shm(c->srv->ctx.core);
	const cJSON *size = cJSON_GetObjectItemCaseSensitive(req, "size");
	const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(req, "dtype");
	const cJSON *shape = cJSON_GetObjectItemCaseSensitive(req, "shape");
	const char *name = arg_str(req, "name");
	int persist = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(req, "persist"));
	struct shm_info g;
	char norm[8], *shape_text = NULL;
	size_t isz, al;
	cJSON *r;
	int rc;

	if (!(size->valuedouble >= 0 && size->valuedouble <= (double)((uint64_t)1 << 62)) ||
	    (double)(uint64_t)size->valuedouble != size->valuedouble)
		return conn_error(c, id, EINVAL, BADARG, "shm_create: \"size\" must be bytes from 0 to 2^62");
	if (name && !shm_name_ok(name))
		return conn_error(c, id, EINVAL, BADARG, "shm_create: \"name\" must be 1 to %d of "
				  "[A-Za-z0-9._-], not . or ..", SHM_NAME_MAX);
	if (cJSON_IsString(dtype) && arrays_dtype(dtype->valuestring, norm, &isz, &al) < 0)
		return conn_error(c, id, EINVAL, BADARG, "shm_create: unknown or unsupported \"dtype\"");
	if (cJSON_IsArray(shape)) {
		const cJSON *d;

		cJSON_ArrayForEach(d, shape)
			if (!cJSON_IsNumber(d) || d->valuedouble < 0)
				return conn_error(c, id, EINVAL, BADARG,
						  "shm_create: \"shape\" must hold sizes >= 0");
		shape_text = cJSON_PrintUnformatted(shape);
	}
	rc = shm_create_owned(shm, name, (off_t)size->valuedouble, persist ? 0 : c->owner, &g);
	if (rc < 0) {
		free(shape_text);
		if (rc == -EDQUOT || rc == -ENOSPC)
			return conn_error(c, id, -rc, QUOTA, "shm_create: %s (quota %zu bytes, %zu in use)",
					  rc == -ENOSPC ? "too many segments" : "over the shared memory quota",
					  shm_quota(shm), shm_usage(shm, NULL));
		return conn_error(c, id, -rc, BADARG, "shm_create: %s",
				  rc == -EEXIST ? "a segment of that name exists" : strerror(-rc));
	}
	shm_set_meta(shm, g.name, cJSON_IsString(dtype) ? norm : NULL, shape_text);
	free(shape_text);
	shm_stat(shm, g.name, &g);
	r = proto_reply_ok();
	cJSON_AddItemToObject(r, "segment", segment_json(&g, shm, c->owner));
	conn_reply(c, id, r);
}

static int list_segment(const struct shm_info *g, void *ud)
{
	struct conn *c = ((void **)ud)[0];
	cJSON *a = ((void **)ud)[1];

	cJSON_AddItemToArray(a, segment_json(g, core_shm(c->srv->ctx.core), c->owner));
	return 0;
}

static void op_shm_list(struct conn *c, uint64_t id)
{
	cJSON *r = proto_reply_ok(), *a = cJSON_AddArrayToObject(r, "segments");
	void *ud[2] = { c, a };

	shm_list(core_shm(c->srv->ctx.core), list_segment, ud);
	conn_reply(c, id, r);
}

static void op_shm_remove(struct conn *c, uint64_t id, const cJSON *req)
{
	struct shm *shm = core_shm(c->srv->ctx.core);
	const char *name = arg_str(req, "name");
	struct shm_info g;
	int rc;

	if (!name || shm_stat(shm, name, &g) < 0)
		return conn_error(c, id, ENOENT, NOSEGMENT, "shm_remove: no segment named \"%.128s\"",
				  name ? name : "");
	if (g.owner && g.owner != c->owner)
		return conn_error(c, id, EPERM, NOSEGMENT, "shm_remove: segment \"%.128s\" belongs "
				  "to another client", name);
	rc = shm_remove(shm, name);
	if (rc == -EBUSY)
		return conn_error(c, id, EBUSY, LEASED, "shm_remove: segment \"%.128s\" is in use by "
				  "%d job(s); remove it when they end", name, g.leases);
	if (rc < 0)
		return conn_error(c, id, -rc, NOSEGMENT, "shm_remove: %s", strerror(-rc));
	conn_reply(c, id, proto_reply_ok());
}

static void op_cancel(struct conn *c, uint64_t id, const cJSON *req)
{
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(req, "target");
	struct pending *pd;

	for (pd = c->pend; pd; pd = pd->next)
		if (cJSON_IsNumber(t) && (double)pd->id == t->valuedouble && pd->job)
			break;
	if (!pd || core_cancel(c->srv->ctx.core, pd->job) < 0)
		return conn_error(c, id, ENOENT, BADARG,
				  "cancel: no job of this connection runs or waits with that id");
	conn_reply(c, id, proto_reply_ok());
}

static void op_hello(struct conn *c, uint64_t id)
{
	cJSON *r = proto_reply_ok();

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
	cJSON *r = core_status_json(s->ctx.core);

	cJSON_AddBoolToObject(r, "ok", 1);
	cJSON_AddNumberToObject(r, "proto", PROTO_VERSION);
	cJSON_AddStringToObject(r, "socket", s->ctx.sock_path);
	cJSON_AddNumberToObject(r, "clients", s->nconns);
	conn_reply(c, id, r);
}

static void op_workers(struct conn *c, uint64_t id)
{
	cJSON *r = proto_reply_ok();

	cJSON_AddItemToObject(r, "workers", core_workers_json(c->srv->ctx.core));
	conn_reply(c, id, r);
}

static void op_pythons(struct conn *c, uint64_t id)
{
	cJSON *r = proto_reply_ok();

	cJSON_AddItemToObject(r, "pythons", core_pythons_json(c->srv->ctx.core));
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
	cJSON *r = proto_reply_ok(), *a = cJSON_AddArrayToObject(r, "bubbles");

	bubble_list(core_home(c->srv->ctx.core), list_one, a);
	conn_reply(c, id, r);
}

static void op_shutdown(struct conn *c, uint64_t id)
{
	struct server *s = c->srv;

	logx(LOGX_INFO, "shutdown requested by a client (pid %d)", (int)c->pid);
	conn_reply(c, id, proto_reply_ok());
	if (s->ctx.on_shutdown)
		s->ctx.on_shutdown(s->ctx.ud);
}

/* Handles one request, taking the descriptors that came with it: an
 * exec's job gets them, and any other request's are closed before it is
 * answered. */
static void conn_request(struct conn *c, const char *pl, size_t len, int *fds, int nfds)
{
	char err[256];
	cJSON *req = NULL;
	uint64_t id = 0;
	int op = proto_decode(pl, len, &req, &id, err, sizeof err);

	if (op < 0) {
		chan_close_fds(fds, nfds);
		conn_reply(c, id, proto_reply_error(-op, proto_reason(op), "%s", err));
		return;
	}
	if (nfds < 0) {
		conn_error(c, id, E2BIG, BADARG, "%s: more than %d descriptors came with the "
			   "request (or the daemon is out of descriptors)", proto_op_name(op),
			   CHAN_MAX_FDS);
		goto out;
	}
	if (nfds > 0 && op != PROTO_OP_EXEC) {
		chan_close_fds(fds, nfds);
		conn_error(c, id, EINVAL, BADARG, "%s takes no descriptors; %d came with it",
			   proto_op_name(op), nfds);
		goto out;
	}
	switch (op) {
	case PROTO_OP_HELLO: op_hello(c, id); break;
	case PROTO_OP_EXEC: op_exec(c, id, req, fds, nfds); break;
	case PROTO_OP_STATUS: op_status(c, id); break;
	case PROTO_OP_WORKERS: op_workers(c, id); break;
	case PROTO_OP_PYTHONS: op_pythons(c, id); break;
	case PROTO_OP_LIST: op_list(c, id); break;
	case PROTO_OP_SHUTDOWN: op_shutdown(c, id); break;
	case PROTO_OP_CANCEL: op_cancel(c, id, req); break;
	case PROTO_OP_SHM_CREATE: op_shm_create(c, id, req); break;
	case PROTO_OP_SHM_LIST: op_shm_list(c, id); break;
	case PROTO_OP_SHM_REMOVE: op_shm_remove(c, id, req); break;
	case PROTO_OP_EVICT: op_evict(c, id, req); break;
	case PROTO_OP_IDLE_CONFIG: op_idle_config(c, id, req); break;
	default: conn_error(c, id, EOPNOTSUPP, PROTO, "unknown op"); break;
	}
out:
	cJSON_Delete(req);
}

static void conn_close(struct conn *c)
{
	struct server *s = c->srv;
	struct conn **pp;

	if (c->closed)
		return;
	c->closed = 1;
	loop_timer_cancel(s->ctx.loop, c->resume);
	c->resume = NULL;
	loop_del(s->ctx.loop, c->fd);
	close(c->fd);
	chan_free(&c->ch);
	for (pp = &s->conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	s->nconns--;
	conn_account(c);
	/* Its segments go, now or when the jobs that lease them end. */
	if (s->ctx.core)
		core_client_gone(s->ctx.core, c->owner);
	if (c->inflight == 0)
		free(c);
}

void server_core_gone(struct server *s)
{
	if (s)
		s->ctx.core = NULL;
}

/* Over SERVER_RBUF_MAX: refuses the largest partial requests until under. */
static void server_shed_reads(struct server *s)
{
	while (s->rbuf_total > SERVER_RBUF_MAX) {
		struct conn *big = NULL;

		for (struct conn *c = s->conns; c; c = c->next)
			if (!big || c->ch.rlen > big->ch.rlen)
				big = c;
		if (!big)
			return;
		logx(LOGX_WARN, "dropping client (pid %d): %zu bytes of a request buffered, "
		     "over the daemon's %u MiB for all requests", (int)big->pid, big->ch.rlen,
		     SERVER_RBUF_MAX >> 20);
		big->inflight++;
		conn_error(big, 0, ENOBUFS, TOOLARGE, "the daemon holds too many partial requests; "
			   "the largest (this one, %zu bytes so far) is refused", big->ch.rlen);
		if (!big->closed)
			chan_flush(&big->ch);
		conn_close(big);
		if (--big->inflight == 0)
			free(big);
	}
}

static void conn_io(struct loop *l, int fd, uint32_t ev, void *ud)
{
	struct conn *c = ud;
	const char *pl;
	size_t len;
	long n = 0;
	int r = 0;

	(void)l;
	(void)fd;
	if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
		if (chan_flush(&c->ch) < 0) {
			conn_close(c);
			return;
		}
		conn_sync(c);
	}
	if (!c->reading) {
		/* Not reading, so no end of stream would be seen: a peer gone
		 * for good is closed here, or the level-triggered event repeats. */
		if (ev & (EPOLLHUP | EPOLLERR))
			conn_close(c);
		return;
	}
	if (!(ev & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	r = chan_fill(&c->ch);
	/* A reply may close the connection (write error): re-check each turn. */
	while (!c->closed && conn_may_read(c) && (n = chan_frame(&c->ch, &pl, &len)) > 0) {
		int fds[CHAN_MAX_FDS], nfds = chan_take_fds(&c->ch, fds, CHAN_MAX_FDS);

		c->inflight++;       /* keep c alive across the request */
		conn_request(c, pl, len, fds, nfds);
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
		conn_reply(c, 0, proto_reply_error(-n, proto_reason(n),
						   "bad frame: %s; closing the connection",
						   n == -EMSGSIZE ? "larger than the protocol allows" : "empty"));
		if (!c->closed)
			chan_flush(&c->ch);
		conn_close(c);
		return;
	}
	/* The end of stream comes after the frames before it; frames still
	 * buffered while paused are answered before it is seen again. */
	if (r < 0 && (r != -EPIPE || chan_frame(&c->ch, &pl, &len) <= 0)) {
		conn_close(c);
		return;
	}
	conn_sync(c);
	server_shed_reads(c->srv);
}

/* One log line a second at most, however fast connections are refused. */
static void server_refused(struct server *s, const char *why)
{
	double now = loop_now();

	s->refused++;
	if (now - s->refused_logged >= SERVER_LOG_EVERY) {
		logx(LOGX_WARN, "refused %lu connection(s): %s", s->refused, why);
		s->refused = 0;
		s->refused_logged = now;
	}
}

static void server_accept(struct loop *l, int fd, uint32_t ev, void *ud);

static void server_accept_again(struct loop *l, void *ud)
{
	struct server *s = ud;

	s->accept_timer = NULL;
	if (s->lfd >= 0)
		loop_mod(l, s->lfd, EPOLLIN);
}

/* The listener stays readable while a connection waits: an error that
 * leaves it queued must not become a busy loop. */
static void server_accept_pause(struct server *s)
{
	if (s->accept_timer || s->lfd < 0)
		return;
	s->accept_timer = loop_timer_add(s->ctx.loop, 0.1, server_accept_again, s);
	if (s->accept_timer)
		loop_mod(s->ctx.loop, s->lfd, 0);
}

/*
 * Out of descriptors, the waiting connection can be neither accepted nor
 * left in the queue.  Giving up the spare descriptor for a moment takes it
 * off the queue, closed: the client sees a refusal and the clients already
 * connected go on being served.  1 one shed, 0 none waiting, -1 no spare.
 */
static int server_shed_accept(struct server *s)
{
	int cfd;

	if (s->spare < 0)
		return -1;
	close(s->spare);
	cfd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
	if (cfd >= 0)
		close(cfd);
	s->spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (cfd < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
	server_refused(s, "out of file descriptors");
	return 1;
}

static void server_accept(struct loop *l, int fd, uint32_t ev, void *ud)
{
	struct server *s = ud;

	(void)ev;
	for (;;) {
		struct ucred cred;
		socklen_t cl = sizeof cred;
		struct conn *c;
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), r;

		if (cfd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (errno == EMFILE || errno == ENFILE) {
				r = server_shed_accept(s);
				if (r > 0)
					continue;
				if (r == 0)
					return;
			}
			logx(LOGX_WARN, "accept: %s; pausing new connections", strerror(errno));
			server_accept_pause(s);
			return;
		}
		if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0 || cred.uid != getuid()) {
			logx(LOGX_WARN, "refused a client of uid %d", cl ? (int)cred.uid : -1);
			close(cfd);
			continue;
		}
		if (s->nconns >= s->ctx.max_clients) {
			close(cfd);
			server_refused(s, "max_clients reached");
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
		c->owner = ++s->next_owner;
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

int server_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -errno;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			return -errno;
	}
	return rl.rlim_cur > INT_MAX ? INT_MAX : (int)rl.rlim_cur;
}

/* A listening socket at path, its owner's alone (umask 077, then 0600); fd or -errno. */
static int server_bind(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), e;
	mode_t old;

	if (fd < 0)
		return -errno;
	strcpy(sa.sun_path, path);
	old = umask(077);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 128) < 0) {
		e = errno;
		umask(old);
		close(fd);
		return -e;
	}
	umask(old);
	chmod(path, 0600);
	return fd;
}

struct server *server_new(const struct server_ctx *ctx, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	struct server *s;
	int rc;

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
	if (s->ctx.max_clients <= 0)
		s->ctx.max_clients = SERVER_MAX_CLIENTS;
	s->refused_logged = -SERVER_LOG_EVERY;
	if ((rc = server_raise_nofile()) < 0)
		logx(LOGX_WARN, "cannot raise the descriptor limit: %s", strerror(-rc));
	s->spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
	s->inherited = ctx->listen_fd > 0;
	s->lfd = s->inherited ? ctx->listen_fd : server_bind(ctx->sock_path);
	if (s->lfd < 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", ctx->sock_path, strerror(-s->lfd));
		if (s->spare >= 0)
			close(s->spare);
		free(s);
		return NULL;
	}
	loop_add(ctx->loop, s->lfd, EPOLLIN, server_accept, s);
	return s;
}

void server_stop_listening(struct server *s)
{
	if (s && s->lfd >= 0) {
		loop_timer_cancel(s->ctx.loop, s->accept_timer);
		s->accept_timer = NULL;
		loop_del(s->ctx.loop, s->lfd);
		close(s->lfd);
		s->lfd = -1;
		if (!s->inherited)
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
	if (s->spare >= 0)
		close(s->spare);
	free(s);
}

int server_clients(const struct server *s) { return s->nconns; }
