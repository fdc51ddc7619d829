/*
 * router.c - request to worker key (see router.h).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "bubble.h"
#include "logx.h"
#include "omnipkg.h"
#include "proto.h"
#include "router.h"

#define PROBE_TIMEOUT 10.0
#define PROBE_CACHE_MAX 256
#define ALIAS_CACHE_MAX 16

/* An absolute path a request named, and the discovered interpreter it
 * resolved to: resolving a path costs a realpath() of every discovered
 * interpreter (tens of system calls), and clients name the same path on
 * every call (the Python client sends its own sys.executable). */
struct alias {
	char path[PATH_MAX];
	struct interp py;
};

struct probe {
	char path[PATH_MAX];
	pid_t pid;                 /* 0 once reaped */
	int fd;                    /* -1 once read to the end */
	int status;
	char out[64];
	size_t got;
	int done;                  /* 1: answered (ok or err set) */
	int ok;
	struct interp py;
	char err[PATH_MAX + 256];
	struct loop_timer *tmo;
	struct job *parked;        /* jobs waiting for the answer */
	struct router *r;
	struct probe *next;
};

struct router {
	struct loop *loop;
	const struct interp_set *py;
	const char *home;
	router_retry_cb retry;
	void *ud;
	struct probe *probes;      /* running and answered (the cache) */
	unsigned nprobes;
	struct alias alias[ALIAS_CACHE_MAX];
	unsigned nalias, next_alias;   /* filled; the slot replaced next when full */
};

static const struct interp *alias_find(const struct router *r, const char *path)
{
	for (unsigned i = 0; i < r->nalias; i++)
		if (strcmp(r->alias[i].path, path) == 0)
			return &r->alias[i].py;
	return NULL;
}

static void alias_add(struct router *r, const char *path, const struct interp *py)
{
	struct alias *a;

	if (strlen(path) >= sizeof a->path)
		return;
	if (r->nalias < ALIAS_CACHE_MAX) {
		a = &r->alias[r->nalias++];
	} else {
		a = &r->alias[r->next_alias];
		r->next_alias = (r->next_alias + 1) % ALIAS_CACHE_MAX;
	}
	snprintf(a->path, sizeof a->path, "%s", path);
	a->py = *py;
}

static struct probe *probe_find(struct router *r, const char *path)
{
	for (struct probe *p = r->probes; p; p = p->next)
		if (strcmp(p->path, path) == 0)
			return p;
	return NULL;
}

/* Both the output and the exit status are in (or the probe timed out). */
static void probe_answer(struct probe *p, int timed_out)
{
	struct router *r = p->r;
	struct job *j;
	int rc;

	if (p->done || (!timed_out && (p->fd >= 0 || p->pid > 0)))
		return;
	p->done = 1;
	loop_timer_cancel(r->loop, p->tmo);
	p->tmo = NULL;
	p->out[p->got] = 0;
	if (timed_out)
		rc = -ETIMEDOUT;
	else
		rc = interp_probe_parse(p->path, p->out, p->status, &p->py);
	if (rc == 0)
		rc = interp_check_probed(&p->py, p->err, sizeof p->err);
	else
		snprintf(p->err, sizeof p->err, "python %s: not a working Python interpreter (%s)",
			 p->path, strerror(-rc));
	p->ok = rc == 0;
	logx(p->ok ? LOGX_INFO : LOGX_WARN, "probed %s: %s", p->path, p->ok ? p->py.version : p->err);
	while ((j = p->parked)) {
		p->parked = j->next;
		j->next = NULL;
		r->retry(r->ud, j);
	}
}

static void probe_io(struct loop *l, int fd, uint32_t ev, void *ud)
{
	struct probe *p = ud;
	ssize_t n = read(fd, p->out + p->got, sizeof p->out - 1 - p->got);

	if (n > 0) {
		p->got += (size_t)n;
		if (p->got < sizeof p->out - 1)
			return;
	} else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		return;
	}
	loop_del(l, fd);
	close(fd);
	p->fd = -1;
	probe_answer(p, 0);
}

static void probe_timeout(struct loop *l, void *ud)
{
	struct probe *p = ud;

	p->tmo = NULL;
	if (p->pid > 0)
		kill(p->pid, SIGKILL);   /* still reaped later: router_reaped */
	if (p->fd >= 0) {
		loop_del(l, p->fd);
		close(p->fd);
		p->fd = -1;
	}
	probe_answer(p, 1);
}

static struct probe *probe_start(struct router *r, const char *path, char *err, size_t errlen)
{
	struct probe *p;
	int rc;

