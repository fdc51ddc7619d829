/*
 * chan.h - a framed, non-blocking channel over one stream socket: the
 * buffers and framing shared by client connections, workers and zygotes.
 *
 * Reading is pull-style so that a handler may tear the channel down
 * between frames:
 *
 *	r = chan_fill(c);                       // EOF is reported after the frames
 *	while ((n = chan_frame(c, &p, &len)) > 0) { handle(p, len); chan_drop(c, n); }
 */
#ifndef OMNI_CHAN_H
#define OMNI_CHAN_H

#include <stddef.h>
#include <cjson/cJSON.h>

struct chan {
	int fd;               /* borrowed: chan_free does not close it */
	size_t max;           /* largest payload accepted */
	char *rbuf;
	size_t rlen, rcap;
	char *wbuf;
	size_t woff, wlen, wcap;
};

void chan_init(struct chan *c, int fd, size_t max);
void chan_free(struct chan *c);

/* Reads all that is available.  0, or -EPIPE at end of stream, or -errno. */
int chan_fill(struct chan *c);

/* The next whole frame: >0 its size (pass it to chan_drop), *p borrowed
 * until then; 0 none yet; <0 the peer broke the framing (-EMSGSIZE...). */
long chan_frame(struct chan *c, const char **p, size_t *len);
void chan_drop(struct chan *c, size_t n);

/* Queues a frame and writes what the socket takes now.  0 or -errno. */
int chan_send(struct chan *c, const cJSON *msg);
int chan_send_raw(struct chan *c, const char *frame, size_t n);

/* Sends a frame with one descriptor attached (SCM_RIGHTS).  Only when
 * nothing else is queued: the descriptor must travel with its frame. */
int chan_send_fd(struct chan *c, const cJSON *msg, int fd);

/* Writes queued bytes.  1 while some remain (wait for EPOLLOUT), 0 when
 * empty, -errno on failure. */
int chan_flush(struct chan *c);
size_t chan_pending(const struct chan *c);

/* Gives back buffer memory grown for large frames once they are gone:
 * the read buffer when it holds little, the write buffer when empty. */
void chan_trim(struct chan *c);

#endif
