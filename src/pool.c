/*
 * pool.c - workers, zygotes and the jobs that run on them (see pool.h).
 *
 * Workers are plain children (fresh exec) or grandchildren re-parented to
 * the daemon, which is a child subreaper, when a zygote double-forks them;
 * either way their exit status reaches pool_reap.  The death of a worker
 * is noticed twice, by EOF on its channel and by its exit status; a job is
 * failed when the status is known (or after a short grace when it never
 * comes), so the reason given is exact.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "bubble.h"
#include "chan.h"
#include "logx.h"
#include "pool.h"
#include "proto.h"
#include "spec.h"

#define WORKER_FRAME_MAX (PROTO_MAX_FRAME)
#define DEATH_GRACE 2.0     /* seconds between EOF and giving up on the exit status */
#define SPAWN_TIMEOUT 30.0  /* seconds a new worker may take to say "ready" */

enum wstate { W_SPAWNING, W_IDLE, W_BUSY, W_DEAD };
static const char *wstate_name[] = { "starting", "idle", "busy", "dead" };

struct job {
	uint64_t id;
	char *code;
	double timeout;
	double t_submit, t_start;
	pool_done_cb cb;
	void *ud;
	struct job *next;
};

struct zygote;

struct worker {
	struct pool *pool;
	char spec[SPEC_MAX_LEN];
	char tag[128];
	struct interp py;
	cJSON *paths;             /* bubble dirs, spec order */
	int once;
	int state;
	int fd, cfd;              /* our end; the worker's end until handed over */
	struct chan ch;
	pid_t pid;
	int via_zygote;
	struct job *cur, *qhead, *qtail;
	int qlen;
	struct loop_timer *tmo;   /* job timeout, or death grace once dead */
	uint64_t jobs;
	double t_spawn, start_ms, last_used;
	int reaped, status;
	int timed_out;
	struct worker *next;      /* pool list */
	struct zygote *zy;        /* waiting for this zygote to be ready */
	struct worker *znext;
};

struct zygote {
	struct pool *pool;
	struct interp py;
	int fd;
	struct chan ch;
	pid_t pid;
	int ready, dead;
	double t_spawn, start_ms;
	uint64_t forks;
	struct worker *pending;
	struct zygote *next;
};

struct pool {
	struct loop *loop;
	const struct config *cfg;
	const struct interp_set *py;
	const char *home;
	const char *worker_py;
	struct worker *workers;
	struct zygote *zygotes;
	struct loop_timer *tick;
	uint64_t next_id;
	uint64_t jobs_total, jobs_failed, spawned, crashes, timeouts;
};

static void worker_io(struct loop *l, int fd, uint32_t ev, void *ud);
static void zygote_io(struct loop *l, int fd, uint32_t ev, void *ud);
static void worker_dispatch(struct worker *w);
static void worker_retire(struct worker *w);
static void pool_place(struct pool *p, const struct pool_req *r, struct job *j);

/* ---- replies ---- */

/* Job replies always carry stdout and stderr, empty when the job never ran. */
#define reply_fail(reason, err, ...) job_reply_empty(proto_reply_error(err, reason, __VA_ARGS__))

static cJSON *job_reply_empty(cJSON *r)
{
	cJSON_AddStringToObject(r, "stdout", "");
	cJSON_AddStringToObject(r, "stderr", "");
	return r;
}

static void job_finish(struct pool *p, struct job *j, cJSON *reply, struct worker *w)
{
	cJSON *ok = cJSON_GetObjectItemCaseSensitive(reply, "ok");

	if (w) {
		cJSON_AddStringToObject(reply, "spec", w->spec);
		cJSON_AddStringToObject(reply, "python", w->py.path);
		cJSON_AddStringToObject(reply, "python_version", w->py.version);
		if (w->tag[0])
			cJSON_AddStringToObject(reply, "tag", w->tag);
		if (w->pid > 0)
			cJSON_AddNumberToObject(reply, "worker_pid", w->pid);
		if (w->jobs == 1 && w->start_ms > 0) {
			/* This job waited for its worker to start: say how long. */
			cJSON_AddNumberToObject(reply, "worker_start_ms", w->start_ms);
			cJSON_AddStringToObject(reply, "started_by", w->via_zygote ? "zygote" : "exec");
		}
	}
	if (!cJSON_GetObjectItemCaseSensitive(reply, "duration"))
		cJSON_AddNumberToObject(reply, "duration",
					j->t_start ? loop_now() - j->t_start : 0);
	cJSON_AddNumberToObject(reply, "wall", loop_now() - j->t_submit);
	if (!cJSON_IsTrue(ok))
		p->jobs_failed++;
	j->cb(reply, j->ud);
	free(j->code);
	free(j);
}