	if (r->nprobes >= PROBE_CACHE_MAX) {
		snprintf(err, errlen, "too many distinct interpreter paths (%d); name a discovered one",
			 PROBE_CACHE_MAX);
		return NULL;
	}
	p = calloc(1, sizeof *p);
	if (!p) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	p->r = r;
	p->fd = -1;
	snprintf(p->path, sizeof p->path, "%s", path);
	rc = interp_probe_start(path, &p->pid, &p->fd);
	if (rc == 0 && loop_add(r->loop, p->fd, EPOLLIN, probe_io, p) < 0) {
		kill(p->pid, SIGKILL);
		close(p->fd);
		p->fd = -1;
		rc = -EIO;   /* the pid is still reaped: keep the entry */
	}
	if (rc < 0 && p->pid <= 0) {
		/* Could not even start: that is the (cached) answer. */
		p->done = 1;
		snprintf(p->err, sizeof p->err, "python %s: %s", path, strerror(-rc));
	} else if (rc == 0) {
		p->tmo = loop_timer_add(r->loop, PROBE_TIMEOUT, probe_timeout, p);
	} else {
		p->done = 1;
		snprintf(p->err, sizeof p->err, "python %s: cannot probe it (%s)", path, strerror(-rc));
	}
	p->next = r->probes;
	r->probes = p;
	r->nprobes++;
	return p;
}

int router_resolve(struct router *r, struct job *j, struct route *out, cJSON **reply)
{
	char err[PATH_MAX + 512];
	struct spec s, resolved;
	int n;

	*reply = NULL;
	if (spec_parse(j->spec, strlen(j->spec), &s, err, sizeof err) < 0) {
		*reply = proto_reply_error(EINVAL, OMNI_REASON_BADSPEC, "bad spec: %s", err);
		return -EINVAL;
	}
	if (strlen(j->tag) >= sizeof out->tag) {
		*reply = proto_reply_error(EINVAL, OMNI_REASON_BADSPEC, "tag longer than %d bytes",
					ROUTER_TAG_MAX - 1);
		return -EINVAL;
	}
	const struct interp *known = j->python[0] == '/' ? alias_find(r, j->python) : NULL;

	if (known) {
		out->py = *known;
		n = 0;
	} else {
		n = interp_lookup(r->py, j->python, &out->py, err, sizeof err);
		if (n == 0 && j->python[0] == '/')
			alias_add(r, j->python, &out->py);
	}
	if (n == -EAGAIN) {
		struct probe *p = probe_find(r, j->python);

		if (!p && !(p = probe_start(r, j->python, err, sizeof err))) {
			*reply = proto_reply_error(ENOENT, OMNI_REASON_NOPYTHON, "%s", err);
			return -ENOENT;
		}
		if (!p->done) {
			j->next = p->parked;
			p->parked = j;
			return -EINPROGRESS;
		}
		if (!p->ok) {
			*reply = proto_reply_error(ENOENT, OMNI_REASON_NOPYTHON, "%s", p->err);
			return -ENOENT;
		}
		out->py = p->py;
		alias_add(r, j->python, &p->py);
	} else if (n < 0) {
		*reply = proto_reply_error(ENOENT, OMNI_REASON_NOPYTHON, "%s", err);
		return -ENOENT;
	}
	n = bubble_resolve_spec(r->home, &out->py, &s, &resolved, out->paths, err, sizeof err);
	if (n < 0) {
		*reply = proto_reply_error(ENOENT, OMNI_REASON_NOBUBBLE, "%s", err);
		return -ENOENT;
	}
	out->npaths = n;
	snprintf(out->spec, sizeof out->spec, "%s", resolved.canon);
	snprintf(out->tag, sizeof out->tag, "%s", j->tag);
	return 0;
}

int router_reaped(struct router *r, pid_t pid, int status)
{
	for (struct probe *p = r->probes; p; p = p->next)
		if (p->pid == pid) {
			p->pid = 0;
			p->status = status;
			probe_answer(p, 0);
			return 1;
		}
	return 0;
}

int router_owns(const struct router *r, pid_t pid)
{
	for (const struct probe *p = r->probes; p; p = p->next)
		if (p->pid == pid)
			return 1;
	return 0;
}

void router_stats(const struct router *r, unsigned *probed, unsigned *failed, unsigned *running)
{
	*probed = *failed = *running = 0;
	for (const struct probe *p = r->probes; p; p = p->next) {
		*probed += 1;
		*failed += p->done && !p->ok;
		*running += !p->done;
	}
}

struct router *router_new(struct loop *l, const struct interp_set *py, const char *home,
			  router_retry_cb retry, void *ud)
{
	struct router *r = calloc(1, sizeof *r);

	if (r)
		*r = (struct router){ .loop = l, .py = py, .home = home, .retry = retry, .ud = ud };
	return r;
}

void router_shutdown(struct router *r)
{
	for (struct probe *p = r->probes; p; p = p->next) {
		struct job *j;

		if (p->pid > 0)
			kill(p->pid, SIGKILL);
		if (p->fd >= 0) {
			loop_del(r->loop, p->fd);
			close(p->fd);
			p->fd = -1;
		}
		loop_timer_cancel(r->loop, p->tmo);
		p->tmo = NULL;
		p->done = 1;
		while ((j = p->parked)) {
			p->parked = j->next;
			job_finish(j, proto_reply_error(ESHUTDOWN, OMNI_REASON_SHUTDOWN,
						     "the daemon is shutting down"), NULL);
		}
	}
}

void router_free(struct router *r)
{
	if (!r)
		return;
	router_shutdown(r);
	while (r->probes) {
		struct probe *p = r->probes;

		r->probes = p->next;
		free(p);
	}
	free(r);
}
