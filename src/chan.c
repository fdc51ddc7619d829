/* chan.c - framed non-blocking channel (see chan.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "chan.h"
#include "proto.h"

void chan_init(struct chan *c, int fd, size_t max)
{
	memset(c, 0, sizeof *c);
	c->fd = fd;
	c->max = max;
}

void chan_free(struct chan *c)
{
	free(c->rbuf);
	free(c->wbuf);
	c->rbuf = c->wbuf = NULL;
	c->rlen = c->rcap = c->woff = c->wlen = c->wcap = 0;
}

int chan_fill(struct chan *c)
{
	for (;;) {
		ssize_t n;
		size_t room;

		/* Grow only when nearly full: growing by default on every fill
		 * made each request allocate, fault in and trim 128 KiB. */
		if (c->rcap - c->rlen < 4096) {
			size_t limit = c->max + PROTO_HDR + 65536;
			size_t cap = c->rcap ? c->rcap * 2 : 65536;
			char *b;

			/* Any legal frame fits in `limit`: stop reading until the
			 * caller drains frames (or sees the oversize one). */
			if (c->rcap >= limit)
				return 0;
			if (cap > limit)
				cap = limit;
			b = realloc(c->rbuf, cap);
			if (!b)
				return -ENOMEM;
			c->rbuf = b;
			c->rcap = cap;
		}
		room = c->rcap - c->rlen;
		n = read(c->fd, c->rbuf + c->rlen, room);
		if (n > 0) {
			c->rlen += n;
			/* A short read drained the socket: what arrives later raises
			 * another (level-triggered) event, so no read to see EAGAIN. */
			if ((size_t)n < room)
				return 0;
			continue;
		}
		if (n == 0)
			return -EPIPE;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		return -errno;
	}
}

long chan_frame(struct chan *c, const char **p, size_t *len)
{
	return proto_frame_parse_max(c->rbuf, c->rlen, c->max, p, len);
}

void chan_drop(struct chan *c, size_t n)
{
	if (n >= c->rlen) {
		c->rlen = 0;
		return;
	}
	memmove(c->rbuf, c->rbuf + n, c->rlen - n);
	c->rlen -= n;
}

int chan_flush(struct chan *c)
{
	while (c->woff < c->wlen) {
		ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 1;
			return -errno;
		}
		c->woff += n;
	}
	c->woff = c->wlen = 0;
	return 0;
}

size_t chan_pending(const struct chan *c) { return c->wlen - c->woff; }

#define CHAN_KEEP 65536    /* what an ordinary channel keeps between frames */

void chan_trim(struct chan *c)
{
	if (c->rcap > CHAN_KEEP && c->rlen <= CHAN_KEEP / 2) {
		char *b = c->rlen ? realloc(c->rbuf, CHAN_KEEP) : NULL;

		if (b || !c->rlen) {
			if (!b)
				free(c->rbuf);
			c->rbuf = b;
			c->rcap = b ? CHAN_KEEP : 0;
		}
	}
	if (c->woff == c->wlen && c->wcap > CHAN_KEEP) {
		free(c->wbuf);
		c->wbuf = NULL;
		c->woff = c->wlen = c->wcap = 0;
	}
}

int chan_send_raw(struct chan *c, const char *frame, size_t n)
{
	if (c->woff == c->wlen) {
		/* Nothing queued: try the socket first and copy only the rest. */
		ssize_t w;

		c->woff = c->wlen = 0;
		do
			w = send(c->fd, frame, n, MSG_NOSIGNAL);
		while (w < 0 && errno == EINTR);
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		if (w > 0) {
			frame += w;
			n -= w;
		}
		if (n == 0)
			return 0;
	}
	if (c->wlen + n > c->wcap) {
		size_t cap = c->wcap ? c->wcap : 65536;
		char *b;

		if (c->woff > 0) {
			memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
			c->wlen -= c->woff;
			c->woff = 0;
		}
		while (cap < c->wlen + n)
			cap *= 2;
		if (cap != c->wcap) {
			b = realloc(c->wbuf, cap);
			if (!b)
				return -ENOMEM;
			c->wbuf = b;
			c->wcap = cap;
		}
	}
	memcpy(c->wbuf + c->wlen, frame, n);
	c->wlen += n;
	return 0;
}

int chan_send(struct chan *c, const cJSON *msg)
{
	size_t n;
	char *f = proto_encode(msg, &n);
	int r;

	if (!f)
		return -ENOMEM;
	r = chan_send_raw(c, f, n);
	free(f);
	return r;
}

int chan_send_fd(struct chan *c, const cJSON *msg, int fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr mh = { 0 };
	struct iovec iov;
	struct cmsghdr *cm;
	size_t n;
	ssize_t w;
	char *f;

	if (chan_pending(c))
		return -EBUSY;
	f = proto_encode(msg, &n);
	if (!f)
		return -ENOMEM;
	iov.iov_base = f;
	iov.iov_len = n;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = u.buf;
	mh.msg_controllen = sizeof u.buf;
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	do
		w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
	while (w < 0 && errno == EINTR);
	if (w < 0) {
		int e = errno == EAGAIN ? EBUSY : errno;

		free(f);
		return -e;
	}
	/* The descriptor went with the first byte; the rest may queue. */
	w = (size_t)w < n ? chan_send_raw(c, f + w, n - w) : 0;
	free(f);
	return (int)w;
}