/* ---- spawning ---- */

/* In the child between fork and exec: signals back to defaults. */
static void child_reset_signals(void)
{
	sigset_t all;

	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	signal(SIGPIPE, SIG_DFL);
}

static int spawn_python(struct pool *p, const struct interp *py, const char *mode, int cfd,
			cJSON *paths, pid_t *pid_out)
{
	char fdarg[16];
	const char *argv[8 + SPEC_MAX_ITEMS];
	int argc = 0;
	cJSON *it;
	pid_t pid;

	snprintf(fdarg, sizeof fdarg, "%d", cfd);
	argv[argc++] = py->path;
	argv[argc++] = "-E";
	argv[argc++] = "-s";
	argv[argc++] = p->worker_py;
	argv[argc++] = mode;
	argv[argc++] = fdarg;
	cJSON_ArrayForEach(it, paths)
		if (argc < (int)(sizeof argv / sizeof *argv) - 1)
			argv[argc++] = it->valuestring;
	argv[argc] = NULL;

	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int fl = fcntl(cfd, F_GETFD);

		child_reset_signals();
		setsid();
		/* A busy worker never sees its channel close: die with the daemon. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() == 1)
			_exit(111);
		fcntl(cfd, F_SETFD, fl & ~FD_CLOEXEC);
		execv(py->path, (char *const *)argv);
		dprintf(2, "omnipkgd: cannot run %s: %s\n", py->path, strerror(errno));
		_exit(127);
	}
	*pid_out = pid;
	return 0;
}

static int pair(int sv[2])
{
	return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 ? -errno : 0;
}

static int fd_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -errno : 0;
}

static struct zygote *zygote_get(struct pool *p, const struct interp *py)
{
	struct zygote *z;
	int sv[2];

	for (z = p->zygotes; z; z = z->next)
		if (!z->dead && strcmp(z->py.path, py->path) == 0)
			return z;
	z = calloc(1, sizeof *z);
	if (!z || pair(sv) < 0) {
		free(z);
		return NULL;
	}
	z->pool = p;
	z->py = *py;
	z->fd = sv[0];
	z->t_spawn = loop_now();
	if (spawn_python(p, py, "zygote", sv[1], NULL, &z->pid) < 0) {
		close(sv[0]);
		close(sv[1]);
		free(z);
		return NULL;
	}
	close(sv[1]);
	fd_nonblock(z->fd);
	chan_init(&z->ch, z->fd, 65536);
	loop_add(p->loop, z->fd, EPOLLIN, zygote_io, z);
	z->next = p->zygotes;
	p->zygotes = z;
	logx(LOGX_INFO, "zygote for %s (%s) started, pid %d", py->version, py->path, (int)z->pid);
	return z;
}

static int zygote_fork(struct zygote *z, struct worker *w)
{
	cJSON *m = cJSON_CreateObject();
	int r;

	cJSON_AddStringToObject(m, "op", "fork");
	cJSON_AddNumberToObject(m, "id", (double)(uintptr_t)w->fd);
	cJSON_AddItemReferenceToObject(m, "paths", w->paths);
	cJSON_AddStringToObject(m, "tag", w->tag);
	r = chan_send_fd(&z->ch, m, w->cfd);
	cJSON_Delete(m);
	if (r == 0) {
		close(w->cfd);
		w->cfd = -1;
		z->forks++;
	}
	return r;
}

static void worker_spawn_failed(struct worker *w, const char *why);

static void zygote_lost(struct zygote *z, const char *why)
{
	struct pool *p = z->pool;
	struct zygote **pp;

	if (!z->dead) {
		z->dead = 1;
		loop_del(p->loop, z->fd);
		close(z->fd);
		chan_free(&z->ch);
	}
	while (z->pending) {
		struct worker *w = z->pending;

		z->pending = w->znext;
		w->zy = NULL;
		worker_spawn_failed(w, why);
	}
	if (z->pid > 0 && !z->ready)
		logx(LOGX_WARN, "zygote for %s failed before ready: %s", z->py.path, why);
	if (z->pid > 0) {
		kill(z->pid, SIGKILL);
		return;   /* freed when reaped */
	}
	for (pp = &p->zygotes; *pp; pp = &(*pp)->next)
		if (*pp == z) {
			*pp = z->next;
			break;
		}
	free(z);
}

