/*
 * spawner.c - fresh interpreters and zygotes (see spawner.h).
 *
 * A zygote double-forks each worker, so the worker is re-parented to the
 * daemon (a child subreaper) and its exit status reaches pool_reap.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include "chan.h"
#include "logx.h"
#include "proto.h"
#include "spawner.h"
#include "spec.h"

struct spawner_wait {
	struct zygote *z;
	int cfd;
	const cJSON *paths;
	const char *tag;
	spawner_fail_cb fail;
	void *ud;
	struct spawner_wait *next;
};

struct zygote {
	struct spawner *s;
	struct interp py;
	int fd;
	struct chan ch;
	pid_t pid;                 /* 0 once reaped */
	int ready, dead;
	double t_spawn, start_ms;
	unsigned long long forks;
	struct spawner_wait *pending;
	struct zygote *next;
};

/* An interpreter whose zygote is kept started (idle_config). */
struct keep {
	struct spawner *s;
	struct interp py;
	int count;
	int fails;                 /* zygotes in a row that died before ready */
	struct loop_timer *restart;
	struct keep *next;
};

struct spawner {
	struct loop *loop;
	const char *entry;
	struct zygote *zygotes;
	struct keep *kept;         /* in the order recorded */
	int stopping;              /* no zygote is started again */
	uint64_t next_fork;
};

#define KEEP_RESTART_MIN 0.05  /* seconds before a kept zygote is started again */
#define KEEP_RESTART_MAX 30.0  /* the longest pause, for one that keeps failing */

/* In the child between fork and exec: signals back to defaults. */
static void child_reset_signals(void)
{
	sigset_t all;

	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	signal(SIGPIPE, SIG_DFL);
}

