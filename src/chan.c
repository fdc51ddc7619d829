/* chan.c - framed non-blocking channel (see chan.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "chan.h"
#include "proto.h"

#define CHAN_FD_READS 4   /* reads with descriptors waiting for their frames */
#define CHAN_FD_SENDS 8   /* frames with descriptors waiting to be sent */

/* The descriptors of one read: [begin, end) of the stream it returned. */
struct chan_rfds {
	uint64_t begin, end;
	int n, trunc;             /* trunc: the kernel had more than fitted */
	int fds[CHAN_MAX_FDS];
};

/* Duplicates of descriptors to attach to the frame starting at `at`. */
struct chan_wfds {
	uint64_t at;
	int n;
	int fds[CHAN_MAX_FDS];
};

struct chan_fdq {
	struct chan_rfds in[CHAN_FD_READS];
	int nin;
	int cur[CHAN_MAX_FDS];    /* the frame chan_frame returned: its own */
	int ncur, cur_trunc, cur_set;
	struct chan_wfds out[CHAN_FD_SENDS];
	int nout;
};

void chan_close_fds(const int *fds, int n)
{
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

void chan_init(struct chan *c, int fd, size_t max)
{
	memset(c, 0, sizeof *c);
	c->fd = fd;
	c->max = max;
}

void chan_free(struct chan *c)
{
	struct chan_fdq *q = c->fdq;

	if (q) {
		for (int i = 0; i < q->nin; i++)
			chan_close_fds(q->in[i].fds, q->in[i].n);
		chan_close_fds(q->cur, q->ncur);
		for (int i = 0; i < q->nout; i++)
			chan_close_fds(q->out[i].fds, q->out[i].n);
		free(q);
		c->fdq = NULL;
	}
	free(c->rbuf);
	free(c->wbuf);
	c->rbuf = c->wbuf = NULL;
	c->rlen = c->rcap = c->woff = c->wlen = c->wcap = 0;
}

static struct chan_fdq *fdq(struct chan *c)
{
	if (!c->fdq)
		c->fdq = calloc(1, sizeof *c->fdq);
	return c->fdq;
}

/* One recvmsg into the free part of rbuf, keeping its descriptors. */
static ssize_t recv_some(struct chan *c)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * CHAN_MAX_FDS)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = c->rbuf + c->rlen, .iov_len = c->rcap - c->rlen };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			     .msg_controllen = sizeof u.buf };
	struct chan_rfds r = { .begin = c->rpos + c->rlen };
	struct cmsghdr *cm;
	ssize_t n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC);

	if (n < 0)
		return n;
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		int k;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (int i = 0; i < k; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
			if (r.n < CHAN_MAX_FDS)
				r.fds[r.n++] = fd;
			else {
				close(fd);
				r.trunc = 1;
			}
		}
	}
	if (mh.msg_flags & MSG_CTRUNC)
		r.trunc = 1;
	if (!r.n && !r.trunc)
		return n;
	r.end = r.begin + (uint64_t)n;
	if (n == 0 || !fdq(c)) {
		chan_close_fds(r.fds, r.n);
		errno = n == 0 ? EBADMSG : ENOMEM;
		return -1;
	}
	c->fdq->in[c->fdq->nin++] = r;
	return n;
}