static void zygote_io(struct loop *l, int fd, uint32_t ev, void *ud)
{
	struct zygote *z = ud;
	const char *pl;
	size_t len;
	long n;
	int r = chan_fill(&z->ch);

	while ((n = chan_frame(&z->ch, &pl, &len)) > 0) {
		cJSON *m = cJSON_ParseWithLength(pl, len);
		const char *op = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "op"));

		if (op && strcmp(op, "ready") == 0 && !z->ready) {
			z->ready = 1;
			z->start_ms = (loop_now() - z->t_spawn) * 1000;
			logx(LOGX_INFO, "zygote %d ready in %.1f ms", (int)z->pid, z->start_ms);
			while (z->pending) {
				struct worker *w = z->pending;

				z->pending = w->znext;
				w->zy = NULL;
				if (zygote_fork(z, w) < 0)
					worker_spawn_failed(w, "cannot hand the worker to its zygote");
			}
		} else if (op && strcmp(op, "error") == 0) {
			logx(LOGX_WARN, "zygote %d: %s", (int)z->pid,
			     cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "error")));
		}
		cJSON_Delete(m);
		chan_drop(&z->ch, n);
	}
	if (n < 0 || r < 0)
		zygote_lost(z, r == -EPIPE ? "zygote exited" : "zygote channel broken");
}

/* A worker that never says "ready" (a hung interpreter or zygote) must
 * not hold its queue forever. */
static void worker_spawn_timeout(struct loop *l, void *ud)
{
	struct worker *w = ud;

	w->tmo = NULL;
	worker_spawn_failed(w, "not ready after 30 s");
}

static struct worker *worker_new(struct pool *p, const char *spec, const struct interp *py,
				 const char *tag, char paths[][4096], int npaths, int once)
{
	struct worker *w = calloc(1, sizeof *w);
	int sv[2], r;

	if (!w)
		return NULL;
	w->pool = p;
	snprintf(w->spec, sizeof w->spec, "%s", spec);
	snprintf(w->tag, sizeof w->tag, "%s", tag ? tag : "");
	w->py = *py;
	w->once = once;
	w->paths = cJSON_CreateArray();
	for (int i = 0; i < npaths; i++)
		cJSON_AddItemToArray(w->paths, cJSON_CreateString(paths[i]));
	w->t_spawn = w->last_used = loop_now();
	if (pair(sv) < 0) {
		cJSON_Delete(w->paths);
		free(w);
		return NULL;
	}
	w->fd = sv[0];
	w->cfd = sv[1];
	fd_nonblock(w->fd);
	chan_init(&w->ch, w->fd, WORKER_FRAME_MAX);
	loop_add(p->loop, w->fd, EPOLLIN, worker_io, w);
	w->next = p->workers;
	p->workers = w;
	p->spawned++;
	w->tmo = loop_timer_add(p->loop, SPAWN_TIMEOUT, worker_spawn_timeout, w);

	if (p->cfg->zygote) {
		struct zygote *z = zygote_get(p, py);

		if (z) {
			w->via_zygote = 1;
			if (z->ready) {
				if (zygote_fork(z, w) == 0)
					return w;
			} else {
				w->zy = z;
				w->znext = z->pending;
				z->pending = w;
				return w;
			}
			w->via_zygote = 0;
		}
	}
	r = spawn_python(p, py, "worker", w->cfd, w->paths, &w->pid);
	close(w->cfd);
	w->cfd = -1;
	if (r < 0)
		worker_spawn_failed(w, strerror(-r));
	return w;
}

/* ---- worker life ---- */

static void worker_unlink(struct worker *w)
{
	struct worker **pp;

	for (pp = &w->pool->workers; *pp; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			break;
		}
}