static int spawn_python(struct spawner *s, const struct interp *py, const char *mode, int cfd,
			const cJSON *paths, pid_t *pid_out)
{
	char fdarg[16];
	const char *argv[8 + SPEC_MAX_ITEMS];
	int argc = 0;
	const cJSON *it;
	pid_t pid;

	snprintf(fdarg, sizeof fdarg, "%d", cfd);
	argv[argc++] = py->path;
	argv[argc++] = "-E";
	argv[argc++] = "-s";
	argv[argc++] = s->entry;
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

int spawner_exec(struct spawner *s, const struct interp *py, int cfd, const cJSON *paths, pid_t *pid)
{
	int r = spawn_python(s, py, "worker", cfd, paths, pid);

	close(cfd);
	return r;
}

static void zygote_io(struct loop *l, int fd, uint32_t ev, void *ud);
static struct zygote *zygote_get(struct spawner *s, const struct interp *py);

static struct keep *keep_find(struct spawner *s, const char *path)
{
	for (struct keep *k = s->kept; k; k = k->next)
		if (strcmp(k->py.path, path) == 0)
			return k;
	return NULL;
}

static struct zygote *zygote_live(struct spawner *s, const char *path)
{
	for (struct zygote *z = s->zygotes; z; z = z->next)
		if (!z->dead && strcmp(z->py.path, path) == 0)
			return z;
	return NULL;
}

static void keep_schedule(struct keep *k);

static void keep_restart(struct loop *l, void *ud)
{
	struct keep *k = ud;

	k->restart = NULL;
	if (k->s->stopping || zygote_live(k->s, k->py.path))
		return;
	if (!zygote_get(k->s, &k->py)) {
		k->fails++;
		keep_schedule(k);
	}
}

/* Starts k's zygote again soon: at once after a zygote that had been
 * ready, later and later after each that was not. */
static void keep_schedule(struct keep *k)
{
	double after = KEEP_RESTART_MIN;

	if (k->restart || k->s->stopping)
		return;
	for (int i = 0; i < k->fails && after < KEEP_RESTART_MAX; i++)
		after *= 2;
	if (after > KEEP_RESTART_MAX)
		after = KEEP_RESTART_MAX;
	k->restart = loop_timer_add(k->s->loop, after, keep_restart, k);
}

static struct zygote *zygote_get(struct spawner *s, const struct interp *py)
{
	struct zygote *z;
	int sv[2];

	if ((z = zygote_live(s, py->path)))
		return z;
	z = calloc(1, sizeof *z);
	if (!z || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		free(z);
		return NULL;
	}
	z->s = s;
	z->py = *py;
	z->fd = sv[0];
	z->t_spawn = loop_now();
	if (spawn_python(s, py, "zygote", sv[1], NULL, &z->pid) < 0) {
		close(sv[0]);
		close(sv[1]);
		free(z);
		return NULL;
	}
	close(sv[1]);
	fcntl(z->fd, F_SETFL, fcntl(z->fd, F_GETFL) | O_NONBLOCK);
	chan_init(&z->ch, z->fd, 65536);
	loop_add(s->loop, z->fd, EPOLLIN, zygote_io, z);
	z->next = s->zygotes;
	s->zygotes = z;
	logx(LOGX_INFO, "zygote for %s (%s) started, pid %d", py->version, py->path, (int)z->pid);
	return z;
}

/* Hands cfd to the zygote with a fork request: closed when handed over. */
static int zygote_fork(struct zygote *z, int cfd, const cJSON *paths, const char *tag)
{
	cJSON *m = cJSON_CreateObject();
	int r;

	cJSON_AddStringToObject(m, "op", "fork");
	proto_set_id(m, ++z->s->next_fork);
	cJSON_AddItemToObject(m, "paths", cJSON_Duplicate(paths, 1));
	cJSON_AddStringToObject(m, "tag", tag);
	r = chan_send_fd(&z->ch, m, cfd);
	cJSON_Delete(m);
	if (r == 0) {
		close(cfd);
		z->forks++;
	}
	return r;
}

static void wait_unlink(struct spawner_wait *w)
{
	struct spawner_wait **pp;

	for (pp = &w->z->pending; *pp; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			break;
		}
}

void spawner_wait_cancel(struct spawner_wait *w)
{
	if (!w)
		return;
	wait_unlink(w);
	close(w->cfd);
	free(w);
}

/* Ends a wait: why is the failure, or NULL to hand the worker over. */
static void wait_end(struct spawner_wait *w, const char *why)
{
	spawner_fail_cb fail = w->fail;
	void *ud = w->ud;

	wait_unlink(w);
	if (why || zygote_fork(w->z, w->cfd, w->paths, w->tag) < 0) {
		why = why ? why : "cannot hand the worker to its zygote";
		close(w->cfd);
	}
	free(w);
	fail(ud, why);
}

static void zygote_lost(struct zygote *z, const char *why)
{
	struct spawner *s = z->s;
	struct zygote **pp;
	struct keep *k;

	if (!z->dead) {
		z->dead = 1;
		loop_del(s->loop, z->fd);
		close(z->fd);
		chan_free(&z->ch);
		if (!s->stopping && (k = keep_find(s, z->py.path))) {
			k->fails += !z->ready;
			logx(LOGX_INFO, "zygote %d for %s lost (%s): kept warm, starting another",
			     (int)z->pid, z->py.path, why);
			keep_schedule(k);
		}
	}
	while (z->pending)
		wait_end(z->pending, why);
	if (z->pid > 0 && !z->ready)
		logx(LOGX_WARN, "zygote for %s failed before ready: %s", z->py.path, why);
	if (z->pid > 0) {
		kill(z->pid, SIGKILL);
		return;   /* freed when reaped */
	}
	for (pp = &s->zygotes; *pp; pp = &(*pp)->next)
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
			struct keep *k = keep_find(z->s, z->py.path);

			if (k)
				k->fails = 0;
			z->ready = 1;
			z->start_ms = (loop_now() - z->t_spawn) * 1000;
			logx(LOGX_INFO, "zygote %d ready in %.1f ms", (int)z->pid, z->start_ms);
			while (z->pending)
				wait_end(z->pending, NULL);
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

int spawner_fork(struct spawner *s, const struct interp *py, int cfd, const cJSON *paths,
		 const char *tag, spawner_fail_cb fail, void *ud, struct spawner_wait **wait)
{
	struct zygote *z = zygote_get(s, py);
	struct spawner_wait *w;

	*wait = NULL;
	if (!z)
		return -EAGAIN;
	if (z->ready)
		return zygote_fork(z, cfd, paths, tag);
	w = calloc(1, sizeof *w);
	if (!w)
		return -ENOMEM;
	*w = (struct spawner_wait){ .z = z, .cfd = cfd, .paths = paths, .tag = tag, .fail = fail,
				  .ud = ud, .next = z->pending };
	z->pending = w;
	*wait = w;
	return 0;
}

int spawner_reaped(struct spawner *s, pid_t pid, int status)
{
	for (struct zygote *z = s->zygotes; z; z = z->next)
		if (z->pid == pid) {
			z->pid = 0;
			zygote_lost(z, WIFSIGNALED(status) ? "zygote killed by a signal" : "zygote exited");
			return 1;
		}
	return 0;
}

int spawner_owns(const struct spawner *s, pid_t pid)
{
	for (const struct zygote *z = s->zygotes; z; z = z->next)
		if (z->pid == pid)
			return 1;
	return 0;
}

int spawner_each(struct spawner *s, int (*cb)(const struct spawner_zygote_info *z, void *ud), void *ud)
{
	for (struct zygote *z = s->zygotes; z; z = z->next) {
		struct spawner_zygote_info i = { .python = z->py.path, .pid = z->pid, .ready = z->ready,
					       .start_ms = z->start_ms, .forks = z->forks };
		int r;

		if (z->dead)
			continue;
		if ((r = cb(&i, ud)) != 0)
			return r;
	}
	return 0;
}

int spawner_keep(struct spawner *s, const struct interp *py, int count)
{
	struct keep *k = keep_find(s, py->path), **pp;

	if (count <= 0) {
		for (pp = &s->kept; *pp; pp = &(*pp)->next)
			if (*pp == k) {
				*pp = k->next;
				loop_timer_cancel(s->loop, k->restart);
				free(k);
				break;
			}
		return 0;
	}
	if (!k) {
		if (!(k = calloc(1, sizeof *k)))
			return -ENOMEM;
		k->s = s;
		k->py = *py;
		for (pp = &s->kept; *pp; pp = &(*pp)->next)
			;
		*pp = k;
	}
	k->count = count;
	k->fails = 0;
	if (!zygote_live(s, py->path) && !s->stopping && !k->restart && !zygote_get(s, py)) {
		k->fails++;
		keep_schedule(k);
	}
	return 0;
}

int spawner_each_kept(struct spawner *s, int (*cb)(const struct spawner_kept_info *k, void *ud),
		      void *ud)
{
	for (struct keep *k = s->kept; k; k = k->next) {
		struct zygote *z = zygote_live(s, k->py.path);
		struct spawner_kept_info i = { .python = k->py.path, .count = k->count,
					       .zygote_pid = z ? z->pid : 0, .ready = z && z->ready };
		int r;

		if ((r = cb(&i, ud)) != 0)
			return r;
	}
	return 0;
}

struct spawner *spawner_new(struct loop *l, const char *entry)
{
	struct spawner *s = calloc(1, sizeof *s);

	if (s) {
		s->loop = l;
		s->entry = entry;
	}
	return s;
}

void spawner_kill(struct spawner *s)
{
	s->stopping = 1;
	for (struct keep *k = s->kept; k; k = k->next) {
		loop_timer_cancel(s->loop, k->restart);
		k->restart = NULL;
	}
	for (struct zygote *z = s->zygotes, *n; z; z = n) {
		n = z->next;
		if (!z->dead)
			zygote_lost(z, "the daemon is shutting down");   /* kills it */
	}
}

int spawner_live(const struct spawner *s)
{
	return s->zygotes != NULL;
}

void spawner_free(struct spawner *s)
{
	if (!s)
		return;
	spawner_kill(s);
	while (s->zygotes) {
		s->zygotes->pid = 0;   /* given up on: zygote_lost frees it */
		zygote_lost(s->zygotes, "the daemon is shutting down");
	}
	while (s->kept) {
		struct keep *k = s->kept;

		s->kept = k->next;
		free(k);
	}
	free(s);
}
