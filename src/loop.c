/*
 * loop.c - epoll plus a sorted timer list.
 *
 * Watchers are kept in an array indexed by descriptor.  A callback may
 * delete other watchers while a batch of events is being dispatched, so
 * every event is checked against the array again before it is delivered.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "loop.h"

struct watcher {
	loop_io_cb cb;
	void *ud;
	uint64_t gen;      /* tells a reused descriptor from the one an event was for */
	uint32_t events;   /* as epoll has them */
};

struct loop_timer {
	double when;
	loop_timer_cb cb;
	void *ud;
	struct loop_timer *next;
};

struct loop {
	int epfd;
	int stop;
	struct watcher *w;
	int nw;
	uint64_t gen;
	struct loop_timer *timers;   /* sorted by when */
};

double loop_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

struct loop *loop_new(void)
{
	struct loop *l = calloc(1, sizeof *l);

	if (!l)
		return NULL;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0) {
		free(l);
		return NULL;
	}
	return l;
}

void loop_free(struct loop *l)
{
	struct loop_timer *t, *n;

	if (!l)
		return;
	for (t = l->timers; t; t = n) {
		n = t->next;
		free(t);
	}
	close(l->epfd);
	free(l->w);
	free(l);
}

int loop_add(struct loop *l, int fd, uint32_t events, loop_io_cb cb, void *ud)
{
	struct epoll_event ev = { .events = events };

	if (fd < 0)
		return -EBADF;
	if (fd >= l->nw) {
		int n = l->nw ? l->nw : 64;
		struct watcher *w;

		while (n <= fd)
			n *= 2;
		w = realloc(l->w, n * sizeof *w);
		if (!w)
			return -ENOMEM;
		memset(w + l->nw, 0, (n - l->nw) * sizeof *w);
		l->w = w;
		l->nw = n;
	}
	l->w[fd].cb = cb;
	l->w[fd].ud = ud;
	l->w[fd].gen = ++l->gen;
	l->w[fd].events = events;
	ev.data.u64 = (uint64_t)fd | (l->w[fd].gen << 24);
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		l->w[fd].cb = NULL;
		return -errno;
	}
	return 0;
}

int loop_mod(struct loop *l, int fd, uint32_t events)
{
	struct epoll_event ev = { .events = events };

	if (fd < 0 || fd >= l->nw || !l->w[fd].cb)
		return -EBADF;
	if (l->w[fd].events == events)   /* callers restate it after every event */
		return 0;
	ev.data.u64 = (uint64_t)fd | (l->w[fd].gen << 24);
	if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
		return -errno;
	l->w[fd].events = events;
	return 0;
}

int loop_del(struct loop *l, int fd)
{
	if (fd < 0 || fd >= l->nw || !l->w[fd].cb)
		return -EBADF;
	l->w[fd].cb = NULL;
	l->w[fd].ud = NULL;
	return epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL) < 0 ? -errno : 0;
}

struct loop_timer *loop_timer_add(struct loop *l, double after, loop_timer_cb cb, void *ud)
{
	struct loop_timer *t = malloc(sizeof *t), **p;

	if (!t)
		return NULL;
	t->when = loop_now() + (after > 0 ? after : 0);
	t->cb = cb;
	t->ud = ud;
	for (p = &l->timers; *p && (*p)->when <= t->when; p = &(*p)->next)
		;
	t->next = *p;
	*p = t;
	return t;
}

void loop_timer_cancel(struct loop *l, struct loop_timer *t)
{
	struct loop_timer **p;

	for (p = &l->timers; *p; p = &(*p)->next) {
		if (*p == t) {
			*p = t->next;
			free(t);
			return;
		}
	}
}

static int loop_timeout_ms(struct loop *l)
{
	double d;

	if (!l->timers)
		return -1;
	d = l->timers->when - loop_now();
	return d <= 0 ? 0 : (int)ceil(d * 1000);
}

static void loop_fire_timers(struct loop *l)
{
	double now = loop_now();

	while (l->timers && l->timers->when <= now && !l->stop) {
		struct loop_timer *t = l->timers;

		l->timers = t->next;
		t->cb(l, t->ud);
		free(t);
	}
}

int loop_run(struct loop *l)
{
	struct epoll_event ev[64];

	l->stop = 0;
	while (!l->stop) {
		int n = epoll_wait(l->epfd, ev, 64, loop_timeout_ms(l));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (int i = 0; i < n && !l->stop; i++) {
			int fd = (int)(ev[i].data.u64 & 0xffffff);
			uint64_t gen = ev[i].data.u64 >> 24;

			if (fd < l->nw && l->w[fd].cb && (l->w[fd].gen & 0xffffffffffULL) == gen)
				l->w[fd].cb(l, fd, ev[i].events, l->w[fd].ud);
		}
		loop_fire_timers(l);
	}
	return 0;
}

void loop_stop(struct loop *l) { l->stop = 1; }