static void worker_close_channel(struct worker *w)
{
	if (w->fd >= 0) {
		loop_del(w->pool->loop, w->fd);
		close(w->fd);
		w->fd = -1;
	}
	if (w->cfd >= 0) {
		close(w->cfd);
		w->cfd = -1;
	}
	chan_free(&w->ch);
}

static void worker_free(struct worker *w)
{
	struct zygote *z = w->zy;

	if (z) {
		struct worker **pp;

		for (pp = &z->pending; *pp; pp = &(*pp)->znext)
			if (*pp == w) {
				*pp = w->znext;
				break;
			}
	}
	loop_timer_cancel(w->pool->loop, w->tmo);
	worker_close_channel(w);
	worker_unlink(w);
	cJSON_Delete(w->paths);
	free(w);
}

static void job_requeue(struct pool *p, struct worker *from, struct job *j)
{
	struct pool_req r = { .spec = from->spec, .python = from->py.path, .code = j->code,
			      .tag = from->tag, .timeout = j->timeout, .once = from->once };

	pool_place(p, &r, j);
}

/* Fails every queued job: the worker could not start, so a new one would not either. */
static void worker_fail_queue(struct worker *w, const char *reason, const char *why)
{
	while (w->qhead) {
		struct job *j = w->qhead;

		w->qhead = j->next;
		job_finish(w->pool, j, reply_fail(reason, ECHILD, "%s", why), w);
	}
	w->qtail = NULL;
	w->qlen = 0;
}

static void worker_spawn_failed(struct worker *w, const char *why)
{
	char msg[2048];

	snprintf(msg, sizeof msg, "worker for %s on python %s could not start: %s",
		 w->spec, w->py.version, why);
	logx(LOGX_WARN, "%s", msg);
	worker_fail_queue(w, "spawn", msg);
	if (w->pid > 0 && !w->reaped) {
		w->state = W_DEAD;
		worker_close_channel(w);
		loop_timer_cancel(w->pool->loop, w->tmo);
		w->tmo = NULL;
		kill(w->pid, SIGKILL);
		return;   /* freed when reaped */
	}
	worker_free(w);
}

/* The worker is gone (status known or given up on): settle its jobs. */
static void worker_settle(struct worker *w)
{
	struct pool *p = w->pool;
	char why[256];

	if (!w->reaped)
		snprintf(why, sizeof why, "worker %d closed its channel (exit status unknown)", (int)w->pid);
	else if (WIFSIGNALED(w->status))
		snprintf(why, sizeof why, "worker %d killed by signal %d (%s)", (int)w->pid,
			 WTERMSIG(w->status), strsignal(WTERMSIG(w->status)));
	else
		snprintf(why, sizeof why, "worker %d exited with code %d", (int)w->pid,
			 WEXITSTATUS(w->status));

	if (w->cur) {
		cJSON *r = reply_fail(w->reaped && WIFSIGNALED(w->status) ? "signal" : "exit", 0,
				      "%s", why);

		if (w->reaped && WIFSIGNALED(w->status))
			cJSON_AddNumberToObject(r, "signal", WTERMSIG(w->status));
		else if (w->reaped)
			cJSON_AddNumberToObject(r, "exit_code", WEXITSTATUS(w->status));
		p->crashes++;
		logx(LOGX_WARN, "%s during a job on %s", why, w->spec);
		job_finish(p, w->cur, r, w);
		w->cur = NULL;
	}
	if (w->state == W_SPAWNING || w->jobs == 0) {
		if (w->qhead)
			worker_fail_queue(w, "spawn", why);
	} else {
		struct job *q = w->qhead;

		w->qhead = w->qtail = NULL;
		w->qlen = 0;
		while (q) {
			struct job *n = q->next;

			job_requeue(p, w, q);
			q = n;
		}
	}
	worker_free(w);
}

static void worker_grace_expired(struct loop *l, void *ud)
{
	struct worker *w = ud;

	w->tmo = NULL;
	worker_settle(w);
}

