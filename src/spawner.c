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

struct spawner {
	struct loop *loop;
	const char *entry;
	struct zygote *zygotes;
	uint64_t next_fork;
};

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

static struct zygote *zygote_get(struct spawner *s, const struct interp *py)
{
	struct zygote *z;
	int sv[2];

	for (z = s->zygotes; z; z = z->next)
		if (!z->dead && strcmp(z->py.path, py->path) == 0)
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

	if (!z->dead) {
		z->dead = 1;
		loop_del(s->loop, z->fd);
		close(z->fd);
		chan_free(&z->ch);
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
	free(s);
}
