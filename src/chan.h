/*
 * chan.h - a framed, non-blocking channel over one stream socket: the
 * buffers and framing shared by client connections, workers and zygotes.
 *
 * Reading is pull-style so that a handler may tear the channel down
 * between frames:
 *
 *	r = chan_fill(c);                       // EOF is reported after the frames
 *	while ((n = chan_frame(c, &p, &len)) > 0) { handle(p, len); chan_drop(c, n); }
 *
 * Descriptors (SCM_RIGHTS) travel with frames: a sender attaches them to
 * the sendmsg() that carries a frame's first byte, never to one that
 * starts mid-frame.  A Unix stream socket hands a reader the descriptors
 * of one send at most per recvmsg(), the last send it read from, so the
 * descriptors of one recvmsg() belong to the last frame that starts in the
 * bytes it returned.  Each read's descriptors wait in a small queue until
 * chan_frame() returns that frame; chan_take_fds() takes them, chan_drop()
 * closes what was not taken, and chan_free() closes every one left, so
 * none leaks whatever happens to the frame.  All are received with
 * MSG_CMSG_CLOEXEC.
 */
#ifndef OMNI_CHAN_H
#define OMNI_CHAN_H

#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>

#define CHAN_MAX_FDS 8        /* descriptors one frame may carry */

struct chan_fdq;              /* descriptors in flight (chan.c) */

struct chan {
	int fd;               /* borrowed: chan_free does not close it */
	size_t max;           /* largest payload accepted */
	char *rbuf;
	size_t rlen, rcap;
	char *wbuf;
	size_t woff, wlen, wcap;
	uint64_t rpos;        /* stream offset of rbuf[0] */
	uint64_t wpos;        /* stream offset of wbuf[woff]: bytes sent so far */
	struct chan_fdq *fdq; /* NULL until a descriptor comes or waits to go */
};

void chan_init(struct chan *c, int fd, size_t max);
void chan_free(struct chan *c);

/* Reads all that is available.  0, or -EPIPE at end of stream, or -errno;
 * -ETOOMANYREFS when the peer sent descriptors with more reads than a
 * frame can explain (the stream cannot be trusted).  Stops early, and
 * returns 0, while the descriptors of earlier frames wait to be taken. */
int chan_fill(struct chan *c);

/* The next whole frame: >0 its size (pass it to chan_drop), *p borrowed
 * until then; 0 none yet; <0 the peer broke the framing (-EMSGSIZE...). */
long chan_frame(struct chan *c, const char **p, size_t *len);
/*
 * The descriptors that came with the frame chan_frame() returned last:
 * moves them into fds (the caller owns them then) and returns how many
 * (0: none came).  -ETOOMANYREFS when more than max came, or more than
 * the kernel could give (over CHAN_MAX_FDS, or the process out of
 * descriptors): every one that came is closed.
 */
int chan_take_fds(struct chan *c, int *fds, int max);
/* Closes n descriptors (taken ones a caller will not pass on). */
void chan_close_fds(const int *fds, int n);
/* Drops n bytes (a frame) and closes its descriptors not taken. */
void chan_drop(struct chan *c, size_t n);

/* Queues a frame and writes what the socket takes now.  0 or -errno. */
int chan_send(struct chan *c, const cJSON *msg);
int chan_send_raw(struct chan *c, const char *frame, size_t n);

/*
 * Queues a frame with n (0..CHAN_MAX_FDS) descriptors attached, sent with
 * its first byte.  fds are borrowed: what cannot go at once is sent from
 * duplicates the channel keeps until they go (closed by chan_free if they
 * never do).  0 or -errno (-EBUSY: too many such frames queued already).
 */
int chan_send_fds(struct chan *c, const cJSON *msg, const int *fds, int n);
int chan_send_fd(struct chan *c, const cJSON *msg, int fd);

/* Writes queued bytes.  1 while some remain (wait for EPOLLOUT), 0 when
 * empty, -errno on failure. */
int chan_flush(struct chan *c);
size_t chan_pending(const struct chan *c);

/* Gives back buffer memory grown for large frames once they are gone:
 * the read buffer when it holds little, the write buffer when empty. */
void chan_trim(struct chan *c);

#endif