/* EOF or a broken channel: wait briefly for the exit status. */
static void worker_lost(struct worker *w)
{
	if (w->pid > 0 && !w->reaped) {
		w->state = W_DEAD;
		worker_close_channel(w);
		loop_timer_cancel(w->pool->loop, w->tmo);
		w->tmo = loop_timer_add(w->pool->loop, DEATH_GRACE, worker_grace_expired, w);
		return;
	}
	worker_settle(w);
}

static void worker_kill(struct worker *w)
{
	if (w->pid > 0 && !w->reaped) {
		kill(-w->pid, SIGKILL);
		kill(w->pid, SIGKILL);
	}
}

static void worker_timeout(struct loop *l, void *ud)
{
	struct worker *w = ud;
	struct job *j = w->cur;
	struct pool *p = w->pool;
	struct job *q;

	w->tmo = NULL;
	if (!j)
		return;
	w->cur = NULL;
	w->timed_out = 1;
	p->timeouts++;
	worker_kill(w);
	logx(LOGX_WARN, "job %llu on %s timed out after %g s; worker %d killed",
	     (unsigned long long)j->id, w->spec, j->timeout, (int)w->pid);
	job_finish(p, j, reply_fail("timeout", ETIMEDOUT, "timeout: the job ran longer than %g s; "
				    "its worker was killed", j->timeout), w);
	/* The rest of the queue goes to a fresh worker at once. */
	q = w->qhead;
	w->qhead = w->qtail = NULL;
	w->qlen = 0;
	w->state = W_DEAD;
	worker_close_channel(w);
	while (q) {
		struct job *n = q->next;

		job_requeue(p, w, q);
		q = n;
	}
	w->tmo = loop_timer_add(p->loop, DEATH_GRACE, worker_grace_expired, w);
}

static void worker_on_done(struct worker *w, cJSON *m)
{
	struct job *j = w->cur;
	cJSON *ok;

	if (!j || (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(m, "id")) != j->id) {
		logx(LOGX_WARN, "worker %d answered a job it was not given; killed", (int)w->pid);
		cJSON_Delete(m);
		worker_kill(w);
		return;
	}
	loop_timer_cancel(w->pool->loop, w->tmo);
	w->tmo = NULL;
	w->cur = NULL;
	w->jobs++;
	w->last_used = loop_now();
	w->state = W_IDLE;
	cJSON_DeleteItemFromObjectCaseSensitive(m, "op");
	cJSON_DeleteItemFromObjectCaseSensitive(m, "id");
	ok = cJSON_GetObjectItemCaseSensitive(m, "ok");
	if (!cJSON_IsBool(ok)) {
		cJSON_DeleteItemFromObjectCaseSensitive(m, "ok");
		cJSON_AddBoolToObject(m, "ok", 0);
	}
	if (!cJSON_IsTrue(ok) && !cJSON_GetObjectItemCaseSensitive(m, "reason"))
		cJSON_AddStringToObject(m, "reason", "exception");
	job_finish(w->pool, j, m, w);
	if (w->once && !w->qhead)
		worker_retire(w);
	else
		worker_dispatch(w);
}

static void worker_io(struct loop *l, int fd, uint32_t ev, void *ud)
{
	struct worker *w = ud;
	const char *pl;
	size_t len;
	long n;
	int r;

	if (ev & EPOLLOUT) {
		r = chan_flush(&w->ch);
		if (r <= 0)
			loop_mod(l, fd, EPOLLIN);
	}
	r = chan_fill(&w->ch);
	while (w->fd >= 0 && (n = chan_frame(&w->ch, &pl, &len)) > 0) {
		cJSON *m = cJSON_ParseWithLength(pl, len);
		const char *op = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "op"));

		chan_drop(&w->ch, n);
		if (op && strcmp(op, "done") == 0) {
			worker_on_done(w, m);   /* takes m; may retire w */
			continue;
		}
		if (op && strcmp(op, "ready") == 0 && w->state == W_SPAWNING) {
			w->pid = (pid_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(m, "pid"));
			w->start_ms = (loop_now() - w->t_spawn) * 1000;
			w->state = W_IDLE;
			loop_timer_cancel(l, w->tmo);
			w->tmo = NULL;
			logx(LOGX_INFO, "worker %d for %s on python %s ready in %.1f ms (%s)", (int)w->pid,
			     w->spec, w->py.version, w->start_ms, w->via_zygote ? "zygote fork" : "fresh");
			cJSON_Delete(m);
			worker_dispatch(w);
			continue;
		}
		cJSON_Delete(m);
		logx(LOGX_WARN, "worker %d broke the protocol; killed", (int)w->pid);
		worker_kill(w);
		n = -EBADMSG;
		break;
	}
	if (w->fd >= 0 && (r < 0 || n < 0))
		worker_lost(w);
}