int chan_fill(struct chan *c)
{
	for (;;) {
		ssize_t n;
		size_t room;
		int nin;

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
		if (c->fdq && c->fdq->nin == CHAN_FD_READS) {
			const char *p;
			size_t len;

			/* A whole frame waits to be handled, and frees a place;
			 * descriptors in more reads than that are no frame's. */
			if (proto_frame_parse_max(c->rbuf, c->rlen, c->max, &p, &len) > 0)
				return 0;
			return -ETOOMANYREFS;
		}
		room = c->rcap - c->rlen;
		nin = c->fdq ? c->fdq->nin : 0;
		n = recv_some(c);
		if (n > 0) {
			c->rlen += n;
			/* A short read drained the socket: what arrives later raises
			 * another (level-triggered) event, so no read to see EAGAIN.
			 * A read that brought descriptors stops at them, drained or
			 * not. */
			if ((size_t)n < room && (c->fdq ? c->fdq->nin : 0) == nin)
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

/*
 * Gives the frame [rpos, rpos + n) the descriptors of the reads that ended
 * inside it: those reads began at or before its start, or the sender
 * attached them mid-frame (no frame's: closed).  Reads that end later
 * belong to a later frame.
 */
static void claim(struct chan *c, size_t n)
{
	struct chan_fdq *q = c->fdq;
	uint64_t s = c->rpos, e = c->rpos + n;

	q->cur_set = 1;
	while (q->nin && q->in[0].end <= e) {
		struct chan_rfds *r = &q->in[0];

		if (r->begin <= s) {
			for (int i = 0; i < r->n; i++) {
				if (q->ncur < CHAN_MAX_FDS)
					q->cur[q->ncur++] = r->fds[i];
				else {
					close(r->fds[i]);
					q->cur_trunc = 1;
				}
			}
			q->cur_trunc |= r->trunc;
		} else {
			chan_close_fds(r->fds, r->n);
		}
		memmove(q->in, q->in + 1, (size_t)--q->nin * sizeof *q->in);
	}
}

long chan_frame(struct chan *c, const char **p, size_t *len)
{
	long n = proto_frame_parse_max(c->rbuf, c->rlen, c->max, p, len);

	if (n > 0 && c->fdq && !c->fdq->cur_set)
		claim(c, (size_t)n);
	return n;
}

int chan_take_fds(struct chan *c, int *fds, int max)
{
	struct chan_fdq *q = c->fdq;
	int n;

	if (!q || !q->cur_set)
		return 0;
	if (q->cur_trunc || q->ncur > max) {
		chan_close_fds(q->cur, q->ncur);
		q->ncur = 0;
		q->cur_trunc = 1;
		return -ETOOMANYREFS;
	}
	n = q->ncur;
	memcpy(fds, q->cur, (size_t)n * sizeof *fds);
	q->ncur = 0;
	return n;
}

void chan_drop(struct chan *c, size_t n)
{
	struct chan_fdq *q = c->fdq;

	if (q) {
		chan_close_fds(q->cur, q->ncur);
		q->ncur = q->cur_trunc = q->cur_set = 0;
	}
	c->rpos += n;
	if (n >= c->rlen) {
		c->rlen = 0;
		return;
	}
	memmove(c->rbuf, c->rbuf + n, c->rlen - n);
	c->rlen -= n;
}

/* One sendmsg of n bytes at p with n_fds descriptors attached. */
static ssize_t send_with_fds(int sock, const char *p, size_t n, const int *fds, int nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * CHAN_MAX_FDS)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = (void *)p, .iov_len = n };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *cm;
	ssize_t w;

	if (nfds > 0) {
		memset(&u, 0, sizeof u);
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
	}
	do
		w = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (w < 0 && errno == EINTR);
	return w;
}

int chan_flush(struct chan *c)
{
	while (c->woff < c->wlen) {
		struct chan_wfds *f = c->fdq && c->fdq->nout ? &c->fdq->out[0] : NULL;
		size_t n = c->wlen - c->woff;
		int with = f && f->at == c->wpos;
		ssize_t w;

		/* A send stops where the next frame with descriptors starts,
		 * so that they go with its first byte. */
		if (f && !with && f->at - c->wpos < n)
			n = f->at - c->wpos;
		if (with && c->fdq->nout > 1 && c->fdq->out[1].at - c->wpos < n)
			n = c->fdq->out[1].at - c->wpos;
		w = send_with_fds(c->fd, c->wbuf + c->woff, n, with ? f->fds : NULL, with ? f->n : 0);
		if (w < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 1;
			return -errno;
		}
		if (with && w > 0) {
			chan_close_fds(f->fds, f->n);
			memmove(c->fdq->out, c->fdq->out + 1, (size_t)--c->fdq->nout * sizeof *f);
		}
		c->woff += w;
		c->wpos += w;
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

/* Appends n bytes to the write queue; sends nothing. */
static int queue(struct chan *c, const char *frame, size_t n)
{
	if (c->woff == c->wlen)
		c->woff = c->wlen = 0;
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

int chan_send_raw(struct chan *c, const char *frame, size_t n)
{
	if (c->woff == c->wlen) {
		/* Nothing queued: try the socket first and copy only the rest. */
		ssize_t w;

		do
			w = send(c->fd, frame, n, MSG_NOSIGNAL);
		while (w < 0 && errno == EINTR);
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		if (w > 0) {
			frame += w;
			n -= w;
			c->wpos += w;
		}
		if (n == 0)
			return 0;
	}
	return queue(c, frame, n);
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

int chan_send_fds(struct chan *c, const cJSON *msg, const int *fds, int nfds)
{
	struct chan_wfds f = { .n = 0 };
	size_t n;
	ssize_t w = 0;
	char *p;
	int r;

	if (nfds < 0 || nfds > CHAN_MAX_FDS)
		return -EINVAL;
	if (nfds == 0)
		return chan_send(c, msg);
	if (!(p = proto_encode(msg, &n)))
		return -ENOMEM;
	if (!chan_pending(c)) {
		w = send_with_fds(c->fd, p, n, fds, nfds);
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			r = -errno;
			free(p);
			return r;
		}
		if (w > 0) {
			/* The descriptors went with the first byte; the rest may queue. */
			c->wpos += w;
			r = (size_t)w < n ? queue(c, p + w, n - w) : 0;
			free(p);
			return r;
		}
	}
	/* Queued behind other bytes (or the socket is full): the frame takes
	 * duplicates along, sent by chan_flush with its first byte. */
	if (!fdq(c) || c->fdq->nout == CHAN_FD_SENDS) {
		free(p);
		return c->fdq ? -EBUSY : -ENOMEM;
	}
	f.at = c->wpos + chan_pending(c);
	for (; f.n < nfds; f.n++)
		if ((f.fds[f.n] = fcntl(fds[f.n], F_DUPFD_CLOEXEC, 3)) < 0) {
			r = -errno;
			chan_close_fds(f.fds, f.n);
			free(p);
			return r;
		}
	r = queue(c, p, n);
	free(p);
	if (r < 0) {
		chan_close_fds(f.fds, f.n);
		return r;
	}
	c->fdq->out[c->fdq->nout++] = f;
	return 0;
}

int chan_send_fd(struct chan *c, const cJSON *msg, int fd)
{
	return chan_send_fds(c, msg, &fd, 1);
}