static void worker_dispatch(struct worker *w)
{
	struct pool *p = w->pool;
	struct job *j;
	cJSON *m;
	int r;

	if (w->state != W_IDLE || !w->qhead || w->fd < 0)
		return;
	j = w->qhead;
	w->qhead = j->next;
	if (!w->qhead)
		w->qtail = NULL;
	w->qlen--;
	j->next = NULL;
	w->cur = j;
	w->state = W_BUSY;
	j->t_start = loop_now();
	m = cJSON_CreateObject();
	cJSON_AddStringToObject(m, "op", "exec");
	cJSON_AddNumberToObject(m, "id", (double)j->id);
	cJSON_AddStringToObject(m, "code", j->code);
	cJSON_AddNumberToObject(m, "cap", (double)p->cfg->output_cap);
	r = chan_send(&w->ch, m);
	cJSON_Delete(m);
	if (r < 0) {
		worker_kill(w);
		worker_lost(w);
		return;
	}
	if (chan_pending(&w->ch))
		loop_mod(p->loop, w->fd, EPOLLIN | EPOLLOUT);
	w->tmo = loop_timer_add(p->loop, j->timeout, worker_timeout, w);
}

/* Stops an idle worker: it exits on EOF; the reaper frees it. */
static void worker_retire(struct worker *w)
{
	w->state = W_DEAD;
	worker_close_channel(w);
	if (w->pid > 0 && !w->reaped) {
		kill(-w->pid, SIGTERM);
		loop_timer_cancel(w->pool->loop, w->tmo);
		w->tmo = loop_timer_add(w->pool->loop, DEATH_GRACE, worker_grace_expired, w);
	} else {
		worker_free(w);
	}
}

/* ---- routing ---- */

static int live_count(struct pool *p)
{
	int n = 0;

	for (struct worker *w = p->workers; w; w = w->next)
		n += w->state != W_DEAD;
	return n;
}

static int evict_lru_idle(struct pool *p)
{
	struct worker *lru = NULL;

	for (struct worker *w = p->workers; w; w = w->next)
		if (w->state == W_IDLE && !w->qhead && (!lru || w->last_used < lru->last_used))
			lru = w;
	if (!lru)
		return -EBUSY;
	logx(LOGX_INFO, "evicting idle worker %d (%s) to stay within max_workers", (int)lru->pid, lru->spec);
	worker_retire(lru);
	return 0;
}

/*
 * Finds or creates the worker for r.  NULL with *reply set when the
 * request is refused.
 */
static struct worker *pool_route(struct pool *p, const struct pool_req *r, cJSON **reply)
{
	char err[1024], paths[SPEC_MAX_ITEMS][4096];
	struct spec s;
	struct interp py;
	const char *tag = r->tag ? r->tag : "";
	int n;

	*reply = NULL;
	if (spec_parse(r->spec ? r->spec : "", r->spec ? strlen(r->spec) : 0, &s, err, sizeof err) < 0) {
		*reply = reply_fail("badspec", EINVAL, "bad spec: %s", err);
		return NULL;
	}
	if (interp_resolve(p->py, r->python, &py, err, sizeof err) < 0) {
		*reply = reply_fail("nopython", ENOENT, "%s", err);
		return NULL;
	}
	if (strlen(tag) >= sizeof ((struct worker *)0)->tag) {
		*reply = reply_fail("badspec", EINVAL, "tag too long");
		return NULL;
	}
	n = bubble_resolve(p->home, &py, &s, paths, err, sizeof err);
	if (n < 0) {
		*reply = reply_fail("nobubble", ENOENT, "%s", err);
		return NULL;
	}
	if (!r->once)
		for (struct worker *w = p->workers; w; w = w->next)
			if (w->state != W_DEAD && !w->once && strcmp(w->spec, s.canon) == 0 &&
			    strcmp(w->py.path, py.path) == 0 && strcmp(w->tag, tag) == 0)
				return w;
	if (live_count(p) >= p->cfg->max_workers && evict_lru_idle(p) < 0) {
		*reply = reply_fail("busy", EBUSY, "all %d workers are busy (max_workers); "
				    "try again later or raise max_workers", p->cfg->max_workers);
		return NULL;
	}
	{
		struct worker *w = worker_new(p, s.canon, &py, tag, paths, n, r->once);

		if (!w)
			*reply = reply_fail("spawn", ENOMEM, "cannot create a worker: %s", strerror(errno));
		return w;
	}
}

static void pool_place(struct pool *p, const struct pool_req *r, struct job *j)
{
	cJSON *reply;
	struct worker *w = pool_route(p, r, &reply);

	if (!w) {
		job_finish(p, j, reply, NULL);
		return;
	}
	j->next = NULL;
	if (w->qtail)
		w->qtail->next = j;
	else
		w->qhead = j;
	w->qtail = j;
	w->qlen++;
	worker_dispatch(w);
}

void pool_submit(struct pool *p, const struct pool_req *r, pool_done_cb cb, void *ud)
{
	struct job *j = calloc(1, sizeof *j);

	p->jobs_total++;
	if (!j || !r->code || !(j->code = strdup(r->code))) {
		free(j);
		p->jobs_failed++;
		cb(reply_fail("spawn", ENOMEM, "out of memory"), ud);
		return;
	}
	j->id = ++p->next_id;
	j->timeout = r->timeout > 0 ? r->timeout : p->cfg->job_timeout;
	j->t_submit = loop_now();
	j->cb = cb;
	j->ud = ud;
	pool_place(p, r, j);
}

void pool_prewarm(struct pool *p)
{
	for (size_t i = 0; i < p->cfg->nprewarm; i++) {
		struct pool_req r = { .spec = p->cfg->prewarm[i].spec,
				      .python = p->cfg->prewarm[i].python, .code = "" };
		cJSON *reply;

		if (!pool_route(p, &r, &reply)) {
			logx(LOGX_WARN, "prewarm %s on %s: %s", r.spec, r.python,
			     cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(reply, "error")));
			cJSON_Delete(reply);
		}
	}
}

/* ---- reaping, idle eviction ---- */

void pool_reap(struct pool *p)
{
	pid_t pid;
	int st;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		struct worker *w;
		struct zygote *z;

		for (w = p->workers; w; w = w->next)
			if (w->pid == pid && !w->reaped)
				break;
		if (w) {
			w->reaped = 1;
			w->status = st;
			loop_timer_cancel(p->loop, w->tmo);
			w->tmo = NULL;
			worker_close_channel(w);
			worker_settle(w);   /* a timed-out one has no job left to fail */
			continue;
		}
		for (z = p->zygotes; z; z = z->next)
			if (z->pid == pid)
				break;
		if (z) {
			z->pid = 0;
			zygote_lost(z, WIFSIGNALED(st) ? "zygote killed by a signal" : "zygote exited");
		}
		/* anything else: an orphan re-parented to us; reaped and forgotten */
	}
}

static void pool_tick(struct loop *l, void *ud)
{
	struct pool *p = ud;
	double now = loop_now(), idle = p->cfg->idle_timeout;
	struct worker *w, *n;

	p->tick = loop_timer_add(l, 1.0, pool_tick, p);
	if (idle <= 0)
		return;
	for (w = p->workers; w; w = n) {
		n = w->next;
		if (w->state == W_IDLE && !w->qhead && now - w->last_used > idle) {
			logx(LOGX_INFO, "worker %d (%s) idle for %.0f s: stopped", (int)w->pid, w->spec,
			     now - w->last_used);
			worker_retire(w);
		}
	}
}

struct pool *pool_new(struct loop *l, const struct config *cfg, const struct interp_set *py,
		      const char *home, const char *worker_py)
{
	struct pool *p = calloc(1, sizeof *p);

	if (!p)
		return NULL;
	p->loop = l;
	p->cfg = cfg;
	p->py = py;
	p->home = home;
	p->worker_py = worker_py;
	p->tick = loop_timer_add(l, 1.0, pool_tick, p);
	return p;
}

void pool_free(struct pool *p)
{
	double until;
	siginfo_t si;

	if (!p)
		return;
	loop_timer_cancel(p->loop, p->tick);
	for (struct worker *w = p->workers; w; w = w->next) {
		struct job *j = w->cur;

		w->cur = NULL;
		if (j)
			job_finish(p, j, reply_fail("shutdown", ESHUTDOWN, "the daemon is shutting down"), w);
		worker_fail_queue(w, "shutdown", "the daemon is shutting down");
		worker_kill(w);
		w->state = W_DEAD;
		worker_close_channel(w);
	}
	for (struct zygote *z = p->zygotes, *n; z; z = n) {
		n = z->next;
		if (!z->dead)
			zygote_lost(z, "the daemon is shutting down");   /* kills it */
	}
	/* Reap what we killed the usual way, bounded: a process stuck in the
	 * kernel is left behind rather than waited for. */
	until = loop_now() + 2.0;
	while ((p->workers || p->zygotes) && loop_now() < until) {
		pool_reap(p);
		if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0 && errno == ECHILD)
			break;
		usleep(2000);
	}
	while (p->workers)
		worker_free(p->workers);
	while (p->zygotes) {
		p->zygotes->pid = 0;   /* given up on: zygote_lost frees it */
		zygote_lost(p->zygotes, "the daemon is shutting down");
	}
	free(p);
}

/* ---- introspection ---- */

static long rss_kb(pid_t pid)
{
	char path[64];
	long pages = 0, res = 0;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	if (fscanf(f, "%ld %ld", &pages, &res) != 2)
		res = 0;
	fclose(f);
	return res * (sysconf(_SC_PAGESIZE) / 1024);
}

cJSON *pool_workers_json(struct pool *p)
{
	cJSON *a = cJSON_CreateArray();
	double now = loop_now();

	for (struct worker *w = p->workers; w; w = w->next) {
		cJSON *o;

		if (w->state == W_DEAD)
			continue;
		o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "spec", w->spec);
		cJSON_AddStringToObject(o, "python", w->py.path);
		cJSON_AddStringToObject(o, "version", w->py.version);
		cJSON_AddStringToObject(o, "tag", w->tag);
		cJSON_AddNumberToObject(o, "pid", w->pid);
		cJSON_AddStringToObject(o, "state", wstate_name[w->state]);
		cJSON_AddNumberToObject(o, "jobs", (double)w->jobs);
		cJSON_AddNumberToObject(o, "queued", w->qlen);
		cJSON_AddNumberToObject(o, "rss_kb", w->pid > 0 ? rss_kb(w->pid) : 0);
		cJSON_AddNumberToObject(o, "idle_s", w->state == W_IDLE ? now - w->last_used : 0);
		cJSON_AddNumberToObject(o, "start_ms", w->start_ms);
		cJSON_AddStringToObject(o, "started_by", w->via_zygote ? "zygote" : "exec");
		cJSON_AddBoolToObject(o, "once", w->once);
		cJSON_AddItemToArray(a, o);
	}
	return a;
}

void pool_stats_json(struct pool *p, cJSON *into)
{
	cJSON *z = cJSON_CreateArray();

	cJSON_AddNumberToObject(into, "workers", live_count(p));
	cJSON_AddNumberToObject(into, "jobs", (double)p->jobs_total);
	cJSON_AddNumberToObject(into, "jobs_failed", (double)p->jobs_failed);
	cJSON_AddNumberToObject(into, "workers_started", (double)p->spawned);
	cJSON_AddNumberToObject(into, "crashes", (double)p->crashes);
	cJSON_AddNumberToObject(into, "timeouts", (double)p->timeouts);
	for (struct zygote *y = p->zygotes; y; y = y->next) {
		cJSON *o;

		if (y->dead)
			continue;
		o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "python", y->py.path);
		cJSON_AddNumberToObject(o, "pid", y->pid);
		cJSON_AddBoolToObject(o, "ready", y->ready);
		cJSON_AddNumberToObject(o, "start_ms", y->start_ms);
		cJSON_AddNumberToObject(o, "forks", (double)y->forks);
		cJSON_AddItemToArray(z, o);
	}
	cJSON_AddItemToObject(into, "zygotes", z);
}
